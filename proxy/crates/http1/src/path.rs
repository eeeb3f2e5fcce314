//! The one canonical form of a request path. Routing, the auth path lists, `allowed_urls`,
//! endpoint rate limits, records and the upstream request all see this form, never the bytes
//! the client sent: a rule on `/admin` must not be passed by `//admin`, `/./admin`,
//! `/x/../admin`, `/%61dmin` or `/%2e/admin`, which a backend then resolves to `/admin`.
//!
//! - Percent-encoded unreserved characters (RFC 3986 2.3: `A-Z a-z 0-9 - . _ ~`) are decoded;
//!   every other escape is kept, with upper-case hex digits (`%3a` and `%3A` are one path).
//! - Dot segments are resolved (RFC 3986 5.2.4; `..` never climbs above the root) and runs of
//!   slashes merged: what nginx does before it matches a location, and what Tyk's router does by
//!   default (gorilla/mux path cleaning, off only with `http_server_options.skip_url_cleaning`;
//!   Tyk answers a 301 to the clean path, Portcullis forwards the clean path).
//! - Refused (400): an encoded `/` or `\` (`%2F`, `%5C`: one backend decodes it into a separator
//!   and another does not, so no rule can be matched on what the backend will see), an encoded
//!   NUL, and a `%` not followed by two hex digits.
//!
//! The query is not part of the path and is not touched.

use std::borrow::Cow;

/// The canonical form of `path` (which starts with `/`), borrowed when `path` already is one.
/// `Err` carries the reason a request with this path is refused.
pub fn canonical(path: &str) -> Result<Cow<'_, str>, &'static str> {
    if is_canonical(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path.as_bytes())?;
    let out = remove_dot_segments(&decoded);
    String::from_utf8(out).map(Cow::Owned).map_err(|_| "path is not valid UTF-8 once decoded")
}

/// No escape, no empty segment and no dot segment: nearly every request, checked in one pass
/// without allocating.
fn is_canonical(p: &[u8]) -> bool {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'%' => return false,
            b'/' => match p.get(i + 1) {
                Some(b'/') => return false,
                // `/.` ends the path or starts `/./` or `/../` (or `/..` at the end); other
                // segments merely starting with a dot (`/.well-known`) are canonical.
                Some(b'.') => {
                    let seg_end = p[i + 1..].iter().position(|&b| b == b'/').map_or(p.len(), |n| i + 1 + n);
                    let seg = &p[i + 1..seg_end];
                    if seg == b"." || seg == b".." {
                        return false;
                    }
                }
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    true
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn decode_unreserved(p: &[u8]) -> Result<Vec<u8>, &'static str> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        let b = p[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (p.get(i + 1).copied().and_then(hex_val), p.get(i + 2).copied().and_then(hex_val))
        else {
            return Err("malformed percent-encoding in path");
        };
        let v = hi << 4 | lo;
        match v {
            b'/' | b'\\' => return Err("encoded slash in path"),
            0 => return Err("encoded NUL in path"),
            v if is_unreserved(v) => out.push(v),
            v => out.extend_from_slice(&[b'%', HEX[usize::from(v >> 4)], HEX[usize::from(v & 15)]]),
        }
        i += 3;
    }
    Ok(out)
}

/// Resolves `.` and `..` segments and merges empty ones; a path ending in a slash, `.` or `..`
/// keeps its trailing slash.
fn remove_dot_segments(p: &[u8]) -> Vec<u8> {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    let body = p.strip_prefix(b"/").unwrap_or(p);
    let mut segments = body.split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            b"" | b"." => {}
            b".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
        if last {
            trailing_slash = matches!(seg, b"" | b"." | b"..");
        }
    }
    let mut out = Vec::with_capacity(p.len());
    for s in &kept {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if trailing_slash || kept.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in ["/", "/a", "/a/b/", "/.well-known/x", "/a/.hidden", "/a/..b", "/a/b.c", "/a..", "/~u/x-y_z"] {
            assert!(matches!(canonical(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn every_known_bypass_of_a_rule_on_admin_becomes_admin() {
        for p in [
            "//admin",
            "/./admin",
            "/x/../admin",
            "/%61dmin",
            "/%2e/admin",
            "/%2E%2E/admin",
            "///./admin",
            "/a/b/../../admin",
            "/../admin",
            "/%2e%2e/%2e%2e/admin",
            "/adm%69n",
            "/admin/.",
            "/admin/x/..",
        ] {
            let c = canonical(p).unwrap();
            assert!(c == "/admin" || c == "/admin/", "{p} -> {c}");
        }
    }

    #[test]
    fn rewrites() {
        for (p, want) in [
            ("/a//b///c", "/a/b/c"),
            ("/a/./b/../c/", "/a/c/"),
            ("/a/..", "/"),
            ("/..", "/"),
            ("/a/%7euser", "/a/~user"),
            ("/a%3ab", "/a%3Ab"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/a/%2e%2E", "/"),
            ("/%2e", "/"),
            ("/a/b/.", "/a/b/"),
        ] {
            assert_eq!(canonical(p).unwrap(), want, "{p}");
        }
    }

    #[test]
    fn ambiguous_encodings_are_refused() {
        for p in ["/%2fadmin", "/%2Fadmin", "/a%5cb", "/a%5C..%5Cadmin", "/a%00", "/a%", "/a%2", "/a%zz", "/a%g1"] {
            assert!(canonical(p).is_err(), "{p}");
        }
    }
}
