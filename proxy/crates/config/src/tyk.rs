//! Tyk classic API definitions (`apps/*.json`) -> validated [`ApiSpec`].
//!
//! Two layers, as the style guide asks: `RawApi` mirrors the JSON (unknown fields ignored with a
//! debug log), `ApiSpec` is what the data plane uses. Fields that would change security or routing
//! semantics and that Portcullis does not implement yet make the API fail to load, with an error
//! naming file, field and value, rather than be silently mis-served.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use portcullis_policy::auth::ApiAuth;

use super::brief;
use super::tyk_auth::{parse_auth, parse_version_auth, JwksFetch, Pick};
use super::ConfigError;

/// One routable API, validated.
#[derive(Debug, Clone)]
pub struct ApiSpec {
    pub api_id: String,
    pub name: String,
    /// File it was loaded from.
    pub file: String,
    /// Host to match, lower case, without port; `None` matches any host.
    pub domain: Option<String>,
    /// Normalised listen path: starts with `/`, no trailing `/` (the root is the empty string).
    pub listen_path: String,
    pub strip_listen_path: bool,
    pub preserve_host_header: bool,
    /// Upstream targets; repeated entries weight round robin. Never empty.
    pub targets: Vec<Target>,
    /// Who may call it and how requests are changed (auth, IP rules, path lists, transforms).
    pub auth: Arc<ApiAuth>,
    /// Rate limits the definition sets.
    pub limits: portcullis_policy::limit::ApiLimits,
    /// Keyless with nothing to check, limit or change (the fast path); set by the loader.
    pub plain: bool,
    /// Tyk's `org_id`, written into request records.
    pub org_id: String,
    /// Tyk's `do_not_track`: no request records for this API.
    pub do_not_track: bool,
    /// Tyk's `enable_detailed_recording`: records carry the request and response as sent.
    pub detailed_recording: bool,
    /// Tyk's `expire_analytics_after`: seconds from a record's time to its `ExpireAt`; 0: the
    /// `[analytics] expire_after_s`.
    pub expire_analytics_after: u64,
    /// The definition as its file has it (`GET /tyk/apis` answers with it, as Tyk answers with
    /// the definitions it loaded).
    pub definition: Arc<Value>,
    /// Tyk's `error_overrides` for the errors Portcullis answers itself (`None`: none, or
    /// `error_overrides_disabled`).
    pub error_overrides: Option<Arc<super::ErrorOverrides>>,
    /// `track_endpoints`: a matching request is recorded under the entry's path pattern.
    pub track_endpoints: Vec<(portcullis_policy::path_rule::PathRule, String)>,
    /// `do_not_track_endpoints`: matching requests are not recorded.
    pub do_not_track_endpoints: Vec<portcullis_policy::path_rule::PathRule>,
    /// `circuit_breakers`: the first matching entry's breaker, shared by the workers.
    pub circuit_breakers:
        Vec<(portcullis_policy::path_rule::PathRule, Arc<portcullis_policy::limit::breaker::Breaker>)>,
    /// `validate_json`: request bodies of matching requests checked against a JSON schema.
    pub validate_json: Vec<(portcullis_policy::path_rule::PathRule, super::tyk_auth::JsonCheck)>,
    /// `enable_batch_request_support`: `POST <listen path>/tyk/batch/` runs a batch of requests
    /// to this API (`dataplane/batch.rs`).
    pub batch_requests: bool,
    /// `uptime_tests` with `proxy.check_host_against_uptime_tests` on a load-balanced API: the
    /// control plane checks the hosts (`control/uptime.rs`); targets on a host found down are
    /// skipped.
    pub uptime: Option<Arc<super::UptimeTests>>,
    /// A versioned API (`version_data.not_versioned` false or absent): how a request's version
    /// is found. Each version is an `ApiSpec` of its own (its lists, limits, target; the
    /// snapshot's [`crate::Snapshot::api`] at [`Version::index`]) that the route phase serves
    /// the request as; this one serves none itself. `None`: not versioned.
    ///
    /// [`Version::index`]: portcullis_policy::version::Version::index
    pub versioning: Option<Box<portcullis_policy::version::Versioning>>,
    /// `url_rewrites` (`None`: none). Its absolute `rewrite_to`s name [`ApiSpec::rewrite_targets`].
    pub rewrites: Option<Arc<portcullis_policy::rewrite::Rewrites>>,
    /// The hosts of absolute `rewrite_to` URLs: targets `targets.len()..` of [`ApiSpec::target`].
    pub rewrite_targets: Vec<Target>,
    /// Tyk's response cache (`cache_options`; `None`: off or nothing to cache), applied by the
    /// data plane's per-worker cache (`dataplane/cache.rs`).
    pub cache: Option<Arc<super::CacheRules>>,
    /// Tyk's mutual TLS (`use_mutual_tls_auth` with `client_certificates`): the client
    /// certificates a request's TLS connection must have presented (`None`: off).
    pub mutual_tls: Option<Arc<portcullis_tls::mtls::ClientCertPolicy>>,
    /// Tyk's `certificates`: served on the TLS listener, chosen by their own names, over the
    /// listener's own (Tyk: gateway/cert.go:535-550).
    pub certificates: Vec<portcullis_tls::Loaded>,
    /// Tyk's `expiration` of a non-versioned API, Unix seconds: from then on its requests are
    /// refused, 403 `API has expired, please check documentation or contact administrator`.
    pub expired_after: Option<u64>,
    /// Tyk's `X-Tyk-Api-Expires` on its responses (RFC 1123, UTC): the API's `expiration`,
    /// else its version's `expires`.
    pub expires_header: Option<Arc<str>>,
    /// API visibility: sampling, mode and the provided OpenAPI document (set by the snapshot
    /// loader, `visibility.rs`).
    pub visibility: Arc<super::Visibility>,
}

impl ApiSpec {
    /// Target `i`: one of `targets`, or after them one of `rewrite_targets` (where a rewrite to
    /// an absolute URL sends a request).
    pub fn target(&self, i: usize) -> &Target {
        match self.targets.get(i) {
            Some(t) => t,
            None => &self.rewrite_targets[i - self.targets.len()],
        }
    }

    /// The part of a routed request's canonical `path` below the listen path, `/` when
    /// nothing is left: what extended-path rules match.
    pub fn rel_path<'p>(&self, path: &'p str) -> &'p str {
        path.get(self.listen_path.len().min(path.len())..).filter(|r| !r.is_empty()).unwrap_or("/")
    }
}

