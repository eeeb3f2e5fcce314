//! Tyk's `error_overrides` of an API definition (apidef/error_overrides.go), compiled: which
//! errors get another status, body or headers, as gateway/error_overrides.go matches them.
//!
//! Two uses, as in Tyk: the errors Portcullis answers itself (matched by response flag or by a
//! pattern on the message, [`ErrorOverrides::find`]), and upstream 4xx/5xx responses (matched
//! by status alone, `URS`, a `body_field`/`body_value` in the body or a `message_pattern` on it,
//! the first 4096 bytes only, [`ErrorOverrides::find_upstream`]). `response.template` names a
//! file of the `[apps] template_path` directory; [`load_templates`] reads and compiles them at
//! load, so the data plane never reads a file. Must not: do I/O outside [`load_templates`].

use std::path::Path;

use serde_json::Value;

use super::ConfigError;

/// Tyk's `maxBodySizeForMatching`: the most of an upstream body a rule looks at.
pub const MAX_BODY_FOR_MATCHING: usize = 4096;

/// The compiled rules of one API (Tyk: API rules are tried before the gateway's; Portcullis has
/// no gateway-wide rules yet).
#[derive(Debug, Clone, Default)]
pub struct ErrorOverrides {
    /// Per status key, in the order Tyk tries them: exact codes, then `4xx`/`5xx` classes.
    exact: Vec<(u16, Vec<Rule>)>,
    class: Vec<(u16, Vec<Rule>)>,
}

/// One rule: when it matches and what it answers.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// `match` is absent or names no criterion: every error of the status matches.
    any: bool,
    /// The response flag of the error (`AKI`, `RLT`, ... internal/errors/classification.go).
    flag: String,
    /// Tried on the error's message (gateway errors) or the upstream body.
    message_pattern: Option<regex::bytes::Regex>,
    /// `body_field` (as gjson keys) and `body_value`, both set: compared in an upstream body.
    body_field: Option<(Vec<String>, String)>,
    pub response: Override,
}

/// What a matching rule answers.
#[derive(Debug, Clone, Default)]
pub struct Override {
    /// 0: keep the status.
    pub status: u16,
    pub body: Body,
    /// Set on the response after `Content-Type` (so they may replace it).
    pub headers: Vec<(String, String)>,
}

/// The body of an overridden error, in Tyk's priority (gateway/error_overrides.go
/// `GetTemplateExecutor`, gateway/error_response.go).
#[derive(Debug, Clone, Default)]
pub enum Body {
    /// No body, template or message: a gateway error keeps the default template with its
    /// message; an upstream response keeps its body.
    #[default]
    Original,
    /// `message` only: the default template with this message.
    Message(String),
    /// `body` without `{{.`: written as it is.
    Literal(String),
    /// `body` with `{{.Message}}` / `{{.StatusCode}}`; `message` is the rule's (may be empty).
    Template { parts: Vec<Part>, message: String },
    /// `template`: `<name>.json` (or a file named `<name>`) for JSON requests, `<name>.xml` (or
    /// `<name>`) for XML ones, read at load; `None` where there is no such file (Tyk then writes
    /// no template: see [`Body::Original`]).
    File { name: String, json: Option<Vec<Part>>, xml: Option<Vec<Part>>, message: String },
}

/// A piece of an inline template.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Message,
    StatusCode,
    /// `{{.InvalidParams}}`: a validation refusal's detail (Tyk's `TemplateData`,
    /// mw_validate_json.go:60-75); Go's `<no value>` for every other error.
    InvalidParams,
}

/// What [`ErrorOverrides::find_upstream`] says about an upstream response.
#[derive(Debug)]
pub enum UpstreamMatch<'a> {
    /// No rule matches.
    None,
    /// A rule before any match looks at the body: call again with its first
    /// [`MAX_BODY_FOR_MATCHING`] bytes.
    NeedBody,
    Found(&'a Override),
}

