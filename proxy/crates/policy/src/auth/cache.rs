//! A worker's authentication caches: sessions by key hash (filled from the control plane's key
//! store on a miss, dropped when the control plane announces a change), verified JWTs, verified
//! basic-auth credentials, and grants built from policies.
//!
//! Single-threaded (one per worker), so no locks; the only cross-thread input is the invalidation
//! channel, drained before each lookup. Must not: block, or keep a key or password in plain text
//! (entries are keyed by SHA-256 digests).

use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::jwt::{Claims, VerifiedCache};
use super::policy::{Grant, GrantError};
use super::session::Session;
use super::KeyHash;

/// A bounded, scan-resistant cache: quick_cache's single-threaded S3-FIFO variant (CLOCK-PRO
/// style hot/cold queues with ghost entries). A new entry starts cold and is evicted from the
/// cold queue unless it is asked for again, so a flood of entries seen once (bogus keys, a scan
/// of distinct tokens) evicts other one-time entries, not the hot ones; entries are evicted one
/// at a time, never by emptying the cache. No threads, no locks (`unsync`).
pub(crate) type Scan<K, V> = quick_cache::unsync::Cache<K, V, quick_cache::UnitWeighter, ahash::RandomState>;

/// A [`Scan`] cache holding at most `capacity` entries.
pub(crate) fn scan_cache<K: Eq + Hash, V>(capacity: usize) -> Scan<K, V> {
    Scan::with(
        capacity,
        capacity as u64,
        quick_cache::UnitWeighter,
        ahash::RandomState::new(),
        quick_cache::unsync::DefaultLifecycle::default(),
    )
}

/// Sent by the control plane when a key changes (created, updated, deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    Key(KeyHash),
    All,
}

/// Sizes and lifetimes (from `[auth]`).
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// Entries per worker and cache (sessions; verified JWTs; verified basic-auth credentials).
    /// Negative answers (unknown keys, refused passwords) are held apart, in caches of
    /// [`CacheLimits::negative_capacity`] entries, so they never evict positive ones.
    pub capacity: usize,
    /// Longest a session is served from the cache without asking the store again (bounds how
    /// late a change made on another node through a shared Redis is seen).
    pub session_ttl: Duration,
    /// How long "no such key" is remembered (protects the store from floods of bad keys).
    pub negative_ttl: Duration,
}

impl CacheLimits {
    /// Entries of each negative cache: a quarter of `capacity` (at least 1). A negative entry
    /// only spares the store a repeated lookup of the same bad key within `negative_ttl`.
    pub fn negative_capacity(&self) -> usize {
        (self.capacity / 4).max(1)
    }
}

impl Default for CacheLimits {
    /// `[auth]` defaults.
    fn default() -> Self {
        CacheLimits { capacity: 100_000, session_ttl: Duration::from_secs(10), negative_ttl: Duration::from_secs(1) }
    }
}

pub(crate) struct SessionEntry {
    pub session: Arc<Session>,
    /// Grant built for snapshot generation `.0`.
    pub grant: Option<(u64, Result<Arc<Grant>, GrantError>)>,
    fetched: Duration,
}

type SessionRef<'a> =
    quick_cache::unsync::RefMut<'a, KeyHash, SessionEntry, quick_cache::UnitWeighter, ahash::RandomState, SessionLife>;
type SessionLife = quick_cache::unsync::DefaultLifecycle<KeyHash, SessionEntry>;

/// Lookup result.
pub(crate) enum Cached<'a> {
    Miss,
    /// The store said recently that there is no such key.
    Unknown,
    Hit(SessionRef<'a>),
}

/// One worker's caches. Sessions the store knows and keys it does not know live in separate
/// caches (`sessions`, `unknown`), and so do verified and refused basic-auth credentials: a
/// flood of distinct bogus keys or wrong passwords churns only the small negative caches, and
/// valid keys keep being answered without the store (a flood that emptied a shared cache sent
/// every valid key back to the store, a thundering herd on Redis).
pub struct WorkerAuth {
    limits: CacheLimits,
    /// Sessions by key hash (store answered with a session).
    sessions: Scan<KeyHash, SessionEntry>,
    /// Key hashes the store did not know, and when it said so.
    unknown: Scan<KeyHash, Duration>,
    invalidations: crossbeam_channel::Receiver<Invalidation>,
    pub(crate) jwt: VerifiedCache,
    /// Policy-set text (claim value or "" for the defaults) -> grant, per API and generation.
    pub(crate) jwt_grants: ahash::AHashMap<(u64, u32, String), Result<Arc<Grant>, GrantError>>,
    /// Basic-auth credentials verified: digest -> when.
    basic: Scan<[u8; 32], Duration>,
    /// Basic-auth credentials refused: digest -> when.
    basic_refused: Scan<[u8; 32], Duration>,
    /// Quota blocks reserved by this worker.
    pub quotas: crate::limit::quota::QuotaLeases,
    /// The time, as the caller last set it ([`WorkerAuth::set_clock`]): `auth` reads no clock.
    now: Duration,
}

