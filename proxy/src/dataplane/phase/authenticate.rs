//! Phase `authenticate`: who the request runs as (`auth::authenticate`: each enabled method,
//! chained, then expiry and access rights), from the worker's caches. A cache miss asks the
//! control plane (a session, a bcrypt check) and the phase runs again with the answer cached.

use super::Need;
use crate::auth::{self, Allowed, ApiAuth, DecideCtx, Decision, Denial, RequestView, WorkerAuth};

/// What authentication decided.
pub(crate) enum Authenticated<'a> {
    Allowed(Allowed<'a>),
    Denied(Denial),
    /// Ask the control plane, then run this phase again.
    Need(Need),
}

pub(crate) fn run<'a>(
    api: &'a ApiAuth,
    view: &RequestView<'a>,
    cx: DecideCtx<'_>,
    w: &mut WorkerAuth,
) -> Authenticated<'a> {
    match auth::authenticate(api, view, cx, w) {
        Decision::Allow(a) => Authenticated::Allowed(a),
        Decision::Deny(d) => Authenticated::Denied(d),
        Decision::NeedKey(lookup) => Authenticated::Need(Need::Key(lookup)),
        Decision::NeedPasswordCheck(check) => Authenticated::Need(Need::Password(check)),
    }
}
