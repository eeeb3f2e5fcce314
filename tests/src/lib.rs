//! Test support for Portcullis' integration tests (the tests themselves are in `tests/it/`, built
//! as the `portcullis` package's integration tests so they get the real binary).
//!
//! - [`httpbin`]: an httpbin-like HTTP/1.1 upstream on real loopback sockets (also the demo
//!   upstream `cargo xtask run` starts), counting the connections it accepts.
//! - [`client`]: a raw HTTP/1.1 client that can send malformed and smuggling-shaped requests.
//! - [`harness`]: writes a config and `apps/`, starts the real `portcullis` binary, waits for it.
//! - [`redis`]: a real `redis-server` on a free port for one test.

pub mod client;
pub mod harness;
pub mod httpbin;
pub mod netns;
pub mod redis;

/// A free loopback port (bound then released; good enough for tests on one host).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// True when running in CI (`CI=true`), where privileged tests must run instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
