//! Request header transforms: `global_headers`, `global_headers_remove`, per-path
//! `transform_headers`, with `$tyk_context.<var>` (when `enable_context_vars`) and
//! `$tyk_meta.<key>` (the session's `meta_data`) expanded, and `tag_headers` collected.
//!
//! Templates are parsed once at load; expansion writes straight into the upstream head. Must not:
//! allocate per request (a number-valued claim is serialised into the head, not via a String).

use std::net::IpAddr;

use portcullis_http1::Headers;

use super::jwt::Claims;
use super::session::Session;

/// A header value with variables, parsed at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Context(String),
    Meta(String),
}

impl Template {
    /// Parses `$tyk_context.name` and `$tyk_meta.name` (names: letters, digits, `_`, `-`, `.`);
    /// context variables stay literal text unless `context_vars` is on, as in Tyk.
    pub fn parse(text: &str, context_vars: bool) -> Template {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("$tyk_") {
            lit.push_str(&rest[..i]);
            let tail = &rest[i..];
            let (kind, prefix_len) = if tail.starts_with("$tyk_context.") {
                (Some(true), "$tyk_context.".len())
            } else if tail.starts_with("$tyk_meta.") {
                (Some(false), "$tyk_meta.".len())
            } else {
                (None, 5)
            };
            let name_len = tail[prefix_len..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
                .unwrap_or(tail.len() - prefix_len);
            let name = &tail[prefix_len..prefix_len + name_len];
            match kind {
                Some(is_ctx) if !name.is_empty() && (context_vars || !is_ctx) => {
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(if is_ctx { Part::Context(name.into()) } else { Part::Meta(name.into()) });
                    rest = &tail[prefix_len + name_len..];
                }
                _ => {
                    lit.push_str(&tail[..prefix_len]);
                    rest = &tail[prefix_len..];
                }
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Template { parts }
    }

    /// Expands into `out`. Unknown variables expand to nothing (Tyk does the same).
    pub fn expand(&self, cx: &Context<'_>, out: &mut Vec<u8>) {
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Part::Context(name) => cx.context_var(name, out),
                Part::Meta(key) => {
                    if let Some(v) = cx.session.and_then(|s| s.meta_data.get(key.as_str())) {
                        out.extend_from_slice(v.as_bytes());
                    }
                }
            }
        }
    }
}

fn write_json_text(v: &serde_json::Value, out: &mut Vec<u8>) {
    match v {
        serde_json::Value::String(s) => out.extend_from_slice(s.as_bytes()),
        serde_json::Value::Null => {}
        // Serialised into `out` directly; writing to a Vec cannot fail.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// What context variables can see.
pub struct Context<'a> {
    pub headers: Headers<'a>,
    pub path: &'a str,
    pub remote_addr: IpAddr,
    pub request_id: &'a [u8],
    pub token: Option<&'a str>,
    pub claims: Option<&'a Claims>,
    pub session: Option<&'a Session>,
}

impl Context<'_> {
    /// Writes context variable `name` (`jwt_claims_*`, `headers_*`, `request_id`, `remote_addr`,
    /// `path`, `token`) into `out`; nothing for an unknown one.
    pub fn context_var(&self, name: &str, out: &mut Vec<u8>) {
        use std::io::Write as _;
        if let Some(claim) = name.strip_prefix("jwt_claims_") {
            if let Some(v) = self.claims.and_then(|c| c.map.get(claim)) {
                write_json_text(v, out);
            }
        } else if let Some(h) = name.strip_prefix("headers_") {
            // Tyk names headers with `-` written as `_` (headers_X_Forwarded_For).
            let matches = |n: &[u8]| {
                n.len() == h.len()
                    && n.iter().zip(h.bytes()).all(|(&a, b)| {
                        let a = if a == b'-' { b'_' } else { a };
                        a.eq_ignore_ascii_case(&b)
                    })
            };
            if let Some(hd) = self.headers.iter().find(|x| matches(x.name)) {
                out.extend_from_slice(hd.value);
            }
        } else {
            match name {
                "request_id" => out.extend_from_slice(self.request_id),
                "remote_addr" => {
                    let _ = write!(out, "{}", self.remote_addr);
                }
                "path" => out.extend_from_slice(self.path.as_bytes()),
                "token" => out.extend_from_slice(self.token.unwrap_or_default().as_bytes()),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx<'a>(headers: Headers<'a>, claims: Option<&'a Claims>, session: Option<&'a Session>) -> Context<'a> {
        Context {
            headers,
            path: "/p/x",
            remote_addr: "10.0.0.1".parse().unwrap(),
            request_id: b"rid",
            token: Some("tok"),
            claims,
            session,
        }
    }

    fn expand(t: &Template, c: &Context<'_>) -> String {
        let mut out = Vec::new();
        t.expand(c, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn context_and_meta_variables() {
        let mut map = serde_json::Map::new();
        map.insert("sub".into(), "foo@bar.com".into());
        map.insert("n".into(), 5.into());
        let claims = Claims { map, exp: None, identity: Default::default(), grant: Default::default() };
        let mut session = Session::default();
        session.meta_data.insert("plan".into(), "gold".into());
        let hs = portcullis_http1::HeaderList::new(&[("X-Forwarded-For", b"1.2.3.4")]);
        let c = cx(hs.view(), Some(&claims), Some(&session));
        let t = Template::parse("u=$tyk_context.jwt_claims_sub n=$tyk_context.jwt_claims_n $tyk_meta.plan", true);
        assert_eq!(expand(&t, &c), "u=foo@bar.com n=5 gold");
        let t = Template::parse("$tyk_context.request_id|$tyk_context.remote_addr|$tyk_context.path|$tyk_context.token|$tyk_context.headers_X_Forwarded_For|$tyk_context.nope|$tyk_x", true);
        assert_eq!(expand(&t, &c), "rid|10.0.0.1|/p/x|tok|1.2.3.4||$tyk_x");
        // Context variables off: literal, meta still expands.
        let t = Template::parse("$tyk_context.path $tyk_meta.plan", false);
        assert_eq!(expand(&t, &c), "$tyk_context.path gold");
    }
}
