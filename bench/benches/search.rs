//! The `search` analytics sink (tantivy): records indexed per second on one thread, and query
//! times over a large index.
//!
//! `search/index_batch` hands the sink worker-sized batches (112 records each, varied fields,
//! as `record::begin`/`finish` write them) and commits at the end of every measured run, so the
//! time per batch includes its share of the commits; criterion prints records per second.
//!
//! `search/query/*` builds (once, kept in `target/bench-files/search-<N>/`) an index of
//! `PORTCULLIS_SEARCH_RECORDS` records (default 1,000,000) spread over 24 hours, then times the
//! seed query (`response_code:500 AND tags:user-foo@bar.com`, 20 newest hits) and a 24 h date
//! histogram (1 h buckets, grouped by `api_id`, with `request_time` percentiles). It also prints
//! p50/p99 over 200 runs of each and the index's disk bytes per record.
//!
//! `cargo bench -p portcullis-bench --bench search`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use portcullis::analytics::clock::WallTime;
use portcullis::analytics::record::{self, Outcome, RequestFacts};
use portcullis::analytics::search::{self, Params, SearchIndex};
use portcullis::analytics::sink::{Sink, SinkStats};
use portcullis::config::{AnalyticsSink, SinkConfig};

/// 2026-12-01T00:00:00Z.
const DAY0_US: u64 = 1_796_083_200_000_000;
const DAY_US: u64 = 86_400_000_000;

/// Record `i` of `n` spread over a day: 20 APIs, 200 paths, 5,000 users (user 0 is
/// foo@bar.com), one in 50 a 500 (user 0's all among them), one in 20 a 404.
fn line(out: &mut Vec<u8>, i: u64, n: u64) {
    let mut rec = Vec::with_capacity(1024);
    one(&mut rec, i, n);
    out.extend_from_slice(&rec);
}

/// Record `i` as the only content of `out` (`record::begin` starts the buffer over).
fn one(out: &mut Vec<u8>, i: u64, n: u64) {
    let api = format!("api{}", i % 20);
    let path = format!("/{api}/items/{}", (i / 20) % 10);
    let raw = format!("{path}?page={}", i % 7);
    let user = (i.wrapping_mul(2_654_435_761)) % 5000;
    let tags = vec![
        if user == 0 { "user-foo@bar.com".to_string() } else { format!("user-u{user}@example.com") },
        "gold".into(),
    ];
    let key = format!("{:064x}", user.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // One in 50 a 500 (every record of user 0, i a multiple of 5,000, among them: the seed
    // query has hits, 1 in 5,000 records).
    let code = if i.is_multiple_of(50) {
        500
    } else if i % 20 == 3 {
        404
    } else {
        200
    };
    record::begin(
        out,
        RequestFacts {
            method: b"GET",
            path: path.as_bytes(),
            raw_path: raw.as_bytes(),
            host: "10.0.0.5:8080",
            content_length: 0,
            user_agent: b"Mozilla/5.0 (X11; Linux x86_64) bench/1.0",
            api_key: &key,
            api_id: &api,
            api_name: &api,
            api_version: None,
            org_id: "acme",
            ip_address: "203.0.113.9",
            tags: [&tags, &[]],
            track_path: false,
            expire_after_s: 0,
            alias: "",
            finding: None,
        },
    );
    let total_us = 200 + (i * 7919) % 50_000;
    let o = Outcome { code, total_us, upstream_us: total_us * 3 / 4, bytes_in: 180, bytes_out: 1400 };
    record::finish(out, &o, &WallTime::at(DAY0_US + i * (DAY_US / n.max(1))));
}

fn open(dir: &std::path::Path) -> (search::SearchSink, Arc<SearchIndex>) {
    let cfg = SinkConfig { sink: AnalyticsSink::Search, path: dir.to_path_buf(), ..Default::default() };
    search::open(&cfg, Arc::new(SinkStats::default())).expect("opening the index")
}

/// Batches of 112 records.
fn batches(n: u64, spread: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = Vec::new();
    for i in 0..n {
        line(&mut b, i, spread);
        if (i + 1) % 112 == 0 {
            out.push(std::mem::take(&mut b));
        }
    }
    if !b.is_empty() {
        out.push(b);
    }
    out
}

fn bench_index(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-files/search-index-rate");
    let _ = std::fs::remove_dir_all(&dir);
    let (mut sink, _index) = open(&dir);
    let batches = batches(112 * 1000, 112 * 1000);
    let bytes: usize = batches.iter().map(Vec::len).sum();
    eprintln!("search/index_batch: {} bytes per record as JSON lines", bytes / (112 * 1000));
    let mut g = c.benchmark_group("search");
    g.throughput(Throughput::Elements(112));
    g.measurement_time(Duration::from_secs(20));
    let mut next = 0;
    g.bench_function("index_batch", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                sink.send(black_box(&batches[next % batches.len()])).expect("send");
                next += 1;
            }
            sink.commit().expect("commit");
            t.elapsed()
        })
    });
    g.finish();
    drop(sink);
    let _ = std::fs::remove_dir_all(&dir);
}

