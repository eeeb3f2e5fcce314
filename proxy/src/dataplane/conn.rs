//! One client connection: read a request head, route it, forward it to the upstream over a
//! pooled keep-alive connection, stream the response back; repeat while both sides keep alive.
//!
//! Each exchange is sequential (request body fully relayed before the response head is read),
//! like nginx. `Expect: 100-continue` is answered by the proxy itself. A `101 Switching
//! Protocols` to an upgrade request turns the connection into a byte tunnel. Errors are mapped to
//! responses in exactly one place, [`respond_error`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stream::Stream;
use monoio::io::AsyncWriteRent;

use crate::analytics::Outcome;
use crate::config::Snapshot;

use super::body::{self, Side};
use super::error::{ErrorKind, ProxyError};
use portcullis_http1::plan::{plan_body, BodyFacts, BodyPlan, Placement};
use portcullis_http1::{BodyKind, Method, PreparedResponse, RequestMeta, ResponseMeta};

use super::error::error_response_with;
use super::io::{write_vec, ExchangeBufs, ReadBuf};
use super::phase::{self, ClientCtx};
use super::record::{begin_record, begin_refused_record, outcome, record, RecordCtx};
use super::upstream::{self, Upstream};
use super::worker::Worker;

/// Per-connection buffers, reused across requests, and given back to the worker's pools when
/// the connection ends (see `Drop`).
struct Bufs {
    worker: Rc<Worker>,
    /// Client bytes read but not yet consumed.
    client: ReadBuf,
    /// The buffers only an exchange in flight needs, borrowed from the worker's pool for its
    /// duration, so an idle keep-alive connection holds only its client buffer.
    x: ExchangeBufs,
    /// TCP_NODELAY has been set on the client socket. Set lazily, as nginx does, only once the
    /// connection is kept alive or a body is streamed in several writes: a one-request
    /// connection answered in one write gains nothing from it and would pay a syscall.
    nodelay: bool,
    /// The client socket has been made non-blocking for splice(2) (see `splice`).
    nonblocking: bool,
    /// Over TLS, the certificates the client presented (for mutual TLS); `None`: plain TCP.
    tls_peer: Option<Rc<Vec<rustls::pki_types::CertificateDer<'static>>>>,
}

impl Bufs {
    /// Gives the exchange's buffers back to the worker's pool (after each exchange).
    fn return_exchange(&mut self) {
        let x = std::mem::replace(&mut self.x, ExchangeBufs::unallocated(self.client.max()));
        self.worker.return_exchange_bufs(x);
    }

    /// Gives an empty client buffer back to the worker's pool (while nothing is to be read).
    fn release_client(&mut self) {
        self.worker.return_client_buf(self.client.take_allocation());
    }
}

impl Drop for Bufs {
    /// However the connection ends, its buffers go back to the worker: a connection per request
    /// (the close scenario) otherwise allocated and freed its exchange buffers and client buffer
    /// every time (perf, close: about 4.5 % of the proxy's cycles in malloc and free).
    fn drop(&mut self) {
        self.return_exchange();
        self.release_client();
    }
}

fn ensure_nodelay(client: &Stream, bufs: &mut Bufs) {
    if !bufs.nodelay {
        let _ = client.set_nodelay(true);
        bufs.nodelay = true;
    }
}

/// What happens after an exchange.
enum Next {
    KeepAlive,
    Close,
    Tunnel(Upstream),
    /// Send the health answer in the exchange's output buffer (see [`send_health_reply`]).
    Health(HealthReply),
    /// Answer Tyk's batch endpoint ([`answer_batch`]), awaited in `serve` like a health answer:
    /// awaited in `exchange`, it made every connection's task 16 bytes larger.
    Batch(Box<BatchAsk>),
}

/// A failed exchange: the error, and whether a response has already started (then no error
/// response can be sent and the connection just closes).
struct Failure {
    err: ProxyError,
    responded: bool,
}

impl From<ProxyError> for Failure {
    fn from(err: ProxyError) -> Self {
        Failure { err, responded: false }
    }
}

/// Open connections on a worker above which it counts as busy: idle connections give their read
/// buffer back while they wait (see `serve`; c1000 bench: RSS per connection with and without, in
/// docs/decisions/0006-memory-per-connection.md), and writes go through the runtime instead of
/// trying a direct send first (see `io::send_now`: batched into one `io_uring_enter` they cost
/// less there; docs/decisions/0008-direct-send-first.md).
const RELEASE_IDLE_ABOVE: u64 = 256;

pub(crate) async fn serve(worker: Rc<Worker>, mut client: Stream, peer: SocketAddr) {
    let client_ip = peer.ip().to_string();
    let buffer_size = worker.snapshot().config.proxy.buffer_size;
    let mut bufs = Bufs {
        client: ReadBuf::from_vec(worker.take_client_buf(), buffer_size),
        x: ExchangeBufs::unallocated(buffer_size),
        nodelay: false,
        nonblocking: false,
        tls_peer: client.peer_chain(),
        worker: worker.clone(),
    };
    let mut shutdown = worker.local_shutdown.listen();
    // Whether the last thing on this connection was our response: the client's next request
    // is then not there yet (a freshly accepted connection may already hold its first).
    let mut answered = false;
    loop {
        let snap = worker.snapshot();
        if bufs.client.is_empty() {
            // Idle between requests: wait for the next one, the idle timeout, or shutdown.
            if worker.shutdown.is_set() {
                return;
            }
            let idle = Duration::from_millis(snap.config.proxy.client_idle_timeout_ms);
            if worker.shared_stats.open() > RELEASE_IDLE_ABOVE {
                // Many connections: wait for the next request without holding a buffer, so
                // memory follows the requests in flight, not the connections open. Costs a
                // readiness wait per request (poll(2) on epoll, a PollAdd on io_uring), so it is
                // only done under many connections, where memory per connection limits a host.
                bufs.release_client();
                let ready = monoio::select! {
                    r = monoio::time::timeout(idle, client.readable()) => r,
                    _ = &mut shutdown => return,
                };
                if !matches!(ready, Ok(Ok(()))) {
                    return;
                }
                if bufs.client.capacity() == 0 {
                    bufs.client = ReadBuf::from_vec(worker.take_client_buf(), snap.config.proxy.buffer_size);
                }
                answered = false;
            }
            let read = monoio::select! {
                r = monoio::time::timeout(idle, bufs.client.fill_socket(&mut client, answered)) => r,
                _ = &mut shutdown => return,
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
        if worker.bans.load().is_banned(peer.ip()) {
            // Banned while connected: stop serving this connection.
            worker.stats.borrow_mut().connections_banned += 1;
            return;
        }
        super::io::set_direct_send(worker.shared_stats.open() <= RELEASE_IDLE_ABOVE);
        let started = Instant::now();
        bufs.x = worker.take_exchange_bufs(snap.config.proxy.buffer_size);
        bufs.client.set_max(snap.config.proxy.buffer_size);
        // Not boxed: boxing the exchange's 2.1 KB state would free it on idle connections, but the
        // per-request allocation measured 4-10 % more CPU per request in the small scenario.
        let mut result = exchange(&worker, &snap, &mut client, &mut bufs, &client_ip, peer.ip(), started).await;
        if let Ok(Next::Health(reply)) = result {
            result = send_health_reply(&worker, &mut client, &mut bufs, reply, started).await;
        } else if let Ok(Next::Batch(b)) = result {
            // Boxed as `dyn`: a batch serves connections (`serve`), so this future holds itself.
            let answer: Pin<Box<dyn Future<Output = Result<Next, Failure>> + '_>> =
                Box::pin(answer_batch(&worker, &snap, started, &mut client, &mut bufs, *b, peer.ip()));
            result = answer.await;
        }
        match result {
            Ok(Next::KeepAlive) => {
                answered = true;
                ensure_nodelay(&client, &mut bufs);
                bufs.return_exchange();
                continue;
            }
            // A health or batch answer is sent above and ends as `KeepAlive` or `Close`.
            Ok(Next::Close | Next::Health(_) | Next::Batch(_)) => return,
            Ok(Next::Tunnel(up)) => {
                // Boxed: an upgraded connection's two copies, TLS halves included, would size every
                // connection's task (measured: 2,864 -> 3,336 bytes inline).
                Box::pin(tunnel(client, up, bufs)).await;
                return;
            }
            Err(f) => {
                let style = bufs.x.errors;
                let overrides = bufs.x.overrides.take();
                respond_error(&worker, &mut client, &mut bufs.x.out, f, style, overrides.as_deref(), started).await;
                return;
            }
        }
    }
}

/// The single mapping from a failed exchange to what the client sees.
async fn respond_error(
    worker: &Worker,
    client: &mut Stream,
    out: &mut Vec<u8>,
    f: Failure,
    style: super::error::ErrorStyle,
    overrides: Option<&crate::config::ErrorOverrides>,
    started: Instant,
) {
    {
        let mut stats = worker.stats.borrow_mut();
        match f.err.kind {
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamLookup => stats.upstream_connect_errors += 1,
            ErrorKind::UpstreamTimeout => stats.upstream_timeouts += 1,
            ErrorKind::UpstreamBusy => stats.upstream_queue_timeouts += 1,
            _ => {}
        }
    }
    match f.err.kind {
        ErrorKind::ClientIo | ErrorKind::Closed => {
            tracing::debug!(error = %f.err, "client connection closed")
        }
        _ => tracing::debug!(error = %f.err, "request failed"),
    }
    if f.responded {
        return;
    }
    out.clear();
    let message = f.err.kind.client_message(f.err.context);
    let flag = super::error::flag_of(f.err.kind, f.err.context);
    let ov = overrides.and_then(|o| o.find(f.err.kind.code(), flag, message));
    // The snapshot in a block: held across the write, it would size every connection's task.
    let written = {
        let snap = worker.snapshot();
        let templates = Some(&*snap.error_templates);
        super::error::error_response_with(out, f.err.kind, message, true, &[], style, ov, None, templates)
    };
    if written {
        let _ = write_vec(client, out).await;
    }
    let _ = started;
}

/// One exchange, in three steps: the request (head, route, rules, auth, limits, the body when
/// it is small), forwarding it upstream, and the response.
async fn exchange(
    worker: &Worker,
    snap: &Arc<Snapshot>,
    client: &mut Stream,
    bufs: &mut Bufs,
    client_ip: &str,
    client_addr: std::net::IpAddr,
    started: Instant,
) -> Result<Next, Failure> {
    let ex = Ex { worker, snap, started };
    let req = match request(&ex, client, bufs, client_ip, client_addr).await? {
        Step::Answered(next) => return Ok(next),
        Step::Health(reply) => return Ok(Next::Health(reply)),
        Step::Batch(b) => return Ok(Next::Batch(b)),
        Step::Forward(req) => req,
    };
    // Tyk's breaker acts around the proxying (gateway/reverse_proxy.go:1354-1369): open, the
    // upstream is not contacted; an upstream error or a 5xx counts as a failure.
    if let Some(b) = &req.breaker {
        if !b.ready(wall_ms()) {
            let api = snap.api(req.routed.api);
            let code = ErrorKind::CircuitOpen.code();
            record(worker, &mut bufs.x.record, &api.api_id, req.meta().method, started, outcome(code, 0, 0, 0));
            return Err(ProxyError::new(ErrorKind::CircuitOpen, "circuit breaker open").into());
        }
    }
    // Matched, not held as a `Result` until `respond`: that kept both in the connection's task
    // (`connection task size` 2,760 -> 3,160 bytes).
    let fwd = match forward(&ex, client, bufs, &req).await {
        Ok(f) => {
            if let Some(b) = &req.breaker {
                b.record(f.head.meta.status < 500, wall_ms());
            }
            f
        }
        Err(e) => {
            if let Some(b) = &req.breaker {
                b.record(false, wall_ms());
            }
            return Err(e);
        }
    };
    respond(&ex, client, bufs, &req, fwd).await
}

/// Wall-clock milliseconds, for the circuit breakers (read only for requests that have one).
fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What the steps of one exchange share.
struct Ex<'a> {
    worker: &'a Worker,
    snap: &'a Arc<Snapshot>,
    /// When the exchange began (its first byte was there).
    started: Instant,
}

/// After the request step: answered already (a local reply), a health answer to send, or a
/// request to forward.
enum Step<'w> {
    Answered(Next),
    Health(HealthReply),
    Forward(Request<'w>),
    /// Tyk's batch endpoint (boxed: rare).
    Batch(Box<BatchAsk>),
}

/// A batch request, its head read: answered by [`answer_batch`].
struct BatchAsk {
    meta: RequestMeta,
    api: crate::router::ApiIndex,
    host: String,
}

/// A routed request whose upstream head is in `bufs.x.req_head` and whose body, when small, is
/// in the client buffer.
struct Request<'w> {
    routed: phase::Routed,
    clock: Option<body::BodyClock>,
    /// Held while a large body streams (see `StreamingBody`).
    _streaming: Option<StreamingBody<'w>>,
    /// The `circuit_breakers` entry the request matched.
    breaker: Option<Arc<crate::limit::breaker::Breaker>>,
}

