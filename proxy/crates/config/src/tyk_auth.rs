//! The security-related fields of a Tyk API definition -> [`ApiAuth`]: auth methods and their
//! credential locations, JWT keys (static or JWKS), HMAC settings, chained auth, IP rules, path
//! lists and header transforms.
//!
//! Only this file knows those Tyk field names. Every problem is pushed as a [`ConfigError`]
//! naming file, field and value; nothing here panics on input. JWKS documents are fetched by
//! the caller-supplied `fetch` (the control plane; never a worker).

use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use serde_json::Value;

use portcullis_policy::auth::jwt::{Family, KeySet, Skew};
use portcullis_policy::auth::token::CredentialSource;
use portcullis_policy::auth::transform::Template;
use portcullis_policy::auth::{ApiAuth, HeaderTransform, HmacSpec, JwtSpec, Method, PathRule, Transforms};
use portcullis_policy::path_rule::{tyk_pattern, Methods, PathMatching};

use super::ConfigError;

/// Fetches a JWKS document (URL -> body); the control plane passes an HTTP client.
pub type JwksFetch<'a> = &'a dyn Fn(&str) -> Result<Vec<u8>, String>;

struct Cx<'a> {
    file: &'a std::path::Path,
    json: &'a Value,
    errs: &'a mut Vec<ConfigError>,
    matching: PathMatching,
}

/// Which version's lists and extended paths a parse reads.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pick<'a> {
    /// A non-versioned API's: the one Tyk's `GetSingleOrDefaultVersion` picks.
    Default,
    /// Version `name` of a versioned API (its key in `version_data.versions`).
    Named(&'a str),
    /// None: the API-level fields only (the base of a versioned API, which serves no request as
    /// itself: each is served as its version's).
    None,
}

/// The version whose path lists and extended paths a request uses: for a non-versioned API as
/// Tyk's `GetSingleOrDefaultVersion` picks it (gateway/api_definition.go:2466-2496): the only
/// one, else `Default`, `default` or `""`. `None` (with an error) when there is none.
struct VersionAt {
    /// JSON pointer of the version object.
    ptr: String,
    /// `use_extended_paths: true`: the `extended_paths` lists apply, else the legacy `paths`
    /// (Tyk never combines them: api_definition.go:403-408).
    extended: bool,
}

fn version_at(cx: &mut Cx<'_>, pick: Pick<'_>) -> Option<VersionAt> {
    let versions = cx.json.pointer("/version_data/versions").and_then(Value::as_object)?;
    let name = match pick {
        Pick::None => return None,
        Pick::Named(n) => Some(n.to_string()),
        Pick::Default => super::tyk_version::default_version_name(versions).map(str::to_string),
    };
    let Some(name) = name else {
        let names: Vec<&str> = versions.keys().map(String::as_str).collect();
        cx.err(
            "version_data.versions",
            names.join(", "),
            "a non-versioned API needs one version, or one named Default (Tyk answers every request 403 \"No default API version for this non-versioned API found\")",
        );
        return None;
    };
    let ptr = format!("/version_data/versions/{}", name.replace('~', "~0").replace('/', "~1"));
    let extended = cx.json.pointer(&format!("{ptr}/use_extended_paths")).and_then(Value::as_bool).unwrap_or(false);
    Some(VersionAt { ptr, extended })
}

impl Cx<'_> {
    fn err(&mut self, field: &str, value: impl Into<String>, msg: impl Into<String>) {
        self.errs.push(ConfigError::new(self.file, field, value, msg));
    }

    fn get(&self, ptr: &str) -> Option<&Value> {
        self.json.pointer(ptr).filter(|v| !v.is_null())
    }

    fn flag(&self, ptr: &str) -> bool {
        self.get(ptr).and_then(Value::as_bool).unwrap_or(false)
    }

    fn string(&self, ptr: &str) -> String {
        self.get(ptr).and_then(Value::as_str).unwrap_or_default().to_string()
    }

    fn strings(&mut self, ptr: &str) -> Vec<String> {
        match self.get(ptr).cloned() {
            None => Vec::new(),
            Some(Value::Array(a)) => {
                let mut out = Vec::new();
                for (i, v) in a.iter().enumerate() {
                    match v.as_str() {
                        Some(s) => out.push(s.to_string()),
                        None => self.err(&format!("{}[{i}]", dotted(ptr)), super::brief(v), "must be a string"),
                    }
                }
                out
            }
            Some(v) => {
                let b = super::brief(&v);
                self.err(&dotted(ptr), b, "must be a list of strings");
                Vec::new()
            }
        }
    }

    fn number(&mut self, ptr: &str) -> f64 {
        match self.get(ptr).cloned() {
            None => 0.0,
            Some(v) => match v.as_f64() {
                Some(n) => n,
                None => {
                    let b = super::brief(&v);
                    self.err(&dotted(ptr), b, "must be a number");
                    0.0
                }
            },
        }
    }
}

fn dotted(ptr: &str) -> String {
    ptr.trim_start_matches('/').replace('/', ".")
}

