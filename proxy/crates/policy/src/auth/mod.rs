//! Authentication and access control for one request: IP rules, path lists, the API's auth
//! methods (token, JWT, basic, HMAC signatures, chained), sessions and policies, access rights.
//!
//! [`decide`] is a pure function of the request head, the API's compiled [`ApiAuth`], the
//! snapshot's policies and the worker's own caches ([`WorkerAuth`]). When a session is not
//! cached it answers [`Decision::NeedKey`]; the connection loop fetches the session from the
//! control plane's key store (the only wait, and never on the network from the worker) and
//! asks again. Status codes and messages follow Tyk (401 when credentials are missing, 403 when
//! they are wrong or not allowed). Must not: do I/O, lock, or log credentials.

pub mod basic;
pub mod cache;
pub mod jwt;
pub mod policy;
pub mod session;
pub mod signature;
pub mod token;
pub mod transform;
pub mod tyk_key;

use std::borrow::Cow;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use sha2::{Digest, Sha256};

pub use cache::{CacheLimits, Invalidation, WorkerAuth};
pub use policy::{Grant, Policies};
pub use session::Session;

use cache::Cached;
use jwt::Claims;
use token::{CredentialSource, Found};
use transform::Template;

/// SHA-256 of a key: how keys are stored, cached and shown (`key_hash`).
pub type KeyHash = [u8; 32];

/// Hashes a key (or a basic-auth user name) for storage. SHA-256, hex-encoded when shown.
pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// Lower-case hex of a hash.
pub fn hex(h: &KeyHash) -> String {
    portcullis_http1::digits::hex64(h).iter().map(|&b| b as char).collect()
}

/// Parses 64 hex digits.
pub fn parse_hex(s: &str) -> Option<KeyHash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// An auth method (Tyk's names in `base_identity_provided_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `auth_token`
    Token,
    /// `jwt_claim`
    Jwt,
    /// `basic_auth_user`
    Basic,
    /// `hmac_key`
    Hmac,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "auth_token" => Method::Token,
            "jwt_claim" => Method::Jwt,
            "basic_auth_user" => Method::Basic,
            "hmac_key" => Method::Hmac,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Token => "auth_token",
            Method::Jwt => "jwt_claim",
            Method::Basic => "basic_auth_user",
            Method::Hmac => "hmac_key",
        }
    }
}

/// JWT settings of an API.
#[derive(Debug, Clone)]
pub struct JwtSpec {
    pub family: jwt::Family,
    /// Static keys, or the last JWKS fetched by the control plane.
    pub keys: Arc<ArcSwap<jwt::KeySet>>,
    /// JWKS URL when the keys come from one.
    pub jwks_url: Option<String>,
    pub source: CredentialSource,
    /// Claim naming the identity (`sub` when empty or absent from the token).
    pub identity_field: String,
    /// Claim naming the policy (or policies) to apply; empty: defaults only.
    pub policy_field: String,
    pub default_policies: Vec<String>,
    pub skew: jwt::Skew,
}

/// HMAC request-signing settings of an API.
#[derive(Debug, Clone, Default)]
pub struct HmacSpec {
    /// Allowed algorithms (`hmac-sha256` ...); empty: all.
    pub allowed: Vec<String>,
    /// Allowed difference between `Date` and now, ms; `<= 0`: not checked.
    pub clock_skew_ms: f64,
}

pub use crate::path_rule::PathRule;

/// One `transform_headers` entry.
#[derive(Debug, Clone)]
pub struct HeaderTransform {
    pub rule: PathRule,
    /// Lower case.
    pub delete: Vec<String>,
    pub add: Vec<(String, Template)>,
}

/// Header transforms of an API.
#[derive(Debug, Clone, Default)]
pub struct Transforms {
    pub global_add: Vec<(String, Template)>,
    /// Lower case.
    pub global_remove: Vec<String>,
    pub per_path: Vec<HeaderTransform>,
    /// Request headers whose values become record tags (`<name lower case>-<value>`).
    pub tag_headers: Vec<String>,
}

impl Transforms {
    pub fn is_empty(&self) -> bool {
        self.global_add.is_empty()
            && self.global_remove.is_empty()
            && self.per_path.is_empty()
            && self.tag_headers.is_empty()
    }
}