/// One upstream target. An IP address is used as written; a host name is resolved when a
/// request needs it (through the control plane, cached per worker: `[proxy] dns_ttl_secs`), so
/// a name that does not resolve now fails that request, not the definition (as Tyk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// As written in the definition.
    pub url: String,
    /// The address, when the host is an IP literal.
    pub addr: Option<SocketAddr>,
    /// The host as written (without brackets) and the port, for resolving a name.
    pub host: String,
    pub port: u16,
    /// Value for the upstream `Host` header (`host` or `host:port`).
    pub host_header: String,
    /// Path prefix of the target URL without trailing `/` (empty for `/`).
    pub path_prefix: String,
    /// `https://`: how the connection is made secure (docs/tls.md, "HTTPS upstreams").
    pub tls: Option<super::tyk_upstream_tls::UpstreamTls>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawApi {
    name: String,
    api_id: String,
    /// Absent: loaded (Tyk loads file-based definitions whatever `active` says; an absent field
    /// is the common case, Tyk's own `apps/*.json` have none). `false`: skipped and listed by
    /// `check`, `/hello` and `/tyk/reload`: stricter than Tyk, which loads it anyway
    /// (docs/tyk-compatibility.md).
    active: Option<bool>,
    use_keyless: bool,
    domain: String,
    org_id: String,
    do_not_track: bool,
    enable_detailed_recording: bool,
    expire_analytics_after: i64,
    proxy: RawProxy,
    /// Client certificates for HTTPS upstreams, by host pattern (see `tyk_upstream_tls`).
    upstream_certificates: std::collections::BTreeMap<String, String>,
    upstream_certificates_disabled: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawProxy {
    listen_path: String,
    target_url: String,
    strip_listen_path: bool,
    preserve_host_header: bool,
    enable_load_balancing: bool,
    target_list: Vec<String>,
    transport: super::tyk_upstream_tls::RawTransport,
}

/// Fields that change security or routing semantics and are not implemented yet: an API that
/// sets any of them to a truthy value (true, non-zero, non-empty) is rejected.
const UNSUPPORTED: &[(&str, &str)] = &[
    // `auth_configs.oauth` is read only when `use_oauth2` is on (Tyk: mw_oauth2_key_exists.go,
    // `EnabledForSpec` is `UseOauth2`): every Dashboard export carries the block, disabled.
    ("/use_oauth2", "OAuth2"),
    ("/enable_jwt_scope_to_policy_mapping", "JWT scope to policy mapping"),
    ("/jwt_scope_to_policy_mapping", "JWT scope to policy mapping"),
    ("/jwt_client_base_field", "JWT client id lookup"),
    ("/jwt_issued_at_validation_skew_enabled", "this JWT option"),
    ("/auth/signature/use", "request signature validation of auth tokens"),
    ("/auth_configs/authToken/signature/use", "request signature validation of auth tokens"),
    ("/auth_configs/authToken/use_certificate", "certificate-bound tokens"),
    ("/basic_auth/extract_from_body", "basic auth credentials from the body"),
    ("/enable_context_vars_for_body", "body context variables"),
    ("/use_openid", "OpenID Connect"),
    ("/use_go_plugin_auth", "Go plugin auth"),
    ("/enable_coprocess_auth", "coprocess auth"),
    ("/internal", "internal-only APIs"),
    // Versions as APIs of their own (the base API names them by id); classic `version_data`
    // versioning is supported.
    ("/definition/enabled", "versioning by separate APIs (definition.enabled)"),
    ("/CORS/enable", "CORS handling"),
    ("/custom_middleware/pre", "custom middleware"),
    ("/custom_middleware/post", "custom middleware"),
    ("/custom_middleware/post_key_auth", "custom middleware"),
    ("/custom_middleware/auth_check/name", "custom middleware"),
    ("/custom_middleware/response", "custom middleware"),
    ("/custom_middleware_bundle", "custom middleware bundles"),
    ("/proxy/service_discovery/use_discovery_service", "service discovery"),
    ("/proxy/transport/proxy_url", "an HTTP proxy in front of the upstream (proxy.transport.proxy_url)"),
    ("/pinned_public_keys", "public key pinning of upstream certificates"),
];

/// Per-version keys that are not implemented yet (paths, transforms, per-endpoint behaviour).
const UNSUPPORTED_VERSION_KEYS: &[&str] =
    &["global_response_headers", "global_response_headers_remove", "ignore_endpoint_case"];

/// Extended-path middleware Portcullis implements.
const SUPPORTED_EXTENDED: &[&str] = &[
    "ignored",
    "white_list",
    "black_list",
    "transform_headers",
    "rate_limit",
    "size_limits",
    "track_endpoints",
    "do_not_track_endpoints",
    "validate_json",
    "circuit_breakers",
    "url_rewrites",
    // Tyk's released gateways are built without jq: they log "JQ transform not supported." and
    // skip these (gateway/mw_transform_jq_dummy.go:20-27; the real one needs `-tags jq`, which
    // ci/goreleaser/goreleaser.yml does not set). Loaded with the same warning, as skipped.
    "transform_jq",
    "transform_jq_response",
    // Response caching: loaded with a warning (see `parse_api`).
    "cache",
    "advance_cache_config",
];

/// Outcome of parsing one definition file.
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "one per definition file at load, moved into the snapshot at once")]
pub(super) enum Parsed {
    /// An API, and the versions of a versioned one (see [`ApiSpec::versioning`]).
    Api(ApiSpec, Vec<ApiSpec>),
    /// `active: false`: skipped (and listed; Tyk would load it).
    Inactive { api_id: String },
}

