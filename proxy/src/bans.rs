//! Bans of abusive clients: an IP or CIDR, a TTL and a reason.
//!
//! The control plane owns the authoritative list ([`BanManager`], behind the admin API's
//! `/api/bans`) and publishes an immutable [`BanSet`] that workers consult at accept and before
//! each request (user-space enforcement, always on), and mirrors every change into the XDP
//! gate's maps when the gate is loaded, so banned packets are dropped before they cost a socket.
//! Allowlisted networks (`[ebpf] allow_cidrs`) can never be banned. Must not: be consulted with a
//! lock held on the request path (workers only read the published set).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ahash::AHashMap;
use arc_swap::ArcSwap;
use ipnet::IpNet;

/// Longest ban, seconds (ten years): the admin API's `ttl` and `[limits] ban_ttl_secs` are
/// refused above it. Longer is "until removed" (`ttl` 0); an expiry that far out would also not
/// fit an `Instant` or the gate's nanosecond clock.
pub use crate::config::MAX_BAN_TTL_SECS;

pub use portcullis_policy::parse_net;

/// The IPv4 form of an IPv4-mapped IPv6 address (clients of a dual-stack listener).
pub use portcullis_policy::canonical_ip as canonical;

/// What workers read: banned addresses and networks with their expiry (`None` = until removed).
#[derive(Debug, Default)]
pub struct BanSet {
    exact: AHashMap<IpAddr, Option<Instant>>,
    nets: Vec<(IpNet, Option<Instant>)>,
}

impl BanSet {
    /// True when `ip` is banned now. Cheap when nothing is banned.
    #[inline]
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        if self.exact.is_empty() && self.nets.is_empty() {
            return false;
        }
        let ip = canonical(ip);
        let live = |exp: &Option<Instant>| exp.is_none_or(|e| Instant::now() < e);
        if let Some(exp) = self.exact.get(&ip) {
            if live(exp) {
                return true;
            }
        }
        self.nets.iter().any(|(n, exp)| n.contains(&ip) && live(exp))
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.nets.is_empty()
    }
}

/// One ban as the admin API shows it.
#[derive(Debug, Clone)]
pub struct Ban {
    pub net: IpNet,
    pub reason: String,
    pub created: SystemTime,
    /// `None`: until removed (configured deny CIDRs, or a ban with ttl 0).
    pub expires: Option<Instant>,
    /// Configured in `[ebpf] deny_cidrs` (not removable through the API).
    pub from_config: bool,
}

/// Why a ban was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BanError {
    #[error("{0:?} is not an IP address or CIDR")]
    BadAddress(String),
    #[error("{0} is in an allowlisted network ([ebpf] allow_cidrs) and cannot be banned")]
    Allowlisted(IpNet),
    #[error("no ban for {0}")]
    NotFound(String),
    #[error("{0} comes from [ebpf] deny_cidrs; change the config to remove it")]
    FromConfig(IpNet),
    #[error("ttl {0:?} is too long: at most {MAX_BAN_TTL_SECS} seconds (0 = until removed)")]
    TtlTooLong(Duration),
}

/// Receives every change so the kernel maps mirror the list (implemented by the eBPF loader).
pub trait BanSink: Send + Sync {
    fn banned(&self, net: IpNet, expires: Option<Instant>);
    fn unbanned(&self, net: IpNet);
}

/// The authoritative ban list (control plane).
pub struct BanManager {
    bans: Mutex<BTreeMap<IpNet, Ban>>,
    allow: ArcSwap<Vec<IpNet>>,
    published: Arc<ArcSwap<BanSet>>,
    sink: ArcSwap<Option<Arc<dyn BanSink>>>,
    pub issued_total: std::sync::atomic::AtomicU64,
}

