//! A certificate chain and its private key, read from PEM files and checked before use.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The largest PEM file read (a chain of a few certificates is a few KiB).
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// One certificate as configured: its files, the names it is chosen for (empty: the names
/// the certificate itself carries, its subject alternative names, else its common name),
/// and the config field it came from, for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    pub field: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub domains: Vec<String>,
}

/// What is wrong, with the file and the config field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    pub file: PathBuf,
    pub field: String,
    pub message: String,
}

impl TlsError {
    pub fn new(file: &Path, field: &str, message: impl Into<String>) -> Self {
        TlsError { file: file.to_owned(), field: field.to_owned(), message: message.into() }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.field, self.message)
    }
}

impl std::error::Error for TlsError {}

/// A certificate ready to serve.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// The names it is chosen for, lowercase (`*.example.com` for a wildcard).
    pub names: Vec<String>,
    /// The leaf's notAfter, unix seconds.
    pub not_after: i64,
}

/// Reads and checks `spec`'s files at `now` (unix seconds): the chain (leaf first) and the key
/// parse, the key is the leaf's, the leaf is within its validity, and its names (configured or
/// its own) are host names.
pub fn load(spec: &CertSpec, now: i64) -> Result<Loaded, TlsError> {
    let cert_field = format!("{}.cert_file", spec.field);
    let key_field = format!("{}.key_file", spec.field);
    let cert_pem = read_pem(&spec.cert_file, &cert_field)?;
    let key_pem = read_pem(&spec.key_file, &key_field)?;
    load_pem(spec, &cert_pem, &key_pem, now)
}

/// [`load`] with the files' contents given (`spec` names them in errors): a certificate given
/// inline, as Tyk's certificate references may be.
pub fn load_pem(spec: &CertSpec, cert_pem: &[u8], key_pem: &[u8], now: i64) -> Result<Loaded, TlsError> {
    let cert_field = format!("{}.cert_file", spec.field);
    let key_field = format!("{}.key_file", spec.field);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::new(&spec.cert_file, &cert_field, format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::new(&spec.cert_file, &cert_field, "no CERTIFICATE block in the file"));
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        TlsError::new(&spec.key_file, &key_field, format!("no private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"))
    })?;
    let (_, x509) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        TlsError::new(&spec.cert_file, &cert_field, format!("the first certificate does not parse: {e}"))
    })?;
    let validity = x509.validity();
    let (not_before, not_after) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    if now < not_before {
        return Err(TlsError::new(
            &spec.cert_file,
            &cert_field,
            format!("not valid before {} (unix {not_before})", validity.not_before),
        ));
    }
    if now > not_after {
        return Err(TlsError::new(
            &spec.cert_file,
            &cert_field,
            format!("expired at {} (unix {not_after})", validity.not_after),
        ));
    }
    // Its own names count where they are host names (a common name may be a phrase); the
    // configured ones must all be.
    if spec.domains.is_empty() {
        let names = own_names(&x509).into_iter().filter(|n| is_name(n)).collect();
        return certified(spec, chain, key, &key_field, names, not_after);
    }
    let mut checked = Vec::with_capacity(spec.domains.len());
    for (i, n) in spec.domains.iter().enumerate() {
        let n = n.trim().to_ascii_lowercase();
        if !is_name(&n) {
            let field = format!("{}.domains[{i}]", spec.field);
            return Err(TlsError::new(
                &spec.cert_file,
                &field,
                format!("`{n}` is not a host name or a one-label wildcard (`*.example.com`)"),
            ));
        }
        checked.push(n);
    }
    certified(spec, chain, key, &key_field, checked, not_after)
}

fn certified(
    spec: &CertSpec,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    key_field: &str,
    names: Vec<String>,
    not_after: i64,
) -> Result<Loaded, TlsError> {
    let provider = crate::provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        TlsError::new(&spec.key_file, key_field, format!("not the private key of {}: {e}", spec.cert_file.display()))
    })?;
    Ok(Loaded { key: Arc::new(key), names, not_after })
}

fn read_pem(path: &Path, field: &str) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| TlsError::new(path, field, format!("cannot open: {e}")))?;
    let meta = file.metadata().map_err(|e| TlsError::new(path, field, format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(TlsError::new(path, field, "not a regular file"));
    }
    let mut buf = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| TlsError::new(path, field, format!("cannot read: {e}")))?;
    if buf.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::new(path, field, format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    Ok(buf)
}

/// The DNS names of the subject alternative names, else the common name.
fn own_names(x509: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let sans: Vec<String> = match x509.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::DNSName(n) => Some(n.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if !sans.is_empty() {
        return sans;
    }
    x509.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase).take(1).collect()
}

/// A host name (letters, digits, `-`, labels of 1-63 bytes), or `*.` before one with at least
/// two labels (`*.example.com`, not `*.com` nor `*`).
pub fn is_name(n: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let host = |h: &str| h.len() <= 253 && h.split('.').all(label);
    match n.strip_prefix("*.") {
        Some(rest) => rest.contains('.') && host(rest),
        None => host(n),
    }
}
