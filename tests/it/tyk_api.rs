//! Integration tests of Tyk's gateway API for definitions: `/tyk/apis` and `/tyk/policies`
//! create, read, update and delete, `/tyk/reload` and `/tyk/reload/group`, over loopback against
//! the real binary. Each behaviour names the Tyk source it follows (TykTechnologies/tyk,
//! gateway/api.go unless said otherwise); where Portcullis differs on purpose, the test says so.

use std::path::Path;

use portcullis_tests::client::{self, Conn, Response};
use portcullis_tests::harness::{api, keyless_api, Proxy, ProxyBuilder};
use portcullis_tests::httpbin::{upstream, Httpbin};
use serde_json::{json, Value};

fn builder() -> ProxyBuilder {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
}

/// One keyless API `up` at `/up/` in front of a fresh upstream.
fn one_api() -> (Proxy, Httpbin) {
    let up = upstream("up");
    let p = builder().app("up", keyless_api("up", "/up/", &up.url(), "", "")).start();
    (p, up)
}

fn keyless(id: &str, listen_path: &str, target: &str) -> Value {
    serde_json::from_str(&keyless_api(id, listen_path, target, "", "")).unwrap()
}

fn generation(p: &Proxy) -> f64 {
    p.metric("portcullis_config_generation").expect("generation metric")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Asserts Tyk's success body `{"key", "status": "ok", "action"}` (apiModifyKeySuccess,
/// api.go:92-98; api_helpers.go:330-336).
fn assert_done(r: &Response, key: &str, action: &str) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"key": key, "status": "ok", "action": action}));
}

/// Asserts Tyk's error body `{"status": "error", "message"}` (apiStatusMessage, api.go:103-115)
/// with `status`, and returns the message.
fn error_message(r: &Response, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "error", "{v}");
    v["message"].as_str().expect("message").to_string()
}

/// `GET /tyk/apis` lists the loaded definitions whole (handleGetAPIList, api.go:1234-1249), and
/// `GET /tyk/apis/{id}` answers one, or 404 `API not found` (handleGetAPI, api.go:1267-1285;
/// apidef/api_definitions.go:165).
#[test]
fn apis_are_read_as_full_definitions() {
    let (p, _up) = one_api();
    let r = p.admin_get("/tyk/apis");
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["api_id"], "up");
    // The whole definition as its file has it, not a summary.
    assert_eq!(list[0]["version_data"]["not_versioned"], true, "{}", list[0]);
    assert_eq!(list[0]["proxy"]["listen_path"], "/up/");
    let r = p.admin_get("/tyk/apis/up");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), list[0]);
    assert_eq!(error_message(&p.admin_get("/tyk/apis/nope"), 404), "API not found");
}

