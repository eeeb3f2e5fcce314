//! HTTP/1.x heads: parse the client's request head, decide its framing, route it and write the
//! upstream request head; parse the upstream's response head and write the client's. Pure
//! functions over byte slices (no I/O), so every rule here is unit tested without sockets.
//!
//! Rules enforced: `Content-Length` together with `Transfer-Encoding`, conflicting or malformed
//! `Content-Length`s, and a `Transfer-Encoding` whose final coding is not `chunked` are rejected
//! (400, connection closed) as request-smuggling shapes. Hop-by-hop headers (`Connection` and the
//! headers it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Upgrade` unless tunnelling,
//! `Proxy-Authorization`) are not forwarded. Chunked bodies are relayed verbatim, so
//! `Transfer-Encoding` and `Trailer` pass through with them and trailers reach the other side;
//! towards an HTTP/1.0 client a chunked response is decoded and its trailers dropped.

use std::io::Write as _;
use std::mem::MaybeUninit;

use crate::auth::{self, transform, DecideCtx, Decision, Denial, KeyHash, RequestView, WorkerAuth};
use crate::config::{ApiSpec, Snapshot, Target};
use crate::router::ApiIndex;

use super::error::{ErrorKind, ProxyError, Result};

// Upper bound on headers per head; `proxy.max_headers` may lower it.
use crate::config::MAX_HEADERS;

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
    fn of(base: &[u8], part: &[u8]) -> Span {
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
}

/// Per-connection facts used when writing the upstream head.
pub struct ClientCtx<'a> {
    /// Client IP as text, for `X-Forwarded-For`.
    pub client_ip: &'a str,
    pub client_addr: std::net::IpAddr,
}

/// The worker state and clock the auth and limit steps need.
pub struct AuthCtx<'w> {
    pub auth: &'w mut WorkerAuth,
    pub limiter: &'w mut crate::limit::Limiter,
    /// Unix seconds; read only for requests that need it (APIs with auth), not on the keyless
    /// fast path.
    pub now: &'w dyn Fn() -> u64,
}

/// A routed request whose upstream head has been written into the caller's buffer.
#[derive(Debug)]
pub struct Routed {
    pub meta: RequestMeta,
    pub api: ApiIndex,
    /// Index into the API's `targets`.
    pub target: usize,
    /// Who the request runs as (APIs with auth).
    pub identity: Option<auth::Identity>,
    /// Tags from `tag_headers` (`<header lower case>-<value>`), for the request record.
    pub tags: Vec<String>,
    /// The rate limit and quota that applied, for `X-RateLimit-*` / `X-Quota-*` on the response.
    pub limits: crate::limit::LimitHeaders,
}

/// What the worker must ask the control plane before it can decide.
#[derive(Debug)]
pub enum Need {
    /// The session of this key hash (not in the worker's cache).
    Key(KeyHash),
    /// Basic-auth credentials to check off the worker.
    Password(auth::PasswordCheck),
    /// A block of this quota (none held).
    Quota(crate::limit::quota::Quota),
}

/// Outcome of looking at the bytes read so far.
#[derive(Debug)]
pub enum Prepared {
    /// Need more bytes for a complete head.
    Partial,
    /// Routed; upstream head in `out`.
    Routed(Routed),
    /// Parsed but no API matches (404 to send).
    NoRoute(RequestMeta),
    /// Refused by IP rules, path lists or auth.
    Denied { meta: RequestMeta, api: ApiIndex, denial: Denial },
    /// The worker needs an answer from the control plane first (a session, a password check,
    /// a quota block); get it, then prepare again.
    Need { meta: RequestMeta, api: ApiIndex, need: Need },
}

