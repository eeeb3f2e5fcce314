//! The `clickhouse` sink: each batch becomes one `INSERT INTO <database>.<table> FORMAT
//! JSONEachRow` over ClickHouse's HTTP interface (blocking `ureq`, on the sink's own thread).
//!
//! The table is made on first use and again after every failure (`CREATE DATABASE` and `CREATE
//! TABLE ... IF NOT EXISTS`, so a server that was down at startup, or lost its data, gets it back):
//! a MergeTree partitioned by day (`toDate(timestamp)`, in the server's time zone) and ordered by
//! `(api_id, timestamp)`. Retention: a table TTL where the server has one (19.6 and later; asked
//! with `SELECT version()`), else the sink drops daily partitions older than `retention_days`
//! itself, at its first tick and then every [`RETENTION_EVERY`] (Debian's 18.16 has no TTL).
//!
//! Exactly once: an `INSERT` of one batch into a MergeTree is one block, written as one part per
//! partition it touches and made visible at once; a batch that fails is spooled and sent again
//! whole, in order. The one case that would duplicate is a reply lost after the server took the
//! insert (a timeout, a connection cut while the server commits), or an error between the parts
//! of a batch that covers two days: every row carries its batch's hash (`batch`), and before a
//! batch whose send failed after reaching the server is sent again the sink asks which of its
//! rows are already there and sends only the others. Must not: hang on a dead server
//! (connect and request timeouts), fail at startup because the server is down (it connects
//! lazily), or send part of a batch and report it failed without that check.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::Hasher as _;
use std::io::Read as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::decode;
use super::sink::{Sink, SinkFailure, SinkStats};
use crate::config::SinkConfig;

/// The server's HTTP interface when `url` is empty.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8123";
/// A server that does not accept a connection within this is down (the batch is spooled).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A whole request, connect to the last byte of the reply: a hung server fails the send instead
/// of holding the sink's thread (a healthy server takes milliseconds for a 64 KiB batch).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often old partitions are looked for on a server without TTL.
pub const RETENTION_EVERY: Duration = Duration::from_secs(300);
/// After a retention pass that failed, the next one.
const RETENTION_RETRY: Duration = Duration::from_secs(30);
/// Most bytes of an error reply kept for the message.
const ERROR_MAX: usize = 2048;
/// Most bytes of a reply read (the longest is the `timestamp_us` list of one batch's rows).
const REPLY_MAX: u64 = 1 << 20;

/// The table's columns, in the order a row lists them ([`Row`]). `timestamp` is the second
/// (DateTime: 18.16 has no DateTime64), `timestamp_us` the same instant in Unix microseconds.
const COLUMNS: &str = "\
    timestamp DateTime, timestamp_us UInt64, api_id String, api_name String, api_version String, \
    org_id String, api_key String, oauth_id String, alias String, method String, host String, \
    path String, raw_path String, track_path UInt8, content_length UInt64, user_agent String, \
    ip_address String, tags Array(String), response_code UInt16, request_time UInt64, \
    request_time_us UInt64, latency_total UInt64, latency_upstream UInt64, latency_gateway UInt64, \
    bytes_in UInt64, bytes_out UInt64, year UInt16, month UInt8, day UInt8, hour UInt8, \
    raw_request String, raw_response String, batch UInt64";

/// One row of the table, as JSONEachRow (field names = column names).
#[derive(Serialize)]
struct Row<'r> {
    timestamp: u64,
    timestamp_us: u64,
    api_id: &'r str,
    api_name: &'r str,
    api_version: &'r str,
    org_id: &'r str,
    api_key: &'r str,
    oauth_id: &'r str,
    alias: &'r str,
    method: &'r str,
    host: &'r str,
    path: &'r str,
    raw_path: &'r str,
    track_path: u8,
    content_length: u64,
    user_agent: &'r str,
    ip_address: &'r str,
    tags: &'r [Cow<'r, str>],
    response_code: u16,
    request_time: u64,
    request_time_us: u64,
    latency_total: u64,
    latency_upstream: u64,
    latency_gateway: u64,
    bytes_in: u64,
    bytes_out: u64,
    year: u32,
    month: u8,
    day: u8,
    hour: u8,
    raw_request: &'r str,
    raw_response: &'r str,
    batch: u64,
}

