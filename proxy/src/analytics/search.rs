//! The `search` sink: the request records in an embedded full-text index (tantivy) on local
//! disk, behind the admin API's `/api/analytics/search` and `/api/analytics/aggregate`: the
//! default sink that needs no other service (docs/analytics.md, docs/decisions/0028).
//!
//! The sink ([`SearchSink`]) runs on its own sink thread: it reads each line back
//! ([`super::decode`]), adds a document (the fields below, and the line itself, stored, so a hit
//! is the record as written), commits on the thread's tick (about once a second, and at
//! shutdown) and applies retention (by age and by the index's size) at most once a minute. The
//! control plane's handlers share the [`SearchIndex`]: the reader, reloaded after each commit,
//! answers queries in tantivy's query language (Lucene-like: `response_code:500 AND
//! tags:user-foo@bar.com`) and aggregations in Elasticsearch's JSON.
//!
//! Durability: a batch is delivered once its documents are added to the writer; they are
//! searchable and on disk after the next commit. A batch whose documents could not all be added
//! is a failure and none of it counts (the writer is dropped, which discards everything not
//! committed, and opened again); the lines of the batches added since the last commit are kept
//! in memory (at most [`PENDING_MAX`] bytes: past it the sink commits at once) and added again
//! to the new writer, so a failed add or commit loses no delivered record. A crash (SIGKILL,
//! power) loses what was added since the last commit, up to about a second of records; SIGTERM
//! commits on the sink thread's final tick.
//!
//! Must not: panic on input (a query, a bound, a line), or run on a worker or the control
//! plane's runtime thread (the admin handlers call it through `spawn_blocking`).

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::{AggContextParams, AggregationCollector, AggregationLimitsGuard};
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::indexer::IndexWriterOptions;
use tantivy::merge_policy::LogMergePolicy;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery};
use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions,
    Value, FAST, INDEXED, STORED, TEXT,
};
use tantivy::{DateTime, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};

use super::decode::{self, Record};
use super::sink::{Sink, SinkFailure, SinkStats};
use crate::config::SinkConfig;

/// The writer's indexing memory: a segment is written when it is full (or at a commit). One
/// indexing thread and one merge thread: the sink is one thread of a thread-per-core proxy.
const WRITER_MEMORY: usize = 32 << 20;
/// Lines added since the last commit kept to add again after a failure; past this, commit now.
pub const PENDING_MAX: usize = 16 << 20;
/// Retention runs at most this often.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// `size` of a search: default and most.
const SIZE_DEFAULT: usize = 20;
const SIZE_MAX: usize = 1000;
/// Most buckets an aggregation may make (time buckets times groups).
const BUCKETS_MAX: u32 = 20_000;
/// `group_by` values: the fields a terms aggregation groups on.
const GROUP_FIELDS: [&str; 4] = ["api_id", "response_code", "path", "api_key"];

/// Raw (untokenized) string fields: matched whole, as written (`tags:user-foo@bar.com`).
const RAW: [&str; 13] = [
    "api_id",
    "api_name",
    "api_key",
    "method",
    "path",
    "raw_path",
    "host",
    "ip_address",
    "org_id",
    "api_version",
    "alias",
    "oauth_id",
    "tags",
];
/// Of those, the ones aggregations group on (fast: a column per field).
const RAW_FAST: [&str; 3] = ["api_id", "api_key", "path"];
/// Numbers, fast (aggregations and range queries): `response_code` is indexed too.
const NUMBERS: [&str; 10] = [
    "response_code",
    "request_time",
    "request_time_us",
    "latency_total",
    "latency_upstream",
    "latency_gateway",
    "bytes_in",
    "bytes_out",
    "content_length",
    "day",
];
/// Fields a query without a field name searches.
const DEFAULT_FIELDS: [&str; 4] = ["path", "api_name", "api_id", "tags"];

/// What a search or an aggregation could not do: `BadRequest` is the caller's (the admin API
/// answers 400 with the message, which names the parameter and its value), `Failed` the index's.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Failed(String),
}

fn failed(what: &str) -> impl Fn(tantivy::TantivyError) -> SearchError + '_ {
    move |e| SearchError::Failed(format!("{what}: {e}"))
}

/// The schema's fields.
struct Fields {
    timestamp: Field,
    record: Field,
    user_agent: Field,
    /// In the order of [`RAW`].
    raw: Vec<Field>,
    /// In the order of [`NUMBERS`].
    numbers: Vec<Field>,
}

fn schema() -> Schema {
    let mut b = Schema::builder();
    b.add_date_field("timestamp", DateOptions::from(INDEXED).set_fast().set_precision(DateTimePrecision::Microseconds));
    // The line as written, stored only (compressed with the document store).
    b.add_text_field("record", STORED);
    b.add_text_field("user_agent", TEXT);
    let raw = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("raw")
            .set_fieldnorms(false)
            .set_index_option(IndexRecordOption::Basic),
    );
    for name in RAW {
        let opts = if RAW_FAST.contains(&name) { raw.clone().set_fast("raw") } else { raw.clone() };
        b.add_text_field(name, opts);
    }
    for name in NUMBERS {
        let opts = if name == "response_code" { NumericOptions::from(INDEXED) | FAST } else { FAST.into() };
        b.add_u64_field(name, opts);
    }
    b.build()
}

