//! API visibility, as pure functions: what traffic says an API is, and how it compares with the
//! OpenAPI document its owner provided.
//!
//! - [`exchange`]: one sampled exchange (request and response, credentials already redacted by
//!   the worker's capture), parsed from its wire form.
//! - [`template`]: path templates with named parameters, learned from observed paths (a
//!   bounded segment trie per API).
//! - [`infer`]: JSON schema inference: an accumulating, persistable shape of the values seen.
//! - [`inventory`]: one API's endpoints (hits, statuses, first and last seen) and what sampled
//!   exchanges showed of their parameters and bodies.
//! - [`openapi`]: an inventory written out as an OpenAPI 3.1 document (JSON or YAML).
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
pub mod infer;
pub mod inventory;
pub mod openapi;
pub mod spec;
pub mod template;

pub use exchange::Exchange;
pub use infer::Shape;
pub use inventory::{Endpoint, Hit, Inventory, Limits, Refusal};
pub use openapi::{to_yaml, ApiKeyIn, ApiMeta, SecurityScheme};
pub use spec::{Drift, DriftKind, OpId, Operation, Route, Spec, SpecError, Violation};
