//! API visibility's per-API settings and provided OpenAPI document, resolved at load: the
//! definition's own `portcullis_visibility` object over `[visibility]`, `[[visibility.apis]]`
//! over both, and the document beside the definition (`<stem>.openapi.json`, `.yaml`, `.yml`,
//! else a Tyk OAS companion `<stem>-oas.json`) compiled once into the snapshot, where the workers
//! match every request against it. A document that does not compile keeps its API from loading,
//! naming the file and the JSON pointer, like any other definition error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::edit::Files;
use super::file::{VisibilityConfig, VisibilityMode};
use super::ConfigError;
use portcullis_visibility::spec::Spec;

/// One API's visibility, as the data plane and the visibility thread use it.
#[derive(Debug, Clone, Default)]
pub struct Visibility {
    /// Learn from this API's traffic (inventory, reconstruction, findings).
    pub learn: bool,
    /// A request is sampled when the worker's random `u64` is below this (0: never;
    /// `u64::MAX`: always).
    pub sample_below: u64,
    pub max_body_bytes: usize,
    /// Media types whose bodies are kept (`+json`: any type ending so).
    pub content_types: Arc<[String]>,
    pub mode: VisibilityMode,
    pub validate_requests: bool,
    /// The provided OpenAPI document, compiled.
    pub spec: Option<Arc<Spec>>,
    /// Where it was read from.
    pub spec_file: Option<PathBuf>,
}

impl Visibility {
    /// Whether the provided document's verdicts refuse requests.
    pub fn enforces(&self) -> bool {
        self.mode == VisibilityMode::Enforce && self.spec.is_some()
    }

    /// Whether a body of this `Content-Type` is kept when sampled.
    pub fn keeps_body(&self, content_type: &[u8]) -> bool {
        let mime = content_type.split(|&b| b == b';').next().unwrap_or(b"");
        let mime = mime.trim_ascii();
        self.content_types.iter().any(|t| {
            let t = t.as_bytes();
            if t.first() == Some(&b'+') {
                mime.len() >= t.len() && mime[mime.len() - t.len()..].eq_ignore_ascii_case(t)
            } else {
                mime.eq_ignore_ascii_case(t)
            }
        })
    }
}

/// The definition's `portcullis_visibility` object.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Own {
    enabled: Option<bool>,
    sample_rate: Option<f64>,
    max_body_bytes: Option<usize>,
    content_types: Option<Vec<String>>,
    mode: Option<VisibilityMode>,
    validate_requests: Option<bool>,
}

/// `rate` (0..=1) as a threshold on a random `u64`.
pub fn sample_below(rate: f64) -> u64 {
    if rate.is_nan() || rate <= 0.0 {
        0
    } else if rate >= 1.0 {
        u64::MAX
    } else {
        (rate * u64::MAX as f64) as u64
    }
}

/// The files a provided document may be read from for the definition `file`, in order.
pub fn spec_candidates(file: &Path) -> Vec<PathBuf> {
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let dir = file.parent().unwrap_or(Path::new("."));
    ["openapi.json", "openapi.yaml", "openapi.yml"]
        .iter()
        .map(|ext| dir.join(format!("{stem}.{ext}")))
        .chain(std::iter::once(dir.join(format!("{stem}-oas.json"))))
        .collect()
}

/// Whether `name` is a provided OpenAPI document (not an API definition of its own).
pub(crate) fn is_spec_file(name: &str) -> bool {
    name.ends_with(".openapi.json") || name.ends_with(".openapi.yaml") || name.ends_with(".openapi.yml")
}

