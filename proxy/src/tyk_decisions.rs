//! Unit tests of `auth::decide` and of policy merging over Tyk's JSON as `config` converts it: each
//! method, each failure class, chained auth, IP and path rules, without sockets (the integration tests in `tests/it/auth.rs` cover the same through the binary).

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::*;
use crate::path_rule::PathRule;

const NOW: u64 = 1_800_000_000;

fn h<'a>(name: &'a str, value: &'a str) -> (&'a str, &'a str) {
    (name, value)
}

/// A request view over these headers (leaked: a test's few bytes, for a `'static` borrow).
fn view<'a>(path: &'a str, rel: &'a str, headers: &[(&str, &str)], ip: &str) -> RequestView<'a> {
    let pairs: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    let list: &'static portcullis_http1::HeaderList = Box::leak(Box::new(portcullis_http1::HeaderList::new(&pairs)));
    RequestView { method: "GET", path, rel_path: rel, query: "", headers: list.view(), client_ip: ip.parse().unwrap() }
}

/// Policies written as in a policies file (converted as `config` does).
fn policies(json: &str) -> Policies {
    let m: std::collections::BTreeMap<String, crate::config::TykPolicy> = serde_json::from_str(json).unwrap();
    Policies::new(m.into_iter().map(|(k, p)| (k, p.to_policy())))
}

fn cx(policies: &Policies) -> DecideCtx<'_> {
    DecideCtx { api_id: "a", api_index: 0, generation: 1, policies, now: NOW }
}

fn rule(p: &str) -> PathRule {
    let re = portcullis_policy::path_rule::tyk_pattern(p, Default::default(), false);
    PathRule { pattern: regex::Regex::new(&re).unwrap(), methods: portcullis_policy::path_rule::Methods::Any }
}

fn status(d: &Decision<'_>) -> u16 {
    match d {
        Decision::Allow(_) => 200,
        Decision::Deny(x) => crate::dataplane::error::ErrorKind::Denied(x.kind).code(),
        Decision::NeedKey(_) | Decision::NeedPasswordCheck(_) => 0,
    }
}

/// Decides, doing what the connection loop does for a password check (here, inline).
fn decide_checking<'a>(a: &'a ApiAuth, v: &RequestView<'a>, p: &Policies, w: &mut WorkerAuth) -> Decision<'a> {
    for _ in 0..2 {
        match decide(a, v, cx(p), w) {
            Decision::NeedPasswordCheck(c) => {
                let ok = basic::check_password(&c.password, &c.stored, &c.hash_type);
                w.remember_password_check(c.digest, ok);
            }
            d => return d,
        }
    }
    decide(a, v, cx(p), w)
}

#[test]
fn ip_and_path_rules_come_before_auth() {
    let p = Policies::default();
    let mut w = WorkerAuth::detached(Default::default());
    let a = ApiAuth {
        token: Some(Default::default()),
        ip_allow: Some(vec!["10.0.0.0/8".parse().unwrap()]),
        ignored: vec![rule("/health")],
        black_list: vec![rule("/admin")],
        ..Default::default()
    };
    assert_eq!(status(&decide(&a, &view("/a/x", "/x", &[], "192.0.2.1"), cx(&p), &mut w)), 403);
    // An IPv4-mapped IPv6 client is matched as IPv4.
    assert_eq!(status(&decide(&a, &view("/a/health", "/health", &[], "::ffff:10.1.2.3"), cx(&p), &mut w)), 200);
    assert_eq!(status(&decide(&a, &view("/a/admin", "/admin", &[], "10.0.0.1"), cx(&p), &mut w)), 403);
    assert_eq!(status(&decide(&a, &view("/a/x", "/x", &[], "10.0.0.1"), cx(&p), &mut w)), 401);
}

