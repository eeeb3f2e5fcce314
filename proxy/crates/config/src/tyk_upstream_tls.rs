//! HTTPS upstreams of a Tyk definition: `proxy.transport`'s TLS fields and
//! `upstream_certificates` -> the rustls client configuration of each `https://` target
//! (Tyk: gateway/reverse_proxy.go:779-826, gateway/cert.go:72-159).

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// PEM parsing of the pki-types crate, through portcullis-tls.
use portcullis_tls::pem as rustls_pem;
use portcullis_tls::{ClientConfig, ClientOptions, RootCertStore};
use serde::Deserialize;

/// How an `https://` target is spoken to: its client configuration and the name its
/// certificate is checked against (and sent as SNI).
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub config: Arc<ClientConfig>,
    pub name: portcullis_tls::ServerName<'static>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.name == other.name
    }
}

impl Eq for UpstreamTls {}

/// Tyk's `proxy.transport` (apidef/api_definitions.go:1100-1107); `proxy_url` and the dial
/// timeout are read elsewhere (refused when set).
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(default)]
pub(super) struct RawTransport {
    ssl_insecure_skip_verify: bool,
    ssl_ciphers: Vec<String>,
    ssl_min_version: u16,
    ssl_max_version: u16,
    ssl_force_common_name_check: bool,
}

/// What the targets of one definition share: its transport options, its
/// `upstream_certificates`, and the trust store of the load.
pub(super) struct TargetTls<'a> {
    pub file: &'a Path,
    pub options: ClientOptions,
    /// Host pattern -> certificate reference (file path or inline PEM).
    pub client_certs: BTreeMap<String, String>,
    pub trust: &'a UpstreamTrust,
}

impl<'a> TargetTls<'a> {
    pub(super) fn new(
        file: &'a Path,
        t: &RawTransport,
        client_certs: BTreeMap<String, String>,
        trust: &'a UpstreamTrust,
    ) -> TargetTls<'a> {
        let options = ClientOptions {
            insecure_skip_verify: t.ssl_insecure_skip_verify,
            cipher_suites: t.ssl_ciphers.clone(),
            min_version: t.ssl_min_version,
            max_version: t.ssl_max_version,
            force_common_name_check: t.ssl_force_common_name_check,
        };
        TargetTls { file, options, client_certs, trust }
    }

    /// The TLS of an `https://` target at `host` (no brackets) with `authority` (`host` or
    /// `host:port` as written).
    pub(super) fn for_target(&self, host: &str, authority: &str) -> Result<UpstreamTls, String> {
        let name = portcullis_tls::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("`{host}` is not a name a certificate can be checked against: {e}"))?;
        let roots = self.trust.roots()?;
        let cert = match client_cert_for(&self.client_certs, host, authority) {
            Some((pattern, reference)) => Some(self.client_cert(pattern, reference)?),
            None => None,
        };
        let config = portcullis_tls::client_config(&self.options, roots, cert)
            .map_err(|(field, m)| format!("proxy.transport.{field}: {m}"))?;
        Ok(UpstreamTls { config, name })
    }

    /// `upstream_certificates[pattern]`: a PEM file holding the certificate and its key, or
    /// the PEM itself (Tyk's stored certificate ids need Tyk's certificate store: refused).
    fn client_cert(&self, pattern: &str, reference: &str) -> Result<Arc<portcullis_tls::CertifiedKey>, String> {
        let field = format!("upstream_certificates.{pattern}");
        let now = i64::try_from(super::tls::unix_now()).unwrap_or(i64::MAX);
        load_reference(self.file, &field, reference, now).map(|l| l.key).map_err(|e| format!("{field}: {e}"))
    }
}

