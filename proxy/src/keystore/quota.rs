//! Quota counters on the control plane: reserve a block of a quota for a worker, atomically.
//! Redis (`[storage] redis`): a Lua script per reservation on `quota-<id>` (expiring with the
//! period), so blocks never add up to more than the quota across nodes. Embedded (and the
//! fallback while Redis is unreachable): a table in memory, written to `quotas.json` next to the
//! key store at most once per second and at shutdown. Must not: be called from a worker.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::limit::quota::{block_size, Quota, Reservation};

use super::StoreError;

/// Reserves `min(block, max - used)` and starts the period on first use. Returns
/// `{granted, used_after, ttl_ms}`.
pub const RESERVE_LUA: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local max = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local want = math.max(1, math.min(100, math.floor((max - used) / 20)))
local grant = math.min(want, max - used)
if grant <= 0 then
  local ttl = redis.call('PTTL', KEYS[1])
  return {0, used, ttl}
end
local after = redis.call('INCRBY', KEYS[1], grant)
if after == grant then redis.call('EXPIRE', KEYS[1], period) end
return {grant, after, redis.call('PTTL', KEYS[1])}
";

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Counter {
    used: i64,
    /// Unix seconds the period ends.
    reset: u64,
}

/// The in-memory (embedded) quota table.
pub struct QuotaTable {
    path: Option<PathBuf>,
    counters: Mutex<HashMap<String, Counter>>,
    dirty: AtomicBool,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl QuotaTable {
    /// Loads `path` when given (a missing file is an empty table); `None`: memory only.
    pub fn open(path: Option<&Path>) -> Result<QuotaTable, StoreError> {
        let mut counters = HashMap::new();
        if let Some(p) = path {
            match std::fs::read(p) {
                Ok(b) => {
                    counters = serde_json::from_slice(&b)
                        .map_err(|e| StoreError::Corrupt { path: p.into(), message: e.to_string() })?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::File { path: p.into(), source }),
            }
        }
        Ok(QuotaTable {
            path: path.map(Path::to_path_buf),
            counters: Mutex::new(counters),
            dirty: AtomicBool::new(false),
        })
    }

    /// A table in memory only.
    pub fn empty() -> QuotaTable {
        QuotaTable { path: None, counters: Mutex::new(HashMap::new()), dirty: AtomicBool::new(false) }
    }

    pub fn reserve(&self, q: &Quota) -> Reservation {
        let now = now_unix();
        let mut m = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let c = m.entry(q.id.clone()).or_insert(Counter { used: 0, reset: now + q.period.max(1) as u64 });
        if now >= c.reset {
            *c = Counter { used: 0, reset: now + q.period.max(1) as u64 };
        }
        let grant = block_size(q.max, c.used).min(q.max - c.used).max(0);
        c.used += grant;
        self.dirty.store(true, Ordering::Relaxed);
        Reservation { granted: grant as u64, remaining: (q.max - c.used).max(0) as u64, reset: c.reset }
    }

    pub fn reset(&self, id: &str) {
        self.counters.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Writes the table if it changed (atomically: temporary file, fsync, rename).
    pub fn flush(&self) -> Result<(), StoreError> {
        let Some(path) = &self.path else { return Ok(()) };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let now = now_unix();
        let bytes = {
            let mut m = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            m.retain(|_, c| c.reset > now);
            serde_json::to_vec(&*m)
                .map_err(|e| StoreError::File { path: path.clone(), source: std::io::Error::other(e) })?
        };
        super::embedded::write_atomic(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_grants_more_than_the_quota_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quotas.json");
        let t = QuotaTable::open(Some(&path)).unwrap();
        let q = Quota { id: "k:x".into(), max: 50, period: 60 };
        let mut total = 0;
        for _ in 0..100 {
            total += t.reserve(&q).granted;
        }
        assert_eq!(total, 50);
        t.flush().unwrap();
        let t2 = QuotaTable::open(Some(&path)).unwrap();
        assert_eq!(t2.reserve(&q).granted, 0);
        t2.reset("k:x");
        assert_eq!(t2.reserve(&q).granted, 2);
    }
}
