//! Phase `rate`: the rate limits that apply to the request, checked together on the worker's
//! own limiter (`limit::Limiter`, no lock, no wait): the identity's, the endpoint's, the client
//! IP's, the API's. And the `X-RateLimit-*` headers that report them or the quota
//! (`[proxy] rate_limit_response_headers`).

use portcullis_http1::request::header_num;

use crate::auth::{self, Denial, Refusal};
use crate::config::{ApiSpec, RateLimitHeaders, Snapshot};
use crate::limit::quota::QuotaInfo;
use crate::limit::{LimitHeaders, RateInfo};

/// The rate limits that apply to an allowed request, checked together on the worker's limiter:
/// the identity's (its per-API limit when the grant has one), the endpoint's, the client IP's,
/// the API's. `Ok` with the limit the headers describe (`None`: no limit applies), or the 429
/// refusal in Tyk's words: the key's limit's ([`MSG_KEY_RATE`]) when it refused, else the
/// API's ([`MSG_API_RATE`]).
pub(crate) fn check(
    snap: &Snapshot,
    api: &ApiSpec,
    allowed: &auth::Allowed<'_>,
    method: &str,
    rel_path: &str,
    path: &str,
    client: std::net::IpAddr,
    limiter: &mut crate::limit::Limiter,
) -> Result<Option<RateInfo>, Denial> {
    use crate::limit::{limit_key, Limit, Rate};
    let l = &api.limits;
    let burst = snap.config.limits.burst;
    let mut limits: [Option<Limit>; 4] = [None; 4];
    let id = api.api_id.as_bytes();
    if !l.disable_rate_limit {
        if let Some(ident) = &allowed.identity {
            if let Some(((rate, per), scope)) = ident.grant.rate_for(&api.api_id) {
                if let Some(r) = Rate::new(rate, per, burst) {
                    let m = ident.method.as_str().as_bytes();
                    // Counted apart in a scope (an API's own limit, or per policy), else per key.
                    let key = match scope {
                        Some(s) => limit_key(&[m, ident.id.as_bytes(), b"/", s.as_bytes()]),
                        None => limit_key(&[m, ident.id.as_bytes()]),
                    };
                    limits[0] = Some(Limit { key, rate: r });
                }
            }
        }
        if let Some((_, r, bucket)) = l.endpoints.iter().find(|(rule, _, _)| rule.matches(method, rel_path, path)) {
            let who = allowed.identity.as_ref().map_or(&b""[..], |x| x.id.as_bytes());
            if let Some(r) = Rate::new(r.rate, r.per, burst) {
                limits[1] = Some(Limit { key: limit_key(&[b"ep", id, &bucket.to_le_bytes(), who]), rate: r });
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
    let key_limit = limits[0].is_some();
    // The headers describe the most specific limit: the first in the list.
    limiter.check(&list[..n], 0, client).map(Some).map_err(|rej| Denial {
        kind: Refusal::TooManyRequests,
        message: if key_limit && rej.by == 0 { MSG_KEY_RATE } else { MSG_API_RATE }.into(),
        rate: Some(rej.info),
        ..Default::default()
    })
}

/// Tyk's answer when the key's own rate refuses (its session rate, or its per-API
/// `access_rights` limit): gateway/mw_rate_limiting.go:103-140, `handleRateLimitFailure`.
/// It wins when the API's limits refuse too, as Tyk checks the key first (api_loader.go:617
/// before 633).
const MSG_KEY_RATE: &str = "Rate Limit Exceeded";

/// Tyk's answer when an API-level limit refuses: `global_rate_limit` and the API definition's
/// `extended_paths.rate_limit` (gateway/mw_api_rate_limit.go:129-132). The per-IP limit
/// (`ip_rate_limit`, Portcullis' own) is an API setting too, so it answers the same.
const MSG_API_RATE: &str = "API Rate Limit Exceeded";

/// The `X-RateLimit-*` headers of a response from the upstream, as Tyk's header senders
/// (internal/rate/headers.go:56-92): in `quotas` mode the identity's quota (`0`, `0`, `0` for an
/// identity without one), in `rate_limits` mode the rate limit, if one applied. The upstream's
/// own are dropped ([`is_limit_header`]). A keyless request gets none: Tyk sends `0`, `0`, `0`
/// there (its empty session, reverse_proxy.go:1442-1445), which says nothing and would keep
/// every keyless response head from going out unchanged, spliced with its body.
pub(crate) fn write_response_headers(out: &mut Vec<u8>, l: &LimitHeaders, mode: RateLimitHeaders) {
    match mode {
        RateLimitHeaders::Quotas => {
            if let Some(q) = l.quota.or(l.identified.then_some(QuotaInfo { limit: 0, remaining: 0, reset: 0 })) {
                write_headers(out, q.limit, q.remaining, q.reset);
            }
        }
        RateLimitHeaders::RateLimits => {
            if let Some(r) = &l.rate {
                write_headers(out, r.limit, r.remaining, r.reset);
            }
        }
    }
}

/// The `X-RateLimit-*` headers of a refusal: only in `rate_limits` mode, the rate limit's, which
/// Tyk sets before it decides (gateway/session_manager.go:309-315), so they are on its 429 and on
/// a quota's 403 after the rate let the request through. In `quotas` mode none: Tyk sends quota
/// values only on what the upstream answered (internal/rate/headers.go:25-28).
pub(crate) fn write_refusal_headers(out: &mut Vec<u8>, rate: Option<&RateInfo>, mode: RateLimitHeaders) {
    if let (RateLimitHeaders::RateLimits, Some(r)) = (mode, rate) {
        write_headers(out, r.limit, r.remaining, r.reset);
    }
}

/// An upstream response header the gateway owns: `X-RateLimit-Limit`, `-Remaining` or `-Reset`
/// (Tyk sets them in `quotas` mode and deletes them in `rate_limits` mode, headers.go:56-74).
/// Checked on every header of every response: a length test rules out almost all of them.
pub(crate) fn is_limit_header(name: &[u8]) -> bool {
    const PREFIX: &[u8] = b"x-ratelimit-";
    if !matches!(name.len(), 17 | 21) || !name[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
        return false;
    }
    let rest = &name[PREFIX.len()..];
    [&b"limit"[..], b"reset", b"remaining"].iter().any(|n| rest.eq_ignore_ascii_case(n))
}

fn write_headers(out: &mut Vec<u8>, limit: u64, remaining: u64, reset: u64) {
    header_num(out, b"X-RateLimit-Limit: ", limit);
    header_num(out, b"X-RateLimit-Remaining: ", remaining);
    header_num(out, b"X-RateLimit-Reset: ", reset);
}
