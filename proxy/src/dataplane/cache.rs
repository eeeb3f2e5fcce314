//! Tyk's response cache (`cache_options`, `config::CacheRules`), kept per worker: no locks and
//! no Redis round trip on a hit. A request the rules cache is looked up after every phase has
//! run (so it was authenticated, limited and counted, as in Tyk, where the cache middleware
//! comes after them: gateway/api_loader.go:617-664) and after its body is read; a hit is
//! answered here, a miss goes upstream and its response, when cacheable, is kept
//! (`conn.rs::fill_respond`).
//!
//! The key is Tyk's (gateway/mw_redis_cache.go:50-68, 179-186): the API, who asks (the
//! credential's identity, else the client's address), the method and the URL the upstream gets,
//! the values of `cache_by_headers`, and for a POST, PUT or PATCH a digest of the body (or of
//! the part `cache_key_regex` matches). It is compared whole, not by its hash, so two requests
//! share an entry only when all of that is equal. An entry is what the client got: the response
//! head (written again for each hit: its `Connection` and `X-RateLimit-*` lines are the asking
//! request's) and its body.
//! Must not: wait, or be asked for requests whose body is not read whole.

use std::rc::Rc;
use std::time::{Duration, Instant};

use portcullis_http1::{BodyKind, PreparedResponse, RequestMeta};
use sha2::Digest as _;

use crate::config::CacheRules;

/// Tyk's header on a response served from the cache (gateway/mw_redis_cache.go:26).
const CACHED_HEADER: &[u8] = b"X-Tyk-Cached-Response: 1\r\n";

/// A miss the response may fill: set by `conn.rs::request`, taken by `respond`.
pub(crate) struct Fill {
    key: Box<[u8]>,
    /// The path entry that matched (`None`: `cache_all_safe_requests`).
    entry: Option<usize>,
    /// The API's cache epoch when the request was looked up.
    epoch: u64,
}

/// A kept response.
pub(crate) struct Entry {
    /// The head as the first client got it, then the body.
    bytes: Box<[u8]>,
    expires: Instant,
    epoch: u64,
}

struct Weight;

impl quick_cache::Weighter<Box<[u8]>, Rc<Entry>> for Weight {
    fn weight(&self, key: &Box<[u8]>, val: &Rc<Entry>) -> u64 {
        // What an entry costs beyond its bytes: the map slot, the `Rc` and `Entry`.
        (key.len() + val.bytes.len() + 96) as u64
    }
}

/// One worker's entries (bounded by `[proxy] response_cache_bytes`, evicted scan-resistantly:
/// quick_cache's S3-FIFO, as the auth caches).
pub(crate) struct ResponseCache {
    entries: quick_cache::unsync::Cache<Box<[u8]>, Rc<Entry>, Weight, ahash::RandomState>,
    /// The `response_cache_bytes` and snapshot generation it serves: another starts it over.
    made_for: (usize, u64),
}

impl ResponseCache {
    fn new(bytes: usize, generation: u64) -> Self {
        let estimated_items = (bytes / 4096).clamp(16, 1 << 16);
        let entries = quick_cache::unsync::Cache::with(
            estimated_items,
            bytes as u64,
            Weight,
            ahash::RandomState::new(),
            quick_cache::unsync::DefaultLifecycle::default(),
        );
        ResponseCache { entries, made_for: (bytes, generation) }
    }
}