/// Tyk's mutual TLS of a definition: with `use_mutual_tls_auth`, the certificates of
/// `client_certificates`, each inline PEM, a Tyk certificate id (`<org id><hex SHA-256>`) or a
/// PEM file (relative to the definition). A reference that resolves to nothing is an error
/// (Tyk drops it silently), and so is an empty list (no client could ever pass).
pub(super) fn mutual_tls(
    file: &Path,
    json: &serde_json::Value,
    errs: &mut Vec<super::ConfigError>,
) -> Option<Arc<portcullis_tls::mtls::ClientCertPolicy>> {
    use portcullis_tls::mtls::{fingerprint_of_id, Allowed, ClientCertPolicy};
    use rustls_pem::PemObject;
    if !json.get("use_mutual_tls_auth").is_some_and(super::truthy) {
        return None;
    }
    let refs: Vec<String> = match json.get("client_certificates") {
        Some(v) => serde_json::from_value(v.clone()).unwrap_or_default(),
        None => Vec::new(),
    };
    let err = |field: String, value: &str, msg: String| super::ConfigError::new(file, field, value, msg);
    if refs.is_empty() {
        errs.push(err(
            "client_certificates".into(),
            "[]",
            "use_mutual_tls_auth is true but no certificate is allowed".into(),
        ));
        return None;
    }
    let mut allowed = Vec::new();
    let before = errs.len();
    for (i, r) in refs.iter().enumerate() {
        let field = format!("client_certificates[{i}]");
        let pem = if r.contains("-----BEGIN ") {
            Some(r.as_bytes().to_vec())
        } else if let Some(f) = fingerprint_of_id(r) {
            allowed.push(Allowed::Fingerprint(f));
            None
        } else {
            let path = Path::new(r);
            let path = if path.is_relative() {
                file.parent().unwrap_or(Path::new(".")).join(path)
            } else {
                path.to_path_buf()
            };
            match std::fs::read(&path) {
                Ok(b) => Some(b),
                Err(e) => {
                    errs.push(err(
                        field.clone(),
                        r,
                        format!("neither inline PEM, a certificate id nor a readable file: {e}"),
                    ));
                    None
                }
            }
        };
        if let Some(pem) = pem {
            match portcullis_tls::CertificateDer::pem_slice_iter(&pem).next() {
                Some(Ok(der)) => allowed.push(Allowed::Certificate(der)),
                _ => {
                    let value = if r.contains("-----BEGIN ") { "(inline PEM)" } else { r.as_str() };
                    errs.push(err(field, value, "no PEM certificate in it".into()))
                }
            }
        }
    }
    if errs.len() > before {
        return None;
    }
    match ClientCertPolicy::new(&allowed) {
        Ok(p) => Some(Arc::new(p)),
        Err(m) => {
            errs.push(err("client_certificates".into(), "", m));
            None
        }
    }
}

/// Tyk's `certificates` of a definition (unless `domain_disabled`): each a PEM file with the
/// certificate and its key (relative to the definition) or that PEM inline, checked as the
/// listener's own (the key is the certificate's, within its validity). Tyk's stored certificate
/// ids need its certificate store: refused.
pub(super) fn server_certificates(
    file: &Path,
    json: &serde_json::Value,
    errs: &mut Vec<super::ConfigError>,
) -> Vec<portcullis_tls::Loaded> {
    if json.get("domain_disabled").is_some_and(super::truthy) {
        return Vec::new();
    }
    let refs: Vec<String> = match json.get("certificates") {
        Some(v) => serde_json::from_value(v.clone()).unwrap_or_default(),
        None => return Vec::new(),
    };
    let now = i64::try_from(super::tls::unix_now()).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let field = format!("certificates[{i}]");
        let loaded = load_reference(file, &field, r, now);
        match loaded {
            Ok(l) if !l.names.is_empty() => out.push(l),
            Ok(_) => {
                errs.push(super::ConfigError::new(file, &field, "", "the certificate has no names to be chosen by"))
            }
            // An inline PEM holds the key: never in an error.
            Err(e) => {
                let value = if r.contains("-----BEGIN ") { "(inline PEM)" } else { r.as_str() };
                errs.push(super::ConfigError::new(file, &field, value, e))
            }
        }
    }
    out
}

/// A certificate with its key by Tyk's reference: that PEM inline (with `-----BEGIN `), else
/// a PEM file holding both (relative to the definition `file`), checked as the listener's own
/// at `now`. Tyk's stored certificate ids need its certificate store, which Portcullis does not
/// have: refused.
fn load_reference(file: &Path, field: &str, reference: &str, now: i64) -> Result<portcullis_tls::Loaded, String> {
    let at = |path: &Path| portcullis_tls::CertSpec {
        field: field.to_owned(),
        cert_file: path.to_owned(),
        key_file: path.to_owned(),
        domains: Vec::new(),
    };
    if reference.contains("-----BEGIN ") {
        return portcullis_tls::load_pem(&at(file), reference.as_bytes(), reference.as_bytes(), now)
            .map_err(|e| e.message);
    }
    let path = Path::new(reference);
    let path = if path.is_relative() { file.parent().unwrap_or(Path::new(".")).join(path) } else { path.to_path_buf() };
    if !path.is_file() {
        return Err(format!(
            "`{reference}` is not a file of certificate and key (PEM) nor inline PEM; Tyk's stored certificate ids need \
             its certificate store, which Portcullis does not have"
        ));
    }
    portcullis_tls::load(&at(&path), now).map_err(|e| e.message)
}

