//! Integration tests of Tyk's classic API versioning (`version_data.not_versioned: false`): the
//! real binary on loopback, in-process upstreams. Each behaviour names the Tyk source it follows
//! (TykTechnologies/tyk @31e219be).

use portcullis_tests::client::Response;
use portcullis_tests::harness::{Proxy, ProxyBuilder};
use portcullis_tests::httpbin::{upstream, Httpbin};
use serde_json::{json, Value};

fn builder() -> ProxyBuilder {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn error_of(r: &Response) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_string()
}

/// A versioned API `vapi` at `/vapi/` to `main`: `v1` black-lists `GET /admin`, `v2`
/// black-lists `GET /secret` and goes to `other` (`override_target`), `old` expired in 2001.
/// `definition` is the `definition` object, `extra_version_data` fields of `version_data`
/// (each followed by a comma), `top` top-level fields (each followed by a comma).
fn versioned_api(main: &Httpbin, other: &Httpbin, definition: Value, extra_version_data: &str, top: &str) -> String {
    format!(
        r#"{{"name": "vapi", "api_id": "vapi", {top}
  "definition": {definition},
  "version_data": {{"not_versioned": false, {extra_version_data}
    "versions": {{
      "v1": {{"name": "v1", "expires": "2080-07-28 15:00", "use_extended_paths": true,
              "extended_paths": {{"black_list": [{{"path": "/admin", "method": "GET"}}]}}}},
      "v2": {{"name": "v2", "expires": "", "override_target": "{other}", "use_extended_paths": true,
              "extended_paths": {{"black_list": [{{"path": "/secret", "method": "GET"}}]}}}},
      "old": {{"name": "old", "expires": "2001-01-01 00:00", "use_extended_paths": true}}}}}},
  "proxy": {{"listen_path": "/vapi/", "target_url": "{main}", "strip_listen_path": true}}}}"#,
        main = main.url(),
        other = other.url(),
    )
}

