//! A real ACME server for one test: Debian's `pebble` (Let's Encrypt's test authority) on free
//! loopback ports, with an HTTPS certificate made for it, validating HTTP-01 challenges on the
//! port the test names. Killed when the handle drops. Outside CI a missing `pebble` makes the
//! test skip (with a message); in CI (`CI=true`) it fails, because `.ci/run` installs it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Pebble {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    pub management_port: u16,
    /// The certificate of its HTTPS API (what an ACME client must trust).
    pub tls: crate::tls::TestCert,
}

impl Pebble {
    /// Starts pebble validating HTTP-01 challenges on `http_port` (where the proxy under test
    /// listens); `None` (skip) when the binary is missing outside CI.
    pub fn start(http_port: u16) -> Option<Pebble> {
        let dir = tempfile::tempdir().expect("pebble dir");
        let tls = crate::tls::self_signed(&["127.0.0.1", "localhost"]);
        let (cert, key) = tls.write(dir.path(), "pebble");
        let (port, management_port, tls_port) = (crate::free_port(), crate::free_port(), crate::free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_file = dir.path().join("pebble.json");
        std::fs::write(&config_file, config.to_string()).expect("pebble config");
        let log = std::fs::File::create(dir.path().join("pebble.log")).expect("pebble log");
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config_file)
            .args(["-strict", "false"])
            // Validate at once, and never reject a good nonce (the default rejects 5 %).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        let Ok(child) = child else {
            assert!(!crate::in_ci(), "pebble is not installed; .ci/run must install it");
            eprintln!("SKIP: pebble is not installed (apt-get install pebble); the ACME test is skipped");
            return None;
        };
        let p = Pebble { child, dir, port, management_port, tls };
        crate::wait::port_accepting(([127, 0, 0, 1], port).into(), "pebble");
        crate::wait::port_accepting(([127, 0, 0, 1], management_port).into(), "pebble's management API");
        Some(p)
    }

    /// Its ACME directory URL.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The file of its HTTPS API's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("pebble.pem")
    }

    /// The root its certificates chain to (PEM), from its management API.
    pub fn issuing_root(&self) -> String {
        let config = crate::tls::client_config(&[&self.tls.der]);
        let addr = ([127, 0, 0, 1], self.management_port).into();
        let mut c = crate::client::Conn::connect_tls(addr, "127.0.0.1", config).expect("pebble management API");
        let r = c.get("/roots/0").expect("pebble's root");
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    }

    /// What pebble logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
