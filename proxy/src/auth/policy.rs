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

/// The loaded policies file.
#[derive(Debug, Default)]
pub struct Policies {
    by_id: AHashMap<String, Policy>,
}

impl Policies {
    pub fn new(by_id: impl IntoIterator<Item = (String, Policy)>) -> Self {
        Policies { by_id: by_id.into_iter().collect() }
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
    /// Upper case; empty: any method.
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

fn compile_access(rights: &[ApiRights], into: &mut AHashMap<String, ApiAccess>) -> Result<(), GrantError> {
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
            let pattern = regex::Regex::new(&u.url).map_err(|_| GrantError::BadUrlPattern(u.url.clone()))?;
            entry.urls.push(UrlRule {
                pattern: Arc::new(pattern),
                methods: u.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
            });
        }
    }
    Ok(())
}

/// The grant of a key's session: its own limits, or the merge of the policies it applies.
pub fn grant_for_session(session: &Session, policies: &Policies) -> Result<Grant, GrantError> {
    let ids: Vec<&str> = session.policies.iter().map(String::as_str).collect();
    if ids.is_empty() {
        let mut access = AHashMap::new();
        compile_access(&session.access_rights, &mut access)?;
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
        compile_access(&p.access_rights, &mut access)?;
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

    /// Checks API, version and `allowed_urls` (regex searched in `path`, as Tyk does).
    pub fn check(&self, api_id: &str, version: &str, method: &str, path: &str) -> Result<(), AccessDenied> {
        let Some(access) = &self.access else {
            return Ok(());
        };
        let a = access.get(api_id).ok_or(AccessDenied::Api)?;
        if !a.versions.is_empty() && !a.versions.iter().any(|v| v.eq_ignore_ascii_case(version)) {
            return Err(AccessDenied::Version);
        }
        if a.urls.is_empty() {
            return Ok(());
        }
        let ok = a.urls.iter().any(|u| {
            (u.methods.is_empty() || u.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
                && u.pattern.is_match(path)
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
    use crate::auth::session::UrlAccess;

    /// Policies written as in a policies file (converted as `config` does).
    fn policies(json: &str) -> Policies {
        let m: std::collections::BTreeMap<String, crate::config::TykPolicy> = serde_json::from_str(json).unwrap();
        Policies::new(m.into_iter().map(|(k, p)| (k, p.to_policy())))
    }

    const TWO: &str = r#"{
        "slow": {"rate": 10, "per": 1, "quota_max": 100, "quota_renewal_rate": 60,
                 "access_rights": {"a": {"api_id": "a", "versions": ["Default"]}}},
        "fast": {"rate": 600, "per": 60, "quota_max": 50, "quota_renewal_rate": 60, "tags": ["gold"],
                 "access_rights": {"b": {"api_id": "b", "versions": [],
                    "allowed_urls": [{"url": "^/users", "methods": ["GET"]}]}}},
        "off": {"active": false}
    }"#;

    #[test]
    fn highest_rate_wins_and_rights_unite() {
        let p = policies(TWO);
        let g = grant_for_policies(&["slow", "fast"], &p).unwrap();
        // 10/1 s beats 600/60 s (10 per second each: the first stays).
        assert_eq!(g.rate, Some((10.0, 1.0)));
        let g = grant_for_policies(&["fast", "slow"], &p).unwrap();
        assert_eq!(g.rate, Some((600.0, 60.0)));
        let p2 = policies(r#"{"x": {"rate": 5, "per": 1}, "y": {"rate": 20, "per": 1}}"#);
        assert_eq!(grant_for_policies(&["x", "y"], &p2).unwrap().rate, Some((20.0, 1.0)));
        assert_eq!(grant_for_policies(&["y", "x"], &p2).unwrap().rate, Some((20.0, 1.0)));
        assert_eq!(g.quota, Some((100, 60)));
        assert_eq!(g.tags, ["gold"]);
        assert!(g.check("a", "Default", "POST", "/x").is_ok());
        assert_eq!(g.check("a", "v2", "GET", "/x"), Err(AccessDenied::Version));
        assert!(g.check("b", "whatever", "GET", "/users/1").is_ok());
        assert_eq!(g.check("b", "v", "POST", "/users/1"), Err(AccessDenied::Url));
        assert_eq!(g.check("b", "v", "GET", "/orders"), Err(AccessDenied::Url));
        assert_eq!(g.check("c", "v", "GET", "/"), Err(AccessDenied::Api));
    }

    #[test]
    fn unlimited_beats_limits_and_unknown_or_inactive_policies_deny() {
        let p = policies(
            r#"{"lim": {"rate": 5, "per": 1, "quota_max": 10}, "free": {"rate": 0, "quota_max": -1}, "off": {"active": false}}"#,
        );
        let g = grant_for_policies(&["lim", "free"], &p).unwrap();
        assert_eq!(g.rate, None);
        assert_eq!(g.quota, None);
        assert!(g.access.is_none());
        assert_eq!(grant_for_policies(&["nope"], &p).unwrap_err(), GrantError::UnknownPolicy("nope".into()));
        assert!(grant_for_policies(&["off"], &p).unwrap().inactive);
    }

    #[test]
    fn rate_or_per_not_positive_is_no_limit() {
        assert_eq!(effective_rate(-1.0, 0.0), None, "-1: no rate limit");
        assert_eq!(effective_rate(0.0, 1.0), None);
        assert_eq!(effective_rate(5.0, 0.0), None);
        assert_eq!(effective_rate(5.0, 2.0), Some((5.0, 2.0)));
    }

    #[test]
    fn session_without_policies_uses_its_own_rights() {
        let mut s = Session { rate: 3.0, per: 1.0, quota_max: -1, ..Default::default() };
        s.access_rights.push(ApiRights {
            api_id: "a".into(),
            allowed_urls: vec![UrlAccess { url: "[".into(), methods: vec![] }],
            ..Default::default()
        });
        assert_eq!(grant_for_session(&s, &Policies::default()).unwrap_err(), GrantError::BadUrlPattern("[".into()));
        s.access_rights.clear();
        let g = grant_for_session(&s, &Policies::default()).unwrap();
        assert_eq!(g.rate, Some((3.0, 1.0)));
        assert!(g.check("any", "v", "GET", "/").is_ok());
        s.policies = vec!["p".into()];
        s.inactive = true;
        let g = grant_for_session(&s, &policies(r#"{"p": {"rate": 1, "per": 1}}"#)).unwrap();
        assert!(g.inactive);
        assert_eq!(g.rate, Some((1.0, 1.0)));
    }
}
