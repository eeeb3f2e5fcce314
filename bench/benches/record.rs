//! Request record cost on the worker: writing one record (both halves, with a key hash and two
//! tags) into a reused buffer, and the same plus appending it to the worker's batch (the batch
//! handed to a pump thread that drains it, so the queue never fills). And on the analytics
//! thread: appending one batch (64.5 KiB, as a worker hands it over) to the records file through the pump's `FileSink` (disk
//! blocks reserved ahead), against a plain `File` append, both rotating (deleting) the file every
//! 64 MiB as the load benchmark's configuration does. The file goes to `target/bench-files/`, on
//! the file system the records would use; on tmpfs the two come out the same. And on a sink's
//! thread: a record read back from its line, encoded for Tyk's pump, and a batch pushed by the
//! `redis` sink.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis::analytics::clock::WallTime;
use portcullis::analytics::redis_sink::RedisSink;
use portcullis::analytics::sink::file::FileSink;
use portcullis::analytics::sink::{Sink, SinkStats};
use portcullis::analytics::{channels, record, Outcome, Recorder, RequestFacts};
use portcullis::analytics::{decode, tyk_msgpack};
use std::io::Write;

fn facts<'a>(tags: &'a [String]) -> RequestFacts<'a> {
    RequestFacts {
        method: b"GET",
        path: b"/gw/get",
        raw_path: b"/gw/get?page=2",
        host: "127.0.0.1:18181",
        content_length: 0,
        user_agent: b"wrk/4.2.0 (bench)",
        api_key: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        api_id: "gw",
        api_name: "gw",
        api_version: None,
        org_id: "acme",
        ip_address: "127.0.0.1",
        tags: [tags, &[]],
        track_path: false,
        expire_after_s: 0,
        alias: "",
        finding: None,
    }
}

fn bench(c: &mut Criterion) {
    let tags = vec!["x-user-bench-user".to_string(), "gold".to_string()];
    let o = Outcome { code: 200, total_us: 312, upstream_us: 201, bytes_in: 180, bytes_out: 140 };
    let now = WallTime::at(1_796_107_285_123_456);
    let mut buf = Vec::with_capacity(1024);
    c.bench_function("record/encode", |b| {
        b.iter(|| {
            record::begin(&mut buf, facts(black_box(&tags)));
            record::finish(&mut buf, black_box(&o), &now);
            black_box(buf.len())
        })
    });

    let (feed, ends) = channels(1, 64);
    let drain = std::thread::spawn(move || {
        while let Ok(b) = ends.batches.recv() {
            let mut bytes = b.bytes;
            bytes.clear();
            let _ = ends.spare.try_send(bytes);
        }
    });
    let mut rec = Recorder::new(feed);
    c.bench_function("record/encode_and_batch", |b| {
        b.iter(|| {
            record::begin(&mut buf, facts(black_box(&tags)));
            rec.push(&mut buf, black_box(&o), std::time::Instant::now());
        })
    });
    drop(rec);
    let _ = drain.join();

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-files");
    std::fs::create_dir_all(&dir).expect("creating target/bench-files");
    // What a worker hands over: whole 590-byte records until the batch holds 64 KiB (112 records,
    // 66,080 bytes), so successive writes do not start on page boundaries. (Writes of exactly
    // 64 KiB, page-aligned, cost the file system far less and flatter both variants.)
    let batch = vec![b'x'; 112 * 590];
    const ROTATE: u64 = 64 << 20;
    let path = dir.join("records-reserved.jsonl");
    let mut sink = FileSink::open(&path, ROTATE, 0).expect("opening the records file");
    let stats = std::sync::atomic::AtomicU64::new(0);
    c.bench_function("record/file_append_batch_reserved", |b| {
        b.iter(|| sink.write(black_box(&batch), &stats).expect("appending"))
    });
    drop(sink);
    let _ = std::fs::remove_file(&path);

    let path = dir.join("records-plain.jsonl");
    let open = || std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("opening");
    let (mut file, mut size) = (open(), 0u64);
    c.bench_function("record/file_append_batch_plain", |b| {
        b.iter(|| {
            if size + batch.len() as u64 > ROTATE {
                std::fs::remove_file(&path).expect("rotating");
                (file, size) = (open(), 0);
            }
            file.write_all(black_box(&batch)).expect("appending");
            size += batch.len() as u64;
        })
    });
    drop(file);
    let _ = std::fs::remove_file(&path);

    // On a sink's thread: a record read back from its line, and encoded for Tyk's pump.
    record::begin(&mut buf, facts(&tags));
    record::finish(&mut buf, &o, &now);
    let line = buf.clone();
    c.bench_function("record/decode", |b| b.iter(|| decode::record(black_box(&line)).map(|r| r.response_code)));
    let mut mp = Vec::with_capacity(1024);
    c.bench_function("record/decode_and_tyk_msgpack", |b| {
        b.iter(|| {
            mp.clear();
            let r = decode::record(black_box(&line)).expect("a record");
            tyk_msgpack::encode(&mut mp, &r, 0);
            mp.len()
        })
    });
    redis_sink(c, &line);
}

/// The `redis` sink's throughput: a worker's batch (records as above, 64 KiB) decoded, encoded
/// and pushed in one `RPUSH` to a local redis-server (skipped without one), the list trimmed
/// now and then so it does not grow.
fn redis_sink(c: &mut Criterion, line: &[u8]) {
    let port = 21_000 + (std::process::id() % 1000) as u16;
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("record/redis_sink_batch skipped: no redis-server");
        return;
    };
    let url = format!("redis://127.0.0.1:{port}/");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let batch: Vec<u8> = line.repeat(64 * 1024 / line.len() + 1);
    let records = batch.len() / line.len();
    eprintln!("record/redis_sink_batch: {records} records, {} bytes per batch", batch.len());
    let stats = std::sync::Arc::new(SinkStats::default());
    let mut sink = RedisSink::new(&url, "bench-analytics", false, 0, stats).expect("sink");
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut con = client.get_connection().expect("connection");
    let mut n = 0u64;
    c.bench_function("record/redis_sink_batch", |b| {
        b.iter(|| {
            sink.send(black_box(&batch)).expect("RPUSH");
            n += 1;
            if n.is_multiple_of(100) {
                let _: () = redis::cmd("DEL").arg("bench-analytics").query(&mut con).expect("DEL");
            }
        })
    });
    let _ = child.kill();
    let _ = child.wait();
}

criterion_group!(benches, bench);
criterion_main!(benches);
