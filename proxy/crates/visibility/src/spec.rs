//! A provided OpenAPI document (Swagger 2.0, OpenAPI 3.0.x or 3.1.x; JSON or YAML), compiled once
//! at load into what the gateway asks of it per request: a router from `(method, path)` to an
//! operation, request validators (parameters and JSON bodies, `jsonschema` 2020-12 after the
//! document's dialect is converted), and the schemas drift is measured against.
//!
//! Must not: allocate or do more than walk a small trie in [`Spec::route`] (it runs on every
//! request on the workers); panic on any document, request or exchange; recurse without a
//! bound; fetch anything (only local `#/...` references are followed, and a document with
//! another kind of reference is refused).
//!
//! Choices, documented once here:
//! - Base path: Swagger's `basePath`, or the path of OpenAPI 3's `servers[0].url` (server
//!   variables replaced by their defaults). A request path is routed without that prefix first,
//!   then as it is, so it may come either way.
//! - Precedence: segment by segment from the left, a literal segment beats a segment mixing
//!   literals and parameters (`{id}.json`), which beats a whole-segment parameter; a failed
//!   branch backtracks, also when the path it reaches lacks the request's method (`PUT
//!   /users/me` reaches `/users/{id}` when only the latter has `PUT`). Every trie node is tried
//!   at most twice per request.
//! - One trailing slash is ignored on both sides; methods are case-insensitive; `HEAD` falls
//!   back to `GET` when the path documents no `HEAD` (RFC 9110 9.3.2). Templates equal but for
//!   parameter names or a trailing slash share one path; a method documented twice keeps the
//!   first.
//! - Dialect: 2.0 and 3.0 schemas are converted to JSON Schema 2020-12 (`nullable` to a type
//!   array or an `anyOf` with `null`, boolean `exclusiveMaximum`/`Minimum` to numbers, `type:
//!   file` dropped, tuple `items` to `prefixItems`, `$ref` siblings dropped; `example`,
//!   `discriminator`, `xml`, `externalDocs`, `$schema`, `$id` and `x-` extensions dropped in
//!   every dialect). References become `#/$defs/...` entries of each compiled schema, so cycles
//!   are fine. `readOnly` properties are not required in requests, `writeOnly` ones not in
//!   responses. `int32` integers get the type's bounds.
//! - Drift is capped at [`MAX_DRIFTS`] entries per exchange and [`MAX_WALK`] visited JSON
//!   values (a [`DriftKind::Truncated`] entry says so); array indexes become `*`, and only the
//!   first [`MAX_ARRAY_ITEMS`] elements of an array are compared.

use std::fmt;

use jsonschema::{Draft, Validator};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::exchange::{is_json, Exchange};

/// Nesting bound for schemas (conversion), JSON values (drift) and YAML documents.
const MAX_DEPTH: usize = 64;
/// `$ref` chains longer than this are treated as cycles.
const MAX_REF_HOPS: usize = 32;
/// Drift entries reported for one exchange, beyond which one `Truncated` entry says so.
pub const MAX_DRIFTS: usize = 32;
/// JSON values compared with the schema for one exchange.
pub const MAX_WALK: usize = 10_000;
/// Array elements compared per array.
pub const MAX_ARRAY_ITEMS: usize = 256;
/// `oneOf`/`anyOf` alternatives considered per schema, after expansion.
const MAX_VARIANTS: usize = 16;

/// Request headers never reported as undocumented parameters: HTTP's own, the ones clients,
/// proxies, browsers and tracing add, and credentials the gateway consumes. Lowercase; an
/// entry ending in `-` is a prefix.
pub const IGNORED_HEADERS: &[&str] = &[
    "host",
    "accept",
    "accept-",
    "user-agent",
    "content-",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "upgrade-insecure-requests",
    "proxy-",
    "via",
    "forwarded",
    "x-forwarded-",
    "x-real-ip",
    "authorization",
    "cookie",
    "x-api-key",
    "cache-control",
    "pragma",
    "expect",
    "if-",
    "range",
    "origin",
    "referer",
    "dnt",
    "priority",
    "sec-",
    "early-data",
    "x-request-id",
    "x-correlation-id",
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-",
    "x-amzn-trace-id",
    "x-cloud-trace-context",
    "x-requested-with",
];

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
const HEAD: usize = 5;
const GET: usize = 0;

/// A provided OpenAPI document, compiled. Immutable once parsed; `Send + Sync`.
pub struct Spec {
    doc: Value,
    version: String,
    base: Option<String>,
    root: Node,
    /// Per distinct path (after normalisation): the operation of each method in [`METHODS`].
    paths: Vec<[Option<OpId>; 8]>,
    ops: Vec<Operation>,
    /// Lowercase names of `apiKey` security schemes' headers and query parameters.
    key_headers: Vec<String>,
    key_queries: Vec<String>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec").field("version", &self.version).field("operations", &self.ops.len()).finish()
    }
}

/// Why a document was refused: where in it, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// A JSON pointer into the document (`""` for the whole of it).
    pub pointer: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "at {}: {}", self.pointer, self.message)
        }
    }
}

impl std::error::Error for SpecError {}

fn err(pointer: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError { pointer: pointer.into(), message: message.into() }
}

/// An operation's index in its [`Spec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId(pub u32);

/// Where a request lands in a spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Op(OpId),
    /// No documented path matches (a shadow endpoint).
    UnknownPath,
    /// The path is documented, not with this method (a shadow endpoint too).
    UnknownMethod,
}

/// One documented operation.
#[derive(Debug)]
pub struct Operation {
    /// Uppercase: `GET`, `POST`, ...
    pub method: String,
    /// As in the document's `paths`, e.g. `/users/{id}` (without the base path).
    pub template: String,
    pub deprecated: bool,
    pub operation_id: Option<String>,
    /// JSON pointer of the operation object in the document.
    pub pointer: String,
    segs: Vec<Seg>,
    params: Vec<Param>,
    body: Option<Body>,
    responses: Vec<Response>,
}

/// A request that does not satisfy its operation's request schema.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    /// `/query/limit`, `/header/x-request-id`, `/path/userId`, `/body` or `/body/user/email`.
    pub pointer: String,
    pub message: String,
}

/// One way a sampled exchange differs from its documented operation.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Hash)]
pub struct Drift {
    pub kind: DriftKind,
    /// `response 418`, `query debug`, `header x-tenant`, `response 200 body /items/*/id`.
    pub location: String,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    UndocumentedStatus,
    UndocumentedParameter,
    MissingRequiredParameter,
    RequestFieldAdded,
    RequestFieldMissing,
    RequestFieldType,
    RequestFieldFormat,
    ResponseFieldAdded,
    ResponseFieldMissing,
    ResponseFieldType,
    ResponseFieldFormat,
    /// The exchange had more drift than [`MAX_DRIFTS`] entries or [`MAX_WALK`] values: the rest
    /// is not listed.
    Truncated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Swagger2,
    OpenApi30,
    OpenApi31,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Request,
    Response,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum In {
    Path,
    Query,
    Header,
    Cookie,
    Form,
}

impl In {
    fn name(self) -> &'static str {
        match self {
            In::Path => "path",
            In::Query => "query",
            In::Header => "header",
            In::Cookie => "cookie",
            In::Form => "body",
        }
    }
}

struct Param {
    name: String,
    at: In,
    required: bool,
    validator: Option<Validator>,
    kind: Kind,
    item: Kind,
    /// An object spread over query keys (`form` exploded, `deepObject`): any key may be it.
    object: bool,
}

impl fmt::Debug for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.at.name(), self.name)
    }
}

struct Body {
    required: bool,
    /// Lowercase media types (`*` wildcards as documented); empty: any.
    media: Vec<String>,
    /// The JSON body's schema as in the document (references unresolved), and its validator.
    schema: Option<(Value, Validator)>,
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "body {:?}", self.media)
    }
}

