//! The provided OpenAPI document against the one the gateway reconstructed from traffic,
//! operation by operation: operations documented but never seen, operations seen but not
//! documented (shadow), and for operations in both, parameters, response statuses and response
//! body fields added, missing or of another type. Also the schema flattening this uses (typed
//! field paths), public for the reconstruction-quality harness.
//!
//! Must not: compare bytes or key order (everything is a structured, sorted difference);
//! panic or recurse without a bound on any document (schemas are flattened to at most
//! [`MAX_FIELDS`] paths, [`MAX_FLATTEN_DEPTH`] deep, recursive references cut).
//!
//! Matching: templates are equal when they are equal with parameter names ignored and one
//! trailing slash dropped (`/users/{id}` ≡ `/users/{userId}/`); a reconstructed template that
//! carries the provided document's base path matches without it. A status is documented by
//! its code or its range (`2XX`); `default` documents no status in particular. Types are
//! compatible when the reconstructed one is within the provided one (`integer` seen where
//! `number` is documented, no `null` seen where it is allowed, `any` on either side).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::spec::{self, Additional, Spec, IGNORED_HEADERS, T_INT, T_NUM};

/// Field paths recorded per flattened schema.
pub const MAX_FIELDS: usize = 2000;
/// Nesting followed when flattening a schema.
pub const MAX_FLATTEN_DEPTH: usize = 32;

/// A structured difference of two documents, sorted.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct SpecDiff {
    /// Documented operations never seen in traffic.
    pub only_provided: Vec<OpKey>,
    /// Operations seen in traffic and not documented: shadow endpoints.
    pub only_reconstructed: Vec<OpKey>,
    /// Operations in both, with how they differ (possibly not at all).
    pub matched: Vec<OpDiff>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpKey {
    pub template: String,
    /// Uppercase.
    pub method: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OpDiff {
    pub method: String,
    /// The template as the provided document writes it.
    pub provided: String,
    /// The template as the reconstructed document writes it.
    pub reconstructed: String,
    pub differences: Vec<Difference>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Difference {
    pub kind: DiffKind,
    /// `query limit`, `header x-tenant`, `response 404`, `response 200 body /items/*/id`.
    pub location: String,
    /// The provided side's value (a type such as `integer` or `string(date-time)`, or
    /// `documented` for a status); `None` when absent there.
    pub provided: Option<String>,
    /// The reconstructed side's value; `None` when absent there.
    pub reconstructed: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    ParameterAdded,
    ParameterMissing,
    ParameterTypeChanged,
    StatusAdded,
    StatusMissing,
    FieldAdded,
    FieldMissing,
    FieldTypeChanged,
    FieldFormatChanged,
}

/// One field of a flattened schema.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Field {
    /// `integer`, `string|null`, `object`, ...; `any` when the schema does not say.
    pub types: String,
    pub format: Option<String>,
    /// Required in its parent object (array items and the root are).
    pub required: bool,
    /// A recursive reference stopped here.
    pub recursive: bool,
    #[serde(skip)]
    bits: u8,
}

impl Field {
    fn shown(&self) -> String {
        match &self.format {
            Some(f) => format!("{}({f})", self.types),
            None => self.types.clone(),
        }
    }
}

/// A schema of `doc` as field paths with their types: `""` for the value itself,
/// `/items/*/id` for the `id` of every element of `items`. References are followed (local
/// ones), `allOf` merged, `oneOf`/`anyOf` alternatives united; a reference met again below
/// itself is recorded as `recursive` and not followed.
pub fn flatten_schema(doc: &Value, schema: &Value) -> BTreeMap<String, Field> {
    let mut out = BTreeMap::new();
    let mut stack = Vec::new();
    flatten_into(doc, schema, String::new(), true, &mut out, &mut stack, 0);
    out
}

fn flatten_into<'d>(
    doc: &'d Value,
    schema: &'d Value,
    path: String,
    required: bool,
    out: &mut BTreeMap<String, Field>,
    stack: &mut Vec<&'d str>,
    depth: usize,
) {
    if depth > MAX_FLATTEN_DEPTH || (out.len() >= MAX_FIELDS && !out.contains_key(&path)) {
        return;
    }
    let r = schema.get("$ref").and_then(Value::as_str);
    if let Some(r) = r {
        if stack.contains(&r) {
            let f = out.entry(path).or_insert_with(|| field(0, None, required));
            f.recursive = true;
            return;
        }
        stack.push(r);
    }
    for view in spec::variants(doc, schema, 0) {
        let f = field(view.types, view.format, required);
        match out.get_mut(&path) {
            Some(e) => {
                e.bits = if e.bits == 0 || f.bits == 0 { 0 } else { e.bits | f.bits };
                e.types = shown_types(e.bits);
                if e.format != f.format {
                    e.format = None;
                }
                e.required &= f.required;
            }
            None => {
                if out.len() < MAX_FIELDS {
                    out.insert(path.clone(), f);
                }
            }
        }
        for (name, ps) in &view.props {
            let req = view.required.contains(name);
            flatten_into(doc, ps, format!("{path}/{}", spec::escape(name)), req, out, stack, depth + 1);
        }
        if let Some(items) = view.items {
            flatten_into(doc, items, format!("{path}/*"), true, out, stack, depth + 1);
        }
        if let Additional::Schema(s) = view.additional {
            flatten_into(doc, s, format!("{path}/{{}}"), false, out, stack, depth + 1);
        }
    }
    if r.is_some() {
        stack.pop();
    }
}

