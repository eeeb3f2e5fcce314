//! API visibility, as pure functions: what traffic says an API is, and how it compares with the
//! OpenAPI document its owner provided.
//!
//! - [`exchange`]: one sampled exchange (request and response, credentials already redacted by
//!   the worker's capture), parsed from its wire form.
//! - [`spec`]: a provided OpenAPI document (2.0, 3.0, 3.1), compiled: routing requests to
//!   operations without allocating, request validation (enforcement), and drift of sampled
//!   exchanges.
//! - [`diff`]: a provided document against the one reconstructed from traffic, operation by
//!   operation.
//!
//! Nothing here reads a clock, a file or a socket: the proxy's visibility thread owns the state
//! and passes times in.

pub mod diff;
pub mod exchange;
pub mod spec;

pub use exchange::Exchange;
pub use spec::{Drift, DriftKind, OpId, Operation, Route, Spec, SpecError, Violation};