impl Rule {
    /// Tyk's `matchesAdditionalCriteria` (a gateway error: its flag and message).
    fn matches_error(&self, flag: Option<&str>, message: &str) -> bool {
        if self.any {
            return true;
        }
        if !self.flag.is_empty() && flag == Some(self.flag.as_str()) {
            return true;
        }
        if let Some(p) = &self.message_pattern {
            return p.is_match(message.as_bytes());
        }
        self.flag.is_empty()
    }

    /// Whether matching an upstream response looks at its body (Tyk: `needsBodyForMatch`, less
    /// the rules whose flag decides first).
    fn needs_body(&self) -> bool {
        !self.any && self.flag.is_empty() && (self.body_field.is_some() || self.message_pattern.is_some())
    }

    /// Tyk's `matchesUpstreamCriteria`.
    fn matches_upstream(&self, status: u16, body: &[u8]) -> bool {
        if self.any {
            return true;
        }
        if self.flag == "URS" {
            return (500..=599).contains(&status);
        }
        if !self.flag.is_empty() {
            return false;
        }
        if let Some((path, value)) = &self.body_field {
            if super::gjson::get_string(body, path).is_some_and(|v| v == *value) {
                return true;
            }
        }
        if let Some(p) = &self.message_pattern {
            return p.is_match(body);
        }
        self.body_field.is_none()
    }
}

impl ErrorOverrides {
    /// The rules for `status`: exact code first, then its class.
    fn rules(&self, status: u16) -> impl Iterator<Item = &Rule> {
        let exact = self.exact.iter().filter(move |(c, _)| *c == status);
        let class = self.class.iter().filter(move |(c, _)| *c == status / 100);
        exact.chain(class).flat_map(|(_, r)| r.iter())
    }

    /// The rule for a gateway error of `status` with `flag` and `message`: exact status first,
    /// then its class; the first matching rule in order (gateway/error_overrides.go:197-283).
    pub fn find(&self, status: u16, flag: Option<&str>, message: &str) -> Option<&Override> {
        self.rules(status).find(|r| r.matches_error(flag, message)).map(|r| &r.response)
    }

    /// Whether an upstream response of `status` has rules to try (Tyk looks at 4xx and 5xx
    /// only, res_handler_error_override.go `shouldProcessResponse`).
    pub fn has_upstream_rules(&self, status: u16) -> bool {
        status >= 400 && self.rules(status).next().is_some()
    }

    /// The rule for an upstream response of `status` (Tyk: `ApplyUpstreamOverride`): `body` is
    /// `None` until a rule needs it, then at most its first [`MAX_BODY_FOR_MATCHING`] bytes.
    pub fn find_upstream(&self, status: u16, body: Option<&[u8]>) -> UpstreamMatch<'_> {
        if status < 400 {
            return UpstreamMatch::None;
        }
        for r in self.rules(status) {
            let body = match body {
                Some(b) => &b[..b.len().min(MAX_BODY_FOR_MATCHING)],
                None if r.needs_body() => return UpstreamMatch::NeedBody,
                None => &[][..],
            };
            if r.matches_upstream(status, body) {
                return UpstreamMatch::Found(&r.response);
            }
        }
        UpstreamMatch::None
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.class.is_empty()
    }

    fn bodies_mut(&mut self) -> impl Iterator<Item = (String, &mut Body)> {
        self.exact.iter_mut().chain(self.class.iter_mut()).flat_map(|(code, rules)| {
            let key = if self_class(*code) { format!("{code}xx") } else { code.to_string() };
            rules
                .iter_mut()
                .enumerate()
                .map(move |(i, r)| (format!("error_overrides.{key}[{i}]"), &mut r.response.body))
        })
    }
}

/// Class keys are stored as their first digit (1-5), codes as 100-599.
fn self_class(code: u16) -> bool {
    code < 10
}

