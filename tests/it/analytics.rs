//! Integration tests of request records: the real binary on loopback with the in-process httpbin
//! upstream, records read back from the `[analytics]` file. Every wait is bounded in time.

use std::path::Path;
use std::time::Duration;

use portcullis_tests::client::Conn;
use portcullis_tests::harness::{keyless_api, seed_jwt_files, Proxy, ProxyBuilder, SEED_TOKEN};
use portcullis_tests::httpbin::upstream;
use portcullis_tests::{metrics, wait_for, WAIT};
use serde_json::{json, Value};

fn builder() -> ProxyBuilder {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn records_file(p: &Proxy) -> std::path::PathBuf {
    p.dir.path().join("analytics/records.jsonl")
}

/// Every record in the file, each line parsed (a line that is not JSON fails the test).
fn read_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("record is not JSON ({e}): {l}"))).collect()
}

/// Waits until the file holds at least `n` records; all of them.
fn wait_records(path: &Path, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} records in {}", path.display()), WAIT, || {
        let r = read_records(path);
        (r.len() >= n).then_some(r)
    })
}

fn metric(p: &Proxy, series: &str) -> f64 {
    p.metric(series).unwrap_or(-1.0)
}

#[test]
fn records_carry_tyk_fields_for_served_and_refused_requests() {
    let up = upstream("up");
    let keyed = format!(
        r#"{{"name": "Keyed API", "api_id": "keyed", "org_id": "acme", "active": true, "use_standard_auth": true,
            "tag_headers": ["X-Team"],
            "version_data": {{"not_versioned": true, "versions": {{"Default": {{"name": "Default"}}}}}},
            "proxy": {{"listen_path": "/keyed/", "target_url": "{}", "strip_listen_path": true}}}}"#,
        up.url()
    );
    let p = builder()
        .app("open", keyless_api("open", "/open/", &up.url(), "", ""))
        .app("quiet", keyless_api("quiet", "/quiet/", &up.url(), "", r#""do_not_track": true,"#))
        .app("keyed", keyed)
        .start();
    let r = p.admin_send(
        "POST",
        "/tyk/keys/create",
        &p.with_every_api(&json!({"rate": 100, "per": 1, "quota_max": -1, "tags": ["gold"]})).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (key, hash) =
        (r.json()["key"].as_str().unwrap().to_string(), r.json()["key_hash"].as_str().unwrap().to_string());

    assert_eq!(p.get("/open/get?x=1", "User-Agent: it-agent/1.0 \"quoted\"\r\n").status, 200);
    assert_eq!(p.get("/keyed/get", &format!("Authorization: {key}\r\nX-Team: blue\r\n")).status, 200);
    assert_eq!(p.get("/keyed/get", "").status, 401);
    assert_eq!(p.get("/quiet/get", "").status, 200, "do_not_track API is still served");
    assert_eq!(p.get("/nowhere", "").status, 404);

    let recs = wait_records(&records_file(&p), 3);
    assert_eq!(recs.len(), 3, "one record per request to a tracked API, none for do_not_track or no route: {recs:#?}");
    let by = |api: &str, code: u64| {
        recs.iter()
            .find(|r| r["api_id"] == api && r["response_code"] == code)
            .unwrap_or_else(|| panic!("no {api} {code} record in {recs:#?}"))
            .clone()
    };
    let open = by("open", 200);
    let up_host = up.url().trim_start_matches("http://").trim_end_matches('/').to_string();
    assert_eq!(open["method"], "GET");
    assert_eq!(open["path"], "/open/get");
    assert_eq!(open["raw_path"], "/open/get?x=1");
    assert_eq!(open["host"], up_host.as_str());
    assert_eq!(open["user_agent"], "it-agent/1.0 \"quoted\"");
    assert_eq!(open["ip_address"], "127.0.0.1");
    assert_eq!(open["api_name"], "open");
    assert_eq!(open["api_key"], "");
    assert!(open["network"]["bytes_out"].as_u64().unwrap() > 100, "{open}");
    assert!(open["request_time_us"].as_u64().unwrap() >= open["latency"]["upstream"].as_u64().unwrap());
    assert!(open["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(open["year"].as_u64().unwrap() >= 2024);

    let served = by("keyed", 200);
    assert_eq!(served["api_key"], hash.as_str(), "api_key is the stored hash, never the key");
    assert!(!recs.iter().any(|r| r.to_string().contains(&key)), "the raw key appears in no record");
    assert_eq!(served["org_id"], "acme");
    assert_eq!(served["api_name"], "Keyed API");
    assert_eq!(served["tags"], json!(["x-team-blue", "gold"]));

    let refused = by("keyed", 401);
    assert_eq!(refused["api_key"], "");
    assert_eq!(refused["path"], "/keyed/get");

    assert_eq!(metric(&p, "portcullis_analytics_records_written_total{sink=\"file\"}"), 3.0);
    assert_eq!(metric(&p, "portcullis_analytics_dropped_total{reason=\"queue_full\"}"), 0.0);

    // Turned off by a reload: requests are still served, no more records.
    let cfg = std::fs::read_to_string(p.config_path()).unwrap();
    std::fs::write(p.config_path(), format!("{cfg}\n[analytics]\nenabled = false\n")).unwrap();
    let r = p.admin_send("GET", "/tyk/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(p.get("/open/get", "").status, 200);
    // The worker publishes its request count and the records it handed to the writer in one
    // snapshot, after flushing: once the sixth request is counted, its record would be too.
    let m = p.wait_metrics("the request after the reload counted", |m| {
        metrics::value(m, "portcullis_worker_requests_total{worker=\"0\"}").unwrap_or(0.0) >= 6.0
    });
    assert_eq!(metrics::sum(&m, "portcullis_analytics_records_queued_total"), 3.0, "{m}");
    assert_eq!(read_records(&records_file(&p)).len(), 3, "records after analytics were disabled");
}

#[test]
fn every_record_is_written_before_the_process_exits() {
    let up = upstream("up");
    let mut p = builder().app("open", keyless_api("open", "/open/", &up.url(), "", "")).workers(2).start();
    // Two keep-alive connections (SO_REUSEPORT spreads them over the workers), then SIGTERM at
    // once: records still in the workers' batches must reach the file during the drain.
    let mut conns: Vec<Conn> = (0..2).map(|_| Conn::connect(p.listen).expect("connect")).collect();
    for i in 0..300 {
        let r = conns[i % 2].request("GET", &format!("/open/get?i={i}"), "", b"").expect("request");
        assert_eq!(r.status, 200);
    }
    drop(conns);
    p.signal(libc::SIGTERM);
    assert!(p.wait_exit(Duration::from_secs(15)).is_some(), "proxy did not stop:\n{}", p.log_text());
    // The pump ends when the workers let go of its queue, not at the shutdown deadline.
    assert!(!p.log_text().contains("did not finish writing in time"), "pump outlived the workers:\n{}", p.log_text());
    let recs = read_records(&records_file(&p));
    assert_eq!(recs.len(), 300, "records lost at shutdown");
    let mut seen: Vec<u64> = recs
        .iter()
        .map(|r| r["raw_path"].as_str().unwrap().trim_start_matches("/open/get?i=").parse().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..300).collect::<Vec<u64>>());
}

#[test]
fn rotation_keeps_whole_records_within_the_configured_size() {
    let up = upstream("up");
    let mut p = builder()
        .app("open", keyless_api("open", "/open/", &up.url(), "", ""))
        .section("[analytics]\nrotate_mb = 1\nkeep = 2\n")
        .start();
    // ~850-byte records: 8,000 of them are about 6.5 MiB, so the file rotates five times or more
    // and only the newest three files (about 3 MiB) are left.
    let ua = "u".repeat(400);
    let mut c = Conn::connect(p.listen).expect("connect");
    for i in 0..8000 {
        let r = c.request("GET", &format!("/open/get?i={i}"), &format!("User-Agent: {ua}\r\n"), b"").expect("request");
        assert_eq!(r.status, 200);
    }
    drop(c);
    p.signal(libc::SIGTERM);
    assert!(p.wait_exit(Duration::from_secs(15)).is_some());
    let base = records_file(&p);
    let mut total = 0;
    for f in [base.clone(), base.with_extension("jsonl.1"), base.with_extension("jsonl.2")] {
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(len <= 1 << 20, "{} is {len} bytes, over rotate_mb", f.display());
        total += read_records(&f).len();
    }
    assert!(!base.with_extension("jsonl.3").exists(), "keep = 2");
    assert!(total > 1000 && total < 8000, "older files beyond keep are removed: {total}");
    assert!(!p.log_text().contains("analytics sink failed"), "{}", p.log_text());
}

/// The seed article's Kibana query `response_code:500 AND tags:user-foo@bar.com` needs the JWT
/// claim injected as `User` and tagged through `tag_headers`: the repository's
/// `apps/httpbin-jwt.json` and the article's token give exactly those fields.
#[test]
fn seed_jwt_definition_records_the_user_tag_and_a_pseudonymous_key() {
    let up = upstream("up");
    let (def, policies) = seed_jwt_files(&up.url());
    let p = builder().app("httpbin-jwt", def).policies(policies).start();
    let auth = format!("Authorization: Bearer {SEED_TOKEN}\r\n");
    assert_eq!(p.get("/httpbin-jwt/status/500", &auth).status, 500);
    assert_eq!(p.get("/httpbin-jwt/get", &auth).status, 200);
    let recs = wait_records(&records_file(&p), 2);
    let hit: Vec<&Value> = recs
        .iter()
        .filter(|r| r["response_code"] == 500 && r["tags"].as_array().unwrap().iter().any(|t| t == "user-foo@bar.com"))
        .collect();
    assert_eq!(hit.len(), 1, "response_code:500 AND tags:user-foo@bar.com: {recs:#?}");
    // sha256("foo@bar.com"): the identity, not the token, and not in clear.
    assert_eq!(hit[0]["api_key"], "0c7e6a405862e402eb76a70f8a26fc732d07c32931e9fae9ab1582911d2e8a3b");
    assert!(!recs.iter().any(|r| r.to_string().contains(SEED_TOKEN)));
}

#[test]
fn stdout_sink_prints_one_json_line_per_record() {
    let up = upstream("up");
    let p = builder()
        .app("open", keyless_api("open", "/open/", &up.url(), "", ""))
        .section("[analytics]\nsink = \"stdout\"\n")
        .start();
    for i in 0..3 {
        assert_eq!(p.get(&format!("/open/get?n={i}"), "").status, 200);
    }
    let lines = wait_for("3 records on stdout", WAIT, || {
        let text = p.stdout_text();
        let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        (lines.len() >= 3).then_some(lines)
    });
    // Workers flush on their own ticks, so records of different workers may interleave.
    let mut paths: Vec<&str> = lines.iter().filter_map(|r| r["raw_path"].as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/open/get?n=0", "/open/get?n=1", "/open/get?n=2"], "{}", p.stdout_text());
    assert!(!records_file(&p).exists(), "the stdout sink writes no file");
}

/// Tyk's `track_endpoints` and `do_not_track_endpoints` (gateway/mw_track_endpoints.go:43-51,
/// handler_success.go:270-312): a tracked request is recorded with the entry's pattern as its
/// `path` and `track_path: true`, an untracked one not at all, the others as usual. Before,
/// such definitions were refused and `track_path` was always false.
#[test]
fn tracked_endpoints_are_recorded_under_their_pattern() {
    let up = upstream("up");
    let ext = r#", "extended_paths": {"track_endpoints": [{"path": "/anything/{id}", "method": "GET"}],
                                      "do_not_track_endpoints": [{"path": "/headers", "method": "GET"}]}"#;
    let p = builder()
        .app("t", portcullis_tests::harness::api("t", "/t/", &up.url(), r#""use_keyless": true,"#, ext))
        .start();
    assert_eq!(p.get("/t/anything/42", "").status, 200);
    assert_eq!(p.get("/t/headers", "").status, 200);
    assert_eq!(p.get("/t/get", "").status, 200);
    let recs = wait_records(&records_file(&p), 2);
    assert_eq!(recs.len(), 2, "/headers is not recorded: {recs:#?}");
    assert_eq!((recs[0]["path"].as_str(), recs[0]["track_path"].as_bool()), (Some("/anything/{id}"), Some(true)));
    assert_eq!(recs[0]["raw_path"], "/t/anything/42");
    assert_eq!((recs[1]["path"].as_str(), recs[1]["track_path"].as_bool()), (Some("/t/get"), Some(false)));
}

/// A record names the request's version, or Tyk's `Non Versioned` (gateway/handler_success.go:
/// 206-209); it was always empty.
#[test]
fn records_name_the_version_as_tyk_does() {
    let up = upstream("up");
    let versioned = format!(
        r#"{{"name": "v", "api_id": "v", "use_keyless": true, "definition": {{"location": "header", "key": "x-api-version"}},
            "version_data": {{"not_versioned": false, "default_version": "v1", "versions": {{"v1": {{"name": "v1"}}, "v2": {{"name": "v2"}}}}}},
            "proxy": {{"listen_path": "/v/", "target_url": "{}", "strip_listen_path": true}}}}"#,
        up.url()
    );
    let p = builder().app("open", keyless_api("open", "/open/", &up.url(), "", "")).app("v", versioned).start();
    assert_eq!(p.get("/v/get", "x-api-version: v2\r\n").status, 200);
    assert_eq!(p.get("/v/get", "").status, 200);
    assert_eq!(p.get("/open/get", "").status, 200);
    let records = wait_records(&records_file(&p), 3);
    // Workers hand their batches over independently: compare as a set.
    let mut versions: Vec<&str> = records.iter().map(|r| r["api_version"].as_str().unwrap()).collect();
    versions.sort_unstable();
    assert_eq!(versions, ["Non Versioned", "v1", "v2"]);
}

/// Tyk's `enable_detailed_recording` (handler_success.go:373-394): the API's own, or
/// `[analytics] detailed_recording` for every API; the request and the response as sent, base64,
/// with credentials redacted and within `detailed_max_bytes`.
#[test]
fn detailed_recording_keeps_the_exchange_redacted_and_bounded() {
    use base64::Engine;
    let up = upstream("up");
    let p = builder()
        .app("plain", keyless_api("plain", "/plain/", &up.url(), "", ""))
        .app("detailed", keyless_api("detailed", "/detailed/", &up.url(), "", r#""enable_detailed_recording": true,"#))
        .section("[analytics]\ndetailed_max_bytes = 2000\n")
        .start();
    let creds = "Authorization: Bearer s3cret-token\r\nCookie: session=s3cret-cookie\r\n\
                 X-Tyk-Authorization: s3cret-admin\r\nContent-Type: application/json\r\n";
    let mut c = Conn::connect(p.listen).expect("connect");
    let r = c
        .request("POST", "/detailed/response-headers?Set-Cookie=s3cret-set&X-Seen=yes", creds, b"{\"hello\":\"world\"}")
        .expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(c.request("GET", "/plain/get", creds, b"").expect("request").status, 200);
    let big = "x".repeat(10_000);
    assert_eq!(c.request("POST", "/detailed/anything", "", big.as_bytes()).expect("request").status, 200);
    let recs = wait_records(&records_file(&p), 3);
    let raw = |r: &Value, f: &str| {
        let b = base64::engine::general_purpose::STANDARD.decode(r[f].as_str().unwrap_or_default()).unwrap();
        String::from_utf8_lossy(&b).into_owned()
    };
    let d =
        recs.iter().find(|r| r["api_id"] == "detailed" && r["method"] == "POST" && r["content_length"] == 17).unwrap();
    let (req, resp) = (raw(d, "raw_request"), raw(d, "raw_response"));
    assert!(req.starts_with("POST /detailed/response-headers?Set-Cookie=s3cret-set&X-Seen=yes HTTP/1.1\r\n"), "{req}");
    assert!(req.contains("Authorization: [redacted]\r\n") && req.contains("Cookie: [redacted]\r\n"), "{req}");
    assert!(req.contains("X-Tyk-Authorization: [redacted]\r\n"), "{req}");
    assert!(req.ends_with("\r\n\r\n{\"hello\":\"world\"}"), "{req}");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("Set-Cookie: [redacted]\r\n") && resp.to_lowercase().contains("x-seen: yes"), "{resp}");
    for secret in ["s3cret-token", "s3cret-cookie", "s3cret-admin"] {
        assert!(!req.contains(secret) && !resp.contains(secret), "{secret}");
    }
    // The header is redacted; the body (this upstream echoes the value) is the upstream's.
    assert!(!resp.split("\r\n\r\n").next().unwrap().contains("s3cret-set"), "{resp}");
    assert!(resp.ends_with("\r\n\r\n{\"Set-Cookie\":\"s3cret-set\",\"X-Seen\":\"yes\"}"), "{resp}");
    // Bounded: the 10,000-byte body is cut at detailed_max_bytes.
    let big_rec = recs.iter().find(|r| r["content_length"] == 10_000).unwrap();
    assert_eq!(raw(big_rec, "raw_request").len(), 2000);
    // Not asked for: no capture.
    let plain = recs.iter().find(|r| r["api_id"] == "plain").unwrap();
    assert!(plain.get("raw_request").is_none() && plain.get("raw_response").is_none(), "{plain}");
}

/// The session's own `enable_detailed_recording` (Tyk reads it after the API's) and its `alias`
/// reach the record; the key itself is redacted from the capture.
#[test]
fn a_sessions_detailed_recording_and_alias_reach_its_records() {
    use base64::Engine;
    let up = upstream("up");
    let keyed = format!(
        r#"{{"name": "Keyed", "api_id": "keyed", "active": true, "use_standard_auth": true,
            "version_data": {{"not_versioned": true, "versions": {{"Default": {{"name": "Default"}}}}}},
            "proxy": {{"listen_path": "/keyed/", "target_url": "{}", "strip_listen_path": true}}}}"#,
        up.url()
    );
    let p = builder().app("keyed", keyed).start();
    let mut keys = Vec::new();
    for (alias, detailed) in [("ann", true), ("bob", false)] {
        let body =
            json!({"rate": 100, "per": 1, "quota_max": -1, "alias": alias, "enable_detailed_recording": detailed});
        let r = p.admin_send("POST", "/tyk/keys/create", &p.with_every_api(&body).to_string());
        assert_eq!(r.status, 200, "{}", r.text());
        keys.push(r.json()["key"].as_str().unwrap().to_string());
    }
    for k in &keys {
        assert_eq!(p.get("/keyed/get", &format!("Authorization: {k}\r\n")).status, 200);
    }
    let recs = wait_records(&records_file(&p), 2);
    let ann = recs.iter().find(|r| r["alias"] == "ann").expect("ann's record");
    let bob = recs.iter().find(|r| r["alias"] == "bob").expect("bob's record");
    let raw = base64::engine::general_purpose::STANDARD.decode(ann["raw_request"].as_str().unwrap()).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.contains("Authorization: [redacted]\r\n") && !raw.contains(&keys[0]), "{raw}");
    assert!(ann["raw_response"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(bob.get("raw_request").is_none(), "{bob}");
}
