//! The control plane's side of limiter gossip: the hub that passes each worker's per-round
//! deltas to the other workers, relays them to other nodes through Redis pub/sub (and theirs
//! back), and the abuse detector that bans client IPs whose rejections exceed a threshold.
//!
//! Workers never wait for any of this: they push a report into a bounded channel in a round that
//! has something to report and drain their inbox once per round. The hub sleeps until a report
//! comes: with no rate limit in use and no Redis it never wakes (a tick every gossip interval had
//! cost 3 % of a busy worker's core at 1,000 connections, by preempting it 200 times a second;
//! docs/decisions/0015-gossip-hub-sleeps.md). With Redis it also wakes every gossip interval, to flush this node's deltas
//! and to notice a lost link. When Redis is unreachable the node keeps limiting with
//! its own (gossiped between its workers) view, says so in `/hello` and the metrics, and rejoins
//! when Redis returns. Must not: block a worker; lose a worker's report silently (a full queue is
//! counted).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::limit::{Delta, Rate};

/// Pub/sub channel of the cluster's limiter deltas.
pub const CHANNEL: &str = "portcullis.limits";

/// Where a batch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Worker(usize),
    Node(u64),
}

/// Deltas passed to a worker.
#[derive(Debug)]
pub struct Batch {
    pub from: Origin,
    /// When the deltas were collected (for the lag metric).
    pub sent: Instant,
    pub deltas: Vec<Delta>,
    /// The cluster link was lost: drop other nodes' demand (deltas is empty).
    pub nodes_lost: bool,
}

/// What a worker sends the hub each round.
#[derive(Debug)]
pub struct Report {
    pub worker: usize,
    pub sent: Instant,
    pub deltas: Vec<Delta>,
    pub rejected_ips: Vec<(IpAddr, u32)>,
}

/// A worker's end of the gossip channels.
pub struct WorkerLink {
    /// Bounded; `try_send` from the worker's thread wakes the hub's task. A runtime-agnostic
    /// channel (futures-channel): the data plane holds no tokio type.
    pub to_hub: std::cell::RefCell<futures_channel::mpsc::Sender<Report>>,
    pub inbox: crossbeam_channel::Receiver<Arc<Batch>>,
}

/// Counters shown in `/metrics` and `/hello`.
#[derive(Debug, Default)]
pub struct HubStats {
    pub relayed_total: AtomicU64,
    pub dropped_total: AtomicU64,
    pub cluster_published_total: AtomicU64,
    pub cluster_received_total: AtomicU64,
    pub cluster_errors_total: AtomicU64,
    pub bans_total: AtomicU64,
    /// Redis is configured and the last publish succeeded.
    pub cluster_ok: AtomicBool,
    pub cluster_error: Mutex<String>,
    /// Other nodes seen, by id, with when.
    pub peers: Mutex<HashMap<u64, Instant>>,
}

impl HubStats {
    /// Nodes heard from in the last 10 s.
    pub fn peers_seen(&self) -> usize {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.values().filter(|t| t.elapsed() < Duration::from_secs(10)).count()
    }
}

/// Settings of the hub and the abuse detector (`[limits]`, `[cluster]`).
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub gossip_interval: Duration,
    pub cluster_interval: Duration,
    /// Redis URL for cluster gossip; empty: single node.
    pub redis: String,
    /// Rejections from one IP within `ban_window` that get it banned; 0 = never.
    pub ban_threshold: u64,
    pub ban_window: Duration,
    pub ban_ttl: Duration,
}

/// Channels for `workers` workers: their links, and the hub's ends.
pub fn channels(workers: usize) -> (Vec<WorkerLink>, HubEnds) {
    let (to_hub, from_workers) = futures_channel::mpsc::channel(workers.max(1) * 64);
    let mut links = Vec::with_capacity(workers);
    let mut to_workers = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = crossbeam_channel::bounded(1024);
        links.push(WorkerLink { to_hub: std::cell::RefCell::new(to_hub.clone()), inbox: rx });
        to_workers.push(tx);
    }
    (links, HubEnds { from_workers, relay: Relay { to_workers } })
}

/// The hub's ends of the channels.
pub struct HubEnds {
    from_workers: futures_channel::mpsc::Receiver<Report>,
    relay: Relay,
}

