//! One worker's state: what its connection tasks share on its thread (snapshot cache, upstream
//! pool, buffer pools, auth caches, limiter, recorder, counters, the published health answers),
//! and its periodic work (stats publication, gossip rounds). Its thread and accept loop are
//! `accept.rs`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Cache};

use crate::config::Snapshot;
use crate::router::ApiIndex;

use super::io::ExchangeBufs;
use super::stats::{LocalStats, WorkerStats};
use super::upstream::Pool;
use super::Shutdown;

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
    /// The health endpoints' bodies (see `health`), as the control plane last published them.
    pub health: Arc<ArcSwap<super::health::HealthReplies>>,
    /// Hosts (`host[:port]`, lower case) the uptime checks found down (`control/uptime.rs`),
    /// read only for APIs that steer by them.
    pub down_hosts: Arc<ArcSwap<super::DownHosts>>,
    /// `[tls.acme]`'s HTTP-01 answers (see `acme`).
    pub acme: Arc<ArcSwap<super::acme::Challenges>>,
    round_robin: RefCell<(u64, Vec<usize>)>,
    /// Exchange buffers not in use (see `io::ExchangeBufs`).
    spare: RefCell<Vec<ExchangeBufs>>,
    /// Client read buffers not in use, all of `io::INITIAL_CAPACITY`.
    spare_client: RefCell<Vec<Vec<u8>>>,
    request_seq: Cell<u64>,
    request_id_seed: u64,
    /// API visibility's sampling sequence (see [`Worker::sampled`]).
    sample_seq: Cell<u64>,
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
    /// Upstream host names resolved for this worker, by (snapshot generation, API, target):
    /// the address (or `None`: did not resolve) and until when it holds.
    pub resolved: RefCell<std::collections::HashMap<TargetKey, Resolved>>,
    /// Tyk's response cache (see `cache`): made when an API first keeps a response.
    pub response_cache: RefCell<Option<super::cache::ResponseCache>>,
}

/// A target of a snapshot: (generation, API, index into its targets).
pub(crate) type TargetKey = (u64, u32, u32);

/// A resolved host name: its address (`None`: it did not resolve) and until when that holds.
pub(crate) type Resolved = (Option<std::net::SocketAddr>, Instant);

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
    pub(super) fn pick_target(&self, generation: u64, api: ApiIndex, spec: &crate::config::ApiSpec) -> Option<usize> {
        let n = spec.targets.len().max(1);
        let mut rr = self.round_robin.borrow_mut();
        if rr.0 != generation {
            *rr = (generation, Vec::new());
        }
        let i = api as usize;
        if rr.1.len() <= i {
            rr.1.resize(i + 1, 0);
        }
        let start = rr.1[i] % n;
        rr.1[i] = rr.1[i].wrapping_add(1);
        if spec.uptime.is_none() {
            return Some(start);
        }
        // Tyk's `nextTarget` (reverse_proxy.go:157-191): from the round robin's pick, the first
        // target whose host the uptime checks have not found down.
        let down = self.down_hosts.load();
        if down.is_empty() {
            return Some(start);
        }
        // Host headers come from parsed http URLs, whose hosts the URL parser has lowercased, as
        // the uptime checks' (`config::tyk_uptime`): compared as they are, no allocation.
        (0..n).map(|k| (start + k) % n).find(|&t| !down.contains(spec.targets[t].host_header.as_str()))
    }

    /// Whether to sample this request for API visibility, `below` being its API's threshold
    /// (`config::Visibility::sample_below`): splitmix64 of a per-worker sequence, uniform and
    /// a few instructions, no shared state.
    pub(super) fn sampled(&self, below: u64) -> bool {
        let seq = self.sample_seq.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.sample_seq.set(seq);
        let mut z = seq;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        below == u64::MAX || z < below
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
    pub(super) fn take_exchange_bufs(&self, buffer_size: usize) -> ExchangeBufs {
        self.spare.borrow_mut().pop().unwrap_or_else(|| ExchangeBufs::unallocated(buffer_size))
    }

    /// Returns an exchange's buffers; the pool keeps at most [`SPARE_MAX`] sets.
    pub(super) fn return_exchange_bufs(&self, mut x: ExchangeBufs) {
        if !x.upstream.is_empty() || x.is_unallocated() {
            return;
        }
        x.req_head.clear();
        x.out.clear();
        x.record.clear();
        x.cache = None;
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
    pub(super) fn gossip_round(&self) {
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
    pub(super) fn publish(&self) {
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

/// What a worker is made of besides its thread: handed from `Shared` to the new thread.
pub(super) struct Parts {
    pub(super) snapshot: Arc<ArcSwap<Snapshot>>,
    pub(super) shutdown: Arc<Shutdown>,
    pub(super) bans: Arc<ArcSwap<crate::bans::BanSet>>,
    pub(super) keys: crate::keystore::KeyClient,
    pub(super) auth_limits: crate::auth::CacheLimits,
    pub(super) invalidations: crossbeam_channel::Receiver<crate::auth::Invalidation>,
    pub(super) limiter: crate::limit::LimiterConfig,
    pub(super) analytics: crate::analytics::Feed,
    pub(super) gossip: crate::gossip::WorkerLink,
    pub(super) health: Arc<ArcSwap<super::health::HealthReplies>>,
    pub(super) down_hosts: Arc<ArcSwap<super::DownHosts>>,
    pub(super) acme: Arc<ArcSwap<super::acme::Challenges>>,
}

impl Worker {
    /// Worker `id`, built on its own thread (its state is `!Send`).
    pub(super) fn new(id: usize, parts: Parts, shared_stats: Arc<WorkerStats>) -> Worker {
        let Parts {
            snapshot,
            shutdown,
            bans,
            keys,
            auth_limits,
            invalidations,
            limiter,
            analytics,
            gossip,
            health,
            down_hosts,
            acme,
        } = parts;
        let current = Rc::new(snapshot.load_full());
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ ((id as u64) << 56)
            ^ u64::from(std::process::id()) << 24;
        // The clocks auth and the limiter are given count from here (`set_clock`).
        let (epoch, epoch_unix) = (Instant::now(), crate::clock::unix_now_f64());
        Worker {
            id,
            snap: RefCell::new(SnapCache { cache: Cache::new(snapshot), current }),
            pool: Pool::default(),
            stats: RefCell::new(LocalStats::default()),
            shared_stats,
            shutdown,
            local_shutdown: Rc::default(),
            bans,
            health,
            down_hosts,
            acme,
            round_robin: RefCell::new((0, Vec::new())),
            spare: RefCell::new(Vec::new()),
            spare_client: RefCell::new(Vec::new()),
            request_seq: Cell::new(0),
            request_id_seed: seed,
            sample_seq: Cell::new(seed),
            auth: RefCell::new(crate::auth::WorkerAuth::new(auth_limits, invalidations)),
            keys,
            limiter: RefCell::new(crate::limit::Limiter::new(limiter, epoch_unix)),
            gossip,
            analytics: RefCell::new(crate::analytics::Recorder::new(analytics)),
            splice: super::splice::Splicer::default(),
            streaming_bodies: RefCell::default(),
            epoch,
            resolved: RefCell::default(),
            response_cache: RefCell::default(),
        }
    }
}
