//! Phase `transform`: the header edits of an allowed request, worked out before the upstream
//! head is written: global and per-path `transform_headers` (removals and additions, templates
//! expanded with `$tyk_context` / `$tyk_meta`), the auth data `strip_auth_data` removes, and the
//! request id templates may name. `upstream_head` applies them while it writes the head.

use portcullis_http1::Request;

use crate::auth::{self, transform, Allowed, ApiAuth, HeaderTransform};

/// The edits one request gets.
pub(crate) struct Edits<'a> {
    pub(crate) allowed: &'a Allowed<'a>,
    auth: &'a ApiAuth,
    per_path: Vec<&'a HeaderTransform>,
    /// The client's `X-Request-Id`, or the one generated for the request.
    pub(crate) request_id: &'a [u8],
}

/// The edits for `req` (its canonical `path`, `rel_path` below the listen path).
pub(crate) fn edits<'a>(
    auth: &'a ApiAuth,
    allowed: &'a Allowed<'a>,
    req: &Request<'a>,
    path: &str,
    rel_path: &str,
    request_id: &'a [u8],
) -> Edits<'a> {
    let per_path = auth.transforms.per_path.iter().filter(|x| x.rule.matches(req.method, rel_path, path)).collect();
    Edits { allowed, auth, per_path, request_id }
}

impl<'a> Edits<'a> {
    /// Added headers: global first, then per path; a later one replaces an earlier one of the
    /// same name.
    pub(crate) fn adds(&self) -> impl Iterator<Item = &'a (String, transform::Template)> + '_ {
        let t = &self.auth.transforms;
        t.global_add.iter().chain(self.per_path.iter().flat_map(|x| x.add.iter()))
    }

    /// Whether a client header named `n` is left out of the upstream head.
    pub(crate) fn removes(&self, n: &[u8]) -> bool {
        let named = |x: &str| n.eq_ignore_ascii_case(x.as_bytes());
        let t = &self.auth.transforms;
        self.allowed.strip.headers.iter().flatten().any(|h| named(h))
            || t.global_remove.iter().any(|x| named(x))
            || self.per_path.iter().any(|x| x.delete.iter().any(|d| named(d)))
            || self.adds().any(|(a, _)| named(a))
    }

    /// What templates may expand.
    pub(crate) fn context(&self, req: &Request<'a>, path: &'a str, client: std::net::IpAddr) -> transform::Context<'a> {
        transform::Context {
            headers: req.headers,
            path,
            remote_addr: client,
            request_id: self.request_id,
            token: self.allowed.token,
            claims: self.allowed.claims.as_deref(),
            session: self.allowed.session.as_deref(),
        }
    }

    pub(crate) fn tag_headers(&self) -> &'a [String] {
        &self.auth.transforms.tag_headers
    }

    /// The query as the upstream gets it (without the version parameter when
    /// `strip_versioning_data` says so, then without the credential parameter when stripped).
    pub(crate) fn write_query(&self, out: &mut Vec<u8>, query: &str) {
        let reencoded;
        let query = match &self.auth.strip_version_param {
            Some(p) => {
                reencoded = crate::version::query_encoded_without(query, p);
                reencoded.as_str()
            }
            None => query,
        };
        match self.allowed.strip.param {
            Some(p) => out.extend_from_slice(auth::token::query_without(query, p).as_bytes()),
            None => out.extend_from_slice(query.as_bytes()),
        }
    }

    /// The cookie whose credential is stripped, if any.
    pub(crate) fn stripped_cookie(&self) -> Option<&'a str> {
        self.allowed.strip.cookie
    }
}
