//! One worker: a thread pinned to a CPU, running a monoio runtime (epoll or io_uring), accepting
//! on its own listener and serving each connection as a local task.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Cache};
use monoio::net::TcpListener;

use crate::config::{IoDriver, Snapshot};
use crate::router::ApiIndex;

use super::stats::{LocalStats, WorkerStats, PUBLISH_INTERVAL};
use super::upstream::Pool;
use super::{conn, Shared, Shutdown};

/// Most pooled exchange-buffer sets per worker.
const SPARE_MAX: usize = 1024;

/// The control plane's handle on a running worker.
pub struct WorkerHandle {
    pub id: usize,
    pub stats: Arc<WorkerStats>,
    pub thread: JoinHandle<()>,
}

struct SnapCache {
    cache: Cache<Arc<ArcSwap<Snapshot>>, Arc<Snapshot>>,
    #[expect(clippy::redundant_allocation, reason = "an Rc clone per request is non-atomic; an Arc's is shared")]
    current: Rc<Arc<Snapshot>>,
}

/// A worker's own state, shared by its connection tasks on the same thread.
pub(crate) struct Worker {
    pub id: usize,
    snap: RefCell<SnapCache>,
    pub pool: Pool,
    pub stats: RefCell<LocalStats>,
    pub shared_stats: Arc<WorkerStats>,
    pub shutdown: Arc<Shutdown>,
    /// The process-wide shutdown, relayed by the accept loop to this worker's connections.
    pub local_shutdown: Rc<super::LocalShutdown>,
    /// Banned addresses (user-space enforcement; the XDP gate drops them earlier when loaded).
    pub bans: Arc<ArcSwap<crate::bans::BanSet>>,
    round_robin: RefCell<(u64, Vec<usize>)>,
    /// Exchange buffers not in use (see `conn::ExchangeBufs`).
    spare: RefCell<Vec<super::conn::ExchangeBufs>>,
    /// Client read buffers not in use, all of `io::INITIAL_CAPACITY`.
    spare_client: RefCell<Vec<Vec<u8>>>,
    request_seq: Cell<u64>,
    request_id_seed: u64,
    /// Session, JWT and basic-auth caches (see `auth::cache`).
    pub auth: RefCell<crate::auth::WorkerAuth>,
    /// Asks the control plane's key store on a cache miss.
    pub keys: crate::keystore::KeyClient,
    /// Rate-limit buckets (see `limit`), gossiped through `gossip`.
    pub limiter: RefCell<crate::limit::Limiter>,
    gossip: crate::gossip::WorkerLink,
    /// Request records on their way to the analytics pump.
    pub analytics: RefCell<crate::analytics::Recorder>,
    /// Pipes and body hints for spliced response bodies (see `splice`).
    pub splice: super::splice::Splicer,
    /// Request bodies each client IP is streaming to an upstream now (see
    /// `conn::StreamingBody`); entries go when their count drops to zero.
    pub streaming_bodies: RefCell<std::collections::HashMap<std::net::IpAddr, u32>>,
    /// When the worker started: the origin of the clock it passes to `auth` (which reads none).
    pub epoch: Instant,
}

impl Worker {
    /// The current snapshot. Checking for a newer one reads one shared atomic; cloning the
    /// result is a non-atomic `Rc` increment, so workers never contend on a reference count.
    #[expect(clippy::redundant_allocation, reason = "the Rc is the point: see above")]
    pub(super) fn snapshot(&self) -> Rc<Arc<Snapshot>> {
        let mut guard = self.snap.borrow_mut();
        let SnapCache { cache, current } = &mut *guard;
        let latest = cache.load();
        if !Arc::ptr_eq(latest, current) {
            *current = Rc::new(Arc::clone(latest));
        }
        Rc::clone(current)
    }

    /// Round robin over an API's targets (repeated entries weight it).
    pub(super) fn pick_target(&self, generation: u64, api: ApiIndex, n: usize) -> usize {
        let mut rr = self.round_robin.borrow_mut();
        if rr.0 != generation {
            *rr = (generation, Vec::new());
        }
        let i = api as usize;
        if rr.1.len() <= i {
            rr.1.resize(i + 1, 0);
        }
        let pick = rr.1[i] % n.max(1);
        rr.1[i] = rr.1[i].wrapping_add(1);
        pick
    }

