//! The rustls client configuration of HTTPS upstreams, from Tyk's `proxy.transport` TLS fields
//! (gateway/reverse_proxy.go:779-826, gateway/cert.go:227-281) and `upstream_certificates`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedCipherSuite};

/// An API's upstream TLS settings (Tyk's `proxy.transport`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// `ssl_insecure_skip_verify`: the server's certificate is not verified (its handshake
    /// signature still is).
    pub insecure_skip_verify: bool,
    /// `ssl_ciphers`: TLS 1.2 cipher suites by Go's (IANA's) names, in order; empty = rustls'
    /// defaults. As in Go, they do not apply to TLS 1.3.
    pub cipher_suites: Vec<String>,
    /// `ssl_min_version` / `ssl_max_version`: Go's numbers (771 TLS 1.2, 772 TLS 1.3); 0 = no
    /// bound. TLS 1.0 and 1.1 (769, 770) are not spoken: a minimum below 1.2 is 1.2.
    pub min_version: u16,
    pub max_version: u16,
    /// `ssl_force_common_name_check`: the leaf's common name must equal the target's host, as
    /// Tyk checks; the chain is verified too (Tyk skips that: not copied).
    pub force_common_name_check: bool,
}

/// The rustls protocol versions Go's `ssl_min_version`..`ssl_max_version` allow; `Err(field,
/// message)` for a value that is no TLS version or an empty range.
fn versions(o: &ClientOptions) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, (&'static str, String)> {
    let level = |field: &'static str, v: u16, default: u8| match v {
        0 => Ok(default),
        769..=771 => Ok(2),
        772 => Ok(3),
        _ => Err((field, format!("{v} is not a TLS version (Go's numbers: 771 is TLS 1.2, 772 TLS 1.3)"))),
    };
    let min = level("ssl_min_version", o.min_version, 2)?;
    let max = level("ssl_max_version", o.max_version, 3)?;
    if min > max {
        return Err(("ssl_min_version", format!("{} is above ssl_max_version {}", o.min_version, o.max_version)));
    }
    let mut v = Vec::new();
    if max >= 3 {
        v.push(&rustls::version::TLS13);
    }
    if min <= 2 {
        v.push(&rustls::version::TLS12);
    }
    Ok(v)
}

/// Go's names of cipher suites rustls does not implement, all of them without forward secrecy
/// or AEAD: skipped, as Go would still offer the rest (Tyk skips unknown names silently; a name
/// that is no cipher suite at all is refused).
fn is_legacy_suite(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    n.starts_with("TLS_RSA_WITH_") || n.contains("_CBC_") || n.contains("RC4") || n.contains("3DES")
}

/// The client configuration of an upstream whose server certificates are verified against
/// `roots`, presenting `client_cert` when asked (Tyk's `upstream_certificates`). `Err(field,
/// message)` names the `proxy.transport` field at fault.
pub fn client_config(
    o: &ClientOptions,
    roots: Arc<RootCertStore>,
    client_cert: Option<Arc<CertifiedKey>>,
) -> Result<Arc<ClientConfig>, (&'static str, String)> {
    let versions = versions(o)?;
    let mut provider = crate::provider();
    if !o.cipher_suites.is_empty() {
        let mut chosen: Vec<SupportedCipherSuite> =
            provider.cipher_suites.iter().filter(|s| s.version() == &rustls::version::TLS13).copied().collect();
        let mut tls12 = 0;
        for name in &o.cipher_suites {
            // Go accepts `..._CHACHA20_POLY1305` without its `_SHA256`.
            let full = if name.to_ascii_uppercase().ends_with("CHACHA20_POLY1305") {
                format!("{name}_SHA256")
            } else {
                name.clone()
            };
            match provider.cipher_suites.iter().find(|s| crate::server::suite_is(s, &full)) {
                Some(s) if s.version() == &rustls::version::TLS12 => {
                    if !chosen.contains(s) {
                        chosen.push(*s);
                        tls12 += 1;
                    }
                }
                // TLS 1.3 suites are not chosen in Go either.
                Some(_) => {}
                None if is_legacy_suite(name) => {}
                None => return Err(("ssl_ciphers", format!("unknown cipher suite `{name}`"))),
            }
        }
        if tls12 == 0 && versions.contains(&&rustls::version::TLS12) && !versions.contains(&&rustls::version::TLS13) {
            return Err((
                "ssl_ciphers",
                "none of these cipher suites is spoken (rustls has only AEAD suites with forward secrecy)".into(),
            ));
        }
        provider.cipher_suites = chosen;
    }
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| ("ssl_ciphers", format!("inconsistent versions and cipher suites: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = if o.insecure_skip_verify {
        Arc::new(NoVerify { provider: provider.clone(), common_name: o.force_common_name_check })
    } else {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| ("ssl_insecure_skip_verify", format!("no certificate authority to verify against: {e}")))?;
        if o.force_common_name_check {
            Arc::new(CommonName { inner })
        } else {
            inner
        }
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    let mut config = match client_cert {
        Some(c) => builder.with_client_cert_resolver(Arc::new(Always(c))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Connections are pooled, so handshakes are rare; a session cache would be one lock shared
    // by every worker (rustls' `ClientSessionMemoryCache`).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Presents one certificate whatever the server asks for, as Tyk's `GetClientCertificate`
/// (gateway/reverse_proxy.go:1316-1321).
#[derive(Debug)]
struct Always(Arc<CertifiedKey>);

impl ResolvesClientCert for Always {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// The common name of a certificate's subject, if it has one.
fn common_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = x509.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(cn)
}

fn host_of(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => String::new(),
    }
}

fn cn_matches(end_entity: &CertificateDer<'_>, server_name: &ServerName<'_>) -> Result<(), rustls::Error> {
    // Tyk compares the common name and the host exactly (gateway/cert.go:227-235).
    match common_name(end_entity) {
        Some(cn) if cn == host_of(server_name) => Ok(()),
        cn => Err(rustls::Error::General(format!(
            "ssl_force_common_name_check: the certificate's common name {cn:?} is not {:?}",
            host_of(server_name)
        ))),
    }
}

/// `ssl_force_common_name_check`: the chain is verified as usual, and the leaf's common name
/// must be the host, which stands in for the subject alternative names (a certificate with the
/// right common name and no such name passes, as in Tyk).
#[derive(Debug)]
struct CommonName {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for CommonName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
            )) => {
                cn_matches(end_entity, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `ssl_insecure_skip_verify`: any certificate is accepted; the handshake's signature is still
/// checked against it (the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct NoVerify {
    provider: Arc<CryptoProvider>,
    /// `ssl_force_common_name_check` too: the common name is still compared.
    common_name: bool,
}

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.common_name {
            cn_matches(end_entity, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The system's trust store (as `rustls-native-certs` finds it: `SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, else the distribution's bundle), or the certificates of `ca_pem`.
pub fn roots(ca_pem: Option<&[u8]>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            use rustls::pki_types::pem::PemObject;
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
                store.add(c).map_err(|e| format!("a certificate is not usable as an authority: {e}"))?;
            }
            if store.is_empty() {
                return Err("no CERTIFICATE block in the file".into());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no certificate authorities in the system's trust store ({} errors; install ca-certificates, or set [proxy] upstream_ca_file)",
                    found.errors.len()
                ));
            }
        }
    }
    Ok(store)
}