/// `error_overrides` of a definition (absent, empty or `error_overrides_disabled`: `None`).
pub(super) fn parse(file: &std::path::Path, json: &Value, errs: &mut Vec<ConfigError>) -> Option<ErrorOverrides> {
    if json.get("error_overrides_disabled").and_then(Value::as_bool).unwrap_or(false) {
        return None;
    }
    let map = json.get("error_overrides").filter(|v| !v.is_null())?;
    let mut err = |field: String, value: String, msg: &str| errs.push(ConfigError::new(file, field, value, msg));
    let Some(map) = map.as_object() else {
        err("error_overrides".into(), super::brief(map), "must be an object of status -> rules");
        return None;
    };
    let mut out = ErrorOverrides::default();
    for (key, rules) in map {
        let field = format!("error_overrides.{key}");
        let status = match key.as_bytes() {
            [d @ b'1'..=b'5', b'x', b'x'] => Err(u16::from(d - b'0')),
            _ => match key.parse::<u16>() {
                Ok(c) if (100..=599).contains(&c) => Ok(c),
                _ => {
                    err(field, key.clone(), "must be a status code (\"403\") or a class (\"5xx\")");
                    continue;
                }
            },
        };
        let Some(list) = rules.as_array() else {
            err(field, super::brief(rules), "must be a list of rules");
            continue;
        };
        let mut compiled = Vec::new();
        for (i, r) in list.iter().enumerate() {
            let at = format!("{field}[{i}]");
            if let Some(rule) = rule(&at, r, &mut err) {
                compiled.push(rule);
            }
        }
        match status {
            Ok(c) => out.exact.push((c, compiled)),
            Err(class) => out.class.push((class, compiled)),
        }
    }
    (!out.is_empty()).then_some(out)
}

fn rule(at: &str, r: &Value, err: &mut impl FnMut(String, String, &str)) -> Option<Rule> {
    let m = r.get("match").filter(|m| !m.is_null());
    let s = |v: Option<&Value>, k: &str| v.and_then(|v| v.get(k)).and_then(Value::as_str).unwrap_or("").to_string();
    let flag = s(m, "flag");
    let (field, value) = (s(m, "body_field"), s(m, "body_value"));
    // Tyk compares a field only when both are set (`matchesUpstreamCriteria`).
    let body_field = if field.is_empty() || value.is_empty() {
        None
    } else {
        match super::gjson::parse_path(&field) {
            Ok(path) => Some((path, value)),
            Err(msg) => {
                err(format!("{at}.match.body_field"), field, msg);
                return None;
            }
        }
    };
    let pattern = s(m, "message_pattern");
    let message_pattern = if pattern.is_empty() {
        None
    } else {
        match regex::bytes::Regex::new(&pattern) {
            Ok(p) => Some(p),
            Err(_) => {
                err(format!("{at}.match.message_pattern"), pattern, "not a valid regular expression");
                return None;
            }
        }
    };
    let any = flag.is_empty() && message_pattern.is_none() && body_field.is_none();
    let resp = r.get("response").filter(|v| v.is_object());
    let Some(resp) = resp else {
        err(format!("{at}.response"), super::brief(r), "is required (an object)");
        return None;
    };
    let status = match resp.get("status_code").and_then(Value::as_u64).unwrap_or(0) {
        0 => 0,
        c @ 100..=599 => c as u16,
        c => {
            err(format!("{at}.response.status_code"), c.to_string(), "must be a status code (100-599)");
            return None;
        }
    };
    let message = s(Some(resp), "message");
    let body = s(Some(resp), "body");
    let template = s(Some(resp), "template");
    let body = if body.contains("{{.") {
        match template_parts(&body) {
            Ok(parts) => Body::Template { parts, message },
            Err(name) => {
                let msg = "only {{.Message}} and {{.StatusCode}} are supported in an inline body";
                err(format!("{at}.response.body"), name, msg);
                return None;
            }
        }
    } else if !body.is_empty() {
        Body::Literal(body)
    } else if !template.is_empty() {
        if template.contains(['/', '\\']) || template.starts_with('.') {
            err(format!("{at}.response.template"), template, "must be a file name in template_path");
            return None;
        }
        Body::File { name: template, json: None, xml: None, message }
    } else if !message.is_empty() {
        Body::Message(message)
    } else {
        Body::Original
    };
    let mut headers = Vec::new();
    if let Some(h) = resp.get("headers").and_then(Value::as_object) {
        for (k, v) in h {
            let value = v.as_str().unwrap_or("");
            let ok = !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !ok || value.bytes().any(|b| b < 0x20 && b != b'\t') {
                err(format!("{at}.response.headers.{k}"), value.to_string(), "not a valid header");
                return None;
            }
            headers.push((k.clone(), value.to_string()));
        }
    }
    Some(Rule { any, flag, message_pattern, body_field, response: Override { status, body, headers } })
}