#[test]
fn token_miss_then_hit_then_access_rights() {
    let p = Policies::default();
    let mut w = WorkerAuth::detached(Default::default());
    let a = ApiAuth { token: Some(Default::default()), strip_auth_data: true, version: None, ..Default::default() };
    let hs = [h("Authorization", "Bearer k1")];
    let d = decide(&a, &view("/a/x", "/x", &hs, "127.0.0.1"), cx(&p), &mut w);
    let Decision::NeedKey(hash) = d else { panic!("expected a key lookup, got {d:?}") };
    assert_eq!(hash, hash_key("k1"));
    w.insert_session(hash, Some(Arc::new(Session::default())));
    match decide(&a, &view("/a/x", "/x", &hs, "127.0.0.1"), cx(&p), &mut w) {
        Decision::Allow(x) => {
            assert!(x.strip.removes_header("authorization"));
            assert_eq!(x.token, Some("k1"));
            assert_eq!(&*x.identity.unwrap().id, hex(&hash).as_str());
        }
        other => panic!("{other:?}"),
    }
    // Unknown key (store said none): 403; rights for another API only: 403.
    w.insert_session(hash_key("k2"), None);
    assert_eq!(status(&decide(&a, &view("/a/x", "/x", &[h("Authorization", "k2")], "127.0.0.1"), cx(&p), &mut w)), 403);
    let mut s = Session::default();
    s.access_rights.push(session::ApiRights { api_id: "other".into(), ..Default::default() });
    w.insert_session(hash_key("k3"), Some(Arc::new(s)));
    assert_eq!(status(&decide(&a, &view("/a/x", "/x", &[h("Authorization", "k3")], "127.0.0.1"), cx(&p), &mut w)), 403);
}

/// An API verifying HS256 tokens signed with "foo", reading the identity and policies from the
/// given claims (empty: `sub`, none), with one default policy.
fn hmac_jwt_api(identity_field: &str, policy_field: &str, default_policy: &str) -> ApiAuth {
    ApiAuth {
        jwt: Some(JwtSpec {
            family: jwt::Family::Hmac,
            keys: Arc::new(ArcSwap::from_pointee(jwt::KeySet::from_source(jwt::Family::Hmac, "Zm9v").unwrap())),
            jwks_url: None,
            source: Default::default(),
            identity_field: identity_field.into(),
            policy_field: policy_field.into(),
            default_policies: vec![default_policy.into()],
            skew: Default::default(),
        }),
        ..Default::default()
    }
}

#[test]
fn jwt_identity_policies_and_rejections() {
    let p = policies(
        r#"{"low": {"rate": 5, "per": 1}, "high": {"rate": 50, "per": 1}, "elsewhere": {"access_rights": {"b": {"api_id": "b"}}}}"#,
    );
    let a = hmac_jwt_api("uid", "pol", "low");
    let key = jsonwebtoken::EncodingKey::from_secret(b"foo");
    let tok = |c: serde_json::Value| jsonwebtoken::encode(&jsonwebtoken::Header::default(), &c, &key).unwrap();
    let mut w = WorkerAuth::detached(Default::default());
    let mut run = |t: &str| {
        let v = format!("Bearer {t}");
        let hs = [h("Authorization", &v)];
        match decide(&a, &view("/a/x", "/x", &hs, "127.0.0.1"), cx(&p), &mut w) {
            Decision::Allow(x) => Ok(x.identity.map(|i| (i.id.to_string(), i.grant.rate))),
            Decision::Deny(d) => Err(crate::dataplane::error::ErrorKind::Denied(d.kind).code()),
            Decision::NeedKey(_) | Decision::NeedPasswordCheck(_) => Err(0),
        }
    };
    // Identity claim, default policy.
    assert_eq!(run(&tok(serde_json::json!({"uid": "u1", "sub": "s"}))), Ok(Some(("u1".into(), Some((5.0, 1.0))))));
    // `sub` fallback; policies from the claim: the highest rate wins.
    assert_eq!(
        run(&tok(serde_json::json!({"sub": "s", "pol": ["low", "high"]}))),
        Ok(Some(("s".into(), Some((50.0, 1.0)))))
    );
    // A policy without this API, an unknown policy, no identity, expired, garbage: 403.
    assert_eq!(run(&tok(serde_json::json!({"sub": "s", "pol": "elsewhere"}))), Err(403));
    assert_eq!(run(&tok(serde_json::json!({"sub": "s", "pol": "nope"}))), Err(403));
    assert_eq!(run(&tok(serde_json::json!({"name": "x"}))), Err(403));
    assert_eq!(run(&tok(serde_json::json!({"sub": "s", "exp": NOW - 1}))), Err(403));
    assert_eq!(run("not.a.jwt"), Err(403));
}

