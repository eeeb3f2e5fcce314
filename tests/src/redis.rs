//! A real `redis-server` on a free loopback port for one test, with persistence off; killed when
//! the handle drops. Outside CI a missing `redis-server` makes the test skip (with a message);
//! in CI (`CI=true`) it fails, because `.ci/run` installs it.

use std::process::{Child, Command, Stdio};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server; `None` (skip) when the binary is missing outside CI.
    pub fn start() -> Option<RedisServer> {
        let port = crate::free_port();
        let mut s = RedisServer { port, child: None };
        if !s.spawn() {
            assert!(!crate::in_ci(), "redis-server is not installed; .ci/run must install it");
            eprintln!("SKIP: redis-server is not installed (apt-get install redis-server); Redis tests skipped");
            return None;
        }
        Some(s)
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        crate::wait::port_accepting(([127, 0, 0, 1], self.port).into(), "redis-server");
        true
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (data is lost: persistence is off).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.spawn(), "redis-server could not be restarted");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