/// The certificate reference `upstream_certificates` gives a target, as Tyk picks it
/// (gateway/cert.go:72-139): of `*`, `*.<parent>`, `*.<parent>:<port>`, `host`, `host:port`,
/// the last that is present wins.
fn client_cert_for<'m>(certs: &'m BTreeMap<String, String>, host: &str, authority: &str) -> Option<(&'m str, &'m str)> {
    let parent = host.split_once('.').map(|(_, p)| p);
    let port = authority.strip_prefix(host).and_then(|r| r.strip_prefix(':'));
    let mut candidates = vec!["*".to_owned()];
    if let Some(p) = parent {
        candidates.push(format!("*.{p}"));
        if let Some(port) = port {
            candidates.push(format!("*.{p}:{port}"));
        }
    }
    candidates.push(host.to_owned());
    if let Some(port) = port {
        candidates.push(format!("{host}:{port}"));
    }
    candidates.iter().rev().find_map(|c| certs.get_key_value(c.as_str())).map(|(k, v)| (k.as_str(), v.as_str()))
}

/// Where upstream servers' certificates are verified against for one load: `[proxy]
/// upstream_ca_file`, else the system's trust store, read the first time a definition has an
/// `https://` target.
#[derive(Debug, Default)]
pub(crate) struct UpstreamTrust {
    ca_file: PathBuf,
    roots: OnceCell<Result<Arc<RootCertStore>, String>>,
}

impl UpstreamTrust {
    pub(crate) fn new(ca_file: PathBuf) -> UpstreamTrust {
        UpstreamTrust { ca_file, roots: OnceCell::new() }
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, String> {
        self.roots
            .get_or_init(|| {
                if self.ca_file.as_os_str().is_empty() {
                    return portcullis_tls::client::roots(None)
                        .map(Arc::new)
                        .map_err(|e| format!("cannot verify upstream certificates: {e}"));
                }
                let pem = std::fs::read(&self.ca_file)
                    .map_err(|e| format!("[proxy] upstream_ca_file {}: {e}", self.ca_file.display()))?;
                portcullis_tls::client::roots(Some(&pem))
                    .map(Arc::new)
                    .map_err(|e| format!("[proxy] upstream_ca_file {}: {e}", self.ca_file.display()))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutual_tls_references_that_resolve_to_nothing_are_refused() {
        let check = |json: serde_json::Value| {
            let mut errs = Vec::new();
            let p = mutual_tls(Path::new("apps/m.json"), &json, &mut errs);
            (p.is_some(), errs.iter().map(|e| e.field.clone()).collect::<Vec<_>>())
        };
        assert_eq!(
            check(serde_json::json!({"use_mutual_tls_auth": false, "client_certificates": ["x"]})),
            (false, vec![])
        );
        assert_eq!(
            check(serde_json::json!({"use_mutual_tls_auth": true})),
            (false, vec!["client_certificates".into()])
        );
        let hex64 = "0".repeat(64);
        assert_eq!(
            check(serde_json::json!({"use_mutual_tls_auth": true, "client_certificates": [hex64]})),
            (true, vec![])
        );
        assert_eq!(
            check(
                serde_json::json!({"use_mutual_tls_auth": true, "client_certificates": [hex64, "missing.pem", "-----BEGIN nothing"]})
            ),
            (false, vec!["client_certificates[1]".into(), "client_certificates[2]".into()])
        );
    }

    #[test]
    fn client_certificates_are_picked_as_tyk_picks_them() {
        let map = |pairs: &[&str]| pairs.iter().map(|p| (p.to_string(), format!("cert-{p}"))).collect();
        let all: BTreeMap<String, String> =
            map(&["*", "*.example.com", "*.example.com:8443", "api.example.com", "api.example.com:8443"]);
        let pick = |m: &BTreeMap<String, String>, host: &str, auth: &str| {
            client_cert_for(m, host, auth).map(|p| p.0.to_owned())
        };
        assert_eq!(pick(&all, "api.example.com", "api.example.com:8443").as_deref(), Some("api.example.com:8443"));
        assert_eq!(pick(&all, "api.example.com", "api.example.com").as_deref(), Some("api.example.com"));
        assert_eq!(pick(&all, "www.example.com", "www.example.com:8443").as_deref(), Some("*.example.com:8443"));
        assert_eq!(pick(&all, "www.example.com", "www.example.com").as_deref(), Some("*.example.com"));
        // One label only: `*.example.com` is not `example.com` nor `a.b.example.com`'s.
        assert_eq!(pick(&all, "example.com", "example.com").as_deref(), Some("*"));
        assert_eq!(pick(&all, "a.b.example.com", "a.b.example.com").as_deref(), Some("*"));
        let none: BTreeMap<String, String> = map(&["other.test"]);
        assert_eq!(pick(&none, "api.example.com", "api.example.com"), None);
        assert_eq!(pick(&all, "127.0.0.1", "127.0.0.1:8443").as_deref(), Some("*"));
    }
}
