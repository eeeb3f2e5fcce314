//! Tyk's policy object as JSON (one entry of the policies file, `id -> policy`).
//!
//! [`TykPolicy::to_policy`] gives auth its own [`Policy`] (auth merges policies into a grant);
//! [`TykPolicy::rate_problems`] refuses `rate`/`per` values without a meaning in Tyk. Must not:
//! do I/O (the snapshot reads the file).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use portcullis_policy::auth::policy::{Partitions, Policy};

use super::tyk_session::{api_rights, rate_problems_into, AccessDefinition, RateProblem};

/// One policy, Tyk field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TykPolicy {
    pub id: String,
    pub name: String,
    pub rate: f64,
    pub per: f64,
    pub quota_max: i64,
    pub quota_renewal_rate: i64,
    pub access_rights: BTreeMap<String, AccessDefinition>,
    /// Absent means active.
    pub active: bool,
    pub is_inactive: bool,
    pub tags: Vec<String>,
    pub org_id: String,
    pub partitions: TykPartitions,
}

/// Tyk's `partitions` block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TykPartitions {
    pub quota: bool,
    pub rate_limit: bool,
    pub acl: bool,
    pub complexity: bool,
    pub per_api: bool,
}

impl Default for TykPolicy {
    fn default() -> Self {
        TykPolicy {
            id: String::new(),
            name: String::new(),
            rate: 0.0,
            per: 0.0,
            // Go's zero value, as Tyk reads an absent field: no quota, which loses any merge.
            quota_max: 0,
            quota_renewal_rate: 0,
            access_rights: BTreeMap::new(),
            active: true,
            is_inactive: false,
            tags: Vec::new(),
            org_id: String::new(),
            partitions: TykPartitions::default(),
        }
    }
}

impl TykPolicy {
    /// Every `rate`/`per` problem of the policy, fields prefixed with `prefix` (e.g. `gold.`).
    pub fn rate_problems(&self, prefix: &str) -> Vec<RateProblem> {
        let mut out = Vec::new();
        rate_problems_into(prefix, self.rate, self.per, &self.access_rights, &mut out);
        out
    }

    /// The policy as auth merges it: inactive when `active` is false or `is_inactive` true.
    pub fn to_policy(&self) -> Policy {
        Policy {
            id: self.id.clone(),
            rate: self.rate,
            per: self.per,
            quota_max: self.quota_max,
            quota_renewal_rate: self.quota_renewal_rate,
            access_rights: api_rights(&self.access_rights),
            inactive: !self.active || self.is_inactive,
            tags: self.tags.clone(),
            org_id: self.org_id.clone(),
            partitions: Partitions {
                quota: self.partitions.quota,
                rate_limit: self.partitions.rate_limit,
                acl: self.partitions.acl,
                complexity: self.partitions.complexity,
                per_api: self.partitions.per_api,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_conversion() {
        let p: TykPolicy = serde_json::from_str(r#"{"rate": 5, "per": 1}"#).unwrap();
        assert_eq!((p.quota_max, p.active), (0, true), "absent quota_max is 0, as Go reads it");
        let d = p.to_policy();
        assert_eq!((d.rate, d.per, d.quota_max, d.inactive), (5.0, 1.0, 0, false));
        let off: TykPolicy = serde_json::from_str(r#"{"active": false}"#).unwrap();
        assert!(off.to_policy().inactive);
        let off: TykPolicy = serde_json::from_str(r#"{"is_inactive": true}"#).unwrap();
        assert!(off.to_policy().inactive);
    }

    #[test]
    fn rate_problems_name_the_field() {
        let p: TykPolicy = serde_json::from_str(r#"{"rate": -3, "per": 1}"#).unwrap();
        assert_eq!(p.rate_problems("gold.")[0].field, "gold.rate");
        let unlimited: TykPolicy = serde_json::from_str(r#"{"rate": -1}"#).unwrap();
        assert!(unlimited.rate_problems("u.").is_empty());
    }
}
