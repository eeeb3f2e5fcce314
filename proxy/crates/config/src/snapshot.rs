//! The immutable snapshot workers read: config + validated APIs + routing table.
//!
//! Built on the control plane (it reads files and resolves target host names, which blocks) and
//! swapped whole into an `ArcSwap`; a worker never sees a half-applied reload.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::router::Router;
use portcullis_policy::auth::policy::Policy;
use portcullis_policy::auth::tyk_key::TykHash;
use portcullis_policy::auth::Policies;

use super::edit::{FileEdit, Files};
use super::tyk::{parse_api, Parsed};
use super::tyk_policy::TykPolicy;
use super::{ApiSpec, Config, ConfigError, JwksFetch};

/// Everything a worker needs to serve a request, frozen.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    /// One per loaded definition.
    pub apis: Vec<ApiSpec>,
    /// The versions of the versioned APIs, each compiled as an API of its own: [`Snapshot::api`]
    /// numbers them after `apis` (a versioned API's `Versioning` names their indices).
    pub versions: Vec<ApiSpec>,
    pub router: Router,
    /// Increases by one per successful load; shown by `/hello` and `/tyk/reload`.
    pub generation: u64,
    /// The policies file.
    pub policies: Arc<Policies>,
    /// Each loaded policy as written, by id: `/tyk/policies` answers with it and writes a
    /// change back into its file.
    pub policy_sources: Arc<BTreeMap<String, PolicySource>>,
    /// Definition files not loaded: `active: false`, or refused (their errors are returned with
    /// the snapshot). A reload applies without them unless `[apps] strict`.
    pub skipped: Vec<Skipped>,
    /// `[auth] tyk_key_hashes`, parsed (the config check refuses unknown names).
    pub tyk_key_hashes: Vec<TykHash>,
    /// Tyk's gateway error templates, the `error*` files of `[apps] template_path` (empty:
    /// Tyk's defaults, built in).
    pub error_templates: Arc<super::tyk_errors::ErrorTemplates>,
    /// The TLS listener's configuration (`[tls]`), its certificate files read with this
    /// snapshot; `None` without `[tls] listen`.
    pub tls: Option<super::TlsListener>,
}

/// A definition file the snapshot does not serve, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// As `ConfigError::file` names it.
    pub file: String,
    /// Empty when the file could not be read or parsed far enough to have one.
    pub api_id: String,
    pub reason: String,
    /// Skipped on purpose (`active: false`), not refused.
    pub inactive: bool,
}

/// A loaded policy as its file has it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySource {
    /// The policies file (Tyk's map `id -> policy`), or the policy's own file in a policy
    /// directory.
    pub file: PathBuf,
    /// The policy object, its `id` set to the id it is loaded under (the map key in a policies
    /// file, as Tyk's `LoadPoliciesFromFile` sets it).
    pub json: serde_json::Value,
}

impl Snapshot {
    /// The API a route or a version resolved to: a loaded definition, or one version of a
    /// versioned one.
    #[inline]
    pub fn api(&self, index: crate::router::ApiIndex) -> &ApiSpec {
        let i = index as usize;
        match self.apis.get(i) {
            Some(a) => a,
            None => &self.versions[i - self.apis.len()],
        }
    }

    /// Whether `e` is about a definition file this snapshot skipped (as opposed to the policies
    /// file or the config itself).
    pub fn skips(&self, e: &ConfigError) -> bool {
        self.skipped.iter().any(|s| s.file == e.file)
    }
}

/// Loads `apps/*.json` and the policies file named by `config`. Invalid APIs are left out and
/// their errors returned alongside the snapshot of the valid ones. JWKS documents named by the
/// definitions are fetched with `fetch`: config does no network I/O of its own (the control
/// plane passes `control::jwks::http_fetch`, tests their own).
pub fn load_snapshot_with(config: Config, generation: u64, fetch: JwksFetch<'_>) -> (Snapshot, Vec<ConfigError>) {
    load(config, generation, fetch, Files::default())
}

/// As [`load_snapshot_with`], as the files would be after `edit`: the snapshot a reload would
/// build once `edit` is written, built before anything is written (see [`super::edit`]).
pub fn load_snapshot_edited(
    config: Config,
    generation: u64,
    fetch: JwksFetch<'_>,
    edit: &FileEdit,
) -> (Snapshot, Vec<ConfigError>) {
    load(config, generation, fetch, Files { edit: Some(edit) })
}

