//! The rustls server configuration of a TLS listener.

use std::path::Path;
use std::sync::Arc;

use rustls::server::ProducesTickets;
use rustls::{ServerConfig, SupportedCipherSuite};

use crate::certs::TlsError;
use crate::sni::Certificates;

/// The lowest protocol version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// What a listener's configuration is built from, besides its certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerOptions {
    pub min_version: MinVersion,
    /// Cipher suites by name, in order of preference (rustls' and IANA's names, any case:
    /// `TLS13_AES_128_GCM_SHA256` or `TLS_AES_128_GCM_SHA256`,
    /// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`). Empty: rustls' defaults, all of them AEAD
    /// with forward secrecy.
    pub cipher_suites: Vec<String>,
    /// Ask every client for a certificate, optional, for APIs with mutual TLS to check
    /// ([`crate::mtls`]); off, none is asked for (browsers would prompt for one).
    pub ask_client_certs: bool,
}

/// A listener's configuration: `certs` chosen by SNI, `opts`' versions and suites, ALPN
/// `http/1.1`, and session tickets from `ticketer` (keep one across reloads, so tickets issued
/// before a reload still resume). `config_file` and the field names are for errors.
pub fn server_config(
    certs: Arc<Certificates>,
    opts: &ServerOptions,
    ticketer: Arc<dyn ProducesTickets>,
    config_file: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut provider = crate::provider();
    if !opts.cipher_suites.is_empty() {
        let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
        for (i, name) in opts.cipher_suites.iter().enumerate() {
            let Some(suite) = provider.cipher_suites.iter().find(|s| suite_is(s, name)) else {
                let known: Vec<String> = provider.cipher_suites.iter().map(|s| format!("{:?}", s.suite())).collect();
                return Err(TlsError::new(
                    config_file,
                    &format!("tls.cipher_suites[{i}]"),
                    format!("unknown cipher suite `{name}` (known: {})", known.join(", ")),
                ));
            };
            if !chosen.contains(suite) {
                chosen.push(*suite);
            }
        }
        provider.cipher_suites = chosen;
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match opts.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let usable = provider.cipher_suites.iter().any(|s| versions.iter().any(|v| s.version() == *v));
    if !usable {
        return Err(TlsError::new(
            config_file,
            "tls.cipher_suites",
            "none of these cipher suites is of a protocol version `min_version` allows",
        ));
    }
    let builder = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::new(config_file, "tls", format!("inconsistent versions and cipher suites: {e}")))?;
    let builder = if opts.ask_client_certs {
        builder.with_client_cert_verifier(Arc::new(crate::mtls::AskForClientCert::new()))
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The server's order of cipher suites (`cipher_suites`, else rustls', AES-GCM first), not
    // the client's: a TLS audit (testssl.sh) counts a client-chosen order as a finding.
    config.ignore_client_order = true;
    // No session-ID cache: rustls' is one Mutex shared by every worker thread. Resumption is
    // by tickets only, which need no shared state (`SharedTicketer`).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = usize::from(ticketer.enabled());
    config.ticketer = ticketer;
    Ok(Arc::new(config))
}

/// Whether `s` is called `name`: rustls' name (`TLS13_AES_128_GCM_SHA256`) or IANA's
/// (`TLS_AES_128_GCM_SHA256`), any case.
pub(crate) fn suite_is(s: &SupportedCipherSuite, name: &str) -> bool {
    let ours = format!("{:?}", s.suite());
    let iana = ours.replacen("TLS13_", "TLS_", 1);
    ours.eq_ignore_ascii_case(name.trim()) || iana.eq_ignore_ascii_case(name.trim())
}
