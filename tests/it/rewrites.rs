//! Integration tests of Tyk's URL rewrites (`extended_paths.url_rewrites`,
//! gateway/mw_url_rewrite.go @31e219be): the real binary on loopback, in-process upstreams that
//! echo the URL they got. Before, such a definition was refused at load.

use portcullis_tests::client::{Conn, Response};
use portcullis_tests::harness::{Proxy, ProxyBuilder};
use portcullis_tests::httpbin::{upstream, Httpbin};

/// A keyless API `rw` at `/rw/` (listen path stripped) to `main`, with these `url_rewrites`
/// (`{other}` in them is the second upstream's URL).
fn api(main: &Httpbin, other: &Httpbin, rewrites: &str) -> Proxy {
    let rewrites = rewrites.replace("{other}", other.url().trim_end_matches('/'));
    let def = format!(
        r#"{{"name": "rw", "api_id": "rw", "use_keyless": true,
  "version_data": {{"not_versioned": true, "versions": {{"Default": {{"name": "Default", "use_extended_paths": true,
    "extended_paths": {{"black_list": [{{"path": "/forbidden", "method": "GET"}}], "url_rewrites": {rewrites}}}}}}}}},
  "proxy": {{"listen_path": "/rw/", "target_url": "{main}", "strip_listen_path": true}}}}"#,
        main = main.url(),
    );
    ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis")).app("rw", def).start()
}

/// The URL the upstream named `name` got (path and query).
fn url_at(r: &Response, name: &str) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some(name), "{}", r.text());
    let url = r.json()["url"].as_str().unwrap().to_string();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    rest[rest.find('/').unwrap_or(rest.len())..].to_string()
}

fn get(p: &Proxy, path: &str, headers: &str) -> Response {
    let mut c = Conn::connect(p.listen).expect("connect");
    c.request("GET", path, &format!("{headers}Connection: close\r\n"), b"").expect("request")
}

/// `match_pattern` on path and query, `$n` from its groups; an entry's method is exact, so a
/// POST to the same path is not rewritten (Tyk: `matchesMethod`, model_urlspec.go).
#[test]
fn a_rewrite_with_captures_applies_to_its_method_only() {
    let (main, other) = (upstream("main"), upstream("other"));
    let p = api(
        &main,
        &other,
        r#"[{"path": "/anything/items/{id}", "method": "GET", "match_pattern": "/anything/items/([0-9]+)/([a-z]+)", "rewrite_to": "/anything/item-$1?view=$2"}]"#,
    );
    assert_eq!(url_at(&get(&p, "/rw/anything/items/42/full?x=1", ""), "main"), "/anything/item-42?view=full");
    let mut c = Conn::connect(p.listen).expect("connect");
    let r = c.request("POST", "/rw/anything/items/42/full", "Connection: close\r\n", b"{}").expect("request");
    assert_eq!(r.header("x-upstream"), Some("main"), "{}", r.text());
    assert!(r.json()["url"].as_str().unwrap().ends_with("/anything/items/42/full"), "not rewritten: {}", r.text());
    // The black list sees the request's own path, before the rewrite (as in Tyk).
    assert_eq!(get(&p, "/rw/forbidden", "").status, 403);
}

/// Header and query triggers, `on: any` / `all`, `reverse`, and their captures in `rewrite_to`.
#[test]
fn header_and_query_triggers_pick_their_rewrite() {
    let (main, other) = (upstream("main"), upstream("other"));
    let p = api(
        &main,
        &other,
        r#"[{"path": "/t", "method": "GET", "match_pattern": "/t/([a-z]+)", "rewrite_to": "/anything/plain/$1",
             "triggers": [
               {"on": "all", "options": {"header_matches": {"x-tier": {"match_rx": "^gold$"}},
                                          "query_val_matches": {"beta": {"match_rx": "^(yes|on)$"}}},
                "rewrite_to": "/anything/gold-beta/$tyk_context.trigger-0-beta-0-0/$1"},
               {"on": "any", "options": {"header_matches": {"X-Device": {"match_rx": "^mobile-(.+)$"}},
                                          "query_val_matches": {"m": {"match_rx": "1"}}},
                "rewrite_to": "/anything/mobile/$tyk_context.trigger-1-X-Device-0-0/$1"},
               {"on": "any", "options": {"header_matches": {"X-Human": {"match_rx": "yes", "reverse": true}}},
                "rewrite_to": "/anything/bot/$1"}]}]"#,
    );
    let h = |t: &str| t.to_string();
    // `all`: both the header and the query.
    assert_eq!(
        url_at(&get(&p, "/rw/t/abc?beta=on", &h("X-Tier: gold\r\nX-Human: yes\r\n")), "main"),
        "/anything/gold-beta/on/abc"
    );
    // Only the header: `all` does not fire; `any` (the second) needs one of its two.
    assert_eq!(
        url_at(&get(&p, "/rw/t/abc", &h("X-Tier: gold\r\nX-Device: mobile-ios\r\nX-Human: yes\r\n")), "main"),
        "/anything/mobile/ios/abc"
    );
    assert_eq!(url_at(&get(&p, "/rw/t/abc?m=1", &h("X-Human: yes\r\n")), "main"), "/anything/mobile//abc");
    // `reverse`: a header that does not match fires; one that matches does not.
    assert_eq!(url_at(&get(&p, "/rw/t/abc", &h("X-Human: no\r\n")), "main"), "/anything/bot/abc");
    assert_eq!(url_at(&get(&p, "/rw/t/abc", &h("X-Human: yes\r\n")), "main"), "/anything/plain/abc");
}

/// A rewrite to an absolute URL sends the request to that host (Tyk's `RetainHost`,
/// reverse_proxy.go:277-286), with its `Host`, its path as written and no listen path.
#[test]
fn a_rewrite_to_an_absolute_url_goes_to_that_upstream() {
    let (main, other) = (upstream("main"), upstream("other"));
    let p = api(
        &main,
        &other,
        r#"[{"path": "/away", "method": "GET", "match_pattern": "/away/(.*)", "rewrite_to": "{other}/anything/moved/$1"}]"#,
    );
    let r = get(&p, "/rw/away/x/y?z=1", "");
    assert_eq!(url_at(&r, "other"), "/anything/moved/x/y?z=1");
    let host = other.url().trim_start_matches("http://").trim_end_matches('/').to_string();
    assert_eq!(
        r.json()["headers"]["host"].as_str().or(r.json()["headers"]["Host"].as_str()),
        Some(host.as_str()),
        "{}",
        r.text()
    );
    assert_eq!(url_at(&get(&p, "/rw/anything/near", ""), "main"), "/anything/near", "no rewrite: the API's target");
}
