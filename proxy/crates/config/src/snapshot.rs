//! The immutable snapshot workers read: config + validated APIs + routing table.
//!
//! Built on the control plane (it reads files and resolves target host names, which blocks) and
//! swapped whole into an `ArcSwap`; a worker never sees a half-applied reload.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::router::Router;
use portcullis_policy::auth::Policies;

use super::tyk::{parse_api, Parsed};
use super::tyk_policy::TykPolicy;
use super::{ApiSpec, Config, ConfigError, JwksFetch};

/// Everything a worker needs to serve a request, frozen.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub apis: Vec<ApiSpec>,
    pub router: Router,
    /// Increases by one per successful load; shown by `/hello` and `/tyk/reload`.
    pub generation: u64,
    /// The policies file.
    pub policies: Arc<Policies>,
}

/// Loads `apps/*.json` and the policies file named by `config`. Invalid APIs are left out and
/// their errors returned alongside the snapshot of the valid ones. JWKS documents named by the
/// definitions are fetched with `fetch`: config does no network I/O of its own (the control
/// plane passes `control::jwks::http_fetch`, tests their own).
pub fn load_snapshot_with(config: Config, generation: u64, fetch: JwksFetch<'_>) -> (Snapshot, Vec<ConfigError>) {
    let mut errs = Vec::new();
    let mut apis: Vec<ApiSpec> = Vec::new();
    for file in api_files(&config.apps.dir, &mut errs) {
        let text = match super::read_file(&file) {
            Ok(t) => t,
            Err(e) => {
                errs.push(ConfigError::new(&file, "", "", format!("cannot read: {e}")));
                continue;
            }
        };
        match parse_api(&file, &text, fetch) {
            Ok(Parsed::Api(mut spec)) => {
                if spec.limits.ip.is_none() {
                    if let Some(r) =
                        portcullis_policy::limit::Rate::new(config.limits.ip_rate, config.limits.ip_per, 1.0)
                    {
                        spec.limits.ip = Some(r);
                        spec.plain = false;
                    }
                }
                if let Some(other) = apis.iter().find(|a| a.api_id == spec.api_id) {
                    errs.push(ConfigError::new(
                        &file,
                        "api_id",
                        &spec.api_id,
                        format!("already used by {}", other.file),
                    ));
                    continue;
                }
                apis.push(spec);
            }
            Ok(Parsed::Inactive { api_id }) => {
                tracing::info!(file = %file.display(), api_id, "skipping API: active is false");
            }
            Err(mut e) => errs.append(&mut e),
        }
    }

    let mut router = Router::default();
    let mut kept = Vec::with_capacity(apis.len());
    for spec in apis {
        match router.add(spec.domain.as_deref(), &spec.listen_path, kept.len() as u32) {
            Ok(()) => kept.push(spec),
            Err(dup) => {
                let other: &ApiSpec = &kept[dup.existing as usize];
                errs.push(ConfigError::new(
                    &spec.file,
                    "proxy.listen_path",
                    if spec.listen_path.is_empty() { "/" } else { &spec.listen_path },
                    format!("same domain and listen path as API {:?} in {}", other.api_id, other.file),
                ));
            }
        }
    }

    let policies = load_policies(&config.apps.policies, &mut errs);
    (Snapshot { config, apis: kept, router, generation, policies }, errs)
}

fn api_files(dir: &Path, errs: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
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
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| p.file_name().is_some_and(|n| n != "policies.json"))
        .collect();
    files.sort();
    files
}

/// Policies file: a JSON object `id -> policy` (Tyk's format). A missing file means no policies.
/// A policy without `id` takes its map key; one whose `id` differs from its key is an error.
fn load_policies(path: &Path, errs: &mut Vec<ConfigError>) -> Arc<Policies> {
    let text = match super::read_file(path) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Arc::default(),
        Err(e) => {
            errs.push(ConfigError::new(path, "", "", format!("cannot read policies: {e}")));
            return Arc::default();
        }
    };
    let de = &mut serde_json::Deserializer::from_str(&text);
    match serde_path_to_error::deserialize::<_, BTreeMap<String, TykPolicy>>(de) {
        Ok(m) => {
            let mut out = Vec::with_capacity(m.len());
            for (key, mut p) in m {
                if p.id.is_empty() {
                    p.id = key.clone();
                } else if p.id != key {
                    errs.push(ConfigError::new(
                        path,
                        format!("{key}.id"),
                        &p.id,
                        "must equal the policy's key in the map",
                    ));
                    continue;
                }
                let problems = p.rate_problems(&format!("{key}."));
                if !problems.is_empty() {
                    // Left out, as an unknown policy: keys applying it are refused, never unlimited.
                    for pr in problems {
                        errs.push(ConfigError::new(path, pr.field, pr.value, pr.message));
                    }
                    continue;
                }
                out.push((key, p.to_policy()));
            }
            Arc::new(Policies::new(out))
        }
        Err(e) => {
            errs.push(ConfigError::new(
                path,
                e.path().to_string(),
                "",
                format!("policies must be a JSON object of id -> policy: {}", e.inner()),
            ));
            Arc::default()
        }
    }
}