#[derive(Debug)]
struct Response {
    /// `200`, `2XX` or `default`, as documented (ranges uppercase).
    key: String,
    schema: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Any,
    Str,
    Int,
    Num,
    Bool,
    Arr,
}

// ---------------------------------------------------------------------------------------------
// Routing.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(Box<str>),
    Param(Box<str>),
    /// Literal pieces around parameters: `lits.len() == names.len() + 1`, ends may be empty.
    Mixed {
        lits: Vec<Box<str>>,
        names: Vec<Box<str>>,
    },
}

#[derive(Default, Debug)]
struct Node {
    /// Sorted by segment.
    lits: Vec<(Box<str>, Node)>,
    mixed: Vec<(Vec<Box<str>>, Node)>,
    param: Option<Box<Node>>,
    path: Option<usize>,
}

/// `/a/b/` → `a/b`; `/` and `` → ``.
fn trim_path(p: &str) -> &str {
    let p = p.strip_prefix('/').unwrap_or(p);
    p.strip_suffix('/').unwrap_or(p)
}

fn next_seg(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('/') {
        Some((s, t)) => (s, Some(t)),
        None => (rest, None),
    }
}

fn parse_segs(template: &str) -> Vec<Seg> {
    let t = trim_path(template);
    if t.is_empty() {
        return Vec::new();
    }
    t.split('/')
        .map(|s| {
            if !s.contains('{') {
                return Seg::Lit(s.into());
            }
            let (mut lits, mut names): (Vec<Box<str>>, Vec<Box<str>>) = (Vec::new(), Vec::new());
            let mut rest = s;
            while let Some(open) = rest.find('{') {
                let Some(close) = rest[open..].find('}').map(|c| open + c) else { break };
                lits.push(rest[..open].into());
                names.push(rest[open + 1..close].into());
                rest = &rest[close + 1..];
            }
            lits.push(rest.into());
            if names.len() == 1 && lits.iter().all(|l| l.is_empty()) {
                Seg::Param(names.pop().unwrap_or_default())
            } else if names.is_empty() {
                Seg::Lit(s.into())
            } else {
                Seg::Mixed { lits, names }
            }
        })
        .collect()
}

/// Matches `s` against literal pieces with a non-empty capture between each; leftmost captures.
fn match_mixed<'s>(lits: &[Box<str>], s: &'s str, mut caps: Option<&mut Vec<&'s str>>) -> bool {
    let (Some(first), Some(last)) = (lits.first(), lits.last()) else { return false };
    let Some(mut rest) = s.strip_prefix(&**first) else { return false };
    if rest.len() < last.len() {
        return false;
    }
    let end = rest.len() - last.len();
    if !rest.is_char_boundary(end) || rest[end..] != **last {
        return false;
    }
    rest = &rest[..end];
    for lit in &lits[1..lits.len() - 1] {
        // A capture is at least one byte, then the literal.
        let Some(i) = rest.get(1..).and_then(|r| r.find(&**lit)).map(|i| i + 1) else { return false };
        if let Some(c) = caps.as_deref_mut() {
            c.push(&rest[..i]);
        }
        rest = &rest[i + lit.len()..];
    }
    if rest.is_empty() {
        return false;
    }
    if let Some(c) = caps {
        c.push(rest);
    }
    true
}

impl Node {
    fn insert(&mut self, segs: &[Seg], path: &mut dyn FnMut(Option<usize>) -> usize) {
        let Some((seg, tail)) = segs.split_first() else {
            self.path = Some(path(self.path));
            return;
        };
        let child = match seg {
            Seg::Lit(l) => match self.lits.iter().position(|(k, _)| k == l) {
                Some(i) => &mut self.lits[i].1,
                None => {
                    self.lits.push((l.clone(), Node::default()));
                    &mut self.lits.last_mut().expect("just pushed").1
                }
            },
            Seg::Param(_) => self.param.get_or_insert_with(Box::default),
            Seg::Mixed { lits, .. } => match self.mixed.iter().position(|(k, _)| k == lits) {
                Some(i) => &mut self.mixed[i].1,
                None => {
                    self.mixed.push((lits.clone(), Node::default()));
                    &mut self.mixed.last_mut().expect("just pushed").1
                }
            },
        };
        child.insert(tail, path);
    }

    fn sort(&mut self) {
        self.lits.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, n) in &mut self.lits {
            n.sort();
        }
        for (_, n) in &mut self.mixed {
            n.sort();
        }
        if let Some(n) = &mut self.param {
            n.sort();
        }
    }

    /// The path index `rest` (segments after this node; `None`: none left) reaches, and where
    /// `accept` takes it.
    fn find(&self, rest: Option<&str>, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        let Some(rest) = rest else { return self.path.filter(|p| accept(*p)) };
        let (seg, tail) = next_seg(rest);
        if let Ok(i) = self.lits.binary_search_by(|(k, _)| (**k).cmp(seg)) {
            if let Some(p) = self.lits[i].1.find(tail, accept) {
                return Some(p);
            }
        }
        if !seg.is_empty() {
            for (lits, n) in &self.mixed {
                if match_mixed(lits, seg, None) {
                    if let Some(p) = n.find(tail, accept) {
                        return Some(p);
                    }
                }
            }
            if let Some(n) = &self.param {
                return n.find(tail, accept);
            }
        }
        None
    }
}

fn method_index(m: &str) -> Option<usize> {
    METHODS.iter().position(|k| k.eq_ignore_ascii_case(m))
}

// ---------------------------------------------------------------------------------------------
// Loading.

