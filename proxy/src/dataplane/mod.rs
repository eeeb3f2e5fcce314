//! The data plane: one monoio worker thread per core, each pinned to a CPU of the process's
//! affinity mask, with its own SO_REUSEPORT listener, upstream pool and metrics.
//!
//! Must not: await tokio futures, take locks on the request path, or share mutable state between
//! workers. Configuration arrives as an immutable [`Snapshot`](crate::config::Snapshot) swapped
//! whole by the control plane; shutdown arrives through [`Shutdown`], which each worker's accept
//! loop relays to its connections through a [`LocalShutdown`].

mod accept;
pub mod acme;
mod batch;
pub mod body;
mod cache;
mod conn;
pub mod error;
pub mod health;
mod io;
pub mod phase;
mod record;
pub use phase::visibility::{SHADOW_TAG, ZOMBIE_TAG};
mod splice;
pub mod stats;
mod stream;
mod upstream;
mod upstream_override;
mod worker;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

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

    /// A listener to await; check [`is_set`](Self::is_set) after creating it. For a worker's
    /// accept loop: every poll of it locks the event's mutex, which all workers share, so
    /// connections wait on their worker's [`LocalShutdown`] instead.
    pub fn listen(&self) -> EventListener {
        self.event.listen()
    }
}

/// One worker's shutdown notice for its connection tasks, triggered by the worker's accept loop
/// when the process-wide [`Shutdown`] fires. Single-threaded: a listener's poll is a flag check
/// and, while waiting, a waker kept in its own slot. An `event_listener` listener per connection
/// (what the connections used before) locked the process-wide event's mutex on every poll —
/// each request's read — and on every connection's start and end (perf, `small`: 28 ns per
/// request in `poll_internal` on one worker, and a lock every worker's requests would contend on).
#[derive(Default)]
pub(crate) struct LocalShutdown {
    set: Cell<bool>,
    slots: RefCell<Slots>,
}

/// Wakers of waiting listeners, by slot, and the slots dropped listeners left free.
#[derive(Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl LocalShutdown {
    /// Marks shutdown and wakes every waiting listener; listeners created later are ready at once.
    pub(crate) fn trigger(&self) {
        self.set.set(true);
        let wakers: Vec<Waker> = self.slots.borrow_mut().wakers.iter_mut().filter_map(Option::take).collect();
        for w in wakers {
            w.wake();
        }
    }

    pub(crate) fn listen(self: &Rc<Self>) -> LocalListener {
        LocalListener { notice: Rc::clone(self), slot: None }
    }
}

/// Ready once the worker's [`LocalShutdown`] is triggered.
pub(crate) struct LocalListener {
    notice: Rc<LocalShutdown>,
    slot: Option<usize>,
}