impl<'r> Row<'r> {
    fn of(r: &'r decode::Record<'r>, batch: u64) -> Row<'r> {
        let us = r.unix_us();
        Row {
            timestamp: us / 1_000_000,
            timestamp_us: us,
            api_id: &r.api_id,
            api_name: &r.api_name,
            api_version: &r.api_version,
            org_id: &r.org_id,
            api_key: &r.api_key,
            oauth_id: &r.oauth_id,
            alias: &r.alias,
            method: &r.method,
            host: &r.host,
            path: &r.path,
            raw_path: &r.raw_path,
            track_path: u8::from(r.track_path),
            content_length: r.content_length,
            user_agent: &r.user_agent,
            ip_address: &r.ip_address,
            tags: &r.tags,
            response_code: r.response_code,
            request_time: r.request_time,
            request_time_us: r.request_time_us,
            latency_total: r.latency.total,
            latency_upstream: r.latency.upstream,
            latency_gateway: r.latency.gateway,
            bytes_in: r.network.bytes_in,
            bytes_out: r.network.bytes_out,
            year: r.year,
            month: r.month,
            day: r.day,
            hour: r.hour,
            raw_request: &r.raw_request,
            raw_response: &r.raw_response,
            batch,
        }
    }
}

/// What the sink learned about the server and the table when it made sure of them.
#[derive(Debug, Clone, Copy)]
struct Server {
    /// 19.6 or later: the table has a TTL (when it was made by this sink with `retention_days`).
    ttl: bool,
    /// The table is a MergeTree here (not a `Distributed` table over shards): its partitions can
    /// be dropped.
    merge_tree: bool,
}

/// A batch's rows, each with its instant (to leave out rows already inserted).
#[derive(Default)]
struct Rows {
    body: Vec<u8>,
    /// (timestamp_us, end of the row in `body`).
    ends: Vec<(u64, usize)>,
}

/// The `clickhouse` sink.
pub struct ClickHouseSink {
    agent: ureq::Agent,
    url: String,
    user: String,
    password: String,
    /// `` `database`.`table` `` (both letters, digits and `_`: checked with the config).
    target: String,
    database: String,
    table: String,
    insert: String,
    retention_days: u64,
    /// Known while the schema is known to be in place; `None` after a failure.
    server: Option<Server>,
    /// The next retention pass (the first tick's: at once).
    next_retention: Instant,
    /// Told once that retention is the shards' own on a `Distributed` table.
    said_distributed: bool,
    /// Hash of the batch whose last insert failed after its body may have reached the server.
    unsure: Option<u64>,
    rows: Rows,
    stats: Arc<SinkStats>,
}

