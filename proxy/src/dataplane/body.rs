//! Body relays: copy a request or response body from one socket to the other as it arrives,
//! through the connection's read buffer, never holding a whole body.
//!
//! Chunked bodies are scanned by [`ChunkedScanner`] (sizes, extensions, trailers) only to find
//! where they end and how many data bytes they carry; the bytes themselves are forwarded
//! verbatim, or, when decoding for an HTTP/1.0 client, only their data spans.

use std::time::Duration;

use monoio::io::AsyncReadRent;

use super::error::{ErrorKind, ProxyError, Result};
use super::io::ReadBuf;
use portcullis_http1::chunked::ChunkedScanner;
use portcullis_http1::BodyKind;

/// How long a client may take over a request body: `request_body_timeout_ms` from the end of
/// its head, one second more for every `request_body_min_rate` bytes received. A body trickled
/// in (one byte every few seconds, each read well inside `client_idle_timeout_ms`) falls
/// behind and is cut off, whatever its size.
#[derive(Debug, Clone, Copy)]
pub struct BodyClock {
    start: std::time::Instant,
    timeout: Duration,
    min_rate: u64,
}

impl BodyClock {
    /// `None` when `timeout_ms` is 0 (off).
    pub fn new(start: std::time::Instant, timeout_ms: u64, min_rate: u64) -> Option<BodyClock> {
        (timeout_ms > 0).then(|| BodyClock { start, timeout: Duration::from_millis(timeout_ms), min_rate })
    }

    /// When the body must be complete, or have more than `received` bytes.
    pub fn deadline(&self, received: u64) -> std::time::Instant {
        let earned = received.checked_div(self.min_rate).map_or(Duration::ZERO, Duration::from_secs);
        self.start + self.timeout + earned
    }
}

/// Which side a relay reads from, for error classification and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Request body: client -> upstream.
    Client,
    /// Response body: upstream -> client.
    Upstream,
}

/// How a relay went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayError {
    /// Reading the source failed, timed out or hit EOF early.
    Source(ErrorKind, &'static str),
    /// Writing to the destination failed.
    Sink(&'static str),
    /// More data than `limit`.
    TooLarge,
}

impl RelayError {
    pub fn into_proxy_error(self, side: Side) -> ProxyError {
        match (self, side) {
            (RelayError::TooLarge, _) => ProxyError::new(ErrorKind::BodyTooLarge, "request body too large"),
            (RelayError::Source(k, c), _) => ProxyError::new(k, c),
            (RelayError::Sink(c), Side::Client) => ProxyError::new(ErrorKind::UpstreamProtocol, c),
            (RelayError::Sink(c), Side::Upstream) => ProxyError::new(ErrorKind::ClientIo, c),
        }
    }
}

/// Relays one body of `kind` from `src` (whose already-read bytes are in `rbuf`) to `dst`.
/// Returns the number of data bytes. Bytes after the body stay in `rbuf` (pipelining).
pub(crate) async fn relay<R: AsyncReadRent, W: super::io::Wire>(
    src: &mut R,
    rbuf: &mut ReadBuf,
    dst: &mut W,
    kind: BodyKind,
    side: Side,
    read_timeout: Duration,
    limit: u64,
    dechunk: bool,
    clock: Option<BodyClock>,
) -> Result<u64, RelayError> {
    let eof_kind = match side {
        Side::Client => ErrorKind::ClientIo,
        Side::Upstream => ErrorKind::UpstreamProtocol,
    };
    let timeout_kind = match side {
        Side::Client => ErrorKind::ClientIo,
        Side::Upstream => ErrorKind::UpstreamTimeout,
    };
    match kind {
        BodyKind::None => Ok(0),
        BodyKind::Length(n) => {
            if limit > 0 && n > limit {
                return Err(RelayError::TooLarge);
            }
            let mut left = n;
            loop {
                let take = (rbuf.len() as u64).min(left) as usize;
                rbuf.write_out(dst, take).await.map_err(|_| RelayError::Sink("write failed while relaying body"))?;
                left -= take as u64;
                if left == 0 {
                    return Ok(n);
                }
                read_body(src, rbuf, read_timeout, clock, n - left, eof_kind, timeout_kind).await?;
            }
        }
        BodyKind::UntilClose => {
            let mut total = 0u64;
            loop {
                let len = rbuf.len();
                total += len as u64;
                rbuf.write_out(dst, len).await.map_err(|_| RelayError::Sink("write failed while relaying body"))?;
                match monoio::time::timeout(read_timeout, rbuf.fill(src)).await {
                    Ok(Ok(0)) => return Ok(total),
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return Err(RelayError::Source(eof_kind, "read failed while relaying body")),
                    Err(_) => return Err(RelayError::Source(timeout_kind, "timed out reading body")),
                }
            }
        }
        BodyKind::Chunked => {
            let mut scanner = ChunkedScanner::default();
            let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
            loop {
                spans.clear();
                let scan = scanner.scan(rbuf.data(), |r| spans.push(r)).map_err(|c| {
                    RelayError::Source(
                        if side == Side::Client { ErrorKind::BadRequest } else { ErrorKind::UpstreamProtocol },
                        c,
                    )
                })?;
                if limit > 0 && scanner.data_total > limit {
                    return Err(RelayError::TooLarge);
                }
                if dechunk {
                    for r in spans.drain(..) {
                        rbuf.write_range(dst, r)
                            .await
                            .map_err(|_| RelayError::Sink("write failed while relaying body"))?;
                    }
                    rbuf.consume(scan.consumed);
                } else {
                    rbuf.write_out(dst, scan.consumed)
                        .await
                        .map_err(|_| RelayError::Sink("write failed while relaying body"))?;
                }
                if scan.done {
                    return Ok(scanner.data_total);
                }
                read_body(src, rbuf, read_timeout, clock, scanner.data_total, eof_kind, timeout_kind).await?;
            }
        }
    }
}

/// [`read_more`] for a body of which `received` bytes have come: with a `clock`, the read
/// also ends at the clock's deadline for them (a `BodyTimeout`).
pub(crate) async fn read_body<R: AsyncReadRent>(
    src: &mut R,
    rbuf: &mut ReadBuf,
    read_timeout: Duration,
    clock: Option<BodyClock>,
    received: u64,
    eof_kind: ErrorKind,
    timeout_kind: ErrorKind,
) -> Result<(), RelayError> {
    let Some(clock) = clock else {
        return read_more(src, rbuf, read_timeout, eof_kind, timeout_kind).await;
    };
    let left = clock.deadline(received).saturating_duration_since(std::time::Instant::now());
    if left < read_timeout {
        return read_more(src, rbuf, left, eof_kind, ErrorKind::BodyTimeout).await;
    }
    read_more(src, rbuf, read_timeout, eof_kind, timeout_kind).await
}

/// Reads once more into `rbuf` for a body in progress: EOF and read errors are `eof_kind`, a
/// pause over `read_timeout` is `timeout_kind`.
pub(crate) async fn read_more<R: AsyncReadRent>(
    src: &mut R,
    rbuf: &mut ReadBuf,
    read_timeout: Duration,
    eof_kind: ErrorKind,
    timeout_kind: ErrorKind,
) -> Result<(), RelayError> {
    match monoio::time::timeout(read_timeout, rbuf.fill(src)).await {
        Ok(Ok(0)) => Err(RelayError::Source(eof_kind, "connection closed in the middle of a body")),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(RelayError::Source(eof_kind, "read failed while relaying body")),
        Err(_) => Err(RelayError::Source(timeout_kind, "timed out reading body")),
    }
}
