//! Integration tests of the `search` sink: the real binary, records from real requests found
//! through the admin API's `/api/analytics/search` and `/api/analytics/aggregate`. Records reach
//! the index after the worker's flush (200 ms) and the sink's commit (about a second): every wait
//! is bounded in time, and nothing is timed.

use portcullis_tests::client::Conn;
use portcullis_tests::harness::{keyless_api, seed_jwt_files, Proxy, ProxyBuilder, SEED_TOKEN};
use portcullis_tests::httpbin::upstream;
use portcullis_tests::{wait_for, WAIT};
use serde_json::Value;

fn builder() -> ProxyBuilder {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
}

/// The seed article's Kibana query, URL-encoded.
const SEED_QUERY: &str = "/api/analytics/search?q=response_code%3A500%20AND%20tags%3Auser-foo%40bar.com";

/// Waits until `path` answers 200 with a `total` of at least `n`; that answer.
fn wait_total(p: &Proxy, path: &str, n: u64) -> Value {
    wait_for(&format!("{n} records from {path}"), WAIT, || {
        let r = p.admin_get(path);
        assert!(r.status == 200, "{path}: {} {}", r.status, r.text());
        let v = r.json();
        (v["total"].as_u64() >= Some(n)).then_some(v)
    })
}

#[test]
fn the_seed_query_finds_exactly_the_500_of_user_foo() {
    let up = upstream("up");
    let (def, policies) = seed_jwt_files(&up.url());
    let mut p = builder().app("httpbin-jwt", def).policies(policies).start();
    let auth = format!("Authorization: Bearer {SEED_TOKEN}\r\n");
    assert_eq!(p.get("/httpbin-jwt/status/500", &auth).status, 500);
    assert_eq!(p.get("/httpbin-jwt/get", &auth).status, 200);

    // Both records indexed, then the seed query.
    let all = wait_total(&p, "/api/analytics/search", 2);
    assert_eq!(all["total"], 2, "{all}");
    assert_eq!(all["hits"][0]["response_code"], 200, "newest first: {all}");
    let r = p.admin_get(SEED_QUERY);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["total"], 1, "{v}");
    let hit = &v["hits"][0];
    assert_eq!(hit["response_code"], 500);
    assert_eq!(hit["path"], "/httpbin-jwt/status/500");
    assert!(hit["tags"].as_array().unwrap().iter().any(|t| t == "user-foo@bar.com"), "{hit}");
    assert_eq!(hit["api_key"], "0c7e6a405862e402eb76a70f8a26fc732d07c32931e9fae9ab1582911d2e8a3b");

    // One hour bucket, grouped by response code, with latency percentiles.
    let r = p.admin_get("/api/analytics/aggregate?interval=1h&group_by=response_code");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let buckets = v["over_time"]["buckets"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(buckets.iter().map(|b| b["doc_count"].as_u64().unwrap()).sum::<u64>(), 2, "{v}");
    let mut codes: Vec<u64> = buckets
        .iter()
        .flat_map(|b| b["group"]["buckets"].as_array().unwrap().iter().map(|g| g["key"].as_f64().unwrap() as u64))
        .collect();
    codes.sort_unstable();
    assert_eq!(codes, [200, 500], "{v}");
    assert!(v["request_time"]["values"]["50.0"].is_number(), "{v}");

    // Bad input: 400 naming the parameter.
    let r = p.admin_get("/api/analytics/aggregate?interval=1week");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["message"].as_str().unwrap().contains("interval=1week"), "{}", r.text());
    let r = p.admin_get("/api/analytics/search?q=response_code%3A(");
    assert_eq!(r.status, 400, "{}", r.text());

    // The admin secret is required.
    for path in [SEED_QUERY, "/api/analytics/aggregate"] {
        let mut c = Conn::connect(p.admin).expect("admin connect");
        let r = c.request("GET", path, "Connection: close\r\n", b"").expect("admin request");
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        let mut c = Conn::connect(p.admin).expect("admin connect");
        let r = c.request("GET", path, "X-Tyk-Authorization: wrong\r\nConnection: close\r\n", b"").expect("request");
        assert_eq!(r.status, 403, "{path}: {}", r.text());
    }

    // Committed records survive a kill and a restart.
    p.restart();
    assert_eq!(p.admin_get(SEED_QUERY).json()["total"], 1);
}

#[test]
fn without_a_search_sink_the_routes_say_so() {
    let up = upstream("up");
    let p = builder()
        .app("open", keyless_api("open", "/open/", &up.url(), "", ""))
        .section("[[analytics.sinks]]\nsink = \"file\"\n")
        .start();
    let r = p.admin_get("/api/analytics/search?q=x");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.json()["message"].as_str().unwrap().contains("search"), "{}", r.text());
    assert!(!p.dir.path().join("analytics/index").exists());
}

#[test]
fn a_search_only_sink_indexes_records_and_writes_no_file() {
    let up = upstream("up");
    let p = builder()
        .app("open", keyless_api("open", "/open/", &up.url(), "", ""))
        .section("[analytics]\nsink = \"search\"\n")
        .start();
    for i in 0..3 {
        assert_eq!(p.get(&format!("/open/get?n={i}"), "").status, 200);
    }
    let v = wait_total(&p, "/api/analytics/search?q=api_id%3Aopen&size=10", 3);
    let mut paths: Vec<&str> = v["hits"].as_array().unwrap().iter().filter_map(|h| h["raw_path"].as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/open/get?n=0", "/open/get?n=1", "/open/get?n=2"]);
    assert!(!p.dir.path().join("analytics/records.jsonl").exists(), "sink = \"search\" writes no file");
    let m = p.metrics();
    assert!(m.contains("sink=\"search\""), "{m}");
}
