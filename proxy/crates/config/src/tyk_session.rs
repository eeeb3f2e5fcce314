//! Tyk's session object (`SessionState`) as JSON: what the key API takes and shows, and what
//! the key store writes (the embedded file, Redis `apikey-<hash>`).
//!
//! The fields Portcullis acts on are typed; every other field a Tyk user sends is kept in
//! `extra` and written back unchanged, so a session round-trips through the key API and the
//! store without loss. [`TykSession::to_session`] gives auth its own [`Session`];
//! [`TykSession::rate_problems`] refuses `rate`/`per` values without a meaning in Tyk. Must not:
//! hold the key itself (sessions are stored under the key's hash, see
//! [`portcullis_policy::auth::hash_key`]) or do I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use portcullis_policy::auth::session::{ApiLimit, ApiRights, BasicAuth, Session, UrlAccess};

/// `null` read as the field's default: Tyk gateways before 5 write `null` for every empty list
/// and map of a session (Go's nil slices and maps), and those sessions must read.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// A key's session, Tyk field names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TykSession {
    /// Requests allowed per `per` seconds; 0 or -1 means no rate limit (Tyk's meaning, see
    /// [`check_rate`]); other negative rates, and `per <= 0` with a rate, are refused by the key
    /// API and when loaded from a file.
    #[serde(deserialize_with = "nullable")]
    pub rate: f64,
    #[serde(deserialize_with = "nullable")]
    pub per: f64,
    #[serde(deserialize_with = "nullable")]
    pub allowance: f64,
    /// Requests per quota period; `-1` or `0` means no quota (Tyk: session_manager.go:450).
    #[serde(deserialize_with = "nullable")]
    pub quota_max: i64,
    #[serde(deserialize_with = "nullable")]
    pub quota_remaining: i64,
    /// Quota period, seconds.
    #[serde(deserialize_with = "nullable")]
    pub quota_renewal_rate: i64,
    /// Unix time the quota renews.
    #[serde(deserialize_with = "nullable")]
    pub quota_renews: i64,
    /// Unix time the key expires; `0` or negative: never.
    #[serde(deserialize_with = "nullable")]
    pub expires: i64,
    #[serde(deserialize_with = "nullable")]
    pub is_inactive: bool,
    /// API id -> what the key may do there. Empty: every API that accepts the key's auth method.
    #[serde(deserialize_with = "nullable")]
    pub access_rights: BTreeMap<String, AccessDefinition>,
    #[serde(deserialize_with = "nullable")]
    pub apply_policies: Vec<String>,
    /// Tyk's legacy single-policy field; applied only when `apply_policies` is empty.
    #[serde(deserialize_with = "nullable")]
    pub apply_policy_id: String,
    #[serde(deserialize_with = "nullable")]
    pub basic_auth_data: BasicAuthData,
    #[serde(deserialize_with = "nullable")]
    pub hmac_enabled: bool,
    /// Shared secret for HMAC request signing (must be kept: the signature is checked with it).
    #[serde(deserialize_with = "nullable")]
    pub hmac_string: String,
    #[serde(deserialize_with = "nullable")]
    pub meta_data: Map<String, Value>,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub alias: String,
    #[serde(deserialize_with = "nullable")]
    pub enable_detailed_recording: bool,
    /// Tyk's older name of `enable_detailed_recording`, still read by its gateway.
    #[serde(deserialize_with = "nullable")]
    pub enable_detail_recording: bool,
    #[serde(deserialize_with = "nullable")]
    pub org_id: String,
    #[serde(deserialize_with = "nullable")]
    pub date_created: String,
    #[serde(deserialize_with = "nullable")]
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
    #[serde(deserialize_with = "nullable")]
    pub password: String,
    #[serde(deserialize_with = "nullable")]
    pub hash_type: String,
}