impl Request<'_> {
    fn meta(&self) -> &RequestMeta {
        &self.routed.meta
    }
}

/// Reads the request head, routes it and runs the rules, auth and limits on it (asking the
/// control plane when a cache misses), then reads a small body whole.
async fn request<'w>(
    ex: &Ex<'w>,
    client: &mut Stream,
    bufs: &mut Bufs,
    client_ip: &str,
    client_addr: std::net::IpAddr,
) -> Result<Step<'w>, Failure> {
    let (worker, snap, started) = (ex.worker, ex.snap, ex.started);
    let cfg = &snap.config.proxy;
    let peer = bufs.tls_peer.clone();
    let ctx = ClientCtx { client_ip, client_addr, tls_certs: peer.as_deref().map(Vec::as_slice) };

    // 1. Request head, parsed once: its offsets stay in the exchange's buffers while a phase
    //    waits for the control plane.
    let head_deadline = started + Duration::from_millis(cfg.header_read_timeout_ms);
    let too_large = || {
        record(worker, &mut Vec::new(), "", Method::Other, started, outcome(ErrorKind::HeadTooLarge.code(), 0, 0, 0));
        Err(ProxyError::new(ErrorKind::HeadTooLarge, "request head too large").into())
    };
    // Errors before the head is parsed are JSON; after, as the request's Content-Type asks.
    let generator = !cfg.hide_generator_header;
    bufs.x.errors = super::error::ErrorStyle::of(b"", generator);
    bufs.x.overrides = None;
    bufs.x.cache = None;
    bufs.x.sample.clear();
    let head = loop {
        match portcullis_http1::parse_request(bufs.client.data(), cfg.max_headers, &mut bufs.x.headers) {
            Ok(Some(head)) if head.meta.head_len > cfg.max_request_head_size => return too_large(),
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(e) => {
                let e = ProxyError::from(e);
                record(worker, &mut Vec::new(), "", Method::Other, started, outcome(e.kind.code(), 0, 0, 0));
                return Err(e.into());
            }
        }
        if bufs.client.len() >= cfg.max_request_head_size {
            return too_large();
        }
        bufs.client.reserve_for_head(cfg.max_request_head_size);
        match monoio::time::timeout_at(head_deadline.into(), bufs.client.fill(client)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Err(ProxyError::new(ErrorKind::ClientIo, "client closed during request head").into()),
            Err(_) => return Err(ProxyError::new(ErrorKind::Closed, "request head timed out").into()),
        }
    };
    let meta = head.meta;
    bufs.x.errors = super::error::ErrorStyle::of(meta.spans.content_type.get(bufs.client.data()), generator);

    // 2. The request phases (`phase`): route, access, authenticate, rate, quota, transform,
    //    upstream head; resumed at the phase that asked after each control-plane answer. The
    //    phases' state stays in `start_phases`' frame, or in the boxed wait: not in the task.
    bufs.x.req_head.clear();
    let x = &mut bufs.x;
    let data = bufs.client.data();
    let req = head.view(data, &x.headers);
    // Tyk's `/hello` and `/ready` come before any API, as on Tyk's router (see `health`). Given
    // the view's fields, not the view: a borrowed `req` would be kept in the task across every
    // later await of `request` (176 bytes per connection).
    if let Some(endpoint) = super::health::endpoint(cfg, req.head.form, req.raw_path) {
        return Ok(Step::Health(health_reply(worker, bufs, &meta, endpoint)));
    }
    // `[tls.acme]`'s HTTP-01 challenges, answered as the health checks are.
    if let Some(answer) = super::acme::token(req.raw_path).and_then(|t| worker.acme.load().get(t).cloned()) {
        return Ok(Step::Health(acme_reply(bufs, &meta, &answer, worker.shutdown.is_set())));
    }
    let (path, decided) = match start_phases(worker, snap, &ctx, started, req, &mut x.path, &mut x.req_head) {
        Ok((path, Started::Decided(o))) => (path, Ok(Decided::Phases(o))),
        Ok((path, Started::Waiting(wait))) => (path, wait.await),
        Err(e) => ("", Err(e)),
    };
    let routed = match conclude(worker, snap, data, &meta, client_ip, path, decided, &mut x.record) {
        Ok(routed) => routed,
        Err(Concluded::Failed(e)) => {
            record(worker, &mut Vec::new(), "", Method::Other, started, outcome(e.kind.code(), 0, 0, 0));
            return Err(e.into());
        }
        Err(Concluded::Reply(r)) => {
            let reply = reply_local(worker, client, bufs, meta, r.api_id, r.kind, &r.message, &r.extra, r.ov, started);
            return Box::pin(reply).await.map(Step::Answered);
        }
        Err(Concluded::Batch(api)) => {
            // Answered by `exchange`: an await here kept the phases' result in this future, and
            // so in every connection's task (2,808 -> 3,056 bytes).
            let host = head.view(data, &bufs.x.headers).host.map(|h| String::from_utf8_lossy(h).into_owned());
            return Ok(Step::Batch(Box::new(BatchAsk { meta, api, host: host.unwrap_or_default() })));
        }
    };
    let mut routed = routed;
    let meta = routed.meta;
    let api = snap.api(routed.api);
    // For an upstream failure of this exchange, answered after the phases (`respond_error`).
    x.overrides = api.error_overrides.clone();
    let target = api.target(routed.target);
    let facts =
        RecordCtx { api, path, host: &target.host_header, identity: routed.identity.as_ref(), tags: &routed.tags };
    begin_record(worker, snap, data, &meta, client_ip, facts, &mut x.record);
    // API visibility: a sampled exchange keeps its request and response (`visibility::sample`);
    // the document's request schema is checked once the body is read (`enforce` with
    // `validate_requests`). In a block: nothing of it but the box is held across the awaits
    // below, which would size every connection's task.
    let spec_request = {
        let vis = &api.visibility;
        if vis.sample_below > 0 && !x.record.is_empty() && worker.sampled(vis.sample_below) {
            let head = &data[..meta.head_len.min(data.len())];
            super::record::begin_sample(api, head, api.rel_path(path), &mut x.sample);
        }
        if vis.enforces() && vis.validate_requests {
            let method = std::str::from_utf8(meta.spans.method.get(data)).unwrap_or("");
            let op = super::phase::visibility::judge(api, method, api.rel_path(path)).op();
            op.map(|op| Box::new(SpecRequest::of(op, path, &head.view(data, &x.headers))))
        } else {
            None
        }
    };
    // The `validate_json` entry for this request, if any (checked once its body is read), its
    // circuit breaker (checked before it goes upstream) and whether its response is cached.
    let (json_check, breaker, cache_entry) =
        if api.validate_json.is_empty() && api.circuit_breakers.is_empty() && api.cache.is_none() {
            (None, None, 0u16)
        } else {
            let method = std::str::from_utf8(meta.spans.method.get(data)).unwrap_or("");
            let rel = api.rel_path(path);
            (
                api.validate_json.iter().find(|(r, _)| r.matches(method, rel, rel)).map(|(_, c)| c.clone()),
                api.circuit_breakers.iter().find(|(r, _)| r.matches(method, rel, rel)).map(|(_, b)| Arc::clone(b)),
                // Held across the body read, so as small as it can be (decoded below).
                api.cache
                    .as_ref()
                    .and_then(|c| c.matches(method, rel, path))
                    .map_or(0, |e| e.map_or(1, |i| u16::try_from(i + 2).unwrap_or(0))),
            )
        };
    // Counts this exchange (and finishes its record) however it ends.
    let done = |rec: &mut Vec<u8>, o: Outcome| record(worker, rec, &api.api_id, meta.method, started, o);
    bufs.client.consume(meta.head_len);
    if meta.body == BodyKind::None && worker.shared_stats.open() > RELEASE_IDLE_ABOVE {
        // Nothing more to read from the client until the response is out: with many
        // connections, do not hold its buffer while the upstream answers.
        bufs.release_client();
    }
    if let BodyKind::Length(n) = meta.body {
        if cfg.max_request_body_size > 0 && n > cfg.max_request_body_size {
            done(&mut bufs.x.record, outcome(ErrorKind::BodyTooLarge.code(), 0, 0, 0));
            return Err(ProxyError::new(ErrorKind::BodyTooLarge, "request body too large").into());
        }
    }

    // A request body small enough is read whole before an upstream slot is taken, so a client
    // that sends it slowly holds no upstream connection; a larger one streams under the body
    // clock, and one client IP streams at most `max_streaming_bodies_per_client` of them.
    let clock = body::BodyClock::new(Instant::now(), cfg.request_body_timeout_ms, cfg.request_body_min_rate);
    let mut expect_continue = meta.expect_continue;
    let mut _streaming = None;
    if body_to_read(meta.body, bufs.client.len()) {
        let buffered = Box::pin(buffer_body(client, bufs, meta.body, &mut expect_continue, cfg, clock)).await;
        match buffered {
            Ok(true) => {}
            Ok(false) => match StreamingBody::start(worker, client_addr, cfg.max_streaming_bodies_per_client) {
                Some(s) => _streaming = Some(s),
                None => {
                    done(&mut bufs.x.record, outcome(ErrorKind::ClientBodies.code(), 0, 0, 0));
                    return Err(ProxyError::new(
                        ErrorKind::ClientBodies,
                        "too many request bodies in progress from this client",
                    )
                    .into());
                }
            },
            Err(e) => {
                done(&mut bufs.x.record, outcome(e.kind.code(), 0, 0, 0));
                return Err(e.into());
            }
        }
    }
    if let Some(check) = json_check {
        // Tyk's ValidateJSON middleware (gateway/mw_validate_json.go): the whole body, parsed
        // and checked against the schema; refused: 400 (not JSON) or the entry's status.
        let verdict = if _streaming.is_some() {
            Err((ErrorKind::BodyTooLarge, "request body larger than request_buffer_size cannot be validated".into()))
        } else {
            validate_body(bufs.client.data(), meta.body, &check)
        };
        if let Err((kind, message)) = verdict {
            let close = true;
            bufs.x.out.clear();
            let flag = Some("BIV");
            let ov = api.error_overrides.as_deref().and_then(|o| o.find(kind.code(), flag, &message));
            // Tyk's `{{.InvalidParams}}`: the parse error, or the schema's errors
            // (mw_validate_json.go:60-75).
            let detail = message.strip_prefix("JSON parsing error: ").unwrap_or(&message);
            let templates = Some(&*snap.error_templates);
            error_response_with(
                &mut bufs.x.out,
                kind,
                &message,
                close,
                &[],
                bufs.x.errors,
                ov,
                Some(detail),
                templates,
            );
            let out_len = bufs.x.out.len() as u64;
            let _ = write_vec(client, &mut bufs.x.out).await;
            let code = ov.filter(|o| o.status != 0).map_or(kind.code(), |o| o.status);
            done(&mut bufs.x.record, outcome(code, meta.head_len as u64, out_len, 0));
            return Ok(Step::Answered(Next::Close));
        }
    }
    if !bufs.x.sample.is_empty() || spec_request.is_some() {
        // Refused: the error written into `out` (in a block: no local of the check is held
        // across the write's await, which would size every connection's task).
        let refused = {
            let body = match meta.body {
                BodyKind::None => Some(&[][..]),
                BodyKind::Length(n) if _streaming.is_none() => bufs.client.data().get(..n as usize),
                _ => None,
            };
            if !bufs.x.sample.is_empty() {
                super::record::sample_request_body(api, body, &mut bufs.x.sample);
            }
            match (spec_request, api.visibility.spec.as_deref()) {
                (Some(r), Some(spec)) => spec_refusal(spec, api, &r, body, snap, &mut bufs.x),
                _ => None,
            }
        };
        if let Some(code) = refused {
            let out_len = bufs.x.out.len() as u64;
            let _ = write_vec(client, &mut bufs.x.out).await;
            done(&mut bufs.x.record, outcome(code, meta.head_len as u64, out_len, 0));
            return Ok(Step::Answered(Next::Close));
        }
    }
    routed.meta.expect_continue = expect_continue;
    // Tyk's response cache, after every other check (gateway/api_loader.go:617-664); only for
    // requests whose body, if any, is read whole and framed by its length.
    // `cache_entry`: 0 not cached, 1 `cache_all_safe_requests`, 2 + i path entry i (an
    // `Option<Option<usize>>` made every connection's task 32 bytes larger).
    if let (Some(rules), 1..) = (&api.cache, cache_entry) {
        let entry = cache_entry.checked_sub(2).map(usize::from);
        let body = match meta.body {
            BodyKind::None => Some(&[][..]),
            BodyKind::Length(n) if _streaming.is_none() => bufs.client.data().get(..n as usize),
            _ => None,
        };
        let identity = routed.identity.as_ref();
        let fill = body.and_then(|b| {
            super::cache::key(rules, entry, snap.generation, routed.api, identity, client_ip, &bufs.x.req_head, b)
        });
        if let Some(fill) = fill {
            match super::cache::lookup(worker, snap.generation, &fill, started) {
                Some(hit) => {
                    let served = serve_hit(ex, client, bufs, &routed, &hit, body_in_len(&meta));
                    return Box::pin(served).await.map(Step::Answered);
                }
                None => bufs.x.cache = Some(Box::new(fill)),
            }
        }
    }
    Ok(Step::Forward(Request { routed, clock, _streaming, breaker }))
}

