//! Tyk's `error_overrides` on an upstream 4xx/5xx response (gateway/res_handler_error_override.go,
//! gateway/error_overrides.go `ApplyUpstreamOverride`), for a status that has rules: the body is
//! read only when a rule needs it, at most its first 4096 data bytes (a chunked body decoded,
//! as Go's `res.Body` is), and stays in the upstream buffer, so a response no rule matches goes
//! on unchanged (head, the bytes read, the rest). A matching rule sets the status and its
//! headers; when it has a body, that replaces the upstream's, with `Content-Type` (by the
//! request's, as Tyk's `DetectErrorResponseContext`) and `Content-Length`, the other upstream
//! headers kept. Awaited boxed from `conn.rs::respond`, so only such a response pays for it.
//! Must not: read a file, or read more of a body than the matching bound.

use std::time::Duration;

use portcullis_http1::chunked::ChunkedScanner;
use portcullis_http1::{BodyKind, ResponseMeta};

use super::error::{override_body, reason_phrase, ErrorKind, Media, ProxyError};
use super::io::ReadBuf;
use crate::config::{ErrorOverrides, UpstreamMatch, MAX_BODY_FOR_MATCHING};

/// Raw chunked bytes read at most to find the first 4096 data bytes (chunk lines included).
const MAX_CHUNKED_READ: usize = 64 * 1024;

/// What became of the response.
pub(super) enum Applied {
    /// Not replaced: the head in `out` (its status and headers perhaps changed) goes on with
    /// the upstream body, whose bytes read so far are in the upstream buffer.
    Pass,
    /// `out` holds the whole response. `upstream_done`: the upstream body was read whole and
    /// taken out of the buffer (the connection may be reused); else it must be closed.
    Replaced { upstream_done: bool },
}

/// Applies the API's rules to the response whose client head is in `out` and whose body bytes
/// read with the head are in `buf`; `resp.status` becomes the status sent.
pub(super) async fn apply(
    ov: &ErrorOverrides,
    resp: &mut ResponseMeta,
    up: &mut super::stream::Stream,
    buf: &mut ReadBuf,
    out: &mut Vec<u8>,
    media: Media,
    head_request: bool,
    timeout: Duration,
) -> Result<Applied, ProxyError> {
    let mut eof = false;
    let rule = match ov.find_upstream(resp.status, None) {
        UpstreamMatch::NeedBody => {
            let body = read_prefix(up, buf, resp.body, timeout, &mut eof).await?;
            ov.find_upstream(resp.status, Some(&body))
        }
        m => m,
    };
    let UpstreamMatch::Found(rule) = rule else { return Ok(Applied::Pass) };
    let status = if rule.status == 0 { resp.status } else { rule.status };
    let mut body = Vec::new();
    let replaced = override_body(&mut body, &rule.body, status, media, None);
    let len = body.len();
    let head = rewrite_head(out, status, resp.status, replaced.then_some((media.content_type(), len)), &rule.headers);
    out.clear();
    out.extend_from_slice(&head);
    resp.status = status;
    if !replaced {
        return Ok(Applied::Pass);
    }
    if !head_request {
        out.extend_from_slice(&body);
    }
    let upstream_done = match whole_body(buf.data(), resp.body, eof) {
        Some(n) => {
            buf.consume(n);
            true
        }
        None => false,
    };
    Ok(Applied::Replaced { upstream_done })
}

