//! One API's inventory: the endpoints its traffic shows (method and path template, hits per
//! status, first and last seen) and, from sampled exchanges, what its operations take and
//! return (parameters, request and response bodies as [`Shape`]s). The caller persists it as
//! JSON; [`Inventory::openapi`] writes it out as an OpenAPI 3.1 document.
//!
//! Must not: read a clock (times come in as unix seconds), grow without bound (endpoints,
//! trie nodes, parameters and content types per operation are capped and the caller is told
//! when a cap or a cardinality guard fired), or panic on any request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::exchange::Exchange;
use crate::infer::{scalar, Shape};
use crate::openapi::{self, ApiMeta};
use crate::template::{Merge, PathTrie, Print, Refused, Template, WEAK};

/// Parameters (query, header or cookie) kept per operation and place.
pub const MAX_PARAMS: usize = 32;
/// Content types kept per operation's request, and per response status.
pub const MAX_CONTENT_TYPES: usize = 4;
/// Distinct status codes kept per operation; more are left out of the breakdown (still counted
/// in hits).
pub const MAX_STATUSES: usize = 32;
/// Longest method name kept; longer ones are refused.
pub const MAX_METHOD_LEN: usize = 16;

/// Bounds for one API's inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Distinct (method, template) pairs.
    pub max_endpoints: usize,
    /// Nodes of the path trie (each distinct segment position, constants and parameters).
    pub max_nodes: usize,
}

impl Default for Limits {
    /// 1000 endpoints covers the largest public APIs (GitHub's REST API has ~900 operations);
    /// 4 nodes per endpoint leaves room for the constants and values seen before a position
    /// is templated.
    fn default() -> Self {
        Limits { max_endpoints: 1000, max_nodes: 4000 }
    }
}

/// What [`Inventory::hit`] did, for the caller's counters. Several can hold at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Hit {
    /// The request was counted under an endpoint.
    pub counted: bool,
    /// It was the endpoint's first request.
    pub new_endpoint: bool,
    /// Literal siblings were folded into a parameter (a re-templating; earlier paths merged).
    pub retemplated: bool,
    /// The node cap forced a position into a parameter (the cardinality guard).
    pub guard: bool,
    /// Why it was not counted.
    pub refused: Option<Refusal>,
}

/// Why a request was not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Refusal {
    /// [`Limits::max_endpoints`] reached and this is a new endpoint.
    EndpointCap,
    /// [`Limits::max_nodes`] reached and the path needs a new constant.
    NodeCap,
    /// More than [`crate::template::MAX_SEGMENTS`] segments.
    TooDeep,
    /// Not an HTTP method token, or longer than [`MAX_METHOD_LEN`].
    BadMethod,
}

/// One endpoint, as listed by [`Inventory::endpoints`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub method: String,
    /// The path template, e.g. `/users/{userId}`.
    pub path: String,
    pub hits: u64,
    pub statuses: BTreeMap<u16, u64>,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
}

/// One API's endpoints and what sampled traffic showed of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Inventory {
    trie: PathTrie<Ops>,
    /// Operations in the trie, kept in step with it.
    endpoints: usize,
}

/// The operations of one template, by method (uppercase).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Ops(pub(crate) BTreeMap<String, Op>);

/// What is known of one operation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Op {
    pub(crate) hits: u64,
    pub(crate) statuses: BTreeMap<u16, u64>,
    pub(crate) first_seen: u64,
    pub(crate) last_seen: u64,
    /// Sampled exchanges learned.
    #[serde(default)]
    pub(crate) samples: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) query: BTreeMap<String, Param>,
    /// By lowercase name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) headers: BTreeMap<String, Param>,
    /// Cookie names (values are redacted by the capture).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) cookies: BTreeMap<String, u64>,
    /// Request bodies by media type (`Shape` stays empty for non-JSON bodies).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) request: BTreeMap<String, Shape>,
    /// Response bodies by status, then media type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) responses: BTreeMap<u16, BTreeMap<String, Shape>>,
}

