//! Phase `rewrite`: Tyk's URL rewrite (`url_rewrites`), after the header transforms as in Tyk's
//! chain (gateway/api_loader.go:656-659: TransformHeaders, then URLRewriteMiddleware), so after
//! the path lists, auth, limits and quota, which all saw the request's own path. Its result is the
//! path and query the upstream gets and, for an absolute `http://` `rewrite_to`, the target it
//! goes to; `upstream_head` writes it. APIs without rewrites never come here.

use portcullis_http1::Request;

use super::transform::Edits;
use crate::auth::{Denial, Refusal};
use crate::config::ApiSpec;
use crate::rewrite::{Failed, Request as View, Rewritten};

/// The rewrite of `req` (canonical `path`, `rel_path` below the listen path) on `api`, if one
/// applies; a URL that matched only unescaped and does not unescape is refused with Tyk's 500.
pub(crate) fn rewrite(
    api: &ApiSpec,
    req: &Request<'_>,
    edits: &Edits<'_>,
    path: &str,
    rel_path: &str,
    client: std::net::IpAddr,
) -> Result<Option<Rewritten>, Denial> {
    let Some(rw) = &api.rewrites else { return Ok(None) };
    // The query as the upstream would get it: Tyk rewrites `r.URL` after StripAuth and the
    // version strip changed it.
    let mut query = Vec::new();
    edits.write_query(&mut query, req.query);
    let query = String::from_utf8_lossy(&query);
    let context = edits.context(req, path, client);
    let view = View {
        method: req.method,
        rel_path,
        path,
        query: &query,
        headers: req.headers,
        session: edits.allowed.session.as_deref(),
        context: Some(&context),
    };
    rw.apply(&view).map_err(|Failed::Undecodable| Denial {
        kind: Refusal::Status(500),
        message: "failed to decode URL path".into(),
        ..Default::default()
    })
}
