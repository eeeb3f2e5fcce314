//! Policies (a map `id -> policy`, read by `config` from Tyk's `policies.json`) and the
//! [`Grant`] a request is served under: a session merged with the policies it applies.
//!
//! Merge rules: Tyk's `internal/policy/apply.go`, documented in docs/authentication.md,
//! "Policies". With no policy, the session's own rights apply (an API's `limit` in them is that
//! API's own limit, counted apart). With policies, per API: access rights united; the rate with the
//! shortest interval between requests wins (an empty rate, `rate` or `per` 0, is skipped; `-1`
//! with a `per` is unlimited); the largest `quota_max` wins (`-1` unlimited beats any, `0`, no
//! quota, loses to any) and the largest renewal period, on its own; a policy with `partitions`
//! gives only the parts it names, and an API it names without its `acl` part is dropped unless
//! another policy gives it; `per_api` policies give each API its own limit. Policies must be of
//! the session's org (when it has one) and, at request time, of the API's. An unknown policy,
//! `per_api` mixed with partitions, or policies that leave no API, refuse the key. Must not: know
//! a wire format (that is `config::TykPolicy`); do I/O; compile regular expressions on the
//! request path (grants are built once per cached session or identity).

use std::sync::Arc;

use ahash::AHashMap;

use super::session::{ApiLimit, ApiRights, Session};
use crate::path_rule::{tyk_pattern, PathMatching};

/// One policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: String,
    /// Requests per `per` seconds; `rate <= 0`: no rate limit.
    pub rate: f64,
    pub per: f64,
    /// Requests per quota period; `-1`: unlimited; `0`: no quota (loses to any other value).
    pub quota_max: i64,
    /// Quota period, seconds.
    pub quota_renewal_rate: i64,
    /// The APIs it gives access to. Empty: none (such a policy alone refuses the key, as Tyk).
    pub access_rights: Vec<ApiRights>,
    /// An inactive policy makes every grant that applies it inactive.
    pub inactive: bool,
    pub tags: Vec<String>,
    /// Tyk's `org_id`: the org whose keys and APIs may use it.
    pub org_id: String,
    pub partitions: Partitions,
}

/// Tyk's `partitions`: which parts of a policy apply (none set: all of them), or `per_api`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Partitions {
    pub quota: bool,
    pub rate_limit: bool,
    pub acl: bool,
    pub complexity: bool,
    pub per_api: bool,
}

impl Partitions {
    /// Any of quota, rate_limit, acl, complexity (Tyk's `Enabled`).
    pub fn enabled(self) -> bool {
        self.quota || self.rate_limit || self.acl || self.complexity
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            id: String::new(),
            rate: 0.0,
            per: 0.0,
            quota_max: 0,
            quota_renewal_rate: 0,
            access_rights: Vec::new(),
            inactive: false,
            tags: Vec::new(),
            org_id: String::new(),
            partitions: Partitions::default(),
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
    /// The key's own rate, for an API without limits of its own in `access`. `None`: no limit.
    pub rate: Option<(f64, f64)>,
    /// The key's own quota, likewise. `None`: no quota; else (max, renewal seconds).
    pub quota: Option<(i64, i64)>,
    /// `None`: every API (a key without access rights and policies); else API id -> access.
    pub access: Option<AHashMap<String, ApiAccess>>,
    pub tags: Vec<String>,
    pub inactive: bool,
    /// Policies applied (for records and the limiter's key).
    pub policies: Vec<String>,
    /// The orgs of the policies applied: an API of another org refuses the key (Tyk:
    /// apply.go:133-137, the policy must be of the API's org).
    pub policy_orgs: Vec<String>,
    /// The session's `tyk_name` (where a Tyk gateway keeps it), for its quota counter
    /// (`Identity::quota_id`). Here rather than in `Identity`, which every connection's task
    /// holds.
    pub tyk_name: Option<std::sync::Arc<str>>,
    /// The session's `alias` and `enable_detailed_recording`, for request records.
    pub alias: String,
    pub detailed_recording: bool,
}

/// The limits of one API in a grant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// `None`: no rate limit.
    pub rate: Option<(f64, f64)>,
    /// `None`: no quota; else (max, renewal seconds).
    pub quota: Option<(i64, i64)>,
    /// Counted apart under this name (an API's own limit, or the policy that set it when several
    /// policies give access); `None`: the key's counters, shared by its APIs.
    pub scope: Option<String>,
}

/// What a grant allows on one API.
#[derive(Debug, Clone, Default)]
pub struct ApiAccess {
    /// Empty: all versions.
    pub versions: Vec<String>,
    /// Empty: all paths and methods.
    pub urls: Vec<UrlRule>,
    /// This API's limits; `None`: the grant's own `rate` and `quota`.
    pub limits: Option<Limits>,
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
    #[error("key has no valid policies to be applied (no policy gives it access to an API)")]
    NoValidPolicies,
    #[error("{0}")]
    Unsupported(String),
}

