//! Tyk's URL rewrites (`extended_paths.url_rewrites`, gateway/mw_url_rewrite.go): the first
//! entry whose path pattern and method match a request (as every extended-path middleware
//! entry: [`PathRule`], method exact) matches its `match_pattern` against the request's URL
//! (path and query, as Go's `r.URL.String()`), picks `rewrite_to` or the `rewrite_to` of the
//! first trigger that fires, substitutes `$0..$n` and `$tyk_context.*` / `$tyk_meta.*`, and the
//! result is the URL the upstream gets: a path (below the API's target), or an absolute
//! `http://` URL whose host is one the loader compiled (`To::target`).
//!
//! Pure: the caller passes what it knows of the request. What this returns is safe to write into
//! a request line: a result with a control byte or a malformed escape is not applied (Go's
//! `url.Parse` fails on it and Tyk forwards the request unrewritten), every other byte that may
//! not stand in a request target is percent-encoded (as Go's `URL.EscapedPath` writes it).

use std::borrow::Cow;

use portcullis_http1::Headers;
use regex::Regex;

use crate::auth::session::Session;
use crate::auth::transform::Context;
use crate::path_rule::PathRule;

/// An API version's rewrites, compiled at load.
#[derive(Debug, Clone, Default)]
pub struct Rewrites {
    pub entries: Vec<Rewrite>,
    /// The listen path as the definition writes it, when `strip_listen_path`: taken off the front
    /// of a rewritten path that starts with it (Tyk's `SanitizeProxyPaths`, after the rewrite).
    pub strip: Option<String>,
    /// `enable_context_vars`: `$tyk_context.*` other than trigger captures expand.
    pub context_vars: bool,
}

/// One `url_rewrites` entry.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// `path` + `method` (exact; none matches no request).
    pub rule: PathRule,
    /// `match_pattern` (Go regexp syntax read as Rust `regex`, which agrees on RE2's).
    pub pattern: Regex,
    pub to: To,
    pub triggers: Vec<Trigger>,
}

/// A `rewrite_to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct To {
    /// An absolute `http://host[:port]` prefix: the index of its target among the API's rewrite
    /// targets. `None`: a path below the API's own target.
    pub target: Option<usize>,
    /// The rest (path and query), with `$n`, `$tyk_context.*` and `$tyk_meta.*` in it.
    pub text: String,
}

/// One of an entry's `triggers`.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// `on: any` (else all).
    pub any: bool,
    /// Header names canonical as Go's `CanonicalMIMEHeaderKey` writes them (the capture names).
    pub headers: Vec<(String, Matcher)>,
    pub query: Vec<(String, Matcher)>,
    pub path_parts: Vec<(String, Matcher)>,
    pub session_meta: Vec<(String, Matcher)>,
    pub to: To,
}

/// Tyk's `StringRegexMap`: `match_rx`, `reverse`.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub re: Regex,
    pub reverse: bool,
}

impl Matcher {
    /// `StringRegexMap.FindStringSubmatch`: whether it counts as a match, and the groups when
    /// the pattern matched (a reversed matcher that counts has none).
    fn find<'v>(&self, v: &'v str) -> (bool, Option<regex::Captures<'v>>) {
        let c = self.re.captures(v);
        (c.is_some() != self.reverse, c)
    }
}

/// What a rewrite sees of the request.
pub struct Request<'a> {
    pub method: &'a str,
    /// The canonical path below the listen path: what entries' path patterns match.
    pub rel_path: &'a str,
    /// The canonical path (Tyk's `r.URL.Path`: path parts).
    pub path: &'a str,
    /// The query as the upstream would get it (credential and version parameters stripped),
    /// `""` or `?...`.
    pub query: &'a str,
    pub headers: Headers<'a>,
    pub session: Option<&'a Session>,
    /// The request's context variables, when `enable_context_vars`.
    pub context: Option<&'a Context<'a>>,
}

/// A rewritten request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// Index among the API's rewrite targets; `None`: the API's own target.
    pub target: Option<usize>,
    /// Path (starting with `/`, the listen path stripped when the API strips it) and query,
    /// encoded for a request line.
    pub url: String,
}

/// Why a rewrite fails the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// The URL matched only unescaped, and does not unescape (Tyk: 500 "failed to decode URL
    /// path").
    Undecodable,
}

