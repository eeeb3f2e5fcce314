//! API visibility on the control side: the `portcullis-visibility` thread that learns, per API,
//! what traffic says it is (the inventory and the reconstructed OpenAPI document,
//! `portcullis_visibility::inventory`) and how it differs from the document provided for it
//! (findings), from the request records and sampled exchanges the analytics thread hands it.
//!
//! - [`sample`]: the frame a worker writes for a sampled exchange.
//! - [`state`]: each API's inventory and findings, kept on disk, read by the admin API
//!   (`control/visibility.rs`).
//! - [`thread`]: the thread.
//!
//! Must not: run on a worker, make the analytics thread wait (it offers each batch with a
//! `try_send`; a full queue drops the batch, counted), or grow without bound (the inventory's
//! caps, [`state::MAX_FINDINGS`]).

pub mod sample;
pub mod state;
pub mod thread;

pub use state::VisibilityState;
pub use thread::{spawn, Feed};
