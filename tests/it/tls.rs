//! TLS termination (`[tls]`): the real binary's TLS listener on loopback, a rustls client that
//! trusts certificates made for the test, and the httpbin upstream behind it.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use portcullis_tests::client::Conn;
use portcullis_tests::harness::{keyless_api, Proxy, ProxyBuilder};
use portcullis_tests::httpbin::{pattern, upstream, Httpbin};
use portcullis_tests::tls::{
    client_config, client_config_with, common_name_only, rustls, self_signed, self_signed_between, server_config,
    TestCert,
};
use portcullis_tests::{free_port, wait_until, WAIT};

/// A proxy with `[tls]` = `tls` (listen is added) and one keyless API `/up/` to `up`.
fn start(up: &Httpbin, tls: &str) -> (Proxy, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let p = ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
        .app("up", keyless_api("up", "/up/", &up.url(), "", ""))
        .section(&format!("[tls]\nlisten = \"{addr}\"\n{tls}\n"))
        .start();
    (p, addr)
}

/// `[tls]` lines for a default certificate written into `dir` as `<stem>`.
fn default_cert(dir: &Path, stem: &str, c: &TestCert) -> String {
    let (cert, key) = c.write(dir, stem);
    format!("cert_file = {:?}\nkey_file = {:?}\n", cert.display().to_string(), key.display().to_string())
}

fn tls_conn(addr: SocketAddr, name: &str, trust: &TestCert) -> Conn {
    Conn::connect_tls(addr, name, client_config(&[&trust.der])).expect("TLS connection")
}

/// The certificate the server presented on `c`.
fn served(c: &Conn) -> Vec<u8> {
    c.wire().tls().expect("a TLS connection").peer_certificates().expect("certificates")[0].to_vec()
}

/// Requests over TLS go through the same phases as plain ones, keep-alive included, and every
/// body shape arrives whole: a request body, a large Content-Length response (spliced on a
/// plain connection, encrypted here), a chunked one with trailers, a close-delimited one.
#[test]
fn https_requests_are_served_like_plain_ones() {
    let up = upstream("origin");
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(&["localhost"]);
    let (p, addr) = start(&up, &default_cert(dir.path(), "default", &cert));

    let mut c = tls_conn(addr, "localhost", &cert);
    let tls = c.wire().tls().unwrap();
    assert_eq!(tls.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(tls.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let r = c.get("/up/get").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("origin"));
    // The same connection, a request body out and back.
    let body = pattern(300_000);
    let r = c.request("POST", "/up/echo", "", &body).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == body, "echoed body differs");
    // Bodies larger than a TLS record and than the proxy's buffer, on the same connection.
    for n in [16 * 1024, 256 * 1024, 2_000_000] {
        let r = c.get(&format!("/up/bytes/{n}")).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body == pattern(n), "{n} bytes differ");
    }
    let r = c.get("/up/stream-bytes/100000").unwrap();
    assert_eq!(r.body.len(), 100_000);
    assert!(r.trailers.iter().any(|(k, _)| k.eq_ignore_ascii_case("x-checksum")), "{:?}", r.trailers);
    let r = c.get("/up/close-delimited/70000").unwrap();
    assert!(r.body == pattern(70_000));
    // A TLS 1.2 client too.
    let mut c12 = Conn::connect_tls(addr, "localhost", client_config_with(&[&cert.der], &[&rustls::version::TLS12]))
        .expect("TLS 1.2");
    assert_eq!(c12.wire().tls().unwrap().protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(c12.get("/up/bytes/50000").unwrap().body, pattern(50_000));
    // The plain listener still serves.
    assert_eq!(Conn::connect(p.listen).unwrap().get("/up/get").unwrap().status, 200);
    wait_until("two handshakes counted", WAIT, || summed(&p, "portcullis_tls_handshakes_total") >= 2.0);
    // The certificate is valid until 2100-01-01.
    assert!(p.metrics().contains("portcullis_tls_certificate_expiry_timestamp_seconds 4102444800"), "{}", p.metrics());
}

