//! The eBPF loader (control plane): loads the XDP gate built from `proxy-ebpf`, attaches it to
//! the configured interfaces (native mode, generic as a fallback with a warning), keeps its maps
//! in sync with the ban list and `[ebpf]` config, and reads its per-CPU counters. The `Ebpf`
//! object is owned here for the life of the process; dropping [`Gate`] detaches every program
//! (aya's links detach on drop), so no XDP program outlives the proxy and nothing is pinned.
//!
//! Must not: be used from the data plane (map writes are syscalls); workers read the published
//! ban set instead.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{CgroupAttachMode, SockOps, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use ipnet::IpNet;
use portcullis_ebpf_common as common;

use crate::bans::BanSink;
use crate::config::EbpfConfig;

#[cfg(ebpf_embedded)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portcullis-ebpf.o"));
#[cfg(not(ebpf_embedded))]
static OBJECT: &[u8] = &[];

/// True when this binary carries the XDP gate object.
pub fn embedded() -> bool {
    !OBJECT.is_empty()
}

/// Why the gate is not running.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("this binary was built without the eBPF object (run `cargo xtask setup` and `cargo xtask build-ebpf`, then rebuild)")]
    NotBuilt,
    #[error("no interfaces configured ([ebpf] interfaces)")]
    NoInterfaces,
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {PROG}: {0}", PROG = common::PROG_XDP_GATE)]
    Program(#[from] aya::programs::ProgramError),
    #[error("attaching XDP to {iface} failed (native and generic): {source}")]
    Attach { iface: String, source: aya::programs::ProgramError },
    #[error("map {map}: {source}")]
    Map { map: &'static str, source: aya::maps::MapError },
    #[error("map {0} missing from the object")]
    MissingMap(&'static str),
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> GateError {
    move |source| GateError::Map { map, source }
}

/// The loaded, attached XDP gate.
pub struct Gate {
    ebpf: Mutex<Ebpf>,
    /// Interfaces and the mode each is attached in.
    pub attached: Vec<(String, &'static str)>,
    /// The cgroup the telemetry program is attached to, if it is.
    pub telemetry_cgroup: Option<String>,
    /// The telemetry ring buffer, until the control plane takes it to read it.
    ring: Mutex<Option<RingBuf<MapData>>>,
    /// The aya-log record reader, until the control plane takes it.
    logger: Mutex<Option<aya_log::EbpfLogger<&'static dyn log::Log>>>,
}

/// The cgroup v2 directory of this process (`/proc/self/cgroup` `0::` line under the cgroup2
/// mount from `/proc/self/mountinfo`).
fn own_cgroup() -> Option<std::path::PathBuf> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cg.lines().find_map(|l| l.strip_prefix("0::"))?.trim().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mounts.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(str::to_string)
    })?;
    Some(std::path::Path::new(&mount).join(rel.trim_start_matches('/')))
}

/// CLOCK_MONOTONIC now, in ns: the clock `bpf_ktime_get_ns` reads, and `Instant`'s on Linux.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the valid timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn expiry_ns(expires: Option<Instant>) -> u64 {
    match expires {
        None => u64::MAX,
        Some(e) => monotonic_ns().saturating_add(e.saturating_duration_since(Instant::now()).as_nanos() as u64),
    }
}