/// Resolves an API's visibility: `definition`'s own object, `cfg`, and its document.
pub(crate) fn resolve(
    file: &Path,
    api_id: &str,
    definition: &serde_json::Value,
    cfg: &VisibilityConfig,
    fs: Files<'_>,
) -> Result<Visibility, Vec<ConfigError>> {
    let mut errs = Vec::new();
    let own = match definition.get("portcullis_visibility") {
        None | Some(serde_json::Value::Null) => Own::default(),
        Some(v) => match serde_path_to_error::deserialize::<_, Own>(v) {
            Ok(o) => o,
            Err(e) => {
                let field = format!("portcullis_visibility.{}", e.path());
                errs.push(ConfigError::new(file, field, v.to_string(), e.inner().to_string()));
                Own::default()
            }
        },
    };
    if let Some(r) = own.sample_rate.filter(|r| !(0.0..=1.0).contains(r)) {
        errs.push(ConfigError::new(file, "portcullis_visibility.sample_rate", r.to_string(), "must be 0.0 to 1.0"));
    }
    let over = cfg.apis.iter().find(|a| a.api_id == api_id);
    let enabled = over.and_then(|a| a.enabled).or(own.enabled).unwrap_or(cfg.enabled);
    let rate = over.and_then(|a| a.sample_rate).or(own.sample_rate).unwrap_or(cfg.sample_rate);
    let max_body_bytes = over.and_then(|a| a.max_body_bytes).or(own.max_body_bytes).unwrap_or(cfg.max_body_bytes);
    let content_types =
        over.and_then(|a| a.content_types.clone()).or(own.content_types).unwrap_or_else(|| cfg.content_types.clone());
    let mode = over.and_then(|a| a.mode).or(own.mode).unwrap_or(cfg.mode);
    let validate_requests =
        over.and_then(|a| a.validate_requests).or(own.validate_requests).unwrap_or(cfg.validate_requests);
    let (spec, spec_file) = match find_spec(file, fs) {
        Ok(Some((path, text))) => match Spec::parse(text.as_bytes()) {
            Ok(s) => (Some(Arc::new(s)), Some(path)),
            Err(e) => {
                errs.push(ConfigError::new(&path, e.pointer.clone(), "", format!("OpenAPI document: {}", e.message)));
                (None, None)
            }
        },
        Ok(None) => (None, None),
        Err(e) => {
            errs.push(e);
            (None, None)
        }
    };
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Visibility {
        learn: enabled,
        sample_below: if enabled { sample_below(rate) } else { 0 },
        max_body_bytes,
        content_types: content_types.into(),
        mode,
        validate_requests,
        spec,
        spec_file,
    })
}

/// The first provided document beside `file` that exists, and its text.
fn find_spec(file: &Path, fs: Files<'_>) -> Result<Option<(PathBuf, String)>, ConfigError> {
    for path in spec_candidates(file) {
        match fs.read(&path) {
            Ok(text) => return Ok(Some((path, text))),
            Err(super::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ConfigError::new(&path, "", "", format!("cannot read: {e}"))),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_become_thresholds_and_media_types_match() {
        assert_eq!(sample_below(0.0), 0);
        assert_eq!(sample_below(1.0), u64::MAX);
        assert_eq!(sample_below(f64::NAN), 0);
        let half = sample_below(0.5);
        assert!(half > u64::MAX / 2 - 4096 && half < u64::MAX / 2 + 4096);
        let v =
            Visibility { content_types: vec!["application/json".into(), "+json".into()].into(), ..Default::default() };
        assert!(v.keeps_body(b"application/json; charset=utf-8"));
        assert!(v.keeps_body(b"application/problem+JSON"));
        assert!(!v.keeps_body(b"text/html") && !v.keeps_body(b"json") && !v.keeps_body(b""));
    }

    #[test]
    fn settings_come_from_config_then_the_definition_then_config_by_api_id() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        let mut cfg = VisibilityConfig::default();
        let def = serde_json::json!({"portcullis_visibility": {"sample_rate": 1.0, "mode": "enforce"}});
        let v = resolve(&file, "a", &def, &cfg, Files::default()).unwrap();
        assert_eq!((v.sample_below, v.mode, v.max_body_bytes), (u64::MAX, VisibilityMode::Enforce, 65536));
        cfg.apis.push(super::super::file::VisibilityApi {
            api_id: "a".into(),
            sample_rate: Some(0.0),
            ..Default::default()
        });
        let v = resolve(&file, "a", &def, &cfg, Files::default()).unwrap();
        assert_eq!((v.sample_below, v.mode), (0, VisibilityMode::Enforce));
        let bad = serde_json::json!({"portcullis_visibility": {"sample_rte": 1.0}});
        let e = resolve(&file, "a", &bad, &cfg, Files::default()).unwrap_err();
        assert!(e[0].to_string().contains("sample_rte"), "{}", e[0]);
        let bad = serde_json::json!({"portcullis_visibility": {"sample_rate": 2.0}});
        assert!(resolve(&file, "a", &bad, &cfg, Files::default()).is_err());
    }

    #[test]
    fn a_document_beside_the_definition_is_compiled_or_refused_naming_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        let cfg = VisibilityConfig::default();
        let none = serde_json::Value::Null;
        assert!(resolve(&file, "a", &none, &cfg, Files::default()).unwrap().spec.is_none());
        let doc = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /users/{id}:\n    get:\n      responses: {'200': {description: ok}}\n";
        std::fs::write(dir.path().join("a.openapi.yaml"), doc).unwrap();
        let v = resolve(&file, "a", &none, &cfg, Files::default()).unwrap();
        assert!(v.spec.is_some());
        assert_eq!(v.spec_file.as_deref(), Some(dir.path().join("a.openapi.yaml").as_path()));
        std::fs::write(dir.path().join("a.openapi.json"), "{\"openapi\": \"9.9\"}").unwrap();
        let e = resolve(&file, "a", &none, &cfg, Files::default()).unwrap_err();
        assert!(e[0].to_string().contains("a.openapi.json"), "{}", e[0]);
    }
}