impl ClickHouseSink {
    /// A sink for `cfg`; connects on first use, so a server that is down is no error here.
    pub fn new(cfg: &SinkConfig, stats: Arc<SinkStats>) -> Result<Self, String> {
        let url = if cfg.url.is_empty() { DEFAULT_URL } else { cfg.url.trim_end_matches('/') };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("url {url:?}: must be an http:// URL"));
        }
        let ident_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident_ok(&cfg.database) || !ident_ok(&cfg.table) {
            return Err(format!("database {:?}, table {:?}: letters, digits and _ only", cfg.database, cfg.table));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let target = format!("`{}`.`{}`", cfg.database, cfg.table);
        tracing::info!(url, table = %target, "analytics: request records to ClickHouse");
        Ok(ClickHouseSink {
            agent,
            url: format!("{url}/"),
            user: cfg.user.clone(),
            password: cfg.password.clone(),
            insert: format!("INSERT INTO {target} FORMAT JSONEachRow"),
            target,
            database: cfg.database.clone(),
            table: cfg.table.clone(),
            retention_days: cfg.retention_days,
            server: None,
            next_retention: Instant::now(),
            said_distributed: false,
            unsure: None,
            rows: Rows::default(),
            stats,
        })
    }

    /// POSTs `body` (with `query` in the URL when given): the reply's text, or ClickHouse's
    /// message. `Err((failure, sent))`: `sent` when the body may have reached the server.
    fn post(&self, query: Option<&str>, body: &[u8]) -> Result<String, (SinkFailure, bool)> {
        let mut req = self.agent.post(&self.url);
        if let Some(q) = query {
            req = req.query("query", q);
        }
        if !self.user.is_empty() {
            req = req.header("X-ClickHouse-User", &self.user);
        }
        if !self.password.is_empty() {
            req = req.header("X-ClickHouse-Key", &self.password);
        }
        let what = query.unwrap_or_else(|| std::str::from_utf8(&body[..body.len().min(60)]).unwrap_or("query"));
        let resp = req.send(body).map_err(|e| {
            let before = matches!(
                &e,
                ureq::Error::ConnectionFailed
                    | ureq::Error::HostNotFound
                    | ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve)
            ) || matches!(&e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused);
            (SinkFailure(format!("ClickHouse {}: {what}: {e}", self.url)), !before)
        })?;
        let status = resp.status().as_u16();
        let mut text = String::new();
        let read = resp.into_body().into_reader().take(REPLY_MAX).read_to_string(&mut text);
        if !(200..300).contains(&status) {
            let mut cut = text.len().min(ERROR_MAX);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            // Refused. An INSERT that covers two days writes one part per day, one after the
            // other: an error between them leaves the first, so this is a send in doubt too.
            return Err((SinkFailure(format!("ClickHouse {status}: {what}: {}", text.trim())), true));
        }
        read.map_err(|e| (SinkFailure(format!("ClickHouse {}: {what}: reply: {e}", self.url)), true))?;
        Ok(text)
    }

    fn query(&self, sql: &str) -> Result<String, SinkFailure> {
        self.post(None, sql.as_bytes()).map_err(|(e, _)| e)
    }

    /// Makes sure the database and table exist and learns what the server can do (once, and
    /// again after a failure).
    fn ensure(&mut self) -> Result<Server, SinkFailure> {
        if let Some(s) = self.server {
            return Ok(s);
        }
        let version = self.query("SELECT version()")?;
        let ttl = has_ttl(version.trim());
        self.query(&format!("CREATE DATABASE IF NOT EXISTS `{}`", self.database))?;
        self.query(&create_table(&self.target, if ttl { self.retention_days } else { 0 }))?;
        let engine = self.query(&format!(
            "SELECT engine FROM system.tables WHERE database = '{}' AND name = '{}'",
            self.database, self.table
        ))?;
        let s = Server { ttl, merge_tree: engine.trim().ends_with("MergeTree") };
        tracing::info!(sink = %self.stats.name, version = version.trim(), engine = engine.trim(), ttl,
            "analytics: ClickHouse table ready");
        self.server = Some(s);
        Ok(s)
    }

    /// The rows of `batch` into `self.rows`; lines that do not read are counted and skipped.
    fn encode(&mut self, batch: &[u8], hash: u64) {
        self.rows.body.clear();
        self.rows.ends.clear();
        let mut unreadable = 0;
        for line in decode::lines(batch) {
            let Ok(rec) = decode::record(line) else {
                unreadable += 1;
                continue;
            };
            let row = Row::of(&rec, hash);
            // Writing into a Vec fails only on a serializer error, which these types cannot give.
            if serde_json::to_writer(&mut self.rows.body, &row).is_ok() {
                self.rows.body.push(b'\n');
                self.rows.ends.push((row.timestamp_us, self.rows.body.len()));
            }
        }
        if unreadable > 0 {
            self.stats.dropped_unreadable.fetch_add(unreadable, Ordering::Relaxed);
        }
    }

    /// After a send that may have reached the server: leaves out of `self.rows` the rows of batch
    /// `hash` the table already holds (by instant, as many of each as are there).
    fn leave_out_inserted(&mut self, hash: u64) -> Result<(), SinkFailure> {
        let (Some(lo), Some(hi)) = (self.rows.ends.iter().map(|r| r.0).min(), self.rows.ends.iter().map(|r| r.0).max())
        else {
            return Ok(());
        };
        let there = self.query(&format!(
            "SELECT timestamp_us FROM {} WHERE batch = {hash} AND timestamp >= toDateTime({}) \
             AND timestamp <= toDateTime({}) FORMAT TabSeparated",
            self.target,
            lo / 1_000_000,
            hi / 1_000_000
        ))?;
        let mut present: HashMap<u64, u64> = HashMap::new();
        for us in there.lines().filter_map(|l| l.trim().parse::<u64>().ok()) {
            *present.entry(us).or_default() += 1;
        }
        if present.is_empty() {
            return Ok(());
        }
        let found: u64 = present.values().sum();
        let mut kept = Rows::default();
        let mut start = 0;
        for &(us, end) in &self.rows.ends {
            match present.get_mut(&us) {
                Some(n) if *n > 0 => *n -= 1,
                _ => {
                    kept.body.extend_from_slice(&self.rows.body[start..end]);
                    kept.ends.push((us, kept.body.len()));
                }
            }
            start = end;
        }
        tracing::info!(sink = %self.stats.name, already = found, left = kept.ends.len(),
            "analytics: rows of a batch whose reply was lost were already in ClickHouse; not sent again");
        self.rows = kept;
        Ok(())
    }

    fn try_send(&mut self, batch: &[u8]) -> Result<(), SinkFailure> {
        self.ensure()?;
        let hash = batch_hash(batch);
        self.encode(batch, hash);
        if self.unsure == Some(hash) {
            self.leave_out_inserted(hash)?;
        }
        self.unsure = None;
        if self.rows.ends.is_empty() {
            return Ok(());
        }
        let sent = self.post(Some(&self.insert), &self.rows.body);
        sent.map(drop).map_err(|(e, maybe)| {
            if maybe {
                self.unsure = Some(hash);
            }
            e
        })
    }

    /// Drops the daily partitions whose newest row is older than `retention_days`.
    fn drop_old_partitions(&mut self) -> Result<(), SinkFailure> {
        let old = self.query(&format!(
            "SELECT DISTINCT partition_id FROM system.parts WHERE database = '{}' AND table = '{}' \
             AND active AND max_time < now() - {} FORMAT TabSeparated",
            self.database,
            self.table,
            self.retention_days.saturating_mul(86_400)
        ))?;
        for id in old.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                continue;
            }
            self.query(&format!("ALTER TABLE {} DROP PARTITION ID '{id}'", self.target))?;
            tracing::info!(sink = %self.stats.name, partition = id, "analytics: old ClickHouse partition dropped");
        }
        Ok(())
    }
}

