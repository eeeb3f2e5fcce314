//! Tyk's `error_overrides` of an API definition (apidef/error_overrides.go), compiled: which
//! gateway errors get another status, body or headers.
//!
//! Portcullis applies the rules to the errors it answers itself (refusals, upstream failures).
//! Tyk's rules also rewrite upstream 4xx/5xx responses, by status, body field or body text;
//! those need the upstream's body and are refused at load by name, never silently ignored: a rule
//! is accepted only when it names a gateway `flag` (so it can never match an upstream
//! response, gateway/res_handler_error_override.go:439-470). Must not: do I/O (templates from
//! files are refused).

use serde_json::Value;

use super::ConfigError;

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
    /// The response flag of the error (`AKI`, `RLT`, ... internal/errors/classification.go).
    flag: String,
    /// Tried on the error's message when the flag differs.
    message_pattern: Option<regex::Regex>,
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

/// The body of an overridden error, in Tyk's priority (gateway/error_response.go:30-100).
#[derive(Debug, Clone, Default)]
pub enum Body {
    /// No body, template or message: the default template with the original message.
    #[default]
    Original,
    /// `message` only: the default template with this message.
    Message(String),
    /// `body` without `{{.`: written as it is.
    Literal(String),
    /// `body` with `{{.Message}}` / `{{.StatusCode}}`.
    Template { parts: Vec<Part>, message: String },
}

/// A piece of an inline template.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Message,
    StatusCode,
}

impl ErrorOverrides {
    /// The rule for an error of `status` with `flag` and `message`: exact status first, then its
    /// class; the first matching rule in order (gateway/error_overrides.go:197-283).
    pub fn find(&self, status: u16, flag: Option<&str>, message: &str) -> Option<&Override> {
        fn hit<'r>(rules: &'r [Rule], flag: Option<&str>, message: &str) -> Option<&'r Rule> {
            rules.iter().find(|r| {
                flag == Some(r.flag.as_str()) || r.message_pattern.as_ref().is_some_and(|p| p.is_match(message))
            })
        }
        let exact = self.exact.iter().find(|(c, _)| *c == status).and_then(|(_, r)| hit(r, flag, message));
        exact
            .or_else(|| self.class.iter().find(|(c, _)| *c == status / 100).and_then(|(_, r)| hit(r, flag, message)))
            .map(|r| &r.response)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.class.is_empty()
    }
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
    if !s(m, "body_field").is_empty() || !s(m, "body_value").is_empty() {
        err(format!("{at}.match.body_field"), s(m, "body_field"), UPSTREAM);
        return None;
    }
    if flag.is_empty() || flag == "URS" {
        err(format!("{at}.match.flag"), flag, UPSTREAM);
        return None;
    }
    let pattern = s(m, "message_pattern");
    let message_pattern = if pattern.is_empty() {
        None
    } else {
        match regex::Regex::new(&pattern) {
            Ok(p) => Some(p),
            Err(_) => {
                err(format!("{at}.match.message_pattern"), pattern, "not a valid regular expression");
                return None;
            }
        }
    };
    let resp = r.get("response").filter(|v| v.is_object());
    let Some(resp) = resp else {
        err(format!("{at}.response"), super::brief(r), "is required (an object)");
        return None;
    };
    let template = s(Some(resp), "template");
    if !template.is_empty() {
        err(format!("{at}.response.template"), template, "error templates from files are not supported yet");
        return None;
    }
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
    Some(Rule { flag, message_pattern, response: Override { status, body, headers } })
}

const UPSTREAM: &str = "error_overrides rules that rewrite upstream responses (no flag, flag URS, body_field) \
                        are not supported yet: name the gateway error's flag (AKI, AMF, RLT, QEX, ...)";

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
    fn disabled_and_upstream_rules() {
        let (o, errs) = parse_json(serde_json::json!({"error_overrides_disabled": true,
            "error_overrides": {"403": [{"match": {"flag": "AKI"}, "response": {"status_code": 418}}]}}));
        assert!(o.is_none() && errs.is_empty());
        let (_, errs) = parse_json(serde_json::json!({"error_overrides": {
            "404": [{"response": {"status_code": 420}}],
            "500": [{"match": {"body_field": "error.type", "body_value": "x"}, "response": {"status_code": 501}}],
            "5xx": [{"match": {"flag": "URS"}, "response": {"status_code": 503}}]
        }}));
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "error_overrides.404[0].match.flag",
                "error_overrides.500[0].match.body_field",
                "error_overrides.5xx[0].match.flag"
            ]
        );
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
        assert_eq!(template_parts("{{.InvalidParams}}").unwrap_err(), "{{.InvalidParams}}");
    }
}
