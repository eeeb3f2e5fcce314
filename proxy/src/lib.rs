//! Portcullis: an eBPF-assisted, thread-per-core edge proxy and API gateway.
//!
//! The crate is split by plane (see ARCHITECTURE.md):
//! - [`config`] reads the TOML config and Tyk-format API definitions and turns them into an
//!   immutable [`config::Snapshot`]; it is the only module that knows the Tyk JSON format.
//! - [`dataplane`] runs one pinned monoio worker per core: accept, parse, route, proxy. It never
//!   awaits a tokio future and takes no lock on the request path.
//! - [`control`] runs the tokio control plane: admin API, `/metrics`, reload, signals.
//! - [`auth`] decides who may call an API (keys, JWT, basic, HMAC, policies, IP and path rules);
//!   [`keystore`] keeps sessions (embedded file or Redis) on the control plane.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod analytics;
pub mod auth;
pub mod bans;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod ebpf;
pub mod keystore;
pub mod limit;
pub mod path_rule;
pub mod ratelog;
pub mod router;
pub mod server;