fn percentiles(mut t: Vec<Duration>) -> (Duration, Duration) {
    t.sort_unstable();
    (t[t.len() / 2], t[(t.len() * 99 / 100).min(t.len() - 1)])
}

fn bench_query(c: &mut Criterion) {
    let n: u64 = std::env::var("PORTCULLIS_SEARCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/bench-files/search-{n}"));
    let (mut sink, mut index) = open(&dir);
    if index.num_docs() != n {
        drop((sink, index));
        let _ = std::fs::remove_dir_all(&dir);
        (sink, index) = open(&dir);
        let t = Instant::now();
        let mut done = 0u64;
        let mut last_commit = Instant::now();
        while done < n {
            let k = (n - done).min(112 * 1000);
            // Records `done..done + k` of `n`.
            let mut b = Vec::new();
            for i in done..done + k {
                line(&mut b, i, n);
                if (i + 1) % 112 == 0 || i + 1 == done + k {
                    sink.send(&b).expect("send");
                    b.clear();
                }
            }
            done += k;
            if last_commit.elapsed() >= Duration::from_secs(1) {
                sink.commit().expect("commit");
                last_commit = Instant::now();
            }
        }
        sink.commit().expect("commit");
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "search: built {n} records in {secs:.1} s ({:.0} records/s, records made and indexed)",
            n as f64 / secs
        );
    }
    let bytes: u64 =
        std::fs::read_dir(&dir).expect("index dir").filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    eprintln!("search: {n} records, {bytes} bytes on disk, {:.1} bytes per record", bytes as f64 / n as f64);

    let seed = Params { q: Some("response_code:500 AND tags:user-foo@bar.com".into()), ..Default::default() };
    let day = Params {
        from: Some("2026-12-01T00:00:00Z".into()),
        to: Some("2026-12-01T23:59:59Z".into()),
        interval: Some("1h".into()),
        group_by: Some("api_id".into()),
        ..Default::default()
    };
    let total: serde_json::Value = serde_json::from_str(&index.search(&seed).expect("seed")).expect("json");
    eprintln!("search: the seed query matches {} of {n}", total["total"]);
    for (name, run) in [
        ("seed query", Box::new(|| index.search(&seed).map(|s| s.len())) as Box<dyn Fn() -> _>),
        ("24 h histogram by api_id", Box::new(|| index.aggregate(&day).map(|v| v.to_string().len()))),
    ] {
        let times: Vec<Duration> = (0..200)
            .map(|_| {
                let t = Instant::now();
                black_box(run().expect("query"));
                t.elapsed()
            })
            .collect();
        let (p50, p99) = percentiles(times);
        eprintln!("search: {name} over {n} records: p50 {p50:?}, p99 {p99:?} (200 runs)");
    }
    let mut g = c.benchmark_group("search/query");
    g.sample_size(30);
    g.bench_function("seed", |b| b.iter(|| index.search(black_box(&seed)).expect("seed")));
    g.bench_function("histogram_24h_by_api", |b| b.iter(|| index.aggregate(black_box(&day)).expect("aggregate")));
    g.finish();
}

criterion_group!(benches, bench_index, bench_query);
criterion_main!(benches);