/// A query or header parameter: samples it appeared in and its values' shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Param {
    pub(crate) seen: u64,
    pub(crate) shape: Shape,
}

impl Merge for Ops {
    fn merge(&mut self, other: Ops) {
        for (m, op) in other.0 {
            match self.0.get_mut(&m) {
                Some(mine) => mine.merge(op),
                None => {
                    self.0.insert(m, op);
                }
            }
        }
    }
}

impl Op {
    fn merge(&mut self, o: Op) {
        self.first_seen = match (self.hits, o.hits) {
            (0, _) => o.first_seen,
            (_, 0) => self.first_seen,
            _ => self.first_seen.min(o.first_seen),
        };
        self.last_seen = self.last_seen.max(o.last_seen);
        self.hits += o.hits;
        self.samples += o.samples;
        for (s, n) in o.statuses {
            if self.statuses.len() < MAX_STATUSES || self.statuses.contains_key(&s) {
                *self.statuses.entry(s).or_default() += n;
            }
        }
        merge_params(&mut self.query, o.query);
        merge_params(&mut self.headers, o.headers);
        for (c, n) in o.cookies {
            if self.cookies.len() < MAX_PARAMS || self.cookies.contains_key(&c) {
                *self.cookies.entry(c).or_default() += n;
            }
        }
        merge_bodies(&mut self.request, o.request);
        for (s, bodies) in o.responses {
            if self.responses.len() < MAX_STATUSES || self.responses.contains_key(&s) {
                merge_bodies(self.responses.entry(s).or_default(), bodies);
            }
        }
    }

    fn count(&mut self, status: u16, at: u64) {
        if self.hits == 0 {
            self.first_seen = at;
        }
        self.first_seen = self.first_seen.min(at);
        self.last_seen = self.last_seen.max(at);
        self.hits += 1;
        if self.statuses.len() < MAX_STATUSES || self.statuses.contains_key(&status) {
            *self.statuses.entry(status).or_default() += 1;
        }
    }

    fn learn(&mut self, x: &Exchange<'_>) {
        self.samples += 1;
        let mut names: Vec<&str> = Vec::new();
        for (name, value) in x.query_pairs() {
            if name.is_empty() || names.contains(&name) {
                continue;
            }
            names.push(name);
            observe_param(&mut self.query, name, value);
        }
        for (name, value) in &x.req_headers {
            let lower = name.to_ascii_lowercase();
            if lower == "cookie" {
                self.learn_cookies(value);
            } else if !openapi::is_standard_header(&lower) && !lower.is_empty() {
                observe_param(&mut self.headers, &lower, value);
            }
        }
        if !x.req_body.is_empty() {
            let ct = media_type(x.req_header("content-type"));
            if let Some(shape) = body_slot(&mut self.request, ct) {
                if let Some(v) = x.req_json() {
                    shape.observe(&v);
                }
            }
        }
        if self.responses.len() < MAX_STATUSES || self.responses.contains_key(&x.status) {
            let bodies = self.responses.entry(x.status).or_default();
            if !x.resp_body.is_empty() || x.resp_truncated {
                let ct = media_type(x.resp_header("content-type"));
                if let Some(shape) = body_slot(bodies, ct) {
                    if let Some(v) = x.resp_json() {
                        shape.observe(&v);
                    }
                }
            }
        }
    }

    fn learn_cookies(&mut self, header: &str) {
        for pair in header.split(';') {
            let name = pair.split('=').next().unwrap_or("").trim();
            let valid = !name.is_empty() && name.len() <= 64 && name.bytes().all(|c| c.is_ascii_graphic());
            if valid && (self.cookies.len() < MAX_PARAMS || self.cookies.contains_key(name)) {
                *self.cookies.entry(name.to_owned()).or_default() += 1;
            }
        }
    }
}

