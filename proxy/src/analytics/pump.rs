//! The analytics thread: takes the workers' record batches off their queue and hands each,
//! shared, to every sink's thread ([`super::sink`]), without waiting on any of them. Once every
//! worker has let go of the queue, it lets go of the sinks' queues and waits for their threads
//! (each delivers or spools what it holds). Must not: run on a worker, wait on a sink, or lose a
//! batch without counting it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::sink::{self, Handles, OpenError, SinkStats, SinkThread};
use super::{PumpEnds, Shared};
use crate::config::Config;

/// What the sinks have done, read by `/metrics`: one entry per sink, in config order.
#[derive(Debug, Default)]
pub struct PumpStats {
    pub sinks: Vec<Arc<SinkStats>>,
}

/// The running analytics thread.
pub struct Analytics {
    pub thread: JoinHandle<()>,
    pub stats: Arc<PumpStats>,
    pub handles: Handles,
}

/// How long the analytics thread waits at shutdown for the sink threads to deliver or spool.
const SINKS_STOP: Duration = Duration::from_secs(5);

/// Opens every sink (`[analytics]`'s effective sinks: a path that cannot be written stops
/// startup with an error naming it) and starts the analytics thread and the sinks' threads.
/// With `visibility`, every batch is also offered to the visibility thread (`crate::visibility`).
pub fn spawn(
    cfg: &Config,
    ends: PumpEnds,
    workers: usize,
    visibility: Option<crate::visibility::Feed>,
) -> Result<Analytics, OpenError> {
    let a = &cfg.analytics;
    let queue = workers.max(1) * a.queue_batches.max(1);
    let mut handles = Handles::default();
    let mut sinks = Vec::new();
    for s in a.effective_sinks() {
        sinks.push(sink::start(&s, a, &cfg.storage.redis, queue, &mut handles)?);
    }
    let stats = Arc::new(PumpStats { sinks: sinks.iter().map(|s| Arc::clone(&s.stats)).collect() });
    let thread = std::thread::Builder::new()
        .name("portcullis-analytics".into())
        .spawn(move || run(ends, sinks, visibility))
        .map_err(|e| OpenError { name: "(analytics thread)".into(), message: e.to_string() })?;
    Ok(Analytics { thread, stats, handles })
}

fn run(ends: PumpEnds, sinks: Vec<SinkThread>, visibility: Option<crate::visibility::Feed>) {
    let PumpEnds { batches, spare } = ends;
    while let Ok(batch) = batches.recv() {
        let shared = Arc::new(Shared {
            bytes: batch.bytes,
            records: batch.records,
            samples: batch.samples,
            spare: spare.clone(),
        });
        for s in &sinks {
            s.offer(&shared);
        }
        if let Some(v) = &visibility {
            v.offer(&shared);
        }
    }
    drop(visibility);
    let deadline = Instant::now() + SINKS_STOP;
    let threads: Vec<_> = sinks.into_iter().map(|s| (s.stats, s.thread)).collect();
    for (stats, t) in threads {
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            tracing::warn!(sink = %stats.name, spooled = stats.spool_records.load(Ordering::Relaxed),
                "analytics sink did not stop in time");
        }
    }
}
