//! Process lifecycle: load and validate the configuration, start the workers, run the control
//! plane until SIGTERM/SIGINT, then drain. Also `portcullis check`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::bans::{BanManager, BanSink};
use crate::config::{load_config, CliOverrides, Config, ConfigError, EbpfMode};
use crate::control::load_snapshot;
use crate::control::{serve_admin, ControlState, Reloader};
use crate::dataplane::{self, Shared, Shutdown};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigError>),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the control plane runtime: {0}")]
    Runtime(std::io::Error),
    #[error("[ebpf] mode = \"on\" but the XDP gate could not be started: {0}")]
    Ebpf(crate::ebpf::GateError),
    #[error("cannot open the key store: {0}")]
    KeyStore(crate::keystore::StoreError),
    #[error("cannot start analytics: {0}")]
    Analytics(crate::analytics::sink::OpenError),
}

/// Result of `portcullis check`: every problem found.
pub fn check(config_path: &Path, cli: &CliOverrides) -> Result<Checked, Vec<ConfigError>> {
    let cfg = load_config(config_path, cli)?;
    let (snap, errs) = load_snapshot(cfg.clone(), 1);
    if errs.is_empty() {
        Ok(Checked { apis: snap.apis.len(), inactive: snap.skipped, config: cfg })
    } else {
        Err(errs)
    }
}

/// A configuration `check` found valid.
pub struct Checked {
    pub config: Config,
    pub apis: usize,
    /// Definitions with `active: false`, which are not served.
    pub inactive: Vec<crate::config::Skipped>,
}

/// The Redis key of the TLS session-ticket secret nodes share (`[tls] ticket_secret_file`).
const TICKET_SECRET_KEY: &str = "portcullis-tls-ticket-secret";

/// With `[storage] redis` and no `[tls] ticket_secret_file`, makes the secret the ticket keys
/// derive from the one kept in Redis (the first node to start makes it), so that a ticket from
/// one node resumes on every other. Without Redis, or if it cannot be reached now, the process
/// keeps a secret of its own (logged): tickets then resume on this node only.
fn share_ticket_secret(cfg: &Config) {
    let t = &cfg.tls;
    if !t.enabled()
        || !t.session_tickets
        || !t.ticket_secret_file.as_os_str().is_empty()
        || cfg.storage.redis.is_empty()
    {
        return;
    }
    let shared = || -> Result<Vec<u8>, String> {
        let client = redis::Client::open(cfg.storage.redis.as_str()).map_err(|e| e.to_string())?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(3)).map_err(|e| e.to_string())?;
        let _ = con.set_read_timeout(Some(Duration::from_secs(3)));
        let mut mine = [0u8; 48];
        getrandom::fill(&mut mine).map_err(|e| e.to_string())?;
        let _: Option<String> = redis::cmd("SET")
            .arg(TICKET_SECRET_KEY)
            .arg(&mine[..])
            .arg("NX")
            .query(&mut con)
            .map_err(|e| e.to_string())?;
        let secret: Vec<u8> = redis::cmd("GET").arg(TICKET_SECRET_KEY).query(&mut con).map_err(|e| e.to_string())?;
        Ok(secret)
    };
    match shared().map(portcullis_tls::tickets::set_process_secret) {
        Ok(true) => {
            tracing::info!(key = TICKET_SECRET_KEY, "TLS session tickets: the secret shared through Redis");
        }
        Ok(false) => tracing::warn!(
            key = TICKET_SECRET_KEY,
            "TLS session tickets: the secret in Redis is shorter than 32 bytes; this node keeps its own"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "TLS session tickets: Redis unreachable at start; this node keeps a secret of its own (tickets resume here only)"
        ),
    }
}

/// Number of workers for a config value (0 = one per CPU of the affinity mask).
pub fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        dataplane::affinity_cpus().len().max(1)
    }
}