fn eq_ic(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn trim(v: &[u8]) -> &[u8] {
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

/// `Transfer-Encoding` value: `Some(true)` when its final coding is `chunked`.
fn final_coding_is_chunked(v: &[u8]) -> bool {
    let last = v.rsplit(|&b| b == b',').next().unwrap_or(v);
    eq_ic(trim(last), "chunked")
}

/// Up to 8 tokens of `Connection` headers (the headers they name are hop-by-hop).
#[derive(Default)]
struct ConnTokens<'b> {
    tokens: [&'b [u8]; 8],
    n: usize,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    /// A token named `Content-Length`, `Transfer-Encoding` or `Host`. Such a token is never
    /// honoured: dropping the header it names while relaying the body it frames is how a
    /// request is smuggled past the proxy (see [`framing`]).
    names_framing: bool,
}

impl<'b> ConnTokens<'b> {
    fn add(&mut self, value: &'b [u8]) {
        for t in value.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty()) {
            if eq_ic(t, "close") {
                self.close = true;
            } else if eq_ic(t, "keep-alive") {
                self.keep_alive = true;
            } else if eq_ic(t, "upgrade") {
                self.upgrade = true;
            } else if eq_ic(t, "content-length") || eq_ic(t, "transfer-encoding") || eq_ic(t, "host") {
                self.names_framing = true;
            } else if self.n < self.tokens.len() {
                self.tokens[self.n] = t;
                self.n += 1;
            }
        }
    }

    fn names(&self, header: &str) -> bool {
        self.tokens[..self.n].iter().any(|t| eq_ic(t, header))
    }
}

/// Headers never forwarded in either direction.
fn is_hop_by_hop(name: &str) -> bool {
    ["connection", "keep-alive", "proxy-connection", "te", "upgrade", "proxy-authorization"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Framing facts gathered in one pass over a head's headers.
struct Framing<'b> {
    content_length: Option<u64>,
    /// The final coding of the last `Transfer-Encoding` header is `chunked`.
    chunked: bool,
    has_te: bool,
    /// There is exactly one `Transfer-Encoding` header and its value is `chunked` and nothing
    /// else: the only request framing by transfer coding accepted (as nginx: anything else is
    /// an ambiguity that a lenient hop behind us may resolve differently).
    te_exactly_chunked: bool,
    conn: ConnTokens<'b>,
}

fn framing<'b>(headers: &[httparse::Header<'b>]) -> Result<Framing<'b>> {
    let bad = |ctx| Err(ProxyError::new(ErrorKind::BadRequest, ctx));
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
                return bad("malformed Content-Length");
            };
            match f.content_length {
                Some(prev) if prev != v => return bad("conflicting Content-Length headers"),
                _ => f.content_length = Some(v),
            }
        } else if n.eq_ignore_ascii_case("transfer-encoding") {
            f.te_exactly_chunked = !f.has_te && eq_ic(trim(h.value), "chunked");
            f.has_te = true;
            f.chunked = final_coding_is_chunked(h.value);
        } else if n.eq_ignore_ascii_case("connection") {
            f.conn.add(h.value);
        }
    }
    Ok(f)
}

/// Request headers the proxy never copies upstream, on either path: hop-by-hop ones and those
/// `Connection` names, the framing (rewritten by [`write_framing`]), `Host` (set by
/// `write_proxy_headers`) and `Expect` (answered by the proxy).
fn never_forwarded(n: &str, conn: &ConnTokens<'_>) -> bool {
    is_hop_by_hop(n)
        || is_framing(n)
        || n.eq_ignore_ascii_case("host")
        || n.eq_ignore_ascii_case("expect")
        || conn.names(n)
}

/// `Content-Length` and `Transfer-Encoding`: never copied from a request head, but written
/// once, normalised, by [`write_framing`].
fn is_framing(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding")
}

/// The request's framing as the upstream gets it: exactly what the proxy parsed, in one
/// canonical header, so that no hop behind it can read duplicates, list forms or odd spacing
/// differently.
fn write_framing(out: &mut Vec<u8>, body: BodyKind, declared_length: Option<u64>) {
    match (body, declared_length) {
        (BodyKind::Chunked, _) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        (_, Some(n)) => header_num(out, b"Content-Length: ", n),
        _ => {}
    }
}