impl Sink for ClickHouseSink {
    fn send(&mut self, batch: &[u8]) -> Result<(), SinkFailure> {
        self.try_send(batch).inspect_err(|_| self.server = None)
    }

    /// Queued and spooled batches go together, up to 2 MiB (some 3,000 records) per insert:
    /// each insert makes a part on the server, whose cost per insert bounds the sink (about
    /// 100 inserts a second into a local 18.16 on ext4, bench/README.md).
    fn join_bytes(&self) -> usize {
        2 << 20
    }

    fn tick(&mut self) -> Result<(), SinkFailure> {
        if self.retention_days == 0 || Instant::now() < self.next_retention {
            return Ok(());
        }
        self.next_retention = Instant::now() + RETENTION_RETRY;
        let server = self.ensure().inspect_err(|_| self.server = None)?;
        if server.ttl {
            return Ok(());
        }
        if !server.merge_tree {
            if !self.said_distributed {
                tracing::warn!(sink = %self.stats.name, table = %self.target,
                    "analytics: the ClickHouse table is no MergeTree (Distributed?): retention is up to the shards' tables");
                self.said_distributed = true;
            }
            self.next_retention = Instant::now() + RETENTION_EVERY;
            return Ok(());
        }
        self.drop_old_partitions().inspect_err(|_| self.server = None)?;
        self.next_retention = Instant::now() + RETENTION_EVERY;
        Ok(())
    }
}

/// `CREATE TABLE IF NOT EXISTS` for `target`, with a TTL when `ttl_days` > 0.
fn create_table(target: &str, ttl_days: u64) -> String {
    let ttl = if ttl_days > 0 { format!(" TTL timestamp + INTERVAL {ttl_days} DAY") } else { String::new() };
    format!(
        "CREATE TABLE IF NOT EXISTS {target} ({COLUMNS}) ENGINE = MergeTree() \
         PARTITION BY toDate(timestamp) ORDER BY (api_id, timestamp){ttl}"
    )
}

/// Table TTL came with ClickHouse 19.6.
fn has_ttl(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (19, 6)
}

