//! Tyk's batch requests (`enable_batch_request_support`, gateway/batch_requests.go):
//! `POST <listen path>/tyk/batch/` with `{"requests": [{"method", "headers", "body",
//! "relative_url"}], "suppress_parallel_execution": bool}` answers a JSON array of
//! `{"relative_url", "code", "headers", "body"}`, one per request, in the order asked.
//!
//! Each request of a batch is served exactly as if the client had sent it: this worker opens a
//! loopback connection pair and serves one end (`conn::serve`) with the client's address as the
//! peer, so every phase (IP rules, auth, rate limits, quotas), ban, record and metric applies
//! to it under the client's address. Tyk sends them back through its own listener instead, so
//! its IP rules and records see 127.0.0.1; here a batch grants nothing a direct request would
//! not (docs/decisions/0025-batch-requests-under-the-clients-address.md). A request of a batch
//! may not be a batch (that would multiply work without bound), nor choose its own framing or
//! host.
//!
//! Must not: block the worker (everything is awaited on its runtime), hold more than
//! [`MAX_REQUESTS`] requests or [`MAX_RESPONSE`] bytes of any one response.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::{AsyncReadRent as _, AsyncWriteRentExt as _};
use monoio::net::{TcpListener, TcpStream};
use serde::{Deserialize, Serialize};

use super::worker::Worker;
use crate::config::Snapshot;

/// Requests in one batch (Tyk has no limit; a production gateway needs one).
pub(super) const MAX_REQUESTS: usize = 64;
/// Longest response of one request kept for the reply; a longer one is reported as failed
/// (Tyk's empty unit).
pub(super) const MAX_RESPONSE: usize = 1024 * 1024;
/// Longest one request of a batch may take, beyond the proxy's own timeouts.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Tyk's `BatchRequestStructure`.
#[derive(Debug, Deserialize)]
struct BatchRequest {
    #[serde(default)]
    requests: Vec<RequestDefinition>,
    #[serde(default)]
    suppress_parallel_execution: bool,
}

/// Tyk's `RequestDefinition`.
#[derive(Debug, Deserialize)]
struct RequestDefinition {
    #[serde(default)]
    method: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    relative_url: String,
}

/// Tyk's `BatchReplyUnit`; a request that failed (no response) is Tyk's zero value.
#[derive(Debug, Default, Serialize)]
struct ReplyUnit {
    relative_url: String,
    code: u16,
    headers: Option<std::collections::BTreeMap<String, Vec<String>>>,
    body: String,
}

/// Why a batch is refused as a whole: 400 with Tyk's message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Not Tyk's JSON (gateway/batch_requests.go:166-170).
    Malformed,
    /// A request that cannot be made (Tyk: 172-176): an unsafe method, URL or header, a batch
    /// inside a batch, too many requests.
    Construct(String),
}

impl Refused {
    pub(super) fn message(&self) -> Cow<'static, str> {
        match self {
            Refused::Malformed => "Batch request malformed".into(),
            // Tyk's words, then what was wrong (Tyk logs it only).
            Refused::Construct(why) => {
                format!("Batch request creation failed , request structure malformed: {why}").into()
            }
        }
    }
}