/// Parses as much of a request head as `data` holds; when complete, validates framing, routes
/// it and writes the upstream request head into `out`. `pick` chooses among the API's targets.
pub fn prepare_request(
    data: &[u8],
    max_headers: usize,
    snap: &Snapshot,
    ctx: &ClientCtx<'_>,
    actx: AuthCtx<'_>,
    request_id: impl FnOnce() -> [u8; 32],
    pick: impl FnOnce(ApiIndex, &ApiSpec) -> usize,
    out: &mut Vec<u8>,
) -> Result<Prepared> {
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
        Ok(httparse::Status::Partial) => return Ok(Prepared::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ProxyError::new(ErrorKind::HeadTooLarge, "too many request headers"))
        }
        Err(_) => return Err(ProxyError::new(ErrorKind::BadRequest, "malformed request head")),
    };
    let method_str = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let minor_version = req.version.unwrap_or(1);
    let headers = &*req.headers;
    let f = framing(headers)?;

    if f.conn.names_framing {
        // Refused rather than ignored: no client has a reason to send it, and a hop in front
        // of us (a CDN, another proxy) may already have acted on it differently.
        return Err(ProxyError::new(ErrorKind::BadRequest, "Connection names a framing header"));
    }
    if f.has_te {
        if f.content_length.is_some() {
            return Err(ProxyError::new(ErrorKind::BadRequest, "both Content-Length and Transfer-Encoding"));
        }
        if !f.te_exactly_chunked || minor_version == 0 {
            return Err(ProxyError::new(ErrorKind::BadRequest, "unsupported Transfer-Encoding"));
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
    let mut host: Option<&[u8]> = None;
    let mut expect_continue = false;
    let mut upgrade_value: Option<&[u8]> = None;
    let mut user_agent = Span::default();
    for h in headers {
        if h.name.len() == 10 && h.name.eq_ignore_ascii_case("user-agent") {
            user_agent = Span::of(data, h.value);
        } else if h.name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(ProxyError::new(ErrorKind::BadRequest, "duplicate Host header"));
            }
            host = Some(trim(h.value));
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = eq_ic(trim(h.value), "100-continue");
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade_value = Some(trim(h.value));
        }
    }
    if minor_version == 1 && host.is_none() {
        return Err(ProxyError::new(ErrorKind::BadRequest, "HTTP/1.1 request without Host"));
    }
    let keep_alive = if minor_version == 0 { f.conn.keep_alive && !f.conn.close } else { !f.conn.close };
    let upgrade = f.conn.upgrade && upgrade_value.is_some() && minor_version == 1;
    let method = Method::from_bytes(method_str);
    let meta = RequestMeta {
        method,
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
        },
    };

    // Origin form ("/p?q") or absolute form ("http://h/p?q"); the latter's authority wins as host.
    let (host, path_and_query) = match split_absolute(target) {
        Some((h, p)) => (Some(h.as_bytes()), p),
        None if target.starts_with('/') => (host, target),
        None => return Ok(Prepared::NoRoute(meta)),
    };
    let (raw_path, query) = match path_and_query.find('?') {
        Some(i) => (&path_and_query[..i], &path_and_query[i..]),
        None => (path_and_query, ""),
    };
    // From here on only the canonical path exists: routing, rules, limits and the upstream.
    let path = super::path::canonical(raw_path).map_err(|e| ProxyError::new(ErrorKind::BadRequest, e))?;
    let path = &*path;
    let Some(api_idx) = snap.router.lookup(host, path) else {
        return Ok(Prepared::NoRoute(meta));
    };
    let api = &snap.apis[api_idx as usize];
    if !api.plain {
        return prepare_gateway(
            GatewayReq {
                meta,
                method_str,
                host,
                path,
                query,
                headers,
                xff_skip: &f.conn,
                upgrade_value,
                declared_length: f.content_length,
            },
            snap,
            api_idx,
            ctx,
            actx,
            request_id,
            pick,
            out,
        );
    }
    let target_idx = pick(api_idx, api) % api.targets.len();
    let target = &api.targets[target_idx];

    // Request line.
    out.extend_from_slice(method_str.as_bytes());
    out.push(b' ');
    write_upstream_path(out, api, target, path);
    out.extend_from_slice(query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");

    // Headers.
    let mut xff: Option<&[u8]> = None;
    let mut has_request_id = false;
    for h in headers {
        let n = h.name;
        if never_forwarded(n, &f.conn) {
            continue;
        }
        if n.eq_ignore_ascii_case("x-forwarded-for") {
            xff = Some(trim(h.value));
            continue;
        }
        if n.eq_ignore_ascii_case("x-forwarded-proto") {
            continue;
        }
        if n.eq_ignore_ascii_case("x-request-id") {
            has_request_id = true;
        }
        push_header(out, n.as_bytes(), h.value);
    }
    write_framing(out, body, f.content_length);
    write_proxy_headers(out, api, target, host, xff, ctx);
    if !has_request_id {
        out.extend_from_slice(b"X-Request-Id: ");
        out.extend_from_slice(&request_id());
        out.extend_from_slice(b"\r\n");
    }
    finish_head(out, upgrade, upgrade_value);
    Ok(Prepared::Routed(Routed {
        meta,
        api: api_idx,
        target: target_idx,
        identity: None,
        tags: Vec::new(),
        limits: Default::default(),
    }))
}