fn load(config: Config, generation: u64, fetch: JwksFetch<'_>, fs: Files<'_>) -> (Snapshot, Vec<ConfigError>) {
    let mut errs = Vec::new();
    let mut skipped = Vec::new();
    let skip = |skipped: &mut Vec<Skipped>, e: &ConfigError, api_id: &str| {
        if !skipped.iter().any(|s: &Skipped| s.file == e.file) {
            skipped.push(Skipped {
                file: e.file.clone(),
                api_id: api_id.into(),
                reason: e.to_string(),
                inactive: false,
            });
        }
    };
    let mut apis: Vec<(ApiSpec, Vec<ApiSpec>)> = Vec::new();
    let trust = super::tyk_upstream_tls::UpstreamTrust::new(config.proxy.upstream_ca_file.clone());
    for file in api_files(&config.apps.dir, fs, &mut errs) {
        let text = match fs.read(&file) {
            Ok(t) => t,
            Err(e) => {
                let e = ConfigError::new(&file, "", "", format!("cannot read: {e}"));
                skip(&mut skipped, &e, "");
                errs.push(e);
                continue;
            }
        };
        match parse_api(&file, &text, fetch, config.apps.path_matching(), &trust) {
            Ok(Parsed::Api(mut spec, mut versions)) => {
                let templates = std::iter::once(&mut spec)
                    .chain(versions.iter_mut())
                    .map(|s| with_templates(&file, s, &config.apps.template_path, fs))
                    .find_map(Result::err);
                if let Some(mut e) = templates {
                    if let Some(first) = e.first() {
                        skip(&mut skipped, first, &spec.api_id.clone());
                    }
                    errs.append(&mut e);
                    continue;
                }
                match super::visibility::resolve(&file, &spec.api_id, &spec.definition, &config.visibility, fs) {
                    Ok(v) => {
                        let v = Arc::new(v);
                        for s in std::iter::once(&mut spec).chain(versions.iter_mut()) {
                            s.visibility = Arc::clone(&v);
                        }
                    }
                    Err(mut e) => {
                        if let Some(first) = e.first() {
                            skip(&mut skipped, first, &spec.api_id.clone());
                        }
                        errs.append(&mut e);
                        continue;
                    }
                }
                for spec in std::iter::once(&mut spec).chain(versions.iter_mut()) {
                    if spec.limits.ip.is_none() {
                        if let Some(r) =
                            portcullis_policy::limit::Rate::new(config.limits.ip_rate, config.limits.ip_per, 1.0)
                        {
                            spec.limits.ip = Some(r);
                            spec.plain = false;
                        }
                    }
                }
                if let Some((other, _)) = apis.iter().find(|(a, _)| a.api_id == spec.api_id) {
                    let e = ConfigError::new(&file, "api_id", &spec.api_id, format!("already used by {}", other.file));
                    skip(&mut skipped, &e, &spec.api_id);
                    errs.push(e);
                    continue;
                }
                apis.push((spec, versions));
            }
            Ok(Parsed::Inactive { api_id }) => {
                tracing::info!(file = %file.display(), api_id, "skipping API: active is false");
                let file = file.display().to_string();
                skipped.push(Skipped { file, api_id, reason: "active is false".into(), inactive: true });
            }
            Err(mut e) => {
                if let Some(first) = e.first() {
                    let api_id = api_id_of(&text);
                    skipped.push(Skipped {
                        file: first.file.clone(),
                        api_id,
                        reason: e.iter().map(ConfigError::to_string).collect::<Vec<_>>().join("; "),
                        inactive: false,
                    });
                }
                errs.append(&mut e);
            }
        }
    }

    let mut router = Router::default();
    let mut kept: Vec<ApiSpec> = Vec::with_capacity(apis.len());
    let mut kept_versions = Vec::new();
    for (spec, versions) in apis {
        match router.add(spec.domain.as_deref(), &spec.listen_path, kept.len() as u32) {
            Ok(()) => {
                kept.push(spec);
                kept_versions.push(versions);
            }
            Err(dup) => {
                let other: &ApiSpec = &kept[dup.existing as usize];
                let e = ConfigError::new(
                    &spec.file,
                    "proxy.listen_path",
                    if spec.listen_path.is_empty() { "/" } else { &spec.listen_path },
                    format!("same domain and listen path as API {:?} in {}", other.api_id, other.file),
                );
                skip(&mut skipped, &e, &spec.api_id);
                errs.push(e);
            }
        }
    }

    // The versions go after the APIs: a version's index is its place there.
    let mut all_versions = Vec::new();
    let n = kept.len();
    for (spec, versions) in kept.iter_mut().zip(kept_versions) {
        if let Some(v) = spec.versioning.as_deref_mut() {
            for version in &mut v.versions {
                version.index += (n + all_versions.len()) as u32;
            }
        }
        all_versions.extend(versions);
    }

    let (policies, policy_sources) = load_policies(&config.apps.policies, fs, &mut errs);
    let policies = Arc::new(Arc::unwrap_or_clone(policies).with_matching(config.apps.path_matching()));
    let tyk_key_hashes = config.auth.tyk_key_hashes.iter().filter_map(|n| TykHash::parse(n)).collect();
    let read = |p: &Path| fs.read(p).map_err(|e| e.to_string());
    let list = |d: &Path| fs.list(d);
    let error_templates =
        Arc::new(super::tyk_errors::load_gateway_templates(&config.apps.template_path, &list, &read, &mut errs));
    let ask_client_certs = kept.iter().chain(all_versions.iter()).any(|a| a.mutual_tls.is_some());
    let api_certs: Vec<portcullis_tls::Loaded> = kept.iter().flat_map(|a| a.certificates.iter().cloned()).collect();
    let tls = super::tls::listener(&config.tls, ask_client_certs, api_certs).unwrap_or_else(|mut e| {
        errs.append(&mut e);
        None
    });
    (
        Snapshot {
            config,
            apis: kept,
            versions: all_versions,
            router,
            generation,
            policies,
            policy_sources,
            skipped,
            tyk_key_hashes,
            error_templates,
            tls,
        },
        errs,
    )
}

