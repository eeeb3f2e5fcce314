//! Keys a Tyk gateway wrote to Redis carry over: `apikey-<hash>` holding Tyk's session JSON,
//! the hash chosen as Tyk chooses it (internal/crypto/hash.go:21-51, token.go:25-60,
//! gateway/auth_manager.go:171-205). The fixture is filled the way a Tyk gateway fills Redis,
//! with the names computed by an independent implementation (Python's `mmh3` 5 and `hashlib`,
//! from Tyk's `GenerateToken` text), pinned here rather than computed by Portcullis' own code.

use portcullis_tests::harness::{api, Proxy, ProxyBuilder};
use portcullis_tests::httpbin::{upstream, Httpbin};
use portcullis_tests::redis::RedisServer;
use serde_json::{json, Value};

/// `{"org":"default","id":"bb22","h":"sha256"}`: a key a Tyk gateway with
/// `hash_key_function: sha256` made; stored under the SHA-256 of the key, where Portcullis
/// looks first.
const SHA_TOKEN: (&str, &str) = (
    "eyJvcmciOiJkZWZhdWx0IiwiaWQiOiJiYjIyIiwiaCI6InNoYTI1NiJ9",
    "a4eec984d677738257fd75d74d0012c34f8c714f4bdd8cec23ab68af084a2820",
);
/// A custom key, by its name: Tyk stores it as the token of the API's org
/// (`{"org":"default","id":"my-custom-key-0001","h":"sha256"}`), under that token's SHA-256.
const CUSTOM: (&str, &str) = ("my-custom-key-0001", "86cf3d921a410ed4bf979a8600c8c2ce84bf0a6fe8f5b53ad8fcc8f4be177990");
/// `{"org":"default","id":"aa11","h":"murmur64"}`: Tyk's default-config key, under murmur64.
const M64_TOKEN: (&str, &str) = ("eyJvcmciOiJkZWZhdWx0IiwiaWQiOiJhYTExIiwiaCI6Im11cm11cjY0In0=", "d51bcad24f495eb8");
/// A legacy key (org id + hex, not a token): Tyk hashes it with murmur32 whatever its config.
const LEGACY: (&str, &str) = ("5e9d9544a1dcd60001d0ed20abcdef0123456789", "276bf1ef");
/// A murmur64 token whose session grants another API only.
const M64_OTHER_API: (&str, &str) =
    ("eyJvcmciOiJkZWZhdWx0IiwiaWQiOiJlZTU1IiwiaCI6Im11cm11cjY0In0=", "ceb499f250e421b5");

/// A session as Tyk 4 writes it: `null` for empty lists and maps, every field present.
fn tyk4_session(api_id: &str) -> String {
    format!(
        r#"{{"last_check":0,"allowance":1000,"rate":1000,"per":60,"throttle_interval":0,"throttle_retry_limit":0,
        "max_query_depth":0,"date_created":"2024-03-01T10:00:00.123456789Z","expires":0,"quota_max":-1,
        "quota_renews":1709290800,"quota_remaining":-1,"quota_renewal_rate":60,
        "access_rights":{{"{api_id}":{{"api_name":"{api_id}","api_id":"{api_id}","versions":["Default"],"allowed_urls":null,
            "restricted_types":null,"limit":null,"field_access_rights":null,"disable_introspection":false,"allowance_scope":""}}}},
        "org_id":"default","oauth_client_id":"","oauth_keys":null,"certificate":"",
        "basic_auth_data":{{"password":"","hash_type":""}},"jwt_data":{{"secret":""}},"hmac_enabled":false,
        "enable_http_signature_validation":false,"hmac_string":"","rsa_certificate_id":"","is_inactive":false,
        "apply_policy_id":"","apply_policies":null,"data_expires":0,"monitor":{{"trigger_limits":null}},
        "enable_detail_recording":false,"enable_detailed_recording":false,"meta_data":{{"tyk_user":"ann"}},"tags":null,"alias":"ann",
        "last_updated":"1709287200","id_extractor_deadline":0,"session_lifetime":0}}"#
    )
}

/// A session as Tyk 5 writes it (`omitzero`: empty fields left out).
fn tyk5_session(api_id: &str) -> String {
    format!(
        r#"{{"allowance":10,"rate":10,"per":1,"date_created":"2026-01-02T03:04:05.5+01:00","quota_max":-1,
        "access_rights":{{"{api_id}":{{"api_id":"{api_id}","versions":["Default"]}}}},"org_id":"default",
        "meta_data":{{"tyk_user":"bob"}},"last_updated":"1767319445"}}"#
    )
}