/// Runs the proxy until SIGTERM/SIGINT and a drain.
pub fn run(config_path: &Path, cli: CliOverrides) -> Result<(), StartError> {
    let started = Instant::now();
    let cfg = load_config(config_path, &cli).map_err(StartError::Config)?;
    share_ticket_secret(&cfg);
    let (snap, errs) = load_snapshot(cfg.clone(), 1);
    if cfg.apps.strict && !errs.is_empty() {
        return Err(StartError::Config(errs));
    }
    // A TLS listener whose certificates do not load would serve nothing: no start.
    let tls_errs: Vec<ConfigError> = errs.iter().filter(|e| e.field.starts_with("tls")).cloned().collect();
    if !tls_errs.is_empty() {
        return Err(StartError::Config(tls_errs));
    }
    for e in &errs {
        tracing::error!(error = %e, "API definition not loaded");
    }
    for a in &snap.apis {
        let lp = if a.listen_path.is_empty() { "/" } else { a.listen_path.as_str() };
        tracing::info!(api_id = %a.api_id, listen_path = lp, domain = ?a.domain, targets = a.targets.len(), "API loaded");
    }
    let snapshot = Arc::new(ArcSwap::from_pointee(snap));
    let shutdown = Arc::new(Shutdown::default());
    let bans = Arc::new(BanManager::new());
    bans.apply_config(&cfg.ebpf.deny_cidrs, &cfg.ebpf.allow_cidrs);
    let gate = start_gate(&cfg, &bans)?;
    let workers = worker_count(cfg.proxy.workers);
    let mut keystore = open_keystore(&cfg)?;
    let invalidations = (0..workers).map(|_| keystore.subscribe()).collect();
    let keystore = Arc::new(keystore);
    let a = &cfg.auth;
    let (key_client, lookups) =
        crate::keystore::lookup_channel(a.key_lookup_queue, Duration::from_millis(a.key_lookup_timeout_ms));
    let (links, hub_ends) = crate::gossip::channels(workers);
    let (feed, pump_ends) = crate::analytics::channels(workers, cfg.analytics.queue_batches);
    // API visibility learns from the records the analytics thread hands it.
    let visibility = Arc::new(crate::visibility::VisibilityState::open(&cfg.visibility.state_dir));
    let (vis_feed, vis_thread) =
        crate::visibility::spawn(Arc::clone(&visibility), Arc::clone(&snapshot)).map_err(|e| {
            StartError::Analytics(crate::analytics::sink::OpenError {
                name: "(visibility thread)".into(),
                message: e.to_string(),
            })
        })?;
    let analytics =
        crate::analytics::pump::spawn(&cfg, pump_ends, workers, Some(vis_feed)).map_err(StartError::Analytics)?;
    let pump_stats = Arc::clone(&analytics.stats);
    let search_index = analytics.handles.search.clone();
    let pump = analytics.thread;
    // Tyk's answers until the control plane's first checks (published before the admin listener
    // opens, so once the admin `/hello` answers, these are the checks' too).
    let health = Arc::new(ArcSwap::from_pointee(dataplane::health::HealthReplies::starting()));
    let down_hosts = Arc::new(ArcSwap::from_pointee(dataplane::DownHosts::default()));
    let acme_answers = Arc::new(ArcSwap::from_pointee(dataplane::acme::Challenges::default()));
    let shared = Shared {
        acme: Arc::clone(&acme_answers),
        down_hosts: Arc::clone(&down_hosts),
        health: Arc::clone(&health),
        analytics: feed,
        limiter: crate::limit::LimiterConfig { max_keys: cfg.limits.max_keys_per_worker },
        gossip: std::sync::Mutex::new(links.into_iter().map(Some).collect()),
        snapshot: Arc::clone(&snapshot),
        shutdown: Arc::clone(&shutdown),
        bans: bans.published(),
        keys: key_client,
        invalidations,
        auth_limits: crate::auth::CacheLimits {
            capacity: a.cache_capacity,
            session_ttl: Duration::from_millis(a.session_cache_ttl_ms),
            negative_ttl: Duration::from_millis(a.negative_cache_ttl_ms),
        },
    };

    let listen = cfg.listen_addr();
    let tls_listen = cfg.tls_listen_addr();
    let handles = dataplane::start(&shared, listen, tls_listen, workers, cfg.proxy.io_driver, cfg.proxy.accept_backlog)
        .map_err(|e| StartError::Bind {
            what: if e.tls { "tls.listen" } else { "proxy.listen" },
            addr: e.addr,
            source: e.source,
        })?;
    tracing::info!(%listen, ?tls_listen, workers, driver = ?cfg.proxy.io_driver, "proxy listening");
    // The workers hold their own ends now; once they have all stopped, the pump sees the queue
    // close and ends after writing what is left.
    drop(shared);

    let hub_stats = Arc::new(crate::gossip::HubStats::default());
    let l = &cfg.limits;
    let hub_cfg = crate::gossip::HubConfig {
        gossip_interval: Duration::from_millis(l.gossip_interval_ms),
        cluster_interval: Duration::from_millis(cfg.cluster.gossip_interval_ms),
        redis: cfg.storage.redis.clone(),
        ban_threshold: l.ban_threshold,
        ban_window: Duration::from_secs(l.ban_window_secs),
        ban_ttl: Duration::from_secs(l.ban_ttl_secs),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StartError::Runtime)?;
    let hook_bans = Arc::clone(&bans);
    let hook_gate = gate.clone();
    let on_reload = move |snap: &crate::config::Snapshot| {
        let e = &snap.config.ebpf;
        hook_bans.apply_config(&e.deny_cidrs, &e.allow_cidrs);
        if let Some(g) = &hook_gate {
            let port = snap.config.listen_addr().port();
            if let Err(err) = g.apply_config(e, port) {
                tracing::error!(error = %err, "could not apply [ebpf] settings to the XDP gate");
            }
        }
    };
    let state = Arc::new(ControlState {
        reloader: Reloader::new(config_path.to_path_buf(), cli, snapshot).on_applied(on_reload),
        bans: Arc::clone(&bans),
        gate: gate.clone(),
        telemetry: Arc::new(crate::control::telemetry::Telemetry::default()),
        workers: handles.iter().map(|h| (h.id, Arc::clone(&h.stats))).collect(),
        shutdown: Arc::clone(&shutdown),
        started,
        keys: Arc::clone(&keystore),
        limits: Arc::clone(&hub_stats),
        cluster_enabled: !cfg.storage.redis.is_empty(),
        analytics: Arc::clone(&pump_stats),
        search: search_index,
        health,
        visibility: Arc::clone(&visibility),
    });
    let admin_addr = cfg.admin_addr();
    let result = rt.block_on(async {
        crate::control::publish_health(&state);
        tokio::spawn(crate::control::publish_health_loop(Arc::clone(&state)));
        let listener = tokio::net::TcpListener::bind(admin_addr).await.map_err(|source| StartError::Bind {
            what: "admin.listen",
            addr: admin_addr,
            source,
        })?;
        tracing::info!(admin = %admin_addr, "admin API listening");
        tokio::spawn(serve_admin(listener, Arc::clone(&state)));
        tokio::spawn(crate::keystore::serve_lookups(Arc::clone(&keystore), lookups));
        tokio::spawn(crate::keystore::follow_changes(Arc::clone(&keystore)));
        tokio::spawn(crate::keystore::watch_health(Arc::clone(&keystore)));
        let flusher = Arc::clone(&keystore);
        every_second(move || flusher.flush_quotas());
        tokio::spawn(crate::gossip::run_hub(hub_ends, hub_cfg, Arc::clone(&hub_stats), Arc::clone(&bans)));
        tokio::spawn(crate::control::jwks::refresh_loop(Arc::clone(&state.reloader.snapshot)));
        tokio::spawn(crate::control::uptime::run(Arc::clone(&state.reloader.snapshot), down_hosts));
        let answers = Arc::new(crate::control::acme::Answers::new(acme_answers));
        tokio::spawn(crate::control::acme::run(Arc::clone(&state), answers));
        if let Some(ring) = state.gate.as_ref().and_then(|g| g.take_ring()) {
            tokio::spawn(crate::control::telemetry::run(ring, Arc::clone(&state.telemetry)));
        }
        if let Some(logger) = state.gate.as_ref().and_then(|g| g.take_logger()) {
            tokio::spawn(crate::control::telemetry::pump_ebpf_logs(logger));
        }
        let sweeper = Arc::clone(&bans);
        every_second(move || {
            sweeper.sweep();
        });
        wait_for_signals(&state).await;
        Ok(())
    });
    // Stop the workers (also when the admin listener failed to bind) and wait for the drain.
    shutdown.trigger();
    let drain = Duration::from_millis(cfg.proxy.drain_timeout_ms) + Duration::from_secs(2);
    let deadline = Instant::now() + drain;
    for h in handles {
        while !h.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if h.thread.is_finished() {
            let _ = h.thread.join();
        } else {
            tracing::warn!(worker = h.id, "worker did not stop in time");
        }
    }
    keystore.flush_quotas();
    // Records the workers handed over while draining are written before the process exits.
    while !pump.is_finished() && Instant::now() < deadline + Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    if pump.is_finished() {
        let _ = pump.join();
    } else {
        tracing::warn!("analytics pump did not finish writing in time");
    }
    // The visibility thread saves its state once the pump has let go of it.
    while !vis_thread.is_finished() && Instant::now() < deadline + Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(10));
    }
    if vis_thread.is_finished() {
        let _ = vis_thread.join();
    } else {
        tracing::warn!("visibility thread did not save in time");
        visibility.save();
    }
    // Detach the XDP gate: dropping the last reference drops aya's links.
    drop(state);
    if let Some(g) = gate {
        let ifaces: Vec<String> = g.attached.iter().map(|(i, _)| i.clone()).collect();
        drop(g);
        tracing::info!(interfaces = ?ifaces, "XDP gate detached");
    }
    tracing::info!("stopped");
    result
}