    /// A new request id (32 hex digits, unique per process run and worker).
    pub(super) fn next_request_id(&self) -> [u8; 32] {
        let seq = self.request_seq.get().wrapping_add(1);
        self.request_seq.set(seq);
        // A digit table rather than `write!("{:016x}")`: the formatter was 0.7 % of the proxy's
        // cycles in the small scenario (perf), for one id per request.
        let mut id = [0u8; 32];
        portcullis_http1::digits::hex16(self.request_id_seed, &mut id[..16]);
        portcullis_http1::digits::hex16(seq, &mut id[16..]);
        id
    }

    /// Buffers for one exchange: from the pool, or fresh (allocated on first use).
    pub(super) fn take_exchange_bufs(&self, buffer_size: usize) -> super::conn::ExchangeBufs {
        self.spare.borrow_mut().pop().unwrap_or_else(|| super::conn::ExchangeBufs::unallocated(buffer_size))
    }

    /// Returns an exchange's buffers; the pool keeps at most [`SPARE_MAX`] sets.
    pub(super) fn return_exchange_bufs(&self, mut x: super::conn::ExchangeBufs) {
        if !x.upstream.is_empty() || x.is_unallocated() {
            return;
        }
        x.req_head.clear();
        x.out.clear();
        x.record.clear();
        let mut spare = self.spare.borrow_mut();
        if spare.len() < SPARE_MAX {
            spare.push(x);
        }
    }

    /// A client read buffer: from the pool, or an empty `Vec` (allocated on first read).
    pub(super) fn take_client_buf(&self) -> Vec<u8> {
        self.spare_client.borrow_mut().pop().unwrap_or_default()
    }

    /// Returns a client read buffer (`ReadBuf::take_allocation`); the pool keeps at most
    /// [`SPARE_MAX`], and only buffers still at their initial size.
    pub(super) fn return_client_buf(&self, buf: Vec<u8>) {
        debug_assert!(buf.is_empty());
        if buf.capacity() == super::io::INITIAL_CAPACITY {
            let mut spare = self.spare_client.borrow_mut();
            if spare.len() < SPARE_MAX {
                spare.push(buf);
            }
        }
    }

    /// One gossip round: apply what other workers and nodes reported, report this round's
    /// deltas and rejected client IPs to the hub. Never blocks: a full hub queue drops the
    /// report, counted in `portcullis_limit_gossip_reports_dropped_total`.
    fn gossip_round(&self) {
        let mut limiter = self.limiter.borrow_mut();
        limiter.set_clock(self.epoch.elapsed());
        let mut newest: Option<Instant> = None;
        while let Ok(batch) = self.gossip.inbox.try_recv() {
            if batch.nodes_lost {
                limiter.forget_nodes();
            }
            let from_node = matches!(batch.from, crate::gossip::Origin::Node(_));
            limiter.apply(&batch.deltas, from_node);
            newest = Some(newest.map_or(batch.sent, |n: Instant| n.max(batch.sent)));
        }
        if let Some(t) = newest {
            limiter.stats.gossip_lag_secs = t.elapsed().as_secs_f64();
        }
        let mut deltas = Vec::new();
        limiter.take_deltas(&mut deltas);
        let rejected_ips = limiter.take_rejected_ips();
        if deltas.is_empty() && rejected_ips.is_empty() {
            return;
        }
        let report = crate::gossip::Report { worker: self.id, sent: Instant::now(), deltas, rejected_ips };
        if self.gossip.to_hub.borrow_mut().try_send(report).is_err() {
            limiter.stats.gossip_dropped += 1;
        }
    }

