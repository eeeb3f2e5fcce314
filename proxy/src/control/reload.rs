//! Config reload: re-read the config file, `apps/` and the policies file, validate, and swap the
//! snapshot whole. An error in the config file or the policies file rejects the reload and keeps
//! the running snapshot; a refused API definition is skipped (logged, listed in the outcome) and
//! the others apply, as Tyk does, unless `[apps] strict`, where it rejects the reload too. Keys that only apply at
//! startup (listen addresses, `[tls] listen`, worker count, io driver, backlog, the analytics sink) are reported
//! if they changed.
//!
//! The admin API's changes to the definition files ([`Reloader::apply`]) are a reload too: the
//! snapshot is loaded as the files would be after the change, and only when it would be applied,
//! with the changed definition in it, is the file written (atomically) and the snapshot swapped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::{load_snapshot, load_snapshot_edited};
use crate::config::{load_config, plan, Change, CliOverrides, ConfigError, FileEdit, PlanError, Skipped, Snapshot};

/// Result of one reload attempt.
#[derive(Debug, Clone)]
pub enum ReloadOutcome {
    Applied { generation: u64, apis: usize, restart_needed: Vec<&'static str>, skipped: Vec<Skipped> },
    Rejected { errors: Vec<String> },
}

/// Why [`Reloader::apply`] changed nothing (no file was written, the running snapshot stays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditRefused {
    /// The API or policy to change is not loaded.
    NotFound,
    /// The loader refuses the changed definition, or an API it serves would be refused because
    /// of it (a listen path or `api_id` taken over): its errors, naming file, field and value.
    Invalid(Vec<String>),
    /// The configuration would not reload whatever the change (the config file or the policies
    /// file is wrong, or `[apps] strict` and a definition is refused): its errors.
    NotReloadable(Vec<String>),
    /// The file could not be written or removed.
    Write(String),
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
    /// Notified after every reload, applied or rejected (the health checks run again).
    pub reloaded: tokio::sync::Notify,
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
            reloaded: tokio::sync::Notify::new(),
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
                applicable(snap, errs)
            }
        };
        match outcome {
            Ok(snap) => self.install(&old, snap),
            Err(errs) => {
                let errors: Vec<String> = errs.iter().map(ConfigError::to_string).collect();
                for e in &errors {
                    tracing::error!(error = %e, "reload rejected; keeping the running configuration");
                }
                self.error_total.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(errors.clone());
                self.reloaded.notify_one();
                ReloadOutcome::Rejected { errors }
            }
        }
    }

    /// Makes `change` to the definition files and reloads (synchronously, as [`Self::reload`]):
    /// the snapshot is loaded as the files would be after the change; if the loader refuses the
    /// changed definition, or an API being served would be refused because of it, or the reload
    /// would be rejected anyway, nothing is written and the running snapshot stays. Otherwise
    /// the file is written (or removed) atomically and that snapshot applied: the reload the
    /// change asks for, of every file as it now is on disk. Returns the new generation.
    pub fn apply(&self, change: &Change) -> Result<u64, EditRefused> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.snapshot.load_full();
        let cfg =
            load_config(&self.config_path, &self.cli).map_err(|errs| EditRefused::NotReloadable(strings(&errs)))?;
        let edit = plan(&cfg, &old, change).map_err(|e| match e {
            PlanError::NotLoaded => EditRefused::NotFound,
            PlanError::Refused(e) => EditRefused::Invalid(vec![e.to_string()]),
        })?;
        let strict = cfg.apps.strict;
        let (snap, errs) = load_snapshot_edited(cfg, old.generation + 1, &edit);
        let target = edit.path.display().to_string();
        let own: Vec<&ConfigError> = errs.iter().filter(|e| e.file == target).collect();
        if !own.is_empty() {
            return Err(EditRefused::Invalid(strings(own)));
        }
        if let Some(why) = not_loaded(&snap, change, &edit) {
            return Err(EditRefused::Invalid(vec![why]));
        }
        // A served API the loader would now refuse: its listen path or api_id taken over.
        let displaced: Vec<&ConfigError> =
            errs.iter().filter(|e| snap.skips(e) && old.apis.iter().any(|a| a.file == e.file)).collect();
        if !displaced.is_empty() {
            return Err(EditRefused::Invalid(strings(displaced)));
        }
        let fatal: Vec<&ConfigError> = errs.iter().filter(|e| strict || !snap.skips(e)).collect();
        if !fatal.is_empty() {
            return Err(EditRefused::NotReloadable(strings(fatal)));
        }
        write(&edit).map_err(EditRefused::Write)?;
        tracing::info!(file = %target, removed = edit.text.is_none(), "definition file written by the admin API");
        for e in &errs {
            tracing::error!(error = %e, "API definition skipped; the others are loaded");
        }
        let generation = snap.generation;
        self.install(&old, snap);
        Ok(generation)
    }

    /// Swaps in `snap`, a reload's accepted snapshot.
    fn install(&self, old: &Snapshot, snap: Snapshot) -> ReloadOutcome {
        let restart_needed = restart_only_changes(old, &snap);
        let generation = snap.generation;
        let apis = snap.apis.len();
        let skipped = snap.skipped.clone();
        if let Some(f) = &self.on_applied {
            f(&snap);
        }
        self.snapshot.store(Arc::new(snap));
        self.ok_total.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.reloaded.notify_one();
        tracing::info!(generation, apis, skipped = skipped.len(), ?restart_needed, "configuration reloaded");
        ReloadOutcome::Applied { generation, apis, restart_needed, skipped }
    }
}

