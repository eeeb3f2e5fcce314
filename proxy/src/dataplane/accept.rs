//! A worker's thread: pinned to a CPU, running a monoio runtime (io_uring set up for one thread,
//! else epoll), accepting on its own SO_REUSEPORT listener and serving each connection as a
//! local task (`conn::serve`); at shutdown it stops accepting and drains.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;

use crate::config::IoDriver;

use super::stats::{WorkerStats, PUBLISH_INTERVAL};
use super::stream::Stream;
use super::worker::{Parts, Worker, WorkerHandle};
use super::{conn, Shared};

/// A worker's listeners: `[proxy] listen`, and `[tls] listen` if set.
pub(super) struct Listeners {
    pub plain: std::net::TcpListener,
    pub tls: Option<std::net::TcpListener>,
}

/// Starts worker `id` on its own thread.
pub(super) fn spawn(
    id: usize,
    cpu: Option<usize>,
    driver: IoDriver,
    listeners: Listeners,
    shared: &Shared,
) -> std::io::Result<WorkerHandle> {
    let stats = WorkerStats::new();
    let invalidations = shared
        .invalidations
        .get(id)
        .cloned()
        .ok_or_else(|| std::io::Error::other(format!("no key-change channel for worker {id}")))?;
    let gossip = shared
        .gossip
        .lock()
        .map_err(|_| std::io::Error::other("gossip links poisoned"))?
        .get_mut(id)
        .and_then(Option::take)
        .ok_or_else(|| std::io::Error::other(format!("no gossip link for worker {id}")))?;
    let parts = Parts {
        snapshot: Arc::clone(&shared.snapshot),
        shutdown: Arc::clone(&shared.shutdown),
        bans: Arc::clone(&shared.bans),
        keys: shared.keys.clone(),
        auth_limits: shared.auth_limits,
        invalidations,
        limiter: shared.limiter,
        analytics: shared.analytics.clone(),
        gossip,
        health: Arc::clone(&shared.health),
        down_hosts: Arc::clone(&shared.down_hosts),
        acme: Arc::clone(&shared.acme),
    };
    let thread_stats = Arc::clone(&stats);
    let thread = std::thread::Builder::new().name(format!("portcullis-w{id}")).spawn(move || {
        let pinned = cpu.filter(|&c| core_affinity::set_for_current(core_affinity::CoreId { id: c }));
        let _ = thread_stats.cpu.set(pinned);
        let worker = Rc::new(Worker::new(id, parts, thread_stats));
        run_on_driver(worker, driver, listeners);
    })?;
    Ok(WorkerHandle { id, stats, thread })
}

/// A monoio io_uring runtime. With `tuned`, the ring is set up for one owning thread
/// (SINGLE_ISSUER) whose completions are handed over when it enters the kernel to wait, not by
/// interrupting it (COOP_TASKRUN, DEFER_TASKRUN; Linux 6.1+). Measured (`cargo xtask bench
/// --uring`, 3 x 5 s, us CPU/request vs epoll in the same run): small 14.31 vs 16.64, close 40.59
/// vs 48.69, c1000 28.62 vs 49.79, 16k 21.55 vs 21.13; a default ring was 1.1-1.2x epoll.
pub(super) fn uring_runtime(
    tuned: bool,
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    let mut urb = io_uring::IoUring::builder();
    if tuned {
        urb.setup_coop_taskrun().setup_single_issuer().setup_defer_taskrun();
    }
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().with_entries(1024).uring_builder(urb).enable_timer().build()
}

