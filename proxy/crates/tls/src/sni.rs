//! Which certificate a handshake gets, by the ClientHello's server name (SNI).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::certs::{load, CertSpec, Loaded, TlsError};

/// The certificates of a listener: by exact name, by one-label wildcard (`*.example.com`
/// serves `api.example.com`, not `example.com` nor `a.b.example.com`, as browsers check), and a
/// default for a name none has, or no SNI at all. Without a default, such a handshake fails
/// (rustls sends `unrecognized_name`). Where two certificates claim a name, the later one in
/// the config wins, as in Tyk.
#[derive(Debug, Default)]
pub struct Certificates {
    default: Option<Arc<CertifiedKey>>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the name after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// The earliest notAfter of them all, unix seconds.
    earliest_expiry: Option<i64>,
}

impl Certificates {
    /// Loads the `default` certificate and those chosen by name, checking each at `now` (unix
    /// seconds). Every error is returned, not just the first.
    pub fn build(default: Option<&CertSpec>, by_name: &[CertSpec], now: i64) -> Result<Certificates, Vec<TlsError>> {
        let mut out = Certificates::default();
        let mut errs = Vec::new();
        if let Some(spec) = default {
            match load(spec, now) {
                Ok(l) => {
                    out.note_expiry(l.not_after);
                    out.default = Some(l.key);
                }
                Err(e) => errs.push(e),
            }
        }
        for spec in by_name {
            match load(spec, now) {
                Ok(l) if l.names.is_empty() => errs.push(TlsError::new(
                    &spec.cert_file,
                    &format!("{}.domains", spec.field),
                    "no names to choose it by: the certificate has neither DNS subject alternative names nor a \
                     common name; list its domains",
                )),
                Ok(l) => out.add(l),
                Err(e) => errs.push(e),
            }
        }
        if errs.is_empty() {
            Ok(out)
        } else {
            Err(errs)
        }
    }

    /// Adds a certificate loaded elsewhere (an API definition's), chosen by its names; a name
    /// another one has is this one's now.
    pub fn add(&mut self, l: Loaded) {
        self.note_expiry(l.not_after);
        for n in l.names {
            match n.strip_prefix("*.") {
                Some(parent) => self.wildcard.insert(parent.to_owned(), l.key.clone()),
                None => self.exact.insert(n, l.key.clone()),
            };
        }
    }

    fn note_expiry(&mut self, not_after: i64) {
        self.earliest_expiry = Some(self.earliest_expiry.map_or(not_after, |e| e.min(not_after)));
    }

    /// The certificate for `server_name` (any case; a trailing dot ignored), if any.
    pub fn choose(&self, server_name: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let by_name = server_name.and_then(|n| {
            let n = n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase();
            self.exact.get(&n).or_else(|| n.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)))
        });
        by_name.or(self.default.as_ref())
    }

    /// Whether any certificate is loaded.
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// The earliest notAfter among the certificates (unix seconds), for the expiry metric.
    pub fn earliest_expiry(&self) -> Option<i64> {
        self.earliest_expiry
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name()).cloned()
    }
}