fn field(bits: u8, format: Option<&str>, required: bool) -> Field {
    let bits = if bits & T_NUM != 0 { bits & !T_INT } else { bits };
    Field { types: shown_types(bits), format: format.map(str::to_string), required, recursive: false, bits }
}

fn shown_types(bits: u8) -> String {
    spec::type_names(if bits & T_NUM != 0 { bits & !T_INT } else { bits })
}

/// Whether what was seen (`rec`) fits what is documented (`prov`).
fn compatible(prov: u8, rec: u8) -> bool {
    let prov = if prov & T_NUM != 0 { prov | T_INT } else { prov };
    prov == 0 || rec == 0 || rec & !prov == 0
}

/// One operation of a document, as the diff sees it.
struct RawOp<'d> {
    method: String,
    template: String,
    /// (location, name) → type bits; path parameters left out (their names do not count).
    params: BTreeMap<(String, String), u8>,
    /// Status (`200`, `2XX`, `default`) → the JSON body's schema.
    responses: BTreeMap<String, Option<&'d Value>>,
}

fn norm_template(t: &str) -> String {
    let t = t.strip_suffix('/').filter(|s| !s.is_empty()).unwrap_or(t);
    let mut out = String::with_capacity(t.len());
    let mut depth = 0usize;
    for c in t.chars() {
        match c {
            '{' => {
                if depth == 0 {
                    out.push_str("{}");
                }
                depth += 1;
            }
            '}' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            c => out.push(c),
        }
    }
    out
}

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn extract(doc: &Value) -> Vec<RawOp<'_>> {
    let v2 = doc.get("swagger").is_some();
    let mut ops = Vec::new();
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else { return ops };
    for (template, item) in paths {
        let item = spec::resolve(doc, item);
        let shared = item.get("parameters");
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let op = spec::resolve(doc, op);
            let mut params = BTreeMap::new();
            for p in [shared, op.get("parameters")].into_iter().flatten().filter_map(Value::as_array).flatten() {
                let p = spec::resolve(doc, p);
                let (Some(name), Some(at)) =
                    (p.get("name").and_then(Value::as_str), p.get("in").and_then(Value::as_str))
                else {
                    continue;
                };
                if matches!(at, "path" | "body" | "formData") {
                    continue;
                }
                let schema = if v2 { Some(p) } else { p.get("schema") };
                let bits = schema.map_or(0, |s| spec::variants(doc, s, 0).first().map_or(0, |v| v.types));
                let name = if at == "header" { name.to_ascii_lowercase() } else { name.to_string() };
                params.insert((at.to_string(), name), bits);
            }
            let mut responses = BTreeMap::new();
            for (key, r) in op.get("responses").and_then(Value::as_object).into_iter().flatten() {
                if key.starts_with("x-") {
                    continue;
                }
                let r = spec::resolve(doc, r);
                let schema = if v2 {
                    r.get("schema")
                } else {
                    r.get("content")
                        .and_then(Value::as_object)
                        .and_then(|c| c.iter().find(|(m, _)| crate::exchange::is_json(m)))
                        .and_then(|(_, mt)| mt.get("schema"))
                };
                let key = if key.eq_ignore_ascii_case("default") { "default".into() } else { key.to_ascii_uppercase() };
                responses.insert(key, schema);
            }
            ops.push(RawOp { method: m.to_ascii_uppercase(), template: template.clone(), params, responses });
        }
    }
    ops
}