impl Fields {
    fn of(schema: &Schema) -> Result<Fields, String> {
        let f = |n: &str| schema.get_field(n).map_err(|e| format!("the index has no field {n}: {e}"));
        Ok(Fields {
            timestamp: f("timestamp")?,
            record: f("record")?,
            user_agent: f("user_agent")?,
            raw: RAW.iter().map(|n| f(n)).collect::<Result<_, _>>()?,
            numbers: NUMBERS.iter().map(|n| f(n)).collect::<Result<_, _>>()?,
        })
    }

    /// The document of one record; `line` is its JSON line.
    fn doc(&self, r: &Record<'_>, line: &[u8]) -> TantivyDocument {
        let mut d = TantivyDocument::new();
        d.add_date(self.timestamp, DateTime::from_timestamp_micros(r.unix_us() as i64));
        d.add_text(self.record, String::from_utf8_lossy(line));
        if !r.user_agent.is_empty() {
            d.add_text(self.user_agent, &r.user_agent);
        }
        let raw: [&str; 12] = [
            &r.api_id,
            &r.api_name,
            &r.api_key,
            &r.method,
            &r.path,
            &r.raw_path,
            &r.host,
            &r.ip_address,
            &r.org_id,
            &r.api_version,
            &r.alias,
            &r.oauth_id,
        ];
        for (f, v) in self.raw.iter().zip(raw) {
            if !v.is_empty() {
                d.add_text(*f, v);
            }
        }
        let tags = self.raw[RAW.len() - 1];
        for t in &r.tags {
            d.add_text(tags, t);
        }
        let n = [
            u64::from(r.response_code),
            r.request_time,
            r.request_time_us,
            r.latency.total,
            r.latency.upstream,
            r.latency.gateway,
            r.network.bytes_in,
            r.network.bytes_out,
            r.content_length,
            u64::from(r.day),
        ];
        for (f, v) in self.numbers.iter().zip(n) {
            d.add_u64(*f, v);
        }
        d
    }
}

/// The index as the control plane sees it: the reader (reloaded by the sink after each commit)
/// and the query parser.
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    parser: QueryParser,
    fields: Fields,
    path: PathBuf,
}

/// The parameters of `/api/analytics/search` and `/api/analytics/aggregate`, as given.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Params {
    /// The query (tantivy's query language); none: every record.
    pub q: Option<String>,
    /// Time bounds, both included: RFC 3339 or unix milliseconds.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Search: hits returned (default 20, at most 1000).
    pub size: Option<String>,
    /// Aggregate: the time buckets' width (`30s`, `5m`, `1h`, `1d`; default `1h`).
    pub interval: Option<String>,
    /// Aggregate: group each time bucket by `api_id`, `response_code`, `path` or `api_key`.
    pub group_by: Option<String>,
}

impl Params {
    /// Reads a URL query string (`a=b&c=d`, percent-encoded, `+` a space). A parameter it does
    /// not know, or one given twice, is an error naming it.
    pub fn parse(query: &str) -> Result<Params, SearchError> {
        let mut p = Params::default();
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = form_decode(v)
                .ok_or_else(|| SearchError::BadRequest(format!("{k}={v}: not valid percent-encoded UTF-8")))?;
            let slot = match k {
                "q" => &mut p.q,
                "from" => &mut p.from,
                "to" => &mut p.to,
                "size" => &mut p.size,
                "interval" => &mut p.interval,
                "group_by" => &mut p.group_by,
                _ => {
                    return Err(SearchError::BadRequest(format!(
                        "unknown parameter {k:?} (q, from, to, size, interval, group_by)"
                    )))
                }
            };
            if slot.replace(v).is_some() {
                return Err(SearchError::BadRequest(format!("parameter {k:?} given twice")));
            }
        }
        Ok(p)
    }
}

/// Percent-decoding with `+` as a space (`application/x-www-form-urlencoded`), as UTF-8.
fn form_decode(s: &str) -> Option<String> {
    String::from_utf8(portcullis_policy::version::unescape(s)?.into_owned()).ok()
}

