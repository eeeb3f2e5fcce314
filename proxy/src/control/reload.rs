//! Config reload: re-read the config file, `apps/` and the policies file, validate, and swap the
//! snapshot whole. An error in the config file or the policies file rejects the reload and keeps
//! the running snapshot; a refused API definition is skipped (logged, listed in the outcome) and
//! the others apply, as Tyk does, unless `[apps] strict`, where it rejects the reload too. Keys that only apply at
//! startup (listen addresses, worker count, io driver, backlog, the analytics sink) are reported
//! if they changed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::load_snapshot;
use crate::config::{load_config, CliOverrides, ConfigError, Skipped, Snapshot};

/// Result of one reload attempt.
#[derive(Debug, Clone)]
pub enum ReloadOutcome {
    Applied { generation: u64, apis: usize, restart_needed: Vec<&'static str>, skipped: Vec<Skipped> },
    Rejected { errors: Vec<String> },
}

/// Called with each snapshot a reload applies.
type OnApplied = Box<dyn Fn(&Snapshot) + Send + Sync>;

pub struct Reloader {
    config_path: PathBuf,
    cli: CliOverrides,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Serialises reloads (SIGHUP and the API may race).
    lock: Mutex<()>,
    pub ok_total: AtomicU64,
    pub error_total: AtomicU64,
    pub last_error: Mutex<Option<Vec<String>>>,
    on_applied: Option<OnApplied>,
}

impl Reloader {
    pub fn new(config_path: PathBuf, cli: CliOverrides, snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        Reloader {
            config_path,
            cli,
            snapshot,
            lock: Mutex::new(()),
            ok_total: AtomicU64::new(0),
            error_total: AtomicU64::new(0),
            last_error: Mutex::new(None),
            on_applied: None,
        }
    }

    /// Runs `f` after each applied reload (bans and eBPF settings follow the new config).
    pub fn on_applied(mut self, f: impl Fn(&Snapshot) + Send + Sync + 'static) -> Self {
        self.on_applied = Some(Box::new(f));
        self
    }

    /// Reloads synchronously (reads files, resolves names: call from a blocking context).
    pub fn reload(&self) -> ReloadOutcome {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.snapshot.load_full();
        let outcome = match load_config(&self.config_path, &self.cli) {
            Err(errs) => Err(errs),
            Ok(cfg) => {
                let (snap, errs) = load_snapshot(cfg, old.generation + 1);
                let (skips, fatal): (Vec<ConfigError>, Vec<ConfigError>) =
                    errs.into_iter().partition(|e| !snap.config.apps.strict && snap.skips(e));
                for e in &skips {
                    tracing::error!(error = %e, "API definition skipped; the others are loaded");
                }
                if fatal.is_empty() {
                    Ok(snap)
                } else {
                    Err(fatal)
                }
            }
        };
        match outcome {
            Ok(snap) => {
                let restart_needed = restart_only_changes(&old, &snap);
                let generation = snap.generation;
                let apis = snap.apis.len();
                let skipped = snap.skipped.clone();
                if let Some(f) = &self.on_applied {
                    f(&snap);
                }
                self.snapshot.store(Arc::new(snap));
                self.ok_total.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(generation, apis, skipped = skipped.len(), ?restart_needed, "configuration reloaded");
                ReloadOutcome::Applied { generation, apis, restart_needed, skipped }
            }
            Err(errs) => {
                let errors: Vec<String> = errs.iter().map(ConfigError::to_string).collect();
                for e in &errors {
                    tracing::error!(error = %e, "reload rejected; keeping the running configuration");
                }
                self.error_total.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(errors.clone());
                ReloadOutcome::Rejected { errors }
            }
        }
    }
}

fn restart_only_changes(old: &Snapshot, new: &Snapshot) -> Vec<&'static str> {
    let (o, n) = (&old.config, &new.config);
    let mut v = Vec::new();
    if o.proxy.listen != n.proxy.listen {
        v.push("proxy.listen");
    }
    if o.proxy.workers != n.proxy.workers {
        v.push("proxy.workers");
    }
    if o.proxy.io_driver != n.proxy.io_driver {
        v.push("proxy.io_driver");
    }
    if o.proxy.accept_backlog != n.proxy.accept_backlog {
        v.push("proxy.accept_backlog");
    }
    if o.admin.listen != n.admin.listen {
        v.push("admin.listen");
    }
    if o.log.level != n.log.level {
        v.push("log.level");
    }
    let (oa, na) = (&o.analytics, &n.analytics);
    if (oa.sink, &oa.path, oa.rotate_mb, oa.keep, oa.queue_batches)
        != (na.sink, &na.path, na.rotate_mb, na.keep, na.queue_batches)
    {
        v.push("analytics.sink/path/rotate_mb/keep/queue_batches");
    }
    v
}
