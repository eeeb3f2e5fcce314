//! The Redis key store: sessions as JSON under `<prefix><sha256 hex>` (Tyk's `apikey-` layout,
//! with SHA-256 as the hash), key changes published on [`CHANNEL`] so every node drops its
//! cached copy. The connection is made lazily and re-made after failures, so the proxy starts
//! and serves (keyless APIs, cached sessions) while Redis is down. Must not: be called from a
//! worker; wait on Redis longer than [`OP_TIMEOUT`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::auth::{hex, parse_hex, Invalidation, KeyHash};
use crate::config::TykSession;

use super::{KeyStore, StoreError};

/// Pub/sub channel carrying the hash (hex) of each changed key.
pub(super) const CHANNEL: &str = "portcullis.keys";
/// Published on [`CHANNEL`] when a key changed whose SHA-256 is not known (a Tyk-written key
/// deleted by its Tyk hash).
pub(super) const CHANGED_UNKNOWN: &str = "*";
/// Longest wait for one Redis operation.
pub(super) const OP_TIMEOUT: Duration = Duration::from_secs(1);

pub struct RedisStore {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    prefix: String,
    healthy: AtomicBool,
    last_error: Mutex<String>,
}

fn rerr(e: impl std::fmt::Display) -> StoreError {
    StoreError::Redis(e.to_string())
}