/// One entry of `access_rights` (of a session or a policy).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccessDefinition {
    #[serde(deserialize_with = "nullable")]
    pub api_id: String,
    #[serde(deserialize_with = "nullable")]
    pub api_name: String,
    /// Version names allowed; empty: all versions.
    #[serde(deserialize_with = "nullable")]
    pub versions: Vec<String>,
    /// If not empty, only these paths (regular expressions, unanchored, as Tyk) and methods.
    #[serde(deserialize_with = "nullable")]
    pub allowed_urls: Vec<AccessSpec>,
    /// Fields Portcullis does not type, kept as sent; `limit` (`rate`, `per`) is read from here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `allowed_urls` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccessSpec {
    #[serde(deserialize_with = "nullable")]
    pub url: String,
    #[serde(deserialize_with = "nullable")]
    pub methods: Vec<String>,
}

impl TykSession {
    /// Every policy this session applies (`apply_policies` plus the legacy `apply_policy_id`).
    pub fn policy_ids(&self) -> impl Iterator<Item = &str> {
        // `apply_policies` when set, else the legacy `apply_policy_id`; never both (Tyk:
        // user/session.go:527-535, `PolicyIDs`).
        let legacy = (self.apply_policies.is_empty() && !self.apply_policy_id.is_empty())
            .then_some(self.apply_policy_id.as_str());
        self.apply_policies.iter().map(String::as_str).chain(legacy).filter(|s| !s.is_empty())
    }

    /// A copy safe to show through the admin API: the basic-auth hash is replaced by a marker.
    pub fn redacted(&self) -> TykSession {
        let mut s = self.clone();
        if !s.basic_auth_data.password.is_empty() {
            s.basic_auth_data.password = "<hidden>".into();
        }
        s
    }

    /// Every `rate`/`per` problem: the session's own pair and each `access_rights.<api>.limit`.
    pub fn rate_problems(&self) -> Vec<RateProblem> {
        let mut out = Vec::new();
        rate_problems_into("", self.rate, self.per, &self.access_rights, &mut out);
        out
    }

    /// The session as auth acts on it.
    pub fn to_session(&self) -> Session {
        Session {
            rate: self.rate,
            per: self.per,
            quota_max: self.quota_max,
            quota_renewal_rate: self.quota_renewal_rate,
            expires: self.expires,
            inactive: self.is_inactive,
            access_rights: api_rights(&self.access_rights),
            policies: self.policy_ids().map(str::to_string).collect(),
            org_id: self.org_id.clone(),
            tags: self.tags.clone(),
            alias: self.alias.clone(),
            detailed_recording: self.enable_detailed_recording || self.enable_detail_recording,
            basic_auth_data: BasicAuth {
                password: self.basic_auth_data.password.clone(),
                hash_type: self.basic_auth_data.hash_type.clone(),
            },
            hmac_enabled: self.hmac_enabled,
            hmac_string: self.hmac_string.clone(),
            meta_data: self.meta_data.iter().map(|(k, v)| (k.clone(), meta_text(v))).collect(),
            tyk_name: None,
        }
    }
}

/// What `$tyk_meta.<name>` expands to: a string as it is, null as nothing, anything else as
/// its JSON text.
fn meta_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `access_rights` as auth reads them: each entry under its `api_id` (its map key when it has
/// none), with its `limit` (absent numbers are 0: no limit, as in Tyk), in the map's order.
pub(super) fn api_rights(rights: &BTreeMap<String, AccessDefinition>) -> Vec<ApiRights> {
    rights
        .iter()
        .map(|(key, def)| ApiRights {
            api_id: if def.api_id.is_empty() { key.clone() } else { def.api_id.clone() },
            versions: def.versions.clone(),
            allowed_urls: def
                .allowed_urls
                .iter()
                .map(|u| UrlAccess { url: u.url.clone(), methods: u.methods.clone() })
                .collect(),
            limit: def.extra.get("limit").filter(|l| l.is_object()).map(|l| {
                let f = |k: &str| l.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                let i = |k: &str| l.get(k).and_then(Value::as_i64).unwrap_or(0);
                ApiLimit {
                    rate: f("rate"),
                    per: f("per"),
                    quota_max: i("quota_max"),
                    quota_renewal_rate: i("quota_renewal_rate"),
                }
            }),
        })
        .collect()
}

/// One refused `rate`/`per` value of a session or policy: the field as a dotted path, the value
/// as written, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RateProblem {
    pub field: String,
    pub value: String,
    pub message: &'static str,
}

