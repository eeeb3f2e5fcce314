//! The key store (control plane): sessions stored under the SHA-256 of their key, in an
//! embedded file (default; survives restarts, written atomically) or in Redis (`[storage]
//! redis`, Tyk's `apikey-<hash>` layout, shared by every node).
//!
//! Workers never call it directly: they send a [`Lookup`] through [`KeyClient`] on a cache miss
//! and the control plane answers. Every write is announced to every worker's cache
//! ([`Invalidation`]) before the admin API replies, so the next request anywhere sees it; with
//! Redis, writes are also published so other nodes drop their cached copy. Must not: keep or
//! log a key in plain text; run on a worker thread.

mod embedded;
pub mod quota;
mod redis_store;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{hex, Invalidation, KeyHash, KeyLookup, Session};
use crate::config::TykSession;

pub(crate) use embedded::write_atomic;
pub use embedded::EmbeddedStore;
pub use redis_store::{follow_changes, watch_health, RedisStore};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key store file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("key store file {path} is not valid: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("redis: {0}")]
    Redis(String),
}

enum Backend {
    Embedded(EmbeddedStore),
    Redis(RedisStore),
}

/// Sessions by key hash, with change announcements to the workers; quota counters.
pub struct KeyStore {
    backend: Backend,
    /// Quotas: the embedded table (persisted) or, with Redis, the fallback while it is down.
    quotas: quota::QuotaTable,
    pub quota_fallbacks_total: AtomicU64,
    workers: Vec<crossbeam_channel::Sender<Invalidation>>,
    pub lookups_total: AtomicU64,
    pub lookup_errors_total: AtomicU64,
}

impl KeyStore {
    /// The embedded store, with quotas kept in `quota_path`.
    pub fn embedded(store: EmbeddedStore, quota_path: &std::path::Path) -> Result<Self, StoreError> {
        Ok(Self::with(Backend::Embedded(store), quota::QuotaTable::open(Some(quota_path))?))
    }

    pub fn redis(store: RedisStore) -> Self {
        // In-memory only: it is the fallback while Redis is unreachable.
        Self::with(Backend::Redis(store), quota::QuotaTable::empty())
    }

    fn with(backend: Backend, quotas: quota::QuotaTable) -> Self {
        KeyStore {
            backend,
            quotas,
            quota_fallbacks_total: AtomicU64::new(0),
            workers: Vec::new(),
            lookups_total: AtomicU64::new(0),
            lookup_errors_total: AtomicU64::new(0),
        }
    }

