//! Each API's visibility state: its inventory (`portcullis_visibility::inventory`) and its
//! findings against the provided document, with counts, first and last seen, and one redacted
//! example exchange each. Written by the visibility thread, read by the admin API, both under
//! one mutex held for one batch or one answer; kept on disk as `<state_dir>/<api_id>.json`
//! (written atomically every 10 s when changed, and at shutdown) and read back at startup.
//!
//! Findings were judged against one version of the provided document: when the document
//! changes (its hash differs from the one the findings carry), that API's findings start over.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use portcullis_visibility::inventory::Inventory;
use serde::{Deserialize, Serialize};

/// Most findings kept per API; more are counted (`capped{reason="findings"}`) and not listed.
pub const MAX_FINDINGS: usize = 1000;

/// Most bytes of an example's request or response text.
pub const MAX_EXAMPLE_BYTES: usize = 4096;

/// What a finding is about.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "UPPERCASE")]
pub enum FindingKind {
    /// The path or method is not in the provided document.
    Shadow,
    /// A `deprecated: true` operation is in use.
    Zombie,
    /// An exchange differs from its documented operation.
    Drift,
}

impl FindingKind {
    pub fn label(self) -> &'static str {
        match self {
            FindingKind::Shadow => "shadow",
            FindingKind::Zombie => "zombie",
            FindingKind::Drift => "drift",
        }
    }
}

/// One difference a drift finding is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DriftDetail {
    /// `undocumented_status`, `response_field_type`, ... (docs/visibility.md).
    pub kind: String,
    /// Where: `response 200 body /items/*/id`, `query limit`, ...
    pub location: String,
    pub detail: String,
}

/// An exchange a finding was seen in, credentials redacted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Example {
    pub method: String,
    /// The path below the listen path.
    pub path: String,
    pub status: u16,
    /// The request as sent (head and body, bounded), when the exchange was sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The response as sent (head and body, bounded), when the exchange was sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

/// One finding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    pub method: String,
    /// The path template: the document's for zombie and drift, the inventory's for shadow.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftDetail>,
    pub count: u64,
    pub first_seen: u64,
    pub last_seen: u64,
    pub example: Example,
}

/// One API's state, as kept on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiState {
    pub inventory: Inventory,
    /// By key (kind, method, path and drift).
    pub findings: BTreeMap<String, Finding>,
    /// Hash of the provided document the findings were judged against.
    pub spec_hash: Option<u64>,
    /// Guards that fired: `endpoints` (the cap), `cardinality`, `findings`.
    pub capped: BTreeMap<String, u64>,
}

impl ApiState {
    /// Counts one more occurrence of the finding `key`, making it with `make` the first time.
    pub(crate) fn note(&mut self, key: String, now: u64, make: impl FnOnce() -> Finding) -> Option<&mut Finding> {
        if !self.findings.contains_key(&key) && self.findings.len() >= MAX_FINDINGS {
            *self.capped.entry("findings".into()).or_default() += 1;
            return None;
        }
        let f = self.findings.entry(key).or_insert_with(|| {
            let mut f = make();
            f.count = 0;
            f.first_seen = now;
            f
        });
        f.count += 1;
        f.last_seen = now;
        Some(f)
    }

    /// Findings counted by kind.
    pub fn totals(&self) -> BTreeMap<FindingKind, u64> {
        let mut t = BTreeMap::new();
        for f in self.findings.values() {
            *t.entry(f.kind).or_default() += f.count;
        }
        t
    }
}

/// One API's figures in `/metrics`.
pub struct ApiMetrics {
    pub api: String,
    /// Findings counted, by kind.
    pub findings: BTreeMap<FindingKind, u64>,
    /// Guards that fired, by reason.
    pub capped: BTreeMap<String, u64>,
    /// Endpoints in the inventory.
    pub endpoints: usize,
}

/// Counters of the visibility thread, for `/metrics`.
#[derive(Debug, Default)]
pub struct VisibilityStats {
    /// Records read.
    pub records: AtomicU64,
    /// Sampled exchanges read.
    pub samples: AtomicU64,
    /// Batches the analytics thread could not hand over (the queue was full).
    pub batches_dropped: AtomicU64,
    /// State files that could not be written.
    pub save_errors: AtomicU64,
}

/// Every API's state, shared by the visibility thread and the admin API.
pub struct VisibilityState {
    apis: Mutex<Apis>,
    dir: PathBuf,
    pub stats: VisibilityStats,
}

#[derive(Default)]
pub(crate) struct Apis {
    pub(crate) by_id: HashMap<String, ApiState>,
    pub(crate) dirty: HashSet<String>,
}

