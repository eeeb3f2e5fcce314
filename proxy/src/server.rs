//! Process lifecycle: load and validate the configuration, start the workers, run the control
//! plane until SIGTERM/SIGINT, then drain. Also `portcullis check`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::{load_config, load_snapshot, CliOverrides, Config, ConfigError};
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
}

/// Result of `portcullis check`: every problem found.
pub fn check(config_path: &Path, cli: &CliOverrides) -> Result<(Config, usize), Vec<ConfigError>> {
    let cfg = load_config(config_path, cli)?;
    let (snap, errs) = load_snapshot(cfg.clone(), 1);
    if errs.is_empty() {
        Ok((cfg, snap.apis.len()))
    } else {
        Err(errs)
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
    let (snap, errs) = load_snapshot(cfg.clone(), 1);
    for e in &errs {
        tracing::error!(error = %e, "API definition not loaded");
    }
    for a in &snap.apis {
        let lp = if a.listen_path.is_empty() { "/" } else { a.listen_path.as_str() };
        tracing::info!(api_id = %a.api_id, listen_path = lp, domain = ?a.domain, targets = a.targets.len(), "API loaded");
    }
    let snapshot = Arc::new(ArcSwap::from_pointee(snap));
    let shutdown = Arc::new(Shutdown::default());
    let shared = Shared { snapshot: Arc::clone(&snapshot), shutdown: Arc::clone(&shutdown) };

    let workers = worker_count(cfg.proxy.workers);
    let listen = cfg.listen_addr();
    let handles = dataplane::start(&shared, listen, workers, cfg.proxy.io_driver, cfg.proxy.accept_backlog)
        .map_err(|source| StartError::Bind { what: "proxy.listen", addr: listen, source })?;
    tracing::info!(%listen, workers, driver = ?cfg.proxy.io_driver, "proxy listening");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StartError::Runtime)?;
    let state = Arc::new(ControlState {
        reloader: Reloader::new(config_path.to_path_buf(), cli, snapshot),
        workers: handles.iter().map(|h| (h.id, Arc::clone(&h.stats))).collect(),
        shutdown: Arc::clone(&shutdown),
        started,
    });
    let admin_addr = cfg.admin_addr();
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(admin_addr)
            .await
            .map_err(|source| StartError::Bind { what: "admin.listen", addr: admin_addr, source })?;
        tracing::info!(admin = %admin_addr, "admin API listening");
        tokio::spawn(serve_admin(listener, Arc::clone(&state)));
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
    tracing::info!("stopped");
    result
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
