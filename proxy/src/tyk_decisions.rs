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
    DecideCtx { api_id: "a", api_org: "", api_index: 0, generation: 1, policies, now: NOW, tyk_key_hashes: &[] }
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
    let Decision::NeedKey(lookup) = d else { panic!("expected a key lookup, got {d:?}") };
    let hash = lookup.hash;
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

/// JWTs as Tyk's JWT middleware treats them (gateway/mw_jwt.go): the identity field, literal or
/// a dotted path, else `sub`; the policy claim as one string (an array is no claim: the defaults
/// apply); a policy of another org, or unknown, is 403 "key not authorized: no matching policy";
/// a missing token 400, an expired one 401.
#[test]
fn jwt_identity_policies_and_rejections() {
    let p = policies(
        r#"{"low": {"rate": 5, "per": 1, "access_rights": {"a": {}}},
            "high": {"rate": 50, "per": 1, "access_rights": {"a": {}}},
            "elsewhere": {"access_rights": {"b": {"api_id": "b"}}},
            "theirs": {"org_id": "other", "rate": 500, "per": 1, "access_rights": {"a": {}}}}"#,
    );
    let key = jsonwebtoken::EncodingKey::from_secret(b"foo");
    let tok = |c: serde_json::Value| jsonwebtoken::encode(&jsonwebtoken::Header::default(), &c, &key).unwrap();
    let mut w = WorkerAuth::detached(Default::default());
    let mut run = |a: &ApiAuth, t: &str| {
        let v = format!("Bearer {t}");
        let hs = [h("Authorization", &v)];
        let hs = if t.is_empty() { &hs[..0] } else { &hs[..] };
        match decide(a, &view("/a/x", "/x", hs, "127.0.0.1"), cx(&p), &mut w) {
            Decision::Allow(x) => Ok(x.identity.map(|i| (i.id.to_string(), i.grant.rate_for("a").map(|r| r.0)))),
            Decision::Deny(d) => {
                Err((crate::dataplane::error::ErrorKind::Denied(d.kind).code(), d.message.to_string()))
            }
            Decision::NeedKey(_) | Decision::NeedPasswordCheck(_) => Err((0, String::new())),
        }
    };
    let a = hmac_jwt_api("uid", "pol", "low");
    let ok = |id: &str, rate: f64| Ok(Some((id.to_string(), Some((rate, 1.0)))));
    let no = |code: u16, msg: &str| Err((code, msg.to_string()));
    assert_eq!(
        run(&a, &tok(serde_json::json!({"uid": "u1", "sub": "s"}))),
        ok("u1", 5.0),
        "identity claim, default policy"
    );
    assert_eq!(run(&a, &tok(serde_json::json!({"sub": "s", "pol": "high"}))), ok("s", 50.0), "sub; the claim's policy");
    assert_eq!(run(&a, &tok(serde_json::json!({"sub": "s", "pol": ["high"]}))), ok("s", 5.0), "an array is no claim");
    assert_eq!(run(&a, &tok(serde_json::json!({"sub": "s", "uid": 7}))), ok("s", 5.0), "a number is no identity");
    let nested = hmac_jwt_api("user.email", "", "low");
    let t = tok(serde_json::json!({"sub": "s", "user": {"email": "a@b.c"}}));
    assert_eq!(run(&nested, &t), ok("a@b.c", 5.0), "a dotted identity field reads nested claims");
    let no_policy = "key not authorized: no matching policy";
    assert_eq!(run(&a, &tok(serde_json::json!({"sub": "s", "pol": "theirs"}))), no(403, no_policy), "another org");
    assert_eq!(run(&a, &tok(serde_json::json!({"sub": "s", "pol": "nope"}))), no(403, no_policy));
    let elsewhere = run(&a, &tok(serde_json::json!({"sub": "s", "pol": "elsewhere"})));
    assert_eq!(elsewhere, no(403, "Access to this API has been disallowed"));
    let none = no(403, "no suitable claims for user ID were found");
    assert_eq!(run(&a, &tok(serde_json::json!({"name": "x"}))), none);
    let expired = tok(serde_json::json!({"sub": "s", "exp": NOW - 1}));
    assert_eq!(run(&a, &expired), no(401, "Key not authorized: token has expired"));
    assert_eq!(run(&a, "not.a.jwt"), no(403, "Key not authorized"));
    assert_eq!(run(&a, ""), no(400, "Authorization field missing"));
}

