//! A worker's authentication caches: sessions by key hash (filled from the control plane's key
//! store on a miss, dropped when the control plane announces a change), verified JWTs, verified
//! basic-auth credentials, and grants built from policies.
//!
//! Single-threaded (one per worker), so no locks; the only cross-thread input is the invalidation
//! channel, drained before each lookup. Must not: block, or keep a key or password in plain text
//! (entries are keyed by SHA-256 digests).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use sha2::{Digest, Sha256};

use super::jwt::{Claims, VerifiedCache};
use super::policy::{Grant, GrantError};
use super::session::Session;
use super::KeyHash;

/// Sent by the control plane when a key changes (created, updated, deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    Key(KeyHash),
    All,
}

/// Sizes and lifetimes (from `[auth]`).
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// Entries per worker and cache; beyond it expired entries go first, then the whole cache.
    pub capacity: usize,
    /// Longest a session is served from the cache without asking the store again (bounds how
    /// late a change made on another node through a shared Redis is seen).
    pub session_ttl: Duration,
    /// How long "no such key" is remembered (protects the store from floods of bad keys).
    pub negative_ttl: Duration,
}

impl Default for CacheLimits {
    /// `[auth]` defaults.
    fn default() -> Self {
        CacheLimits { capacity: 100_000, session_ttl: Duration::from_secs(10), negative_ttl: Duration::from_secs(1) }
    }
}

pub(crate) struct SessionEntry {
    pub session: Option<Arc<Session>>,
    /// Grant built for snapshot generation `.0`.
    pub grant: Option<(u64, Result<Arc<Grant>, GrantError>)>,
    fetched: Instant,
}

/// Lookup result.
pub(crate) enum Cached<'a> {
    Miss,
    Hit(&'a mut SessionEntry),
}

pub struct WorkerAuth {
    limits: CacheLimits,
    sessions: AHashMap<KeyHash, SessionEntry>,
    invalidations: crossbeam_channel::Receiver<Invalidation>,
    pub(crate) jwt: VerifiedCache,
    /// Policy-set text (claim value or "" for the defaults) -> grant, per API and generation.
    pub(crate) jwt_grants: AHashMap<(u64, u32, String), Result<Arc<Grant>, GrantError>>,
    /// Basic-auth credentials checked: digest -> (verified, when).
    basic: AHashMap<[u8; 32], (bool, Instant)>,
    /// Quota blocks reserved by this worker.
    pub quotas: crate::limit::quota::QuotaLeases,
}

impl WorkerAuth {
    pub fn new(limits: CacheLimits, invalidations: crossbeam_channel::Receiver<Invalidation>) -> Self {
        WorkerAuth {
            limits,
            sessions: AHashMap::new(),
            invalidations,
            jwt: VerifiedCache::new(limits.capacity, limits.session_ttl.as_secs().max(1)),
            jwt_grants: AHashMap::new(),
            basic: AHashMap::new(),
            quotas: Default::default(),
        }
    }

    /// Caches with no control plane behind them (benchmarks, tests): sessions only arrive
    /// through [`WorkerAuth::insert_session`].
    pub fn detached(limits: CacheLimits) -> Self {
        let (_, rx) = crossbeam_channel::unbounded();
        WorkerAuth::new(limits, rx)
    }

    fn drain_invalidations(&mut self) {
        while let Ok(inv) = self.invalidations.try_recv() {
            match inv {
                Invalidation::Key(h) => {
                    self.sessions.remove(&h);
                    self.quotas.forget(&format!("k:{}", super::hex(&h)));
                }
                Invalidation::All => {
                    self.sessions.clear();
                    self.quotas.clear();
                }
            }
        }
    }

    pub(crate) fn session(&mut self, hash: &KeyHash) -> Cached<'_> {
        self.drain_invalidations();
        let now = Instant::now();
        let limits = self.limits;
        let fresh = match self.sessions.get(hash) {
            Some(e) => {
                let ttl = if e.session.is_some() { limits.session_ttl } else { limits.negative_ttl };
                now.duration_since(e.fetched) < ttl
            }
            None => return Cached::Miss,
        };
        if !fresh {
            self.sessions.remove(hash);
            return Cached::Miss;
        }
        match self.sessions.get_mut(hash) {
            Some(e) => Cached::Hit(e),
            None => Cached::Miss,
        }
    }

    /// Stores what the key store answered for `hash`.
    pub fn insert_session(&mut self, hash: KeyHash, session: Option<Arc<Session>>) {
        self.drain_invalidations();
        if self.sessions.len() >= self.limits.capacity {
            let now = Instant::now();
            let ttl = self.limits.session_ttl;
            self.sessions.retain(|_, e| now.duration_since(e.fetched) < ttl);
            if self.sessions.len() >= self.limits.capacity {
                self.sessions.clear();
            }
        }
        self.sessions.insert(hash, SessionEntry { session, grant: None, fetched: Instant::now() });
    }

    pub fn cached_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The remembered answer for these basic-auth credentials: `Some(true)` verified, `Some(false)`
    /// refused within the negative TTL (so repeated wrong passwords do not cost a bcrypt each),
    /// `None` not checked yet.
    pub(crate) fn basic_checked(&mut self, digest: &[u8; 32]) -> Option<bool> {
        let (ok, at) = *self.basic.get(digest)?;
        let ttl = if ok { self.limits.session_ttl } else { self.limits.negative_ttl };
        if at.elapsed() < ttl {
            Some(ok)
        } else {
            self.basic.remove(digest);
            None
        }
    }

    /// Remembers the outcome of a password check (done off the worker).
    pub fn remember_password_check(&mut self, digest: [u8; 32], ok: bool) {
        if self.basic.len() >= self.limits.capacity {
            self.basic.clear();
        }
        self.basic.insert(digest, (ok, Instant::now()));
    }

    /// Drains pending invalidations (the quota check calls this before looking at its blocks).
    pub fn sync(&mut self) {
        self.drain_invalidations();
    }

    pub(crate) fn jwt_claims(&mut self, scope: &str, token: &str, now: u64) -> Option<Rc<Claims>> {
        self.jwt.get(scope, token, now)
    }
}

/// Digest identifying verified basic-auth credentials: user, password and the stored hash, so
/// a password change (new stored hash) misses the cache.
pub(crate) fn basic_digest(user: &str, password: &str, stored: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [user, password, stored] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> CacheLimits {
        CacheLimits { capacity: 2, session_ttl: Duration::from_secs(60), negative_ttl: Duration::from_millis(0) }
    }

    #[test]
    fn invalidation_and_capacity() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut w = WorkerAuth::new(limits(), rx);
        let a = [1u8; 32];
        w.insert_session(a, Some(Arc::new(Session::default())));
        assert!(matches!(w.session(&a), Cached::Hit(_)));
        tx.send(Invalidation::Key(a)).unwrap();
        assert!(matches!(w.session(&a), Cached::Miss));
        // Negative entries expire after negative_ttl (0 here).
        w.insert_session(a, None);
        assert!(matches!(w.session(&a), Cached::Miss));
        for i in 0..5u8 {
            w.insert_session([i; 32], Some(Arc::new(Session::default())));
        }
        assert!(w.cached_sessions() <= 2);
        tx.send(Invalidation::All).unwrap();
        assert!(matches!(w.session(&[4u8; 32]), Cached::Miss));
    }

    #[test]
    fn basic_digest_depends_on_all_parts() {
        assert_ne!(basic_digest("a", "b", "h1"), basic_digest("a", "b", "h2"));
        assert_ne!(basic_digest("ab", "", "h"), basic_digest("a", "b", "h"));
    }
}
