//! Certificates from files, chosen by SNI, and whole handshakes in memory against a rustls
//! client (no sockets).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis_tls::{server_config, CertSpec, Certificates, MinVersion, ServerOptions};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};

/// 2026-12-07, unix seconds: the tests' "now".
const NOW: i64 = 1_796_601_600;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("portcullis-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `names`, valid from `from` to `to` (years), written as
/// `<stem>.pem` and `<stem>.key`; returns its DER and the spec naming the files.
fn cert(dir: &Path, stem: &str, names: &[&str], from: i32, to: i32) -> (CertificateDer<'static>, CertSpec) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(to, 1, 1);
    let c = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    std::fs::write(&cert_file, c.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let spec = CertSpec { field: format!("tls.certificates.{stem}"), cert_file, key_file, domains: Vec::new() };
    (c.der().clone(), spec)
}

fn ticketer() -> Arc<dyn rustls::server::ProducesTickets> {
    rustls::crypto::ring::Ticketer::new().unwrap()
}

fn client(trusted: &[&CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in trusted {
        roots.add((*c).clone()).unwrap();
    }
    let mut c = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

/// Runs a handshake in memory; the server's connection when it completes, else the error.
fn handshake(
    server: &Arc<rustls::ServerConfig>,
    client: &Arc<ClientConfig>,
    sni: &str,
) -> Result<(ServerConnection, ClientConnection), String> {
    let mut c = ClientConnection::new(client.clone(), ServerName::try_from(sni.to_owned()).unwrap()).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).unwrap();
        if !buf.is_empty() {
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets().map_err(|e| format!("server: {e}"))?;
        }
        let mut buf = Vec::new();
        s.write_tls(&mut buf).unwrap();
        if !buf.is_empty() {
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets().map_err(|e| format!("client: {e}"))?;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            // Let the server's tickets reach the client.
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets().map_err(|e| format!("client: {e}"))?;
            return Ok((s, c));
        }
    }
    Err("the handshake did not finish".into())
}

fn served(s: &ServerConnection, c: &ClientConnection) -> CertificateDer<'static> {
    assert_eq!(s.alpn_protocol(), Some(&b"http/1.1"[..]));
    c.peer_certificates().unwrap()[0].clone().into_owned()
}

#[test]
fn sni_picks_exact_then_wildcard_then_default() {
    let d = Dir::new("sni");
    let (api, api_spec) = cert(&d.0, "api", &["api.example.com"], 2025, 2030);
    let (wild, wild_spec) = cert(&d.0, "wild", &["*.example.com"], 2025, 2030);
    let (other, mut other_spec) = cert(&d.0, "other", &["other.test", "ignored.test"], 2025, 2030);
    other_spec.domains = vec!["Other.Test".into()];
    // The default's own names are not indexed (it is served for what no other has); they are
    // there so that the client accepts it for these names.
    let names = ["default.test", "a.b.example.com", "example.com", "ignored.test"];
    let (dflt, dflt_spec) = cert(&d.0, "default", &names, 2025, 2030);
    let certs = Certificates::build(Some(&dflt_spec), &[api_spec, wild_spec, other_spec], NOW).unwrap();
    assert_eq!(certs.earliest_expiry(), Some(1_893_456_000), "2030-01-01");
    let server =
        server_config(Arc::new(certs), &ServerOptions::default(), ticketer(), Path::new("portcullis.toml")).unwrap();
    let all = client(&[&api, &wild, &other, &dflt]);
    for (sni, want) in [
        ("api.example.com", &api),
        ("API.Example.Com", &api),
        ("www.example.com", &wild),
        ("other.test", &other),
        ("a.b.example.com", &dflt),
        ("example.com", &dflt),
        ("ignored.test", &dflt),
    ] {
        let (s, c) = handshake(&server, &all, sni).unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(&served(&s, &c), want, "{sni}");
        assert_eq!(s.server_name(), Some(sni.to_ascii_lowercase().as_str()));
    }
    // The wildcard covers one label only: the client refuses it for a.b.example.com, and
    // without a default the server has nothing to offer.
    let d2 = Dir::new("sni-nodefault");
    let (api, api_spec) = cert(&d2.0, "api", &["api.example.com"], 2025, 2030);
    let certs = Certificates::build(None, &[api_spec], NOW).unwrap();
    let server = server_config(Arc::new(certs), &ServerOptions::default(), ticketer(), Path::new("p.toml")).unwrap();
    let err = handshake(&server, &client(&[&api]), "unknown.example.com").unwrap_err();
    assert!(err.starts_with("server:"), "{err}");
}

#[test]
fn tickets_resume_and_versions_follow_the_config() {
    let d = Dir::new("resume");
    let (api, spec) = cert(&d.0, "api", &["api.example.com"], 2025, 2030);
    let certs = Arc::new(Certificates::build(None, &[spec], NOW).unwrap());
    let t = ticketer();
    let server = server_config(certs.clone(), &ServerOptions::default(), t.clone(), Path::new("p.toml")).unwrap();
    let c = client(&[&api]);
    let (s, _) = handshake(&server, &c, "api.example.com").unwrap();
    assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Full));
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    // A configuration rebuilt with the same ticketer (a reload) resumes the session.
    let reloaded = server_config(certs.clone(), &ServerOptions::default(), t, Path::new("p.toml")).unwrap();
    let (s, _) = handshake(&reloaded, &c, "api.example.com").unwrap();
    assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    // TLS 1.2 by cipher suite; refused when the minimum is 1.3.
    let tls12 =
        ServerOptions { cipher_suites: vec!["tls_ecdhe_ecdsa_with_aes_128_gcm_sha256".into()], ..Default::default() };
    let server = server_config(certs.clone(), &tls12, ticketer(), Path::new("p.toml")).unwrap();
    let (s, _) = handshake(&server, &client(&[&api]), "api.example.com").unwrap();
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    let only13 = ServerOptions { min_version: MinVersion::Tls13, ..Default::default() };
    let server = server_config(certs.clone(), &only13, ticketer(), Path::new("p.toml")).unwrap();
    let mut old = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates({
            let mut r = RootCertStore::empty();
            r.add(api.clone()).unwrap();
            r
        })
        .with_no_client_auth();
    old.alpn_protocols = vec![b"http/1.1".to_vec()];
    let err = handshake(&server, &Arc::new(old), "api.example.com").unwrap_err();
    assert!(err.contains("server:"), "a TLS 1.2 client is refused: {err}");
    // Names: IANA's for TLS 1.3 suites too; unknown ones and impossible combinations refused.
    let iana = ServerOptions { cipher_suites: vec!["TLS_AES_256_GCM_SHA384".into()], ..Default::default() };
    assert!(server_config(certs.clone(), &iana, ticketer(), Path::new("p.toml")).is_ok());
    let bad = ServerOptions {
        cipher_suites: vec!["TLS_AES_128_GCM_SHA256".into(), "TLS_RSA_WITH_RC4_128_MD5".into()],
        ..Default::default()
    };
    let e = server_config(certs.clone(), &bad, ticketer(), Path::new("p.toml")).unwrap_err();
    assert_eq!(e.field, "tls.cipher_suites[1]");
    assert!(e.message.contains("unknown cipher suite `TLS_RSA_WITH_RC4_128_MD5`"), "{e}");
    let none = ServerOptions {
        min_version: MinVersion::Tls13,
        cipher_suites: vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()],
        ask_client_certs: false,
    };
    let e = server_config(certs, &none, ticketer(), Path::new("p.toml")).unwrap_err();
    assert_eq!(e.field, "tls.cipher_suites");
}