    /// Reserves a block of a quota for a worker. With Redis unreachable, reserves from this
    /// node's own table (quotas are node-local until Redis returns; counted).
    pub async fn reserve_quota(&self, q: &crate::limit::quota::Quota) -> crate::limit::quota::Reservation {
        if let Backend::Redis(r) = &self.backend {
            match r.reserve_quota(q).await {
                Ok(res) => return res,
                Err(e) => {
                    self.quota_fallbacks_total.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "quota reserved node-locally: redis unavailable");
                }
            }
        }
        self.quotas.reserve(q)
    }

    /// Starts quota `id` over (the key API does it when a key is updated).
    pub async fn reset_quota(&self, id: &str) -> Result<(), StoreError> {
        self.quotas.reset(id);
        if let Backend::Redis(r) = &self.backend {
            r.reset_quota(id).await?;
        }
        Ok(())
    }

    /// Gives counter `to` what counter `from` has counted, and its expiry, unless `to` exists
    /// (a key a Tyk gateway wrote, moved to its SHA-256 by the key API). Counters of Tyk's
    /// names exist only in Redis.
    pub async fn copy_quota(&self, from: &str, to: &str) -> Result<(), StoreError> {
        if let Backend::Redis(r) = &self.backend {
            r.copy_quota(from, to).await?;
        }
        Ok(())
    }

    /// Writes the embedded quota table if it changed.
    pub fn flush_quotas(&self) {
        if let Err(e) = self.quotas.flush() {
            tracing::warn!(error = %e, "cannot write the quota table");
        }
    }

    /// A new worker's invalidation channel.
    pub fn subscribe(&mut self) -> crossbeam_channel::Receiver<Invalidation> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.workers.push(tx);
        rx
    }

    /// Tells every worker of this process to drop `inv`.
    pub fn invalidate_local(&self, inv: Invalidation) {
        for w in &self.workers {
            let _ = w.send(inv);
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Embedded(_) => "embedded",
            Backend::Redis(_) => "redis",
        }
    }

    pub fn redis_store(&self) -> Option<&RedisStore> {
        match &self.backend {
            Backend::Redis(r) => Some(r),
            Backend::Embedded(_) => None,
        }
    }

    /// The stored session (Tyk's JSON, every field kept).
    pub async fn get(&self, hash: &KeyHash) -> Result<Option<TykSession>, StoreError> {
        self.lookups_total.fetch_add(1, Ordering::Relaxed);
        let r = match &self.backend {
            Backend::Embedded(e) => Ok(e.get(hash)),
            Backend::Redis(r) => r.get(hash).await,
        };
        if r.is_err() {
            self.lookup_errors_total.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// The session of a key a worker or the key API asks for: under its SHA-256, else (with
    /// Redis) where a Tyk gateway keeps it (`KeyLookup::tyk`, the first name that has one).
    /// The Tyk name it was found under comes with it.
    pub async fn find(&self, key: &KeyLookup) -> Result<Option<(TykSession, Option<String>)>, StoreError> {
        if let Some(s) = self.get(&key.hash).await? {
            return Ok(Some((s, None)));
        }
        match &self.backend {
            Backend::Redis(r) if !key.tyk.is_empty() => {
                let r = r.get_first(&key.tyk).await;
                if r.is_err() {
                    self.lookup_errors_total.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r?.map(|(name, s)| (s, Some(name))))
            }
            _ => Ok(None),
        }
    }

    /// The session a Tyk gateway stored under `name` (a hash in hex, `?hashed=true`).
    pub async fn get_tyk(&self, name: &str) -> Result<Option<TykSession>, StoreError> {
        match &self.backend {
            Backend::Redis(r) => Ok(r.get_first(&[name.to_string()]).await?.map(|(_, s)| s)),
            Backend::Embedded(_) => Ok(None),
        }
    }

    /// Deletes the sessions Tyk gateways stored under `names`; true when one existed. Workers
    /// cache sessions by the SHA-256 of the key: `key` names it when known, else every
    /// worker drops every cached session.
    pub async fn delete_tyk(&self, names: &[String], key: Option<&KeyHash>) -> Result<bool, StoreError> {
        let Backend::Redis(r) = &self.backend else { return Ok(false) };
        if names.is_empty() {
            return Ok(false);
        }
        let existed = r.delete_names(names, key).await?;
        self.invalidate_local(key.map_or(Invalidation::All, |h| Invalidation::Key(*h)));
        Ok(existed)
    }

    pub async fn put(&self, hash: &KeyHash, session: &TykSession) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Embedded(e) => e.put(hash, session)?,
            Backend::Redis(r) => r.put(hash, session).await?,
        }
        self.invalidate_local(Invalidation::Key(*hash));
        Ok(())
    }

    /// True when the key existed.
    pub async fn delete(&self, hash: &KeyHash) -> Result<bool, StoreError> {
        let existed = match &self.backend {
            Backend::Embedded(e) => e.delete(hash)?,
            Backend::Redis(r) => r.delete(hash).await?,
        };
        self.invalidate_local(Invalidation::Key(*hash));
        Ok(existed)
    }

    /// Hashes of every stored key (hex).
    pub async fn list(&self) -> Result<Vec<String>, StoreError> {
        let mut v: Vec<String> = match &self.backend {
            Backend::Embedded(e) => e.hashes().iter().map(hex).collect(),
            Backend::Redis(r) => r.list().await?,
        };
        v.sort();
        Ok(v)
    }
}

/// A worker's question to the control plane.
pub enum Lookup {
    /// The session stored for this key, as auth acts on it.
    Session { key: KeyLookup, reply: futures_channel::oneshot::Sender<Result<Option<Arc<Session>>, String>> },
    /// Does this password match its stored hash? (bcrypt, run on the blocking pool.)
    Password { check: crate::auth::PasswordCheck, reply: futures_channel::oneshot::Sender<bool> },
    /// A block of this quota.
    Quota {
        quota: crate::limit::quota::Quota,
        reply: futures_channel::oneshot::Sender<crate::limit::quota::Reservation>,
    },
    /// The address of an upstream host name (the system resolver, off the worker).
    Resolve { host: String, port: u16, reply: futures_channel::oneshot::Sender<Result<std::net::SocketAddr, String>> },
}

/// Password checks running at once (each is a bcrypt: milliseconds of CPU); more wait in line,
/// bounded by the lookup queue and each request's lookup timeout.
pub const PASSWORD_CHECKS_AT_ONCE: usize = 2;

/// A worker's handle for asking the control plane for sessions.
/// The channel is futures-channel, not tokio's: the data plane holds no tokio type.
pub struct KeyClient {
    tx: std::cell::RefCell<futures_channel::mpsc::Sender<Lookup>>,
    timeout: Duration,
}

/// Why a worker could not get a session.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("key store is busy")]
    Busy,
    #[error("key store did not answer in time")]
    Timeout,
    #[error("key store unavailable: {0}")]
    Store(String),
}