/// Reads the file templates `spec`'s `error_overrides` name (see `tyk_errors::load_templates`).
fn with_templates(file: &Path, spec: &mut super::ApiSpec, dir: &Path, fs: Files<'_>) -> Result<(), Vec<ConfigError>> {
    let Some(ov) = spec.error_overrides.as_mut() else { return Ok(()) };
    let mut errs = Vec::new();
    let read = |p: &Path| match fs.read(p) {
        Ok(t) => Ok(Some(t)),
        Err(super::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    };
    super::tyk_errors::load_templates(file, Arc::make_mut(ov), dir, &read, &mut errs);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// The `api_id` of a definition that was refused, if its JSON gets that far.
fn api_id_of(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("api_id")?.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn api_files(dir: &Path, fs: Files<'_>, errs: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    let entries = match fs.list(dir) {
        Ok(e) => e,
        Err(e) => {
            errs.push(ConfigError::new(
                dir,
                "apps.dir",
                dir.display().to_string(),
                format!("cannot read directory: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| p.file_name().is_some_and(|n| n != "policies.json"))
        // Provided OpenAPI documents beside their definitions (`visibility.rs`).
        .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(super::visibility::is_spec_file))
        .collect();
    files.sort();
    // A Tyk OAS API is a classic definition (`x.json`, `is_oas: true`) plus its OpenAPI document
    // (`x-oas.json`, or `x-mcp.json`): the companion is not a definition of its own (Tyk:
    // api_definition.go, isOASCompanionFile). Without its classic file it is refused by name.
    let companion = |p: &PathBuf| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        ["-oas.json", "-mcp.json"].iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|stem| {
                files.iter().any(|f| f.file_name().is_some_and(|n| n.to_str() == Some(&format!("{stem}.json"))))
            })
        })
    };
    let companions: Vec<PathBuf> = files.iter().filter(|p| companion(p)).cloned().collect();
    files.retain(|p| !companions.contains(p));
    files
}

/// The policies and, by id, each as written.
type LoadedPolicies = (Arc<Policies>, Arc<BTreeMap<String, PolicySource>>);

/// Policies file: a JSON object `id -> policy` (Tyk's format). A missing file means no policies.
/// A policy without `id` takes its map key; one whose `id` differs from its key is an error.
fn load_policies(path: &Path, fs: Files<'_>, errs: &mut Vec<ConfigError>) -> LoadedPolicies {
    if path.is_dir() {
        return load_policy_dir(path, fs, errs);
    }
    let text = match fs.read(path) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Default::default(),
        Err(e) => {
            errs.push(ConfigError::new(path, "", "", format!("cannot read policies: {e}")));
            return Default::default();
        }
    };
    let de = &mut serde_json::Deserializer::from_str(&text);
    match serde_path_to_error::deserialize::<_, BTreeMap<String, TykPolicy>>(de) {
        Ok(m) => {
            // Parsed again as plain JSON for `policy_sources` (it parsed as policies, so it is a map).
            let mut written: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&text).unwrap_or_default();
            let mut out = Vec::with_capacity(m.len());
            let mut sources = BTreeMap::new();
            for (key, mut p) in m {
                let json = written.remove(&key).unwrap_or_default();
                // The map key names the policy; an `id` field that differs is ignored, as Tyk
                // does (gateway/policy.go, LoadPoliciesFromFile: the key wins unless empty).
                if !p.id.is_empty() && p.id != key && !key.is_empty() {
                    tracing::warn!(file = %path.display(), key, id = %p.id, "policy id differs from its key; the key names it");
                }
                if !key.is_empty() {
                    p.id = key.clone();
                } else if p.id.is_empty() {
                    errs.push(ConfigError::new(path, "\"\"", "", "a policy needs a key or an id"));
                    continue;
                }
                if let Some(policy) = checked(path, &format!("{}.", p.id), p, errs) {
                    sources.insert(policy.0.clone(), PolicySource::new(path, &policy.0, json));
                    out.push(policy);
                }
            }
            (Arc::new(Policies::new(out)), Arc::new(sources))
        }
        Err(e) => {
            errs.push(ConfigError::new(
                path,
                e.path().to_string(),
                "",
                format!("policies must be a JSON object of id -> policy: {}", e.inner()),
            ));
            Default::default()
        }
    }
}