impl Spec {
    /// Parses and compiles a document: JSON when it starts with `{`, YAML otherwise.
    pub fn parse(bytes: &[u8]) -> Result<Spec, SpecError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        let doc = if first == Some(&b'{') {
            serde_json::from_slice(bytes).map_err(|e| err("", format!("not valid JSON: {e}")))?
        } else {
            let y: serde_norway::Value =
                serde_norway::from_slice(bytes).map_err(|e| err("", format!("not valid YAML or JSON: {e}")))?;
            yaml_to_json(y, 0)?
        };
        Spec::from_value(doc)
    }

    /// Compiles a document already parsed.
    pub fn from_value(doc: Value) -> Result<Spec, SpecError> {
        let (version, dialect) = detect(&doc)?;
        let base = base_path(&doc, dialect);
        let cx = Cx { root: &doc, dialect };
        let (key_headers, key_queries) = api_keys(&doc, dialect);
        let mut spec = Spec {
            version,
            base,
            root: Node::default(),
            paths: Vec::new(),
            ops: Vec::new(),
            key_headers,
            key_queries,
            doc: Value::Null,
        };
        match doc.get("paths") {
            None | Some(Value::Null) => {}
            Some(Value::Object(paths)) => {
                for (template, item) in paths {
                    if template.starts_with("x-") {
                        continue;
                    }
                    let at = format!("/paths/{}", escape(template));
                    if !template.starts_with('/') {
                        return Err(err(at, "a path must start with /"));
                    }
                    let (item, item_at) = cx.deref(item, &at)?;
                    let Some(item) = item.as_object() else {
                        return Err(err(item_at, "a path item must be an object"));
                    };
                    let shared = item.get("parameters");
                    let segs = parse_segs(template);
                    let mut methods = [None; 8];
                    for (mi, m) in METHODS.iter().enumerate() {
                        let Some(op) = item.get(*m) else { continue };
                        let op_at = format!("{item_at}/{m}");
                        let id = OpId(spec.ops.len() as u32);
                        let op = cx.operation(
                            op,
                            &op_at,
                            m,
                            template,
                            segs.clone(),
                            shared,
                            &format!("{item_at}/parameters"),
                        )?;
                        spec.ops.push(op);
                        methods[mi] = Some(id);
                    }
                    let table = &mut spec.paths;
                    spec.root.insert(&segs, &mut |existing| match existing {
                        Some(i) => {
                            for (slot, m) in table[i].iter_mut().zip(methods) {
                                if slot.is_none() {
                                    *slot = m;
                                }
                            }
                            i
                        }
                        None => {
                            table.push(methods);
                            table.len() - 1
                        }
                    });
                }
            }
            Some(_) => return Err(err("/paths", "`paths` must be an object")),
        }
        spec.root.sort();
        spec.doc = doc;
        Ok(spec)
    }

    /// The document as parsed, as JSON.
    pub fn document(&self) -> &Value {
        &self.doc
    }

    /// `2.0`, `3.0.3`, `3.1.0`, ... as the document says.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The base path requests may carry (`/v1`), from `basePath` or `servers[0].url`.
    pub fn base_path(&self) -> Option<&str> {
        self.base.as_deref()
    }

    /// The operation a request reaches. `path` is relative to the API's listen path, without
    /// the query; it may carry the base path or not. Does not allocate.
    pub fn route(&self, method: &str, path: &str) -> Route {
        let mut path_known = false;
        if let Some(rest) = self.strip_base(path) {
            match self.route_in(method, rest) {
                Route::Op(id) => return Route::Op(id),
                Route::UnknownMethod => path_known = true,
                Route::UnknownPath => {}
            }
        }
        match self.route_in(method, path) {
            Route::UnknownPath if path_known => Route::UnknownMethod,
            r => r,
        }
    }

    fn strip_base<'p>(&self, path: &'p str) -> Option<&'p str> {
        let base = self.base.as_deref()?;
        let rest = path.strip_prefix(base)?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }

    fn route_in(&self, method: &str, path: &str) -> Route {
        let t = trim_path(path);
        let rest = if t.is_empty() { None } else { Some(t) };
        let op_of = |p: usize| {
            let table = self.paths.get(p)?;
            match method_index(method) {
                Some(HEAD) => table[HEAD].or(table[GET]),
                Some(i) => table[i],
                None => None,
            }
        };
        // A path without the method lets a less precise path with it match.
        if let Some(id) = self.root.find(rest, &|p| op_of(p).is_some()).and_then(op_of) {
            return Route::Op(id);
        }
        match self.root.find(rest, &|_| true) {
            Some(_) => Route::UnknownMethod,
            None => Route::UnknownPath,
        }
    }

    /// # Panics
    /// When `id` is not one of this spec's operations.
    pub fn operation(&self, id: OpId) -> &Operation {
        &self.ops[id.0 as usize]
    }

    pub fn operations(&self) -> impl Iterator<Item = (OpId, &Operation)> {
        self.ops.iter().enumerate().map(|(i, o)| (OpId(i as u32), o))
    }

    /// The first way a request fails its operation's parameters or JSON body, checked in the
    /// order path, query, header, body. `path` is the request's path (as given to
    /// [`Spec::route`]), `query` the raw query without `?`. Cookie parameters, multipart bodies
    /// and non-JSON bodies (but for a Swagger 2.0 urlencoded form) are not checked. An `op` that
    /// is not this spec's passes.
    pub fn check_request(
        &self,
        op: OpId,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        content_type: Option<&str>,
    ) -> Result<(), Violation> {
        let Some(o) = self.ops.get(op.0 as usize) else { return Ok(()) };
        if o.params.iter().any(|p| p.at == In::Path) {
            let caps = self.captures(o, path);
            for p in o.params.iter().filter(|p| p.at == In::Path) {
                if let Some((_, v)) = caps.iter().find(|(n, _)| *n == p.name) {
                    p.check(&[pct_decode(v, false)])?;
                }
            }
        }
        let pairs: Vec<(String, String)> = query_pairs(query).collect();
        check_pairs(&o.params, In::Query, &pairs)?;
        for p in o.params.iter().filter(|p| p.at == In::Header) {
            let values: Vec<String> = headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(&p.name))
                .map(|(_, v)| (*v).to_string())
                .collect();
            p.check_sent(&values, "header")?;
        }
        let Some(b) = &o.body else { return Ok(()) };
        let body = body.filter(|b| !b.is_empty());
        let Some(bytes) = body else {
            if b.required {
                return Err(Violation { pointer: "/body".into(), message: "a request body is required".into() });
            }
            return check_pairs(&o.params, In::Form, &[]);
        };
        let mime = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        if let Some(m) = &mime {
            if !b.media.is_empty() && !b.media.iter().any(|d| media_matches(d, m)) {
                return Err(Violation {
                    pointer: "/header/content-type".into(),
                    message: format!("media type {m} is not one of {}", b.media.join(", ")),
                });
            }
            if m == "application/x-www-form-urlencoded" {
                let text = String::from_utf8_lossy(bytes);
                let pairs: Vec<(String, String)> = query_pairs(&text).collect();
                return check_pairs(&o.params, In::Form, &pairs);
            }
        }
        let Some((_, validator)) = &b.schema else { return Ok(()) };
        if mime.as_deref().is_some_and(|m| !is_json(m)) {
            return Ok(());
        }
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Violation { pointer: "/body".into(), message: format!("not valid JSON: {e}") })?;
        match validator.validate(&value) {
            Ok(()) => Ok(()),
            Err(e) => Err(Violation { pointer: format!("/body{}", e.instance_path.as_str()), message: e.to_string() }),
        }
    }

    /// Path parameters' raw values, by name, as the operation's template captures them.
    fn captures<'p>(&self, o: &'p Operation, path: &'p str) -> Vec<(&'p str, &'p str)> {
        let mut tries = vec![path];
        if let Some(rest) = self.strip_base(path) {
            tries.insert(0, rest);
        }
        for p in tries {
            let t = trim_path(p);
            let segs: Vec<&str> = if t.is_empty() { Vec::new() } else { t.split('/').collect() };
            if segs.len() != o.segs.len() {
                continue;
            }
            let mut out = Vec::new();
            let ok = o.segs.iter().zip(&segs).all(|(seg, s)| match seg {
                Seg::Lit(l) => **l == **s,
                Seg::Param(n) => {
                    out.push((&**n, *s));
                    !s.is_empty()
                }
                Seg::Mixed { lits, names } => {
                    let mut caps = Vec::new();
                    let ok = match_mixed(lits, s, Some(&mut caps));
                    out.extend(names.iter().map(|n| &**n).zip(caps));
                    ok
                }
            });
            if ok {
                return out;
            }
        }
        Vec::new()
    }

    /// Appends how one sampled exchange, already routed to `op`, differs from it: status,
    /// parameters, and JSON bodies (when whole). At most [`MAX_DRIFTS`] entries are appended,
    /// each once.
    pub fn drift(&self, op: OpId, x: &Exchange<'_>, out: &mut Vec<Drift>) {
        let Some(o) = self.ops.get(op.0 as usize) else { return };
        let mut w = Walker { spec: self, out: Vec::new(), budget: MAX_WALK, truncated: false };
        // Status.
        let resp = o.response(x.status);
        if resp.is_none() {
            let documented: Vec<&str> = o.responses.iter().map(|r| r.key.as_str()).collect();
            w.push(Drift {
                kind: DriftKind::UndocumentedStatus,
                location: format!("response {}", x.status),
                detail: format!("status {} is not documented (documented: {})", x.status, documented.join(", ")),
            });
        }
        // Parameters.
        let object_query = o.params.iter().any(|p| p.at == In::Query && p.object);
        let mut seen: Vec<String> = Vec::new();
        let mut seen_headers: Vec<String> = Vec::new();
        for (name, _) in x.query_pairs() {
            let name = pct_decode(name, true);
            let name = name.split('[').next().unwrap_or("").to_string();
            if name.is_empty() || seen.contains(&name) {
                continue;
            }
            let documented = object_query
                || o.params.iter().any(|p| p.at == In::Query && p.name == name)
                || self.key_queries.iter().any(|k| k.eq_ignore_ascii_case(&name));
            if !documented {
                w.push(Drift {
                    kind: DriftKind::UndocumentedParameter,
                    location: format!("query {name}"),
                    detail: "query parameter not in the operation's parameters".into(),
                });
            }
            seen.push(name);
        }
        for (name, _) in &x.req_headers {
            let lower = name.to_ascii_lowercase();
            if ignored_header(&lower)
                || seen_headers.contains(&lower)
                || o.params.iter().any(|p| p.at == In::Header && p.name.eq_ignore_ascii_case(&lower))
                || self.key_headers.contains(&lower)
            {
                continue;
            }
            w.push(Drift {
                kind: DriftKind::UndocumentedParameter,
                location: format!("header {lower}"),
                detail: "request header not in the operation's parameters".into(),
            });
            seen_headers.push(lower);
        }
        for p in o.params.iter().filter(|p| p.required) {
            let present = match p.at {
                In::Query => x.query_pairs().any(|(n, _)| pct_decode(n, true) == p.name),
                In::Header => x.req_header(&p.name).is_some(),
                _ => true,
            };
            if !present {
                w.push(Drift {
                    kind: DriftKind::MissingRequiredParameter,
                    location: format!("{} {}", p.at.name(), p.name),
                    detail: "required parameter absent".into(),
                });
            }
        }
        // Bodies.
        if let Some((schema, _)) = o.body.as_ref().and_then(|b| b.schema.as_ref()) {
            if let Some(v) = x.req_json() {
                let mut ptr = String::new();
                let mut tmp = Vec::new();
                w.walk(&v, schema, Dir::Request, "request body", &mut ptr, 0, &mut tmp);
                for d in tmp {
                    w.push(d);
                }
            }
        }
        if let Some(schema) = resp.and_then(|r| r.schema.as_ref()) {
            if let Some(v) = x.resp_json() {
                let prefix = format!("response {} body", x.status);
                let mut ptr = String::new();
                let mut tmp = Vec::new();
                w.walk(&v, schema, Dir::Response, &prefix, &mut ptr, 0, &mut tmp);
                for d in tmp {
                    w.push(d);
                }
            }
        }
        if w.truncated {
            w.out.push(Drift {
                kind: DriftKind::Truncated,
                location: format!("{} {}", o.method, o.template),
                detail: format!(
                    "more drift than {MAX_DRIFTS} entries or {MAX_WALK} compared values in one exchange; the rest is not listed"
                ),
            });
        }
        out.append(&mut w.out);
    }
}

