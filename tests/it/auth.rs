//! Integration tests of authentication, keys and policies: the real binary on loopback, the
//! in-process httpbin upstream, and a real `redis-server` for the Redis flows. Every loop is
//! bounded in count and time.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use portcullis::auth::signature;
use portcullis_tests::client::{Conn, Response};
use portcullis_tests::harness::{api, seed_jwt_files, ProxyBuilder, SEED_TOKEN};
use portcullis_tests::httpbin::upstream;
use portcullis_tests::redis::RedisServer;
use portcullis_tests::{wait, wait_for, WAIT};
use serde_json::{json, Value};

fn builder() -> ProxyBuilder {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn upstream_header(r: &Response, name: &str) -> Option<String> {
    r.json()["headers"]
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str().map(str::to_string))
}

fn error_of(r: &Response) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_string()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// `[storage]` for a test: the embedded default, or the given Redis.
fn storage(redis: Option<&RedisServer>) -> String {
    redis.map(|r| format!("[storage]\nredis = \"{}\"\n", r.url())).unwrap_or_default()
}

#[test]
fn token_auth_and_key_crud_take_effect_at_once_on_every_worker() {
    token_flow(None);
}

#[test]
fn token_auth_and_key_crud_with_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    token_flow(Some(&redis));
}

fn token_flow(redis: Option<&RedisServer>) {
    let up = upstream("up");
    let p = builder()
        .section(&storage(redis))
        .workers(2)
        .app("t", api("t", "/t/", &up.url(), r#""use_keyless": false, "use_standard_auth": true, "strip_auth_data": true,"#, ""))
        .app(
            "q",
            api(
                "q",
                "/q/",
                &up.url(),
                r#""use_standard_auth": true, "auth_configs": {"authToken": {"auth_header_name": "X-Api-Key", "use_param": true, "param_name": "key", "use_cookie": true, "cookie_name": "sid"}},"#,
                "",
            ),
        )
        .start();

    // Missing -> 401, unknown -> 403 (Tyk's messages).
    let r = p.get("/t/get", "");
    assert_eq!((r.status, error_of(&r).as_str()), (401, "Authorization field missing"));
    let r = p.get("/t/get", "Authorization: nope\r\n");
    assert_eq!((r.status, error_of(&r).as_str()), (403, "Access to this API has been disallowed"));

    let (key, hash) =
        p.create_key(&json!({"rate": 100, "per": 1, "quota_max": -1, "org_id": "org1", "meta_data": {"plan": "gold"}}));
    assert!(key.starts_with("ey"), "a Tyk token (base64 JSON), as Tyk with hash_key_function sha256 makes: {key}");
    assert_eq!(hash.len(), 64);
    // Header (with and without Bearer); the key is stripped before the upstream.
    for h in [format!("Authorization: {key}\r\n"), format!("Authorization: Bearer {key}\r\n")] {
        let r = p.get("/t/get", &h);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(upstream_header(&r, "authorization"), None);
    }
    // Param and cookie sources (not stripped: strip_auth_data is off for /q/).
    let r = p.get(&format!("/q/get?key={key}&x=1"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["args"]["key"], key.as_str());
    let r = p.get("/q/get", &format!("Cookie: a=1; sid={key}\r\n"));
    assert_eq!(r.status, 200);
    let r = p.get("/q/get", &format!("X-Api-Key: {key}\r\n"));
    assert_eq!(r.status, 200);

    // GET shows the session, never the key; the list shows hashes.
    let r = p.admin_get(&format!("/tyk/keys/{key}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["meta_data"]["plan"], "gold");
    assert!(!r.text().contains(&key));
    let r = p.admin_get("/tyk/keys");
    assert!(r.json()["keys"].as_array().unwrap().iter().any(|k| k == hash.as_str()));
    if redis.is_none() {
        let store = std::fs::read_to_string(p.dir.path().join("data/keys.json")).unwrap();
        assert!(store.contains(&hash) && !store.contains(&key), "the store must hold hashes only");
    }

    // Update: restrict to API "q" only. Every new connection (either worker) sees it at once.
    let t0 = Instant::now();
    let r = p.admin_send(
        "PUT",
        &format!("/tyk/keys/{key}"),
        &p.with_every_api(&json!({"access_rights": {"q": {"api_id": "q", "versions": []}}})).to_string(),
    );
    assert_eq!((r.status, r.json()["action"].as_str()), (200, Some("modified")));
    let update_ms = t0.elapsed().as_secs_f64() * 1e3;
    for _ in 0..10 {
        let r = p.get("/t/get", &format!("Authorization: {key}\r\n"));
        assert_eq!(r.status, 403, "an updated key must be refused on every worker at once");
        assert_eq!(p.get("/q/get", &format!("X-Api-Key: {key}\r\n")).status, 200);
    }
    eprintln!("key update: admin reply in {update_ms:.2} ms; the next request on each of 2 workers saw it");

    // Delete.
    let r = p.admin_send("DELETE", &format!("/tyk/keys/{key}"), "");
    assert_eq!((r.status, r.json()["action"].as_str()), (200, Some("deleted")));
    for _ in 0..6 {
        assert_eq!(p.get("/q/get", &format!("X-Api-Key: {key}\r\n")).status, 403);
    }
    assert_eq!(p.admin_get(&format!("/tyk/keys/{key}")).status, 404);

    // Named keys, expiry, inactive, unknown policies.
    let r =
        p.admin_send("POST", "/tyk/keys/my-named-key", &p.with_every_api(&json!({"expires": now() - 10})).to_string());
    assert_eq!(r.status, 200);
    let r = p.get("/t/get", "Authorization: my-named-key\r\n");
    assert_eq!((r.status, error_of(&r).as_str()), (401, "Key has expired, please renew"));
    p.admin_send("PUT", "/tyk/keys/my-named-key", &p.with_every_api(&json!({"is_inactive": true})).to_string());
    assert_eq!(p.get("/t/get", "Authorization: my-named-key\r\n").status, 403);
    let r = p.admin_send(
        "POST",
        "/tyk/keys/create",
        &p.with_every_api(&json!({"apply_policies": ["missing"]})).to_string(),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("missing"));
    let r = p.admin_send("POST", "/tyk/keys/create", "{not json");
    assert_eq!(r.status, 400);
    // Writes need the secret.
    let mut c = Conn::connect(p.admin).unwrap();
    let r = c.request("GET", "/tyk/keys", "Connection: close\r\n", b"").unwrap();
    assert_eq!(r.status, 403);
    let m = p.metrics();
    assert!(m.contains("portcullis_auth_denied_total"), "{m}");
}

#[test]
fn embedded_store_survives_restart() {
    let up = upstream("up");
    let mut p = builder().app("t", api("t", "/t/", &up.url(), r#""use_standard_auth": true,"#, "")).start();
    let (key, _) = p.create_key(&json!({"rate": 10, "per": 1}));
    assert_eq!(p.get("/t/get", &format!("Authorization: {key}\r\n")).status, 200);
    p.restart();
    assert_eq!(p.get("/t/get", &format!("Authorization: {key}\r\n")).status, 200, "{}", p.log_text());
}

/// The seed article's JWT walkthrough, verbatim: `apps/httpbin-jwt.json` and `apps/policies.json`
/// from this repository (target pointed at the local upstream) and the article's token.
#[test]
fn seed_jwt_walkthrough_works_verbatim() {
    let up = upstream("up");
    let (def, policies) = seed_jwt_files(&up.url());
    let p = builder().app("httpbin-jwt", def).policies(policies).start();
    let r = p.get("/httpbin-jwt/get", &format!("Authorization: Bearer {SEED_TOKEN}\r\n"));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log_text());
    assert_eq!(upstream_header(&r, "User").as_deref(), Some("foo@bar.com"));
    assert_eq!(upstream_header(&r, "Authorization"), None, "strip_auth_data must remove the JWT");
    // Missing and tampered tokens.
    let r = p.get("/httpbin-jwt/get", "");
    assert_eq!(r.status, 400);
    let tampered = SEED_TOKEN.replace("8E-X89", "8E-X88");
    let r = p.get("/httpbin-jwt/get", &format!("Authorization: Bearer {tampered}\r\n"));
    assert_eq!(r.status, 403);
    assert!(error_of(&r).starts_with("Key not authorized"), "{}", r.text());
}

fn jwt_api(id: &str, target: &str, method: &str, source: &str, extra: &str) -> String {
    api(
        id,
        &format!("/{id}/"),
        target,
        &format!(
            r#""enable_jwt": true, "jwt_signing_method": "{method}", "jwt_source": "{source}", "jwt_identity_base_field": "user_id",
               "jwt_policy_field_name": "pol", "jwt_default_policies": ["basic"], "enable_context_vars": true, "strip_auth_data": true, {extra}"#
        ),
        r#", "global_headers": {"X-User": "$tyk_context.jwt_claims_user_id", "X-Plan": "$tyk_context.jwt_claims_plan"}, "global_headers_remove": ["X-Secret"]"#,
    )
}

const POLICIES: &str = r#"{
    "basic": {"rate": 10, "per": 1, "access_rights": {"hs": {"api_id": "hs"}, "rs": {"api_id": "rs"}, "es": {"api_id": "es"}, "jwks": {"api_id": "jwks"}}},
    "other-api": {"rate": 1000, "per": 1, "access_rights": {"elsewhere": {"api_id": "elsewhere"}}}
}"#;

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Serves one fixed JSON body over HTTP/1.1 (a JWKS endpoint), for a bounded number of requests.
fn serve_jwks(body: String) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(50) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    addr
}

#[test]
fn jwt_methods_policies_and_failure_classes() {
    let up = upstream("up");
    let rsa_priv = include_str!("../fixtures/rsa_private.pem");
    let rsa_pub = include_str!("../fixtures/rsa_public.pem");
    let other_priv = include_str!("../fixtures/rsa_other_private.pem");
    let ec_priv = include_str!("../fixtures/ec_private.pem");
    let ec_pub = include_str!("../fixtures/ec_public.pem");
    // A JWKS holding the RSA public key (n, e from the PEM via jsonwebtoken's JWK support).
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
        &EncodingKey::from_rsa_pem(rsa_priv.as_bytes()).unwrap(),
        Algorithm::RS256,
    )
    .unwrap();
    let mut jwk_v = serde_json::to_value(&jwk).unwrap();
    jwk_v["kid"] = "k1".into();
    let jwks = serve_jwks(json!({"keys": [jwk_v]}).to_string());
    let p = builder()
        .app("hs", jwt_api("hs", &up.url(), "hmac", &b64("s3cret"), r#""jwt_expires_at_validation_skew": 0,"#))
        .app("rs", jwt_api("rs", &up.url(), "rsa", &b64(rsa_pub), ""))
        .app("es", jwt_api("es", &up.url(), "ecdsa", &b64(ec_pub), ""))
        .app("jwks", jwt_api("jwks", &up.url(), "rsa", &format!("http://{jwks}/jwks.json"), ""))
        .policies(POLICIES)
        .start();
    let claims = |extra: Value| {
        let mut c = json!({"user_id": "alice", "sub": "ignored", "plan": "gold", "exp": now() + 600, "iat": now()});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let hs = |c: &Value, secret: &str| {
        encode(&Header::new(Algorithm::HS256), c, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };
    let rs = |c: &Value, alg: Algorithm, pem: &str| {
        let mut h = Header::new(alg);
        h.kid = Some("k1".into());
        encode(&h, c, &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()).unwrap()
    };
    let call = |path: &str, tok: &str| p.get(path, &format!("Authorization: Bearer {tok}\r\nX-Secret: hide-me\r\n"));

    // Successes: identity claim and other claims injected, auth header and X-Secret removed.
    let c = claims(json!({}));
    for (path, tok) in [
        ("/hs/get", hs(&c, "s3cret")),
        ("/rs/get", rs(&c, Algorithm::RS256, rsa_priv)),
        ("/rs/get", rs(&c, Algorithm::PS256, rsa_priv)),
        (
            "/es/get",
            encode(&Header::new(Algorithm::ES256), &c, &EncodingKey::from_ec_pem(ec_priv.as_bytes()).unwrap()).unwrap(),
        ),
        ("/jwks/get", rs(&c, Algorithm::RS256, rsa_priv)),
    ] {
        let r = call(path, &tok);
        assert_eq!(r.status, 200, "{path}: {}\n{}", r.text(), p.log_text());
        assert_eq!(upstream_header(&r, "X-User").as_deref(), Some("alice"), "{path}");
        assert_eq!(upstream_header(&r, "X-Plan").as_deref(), Some("gold"));
        assert_eq!(upstream_header(&r, "Authorization"), None);
        assert_eq!(upstream_header(&r, "X-Secret"), None);
    }

    // Failure classes, each 403 with a reason (401 when missing), never a crash.
    let none_tok = format!("{}.{}.", b64url(r#"{"alg":"none","typ":"JWT"}"#), b64url(&c.to_string()));
    let confused = hs(&c, rsa_pub); // HS256 signed with the RSA public key as secret
    let cases: Vec<(&str, String, &str)> = vec![
        ("/hs/get", none_tok.clone(), "alg none"),
        ("/rs/get", none_tok, "alg none on rsa"),
        ("/rs/get", confused, "HS/RS confusion"),
        ("/hs/get", hs(&c, "wrong"), "wrong key"),
        ("/rs/get", rs(&c, Algorithm::RS256, other_priv), "wrong RSA key"),
        ("/hs/get", "abc.def".into(), "malformed"),
        ("/hs/get", "a.b.c".into(), "garbage"),
        ("/hs/get", hs(&claims(json!({"pol": "other-api"})), "s3cret"), "policy from the claim without this API"),
        ("/hs/get", hs(&claims(json!({"pol": "nope"})), "s3cret"), "unknown policy in the claim"),
    ];
    for (path, tok, what) in cases {
        let r = call(path, &tok);
        assert_eq!(r.status, 403, "{what}: {}", r.text());
    }
    // The time claims are 401, with Tyk's words (mw_jwt.go:1331-1339, 1770-1787).
    for (claim, msg) in [
        (json!({"exp": now() - 100}), "token has expired"),
        (json!({"nbf": now() + 3600}), "token is not valid yet"),
        (json!({"iat": now() + 3600}), "token used before issued"),
    ] {
        let r = call("/hs/get", &hs(&claims(claim), "s3cret"));
        assert_eq!((r.status, error_of(&r)), (401, format!("Key not authorized: {msg}")));
    }
    // No token: 400 from Tyk's JWT middleware (mw_jwt.go:1282-1306).
    assert_eq!(p.get("/hs/get", "").status, 400);
    // The identity falls back to `sub` when the identity claim is absent.
    let r = call("/hs/get", &hs(&json!({"sub": "bob", "exp": now() + 60}), "s3cret"));
    assert_eq!(r.status, 200);
    // A repeated token is served from the cache (same answer).
    let tok = rs(&c, Algorithm::RS256, rsa_priv);
    for _ in 0..3 {
        assert_eq!(call("/rs/get", &tok).status, 200);
    }
}

fn b64url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn basic_hmac_and_chained_auth() {
    basic_hmac_chained_flow(None);
}

#[test]
fn basic_hmac_and_chained_auth_with_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    basic_hmac_chained_flow(Some(&redis));
}

fn basic_hmac_chained_flow(redis: Option<&RedisServer>) {
    let up = upstream("up");
    let p = builder()
        .section(&storage(redis))
        .app("basic", api("basic", "/basic/", &up.url(), r#""use_basic_auth": true,"#, ""))
        .app("hmac", api("hmac", "/hmac/", &up.url(), r#""enable_signature_checking": true, "hmac_allowed_clock_skew": 5000,"#, ""))
        .app(
            "chain",
            api(
                "chain",
                "/chain/",
                &up.url(),
                r#""use_standard_auth": true, "enable_signature_checking": true, "base_identity_provided_by": "auth_token",
                   "auth_configs": {"authToken": {"auth_header_name": "X-Api-Key"}},"#,
                "",
            ),
        )
        .section("[auth]\nbcrypt_cost = 4\n")
        .start();

    // Basic auth: the user is a key named by the user name; the password is stored bcrypt-hashed.
    let r = p.admin_send(
        "POST",
        "/tyk/keys/alice",
        &p.with_every_api(&json!({"basic_auth_data": {"password": "pa:ss"}})).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let shown = p.admin_get("/tyk/keys/alice").text();
    assert!(!shown.contains("pa:ss") && !shown.contains("$2"), "{shown}");
    let basic = |user: &str, pass: &str| format!("Authorization: Basic {}\r\n", b64(&format!("{user}:{pass}")));
    assert_eq!(p.get("/basic/get", &basic("alice", "pa:ss")).status, 200);
    let r = p.get("/basic/get", &basic("alice", "wrong"));
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Basic")));
    assert_eq!(p.get("/basic/get", &basic("nobody", "x")).status, 401);
    let r = p.get("/basic/get", "");
    assert_eq!((r.status, error_of(&r).as_str()), (401, "Authorization field missing"));
    assert_eq!(p.get("/basic/get", "Authorization: Basic !!!\r\n").status, 400);

    // HMAC: the key API generates the secret.
    let r = p.admin_send("POST", "/tyk/keys/create", &p.with_every_api(&json!({"hmac_enabled": true})).to_string());
    let v = r.json();
    let (key, secret) = (v["key"].as_str().unwrap().to_string(), v["hmac_string"].as_str().unwrap().to_string());
    let date = httpdate::fmt_http_date(SystemTime::now());
    let sign = |key: &str, secret: &str, date: &str, path: &str| {
        let s = format!("(request-target): get {path}\ndate: {date}");
        let mac = signature::compute(signature::Algorithm::HmacSha256, &s, secret.as_bytes());
        format!(
            "Authorization: Signature keyId=\"{key}\",algorithm=\"hmac-sha256\",headers=\"(request-target) date\",signature=\"{}\"\r\nDate: {date}\r\n",
            signature::encode_signature(&mac)
        )
    };
    let r = p.get("/hmac/get", &sign(&key, &secret, &date, "/hmac/get"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(p.get("/hmac/get", &sign(&key, "wrong", &date, "/hmac/get")).status, 403);
    assert_eq!(
        p.get("/hmac/get", &sign(&key, &secret, &date, "/hmac/other")).status,
        403,
        "signature over another path"
    );
    let old = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3600));
    assert_eq!(p.get("/hmac/get", &sign(&key, &secret, &old, "/hmac/get")).status, 403, "Date outside the skew");
    assert_eq!(p.get("/hmac/get", "").status, 401);

    // Chained: token (identity) + HMAC signature; both must pass.
    let (tkey, _) = p.create_key(&json!({"rate": 5, "per": 1}));
    let both = format!("X-Api-Key: {tkey}\r\n{}", sign(&key, &secret, &date, "/chain/get"));
    assert_eq!(p.get("/chain/get", &both).status, 200);
    assert_eq!(p.get("/chain/get", &format!("X-Api-Key: {tkey}\r\n")).status, 401, "signature missing");
    assert_eq!(p.get("/chain/get", &sign(&key, &secret, &date, "/chain/get")).status, 401, "token missing");
    let bad_sig = format!("X-Api-Key: {tkey}\r\n{}", sign(&key, "wrong", &date, "/chain/get"));
    assert_eq!(p.get("/chain/get", &bad_sig).status, 403);
}

#[test]
fn ip_rules_path_lists_and_header_transforms() {
    let up = upstream("up");
    let paths = r#", "extended_paths": {
        "ignored": [{"path": "/ip", "method_actions": {"GET": {"action": "no_action"}}}],
        "black_list": [{"path": "/admin", "method_actions": {"GET": {"action": "no_action"}}}],
        "transform_headers": [{"path": "/get", "method": "GET", "delete_headers": ["X-Drop"], "add_headers": {"X-Path": "$tyk_context.path", "X-Ip": "$tyk_context.remote_addr", "X-Plan": "$tyk_meta.plan", "X-Hdr": "$tyk_context.headers_X_Client"}}]
    }"#;
    let wl = r#", "extended_paths": {"white_list": [{"path": "/status/{code}", "method_actions": {"GET": {}}}]}"#;
    let p = builder()
        .app(
            "open",
            api(
                "open",
                "/open/",
                &up.url(),
                r#""use_keyless": true, "enable_ip_whitelisting": true, "allowed_ips": ["10.0.0.0/8"],"#,
                "",
            ),
        )
        .app(
            "deny",
            api(
                "deny",
                "/deny/",
                &up.url(),
                r#""use_keyless": true, "enable_ip_blacklisting": true, "blacklisted_ips": ["127.0.0.0/8"],"#,
                "",
            ),
        )
        .app(
            "ok",
            api(
                "ok",
                "/ok/",
                &up.url(),
                r#""use_keyless": true, "enable_ip_whitelisting": true, "allowed_ips": ["127.0.0.1"],"#,
                "",
            ),
        )
        .app(
            "keyed",
            api("keyed", "/keyed/", &up.url(), r#""use_standard_auth": true, "enable_context_vars": true,"#, paths),
        )
        .app("wl", api("wl", "/wl/", &up.url(), r#""use_keyless": true,"#, wl))
        .start();
    let r = p.get("/open/get", "");
    assert_eq!((r.status, error_of(&r).as_str()), (403, "access from this IP has been disallowed"));
    assert_eq!(p.get("/deny/get", "").status, 403);
    assert_eq!(p.get("/ok/get", "").status, 200);
    // Ignored paths skip auth; black-listed paths are refused even with a key.
    assert_eq!(p.get("/keyed/ip", "").status, 200);
    assert_eq!(p.get("/keyed/get", "").status, 401);
    let (key, _) = p.create_key(&json!({"meta_data": {"plan": "gold"}}));
    let auth = format!("Authorization: {key}\r\n");
    let r = p.get("/keyed/admin", &auth);
    assert_eq!((r.status, error_of(&r).as_str()), (403, "Requested endpoint is forbidden"));
    let r = p.get("/keyed/get", &format!("{auth}X-Drop: 1\r\nX-Client: c-7\r\n"));
    assert_eq!(r.status, 200);
    assert_eq!(upstream_header(&r, "X-Drop"), None);
    assert_eq!(upstream_header(&r, "X-Path").as_deref(), Some("/keyed/get"));
    assert_eq!(upstream_header(&r, "X-Ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(upstream_header(&r, "X-Plan").as_deref(), Some("gold"));
    assert_eq!(upstream_header(&r, "X-Hdr").as_deref(), Some("c-7"));
    assert_eq!(upstream_header(&r, "Authorization").as_deref(), Some(key.as_str()), "strip_auth_data is off");
    // White list: only listed paths and methods.
    assert_eq!(p.get("/wl/status/200", "").status, 200);
    assert_eq!(p.get("/wl/get", "").status, 403);
    let mut c = Conn::connect(p.listen).unwrap();
    assert_eq!(c.request("DELETE", "/wl/status/200", "Connection: close\r\n", b"").unwrap().status, 403);
}

/// Path lists as Tyk matches them by default (gateway/api_definition.go:940-962, 2142-2281;
/// internal/httputil/mux.go:66-101): patterns are searched anywhere in the path, `/*` is `/.*`,
/// disabled entries do nothing, `ignore_case` entries ignore case, `ignored` wins over the black
/// list, `method_actions: {}` matches no method, and only the default version's lists apply.
/// Each assertion failed before: patterns were anchored at the start, the flags were ignored
/// and every version's lists applied.
#[test]
fn path_lists_match_as_tyk_matches_them() {
    let up = upstream("up");
    let ext = |lists: &str| format!(r#", "extended_paths": {{{lists}}}"#);
    let black = ext(r#""black_list": [{"path": "/admin", "method": "GET"}, {"path": "/secret", "ignore_case": true},
                          {"path": "/both"}],
           "ignored": [{"path": "/both"}]"#);
    let keyed = ext(r#""ignored": [{"path": "/health", "disabled": true}, {"path": "/pub/*"}],
           "white_list": [{"path": "/get"}, {"path": "/health"}, {"path": "/pub"}, {"path": "/none", "method_actions": {}}]"#);
    // Not versioned, two versions: only Default's lists apply (GetSingleOrDefaultVersion).
    let two_versions = format!(
        r#"{{"name": "v", "api_id": "v", "use_standard_auth": true,
          "version_data": {{"not_versioned": true, "versions": {{
             "Default": {{"name": "Default", "use_extended_paths": true}},
             "v2": {{"name": "v2", "use_extended_paths": true, "extended_paths": {{"ignored": [{{"path": "/get"}}]}}}}}}}},
          "proxy": {{"listen_path": "/v/", "target_url": "{}", "strip_listen_path": true}}}}"#,
        up.url()
    );
    let p = builder()
        .app("open", api("open", "/api/", &up.url(), r#""use_keyless": true,"#, &black))
        .app("keyed", api("keyed", "/keyed/", &up.url(), r#""use_standard_auth": true,"#, &keyed))
        .app("v", two_versions)
        .start();
    let forbidden = |path: &str| {
        let r = p.get(path, "");
        assert_eq!((r.status, error_of(&r).as_str()), (403, "Requested endpoint is forbidden"), "{path}");
    };
    forbidden("/api/admin");
    forbidden("/api/v1/admin"); // `/admin` is found mid-path: /v1/admin does not get past it
    forbidden("/api/admin/x");
    forbidden("/api/SeCrEt");
    assert_eq!(p.get("/api/Admin", "").status, 404, "case matters without ignore_case (the upstream's 404)");
    assert_eq!(p.get("/api/both", "").status, 404, "ignored wins over the black list (the upstream's 404)");
    // A disabled ignored entry does not skip auth; `/pub/*` is `/pub/.*`, which `/pubx` is not.
    assert_eq!(p.get("/keyed/health", "").status, 401);
    assert_eq!(p.get("/keyed/pub/x", "").status, 404, "ignored: no key asked (the upstream's 404)");
    assert_eq!(p.get("/keyed/pubx", "").status, 401);
    let (key, _) = p.create_key(&json!({}));
    let auth = format!("Authorization: {key}\r\n");
    assert_eq!(p.get("/keyed/get", &auth).status, 200);
    let r = p.get("/keyed/none", &auth);
    assert_eq!((r.status, error_of(&r).as_str()), (403, "Requested endpoint is forbidden"), "method_actions {{}}");
    assert_eq!(p.get("/v/get", "").status, 401, "v2's ignored list does not apply to a non-versioned API");
}

/// A key's `allowed_urls` as Tyk checks them (gateway/mw_granular_access.go:32-123): methods
/// compared exactly and an entry without methods allows none, `/*` is `/.*`; and on an API that
/// is not versioned the key's `versions` are not checked (mw_access_rights.go:39-41).
#[test]
fn allowed_urls_and_versions_as_tyk_checks_them() {
    let up = upstream("up");
    let p = builder().app("a", api("a", "/a/", &up.url(), r#""use_standard_auth": true,"#, "")).start();
    let rights = |urls: Value, versions: Value| json!({"access_rights": {"a": {"api_id": "a", "api_name": "a", "versions": versions, "allowed_urls": urls}}});
    let (k, _) = p.create_key(&rights(json!([{"url": "/anything", "methods": []}]), json!([])));
    let r = p.get("/a/anything", &format!("Authorization: {k}\r\n"));
    assert_eq!((r.status, error_of(&r).as_str()), (403, "Access to this resource has been disallowed"));
    let (k, _) = p.create_key(&rights(json!([{"url": "/anything/*", "methods": ["GET"]}]), json!(["v1"])));
    let auth = format!("Authorization: {k}\r\n");
    assert_eq!(p.get("/a/anything/x", &auth).status, 200, "versions [v1] are not checked on a non-versioned API");
    assert_eq!(p.get("/a/anythingx", &auth).status, 403, "/anything/* is /anything/.*");
    let mut c = Conn::connect(p.listen).unwrap();
    let r = c.request("POST", "/a/anything/x", &format!("{auth}Connection: close\r\n"), b"").unwrap();
    assert_eq!(r.status, 403, "POST is not in methods");
}

/// Path rules are matched on the one canonical path, which is also what goes upstream: none of
/// the encodings a backend resolves to the listed path gets past a rule.
#[test]
fn path_rules_see_the_canonical_path() {
    let up = upstream("up");
    let black = r#", "extended_paths": {"black_list": [{"path": "/admin", "method_actions": {"GET": {"action": "no_action"}}}]}"#;
    let ignored =
        r#", "extended_paths": {"ignored": [{"path": "/public", "method_actions": {"GET": {"action": "no_action"}}}]}"#;
    let p = builder()
        .app("plng", api("plng", "/plng/", &up.url(), r#""use_keyless": true,"#, black))
        .app("keyed", api("keyed", "/api/", &up.url(), r#""use_standard_auth": true,"#, ignored))
        .start();
    assert_eq!(p.get("/plng/admin", "").status, 403);
    for bypass in [
        "/plng//admin",
        "/plng/./admin",
        "/plng/x/../admin",
        "/plng/%61dmin",
        "/plng/%2e/admin",
        "/plng/%2E%2e/plng/admin",
        "//plng/admin",
        "/plng/admin/.",
    ] {
        let r = p.get(bypass, "");
        assert_eq!((r.status, error_of(&r).as_str()), (403, "Requested endpoint is forbidden"), "{bypass}");
    }
    for ambiguous in ["/plng/%2fadmin", "/plng/%2Fadmin", "/plng/%5cadmin", "/plng/%zz"] {
        assert_eq!(p.get(ambiguous, "").status, 400, "{ambiguous}");
    }
    // An ignored prefix does not carry a request out of it without credentials.
    // (the upstream has no such page: its 404, not the proxy's 401)
    assert_eq!(p.get("/api/public/x", "").status, 404);
    for bypass in ["/api/public/../get", "/api/public/%2e%2e/get", "/api//public/../get"] {
        assert_eq!(p.get(bypass, "").status, 401, "{bypass}");
    }
    // The upstream gets the canonical path, not what the client sent.
    let r = p.get("/plng/x/..//%67et?q=%2F", "");
    assert_eq!(r.status, 200);
    assert!(r.json()["url"].as_str().unwrap().ends_with("/get?q=%2F"), "{}", r.json()["url"]);
}

#[test]
fn unsupported_auth_fields_are_reported_by_check() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("apps")).unwrap();
    std::fs::write(
        dir.path().join("apps/a.json"),
        api("a", "/a/", "http://127.0.0.1:1/", r#""use_oauth2": true, "enable_jwt": true, "jwt_signing_method": "hmac", "jwt_source": "", "base_identity_provided_by": "oidc_user","#, ""),
    )
    .unwrap();
    std::fs::write(dir.path().join("portcullis.toml"), "[apps]\ndir = \"apps\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(dir.path().join("portcullis.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for field in ["use_oauth2", "jwt_source", "base_identity_provided_by"] {
        assert!(text.contains(field), "`portcullis check` must name {field}:\n{text}");
    }
}

#[test]
fn redis_store_shared_by_two_nodes() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = upstream("up");
    let storage = format!("[storage]\nredis = \"{}\"\n", redis.url());
    let a =
        builder().app("t", api("t", "/t/", &up.url(), r#""use_standard_auth": true,"#, "")).section(&storage).start();
    let b =
        builder().app("t", api("t", "/t/", &up.url(), r#""use_standard_auth": true,"#, "")).section(&storage).start();
    let (key, hash) = a.create_key(&json!({"rate": 10, "per": 1}));
    let auth = format!("Authorization: {key}\r\n");
    assert_eq!(a.get("/t/get", &auth).status, 200);
    assert_eq!(b.get("/t/get", &auth).status, 200, "node B reads the key node A stored");
    assert!(b.admin_get("/tyk/keys").json()["keys"].as_array().unwrap().iter().any(|k| k == hash.as_str()));
    // Deleting on A reaches B's worker cache through pub/sub, well before the cache TTL (10 s).
    let t0 = Instant::now();
    assert_eq!(a.admin_send("DELETE", &format!("/tyk/keys/{key}"), "").status, 200);
    // 5 s, not the usual generous wait: half the cache TTL, so the cache expiring cannot pass for
    // the pub/sub message.
    let seen = wait::poll(Duration::from_secs(5), || (b.get("/t/get", &auth).status == 403).then(|| t0.elapsed()));
    let seen = seen.expect("node B still served a key deleted on node A after 5 s");
    eprintln!("key deleted on node A refused by node B after {:.1} ms", seen.as_secs_f64() * 1e3);
    // Redis down: cached keys keep working, unknown keys get 503 (never a crash); back up: works.
    let (key2, _) = a.create_key(&json!({}));
    let auth2 = format!("Authorization: {key2}\r\n");
    assert_eq!(a.get("/t/get", &auth2).status, 200);
    assert_eq!(a.admin_get("/hello").json()["details"]["keystore"]["status"], "pass");
    redis.stop();
    assert_eq!(a.get("/t/get", &auth2).status, 200, "cached session served while Redis is down");
    let r = a.get("/t/get", "Authorization: unknown-key\r\n");
    assert_eq!(r.status, 503, "{}", r.text());
    // /hello says so (the failing operation or the 2 s health ping notices it).
    let mut hello = a.admin_get("/hello").json();
    wait::poll(WAIT, || {
        hello = a.admin_get("/hello").json();
        (hello["details"]["keystore"]["status"] == "warn").then_some(())
    });
    assert_eq!(hello["details"]["keystore"]["status"], "warn", "{hello}");
    assert_eq!(hello["status"], "warn");
    // On the gateway listener, Tyk's readiness check fails without Redis (health_check.go:284-297)
    // and its liveness check still answers 200 (health_check.go:212-262).
    let ready = wait_for("the gateway's /ready to refuse", WAIT, || {
        let r = portcullis_tests::client::get(a.listen, "/ready").unwrap();
        (r.status == 503).then_some(r)
    });
    assert_eq!(ready.text(), "{\"status\":\"error\",\"message\":\"Redis connection not available\"}\n");
    let live = portcullis_tests::client::get(a.listen, "/hello").unwrap();
    assert_eq!((live.status, live.json()["details"]["keystore"]["status"].as_str()), (200, Some("warn")));
    let output = live.json()["details"]["keystore"]["output"].clone();
    assert_eq!(output, "redis key store unavailable", "no error text on the public listener");
    redis.restart();
    let key3 = wait_for("the key store to recover (a key created)", WAIT, || {
        let r = a.admin_send("POST", "/tyk/keys/create", &a.with_every_api(&json!({})).to_string());
        (r.status == 200).then(|| r.json()["key"].as_str().unwrap().to_string())
    });
    assert_eq!(b.get("/t/get", &format!("Authorization: {key3}\r\n")).status, 200);
    wait_for("the gateway's /ready to pass again", WAIT, || {
        (portcullis_tests::client::get(a.listen, "/ready").unwrap().status == 200).then_some(())
    });
}

#[test]
fn key_api_refuses_rates_without_a_meaning_naming_the_field() {
    let p = builder().start();
    for (session, field, value) in [
        (json!({"rate": 10, "per": 0}), "per", "0"),
        (json!({"rate": 10}), "per", "0"),
        (json!({"rate": -5, "per": 1}), "rate", "-5"),
        (json!({"rate": 1, "per": -1}), "per", "-1"),
        (
            json!({"rate": 5, "per": 1, "access_rights": {"a": {"api_id": "a", "limit": {"rate": 2, "per": 0}}}}),
            "access_rights.a.limit.per",
            "0",
        ),
    ] {
        let r = p.admin_send("POST", "/tyk/keys/create", &session.to_string());
        assert_eq!(r.status, 400, "{session}: {}", r.text());
        let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains(&format!("`{field}` = {value}")), "{session}: {msg}");
    }
    // Updating a key is checked the same way.
    let (key, _) = p.create_key(&json!({"rate": 10, "per": 1, "access_rights": {"a": {"api_id": "a"}}}));
    let r =
        p.admin_send("PUT", &format!("/tyk/keys/{key}"), &p.with_every_api(&json!({"rate": 10, "per": 0})).to_string());
    assert_eq!(r.status, 400, "{}", r.text());
    // Tyk's "no rate limit" (rate 0 or -1, per unused) is kept.
    for mut session in [json!({"rate": -1}), json!({"rate": -1, "per": -1}), json!({"rate": 0, "per": 0})] {
        session["access_rights"] = json!({"a": {"api_id": "a"}});
        let r = p.admin_send("POST", "/tyk/keys/create", &session.to_string());
        assert_eq!(r.status, 200, "{session}: {}", r.text());
    }
}

/// What refuses a key as Tyk refuses it: no access rights at all (gateway/api.go:454-459,
/// 652-670, 2260-2302; `allow_master_keys` lets them through), a policy of another org than the
/// API's (internal/policy/apply.go:133-137), and a policy that gives no API (apply.go:253-255).
/// `quota_max: 0` is no quota (session_manager.go:450). Each failed before: such keys were stored
/// and opened every API, and a zero quota refused every request.
#[test]
fn keys_are_refused_and_limited_as_tyk_does() {
    let up = upstream("up");
    let p = builder()
        .app("a", api("a", "/a/", &up.url(), r#""use_standard_auth": true, "org_id": "acme","#, ""))
        .policies(
            r#"{"theirs": {"org_id": "other", "access_rights": {"a": {}}},
                "ours": {"org_id": "acme", "access_rights": {"a": {}}},
                "master": {"org_id": "acme", "rate": 10, "per": 1}}"#,
        )
        .start();
    let r = p.admin_send("POST", "/tyk/keys/create", &json!({"rate": 10, "per": 1}).to_string());
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["message"], "Failed to create key, keys must have at least one Access Rights record set.");
    let r = p.admin_send("POST", "/tyk/keys/master-key", "{}");
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json()["message"], "Failed to create key, ensure security settings are correct.");
    let r = p.admin_send("POST", "/tyk/keys/create", &json!({"apply_policies": ["master"]}).to_string());
    assert_eq!(r.status, 400, "a policy without access rights gives none: {}", r.text());
    let (theirs, _) = p.create_key(&json!({"apply_policies": ["theirs"]}));
    let r = p.get("/a/get", &format!("Authorization: {theirs}\r\n"));
    assert_eq!(
        (r.status, error_of(&r).as_str()),
        (403, "Access to this API has been disallowed"),
        "another org's policy"
    );
    let (ours, _) = p.create_key(&json!({"apply_policies": ["ours"]}));
    assert_eq!(p.get("/a/get", &format!("Authorization: {ours}\r\n")).status, 200);
    let (zero, _) = p.create_key(&json!({"quota_max": 0, "quota_renewal_rate": 3600}));
    for _ in 0..3 {
        assert_eq!(p.get("/a/get", &format!("Authorization: {zero}\r\n")).status, 200, "quota_max 0: no quota");
    }
    let open = builder().section("[auth]\nallow_master_keys = true\n").start();
    assert_eq!(open.admin_send("POST", "/tyk/keys/create", "{}").status, 200, "allow_master_keys");
}

/// A `jwt_source` that holds no key (Tyk's own error-override tests use `"header"`) loads, as in
/// Tyk, and every token is refused as Tyk refuses it: 403 "Key not authorized" (mw_jwt.go:
/// 1361-1372); no token is still 400. Before, the definition was refused.
#[test]
fn a_jwt_source_without_a_key_loads_and_refuses_every_token() {
    let up = upstream("up");
    let top =
        r#""enable_jwt": true, "jwt_signing_method": "hmac", "jwt_source": "header", "jwt_default_policies": ["p"],"#;
    let p = builder()
        .app("j", api("j", "/j/", &up.url(), top, ""))
        .policies(r#"{"p": {"access_rights": {"j": {}}}}"#)
        .start();
    let token =
        encode(&Header::new(Algorithm::HS256), &json!({"sub": "u"}), &EncodingKey::from_secret(b"header")).unwrap();
    let r = p.get("/j/get", &format!("Authorization: Bearer {token}\r\n"));
    assert_eq!((r.status, error_of(&r).as_str()), (403, "Key not authorized"));
    assert_eq!(p.get("/j/get", "").status, 400);
}
