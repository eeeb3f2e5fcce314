//! Request heads: parse once into a [`RequestHead`] of offsets (kept in a pooled buffer, so a
//! request that waits for the control plane is never parsed twice), decide the framing, and the
//! pieces the upstream head is written from.
//!
//! Rules enforced: `Content-Length` together with `Transfer-Encoding`, conflicting or malformed
//! `Content-Length`s, any `Transfer-Encoding` other than one `chunked` (and any on HTTP/1.0), a
//! `Connection` header naming a framing header or `Host`, duplicate or missing `Host` on
//! HTTP/1.1 are refused (400, connection closed) as request-smuggling shapes. Hop-by-hop headers
//! (`Connection` and the headers it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Upgrade`
//! unless tunnelling, `Proxy-Authorization`) are never forwarded, and the framing goes upstream as
//! one canonical header ([`RequestHead::write_framing`]).

use std::mem::MaybeUninit;

use crate::digits::push_u64;
use crate::error::{HeadError, HeadErrorKind};

/// Upper bound on headers per head; `proxy.max_headers` may lower it.
pub const MAX_HEADERS: usize = 128;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    /// Response only: the body ends when the upstream closes.
    UntilClose,
}

/// Request methods, for metric labels (OTel's `_OTHER` for the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Connect,
    Trace,
    Other,
}

impl Method {
    fn from_bytes(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            "CONNECT" => Method::Connect,
            "TRACE" => Method::Trace,
            _ => Method::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Connect => "CONNECT",
            Method::Trace => "TRACE",
            Method::Other => "_OTHER",
        }
    }
}

/// What the connection loop needs to know about a request once its head is parsed.
#[derive(Debug, Clone, Copy)]
pub struct RequestMeta {
    pub method: Method,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    pub head_len: usize,
    pub body: BodyKind,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent (and is answered by the proxy, not forwarded).
    pub expect_continue: bool,
    /// `Connection: upgrade` + `Upgrade` were sent: a 101 turns the connection into a tunnel.
    pub upgrade: bool,
    /// Where the method, target and `User-Agent` sit in the head (for the request record).
    pub spans: HeadSpans,
}

/// A part of the head bytes, by offset (empty when absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    /// The span of `part`, a slice of `base`; empty if it is not one.
    pub fn of(base: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
        if start > base.len() || part.len() > base.len() - start {
            return Span::default();
        }
        Span { start: start as u32, len: part.len() as u32 }
    }

    /// The bytes of this span in `head` (the bytes it was taken from).
    pub fn get(self, head: &[u8]) -> &[u8] {
        let (s, e) = (self.start as usize, self.start as usize + self.len as usize);
        head.get(s..e).unwrap_or_default()
    }
}

/// Spans of the request head a record needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadSpans {
    pub method: Span,
    /// Request target as sent (path and query; absolute form included).
    pub target: Span,
    pub user_agent: Span,
    /// The first `Content-Type` (empty when none).
    pub content_type: Span,
}

/// Where one header's name and value sit in the head.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderSpan {
    name: Span,
    value: Span,
}

/// One header of a parsed head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl Header<'_> {
    /// The header is called `name` (ASCII case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// The headers of a parsed head, in order: the head's bytes and where each header sits in them.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    data: &'a [u8],
    spans: &'a [HeaderSpan],
}

impl<'a> Headers<'a> {
    pub fn iter(&self) -> impl Iterator<Item = Header<'a>> + 'a {
        let data = self.data;
        self.spans.iter().map(move |h| Header { name: h.name.get(data), value: h.value.get(data) })
    }

    /// The first header called `name`.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter().find(|h| h.is(name)).map(|h| h.value)
    }
}

/// Headers built from pairs (tests, benchmarks and anything that makes a request without
/// parsing one).
#[derive(Debug, Default, Clone)]
pub struct HeaderList {
    data: Vec<u8>,
    spans: Vec<HeaderSpan>,
}