fn run_on_driver(worker: Rc<Worker>, driver: IoDriver, listener: Listeners) {
    let id = worker.id;
    let cpu = worker.shared_stats.cpu.get().copied().flatten();
    // `auto` takes io_uring only with the single-thread ring setup (measured faster than epoll
    // here; a default ring is slower than epoll, see ARCHITECTURE.md), `uring` takes any ring.
    let uring = match driver {
        IoDriver::Epoll => None,
        _ if !monoio::utils::detect_uring() => {
            if driver == IoDriver::Uring {
                tracing::warn!(worker = id, "io_uring is not available (kernel or seccomp); using epoll");
            } else {
                tracing::info!(worker = id, "io_uring is not available (kernel or seccomp); using epoll");
            }
            None
        }
        IoDriver::Auto => uring_runtime(true)
            .map_err(|e| {
                tracing::info!(worker = id, error = %e, "io_uring single-issuer/deferred-taskrun setup failed (Linux < 6.1?); using epoll")
            })
            .ok(),
        IoDriver::Uring => uring_runtime(true)
            .or_else(|e| {
                tracing::info!(worker = id, error = %e, "io_uring without the single-thread setup flags (Linux < 6.1?)");
                uring_runtime(false)
            })
            .map_err(|e| tracing::warn!(worker = id, error = %e, "io_uring runtime failed to start; using epoll"))
            .ok(),
    };
    if let Some(mut rt) = uring {
        let _ = worker.shared_stats.driver.set("uring");
        worker.splice.blocking_sockets.set(true);
        tracing::info!(worker = id, ?cpu, driver = "io_uring", "worker started");
        rt.block_on(accept_loop(worker, listener));
        return;
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build() {
        Ok(mut rt) => {
            let _ = worker.shared_stats.driver.set("epoll");
            tracing::info!(worker = id, ?cpu, driver = "epoll", "worker started");
            rt.block_on(accept_loop(worker, listener));
        }
        Err(e) => tracing::error!(worker = id, error = %e, "cannot start worker runtime"),
    }
}

/// Decrements the open-connection gauge however a connection task ends.
struct OpenGuard(Arc<WorkerStats>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(worker: Rc<Worker>, listeners: Listeners) {
    let listener = match TcpListener::from_std(listeners.plain) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(worker = worker.id, error = %e, "cannot register listener");
            return;
        }
    };
    let tls = match listeners.tls.map(TcpListener::from_std) {
        Some(Ok(l)) => Some(monoio::spawn(accept_on(Rc::clone(&worker), l, true))),
        Some(Err(e)) => {
            tracing::error!(worker = worker.id, error = %e, "cannot register the TLS listener");
            return;
        }
        None => None,
    };
    let publisher = {
        let worker = Rc::clone(&worker);
        monoio::spawn(async move {
            while !worker.shutdown.is_set() {
                monoio::time::sleep(PUBLISH_INTERVAL).await;
                worker.publish();
            }
        })
    };
    let gossiper = {
        let worker = Rc::clone(&worker);
        monoio::spawn(async move {
            while !worker.shutdown.is_set() {
                let every = worker.snapshot().config.limits.gossip_interval_ms.max(1);
                monoio::time::sleep(Duration::from_millis(every)).await;
                worker.gossip_round();
            }
        })
    };
    accept_on(Rc::clone(&worker), listener, false).await;
    if let Some(tls) = tls {
        tls.await;
    }
    worker.local_shutdown.trigger();
    let drain = Duration::from_millis(worker.snapshot().config.proxy.drain_timeout_ms);
    let deadline = Instant::now() + drain;
    while worker.shared_stats.open() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    let left = worker.shared_stats.open();
    if left > 0 {
        tracing::warn!(worker = worker.id, connections = left, "drain timeout: closing remaining connections");
    } else {
        tracing::info!(worker = worker.id, "drained");
    }
    worker.publish();
    // Records of the last requests: hand them over before the thread ends (waits for room).
    worker.analytics.borrow_mut().finish();
    drop(publisher);
    drop(gossiper);
}

/// Accepts on `listener` until shutdown; `tls`: the TLS listener, whose connections shake
/// hands first.
async fn accept_on(worker: Rc<Worker>, listener: TcpListener, tls: bool) {
    let mut shutdown = worker.shutdown.listen();
    // Out of file descriptors, accept fails about 180 times a second: one line per 10 s, with
    // the count of those left out.
    let mut accept_log = crate::ratelog::RateLimited::new(Duration::from_secs(10));
    while !worker.shutdown.is_set() {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, peer)) => on_accept(&worker, stream, peer, tls),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                if let Some(left_out) = accept_log.check(Instant::now()) {
                    tracing::warn!(worker = worker.id, error = %e, left_out, tls, "accept failed");
                }
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn on_accept(worker: &Rc<Worker>, stream: monoio::net::TcpStream, peer: SocketAddr, tls: bool) {
    let max = worker.snapshot().config.proxy.max_connections_per_worker as u64;
    worker.stats.borrow_mut().connections_accepted += 1;
    if worker.bans.load().is_banned(peer.ip()) {
        worker.stats.borrow_mut().connections_banned += 1;
        drop(stream);
        return;
    }
    if worker.shared_stats.open() >= max {
        // Envoy's overflow behaviour: over the limit, close at once and count it, so the worker
        // keeps serving the connections it has.
        worker.stats.borrow_mut().connections_refused += 1;
        drop(stream);
        return;
    }
    worker.shared_stats.open_connections.fetch_add(1, Ordering::Relaxed);
    let guard = OpenGuard(Arc::clone(&worker.shared_stats));
    let worker = Rc::clone(worker);
    if tls {
        monoio::spawn(async move {
            if let Some(client) = shake_hands(&worker, stream).await {
                conn::serve(worker, client, peer).await;
            }
            drop(guard);
        });
        return;
    }
    let fut = async move {
        conn::serve(worker, Stream::Plain(stream), peer).await;
        drop(guard);
    };
    tracing::trace!(bytes = std::mem::size_of_val(&fut), "connection task size");
    monoio::spawn(fut);
}

/// The TLS handshake of a connection to the TLS listener, on its own task and bounded by
/// `[tls] handshake_timeout_ms`, with the certificates of the snapshot current now. Counted in
/// the worker's stats; a failure closes the connection (rustls has sent its alert).
async fn shake_hands(worker: &Worker, stream: monoio::net::TcpStream) -> Option<Stream> {
    let snap = worker.snapshot();
    let tls = snap.tls.as_ref()?;
    let timeout = Duration::from_millis(snap.config.tls.handshake_timeout_ms);
    let shaken = monoio::time::timeout(timeout, Stream::accept_tls(stream, Arc::clone(&tls.config))).await;
    let mut stats = worker.stats.borrow_mut();
    match shaken {
        Ok(Ok(s)) => {
            stats.tls_handshakes += 1;
            Some(s)
        }
        Ok(Err(e)) => {
            stats.tls_handshake_failures += 1;
            tracing::debug!(worker = worker.id, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            stats.tls_handshake_failures += 1;
            tracing::debug!(worker = worker.id, "TLS handshake timed out");
            None
        }
    }
}