/// Parses and validates one API definition. Returns every problem found in it.
pub(super) fn parse_api(
    file: &Path,
    text: &str,
    fetch: JwksFetch<'_>,
    matching: portcullis_policy::path_rule::PathMatching,
    trust: &super::tyk_upstream_tls::UpstreamTrust,
) -> Result<Parsed, Vec<ConfigError>> {
    let err = |field: &str, value: String, msg: String| ConfigError::new(file, field, value, msg);
    let json: Value =
        serde_json::from_str(text).map_err(|e| vec![err("", String::new(), format!("not valid JSON: {e}"))])?;
    // A Tyk OAS definition on its own (no classic companion, see `snapshot::api_files`): refused
    // by name, never read as a classic definition with nothing in it.
    for key in ["openapi", "swagger"] {
        if let Some(v) = json.get(key) {
            let msg = "a Tyk OAS API definition (an OpenAPI document with x-tyk-api-gateway) is not supported yet; \
                       load its classic definition, which Tyk keeps beside it as <name>.json with is_oas: true";
            return Err(vec![err(key, brief(v), msg.into())]);
        }
    }
    let mut ignored = Vec::new();
    let raw: RawApi = {
        let mut on_ignored = |path: serde_ignored::Path<'_>| ignored.push(path.to_string());
        let de = serde_ignored::Deserializer::new(&json, &mut on_ignored);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let value = json.pointer(&format!("/{}", field.replace('.', "/"))).map(brief).unwrap_or_default();
            vec![err(&field, value, e.into_inner().to_string())]
        })?
    };
    for key in ["transform_jq", "transform_jq_response"] {
        let versions = json.pointer("/version_data/versions").and_then(Value::as_object);
        for (vname, v) in versions.into_iter().flatten() {
            if v.pointer(&format!("/extended_paths/{key}")).is_some_and(super::truthy) {
                tracing::warn!(file = %file.display(), field = %format!("version_data.versions.{vname}.extended_paths.{key}"),
                    "JQ transform not supported: skipped, as Tyk's released gateways skip it");
            }
        }
    }
    if !ignored.is_empty() {
        tracing::debug!(file = %file.display(), fields = ?ignored, "ignoring API definition fields Portcullis does not use");
    }
    if raw.active == Some(false) {
        return Ok(Parsed::Inactive { api_id: raw.api_id });
    }

    let mut errs = Vec::new();
    if raw.api_id.is_empty() {
        errs.push(err("api_id", String::new(), "is required".into()));
    }
    let _ = raw.use_keyless;
    for (ptr, what) in UNSUPPORTED {
        if let Some(v) = json.pointer(ptr).filter(|v| super::truthy(v)) {
            errs.push(err(&ptr[1..].replace('/', "."), brief(v), format!("{what} is not supported yet")));
        }
    }
    if let Some(versions) = json.pointer("/version_data/versions").and_then(Value::as_object) {
        for (vname, version) in versions {
            if let Some(ext) = version.get("extended_paths").and_then(Value::as_object) {
                for (k, v) in ext.iter().filter(|(k, v)| super::truthy(v) && !SUPPORTED_EXTENDED.contains(&k.as_str()))
                {
                    errs.push(err(
                        &format!("version_data.versions.{vname}.extended_paths.{k}"),
                        brief(v),
                        "extended path middleware is not supported yet".into(),
                    ));
                }
            }
            for key in UNSUPPORTED_VERSION_KEYS {
                if let Some(v) = version.pointer(&format!("/{key}")).filter(|v| super::truthy(v)) {
                    errs.push(err(
                        &format!("version_data.versions.{vname}.{}", key.replace('/', ".")),
                        brief(v),
                        "is not supported yet".into(),
                    ));
                }
            }
        }
    }
    // Tyk reads a missing `not_versioned` as false: the API is versioned (api_definition.go:2413-2462).
    let versioned = super::tyk_version::is_versioned(file, &json, &mut errs);
    super::tyk_version::check_names(file, &json, &mut errs);
    let plan = match versioned {
        Some(true) => super::tyk_version::parse(file, &json, &mut errs),
        _ => {
            let versions = json.pointer("/version_data/versions").and_then(Value::as_object);
            for (vname, v) in versions.into_iter().flatten() {
                if let Some(t) = v.get("override_target").filter(|t| super::truthy(t)) {
                    tracing::warn!(file = %file.display(), field = %format!("version_data.versions.{vname}.override_target"),
                        value = %brief(t), "ignored on a non-versioned API, as Tyk ignores it (api_loader.go:367-373)");
                }
            }
            None
        }
    };
    // Tyk's API-level `expiration` (api_definition.go:301-308): a non-versioned API is refused
    // from then on (2373-2374, 2396-2409), and every API says when in `X-Tyk-Api-Expires`
    // (mw_version_check.go:169-173), else its version's `expires` does.
    let expiration = match json.get("expiration") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() || s == "-1" => None,
        Some(Value::String(s)) => match super::tyk_version::parse_expiry(s) {
            Some(t) => Some(t),
            None => {
                // Tyk loads it and refuses every request ("Could not parse expiration date, disallow").
                let msg = "must be a date as Tyk writes it, \"2006-01-02 15:04\" (UTC), or \"\" / \"-1\" for never";
                errs.push(err("expiration", s.clone(), msg.to_string()));
                None
            }
        },
        Some(other) => {
            errs.push(err("expiration", brief(other), "must be a string".to_string()));
            None
        }
    };
    let default_expires = if versioned == Some(false) { default_version_expires(&json) } else { None };
    let expires_header = |version_expires: Option<u64>| {
        expiration.or(version_expires).map(|t| Arc::<str>::from(super::tyk_version::rfc1123_utc(t)))
    };

    let domain = match normalise_domain(&raw.domain) {
        Ok(d) => d,
        Err(msg) => {
            errs.push(err("domain", raw.domain.clone(), msg));
            None
        }
    };
    let listen_path = match normalise_listen_path(&raw.proxy.listen_path) {
        Ok(p) => p,
        Err(msg) => {
            errs.push(err("proxy.listen_path", raw.proxy.listen_path.clone(), msg));
            String::new()
        }
    };

    let client_certs =
        if raw.upstream_certificates_disabled { Default::default() } else { raw.upstream_certificates.clone() };
    let tls = super::tyk_upstream_tls::TargetTls::new(file, &raw.proxy.transport, client_certs, trust);
    let parse_target = |s: &str| parse_target(s, &tls);
    let mut targets = Vec::new();
    if raw.proxy.enable_load_balancing {
        if raw.proxy.target_list.is_empty() {
            errs.push(err(
                "proxy.target_list",
                "[]".into(),
                "enable_load_balancing is true but target_list is empty".into(),
            ));
        }
        for (i, t) in raw.proxy.target_list.iter().enumerate() {
            match parse_target(t) {
                Ok(t) => targets.push(t),
                Err(msg) => errs.push(err(&format!("proxy.target_list[{i}]"), t.clone(), msg)),
            }
        }
    } else {
        match parse_target(&raw.proxy.target_url) {
            Ok(t) => targets.push(t),
            Err(msg) => errs.push(err("proxy.target_url", raw.proxy.target_url.clone(), msg)),
        }
    }

    let mut auth = parse_auth(file, &json, fetch, matching, &mut errs);
    let base_pick = if versioned == Some(false) { Pick::Default } else { Pick::None };
    parse_version_auth(file, &json, matching, base_pick, &mut errs, &mut auth);
    let limits = super::tyk_auth::parse_limits(file, &json, matching, base_pick, &mut errs);
    let error_overrides = super::tyk_errors::parse(file, &json, &mut errs).map(Arc::new);
    let uptime = super::tyk_uptime::errors(file, &json, &mut errs).map(Arc::new);
    let (track_endpoints, do_not_track_endpoints) =
        super::tyk_auth::parse_tracking(file, &json, matching, base_pick, &mut errs);
    let validate_json = super::tyk_auth::parse_validate_json(file, &json, matching, base_pick, &mut errs);
    let circuit_breakers = super::tyk_auth::parse_circuit_breakers(file, &json, matching, base_pick, &mut errs);
    let (rewrites, rewrite_targets) = parse_rewrites(file, &json, matching, base_pick, &tls, &mut errs);
    let cache = super::tyk_auth::parse_cache(file, &json, matching, base_pick, &mut errs);
    let mutual_tls = super::tyk_upstream_tls::mutual_tls(file, &json, &mut errs);
    let certificates = super::tyk_upstream_tls::server_certificates(file, &json, &mut errs);
    let plain = plan.is_none()
        && mutual_tls.is_none()
        && rewrites.is_none()
        && versioned == Some(false)
        && auth.is_plain()
        && limits.is_empty()
        && validate_json.is_empty()
        && circuit_breakers.is_empty();
    let batch_requests = json.get("enable_batch_request_support").is_some_and(super::truthy);
    let mut base = ApiSpec {
        definition: Arc::new(json),
        limits,
        auth: Arc::new(auth),
        plain,
        name: if raw.name.is_empty() { raw.api_id.clone() } else { raw.name },
        api_id: raw.api_id,
        file: file.display().to_string(),
        domain,
        listen_path,
        strip_listen_path: raw.proxy.strip_listen_path,
        preserve_host_header: raw.proxy.preserve_host_header,
        targets,
        org_id: raw.org_id,
        do_not_track: raw.do_not_track,
        detailed_recording: raw.enable_detailed_recording,
        // Tyk takes a negative value as none (0 is its 100 years too).
        expire_analytics_after: u64::try_from(raw.expire_analytics_after).unwrap_or(0),
        error_overrides,
        track_endpoints,
        do_not_track_endpoints,
        validate_json,
        circuit_breakers,
        batch_requests,
        uptime,
        versioning: None,
        rewrites,
        rewrite_targets,
        cache,
        mutual_tls,
        certificates,
        expired_after: if versioned == Some(false) { expiration } else { None },
        expires_header: expires_header(default_expires),
        visibility: Arc::default(),
    };
    let mut versions = Vec::new();
    if let Some(plan) = plan {
        // Each version: the API with the version's own lists, limits and target.
        let json = Arc::clone(&base.definition);
        for (i, v) in plan.versions.iter().enumerate() {
            let pick = Pick::Named(&v.name);
            let expires = expires_header(plan.versioning.versions.get(i).and_then(|v| v.expires));
            let mut auth = (*base.auth).clone();
            auth.version = Some(v.name.clone());
            auth.strip_version_param.clone_from(&plan.strip_param);
            parse_version_auth(file, &json, matching, pick, &mut errs, &mut auth);
            if let Some(h) = &plan.strip_header {
                auth.transforms.global_remove.push(h.clone());
            }
            let limits = super::tyk_auth::parse_limits(file, &json, matching, pick, &mut errs);
            let (track_endpoints, do_not_track_endpoints) =
                super::tyk_auth::parse_tracking(file, &json, matching, pick, &mut errs);
            let validate_json = super::tyk_auth::parse_validate_json(file, &json, matching, pick, &mut errs);
            let circuit_breakers = super::tyk_auth::parse_circuit_breakers(file, &json, matching, pick, &mut errs);
            let (rewrites, rewrite_targets) = parse_rewrites(file, &json, matching, pick, &tls, &mut errs);
            let cache = super::tyk_auth::parse_cache(file, &json, matching, pick, &mut errs);
            let targets = match &v.target {
                None => base.targets.clone(),
                Some((field, url)) => match parse_target(url) {
                    Ok(t) => vec![t],
                    Err(msg) => {
                        errs.push(err(field, url.clone(), msg));
                        Vec::new()
                    }
                },
            };
            let plain = auth.is_plain()
                && base.mutual_tls.is_none()
                && limits.is_empty()
                && validate_json.is_empty()
                && circuit_breakers.is_empty()
                && rewrites.is_none();
            versions.push(ApiSpec {
                auth: Arc::new(auth),
                limits,
                plain,
                targets,
                track_endpoints,
                do_not_track_endpoints,
                validate_json,
                circuit_breakers,
                rewrites,
                rewrite_targets,
                cache,
                expires_header: expires,
                ..base.clone()
            });
        }
        base.versioning = Some(Box::new(plan.versioning));
    }
    if !errs.is_empty() {
        // A version's parse reports the API-level problems it meets again: each once.
        let mut seen = std::collections::HashSet::new();
        errs.retain(|e| seen.insert(e.to_string()));
        return Err(errs);
    }
    Ok(Parsed::Api(base, versions))
}

