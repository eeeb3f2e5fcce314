//! Tyk's mutual TLS (`use_mutual_tls_auth` with `client_certificates`;
//! gateway/mw_certificate_check.go, internal/crypto/helpers.go:103-140): which client
//! certificates an API lets through, checked per request against the certificates the client
//! presented in its handshake.

use std::sync::Arc;

use ring::digest::{digest, SHA256};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

/// The certificates an API allows: by the SHA-256 of their DER, and authorities whose
/// certificates are allowed.
#[derive(Debug)]
pub struct ClientCertPolicy {
    fingerprints: Vec<[u8; 32]>,
    /// Built from the allowed certificates that are authorities (`None`: there are none).
    authorities: Option<Arc<dyn ClientCertVerifier>>,
}

/// Why a request's client certificate does not pass: Tyk's messages (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    NoTls,
    NoCertificate,
    NotAllowed { sha256: String },
    Expired,
}

impl Refused {
    /// Tyk's words for it (mw_certificate_check.go, helpers.go:32-139).
    pub fn message(&self) -> String {
        match self {
            Refused::NoTls => "TLS not enabled".into(),
            Refused::NoCertificate => "Client TLS certificate is required".into(),
            Refused::NotAllowed { sha256 } => format!("Certificate with SHA256 {sha256} not allowed"),
            Refused::Expired => "Certificate has expired".into(),
        }
    }
}

/// One allowed certificate: its DER (from a PEM), or only its fingerprint (Tyk's certificate
/// id: an org id followed by the hex SHA-256 of the certificate's DER).
#[derive(Debug, Clone)]
pub enum Allowed {
    Certificate(CertificateDer<'static>),
    Fingerprint([u8; 32]),
}

fn sha256(der: &[u8]) -> [u8; 32] {
    let d = digest(&SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The fingerprint in a Tyk certificate id (`<org id><64 hex digits>`), if `id` is one.
pub fn fingerprint_of_id(id: &str) -> Option<[u8; 32]> {
    let tail = id.get(id.len().checked_sub(64)?..)?;
    if !tail.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&tail[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Whether `der` is a certificate authority's (basic constraints `CA:TRUE`).
fn is_authority(der: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(der.as_ref()).is_ok_and(|(_, c)| c.is_ca())
}

/// The leaf's validity at `now` (unix seconds); a certificate that does not parse is not valid.
fn valid_at(der: &CertificateDer<'_>, now: i64) -> bool {
    x509_parser::parse_x509_certificate(der.as_ref()).is_ok_and(|(_, c)| {
        let v = c.validity();
        v.not_before.timestamp() <= now && now <= v.not_after.timestamp()
    })
}

impl ClientCertPolicy {
    /// The policy of `allowed`; an error when an authority among them is not usable as one.
    pub fn new(allowed: &[Allowed]) -> Result<ClientCertPolicy, String> {
        let mut fingerprints = Vec::new();
        let mut roots = RootCertStore::empty();
        for a in allowed {
            match a {
                Allowed::Fingerprint(f) => fingerprints.push(*f),
                Allowed::Certificate(der) => {
                    fingerprints.push(sha256(der));
                    if is_authority(der) {
                        roots.add(der.clone()).map_err(|e| format!("an authority that cannot verify: {e}"))?;
                    }
                }
            }
        }
        let authorities = if roots.is_empty() {
            None
        } else {
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(crate::provider()))
                .build()
                .map_err(|e| format!("the authorities: {e}"))?;
            Some(v)
        };
        Ok(ClientCertPolicy { fingerprints, authorities })
    }

    /// Whether `presented` (the client's chain, leaf first; `None` for a connection without
    /// TLS) passes at `now` (unix seconds): a presented certificate with an allowed
    /// fingerprint, within its validity, or a chain an allowed authority verifies.
    pub fn check(&self, presented: Option<&[CertificateDer<'static>]>, now: i64) -> Result<(), Refused> {
        let Some(presented) = presented else { return Err(Refused::NoTls) };
        let Some(leaf) = presented.first() else { return Err(Refused::NoCertificate) };
        if let Some(hit) = presented.iter().find(|c| self.fingerprints.contains(&sha256(c))) {
            return if valid_at(hit, now) { Ok(()) } else { Err(Refused::Expired) };
        }
        if let Some(v) = &self.authorities {
            let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(u64::try_from(now).unwrap_or(0)));
            if v.verify_client_cert(leaf, &presented[1..], at).is_ok() {
                return Ok(());
            }
        }
        Err(Refused::NotAllowed { sha256: hex(&sha256(leaf)) })
    }
}

/// A client-certificate verifier that asks every client for a certificate and accepts any
/// (the handshake still checks the client holds its key): which certificate may call which API
/// is the API's to say, per request ([`ClientCertPolicy`]), as Tyk's `RequestClientCert`.
#[derive(Debug)]
pub struct AskForClientCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl AskForClientCert {
    pub fn new() -> AskForClientCert {
        AskForClientCert { provider: Arc::new(crate::provider()) }
    }
}

impl Default for AskForClientCert {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientCertVerifier for AskForClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tyk_certificate_ids_carry_the_fingerprint() {
        let hex64 = "a".repeat(64);
        assert_eq!(fingerprint_of_id(&format!("5e9d9544a1dcd60001d0ed20{hex64}")), Some([0xaa; 32]));
        assert_eq!(fingerprint_of_id(&hex64), Some([0xaa; 32]));
        assert_eq!(fingerprint_of_id("short"), None);
        assert_eq!(fingerprint_of_id(&"A".repeat(64)), None, "Tyk's ids are lower case");
        assert_eq!(fingerprint_of_id("certs/client.pem"), None);
    }

    #[test]
    fn refusals_use_tyks_words() {
        let p = ClientCertPolicy::new(&[Allowed::Fingerprint([1; 32])]).unwrap();
        assert_eq!(p.check(None, 0).unwrap_err().message(), "TLS not enabled");
        assert_eq!(p.check(Some(&[]), 0).unwrap_err().message(), "Client TLS certificate is required");
        let other = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        let e = p.check(Some(std::slice::from_ref(&other)), 0).unwrap_err();
        assert_eq!(e.message(), format!("Certificate with SHA256 {} not allowed", hex(&sha256(&other))));
        // An allowed fingerprint whose certificate does not parse has no validity: expired.
        let p = ClientCertPolicy::new(&[Allowed::Fingerprint(sha256(&other))]).unwrap();
        assert_eq!(p.check(Some(&[other]), 0), Err(Refused::Expired));
    }
}