/// The request bytes of a request whose body is read whole (for the record).
fn body_in_len(meta: &RequestMeta) -> u64 {
    meta.head_len as u64 + if let BodyKind::Length(n) = meta.body { n } else { 0 }
}

/// Answers a request from the response cache (`cache`): the request body, read whole, is
/// consumed, the kept response written, the exchange recorded (no upstream time).
async fn serve_hit(
    ex: &Ex<'_>,
    client: &mut Stream,
    bufs: &mut Bufs,
    routed: &phase::Routed,
    hit: &super::cache::Entry,
    body_in: u64,
) -> Result<Next, Failure> {
    let (worker, snap, started) = (ex.worker, ex.snap, ex.started);
    let cfg = &snap.config.proxy;
    let meta = routed.meta;
    if let BodyKind::Length(n) = meta.body {
        bufs.client.consume(n as usize);
    }
    let inm = super::cache::header_values(&bufs.x.req_head, b"if-none-match").next();
    let keep_alive = meta.keep_alive && !worker.shutdown.is_set();
    let api = snap.api(routed.api);
    let expires = api.expires_header.as_deref();
    let written = super::cache::write_hit(hit, &meta, keep_alive, &routed.limits, expires, cfg, inm, &mut bufs.x.out);
    let (status, close) = match written {
        Ok(w) => w,
        Err(e) => {
            record(
                worker,
                &mut bufs.x.record,
                &api.api_id,
                meta.method,
                started,
                outcome(e.kind.code(), body_in, 0, 0),
            );
            return Err(e.into());
        }
    };
    let out_len = bufs.x.out.len() as u64;
    worker.stats.borrow_mut().cache_hits += 1;
    let wrote = write_vec(client, &mut bufs.x.out).await;
    record(worker, &mut bufs.x.record, &api.api_id, meta.method, started, outcome(status, body_in, out_len, 0));
    wrote.map_err(|e| Failure {
        err: ProxyError::io(ErrorKind::ClientIo, "writing a cached response", e),
        responded: true,
    })?;
    Ok(if close || worker.shutdown.is_set() { Next::Close } else { Next::KeepAlive })
}

/// Tyk's batch endpoint (`batch.rs`): the body read whole, the batch run, its JSON answered
/// (then the connection closes). Tyk answers any other method than POST with an empty 200
/// (gateway/batch_requests.go:161-164); a body that is not a batch with 400.
async fn answer_batch(
    worker: &Worker,
    snap: &Arc<Snapshot>,
    started: Instant,
    client: &mut Stream,
    bufs: &mut Bufs,
    ask: BatchAsk,
    client_addr: std::net::IpAddr,
) -> Result<Next, Failure> {
    let BatchAsk { meta, api, host } = ask;
    let spec = snap.api(api);
    let cfg = &snap.config.proxy;
    bufs.client.consume(meta.head_len);
    let mut expect = meta.expect_continue;
    let body = if body_to_read(meta.body, bufs.client.len()) {
        let clock = body::BodyClock::new(Instant::now(), cfg.request_body_timeout_ms, cfg.request_body_min_rate);
        match Box::pin(buffer_body(client, bufs, meta.body, &mut expect, cfg, clock)).await {
            Ok(true) => body_bytes(bufs.client.data(), meta.body).into_owned(),
            Ok(false) => {
                let e = ProxyError::new(ErrorKind::BodyTooLarge, "a batch larger than request_buffer_size");
                record(worker, &mut bufs.x.record, &spec.api_id, meta.method, started, outcome(e.kind.code(), 0, 0, 0));
                return Err(e.into());
            }
            Err(e) => {
                record(worker, &mut bufs.x.record, &spec.api_id, meta.method, started, outcome(e.kind.code(), 0, 0, 0));
                return Err(e.into());
            }
        }
    } else {
        body_bytes(bufs.client.data(), meta.body).into_owned()
    };
    let (code, json) = if meta.method != Method::Post {
        (200, Vec::new())
    } else {
        let peer = std::net::SocketAddr::new(client_addr, 0);
        match super::batch::run(bufs.worker.clone(), snap, &spec.listen_path, &host, peer, &body).await {
            Ok(json) => (200, json),
            Err(refused) => {
                tracing::debug!(api = %spec.api_id, error = %refused.message(), "batch request refused");
                (
                    400,
                    serde_json::to_vec(&serde_json::json!({"status": "error", "message": refused.message()}))
                        .unwrap_or_default(),
                )
            }
        }
    };
    let out = &mut bufs.x.out;
    out.clear();
    let reason = if code == 200 { "OK" } else { "Bad Request" };
    out.extend_from_slice(format!("HTTP/1.1 {code} {reason}\r\n").as_bytes());
    if !json.is_empty() {
        out.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\nConnection: close\r\n\r\n", json.len()).as_bytes());
    out.extend_from_slice(&json);
    let out_len = out.len() as u64;
    let written = write_vec(client, out).await;
    record(
        worker,
        &mut bufs.x.record,
        &spec.api_id,
        meta.method,
        started,
        outcome(code, meta.head_len as u64, out_len, 0),
    );
    written.map_err(|e| Failure {
        err: ProxyError::io(ErrorKind::ClientIo, "writing a batch response", e),
        responded: true,
    })?;
    Ok(Next::Close)
}

/// A body read whole (at the start of `data`), decoded from its framing.
fn body_bytes(data: &[u8], body: BodyKind) -> std::borrow::Cow<'_, [u8]> {
    match body {
        BodyKind::Length(n) => data.get(..n as usize).unwrap_or(data).into(),
        BodyKind::Chunked => {
            let mut scanner = portcullis_http1::chunked::ChunkedScanner::default();
            let mut out = Vec::new();
            let _ = scanner.scan(data, |r| out.extend_from_slice(&data[r]));
            out.into()
        }
        BodyKind::None | BodyKind::UntilClose => (&[][..]).into(),
    }
}

