//! Basic authentication as Tyk implements it (`use_basic_auth`).
//!
//! Parses `Authorization: Basic base64(user:pass)`, hashes passwords for storage with
//! bcrypt and checks a presented password against a session's `basic_auth_data`
//! (`password` + `hash_type`). The caller looks the user up and builds the response.
//!
//! It must not do I/O and must not panic on any input (no `unwrap`/`expect`/indexing on
//! header-derived data). bcrypt is CPU-heavy (see [`DEFAULT_COST`]): call
//! [`check_password`] from a blocking pool, and cache successes as Tyk does
//! (`basic_auth.cache_ttl`, default 60 s, `disable_caching`).
//!
//! Tyk behaviour (`gateway/mw_basic_auth.go`), and the status/message to answer with:
//! * header absent -> 401 "Authorization field missing" + `WWW-Authenticate: Basic realm="<API name>"`
//!   (caller's case, see [`TYK_MISSING_MESSAGE`], [`www_authenticate`]);
//! * not `<word> <credentials>` -> 400 [`BasicError::NotBasic`];
//! * bad base64 -> 400 [`BasicError::BadBase64`];
//! * not exactly one `:` -> 400 [`BasicError::NoColon`];
//! * unknown user or wrong password -> 401 "User not authorised" + `WWW-Authenticate`
//!   (see [`TYK_UNAUTHORISED_MESSAGE`]).
//!
//! Deliberate differences from Tyk: the scheme word must be `Basic` (any case; Tyk accepts
//! any word), the credentials split at the *first* colon so passwords may contain `:`
//! (RFC 7617; Tyk answers 400), and credentials must be UTF-8.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// bcrypt cost used when the caller has no configured cost.
///
/// Measured on the 2-core build machine (release build, bcrypt 0.19, machine under some
/// load): one verify at cost 10 takes ~60 ms of CPU, at cost 4 ~1.0 ms (each +1 doubles
/// it). At cost 10 one core checks only ~16 passwords per second, hence the caching.
pub const DEFAULT_COST: u32 = 10;
/// bcrypt only uses the first 72 bytes of a password; [`hash_password`] refuses longer ones.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// Status Tyk answers when the header is absent (with `WWW-Authenticate`).
pub const TYK_MISSING_STATUS: u16 = 401;
/// Message Tyk answers when the header is absent.
pub const TYK_MISSING_MESSAGE: &str = "Authorization field missing";
/// Status Tyk answers for an unknown user or a wrong password (with `WWW-Authenticate`).
pub const TYK_UNAUTHORISED_STATUS: u16 = 401;
/// Message Tyk answers for an unknown user or a wrong password.
pub const TYK_UNAUTHORISED_MESSAGE: &str = "User not authorised";

/// Errors from parsing the header or hashing a password. The parse errors' Display texts
/// are Tyk's own 400 messages and are safe to send to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasicError {
    /// Not `Basic <credentials>`. Tyk: 400.
    #[error("Attempted access with malformed header, header not in basic auth format")]
    NotBasic,
    /// Credentials are not standard, padded base64. Tyk: 400.
    #[error("Attempted access with malformed header, auth data not encoded correctly")]
    BadBase64,
    /// Decoded credentials contain no `:`. Tyk: 400.
    #[error("Attempted access with malformed header, values not in basic auth format")]
    NoColon,
    /// Decoded credentials are not UTF-8 (Tyk has no such check; answered like bad base64).
    #[error("Attempted access with malformed header, auth data not encoded correctly")]
    NotUtf8,
    /// bcrypt cost outside 4..=31 (admin/config error, not a client error).
    #[error("bcrypt cost must be between 4 and 31")]
    InvalidCost(u32),
    /// Password longer than [`MAX_PASSWORD_BYTES`] (Go's bcrypt refuses it too).
    #[error("password longer than 72 bytes")]
    PasswordTooLong,
    /// bcrypt failed (e.g. no randomness available).
    #[error("password hashing failed")]
    Hash,
}

impl BasicError {
    /// HTTP status to answer with: 400 for header errors (as Tyk), 500 for hashing errors
    /// (those only happen on the admin path).
    pub fn tyk_status(&self) -> u16 {
        match self {
            BasicError::NotBasic | BasicError::BadBase64 | BasicError::NoColon | BasicError::NotUtf8 => 400,
            BasicError::InvalidCost(_) | BasicError::PasswordTooLong | BasicError::Hash => 500,
        }
    }
}