impl Rewrites {
    /// The rewrite of `r`, if an entry applies (`Ok(None)`: none does, or its result is not a
    /// URL Go would parse).
    pub fn apply(&self, r: &Request<'_>) -> Result<Option<Rewritten>, Failed> {
        let Some(e) = self.entries.iter().find(|e| e.rule.matches(r.method, r.rel_path, r.rel_path)) else {
            return Ok(None);
        };
        let mut captures: Vec<(String, String)> = Vec::new();
        let to = e.triggers.iter().enumerate().find_map(|(n, t)| t.fires(n, r, &mut captures)).unwrap_or(&e.to);
        let url = format!("{}{}", r.path, r.query);
        let unescaped;
        let groups = match e.pattern.captures(&url) {
            Some(g) => g,
            None => {
                if !contains_escapes(&url) {
                    return Ok(None);
                }
                unescaped = path_unescape(&url).ok_or(Failed::Undecodable)?;
                match e.pattern.captures(&unescaped) {
                    Some(g) => g,
                    None => return Ok(None),
                }
            }
        };
        let s = substitute(&to.text, &groups);
        let s = self.variables(&s, r, &captures);
        Ok(self.encode(&s).map(|url| Rewritten { target: to.target, url }))
    }

    /// Tyk's `ReplaceTykVariables(r, s, true)`: `$tyk_context.<name>` from the trigger captures
    /// and (with `enable_context_vars`) the request's context, `$tyk_meta.<key>` from the
    /// session; unknown ones are empty; a value not starting with `http` is query-escaped.
    fn variables<'s>(&self, s: &'s str, r: &Request<'_>, captures: &[(String, String)]) -> Cow<'s, str> {
        if !s.contains("$tyk_context.") && !s.contains("$tyk_meta.") {
            return Cow::Borrowed(s);
        }
        let mut out = String::with_capacity(s.len() + 16);
        let mut rest = s;
        let mut value = Vec::new();
        while let Some(i) = rest.find("$tyk_") {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            let (is_ctx, label) = if tail.starts_with("$tyk_context.") {
                (true, "$tyk_context.".len())
            } else if tail.starts_with("$tyk_meta.") {
                (false, "$tyk_meta.".len())
            } else {
                out.push_str("$tyk_");
                rest = &tail[5..];
                continue;
            };
            let len = tail[label..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
                .unwrap_or(tail.len() - label);
            if len == 0 {
                out.push_str(&tail[..label]);
                rest = &tail[label..];
                continue;
            }
            let name = &tail[label..label + len];
            value.clear();
            if is_ctx {
                match captures.iter().rev().find(|(k, _)| k == name) {
                    Some((_, v)) => value.extend_from_slice(v.as_bytes()),
                    None => {
                        if let Some(cx) = r.context.filter(|_| self.context_vars) {
                            cx.context_var(name, &mut value);
                        }
                    }
                }
            } else if let Some(v) = r.session.and_then(|s| s.meta_data.get(name)) {
                value.extend_from_slice(v.as_bytes());
            }
            if value.starts_with(b"http") {
                out.push_str(&String::from_utf8_lossy(&value));
            } else {
                crate::version::query_escape(&mut out, &value);
            }
            rest = &tail[label + len..];
        }
        out.push_str(rest);
        Cow::Owned(out)
    }

    /// `s` as Go's `url.Parse` reads it and `RequestURI` writes it: `None` with a control byte or
    /// a malformed escape in the path (Tyk then forwards the request unrewritten), the fragment
    /// left out, the listen path stripped, bytes a request target may not hold percent-encoded.
    fn encode(&self, s: &str) -> Option<String> {
        if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return None;
        }
        let s = s.split('#').next().unwrap_or("");
        let (path, query) = match s.find('?') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        path_unescape(path)?;
        let path = match &self.strip {
            Some(lp) => path.strip_prefix(lp.as_str()).unwrap_or(path),
            None => path,
        };
        let mut out = String::with_capacity(path.len() + query.len() + 1);
        if !path.starts_with('/') {
            out.push('/');
        }
        for (part, extra) in [(path, b"" as &[u8]), (query, b"?")] {
            for &b in part.as_bytes() {
                if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b) || extra.contains(&b) {
                    out.push(b as char);
                } else {
                    push_escaped(&mut out, b);
                }
            }
        }
        Some(out)
    }
}