/// Everything an API definition says about who may call it and how requests are changed.
/// A versioned API has one per version (cloned, with the version's own lists).
#[derive(Debug, Clone, Default)]
pub struct ApiAuth {
    pub keyless: bool,
    /// The request's version (the version this `ApiAuth` is compiled for), checked against
    /// `access_rights.versions`; `None`: the API is not versioned, and Tyk checks no key's
    /// versions then (mw_access_rights.go:39-41).
    pub version: Option<String>,
    /// A URL-parameter versioned API with `strip_versioning_data`: the upstream gets the query
    /// without this parameter, re-encoded as Go does ([`crate::version::query_encoded_without`]).
    pub strip_version_param: Option<String>,
    pub token: Option<CredentialSource>,
    pub jwt: Option<JwtSpec>,
    pub basic: Option<CredentialSource>,
    pub hmac: Option<HmacSpec>,
    /// Chained auth: the method whose identity (and session) the request is served under.
    pub base_identity: Option<Method>,
    pub strip_auth_data: bool,
    /// `enable_ip_whitelisting`: only these networks (when `Some`).
    pub ip_allow: Option<Vec<IpNet>>,
    /// `enable_ip_blacklisting`: never these networks.
    pub ip_deny: Vec<IpNet>,
    /// `size_limits` and `global_size_limit` of the version (the default one when not versioned).
    pub size_limits: SizeLimits,
    /// The version's path lists, checked as Tyk's `URLAllowedAndIgnored` does
    /// ([`ApiAuth::path_status`]).
    pub ignored: Vec<PathRule>,
    pub white_list: Vec<PathRule>,
    pub black_list: Vec<PathRule>,
    pub transforms: Transforms,
}

impl ApiAuth {
    /// Keyless, no IP rules, no path lists, no transforms: the proxy's fast path.
    pub fn is_plain(&self) -> bool {
        self.keyless
            && self.ip_allow.is_none()
            && self.ip_deny.is_empty()
            && self.ignored.is_empty()
            && self.white_list.is_empty()
            && self.black_list.is_empty()
            && self.transforms.is_empty()
            && self.size_limits.is_empty()
            && self.strip_version_param.is_none()
    }

    /// The enabled methods with their settings, in checking order.
    fn methods(&self) -> impl Iterator<Item = MethodSpec<'_>> + '_ {
        [
            self.hmac.as_ref().map(MethodSpec::Hmac),
            self.basic.as_ref().map(MethodSpec::Basic),
            self.token.as_ref().map(MethodSpec::Token),
            self.jwt.as_ref().map(MethodSpec::Jwt),
        ]
        .into_iter()
        .flatten()
    }
}

/// An enabled auth method and its settings.
#[derive(Clone, Copy)]
enum MethodSpec<'a> {
    Token(&'a CredentialSource),
    Jwt(&'a JwtSpec),
    Basic(&'a CredentialSource),
    Hmac(&'a HmacSpec),
}

/// The parts of a request head auth looks at.
pub struct RequestView<'a> {
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// Path below the listen path (always starts with `/`).
    pub rel_path: &'a str,
    /// `""` or `?...`.
    pub query: &'a str,
    pub headers: portcullis_http1::Headers<'a>,
    pub client_ip: IpAddr,
}

/// Who the request is served as.
#[derive(Debug, Clone)]
pub struct Identity {
    pub method: Method,
    /// Key hash (hex) for keys, user name for basic auth, the identity claim for JWTs.
    pub id: Rc<str>,
    pub grant: Arc<Grant>,
    /// The session's key hash (keys, HMAC keys, basic-auth users); `None` for JWT identities.
    pub key_hash: Option<KeyHash>,
}

impl Identity {
    /// Whose quota counter this is, in `scope` (an API's own limit, a policy's), as the store's
    /// `quota-<id>` names it. A stored session's is Tyk's own name for it, `[<scope>-]<hash>`
    /// (gateway/session_manager.go:457-473), the hash being the one it is stored under (its
    /// SHA-256, or the name a Tyk gateway gave it): a Tyk gateway sharing the Redis counts the
    /// same requests, and a key a Tyk gateway wrote goes on from the count it had there. A
    /// JWT identity's is `j:<identity>[/<scope>]`.
    pub fn quota_id(&self, scope: Option<&str>) -> String {
        let stored = match (&self.grant.tyk_name, &self.key_hash) {
            (Some(name), _) => name.to_string(),
            (None, Some(h)) => hex(h),
            (None, None) => {
                return match scope {
                    Some(s) => format!("j:{}/{s}", self.id),
                    None => format!("j:{}", self.id),
                }
            }
        };
        match scope {
            Some(s) => format!("{s}-{stored}"),
            None => stored,
        }
    }
}

/// What `strip_auth_data` removes before the request goes upstream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Strip<'a> {
    pub headers: [Option<&'a str>; 4],
    pub param: Option<&'a str>,
    pub cookie: Option<&'a str>,
}

impl<'a> Strip<'a> {
    fn add_header(&mut self, name: &'a str) {
        if let Some(slot) = self.headers.iter_mut().find(|s| s.is_none_or(|n| n.eq_ignore_ascii_case(name))) {
            *slot = Some(name);
        }
    }

    pub fn removes_header(&self, name: &str) -> bool {
        self.headers.iter().flatten().any(|n| n.eq_ignore_ascii_case(name))
    }

    pub fn is_empty(&self) -> bool {
        self.headers.iter().all(Option::is_none) && self.param.is_none() && self.cookie.is_none()
    }
}

/// A request allowed through.
#[derive(Debug, Default)]
pub struct Allowed<'a> {
    pub identity: Option<Identity>,
    /// The credential (for `$tyk_context.token`).
    pub token: Option<&'a str>,
    pub claims: Option<Rc<Claims>>,
    pub session: Option<Arc<Session>>,
    pub strip: Strip<'a>,
}

/// Why a request is refused, in the classes Tyk answers with; the status each gets is
/// `dataplane::error::ErrorKind::status`'s to say (`ErrorKind::Denied`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refusal {
    /// A malformed credential (Tyk: 400).
    BadRequest,
    /// No or expired credentials (Tyk: 401).
    #[default]
    Unauthorized,
    /// Credentials that do not grant this request, IP and path rules, quota (Tyk: 403).
    Forbidden,
    /// A rate limit (Tyk: 429).
    TooManyRequests,
    /// A size limit without `Content-Length` (Tyk: 411).
    LengthRequired,
    /// A body a `validate_json` schema refuses: its `error_response_code`, else 422.
    Status(u16),
}