/// A time bound: unix milliseconds (digits only), or RFC 3339 (`2026-01-02T03:04:05Z`, with a
/// fraction and an offset if wanted, or a date alone: its midnight UTC). Unix microseconds.
fn parse_time(name: &str, v: &str) -> Result<i64, SearchError> {
    let bad =
        || SearchError::BadRequest(format!("{name}={v}: not a time (RFC 3339, e.g. 2026-01-02T03:04:05Z, or unix ms)"));
    if !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()) {
        return v.parse::<i64>().ok().and_then(|ms| ms.checked_mul(1000)).ok_or_else(bad);
    }
    let b = v.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = b.get(r)?;
        (!s.is_empty() && s.iter().all(u8::is_ascii_digit)).then(|| std::str::from_utf8(s).ok()?.parse().ok())?
    };
    let date = || -> Option<i64> {
        if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return None;
        }
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return None;
        }
        Some(super::clock::days_from_civil(y, m, d) * 86_400_000_000)
    };
    let day_us = date().ok_or_else(bad)?;
    if b.len() == 10 {
        return Ok(day_us);
    }
    let time = || -> Option<i64> {
        if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
            return None;
        }
        let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if h > 23 || mi > 59 || s > 60 {
            return None;
        }
        let mut us = (h * 3600 + mi * 60 + s) * 1_000_000;
        let mut i = 19;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            i = start;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            let digits = &b[start..i];
            if digits.is_empty() {
                return None;
            }
            let mut frac = 0i64;
            for k in 0..6 {
                frac = frac * 10 + digits.get(k).map_or(0, |c| i64::from(c - b'0'));
            }
            us += frac;
        }
        let offset = match b.get(i..)? {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let n = |x: &u8, y: &u8| -> Option<i64> {
                    (x.is_ascii_digit() && y.is_ascii_digit()).then(|| i64::from((x - b'0') * 10 + (y - b'0')))
                };
                let off = (n(h1, h2)? * 60 + n(m1, m2)?) * 60_000_000;
                if *sign == b'+' {
                    off
                } else {
                    -off
                }
            }
            _ => return None,
        };
        Some(us - offset)
    };
    Ok(day_us + time().ok_or_else(bad)?)
}

/// `interval`: a whole number and a unit (`ms`, `s`, `m`, `h`, `d`) as Elasticsearch's
/// `fixed_interval` takes it; its milliseconds.
fn interval_ms(v: &str) -> Result<u64, SearchError> {
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = v.split_at(digits);
    let scale = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => 0,
    };
    match n.parse::<u64>().ok().and_then(|n| n.checked_mul(scale)).filter(|&ms| ms > 0) {
        Some(ms) => Ok(ms),
        None => {
            Err(SearchError::BadRequest(format!("interval={v}: a number and a unit, ms, s, m, h or d (e.g. 1h, 30s)")))
        }
    }
}