impl BanManager {
    pub fn new() -> Self {
        BanManager {
            bans: Mutex::new(BTreeMap::new()),
            allow: ArcSwap::from_pointee(Vec::new()),
            published: Arc::new(ArcSwap::from_pointee(BanSet::default())),
            sink: ArcSwap::from_pointee(None),
            issued_total: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The set workers read.
    pub fn published(&self) -> Arc<ArcSwap<BanSet>> {
        Arc::clone(&self.published)
    }

    /// Connects the eBPF maps; every current ban is replayed into them.
    pub fn set_sink(&self, sink: Arc<dyn BanSink>) {
        for b in self.lock().values() {
            sink.banned(b.net, b.expires);
        }
        self.sink.store(Arc::new(Some(sink)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<IpNet, Ban>> {
        self.bans.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self, f: impl FnOnce(&dyn BanSink)) {
        if let Some(s) = self.sink.load().as_ref() {
            f(s.as_ref());
        }
    }

    /// Applies `[ebpf] deny_cidrs` and `allow_cidrs` (at start and on reload). Values were
    /// validated with the config.
    pub fn apply_config(&self, deny: &[String], allow: &[String]) {
        self.allow.store(Arc::new(allow.iter().filter_map(|s| parse_net(s)).collect()));
        let deny: Vec<IpNet> = deny.iter().filter_map(|s| parse_net(s)).collect();
        let mut bans = self.lock();
        let stale: Vec<IpNet> =
            bans.values().filter(|b| b.from_config && !deny.contains(&b.net)).map(|b| b.net).collect();
        for net in stale {
            bans.remove(&net);
            self.notify(|s| s.unbanned(net));
        }
        for net in deny {
            let b = Ban {
                net,
                reason: "config: [ebpf] deny_cidrs".into(),
                created: SystemTime::now(),
                expires: None,
                from_config: true,
            };
            bans.insert(net, b);
            self.notify(|s| s.banned(net, None));
        }
        self.publish(&bans);
    }

    /// Bans `target` for `ttl` (zero = until removed).
    pub fn ban(&self, target: &str, ttl: Duration, reason: &str) -> Result<Ban, BanError> {
        let net = parse_net(target).ok_or_else(|| BanError::BadAddress(target.to_string()))?;
        if let Some(a) = self.allow.load().iter().find(|a| a.contains(&net) || net.contains(&a.network())) {
            let _ = a;
            return Err(BanError::Allowlisted(net));
        }
        let expires = if ttl.is_zero() {
            None
        } else if ttl > Duration::from_secs(MAX_BAN_TTL_SECS) {
            return Err(BanError::TtlTooLong(ttl));
        } else {
            Some(Instant::now().checked_add(ttl).ok_or(BanError::TtlTooLong(ttl))?)
        };
        let ban = Ban { net, reason: reason.to_string(), created: SystemTime::now(), expires, from_config: false };
        let mut bans = self.lock();
        bans.insert(net, ban.clone());
        self.notify(|s| s.banned(net, expires));
        self.publish(&bans);
        self.issued_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(%net, ttl_seconds = ttl.as_secs(), reason, "banned");
        Ok(ban)
    }

    pub fn unban(&self, target: &str) -> Result<Ban, BanError> {
        let net = parse_net(target).ok_or_else(|| BanError::BadAddress(target.to_string()))?;
        let mut bans = self.lock();
        match bans.get(&net) {
            None => return Err(BanError::NotFound(net.to_string())),
            Some(b) if b.from_config => return Err(BanError::FromConfig(net)),
            Some(_) => {}
        }
        let ban = bans.remove(&net).ok_or_else(|| BanError::NotFound(net.to_string()))?;
        self.notify(|s| s.unbanned(net));
        self.publish(&bans);
        tracing::info!(%net, "unbanned");
        Ok(ban)
    }

    /// Current bans, expired ones left out.
    pub fn list(&self) -> Vec<Ban> {
        let now = Instant::now();
        self.lock().values().filter(|b| b.expires.is_none_or(|e| e > now)).cloned().collect()
    }

    /// Drops expired bans (the control plane calls this every second).
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut bans = self.lock();
        let expired: Vec<IpNet> =
            bans.values().filter(|b| b.expires.is_some_and(|e| e <= now)).map(|b| b.net).collect();
        for net in &expired {
            bans.remove(net);
            self.notify(|s| s.unbanned(*net));
            tracing::info!(%net, "ban expired");
        }
        if !expired.is_empty() {
            self.publish(&bans);
        }
        expired.len()
    }

    fn publish(&self, bans: &BTreeMap<IpNet, Ban>) {
        let mut set = BanSet::default();
        for b in bans.values() {
            let single = b.net.prefix_len() == b.net.max_prefix_len();
            if single {
                set.exact.insert(b.net.addr(), b.expires);
            } else {
                set.nets.push((b.net, b.expires));
            }
        }
        self.published.store(Arc::new(set));
    }
}

impl Default for BanManager {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ban_unban_cidr_and_expiry() {
        let m = BanManager::new();
        let set = m.published();
        m.ban("203.0.113.7", Duration::from_secs(60), "test").unwrap();
        m.ban("10.1.0.0/16", Duration::ZERO, "net").unwrap();
        assert!(set.load().is_banned(ip("203.0.113.7")));
        assert!(set.load().is_banned(ip("::ffff:203.0.113.7")), "IPv4-mapped clients match");
        assert!(set.load().is_banned(ip("10.1.200.3")));
        assert!(!set.load().is_banned(ip("10.2.0.1")));
        m.unban("203.0.113.7").unwrap();
        assert!(!set.load().is_banned(ip("203.0.113.7")));
        assert_eq!(m.unban("203.0.113.7").unwrap_err(), BanError::NotFound("203.0.113.7/32".into()));
        m.ban("198.51.100.1", Duration::from_millis(1), "short").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!set.load().is_banned(ip("198.51.100.1")), "expired bans stop matching before the sweep");
        assert_eq!(m.sweep(), 1);
        assert_eq!(m.list().len(), 1);
    }

    #[test]
    fn allowlist_and_config_bans() {
        let m = BanManager::new();
        m.apply_config(&["192.0.2.0/24".into()], &["127.0.0.0/8".into()]);
        assert!(matches!(m.ban("127.0.0.1", Duration::from_secs(1), "x"), Err(BanError::Allowlisted(_))));
        assert!(matches!(m.ban("0.0.0.0/0", Duration::from_secs(1), "x"), Err(BanError::Allowlisted(_))));
        assert!(m.published().load().is_banned(ip("192.0.2.9")));
        assert!(matches!(m.unban("192.0.2.0/24"), Err(BanError::FromConfig(_))));
        m.apply_config(&[], &[]);
        assert!(!m.published().load().is_banned(ip("192.0.2.9")));
        assert_eq!(m.ban("nope", Duration::ZERO, "x").unwrap_err(), BanError::BadAddress("nope".into()));
    }

    #[test]
    fn overlong_ttl_is_an_error_not_a_panic() {
        let m = BanManager::new();
        for ttl in [Duration::MAX, Duration::from_secs(u64::MAX), Duration::from_secs(MAX_BAN_TTL_SECS + 1)] {
            assert_eq!(m.ban("203.0.113.7", ttl, "x").unwrap_err(), BanError::TtlTooLong(ttl));
        }
        assert!(m.list().is_empty());
        m.ban("203.0.113.7", Duration::from_secs(MAX_BAN_TTL_SECS), "x").unwrap();
        assert!(m.published().load().is_banned(ip("203.0.113.7")));
    }
}