impl Future for LocalListener {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.notice.set.get() {
            return Poll::Ready(());
        }
        let mut slots = this.notice.slots.borrow_mut();
        match this.slot {
            Some(i) => match &mut slots.wakers[i] {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            },
            None => {
                let i = slots.free.pop().unwrap_or_else(|| {
                    slots.wakers.push(None);
                    slots.wakers.len() - 1
                });
                slots.wakers[i] = Some(cx.waker().clone());
                this.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for LocalListener {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let mut slots = self.notice.slots.borrow_mut();
            slots.wakers[i] = None;
            slots.free.push(i);
        }
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
    pub gossip: std::sync::Mutex<Vec<Option<crate::gossip::WorkerLink>>>,
    /// The queue to the analytics pump (each worker takes a clone).
    pub analytics: crate::analytics::Feed,
    /// What the gateway listener's health endpoints answer, published by the control plane.
    pub health: Arc<ArcSwap<health::HealthReplies>>,
    /// Hosts the uptime checks found down, published by the control plane (`control/uptime.rs`).
    pub down_hosts: Arc<ArcSwap<DownHosts>>,
    /// HTTP-01 answers of `[tls.acme]`, published by the control plane (`control/acme.rs`).
    pub acme: Arc<ArcSwap<acme::Challenges>>,
}

/// Hosts (`host[:port]` as a target URL has it, lower case) that uptime checks found down.
pub type DownHosts = std::collections::HashSet<String>;

/// CPUs of the process's affinity mask, in order (empty if it cannot be read).
pub fn affinity_cpus() -> Vec<usize> {
    core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect()
}

/// Binds one listener per worker (SO_REUSEPORT) and starts the workers. Binding happens here, on
/// the caller's thread, so an address in use fails startup with a clear error.
///
/// SO_REUSEPORT would let a second process of the same user bind the same address and silently
/// take a share of the connections (a second instance started by mistake, running another
/// config). So the address is first bound once without SO_REUSEPORT ([`refuse_shared_port`]:
/// that fails while anyone listens on it), and once the workers' listeners are listening, the
/// listening sockets on the port are checked to be ours alone ([`foreign_listeners`]), which
/// closes the window between the two steps: of two instances started at the same moment, each
/// sees the other and neither keeps the port.
pub fn start(
    shared: &Shared,
    listen: SocketAddr,
    tls_listen: Option<SocketAddr>,
    workers: usize,
    driver: IoDriver,
    backlog: u32,
) -> Result<Vec<WorkerHandle>, BindError> {
    let cpus = affinity_cpus();
    let plain = bind_all(listen, workers, backlog).map_err(|e| BindError { tls: false, addr: listen, source: e })?;
    let mut tls: Vec<Option<std::net::TcpListener>> = match tls_listen {
        Some(addr) => bind_all(addr, workers, backlog)
            .map_err(|e| BindError { tls: true, addr, source: e })?
            .into_iter()
            .map(Some)
            .collect(),
        None => (0..workers).map(|_| None).collect(),
    };
    let mut handles = Vec::with_capacity(workers);
    for (id, listener) in plain.into_iter().enumerate() {
        let cpu = if cpus.is_empty() { None } else { Some(cpus[id % cpus.len()]) };
        let listeners = accept::Listeners { plain: listener, tls: tls[id].take() };
        handles.push(accept::spawn(id, cpu, driver, listeners, shared).map_err(|e| BindError {
            tls: false,
            addr: listen,
            source: e,
        })?);
    }
    Ok(handles)
}

/// A listener that could not be bound (or a worker that could not start).
#[derive(Debug)]
pub struct BindError {
    /// The TLS listener's (`[tls] listen`), else the plain one's (`[proxy] listen`).
    pub tls: bool,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// One SO_REUSEPORT listener per worker on `listen`, after checking that no other process
/// listens there (see [`start`]).
fn bind_all(listen: SocketAddr, workers: usize, backlog: u32) -> std::io::Result<Vec<std::net::TcpListener>> {
    refuse_shared_port(listen, PORT_RELEASE_WAIT)?;
    let mut listeners = Vec::with_capacity(workers);
    let mut addr = listen;
    for _ in 0..workers {
        let l = bind_reuseport(addr, backlog)?;
        // With port 0 the first bind picks the port; the other workers join it.
        addr = l.local_addr()?;
        listeners.push(l);
    }
    match foreign_listeners(addr, &listeners) {
        Ok(0) => {}
        Ok(n) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "{n} listening socket(s) of another process share port {} through SO_REUSEPORT \
                     (a second instance?); refusing to start",
                    addr.port()
                ),
            ))
        }
        // No /proc/net (an unusual sandbox): the bind without SO_REUSEPORT above was the check.
        Err(e) => tracing::debug!(error = %e, "cannot list listening sockets; relying on the exclusive bind check"),
    }
    Ok(listeners)
}