/// The key of a request the rules cache (`entry`: the path entry that matched): `None` when its
/// body is needed and is not there. `req_head` is the head the upstream gets (its request line
/// and headers after every rewrite and transform, as Tyk's key reads `r.URL` and `r.Header` after
/// them); `body` the request body read whole.
#[expect(clippy::too_many_arguments, reason = "the parts of Tyk's key, each from elsewhere")]
pub(super) fn key(
    rules: &CacheRules,
    entry: Option<usize>,
    generation: u64,
    api: u32,
    identity: Option<&crate::auth::Identity>,
    client_ip: &str,
    req_head: &[u8],
    body: &[u8],
) -> Option<Fill> {
    let mut k = Vec::with_capacity(128);
    k.extend_from_slice(&generation.to_le_bytes());
    k.extend_from_slice(&api.to_le_bytes());
    match identity {
        Some(id) => {
            k.push(b'k');
            k.extend_from_slice(id.id.as_bytes());
        }
        // Tyk: "No authentication data? use the IP" (mw_redis_cache.go:179-183).
        None => {
            k.push(b'i');
            k.extend_from_slice(client_ip.as_bytes());
        }
    }
    k.push(0);
    let line_end = req_head.windows(2).position(|w| w == b"\r\n")?;
    let line = &req_head[..line_end];
    let target_end = line.iter().rposition(|&b| b == b' ')?;
    k.extend_from_slice(&line[..target_end]);
    k.push(0);
    for name in &rules.by_headers {
        k.extend_from_slice(name.as_bytes());
        k.push(b':');
        for v in header_values(req_head, name.as_bytes()) {
            k.extend_from_slice(v);
            k.push(b',');
        }
        k.push(0);
    }
    let method = &line[..line.iter().position(|&b| b == b' ')?];
    if matches!(method, b"POST" | b"PUT" | b"PATCH") {
        // Tyk's body part (mw_redis_cache.go:71-97): the whole body, or the part the entry's
        // regex matches (no match: no body part).
        let regex = entry.and_then(|i| rules.paths.get(i)).and_then(|p| p.key_regex.as_ref());
        let part = match regex {
            None => Some(body),
            Some(re) => re.find(body).map(|m| m.as_bytes()),
        };
        if let Some(part) = part {
            k.push(b'b');
            k.extend_from_slice(&sha2::Sha256::digest(part));
        }
    }
    let epoch = rules.epoch.load(std::sync::atomic::Ordering::Relaxed);
    Some(Fill { key: k.into_boxed_slice(), entry, epoch })
}

/// The entry for `fill`'s key, if one is kept, fresh and of the API's current epoch.
pub(super) fn lookup(worker: &super::worker::Worker, generation: u64, fill: &Fill, now: Instant) -> Option<Rc<Entry>> {
    let mut cache = worker.response_cache.borrow_mut();
    let c = cache.as_mut().filter(|c| c.made_for.1 == generation)?;
    let e = c.entries.get(&fill.key[..])?;
    if e.expires > now && e.epoch == fill.epoch {
        return Some(Rc::clone(e));
    }
    c.entries.remove(&fill.key[..]);
    None
}

/// How long a response may be kept (seconds), or `None` when it may not: its status is not in
/// the entry's or the API's `cache_response_codes` (unless the upstream asks for it with
/// `x-tyk-cache-action-set` under `enable_upstream_cache_control`; its TTL header then sets the
/// time), its time is 0, it sets a cookie, or it is a 304 or 206. Tyk: gateway/res_cache.go:70-111.
/// Tyk also keeps responses that set cookies (a keyless API's entries are shared by everyone
/// behind one address), 304s and 206s (the key has neither `If-None-Match` nor `Range`, so the
/// next plain GET would get an empty or partial body); not here.
pub(super) fn storable(rules: &CacheRules, fill: &Fill, status: u16, head: &[u8]) -> Option<u64> {
    if matches!(status, 206 | 304) {
        return None;
    }
    let (codes, mut ttl) = rules.limits(fill.entry);
    let mut keep = codes.is_empty() || codes.contains(&status);
    if rules.upstream_control {
        if header_values(head, crate::config::UPSTREAM_CACHE_HEADER.as_bytes()).next().is_some_and(|v| !v.is_empty()) {
            keep = true;
        }
        let value = header_values(head, rules.ttl_header.as_bytes()).next();
        if let Some(t) = value.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse::<i64>().ok()) {
            ttl = t.max(0) as u64;
        }
    }
    if !keep || ttl == 0 || header_values(head, b"set-cookie").next().is_some() {
        return None;
    }
    Some(ttl)
}