/// Reads until the first [`MAX_BODY_FOR_MATCHING`] data bytes (or the whole body) are in `buf`,
/// leaving them there; returns those data bytes. `eof`: a close-delimited body ended.
async fn read_prefix(
    up: &mut super::stream::Stream,
    buf: &mut ReadBuf,
    body: BodyKind,
    timeout: Duration,
    eof: &mut bool,
) -> Result<Vec<u8>, ProxyError> {
    loop {
        let enough = match body {
            BodyKind::None => return Ok(Vec::new()),
            BodyKind::Length(n) => {
                let want = (n as usize).min(MAX_BODY_FOR_MATCHING);
                if buf.len() >= want {
                    return Ok(buf.data()[..want].to_vec());
                }
                false
            }
            BodyKind::UntilClose => {
                if *eof || buf.len() >= MAX_BODY_FOR_MATCHING {
                    return Ok(buf.data()[..buf.len().min(MAX_BODY_FOR_MATCHING)].to_vec());
                }
                false
            }
            BodyKind::Chunked => {
                let (data, done) = dechunk_prefix(buf.data())?;
                if done || data.len() >= MAX_BODY_FOR_MATCHING || buf.len() >= MAX_CHUNKED_READ {
                    return Ok(data);
                }
                false
            }
        };
        debug_assert!(!enough);
        buf.reserve(MAX_BODY_FOR_MATCHING);
        match monoio::time::timeout(timeout, buf.fill(up)).await {
            Ok(Ok(0)) if body == BodyKind::UntilClose => *eof = true,
            Ok(Ok(0)) => {
                return Err(ProxyError::new(ErrorKind::UpstreamProtocol, "upstream closed in the middle of a body"))
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(ProxyError::io(ErrorKind::UpstreamProtocol, "reading upstream body", e)),
            Err(_) => return Err(ProxyError::new(ErrorKind::UpstreamTimeout, "timed out reading upstream body")),
        }
    }
}

/// The first data bytes (up to [`MAX_BODY_FOR_MATCHING`]) of the chunked bytes in `raw`, and
/// whether the body ended within them.
fn dechunk_prefix(raw: &[u8]) -> Result<(Vec<u8>, bool), ProxyError> {
    let mut data = Vec::new();
    let mut scanner = ChunkedScanner::default();
    let scan = scanner
        .scan(raw, |r| {
            let room = MAX_BODY_FOR_MATCHING.saturating_sub(data.len());
            data.extend_from_slice(&raw[r.start..r.start + r.len().min(room)]);
        })
        .map_err(|c| ProxyError::new(ErrorKind::UpstreamProtocol, c))?;
    Ok((data, scan.done))
}

/// The length of the whole body when all of it is in `data` (`eof`: a close-delimited body
/// ended), else `None`.
fn whole_body(data: &[u8], body: BodyKind, eof: bool) -> Option<usize> {
    match body {
        BodyKind::None => Some(0),
        BodyKind::Length(n) => (data.len() as u64 >= n).then_some(n as usize),
        BodyKind::UntilClose => eof.then_some(data.len()),
        BodyKind::Chunked => {
            let scan = ChunkedScanner::default().scan(data, |_| {}).ok()?;
            scan.done.then_some(scan.consumed)
        }
    }
}

/// The client head `head` with status `status` (its line kept when `was` is the same) and the
/// rule's `headers` set (replacing those of the same name, framing headers never); with a new
/// body of `(content type, length)`, its `Content-Type` and `Content-Length` instead of the
/// upstream's framing and type (Tyk: `res.Header.Set` of both, Go's writer framing by them).
fn rewrite_head(
    head: &[u8],
    status: u16,
    was: u16,
    body: Option<(&str, usize)>,
    headers: &[(String, String)],
) -> Vec<u8> {
    use std::io::Write as _;
    let framing = |n: &[u8]| {
        ["content-length", "transfer-encoding", "trailer"].iter().any(|f| n.eq_ignore_ascii_case(f.as_bytes()))
    };
    let set = |n: &[u8]| headers.iter().any(|(k, _)| n.eq_ignore_ascii_case(k.as_bytes()));
    let mut out = Vec::with_capacity(head.len() + 64);
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    if status == was {
        out.extend_from_slice(status_line);
        out.extend_from_slice(b"\r\n");
    } else {
        let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    }
    for line in lines.take_while(|l| !l.is_empty()) {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        let replaced = body.is_some() && (framing(name) || name.eq_ignore_ascii_case(b"content-type"));
        if !replaced && !set(name) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    if let Some((content_type, len)) = body {
        let _ = write!(out, "Content-Type: {content_type}\r\nContent-Length: {len}\r\n");
    }
    for (k, v) in headers.iter().filter(|(k, _)| !framing(k.as_bytes())) {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn a_new_body_replaces_framing_and_type_and_keeps_other_headers() {
        let head = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\nX-Flag: old\r\nConnection: close\r\n\r\n";
        let h = [("X-Flag".to_string(), "new".to_string()), ("Content-Length".to_string(), "9".to_string())];
        let out = text(rewrite_head(head, 420, 404, Some(("application/json", 12)), &h));
        assert_eq!(
            out,
            "HTTP/1.1 420 Error\r\nX-Up: 1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 12\r\nX-Flag: new\r\n\r\n"
        );
        let out = text(rewrite_head(head, 404, 404, None, &h));
        assert_eq!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\nConnection: close\r\nX-Flag: new\r\n\r\n"
        );
    }

    #[test]
    fn chunked_prefixes_are_decoded_and_bounded() {
        let (d, done) = dechunk_prefix(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((d.as_slice(), done), (&b"abcde"[..], true));
        let (d, done) = dechunk_prefix(b"3\r\nabc\r\n2\r\nd").unwrap();
        assert_eq!((d.as_slice(), done), (&b"abcd"[..], false));
        let big = format!("2000\r\n{}\r\n0\r\n\r\n", "x".repeat(0x2000));
        let (d, done) = dechunk_prefix(big.as_bytes()).unwrap();
        assert_eq!((d.len(), done), (MAX_BODY_FOR_MATCHING, true));
        assert!(dechunk_prefix(b"zz\r\n").is_err());
        assert_eq!(whole_body(big.as_bytes(), BodyKind::Chunked, false), Some(big.len()));
        assert_eq!(whole_body(b"3\r\nab", BodyKind::Chunked, false), None);
        assert_eq!(whole_body(b"abc", BodyKind::Length(3), false), Some(3));
        assert_eq!(whole_body(b"abc", BodyKind::UntilClose, false), None);
    }
}