/// Which provided response key documents a concrete (or range) status.
fn documents(key: &str, status: &str) -> bool {
    key == status
        || (key.len() == 3 && key.ends_with("XX") && status.len() == 3 && key.as_bytes()[0] == status.as_bytes()[0])
}

/// The provided document against a reconstructed one (OpenAPI 3.1 made by the gateway).
pub fn diff(provided: &Spec, reconstructed: &Value) -> SpecDiff {
    let pdoc = provided.document();
    let pops = extract(pdoc);
    let rops = extract(reconstructed);
    let base = provided.base_path();
    let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, o) in pops.iter().enumerate() {
        index.entry((o.method.clone(), norm_template(&o.template))).or_insert(i);
    }
    let mut seen = vec![false; pops.len()];
    let mut out = SpecDiff::default();
    for r in &rops {
        let mut keys = Vec::new();
        if let Some(rest) = base.and_then(|b| r.template.strip_prefix(b)).filter(|t| t.starts_with('/')) {
            keys.push(norm_template(rest));
        }
        keys.push(norm_template(&r.template));
        let Some(&i) = keys.iter().find_map(|k| index.get(&(r.method.clone(), k.clone()))) else {
            out.only_reconstructed.push(OpKey { template: r.template.clone(), method: r.method.clone() });
            continue;
        };
        if seen[i] {
            // Two reconstructed templates for one provided operation (`/users/` and `/users`):
            // the first is compared, the other is listed as not documented.
            out.only_reconstructed.push(OpKey { template: r.template.clone(), method: r.method.clone() });
            continue;
        }
        seen[i] = true;
        let p = &pops[i];
        out.matched.push(OpDiff {
            method: p.method.clone(),
            provided: p.template.clone(),
            reconstructed: r.template.clone(),
            differences: compare(pdoc, p, reconstructed, r),
        });
    }
    for (p, seen) in pops.iter().zip(seen) {
        if !seen {
            out.only_provided.push(OpKey { template: p.template.clone(), method: p.method.clone() });
        }
    }
    out.only_provided.sort();
    out.only_reconstructed.sort();
    out.matched.sort_by(|a, b| (&a.provided, &a.method).cmp(&(&b.provided, &b.method)));
    out
}

