//! Request records (analytics): one JSON line per request to an API, with Tyk's AnalyticsRecord
//! field names, from the workers to a sink on the control plane.
//!
//! A worker writes each record into its exchange's buffer ([`record::begin`] when the request is
//! decided, [`record::finish`] when it ends), appends it to its [`Recorder`]'s batch, and hands
//! full batches (and, every 200 ms, partial ones) to the [`pump`] over one bounded queue. The pump
//! thread writes batches to the sink (a rotated JSON lines file, or stdout) and returns their
//! buffers for reuse. Must not: block a worker (a full queue drops the batch and counts its
//! records as dropped), allocate per record on the worker, or split a record across batches.

pub mod capture;
pub mod clickhouse;
pub mod clock;
pub mod decode;
pub mod pump;
pub mod record;
pub mod redis_sink;
pub mod search;
pub mod sink;
pub mod spool;
pub mod tyk_msgpack;

use std::time::{Duration, Instant};

use ahash::AHashMap;
use crossbeam_channel::{Receiver, Sender};

pub use record::{Outcome, RequestFacts};

/// A worker hands its batch to the pump once it holds this many bytes of records.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Complete records (whole lines), as one worker wrote them.
#[derive(Debug)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub records: u64,
    /// API visibility's sampled exchanges (`visibility::sample` frames), usually none.
    pub samples: Vec<u8>,
}

/// A worker hands its batch on once its sampled exchanges hold this many bytes.
pub const SAMPLE_BYTES: usize = 256 * 1024;

/// A batch on its way to the sinks, shared by their threads: its buffer goes back to the
/// workers for reuse when the last of them lets go.
pub struct Shared {
    pub bytes: Vec<u8>,
    pub records: u64,
    /// Sampled exchanges, for the visibility thread only.
    pub samples: Vec<u8>,
    pub(crate) spare: Sender<Vec<u8>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.clear();
        let _ = self.spare.try_send(bytes);
    }
}

/// A worker's ends of the queue to the pump: batches out, emptied buffers back.
#[derive(Clone)]
pub struct Feed {
    tx: Sender<Batch>,
    spare: Receiver<Vec<u8>>,
}

impl Feed {
    /// Ends that lead nowhere: batches handed to it are refused (dropped and counted), no spare
    /// buffers come back. What a recorder holds once its worker has finished.
    fn closed() -> Self {
        let (tx, _) = crossbeam_channel::bounded(0);
        let (_, spare) = crossbeam_channel::bounded(0);
        Feed { tx, spare }
    }
}

/// The pump's ends.
pub struct PumpEnds {
    pub batches: Receiver<Batch>,
    pub spare: Sender<Vec<u8>>,
}

/// The queue between `workers` workers and the pump: `queue_batches` batches per worker.
pub fn channels(workers: usize, queue_batches: usize) -> (Feed, PumpEnds) {
    let cap = workers.max(1) * queue_batches.max(1);
    let (tx, batches) = crossbeam_channel::bounded(cap);
    let (spare, spare_rx) = crossbeam_channel::bounded(cap + workers.max(1));
    (Feed { tx, spare: spare_rx }, PumpEnds { batches, spare })
}

/// Counters of one worker's recorder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Records handed to the pump.
    pub queued: u64,
    /// Records dropped because the queue to the pump was full.
    pub dropped: u64,
    /// Sampled exchanges handed to the pump.
    pub samples_queued: u64,
    /// Sampled exchanges dropped with their batch.
    pub samples_dropped: u64,
}

/// A worker's batch of records and its clock.
pub struct Recorder {
    feed: Feed,
    buf: Vec<u8>,
    records: u64,
    samples: Vec<u8>,
    sample_count: u64,
    clock: clock::SecondCache,
    /// Wall clock at an instant, so a record's time comes from the `Instant` the exchange read
    /// anyway (re-read from the system clock once a second).
    wall_base: Option<(Instant, u64)>,
    /// `api_key` of JWT identities (SHA-256 hex of the identity claim), by identity. Hashing on
    /// every request was 1.5 % of the proxy's CPU in the gateway scenario (perf).
    identity_keys: AHashMap<Box<str>, [u8; 64]>,
    pub stats: RecorderStats,
    /// Detailed recording's capture, reused (dataplane/record.rs).
    pub scratch: Vec<u8>,
}

/// Most JWT identities whose record key a worker remembers (then it starts over).
const IDENTITY_KEYS_MAX: usize = 10_000;

impl Recorder {
    pub fn new(feed: Feed) -> Self {
        Recorder {
            feed,
            buf: Vec::new(),
            records: 0,
            samples: Vec::new(),
            sample_count: 0,
            clock: clock::SecondCache::default(),
            wall_base: None,
            identity_keys: AHashMap::new(),
            stats: Default::default(),
            scratch: Vec::new(),
        }
    }

    /// The record key of a JWT identity: SHA-256 of the identity claim, hex.
    pub fn identity_key(&mut self, id: &str) -> &str {
        if !self.identity_keys.contains_key(id) {
            use sha2::Digest;
            if self.identity_keys.len() >= IDENTITY_KEYS_MAX {
                self.identity_keys.clear();
            }
            let digest: [u8; 32] = sha2::Sha256::digest(id.as_bytes()).into();
            self.identity_keys.insert(id.into(), portcullis_http1::digits::hex64(&digest));
        }
        self.identity_keys.get(id).and_then(|h| std::str::from_utf8(h).ok()).unwrap_or_default()
    }

    /// Unix microseconds at `now`.
    fn unix_us(&mut self, now: Instant) -> u64 {
        match self.wall_base {
            Some((at, us)) if now >= at && now - at < Duration::from_secs(1) => us + (now - at).as_micros() as u64,
            _ => {
                let us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                self.wall_base = Some((now, us));
                us
            }
        }
    }