/// Compiles the API-level auth/access/transform fields of one API (a version's lists are added
/// by [`parse_version_auth`]).
pub(super) fn parse_auth(
    file: &std::path::Path,
    json: &Value,
    fetch: JwksFetch<'_>,
    matching: PathMatching,
    errs: &mut Vec<ConfigError>,
) -> ApiAuth {
    let mut cx = Cx { file, json, errs, matching };
    // `version` stays `None`: set per version of a versioned API (tyk.rs), so that no key's
    // `versions` are checked on a non-versioned one.
    let mut a = ApiAuth { keyless: cx.flag("/use_keyless"), ..Default::default() };

    let jwt = cx.flag("/enable_jwt");
    let basic = cx.flag("/use_basic_auth");
    let hmac = cx.flag("/enable_signature_checking");
    // Tyk: an API that is not keyless and enables no other method uses auth tokens.
    let token = cx.flag("/use_standard_auth") || (!a.keyless && !jwt && !basic && !hmac);
    if a.keyless && (token && cx.flag("/use_standard_auth") || jwt || basic || hmac) {
        let v = "true".to_string();
        cx.err("use_keyless", v, "use_keyless cannot be combined with an auth method (use_standard_auth, enable_jwt, use_basic_auth, enable_signature_checking)");
    }
    if !a.keyless {
        if token {
            a.token = Some(credential_source(&mut cx, "authToken", true));
        }
        if basic {
            a.basic = Some(credential_source(&mut cx, "basic", false));
        }
        if hmac {
            a.hmac = Some(HmacSpec {
                allowed: cx.strings("/hmac_allowed_algorithms"),
                clock_skew_ms: cx.number("/hmac_allowed_clock_skew"),
            });
        }
        if jwt {
            a.jwt = parse_jwt(&mut cx, fetch);
        }
    }
    let base = cx.string("/base_identity_provided_by");
    if !base.is_empty() {
        match Method::parse(&base) {
            Some(m) => {
                let enabled = match m {
                    Method::Token => a.token.is_some(),
                    Method::Jwt => a.jwt.is_some(),
                    Method::Basic => a.basic.is_some(),
                    Method::Hmac => a.hmac.is_some(),
                };
                if enabled {
                    a.base_identity = Some(m);
                } else {
                    cx.err("base_identity_provided_by", base, "names an auth method this API does not enable");
                }
            }
            None => cx.err(
                "base_identity_provided_by",
                base,
                "supported values: auth_token, jwt_claim, basic_auth_user, hmac_key",
            ),
        }
    }
    a.strip_auth_data = cx.flag("/strip_auth_data");

    if cx.flag("/enable_ip_whitelisting") {
        a.ip_allow = Some(nets(&mut cx, "/allowed_ips"));
    }
    if cx.flag("/enable_ip_blacklisting") {
        a.ip_deny = nets(&mut cx, "/blacklisted_ips");
    }

    a.transforms.tag_headers = cx.strings("/tag_headers");
    a
}

/// Adds the lists of the version `pick` names to `a`: path lists, header transforms, size
/// limits, global headers.
pub(super) fn parse_version_auth(
    file: &std::path::Path,
    json: &Value,
    matching: PathMatching,
    pick: Pick<'_>,
    errs: &mut Vec<ConfigError>,
    a: &mut ApiAuth,
) {
    let mut cx = Cx { file, json, errs, matching };
    let version = version_at(&mut cx, pick);
    let context_vars = cx.flag("/enable_context_vars");
    if let Some(VersionAt { ptr: base, extended, .. }) = version {
        {
            // The legacy `paths` lists (plain path strings, any method) or the extended ones,
            // as `use_extended_paths` says; never both (Tyk: api_definition.go:403-408).
            for (list, out) in
                [("ignored", &mut a.ignored), ("white_list", &mut a.white_list), ("black_list", &mut a.black_list)]
            {
                if extended {
                    let ptr = format!("{base}/extended_paths/{list}");
                    extended_rules(&mut cx, &ptr, out);
                } else {
                    let ptr = format!("{base}/paths/{list}");
                    for (i, p) in cx.strings(&ptr).into_iter().enumerate() {
                        let field = format!("{}[{i}]", dotted(&ptr));
                        if let Some(r) = path_rule(&mut cx, &field, &p, Methods::Any, false) {
                            out.push(r);
                        }
                    }
                }
            }
            if !extended {
                // Tyk ignores extended paths without `use_extended_paths` (and logs "Legacy path
                // detected"); a black list or limit written there would silently do nothing.
                let ptr = format!("{base}/extended_paths");
                if let Some(ext) = cx.get(&ptr).and_then(Value::as_object).filter(|o| o.values().any(super::truthy)) {
                    let keys: Vec<&str> =
                        ext.iter().filter(|(_, v)| super::truthy(v)).map(|(k, _)| k.as_str()).collect();
                    let keys = keys.join(", ");
                    cx.err(
                        &format!("{}.use_extended_paths", dotted(&base)),
                        "false",
                        format!("extended_paths ({keys}) apply only with use_extended_paths: true (Tyk ignores them); set it, or remove them"),
                    );
                }
            }
            let ptr = format!("{base}/extended_paths/transform_headers");
            transform_headers(&mut cx, &ptr, context_vars, &mut a.transforms);
            if extended {
                size_limits(&mut cx, &base, &mut a.size_limits);
            }
            let ptr = format!("{base}/global_headers");
            if let Some(m) = cx.get(&ptr).cloned() {
                match m.as_object() {
                    Some(m) => {
                        for (k, val) in m {
                            match val.as_str() {
                                Some(s) if valid_header_name(k) => {
                                    a.transforms.global_add.push((k.clone(), Template::parse(s, context_vars)))
                                }
                                Some(_) => {
                                    cx.err(&format!("{}.{k}", dotted(&ptr)), k.clone(), "not a valid header name")
                                }
                                None => cx.err(&format!("{}.{k}", dotted(&ptr)), super::brief(val), "must be a string"),
                            }
                        }
                    }
                    None => cx.err(&dotted(&ptr), super::brief(&m), "must be an object of header -> value"),
                }
            }
            let ptr = format!("{base}/global_headers_remove");
            let removes = cx.strings(&ptr);
            a.transforms.global_remove.extend(removes.into_iter().map(|s| s.to_ascii_lowercase()));
        }
    }
}

