//! Tyk's classic API versioning (`version_data.not_versioned: false`): which of an API's versions
//! a request is for (a header, a query parameter or the first path segment below the listen
//! path, else `default_version`), whether that version exists and has expired, and what of the
//! version a URL-versioned request's path loses (`strip_versioning_data`). As Tyk's
//! `getVersionFromRequest` and `Version` (gateway/api_definition.go:2283-2462) and
//! `RequestValid`'s expiry check (api_definition.go:2372-2377).
//!
//! Plain data and a pure function: the caller passes the time, and `config` builds
//! [`Versioning`] from the definition (each version's middleware lists are that version's own
//! compiled API, addressed by [`Version::index`]).

use std::borrow::Cow;
use std::ops::Range;

use portcullis_http1::Headers;

/// `definition.location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Absent or empty: Tyk reads no version from the request; every request gets
    /// `default_version` (api_definition.go:2295-2346 matches no case).
    None,
    /// `header`: the first value of header `key`.
    Header,
    /// `url-param`: the first value of query parameter `key`, decoded.
    Param,
    /// `url`: the first non-empty path segment below the listen path.
    Url,
}

/// How a versioned API finds a request's version.
#[derive(Debug, Clone)]
pub struct Versioning {
    pub location: Location,
    /// `definition.key`: the header or query parameter name.
    pub key: String,
    /// URL versions: `strip_versioning_data` or `strip_path` (the version segment is taken out
    /// of the path, api_definition.go:2326-2331). Header and parameter versions are stripped by
    /// the version's own compiled API (a header removal, a query re-encoding).
    pub strip_url: bool,
    /// `definition.url_versioning_pattern`: a URL version segment is stripped only when it
    /// matches (it is the version either way).
    pub url_pattern: Option<regex::Regex>,
    /// The definition's `slug`: trimmed (as `/` + slug) from the path below the listen path
    /// before the version segment is looked for, as Tyk does (api_definition.go:2318).
    pub slug: String,
    /// `version_data.default_version` (empty: none).
    pub default: String,
    /// `definition.fallback_to_default`: an unknown version is served as the default one.
    pub fallback_to_default: bool,
    pub versions: Vec<Version>,
}

/// One version of a versioned API.
#[derive(Debug, Clone)]
pub struct Version {
    /// Its key in `version_data.versions`.
    pub name: String,
    /// Where the version's own compiled API is (the caller's index).
    pub index: u32,
    /// `expires` as Unix seconds: the version is refused from then on (`None`: never).
    pub expires: Option<u64>,
}

/// Why a request gets no version: Tyk answers each 403 with its message (mw_version_check.go:113
/// returns `RequestValid`'s status with `http.StatusForbidden`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionError {
    /// No version in the request and no `default_version`.
    NotFound,
    /// A version the API does not have.
    DoesNotExist,
    /// The version's `expires` has passed.
    Expired,
}

impl VersionError {
    /// Tyk's words (gateway/api_definition.go:95-98).
    pub fn message(self) -> &'static str {
        match self {
            VersionError::NotFound => "Version information not found",
            VersionError::DoesNotExist => "This API version does not seem to exist",
            VersionError::Expired => "Api Version has expired, please check documentation or contact administrator",
        }
    }
}

/// The version a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// [`Version::index`] of the version served.
    pub index: u32,
    /// The bytes of the request's path to take out (URL versions with `strip_versioning_data`).
    pub strip: Option<Range<usize>>,
}