fn compare(pdoc: &Value, p: &RawOp<'_>, rdoc: &Value, r: &RawOp<'_>) -> Vec<Difference> {
    let mut out = Vec::new();
    let d = |kind, location: String, provided: Option<String>, reconstructed: Option<String>| Difference {
        kind,
        location,
        provided,
        reconstructed,
    };
    for ((at, name), &rbits) in &r.params {
        let location = format!("{at} {name}");
        match p.params.get(&(at.clone(), name.clone())) {
            None => {
                let standard = at == "header"
                    && IGNORED_HEADERS.iter().any(|h| if h.ends_with('-') { name.starts_with(h) } else { name == h });
                if !standard {
                    out.push(d(DiffKind::ParameterAdded, location, None, Some(shown_types(rbits))));
                }
            }
            Some(&pbits) if !compatible(pbits, rbits) => {
                out.push(d(
                    DiffKind::ParameterTypeChanged,
                    location,
                    Some(shown_types(pbits)),
                    Some(shown_types(rbits)),
                ));
            }
            Some(_) => {}
        }
    }
    for ((at, name), &pbits) in &p.params {
        if !r.params.contains_key(&(at.clone(), name.clone())) {
            out.push(d(DiffKind::ParameterMissing, format!("{at} {name}"), Some(shown_types(pbits)), None));
        }
    }
    for (status, rschema) in &r.responses {
        let key =
            p.responses.keys().find(|k| *k == status).or_else(|| p.responses.keys().find(|k| documents(k, status)));
        let Some(key) = key else {
            out.push(d(DiffKind::StatusAdded, format!("response {status}"), None, Some("seen".into())));
            continue;
        };
        let (Some(ps), Some(rs)) = (p.responses.get(key).copied().flatten(), rschema) else { continue };
        let pf = flatten_schema(pdoc, ps);
        let rf = flatten_schema(rdoc, rs);
        let loc = |path: &str| {
            if path.is_empty() {
                format!("response {status} body")
            } else {
                format!("response {status} body {path}")
            }
        };
        for (path, f) in &rf {
            match pf.get(path) {
                None => out.push(d(DiffKind::FieldAdded, loc(path), None, Some(f.shown()))),
                Some(g) if !compatible(g.bits, f.bits) => {
                    out.push(d(DiffKind::FieldTypeChanged, loc(path), Some(g.shown()), Some(f.shown())));
                }
                Some(g) if g.format.is_some() && f.format.is_some() && g.format != f.format => {
                    out.push(d(DiffKind::FieldFormatChanged, loc(path), Some(g.shown()), Some(f.shown())));
                }
                Some(_) => {}
            }
        }
        for (path, g) in &pf {
            // Below a field the other side does not have, only that field is reported.
            let parent_missing = path.rfind('/').is_some_and(|i| !rf.contains_key(&path[..i]));
            if !rf.contains_key(path) && !parent_missing {
                out.push(d(DiffKind::FieldMissing, loc(path), Some(g.shown()), None));
            }
        }
    }
    for key in p.responses.keys() {
        if key == "default" {
            continue;
        }
        if !r.responses.keys().any(|s| documents(key, s)) {
            out.push(d(DiffKind::StatusMissing, format!("response {key}"), Some("documented".into()), None));
        }
    }
    // The same rule for fields added: only the topmost.
    let added: Vec<String> =
        out.iter().filter(|x| x.kind == DiffKind::FieldAdded).map(|x| x.location.clone()).collect();
    out.retain(|x| {
        x.kind != DiffKind::FieldAdded
            || !added.iter().any(|a| {
                x.location.len() > a.len()
                    && x.location.starts_with(a.as_str())
                    && x.location.as_bytes()[a.len()] == b'/'
            })
    });
    out.sort_by(|a, b| (&a.location, a.kind).cmp(&(&b.location, b.kind)));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::spec::tests::{v2, v30, USERS_V30};

    fn reconstructed() -> Value {
        json!({
            "openapi": "3.1.0",
            "info": {"title": "seen", "version": "1"},
            "paths": {
                "/api/v1/users": {
                    "get": {
                        "parameters": [
                            {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                            {"name": "debug", "in": "query", "schema": {"type": "boolean"}},
                            {"name": "user-agent", "in": "header", "schema": {"type": "string"}},
                            {"name": "x-tenant", "in": "header", "schema": {"type": "integer"}}
                        ],
                        "responses": {
                            "200": {"description": "", "content": {"application/json": {"schema": {
                                "type": "object",
                                "properties": {
                                    "items": {"type": "array", "items": {"type": "object", "properties": {
                                        "id": {"type": "string", "format": "uuid"},
                                        "email": {"type": "string"},
                                        "age": {"type": "string"},
                                        "created": {"type": "string", "format": "date"},
                                        "nick": {"type": "string"},
                                        "address": {"type": "object", "properties": {"city": {"type": "string"}}}
                                    }}},
                                    "next": {"type": "null"}
                                }
                            }}}},
                            "500": {"description": ""}
                        }
                    }
                },
                "/users/{id}": {
                    "get": {"responses": {"200": {"description": ""}, "404": {"description": ""}}}
                },
                "/admin/reset": {"post": {"responses": {"204": {"description": ""}}}}
            }
        })
    }

    #[test]
    fn operations_are_matched_with_parameter_names_and_base_path_ignored() {
        let got = diff(&v30(), &reconstructed());
        let key = |t: &str, m: &str| OpKey { template: t.into(), method: m.into() };
        assert_eq!(got.only_reconstructed, vec![key("/admin/reset", "POST")]);
        assert_eq!(
            got.only_provided,
            vec![
                key("/", "GET"),
                key("/files/{name}.json", "GET"),
                key("/users", "POST"),
                key("/users/me", "GET"),
                key("/users/{userId}", "PUT")
            ]
        );
        let matched: Vec<(&str, &str, &str)> =
            got.matched.iter().map(|m| (m.method.as_str(), m.provided.as_str(), m.reconstructed.as_str())).collect();
        assert_eq!(matched, vec![("GET", "/users", "/api/v1/users"), ("GET", "/users/{userId}", "/users/{id}")]);
        let by_id = &got.matched[1].differences;
        assert_eq!(by_id.len(), 1, "{by_id:?}");
        assert_eq!(
            (by_id[0].kind, by_id[0].location.as_str()),
            (DiffKind::StatusAdded, "response 404"),
            "`default` documents no status"
        );
    }

    #[test]
    fn differences_are_structured_and_sorted() {
        let got = diff(&v30(), &reconstructed());
        let users = &got.matched[0];
        let diffs: Vec<(DiffKind, &str, Option<&str>, Option<&str>)> = users
            .differences
            .iter()
            .map(|d| (d.kind, d.location.as_str(), d.provided.as_deref(), d.reconstructed.as_deref()))
            .collect();
        assert_eq!(
            diffs,
            vec![
                (DiffKind::ParameterTypeChanged, "header x-tenant", Some("string"), Some("integer")),
                (DiffKind::ParameterAdded, "query debug", None, Some("boolean")),
                (DiffKind::FieldAdded, "response 200 body /items/*/address", None, Some("object")),
                (DiffKind::FieldTypeChanged, "response 200 body /items/*/age", Some("integer|null"), Some("string")),
                (
                    DiffKind::FieldFormatChanged,
                    "response 200 body /items/*/created",
                    Some("string(date-time)"),
                    Some("string(date)")
                ),
                (DiffKind::FieldMissing, "response 200 body /items/*/manager", Some("any"), None),
                (DiffKind::FieldAdded, "response 200 body /items/*/nick", None, Some("string")),
                (DiffKind::FieldMissing, "response 200 body /items/*/password", Some("string"), None),
                (DiffKind::FieldMissing, "response 200 body /items/*/tags", Some("array"), None),
                (DiffKind::StatusAdded, "response 500", None, Some("seen")),
            ],
            "email: a format on one side only is no difference; address/city and tags/* under their parents"
        );
        let json = serde_json::to_value(&got).unwrap();
        assert_eq!(json["matched"][0]["differences"][0]["kind"], "parameter_type_changed");
    }

    #[test]
    fn schemas_flatten_into_typed_field_paths() {
        let doc: Value = serde_json::from_str(USERS_V30).unwrap();
        let user = json!({"$ref": "#/components/schemas/User"});
        let flat = flatten_schema(&doc, &user);
        let shown: Vec<(&str, String, bool)> = flat.iter().map(|(k, f)| (k.as_str(), f.shown(), f.required)).collect();
        assert_eq!(
            shown,
            vec![
                ("", "object".into(), true),
                ("/age", "integer|null".into(), false),
                ("/created", "string(date-time)".into(), false),
                ("/email", "string(email)".into(), true),
                ("/id", "string(uuid)".into(), true),
                ("/manager", "any".into(), false),
                ("/password", "string".into(), true),
                ("/tags", "array".into(), false),
                ("/tags/*", "string".into(), true),
            ]
        );
        assert!(flat["/manager"].recursive);
        let alts = json!({"oneOf": [{"type": "object", "properties": {"a": {"type": "integer"}}}, {"type": "string"}]});
        let flat = flatten_schema(&doc, &alts);
        assert_eq!(flat[""].types, "object|string");
        assert_eq!(flat["/a"].types, "integer");
        let v2doc = v2();
        let flat = flatten_schema(v2doc.document(), &json!({"type": "array", "items": {"$ref": "#/definitions/Pet"}}));
        assert_eq!(flat["/*/born"].shown(), "string(date)");
    }

    #[test]
    fn flattening_is_bounded() {
        let mut props = serde_json::Map::new();
        for i in 0..50 {
            props.insert(format!("f{i}"), json!({"$ref": "#/definitions/Wide"}));
        }
        let doc = json!({"definitions": {"Wide": {"type": "object", "properties": props}}});
        let flat = flatten_schema(&doc, &json!({"$ref": "#/definitions/Wide"}));
        assert!(flat.len() <= MAX_FIELDS);
        let mut deep = json!({"type": "string"});
        for _ in 0..200 {
            deep = json!({"type": "object", "properties": {"a": deep}});
        }
        let flat = flatten_schema(&json!({}), &deep);
        assert_eq!(flat.len(), MAX_FLATTEN_DEPTH + 1);
        let _ = diff(&v2(), &json!("garbage"));
        let _ =
            diff(&v2(), &json!({"paths": {"/x": {"get": {"responses": {"200": {"content": 5}}, "parameters": 3}}}}));
    }
}
