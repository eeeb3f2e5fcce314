//! Per-connection telemetry from the kernel (the `tcp_telemetry` sock_ops program): reads
//! [`ConnEvent`]s from the ring buffer, keeps the most recent connections for
//! `GET /api/connections` (so request records can join them by client address and port) and
//! aggregates RTT and retransmit histograms and closes by state for `/metrics`.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use portcullis_ebpf_common::ConnEvent;

/// Recent connections kept for the admin API.
pub const RECENT: usize = 1024;

/// RTT histogram bounds, seconds.
pub const RTT_BUCKETS: [f64; 12] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];
/// Retransmits-per-connection histogram bounds.
pub const RETRANS_BUCKETS: [f64; 6] = [0.0, 1.0, 2.0, 5.0, 10.0, 50.0];

/// One closed connection, in user-space terms.
#[derive(Debug, Clone)]
pub struct ConnRecord {
    pub client: IpAddr,
    pub client_port: u16,
    pub local_port: u16,
    pub start: Option<SystemTime>,
    pub end: SystemTime,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub srtt: Duration,
    pub retransmits: u32,
    pub close_state: &'static str,
}

/// Cumulative-bucket histogram.
#[derive(Debug, Clone, Default)]
pub struct Hist {
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Hist {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len()];
        }
        for (c, b) in self.counts.iter_mut().zip(bounds) {
            if v <= *b {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }
}

#[derive(Default)]
struct Inner {
    recent: VecDeque<ConnRecord>,
    rtt: Hist,
    retrans: Hist,
    closed: BTreeMap<&'static str, u64>,
    events: u64,
}

/// The aggregate the control plane keeps.
#[derive(Default)]
pub struct Telemetry {
    inner: Mutex<Inner>,
}

/// `BPF_TCP_*` state names.
pub fn state_name(s: u32) -> &'static str {
    match s {
        1 => "established",
        2 => "syn_sent",
        3 => "syn_recv",
        4 => "fin_wait1",
        5 => "fin_wait2",
        6 => "time_wait",
        7 => "close",
        8 => "close_wait",
        9 => "last_ack",
        10 => "listen",
        11 => "closing",
        12 => "new_syn_recv",
        _ => "unknown",
    }
}

fn mono_to_wall(ns: u64, now_mono_ns: u64, now_wall: SystemTime) -> SystemTime {
    now_wall.checked_sub(Duration::from_nanos(now_mono_ns.saturating_sub(ns))).unwrap_or(now_wall)
}

impl Telemetry {
    pub fn record(&self, ev: &ConnEvent, now_mono_ns: u64) {
        let now_wall = SystemTime::now();
        let v6 = Ipv6Addr::from(ev.remote_addr);
        let client = v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6));
        let rec = ConnRecord {
            client,
            client_port: ev.remote_port,
            local_port: ev.local_port,
            start: (ev.start_ns != 0).then(|| mono_to_wall(ev.start_ns, now_mono_ns, now_wall)),
            end: mono_to_wall(ev.end_ns, now_mono_ns, now_wall),
            bytes_in: ev.bytes_received,
            bytes_out: ev.bytes_acked,
            srtt: Duration::from_micros(ev.srtt_us as u64),
            retransmits: ev.total_retrans,
            close_state: state_name(ev.close_state),
        };
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.rtt.observe(&RTT_BUCKETS, rec.srtt.as_secs_f64());
        g.retrans.observe(&RETRANS_BUCKETS, rec.retransmits as f64);
        *g.closed.entry(rec.close_state).or_default() += 1;
        g.events += 1;
        if g.recent.len() == RECENT {
            g.recent.pop_front();
        }
        g.recent.push_back(rec);
    }

    /// Most recent first.
    pub fn recent(&self) -> Vec<ConnRecord> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).recent.iter().rev().cloned().collect()
    }

    /// (RTT histogram, retransmit histogram, closes by state, events).
    pub fn snapshot(&self) -> (Hist, Hist, Vec<(&'static str, u64)>, u64) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (g.rtt.clone(), g.retrans.clone(), g.closed.iter().map(|(k, v)| (*k, *v)).collect(), g.events)
    }
}

/// Polls an owned fd-backed source (a ring buffer) on the tokio runtime, calling `drain` each
/// time it is readable, until polling fails. `what` names it in the one log line on failure.
async fn pump<T: std::os::fd::AsRawFd>(source: T, what: &'static str, mut drain: impl FnMut(&mut T)) {
    // SAFETY: the source owns its fd and is moved into the AsyncFd, which deregisters it before
    // dropping it, so the fd stays open for as long as it is registered.
    let registered = unsafe { tokio::io::unix::AsyncFd::register(source) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "cannot poll {what}; it is off");
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "polling {what} failed; it is off");
                return;
            }
        };
        drain(guard.get_inner_mut());
        guard.clear_ready();
    }
}

/// Forwards aya-log records from the kernel programs to the process's log (debug level).
pub async fn pump_ebpf_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    pump(logger, "eBPF diagnostics", |l| l.flush()).await;
}

/// Reads the telemetry ring buffer until the process ends (a tokio task on the control plane).
pub async fn run(ring: aya::maps::RingBuf<aya::maps::MapData>, telemetry: std::sync::Arc<Telemetry>) {
    pump(ring, "per-connection telemetry", |ring| {
        let now = crate::ebpf::monotonic_ns();
        while let Some(item) = ring.next() {
            if item.len() >= std::mem::size_of::<ConnEvent>() {
                // SAFETY: the kernel wrote a whole ConnEvent (a Pod type) at this address; the
                // read is unaligned-safe.
                let ev: ConnEvent = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const ConnEvent) };
                telemetry.record(&ev, now);
            }
        }
    })
    .await;
}
