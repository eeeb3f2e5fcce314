//! HTTPS upstreams of a Tyk definition: `proxy.transport`'s TLS fields and
//! `upstream_certificates` -> the rustls client configuration of each `https://` target
//! (Tyk: gateway/reverse_proxy.go:779-826, gateway/cert.go:72-159).

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
        let now = i64::try_from(super::tls::unix_now()).unwrap_or(i64::MAX);
        let field = format!("upstream_certificates.{pattern}");
        let loaded = if reference.contains("-----BEGIN ") {
            let spec = portcullis_tls::CertSpec {
                field: field.clone(),
                cert_file: self.file.to_owned(),
                key_file: self.file.to_owned(),
                domains: Vec::new(),
            };
            portcullis_tls::load_pem(&spec, reference.as_bytes(), reference.as_bytes(), now)
        } else {
            let path = Path::new(reference);
            let path = if path.is_relative() {
                self.file.parent().unwrap_or(Path::new(".")).join(path)
            } else {
                path.to_path_buf()
            };
            if !path.is_file() {
                return Err(format!(
                    "upstream_certificates.{pattern}: `{reference}` is not a file of certificate and key (PEM) nor \
                     inline PEM; Tyk's stored certificate ids need its certificate store, which Portcullis does not have"
                ));
            }
            let spec = portcullis_tls::CertSpec {
                field: field.clone(),
                cert_file: path.clone(),
                key_file: path,
                domains: Vec::new(),
            };
            portcullis_tls::load(&spec, now)
        };
        loaded.map(|l| l.key).map_err(|e| format!("{field}: {}", e.message))
    }
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
