//! The `redis` sink against a real redis-server: records consumed the way tyk-pump consumes
//! them (read and delete the list in one transaction), decoded by an independent msgpack
//! implementation (Python's `msgpack`, Debian's python3-msgpack) and checked against tyk-pump's
//! AnalyticsRecord (tests/fixtures/tyk_analytics_record.json); and an outage of the server under
//! load, after which every record has arrived exactly once. Every wait is bounded in time.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portcullis_tests::client::Conn;
use portcullis_tests::harness::{keyless_api, Proxy, ProxyBuilder};
use portcullis_tests::httpbin::upstream;
use portcullis_tests::redis::RedisServer;
use portcullis_tests::{in_ci, wait_for};
use serde_json::Value;

const LIST: &str = "analytics-tyk-system-analytics";

fn builder() -> ProxyBuilder {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn start_proxy(redis: &RedisServer, up: &str, extra: &str) -> Proxy {
    builder()
        .app("open", keyless_api("open", "/open/", up, "", ""))
        .section(&format!(
            "[analytics]\n\
             [[analytics.sinks]]\nsink = \"file\"\n\
             [[analytics.sinks]]\nsink = \"redis\"\nurl = \"{}\"\n{extra}",
            redis.url()
        ))
        .start()
}

/// tyk-pump's read: `MULTI; LRANGE <list> 0 -1; DEL <list>; EXEC` (pumps/redis... storage's
/// `GetAndDeleteSet`). `None` while the server is unreachable.
fn pump(redis: &RedisServer, list: &str) -> Option<Vec<Vec<u8>>> {
    let client = redis::Client::open(redis.url()).ok()?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1)).ok()?;
    let (items, _): (Vec<Vec<u8>>, i64) =
        redis::pipe().atomic().cmd("LRANGE").arg(list).arg(0).arg(-1).cmd("DEL").arg(list).query(&mut con).ok()?;
    Some(items)
}

/// The Python that decodes: each record's type tree (what Go would decode it into) and values.
const DECODE: &str = r#"
import json, struct, sys, msgpack
data = open(sys.argv[1], 'rb').read()
out, i = [], 0
def shape(v):
    if v is None: return 'nil'
    if isinstance(v, bool): return 'bool'
    if isinstance(v, int): return 'int'
    if isinstance(v, float): return 'float'
    if isinstance(v, str): return 'str'
    if isinstance(v, bytes): return 'bin'
    if isinstance(v, list): return ['list'] + [shape(x) for x in v]
    if isinstance(v, dict): return [[k, shape(x)] for k, x in v.items()]
    return repr(type(v))
while i < len(data):
    (n,) = struct.unpack('>I', data[i:i+4]); i += 4
    rec = msgpack.unpackb(data[i:i+n], raw=False); i += n
    out.append({'shape': shape(rec), 'values': rec})
print(json.dumps(out))
"#;