impl Operation {
    fn response(&self, status: u16) -> Option<&Response> {
        let exact = status.to_string();
        let range = format!("{}XX", status / 100);
        self.responses
            .iter()
            .find(|r| r.key == exact)
            .or_else(|| self.responses.iter().find(|r| r.key == range))
            .or_else(|| self.responses.iter().find(|r| r.key == "default"))
    }

    /// Documented statuses (`200`, `4XX`, `default`), in document order.
    pub fn statuses(&self) -> impl Iterator<Item = &str> {
        self.responses.iter().map(|r| r.key.as_str())
    }
}

fn ignored_header(lower: &str) -> bool {
    IGNORED_HEADERS.iter().any(|h| if h.ends_with('-') { lower.starts_with(h) } else { lower == *h })
}

fn media_matches(documented: &str, actual: &str) -> bool {
    if documented == actual || documented == "*/*" {
        return true;
    }
    match documented.strip_suffix("/*") {
        Some(top) => actual.split('/').next() == Some(top),
        None => false,
    }
}

fn query_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        (pct_decode(n, true), pct_decode(v, true))
    })
}

fn check_pairs(params: &[Param], at: In, pairs: &[(String, String)]) -> Result<(), Violation> {
    for p in params.iter().filter(|p| p.at == at) {
        let values: Vec<String> = pairs
            .iter()
            .filter(|(n, _)| *n == p.name || n.strip_suffix("[]") == Some(p.name.as_str()))
            .map(|(_, v)| v.clone())
            .collect();
        p.check_sent(&values, "parameter")?;
    }
    Ok(())
}

/// Percent-decoding (and `+` as a space in queries); invalid escapes stay as they are.
pub(crate) fn pct_decode(s: &str, plus: bool) -> String {
    if !(s.contains('%') || plus && s.contains('+')) {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Param {
    fn violation(&self, suffix: &str, message: String) -> Violation {
        let name = if self.at == In::Header { self.name.to_ascii_lowercase() } else { self.name.clone() };
        Violation { pointer: format!("/{}/{}{suffix}", self.at.name(), escape(&name)), message }
    }

    /// Validates the parameter's values (strings as sent) coerced to its schema's type.
    /// The values sent for this parameter (a `what`: header, parameter): a required one missing,
    /// or each checked.
    fn check_sent(&self, values: &[String], what: &str) -> Result<(), Violation> {
        if values.is_empty() {
            return match self.required {
                true => Err(self.violation("", format!("a required {what} is missing"))),
                false => Ok(()),
            };
        }
        self.check(values)
    }

    fn check(&self, values: &[String]) -> Result<(), Violation> {
        let Some(v) = &self.validator else { return Ok(()) };
        let value = if self.kind == Kind::Arr {
            let items: Vec<&str> = if values.len() == 1 {
                if values[0].is_empty() {
                    Vec::new()
                } else {
                    values[0].split(',').collect()
                }
            } else {
                values.iter().map(String::as_str).collect()
            };
            Value::Array(items.into_iter().map(|s| coerce(s, self.item)).collect())
        } else {
            coerce(&values[0], self.kind)
        };
        match v.validate(&value) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.violation(e.instance_path.as_str(), e.to_string())),
        }
    }
}

fn coerce(s: &str, kind: Kind) -> Value {
    match kind {
        Kind::Int | Kind::Num => {
            if let Ok(i) = s.parse::<i64>() {
                return Value::from(i);
            }
            if let Ok(u) = s.parse::<u64>() {
                return Value::from(u);
            }
            if kind == Kind::Num {
                if let Some(n) = s.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                    return Value::Number(n);
                }
            }
            Value::String(s.into())
        }
        Kind::Bool => match s {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(s.into()),
        },
        _ => Value::String(s.into()),
    }
}

/// `~` and `/` escaped for a JSON pointer token.
pub(crate) fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn yaml_to_json(y: serde_norway::Value, depth: usize) -> Result<Value, SpecError> {
    use serde_norway::Value as Y;
    if depth > MAX_DEPTH * 2 {
        return Err(err("", format!("the document nests deeper than {} levels", MAX_DEPTH * 2)));
    }
    Ok(match y {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(s) => Value::Array(s.into_iter().map(|v| yaml_to_json(v, depth + 1)).collect::<Result<_, _>>()?),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    Y::Null => "null".into(),
                    _ => return Err(err("", "a mapping key is not a string, number or boolean")),
                };
                out.insert(key, yaml_to_json(v, depth + 1)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(t.value, depth + 1)?,
    })
}

fn detect(doc: &Value) -> Result<(String, Dialect), SpecError> {
    let Some(top) = doc.as_object() else {
        return Err(err("", "not an OpenAPI document: the top level is not an object"));
    };
    if let Some(v) = top.get("openapi") {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(err("/openapi", format!("`openapi` must be a version string, not {other}"))),
        };
        let d = if s == "3.0" || s.starts_with("3.0.") {
            Dialect::OpenApi30
        } else if s == "3.1" || s.starts_with("3.1.") {
            Dialect::OpenApi31
        } else {
            return Err(err(
                "/openapi",
                format!("unsupported OpenAPI version {s:?}: 2.0, 3.0.x and 3.1.x are supported"),
            ));
        };
        return Ok((s, d));
    }
    if let Some(v) = top.get("swagger") {
        let ok = v.as_str() == Some("2.0") || v.as_f64() == Some(2.0);
        if !ok {
            return Err(err("/swagger", format!("unsupported Swagger version {v}: 2.0 is supported")));
        }
        return Ok(("2.0".into(), Dialect::Swagger2));
    }
    Err(err("", "not an OpenAPI document: neither `openapi` nor `swagger` is set"))
}

