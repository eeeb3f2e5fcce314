//! The TOML config file: typed sections with documented defaults, parsing and validation.
//!
//! The doc comments of `Config`, of each section struct and of each key are the configuration
//! reference: `cargo xtask docs` writes them, with each key's type and default, to
//! docs/configuration.md (a tidy test fails when that file is out of date). Unknown keys are
//! errors (a typo must not silently fall back to a default).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use portcullis_http1::MAX_HEADERS;
use serde::{Deserialize, Serialize};

use super::{CliOverrides, ConfigError};

/// One TOML file (`portcullis.toml` is the example), read by `portcullis run` and checked by
/// `portcullis check`. Unknown keys are errors. Relative paths in the file are relative to the
/// file's directory.
///
/// Every key can be overridden by the environment as `PORTCULLIS_<SECTION>_<KEY>` (for example
/// `PORTCULLIS_ADMIN_SECRET=s3cret`, `PORTCULLIS_PROXY_MAX_CONNECTIONS_PER_WORKER=5000`; lists as
/// comma-separated values), and the flags of `portcullis run` (`--listen`, `--admin`, `--apps`,
/// `--policies`, `--workers`) win over both.
///
/// A reload (`SIGHUP` or `/tyk/reload`) applies every key except those marked "read at startup
/// only", which take effect on restart. The config file, the API definitions and the policies
/// file must be regular files (symlinks to them are followed) of at most 16 MiB; anything else (a
/// FIFO, a device such as `/dev/zero`, a directory) is an error naming the file, never a hang.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub apps: AppsConfig,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub cluster: ClusterConfig,
    pub ebpf: EbpfConfig,
    pub analytics: AnalyticsConfig,
    pub visibility: VisibilityConfig,
    pub log: LogConfig,
    pub tls: TlsConfig,
}

/// `[visibility]`: API visibility (docs/visibility.md). Per API, the gateway lists the endpoints
/// its traffic uses, reconstructs an OpenAPI 3.1 document from sampled exchanges, and compares
/// traffic with the OpenAPI document provided for the API (`<definition>.openapi.json|yaml`
/// beside its definition, or `PUT /api/visibility/{api_id}/spec`): shadow, zombie and drift
/// findings, and in `enforce` mode a 404 for what the document does not have.
///
/// What traffic says comes from the request records (`[analytics]`): with `[analytics] enabled
/// = false`, or for an API with `do_not_track`, nothing is learnt (a provided document is still
/// enforced). Settings apply to every API; an API overrides them in its definition
/// (`portcullis_visibility`, the same keys) and `[[visibility.apis]]` overrides both for the
/// `api_id` it names. A reload applies every key but `state_dir`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VisibilityConfig {
    /// Learn from traffic (inventory, reconstruction, findings) for APIs that do not say
    /// otherwise.
    pub enabled: bool,
    /// Share of requests, 0.0 to 1.0, whose request and response bodies are kept for schema
    /// inference and drift (an exchange sampled has its response body copied, not spliced, up
    /// to `max_body_bytes`). Every request counts in the inventory and is judged shadow or
    /// zombie whatever this says. The default keeps the gateway benchmark's CPU per request
    /// within noise (bench/README.md).
    pub sample_rate: f64,
    /// Most bytes of a sampled request's or response's body kept (with its head); a body cut
    /// short is used for the inventory but not for schemas.
    pub max_body_bytes: usize,
    /// Most endpoints (method and path template) kept per API; past it, new ones are counted
    /// (`portcullis_visibility_capped_total{reason="endpoints"}`) and not listed.
    pub max_endpoints_per_api: usize,
    /// Bodies of these media types are kept when sampled (a type ending in `+json` matches
    /// `+json`); others keep their head only.
    pub content_types: Vec<String>,
    /// `observe`: report findings; `enforce`: also answer a request for an endpoint the
    /// provided document does not have with 404 (JSON).
    pub mode: VisibilityMode,
    /// With `mode = "enforce"`: also refuse, 400, a request whose parameters or JSON body fail
    /// the provided document's request schema, naming the failing field's JSON pointer.
    pub validate_requests: bool,
    /// Where each API's inventory and findings are kept across restarts
    /// (`<state_dir>/<api_id>.json`, written every 10 s and at shutdown), relative to the
    /// config file. Read at startup only.
    pub state_dir: PathBuf,
    /// Settings for one API by `api_id` (`[[visibility.apis]]`), over its definition's.
    pub apis: Vec<VisibilityApi>,
}

/// `[visibility] mode`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum VisibilityMode {
    /// Findings are reported; every request goes on.
    #[default]
    Observe,
    /// Requests for endpoints the provided document does not have are refused (404).
    Enforce,
}

impl Default for VisibilityConfig {
    fn default() -> Self {
        VisibilityConfig {
            enabled: true,
            sample_rate: 0.01,
            max_body_bytes: 65536,
            max_endpoints_per_api: 1000,
            content_types: vec!["application/json".into(), "+json".into()],
            mode: VisibilityMode::Observe,
            validate_requests: false,
            state_dir: "visibility".into(),
            apis: Vec::new(),
        }
    }
}

/// `[[visibility.apis]]`: one API's settings; a key left out keeps the definition's, else
/// `[visibility]`'s.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VisibilityApi {
    /// The API's `api_id`.
    pub api_id: String,
    /// As `[visibility] enabled`, for this API.
    pub enabled: Option<bool>,
    /// As `[visibility] sample_rate`, for this API.
    pub sample_rate: Option<f64>,
    /// As `[visibility] max_body_bytes`, for this API.
    pub max_body_bytes: Option<usize>,
    /// As `[visibility] content_types`, for this API.
    pub content_types: Option<Vec<String>>,
    /// As `[visibility] mode`, for this API.
    pub mode: Option<VisibilityMode>,
    /// As `[visibility] validate_requests`, for this API.
    pub validate_requests: Option<bool>,
}

// Written out (not derived): the reference generator (`cargo xtask docs`) reads each key's
// default from here.
#[expect(clippy::derivable_impls, reason = "the docs generator reads defaults from this impl")]
impl Default for VisibilityApi {
    fn default() -> Self {
        VisibilityApi {
            api_id: String::new(),
            enabled: None,
            sample_rate: None,
            max_body_bytes: None,
            content_types: None,
            mode: None,
            validate_requests: None,
        }
    }
}

impl Config {
    /// `[visibility]`: rates within 0..=1, `[[visibility.apis]]` naming each API once.
    fn validate_visibility(&self, path: &Path, errs: &mut Vec<ConfigError>) {
        let v = &self.visibility;
        let rate_ok = |r: f64| (0.0..=1.0).contains(&r);
        if !rate_ok(v.sample_rate) {
            errs.push(ConfigError::new(
                path,
                "visibility.sample_rate",
                v.sample_rate.to_string(),
                "must be 0.0 to 1.0",
            ));
        }
        if v.max_endpoints_per_api == 0 {
            errs.push(ConfigError::new(path, "visibility.max_endpoints_per_api", "0", "must be at least 1"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in v.apis.iter().enumerate() {
            let field = |k: &str| format!("visibility.apis[{i}].{k}");
            if a.api_id.is_empty() {
                errs.push(ConfigError::new(path, field("api_id"), "", "names no API"));
            } else if !seen.insert(a.api_id.as_str()) {
                errs.push(ConfigError::new(path, field("api_id"), &a.api_id, "a second entry for this API"));
            }
            if let Some(r) = a.sample_rate.filter(|r| !rate_ok(*r)) {
                errs.push(ConfigError::new(path, field("sample_rate"), r.to_string(), "must be 0.0 to 1.0"));
            }
        }
    }
}

/// `[analytics]`: request records (Tyk's AnalyticsRecord fields, one JSON line per request;
/// docs/analytics.md), and where they go: one or more sinks, each with its own queue and disk
/// spool.
///
/// Without `[[analytics.sinks]]`, the records go to the sink named by `sink` (the JSON lines
/// file at `path`, or stdout) and to the embedded search index at `index_path` (the
/// admin API's `/api/analytics/search` and `/api/analytics/aggregate`; it keeps 7 days within
/// 1024 MiB: give a `search` sink in `[[analytics.sinks]]` for other `retention_days` or
/// `max_mb`); `sink = "search"`
/// sends them to the index only. With `[[analytics.sinks]]`, they go to exactly the sinks
/// listed there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Write a record for every request that matched an API (except APIs with
    /// `do_not_track: true`). A reload applies it.
    pub enabled: bool,
    /// The first sink when `[[analytics.sinks]]` is not given: `file` or `stdout` (the search
    /// index comes second), or `search` (the search index alone). Read at startup only: a
    /// reload that changes it says so in `restart_needed`.
    pub sink: AnalyticsSink,
    /// The JSON lines file of a `file` sink that names no `path`, relative to the config file;
    /// its directory is created. If it cannot be opened at startup the proxy does not start,
    /// naming the path. Read at startup only: a reload that changes it says so in `restart_needed`.
    pub path: PathBuf,
    /// Rotate the file before it would grow past this many MiB; 0 = never (for a `file` sink
    /// that sets no `rotate_mb`). Read at startup only: a reload that changes it says so in `restart_needed`.
    pub rotate_mb: u64,
    /// Rotated files kept (`<path>.1` is the newest), so the records take at most
    /// `(keep + 1) x rotate_mb` MiB; 0 = none. Read at startup only: a reload that changes it says so in `restart_needed`.
    pub keep: usize,
    /// Batches (up to 64 KiB of records each) queued per worker for the analytics thread, and
    /// per sink between the analytics thread and the sink's thread; when the workers' queue is
    /// full, records are dropped and counted (`portcullis_analytics_dropped_total`).
    /// Read at startup only: a reload that changes it says so in `restart_needed`.
    pub queue_batches: usize,
    /// Where each sink keeps the batches it could not deliver yet (`<spool_dir>/<sink name>/`),
    /// relative to the config file. Read at startup only.
    pub spool_dir: PathBuf,
    /// The embedded search index's directory for a `search` sink that names no `path`, relative
    /// to the config file. Read at startup only.
    pub index_path: PathBuf,
    /// Tyk's `enable_detailed_recording` for every API (an API definition's own
    /// `enable_detailed_recording: true` turns it on for that API): records carry the request
    /// and response as sent (`raw_request`, `raw_response`, base64), credentials redacted. A
    /// reload applies it.
    pub detailed_recording: bool,
    /// Most bytes of a request or response (head and body) a detailed record keeps; the rest is
    /// cut. A reload applies it.
    pub detailed_max_bytes: usize,
    /// Tyk's `expire_analytics_after` for every API that sets none: seconds after which a
    /// record's `expireAt` lies (Tyk's pump and Mongo use it); 0 = Tyk's 100 years. A reload
    /// applies it.
    pub expire_after_s: u64,
    /// The sinks (`[[analytics.sinks]]`, one table each); see above for what an empty list
    /// means. Read at startup only.
    pub sinks: Vec<SinkConfig>,
}

/// `[analytics] sink`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AnalyticsSink {
    /// JSON lines appended to `path`, rotated at `rotate_mb`.
    #[default]
    File,
    /// JSON lines on standard output.
    Stdout,
    /// Tyk pump's input: msgpack AnalyticsRecords pushed to the Redis list
    /// `analytics-tyk-system-analytics`.
    Redis,
    /// ClickHouse over its HTTP interface (`INSERT ... FORMAT JSONEachRow`).
    Clickhouse,
    /// The embedded full-text index (tantivy) behind `/api/analytics/search`.
    Search,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            enabled: true,
            sink: AnalyticsSink::File,
            path: "analytics/records.jsonl".into(),
            rotate_mb: 100,
            keep: 5,
            queue_batches: 64,
            spool_dir: "analytics/spool".into(),
            index_path: "analytics/index".into(),
            detailed_recording: false,
            detailed_max_bytes: 16384,
            expire_after_s: 0,
            sinks: Vec::new(),
        }
    }
}