/// A request refused, with Tyk's class and message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Denial {
    pub kind: Refusal,
    pub message: Cow<'static, str>,
    /// Send `WWW-Authenticate: Basic` (basic auth with no credentials).
    pub basic_challenge: bool,
    /// The rate limit the request was checked against (a 429, or a quota's 403 after the rate
    /// let it through), for `X-RateLimit-*` when they report rate limits.
    pub rate: Option<crate::limit::RateInfo>,
    /// Tyk's response flag for the refusal (`AMF`, `AKI`, `TKE`, ...:
    /// internal/errors/classification.go), which `error_overrides` rules match on.
    pub flag: Option<&'static str>,
}

fn deny(kind: Refusal, message: impl Into<Cow<'static, str>>) -> Denial {
    Denial { kind, message: message.into(), ..Default::default() }
}

/// A refusal with Tyk's response flag.
fn flagged(kind: Refusal, message: impl Into<Cow<'static, str>>, flag: &'static str) -> Denial {
    Denial { kind, message: message.into(), flag: Some(flag), ..Default::default() }
}

/// A password to check against a stored hash, and the cache digest to remember the answer under.
#[derive(Debug)]
pub struct PasswordCheck {
    pub digest: [u8; 32],
    pub password: String,
    pub stored: String,
    pub hash_type: String,
}

/// Where the session of a key that is not cached may be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLookup {
    /// The SHA-256 of the key: where Portcullis keeps it, and the worker's cache key.
    pub hash: KeyHash,
    /// Where Tyk gateways would keep it (`tyk_key::tyk_addresses`, with `[auth]
    /// tyk_key_hashes`), tried in order when nothing is stored under `hash`.
    pub tyk: Vec<String>,
}

/// Outcome of [`decide`].
#[derive(Debug)]
pub enum Decision<'a> {
    Allow(Allowed<'a>),
    Deny(Denial),
    /// The session of this key is not cached: fetch it and decide again.
    NeedKey(Box<KeyLookup>),
    /// These basic-auth credentials have not been checked against the stored bcrypt hash by this
    /// worker yet: check them off the worker (bcrypt costs milliseconds), remember the answer,
    /// and decide again.
    NeedPasswordCheck(PasswordCheck),
}

pub const MSG_MISSING: &str = "Authorization field missing";
pub const MSG_DISALLOWED: &str = "Access to this API has been disallowed";
pub const MSG_IP: &str = "access from this IP has been disallowed";
pub const MSG_ENDPOINT: &str = "Requested endpoint is forbidden";

