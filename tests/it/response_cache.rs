//! Integration tests of Tyk's response cache (`cache_options`, `extended_paths.cache` and
//! `advance_cache_config`; gateway/mw_redis_cache.go and gateway/res_cache.go @31e219be): the
//! real binary on loopback, an in-process upstream that counts the request heads it reads.
//! Before, such a definition loaded with a warning and every request went upstream.

use portcullis_tests::client::{Conn, Response};
use portcullis_tests::harness::{api, keyless_api, Proxy, ProxyBuilder};
use portcullis_tests::httpbin::{upstream, Httpbin};

fn start(def: String) -> Proxy {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis")).app("c", def).start()
}

/// `method path` with extra header lines and a body, on a fresh connection from `from`.
fn send(p: &Proxy, from: [u8; 4], method: &str, path: &str, headers: &str, body: &[u8]) -> Response {
    let mut c = Conn::connect_from(p.listen, from.into()).expect("connect");
    c.request(method, path, &format!("{headers}Connection: close\r\n"), body).expect("request")
}

fn cached(r: &Response) -> bool {
    r.header("x-tyk-cached-response") == Some("1")
}

/// Requests the upstream got while `f` ran.
fn upstream_gets(up: &Httpbin, f: impl FnOnce()) -> usize {
    let before = up.heads();
    f();
    up.heads() - before
}

/// `cache_all_safe_requests` with `cache_response_codes: [200]`, as Tyk's own sample
/// (ci/tests/metrics/apps/test-response-headers-cached.json): a GET is answered from the cache
/// for the next client on the same address, with `X-Tyk-Cached-Response: 1` and the same body;
/// other methods, other statuses, other URLs and other addresses go upstream
/// (mw_redis_cache.go:163-186, res_cache.go:79-91).
#[test]
fn safe_requests_are_answered_from_the_cache_per_url_and_client_address() {
    let up = upstream("origin");
    let cache = r#""cache_options": {"cache_timeout": 60, "enable_cache": true, "cache_all_safe_requests": true, "cache_response_codes": [200]},"#;
    let p = start(keyless_api("c", "/c/", &up.url(), "", cache));
    let local = [127, 0, 0, 1];

    let first = send(&p, local, "GET", "/c/get?x=1", "", b"");
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(!cached(&first));
    let mut again = None;
    assert_eq!(upstream_gets(&up, || again = Some(send(&p, local, "GET", "/c/get?x=1", "", b""))), 0);
    let again = again.unwrap();
    assert_eq!(again.status, 200);
    assert!(cached(&again), "{:?}", again.headers);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("x-upstream"), Some("origin"));
    // HEAD is safe too, and kept apart from GET.
    let head = |p: &Proxy| {
        let mut c = Conn::connect(p.listen).expect("connect");
        c.send(b"HEAD /c/get?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").expect("send");
        c.read_response(true).expect("response")
    };
    assert_eq!(upstream_gets(&up, || assert!(!cached(&head(&p)))), 1);
    assert_eq!(upstream_gets(&up, || assert!(cached(&head(&p)))), 0);

    // Another query string, another client address, a POST, a status not listed: upstream.
    assert_eq!(upstream_gets(&up, || assert!(!cached(&send(&p, local, "GET", "/c/get?x=2", "", b"")))), 1);
    assert_eq!(upstream_gets(&up, || assert!(!cached(&send(&p, [127, 0, 0, 9], "GET", "/c/get?x=1", "", b"")))), 1);
    for _ in 0..2 {
        assert_eq!(upstream_gets(&up, || assert!(!cached(&send(&p, local, "POST", "/c/anything", "", b"{}")))), 1);
        let r = send(&p, local, "GET", "/c/status/500", "", b"");
        assert_eq!(r.status, 500);
        assert!(!cached(&r));
    }
    assert_eq!(upstream_gets(&up, || drop(send(&p, local, "GET", "/c/status/404", "", b""))), 1);
    assert_eq!(upstream_gets(&up, || drop(send(&p, local, "GET", "/c/status/404", "", b""))), 1);

    // A response that sets a cookie is not kept (stricter than Tyk: keyless entries are shared
    // by everyone behind one address).
    for _ in 0..2 {
        let r = send(&p, local, "GET", "/c/response-headers?Set-Cookie=sid", "", b"");
        assert!(!cached(&r), "{:?}", r.headers);
    }

    // `If-None-Match` with the kept ETag: 304 without a body (mw_redis_cache.go:236-242).
    let etag = "/c/response-headers?ETag=v7";
    assert!(!cached(&send(&p, local, "GET", etag, "", b"")));
    let r = send(&p, local, "GET", etag, "If-None-Match: \"x\", v7\r\n", b"");
    assert_eq!(r.status, 304, "{:?}", r.headers);
    assert!(cached(&r) && r.body.is_empty());
    assert_eq!(send(&p, local, "GET", etag, "If-None-Match: v8\r\n", b"").status, 200);

    // `DELETE /tyk/cache/{api_id}`: Tyk's answer, and the next request goes upstream.
    let r = p.admin_send("DELETE", "/tyk/cache/c", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"status": "ok", "message": "cache invalidated"}));
    assert_eq!(upstream_gets(&up, || assert!(!cached(&send(&p, local, "GET", "/c/get?x=1", "", b"")))), 1);
    assert_eq!(upstream_gets(&up, || assert!(cached(&send(&p, local, "GET", "/c/get?x=1", "", b"")))), 0);

    // Counted: every hit above (5) and every response kept (6).
    let sum = portcullis_tests::metrics::sum;
    p.wait_metrics("cache counters", |m| {
        sum(m, "portcullis_response_cache_hits_total") == 5.0 && sum(m, "portcullis_response_cache_stores_total") == 6.0
    });
}