impl AnalyticsConfig {
    /// The sinks records go to: `sinks`, or without it the `sink` and the search index (the
    /// index alone when `sink` is `search`).
    pub fn effective_sinks(&self) -> Vec<SinkConfig> {
        let mut sinks = if self.sinks.is_empty() {
            // The implicit index keeps a week, within `max_mb`'s default.
            let search = SinkConfig { sink: AnalyticsSink::Search, retention_days: 7, ..Default::default() };
            if self.sink == AnalyticsSink::Search {
                vec![search]
            } else {
                let first =
                    SinkConfig { sink: self.sink, rotate_mb: self.rotate_mb, keep: self.keep, ..Default::default() };
                vec![first, search]
            }
        } else {
            self.sinks.clone()
        };
        for s in &mut sinks {
            if s.path.as_os_str().is_empty() {
                match s.sink {
                    AnalyticsSink::File => s.path = self.path.clone(),
                    AnalyticsSink::Search => s.path = self.index_path.clone(),
                    _ => {}
                }
            }
        }
        sinks
    }
}

/// `[[analytics.sinks]]`: one sink. Keys a kind of sink does not use are errors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// The kind of sink.
    pub sink: AnalyticsSink,
    /// Its name in `/metrics` (`sink` label) and in the spool directory; default: the kind.
    /// Two sinks of one kind need names.
    pub name: String,
    /// `file`: the JSON lines file (default: `[analytics] path`); `search`: the index directory
    /// (default: `[analytics] index_path`). Relative to the config file.
    pub path: PathBuf,
    /// `file`: rotate the file before it would grow past this many MiB; 0 = never. (`[analytics]
    /// rotate_mb` and `keep` are the implicit file sink's, without `[[analytics.sinks]]`.)
    pub rotate_mb: u64,
    /// `file`: rotated files kept.
    pub keep: usize,
    /// `redis`: the server (default: `[storage] redis`); `clickhouse`: the HTTP interface
    /// (default `http://127.0.0.1:8123`).
    pub url: String,
    /// `redis`: the list (Tyk's `analytics-tyk-system-analytics`).
    pub key: String,
    /// `redis`: Tyk's `enable_multiple_analytics_keys`: each batch goes to one of the lists
    /// `<key>_0` .. `<key>_9`, as a Tyk gateway spreads them for several pumps.
    pub multiple_keys: bool,
    /// `clickhouse`: database (created if missing).
    pub database: String,
    /// `clickhouse`: table (created if missing: MergeTree partitioned by day, ordered by
    /// `(api_id, timestamp)`).
    pub table: String,
    /// `clickhouse`: user (`X-ClickHouse-User`); empty: the server's `default`.
    pub user: String,
    /// `clickhouse`: password (`X-ClickHouse-Key`).
    pub password: String,
    /// `clickhouse`, `search`: records older than this many days are deleted; 0 = kept.
    /// `clickhouse`: a table TTL on ClickHouse 19.6 and later (set when the sink creates the
    /// table), else the sink drops whole day partitions past it every 5 minutes.
    pub retention_days: u64,
    /// `search`: the index is kept under this many MiB by deleting its oldest records; 0 = no
    /// bound (the index is about 160 bytes per record: 1 GiB holds some 6 million).
    pub max_mb: u64,
    /// The most MiB of undelivered batches this sink spools to disk while it is down or slow;
    /// past it, batches are dropped and counted
    /// (`portcullis_analytics_sink_dropped_total{reason="spool_full"}`). 0 = no spool.
    pub spool_mb: u64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            sink: AnalyticsSink::File,
            name: String::new(),
            path: PathBuf::new(),
            rotate_mb: 100,
            keep: 5,
            url: String::new(),
            key: "analytics-tyk-system-analytics".into(),
            multiple_keys: false,
            database: "default".into(),
            table: "portcullis_records".into(),
            user: String::new(),
            password: String::new(),
            retention_days: 0,
            max_mb: 1024,
            spool_mb: 256,
        }
    }
}

impl SinkConfig {
    /// The name in metrics and the spool: `name`, else the kind.
    pub fn label(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        match self.sink {
            AnalyticsSink::File => "file",
            AnalyticsSink::Stdout => "stdout",
            AnalyticsSink::Redis => "redis",
            AnalyticsSink::Clickhouse => "clickhouse",
            AnalyticsSink::Search => "search",
        }
        .into()
    }
}

impl Config {
    /// `[[analytics.sinks]]`: names unique, each sink's own keys only, URLs that parse.
    fn validate_sinks(&self, path: &Path, errs: &mut Vec<ConfigError>) {
        let a = &self.analytics;
        let d = SinkConfig::default();
        let mut names = std::collections::HashSet::new();
        for (i, s) in a.effective_sinks().iter().enumerate() {
            let field = |k: &str| format!("analytics.sinks[{i}].{k}");
            if !names.insert(s.label()) {
                errs.push(ConfigError::new(
                    path,
                    field("name"),
                    s.label(),
                    "two sinks with one name: give each a `name`",
                ));
            }
            if !s.label().chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                errs.push(ConfigError::new(path, field("name"), s.label(), "letters, digits, - and _ only"));
            }
            let uses = |k: &str| match s.sink {
                AnalyticsSink::File => ["path", "rotate_mb", "keep"].contains(&k),
                AnalyticsSink::Stdout => false,
                AnalyticsSink::Redis => ["url", "key", "multiple_keys"].contains(&k),
                AnalyticsSink::Clickhouse => {
                    ["url", "database", "table", "user", "password", "retention_days"].contains(&k)
                }
                AnalyticsSink::Search => ["path", "retention_days", "max_mb"].contains(&k),
            };
            let set: [(&str, bool); 11] = [
                ("rotate_mb", s.rotate_mb != d.rotate_mb),
                ("keep", s.keep != d.keep),
                ("url", s.url != d.url),
                ("key", s.key != d.key),
                ("multiple_keys", s.multiple_keys != d.multiple_keys),
                ("database", s.database != d.database),
                ("table", s.table != d.table),
                ("user", s.user != d.user),
                ("password", s.password != d.password),
                ("retention_days", s.retention_days != d.retention_days),
                ("max_mb", s.max_mb != d.max_mb),
            ];
            // `path` is filled in for file and search sinks by `effective_sinks`.
            let path_set =
                !s.path.as_os_str().is_empty() && !matches!(s.sink, AnalyticsSink::File | AnalyticsSink::Search);
            for (k, v) in set.into_iter().chain([("path", path_set)]) {
                if v && !uses(k) {
                    errs.push(ConfigError::new(
                        path,
                        field(k),
                        s.label(),
                        format!("a {} sink has no `{k}`", s.label()),
                    ));
                }
            }
            if s.sink == AnalyticsSink::Redis {
                let url = if s.url.is_empty() { &self.storage.redis } else { &s.url };
                if url.is_empty() {
                    errs.push(ConfigError::new(path, field("url"), "", "a redis sink needs `url` or [storage] redis"));
                } else if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    errs.push(ConfigError::new(path, field("url"), url, "must be a redis:// URL"));
                }
                if s.key.is_empty() {
                    errs.push(ConfigError::new(path, field("key"), "", "must name the list"));
                }
            }
            if s.sink == AnalyticsSink::Clickhouse {
                if !(s.url.is_empty() || s.url.starts_with("http://") || s.url.starts_with("https://")) {
                    errs.push(ConfigError::new(path, field("url"), &s.url, "must be an http:// URL"));
                }
                for (k, v) in [("database", &s.database), ("table", &s.table)] {
                    if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        errs.push(ConfigError::new(path, field(k), v, "letters, digits and _ only"));
                    }
                }
            }
        }
        if a.detailed_max_bytes == 0 {
            errs.push(ConfigError::new(path, "analytics.detailed_max_bytes", "0", "must be at least 1"));
        }
    }
}