fn observe_param(params: &mut BTreeMap<String, Param>, name: &str, value: &str) {
    if name.len() > 64 {
        return;
    }
    if params.len() >= MAX_PARAMS && !params.contains_key(name) {
        return;
    }
    let p = params.entry(name.to_owned()).or_default();
    p.seen += 1;
    p.shape.observe(&scalar(value));
}

fn merge_params(into: &mut BTreeMap<String, Param>, from: BTreeMap<String, Param>) {
    for (k, p) in from {
        if into.len() < MAX_PARAMS || into.contains_key(&k) {
            let mine = into.entry(k).or_default();
            mine.seen += p.seen;
            mine.shape.merge(p.shape);
        }
    }
}

fn merge_bodies(into: &mut BTreeMap<String, Shape>, from: BTreeMap<String, Shape>) {
    for (ct, s) in from {
        if into.len() < MAX_CONTENT_TYPES || into.contains_key(&ct) {
            into.entry(ct).or_default().merge(s);
        }
    }
}

fn body_slot(bodies: &mut BTreeMap<String, Shape>, ct: String) -> Option<&mut Shape> {
    if bodies.len() >= MAX_CONTENT_TYPES && !bodies.contains_key(&ct) {
        return None;
    }
    Some(bodies.entry(ct).or_default())
}

/// The media type of a `Content-Type`, lowercase, without parameters;
/// `application/octet-stream` when absent or not `type/subtype`.
fn media_type(ct: Option<&str>) -> String {
    let mime = ct.and_then(|c| c.split(';').next()).unwrap_or("").trim().to_ascii_lowercase();
    let valid = mime.len() <= 100
        && mime.split_once('/').is_some_and(|(t, s)| {
            let token =
                |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+*".contains(&c));
            token(t) && token(s)
        });
    if valid {
        mime
    } else {
        "application/octet-stream".into()
    }
}

/// An HTTP method token, uppercased.
fn method_key(method: &str) -> Option<String> {
    let ok = !method.is_empty()
        && method.len() <= MAX_METHOD_LEN
        && method.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c));
    ok.then(|| method.to_ascii_uppercase())
}

/// One operation for the export.
pub(crate) struct OpView<'a> {
    pub(crate) template: &'a Template,
    pub(crate) method: &'a str,
    pub(crate) op: &'a Op,
}

/// What an endpoint's operations answer, for [`PathTrie::fold_alike`]: per method, the record
/// keys of each 2xx or 3xx JSON response with records of [`crate::infer::ALIKE_MIN_KEYS`] keys
/// or more (each key tagged with the method); and weak prints ([`WEAK`]) for the rest: a status
/// answered without a body (`PUT /user/following/{username}`: 204), a body that is not JSON
/// (by media type), or smaller JSON records (by their keys).
fn fingerprints(ops: &Ops) -> Vec<Print> {
    use std::hash::{Hash, Hasher};
    let weak = |what: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        what(&mut h);
        vec![WEAK, h.finish()]
    };
    let mut out = Vec::new();
    for (method, op) in &ops.0 {
        for (status, bodies) in op.responses.range(200..400) {
            if bodies.is_empty() {
                out.push(weak(&|h| (method, status).hash(h)));
            }
            for (ct, shape) in bodies {
                let json = ct == "application/json" || ct.ends_with("+json");
                match json.then(|| shape.structure()) {
                    Some((keys, true)) => {
                        let mut print: Print = keys
                            .into_iter()
                            .map(|k| {
                                let mut h = std::collections::hash_map::DefaultHasher::new();
                                (method, k).hash(&mut h);
                                h.finish()
                            })
                            .collect();
                        print.sort_unstable();
                        out.push(print);
                    }
                    Some((keys, false)) => out.push(weak(&|h| (method, status, &keys).hash(h))),
                    None => out.push(weak(&|h| (method, status, ct).hash(h))),
                }
            }
        }
    }
    out
}