fn keyless(main: &Httpbin, other: &Httpbin, definition: Value, extra_version_data: &str) -> Proxy {
    builder().app("vapi", versioned_api(main, other, definition, extra_version_data, r#""use_keyless": true,"#)).start()
}

/// Served by the upstream named `name`, which saw `path` (and the query in `url`).
fn served_by(r: &Response, name: &str) -> Value {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some(name), "{}", r.text());
    r.json()
}

fn refused(r: &Response, status: u16, message: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(error_of(r), message, "{}", r.text());
}

/// Tyk's black list refusal (api_definition.go:101, mw_version_check.go:113).
const FORBIDDEN_PATH: &str = "Requested endpoint is forbidden";

/// `location: header`: the version is header `key`'s value (api_definition.go:2296-2305), each
/// version has its own black list (`RxPaths[versionInfo.Name]`, mw_version_check.go:116-117) and
/// `v2` goes to its `override_target` (multi_target_proxy_handler.go:18-24, api_loader.go:367-382).
/// Before, the definition was refused (`version_data.not_versioned`).
#[test]
fn tyk_header_versions_select_their_black_lists_and_targets() {
    let (main, other) = (upstream("main"), upstream("other"));
    let p = keyless(&main, &other, json!({"location": "header", "key": "x-api-version"}), "");
    let v1 = "X-API-Version: v1\r\n";
    let v2 = "x-api-version: v2\r\n";
    refused(&p.get("/vapi/admin", v1), 403, FORBIDDEN_PATH);
    let r = served_by(&p.get("/vapi/anything/secret", v1), "main");
    assert!(r["url"].as_str().unwrap().ends_with("/anything/secret"), "{r}");
    refused(&p.get("/vapi/secret", v2), 403, FORBIDDEN_PATH);
    let r = served_by(&p.get("/vapi/anything/admin", v2), "other");
    // Not stripped: the upstream sees the version header.
    assert_eq!(r["headers"]["x-api-version"], "v2", "{r}");
    assert_eq!(p.get("/vapi/admin", v2).header("x-upstream"), Some("other"));
    drop(p);

    // `strip_versioning_data`: the header is deleted before the upstream (l.2299-2304).
    let strip = json!({"location": "header", "key": "x-api-version", "strip_versioning_data": true});
    let p = keyless(&main, &other, strip, "");
    let r = served_by(&p.get("/vapi/anything", v2), "other");
    assert!(r["headers"].get("X-Api-Version").is_none() && r["headers"].get("x-api-version").is_none(), "{r}");
}

/// `location: url-param` with `strip_versioning_data`: the version is query parameter `key`
/// (decoded), and the upstream gets the query without it, re-encoded as Go's `Values.Encode`
/// (api_definition.go:2306-2315).
#[test]
fn tyk_url_param_versions_select_their_lists_and_are_stripped() {
    let (main, other) = (upstream("main"), upstream("other"));
    let p =
        keyless(&main, &other, json!({"location": "url-param", "key": "version", "strip_versioning_data": true}), "");
    refused(&p.get("/vapi/admin?version=v1", ""), 403, FORBIDDEN_PATH);
    let r = served_by(&p.get("/vapi/anything/x?z=1&version=v%32&a=b", ""), "other");
    assert!(r["url"].as_str().unwrap().ends_with("/anything/x?a=b&z=1"), "{r}");
    refused(&p.get("/vapi/secret?version=v2", ""), 403, FORBIDDEN_PATH);
    let r = served_by(&p.get("/vapi/anything/secret?version=v1", ""), "main");
    assert!(r["url"].as_str().unwrap().ends_with("/anything/secret"), "no query left: {r}");
}

/// `location: url`: the version is the first path segment below the listen path
/// (api_definition.go:2316-2343); with `strip_versioning_data` it is taken out of the path the
/// lists and the upstream see (`strings.Replace(path, part+"/", "", 1)`).
#[test]
fn tyk_url_versions_select_their_lists_and_are_stripped() {
    let (main, other) = (upstream("main"), upstream("other"));
    let p = keyless(&main, &other, json!({"location": "url", "strip_versioning_data": true}), "");
    refused(&p.get("/vapi/v1/admin", ""), 403, FORBIDDEN_PATH);
    let r = served_by(&p.get("/vapi/v1/anything/y", ""), "main");
    assert!(r["url"].as_str().unwrap().ends_with("/anything/y"), "{r}");
    let r = served_by(&p.get("/vapi/v2/anything/admin", ""), "other");
    assert!(r["url"].as_str().unwrap().ends_with("/anything/admin"), "{r}");
    refused(&p.get("/vapi/v2/secret", ""), 403, FORBIDDEN_PATH);
    // The first segment is the version, whatever it is: not one of the API's.
    refused(&p.get("/vapi/anything", ""), 403, "This API version does not seem to exist");

    // Without the strip, the upstream gets the path with its version.
    let p = keyless(&main, &other, json!({"location": "url"}), "");
    let r = p.get("/vapi/v2/anything", "");
    assert_eq!((r.status, r.header("x-upstream")), (404, Some("other")), "{}", r.text());
    assert_eq!(r.json()["path"], "/v2/anything");
}

/// No version in the request: `default_version` when there is one, else 403 "Version
/// information not found" (api_definition.go:2434-2440); an unknown version is 403 "This API
/// version does not seem to exist" (l.2442-2453), or the default with `fallback_to_default`;
/// an expired one is 403 "Api Version has expired, ..." (l.2372-2377; expiry
/// apidef/api_definitions.go:1424-1437). All before any other check (api_loader.go:414).
#[test]
fn tyk_missing_unknown_and_expired_versions_get_tyks_refusals() {
    let (main, other) = (upstream("main"), upstream("other"));
    let header = json!({"location": "header", "key": "x-api-version"});
    let p = keyless(&main, &other, header.clone(), "");
    refused(&p.get("/vapi/get", ""), 403, "Version information not found");
    refused(&p.get("/vapi/get", "x-api-version: v3\r\n"), 403, "This API version does not seem to exist");
    refused(
        &p.get("/vapi/get", "x-api-version: old\r\n"),
        403,
        "Api Version has expired, please check documentation or contact administrator",
    );
    drop(p);

    let p = keyless(&main, &other, header, r#""default_version": "v2","#);
    let r = served_by(&p.get("/vapi/anything", ""), "other");
    assert!(r["headers"].get("x-api-version").is_none(), "{r}");
    refused(&p.get("/vapi/secret", ""), 403, FORBIDDEN_PATH);
    refused(&p.get("/vapi/get", "x-api-version: v3\r\n"), 403, "This API version does not seem to exist");
    drop(p);

    let fallback = json!({"location": "header", "key": "x-api-version", "fallback_to_default": true});
    let p = keyless(&main, &other, fallback, r#""default_version": "v1","#);
    served_by(&p.get("/vapi/get", "x-api-version: v3\r\n"), "main");
    refused(&p.get("/vapi/admin", "x-api-version: v3\r\n"), 403, FORBIDDEN_PATH);
}

/// A key's `access_rights.<api>.versions` must list the request's version on a versioned API,
/// else 403 "Access to this API has been disallowed" (mw_access_rights.go:43-63); the default
/// version counts as the request's when it names none (l.44-46).
#[test]
fn tyk_keys_are_refused_versions_their_access_rights_do_not_list() {
    let (main, other) = (upstream("main"), upstream("other"));
    let def = versioned_api(
        &main,
        &other,
        json!({"location": "header", "key": "x-api-version"}),
        r#""default_version": "v1","#,
        r#""use_keyless": false, "use_standard_auth": true,"#,
    );
    let p = builder().app("vapi", def).start();
    let (key, _) = p.create_key(&json!({"access_rights": {"vapi": {"api_id": "vapi", "versions": ["v1"]}}}));
    let auth = |v: &str| format!("Authorization: {key}\r\n{v}");
    served_by(&p.get("/vapi/get", &auth("x-api-version: v1\r\n")), "main");
    served_by(&p.get("/vapi/get", &auth("")), "main");
    refused(&p.get("/vapi/get", &auth("x-api-version: v2\r\n")), 403, "Access to this API has been disallowed");
    // The version is checked before the key: no key, unknown version.
    refused(&p.get("/vapi/get", "x-api-version: v3\r\n"), 403, "This API version does not seem to exist");
}

/// `X-Tyk-Api-Expires` (mw_version_check.go:169-173): the API's `expiration`, else the request's
/// version's `expires`, as Go's `time.RFC1123` of a UTC time; none for a version that never
/// expires. A non-versioned API past its `expiration` is refused, 403 with Tyk's words
/// (api_definition.go:101, 2373-2374, 2396-2409). Before, `expiration` was ignored: an expired
/// API was served.
#[test]
fn tyk_expiry_dates_are_told_and_an_expired_api_is_refused() {
    let (main, other) = (upstream("main"), upstream("other"));
    let p = keyless(&main, &other, json!({"location": "header", "key": "x-api-version"}), "");
    let r = p.get("/vapi/get", "x-api-version: v1\r\n");
    served_by(&r, "main");
    assert_eq!(r.header("x-tyk-api-expires"), Some("Sun, 28 Jul 2080 15:00:00 UTC"));
    let r = p.get("/vapi/get", "x-api-version: v2\r\n");
    served_by(&r, "other");
    assert_eq!(r.header("x-tyk-api-expires"), None);
    drop(p);

    // The API's own `expiration` wins over the version's.
    let top = r#""use_keyless": true, "expiration": "2090-01-02 03:04","#;
    let def = versioned_api(&main, &other, json!({"location": "header", "key": "x-api-version"}), "", top);
    let p = builder().app("vapi", def).start();
    let r = p.get("/vapi/get", "x-api-version: v1\r\n");
    assert_eq!(r.header("x-tyk-api-expires"), Some("Mon, 02 Jan 2090 03:04:00 UTC"), "{:?}", r.headers);
    drop(p);

    let plain = |expiration: &str| {
        let def = format!(
            r#"{{"name": "e", "api_id": "e", "use_keyless": true, "expiration": "{expiration}",
              "version_data": {{"not_versioned": true, "versions": {{"Default": {{"name": "Default"}}}}}},
              "proxy": {{"listen_path": "/e/", "target_url": "{}", "strip_listen_path": true}}}}"#,
            main.url()
        );
        builder().app("e", def).start()
    };
    let p = plain("2001-01-01 00:00");
    let before = main.heads();
    refused(&p.get("/e/get", ""), 403, "API has expired, please check documentation or contact administrator");
    assert_eq!(main.heads(), before, "not proxied");
    drop(p);
    let p = plain("2999-12-31 23:59");
    let r = p.get("/e/get", "");
    served_by(&r, "main");
    assert_eq!(r.header("x-tyk-api-expires"), Some("Tue, 31 Dec 2999 23:59:00 UTC"));
}