/// The `expires` of the version a non-versioned API serves (Tyk's `GetSingleOrDefaultVersion`:
/// the only one, else `Default`, `default` or ``), when it is a date: only its header reads it.
fn default_version_expires(json: &Value) -> Option<u64> {
    let versions = json.pointer("/version_data/versions").and_then(Value::as_object)?;
    let v = versions.get(super::tyk_version::default_version_name(versions)?)?;
    v.get("expires").and_then(Value::as_str).and_then(super::tyk_version::parse_expiry)
}

/// The version's `url_rewrites` and the targets their absolute `rewrite_to`s name.
fn parse_rewrites(
    file: &Path,
    json: &Value,
    matching: portcullis_policy::path_rule::PathMatching,
    pick: Pick<'_>,
    tls: &super::tyk_upstream_tls::TargetTls<'_>,
    errs: &mut Vec<ConfigError>,
) -> (Option<Arc<portcullis_policy::rewrite::Rewrites>>, Vec<Target>) {
    let (rewrites, hosts) = super::tyk_auth::parse_url_rewrites(file, json, matching, pick, errs);
    let mut targets = Vec::new();
    for (field, url) in hosts {
        match parse_target(&url, tls) {
            Ok(t) => targets.push(t),
            Err(msg) => errs.push(ConfigError::new(file, &field, url, msg)),
        }
    }
    (rewrites.map(Arc::new), targets)
}

fn normalise_listen_path(p: &str) -> Result<String, String> {
    if p.is_empty() {
        return Err("is required".into());
    }
    if !p.starts_with('/') {
        return Err("must start with '/'".into());
    }
    if p.contains(['{', '}', '*', '?', '#', ' ']) {
        return Err("patterns, queries and spaces in listen paths are not supported".into());
    }
    Ok(p.trim_end_matches('/').to_string())
}

fn normalise_domain(d: &str) -> Result<Option<String>, String> {
    let d = d.trim();
    if d.is_empty() {
        return Ok(None);
    }
    if d.contains(['{', '}', '*', '/', ' ']) {
        return Err("only plain host names are supported (no patterns or paths)".into());
    }
    Ok(Some(strip_port(d).to_ascii_lowercase()))
}

/// `host:port` -> `host`, leaving IPv6 literals (`[::1]:80`) as `[::1]`.
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map(|i| &host[..=i]).unwrap_or(host);
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

