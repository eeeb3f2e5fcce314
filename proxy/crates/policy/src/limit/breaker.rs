//! Tyk's circuit breaker (`extended_paths.circuit_breakers`; TykTechnologies/circuitbreaker's
//! `RateBreaker`, as gateway/api_definition.go:1220-1302 builds it): shared by every worker of
//! the process, as Tyk's is per gateway process, and new with each loaded configuration (Tyk
//! stops its breakers on reload).
//!
//! Counts are kept over a sliding window of ten one-second buckets. A failure (an upstream error
//! or a 5xx) trips the breaker when at least `samples` requests are in the window and the
//! failures are at least `threshold_percent` of them (circuitbreaker.go:299-310, 455-460).
//! Tripped, it lets nothing through (503 "Service temporarily unavailable.") until
//! `return_to_service_after` seconds have passed, except, unless `disable_half_open_state`,
//! one probe request at growing intervals (500 ms, times 1.5, at most 60 s): a probe that
//! succeeds closes it. Lock-free (atomics only); the caller passes the time (this crate reads no
//! clock).

use std::sync::atomic::{AtomicU64, Ordering};

/// An entry's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSpec {
    /// Failures per request in the window that trip it (0.0-1.0).
    pub threshold: f64,
    /// Requests the window must hold before it may trip.
    pub samples: u64,
    /// Milliseconds after a trip until it closes again.
    pub return_after_ms: u64,
    /// Probe requests while tripped (Tyk's default; `disable_half_open_state` turns them off).
    pub half_open: bool,
}

const BUCKETS: usize = 10;
const FIRST_BACKOFF_MS: u64 = 500;
const MAX_BACKOFF_MS: u64 = 60_000;

/// One breaker's state.
#[derive(Debug)]
pub struct Breaker {
    pub spec: BreakerSpec,
    /// Per second of the window: `second << 32 | failures << 16 | successes` (16-bit counts,
    /// saturating: a second of 65,535 requests trips as well as one of more).
    buckets: [AtomicU64; BUCKETS],
    /// When it tripped, ms (0: closed).
    tripped_at: AtomicU64,
    /// Earliest time of the next probe, ms.
    next_probe: AtomicU64,
    /// The interval after the next probe, ms.
    backoff: AtomicU64,
}

impl Breaker {
    pub fn new(spec: BreakerSpec) -> Self {
        Breaker {
            spec,
            buckets: Default::default(),
            tripped_at: AtomicU64::new(0),
            next_probe: AtomicU64::new(0),
            backoff: AtomicU64::new(FIRST_BACKOFF_MS),
        }
    }