impl HeaderList {
    pub fn new(pairs: &[(&str, &[u8])]) -> HeaderList {
        let mut l = HeaderList::default();
        for (n, v) in pairs {
            let name = Span { start: l.data.len() as u32, len: n.len() as u32 };
            l.data.extend_from_slice(n.as_bytes());
            let value = Span { start: l.data.len() as u32, len: v.len() as u32 };
            l.data.extend_from_slice(v);
            l.spans.push(HeaderSpan { name, value });
        }
        l
    }

    pub fn view(&self) -> Headers<'_> {
        Headers { data: &self.data, spans: &self.spans }
    }
}

/// The form of the request target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`.
    Origin,
    /// `http://authority/path?query`: the authority is the host.
    Absolute,
    /// `*`, authority form or anything else: no path to route.
    Other,
}

/// Up to 8 tokens of `Connection` headers (the headers they name are hop-by-hop), as spans.
#[derive(Debug, Clone, Copy, Default)]
struct ConnTokens {
    tokens: [Span; 8],
    n: u8,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    /// A token named `Content-Length`, `Transfer-Encoding` or `Host`. Such a token is never
    /// honoured: dropping the header it names while relaying the body it frames is how a
    /// request is smuggled past the proxy.
    names_framing: bool,
}

impl ConnTokens {
    fn add(&mut self, data: &[u8], value: &[u8]) {
        for t in value.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty()) {
            if eq_ic(t, "close") {
                self.close = true;
            } else if eq_ic(t, "keep-alive") {
                self.keep_alive = true;
            } else if eq_ic(t, "upgrade") {
                self.upgrade = true;
            } else if eq_ic(t, "content-length") || eq_ic(t, "transfer-encoding") || eq_ic(t, "host") {
                self.names_framing = true;
            } else if (self.n as usize) < self.tokens.len() {
                self.tokens[self.n as usize] = Span::of(data, t);
                self.n += 1;
            }
        }
    }

    fn names(&self, data: &[u8], header: &[u8]) -> bool {
        self.tokens[..self.n as usize].iter().any(|t| t.get(data).eq_ignore_ascii_case(header))
    }
}

/// Framing facts gathered in one pass over a head's headers.
struct Framing {
    content_length: Option<u64>,
    /// The final coding of the last `Transfer-Encoding` header is `chunked`.
    chunked: bool,
    has_te: bool,
    /// There is exactly one `Transfer-Encoding` header and its value is `chunked` and nothing
    /// else: the only request framing by transfer coding accepted (as nginx: anything else is
    /// an ambiguity that a lenient hop behind us may resolve differently).
    te_exactly_chunked: bool,
    conn: ConnTokens,
}

fn framing(data: &[u8], headers: &[httparse::Header<'_>]) -> Result<Framing, &'static str> {
    let mut f = Framing {
        content_length: None,
        chunked: false,
        has_te: false,
        te_exactly_chunked: false,
        conn: ConnTokens::default(),
    };
    for h in headers {
        let n = h.name;
        if n.eq_ignore_ascii_case("content-length") {
            let Some(v) = parse_content_length(h.value) else {
                return Err("malformed Content-Length");
            };
            match f.content_length {
                Some(prev) if prev != v => return Err("conflicting Content-Length headers"),
                _ => f.content_length = Some(v),
            }
        } else if n.eq_ignore_ascii_case("transfer-encoding") {
            f.te_exactly_chunked = !f.has_te && eq_ic(trim(h.value), "chunked");
            f.has_te = true;
            f.chunked = final_coding_is_chunked(h.value);
        } else if n.eq_ignore_ascii_case("connection") {
            f.conn.add(data, h.value);
        }
    }
    Ok(f)
}

/// A parsed request head: offsets into the bytes it was parsed from, so it outlives the parse
/// and can be looked at again ([`RequestHead::view`]) after the exchange has waited.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead {
    pub meta: RequestMeta,
    pub form: TargetForm,
    /// The absolute form's authority, else the (trimmed) `Host` header.
    host: Option<Span>,
    /// The path as sent (not canonical), without the query; empty unless `form` has one.
    path: Span,
    /// `""` or `?...`.
    query: Span,
    /// The request's `Content-Length`, for [`RequestHead::write_framing`].
    declared_length: Option<u64>,
    upgrade_value: Option<Span>,
    /// The first `X-Request-Id` (found in the parse, so no phase scans for it).
    request_id: Option<Span>,
    conn: ConnTokens,
}

/// A parsed request head together with its bytes: what the request phases read.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// A copy: a view borrows only the bytes, never the head it was made from.
    pub head: RequestHead,
    /// The head's bytes (and whatever followed them in the buffer).
    pub data: &'a [u8],
    pub method: &'a str,
    /// The path as sent, without the query (see `path::canonical` for the one rules see).
    pub raw_path: &'a str,
    /// `""` or `?...`.
    pub query: &'a str,
    pub host: Option<&'a [u8]>,
    pub headers: Headers<'a>,
}