/// Where a request stands in time and in config.
#[derive(Clone, Copy)]
pub struct DecideCtx<'a> {
    pub api_id: &'a str,
    /// The API's `org_id`: the policies a key applies must be of it.
    pub api_org: &'a str,
    /// Index of the API in the snapshot, and the snapshot generation (cache scopes).
    pub api_index: u32,
    pub generation: u64,
    pub policies: &'a Policies,
    /// Unix seconds.
    pub now: u64,
    /// `[auth] tyk_key_hashes`: where else a key's session may be (`tyk_key`).
    pub tyk_key_hashes: &'a [tyk_key::TykHash],
}

/// One method's result.
struct Passed<'a> {
    id: Rc<str>,
    key_hash: Option<KeyHash>,
    session: Option<Arc<Session>>,
    grant: Arc<Grant>,
    token: Option<&'a str>,
    claims: Option<Rc<Claims>>,
}

impl<'a> Passed<'a> {
    /// A method that authenticated a stored session (token, HMAC key, basic-auth user).
    fn stored(
        id: Rc<str>,
        hash: KeyHash,
        session: Arc<Session>,
        grant: Arc<Grant>,
        token: Option<&'a str>,
    ) -> Step<'a> {
        Step::Pass(Passed { id, key_hash: Some(hash), session: Some(session), grant, token, claims: None })
    }
}

enum Step<'a> {
    Pass(Passed<'a>),
    Stop(Decision<'a>),
}

/// Decides whether `req` may reach the API, as whom, and what auth data to strip.
pub fn decide<'a>(auth: &'a ApiAuth, req: &RequestView<'a>, cx: DecideCtx<'_>, w: &mut WorkerAuth) -> Decision<'a> {
    match access(auth, req) {
        Ok(()) => authenticate(auth, req, cx, w),
        Err(d) => Decision::Deny(d),
    }
}

/// The access rules that need no credential: IP allow and deny lists, then the black and white
/// path lists (the request phase `access`).
pub fn access(auth: &ApiAuth, req: &RequestView<'_>) -> Result<(), Denial> {
    let ip = crate::canonical_ip(req.client_ip);
    if let Some(allow) = &auth.ip_allow {
        if !allow.iter().any(|n| n.contains(&ip)) {
            return Err(deny(Refusal::Forbidden, MSG_IP));
        }
    }
    if auth.ip_deny.iter().any(|n| n.contains(&ip)) {
        return Err(deny(Refusal::Forbidden, MSG_IP));
    }
    if auth.path_status(req) == PathStatus::Blocked {
        return Err(deny(Refusal::Forbidden, MSG_ENDPOINT));
    }
    auth.size_limits.check(req)
}

/// Request size limits (Tyk's RequestSizeLimit middleware, gateway/mw_request_size_limit.go):
/// the API version's `global_size_limit`, then the first `size_limits` entry that matches.
#[derive(Debug, Clone, Default)]
pub struct SizeLimits {
    /// Bytes; 0: none.
    pub global: u64,
    /// Entries in order, each with its limit in bytes.
    pub per_path: Vec<(PathRule, u64)>,
}

impl SizeLimits {
    pub fn is_empty(&self) -> bool {
        self.global == 0 && self.per_path.is_empty()
    }

    /// As Tyk checks them (mw_request_size_limit.go:22-112): GET, DELETE, TRACE, OPTIONS and HEAD
    /// never; otherwise only the declared `Content-Length` counts: none is 411, one that is not
    /// a number 400, one over the limit 400 "Request is too large" (equal passes). The body's
    /// real length is held to the declared one by the HTTP layer.
    pub fn check(&self, req: &RequestView<'_>) -> Result<(), Denial> {
        if self.is_empty() || matches!(req.method, "GET" | "DELETE" | "TRACE" | "OPTIONS" | "HEAD") {
            return Ok(());
        }
        let limit = |l: u64| -> Result<(), Denial> {
            let Some(v) = req.headers.get("content-length") else {
                return Err(flagged(Refusal::LengthRequired, "Content length is required for this request", "CLM"));
            };
            match std::str::from_utf8(v).ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                None => Err(deny(Refusal::BadRequest, "content length is not a valid Integer")),
                Some(n) if n > l => Err(flagged(Refusal::BadRequest, "Request is too large", "BTL")),
                Some(_) => Ok(()),
            }
        };
        if self.global > 0 {
            limit(self.global)?;
        }
        match self.per_path.iter().find(|(r, _)| r.matches(req.method, req.rel_path, req.rel_path)) {
            Some((_, l)) => limit(*l),
            None => Ok(()),
        }
    }
}