/// `[ebpf]`: the kernel fast path (the XDP gate, docs/ebpf.md) and bans.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EbpfConfig {
    /// `auto`: use the XDP gate when it can be loaded, else enforce in user space (one log
    /// line); `on`: refuse to start without it; `off`: user space only. Read at startup only.
    pub mode: EbpfMode,
    /// Interfaces to attach the XDP gate to, e.g. `["eth0"]` (`PORTCULLIS_EBPF_INTERFACES=eth0,eth1`):
    /// native mode, generic as a fallback with a warning. Read at startup only.
    pub interfaces: Vec<String>,
    /// TCP SYNs per second allowed per source address (per CPU) to `syn_ports`; 0 = off.
    pub syn_rate_per_sec: u32,
    /// Burst of the SYN limiter's token bucket.
    pub syn_burst: u32,
    /// Destination ports the SYN limiter watches (at most 8); empty = the proxy's listen port.
    pub syn_ports: Vec<u16>,
    /// IPs or CIDRs whose packets are always dropped (shown in `GET /api/bans` as
    /// `source: config`).
    pub deny_cidrs: Vec<String>,
    /// IPs or CIDRs never dropped, rate limited or banned.
    pub allow_cidrs: Vec<String>,
    /// Capacity of the banned-address map (LRU beyond it). Read at startup only.
    pub max_bans: u32,
    /// Source addresses tracked by the SYN limiter (LRU beyond it). Read at startup only.
    pub max_syn_sources: u32,
    /// cgroup v2 directory to attach the telemetry (sock_ops) program to; empty = this process's
    /// cgroup. Read at startup only.
    pub cgroup: String,
}

/// `[ebpf] mode`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EbpfMode {
    #[default]
    Auto,
    On,
    Off,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig {
            mode: EbpfMode::Auto,
            interfaces: Vec::new(),
            syn_rate_per_sec: 0,
            syn_burst: 20,
            syn_ports: Vec::new(),
            deny_cidrs: Vec::new(),
            allow_cidrs: Vec::new(),
            max_bans: 65_536,
            max_syn_sources: 65_536,
            cgroup: String::new(),
        }
    }
}

/// Which monoio driver the workers use.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum IoDriver {
    /// io_uring set up for one thread (SINGLE_ISSUER + DEFER_TASKRUN, Linux 6.1+), measured
    /// cheaper per request than epoll (docs/decisions/0003-io-uring-ring-per-thread.md); epoll,
    /// with one log line saying why, when that ring cannot be set up.
    #[default]
    Auto,
    /// io_uring (the single-thread setup when the kernel has it, else a default ring); falls
    /// back to epoll, with a warning, when io_uring cannot be set up (e.g. under a seccomp
    /// profile or `kernel.io_uring_disabled`).
    Uring,
    /// epoll readiness (monoio's LegacyDriver).
    Epoll,
}

/// What the `X-RateLimit-*` headers of a response report (Tyk's gateway setting
/// `rate_limit_response_headers`, internal/rate/headers.go).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitHeaders {
    /// The identity's quota, on proxied responses only (Tyk's default).
    #[default]
    Quotas,
    /// The rate limit, on proxied responses and on refusals.
    RateLimits,
}

/// `[proxy]`: the data plane.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address the workers listen on (each worker binds its own SO_REUSEPORT socket). The proxy
    /// refuses to start when another process already listens there (SO_REUSEPORT would
    /// otherwise let a second instance share the port silently); a port still held by a process
    /// that just exited is waited for up to 2 s. Read at startup only: a reload that changes it says so in `restart_needed`.
    pub listen: String,
    /// Number of workers, at most [`MAX_WORKERS`]; 0 = one per CPU in the process's affinity mask
    /// (`taskset -c 1 portcullis run --workers 1` runs one worker on CPU 1). Worker *i* is
    /// pinned to the *i*-th CPU of the mask. Read at startup only: a reload that changes it says so in `restart_needed`.
    pub workers: usize,
    /// The workers' I/O driver; `portcullis_worker_info{driver=...}` in `/metrics` shows what
    /// each worker runs. Read at startup only: a reload that changes it says so in `restart_needed`.
    pub io_driver: IoDriver,
    /// Open client connections per worker; connections beyond it are closed at once and counted
    /// in `portcullis_worker_connections_refused_total`.
    pub max_connections_per_worker: usize,
    /// listen(2) backlog of each worker's socket. Read at startup only: a reload that changes it says so in `restart_needed`.
    pub accept_backlog: u32,
    /// Size of each per-connection read buffer, bytes, per direction (bodies stream through it;
    /// at least 1024). Buffers start at 2 KiB and grow only when a read fills them, and only the
    /// pages a connection fills become resident, so a large value costs memory only for large
    /// messages, and lets a 16 KiB response arrive in one read (where it is not spliced, see
    /// `splice_min_body`).
    pub buffer_size: usize,
    /// Largest request head (request line + headers) accepted, bytes, between 256 and 64 x
    /// `buffer_size`; larger gets 431.
    pub max_request_head_size: usize,
    /// Largest response head accepted from an upstream, bytes; larger gets 502.
    pub max_response_head_size: usize,
    /// Largest request body, bytes; larger gets 413. 0 = no limit.
    pub max_request_body_size: u64,
    /// `Content-Length` response bodies with at least this many bytes still to come after the
    /// head read move from the upstream to the client socket through a pipe with splice(2), so
    /// the proxy never copies them in and out. 0 = always copy.
    ///
    /// For an API whose recent responses were that large, each worker reads the head with a
    /// 1 KiB read so the body stays in the socket; where those heads also went to the client
    /// unchanged, that read is a peek and the head is spliced with the body (one write fewer per
    /// response). In `rate_limit_response_headers = "quotas"` mode (the default) that is every
    /// keyless response; a keyed one carries the three quota headers. Needs two descriptors per body in
    /// flight (pipes are reused; a worker keeps at most 64 idle ones); when a pipe cannot be
    /// made the body is copied and one warning is logged.
    ///
    /// Where splicing starts to pay depends on the host: on one test VM it measured 0.90x the CPU
    /// per request of copying for 16 KiB bodies and 0.74x for 32 KiB; on another copying was
    /// cheaper up to about 32 KiB (16 KiB: splice 1.04-1.08x); others measured 0.97x and 0.89x
    /// at 16 KiB (docs/decisions/0009-splice-response-bodies.md). Measure with your body sizes:
    /// `cargo xtask bench --baseline` with a wrapper that sets
    /// `PORTCULLIS_PROXY_SPLICE_MIN_BODY=0` compares both in one run.
    pub splice_min_body: usize,
    /// Most headers in a request or response head (at most 128); more gets 431 (request) or
    /// 502 (response).
    pub max_headers: usize,
    /// Time to receive a complete request head once its first byte arrived, ms; then the
    /// connection closes.
    pub header_read_timeout_ms: u64,
    /// Idle keep-alive time between requests on a client connection, and the longest pause
    /// while reading a request body, ms.
    pub client_idle_timeout_ms: u64,
    /// Time to establish an upstream TCP connection, ms (exceeded, refused or unreachable: 500
    /// "There was a problem proxying the request", as Tyk answers a failed dial).
    pub upstream_connect_timeout_ms: u64,
    /// How long a worker keeps the address an upstream host name resolved to, s (0: resolve
    /// for every new upstream connection). A name that did not resolve is asked again after 5 s.
    /// Names are resolved by the control plane (the system resolver, on its blocking pool),
    /// never on a worker; an API whose target does not resolve loads, and its requests get 500
    /// "Upstream host lookup failed" (as Tyk).
    pub dns_ttl_secs: u64,
    /// Time for the upstream to send its response head, and longest pause between body reads, ms
    /// (exceeded: 504 "Upstream service reached hard timeout." before the head, connection
    /// closed after it).
    pub upstream_response_timeout_ms: u64,
    /// Leave out the `X-Generator: tyk.io` header Tyk puts on every error it answers (Tyk's
    /// `hide_generator_header`). Sent by default so that monitoring written for Tyk sees its
    /// errors unchanged.
    pub hide_generator_header: bool,
    /// What `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` report, as
    /// Tyk's gateway setting of the same name (internal/rate/headers.go). An upstream's own
    /// headers of these three names never reach the client: they are replaced or removed.
    ///
    /// `"quotas"` (Tyk's default): the quota of the request's identity, its `quota_max`, what
    /// is left of it after this request, and the Unix time (seconds) it renews. Only on
    /// responses from the upstream, never on refusals (429, 403) or other errors, as Tyk. A key
    /// without a quota (or `disable_quota`) gets `0`, `0`, `0`; Tyk would echo its stored
    /// `quota_max` (`-1` or `0`) and its last stored remaining and renewal time. A keyless
    /// request gets none, where Tyk sends `0`, `0`, `0`: they say nothing, and they would keep
    /// every keyless response head from going out unchanged, spliced with its body (see
    /// `splice_min_body`).
    ///
    /// `"rate_limits"`: the rate limit the request was checked against (the key's first, then
    /// the endpoint's, the client IP's, the API's): requests per its period, whole requests left
    /// in its bucket, and the Unix time (seconds) the bucket is full again. On responses from the
    /// upstream and on refusals: the 429, and a quota's 403 after the rate let the request
    /// through (Tyk sets them before it decides). A request no rate limit applies to gets none.
    ///
    /// Neither sends `Retry-After` or `X-Quota-*`: Tyk sends neither in either mode, so a client
    /// written against Tyk sees the headers it knows. `X-RateLimit-Reset` (`"rate_limits"`) says
    /// when to retry; who wants `Retry-After` on 429s sets it as Tyk users do, as a header of an
    /// `error_overrides` rule on flag `RLT` (Tyk's own CI config does), which one of ours would
    /// duplicate.
    pub rate_limit_response_headers: RateLimitHeaders,
    /// The gateway listener answers `GET /<name>` itself, before any API is matched (so it wins
    /// over an API at listen path `/`), as Tyk answers its liveness check when it has no separate
    /// `control_api_port` (Tyk's `health_check_endpoint_name`, default `hello`:
    /// gateway/server.go:898, health_check.go:212-262): always 200, Tyk's body
    /// `{"status":"pass","version":...,"description":"Tyk GW","details":{...}}` and a newline,
    /// with the admin listener's checks as `details` (refreshed every second and on reload);
    /// another method gets 405 `{"status":"error","message":"Method Not Allowed"}`. One or more
    /// path segments (`health`, `health/live`) of letters, digits and `-._~`; matched exactly,
    /// without the query. Empty: not answered on the gateway listener (Tyk uses `hello` then);
    /// the admin listener's `/hello` is always there (docs/admin-api.md). These
    /// answers count in the metrics with `api=""` and write no request record.
    pub health_check_endpoint_name: String,
    /// The same for Tyk's readiness check (Tyk's `readiness_check_endpoint_name`, default
    /// `ready`: health_check.go:270-325): 200 with `"description":"Tyk GW Ready"` when the
    /// configuration is loaded and the key store reachable, else 503
    /// `{"status":"error","message":"..."}` (while draining: `Gateway is shutting down`).
    /// Empty: not answered on the gateway listener; must differ from
    /// `health_check_endpoint_name`.
    pub readiness_check_endpoint_name: String,
    /// Certificate authorities (PEM bundle, relative to the config file) that HTTPS upstreams'
    /// certificates are verified against; empty = the system's trust store (`SSL_CERT_FILE`,
    /// `SSL_CERT_DIR`, else the distribution's bundle), as Tyk uses the system's. Read with each
    /// load that has an `https://` target.
    pub upstream_ca_file: PathBuf,
    /// Idle upstream connections kept per worker and target, until `upstream_idle_timeout_ms`
    /// (0 = no pooling).
    pub upstream_pool_size: usize,
    /// Idle upstream connections beyond `upstream_pool_size` (a burst's) stay pooled this long,
    /// ms, then the oldest close down to the pool size (checked every 200 ms), so the next burst
    /// reuses them instead of reconnecting; 0 = close them at once, as nginx's `keepalive N`
    /// does. Under 1,000 concurrent clients this spared 2,000-31,000 upstream connects per 5 s
    /// and cut p99 by a third (docs/decisions/0012-upstream-pool-surplus.md).
    pub upstream_pool_surplus_ms: u64,
    /// Upstream connections in use at once per worker and target (so at most `workers` x this
    /// per target); when all are busy, further requests wait in line (FIFO) and each finished
    /// exchange hands its keep-alive connection to the oldest waiter. Protects an upstream from a
    /// connection per concurrent client. WebSocket/upgrade tunnels do not count once switched.
    /// 0 = no cap (a new connection per concurrent request). Why 1024 and not lower:
    /// docs/decisions/0011-upstream-connection-cap.md.
    pub upstream_max_connections: usize,
    /// Longest wait in that line, ms; then `503 {"error": "upstream connection limit reached"}`
    /// (counted in `portcullis_upstream_queue_timeouts_total`).
    pub upstream_queue_timeout_ms: u64,
    /// Request bodies up to this many bytes (chunked: until they end or pass it) are read whole
    /// before an upstream connection is taken, so a client that sends its body slowly holds none
    /// of `upstream_max_connections`; larger bodies stream. 0 = always stream.
    pub request_buffer_size: usize,
    /// Time a client has for its request body, ms, extended by one second for every
    /// `request_body_min_rate` bytes received (Apache mod_reqtimeout's `body=20,MinRate=500`); a
    /// body that falls behind gets `408 {"error": "timed out reading body"}` and the connection
    /// closes. 0 = no body clock (only `client_idle_timeout_ms` between reads).
    pub request_body_timeout_ms: u64,
    /// Bytes per second, see `request_body_timeout_ms` (0 = the timeout is for the whole body).
    pub request_body_min_rate: u64,
    /// Request bodies larger than `request_buffer_size` that one client IP may stream to
    /// upstreams at once, per worker; one more gets
    /// `429 {"error": "too many request bodies in progress from this client"}` (0 = no cap).
    pub max_streaming_bodies_per_client: usize,
    /// Pooled upstream connections idle longer than this are closed (checked every 200 ms) and
    /// never reused, ms; keep it below the upstream's own keep-alive timeout.
    pub upstream_idle_timeout_ms: u64,
    /// On SIGTERM, how long in-flight requests may take to finish, ms.
    pub drain_timeout_ms: u64,
    /// Memory each worker may give Tyk's response cache (`cache_options` of the API
    /// definitions), bytes; past it the entries asked for least are evicted. Each worker keeps
    /// its own entries (docs/tyk-compatibility.md, "Response cache"). A worker allocates
    /// nothing for it until an API caches. A reload applies it (the entries start over).
    pub response_cache_bytes: usize,
    /// The largest response (head and body) the response cache keeps, bytes; larger responses
    /// stream to the client as usual and are not cached.
    pub response_cache_max_entry_bytes: usize,
}