fn parse_target(s: &str, tls: &super::tyk_upstream_tls::TargetTls<'_>) -> Result<Target, String> {
    if s.is_empty() {
        return Err("is required".into());
    }
    let url = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    let https = match url.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(format!("unsupported scheme {other:?}")),
    };
    let host = url.host_str().ok_or("has no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = bare.parse::<std::net::IpAddr>().ok().map(|ip| SocketAddr::new(ip, port));
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    if url.query().is_some() {
        return Err("query strings in target URLs are not supported".into());
    }
    let tls = if https { Some(tls.for_target(bare, &host_header)?) } else { None };
    Ok(Target {
        url: s.to_string(),
        addr,
        host: bare.to_string(),
        port,
        host_header,
        path_prefix: url.path().trim_end_matches('/').to_string(),
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(json: &str) -> Result<Parsed, Vec<ConfigError>> {
        parse_api(
            Path::new("apps/t.json"),
            json,
            &|u: &str| Err(format!("no network in tests: {u}")),
            Default::default(),
            &Default::default(),
        )
    }

    fn spec(json: &str) -> ApiSpec {
        match api(json) {
            Ok(Parsed::Api(s, _)) => s,
            other => panic!("expected an API, got {other:?}"),
        }
    }

    #[test]
    fn detailed_recording_and_analytics_expiry_are_read() {
        let base = r#""api_id": "a", "use_keyless": true, "proxy": {"listen_path": "/a", "target_url": "http://127.0.0.1:1"},
                "version_data": {"not_versioned": true, "versions": {"Default": {}}}"#;
        let s = spec(&format!(r#"{{{base}, "enable_detailed_recording": true, "expire_analytics_after": 3600}}"#));
        assert!(s.detailed_recording);
        assert_eq!(s.expire_analytics_after, 3600);
        let s = spec(&format!(r#"{{{base}, "expire_analytics_after": -1}}"#));
        assert!(!s.detailed_recording);
        assert_eq!(s.expire_analytics_after, 0, "negative: none, as in Tyk");
    }

    /// Tyk matches header injection and endpoint rate limits on their `method` exactly, and an
    /// entry without one matches no request (gateway/model_urlspec.go:133-184). Before, an
    /// entry without a method applied to every method.
    #[test]
    fn transform_and_endpoint_limit_entries_without_a_method_match_nothing() {
        let s = spec(
            r#"{"api_id": "a", "use_keyless": true, "proxy": {"listen_path": "/a", "target_url": "http://127.0.0.1:1"},
                "version_data": {"not_versioned": true, "versions": {"Default": {"use_extended_paths": true,
                  "extended_paths": {
                    "transform_headers": [{"path": "/x", "add_headers": {"X-A": "1"}}, {"path": "/x", "method": "GET", "add_headers": {"X-B": "1"}}],
                    "rate_limit": [{"path": "/x", "rate": 1, "per": 1}, {"path": "/x", "method": "POST", "rate": 1, "per": 1}]}}}}}"#,
        );
        let t = &s.auth.transforms.per_path;
        assert_eq!(t.len(), 2);
        for m in ["GET", "POST", ""] {
            assert!(!t[0].rule.matches(m, "/x", "/a/x"), "{m}");
            assert!(!s.limits.endpoints[0].0.matches(m, "/x", "/a/x"), "{m}");
        }
        assert!(t[1].rule.matches("GET", "/x", "/a/x") && !t[1].rule.matches("POST", "/x", "/a/x"));
        assert!(
            s.limits.endpoints[1].0.matches("POST", "/x", "/a/x")
                && !s.limits.endpoints[1].0.matches("GET", "/x", "/a/x")
        );
    }

    /// `cache_options` as Tyk reads it (mw_redis_cache.go:163-206, api_definition.go:1027-1056):
    /// nothing to cache is no cache; `cache` paths are GET/HEAD/OPTIONS; an entry's codes and
    /// timeout override the API's; bad values are refused naming their field.
    #[test]
    fn cache_options_compile_as_tyk_reads_them() {
        let def = |opts: &str, ext: &str| {
            format!(
                r#"{{"api_id": "a", "use_keyless": true, "proxy": {{"listen_path": "/a", "target_url": "http://127.0.0.1:1"}},
                    "cache_options": {opts},
                    "version_data": {{"not_versioned": true, "versions": {{"Default": {{"use_extended_paths": true,
                      "extended_paths": {ext}}}}}}}}}"#
            )
        };
        let on = r#"{"enable_cache": true, "cache_timeout": 30, "cache_response_codes": [200, 201]}"#;
        assert!(spec(&def(on, "{}")).cache.is_none(), "nothing to cache");
        let off = r#"{"enable_cache": false, "cache_all_safe_requests": true}"#;
        assert!(spec(&def(off, "{}")).cache.is_none());
        let ext = r#"{"cache": ["/items"], "advance_cache_config": [{"method": "POST", "path": "/search", "cache_response_codes": [202], "timeout": 5}]}"#;
        let c = spec(&def(on, ext)).cache.expect("a cache");
        assert_eq!(c.matches("GET", "/items", "/a/items"), Some(Some(0)));
        assert_eq!(c.matches("HEAD", "/items/1", "/a/items/1"), Some(Some(0)));
        assert_eq!(c.matches("POST", "/items", "/a/items"), None);
        assert_eq!(c.matches("POST", "/search", "/a/search"), Some(Some(1)));
        assert_eq!(c.matches("GET", "/other", "/a/other"), None);
        assert_eq!(c.limits(Some(0)), (&[200u16, 201][..], 30));
        assert_eq!(c.limits(Some(1)), (&[202u16][..], 5));
        let all = r#"{"enable_cache": true, "cache_all_safe_requests": true, "cache_by_headers": ["X-Tenant"]}"#;
        let c = spec(&def(all, "{}")).cache.expect("a cache");
        assert_eq!(c.matches("OPTIONS", "/x", "/a/x"), Some(None));
        assert_eq!(c.by_headers, vec!["x-tenant".to_string()]);
        assert_eq!(c.ttl_header, "x-tyk-cache-action-set-ttl");

        for (opts, ext, field) in [
            (
                r#"{"enable_cache": true, "cache_all_safe_requests": true, "cache_timeout": -1}"#,
                "{}",
                "cache_options.cache_timeout",
            ),
            (
                r#"{"enable_cache": true, "cache_all_safe_requests": true, "cache_response_codes": ["200"]}"#,
                "{}",
                "cache_options.cache_response_codes",
            ),
            (
                on,
                r#"{"advance_cache_config": [{"method": "POST", "path": "/s", "cache_key_regex": "("}]}"#,
                "advance_cache_config[0].cache_key_regex",
            ),
            (on, r#"{"cache": [{"path": "/x"}]}"#, "extended_paths.cache[0]"),
        ] {
            let errs = api(&def(opts, ext)).expect_err("refused");
            assert!(errs.iter().any(|e| e.to_string().contains(field)), "{field}: {errs:?}");
        }
    }

    /// Tyk's `expiration` (api_definition.go:301-308, 2396-2409): a date refuses a
    /// non-versioned API from then on and is its `X-Tyk-Api-Expires`; a version's `expires` is
    /// the header when there is none; an unreadable date is refused by name.
    #[test]
    fn expiration_dates_are_read_as_tyk_reads_them() {
        let def = |top: &str, expires: &str| {
            format!(
                r#"{{"api_id": "a", "use_keyless": true, {top} "proxy": {{"listen_path": "/a", "target_url": "http://127.0.0.1:1"}},
                    "version_data": {{"not_versioned": true, "versions": {{"Default": {{"expires": "{expires}"}}}}}}}}"#
            )
        };
        let s = spec(&def(r#""expiration": "2030-05-06 07:08","#, "2040-01-01 00:00"));
        assert_eq!(s.expired_after, Some(1_904_281_680));
        assert_eq!(s.expires_header.as_deref(), Some("Mon, 06 May 2030 07:08:00 UTC"));
        let s = spec(&def(r#""expiration": "-1","#, "2040-01-01 00:00"));
        assert_eq!((s.expired_after, s.expires_header.as_deref()), (None, Some("Sun, 01 Jan 2040 00:00:00 UTC")));
        let s = spec(&def("", ""));
        assert_eq!((s.expired_after, s.expires_header), (None, None));
        let errs = api(&def(r#""expiration": "2030-05-06","#, "")).expect_err("refused");
        assert!(errs.iter().any(|e| e.to_string().contains("expiration")), "{errs:?}");
    }

    #[test]
    fn seed_httpbin_definition_loads() {
        let s = spec(include_str!("../../../../apps/httpbin.json"));
        assert_eq!(s.api_id, "httpbin");
        assert_eq!(s.listen_path, "/httpbin");
        assert!(s.strip_listen_path);
        assert_eq!(s.targets[0].host_header, "127.0.0.1:8081");
    }

    /// Tyk reads `extended_paths` only with `use_extended_paths: true` (api_definition.go:403-408);
    /// a black list written there without it would silently protect nothing, so it is refused.
    #[test]
    fn extended_paths_without_use_extended_paths_are_refused_by_name() {
        let def = |use_ext: &str| {
            format!(
                r#"{{"api_id": "a", "use_keyless": true, "proxy": {{"listen_path": "/a", "target_url": "http://127.0.0.1:1"}},
                  "version_data": {{"not_versioned": true, "versions": {{"Default": {{"name": "Default" {use_ext},
                     "extended_paths": {{"black_list": [{{"path": "/admin"}}]}}}}}}}}}}"#
            )
        };
        let errs = api(&def("")).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "version_data.versions.Default.use_extended_paths");
        assert!(errs[0].to_string().contains("black_list"), "{}", errs[0]);
        let s = spec(&def(r#", "use_extended_paths": true"#));
        assert_eq!(s.auth.black_list.len(), 1);
    }

    /// A versioned definition (`not_versioned` false or absent) with `definition` and versions
    /// `v1` (a black list, an override target, an expiry) and `v2`.
    fn versioned(version_data: &str, definition: &str) -> String {
        format!(
            r#"{{"api_id": "v", "use_keyless": true, "proxy": {{"listen_path": "/v", "target_url": "http://127.0.0.1:1"}},
              "definition": {definition}, "version_data": {version_data}}}"#
        )
    }

    const TWO: &str = r#"{"not_versioned": false, "default_version": "v1", "versions": {
        "v1": {"name": "v1", "expires": "2080-07-28 15:00", "override_target": "http://127.0.0.2:9/one",
               "use_extended_paths": true, "extended_paths": {"black_list": [{"path": "/admin", "method": "GET"}],
               "rate_limit": [{"path": "/search", "method": "GET", "rate": 2, "per": 1}]}},
        "v2": {"name": "v2", "expires": "", "use_extended_paths": true,
               "extended_paths": {"white_list": [{"path": "/open", "method": "GET"}]}}}}"#;

    fn versioned_api(json: &str) -> (ApiSpec, Vec<ApiSpec>) {
        match api(json) {
            Ok(Parsed::Api(s, v)) => (s, v),
            other => panic!("expected an API, got {other:?}"),
        }
    }

    /// Tyk's classic versioning (gateway/api_definition.go:2283-2462): each version is compiled
    /// with its own lists, limits and target (multi_target_proxy_handler.go:48-75), the key's
    /// versions are checked against it (mw_access_rights.go:43-63).
    #[test]
    fn versioned_definitions_load_each_version_as_its_own_api() {
        use portcullis_policy::version::Location;
        let (base, versions) = versioned_api(&versioned(TWO, r#"{"location": "header", "key": "x-api-version"}"#));
        let v = base.versioning.as_deref().expect("versioned");
        assert!(!base.plain);
        assert_eq!((v.location, v.key.as_str(), v.default.as_str()), (Location::Header, "x-api-version", "v1"));
        assert!(!v.strip_url && !v.fallback_to_default);
        let names: Vec<_> = v.versions.iter().map(|x| (x.name.as_str(), x.index, x.expires)).collect();
        assert_eq!(names, [("v1", 0, Some(3_489_404_400)), ("v2", 1, None)]);
        let (v1, v2) = (&versions[0], &versions[1]);
        assert_eq!(v1.auth.version.as_deref(), Some("v1"));
        assert_eq!((v1.auth.black_list.len(), v1.auth.white_list.len()), (1, 0));
        assert_eq!((v2.auth.black_list.len(), v2.auth.white_list.len()), (0, 1));
        assert_eq!(v1.targets[0].url, "http://127.0.0.2:9/one");
        assert_eq!(v1.targets[0].path_prefix, "/one");
        assert_eq!(v2.targets[0].url, "http://127.0.0.1:1", "no override: the API's target");
        assert_eq!((v1.limits.endpoints.len(), v2.limits.endpoints.len()), (1, 0));
        assert!(base.auth.black_list.is_empty() && base.limits.endpoints.is_empty(), "the base serves nothing itself");

        // Absent `not_versioned` is false in Tyk (a Go bool): versioned.
        let absent = TWO.replacen(r#""not_versioned": false, "#, "", 1);
        assert!(versioned_api(&versioned(&absent, "{}")).0.versioning.is_some());
    }

    #[test]
    fn version_locations_keys_and_strips_read_as_tyk_reads_them() {
        use portcullis_policy::version::Location;
        let loc = |def: &str| {
            let (base, versions) = versioned_api(&versioned(TWO, def));
            let v = *base.versioning.unwrap();
            (v, versions)
        };
        let (v, versions) = loc(r#"{"location": "url-param", "key": "version", "strip_versioning_data": true}"#);
        assert_eq!((v.location, v.key.as_str()), (Location::Param, "version"));
        assert_eq!(versions[0].auth.strip_version_param.as_deref(), Some("version"));
        assert!(!versions[0].plain, "the query is re-encoded");
        let (v, versions) = loc(r#"{"location": "header", "key": "X-API-Version", "strip_versioning_data": true}"#);
        assert_eq!(v.location, Location::Header);
        assert_eq!(versions[1].auth.transforms.global_remove, ["x-api-version"]);
        // `strip_path` strips URL versions only (api_definition.go:2326).
        let (v, versions) = loc(r#"{"location": "header", "key": "k", "strip_path": true}"#);
        assert!(versions[1].auth.transforms.global_remove.is_empty() && v.strip_url);
        let (v, _) = loc(r#"{"location": "url", "strip_path": true, "url_versioning_pattern": "^v[0-9]+$"}"#);
        assert_eq!(v.location, Location::Url);
        assert!(v.strip_url && v.url_pattern.is_some());
        // No location: Tyk reads no version from the request; the default serves every request.
        let (v, _) = loc("{}");
        assert_eq!((v.location, v.key.as_str()), (Location::None, ""));
        let (v, _) = loc(r#"{"location": "url", "fallback_to_default": true}"#);
        assert!(v.fallback_to_default);
    }

    #[test]
    fn bad_versioning_values_are_refused_with_file_field_and_value() {
        let one = |version: &str| format!(r#"{{"not_versioned": false, "versions": {{"v1": {version}}}}}"#);
        let cases = [
            (versioned(TWO, r#"{"location": "path"}"#), "definition.location", "path"),
            (versioned(TWO, r#"{"location": "header", "key": 5}"#), "definition.key", "5"),
            (
                versioned(TWO, r#"{"location": "url", "url_versioning_pattern": "v("}"#),
                "definition.url_versioning_pattern",
                "v(",
            ),
            (
                versioned(TWO, r#"{"location": "url", "strip_versioning_data": "yes"}"#),
                "definition.strip_versioning_data",
                "\"yes\"",
            ),
            (
                versioned(&one(r#"{"name": "v1", "expires": "2080-07-28T15:00:00Z"}"#), "{}"),
                "version_data.versions.v1.expires",
                "2080-07-28T15:00:00Z",
            ),
            (
                versioned(&one(r#"{"name": "v1", "expires": "2023-02-29 10:00"}"#), "{}"),
                "version_data.versions.v1.expires",
                "2023-02-29 10:00",
            ),
            (
                versioned(&one(r#"{"name": "v1", "expires": 1700000000}"#), "{}"),
                "version_data.versions.v1.expires",
                "1700000000",
            ),
            (
                versioned(&one(r#"{"name": "v1", "override_target": "ftp://example.com"}"#), "{}"),
                "version_data.versions.v1.override_target",
                "ftp://example.com",
            ),
            (versioned(r#"{"not_versioned": false, "versions": {}}"#, "{}"), "version_data.versions", "{}"),
            (
                versioned(r#"{"not_versioned": "false", "versions": {"v1": {}}}"#, "{}"),
                "version_data.not_versioned",
                "\"false\"",
            ),
            (
                versioned(r#"{"not_versioned": false, "versions": {"a": {"name": "x"}, "b": {"name": "x"}}}"#, "{}"),
                "version_data.versions.b.name",
                "x",
            ),
            (versioned(TWO, r#"{"enabled": true, "location": "header", "key": "k"}"#), "definition.enabled", "true"),
        ];
        for (json, field, value) in cases {
            let errs = api(&json).unwrap_err();
            assert!(
                errs.iter().any(|e| e.file == "apps/t.json" && e.field == field && e.value == value),
                "{field} = {value}: {errs:?}"
            );
        }
        // Never expires: "" and "-1" (api_definition.go:313-315).
        let never = versioned(&one(r#"{"name": "v1", "expires": "-1"}"#), "{}");
        assert_eq!(versioned_api(&never).0.versioning.unwrap().versions[0].expires, None);
    }

    /// On a non-versioned API Tyk ignores `override_target` (api_loader.go:367-373) and every
    /// version's `expires` (api_definition.go:2372-2377): loaded, as before, with one target.
    #[test]
    fn non_versioned_apis_ignore_override_target() {
        let json = versioned(
            r#"{"not_versioned": true, "versions": {"Default": {"name": "Default", "override_target": "http://127.0.0.2:9", "expires": "2001-01-01 00:00"}}}"#,
            "{}",
        );
        let (base, versions) = versioned_api(&json);
        assert!(base.versioning.is_none() && versions.is_empty() && base.plain);
        assert_eq!(base.targets[0].url, "http://127.0.0.1:1");
    }

    #[test]
    fn unsupported_field_names_file_field_value() {
        let e = api(r#"{"version_data": {"not_versioned": true}, "api_id":"a","active":true,"use_keyless":true,"use_oauth2":true,
            "proxy":{"listen_path":"/a","target_url":"http://127.0.0.1:1/"}}"#)
        .unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].file, "apps/t.json");
        assert_eq!(e[0].field, "use_oauth2");
        assert_eq!(e[0].value, "true");
    }

    /// Tyk loads a file-based definition without `active` (its own `apps/*.json` have none), and a
    /// disabled OAuth block (every Dashboard export has one) is no reason to refuse.
    #[test]
    fn absent_active_and_a_disabled_oauth_block_load() {
        let s = spec(
            r#"{"version_data": {"not_versioned": true}, "api_id":"a","use_keyless":true,"proxy":{"listen_path":"/a","target_url":"http://127.0.0.1:1/"}}"#,
        );
        assert_eq!(s.api_id, "a");
        let s = spec(
            r#"{"version_data": {"not_versioned": true}, "api_id":"o","active":true,"use_keyless":true,"use_oauth2":false,
            "auth_configs":{"oauth":{"auth_header_name":"Authorization","use_param":false}},
            "oauth_meta":{"allowed_access_types":["authorization_code"]},
            "proxy":{"listen_path":"/o","target_url":"http://127.0.0.1:1/"}}"#,
        );
        assert_eq!(s.api_id, "o");
    }

    #[test]
    fn keyed_api_defaults_to_auth_tokens() {
        let s = spec(
            r#"{"version_data": {"not_versioned": true}, "api_id":"a","active":true,"proxy":{"listen_path":"/a","target_url":"http://127.0.0.1:1/"}}"#,
        );
        assert!(s.auth.token.is_some());
        assert!(!s.plain);
    }

    #[test]
    fn type_errors_name_the_field() {
        let e = api(r#"{"version_data": {"not_versioned": true}, "api_id":"a","active":true,"use_keyless":true,"proxy":{"listen_path":5}}"#).unwrap_err();
        assert_eq!(e[0].field, "proxy.listen_path");
        assert_eq!(e[0].value, "5");
    }

    #[test]
    fn inactive_is_skipped_and_unknown_fields_ignored() {
        assert!(matches!(api(r#"{"api_id":"a","active":false}"#), Ok(Parsed::Inactive { .. })));
        let s = spec(
            r#"{"version_data": {"not_versioned": true}, "api_id":"a","active":true,"use_keyless":true,"whatever":{"x":1},
            "domain":"Example.COM:8080",
            "proxy":{"listen_path":"/","enable_load_balancing":true,
                     "target_list":["http://127.0.0.1:1/a/","http://127.0.0.1:2"]}}"#,
        );
        assert_eq!(s.listen_path, "");
        assert_eq!(s.domain.as_deref(), Some("example.com"));
        assert_eq!(s.targets.len(), 2);
        assert_eq!(s.targets[0].path_prefix, "/a");
    }

    #[test]
    fn bad_target_and_listen_path_reported_together() {
        let e = api(r#"{"version_data": {"not_versioned": true}, "api_id":"a","active":true,"use_keyless":true,
            "proxy":{"listen_path":"nope","target_url":"ftp://x/"}}"#)
        .unwrap_err();
        let fields: Vec<_> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["proxy.listen_path", "proxy.target_url"]);
    }

    #[test]
    fn rate_limit_fields() {
        let s = spec(
            r#"{"api_id":"a","active":true,"use_keyless":true,"global_rate_limit":{"rate":100,"per":60},
            "ip_rate_limit":{"rate":5,"per":1},
            "version_data":{"not_versioned":true,"versions":{"Default":{"use_extended_paths":true,"extended_paths":{"rate_limit":[{"path":"/search","method":"GET","rate":2,"per":1}]}}}},
            "proxy":{"listen_path":"/a","target_url":"http://127.0.0.1:1/"}}"#,
        );
        assert_eq!(s.limits.global.map(|r| (r.rate, r.per)), Some((100.0, 60.0)));
        assert_eq!(s.limits.ip.map(|r| r.rate), Some(5.0));
        assert_eq!(s.limits.endpoints.len(), 1);
        assert!(!s.plain, "an API with limits is not on the fast path");
        // Tyk writes {"rate": 0, "per": 0} for "no limit".
        let s = spec(
            r#"{"version_data": {"not_versioned": true}, "api_id":"a","active":true,"use_keyless":true,"global_rate_limit":{"rate":0,"per":0},
            "proxy":{"listen_path":"/a","target_url":"http://127.0.0.1:1/"}}"#,
        );
        assert!(s.limits.global.is_none() && s.plain);
        let e = api(r#"{"version_data": {"not_versioned": true}, "api_id":"a","active":true,"use_keyless":true,"global_rate_limit":{"rate":-1,"per":1},
            "proxy":{"listen_path":"/a","target_url":"http://127.0.0.1:1/"}}"#)
        .unwrap_err();
        assert_eq!(e[0].field, "global_rate_limit");
    }

    /// A non-versioned keyless API whose Default version has these `url_rewrites`.
    fn with_rewrites(rewrites: &str) -> String {
        format!(
            r#"{{"api_id": "r", "use_keyless": true, "proxy": {{"listen_path": "/r/", "strip_listen_path": true, "target_url": "http://127.0.0.1:1/base"}},
              "version_data": {{"not_versioned": true, "versions": {{"Default": {{"name": "Default", "use_extended_paths": true,
                 "extended_paths": {{"url_rewrites": {rewrites}}}}}}}}}}}"#
        )
    }

    /// Tyk's `url_rewrites` load (they were refused): entries matched as Tyk's extended-path
    /// middleware (method exact), patterns compiled once, an absolute `rewrite_to` a target of
    /// its own after the API's.
    #[test]
    fn target_hosts_are_lower_case() {
        // The worker's target pick compares them with the uptime checks' hosts as they are.
        let trust = Default::default();
        let tls = super::super::tyk_upstream_tls::TargetTls::new(
            Path::new("t.json"),
            &Default::default(),
            Default::default(),
            &trust,
        );
        let t = parse_target("http://UP.Example:81/Path", &tls).unwrap();
        assert_eq!(
            (t.host.as_str(), t.host_header.as_str(), t.path_prefix.as_str()),
            ("up.example", "up.example:81", "/Path")
        );
    }

    #[test]
    fn url_rewrites_load_with_their_patterns_triggers_and_targets() {
        let s = spec(&with_rewrites(
            r#"[{"path": "/status", "method": "GET", "match_pattern": "/status/(.*)", "rewrite_to": "/code/$1",
                 "triggers": [{"on": "any", "options": {"header_matches": {"x-device": {"match_rx": "mobile", "reverse": false}},
                               "query_val_matches": {"k": {"match_rx": "^v$"}}}, "rewrite_to": "http://127.0.0.2:8080/m/$1"}]},
                {"path": "/off", "method": "GET", "disabled": true, "match_pattern": "(", "rewrite_to": "/x"},
                {"path": "/away", "method": "GET", "match_pattern": ".*", "rewrite_to": "http://upstream.example:81"}]"#,
        ));
        assert!(!s.plain, "an API with rewrites is not on the fast path");
        let rw = s.rewrites.as_deref().expect("rewrites");
        assert_eq!(rw.entries.len(), 2, "the disabled entry is skipped, as Tyk skips it");
        assert_eq!(rw.strip.as_deref(), Some("/r/"), "the listen path as written");
        let e = &rw.entries[0];
        assert_eq!((e.to.target, e.to.text.as_str()), (None, "/code/$1"));
        assert!(
            e.rule.matches("GET", "/status/200", "/status/200") && !e.rule.matches("POST", "/status/2", "/status/2")
        );
        let t = &e.triggers[0];
        assert!(t.any);
        assert_eq!(t.headers[0].0, "X-Device", "Go's canonical header name, as the captures are named");
        assert_eq!((t.to.target, t.to.text.as_str()), (Some(0), "/m/$1"));
        assert_eq!(rw.entries[1].to.target, Some(1));
        assert_eq!(s.targets.len(), 1);
        assert_eq!(s.target(1).addr, Some("127.0.0.2:8080".parse().unwrap()));
        assert_eq!(s.target(2).host, "upstream.example", "a name, resolved as a target's");
        assert_eq!(s.target(2).host_header, "upstream.example:81");
        assert_eq!(s.target(0).url, "http://127.0.0.1:1/base");
    }

    #[test]
    fn bad_url_rewrites_are_refused_with_file_field_and_value() {
        let f = "version_data.versions.Default.extended_paths.url_rewrites[0]";
        let cases = [
            (
                r#"[{"path": "/a", "method": "GET", "match_pattern": "/a/(", "rewrite_to": "/b"}]"#,
                format!("{f}.match_pattern"),
                "/a/(",
            ),
            (
                r#"[{"path": "/a", "method": "GET", "match_pattern": "a", "rewrite_to": "https://example.com/b"}]"#,
                format!("{f}.rewrite_to"),
                "https://example.com/b",
            ),
            (
                r#"[{"path": "/a", "method": "GET", "match_pattern": "a", "rewrite_to": "tyk://other-api/b"}]"#,
                format!("{f}.rewrite_to"),
                "tyk://other-api/b",
            ),
            (
                r#"[{"path": "/a", "method": "GET", "match_pattern": "(.*)", "rewrite_to": "http://$1/b"}]"#,
                format!("{f}.rewrite_to"),
                "http://$1/b",
            ),
            (
                r#"[{"path": "/a", "method": "GET", "match_pattern": "a", "rewrite_to": "/b",
                  "triggers": [{"on": "every", "options": {}, "rewrite_to": "/c"}]}]"#,
                format!("{f}.triggers[0].on"),
                "\"every\"",
            ),
            (
                r#"[{"path": "/a", "method": "GET", "match_pattern": "a", "rewrite_to": "/b",
                  "triggers": [{"on": "any", "options": {"header_matches": {"X-A": {"match_rx": "[z-a]"}}}, "rewrite_to": "/c"}]}]"#,
                format!("{f}.triggers[0].options.header_matches.X-A.match_rx"),
                "[z-a]",
            ),
            (
                r#"[{"path": "/a", "method": "GET", "match_pattern": "a", "rewrite_to": "/b",
                  "triggers": [{"on": "any", "options": {"payload_matches": {"match_rx": "secret"}}, "rewrite_to": "/c"}]}]"#,
                format!("{f}.triggers[0].options.payload_matches"),
                r#"{"match_rx":"secret"}"#,
            ),
            (
                r#"[{"path": "/a", "method": "GET", "match_pattern": "a", "rewrite_to": "/b",
                  "triggers": [{"on": "any", "options": {"request_context_matches": {"remote_addr": {"match_rx": "^10"}}}, "rewrite_to": "/c"}]}]"#,
                format!("{f}.triggers[0].options.request_context_matches"),
                r#"{"remote_addr":{"match_rx":"^10"}}"#,
            ),
            (
                r#"[{"path": "/a", "method": "GET", "match_pattern": "a", "rewrite_to": "/b",
                  "triggers": [{"on": "any", "options": {"cookie_matches": {"c": {"match_rx": "x"}}}, "rewrite_to": "/c"}]}]"#,
                format!("{f}.triggers[0].options.cookie_matches"),
                r#"{"c":{"match_rx":"x"}}"#,
            ),
        ];
        for (rewrites, field, value) in cases {
            let errs = api(&with_rewrites(rewrites)).unwrap_err();
            assert!(
                errs.iter().any(|e| e.file == "apps/t.json" && e.field == field && e.value == value),
                "{field} = {value}: {errs:?}"
            );
        }
        // Tyk ignores an empty payload pattern (mw_url_rewrite.go:133): loaded.
        spec(&with_rewrites(
            r#"[{"path": "/a", "method": "GET", "match_pattern": "a", "rewrite_to": "/b",
                 "triggers": [{"on": "all", "options": {"payload_matches": {"match_rx": ""}, "request_context_matches": {}}, "rewrite_to": "/c"}]}]"#,
        ));
    }

    /// Each version of a versioned API has its own rewrites (as Tyk's `RxPaths[version]`).
    #[test]
    fn url_rewrites_are_per_version() {
        let json = versioned(
            r#"{"not_versioned": false, "default_version": "v1", "versions": {
                "v1": {"name": "v1", "use_extended_paths": true, "extended_paths": {"url_rewrites": [
                    {"path": "/a", "method": "GET", "match_pattern": "/a", "rewrite_to": "http://127.0.0.3:7/one"}]}},
                "v2": {"name": "v2"}}}"#,
            r#"{"location": "header", "key": "v"}"#,
        );
        let (base, versions) = versioned_api(&json);
        assert!(base.rewrites.is_none());
        assert_eq!(versions[0].rewrites.as_ref().map(|r| r.entries.len()), Some(1));
        assert_eq!(versions[0].rewrite_targets.len(), 1);
        assert!(versions[1].rewrites.is_none() && versions[1].rewrite_targets.is_empty());
    }

    #[test]
    fn strip_port_cases() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