/// Checks a `rate`/`per` pair as Tyk gives it meaning. `rate` 0 (the default: no limit set) and
/// `rate` -1 mean "no rate limit", as in Tyk: `gateway/session_manager.go`,
/// `SessionLimiter.newRateLimitChecker`, returns no checker when `apiLimit.Rate <= 0` ("If rate
/// is -1 or 0, it means unlimited"), and Tyk's own policies write -1 for it
/// (`internal/policy/testdata/policies.json`, "unlimited-rate"); `per` is then not used. Any
/// other negative rate, and a positive rate with `per <= 0`, have no meaning in Tyk (its API
/// definitions call `per <= 0` "rate limit disabled: per invalid", `apidef.RateLimitMeta.Err`)
/// and would silently act as no limit here, so they are refused where sessions and policies
/// come in (the key API, the policies file, the embedded key store's file).
pub(super) fn check_rate(rate: f64, per: f64) -> Result<(), (&'static str, &'static str)> {
    if !rate.is_finite() || (rate < 0.0 && rate != -1.0) {
        return Err(("rate", "must be a number of requests > 0, or 0 or -1 for no rate limit"));
    }
    if rate > 0.0 && !(per.is_finite() && per > 0.0) {
        return Err(("per", "must be a number of seconds > 0 when rate is set (rate 0 or -1: no rate limit)"));
    }
    Ok(())
}