fn v6_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => common::v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl Gate {
    /// Loads the object, sizes the maps from config, attaches to every configured interface.
    pub fn load(cfg: &EbpfConfig, listen_port: u16) -> Result<Gate, GateError> {
        if !embedded() {
            return Err(GateError::NotBuilt);
        }
        if cfg.interfaces.is_empty() {
            return Err(GateError::NoInterfaces);
        }
        // Kernel-side diagnostics (aya-log) are debug level: enabled only when this process
        // logs at debug, so a production gate pays nothing for them.
        let log_level: u8 = if tracing::enabled!(tracing::Level::DEBUG) { aya_log::Level::Debug as u8 } else { 0 };
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &log_level, true)
            .map_max_entries(common::MAP_BANNED, cfg.max_bans)
            .map_max_entries(common::MAP_SYN_BUCKETS, cfg.max_syn_sources)
            .map_max_entries(common::MAP_DENY_V4, 65_536)
            .map_max_entries(common::MAP_DENY_V6, 65_536)
            .map_max_entries(common::MAP_ALLOW_V4, 4096)
            .map_max_entries(common::MAP_ALLOW_V6, 4096)
            .load(OBJECT)?;
        let prog: &mut Xdp =
            ebpf.program_mut(common::PROG_XDP_GATE).ok_or(GateError::MissingMap(common::PROG_XDP_GATE))?.try_into()?;
        // A verifier rejection carries the verifier's full log in the error's text.
        prog.load()?;
        let mut attached = Vec::new();
        for iface in &cfg.interfaces {
            match prog.attach(iface, XdpMode::Driver) {
                Ok(_) => attached.push((iface.clone(), "native")),
                Err(native) => {
                    tracing::warn!(%iface, error = %native, "native XDP attach failed; trying generic mode");
                    prog.attach(iface, XdpMode::Skb)
                        .map_err(|source| GateError::Attach { iface: iface.clone(), source })?;
                    attached.push((iface.clone(), "generic"));
                }
            }
        }
        let (telemetry_cgroup, ring) = attach_telemetry(&mut ebpf, cfg);
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "eBPF diagnostics (aya-log) unavailable");
                None
            }
        };
        let gate = Gate {
            ebpf: Mutex::new(ebpf),
            attached,
            telemetry_cgroup,
            ring: Mutex::new(ring),
            logger: Mutex::new(logger),
        };
        gate.apply_config(cfg, listen_port)?;
        Ok(gate)
    }

    /// Hands the aya-log reader to the control plane (once); its records reach tracing through
    /// the `log` bridge.
    pub fn take_logger(&self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Hands the telemetry ring buffer to its reader (once).
    pub fn take_ring(&self) -> Option<RingBuf<MapData>> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn ebpf(&self) -> std::sync::MutexGuard<'_, Ebpf> {
        self.ebpf.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes SYN limiter settings and the allowlist (at load and on reload).
    pub fn apply_config(&self, cfg: &EbpfConfig, listen_port: u16) -> Result<(), GateError> {
        let mut ebpf = self.ebpf();
        let mut gc = common::GateConfig {
            syn_rate_per_sec: cfg.syn_rate_per_sec,
            syn_burst: cfg.syn_burst,
            listen_port,
            ..Default::default()
        };
        let ports: Vec<u16> = if cfg.syn_ports.is_empty() { vec![listen_port] } else { cfg.syn_ports.clone() };
        for (slot, p) in gc.syn_ports.iter_mut().zip(ports) {
            *slot = p;
        }
        let map = ebpf.map_mut(common::MAP_CONFIG).ok_or(GateError::MissingMap(common::MAP_CONFIG))?;
        let mut arr: Array<_, common::GateConfig> = Array::try_from(map).map_err(map_err(common::MAP_CONFIG))?;
        arr.set(0, gc, 0).map_err(map_err(common::MAP_CONFIG))?;

        // Allowlist: replace the tries' contents.
        let nets: Vec<IpNet> = cfg.allow_cidrs.iter().filter_map(|s| crate::bans::parse_net(s)).collect();
        let v4 = nets.iter().filter_map(|n| match n {
            IpNet::V4(v) => Some(Key::new(v.prefix_len() as u32, v.network().octets())),
            IpNet::V6(_) => None,
        });
        replace_trie(&mut ebpf, common::MAP_ALLOW_V4, v4.collect())?;
        let v6 = nets.iter().filter_map(|n| match n {
            IpNet::V6(v) => Some(Key::new(v.prefix_len() as u32, v.network().octets())),
            IpNet::V4(_) => None,
        });
        replace_trie(&mut ebpf, common::MAP_ALLOW_V6, v6.collect())?;
        Ok(())
    }

    /// Packet counters summed over CPUs: passed, dropped banned, dropped deny, dropped SYN rate.
    pub fn counters(&self) -> [u64; common::COUNTERS as usize] {
        let mut out = [0u64; common::COUNTERS as usize];
        let ebpf = self.ebpf();
        let Some(map) = ebpf.map(common::MAP_COUNTERS) else {
            return out;
        };
        let Ok(arr) = PerCpuArray::<_, u64>::try_from(map) else {
            return out;
        };
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(v) = arr.get(&(i as u32), 0) {
                *slot = v.iter().sum();
            }
        }
        out
    }

    fn write_ban(&self, net: IpNet, expires: Option<u64>) -> Result<(), GateError> {
        let mut ebpf = self.ebpf();
        let single = net.prefix_len() == net.max_prefix_len();
        if single {
            let map = ebpf.map_mut(common::MAP_BANNED).ok_or(GateError::MissingMap(common::MAP_BANNED))?;
            let mut m: HashMap<_, [u8; 16], u64> = HashMap::try_from(map).map_err(map_err(common::MAP_BANNED))?;
            let key = v6_key(net.addr());
            match expires {
                Some(exp) => m.insert(key, exp, 0).map_err(map_err(common::MAP_BANNED))?,
                None => {
                    let _ = m.remove(&key);
                }
            }
            return Ok(());
        }
        match net {
            IpNet::V4(n) => {
                set_trie(&mut ebpf, common::MAP_DENY_V4, Key::new(n.prefix_len() as u32, n.network().octets()), expires)
            }
            IpNet::V6(n) => {
                set_trie(&mut ebpf, common::MAP_DENY_V6, Key::new(n.prefix_len() as u32, n.network().octets()), expires)
            }
        }
    }
}

