//! The TOML config file: typed sections with documented defaults, parsing and validation.
//!
//! Every key here is documented in README.md ("Configuration reference") with its default.
//! Unknown keys are errors (a typo must not silently fall back to a default).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{CliOverrides, ConfigError};

/// The whole config file.
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
    pub log: LogConfig,
}

/// `[analytics]`: request records (Tyk's AnalyticsRecord fields, one JSON line per request).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Write a record for every request that matched an API (except APIs with
    /// `do_not_track: true`). Reloadable.
    pub enabled: bool,
    /// `file` (JSON lines, rotated) | `stdout`.
    pub sink: AnalyticsSink,
    /// The JSON lines file (relative to the config file).
    pub path: PathBuf,
    /// Rotate the file before it would grow past this many MiB; 0 = never.
    pub rotate_mb: u64,
    /// Rotated files kept (`<path>.1` is the newest); 0 = none.
    pub keep: usize,
    /// Batches (up to 64 KiB of records each) queued per worker for the pump; when the queue is
    /// full, records are dropped and counted (`portcullis_analytics_dropped_total`).
    pub queue_batches: usize,
}

/// `[analytics] sink`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AnalyticsSink {
    #[default]
    File,
    Stdout,
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
        }
    }
}

/// `[ebpf]`: the kernel fast path (XDP gate) and bans.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EbpfConfig {
    /// `auto`: use the XDP gate when it can be loaded, else enforce in user space (one log
    /// line); `on`: refuse to start without it; `off`: user space only.
    pub mode: EbpfMode,
    /// Interfaces to attach the XDP gate to (native mode, generic as a fallback).
    pub interfaces: Vec<String>,
    /// SYNs per second allowed per source address (per CPU) to `syn_ports`; 0 = off.
    pub syn_rate_per_sec: u32,
    /// Burst of the SYN limiter.
    pub syn_burst: u32,
    /// Ports the SYN limiter watches; empty = the proxy's listen port.
    pub syn_ports: Vec<u16>,
    /// Networks whose packets are always dropped (IPs or CIDRs).
    pub deny_cidrs: Vec<String>,
    /// Networks never dropped, rate limited or banned (IPs or CIDRs).
    pub allow_cidrs: Vec<String>,
    /// Capacity of the banned-address map (LRU beyond it).
    pub max_bans: u32,
    /// Source addresses tracked by the SYN limiter (LRU beyond it).
    pub max_syn_sources: u32,
    /// cgroup v2 directory to attach the telemetry program to; empty = this process's cgroup.
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
    /// cheaper per request than epoll here; epoll when that ring cannot be set up.
    #[default]
    Auto,
    /// io_uring (the single-thread setup when the kernel has it, else a default ring); falls
    /// back to epoll, with a warning, when io_uring cannot be set up.
    Uring,
    /// epoll readiness (monoio's LegacyDriver).
    Epoll,
}

