//! Head parsing, framing and rewriting rules, one line per case.

use std::net::SocketAddr;

use portcullis_http1::{BodyKind, RequestMeta};

use super::*;
use crate::config::{ApiSpec, Config, Snapshot, Target};
use crate::dataplane::error::{ErrorKind, ProxyError};
use crate::router::Router;

fn snapshot(apis: Vec<ApiSpec>) -> Snapshot {
    let mut router = Router::default();
    for (i, a) in apis.iter().enumerate() {
        router.add(a.domain.as_deref(), &a.listen_path, i as u32).unwrap();
    }
    Snapshot {
        config: Config::default(),
        apis,
        versions: Vec::new(),
        router,
        generation: 1,
        policies: Default::default(),
        policy_sources: Default::default(),
        skipped: Vec::new(),
        tyk_key_hashes: vec![crate::auth::tyk_key::TykHash::Sha256],
        error_templates: Default::default(),
        tls: None,
    }
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
            addr: Some("127.0.0.1:81".parse::<SocketAddr>().unwrap()),
            host: "127.0.0.1".into(),
            port: 81,
            host_header: "up:81".into(),
            path_prefix: target_prefix.into(),
            tls: None,
        }],
        auth: std::sync::Arc::new(crate::auth::ApiAuth { keyless: true, ..Default::default() }),
        limits: Default::default(),
        plain: true,
        org_id: String::new(),
        do_not_track: false,
        detailed_recording: false,
        expire_analytics_after: 0,
        definition: Default::default(),
        error_overrides: None,
        track_endpoints: Vec::new(),
        do_not_track_endpoints: Vec::new(),
        validate_json: Vec::new(),
        circuit_breakers: Vec::new(),
        batch_requests: false,
        uptime: None,
        versioning: None,
        rewrites: None,
        rewrite_targets: Vec::new(),
        cache: None,
        mutual_tls: None,
        certificates: Vec::new(),
        expired_after: None,
        expires_header: None,
        visibility: Default::default(),
    }
}

/// The worker state the phases are lent, at the tests' time, request id and first target.
fn env<'e>(
    ctx: &'e ClientCtx<'e>,
    auth: &'e mut crate::auth::WorkerAuth,
    limiter: &'e mut crate::limit::Limiter,
) -> Env<'e> {
    Env { client: ctx, auth, limiter, now: &|| 1_800_000_000, request_id: &|| RID, pick: &|_, _| Some(0) }
}

/// The request id the tests' proxy generates.
const RID: [u8; 32] = *b"0123456789abcdef0123456789abcdef";

