//! API visibility, as pure functions: what traffic says an API is, and how it compares with the
//! OpenAPI document its owner provided.
//!
//! - [`exchange`]: one sampled exchange (request and response, credentials already redacted by
//!   the worker's capture), parsed from its wire form.
//!
//! Nothing here reads a clock, a file or a socket: the proxy's visibility thread owns the state
//! and passes times in.

pub mod exchange;

pub use exchange::Exchange;