/// `[proxy]`: the data plane.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address the workers listen on (each worker binds its own SO_REUSEPORT socket).
    pub listen: String,
    /// Number of workers; 0 = one per CPU in the process's affinity mask; at most
    /// [`MAX_WORKERS`].
    pub workers: usize,
    /// `auto` | `uring` | `epoll`.
    pub io_driver: IoDriver,
    /// Open client connections per worker; beyond it the worker stops accepting.
    pub max_connections_per_worker: usize,
    /// listen(2) backlog of each worker's socket.
    pub accept_backlog: u32,
    /// Size of each per-connection read buffer, bytes (bodies stream through it).
    pub buffer_size: usize,
    /// Largest request head (request line + headers) accepted, bytes; larger gets 431.
    pub max_request_head_size: usize,
    /// Largest response head accepted from an upstream, bytes; larger gets 502.
    pub max_response_head_size: usize,
    /// Largest request body, bytes; larger gets 413. 0 = no limit.
    pub max_request_body_size: u64,
    /// `Content-Length` response bodies with at least this many bytes still to come after the
    /// head read move from the upstream to the client socket with splice(2), never copied
    /// through the proxy, bytes. 0 = always copy.
    pub splice_min_body: usize,
    /// Most headers in a request or response head (at most 128); more gets 431 (request) or
    /// 502 (response).
    pub max_headers: usize,
    /// Time to receive a complete request head once its first byte arrived, ms.
    pub header_read_timeout_ms: u64,
    /// Idle keep-alive time between requests on a client connection, ms.
    pub client_idle_timeout_ms: u64,
    /// Time to establish an upstream TCP connection, ms (exceeded: 504).
    pub upstream_connect_timeout_ms: u64,
    /// Time for the upstream to send its response head, and longest pause between body reads, ms
    /// (exceeded: 504 before the head, connection closed after it).
    pub upstream_response_timeout_ms: u64,
    /// Idle upstream connections kept per worker and target (0 = no pooling).
    pub upstream_pool_size: usize,
    /// Idle upstream connections beyond `upstream_pool_size` are closed once idle this long, ms
    /// (0 = at once), so a burst's connections serve the next burst instead of being closed and
    /// reopened.
    pub upstream_pool_surplus_ms: u64,
    /// Upstream connections in use at once per worker and target; further requests wait for one
    /// (FIFO). 0 = no cap (a new connection per concurrent request).
    pub upstream_max_connections: usize,
    /// Longest wait for an upstream connection under `upstream_max_connections`, ms (exceeded: 503).
    pub upstream_queue_timeout_ms: u64,
    /// Request bodies up to this many bytes are read whole before an upstream connection is
    /// taken, so a client sending one slowly holds none (0 = always stream).
    pub request_buffer_size: usize,
    /// Time a client has to send a request body, ms, extended by one second for every
    /// `request_body_min_rate` bytes received (Apache mod_reqtimeout's `body=20,MinRate=500`);
    /// exceeded: 408 and the connection closes. 0 = only `client_idle_timeout_ms` between reads.
    pub request_body_timeout_ms: u64,
    /// See `request_body_timeout_ms`, bytes per second (0 = the timeout is for the whole body).
    pub request_body_min_rate: u64,
    /// Request bodies larger than `request_buffer_size` that one client IP may stream to
    /// upstreams at once, per worker; more gets 429 (0 = no cap).
    pub max_streaming_bodies_per_client: usize,
    /// Idle upstream connections older than this are closed instead of reused, ms.
    pub upstream_idle_timeout_ms: u64,
    /// On SIGTERM, how long in-flight requests may take to finish, ms.
    pub drain_timeout_ms: u64,
}

/// Most workers `[proxy] workers` may ask for. Each worker is a thread pinned to a CPU with its
/// own listener, io_uring ring and caches; more workers than CPUs only share cores, and a typo
/// (`workers = 100000`) would exhaust threads, file descriptors and memory at start.
pub const MAX_WORKERS: usize = 1024;

/// Default `upstream_max_connections`: see README (`[proxy]`) and bench/HISTORY.md (c1000) for the
/// measurement it rests on.
pub const DEFAULT_UPSTREAM_MAX_CONNECTIONS: usize = 1024;

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
            upstream_response_timeout_ms: 60_000,
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
        }
    }
}

/// `[admin]`: the control plane's listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: String,
    /// Secret for `/tyk/*` (header `X-Tyk-Authorization` or `Authorization: Bearer`); empty
    /// disables those endpoints.
    pub secret: String,
    /// Time an admin connection has to send a complete request head, ms, counted from when the
    /// server starts waiting for it (a new connection, or the next request of a kept-alive one);
    /// then the connection is closed (slowloris).
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
    pub dir: PathBuf,
    pub policies: PathBuf,
}

impl Default for AppsConfig {
    fn default() -> Self {
        AppsConfig { dir: "apps".into(), policies: "apps/policies.json".into() }
    }
}

/// `[storage]`: where keys (sessions) are stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Redis URL (`redis://host:port/db`); empty = the embedded store.
    pub redis: String,
    /// Prefix of session keys in Redis (Tyk's layout: `apikey-<hash>`).
    pub redis_key_prefix: String,
    /// File of the embedded store (relative to the config file).
    pub path: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { redis: String::new(), redis_key_prefix: "apikey-".into(), path: "data/keys.json".into() }
    }
}

