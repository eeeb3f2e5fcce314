//! TLS termination's policy, without sockets: certificates read from PEM files and checked
//! ([`certs`]: the key matches the certificate, the certificate is within its validity), the
//! choice of a certificate by the ClientHello's SNI ([`Certificates`]: exact names, then
//! one-label wildcards, then a default; none, and the handshake fails), and the rustls
//! server configuration built from them ([`server_config`]: versions, cipher suites by name,
//! ALPN `http/1.1`, session tickets from a ticketer the caller keeps across reloads).
//!
//! Session tickets whose keys every worker and node derive from one secret and that rotate by
//! period ([`SharedTicketer`]).
//!
//! Every error names the file or the config field and what is wrong with it ([`TlsError`]).
//! Nothing here reads the clock: the caller passes the time (or, for tickets, a clock).

pub mod certs;
pub mod client;
pub mod mtls;
pub mod seal;
mod server;
mod sni;
pub mod tickets;

pub use certs::{load, load_pem, CertSpec, Loaded, TlsError};
pub use client::{client_config, ClientOptions};
pub use rustls::pki_types::pem;
pub use rustls::pki_types::{CertificateDer, ServerName};
pub use rustls::server::ProducesTickets;
pub use rustls::sign::CertifiedKey;
pub use rustls::{ClientConfig, RootCertStore, ServerConfig};
pub use server::{server_config, MinVersion, ServerOptions};
pub use sni::Certificates;
pub use tickets::SharedTicketer;

/// The ticketer of a listener with session tickets off: full handshakes only (rustls then
/// keeps no session cache either, see [`server_config`]).
#[derive(Debug)]
pub struct NoTickets;

impl ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }
    fn lifetime(&self) -> u32 {
        0
    }
    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// The crypto provider every configuration is built with (ring; see Cargo.toml).
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}