/// How long [`refuse_shared_port`] waits for a busy port to be released. A process that has
/// just exited can leave its listening socket behind for a moment: io_uring puts the files of
/// its pending requests (an `accept` on the listener) asynchronously, after the process is
/// gone, so a restart right after a kill or crash would otherwise be refused.
const PORT_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Binds `addr` once without SO_REUSEPORT and lets it go: this fails with `EADDRINUSE` while
/// any socket listens on the address (or an overlapping one, e.g. `0.0.0.0` for `127.0.0.1`),
/// SO_REUSEPORT or not, which the workers' own binds would not notice. SO_REUSEADDR is set as on
/// the listeners, so connections in TIME_WAIT from an earlier run do not count. A busy port is
/// tried again every 20 ms for up to `wait` (see [`PORT_RELEASE_WAIT`]).
fn refuse_shared_port(addr: SocketAddr, wait: std::time::Duration) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    if addr.port() == 0 {
        // A port the kernel picks is free by definition.
        return Ok(());
    }
    let deadline = std::time::Instant::now() + wait;
    let mut said = false;
    loop {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        match socket.bind(&addr.into()) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                if !said {
                    said = true;
                    tracing::info!(%addr, ?wait, "listen address in use; waiting for it to be released");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "port {} is already in use by another process (a second instance would share \
                         it silently through SO_REUSEPORT); refusing to start",
                        addr.port()
                    ),
                ))
            }
            Err(e) => return Err(e),
        }
    }
}

/// How many listening TCP sockets in this network namespace, other than `ours`, are on `addr`'s
/// port at an address overlapping it (equal, or either one the wildcard), per
/// `/proc/net/tcp{,6}`. Only a socket in the same SO_REUSEPORT group can be there: any other
/// would have made the bind fail. Addresses of the other family are not compared (whether a
/// `[::]` socket also takes IPv4 depends on IPV6_V6ONLY, which the table does not show).
fn foreign_listeners(addr: SocketAddr, ours: &[std::net::TcpListener]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let mut inodes = Vec::with_capacity(ours.len());
    for l in ours {
        inodes.push(std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd()))?.ino());
    }
    let table = if addr.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
    let text = std::fs::read_to_string(table)?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(parse_listener)
        .filter(|(a, inode)| {
            a.port() == addr.port()
                && !inodes.contains(inode)
                && (a.ip() == addr.ip() || a.ip().is_unspecified() || addr.ip().is_unspecified())
        })
        .count())
}