/// The senders into the workers' inboxes (shared by the hub and the cluster subscriber).
struct Relay {
    to_workers: Vec<crossbeam_channel::Sender<Arc<Batch>>>,
}

impl Relay {
    fn send(&self, except: Option<usize>, batch: &Arc<Batch>, stats: &HubStats) {
        for (i, tx) in self.to_workers.iter().enumerate() {
            if Some(i) == except {
                continue;
            }
            match tx.try_send(Arc::clone(batch)) {
                Ok(()) => stats.relayed_total.fetch_add(1, Ordering::Relaxed),
                Err(_) => stats.dropped_total.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
}

/// Rejections per IP in the current window.
struct Abuse {
    seen: HashMap<IpAddr, (Instant, u64)>,
}

/// Runs the hub until the runtime stops (control plane task).
pub async fn run_hub(ends: HubEnds, cfg: HubConfig, stats: Arc<HubStats>, bans: Arc<crate::bans::BanManager>) {
    let node: u64 = {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        u64::from_le_bytes(b)
    };
    let HubEnds { mut from_workers, relay } = ends;
    let relay = Arc::new(relay);
    let (cluster_tx, cluster_rx) = tokio::sync::mpsc::channel::<Vec<Delta>>(64);
    let clustered = !cfg.redis.is_empty();
    if clustered {
        tokio::spawn(cluster_publish(cfg.redis.clone(), node, cluster_rx, Arc::clone(&stats)));
        tokio::spawn(cluster_subscribe(cfg.redis.clone(), node, Arc::clone(&relay), Arc::clone(&stats)));
    } else {
        drop(cluster_rx);
    }
    let mut abuse = Abuse { seen: HashMap::new() };
    let mut pending: HashMap<u64, Delta> = HashMap::new();
    let mut last_cluster = Instant::now();
    let mut cluster_was_ok = false;
    // Only polled with Redis: flushes this node's pending deltas and watches the link.
    let mut tick = tokio::time::interval(cfg.gossip_interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The report that woke the hub (none on a tick); the rest queued are drained below.
        let mut next = tokio::select! {
            r = futures_util::StreamExt::next(&mut from_workers) => match r {
                Some(r) => Some(r),
                None => return, // every worker's link is gone: the node is stopping
            },
            _ = tick.tick(), if clustered => None,
        };
        while let Some(r) = next.take().or_else(|| from_workers.try_recv().ok()) {
            for (ip, n) in &r.rejected_ips {
                abuse.note(*ip, u64::from(*n), &cfg, &bans, &stats);
            }
            if r.deltas.is_empty() {
                continue;
            }
            if clustered {
                for d in &r.deltas {
                    let e = pending.entry(d.key).or_insert(Delta { key: d.key, rate: d.rate, admitted: 0, demand: 0 });
                    e.rate = d.rate;
                    e.admitted = e.admitted.saturating_add(d.admitted);
                    e.demand = e.demand.saturating_add(d.demand);
                }
            }
            let batch =
                Arc::new(Batch { from: Origin::Worker(r.worker), sent: r.sent, deltas: r.deltas, nodes_lost: false });
            relay.send(Some(r.worker), &batch, &stats);
        }
        if !pending.is_empty() && last_cluster.elapsed() >= cfg.cluster_interval {
            let out: Vec<Delta> = pending.drain().map(|(_, d)| d).collect();
            if cluster_tx.try_send(out).is_err() {
                stats.dropped_total.fetch_add(1, Ordering::Relaxed);
            }
            last_cluster = Instant::now();
        }
        abuse.expire(&cfg);
        let ok = stats.cluster_ok.load(Ordering::Relaxed);
        if cluster_was_ok && !ok {
            let batch = Arc::new(Batch {
                from: Origin::Node(node),
                sent: Instant::now(),
                deltas: Vec::new(),
                nodes_lost: true,
            });
            relay.send(None, &batch, &stats);
            stats.peers.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        cluster_was_ok = ok;
    }
}

impl Abuse {
    fn note(&mut self, ip: IpAddr, n: u64, cfg: &HubConfig, bans: &crate::bans::BanManager, stats: &HubStats) {
        if cfg.ban_threshold == 0 {
            return;
        }
        let now = Instant::now();
        let e = self.seen.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) > cfg.ban_window {
            *e = (now, 0);
        }
        e.1 += n;
        if e.1 > cfg.ban_threshold {
            let count = e.1;
            self.seen.remove(&ip);
            let reason = format!("rate limit: {count} rejected requests within {} s", cfg.ban_window.as_secs_f64());
            match bans.ban(&ip.to_string(), cfg.ban_ttl, &reason) {
                Ok(_) => {
                    stats.bans_total.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%ip, ttl_secs = cfg.ban_ttl.as_secs(), %reason, "client banned");
                }
                Err(e) => tracing::info!(%ip, error = %e, "abusive client not banned"),
            }
        }
    }

    fn expire(&mut self, cfg: &HubConfig) {
        if self.seen.len() > 100_000 {
            let w = cfg.ban_window;
            self.seen.retain(|_, (t, _)| t.elapsed() <= w);
        }
    }
}

fn note_cluster(stats: &HubStats, r: Result<(), String>) {
    match r {
        Ok(()) => {
            if !stats.cluster_ok.swap(true, Ordering::Relaxed) {
                tracing::info!("cluster limiter gossip through redis is up");
            }
        }
        Err(e) => {
            stats.cluster_errors_total.fetch_add(1, Ordering::Relaxed);
            if stats.cluster_ok.swap(false, Ordering::Relaxed) {
                tracing::warn!(error = %e, "redis unreachable: rate limits are node-local until it returns");
            }
            *stats.cluster_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
        }
    }
}

/// `[node, [[key, rate, per, burst, admitted, demand], ...]]`
fn encode(node: u64, deltas: &[Delta]) -> String {
    let rows: Vec<serde_json::Value> = deltas
        .iter()
        .map(|d| serde_json::json!([d.key, d.rate.rate, d.rate.per, d.rate.burst, d.admitted, d.demand]))
        .collect();
    serde_json::json!([node, rows]).to_string()
}

fn decode(text: &str) -> Option<(u64, Vec<Delta>)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let node = v.get(0)?.as_u64()?;
    let mut out = Vec::new();
    for row in v.get(1)?.as_array()? {
        let f = |i: usize| row.get(i).and_then(serde_json::Value::as_f64);
        let rate = Rate { rate: f(1)?, per: f(2)?, burst: f(3)? };
        if !(rate.rate > 0.0 && rate.per > 0.0 && rate.burst >= 1.0) {
            continue;
        }
        out.push(Delta {
            key: row.get(0)?.as_u64()?,
            rate,
            admitted: u32::try_from(row.get(4)?.as_u64()?).ok()?,
            demand: u32::try_from(row.get(5)?.as_u64()?).ok()?,
        });
    }
    Some((node, out))
}

async fn cluster_publish(
    url: String,
    node: u64,
    mut rx: tokio::sync::mpsc::Receiver<Vec<Delta>>,
    stats: Arc<HubStats>,
) {
    let client = match redis::Client::open(url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            note_cluster(&stats, Err(e.to_string()));
            return;
        }
    };
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    loop {
        // Deltas when there are some; an empty message every second so peers see this node
        // (and this node notices Redis coming back).
        let deltas = tokio::select! {
            d = rx.recv() => match d { Some(d) => d, None => return },
            _ = heartbeat.tick() => Vec::new(),
        };
        if conn.is_none() {
            let c = tokio::time::timeout(Duration::from_secs(1), client.get_multiplexed_async_connection()).await;
            match c {
                Ok(Ok(c)) => conn = Some(c),
                Ok(Err(e)) => {
                    note_cluster(&stats, Err(e.to_string()));
                    continue;
                }
                Err(_) => {
                    note_cluster(&stats, Err("connect timed out".into()));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let msg = encode(node, &deltas);
        let r = tokio::time::timeout(
            Duration::from_secs(1),
            redis::cmd("PUBLISH").arg(CHANNEL).arg(msg).query_async::<i64>(c),
        )
        .await;
        match r {
            Ok(Ok(_)) => {
                stats.cluster_published_total.fetch_add(1, Ordering::Relaxed);
                note_cluster(&stats, Ok(()));
            }
            Ok(Err(e)) => {
                conn = None;
                note_cluster(&stats, Err(e.to_string()));
            }
            Err(_) => {
                conn = None;
                note_cluster(&stats, Err("publish timed out".into()));
            }
        }
    }
}

async fn cluster_subscribe(url: String, node: u64, relay: Arc<Relay>, stats: Arc<HubStats>) {
    use futures_util::StreamExt as _;
    let Ok(client) = redis::Client::open(url.as_str()) else { return };
    loop {
        if let Ok(Ok(mut ps)) = tokio::time::timeout(Duration::from_secs(1), client.get_async_pubsub()).await {
            if ps.subscribe(CHANNEL).await.is_ok() {
                let mut msgs = ps.on_message();
                while let Some(m) = msgs.next().await {
                    let Ok(text) = m.get_payload::<String>() else { continue };
                    let Some((from, deltas)) = decode(&text) else { continue };
                    if from == node {
                        continue;
                    }
                    stats.cluster_received_total.fetch_add(1, Ordering::Relaxed);
                    stats.peers.lock().unwrap_or_else(|p| p.into_inner()).insert(from, Instant::now());
                    if !deltas.is_empty() {
                        let batch = Arc::new(Batch {
                            from: Origin::Node(from),
                            sent: Instant::now(),
                            deltas,
                            nodes_lost: false,
                        });
                        relay.send(None, &batch, &stats);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without Redis the hub has no timer: it must wake on a report alone, relay it to the other
    /// workers only, and stop once every worker's link is gone.
    #[test]
    fn the_hub_wakes_on_a_report_relays_it_and_stops_with_the_workers() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (mut links, ends) = channels(2);
        let cfg = HubConfig {
            gossip_interval: Duration::from_millis(5),
            cluster_interval: Duration::from_millis(10),
            redis: String::new(),
            ban_threshold: 0,
            ban_window: Duration::from_secs(10),
            ban_ttl: Duration::from_secs(60),
        };
        let stats = Arc::new(HubStats::default());
        let hub = rt.spawn(run_hub(ends, cfg, Arc::clone(&stats), Arc::new(crate::bans::BanManager::new())));
        let d = Delta { key: 7, rate: Rate { rate: 10.0, per: 1.0, burst: 10.0 }, admitted: 2, demand: 3 };
        let (w1, w0) = (links.pop().unwrap(), links.pop().unwrap());
        rt.block_on(async {
            // Idle first: a hub that ticked would be the same here, so this only checks that a
            // report sent later (from a plain thread, as a worker does) is still seen.
            tokio::time::sleep(Duration::from_millis(50)).await;
            // The worker's sender goes to the thread (a placeholder stays in the link).
            let mut to_hub = std::mem::replace(&mut *w0.to_hub.borrow_mut(), futures_channel::mpsc::channel(1).0);
            std::thread::scope(|s| {
                s.spawn(move || {
                    let r = Report { worker: 0, sent: Instant::now(), deltas: vec![d], rejected_ips: Vec::new() };
                    to_hub.try_send(r).unwrap();
                });
            });
            let deadline = Instant::now() + Duration::from_secs(5);
            let batch = loop {
                if let Ok(b) = w1.inbox.try_recv() {
                    break b;
                }
                assert!(Instant::now() < deadline, "the report was not relayed");
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            assert_eq!((batch.from, batch.deltas.as_slice()), (Origin::Worker(0), &[d][..]));
            assert!(w0.inbox.try_recv().is_err(), "a worker's own deltas are not sent back to it");
            assert_eq!(stats.relayed_total.load(Ordering::Relaxed), 1);
        });
        drop((w0, w1));
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), hub).await })
            .expect("the hub stops when every worker's link is gone")
            .unwrap();
    }

    #[test]
    fn cluster_messages_round_trip_and_bad_ones_are_ignored() {
        let d = Delta { key: u64::MAX - 7, rate: Rate { rate: 50.0, per: 1.0, burst: 50.0 }, admitted: 3, demand: 9 };
        let (node, back) = decode(&encode(42, &[d])).unwrap();
        assert_eq!((node, back), (42, vec![d]));
        assert!(decode("nope").is_none());
        assert_eq!(decode("[1, [[1, 0, 1, 1, 1, 1]]]").unwrap().1, vec![]);
    }
}