/// Entries are per key, not per address (mw_redis_cache.go:177-186: the auth token first), and
/// a hit still spends the key's quota and tells it the quota left, as Tyk's `SendQuotas` on a
/// hit does (the cache comes after the rate limit and quota checks: api_loader.go:617-664).
#[test]
fn keys_have_their_own_entries_and_a_hit_still_counts_against_the_quota() {
    let up = upstream("origin");
    let top = r#""use_standard_auth": true, "auth": {"auth_header_name": "Authorization"},
        "cache_options": {"cache_timeout": 60, "enable_cache": true, "cache_all_safe_requests": true},"#;
    let p = start(api("c", "/c/", &up.url(), top, ""));
    let session = serde_json::json!({"rate": 1000, "per": 1, "quota_max": 20, "quota_renewal_rate": 3600});
    let (a, _) = p.create_key(&session);
    let (b, _) = p.create_key(&session);
    let get = |key: &str| send(&p, [127, 0, 0, 1], "GET", "/c/get", &format!("Authorization: {key}\r\n"), b"");

    let first = get(&a);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-ratelimit-remaining"), Some("19"));
    let mut hit = None;
    assert_eq!(upstream_gets(&up, || hit = Some(get(&a))), 0);
    let hit = hit.unwrap();
    assert!(cached(&hit));
    assert_eq!(hit.header("x-ratelimit-remaining"), Some("18"), "{:?}", hit.headers);
    // Key b: its own entry, so the upstream is asked.
    assert_eq!(upstream_gets(&up, || assert!(!cached(&get(&b)))), 1);
    // Any status is kept without `cache_response_codes` (Tyk), but never a 304 or a 206: the key
    // has no `If-None-Match` or `Range`, so the next plain GET would get no body or part of one.
    assert_eq!(upstream_gets(&up, || drop((get(&a), get(&a)))), 0);
    for path in ["/c/status/404", "/c/status/304", "/c/status/206"] {
        let twice = upstream_gets(&up, || {
            send(&p, [127, 0, 0, 1], "GET", path, &format!("Authorization: {a}\r\n"), b"");
            send(&p, [127, 0, 0, 1], "GET", path, &format!("Authorization: {a}\r\n"), b"");
        });
        assert_eq!(twice, if path.ends_with("404") { 1 } else { 2 }, "{path}");
    }
    // No key: refused before the cache is looked at.
    assert_eq!(send(&p, [127, 0, 0, 1], "GET", "/c/get", "", b"").status, 401);
}