/// What the path lists say about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStatus {
    /// No list objects.
    Open,
    /// An `ignored` entry matches: no credential is asked for.
    Ignored,
    /// A `black_list` entry matches, or white-list mode and no `white_list` entry does.
    Blocked,
}

impl ApiAuth {
    /// Tyk's `URLAllowedAndIgnored` (gateway/api_definition.go:2142-2281): the first matching
    /// entry of ignored, then black list, then white list decides; with a white list, nothing
    /// else gets through. So `ignored` wins over both lists, as in Tyk.
    pub fn path_status(&self, req: &RequestView<'_>) -> PathStatus {
        let hit = |rules: &[PathRule]| rules.iter().any(|r| r.matches(req.method, req.rel_path, req.path));
        if hit(&self.ignored) {
            PathStatus::Ignored
        } else if hit(&self.black_list) || (!self.white_list.is_empty() && !hit(&self.white_list)) {
            PathStatus::Blocked
        } else {
            PathStatus::Open
        }
    }
}

/// Who the request runs as, once [`access`] has let it through (the request phase
/// `authenticate`): ignored paths and keyless APIs pass with no identity; otherwise each enabled
/// method, chained by `base_identity_provided_by`, then expiry, inactive keys and `access_rights`.
pub fn authenticate<'a>(
    auth: &'a ApiAuth,
    req: &RequestView<'a>,
    cx: DecideCtx<'_>,
    w: &mut WorkerAuth,
) -> Decision<'a> {
    if auth.keyless || (!auth.ignored.is_empty() && auth.path_status(req) == PathStatus::Ignored) {
        return Decision::Allow(Allowed::default());
    }

    let mut allowed = Allowed::default();
    let mut base: Option<(Method, Passed<'a>)> = None;
    for spec in auth.methods() {
        let (m, step) = match spec {
            MethodSpec::Token(src) => (Method::Token, check_token(src, req, cx, w, &mut allowed.strip)),
            MethodSpec::Jwt(jwt) => (Method::Jwt, check_jwt(jwt, req, cx, w, &mut allowed.strip)),
            MethodSpec::Basic(src) => (Method::Basic, check_basic(src, req, cx, w, &mut allowed.strip)),
            MethodSpec::Hmac(hmac) => (Method::Hmac, check_hmac(hmac, req, cx, w, &mut allowed.strip)),
        };
        let passed = match step {
            Step::Pass(p) => p,
            Step::Stop(d) => return d,
        };
        let is_base = match auth.base_identity {
            Some(b) => b == m,
            None => base.is_none(),
        };
        if is_base {
            base = Some((m, passed));
        }
    }
    let Some((method, p)) = base else {
        // No method enabled is a config error caught at load; refuse rather than let through.
        return Decision::Deny(deny(Refusal::Forbidden, MSG_DISALLOWED));
    };
    // Inactive before expired, as Tyk's KeyExpired middleware (mw_key_expired_check.go:32-62).
    if p.grant.inactive {
        return Decision::Deny(deny(Refusal::Forbidden, "Key is inactive, please renew"));
    }
    if let Some(s) = &p.session {
        if s.is_expired(cx.now as i64) {
            return Decision::Deny(deny(Refusal::Unauthorized, "Key has expired, please renew"));
        }
    }
    // Every policy applied must be of the API's org (Tyk: apply.go:133-137; for JWTs the
    // policy lookup is scoped by the API's org, mw_jwt.go:1651-1672).
    if p.grant.policy_orgs.iter().any(|o| o != cx.api_org) {
        let msg = if method == Method::Jwt { MSG_JWT_NO_POLICY } else { MSG_DISALLOWED };
        return Decision::Deny(deny(Refusal::Forbidden, msg));
    }
    if let Err(e) = p.grant.check(cx.api_id, auth.version.as_deref(), req.method, req.rel_path, req.path) {
        return Decision::Deny(match e {
            policy::AccessDenied::Api => deny(Refusal::Forbidden, MSG_DISALLOWED),
            policy::AccessDenied::Version => deny(Refusal::Forbidden, MSG_DISALLOWED),
            policy::AccessDenied::Url => deny(Refusal::Forbidden, "Access to this resource has been disallowed"),
        });
    }
    allowed.identity = Some(Identity { method, id: p.id, grant: p.grant, key_hash: p.key_hash });
    allowed.token = p.token;
    allowed.claims = p.claims;
    allowed.session = p.session;
    if !auth.strip_auth_data {
        allowed.strip = Strip::default();
    }
    Decision::Allow(allowed)
}

