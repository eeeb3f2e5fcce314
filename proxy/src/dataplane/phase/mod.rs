//! The request phases: what the gateway does with a parsed request head before it is forwarded,
//! each a function in its own module with a typed outcome, run in this order:
//!
//! | phase | module | outcome |
//! |---|---|---|
//! | route | [`route`] | an API (a versioned API's: the request's version's) and the canonical path, or no route (404), or Tyk's version refusal (403) |
//! | access | [`access`] | IP and path lists: through, or refused |
//! | visibility | [`visibility`] | the API's provided OpenAPI document: through, or (`enforce`) a shadow endpoint refused (404) |
//! | authenticate | [`authenticate`] | who the request runs as, refused, or a question for the control plane |
//! | rate | [`rate`] | within the rate limits, or 429 |
//! | quota | [`quota`] | a quota unit spent, exceeded, or a block to reserve |
//! | transform | [`transform`] | the header edits |
//! | rewrite | [`rewrite`] | Tyk's `url_rewrites`: the path and query the upstream gets, and its target |
//! | upstream head | [`upstream_head`] | the head the upstream gets, in the exchange's buffer |
//!
//! Forward, respond and record follow in `conn.rs` (`forward`, `respond`) and `record.rs`.
//!
//! A phase that needs the control plane (a session, a bcrypt check, a quota block) returns
//! [`Outcome::Waiting`]: what it needs, and the phase and [`Gate`] (what the earlier phases found)
//! to [`resume`] with, boxed, so only a request that waits carries them. The connection loop asks,
//! caches the answer on the worker and resumes there, with the head parsed once (its offsets are
//! in the exchange's pooled buffers): nothing is parsed or decided twice. The phases do no I/O and read no clock (the time comes in [`Env`]), so they are
//! unit tested without sockets (`tests.rs`).
//!
//! Rate before quota, as Tyk (gateway/session_manager.go:301-333): a request over both gets the
//! 429, and one the rate limits refuse spends no quota. One the quota refuses has used its rate
//! tokens, as in Tyk.
//!
//! A new step of the request path (TLS facts for auth, a plugin) is
//! a new module here and one line in [`run`], at its place in the order.

pub(crate) mod access;
pub(crate) mod authenticate;
pub(crate) mod quota;
pub(crate) mod rate;
pub(crate) mod rewrite;
pub(crate) mod route;
pub(crate) mod transform;
pub(crate) mod upstream_head;
pub(crate) mod visibility;

#[cfg(test)]
mod tests;

use portcullis_http1::{Request, RequestMeta};

use crate::auth::{self, Allowed, DecideCtx, Denial, RequestView, WorkerAuth};
use crate::config::{ApiSpec, Snapshot};
use crate::dataplane::error::ProxyError;
use crate::limit::quota::Quota;
use crate::limit::{LimitHeaders, Limiter, RateInfo};
use crate::router::ApiIndex;
use authenticate::Authenticated;
use quota::QuotaStep;
use route::Route;

/// Every target of a load-balanced API with `check_host_against_uptime_tests` is on a host its
/// uptime checks found down: Tyk's 503 and flag (reverse_proxy.go:185-187, 251-256).
fn all_hosts_down() -> Denial {
    Denial {
        kind: crate::auth::Refusal::Status(503),
        message: "all hosts are down".into(),
        flag: Some("NHU"),
        ..Default::default()
    }
}

/// Tyk's batch endpoint below an API's listen path.
pub const BATCH_PATH: &str = "/tyk/batch/";

/// The phases that can be resumed, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Access,
    Authenticate,
    Rate,
    Quota,
}

/// What the worker must ask the control plane before a phase can decide.
#[derive(Debug)]
pub enum Need {
    /// The session of this key hash (not in the worker's cache).
    Key(Box<crate::auth::KeyLookup>),
    /// Basic-auth credentials to check off the worker.
    Password(auth::PasswordCheck),
    /// A block of this quota (none held).
    Quota(Quota),
}

/// Per-connection facts the phases use.
pub struct ClientCtx<'a> {
    /// Client IP as text, for `X-Forwarded-For`.
    pub client_ip: &'a str,
    pub client_addr: std::net::IpAddr,
    /// Over TLS, the certificates the client presented (leaf first; empty: none); `None` on a
    /// plain connection. For Tyk's mutual TLS.
    pub tls_certs: Option<&'a [rustls::pki_types::CertificateDer<'static>]>,
}