    /// Publishes a copy of the counters, and hands the records written since the last tick to
    /// the analytics pump (so a record reaches the sink within one tick at low traffic).
    fn publish(&self) {
        let analytics = {
            let mut r = self.analytics.borrow_mut();
            r.flush();
            r.stats
        };
        let mut s = self.stats.borrow().clone();
        s.analytics = analytics;
        let cfg = &self.snapshot().config.proxy;
        self.pool.prune(
            Duration::from_millis(cfg.upstream_idle_timeout_ms),
            cfg.upstream_pool_size,
            Duration::from_millis(cfg.upstream_pool_surplus_ms),
        );
        s.upstream_idle = self.pool.idle_count() as u64;
        s.upstream_waiting = self.pool.queued_count() as u64;
        s.cached_sessions = self.auth.borrow().cached_sessions() as u64;
        s.limiter = self.limiter.borrow().stats;
        self.shared_stats.published.store(Arc::new(s));
    }
}

/// Starts worker `id` on its own thread.
pub(super) fn spawn(
    id: usize,
    cpu: Option<usize>,
    driver: IoDriver,
    listener: std::net::TcpListener,
    shared: &Shared,
) -> std::io::Result<WorkerHandle> {
    let stats = WorkerStats::new();
    let snapshot = Arc::clone(&shared.snapshot);
    let shutdown = Arc::clone(&shared.shutdown);
    let bans = Arc::clone(&shared.bans);
    let keys = shared.keys.clone();
    let auth_limits = shared.auth_limits;
    let invalidations = shared
        .invalidations
        .get(id)
        .cloned()
        .ok_or_else(|| std::io::Error::other(format!("no key-change channel for worker {id}")))?;
    let limiter_cfg = shared.limiter;
    let analytics = shared.analytics.clone();
    let gossip = shared
        .gossip
        .lock()
        .map_err(|_| std::io::Error::other("gossip links poisoned"))?
        .get_mut(id)
        .and_then(Option::take)
        .ok_or_else(|| std::io::Error::other(format!("no gossip link for worker {id}")))?;
    let thread_stats = Arc::clone(&stats);
    let thread = std::thread::Builder::new().name(format!("portcullis-w{id}")).spawn(move || {
        let pinned = cpu.filter(|&c| core_affinity::set_for_current(core_affinity::CoreId { id: c }));
        let _ = thread_stats.cpu.set(pinned);
        let current = Rc::new(snapshot.load_full());
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ ((id as u64) << 56)
            ^ u64::from(std::process::id()) << 24;
        // The clocks auth and the limiter are given count from here (`set_clock`).
        let (epoch, epoch_unix) = (Instant::now(), crate::clock::unix_now_f64());
        let worker = Rc::new(Worker {
            id,
            snap: RefCell::new(SnapCache { cache: Cache::new(snapshot), current }),
            pool: Pool::default(),
            stats: RefCell::new(LocalStats::default()),
            shared_stats: thread_stats,
            shutdown,
            local_shutdown: Rc::default(),
            bans,
            round_robin: RefCell::new((0, Vec::new())),
            spare: RefCell::new(Vec::new()),
            spare_client: RefCell::new(Vec::new()),
            request_seq: Cell::new(0),
            request_id_seed: seed,
            auth: RefCell::new(crate::auth::WorkerAuth::new(auth_limits, invalidations)),
            keys,
            limiter: RefCell::new(crate::limit::Limiter::new(limiter_cfg, epoch_unix)),
            gossip,
            analytics: RefCell::new(crate::analytics::Recorder::new(analytics)),
            splice: super::splice::Splicer::default(),
            streaming_bodies: RefCell::default(),
            epoch,
        });
        run_on_driver(worker, driver, listener);
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

fn run_on_driver(worker: Rc<Worker>, driver: IoDriver, listener: std::net::TcpListener) {
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

async fn accept_loop(worker: Rc<Worker>, listener: std::net::TcpListener) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(worker = worker.id, error = %e, "cannot register listener");
            return;
        }
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
            Ok((stream, peer)) => on_accept(&worker, stream, peer),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                if let Some(left_out) = accept_log.check(Instant::now()) {
                    tracing::warn!(worker = worker.id, error = %e, left_out, "accept failed");
                }
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
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

fn on_accept(worker: &Rc<Worker>, stream: monoio::net::TcpStream, peer: SocketAddr) {
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
    let fut = async move {
        conn::serve(worker, stream, peer).await;
        drop(guard);
    };
    tracing::trace!(bytes = std::mem::size_of_val(&fut), "connection task size");
    monoio::spawn(fut);
}