/// Checks a request against the provided document (`validate_requests`): when it fails, writes
/// the 400 naming the failing field's pointer into `x.out` and returns its status.
fn spec_refusal(
    spec: &portcullis_visibility::Spec,
    api: &crate::config::ApiSpec,
    r: &SpecRequest,
    body: Option<&[u8]>,
    snap: &Snapshot,
    x: &mut super::io::ExchangeBufs,
) -> Option<u16> {
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let ct = (!r.content_type.is_empty()).then_some(r.content_type.as_str());
    let v = spec.check_request(r.op, api.rel_path(&r.path), &r.query, &headers, body, ct).err()?;
    let message = format!("request does not match the API's OpenAPI document at {}: {}", v.pointer, v.message);
    let kind = ErrorKind::Denied(crate::auth::Refusal::BadRequest);
    x.out.clear();
    let templates = Some(&*snap.error_templates);
    error_response_with(&mut x.out, kind, &message, true, &[], x.errors, None, None, templates);
    Some(kind.code())
}

/// A response head peeked for splicing (see `splice`) taken out of the socket after all, and
/// consumed: the buffer as after a read of the head and what came with it.
fn unqueue_head(buf: &mut super::io::ReadBuf, up: &Upstream, head_len: usize) -> Result<(), Failure> {
    let peeked = buf.len();
    buf.unqueue_peeked(&up.stream, peeked).map_err(|e| Failure {
        err: ProxyError::io(ErrorKind::UpstreamProtocol, "reading upstream response", e),
        responded: false,
    })?;
    buf.consume(head_len);
    Ok(())
}

/// What the provided document's request check needs of the head, copied before the head is
/// consumed (only for APIs that enforce `validate_requests`).
struct SpecRequest {
    op: portcullis_visibility::spec::OpId,
    /// The canonical path.
    path: String,
    /// Without `?`.
    query: String,
    headers: Vec<(String, String)>,
    content_type: String,
}

impl SpecRequest {
    fn of(op: portcullis_visibility::spec::OpId, path: &str, req: &portcullis_http1::Request<'_>) -> Self {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let headers: Vec<(String, String)> = req.headers.iter().map(|h| (text(h.name), text(h.value))).collect();
        let content_type = req.headers.get("content-type").map(text).unwrap_or_default();
        SpecRequest {
            op,
            path: path.to_string(),
            query: req.query.strip_prefix('?').unwrap_or(req.query).to_string(),
            headers,
            content_type,
        }
    }
}

/// Checks a request body read whole (at the start of `data`) against a `validate_json` schema:
/// `Err` with what to answer, Tyk's words (mw_validate_json.go:48-92): a body that is not JSON is
/// 400 `JSON parsing error: ...`; one the schema refuses gets the entry's status and every
/// error as `<field>: <what>` joined by `; ` (the wording is the `jsonschema` crate's, the shape
/// gojsonschema's).
fn validate_body(data: &[u8], body: BodyKind, check: &crate::config::JsonCheck) -> Result<(), (ErrorKind, String)> {
    let bytes = body_bytes(data, body);
    let bad = |m: String| (ErrorKind::Denied(crate::auth::Refusal::BadRequest), m);
    let value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) if bytes.iter().all(u8::is_ascii_whitespace) => {
            return Err(bad(format!("JSON parsing error: EOF ({e})")))
        }
        Err(e) => return Err(bad(format!("JSON parsing error: {e}"))),
    };
    let errors: Vec<String> = check
        .validator
        .iter_errors(&value)
        .map(|e| {
            let at = e.instance_path.to_string();
            let field = if at.is_empty() { "(root)".to_string() } else { at.trim_start_matches('/').replace('/', ".") };
            format!("{field}: {e}")
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err((ErrorKind::Denied(crate::auth::Refusal::Status(check.status)), errors.join("; ")))
    }
}

/// What the phases decided, or that the control plane could not answer.
#[expect(clippy::large_enum_variant, reason = "returned once per request; boxing would allocate on every request")]
enum Decided<'a> {
    Phases(phase::Outcome<'a>),
    /// The client-facing message says what was unavailable.
    Unavailable {
        api: crate::router::ApiIndex,
        msg: &'static str,
    },
}

/// The phases' first run: decided, or waiting for the control plane (boxed, see [`settle`]).
#[expect(clippy::large_enum_variant, reason = "returned once per request; boxing would allocate on every request")]
enum Started<'a> {
    Decided(phase::Outcome<'a>),
    Waiting(Pin<Box<dyn Future<Output = Result<Decided<'a>, ProxyError>> + 'a>>),
}

/// Runs the phases on a parsed head; returns the canonical path (empty when unrouted) and what
/// they decided, or the boxed wait that settles a question for the control plane. A plain
/// function, so what the phases hold never sizes the connection's task.
fn start_phases<'a>(
    worker: &'a Worker,
    snap: &'a Snapshot,
    ctx: &'a ClientCtx<'a>,
    started: Instant,
    req: portcullis_http1::Request<'a>,
    path_buf: &'a mut String,
    out: &'a mut Vec<u8>,
) -> Result<(&'a str, Started<'a>), ProxyError> {
    let (path, first) = with_env(worker, snap, ctx, started, |env| phase::start(&req, snap, path_buf, env, out))?;
    Ok(match first {
        phase::Outcome::Waiting(w) => {
            (path, Started::Waiting(Box::pin(settle(worker, snap, ctx, started, req, w, out))))
        }
        o => (path, Started::Decided(o)),
    })
}

/// A local reply: the API (for the record and metrics), the error kind, message and extra
/// header lines.
struct LocalReply<'a> {
    api_id: &'a str,
    kind: ErrorKind,
    message: std::borrow::Cow<'static, str>,
    extra: Vec<u8>,
    /// The API's `error_overrides` rule for this answer.
    ov: Option<&'a crate::config::Override>,
}

/// How a request the phases did not route ends.
enum Concluded<'a> {
    Reply(LocalReply<'a>),
    Failed(ProxyError),
    /// Tyk's batch endpoint of this API (`batch.rs`); its record begun.
    Batch(crate::router::ApiIndex),
}

/// The routed request, or the reply to send instead (its record begun and its refusal counted).
fn conclude<'a>(
    worker: &Worker,
    snap: &'a Snapshot,
    data: &[u8],
    meta: &RequestMeta,
    client_ip: &str,
    path: &str,
    decided: Result<Decided<'_>, ProxyError>,
    rec: &mut Vec<u8>,
) -> Result<phase::Routed, Concluded<'a>> {
    let (api, kind, message, extra, flag) = match decided.map_err(Concluded::Failed)? {
        Decided::Phases(phase::Outcome::Routed(r)) => return Ok(r),
        Decided::Phases(phase::Outcome::Batch(api)) => {
            let spec = snap.api(api);
            begin_refused_record(worker, snap, data, meta, client_ip, spec, path, rec);
            return Err(Concluded::Batch(api));
        }
        Decided::Phases(phase::Outcome::NoRoute) => {
            let message = "no API matches this request".into();
            return Err(Concluded::Reply(LocalReply {
                api_id: "",
                kind: ErrorKind::NoRoute,
                message,
                extra: Vec::new(),
                ov: None,
            }));
        }
        Decided::Phases(phase::Outcome::Denied { api, denial }) => {
            let spec = snap.api(api);
            {
                let mut st = worker.stats.borrow_mut();
                if denial.kind == crate::auth::Refusal::TooManyRequests {
                    st.rate_limited += 1;
                } else {
                    st.auth_denied += 1;
                }
            }
            let mut extra = Vec::new();
            if denial.basic_challenge {
                extra.extend_from_slice(b"WWW-Authenticate: ");
                extra.extend_from_slice(crate::auth::basic::www_authenticate(&spec.name).as_bytes());
                extra.extend_from_slice(b"\r\n");
            }
            let mode = snap.config.proxy.rate_limit_response_headers;
            phase::rate::write_refusal_headers(&mut extra, denial.rate.as_ref(), mode);
            // Rate and quota refusals are flagged here (Tyk: RLT, QEX), the others where made.
            let flag = denial.flag.or(match denial.kind {
                crate::auth::Refusal::TooManyRequests => Some("RLT"),
                _ if denial.message == "Quota exceeded" => Some("QEX"),
                _ => None,
            });
            (api, ErrorKind::Denied(denial.kind), denial.message, extra, flag)
        }
        // `settle` answers every wait; a waiting outcome here would be a bug, refused safely.
        Decided::Phases(phase::Outcome::Waiting(w)) => {
            (w.api, ErrorKind::AuthUnavailable, UNAVAILABLE.into(), Vec::new(), None)
        }
        Decided::Unavailable { api, msg } => (api, ErrorKind::AuthUnavailable, msg.into(), Vec::new(), None),
    };
    let spec = snap.api(api);
    let ov = spec.error_overrides.as_deref().and_then(|o| o.find(kind.code(), flag, &message));
    begin_refused_record(worker, snap, data, meta, client_ip, spec, path, rec);
    Err(Concluded::Reply(LocalReply { api_id: &spec.api_id, kind, message, extra, ov }))
}

/// What a client is told when the control plane cannot answer a phase's question.
const UNAVAILABLE: &str = "authentication temporarily unavailable";

/// Asks the control plane what a phase needs, caches the answer on the worker and runs the
/// phases again from the one that asked, at most four times (answers that keep changing, a key
/// replaced between fetches, end it). Awaited boxed: only requests that wait carry its state.
async fn settle<'a>(
    worker: &'a Worker,
    snap: &'a Snapshot,
    ctx: &'a ClientCtx<'a>,
    started: Instant,
    req: portcullis_http1::Request<'a>,
    mut w: Box<phase::Waiting<'a>>,
    out: &'a mut Vec<u8>,
) -> Result<Decided<'a>, ProxyError> {
    for _ in 0..4 {
        let Some(need) = w.need.take() else { break };
        if let Err((what, e)) = resolve(worker, need).await {
            worker.stats.borrow_mut().key_lookup_errors += 1;
            tracing::warn!(error = %e, "{what}");
            return Ok(Decided::Unavailable { api: w.api, msg: what });
        }
        out.clear();
        match with_env(worker, snap, ctx, started, |env| phase::resume(w, &req, snap, env, out))? {
            phase::Outcome::Waiting(next) => w = next,
            o => return Ok(Decided::Phases(o)),
        }
    }
    worker.stats.borrow_mut().key_lookup_errors += 1;
    tracing::warn!("{UNAVAILABLE}: the control plane's answers keep changing");
    Ok(Decided::Unavailable { api: w.api, msg: UNAVAILABLE })
}

