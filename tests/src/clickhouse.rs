//! A real `clickhouse-server` for one test: its own small XML config, data directory and log in a
//! temporary directory, the HTTP interface on a free loopback port (no native TCP port), the
//! `default` user without a password, time zone UTC. It runs as the current user (root is fine).
//! Stopped (SIGTERM, then SIGKILL) when the handle drops. Outside CI a missing `clickhouse-server`
//! makes the test skip (with a message); in CI (`CI=true`) it fails, because `.ci/run` installs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::client::Conn;

/// How long a start may take (18.16 answers `/ping` within 1-2 s on an idle machine).
const START: Duration = Duration::from_secs(60);

pub struct ClickHouseServer {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
}

impl ClickHouseServer {
    /// Starts a server; `None` (skip) when the binary is missing outside CI.
    pub fn start() -> Option<ClickHouseServer> {
        let Some(bin) = binary() else {
            assert!(!crate::in_ci(), "clickhouse-server is not installed; .ci/run must install it");
            eprintln!(
                "SKIP: clickhouse-server is not installed (apt-get install clickhouse-server); ClickHouse tests skipped"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::free_port();
        write_config(dir.path(), port);
        let mut s = ClickHouseServer { port, dir, bin, child: None };
        s.start_again();
        Some(s)
    }

    /// The HTTP interface, as the sink's `url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the (stopped) server again: same port, same data.
    pub fn start_again(&mut self) {
        self.stop();
        let out = std::fs::File::create(self.dir.path().join("stdout.log")).expect("stdout log");
        let child = Command::new(&self.bin)
            .arg(format!("--config-file={}", self.dir.path().join("config.xml").display()))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("stdout log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let up = crate::wait::poll(START, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("clickhouse-server exited at start ({status}):\n{}", self.log_tail());
            }
            self.ping().then_some(())
        });
        if up.is_none() {
            panic!("clickhouse-server did not answer /ping within {START:?}:\n{}", self.log_tail());
        }
    }

    /// Stops the server (SIGTERM, waiting for it to exit; SIGKILL after 30 s). Its data stays.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        if let Ok(pid) = i32::try_from(c.id()) {
            // SAFETY: kill(2) with the id of a child this handle started and has not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if crate::wait::child_exit(&mut c, Duration::from_secs(30)).is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `GET /ping` answers `Ok.`.
    pub fn ping(&self) -> bool {
        let Ok(mut c) = Conn::connect_timeout(([127, 0, 0, 1], self.port).into(), Duration::from_secs(1)) else {
            return false;
        };
        c.request("GET", "/ping", "Connection: close\r\n", b"").is_ok_and(|r| r.status == 200 && r.text() == "Ok.\n")
    }

    /// Runs one statement (POST body) and returns the reply's text; `Err` with ClickHouse's
    /// message on a non-200 reply.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        let mut c = Conn::connect(([127, 0, 0, 1], self.port).into()).map_err(|e| format!("connect: {e}"))?;
        let r = c.request("POST", "/", "Connection: close\r\n", sql.as_bytes()).map_err(|e| format!("{sql}: {e}"))?;
        if r.status == 200 {
            Ok(r.text())
        } else {
            Err(format!("{sql}: {} {}", r.status, r.text()))
        }
    }

    /// [`Self::try_query`] that panics on an error.
    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql).unwrap_or_else(|e| panic!("ClickHouse: {e}"))
    }

    /// The end of the server's logs, for a failure message.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for f in ["stdout.log", "server.err.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {f}\n{}\n", lines[lines.len().saturating_sub(30)..].join("\n")));
        }
        out
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `clickhouse-server` from Debian's package (`/usr/sbin`, which a user's PATH may lack), else
/// from PATH.
fn binary() -> Option<PathBuf> {
    let sbin = Path::new("/usr/sbin/clickhouse-server");
    if sbin.is_file() {
        return Some(sbin.into());
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("clickhouse-server")).find(|p| p.is_file())
}

/// The server's config and users files in `dir`: only the HTTP port, caches sized for a test.
fn write_config(dir: &Path, port: u16) {
    let d = dir.display();
    let config = format!(
        r#"<?xml version="1.0"?>
<yandex>
  <logger>
    <level>information</level>
    <log>{d}/server.log</log>
    <errorlog>{d}/server.err.log</errorlog>
    <size>10M</size>
    <count>1</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{port}</http_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/data/tmp/</tmp_path>
  <user_files_path>{d}/data/user_files/</user_files_path>
  <format_schema_path>{d}/data/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <max_concurrent_queries>50</max_concurrent_queries>
  <mark_cache_size>16777216</mark_cache_size>
  <uncompressed_cache_size>16777216</uncompressed_cache_size>
  <mlock_executable>false</mlock_executable>
</yandex>
"#
    );
    let users = r#"<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default></default></quotas>
</yandex>
"#;
    std::fs::write(dir.join("config.xml"), config).expect("clickhouse config");
    std::fs::write(dir.join("users.xml"), users).expect("clickhouse users");
}
