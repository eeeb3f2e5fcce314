//! The data plane's one error type and the one place errors become client responses.
//!
//! Pingora-style: a closed [`ErrorKind`] plus a static context string and an optional I/O cause,
//! so building an error never allocates. [`ErrorKind::status`] is the only mapping from failures
//! to HTTP status codes.

use std::fmt;
use std::io;

/// What went wrong, classified once where it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed request or request-smuggling shape (CL+TE, conflicting Content-Length): 400.
    BadRequest,
    /// No API matches: 404.
    NoRoute,
    /// Request body larger than `max_request_body_size`: 413.
    BodyTooLarge,
    /// Request head larger than `max_request_head_size`: 431.
    HeadTooLarge,
    /// Request body slower than `request_body_timeout_ms` / `request_body_min_rate`: 408.
    BodyTimeout,
    /// The client already streams `max_streaming_bodies_per_client` bodies on this worker: 429.
    ClientBodies,
    /// Could not connect to the upstream: 502.
    UpstreamConnect,
    /// Upstream sent something that is not valid HTTP/1.x, or closed early: 502.
    UpstreamProtocol,
    /// Upstream connect or response timed out: 504.
    UpstreamTimeout,
    /// Every connection `upstream_max_connections` allows to the target stayed in use for
    /// `upstream_queue_timeout_ms`: 503.
    UpstreamBusy,
    /// Client went away, timed out or broke the protocol mid-body: no response possible.
    ClientIo,
    /// The worker is shutting down or the client idled out: close quietly.
    Closed,
}

impl ErrorKind {
    /// Status and client-facing message, or `None` when no response can or should be sent.
    pub fn status(self) -> Option<(u16, &'static str)> {
        Some(match self {
            ErrorKind::BadRequest => (400, "Bad Request"),
            ErrorKind::NoRoute => (404, "Not Found"),
            ErrorKind::BodyTooLarge => (413, "Payload Too Large"),
            ErrorKind::HeadTooLarge => (431, "Request Header Fields Too Large"),
            ErrorKind::BodyTimeout => (408, "Request Timeout"),
            ErrorKind::ClientBodies => (429, "Too Many Requests"),
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamProtocol => (502, "Bad Gateway"),
            ErrorKind::UpstreamTimeout => (504, "Gateway Timeout"),
            ErrorKind::UpstreamBusy => (503, "Service Unavailable"),
            ErrorKind::ClientIo | ErrorKind::Closed => return None,
        })
    }
}

/// A data-plane failure: kind, static context, optional cause.
#[derive(Debug)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub context: &'static str,
    pub cause: Option<io::Error>,
}

impl ProxyError {
    pub fn new(kind: ErrorKind, context: &'static str) -> Self {
        ProxyError { kind, context, cause: None }
    }

    pub fn io(kind: ErrorKind, context: &'static str, cause: io::Error) -> Self {
        ProxyError { kind, context, cause: Some(cause) }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.context)?;
        if let Some(c) = &self.cause {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_ref().map(|e| e as _)
    }
}

pub type Result<T, E = ProxyError> = std::result::Result<T, E>;