/// A limit as Tyk holds it while it merges (`user.APILimit`): raw values, not yet meanings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Raw {
    rate: f64,
    per: f64,
    quota_max: i64,
    renewal: i64,
}

impl Raw {
    /// Tyk's `emptyRateLimit`: `rate == 0 || per == 0` (apply.go:302-304).
    fn empty_rate(self) -> bool {
        self.rate == 0.0 || self.per == 0.0
    }

    /// Tyk's `APILimit.Duration`: seconds between requests, 0 for `rate <= 0 || per <= 0`
    /// (user/session.go:104-109); the shortest wins a merge.
    fn duration(self) -> f64 {
        if self.rate <= 0.0 || self.per <= 0.0 {
            0.0
        } else {
            self.per / self.rate
        }
    }

    /// Tyk's `ApplyRateLimits` on one limit: an empty policy rate is skipped; otherwise it
    /// replaces an empty rate or one with a longer interval (apply.go:268-300).
    fn apply_rate(&mut self, policy: Raw) {
        if policy.empty_rate() {
            return;
        }
        if self.empty_rate() || self.duration() > policy.duration() {
            self.rate = policy.rate;
            self.per = policy.per;
        }
    }

    /// What it means: a rate limit when `rate > 0 && per > 0` (Tyk enforces none for
    /// `rate <= 0`, session_manager.go:350); a quota when `quota_max > 0` (none for 0 or -1,
    /// session_manager.go:450).
    fn limits(self, scope: Option<String>) -> Limits {
        Limits {
            rate: (self.rate > 0.0 && self.per > 0.0).then_some((self.rate, self.per)),
            quota: (self.quota_max > 0).then_some((self.quota_max, self.renewal)),
            scope,
        }
    }
}

/// Tyk's `greaterThanInt64`: `-1` is the largest value (internal/policy/util.go:81-91).
fn greater(first: i64, second: i64) -> bool {
    if first == -1 {
        return true;
    }
    if second == -1 {
        return false;
    }
    first > second
}

fn raw_of_limit(l: &ApiLimit) -> Raw {
    Raw { rate: l.rate, per: l.per, quota_max: l.quota_max, renewal: l.quota_renewal_rate }
}

fn compile_urls(def: &ApiRights, matching: PathMatching, entry: &mut ApiAccess) -> Result<(), GrantError> {
    for v in &def.versions {
        if !entry.versions.contains(v) {
            entry.versions.push(v.clone());
        }
    }
    for u in &def.allowed_urls {
        // Tyk's `PreparePathRegexp` as for path lists (mw_granular_access.go:89-117).
        let pattern = regex::Regex::new(&tyk_pattern(&u.url, matching, false))
            .map_err(|_| GrantError::BadUrlPattern(u.url.clone()))?;
        entry.urls.push(UrlRule { pattern: Arc::new(pattern), methods: u.methods.clone() });
    }
    Ok(())
}

/// The grant of a key's session: its own limits, or the merge of the policies it applies.
pub fn grant_for_session(session: &Session, policies: &Policies) -> Result<Grant, GrantError> {
    let ids: Vec<&str> = session.policies.iter().map(String::as_str).collect();
    if ids.is_empty() {
        // No policy: the session's own rights; an API's own `limit` is counted apart
        // (apply.go:189-197).
        let mut access = AHashMap::new();
        for def in &session.access_rights {
            let entry: &mut ApiAccess = access.entry(def.api_id.clone()).or_default();
            compile_urls(def, policies.matching, entry)?;
            if let Some(l) = def.limit.as_ref().filter(|l| !l.is_empty()) {
                entry.limits = Some(raw_of_limit(l).limits(Some(def.api_id.clone())));
            }
        }
        let own = Raw {
            rate: session.rate,
            per: session.per,
            quota_max: session.quota_max,
            renewal: session.quota_renewal_rate,
        }
        .limits(None);
        return Ok(Grant {
            rate: own.rate,
            quota: own.quota,
            access: (!access.is_empty()).then_some(access),
            tags: session.tags.clone(),
            inactive: session.inactive,
            policies: Vec::new(),
            policy_orgs: Vec::new(),
            tyk_name: session.tyk_name.clone(),
            alias: session.alias.clone(),
            detailed_recording: session.detailed_recording,
        });
    }
    let own =
        Raw { rate: session.rate, per: session.per, quota_max: session.quota_max, renewal: session.quota_renewal_rate };
    let mut g = merge(&ids, own, &session.org_id, policies)?;
    // Stricter than Tyk, which lets the policies' state replace the key's own.
    g.inactive |= session.inactive;
    g.tyk_name.clone_from(&session.tyk_name);
    g.alias.clone_from(&session.alias);
    g.detailed_recording = session.detailed_recording;
    for t in &session.tags {
        if !g.tags.contains(t) {
            g.tags.push(t.clone());
        }
    }
    Ok(g)
}

