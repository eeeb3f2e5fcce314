//! A rule of an API that applies to some methods on some paths below its listen path: the auth
//! path lists (`white_list`, `black_list`, `ignored`), header transforms and endpoint rate
//! limits all match requests this way. Its own module so that `auth` and `limit`, which both
//! use it, depend on neither each other for it.

/// A path rule of `white_list` / `black_list` / `ignored` / `transform_headers` /
/// `rate_limit` entries.
#[derive(Debug, Clone)]
pub struct PathRule {
    /// Matched from the start of the path below the listen path (Tyk's `{name}` segments become
    /// `[^/]+`).
    pub pattern: regex::Regex,
    /// Upper case; empty: any method.
    pub methods: Vec<String>,
}

impl PathRule {
    pub fn matches(&self, method: &str, rel_path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && self.pattern.is_match(rel_path)
    }
}
