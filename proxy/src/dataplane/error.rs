//! The data plane's one error type and the one place errors become client responses.
//!
//! Pingora-style: a closed [`ErrorKind`] plus a static context string and an optional I/O cause,
//! so building an error never allocates. [`ErrorKind::status`] is the only mapping from failures
//! to HTTP status codes.

use std::fmt;
use std::io;

use crate::auth::Refusal;

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
    /// Refused by IP rules, path lists, auth, quota or a rate limit: 400, 401, 403 or 429, as
    /// Tyk answers.
    Denied(crate::auth::Refusal),
    /// The control plane could not answer a key, password or quota question in time: 503.
    AuthUnavailable,
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
            ErrorKind::UpstreamBusy | ErrorKind::AuthUnavailable => (503, "Service Unavailable"),
            ErrorKind::Denied(r) => match r {
                Refusal::BadRequest => (400, "Bad Request"),
                Refusal::Unauthorized => (401, "Unauthorized"),
                Refusal::Forbidden => (403, "Forbidden"),
                Refusal::TooManyRequests => (429, "Too Many Requests"),
            },
            ErrorKind::ClientIo | ErrorKind::Closed => return None,
        })
    }

    /// The status code, or 0 when nothing is sent (as request records and metrics count it).
    pub fn code(self) -> u16 {
        self.status().map_or(0, |s| s.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The one mapping, whole: every status the data plane writes is one of these.
    #[test]
    fn every_kind_has_its_status() {
        let table = [
            (ErrorKind::BadRequest, 400),
            (ErrorKind::NoRoute, 404),
            (ErrorKind::BodyTimeout, 408),
            (ErrorKind::BodyTooLarge, 413),
            (ErrorKind::ClientBodies, 429),
            (ErrorKind::HeadTooLarge, 431),
            (ErrorKind::UpstreamConnect, 502),
            (ErrorKind::UpstreamProtocol, 502),
            (ErrorKind::UpstreamBusy, 503),
            (ErrorKind::AuthUnavailable, 503),
            (ErrorKind::UpstreamTimeout, 504),
            (ErrorKind::Denied(Refusal::BadRequest), 400),
            (ErrorKind::Denied(Refusal::Unauthorized), 401),
            (ErrorKind::Denied(Refusal::Forbidden), 403),
            (ErrorKind::Denied(Refusal::TooManyRequests), 429),
            (ErrorKind::ClientIo, 0),
            (ErrorKind::Closed, 0),
        ];
        for (kind, code) in table {
            assert_eq!(kind.code(), code, "{kind:?}");
        }
    }
}