/// A per-worker counter summed over the workers.
fn summed(p: &Proxy, name: &str) -> f64 {
    p.metrics()
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An upgraded connection (a WebSocket) over TLS: the tunnel decrypts and encrypts both ways.
#[test]
fn upgrades_tunnel_over_tls() {
    let up = upstream("origin");
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(&["localhost"]);
    let (_p, addr) = start(&up, &default_cert(dir.path(), "default", &cert));
    let mut ws = tls_conn(addr, "localhost", &cert);
    ws.send(b"GET /up/ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert_eq!(ws.read_head().unwrap().status, 101);
    for round in 0..3 {
        let msg = pattern(40_000 + round);
        ws.send(&msg).unwrap();
        let mut back = vec![0; msg.len()];
        ws.reader().read_exact(&mut back).unwrap();
        assert!(back == msg, "round {round}: echo differs");
    }
}

/// SNI picks the certificate: exact names first, then a one-label wildcard, then the default;
/// with no default, a name nobody has fails the handshake, and a client without SNI too.
#[test]
fn sni_chooses_the_certificate() {
    let up = upstream("origin");
    let dir = tempfile::tempdir().unwrap();
    let (api, wild, other) =
        (self_signed(&["api.example.com"]), self_signed(&["*.example.com"]), self_signed(&["other.test"]));
    let (a_cert, a_key) = api.write(dir.path(), "api");
    let (w_cert, w_key) = wild.write(dir.path(), "wild");
    let (o_cert, o_key) = other.write(dir.path(), "other");
    let entry = |domains: &str, c: &Path, k: &Path| {
        format!(
            "[[tls.certificates]]\n{domains}cert_file = {:?}\nkey_file = {:?}\n",
            c.display().to_string(),
            k.display().to_string()
        )
    };
    let tls = [
        entry("", &a_cert, &a_key),
        entry("", &w_cert, &w_key),
        entry("domains = [\"other.test\", \"alias.test\"]\n", &o_cert, &o_key),
    ]
    .concat();
    let (_p, addr) = start(&up, &tls);
    let all = client_config(&[&api.der, &wild.der, &other.der]);
    let name_served = |name: &str| {
        let c = Conn::connect_tls(addr, name, all.clone()).map_err(|e| e.to_string())?;
        Ok::<_, String>(served(&c))
    };
    assert_eq!(name_served("api.example.com").unwrap(), api.der.to_vec());
    assert_eq!(name_served("API.Example.COM").unwrap(), api.der.to_vec(), "names are compared in any case");
    assert_eq!(name_served("www.example.com").unwrap(), wild.der.to_vec());
    assert_eq!(name_served("other.test").unwrap(), other.der.to_vec());
    // A name the entry lists but its certificate lacks: served, and the client refuses it.
    let e = name_served("alias.test").unwrap_err();
    assert!(e.contains("NotValidForName") || e.to_lowercase().contains("name"), "{e}");
    // Two labels below the wildcard, and an unknown name: no certificate, no handshake.
    assert!(name_served("a.b.example.com").is_err());
    assert!(name_served("unknown.test").is_err());
    // Requests flow on the chosen certificate.
    let mut c = Conn::connect_tls(addr, "www.example.com", all.clone()).unwrap();
    assert_eq!(c.get("/up/get").unwrap().status, 200);
}

/// A reload reads the certificate files again: new handshakes get the new certificate while an
/// open connection goes on; a file that does not load rejects the reload, naming the file, and
/// the running certificate stays.
#[test]
fn reloads_swap_certificates_and_a_bad_file_keeps_the_running_one() {
    let up = upstream("origin");
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (self_signed(&["localhost"]), self_signed(&["localhost"]));
    let (p, addr) = start(&up, &default_cert(dir.path(), "default", &first));
    let mut open = Conn::connect_tls(addr, "localhost", client_config(&[&first.der, &second.der])).unwrap();
    assert_eq!(served(&open), first.der.to_vec());
    assert_eq!(open.get("/up/get").unwrap().status, 200);

    second.write(dir.path(), "default");
    let r = p.admin_get("/tyk/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    // A client of its own: with the first one's ticket it would resume the old session, whose
    // certificate it would report.
    let both = || client_config(&[&first.der, &second.der]);
    let fresh = Conn::connect_tls(addr, "localhost", both()).unwrap();
    assert_eq!(served(&fresh), second.der.to_vec(), "new handshakes get the new certificate");
    assert_eq!(open.get("/up/get").unwrap().status, 200, "an open connection goes on");

    // A key that is not the certificate's, then an expired certificate: each rejects the reload.
    std::fs::write(dir.path().join("default.key"), &first.key_pem).unwrap();
    let r = p.admin_get("/tyk/reload");
    assert_ne!(r.status, 200, "a mismatched key was accepted: {}", r.text());
    assert!(r.text().contains("default.key") || r.text().contains("default.pem"), "{}", r.text());
    let expired = self_signed_between(&["localhost"], 2001, 2002);
    expired.write(dir.path(), "default");
    let r = p.admin_get("/tyk/reload");
    assert_ne!(r.status, 200, "an expired certificate was accepted: {}", r.text());
    assert!(r.text().contains("default.pem") && r.text().contains("expired"), "{}", r.text());
    std::fs::write(dir.path().join("default.pem"), "not a certificate").unwrap();
    let r = p.admin_get("/tyk/reload");
    assert_ne!(r.status, 200);
    assert!(r.text().contains("tls.cert_file"), "{}", r.text());
    let still = Conn::connect_tls(addr, "localhost", both()).unwrap();
    assert_eq!(served(&still), second.der.to_vec(), "the running certificate stays");
}

/// A returning client resumes its session with a ticket, on any worker.
#[test]
fn sessions_resume_with_tickets() {
    let up = upstream("origin");
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(&["localhost"]);
    let (_p, addr) = start(&up, &default_cert(dir.path(), "default", &cert));
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let config = client_config_with(&[&cert.der], versions);
        let mut first = Conn::connect_tls(addr, "localhost", config.clone()).unwrap();
        // TLS 1.3 tickets arrive after the handshake: a request lets the client read them.
        assert_eq!(first.get("/up/get").unwrap().status, 200);
        assert_eq!(first.wire().tls().unwrap().handshake_kind(), Some(rustls::HandshakeKind::Full));
        drop(first);
        for _ in 0..4 {
            let mut again = Conn::connect_tls(addr, "localhost", config.clone()).unwrap();
            assert_eq!(
                again.wire().tls().unwrap().handshake_kind(),
                Some(rustls::HandshakeKind::Resumed),
                "{versions:?}"
            );
            assert_eq!(again.get("/up/get").unwrap().status, 200);
        }
    }
}

/// `min_version = "1.3"` refuses a TLS 1.2 client; a TLS 1.2-only client offered no 1.3 cannot
/// be downgraded into 1.2 either.
#[test]
fn a_tls13_listener_refuses_tls12() {
    let up = upstream("origin");
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(&["localhost"]);
    let tls = format!("min_version = \"1.3\"\n{}", default_cert(dir.path(), "default", &cert));
    let (_p, addr) = start(&up, &tls);
    let only12 = client_config_with(&[&cert.der], &[&rustls::version::TLS12]);
    assert!(Conn::connect_tls(addr, "localhost", only12).is_err());
    let mut c = tls_conn(addr, "localhost", &cert);
    assert_eq!(c.get("/up/get").unwrap().status, 200);
}

/// What is not a TLS handshake is refused and counted, and costs no other connection anything:
/// plain HTTP to the TLS port, a malformed ClientHello, a record cut short, garbage, and a
/// client that connects and sends nothing (closed after `handshake_timeout_ms`).
#[test]
fn malformed_handshakes_are_refused_and_counted() {
    let up = upstream("origin");
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(&["localhost"]);
    let tls = format!("handshake_timeout_ms = 300\n{}", default_cert(dir.path(), "default", &cert));
    let (p, addr) = start(&up, &tls);
    let mut held = tls_conn(addr, "localhost", &cert);
    let bad: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        // A handshake record holding a ClientHello of nonsense.
        b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\xff\xff\xff\xff",
        // A record header promising more than comes, then EOF.
        b"\x16\x03\x01\x40\x00\x01\x00",
        &[0xff; 64],
        b"",
    ];
    for raw in bad {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        s.write_all(raw).unwrap();
        if raw.len() == 7 {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        // An alert at most, then the close; never an HTTP answer.
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(got.len() <= 7 && !got.starts_with(b"HTTP"), "{raw:?} got {got:?}");
        if let Some(&t) = got.first() {
            assert_eq!(t, 0x15, "an alert record");
        }
    }
    assert_eq!(held.get("/up/get").unwrap().status, 200, "the held connection is unaffected");
    wait_until("five failed handshakes counted", WAIT, || summed(&p, "portcullis_tls_handshake_failures_total") >= 5.0);
}

/// Certificates that must not be served stop the start, naming file and field: an expired
/// one, one whose key is another's, a missing file; and a `[tls]` without certificates.
#[test]
fn bad_certificates_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let good = self_signed(&["localhost"]);
    let expired = self_signed_between(&["localhost"], 2001, 2002);
    let other = self_signed(&["localhost"]);
    let (gc, gk) = good.write(dir.path(), "good");
    let (ec, ek) = expired.write(dir.path(), "expired");
    let (_, ok) = other.write(dir.path(), "other");
    let cases: [(String, &[&str]); 4] = [
        (
            format!("cert_file = {:?}\nkey_file = {:?}", ec.display().to_string(), ek.display().to_string()),
            &["expired.pem", "expired"],
        ),
        (
            format!("cert_file = {:?}\nkey_file = {:?}", gc.display().to_string(), ok.display().to_string()),
            &["tls.key_file", "other.key"],
        ),
        (
            format!("cert_file = \"missing.pem\"\nkey_file = {:?}", gk.display().to_string()),
            &["missing.pem", "tls.cert_file"],
        ),
        (String::new(), &["tls.cert_file", "needs a certificate"]),
    ];
    for (lines, wants) in cases {
        let config = dir.path().join("p.toml");
        std::fs::create_dir_all(dir.path().join("apps")).unwrap();
        std::fs::write(
            &config,
            format!("[proxy]\nlisten = \"127.0.0.1:{}\"\n[apps]\ndir = \"apps\"\n[tls]\nlisten = \"127.0.0.1:{}\"\n{lines}\n", free_port(), free_port()),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{lines}: accepted\n{text}");
        for w in wants {
            assert!(text.contains(w), "{lines}: no {w:?} in\n{text}");
        }
    }
}

/// `portcullis run` with a certificate that does not load does not start (it would serve no
/// TLS at all), and says which file.
#[test]
fn run_stops_on_a_bad_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let expired = self_signed_between(&["localhost"], 2001, 2002);
    let (c, k) = expired.write(dir.path(), "expired");
    std::fs::create_dir_all(dir.path().join("apps")).unwrap();
    let config = dir.path().join("p.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n[apps]\ndir = \"apps\"\n[tls]\nlisten = \"127.0.0.1:{}\"\ncert_file = {:?}\nkey_file = {:?}\n",
            free_port(),
            free_port(),
            free_port(),
            c.display().to_string(),
            k.display().to_string()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = portcullis_tests::wait::child_exit(&mut child, WAIT);
    if status.is_none() {
        let _ = child.kill();
    }
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = status.expect("portcullis run kept running with an expired certificate");
    assert!(!status.success());
    assert!(err.contains("expired.pem") && err.contains("expired"), "{err}");
}

/// With `[storage] redis`, nodes share the ticket secret through Redis: a session begun on one
/// node resumes on the other.
#[test]
fn nodes_sharing_redis_resume_each_others_sessions() {
    let Some(redis) = portcullis_tests::redis::RedisServer::start() else { return };
    let up = upstream("origin");
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(&["localhost"]);
    let tls = default_cert(dir.path(), "default", &cert);
    let node = || {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let p = ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
            .app("up", keyless_api("up", "/up/", &up.url(), "", ""))
            .section(&format!("[storage]\nredis = \"{}\"\n\n[tls]\nlisten = \"{addr}\"\n{tls}\n", redis.url()))
            .start();
        (p, addr)
    };
    let ((_a, a), (_b, b)) = (node(), node());
    let config = client_config_with(&[&cert.der], &[&rustls::version::TLS13]);
    let mut first = Conn::connect_tls(a, "localhost", config.clone()).unwrap();
    assert_eq!(first.get("/up/get").unwrap().status, 200);
    drop(first);
    let mut other = Conn::connect_tls(b, "localhost", config).unwrap();
    assert_eq!(other.wire().tls().unwrap().handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    assert_eq!(other.get("/up/get").unwrap().status, 200);
    let secret = redis.command(&["STRLEN", "portcullis-tls-ticket-secret"]);
    assert_eq!(secret.trim(), "48", "the shared secret is in Redis");
}

/// An HTTPS upstream's configuration: `cert`, TLS 1.2 and 1.3, clients signed by `clients`.
fn tls_server(cert: &TestCert, clients: &[&TestCert]) -> Arc<rustls::ServerConfig> {
    server_config(cert, rustls::DEFAULT_VERSIONS, clients)
}

fn tls_server_with(
    cert: &TestCert,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ServerConfig> {
    server_config(cert, versions, &[])
}

/// A proxy with `[proxy]` lines `proxy` and one API `/up/` to `target` with `extra_proxy`
/// fields of its `proxy` object and `extra_top` top-level fields.
fn start_api(target: &str, proxy: &str, extra_proxy: &str, extra_top: &str) -> Proxy {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
        .app("up", keyless_api("up", "/up/", target, extra_proxy, extra_top))
        .proxy_config(proxy)
        .start()
}

fn ca_line(dir: &Path, c: &TestCert, stem: &str) -> String {
    let (cert, _) = c.write(dir, stem);
    format!("upstream_ca_file = {:?}", cert.display().to_string())
}

/// `https://` targets: the upstream's certificate is verified against `[proxy]
/// upstream_ca_file`, the connection is pooled and reused like a plain one, and bodies of every
/// size pass both ways, from plain and from TLS clients.
#[test]
fn https_upstreams_are_verified_and_pooled() {
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(&["localhost"]);
    let up = Httpbin::start_tls("127.0.0.1:0", "secure", tls_server(&cert, &[])).unwrap();
    let p = start_api(&up.https_url("localhost"), &ca_line(dir.path(), &cert, "ca"), "", "");
    let mut c = Conn::connect(p.listen).unwrap();
    for _ in 0..3 {
        let r = c.get("/up/get").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-upstream"), Some("secure"));
    }
    let body = pattern(500_000);
    let r = c.request("POST", "/up/echo", "", &body).unwrap();
    assert!(r.status == 200 && r.body == body, "echo over TLS both ways");
    let r = c.get("/up/bytes/2000000").unwrap();
    assert!(r.body == pattern(2_000_000));
    assert_eq!(c.get("/up/stream-bytes/70000").unwrap().body.len(), 70_000);
    assert_eq!(up.accepted(), 1, "one upstream connection, pooled and reused");
    // The Host header the upstream sees is the target's.
    let r = c.get("/up/headers").unwrap();
    assert_eq!(r.json()["headers"]["Host"], format!("localhost:{}", up.addr.port()));
}

/// TLS at both ends: a client over TLS to an HTTPS upstream.
#[test]
fn tls_clients_reach_https_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    let (edge, origin) = (self_signed(&["localhost"]), self_signed(&["localhost"]));
    let up = Httpbin::start_tls("127.0.0.1:0", "secure", tls_server(&origin, &[])).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let p = ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
        .app("up", keyless_api("up", "/up/", &up.https_url("localhost"), "", ""))
        .proxy_config(&ca_line(dir.path(), &origin, "origin"))
        .section(&format!("[tls]\nlisten = \"{addr}\"\n{}\n", default_cert(dir.path(), "edge", &edge)))
        .start();
    let mut c = tls_conn(addr, "localhost", &edge);
    assert_eq!(c.get("/up/bytes/300000").unwrap().body, pattern(300_000));
    assert_eq!(c.request("POST", "/up/echo", "", &pattern(100_000)).unwrap().body, pattern(100_000));
    drop(p);
}

/// What Tyk's `proxy.transport` asks: a certificate that does not verify is a 500, as Tyk
/// answers (`ssl_insecure_skip_verify` accepts it); `ssl_force_common_name_check` accepts a
/// certificate by its common name alone and refuses another name; the version bounds hold.
#[test]
fn upstream_verification_follows_the_transport_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(&["localhost"]);
    let stranger = self_signed(&["localhost"]);
    let trust = ca_line(dir.path(), &stranger, "stranger");
    let up = Httpbin::start_tls("127.0.0.1:0", "secure", tls_server(&cert, &[])).unwrap();
    let status = |p: &Proxy| Conn::connect(p.listen).unwrap().get("/up/get").unwrap();

    let p = start_api(&up.https_url("localhost"), &trust, "", "");
    let r = status(&p);
    assert_eq!(r.status, 500, "an unverified certificate: {}", r.text());
    assert!(r.text().contains("There was a problem proxying the request"), "{}", r.text());
    let p = start_api(&up.https_url("localhost"), &trust, r#", "transport": {"ssl_insecure_skip_verify": true}"#, "");
    assert_eq!(status(&p).status, 200);

    // A name the certificate does not have: refused, unless skipped.
    let ca = ca_line(dir.path(), &cert, "ca");
    let p = start_api(&up.https_url("127.0.0.1"), &ca, "", "");
    assert_eq!(status(&p).status, 500);

    // The common name check: a certificate with CN=localhost and no subject alternative names.
    let cn = common_name_only("localhost");
    let cn_up = Httpbin::start_tls("127.0.0.1:0", "cn", tls_server(&cn, &[])).unwrap();
    let cn_ca = ca_line(dir.path(), &cn, "cn");
    let p = start_api(&cn_up.https_url("localhost"), &cn_ca, "", "");
    assert_eq!(status(&p).status, 500, "no subject alternative name for localhost");
    let check = r#", "transport": {"ssl_force_common_name_check": true}"#;
    let p = start_api(&cn_up.https_url("localhost"), &cn_ca, check, "");
    assert_eq!(status(&p).status, 200);
    let p = start_api(&cn_up.https_url("127.0.0.1"), &cn_ca, check, "");
    assert_eq!(status(&p).status, 500, "the common name is not 127.0.0.1");

    // Versions: a TLS 1.2-only upstream against ssl_min_version 772 (TLS 1.3), and the other way.
    let old = Httpbin::start_tls("127.0.0.1:0", "old", tls_server_with(&cert, &[&rustls::version::TLS12])).unwrap();
    let p = start_api(&old.https_url("localhost"), &ca, r#", "transport": {"ssl_min_version": 772}"#, "");
    assert_eq!(status(&p).status, 500);
    let p = start_api(&old.https_url("localhost"), &ca, r#", "transport": {"ssl_min_version": 771}"#, "");
    assert_eq!(status(&p).status, 200);
    let new = Httpbin::start_tls("127.0.0.1:0", "new", tls_server_with(&cert, &[&rustls::version::TLS13])).unwrap();
    let p = start_api(&new.https_url("localhost"), &ca, r#", "transport": {"ssl_max_version": 771}"#, "");
    assert_eq!(status(&p).status, 500);
}

/// `upstream_certificates`: the client certificate for the target's host, by Tyk's patterns,
/// presented to an upstream that requires one; without it the upstream refuses.
#[test]
fn upstream_client_certificates_are_presented() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = (self_signed(&["localhost"]), self_signed(&["portcullis.test"]));
    let up = Httpbin::start_tls("127.0.0.1:0", "mtls", tls_server(&server, &[&client])).unwrap();
    let ca = ca_line(dir.path(), &server, "ca");
    let both = dir.path().join("client.pem");
    std::fs::write(&both, format!("{}{}", client.cert_pem, client.key_pem)).unwrap();
    let p = start_api(&up.https_url("localhost"), &ca, "", "");
    assert_eq!(Conn::connect(p.listen).unwrap().get("/up/get").unwrap().status, 500, "no client certificate");
    let certs = format!(
        r#""upstream_certificates": {{"*.example.com": "nope.pem", "localhost": {:?}}},"#,
        both.display().to_string()
    );
    let p = start_api(&up.https_url("localhost"), &ca, "", &certs);
    let r = Conn::connect(p.listen).unwrap().get("/up/get").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Inline PEM, for every host.
    let inline = serde_json::to_string(&format!("{}{}", client.cert_pem, client.key_pem)).unwrap();
    let p = start_api(&up.https_url("localhost"), &ca, "", &format!(r#""upstream_certificates": {{"*": {inline}}},"#));
    assert_eq!(Conn::connect(p.listen).unwrap().get("/up/get").unwrap().status, 200);
    // Disabled: not presented.
    let off = format!(r#""upstream_certificates_disabled": true, "upstream_certificates": {{"*": {inline}}},"#);
    let p = start_api(&up.https_url("localhost"), &ca, "", &off);
    assert_eq!(Conn::connect(p.listen).unwrap().get("/up/get").unwrap().status, 500);
}

/// Definitions whose upstream TLS cannot be honoured are refused, naming the field: an unknown
/// cipher suite, a version that is none, a client certificate that is not there, an upstream
/// HTTP proxy, public key pins.
#[test]
fn upstream_tls_settings_that_cannot_be_honoured_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(&["localhost"]);
    let ca = ca_line(dir.path(), &cert, "ca");
    let cases: [(&str, &str, &str); 5] = [
        (r#", "transport": {"ssl_ciphers": ["TLS_NOT_A_SUITE"]}"#, "", "ssl_ciphers"),
        (r#", "transport": {"ssl_min_version": 999}"#, "", "ssl_min_version"),
        ("", r#""upstream_certificates": {"*": "missing.pem"},"#, "upstream_certificates"),
        (r#", "transport": {"proxy_url": "http://proxy:3128"}"#, "", "proxy.transport.proxy_url"),
        ("", r#""pinned_public_keys": {"*": "abc"},"#, "pinned_public_keys"),
    ];
    for (extra_proxy, extra_top, field) in cases {
        let p = start_api("https://localhost:1/", &ca, extra_proxy, extra_top);
        let r = p.admin_get("/hello");
        let text = p.log_text();
        assert!(text.contains(field), "{field}: not named in the log\n{text}");
        assert_eq!(
            Conn::connect(p.listen).unwrap().get("/up/get").unwrap().status,
            404,
            "{field}: served: {}",
            r.text()
        );
    }
}

/// testssl.sh (Debian's package) against the TLS listener finds nothing above LOW: protocols,
/// cipher suites, known vulnerabilities (Heartbleed, ROBOT, renegotiation, CRIME, BREACH,
/// POODLE, SWEET32, FREAK, DROWN, LOGJAM, BEAST, LUCKY13, RC4), session resumption. The
/// certificate is a test authority's (trusted with `--add-ca`), with a CRL distribution point,
/// so that the findings are about the listener, not about a self-signed certificate. What it
/// reports at LOW is in docs/tls.md.
#[test]
fn testssl_finds_nothing_above_low() {
    if std::process::Command::new("testssl").arg("--version").output().is_err() {
        assert!(!portcullis_tests::in_ci(), "testssl is not installed; .ci/run must install it");
        eprintln!("SKIP: testssl.sh is not installed (apt-get install testssl.sh)");
        return;
    }
    let up = upstream("origin");
    let dir = tempfile::tempdir().unwrap();
    let (ca, leaf) = portcullis_tests::tls::authority_and_leaf(&["localhost"], "http://127.0.0.1:9/ca.crl");
    let (ca_file, _) = ca.write(dir.path(), "ca");
    let (_p, addr) = start(&up, &default_cert(dir.path(), "default", &leaf));
    let json = dir.path().join("testssl.json");
    let out = std::process::Command::new("testssl")
        .args(["--quiet", "--color", "0", "--warnings", "off", "--severity", "LOW", "--ip", "127.0.0.1"])
        .arg("--add-ca")
        .arg(&ca_file)
        .arg("--jsonfile")
        .arg(&json)
        .arg(format!("https://localhost:{}/up/get", addr.port()))
        .output()
        .expect("testssl");
    let log = String::from_utf8_lossy(&out.stdout);
    let findings: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap_or_default())
        .unwrap_or_else(|e| panic!("testssl wrote no JSON ({e}):\n{log}"));
    let above_low: Vec<&serde_json::Value> = findings
        .as_array()
        .expect("a list of findings")
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("MEDIUM" | "HIGH" | "CRITICAL")))
        .collect();
    assert!(above_low.is_empty(), "testssl findings above LOW: {above_low:#?}\n{log}");
    // The LOW ones, for the record (docs/tls.md lists and explains them).
    for f in findings.as_array().into_iter().flatten().filter(|f| f["severity"] == "LOW") {
        eprintln!("testssl LOW: {}: {}", f["id"], f["finding"]);
    }
}

/// Tyk's mutual TLS: an API with `use_mutual_tls_auth` lets through requests whose TLS
/// connection presented an allowed certificate (by PEM file, by Tyk's certificate id, or signed
/// by an allowed authority), and answers the others 403 with Tyk's messages; an API without it
/// on the same listener serves clients that present none.
#[test]
fn mutual_tls_lets_allowed_certificates_through() {
    use portcullis_tests::tls::{authority_and_leaf, client_config_presenting, sha256_hex};
    let up = upstream("origin");
    let dir = tempfile::tempdir().unwrap();
    let server = self_signed(&["localhost"]);
    let (by_file, by_id, stranger) =
        (self_signed(&["alice.test"]), self_signed(&["bob.test"]), self_signed(&["eve.test"]));
    let (ca, signed) = authority_and_leaf(&["carol.test"], "http://127.0.0.1:9/ca.crl");
    let expired = self_signed_between(&["old.test"], 2001, 2002);
    let (file_pem, _) = by_file.write(dir.path(), "alice");
    let (old_pem, _) = expired.write(dir.path(), "old");
    let allowed = serde_json::json!([
        file_pem.display().to_string(),
        format!("5e9d9544a1dcd60001d0ed20{}", sha256_hex(&by_id)),
        ca.cert_pem,
        old_pem.display().to_string(),
    ]);
    let mtls = format!(r#""use_mutual_tls_auth": true, "client_certificates": {allowed},"#);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let p = ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
        .app("m", keyless_api("m", "/m/", &up.url(), "", &mtls))
        .app("open", keyless_api("open", "/open/", &up.url(), "", ""))
        .section(&format!("[tls]\nlisten = \"{addr}\"\n{}\n", default_cert(dir.path(), "server", &server)))
        .start();
    let get = |config: Arc<rustls::ClientConfig>, path: &str| {
        let mut c = Conn::connect_tls(addr, "localhost", config).expect("handshake");
        c.get(path).unwrap()
    };
    for (who, cert) in [("a PEM file", &by_file), ("a certificate id", &by_id), ("an authority", &signed)] {
        let r = get(client_config_presenting(&[&server.der], cert), "/m/get");
        assert_eq!(r.status, 200, "{who}: {}", r.text());
    }
    let r = get(client_config_presenting(&[&server.der], &stranger), "/m/get");
    assert_eq!(r.status, 403);
    assert!(
        r.text().contains(&format!("Certificate with SHA256 {} not allowed", sha256_hex(&stranger))),
        "{}",
        r.text()
    );
    let r = get(client_config_presenting(&[&server.der], &expired), "/m/get");
    assert_eq!(r.status, 403);
    assert!(r.text().contains("Certificate has expired"), "{}", r.text());
    let r = get(client_config(&[&server.der]), "/m/get");
    assert_eq!(r.status, 403);
    assert!(r.text().contains("Client TLS certificate is required"), "{}", r.text());
    let r = Conn::connect(p.listen).unwrap().get("/m/get").unwrap();
    assert_eq!(r.status, 403);
    assert!(r.text().contains("TLS not enabled"), "{}", r.text());
    // Another API on the listener: no certificate needed.
    assert_eq!(get(client_config(&[&server.der]), "/open/get").status, 200);
}

/// An API definition's Tyk `certificates` (a PEM file of certificate and key, or that PEM
/// inline) are served by their own names, over the listener's; one that does not load refuses
/// its definition, naming the field.
#[test]
fn api_definitions_certificates_are_served_by_name() {
    let up = upstream("origin");
    let dir = tempfile::tempdir().unwrap();
    let (default, by_file, inline) =
        (self_signed(&["localhost"]), self_signed(&["files.test"]), self_signed(&["inline.test"]));
    let both = dir.path().join("files.pem");
    std::fs::write(&both, format!("{}{}", by_file.cert_pem, by_file.key_pem)).unwrap();
    let inline_pem = serde_json::to_string(&format!("{}{}", inline.cert_pem, inline.key_pem)).unwrap();
    let certs = format!(r#""certificates": [{:?}, {inline_pem}],"#, both.display().to_string());
    let expired = self_signed_between(&["old.test"], 2001, 2002);
    let old = dir.path().join("old.pem");
    std::fs::write(&old, format!("{}{}", expired.cert_pem, expired.key_pem)).unwrap();
    let bad = format!(r#""certificates": [{:?}],"#, old.display().to_string());
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let p = ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
        .app("a", keyless_api("a", "/a/", &up.url(), "", &certs))
        .app("b", keyless_api("b", "/b/", &up.url(), "", &bad))
        .section(&format!("[tls]\nlisten = \"{addr}\"\n{}\n", default_cert(dir.path(), "default", &default)))
        .start();
    let all = client_config(&[&default.der, &by_file.der, &inline.der]);
    let served_for = |name: &str| served(&Conn::connect_tls(addr, name, all.clone()).unwrap());
    assert_eq!(served_for("files.test"), by_file.der.to_vec());
    assert_eq!(served_for("inline.test"), inline.der.to_vec());
    assert_eq!(served_for("localhost"), default.der.to_vec());
    let mut c = Conn::connect_tls(addr, "files.test", all.clone()).unwrap();
    assert_eq!(c.get("/a/get").unwrap().status, 200);
    assert_eq!(c.get("/b/get").unwrap().status, 404, "the definition with an expired certificate is refused");
    assert!(p.log_text().contains("certificates[0]"), "{}", p.log_text());
}
