//! Quotas (`quota_max` requests per `quota_renewal_rate` seconds), worker side: each worker
//! spends from a block of the quota it reserved from the control plane, which reserves from the
//! store atomically (a Lua script in Redis, a lock in the embedded store), so the blocks handed
//! out never add up to more than the quota on any number of workers and nodes (no overrun), and
//! a worker asks again only when its block is spent (no store call per request).
//!
//! A rejected request (by a rate limit, or the quota itself) spends nothing. Must not: block or
//! wait (a missing block is answered with [`QuotaCheck::Reserve`] and fetched by the caller).

use std::time::Duration;

use ahash::AHashMap;

/// A quota and whose it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    /// `k:<key hash>` for keys (and basic-auth users), `j:<identity>` for JWT identities.
    pub id: String,
    pub max: i64,
    /// Period, seconds.
    pub period: i64,
}

impl Quota {
    pub fn key(&self) -> u64 {
        quota_key(&self.id)
    }
}

/// The lease map's key for a quota id.
pub fn quota_key(id: &str) -> u64 {
    super::limit_key(&[b"q", id.as_bytes()])
}

/// What the control plane reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// Requests granted to this worker (0: the quota is spent).
    pub granted: u64,
    /// Quota left in the store after this reservation.
    pub remaining: u64,
    /// Unix seconds at which the period ends.
    pub reset: u64,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    left: u64,
    remaining: u64,
    reset: u64,
    /// When the block lapses, on the caller's clock (time since its epoch).
    until: Duration,
}

/// For `X-RateLimit-*` when they report quotas (`[proxy] rate_limit_response_headers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaInfo {
    pub limit: u64,
    pub remaining: u64,
    pub reset: u64,
}

/// Outcome of a quota check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaCheck {
    /// A block is held: the request may go on (and [`QuotaLeases::spend`] once admitted).
    Available(QuotaInfo),
    /// Spent until the period ends.
    Exceeded(QuotaInfo),
    /// No block: reserve one and check again.
    Reserve,
}

/// A worker's quota blocks.
#[derive(Debug, Default)]
pub struct QuotaLeases {
    map: AHashMap<u64, Lease>,
}

/// Most quotas a worker keeps blocks for (beyond it, all are dropped and re-reserved as needed;
/// unused requests in dropped blocks are not returned, so the quota can only be under-used).
const MAX_LEASES: usize = 100_000;

impl QuotaLeases {
    /// The block of `q` at `now` (time since the caller's epoch, as for [`QuotaLeases::store`]).
    pub fn check(&mut self, q: &Quota, now: Duration) -> QuotaCheck {
        let key = q.key();
        let Some(l) = self.map.get(&key) else { return QuotaCheck::Reserve };
        let info = QuotaInfo { limit: q.max.max(0) as u64, remaining: l.remaining + l.left, reset: l.reset };
        if now >= l.until {
            self.map.remove(&key);
            return QuotaCheck::Reserve;
        }
        if l.left > 0 {
            QuotaCheck::Available(info)
        } else if l.remaining == 0 {
            QuotaCheck::Exceeded(info)
        } else {
            QuotaCheck::Reserve
        }
    }

    /// One admitted request.
    pub fn spend(&mut self, q: &Quota) {
        if let Some(l) = self.map.get_mut(&q.key()) {
            l.left = l.left.saturating_sub(1);
        }
    }

    /// Stores what the control plane reserved, at `now` (time since the caller's epoch) and
    /// `now_unix` (unix seconds): the block lapses when its period resets.
    pub fn store(&mut self, q: &Quota, r: Reservation, now: Duration, now_unix: u64) {
        if self.map.len() >= MAX_LEASES {
            self.map.clear();
        }
        let until = now + Duration::from_secs(r.reset.saturating_sub(now_unix).max(1));
        let e = self.map.entry(q.key()).or_insert(Lease { left: 0, remaining: 0, reset: 0, until });
        e.left += r.granted;
        e.remaining = r.remaining;
        e.reset = r.reset;
        e.until = until;
    }

    /// Drops the block of quota `id` (quota reset or key changed).
    pub fn forget(&mut self, id: &str) {
        self.map.remove(&quota_key(id));
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }
}

/// How many requests to reserve at once: a twentieth of what is left, 1 to 100, so blocks held
/// by idle workers or nodes strand little of a quota near its end.
pub fn block_size(max: i64, used: i64) -> i64 {
    ((max - used) / 20).clamp(1, 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_spent_then_renewed_then_exhausted() {
        let q = Quota { id: "k:abc".into(), max: 3, period: 60 };
        let mut l = QuotaLeases::default();
        let (now, now_unix) = (Duration::from_secs(5), 1_800_000_000);
        assert_eq!(l.check(&q, now), QuotaCheck::Reserve);
        let reset = now_unix + 60;
        l.store(&q, Reservation { granted: 2, remaining: 1, reset }, now, now_unix);
        assert!(matches!(l.check(&q, now), QuotaCheck::Available(QuotaInfo { limit: 3, remaining: 3, .. })));
        l.spend(&q);
        l.spend(&q);
        assert_eq!(l.check(&q, now), QuotaCheck::Reserve);
        l.store(&q, Reservation { granted: 1, remaining: 0, reset }, now, now_unix);
        l.spend(&q);
        assert!(matches!(l.check(&q, now), QuotaCheck::Exceeded(QuotaInfo { remaining: 0, .. })));
        // A block lapses when its period resets.
        l.store(&q, Reservation { granted: 1, remaining: 0, reset }, now, now_unix);
        assert_eq!(l.check(&q, now + Duration::from_secs(60)), QuotaCheck::Reserve);
        l.forget("k:abc");
        assert_eq!(l.check(&q, now), QuotaCheck::Reserve);
    }

    #[test]
    fn block_sizes() {
        assert_eq!(block_size(10, 0), 1);
        assert_eq!(block_size(1000, 0), 50);
        assert_eq!(block_size(100_000, 0), 100);
        assert_eq!(block_size(10, 10), 1);
    }
}
