//! Tyk's session object (`SessionState`): what a key (or a basic-auth user) is allowed to do.
//!
//! The fields Portcullis acts on are typed; every other field a Tyk user sends is kept in
//! `extra` and written back unchanged, so a session round-trips through the key API and the
//! store without loss. Must not: hold the key itself (sessions are stored under the key's hash,
//! see [`crate::keystore::hash_key`]) or do I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A key's session, Tyk field names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Session {
    /// Requests allowed per `per` seconds; 0 or -1 means no rate limit (Tyk's meaning, see
    /// [`crate::auth::policy::check_rate`]); other negative rates, and `per <= 0` with a rate,
    /// are refused by the key API and when loaded from a file.
    pub rate: f64,
    pub per: f64,
    pub allowance: f64,
    /// Requests per quota period; `-1` (or `0` with no renewal rate) means unlimited.
    pub quota_max: i64,
    pub quota_remaining: i64,
    /// Quota period, seconds.
    pub quota_renewal_rate: i64,
    /// Unix time the quota renews.
    pub quota_renews: i64,
    /// Unix time the key expires; `0` or negative: never.
    pub expires: i64,
    pub is_inactive: bool,
    /// API id -> what the key may do there. Empty: every API that accepts the key's auth method.
    pub access_rights: BTreeMap<String, AccessDefinition>,
    pub apply_policies: Vec<String>,
    /// Tyk's legacy single-policy field; treated as one more entry of `apply_policies`.
    pub apply_policy_id: String,
    pub basic_auth_data: BasicAuthData,
    pub hmac_enabled: bool,
    /// Shared secret for HMAC request signing (must be kept: the signature is checked with it).
    pub hmac_string: String,
    pub meta_data: Map<String, Value>,
    pub tags: Vec<String>,
    pub alias: String,
    pub org_id: String,
    pub date_created: String,
    pub last_updated: String,
    /// Fields Portcullis does not use, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `basic_auth_data`: the password is stored as a bcrypt hash (`hash_type: "bcrypt"`); plain
/// passwords sent through the key API are hashed before they are stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BasicAuthData {
    pub password: String,
    pub hash_type: String,
}

/// One entry of `access_rights`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccessDefinition {
    pub api_id: String,
    pub api_name: String,
    /// Version names allowed; empty: all versions.
    pub versions: Vec<String>,
    /// If not empty, only these paths (regular expressions, unanchored, as Tyk) and methods.
    pub allowed_urls: Vec<AccessSpec>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `allowed_urls` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccessSpec {
    pub url: String,
    pub methods: Vec<String>,
}

impl Session {
    /// Every policy this session applies (`apply_policies` plus the legacy `apply_policy_id`).
    pub fn policy_ids(&self) -> impl Iterator<Item = &str> {
        let legacy = (!self.apply_policy_id.is_empty()).then_some(self.apply_policy_id.as_str());
        self.apply_policies.iter().map(String::as_str).chain(legacy).filter(|s| !s.is_empty())
    }

    /// True when the key has expired at `now` (unix seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires > 0 && now >= self.expires
    }

    /// A copy safe to show through the admin API: the basic-auth hash is replaced by a marker.
    pub fn redacted(&self) -> Session {
        let mut s = self.clone();
        if !s.basic_auth_data.password.is_empty() {
            s.basic_auth_data.password = "<hidden>".into();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_round_trip() {
        let text = r#"{"rate":10,"per":1,"quota_max":-1,"throttle_interval":-1,
            "access_rights":{"a":{"api_id":"a","versions":["Default"],"limit":{"rate":5}}},
            "meta_data":{"user":"x"},"monitor":{"trigger_limits":[]}}"#;
        let s: Session = serde_json::from_str(text).unwrap();
        assert_eq!(s.rate, 10.0);
        assert_eq!(s.access_rights["a"].versions, ["Default"]);
        assert!(s.extra.contains_key("throttle_interval"));
        assert!(s.access_rights["a"].extra.contains_key("limit"));
        let back: Value = serde_json::to_value(&s).unwrap();
        assert_eq!(back["monitor"]["trigger_limits"], Value::Array(vec![]));
        assert_eq!(back["access_rights"]["a"]["limit"]["rate"], 5);
    }

    #[test]
    fn expiry_and_policy_ids() {
        let s = Session {
            expires: 100,
            apply_policies: vec!["p1".into()],
            apply_policy_id: "p0".into(),
            ..Default::default()
        };
        assert!(!s.is_expired(99));
        assert!(s.is_expired(100));
        assert!(!Session { expires: -1, ..Default::default() }.is_expired(i64::MAX));
        assert_eq!(s.policy_ids().collect::<Vec<_>>(), ["p1", "p0"]);
    }
}