impl SearchIndex {
    /// The directory the index is in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the index holds (as of the last commit the reader saw).
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// `q` and the time bounds as one query.
    fn query(&self, p: &Params) -> Result<Box<dyn Query>, SearchError> {
        let mut parts: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(q) = p.q.as_deref().filter(|q| !q.trim().is_empty()) {
            let parsed = self.parser.parse_query(q).map_err(|e| SearchError::BadRequest(format!("q={q}: {e}")))?;
            parts.push((Occur::Must, parsed));
        }
        let from = p.from.as_deref().map(|v| parse_time("from", v)).transpose()?;
        let to = p.to.as_deref().map(|v| parse_time("to", v)).transpose()?;
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(SearchError::BadRequest(format!(
                    "from={} is after to={}",
                    p.from.as_deref().unwrap_or_default(),
                    p.to.as_deref().unwrap_or_default()
                )));
            }
        }
        if from.is_some() || to.is_some() {
            let term = |us: i64| Term::from_field_date(self.fields.timestamp, DateTime::from_timestamp_micros(us));
            let lo = from.map_or(Bound::Unbounded, |f| Bound::Included(term(f)));
            let hi = to.map_or(Bound::Unbounded, |t| Bound::Included(term(t)));
            parts.push((Occur::Must, Box::new(RangeQuery::new(lo, hi))));
        }
        Ok(match parts.len() {
            0 => Box::new(AllQuery),
            1 => parts.remove(0).1,
            _ => Box::new(BooleanQuery::new(parts)),
        })
    }

    /// `/api/analytics/search`: `{"total": n, "hits": [records, newest first]}`, the records as
    /// written (the body is built from the stored lines, not parsed and written again).
    pub fn search(&self, p: &Params) -> Result<String, SearchError> {
        let size =
            match p.size.as_deref() {
                None => SIZE_DEFAULT,
                Some(s) => s.parse::<usize>().ok().filter(|&n| n <= SIZE_MAX).ok_or_else(|| {
                    SearchError::BadRequest(format!("size={s}: a number of hits from 0 to {SIZE_MAX}"))
                })?,
            };
        let query = self.query(p)?;
        let searcher = self.reader.searcher();
        let top = TopDocs::with_limit(size.max(1)).order_by_fast_field::<DateTime>("timestamp", Order::Desc);
        let (total, hits) = searcher.search(&query, &(Count, top)).map_err(failed("search"))?;
        let mut out = format!("{{\"total\":{total},\"hits\":[");
        for (i, (_, addr)) in hits.iter().take(size).enumerate() {
            let doc: TantivyDocument = searcher.doc(*addr).map_err(failed("reading a hit"))?;
            let line = doc.get_first(self.fields.record).and_then(|v| v.as_str()).unwrap_or("null");
            if i > 0 {
                out.push(',');
            }
            out.push_str(line.trim_end());
        }
        out.push_str("]}");
        Ok(out)
    }

    /// `/api/analytics/aggregate`: `over_time`, a date histogram on `timestamp` (`interval`,
    /// each bucket grouped by `group_by` when given, top 10 values), and `request_time`, the
    /// percentiles (50, 90, 95, 99) of `request_time` (ms), over the records `q`, `from` and
    /// `to` select. The answer is tantivy's, in Elasticsearch's aggregation response shape.
    pub fn aggregate(&self, p: &Params) -> Result<serde_json::Value, SearchError> {
        let interval = p.interval.as_deref().unwrap_or("1h");
        interval_ms(interval)?;
        let mut histogram = serde_json::json!({
            "date_histogram": {"field": "timestamp", "fixed_interval": interval}
        });
        if let Some(g) = p.group_by.as_deref() {
            if !GROUP_FIELDS.contains(&g) {
                return Err(SearchError::BadRequest(format!("group_by={g}: one of {}", GROUP_FIELDS.join(", "))));
            }
            histogram["aggs"] = serde_json::json!({"group": {"terms": {"field": g, "size": 10}}});
        }
        let req = serde_json::json!({
            "over_time": histogram,
            "request_time": {"percentiles": {"field": "request_time", "percents": [50.0, 90.0, 95.0, 99.0]}},
        });
        self.run_aggregation(&*self.query(p)?, req, interval)
    }

    fn run_aggregation(
        &self,
        query: &dyn Query,
        req: serde_json::Value,
        interval: &str,
    ) -> Result<serde_json::Value, SearchError> {
        let aggs: Aggregations =
            serde_json::from_value(req).map_err(|e| SearchError::Failed(format!("aggregation request: {e}")))?;
        let limits = AggregationLimitsGuard::new(Some(256 << 20), Some(BUCKETS_MAX));
        let collector =
            AggregationCollector::from_aggs(aggs, AggContextParams::new(limits, self.index.tokenizers().clone()));
        let res = self.reader.searcher().search(query, &collector).map_err(|e| match e {
            tantivy::TantivyError::AggregationError(a) => SearchError::BadRequest(format!(
                "interval={interval}: {a} (a wider interval, or a narrower from/to, makes fewer buckets)"
            )),
            e => SearchError::Failed(format!("aggregation: {e}")),
        })?;
        serde_json::to_value(res).map_err(|e| SearchError::Failed(format!("aggregation result: {e}")))
    }

    /// Records per hour, oldest first: (hour start, unix µs; records).
    fn hours(&self) -> Result<Vec<(i64, u64)>, SearchError> {
        let req = serde_json::json!({
            "h": {"date_histogram": {"field": "timestamp", "fixed_interval": "1h", "min_doc_count": 1}}
        });
        let aggs: Aggregations = serde_json::from_value(req).map_err(|e| SearchError::Failed(format!("hours: {e}")))?;
        // Retention may look at many hours (a year is 8,760): a bigger bucket limit than the API's.
        let limits = AggregationLimitsGuard::new(Some(256 << 20), Some(1_000_000));
        let collector =
            AggregationCollector::from_aggs(aggs, AggContextParams::new(limits, self.index.tokenizers().clone()));
        let res = self.reader.searcher().search(&AllQuery, &collector).map_err(failed("hours"))?;
        let v = serde_json::to_value(res).map_err(|e| SearchError::Failed(format!("hours: {e}")))?;
        let buckets = v["h"]["buckets"].as_array().cloned().unwrap_or_default();
        Ok(buckets
            .iter()
            .filter_map(|b| Some(((b["key"].as_f64()? * 1000.0) as i64, b["doc_count"].as_u64()?)))
            .collect())
    }
}

/// The `search` sink: the index's writer, on the sink's thread.
pub struct SearchSink {
    shared: Arc<SearchIndex>,
    /// `None` after a failure: opened again (and the pending lines added again) on next use.
    writer: Option<IndexWriter>,
    /// The batches added since the last commit (whole lines).
    pending: Vec<u8>,
    retention_days: u64,
    max_bytes: u64,
    next_retention: Instant,
    stats: Arc<SinkStats>,
}

/// Opens (or creates) the index at `cfg.path` (its directory is created). An index that cannot
/// be opened (another process writes it; another schema) is an error naming the path.
pub fn open(cfg: &SinkConfig, stats: Arc<SinkStats>) -> Result<(SearchSink, Arc<SearchIndex>), String> {
    let path = cfg.path.clone();
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    std::fs::create_dir_all(&path).map_err(|e| at(&e))?;
    let dir = MmapDirectory::open(&path).map_err(|e| at(&e))?;
    let index = Index::open_or_create(dir, schema()).map_err(|e| {
        at(&format!("{e} (an index written by another version? move the directory away to start a new one)"))
    })?;
    let fields = Fields::of(&index.schema()).map_err(|e| at(&e))?;
    let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(|e| at(&e))?;
    let writer = open_writer(&index).map_err(|e| at(&e))?;
    let defaults = DEFAULT_FIELDS.iter().filter_map(|n| index.schema().get_field(n).ok()).collect();
    let parser = QueryParser::for_index(&index, defaults);
    let shared = Arc::new(SearchIndex { index, reader, parser, fields, path });
    tracing::info!(path = %shared.path.display(), records = shared.num_docs(), "analytics: search index open");
    let sink = SearchSink {
        shared: Arc::clone(&shared),
        writer: Some(writer),
        pending: Vec::new(),
        retention_days: cfg.retention_days,
        max_bytes: cfg.max_mb.saturating_mul(1 << 20),
        next_retention: Instant::now(),
        stats,
    };
    Ok((sink, shared))
}

