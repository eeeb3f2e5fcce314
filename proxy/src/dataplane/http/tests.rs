//! Head parsing, framing and rewriting rules, one line per case.

use std::net::SocketAddr;

use super::*;
use crate::config::{ApiSpec, Config, Snapshot, Target};
use crate::router::Router;

fn snapshot(apis: Vec<ApiSpec>) -> Snapshot {
    let mut router = Router::default();
    for (i, a) in apis.iter().enumerate() {
        router.add(a.domain.as_deref(), &a.listen_path, i as u32).unwrap();
    }
    Snapshot { config: Config::default(), apis, router, generation: 1, policies: Default::default() }
}

fn api(listen_path: &str, target_prefix: &str, strip: bool, preserve_host: bool) -> ApiSpec {
    ApiSpec {
        api_id: "a".into(),
        name: "a".into(),
        file: "a.json".into(),
        domain: None,
        listen_path: listen_path.into(),
        strip_listen_path: strip,
        preserve_host_header: preserve_host,
        targets: vec![Target {
            url: "http://up:81".into(),
            addr: "127.0.0.1:81".parse::<SocketAddr>().unwrap(),
            host_header: "up:81".into(),
            path_prefix: target_prefix.into(),
        }],
        auth: std::sync::Arc::new(crate::auth::ApiAuth { keyless: true, ..Default::default() }),
        limits: Default::default(),
        plain: true,
        org_id: String::new(),
        do_not_track: false,
    }
}

/// The request id the tests' proxy generates.
const RID: [u8; 32] = *b"0123456789abcdef0123456789abcdef";

/// Prepares `req` against one API; returns the result and the upstream head as text.
fn prep(snap: &Snapshot, req: &str) -> (Result<Prepared>, String) {
    let mut out = Vec::new();
    let ctx = ClientCtx { client_ip: "192.0.2.1", client_addr: "192.0.2.1".parse().unwrap() };
    let mut auth = crate::auth::WorkerAuth::detached(Default::default());
    let mut limiter = crate::limit::Limiter::new(crate::limit::LimiterConfig { max_keys: 100 });
    let actx = AuthCtx { auth: &mut auth, limiter: &mut limiter, now: &|| 1_800_000_000 };
    let r = prepare_request(req.as_bytes(), 100, snap, &ctx, actx, || RID, |_, _| 0, &mut out);
    (r, String::from_utf8(out).unwrap())
}

fn routed(snap: &Snapshot, req: &str) -> (RequestMeta, String) {
    match prep(snap, req) {
        (Ok(Prepared::Routed(r)), head) => (r.meta, head),
        (other, _) => panic!("expected routed, got {other:?} for {req:?}"),
    }
}

fn bad(snap: &Snapshot, req: &str) -> ErrorKind {
    match prep(snap, req).0 {
        Err(e) => e.kind,
        other => panic!("expected an error, got {other:?} for {req:?}"),
    }
}

