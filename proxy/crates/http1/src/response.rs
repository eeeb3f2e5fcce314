//! Response heads: parse the upstream's, decide its body's framing and whether the client
//! connection stays open, write the client's; and whether the upstream head may go to the client
//! byte for byte (so it can be spliced with its body).

use std::mem::MaybeUninit;

use crate::digits::push_u64;
use crate::error::{HeadError, HeadErrorKind};
use crate::request::{eq_ic, is_hop_by_hop, push_header, response_framing, BodyKind, Method, RequestMeta, MAX_HEADERS};

/// What the connection loop needs to know about an upstream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseMeta {
    pub status: u16,
    pub head_len: usize,
    /// Framing of the body as the upstream sends it.
    pub body: BodyKind,
    /// The upstream connection may be reused once the body has been read.
    pub upstream_reusable: bool,
    /// Decode the chunked body for an HTTP/1.0 client (trailers dropped).
    pub dechunk: bool,
    /// The client connection closes after this response.
    pub close_client: bool,
    /// 101 to an upgrade request: tunnel from here on.
    pub switching: bool,
}

/// Outcome of looking at the upstream's bytes so far.
#[derive(Debug)]
pub enum PreparedResponse {
    Partial,
    /// A 1xx other than 101 that is not passed on; skip `head_len` bytes and read the next head.
    Informational {
        head_len: usize,
    },
    Ready(ResponseMeta),
}