fn valid_header_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn credential_source(cx: &mut Cx<'_>, kind: &str, legacy_auth: bool) -> CredentialSource {
    let ptr = format!("/auth_configs/{kind}");
    let block = match cx.get(&ptr) {
        Some(b) => Some(b.clone()),
        None if legacy_auth => cx.get("/auth").cloned(),
        None => None,
    };
    let mut src = CredentialSource::default();
    let Some(b) = block else { return src };
    if let Some(h) = b.get("auth_header_name").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        src.header = h.to_string();
    }
    let name = |key: &str| b.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    if b.get("use_param").and_then(Value::as_bool).unwrap_or(false) {
        src.param = Some(name("param_name").unwrap_or_else(|| src.header.clone()));
    }
    if b.get("use_cookie").and_then(Value::as_bool).unwrap_or(false) {
        src.cookie = Some(name("cookie_name").unwrap_or_else(|| src.header.clone()));
    }
    src
}

fn parse_jwt(cx: &mut Cx<'_>, fetch: JwksFetch<'_>) -> Option<JwtSpec> {
    let method = cx.string("/jwt_signing_method");
    let family = match Family::parse(&method) {
        Some(f) => f,
        None => {
            cx.err("jwt_signing_method", method, "must be one of hmac, rsa, ecdsa");
            return None;
        }
    };
    let source = cx.string("/jwt_source");
    if source.is_empty() {
        cx.err("jwt_source", "", "is required when enable_jwt is true (a base64 secret or PEM key, or a JWKS URL)");
        return None;
    }
    // A JWKS URL, given as is or base64-encoded (Tyk accepts both).
    let url = if source.starts_with("http://") || source.starts_with("https://") {
        Some(source.clone())
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(source.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| s.starts_with("http://") || s.starts_with("https://"))
    };
    let keys = match &url {
        Some(u) => match fetch(u).and_then(|body| KeySet::from_jwks(family, &body)) {
            Ok(k) => k,
            Err(e) => {
                // The API still loads; the control plane keeps retrying the fetch and requests
                // get 403 until keys are known.
                tracing::warn!(file = %cx.file.display(), url = %u, error = %e, "JWKS not available yet; JWT requests are refused until it is fetched");
                KeySet::empty(family)
            }
        },
        None => match KeySet::from_source(family, &source) {
            Ok(k) => k,
            Err(e) => {
                // Tyk loads such an API and refuses each token, "Key not authorized" (its key
                // lookup fails per request, mw_jwt.go:1361-1372); so does Portcullis, saying why
                // at load (`check` prints it).
                let v = if source.len() > 40 {
                    format!("{}...", &source[..source.floor_char_boundary(37)])
                } else {
                    source.clone()
                };
                tracing::warn!(file = %cx.file.display(), field = "jwt_source", value = %v, error = %e,
                    "no key in jwt_source: every token to this API is refused");
                KeySet::empty(family)
            }
        },
    };
    let skew = Skew {
        exp: cx.number("/jwt_expires_at_validation_skew").max(0.0) as u64,
        nbf: cx.number("/jwt_not_before_validation_skew").max(0.0) as u64,
        iat: cx.number("/jwt_issued_at_validation_skew").max(0.0) as u64,
    };
    let default_policies = cx.strings("/jwt_default_policies");
    let policy_field = cx.string("/jwt_policy_field_name");
    if default_policies.is_empty() && policy_field.is_empty() {
        cx.err(
            "jwt_default_policies",
            "[]",
            "a JWT API needs jwt_default_policies or jwt_policy_field_name (the identity's rights come from policies)",
        );
    }
    Some(JwtSpec {
        family,
        keys: Arc::new(ArcSwap::from_pointee(keys)),
        jwks_url: url,
        source: credential_source(cx, "jwt", true),
        identity_field: cx.string("/jwt_identity_base_field"),
        policy_field,
        default_policies,
        skew,
    })
}

fn nets(cx: &mut Cx<'_>, ptr: &str) -> Vec<ipnet::IpNet> {
    let mut out = Vec::new();
    for (i, s) in cx.strings(ptr).into_iter().enumerate() {
        match portcullis_policy::parse_net(&s) {
            Some(n) => out.push(n),
            None => cx.err(&format!("{}[{i}]", dotted(ptr)), s, "not an IP address or CIDR"),
        }
    }
    out
}

/// A Tyk path pattern as Tyk compiles it ([`tyk_pattern`]: searched anywhere in the path unless
/// `[apps] path_prefix_matching` / `path_suffix_matching` anchor it).
fn path_rule(cx: &mut Cx<'_>, field: &str, path: &str, methods: Methods, ignore_case: bool) -> Option<PathRule> {
    if path.is_empty() {
        cx.err(field, "", "path is required");
        return None;
    }
    match regex::Regex::new(&tyk_pattern(path, cx.matching, ignore_case)) {
        Ok(pattern) => Some(PathRule { pattern, methods }),
        Err(e) => {
            cx.err(field, path.to_string(), format!("not a valid path pattern: {e}"));
            None
        }
    }
}

