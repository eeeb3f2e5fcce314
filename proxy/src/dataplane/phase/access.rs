//! Phase `access`: the rules that need no credential, IP allow and deny lists and the black and
//! white path lists (`auth::access`). Runs once per request; a control-plane round trip of a
//! later phase does not run it again.

use crate::auth::{self, ApiAuth, Denial, RequestView};

/// `Err` with Tyk's refusal when a rule refuses the request.
pub(crate) fn check(api: &ApiAuth, view: &RequestView<'_>) -> Result<(), Denial> {
    auth::access(api, view)
}