impl Trigger {
    /// Tyk's trigger loop body (mw_url_rewrite.go:70-170) for trigger `n`: its captures added to
    /// `cx` whether it fires or not, its `rewrite_to` when it fires.
    fn fires<'t>(&'t self, n: usize, r: &Request<'_>, cx: &mut Vec<(String, String)>) -> Option<&'t To> {
        let mut set = 0;
        // In Tyk's order; with `any` the first kind that matches ends the loop (and the kinds
        // after it add no captures).
        for kind in 0..4 {
            let opts = match kind {
                0 => &self.headers,
                1 => &self.query,
                2 => &self.path_parts,
                _ => &self.session_meta,
            };
            if opts.is_empty() {
                continue;
            }
            let found = match kind {
                0 => self.header_matches(n, r, cx),
                1 => self.query_matches(n, r, cx),
                2 => self.path_part_matches(n, r, cx),
                // Session metadata is looked at only when there is a session (keyless: never).
                _ => match r.session {
                    Some(s) => self.session_matches(n, s, cx),
                    None => continue,
                },
            };
            if found > 0 && (self.any || opts.len() <= found) {
                set += 1;
                if self.any {
                    return Some(&self.to);
                }
            }
        }
        // `all`: every kind the trigger names matched (a trigger naming none fires: Tyk's
        // total 0 == set 0).
        let total =
            [&self.headers, &self.query, &self.path_parts, &self.session_meta].iter().filter(|o| !o.is_empty()).count();
        (!self.any && total == set).then_some(&self.to)
    }

    /// `checkHeaderTrigger`: each value of each named header; captures under
    /// `trigger-<n>-<Header-Name>-<value index>`.
    fn header_matches(&self, n: usize, r: &Request<'_>, cx: &mut Vec<(String, String)>) -> usize {
        let mut found = 0;
        for (name, m) in &self.headers {
            for (i, h) in r.headers.iter().filter(|h| h.is(name)).enumerate() {
                let v = String::from_utf8_lossy(h.value);
                if let (true, groups) = m.find(&v) {
                    add(cx, groups, &format!("trigger-{n}-{name}-{i}"));
                    found += 1;
                }
            }
        }
        found
    }

    /// `checkQueryString`: each value of each named parameter (Go's `URL.Query()`).
    fn query_matches(&self, n: usize, r: &Request<'_>, cx: &mut Vec<(String, String)>) -> usize {
        let mut found = 0;
        for (name, m) in &self.query {
            let values = crate::version::go_query(r.query).filter(|(k, _)| **k == *name.as_bytes());
            for (i, (_, v)) in values.enumerate() {
                let v = String::from_utf8_lossy(&v);
                if let (true, groups) = m.find(&v) {
                    add(cx, groups, &format!("trigger-{n}-{name}-{i}"));
                    found += 1;
                }
            }
        }
        found
    }

    /// `checkPathParts`: every `/`-separated part of the path (the empty one before the first
    /// `/` too); captures numbered by how many matched before.
    fn path_part_matches(&self, n: usize, r: &Request<'_>, cx: &mut Vec<(String, String)>) -> usize {
        let mut found = 0;
        for (name, m) in &self.path_parts {
            for part in r.path.split('/') {
                if let (true, groups) = m.find(part) {
                    add(cx, groups, &format!("trigger-{n}-{name}-{found}"));
                    found += 1;
                }
            }
        }
        found
    }

    /// `checkSessionTrigger`: the session's `meta_data` values; captures under
    /// `trigger-<n>-<key>`.
    fn session_matches(&self, n: usize, s: &Session, cx: &mut Vec<(String, String)>) -> usize {
        let mut found = 0;
        for (key, m) in &self.session_meta {
            if let Some(v) = s.meta_data.get(key) {
                if let (true, groups) = m.find(v) {
                    add(cx, groups, &format!("trigger-{n}-{key}"));
                    found += 1;
                }
            }
        }
        found
    }
}

/// Tyk's `addMatchToContextData`: the whole match under `key`, group `i` (from 0) under
/// `key-i`; nothing for a reversed matcher's match.
fn add(cx: &mut Vec<(String, String)>, groups: Option<regex::Captures<'_>>, key: &str) {
    let Some(g) = groups else { return };
    cx.push((key.to_string(), g.get(0).map_or("", |m| m.as_str()).to_string()));
    for i in 1..g.len() {
        cx.push((format!("{key}-{}", i - 1), g.get(i).map_or("", |m| m.as_str()).to_string()));
    }
}