/// Lends the phases the worker's auth caches and limiter, with their clocks set to the
/// exchange's start, for the duration of `f` (never across an await).
fn with_env<T>(
    worker: &Worker,
    snap: &Snapshot,
    ctx: &ClientCtx<'_>,
    started: Instant,
    f: impl FnOnce(&mut phase::Env<'_>) -> T,
) -> T {
    let mut auth = worker.auth.borrow_mut();
    auth.set_clock(started.saturating_duration_since(worker.epoch));
    let mut limiter = worker.limiter.borrow_mut();
    limiter.set_clock(started.saturating_duration_since(worker.epoch));
    let mut env = phase::Env {
        client: ctx,
        auth: &mut auth,
        limiter: &mut limiter,
        now: &crate::clock::unix_now,
        request_id: &|| worker.next_request_id(),
        pick: &|api, spec| worker.pick_target(snap.generation, api, spec),
    };
    f(&mut env)
}

/// The upstream connection (under the target's slot) and the request on it, up to the
/// response head: a pooled connection that fails before any response byte is retried once on a
/// fresh one when the request had no body.
async fn forward(ex: &Ex<'_>, client: &mut Stream, bufs: &mut Bufs, req: &Request<'_>) -> Result<Forwarded, Failure> {
    let (worker, snap, started) = (ex.worker, ex.snap, ex.started);
    let cfg = &snap.config.proxy;
    let routed = &req.routed;
    let meta = *req.meta();
    let clock = req.clock;
    let api = snap.api(routed.api);
    let target = api.target(routed.target);
    let done = |rec: &mut Vec<u8>, o: Outcome| record(worker, rec, &api.api_id, meta.method, started, o);
    let addr = match target.addr {
        Some(a) => a,
        None => match Box::pin(resolve_target(worker, snap, routed.api, routed.target, started)).await {
            Ok(a) => a,
            Err(e) => {
                done(&mut bufs.x.record, outcome(e.kind.code(), 0, 0, 0));
                return Err(e.into());
            }
        },
    };

    // 2. Upstream connection and request. The slot (`upstream_max_connections`) is held until
    //    the exchange ends, so the connection it returns to the pool goes to the next waiter. A
    //    pooled connection that fails before any response byte is retried once on a fresh one,
    //    if the request body has not been sent yet.
    let wait = Duration::from_millis(cfg.upstream_queue_timeout_ms);
    let slot = match worker.pool.slot(addr, cfg.upstream_max_connections, wait).await {
        Ok((slot, waited)) => {
            if waited {
                worker.stats.borrow_mut().upstream_queued += 1;
            }
            slot
        }
        Err(upstream::QueueTimeout) => {
            done(&mut bufs.x.record, outcome(ErrorKind::UpstreamBusy.code(), 0, 0, 0));
            return Err(ProxyError::new(ErrorKind::UpstreamBusy, "upstream connection limit reached").into());
        }
    };
    // An API whose recent bodies were large enough to splice gets its head read small, so the
    // body stays in the socket for splice(2) (see `splice`).
    // Under TLS the socket carries ciphertext: no splice, so no small head reads or peeks.
    let splice_min = if client.is_tls() || target.tls.is_some() { 0 } else { cfg.splice_min_body as u64 };
    let key = upstream::PoolKey::new(addr, target.tls.as_ref());
    let api_index = routed.api as usize;
    let head_read =
        (splice_min > 0 && worker.splice.hints.large(snap.generation, api_index)).then_some(super::splice::HEAD_READ);
    // And if its heads have also gone to the client unchanged, the head is peeked, so that head
    // and body can leave the upstream socket together (see `splice`).
    let peek = head_read.is_some() && worker.splice.hints.verbatim(snap.generation, api_index);
    let mut attempt = 0;
    // The upstream's share of the time, for the record (not measured when nothing is recorded).
    let up_started = (!bufs.x.record.is_empty()).then(Instant::now);
    let up_us = |t: Option<Instant>| t.map_or(0, |t| t.elapsed().as_micros() as u64);
    let (up, head, body_bytes) = loop {
        attempt += 1;
        let pooled = if attempt == 1 {
            // The exchange's start as "now": the idle limit is seconds, the request microseconds old.
            worker.pool.take(key, Duration::from_millis(cfg.upstream_idle_timeout_ms), started)
        } else {
            None
        };
        let mut up = match pooled {
            Some(up) => up,
            None => {
                let timeout = Duration::from_millis(cfg.upstream_connect_timeout_ms);
                let r = upstream::connect(addr, timeout, target.tls.as_ref()).await;
                worker.stats.borrow_mut().upstream_connections_opened += 1;
                match r {
                    Ok(up) => up,
                    Err(e) => {
                        let o = outcome(e.kind.code(), 0, 0, 0);
                        done(&mut bufs.x.record, o);
                        return Err(e.into());
                    }
                }
            }
        };
        let retryable = up.reused && meta.body == BodyKind::None;
        match send_request(worker, snap, client, &mut up, bufs, &meta, clock).await {
            Ok(body_bytes) => {
                let how = HeadRead { cap: head_read, peek, splice_min };
                let expires = api.expires_header.as_deref();
                match read_response_head(snap, &mut up, bufs, &meta, &routed.limits, expires, worker, how).await {
                    Ok(head) => break (up, head, body_bytes),
                    Err(e) if retryable && e.kind == ErrorKind::UpstreamProtocol && bufs.x.upstream.is_empty() => {}
                    Err(e) => {
                        let o = outcome(e.kind.code(), 0, 0, up_us(up_started));
                        done(&mut bufs.x.record, o);
                        return Err(e.into());
                    }
                }
            }
            Err(_) if retryable => {}
            Err(f) => {
                let o = outcome(f.err.kind.code(), 0, 0, up_us(up_started));
                done(&mut bufs.x.record, o);
                return Err(f);
            }
        }
        // A stale pooled connection: `req_head` is intact, try once more on a fresh one.
        tracing::debug!(upstream = %addr, "pooled upstream connection was closed; retrying on a new one");
    };
    Ok(Forwarded { _slot: slot, up, head, body_bytes, up_started, head_read })
}

/// What forwarding leaves for the response step.
struct Forwarded {
    /// Held until the exchange ends, so the connection it returns to the pool goes to the next
    /// waiter.
    _slot: Option<upstream::Slot>,
    up: Upstream,
    head: ResponseHead,
    /// Request body bytes sent.
    body_bytes: u64,
    /// When the upstream's share began (only measured when the exchange is recorded).
    up_started: Option<Instant>,
    /// The small head read used (see `splice`), if any.
    head_read: Option<usize>,
}

/// The response: its head to the client and its body as `portcullis_http1::plan::plan_body` says, then the
/// upstream connection back to the pool when it can be reused.
async fn respond(
    ex: &Ex<'_>,
    client: &mut Stream,
    bufs: &mut Bufs,
    req: &Request<'_>,
    fwd: Forwarded,
) -> Result<Next, Failure> {
    let (worker, snap, started) = (ex.worker, ex.snap, ex.started);
    let cfg = &snap.config.proxy;
    let routed = &req.routed;
    let meta = *req.meta();
    let api = snap.api(routed.api);
    let done = |rec: &mut Vec<u8>, o: Outcome| record(worker, rec, &api.api_id, meta.method, started, o);
    let Forwarded { _slot, mut up, head, body_bytes, up_started, head_read } = fwd;
    let up_us = |t: Option<Instant>| t.map_or(0, |t| t.elapsed().as_micros() as u64);
    let splice_min = if client.is_tls() || up.stream.is_tls() { 0 } else { cfg.splice_min_body as u64 };
    let api_index = routed.api as usize;

    // 3. Response.
    let mut resp = head.meta;
    let mut queued = head.queued;
    if let Some(v) = head.verbatim {
        worker.splice.hints.note_verbatim(snap.generation, api_index, v);
    }
    let upstream_us = up_us(up_started);
    let body_in = meta.head_len as u64 + body_bytes;
    if resp.switching {
        let head_out = bufs.x.out.len() as u64;
        write_vec(client, &mut bufs.x.out)
            .await
            .map_err(|e| ProxyError::io(ErrorKind::ClientIo, "writing 101 to client", e))?;
        done(&mut bufs.x.record, outcome(101, body_in, head_out, upstream_us));
        return Ok(Next::Tunnel(up));
    }
    // Tyk's `error_overrides` on an upstream 4xx/5xx, when the API has rules for its status.
    if let Some(ov) = api.error_overrides.as_deref().filter(|o| o.has_upstream_rules(resp.status)) {
        if queued {
            // A peeked head: take it out of the socket, as after a read.
            unqueue_head(&mut bufs.x.upstream, &up, resp.head_len)?;
            queued = false;
        }
        let timeout = Duration::from_millis(cfg.upstream_response_timeout_ms);
        let head_request = meta.method == Method::Head;
        let media = bufs.x.errors.media;
        let (b, stream) = (&mut bufs.x, &mut up.stream);
        let applied = Box::pin(super::upstream_override::apply(
            ov,
            &mut resp,
            stream,
            &mut b.upstream,
            &mut b.out,
            media,
            head_request,
            timeout,
        ))
        .await;
        match applied {
            Err(e) => {
                done(&mut bufs.x.record, outcome(e.kind.code(), body_in, 0, upstream_us));
                return Err(e.into());
            }
            Ok(super::upstream_override::Applied::Pass) => {}
            Ok(super::upstream_override::Applied::Replaced { upstream_done }) => {
                let out_len = bufs.x.out.len() as u64;
                write_vec(client, &mut bufs.x.out).await.map_err(|e| Failure {
                    err: ProxyError::io(ErrorKind::ClientIo, "writing response", e),
                    responded: true,
                })?;
                let finished = done(&mut bufs.x.record, outcome(resp.status, body_in, out_len, upstream_us));
                if upstream_done && resp.upstream_reusable && bufs.x.upstream.is_empty() {
                    worker.pool.put(up, cfg.upstream_pool_size, cfg.upstream_pool_surplus_ms == 0, finished);
                }
                return Ok(if resp.close_client || worker.shutdown.is_set() { Next::Close } else { Next::KeepAlive });
            }
        }
    }
    // A response-cache miss: a response that may be kept is read whole, kept and sent.
    if let (Some(fill), Some(rules)) = (bufs.x.cache.take(), &api.cache) {
        let n = match resp.body {
            BodyKind::None => Some(0),
            BodyKind::Length(n) => Some(n),
            _ => None,
        };
        let max = cfg.response_cache_max_entry_bytes as u64;
        let fits = n.filter(|n| (bufs.x.out.len() as u64).saturating_add(*n) <= max);
        if let Some(n) = fits {
            if let Some(ttl) = super::cache::storable(rules, &fill, resp.status, &bufs.x.out) {
                let kept = Keep { fill: *fill, ttl, n: n as usize, queued, body_in, upstream_us };
                return Box::pin(fill_respond(ex, client, bufs, &meta, &api.api_id, &resp, up, kept)).await;
            }
        }
    }
    let head_out = bufs.x.out.len() as u64;
    // A body already read with the head goes out in the same write as the head: the smaller of
    // the two is copied next to the other (a large body stays where it was read, the new head
    // taking the place of the upstream head in front of it).
    if let BodyKind::Length(n) = resp.body {
        if splice_min > 0 {
            worker.splice.hints.note(snap.generation, api_index, n >= splice_min + super::splice::HEAD_READ as u64);
        }
    }
    // How the body leaves (`portcullis_http1::plan::plan_body`), planned again without pipes when none can be had
    // and after a short body's rest has been read.
    let mut facts = BodyFacts {
        body: resp.body,
        queued,
        have: 0,
        splice_min,
        pipes: splice_min > 0,
        small_head_read: head_read.is_some(),
        buffer_max: bufs.x.upstream.max() as u64,
        head_out: bufs.x.out.len(),
        room_in_front: 0,
    };
    // A sampled exchange (API visibility) whose body is wanted is read whole and copied, not
    // spliced: only sampled exchanges pay for it.
    if let (false, BodyKind::Length(n)) = (bufs.x.sample.is_empty(), resp.body) {
        let head: &[u8] = if facts.queued { bufs.x.upstream.data() } else { &bufs.x.out };
        if n <= facts.buffer_max && super::record::sample_wants_body(api, head, n) {
            if facts.queued {
                unqueue_head(&mut bufs.x.upstream, &up, resp.head_len)?;
                facts.queued = false;
            }
            facts.pipes = false;
            facts.small_head_read = true;
        }
    }
    let mut pipe = None;
    let plan = loop {
        facts.have = if facts.queued { 0 } else { bufs.x.upstream.len() as u64 };
        facts.room_in_front = bufs.x.upstream.consumed();
        let plan = plan_body(&facts);
        if plan.needs_pipe() {
            pipe = worker.splice.prepare(&up.stream, &mut up.nonblocking, client, &mut bufs.nonblocking);
            if pipe.is_some() {
                break plan;
            }
            facts.pipes = false;
            if facts.queued {
                // No pipe: take the peeked bytes out of the socket and go on as after a read.
                unqueue_head(&mut bufs.x.upstream, &up, resp.head_len)?;
                facts.queued = false;
            }
            continue;
        }
        if plan == BodyPlan::ReadRest {
            let BodyKind::Length(n) = resp.body else { break BodyPlan::Relay(resp.body) };
            read_body_rest(&mut up.stream, &mut bufs.x.upstream, n as usize, cfg.upstream_response_timeout_ms)
                .await
                .map_err(|e| Failure { err: e.into_proxy_error(Side::Upstream), responded: false })?;
            facts.small_head_read = false;
            continue;
        }
        break plan;
    };
    // The head goes with the body bytes already read: the smaller of the two is copied next to
    // the other (a large body stays where it was read, the client head taking the place of the
    // upstream head in front of it).
    let (whole, with_head, placement, body_kind) = match plan {
        BodyPlan::SpliceWhole => (true, 0, Placement::Copied, BodyKind::None),
        BodyPlan::Splice { with_head, placement } => (false, with_head, placement, BodyKind::None),
        BodyPlan::WithHead { n, placement } => (false, n, placement, BodyKind::None),
        BodyPlan::Relay(kind) => (false, 0, Placement::Copied, kind),
        // Not left by the loop above (it reads the rest and plans again).
        BodyPlan::ReadRest => (false, 0, Placement::Copied, resp.body),
    };
    let written_with_head = with_head;
    let spliced = match (plan, resp.body) {
        (BodyPlan::SpliceWhole, BodyKind::Length(n)) => resp.head_len as u64 + n,
        (BodyPlan::Splice { with_head, .. }, BodyKind::Length(n)) => n - with_head,
        _ => 0,
    };
    let in_place = placement == Placement::InPlace;
    if with_head > 0 && !in_place {
        let w = with_head as usize;
        bufs.x.out.extend_from_slice(&bufs.x.upstream.data()[..w]);
        bufs.x.upstream.consume(w);
    }
    let head_out = if whole { resp.head_len as u64 } else { head_out };
    if !bufs.x.record.is_empty() && super::record::detailed(snap, api, routed.identity.as_ref()) {
        // Detailed recording: the head and the body bytes held now (a spliced body's rest is
        // never in user space).
        let x = &mut bufs.x;
        let (a, b): (&[u8], &[u8]) = if whole { (x.upstream.data(), &[]) } else { (&x.out, x.upstream.data()) };
        super::record::record_response(worker, snap, api, &mut x.record, a, b);
    }
    if !bufs.x.sample.is_empty() {
        let x = &mut bufs.x;
        let (a, b): (&[u8], &[u8]) = if whole { (x.upstream.data(), &[]) } else { (&x.out, x.upstream.data()) };
        super::record::finish_sample(worker, api, &mut x.sample, a, b);
    }
    let relayed = if let Some(pipe) = pipe {
        // The head and the body bytes read with it leave with the first spliced bytes.
        ensure_nodelay(client, bufs);
        let timeout = Duration::from_millis(cfg.upstream_response_timeout_ms);
        let w = written_with_head as usize;
        let head: &[u8] = if whole {
            &[]
        } else if in_place {
            bufs.x.upstream.prefixed(&bufs.x.out, w)
        } else {
            &bufs.x.out
        };
        let r = Box::pin(super::splice::relay(&worker.splice, pipe, &up.stream, client, head, spliced, timeout)).await;
        if whole {
            // The peeked copy: its bytes left by splice.
            bufs.x.upstream.consume(bufs.x.upstream.len());
        } else if in_place {
            bufs.x.upstream.consume(w);
        }
        bufs.x.out.clear();
        // Body bytes, as for the other paths.
        let r = r.map(|n| if whole { n - head_out } else { n });
        if let Ok(n) = r {
            let mut stats = worker.stats.borrow_mut();
            stats.bodies_spliced += 1;
            stats.bytes_spliced += n;
        }
        r
    } else {
        if body_kind != BodyKind::None {
            ensure_nodelay(client, bufs);
        }
        let wrote = if in_place {
            let r = bufs.x.upstream.write_prefixed(client, &bufs.x.out, written_with_head as usize).await;
            bufs.x.out.clear();
            r
        } else {
            write_vec(client, &mut bufs.x.out).await
        };
        wrote.map_err(|e| Failure {
            err: ProxyError::io(ErrorKind::ClientIo, "writing response head", e),
            responded: true,
        })?;
        // Boxed for the reason given in `send_request`; bodies that arrived with the head (most
        // small responses) need no relay at all.
        if body_kind == BodyKind::None {
            Ok(0)
        } else {
            Box::pin(body::relay(
                &mut up.stream,
                &mut bufs.x.upstream,
                client,
                body_kind,
                Side::Upstream,
                Duration::from_millis(cfg.upstream_response_timeout_ms),
                0,
                resp.dechunk,
                None,
            ))
            .await
        }
    };
    let body_out = match relayed {
        Ok(n) => n + written_with_head,
        Err(e) => {
            let o = outcome(resp.status, body_in, head_out, upstream_us);
            done(&mut bufs.x.record, o);
            return Err(Failure { err: e.into_proxy_error(Side::Upstream), responded: true });
        }
    };
    let o = outcome(resp.status, body_in, head_out + body_out, upstream_us);
    let finished = done(&mut bufs.x.record, o);
    if resp.upstream_reusable && bufs.x.upstream.is_empty() {
        worker.pool.put(up, cfg.upstream_pool_size, cfg.upstream_pool_surplus_ms == 0, finished);
    }
    Ok(if resp.close_client || worker.shutdown.is_set() { Next::Close } else { Next::KeepAlive })
}

/// A response the response cache keeps (see [`fill_respond`]).
struct Keep {
    fill: super::cache::Fill,
    ttl: u64,
    /// Body bytes.
    n: usize,
    /// The head was peeked (still queued in the upstream socket).
    queued: bool,
    body_in: u64,
    upstream_us: u64,
}

/// A response the response cache keeps: its body read whole (it fits
/// `response_cache_max_entry_bytes`), kept with the client head, and sent with it.
async fn fill_respond(
    ex: &Ex<'_>,
    client: &mut Stream,
    bufs: &mut Bufs,
    meta: &RequestMeta,
    api_id: &str,
    resp: &ResponseMeta,
    mut up: Upstream,
    k: Keep,
) -> Result<Next, Failure> {
    let (worker, snap, started) = (ex.worker, ex.snap, ex.started);
    let cfg = &snap.config.proxy;
    let done = |rec: &mut Vec<u8>, o: Outcome| record(worker, rec, api_id, meta.method, started, o);
    let x = &mut bufs.x;
    if k.queued {
        // A peeked head: take it out of the socket, as after a read.
        let peeked = x.upstream.len();
        if let Err(e) = x.upstream.unqueue_peeked(&up.stream, peeked) {
            done(&mut x.record, outcome(ErrorKind::UpstreamProtocol.code(), k.body_in, 0, k.upstream_us));
            return Err(ProxyError::io(ErrorKind::UpstreamProtocol, "reading upstream response", e).into());
        }
        x.upstream.consume(resp.head_len);
    }
    if x.upstream.len() < k.n {
        let timeout = cfg.upstream_response_timeout_ms;
        if let Err(e) = read_body_rest(&mut up.stream, &mut x.upstream, k.n, timeout).await {
            let e = e.into_proxy_error(Side::Upstream);
            done(&mut x.record, outcome(e.kind.code(), k.body_in, 0, k.upstream_us));
            return Err(e.into());
        }
    }
    let mut kept = Vec::with_capacity(x.out.len() + k.n);
    kept.extend_from_slice(&x.out);
    kept.extend_from_slice(&x.upstream.data()[..k.n]);
    x.out.extend_from_slice(&x.upstream.data()[..k.n]);
    x.upstream.consume(k.n);
    if x.upstream.is_empty() && x.upstream.capacity() > 2 * x.upstream.max() {
        // Grown past its size for this body: not kept in the worker's pool at that size.
        x.upstream = ReadBuf::unallocated(x.upstream.max());
    }
    super::cache::store(worker, snap, k.fill, kept, k.ttl);
    let out_len = x.out.len() as u64;
    let wrote = write_vec(client, &mut x.out).await;
    let finished = done(&mut x.record, outcome(resp.status, k.body_in, out_len, k.upstream_us));
    wrote.map_err(|e| Failure { err: ProxyError::io(ErrorKind::ClientIo, "writing response", e), responded: true })?;
    if resp.upstream_reusable && x.upstream.is_empty() {
        worker.pool.put(up, cfg.upstream_pool_size, cfg.upstream_pool_surplus_ms == 0, finished);
    }
    Ok(if resp.close_client || worker.shutdown.is_set() { Next::Close } else { Next::KeepAlive })
}

/// Writes the upstream head (already in `bufs.x.out`) and relays the request body. Returns request
/// body bytes. On success `bufs.x.out` is empty.
async fn send_request(
    worker: &Worker,
    snap: &Snapshot,
    client: &mut Stream,
    up: &mut Upstream,
    bufs: &mut Bufs,
    meta: &RequestMeta,
    clock: Option<body::BodyClock>,
) -> Result<u64, Failure> {
    let cfg = &snap.config.proxy;
    let _ = worker;
    let mut body = meta.body;
    let mut sent_with_head = 0u64;
    if meta.expect_continue {
        let mut cont = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        write_vec(client, &mut cont)
            .await
            .map_err(|e| ProxyError::io(ErrorKind::ClientIo, "writing 100 Continue", e))?;
    } else if let BodyKind::Length(n) = body {
        // A body already read with the head goes out in the same write.
        if (bufs.client.len() as u64) >= n {
            sent_with_head = n;
            body = BodyKind::None;
        }
    }
    let head_len = bufs.x.req_head.len();
    if sent_with_head > 0 {
        bufs.x.req_head.extend_from_slice(&bufs.client.data()[..sent_with_head as usize]);
    }
    let len = bufs.x.req_head.len();
    let res = super::io::write_span(&mut up.stream, &mut bufs.x.req_head, 0..len).await;
    // Keep the head (without body) for a retry on a fresh connection.
    bufs.x.req_head.truncate(head_len);
    if let Err(e) = res {
        return Err(ProxyError::io(ErrorKind::UpstreamProtocol, "writing request to upstream", e).into());
    }
    bufs.client.consume(sent_with_head as usize);
    // A body still to stream is relayed by a boxed future: inlined, its 1.3 KB state would be
    // part of every connection's task, idle or not (the task went from 3,840 to 3,712 bytes when
    // it was boxed; docs/decisions/0006-memory-per-connection.md has today's size).
    let relayed = if body == BodyKind::None {
        Ok(0)
    } else {
        Box::pin(body::relay(
            client,
            &mut bufs.client,
            &mut up.stream,
            body,
            Side::Client,
            Duration::from_millis(cfg.client_idle_timeout_ms),
            cfg.max_request_body_size,
            false,
            clock,
        ))
        .await
    };
    match relayed {
        Ok(n) => Ok(n + sent_with_head),
        Err(e) => {
            let err = e.into_proxy_error(Side::Client);
            // Past this point a retry would resend a body we no longer have.
            Err(Failure { err, responded: false })
        }
    }
}

/// Whether some of the request body is still to be read from the client.
fn body_to_read(body: BodyKind, buffered: usize) -> bool {
    match body {
        BodyKind::Length(n) => n > buffered as u64,
        BodyKind::Chunked => true,
        BodyKind::None | BodyKind::UntilClose => false,
    }
}

/// Reads the request body into the client buffer if it is at most `request_buffer_size` bytes
/// (chunked: until it ends or passes that size). `Ok(true)`: the whole body is buffered;
/// `Ok(false)`: it is larger and will be streamed. Answers `Expect: 100-continue` first (and
/// clears `expect_continue`) when it reads anything.
async fn buffer_body(
    client: &mut Stream,
    bufs: &mut Bufs,
    body: BodyKind,
    expect_continue: &mut bool,
    cfg: &crate::config::ProxyConfig,
    clock: Option<body::BodyClock>,
) -> Result<bool, ProxyError> {
    let limit = cfg.request_buffer_size;
    if limit == 0 || matches!(body, BodyKind::Length(n) if n > limit as u64) {
        return Ok(false);
    }
    if *expect_continue {
        let mut cont = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        write_vec(client, &mut cont)
            .await
            .map_err(|e| ProxyError::io(ErrorKind::ClientIo, "writing 100 Continue", e))?;
        *expect_continue = false;
        ensure_nodelay(client, bufs);
    }
    let idle = Duration::from_millis(cfg.client_idle_timeout_ms);
    let read = |e: body::RelayError| e.into_proxy_error(Side::Client);
    let rbuf = &mut bufs.client;
    match body {
        BodyKind::Length(n) => {
            let n = n as usize;
            while rbuf.len() < n {
                // Grown as bytes arrive, not to the declared size: a head alone costs no memory.
                rbuf.reserve((n - rbuf.len()).min(16 * 1024));
                let have = rbuf.len() as u64;
                body::read_body(client, rbuf, idle, clock, have, ErrorKind::ClientIo, ErrorKind::ClientIo)
                    .await
                    .map_err(read)?;
            }
            Ok(true)
        }
        BodyKind::Chunked => {
            let mut scanner = portcullis_http1::chunked::ChunkedScanner::default();
            let mut scanned = 0;
            loop {
                let scan = scanner
                    .scan(&rbuf.data()[scanned..], |_| {})
                    .map_err(|c| ProxyError::new(ErrorKind::BadRequest, c))?;
                scanned += scan.consumed;
                if scan.done {
                    return Ok(true);
                }
                if scanned >= limit {
                    return Ok(false);
                }
                rbuf.reserve(16 * 1024);
                body::read_body(client, rbuf, idle, clock, scanned as u64, ErrorKind::ClientIo, ErrorKind::ClientIo)
                    .await
                    .map_err(read)?;
            }
        }
        BodyKind::None | BodyKind::UntilClose => Ok(true),
    }
}

/// One request body a client IP is streaming to an upstream (counted in
/// `Worker::streaming_bodies` while it lives).
struct StreamingBody<'w> {
    worker: &'w Worker,
    ip: std::net::IpAddr,
}

