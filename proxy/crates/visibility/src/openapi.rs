//! An inventory written out as an OpenAPI 3.1.0 document (JSON, or YAML via [`to_yaml`]): one
//! path item per template, one operation per method seen, with its path, query, header and
//! cookie parameters, request bodies and responses per status and media type, and the API's
//! security schemes as its owner configured them.
//!
//! Must not: leak what the capture redacted (credential headers and parameters go to
//! `securitySchemes`, never to parameters; cookie values are never read), list standard,
//! hop-by-hop or proxy headers as parameters, or write a document that does not validate.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::inventory::OpView;
use crate::template::{Kind, Kinds};

/// What the export needs to know of the API beyond its traffic.
#[derive(Debug, Clone, Copy)]
pub struct ApiMeta<'a> {
    pub title: &'a str,
    pub version: &'a str,
    /// The API's public base URL (its listen path included), if known.
    pub server_url: Option<&'a str>,
    /// Its credentials, as configured; any one of them is accepted.
    pub security: &'a [SecurityScheme],
}

/// A way the API takes credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityScheme {
    ApiKey { name: String, location: ApiKeyIn },
    Bearer { jwt: bool },
    Basic,
}

/// Where an API key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyIn {
    Header,
    Query,
    Cookie,
}

impl ApiKeyIn {
    fn as_str(self) -> &'static str {
        match self {
            ApiKeyIn::Header => "header",
            ApiKeyIn::Query => "query",
            ApiKeyIn::Cookie => "cookie",
        }
    }
}

/// Methods an OpenAPI 3.1 path item has; others are inventoried but not exported.
const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Request headers that are never an API's own parameters (lowercase): hop-by-hop, proxy,
/// content negotiation, caching, tracing, browser and credential headers.
const STANDARD_HEADERS: &[&str] = &[
    "alt-used",
    "authorization",
    "b3",
    "baggage",
    "cache-control",
    "cdn-loop",
    "connection",
    "cookie",
    "date",
    "dnt",
    "early-data",
    "expect",
    "forwarded",
    "host",
    "keep-alive",
    "max-forwards",
    "origin",
    "pragma",
    "priority",
    "range",
    "referer",
    "save-data",
    "te",
    "traceparent",
    "tracestate",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "upgrade-insecure-requests",
    "user-agent",
    "via",
    "x-amzn-trace-id",
    "x-api-key",
    "x-cloud-trace-context",
    "x-correlation-id",
    "x-csrf-token",
    "x-forwarded",
    "x-real-ip",
    "x-request-id",
    "x-requested-with",
    "x-xsrf-token",
];

/// Prefixes of the same (lowercase).
const STANDARD_PREFIXES: &[&str] =
    &["accept", "access-control-", "cf-", "content-", "if-", "proxy-", "sec-", "x-b3-", "x-envoy-", "x-forwarded-"];

/// Whether a request header (lowercase name) is a standard one, never listed as a parameter.
pub fn is_standard_header(lower: &str) -> bool {
    STANDARD_HEADERS.binary_search(&lower).is_ok() || STANDARD_PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// The document as YAML. A JSON value always serializes; an impossible error is written as a
/// YAML comment rather than a panic.
pub fn to_yaml(doc: &Value) -> String {
    serde_norway::to_string(doc).unwrap_or_else(|e| format!("# not serializable: {e}\n"))
}

/// The schema of a path parameter from the kinds of value seen.
pub fn path_param_schema(kinds: Kinds) -> Value {
    let only = |k: Kind| kinds == k.bit();
    let string_with = |f: &str| json!({"type": "string", "format": f});
    if only(Kind::Integer) {
        json!({"type": "integer"})
    } else if kinds != 0 && kinds & !(Kind::Integer.bit() | Kind::Number.bit()) == 0 {
        json!({"type": "number"})
    } else if only(Kind::Uuid) {
        string_with("uuid")
    } else if only(Kind::Date) {
        string_with("date")
    } else if only(Kind::DateTime) {
        string_with("date-time")
    } else if only(Kind::Email) {
        string_with("email")
    } else if only(Kind::Ipv4) {
        string_with("ipv4")
    } else if only(Kind::Ipv6) {
        string_with("ipv6")
    } else {
        json!({"type": "string"})
    }
}

pub(crate) fn document(ops: &[OpView<'_>], meta: &ApiMeta<'_>) -> Value {
    let (schemes, requirements) = security(meta.security);
    let creds = Credentials::of(meta.security);
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for v in ops {
        let method = v.method.to_ascii_lowercase();
        if !METHODS.contains(&method.as_str()) {
            continue;
        }
        let op = operation(v, &method, &creds, &mut ids);
        paths.entry(v.template.path.as_str()).or_default().insert(method, op);
    }
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": meta.title,
            "version": meta.version,
            "description": "Inferred from observed traffic by Portcullis API visibility.",
        },
        "paths": paths,
    });
    if let Some(url) = meta.server_url {
        doc["servers"] = json!([{"url": url}]);
    }
    if !schemes.is_empty() {
        doc["components"] = json!({"securitySchemes": schemes});
        doc["security"] = Value::Array(requirements);
    }
    doc
}