#[test]
fn rewrites_path_host_and_forwarding_headers() {
    let snap = snapshot(vec![api("/httpbin", "/base", true, false)]);
    let (meta, head) = routed(&snap, "GET /httpbin/get?foo=bar HTTP/1.1\r\nHost: gw\r\nAccept: */*\r\n\r\n");
    assert_eq!(meta.body, BodyKind::None);
    assert!(meta.keep_alive);
    assert_eq!(
        head,
        "GET /base/get?foo=bar HTTP/1.1\r\nAccept: */*\r\nHost: up:81\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Request-Id: 0123456789abcdef0123456789abcdef\r\n\r\n"
    );
    let (_, head) = routed(&snap, "GET /httpbin HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert!(head.starts_with("GET /base/ HTTP/1.1\r\n"), "{head}");
}

#[test]
fn no_strip_and_preserve_host() {
    let snap = snapshot(vec![api("/p", "", false, true)]);
    let (_, head) = routed(
        &snap,
        "GET /p/x HTTP/1.1\r\nHost: Client.Example\r\nX-Forwarded-For: 10.0.0.1\r\nX-Request-Id: mine\r\n\r\n",
    );
    assert!(head.starts_with("GET /p/x HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("Host: Client.Example\r\n"));
    assert!(head.contains("X-Forwarded-For: 10.0.0.1, 192.0.2.1\r\n"));
    assert!(head.contains("X-Request-Id: mine\r\n") && !head.contains("0123456789abcdef"));
}

#[test]
fn hop_by_hop_headers_are_dropped() {
    let snap = snapshot(vec![api("", "", false, false)]);
    let (meta, head) = routed(
        &snap,
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: x\r\nUpgrade: h2c\r\nX-Keep: yes\r\n\r\n",
    );
    assert!(!meta.upgrade, "Upgrade without Connection: upgrade is not an upgrade");
    for gone in ["Connection", "X-Private", "Keep-Alive", "TE:", "Proxy-Authorization", "Upgrade"] {
        assert!(!head.contains(gone), "{gone} forwarded:\n{head}");
    }
    assert!(head.contains("X-Keep: yes\r\n"));
}

#[test]
fn framing_of_requests() {
    let snap = snapshot(vec![api("", "", false, false)]);
    let r = |s: &str| routed(&snap, s).0;
    assert_eq!(r("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n").body, BodyKind::Length(10));
    assert_eq!(
        r("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n").body,
        BodyKind::Length(3)
    );
    assert_eq!(r("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked \r\n\r\n").body, BodyKind::Chunked);
    assert_eq!(r("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").body, BodyKind::None);
    let m = r("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
    assert!(m.expect_continue);
    assert!(
        !r("GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n").expect_continue,
        "no body, nothing to continue"
    );
    assert!(!r("GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(r("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    assert!(!r("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(r("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade);
}

#[test]
fn smuggling_shapes_are_bad_requests() {
    let snap = snapshot(vec![api("", "", false, false)]);
    for req in [
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked,\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n",
        // Framing headers named in Connection (issue: the proxy dropped the header and still
        // relayed the body, which the upstream then read as the next request).
        "POST / HTTP/1.1\r\nHost: h\r\nConnection: Content-Length\r\nContent-Length: 54\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\nConnection: CONTENT-LENGTH\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: Host\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n",
    ] {
        assert_eq!(bad(&snap, req), ErrorKind::BadRequest, "{req:?}");
    }
}

/// The upstream gets the framing the proxy parsed, once, in canonical form: never a duplicate,
/// a list or odd spacing another parser might read differently.
#[test]
fn request_framing_is_forwarded_normalised() {
    let snap = snapshot(vec![api("", "", false, false)]);
    let (_, head) =
        routed(&snap, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX-A: 1\r\ncontent-length:  003 \r\n\r\n");
    assert_eq!(head.matches("ontent-").count(), 1, "{head}");
    assert!(head.contains("\r\nContent-Length: 3\r\n"), "{head}");
    let (_, head) = routed(&snap, "POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: CHUNKED\r\n\r\n");
    assert!(head.contains("\r\nTransfer-Encoding: chunked\r\n") && !head.contains("CHUNKED"), "{head}");
    let (_, head) = routed(&snap, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    assert!(head.contains("\r\nContent-Length: 0\r\n"), "an empty body stays declared: {head}");
    let (_, head) = routed(&snap, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(!head.contains("Content-Length") && !head.contains("Transfer-Encoding"), "{head}");
}

#[test]
fn header_values_lose_every_byte_a_field_value_may_not_hold() {
    let mut out = b"X-Claim: ".to_vec();
    out.extend_from_slice(b"a\rb\nc\x00d\x0be\x0cf\x7fg\th \xc3\xa9");
    strip_non_field_bytes(&mut out, 9);
    assert_eq!(out, b"X-Claim: abcdefg\th \xc3\xa9");
}

#[test]
fn partial_heads_and_unrouted_requests() {
    let snap = snapshot(vec![api("/app", "", true, false)]);
    assert!(matches!(prep(&snap, "GET /app HTTP/1.1\r\nHost: h\r\n").0, Ok(Prepared::Partial)));
    assert!(matches!(prep(&snap, "GET /apple HTTP/1.1\r\nHost: h\r\n\r\n").0, Ok(Prepared::NoRoute(_))));
    assert!(matches!(prep(&snap, "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").0, Ok(Prepared::NoRoute(_))));
    let (_, head) = routed(&snap, "GET http://other/app/x?y HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(head.starts_with("GET /x?y HTTP/1.1\r\n"), "absolute form: {head}");
}

fn resp(req: &RequestMeta, client_keep_alive: bool, raw: &str) -> (ResponseMeta, String) {
    let mut out = Vec::new();
    match prepare_response(raw.as_bytes(), 100, req, client_keep_alive, &Default::default(), &mut out) {
        Ok(PreparedResponse::Ready(m)) => (m, String::from_utf8(out).unwrap()),
        other => panic!("expected a response, got {other:?}"),
    }
}

fn get_meta(minor: u8) -> RequestMeta {
    RequestMeta {
        method: Method::Get,
        minor_version: minor,
        head_len: 0,
        body: BodyKind::None,
        keep_alive: true,
        expect_continue: false,
        upgrade: false,
        spans: Default::default(),
    }
}

#[test]
fn response_framing_and_reuse() {
    let g = get_meta(1);
    let (m, head) = resp(&g, true, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n\r\n");
    assert_eq!((m.body, m.upstream_reusable, m.close_client), (BodyKind::Length(5), true, false));
    assert_eq!(head, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    let (m, head) = resp(&g, true, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    assert_eq!((m.body, m.upstream_reusable, m.close_client), (BodyKind::UntilClose, false, true));
    assert!(head.ends_with("Connection: close\r\n\r\n"));
    // A framing header named in Connection stays: the body is framed by it.
    let (m, head) =
        resp(&g, true, "HTTP/1.1 200 OK\r\nConnection: Content-Length, X-P\r\nX-P: 1\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(m.body, BodyKind::Length(5));
    assert_eq!(head, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    let (m, head) =
        resp(&g, true, "HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(m.body, BodyKind::Chunked);
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    let (m, _) = resp(&g, true, "HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(m.body, BodyKind::None);
    let (m, _) = resp(&g, true, "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
    assert!(!m.upstream_reusable, "HTTP/1.0 upstream without keep-alive");
    let head_req = RequestMeta { method: Method::Head, ..g };
    let (m, _) = resp(&head_req, true, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    assert_eq!(m.body, BodyKind::None, "HEAD responses have no body");
    let (m, head) = resp(&get_meta(0), true, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n");
    assert!(m.dechunk && m.close_client);
    assert!(!head.contains("Transfer-Encoding") && !head.contains("Trailer"));
    let (m, head) = resp(&get_meta(0), true, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n");
    assert!(!m.close_client);
    assert!(head.contains("Connection: keep-alive\r\n"));
    let mut out = Vec::new();
    assert!(matches!(
        prepare_response(b"HTTP/1.1 100 Continue\r\n\r\n", 100, &g, true, &Default::default(), &mut out),
        Ok(PreparedResponse::Informational { head_len: 25 })
    ));
    assert!(prepare_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        100,
        &g,
        true,
        &Default::default(),
        &mut out
    )
    .is_err());
}

#[test]
fn heads_that_go_out_unchanged_are_told_apart() {
    // (request's HTTP minor version, client kept alive, upstream head, forwarded verbatim)
    let cases: &[(u8, bool, &str, bool)] = &[
        (1, true, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
        // nginx's keep-alive responses: the one line the client head leaves out.
        (
            1,
            true,
            "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nConnection: keep-alive\r\nETag: x\r\n\r\n",
            true,
        ),
        // The dropped line followed by one sharing its first letters.
        (1, true, "HTTP/1.1 200 OK\r\nconnection: Keep-Alive\r\nContent-Length: 5\r\n\r\n", true),
        (1, true, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n", true),
        // The client closes after this response, so "keep-alive" would be false.
        (1, false, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n", false),
        (1, false, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
        // Other hop-by-hop headers, other Connection values, other versions are rewritten.
        (1, true, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n\r\n", false),
        (1, true, "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n", false),
        (
            1,
            true,
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n",
            false,
        ),
        (1, true, "HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n", false),
        (1, true, "HTTP/1.1 200 OK\r\nContent-Length:5\r\n\r\n", false),
        // An HTTP/1.0 client gets "Connection: keep-alive" at the end of the head: the same
        // bytes only where the upstream put it there too.
        (0, true, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n", true),
        (0, true, "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n", false),
        (0, true, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
    ];
    for &(minor, keep_alive, raw, want) in cases {
        let (m, head) = resp(&get_meta(minor), keep_alive, raw);
        assert_eq!(forwards_verbatim(raw.as_bytes(), head.as_bytes(), &m), want, "{raw:?} -> {head:?}");
    }
    let limits = crate::limit::LimitHeaders {
        rate: Some(crate::limit::RateInfo { limit: 10, remaining: 9, reset: 0 }),
        ..Default::default()
    };
    let raw = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
    let mut out = Vec::new();
    let Ok(PreparedResponse::Ready(m)) = prepare_response(raw.as_bytes(), 100, &get_meta(1), true, &limits, &mut out)
    else {
        panic!("expected a response")
    };
    assert!(!forwards_verbatim(raw.as_bytes(), &out, &m), "rate-limit headers are added");
}

#[test]
fn upgrade_response_keeps_upgrade_header() {
    let up = RequestMeta { upgrade: true, ..get_meta(1) };
    let (m, head) =
        resp(&up, true, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    assert!(m.switching);
    assert_eq!(head, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
}

#[test]
fn error_responses_are_json_with_exact_length() {
    let mut none = Vec::new();
    assert!(!error_response(&mut none, ErrorKind::Closed, "x", true) && none.is_empty(), "nothing to answer");
    let mut out = Vec::new();
    assert!(error_response(&mut out, ErrorKind::NoRoute, "no API matches this request", false));
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(&format!("Content-Length: {}", body.len())), "{text}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"], "no API matches this request");
}

#[test]
fn head_spans_point_at_method_target_and_user_agent() {
    let s = snapshot(vec![api("/a", "", true, false)]);
    let req = "PATCH /a/x?q=1 HTTP/1.1\r\nHost: h\r\nuser-AGENT: curl/8\r\n\r\n";
    let (m, _) = routed(&s, req);
    let head = req.as_bytes();
    assert_eq!(m.spans.method.get(head), b"PATCH");
    assert_eq!(m.spans.target.get(head), b"/a/x?q=1");
    assert_eq!(m.spans.user_agent.get(head), b"curl/8");
    let (m, _) = routed(&s, "GET http://h/a/y HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(m.spans.user_agent, Default::default(), "no User-Agent: empty span");
    assert_eq!(m.spans.target.len, "http://h/a/y".len() as u32);
}

/// Added headers are expanded straight into the upstream head: a per-path header replaces a
/// global one of the same name (only the last is sent), line breaks in an expanded value are
/// dropped (no header injection), a client header of an added name is replaced, and
/// `tag_headers` sees the value as sent.
#[test]
fn added_headers_replace_in_order_drop_line_breaks_and_feed_tags() {
    use crate::auth::transform::Template;
    use crate::auth::{ApiAuth, HeaderTransform, PathRule, Transforms};
    let transforms = Transforms {
        global_add: vec![
            ("X-Plan".into(), Template::parse("global", true)),
            ("X-Where".into(), Template::parse("at $tyk_context.path", true)),
        ],
        global_remove: Vec::new(),
        per_path: vec![HeaderTransform {
            rule: PathRule { pattern: regex::Regex::new("^/").unwrap(), methods: Vec::new() },
            delete: Vec::new(),
            add: vec![("x-plan".into(), Template::parse("path-$tyk_context.headers_X_In\r\nX-Evil: 1", true))],
        }],
        tag_headers: vec!["X-Plan".into(), "X-Where".into()],
    };
    let mut a = api("/t", "", true, false);
    a.auth = std::sync::Arc::new(ApiAuth { keyless: true, transforms, ..Default::default() });
    a.plain = false;
    let snap = snapshot(vec![a]);
    // The per-path template (an API definition's text) holds a CRLF and a header after it.
    let req = "GET /t/x HTTP/1.1\r\nHost: h\r\nX-Plan: client\r\nX-In: a\r\n\r\n";
    let (r, head) = prep(&snap, req);
    let r = match r {
        Ok(Prepared::Routed(r)) => r,
        other => panic!("expected routed, got {other:?}"),
    };
    let lines: Vec<&str> = head.split("\r\n").collect();
    let plan: Vec<&&str> = lines.iter().filter(|l| l.to_ascii_lowercase().starts_with("x-plan:")).collect();
    assert_eq!(plan, [&"x-plan: path-aX-Evil: 1"], "one X-Plan, the per-path one, on one line:\n{head}");
    assert!(lines.contains(&"X-Where: at /t/x"), "{head}");
    assert!(!lines.iter().any(|l| l.starts_with("X-Evil")), "{head}");
    assert_eq!(r.tags, ["x-plan-path-aX-Evil: 1", "x-where-at /t/x"]);
}

#[test]
fn common_prefix_finds_the_first_difference_at_every_position() {
    let naive = |a: &[u8], b: &[u8]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let base: Vec<u8> = (0..70u8).map(|i| b'a' + i % 26).collect();
    for len in 0..base.len() {
        let a = &base[..len];
        // Equal, and either one a prefix of the other.
        assert_eq!(common_prefix(a, a), len);
        assert_eq!(common_prefix(a, &base), len);
        assert_eq!(common_prefix(&base, a), len);
        // One byte changed at every position, in either argument.
        for at in 0..len {
            let mut b = a.to_vec();
            b[at] ^= 0x20;
            assert_eq!(common_prefix(a, &b), at, "len {len}, differ at {at}");
            assert_eq!(common_prefix(&b, a), at);
            assert_eq!(common_prefix(a, &b), naive(a, &b));
        }
    }
}
