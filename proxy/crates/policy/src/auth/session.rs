//! A key's session (or a basic-auth user's) as auth acts on it: its own limits, access rights,
//! the policies it applies, its credentials' secrets and the meta data `$tyk_meta` templates
//! read.
//!
//! Plain data: Tyk's JSON for it (`SessionState`, with the fields Portcullis does not use kept
//! for round-tripping) is `config::TykSession`, which the key store reads and writes and
//! converts into this type for the workers. Must not: hold the key itself (sessions are looked
//! up by the key's hash, see [`crate::auth::hash_key`]), know a wire format, or do I/O.

use std::collections::BTreeMap;

/// What a key may do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Session {
    /// Requests allowed per `per` seconds; `rate <= 0` means no rate limit (Tyk's meaning).
    /// Used when the session applies no policy.
    pub rate: f64,
    pub per: f64,
    /// Requests per quota period; `-1` or `0` means no quota (Tyk: session_manager.go:450). Used
    /// when the session applies no policy.
    pub quota_max: i64,
    /// Quota period, seconds.
    pub quota_renewal_rate: i64,
    /// Unix time the key expires; `0` or negative: never.
    pub expires: i64,
    pub inactive: bool,
    /// What the key may do on each API. Empty: every API that accepts the key's auth method.
    /// Used when the session applies no policy.
    pub access_rights: Vec<ApiRights>,
    /// Ids of the policies the session applies, in order; when not empty their merge replaces
    /// the session's own rate, quota and access rights.
    pub policies: Vec<String>,
    /// Tyk's `org_id`: policies are looked up within it when set.
    pub org_id: String,
    pub tags: Vec<String>,
    /// Tyk's `alias`, written into request records.
    pub alias: String,
    /// Tyk's `enable_detailed_recording` (or the older `enable_detail_recording`): this key's
    /// requests are recorded in detail.
    pub detailed_recording: bool,
    /// The basic-auth password hash, for a basic-auth user.
    pub basic_auth_data: BasicAuth,
    /// HMAC request signing is enabled for this key, with `hmac_string` as the shared secret.
    pub hmac_enabled: bool,
    pub hmac_string: String,
    /// `$tyk_meta.<name>` -> the text it expands to.
    pub meta_data: BTreeMap<String, String>,
    /// The name a Tyk gateway stored the session under (`apikey-<name>`), when it was found
    /// there rather than under the key's SHA-256: Tyk counts its quota under the same name.
    pub tyk_name: Option<std::sync::Arc<str>>,
}

/// A basic-auth user's stored password.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BasicAuth {
    /// The password hash; empty: the session has no basic-auth password.
    pub password: String,
    /// How `password` is hashed (`"bcrypt"`).
    pub hash_type: String,
}

/// What a session or policy allows on one API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiRights {
    pub api_id: String,
    /// Version names allowed; empty: all versions.
    pub versions: Vec<String>,
    /// If not empty, only these paths (regular expressions, unanchored, as Tyk) and methods.
    pub allowed_urls: Vec<UrlAccess>,
    /// Tyk's per-API `limit`, as written.
    pub limit: Option<ApiLimit>,
}

/// A `limit` of one API in access rights (Tyk's `APILimit`), as written.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ApiLimit {
    pub rate: f64,
    pub per: f64,
    pub quota_max: i64,
    pub quota_renewal_rate: i64,
}

impl ApiLimit {
    /// Tyk's `IsEmpty` for the fields Portcullis reads: nothing set.
    pub fn is_empty(&self) -> bool {
        self.rate == 0.0 && self.per == 0.0 && self.quota_max == 0 && self.quota_renewal_rate == 0
    }
}

/// One `allowed_urls` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UrlAccess {
    /// Regular expression searched in the request path.
    pub url: String,
    /// Methods allowed; empty: any.
    pub methods: Vec<String>,
}

impl Session {
    /// True when the key has expired at `now` (unix seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires > 0 && now >= self.expires
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry() {
        let s = Session { expires: 100, ..Default::default() };
        assert!(!s.is_expired(99));
        assert!(s.is_expired(100));
        assert!(!Session { expires: -1, ..Default::default() }.is_expired(i64::MAX));
    }
}