impl RequestHead {
    /// This head over `data` (the bytes it was parsed from) and `spans` (the header spans
    /// [`parse_request`] filled in).
    pub fn view<'a>(&self, data: &'a [u8], spans: &'a [HeaderSpan]) -> Request<'a> {
        // Method and target were checked by httparse (a token, visible ASCII); a view over other
        // bytes than the parsed ones gets empty strings, never undefined behaviour. One UTF-8
        // check covers the request line up to the end of the target (criterion
        // `request_head/*`: three checks were 5 % of a keyless request head).
        let (m, t) = (self.meta.spans.method, self.meta.spans.target);
        let line_start = m.start as usize;
        let line = Span { start: m.start, len: (t.start + t.len).saturating_sub(m.start) };
        let line = std::str::from_utf8(line.get(data)).unwrap_or("");
        let text = |s: Span| {
            let from = (s.start as usize).wrapping_sub(line_start);
            from.checked_add(s.len as usize).and_then(|to| line.get(from..to)).unwrap_or("")
        };
        Request {
            head: *self,
            data,
            method: text(m),
            raw_path: text(self.path),
            query: text(self.query),
            host: self.host.map(|s| s.get(data)),
            headers: Headers { data, spans },
        }
    }
}

impl<'a> Request<'a> {
    /// The client's first `X-Request-Id`, if it sent one.
    pub fn request_id(&self) -> Option<&'a [u8]> {
        self.head.request_id.map(|s| s.get(self.data))
    }

    /// Whether a request header may be copied upstream as it is: not hop-by-hop, not named by
    /// `Connection`, not the framing (written once by [`RequestHead::write_framing`]), not
    /// `Host` (the proxy writes it) and not `Expect` (answered by the proxy).
    pub fn forwards(&self, name: &[u8]) -> bool {
        !(is_hop_by_hop(name)
            || eq_ic(name, "content-length")
            || eq_ic(name, "transfer-encoding")
            || eq_ic(name, "host")
            || eq_ic(name, "expect")
            || self.head.conn.names(self.data, name))
    }

    /// The request's framing as the upstream gets it: exactly what the proxy parsed, in one
    /// canonical header, so that no hop behind it can read duplicates, list forms or odd spacing
    /// differently.
    pub fn write_framing(&self, out: &mut Vec<u8>) {
        match (self.head.meta.body, self.head.declared_length) {
            (BodyKind::Chunked, _) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            (_, Some(n)) => {
                out.extend_from_slice(b"Content-Length: ");
                push_u64(out, n);
                out.extend_from_slice(b"\r\n");
            }
            _ => {}
        }
    }

    /// Ends the upstream head: the upgrade headers of a tunnel request, then the empty line.
    pub fn finish_head(&self, out: &mut Vec<u8>) {
        if self.head.meta.upgrade {
            out.extend_from_slice(b"Connection: upgrade\r\nUpgrade: ");
            out.extend_from_slice(self.head.upgrade_value.map(|s| s.get(self.data)).unwrap_or_default());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses as much of a request head as `data` holds: `Ok(None)` while it is incomplete. When
/// complete, its header spans are in `spans` (cleared first) and its framing has been checked.
pub fn parse_request(
    data: &[u8],
    max_headers: usize,
    spans: &mut Vec<HeaderSpan>,
) -> Result<Option<RequestHead>, HeadError> {
    // Uninitialised header slots: zeroing 128 of them per request measurably cost more than
    // parsing a small head.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        data,
        &mut headers[..max_headers.min(MAX_HEADERS)],
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError { kind: HeadErrorKind::TooManyHeaders, context: "too many request headers" })
        }
        Err(_) => return Err(HeadError::bad("malformed request head")),
    };
    let method_str = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let minor_version = req.version.unwrap_or(1);
    let headers = &*req.headers;
    let f = framing(data, headers).map_err(HeadError::bad)?;

    if f.conn.names_framing {
        // Refused rather than ignored: no client has a reason to send it, and a hop in front
        // of us (a CDN, another proxy) may already have acted on it differently.
        return Err(HeadError::bad("Connection names a framing header"));
    }
    if f.has_te {
        if f.content_length.is_some() {
            return Err(HeadError::bad("both Content-Length and Transfer-Encoding"));
        }
        if !f.te_exactly_chunked || minor_version == 0 {
            return Err(HeadError::bad("unsupported Transfer-Encoding"));
        }
    }
    let body = if f.chunked {
        BodyKind::Chunked
    } else {
        match f.content_length {
            None | Some(0) => BodyKind::None,
            Some(n) => BodyKind::Length(n),
        }
    };
    spans.clear();
    spans.extend(
        headers.iter().map(|h| HeaderSpan { name: Span::of(data, h.name.as_bytes()), value: Span::of(data, h.value) }),
    );
    let mut host: Option<&[u8]> = None;
    let mut expect_continue = false;
    let mut upgrade_value: Option<&[u8]> = None;
    let mut request_id: Option<Span> = None;
    let mut user_agent = Span::default();
    let mut content_type = Span::default();
    for h in headers {
        if h.name.len() == 10 && h.name.eq_ignore_ascii_case("user-agent") {
            user_agent = Span::of(data, h.value);
        } else if h.name.len() == 12 && content_type.len == 0 && h.name.eq_ignore_ascii_case("content-type") {
            content_type = Span::of(data, trim(h.value));
        } else if h.name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(HeadError::bad("duplicate Host header"));
            }
            host = Some(trim(h.value));
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = eq_ic(trim(h.value), "100-continue");
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade_value = Some(trim(h.value));
        } else if request_id.is_none() && h.name.len() == 12 && h.name.eq_ignore_ascii_case("x-request-id") {
            request_id = Some(Span::of(data, h.value));
        }
    }
    if minor_version == 1 && host.is_none() {
        return Err(HeadError::bad("HTTP/1.1 request without Host"));
    }
    let keep_alive = if minor_version == 0 { f.conn.keep_alive && !f.conn.close } else { !f.conn.close };
    let upgrade = f.conn.upgrade && upgrade_value.is_some() && minor_version == 1;
    let meta = RequestMeta {
        method: Method::from_bytes(method_str),
        minor_version,
        head_len,
        body,
        keep_alive,
        expect_continue: expect_continue && body != BodyKind::None,
        upgrade,
        spans: HeadSpans {
            method: Span::of(data, method_str.as_bytes()),
            target: Span::of(data, target.as_bytes()),
            user_agent,
            content_type,
        },
    };
    // Origin form ("/p?q") or absolute form ("http://h/p?q"); the latter's authority wins as host.
    let (form, host, path_and_query) = match split_absolute(target) {
        Some((h, p)) => (TargetForm::Absolute, Some(h.as_bytes()), p),
        None if target.starts_with('/') => (TargetForm::Origin, host, target),
        None => (TargetForm::Other, host, ""),
    };
    let (path, query) = match path_and_query.find('?') {
        Some(i) => (&path_and_query[..i], &path_and_query[i..]),
        None => (path_and_query, ""),
    };
    Ok(Some(RequestHead {
        meta,
        form,
        host: host.map(|h| Span::of(data, h)),
        path: Span::of(data, path.as_bytes()),
        query: Span::of(data, query.as_bytes()),
        declared_length: f.content_length,
        upgrade_value: upgrade_value.map(|v| Span::of(data, v)),
        request_id,
        conn: f.conn,
    }))
}

