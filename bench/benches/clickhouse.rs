//! ClickHouse sink throughput: records per second through `ClickHouseSink::send` (decode each
//! JSON line, encode its JSONEachRow row, one `INSERT` over HTTP per batch) into a local
//! `clickhouse-server` that the bench starts on a free port with its own data directory
//! (`portcullis_tests::clickhouse`). Batches are what a worker hands over: whole records until
//! they hold 64 KiB. A timed loop, not criterion: one insert is milliseconds of the server's work,
//! and what matters is the rate the sink's thread sustains. The server shares the machine's CPUs.
//!
//! `cargo bench -p portcullis-bench --bench clickhouse` (skips when clickhouse-server is missing).

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::analytics::clickhouse::ClickHouseSink;
use portcullis::analytics::clock::WallTime;
use portcullis::analytics::sink::{Sink, SinkStats};
use portcullis::analytics::{record, Outcome, RequestFacts, BATCH_BYTES};
use portcullis::config::{AnalyticsSink, SinkConfig};
use portcullis_tests::clickhouse::ClickHouseServer;

/// Batches sent before the clock starts (table creation, connection, the server's caches).
const WARM_UP: usize = 20;
/// The timed run: this many batches or this long, whichever comes first.
const BATCHES: usize = 3_000;
const RUN: Duration = Duration::from_secs(20);

/// A worker's batch: records of the gateway scenario's shape (a key hash, two tags) until it
/// holds [`BATCH_BYTES`], starting at `first` (each record its own path and microsecond).
fn batch(first: u64, t0_us: u64) -> (Vec<u8>, u64) {
    let tags = vec!["x-user-bench-user".to_string(), "gold".to_string()];
    let o = Outcome { code: 200, total_us: 312, upstream_us: 201, bytes_in: 180, bytes_out: 140 };
    let mut out = Vec::with_capacity(BATCH_BYTES + 4096);
    let mut rec = Vec::with_capacity(1024);
    let mut n = 0;
    while out.len() < BATCH_BYTES {
        let i = first + n;
        let raw = format!("/gw/get?page={i}");
        record::begin(
            &mut rec,
            RequestFacts {
                method: b"GET",
                path: b"/gw/get",
                raw_path: raw.as_bytes(),
                host: "127.0.0.1:18181",
                content_length: 0,
                user_agent: b"wrk/4.2.0 (bench)",
                api_key: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                api_id: if i.is_multiple_of(4) { "gw" } else { "other" },
                api_name: "gw",
                api_version: None,
                org_id: "acme",
                ip_address: "127.0.0.1",
                tags: [&tags, &[]],
                track_path: false,
                expire_after_s: 0,
                alias: "",
                finding: None,
            },
        );
        record::finish(&mut rec, &o, &WallTime::at(t0_us + i));
        out.extend_from_slice(&rec);
        n += 1;
    }
    (out, n)
}

fn main() {
    let Some(ch) = ClickHouseServer::start() else { return };
    let cfg = SinkConfig {
        sink: AnalyticsSink::Clickhouse,
        url: ch.url(),
        database: "bench".into(),
        table: "records".into(),
        ..Default::default()
    };
    let mut sink = ClickHouseSink::new(&cfg, Arc::new(SinkStats::default())).expect("sink");
    let t0_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_micros() as u64;
    let mut next = 0;
    let mut make = || {
        let (b, n) = batch(next, t0_us);
        next += n;
        (b, n)
    };
    for _ in 0..WARM_UP {
        let (b, _) = make();
        sink.send(&b).expect("warm-up insert");
    }
    // Made ahead, so the timed loop is the sink's work only.
    let batches: Vec<(Vec<u8>, u64)> = (0..BATCHES).map(|_| make()).collect();
    timed("insert", &mut sink, &ch, &batches);
    // As the sink's thread sends when batches wait in its queue or spool: joined up to
    // `join_bytes` (2 MiB) per insert.
    let join = sink.join_bytes();
    let mut joined: Vec<(Vec<u8>, u64)> = Vec::new();
    for _ in 0..BATCHES {
        let (b, n) = make();
        match joined.last_mut() {
            Some((j, k)) if j.len() + b.len() <= join => {
                j.extend_from_slice(&b);
                *k += n;
            }
            _ => joined.push((b, n)),
        }
    }
    timed("insert_joined", &mut sink, &ch, &joined);
}

/// Sends `batches` for at most [`RUN`] and prints the rate.
fn timed(label: &str, sink: &mut ClickHouseSink, ch: &ClickHouseServer, batches: &[(Vec<u8>, u64)]) {
    let rows0: u64 = ch.query("SELECT count() FROM bench.records").trim().parse().expect("count");
    let (mut records, mut bytes, mut sent) = (0u64, 0u64, 0usize);
    let cpu0 = thread_cpu_ns();
    let start = Instant::now();
    for (b, n) in batches {
        sink.send(b).expect("insert");
        records += n;
        bytes += b.len() as u64;
        sent += 1;
        if start.elapsed() >= RUN {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_us = thread_cpu_ns().saturating_sub(cpu0) as f64 / 1000.0;
    let rows: u64 = ch.query("SELECT count() FROM bench.records").trim().parse().expect("count");
    let parts = ch.query("SELECT count() FROM system.parts WHERE database = 'bench' AND active");
    assert_eq!(rows - rows0, records, "every record inserted once");
    println!(
        "clickhouse/{label}: {sent} inserts of {} records ({:.1} KiB of JSON lines) in {secs:.2} s: \
         {:.0} records/s, {:.1} MiB/s of records, {:.2} ms per insert, of it {:.0} us of the sink \
         thread's CPU; {rows} rows in the table, {} active parts",
        records / sent as u64,
        bytes as f64 / sent as f64 / 1024.0,
        records as f64 / secs,
        bytes as f64 / secs / (1 << 20) as f64,
        secs * 1000.0 / sent as f64,
        cpu_us / sent as f64,
        parts.trim(),
    );
}

/// CPU time of the calling thread, ns (`/proc/thread-self/schedstat`, first field); 0 if unreadable.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}