/// The methods of an extended-path entry, as Tyk reads them (api_definition.go:2172-2225):
/// `method_actions` when present (only its methods; `{}` matches none; an action other than
/// `no_action` is refused: Tyk answers `reply` with a mock and blocks anything else), else
/// `method` (one method, exact), else any method.
fn entry_methods(cx: &mut Cx<'_>, field: &str, entry: &Value) -> Option<Methods> {
    if let Some(actions) = entry.get("method_actions").and_then(Value::as_object) {
        for (m, meta) in actions {
            let action = meta.get("action").and_then(Value::as_str).unwrap_or("");
            if !action.is_empty() && action != "no_action" {
                let msg = "only no_action is supported (reply: mock responses are not supported yet)";
                cx.err(&format!("{field}.method_actions.{m}.action"), action, msg);
                return None;
            }
        }
        return Some(Methods::Only(actions.keys().cloned().collect()));
    }
    match entry.get("method").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        Some(m) => Some(Methods::Only(vec![m.to_string()])),
        None => Some(Methods::Any),
    }
}

/// Calls `each(cx, field, entry, rule)` for every entry of the extended-path list at `ptr`
/// (`{"path": ..., "method" | "method_actions": ...}`), reporting a non-list, a missing `path`
/// or a bad pattern as errors. Absent: nothing.
fn for_each_path_entry(cx: &mut Cx<'_>, ptr: &str, mut each: impl FnMut(&mut Cx<'_>, &str, &Value, PathRule)) {
    let Some(items) = cx.get(ptr).cloned() else {
        return;
    };
    let Some(items) = items.as_array() else {
        let b = super::brief(&items);
        cx.err(&dotted(ptr), b, "must be a list");
        return;
    };
    for (i, e) in items.iter().enumerate() {
        let field = format!("{}[{i}]", dotted(ptr));
        // Tyk skips disabled entries when it compiles them (api_definition.go:984-986).
        if e.get("disabled").and_then(Value::as_bool).unwrap_or(false) {
            continue;
        }
        let Some(path) = e.get("path").and_then(Value::as_str) else {
            cx.err(&format!("{field}.path"), super::brief(e), "is required");
            continue;
        };
        let ignore_case = e.get("ignore_case").and_then(Value::as_bool).unwrap_or(false);
        let Some(methods) = entry_methods(cx, &field, e) else { continue };
        if let Some(rule) = path_rule(cx, &field, path, methods, ignore_case) {
            each(cx, &field, e, rule);
        }
    }
}

fn extended_rules(cx: &mut Cx<'_>, ptr: &str, out: &mut Vec<PathRule>) {
    for_each_path_entry(cx, ptr, |_, _, _, rule| out.push(rule));
}

