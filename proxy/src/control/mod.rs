//! The control plane: one thread running a tokio current-thread runtime with the admin listener
//! (`/hello`, `/metrics`, `/tyk/*`), signal handling (SIGHUP reload, SIGTERM/SIGINT drain) and
//! config reload.
//!
//! Must not: touch worker-owned state other than through [`WorkerStats`](crate::dataplane::WorkerStats)
//! (published copies and relaxed atomics) and the snapshot `ArcSwap`; block the data plane.

pub mod acme;
mod admin;
mod analytics;
mod definitions;
mod health;
pub mod jwks;
mod keys;
mod metrics;
mod reload;
pub mod telemetry;
pub mod uptime;
mod visibility;

pub use admin::serve_admin;
pub(crate) use health::{publish as publish_health, publish_loop as publish_health_loop};
pub use metrics::render_metrics;
pub use reload::{EditRefused, ReloadOutcome, Reloader};

/// A JSON response with `status` (the admin API and the Tyk key API answer this way).
pub(crate) fn json_response(
    status: hyper::StatusCode,
    body: serde_json::Value,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

/// Loads the snapshot `config` names, fetching JWKS documents over HTTP (see
/// [`crate::config::load_snapshot_with`]).
pub fn load_snapshot(
    config: crate::config::Config,
    generation: u64,
) -> (crate::config::Snapshot, Vec<crate::config::ConfigError>) {
    crate::config::load_snapshot_with(config, generation, &jwks::http_fetch)
}

/// As [`load_snapshot`], as the files would be after `edit` (see
/// [`crate::config::load_snapshot_edited`]).
pub fn load_snapshot_edited(
    config: crate::config::Config,
    generation: u64,
    edit: &crate::config::FileEdit,
) -> (crate::config::Snapshot, Vec<crate::config::ConfigError>) {
    crate::config::load_snapshot_edited(config, generation, &jwks::http_fetch, edit)
}

use std::sync::Arc;
use std::time::Instant;

use crate::dataplane::{Shutdown, WorkerStats};

/// What the admin handlers can see.
pub struct ControlState {
    pub reloader: Reloader,
    pub bans: Arc<crate::bans::BanManager>,
    /// The XDP gate, when loaded.
    pub gate: Option<Arc<crate::ebpf::Gate>>,
    /// Per-connection telemetry (filled when the sock_ops program is attached).
    pub telemetry: Arc<telemetry::Telemetry>,
    pub workers: Vec<(usize, Arc<WorkerStats>)>,
    pub shutdown: Arc<Shutdown>,
    pub started: Instant,
    /// Sessions (embedded file or Redis).
    pub keys: Arc<crate::keystore::KeyStore>,
    /// Limiter gossip hub counters (relays, cluster, abuse bans).
    pub limits: Arc<crate::gossip::HubStats>,
    /// `[storage] redis` is set: limits are gossiped between nodes.
    pub cluster_enabled: bool,
    /// What the analytics pump has written.
    pub analytics: Arc<crate::analytics::pump::PumpStats>,
    /// The `search` sink's index (`/api/analytics/search`, `/api/analytics/aggregate`), when
    /// one is configured.
    pub search: Option<Arc<crate::analytics::search::SearchIndex>>,
    /// The gateway listener's health bodies, published by `health` for the workers.
    pub health: Arc<arc_swap::ArcSwap<crate::dataplane::health::HealthReplies>>,
    /// API visibility's per-API state (`/api/visibility/*`, `/metrics`).
    pub visibility: Arc<crate::visibility::VisibilityState>,
}
