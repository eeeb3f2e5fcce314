//! Detailed recording's capture: an exchange's request or response in its HTTP/1.x wire form,
//! credentials redacted, bounded in size. Kept apart from the record's format and the sinks, so
//! that another consumer of exchanges (API visibility) can take the same capture. Pure byte
//! work on the worker: no clock, no I/O.
//!
//! Redacted (the value replaced by `[redacted]`, the name kept so the record shows the header
//! was there): `Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`, the admin API's
//! `X-Tyk-Authorization`, and the API's own credential headers; in the request target, the
//! API's credential query parameters. Tyk's detailed records carry credentials in clear; these
//! do not.

use portcullis_policy::auth::token::CredentialSource;
use portcullis_policy::auth::ApiAuth;

pub const REDACTED: &[u8] = b"[redacted]";

/// Header names always redacted, lower case.
const ALWAYS: [&str; 5] = ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-tyk-authorization"];

/// What to redact for one API.
pub struct Secrets<'a> {
    sources: [Option<&'a CredentialSource>; 3],
}

impl<'a> Secrets<'a> {
    pub fn of(auth: &'a ApiAuth) -> Self {
        Secrets { sources: [auth.token.as_ref(), auth.basic.as_ref(), auth.jwt.as_ref().map(|j| &j.source)] }
    }

    fn header(&self, name: &[u8]) -> bool {
        ALWAYS.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
            || self.sources.iter().flatten().any(|s| name.eq_ignore_ascii_case(s.header.as_bytes()))
    }

    fn param(&self, name: &[u8]) -> bool {
        self.sources.iter().flatten().filter_map(|s| s.param.as_deref()).any(|p| name == p.as_bytes())
    }
}

/// Appends `head` (a request or response head, CRLF lines, up to and with the blank line) and
/// then `body` to `out`, redacted, stopping at `max` bytes in all.
pub fn wire(out: &mut Vec<u8>, head: &[u8], body: &[u8], max: usize, secrets: &Secrets<'_>) {
    let start = out.len();
    let mut lines = head.split_inclusive(|&b| b == b'\n');
    if let Some(first) = lines.next() {
        start_line(out, first, secrets);
    }
    for line in lines {
        let name_end = line.iter().position(|&b| b == b':');
        match name_end {
            Some(i) if secrets.header(&line[..i]) => {
                out.extend_from_slice(&line[..=i]);
                out.push(b' ');
                out.extend_from_slice(REDACTED);
                out.extend_from_slice(b"\r\n");
            }
            _ => out.extend_from_slice(line),
        }
    }
    out.extend_from_slice(body);
    out.truncate(start + max.min(out.len() - start));
}

/// A request line with the credential query parameters' values redacted; a status line as is.
fn start_line(out: &mut Vec<u8>, line: &[u8], secrets: &Secrets<'_>) {
    let Some(q) = line.iter().position(|&b| b == b'?') else {
        out.extend_from_slice(line);
        return;
    };
    let end = line[q..].iter().position(|&b| b == b' ').map_or(line.len(), |i| q + i);
    out.extend_from_slice(&line[..=q]);
    for (i, pair) in line[q + 1..end].split(|&b| b == b'&').enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        match pair.iter().position(|&b| b == b'=') {
            Some(e) if secrets.param(&pair[..e]) => {
                out.extend_from_slice(&pair[..=e]);
                out.extend_from_slice(REDACTED);
            }
            _ => out.extend_from_slice(pair),
        }
    }
    out.extend_from_slice(&line[end..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_and_the_rest_kept_within_the_bound() {
        let token = CredentialSource { header: "X-Api-Key".into(), param: Some("key".into()), cookie: None };
        let auth = ApiAuth { token: Some(token), ..Default::default() };
        let s = Secrets::of(&auth);
        let head = b"GET /a?x=1&key=s3cret&y=2 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t0ken\r\n\
            x-api-key: k3y\r\nCookie: sid=abc\r\nX-Tyk-Authorization: adm1n\r\nAccept: */*\r\n\r\n";
        let mut out = Vec::new();
        wire(&mut out, head, b"{\"a\":1}", 10_000, &s);
        let text = String::from_utf8(out.clone()).unwrap();
        for secret in ["s3cret", "t0ken", "k3y", "sid=abc", "adm1n"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.starts_with("GET /a?x=1&key=[redacted]&y=2 HTTP/1.1\r\nHost: h\r\nAuthorization: [redacted]\r\n"));
        assert!(text.contains("x-api-key: [redacted]\r\n") && text.contains("Accept: */*\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"a\":1}"), "{text}");
        let mut short = Vec::new();
        wire(&mut short, head, b"body", 20, &s);
        assert_eq!(short, &out[..20]);
        let mut resp = Vec::new();
        wire(&mut resp, b"HTTP/1.1 200 OK\r\nSet-Cookie: s=1\r\n\r\n", b"", 100, &Secrets::of(&ApiAuth::default()));
        assert_eq!(resp, b"HTTP/1.1 200 OK\r\nSet-Cookie: [redacted]\r\n\r\n");
    }
}
