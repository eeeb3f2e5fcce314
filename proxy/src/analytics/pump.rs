//! The analytics pump: one control-plane thread that takes the workers' record batches off the
//! queue and writes them to the configured sink, then gives the buffers back for reuse.
//!
//! Sinks: `file` (JSON lines, appended into disk blocks reserved ahead; rotated to `<path>.1` ..
//! `<path>.<keep>` when it would pass `rotate_mb`; a batch is written whole, so rotation never
//! splits a record) and `stdout`. A write that fails drops that batch (counted, logged at most
//! every 10 s) and the file is opened again for the next one. Must not: run on a worker, or hold
//! records back once written (each batch is one `write` to the file, no user-space buffering).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{AnalyticsConfig, AnalyticsSink};

use super::{Batch, PumpEnds};

/// What the pump has done, read by `/metrics`.
#[derive(Debug, Default)]
pub struct PumpStats {
    /// Records written to the sink.
    pub written: AtomicU64,
    pub bytes: AtomicU64,
    /// Records lost because the sink failed.
    pub sink_dropped: AtomicU64,
    pub sink_errors: AtomicU64,
    pub rotations: AtomicU64,
}

/// The sink could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("[analytics] path {}: {source} (set [analytics] path to a writable file, or enabled = false)", .path.display())]
pub struct SinkError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

enum Sink {
    File(FileSink),
    Stdout,
}

impl Sink {
    fn open(cfg: &AnalyticsConfig) -> Result<Sink, SinkError> {
        match cfg.sink {
            AnalyticsSink::Stdout => Ok(Sink::Stdout),
            AnalyticsSink::File => FileSink::open(&cfg.path, cfg.rotate_mb.saturating_mul(1 << 20), cfg.keep)
                .map(Sink::File)
                .map_err(|source| SinkError { path: cfg.path.clone(), source }),
        }
    }

    fn write(&mut self, bytes: &[u8], stats: &PumpStats) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::File(f) => f.write(bytes, stats),
        }
    }
}

/// An append-only JSON lines file with size-based rotation. Public for the benchmark
/// (`cargo bench -p portcullis-bench --bench record`); the pump is its only user in the proxy.
pub struct FileSink {
    path: PathBuf,
    file: File,
    size: u64,
    /// 0 = never rotate.
    rotate_bytes: u64,
    keep: usize,
    /// Bytes from the start of the file that have disk blocks reserved (see [`PREALLOC_BYTES`]);
    /// at least `size` while `prealloc` holds.
    reserved: u64,
    /// Reserving blocks ahead works on this file system (cleared when `fallocate` fails).
    prealloc: bool,
}

/// Disk blocks are reserved this far ahead of the file's end, with `fallocate(2)` and
/// `FALLOC_FL_KEEP_SIZE` (the file's size, all that readers see, still grows only by what was
/// written). Appending into reserved blocks spares the file system its block allocation on every
/// page written: appending batches as workers hand them over (64.5 KiB of whole records) to ext4
/// (kernel 6.18) took 311-450 us of CPU per MiB written, 231-267 us with blocks reserved 8 MiB
/// ahead; criterion `record/file_append_batch_*` 23.2 against 28.8 us per batch
/// (docs/decisions/0018-request-records.md). The reservation past the last record is given back (the file
/// truncated to its size) when the file is rotated or closed, and when it is opened after a crash.
const PREALLOC_BYTES: u64 = 8 << 20;