impl PolicySource {
    fn new(file: &Path, id: &str, mut json: serde_json::Value) -> PolicySource {
        if let Some(o) = json.as_object_mut() {
            o.insert("id".into(), id.into());
        }
        PolicySource { file: file.to_path_buf(), json }
    }
}

/// Tyk's `policies.policy_path`: a directory with one policy object per `*.json` file, named by
/// its `id` field (Tyk: gateway/policy.go, LoadPoliciesFromDir). A file that cannot be read or
/// parsed, or has no `id`, is an error naming it.
fn load_policy_dir(dir: &Path, fs: Files<'_>, errs: &mut Vec<ConfigError>) -> LoadedPolicies {
    let mut files: Vec<PathBuf> = match fs.list(dir) {
        Ok(entries) => entries.into_iter().filter(|p| p.extension().is_some_and(|x| x == "json")).collect(),
        Err(e) => {
            errs.push(ConfigError::new(dir, "apps.policies", dir.display().to_string(), format!("cannot read: {e}")));
            return Default::default();
        }
    };
    files.sort();
    let mut out: Vec<(String, Policy)> = Vec::with_capacity(files.len());
    let mut sources = BTreeMap::new();
    for file in files {
        let text = match fs.read(&file) {
            Ok(t) => t,
            Err(e) => {
                errs.push(ConfigError::new(&file, "", "", format!("cannot read policy: {e}")));
                continue;
            }
        };
        let de = &mut serde_json::Deserializer::from_str(&text);
        let p: TykPolicy = match serde_path_to_error::deserialize(de) {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("a policy file holds one policy object: {}", e.inner());
                errs.push(ConfigError::new(&file, e.path().to_string(), "", msg));
                continue;
            }
        };
        if p.id.is_empty() {
            errs.push(ConfigError::new(&file, "id", "", "a policy in a policy directory is named by its id"));
            continue;
        }
        if out.iter().any(|(id, _)| *id == p.id) {
            errs.push(ConfigError::new(&file, "id", &p.id, "another file in the directory has this id"));
            continue;
        }
        if let Some(policy) = checked(&file, "", p, errs) {
            let json = serde_json::from_str(&text).unwrap_or_default();
            sources.insert(policy.0.clone(), PolicySource::new(&file, &policy.0, json));
            out.push(policy);
        }
    }
    (Arc::new(Policies::new(out)), Arc::new(sources))
}

