//! Integration tests of API visibility: the real binary, traffic through it to the demo
//! upstream's jsonplaceholder-like API, and the admin API's `/api/visibility/*`. Records and
//! samples reach the visibility thread after the worker's flush (200 ms): every wait is bounded,
//! and nothing is timed.

use portcullis_tests::harness::{keyless_api, Proxy, ProxyBuilder};
use portcullis_tests::httpbin::upstream;
use portcullis_tests::{wait_for, WAIT};
use serde_json::Value;

fn builder() -> ProxyBuilder {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
}

/// The walkthrough's OpenAPI document of the jsonplaceholder API (apps/openapi/).
fn jsonplaceholder_spec() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../apps/openapi/jsonplaceholder.yaml");
    std::fs::read_to_string(path).expect("apps/openapi/jsonplaceholder.yaml")
}

/// Requests the jsonplaceholder API the way a client of it would.
fn traffic(p: &Proxy) {
    let json = "Content-Type: application/json\r\n";
    // Large enough to be spliced (about 8 KiB): after the first, the worker reads such an API's
    // heads small and leaves the body in the socket, which a sampled exchange reads whole.
    for _ in 0..3 {
        let r = p.get("/jp/posts", "");
        assert_eq!(r.status, 200);
        assert_eq!(r.json().as_array().map(Vec::len), Some(100), "the whole body reached the client");
    }
    for n in 1..=25 {
        assert_eq!(p.get(&format!("/jp/posts/{n}"), "").status, 200);
        assert_eq!(p.get(&format!("/jp/posts/{n}/comments"), "").status, 200);
    }
    for n in 1..=10 {
        assert_eq!(p.get(&format!("/jp/users/{n}"), "").status, 200);
    }
    assert_eq!(p.get("/jp/users/99", "").status, 404);
    assert_eq!(p.get("/jp/comments?postId=3", "").status, 200);
    let post = p.send("POST", "/jp/posts", json, r#"{"title":"t","body":"b","userId":1}"#);
    assert_eq!(post.status, 201, "{}", post.text());
}

/// Waits until the API's inventory lists `n` endpoints; the listing.
fn wait_endpoints(p: &Proxy, api: &str, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} endpoints of {api}"), WAIT, || {
        let r = p.admin_get(&format!("/api/visibility/{api}/endpoints"));
        assert_eq!(r.status, 200, "{}", r.text());
        let list = r.json()["endpoints"].as_array().cloned().unwrap_or_default();
        (list.len() >= n).then_some(list)
    })
}

fn endpoint<'a>(list: &'a [Value], method: &str, path: &str) -> &'a Value {
    list.iter()
        .find(|e| e["method"] == method && e["path"] == path)
        .unwrap_or_else(|| panic!("no {method} {path} in {}", Value::Array(list.to_vec())))
}