fn start(redis: &RedisServer, hashes: &str) -> (Proxy, Httpbin) {
    let up = upstream("up");
    let p = ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
        .section(&format!("[storage]\nredis = \"{}\"\n[auth]\ntyk_key_hashes = {hashes}\n", redis.url()))
        .workers(2)
        .app(
            "t",
            api("t", "/t/", &up.url(), r#""org_id": "default", "use_keyless": false, "use_standard_auth": true,"#, ""),
        )
        .app(
            "o",
            api("o", "/o/", &up.url(), r#""org_id": "default", "use_keyless": false, "use_standard_auth": true,"#, ""),
        )
        .start();
    (p, up)
}

fn status(p: &Proxy, key: &str) -> u16 {
    p.get("/t/get", &format!("Authorization: {key}\r\n")).status
}

fn fill(redis: &RedisServer) {
    for ((_, hash), session) in [
        (SHA_TOKEN, tyk4_session("t")),
        (CUSTOM, tyk5_session("t")),
        (M64_TOKEN, tyk4_session("t")),
        (LEGACY, tyk5_session("t")),
        (M64_OTHER_API, tyk4_session("o")),
    ] {
        assert_eq!(redis.command(&["SET", &format!("apikey-{hash}"), &session]), "OK");
    }
}

#[test]
fn keys_tyk_gateways_wrote_to_redis_authenticate_where_tyk_would_and_murmur_only_when_named() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    fill(&redis);

    // The default reads SHA-256 names only: Tyk's sha256 tokens and custom keys carry over;
    // murmur-hashed ones are refused (before this, every Tyk-written key was refused but a
    // sha256 token, and a Tyk 4 session did not even parse: `null` lists).
    let (p, _up) = start(&redis, r#"["sha256"]"#);
    assert_eq!(status(&p, SHA_TOKEN.0), 200, "a Tyk 4 session (nulls) under a sha256 token");
    assert_eq!(status(&p, CUSTOM.0), 200, "a custom key by its name, Tyk's token of the API's org");
    assert_eq!(status(&p, M64_TOKEN.0), 403, "murmur64 is not read unless named");
    assert_eq!(status(&p, LEGACY.0), 403, "murmur32 is not read unless named");
    drop(p);

    // Named: Tyk's default config (murmur64) and legacy keys (murmur32).
    let (p, _up) = start(&redis, r#"["murmur64", "murmur32"]"#);
    assert_eq!(status(&p, M64_TOKEN.0), 200, "murmur64 token");
    assert_eq!(status(&p, LEGACY.0), 200, "legacy key under murmur32");
    assert_eq!(status(&p, SHA_TOKEN.0), 200, "SHA-256 is always read");
    // The session read is the one that decides: this one grants API `o` only.
    assert_eq!(status(&p, M64_OTHER_API.0), 403);
    assert_eq!(p.get("/o/get", &format!("Authorization: {}\r\n", M64_OTHER_API.0)).status, 200);

    // The key API addresses Tyk's keys by Tyk's key_hash (gateway/api.go `?hashed=true`) and by
    // the key itself; it shows the hash the key is stored under.
    let r = p.admin_get(&format!("/tyk/keys/{}?hashed=true", M64_TOKEN.1));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.json()["key_hash"].as_str(), r.json()["alias"].as_str()), (Some(M64_TOKEN.1), Some("ann")));
    let r = p.admin_get(&format!("/tyk/keys/{}", LEGACY.0));
    assert_eq!((r.status, r.json()["key_hash"].as_str()), (200, Some(LEGACY.1)), "{}", r.text());
    assert_eq!(p.admin_get("/tyk/keys/abc?hashed=true").status, 400, "not a hash length Tyk or Portcullis uses");

    // Deleting by the key removes Tyk's copy and takes effect at once on every worker.
    let r = p.admin_send("DELETE", &format!("/tyk/keys/{}", LEGACY.0), "");
    assert_eq!((r.status, r.json()["action"].as_str()), (200, Some("deleted")), "{}", r.text());
    assert_eq!(redis.command(&["EXISTS", &format!("apikey-{}", LEGACY.1)]), "0");
    for _ in 0..4 {
        assert_eq!(status(&p, LEGACY.0), 403, "deleted");
    }
    // Deleting by Tyk's hash, whose key is not known here: every worker drops its cache.
    assert_eq!(status(&p, SHA_TOKEN.0), 200);
    let r = p.admin_send("DELETE", &format!("/tyk/keys/{}?hashed=true", M64_OTHER_API.1), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(p.get("/o/get", &format!("Authorization: {}\r\n", M64_OTHER_API.0)).status, 403);

    // Updating a murmur key stores it under its SHA-256 and removes the weak copy; the
    // creation date is kept as Tyk wrote it.
    let update = json!({"rate": 50, "per": 1, "quota_max": -1, "org_id": "default",
        "access_rights": {"t": {"api_id": "t", "versions": ["Default"]}}});
    let r = p.admin_send("PUT", &format!("/tyk/keys/{}", M64_TOKEN.0), &update.to_string());
    assert_eq!((r.status, r.json()["action"].as_str()), (200, Some("modified")), "{}", r.text());
    let sha = r.json()["key_hash"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);
    assert_eq!(redis.command(&["EXISTS", &format!("apikey-{}", M64_TOKEN.1)]), "0", "the murmur copy is gone");
    let stored: Value = serde_json::from_str(&redis.command(&["GET", &format!("apikey-{sha}")])).unwrap();
    assert_eq!(stored["date_created"], "2024-03-01T10:00:00.123456789Z");
    assert_eq!(stored["rate"], 50.0);
    assert_eq!(status(&p, M64_TOKEN.0), 200);
}

#[test]
fn keys_made_here_are_tyk_sha256_tokens_with_tyks_date_formats() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (p, _up) = start(&redis, r#"["sha256"]"#);
    let (key, hash) = p.create_key(&json!({"rate": 5, "per": 1, "quota_max": -1, "org_id": "acme"}));
    // Tyk's token (internal/crypto/token.go:25-41) with "h": "sha256": a Tyk gateway sharing
    // this Redis finds it under the same name (HashStr hashes a token with its own "h").
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.decode(&key).expect("a base64 token");
    let token: Value = serde_json::from_slice(&text).expect("a JSON token");
    assert_eq!((token["org"].as_str(), token["h"].as_str()), (Some("acme"), Some("sha256")), "{token}");
    let id = token["id"].as_str().unwrap();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    use sha2::Digest as _;
    let expect: String = sha2::Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hash, expect);
    let stored: Value = serde_json::from_str(&redis.command(&["GET", &format!("apikey-{hash}")])).unwrap();
    // Tyk's formats: date_created a Go time.Time (RFC 3339), last_updated Unix seconds as text
    // (user/session.go:305, 335; gateway/api.go:410). Before, both were HTTP dates.
    let created = stored["date_created"].as_str().unwrap();
    assert!(created.len() == 27 && created.as_bytes()[10] == b'T' && created.ends_with('Z'), "{created}");
    let updated = stored["last_updated"].as_str().unwrap();
    assert!(updated.len() >= 10 && updated.bytes().all(|b| b.is_ascii_digit()), "{updated}");
    assert_eq!(status(&p, &key), 200);
}

/// A key's quota counter is Tyk's own, `quota-<the name the key is stored under>`
/// (gateway/session_manager.go:457-473): a key a Tyk gateway wrote goes on from the count Tyk
/// had (before, it started over here: a migrated key got a fresh quota), a Tyk gateway sharing
/// the Redis counts the same requests, and moving the key to its SHA-256 through the key API
/// carries the count over.
#[test]
fn quotas_of_keys_tyk_wrote_go_on_from_tyks_count() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let session = r#"{"rate": 1000, "per": 1, "quota_max": 3, "quota_renewal_rate": 3600, "org_id": "default",
        "access_rights": {"t": {"api_id": "t", "versions": ["Default"]}}}"#;
    for (_, hash) in [M64_TOKEN, SHA_TOKEN] {
        assert_eq!(redis.command(&["SET", &format!("apikey-{hash}"), session]), "OK");
        // Two requests already counted by a Tyk gateway.
        assert_eq!(redis.command(&["SET", &format!("quota-{hash}"), "2", "EX", "3600"]), "OK");
    }
    let (p, _up) = start(&redis, r#"["murmur64"]"#);
    for (key, hash) in [M64_TOKEN, SHA_TOKEN] {
        let r = p.get("/t/get", &format!("Authorization: {key}\r\n"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"), "{:?}", r.headers);
        let r = p.get("/t/get", &format!("Authorization: {key}\r\n"));
        assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("Quota exceeded")), "{}", r.text());
        assert_eq!(redis.command(&["GET", &format!("quota-{hash}")]), "3", "Tyk's counter counted it");
    }

    // Moved to its SHA-256 by an update: the count comes along, the quota stays spent.
    let update = json!({"rate": 1000, "per": 1, "quota_max": 3, "quota_renewal_rate": 3600, "org_id": "default",
        "access_rights": {"t": {"api_id": "t", "versions": ["Default"]}}});
    let r = p.admin_send("PUT", &format!("/tyk/keys/{}?suppress_reset=1", M64_TOKEN.0), &update.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    let sha = r.json()["key_hash"].as_str().unwrap().to_string();
    assert_eq!(redis.command(&["GET", &format!("quota-{sha}")]), "3");
    let ttl: i64 = redis.command(&["TTL", &format!("quota-{sha}")]).parse().unwrap();
    assert!(ttl > 3000 && ttl <= 3600, "the period goes on: {ttl}");
    let r = p.get("/t/get", &format!("Authorization: {}\r\n", M64_TOKEN.0));
    assert_eq!(r.status, 403, "{}", r.text());
}
