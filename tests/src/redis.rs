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