/// Whether `name` can be a health endpoint's name (`proxy.health_check_endpoint_name`): empty,
/// or segments of URL-safe characters joined by `/`, none of them empty, `.` or `..`, so that
/// `/<name>` is a canonical path a request can name exactly.
fn endpoint_name_ok(name: &str) -> bool {
    name.is_empty()
        || name.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        })
}

/// Longest ban a config or the admin API may set: ten years (0 = until removed).
pub const MAX_BAN_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

/// Most workers `[proxy] workers` may ask for. Each worker is a thread pinned to a CPU with its
/// own listener, io_uring ring and caches; more workers than CPUs only share cores, and a typo
/// (`workers = 100000`) would exhaust threads, file descriptors and memory at start.
pub(super) const MAX_WORKERS: usize = 1024;

/// Default `upstream_max_connections`: see its doc comment and
/// docs/decisions/0011-upstream-connection-cap.md (c1000) for the measurement it rests on.
pub(super) const DEFAULT_UPSTREAM_MAX_CONNECTIONS: usize = 1024;

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "0.0.0.0:8080".into(),
            workers: 0,
            io_driver: IoDriver::Auto,
            max_connections_per_worker: 10_000,
            accept_backlog: 1024,
            buffer_size: 64 * 1024,
            max_request_head_size: 32 * 1024,
            max_response_head_size: 32 * 1024,
            max_request_body_size: 100 * 1024 * 1024,
            splice_min_body: 4096,
            max_headers: 100,
            header_read_timeout_ms: 10_000,
            client_idle_timeout_ms: 60_000,
            upstream_connect_timeout_ms: 5_000,
            dns_ttl_secs: 60,
            upstream_response_timeout_ms: 60_000,
            hide_generator_header: false,
            rate_limit_response_headers: RateLimitHeaders::Quotas,
            health_check_endpoint_name: "hello".into(),
            readiness_check_endpoint_name: "ready".into(),
            upstream_ca_file: PathBuf::new(),
            upstream_pool_size: 64,
            upstream_pool_surplus_ms: 2_000,
            upstream_max_connections: DEFAULT_UPSTREAM_MAX_CONNECTIONS,
            upstream_queue_timeout_ms: 5_000,
            request_buffer_size: 64 * 1024,
            request_body_timeout_ms: 20_000,
            request_body_min_rate: 500,
            max_streaming_bodies_per_client: 32,
            upstream_idle_timeout_ms: 30_000,
            drain_timeout_ms: 10_000,
            response_cache_bytes: 32 * 1024 * 1024,
            response_cache_max_entry_bytes: 1024 * 1024,
        }
    }
}

/// `[admin]`: the control plane's listener: the admin API (docs/admin-api.md) and `/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin API. Read at startup only: a reload that changes it says so in `restart_needed`.
    pub listen: String,
    /// Secret for `/tyk/*` and `/api/*` (header `X-Tyk-Authorization: <secret>` or
    /// `Authorization: Bearer <secret>`, compared in constant time); empty disables those
    /// endpoints.
    pub secret: String,
    /// Time an admin connection has to send a complete request head, ms, counted from when the
    /// server starts waiting for it (a new connection, or the next request of a kept-alive one);
    /// then the connection is closed (slowloris). Applies to connections accepted after a
    /// reload.
    pub header_read_timeout_ms: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: "127.0.0.1:9090".into(), secret: String::new(), header_read_timeout_ms: 10_000 }
    }
}