/// The embedded store at `[storage] path`, or Redis when `[storage] redis` is set.
/// Runs `f` once a second on the control plane for the life of the process.
fn every_second(mut f: impl FnMut() + Send + 'static) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            f();
        }
    });
}

fn open_keystore(cfg: &Config) -> Result<crate::keystore::KeyStore, StartError> {
    use crate::keystore::{EmbeddedStore, KeyStore, RedisStore};
    if cfg.storage.redis.is_empty() {
        let store = EmbeddedStore::open(&cfg.storage.path).map_err(StartError::KeyStore)?;
        tracing::info!(path = %cfg.storage.path.display(), keys = store.hashes().len(), "key store: embedded");
        let quotas = cfg.storage.path.with_file_name("quotas.json");
        KeyStore::embedded(store, &quotas).map_err(StartError::KeyStore)
    } else {
        let store = RedisStore::new(&cfg.storage.redis, &cfg.storage.redis_key_prefix).map_err(StartError::KeyStore)?;
        tracing::info!(prefix = %cfg.storage.redis_key_prefix, "key store: redis");
        let weak: Vec<&str> =
            cfg.auth.tyk_key_hashes.iter().map(String::as_str).filter(|h| h.starts_with("murmur")).collect();
        if !weak.is_empty() {
            tracing::warn!(
                hashes = ?weak,
                "[auth] tyk_key_hashes reads keys Tyk gateways stored under murmur hashes: a key can be made to match a known murmur hash; update such keys through the key API to store them under their SHA-256"
            );
        }
        Ok(KeyStore::redis(store))
    }
}

