//! Rate limiting with per-core token buckets whose counters are gossiped (docs/rate-limits.md).
//!
//! Each worker owns a [`Limiter`]: buckets by limit key, decided locally with no lock and no
//! network wait ([`bucket`] has the arithmetic). Every `[limits] gossip_interval_ms` a worker
//! sends what it admitted and what was asked of it (per key) to the control plane's hub
//! (the proxy's `gossip`), which passes it to the other workers and, through Redis pub/sub, to the other
//! nodes; what arrives is applied to the local buckets, so each worker's view reflects the whole
//! cluster's consumption and its lease reflects its share of the demand. Workers also count
//! rejections per client IP for the abuse detector. Must not: allocate per request beyond a
//! bucket's first use, block, read a clock (the caller passes it: [`Limiter::set_clock`]), or
//! touch another worker's state.

pub mod breaker;
pub mod bucket;
pub mod quota;

use std::net::IpAddr;
use std::time::Duration;

use ahash::AHashMap;

pub use bucket::{Bucket, Rate, Verdict};

/// A limit key: a stable 64-bit hash (the same on every node running the same version) of what
/// is limited (`k:<key hash>`, `api:<api id>`, `ip:<api id>:<ip>`, `ep:<api id>:<n>:<identity>`).
pub type LimitKey = u64;

/// FNV-1a over the parts, with a separator, so keys are equal exactly when their parts are.
pub fn limit_key(parts: &[&[u8]]) -> LimitKey {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The rate limits an API definition sets (rates with `burst` 1; the `[limits] burst` factor is
/// applied per request).
#[derive(Debug, Clone, Default)]
pub struct ApiLimits {
    /// `disable_rate_limit`: no key, endpoint or IP limit applies (`global_rate_limit` still does).
    pub disable_rate_limit: bool,
    /// `disable_quota`.
    pub disable_quota: bool,
    /// `global_rate_limit`: the whole API, all clients together.
    pub global: Option<Rate>,
    /// `ip_rate_limit` (or `[limits] ip_rate`): per client IP.
    pub ip: Option<Rate>,
    /// `extended_paths.rate_limit`: per identity (per API when keyless) on matching requests;
    /// with each entry's bucket name, a hash of its method and path as written: Tyk names the
    /// bucket so (gateway/mw_api_rate_limit.go:58-60), and the versions of a versioned API with
    /// the same entry share it.
    pub endpoints: Vec<(crate::path_rule::PathRule, Rate, u64)>,
}

impl ApiLimits {
    pub fn is_empty(&self) -> bool {
        self.global.is_none() && self.ip.is_none() && self.endpoints.is_empty()
    }
}

/// One limit that applies to a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub key: LimitKey,
    pub rate: Rate,
}

/// What a request's limits say, for the response headers (`X-RateLimit-*` carry the rate of the
/// most specific limit, the identity's when there is one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateInfo {
    pub limit: u64,
    pub remaining: u64,
    /// Unix seconds at which the bucket is full again.
    pub reset: u64,
}

/// What the response tells the client about its limits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LimitHeaders {
    pub rate: Option<RateInfo>,
    pub quota: Option<quota::QuotaInfo>,
    /// The request ran as an identity (a key, a JWT, a user): told its quota even when it has
    /// none. A keyless request is told nothing.
    pub identified: bool,
}

/// A rejected request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rejected {
    /// Whole seconds until every refusing limit would admit, at least 1 (not sent to clients:
    /// Tyk sends no `Retry-After`, `[proxy] rate_limit_response_headers`).
    pub retry_after: u64,
    pub info: RateInfo,
    /// Index into the checked `limits` of the first limit that refused (which refusal the
    /// client is told of).
    pub by: usize,
}

/// Per-key deltas one worker (or node) sends in a gossip round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delta {
    pub key: LimitKey,
    pub rate: Rate,
    pub admitted: u32,
    pub demand: u32,
}

/// Counters a worker publishes.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimiterStats {
    pub admitted: u64,
    pub rejected: u64,
    pub evicted: u64,
    pub tracked_keys: u64,
    pub gossip_sent: u64,
    /// Reports this worker could not hand to the hub (its queue was full).
    pub gossip_dropped: u64,
    pub gossip_received: u64,
    /// Age of the newest gossip applied in the last round, seconds (how stale views are).
    pub gossip_lag_secs: f64,
}

/// `[limits]` settings a worker needs.
#[derive(Debug, Clone, Copy)]
pub struct LimiterConfig {
    pub max_keys: usize,
}