/// A batch's identity in the table's `batch` column (a spooled batch is sent again byte for byte).
fn batch_hash(batch: &[u8]) -> u64 {
    // `DefaultHasher::new()` has fixed keys: the same bytes give the same hash in every run of
    // one build (the spool outlives a run, but an unsure batch never does).
    let mut h = std::hash::DefaultHasher::new();
    h.write(batch);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::record::{begin, finish, Outcome, RequestFacts};
    use crate::config::AnalyticsSink;

    /// A batch of `n` records of API `api`, `raw_path` `/x?i=<first + i>`, at `unix_us`.
    fn batch(api: &str, first: usize, n: usize, unix_us: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let tags = vec!["t1".to_string(), "quote\"d".to_string()];
        for i in first..first + n {
            let mut rec = Vec::new();
            let raw = format!("/x?i={i}");
            begin(
                &mut rec,
                RequestFacts {
                    method: b"GET",
                    path: b"/x",
                    raw_path: raw.as_bytes(),
                    host: "up:80",
                    content_length: 0,
                    user_agent: b"ua",
                    api_key: "",
                    api_id: api,
                    api_version: None,
                    api_name: "API",
                    org_id: "org",
                    ip_address: "127.0.0.1",
                    tags: [&tags, &[]],
                    track_path: false,
                    expire_after_s: 0,
                    alias: "",
                    finding: None,
                },
            );
            let wall = super::super::clock::WallTime::at(unix_us + i as u64);
            finish(
                &mut rec,
                &Outcome { code: 200, total_us: 1500, upstream_us: 1000, bytes_in: 5, bytes_out: 7 },
                &wall,
            );
            out.extend_from_slice(&rec);
        }
        out
    }

    fn cfg(url: &str, table: &str, retention_days: u64) -> SinkConfig {
        SinkConfig {
            sink: AnalyticsSink::Clickhouse,
            url: url.into(),
            database: "it".into(),
            table: table.into(),
            retention_days,
            ..Default::default()
        }
    }

    fn now_us() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64
    }

    #[test]
    fn rows_carry_the_record_fields_and_unreadable_lines_are_counted() {
        let stats = Arc::new(SinkStats::default());
        let mut s = ClickHouseSink::new(&cfg("", "t", 0), Arc::clone(&stats)).unwrap();
        let mut b = batch("api1", 0, 2, 1_796_107_285_000_000);
        b.extend_from_slice(b"{\"response_code\":\"x\"}\n");
        s.encode(&b, 7);
        assert_eq!(stats.dropped_unreadable.load(Ordering::Relaxed), 1);
        let rows: Vec<serde_json::Value> = s
            .rows
            .body
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 2);
        let r = &rows[1];
        assert_eq!(
            (r["timestamp"].as_u64(), r["timestamp_us"].as_u64()),
            (Some(1_796_107_285), Some(1_796_107_285_000_001))
        );
        assert_eq!(
            (r["api_id"].as_str(), r["raw_path"].as_str(), r["response_code"].as_u64()),
            (Some("api1"), Some("/x?i=1"), Some(200))
        );
        assert_eq!(r["tags"], serde_json::json!(["t1", "quote\"d"]));
        assert_eq!(
            (r["latency_total"].as_u64(), r["latency_upstream"].as_u64(), r["batch"].as_u64()),
            (Some(1), Some(1), Some(7))
        );
        // Every field a row has is a column of the table.
        for k in r.as_object().unwrap().keys() {
            assert!(COLUMNS.contains(&format!("{k} ")), "no column for {k}");
        }
        assert_eq!(COLUMNS.matches(',').count() + 1, r.as_object().unwrap().len());
    }

    #[test]
    fn ttl_from_19_6_and_no_ttl_without_retention() {
        assert!(!has_ttl("18.16.1"));
        assert!(!has_ttl("19.5.3.8"));
        assert!(has_ttl("19.6.2.11"));
        assert!(has_ttl("24.3.1.2"));
        assert!(create_table("`a`.`b`", 7).ends_with("TTL timestamp + INTERVAL 7 DAY"));
        assert!(!create_table("`a`.`b`", 0).contains("TTL"));
        assert!(ClickHouseSink::new(&cfg("redis://x", "t", 0), Arc::default()).is_err());
        assert!(ClickHouseSink::new(&cfg("", "t;drop", 0), Arc::default()).is_err());
    }

    #[test]
    fn a_down_server_fails_the_send_quickly_and_is_no_error_at_startup() {
        let addr = portcullis_tests::free_addr();
        let mut s = ClickHouseSink::new(&cfg(&format!("http://{addr}"), "t", 0), Arc::default()).unwrap();
        let t = Instant::now();
        assert!(s.send(&batch("a", 0, 1, now_us())).is_err());
        assert!(t.elapsed() < CONNECT_TIMEOUT * 2, "{:?}", t.elapsed());
        assert_eq!(s.unsure, None, "a refused connection took nothing");
    }

    #[test]
    fn inserts_batches_and_a_lost_reply_does_not_duplicate() {
        let Some(ch) = portcullis_tests::clickhouse::ClickHouseServer::start() else { return };
        let stats = Arc::new(SinkStats::default());
        let mut s = ClickHouseSink::new(&cfg(&ch.url(), "dedup", 0), stats).unwrap();
        let t0 = now_us();
        let b1 = batch("a", 0, 50, t0);
        s.send(&b1).unwrap();
        s.send(&batch("b", 50, 30, t0)).unwrap();
        assert_eq!(ch.query("SELECT count() FROM it.dedup").trim(), "80");
        assert_eq!(ch.query("SELECT count() FROM it.dedup WHERE api_id = 'b' AND response_code = 200").trim(), "30");
        assert_eq!(ch.query("SELECT tags FROM it.dedup LIMIT 1").trim(), r#"['t1','quote"d']"#);

        // As if the first batch's reply had been lost after the server took it: sent again, none
        // of it is inserted twice; a batch cut in half by a lost reply gets only its missing half.
        s.unsure = Some(batch_hash(&b1));
        s.send(&b1).unwrap();
        assert_eq!(ch.query("SELECT count() FROM it.dedup").trim(), "80");
        let b3 = batch("c", 80, 40, t0);
        let half: Vec<u8> = decode::lines(&b3).take(15).flat_map(|l| [l, b"\n"].concat()).collect();
        let hash = batch_hash(&b3);
        s.encode(&half, hash);
        s.post(Some(&s.insert), &s.rows.body).unwrap();
        s.unsure = Some(hash);
        s.send(&b3).unwrap();
        assert_eq!(ch.query("SELECT count(), uniqExact(raw_path) FROM it.dedup WHERE api_id = 'c'").trim(), "40\t40");
    }

    #[test]
    fn a_refused_request_fails_with_clickhouses_message_and_leaves_the_batch_in_doubt() {
        let Some(ch) = portcullis_tests::clickhouse::ClickHouseServer::start() else { return };
        let mut c = cfg(&ch.url(), "auth", 0);
        c.user = "nobody".into();
        c.password = "secret".into();
        let mut s = ClickHouseSink::new(&c, Arc::default()).unwrap();
        let e = s.send(&batch("a", 0, 1, now_us())).unwrap_err();
        assert!(e.0.contains("nobody"), "ClickHouse's own message, naming the user sent: {e}");
        assert!(s.server.is_none());
        // The table is there, the insert refused: the batch is in doubt.
        let mut s = ClickHouseSink::new(&cfg(&ch.url(), "auth", 0), Arc::default()).unwrap();
        s.send(&batch("a", 0, 1, now_us())).unwrap();
        ch.query("ALTER TABLE it.auth DROP COLUMN batch");
        let b = batch("a", 1, 1, now_us());
        assert!(s.send(&b).is_err());
        assert_eq!(s.unsure, Some(batch_hash(&b)));
    }

    #[test]
    fn without_ttl_the_tick_drops_partitions_past_retention() {
        let Some(ch) = portcullis_tests::clickhouse::ClickHouseServer::start() else { return };
        let mut s = ClickHouseSink::new(&cfg(&ch.url(), "ret", 3), Arc::default()).unwrap();
        let now = now_us();
        s.send(&batch("new", 0, 5, now)).unwrap();
        let day = 86_400_000_000;
        s.send(&batch("old", 0, 5, now - 10 * day)).unwrap();
        s.send(&batch("old", 5, 5, now - 5 * day)).unwrap();
        s.send(&batch("recent", 0, 5, now - day)).unwrap();
        assert_eq!(ch.query("SELECT count() FROM it.ret").trim(), "20");
        let server = s.server.unwrap();
        if server.ttl {
            eprintln!("SKIP: this ClickHouse has TTL; the partition drop is for servers before 19.6");
            return;
        }
        assert!(server.merge_tree);
        s.tick().unwrap();
        assert_eq!(
            ch.query("SELECT api_id, count() FROM it.ret GROUP BY api_id ORDER BY api_id").trim(),
            "new\t5\nrecent\t5"
        );
        // The next pass waits RETENTION_EVERY.
        s.send(&batch("old", 10, 5, now - 10 * day)).unwrap();
        s.tick().unwrap();
        assert_eq!(ch.query("SELECT count() FROM it.ret WHERE api_id = 'old'").trim(), "5");
        s.next_retention = Instant::now();
        s.tick().unwrap();
        assert_eq!(ch.query("SELECT count() FROM it.ret WHERE api_id = 'old'").trim(), "0");
    }
}