/// `POST /tyk/apis` writes `<app_path>/<api_id>.json` and answers `added` (handleAddApi,
/// api.go:1309-1401; writeToFile l.1503-1533), `PUT /tyk/apis/{id}` overwrites it and answers
/// `modified` (handleUpdateApi l.1403-1477), `DELETE` removes it and answers `deleted`
/// (handleDeleteAPI l.1535-1576). Portcullis then reloads: the change is served at once. Tyk
/// writes only and serves the change after `/tyk/reload`; a script that calls it afterwards
/// gets `{"status": "ok", "message": ""}` (resetHandler l.2177-2194) and nothing new.
#[test]
fn apis_create_update_delete_write_the_file_and_reload() {
    let (p, up) = one_api();
    let apps = p.apps_dir();
    let g = generation(&p);

    let r = p.admin_send("POST", "/tyk/apis", &keyless("new", "/new/", &up.url()).to_string());
    assert_done(&r, "new", "added");
    assert_eq!(read_json(&apps.join("new.json"))["api_id"], "new");
    assert_eq!(generation(&p), g + 1.0, "one reload");
    assert_eq!(client::get(p.listen, "/new/get").unwrap().status, 200, "served without /tyk/reload");
    assert_eq!(p.admin_get("/tyk/apis/new").json()["proxy"]["listen_path"], "/new/");
    assert_eq!(p.admin_get("/tyk/apis").json().as_array().map(Vec::len), Some(2));

    // Tyk's follow-up reload: `{"status": "ok", "message": ""}`, plus what the reload did.
    let r = p.admin_get("/tyk/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!((&v["status"], &v["message"]), (&json!("ok"), &json!("")), "{v}");
    assert!(v["skipped"].is_array() && v["generation"].is_number(), "{v}");

    let r = p.admin_send("PUT", "/tyk/apis/new", &keyless("new", "/renamed/", &up.url()).to_string());
    assert_done(&r, "new", "modified");
    assert_eq!(read_json(&apps.join("new.json"))["proxy"]["listen_path"], "/renamed/");
    assert_eq!(client::get(p.listen, "/renamed/get").unwrap().status, 200);
    assert_eq!(client::get(p.listen, "/new/get").unwrap().status, 404);

    let r = p.admin_send("DELETE", "/tyk/apis/new", "");
    assert_done(&r, "new", "deleted");
    assert!(!apps.join("new.json").exists());
    assert_eq!(client::get(p.listen, "/renamed/get").unwrap().status, 404);
    assert_eq!(error_message(&p.admin_get("/tyk/apis/new"), 404), "API not found");
    assert_eq!(client::get(p.listen, "/up/get").unwrap().status, 200, "the other API is still served");

    // A definition without `api_id` gets a generated one, 32 hex digits (api.go:1354-1356,
    // apidef/api_definitions.go:1493-1495, `uuid.NewHex`).
    let mut def = keyless("x", "/generated/", &up.url());
    def.as_object_mut().unwrap().remove("api_id");
    let r = p.admin_send("POST", "/tyk/apis", &def.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["key"].as_str().unwrap().to_string();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(read_json(&apps.join(format!("{id}.json")))["api_id"], id.as_str());
    assert_eq!(client::get(p.listen, "/generated/get").unwrap().status, 200);
}

/// A definition is updated in the file it was loaded from, whatever that file is called: Tyk
/// writes `<api_id>.json` (api.go:1511), which next to a differently named file would be the
/// same API twice. Deleting it removes that file.
#[test]
fn an_api_is_updated_and_deleted_in_the_file_it_came_from() {
    let up = upstream("up");
    let p = builder().app("some-name", keyless_api("up", "/up/", &up.url(), "", "")).start();
    let r = p.admin_send("PUT", "/tyk/apis/up", &keyless("up", "/moved/", &up.url()).to_string());
    assert_done(&r, "up", "modified");
    assert!(!p.apps_dir().join("up.json").exists());
    assert_eq!(read_json(&p.apps_dir().join("some-name.json"))["proxy"]["listen_path"], "/moved/");
    assert_eq!(client::get(p.listen, "/moved/get").unwrap().status, 200);
    // POST of a loaded id replaces it too (Tyk overwrites, api.go:1513-1517).
    let r = p.admin_send("POST", "/tyk/apis", &keyless("up", "/again/", &up.url()).to_string());
    assert_done(&r, "up", "added");
    assert_eq!(read_json(&p.apps_dir().join("some-name.json"))["proxy"]["listen_path"], "/again/");
    assert_done(&p.admin_send("DELETE", "/tyk/apis/up", ""), "up", "deleted");
    assert!(!p.apps_dir().join("some-name.json").exists());
    assert_eq!(p.admin_get("/tyk/apis").json(), json!([]));
}

/// A definition the loader refuses gets 400 with the loader's errors (file, field, value), in
/// Tyk's words `Validation of API Definition failed. Reason: ...` (validateAPIDef,
/// api.go:3782-3794); nothing is written and the running configuration stays (no reload).
#[test]
fn a_refused_definition_is_not_written_and_the_running_config_stays() {
    let (p, up) = one_api();
    let apps = p.apps_dir();
    let g = generation(&p);
    let before_up = std::fs::read_to_string(apps.join("up.json")).unwrap();
    let before_policies = std::fs::read_to_string(apps.join("policies.json")).unwrap();
    let unchanged = |p: &Proxy| {
        assert_eq!(generation(p), g, "no reload");
        assert_eq!(std::fs::read_to_string(apps.join("up.json")).unwrap(), before_up);
        assert_eq!(std::fs::read_to_string(apps.join("policies.json")).unwrap(), before_policies);
        let names: Vec<String> = std::fs::read_dir(&apps)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "up.json" && n != "policies.json")
            .collect();
        assert!(names.is_empty(), "nothing else written: {names:?}");
        assert_eq!(client::get(p.listen, "/up/get").unwrap().status, 200);
    };

    let bad = keyless_api("bad", "/bad/", "gopher://x", "", "");
    let r = p.admin_send("POST", "/tyk/apis", &bad);
    let m = error_message(&r, 400);
    assert!(m.starts_with("Validation of API Definition failed"), "{m}");
    assert!(m.contains("bad.json") && m.contains("proxy.target_url") && m.contains("gopher://x"), "{m}");
    assert!(r.json()["errors"].as_array().is_some_and(|e| e.len() == 1), "{}", r.text());
    unchanged(&p);

    // An update the loader refuses leaves the file and the served API as they were.
    let r = p.admin_send("PUT", "/tyk/apis/up", &api("up", "/up/", &up.url(), r#""use_oauth2": true,"#, ""));
    let m = error_message(&r, 400);
    assert!(m.contains("use_oauth2") && m.contains("true"), "{m}");
    unchanged(&p);

    // A definition that would take over a served API's listen path: the loader would refuse
    // `up.json` (the later file); refused, naming it.
    let r = p.admin_send("POST", "/tyk/apis", &keyless("a-taker", "/up/", &up.url()).to_string());
    let m = error_message(&r, 400);
    assert!(m.contains("up.json") && m.contains("proxy.listen_path"), "{m}");
    unchanged(&p);

    // `policies` would be `apps/policies.json`, the policies file.
    let m = error_message(&p.admin_send("POST", "/tyk/apis", &keyless("policies", "/p/", &up.url()).to_string()), 400);
    assert!(m.contains("policies file"), "{m}");
    unchanged(&p);

    // Not JSON, or not an object: Tyk's `Request malformed` (api.go:1345-1348).
    for body in ["{not json", "[1, 2]"] {
        let m = error_message(&p.admin_send("POST", "/tyk/apis", body), 400);
        assert!(m.starts_with("Request malformed"), "{m}");
    }
    unchanged(&p);
}

/// A change is written only when the reload it makes would apply: with `[apps] strict = true`
/// and a refused definition already on disk, the reload would be rejected, so the valid new
/// definition is not written either (500, the reload's errors; Tyk has no such check).
#[test]
fn a_change_is_not_written_when_the_configuration_would_not_reload() {
    let up = upstream("up");
    let p = builder().app("up", keyless_api("up", "/up/", &up.url(), "", "")).apps_config("strict = true").start();
    let g = generation(&p);
    std::fs::write(p.apps_dir().join("broken.json"), keyless_api("broken", "/b/", "gopher://x", "", "")).unwrap();
    let r = p.admin_send("POST", "/tyk/apis", &keyless("new", "/new/", &up.url()).to_string());
    let m = error_message(&r, 500);
    assert!(m.contains("would not reload") && m.contains("broken.json") && m.contains("gopher://x"), "{m}");
    assert!(!p.apps_dir().join("new.json").exists());
    assert_eq!(generation(&p), g);
    assert_eq!(client::get(p.listen, "/up/get").unwrap().status, 200);
}

/// Tyk's statuses for ids: 404 for an API that is not loaded on `PUT`/`DELETE`
/// (validateSpecExists, api_helpers.go:105-110), 400 for a `PUT` whose body names another id
/// (validateAPIIDMatch, api_helpers.go:112-118) and for `PUT`/`DELETE` without an id
/// (apiHandler, api.go:1645-1656).
#[test]
fn unknown_and_mismatched_api_ids() {
    let (p, up) = one_api();
    let def = keyless("nope", "/nope/", &up.url()).to_string();
    assert_eq!(error_message(&p.admin_send("PUT", "/tyk/apis/nope", &def), 404), "API not found");
    assert_eq!(error_message(&p.admin_send("DELETE", "/tyk/apis/nope", ""), 404), "API not found");
    let m = error_message(&p.admin_send("PUT", "/tyk/apis/up", &def), 400);
    assert_eq!(m, "Request APIID does not match that in Definition! For Update operations these must match.");
    assert_eq!(error_message(&p.admin_send("PUT", "/tyk/apis", &def), 400), "Must specify an apiID to update");
    assert_eq!(error_message(&p.admin_send("DELETE", "/tyk/apis", ""), 400), "Must specify an apiID to delete");
    assert!(!p.apps_dir().join("nope.json").exists());
}

/// Ids that are not a safe file name are refused with 400 `Invalid API ID` before anything else
/// (sanitize.ValidatePathComponent, internal/sanitize/path.go:34-63; api.go:1358-1361, 1404-1407,
/// 1536-1539), and for policies Tyk's id characters (pkg/identifier/custom.go:10-11; api.go:1147-1150).
#[test]
fn unsafe_ids_are_refused() {
    let (p, up) = one_api();
    let outside = p.dir.path().join("evil.json");
    for id in ["../evil", "a/b", "..", "a\\b"] {
        let def = json!({"api_id": id, "use_keyless": true, "proxy": {"listen_path": "/e/", "target_url": up.url()}});
        assert_eq!(error_message(&p.admin_send("POST", "/tyk/apis", &def.to_string()), 400), "Invalid API ID", "{id}");
    }
    for path in ["/tyk/apis/..%2Fevil", "/tyk/apis/..", "/tyk/apis/a%5Cb", "/tyk/apis/a%2"] {
        let def = keyless("x", "/x/", &up.url()).to_string();
        assert_eq!(error_message(&p.admin_send("PUT", path, &def), 400), "Invalid API ID", "{path}");
        assert_eq!(error_message(&p.admin_send("DELETE", path, ""), 400), "Invalid API ID", "{path}");
    }
    let invalid_policy = "Invalid Policy ID: Allowed characters: a-z, A-Z, 0-9, ., _, -, ~";
    for id in ["../evil", "a/b", "a b", ".."] {
        let pol = json!({"id": id, "rate": 1, "per": 1});
        assert_eq!(
            error_message(&p.admin_send("POST", "/tyk/policies", &pol.to_string()), 400),
            invalid_policy,
            "{id}"
        );
    }
    assert_eq!(error_message(&p.admin_send("DELETE", "/tyk/policies/..%2Fevil", ""), 400), invalid_policy);
    assert!(!outside.exists());
    assert_eq!(p.admin_get("/tyk/apis").json().as_array().map(Vec::len), Some(1));
}

/// The policies file is Tyk's map `id -> policy` (policy_record_name; gateway/server.go:810-820).
/// `POST`/`PUT /tyk/policies` answer `added`/`modified` (handleAddOrUpdatePolicy,
/// api.go:1135-1202), `DELETE` `deleted` (handleDeletePolicy l.1204-1232), `GET` lists the
/// loaded policies or one, 404 `Policy not found` (l.1109-1123). Tyk writes `<policy_path>/<id>.json`
/// even when it loads a map file, so its REST-written policies are not loaded from one; here the
/// map is rewritten (atomically) with the entry changed, and reloaded: a key can apply the
/// policy at once.
#[test]
fn policies_in_a_policies_file() {
    let up = upstream("up");
    let keyed = api("k", "/k/", &up.url(), r#""use_keyless": false, "use_standard_auth": true,"#, "");
    let p = builder().app("k", keyed).policies(r#"{"gold": {"rate": 100, "per": 1, "note": "kept"}}"#).start();
    let file = p.apps_dir().join("policies.json");
    let r = p.admin_get("/tyk/policies");
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    // As written, with the id it is loaded under (the map key, as Tyk's LoadPoliciesFromFile).
    assert_eq!((&list[0]["id"], &list[0]["note"]), (&json!("gold"), &json!("kept")), "{list}");
    assert_eq!(p.admin_get("/tyk/policies/gold").json(), list[0]);
    assert_eq!(error_message(&p.admin_get("/tyk/policies/silver"), 404), "Policy not found");

    let key_with = |pol: &str| {
        let s = json!({"rate": 10, "per": 1, "apply_policies": [pol],
                       "access_rights": {"k": {"api_id": "k", "versions": ["Default"]}}});
        p.admin_send("POST", "/tyk/keys/silver-user", &s.to_string())
    };
    assert_eq!(key_with("silver").status, 400, "silver does not exist yet");

    let silver =
        json!({"id": "silver", "rate": 5, "per": 1, "access_rights": {"k": {"api_id": "k", "versions": ["Default"]}}});
    assert_done(&p.admin_send("POST", "/tyk/policies", &silver.to_string()), "silver", "added");
    let map = read_json(&file);
    assert_eq!((&map["silver"]["rate"], &map["gold"]["note"]), (&json!(5), &json!("kept")), "{map}");
    assert_eq!(p.admin_get("/tyk/policies/silver").json()["rate"], 5);
    assert_eq!(key_with("silver").status, 200, "the policy is loaded at once");

    let mut changed = silver.clone();
    changed["rate"] = json!(7);
    assert_done(&p.admin_send("PUT", "/tyk/policies/silver", &changed.to_string()), "silver", "modified");
    assert_eq!(read_json(&file)["silver"]["rate"], 7);
    // Tyk's PUT writes whatever id it is given (no existence check, api.go:1135-1202): an upsert.
    let bronze = json!({"id": "bronze", "rate": 1, "per": 1});
    assert_done(&p.admin_send("PUT", "/tyk/policies/bronze", &bronze.to_string()), "bronze", "modified");

    // Refusals, nothing written: the id mismatch and the missing id (api.go:1152-1161), and a
    // policy the loader refuses (a negative rate, named with its field and value).
    let before = std::fs::read_to_string(&file).unwrap();
    let m = error_message(&p.admin_send("PUT", "/tyk/policies/gold", &changed.to_string()), 400);
    assert_eq!(m, "Request ID does not match that in policy! For Update operations these must match.");
    let m = error_message(&p.admin_send("POST", "/tyk/policies", r#"{"rate": 1, "per": 1}"#), 400);
    assert_eq!(m, "Unable to create policy without id.");
    let m = error_message(&p.admin_send("POST", "/tyk/policies", r#"{"id": "neg", "rate": -3, "per": 1}"#), 400);
    assert!(m.contains("neg.rate") && m.contains("-3"), "{m}");
    assert!(error_message(&p.admin_send("POST", "/tyk/policies", "{nope"), 400).starts_with("Request malformed"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    assert_eq!(error_message(&p.admin_get("/tyk/policies/neg"), 404), "Policy not found");

    assert_done(&p.admin_send("DELETE", "/tyk/policies/silver", ""), "silver", "deleted");
    let map = read_json(&file);
    assert!(map.get("silver").is_none() && map.get("gold").is_some(), "{map}");
    assert_eq!(error_message(&p.admin_get("/tyk/policies/silver"), 404), "Policy not found");
    // Tyk answers 500 `Delete failed` when the file is not there (api.go:1213-1218); a policy
    // that is not loaded is 404 here, as for APIs.
    assert_eq!(error_message(&p.admin_send("DELETE", "/tyk/policies/silver", ""), 404), "Policy not found");
    assert_eq!(key_with("silver").status, 400, "the deleted policy is gone");
    assert_eq!(
        error_message(&p.admin_send("PUT", "/tyk/policies", &bronze.to_string()), 400),
        "Must specify an apiID to update"
    );
}

/// `[apps] policies` naming a directory is Tyk's `policy_path`: one policy per file, and Tyk
/// writes `<policy_path>/<id>.json` (newPolicyPathRoot and root.WriteFile, api.go:1125-1187) and
/// removes it (l.1204-1232). A policy is updated and deleted in the file it was loaded from.
#[test]
fn policies_in_a_policy_directory() {
    let (p, _up) = one_api();
    let dir = p.dir.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("first.json"), r#"{"id": "gold", "rate": 100, "per": 1}"#).unwrap();
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    let config = config.replace(r#"policies = "apps/policies.json""#, r#"policies = "policies""#);
    std::fs::write(p.config_path(), config).unwrap();
    assert_eq!(p.admin_get("/tyk/reload").status, 200);
    assert_eq!(p.admin_get("/tyk/policies/gold").json()["rate"], 100);

    let silver = json!({"id": "silver", "rate": 5, "per": 1});
    assert_done(&p.admin_send("POST", "/tyk/policies", &silver.to_string()), "silver", "added");
    assert_eq!(read_json(&dir.join("silver.json")), silver);
    assert_eq!(p.admin_get("/tyk/policies").json().as_array().map(Vec::len), Some(2));

    let gold = json!({"id": "gold", "rate": 50, "per": 1});
    assert_done(&p.admin_send("PUT", "/tyk/policies/gold", &gold.to_string()), "gold", "modified");
    assert_eq!(read_json(&dir.join("first.json"))["rate"], 50);
    assert!(!dir.join("gold.json").exists());

    let m = error_message(&p.admin_send("POST", "/tyk/policies", r#"{"id": "neg", "rate": -3, "per": 1}"#), 400);
    assert!(m.contains("neg.json") && m.contains("rate") && m.contains("-3"), "{m}");
    assert!(!dir.join("neg.json").exists());

    assert_done(&p.admin_send("DELETE", "/tyk/policies/gold", ""), "gold", "deleted");
    assert!(!dir.join("first.json").exists());
    assert_eq!(error_message(&p.admin_get("/tyk/policies/gold"), 404), "Policy not found");
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["silver.json"], "no temporary files left");
}

/// `GET /tyk/reload/group` answers as `/tyk/reload` (groupResetHandler, api.go:2157-2171). Tyk
/// publishes the reload to every node over Redis; Portcullis has no such channel and reloads
/// this node only (docs/admin-api.md).
#[test]
fn reload_group_reloads_this_node() {
    let (p, up) = one_api();
    std::fs::write(p.apps_dir().join("second.json"), keyless_api("second", "/second/", &up.url(), "", "")).unwrap();
    let r = p.admin_get("/tyk/reload/group");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!((&v["status"], &v["message"]), (&json!("ok"), &json!("")), "{v}");
    assert_eq!(client::get(p.listen, "/second/get").unwrap().status, 200);
}

/// Every one of them needs the admin secret: 403 `Attempted administrative access with invalid
/// or missing key!` (gateway/server.go:995-1008), as `/tyk/keys`.
#[test]
fn the_gateway_api_needs_the_secret() {
    let (p, up) = one_api();
    let def = keyless("new", "/new/", &up.url()).to_string();
    for (method, path, body) in [
        ("GET", "/tyk/apis", ""),
        ("GET", "/tyk/apis/up", ""),
        ("POST", "/tyk/apis", def.as_str()),
        ("PUT", "/tyk/apis/up", def.as_str()),
        ("DELETE", "/tyk/apis/up", ""),
        ("GET", "/tyk/policies", ""),
        ("POST", "/tyk/policies", r#"{"id": "p", "rate": 1, "per": 1}"#),
        ("DELETE", "/tyk/policies/p", ""),
        ("GET", "/tyk/reload/group", ""),
    ] {
        let mut c = Conn::connect(p.admin).unwrap();
        let r = c.request(method, path, "X-Tyk-Authorization: wrong\r\n", body.as_bytes()).unwrap();
        let m = error_message(&r, 403);
        assert_eq!(m, "Attempted administrative access with invalid or missing key!", "{method} {path}");
    }
    assert!(!p.apps_dir().join("new.json").exists());
    assert_eq!(client::get(p.listen, "/up/get").unwrap().status, 200);
}

/// POST a batch to `/b/tyk/batch/` from `from` (a loopback address).
fn batch(p: &Proxy, from: std::net::Ipv4Addr, body: &str) -> Response {
    let mut c = Conn::connect_from(p.listen, from).expect("connect");
    let head = format!("Content-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    c.request("POST", "/b/tyk/batch/", &head, body.as_bytes()).expect("batch")
}

/// Tyk's batch requests (gateway/batch_requests.go). Each request of a batch runs as the
/// client's own: its key, its address (IP rules, X-Forwarded-For), every check. Tyk sends them
/// back through its own listener from 127.0.0.1, so its IP rules see the gateway instead.
#[test]
fn batch_requests_run_each_request_as_the_client_would_send_it() {
    let up = upstream("up");
    let p = builder()
        .workers(2)
        .app(
            "b",
            api(
                "b",
                "/b/",
                &up.url(),
                r#""enable_batch_request_support": true, "use_keyless": false, "use_standard_auth": true,
                   "enable_ip_blacklisting": true, "blacklisted_ips": ["127.0.0.9"],"#,
                "",
            ),
        )
        .start();
    let (key, _) = p.create_key(&json!({"rate": 100, "per": 1, "quota_max": -1}));
    let requests = json!([
        {"method": "GET", "relative_url": "get?x=1", "headers": {"Authorization": key}},
        // Framing headers are the batch's: these are dropped, the body keeps its length.
        {"method": "POST", "relative_url": "/echo", "body": "hello",
         "headers": {"Authorization": key, "Content-Type": "text/plain", "Content-Length": "0", "Transfer-Encoding": "chunked"}},
        {"method": "GET", "relative_url": "get"},
        {"method": "GET", "relative_url": "status/418", "headers": {"Authorization": key}},
    ]);
    let local = std::net::Ipv4Addr::new(127, 0, 0, 1);
    for parallel in [true, false] {
        let body = json!({"requests": requests, "suppress_parallel_execution": !parallel}).to_string();
        let r = batch(&p, local, &body);
        assert_eq!(r.status, 200, "{}", r.text());
        let units = r.json();
        let units = units.as_array().expect("a JSON array");
        let codes: Vec<u64> = units.iter().map(|u| u["code"].as_u64().unwrap()).collect();
        // In the order asked (Tyk answers parallel batches in the order they finish).
        assert_eq!(codes, [200, 200, 401, 418], "{units:?}");
        let urls: Vec<&str> = units.iter().map(|u| u["relative_url"].as_str().unwrap()).collect();
        assert_eq!(urls, ["get?x=1", "/echo", "get", "status/418"]);
        let got: Value = serde_json::from_str(units[0]["body"].as_str().unwrap()).unwrap();
        assert_eq!(got["args"]["x"], "1");
        assert_eq!(got["headers"]["X-Forwarded-For"], "127.0.0.1", "{got}");
        assert_eq!(units[0]["headers"]["Content-Type"][0], "application/json", "Go's header names: {}", units[0]);
        assert_eq!(units[1]["body"], "hello");
        assert!(units[2]["body"].as_str().unwrap().contains("Authorization field missing"), "{}", units[2]);
    }

    // From a blacklisted address: the batch endpoint answers (it is not an API request, as in
    // Tyk), but every request in it is refused as the client's own would be (Tyk: let through,
    // from 127.0.0.1).
    let banned = std::net::Ipv4Addr::new(127, 0, 0, 9);
    let direct = Conn::connect_from(p.listen, banned).unwrap().request(
        "GET",
        "/b/get",
        &format!("Authorization: {key}\r\n"),
        b"",
    );
    assert_eq!(direct.unwrap().status, 403);
    let r = batch(&p, banned, &json!({"requests": [requests[0]]}).to_string());
    assert_eq!((r.status, r.json()[0]["code"].as_u64()), (200, Some(403)), "{}", r.text());

    // Refused as a whole, Tyk's 400s: not a batch; a request that cannot be made (a header
    // that would split the request, a batch inside the batch).
    let r = batch(&p, local, "not json");
    assert_eq!((r.status, r.json()["message"].as_str()), (400, Some("Batch request malformed")));
    for bad in [
        json!({"requests": [{"method": "GET", "relative_url": "get", "headers": {"X-A": "1\r\nX-Injected: 1"}}]}),
        json!({"requests": [{"method": "GET", "relative_url": "get HTTP/1.1\r\nX: y"}]}),
        json!({"requests": [{"method": "POST", "relative_url": "tyk/batch/", "body": "{}"}]}),
        json!({"requests": [{"method": "POST", "relative_url": "x/../tyk/batch/", "body": "{}"}]}),
        json!({"requests": (0..65).map(|_| json!({"relative_url": "get"})).collect::<Vec<_>>()}),
    ] {
        let r = batch(&p, local, &bad.to_string());
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.json()["message"].as_str().unwrap().starts_with("Batch request creation failed"), "{}", r.text());
    }
    // Another method: Tyk's handler writes nothing, an empty 200.
    let r = p.get("/b/tyk/batch/", "");
    assert_eq!((r.status, r.body.len()), (200, 0));
    // Without enable_batch_request_support the path is the API's like any other.
    let p2 = builder().app("k", keyless_api("k", "/k/", &up.url(), "", "")).start();
    assert_eq!(p2.get("/k/tyk/batch/", "").status, 404, "the upstream's answer, not a batch");
}

/// The seed articles' export/import (docs/admin-api.md, "Export and import"): what `GET
/// /tyk/apis` and `/tyk/policies` give, created one by one on another node, serves the same
/// APIs and policies under the same ids.
#[test]
fn apis_and_policies_exported_from_one_node_import_into_another() {
    let up = upstream("up");
    let keyed = api(
        "k",
        "/k/",
        &up.url(),
        r#""use_keyless": false, "use_standard_auth": true, "org_id": "acme", "tag_headers": ["X-Team"],"#,
        "",
    );
    let from = builder()
        .app("k", keyed)
        .app("open", keyless_api("open", "/open/", &up.url(), "", ""))
        .policies(r#"{"gold": {"rate": 100, "per": 1, "org_id": "acme", "access_rights": {"k": {"api_id": "k", "versions": ["Default"]}}}}"#)
        .start();
    let apis = from.admin_get("/tyk/apis").json();
    let policies = from.admin_get("/tyk/policies").json();
    assert_eq!((apis.as_array().map(Vec::len), policies.as_array().map(Vec::len)), (Some(2), Some(1)));

    let to = builder().start();
    for p in policies.as_array().unwrap() {
        assert_eq!(to.admin_send("POST", "/tyk/policies", &p.to_string()).status, 200, "{p}");
    }
    for a in apis.as_array().unwrap() {
        let r = to.admin_send("POST", "/tyk/apis", &a.to_string());
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let sorted = |v: Value, key: &str| {
        let mut items = v.as_array().cloned().unwrap_or_default();
        items.sort_by_key(|i| i[key].as_str().unwrap_or_default().to_string());
        items
    };
    assert_eq!(sorted(to.admin_get("/tyk/apis").json(), "api_id"), sorted(apis, "api_id"));
    assert_eq!(sorted(to.admin_get("/tyk/policies").json(), "id"), sorted(policies, "id"));
    // And they serve: a key under the imported policy reaches the imported API.
    let s = json!({"apply_policies": ["gold"], "org_id": "acme"});
    let r = to.admin_send("POST", "/tyk/keys/imported-key-0001", &s.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(to.get("/k/get", "Authorization: imported-key-0001\r\n").status, 200);
    assert_eq!(to.get("/open/get", "").status, 200);
}