fn transform_headers(cx: &mut Cx<'_>, ptr: &str, context_vars: bool, t: &mut Transforms) {
    // Tyk's HeaderInjected entries match their method exactly; none, nothing
    // (gateway/model_urlspec.go:144-145).
    for_each_middleware_entry(cx, ptr, |cx, field, e, rule| {
        let delete = e
            .get("delete_headers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_ascii_lowercase).collect())
            .unwrap_or_default();
        let mut add = Vec::new();
        if let Some(m) = e.get("add_headers").and_then(Value::as_object) {
            for (k, v) in m {
                match v.as_str() {
                    Some(s) if valid_header_name(k) => add.push((k.clone(), Template::parse(s, context_vars))),
                    _ => cx.err(
                        &format!("{field}.add_headers.{k}"),
                        super::brief(v),
                        "must be a string value for a valid header name",
                    ),
                }
            }
        }
        t.per_path.push(HeaderTransform { rule, delete, add });
    });
}

/// `extended_paths.size_limits` and `global_size_limit` of the version at `base`, as Tyk's
/// RequestSizeLimit middleware reads them (mw_request_size_limit.go:41-112): entries match the
/// path below the listen path and their `method` exactly (an entry without one never matches);
/// the global limit applies whenever the middleware is on (Tyk does not look at
/// `global_size_limit_disabled` again then).
fn size_limits(cx: &mut Cx<'_>, base: &str, out: &mut portcullis_policy::auth::SizeLimits) {
    let ptr = format!("{base}/extended_paths/size_limits");
    for_each_middleware_entry(cx, &ptr, |cx, field, e, rule| match e.get("size_limit").and_then(Value::as_u64) {
        Some(n) => out.per_path.push((rule, n)),
        None => cx.err(&format!("{field}.size_limit"), super::brief(e), "must be a number of bytes"),
    });
    let global = cx.number(&format!("{base}/global_size_limit"));
    let disabled = cx.flag(&format!("{base}/global_size_limit_disabled"));
    if global > 0.0 && (!disabled || !out.per_path.is_empty()) {
        out.global = global as u64;
    }
}

/// Runs `each` on every entry of `extended_paths.<key>` of the version `pick` names (when it
/// uses extended paths), as [`for_each_middleware_entry`] reads them. Problems of the version
/// itself are reported once, by `parse_version_auth`.
fn version_entries(
    file: &std::path::Path,
    json: &Value,
    matching: PathMatching,
    pick: Pick<'_>,
    errs: &mut Vec<ConfigError>,
    key: &str,
    each: impl FnMut(&mut Cx<'_>, &str, &Value, PathRule),
) {
    let mut quiet = Vec::new();
    let version = version_at(&mut Cx { file, json, errs: &mut quiet, matching }, pick);
    if let Some(VersionAt { ptr: base, extended: true, .. }) = version {
        let mut cx = Cx { file, json, errs, matching };
        for_each_middleware_entry(&mut cx, &format!("{base}/extended_paths/{key}"), each);
    }
}

/// As [`for_each_path_entry`], for the extended-path middleware that are not path lists (size
/// limits, JSON validation, endpoint tracking): Tyk matches their `method` exactly, and an
/// entry with none matches no request (gateway/model_urlspec.go:133-184).
fn for_each_middleware_entry(cx: &mut Cx<'_>, ptr: &str, mut each: impl FnMut(&mut Cx<'_>, &str, &Value, PathRule)) {
    for_each_path_entry(cx, ptr, |cx, field, e, mut rule| {
        let method = e.get("method").and_then(Value::as_str).unwrap_or("");
        rule.methods = Methods::Only(if method.is_empty() { Vec::new() } else { vec![method.to_string()] });
        each(cx, field, e, rule)
    });
}

fn rate_of(cx: &mut Cx<'_>, field: &str, v: &Value) -> Option<portcullis_policy::limit::Rate> {
    let rate = v.get("rate").and_then(Value::as_f64).unwrap_or(0.0);
    let per = v.get("per").and_then(Value::as_f64).unwrap_or(0.0);
    if rate == 0.0 && per == 0.0 {
        return None; // Tyk's "not set"
    }
    match portcullis_policy::limit::Rate::new(rate, per, 1.0) {
        Some(r) => Some(r),
        None => {
            cx.err(field, super::brief(v), "rate and per must be positive numbers");
            None
        }
    }
}

/// The version's `track_endpoints` (each with its path pattern as written, which a
/// tracked request's record carries as its `path`) and `do_not_track_endpoints`.
pub(super) fn parse_tracking(
    file: &std::path::Path,
    json: &Value,
    matching: PathMatching,
    pick: Pick<'_>,
    errs: &mut Vec<ConfigError>,
) -> (Vec<(PathRule, String)>, Vec<PathRule>) {
    let (mut track, mut skip) = (Vec::new(), Vec::new());
    version_entries(file, json, matching, pick, errs, "track_endpoints", |_, _, e, rule| {
        track.push((rule, e.get("path").and_then(Value::as_str).unwrap_or("").to_string()))
    });
    version_entries(file, json, matching, pick, errs, "do_not_track_endpoints", |_, _, _, rule| skip.push(rule));
    (track, skip)
}

/// The version's `circuit_breakers`, each entry's breaker new (Tyk builds them per loaded
/// API: gateway/api_definition.go:1220-1302).
pub(super) fn parse_circuit_breakers(
    file: &std::path::Path,
    json: &Value,
    matching: PathMatching,
    pick: Pick<'_>,
    errs: &mut Vec<ConfigError>,
) -> Vec<(PathRule, Arc<portcullis_policy::limit::breaker::Breaker>)> {
    use portcullis_policy::limit::breaker::{Breaker, BreakerSpec};
    let mut out = Vec::new();
    version_entries(file, json, matching, pick, errs, "circuit_breakers", |cx, field, e, rule| {
        let threshold = e.get("threshold_percent").and_then(Value::as_f64).unwrap_or(0.0);
        if !(threshold > 0.0 && threshold <= 1.0) {
            cx.err(&format!("{field}.threshold_percent"), super::brief(e), "must be a fraction above 0, at most 1");
            return;
        }
        let samples = e.get("samples").and_then(Value::as_u64).unwrap_or(0);
        let back = e.get("return_to_service_after").and_then(Value::as_u64).unwrap_or(0);
        if back == 0 {
            cx.err(&format!("{field}.return_to_service_after"), super::brief(e), "must be a number of seconds above 0");
            return;
        }
        let half_open = !e.get("disable_half_open_state").and_then(Value::as_bool).unwrap_or(false);
        let spec = BreakerSpec { threshold, samples, return_after_ms: back * 1000, half_open };
        out.push((rule, Arc::new(Breaker::new(spec))));
    });
    out
}

/// One `validate_json` entry, its schema compiled at load.
#[derive(Debug, Clone)]
pub struct JsonCheck {
    pub validator: Arc<jsonschema::Validator>,
    /// Status of a body the schema refuses (`error_response_code`, else 422).
    pub status: u16,
}

/// The version's `validate_json` entries, each schema compiled once here (Tyk:
/// mw_validate_json.go; api_definition.go:1429-1447). A schema with `$schema` is read as that
/// draft; without, as draft 7 (Tyk's gojsonschema reads a hybrid of drafts 4, 6 and 7). Formats
/// (`email`, `date-time`, ...) are asserted, as gojsonschema asserts them.
pub(super) fn parse_validate_json(
    file: &std::path::Path,
    json: &Value,
    matching: PathMatching,
    pick: Pick<'_>,
    errs: &mut Vec<ConfigError>,
) -> Vec<(PathRule, JsonCheck)> {
    let mut out = Vec::new();
    version_entries(file, json, matching, pick, errs, "validate_json", |cx, field, e, rule| {
        let Some(schema) = e.get("schema").filter(|s| s.is_object() || s.is_boolean()) else {
            let msg = "is required: a JSON schema (schema_b64 is Tyk's database encoding, not read from files)";
            cx.err(&format!("{field}.schema"), super::brief(e.get("schema").unwrap_or(&Value::Null)), msg);
            return;
        };
        let mut options = jsonschema::options().should_validate_formats(true);
        if schema.get("$schema").is_none() {
            options = options.with_draft(jsonschema::Draft::Draft7);
        }
        let validator = match options.build(schema) {
            Ok(v) => std::sync::Arc::new(v),
            Err(err) => {
                cx.err(&format!("{field}.schema"), super::brief(schema), format!("not a valid JSON schema: {err}"));
                return;
            }
        };
        let status = match e.get("error_response_code").and_then(Value::as_u64).unwrap_or(0) {
            0 => 422,
            c @ 400..=599 => c as u16,
            c => {
                cx.err(&format!("{field}.error_response_code"), c.to_string(), "must be a 4xx or 5xx status");
                return;
            }
        };
        out.push((rule, JsonCheck { validator, status }));
    });
    out
}

/// `global_rate_limit`, `ip_rate_limit`, `extended_paths.rate_limit`, `disable_rate_limit`,
/// `disable_quota`.
pub(super) fn parse_limits(
    file: &std::path::Path,
    json: &Value,
    matching: PathMatching,
    pick: Pick<'_>,
    errs: &mut Vec<ConfigError>,
) -> portcullis_policy::limit::ApiLimits {
    // Errors of the version were reported by `parse_version_auth`; none twice.
    let mut quiet = Vec::new();
    let version = version_at(&mut Cx { file, json, errs: &mut quiet, matching }, pick);
    let mut cx = Cx { file, json, errs, matching };
    let mut l = portcullis_policy::limit::ApiLimits {
        disable_rate_limit: cx.flag("/disable_rate_limit"),
        disable_quota: cx.flag("/disable_quota"),
        ..Default::default()
    };
    if let Some(v) = cx.get("/global_rate_limit").cloned() {
        l.global = rate_of(&mut cx, "global_rate_limit", &v);
    }
    if let Some(v) = cx.get("/ip_rate_limit").cloned() {
        l.ip = rate_of(&mut cx, "ip_rate_limit", &v);
    }
    if let Some(VersionAt { ptr: base, extended: true, .. }) = version {
        {
            let ptr = format!("{base}/extended_paths/rate_limit");
            // Method exact; none matches nothing (gateway/model_urlspec.go:176-177).
            for_each_middleware_entry(&mut cx, &ptr, |cx, field, e, rule| match rate_of(cx, field, e) {
                Some(r) => {
                    let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
                    let bucket = portcullis_policy::limit::limit_key(&[
                        text("method").as_bytes(),
                        b":",
                        text("path").as_bytes(),
                    ]);
                    l.endpoints.push((rule, r, bucket))
                }
                None => cx.err(field, super::brief(e), "rate and per are required"),
            });
        }
    }
    l
}

/// The version's `url_rewrites` (Tyk: gateway/mw_url_rewrite.go, compiled as
/// api_definition.go:1304-1321 compiles them), and the absolute `http://host[:port]` prefixes
/// their `rewrite_to`s name, each with its field, for the caller to turn into targets
/// (`To::target` indexes them). What cannot run on a worker without I/O (`payload_matches`,
/// `request_context_matches`), `https://`, `tyk://` loops, a host from a variable and secrets
/// are refused by name.
pub(super) fn parse_url_rewrites(
    file: &std::path::Path,
    json: &Value,
    matching: PathMatching,
    pick: Pick<'_>,
    errs: &mut Vec<ConfigError>,
) -> (Option<portcullis_policy::rewrite::Rewrites>, Vec<(String, String)>) {
    use portcullis_policy::rewrite::{Rewrite, Rewrites};
    let mut entries = Vec::new();
    let mut hosts: Vec<(String, String)> = Vec::new();
    version_entries(file, json, matching, pick, errs, "url_rewrites", |cx, field, e, rule| {
        let pattern_text = match e.get("match_pattern") {
            None | Some(Value::Null) => "",
            Some(Value::String(s)) => s.as_str(),
            Some(v) => {
                cx.err(&format!("{field}.match_pattern"), super::brief(v), "must be a string (a regular expression)");
                return;
            }
        };
        let pattern = match regex::Regex::new(pattern_text) {
            Ok(p) => p,
            Err(err) => {
                cx.err(
                    &format!("{field}.match_pattern"),
                    pattern_text,
                    format!("not a valid regular expression: {err}"),
                );
                return;
            }
        };
        let Some(to) = rewrite_to(cx, &format!("{field}.rewrite_to"), e.get("rewrite_to"), &mut hosts) else {
            return;
        };
        let mut triggers = Vec::new();
        match e.get("triggers") {
            None | Some(Value::Null) => {}
            Some(Value::Array(ts)) => {
                for (i, t) in ts.iter().enumerate() {
                    if let Some(t) = trigger(cx, &format!("{field}.triggers[{i}]"), t, &mut hosts) {
                        triggers.push(t);
                    }
                }
            }
            Some(v) => cx.err(&format!("{field}.triggers"), super::brief(v), "must be a list"),
        }
        entries.push(Rewrite { rule, pattern, to, triggers });
    });
    if entries.is_empty() {
        return (None, hosts);
    }
    let strip = json.pointer("/proxy/strip_listen_path").and_then(Value::as_bool).unwrap_or(false);
    let listen_path = json.pointer("/proxy/listen_path").and_then(Value::as_str).unwrap_or("");
    let rewrites = Rewrites {
        entries,
        strip: (strip && !listen_path.is_empty()).then(|| listen_path.to_string()),
        context_vars: json.get("enable_context_vars").and_then(Value::as_bool).unwrap_or(false),
    };
    (Some(rewrites), hosts)
}

/// A `rewrite_to`: a path, or `http://host[:port]` and a path (the host pushed to `hosts`).
fn rewrite_to(
    cx: &mut Cx<'_>,
    field: &str,
    v: Option<&Value>,
    hosts: &mut Vec<(String, String)>,
) -> Option<portcullis_policy::rewrite::To> {
    use portcullis_policy::rewrite::To;
    let text = match v {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(v) => {
            cx.err(field, super::brief(v), "must be a string");
            return None;
        }
    };
    if text.contains("$secret_") {
        cx.err(field, text, "secrets in rewrite_to ($secret_*) are not supported");
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let Some(scheme_end) = text.find("://").filter(|&i| i > 0 && !text[..i].contains(['/', '?', '$'])) else {
        return Some(To { target: None, text: text.to_string() });
    };
    if lower.starts_with("tyk://") {
        cx.err(field, text, "tyk:// (Tyk's internal looping to an API) is not supported");
        return None;
    }
    if !lower.starts_with("http://") {
        let msg = if lower.starts_with("https://") {
            "https upstreams are not supported yet".to_string()
        } else {
            format!("unsupported scheme {:?}: a rewrite goes to a path, or to an http:// URL", &text[..scheme_end])
        };
        cx.err(field, text, msg);
        return None;
    }
    let rest = &text[scheme_end + 3..];
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..host_end];
    if authority.contains('$') {
        cx.err(field, text, "a host taken from a variable is not supported: name the host in rewrite_to");
        return None;
    }
    let url = format!("http://{authority}");
    let index = match hosts.iter().position(|(_, u)| *u == url) {
        Some(i) => i,
        None => {
            hosts.push((field.to_string(), url));
            hosts.len() - 1
        }
    };
    Some(To { target: Some(index), text: rest[host_end..].to_string() })
}

/// One of a rewrite's `triggers`.
fn trigger(
    cx: &mut Cx<'_>,
    field: &str,
    t: &Value,
    hosts: &mut Vec<(String, String)>,
) -> Option<portcullis_policy::rewrite::Trigger> {
    use portcullis_policy::rewrite::{canonical_header_name, Trigger};
    let any = match t.get("on") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "any" => true,
        Some(Value::String(s)) if s == "all" || s.is_empty() => false,
        // Tyk reads anything but "any" as all; a misspelt "any" would then quietly need every
        // option to match.
        Some(v) => {
            cx.err(&format!("{field}.on"), super::brief(v), "must be \"any\" or \"all\"");
            return None;
        }
    };
    let options = t.get("options").cloned().unwrap_or(Value::Null);
    let mut trigger = Trigger {
        any,
        headers: Vec::new(),
        query: Vec::new(),
        path_parts: Vec::new(),
        session_meta: Vec::new(),
        to: rewrite_to(cx, &format!("{field}.rewrite_to"), t.get("rewrite_to"), hosts)?,
    };
    let Some(options) = options.as_object() else {
        if !options.is_null() {
            cx.err(&format!("{field}.options"), super::brief(&options), "must be an object");
        }
        return Some(trigger);
    };
    for (kind, v) in options {
        let ofield = format!("{field}.options.{kind}");
        let out = match kind.as_str() {
            "header_matches" => &mut trigger.headers,
            "query_val_matches" => &mut trigger.query,
            "path_part_matches" => &mut trigger.path_parts,
            "session_meta_matches" => &mut trigger.session_meta,
            // Tyk counts the payload only with a pattern (mw_url_rewrite.go:133).
            "payload_matches" => {
                let rx = v.get("match_rx").and_then(Value::as_str).unwrap_or("");
                if !rx.is_empty() {
                    cx.err(&ofield, super::brief(v), "payload triggers (the request body) are not supported yet");
                }
                continue;
            }
            "request_context_matches" => {
                if super::truthy(v) {
                    cx.err(&ofield, super::brief(v), "request context triggers are not supported yet");
                }
                continue;
            }
            _ => {
                if super::truthy(v) {
                    cx.err(&ofield, super::brief(v), "unknown trigger option");
                }
                continue;
            }
        };
        let Some(map) = v.as_object() else {
            if !v.is_null() {
                cx.err(&ofield, super::brief(v), "must be an object of name -> {match_rx, reverse}");
            }
            continue;
        };
        for (name, m) in map {
            let mfield = format!("{ofield}.{name}");
            let rx = m.get("match_rx").and_then(Value::as_str).unwrap_or("");
            match regex::Regex::new(rx) {
                Ok(re) => {
                    let reverse = m.get("reverse").and_then(Value::as_bool).unwrap_or(false);
                    let key = if kind == "header_matches" { canonical_header_name(name) } else { name.clone() };
                    out.push((key, portcullis_policy::rewrite::Matcher { re, reverse }));
                }
                Err(err) => cx.err(&format!("{mfield}.match_rx"), rx, format!("not a valid regular expression: {err}")),
            }
        }
    }
    Some(trigger)
}

