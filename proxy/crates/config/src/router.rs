//! Route lookup: (Host, path) -> API index. Pure data, built on the control plane with each
//! snapshot and read by workers; it must not allocate or lock per lookup.
//!
//! Rules (Tyk's): APIs with a `domain` are tried before path-only APIs; the longest listen path
//! wins; a listen path matches only at segment boundaries, so `/app` matches `/app` and `/app/x`
//! but never `/apple`. Lookup walks the request path's `/` boundaries from the longest prefix
//! down and probes a hash map at each, so its cost grows with path depth, not with the number of
//! APIs: about 50 ns per lookup with 10 or 1,000 APIs (`cargo bench -p portcullis-bench --bench
//! router`, 2026-11-23).

use ahash::AHashMap;

/// Index into the snapshot's `apis`.
pub type ApiIndex = u32;

#[derive(Debug, Default, Clone)]
struct PathTable {
    by_prefix: AHashMap<Box<str>, ApiIndex>,
}

impl PathTable {
    fn lookup(&self, path: &str) -> Option<ApiIndex> {
        if self.by_prefix.is_empty() {
            return None;
        }
        let mut candidate = path;
        loop {
            if let Some(&i) = self.by_prefix.get(candidate) {
                return Some(i);
            }
            if candidate.is_empty() {
                return None;
            }
            // Drop the last segment: "/a/b/" -> "/a/b", "/a/b" -> "/a", "/a" -> "".
            candidate = match candidate.rfind('/') {
                Some(i) => &candidate[..i],
                None => "",
            };
        }
    }
}

/// Routing table for one snapshot.
#[derive(Debug, Default, Clone)]
pub struct Router {
    by_domain: AHashMap<Box<str>, PathTable>,
    any_domain: PathTable,
}

/// Why a route could not be added.
#[derive(Debug, PartialEq, Eq)]
pub struct DuplicateRoute {
    pub existing: ApiIndex,
}

impl Router {
    /// Adds a route; `domain` must be lower case without port, `listen_path` normalised (no
    /// trailing slash, root = "").
    pub fn add(&mut self, domain: Option<&str>, listen_path: &str, api: ApiIndex) -> Result<(), DuplicateRoute> {
        let table = match domain {
            Some(d) => self.by_domain.entry(d.into()).or_default(),
            None => &mut self.any_domain,
        };
        if let Some(&existing) = table.by_prefix.get(listen_path) {
            return Err(DuplicateRoute { existing });
        }
        table.by_prefix.insert(listen_path.into(), api);
        Ok(())
    }

    /// Finds the API for a request. `host` is the Host header as sent (any case, maybe a port);
    /// `path` is the request target's path, without the query.
    pub fn lookup(&self, host: Option<&[u8]>, path: &str) -> Option<ApiIndex> {
        if !self.by_domain.is_empty() {
            if let Some(host) = host {
                let mut buf = [0u8; 256];
                if let Some(h) = normalise_host(host, &mut buf) {
                    if let Some(t) = self.by_domain.get(h) {
                        if let Some(i) = t.lookup(path) {
                            return Some(i);
                        }
                    }
                }
            }
        }
        self.any_domain.lookup(path)
    }
}

/// Lower-cases `host` and strips a port, into `buf`. `None` if it does not fit or is not UTF-8.
fn normalise_host<'a>(host: &[u8], buf: &'a mut [u8; 256]) -> Option<&'a str> {
    let end = if host.first() == Some(&b'[') {
        host.iter().position(|&b| b == b']').map_or(host.len(), |i| i + 1)
    } else {
        match host.iter().rposition(|&b| b == b':') {
            Some(i) if host[i + 1..].iter().all(u8::is_ascii_digit) => i,
            _ => host.len(),
        }
    };
    let host = &host[..end];
    if host.len() > buf.len() {
        return None;
    }
    for (d, s) in buf.iter_mut().zip(host) {
        *d = s.to_ascii_lowercase();
    }
    std::str::from_utf8(&buf[..host.len()]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(Option<&str>, &str)]) -> Router {
        let mut r = Router::default();
        for (i, (d, p)) in routes.iter().enumerate() {
            r.add(*d, p, i as u32).unwrap();
        }
        r
    }

    #[test]
    fn segment_boundaries_and_longest_prefix() {
        let r = router(&[(None, "/app"), (None, "/app/v2"), (None, "/other")]);
        assert_eq!(r.lookup(None, "/app"), Some(0));
        assert_eq!(r.lookup(None, "/app/"), Some(0));
        assert_eq!(r.lookup(None, "/app/x/y"), Some(0));
        assert_eq!(r.lookup(None, "/app/v2/x"), Some(1));
        assert_eq!(r.lookup(None, "/app/v2"), Some(1));
        assert_eq!(r.lookup(None, "/apple"), None);
        assert_eq!(r.lookup(None, "/app/v22"), Some(0));
        assert_eq!(r.lookup(None, "/"), None);
    }

    #[test]
    fn root_catches_all() {
        let r = router(&[(None, ""), (None, "/a")]);
        assert_eq!(r.lookup(None, "/zzz"), Some(0));
        assert_eq!(r.lookup(None, "/a/b"), Some(1));
    }

    #[test]
    fn domains_first_then_path_only() {
        let r = router(&[(None, "/api"), (Some("example.com"), "/api"), (Some("example.com"), "/x")]);
        assert_eq!(r.lookup(Some(b"Example.com:8080"), "/api/1"), Some(1));
        assert_eq!(r.lookup(Some(b"other.com"), "/api/1"), Some(0));
        assert_eq!(r.lookup(None, "/api/1"), Some(0));
        // A domain API that does not match the path falls through to path-only APIs.
        assert_eq!(r.lookup(Some(b"example.com"), "/nope"), None);
        assert_eq!(r.lookup(Some(b"example.com"), "/x"), Some(2));
    }

    #[test]
    fn duplicates_are_refused() {
        let mut r = router(&[(None, "/a")]);
        assert_eq!(r.add(None, "/a", 5), Err(DuplicateRoute { existing: 0 }));
        assert!(r.add(Some("h"), "/a", 5).is_ok());
    }
}