/// `[apps]`: where API definitions and policies live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AppsConfig {
    /// Directory of Tyk API definitions: every `*.json` in it except `policies.json` is one API
    /// (docs/tyk-compatibility.md).
    pub dir: PathBuf,
    /// Tyk policies: a file (`{id: policy}`, Tyk's `policy_record_name`) or a directory with one
    /// policy object per `*.json` file, named by its `id` (Tyk's `policy_path`). Validated and
    /// applied on load and reload; a missing file means no policies.
    pub policies: PathBuf,
    /// All or nothing: with `true`, one refused definition fails startup and rejects a reload
    /// (the running configuration is kept). With `false` (Tyk's behaviour), refused definitions
    /// are skipped with a logged error naming file, field and value, the others load, and
    /// `/hello` and `/tyk/reload` list what was skipped. Errors in the config file or the
    /// policies file always keep the running configuration.
    pub strict: bool,
    /// Anchor path patterns (path lists, transforms, endpoint limits, keys' `allowed_urls`) at
    /// the start: Tyk's `http_server_options.enable_path_prefix_matching`. Off, as in Tyk's
    /// defaults, a pattern is searched anywhere in the path (a `/admin` black list also blocks
    /// `/v1/admin`); set it (and `path_suffix_matching`) to what your Tyk gateway had, or
    /// patterns match differently than they did there (docs/authentication.md, "Path lists").
    pub path_prefix_matching: bool,
    /// Anchor path patterns at the end: Tyk's `http_server_options.enable_path_suffix_matching`.
    pub path_suffix_matching: bool,
    /// Match every path pattern without regard to case: Tyk's `ignore_endpoint_case`.
    pub ignore_endpoint_case: bool,
    /// How often each uptime check of a load-balanced API with
    /// `check_host_against_uptime_tests` runs, seconds: Tyk's `uptime_tests.config.time_wait`
    /// (as Tyk, staggered by up to 3 s either way above 5 s). A reload applies it.
    pub uptime_check_interval_secs: u64,
    /// Failed checks after which a host is down (and as many passing ones before it is up
    /// again): Tyk's `uptime_tests.config.failure_trigger_sample_size`. A reload applies it.
    pub uptime_failure_trigger_sample_size: u32,
    /// Directory of error templates, relative to the config file: Tyk's `template_path`. An
    /// `error_overrides` rule's `response.template` names a file in it, `<name>.json` (or
    /// `<name>`) for JSON requests and `<name>.xml` for XML ones; the files are read on load and
    /// reload, and a rule whose template is missing or uses anything but `{{.Message}}`,
    /// `{{.StatusCode}}` and `{{.InvalidParams}}` refuses its definition. Its `error.json`,
    /// `error.xml` and `error_<status>.json|xml` files write the gateway's own errors as Tyk's
    /// do (docs/requests.md, "Errors"; only `{{.Message}}` in them, or the configuration is
    /// refused naming the file); other files are read only when a rule names them.
    pub template_path: PathBuf,
}

impl Default for AppsConfig {
    fn default() -> Self {
        AppsConfig {
            dir: "apps".into(),
            policies: "apps/policies.json".into(),
            strict: false,
            path_prefix_matching: false,
            path_suffix_matching: false,
            ignore_endpoint_case: false,
            uptime_check_interval_secs: 10,
            uptime_failure_trigger_sample_size: 3,
            template_path: "templates".into(),
        }
    }
}

impl AppsConfig {
    /// How Tyk path patterns compile, from these settings.
    pub fn path_matching(&self) -> portcullis_policy::path_rule::PathMatching {
        portcullis_policy::path_rule::PathMatching {
            prefix: self.path_prefix_matching,
            suffix: self.path_suffix_matching,
            ignore_case: self.ignore_endpoint_case,
        }
    }
}

/// `[tls]`: TLS termination on the workers (docs/tls.md). With `listen` set, every worker also
/// binds a TLS listener there (SO_REUSEPORT, as `[proxy] listen`) and serves HTTP/1.1 over
/// TLS 1.2 and 1.3 with rustls: the same phases, APIs and limits as the plain listener.
///
/// Certificates are PEM files (the chain, leaf first; the key as PKCS#8, PKCS#1 or SEC1),
/// checked at load: the key must be the leaf's, the leaf within its validity, its names host
/// names. The ClientHello's server name (SNI) chooses one: an exact name of a
/// `[[tls.certificates]]` entry, then a one-label wildcard (`*.example.com` serves
/// `api.example.com`), then the default (`cert_file`/`key_file`); with no default, a handshake
/// for another name fails. A reload (`SIGHUP`, `/tyk/reload`) reads the files again: new
/// handshakes get the new certificates and open connections keep theirs; a file that fails to
/// load rejects the reload, so the running certificates stay, and the error names the file
/// and the field.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Address of the TLS listener, `IP:port`; empty = no TLS. Read at startup only: a reload
    /// that changes it says so in `restart_needed`.
    pub listen: String,
    /// The default certificate chain (PEM), relative to the config file: served to a handshake
    /// whose server name no `[[tls.certificates]]` entry has, or without one.
    pub cert_file: PathBuf,
    /// The default certificate's private key (PEM).
    pub key_file: PathBuf,
    /// The lowest protocol version accepted: `"1.2"` (TLS 1.2 and 1.3) or `"1.3"`.
    pub min_version: String,
    /// Cipher suites in order of preference, by rustls' or IANA's name
    /// (`TLS13_AES_128_GCM_SHA256` or `TLS_AES_128_GCM_SHA256`,
    /// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`); empty = rustls' defaults, all AEAD with forward
    /// secrecy. Unknown names are errors (Tyk skips them).
    pub cipher_suites: Vec<String>,
    /// Time for a client to complete its handshake once connected, ms; then the connection
    /// closes. A handshake waits on its own connection only, never on the worker.
    pub handshake_timeout_ms: u64,
    /// Session resumption with tickets (RFC 5077, TLS 1.3 PSK): a returning client skips the
    /// certificate and key exchange signatures. Keys are AES-256-GCM, derived from
    /// `ticket_secret_file` per period of `ticket_key_period_secs`: every worker, and every node
    /// given the same secret, opens every ticket, and keys rotate without an exchange.
    pub session_tickets: bool,
    /// A file of at least 32 bytes of secret the ticket keys derive from; empty = with `[storage]
    /// redis`, a secret kept in Redis (`portcullis-tls-ticket-secret`, made by the first node)
    /// that every node shares, else a random one per process (tickets then resume on this
    /// process only, and not after a restart).
    pub ticket_secret_file: PathBuf,
    /// How often the ticket key changes, s (at least 60). A ticket resumes for one to two periods.
    pub ticket_key_period_secs: u64,
    /// Certificates chosen by the handshake's server name.
    pub certificates: Vec<TlsCertificate>,
    /// Certificates ordered from an ACME certificate authority (Let's Encrypt).
    pub acme: AcmeConfig,
}

/// `[tls.acme]`: certificates ordered and renewed automatically from an ACME certificate
/// authority (RFC 8555; Let's Encrypt by default) for `domains` and the `domain` of every loaded
/// API, proven with HTTP-01 challenges the workers answer on `[proxy] listen` (the authority
/// asks `http://<name>/.well-known/acme-challenge/<token>`: port 80 must reach it). Each
/// certificate and its key are written to `state_dir` and served by SNI like a
/// `[[tls.certificates]]` entry; one is renewed `renew_before_days` before it expires. With
/// `[storage] redis`, one node orders a name at a time and the others take the certificate from
/// Redis, its key sealed with `[admin] secret` (docs/tls.md, "Certificates from an ACME
/// authority").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AcmeConfig {
    /// Order and renew certificates. Needs `[tls] listen`.
    pub enabled: bool,
    /// The authority's directory URL.
    pub directory: String,
    /// Contact address given to the authority (expiry notices); empty = none.
    pub email: String,
    /// Names to order certificates for besides the APIs' `domain`s (exact names: HTTP-01
    /// proves no wildcard).
    pub domains: Vec<String>,
    /// Certificate authorities (PEM) the authority's HTTPS API is verified against; empty = the
    /// system's trust store. A test authority (Pebble) needs its own.
    pub ca_file: PathBuf,
    /// Where the account and the certificates are kept, relative to the config file.
    pub state_dir: PathBuf,
    /// How long before its expiry a certificate is renewed, days.
    pub renew_before_days: u64,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            enabled: false,
            directory: "https://acme-v02.api.letsencrypt.org/directory".into(),
            email: String::new(),
            domains: Vec::new(),
            ca_file: PathBuf::new(),
            state_dir: "acme".into(),
            renew_before_days: 30,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: String::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            min_version: "1.2".into(),
            cipher_suites: Vec::new(),
            handshake_timeout_ms: 10_000,
            session_tickets: true,
            ticket_secret_file: PathBuf::new(),
            ticket_key_period_secs: 3600,
            certificates: Vec::new(),
            acme: AcmeConfig::default(),
        }
    }
}

/// `[[tls.certificates]]`: a certificate for the server names in `domains`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsCertificate {
    /// Exact host names and one-label wildcards (`*.example.com`) this certificate serves;
    /// empty = the names the certificate carries (its DNS subject alternative names, else its
    /// common name), as Tyk chooses.
    pub domains: Vec<String>,
    /// The certificate chain (PEM), relative to the config file.
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
}

impl Default for TlsCertificate {
    fn default() -> Self {
        TlsCertificate { domains: Vec::new(), cert_file: PathBuf::new(), key_file: PathBuf::new() }
    }
}

impl TlsConfig {
    /// Whether a TLS listener is configured.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// The versions and cipher suites of the listener.
    pub fn server_options(&self) -> portcullis_tls::ServerOptions {
        portcullis_tls::ServerOptions {
            min_version: if self.min_version == "1.3" {
                portcullis_tls::MinVersion::Tls13
            } else {
                portcullis_tls::MinVersion::Tls12
            },
            cipher_suites: self.cipher_suites.clone(),
            ask_client_certs: false,
        }
    }