/// A listening socket's local address and inode from a `/proc/net/tcp{,6}` line; `None` for
/// other states and lines that do not parse.
fn parse_listener(line: &str) -> Option<(SocketAddr, u64)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
    if f.len() < 10 || f[3] != "0A" {
        return None;
    }
    let (ip_hex, port_hex) = f[1].split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    // The address is printed as 32-bit words in the host's byte order.
    let mut bytes = Vec::with_capacity(16);
    for i in (0..ip_hex.len()).step_by(8) {
        let word = u32::from_str_radix(ip_hex.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes.as_slice()).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?),
        _ => return None,
    };
    Some((SocketAddr::new(ip, port), f[9].parse().ok()?))
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

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Duration;

    use super::LocalShutdown;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&c), Waker::from(c))
    }
    fn poll(f: &mut super::LocalListener, w: &Waker) -> Poll<()> {
        Pin::new(f).poll(&mut Context::from_waker(w))
    }

    #[test]
    fn proc_net_tcp_lines_parse() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0";
        let want_ip = if cfg!(target_endian = "little") { "127.0.0.1:8080" } else { "1.0.0.127:8080" };
        assert_eq!(super::parse_listener(v4), Some((want_ip.parse().unwrap(), 4242)));
        let established = v4.replacen(" 0A ", " 01 ", 1);
        assert_eq!(super::parse_listener(&established), None);
        let v6 = "   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1 0000000000000000 100 0 0 10 0";
        let (a, inode) = super::parse_listener(v6).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(a, "[::1]:8080".parse().unwrap());
        }
        assert_eq!(inode, 77);
        assert_eq!(super::parse_listener("  sl  local_address rem_address   st tx_queue"), None);
        assert_eq!(super::parse_listener("   0: nothex:1F90 00000000:0000 0A a b c d e 1"), None);
    }

    #[test]
    fn a_shared_port_is_refused_and_its_sharers_seen() {
        // Another process' listener, stood in for by one this test binds with SO_REUSEPORT.
        let other = super::bind_reuseport("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = other.local_addr().unwrap();
        let e = super::refuse_shared_port(addr, Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains(&format!("port {}", addr.port())), "{e}");
        let t = std::time::Instant::now();
        assert!(super::refuse_shared_port(addr, Duration::from_millis(200)).is_err());
        assert!(t.elapsed() >= Duration::from_millis(200), "waited for the port");
        // What the probe cannot see: a listener that joined between probe and bind.
        let ours = vec![super::bind_reuseport(addr, 16).unwrap()];
        assert_eq!(super::foreign_listeners(addr, &ours).unwrap(), 1);
        // Once it is gone, the port is ours alone; on a wildcard address the same holds.
        drop(other);
        assert_eq!(super::foreign_listeners(addr, &ours).unwrap(), 0);
        let wild = super::bind_reuseport("0.0.0.0:0".parse().unwrap(), 16).unwrap();
        let port = wild.local_addr().unwrap().port();
        let specific = vec![super::bind_reuseport(format!("127.0.0.1:{port}").parse().unwrap(), 16).unwrap()];
        assert_eq!(super::foreign_listeners(format!("127.0.0.1:{port}").parse().unwrap(), &specific).unwrap(), 1);
        // A free port passes the probe.
        drop((ours, wild, specific));
        assert!(super::refuse_shared_port(addr, Duration::ZERO).is_ok());
    }

    #[test]
    fn a_port_released_while_waiting_is_taken() {
        // As after a kill: the old process' listener goes away a moment after the new one starts.
        let old = super::bind_reuseport("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = old.local_addr().unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            drop(old);
        });
        let t = std::time::Instant::now();
        super::refuse_shared_port(addr, Duration::from_secs(5)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        closer.join().unwrap();
    }

    #[test]
    fn local_shutdown_wakes_the_waiting_listeners_and_only_the_latest_waker() {
        let notice = Rc::new(LocalShutdown::default());
        let (a_count, a) = waker();
        let (b_old_count, b_old) = waker();
        let (b_count, b) = waker();
        let (gone_count, gone) = waker();
        let mut la = notice.listen();
        let mut lb = notice.listen();
        let mut dropped = notice.listen();
        assert!(poll(&mut la, &a).is_pending());
        assert!(poll(&mut la, &a).is_pending(), "polled again while waiting");
        assert!(poll(&mut lb, &b_old).is_pending());
        assert!(poll(&mut lb, &b).is_pending(), "moved to another task: the new waker replaces the old");
        assert!(poll(&mut dropped, &gone).is_pending());
        drop(dropped);
        // The dropped listener's slot is reused, not grown.
        let mut lc = notice.listen();
        let (c_count, c) = waker();
        assert!(poll(&mut lc, &c).is_pending());
        assert_eq!(notice.slots.borrow().wakers.len(), 3);
        notice.trigger();
        let counts = [&a_count, &b_old_count, &b_count, &gone_count, &c_count].map(|c| c.0.load(Ordering::SeqCst));
        assert_eq!(counts, [1, 0, 1, 0, 1]);
        assert!(poll(&mut la, &a).is_ready());
        assert!(poll(&mut lb, &b).is_ready());
        // Created after the trigger: ready at once, never registered.
        let mut late = notice.listen();
        assert!(poll(&mut late, &a).is_ready());
        drop((la, lb, lc, late));
        notice.trigger();
        assert_eq!(a_count.0.load(Ordering::SeqCst), 1, "nothing left to wake");
    }
}
