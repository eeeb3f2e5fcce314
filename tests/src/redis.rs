//! A real `redis-server` on a free loopback port for one test, with persistence off; killed when
//! the handle drops. Outside CI a missing `redis-server` makes the test skip (with a message);
//! in CI (`CI=true`) it fails, because `.ci/run` installs it.

use std::process::{Child, Command, Stdio};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// Its working directory: where [`RedisServer::shutdown_saving`] leaves the data that a
    /// restart loads.
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server; `None` (skip) when the binary is missing outside CI.
    pub fn start() -> Option<RedisServer> {
        let port = crate::free_port();
        let dir = tempfile::tempdir().expect("redis dir");
        let mut s = RedisServer { port, child: None, dir };
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
            .arg("--dir")
            .arg(self.dir.path())
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

    /// Runs one command and returns its reply as text: a bulk or simple string, an integer,
    /// `(nil)`, or `ERR ...`. Arrays are not needed by the tests and panic.
    pub fn command(&self, args: &[&str]) -> String {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis-server");
        s.set_read_timeout(Some(crate::WAIT)).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let line = line.trim_end();
        match line.as_bytes().first() {
            Some(b'+' | b':' | b'-') => line[1..].to_string(),
            Some(b'$') if line == "$-1" => "(nil)".into(),
            Some(b'$') => {
                let n: usize = line[1..].parse().unwrap();
                let mut buf = vec![0; n + 2];
                r.read_exact(&mut buf).unwrap();
                String::from_utf8_lossy(&buf[..n]).into_owned()
            }
            _ => panic!("unexpected redis reply {line:?}"),
        }
    }

    /// Kills the server (data is lost: persistence is off).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server the way an operator does (`SHUTDOWN SAVE`: commands it has taken are
    /// answered, its data is written to its directory), so that [`RedisServer::restart`] brings
    /// the data back: an outage that loses nothing on the server's side.
    pub fn shutdown_saving(&mut self) {
        use std::io::{Read, Write};
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.set_read_timeout(Some(crate::WAIT));
            let _ = s.write_all(b"*2\r\n$8\r\nSHUTDOWN\r\n$4\r\nSAVE\r\n");
            let _ = s.read(&mut [0; 64]);
        }
        if let Some(mut c) = self.child.take() {
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
