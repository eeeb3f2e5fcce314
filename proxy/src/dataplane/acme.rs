//! HTTP-01 challenges of `[tls.acme]` (`control::acme`): a GET of
//! `/.well-known/acme-challenge/<token>` whose token the control plane has published is
//! answered with its key authorization before any API is matched, as the ACME authority asks
//! (RFC 8555 §8.3). Other tokens, and every other path, go on to the APIs.

use std::collections::HashMap;

use portcullis_http1::Method;

/// The answers the workers give: token -> key authorization (published by the control plane).
pub type Challenges = HashMap<String, String>;

const PREFIX: &str = "/.well-known/acme-challenge/";

/// The token a request path asks for, if it is a challenge path.
pub(super) fn token(raw_path: &str) -> Option<&str> {
    raw_path.strip_prefix(PREFIX).filter(|t| !t.is_empty() && !t.contains(['/', '?']))
}

/// Writes the answer to a challenge: 200, the key authorization as `text/plain`; a HEAD gets
/// the head alone.
pub(super) fn write_reply(out: &mut Vec<u8>, answer: &str, method: Method, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ");
    out.extend_from_slice(answer.len().to_string().as_bytes());
    out.extend_from_slice(if close { b"\r\nConnection: close\r\n\r\n".as_slice() } else { b"\r\n\r\n" });
    if method != Method::Head {
        out.extend_from_slice(answer.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_challenge_paths_have_tokens() {
        assert_eq!(token("/.well-known/acme-challenge/abc-DEF_1"), Some("abc-DEF_1"));
        assert_eq!(token("/.well-known/acme-challenge/"), None);
        assert_eq!(token("/.well-known/acme-challenge/a/b"), None);
        assert_eq!(token("/.well-known/other/abc"), None);
        assert_eq!(token("/api/.well-known/acme-challenge/abc"), None);
        let mut out = Vec::new();
        write_reply(&mut out, "tok.thumb", Method::Get, false);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\ntok.thumb");
    }
}