#[test]
fn bad_files_are_refused_naming_file_and_field() {
    let d = Dir::new("bad");
    let (_, good) = cert(&d.0, "good", &["api.example.com"], 2025, 2030);
    let (_, other) = cert(&d.0, "other", &["api.example.com"], 2025, 2030);
    let mut mismatched = good.clone();
    mismatched.key_file = other.key_file.clone();
    let (_, expired) = cert(&d.0, "expired", &["old.example.com"], 2020, 2024);
    let (_, future) = cert(&d.0, "future", &["new.example.com"], 2030, 2031);
    let mut missing = good.clone();
    missing.cert_file = d.0.join("nope.pem");
    let mut garbage = good.clone();
    garbage.cert_file = d.0.join("garbage.pem");
    std::fs::write(&garbage.cert_file, "hello").unwrap();
    let mut dir = good.clone();
    dir.key_file = d.0.clone();
    let mut bad_name = good.clone();
    bad_name.domains = vec!["api.example.com".into(), "*.com".into()];
    let errs =
        Certificates::build(None, &[mismatched, expired, future, missing, garbage, dir, bad_name], NOW).unwrap_err();
    let got: Vec<(String, String, String)> = errs
        .iter()
        .map(|e| (e.file.file_name().unwrap().to_string_lossy().into_owned(), e.field.clone(), e.message.clone()))
        .collect();
    let want: [(&str, &str, &str); 7] = [
        ("other.key", "tls.certificates.good.key_file", "not the private key of"),
        ("expired.pem", "tls.certificates.expired.cert_file", "expired at"),
        ("future.pem", "tls.certificates.future.cert_file", "not valid before"),
        ("nope.pem", "tls.certificates.good.cert_file", "cannot open"),
        ("garbage.pem", "tls.certificates.good.cert_file", "no CERTIFICATE block"),
        (d.0.file_name().unwrap().to_str().unwrap(), "tls.certificates.good.key_file", "not a regular file"),
        ("good.pem", "tls.certificates.good.domains[1]", "`*.com` is not a host name"),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for ((file, field, msg), (wf, wfield, wmsg)) in got.iter().zip(want) {
        assert_eq!((file.as_str(), field.as_str()), (wf, wfield), "{msg}");
        assert!(msg.contains(wmsg), "{field}: {msg}");
    }
    // The default certificate needs no names; one chosen by name does.
    let (_, nameless) = cert(&d.0, "nameless", &[], 2025, 2030);
    assert!(Certificates::build(Some(&nameless), &[], NOW).is_ok());
    let errs = Certificates::build(None, &[nameless], NOW).unwrap_err();
    assert_eq!(errs[0].field, "tls.certificates.nameless.domains");
}

#[test]
fn host_names() {
    for ok in ["example.com", "a-b.example.com", "*.example.com", "localhost", "xn--bcher-kva.example"] {
        assert!(portcullis_tls::certs::is_name(ok), "{ok}");
    }
    for bad in ["*", "*.com", "a.*.example.com", "-a.example.com", "a..b", "", "ex ample.com", "example.com:443"] {
        assert!(!portcullis_tls::certs::is_name(bad), "{bad}");
    }
}

mod shared_tickets {
    use super::*;
    use portcullis_tls::SharedTicketer;
    use rustls::server::ProducesTickets;
    use std::sync::atomic::{AtomicU64, Ordering};

    static CLOCK: AtomicU64 = AtomicU64::new(1_796_601_600);

    fn clock() -> u64 {
        CLOCK.load(Ordering::Relaxed)
    }

    /// A clock no other test moves.
    fn still() -> u64 {
        1_796_601_600
    }

    const SECRET: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn tickets_open_on_every_ticketer_of_the_secret_for_two_periods() {
        let a = SharedTicketer::new(SECRET, 3600, clock).unwrap();
        let b = SharedTicketer::new(SECRET, 3600, clock).unwrap();
        let other = SharedTicketer::new(b"another secret, thirty-two bytes", 3600, clock).unwrap();
        let t = a.encrypt(b"session state").unwrap();
        assert_ne!(&t[t.len() - 13..], b"session state");
        assert_eq!(b.decrypt(&t).as_deref(), Some(&b"session state"[..]), "another worker or node");
        assert_eq!(other.decrypt(&t), None, "another secret");
        let mut tampered = t.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(b.decrypt(&tampered), None);
        assert_eq!(b.decrypt(&t[..20]), None);
        assert_ne!(a.encrypt(b"x"), a.encrypt(b"x"), "a fresh nonce each time");
        // The next period still opens it; the one after does not.
        CLOCK.fetch_add(3600, Ordering::Relaxed);
        assert!(b.decrypt(&t).is_some());
        CLOCK.fetch_add(3600, Ordering::Relaxed);
        assert_eq!(b.decrypt(&t), None);
        assert_eq!(a.lifetime(), 3600);
        assert!(SharedTicketer::new(b"short", 3600, clock).is_err());
        assert!(SharedTicketer::new(SECRET, 10, clock).is_err());
    }

    #[test]
    fn a_session_resumes_on_another_configuration_with_the_same_secret() {
        let d = Dir::new("shared");
        let (api, spec) = cert(&d.0, "api", &["api.example.com"], 2025, 2030);
        let certs = Arc::new(Certificates::build(None, &[spec], NOW).unwrap());
        let one: Arc<dyn ProducesTickets> = Arc::new(SharedTicketer::new(SECRET, 3600, still).unwrap());
        let two: Arc<dyn ProducesTickets> = Arc::new(SharedTicketer::new(SECRET, 3600, still).unwrap());
        let node1 = server_config(certs.clone(), &ServerOptions::default(), one, Path::new("p.toml")).unwrap();
        let node2 = server_config(certs, &ServerOptions::default(), two, Path::new("p.toml")).unwrap();
        let c = client(&[&api]);
        let (s, _) = handshake(&node1, &c, "api.example.com").unwrap();
        assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Full));
        let (s, _) = handshake(&node2, &c, "api.example.com").unwrap();
        assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    }
}