fn base_path(doc: &Value, dialect: Dialect) -> Option<String> {
    let raw = if dialect == Dialect::Swagger2 {
        doc.get("basePath")?.as_str()?.to_string()
    } else {
        let server = doc.get("servers")?.get(0)?;
        let mut url = server.get("url")?.as_str()?.to_string();
        if let Some(vars) = server.get("variables").and_then(Value::as_object) {
            for (k, v) in vars {
                if let Some(d) = v.get("default").and_then(Value::as_str) {
                    url = url.replace(&format!("{{{k}}}"), d);
                }
            }
        }
        match url.find("://") {
            Some(i) => match url[i + 3..].find('/') {
                Some(j) => url[i + 3 + j..].to_string(),
                None => return None,
            },
            None if url.starts_with('/') => url,
            None => return None,
        }
    };
    let path = raw.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_end_matches('/');
    (path.starts_with('/') && !path.contains('{')).then(|| path.to_string())
}

fn api_keys(doc: &Value, dialect: Dialect) -> (Vec<String>, Vec<String>) {
    let schemes = if dialect == Dialect::Swagger2 {
        doc.get("securityDefinitions")
    } else {
        doc.get("components").and_then(|c| c.get("securitySchemes"))
    };
    let (mut headers, mut queries) = (Vec::new(), Vec::new());
    for s in schemes.and_then(Value::as_object).into_iter().flat_map(|m| m.values()) {
        if s.get("type").and_then(Value::as_str) != Some("apiKey") {
            continue;
        }
        let Some(name) = s.get("name").and_then(Value::as_str) else { continue };
        match s.get("in").and_then(Value::as_str) {
            Some("header") => headers.push(name.to_ascii_lowercase()),
            Some("query") => queries.push(name.to_string()),
            _ => {}
        }
    }
    (headers, queries)
}

// ---------------------------------------------------------------------------------------------
// Operations and schema conversion.

/// The document while it is compiled.
struct Cx<'d> {
    root: &'d Value,
    dialect: Dialect,
}

/// Follows a local reference; `None` when broken (or not local).
pub(crate) fn local_ref<'d>(root: &'d Value, r: &str) -> Option<&'d Value> {
    let frag = r.strip_prefix('#')?;
    if frag.is_empty() {
        return Some(root);
    }
    root.pointer(&pct_decode(frag, false))
}

impl<'d> Cx<'d> {
    /// Follows `$ref`s from `v` (at `at`), refusing broken, remote and cyclic ones.
    fn deref(&self, mut v: &'d Value, at: &str) -> Result<(&'d Value, String), SpecError> {
        let mut at = at.to_string();
        for _ in 0..MAX_REF_HOPS {
            let Some(r) = v.get("$ref") else { return Ok((v, at)) };
            let ref_at = format!("{at}/$ref");
            let Some(r) = r.as_str() else { return Err(err(ref_at, "`$ref` must be a string")) };
            if !r.starts_with('#') {
                return Err(err(
                    ref_at,
                    format!("reference {r:?} is not local: only #/... references are followed (the gateway fetches nothing)"),
                ));
            }
            v = local_ref(self.root, r).ok_or_else(|| err(ref_at, format!("broken reference {r:?}")))?;
            at = pct_decode(&r[1..], false);
        }
        Err(err(at, "a reference cycle"))
    }

    #[allow(clippy::too_many_arguments)]
    fn operation(
        &self,
        op: &'d Value,
        at: &str,
        method: &str,
        template: &str,
        segs: Vec<Seg>,
        shared: Option<&'d Value>,
        shared_at: &str,
    ) -> Result<Operation, SpecError> {
        let (op, at) = self.deref(op, at)?;
        let Some(o) = op.as_object() else { return Err(err(at, "an operation must be an object")) };
        let mut params: Vec<Param> = Vec::new();
        let mut body = None;
        let consumes = o.get("consumes").or_else(|| self.root.get("consumes"));
        let lists = [(shared, shared_at.to_string()), (o.get("parameters"), format!("{at}/parameters"))];
        for (list, list_at) in lists {
            let Some(list) = list else { continue };
            let Some(list) = list.as_array() else { return Err(err(list_at, "`parameters` must be an array")) };
            for (i, p) in list.iter().enumerate() {
                let (p, p_at) = self.deref(p, &format!("{list_at}/{i}"))?;
                match self.param(p, &p_at)? {
                    Compiled::Param(p) => {
                        params.retain(|q| !(q.at == p.at && q.name == p.name));
                        params.push(p);
                    }
                    Compiled::Body(b) => body = Some(b),
                    Compiled::Skip => {}
                }
            }
        }
        if self.dialect == Dialect::Swagger2 {
            if let Some(b) = &mut body {
                b.media = media_list(consumes);
            } else if params.iter().any(|p| p.at == In::Form) {
                body = Some(Body { required: false, media: media_list(consumes), schema: None });
            }
        } else if let Some(rb) = o.get("requestBody") {
            let (rb, rb_at) = self.deref(rb, &format!("{at}/requestBody"))?;
            let required = rb.get("required").and_then(Value::as_bool).unwrap_or(false);
            let mut media = Vec::new();
            let mut schema = None;
            if let Some(content) = rb.get("content").and_then(Value::as_object) {
                for (m, mt) in content {
                    media.push(m.to_ascii_lowercase());
                    if schema.is_none() && is_json(m) {
                        if let Some(s) = mt.get("schema") {
                            let s_at = format!("{rb_at}/content/{}/schema", escape(m));
                            schema = Some((s.clone(), self.compile(s, &s_at, Dir::Request)?));
                        }
                    }
                }
            }
            body = Some(Body { required, media, schema });
        }
        let mut responses = Vec::new();
        if let Some(rs) = o.get("responses").and_then(Value::as_object) {
            let produces = o.get("produces").or_else(|| self.root.get("produces"));
            for (key, r) in rs {
                if key.starts_with("x-") {
                    continue;
                }
                let r_at = format!("{at}/responses/{}", escape(key));
                let (r, r_at) = self.deref(r, &r_at)?;
                let (schema, s_at) = if self.dialect == Dialect::Swagger2 {
                    let json = produces
                        .and_then(Value::as_array)
                        .is_none_or(|p| p.iter().filter_map(Value::as_str).any(is_json));
                    (r.get("schema").filter(|_| json), format!("{r_at}/schema"))
                } else {
                    let found = r
                        .get("content")
                        .and_then(Value::as_object)
                        .and_then(|c| c.iter().find(|(m, _)| is_json(m)))
                        .and_then(|(m, mt)| Some((mt.get("schema")?, format!("{r_at}/content/{}/schema", escape(m)))));
                    match found {
                        Some((s, a)) => (Some(s), a),
                        None => (None, String::new()),
                    }
                };
                if let Some(s) = schema {
                    // References are checked now so that drift never meets a broken one.
                    self.to_json_schema(s, &s_at, Dir::Response)?;
                }
                let key = if key.eq_ignore_ascii_case("default") { "default".into() } else { key.to_ascii_uppercase() };
                responses.push(Response { key, schema: schema.cloned() });
            }
        }
        Ok(Operation {
            method: method.to_ascii_uppercase(),
            template: template.to_string(),
            deprecated: o.get("deprecated").and_then(Value::as_bool).unwrap_or(false),
            operation_id: o.get("operationId").and_then(Value::as_str).map(str::to_string),
            pointer: at,
            segs,
            params,
            body,
            responses,
        })
    }