impl WorkerAuth {
    pub fn new(limits: CacheLimits, invalidations: crossbeam_channel::Receiver<Invalidation>) -> Self {
        let negative = limits.negative_capacity();
        WorkerAuth {
            limits,
            sessions: scan_cache(limits.capacity),
            unknown: scan_cache(negative),
            invalidations,
            jwt: VerifiedCache::new(limits.capacity, limits.session_ttl.as_secs().max(1)),
            jwt_grants: ahash::AHashMap::new(),
            basic: scan_cache(limits.capacity),
            basic_refused: scan_cache(negative),
            quotas: Default::default(),
            now: Duration::ZERO,
        }
    }

    /// Sets the time the cache entries' ages are measured against: any monotonic time since a
    /// fixed origin of the caller's (the data plane passes the request's start since its
    /// worker started). Time never goes backwards here: an earlier value is ignored.
    pub fn set_clock(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    /// The time as last set (see [`WorkerAuth::set_clock`]).
    pub fn now(&self) -> Duration {
        self.now
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
                    // The quota block of the key's counter (`Identity::quota_id`) goes too.
                    let id = match self.sessions.peek(&h).and_then(|e| e.session.tyk_name.clone()) {
                        Some(name) => name.to_string(),
                        None => super::hex(&h),
                    };
                    self.quotas.forget(&id);
                    self.sessions.remove(&h);
                    self.unknown.remove(&h);
                }
                Invalidation::All => {
                    self.sessions.clear();
                    self.unknown.clear();
                    self.quotas.clear();
                }
            }
        }
    }

    pub(crate) fn session(&mut self, hash: &KeyHash) -> Cached<'_> {
        self.drain_invalidations();
        let now = self.now;
        // Freshness is checked with a peek (it does not count as a use), then the entry is
        // taken with a use: two probes, as before, and no entry outlives its TTL.
        match self.sessions.peek(hash) {
            Some(e) if now.saturating_sub(e.fetched) < self.limits.session_ttl => {
                return match self.sessions.get_mut(hash) {
                    Some(e) => Cached::Hit(e),
                    None => Cached::Miss,
                };
            }
            Some(_) => {
                self.sessions.remove(hash);
                return Cached::Miss;
            }
            None => {}
        }
        match self.unknown.get(hash) {
            Some(at) if now.saturating_sub(*at) < self.limits.negative_ttl => Cached::Unknown,
            Some(_) => {
                self.unknown.remove(hash);
                Cached::Miss
            }
            None => Cached::Miss,
        }
    }

    /// Stores what the key store answered for `hash` (`None`: no such key).
    pub fn insert_session(&mut self, hash: KeyHash, session: Option<Arc<Session>>) {
        self.drain_invalidations();
        let now = self.now;
        match session {
            Some(session) => {
                self.unknown.remove(&hash);
                self.sessions.insert(hash, SessionEntry { session, grant: None, fetched: now });
            }
            None => {
                self.sessions.remove(&hash);
                self.unknown.insert(hash, now);
            }
        }
    }

    /// Sessions held (keys the store knows; unknown keys are not counted).
    pub fn cached_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The remembered answer for these basic-auth credentials: `Some(true)` verified, `Some(false)`
    /// refused within the negative TTL (so repeated wrong passwords do not cost a bcrypt each),
    /// `None` not checked yet.
    pub(crate) fn basic_checked(&mut self, digest: &[u8; 32]) -> Option<bool> {
        let now = self.now;
        if let Some(at) = self.basic.get(digest).copied() {
            if now.saturating_sub(at) < self.limits.session_ttl {
                return Some(true);
            }
            self.basic.remove(digest);
        }
        let at = self.basic_refused.get(digest).copied()?;
        if now.saturating_sub(at) < self.limits.negative_ttl {
            Some(false)
        } else {
            self.basic_refused.remove(digest);
            None
        }
    }

    /// Remembers the outcome of a password check (done off the worker).
    pub fn remember_password_check(&mut self, digest: [u8; 32], ok: bool) {
        let now = self.now;
        if ok {
            self.basic_refused.remove(&digest);
            self.basic.insert(digest, now);
        } else {
            self.basic.remove(&digest);
            self.basic_refused.insert(digest, now);
        }
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

    fn known() -> Option<Arc<Session>> {
        Some(Arc::new(Session::default()))
    }

    fn key(i: u64) -> KeyHash {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&i.to_le_bytes());
        k[31] = 0xb0;
        k
    }

    #[test]
    fn invalidation_and_capacity() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut w = WorkerAuth::new(limits(), rx);
        let a = [1u8; 32];
        w.insert_session(a, known());
        assert!(matches!(w.session(&a), Cached::Hit(_)));
        tx.send(Invalidation::Key(a)).unwrap();
        assert!(matches!(w.session(&a), Cached::Miss));
        // Negative entries expire after negative_ttl (0 here).
        w.insert_session(a, None);
        assert!(matches!(w.session(&a), Cached::Miss));
        for i in 0..5u8 {
            w.insert_session([i; 32], known());
        }
        assert!(w.cached_sessions() <= 2);
        tx.send(Invalidation::All).unwrap();
        assert!(matches!(w.session(&[4u8; 32]), Cached::Miss));
    }

    #[test]
    fn invalidation_reaches_negative_entries() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let limits = CacheLimits { capacity: 8, negative_ttl: Duration::from_secs(60), ..limits() };
        let mut w = WorkerAuth::new(limits, rx);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        w.insert_session(a, None);
        w.insert_session(b, None);
        assert!(matches!(w.session(&a), Cached::Unknown));
        // A key created after the store said "unknown" must not be refused from the cache.
        tx.send(Invalidation::Key(a)).unwrap();
        assert!(matches!(w.session(&a), Cached::Miss));
        assert!(matches!(w.session(&b), Cached::Unknown));
        tx.send(Invalidation::All).unwrap();
        assert!(matches!(w.session(&b), Cached::Miss));
        // A session replaces the unknown entry and the other way round.
        w.insert_session(b, None);
        w.insert_session(b, known());
        assert!(matches!(w.session(&b), Cached::Hit(_)));
        w.insert_session(b, None);
        assert!(matches!(w.session(&b), Cached::Unknown));
        assert_eq!(w.cached_sessions(), 0);
    }

    #[test]
    fn a_million_bogus_keys_do_not_evict_a_known_key() {
        // The finding: distinct bogus keys shared the session cache, which was emptied when
        // full, so every valid key went back to the store. With the `[auth]` defaults.
        let mut w = WorkerAuth::detached(CacheLimits::default());
        let good = [7u8; 32];
        w.insert_session(good, known());
        assert!(matches!(w.session(&good), Cached::Hit(_)));
        for i in 0..1_000_000u64 {
            let bogus = key(i);
            assert!(matches!(w.session(&bogus), Cached::Miss));
            w.insert_session(bogus, None);
        }
        assert!(matches!(w.session(&good), Cached::Hit(_)), "the known key needs a store lookup again");
        assert_eq!(w.cached_sessions(), 1);
        assert!(w.unknown.len() <= CacheLimits::default().negative_capacity());
        // Recently refused keys are still answered from the negative cache.
        assert!(matches!(w.session(&key(999_999)), Cached::Unknown));
    }

    #[test]
    fn full_session_cache_evicts_one_entry_at_a_time_and_keeps_hot_keys() {
        let cap = 1_000;
        let mut w =
            WorkerAuth::detached(CacheLimits { capacity: cap, session_ttl: Duration::from_secs(60), ..limits() });
        let hot: Vec<KeyHash> = (0..50u64).map(|i| key(u64::MAX - i)).collect();
        for h in &hot {
            w.insert_session(*h, known());
        }
        // A scan of valid keys each used once (10x the capacity), the hot keys used meanwhile.
        for i in 0..10 * cap as u64 {
            w.insert_session(key(i), known());
            assert!(w.cached_sessions() <= cap);
            if i % 100 == 0 {
                for h in &hot {
                    assert!(matches!(w.session(h), Cached::Hit(_)), "hot key evicted after {i} inserts");
                }
            }
        }
        assert!(w.cached_sessions() > cap / 2, "the cache was emptied: {}", w.cached_sessions());
    }

    #[test]
    fn refused_passwords_do_not_evict_verified_ones() {
        let mut w = WorkerAuth::detached(CacheLimits { negative_ttl: Duration::from_secs(60), ..limits() });
        let good = [9u8; 32];
        w.remember_password_check(good, true);
        assert_eq!(w.basic_checked(&good), Some(true));
        for i in 0..10_000u64 {
            w.remember_password_check(key(i), false);
        }
        assert_eq!(w.basic_checked(&good), Some(true));
        assert_eq!(w.basic_checked(&key(9_999)), Some(false));
        assert_eq!(w.basic_checked(&[1u8; 32]), None);
        // A later success replaces a refusal.
        w.remember_password_check(key(9_999), true);
        assert_eq!(w.basic_checked(&key(9_999)), Some(true));
    }

    #[test]
    fn basic_digest_depends_on_all_parts() {
        assert_ne!(basic_digest("a", "b", "h1"), basic_digest("a", "b", "h2"));
        assert_ne!(basic_digest("ab", "", "h"), basic_digest("a", "b", "h"));
    }
}
