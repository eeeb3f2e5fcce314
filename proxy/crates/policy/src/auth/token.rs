//! Where a credential is read from: a header (with `Bearer ` stripped), a query parameter or a
//! cookie, as Tyk's `auth` / `auth_configs` blocks say. Must not: allocate on the request path
//! (results borrow from the request head).

#[cfg(test)]
use portcullis_http1::HeaderList;
use portcullis_http1::Headers;

/// Tyk's `auth_configs.<method>` / `auth` block, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSource {
    /// Header name (default `Authorization`).
    pub header: String,
    /// Query parameter, when `use_param` is set (default name: the header name).
    pub param: Option<String>,
    /// Cookie, when `use_cookie` is set (default name: the header name).
    pub cookie: Option<String>,
}

impl Default for CredentialSource {
    fn default() -> Self {
        CredentialSource { header: "Authorization".into(), param: None, cookie: None }
    }
}

/// Where a credential was found (so `strip_auth_data` can remove exactly that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Header,
    Param,
    Cookie,
}

/// The credential of `src` in this request, with `Bearer ` stripped, or `None` when absent/empty.
pub fn find<'a>(src: &CredentialSource, headers: Headers<'a>, query: &'a str) -> Option<(&'a str, Found)> {
    if let Some(v) = header(headers, &src.header) {
        let v = strip_bearer(v);
        if !v.is_empty() {
            return Some((v, Found::Header));
        }
    }
    if let Some(p) = &src.param {
        if let Some(v) = query_param(query, p).filter(|v| !v.is_empty()) {
            return Some((v, Found::Param));
        }
    }
    if let Some(c) = &src.cookie {
        if let Some(v) = headers
            .iter()
            .filter(|h| h.is("cookie"))
            .find_map(|h| cookie(std::str::from_utf8(h.value).ok()?, c))
            .filter(|v| !v.is_empty())
        {
            return Some((v, Found::Cookie));
        }
    }
    None
}

/// First header `name` as trimmed UTF-8.
pub fn header<'a>(headers: Headers<'a>, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| std::str::from_utf8(v).ok()).map(str::trim)
}

/// `Bearer abc` -> `abc` (case-insensitive scheme, as Tyk).
pub fn strip_bearer(v: &str) -> &str {
    if v.eq_ignore_ascii_case("bearer") {
        return "";
    }
    match v.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => v[7..].trim(),
        _ => v,
    }
}

/// Value of `name` in `?a=b&c=d` (raw, not percent-decoded; keys are opaque tokens).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.trim_start_matches('?').split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// Value of cookie `name` in a `Cookie` header value.
pub fn cookie<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v.trim_matches('"'))
    })
}

/// `query` without parameter `name` (`""` when nothing is left).
pub fn query_without(query: &str, name: &str) -> String {
    let kept: Vec<&str> = query
        .trim_start_matches('?')
        .split('&')
        .filter(|kv| !kv.is_empty() && kv.split_once('=').map_or(*kv, |(k, _)| k) != name)
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

/// A `Cookie` header value without cookie `name` (`None` when nothing is left).
pub fn cookie_without(value: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && kv.split_once('=').map_or(*kv, |(k, _)| k) != name)
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(pairs: &[(&str, &str)]) -> HeaderList {
        HeaderList::new(&pairs.iter().map(|(n, v)| (*n, v.as_bytes())).collect::<Vec<_>>())
    }

    #[test]
    fn header_param_cookie_in_order() {
        let src =
            CredentialSource { header: "X-Api-Key".into(), param: Some("key".into()), cookie: Some("sid".into()) };
        let both = hs(&[("x-api-key", " Bearer abc "), ("Cookie", "a=1; sid=zzz")]);
        let cookie = hs(&[("Cookie", "a=1; sid=zzz")]);
        assert_eq!(find(&src, both.view(), "?key=q"), Some(("abc", Found::Header)));
        assert_eq!(find(&src, cookie.view(), "?x=1&key=q"), Some(("q", Found::Param)));
        assert_eq!(find(&src, cookie.view(), ""), Some(("zzz", Found::Cookie)));
        assert_eq!(find(&src, hs(&[]).view(), "?key="), None);
        assert_eq!(find(&CredentialSource::default(), hs(&[("Authorization", "Bearer ")]).view(), ""), None);
    }

    #[test]
    fn stripping_helpers() {
        assert_eq!(query_without("?a=1&key=2&b", "key"), "?a=1&b");
        assert_eq!(query_without("?key=2", "key"), "");
        assert_eq!(cookie_without("a=1; sid=2", "sid").as_deref(), Some("a=1"));
        assert_eq!(cookie_without("sid=2", "sid"), None);
        assert_eq!(strip_bearer("bearer x"), "x");
        assert_eq!(strip_bearer("Basic x"), "Basic x");
    }
}