fn split_absolute(target: &str) -> Option<(&str, &str)> {
    let rest = target.strip_prefix("http://").or_else(|| target.strip_prefix("https://"))?;
    Some(match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
        Some(i) => (&rest[..i], "/"),
        None => (rest, "/"),
    })
}

pub(crate) fn eq_ic(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// `v` without leading and trailing whitespace.
pub fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &v[start..end]
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// `Transfer-Encoding` value: `true` when its final coding is `chunked`.
fn final_coding_is_chunked(v: &[u8]) -> bool {
    let last = v.rsplit(|&b| b == b',').next().unwrap_or(v);
    eq_ic(trim(last), "chunked")
}

/// Headers never forwarded in either direction.
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    ["connection", "keep-alive", "proxy-connection", "te", "upgrade", "proxy-authorization"]
        .iter()
        .any(|h| eq_ic(name, h))
}

/// Whether `b` may appear in a header field value (RFC 9110 5.5: HTAB, SP, VCHAR, obs-text).
pub fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || b >= 0x20 && b != 0x7f
}

/// Drops from `out[start..]` every byte not allowed in a field value (CR and LF, which would end
/// the header line early, and NUL, the other controls and DEL, which some parsers take as a line
/// end and others refuse): for values that come from outside (JWT claims, session metadata).
pub fn strip_non_field_bytes(out: &mut Vec<u8>, start: usize) {
    if out[start..].iter().all(|&b| is_field_value_byte(b)) {
        return;
    }
    let mut w = start;
    for r in start..out.len() {
        let b = out[r];
        if is_field_value_byte(b) {
            out[w] = b;
            w += 1;
        }
    }
    out.truncate(w);
}