impl Inventory {
    /// Every request (not only sampled ones): method, path relative to the listen path (no
    /// query), status, unix seconds.
    pub fn hit(&mut self, method: &str, path: &str, status: u16, at: u64, limits: &Limits) -> Hit {
        let mut hit = Hit::default();
        let Some(method) = method_key(method) else {
            hit.refused = Some(Refusal::BadMethod);
            return hit;
        };
        let (ops, learned) = match self.trie.insert(path, limits.max_nodes) {
            Ok(found) => found,
            Err(Refused::TooDeep) => {
                hit.refused = Some(Refusal::TooDeep);
                return hit;
            }
            Err(Refused::NodeCap) => {
                hit.refused = Some(Refusal::NodeCap);
                return hit;
            }
        };
        hit.retemplated = learned.retemplated;
        hit.guard = learned.guard;
        let known = ops.0.contains_key(&method);
        if !known && self.endpoints >= limits.max_endpoints {
            if learned.retemplated || learned.guard {
                // Merges may have freed room: count again (rare, bounded by the node cap).
                let now = self.count_endpoints();
                self.endpoints = now;
                if now < limits.max_endpoints {
                    let again = self.hit(&method, path, status, at, limits);
                    return Hit { retemplated: learned.retemplated, guard: learned.guard, ..again };
                }
            }
            hit.refused = Some(Refusal::EndpointCap);
            return hit;
        }
        ops.0.entry(method).or_default().count(status, at);
        hit.counted = true;
        hit.new_endpoint = !known;
        if learned.retemplated || learned.guard {
            self.endpoints = self.count_endpoints();
        } else if !known {
            self.endpoints += 1;
        }
        hit
    }

    /// A sampled exchange (bodies, headers, query): learns parameters and schemas. Does not
    /// count a hit, and learns nothing for an endpoint [`Inventory::hit`] has not counted.
    pub fn sample(&mut self, x: &Exchange<'_>, _limits: &Limits) {
        let Some(method) = method_key(x.method) else { return };
        let Some(op) = self.trie.get_mut(x.path).and_then(|ops| ops.0.get_mut(&method)) else { return };
        op.learn(x);
        if (200..400).contains(&x.status) && self.trie.fold_alike(x.path, fingerprints) {
            self.endpoints = self.count_endpoints();
        }
    }