impl FileSink {
    /// Opens (creating it and its directory) the file at `path` for appending; `rotate_bytes` 0
    /// never rotates.
    pub fn open(path: &Path, rotate_bytes: u64, keep: usize) -> std::io::Result<FileSink> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let meta = file.metadata()?;
        let size = meta.len();
        // A reservation a process did not get to give back (or, on a large file, the file
        // system's own index blocks: then giving it back changes nothing).
        let reserved = size + blocks_past_end(&meta);
        let mut sink = FileSink { path: path.to_path_buf(), file, size, rotate_bytes, keep, reserved, prealloc: true };
        sink.release();
        Ok(sink)
    }

    /// Appends `bytes` (whole records), rotating first if they would pass the rotation size.
    pub fn write(&mut self, bytes: &[u8], stats: &PumpStats) -> std::io::Result<()> {
        if self.rotate_bytes > 0 && self.size > 0 && self.size + bytes.len() as u64 > self.rotate_bytes {
            self.rotate()?;
            stats.rotations.fetch_add(1, Ordering::Relaxed);
        }
        self.reserve(bytes.len() as u64);
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// When the next `len` bytes are not all reserved yet, reserves the next [`PREALLOC_BYTES`]
    /// (at least `len`; not past the rotation size). Failing is not an error: the write
    /// allocates as it goes, as without a reservation.
    fn reserve(&mut self, len: u64) {
        let need = self.size + len;
        if !self.prealloc || need <= self.reserved {
            return;
        }
        let mut end = self.size + len.max(PREALLOC_BYTES);
        if self.rotate_bytes > 0 {
            end = end.min(self.rotate_bytes.max(need));
        }
        let (Ok(offset), Ok(span)) = (libc::off_t::try_from(self.size), libc::off_t::try_from(end - self.size)) else {
            return;
        };
        // SAFETY: fallocate only reads its integer arguments; the descriptor is this file's own.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, span) };
        if r == 0 {
            self.reserved = end;
        } else {
            self.prealloc = false;
            tracing::debug!(path = %self.path.display(), error = %std::io::Error::last_os_error(),
                "analytics: cannot reserve blocks ahead; appending without");
        }
    }

    /// Gives back the blocks reserved past the file's end: truncates the file to the length it
    /// has now, which is `size` unless something else shortened it (logrotate's `copytruncate`;
    /// truncating to `size` would then pad the file with zeros). Failing loses no record, so it
    /// is logged, not returned.
    fn release(&mut self) {
        if self.reserved > self.size {
            if let Err(e) = self.file.metadata().and_then(|m| self.file.set_len(m.len())) {
                tracing::warn!(path = %self.path.display(), error = %e,
                    "analytics: cannot give back the blocks reserved past the end");
            }
            self.reserved = self.size;
        }
    }

    /// `path.(keep-1)` -> `path.keep`, ..., `path` -> `path.1`, then a new empty `path`.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.release();
        let numbered = |i: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for i in (1..self.keep).rev() {
                let from = numbered(i);
                if from.exists() {
                    std::fs::rename(&from, numbered(i + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        *self = FileSink::open(&self.path, self.rotate_bytes, self.keep)?;
        Ok(())
    }
}

/// Bytes of disk blocks a file holds beyond what its size needs.
fn blocks_past_end(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    (meta.blocks() * 512).saturating_sub(meta.len().next_multiple_of(meta.blksize().max(512)))
}

impl Drop for FileSink {
    fn drop(&mut self) {
        self.release();
    }
}

/// Starts the pump thread. With analytics enabled the sink is opened now, so a path that cannot
/// be written stops startup with an error naming it; otherwise it is opened when the first batch
/// arrives (analytics enabled by a reload). The thread ends once every worker's [`super::Feed`]
/// is gone and the queue is empty.
pub fn spawn(cfg: &AnalyticsConfig, ends: PumpEnds, stats: Arc<PumpStats>) -> Result<JoinHandle<()>, SinkError> {
    let mut sink = if cfg.enabled { Some(Sink::open(cfg)?) } else { None };
    if let Some(Sink::File(f)) = &sink {
        tracing::info!(path = %f.path.display(), "analytics: writing request records");
    }
    let cfg = cfg.clone();
    std::thread::Builder::new()
        .name("portcullis-analytics".into())
        .spawn(move || {
            let mut last_error_log: Option<Instant> = None;
            while let Ok(batch) = ends.batches.recv() {
                let Batch { mut bytes, records } = batch;
                let result = match &mut sink {
                    Some(s) => s.write(&bytes, &stats),
                    None => Sink::open(&cfg).map_err(|e| std::io::Error::other(e.to_string())).and_then(|mut s| {
                        let r = s.write(&bytes, &stats);
                        sink = Some(s);
                        r
                    }),
                };
                match result {
                    Ok(()) => {
                        stats.written.fetch_add(records, Ordering::Relaxed);
                        stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.sink_errors.fetch_add(1, Ordering::Relaxed);
                        stats.sink_dropped.fetch_add(records, Ordering::Relaxed);
                        if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                            tracing::error!(error = %e, records, "analytics sink write failed; records dropped");
                            last_error_log = Some(Instant::now());
                        }
                        // Open the sink again for the next batch (the file may have been removed).
                        sink = None;
                    }
                }
                bytes.clear();
                let _ = ends.spare.try_send(bytes);
            }
        })
        .map_err(|source| SinkError { path: PathBuf::from("(analytics thread)"), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, rotate_mb: u64, keep: usize) -> AnalyticsConfig {
        AnalyticsConfig { enabled: true, path: dir.join("sub/records.jsonl"), rotate_mb, keep, ..Default::default() }
    }

    fn batch(line: &str, n: usize) -> Batch {
        Batch { bytes: line.repeat(n).into_bytes(), records: n as u64 }
    }

    #[test]
    fn writes_every_batch_and_stops_when_the_workers_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (feed, ends) = super::super::channels(1, 4);
        let stats = Arc::new(PumpStats::default());
        let t = spawn(&cfg(dir.path(), 0, 1), ends, Arc::clone(&stats)).unwrap();
        for i in 0..10 {
            feed.tx.send(batch(&format!("{{\"i\":{i}}}\n"), 3)).unwrap();
        }
        drop(feed);
        t.join().unwrap();
        let text = std::fs::read_to_string(dir.path().join("sub/records.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 30);
        assert_eq!(stats.written.load(Ordering::Relaxed), 30);
        assert_eq!(stats.sink_errors.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn rotates_whole_batches_and_keeps_at_most_keep_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut f = FileSink::open(&path, 1000, 2).unwrap();
        let stats = PumpStats::default();
        let line = format!("{}\n", "x".repeat(99)); // 100 bytes
        for _ in 0..35 {
            f.write(line.repeat(3).as_bytes(), &stats).unwrap(); // 300-byte batches
        }
        // 3 batches (900 bytes) fit per file: 35 batches -> 12 files made, 11 rotations.
        assert_eq!(stats.rotations.load(Ordering::Relaxed), 11);
        for p in [path.clone(), dir.path().join("r.jsonl.1"), dir.path().join("r.jsonl.2")] {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.len() <= 1000 && text.len() % 100 == 0, "{}: {}", p.display(), text.len());
            assert!(text.lines().all(|l| l.len() == 99));
        }
        assert!(!dir.path().join("r.jsonl.3").exists());
        assert_eq!(std::fs::read_to_string(&path).unwrap().len(), 2 * 300);
    }

    fn reserved_past_end(path: &Path) -> u64 {
        blocks_past_end(&std::fs::metadata(path).unwrap())
    }

    #[test]
    fn blocks_are_reserved_ahead_and_given_back_at_rotation_and_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let stats = PumpStats::default();
        let mut f = FileSink::open(&path, 64 << 20, 1).unwrap();
        f.write(b"{}\n", &stats).unwrap();
        if !f.prealloc {
            eprintln!("skipped: the file system under {} cannot reserve blocks (fallocate)", dir.path().display());
            return;
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3, "the size is only what was written");
        assert!(reserved_past_end(&path) >= PREALLOC_BYTES / 2, "{}", reserved_past_end(&path));
        assert_eq!(f.reserved, PREALLOC_BYTES);
        // Rotation gives the rotated file's reservation back.
        f.rotate_bytes = 4;
        f.write(b"{}\n", &stats).unwrap();
        let rotated = dir.path().join("r.jsonl.1");
        assert_eq!(std::fs::read(&rotated).unwrap(), b"{}\n");
        assert_eq!(reserved_past_end(&rotated), 0);
        // Never past the rotation size.
        assert_eq!(f.reserved, 4);
        f.rotate_bytes = 64 << 20;
        f.write(b"{}\n", &stats).unwrap();
        assert!(reserved_past_end(&path) > 0);
        drop(f);
        assert_eq!(reserved_past_end(&path), 0, "closing gives the reservation back");
        assert_eq!(std::fs::read(&path).unwrap(), b"{}\n{}\n");
    }

    #[test]
    fn a_file_truncated_under_the_sink_is_not_padded_when_the_reservation_is_given_back() {
        // logrotate's copytruncate empties the file while the proxy holds it open.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let stats = PumpStats::default();
        let mut f = FileSink::open(&path, 0, 1).unwrap();
        f.write(b"{\"a\":1}\n", &stats).unwrap();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        f.write(b"{\"a\":2}\n", &stats).unwrap();
        drop(f);
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":2}\n");
        assert_eq!(reserved_past_end(&path), 0);
    }

    #[test]
    fn a_reservation_left_by_a_crash_is_given_back_when_the_file_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut f = FileSink::open(&path, 0, 1).unwrap();
        f.write(b"{}\n", &PumpStats::default()).unwrap();
        if !f.prealloc {
            eprintln!("skipped: the file system under {} cannot reserve blocks (fallocate)", dir.path().display());
            return;
        }
        std::mem::forget(f); // as if the process died: nothing given back
        assert!(reserved_past_end(&path) > 0);
        let f = FileSink::open(&path, 0, 1).unwrap();
        assert_eq!(reserved_past_end(&path), 0);
        assert_eq!(f.size, 3);
        assert_eq!(std::fs::read(&path).unwrap(), b"{}\n");
    }

    #[test]
    fn unwritable_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let c = AnalyticsConfig { enabled: true, path: file.join("records.jsonl"), ..Default::default() };
        let (_feed, ends) = super::super::channels(1, 1);
        let e = spawn(&c, ends, Arc::new(PumpStats::default())).unwrap_err();
        assert!(e.to_string().contains("plain-file/records.jsonl"), "{e}");
    }

    #[test]
    fn a_failed_write_is_counted_and_the_file_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 0, 1);
        let (feed, ends) = super::super::channels(1, 4);
        let stats = Arc::new(PumpStats::default());
        let t = spawn(&c, ends, Arc::clone(&stats)).unwrap();
        feed.tx.send(batch("{}\n", 2)).unwrap();
        // The first pump wrote; a second one, started with analytics disabled, opens the sink
        // lazily, and that fails because a plain file now stands where its directory was.
        let deadline = Instant::now() + Duration::from_secs(5);
        while stats.written.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(feed);
        t.join().unwrap();
        assert_eq!(stats.written.load(Ordering::Relaxed), 2);

        std::fs::remove_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub"), "not a directory").unwrap();
        let c2 = AnalyticsConfig { enabled: false, ..c };
        let (feed, ends) = super::super::channels(1, 4);
        let stats = Arc::new(PumpStats::default());
        let t = spawn(&c2, ends, Arc::clone(&stats)).unwrap();
        feed.tx.send(batch("{}\n", 5)).unwrap();
        drop(feed);
        t.join().unwrap();
        assert_eq!(stats.sink_errors.load(Ordering::Relaxed), 1);
        assert_eq!(stats.sink_dropped.load(Ordering::Relaxed), 5);
        assert_eq!(stats.written.load(Ordering::Relaxed), 0);
    }
}
