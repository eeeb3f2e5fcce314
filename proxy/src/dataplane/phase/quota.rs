//! Phase `quota`: the identity's quota, from the block of it this worker holds
//! (`limit::quota`). No block held asks the control plane to reserve one (Redis or the embedded
//! table), then the phase runs again. It runs after the rate limits (as Tyk,
//! gateway/session_manager.go:301-333), so a request they refuse never gets here and spends
//! nothing; one that gets here spends its unit at once ([`spend`]).

use super::Need;
use crate::auth::Denial;
use crate::auth::{Identity, Refusal, WorkerAuth};
use crate::config::ApiSpec;
use crate::limit::quota::{Quota, QuotaCheck, QuotaInfo};

/// What the quota phase decided.
pub(crate) enum QuotaStep {
    /// No quota applies.
    None,
    /// Units are left in the block held.
    Held(Quota, QuotaInfo),
    Denied(Denial),
    /// Reserve a block, then run this phase again.
    Need(Need),
}

/// The quota of `identity` on `api`, if one applies.
pub(crate) fn of(api: &ApiSpec, identity: Option<&Identity>) -> Option<Quota> {
    match (identity, api.limits.disable_quota) {
        (Some(ident), false) => ident.grant.quota_for(&api.api_id).map(|((max, renewal), scope)| Quota {
            id: ident.quota_id(scope),
            max,
            // A quota that never renews: one period of ten years.
            period: if renewal > 0 { renewal } else { 10 * 365 * 86_400 },
        }),
        _ => None,
    }
}

pub(crate) fn check(api: &ApiSpec, identity: Option<&Identity>, w: &mut WorkerAuth) -> QuotaStep {
    let Some(q) = of(api, identity) else {
        return QuotaStep::None;
    };
    w.sync();
    let now = w.now();
    match w.quotas.check(&q, now) {
        QuotaCheck::Available(info) => QuotaStep::Held(q, info),
        QuotaCheck::Reserve => QuotaStep::Need(Need::Quota(q)),
        QuotaCheck::Exceeded(_) => QuotaStep::Denied(Denial {
            kind: Refusal::Forbidden,
            message: "Quota exceeded".into(),
            ..Default::default()
        }),
    }
}

/// Spends one unit of `q` (the request has passed the rate limits); `info` then shows it spent.
pub(crate) fn spend(q: &Quota, info: &mut QuotaInfo, w: &mut WorkerAuth) {
    w.quotas.spend(q);
    info.remaining = info.remaining.saturating_sub(1);
}