/// `WWW-Authenticate` value Tyk sends with its 401s: `Basic realm="<API name>"`
/// (`"` and `\` in the name are escaped, control characters dropped).
pub fn www_authenticate(realm: &str) -> String {
    let mut out = String::with_capacity(realm.len() + 14);
    out.push_str("Basic realm=\"");
    for c in realm.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Parses an `Authorization` header value `Basic base64(user:pass)` into
/// `(user, password)`. The scheme is case-insensitive; the credentials split at the
/// first `:` (so the password may contain colons, the user may not).
pub fn parse_basic(value: &str) -> Result<(String, String), BasicError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once([' ', '\t']).ok_or(BasicError::NotBasic)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(BasicError::NotBasic);
    }
    let encoded = rest.trim_start();
    if encoded.is_empty() || encoded.contains([' ', '\t']) {
        return Err(BasicError::NotBasic);
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| BasicError::BadBase64)?;
    let text = String::from_utf8(decoded).map_err(|_| BasicError::NotUtf8)?;
    let (user, password) = text.split_once(':').ok_or(BasicError::NoColon)?;
    Ok((user.to_owned(), password.to_owned()))
}

/// Hashes a password for storage (`basic_auth_data.password` with `hash_type: "bcrypt"`).
/// `cost` 4..=31; use [`DEFAULT_COST`] (10) unless configured. Output is a `$2b$` string,
/// which Go's `x/crypto/bcrypt` (Tyk) also verifies.
pub fn hash_password(password: &str, cost: u32) -> Result<String, BasicError> {
    if !(4..=31).contains(&cost) {
        return Err(BasicError::InvalidCost(cost));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(BasicError::PasswordTooLong);
    }
    bcrypt::hash(password, cost).map_err(|_| BasicError::Hash)
}

