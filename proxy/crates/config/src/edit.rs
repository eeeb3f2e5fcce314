//! Changes the admin API makes to the definition files (Tyk's `/tyk/apis` and `/tyk/policies`).
//!
//! [`plan`] says which one file a [`Change`] writes (or removes) and with what text;
//! [`load_snapshot_edited`](super::load_snapshot_edited) loads the snapshot as it would be after
//! that write, reading the files through [`Files`], so a change is checked by the same loader as
//! `portcullis check` and a reload before anything is written. Must not: write (the control
//! plane writes the file, atomically, once the change is accepted).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{Config, ConfigError, ReadError, Snapshot};

/// One change to the definitions, as the admin API asks for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Create or replace API definition `api_id`; `definition` is its JSON object (with that
    /// `api_id`).
    PutApi { api_id: String, definition: Value },
    /// Remove the loaded API definition `api_id`.
    DeleteApi { api_id: String },
    /// Create or replace policy `id`; `policy` is its JSON object.
    PutPolicy { id: String, policy: Value },
    /// Remove the loaded policy `id`.
    DeletePolicy { id: String },
    /// Provide (or replace) the OpenAPI document of loaded API `api_id` (API visibility):
    /// `text` is the document, JSON or YAML.
    PutSpec { api_id: String, text: String },
    /// Remove the provided OpenAPI document of loaded API `api_id`.
    DeleteSpec { api_id: String },
}

/// One file as a change leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEdit {
    pub path: PathBuf,
    /// The new text; `None`: the file is removed.
    pub text: Option<String>,
}

/// Why [`plan`] has no file to write.
#[derive(Debug)]
pub enum PlanError {
    /// The API or policy to remove is not loaded.
    NotLoaded,
    /// The change cannot be written where it would go (names the file and field).
    Refused(ConfigError),
}

/// Longest id the admin API writes as a file name (`<id>.json` within the usual 255 bytes).
pub const MAX_ID_BYTES: usize = 200;

/// Whether `id` is safe as a file name stem: `<id>.json` names a file in its directory and
/// nothing else (not empty, `.` or `..`, no `/`, `\`, or control characters, at most
/// [`MAX_ID_BYTES`]). Tyk refuses the same ids (`sanitize.ValidatePathComponent`).
pub fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id != "."
        && id != ".."
        && !id.chars().any(|c| c == '/' || c == '\\' || c.is_control())
}

/// The file `change` writes, given the configuration it applies to and the running snapshot
/// (which knows the file each loaded definition and policy came from):
/// - an API definition goes into the file it was loaded from (or refused from), else
///   `<apps.dir>/<api_id>.json` (Tyk's name for it);
/// - a policy, with `[apps] policies` a directory, into its file there, else `<dir>/<id>.json`;
///   with a policies file (Tyk's map `id -> policy`), the whole map is rewritten with the entry
///   replaced, added or removed.
///
/// Written JSON is pretty-printed (fields in alphabetical order).
pub fn plan(config: &Config, running: &Snapshot, change: &Change) -> Result<FileEdit, PlanError> {
    let unsafe_id = |field: &str, id: &str| {
        PlanError::Refused(ConfigError::new(&config.apps.dir, field, id, "is not a safe file name"))
    };
    match change {
        Change::PutApi { api_id, definition } => {
            if !is_safe_id(api_id) {
                return Err(unsafe_id("api_id", api_id));
            }
            let dir = config.apps.dir.as_path();
            let in_dir = |f: &str| Some(PathBuf::from(f)).filter(|p| p.parent() == Some(dir));
            let path = running
                .apis
                .iter()
                .find(|a| a.api_id == *api_id)
                .and_then(|a| in_dir(&a.file))
                .or_else(|| running.skipped.iter().find(|s| s.api_id == *api_id).and_then(|s| in_dir(&s.file)))
                .unwrap_or_else(|| dir.join(format!("{api_id}.json")));
            if path == config.apps.policies {
                return Err(PlanError::Refused(ConfigError::new(
                    &path,
                    "api_id",
                    api_id,
                    "this is the policies file ([apps] policies); choose another api_id",
                )));
            }
            Ok(FileEdit { path, text: Some(pretty(definition)) })
        }
        Change::DeleteApi { api_id } => {
            let api = running.apis.iter().find(|a| a.api_id == *api_id).ok_or(PlanError::NotLoaded)?;
            Ok(FileEdit { path: PathBuf::from(&api.file), text: None })
        }
        Change::PutPolicy { id, policy } => {
            let pol = config.apps.policies.as_path();
            if pol.is_dir() {
                if !is_safe_id(id) {
                    return Err(unsafe_id("id", id));
                }
                let path = running
                    .policy_sources
                    .get(id)
                    .map(|s| s.file.clone())
                    .filter(|f| f.parent() == Some(pol))
                    .unwrap_or_else(|| pol.join(format!("{id}.json")));
                return Ok(FileEdit { path, text: Some(pretty(policy)) });
            }
            let mut map = policy_map(pol)?;
            map.insert(id.clone(), policy.clone());
            Ok(FileEdit { path: pol.to_path_buf(), text: Some(pretty(&Value::Object(map))) })
        }
        Change::PutSpec { api_id, text } => {
            let api = running.apis.iter().find(|a| a.api_id == *api_id).ok_or(PlanError::NotLoaded)?;
            // Into the document file it has (a YAML one keeps YAML: JSON is YAML too), else
            // `<definition>.openapi.json`, whatever the document's format (YAML made JSON).
            let own = api
                .visibility
                .spec_file
                .clone()
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(super::visibility::is_spec_file));
            let path = own.unwrap_or_else(|| super::visibility::spec_candidates(Path::new(&api.file))[0].clone());
            let is_json = path.extension().is_some_and(|e| e == "json");
            let text = if is_json && serde_json::from_str::<Value>(text).is_err() {
                let doc: Value = serde_norway::from_str(text).map_err(|e| {
                    PlanError::Refused(ConfigError::new(&path, "", "", format!("not a JSON or YAML document: {e}")))
                })?;
                pretty(&doc)
            } else {
                text.clone()
            };
            Ok(FileEdit { path, text: Some(text) })
        }
        Change::DeleteSpec { api_id } => {
            let api = running.apis.iter().find(|a| a.api_id == *api_id).ok_or(PlanError::NotLoaded)?;
            let file = api.visibility.spec_file.clone().ok_or(PlanError::NotLoaded)?;
            if !file.file_name().and_then(|n| n.to_str()).is_some_and(super::visibility::is_spec_file) {
                return Err(PlanError::Refused(ConfigError::new(
                    &file,
                    "",
                    "",
                    "this document is the API's Tyk OAS definition; change it there",
                )));
            }
            Ok(FileEdit { path: file, text: None })
        }
        Change::DeletePolicy { id } => {
            let pol = config.apps.policies.as_path();
            if pol.is_dir() {
                let source = running.policy_sources.get(id).ok_or(PlanError::NotLoaded)?;
                return Ok(FileEdit { path: source.file.clone(), text: None });
            }
            let mut map = policy_map(pol)?;
            if map.remove(id).is_none() {
                return Err(PlanError::NotLoaded);
            }
            Ok(FileEdit { path: pol.to_path_buf(), text: Some(pretty(&Value::Object(map))) })
        }
    }
}

