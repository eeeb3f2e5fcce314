//! Runs the real `portcullis` binary for a test: writes `portcullis.toml`, `apps/*.json` and
//! `policies.json` into a temporary directory, starts the process on free loopback ports and
//! waits until the admin API answers. The process is killed when the handle drops.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::client;
use crate::wait::WAIT;

/// Where the binary is: `CARGO_BIN_EXE_portcullis` (set for the portcullis package's tests).
pub fn binary() -> PathBuf {
    if let Some(p) = option_env_bin() {
        return p;
    }
    // Fallback: next to the test executable's target dir.
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().and_then(Path::parent).map(|d| d.join("portcullis")).expect("target dir")
}

fn option_env_bin() -> Option<PathBuf> {
    std::env::var_os("PORTCULLIS_BIN").map(PathBuf::from)
}

/// A running proxy.
pub struct Proxy {
    pub dir: tempfile::TempDir,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub secret: String,
    pub child: Child,
    pub log: PathBuf,
    bin: PathBuf,
}

/// What to start.
pub struct ProxyBuilder {
    bin: PathBuf,
    apps: Vec<(String, String)>,
    extra_config: String,
    admin_config: String,
    tail: String,
    apps_config: String,
    listen_ip: String,
    listen_port: Option<u16>,
    workers: usize,
    uid: Option<u32>,
    policies: String,
}

impl ProxyBuilder {
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        ProxyBuilder {
            bin: bin.into(),
            apps: Vec::new(),
            extra_config: String::new(),
            admin_config: String::new(),
            tail: String::new(),
            apps_config: String::new(),
            listen_ip: "127.0.0.1".into(),
            listen_port: None,
            workers: 1,
            uid: None,
            policies: "{}".into(),
        }
    }

    /// Adds `apps/<name>.json`.
    pub fn app(mut self, name: &str, json: impl Into<String>) -> Self {
        self.apps.push((name.to_string(), json.into()));
        self
    }

    /// Extra lines appended to the `[proxy]` section.
    pub fn proxy_config(mut self, lines: &str) -> Self {
        self.extra_config.push_str(lines);
        self.extra_config.push('\n');
        self
    }

    /// Extra lines appended to the `[admin]` section.
    pub fn admin_config(mut self, lines: &str) -> Self {
        self.admin_config.push_str(lines);
        self.admin_config.push('\n');
        self
    }

    /// Extra lines appended to the `[apps]` section.
    pub fn apps_config(mut self, lines: &str) -> Self {
        self.apps_config.push_str(lines);
        self.apps_config.push('\n');
        self
    }

    /// Extra sections appended to the config file (e.g. `[ebpf]` ...).
    pub fn section(mut self, text: &str) -> Self {
        self.tail.push_str(text);
        self.tail.push('\n');
        self
    }

    /// Address the proxy listens on (default 127.0.0.1); the port is picked free.
    /// Listens on `port` (else a free one).
    pub fn listen_port(mut self, port: u16) -> Self {
        self.listen_port = Some(port);
        self
    }

    pub fn listen_ip(mut self, ip: &str) -> Self {
        self.listen_ip = ip.to_string();
        self
    }

    /// Runs the proxy as this user (and group of the same number), to test unprivileged starts.
    pub fn run_as(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// Contents of `apps/policies.json` (default `{}`).
    pub fn policies(mut self, json: impl Into<String>) -> Self {
        self.policies = json.into();
        self
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    pub fn start(self) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("apps")).expect("apps dir");
        for (name, json) in &self.apps {
            fs::write(dir.path().join("apps").join(format!("{name}.json")), json).expect("write app");
        }
        fs::write(dir.path().join("apps/policies.json"), &self.policies).expect("policies");
        let port = self.listen_port.unwrap_or_else(crate::free_port);
        let listen: SocketAddr = format!("{}:{port}", self.listen_ip).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", crate::free_port()).parse().expect("addr");
        let secret = "test-secret".to_string();
        let config = format!(
            "[proxy]\nlisten = \"{listen}\"\nworkers = {}\n{}\n[admin]\nlisten = \"{admin}\"\nsecret = \"{secret}\"\n{}\n[apps]\ndir = \"apps\"\npolicies = \"apps/policies.json\"\n{}\n[log]\nlevel = \"info\"\n\n{}",
            self.workers, self.extra_config, self.admin_config, self.apps_config, self.tail
        );
        fs::write(dir.path().join("portcullis.toml"), config).expect("config");
        let log = dir.path().join("portcullis.log");
        let child = spawn(&self.bin, dir.path(), &log, self.uid);
        let mut p = Proxy { dir, listen, admin, secret, child, log, bin: self.bin };
        p.wait_ready();
        p
    }
}