/// `components.securitySchemes` and the top-level `security` (any one scheme).
fn security(schemes: &[SecurityScheme]) -> (Map<String, Value>, Vec<Value>) {
    let mut out = Map::new();
    let mut reqs = Vec::new();
    for s in schemes {
        let (base, scheme) = match s {
            SecurityScheme::ApiKey { name, location } => {
                ("apiKey", json!({"type": "apiKey", "name": name, "in": location.as_str()}))
            }
            SecurityScheme::Bearer { jwt: true } => {
                ("bearerAuth", json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}))
            }
            SecurityScheme::Bearer { jwt: false } => ("bearerAuth", json!({"type": "http", "scheme": "bearer"})),
            SecurityScheme::Basic => ("basicAuth", json!({"type": "http", "scheme": "basic"})),
        };
        let name = unique_name(base, |n| out.contains_key(n));
        reqs.push(json!({ name.clone(): [] }));
        out.insert(name, scheme);
    }
    (out, reqs)
}

/// Credential names, which are security, not parameters.
struct Credentials {
    headers: Vec<String>,
    query: Vec<String>,
    cookies: Vec<String>,
}

impl Credentials {
    fn of(schemes: &[SecurityScheme]) -> Self {
        let mut c = Credentials { headers: Vec::new(), query: Vec::new(), cookies: Vec::new() };
        for s in schemes {
            if let SecurityScheme::ApiKey { name, location } = s {
                match location {
                    ApiKeyIn::Header => c.headers.push(name.to_ascii_lowercase()),
                    ApiKeyIn::Query => c.query.push(name.clone()),
                    ApiKeyIn::Cookie => c.cookies.push(name.clone()),
                }
            }
        }
        c
    }
}

fn operation(v: &OpView<'_>, method: &str, creds: &Credentials, ids: &mut BTreeSet<String>) -> Value {
    let op = v.op;
    let mut params = Vec::new();
    for (name, kinds) in &v.template.params {
        params.push(json!({"name": name, "in": "path", "required": true, "schema": path_param_schema(*kinds)}));
    }
    for (name, p) in &op.query {
        if !creds.query.contains(name) {
            let required = op.samples > 0 && p.seen >= op.samples;
            params.push(json!({"name": name, "in": "query", "required": required, "schema": p.shape.schema()}));
        }
    }
    for (name, p) in &op.headers {
        if !creds.headers.contains(name) && !is_standard_header(name) {
            params.push(json!({"name": name, "in": "header", "required": false, "schema": p.shape.schema()}));
        }
    }
    for name in op.cookies.keys() {
        if !creds.cookies.contains(name) {
            params.push(json!({"name": name, "in": "cookie", "required": false, "schema": {"type": "string"}}));
        }
    }
    let id = unique_name(&operation_id(method, &v.template.path), |n| ids.contains(n));
    ids.insert(id.clone());
    let mut out = json!({"operationId": id, "responses": responses(v)});
    if !params.is_empty() {
        out["parameters"] = Value::Array(params);
    }
    if !op.request.is_empty() {
        out["requestBody"] = json!({"content": content(&op.request)});
    }
    out
}

fn responses(v: &OpView<'_>) -> Map<String, Value> {
    let op = v.op;
    let codes: BTreeSet<u16> =
        op.statuses.keys().chain(op.responses.keys()).copied().filter(|c| (100..=599).contains(c)).collect();
    let mut out = Map::new();
    for code in codes {
        let mut r = json!({"description": reason(code)});
        if let Some(bodies) = op.responses.get(&code).filter(|b| !b.is_empty()) {
            r["content"] = Value::Object(content(bodies));
        }
        out.insert(code.to_string(), r);
    }
    if out.is_empty() {
        out.insert("default".into(), json!({"description": "Response"}));
    }
    out
}

fn content(bodies: &BTreeMap<String, crate::infer::Shape>) -> Map<String, Value> {
    bodies
        .iter()
        .map(|(ct, shape)| {
            let media = if shape.seen() > 0 { json!({"schema": shape.schema()}) } else { json!({}) };
            (ct.clone(), media)
        })
        .collect()
}

/// `get` + `/users/{userId}/posts` → `getUsersByUserIdPosts`; the root is `getRoot`.
pub fn operation_id(method: &str, template: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    let mut any = false;
    for seg in template.split('/').filter(|s| !s.is_empty()) {
        let (by, word) = match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(p) => ("By", p),
            None => ("", seg),
        };
        let parts: Vec<&str> = word.split(|c: char| !c.is_ascii_alphanumeric()).filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            continue;
        }
        id.push_str(by);
        for p in parts {
            let mut cs = p.chars();
            if let Some(c) = cs.next() {
                id.push(c.to_ascii_uppercase());
                id.extend(cs);
            }
            any = true;
        }
    }
    if !any {
        id.push_str("Root");
    }
    id
}

fn unique_name(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_owned();
    }
    (2u32..).map(|i| format!("{base}{i}")).find(|n| !taken(n)).unwrap_or_else(|| base.to_owned())
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => match code / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client error",
            _ => "Server error",
        },
    }
}
