//! Route lookup cost with 10 and 1,000 APIs: hits at depth 3, a domain hit, and a miss.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis_bench::snapshot_with_apis;

fn bench(c: &mut Criterion) {
    for n in [10usize, 1000] {
        let snap = snapshot_with_apis(n);
        let mut g = c.benchmark_group(format!("route_lookup/{n}_apis"));
        let path = format!("/api{}/v1/users/42", n / 2);
        g.bench_function("path_hit", |b| {
            b.iter(|| snap.router.lookup(black_box(Some(b"gw.example.com")), black_box(&path)))
        });
        let host = format!("Host{}.example.com:8080", n - 1);
        let dpath = format!("/api{}/v1/x", n - 1);
        g.bench_function("domain_hit", |b| {
            b.iter(|| snap.router.lookup(black_box(Some(host.as_bytes())), black_box(&dpath)))
        });
        g.bench_function("miss", |b| b.iter(|| snap.router.lookup(black_box(None), black_box("/nothing/here/at/all"))));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