/// Starts the XDP gate per `[ebpf] mode`. `auto` falls back to user-space enforcement with one
/// log line; `on` refuses to start without the gate.
fn start_gate(cfg: &Config, bans: &Arc<BanManager>) -> Result<Option<Arc<crate::ebpf::Gate>>, StartError> {
    if cfg.ebpf.mode == EbpfMode::Off {
        tracing::info!("eBPF off ([ebpf] mode = \"off\"): bans and deny lists enforced in user space");
        return Ok(None);
    }
    match crate::ebpf::Gate::load(&cfg.ebpf, cfg.listen_addr().port()) {
        Ok(g) => {
            let g = Arc::new(g);
            tracing::info!(attached = ?g.attached, "XDP gate loaded");
            bans.set_sink(Arc::clone(&g) as Arc<dyn BanSink>);
            Ok(Some(g))
        }
        Err(e) if cfg.ebpf.mode == EbpfMode::On => Err(StartError::Ebpf(e)),
        Err(e) => {
            tracing::warn!("XDP gate not loaded ({e}); enforcing bans and deny lists in user space");
            Ok(None)
        }
    }
}

async fn wait_for_signals(state: &Arc<ControlState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers; stopping");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading configuration");
                let st = Arc::clone(state);
                let _ = tokio::task::spawn_blocking(move || st.reloader.reload()).await;
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM: draining");
                return;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: draining");
                return;
            }
        }
    }
}