/// Reads the file templates the rules name from `dir` (Tyk's `template_path`, whose files Tyk
/// parses at start, gateway/server.go:616): `<name>.json` else `<name>` for JSON, `<name>.xml`
/// else `<name>` for XML (gateway/error_overrides.go `getFileTemplate`). A rule whose template
/// has no JSON file, or whose file uses anything but `{{.Message}}`, `{{.StatusCode}}` and
/// `{{.InvalidParams}}`, is an error naming the definition's field.
pub(super) fn load_templates(
    file: &Path,
    overrides: &mut ErrorOverrides,
    dir: &Path,
    read: &dyn Fn(&Path) -> Result<Option<String>, String>,
    errs: &mut Vec<ConfigError>,
) {
    for (at, body) in overrides.bodies_mut() {
        let Body::File { name, json, xml, .. } = body else { continue };
        let field = format!("{at}.response.template");
        let mut load = |path: std::path::PathBuf| -> Result<Option<Vec<Part>>, ()> {
            match read(&path) {
                Ok(None) => Ok(None),
                Ok(Some(text)) => template_parts(&text).map(Some).map_err(|action| {
                    let msg = format!(
                        "template file {} uses {action}: only {{{{.Message}}}} and {{{{.StatusCode}}}} are supported",
                        path.display()
                    );
                    errs.push(ConfigError::new(file, &field, name.as_str(), msg));
                }),
                Err(e) => {
                    errs.push(ConfigError::new(file, &field, name.as_str(), format!("{}: {e}", path.display())));
                    Err(())
                }
            }
        };
        let bare = || dir.join(name.as_str());
        let Ok(j) = load(dir.join(format!("{name}.json"))) else { continue };
        let Ok(j) = (match j {
            Some(j) => Ok(Some(j)),
            None => load(bare()),
        }) else {
            continue;
        };
        let Ok(x) = load(dir.join(format!("{name}.xml"))) else { continue };
        let Ok(x) = (match x {
            Some(x) => Ok(Some(x)),
            None => load(bare()),
        }) else {
            continue;
        };
        if j.is_none() {
            let msg = format!("no template {name}.json (or {name}) in template_path {}", dir.display());
            errs.push(ConfigError::new(file, field, name.as_str(), msg));
            continue;
        }
        (*json, *xml) = (j, x);
    }
}

/// Tyk's error templates for the gateway's own errors: the `error*` files of `template_path`
/// (gateway/server.go:614-617), chosen per answer as Tyk's `writeTemplateErrorResponse` does
/// (gateway/handler_error.go:286-327): `error_<status>.<json|xml>`, else `error.<json|xml>`,
/// else `error.json` (then answered as JSON). Without a file, the data plane writes Tyk's own
/// default templates, byte for byte the files Tyk ships.
#[derive(Debug, Clone, Default)]
pub struct ErrorTemplates {
    /// (file name, compiled template): only `{{.Message}}` (Tyk executes these with an
    /// `APIError`, which has no other field).
    files: Vec<(String, Vec<Part>)>,
}