/// Looks a key's session up in the worker cache and builds (or reuses) its grant.
fn session_grant<'a>(
    hash: KeyHash,
    key: &str,
    cx: DecideCtx<'_>,
    w: &mut WorkerAuth,
) -> Result<(Arc<Session>, Arc<Grant>), Decision<'a>> {
    let mut entry = match w.session(&hash) {
        Cached::Miss => {
            let tyk = tyk_key::tyk_addresses(key, cx.api_org, cx.tyk_key_hashes);
            return Err(Decision::NeedKey(Box::new(KeyLookup { hash, tyk })));
        }
        Cached::Unknown => return Err(Decision::Deny(flagged(Refusal::Forbidden, MSG_DISALLOWED, "AKI"))),
        Cached::Hit(e) => e,
    };
    let session = Arc::clone(&entry.session);
    let grant = match &entry.grant {
        Some((gen, g)) if *gen == cx.generation => g.clone(),
        _ => {
            let g = policy::grant_for_session(&session, cx.policies).map(Arc::new);
            entry.grant = Some((cx.generation, g.clone()));
            g
        }
    };
    match grant {
        Ok(g) => Ok((session, g)),
        Err(e) => {
            tracing::warn!(key_hash = %hex(&hash), error = %e, "key refused: its policies cannot be applied");
            Err(Decision::Deny(deny(Refusal::Forbidden, MSG_DISALLOWED)))
        }
    }
}

fn strip_found<'a>(strip: &mut Strip<'a>, src: &'a CredentialSource, found: Found) {
    match found {
        Found::Header => strip.add_header(&src.header),
        Found::Param => strip.param = src.param.as_deref(),
        Found::Cookie => strip.cookie = src.cookie.as_deref(),
    }
}

fn check_token<'a>(
    src: &'a CredentialSource,
    req: &RequestView<'a>,
    cx: DecideCtx<'_>,
    w: &mut WorkerAuth,
    strip: &mut Strip<'a>,
) -> Step<'a> {
    let Some((key, found)) = token::find(src, req.headers, req.query) else {
        return Step::Stop(Decision::Deny(flagged(Refusal::Unauthorized, MSG_MISSING, "AMF")));
    };
    let hash = hash_key(key);
    match session_grant(hash, key, cx, w) {
        Ok((session, grant)) => {
            strip_found(strip, src, found);
            Passed::stored(hex(&hash).into(), hash, session, grant, Some(key))
        }
        Err(d) => Step::Stop(d),
    }
}

fn check_basic<'a>(
    src: &'a CredentialSource,
    req: &RequestView<'a>,
    cx: DecideCtx<'_>,
    w: &mut WorkerAuth,
    strip: &mut Strip<'a>,
) -> Step<'a> {
    let Some(value) = token::header(req.headers, &src.header).filter(|v| !v.is_empty()) else {
        return Step::Stop(Decision::Deny(Denial {
            kind: Refusal::Unauthorized,
            message: MSG_MISSING.into(),
            basic_challenge: true,
            flag: Some("AMF"),
            ..Default::default()
        }));
    };
    let (user, password) = match basic::parse_basic(value) {
        Ok(v) => v,
        Err(e) => return Step::Stop(Decision::Deny(deny(Refusal::BadRequest, e.to_string()))),
    };
    // Wrong credentials: Tyk's 401 with a Basic challenge (browsers prompt again on it).
    let refused = || {
        Step::Stop(Decision::Deny(Denial {
            kind: Refusal::Unauthorized,
            message: basic::TYK_UNAUTHORISED_MESSAGE.into(),
            basic_challenge: true,
            ..Default::default()
        }))
    };
    let hash = hash_key(&user);
    let (session, grant) = match session_grant(hash, &user, cx, w) {
        Ok(v) => v,
        Err(Decision::Deny(_)) => return refused(),
        Err(d) => return Step::Stop(d),
    };
    let stored = &session.basic_auth_data;
    if stored.password.is_empty() {
        return refused();
    }
    let digest = cache::basic_digest(&user, &password, &stored.password);
    match w.basic_checked(&digest) {
        Some(true) => {}
        Some(false) => return refused(),
        None => {
            return Step::Stop(Decision::NeedPasswordCheck(PasswordCheck {
                digest,
                password,
                stored: stored.password.clone(),
                hash_type: stored.hash_type.clone(),
            }))
        }
    }
    strip.add_header(&src.header);
    Passed::stored(user.into(), hash, session, grant, None)
}