/// Without `cache_all_safe_requests`, only the version's `cache` paths (GET, HEAD, OPTIONS) and
/// `advance_cache_config` entries (their method; a POST keyed by the part of the body
/// `cache_key_regex` matches) are cached, each with its own status codes and timeout
/// (api_definition.go:1027-1056, mw_redis_cache.go:71-97, 189-206); `cache_by_headers` values
/// are part of the key; and under `enable_upstream_cache_control` the upstream's
/// `x-tyk-cache-action-set` keeps a response whatever its status (res_cache.go:93-111).
#[test]
fn cache_paths_key_regexes_headers_and_upstream_control() {
    let up = upstream("origin");
    let top = r#""use_keyless": true,
        "cache_options": {"cache_timeout": 60, "enable_cache": true, "cache_response_codes": [200],
                          "cache_by_headers": ["X-Tenant"], "enable_upstream_cache_control": true},"#;
    let paths = r#", "extended_paths": {
        "cache": ["/get"],
        "advance_cache_config": [
          {"method": "POST", "path": "/anything/search", "cache_key_regex": "\"q\":\"[a-z]+\""},
          {"method": "GET", "path": "/status/418", "cache_response_codes": [418]},
          {"method": "GET", "path": "/response-headers", "disabled": true}
        ]}"#;
    let p = start(api("c", "/c/", &up.url(), top, paths));
    let l = [127, 0, 0, 1];
    let twice = |method: &str, path: &str, headers: &str, body: &[u8]| {
        upstream_gets(&up, || {
            send(&p, l, method, path, headers, body);
            send(&p, l, method, path, headers, body);
        })
    };

    assert_eq!(twice("GET", "/c/get", "", b""), 1, "a cache path");
    assert_eq!(twice("GET", "/c/anything/other", "", b""), 2, "not a cache path");
    assert_eq!(twice("POST", "/c/get", "", b""), 2, "a cache path is for safe methods");
    // `cache_by_headers`: another tenant, another entry; the same tenant, a hit.
    assert_eq!(twice("GET", "/c/get", "X-Tenant: a\r\n", b""), 1);
    assert_eq!(upstream_gets(&up, || drop(send(&p, l, "GET", "/c/get", "X-Tenant: b\r\n", b""))), 1);

    // A POST keyed by the regex's match only: other fields do not change the key.
    let search =
        |body: &str| send(&p, l, "POST", "/c/anything/search", "Content-Type: application/json\r\n", body.as_bytes());
    assert_eq!(upstream_gets(&up, || assert!(!cached(&search(r#"{"q":"rust","page":1}"#)))), 1);
    let mut r = None;
    assert_eq!(upstream_gets(&up, || r = Some(search(r#"{"q":"rust","page":2}"#))), 0);
    let r = r.unwrap();
    assert!(cached(&r));
    assert!(r.text().contains(r#"\"page\":1"#), "the kept response, for the first body: {}", r.text());
    assert_eq!(upstream_gets(&up, || assert!(!cached(&search(r#"{"q":"go","page":1}"#)))), 1);
    // The connection goes on after a hit whose request had a body.
    let mut c = Conn::connect(p.listen).expect("connect");
    let body = br#"{"q":"rust"}"#;
    let h = "Content-Type: application/json\r\n";
    assert!(cached(&c.request("POST", "/c/anything/search", h, body).expect("first")));
    assert_eq!(c.request("GET", "/c/get", "Connection: close\r\n", b"").expect("second").status, 200);

    // The entry's own status codes.
    assert_eq!(twice("GET", "/c/status/418", "", b""), 1);
    // A disabled entry caches nothing, nor does a path no entry names.
    assert_eq!(twice("GET", "/c/response-headers?a=1", "", b""), 2);
    assert_eq!(twice("GET", "/c/status/500", "", b""), 2);
}

/// The upstream's `x-tyk-cache-action-set` keeps a response whose status is not listed, and
/// `x-tyk-cache-action-set-ttl: 0` (or Tyk's renamed TTL header) keeps none
/// (res_cache.go:93-111).
#[test]
fn upstream_cache_control_headers_decide_what_is_kept() {
    let up = upstream("origin");
    let top = r#""use_keyless": true,
        "cache_options": {"cache_timeout": 60, "enable_cache": true, "cache_all_safe_requests": true,
                          "cache_response_codes": [201], "enable_upstream_cache_control": true,
                          "cache_control_ttl_header": "X-Keep-For"},"#;
    let p = start(api("c", "/c/", &up.url(), top, ""));
    let l = [127, 0, 0, 1];
    let twice = |path: &str| {
        upstream_gets(&up, || {
            send(&p, l, "GET", path, "", b"");
            send(&p, l, "GET", path, "", b"");
        })
    };
    assert_eq!(twice("/c/get"), 2, "200 is not listed");
    assert_eq!(twice("/c/response-headers?x-tyk-cache-action-set=1"), 1, "the upstream asks for it");
    assert_eq!(twice("/c/response-headers?x-tyk-cache-action-set=1&X-Keep-For=0"), 2, "kept for 0 s");
    // Kept for 1 s: gone after it (the one direction a slow machine cannot turn around).
    let short = "/c/response-headers?x-tyk-cache-action-set=1&X-Keep-For=1";
    send(&p, l, "GET", short, "", b"");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(upstream_gets(&up, || assert!(!cached(&send(&p, l, "GET", short, "", b"")))), 1, "expired");
}
