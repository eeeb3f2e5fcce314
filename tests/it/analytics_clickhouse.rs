//! Integration tests of the `clickhouse` analytics sink: the real binary, the in-process httpbin
//! upstream, and a real `clickhouse-server` (Debian's 18.16 in CI) that each test starts on a free
//! port with its own data directory. Every wait is bounded in time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_tests::clickhouse::ClickHouseServer;
use portcullis_tests::client::Conn;
use portcullis_tests::harness::{keyless_api, Proxy, ProxyBuilder};
use portcullis_tests::httpbin::upstream;
use portcullis_tests::{metrics, wait_for, wait_until, WAIT};

/// Records that went through the spool take longer than [`WAIT`]: the sink's backoff after an
/// outage is up to 5 s before the replay starts.
const REPLAY_WAIT: Duration = Duration::from_secs(60);

/// A proxy with the keyless API `open` whose records go to `ch` (table `it.records`) and to the
/// JSON lines file.
fn proxy(ch: &ClickHouseServer, up_url: &str) -> Proxy {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
        .app("open", keyless_api("open", "/open/", up_url, "", r#""tag_headers": ["X-Team"],"#))
        .section(&format!(
            "[[analytics.sinks]]\nsink = \"clickhouse\"\nurl = \"{}\"\ndatabase = \"it\"\ntable = \"records\"\n\n\
             [[analytics.sinks]]\nsink = \"file\"\n",
            ch.url()
        ))
        .start()
}

/// Rows in `it.records` (0 while the table is not there yet or the server is down).
fn rows(ch: &ClickHouseServer) -> u64 {
    ch.try_query("SELECT count() FROM it.records").ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

fn file_records(p: &Proxy) -> usize {
    std::fs::read_to_string(p.dir.path().join("analytics/records.jsonl")).unwrap_or_default().lines().count()
}

#[test]
fn records_arrive_as_rows_with_their_fields() {
    let Some(ch) = ClickHouseServer::start() else { return };
    let up = upstream("up");
    let p = proxy(&ch, &up.url());
    for i in 0..20 {
        assert_eq!(p.get(&format!("/open/get?i={i}"), "X-Team: blue\r\n").status, 200);
    }
    assert_eq!(p.get("/open/status/500", "").status, 500);
    wait_until("21 rows in ClickHouse", WAIT, || rows(&ch) >= 21);
    assert_eq!(rows(&ch), 21);
    let q = |sql: &str| ch.query(sql).trim().to_string();
    assert_eq!(
        q("SELECT api_id, api_name, method, path, response_code, tags, count() FROM it.records \
           WHERE response_code = 200 GROUP BY api_id, api_name, method, path, response_code, tags"),
        "open\topen\tGET\t/open/get\t200\t['x-team-blue']\t20"
    );
    assert_eq!(q("SELECT uniqExact(raw_path) FROM it.records WHERE raw_path LIKE '/open/get?i=%'"), "20");
    assert_eq!(
        q("SELECT path, tags, api_version FROM it.records WHERE response_code = 500"),
        "/open/status/500\t[]\tNon Versioned"
    );
    // The instant: the second and the microseconds agree, and it is now.
    assert_eq!(q("SELECT countIf(intDiv(timestamp_us, 1000000) != toUInt64(timestamp)) FROM it.records"), "0");
    assert_eq!(q("SELECT countIf(abs(toInt64(timestamp) - toInt64(now())) > 600) FROM it.records"), "0");
    assert_eq!(q("SELECT min(request_time_us) > 0, min(bytes_out) > 100 FROM it.records"), "1\t1");
    // The table the sink made.
    let create = q("SHOW CREATE TABLE it.records");
    assert!(create.contains("MergeTree") && create.contains("PARTITION BY toDate(timestamp)"), "{create}");
    assert!(create.contains("ORDER BY (api_id, timestamp)"), "{create}");
    // The file sink got the same records.
    wait_until("21 records in the file", WAIT, || file_records(&p) >= 21);
    let m = p.metrics();
    assert_eq!(
        metrics::value(&m, "portcullis_analytics_records_written_total{sink=\"clickhouse\"}"),
        Some(21.0),
        "{m}"
    );
    assert_eq!(metrics::sum(&m, "portcullis_analytics_sink_dropped_total{sink=\"clickhouse\"}"), 0.0, "{m}");
}

/// ClickHouse stopped for 10 s under load, then started again: every request's record is in the
/// table exactly once (each request carries its own number in its query), through the spool; the
/// file sink went on meanwhile.
#[test]
fn an_outage_under_load_loses_and_duplicates_nothing() {
    let Some(mut ch) = ClickHouseServer::start() else { return };
    let up = upstream("up");
    let p = proxy(&ch, &up.url());
    let listen = p.listen;

    // The load: one keep-alive connection, about 1,000 requests a second, until told to stop,
    // at most 40,000 requests or 60 s.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut c = Conn::connect(listen).expect("connect");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 40_000 && t0.elapsed() < Duration::from_secs(60) {
                let r = c.request("GET", &format!("/open/get?n={i}"), "", b"").expect("request");
                assert_eq!(r.status, 200);
                i += 1;
                sent.store(i, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    wait_until("rows arriving before the outage", WAIT, || rows(&ch) >= 200);
    ch.stop();
    let at_stop = sent.load(Ordering::Relaxed);
    let file_at_stop = file_records(&p);
    std::thread::sleep(Duration::from_secs(10));
    let during = sent.load(Ordering::Relaxed) - at_stop;
    assert!(during >= 1000, "too little load during the outage: {during} requests");
    // The file sink is not held back by the dead one.
    assert!(file_records(&p) > file_at_stop + 500, "the file sink stalled: {} then {}", file_at_stop, file_records(&p));
    let m = p.metrics();
    assert!(metrics::value(&m, "portcullis_analytics_spool_records{sink=\"clickhouse\"}").unwrap_or(0.0) > 0.0, "{m}");
    ch.start_again();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");
    let n = sent.load(Ordering::Relaxed);

    let got = wait_for(&format!("{n} rows after the outage"), REPLAY_WAIT, || {
        let r = rows(&ch);
        (r >= n).then_some(r)
    });
    // Let a late duplicate show itself, had there been one.
    wait_until("the clickhouse spool to empty", WAIT, || {
        p.metric("portcullis_analytics_spool_records{sink=\"clickhouse\"}") == Some(0.0)
    });
    let got = got.max(rows(&ch));
    let distinct: u64 = ch
        .query("SELECT uniqExact(raw_path) FROM it.records WHERE raw_path LIKE '/open/get?n=%'")
        .trim()
        .parse()
        .unwrap();
    let range = ch
        .query("SELECT min(toUInt64(substring(raw_path, 13))), max(toUInt64(substring(raw_path, 13))) FROM it.records");
    assert_eq!((got, distinct), (n, n), "rows, distinct requests; sent {n}; n range {range}");
    assert_eq!(range.trim(), format!("0\t{}", n - 1));

    let m = p.metrics();
    assert!(metrics::value(&m, "portcullis_analytics_spooled_total{sink=\"clickhouse\"}").unwrap_or(0.0) > 0.0, "{m}");
    assert!(
        metrics::value(&m, "portcullis_analytics_sink_errors_total{sink=\"clickhouse\"}").unwrap_or(0.0) > 0.0,
        "{m}"
    );
    assert_eq!(metrics::sum(&m, "portcullis_analytics_sink_dropped_total{sink=\"clickhouse\"}"), 0.0, "{m}");
    assert_eq!(
        metrics::value(&m, "portcullis_analytics_records_written_total{sink=\"clickhouse\"}"),
        Some(n as f64),
        "{m}"
    );
    assert_eq!(metrics::value(&m, "portcullis_analytics_dropped_total{reason=\"queue_full\"}"), Some(0.0), "{m}");
    assert_eq!(metrics::value(&m, "portcullis_analytics_spooled_total{sink=\"file\"}"), Some(0.0), "{m}");
    wait_until("every record in the file", WAIT, || file_records(&p) as u64 >= n);
}