fn check_hmac<'a>(
    spec: &'a HmacSpec,
    req: &RequestView<'a>,
    cx: DecideCtx<'_>,
    w: &mut WorkerAuth,
    strip: &mut Strip<'a>,
) -> Step<'a> {
    let Some(value) = token::header(req.headers, "authorization").filter(|v| !v.is_empty()) else {
        return Step::Stop(Decision::Deny(flagged(Refusal::Unauthorized, MSG_MISSING, "AMF")));
    };
    // Tyk answers every signature failure with one message; the reason goes to the debug log.
    let bad = |e: signature::SigError| {
        tracing::debug!(reason = %e, "request signature refused");
        Step::Stop(Decision::Deny(deny(Refusal::Forbidden, signature::TYK_MESSAGE)))
    };
    let sig = match signature::parse(value) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    if let Err(e) = signature::check_algorithm_allowed(sig.algorithm, &spec.allowed) {
        return bad(e);
    }
    let lookup = |name: &str| token::header(req.headers, name).map(str::to_string);
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(cx.now);
    if let Err(e) = signature::check_date(signature::date_value(&lookup).as_deref(), now, spec.clock_skew_ms) {
        return bad(e);
    }
    let hash = hash_key(&sig.key_id);
    let (session, grant) = match session_grant(hash, &sig.key_id, cx, w) {
        Ok(v) => v,
        Err(d) => return Step::Stop(d),
    };
    if !session.hmac_enabled || session.hmac_string.is_empty() {
        return bad(signature::SigError::EmptySecret);
    }
    let Some(target) = signature::tyk_target_path(req.path) else {
        return bad(signature::SigError::Malformed("request path"));
    };
    let signing = match signature::signing_string(&sig, req.method, &target, &lookup) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    if let Err(e) = signature::verify(&sig, &signing, session.hmac_string.as_bytes()) {
        return bad(e);
    }
    strip.add_header("authorization");
    Passed::stored(hex(&hash).into(), hash, session, grant, None)
}

fn check_jwt<'a>(
    spec: &'a JwtSpec,
    req: &RequestView<'a>,
    cx: DecideCtx<'_>,
    w: &mut WorkerAuth,
    strip: &mut Strip<'a>,
) -> Step<'a> {
    // Tyk's JWT middleware answers a missing token 400, not 401 (mw_jwt.go:1282-1306).
    let Some((tok, found)) = token::find(&spec.source, req.headers, req.query) else {
        return Step::Stop(Decision::Deny(flagged(Refusal::BadRequest, MSG_MISSING, "AMF")));
    };
    let mut scope_buf = [0u8; 41];
    let scope = jwt_scope(&mut scope_buf, cx.generation, cx.api_index);
    let claims = match w.jwt_claims(scope, tok, cx.now) {
        Some(c) => c,
        None => {
            let keys = spec.keys.load();
            match jwt::verify(tok, spec.family, &keys, spec.skew, cx.now) {
                Ok(c) => {
                    let c = Rc::new(c);
                    w.jwt.insert(scope, tok, Rc::clone(&c), cx.now);
                    c
                }
                Err(e) => {
                    tracing::debug!(error = %e, "JWT refused");
                    return Step::Stop(Decision::Deny(jwt_refusal(&e)));
                }
            }
        }
    };
    let field = if spec.identity_field.is_empty() { "sub" } else { spec.identity_field.as_str() };
    // Worked out once per cached token: a cached `Claims` belongs to one API (the cache is
    // scoped by API and generation), so its identity field does not change.
    let identity = claims.identity.get_or_init(|| jwt_identity(&claims, field).map(Rc::from));
    let id = match identity {
        Ok(id) => Rc::clone(id),
        Err(msg) => return Step::Stop(Decision::Deny(deny(Refusal::Forbidden, *msg))),
    };
    // Worked out once per cached token as well (same scope as the identity above); a token
    // seen for the first time looks its policies up in the worker's grant map. The per-request
    // policy key (a String), its hash and compare were ~1 % of the gateway's cycles (perf);
    // criterion `request_head/gateway_jwt_cached` 856 -> 770 ns.
    let grant = claims.grant.get_or_init(|| jwt_grant(spec, &claims, cx, w)).clone();
    let grant = match grant {
        Ok(g) => g,
        Err(e) => {
            tracing::debug!(error = %e, "JWT refused: no usable policy");
            // Tyk's words, lower-case `key` (mw_jwt.go:949-953, 983-989, 1110-1119).
            let msg = if spec.policy_field.is_empty() || e == policy::GrantError::UnknownPolicy(String::new()) {
                "key not authorized: no matching policy found"
            } else {
                MSG_JWT_NO_POLICY
            };
            return Step::Stop(Decision::Deny(deny(Refusal::Forbidden, msg)));
        }
    };
    strip_found(strip, &spec.source, found);
    Step::Pass(Passed { id, key_hash: None, session: None, grant, token: Some(tok), claims: Some(claims) })
}

