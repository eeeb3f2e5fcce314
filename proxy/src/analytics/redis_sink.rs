//! The `redis` sink: records where a Tyk gateway puts them for tyk-pump, so an unchanged pump
//! drains Portcullis' records to any of its backends.
//!
//! Each batch becomes one `RPUSH <key> <record> <record> ...` of msgpack AnalyticsRecords
//! ([`super::tyk_msgpack`]), on the sink's own thread. The Tyk gateway pipelines one `RPUSH` per
//! record (storage's `AppendToSetPipelined`); one command with every record of the batch leaves
//! the same list, in one round trip, and is atomic: a batch is pushed whole or not at all, so the
//! spool's replay after a failure pushes no record twice. With `multiple_keys` (Tyk's
//! `enable_multiple_analytics_keys`) batches go round-robin to `<key>_0` .. `<key>_9`, which
//! pumps configured for them read all of.
//!
//! Unlike the gateway, the sink sets no expiry on the list (Tyk's
//! `analytics_config.storage_expiration_time`, 60 s by default, drops what no pump took in
//! time): records wait for the pump. Connection: opened on first use and again after a failure,
//! with 2 s to connect and 5 s for a reply, so a hung server fails a send instead of holding it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::decode;
use super::sink::{Sink, SinkFailure, SinkStats};

pub struct RedisSink {
    client: redis::Client,
    con: Option<redis::Connection>,
    key: String,
    multiple_keys: bool,
    next_key: u8,
    expire_after_s: u64,
    stats: Arc<SinkStats>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

impl RedisSink {
    /// No connection yet: a server that is down at startup only makes the first batches spool.
    pub fn new(
        url: &str,
        key: &str,
        multiple_keys: bool,
        expire_after_s: u64,
        stats: Arc<SinkStats>,
    ) -> Result<RedisSink, String> {
        let client = redis::Client::open(url).map_err(|e| format!("url: {e}"))?;
        Ok(RedisSink { client, con: None, key: key.into(), multiple_keys, next_key: 0, expire_after_s, stats })
    }

    fn connection(&mut self) -> Result<&mut redis::Connection, SinkFailure> {
        if self.con.is_none() {
            let con = self
                .client
                .get_connection_with_timeout(CONNECT_TIMEOUT)
                .map_err(|e| SinkFailure(format!("redis: connect: {e}")))?;
            con.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(|e| SinkFailure(format!("redis: {e}")))?;
            con.set_write_timeout(Some(REPLY_TIMEOUT)).map_err(|e| SinkFailure(format!("redis: {e}")))?;
            self.con = Some(con);
        }
        Ok(self.con.as_mut().expect("just set"))
    }

    /// The list this batch goes to.
    fn list(&mut self) -> String {
        if !self.multiple_keys {
            return self.key.clone();
        }
        let k = format!("{}_{}", self.key, self.next_key);
        self.next_key = (self.next_key + 1) % 10;
        k
    }
}

impl Sink for RedisSink {
    fn send(&mut self, batch: &[u8]) -> Result<(), SinkFailure> {
        let mut cmd = redis::cmd("RPUSH");
        cmd.arg(self.list());
        let mut n = 0;
        let mut one = Vec::with_capacity(1024);
        for line in decode::lines(batch) {
            match decode::record(line) {
                Ok(r) => {
                    one.clear();
                    super::tyk_msgpack::encode(&mut one, &r, self.expire_after_s);
                    cmd.arg(&one[..]);
                    n += 1;
                }
                Err(_) => {
                    self.stats.dropped_unreadable.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if n == 0 {
            return Ok(());
        }
        let con = self.connection()?;
        match cmd.query::<i64>(con) {
            Ok(_) => Ok(()),
            Err(e) => {
                // The connection may be half-way through a reply: start over on the next send.
                self.con = None;
                Err(SinkFailure(format!("redis: RPUSH: {e}")))
            }
        }
    }
}