impl Versioning {
    /// The version of a request to this API: `path` is the whole canonical path, `rel_start`
    /// where the part below the listen path starts. `now` (Unix seconds) is read only when the
    /// version expires.
    pub fn resolve(
        &self,
        headers: Headers<'_>,
        query: &str,
        path: &str,
        rel_start: usize,
        now: impl FnOnce() -> u64,
    ) -> Result<Resolved, VersionError> {
        let mut strip = None;
        let requested: Cow<'_, [u8]> = match self.location {
            Location::None => Cow::Borrowed(&[]),
            // Go's `Header.Get`: the first value, which its reader has trimmed.
            Location::Header => Cow::Borrowed(headers.get(&self.key).map(trim).unwrap_or_default()),
            Location::Param => query_value(query, &self.key).unwrap_or(Cow::Borrowed(&[])),
            Location::Url => {
                let below = path.get(rel_start.min(path.len())..).unwrap_or("");
                // `strings.TrimPrefix(uPath, "/"+a.Slug)` (api_definition.go:2318): without a
                // slug, just the leading `/`.
                let rel = below.strip_prefix('/').and_then(|r| r.strip_prefix(self.slug.as_str())).unwrap_or(below);
                match rel.split('/').find(|p| !p.is_empty()) {
                    Some(part) => {
                        let stripped = self.strip_url && self.url_pattern.as_ref().is_none_or(|re| re.is_match(part));
                        if stripped {
                            // `strings.Replace(r.URL.Path, part+"/", "", 1)`: the first
                            // occurrence in the whole path, listen path included
                            // (api_definition.go:2326-2331); none when no `/` follows.
                            strip = path
                                .match_indices(part)
                                .find(|(i, _)| path.as_bytes().get(i + part.len()) == Some(&b'/'))
                                .map(|(i, _)| i..i + part.len() + 1);
                        }
                        Cow::Borrowed(part.as_bytes())
                    }
                    None => Cow::Borrowed(&[]),
                }
            }
        };
        let name: &[u8] = if requested.is_empty() {
            if self.default.is_empty() {
                return Err(VersionError::NotFound);
            }
            self.default.as_bytes()
        } else {
            &requested
        };
        let find = |n: &[u8]| self.versions.iter().find(|v| v.name.as_bytes() == n);
        let version = match find(name) {
            Some(v) => v,
            // api_definition.go:2442-2453.
            None if self.fallback_to_default => find(self.default.as_bytes()).ok_or(VersionError::DoesNotExist)?,
            None => return Err(VersionError::DoesNotExist),
        };
        // `time.Since(ExpiresTs) >= 0` (apidef/api_definitions.go:1424-1437).
        if version.expires.is_some_and(|at| now() >= at) {
            return Err(VersionError::Expired);
        }
        Ok(Resolved { index: version.index, strip })
    }
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// The first value of query parameter `name`, as Go's `url.Values.Get` after `ParseQuery`: pairs
/// split on `&`, a pair with `;` or a bad escape left out, `+` a space, `%XX` a byte, an empty
/// pair skipped, a pair without `=` an empty value.
pub fn query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, [u8]>> {
    go_query(query).find(|(k, _)| **k == *name.as_bytes()).map(|(_, v)| v)
}