impl<'w> StreamingBody<'w> {
    /// `None` when `ip` already streams `cap` bodies on this worker (`cap` 0: no cap).
    fn start(worker: &'w Worker, ip: std::net::IpAddr, cap: usize) -> Option<Self> {
        let mut map = worker.streaming_bodies.borrow_mut();
        let n = map.entry(ip).or_insert(0);
        if cap > 0 && *n as usize >= cap {
            if *n == 0 {
                map.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(StreamingBody { worker, ip })
    }
}

impl Drop for StreamingBody<'_> {
    fn drop(&mut self) {
        let mut map = self.worker.streaming_bodies.borrow_mut();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Reads until `rbuf` holds `n` bytes (a body's rest after a short head read; `n` fits the
/// buffer), waiting at most `timeout_ms` per read.
async fn read_body_rest(
    up: &mut Stream,
    rbuf: &mut ReadBuf,
    n: usize,
    timeout_ms: u64,
) -> Result<(), body::RelayError> {
    rbuf.reserve(n - rbuf.len());
    let timeout = Duration::from_millis(timeout_ms);
    while rbuf.len() < n {
        body::read_more(up, rbuf, timeout, ErrorKind::UpstreamProtocol, ErrorKind::UpstreamTimeout).await?;
    }
    Ok(())
}

/// How [`read_response_head`] reads (see `splice`).
struct HeadRead {
    /// Caps the first read ([`super::splice::HEAD_READ`] for an API with large bodies).
    cap: Option<usize>,
    /// Peek the first (capped) read: the API's heads have gone out unchanged.
    peek: bool,
    /// `proxy.splice_min_body`.
    splice_min: u64,
}

/// What [`read_response_head`] found.
struct ResponseHead {
    meta: ResponseMeta,
    /// For a capped read: whether the response could be spliced whole, its head unchanged
    /// ([`portcullis_http1::forwards_verbatim`]) and its `Content-Length` body worth splicing. A response
    /// that could not (a rewritten head, a small or chunked body, a HEAD request) counts
    /// against peeking the API's next head, as a peek would have cost it one more call.
    verbatim: Option<bool>,
    /// The head passes unchanged and a `Content-Length` body worth splicing follows, and the
    /// bytes in `bufs.x.upstream` were peeked: they are all still queued in the upstream socket,
    /// head first, for head and body to be spliced together. Otherwise the head is consumed.
    queued: bool,
}

/// Reads the upstream response head, skipping 1xx informational responses, and writes the
/// client's response head into `bufs.x.out`.
async fn read_response_head(
    snap: &Snapshot,
    up: &mut Upstream,
    bufs: &mut Bufs,
    meta: &RequestMeta,
    limits: &crate::limit::LimitHeaders,
    expires: Option<&str>,
    worker: &Worker,
    how: HeadRead,
) -> Result<ResponseHead, ProxyError> {
    let cfg = &snap.config.proxy;
    let timeout = Duration::from_millis(cfg.upstream_response_timeout_ms);
    let check_verbatim = how.cap.is_some();
    let mut cap = how.cap;
    // Bytes at the end of the buffer that a peek left queued in the socket.
    let mut peeked = 0;
    loop {
        bufs.x.out.clear();
        // Read when the head is there, not when the request went out: a drain that began while
        // the upstream worked must still say `Connection: close` on this response, or the
        // client sends its next request into a connection about to close.
        let client_keep_alive = meta.keep_alive && !worker.shutdown.is_set();
        let prepared = portcullis_http1::prepare_response(
            bufs.x.upstream.data(),
            cfg.max_headers,
            meta,
            client_keep_alive,
            phase::rate::is_limit_header,
            |out| {
                phase::rate::write_response_headers(out, limits, cfg.rate_limit_response_headers);
                write_expires(out, expires);
            },
            &mut bufs.x.out,
        )?;
        // Whether head and body could leave together: a head that passes unchanged and a
        // `Content-Length` body worth splicing. Only checked for a capped read.
        let verbatim = match &prepared {
            PreparedResponse::Ready(r) if check_verbatim => Some({
                let body_have = (bufs.x.upstream.len() - r.head_len) as u64;
                matches!(r.body, BodyKind::Length(n) if n > body_have && n - body_have >= how.splice_min)
                    && portcullis_http1::forwards_verbatim(&bufs.x.upstream.data()[..r.head_len], &bufs.x.out, r)
            }),
            _ => None,
        };
        let whole = peeked > 0 && verbatim == Some(true);
        if peeked > 0 && !whole {
            // A peek is kept only for a response that goes whole; otherwise its bytes leave the
            // socket now, as after a plain read.
            bufs.x
                .upstream
                .unqueue_peeked(&up.stream, std::mem::take(&mut peeked))
                .map_err(|e| ProxyError::io(ErrorKind::UpstreamProtocol, "reading upstream response", e))?;
        }
        match prepared {
            PreparedResponse::Ready(r) => {
                if !whole {
                    bufs.x.upstream.consume(r.head_len);
                }
                return Ok(ResponseHead { meta: r, verbatim, queued: whole });
            }
            PreparedResponse::Informational { head_len } => {
                bufs.x.upstream.consume(head_len);
                continue;
            }
            PreparedResponse::Partial => {}
        }
        if bufs.x.upstream.len() >= cfg.max_response_head_size {
            return Err(ProxyError::new(ErrorKind::UpstreamProtocol, "upstream response head too large"));
        }
        bufs.x.upstream.reserve_for_head(cfg.max_response_head_size);
        // Nothing of the response yet: the upstream is still working on the request just sent.
        let expect_empty = bufs.x.upstream.is_empty();
        // Only the first read is capped (a head longer than the cap is read whole), and only a
        // first read into an empty buffer peeks.
        let cap = cap.take();
        let peek = how.peek && cap.is_some() && expect_empty;
        let read = async {
            match cap {
                Some(cap) if peek => bufs.x.upstream.peek_socket_at_most(&mut up.stream, expect_empty, cap).await,
                Some(cap) => bufs.x.upstream.fill_socket_at_most(&mut up.stream, expect_empty, cap).await,
                None => bufs.x.upstream.fill_socket(&mut up.stream, expect_empty).await,
            }
        };
        match monoio::time::timeout(timeout, read).await {
            Ok(Ok(n)) if n > 0 => {
                if peek {
                    peeked = n;
                }
            }
            Ok(Ok(_)) => return Err(ProxyError::new(ErrorKind::UpstreamProtocol, "upstream closed before responding")),
            Ok(Err(e)) => return Err(ProxyError::io(ErrorKind::UpstreamProtocol, "reading upstream response", e)),
            Err(_) => return Err(ProxyError::new(ErrorKind::UpstreamTimeout, "upstream response timed out")),
        }
    }
}

/// Tyk's `X-Tyk-Api-Expires` (gateway/mw_version_check.go:169-173), when the API has one.
pub(super) fn write_expires(out: &mut Vec<u8>, expires: Option<&str>) {
    if let Some(e) = expires {
        out.extend_from_slice(b"X-Tyk-Api-Expires: ");
        out.extend_from_slice(e.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// How long a host name that did not resolve is not asked again.
const DNS_NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// The address of target `index` of API `api`, whose host is a name: from the worker's cache, or
/// resolved by the control plane (the system resolver, off the worker) and kept for
/// `dns_ttl_secs`. A name that does not resolve fails this request (502), not the API, and is
/// not asked again for [`DNS_NEGATIVE_TTL`]. Awaited boxed, like [`resolve`].
async fn resolve_target(
    worker: &Worker,
    snap: &Snapshot,
    api: crate::router::ApiIndex,
    index: usize,
    now: Instant,
) -> Result<SocketAddr, ProxyError> {
    let lookup_failed = || ProxyError::new(ErrorKind::UpstreamLookup, "upstream host lookup failed");
    let key = (snap.generation, api, index as u32);
    if let Some(&(addr, until)) = worker.resolved.borrow().get(&key) {
        if now < until {
            return addr.ok_or_else(lookup_failed);
        }
    }
    let target = snap.api(api).target(index);
    let answer = worker.keys.resolve(&target.host, target.port).await;
    let ttl = Duration::from_secs(snap.config.proxy.dns_ttl_secs);
    let (addr, keep) = match &answer {
        Ok(a) => (Some(*a), ttl),
        Err(e) => {
            tracing::warn!(host = %target.host, error = %e, "upstream host lookup failed");
            (None, DNS_NEGATIVE_TTL)
        }
    };
    let mut cache = worker.resolved.borrow_mut();
    // Entries of older snapshots go (a reload may have changed the targets).
    cache.retain(|k, _| k.0 == snap.generation);
    if !keep.is_zero() {
        cache.insert(key, (addr, Instant::now() + keep));
    }
    addr.ok_or_else(lookup_failed)
}

/// Asks the control plane what `need` names and stores the answer in the worker's caches.
/// On failure: the client-facing message and the reason. Awaited boxed, like [`reply_local`].
async fn resolve(worker: &Worker, need: phase::Need) -> Result<(), (&'static str, String)> {
    match need {
        phase::Need::Key(lookup) => {
            worker.stats.borrow_mut().key_lookups += 1;
            let hash = lookup.hash;
            let session = worker.keys.fetch(*lookup).await.map_err(|e| ("key store unavailable", e.to_string()))?;
            let mut auth = worker.auth.borrow_mut();
            auth.set_clock(worker.epoch.elapsed());
            auth.insert_session(hash, session);
        }
        phase::Need::Password(check) => {
            let digest = check.digest;
            let ok = worker
                .keys
                .check_password(check)
                .await
                .map_err(|e| ("authentication temporarily unavailable", e.to_string()))?;
            let mut auth = worker.auth.borrow_mut();
            auth.set_clock(worker.epoch.elapsed());
            auth.remember_password_check(digest, ok);
        }
        phase::Need::Quota(quota) => {
            let r = worker
                .keys
                .reserve_quota(quota.clone())
                .await
                .map_err(|e| ("quota store unavailable", e.to_string()))?;
            let mut auth = worker.auth.borrow_mut();
            auth.set_clock(worker.epoch.elapsed());
            let now = auth.now();
            auth.quotas.store(&quota, r, now, crate::clock::unix_now());
        }
    }
    Ok(())
}

/// A response made by the proxy itself (404 no route, auth refusals, 503 key store down). A
/// request with a body closes the connection (the body is not read), one without keeps it alive.
///
/// Awaited boxed: inlined, its state was the largest in `exchange` and so sized every
/// connection's task (`-Zprint-type-sizes`: exchange 2,288 -> 1,984 bytes, task 3,096 ->
/// 2,792; c1000 6.28 -> 5.99 KiB per connection). The price is one allocation per local reply,
/// next to its socket write.
async fn reply_local(
    worker: &Worker,
    client: &mut Stream,
    bufs: &mut Bufs,
    meta: RequestMeta,
    api_id: &str,
    kind: ErrorKind,
    message: &str,
    extra: &[u8],
    ov: Option<&crate::config::Override>,
    started: Instant,
) -> Result<Next, Failure> {
    let close = meta.body != BodyKind::None || !meta.keep_alive || worker.shutdown.is_set();
    bufs.client.consume(meta.head_len);
    bufs.x.out.clear();
    let written = {
        let snap = worker.snapshot();
        let templates = Some(&*snap.error_templates);
        error_response_with(&mut bufs.x.out, kind, message, close, extra, bufs.x.errors, ov, None, templates)
    };
    if !written {
        // Not a kind with an answer (callers pass refusals, 404 and 503): nothing to send.
        return Ok(Next::Close);
    }
    let out_len = bufs.x.out.len() as u64;
    write_vec(client, &mut bufs.x.out).await.map_err(|e| Failure {
        err: ProxyError::io(ErrorKind::ClientIo, "writing a local response", e),
        responded: true,
    })?;
    record(
        worker,
        &mut bufs.x.record,
        api_id,
        meta.method,
        started,
        outcome(ov.filter(|o| o.status != 0).map_or(kind.code(), |o| o.status), meta.head_len as u64, out_len, 0),
    );
    Ok(if close { Next::Close } else { Next::KeepAlive })
}

/// A health answer written into `bufs.x.out` (see [`health_reply`]).
#[derive(Clone, Copy)]
struct HealthReply {
    code: u16,
    method: Method,
    head_len: usize,
    close: bool,
}

/// Tyk's liveness or readiness answer (see `health`), written into the exchange's output buffer.
/// Like a [`reply_local`], a request with a body closes the connection (the body is not read).
fn health_reply(
    worker: &Worker,
    bufs: &mut Bufs,
    meta: &RequestMeta,
    endpoint: super::health::Endpoint,
) -> HealthReply {
    let draining = worker.shutdown.is_set();
    let close = meta.body != BodyKind::None || !meta.keep_alive || draining;
    bufs.client.consume(meta.head_len);
    bufs.x.out.clear();
    let replies = worker.health.load();
    let code = super::health::write_reply(&mut bufs.x.out, &replies, endpoint, meta.method, draining, close);
    HealthReply { code, method: meta.method, head_len: meta.head_len, close }
}

/// The answer to an ACME HTTP-01 challenge (see `acme`), sent as a health answer is.
fn acme_reply(bufs: &mut Bufs, meta: &RequestMeta, answer: &str, draining: bool) -> HealthReply {
    let close = meta.body != BodyKind::None || !meta.keep_alive || draining;
    bufs.client.consume(meta.head_len);
    bufs.x.out.clear();
    super::acme::write_reply(&mut bufs.x.out, answer, meta.method, close);
    HealthReply { code: 200, method: meta.method, head_len: meta.head_len, close }
}

/// Sends a [`health_reply`] and counts it in the metrics with `api=""`, as other local replies;
/// it writes no request record, as Tyk's analytics never see these endpoints (they are no API).
///
/// Awaited in `serve`, after the exchange, where its state does not size the connection's task
/// (awaited in `request` or in `exchange`, even boxed, it did: the `connection task size`
/// trace), and unboxed, so a probe costs no allocation.
async fn send_health_reply(
    worker: &Worker,
    client: &mut Stream,
    bufs: &mut Bufs,
    reply: HealthReply,
    started: Instant,
) -> Result<Next, Failure> {
    let out_len = bufs.x.out.len() as u64;
    write_vec(client, &mut bufs.x.out).await.map_err(|e| Failure {
        err: ProxyError::io(ErrorKind::ClientIo, "writing a health answer", e),
        responded: true,
    })?;
    let o = outcome(reply.code, reply.head_len as u64, out_len, 0);
    record(worker, &mut Vec::new(), "", reply.method, started, o);
    Ok(if reply.close { Next::Close } else { Next::KeepAlive })
}

/// After a 101: copy bytes both ways until either side closes.
async fn tunnel(mut client: Stream, mut up: Upstream, mut bufs: Bufs) {
    let n = bufs.client.len();
    if bufs.client.write_out(&mut up.stream, n).await.is_err() {
        return;
    }
    let n = bufs.x.upstream.len();
    if bufs.x.upstream.write_out(&mut client, n).await.is_err() {
        return;
    }
    let (mut cr, mut cw) = client.into_halves();
    let (mut ur, mut uw) = up.stream.into_halves();
    let to_upstream = async {
        let _ = monoio::io::copy(&mut cr, &mut uw).await;
        let _ = uw.shutdown().await;
    };
    let to_client = async {
        let _ = monoio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    monoio::join!(to_upstream, to_client);
}