    fn validate(&self, path: &Path, errs: &mut Vec<ConfigError>) {
        if self.acme.enabled {
            if !self.enabled() {
                errs.push(ConfigError::new(
                    path,
                    "tls.acme.enabled",
                    "true",
                    "needs [tls] listen: ordered certificates are served there",
                ));
            }
            if !self.acme.directory.starts_with("https://") || url::Url::parse(&self.acme.directory).is_err() {
                errs.push(ConfigError::new(
                    path,
                    "tls.acme.directory",
                    &self.acme.directory,
                    "must be an https:// URL",
                ));
            }
            for (i, d) in self.acme.domains.iter().enumerate() {
                if !portcullis_tls::certs::is_name(d) || d.starts_with("*.") {
                    errs.push(ConfigError::new(
                        path,
                        format!("tls.acme.domains[{i}]"),
                        d,
                        "must be a host name (HTTP-01 proves no wildcard)",
                    ));
                }
            }
            if self.acme.renew_before_days == 0 {
                errs.push(ConfigError::new(path, "tls.acme.renew_before_days", "0", "must be greater than 0"));
            }
        }
        if !self.enabled() {
            return;
        }
        if self.listen.parse::<SocketAddr>().is_err() {
            errs.push(ConfigError::new(path, "tls.listen", &self.listen, "not an IP:port socket address"));
        }
        if !matches!(self.min_version.as_str(), "1.2" | "1.3") {
            errs.push(ConfigError::new(path, "tls.min_version", &self.min_version, "must be \"1.2\" or \"1.3\""));
        }
        if self.cert_file.as_os_str().is_empty() != self.key_file.as_os_str().is_empty() {
            errs.push(ConfigError::new(
                path,
                if self.cert_file.as_os_str().is_empty() { "tls.cert_file" } else { "tls.key_file" },
                "",
                "the default certificate needs both cert_file and key_file",
            ));
        }
        for (i, c) in self.certificates.iter().enumerate() {
            for (field, v) in [("cert_file", &c.cert_file), ("key_file", &c.key_file)] {
                if v.as_os_str().is_empty() {
                    errs.push(ConfigError::new(path, format!("tls.certificates[{i}].{field}"), "", "must be set"));
                }
            }
        }
        if let Err(e) = portcullis_tls::server_config(
            std::sync::Arc::new(portcullis_tls::Certificates::default()),
            &self.server_options(),
            std::sync::Arc::new(portcullis_tls::NoTickets),
            path,
        ) {
            errs.push(ConfigError::new(path, e.field, "", e.message));
        }
        if self.handshake_timeout_ms == 0 {
            errs.push(ConfigError::new(path, "tls.handshake_timeout_ms", "0", "must be greater than 0"));
        }
        if self.ticket_key_period_secs < 60 {
            errs.push(ConfigError::new(
                path,
                "tls.ticket_key_period_secs",
                self.ticket_key_period_secs.to_string(),
                "must be at least 60",
            ));
        }
    }
}

/// `[storage]`: where keys (sessions) are stored: one file, or Redis shared by every node
/// (docs/authentication.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `redis://` (or `rediss://`) URL of the key store shared by every node
    /// (`redis://host:port/db`), which also holds quotas and carries the rate limiters' gossip
    /// between nodes; empty = the embedded store. Read at startup only.
    pub redis: String,
    /// Prefix of session keys in Redis (Tyk's layout: `apikey-<sha256 hex>`). Read at startup only.
    pub redis_key_prefix: String,
    /// File of the embedded store, relative to the config file: one JSON file rewritten
    /// atomically on each change (fine for thousands of keys; use Redis beyond). Read at startup only.
    pub path: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { redis: String::new(), redis_key_prefix: "apikey-".into(), path: "data/keys.json".into() }
    }
}

/// `[limits]`: per-core rate limiter tuning, per-IP limits and the abuse detector
/// (docs/rate-limits.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// How often workers exchange limiter deltas, ms (bounds how stale a worker's view is).
    pub gossip_interval_ms: u64,
    /// Bucket capacity as a multiple of the rate (1.0: a full bucket holds `rate` requests, as
    /// Tyk); at least one request.
    pub burst: f64,
    /// Limit keys each worker tracks; beyond it idle full buckets, then the least recently used
    /// tenth, are evicted.
    pub max_keys_per_worker: usize,
    /// Requests per `ip_per` seconds allowed per client IP on every API; 0 = off (an API's
    /// `ip_rate_limit` sets its own and wins).
    pub ip_rate: f64,
    /// The period of `ip_rate`, seconds.
    pub ip_per: f64,
    /// Rate-limit rejections (429s) from one IP within `ban_window_secs` that get it banned (in
    /// XDP when the gate is loaded, in user space otherwise) for `ban_ttl_secs`; 0 = never ban.
    /// Allowlisted networks (`ebpf.allow_cidrs`) are never banned.
    pub ban_threshold: u64,
    /// The window of `ban_threshold`, seconds.
    pub ban_window_secs: u64,
    /// How long such a ban lasts, seconds, at most 315360000 (ten years); 0 = until removed.
    pub ban_ttl_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            gossip_interval_ms: 5,
            burst: 1.0,
            max_keys_per_worker: 100_000,
            ip_rate: 0.0,
            ip_per: 1.0,
            ban_threshold: 1_000,
            ban_window_secs: 10,
            ban_ttl_secs: 300,
        }
    }
}

/// `[cluster]`: limiter gossip between nodes through Redis pub/sub (needs `[storage] redis`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// How often this node publishes its limiter deltas to Redis, ms (it also sends a heartbeat
    /// every second, so peers are counted).
    pub gossip_interval_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { gossip_interval_ms: 10 }
    }
}

/// `[auth]`: per-worker auth caches and key handling (docs/authentication.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Sessions, verified JWTs and verified basic-auth credentials cached per worker (each
    /// cache). Beyond it one entry at a time is evicted by a scan-resistant policy (S3-FIFO):
    /// entries seen once go before entries in use. Unknown keys and refused passwords are
    /// remembered apart, in caches of a quarter of this size, so a flood of bogus keys never
    /// evicts valid sessions. Read at startup only.
    pub cache_capacity: usize,
    /// Longest a worker serves a cached session before asking the store again, ms. Changes made
    /// through this node's admin API reach every worker at once; this bounds changes made
    /// elsewhere (another node's admin API through Redis when pub/sub is lost). Read at startup only.
    pub session_cache_ttl_ms: u64,
    /// How long an unknown key, or a refused basic-auth password, is remembered as such, ms.
    /// Read at startup only.
    pub negative_cache_ttl_ms: u64,
    /// Longest a request waits for the key store on a cache miss, ms (then 503). Read at startup only.
    pub key_lookup_timeout_ms: u64,
    /// Pending key lookups from all workers; beyond it requests get 503. Read at startup only.
    pub key_lookup_queue: usize,
    /// How often JWKS URLs are fetched again, seconds (failed fetches retry every 10 s).
    pub jwks_refresh_secs: u64,
    /// bcrypt cost for basic-auth passwords set through the key API (4 to 31; at 10 a check took
    /// about 60 ms on the 2-vCPU test machines).
    pub bcrypt_cost: u32,
    /// Accept keys without access rights (their own or from policies) through the key API:
    /// such a key opens every API. Off, as Tyk's `allow_master_keys`: `/tyk/keys/create` answers
    /// 400 and `/tyk/keys/{key}` 500, with Tyk's messages.
    pub allow_master_keys: bool,
    /// Keys a Tyk gateway wrote to Redis (`[storage] redis`, prefix `apikey-`): the hash
    /// functions those gateways used, their `hash_key_function` first, then their
    /// `hash_key_function_fallback`; `"murmur32"` also reads legacy keys (not tokens), which Tyk
    /// hashes with it whatever its config says. Portcullis looks under the SHA-256 of the key
    /// first (its own keys, and Tyk tokens made with `sha256`), then where those gateways
    /// would. One of `sha256`, `murmur64`, `murmur128`, `murmur32`. Murmur is not a
    /// cryptographic hash: whoever sees a key's murmur hash (Tyk's analytics records and key API
    /// show it) can make another key with that hash, so name a murmur function only while
    /// migrating, and move those keys (update them through the key API: they are stored again
    /// under their SHA-256). docs/authentication.md, "Keys from Tyk".
    pub tyk_key_hashes: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            cache_capacity: 100_000,
            session_cache_ttl_ms: 10_000,
            negative_cache_ttl_ms: 1_000,
            key_lookup_timeout_ms: 1_000,
            key_lookup_queue: 4_096,
            jwks_refresh_secs: 300,
            bcrypt_cost: 10,
            allow_master_keys: false,
            tyk_key_hashes: vec!["sha256".into()],
        }
    }
}

/// `[log]`: the proxy's own log (to standard error).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter (`info`, `debug`, `portcullis=debug,info` ...); `RUST_LOG` wins when set.
    /// Read at startup only: a reload that changes it says so in `restart_needed`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into() }
    }
}