/// `query` (`""` or `?...`) as Go's `url.Values.Encode` writes it after `Del(name)`: the pairs
/// `ParseQuery` keeps, sorted by name (stable: values keep their order), re-escaped; `""` when
/// none is left. What Tyk forwards of a URL-parameter versioned request with
/// `strip_versioning_data` (api_definition.go:2307-2314).
pub fn query_encoded_without(query: &str, name: &str) -> String {
    let mut pairs: Vec<Pair<'_>> = go_query(query).filter(|(k, _)| **k != *name.as_bytes()).collect();
    if pairs.is_empty() {
        return String::new();
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(query.len());
    for (i, (k, v)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        query_escape(&mut out, k);
        out.push('=');
        query_escape(&mut out, v);
    }
    out
}

type Pair<'q> = (Cow<'q, [u8]>, Cow<'q, [u8]>);

/// Go's `ParseQuery` pairs of `query` (`""` or `?...`), in order, decoded (see [`query_value`]).
pub(crate) fn go_query(query: &str) -> impl Iterator<Item = Pair<'_>> + '_ {
    query.strip_prefix('?').unwrap_or(query).split('&').filter_map(|pair| {
        if pair.is_empty() || pair.contains(';') {
            return None;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        Some((unescape(k)?, unescape(v)?))
    })
}

/// Go's `QueryUnescape` (`application/x-www-form-urlencoded`): `+` is a space, `%XX` a byte;
/// `None` on a bad escape.
pub fn unescape(s: &str) -> Option<Cow<'_, [u8]>> {
    let b = s.as_bytes();
    if !b.iter().any(|&c| c == b'%' || c == b'+') {
        return Some(Cow::Borrowed(b));
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let (h, l) = (hex(*b.get(i + 1)?)?, hex(*b.get(i + 2)?)?);
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(Cow::Owned(out))
}

/// Go's `QueryEscape`: letters, digits and `-_.~` as they are, a space as `+`, every other byte
/// `%XX` (upper case).
pub(crate) fn query_escape(out: &mut String, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in b {
        match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(c as char),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[(c >> 4) as usize] as char);
                out.push(HEX[(c & 15) as usize] as char);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_http1::HeaderList;

    fn api(location: Location) -> Versioning {
        Versioning {
            location,
            key: "x-api-version".into(),
            strip_url: false,
            url_pattern: None,
            slug: String::new(),
            default: String::new(),
            fallback_to_default: false,
            versions: vec![
                Version { name: "v1".into(), index: 10, expires: None },
                Version { name: "v2".into(), index: 11, expires: Some(1_000) },
            ],
        }
    }

    fn at(
        v: &Versioning,
        headers: &[(&str, &str)],
        query: &str,
        path: &str,
        now: u64,
    ) -> Result<Resolved, VersionError> {
        let h = HeaderList::new(&headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect::<Vec<_>>());
        v.resolve(h.view(), query, path, "/api".len(), || now)
    }

    fn ok(index: u32) -> Result<Resolved, VersionError> {
        Ok(Resolved { index, strip: None })
    }

    #[test]
    fn header_versions_and_the_default() {
        let mut v = api(Location::Header);
        assert_eq!(at(&v, &[("X-API-Version", " v1 ")], "", "/api/x", 0), ok(10));
        assert_eq!(at(&v, &[], "", "/api/x", 0), Err(VersionError::NotFound));
        assert_eq!(at(&v, &[("x-api-version", "")], "", "/api/x", 0), Err(VersionError::NotFound));
        assert_eq!(at(&v, &[("x-api-version", "v3")], "", "/api/x", 0), Err(VersionError::DoesNotExist));
        v.default = "v2".into();
        assert_eq!(at(&v, &[], "", "/api/x", 0), ok(11));
        v.default = "v9".into();
        assert_eq!(at(&v, &[], "", "/api/x", 0), Err(VersionError::DoesNotExist), "a default it does not have");
    }

    #[test]
    fn expiry_is_at_or_after_the_instant() {
        let v = api(Location::Header);
        assert_eq!(at(&v, &[("x-api-version", "v2")], "", "/api", 999), ok(11));
        assert_eq!(at(&v, &[("x-api-version", "v2")], "", "/api", 1_000), Err(VersionError::Expired));
    }

    #[test]
    fn fallback_to_default_serves_unknown_versions_as_the_default() {
        let mut v = api(Location::Header);
        v.fallback_to_default = true;
        assert_eq!(at(&v, &[("x-api-version", "v3")], "", "/api", 0), Err(VersionError::DoesNotExist));
        v.default = "v1".into();
        assert_eq!(at(&v, &[("x-api-version", "v3")], "", "/api", 0), ok(10));
    }

    #[test]
    fn query_parameters_decode_as_go_does() {
        let mut v = api(Location::Param);
        v.key = "version".into();
        assert_eq!(at(&v, &[], "?a=1&version=v%31", "/api", 0), ok(10));
        assert_eq!(at(&v, &[], "?version=v1&version=v2", "/api", 0), ok(10), "the first value");
        assert_eq!(at(&v, &[], "?version=v1;x&version=v2", "/api", 0), ok(11), "a pair with ; is dropped");
        assert_eq!(at(&v, &[], "?version=%zz", "/api", 0), Err(VersionError::NotFound), "bad escape: dropped");
        assert_eq!(at(&v, &[], "?Version=v1", "/api", 0), Err(VersionError::NotFound), "names are exact");
        assert_eq!(query_encoded_without("?z=1&version=v1&a=b+c&a=%2F", "version"), "?a=b+c&a=%2F&z=1");
        assert_eq!(query_encoded_without("?version=v1", "version"), "");
        assert_eq!(query_encoded_without("", "version"), "");
    }

    #[test]
    fn url_versions_are_the_first_segment_below_the_listen_path() {
        let mut v = api(Location::Url);
        assert_eq!(at(&v, &[], "", "/api/v1/users", 0), ok(10));
        assert_eq!(at(&v, &[], "", "/api//v2/", 0), ok(11));
        assert_eq!(at(&v, &[], "", "/api/users", 0), Err(VersionError::DoesNotExist));
        assert_eq!(at(&v, &[], "", "/api", 0), Err(VersionError::NotFound));
        v.strip_url = true;
        assert_eq!(at(&v, &[], "", "/api/v1/users", 0), Ok(Resolved { index: 10, strip: Some(5..8) }));
        assert_eq!(at(&v, &[], "", "/api/v1", 0), ok(10), "no `v1/` in the path: nothing stripped");
        v.url_pattern = Some(regex::Regex::new("^v[0-9]+$").unwrap());
        assert_eq!(at(&v, &[], "", "/api/v1/x", 0), Ok(Resolved { index: 10, strip: Some(5..8) }));
        v.versions[0].name = "one".into();
        assert_eq!(at(&v, &[], "", "/api/one/x", 0), ok(10), "the pattern decides the strip, not the version");
        v.slug = "api".into();
        v.versions[0].name = "v1".into();
        // `/` + slug trimmed first; then `v1/` is taken out where it first occurs: `/api/apix`.
        assert_eq!(at(&v, &[], "", "/api/apiv1/x", 0), Ok(Resolved { index: 10, strip: Some(8..11) }));
    }
}