/// Decodes records with Python's msgpack; `None` (skip) where it is missing outside CI.
fn python_decode(items: &[Vec<u8>]) -> Option<Vec<Value>> {
    let python = "/usr/bin/python3";
    let probe = Command::new(python).args(["-c", "import msgpack"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(!in_ci(), "python3-msgpack is not installed; .ci/run must install it");
        eprintln!("SKIP: /usr/bin/python3 with msgpack is not installed (apt-get install python3-msgpack)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.bin");
    let mut data = Vec::new();
    for it in items {
        data.extend_from_slice(&(it.len() as u32).to_be_bytes());
        data.extend_from_slice(it);
    }
    std::fs::write(&file, data).unwrap();
    let out = Command::new(python).args(["-c", DECODE]).arg(&file).output().unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// The shape a Go type decodes from, as msgpack.v2 writes it: `expect` is the fixture's type,
/// `got` the decoded shape.
fn check_shape(path: &str, expect: &Value, got: &Value) {
    if let Some(fields) = expect.as_array() {
        let got = got.as_array().unwrap_or_else(|| panic!("{path}: expected a map, got {got}"));
        let names: Vec<&str> = fields.iter().map(|f| f[0].as_str().unwrap()).collect();
        let got_names: Vec<&str> = got.iter().map(|f| f[0].as_str().unwrap()).collect();
        assert_eq!(got_names, names, "{path}: field names and order");
        for (f, g) in fields.iter().zip(got) {
            check_shape(&format!("{path}.{}", f[0].as_str().unwrap()), &f[1], &g[1]);
        }
        return;
    }
    let go = expect.as_str().unwrap();
    let ok = match go {
        "string" => got == "str",
        "int" | "int64" | "uint" | "time.Month" => got == "int",
        "bool" => got == "bool",
        "float64" => got == "float",
        "time.Time" => *got == serde_json::json!(["list", "int", "int"]),
        t if t.starts_with("[]") => got == "nil" || got.as_array().is_some_and(|a| a[0] == "list"),
        t if t.starts_with("map[") => got == "nil" || got.is_array(),
        other => panic!("{path}: fixture type {other} not known to the test"),
    };
    assert!(ok, "{path}: Go {go} cannot decode from {got}");
}

#[test]
fn records_reach_tyks_list_as_tyk_pump_decodes_them() {
    let Some(redis) = RedisServer::start() else { return };
    let up = upstream("up");
    let p = start_proxy(&redis, &up.url(), "");
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(p.get("/open/status/500", "User-Agent: pump-test\r\n").status, 500);
    for i in 0..4 {
        assert_eq!(p.get(&format!("/open/get?i={i}"), "").status, 200);
    }
    let mut items = Vec::new();
    wait_for("5 records in the Redis list", Duration::from_secs(15), || {
        items.extend(pump(&redis, LIST).unwrap_or_default());
        (items.len() >= 5).then_some(())
    });
    assert_eq!(items.len(), 5);
    assert_eq!(redis.command(&["EXISTS", LIST]), "0", "the pump's read took them all");
    let Some(decoded) = python_decode(&items) else { return };
    let fixture: Value = serde_json::from_str(include_str!("../fixtures/tyk_analytics_record.json")).expect("fixture");
    for d in &decoded {
        check_shape("AnalyticsRecord", &fixture["fields"], &d["shape"]);
    }
    let err = decoded.iter().find(|d| d["values"]["ResponseCode"] == 500).expect("the 500");
    let v = &err["values"];
    assert_eq!(v["Method"], "GET");
    assert_eq!(v["Path"], "/open/status/500");
    assert_eq!(v["APIID"], "open");
    assert_eq!(v["APIVersion"], "Non Versioned");
    assert_eq!(v["UserAgent"], "pump-test");
    let ts = v["TimeStamp"][0].as_u64().unwrap();
    assert!(ts >= before && ts <= before + 60, "TimeStamp {ts} is now ({before})");
    assert!(v["TimeStamp"][1].as_u64().unwrap() < 1_000_000_000, "nanoseconds");
    let expire = v["ExpireAt"][0].as_u64().unwrap();
    assert!(expire > ts + 99 * 365 * 86_400, "Tyk's 100-year expiry: {expire}");
    assert_eq!(p.metric("portcullis_analytics_records_written_total{sink=\"redis\"}"), Some(5.0));
}

#[test]
fn multiple_keys_spread_batches_over_tyks_ten_lists() {
    let Some(redis) = RedisServer::start() else { return };
    let up = upstream("up");
    let p = start_proxy(&redis, &up.url(), "multiple_keys = true\n");
    // One request per flush (the worker hands its batch over every 200 ms).
    for i in 0..3 {
        assert_eq!(p.get(&format!("/open/get?i={i}"), "").status, 200);
        std::thread::sleep(Duration::from_millis(400));
    }
    let mut lists = std::collections::BTreeMap::new();
    wait_for("3 records over the lists", Duration::from_secs(15), || {
        for k in 0..10 {
            let got = pump(&redis, &format!("{LIST}_{k}")).unwrap_or_default();
            *lists.entry(k).or_insert(0) += got.len();
        }
        (lists.values().sum::<usize>() >= 3).then_some(())
    });
    assert_eq!(redis.command(&["EXISTS", LIST]), "0", "nothing in the single list");
    assert!(lists.values().filter(|&&n| n > 0).count() >= 2, "batches spread: {lists:?}");
}

#[test]
fn every_record_arrives_once_through_a_ten_second_redis_outage() {
    let Some(mut redis) = RedisServer::start() else { return };
    let up = upstream("up");
    let p = Arc::new(start_proxy(&redis, &up.url(), ""));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // The load: numbered requests, at most 20,000 and for at most 40 s.
    let load = {
        let (p, sent, stop) = (Arc::clone(&p), Arc::clone(&sent), Arc::clone(&stop));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(40);
            let mut c = Conn::connect(p.listen).expect("connect");
            let mut i = 0u64;
            while i < 20_000 && !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let r = c.request("GET", &format!("/open/get?n={i}"), "", b"").expect("request");
                assert_eq!(r.status, 200);
                i += 1;
                sent.store(i, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut got: Vec<Vec<u8>> = Vec::new();
    let drain = |got: &mut Vec<Vec<u8>>, redis: &RedisServer, secs: u64| {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            got.extend(pump(redis, LIST).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    drain(&mut got, &redis, 3);
    redis.shutdown_saving();
    std::thread::sleep(Duration::from_secs(10));
    let during = sent.load(Ordering::Relaxed);
    redis.restart();
    drain(&mut got, &redis, 3);
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load");
    let total = sent.load(Ordering::Relaxed);
    assert!(during > 1000, "load ran through the outage: {during} requests");
    wait_for(&format!("{total} records"), Duration::from_secs(30), || {
        got.extend(pump(&redis, LIST).unwrap_or_default());
        (got.len() as u64 >= total).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    got.extend(pump(&redis, LIST).unwrap_or_default());
    // Each record once: the request numbers are 0..total, none twice.
    let mut seen = vec![0u32; total as usize];
    for it in &got {
        let raw = find_str_after(it, b"RawPath").expect("RawPath");
        let n: usize = raw.trim_start_matches("/open/get?n=").parse().expect("numbered");
        seen[n] += 1;
    }
    let twice: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] > 1).collect();
    let missing: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] == 0).collect();
    assert!(twice.is_empty() && missing.is_empty(), "twice: {twice:?}; missing: {missing:?}");
    let m = p.admin_get("/metrics").text();
    assert!(
        portcullis_tests::metrics::sum(&m, "portcullis_analytics_spooled_total{sink=\"redis\"}") > 0.0,
        "the outage went through the spool"
    );
    for reason in ["spool_full", "queue_full", "no_spool", "unreadable"] {
        let series = format!("portcullis_analytics_sink_dropped_total{{sink=\"redis\",reason=\"{reason}\"}}");
        assert_eq!(portcullis_tests::metrics::sum(&m, &series), 0.0, "{series}");
    }
    assert_eq!(portcullis_tests::metrics::sum(&m, "portcullis_analytics_dropped_total{reason=\"queue_full\"}"), 0.0);
}

/// The msgpack string after the key `key` in one record (a fixstr or str8 value).
fn find_str_after(rec: &[u8], key: &[u8]) -> Option<String> {
    let mut pat = vec![0xa0 | key.len() as u8];
    pat.extend_from_slice(key);
    let at = rec.windows(pat.len()).position(|w| w == pat)? + pat.len();
    let mut rd = &rec[at..];
    let mut buf = vec![0; 4096];
    rmp::decode::read_str(&mut rd, &mut buf).ok().map(String::from)
}
