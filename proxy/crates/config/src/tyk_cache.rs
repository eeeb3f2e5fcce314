//! Tyk's response cache as a definition asks for it: `cache_options` and the version's
//! `extended_paths.cache` / `advance_cache_config` -> [`CacheRules`], which the data plane's
//! per-worker response cache (`dataplane/cache.rs`) applies. Tyk: gateway/mw_redis_cache.go
//! (which requests, and the key), gateway/res_cache.go (which responses, for how long),
//! gateway/api_definition.go:1027-1056 (the path entries).
//! Must not: know where or how entries are kept (that is the data plane's).

use std::sync::atomic::AtomicU64;

use portcullis_policy::path_rule::PathRule;

/// An API's response cache (`cache_options.enable_cache` with something to cache).
#[derive(Debug)]
pub struct CacheRules {
    /// `cache_timeout`, seconds an entry is served (0: none is, as in Tyk).
    pub timeout_secs: u64,
    /// `cache_all_safe_requests`: every GET, HEAD and OPTIONS request.
    pub all_safe: bool,
    /// `cache_response_codes`: only responses with these statuses are kept; empty: any (Tyk).
    pub codes: Vec<u16>,
    /// `enable_upstream_cache_control`: a response with `x-tyk-cache-action-set` is kept
    /// whatever its status, for the seconds its [`CacheRules::ttl_header`] says.
    pub upstream_control: bool,
    /// `cache_control_ttl_header`, lower case (default `x-tyk-cache-action-set-ttl`).
    pub ttl_header: String,
    /// `cache_by_headers`: request headers whose values are part of the key, lower case.
    pub by_headers: Vec<String>,
    /// The version's `cache` (GET, HEAD and OPTIONS on a path) and `advance_cache_config`
    /// entries, in that order; the first that matches a request applies.
    pub paths: Vec<CachePath>,
    /// Bumped by `DELETE /tyk/cache/{api_id}`: entries stored under an older value are not
    /// served. Shared by the workers (read once per cacheable request).
    pub epoch: AtomicU64,
}

/// One cached path entry.
#[derive(Debug)]
pub struct CachePath {
    pub rule: PathRule,
    /// `cache_key_regex`: for a POST, PUT or PATCH, only the part of the body it matches is in
    /// the key (without: the whole body).
    pub key_regex: Option<regex::bytes::Regex>,
    /// `cache_response_codes` of the entry (empty: the API's).
    pub codes: Vec<u16>,
    /// `timeout` of the entry (`None`: the API's).
    pub timeout_secs: Option<u64>,
}

/// Tyk's default name of the header that sets an entry's lifetime (gateway/res_cache.go:16).
pub(crate) const DEFAULT_TTL_HEADER: &str = "x-tyk-cache-action-set-ttl";

/// Tyk's header that makes a response cacheable under `enable_upstream_cache_control`.
pub const UPSTREAM_CACHE_HEADER: &str = "x-tyk-cache-action-set";

impl CacheRules {
    /// Whether a request is cached, and under which path entry (`Some(None)`: the API-level
    /// rule, `cache_all_safe_requests`). Tyk: mw_redis_cache.go:163-176.
    pub fn matches(&self, method: &str, rel_path: &str, path: &str) -> Option<Option<usize>> {
        if self.all_safe && is_safe(method) {
            return Some(None);
        }
        self.paths.iter().position(|p| p.rule.matches(method, rel_path, path)).map(Some)
    }

    /// The status codes and seconds that apply to a request matched by `entry`.
    pub fn limits(&self, entry: Option<usize>) -> (&[u16], u64) {
        let p = entry.and_then(|i| self.paths.get(i));
        let codes = p.map(|p| p.codes.as_slice()).filter(|c| !c.is_empty()).unwrap_or(&self.codes);
        (codes, p.and_then(|p| p.timeout_secs).filter(|t| *t > 0).unwrap_or(self.timeout_secs))
    }
}

/// GET, HEAD and OPTIONS (Tyk's `isSafeMethod`).
pub fn is_safe(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}
