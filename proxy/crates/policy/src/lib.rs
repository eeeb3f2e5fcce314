//! Portcullis' gateway policy: who may call an API and as whom ([`auth`]: IP and path rules,
//! keys, JWT, basic auth, HMAC signatures, sessions, policies, access rights, header transforms)
//! and how often ([`limit`]: per-core token buckets whose counters are gossiped, quota blocks),
//! over the path patterns both use ([`path_rule`]), how a request's URL is rewritten
//! ([`rewrite`]: Tyk's `url_rewrites`), and which version of an API a request is for
//! ([`version`]: Tyk's classic versioning).
//!
//! Must not: do I/O, read a clock (the caller passes the time: `WorkerAuth::set_clock`,
//! `Limiter::set_clock`), spawn, wait or lock, or know a wire format other than JWT's (Tyk's JSON
//! is `config`'s). The compiler keeps runtimes and I/O libraries out (this crate's dependency list,
//! checked by tidy `crate_dependencies_hold`); clippy.toml beside Cargo.toml bans clocks, files,
//! sockets, threads and locks.

pub mod auth;
pub mod limit;
pub mod path_rule;
pub mod rewrite;
pub mod version;

use std::net::IpAddr;

use ipnet::IpNet;

/// Parses `203.0.113.7`, `2001:db8::1`, `10.0.0.0/8` or `2001:db8::/32` (host bits cleared).
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(IpNet::from(ip));
    }
    s.parse::<IpNet>().ok().map(|n| n.trunc())
}

/// The IPv4 form of an IPv4-mapped IPv6 address (clients of a dual-stack listener), so rules,
/// limits and bans see one address per client.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