fn spawn(bin: &Path, dir: &Path, log: &Path, uid: Option<u32>) -> Child {
    {
        let log_file = fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        // stdout (the `stdout` analytics sink) goes next to the log, as `portcullis.out`.
        let out_file =
            fs::OpenOptions::new().create(true).append(true).open(log.with_extension("out")).expect("stdout file");
        let mut cmd = Command::new(bin);
        if let Some(uid) = uid {
            use std::os::unix::fs::PermissionsExt;
            use std::os::unix::process::CommandExt;
            // The unprivileged proxy must read its files and write its log.
            for p in [dir.to_path_buf(), dir.join("apps")] {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
            }
            // ... and write its request records ([analytics] path, default analytics/).
            let records = dir.join("analytics");
            fs::create_dir_all(&records).expect("analytics dir");
            fs::set_permissions(&records, fs::Permissions::from_mode(0o777)).expect("chmod analytics");
            fs::set_permissions(log, fs::Permissions::from_mode(0o666)).expect("chmod log");
            cmd.uid(uid).gid(uid);
        }
        cmd.arg("run")
            .arg("--config")
            .arg(dir.join("portcullis.toml"))
            .stdout(out_file)
            .stderr(log_file)
            .env_remove("RUST_LOG")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
    }
}

impl Proxy {
    fn wait_ready(&mut self) {
        let probe = if self.listen.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], self.listen.port()))
        } else {
            self.listen
        };
        let ready = crate::wait::poll(Duration::from_secs(20), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("portcullis exited early ({status}):\n{}", self.log_text());
            }
            let admin_ok = client::get(self.admin, "/hello").is_ok_and(|r| r.status == 200);
            (admin_ok && std::net::TcpStream::connect(probe).is_ok()).then_some(())
        });
        if ready.is_none() {
            panic!("portcullis did not become ready:\n{}", self.log_text());
        }
    }

    /// Stops the process (SIGKILL) and starts it again with the same files and ports.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.bin, self.dir.path(), &self.log, None);
        self.wait_ready();
    }

    /// What the process wrote to stdout.
    pub fn stdout_text(&self) -> String {
        fs::read_to_string(self.log.with_extension("out")).unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("portcullis.toml")
    }

    /// `session` with access rights to every API in the apps directory, unless it has access
    /// rights or policies of its own.
    pub fn with_every_api(&self, session: &serde_json::Value) -> serde_json::Value {
        let mut session = session.clone();
        let has = |k: &str| {
            session.get(k).is_some_and(|v| {
                v.as_object().is_some_and(|o| !o.is_empty())
                    || v.as_array().is_some_and(|a| !a.is_empty())
                    || v.as_str().is_some_and(|s| !s.is_empty())
            })
        };
        if has("access_rights") || has("apply_policies") || has("apply_policy_id") {
            return session;
        }
        let mut rights = serde_json::Map::new();
        for e in std::fs::read_dir(self.apps_dir()).into_iter().flatten().flatten() {
            let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
            let Ok(def) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            if let Some(id) = def.get("api_id").and_then(|v| v.as_str()) {
                rights.insert(id.to_string(), serde_json::json!({"api_id": id, "versions": []}));
            }
        }
        if let Some(o) = session.as_object_mut() {
            o.insert("access_rights".into(), serde_json::Value::Object(rights));
        }
        session
    }

    pub fn apps_dir(&self) -> PathBuf {
        self.dir.path().join("apps")
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we spawned and own; no memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Admin GET with the secret.
    pub fn admin_get(&self, path: &str) -> client::Response {
        let mut c = client::Conn::connect(self.admin).expect("admin connect");
        c.request("GET", path, &format!("X-Tyk-Authorization: {}\r\nConnection: close\r\n", self.secret), b"")
            .expect("admin request")
    }

    /// Admin request with the secret and a body.
    pub fn admin_send(&self, method: &str, path: &str, body: &str) -> client::Response {
        let mut c = client::Conn::connect(self.admin).expect("admin connect");
        let extra =
            format!("X-Tyk-Authorization: {}\r\nConnection: close\r\nContent-Type: application/json\r\n", self.secret);
        let raw =
            format!("{method} {path} HTTP/1.1\r\nHost: admin\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len());
        c.send(raw.as_bytes()).expect("admin send");
        c.read_response(false).expect("admin response")
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        client::get(self.admin, "/metrics").expect("metrics").text()
    }

    /// One series of `/metrics` (see [`crate::metrics::value`]).
    pub fn metric(&self, series: &str) -> Option<f64> {
        crate::metrics::value(&self.metrics(), series)
    }

    /// Waits (up to [`WAIT`]) until `/metrics` satisfies `pred` and returns that text; panics
    /// naming `what`, with the last text seen, if it never does. Workers publish their counters
    /// every 200 ms; connection gauges and config values are read live.
    pub fn wait_metrics(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = crate::wait::poll(WAIT, || {
            let m = self.metrics();
            if pred(&m) {
                Some(m)
            } else {
                last = m;
                None
            }
        });
        found.unwrap_or_else(|| panic!("timed out after {WAIT:?} waiting for {what}; last /metrics:\n{last}"))
    }

    /// GET on a fresh connection to the proxy, with extra header lines and `Connection: close`.
    pub fn get(&self, path: &str, headers: &str) -> client::Response {
        let mut c = client::Conn::connect(self.listen).expect("connect");
        c.request("GET", path, &format!("{headers}Connection: close\r\n"), b"").expect("request")
    }

    /// A request with a body on a fresh connection to the proxy, with extra header lines and
    /// `Connection: close`.
    pub fn send(&self, method: &str, path: &str, headers: &str, body: &str) -> client::Response {
        let mut c = client::Conn::connect(self.listen).expect("connect");
        c.request(method, path, &format!("{headers}Connection: close\r\n"), body.as_bytes()).expect("request")
    }

    /// Creates a key through `POST /tyk/keys/create`: (key, key_hash).
    ///
    /// A session without `access_rights` or policies is given access to every API in the apps
    /// directory: the key API refuses a key without access rights, as Tyk does.
    pub fn create_key(&self, session: &serde_json::Value) -> (String, String) {
        let session = self.with_every_api(session);
        let r = self.admin_send("POST", "/tyk/keys/create", &session.to_string());
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["action"], "added");
        (v["key"].as_str().unwrap().to_string(), v["key_hash"].as_str().unwrap().to_string())
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        crate::wait::child_exit(&mut self.child, timeout)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Tyk article's JWT token (HS256, secret "foo", `sub` foo@bar.com).
pub const SEED_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJmb29AYmFyLmNvbSIsIm5hbWUiOiJBaG1ldCBTb29ybWFsbHkiLCJpYXQiOjE1MTYyMzkwMjJ9.8E-X89YnHe6m_jV4Lmyy487VnkCpzuYlsLDceCz4ScU";

/// The repository's `apps/httpbin-jwt.json` with its target pointed at `upstream_url`, and
/// `apps/policies.json`: the seed article's JWT walkthrough as shipped.
pub fn seed_jwt_files(upstream_url: &str) -> (String, String) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let def = fs::read_to_string(format!("{root}/apps/httpbin-jwt.json"))
        .expect("apps/httpbin-jwt.json")
        .replace("http://127.0.0.1:8081/", upstream_url);
    let policies = fs::read_to_string(format!("{root}/apps/policies.json")).expect("apps/policies.json");
    (def, policies)
}

/// A keyless Tyk API definition.
pub fn keyless_api(api_id: &str, listen_path: &str, target: &str, extra_proxy: &str, extra_top: &str) -> String {
    format!(
        r#"{{"name": "{api_id}", "api_id": "{api_id}", "active": true, "use_keyless": true, {extra_top}
  "version_data": {{"not_versioned": true, "versions": {{"Default": {{"name": "Default"}}}}}},
  "proxy": {{"listen_path": "{listen_path}", "target_url": "{target}", "strip_listen_path": true {extra_proxy}}}}}"#
    )
}

/// A Tyk API definition: `top` adds top-level fields (auth settings, limits; each followed by a
/// comma), `version_extra` fields of the `Default` version (each preceded by a comma).
pub fn api(id: &str, listen_path: &str, target: &str, top: &str, version_extra: &str) -> String {
    format!(
        r#"{{"name": "{id}", "api_id": "{id}", "active": true, {top}
  "version_data": {{"not_versioned": true, "versions": {{"Default": {{"name": "Default", "use_extended_paths": true {version_extra}}}}}}},
  "proxy": {{"listen_path": "{listen_path}", "target_url": "{target}", "strip_listen_path": true}}}}"#
    )
}
