//! Request records (analytics): one JSON line per request to an API, with Tyk's AnalyticsRecord
//! field names, from the workers to a sink on the control plane.
//!
//! A worker writes each record into its exchange's buffer ([`record::begin`] when the request is
//! decided, [`record::finish`] when it ends), appends it to its [`Recorder`]'s batch, and hands
//! full batches (and, every 200 ms, partial ones) to the [`pump`] over one bounded queue. The pump
//! thread writes batches to the sink (a rotated JSON lines file, or stdout) and returns their
//! buffers for reuse. Must not: block a worker (a full queue drops the batch and counts its
//! records as dropped), allocate per record on the worker, or split a record across batches.

pub mod clock;
pub mod pump;
pub mod record;

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

pub use record::{Outcome, RequestFacts};

/// A worker hands its batch to the pump once it holds this many bytes of records.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Complete records (whole lines), as one worker wrote them.
#[derive(Debug)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub records: u64,
}

/// A worker's ends of the queue to the pump: batches out, emptied buffers back.
#[derive(Clone)]
pub struct Feed {
    tx: Sender<Batch>,
    spare: Receiver<Vec<u8>>,
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
}

/// A worker's batch of records and its clock.
pub struct Recorder {
    feed: Feed,
    buf: Vec<u8>,
    records: u64,
    clock: clock::SecondCache,
    pub stats: RecorderStats,
}

impl Recorder {
    pub fn new(feed: Feed) -> Self {
        Recorder { feed, buf: Vec::new(), records: 0, clock: clock::SecondCache::default(), stats: Default::default() }
    }

    /// Finishes the record begun in `rec` with `o` and the current time, moves it into the batch
    /// (leaving `rec` empty) and hands the batch on once it is full.
    pub fn push(&mut self, rec: &mut Vec<u8>, o: &Outcome) {
        let now = self.clock.now();
        record::finish(rec, o, &now);
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

    /// Hands the records held so far to the pump without waiting; if its queue is full they are
    /// dropped and counted.
    pub fn flush(&mut self) {
        if self.records == 0 {
            return;
        }
        let n = self.records;
        let batch = Batch { bytes: std::mem::take(&mut self.buf), records: n };
        self.records = 0;
        match self.feed.tx.try_send(batch) {
            Ok(()) => self.stats.queued += n,
            Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) => {
                // Keep the buffer for the next batch.
                self.stats.dropped += n;
                let mut bytes = b.bytes;
                bytes.clear();
                self.buf = bytes;
            }
        }
    }
}

impl Recorder {
    /// The worker is stopping: hands over what is left, waiting up to a second for room.
    pub fn finish(&mut self) {
        if self.records == 0 {
            return;
        }
        let n = self.records;
        let batch = Batch { bytes: std::mem::take(&mut self.buf), records: n };
        self.records = 0;
        match self.feed.tx.send_timeout(batch, Duration::from_secs(1)) {
            Ok(()) => self.stats.queued += n,
            Err(_) => {
                self.stats.dropped += n;
                tracing::warn!(records = n, "analytics queue full at shutdown: records dropped");
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish();
    }
}