/// A cached token keeps the grant worked out on its first use within one snapshot generation,
/// and a new generation (a reload that changed the policies) works it out again.
#[test]
fn a_cached_jwt_keeps_its_grant_until_the_generation_changes() {
    let pol = |rate: u32| policies(&format!(r#"{{"low": {{"rate": {rate}, "per": 1}}}}"#));
    let (p1, p2) = (pol(5), pol(7));
    let a = hmac_jwt_api("", "", "low");
    let key = jsonwebtoken::EncodingKey::from_secret(b"foo");
    let t = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &serde_json::json!({"sub": "s"}), &key).unwrap();
    let v = format!("Bearer {t}");
    let hs = [h("Authorization", &v)];
    let mut w = WorkerAuth::detached(Default::default());
    let mut rate = |generation: u64, p: &Policies| {
        let c = DecideCtx { api_id: "a", api_index: 0, generation, policies: p, now: NOW };
        match decide(&a, &view("/a/x", "/x", &hs, "127.0.0.1"), c, &mut w) {
            Decision::Allow(x) => x.identity.and_then(|i| i.grant.rate),
            _ => None,
        }
    };
    assert_eq!(rate(1, &p1), Some((5.0, 1.0)));
    assert_eq!(rate(1, &p1), Some((5.0, 1.0)), "cached token, same grant");
    assert_eq!(rate(2, &p2), Some((7.0, 1.0)), "new generation: the new policies apply");
    assert_eq!(rate(2, &p2), Some((7.0, 1.0)));
}

#[test]
fn chained_auth_needs_every_method_and_uses_the_base_identity() {
    let p = Policies::default();
    let mut w =
        WorkerAuth::detached(CacheLimits { negative_ttl: std::time::Duration::from_secs(60), ..Default::default() });
    let a = ApiAuth {
        token: Some(token::CredentialSource { header: "X-Api-Key".into(), ..Default::default() }),
        basic: Some(Default::default()),
        base_identity: Some(Method::Token),
        ..Default::default()
    };
    let digest = basic::hash_password("pw", 4).unwrap();
    let user = Session {
        basic_auth_data: session::BasicAuth { password: digest, hash_type: "bcrypt".into() },
        ..Default::default()
    };
    w.insert_session(hash_key("alice"), Some(Arc::new(user)));
    w.insert_session(hash_key("tok"), Some(Arc::new(Session { rate: 9.0, per: 1.0, ..Default::default() })));
    use base64::Engine as _;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:pw"));
    let both = [h("Authorization", &basic), h("X-Api-Key", "tok")];
    let v = view("/a/x", "/x", &both, "127.0.0.1");
    assert!(
        matches!(decide(&a, &v, cx(&p), &mut w), Decision::NeedPasswordCheck(_)),
        "bcrypt must not run on the worker"
    );
    match decide_checking(&a, &v, &p, &mut w) {
        Decision::Allow(x) => {
            let id = x.identity.unwrap();
            assert_eq!(id.method, Method::Token);
            assert_eq!(id.grant.rate, Some((9.0, 1.0)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(status(&decide(&a, &view("/a/x", "/x", &both[..1], "127.0.0.1"), cx(&p), &mut w)), 401);
    assert_eq!(status(&decide(&a, &view("/a/x", "/x", &both[1..], "127.0.0.1"), cx(&p), &mut w)), 401);
    let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:nope"));
    let hs = [h("Authorization", &wrong), h("X-Api-Key", "tok")];
    assert_eq!(status(&decide_checking(&a, &view("/a/x", "/x", &hs, "127.0.0.1"), &p, &mut w)), 401);
}

/// Policy merging (`auth::policy`) from policies written as in a policies file.
mod policies {
    use crate::auth::policy::*;
    use crate::auth::session::UrlAccess;
    use crate::auth::session::{ApiRights, Session};
    use crate::auth::Policies;

    /// Policies written as in a policies file (converted as `config` does).
    fn policies(json: &str) -> Policies {
        let m: std::collections::BTreeMap<String, crate::config::TykPolicy> = serde_json::from_str(json).unwrap();
        Policies::new(m.into_iter().map(|(k, p)| (k, p.to_policy())))
    }

    const TWO: &str = r#"{
        "slow": {"rate": 10, "per": 1, "quota_max": 100, "quota_renewal_rate": 60,
                 "access_rights": {"a": {"api_id": "a", "versions": ["Default"]}}},
        "fast": {"rate": 600, "per": 60, "quota_max": 50, "quota_renewal_rate": 60, "tags": ["gold"],
                 "access_rights": {"b": {"api_id": "b", "versions": [],
                    "allowed_urls": [{"url": "^/users", "methods": ["GET"]}]}}},
        "off": {"active": false}
    }"#;

    #[test]
    fn highest_rate_wins_and_rights_unite() {
        let p = policies(TWO);
        let g = grant_for_policies(&["slow", "fast"], &p).unwrap();
        // 10/1 s beats 600/60 s (10 per second each: the first stays).
        assert_eq!(g.rate, Some((10.0, 1.0)));
        let g = grant_for_policies(&["fast", "slow"], &p).unwrap();
        assert_eq!(g.rate, Some((600.0, 60.0)));
        let p2 = policies(r#"{"x": {"rate": 5, "per": 1}, "y": {"rate": 20, "per": 1}}"#);
        assert_eq!(grant_for_policies(&["x", "y"], &p2).unwrap().rate, Some((20.0, 1.0)));
        assert_eq!(grant_for_policies(&["y", "x"], &p2).unwrap().rate, Some((20.0, 1.0)));
        assert_eq!(g.quota, Some((100, 60)));
        assert_eq!(g.tags, ["gold"]);
        assert!(g.check("a", Some("Default"), "POST", "/x", "/x").is_ok());
        assert_eq!(g.check("a", Some("v2"), "GET", "/x", "/x"), Err(AccessDenied::Version));
        // Not versioned: a key's versions are not checked (Tyk: mw_access_rights.go:39-41).
        assert!(g.check("a", None, "GET", "/x", "/x").is_ok());
        // Versioned: exactly, and an empty list allows none (mw_access_rights.go:43-63).
        assert_eq!(g.check("a", Some("default"), "GET", "/x", "/x"), Err(AccessDenied::Version));
        assert_eq!(g.check("b", Some("whatever"), "GET", "/users/1", "/users/1"), Err(AccessDenied::Version));
        assert!(g.check("b", None, "GET", "/users/1", "/users/1").is_ok());
        assert_eq!(g.check("b", None, "POST", "/users/1", "/users/1"), Err(AccessDenied::Url));
        assert_eq!(g.check("b", None, "get", "/users/1", "/users/1"), Err(AccessDenied::Url), "methods exactly");
        assert_eq!(g.check("b", None, "GET", "/orders", "/orders"), Err(AccessDenied::Url));
        assert_eq!(g.check("c", None, "GET", "/", "/"), Err(AccessDenied::Api));
    }

    #[test]
    fn unlimited_beats_limits_and_unknown_or_inactive_policies_deny() {
        let p = policies(
            r#"{"lim": {"rate": 5, "per": 1, "quota_max": 10}, "free": {"rate": 0, "quota_max": -1}, "off": {"active": false}}"#,
        );
        let g = grant_for_policies(&["lim", "free"], &p).unwrap();
        assert_eq!(g.rate, None);
        assert_eq!(g.quota, None);
        assert!(g.access.is_none());
        assert_eq!(grant_for_policies(&["nope"], &p).unwrap_err(), GrantError::UnknownPolicy("nope".into()));
        assert!(grant_for_policies(&["off"], &p).unwrap().inactive);
    }

    #[test]
    fn session_without_policies_uses_its_own_rights() {
        let mut s = Session { rate: 3.0, per: 1.0, quota_max: -1, ..Default::default() };
        s.access_rights.push(ApiRights {
            api_id: "a".into(),
            allowed_urls: vec![UrlAccess { url: "[".into(), methods: vec![] }],
            ..Default::default()
        });
        assert_eq!(grant_for_session(&s, &Policies::default()).unwrap_err(), GrantError::BadUrlPattern("[".into()));
        s.access_rights.clear();
        let g = grant_for_session(&s, &Policies::default()).unwrap();
        assert_eq!(g.rate, Some((3.0, 1.0)));
        assert!(g.check("any", Some("v"), "GET", "/", "/").is_ok());
        s.policies = vec!["p".into()];
        s.inactive = true;
        let g = grant_for_session(&s, &policies(r#"{"p": {"rate": 1, "per": 1}}"#)).unwrap();
        assert!(g.inactive);
        assert_eq!(g.rate, Some((1.0, 1.0)));
    }
}