/// The merge of `ids` (at least one) for an identity with no limits of its own and no org (JWT
/// identities).
pub fn grant_for_policies(ids: &[&str], policies: &Policies) -> Result<Grant, GrantError> {
    merge(ids, Raw::default(), "", policies)
}

/// One API's state while policies merge (Tyk's `rights[k]` and `applyState`).
#[derive(Default)]
struct Merging {
    access: ApiAccess,
    raw: Raw,
    acl: bool,
    rate: bool,
    quota: bool,
    /// The policy that gave access (Tyk's `Limit.SetBy`), or the API's own scope for `per_api`.
    set_by: Option<String>,
    per_api: bool,
}

/// Tyk's `Apply` (internal/policy/apply.go:88-262) for the parts Portcullis enforces.
fn merge(ids: &[&str], own: Raw, org: &str, policies: &Policies) -> Result<Grant, GrantError> {
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        // Looked up within the session's org when it has one (model/policies.go:192-199).
        match policies.get(id).filter(|p| org.is_empty() || p.org_id == org) {
            Some(p) => found.push((*id, p)),
            None => return Err(GrantError::UnknownPolicy(id.to_string())),
        }
    }
    // ClearSession (apply.go:38-60): the parts the policies give start from nothing.
    let mut session = own;
    for (_, p) in &found {
        let all = !p.partitions.enabled();
        if p.partitions.quota || all {
            session.quota_max = 0;
        }
        if p.partitions.rate_limit || all {
            session.rate = 0.0;
            session.per = 0.0;
        }
    }
    let mut rights: Vec<(String, Merging)> = Vec::new();
    let mut did_per_api = false;
    let mut did_partition = false;
    let mut tags = Vec::new();
    let mut inactive = false;
    let mut orgs: Vec<String> = Vec::new();
    // The id a policy is known by is the one it was looked up with (the policies file's map key).
    for &(id, p) in &found {
        if p.partitions.per_api && p.partitions.enabled() {
            return Err(GrantError::Unsupported(format!("policy {id:?} has per_api and partitions")));
        }
        let here = |rights: &mut Vec<(String, Merging)>, api: &str| -> usize {
            match rights.iter().position(|(k, _)| k == api) {
                Some(i) => i,
                None => {
                    rights.push((api.to_string(), Merging::default()));
                    rights.len() - 1
                }
            }
        };
        let policy_raw = Raw { rate: p.rate, per: p.per, quota_max: p.quota_max, renewal: p.quota_renewal_rate };
        if p.partitions.per_api {
            // applyPerAPI (apply.go:306-356).
            if did_partition {
                return Err(GrantError::Unsupported("per_api policies mixed with partitioned ones".into()));
            }
            for def in &p.access_rights {
                let (raw, scope) = match def.limit.as_ref().filter(|l| !l.is_empty()) {
                    Some(l) => (raw_of_limit(l), def.api_id.clone()),
                    None => (policy_raw, id.to_string()),
                };
                let i = here(&mut rights, &def.api_id);
                let m = &mut rights[i].1;
                let mut access = ApiAccess::default();
                compile_urls(def, policies.matching, &mut access)?;
                let (mut raw, mut scope) = (raw, Some(scope));
                if m.acl {
                    // applyAPILevelLimits (apply.go:620-652).
                    let cur = m.raw;
                    let mut updated = false;
                    if raw.duration() > cur.duration() {
                        raw.rate = cur.rate;
                        raw.per = cur.per;
                        updated = true;
                    }
                    if cur.quota_max != raw.quota_max && greater(cur.quota_max, raw.quota_max) {
                        raw.quota_max = cur.quota_max;
                        updated = true;
                    }
                    if greater(cur.renewal, raw.renewal) {
                        raw.renewal = cur.renewal;
                    }
                    if raw.quota_max == -1 {
                        raw.renewal = 0;
                    }
                    if updated {
                        scope = m.set_by.clone();
                    }
                }
                *m = Merging { access, raw, acl: true, rate: true, quota: true, set_by: scope, per_api: true };
            }
            did_per_api |= !p.access_rights.is_empty();
        } else {
            // applyPartitions (apply.go:379-563).
            let partitioned = p.partitions.enabled();
            if partitioned && did_per_api {
                return Err(GrantError::Unsupported("per_api policies mixed with partitioned ones".into()));
            }
            did_partition |= partitioned;
            for def in &p.access_rights {
                let i = here(&mut rights, &def.api_id);
                let m = &mut rights[i].1;
                if !partitioned || p.partitions.acl {
                    m.acl = true;
                    compile_urls(def, policies.matching, &mut m.access)?;
                    m.set_by = Some(id.to_string());
                }
                if !partitioned || p.partitions.quota {
                    m.quota = true;
                    if greater(p.quota_max, m.raw.quota_max) {
                        m.raw.quota_max = p.quota_max;
                    }
                    if p.quota_renewal_rate > m.raw.renewal {
                        m.raw.renewal = p.quota_renewal_rate;
                    }
                }
                if !partitioned || p.partitions.rate_limit {
                    m.rate = true;
                    m.raw.apply_rate(policy_raw);
                }
            }
        }
        inactive |= p.inactive;
        for t in &p.tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        if !orgs.contains(&p.org_id) {
            orgs.push(p.org_id.clone());
        }
    }
    // APIs no policy gave access to are dropped; the parts no policy gave come from the session
    // (apply.go:207-246); with several policies giving access, each counts apart.
    let distinct: Vec<&String> = {
        let mut d: Vec<&String> = Vec::new();
        for (_, m) in rights.iter().filter(|(_, m)| m.acl && !m.per_api) {
            if let Some(s) = &m.set_by {
                if !d.contains(&s) {
                    d.push(s);
                }
            }
        }
        d
    };
    let several = distinct.len() > 1;
    let mut access = AHashMap::new();
    for (api, m) in &rights {
        if !m.acl {
            continue;
        }
        let mut raw = m.raw;
        if !m.rate {
            raw.rate = session.rate;
            raw.per = session.per;
        }
        if !m.quota {
            raw.quota_max = session.quota_max;
            raw.renewal = session.renewal;
        }
        let scope = if m.per_api || several { m.set_by.clone() } else { None };
        let mut a = m.access.clone();
        a.limits = Some(raw.limits(scope));
        access.insert(api.clone(), a);
    }
    if access.is_empty() {
        // apply.go:253-255: "key has no valid policies to be applied".
        return Err(GrantError::NoValidPolicies);
    }
    Ok(Grant {
        rate: None,
        quota: None,
        access: Some(access),
        tags,
        inactive,
        policies: ids.iter().map(|s| s.to_string()).collect(),
        policy_orgs: orgs,
        tyk_name: None,
        alias: String::new(),
        detailed_recording: false,
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
    /// The rate that applies on `api_id` and the scope it is counted in (`None`: the key's
    /// counters): the API's own limits when the grant has them, else the key's.
    pub fn rate_for(&self, api_id: &str) -> Option<((f64, f64), Option<&str>)> {
        match self.access.as_ref().and_then(|a| a.get(api_id)).and_then(|a| a.limits.as_ref()) {
            Some(l) => l.rate.map(|r| (r, l.scope.as_deref())),
            None => self.rate.map(|r| (r, None)),
        }
    }

    /// The quota on `api_id` and its scope, as [`Grant::rate_for`].
    pub fn quota_for(&self, api_id: &str) -> Option<((i64, i64), Option<&str>)> {
        match self.access.as_ref().and_then(|a| a.get(api_id)).and_then(|a| a.limits.as_ref()) {
            Some(l) => l.quota.map(|q| (q, l.scope.as_deref())),
            None => self.quota.map(|q| (q, None)),
        }
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
    fn raw_values_mean_what_they_mean_in_tyk() {
        let l = |rate, per, quota_max, renewal| Raw { rate, per, quota_max, renewal }.limits(None);
        assert_eq!(l(-1.0, 1.0, -1, 0), Limits::default(), "-1: unlimited");
        assert_eq!(l(0.0, 1.0, 0, 3600), Limits::default(), "quota_max 0: no quota, whatever the renewal");
        assert_eq!(l(5.0, 2.0, 10, 60).rate, Some((5.0, 2.0)));
        assert_eq!(l(5.0, 2.0, 10, 60).quota, Some((10, 60)));
        assert!(greater(-1, 5) && !greater(5, -1) && greater(5, 0) && !greater(0, 5) && greater(-1, -1));
        let mut r = Raw::default();
        r.apply_rate(Raw { rate: -1.0, per: 0.0, ..Raw::default() });
        assert!(r.empty_rate(), "-1 without per is empty: skipped");
        r.apply_rate(Raw { rate: 10.0, per: 60.0, ..Raw::default() });
        r.apply_rate(Raw { rate: 1.0, per: 60.0, ..Raw::default() });
        assert_eq!((r.rate, r.per), (10.0, 60.0), "the shortest interval wins");
        r.apply_rate(Raw { rate: -1.0, per: 1.0, ..Raw::default() });
        assert_eq!(r.limits(None).rate, None, "-1 with a per: unlimited, and it wins");
    }
}
