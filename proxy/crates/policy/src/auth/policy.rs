//! Policies (a map `id -> policy`, read by `config` from Tyk's `policies.json`) and the
//! [`Grant`] a request is served under: a session merged with the policies it applies.
//!
//! Merge rules (documented in docs/authentication.md, "Policies"): with no policy the session's own rate, quota
//! and access rights apply; with policies, their access rights are united (per API: versions and
//! allowed URLs united), the highest effective rate (`rate / per`, no limit beats any limit)
//! wins, the largest quota wins (`-1` = unlimited beats any), tags are united, and an inactive
//! policy makes the grant inactive. An unknown policy id denies the request (a key must not gain
//! or lose rights because a policy file is incomplete). Must not: know a wire format (that is
//! `config::TykPolicy`); do I/O; compile regular expressions on the request path (grants are
//! built once per cached session or identity).

use std::sync::Arc;

use ahash::AHashMap;

use super::session::{ApiRights, Session};
use crate::path_rule::{tyk_pattern, PathMatching};

/// One policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: String,
    /// Requests per `per` seconds; `rate <= 0`: no rate limit.
    pub rate: f64,
    pub per: f64,
    /// Requests per quota period; `-1` (or `0` with no renewal period): unlimited.
    pub quota_max: i64,
    /// Quota period, seconds.
    pub quota_renewal_rate: i64,
    /// Empty: every API.
    pub access_rights: Vec<ApiRights>,
    /// An inactive policy makes every grant that applies it inactive.
    pub inactive: bool,
    pub tags: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            id: String::new(),
            rate: 0.0,
            per: 0.0,
            quota_max: -1,
            quota_renewal_rate: 0,
            access_rights: Vec::new(),
            inactive: false,
            tags: Vec::new(),
        }
    }
}

/// The loaded policies file, and how `allowed_urls` patterns compile (a gateway setting in Tyk).
#[derive(Debug, Default, Clone)]
pub struct Policies {
    by_id: AHashMap<String, Policy>,
    pub matching: PathMatching,
}

impl Policies {
    pub fn new(by_id: impl IntoIterator<Item = (String, Policy)>) -> Self {
        Policies { by_id: by_id.into_iter().collect(), matching: PathMatching::default() }
    }

    pub fn with_matching(self, matching: PathMatching) -> Self {
        Policies { matching, ..self }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Policy> {
        self.by_id.get(id)
    }
}

/// A request's effective rights: rate, quota, API access, tags.
#[derive(Debug, Clone)]
pub struct Grant {
    /// `None`: no rate limit.
    pub rate: Option<(f64, f64)>,
    /// `None`: no quota; else (max, renewal seconds).
    pub quota: Option<(i64, i64)>,
    /// `None`: every API; else API id -> access.
    pub access: Option<AHashMap<String, ApiAccess>>,
    pub tags: Vec<String>,
    pub inactive: bool,
    /// Policies applied (for records and the limiter's key).
    pub policies: Vec<String>,
}

/// What a grant allows on one API.
#[derive(Debug, Clone, Default)]
pub struct ApiAccess {
    /// Empty: all versions.
    pub versions: Vec<String>,
    /// Empty: all paths and methods.
    pub urls: Vec<UrlRule>,
    /// `access_rights.<api>.limit` (`rate`, `per`): a rate for this API only, replacing the
    /// grant's rate here (Tyk's per-API limits).
    pub limit: Option<(f64, f64)>,
}

/// One compiled `allowed_urls` entry.
#[derive(Debug, Clone)]
pub struct UrlRule {
    pub pattern: Arc<regex::Regex>,
    /// Compared exactly; empty: no method (Tyk: `slices.Contains(methods, r.Method)`).
    pub methods: Vec<String>,
}

/// Why no grant could be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("policy {0:?} does not exist")]
    UnknownPolicy(String),
    #[error("allowed_urls entry {0:?} is not a valid regular expression")]
    BadUrlPattern(String),
}

fn effective_rate(rate: f64, per: f64) -> Option<(f64, f64)> {
    (rate > 0.0 && per > 0.0).then_some((rate, per))
}

fn effective_quota(max: i64, renewal: i64) -> Option<(i64, i64)> {
    (max >= 0 && !(max == 0 && renewal <= 0)).then_some((max, renewal))
}

fn compile_access(
    rights: &[ApiRights],
    matching: PathMatching,
    into: &mut AHashMap<String, ApiAccess>,
) -> Result<(), GrantError> {
    for def in rights {
        let entry = into.entry(def.api_id.clone()).or_default();
        if let Some((rate, per)) = def.limit {
            if let Some(r) = effective_rate(rate, per) {
                // Several policies naming the same API: the highest rate wins here too.
                if entry.limit.is_none_or(|(a, b)| r.0 / r.1 > a / b) {
                    entry.limit = Some(r);
                }
            }
        }
        for v in &def.versions {
            if !entry.versions.iter().any(|x| x.eq_ignore_ascii_case(v)) {
                entry.versions.push(v.clone());
            }
        }
        for u in &def.allowed_urls {
            // Tyk's `PreparePathRegexp` as for path lists (mw_granular_access.go:89-117).
            let pattern = regex::Regex::new(&tyk_pattern(&u.url, matching, false))
                .map_err(|_| GrantError::BadUrlPattern(u.url.clone()))?;
            entry.urls.push(UrlRule { pattern: Arc::new(pattern), methods: u.methods.clone() });
        }
    }
    Ok(())
}