fn open_writer(index: &Index) -> tantivy::Result<IndexWriter> {
    let opts = IndexWriterOptions::builder()
        .num_worker_threads(1)
        .num_merge_threads(1)
        .memory_budget_per_thread(WRITER_MEMORY)
        .build();
    let writer = index.writer_with_options(opts)?;
    // Segments that retention emptied by a third are merged away (their disk given back).
    let mut policy = LogMergePolicy::default();
    policy.set_del_docs_ratio_before_merge(0.3);
    writer.set_merge_policy(Box::new(policy));
    Ok(writer)
}

fn unix_us_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Bytes of the files in `dir` (tantivy's directory is flat).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

impl SearchSink {
    /// The index it writes (what the control plane is given).
    pub fn index(&self) -> &Arc<SearchIndex> {
        &self.shared
    }

    /// The writer; after a failure a new one, with the pending lines added again.
    fn writer(&mut self) -> Result<&mut IndexWriter, SinkFailure> {
        let fail = |e: tantivy::TantivyError| SinkFailure(format!("search index: {e}"));
        if self.writer.is_none() {
            let w = open_writer(&self.shared.index).map_err(fail)?;
            for line in decode::lines(&self.pending) {
                if let Ok(r) = decode::record(line) {
                    w.add_document(self.shared.fields.doc(&r, line)).map_err(fail)?;
                }
            }
            self.writer = Some(w);
        }
        self.writer.as_mut().ok_or_else(|| SinkFailure("search index: no writer".into()))
    }

    /// Commits what was added and lets the readers see it. On failure the writer is dropped
    /// (the uncommitted documents with it) and the pending lines are kept for the next one.
    pub fn commit(&mut self) -> Result<(), SinkFailure> {
        let w = self.writer()?;
        if let Err(e) = w.commit() {
            self.writer = None;
            return Err(SinkFailure(format!("search index commit: {e}")));
        }
        self.pending.clear();
        self.shared.reader.reload().map_err(|e| SinkFailure(format!("search index reload: {e}")))
    }

    /// Deletes records older than `retention_days`, then, while the index (its live part) is
    /// larger than `max_mb`, its oldest hours (never the newest), and commits.
    pub fn apply_retention(&mut self, now_us: i64) -> Result<(), SinkFailure> {
        let mut cut: Option<i64> = None;
        if self.retention_days > 0 {
            let days = i64::try_from(self.retention_days).unwrap_or(i64::MAX / 86_400_000_000);
            cut = Some(now_us.saturating_sub(days.saturating_mul(86_400_000_000)));
        }
        if self.max_bytes > 0 {
            if let Some(c) = self.size_cut().map_err(|e| SinkFailure(format!("search retention: {e}")))? {
                cut = Some(cut.map_or(c, |a| a.max(c)));
            }
        }
        let Some(cut) = cut else { return Ok(()) };
        let ts = self.shared.fields.timestamp;
        let old = RangeQuery::new(
            Bound::Unbounded,
            Bound::Excluded(Term::from_field_date(ts, DateTime::from_timestamp_micros(cut))),
        );
        let n = self.shared.reader.searcher().search(&old, &Count).unwrap_or(0);
        if n == 0 {
            return Ok(());
        }
        let w = self.writer()?;
        if let Err(e) = w.delete_query(Box::new(old)) {
            self.writer = None;
            return Err(SinkFailure(format!("search retention: {e}")));
        }
        self.commit()?;
        tracing::info!(records = n, "analytics: search retention deleted old records");
        Ok(())
    }

    /// The time before which records go to bring the index under `max_mb`, if it is over. The
    /// size counted is the directory's times the share of its documents not yet deleted (a
    /// deleted document's bytes go when its segment is merged).
    fn size_cut(&self) -> Result<Option<i64>, SearchError> {
        let bytes = dir_bytes(&self.shared.path);
        let searcher = self.shared.reader.searcher();
        let max_doc: u64 = searcher.segment_readers().iter().map(|s| u64::from(s.max_doc())).sum();
        let alive = searcher.num_docs();
        if max_doc == 0 || alive == 0 {
            return Ok(None);
        }
        let live = (bytes as u128 * alive as u128 / max_doc as u128) as u64;
        if live <= self.max_bytes {
            return Ok(None);
        }
        let per_doc = (bytes / max_doc).max(1);
        let mut excess = live - self.max_bytes;
        let hours = self.shared.hours()?;
        let mut cut = None;
        for (start, count) in hours.iter().take(hours.len().saturating_sub(1)) {
            cut = Some(start + 3_600_000_000);
            let freed = count.saturating_mul(per_doc);
            if freed >= excess {
                break;
            }
            excess -= freed;
        }
        Ok(cut)
    }
}

impl Sink for SearchSink {
    fn send(&mut self, batch: &[u8]) -> Result<(), SinkFailure> {
        let mut docs = Vec::new();
        let mut unreadable = 0;
        for line in decode::lines(batch) {
            match decode::record(line) {
                Ok(r) => docs.push(self.shared.fields.doc(&r, line)),
                Err(_) => unreadable += 1,
            }
        }
        let w = self.writer()?;
        for d in docs {
            if let Err(e) = w.add_document(d) {
                // Part of the batch may be in the writer: drop it all (and the uncommitted
                // batches before it, added again from `pending` by the next writer).
                self.writer = None;
                return Err(SinkFailure(format!("search index: {e}")));
            }
        }
        self.stats.dropped_unreadable.fetch_add(unreadable, Ordering::Relaxed);
        self.pending.extend_from_slice(batch);
        if self.pending.len() >= PENDING_MAX {
            // Delivered either way: a failed commit keeps the lines for the next one.
            if let Err(e) = self.commit() {
                tracing::warn!(error = %e, "analytics: search index commit failed; retried on the next tick");
            }
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), SinkFailure> {
        if !self.pending.is_empty() {
            self.commit()?;
        }
        if Instant::now() >= self.next_retention {
            self.next_retention = Instant::now() + RETENTION_EVERY;
            self.apply_retention(unix_us_now())?;
        }
        Ok(())
    }
}

impl Drop for SearchSink {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            if let Err(e) = self.commit() {
                tracing::warn!(error = %e, "analytics: search index: records since the last commit lost");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::clock::WallTime;
    use serde_json::{json, Value};

    /// 2026-12-01T10:00:00Z.
    const T0: u64 = 1_796_119_200_000_000;
    const HOUR: u64 = 3_600_000_000;

    /// One record line at `us` with these fields.
    fn line(us: u64, api: &str, code: u16, tags: &[&str], ms: u64) -> String {
        let t = WallTime::at(us);
        let rec = json!({
            "method": "GET", "host": "up:80", "path": format!("/{api}/get"), "raw_path": format!("/{api}/get?x=1"),
            "content_length": 0, "user_agent": "curl/8.5 test-agent", "api_key": if tags.is_empty() { "" } else { "k1" },
            "api_version": "Non Versioned", "api_name": format!("API {api}"), "api_id": api, "org_id": "org",
            "oauth_id": "", "alias": "", "ip_address": "10.0.0.1", "tags": tags, "track_path": false,
            "response_code": code, "request_time": ms, "request_time_us": ms * 1000,
            "latency": {"total": ms, "upstream": ms, "gateway": 0},
            "network": {"open_connections": 0, "closed_connections": 0, "bytes_in": 10, "bytes_out": 20},
            "timestamp": std::str::from_utf8(&t.rfc3339).unwrap(), "day": t.day, "month": t.month, "year": t.year,
            "hour": t.hour, "expire_after_s": 0, "raw_request": "", "raw_response": "",
        });
        format!("{rec}\n")
    }

    fn sink_at(dir: &Path, retention_days: u64, max_mb: u64) -> (SearchSink, Arc<SearchIndex>, Arc<SinkStats>) {
        let stats = Arc::new(SinkStats { name: "search".into(), ..Default::default() });
        let cfg = SinkConfig {
            sink: crate::config::AnalyticsSink::Search,
            path: dir.to_path_buf(),
            retention_days,
            max_mb,
            ..Default::default()
        };
        let (s, i) = open(&cfg, Arc::clone(&stats)).unwrap();
        (s, i, stats)
    }

    fn params(q: &str) -> Params {
        Params::parse(q).unwrap()
    }

    fn search(i: &SearchIndex, q: &str) -> Value {
        serde_json::from_str(&i.search(&params(q)).unwrap()).unwrap()
    }

    /// The seed's records and others around them: a 500 and a 200 of user foo, a 500 of
    /// another user, a 500 with a tag that only starts the same.
    fn seed(s: &mut SearchSink) -> Vec<String> {
        let lines = vec![
            line(T0, "jwt", 500, &["user-foo@bar.com", "x-team-blue"], 12),
            line(T0 + 1000, "jwt", 200, &["user-foo@bar.com"], 3),
            line(T0 + 2000, "jwt", 500, &["user-other@bar.com"], 40),
            line(T0 + HOUR, "open", 500, &["user-foo@bar.com.evil"], 7),
            line(T0 + 2 * HOUR, "open", 404, &[], 1),
        ];
        s.send(lines.concat().as_bytes()).unwrap();
        s.tick().unwrap();
        lines
    }

    #[test]
    fn the_seed_query_as_written_matches_exactly_the_right_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, i, stats) = sink_at(dir.path(), 0, 0);
        let lines = seed(&mut s);
        let r = search(&i, "q=response_code%3A500+AND+tags%3Auser-foo%40bar.com");
        assert_eq!(r["total"], 1, "{r}");
        let want: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(r["hits"][0], want, "the record as written");
        // Unencoded, as a shell user might type it into a URL (`@`, `:` are fine).
        assert_eq!(search(&i, "q=response_code:500%20AND%20tags:user-foo@bar.com")["total"], 1);
        // A tag is matched whole, not by its words.
        assert_eq!(search(&i, "q=tags:user-foo")["total"], 0);
        assert_eq!(search(&i, "q=tags:user-foo@bar.com")["total"], 2, "not the .evil one");
        assert_eq!(search(&i, "q=response_code:500")["total"], 3);
        // Default fields, text fields, ranges on fast fields.
        assert_eq!(search(&i, "q=open")["total"], 2);
        assert_eq!(search(&i, "q=user_agent:curl")["total"], 5);
        assert_eq!(search(&i, "q=request_time:%5B10+TO+*%5D")["total"], 2);
        // Newest first, `size`.
        let r = search(&i, "size=2");
        assert_eq!(r["total"], 5);
        assert_eq!(r["hits"].as_array().unwrap().len(), 2);
        assert_eq!(r["hits"][0]["response_code"], 404);
        assert_eq!(r["hits"][1]["api_id"], "open");
        assert_eq!(search(&i, "size=0")["hits"], json!([]));
        assert_eq!(stats.dropped_unreadable.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn time_bounds_select_records_both_ends_included() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, i, _) = sink_at(dir.path(), 0, 0);
        seed(&mut s);
        let t0_ms = T0 / 1000;
        assert_eq!(search(&i, &format!("from={t0_ms}&to={}", t0_ms + 2))["total"], 3);
        assert_eq!(search(&i, &format!("from={}", t0_ms + 1))["total"], 4);
        assert_eq!(search(&i, "from=2026-12-01T11:00:00Z")["total"], 2);
        assert_eq!(search(&i, "from=2026-12-01T12:00:00%2B01:00&to=2026-12-01T11:00:00.000000Z")["total"], 1);
        assert_eq!(search(&i, "to=2026-12-01")["total"], 0);
        assert_eq!(search(&i, "q=response_code:500&to=2026-12-01T10:30:00Z")["total"], 2);
    }

    #[test]
    fn bad_input_is_a_bad_request_naming_the_parameter() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, i, _) = sink_at(dir.path(), 0, 0);
        seed(&mut s);
        let bad = |q: &str, agg: bool| {
            let r =
                Params::parse(q).and_then(|p| if agg { i.aggregate(&p).map(|_| String::new()) } else { i.search(&p) });
            match r {
                Err(SearchError::BadRequest(m)) => m,
                other => panic!("{q}: {other:?}"),
            }
        };
        assert!(
            bad("q=response_code:(", false).starts_with("q=response_code:("),
            "{}",
            bad("q=response_code:(", false)
        );
        assert!(bad("q=nosuchfield:1", false).contains("nosuchfield"));
        assert!(bad("q=response_code:abc", false).contains("q="));
        assert!(bad("from=yesterday", false).contains("from=yesterday"));
        assert!(bad("to=2026-13-01", false).contains("to=2026-13-01"));
        assert!(bad("from=2026-12-02&to=2026-12-01", false).contains("after"));
        assert!(bad("size=1001", false).contains("size=1001"));
        assert!(bad("size=-1", false).contains("size=-1"));
        assert!(bad("sise=1", false).contains("sise"));
        assert!(bad("q=a&q=b", false).contains("twice"));
        assert!(bad("q=%zz", false).contains("q=%zz"));
        assert!(bad("interval=1w", true).contains("interval=1w"));
        assert!(bad("interval=0h", true).contains("interval=0h"));
        assert!(bad("interval=h", true).contains("interval=h"));
        assert!(bad("group_by=user_agent", true).contains("group_by=user_agent"));
        // Too many buckets for the range: the interval is named.
        assert!(bad("interval=1ms&group_by=api_id", true).contains("interval=1ms"));
    }

    #[test]
    fn aggregate_counts_per_bucket_and_group_with_percentiles() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, i, _) = sink_at(dir.path(), 0, 0);
        seed(&mut s);
        let r = i.aggregate(&params("interval=1h&group_by=response_code")).unwrap();
        let buckets = r["over_time"]["buckets"].as_array().unwrap();
        let counts: Vec<u64> = buckets.iter().map(|b| b["doc_count"].as_u64().unwrap()).collect();
        assert_eq!(counts, [3, 1, 1], "{r}");
        assert_eq!(buckets[0]["key"].as_f64().unwrap() as u64, T0 / 1000);
        assert_eq!(buckets[0]["key_as_string"], "2026-12-01T10:00:00Z");
        let groups: Vec<(u64, u64)> = buckets[0]["group"]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| (g["key"].as_f64().unwrap() as u64, g["doc_count"].as_u64().unwrap()))
            .collect();
        assert_eq!(groups, [(500, 2), (200, 1)]);
        let p = &r["request_time"]["values"];
        assert!(p["50.0"].as_f64().unwrap() >= 3.0 && p["99.0"].as_f64().unwrap() <= 41.0, "{r}");
        // A query and a group on a string field.
        let r = i.aggregate(&params("q=response_code:500&interval=1d&group_by=api_id")).unwrap();
        let b = &r["over_time"]["buckets"][0];
        assert_eq!(b["doc_count"], 3, "{r}");
        assert_eq!(b["group"]["buckets"][0], json!({"key": "jwt", "doc_count": 2}));
        // Without a group: the histogram alone.
        let r = i.aggregate(&params("")).unwrap();
        assert_eq!(r["over_time"]["buckets"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn retention_deletes_records_older_than_the_days_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, i, _) = sink_at(dir.path(), 2, 0);
        let day = 24 * HOUR;
        let lines =
            [line(T0, "a", 200, &[], 1), line(T0 + day, "b", 200, &[], 1), line(T0 + 3 * day, "c", 200, &[], 1)];
        s.send(lines.concat().as_bytes()).unwrap();
        s.commit().unwrap();
        assert_eq!(i.num_docs(), 3);
        // Now is T0 + 3 days + 1 hour: `a` (3 days old) goes, `b` (2 days and an hour) too.
        s.apply_retention((T0 + 3 * day + HOUR) as i64).unwrap();
        let r = search(&i, "");
        assert_eq!(r["total"], 1, "{r}");
        assert_eq!(r["hits"][0]["api_id"], "c");
    }

    #[test]
    fn retention_by_size_deletes_the_oldest_hours_but_never_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, i, _) = sink_at(dir.path(), 0, 1);
        // About 3 MiB of records over 3 hours (a tag of noise each, so they do not compress away).
        let mut n = 0u64;
        for h in 0..3 {
            let mut batch = String::new();
            for k in 0..4000u64 {
                n += 1;
                let noise = format!("{:x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ (k << 3));
                batch.push_str(&line(T0 + h * HOUR + k, "a", 200, &[&noise, &format!("{noise}{n}")], k));
            }
            s.send(batch.as_bytes()).unwrap();
            s.commit().unwrap();
        }
        assert!(dir_bytes(dir.path()) > 1 << 20, "{}", dir_bytes(dir.path()));
        s.apply_retention(unix_us_now()).unwrap();
        let left = search(&i, "size=1000")["total"].as_u64().unwrap();
        assert!((4000..12_000).contains(&left), "the oldest hour(s) go, the newest stays: {left}");
        let newest = search(&i, &format!("from={}", (T0 + 2 * HOUR) / 1000))["total"].as_u64().unwrap();
        assert_eq!(newest, 4000);
    }

    #[test]
    fn the_index_survives_a_restart_and_unreadable_lines_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, i, stats) = sink_at(dir.path(), 0, 0);
            let batch = [line(T0, "a", 200, &[], 1), "{not json\n".into(), "{\"response_code\":\"x\"}\n".into()];
            s.send(batch.concat().as_bytes()).unwrap();
            assert_eq!(stats.dropped_unreadable.load(Ordering::Relaxed), 2);
            s.tick().unwrap();
            assert_eq!(i.num_docs(), 1);
            // Sent, not committed: the sink commits when it is dropped (its thread ends).
            s.send(line(T0 + 1, "b", 200, &[], 1).as_bytes()).unwrap();
        }
        let (mut s, i, _) = sink_at(dir.path(), 0, 0);
        assert_eq!(i.num_docs(), 2);
        s.send(line(T0 + 2, "c", 200, &[], 1).as_bytes()).unwrap();
        s.tick().unwrap();
        assert_eq!(search(&i, "")["total"], 3);
        // A second writer on the same directory is refused, naming it.
        let cfg =
            SinkConfig { sink: crate::config::AnalyticsSink::Search, path: dir.path().into(), ..Default::default() };
        let e = open(&cfg, Arc::new(SinkStats::default())).err().unwrap();
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
    }

    #[test]
    fn a_failed_writer_loses_no_delivered_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, i, _) = sink_at(dir.path(), 0, 0);
        s.send(line(T0, "a", 200, &[], 1).as_bytes()).unwrap();
        // As after a failed add or commit: the writer and what it had not committed are gone.
        s.writer = None;
        s.send(line(T0 + 1, "b", 200, &[], 1).as_bytes()).unwrap();
        s.tick().unwrap();
        assert_eq!(search(&i, "")["total"], 2);
    }

    #[test]
    fn times_and_intervals_parse() {
        assert_eq!(parse_time("from", "1796119200000").unwrap(), T0 as i64);
        assert_eq!(parse_time("from", "2026-12-01T10:00:00Z").unwrap(), T0 as i64);
        assert_eq!(parse_time("from", "2026-12-01T10:00:00.5Z").unwrap(), T0 as i64 + 500_000);
        assert_eq!(parse_time("from", "2026-12-01T11:30:00+01:30").unwrap(), T0 as i64);
        assert_eq!(parse_time("from", "2026-12-01").unwrap(), T0 as i64 - 10 * HOUR as i64);
        for bad in ["", "2026-12-01T10:00Z", "2026-12-01T10:00:00", "99999999999999999999", "2026-12-01T25:00:00Z"] {
            assert!(parse_time("from", bad).is_err(), "{bad}");
        }
        assert_eq!(interval_ms("90s").unwrap(), 90_000);
        assert_eq!(interval_ms("1d").unwrap(), 86_400_000);
        assert!(interval_ms("99999999999999999999d").is_err());
        assert_eq!(form_decode("a+b%20c%40"), Some("a b c@".into()));
        assert_eq!(form_decode("%e2%82"), None);
    }
}