impl Config {
    /// Parses the file text with the environment overrides applied on top.
    pub fn parse(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Vec<ConfigError>> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| vec![toml_error(path, text, &e)])?;
        super::env::apply_env_overrides(&mut table, env)?;
        Config::deserialize(toml::Value::Table(table)).map_err(|e| vec![toml_error(path, text, &e)])
    }

    pub(crate) fn apply_cli(&mut self, cli: &CliOverrides) {
        if let Some(v) = &cli.listen {
            self.proxy.listen = v.clone();
        }
        if let Some(v) = &cli.admin {
            self.admin.listen = v.clone();
        }
        if let Some(v) = &cli.apps {
            self.apps.dir = v.clone();
        }
        if let Some(v) = &cli.policies {
            self.apps.policies = v.clone();
        }
        if let Some(v) = cli.workers {
            self.proxy.workers = v;
        }
    }

    pub(crate) fn resolve_relative_paths(&mut self, config_path: &Path) {
        let base = config_path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut self.apps.dir,
            &mut self.apps.policies,
            &mut self.apps.template_path,
            &mut self.storage.path,
            &mut self.analytics.path,
            &mut self.analytics.spool_dir,
            &mut self.analytics.index_path,
            &mut self.visibility.state_dir,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        let tls = &mut self.tls;
        let named = tls.certificates.iter_mut().flat_map(|c| [&mut c.cert_file, &mut c.key_file]);
        let ca = &mut self.proxy.upstream_ca_file;
        let acme = [&mut tls.acme.ca_file, &mut tls.acme.state_dir];
        for p in [&mut tls.cert_file, &mut tls.key_file, &mut tls.ticket_secret_file, ca]
            .into_iter()
            .chain(acme)
            .chain(named)
        {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        }
        for s in &mut self.analytics.sinks {
            if s.path.is_relative() && !s.path.as_os_str().is_empty() {
                s.path = base.join(&s.path);
            }
        }
    }

    /// Checks values serde cannot: addresses, non-zero sizes.
    pub fn validate(&self, path: &Path) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        let p = &self.proxy;
        for (field, v) in [("proxy.listen", &p.listen), ("admin.listen", &self.admin.listen)] {
            if v.parse::<SocketAddr>().is_err() {
                errs.push(ConfigError::new(path, field, v, "not an IP:port socket address"));
            }
        }
        if p.workers > MAX_WORKERS {
            errs.push(ConfigError::new(
                path,
                "proxy.workers",
                p.workers.to_string(),
                format!("must be at most {MAX_WORKERS} (0 = one per CPU in the affinity mask)"),
            ));
        }
        if self.limits.ban_ttl_secs > MAX_BAN_TTL_SECS {
            errs.push(ConfigError::new(
                path,
                "limits.ban_ttl_secs",
                self.limits.ban_ttl_secs.to_string(),
                format!("must be at most {} (ten years; 0 = until removed)", MAX_BAN_TTL_SECS),
            ));
        }
        let nonzero: [(&str, u64); 21] = [
            ("admin.header_read_timeout_ms", self.admin.header_read_timeout_ms),
            ("analytics.queue_batches", self.analytics.queue_batches as u64),
            ("proxy.upstream_queue_timeout_ms", p.upstream_queue_timeout_ms),
            ("limits.gossip_interval_ms", self.limits.gossip_interval_ms),
            ("limits.max_keys_per_worker", self.limits.max_keys_per_worker as u64),
            ("limits.ban_window_secs", self.limits.ban_window_secs),
            ("cluster.gossip_interval_ms", self.cluster.gossip_interval_ms),
            ("auth.cache_capacity", self.auth.cache_capacity as u64),
            ("auth.key_lookup_timeout_ms", self.auth.key_lookup_timeout_ms),
            ("auth.key_lookup_queue", self.auth.key_lookup_queue as u64),
            ("auth.jwks_refresh_secs", self.auth.jwks_refresh_secs),
            ("proxy.max_connections_per_worker", p.max_connections_per_worker as u64),
            ("proxy.accept_backlog", p.accept_backlog as u64),
            ("proxy.max_headers", p.max_headers as u64),
            ("proxy.header_read_timeout_ms", p.header_read_timeout_ms),
            ("proxy.client_idle_timeout_ms", p.client_idle_timeout_ms),
            ("proxy.upstream_connect_timeout_ms", p.upstream_connect_timeout_ms),
            ("proxy.upstream_response_timeout_ms", p.upstream_response_timeout_ms),
            ("proxy.upstream_idle_timeout_ms", p.upstream_idle_timeout_ms),
            ("proxy.drain_timeout_ms", p.drain_timeout_ms),
            ("proxy.max_response_head_size", p.max_response_head_size as u64),
        ];
        for (field, v) in nonzero {
            if v == 0 {
                errs.push(ConfigError::new(path, field, "0", "must be greater than 0"));
            }
        }
        if p.max_headers > MAX_HEADERS {
            errs.push(ConfigError::new(
                path,
                "proxy.max_headers",
                p.max_headers.to_string(),
                format!("must be at most {}", MAX_HEADERS),
            ));
        }
        if p.buffer_size < 1024 {
            errs.push(ConfigError::new(path, "proxy.buffer_size", p.buffer_size.to_string(), "must be at least 1024"));
        }
        if p.max_request_head_size < 256 || p.max_request_head_size > p.buffer_size.max(1024) * 64 {
            errs.push(ConfigError::new(
                path,
                "proxy.max_request_head_size",
                p.max_request_head_size.to_string(),
                "must be between 256 and 64 x buffer_size",
            ));
        }
        for (field, name) in [
            ("proxy.health_check_endpoint_name", &p.health_check_endpoint_name),
            ("proxy.readiness_check_endpoint_name", &p.readiness_check_endpoint_name),
        ] {
            if !endpoint_name_ok(name) {
                errs.push(ConfigError::new(
                    path,
                    field,
                    name,
                    "must be empty or path segments of letters, digits and -._~ joined by /, \
                     without a leading or trailing / (`hello`, `health/live`)",
                ));
            }
        }
        if !p.health_check_endpoint_name.is_empty() && p.health_check_endpoint_name == p.readiness_check_endpoint_name {
            errs.push(ConfigError::new(
                path,
                "proxy.readiness_check_endpoint_name",
                &p.readiness_check_endpoint_name,
                "must differ from proxy.health_check_endpoint_name",
            ));
        }
        if self.analytics.sink == AnalyticsSink::File && self.analytics.path.as_os_str().is_empty() {
            errs.push(ConfigError::new(path, "analytics.path", "", "must name a file when sink = \"file\""));
        }
        self.validate_sinks(path, &mut errs);
        self.validate_visibility(path, &mut errs);
        if !(self.storage.redis.is_empty()
            || self.storage.redis.starts_with("redis://")
            || self.storage.redis.starts_with("rediss://"))
        {
            errs.push(ConfigError::new(path, "storage.redis", &self.storage.redis, "must be a redis:// URL"));
        }
        for (field, list) in [("ebpf.deny_cidrs", &self.ebpf.deny_cidrs), ("ebpf.allow_cidrs", &self.ebpf.allow_cidrs)]
        {
            for v in list {
                if portcullis_policy::parse_net(v).is_none() {
                    errs.push(ConfigError::new(path, field, v, "not an IP address or CIDR"));
                }
            }
        }
        if self.ebpf.syn_ports.len() > portcullis_ebpf_common::MAX_SYN_PORTS {
            errs.push(ConfigError::new(
                path,
                "ebpf.syn_ports",
                format!("{:?}", self.ebpf.syn_ports),
                format!("at most {} ports", portcullis_ebpf_common::MAX_SYN_PORTS),
            ));
        }
        if self.ebpf.max_bans == 0 || self.ebpf.max_syn_sources == 0 {
            errs.push(ConfigError::new(path, "ebpf.max_bans/max_syn_sources", "0", "must be greater than 0"));
        }
        let l = &self.limits;
        if !(l.burst.is_finite() && l.burst >= 1.0) {
            errs.push(ConfigError::new(path, "limits.burst", l.burst.to_string(), "must be a number >= 1.0"));
        }
        if !(l.ip_rate.is_finite() && l.ip_rate >= 0.0 && l.ip_per.is_finite() && l.ip_per > 0.0) {
            errs.push(ConfigError::new(
                path,
                "limits.ip_rate/ip_per",
                format!("{}/{}", l.ip_rate, l.ip_per),
                "ip_rate must be >= 0 and ip_per > 0",
            ));
        }
        if self.apps.uptime_check_interval_secs == 0 || self.apps.uptime_failure_trigger_sample_size == 0 {
            errs.push(ConfigError::new(
                path,
                "apps.uptime_check_interval_secs/uptime_failure_trigger_sample_size",
                format!("{}/{}", self.apps.uptime_check_interval_secs, self.apps.uptime_failure_trigger_sample_size),
                "must be greater than 0",
            ));
        }
        if !(4..=31).contains(&self.auth.bcrypt_cost) {
            errs.push(ConfigError::new(
                path,
                "auth.bcrypt_cost",
                self.auth.bcrypt_cost.to_string(),
                "must be between 4 and 31",
            ));
        }
        for (i, name) in self.auth.tyk_key_hashes.iter().enumerate() {
            if portcullis_policy::auth::tyk_key::TykHash::parse(name).is_none() {
                errs.push(ConfigError::new(
                    path,
                    format!("auth.tyk_key_hashes[{i}]"),
                    name,
                    "must be one of sha256, murmur64, murmur128, murmur32",
                ));
            }
        }
        self.tls.validate(path, &mut errs);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            errs.push(ConfigError::new(path, "log.level", &self.log.level, format!("not a tracing filter: {e}")));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    pub fn listen_addr(&self) -> SocketAddr {
        // validate() checked it parses; config is only used after validation.
        self.proxy.listen.parse().expect("validated by Config::validate")
    }

    /// `[tls] listen`, if set (validated).
    pub fn tls_listen_addr(&self) -> Option<SocketAddr> {
        self.tls.listen.parse().ok().filter(|_| self.tls.enabled())
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.listen.parse().expect("validated by Config::validate")
    }
}

fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let mut msg = e.message().to_string();
    if let Some(span) = e.span() {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        msg = format!("line {line}: {msg}");
    }
    ConfigError::new(path, "", "", msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::parse(Path::new("t.toml"), text, env)
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("", &[]).unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = parse("[proxy]\nlisen = \"1\"\n", &[]).unwrap_err();
        assert!(e[0].to_string().contains("lisen"), "{}", e[0]);
    }

    #[test]
    fn validate_names_field_and_value() {
        let cfg = parse("[proxy]\nlisten = \"nope\"\nworkers = 2\n", &[]).unwrap();
        assert_eq!(cfg.proxy.workers, 2);
        let e = cfg.validate(Path::new("t.toml")).unwrap_err();
        assert_eq!(e[0].field, "proxy.listen");
        assert_eq!(e[0].value, "nope");
    }

    #[test]
    fn tls_settings_are_checked_naming_their_fields() {
        let cfg = parse("[tls]\ncert_file = \"c.pem\"\n", &[]).unwrap();
        cfg.validate(Path::new("t.toml")).expect("no listen: no TLS, nothing to check");
        let text = r#"
            [tls]
            listen = "0.0.0.0:8443"
            cert_file = "c.pem"
            min_version = "1.1"
            cipher_suites = ["TLS_AES_128_GCM_SHA256", "TLS_RSA_WITH_RC4_128_SHA"]
            handshake_timeout_ms = 0
            ticket_key_period_secs = 30
            [[tls.certificates]]
            domains = ["api.example.com"]
        "#;
        let cfg = parse(text, &[]).unwrap();
        let errs = cfg.validate(Path::new("t.toml")).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "tls.min_version",
            "tls.key_file",
            "tls.cipher_suites[1]",
            "tls.handshake_timeout_ms",
            "tls.ticket_key_period_secs",
            "tls.certificates[0].cert_file",
            "tls.certificates[0].key_file",
        ] {
            assert!(fields.contains(&f), "no error for {f}: {errs:?}");
        }
        let cfg =
            parse("[tls]\nlisten = \"127.0.0.1:8443\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n", &[]).unwrap();
        cfg.validate(Path::new("t.toml")).unwrap();
        assert_eq!(cfg.tls_listen_addr(), Some("127.0.0.1:8443".parse().unwrap()));
    }

    #[test]
    fn analytics_sinks_are_checked_for_their_own_keys_names_and_urls() {
        let cfg = parse("", &[]).unwrap();
        let sinks = cfg.analytics.effective_sinks();
        assert_eq!(sinks.iter().map(|s| s.sink).collect::<Vec<_>>(), [AnalyticsSink::File, AnalyticsSink::Search]);
        assert_eq!(sinks[0].path, cfg.analytics.path);
        assert_eq!(sinks[1].path, cfg.analytics.index_path);
        let cfg = parse("[analytics]\nsink = \"search\"\nrotate_mb = 7\n", &[]).unwrap();
        let sinks = cfg.analytics.effective_sinks();
        assert_eq!(sinks.iter().map(|s| s.sink).collect::<Vec<_>>(), [AnalyticsSink::Search]);
        cfg.validate(Path::new("t.toml")).unwrap();
        let text = r#"
            [[analytics.sinks]]
            sink = "file"
            path = "a.jsonl"
            [[analytics.sinks]]
            sink = "file"
            url = "http://x"
            [[analytics.sinks]]
            sink = "redis"
            [[analytics.sinks]]
            sink = "clickhouse"
            table = "bad-name"
            url = "ftp://x"
        "#;
        let cfg = parse(text, &[]).unwrap();
        let e = cfg.validate(Path::new("t.toml")).unwrap_err();
        let has = |field: &str, msg: &str| e.iter().any(|e| e.field == field && e.message.contains(msg));
        assert!(has("analytics.sinks[1].name", "two sinks with one name"), "{e:?}");
        assert!(has("analytics.sinks[1].url", "a file sink has no `url`"), "{e:?}");
        assert!(has("analytics.sinks[2].url", "[storage] redis"), "{e:?}");
        assert!(has("analytics.sinks[3].table", "letters"), "{e:?}");
        assert!(has("analytics.sinks[3].url", "http://"), "{e:?}");
        let e = parse("[[analytics.sinks]]\nsink = \"kafka\"\n", &[]).unwrap_err();
        assert!(e[0].to_string().contains("kafka"), "{}", e[0]);
        let ok = "[storage]\nredis = \"redis://127.0.0.1:6379\"\n[[analytics.sinks]]\nsink = \"redis\"\nmultiple_keys = true\n";
        parse(ok, &[]).unwrap().validate(Path::new("t.toml")).unwrap();
    }

    #[test]
    fn analytics_section_defaults_and_errors() {
        let cfg = parse("", &[]).unwrap();
        assert!(cfg.analytics.enabled);
        assert_eq!(cfg.analytics.sink, AnalyticsSink::File);
        let cfg =
            parse("[analytics]\nsink = \"stdout\"\nkeep = 0\n", &[("PORTCULLIS_ANALYTICS_ENABLED", "false")]).unwrap();
        assert_eq!((cfg.analytics.enabled, cfg.analytics.sink, cfg.analytics.keep), (false, AnalyticsSink::Stdout, 0));
        let e = parse("[analytics]\nsink = \"kafka\"\n", &[]).unwrap_err();
        assert!(e[0].to_string().contains("kafka") && e[0].to_string().contains("stdout"), "{}", e[0]);
        let cfg = parse("[analytics]\nqueue_batches = 0\npath = \"\"\n", &[]).unwrap();
        let e = cfg.validate(Path::new("t.toml")).unwrap_err();
        assert!(e.iter().any(|e| e.field == "analytics.queue_batches"), "{e:?}");
        assert!(e.iter().any(|e| e.field == "analytics.path"), "{e:?}");
    }

    #[test]
    fn health_endpoint_names_are_tyks_defaults_and_are_checked() {
        let cfg = parse("", &[]).unwrap();
        assert_eq!(
            (cfg.proxy.health_check_endpoint_name.as_str(), cfg.proxy.readiness_check_endpoint_name.as_str()),
            ("hello", "ready")
        );
        for ok in ["", "health", "health/live", "v1.0_~x-y"] {
            let cfg = parse(&format!("[proxy]\nhealth_check_endpoint_name = \"{ok}\"\n"), &[]).unwrap();
            assert!(cfg.validate(Path::new("t.toml")).is_ok(), "{ok:?}");
        }
        for bad in ["/hello", "hello/", "a//b", "a/../b", ".", "he llo", "hello?x", "h%65llo", "héllo"] {
            let cfg = parse(&format!("[proxy]\nhealth_check_endpoint_name = \"{bad}\"\n"), &[]).unwrap();
            let e = cfg.validate(Path::new("t.toml")).unwrap_err();
            assert_eq!((e[0].field.as_str(), e[0].value.as_str()), ("proxy.health_check_endpoint_name", bad));
        }
        let cfg = parse("[proxy]\nreadiness_check_endpoint_name = \"hello\"\n", &[]).unwrap();
        let e = cfg.validate(Path::new("t.toml")).unwrap_err();
        assert_eq!(e[0].field, "proxy.readiness_check_endpoint_name");
        // Both off is fine.
        let cfg =
            parse("[proxy]\nhealth_check_endpoint_name = \"\"\nreadiness_check_endpoint_name = \"\"\n", &[]).unwrap();
        assert!(cfg.validate(Path::new("t.toml")).is_ok());
    }

    #[test]
    fn workers_are_bounded() {
        for ok in [0, 1, MAX_WORKERS] {
            let cfg = parse(&format!("[proxy]\nworkers = {ok}\n"), &[]).unwrap();
            assert!(cfg.validate(Path::new("t.toml")).is_ok(), "{ok}");
        }
        let cfg = parse("[proxy]\nworkers = 100000\n", &[]).unwrap();
        let e = cfg.validate(Path::new("t.toml")).unwrap_err();
        assert_eq!((e[0].field.as_str(), e[0].value.as_str()), ("proxy.workers", "100000"), "{e:?}");
        assert!(e[0].to_string().contains("at most 1024"), "{}", e[0]);
        // The command-line override is checked the same way.
        let mut cfg = parse("", &[]).unwrap();
        cfg.apply_cli(&CliOverrides { workers: Some(MAX_WORKERS + 1), ..Default::default() });
        assert_eq!(cfg.validate(Path::new("t.toml")).unwrap_err()[0].field, "proxy.workers");
    }

    #[test]
    fn admin_header_read_timeout_and_ban_ttl_are_checked() {
        let cfg = parse("[admin]\nheader_read_timeout_ms = 250\n", &[]).unwrap();
        assert_eq!(cfg.admin.header_read_timeout_ms, 250);
        assert_eq!(Config::default().admin.header_read_timeout_ms, 10_000);
        let cfg = parse("[admin]\nheader_read_timeout_ms = 0\n", &[]).unwrap();
        let e = cfg.validate(Path::new("t.toml")).unwrap_err();
        assert_eq!(e[0].field, "admin.header_read_timeout_ms");
        let cfg = parse("[limits]\nban_ttl_secs = 9223372036854775807\n", &[]).unwrap();
        let e = cfg.validate(Path::new("t.toml")).unwrap_err();
        assert_eq!((e[0].field.as_str(), e[0].value.as_str()), ("limits.ban_ttl_secs", "9223372036854775807"));
    }

    #[test]
    fn io_driver_values() {
        let cfg = parse("[proxy]\nio_driver = \"uring\"\n", &[]).unwrap();
        assert_eq!(cfg.proxy.io_driver, IoDriver::Uring);
        assert!(parse("[proxy]\nio_driver = \"kqueue\"\n", &[]).is_err());
    }
}
