//! The sinks, each on a thread of its own with its own queue and spool, so that a slow or dead
//! sink holds back neither another sink nor the analytics thread (nor, through it, a worker).
//!
//! A sink thread takes the batches the analytics thread hands it ([`SinkThread::offer`], which
//! never waits) and delivers them ([`Sink::send`]). A batch it cannot deliver (the sink failed,
//! or its queue is half full: the sink is slower than the records arrive) goes to its
//! [`Spool`], and so does every later batch until the spool is empty again, so that batches
//! arrive in the order they were made. The spool is replayed oldest first whenever the queue is
//! empty, after a failure with a backoff of 100 ms doubling to 5 s. Records are dropped only when
//! the spool is full (or, with `spool_mb = 0`, when a send fails), and every drop is counted by
//! sink and reason. At shutdown the thread delivers what it can of the spool for up to
//! [`SHUTDOWN_REPLAY`] and leaves the rest on disk for the next start.

pub mod file;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use super::spool::Spool;
use super::Shared;
use crate::config::{AnalyticsSink, SinkConfig};

/// One destination of request records.
pub trait Sink: Send {
    /// Delivers a batch of whole records (JSON lines, [`super::decode`] reads them). `Err`:
    /// none of it may be taken as delivered; the batch is spooled and sent again.
    fn send(&mut self, batch: &[u8]) -> Result<(), SinkFailure>;
    /// Called about once a second and at shutdown: make what was sent durable (the search
    /// index commits), apply retention.
    fn tick(&mut self) -> Result<(), SinkFailure> {
        Ok(())
    }
    /// Most bytes of batches the sink takes in one `send`, several queued or spooled batches
    /// joined (still whole or not at all); 0: one batch per `send`. For a sink whose cost is per
    /// call, not per record: each ClickHouse insert makes a part on the server.
    fn join_bytes(&self) -> usize {
        0
    }
}

/// Why a sink could not take a batch.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkFailure(pub String);

/// A sink that could not be opened at startup.
#[derive(Debug, thiserror::Error)]
#[error("[analytics] sink {name}: {message}")]
pub struct OpenError {
    pub name: String,
    pub message: String,
}

/// What one sink has done, read by `/metrics` (label `sink`).
#[derive(Debug, Default)]
pub struct SinkStats {
    pub name: String,
    /// Records delivered, and their bytes as JSON lines.
    pub written: AtomicU64,
    pub bytes: AtomicU64,
    /// Failed deliveries.
    pub errors: AtomicU64,
    /// Records put in the spool.
    pub spooled: AtomicU64,
    /// What the spool holds now.
    pub spool_bytes: AtomicU64,
    pub spool_records: AtomicU64,
    /// Records dropped: the spool was full; the sink's queue was full; a send failed with no
    /// spool; a line did not read as a record (skipped by the sink).
    pub dropped_spool_full: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_no_spool: AtomicU64,
    pub dropped_unreadable: AtomicU64,
    /// `file`: rotations.
    pub rotations: AtomicU64,
}

/// How long a stopping sink thread goes on replaying its spool before it leaves the rest for
/// the next start.
pub const SHUTDOWN_REPLAY: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The analytics thread's end of a sink thread.
pub struct SinkThread {
    tx: Sender<Arc<Shared>>,
    pub stats: Arc<SinkStats>,
    pub thread: JoinHandle<()>,
}

impl SinkThread {
    /// Hands a batch over without waiting; a full queue drops it, counted.
    pub fn offer(&self, batch: &Arc<Shared>) {
        match self.tx.try_send(Arc::clone(batch)) {
            Ok(()) => {}
            Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) => {
                self.stats.dropped_queue_full.fetch_add(b.records, Ordering::Relaxed);
            }
        }
    }
}

/// What opening the sinks gives the control plane besides the threads.
#[derive(Default, Clone)]
pub struct Handles {
    /// The `search` sink's index (the first, if several), for `/api/analytics/search`.
    pub search: Option<Arc<super::search::SearchIndex>>,
}

