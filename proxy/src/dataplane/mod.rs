//! The data plane: one monoio worker thread per core, each pinned to a CPU of the process's
//! affinity mask, with its own SO_REUSEPORT listener, upstream pool and metrics.
//!
//! Must not: await tokio futures, take locks on the request path, or share mutable state between
//! workers. Configuration arrives as an immutable [`Snapshot`](crate::config::Snapshot) swapped
//! whole by the control plane; shutdown arrives through [`Shutdown`].

pub mod body;
mod conn;
pub mod error;
pub mod http;
mod io;
mod splice;
pub mod stats;
mod upstream;
mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use event_listener::{Event, EventListener};

use crate::config::{IoDriver, Snapshot};

pub use stats::WorkerStats;
pub use worker::WorkerHandle;

/// Cross-thread shutdown signal: a flag plus an event that wakes every waiting worker task.
#[derive(Default)]
pub struct Shutdown {
    flag: AtomicBool,
    event: Event,
}

impl Shutdown {
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// A listener to await; check [`is_set`](Self::is_set) after creating it.
    pub fn listen(&self) -> EventListener {
        self.event.listen()
    }
}

/// State shared between the control plane and all workers.
pub struct Shared {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub shutdown: Arc<Shutdown>,
    /// Banned addresses, published by the control plane's ban manager.
    pub bans: Arc<ArcSwap<crate::bans::BanSet>>,
    /// Session lookups to the control plane's key store.
    pub keys: crate::keystore::KeyClient,
    /// Key-change announcements, one receiver per worker (index = worker id).
    pub invalidations: Vec<crossbeam_channel::Receiver<crate::auth::Invalidation>>,
    pub auth_limits: crate::auth::CacheLimits,
    pub limiter: crate::limit::LimiterConfig,
    /// Each worker takes its gossip link (index = worker id) when it starts.
    pub gossip: std::sync::Mutex<Vec<Option<crate::limit::gossip::WorkerLink>>>,
    /// The queue to the analytics pump (each worker takes a clone).
    pub analytics: crate::analytics::Feed,
}

/// CPUs of the process's affinity mask, in order (empty if it cannot be read).
pub fn affinity_cpus() -> Vec<usize> {
    core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect()
}

/// Binds one listener per worker (SO_REUSEPORT) and starts the workers. Binding happens here, on
/// the caller's thread, so an address in use fails startup with a clear error.
pub fn start(
    shared: &Shared,
    listen: SocketAddr,
    workers: usize,
    driver: IoDriver,
    backlog: u32,
) -> std::io::Result<Vec<WorkerHandle>> {
    let cpus = affinity_cpus();
    let mut listeners = Vec::with_capacity(workers);
    let mut addr = listen;
    for _ in 0..workers {
        let l = bind_reuseport(addr, backlog)?;
        // With port 0 the first bind picks the port; the other workers join it.
        addr = l.local_addr()?;
        listeners.push(l);
    }
    let mut handles = Vec::with_capacity(workers);
    for (id, listener) in listeners.into_iter().enumerate() {
        let cpu = if cpus.is_empty() { None } else { Some(cpus[id % cpus.len()]) };
        handles.push(worker::spawn(id, cpu, driver, listener, shared)?);
    }
    Ok(handles)
}

fn bind_reuseport(addr: SocketAddr, backlog: u32) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}