/// A cached token keeps the grant worked out on its first use within one snapshot generation,
/// and a new generation (a reload that changed the policies) works it out again.
#[test]
fn a_cached_jwt_keeps_its_grant_until_the_generation_changes() {
    let pol =
        |rate: u32| policies(&format!(r#"{{"low": {{"rate": {rate}, "per": 1, "access_rights": {{"a": {{}}}}}}}}"#));
    let (p1, p2) = (pol(5), pol(7));
    let a = hmac_jwt_api("", "", "low");
    let key = jsonwebtoken::EncodingKey::from_secret(b"foo");
    let t = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &serde_json::json!({"sub": "s"}), &key).unwrap();
    let v = format!("Bearer {t}");
    let hs = [h("Authorization", &v)];
    let mut w = WorkerAuth::detached(Default::default());
    let mut rate = |generation: u64, p: &Policies| {
        let c = DecideCtx {
            api_id: "a",
            api_org: "",
            api_index: 0,
            generation,
            policies: p,
            now: NOW,
            tyk_key_hashes: &[],
        };
        match decide(&a, &view("/a/x", "/x", &hs, "127.0.0.1"), c, &mut w) {
            Decision::Allow(x) => x.identity.and_then(|i| i.grant.rate_for("a").map(|r| r.0)),
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

    fn rate(g: &Grant, api: &str) -> Option<(f64, f64)> {
        g.rate_for(api).map(|r| r.0)
    }

    fn quota(g: &Grant, api: &str) -> Option<(i64, i64)> {
        g.quota_for(api).map(|q| q.0)
    }

    /// Rate: the shortest interval between requests wins, per API; an empty rate is skipped
    /// (`rate` or `per` 0, `-1` without `per`), `-1` with a `per` is unlimited (apply.go:268-304).
    /// Before: an empty rate made the grant unlimited, and one rate applied to every API.
    #[test]
    fn rates_merge_per_api_and_empty_rates_are_skipped() {
        let p = policies(
            r#"{"empty": {"rate": 0, "per": 0, "access_rights": {"a": {}}},
                "minus": {"rate": -1, "access_rights": {"a": {}}},
                "ten": {"rate": 10, "per": 60, "access_rights": {"a": {}}},
                "hundred": {"rate": 100, "per": 1, "access_rights": {"x": {}}},
                "one": {"rate": 1, "per": 1, "access_rights": {"y": {}}},
                "free": {"rate": -1, "per": 1, "access_rights": {"a": {}}}}"#,
        );
        let g = grant_for_policies(&["empty", "ten"], &p).unwrap();
        assert_eq!(rate(&g, "a"), Some((10.0, 60.0)));
        assert_eq!(rate(&grant_for_policies(&["minus", "ten"], &p).unwrap(), "a"), Some((10.0, 60.0)));
        assert_eq!(rate(&grant_for_policies(&["ten", "free"], &p).unwrap(), "a"), None, "-1 per 1: unlimited");
        let g = grant_for_policies(&["hundred", "one"], &p).unwrap();
        assert_eq!((rate(&g, "x"), rate(&g, "y")), (Some((100.0, 1.0)), Some((1.0, 1.0))));
        // Two policies giving access: each API counts apart, under the policy that gave it.
        assert_eq!(g.rate_for("y").unwrap().1, Some("one"));
        assert_eq!(
            grant_for_policies(&["ten"], &p).unwrap().rate_for("a").unwrap().1,
            None,
            "one policy: the key's counters"
        );
    }

    /// Quota: the largest `quota_max` wins, `-1` beats all and 0 (or absent) loses to any; the
    /// renewal is the largest on its own (apply.go:502-518, util.go:81-91); 0 means no quota
    /// (session_manager.go:450). Before: an absent quota_max read as -1 and won, the renewal came
    /// with the winning quota, and quota_max 0 with a renewal refused every request.
    #[test]
    fn quotas_merge_as_tyk_and_zero_is_none() {
        let p = policies(
            r#"{"none": {"access_rights": {"a": {}}},
                "hundred_hourly": {"quota_max": 100, "quota_renewal_rate": 3600, "access_rights": {"a": {}}},
                "fifty_daily": {"quota_max": 50, "quota_renewal_rate": 86400, "access_rights": {"a": {}}},
                "zero": {"quota_max": 0, "quota_renewal_rate": 60, "access_rights": {"a": {}}},
                "unlimited": {"quota_max": -1, "access_rights": {"a": {}}}}"#,
        );
        assert_eq!(quota(&grant_for_policies(&["none", "hundred_hourly"], &p).unwrap(), "a"), Some((100, 3600)));
        assert_eq!(
            quota(&grant_for_policies(&["hundred_hourly", "fifty_daily"], &p).unwrap(), "a"),
            Some((100, 86400))
        );
        assert_eq!(quota(&grant_for_policies(&["zero"], &p).unwrap(), "a"), None);
        assert_eq!(quota(&grant_for_policies(&["hundred_hourly", "unlimited"], &p).unwrap(), "a"), None);
        let s = Session { quota_max: 0, quota_renewal_rate: 3600, ..Default::default() };
        assert_eq!(grant_for_session(&s, &Policies::default()).unwrap().quota, None, "0: no quota, not a zero quota");
    }

    /// Partitions: each policy gives only its parts; an API named without an `acl` part is
    /// dropped, and a key left with none is refused (apply.go:207-255, 379-563).
    #[test]
    fn partitioned_policies_give_only_their_parts() {
        let p = policies(
            r#"{"quota_only": {"partitions": {"quota": true}, "quota_max": 100, "access_rights": {"x": {}}},
                "acl": {"partitions": {"acl": true}, "rate": 1000, "per": 1, "access_rights": {"x": {}}},
                "rl": {"partitions": {"rate_limit": true}, "rate": 1, "per": 1, "access_rights": {"x": {}}},
                "per_api": {"partitions": {"per_api": true}, "access_rights": {"x": {"limit": {"rate": 3, "per": 1}}}},
                "both": {"partitions": {"per_api": true, "acl": true}, "access_rights": {"x": {}}}}"#,
        );
        assert_eq!(grant_for_policies(&["quota_only"], &p).unwrap_err(), GrantError::NoValidPolicies);
        let g = grant_for_policies(&["acl", "rl"], &p).unwrap();
        assert_eq!(rate(&g, "x"), Some((1.0, 1.0)), "the acl policy's rate does not apply");
        let g = grant_for_policies(&["per_api"], &p).unwrap();
        assert_eq!(g.rate_for("x"), Some(((3.0, 1.0), Some("x"))), "per_api: the API's own limit, counted apart");
        assert!(matches!(grant_for_policies(&["both"], &p), Err(GrantError::Unsupported(_))));
        assert!(matches!(grant_for_policies(&["per_api", "rl"], &p), Err(GrantError::Unsupported(_))));
    }

    /// A per-API `limit` in an ordinary policy is not read (apply.go:397); in a key without
    /// policies it is that API's whole limit, rate and quota, counted apart (apply.go:189-197).
    #[test]
    fn per_api_limits_only_where_tyk_reads_them() {
        let p =
            policies(r#"{"p": {"rate": 1, "per": 60, "access_rights": {"x": {"limit": {"rate": 1000, "per": 1}}}}}"#);
        assert_eq!(rate(&grant_for_policies(&["p"], &p).unwrap(), "x"), Some((1.0, 60.0)));
        let mut s = Session { rate: 100.0, per: 1.0, quota_max: -1, ..Default::default() };
        s.access_rights.push(ApiRights {
            api_id: "x".into(),
            limit: Some(crate::auth::session::ApiLimit {
                rate: 10.0,
                per: 1.0,
                quota_max: 5,
                quota_renewal_rate: 3600,
            }),
            ..Default::default()
        });
        s.access_rights.push(ApiRights { api_id: "y".into(), ..Default::default() });
        let g = grant_for_session(&s, &Policies::default()).unwrap();
        assert_eq!(g.rate_for("x"), Some(((10.0, 1.0), Some("x"))));
        assert_eq!(g.quota_for("x"), Some(((5, 3600), Some("x"))));
        assert_eq!(g.rate_for("y"), Some(((100.0, 1.0), None)));
    }

    /// Rights unite per API; a policy without access rights gives none (Tyk refuses a key left
    /// with none); an unknown policy and one of another org than the key's refuse the key.
    #[test]
    fn rights_unite_and_what_refuses_a_key() {
        let p = policies(
            r#"{"slow": {"rate": 10, "per": 1, "access_rights": {"a": {"api_id": "a", "versions": ["Default"]}}},
                "fast": {"rate": 600, "per": 60, "tags": ["gold"], "access_rights": {"b": {"api_id": "b",
                    "allowed_urls": [{"url": "/users", "methods": ["GET"]}]}}},
                "master": {"rate": 10, "per": 1},
                "off": {"active": false, "access_rights": {"a": {}}},
                "theirs": {"org_id": "other", "access_rights": {"a": {}}}}"#,
        );
        let g = grant_for_policies(&["slow", "fast"], &p).unwrap();
        assert_eq!(g.tags, ["gold"]);
        assert!(g.check("a", None, "POST", "/x", "/x").is_ok());
        assert!(g.check("b", None, "GET", "/users/1", "/users/1").is_ok());
        assert_eq!(g.check("c", None, "GET", "/", "/"), Err(AccessDenied::Api));
        assert_eq!(grant_for_policies(&["master"], &p).unwrap_err(), GrantError::NoValidPolicies);
        assert_eq!(grant_for_policies(&["nope"], &p).unwrap_err(), GrantError::UnknownPolicy("nope".into()));
        assert!(grant_for_policies(&["off"], &p).unwrap().inactive);
        let s = Session { policies: vec!["theirs".into()], org_id: "mine".into(), ..Default::default() };
        assert_eq!(grant_for_session(&s, &p).unwrap_err(), GrantError::UnknownPolicy("theirs".into()));
        assert_eq!(
            grant_for_policies(&["theirs"], &p).unwrap().policy_orgs,
            ["other"],
            "checked against the API's org"
        );
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
        assert!(g.check("any", None, "GET", "/", "/").is_ok(), "no access rights: every API (a master key)");
        s.policies = vec!["p".into()];
        s.inactive = true;
        let g =
            grant_for_session(&s, &policies(r#"{"p": {"rate": 1, "per": 1, "access_rights": {"a": {}}}}"#)).unwrap();
        assert!(g.inactive);
        assert_eq!(rate(&g, "a"), Some((1.0, 1.0)));
    }
}