/// Parses the upstream response head; when complete, writes the client's response head to `out`,
/// without the upstream headers `drop` picks (by name, as sent) and with what `extra` writes
/// (complete header lines: the gateway's rate-limit headers) before its end.
/// `client_keep_alive` is false when the client connection must close after this response
/// (client asked, or the worker is draining).
pub fn prepare_response(
    data: &[u8],
    max_headers: usize,
    req: &RequestMeta,
    client_keep_alive: bool,
    drop: impl Fn(&[u8]) -> bool,
    extra: impl FnOnce(&mut Vec<u8>),
    out: &mut Vec<u8>,
) -> Result<PreparedResponse, HeadError> {
    let proto = |context| HeadError { kind: HeadErrorKind::UpstreamProtocol, context };
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        data,
        &mut headers[..max_headers.min(MAX_HEADERS)],
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(PreparedResponse::Partial),
        Err(_) => return Err(proto("malformed response head from upstream")),
    };
    let status = resp.code.unwrap_or(0);
    let reason = resp.reason.unwrap_or("");
    let upstream_minor = resp.version.unwrap_or(1);
    let switching = status == 101 && req.upgrade;
    if (100..200).contains(&status) && !switching {
        return Ok(PreparedResponse::Informational { head_len });
    }
    let headers = &*resp.headers;
    let f = response_framing(data, headers).ok_or(proto("malformed or conflicting Content-Length from upstream"))?;
    let body = if switching || req.method == Method::Head || status == 204 || status == 304 {
        BodyKind::None
    } else if f.has_te {
        if f.chunked {
            BodyKind::Chunked
        } else {
            BodyKind::UntilClose
        }
    } else {
        match f.content_length {
            Some(0) => BodyKind::None,
            Some(n) => BodyKind::Length(n),
            None => BodyKind::UntilClose,
        }
    };
    let upstream_reusable =
        !switching && body != BodyKind::UntilClose && !f.close && (upstream_minor == 1 || f.keep_alive);
    let dechunk = body == BodyKind::Chunked && req.minor_version == 0;
    let close_client = !switching && (!client_keep_alive || body == BodyKind::UntilClose || dechunk);

    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers {
        let n = h.name;
        let n = n.as_bytes();
        let tunnel_header = switching && eq_ic(n, "upgrade");
        if (is_hop_by_hop(n) && !tunnel_header) || f.names(data, n) || drop(n) {
            continue;
        }
        if dechunk && (eq_ic(n, "transfer-encoding") || eq_ic(n, "trailer")) {
            continue;
        }
        push_header(out, n, h.value);
    }
    extra(out);
    if switching {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if close_client {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if req.minor_version == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(PreparedResponse::Ready(ResponseMeta {
        status,
        head_len,
        body,
        upstream_reusable,
        dechunk,
        close_client,
        switching,
    }))
}

/// Whether the upstream's response head may go to the client byte for byte, so that it can be
/// spliced with the body and never enter user space: `client_head` (what [`prepare_response`]
/// wrote for it) is the same bytes, or the same without one `Connection: keep-alive` line,
/// which is then just as true of the client connection (it stays open, HTTP/1.1; nginx sends
/// the line to its clients too). Any other difference (an HTTP/1.0 or obs-fold status line,
/// other hop-by-hop headers, rate-limit headers, a client that closes) means no.
pub fn forwards_verbatim(upstream_head: &[u8], client_head: &[u8], r: &ResponseMeta) -> bool {
    const KEEP_ALIVE: &[u8] = b"connection: keep-alive\r\n";
    if r.close_client || r.switching || r.dechunk {
        return false;
    }
    if upstream_head == client_head {
        return true;
    }
    if upstream_head.len() != client_head.len() + KEEP_ALIVE.len() {
        return false;
    }
    // The first difference must be inside the dropped line; back up to that line's start.
    let same = common_prefix(upstream_head, client_head);
    let line = upstream_head[..same].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    line > 0
        && upstream_head[line..line + KEEP_ALIVE.len()].eq_ignore_ascii_case(KEEP_ALIVE)
        && upstream_head[line + KEEP_ALIVE.len()..] == client_head[line..]
}

/// Length of the longest common prefix of `a` and `b`, compared eight bytes at a time: this runs
/// on every response of an API whose bodies are spliced, and the byte-at-a-time loop it replaces
/// was the largest single user-space cost of the `16k` scenario (perf: about a tenth of
/// `conn::exchange`'s samples; criterion `response_head/forwards_verbatim`, bench/README.md).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut done = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let mut wx = [0u8; 8];
        let mut wy = [0u8; 8];
        wx.copy_from_slice(x);
        wy.copy_from_slice(y);
        let diff = u64::from_le_bytes(wx) ^ u64::from_le_bytes(wy);
        if diff != 0 {
            // Little-endian: the lowest set bit lies in the first byte that differs.
            return done + (diff.trailing_zeros() / 8) as usize;
        }
        done += 8;
    }
    done + a[done..].iter().zip(&b[done..]).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(req: &RequestMeta, client_keep_alive: bool, raw: &str) -> (ResponseMeta, String) {
        let mut out = Vec::new();
        match prepare_response(raw.as_bytes(), 100, req, client_keep_alive, |_| false, |_: &mut Vec<u8>| {}, &mut out) {
            Ok(PreparedResponse::Ready(m)) => (m, String::from_utf8(out).unwrap()),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    fn get_meta(minor: u8) -> RequestMeta {
        RequestMeta {
            method: Method::Get,
            minor_version: minor,
            head_len: 0,
            body: BodyKind::None,
            keep_alive: true,
            expect_continue: false,
            upgrade: false,
            spans: Default::default(),
        }
    }

    #[test]
    fn response_framing_and_reuse() {
        let g = get_meta(1);
        let (m, head) = resp(&g, true, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n\r\n");
        assert_eq!((m.body, m.upstream_reusable, m.close_client), (BodyKind::Length(5), true, false));
        assert_eq!(head, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        let (m, head) = resp(&g, true, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        assert_eq!((m.body, m.upstream_reusable, m.close_client), (BodyKind::UntilClose, false, true));
        assert!(head.ends_with("Connection: close\r\n\r\n"));
        // A framing header named in Connection stays: the body is framed by it.
        let (m, head) =
            resp(&g, true, "HTTP/1.1 200 OK\r\nConnection: Content-Length, X-P\r\nX-P: 1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(m.body, BodyKind::Length(5));
        assert_eq!(head, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        let (m, head) =
            resp(&g, true, "HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(m.body, BodyKind::Chunked);
        assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
        let (m, _) = resp(&g, true, "HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(m.body, BodyKind::None);
        let (m, _) = resp(&g, true, "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!m.upstream_reusable, "HTTP/1.0 upstream without keep-alive");
        let head_req = RequestMeta { method: Method::Head, ..g };
        let (m, _) = resp(&head_req, true, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
        assert_eq!(m.body, BodyKind::None, "HEAD responses have no body");
        let (m, head) = resp(&get_meta(0), true, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n");
        assert!(m.dechunk && m.close_client);
        assert!(!head.contains("Transfer-Encoding") && !head.contains("Trailer"));
        let (m, head) = resp(&get_meta(0), true, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!m.close_client);
        assert!(head.contains("Connection: keep-alive\r\n"));
        let mut out = Vec::new();
        assert!(matches!(
            prepare_response(
                b"HTTP/1.1 100 Continue\r\n\r\n",
                100,
                &g,
                true,
                |_| false,
                |_: &mut Vec<u8>| {},
                &mut out
            ),
            Ok(PreparedResponse::Informational { head_len: 25 })
        ));
        assert!(prepare_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            100,
            &g,
            true,
            |_| false,
            |_: &mut Vec<u8>| {},
            &mut out
        )
        .is_err());
    }

    #[test]
    fn heads_that_go_out_unchanged_are_told_apart() {
        // (request's HTTP minor version, client kept alive, upstream head, forwarded verbatim)
        let cases: &[(u8, bool, &str, bool)] = &[
            (1, true, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            // nginx's keep-alive responses: the one line the client head leaves out.
            (
                1,
                true,
                "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nConnection: keep-alive\r\nETag: x\r\n\r\n",
                true,
            ),
            // The dropped line followed by one sharing its first letters.
            (1, true, "HTTP/1.1 200 OK\r\nconnection: Keep-Alive\r\nContent-Length: 5\r\n\r\n", true),
            (1, true, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n", true),
            // The client closes after this response, so "keep-alive" would be false.
            (1, false, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n", false),
            (1, false, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            // Other hop-by-hop headers, other Connection values, other versions are rewritten.
            (1, true, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n\r\n", false),
            (1, true, "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n", false),
            (
                1,
                true,
                "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n",
                false,
            ),
            (1, true, "HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n", false),
            (1, true, "HTTP/1.1 200 OK\r\nContent-Length:5\r\n\r\n", false),
            // An HTTP/1.0 client gets "Connection: keep-alive" at the end of the head: the same
            // bytes only where the upstream put it there too.
            (0, true, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n", true),
            (0, true, "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n", false),
            (0, true, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
        ];
        for &(minor, keep_alive, raw, want) in cases {
            let (m, head) = resp(&get_meta(minor), keep_alive, raw);
            assert_eq!(forwards_verbatim(raw.as_bytes(), head.as_bytes(), &m), want, "{raw:?} -> {head:?}");
        }
        let limits = |out: &mut Vec<u8>| out.extend_from_slice(b"X-RateLimit-Limit: 10\r\n");
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        let mut out = Vec::new();
        let Ok(PreparedResponse::Ready(m)) =
            prepare_response(raw.as_bytes(), 100, &get_meta(1), true, |_| false, limits, &mut out)
        else {
            panic!("expected a response")
        };
        assert!(!forwards_verbatim(raw.as_bytes(), &out, &m), "rate-limit headers are added");
        // A dropped upstream header makes the head differ too.
        let raw = "HTTP/1.1 200 OK\r\nX-Mine: 1\r\nContent-Length: 5\r\n\r\n";
        out.clear();
        let drop = |n: &[u8]| n.eq_ignore_ascii_case(b"x-mine");
        let Ok(PreparedResponse::Ready(m)) =
            prepare_response(raw.as_bytes(), 100, &get_meta(1), true, drop, |_: &mut Vec<u8>| {}, &mut out)
        else {
            panic!("expected a response")
        };
        assert_eq!(String::from_utf8_lossy(&out), "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert!(!forwards_verbatim(raw.as_bytes(), &out, &m), "a header is dropped");
    }

    #[test]
    fn upgrade_response_keeps_upgrade_header() {
        let up = RequestMeta { upgrade: true, ..get_meta(1) };
        let (m, head) =
            resp(&up, true, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        assert!(m.switching);
        assert_eq!(head, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
    }

    #[test]
    fn common_prefix_finds_the_first_difference_at_every_position() {
        let naive = |a: &[u8], b: &[u8]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let base: Vec<u8> = (0..70u8).map(|i| b'a' + i % 26).collect();
        for len in 0..base.len() {
            let a = &base[..len];
            // Equal, and either one a prefix of the other.
            assert_eq!(common_prefix(a, a), len);
            assert_eq!(common_prefix(a, &base), len);
            assert_eq!(common_prefix(&base, a), len);
            // One byte changed at every position, in either argument.
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] ^= 0x20;
                assert_eq!(common_prefix(a, &b), at, "len {len}, differ at {at}");
                assert_eq!(common_prefix(&b, a), at);
                assert_eq!(common_prefix(a, &b), naive(a, &b));
            }
        }
    }
}
