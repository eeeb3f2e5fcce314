//! `[tls.acme]` against a real ACME server (Debian's `pebble`): the proxy orders a certificate
//! for a name, answers the HTTP-01 challenge on its plain listener, writes the certificate to
//! `state_dir` and serves it on its TLS listener, chained to pebble's root.

use std::net::SocketAddr;

use portcullis_tests::client::Conn;
use portcullis_tests::free_port;
use portcullis_tests::harness::{keyless_api, ProxyBuilder};
use portcullis_tests::httpbin::upstream;
use portcullis_tests::pebble::Pebble;
use portcullis_tests::tls::{client_config, rustls};
use rustls::pki_types::pem::PemObject;

#[test]
fn certificates_are_ordered_from_an_acme_authority_and_served() {
    let http_port = free_port();
    let Some(pebble) = Pebble::start(http_port) else { return };
    let up = upstream("origin");
    let state = tempfile::tempdir().unwrap();
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let p = ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
        .listen_port(http_port)
        .app("up", keyless_api("up", "/up/", &up.url(), "", ""))
        .section(&format!(
            "[tls]\nlisten = \"{tls}\"\n\n[tls.acme]\nenabled = true\ndirectory = \"{}\"\nca_file = {:?}\nemail = \"ops@example.com\"\ndomains = [\"localhost\"]\nstate_dir = {:?}\n",
            pebble.directory(),
            pebble.ca_file().display().to_string(),
            state.path().display().to_string(),
        ))
        .start();

    // Trust pebble's root only: a certificate it issued for localhost is what must be served.
    let root = pebble.issuing_root();
    let root = rustls::pki_types::CertificateDer::from_pem_slice(root.as_bytes()).expect("pebble's root, PEM");
    let config = client_config(&[&root]);
    let mut c = portcullis_tests::wait::poll(std::time::Duration::from_secs(60), || {
        Conn::connect_tls(tls, "localhost", config.clone()).ok()
    })
    .unwrap_or_else(|| panic!("no certificate served\nproxy:\n{}\npebble:\n{}", p.log_text(), pebble.log_text()));
    assert_eq!(c.get("/up/get").unwrap().status, 200);
    assert!(state.path().join("certs/localhost.pem").is_file() && state.path().join("certs/localhost.key").is_file());
    assert!(std::fs::read_dir(state.path())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("account-")));
    // The challenge was answered on the plain listener: pebble validated it there.
    assert!(p.log_text().contains("ACME: certificate issued"), "{}", p.log_text());
}

/// With `[storage] redis`, nodes share certificates: one orders a name while holding its lock,
/// answering the challenge through every node (the authority asks whichever it reaches: here
/// the first node's port, whoever ordered), and the others take the certificate from Redis, its
/// key sealed with `[admin] secret`.
#[test]
fn nodes_sharing_redis_order_a_name_once_and_all_serve_it() {
    let Some(redis) = portcullis_tests::redis::RedisServer::start() else { return };
    let http_port = free_port();
    let Some(pebble) = Pebble::start(http_port) else { return };
    let up = upstream("origin");
    let node = |listen: Option<u16>| {
        let state = tempfile::tempdir().unwrap();
        let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut b = ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
            .app("up", keyless_api("up", "/up/", &up.url(), "", ""))
            .section(&format!(
                "[storage]\nredis = \"{}\"\n\n[tls]\nlisten = \"{tls}\"\n\n[tls.acme]\nenabled = true\ndirectory = \"{}\"\nca_file = {:?}\ndomains = [\"localhost\"]\nstate_dir = {:?}\n",
                redis.url(),
                pebble.directory(),
                pebble.ca_file().display().to_string(),
                state.path().display().to_string(),
            ));
        if let Some(port) = listen {
            b = b.listen_port(port);
        }
        (b.start(), tls, state)
    };
    let (a, a_tls, _a_state) = node(Some(http_port));
    let (b, b_tls, _b_state) = node(None);
    let root = pebble.issuing_root();
    let root = rustls::pki_types::CertificateDer::from_pem_slice(root.as_bytes()).expect("pebble's root, PEM");
    let config = client_config(&[&root]);
    for (p, tls) in [(&a, a_tls), (&b, b_tls)] {
        let mut c = portcullis_tests::wait::poll(std::time::Duration::from_secs(60), || {
            Conn::connect_tls(tls, "localhost", config.clone()).ok()
        })
        .unwrap_or_else(|| panic!("no certificate served\n{}\npebble:\n{}", p.log_text(), pebble.log_text()));
        assert_eq!(c.get("/up/get").unwrap().status, 200);
    }
    let issued = [&a, &b].iter().filter(|p| p.log_text().contains("ACME: certificate issued")).count();
    let taken = [&a, &b].iter().filter(|p| p.log_text().contains("ACME: certificate taken from Redis")).count();
    assert_eq!((issued, taken), (1, 1), "one node orders, the other takes:\n{}\n{}", a.log_text(), b.log_text());
    let key = redis.command(&["HGET", "portcullis-acme-cert:localhost", "key"]);
    assert!(!key.contains("PRIVATE KEY"), "the key in Redis is sealed");
}