/// Checks `password` against the stored value for the session's `hash_type`:
/// * `"bcrypt"` -> bcrypt verify (also any unrecognised type, as Tyk's `default:` branch);
/// * `""` or `"plain"` -> constant-time compare with the stored plain text (Tyk's legacy
///   unhashed passwords; `""` is Tyk's `HashPlainText`);
/// * `"sha256"` -> stored must be the lower-case hex SHA-256 of the password (Tyk's
///   `storage.HashStr`), compared in constant time;
/// * `"murmur32"`/`"murmur64"`/`"murmur128"` (Tyk key-hash types) -> unsupported, `false`.
///
/// Never panics; a malformed stored hash just gives `false`. bcrypt uses only the first
/// 72 bytes of the password, like Go's `CompareHashAndPassword`.
pub fn check_password(password: &str, stored: &str, hash_type: &str) -> bool {
    match hash_type {
        "" | "plain" => {
            // Compare fixed-size digests so the time does not depend on the lengths either.
            let a = Sha256::digest(password.as_bytes());
            let b = Sha256::digest(stored.as_bytes());
            bool::from(a[..].ct_eq(&b[..]))
        }
        "sha256" => {
            let digest = Sha256::digest(password.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            bool::from(hex.as_bytes().ct_eq(stored.as_bytes()))
        }
        "murmur32" | "murmur64" | "murmur128" => false,
        _ => bcrypt::verify(password, stored).unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(raw: &[u8]) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }

    #[test]
    fn parses_valid_headers() {
        assert_eq!(parse_basic("Basic dXNlcjpwYXNz"), Ok(("user".to_owned(), "pass".to_owned())));
        assert_eq!(parse_basic("  basic \t dXNlcjpwYXNz  "), Ok(("user".to_owned(), "pass".to_owned())));
        assert_eq!(parse_basic(&header(b"user:")), Ok(("user".into(), String::new())));
        assert_eq!(parse_basic(&header(b":")), Ok((String::new(), String::new())));
        assert_eq!(parse_basic(&header("ünï:cødé".as_bytes())), Ok(("ünï".into(), "cødé".into())));
    }

    #[test]
    fn password_with_colons_splits_at_first() {
        assert_eq!(parse_basic(&header(b"user:pa:ss:")), Ok(("user".to_owned(), "pa:ss:".to_owned())));
    }

    #[test]
    fn bad_header_shapes() {
        for v in [
            "",
            "Basic",
            "Basic ",
            "Basic    ",
            "Bearer dXNlcjpwYXNz",
            "Basicx dXNlcjpwYXNz",
            "dXNlcjpwYXNz",
            "Basic dXNl cjpwYXNz",
            "Signature keyId=x",
        ] {
            assert_eq!(parse_basic(v), Err(BasicError::NotBasic), "{v:?}");
        }
        for v in ["Basic !!!!", "Basic dXNlcjpwYXNz=", "Basic dXNlcjpwYXN", "Basic dXNlcjpwYXNz\u{e9}"] {
            assert_eq!(parse_basic(v), Err(BasicError::BadBase64), "{v:?}");
        }
        assert_eq!(parse_basic(&header(b"userpass")), Err(BasicError::NoColon));
        assert_eq!(parse_basic(&header(b"us\xffer:pass")), Err(BasicError::NotUtf8));
        assert_eq!(BasicError::NoColon.tyk_status(), 400);
        assert_eq!(
            BasicError::BadBase64.to_string(),
            "Attempted access with malformed header, auth data not encoded correctly"
        );
    }

    #[test]
    fn odd_input_never_panics() {
        let pieces = ["Basic", " ", "€", "=", ":", "dXNl", "\t", "é", "%", "=="];
        let mut state: u32 = 12345;
        for _ in 0..5_000 {
            let mut s = String::new();
            for _ in 0..(state % 7) {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                s.push_str(pieces.get((state >> 16) as usize % pieces.len()).copied().unwrap_or(""));
            }
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let _ = parse_basic(&s);
            assert!(!check_password(&s, "$2b$04$garbage", "bcrypt"));
        }
    }

    #[test]
    fn bcrypt_round_trip_and_wrong_password() {
        let stored = hash_password("s3cret:with:colons", 4).unwrap();
        assert!(stored.starts_with("$2b$04$"));
        assert!(check_password("s3cret:with:colons", &stored, "bcrypt"));
        assert!(!check_password("s3cret:with:colonz", &stored, "bcrypt"));
        assert!(!check_password("", &stored, "bcrypt"));
        // Unknown hash types use bcrypt, as Tyk's default branch.
        assert!(check_password("s3cret:with:colons", &stored, "whatever"));
        // A bcrypt hash is not a plain password.
        assert!(!check_password("s3cret:with:colons", &stored, ""));
    }

    #[test]
    fn verifies_reference_2a_hash() {
        // OpenBSD/Go bcrypt test vector ($2a$ as produced by Go's x/crypto/bcrypt).
        let h = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
        assert!(check_password("U*U", h, "bcrypt"));
        assert!(!check_password("U*V", h, "bcrypt"));
    }

    #[test]
    fn malformed_stored_hash_is_false() {
        for stored in [
            "",
            "plain",
            "$2b$",
            "$2b$99$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOe",
            "$9z$05$€€€€",
        ] {
            assert!(!check_password("U*U", stored, "bcrypt"), "{stored:?}");
        }
    }

    #[test]
    fn hash_password_limits() {
        assert_eq!(hash_password("x", 3), Err(BasicError::InvalidCost(3)));
        assert_eq!(hash_password("x", 32), Err(BasicError::InvalidCost(32)));
        let long = "a".repeat(73);
        assert_eq!(hash_password(&long, 4), Err(BasicError::PasswordTooLong));
        let max = "a".repeat(72);
        let stored = hash_password(&max, 4).unwrap();
        assert!(check_password(&max, &stored, "bcrypt"));
        assert!(!check_password(&"a".repeat(71), &stored, "bcrypt"));
        assert_eq!(DEFAULT_COST, 10);
    }

    #[test]
    fn plain_and_sha256() {
        for ht in ["", "plain"] {
            assert!(check_password("pw", "pw", ht));
            assert!(!check_password("pw", "pW", ht));
            assert!(!check_password("pw", "pw ", ht));
            assert!(!check_password("", "pw", ht));
            assert!(check_password("", "", ht));
        }
        // sha256("password")
        let hex = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
        assert!(check_password("password", hex, "sha256"));
        assert!(!check_password("passwore", hex, "sha256"));
        assert!(!check_password("password", &hex.to_uppercase(), "sha256"));
        assert!(!check_password("password", "password", "murmur64"));
    }

    #[test]
    fn www_authenticate_header() {
        assert_eq!(www_authenticate("My API"), "Basic realm=\"My API\"");
        assert_eq!(www_authenticate("a\"b\\c\nd"), "Basic realm=\"a\\\"b\\\\cd\"");
    }
}