fn write_proxy_headers(
    out: &mut Vec<u8>,
    api: &ApiSpec,
    target: &Target,
    host: Option<&[u8]>,
    xff: Option<&[u8]>,
    ctx: &ClientCtx<'_>,
) {
    out.extend_from_slice(b"Host: ");
    match (api.preserve_host_header, host) {
        (true, Some(h)) => out.extend_from_slice(h),
        _ => out.extend_from_slice(target.host_header.as_bytes()),
    }
    out.extend_from_slice(b"\r\nX-Forwarded-For: ");
    if let Some(prev) = xff.filter(|v| !v.is_empty()) {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(ctx.client_ip.as_bytes());
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\n");
}

fn finish_head(out: &mut Vec<u8>, upgrade: bool, upgrade_value: Option<&[u8]>) {
    if upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\nUpgrade: ");
        out.extend_from_slice(upgrade_value.unwrap_or_default());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The parsed request, as the gateway path needs it.
struct GatewayReq<'b, 'c> {
    meta: RequestMeta,
    method_str: &'b str,
    host: Option<&'b [u8]>,
    /// Canonical (see `dataplane::path`).
    path: &'c str,
    query: &'b str,
    headers: &'b [httparse::Header<'b>],
    xff_skip: &'c ConnTokens<'b>,
    upgrade_value: Option<&'b [u8]>,
    /// The request's `Content-Length`, for [`write_framing`].
    declared_length: Option<u64>,
}

/// Requests to APIs with auth, IP rules, path lists or transforms: decide, then write the
/// upstream head with auth data stripped and headers transformed.
fn prepare_gateway(
    r: GatewayReq<'_, '_>,
    snap: &Snapshot,
    api_idx: ApiIndex,
    ctx: &ClientCtx<'_>,
    actx: AuthCtx<'_>,
    request_id: impl FnOnce() -> [u8; 32],
    pick: impl FnOnce(ApiIndex, &ApiSpec) -> usize,
    out: &mut Vec<u8>,
) -> Result<Prepared> {
    let api = &snap.apis[api_idx as usize];
    let a = &*api.auth;
    let rel_path = {
        let rest = r.path.get(api.listen_path.len().min(r.path.len())..).unwrap_or("");
        if rest.is_empty() {
            "/"
        } else {
            rest
        }
    };
    let view = RequestView {
        method: r.method_str,
        path: r.path,
        rel_path,
        query: r.query,
        headers: r.headers,
        client_ip: ctx.client_addr,
    };
    let dcx = DecideCtx {
        api_id: &api.api_id,
        api_index: api_idx,
        generation: snap.generation,
        policies: &snap.policies,
        now: (actx.now)(),
    };
    let allowed = match auth::decide(a, &view, dcx, actx.auth) {
        Decision::Allow(x) => x,
        Decision::Deny(denial) => return Ok(Prepared::Denied { meta: r.meta, api: api_idx, denial }),
        Decision::NeedKey(hash) => return Ok(Prepared::Need { meta: r.meta, api: api_idx, need: Need::Key(hash) }),
        Decision::NeedPasswordCheck(check) => {
            return Ok(Prepared::Need { meta: r.meta, api: api_idx, need: Need::Password(check) })
        }
    };
    // Quota first (a block must be held); a request the rate limits refuse spends none of it.
    let mut limit_headers = crate::limit::LimitHeaders::default();
    let quota = match (&allowed.identity, api.limits.disable_quota) {
        (Some(ident), false) => ident.grant.quota.map(|(max, renewal)| crate::limit::quota::Quota {
            id: ident.quota_id(),
            max,
            // A quota that never renews: one period of ten years.
            period: if renewal > 0 { renewal } else { 10 * 365 * 86_400 },
        }),
        _ => None,
    };
    if let Some(q) = &quota {
        actx.auth.sync();
        match actx.auth.quotas.check(q) {
            crate::limit::quota::QuotaCheck::Available(info) => limit_headers.quota = Some(info),
            crate::limit::quota::QuotaCheck::Reserve => {
                return Ok(Prepared::Need { meta: r.meta, api: api_idx, need: Need::Quota(q.clone()) })
            }
            crate::limit::quota::QuotaCheck::Exceeded(info) => {
                let denial = Denial {
                    kind: auth::Refusal::Forbidden,
                    message: "Quota exceeded".into(),
                    quota: Some(info),
                    ..Default::default()
                };
                return Ok(Prepared::Denied { meta: r.meta, api: api_idx, denial });
            }
        }
    }
    let rate = match check_limits(snap, api, &allowed, r.method_str, rel_path, ctx.client_addr, actx.limiter) {
        Ok(info) => info,
        Err(rej) => {
            let denial = Denial {
                kind: auth::Refusal::TooManyRequests,
                message: "Rate limit exceeded".into(),
                retry_after: Some(rej.retry_after),
                rate: Some(rej.info),
                ..Default::default()
            };
            return Ok(Prepared::Denied { meta: r.meta, api: api_idx, denial });
        }
    };
    limit_headers.rate = rate;
    if let Some(q) = &quota {
        actx.auth.quotas.spend(q);
        if let Some(info) = &mut limit_headers.quota {
            info.remaining = info.remaining.saturating_sub(1);
        }
    }
    let target_idx = pick(api_idx, api) % api.targets.len();
    let target = &api.targets[target_idx];

    // The request id is needed before the headers for `$tyk_context.request_id`.
    let generated;
    let rid: &[u8] = match r.headers.iter().find(|h| h.name.eq_ignore_ascii_case("x-request-id")) {
        Some(h) => h.value,
        None => {
            generated = request_id();
            &generated
        }
    };
    let t = &a.transforms;
    let per_path: Vec<&auth::HeaderTransform> =
        t.per_path.iter().filter(|x| x.rule.matches(r.method_str, rel_path)).collect();
    let tcx = transform::Context {
        headers: r.headers,
        path: r.path,
        remote_addr: ctx.client_addr,
        request_id: rid,
        token: allowed.token,
        claims: allowed.claims.as_deref(),
        session: allowed.session.as_deref(),
    };
    // Added headers: global first, then per path; a later one replaces an earlier one of the
    // same name. Expanded straight into the head below (no buffer per header per request).
    let adds = || t.global_add.iter().chain(per_path.iter().flat_map(|x| x.add.iter()));
    let removed = |n: &str| {
        allowed.strip.removes_header(n)
            || t.global_remove.iter().any(|x| x.eq_ignore_ascii_case(n))
            || per_path.iter().any(|x| x.delete.iter().any(|d| d.eq_ignore_ascii_case(n)))
            || adds().any(|(a, _)| a.eq_ignore_ascii_case(n))
    };

    // Request line.
    out.extend_from_slice(r.method_str.as_bytes());
    out.push(b' ');
    write_upstream_path(out, api, target, r.path);
    match allowed.strip.param {
        Some(p) => out.extend_from_slice(auth::token::query_without(r.query, p).as_bytes()),
        None => out.extend_from_slice(r.query.as_bytes()),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let mut xff: Option<&[u8]> = None;
    for h in r.headers {
        let n = h.name;
        if never_forwarded(n, r.xff_skip) {
            continue;
        }
        if n.eq_ignore_ascii_case("x-forwarded-for") {
            xff = Some(trim(h.value));
            continue;
        }
        if n.eq_ignore_ascii_case("x-forwarded-proto") || n.eq_ignore_ascii_case("x-request-id") || removed(n) {
            continue;
        }
        if let (Some(c), true) = (allowed.strip.cookie, n.eq_ignore_ascii_case("cookie")) {
            if let Some(rest) = std::str::from_utf8(h.value).ok().and_then(|v| auth::token::cookie_without(v, c)) {
                push_header(out, n.as_bytes(), rest.as_bytes());
            }
            continue;
        }
        push_header(out, n.as_bytes(), h.value);
    }
    // Where each added value landed in `out`, kept only when `tag_headers` may ask for one.
    let mut added_at: Vec<(&str, std::ops::Range<usize>)> = Vec::new();
    for (i, (name, tpl)) in adds().enumerate() {
        if adds().skip(i + 1).any(|(later, _)| later.eq_ignore_ascii_case(name)) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        let start = out.len();
        tpl.expand(&tcx, out);
        strip_non_field_bytes(out, start);
        if !t.tag_headers.is_empty() {
            added_at.push((name.as_str(), start..out.len()));
        }
        out.extend_from_slice(b"\r\n");
    }
    write_framing(out, r.meta.body, r.declared_length);
    write_proxy_headers(out, api, target, r.host, xff, ctx);
    out.extend_from_slice(b"X-Request-Id: ");
    out.extend_from_slice(rid);
    out.extend_from_slice(b"\r\n");
    finish_head(out, r.meta.upgrade, r.upgrade_value);

    let mut tags = Vec::new();
    for name in &t.tag_headers {
        let value =
            added_at.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, at)| &out[at.clone()]).or_else(|| {
                r.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name) && !removed(h.name)).map(|h| h.value)
            });
        if let Some(v) = value {
            tags.push(format!("{}-{}", name.to_ascii_lowercase(), String::from_utf8_lossy(v)));
        }
    }
    Ok(Prepared::Routed(Routed {
        meta: r.meta,
        api: api_idx,
        target: target_idx,
        identity: allowed.identity,
        tags,
        limits: limit_headers,
    }))
}