/// The `rate`/`per` problems of one session or policy (`prefix` before every field name).
pub(super) fn rate_problems_into(
    prefix: &str,
    rate: f64,
    per: f64,
    rights: &BTreeMap<String, AccessDefinition>,
    out: &mut Vec<RateProblem>,
) {
    let mut push = |field: String, value: String, message: &'static str| {
        out.push(RateProblem { field, value, message });
    };
    if let Err((field, message)) = check_rate(rate, per) {
        let value = if field == "rate" { rate } else { per };
        push(format!("{prefix}{field}"), value.to_string(), message);
    }
    for (api, def) in rights {
        // Per-endpoint limits Portcullis does not enforce yet would silently grant more than
        // Tyk does (apply.go:525-529, session_manager.go:222-265): refused by name.
        if let Some(e) = def.extra.get("endpoints").filter(|e| e.as_array().is_some_and(|a| !a.is_empty())) {
            let v = e.to_string();
            let v = if v.len() > 60 { format!("{}...", &v[..v.floor_char_boundary(57)]) } else { v };
            push(format!("{prefix}access_rights.{api}.endpoints"), v, "per-endpoint limits are not supported yet");
        }
        let Some(limit) = def.extra.get("limit") else { continue };
        let at = format!("{prefix}access_rights.{api}.limit");
        let Some(obj) = limit.as_object() else {
            push(at, limit.to_string(), "must be an object with rate and per");
            continue;
        };
        // Absent fields are 0, as in Tyk (and as `api_rights` reads them).
        let mut num = |k: &str| match obj.get(k) {
            None | Some(Value::Null) => Some(0.0),
            Some(v) => {
                let n = v.as_f64();
                if n.is_none() {
                    push(format!("{at}.{k}"), v.to_string(), "must be a number");
                }
                n
            }
        };
        let (Some(r), Some(p)) = (num("rate"), num("per")) else { continue };
        if let Err((field, message)) = check_rate(r, p) {
            let value = if field == "rate" { r } else { p };
            push(format!("{at}.{field}"), value.to_string(), message);
        }
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
        let s: TykSession = serde_json::from_str(text).unwrap();
        assert_eq!(s.rate, 10.0);
        assert_eq!(s.access_rights["a"].versions, ["Default"]);
        assert!(s.extra.contains_key("throttle_interval"));
        assert!(s.access_rights["a"].extra.contains_key("limit"));
        let back: Value = serde_json::to_value(&s).unwrap();
        assert_eq!(back["monitor"]["trigger_limits"], Value::Array(vec![]));
        assert_eq!(back["access_rights"]["a"]["limit"]["rate"], 5);
    }

    #[test]
    fn policy_ids() {
        let s = TykSession { apply_policies: vec!["p1".into()], apply_policy_id: "p0".into(), ..Default::default() };
        assert_eq!(s.policy_ids().collect::<Vec<_>>(), ["p1"], "apply_policies wins; p0 grants nothing");
        assert_eq!(s.to_session().policies, ["p1"]);
        let s = TykSession { apply_policy_id: "p0".into(), ..Default::default() };
        assert_eq!(s.to_session().policies, ["p0"]);
    }

    /// Sessions as Tyk gateways write them to Redis: Tyk 4 writes `null` for every empty list
    /// and map (user/session.go before `omitzero`), Tyk 5 leaves them out. Both must read, and
    /// round-trip with every field kept.
    #[test]
    fn sessions_tyk_gateways_wrote_read_and_round_trip() {
        let tyk4 = r#"{"last_check":0,"allowance":1000,"rate":1000,"per":60,"throttle_interval":0,"throttle_retry_limit":0,
            "max_query_depth":0,"date_created":"2024-03-01T10:00:00.123456789Z","expires":0,"quota_max":-1,
            "quota_renews":1709290800,"quota_remaining":-1,"quota_renewal_rate":60,
            "access_rights":{"api1":{"api_name":"API 1","api_id":"api1","versions":["Default"],"allowed_urls":null,
                "restricted_types":null,"limit":null,"field_access_rights":null,"disable_introspection":false,"allowance_scope":""}},
            "org_id":"default","oauth_client_id":"","oauth_keys":null,"certificate":"",
            "basic_auth_data":{"password":"","hash_type":""},"jwt_data":{"secret":""},"hmac_enabled":false,
            "enable_http_signature_validation":false,"hmac_string":"","rsa_certificate_id":"","is_inactive":false,
            "apply_policy_id":"","apply_policies":null,"data_expires":0,"monitor":{"trigger_limits":null},
            "enable_detail_recording":false,"enable_detailed_recording":false,"meta_data":null,"tags":null,"alias":"",
            "last_updated":"1709287200","id_extractor_deadline":0,"session_lifetime":0}"#;
        let tyk5 = r#"{"allowance":10,"rate":10,"per":1,"date_created":"2026-01-02T03:04:05.5+01:00","quota_max":100,
            "quota_renewal_rate":3600,"access_rights":{"api1":{"api_id":"api1","versions":["Default"],
            "limit":{"rate":5,"per":1,"quota_max":50,"quota_renewal_rate":60}}},"org_id":"default",
            "apply_policies":["p1"],"meta_data":{"user":"ann"},"tags":["gold"],"last_updated":"1767319445"}"#;
        for text in [tyk4, tyk5] {
            let s: TykSession = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
            let d = s.to_session();
            assert!(d.access_rights.iter().any(|r| r.api_id == "api1"), "{:?}", d.access_rights);
            // Kept as written, up to Go's zero values: `null` reads as empty and an empty
            // field may be written out (to Go, nil and empty, absent and "" are the same).
            fn squash(v: &Value) -> Value {
                match v {
                    Value::Object(o) => Value::Object(
                        o.iter()
                            .map(|(k, v)| (k.clone(), squash(v)))
                            .filter(|(_, v)| !matches!(v, Value::Null) && v != &Value::Array(vec![]))
                            .filter(|(_, v)| v != &Value::Object(Map::new()) && v != "" && v != &Value::Bool(false))
                            .collect(),
                    ),
                    // 1000 and 1000.0: the same float64 to Go.
                    Value::Number(n) => n.as_f64().map_or(Value::Null, Value::from),
                    other => other.clone(),
                }
            }
            let back = squash(&serde_json::to_value(&s).unwrap());
            let orig = squash(&serde_json::from_str(text).unwrap());
            for (k, v) in orig.as_object().unwrap() {
                assert_eq!(back.get(k), Some(v), "field {k} kept as written");
            }
        }
    }

    #[test]
    fn what_auth_acts_on() {
        let s: TykSession = serde_json::from_str(
            r#"{"rate": 5, "per": 2, "quota_max": 100, "quota_renewal_rate": 60, "expires": 9,
                "is_inactive": true, "tags": ["t"], "hmac_enabled": true, "hmac_string": "sec",
                "basic_auth_data": {"password": "$2b$hash", "hash_type": "bcrypt"},
                "meta_data": {"plan": "gold", "n": 5, "o": {"a": [1]}, "none": null},
                "access_rights": {
                    "k": {"versions": ["v1"], "allowed_urls": [{"url": "^/x", "methods": ["GET"]}]},
                    "m": {"api_id": "other", "limit": {"rate": 3}},
                    "z": {"api_id": "z", "limit": "bad"}}}"#,
        )
        .unwrap();
        let d = s.to_session();
        assert_eq!((d.rate, d.per, d.quota_max, d.quota_renewal_rate, d.expires), (5.0, 2.0, 100, 60, 9));
        assert!(d.inactive && d.hmac_enabled);
        assert_eq!((d.hmac_string.as_str(), d.tags.as_slice()), ("sec", ["t".to_string()].as_slice()));
        assert_eq!(d.basic_auth_data, BasicAuth { password: "$2b$hash".into(), hash_type: "bcrypt".into() });
        assert_eq!(d.meta_data["plan"], "gold");
        assert_eq!(d.meta_data["n"], "5");
        assert_eq!(d.meta_data["o"], r#"{"a":[1]}"#);
        assert_eq!(d.meta_data["none"], "");
        assert_eq!(
            d.access_rights,
            [
                ApiRights {
                    api_id: "k".into(),
                    versions: vec!["v1".into()],
                    allowed_urls: vec![UrlAccess { url: "^/x".into(), methods: vec!["GET".into()] }],
                    limit: None,
                },
                ApiRights {
                    api_id: "other".into(),
                    limit: Some(ApiLimit { rate: 3.0, ..Default::default() }),
                    ..Default::default()
                },
                ApiRights { api_id: "z".into(), limit: None, ..Default::default() },
            ]
        );
    }

    #[test]
    fn per_endpoint_limits_are_refused_by_name() {
        let s: TykSession = serde_json::from_str(
            r#"{"access_rights": {"d": {"endpoints": [{"path": "/post", "methods": [{"name": "POST", "limit": {"rate": 20, "per": 60}}]}]}}}"#,
        )
        .unwrap();
        let p = s.rate_problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field, "access_rights.d.endpoints");
        let empty: TykSession = serde_json::from_str(r#"{"access_rights": {"d": {"endpoints": []}}}"#).unwrap();
        assert!(empty.rate_problems().is_empty());
    }

    #[test]
    fn rate_and_per_without_a_meaning_are_refused() {
        // Tyk's "no rate limit": rate 0 (the default) or -1, whatever per says.
        for (rate, per) in [(0.0, 0.0), (-1.0, 0.0), (-1.0, -1.0), (0.0, -3.0), (10.0, 1.0), (0.5, 60.0)] {
            assert_eq!(check_rate(rate, per), Ok(()), "{rate}/{per}");
        }
        for (rate, per, field) in
            [(-2.0, 1.0, "rate"), (-0.5, 1.0, "rate"), (f64::NAN, 1.0, "rate"), (10.0, 0.0, "per"), (10.0, -1.0, "per")]
        {
            assert_eq!(check_rate(rate, per).map_err(|e| e.0), Err(field), "{rate}/{per}");
        }
        let s: TykSession = serde_json::from_str(
            r#"{"rate": 5, "per": 0, "access_rights": {
                "a": {"api_id": "a", "limit": {"rate": -5, "per": 1}},
                "b": {"api_id": "b", "limit": {"rate": 1, "per": "1"}},
                "c": {"api_id": "c", "limit": {"rate": -1}},
                "d": {"api_id": "d"}}}"#,
        )
        .unwrap();
        let got: Vec<(String, String)> = s.rate_problems().into_iter().map(|p| (p.field, p.value)).collect();
        assert_eq!(
            got,
            [
                ("per".to_string(), "0".to_string()),
                ("access_rights.a.limit.rate".into(), "-5".into()),
                ("access_rights.b.limit.per".into(), "\"1\"".into()),
            ]
        );
    }
}
