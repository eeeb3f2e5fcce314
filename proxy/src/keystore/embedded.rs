//! The embedded key store: every session in memory, persisted to one JSON file
//! (`{"version": 1, "keys": {"<sha256 hex>": session}}`) that is rewritten atomically (write to
//! a temporary file in the same directory, fsync, rename, fsync the directory) on each change,
//! so a crash leaves either the old or the new file, never a torn one. Must not: store keys in
//! plain text (only their hashes are written).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::auth::{hex, parse_hex, KeyHash};
use crate::config::TykSession;

use super::StoreError;

#[derive(Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    keys: BTreeMap<String, TykSession>,
}

pub struct EmbeddedStore {
    path: PathBuf,
    keys: Mutex<BTreeMap<KeyHash, TykSession>>,
}

impl EmbeddedStore {
    /// Opens (or starts) the store at `path`. A missing file is an empty store; an unreadable
    /// or invalid one is an error naming the file (the proxy must not start and then overwrite
    /// it with an empty store).
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        let keys = match std::fs::read(path) {
            Ok(bytes) => {
                let f: FileFormat = serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt { path: path.into(), message: e.to_string() })?;
                let mut keys = BTreeMap::new();
                for (h, s) in f.keys {
                    let hash = parse_hex(&h).ok_or_else(|| StoreError::Corrupt {
                        path: path.into(),
                        message: format!("{h:?} is not a SHA-256 hex key hash"),
                    })?;
                    if let Some(p) = s.rate_problems().into_iter().next() {
                        return Err(StoreError::Corrupt {
                            path: path.into(),
                            message: format!("key {h}: field `{}` = {}: {}", p.field, p.value, p.message),
                        });
                    }
                    keys.insert(hash, s);
                }
                keys
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(StoreError::File { path: path.into(), source }),
        };
        Ok(EmbeddedStore { path: path.into(), keys: Mutex::new(keys) })
    }

    pub fn get(&self, hash: &KeyHash) -> Option<TykSession> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).get(hash).cloned()
    }

    pub fn hashes(&self) -> Vec<KeyHash> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect()
    }

    pub fn put(&self, hash: &KeyHash, session: &TykSession) -> Result<(), StoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let old = keys.insert(*hash, session.clone());
        if let Err(e) = self.persist(&keys) {
            // Keep memory and disk in agreement: undo.
            match old {
                Some(o) => keys.insert(*hash, o),
                None => keys.remove(hash),
            };
            return Err(e);
        }
        Ok(())
    }

    pub fn delete(&self, hash: &KeyHash) -> Result<bool, StoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let Some(old) = keys.remove(hash) else {
            return Ok(false);
        };
        if let Err(e) = self.persist(&keys) {
            keys.insert(*hash, old);
            return Err(e);
        }
        Ok(true)
    }

    fn persist(&self, keys: &BTreeMap<KeyHash, TykSession>) -> Result<(), StoreError> {
        let f = FileFormat { version: 1, keys: keys.iter().map(|(h, s)| (hex(h), s.clone())).collect() };
        let bytes = serde_json::to_vec_pretty(&f)
            .map_err(|e| StoreError::File { path: self.path.clone(), source: std::io::Error::other(e) })?;
        write_atomic(&self.path, &bytes)
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename,
/// fsync of the directory. (Also the admin API's writes of definition files.)
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let file_err = |source| StoreError::File { path: path.to_path_buf(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(file_err)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "store".into());
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut out = std::fs::File::create(&tmp).map_err(file_err)?;
        out.write_all(bytes).map_err(file_err)?;
        out.sync_all().map_err(file_err)?;
    }
    std::fs::rename(&tmp, path).map_err(file_err)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash_key;

    #[test]
    fn survives_reopen_and_stores_only_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/keys.json");
        let s = EmbeddedStore::open(&path).unwrap();
        let h = hash_key("secret-key-123");
        // Fields Portcullis does not use are written back as they came.
        let stored: TykSession = serde_json::from_str(
            r#"{"rate": 7, "per": 1, "throttle_interval": -1, "monitor": {"trigger_limits": [80.0]},
                "access_rights": {"a": {"api_id": "a", "limit": {"rate": 5, "per": 1, "smoothing": null}}}}"#,
        )
        .unwrap();
        s.put(&h, &stored).unwrap();
        s.put(&hash_key("other"), &TykSession::default()).unwrap();
        assert!(s.delete(&hash_key("other")).unwrap());
        assert!(!s.delete(&hash_key("other")).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("secret-key-123"));
        assert!(text.contains(&hex(&h)));
        let s2 = EmbeddedStore::open(&path).unwrap();
        assert_eq!(s2.get(&h).unwrap(), stored);
        assert_eq!(s2.hashes().len(), 1);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = EmbeddedStore::open(&path).err().unwrap().to_string();
        assert!(e.contains("keys.json"), "{e}");
    }

    #[test]
    fn a_key_with_a_meaningless_rate_is_an_error_naming_key_field_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let h = hex(&hash_key("k"));
        std::fs::write(&path, format!(r#"{{"version": 1, "keys": {{"{h}": {{"rate": 10, "per": 0}}}}}}"#)).unwrap();
        let e = EmbeddedStore::open(&path).err().unwrap().to_string();
        assert!(e.contains("keys.json") && e.contains(&h) && e.contains("`per` = 0"), "{e}");
        std::fs::write(&path, format!(r#"{{"version": 1, "keys": {{"{h}": {{"rate": -5, "per": 1}}}}}}"#)).unwrap();
        let e = EmbeddedStore::open(&path).err().unwrap().to_string();
        assert!(e.contains("`rate` = -5"), "{e}");
        // Tyk's "no rate limit" is kept.
        std::fs::write(&path, format!(r#"{{"version": 1, "keys": {{"{h}": {{"rate": -1, "per": 0}}}}}}"#)).unwrap();
        assert!(EmbeddedStore::open(&path).is_ok());
    }
}