/// What the phases made of a request, or that its head is incomplete.
#[derive(Debug)]
enum Prepared {
    Partial,
    Routed(Routed),
    NoRoute,
    Batch,
    Denied(#[allow(dead_code, reason = "shown by Debug in failures")] crate::auth::Denial),
    Need(#[allow(dead_code, reason = "shown by Debug in failures")] Need),
}

/// Parses `req` and runs the phases on it against `snap`; returns the outcome and the upstream
/// head as text.
fn prep(snap: &Snapshot, req: &str) -> (Result<Prepared, ProxyError>, String) {
    let mut out = Vec::new();
    let mut spans = Vec::new();
    let head = match portcullis_http1::parse_request(req.as_bytes(), 100, &mut spans) {
        Ok(Some(h)) => h,
        Ok(None) => return (Ok(Prepared::Partial), String::new()),
        Err(e) => return (Err(e.into()), String::new()),
    };
    let view = head.view(req.as_bytes(), &spans);
    let ctx = ClientCtx { client_ip: "192.0.2.1", client_addr: "192.0.2.1".parse().unwrap(), tls_certs: None };
    let mut auth = crate::auth::WorkerAuth::detached(Default::default());
    let mut limiter = crate::limit::Limiter::new(crate::limit::LimiterConfig { max_keys: 100 }, 0.0);
    let mut env = env(&ctx, &mut auth, &mut limiter);
    let mut path = String::new();
    let r = start(&view, snap, &mut path, &mut env, &mut out).map(|(_, o)| match o {
        Outcome::Routed(r) => Prepared::Routed(r),
        Outcome::NoRoute => Prepared::NoRoute,
        Outcome::Batch(_) => Prepared::Batch,
        Outcome::Denied { denial, .. } => Prepared::Denied(denial),
        Outcome::Waiting(mut w) => Prepared::Need(w.need.take().expect("a need")),
    });
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

/// Tyk's batch endpoint is `<listen path>/tyk/batch/` of an API that enables it, on the
/// canonical path; anywhere else, and on other APIs, it is a path like any other.
#[test]
fn the_batch_path_routes_to_the_batch_only_where_enabled() {
    let mut batch = api("/b", "", true, false);
    batch.batch_requests = true;
    let snap = snapshot(vec![batch]);
    for req in
        ["POST /b/tyk/batch/ HTTP/1.1\r\nHost: gw\r\n\r\n", "POST /b/x/../tyk/batch/ HTTP/1.1\r\nHost: gw\r\n\r\n"]
    {
        assert!(matches!(prep(&snap, req).0, Ok(Prepared::Batch)), "{req}");
    }
    for req in ["POST /b/tyk/batch HTTP/1.1\r\nHost: gw\r\n\r\n", "POST /b/v1/tyk/batch/ HTTP/1.1\r\nHost: gw\r\n\r\n"]
    {
        assert!(matches!(prep(&snap, req).0, Ok(Prepared::Routed(_))), "{req}");
    }
    let snap = snapshot(vec![api("/b", "", true, false)]);
    assert!(matches!(prep(&snap, "POST /b/tyk/batch/ HTTP/1.1\r\nHost: gw\r\n\r\n").0, Ok(Prepared::Routed(_))));
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
fn partial_heads_and_unrouted_requests() {
    let snap = snapshot(vec![api("/app", "", true, false)]);
    assert!(matches!(prep(&snap, "GET /app HTTP/1.1\r\nHost: h\r\n").0, Ok(Prepared::Partial)));
    assert!(matches!(prep(&snap, "GET /apple HTTP/1.1\r\nHost: h\r\n\r\n").0, Ok(Prepared::NoRoute)));
    assert!(matches!(prep(&snap, "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").0, Ok(Prepared::NoRoute)));
    let (_, head) = routed(&snap, "GET http://other/app/x?y HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(head.starts_with("GET /x?y HTTP/1.1\r\n"), "absolute form: {head}");
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
            rule: PathRule {
                pattern: regex::Regex::new("^/").unwrap(),
                methods: portcullis_policy::path_rule::Methods::Any,
            },
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

/// Runs the phases again where they waited, as the connection loop does after an answer.
fn again<'a>(
    w: Box<Waiting<'a>>,
    view: &portcullis_http1::Request<'a>,
    snap: &'a Snapshot,
    ctx: &ClientCtx<'_>,
    auth: &mut crate::auth::WorkerAuth,
    limiter: &mut crate::limit::Limiter,
    out: &mut Vec<u8>,
) -> Outcome<'a> {
    resume(w, view, snap, &mut env(ctx, auth, limiter), out).unwrap()
}

/// One API at `/q` that takes auth tokens (so not the keyless fast path), and a request to it
/// with the key `k1`.
fn keyed_snapshot() -> Snapshot {
    let mut a = api("/q", "", true, false);
    a.auth = std::sync::Arc::new(crate::auth::ApiAuth { token: Some(Default::default()), ..Default::default() });
    a.plain = false;
    snapshot(vec![a])
}

const KEYED_REQUEST: &str = "GET /q/x HTTP/1.1\r\nHost: h\r\nAuthorization: k1\r\n\r\n";

fn client() -> ClientCtx<'static> {
    ClientCtx { client_ip: "192.0.2.1", client_addr: "192.0.2.1".parse().unwrap(), tls_certs: None }
}

/// A worker's auth caches and limiter, empty.
fn worker_state() -> (crate::auth::WorkerAuth, crate::limit::Limiter) {
    (
        crate::auth::WorkerAuth::detached(Default::default()),
        crate::limit::Limiter::new(crate::limit::LimiterConfig { max_keys: 100 }, 0.0),
    )
}

/// A request that waits for the control plane twice (its session, then a quota block) is
/// parsed once and resumed at the phase that asked: the earlier phases are not run again. Here
/// the key is made unknown to the worker before the quota answer arrives; had `authenticate`
/// run again, the request would be refused.
#[test]
fn phases_resume_where_they_asked_without_running_earlier_ones_again() {
    use crate::auth::{hash_key, Session};
    use crate::limit::quota::Reservation;
    let snap = keyed_snapshot();
    let mut spans = Vec::new();
    let head = portcullis_http1::parse_request(KEYED_REQUEST.as_bytes(), 100, &mut spans).unwrap().unwrap();
    let view = head.view(KEYED_REQUEST.as_bytes(), &spans);
    let ctx = client();
    let (mut auth, mut limiter) = worker_state();
    let (mut path, mut out) = (String::new(), Vec::new());
    let (_, first) = start(&view, &snap, &mut path, &mut env(&ctx, &mut auth, &mut limiter), &mut out).unwrap();
    let hash = hash_key("k1");
    let Outcome::Waiting(mut w) = first else { panic!("expected a wait for the session, got {first:?}") };
    assert!(matches!((w.at, w.need.take()), (Phase::Authenticate, Some(Need::Key(l))) if l.hash == hash), "{w:?}");
    let session = Session { quota_max: 10, quota_renewal_rate: 3600, ..Default::default() };
    auth.insert_session(hash, Some(std::sync::Arc::new(session)));
    let second = again(w, &view, &snap, &ctx, &mut auth, &mut limiter, &mut out);
    let Outcome::Waiting(mut w) = second else { panic!("expected a quota block to be asked for, got {second:?}") };
    let (Phase::Quota, Some(Need::Quota(q))) = (w.at, w.need.take()) else { panic!("{w:?}") };
    // The key is gone from the worker's point of view; the quota answer arrives.
    auth.insert_session(hash, None);
    let now = auth.now();
    auth.quotas.store(&q, Reservation { granted: 5, remaining: 9, reset: 1_800_003_600 }, now, 1_800_000_000);
    match again(w, &view, &snap, &ctx, &mut auth, &mut limiter, &mut out) {
        Outcome::Routed(r) => {
            assert!(r.identity.is_some(), "the identity found before the wait is kept");
            // 9 left in the store and 5 held by this worker, one of them spent.
            assert_eq!(r.limits.quota.map(|i| i.remaining), Some(13), "one unit spent");
        }
        other => panic!("expected routed, got {other:?}"),
    }
    assert!(String::from_utf8(out).unwrap().starts_with("GET /x HTTP/1.1\r\n"));
}

/// Rate before quota, as Tyk (gateway/session_manager.go:301-333): a request over its key's rate
/// and its quota is refused by the rate (429), not the quota (403).
#[test]
fn a_request_over_its_rate_and_its_quota_gets_the_429() {
    use crate::auth::{Refusal, Session};
    use crate::limit::quota::Reservation;
    let snap = keyed_snapshot();
    let mut spans = Vec::new();
    let head = portcullis_http1::parse_request(KEYED_REQUEST.as_bytes(), 100, &mut spans).unwrap().unwrap();
    let view = head.view(KEYED_REQUEST.as_bytes(), &spans);
    let ctx = client();
    let (mut auth, mut limiter) = worker_state();
    // One request an hour, one in the quota.
    let session = Session { rate: 1.0, per: 3600.0, quota_max: 1, quota_renewal_rate: 3600, ..Default::default() };
    auth.insert_session(crate::auth::hash_key("k1"), Some(std::sync::Arc::new(session)));
    // Routed, or the refusal.
    let run = |auth: &mut crate::auth::WorkerAuth, limiter: &mut crate::limit::Limiter| {
        let (mut path, mut out) = (String::new(), Vec::new());
        let (_, mut o) = start(&view, &snap, &mut path, &mut env(&ctx, auth, limiter), &mut out).unwrap();
        // Bounded: a quota block is asked for at most once.
        for _ in 0..2 {
            let Outcome::Waiting(mut w) = o else { break };
            let Some(Need::Quota(q)) = w.need.take() else { panic!("{w:?}") };
            let now = auth.now();
            auth.quotas.store(&q, Reservation { granted: 1, remaining: 0, reset: 1_800_003_600 }, now, 1_800_000_000);
            o = resume(w, &view, &snap, &mut env(&ctx, auth, limiter), &mut out).unwrap();
        }
        match o {
            Outcome::Routed(_) => Ok(()),
            Outcome::Denied { denial, .. } => Err(denial),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(run(&mut auth, &mut limiter), Ok(()));
    let denial = run(&mut auth, &mut limiter).expect_err("the second request is over both");
    assert_eq!((denial.kind, &*denial.message), (Refusal::TooManyRequests, "Rate Limit Exceeded"));
}

/// The upstream headers the gateway owns are exactly Tyk's three `X-RateLimit-*` names, in any
/// case (internal/rate/headers.go:56-74); others of the family pass.
#[test]
fn limit_headers_the_gateway_owns() {
    for n in ["X-RateLimit-Limit", "x-ratelimit-remaining", "X-RATELIMIT-RESET"] {
        assert!(rate::is_limit_header(n.as_bytes()), "{n}");
    }
    for n in ["X-RateLimit-Policy", "X-RateLimit-Limits", "X-RateLimit-Reset1", "RateLimit-Limit", "X-Quota-Limit", ""]
    {
        assert!(!rate::is_limit_header(n.as_bytes()), "{n}");
    }
}

/// An API at `/r` (listen path stripped, target `/base`) with Tyk's `url_rewrites`: entries
/// `(path, method, match_pattern, rewrite_to)`; absolute `rewrite_to`s go to `other:82`.
fn rewriting(entries: &[(&str, &str, &str, &str)], triggers: Vec<crate::rewrite::Trigger>) -> ApiSpec {
    use crate::path_rule::{tyk_pattern, Methods, PathRule};
    use crate::rewrite::{Rewrite, Rewrites, To};
    let mut a = api("/r", "/base", true, false);
    a.plain = false;
    let to = |t: &str| match t.strip_prefix("http://other:82") {
        Some(rest) => To { target: Some(0), text: rest.into() },
        None => To { target: None, text: t.into() },
    };
    let mut triggers = Some(triggers);
    let entries = entries
        .iter()
        .map(|(path, method, pattern, rewrite_to)| Rewrite {
            rule: PathRule {
                pattern: regex::Regex::new(&tyk_pattern(path, Default::default(), false)).unwrap(),
                methods: Methods::Only(vec![method.to_string()]),
            },
            pattern: regex::Regex::new(pattern).unwrap(),
            to: to(rewrite_to),
            triggers: triggers.take().unwrap_or_default(),
        })
        .collect();
    a.rewrites = Some(std::sync::Arc::new(Rewrites { entries, strip: Some("/r/".into()), context_vars: false }));
    a.rewrite_targets = vec![Target {
        url: "http://other:82".into(),
        addr: Some("127.0.0.2:82".parse::<SocketAddr>().unwrap()),
        host: "127.0.0.2".into(),
        port: 82,
        host_header: "other:82".into(),
        path_prefix: String::new(),
        tls: None,
    }];
    a
}

fn line(head: &str) -> &str {
    head.split("\r\n").next().unwrap()
}

/// Tyk's URL rewrite: matched by entry path and exact method, `match_pattern` on path and query,
/// `$n` from its groups, the listen path stripped from the result, the result below the target's
/// path; the query is the rewrite's (Tyk replaces `r.URL` whole).
#[test]
fn url_rewrites_change_the_upstream_path_for_their_method_only() {
    let snap = snapshot(vec![rewriting(
        &[("/status/{code}", "GET", r"/status/(\d+)", "/code/$1"), ("/keep", "GET", r"(.*)", "/r/kept$1")],
        vec![],
    )]);
    let get = |req: &str| line(&routed(&snap, req).1).to_string();
    assert_eq!(get("GET /r/status/200?x=1 HTTP/1.1\r\nHost: gw\r\n\r\n"), "GET /base/code/200 HTTP/1.1");
    assert_eq!(get("POST /r/status/200?x=1 HTTP/1.1\r\nHost: gw\r\n\r\n"), "POST /base/status/200?x=1 HTTP/1.1");
    assert_eq!(
        get("GET /r/keep?a=b HTTP/1.1\r\nHost: gw\r\n\r\n"),
        "GET /base/kept/r/keep?a=b HTTP/1.1",
        "the listen path as written taken off the front of the result, as Tyk's SanitizeProxyPaths"
    );
    assert_eq!(get("GET /r/other HTTP/1.1\r\nHost: gw\r\n\r\n"), "GET /base/other HTTP/1.1", "no entry");
}

/// A rewrite to an absolute URL goes to that host (Tyk's `RetainHost`): its own target, its
/// `Host`, its path as written (not below the API's target path).
#[test]
fn a_rewrite_to_an_absolute_url_changes_the_target() {
    let snap = snapshot(vec![rewriting(&[("/away", "GET", r"/away/(.*)", "http://other:82/there/$1")], vec![])]);
    match prep(&snap, "GET /r/away/x?q=1 HTTP/1.1\r\nHost: gw\r\n\r\n") {
        (Ok(Prepared::Routed(r)), head) => {
            assert_eq!(r.target, 1, "after the API's one target");
            assert_eq!(snap.apis[0].target(r.target).host_header, "other:82");
            assert_eq!(line(&head), "GET /there/x?q=1 HTTP/1.1");
            assert!(head.contains("\r\nHost: other:82\r\n"), "{head}");
        }
        other => panic!("{other:?}"),
    }
    let (r, _) = prep(&snap, "GET /r/near HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert!(matches!(r, Ok(Prepared::Routed(Routed { target: 0, .. }))));
}

/// Header and query triggers pick their own `rewrite_to`; their captures expand as
/// `$tyk_context.trigger-<n>-<name>-<i>[-<group>]`; bytes a request line may not hold are
/// percent-encoded, never written raw.
#[test]
fn url_rewrite_triggers_and_what_captures_may_write() {
    use crate::rewrite::{Matcher, To, Trigger};
    let m = |re: &str, reverse| Matcher { re: regex::Regex::new(re).unwrap(), reverse };
    let t = Trigger {
        any: true,
        headers: vec![("X-Device".into(), m("^mobile-(.+)$", false))],
        query: vec![("beta".into(), m("^yes$", false))],
        path_parts: vec![],
        session_meta: vec![],
        to: To { target: None, text: "/m/$tyk_context.trigger-0-X-Device-0-0/$1".into() },
    };
    let snap = snapshot(vec![rewriting(&[("/p", "GET", r"/p/([^?]*)", "/plain/$1")], vec![t])]);
    let get = |req: &str| line(&routed(&snap, req).1).to_string();
    assert_eq!(get("GET /r/p/x HTTP/1.1\r\nHost: gw\r\nX-Device: mobile-ios\r\n\r\n"), "GET /base/m/ios/x HTTP/1.1");
    assert_eq!(get("GET /r/p/x?beta=yes HTTP/1.1\r\nHost: gw\r\n\r\n"), "GET /base/m//x HTTP/1.1");
    assert_eq!(get("GET /r/p/x HTTP/1.1\r\nHost: gw\r\nX-Device: desktop\r\n\r\n"), "GET /base/plain/x HTTP/1.1");
    // A header value with a space and a slash: query-escaped into the path, as Tyk escapes it.
    assert_eq!(
        get("GET /r/p/x HTTP/1.1\r\nHost: gw\r\nX-Device: mobile-a b/c\r\n\r\n"),
        "GET /base/m/a+b%2Fc/x HTTP/1.1"
    );
    // Matched only unescaped: the decoded quote is encoded again, never written raw.
    let snap = snapshot(vec![rewriting(&[("/q", "GET", r#"/q/(a"b)"#, "/x/$1")], vec![])]);
    assert_eq!(line(&routed(&snap, "GET /r/q/a%22b HTTP/1.1\r\nHost: gw\r\n\r\n").1), "GET /base/x/a%22b HTTP/1.1");
    // A decoded CR LF makes the rewrite unusable (Go's url.Parse fails): forwarded unrewritten.
    let snap = snapshot(vec![rewriting(&[("/q", "GET", r"/q/([^%]*)$", "/x/$1")], vec![])]);
    let head = routed(&snap, "GET /r/q/a%0D%0AEvil:%20yes HTTP/1.1\r\nHost: gw\r\n\r\n").1;
    assert_eq!(line(&head), "GET /base/q/a%0D%0AEvil:%20yes HTTP/1.1");
    assert!(!head.contains("\r\nEvil"), "{head}");
}