/// Runs PyPI's openapi-spec-validator on `doc`: required in CI, skipped (said) elsewhere.
fn validate_openapi(doc: &Value) {
    let probe = std::process::Command::new("python3").args(["-c", "import openapi_spec_validator"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(std::env::var_os("CI").is_none(), "CI needs openapi-spec-validator (pip3 install)");
        eprintln!("skipping the OpenAPI validation: python3 has no openapi_spec_validator");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reconstructed.json");
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let out = std::process::Command::new("python3").args(["-m", "openapi_spec_validator"]).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "the reconstructed document does not validate:\n{}{}\n{doc:#}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const SAMPLE_ALL: &str = "[visibility]\nsample_rate = 1.0\n";

#[test]
fn traffic_builds_an_inventory_and_an_openapi_document_that_validates() {
    let up = upstream("up");
    let mut p = builder().app("jp", keyless_api("jp", "/jp/", &up.url(), "", "")).section(SAMPLE_ALL).start();
    traffic(&p);
    let list = wait_endpoints(&p, "jp", 6);
    let one = endpoint(&list, "GET", "/posts/{postId}");
    assert_eq!(one["hits"], 25, "{one}");
    assert_eq!(one["statuses"]["200"], 25, "{one}");
    assert!(one["first_seen"].as_u64().unwrap() > 1_700_000_000, "{one}");
    endpoint(&list, "GET", "/posts/{postId}/comments");
    let users = endpoint(&list, "GET", "/users/{userId}");
    assert_eq!((users["statuses"]["200"].as_u64(), users["statuses"]["404"].as_u64()), (Some(10), Some(1)), "{users}");
    endpoint(&list, "POST", "/posts");
    endpoint(&list, "GET", "/comments");

    // The reconstruction waits for the last sample too (the POST's body).
    let doc = wait_for("the POST's request body", WAIT, || {
        let r = p.admin_get("/api/visibility/jp/spec/reconstructed");
        assert_eq!(r.status, 200, "{}", r.text());
        let doc = r.json();
        doc["paths"]["/posts"]["post"]["requestBody"].is_object().then_some(doc)
    });
    assert_eq!(doc["openapi"], "3.1.0");
    let get_post = &doc["paths"]["/posts/{postId}"]["get"];
    let param = &get_post["parameters"][0];
    assert_eq!((param["name"].as_str(), param["in"].as_str()), (Some("postId"), Some("path")), "{get_post}");
    assert_eq!(param["schema"]["type"], "integer", "{get_post}");
    let schema = &get_post["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(schema["properties"]["id"]["type"], "integer", "{schema}");
    assert_eq!(schema["properties"]["title"]["type"], "string", "{schema}");
    // The list of 100 posts (about 8 KiB, past `splice_min_body`) was read whole, not spliced.
    let list = &doc["paths"]["/posts"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(list["type"], "array", "{list}");
    assert_eq!(list["items"]["properties"]["userId"]["type"], "integer", "{list}");
    let user = &doc["paths"]["/users/{userId}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(user["properties"]["email"]["format"], "email", "{user}");
    assert_eq!(user["properties"]["address"]["properties"]["city"]["type"], "string", "{user}");
    assert!(doc["paths"]["/comments"]["get"]["parameters"].to_string().contains("postId"), "{doc}");
    validate_openapi(&doc);
    let yaml = p.admin_get("/api/visibility/jp/spec/reconstructed?format=yaml");
    assert_eq!(yaml.status, 200);
    assert!(yaml.text().contains("openapi: 3.1.0"), "{}", yaml.text());

    // The inventory survives a restart (saved at shutdown).
    p.signal(libc::SIGTERM);
    p.wait_exit(std::time::Duration::from_secs(20)).expect("stopped");
    p.restart();
    let again = p.admin_get("/api/visibility/jp/endpoints").json();
    assert!(again["endpoints"].as_array().unwrap().len() >= 6, "{again}");
    let m = p.wait_metrics("the endpoints gauge", |m| m.contains("portcullis_visibility_endpoints{api=\"jp\"}"));
    assert!(m.contains("portcullis_visibility_samples_total"), "{m}");
}

#[test]
fn a_provided_document_finds_shadow_zombie_and_drift() {
    let up = upstream("up");
    let p = builder().app("jp", keyless_api("jp", "/jp/", &up.url(), "", "")).section(SAMPLE_ALL).start();
    // A document that does not parse is refused, naming where.
    let doc = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /x:\n    get:\n      parameters: [{name: a, in: nowhere}]\n";
    let bad = p.admin_send("PUT", "/api/visibility/jp/spec", doc);
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(
        bad.json()["pointer"].as_str().is_some_and(|s| s.starts_with("/paths/~1x/get/parameters/0")),
        "{}",
        bad.text()
    );
    assert_eq!(p.admin_get("/api/visibility/jp/spec").status, 404);
    let put = p.admin_send("PUT", "/api/visibility/jp/spec", &jsonplaceholder_spec());
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(p.admin_get("/api/visibility/jp/spec").json()["info"]["title"], "jsonplaceholder");
    assert!(p.apps_dir().join("jp.openapi.json").exists(), "written beside the definition as JSON");

    traffic(&p);
    assert_eq!(p.get("/jp/todos/1", "").status, 200, "observe mode lets shadow requests through");
    assert_eq!(p.get("/jp/users/1/todos", "").status, 200);
    let findings = wait_for("shadow, zombie and drift findings", WAIT, || {
        let v = p.admin_get("/api/visibility/jp/findings").json();
        let list = v["findings"].as_array().cloned().unwrap_or_default();
        let has = |k: &str| list.iter().any(|f| f["kind"] == k);
        (has("SHADOW") && has("ZOMBIE") && has("DRIFT")).then_some(list)
    });
    let find = |kind: &str, pred: &dyn Fn(&Value) -> bool| {
        findings
            .iter()
            .find(|f| f["kind"] == kind && pred(f))
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} finding as expected in {}", Value::Array(findings.clone())))
    };
    let shadow = find("SHADOW", &|f| f["path"].as_str().is_some_and(|s| s.starts_with("/todos")));
    assert_eq!((shadow["method"].as_str(), shadow["count"].as_u64()), (Some("GET"), Some(1)), "{shadow}");
    assert!(shadow["example"]["request"].as_str().is_some_and(|r| r.starts_with("GET /jp/todos/1")), "{shadow}");
    let zombie = find("ZOMBIE", &|f| f["path"] == "/comments");
    assert_eq!(zombie["count"], 1, "{zombie}");
    // The users' `address` and `company` are not in the document: response fields added.
    let drift = find("DRIFT", &|f| f["drift"]["kind"] == "response_field_added");
    assert!(drift["drift"]["location"].as_str().is_some_and(|l| l.contains("200")), "{drift}");
    let m = p.metrics();
    let shadow_total = portcullis_tests::metrics::sum(&m, "portcullis_api_findings_total{api=\"jp\",kind=\"shadow\"}");
    assert!(shadow_total >= 2.0, "{m}");

    // The records carry the verdicts, searchable.
    let hits = wait_for("a shadow record in the index", WAIT, || {
        let v = p.admin_get("/api/analytics/search?q=tags%3Avisibility-shadow").json();
        (v["total"].as_u64() >= Some(2)).then_some(v)
    });
    assert!(hits["hits"][0]["path"].as_str().is_some_and(|s| s.contains("todos")), "{hits}");

    // The diff: the todos only in traffic; documented operations never called only provided.
    let diff = p.admin_get("/api/visibility/jp/diff");
    assert_eq!(diff.status, 200, "{}", diff.text());
    let d = diff.json();
    let only_rec = d["diff"]["only_reconstructed"].to_string();
    assert!(only_rec.contains("todos"), "{d}");
    assert!(d["diff"]["only_provided"].to_string().contains("DELETE"), "{d}");

    // Removing the document ends the findings against it.
    assert_eq!(p.admin_send("DELETE", "/api/visibility/jp/spec", "").status, 200);
    assert_eq!(p.admin_get("/api/visibility/jp/spec").status, 404);
    assert!(!p.apps_dir().join("jp.openapi.json").exists());
    assert_eq!(p.admin_get("/api/visibility/jp/findings").json()["findings"], serde_json::json!([]));
    assert_eq!(p.admin_get("/api/visibility/nope/endpoints").status, 404);
}

#[test]
fn enforce_refuses_what_the_document_does_not_have_and_reload_changes_it() {
    let up = upstream("up");
    let own = r#""portcullis_visibility": {"mode": "enforce", "validate_requests": true},"#;
    let p = builder().app("jp", keyless_api("jp", "/jp/", &up.url(), "", own)).start();
    // No document: nothing to enforce.
    assert_eq!(p.get("/jp/todos/1", "").status, 200);
    assert_eq!(p.admin_send("PUT", "/api/visibility/jp/spec", &jsonplaceholder_spec()).status, 200);

    let r = p.get("/jp/todos/1", "");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("OpenAPI"), "{}", r.text());
    assert_eq!(p.send("DELETE", "/jp/users/1", "", "").status, 404, "a method the path does not have");
    assert_eq!(p.get("/jp/posts/2", "").status, 200);
    assert_eq!(p.get("/jp/comments?postId=1", "").status, 200, "a zombie is served");

    // Request checks: parameters and the JSON body, the failing field's pointer in the answer.
    let r = p.get("/jp/posts?userId=abc", "");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("/query/userId"), "{}", r.text());
    let json = "Content-Type: application/json\r\n";
    let r = p.send("POST", "/jp/posts", json, r#"{"title":5,"body":"b","userId":1}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("/body/title"), "{}", r.text());
    let r = p.send("POST", "/jp/posts", json, r#"{"title":"t","body":"b","userId":1}"#);
    assert_eq!(r.status, 201, "{}", r.text());

    // A reload that takes the document away stops enforcing at once.
    assert_eq!(p.admin_send("DELETE", "/api/visibility/jp/spec", "").status, 200);
    assert_eq!(p.get("/jp/todos/1", "").status, 200);
}