/// The rate limits that apply to an allowed request, checked together on the worker's limiter:
/// the identity's (its per-API limit when the grant has one), the endpoint's, the client IP's,
/// the API's. `Ok(None)` when none applies.
fn check_limits(
    snap: &Snapshot,
    api: &ApiSpec,
    allowed: &auth::Allowed<'_>,
    method: &str,
    rel_path: &str,
    client: std::net::IpAddr,
    limiter: &mut crate::limit::Limiter,
) -> std::result::Result<Option<crate::limit::RateInfo>, crate::limit::Rejected> {
    use crate::limit::{limit_key, Limit, Rate};
    let l = &api.limits;
    let burst = snap.config.limits.burst;
    let mut limits: [Option<Limit>; 4] = [None; 4];
    let id = api.api_id.as_bytes();
    if !l.disable_rate_limit {
        if let Some(ident) = &allowed.identity {
            if let Some(((rate, per), per_api)) = ident.grant.rate_for(&api.api_id) {
                if let Some(r) = Rate::new(rate, per, burst) {
                    let m = ident.method.as_str().as_bytes();
                    let key = if per_api {
                        limit_key(&[m, ident.id.as_bytes(), id])
                    } else {
                        limit_key(&[m, ident.id.as_bytes()])
                    };
                    limits[0] = Some(Limit { key, rate: r });
                }
            }
        }
        if let Some((i, (_, r))) = l.endpoints.iter().enumerate().find(|(_, (rule, _))| rule.matches(method, rel_path))
        {
            let who = allowed.identity.as_ref().map_or(&b""[..], |x| x.id.as_bytes());
            if let Some(r) = Rate::new(r.rate, r.per, burst) {
                limits[1] = Some(Limit { key: limit_key(&[b"ep", id, &(i as u32).to_le_bytes(), who]), rate: r });
            }
        }
        if let Some(r) = l.ip.and_then(|r| Rate::new(r.rate, r.per, burst)) {
            let ip = match crate::bans::canonical(client) {
                std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                std::net::IpAddr::V6(v6) => v6.octets(),
            };
            limits[2] = Some(Limit { key: limit_key(&[b"ip", id, &ip]), rate: r });
        }
    }
    if let Some(r) = l.global.and_then(|r| Rate::new(r.rate, r.per, burst)) {
        limits[3] = Some(Limit { key: limit_key(&[b"api", id]), rate: r });
    }
    let mut list = [Limit { key: 0, rate: Rate { rate: 1.0, per: 1.0, burst: 1.0 } }; 4];
    let mut n = 0;
    for x in limits.into_iter().flatten() {
        list[n] = x;
        n += 1;
    }
    if n == 0 {
        return Ok(None);
    }
    // The headers describe the most specific limit: the first in the list.
    limiter.check(&list[..n], 0, client).map(Some)
}