/// Opens one sink (a file or index that cannot be opened is an error; a server that is down
/// is not: its batches spool until it is up) and starts its thread.
pub fn start(
    cfg: &SinkConfig,
    analytics: &crate::config::AnalyticsConfig,
    storage_redis: &str,
    queue: usize,
    handles: &mut Handles,
) -> Result<SinkThread, OpenError> {
    let name = cfg.label();
    let err = |message: String| OpenError { name: name.clone(), message };
    let stats = Arc::new(SinkStats { name: name.clone(), ..Default::default() });
    let sink: Box<dyn Sink> = match cfg.sink {
        AnalyticsSink::File => Box::new(
            file::FileOut::open(&cfg.path, cfg.rotate_mb, cfg.keep, Arc::clone(&stats))
                .map_err(|e| err(format!("{}: {e} (set a writable path, or enabled = false)", cfg.path.display())))?,
        ),
        AnalyticsSink::Stdout => Box::new(file::Stdout),
        AnalyticsSink::Redis => {
            let url = if cfg.url.is_empty() { storage_redis } else { &cfg.url };
            let s = super::redis_sink::RedisSink::new(
                url,
                &cfg.key,
                cfg.multiple_keys,
                analytics.expire_after_s,
                Arc::clone(&stats),
            );
            Box::new(s.map_err(err)?)
        }
        AnalyticsSink::Clickhouse => {
            Box::new(super::clickhouse::ClickHouseSink::new(cfg, Arc::clone(&stats)).map_err(err)?)
        }
        AnalyticsSink::Search => {
            let (sink, index) = super::search::open(cfg, Arc::clone(&stats)).map_err(err)?;
            handles.search.get_or_insert(index);
            Box::new(sink)
        }
    };
    let spool_dir = analytics.spool_dir.join(&name);
    let spool = Spool::open(&spool_dir, cfg.spool_mb.saturating_mul(1 << 20))
        .map_err(|e| err(format!("spool {}: {e}", spool_dir.display())))?;
    if !spool.is_empty() {
        tracing::info!(sink = %name, records = spool.records(), "analytics: replaying the spool of the last run");
    }
    spawn(sink, spool, queue, stats).map_err(|e| err(format!("thread: {e}")))
}

/// Starts the thread of `sink`.
fn spawn(sink: Box<dyn Sink>, spool: Spool, queue: usize, stats: Arc<SinkStats>) -> std::io::Result<SinkThread> {
    let (tx, rx) = crossbeam_channel::bounded(queue.max(2));
    let st = Arc::clone(&stats);
    let thread = std::thread::Builder::new()
        .name(format!("analytics-{}", stats.name))
        .spawn(move || Runner::new(sink, spool, st).run(&rx))?;
    Ok(SinkThread { tx, stats, thread })
}

/// A sink thread's state.
struct Runner {
    sink: Box<dyn Sink>,
    spool: Spool,
    stats: Arc<SinkStats>,
    /// After a failure: deliver nothing directly (to the spool instead) until a replay works.
    down: bool,
    retry_at: Instant,
    backoff: Duration,
    last_log: Option<Instant>,
    /// How many spooled batches the last failed replay sent (sent again together).
    replay_batches: Option<usize>,
    /// Queued batches joined for one send, reused.
    joined: Vec<u8>,
}

impl Runner {
    fn new(sink: Box<dyn Sink>, spool: Spool, stats: Arc<SinkStats>) -> Self {
        let r = Runner {
            sink,
            spool,
            stats,
            down: false,
            retry_at: Instant::now(),
            backoff: BACKOFF_MIN,
            last_log: None,
            replay_batches: None,
            joined: Vec::new(),
        };
        r.publish_spool();
        r
    }