/// The grant of a key's session: its own limits, or the merge of the policies it applies.
pub fn grant_for_session(session: &Session, policies: &Policies) -> Result<Grant, GrantError> {
    let ids: Vec<&str> = session.policies.iter().map(String::as_str).collect();
    if ids.is_empty() {
        let mut access = AHashMap::new();
        compile_access(&session.access_rights, policies.matching, &mut access)?;
        return Ok(Grant {
            rate: effective_rate(session.rate, session.per),
            quota: effective_quota(session.quota_max, session.quota_renewal_rate),
            access: (!access.is_empty()).then_some(access),
            tags: session.tags.clone(),
            inactive: session.inactive,
            policies: Vec::new(),
        });
    }
    let mut g = grant_for_policies(&ids, policies)?;
    g.inactive |= session.inactive;
    for t in &session.tags {
        if !g.tags.contains(t) {
            g.tags.push(t.clone());
        }
    }
    Ok(g)
}

/// The merge of `ids` (at least one) as described in the module docs.
pub fn grant_for_policies(ids: &[&str], policies: &Policies) -> Result<Grant, GrantError> {
    let mut rate: Option<Option<(f64, f64)>> = None;
    let mut quota: Option<Option<(i64, i64)>> = None;
    let mut access = AHashMap::new();
    let mut any_rights = false;
    let mut tags = Vec::new();
    let mut inactive = false;
    for id in ids {
        let p = policies.get(id).ok_or_else(|| GrantError::UnknownPolicy(id.to_string()))?;
        let r = effective_rate(p.rate, p.per);
        rate = Some(match (rate, r) {
            (None, r) => r,
            (Some(None), _) | (_, None) => None,
            (Some(Some(a)), Some(b)) => Some(if b.0 / b.1 > a.0 / a.1 { b } else { a }),
        });
        let q = effective_quota(p.quota_max, p.quota_renewal_rate);
        quota = Some(match (quota, q) {
            (None, q) => q,
            (Some(None), _) | (_, None) => None,
            (Some(Some(a)), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
        });
        any_rights |= !p.access_rights.is_empty();
        compile_access(&p.access_rights, policies.matching, &mut access)?;
        for t in &p.tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        inactive |= p.inactive;
    }
    Ok(Grant {
        rate: rate.flatten(),
        quota: quota.flatten(),
        access: any_rights.then_some(access),
        tags,
        inactive,
        policies: ids.iter().map(|s| s.to_string()).collect(),
    })
}

/// Access check outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessDenied {
    /// The grant lists APIs and this is not one of them.
    Api,
    /// The API is listed but not this version.
    Version,
    /// `allowed_urls` do not match this path and method.
    Url,
}

impl Grant {
    /// The rate that applies on `api_id`: its per-API limit when set, else the grant's rate;
    /// `true` when it is a per-API limit (then it is counted per API).
    pub fn rate_for(&self, api_id: &str) -> Option<((f64, f64), bool)> {
        if let Some(l) = self.access.as_ref().and_then(|a| a.get(api_id)).and_then(|a| a.limit) {
            return Some((l, true));
        }
        self.rate.map(|r| (r, false))
    }

    /// Checks API, version and `allowed_urls`: a pattern matches the path below the listen path
    /// or the whole path (Tyk: mw_granular_access.go:47-117), and the method exactly; an entry
    /// with no methods matches nothing.
    pub fn check(
        &self,
        api_id: &str,
        version: Option<&str>,
        method: &str,
        rel_path: &str,
        path: &str,
    ) -> Result<(), AccessDenied> {
        let Some(access) = &self.access else {
            return Ok(());
        };
        let a = access.get(api_id).ok_or(AccessDenied::Api)?;
        // A key's versions are checked only on a versioned API, exactly, and an empty list
        // allows none (Tyk: mw_access_rights.go:39-63).
        if let Some(version) = version {
            if !a.versions.iter().any(|v| v == version) {
                return Err(AccessDenied::Version);
            }
        }
        if a.urls.is_empty() {
            return Ok(());
        }
        let ok = a.urls.iter().any(|u| {
            u.methods.iter().any(|m| m == method) && (u.pattern.is_match(rel_path) || u.pattern.is_match(path))
        });
        if ok {
            Ok(())
        } else {
            Err(AccessDenied::Url)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_or_per_not_positive_is_no_limit() {
        assert_eq!(effective_rate(-1.0, 0.0), None, "-1: no rate limit");
        assert_eq!(effective_rate(0.0, 1.0), None);
        assert_eq!(effective_rate(5.0, 0.0), None);
        assert_eq!(effective_rate(5.0, 2.0), Some((5.0, 2.0)));
    }
}
