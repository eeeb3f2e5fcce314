//! TLS for the tests: certificates made on the spot (rcgen), and the rustls client
//! configuration that trusts them. Nothing here is read from or written to a fixed place.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// A certificate and its key, PEM, and the certificate's DER.
#[derive(Clone)]
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCert {
    /// Writes `<stem>.pem` and `<stem>.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
        std::fs::write(&cert, &self.cert_pem).expect("write certificate");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// A self-signed certificate for `names` (DNS names or IP addresses), valid from `from` to
/// `to` (years, 1 January).
pub fn self_signed_between(names: &[&str], from: i32, to: i32) -> TestCert {
    let key = rcgen::KeyPair::generate().expect("key pair");
    let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("certificate names");
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(to, 1, 1);
    let c = params.self_signed(&key).expect("self-signed certificate");
    TestCert { cert_pem: c.pem(), key_pem: key.serialize_pem(), der: c.der().clone() }
}

/// A self-signed certificate for `names`, valid from 2020 to 2100.
pub fn self_signed(names: &[&str]) -> TestCert {
    self_signed_between(names, 2020, 2100)
}

/// The ring provider, as the proxy uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that trusts `trusted` only, offers ALPN `http/1.1`, and speaks `versions`.
pub fn client_config_with(
    trusted: &[&CertificateDer<'static>],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in trusted {
        roots.add((*c).clone()).expect("trusted certificate");
    }
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

/// [`client_config_with`] TLS 1.2 and 1.3.
pub fn client_config(trusted: &[&CertificateDer<'static>]) -> Arc<ClientConfig> {
    client_config_with(trusted, rustls::DEFAULT_VERSIONS)
}

/// A self-signed certificate whose subject's common name is `cn`, with no subject alternative
/// names (what Tyk's `ssl_force_common_name_check` is for).
pub fn common_name_only(cn: &str) -> TestCert {
    let key = rcgen::KeyPair::generate().expect("key pair");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let c = params.self_signed(&key).expect("self-signed certificate");
    TestCert { cert_pem: c.pem(), key_pem: key.serialize_pem(), der: c.der().clone() }
}

/// A TLS server's configuration (an HTTPS upstream): `cert`, `versions`, and with `clients`
/// a client certificate signed by one of them required.
pub fn server_config(
    cert: &TestCert,
    versions: &[&'static rustls::SupportedProtocolVersion],
    clients: &[&TestCert],
) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
    let builder =
        rustls::ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions).expect("versions");
    let builder = if clients.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for c in clients {
            roots.add(c.der.clone()).expect("client authority");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_single_cert(vec![cert.der.clone()], key).expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A certificate authority and a leaf for `names` it signed, with `crl` as the leaf's CRL
/// distribution point: a certificate a TLS audit (testssl.sh) can trust and find revocable.
pub fn authority_and_leaf(names: &[&str], crl: &str) -> (TestCert, TestCert) {
    let ca_key = rcgen::KeyPair::generate().expect("key pair");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Portcullis test authority");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    ca_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let ca = ca_params.self_signed(&ca_key).expect("authority");
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().expect("key pair");
    let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("certificate names");
    params.distinguished_name.push(rcgen::DnType::CommonName, names.first().copied().unwrap_or("localhost"));
    // Under 398 days in all, as browsers require of server certificates.
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
    params.not_after = (now + std::time::Duration::from_secs(300 * 86_400)).into();
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.crl_distribution_points = vec![rcgen::CrlDistributionPoint { uris: vec![crl.to_string()] }];
    let leaf = params.signed_by(&key, &issuer).expect("leaf");
    (
        TestCert { cert_pem: ca.pem(), key_pem: ca_key.serialize_pem(), der: ca.der().clone() },
        TestCert { cert_pem: leaf.pem(), key_pem: key.serialize_pem(), der: leaf.der().clone() },
    )
}

/// [`client_config`] presenting `cert` (with its key) when the server asks for one.
pub fn client_config_presenting(trusted: &[&CertificateDer<'static>], cert: &TestCert) -> Arc<ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for c in trusted {
        roots.add((*c).clone()).expect("trusted certificate");
    }
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert.der.clone()], key)
        .expect("client certificate");
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

/// The hex SHA-256 of a certificate's DER (Tyk's certificate fingerprint).
pub fn sha256_hex(c: &TestCert) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(c.der.as_ref()).iter().map(|b| format!("{b:02x}")).collect()
}