    /// Whether a request may go to the upstream at `now_ms` (Tyk's `Ready`). While tripped, one
    /// caller per probe interval gets `true`.
    pub fn ready(&self, now_ms: u64) -> bool {
        let tripped = self.tripped_at.load(Ordering::Acquire);
        if tripped == 0 {
            return true;
        }
        if now_ms >= tripped.saturating_add(self.spec.return_after_ms) {
            self.reset();
            return true;
        }
        if !self.spec.half_open {
            return false;
        }
        let next = self.next_probe.load(Ordering::Acquire);
        if now_ms < next {
            return false;
        }
        let backoff = self.backoff.load(Ordering::Relaxed);
        let won = self
            .next_probe
            .compare_exchange(next, now_ms.saturating_add(backoff), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if won {
            self.backoff.store((backoff * 3 / 2).min(MAX_BACKOFF_MS), Ordering::Relaxed);
        }
        won
    }

    /// Counts the outcome of a request that went to the upstream: `ok` is false for an upstream
    /// error or a 5xx. A success while tripped (a probe's) closes the breaker.
    pub fn record(&self, ok: bool, now_ms: u64) {
        if ok && self.tripped_at.load(Ordering::Acquire) != 0 {
            self.reset();
            return;
        }
        let sec = now_ms / 1000;
        let slot = &self.buckets[(sec % BUCKETS as u64) as usize];
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let (s, mut fails, mut succ) = if cur >> 32 == sec { unpack(cur) } else { (sec, 0, 0) };
            if ok {
                succ = (succ + 1).min(0xffff);
            } else {
                fails = (fails + 1).min(0xffff);
            }
            match slot.compare_exchange_weak(cur, pack(s, fails, succ), Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        if !ok && self.tripped_at.load(Ordering::Acquire) == 0 {
            let (fails, total) = self.window(sec);
            if total >= self.spec.samples && total > 0 && fails as f64 / total as f64 >= self.spec.threshold {
                self.trip(now_ms);
            }
        }
    }

    /// Whether it is tripped now (for metrics and tests).
    pub fn is_tripped(&self) -> bool {
        self.tripped_at.load(Ordering::Acquire) != 0
    }

    fn trip(&self, now_ms: u64) {
        // 0 means closed: a trip at time 0 is recorded as 1 ms.
        if self.tripped_at.compare_exchange(0, now_ms.max(1), Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            self.backoff.store(FIRST_BACKOFF_MS, Ordering::Relaxed);
            self.next_probe.store(now_ms.saturating_add(FIRST_BACKOFF_MS), Ordering::Release);
        }
    }

    fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
        self.tripped_at.store(0, Ordering::Release);
    }

    /// (failures, requests) in the ten seconds up to `sec`.
    fn window(&self, sec: u64) -> (u64, u64) {
        let (mut fails, mut total) = (0, 0);
        for b in &self.buckets {
            let (s, f, ok) = unpack(b.load(Ordering::Relaxed));
            if s + (BUCKETS as u64) > sec && s <= sec {
                fails += f;
                total += f + ok;
            }
        }
        (fails, total)
    }
}

fn pack(sec: u64, fails: u64, succ: u64) -> u64 {
    (sec << 32) | (fails << 16) | succ
}

fn unpack(v: u64) -> (u64, u64, u64) {
    (v >> 32, (v >> 16) & 0xffff, v & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(half_open: bool) -> BreakerSpec {
        BreakerSpec { threshold: 0.5, samples: 4, return_after_ms: 60_000, half_open }
    }

    #[test]
    fn trips_on_the_failure_rate_once_enough_samples_are_in_the_window() {
        let b = Breaker::new(spec(false));
        let t = 1_000_000;
        b.record(false, t);
        b.record(false, t);
        b.record(false, t);
        assert!(b.ready(t), "three samples of four needed");
        b.record(true, t);
        b.record(false, t + 100);
        assert!(!b.ready(t + 200), "4 of 5 failed");
        assert!(!b.ready(t + 59_000));
        assert!(b.ready(t + 100 + 60_000), "return_to_service_after closes it");
        assert!(!b.is_tripped());
        // Old seconds fall out of the window.
        let b = Breaker::new(spec(false));
        for _ in 0..3 {
            b.record(false, t);
        }
        b.record(true, t + 11_000);
        b.record(false, t + 11_000);
        assert!(b.ready(t + 11_000), "the failures of 11 s ago no longer count");
    }

    #[test]
    fn half_open_lets_one_probe_through_and_a_success_closes_it() {
        let b = Breaker::new(spec(true));
        let t = 5_000_000;
        for _ in 0..4 {
            b.record(false, t);
        }
        assert!(!b.ready(t + 10));
        assert!(b.ready(t + 600), "a probe after 500 ms");
        assert!(!b.ready(t + 601), "one probe per interval");
        b.record(false, t + 700);
        assert!(!b.ready(t + 1000), "the next probe 500 ms after the last (then 750, ...)");
        assert!(b.ready(t + 600 + 750));
        b.record(true, t + 1400);
        assert!(!b.is_tripped() && b.ready(t + 1401), "the probe's success closes it");
    }
}