/// The worker state, clock and choices the phases need.
pub struct Env<'e> {
    pub client: &'e ClientCtx<'e>,
    pub auth: &'e mut WorkerAuth,
    pub limiter: &'e mut Limiter,
    /// Unix seconds; read only for requests that need it (APIs with auth, versions that
    /// expire), not on the keyless fast path.
    pub now: &'e dyn Fn() -> u64,
    /// A new request id (when the client sent none).
    pub request_id: &'e dyn Fn() -> [u8; 32],
    /// Which of the API's targets; `None` when uptime checks found every one down.
    pub pick: &'e dyn Fn(ApiIndex, &ApiSpec) -> Option<usize>,
}

/// What the phases have found so far: kept across a control-plane round trip.
struct Gate<'a> {
    api: ApiIndex,
    /// Canonical.
    path: &'a str,
    allowed: Allowed<'a>,
    /// What the rate limits said (a request that waits for a quota block has passed them, and
    /// paid: they are not asked again).
    rate: Option<RateInfo>,
}

/// A routed request whose upstream head has been written into the exchange's buffer.
#[derive(Debug)]
pub struct Routed {
    pub meta: RequestMeta,
    pub api: ApiIndex,
    /// The target (`ApiSpec::target`: one of the API's `targets`, or where a rewrite sends it).
    pub target: usize,
    /// Who the request runs as (APIs with auth).
    pub identity: Option<auth::Identity>,
    /// Tags from `tag_headers` (`<header lower case>-<value>`), for the request record.
    pub tags: Vec<String>,
    /// The rate limit and quota that applied, for `X-RateLimit-*` on the response.
    pub limits: LimitHeaders,
}

/// What the phases decided.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Upstream head written.
    Routed(Routed),
    /// No API matches (404).
    NoRoute,
    /// Tyk's batch endpoint of this API (`<listen path>/tyk/batch/`, `enable_batch_request_support`):
    /// answered by `dataplane/batch.rs`, whose sub-requests each run every phase.
    Batch(ApiIndex),
    /// Refused by IP rules, path lists, auth, quota or rate limits.
    Denied { api: ApiIndex, denial: Denial },
    /// Ask the control plane what [`Waiting::need`] names, then [`resume`].
    Waiting(Box<Waiting<'a>>),
}

/// A request waiting for the control plane: what it needs, and where to resume.
pub struct Waiting<'a> {
    pub api: ApiIndex,
    pub at: Phase,
    /// Taken by whoever asks the control plane.
    pub need: Option<Need>,
    gate: Gate<'a>,
}

impl std::fmt::Debug for Waiting<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting").field("api", &self.api).field("at", &self.at).field("need", &self.need).finish()
    }
}

/// What [`run`] decided: an [`Outcome`] whose waiting still has to be given its gate.
enum Step {
    Done(Outcome<'static>),
    Need { at: Phase, need: Need },
}

/// Routes `req` (phase `route`), then runs the phases after it. A path rewritten to its canonical
/// form goes into `path_buf`.
/// Returns the canonical path (empty when unrouted) and the outcome.
pub fn start<'a>(
    req: &Request<'a>,
    snap: &'a Snapshot,
    path_buf: &'a mut String,
    env: &mut Env<'_>,
    out: &mut Vec<u8>,
) -> Result<(&'a str, Outcome<'a>), ProxyError> {
    let (api, path) = match route::route(snap, req, path_buf, env.now)? {
        Route::Api(api, path) => (api, path),
        Route::Refused(api, path, denial) => return Ok((path, Outcome::Denied { api, denial })),
        Route::Unrouted => return Ok(("", Outcome::NoRoute)),
    };
    // Like Tyk's route for it (gateway/server.go:1066-1070), outside the API's middleware: the
    // batch itself is not checked, each of its requests is.
    if snap.api(api).batch_requests && snap.api(api).rel_path(path) == BATCH_PATH {
        return Ok((path, Outcome::Batch(api)));
    }
    let mut gate = Gate { api, path, allowed: Allowed::default(), rate: None };
    Ok(match run(Phase::Access, &mut gate, req, snap, env, out)? {
        Step::Done(o) => (path, o),
        Step::Need { at, need } => (path, Outcome::Waiting(Box::new(Waiting { api, at, need: Some(need), gate }))),
    })
}

/// Runs the phases again from the one that waited, once the worker has the control plane's
/// answer (see [`Outcome::Waiting`]).
pub fn resume<'a>(
    mut w: Box<Waiting<'a>>,
    req: &Request<'a>,
    snap: &'a Snapshot,
    env: &mut Env<'_>,
    out: &mut Vec<u8>,
) -> Result<Outcome<'a>, ProxyError> {
    Ok(match run(w.at, &mut w.gate, req, snap, env, out)? {
        Step::Done(o) => o,
        Step::Need { at, need } => {
            (w.at, w.need) = (at, Some(need));
            Outcome::Waiting(w)
        }
    })
}

