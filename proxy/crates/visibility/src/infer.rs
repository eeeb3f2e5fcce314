//! JSON schema inference: a [`Shape`] accumulates the JSON values seen at one place (a response
//! body, a query parameter) and writes a JSON Schema in the 2020-12 dialect OpenAPI 3.1 uses:
//! types, string formats, `required`, nested objects and arrays, maps (`additionalProperties`)
//! and, conservatively, enums. Shapes merge, so two places folded into one lose nothing, and
//! serialize, so the caller can persist them.
//!
//! Conflicting types are written as a `type` list (`["integer", "string"]`, `["string",
//! "null"]`), not `anyOf`: each keyword (`properties`, `items`, `format`, ...) applies only to
//! values of its own type, so one schema says it exactly; it is how 3.1 spells nullable, and
//! tools render it as one field rather than alternatives.
//!
//! Must not: keep unbounded state (properties per object, enum values and depth are capped) or
//! panic on any value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::template::{classify, is_date, is_date_time, is_email, is_uuid, Kind};

/// Values nested deeper than this are typed but not described (no properties, no items).
/// Real payloads rarely go past 6; the bound keeps the persisted shape within `serde_json`'s
/// recursion limit together with the path trie.
pub const MAX_DEPTH: usize = 12;

/// Properties kept per object; an object with more distinct keys becomes a map
/// (`additionalProperties`). GitHub's repository object has ~90 real properties.
pub const MAX_PROPERTIES: usize = 256;

/// An object with more distinct keys than this, and more than 4 times the most keys seen in
/// any one instance, is a map keyed by values (keys come and go), not a record.
pub const MAP_MIN_KEYS: usize = 32;

/// Enums are written only for strings seen at least this many times...
pub const ENUM_MIN_SEEN: u64 = 20;
/// ...with at most this many distinct values, each short and word-like (no formats, no ids,
/// no free text). Fewer observations or more values could be a sample of an open set.
pub const ENUM_MAX_VALUES: usize = 5;
/// Fewest properties a record needs for [`Shape::record_keys`]: with fewer, unrelated
/// records (`{id, name}`) look alike too easily.
pub const ALIKE_MIN_KEYS: usize = 3;
/// Object levels [`Shape::record_keys`] covers.
pub const ALIKE_DEPTH: usize = 3;
/// Longest string that can be an enum value.
pub const ENUM_MAX_LEN: usize = 32;