fn split_absolute(target: &str) -> Option<(&str, &str)> {
    let rest = target.strip_prefix("http://").or_else(|| target.strip_prefix("https://"))?;
    Some(match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
        Some(i) => (&rest[..i], "/"),
        None => (rest, "/"),
    })
}

fn write_upstream_path(out: &mut Vec<u8>, api: &ApiSpec, target: &Target, path: &str) {
    let rest = if api.strip_listen_path { &path[api.listen_path.len().min(path.len())..] } else { path };
    out.extend_from_slice(target.path_prefix.as_bytes());
    if rest.is_empty() || !rest.starts_with('/') {
        out.push(b'/');
    }
    out.extend_from_slice(rest.as_bytes());
}

/// Whether `b` may appear in a header field value (RFC 9110 5.5: HTAB, SP, VCHAR, obs-text).
pub(crate) fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || b >= 0x20 && b != 0x7f
}

/// Drops from `out[start..]` every byte not allowed in a field value (CR and LF, which would end
/// the header line early, and NUL, the other controls and DEL, which some parsers take as a line
/// end and others refuse): an expanded value (JWT claims, session metadata) comes from outside.
fn strip_non_field_bytes(out: &mut Vec<u8>, start: usize) {
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

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

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

/// Parses the upstream response head; when complete, writes the client's response head to `out`.
/// `client_keep_alive` is false when the client connection must close after this response
/// (client asked, or the worker is draining).
pub fn prepare_response(
    data: &[u8],
    max_headers: usize,
    req: &RequestMeta,
    client_keep_alive: bool,
    limits: &crate::limit::LimitHeaders,
    out: &mut Vec<u8>,
) -> Result<PreparedResponse> {
    let proto = |ctx| ProxyError::new(ErrorKind::UpstreamProtocol, ctx);
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
    let f = framing(headers).map_err(|_| proto("malformed or conflicting Content-Length from upstream"))?;
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
        !switching && body != BodyKind::UntilClose && !f.conn.close && (upstream_minor == 1 || f.conn.keep_alive);
    let dechunk = body == BodyKind::Chunked && req.minor_version == 0;
    let close_client = !switching && (!client_keep_alive || body == BodyKind::UntilClose || dechunk);

    out.extend_from_slice(b"HTTP/1.1 ");
    crate::digits::push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers {
        let n = h.name;
        let tunnel_header = switching && n.eq_ignore_ascii_case("upgrade");
        if (is_hop_by_hop(n) && !tunnel_header) || f.conn.names(n) {
            continue;
        }
        if dechunk && (n.eq_ignore_ascii_case("transfer-encoding") || n.eq_ignore_ascii_case("trailer")) {
            continue;
        }
        push_header(out, n.as_bytes(), h.value);
    }
    write_limit_headers(out, limits);
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

/// `X-RateLimit-Limit` (requests per the limit's period), `-Remaining`, `-Reset` (Unix seconds
/// when the bucket is full again): rate values, never quota values (those are `X-Quota-*`).
pub fn write_limit_headers(out: &mut Vec<u8>, l: &crate::limit::LimitHeaders) {
    if let Some(r) = &l.rate {
        write_rate_headers(out, r);
    }
    if let Some(q) = &l.quota {
        header_num(out, b"X-Quota-Limit: ", q.limit);
        header_num(out, b"X-Quota-Remaining: ", q.remaining);
        header_num(out, b"X-Quota-Reset: ", q.reset);
    }
}

/// See [`write_limit_headers`].
pub fn write_rate_headers(out: &mut Vec<u8>, r: &crate::limit::RateInfo) {
    header_num(out, b"X-RateLimit-Limit: ", r.limit);
    header_num(out, b"X-RateLimit-Remaining: ", r.remaining);
    header_num(out, b"X-RateLimit-Reset: ", r.reset);
}

/// `<name: >v\r\n` (`name` includes the colon and space).
fn header_num(out: &mut Vec<u8>, name: &[u8], v: u64) {
    out.extend_from_slice(name);
    crate::digits::push_u64(out, v);
    out.extend_from_slice(b"\r\n");
}

/// A complete JSON error response (`{"error": "..."}`, Tyk's shape) for `kind`, whose status
/// comes from [`ErrorKind::status`], the one mapping: there is no other way to write one.
/// Returns false (and writes nothing) for a kind that is not answered.
pub fn error_response(out: &mut Vec<u8>, kind: ErrorKind, message: &str, close: bool) -> bool {
    error_response_with(out, kind, message, close, &[])
}

/// As [`error_response`], with extra header lines (each ending in CRLF: `WWW-Authenticate`,
/// `Retry-After`, `X-RateLimit-*`).
pub fn error_response_with(out: &mut Vec<u8>, kind: ErrorKind, message: &str, close: bool, extra: &[u8]) -> bool {
    let Some((status, reason)) = kind.status() else {
        return false;
    };
    let msg = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".into());
    let body_len = msg.len() + 11; // {"error": <msg>}
    let _ =
        write!(out, "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {body_len}\r\n");
    out.extend_from_slice(extra);
    let _ = write!(out, "{}\r\n{{\"error\": {msg}}}", if close { "Connection: close\r\n" } else { "" });
    true
}

#[cfg(test)]
mod tests;