fn strings<'e>(errs: impl IntoIterator<Item = &'e ConfigError>) -> Vec<String> {
    errs.into_iter().map(ConfigError::to_string).collect()
}

/// `snap` if a reload applies it: refused definitions are skipped (logged) unless `[apps]
/// strict`; any other error rejects it.
fn applicable(snap: Snapshot, errs: Vec<ConfigError>) -> Result<Snapshot, Vec<ConfigError>> {
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

/// Why the definition `change` puts would not be served by `snap` although the loader found no
/// error in it: a file name the loader does not read as a definition (`policies.json`, the
/// OpenAPI companion `<name>-oas.json` of another definition).
fn not_loaded(snap: &Snapshot, change: &Change, edit: &FileEdit) -> Option<String> {
    let file = edit.path.display().to_string();
    match change {
        Change::PutApi { api_id, .. } => {
            let loaded = snap.apis.iter().any(|a| a.file == file && a.api_id == *api_id)
                || snap.skipped.iter().any(|s| s.file == file && s.inactive);
            (!loaded).then(|| {
                format!(
                    "{file}: field `api_id` = {api_id}: would not be read as an API definition (the loader skips \
                     policies.json and the OpenAPI companion <name>-oas.json or <name>-mcp.json of another \
                     definition); choose another api_id"
                )
            })
        }
        Change::PutPolicy { id, .. } => {
            let loaded = snap.policy_sources.get(id).is_some_and(|s| s.file == edit.path);
            (!loaded).then(|| format!("{file}: field `id` = {id}: would not be loaded as policy {id:?}"))
        }
        Change::PutSpec { api_id, .. } => {
            let loaded =
                snap.apis.iter().any(|a| a.api_id == *api_id && a.visibility.spec_file.as_ref() == Some(&edit.path));
            (!loaded).then(|| format!("{file}: would not be read as the OpenAPI document of API {api_id:?}"))
        }
        Change::DeleteApi { .. } | Change::DeletePolicy { .. } | Change::DeleteSpec { .. } => None,
    }
}

/// Writes or removes the file, atomically (a temporary file renamed over it; the directory
/// synced).
fn write(edit: &FileEdit) -> Result<(), String> {
    let path = &edit.path;
    match &edit.text {
        Some(text) => crate::keystore::write_atomic(path, text.as_bytes()).map_err(|e| match e {
            crate::keystore::StoreError::File { source, .. } => format!("cannot write {}: {source}", path.display()),
            other => other.to_string(),
        }),
        None => {
            std::fs::remove_file(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
            if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
                let _ = dir.sync_all();
            }
            Ok(())
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
    if o.tls.listen != n.tls.listen {
        v.push("tls.listen");
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
    if (&oa.sinks, &oa.spool_dir, &oa.index_path) != (&na.sinks, &na.spool_dir, &na.index_path) {
        v.push("analytics.sinks/spool_dir/index_path");
    }
    v
}