    fn run(mut self, rx: &Receiver<Arc<Shared>>) {
        let cap = rx.capacity().unwrap_or(2);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            let wake = if self.spool.is_empty() { next_tick } else { next_tick.min(self.retry_at) };
            match rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(b) => {
                    let direct = self.spool.is_empty() && !self.down && rx.len() < cap / 2;
                    let join = self.sink.join_bytes();
                    if direct && join > 0 && !rx.is_empty() {
                        // Batches waiting behind this one go with it.
                        let mut joined = std::mem::take(&mut self.joined);
                        joined.clear();
                        joined.extend_from_slice(&b.bytes);
                        let mut records = b.records;
                        while joined.len() < join {
                            let Ok(more) = rx.try_recv() else { break };
                            joined.extend_from_slice(&more.bytes);
                            records += more.records;
                        }
                        if let Err(e) = self.deliver(&joined, records) {
                            self.failed(&e);
                            self.keep(&joined, records);
                            // The first replay sends these bytes alone, as they were sent.
                            self.replay_batches = Some(1);
                        }
                        self.joined = joined;
                    } else if direct {
                        if let Err(e) = self.deliver(&b.bytes, b.records) {
                            self.failed(&e);
                            self.keep(&b.bytes, b.records);
                            self.replay_batches = Some(1);
                        }
                    } else {
                        self.keep(&b.bytes, b.records);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if rx.is_empty() && !self.spool.is_empty() && Instant::now() >= self.retry_at {
                self.replay_one();
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + TICK;
                if let Err(e) = self.sink.tick() {
                    self.log(&e, "analytics sink: tick failed");
                }
            }
        }
        // Stopping: deliver what the spool holds while the sink takes it, then leave the rest.
        let deadline = Instant::now() + SHUTDOWN_REPLAY;
        while !self.spool.is_empty() && Instant::now() < deadline {
            if !self.replay_one() {
                std::thread::sleep(self.retry_at.saturating_duration_since(Instant::now()).min(BACKOFF_MIN));
            }
        }
        if let Err(e) = self.sink.tick() {
            self.log(&e, "analytics sink: final tick failed");
        }
        if !self.spool.is_empty() {
            tracing::warn!(sink = %self.stats.name, records = self.spool.records(),
                "analytics: records left in the spool for the next start");
        }
    }

    fn deliver(&mut self, bytes: &[u8], records: u64) -> Result<(), SinkFailure> {
        self.sink.send(bytes)?;
        self.stats.written.fetch_add(records, Ordering::Relaxed);
        self.stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Sends the oldest spooled batch (with the sink's [`Sink::join_bytes`], as many of the
    /// oldest as fit, joined; after a failure, the same ones again, so that a sink that
    /// recognises a send in doubt sees the same bytes); true if it went.
    fn replay_one(&mut self) -> bool {
        let n = self.replay_batches.unwrap_or_else(|| self.spool.batches_within(self.sink.join_bytes()));
        let front = match self.spool.read_front(n) {
            Ok(Some(f)) => f,
            Ok(None) => return false,
            Err(e) => {
                // Unreadable (removed by hand?): forget it, counted.
                self.log(&SinkFailure(format!("spool: {e}")), "analytics spool: batch unreadable, dropped");
                let n = self.spool.front_records();
                self.stats.dropped_unreadable.fetch_add(n, Ordering::Relaxed);
                let _ = self.spool.pop();
                self.publish_spool();
                return false;
            }
        };
        match self.deliver(&front.0, front.1) {
            Ok(()) => {
                self.replay_batches = None;
                for _ in 0..n {
                    if let Err(e) = self.spool.pop() {
                        self.log(
                            &SinkFailure(format!("spool: {e}")),
                            "analytics spool: cannot remove a delivered batch",
                        );
                    }
                }
                self.down = false;
                self.backoff = BACKOFF_MIN;
                self.publish_spool();
                true
            }
            Err(e) => {
                self.replay_batches = Some(n);
                self.failed(&e);
                false
            }
        }
    }

    fn failed(&mut self, e: &SinkFailure) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        if !self.down {
            self.backoff = BACKOFF_MIN;
        }
        self.down = true;
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.log(e, "analytics sink failed; its batches are spooled");
    }

    fn keep(&mut self, bytes: &[u8], records: u64) {
        match self.spool.push(bytes, records) {
            Ok(true) => {
                self.stats.spooled.fetch_add(records, Ordering::Relaxed);
            }
            Ok(false) if self.spool.max_bytes() == 0 => {
                self.stats.dropped_no_spool.fetch_add(records, Ordering::Relaxed);
            }
            Ok(false) => {
                self.stats.dropped_spool_full.fetch_add(records, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.dropped_spool_full.fetch_add(records, Ordering::Relaxed);
                self.log(&SinkFailure(format!("spool: {e}")), "analytics spool: cannot write; batch dropped");
            }
        }
        self.publish_spool();
    }

    fn publish_spool(&self) {
        self.stats.spool_bytes.store(self.spool.bytes(), Ordering::Relaxed);
        self.stats.spool_records.store(self.spool.records(), Ordering::Relaxed);
    }

    /// Logs at most every 10 s per sink.
    fn log(&mut self, e: &SinkFailure, what: &str) {
        if self.last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::error!(sink = %self.stats.name, error = %e, spooled = self.spool.records(), "{what}");
            self.last_log = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A sink that takes batches while `up`, keeping their lines.
    #[derive(Clone, Default)]
    struct Fake {
        up: Arc<std::sync::atomic::AtomicBool>,
        got: Arc<Mutex<Vec<String>>>,
        ticks: Arc<AtomicU64>,
        /// `join_bytes`, and the records of each send.
        join: usize,
        sends: Arc<Mutex<Vec<usize>>>,
        slow: Duration,
    }

    impl Sink for Fake {
        fn send(&mut self, batch: &[u8]) -> Result<(), SinkFailure> {
            if !self.up.load(Ordering::Relaxed) {
                return Err(SinkFailure("down".into()));
            }
            let text = std::str::from_utf8(batch).unwrap();
            self.got.lock().unwrap().extend(text.lines().map(String::from));
            self.sends.lock().unwrap().push(text.lines().count());
            std::thread::sleep(self.slow);
            Ok(())
        }
        fn join_bytes(&self) -> usize {
            self.join
        }
        fn tick(&mut self) -> Result<(), SinkFailure> {
            self.ticks.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    fn batch(i: usize, spare: &Sender<Vec<u8>>) -> Arc<Shared> {
        Arc::new(Shared {
            bytes: format!("{{\"i\":{i}}}\n").into_bytes(),
            records: 1,
            samples: Vec::new(),
            spare: spare.clone(),
        })
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn start_fake(dir: &std::path::Path, fake: &Fake, spool_bytes: u64) -> SinkThread {
        let stats = Arc::new(SinkStats { name: "fake".into(), ..Default::default() });
        // A queue that holds every batch a test offers: what is tested is the spool, and a
        // sink thread slowed by a loaded machine must not drop batches from its queue.
        spawn(Box::new(fake.clone()), Spool::open(dir, spool_bytes).unwrap(), 4096, stats).unwrap()
    }

    #[test]
    fn an_outage_spools_and_every_record_arrives_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (spare, _spare_rx) = crossbeam_channel::bounded(1000);
        let fake = Fake::default();
        fake.up.store(true, Ordering::Relaxed);
        let t = start_fake(dir.path(), &fake, 1 << 20);
        let mut sent = 0;
        for _ in 0..50 {
            t.offer(&batch(sent, &spare));
            sent += 1;
            std::thread::sleep(Duration::from_micros(200));
        }
        fake.up.store(false, Ordering::Relaxed);
        for _ in 0..300 {
            t.offer(&batch(sent, &spare));
            sent += 1;
            std::thread::sleep(Duration::from_micros(200));
        }
        wait_until("the outage to be spooled", || t.stats.spool_records.load(Ordering::Relaxed) > 0);
        fake.up.store(true, Ordering::Relaxed);
        for _ in 0..50 {
            t.offer(&batch(sent, &spare));
            sent += 1;
        }
        wait_until("every record", || fake.got.lock().unwrap().len() >= sent);
        let got = fake.got.lock().unwrap().clone();
        let expect: Vec<String> = (0..sent).map(|i| format!("{{\"i\":{i}}}")).collect();
        assert_eq!(got, expect, "each record once, in order");
        assert_eq!(t.stats.dropped_queue_full.load(Ordering::Relaxed), 0);
        assert!(t.stats.errors.load(Ordering::Relaxed) >= 1);
        assert!(t.stats.spooled.load(Ordering::Relaxed) >= 1);
        assert_eq!(t.stats.written.load(Ordering::Relaxed), sent as u64);
        wait_until("the spool to empty", || t.stats.spool_records.load(Ordering::Relaxed) == 0);
        drop(t.tx);
        t.thread.join().unwrap();
        assert!(fake.ticks.load(Ordering::Relaxed) >= 1, "a final tick");
    }

    #[test]
    fn a_full_spool_drops_and_counts_and_a_stopped_sink_keeps_its_spool_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let (spare, _spare_rx) = crossbeam_channel::bounded(1000);
        let fake = Fake::default(); // down
                                    // Room for 10 of the 8-byte records ({"i":0}\n .. {"i":9}\n), then 9-byte ones.
        let t = start_fake(dir.path(), &fake, 80);
        for i in 0..20 {
            t.offer(&batch(i, &spare));
        }
        let stats = Arc::clone(&t.stats);
        wait_until("all 20 handled", || {
            stats.spooled.load(Ordering::Relaxed) + stats.dropped_spool_full.load(Ordering::Relaxed) == 20
        });
        assert_eq!(stats.spooled.load(Ordering::Relaxed), 10);
        assert_eq!(stats.dropped_spool_full.load(Ordering::Relaxed), 10);
        drop(t.tx);
        t.thread.join().unwrap();
        assert!(fake.got.lock().unwrap().is_empty());
        // The next start replays what the last one kept.
        fake.up.store(true, Ordering::Relaxed);
        let t = start_fake(dir.path(), &fake, 80);
        wait_until("the replay", || fake.got.lock().unwrap().len() == 10);
        let got = fake.got.lock().unwrap().clone();
        assert_eq!(got, (0..10).map(|i| format!("{{\"i\":{i}}}")).collect::<Vec<_>>());
        assert_eq!(t.stats.written.load(Ordering::Relaxed), 10);
        drop(t.tx);
        t.thread.join().unwrap();
    }

    #[test]
    fn a_sink_that_joins_takes_queued_and_spooled_batches_together_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (spare, _spare_rx) = crossbeam_channel::bounded(1000);
        let fake = Fake { join: 80, slow: Duration::from_millis(20), ..Default::default() };
        // Down: ten 8-byte batches spool; up: replayed ten at a time (80 bytes).
        let t = start_fake(dir.path(), &fake, 1 << 20);
        for i in 0..10 {
            t.offer(&batch(i, &spare));
        }
        wait_until("the spool", || t.stats.spool_records.load(Ordering::Relaxed) == 10);
        fake.up.store(true, Ordering::Relaxed);
        wait_until("the replay", || fake.got.lock().unwrap().len() == 10);
        // Queued behind a slow send: joined.
        for i in 10..40 {
            t.offer(&batch(i, &spare));
        }
        wait_until("every record", || fake.got.lock().unwrap().len() == 40);
        let got = fake.got.lock().unwrap().clone();
        assert_eq!(got, (0..40).map(|i| format!("{{\"i\":{i}}}")).collect::<Vec<_>>(), "each once, in order");
        let sends = fake.sends.lock().unwrap().clone();
        assert_eq!(sends[0], 10, "the spool replayed in one send: {sends:?}");
        assert!(sends.len() < 31 && sends.iter().all(|&n| n <= 10), "{sends:?}");
        drop(t.tx);
        t.thread.join().unwrap();
    }

    #[test]
    fn without_a_spool_a_failed_send_is_counted_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let (spare, _spare_rx) = crossbeam_channel::bounded(1000);
        let fake = Fake::default();
        let t = start_fake(dir.path(), &fake, 0);
        t.offer(&batch(0, &spare));
        let stats = Arc::clone(&t.stats);
        wait_until("the drop", || stats.dropped_no_spool.load(Ordering::Relaxed) == 1);
        drop(t.tx);
        t.thread.join().unwrap();
    }
}