/// Tyk's `$n` substitution: each `$<digits>` of `to`, in order, replaced everywhere in the
/// result so far by group n of the first match (empty when there is no such group).
fn substitute(to: &str, groups: &regex::Captures<'_>) -> String {
    let mut out = to.to_string();
    let b = to.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            let end = b[i + 1..].iter().position(|c| !c.is_ascii_digit()).map_or(b.len(), |n| i + 1 + n);
            let token = &to[i..end];
            let value = to[i + 1..end].parse::<usize>().ok().and_then(|n| groups.get(n)).map_or("", |m| m.as_str());
            out = out.replace(token, value);
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Tyk's `containsEscapedChars`: unescaping changes `s`, or fails.
fn contains_escapes(s: &str) -> bool {
    s.contains('%')
}

/// Go's `url.PathUnescape`: `%XX` a byte (`+` stays); `None` on a malformed escape. Bytes that
/// are not UTF-8 once decoded are read as U+FFFD (as Go's regexp reads them).
fn path_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let (h, l) = (hex(*b.get(i + 1)?)?, hex(*b.get(i + 2)?)?);
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn push_escaped(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 15) as usize] as char);
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: `x-device-id` -> `X-Device-Id`; a name with a byte
/// that may not be in a header name is left as it is.
pub fn canonical_header_name(name: &str) -> String {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return name.to_string();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
            upper = c == '-';
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path_rule::Methods;
    use portcullis_http1::HeaderList;

    fn rule(path: &str, method: &str) -> PathRule {
        PathRule { pattern: Regex::new(path).unwrap(), methods: Methods::Only(vec![method.into()]) }
    }

    fn to(text: &str) -> To {
        To { target: None, text: text.into() }
    }

    fn m(re: &str, reverse: bool) -> Matcher {
        Matcher { re: Regex::new(re).unwrap(), reverse }
    }

    fn one(pattern: &str, rewrite_to: &str, triggers: Vec<Trigger>) -> Rewrites {
        Rewrites {
            entries: vec![Rewrite {
                rule: rule("/", "GET"),
                pattern: Regex::new(pattern).unwrap(),
                to: to(rewrite_to),
                triggers,
            }],
            strip: None,
            context_vars: false,
        }
    }

    fn run(rw: &Rewrites, path_query: &str, headers: &HeaderList) -> Option<String> {
        let (path, query) = match path_query.find('?') {
            Some(i) => (&path_query[..i], &path_query[i..]),
            None => (path_query, ""),
        };
        let r = Request {
            method: "GET",
            rel_path: path,
            path,
            query,
            headers: headers.view(),
            session: None,
            context: None,
        };
        rw.apply(&r).unwrap().map(|x| x.url)
    }

    /// Tyk's own table (gateway/mw_url_rewrite_test.go, `testRewriterData`), on the paths
    /// Portcullis' canonical form leaves as they are.
    #[test]
    fn tyks_rewriter_cases() {
        let none = HeaderList::new(&[]);
        let cases = [
            ("/test/payment-intents", "/change/to/me", "/test/payment%2Dintents", "/change/to/me"),
            ("/test/straight/rewrite", "/change/to/me", "/test/straight/rewrite", "/change/to/me"),
            ("test/val/(.*)", "change/to/$1", "/test/val/VALUE", "/change/to/VALUE"),
            ("test/val/(.*)", "/test/val/$1", "/test/val/VALUE%2C", "/test/val/VALUE%2C"),
            ("test/val/(.*)", "/test/val/$1", "/test/val/VALUE%2C?a=te%2Cst", "/test/val/VALUE%2C?a=te%2Cst"),
            (
                "/test/val/(.*)/space/(.*)/and/then/(.*)",
                "/change/to/$3/$2/$1",
                "/test/val/ONE/space/TWO/and/then/THREE",
                "/change/to/THREE/TWO/ONE",
            ),
            (
                "/test/val/(.*)/space/(.*)/and/then/(.*)",
                "/change/to/$3/$1",
                "/test/val/ONE/space/TWO/and/then/THREE",
                "/change/to/THREE/ONE",
            ),
            ("(.*)", "$1&newParam=that", "/foo/bar?param1=this", "/foo/bar?param1=this&newParam=that"),
            (
                "/test/val/(.*)/space/(.*)/and/then(.*)",
                "/change/to/$2/$1$3",
                "/test/val/ONE/space/TWO/and/then?param1=this",
                "/change/to/TWO/ONE?param1=this",
            ),
        ];
        for (pattern, rewrite_to, input, want) in cases {
            assert_eq!(run(&one(pattern, rewrite_to, vec![]), input, &none).as_deref(), Some(want), "{input}");
        }
        assert_eq!(run(&one("/nomatch", "/x", vec![]), "/a", &none), None);
    }

    /// Captures cannot put a line break, a space or a quote into the request line: a control
    /// byte makes the result unusable (as Go's `url.Parse`), the rest is percent-encoded.
    #[test]
    fn captures_cannot_break_the_request_line() {
        let none = HeaderList::new(&[]);
        let rw = one("/a/(.*)", "/b/$1", vec![]);
        // Matched only once unescaped: `$1` holds the decoded bytes.
        let rw_q = one("q=([^%]*)$", "/b/$1", vec![]);
        assert_eq!(run(&rw_q, "/a?q=x%0D%0AHost:%20evil", &none), None, "CR LF: not rewritten");
        assert_eq!(run(&rw_q, "/a?q=x%20y%22%3C", &none).as_deref(), Some("/b/x%20y%22%3C"));
        assert_eq!(run(&rw, "/a/x%20y", &none).as_deref(), Some("/b/x%20y"));
        let rw_bad = one("q=(.*)$", "/b/$1", vec![]);
        let r = Request {
            method: "GET",
            rel_path: "/a",
            path: "/a",
            query: "?q=%zz",
            headers: none.view(),
            session: None,
            context: None,
        };
        assert_eq!(
            rw_bad.apply(&r).unwrap().as_deref_url(),
            None,
            "a malformed escape in the path: not applied, as Go's url.Parse fails"
        );
        let undecodable = one("nomatch", "/b", vec![]);
        assert_eq!(undecodable.apply(&r), Err(Failed::Undecodable), "Tyk: 500");
    }

    trait Url {
        fn as_deref_url(&self) -> Option<&str>;
    }
    impl Url for Option<Rewritten> {
        fn as_deref_url(&self) -> Option<&str> {
            self.as_ref().map(|x| x.url.as_str())
        }
    }

    fn trigger(any: bool, headers: Vec<(&str, Matcher)>, query: Vec<(&str, Matcher)>, rewrite_to: &str) -> Trigger {
        let own = |v: Vec<(&str, Matcher)>| v.into_iter().map(|(k, m)| (k.to_string(), m)).collect();
        Trigger {
            any,
            headers: own(headers),
            query: own(query),
            path_parts: vec![],
            session_meta: vec![],
            to: to(rewrite_to),
        }
    }

    #[test]
    fn triggers_any_all_reverse_and_captures() {
        let hs = HeaderList::new(&[("x-device", b"mobile-ios")]);
        let none = HeaderList::new(&[]);
        let any = trigger(
            true,
            vec![("X-Device", m("mobile-(.*)", false))],
            vec![("k", m("^v$", false))],
            "/m/$tyk_context.trigger-0-X-Device-0-0/$1",
        );
        let rw = one("/a/(.*)", "/plain/$1", vec![any]);
        assert_eq!(run(&rw, "/a/x", &hs).as_deref(), Some("/m/ios/x"), "header alone fires `any`");
        assert_eq!(
            run(&rw, "/a/x?k=v", &none).as_deref(),
            Some("/m//x?k=v"),
            "query alone fires `any`; no header capture"
        );
        assert_eq!(run(&rw, "/a/x", &none).as_deref(), Some("/plain/x"));
        let all = trigger(false, vec![("X-Device", m("mobile", false))], vec![("k", m("^v$", false))], "/both");
        let rw = one("/a/(.*)", "/plain/$1", vec![all]);
        assert_eq!(run(&rw, "/a/x", &hs).as_deref(), Some("/plain/x"), "`all` needs the query too");
        assert_eq!(run(&rw, "/a/x?k=v", &hs).as_deref(), Some("/both"));
        let rev = trigger(true, vec![("X-Device", m("mobile", true))], vec![], "/not-mobile");
        let rw = one("/a/(.*)", "/plain/$1", vec![rev]);
        assert_eq!(run(&rw, "/a/x", &hs).as_deref(), Some("/plain/x"));
        assert_eq!(run(&rw, "/a/x", &HeaderList::new(&[("X-Device", b"desktop")])).as_deref(), Some("/not-mobile"));
        assert_eq!(run(&rw, "/a/x", &none).as_deref(), Some("/plain/x"), "reverse: the header must be there");
        // Context values are query-escaped unless they start with http.
        let esc = trigger(true, vec![("X-Q", m(".*", false))], vec![], "/q/$tyk_context.trigger-0-X-Q-0");
        let rw = one("/a", "/plain", vec![esc]);
        assert_eq!(run(&rw, "/a", &HeaderList::new(&[("X-Q", b"a b/c")])).as_deref(), Some("/q/a+b%2Fc"));
        // An `all` trigger with no options fires (Tyk: total 0 == set 0).
        let empty = trigger(false, vec![], vec![], "/always");
        assert_eq!(run(&one("/a", "/plain", vec![empty]), "/a", &none).as_deref(), Some("/always"));
    }

    #[test]
    fn header_names_are_canonical_as_gos() {
        assert_eq!(canonical_header_name("x-device-ID"), "X-Device-Id");
        assert_eq!(canonical_header_name("bad name"), "bad name");
    }
}
