//! `[tls]` -> the TLS listener's rustls configuration, built with every snapshot from the
//! certificate files as they are then: a file that does not load is an error of the load, so a
//! reload with a bad certificate keeps the running snapshot and its certificates.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use portcullis_tls::{server_config, CertSpec, Certificates, ServerConfig, TlsError};

use super::file::TlsConfig;
use super::ConfigError;

/// A TLS listener's configuration, ready for handshakes.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub config: Arc<ServerConfig>,
    /// The earliest notAfter of its certificates, unix seconds (`/metrics`).
    pub earliest_expiry: Option<i64>,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn config_error(e: TlsError) -> ConfigError {
    ConfigError::new(&e.file, e.field, "", e.message)
}

/// The listener `tls` configures (`None`: no `listen`), its certificates read now.
/// With `ask_client_certs` (an API with mutual TLS is loaded), every client is asked for a
/// certificate, which it may decline.
/// `api_certs` (the loaded definitions' `certificates`) are served by their names, over the
/// listener's own.
pub(crate) fn listener(
    tls: &TlsConfig,
    ask_client_certs: bool,
    api_certs: Vec<portcullis_tls::Loaded>,
) -> Result<Option<TlsListener>, Vec<ConfigError>> {
    if !tls.enabled() {
        return Ok(None);
    }
    let now = unix_now();
    let default = (!tls.cert_file.as_os_str().is_empty()).then(|| CertSpec {
        field: "tls".into(),
        cert_file: tls.cert_file.clone(),
        key_file: tls.key_file.clone(),
        domains: Vec::new(),
    });
    let named: Vec<CertSpec> = tls
        .certificates
        .iter()
        .enumerate()
        .map(|(i, c)| CertSpec {
            field: format!("tls.certificates[{i}]"),
            cert_file: c.cert_file.clone(),
            key_file: c.key_file.clone(),
            domains: c.domains.clone(),
        })
        .collect();
    let mut named = named;
    if tls.acme.enabled {
        named.extend(ordered(&tls.acme.state_dir, i64::try_from(now).unwrap_or(i64::MAX)));
    }
    let mut certs = Certificates::build(default.as_ref(), &named, i64::try_from(now).unwrap_or(i64::MAX))
        .map_err(|errs| errs.into_iter().map(config_error).collect::<Vec<_>>())?;
    for c in api_certs {
        certs.add(c);
    }
    if certs.is_empty() && !tls.acme.enabled {
        return Err(vec![ConfigError::new(
            Path::new("[tls]"),
            "tls.cert_file",
            "",
            "a TLS listener needs a certificate: set cert_file and key_file, add [[tls.certificates]], give an API \
             definition `certificates`, or enable [tls.acme]",
        )]);
    }
    let earliest_expiry = certs.earliest_expiry();
    let ticketer: Arc<dyn portcullis_tls::ProducesTickets> = if tls.session_tickets {
        let secret = if tls.ticket_secret_file.as_os_str().is_empty() {
            portcullis_tls::tickets::process_secret().to_vec()
        } else {
            read_secret(&tls.ticket_secret_file)?
        };
        let t = portcullis_tls::SharedTicketer::new(&secret, tls.ticket_key_period_secs, unix_now)
            .map_err(|m| vec![ConfigError::new(&tls.ticket_secret_file, "tls.ticket_secret_file", "", m)])?;
        Arc::new(t)
    } else {
        Arc::new(portcullis_tls::NoTickets)
    };
    // Versions and suites were checked with the config file (`TlsConfig::validate`).
    let opts = portcullis_tls::ServerOptions { ask_client_certs, ..tls.server_options() };
    let config = server_config(Arc::new(certs), &opts, ticketer, &tls.cert_file).map_err(|e| vec![config_error(e)])?;
    Ok(Some(TlsListener { config, earliest_expiry }))
}

/// Where `[tls.acme]` keeps the certificate of `name` and its key (under `state_dir`).
pub fn acme_files(state_dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = state_dir.join("certs");
    (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")))
}

/// The certificates `[tls.acme]` ordered that can be served now, chosen by their own names. One
/// that does not load (expired while the authority was unreachable, cut short) is left out with
/// a warning, not an error: the next order replaces it, and the rest of the configuration
/// must not wait for it.
fn ordered(state_dir: &Path, now: i64) -> Vec<CertSpec> {
    let Ok(entries) = std::fs::read_dir(state_dir.join("certs")) else { return Vec::new() };
    let mut out = Vec::new();
    let mut names: Vec<String> =
        entries.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".pem").map(str::to_owned)).collect();
    names.sort();
    for name in names {
        let (cert_file, key_file) = acme_files(state_dir, &name);
        let spec = CertSpec { field: format!("tls.acme ({name})"), cert_file, key_file, domains: Vec::new() };
        match portcullis_tls::load(&spec, now) {
            Ok(_) => out.push(spec),
            Err(e) => tracing::warn!(error = %e, "an ordered certificate is not served (it will be ordered again)"),
        }
    }
    out
}

/// The ticket secret in `path`: its bytes as they are (at least 32).
fn read_secret(path: &Path) -> Result<Vec<u8>, Vec<ConfigError>> {
    let err = |m: String| vec![ConfigError::new(path, "tls.ticket_secret_file", "", m)];
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if !meta.is_file() || meta.len() > 4096 {
        return Err(err("must be a regular file of at most 4096 bytes".into()));
    }
    let secret = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if secret.len() < portcullis_tls::tickets::MIN_SECRET_BYTES {
        return Err(err(format!(
            "has {} bytes; at least {} are needed (e.g. `head -c 48 /dev/urandom > {}`)",
            secret.len(),
            portcullis_tls::tickets::MIN_SECRET_BYTES,
            path.display()
        )));
    }
    Ok(secret)
}