/// Makes an allowlist trie hold exactly `keys`.
fn replace_trie<K: aya::Pod>(ebpf: &mut Ebpf, name: &'static str, keys: Vec<Key<K>>) -> Result<(), GateError> {
    let map = ebpf.map_mut(name).ok_or(GateError::MissingMap(name))?;
    let mut t: LpmTrie<_, K, u8> = LpmTrie::try_from(map).map_err(map_err(name))?;
    let old: Vec<Key<K>> = t.keys().filter_map(Result::ok).collect();
    for k in old {
        let _ = t.remove(&k);
    }
    for k in keys {
        t.insert(&k, 1, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// Sets (`Some(expiry_ns)`) or removes (`None`) one deny-trie entry.
fn set_trie<K: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    key: Key<K>,
    expires: Option<u64>,
) -> Result<(), GateError> {
    let map = ebpf.map_mut(name).ok_or(GateError::MissingMap(name))?;
    let mut t: LpmTrie<_, K, u64> = LpmTrie::try_from(map).map_err(map_err(name))?;
    match expires {
        Some(exp) => t.insert(&key, exp, 0).map_err(map_err(name)),
        None => {
            let _ = t.remove(&key);
            Ok(())
        }
    }
}

/// Attaches the sock_ops telemetry program to the configured (or this process's) cgroup. A
/// failure only turns telemetry off, with a warning: the gate itself is still useful.
fn attach_telemetry(ebpf: &mut Ebpf, cfg: &EbpfConfig) -> (Option<String>, Option<RingBuf<MapData>>) {
    let path = if cfg.cgroup.is_empty() { own_cgroup() } else { Some(std::path::PathBuf::from(&cfg.cgroup)) };
    let Some(path) = path else {
        tracing::warn!("no cgroup v2 found for this process; per-connection telemetry off");
        return (None, None);
    };
    let mut attach = || -> Result<(), String> {
        let file = std::fs::File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        let prog: &mut SockOps = ebpf
            .program_mut(common::PROG_TELEMETRY)
            .ok_or("program missing from the object")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        prog.load().map_err(|e| e.to_string())?;
        prog.attach(file, CgroupAttachMode::Single).map_err(|e| e.to_string())?;
        Ok(())
    };
    if let Err(e) = attach() {
        tracing::warn!(cgroup = %path.display(), error = %e, "sock_ops telemetry not attached; per-connection telemetry off");
        return (None, None);
    }
    let ring = ebpf.take_map(common::MAP_CONN_EVENTS).and_then(|m| RingBuf::try_from(m).ok());
    tracing::info!(cgroup = %path.display(), "per-connection telemetry attached");
    (Some(path.display().to_string()), ring)
}

impl BanSink for Gate {
    fn banned(&self, net: IpNet, expires: Option<Instant>) {
        if let Err(e) = self.write_ban(net, Some(expiry_ns(expires))) {
            tracing::error!(%net, error = %e, "could not write ban into the XDP maps (still enforced in user space)");
        }
    }

    fn unbanned(&self, net: IpNet) {
        if let Err(e) = self.write_ban(net, None) {
            tracing::error!(%net, error = %e, "could not remove ban from the XDP maps");
        }
    }
}