/// What the values seen at one place looked like.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    #[serde(default, rename = "n")]
    seen: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    null: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    boolean: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    integer: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    number: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    string: Option<Box<Strings>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    object: Option<Box<Object>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    array: Option<Box<Array>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Strings {
    #[serde(rename = "n")]
    seen: u64,
    /// The formats every string seen matched (bits of [`FORMATS`]).
    #[serde(rename = "f")]
    formats: u8,
    /// Distinct values with counts while they may still be an enum.
    #[serde(default, rename = "v", skip_serializing_if = "BTreeMap::is_empty")]
    values: BTreeMap<String, u64>,
    /// Too many distinct values, or one that cannot be an enum value.
    #[serde(default, rename = "o", skip_serializing_if = "is_false")]
    open: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Object {
    #[serde(rename = "n")]
    seen: u64,
    #[serde(default, rename = "p", skip_serializing_if = "BTreeMap::is_empty")]
    props: BTreeMap<String, Prop>,
    /// Set once the object is a map: every value's shape.
    #[serde(default, rename = "m", skip_serializing_if = "Option::is_none")]
    map: Option<Box<Shape>>,
    /// Most keys seen in one instance.
    #[serde(default, rename = "k")]
    max_keys: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Prop {
    /// Instances that had this key.
    #[serde(rename = "n")]
    present: u64,
    #[serde(rename = "s")]
    shape: Shape,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Array {
    #[serde(rename = "n")]
    seen: u64,
    #[serde(rename = "i")]
    items: Shape,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A string test.
type Check = fn(&str) -> bool;

/// String formats recognised, most specific first (the first one all strings matched wins).
const FORMATS: &[(&str, Check)] = &[
    ("uuid", is_uuid),
    ("date-time", is_date_time),
    ("date", is_date),
    ("email", is_email),
    ("ipv4", |s| s.parse::<std::net::Ipv4Addr>().is_ok()),
    ("ipv6", |s| s.contains(':') && s.parse::<std::net::Ipv6Addr>().is_ok()),
    ("uri", is_uri),
];

/// An absolute URI with an authority (`scheme://host...`), no spaces: conservative on purpose.
fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else { return false };
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn formats_of(s: &str) -> u8 {
    FORMATS.iter().enumerate().filter(|(_, (_, f))| f(s)).fold(0, |bits, (i, _)| bits | 1 << i)
}

/// A value that can be part of an enum: short, word-like, not a number or an id.
fn enum_like(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= ENUM_MAX_LEN
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '))
        && s.split(' ').count() <= 3
        && classify(s) == Kind::Word
}

/// A query, header or path value as the JSON value it most plausibly stands for: integers
/// (without leading zeros, which mark codes), decimals, booleans, else the string.
pub fn scalar(s: &str) -> Value {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.len() <= 18 && digits.bytes().all(|c| c.is_ascii_digit()) {
        if !(digits.len() > 1 && digits.starts_with('0')) {
            if let Ok(n) = s.parse::<i64>() {
                return Value::from(n);
            }
        }
        return Value::from(s);
    }
    match s {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if s.contains('.') && s.bytes().all(|c| c.is_ascii_digit() || c == b'.' || c == b'-') {
        if let Some(n) = s.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::from(s)
}

impl Shape {
    /// Values observed.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Learns one value.
    pub fn observe(&mut self, v: &Value) {
        self.observe_at(v, 0);
    }

    fn observe_at(&mut self, v: &Value, depth: usize) {
        self.seen += 1;
        match v {
            Value::Null => self.null += 1,
            Value::Bool(_) => self.boolean += 1,
            Value::Number(n) if n.is_i64() || n.is_u64() => self.integer += 1,
            Value::Number(_) => self.number += 1,
            Value::String(s) => self.string.get_or_insert_with(Box::default).observe(s),
            Value::Array(items) => {
                let a = self.array.get_or_insert_with(Box::default);
                a.seen += 1;
                if depth < MAX_DEPTH {
                    for item in items {
                        a.items.observe_at(item, depth + 1);
                    }
                }
            }
            Value::Object(fields) => {
                let o = self.object.get_or_insert_with(Box::default);
                o.seen += 1;
                if depth < MAX_DEPTH {
                    o.observe(fields, depth + 1);
                }
            }
        }
    }

    /// Folds `other` in, as if its values had been observed here.
    /// The record structure of this shape, when it has one worth comparing: the property
    /// paths of its objects (or arrays' item objects) down to [`ALIKE_DEPTH`] levels, each
    /// hashed, sorted; when one of the objects has at least [`ALIKE_MIN_KEYS`] properties (a
    /// wrapper like `{"items": [{...}]}` counts by what it wraps). Two places with the same
    /// keys return the same kind of record; a superset of keys (pulls next to issues) is a
    /// different one, or the same one seen more often (optional properties).
    pub fn record_keys(&self) -> Option<Vec<u64>> {
        let (keys, rich) = self.structure();
        rich.then_some(keys)
    }

    /// [`Shape::record_keys`] however few properties the records have, and whether one has
    /// [`ALIKE_MIN_KEYS`] or more (empty for a shape that is not records).
    pub fn structure(&self) -> (Vec<u64>, bool) {
        use std::hash::{Hash, Hasher};
        fn go(s: &Shape, depth: usize, at: u64, out: &mut Vec<u64>, rich: &mut bool) {
            let (tag, obj) = match (&s.object, &s.array) {
                (Some(o), None) => (b'{', o),
                (None, Some(a)) => match (&a.items.object, &a.items.array) {
                    (Some(o), None) => (b'[', o),
                    _ => return,
                },
                _ => return,
            };
            if obj.map.is_some() {
                return;
            }
            *rich |= obj.props.len() >= ALIKE_MIN_KEYS;
            for (k, p) in &obj.props {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (at, tag, k).hash(&mut h);
                let here = h.finish();
                out.push(here);
                if depth + 1 < ALIKE_DEPTH {
                    go(&p.shape, depth + 1, here, out, rich);
                }
            }
        }
        let mut out = Vec::new();
        let mut rich = false;
        go(self, 0, 0, &mut out, &mut rich);
        out.sort_unstable();
        out.dedup();
        (out, rich)
    }

    pub fn merge(&mut self, other: Shape) {
        self.seen += other.seen;
        self.null += other.null;
        self.boolean += other.boolean;
        self.integer += other.integer;
        self.number += other.number;
        merge_opt(&mut self.string, other.string, |a, b| a.merge(*b));
        merge_opt(&mut self.object, other.object, |a, b| a.merge(*b));
        merge_opt(&mut self.array, other.array, |a, b| {
            a.seen += b.seen;
            a.items.merge(b.items);
        });
    }

    /// The JSON Schema (2020-12) of what was seen; `{}` when nothing was.
    pub fn schema(&self) -> Value {
        let mut out = Map::new();
        let mut types: Vec<&str> = Vec::new();
        if self.number > 0 {
            types.push("number");
        } else if self.integer > 0 {
            types.push("integer");
        }
        if let Some(s) = &self.string {
            types.push("string");
            s.describe(&mut out);
        }
        if self.boolean > 0 {
            types.push("boolean");
        }
        if let Some(o) = &self.object {
            types.push("object");
            o.describe(&mut out);
        }
        if let Some(a) = &self.array {
            types.push("array");
            if a.items.seen > 0 {
                out.insert("items".into(), a.items.schema());
            }
        }
        if self.null > 0 {
            types.push("null");
        }
        if out.contains_key("enum") {
            if types != ["string"] && types != ["string", "null"] {
                out.remove("enum");
            } else if self.null > 0 {
                if let Some(Value::Array(e)) = out.get_mut("enum") {
                    e.push(Value::Null);
                }
            }
        }
        match types.as_slice() {
            [] => {}
            [one] => {
                out.insert("type".into(), Value::from(*one));
            }
            many => {
                out.insert("type".into(), Value::from(many.to_vec()));
            }
        }
        Value::Object(sort_type_first(out))
    }
}

fn sort_type_first(m: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(t) = m.get("type") {
        out.insert("type".into(), t.clone());
    }
    out.extend(m.into_iter().filter(|(k, _)| k != "type"));
    out
}

fn merge_opt<X>(into: &mut Option<X>, from: Option<X>, f: impl FnOnce(&mut X, X)) {
    match (into.as_mut(), from) {
        (Some(a), Some(b)) => f(a, b),
        (None, b @ Some(_)) => *into = b,
        (_, None) => {}
    }
}

impl Strings {
    fn observe(&mut self, s: &str) {
        let f = formats_of(s);
        self.formats = if self.seen == 0 { f } else { self.formats & f };
        self.seen += 1;
        if self.open {
            return;
        }
        if !enum_like(s) {
            self.close();
            return;
        }
        if let Some(n) = self.values.get_mut(s) {
            *n += 1;
        } else if self.values.len() < ENUM_MAX_VALUES {
            self.values.insert(s.to_owned(), 1);
        } else {
            self.close();
        }
    }

    fn close(&mut self) {
        self.open = true;
        self.values.clear();
    }

    fn merge(&mut self, other: Strings) {
        self.formats = match (self.seen, other.seen) {
            (0, _) => other.formats,
            (_, 0) => self.formats,
            _ => self.formats & other.formats,
        };
        self.seen += other.seen;
        if other.open {
            self.close();
        }
        if self.open {
            return;
        }
        for (v, n) in other.values {
            *self.values.entry(v).or_default() += n;
        }
        if self.values.len() > ENUM_MAX_VALUES {
            self.close();
        }
    }

    fn describe(&self, out: &mut Map<String, Value>) {
        if let Some((name, _)) = FORMATS.iter().enumerate().find(|(i, _)| self.formats & 1 << i != 0).map(|(_, f)| f) {
            out.insert("format".into(), Value::from(*name));
            return;
        }
        if !self.open && self.seen >= ENUM_MIN_SEEN && !self.values.is_empty() {
            out.insert("enum".into(), self.values.keys().map(|v| Value::from(v.as_str())).collect());
        }
    }
}

/// Keys that name values rather than fields: ids, numbers, dates, e-mails...
fn value_key(k: &str) -> bool {
    classify(k) != Kind::Word
}

impl Object {
    fn observe(&mut self, fields: &Map<String, Value>, depth: usize) {
        self.max_keys = self.max_keys.max(fields.len() as u64);
        if self.map.is_none() && !fields.is_empty() && fields.keys().all(|k| value_key(k)) {
            self.make_map();
        }
        if let Some(m) = &mut self.map {
            for v in fields.values() {
                m.observe_at(v, depth);
            }
            return;
        }
        let new_keys = fields.keys().filter(|k| !self.props.contains_key(*k)).count();
        if self.props.len() + new_keys > MAX_PROPERTIES {
            self.make_map();
            return self.observe(fields, depth);
        }
        for (k, v) in fields {
            let p = self.props.entry(k.clone()).or_default();
            p.present += 1;
            p.shape.observe_at(v, depth);
        }
        if self.props.len() > MAP_MIN_KEYS && self.props.len() as u64 > 4 * self.max_keys {
            self.make_map();
        }
    }

    fn make_map(&mut self) {
        let mut m = self.map.take().map_or_else(Shape::default, |m| *m);
        for (_, p) in std::mem::take(&mut self.props) {
            m.merge(p.shape);
        }
        self.map = Some(Box::new(m));
    }

    fn merge(&mut self, other: Object) {
        self.seen += other.seen;
        self.max_keys = self.max_keys.max(other.max_keys);
        if other.map.is_some() && self.map.is_none() {
            self.make_map();
        }
        if let Some(m) = &mut self.map {
            for (_, p) in other.props {
                m.merge(p.shape);
            }
            if let Some(om) = other.map {
                m.merge(*om);
            }
            return;
        }
        for (k, p) in other.props {
            let mine = self.props.entry(k).or_default();
            mine.present += p.present;
            mine.shape.merge(p.shape);
        }
        if self.props.len() > MAX_PROPERTIES
            || self.props.len() > MAP_MIN_KEYS && self.props.len() as u64 > 4 * self.max_keys
        {
            self.make_map();
        }
    }

    fn describe(&self, out: &mut Map<String, Value>) {
        if let Some(m) = &self.map {
            out.insert("additionalProperties".into(), m.schema());
            return;
        }
        if self.props.is_empty() {
            return;
        }
        let props: Map<String, Value> = self.props.iter().map(|(k, p)| (k.clone(), p.shape.schema())).collect();
        out.insert("properties".into(), Value::Object(props));
        let required: Vec<Value> =
            self.props.iter().filter(|(_, p)| p.present >= self.seen).map(|(k, _)| Value::from(k.as_str())).collect();
        if !required.is_empty() {
            out.insert("required".into(), Value::Array(required));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn infer(values: &[Value]) -> Value {
        let mut s = Shape::default();
        for v in values {
            s.observe(v);
        }
        s.schema()
    }

    #[test]
    fn types_formats_and_required() {
        let a = json!({"id": 1, "price": 9.5, "name": "x", "ok": true, "at": "2024-01-02T03:04:05.123+01:00",
            "day": "2024-01-02", "mail": "a@b.io", "uid": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "ip": "10.0.0.1", "ip6": "2001:db8::1", "home": "https://example.com/x", "note": "see http://x"});
        let b = json!({"id": 2, "price": 3, "name": "y", "ok": false, "at": "2024-01-02T03:04:05Z",
            "day": "2024-02-29", "mail": "c@d.org", "uid": "3fa85f64-5717-4562-b3fc-2c963f66afa7",
            "ip": "10.0.0.2", "ip6": "::1", "home": "http://example.com", "note": "plain", "extra": null});
        let s = infer(&[a, b]);
        let p = &s["properties"];
        assert_eq!(s["type"], "object");
        assert_eq!(p["id"], json!({"type": "integer"}));
        assert_eq!(p["price"], json!({"type": "number"}), "integers and decimals are numbers");
        assert_eq!(p["ok"], json!({"type": "boolean"}));
        for (field, format) in [("at", "date-time"), ("day", "date"), ("mail", "email"), ("uid", "uuid")] {
            assert_eq!(p[field], json!({"type": "string", "format": format}), "{field}");
        }
        for (field, format) in [("ip", "ipv4"), ("ip6", "ipv6"), ("home", "uri")] {
            assert_eq!(p[field], json!({"type": "string", "format": format}), "{field}");
        }
        assert_eq!(p["note"], json!({"type": "string"}));
        assert_eq!(p["extra"], json!({"type": "null"}));
        let required = s["required"].as_array().unwrap();
        assert_eq!(required.len(), 12, "all but `extra`: {required:?}");
        assert!(!required.contains(&json!("extra")));
    }

    #[test]
    fn nullable_and_conflicting_types_are_type_lists() {
        let s = infer(&[json!({"a": "x", "b": 1}), json!({"a": null, "b": "one"}), json!({"a": "y", "b": [1]})]);
        assert_eq!(s["properties"]["a"], json!({"type": ["string", "null"]}));
        assert_eq!(s["properties"]["b"], json!({"type": ["integer", "string", "array"], "items": {"type": "integer"}}));
        assert_eq!(infer(&[]), json!({}));
    }

    #[test]
    fn nested_arrays_merge_their_items() {
        let s = infer(&[json!([[{"a": 1}], [{"a": 2, "b": "x"}]]), json!([])]);
        assert_eq!(
            s,
            json!({"type": "array", "items": {"type": "array", "items": {
                "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}, "required": ["a"]}}})
        );
        assert_eq!(infer(&[json!([])]), json!({"type": "array"}));
    }

    #[test]
    fn objects_keyed_by_ids_are_maps() {
        let s = infer(&[json!({"by_id": {"12": {"n": 1}, "13": {"n": 2}}, "by_day": {"2024-01-01": 3}})]);
        assert_eq!(
            s["properties"]["by_id"],
            json!({"type": "object", "additionalProperties": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}})
        );
        assert_eq!(s["properties"]["by_day"], json!({"type": "object", "additionalProperties": {"type": "integer"}}));
        // Word keys that come and go (e.g. usernames) also make a map.
        let mut shape = Shape::default();
        for i in 0..40 {
            shape.observe(&json!({ format!("name{}", (["a", "b", "c", "d"][i % 4]).repeat(i + 1)): i }));
        }
        assert_eq!(shape.schema(), json!({"type": "object", "additionalProperties": {"type": "integer"}}));
        // A wide record (GitHub's repository has ~90 fields) stays a record.
        let wide: Map<String, Value> =
            (0..100).map(|i| (format!("field_{}", "x".repeat(i % 10 + 1) + &"y".repeat(i / 10)), json!(i))).collect();
        let s = infer(&[Value::Object(wide.clone()), Value::Object(wide)]);
        assert_eq!(s["properties"].as_object().unwrap().len(), 100);
    }

    #[test]
    fn enums_only_for_small_stable_sets_seen_often() {
        let states = ["open", "closed", "draft"];
        let many: Vec<Value> = (0..30).map(|i| json!(states[i % 3])).collect();
        assert_eq!(infer(&many), json!({"type": "string", "enum": ["closed", "draft", "open"]}));
        assert_eq!(infer(&many[..10]), json!({"type": "string"}), "not seen enough");
        let mut with_null = many.clone();
        with_null.push(Value::Null);
        assert_eq!(infer(&with_null), json!({"type": ["string", "null"], "enum": ["closed", "draft", "open", null]}));
        let ids: Vec<Value> = (0..30).map(|i| json!((["a1b2c3d4e5", "x9y8z7w6v5"][i % 2]))).collect();
        assert_eq!(infer(&ids), json!({"type": "string"}), "ids are not enums");
        let open: Vec<Value> = (0..30).map(|i| json!(format!("w{}", "x".repeat(i % 7)))).collect();
        assert_eq!(infer(&open), json!({"type": "string"}), "too many values");
        let text: Vec<Value> = (0..30).map(|_| json!("a long sentence of free text")).collect();
        assert_eq!(infer(&text), json!({"type": "string"}), "free text");
        let mixed: Vec<Value> = (0..30).map(|i| if i % 2 == 0 { json!("a") } else { json!(1) }).collect();
        assert_eq!(infer(&mixed), json!({"type": ["integer", "string"]}), "no enum alongside other types");
    }

    #[test]
    fn merging_equals_observing_everything() {
        let values: Vec<Value> = (0..40)
            .map(|i| {
                let x = if i % 3 == 0 { json!(null) } else { json!({"k": [i]}) };
                json!({"id": i, "tag": (["a", "b"][i % 2]), "x": x})
            })
            .collect();
        let mut whole = Shape::default();
        let (mut left, mut right) = (Shape::default(), Shape::default());
        for (i, v) in values.iter().enumerate() {
            whole.observe(v);
            if i % 2 == 0 { &mut left } else { &mut right }.observe(v);
        }
        left.merge(right);
        assert_eq!(left.schema(), whole.schema());
        assert_eq!(whole.schema()["properties"]["tag"]["enum"], json!(["a", "b"]));
        let back: Shape = serde_json::from_str(&serde_json::to_string(&whole).unwrap()).unwrap();
        assert_eq!(back, whole);
    }

    #[test]
    fn memory_is_bounded() {
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!({ "a": [deep] });
        }
        let mut s = Shape::default();
        s.observe(&deep);
        let text = serde_json::to_string(&s).unwrap();
        let back: Shape = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        let huge: Map<String, Value> = (0..10_000).map(|i| (format!("k{i}x"), json!(i))).collect();
        let mut s = Shape::default();
        s.observe(&Value::Object(huge));
        assert!(serde_json::to_string(&s).unwrap().len() < 1000);
        assert_eq!(s.schema()["additionalProperties"], json!({"type": "integer"}));
        let strings: Vec<Value> = (0..10_000).map(|i| json!(format!("v{i}"))).collect();
        let mut s = Shape::default();
        strings.iter().for_each(|v| s.observe(v));
        assert!(serde_json::to_string(&s).unwrap().len() < 200);
    }

    #[test]
    fn query_values_read_as_scalars() {
        assert_eq!(scalar("12"), json!(12));
        assert_eq!(scalar("-3"), json!(-3));
        assert_eq!(scalar("007"), json!("007"));
        assert_eq!(scalar("1.5"), json!(1.5));
        assert_eq!(scalar("1.2.3"), json!("1.2.3"));
        assert_eq!(scalar("true"), json!(true));
        assert_eq!(scalar("99999999999999999999"), json!("99999999999999999999"));
        assert_eq!(scalar(""), json!(""));
    }
}