/// The policies file as a JSON map; a missing file is an empty map.
fn policy_map(path: &Path) -> Result<Map<String, Value>, PlanError> {
    let text = match super::read_file(path) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(Map::new()),
        Err(e) => return Err(PlanError::Refused(ConfigError::new(path, "", "", format!("cannot read policies: {e}")))),
    };
    serde_json::from_str(&text).map_err(|e| {
        PlanError::Refused(ConfigError::new(
            path,
            "",
            "",
            format!("policies must be a JSON object of id -> policy: {e}"),
        ))
    })
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// How the loader reads definition files: from disk, except the one file an edit changes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Files<'a> {
    pub(crate) edit: Option<&'a FileEdit>,
}

impl Files<'_> {
    /// The text of `path` (see [`super::read_file`]).
    pub(crate) fn read(&self, path: &Path) -> Result<String, ReadError> {
        match self.edit {
            Some(e) if e.path == path => {
                e.text.clone().ok_or_else(|| ReadError::Io(std::io::ErrorKind::NotFound.into()))
            }
            _ => super::read_file(path),
        }
    }

    /// The entries of directory `dir`, as paths (unsorted).
    pub(crate) fn list(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        if let Some(e) = self.edit.filter(|e| e.path.parent() == Some(dir)) {
            paths.retain(|p| *p != e.path);
            if e.text.is_some() {
                paths.push(e.path.clone());
            }
        }
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_snapshot_edited;

    fn no_fetch(u: &str) -> Result<Vec<u8>, String> {
        Err(format!("no network: {u}"))
    }

    fn keyless(id: &str, listen_path: &str) -> Value {
        serde_json::json!({"api_id": id, "use_keyless": true, "version_data": {"not_versioned": true},
            "proxy": {"listen_path": listen_path, "target_url": "http://127.0.0.1:1/"}})
    }

    #[test]
    fn safe_ids() {
        for ok in ["a", "httpbin", "a.b-c_d~e", "5f8a0c", "with space", "é"] {
            assert!(is_safe_id(ok), "{ok}");
        }
        let long = "a".repeat(MAX_ID_BYTES + 1);
        for bad in ["", ".", "..", "a/b", "../x", "a\\b", "a\nb", "a\0b", long.as_str()] {
            assert!(!is_safe_id(bad), "{bad:?}");
        }
    }

    /// An API definition goes back into the file it was loaded from; a new one is `<id>.json`;
    /// the edited snapshot sees the change without anything written.
    #[test]
    fn api_edits_go_to_their_file_and_are_loaded_unwritten() {
        let dir = tempfile::tempdir().unwrap();
        let apps = dir.path().join("apps");
        std::fs::create_dir(&apps).unwrap();
        std::fs::write(apps.join("some-name.json"), keyless("a", "/a").to_string()).unwrap();
        let mut cfg = Config::default();
        cfg.apps.dir = apps.clone();
        cfg.apps.policies = apps.join("policies.json");
        let (running, errs) = crate::load_snapshot_with(cfg.clone(), 1, &no_fetch);
        assert!(errs.is_empty(), "{errs:?}");

        let put = |id: &str, lp: &str| Change::PutApi { api_id: id.into(), definition: keyless(id, lp) };
        let e = plan(&cfg, &running, &put("a", "/a2")).unwrap();
        assert_eq!(e.path, apps.join("some-name.json"));
        let e = plan(&cfg, &running, &put("b", "/b")).unwrap();
        assert_eq!(e.path, apps.join("b.json"));
        let (snap, errs) = load_snapshot_edited(cfg.clone(), 2, &no_fetch, &e);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(snap.apis.iter().map(|a| a.api_id.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        assert!(!apps.join("b.json").exists(), "nothing written");

        let e = plan(&cfg, &running, &Change::DeleteApi { api_id: "a".into() }).unwrap();
        assert_eq!(e, FileEdit { path: apps.join("some-name.json"), text: None });
        let (snap, _) = load_snapshot_edited(cfg.clone(), 2, &no_fetch, &e);
        assert!(snap.apis.is_empty());
        assert!(matches!(plan(&cfg, &running, &Change::DeleteApi { api_id: "x".into() }), Err(PlanError::NotLoaded)));

        // `policies` would overwrite the policies file; an unsafe id is refused.
        assert!(matches!(plan(&cfg, &running, &put("policies", "/p")), Err(PlanError::Refused(_))));
        assert!(matches!(plan(&cfg, &running, &put("../x", "/x")), Err(PlanError::Refused(_))));
    }

    /// A policies file is rewritten whole with the entry changed; a policy directory gets one
    /// file per policy.
    #[test]
    fn policy_edits_in_a_file_and_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let apps = dir.path().join("apps");
        std::fs::create_dir(&apps).unwrap();
        let mut cfg = Config::default();
        cfg.apps.dir = apps.clone();
        cfg.apps.policies = apps.join("policies.json");
        std::fs::write(&cfg.apps.policies, r#"{"gold": {"rate": 10, "per": 1, "custom": "kept"}}"#).unwrap();
        let (running, errs) = crate::load_snapshot_with(cfg.clone(), 1, &no_fetch);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(running.policy_sources["gold"].json["custom"], "kept");
        assert_eq!(running.policy_sources["gold"].json["id"], "gold");

        let silver =
            Change::PutPolicy { id: "silver".into(), policy: serde_json::json!({"id": "silver", "rate": 5, "per": 1}) };
        let e = plan(&cfg, &running, &silver).unwrap();
        assert_eq!(e.path, cfg.apps.policies);
        let map: Value = serde_json::from_str(e.text.as_deref().unwrap()).unwrap();
        assert_eq!(map["gold"]["custom"], "kept");
        assert_eq!(map["silver"]["rate"], 5);
        let (snap, errs) = load_snapshot_edited(cfg.clone(), 2, &no_fetch, &e);
        assert!(errs.is_empty() && snap.policies.get("silver").is_some(), "{errs:?}");
        let e = plan(&cfg, &running, &Change::DeletePolicy { id: "gold".into() }).unwrap();
        assert_eq!(e.text.as_deref().map(str::trim), Some("{}"));
        assert!(matches!(plan(&cfg, &running, &Change::DeletePolicy { id: "x".into() }), Err(PlanError::NotLoaded)));

        let pdir = dir.path().join("policies");
        std::fs::create_dir(&pdir).unwrap();
        std::fs::write(pdir.join("p1.json"), r#"{"id": "gold", "rate": 10, "per": 1}"#).unwrap();
        cfg.apps.policies = pdir.clone();
        let (running, errs) = crate::load_snapshot_with(cfg.clone(), 1, &no_fetch);
        assert!(errs.is_empty(), "{errs:?}");
        let gold =
            Change::PutPolicy { id: "gold".into(), policy: serde_json::json!({"id": "gold", "rate": 20, "per": 1}) };
        assert_eq!(plan(&cfg, &running, &gold).unwrap().path, pdir.join("p1.json"));
        assert_eq!(plan(&cfg, &running, &silver).unwrap().path, pdir.join("silver.json"));
        let e = plan(&cfg, &running, &Change::DeletePolicy { id: "gold".into() }).unwrap();
        assert_eq!(e, FileEdit { path: pdir.join("p1.json"), text: None });
        let (snap, errs) = load_snapshot_edited(cfg, 2, &no_fetch, &e);
        assert!(errs.is_empty() && snap.policies.get("gold").is_none(), "{errs:?}");
    }
}
