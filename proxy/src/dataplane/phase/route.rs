//! Phase `route`: the request's canonical path (`portcullis_http1::path`), then the API it goes
//! to (`Router`: host and path). Every later phase, the record and the upstream see only this
//! path.

use std::borrow::Cow;

use portcullis_http1::{path, Request, TargetForm};

use crate::config::Snapshot;
use crate::dataplane::error::{ErrorKind, ProxyError};
use crate::router::ApiIndex;

/// Where a request goes.
pub(crate) enum Route<'a> {
    /// To this API; the canonical path.
    Api(ApiIndex, &'a str),
    /// No API matches (or the target has no path to route: `*`, authority form).
    NoRoute,
}

/// Routes `req`. A path that is not already canonical is rewritten into `path_buf` (pooled with
/// the exchange), so the phases after a control-plane round trip still have it.
pub(crate) fn route<'a>(snap: &Snapshot, req: &Request<'a>, path_buf: &'a mut String) -> Result<Route<'a>, ProxyError> {
    if req.head.form == TargetForm::Other {
        return Ok(Route::NoRoute);
    }
    let path: &'a str = match path::canonical(req.raw_path) {
        Ok(Cow::Borrowed(p)) => p,
        Ok(Cow::Owned(p)) => {
            *path_buf = p;
            path_buf
        }
        Err(e) => return Err(ProxyError::new(ErrorKind::BadRequest, e)),
    };
    Ok(match snap.router.lookup(req.host, path) {
        Some(api) => Route::Api(api, path),
        None => Route::NoRoute,
    })
}