    fn param(&self, p: &'d Value, at: &str) -> Result<Compiled, SpecError> {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            return Err(err(at, "a parameter needs a `name`"));
        };
        let loc = match p.get("in").and_then(Value::as_str) {
            Some("path") => In::Path,
            Some("query") => In::Query,
            Some("header") => In::Header,
            Some("cookie") => In::Cookie,
            Some("formData") if self.dialect == Dialect::Swagger2 => In::Form,
            Some("body") if self.dialect == Dialect::Swagger2 => {
                let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
                let schema = match p.get("schema") {
                    Some(s) => Some((s.clone(), self.compile(s, &format!("{at}/schema"), Dir::Request)?)),
                    None => None,
                };
                return Ok(Compiled::Body(Body { required, media: Vec::new(), schema }));
            }
            other => {
                return Err(err(format!("{at}/in"), format!("unknown parameter location {other:?}")));
            }
        };
        if loc == In::Header
            && ["accept", "content-type", "authorization"].contains(&name.to_ascii_lowercase().as_str())
        {
            return Ok(Compiled::Skip); // OpenAPI: such definitions SHALL be ignored.
        }
        let required = loc == In::Path || p.get("required").and_then(Value::as_bool).unwrap_or(false);
        let (schema, s_at): (Value, String) = if self.dialect == Dialect::Swagger2 {
            // 2.0: the schema keywords sit on the parameter itself.
            let mut s = Map::new();
            for (k, v) in p.as_object().into_iter().flatten() {
                if !["name", "in", "required", "description", "allowEmptyValue", "collectionFormat"]
                    .contains(&k.as_str())
                {
                    s.insert(k.clone(), v.clone());
                }
            }
            (Value::Object(s), at.to_string())
        } else if let Some(s) = p.get("schema") {
            (s.clone(), format!("{at}/schema"))
        } else if let Some((m, mt)) = p.get("content").and_then(Value::as_object).and_then(|c| c.iter().next()) {
            match mt.get("schema") {
                Some(s) => (s.clone(), format!("{at}/content/{}/schema", escape(m))),
                None => (Value::Bool(true), at.to_string()),
            }
        } else {
            (Value::Bool(true), at.to_string())
        };
        let validator = Some(self.compile(&schema, &s_at, Dir::Request)?);
        let (kind, item, object) = {
            let views = variants(self.root, &schema, 0);
            let object = views.iter().any(|v| v.types & T_OBJ != 0 || (v.types == 0 && v.declares_props));
            let v = views.first();
            let kind = v.map_or(Kind::Any, |v| kind_of(v.types));
            let item = v
                .and_then(|v| v.items)
                .map_or(Kind::Str, |i| variants(self.root, i, 0).first().map_or(Kind::Str, |v| kind_of(v.types)));
            (kind, item, object)
        };
        Ok(Compiled::Param(Param { name: name.to_string(), at: loc, required, validator, kind, item, object }))
    }

    /// Compiles a schema of the document (at `at`) into a 2020-12 validator.
    fn compile(&self, schema: &Value, at: &str, dir: Dir) -> Result<Validator, SpecError> {
        let js = self.to_json_schema(schema, at, dir)?;
        jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .build(&js)
            .map_err(|e| err(at, format!("the schema does not compile: {e}")))
    }

    /// The schema as a standalone JSON Schema 2020-12 document: converted, with each local
    /// reference it reaches (transitively) under `$defs`.
    fn to_json_schema(&self, schema: &Value, at: &str, dir: Dir) -> Result<Value, SpecError> {
        let mut refs: Vec<String> = Vec::new();
        let mut out = self.convert(schema, at, dir, &mut refs, 0)?;
        let mut defs = Map::new();
        let mut i = 0;
        while i < refs.len() {
            let pointer = refs[i].clone();
            let target = self.root.pointer(&pointer).unwrap_or(&Value::Null);
            let converted = self.convert(target, &pointer, dir, &mut refs, 0)?;
            defs.insert(pointer, converted);
            i += 1;
        }
        if !defs.is_empty() {
            match &mut out {
                Value::Object(m) => {
                    m.insert("$defs".into(), Value::Object(defs));
                }
                other => {
                    let inner = std::mem::take(other);
                    *other = serde_json::json!({ "allOf": [inner], "$defs": defs });
                }
            }
        }
        Ok(out)
    }

    fn convert(&self, s: &Value, at: &str, dir: Dir, refs: &mut Vec<String>, depth: usize) -> Result<Value, SpecError> {
        if depth > MAX_DEPTH {
            return Err(err(at, format!("the schema nests deeper than {MAX_DEPTH} levels")));
        }
        let m = match s {
            Value::Bool(_) => return Ok(s.clone()),
            Value::Object(m) => m,
            _ => return Err(err(at, "a schema must be an object")),
        };
        let legacy = self.dialect != Dialect::OpenApi31;
        let mut out = Map::new();
        if let Some(r) = m.get("$ref") {
            let ref_at = format!("{at}/$ref");
            let Some(r) = r.as_str() else { return Err(err(ref_at, "`$ref` must be a string")) };
            if !r.starts_with('#') {
                return Err(err(
                    ref_at,
                    format!("reference {r:?} is not local: only #/... references are followed (the gateway fetches nothing)"),
                ));
            }
            if local_ref(self.root, r).is_none() {
                return Err(err(ref_at, format!("broken reference {r:?}")));
            }
            let pointer = pct_decode(&r[1..], false);
            out.insert("$ref".into(), Value::String(format!("#/$defs/{}", escape(&pointer))));
            if !refs.contains(&pointer) {
                refs.push(pointer);
            }
            if legacy {
                return Ok(Value::Object(out));
            }
        }
        let nullable = legacy && m.get("nullable").and_then(Value::as_bool) == Some(true);
        for (k, v) in m {
            let sub = |key: &str| format!("{at}/{}", escape(key));
            match k.as_str() {
                "$ref" | "example" | "examples" | "discriminator" | "xml" | "externalDocs" | "$schema" | "$id"
                | "nullable" => {}
                _ if k.starts_with("x-") => {}
                "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
                    let Some(props) = v.as_object() else {
                        return Err(err(sub(k), format!("`{k}` must be an object")));
                    };
                    let mut conv = Map::new();
                    for (name, ps) in props {
                        let p_at = format!("{}/{}", sub(k), escape(name));
                        conv.insert(name.clone(), self.convert(ps, &p_at, dir, refs, depth + 1)?);
                    }
                    out.insert(k.clone(), Value::Object(conv));
                }
                "items" if v.is_array() => {
                    let list = self.convert_list(v, &sub(k), dir, refs, depth)?;
                    out.insert("prefixItems".into(), list);
                }
                "additionalItems" if m.get("items").is_some_and(Value::is_array) => {
                    out.insert("items".into(), self.convert(v, &sub(k), dir, refs, depth + 1)?);
                }
                "additionalItems" => {}
                "items"
                | "additionalProperties"
                | "not"
                | "contains"
                | "propertyNames"
                | "if"
                | "then"
                | "else"
                | "unevaluatedProperties"
                | "unevaluatedItems"
                | "contentSchema" => {
                    out.insert(k.clone(), self.convert(v, &sub(k), dir, refs, depth + 1)?);
                }
                "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                    out.insert(k.clone(), self.convert_list(v, &sub(k), dir, refs, depth)?);
                }
                "exclusiveMaximum" | "exclusiveMinimum" if v.is_boolean() => {
                    let bound = if k == "exclusiveMaximum" { "maximum" } else { "minimum" };
                    if v.as_bool() == Some(true) {
                        if let Some(b) = m.get(bound) {
                            out.insert(k.clone(), b.clone());
                        }
                    }
                }
                "maximum" | "minimum"
                    if m.get(&format!("exclusive{}", if k == "maximum" { "Maximum" } else { "Minimum" }))
                        == Some(&Value::Bool(true)) => {}
                "type" if v.as_str() == Some("file") => {}
                "required" => {
                    let Some(list) = v.as_array() else { return Err(err(sub(k), "`required` must be an array")) };
                    let props = m.get("properties");
                    let kept: Vec<Value> = list
                        .iter()
                        .filter(|n| {
                            let Some(ps) = n.as_str().and_then(|n| props?.get(n)) else { return true };
                            let ps = resolve(self.root, ps);
                            let flag = if dir == Dir::Request { "readOnly" } else { "writeOnly" };
                            ps.get(flag).and_then(Value::as_bool) != Some(true)
                        })
                        .cloned()
                        .collect();
                    out.insert(k.clone(), Value::Array(kept));
                }
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        if m.get("format").and_then(Value::as_str) == Some("int32") {
            out.entry("minimum").or_insert(Value::from(i32::MIN));
            out.entry("maximum").or_insert(Value::from(i32::MAX));
        }
        if nullable {
            match out.get_mut("type") {
                Some(Value::String(t)) => {
                    let t = std::mem::take(t);
                    out.insert("type".into(), serde_json::json!([t, "null"]));
                    if let Some(Value::Array(e)) = out.get_mut("enum") {
                        if !e.contains(&Value::Null) {
                            e.push(Value::Null);
                        }
                    }
                }
                Some(_) => {}
                None => return Ok(serde_json::json!({ "anyOf": [{ "type": "null" }, Value::Object(out)] })),
            }
        }
        Ok(Value::Object(out))
    }

    fn convert_list(
        &self,
        v: &Value,
        at: &str,
        dir: Dir,
        refs: &mut Vec<String>,
        depth: usize,
    ) -> Result<Value, SpecError> {
        let Some(list) = v.as_array() else { return Err(err(at, "expected an array of schemas")) };
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            out.push(self.convert(s, &format!("{at}/{i}"), dir, refs, depth + 1)?);
        }
        Ok(Value::Array(out))
    }
}