impl ErrorTemplates {
    /// The template for an error of `status` answered as XML (`xml`) or JSON, and whether it is
    /// an XML one (`false`: answered as JSON).
    pub fn find(&self, status: u16, xml: bool) -> Option<(&[Part], bool)> {
        let ext = if xml { "xml" } else { "json" };
        let get = |name: &str| self.files.iter().find(|(n, _)| n == name).map(|(_, p)| p.as_slice());
        if let Some(p) = get(&format!("error_{status}.{ext}")).or_else(|| get(&format!("error.{ext}"))) {
            return Some((p, xml));
        }
        get("error.json").map(|p| (p, false))
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Reads Tyk's gateway error templates from `dir` (`[apps] template_path`): every
/// `error.json`, `error.xml`, `error_<status>.json` and `error_<status>.xml`. A template with
/// any action but `{{.Message}}` is an error naming its file (Tyk fails to start on a template
/// it cannot parse). A missing directory: no templates.
pub(super) fn load_gateway_templates(
    dir: &Path,
    list: &dyn Fn(&Path) -> std::io::Result<Vec<std::path::PathBuf>>,
    read: &dyn Fn(&Path) -> Result<String, String>,
    errs: &mut Vec<ConfigError>,
) -> ErrorTemplates {
    let mut files = Vec::new();
    let Ok(mut paths) = list(dir) else { return ErrorTemplates::default() };
    paths.sort();
    for path in paths {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some((stem, ext)) = name.rsplit_once('.') else { continue };
        let known = stem == "error"
            || stem.strip_prefix("error_").is_some_and(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()));
        if !known || !matches!(ext, "json" | "xml") {
            continue;
        }
        let text = match read(&path) {
            Ok(t) => t,
            Err(e) => {
                errs.push(ConfigError::new(&path, "", "", format!("cannot read the error template: {e}")));
                continue;
            }
        };
        match template_parts(&text) {
            Ok(parts) if parts.iter().all(|p| matches!(p, Part::Text(_) | Part::Message)) => {
                files.push((name.to_string(), parts));
            }
            Ok(_) => errs.push(ConfigError::new(
                &path,
                "",
                "{{.StatusCode}}",
                "Tyk's gateway error templates have only {{.Message}} (its APIError has no other field)",
            )),
            Err(action) => {
                errs.push(ConfigError::new(&path, "", action, "only {{.Message}} is supported in an error template"))
            }
        }
    }
    ErrorTemplates { files }
}

/// `{{.Message}}` / `{{.StatusCode}}` (spaces inside the braces allowed) between literal text;
/// any other action is an error naming it.
fn template_parts(body: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        let Some(close) = rest[open..].find("}}") else {
            return Err(rest[open..].to_string());
        };
        let action = rest[open + 2..open + close].trim();
        parts.push(match action {
            ".Message" => Part::Message,
            ".StatusCode" => Part::StatusCode,
            ".InvalidParams" => Part::InvalidParams,
            other => return Err(format!("{{{{{other}}}}}")),
        });
        rest = &rest[open + close + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_json(v: Value) -> (Option<ErrorOverrides>, Vec<ConfigError>) {
        let mut errs = Vec::new();
        let o = parse(std::path::Path::new("a.json"), &v, &mut errs);
        (o, errs)
    }

    #[test]
    fn rules_match_by_flag_then_message_exact_status_before_class() {
        let (o, errs) = parse_json(serde_json::json!({"error_overrides": {
            "403": [{"match": {"flag": "AKI"}, "response": {"status_code": 418, "body": "{\"e\": 1}", "headers": {"X-A": "1"}}}],
            "4xx": [{"match": {"flag": "RLT", "message_pattern": "(?i)quota"}, "response": {"message": "slow down"}}]
        }}));
        assert!(errs.is_empty(), "{errs:?}");
        let o = o.unwrap();
        let r = o.find(403, Some("AKI"), "Access to this API has been disallowed").unwrap();
        assert_eq!(r.status, 418);
        assert!(matches!(&r.body, Body::Literal(b) if b == "{\"e\": 1}"));
        assert_eq!(r.headers, [("X-A".to_string(), "1".to_string())]);
        assert!(o.find(403, Some("AMF"), "x").is_none());
        assert!(matches!(o.find(429, Some("RLT"), "x").unwrap().body, Body::Message(_)));
        assert!(o.find(403, Some("QEX"), "Quota exceeded").is_some(), "message_pattern when the flag differs");
        assert!(o.find(500, Some("RLT"), "x").is_none());
    }

    #[test]
    fn disabled_and_malformed_rules() {
        let (o, errs) = parse_json(serde_json::json!({"error_overrides_disabled": true,
            "error_overrides": {"403": [{"match": {"flag": "AKI"}, "response": {"status_code": 418}}]}}));
        assert!(o.is_none() && errs.is_empty());
        let (_, errs) = parse_json(serde_json::json!({"error_overrides": {
            "404": [{"match": {"body_field": "items.#", "body_value": "1"}, "response": {"status_code": 420}}],
            "500": [{"match": {"message_pattern": "("}, "response": {"status_code": 501}}],
            "502": [{"response": {"template": "../etc/passwd"}}],
            "6xx": [{"response": {"status_code": 503}}]
        }}));
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "error_overrides.404[0].match.body_field",
                "error_overrides.500[0].match.message_pattern",
                "error_overrides.502[0].response.template",
                "error_overrides.6xx"
            ]
        );
    }

