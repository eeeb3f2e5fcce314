//! Per-worker upstream connection pool: idle keep-alive connections by target address.
//!
//! Owned by one worker (`RefCell`, no lock, no sharing). LIFO reuse keeps the hottest connection
//! warm; connections idle longer than `upstream_idle_timeout_ms` are dropped on checkout, before
//! an upstream with a shorter keep-alive timeout closes them under us.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use monoio::net::TcpStream;

use super::error::{ErrorKind, ProxyError, Result};

struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// A connection checked out of the pool or freshly made.
pub struct Upstream {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    /// Came from the pool: a failure before the first response byte may be a stale connection.
    pub reused: bool,
}

#[derive(Default)]
pub struct Pool {
    idle: RefCell<AHashMap<SocketAddr, Vec<Idle>>>,
}

impl Pool {
    /// Takes the freshest idle connection to `addr` younger than `max_idle`.
    pub fn take(&self, addr: SocketAddr, max_idle: Duration) -> Option<Upstream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some(c) = list.pop() {
            if c.since.elapsed() < max_idle {
                return Some(Upstream { stream: c.stream, addr, reused: true });
            }
        }
        None
    }

    /// Returns a connection whose last response was read completely.
    pub fn put(&self, up: Upstream, max_per_target: usize) {
        if max_per_target == 0 {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(up.addr).or_default();
        if list.len() >= max_per_target {
            // Drop the oldest: the newest is the likeliest to still be open.
            list.remove(0);
        }
        list.push(Idle { stream: up.stream, since: Instant::now() });
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}

/// Opens a new connection with a timeout: refused/unreachable is 502, timeout 504.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Upstream> {
    match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(Upstream { stream, addr, reused: false })
        }
        Ok(Err(e)) => Err(ProxyError::io(ErrorKind::UpstreamConnect, "cannot connect to upstream", e)),
        Err(_) => Err(ProxyError::io(
            ErrorKind::UpstreamTimeout,
            "upstream connect timed out",
            io::Error::from(io::ErrorKind::TimedOut),
        )),
    }
}
