//! Portcullis: an eBPF-assisted, thread-per-core edge proxy and API gateway.
//!
//! The crate is split by plane (see ARCHITECTURE.md):
//! - [`config`] (the `portcullis-config` crate) reads the TOML config and Tyk-format API
//!   definitions and turns them into an immutable [`config::Snapshot`]; it is the only crate that
//!   knows the Tyk JSON format.
//! - [`dataplane`] runs one pinned monoio worker per core: accept, parse, route, proxy. It never
//!   awaits a tokio future and takes no lock on the request path.
//! - [`control`] runs the tokio control plane: admin API, `/metrics`, reload, signals.
//! - [`auth`] decides who may call an API (keys, JWT, basic, HMAC, policies, IP and path rules)
//!   and [`limit`] how often: both are the `portcullis-policy` crate (no I/O, no runtime, no
//!   clock of its own), re-exported here; [`keystore`] keeps sessions (embedded file or Redis)
//!   and [`gossip`] relays the limiters' counters, on the control plane.
//! - HTTP/1 heads, framing, paths and body plans are the `portcullis-http1` crate.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod analytics;
pub mod bans;
pub mod clock;
pub mod control;
pub mod dataplane;
pub mod ebpf;
pub mod gossip;
pub mod keystore;
pub mod ratelog;
pub mod server;
pub mod visibility;

pub use portcullis_config as config;
pub use portcullis_config::router;
pub use portcullis_policy::{auth, limit, path_rule, rewrite, version};

#[cfg(test)]
mod tyk_decisions;