/// Keeps a response (`bytes`: the client head, then the body) for `ttl` seconds.
pub(super) fn store(
    worker: &super::worker::Worker,
    snap: &crate::config::Snapshot,
    fill: Fill,
    bytes: Vec<u8>,
    ttl: u64,
) {
    let cfg = &snap.config.proxy;
    let mut cache = worker.response_cache.borrow_mut();
    let made_for = (cfg.response_cache_bytes, snap.generation);
    if cache.as_ref().is_none_or(|c| c.made_for != made_for) {
        *cache = Some(ResponseCache::new(cfg.response_cache_bytes, snap.generation));
    }
    let Some(c) = cache.as_mut() else { return };
    let expires = Instant::now() + Duration::from_secs(ttl.min(10 * 365 * 24 * 3600));
    c.entries.insert(fill.key, Rc::new(Entry { bytes: bytes.into_boxed_slice(), expires, epoch: fill.epoch }));
    worker.stats.borrow_mut().cache_stores += 1;
}

/// A hit's response into `out`: the kept head written again for this request (its framing and
/// `Connection`, this request's `X-RateLimit-*`, Tyk's `X-Tyk-Cached-Response: 1`), then the
/// body, or `304 Not Modified` without it when the request's `If-None-Match` holds the kept
/// `ETag` (Tyk's test: a substring, mw_redis_cache.go:236-242). Returns the status and whether the
/// client connection closes after it.
pub(super) fn write_hit(
    entry: &Entry,
    meta: &RequestMeta,
    client_keep_alive: bool,
    limits: &crate::limit::LimitHeaders,
    expires: Option<&str>,
    cfg: &crate::config::ProxyConfig,
    if_none_match: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> Result<(u16, bool), crate::dataplane::error::ProxyError> {
    out.clear();
    let prepared = portcullis_http1::prepare_response(
        &entry.bytes,
        cfg.max_headers,
        meta,
        client_keep_alive,
        // The kept head has this API's `X-Tyk-Api-Expires` already: written again like the limits.
        |n| super::phase::rate::is_limit_header(n) || n.eq_ignore_ascii_case(b"x-tyk-api-expires"),
        |out| {
            super::phase::rate::write_response_headers(out, limits, cfg.rate_limit_response_headers);
            super::conn::write_expires(out, expires);
            out.extend_from_slice(CACHED_HEADER);
        },
        out,
    )?;
    let PreparedResponse::Ready(r) = prepared else {
        // Kept only after it was prepared once; not reachable.
        return Err(crate::dataplane::error::ProxyError::new(
            crate::dataplane::error::ErrorKind::UpstreamProtocol,
            "cached response head unreadable",
        ));
    };
    let etag = header_values(&entry.bytes[..r.head_len], b"etag").next().filter(|e| !e.is_empty());
    if let (Some(inm), Some(etag)) = (if_none_match, etag) {
        if inm.windows(etag.len()).any(|w| w == etag) {
            let line_end = out.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
            out.splice(..line_end, b"HTTP/1.1 304 Not Modified".iter().copied());
            return Ok((304, r.close_client));
        }
    }
    if let BodyKind::Length(n) = r.body {
        let body = entry.bytes.get(r.head_len..r.head_len + n as usize).unwrap_or(&[]);
        out.extend_from_slice(body);
    }
    Ok((r.status, r.close_client))
}

/// The values of header `name` (lower case) in the message head `head` (its start line, then
/// header lines, each ending in CRLF), trimmed.
pub(super) fn header_values<'a>(head: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    head.split(|&b| b == b'\n').skip(1).filter_map(move |line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon].eq_ignore_ascii_case(name).then(|| line[colon + 1..].trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_found_by_name_without_regard_to_case() {
        let h = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A:  one \r\nx-a: two\r\n\r\n";
        let v: Vec<&[u8]> = header_values(h, b"x-a").collect();
        assert_eq!(v, vec![&b"one"[..], &b"two"[..]]);
        assert_eq!(header_values(h, b"etag").next(), None);
    }
}