/// Runs a batch for the API at `listen_path` (as the client at `peer` asking `host`) and
/// returns the JSON reply.
pub(super) async fn run(
    worker: Rc<Worker>,
    snap: &Snapshot,
    listen_path: &str,
    host: &str,
    peer: SocketAddr,
    body: &[u8],
) -> Result<Vec<u8>, Refused> {
    let batch: BatchRequest = serde_json::from_slice(body).map_err(|_| Refused::Malformed)?;
    if batch.requests.len() > MAX_REQUESTS {
        return Err(Refused::Construct(format!("more than {MAX_REQUESTS} requests")));
    }
    let raws = batch
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            construct(snap, listen_path, host, r).map_err(|e| Refused::Construct(format!("request {i}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // One loopback listener for the batch; each request gets its own connection.
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Refused::Construct(format!("loopback: {e}")))?;
    let at = listener.local_addr().map_err(|e| Refused::Construct(format!("loopback: {e}")))?;
    let listener = Rc::new(listener);
    let mut units = Vec::with_capacity(raws.len());
    if batch.suppress_parallel_execution {
        for raw in raws {
            units.push(one(worker.clone(), listener.clone(), at, peer, raw).await);
        }
    } else {
        let tasks: Vec<_> =
            raws.into_iter().map(|raw| monoio::spawn(one(worker.clone(), listener.clone(), at, peer, raw))).collect();
        for t in tasks {
            units.push(t.await);
        }
    }
    let units: Vec<ReplyUnit> = units
        .into_iter()
        .zip(&batch.requests)
        .map(|(u, r)| match u {
            Some(mut u) => {
                u.relative_url.clone_from(&r.relative_url);
                u
            }
            None => ReplyUnit::default(),
        })
        .collect();
    Ok(serde_json::to_vec(&units).unwrap_or_else(|_| b"[]".to_vec()))
}

/// The request's bytes, as it would come from a client: Tyk's URL (the listen path, then the
/// relative URL), the client's `Host`, the given headers but framing and `Host`, and the body
/// with its length; `Connection: close`.
fn construct(snap: &Snapshot, listen_path: &str, host: &str, r: &RequestDefinition) -> Result<Vec<u8>, String> {
    let token =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let method = if r.method.is_empty() { "GET" } else { r.method.as_str() };
    if !token(method) {
        return Err(format!("method {method:?}"));
    }
    let rel = r.relative_url.trim_start_matches('/');
    if rel.bytes().any(|b| b <= b' ' || b == 0x7f) || rel.contains('#') {
        return Err(format!("relative_url {:?}", r.relative_url));
    }
    let target = format!("{listen_path}/{rel}");
    // A batch inside a batch: found as routing would find it.
    let path = target.split('?').next().unwrap_or("");
    if let Ok(canon) = portcullis_http1::path::canonical(path) {
        if let Some(api) = snap.router.lookup(Some(host.as_bytes()), &canon) {
            let spec = snap.api(api);
            if spec.batch_requests && spec.rel_path(&canon) == super::phase::BATCH_PATH {
                return Err("a batch request inside a batch".into());
            }
        }
    }
    let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    for (name, value) in &r.headers {
        if !token(name) || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("header {name:?}"));
        }
        // The framing and the host are the batch's: a request of it cannot smuggle another.
        let n = name.to_ascii_lowercase();
        if matches!(n.as_str(), "host" | "content-length" | "transfer-encoding" | "connection" | "upgrade" | "te") {
            continue;
        }
        raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    raw.extend_from_slice(format!("Content-Length: {}\r\nConnection: close\r\n\r\n", r.body.len()).as_bytes());
    raw.extend_from_slice(r.body.as_bytes());
    Ok(raw)
}

/// Serves one request of the batch on a loopback pair and reads its response: `None` when it
/// got none (Tyk's empty unit).
async fn one(
    worker: Rc<Worker>,
    listener: Rc<TcpListener>,
    at: SocketAddr,
    peer: SocketAddr,
    raw: Vec<u8>,
) -> Option<ReplyUnit> {
    let mut ours = TcpStream::connect(at).await.ok()?;
    let (theirs, _) = listener.accept().await.ok()?;
    monoio::spawn(super::conn::serve(worker, super::stream::Stream::Plain(theirs), peer));
    let exchange = async move {
        let (r, _) = ours.write_all(raw).await;
        r.ok()?;
        let mut got = Vec::new();
        loop {
            let (r, buf) = ours.read(Vec::with_capacity(16 * 1024)).await;
            match r {
                Ok(0) => break,
                Ok(_) if got.len() + buf.len() > MAX_RESPONSE + 64 * 1024 => {
                    tracing::warn!(limit = MAX_RESPONSE, "batch: a response too large to return, reported as failed");
                    return None;
                }
                Ok(_) => got.extend_from_slice(&buf),
                Err(_) => return None,
            }
        }
        parse(&got)
    };
    monoio::time::timeout(REQUEST_TIMEOUT, exchange).await.ok().flatten()
}

/// A response read to its end (the connection was closed after it) as Tyk's unit: the status,
/// the headers under Go's canonical names, the body decoded from its framing.
fn parse(bytes: &[u8]) -> Option<ReplyUnit> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(bytes).ok()? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    let rest = &bytes[head_len..];
    let mut map: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let (mut chunked, mut length) = (false, None);
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value).into_owned();
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Go keeps it out of `Header` (resp.TransferEncoding).
            chunked |= value.to_ascii_lowercase().contains("chunked");
            continue;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse::<usize>().ok();
        }
        map.entry(crate::rewrite::canonical_header_name(h.name)).or_default().push(value);
    }
    let body: Cow<'_, [u8]> = if chunked {
        let mut scanner = portcullis_http1::chunked::ChunkedScanner::default();
        let mut out = Vec::new();
        let _ = scanner.scan(rest, |r| out.extend_from_slice(&rest[r]));
        out.into()
    } else if let Some(n) = length {
        rest.get(..n).unwrap_or(rest).into()
    } else {
        rest.into()
    };
    Some(ReplyUnit {
        relative_url: String::new(),
        code: resp.code?,
        headers: Some(map),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_gos_canonical_ones() {
        let canonical = crate::rewrite::canonical_header_name;
        assert_eq!(canonical("content-type"), "Content-Type");
        assert_eq!(canonical("X-RATELIMIT-LIMIT"), "X-Ratelimit-Limit");
        // `_` is a token byte to Go (textproto.validHeaderFieldByte): the name is canonicalised.
        assert_eq!(canonical("x_odd"), "X_odd");
        assert_eq!(canonical("x odd"), "x odd");
    }

    #[test]
    fn responses_are_read_by_their_framing() {
        let u = parse(b"HTTP/1.1 201 Created\r\ncontent-type: text/plain\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((u.code, u.body.as_str()), (201, "ok"));
        assert_eq!(u.headers.as_ref().unwrap()["Content-Type"], ["text/plain"]);
        let u =
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(u.body, "abcde");
        assert!(!u.headers.unwrap().contains_key("Transfer-Encoding"), "as Go's client shows it");
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Le").is_none(), "a cut head is no response");
    }
}
