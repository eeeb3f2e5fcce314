//! Phase `route`: the request's canonical path (`portcullis_http1::path`), then the API it goes
//! to (`Router`: host and path), and on a versioned API the version it is for
//! (`version::Versioning`, Tyk's classic versioning: served as that version's own compiled API,
//! or refused as Tyk refuses it, before any other check as Tyk's VersionCheck comes first,
//! gateway/api_loader.go:414). Every later phase, the record and the upstream see only this path
//! (without the version segment when `strip_versioning_data` takes it out).

use std::borrow::Cow;

use portcullis_http1::{path, Request, TargetForm};

use crate::auth::{Denial, Refusal};
use crate::config::Snapshot;
use crate::dataplane::error::{ErrorKind, ProxyError};
use crate::router::ApiIndex;

/// Where a request goes.
pub(crate) enum Route<'a> {
    /// To this API (a version's, on a versioned API); the canonical path.
    Api(ApiIndex, &'a str),
    /// A versioned API that has no version for the request, or an expired API (Tyk's 403s).
    Refused(ApiIndex, &'a str, Denial),
    /// No API matches (or the target has no path to route: `*`, authority form).
    Unrouted,
}

/// Routes `req`. A path that is not already canonical, or that loses its version segment, is
/// written into `path_buf` (pooled with the exchange), so the phases after a control-plane round
/// trip still have it. `now` (Unix seconds) is read only for a version that expires.
pub(crate) fn route<'a>(
    snap: &Snapshot,
    req: &Request<'a>,
    path_buf: &'a mut String,
    now: &dyn Fn() -> u64,
) -> Result<Route<'a>, ProxyError> {
    if req.head.form == TargetForm::Other {
        return Ok(Route::Unrouted);
    }
    let mut path: Cow<'a, str> = match path::canonical(req.raw_path) {
        Ok(p) => p,
        Err(e) => return Err(ProxyError::new(ErrorKind::BadRequest, e)),
    };
    let Some(mut api) = snap.router.lookup(req.host, &path) else {
        return Ok(Route::Unrouted);
    };
    let spec = snap.api(api);
    let mut refused = None;
    // Tyk's `expiration` of a non-versioned API (gateway/api_definition.go:2373-2374, 2396-2409).
    if spec.expired_after.is_some_and(|at| now() >= at) {
        let message = "API has expired, please check documentation or contact administrator";
        refused = Some(Denial { kind: Refusal::Forbidden, message: message.into(), ..Default::default() });
    }
    if let Some(v) = spec.versioning.as_deref() {
        match v.resolve(req.headers, req.query, &path, spec.listen_path.len(), now) {
            Ok(r) => {
                api = r.index;
                if let Some(strip) = r.strip {
                    path.to_mut().replace_range(strip, "");
                }
            }
            Err(e) => {
                refused = Some(Denial { kind: Refusal::Forbidden, message: e.message().into(), ..Default::default() })
            }
        }
    }
    let path: &'a str = match path {
        Cow::Borrowed(p) => p,
        Cow::Owned(p) => {
            *path_buf = p;
            path_buf
        }
    };
    Ok(match refused {
        None => Route::Api(api, path),
        Some(d) => Route::Refused(api, path, d),
    })
}
