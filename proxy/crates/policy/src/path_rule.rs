//! A rule of an API that applies to some methods on some paths: the auth path lists
//! (`white_list`, `black_list`, `ignored`), header transforms and endpoint rate limits all match
//! requests this way, as Tyk's extended paths do. Its own module so that `auth` and `limit`,
//! which both use it, depend on neither each other for it.

/// A path rule of `white_list` / `black_list` / `ignored` / `transform_headers` /
/// `rate_limit` entries, compiled from Tyk's path syntax by [`tyk_pattern`].
#[derive(Debug, Clone)]
pub struct PathRule {
    pub pattern: regex::Regex,
    pub methods: Methods,
}

/// Which request methods a rule applies to. Compared exactly (Tyk: `r.Method ==`), so `get`
/// is not `GET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Methods {
    /// No method given (legacy `paths` lists, an entry without `method`).
    Any,
    /// Only these; an empty list (Tyk's `"method_actions": {}`) matches nothing.
    Only(Vec<String>),
}

impl PathRule {
    /// Matches `method` and either the path below the listen path or the whole path, as Tyk's
    /// `URLSpec.matchesPath` tries both (gateway/model_urlspec.go:190-206).
    pub fn matches(&self, method: &str, rel_path: &str, path: &str) -> bool {
        let method_ok = match &self.methods {
            Methods::Any => true,
            Methods::Only(m) => m.iter().any(|m| m == method),
        };
        method_ok && (self.pattern.is_match(rel_path) || self.pattern.is_match(path))
    }
}

/// How Tyk's path patterns become regular expressions: its gateway settings
/// `http_server_options.enable_path_prefix_matching` / `enable_path_suffix_matching` and
/// `ignore_endpoint_case`, all off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathMatching {
    pub prefix: bool,
    pub suffix: bool,
    pub ignore_case: bool,
}

/// Tyk's `PreparePathRegexp` (internal/httputil/mux.go:66-101) plus its case flag
/// (gateway/api_definition.go:940-962): `{name}` becomes `([^/]+)`, `/*/` `/[^/]+/` and `/*`
/// `/.*`; `^` is put before a pattern starting with `/` only with prefix matching and `$` after
/// it only with suffix matching. So by default a pattern is searched anywhere in the path: a
/// `/admin` black list also blocks `/v1/admin`.
pub fn tyk_pattern(path: &str, m: PathMatching, ignore_case: bool) -> String {
    let mut p = if is_mux_template(path) { replace_params(path) } else { path.to_string() };
    if p.contains("/*") {
        p = p.replace("/*/", "/[^/]+/").replace("/*", "/.*");
    }
    if m.prefix && p.starts_with('/') {
        p.insert(0, '^');
    }
    if m.suffix && !p.ends_with('$') {
        p.push('$');
    }
    if ignore_case || m.ignore_case {
        p.insert_str(0, "(?i)");
    }
    p
}

/// gorilla/mux's `IsMuxTemplate` as Tyk uses it: braces present and balanced.
fn is_mux_template(s: &str) -> bool {
    let open = s.matches('{').count();
    open > 0 && open == s.matches('}').count()
}

/// `{[^}]+}` -> `([^/]+)`, left to right, as Go's `ReplaceAllString` does.
fn replace_params(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        match rest[open + 1..].find('}') {
            Some(len) if len > 0 => {
                out.push_str(&rest[..open]);
                out.push_str("([^/]+)");
                rest = &rest[open + 1 + len + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str, m: PathMatching, methods: Methods) -> PathRule {
        PathRule { pattern: regex::Regex::new(&tyk_pattern(path, m, false)).unwrap(), methods }
    }

    #[test]
    fn patterns_are_translated_as_tyks_prepare_path_regexp() {
        let d = PathMatching::default();
        assert_eq!(tyk_pattern("/users/{id}/x", d, false), "/users/([^/]+)/x");
        assert_eq!(tyk_pattern("/a/*/b/*", d, false), "/a/[^/]+/b/.*");
        assert_eq!(
            tyk_pattern("/admin", PathMatching { prefix: true, suffix: true, ignore_case: false }, false),
            "^/admin$"
        );
        assert_eq!(tyk_pattern("admin", PathMatching { prefix: true, ..d }, false), "admin", "no leading / : no ^");
        assert_eq!(tyk_pattern("/a$", PathMatching { suffix: true, ..d }, false), "/a$");
        assert_eq!(tyk_pattern("/a", d, true), "(?i)/a");
        assert_eq!(tyk_pattern("/a{2}", d, false), "/a([^/]+)", "Tyk reads any braces as a parameter");
    }

    /// The default (Tyk's `config.Default`): searched anywhere, in the path below the listen
    /// path or the whole path; methods exact.
    #[test]
    fn rules_match_as_tyk_matches_them_by_default() {
        let d = PathMatching::default();
        let admin = rule("/admin", d, Methods::Any);
        assert!(admin.matches("GET", "/v1/admin", "/api/v1/admin"), "/v1/admin does not get past /admin");
        assert!(admin.matches("GET", "/admin/x", "/api/admin/x"));
        assert!(!admin.matches("GET", "/Admin", "/api/Admin"));
        let health = rule("/health/*", d, Methods::Any);
        assert!(!health.matches("GET", "/healthz-admin", "/api/healthz-admin"), "/* is /.*, not /*");
        assert!(health.matches("GET", "/health/live", "/api/health/live"));
        let listen = rule("/api/admin", d, Methods::Any);
        assert!(listen.matches("GET", "/admin", "/api/admin"), "the whole path is tried too");
        let get = rule("/x", d, Methods::Only(vec!["GET".into()]));
        assert!(
            get.matches("GET", "/x", "/p/x") && !get.matches("get", "/x", "/p/x") && !get.matches("POST", "/x", "/p/x")
        );
        let none = rule("/x", d, Methods::Only(Vec::new()));
        assert!(!none.matches("GET", "/x", "/p/x"), "method_actions {{}} matches nothing");
        let exact = rule("/admin", PathMatching { prefix: true, suffix: true, ignore_case: false }, Methods::Any);
        assert!(exact.matches("GET", "/admin", "/api/admin") && !exact.matches("GET", "/v1/admin", "/api/v1/admin"));
        let ci =
            PathRule { pattern: regex::Regex::new(&tyk_pattern("/admin", d, true)).unwrap(), methods: Methods::Any };
        assert!(ci.matches("GET", "/ADMIN", "/api/ADMIN"));
    }
}
