//! Why a head is refused. The proxy maps each kind to its one status (`ErrorKind::status`);
//! this crate never names a status.

use std::fmt;

/// What is wrong with a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadErrorKind {
    /// A malformed or ambiguous request head (smuggling shapes included).
    BadRequest,
    /// More request headers than allowed.
    TooManyHeaders,
    /// A malformed response head, or one with conflicting framing.
    UpstreamProtocol,
}

/// A refused head: its kind and a static description (never the client's bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadError {
    pub kind: HeadErrorKind,
    pub context: &'static str,
}

impl HeadError {
    pub(crate) fn bad(context: &'static str) -> HeadError {
        HeadError { kind: HeadErrorKind::BadRequest, context }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.context)
    }
}

impl std::error::Error for HeadError {}
