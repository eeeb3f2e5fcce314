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

impl From<portcullis_http1::HeadError> for ProxyError {
    fn from(e: portcullis_http1::HeadError) -> Self {
        use portcullis_http1::HeadErrorKind as K;
        let kind = match e.kind {
            K::BadRequest => ErrorKind::BadRequest,
            K::TooManyHeaders => ErrorKind::HeadTooLarge,
            K::UpstreamProtocol => ErrorKind::UpstreamProtocol,
        };
        ProxyError::new(kind, e.context)
    }
}

pub type Result<T, E = ProxyError> = std::result::Result<T, E>;

/// A complete JSON error response (`{"error": "..."}`, Tyk's shape) for `kind`, whose status
/// comes from [`ErrorKind::status`], the one mapping: there is no other way to write one.
/// Returns false (and writes nothing) for a kind that is not answered.
pub fn error_response(out: &mut Vec<u8>, kind: ErrorKind, message: &str, close: bool) -> bool {
    error_response_with(out, kind, message, close, &[])
}

/// As [`error_response`], with extra header lines (each ending in CRLF: `WWW-Authenticate`,
/// `Retry-After`, `X-RateLimit-*`).
pub fn error_response_with(out: &mut Vec<u8>, kind: ErrorKind, message: &str, close: bool, extra: &[u8]) -> bool {
    use std::io::Write as _;
    let Some((status, reason)) = kind.status() else {
        return false;
    };
    let msg = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".into());
    let body_len = msg.len() + 11; // {"error": <msg>}
    let _ =
        write!(out, "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {body_len}\r\n");
    out.extend_from_slice(extra);
    let _ = write!(out, "{}\r\n{{\"error\": {msg}}}", if close { "Connection: close\r\n" } else { "" });
    true
}

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

    #[test]
    fn error_responses_are_json_with_exact_length() {
        let mut none = Vec::new();
        assert!(!error_response(&mut none, ErrorKind::Closed, "x", true) && none.is_empty(), "nothing to answer");
        let mut out = Vec::new();
        assert!(error_response(&mut out, ErrorKind::NoRoute, "no API matches this request", false));
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{text}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "no API matches this request");
    }
}