/// Runs the phases from `from` on a routed request.
fn run<'a>(
    from: Phase,
    g: &mut Gate<'a>,
    req: &Request<'a>,
    snap: &'a Snapshot,
    env: &mut Env<'_>,
    out: &mut Vec<u8>,
) -> Result<Step, ProxyError> {
    let api = snap.api(g.api);
    let meta = req.head.meta;
    if from <= Phase::Access && api.visibility.enforces() {
        if let Err(d) = visibility::check(api, req.method, api.rel_path(g.path)) {
            return Ok(Step::Done(Outcome::Denied { api: g.api, denial: d }));
        }
    }
    if api.plain {
        // Keyless, no rules, no transforms: straight to the upstream head.
        let Some(target) = (env.pick)(g.api, api) else {
            return Ok(Step::Done(Outcome::Denied { api: g.api, denial: all_hosts_down() }));
        };
        let target = target % api.targets.len();
        let tags =
            upstream_head::write(out, req, g.path, api, &api.targets[target], env.client, None, None, env.request_id);
        let routed = Routed { meta, api: g.api, target, identity: None, tags, limits: LimitHeaders::default() };
        return Ok(Step::Done(Outcome::Routed(routed)));
    }
    let a = &*api.auth;
    let rel_path = api.rel_path(g.path);
    let view = RequestView {
        method: req.method,
        path: g.path,
        rel_path,
        query: req.query,
        headers: req.headers,
        client_ip: env.client.client_addr,
    };
    let denied = |denial| Ok(Step::Done(Outcome::Denied { api: g.api, denial }));
    let need = |at, need| Ok(Step::Need { at, need });
    if from <= Phase::Access {
        if let Err(d) = access::check(a, &view) {
            return denied(d);
        }
        // Tyk's certificate check (mw_certificate_check.go), before any credential.
        if let Some(m) = &api.mutual_tls {
            let now = i64::try_from((env.now)()).unwrap_or(i64::MAX);
            if let Err(r) = m.check(env.client.tls_certs, now) {
                return denied(Denial {
                    kind: auth::Refusal::Forbidden,
                    message: r.message().into(),
                    ..Default::default()
                });
            }
        }
    }
    if from <= Phase::Authenticate {
        let cx = DecideCtx {
            api_id: &api.api_id,
            api_org: &api.org_id,
            api_index: g.api,
            generation: snap.generation,
            policies: &snap.policies,
            now: (env.now)(),
            tyk_key_hashes: &snap.tyk_key_hashes,
        };
        match authenticate::run(a, &view, cx, env.auth) {
            Authenticated::Allowed(allowed) => g.allowed = allowed,
            Authenticated::Denied(d) => return denied(d),
            Authenticated::Need(n) => return need(Phase::Authenticate, n),
        }
    }
    if from <= Phase::Rate {
        match rate::check(snap, api, &g.allowed, req.method, rel_path, g.path, env.client.client_addr, env.limiter) {
            Ok(rate) => g.rate = rate,
            Err(d) => return denied(d),
        }
    }
    let mut limits = LimitHeaders { rate: g.rate, quota: None, identified: g.allowed.identity.is_some() };
    match quota::check(api, g.allowed.identity.as_ref(), env.auth) {
        QuotaStep::None => {}
        QuotaStep::Held(q, mut info) => {
            quota::spend(&q, &mut info, env.auth);
            limits.quota = Some(info);
        }
        QuotaStep::Denied(mut d) => {
            d.rate = g.rate;
            return denied(d);
        }
        QuotaStep::Need(n) => return need(Phase::Quota, n),
    }
    let Some(target) = (env.pick)(g.api, api) else {
        return denied(all_hosts_down());
    };
    let target = target % api.targets.len();
    // The request id is needed before the headers for `$tyk_context.request_id`.
    let generated;
    let rid: &[u8] = match req.request_id() {
        Some(v) => v,
        None => {
            generated = (env.request_id)();
            &generated
        }
    };
    let allowed = std::mem::take(&mut g.allowed);
    let edits = transform::edits(a, &allowed, req, g.path, rel_path, rid);
    let rewritten = match rewrite::rewrite(api, req, &edits, g.path, rel_path, env.client.client_addr) {
        Ok(r) => r,
        Err(d) => {
            drop(edits);
            return denied(d);
        }
    };
    // A rewrite to an absolute URL goes to its own target, after the API's.
    let target = match rewritten.as_ref().and_then(|r| r.target) {
        Some(i) => api.targets.len() + i,
        None => target,
    };
    let tags = upstream_head::write(
        out,
        req,
        g.path,
        api,
        api.target(target),
        env.client,
        Some(&edits),
        rewritten.as_ref(),
        || [0; 32],
    );
    drop(edits);
    Ok(Step::Done(Outcome::Routed(Routed { meta, api: g.api, target, identity: allowed.identity, tags, limits })))
}