/// A policy whose `rate`/`per` mean something, converted; otherwise its errors (a policy left out
/// is unknown: keys applying it are refused, never unlimited).
fn checked(file: &Path, prefix: &str, p: TykPolicy, errs: &mut Vec<ConfigError>) -> Option<(String, Policy)> {
    let problems = p.rate_problems(prefix);
    if !problems.is_empty() {
        for pr in problems {
            errs.push(ConfigError::new(file, pr.field, pr.value, pr.message));
        }
        return None;
    }
    Some((p.id.clone(), p.to_policy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map key names a policy, whatever its `id` field says (Tyk: gateway/policy.go,
    /// `LoadPoliciesFromFile`); a policy is applied by its key.
    #[test]
    fn a_policy_is_named_by_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policies.json");
        std::fs::write(
            &path,
            r#"{"gold": {"id": "something-else", "rate": 10, "per": 1}, "silver": {"rate": 5, "per": 1}}"#,
        )
        .unwrap();
        let mut errs = Vec::new();
        let p = load_policies(&path, Files::default(), &mut errs).0;
        assert!(errs.is_empty(), "{errs:?}");
        assert!(p.get("gold").is_some() && p.get("silver").is_some());
        assert!(p.get("something-else").is_none());
    }

    /// A refused definition is skipped and listed with its reason; an inactive one is listed as
    /// inactive; the others load.
    #[test]
    fn refused_and_inactive_definitions_are_listed_and_the_rest_load() {
        let dir = tempfile::tempdir().unwrap();
        let apps = dir.path().join("apps");
        std::fs::create_dir(&apps).unwrap();
        let def = |id: &str, target: &str, extra: &str| {
            format!(
                r#"{{"version_data": {{"not_versioned": true}}, "api_id":"{id}","use_keyless":true{extra},"proxy":{{"listen_path":"/{id}","target_url":"{target}"}}}}"#
            )
        };
        std::fs::write(apps.join("good.json"), def("good", "http://127.0.0.1:1/", "")).unwrap();
        std::fs::write(apps.join("bad.json"), def("bad", "gopher://x", "")).unwrap();
        std::fs::write(apps.join("off.json"), def("off", "http://127.0.0.1:1/", r#","active":false"#)).unwrap();
        let mut cfg = Config::default();
        cfg.apps.dir = apps.clone();
        cfg.apps.policies = dir.path().join("none.json");
        let (snap, errs) = load_snapshot_with(cfg, 1, &|u: &str| Err(format!("no network: {u}")));
        assert_eq!(snap.apis.iter().map(|a| a.api_id.as_str()).collect::<Vec<_>>(), ["good"]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(snap.skips(&errs[0]));
        let bad = snap.skipped.iter().find(|s| s.api_id == "bad").expect("bad listed");
        assert!(!bad.inactive && bad.reason.contains("proxy.target_url"), "{bad:?}");
        let off = snap.skipped.iter().find(|s| s.api_id == "off").expect("off listed");
        assert!(off.inactive, "{off:?}");
    }

    /// Tyk's `policy_path`: one policy per file, named by its `id`.
    #[test]
    fn a_policy_directory_holds_one_policy_per_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gold.json"), r#"{"id": "gold", "rate": 10, "per": 1}"#).unwrap();
        std::fs::write(dir.path().join("again.json"), r#"{"id": "gold", "rate": 99, "per": 1}"#).unwrap();
        std::fs::write(dir.path().join("anon.json"), r#"{"rate": 5, "per": 1}"#).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a policy").unwrap();
        let mut errs = Vec::new();
        let p = load_policies(dir.path(), Files::default(), &mut errs).0;
        assert!(p.get("gold").is_some());
        assert_eq!(p.len(), 1);
        let text = errs.iter().map(ConfigError::to_string).collect::<Vec<_>>().join("\n");
        assert!(text.contains("anon.json") && text.contains("named by its id"), "{text}");
        // Files are read in name order: `again.json` names `gold` first, `gold.json` is refused.
        assert!(text.contains("gold.json") && text.contains("another file"), "{text}");
    }

    /// A Tyk OAS API's OpenAPI companion is not a definition of its own; a lone OAS document is
    /// refused by name, never loaded as an empty classic definition.
    #[test]
    fn oas_companions_are_skipped_and_lone_oas_documents_refused() {
        let dir = tempfile::tempdir().unwrap();
        let apps = dir.path().join("apps");
        std::fs::create_dir(&apps).unwrap();
        let classic = r#"{"version_data": {"not_versioned": true}, "api_id":"m","is_oas":true,"use_keyless":true,"proxy":{"listen_path":"/m","target_url":"http://127.0.0.1:1/"}}"#;
        let oas = r#"{"openapi":"3.0.3","info":{"title":"m","version":"1"},"paths":{},"x-tyk-api-gateway":{}}"#;
        std::fs::write(apps.join("m.json"), classic).unwrap();
        std::fs::write(apps.join("m-oas.json"), oas).unwrap();
        std::fs::write(apps.join("lone-oas.json"), oas).unwrap();
        let mut cfg = Config::default();
        cfg.apps.dir = apps;
        cfg.apps.policies = dir.path().join("none.json");
        let (snap, errs) = load_snapshot_with(cfg, 1, &|u: &str| Err(format!("no network: {u}")));
        assert_eq!(snap.apis.iter().map(|a| a.api_id.as_str()).collect::<Vec<_>>(), ["m"]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].file.ends_with("lone-oas.json") && errs[0].field == "openapi", "{errs:?}");
        assert!(errs[0].message.contains("Tyk OAS"), "{errs:?}");
    }
}