/// A worker's limiter.
pub struct Limiter {
    buckets: AHashMap<LimitKey, Bucket>,
    cfg: LimiterConfig,
    /// Seconds since the epoch the caller measures from (`set_clock`): the buckets' clock.
    now: f64,
    /// Unix time of that epoch, so one clock read per decision gives both clocks.
    epoch_unix: f64,
    /// Rejections per client IP since the last round (for the abuse detector).
    rejected_ips: AHashMap<IpAddr, u32>,
    /// Keys with deltas not yet taken this round.
    dirty: Vec<LimitKey>,
    pub stats: LimiterStats,
}

impl Limiter {
    /// A limiter whose clock (see [`Limiter::set_clock`]) counts from an epoch at unix time
    /// `epoch_unix` (seconds).
    pub fn new(cfg: LimiterConfig, epoch_unix: f64) -> Limiter {
        Limiter {
            buckets: AHashMap::new(),
            cfg,
            now: 0.0,
            epoch_unix,
            rejected_ips: AHashMap::new(),
            dirty: Vec::new(),
            stats: LimiterStats::default(),
        }
    }

    /// Sets the clock: time since the epoch given to [`Limiter::new`] (the caller reads it once
    /// per request or round; it never goes back).
    pub fn set_clock(&mut self, since_epoch: Duration) {
        self.now = self.now.max(since_epoch.as_secs_f64());
    }

    /// Seconds since the epoch (the buckets' clock), as last set.
    pub fn now(&self) -> f64 {
        self.now
    }

    fn bucket(&mut self, l: &Limit, now: f64) -> &mut Bucket {
        if !self.buckets.contains_key(&l.key) && self.buckets.len() >= self.cfg.max_keys {
            self.evict(now);
        }
        let b = self.buckets.entry(l.key).or_insert_with(|| Bucket::new(l.rate, now));
        if b.rate != l.rate {
            // The limit changed (reload, key update): keep the balance, take the new rate.
            b.rate = l.rate;
        }
        b
    }

    /// Full idle buckets first (a new bucket would start the same); if none, the least
    /// recently used tenth.
    fn evict(&mut self, now: f64) {
        let before = self.buckets.len();
        self.buckets.retain(|_, b| !b.is_idle(now));
        if self.buckets.len() >= self.cfg.max_keys {
            let mut ages: Vec<f64> = self.buckets.values().map(|b| b.last_used).collect();
            let cut = (ages.len() / 10).max(1);
            ages.select_nth_unstable_by(cut - 1, |a, b| a.total_cmp(b));
            let limit = ages[cut - 1];
            self.buckets.retain(|_, b| b.last_used > limit);
        }
        self.stats.evicted += (before - self.buckets.len()) as u64;
    }

    /// Decides a request against all its limits: admitted only if every limit admits, and then
    /// every bucket pays; otherwise none pays (all count the demand). `primary` (an index into
    /// `limits`) picks the limit the headers describe.
    pub fn check(&mut self, limits: &[Limit], primary: usize, client: IpAddr) -> Result<RateInfo, Rejected> {
        let now = self.now();
        let mut rejected: Option<(f64, usize)> = None;
        for (i, l) in limits.iter().enumerate() {
            if let Verdict::Reject { retry_after } = self.bucket(l, now).check(now) {
                rejected = Some(rejected.map_or((retry_after, i), |(r, by): (f64, usize)| (r.max(retry_after), by)));
            }
        }
        let admitted = rejected.is_none();
        for l in limits {
            if let Some(b) = self.buckets.get_mut(&l.key) {
                if b.pending_demand == 0 {
                    self.dirty.push(l.key);
                }
                b.commit(admitted);
            }
        }
        let info = limits
            .get(primary)
            .and_then(|l| self.buckets.get(&l.key).map(|b| (l, b)))
            .map(|(l, b)| RateInfo {
                limit: l.rate.rate.round() as u64,
                remaining: b.remaining(),
                reset: (self.epoch_unix + now + b.reset_in()).ceil() as u64,
            })
            .unwrap_or(RateInfo { limit: 0, remaining: 0, reset: 0 });
        match rejected {
            None => {
                self.stats.admitted += 1;
                Ok(info)
            }
            Some((wait, by)) => {
                self.stats.rejected += 1;
                let n = self.rejected_ips.entry(crate::canonical_ip(client)).or_insert(0);
                *n = n.saturating_add(1);
                Err(Rejected { retry_after: (wait.ceil() as u64).max(1), info, by })
            }
        }
    }