enum Compiled {
    Param(Param),
    Body(Body),
    Skip,
}

fn media_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).map(str::to_ascii_lowercase).collect())
        .unwrap_or_default()
}

fn kind_of(types: u8) -> Kind {
    let t = types & !T_NULL;
    if t == T_INT {
        Kind::Int
    } else if t == T_NUM || t == T_NUM | T_INT {
        Kind::Num
    } else if t == T_BOOL {
        Kind::Bool
    } else if t == T_ARR {
        Kind::Arr
    } else if t == T_STR {
        Kind::Str
    } else {
        Kind::Any
    }
}

// ---------------------------------------------------------------------------------------------
// Schemas as seen by drift and diff: references followed, `allOf` merged, `oneOf`/`anyOf`
// expanded into variants.

pub(crate) const T_NULL: u8 = 1;
pub(crate) const T_BOOL: u8 = 2;
pub(crate) const T_INT: u8 = 4;
pub(crate) const T_NUM: u8 = 8;
pub(crate) const T_STR: u8 = 16;
pub(crate) const T_ARR: u8 = 32;
pub(crate) const T_OBJ: u8 = 64;
const TYPE_NAMES: [(u8, &str); 7] = [
    (T_ARR, "array"),
    (T_BOOL, "boolean"),
    (T_INT, "integer"),
    (T_NULL, "null"),
    (T_NUM, "number"),
    (T_OBJ, "object"),
    (T_STR, "string"),
];

/// `integer|null`; `any` for no constraint. Names sorted.
pub(crate) fn type_names(t: u8) -> String {
    if t == 0 {
        return "any".into();
    }
    TYPE_NAMES.iter().filter(|(b, _)| t & b != 0).map(|(_, n)| *n).collect::<Vec<_>>().join("|")
}

fn type_bit(name: &str) -> u8 {
    TYPE_NAMES.iter().find(|(_, n)| *n == name).map_or(0, |(b, _)| *b)
}

pub(crate) fn value_type(v: &Value) -> u8 {
    match v {
        Value::Null => T_NULL,
        Value::Bool(_) => T_BOOL,
        Value::Number(n) if n.is_i64() || n.is_u64() => T_INT,
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15) => T_INT,
        Value::Number(_) => T_NUM,
        Value::String(_) => T_STR,
        Value::Array(_) => T_ARR,
        Value::Object(_) => T_OBJ,
    }
}

static ANY: Value = Value::Bool(true);

/// Follows `$ref`s (siblings dropped); a broken or cyclic chain is "any".
pub(crate) fn resolve<'d>(root: &'d Value, mut s: &'d Value) -> &'d Value {
    for _ in 0..MAX_REF_HOPS {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => match local_ref(root, r) {
                Some(t) => s = t,
                None => return &ANY,
            },
            None => return s,
        }
    }
    &ANY
}

#[derive(Clone, Debug, Default)]
pub(crate) enum Additional<'d> {
    #[default]
    Absent,
    Allowed,
    Denied,
    Schema(&'d Value),
}

/// One alternative of a schema, flattened for comparison.
#[derive(Clone, Debug, Default)]
pub(crate) struct View<'d> {
    /// Type bits; 0: any.
    pub(crate) types: u8,
    pub(crate) format: Option<&'d str>,
    pub(crate) props: Vec<(&'d str, &'d Value)>,
    pub(crate) required: Vec<&'d str>,
    pub(crate) declares_props: bool,
    pub(crate) pattern_props: bool,
    pub(crate) additional: Additional<'d>,
    pub(crate) items: Option<&'d Value>,
    pub(crate) read_only: bool,
    pub(crate) write_only: bool,
}

impl<'d> View<'d> {
    fn merge(mut self, o: &View<'d>) -> View<'d> {
        self.types = match (self.types, o.types) {
            (0, t) | (t, 0) => t,
            (a, b) if a & b != 0 => a & b,
            (a, _) => a,
        };
        self.format = self.format.or(o.format);
        for p in &o.props {
            if !self.props.iter().any(|(n, _)| *n == p.0) {
                self.props.push(*p);
            }
        }
        for r in &o.required {
            if !self.required.contains(r) {
                self.required.push(r);
            }
        }
        self.declares_props |= o.declares_props;
        self.pattern_props |= o.pattern_props;
        if matches!(self.additional, Additional::Absent) {
            self.additional = o.additional.clone();
        }
        self.items = self.items.or(o.items);
        self.read_only |= o.read_only;
        self.write_only |= o.write_only;
        self
    }

    /// Whether this property is not expected in `dir` (read-only in requests, write-only in
    /// responses).
    fn one_way(root: &'d Value, prop: &'d Value, dir: Dir) -> bool {
        let p = resolve(root, prop);
        let flag = if dir == Dir::Request { "readOnly" } else { "writeOnly" };
        p.get(flag).and_then(Value::as_bool) == Some(true)
    }
}

/// The variants of a schema: `allOf` merged, `oneOf`/`anyOf` expanded (at most
/// [`MAX_VARIANTS`]). Never empty.
pub(crate) fn variants<'d>(root: &'d Value, schema: &'d Value, depth: usize) -> Vec<View<'d>> {
    let s = resolve(root, schema);
    let Some(m) = s.as_object() else { return vec![View::default()] };
    if depth > 8 {
        return vec![View::default()];
    }
    let mut base = View::default();
    match m.get("type") {
        Some(Value::String(t)) => base.types = type_bit(t),
        Some(Value::Array(ts)) => base.types = ts.iter().filter_map(Value::as_str).fold(0, |a, t| a | type_bit(t)),
        _ => {}
    }
    if base.types & T_NUM != 0 {
        base.types |= T_INT;
    }
    if base.types != 0 && m.get("nullable").and_then(Value::as_bool) == Some(true) {
        base.types |= T_NULL;
    }
    base.format = m.get("format").and_then(Value::as_str);
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        base.declares_props = true;
        base.props = props.iter().map(|(k, v)| (k.as_str(), v)).collect();
    }
    base.required =
        m.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    base.pattern_props = m.get("patternProperties").and_then(Value::as_object).is_some_and(|p| !p.is_empty());
    base.additional = match m.get("additionalProperties") {
        None => Additional::Absent,
        Some(Value::Bool(true)) => Additional::Allowed,
        Some(Value::Bool(false)) => Additional::Denied,
        Some(s) => Additional::Schema(s),
    };
    base.items = m.get("items").filter(|i| !i.is_array());
    base.read_only = m.get("readOnly").and_then(Value::as_bool) == Some(true);
    base.write_only = m.get("writeOnly").and_then(Value::as_bool) == Some(true);
    let mut acc = vec![base];
    for b in m.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        let bs = variants(root, b, depth + 1);
        acc = product(&acc, &bs);
    }
    let alts: Vec<View<'d>> = ["oneOf", "anyOf"]
        .iter()
        .filter_map(|k| m.get(*k).and_then(Value::as_array))
        .flatten()
        .flat_map(|a| variants(root, a, depth + 1))
        .take(MAX_VARIANTS)
        .collect();
    if !alts.is_empty() {
        acc = product(&acc, &alts);
    }
    acc
}