impl KeyClient {
    /// Sends one request to the control plane and waits at most the configured lookup timeout
    /// for its answer. Runs on a worker (monoio): the channel and the oneshot are runtime-agnostic.
    async fn ask<T>(
        &self,
        request: impl FnOnce(futures_channel::oneshot::Sender<T>) -> Lookup,
    ) -> Result<T, LookupError> {
        let (reply, rx) = futures_channel::oneshot::channel();
        self.tx.borrow_mut().try_send(request(reply)).map_err(|_| LookupError::Busy)?;
        match monoio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(LookupError::Store("control plane dropped the request".into())),
            Err(_) => Err(LookupError::Timeout),
        }
    }

    /// Asks the control plane for a session.
    pub async fn fetch(&self, key: KeyLookup) -> Result<Option<Arc<Session>>, LookupError> {
        self.ask(|reply| Lookup::Session { key, reply }).await?.map_err(LookupError::Store)
    }

    /// Reserves a block of a quota through the control plane.
    pub async fn reserve_quota(
        &self,
        quota: crate::limit::quota::Quota,
    ) -> Result<crate::limit::quota::Reservation, LookupError> {
        self.ask(|reply| Lookup::Quota { quota, reply }).await
    }

    /// Has the control plane resolve an upstream host name (so the worker never blocks in
    /// getaddrinfo).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<std::net::SocketAddr, LookupError> {
        let host = host.to_string();
        self.ask(|reply| Lookup::Resolve { host, port, reply }).await?.map_err(LookupError::Store)
    }

    /// Has the control plane check a basic-auth password (so the worker never runs bcrypt).
    pub async fn check_password(&self, check: crate::auth::PasswordCheck) -> Result<bool, LookupError> {
        self.ask(|reply| Lookup::Password { check, reply }).await
    }
}

/// The channel between workers and [`serve_lookups`].
pub fn lookup_channel(capacity: usize, timeout: Duration) -> (KeyClient, futures_channel::mpsc::Receiver<Lookup>) {
    let (tx, rx) = futures_channel::mpsc::channel(capacity.max(1));
    (KeyClient { tx: std::cell::RefCell::new(tx), timeout }, rx)
}

impl Clone for KeyClient {
    /// One client per worker, each with its own sender.
    fn clone(&self) -> Self {
        KeyClient { tx: std::cell::RefCell::new(self.tx.borrow().clone()), timeout: self.timeout }
    }
}

/// Answers workers' lookups (control plane task). Each lookup runs as its own task so one slow
/// Redis reply does not hold up the others.
pub async fn serve_lookups(store: Arc<KeyStore>, mut rx: futures_channel::mpsc::Receiver<Lookup>) {
    let bcrypt_slots = Arc::new(tokio::sync::Semaphore::new(PASSWORD_CHECKS_AT_ONCE));
    while let Some(l) = futures_util::StreamExt::next(&mut rx).await {
        match l {
            Lookup::Session { key, reply } => {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    // A session found where a Tyk gateway keeps it carries that name: its quota
                    // counter is Tyk's (`Identity::quota_id`).
                    let to_session = |(s, name): (TykSession, Option<String>)| {
                        Arc::new(crate::auth::Session { tyk_name: name.map(Arc::from), ..s.to_session() })
                    };
                    let r = store.find(&key).await.map(|s| s.map(to_session)).map_err(|e| {
                        tracing::warn!(error = %e, "session lookup failed");
                        e.to_string()
                    });
                    let _ = reply.send(r);
                });
            }
            Lookup::Quota { quota, reply } => {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let r = store.reserve_quota(&quota).await;
                    let _ = reply.send(r);
                });
            }
            Lookup::Password { check, reply } => {
                let slots = Arc::clone(&bcrypt_slots);
                tokio::spawn(async move {
                    let Ok(_permit) = slots.acquire_owned().await else { return };
                    if reply.is_canceled() {
                        return; // the request already timed out
                    }
                    let ok = tokio::task::spawn_blocking(move || {
                        crate::auth::basic::check_password(&check.password, &check.stored, &check.hash_type)
                    })
                    .await
                    .unwrap_or(false);
                    let _ = reply.send(ok);
                });
            }
            Lookup::Resolve { host, port, reply } => {
                tokio::spawn(async move {
                    // tokio runs the system resolver (getaddrinfo) on its blocking pool. An IPv4
                    // address is preferred when the name has both (`localhost` lists ::1 first
                    // on most systems, where upstreams often listen on 127.0.0.1 only).
                    let r = match tokio::net::lookup_host((host.as_str(), port)).await {
                        Ok(addrs) => {
                            let addrs: Vec<std::net::SocketAddr> = addrs.collect();
                            addrs
                                .iter()
                                .find(|a| a.is_ipv4())
                                .or(addrs.first())
                                .copied()
                                .ok_or_else(|| format!("{host} resolves to no address"))
                        }
                        Err(e) => Err(format!("cannot resolve {host}: {e}")),
                    };
                    if let Err(e) = &r {
                        tracing::warn!(error = %e, "upstream host lookup failed");
                    }
                    let _ = reply.send(r);
                });
            }
        }
    }
}