/// Tyk's response cache for the version `pick` names: `cache_options` with `enable_cache` and
/// something to cache (all safe requests, or the version's `cache` / `advance_cache_config`
/// entries), else `None` (Tyk: mw_redis_cache.go:46-48, 163-176; api_definition.go:1027-1056).
pub(super) fn parse_cache(
    file: &std::path::Path,
    json: &Value,
    matching: PathMatching,
    pick: Pick<'_>,
    errs: &mut Vec<ConfigError>,
) -> Option<Arc<super::tyk_cache::CacheRules>> {
    use super::tyk_cache::{CachePath, CacheRules, DEFAULT_TTL_HEADER};
    let opts = json.get("cache_options").filter(|o| o.is_object())?;
    if !opts.get("enable_cache").is_some_and(super::truthy) {
        return None;
    }
    let mut cx = Cx { file, json, errs, matching };
    let mut paths = Vec::new();
    let version = version_at(&mut Cx { file, json, errs: &mut Vec::new(), matching }, pick);
    if let Some(VersionAt { ptr: base, extended: true, .. }) = version {
        // `cache`: paths, GET/HEAD/OPTIONS (Tyk's SAFE_METHODS).
        let ptr = format!("{base}/extended_paths/cache");
        if let Some(items) = cx.get(&ptr).cloned() {
            match items.as_array() {
                None => cx.err(&dotted(&ptr), super::brief(&items), "must be a list of paths"),
                Some(items) => {
                    for (i, p) in items.iter().enumerate() {
                        let field = format!("{}[{i}]", dotted(&ptr));
                        let Some(path) = p.as_str() else {
                            cx.err(&field, super::brief(p), "must be a path");
                            continue;
                        };
                        let safe = ["GET", "HEAD", "OPTIONS"].map(String::from).to_vec();
                        if let Some(rule) = path_rule(&mut cx, &field, path, Methods::Only(safe), false) {
                            paths.push(CachePath { rule, key_regex: None, codes: Vec::new(), timeout_secs: None });
                        }
                    }
                }
            }
        }
        for_each_middleware_entry(
            &mut cx,
            &format!("{base}/extended_paths/advance_cache_config"),
            |cx, field, e, rule| {
                let key_regex = match e.get("cache_key_regex").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                    None => None,
                    Some(r) => match regex::bytes::Regex::new(r) {
                        Ok(re) => Some(re),
                        Err(err) => {
                            cx.err(
                                &format!("{field}.cache_key_regex"),
                                r,
                                format!("not a valid regular expression: {err}"),
                            );
                            return;
                        }
                    },
                };
                let Some(codes) =
                    status_codes(cx, &format!("{field}.cache_response_codes"), e.get("cache_response_codes"))
                else {
                    return;
                };
                let timeout_secs = e.get("timeout").and_then(Value::as_i64).filter(|t| *t > 0).map(|t| t as u64);
                paths.push(CachePath { rule, key_regex, codes, timeout_secs });
            },
        );
    }
    let all_safe = opts.get("cache_all_safe_requests").is_some_and(super::truthy);
    if !all_safe && paths.is_empty() {
        return None;
    }
    let codes = status_codes(&mut cx, "cache_options.cache_response_codes", opts.get("cache_response_codes"))?;
    let timeout = opts.get("cache_timeout").unwrap_or(&Value::Null);
    let timeout_secs = match timeout {
        Value::Null => 0,
        v => match v.as_i64() {
            Some(t) if t >= 0 => t as u64,
            _ => {
                cx.err("cache_options.cache_timeout", super::brief(v), "must be a whole number of seconds, 0 or more");
                return None;
            }
        },
    };
    let headers = |k: &str| -> Vec<String> {
        opts.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter().filter_map(Value::as_str).filter(|s| !s.is_empty()).map(str::to_ascii_lowercase).collect()
            })
            .unwrap_or_default()
    };
    let by_headers = headers("cache_by_headers");
    if let Some(h) = by_headers.iter().find(|h| !valid_header_name(h)) {
        cx.err("cache_options.cache_by_headers", h.clone(), "not a valid header name");
        return None;
    }
    let ttl_header = opts
        .get("cache_control_ttl_header")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map_or(DEFAULT_TTL_HEADER.to_string(), str::to_ascii_lowercase);
    let upstream_control = opts.get("enable_upstream_cache_control").is_some_and(super::truthy);
    if timeout_secs == 0 && !upstream_control && paths.iter().all(|p| p.timeout_secs.is_none()) {
        tracing::warn!(file = %file.display(), field = "cache_options.cache_timeout",
            "0 (or absent): entries expire as they are stored, so nothing is served from the cache (as in Tyk)");
    }
    Some(Arc::new(CacheRules {
        timeout_secs,
        all_safe,
        codes,
        upstream_control,
        ttl_header,
        by_headers,
        paths,
        epoch: std::sync::atomic::AtomicU64::new(0),
    }))
}

/// A list of HTTP status codes (absent or null: empty).
fn status_codes(cx: &mut Cx<'_>, field: &str, v: Option<&Value>) -> Option<Vec<u16>> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Some(Vec::new()) };
    let codes: Option<Vec<u16>> = v
        .as_array()
        .and_then(|a| a.iter().map(|c| c.as_u64().filter(|c| (100..=599).contains(c)).map(|c| c as u16)).collect());
    if codes.is_none() {
        cx.err(field, super::brief(v), "must be a list of HTTP status codes");
    }
    codes
}