    fn found(m: UpstreamMatch<'_>) -> Option<u16> {
        match m {
            UpstreamMatch::Found(o) => Some(o.status),
            UpstreamMatch::None => None,
            UpstreamMatch::NeedBody => panic!("needs the body"),
        }
    }

    /// Tyk's `ApplyUpstreamOverride`: 4xx/5xx only; exact code before class; in order, first
    /// match; a rule without criteria matches any; `URS` any 5xx; other flags never; a field
    /// compared when both field and value are set, else the pattern; the body read only when a
    /// rule before a match needs it, and only its first 4096 bytes.
    #[test]
    fn upstream_responses_match_as_tyks_apply_upstream_override() {
        let (o, errs) = parse_json(serde_json::json!({"error_overrides": {
            "404": [{"response": {"status_code": 420}}],
            "500": [
                {"match": {"flag": "AKI"}, "response": {"status_code": 401}},
                {"match": {"body_field": "error.type", "body_value": "database_timeout",
                           "message_pattern": "Connection.*lost"}, "response": {"status_code": 501}},
                {"match": {"message_pattern": "(?i)overload"}, "response": {"status_code": 503}}
            ],
            "5xx": [{"match": {"flag": "URS"}, "response": {"status_code": 599}}],
            "2xx": [{"response": {"status_code": 500}}]
        }}));
        assert!(errs.is_empty(), "{errs:?}");
        let o = o.unwrap();
        assert!(o.has_upstream_rules(404) && o.has_upstream_rules(502) && !o.has_upstream_rules(200));
        assert!(!o.has_upstream_rules(403));
        assert_eq!(found(o.find_upstream(404, None)), Some(420), "no criteria: no body read");
        assert_eq!(found(o.find_upstream(200, None)), None, "2xx never");
        assert_eq!(found(o.find_upstream(502, None)), Some(599), "URS: any 5xx");
        assert!(matches!(o.find_upstream(500, None), UpstreamMatch::NeedBody));
        let by_field = br#"{"error": {"type": "database_timeout"}}"#;
        assert_eq!(found(o.find_upstream(500, Some(by_field))), Some(501));
        assert_eq!(found(o.find_upstream(500, Some(b"Connection to db lost"))), Some(501), "the pattern alone");
        assert_eq!(found(o.find_upstream(500, Some(b"server OVERLOADED"))), Some(503));
        assert_eq!(found(o.find_upstream(500, Some(b"other"))), Some(599), "then the class");
        let mut long = vec![b' '; MAX_BODY_FOR_MATCHING];
        long.extend_from_slice(b"Connection lost");
        assert_eq!(found(o.find_upstream(500, Some(&long))), Some(599), "past 4096 bytes: not seen");
        // A gateway error: a rule without criteria matches, a body_field rule too (Tyk's
        // `matchesAdditionalCriteria` has no criterion for it).
        assert_eq!(o.find(404, Some("TKI"), "x").map(|r| r.status), Some(420));
    }