/// `name: value` CRLF.
pub fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `name` (with its colon and space) then `v` in decimal, CRLF.
pub fn header_num(out: &mut Vec<u8>, name: &[u8], v: u64) {
    out.extend_from_slice(name);
    push_u64(out, v);
    out.extend_from_slice(b"\r\n");
}

/// Response framing uses the same one pass over the headers.
pub(crate) fn response_framing(data: &[u8], headers: &[httparse::Header<'_>]) -> Option<ResponseFraming> {
    let f = framing(data, headers).ok()?;
    Some(ResponseFraming {
        content_length: f.content_length,
        chunked: f.chunked,
        has_te: f.has_te,
        close: f.conn.close,
        keep_alive: f.conn.keep_alive,
        conn: f.conn,
    })
}

/// What a response head says about its framing and connection.
pub(crate) struct ResponseFraming {
    pub(crate) content_length: Option<u64>,
    pub(crate) chunked: bool,
    pub(crate) has_te: bool,
    pub(crate) close: bool,
    pub(crate) keep_alive: bool,
    conn: ConnTokens,
}

impl ResponseFraming {
    /// `Connection` names this header.
    pub(crate) fn names(&self, data: &[u8], header: &[u8]) -> bool {
        self.conn.names(data, header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_lose_every_byte_a_field_value_may_not_hold() {
        let mut out = b"X-Claim: ".to_vec();
        out.extend_from_slice(b"a\rb\nc\x00d\x0be\x0cf\x7fg\th \xc3\xa9");
        strip_non_field_bytes(&mut out, 9);
        assert_eq!(out, b"X-Claim: abcdefg\th \xc3\xa9");
    }
}
