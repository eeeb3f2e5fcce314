//! Rate-limited logging for failures that repeat in a tight loop, such as `accept(2)` failing
//! with EMFILE while file descriptors are exhausted (about 180 `accept failed` lines a second
//! before). The first occurrence is logged at once; after it, at most one line per interval,
//! carrying how many occurrences were left out since the previous line, so nothing is hidden
//! and the log does not flood.
//!
//! Single-threaded (one per loop, e.g. per worker's accept loop): plain fields, no atomics, no
//! lock. The caller passes the clock, so tests need no sleeps.

use std::time::{Duration, Instant};

/// Decides which occurrences of one repeating failure get a log line.
#[derive(Debug, Clone)]
pub struct RateLimited {
    interval: Duration,
    /// When the last line was written (`None`: never).
    last: Option<Instant>,
    /// Occurrences since then that got no line.
    suppressed: u64,
}

impl RateLimited {
    /// At most one line per `interval`.
    pub const fn new(interval: Duration) -> Self {
        RateLimited { interval, last: None, suppressed: 0 }
    }

    /// Call once per occurrence. `Some(n)`: write a line now, and say that `n` occurrences
    /// were left out since the previous line; `None`: stay quiet (the occurrence is counted).
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed = self.suppressed.saturating_add(1);
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Occurrences left out since the last line (e.g. to report once the failure has stopped).
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_occurrence_logs_then_one_line_per_interval_with_the_count_left_out() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut r = RateLimited::new(Duration::from_secs(10));
        assert_eq!(r.check(t0), Some(0));
        // 180 a second for ten seconds, as with EMFILE: quiet, counted.
        let mut lines = 0;
        for i in 1..1_800u64 {
            if r.check(ms(i * 5)).is_some() {
                lines += 1;
            }
        }
        assert_eq!(lines, 0);
        assert_eq!(r.suppressed(), 1_799);
        // Once the interval has passed: one line saying how many were left out.
        assert_eq!(r.check(ms(10_000)), Some(1_799));
        assert_eq!(r.suppressed(), 0);
        assert_eq!(r.check(ms(10_001)), None);
        assert_eq!(r.check(ms(25_000)), Some(1));
        // A clock that goes backwards (it should not) stays quiet rather than flooding.
        assert_eq!(r.check(t0), None);
    }

    #[test]
    fn zero_interval_logs_every_occurrence() {
        let mut r = RateLimited::new(Duration::ZERO);
        let t = Instant::now();
        assert_eq!(r.check(t), Some(0));
        assert_eq!(r.check(t), Some(0));
    }
}
