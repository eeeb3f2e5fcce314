//! The `file` and `stdout` sinks: the records' JSON lines as the workers wrote them.
//!
//! `file` appends into disk blocks reserved ahead and rotates to `<path>.1` .. `<path>.<keep>`
//! when it would pass `rotate_mb`; a batch is written whole, so rotation never splits a record.
//! A write that fails is the sink's failure (the batch is spooled and written again), and the
//! file is opened again for the next one. Each batch is one `write`: nothing is held back in
//! user space.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Sink, SinkFailure, SinkStats};

/// `file`: the JSON lines file, opened again after a failed write.
pub(super) struct FileOut {
    path: PathBuf,
    rotate_bytes: u64,
    keep: usize,
    file: Option<FileSink>,
    stats: Arc<SinkStats>,
}

impl FileOut {
    /// Opens the file now, so a path that cannot be written stops startup naming it.
    pub(super) fn open(path: &Path, rotate_mb: u64, keep: usize, stats: Arc<SinkStats>) -> std::io::Result<FileOut> {
        let rotate_bytes = rotate_mb.saturating_mul(1 << 20);
        let file = FileSink::open(path, rotate_bytes, keep)?;
        tracing::info!(path = %path.display(), "analytics: writing request records");
        Ok(FileOut { path: path.to_path_buf(), rotate_bytes, keep, file: Some(file), stats })
    }
}

impl Sink for FileOut {
    fn send(&mut self, batch: &[u8]) -> Result<(), SinkFailure> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(
                FileSink::open(&self.path, self.rotate_bytes, self.keep)
                    .map_err(|e| SinkFailure(format!("{}: {e}", self.path.display())))?,
            ),
        };
        file.write(batch, &self.stats.rotations).map_err(|e| {
            // Open it again for the next batch (the file may have been removed).
            self.file = None;
            SinkFailure(format!("{}: {e}", self.path.display()))
        })
    }
}

/// `stdout`.
pub(super) struct Stdout;

impl Sink for Stdout {
    fn send(&mut self, batch: &[u8]) -> Result<(), SinkFailure> {
        let mut out = std::io::stdout().lock();
        out.write_all(batch).and_then(|()| out.flush()).map_err(|e| SinkFailure(format!("stdout: {e}")))
    }
}

/// An append-only JSON lines file with size-based rotation. Public for the benchmark
/// (`cargo bench -p portcullis-bench --bench record`).
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
    pub fn write(&mut self, bytes: &[u8], rotations: &AtomicU64) -> std::io::Result<()> {
        if self.rotate_bytes > 0 && self.size > 0 && self.size + bytes.len() as u64 > self.rotate_bytes {
            self.rotate()?;
            rotations.fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reserved_past_end(path: &Path) -> u64 {
        blocks_past_end(&std::fs::metadata(path).unwrap())
    }

    #[test]
    fn rotates_whole_batches_and_keeps_at_most_keep_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut f = FileSink::open(&path, 1000, 2).unwrap();
        let stats = AtomicU64::new(0);
        let line = format!("{}\n", "x".repeat(99)); // 100 bytes
        for _ in 0..35 {
            f.write(line.repeat(3).as_bytes(), &stats).unwrap(); // 300-byte batches
        }
        // 3 batches (900 bytes) fit per file: 35 batches -> 12 files made, 11 rotations.
        assert_eq!(stats.load(Ordering::Relaxed), 11);
        for p in [path.clone(), dir.path().join("r.jsonl.1"), dir.path().join("r.jsonl.2")] {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.len() <= 1000 && text.len() % 100 == 0, "{}: {}", p.display(), text.len());
            assert!(text.lines().all(|l| l.len() == 99));
        }
        assert!(!dir.path().join("r.jsonl.3").exists());
        assert_eq!(std::fs::read_to_string(&path).unwrap().len(), 2 * 300);
    }

    #[test]
    fn blocks_are_reserved_ahead_and_given_back_at_rotation_and_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let stats = AtomicU64::new(0);
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
        let stats = AtomicU64::new(0);
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
        f.write(b"{}\n", &AtomicU64::new(0)).unwrap();
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
}
