//! Per-worker metrics. Each worker writes only its own [`LocalStats`] (a `RefCell`, no atomics on
//! the request path) and publishes a copy into its [`WorkerStats`] every [`PUBLISH_INTERVAL`] and
//! when it stops; the control plane sums the published copies on scrape. Connection gauges, which
//! a scrape should see at once, are relaxed atomics written by the owning worker only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ahash::AHashMap;
use arc_swap::ArcSwap;

use portcullis_http1::Method;

/// How often a worker publishes its counters.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(200);

/// Upper bounds (seconds) of the request duration histogram: OTel's HTTP server buckets, extended
/// below 5 ms because a proxy's own latency lives there.
pub const DURATION_BUCKETS: [f64; 19] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0,
];

/// Histogram of request durations for one (api, method, code).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    pub buckets: [u64; DURATION_BUCKETS.len() + 1],
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        let i = DURATION_BUCKETS.iter().position(|&b| seconds <= b).unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_seconds += seconds;
    }
}

/// Counters for one API on one worker.
#[derive(Debug, Clone, Default)]
pub struct ApiStats {
    pub durations: AHashMap<(Method, u16), Histogram>,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// Everything one worker counts, by value (published as a copy).
#[derive(Debug, Clone, Default)]
pub struct LocalStats {
    /// Keyed by api_id (`""` for requests that matched no API).
    pub apis: AHashMap<Box<str>, ApiStats>,
    pub requests: u64,
    pub connections_accepted: u64,
    /// Connections closed at once because the worker was at `max_connections_per_worker`.
    pub connections_refused: u64,
    /// Connections and requests refused because the client address is banned.
    pub connections_banned: u64,
    /// TLS handshakes completed on the TLS listener, and those that failed or timed out.
    pub tls_handshakes: u64,
    pub tls_handshake_failures: u64,
    /// Response bodies moved with splice(2), and their bytes (see `splice`).
    pub bodies_spliced: u64,
    pub bytes_spliced: u64,
    /// Responses served from the response cache (`cache`), and responses kept in it.
    pub cache_hits: u64,
    pub cache_stores: u64,
    pub upstream_connections_opened: u64,
    pub upstream_connect_errors: u64,
    pub upstream_timeouts: u64,
    pub upstream_idle: u64,
    /// Exchanges that waited for a slot under `upstream_max_connections`, those that gave up
    /// (503), and those waiting now (set when published).
    pub upstream_queued: u64,
    pub upstream_queue_timeouts: u64,
    pub upstream_waiting: u64,
    /// Requests refused by IP rules, path lists or auth.
    pub auth_denied: u64,
    /// Requests refused with 429.
    pub rate_limited: u64,
    /// The limiter's own counters (copied when published).
    pub limiter: crate::limit::LimiterStats,
    /// Cache misses sent to the key store, and those that failed.
    pub key_lookups: u64,
    pub key_lookup_errors: u64,
    /// Sessions in the worker's cache (set when published).
    pub cached_sessions: u64,
    /// Request records handed to the analytics pump, and dropped on a full queue (set when
    /// published).
    pub analytics: crate::analytics::RecorderStats,
}

impl LocalStats {
    pub fn record(&mut self, api_id: &str, method: Method, code: u16, seconds: f64, bytes_in: u64, bytes_out: u64) {
        self.requests += 1;
        // One lookup when the API is known (every request but its first).
        let api = match self.apis.get_mut(api_id) {
            Some(api) => api,
            None => self.apis.entry(api_id.into()).or_default(),
        };
        api.durations.entry((method, code)).or_default().observe(seconds);
        api.request_bytes += bytes_in;
        api.response_bytes += bytes_out;
    }
}

/// The part of a worker the control plane can read.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub open_connections: AtomicU64,
    /// CPU the worker is pinned to, and its io driver ("uring" or "epoll"), set once at start.
    pub cpu: OnceLock<Option<usize>>,
    pub driver: OnceLock<&'static str>,
    pub published: ArcSwap<LocalStats>,
}

impl WorkerStats {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkerStats::default())
    }

    pub fn open(&self) -> u64 {
        self.open_connections.load(Ordering::Relaxed)
    }
}
