//! A sink's spool: the batches it could not deliver yet, on disk, oldest first, bounded in
//! bytes. One file per batch, named `<sequence>-<records>.jsonl` (so opening it needs no read),
//! written to a `.tmp` name and renamed, so a crash never leaves half a batch under a spool name.
//! The files are the records' JSON lines as the workers wrote them: `jq` reads a spool.
//!
//! Survives a restart (the next start replays it first) but not a power cut: the files are not
//! fsynced (a sync per batch would cost the analytics thread more than the records do).
//! Must not: reorder batches, grow past its bound, or lose a batch it accepted.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    bytes: u64,
    records: u64,
    /// (sequence, bytes, records), oldest first.
    files: VecDeque<(u64, u64, u64)>,
    next: u64,
}

impl Spool {
    /// Opens (creating it) the spool in `dir`, taking up what a previous run left there.
    /// `max_bytes` 0: a spool that keeps nothing.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some((seq, records)) = name.strip_suffix(".jsonl").and_then(|n| n.split_once('-')) else { continue };
            let (Ok(seq), Ok(records)) = (seq.parse::<u64>(), records.parse::<u64>()) else { continue };
            files.push((seq, entry.metadata()?.len(), records));
        }
        files.sort_unstable();
        let next = files.last().map_or(0, |f| f.0 + 1);
        let bytes = files.iter().map(|f| f.1).sum();
        let records = files.iter().map(|f| f.2).sum();
        Ok(Spool { dir: dir.to_path_buf(), max_bytes, bytes, records, files: files.into(), next })
    }

    fn path(&self, seq: u64, records: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}-{records}.jsonl"))
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Records in the oldest batch.
    pub fn front_records(&self) -> u64 {
        self.files.front().map_or(0, |f| f.2)
    }

    /// Appends a batch. `Ok(false)`: it does not fit under the bound (the caller drops and
    /// counts it).
    pub fn push(&mut self, batch: &[u8], records: u64) -> std::io::Result<bool> {
        let len = batch.len() as u64;
        if self.bytes + len > self.max_bytes {
            return Ok(false);
        }
        let path = self.path(self.next, records);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(batch).and_then(|()| std::fs::rename(&tmp, &path)).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        self.files.push_back((self.next, len, records));
        self.next += 1;
        self.bytes += len;
        self.records += records;
        Ok(true)
    }

    /// The `n` oldest batches joined, and their record count.
    pub fn read_front(&self, n: usize) -> std::io::Result<Option<(Vec<u8>, u64)>> {
        if self.files.is_empty() {
            return Ok(None);
        }
        let (mut bytes, mut records) = (Vec::new(), 0);
        for &(seq, _, r) in self.files.iter().take(n.max(1)) {
            let mut f = std::fs::File::open(self.path(seq, r))?;
            std::io::Read::read_to_end(&mut f, &mut bytes)?;
            records += r;
        }
        Ok(Some((bytes, records)))
    }

    /// How many of the oldest batches fit in `bytes` together (at least one, if there is one).
    pub fn batches_within(&self, bytes: usize) -> usize {
        let mut total = 0u64;
        let n = self.files.iter().take_while(|f| {
            total += f.1;
            total <= bytes as u64
        });
        n.count().max(1).min(self.files.len())
    }

    /// Forgets the oldest batch (delivered).
    pub fn pop(&mut self) -> std::io::Result<()> {
        let Some((seq, len, records)) = self.files.pop_front() else { return Ok(()) };
        self.bytes -= len;
        self.records -= records;
        match std::fs::remove_file(self.path(seq, records)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_bound_and_contents_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 100).unwrap();
        assert!(s.is_empty());
        for i in 0..4 {
            assert!(s.push(format!("{{\"i\":{i}}}\n").repeat(2).as_bytes(), 2).unwrap());
        }
        // 4 x 16 bytes; a fifth 48-byte batch would pass 100.
        assert_eq!((s.bytes(), s.records()), (64, 8));
        assert!(!s.push(&[b'x'; 48], 1).unwrap());
        assert_eq!((s.bytes(), s.records()), (64, 8));
        assert_eq!(s.read_front(1).unwrap().unwrap(), (b"{\"i\":0}\n{\"i\":0}\n".to_vec(), 2));
        s.pop().unwrap();
        // A half-written file from a crash is not taken for a batch.
        std::fs::write(dir.path().join("00000000000000000009-1.tmp"), "{").unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 100).unwrap();
        assert_eq!((s.bytes(), s.records()), (48, 6));
        assert!(s.push(b"{\"i\":4}\n", 1).unwrap());
        let mut seen = Vec::new();
        while let Some((b, _)) = s.read_front(1).unwrap() {
            seen.push(String::from_utf8(b).unwrap().lines().next().unwrap().to_string());
            s.pop().unwrap();
        }
        assert_eq!(seen, ["{\"i\":1}", "{\"i\":2}", "{\"i\":3}", "{\"i\":4}"]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_zero_bound_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 0).unwrap();
        assert!(!s.push(b"{}\n", 1).unwrap());
        assert!(s.is_empty());
    }
}
