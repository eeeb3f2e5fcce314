//! What a TLS handshake costs the server, in memory (no sockets): a full TLS 1.3 handshake
//! with an ECDSA P-256 certificate, a resumed one (session ticket, still with a key exchange:
//! `psk_dhe_ke`), and TLS 1.2 full. Both sides run in each iteration; only the server's calls
//! (`ServerConnection::new`, `read_tls`, `process_new_packets`, `write_tls`) are timed. The
//! configuration is `portcullis_tls`'s (`server_config`, the SNI resolver), as the listener
//! will use it (issue 40).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_tls::{server_config, CertSpec, Certificates, ServerOptions};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};

fn setup() -> (Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>, Arc<ClientConfig>) {
    let dir = std::env::temp_dir().join(format!("portcullis-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["api.example.com".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.join("c.pem"), dir.join("c.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let spec = CertSpec { field: "tls".into(), cert_file, key_file, domains: Vec::new() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let certs = Arc::new(Certificates::build(None, &[spec], now).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    let ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    let file = Path::new("bench.toml");
    let tls13 = server_config(certs.clone(), &ServerOptions::default(), ticketer.clone(), file).unwrap();
    let tls12 =
        ServerOptions { cipher_suites: vec!["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()], ..Default::default() };
    let tls12 = server_config(certs, &tls12, ticketer, file).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let mut client = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    (tls13, tls12, Arc::new(client))
}

/// One handshake, both sides in memory; returns whether the server resumed, and the time the
/// server's calls took.
fn handshake(server: &Arc<rustls::ServerConfig>, client: &Arc<ClientConfig>) -> (bool, Duration) {
    let name = ServerName::try_from("api.example.com").unwrap();
    let mut c = ClientConnection::new(client.clone(), name).unwrap();
    let t = Instant::now();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut spent = t.elapsed();
    let mut buf = Vec::with_capacity(8192);
    for _ in 0..10 {
        buf.clear();
        c.write_tls(&mut buf).unwrap();
        if !buf.is_empty() {
            let t = Instant::now();
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets().unwrap();
            spent += t.elapsed();
        }
        buf.clear();
        let t = Instant::now();
        s.write_tls(&mut buf).unwrap();
        spent += t.elapsed();
        if !buf.is_empty() {
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets().unwrap();
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            buf.clear();
            let t = Instant::now();
            s.write_tls(&mut buf).unwrap();
            spent += t.elapsed();
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets().unwrap();
            return (s.handshake_kind() == Some(rustls::HandshakeKind::Resumed), spent);
        }
    }
    panic!("the handshake did not finish")
}

fn server_time(server: &Arc<rustls::ServerConfig>, client: &Arc<ClientConfig>, resumed: bool, iters: u64) -> Duration {
    (0..iters)
        .map(|_| {
            let (r, spent) = handshake(server, client);
            assert_eq!(r, resumed);
            spent
        })
        .sum()
}

fn bench(c: &mut Criterion) {
    let (tls13, tls12, client) = setup();
    // Full: a client that keeps no session (a new client config per iteration would measure
    // its setup too; resumption is turned off instead).
    let mut fresh = (*client).clone();
    fresh.resumption = rustls::client::Resumption::disabled();
    let fresh = Arc::new(fresh);
    c.bench_function("tls/handshake_full_tls13_server", |b| b.iter_custom(|n| server_time(&tls13, &fresh, false, n)));
    c.bench_function("tls/handshake_full_tls12_server", |b| b.iter_custom(|n| server_time(&tls12, &fresh, false, n)));
    assert!(!handshake(&tls13, &client).0);
    c.bench_function("tls/handshake_resumed_tls13_server", |b| {
        b.iter_custom(|n| server_time(&tls13, &client, true, n))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