    #[test]
    fn file_templates_are_read_at_load_by_content_type() {
        let (o, errs) = parse_json(serde_json::json!({"error_overrides": {
            "400": [{"match": {"flag": "BIV"}, "response": {"template": "both", "message": "m"}}],
            "401": [{"match": {"flag": "AKI"}, "response": {"template": "bare"}}],
            "402": [{"match": {"flag": "AKI"}, "response": {"template": "missing"}}],
            "403": [{"match": {"flag": "AKI"}, "response": {"template": "broken"}}],
            "404": [{"match": {"flag": "AKI"}, "response": {"template": "only_xml"}}]
        }}));
        assert!(errs.is_empty(), "{errs:?}");
        let mut o = o.unwrap();
        let files = |p: &Path| -> Result<Option<String>, String> {
            Ok(match p.file_name().unwrap().to_str().unwrap() {
                "both.json" => Some("{\"s\": {{.StatusCode}}}".into()),
                "both.xml" => Some("<m>{{.Message}}</m>".into()),
                "bare" => Some("{{ .Message }}".into()),
                "broken.json" => Some("{{.Unknown}}".into()),
                "only_xml.xml" => Some("<x/>".into()),
                _ => None,
            })
        };
        let mut errs = Vec::new();
        load_templates(Path::new("a.json"), &mut o, Path::new("/t"), &files, &mut errs);
        let got: Vec<(&str, &str)> = errs.iter().map(|e| (e.field.as_str(), e.value.as_str())).collect();
        assert_eq!(
            got,
            [
                ("error_overrides.402[0].response.template", "missing"),
                ("error_overrides.403[0].response.template", "broken"),
                ("error_overrides.404[0].response.template", "only_xml")
            ]
        );
        let Body::File { json, xml, message, .. } = &o.find(400, Some("BIV"), "").unwrap().body else { panic!() };
        assert_eq!(
            json.as_deref(),
            Some(&[Part::Text("{\"s\": ".into()), Part::StatusCode, Part::Text("}".into())][..])
        );
        assert_eq!(xml.as_deref(), Some(&[Part::Text("<m>".into()), Part::Message, Part::Text("</m>".into())][..]));
        assert_eq!(message, "m");
        let Body::File { json, xml, .. } = &o.find(401, Some("AKI"), "").unwrap().body else { panic!() };
        assert_eq!((json.as_deref(), xml.as_deref()), (Some(&[Part::Message][..]), Some(&[Part::Message][..])));
    }

    #[test]
    fn inline_templates_know_message_and_status_code_only() {
        assert_eq!(
            template_parts("{\"code\": {{.StatusCode}}, \"m\": \"{{ .Message }}\"}").unwrap(),
            [
                Part::Text("{\"code\": ".into()),
                Part::StatusCode,
                Part::Text(", \"m\": \"".into()),
                Part::Message,
                Part::Text("\"}".into())
            ]
        );
        assert_eq!(template_parts("{{.Unknown}}").unwrap_err(), "{{.Unknown}}");
        assert_eq!(template_parts("{{.InvalidParams}}").unwrap(), [Part::InvalidParams]);
    }
}