    /// Finishes the record begun in `rec` with `o` and the time `now` (the exchange's end),
    /// moves it into the batch (leaving `rec` empty) and hands the batch on once it is full.
    pub fn push(&mut self, rec: &mut Vec<u8>, o: &Outcome, now: Instant) {
        let us = self.unix_us(now);
        let wall = self.clock.format(us);
        record::finish(rec, o, &wall);
        if self.buf.capacity() == 0 {
            self.buf = self.feed.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(BATCH_BYTES + 4096));
        }
        self.buf.extend_from_slice(rec);
        rec.clear();
        self.records += 1;
        if self.buf.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    /// Appends a finished sampled exchange (`visibility::sample` frame) to the batch, and hands
    /// the batch on once its samples are large.
    pub fn push_sample(&mut self, frame: &[u8]) {
        self.samples.extend_from_slice(frame);
        self.sample_count += 1;
        if self.samples.len() >= SAMPLE_BYTES {
            self.flush();
        }
    }

    /// Hands the records held so far to the pump without waiting; if its queue is full they are
    /// dropped and counted.
    pub fn flush(&mut self) {
        self.hand_over(None);
    }

    /// The worker is stopping: hands over what is left, waiting up to a second for room, and
    /// lets go of the queue, so the pump ends as soon as every worker has finished — even if the
    /// recorder itself lives on (the worker's state can outlive its thread's runtime in tasks
    /// monoio does not drop; holding the queue then kept the pump waiting out its deadline at
    /// every shutdown: 4 s past the drain).
    pub fn finish(&mut self) {
        self.hand_over(Some(Duration::from_secs(1)));
        self.feed = Feed::closed();
    }

    fn hand_over(&mut self, wait: Option<Duration>) {
        if self.records == 0 && self.sample_count == 0 {
            return;
        }
        let (n, s) = (self.records, self.sample_count);
        let batch =
            Batch { bytes: std::mem::take(&mut self.buf), records: n, samples: std::mem::take(&mut self.samples) };
        self.records = 0;
        self.sample_count = 0;
        let refused = match wait {
            None => self.feed.tx.try_send(batch).err().map(|e| e.into_inner()),
            Some(t) => self.feed.tx.send_timeout(batch, t).err().map(|e| e.into_inner()),
        };
        match refused {
            None => {
                self.stats.queued += n;
                self.stats.samples_queued += s;
            }
            Some(b) => {
                self.stats.dropped += n;
                self.stats.samples_dropped += s;
                if wait.is_some() {
                    tracing::warn!(records = n, "analytics queue full at shutdown: records dropped");
                }
                // Keep the buffer for the next batch.
                let mut bytes = b.bytes;
                bytes.clear();
                self.buf = bytes;
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_key_is_the_sha256_of_the_claim_and_bounded() {
        let (feed, _ends) = channels(1, 1);
        let mut r = Recorder::new(feed);
        // sha256("foo@bar.com")
        let expect = "0c7e6a405862e402eb76a70f8a26fc732d07c32931e9fae9ab1582911d2e8a3b";
        assert_eq!(r.identity_key("foo@bar.com"), expect);
        assert_eq!(r.identity_key("foo@bar.com"), expect, "cached");
        for i in 0..IDENTITY_KEYS_MAX + 5 {
            r.identity_key(&format!("user{i}"));
        }
        assert!(r.identity_keys.len() <= IDENTITY_KEYS_MAX);
        assert_eq!(r.identity_key("foo@bar.com"), expect);
    }

    #[test]
    fn finish_hands_over_the_rest_and_lets_go_of_the_queue() {
        let (feed, ends) = channels(1, 4);
        let mut r = Recorder::new(feed);
        let mut rec = b"{\"x\":1".to_vec();
        r.push(&mut rec, &Outcome { code: 200, ..Default::default() }, Instant::now());
        r.finish();
        assert_eq!(ends.batches.recv().unwrap().records, 1);
        // The recorder is still alive, yet the pump's queue is closed.
        assert!(ends.batches.recv().is_err(), "the finished recorder still holds the queue");
        // A record after finish is refused and counted, not lost silently.
        let mut rec = b"{\"x\":2".to_vec();
        r.push(&mut rec, &Outcome { code: 200, ..Default::default() }, Instant::now());
        r.finish();
        assert_eq!(r.stats, RecorderStats { queued: 1, dropped: 1, ..Default::default() });
    }

    #[test]
    fn record_time_follows_the_instant_and_a_full_queue_drops_and_counts() {
        let (feed, ends) = channels(1, 1);
        let mut r = Recorder::new(feed);
        let t0 = Instant::now();
        let a = r.unix_us(t0);
        let b = r.unix_us(t0 + Duration::from_millis(250));
        assert_eq!(b - a, 250_000);
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
        assert!(wall.abs_diff(a) < 5_000_000, "close to the system clock");

        let o = Outcome { code: 200, ..Default::default() };
        for _ in 0..3 {
            let mut rec = b"{\"x\":1".to_vec();
            r.push(&mut rec, &o, t0);
            assert!(rec.is_empty());
            r.flush();
        }
        // One batch fits the queue (capacity 1, nobody draining); the other two are dropped.
        assert_eq!(r.stats, RecorderStats { queued: 1, dropped: 2, ..Default::default() });
        let batch = ends.batches.try_recv().unwrap();
        assert_eq!(batch.records, 1);
        let line: serde_json::Value = serde_json::from_slice(&batch.bytes).unwrap();
        assert_eq!(line["response_code"], 200);
    }
}