fn product<'d>(a: &[View<'d>], b: &[View<'d>]) -> Vec<View<'d>> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            if out.len() < MAX_VARIANTS {
                out.push(x.clone().merge(y));
            }
        }
    }
    out
}

/// The formats drift checks, with their validators: built once per process (they are the
/// same for every document).
fn formats() -> &'static [(&'static str, Validator)] {
    static FORMATS: std::sync::OnceLock<Vec<(&'static str, Validator)>> = std::sync::OnceLock::new();
    FORMATS.get_or_init(|| {
        ["date-time", "date", "email", "uuid", "ipv4", "ipv6", "uri"]
            .into_iter()
            .filter_map(|f| {
                let schema = serde_json::json!({ "format": f });
                let v =
                    jsonschema::options().with_draft(Draft::Draft202012).should_validate_formats(true).build(&schema);
                Some((f, v.ok()?))
            })
            .collect()
    })
}

struct Walker<'s> {
    spec: &'s Spec,
    out: Vec<Drift>,
    budget: usize,
    truncated: bool,
}

fn type_drift(dir: Dir) -> DriftKind {
    if dir == Dir::Request {
        DriftKind::RequestFieldType
    } else {
        DriftKind::ResponseFieldType
    }
}

impl Walker<'_> {
    fn push(&mut self, d: Drift) {
        if self.out.contains(&d) {
            return;
        }
        if self.out.len() >= MAX_DRIFTS {
            self.truncated = true;
            return;
        }
        self.out.push(d);
    }

    /// Appends `d` to `out` once, up to the cap.
    fn emit(&mut self, out: &mut Vec<Drift>, d: Drift) {
        if out.contains(&d) {
            return;
        }
        if out.len() >= MAX_DRIFTS {
            self.truncated = true;
            return;
        }
        out.push(d);
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &mut self,
        v: &Value,
        schema: &Value,
        dir: Dir,
        prefix: &str,
        ptr: &mut String,
        depth: usize,
        out: &mut Vec<Drift>,
    ) {
        if self.budget == 0 || depth > MAX_DEPTH {
            self.truncated = true;
            return;
        }
        self.budget -= 1;
        let root = &self.spec.doc;
        let views = variants(root, schema, 0);
        if views.len() == 1 {
            self.check(v, &views[0], dir, prefix, ptr, depth, out);
            return;
        }
        let mut best: Option<Vec<Drift>> = None;
        for view in &views {
            let mut tmp = Vec::new();
            self.check(v, view, dir, prefix, ptr, depth, &mut tmp);
            if best.as_ref().is_none_or(|b| tmp.len() < b.len()) {
                let done = tmp.is_empty();
                best = Some(tmp);
                if done {
                    break;
                }
            }
        }
        out.extend(best.unwrap_or_default());
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        &mut self,
        v: &Value,
        view: &View<'_>,
        dir: Dir,
        prefix: &str,
        ptr: &mut String,
        depth: usize,
        out: &mut Vec<Drift>,
    ) {
        let location = |ptr: &str| if ptr.is_empty() { prefix.to_string() } else { format!("{prefix} {ptr}") };
        let got = value_type(v);
        if view.types != 0 && view.types & got == 0 {
            let d = Drift {
                kind: type_drift(dir),
                location: location(ptr),
                detail: format!("expected {}, got {}", type_names(view.types), type_names(got)),
            };
            self.emit(out, d);
            return;
        }
        let root = &self.spec.doc;
        match v {
            Value::String(s) => {
                let Some(f) = view.format else { return };
                let Some((_, fv)) = formats().iter().find(|(n, _)| *n == f) else { return };
                if !fv.is_valid(v) {
                    let shown: String = s.chars().take(40).collect();
                    let d = Drift {
                        kind: if dir == Dir::Request {
                            DriftKind::RequestFieldFormat
                        } else {
                            DriftKind::ResponseFieldFormat
                        },
                        location: location(ptr),
                        detail: format!("expected format {f}, got {shown:?}"),
                    };
                    self.emit(out, d);
                }
            }
            Value::Object(map) => {
                let len = ptr.len();
                for (k, item) in map {
                    ptr.push('/');
                    ptr.push_str(&escape(k));
                    if let Some((_, ps)) = view.props.iter().find(|(n, _)| *n == k) {
                        self.walk(item, ps, dir, prefix, ptr, depth + 1, out);
                    } else {
                        match view.additional {
                            Additional::Schema(s) => self.walk(item, s, dir, prefix, ptr, depth + 1, out),
                            Additional::Allowed => {}
                            Additional::Absent | Additional::Denied => {
                                let denied = matches!(view.additional, Additional::Denied);
                                if (view.declares_props || denied) && !view.pattern_props {
                                    let d = Drift {
                                        kind: if dir == Dir::Request {
                                            DriftKind::RequestFieldAdded
                                        } else {
                                            DriftKind::ResponseFieldAdded
                                        },
                                        location: location(ptr),
                                        detail: format!("field not in the schema (a {})", type_names(value_type(item))),
                                    };
                                    self.emit(out, d);
                                }
                            }
                        }
                    }
                    ptr.truncate(len);
                }
                for r in &view.required {
                    if map.contains_key(*r) {
                        continue;
                    }
                    let one_way =
                        view.props.iter().find(|(n, _)| n == r).is_some_and(|(_, ps)| View::one_way(root, ps, dir));
                    if one_way {
                        continue;
                    }
                    let d = Drift {
                        kind: if dir == Dir::Request {
                            DriftKind::RequestFieldMissing
                        } else {
                            DriftKind::ResponseFieldMissing
                        },
                        location: location(&format!("{ptr}/{}", escape(r))),
                        detail: "required field absent".into(),
                    };
                    self.emit(out, d);
                }
            }
            Value::Array(items) => {
                let Some(is) = view.items else { return };
                let len = ptr.len();
                ptr.push_str("/*");
                if items.len() > MAX_ARRAY_ITEMS {
                    self.truncated = true;
                }
                for item in items.iter().take(MAX_ARRAY_ITEMS) {
                    self.walk(item, is, dir, prefix, ptr, depth + 1, out);
                    if self.budget == 0 {
                        break;
                    }
                }
                ptr.truncate(len);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
