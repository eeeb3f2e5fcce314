//! Test support for Portcullis' integration tests (the tests themselves are in `tests/it/`, built
//! as the `portcullis` package's integration tests so they get the real binary).
//!
//! - [`httpbin`]: an httpbin-like HTTP/1.1 upstream on real loopback sockets (also the demo
//!   upstream `cargo xtask run` starts), counting the connections it accepts.
//! - [`jsonplaceholder`]: a jsonplaceholder-like REST API the demo upstream also serves (API
//!   visibility's walkthrough).
//! - [`client`]: a raw HTTP/1.1 client that can send malformed and smuggling-shaped requests.
//! - [`harness`]: writes a config and `apps/`, starts the real `portcullis` binary, waits for it.
//! - [`pebble`]: a real ACME server (Debian's `pebble`) for one test.
//! - [`redis`]: a real `redis-server` on a free port for one test.
//! - [`clickhouse`]: a real `clickhouse-server` (HTTP interface) on a free port, with its own
//!   config and data directory, for one test.
//! - [`metrics`]: one series of the proxy's `/metrics`, parsed with `prometheus-parse`.
//! - [`tls`]: certificates made for a test, and rustls client configurations trusting them.
//! - [`wait`]: bounded polls on something observable, in place of sleeps.

pub mod clickhouse;
pub mod client;
pub mod harness;
pub mod httpbin;
pub mod jsonplaceholder;
pub mod metrics;
pub mod netns;
pub mod pebble;
pub mod redis;
pub mod tls;
pub mod wait;

pub use wait::{wait_for, wait_until, WAIT};

/// A free port for a server the test starts (the proxy's listeners, redis-server).
///
/// Ports come from below the kernel's ephemeral range (32768-60999 by default), so an outgoing
/// connection made by another test can never take one between this call and the server's bind,
/// and never the same port twice within one test process (binding port 0 and releasing it could
/// hand out the same port to two callers: CI once saw the proxy and its admin API given one port).
/// The start is spread by process id so test binaries run side by side rarely probe the same ports;
/// each candidate is checked by binding it on every address.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000; // 20000..32000, below the ephemeral range
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = (std::process::id().wrapping_mul(7919)) % SPAN;
    let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + n % SPAN) as u16;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

/// `127.0.0.1:<a free port>` (see [`free_port`]): an address nothing listens on, or one to listen on.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// True when running in CI (`CI=true`), where privileged tests must run instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
