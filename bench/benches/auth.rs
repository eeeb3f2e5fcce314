//! Auth hot path: JWT verification (HS256, RS256 cold), a verified-token cache hit, a cached key
//! lookup through `auth::decide`, and a whole gateway request head (JWT from the cache, header
//! injected from a claim, auth header stripped) next to the keyless head of `head.rs`.

use std::rc::Rc;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use portcullis::auth::jwt::{self, Family, KeySet, Skew, VerifiedCache};
use portcullis::auth::token::CredentialSource;
use portcullis::auth::tyk_key::{self, TykHash};
use portcullis::auth::{decide, hash_key, ApiAuth, DecideCtx, Decision, Policies, RequestView, Session, WorkerAuth};
use portcullis_bench::{prepare, snapshot_from, Prepared, Worker};

const NOW: u64 = 1_800_000_000;
const RSA_PRIV: &str = include_str!("../../tests/fixtures/rsa_private.pem");
const RSA_PUB: &str = include_str!("../../tests/fixtures/rsa_public.pem");

fn claims() -> serde_json::Value {
    serde_json::json!({"sub": "foo@bar.com", "name": "Bench", "iat": NOW - 10, "exp": NOW + 3600})
}

fn bench(c: &mut Criterion) {
    let hs_keys = KeySet::from_source(Family::Hmac, "Zm9v").expect("hmac key");
    let hs = encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(b"foo")).expect("sign");
    c.bench_function("jwt/hs256_verify", |b| {
        b.iter(|| jwt::verify(black_box(&hs), Family::Hmac, &hs_keys, Skew::default(), NOW).expect("valid"))
    });
    let rs_keys = KeySet::from_source(Family::Rsa, RSA_PUB).expect("rsa key");
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &claims(),
        &EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).expect("pem"),
    )
    .expect("sign");
    c.bench_function("jwt/rs256_verify_cold", |b| {
        b.iter(|| jwt::verify(black_box(&rs), Family::Rsa, &rs_keys, Skew::default(), NOW).expect("valid"))
    });
    let mut cache = VerifiedCache::new(10_000, 300);
    let verified = Rc::new(jwt::verify(&rs, Family::Rsa, &rs_keys, Skew::default(), NOW).expect("valid"));
    cache.insert("1:0", &rs, verified, NOW);
    c.bench_function("jwt/rs256_cached", |b| b.iter(|| cache.get("1:0", black_box(&rs), NOW).expect("hit")));

    // A cached key through the whole decision (token found, session hit, grant reused).
    let auth = ApiAuth { token: Some(CredentialSource::default()), ..Default::default() };
    let mut w = WorkerAuth::detached(Default::default());
    let key = "org1c0ffee0123456789abcdef01234567";
    w.insert_session(hash_key(key), Some(Arc::new(Session { rate: 100.0, per: 1.0, ..Default::default() })));
    let policies = Policies::default();
    let value = format!("Bearer {key}");
    let headers = portcullis_http1::HeaderList::new(&[("Authorization", value.as_bytes())]);
    c.bench_function("auth/key_lookup_cached", |b| {
        b.iter(|| {
            let view = RequestView {
                method: "GET",
                path: "/a/get",
                rel_path: "/get",
                query: "",
                headers: black_box(headers.view()),
                client_ip: [127, 0, 0, 1].into(),
            };
            let cx = DecideCtx {
                api_id: "a",
                api_org: "",
                api_index: 0,
                generation: 1,
                policies: &policies,
                now: NOW,
                tyk_key_hashes: &[TykHash::Sha256],
            };
            assert!(matches!(decide(&auth, &view, cx, &mut w), Decision::Allow(_)));
        })
    });

    // A session cache miss: where else the key may be stored (`[auth] tyk_key_hashes`), worked
    // out on the worker before it asks the control plane. Default (SHA-256 of the custom-key
    // token) and a migration (murmur64 and murmur32 as well), for a Tyk token key.
    let token = tyk_key::generate_token("default", "c0ffee0123456789abcdef0123456789", TykHash::Murmur64);
    c.bench_function("auth/tyk_addresses_default", |b| {
        b.iter(|| tyk_key::tyk_addresses(black_box(key), "default", &[TykHash::Sha256]))
    });
    c.bench_function("auth/tyk_addresses_murmur", |b| {
        b.iter(|| tyk_key::tyk_addresses(black_box(&token), "default", &[TykHash::Murmur64, TykHash::Murmur32]))
    });

    // The seed's JWT API: request head with a cached HS256 token, claim -> header, strip, and
    // its policy's rate limit (raised from 100/s so millions of iterations are all admitted).
    let def = include_str!("../../apps/httpbin-jwt.json").to_string();
    let policies = include_str!("../../apps/policies.json").replace("\"rate\": 100,", "\"rate\": 1000000000,");
    assert!(policies.contains("1000000000"), "apps/policies.json changed shape");
    let snap = snapshot_from(&[("httpbin-jwt", def)], &policies);
    let req = format!(
        "GET /httpbin-jwt/get?foo=bar HTTP/1.1\r\nHost: gw.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\nAuthorization: Bearer {hs}\r\n\r\n"
    );
    let mut w = Worker::default();
    let mut out = Vec::with_capacity(1024);
    c.bench_function("request_head/gateway_jwt_cached", |b| {
        b.iter(|| {
            out.clear();
            let r = prepare(&snap, &mut w, black_box(req.as_bytes()), NOW, &mut out);
            assert!(matches!(r, Prepared::Routed(_)), "{r:?}");
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