impl RedisStore {
    /// Checks the URL; connects on first use.
    pub fn new(url: &str, prefix: &str) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(rerr)?;
        Ok(RedisStore {
            client,
            conn: tokio::sync::Mutex::new(None),
            prefix: prefix.to_string(),
            healthy: AtomicBool::new(false),
            last_error: Mutex::new("not connected yet".into()),
        })
    }

    /// `None` when the last operation succeeded, else why it failed (for `/hello`).
    pub fn status(&self) -> Option<String> {
        if self.healthy.load(Ordering::Relaxed) {
            None
        } else {
            Some(self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone())
        }
    }

    fn note<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        match &r {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("redis key store connected");
                }
            }
            Err(e) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "redis key store unavailable");
                }
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
            }
        }
        r
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(OP_TIMEOUT)
            .set_response_timeout(OP_TIMEOUT)
            .set_number_of_retries(1);
        let c = tokio::time::timeout(OP_TIMEOUT * 2, ConnectionManager::new_with_config(self.client.clone(), cfg))
            .await
            .map_err(|_| StoreError::Redis("connect timed out".into()))?
            .map_err(rerr)?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` on the connection; after a failure the connection is dropped and the operation
    /// tried once more on a new one (a restarted Redis answers at once, not after a backoff).
    async fn op<T, F>(&self, f: impl Fn(ConnectionManager) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let attempt = || async {
            let c = self.conn().await?;
            tokio::time::timeout(OP_TIMEOUT, f(c))
                .await
                .map_err(|_| StoreError::Redis("timed out".into()))?
                .map_err(rerr)
        };
        let mut r = attempt().await;
        if r.is_err() {
            *self.conn.lock().await = None;
            r = attempt().await;
        }
        self.note(r)
    }

    fn key(&self, hash: &KeyHash) -> String {
        format!("{}{}", self.prefix, hex(hash))
    }

    pub async fn get(&self, hash: &KeyHash) -> Result<Option<TykSession>, StoreError> {
        let key = self.key(hash);
        let raw: Option<String> = self
            .op(|mut c| {
                let key = key.clone();
                async move { c.get(key).await }
            })
            .await?;
        match raw {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StoreError::Redis(format!("session {} is not valid JSON: {e}", hex(hash)))),
        }
    }

    pub async fn put(&self, hash: &KeyHash, session: &TykSession) -> Result<(), StoreError> {
        let key = self.key(hash);
        let text = serde_json::to_string(session).map_err(rerr)?;
        let h = hex(hash);
        self.op(|mut c| {
            let (key, text, h) = (key.clone(), text.clone(), h.clone());
            async move {
                let () = c.set(key, text).await?;
                let _: i64 = c.publish(CHANNEL, h).await?;
                Ok(())
            }
        })
        .await
    }

    pub async fn delete(&self, hash: &KeyHash) -> Result<bool, StoreError> {
        let key = self.key(hash);
        let h = hex(hash);
        self.op(|mut c| {
            let (key, h) = (key.clone(), h.clone());
            async move {
                let n: i64 = c.del(key).await?;
                let _: i64 = c.publish(CHANNEL, h).await?;
                Ok(n > 0)
            }
        })
        .await
    }

    /// The first of `names` (after the prefix) that holds a session, with that name: one MGET.
    pub async fn get_first(&self, names: &[String]) -> Result<Option<(String, TykSession)>, StoreError> {
        let keys: Vec<String> = names.iter().map(|n| format!("{}{n}", self.prefix)).collect();
        let raw: Vec<Option<String>> = self
            .op(|mut c| {
                let keys = keys.clone();
                async move { redis::cmd("MGET").arg(keys).query_async(&mut c).await }
            })
            .await?;
        for (name, text) in names.iter().zip(raw) {
            if let Some(text) = text {
                return serde_json::from_str(&text)
                    .map(|s| Some((name.clone(), s)))
                    .map_err(|e| StoreError::Redis(format!("session {name} is not valid JSON: {e}")));
            }
        }
        Ok(None)
    }

    /// Deletes `names` (after the prefix) and tells other nodes: the SHA-256 of the key when
    /// known, else [`CHANGED_UNKNOWN`] (they drop every cached session).
    pub async fn delete_names(&self, names: &[String], key: Option<&KeyHash>) -> Result<bool, StoreError> {
        let keys: Vec<String> = names.iter().map(|n| format!("{}{n}", self.prefix)).collect();
        let note = key.map_or_else(|| CHANGED_UNKNOWN.to_string(), hex);
        self.op(|mut c| {
            let (keys, note) = (keys.clone(), note.clone());
            async move {
                let n: i64 = c.del(keys).await?;
                let _: i64 = c.publish(CHANNEL, note).await?;
                Ok(n > 0)
            }
        })
        .await
    }

    /// Reserves a block of quota `q` (see [`super::quota::RESERVE_LUA`]).
    pub async fn reserve_quota(
        &self,
        q: &crate::limit::quota::Quota,
    ) -> Result<crate::limit::quota::Reservation, StoreError> {
        let key = format!("quota-{}", q.id);
        let (max, period) = (q.max, q.period.max(1));
        let script = redis::Script::new(super::quota::RESERVE_LUA);
        let (granted, used, ttl_ms): (i64, i64, i64) = self
            .op(|mut c| {
                let (key, script) = (key.clone(), script.clone());
                async move { script.key(key).arg(max).arg(period).invoke_async(&mut c).await }
            })
            .await?;
        let now = crate::clock::unix_now();
        let reset = now + if ttl_ms > 0 { (ttl_ms as u64).div_ceil(1000) } else { period as u64 };
        Ok(crate::limit::quota::Reservation {
            granted: granted.max(0) as u64,
            remaining: (max - used).max(0) as u64,
            reset,
        })
    }

    /// See `KeyStore::copy_quota`: one script, so that no request counted between reading
    /// `from` and writing `to` is lost.
    pub async fn copy_quota(&self, from: &str, to: &str) -> Result<(), StoreError> {
        const COPY_LUA: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('SET', KEYS[2], v, 'PX', ttl) else redis.call('SET', KEYS[2], v) end
return 1
";
        let (from, to) = (format!("quota-{from}"), format!("quota-{to}"));
        let script = redis::Script::new(COPY_LUA);
        self.op(|mut c| {
            let (from, to, script) = (from.clone(), to.clone(), script.clone());
            async move { script.key(from).key(to).invoke_async::<i64>(&mut c).await.map(|_| ()) }
        })
        .await
    }

    pub async fn reset_quota(&self, id: &str) -> Result<(), StoreError> {
        let key = format!("quota-{id}");
        self.op(|mut c| {
            let key = key.clone();
            async move { c.del::<_, i64>(key).await.map(|_| ()) }
        })
        .await
    }

    /// `PING`, to keep the health status current (see [`watch_health`]).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.op(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await }).await
    }

    pub async fn list(&self) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{}*", self.prefix);
        let plen = self.prefix.len();
        self.op(|mut c| {
            let pattern = pattern.clone();
            async move {
                let mut out = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await?;
                    out.extend(keys.into_iter().filter_map(|k| k.get(plen..).map(str::to_string)));
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                Ok(out)
            }
        })
        .await
    }
}

/// Follows other nodes' key changes (control plane task): subscribes to [`CHANNEL`] and drops
/// each changed key from this node's worker caches; after a lost subscription it drops every
/// cached session (changes may have been missed) and subscribes again.
pub async fn follow_changes(store: Arc<KeyStore>) {
    use futures_util::StreamExt as _;
    let Some(redis) = store.redis_store() else {
        return;
    };
    let client = redis.client.clone();
    loop {
        match client.get_async_pubsub().await {
            Ok(mut ps) => {
                if ps.subscribe(CHANNEL).await.is_ok() {
                    store.invalidate_local(Invalidation::All);
                    let mut msgs = ps.on_message();
                    while let Some(m) = msgs.next().await {
                        match m.get_payload::<String>() {
                            Ok(s) if s == CHANGED_UNKNOWN => store.invalidate_local(Invalidation::All),
                            Ok(s) => {
                                if let Some(h) = parse_hex(&s) {
                                    store.invalidate_local(Invalidation::Key(h));
                                }
                            }
                            Err(_) => {}
                        }
                    }
                    tracing::warn!("redis key-change subscription lost; resubscribing");
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot subscribe to redis key changes yet"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Pings Redis every [`HEALTH_INTERVAL`] so `/hello` says whether the key store is reachable
/// (and the connection is re-made soon after Redis returns), control plane task.
pub async fn watch_health(store: Arc<KeyStore>) {
    let Some(redis) = store.redis_store() else {
        return;
    };
    loop {
        if redis.ping().await.is_ok() && redis.status().is_none() {
            tracing::debug!("redis key store reachable");
        }
        tokio::time::sleep(HEALTH_INTERVAL).await;
    }
}

/// How often [`watch_health`] pings.
pub(super) const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