/// The grant of a verified token: its policy claim's policies when the API names the claim and
/// the token carries it, else the API's defaults; shared by tokens naming the same policies
/// through the worker's grant map.
fn jwt_grant(
    spec: &JwtSpec,
    claims: &jwt::Claims,
    cx: DecideCtx<'_>,
    w: &mut WorkerAuth,
) -> Result<Arc<policy::Grant>, policy::GrantError> {
    // Tyk reads the policy claim as one string, the literal key or a dotted path (mw_jwt.go:
    // 671-696, 791-821); any other value is no claim, and the defaults apply.
    let policy_key = if spec.policy_field.is_empty() {
        String::new()
    } else {
        claim_string(&claims.map, &spec.policy_field).unwrap_or("").to_string()
    };
    let grant_key = (cx.generation, cx.api_index, policy_key);
    match w.jwt_grants.get(&grant_key) {
        Some(g) => g.clone(),
        None => {
            let ids: Vec<&str> = if grant_key.2.is_empty() {
                spec.default_policies.iter().map(String::as_str).collect()
            } else {
                vec![grant_key.2.as_str()]
            };
            let g = if ids.is_empty() {
                Err(policy::GrantError::UnknownPolicy(String::new()))
            } else {
                policy::grant_for_policies(&ids, cx.policies).map(Arc::new)
            };
            if w.jwt_grants.len() > 4096 {
                w.jwt_grants.clear();
            }
            w.jwt_grants.insert(grant_key, g.clone());
            g
        }
    }
}

/// What Tyk answers a token that does not verify (mw_jwt.go:1316-1372): 401 for the time
/// claims, 403 for the rest, our detail in the log only.
fn jwt_refusal(e: &jwt::JwtError) -> Denial {
    use jwt::JwtError as E;
    match e {
        E::Expired => flagged(Refusal::Unauthorized, "Key not authorized: token has expired", "TKE"),
        E::IssuedInFuture => flagged(Refusal::Unauthorized, "Key not authorized: token used before issued", "TCV"),
        E::NotYetValid => flagged(Refusal::Unauthorized, "Key not authorized: token is not valid yet", "TCV"),
        E::AlgNone | E::AlgNotAllowed { .. } => {
            flagged(Refusal::Forbidden, "Key not authorized: Unexpected signing method", "TKI")
        }
        E::Malformed(_) | E::NoKey | E::BadSignature => flagged(Refusal::Forbidden, "Key not authorized", "TKI"),
    }
}

/// A claim that is a string, by its literal name or, failing that, a dotted path into nested
/// objects (Tyk's `getClaimValue` + `nestedMapLookup`, mw_jwt.go:791-821).
fn claim_string<'c>(claims: &'c serde_json::Map<String, serde_json::Value>, name: &str) -> Option<&'c str> {
    if let Some(serde_json::Value::String(s)) = claims.get(name) {
        return Some(s);
    }
    if !name.contains('.') {
        return None;
    }
    let mut parts = name.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    v.as_str()
}

/// The identity of a verified token as Tyk's `getUserIDFromClaim` finds it (mw_jwt.go:
/// 1798-1841): the identity field (literal or dotted) when it is a non-empty string, else `sub`.
fn jwt_identity(claims: &jwt::Claims, field: &str) -> Result<String, &'static str> {
    if field != "sub" {
        match claim_string(&claims.map, field) {
            Some("") => return Err("found an empty user ID in predefined base claim"),
            Some(s) => return Ok(s.to_string()),
            None => {}
        }
    }
    match claims.map.get("sub") {
        Some(serde_json::Value::String(s)) if s.is_empty() => Err("found an empty user ID in sub claim"),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        _ => Err("no suitable claims for user ID were found"),
    }
}

/// A JWT whose policy is unknown, or of another org than the API's.
pub const MSG_JWT_NO_POLICY: &str = "key not authorized: no matching policy";

fn jwt_scope(buf: &mut [u8; 41], generation: u64, api: u32) -> &str {
    let mut n = portcullis_http1::digits::write_u64(&mut buf[..20], generation);
    buf[n] = b':';
    n += 1;
    n += portcullis_http1::digits::write_u64(&mut buf[n..n + 20], u64::from(api));
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}