    /// The endpoints seen, by template then method.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let mut out = Vec::new();
        for (t, ops) in self.trie.leaves() {
            for (method, op) in &ops.0 {
                out.push(Endpoint {
                    method: method.clone(),
                    path: t.path.clone(),
                    hits: op.hits,
                    statuses: op.statuses.clone(),
                    first_seen: op.first_seen,
                    last_seen: op.last_seen,
                });
            }
        }
        out
    }

    /// Number of endpoints (what [`Limits::max_endpoints`] bounds).
    pub fn endpoint_count(&self) -> usize {
        self.endpoints
    }

    /// Nodes in the path trie (what [`Limits::max_nodes`] bounds).
    pub fn node_count(&self) -> usize {
        self.trie.nodes()
    }

    /// The template of the endpoint `method path` was counted under, if any.
    pub fn template_of(&self, method: &str, path: &str) -> Option<String> {
        let method = method_key(method)?;
        let (t, ops) = self.trie.template_of(path)?;
        ops.0.contains_key(&method).then_some(t.path)
    }

    /// The OpenAPI 3.1.0 document of what was seen.
    pub fn openapi(&self, meta: &ApiMeta<'_>) -> serde_json::Value {
        let leaves = self.trie.leaves();
        let views: Vec<OpView<'_>> = leaves
            .iter()
            .flat_map(|(t, ops)| ops.0.iter().map(move |(m, op)| OpView { template: t, method: m, op }))
            .collect();
        openapi::document(&views, meta)
    }

    fn count_endpoints(&self) -> usize {
        self.trie.leaves().iter().map(|(_, ops)| ops.0.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::{ApiKeyIn, SecurityScheme};
    use serde_json::{json, Value};

    fn exchange<'a>(method: &'a str, path: &'a str, query: &'a str, status: u16, body: &'a str) -> Exchange<'a> {
        Exchange {
            method,
            path,
            query,
            req_headers: vec![
                ("Host", "api.example.com"),
                ("X-Tenant", "acme"),
                ("Authorization", "[redacted]"),
                ("X-Api-Token", "[redacted]"),
                ("Cookie", "session=[redacted]; theme=[redacted]"),
                ("X-Forwarded-For", "10.0.0.1"),
            ],
            status,
            resp_headers: vec![("Content-Type", "application/json; charset=utf-8")],
            resp_body: body.as_bytes(),
            ..Default::default()
        }
    }

    /// A jsonplaceholder-like API, hit and sampled.
    fn placeholder() -> Inventory {
        let mut inv = Inventory::default();
        let l = Limits::default();
        for i in 1..=30u64 {
            let post = format!("/posts/{i}");
            let body = format!(
                r#"{{"id": {i}, "userId": {}, "title": "t{i}", "body": "b", "status": "{}"}}"#,
                i % 3,
                ["draft", "published"][i as usize % 2]
            );
            inv.hit("GET", &post, 200, 1_700_000_000 + i, &l);
            inv.sample(&exchange("GET", &post, "", 200, &body), &l);
            let comments = format!(r#"[{{"id": {i}, "email": "a{i}@example.com", "postId": {i}}}]"#);
            inv.hit("GET", "/comments", 200, 1_700_000_000 + i, &l);
            let q = format!("postId={i}&_limit=5");
            let q = if i % 2 == 0 { q } else { format!("postId={i}") };
            inv.sample(&exchange("GET", "/comments", &q, 200, &comments), &l);
        }
        inv.hit("GET", "/posts", 200, 1_700_000_100, &l);
        inv.hit("GET", "/posts/1/comments", 200, 1_700_000_100, &l);
        inv.hit("GET", "/users/3", 200, 1_700_000_100, &l);
        inv.hit("GET", "/posts/999", 404, 1_700_000_200, &l);
        inv.hit("DELETE", "/posts/1", 204, 1_700_000_300, &l);
        let mut create = exchange("POST", "/posts", "", 201, r#"{"id": 101}"#);
        create.req_headers.push(("Content-Type", "application/json"));
        create.req_body = br#"{"title": "x", "body": "y", "userId": 1}"#;
        inv.hit("POST", "/posts", 201, 1_700_000_400, &l);
        inv.sample(&create, &l);
        inv
    }

    #[test]
    fn endpoints_list_templates_with_hits_statuses_and_times() {
        let inv = placeholder();
        let eps: Vec<(String, String, u64)> = inv.endpoints().into_iter().map(|e| (e.method, e.path, e.hits)).collect();
        let want = [
            ("GET", "/comments", 30),
            ("GET", "/posts", 1),
            ("POST", "/posts", 1),
            ("DELETE", "/posts/{postId}", 1),
            ("GET", "/posts/{postId}", 31),
            ("GET", "/posts/{postId}/comments", 1),
            ("GET", "/users/{userId}", 1),
        ];
        let want: Vec<(String, String, u64)> =
            want.iter().map(|(m, p, h)| (m.to_string(), p.to_string(), *h)).collect();
        assert_eq!(eps, want);
        let get = inv.endpoints().into_iter().find(|e| e.method == "GET" && e.path == "/posts/{postId}").unwrap();
        assert_eq!(get.statuses, BTreeMap::from([(200, 30), (404, 1)]));
        assert_eq!((get.first_seen, get.last_seen), (1_700_000_001, 1_700_000_200));
        assert_eq!(inv.template_of("get", "/posts/77").as_deref(), Some("/posts/{postId}"));
        assert_eq!(inv.template_of("PUT", "/posts/77"), None, "no such operation");
        assert_eq!(inv.endpoint_count(), 7);
    }

    #[test]
    fn a_word_answering_204_like_a_free_text_parameter_joins_it() {
        // GitHub's `PUT /user/following/{username}`: 204 and no body, for an escaped name and
        // for `Infinity` alike.
        let mut inv = Inventory::default();
        let l = Limits::default();
        for name in ["%C3%A5%C3%9B", "Infinity", "e%C3%AC%23"] {
            let path = format!("/user/following/{name}");
            inv.hit("PUT", &path, 204, 1, &l);
            inv.sample(&exchange("PUT", &path, "", 204, ""), &l);
        }
        let eps: Vec<String> =
            inv.endpoints().into_iter().map(|e| format!("{} {} {}", e.method, e.path, e.hits)).collect();
        assert_eq!(eps, ["PUT /user/following/{followingId} 3"]);
        // Constants answering 204 alike, with no parameter beside them, stay.
        let mut inv = Inventory::default();
        for c in ["lfs", "vulnerability-alerts", "automated-security-fixes"] {
            let path = format!("/repos/o/r/{c}");
            inv.hit("PUT", &path, 204, 1, &l);
            inv.sample(&exchange("PUT", &path, "", 204, ""), &l);
        }
        assert_eq!(inv.endpoint_count(), 3);
    }

    #[test]
    fn a_retemplating_merges_endpoints_and_the_caps_are_reported() {
        let mut inv = Inventory::default();
        let l = Limits { max_endpoints: 50, max_nodes: 4000 };
        let mut retemplated = 0;
        for i in 0..40 {
            let h = inv.hit("GET", &format!("/tags/tag{}", "z".repeat(i + 1)), 200, i as u64, &l);
            assert!(h.counted);
            retemplated += usize::from(h.retemplated);
        }
        assert_eq!(retemplated, 1);
        let eps = inv.endpoints();
        assert_eq!(eps.len(), 1);
        assert_eq!(
            (eps[0].path.as_str(), eps[0].hits, eps[0].first_seen, eps[0].last_seen),
            ("/tags/{tagId}", 40, 0, 39)
        );

        let small = Limits { max_endpoints: 3, max_nodes: 4000 };
        let mut inv = Inventory::default();
        for (m, p) in [("GET", "/a"), ("GET", "/b"), ("POST", "/a")] {
            assert!(inv.hit(m, p, 200, 0, &small).counted);
        }
        let h = inv.hit("GET", "/c", 200, 0, &small);
        assert_eq!((h.counted, h.refused), (false, Some(Refusal::EndpointCap)));
        assert!(inv.hit("GET", "/a", 200, 0, &small).counted, "known endpoints still count");
        assert_eq!(inv.hit("GET CONNECT", "/a", 200, 0, &small).refused, Some(Refusal::BadMethod));

        let tiny = Limits { max_endpoints: 100, max_nodes: 8 };
        let mut inv = Inventory::default();
        let mut guards = 0;
        for i in 0..100 {
            let h = inv.hit("GET", &format!("/x/name{i}q/y"), 200, 0, &tiny);
            guards += usize::from(h.guard);
            assert!(inv.node_count() <= 8);
        }
        assert!(guards > 0);
        assert_eq!(inv.endpoint_count(), inv.endpoints().len());
    }

    #[test]
    fn siblings_answering_the_same_record_fold_by_their_bodies() {
        let l = Limits::default();
        let mut inv = Inventory::default();
        let mut see = |path: &str, body: &str| {
            inv.hit("GET", path, 200, 1_700_000_000, &l);
            inv.sample(&exchange("GET", path, "", 200, body), &l);
        };
        let artist = r#"{"id": "x", "name": "n", "genres": [], "images": [{"url": "u", "height": 1}]}"#;
        see("/artists/ad%20nostrud", artist);
        see("/artists/enim", artist);
        // Same top-level keys, different nested ones: a different record.
        see("/artists/featured", r#"{"id": "x", "name": "n", "genres": [], "images": [{"href": "u"}]}"#);
        let issue = r#"{"id": 1, "title": "t", "state": "open"}"#;
        let pull = r#"{"id": 1, "title": "t", "state": "open", "merged": false}"#;
        let user = r#"[{"login": "a", "id": 1, "avatar_url": "u"}]"#;
        for (path, body) in [
            ("/repos/o/r/issue/1", issue),
            ("/repos/o/r/pull/2", pull),
            ("/users/octocat/followers", user),
            ("/users/octocat/following", user),
            ("/orgs/o/public_members", user),
            ("/orgs/o/outside_collaborators", user),
            // Records of fewer than 3 keys say too little.
            ("/pets/dog-like", r#"{"id": 1, "name": "a"}"#),
            ("/pets/cat-like", r#"{"id": 1, "name": "a"}"#),
            ("/pets/bird-like", r#"{"id": 1, "name": "a"}"#),
        ] {
            see(path, body);
        }
        // An error answer teaches nothing.
        inv.hit("GET", "/artists/consectetur", 404, 1_700_000_000, &l);
        inv.sample(&exchange("GET", "/artists/consectetur", "", 404, r#"{"error": 1, "status": 2, "detail": 3}"#), &l);
        let paths: Vec<String> = inv.endpoints().into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "/artists/consectetur",
                "/artists/featured",
                "/artists/{artistId}",
                "/orgs/{org}/outside_collaborators",
                "/orgs/{org}/public_members",
                "/pets/bird-like",
                "/pets/cat-like",
                "/pets/dog-like",
                "/repos/{owner}/{repo}/issue/{issueId}",
                "/repos/{owner}/{repo}/pull/{pullId}",
                "/users/octocat/followers",
                "/users/octocat/following",
            ]
        );
        assert_eq!(inv.endpoint_count(), paths.len());
        assert_eq!(inv.template_of("GET", "/artists/enim").as_deref(), Some("/artists/{artistId}"));
    }

    #[test]
    fn an_inventory_round_trips_through_json_even_at_the_depth_bounds() {
        let mut inv = placeholder();
        let l = Limits::default();
        let deep_path = "/a".repeat(crate::template::MAX_SEGMENTS);
        let mut body = json!(1);
        for _ in 0..50 {
            body = json!({"k": [body]});
        }
        let body = body.to_string();
        inv.hit("GET", &deep_path, 200, 0, &l);
        inv.sample(&exchange("GET", &deep_path, "", 200, &body), &l);
        let text = serde_json::to_string(&inv).unwrap();
        let back: Inventory = serde_json::from_str(&text).unwrap();
        assert_eq!(back.endpoints(), inv.endpoints());
        let meta = ApiMeta { title: "t", version: "1", server_url: None, security: &[] };
        assert_eq!(back.openapi(&meta), inv.openapi(&meta));
    }

    #[test]
    fn the_export_describes_parameters_bodies_and_security() {
        let inv = placeholder();
        let security = [
            SecurityScheme::ApiKey { name: "X-Api-Token".into(), location: ApiKeyIn::Header },
            SecurityScheme::Bearer { jwt: true },
        ];
        let meta = ApiMeta {
            title: "Placeholder",
            version: "1.0",
            server_url: Some("https://api.example.com/v1"),
            security: &security,
        };
        let doc = inv.openapi(&meta);
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["servers"][0]["url"], "https://api.example.com/v1");
        assert_eq!(doc["security"], json!([{"apiKey": []}, {"bearerAuth": []}]));
        let get = &doc["paths"]["/posts/{postId}"]["get"];
        assert_eq!(get["operationId"], "getPostsByPostId");
        let params = get["parameters"].as_array().unwrap();
        let names: Vec<(&str, &str)> =
            params.iter().map(|p| (p["name"].as_str().unwrap(), p["in"].as_str().unwrap())).collect();
        assert_eq!(names, [("postId", "path"), ("x-tenant", "header"), ("session", "cookie"), ("theme", "cookie")]);
        assert_eq!(params[0]["schema"], json!({"type": "integer"}));
        let schema = &get["responses"]["200"]["content"]["application/json"]["schema"];
        assert_eq!(schema["properties"]["status"], json!({"type": "string", "enum": ["draft", "published"]}));
        assert_eq!(schema["properties"]["id"], json!({"type": "integer"}));
        assert_eq!(get["responses"]["404"], json!({"description": "Not Found"}));
        let comments = &doc["paths"]["/comments"]["get"];
        let q: Vec<(&str, bool)> = comments["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| (p["name"].as_str().unwrap(), p["required"].as_bool().unwrap()))
            .collect();
        assert_eq!(q, [("_limit", false), ("postId", true)]);
        let item = &comments["responses"]["200"]["content"]["application/json"]["schema"]["items"];
        assert_eq!(item["properties"]["email"], json!({"type": "string", "format": "email"}));
        let post = &doc["paths"]["/posts"]["post"];
        assert_eq!(
            post["requestBody"]["content"]["application/json"]["schema"]["required"],
            json!(["body", "title", "userId"])
        );
        assert_eq!(doc["paths"]["/posts/{postId}"]["delete"]["responses"]["204"], json!({"description": "No Content"}));
        let yaml = crate::openapi::to_yaml(&doc);
        assert!(yaml.contains("openapi: 3.1.0"), "{yaml}");
        let text = doc.to_string();
        assert!(!text.contains("redacted") && !text.contains("x-api-token") && !text.contains("authorization"));
    }

    #[test]
    fn the_export_validates_as_openapi_3_1() {
        let mut inv = placeholder();
        let l = Limits::default();
        for p in ["/repos/a/b/issues/7", "/users/1/users/2", "/a//b", "/{x}", "/é/1", "/reports/2024-01-01"] {
            inv.hit("GET", p, 200, 0, &l);
            inv.hit("PROPFIND", p, 207, 0, &l);
            inv.hit("GET", p, 999, 0, &l);
        }
        let security = [
            SecurityScheme::ApiKey { name: "key".into(), location: ApiKeyIn::Query },
            SecurityScheme::ApiKey { name: "sid".into(), location: ApiKeyIn::Cookie },
            SecurityScheme::Bearer { jwt: false },
            SecurityScheme::Basic,
        ];
        let meta =
            ApiMeta { title: "Rich", version: "0.1", server_url: Some("https://api.example.com"), security: &security };
        let doc = inv.openapi(&meta);
        validate(&doc);
        validate(&Inventory::default().openapi(&ApiMeta { title: "", version: "", server_url: None, security: &[] }));
    }

    /// Runs PyPI's `openapi-spec-validator` on `doc`. Without it: fails under `CI=true`, skips
    /// with a reason otherwise.
    fn validate(doc: &Value) {
        let probe = std::process::Command::new("python3").args(["-c", "import openapi_spec_validator"]).output();
        if !probe.is_ok_and(|o| o.status.success()) {
            let why = "python3 with openapi-spec-validator not found (pip3 install 'openapi-spec-validator==0.9.*')";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("skipping the OpenAPI validation: {why}");
            return;
        }
        let file = std::env::temp_dir().join(format!("portcullis-visibility-openapi-{}.json", std::process::id()));
        std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
        let out =
            std::process::Command::new("python3").args(["-m", "openapi_spec_validator"]).arg(&file).output().unwrap();
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            serde_json::to_string_pretty(doc).unwrap()
        );
    }
}