impl VisibilityState {
    /// The state kept in `dir` (created if missing); a file that cannot be read is logged and
    /// that API starts over.
    pub fn open(dir: &Path) -> Self {
        let mut apis = Apis::default();
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "visibility state directory cannot be made");
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let path = e.path();
                let Some(id) = state_file_id(&path) else { continue };
                match std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<ApiState>(&b).map_err(|e| e.to_string()))
                {
                    Ok(s) => {
                        apis.by_id.insert(id, s);
                    }
                    Err(error) => {
                        tracing::warn!(file = %path.display(), %error, "visibility state not read: starts over")
                    }
                }
            }
        }
        VisibilityState { apis: Mutex::new(apis), dir: dir.to_path_buf(), stats: VisibilityStats::default() }
    }

    /// Runs `f` on every API's state (the visibility thread, once per batch).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Apis) -> R) -> R {
        let mut g = self.apis.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Runs `f` on one API's state, if it has any (the admin API).
    pub fn read<R>(&self, api_id: &str, f: impl FnOnce(&ApiState) -> R) -> Option<R> {
        let g = self.apis.lock().unwrap_or_else(|e| e.into_inner());
        g.by_id.get(api_id).map(f)
    }

    /// Every API's finding totals and caps, for `/metrics`.
    pub fn metrics(&self) -> Vec<ApiMetrics> {
        let g = self.apis.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = g
            .by_id
            .iter()
            .map(|(id, s)| ApiMetrics {
                api: id.clone(),
                findings: s.totals(),
                capped: s.capped.clone(),
                endpoints: s.inventory.endpoint_count(),
            })
            .collect();
        out.sort_by(|a, b| a.api.cmp(&b.api));
        out
    }

    /// Forgets an API's findings (its document changed or went).
    pub fn clear_findings(&self, api_id: &str) {
        self.with(|a| {
            if let Some(s) = a.by_id.get_mut(api_id) {
                s.findings.clear();
                s.spec_hash = None;
                a.dirty.insert(api_id.to_string());
            }
        });
    }

    /// Writes the state of every API changed since the last save (each file written whole to a
    /// temporary name, then renamed over the old one).
    pub fn save(&self) {
        let files: Vec<(String, Vec<u8>)> = self.with(|a| {
            let dirty: Vec<String> = a.dirty.drain().collect();
            dirty.into_iter().filter_map(|id| Some((id.clone(), serde_json::to_vec(a.by_id.get(&id)?).ok()?))).collect()
        });
        for (id, bytes) in files {
            let Some(path) = self.file_of(&id) else { continue };
            let tmp = path.with_extension("json.tmp");
            let r = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(error) = r {
                self.stats.save_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(file = %path.display(), %error, "visibility state not saved");
            }
        }
    }

    /// `<dir>/<api_id>.json`, for ids that are safe as a file name.
    fn file_of(&self, api_id: &str) -> Option<PathBuf> {
        crate::config::is_safe_id(api_id).then(|| self.dir.join(format!("{api_id}.json")))
    }
}

fn state_file_id(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let id = name.strip_suffix(".json")?;
    crate::config::is_safe_id(id).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(kind: FindingKind) -> Finding {
        Finding {
            kind,
            method: "GET".into(),
            path: "/x".into(),
            drift: None,
            count: 0,
            first_seen: 0,
            last_seen: 0,
            example: Example::default(),
        }
    }

    #[test]
    fn findings_count_first_and_last_seen_and_are_bounded() {
        let mut s = ApiState::default();
        s.note("a".into(), 10, || finding(FindingKind::Shadow));
        let f = s.note("a".into(), 20, || finding(FindingKind::Shadow)).unwrap();
        assert_eq!((f.count, f.first_seen, f.last_seen), (2, 10, 20));
        for i in 0..MAX_FINDINGS + 5 {
            s.note(format!("k{i}"), 30, || finding(FindingKind::Drift));
        }
        assert_eq!(s.findings.len(), MAX_FINDINGS);
        assert_eq!(s.capped["findings"], 6);
        assert_eq!(s.totals()[&FindingKind::Shadow], 2);
    }

    #[test]
    fn state_survives_a_save_and_open() {
        let dir = tempfile::tempdir().unwrap();
        let st = VisibilityState::open(dir.path());
        st.with(|a| {
            let s = a.by_id.entry("api1".into()).or_default();
            s.note("a".into(), 5, || finding(FindingKind::Zombie));
            a.dirty.insert("api1".into());
            // An id that is no file name is kept in memory only.
            a.by_id.entry("../x".into()).or_default();
            a.dirty.insert("../x".into());
        });
        st.save();
        std::fs::write(dir.path().join("broken.json"), b"{not json").unwrap();
        let again = VisibilityState::open(dir.path());
        assert_eq!(again.read("api1", |s| s.findings["a"].count), Some(1));
        assert_eq!(again.read("broken", |_| ()), None);
        assert!(!dir.path().join("..").join("x.json").exists());
    }
}