/// `[limits]`: per-core rate limiter tuning, per-IP limits and the abuse detector.
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
    /// `ip_rate_limit` sets its own).
    pub ip_rate: f64,
    pub ip_per: f64,
    /// Rate-limit rejections from one IP within `ban_window_secs` that get it banned (XDP when
    /// loaded, user space otherwise) for `ban_ttl_secs`; 0 = never ban.
    pub ban_threshold: u64,
    pub ban_window_secs: u64,
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

/// `[cluster]`: limiter gossip between nodes through Redis pub/sub (`[storage] redis`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// How often this node publishes its limiter deltas, ms.
    pub gossip_interval_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { gossip_interval_ms: 10 }
    }
}

/// `[auth]`: per-worker auth caches and key handling.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Sessions, verified JWTs and basic-auth checks cached per worker (each cache).
    pub cache_capacity: usize,
    /// Longest a worker serves a cached session before asking the store again, ms. Changes made
    /// through this node's admin API reach every worker at once; this bounds changes made
    /// elsewhere (another node's admin API through Redis when pub/sub is lost).
    pub session_cache_ttl_ms: u64,
    /// How long an unknown key is remembered as unknown, ms.
    pub negative_cache_ttl_ms: u64,
    /// Longest a request waits for the key store on a cache miss, ms (then 503).
    pub key_lookup_timeout_ms: u64,
    /// Pending key lookups from all workers; beyond it requests get 503.
    pub key_lookup_queue: usize,
    /// How often JWKS URLs are fetched again, seconds (failed fetches retry every 10 s).
    pub jwks_refresh_secs: u64,
    /// bcrypt cost for basic-auth passwords set through the key API (4..=31).
    pub bcrypt_cost: u32,
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
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter, e.g. `info` or `portcullis=debug`; `RUST_LOG` wins when set.
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
        for p in [&mut self.apps.dir, &mut self.apps.policies, &mut self.storage.path, &mut self.analytics.path] {
            if p.is_relative() {
                *p = base.join(&*p);
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
        if self.limits.ban_ttl_secs > crate::bans::MAX_BAN_TTL_SECS {
            errs.push(ConfigError::new(
                path,
                "limits.ban_ttl_secs",
                self.limits.ban_ttl_secs.to_string(),
                format!("must be at most {} (ten years; 0 = until removed)", crate::bans::MAX_BAN_TTL_SECS),
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
        if p.max_headers > crate::dataplane::http::MAX_HEADERS {
            errs.push(ConfigError::new(
                path,
                "proxy.max_headers",
                p.max_headers.to_string(),
                format!("must be at most {}", crate::dataplane::http::MAX_HEADERS),
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
        if self.analytics.sink == AnalyticsSink::File && self.analytics.path.as_os_str().is_empty() {
            errs.push(ConfigError::new(path, "analytics.path", "", "must name a file when sink = \"file\""));
        }
        if !self.storage.redis.is_empty()
            && !(self.storage.redis.starts_with("redis://") || self.storage.redis.starts_with("rediss://"))
        {
            errs.push(ConfigError::new(path, "storage.redis", &self.storage.redis, "must be a redis:// URL"));
        }
        for (field, list) in [("ebpf.deny_cidrs", &self.ebpf.deny_cidrs), ("ebpf.allow_cidrs", &self.ebpf.allow_cidrs)]
        {
            for v in list {
                if crate::bans::parse_net(v).is_none() {
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
        if !(l.ip_rate.is_finite() && l.ip_rate >= 0.0) || !(l.ip_per.is_finite() && l.ip_per > 0.0) {
            errs.push(ConfigError::new(
                path,
                "limits.ip_rate/ip_per",
                format!("{}/{}", l.ip_rate, l.ip_per),
                "ip_rate must be >= 0 and ip_per > 0",
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
