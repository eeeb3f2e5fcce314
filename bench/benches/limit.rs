//! Limiter decision cost: one limit (a key's rate), four limits (key, endpoint, IP, API), and a
//! gossip round applying 100 deltas, on one worker's `Limiter`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis::limit::{limit_key, Delta, Limit, Limiter, LimiterConfig, Rate};

fn bench(c: &mut Criterion) {
    let ip: std::net::IpAddr = "203.0.113.9".parse().expect("ip");
    // High rates so every decision admits (the common case).
    let rate = Rate::new(1e9, 1.0, 1.0).expect("rate");
    let one = [Limit { key: limit_key(&[b"auth_token", b"0123456789abcdef"]), rate }];
    let four = [
        one[0],
        Limit { key: limit_key(&[b"ep", b"api", b"0", b"id"]), rate },
        Limit { key: limit_key(&[b"ip", b"api", b"203.0.113.9"]), rate },
        Limit { key: limit_key(&[b"api", b"api"]), rate },
    ];
    let mut l = Limiter::new(LimiterConfig { max_keys: 100_000 }, 0.0);
    // The clock stays at 0: the rate is high enough that no decision needs a refill.
    c.bench_function("limit/decision_1_limit", |b| b.iter(|| l.check(black_box(&one), 0, ip).expect("admit")));
    c.bench_function("limit/decision_4_limits", |b| b.iter(|| l.check(black_box(&four), 0, ip).expect("admit")));
    c.bench_function("limit/key_hash", |b| {
        b.iter(|| limit_key(&[b"auth_token", black_box(b"0123456789abcdef0123456789abcdef")]))
    });
    let deltas: Vec<Delta> = (0..100u64)
        .map(|i| Delta { key: limit_key(&[b"k", &i.to_le_bytes()]), rate, admitted: 3, demand: 4 })
        .collect();
    c.bench_function("limit/gossip_apply_100_deltas", |b| b.iter(|| l.apply(black_box(&deltas), false)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