    /// This round's deltas (and clears them); keys without activity are left out.
    /// Only keys used this round are visited (a worker may track 100,000 keys; a round every
    /// 5 ms must not scan them all).
    pub fn take_deltas(&mut self, out: &mut Vec<Delta>) {
        for key in self.dirty.drain(..) {
            // Evicted since: its deltas are gone with it (the key was idle and full).
            let Some(b) = self.buckets.get_mut(&key) else { continue };
            if b.pending_demand > 0 {
                out.push(Delta { key, rate: b.rate, admitted: b.pending_admitted, demand: b.pending_demand });
                b.pending_admitted = 0;
                b.pending_demand = 0;
            }
        }
        self.stats.tracked_keys = self.buckets.len() as u64;
        if !out.is_empty() {
            self.stats.gossip_sent += 1;
        }
    }

    /// Other nodes are unreachable: forget their demand (see [`Bucket::forget_nodes`]).
    pub fn forget_nodes(&mut self) {
        for b in self.buckets.values_mut() {
            b.forget_nodes();
        }
    }

    /// Applies deltas from other workers (`from_node` false) or other nodes.
    pub fn apply(&mut self, deltas: &[Delta], from_node: bool) {
        let now = self.now();
        for d in deltas {
            if !self.buckets.contains_key(&d.key) && self.buckets.len() >= self.cfg.max_keys {
                self.evict(now);
            }
            let b = self.buckets.entry(d.key).or_insert_with(|| Bucket::new(d.rate, now));
            b.apply_remote(d.admitted, d.demand, from_node, now);
        }
        self.stats.gossip_received += 1;
    }

    /// Rejections per client IP since the last call.
    pub fn take_rejected_ips(&mut self) -> Vec<(IpAddr, u32)> {
        self.rejected_ips.drain().collect()
    }

    pub fn tracked_keys(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(key: &str, rate: f64) -> Limit {
        Limit { key: limit_key(&[key.as_bytes()]), rate: Rate::new(rate, 1.0, 1.0).unwrap() }
    }

    #[test]
    fn keys_are_stable_and_separated() {
        assert_eq!(limit_key(&[b"ab", b"c"]), limit_key(&[b"ab", b"c"]));
        assert_ne!(limit_key(&[b"ab", b"c"]), limit_key(&[b"a", b"bc"]));
        // Pinned: nodes must agree on keys.
        assert_eq!(limit_key(&[b"k"]), 0x08bd_c907_b561_adcf);
    }

    #[test]
    fn all_limits_must_admit_and_rejections_pay_nothing() {
        let mut l = Limiter::new(LimiterConfig { max_keys: 100 }, 0.0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let (a, b) = (lim("a", 3.0), lim("b", 100.0));
        for _ in 0..3 {
            assert!(l.check(&[a, b], 0, ip).is_ok());
        }
        let r = l.check(&[a, b], 0, ip).unwrap_err();
        assert_eq!(r.info.limit, 3);
        assert!(r.retry_after >= 1);
        // b paid only for the 3 admitted requests.
        let mut out = Vec::new();
        l.take_deltas(&mut out);
        let db = out.iter().find(|d| d.key == b.key).unwrap();
        assert_eq!((db.admitted, db.demand), (3, 4));
        assert_eq!(l.take_rejected_ips(), vec![(ip, 1)]);
        // The refusal names the first limit that refused, in the order given.
        assert_eq!(r.by, 0);
        assert_eq!(l.check(&[b, a], 0, ip).unwrap_err().by, 1);
    }

    #[test]
    fn a_round_reports_only_the_keys_used_since_the_last_one() {
        let mut l = Limiter::new(LimiterConfig { max_keys: 10_000 }, 0.0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for i in 0..1000 {
            let _ = l.check(&[lim(&format!("k{i}"), 10.0)], 0, ip);
        }
        let mut out = Vec::new();
        l.take_deltas(&mut out);
        assert_eq!(out.len(), 1000);
        out.clear();
        let _ = l.check(&[lim("k7", 10.0)], 0, ip);
        let _ = l.check(&[lim("k7", 10.0)], 0, ip);
        l.take_deltas(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].admitted, out[0].demand), (2, 2));
        out.clear();
        l.take_deltas(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn eviction_bounds_tracked_keys() {
        let mut l = Limiter::new(LimiterConfig { max_keys: 50 }, 0.0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for i in 0..500 {
            let _ = l.check(&[lim(&format!("k{i}"), 10.0)], 0, ip);
        }
        assert!(l.tracked_keys() <= 50);
        assert!(l.stats.evicted >= 450);
    }
}
