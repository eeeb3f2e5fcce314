//! Phase `visibility`: the request against its API's provided OpenAPI document (compiled into
//! the snapshot, `config::Visibility`). Shadow (the path or method is not in the document) and
//! zombie (a `deprecated` operation) are judged on every request: the match is a walk over the
//! document's compiled path segments, with no allocation. In `enforce` mode a shadow request is
//! refused, 404, before authentication, as Tyk's own allow lists (`white_list`) refuse before
//! it; every other verdict only tags the request's record (`record.rs`), where the visibility
//! thread counts it.

use portcullis_visibility::spec::{OpId, Route};

use crate::auth::{Denial, Refusal};
use crate::config::ApiSpec;

/// What the document says of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The API has no provided document.
    Unjudged,
    /// A documented operation.
    Documented(OpId),
    /// A `deprecated: true` operation.
    Zombie(OpId),
    /// Neither the path nor, for that path, the method is documented.
    Shadow,
}

impl Verdict {
    /// The record's tag for it.
    pub(crate) fn tag(self) -> Option<&'static str> {
        match self {
            Verdict::Shadow => Some(SHADOW_TAG),
            Verdict::Zombie(_) => Some(ZOMBIE_TAG),
            _ => None,
        }
    }

    /// The operation, when documented.
    pub(crate) fn op(self) -> Option<OpId> {
        match self {
            Verdict::Documented(op) | Verdict::Zombie(op) => Some(op),
            _ => None,
        }
    }
}

/// The record tag of a shadow request (searchable: `tags:visibility-shadow`).
pub const SHADOW_TAG: &str = "visibility-shadow";
/// The record tag of a request to a deprecated operation.
pub const ZOMBIE_TAG: &str = "visibility-zombie";

/// Judges `method` `rel_path` (below the listen path) against `api`'s document.
pub(crate) fn judge(api: &ApiSpec, method: &str, rel_path: &str) -> Verdict {
    let Some(spec) = api.visibility.spec.as_deref() else { return Verdict::Unjudged };
    match spec.route(method, rel_path) {
        Route::Op(op) if spec.operation(op).deprecated => Verdict::Zombie(op),
        Route::Op(op) => Verdict::Documented(op),
        Route::UnknownPath | Route::UnknownMethod => Verdict::Shadow,
    }
}

/// The message of the 404 a shadow request gets in `enforce` mode.
pub(crate) const NOT_IN_SPEC: &str = "endpoint not in the API's OpenAPI document";

/// `Err` with the 404 when the API enforces its document and the request is not in it.
pub(crate) fn check(api: &ApiSpec, method: &str, rel_path: &str) -> Result<(), Denial> {
    if !api.visibility.enforces() || judge(api, method, rel_path) != Verdict::Shadow {
        return Ok(());
    }
    Err(Denial { kind: Refusal::Status(404), message: NOT_IN_SPEC.into(), ..Default::default() })
}
