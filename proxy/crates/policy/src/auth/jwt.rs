//! JWT verification for the `jwt` auth mode (Tyk's `enable_jwt`).
//!
//! Job: turn a compact JWS (the bearer token, without any `Bearer ` prefix) into a set of
//! verified claims, using verification keys that were built once at config load ([`KeySet`],
//! from Tyk's `jwt_source` or from a JWKS document the caller already fetched), and Tyk's
//! `jwt_signing_method` ([`Family`]) and clock skews ([`Skew`]). A small per-worker
//! [`VerifiedCache`] lets workers skip the signature check for tokens seen recently.
//!
//! Order of checks in [`verify`]: shape and size, header, `alg` against the family (so `none`,
//! unknown algorithms and HS/RS confusion are rejected before any key is touched), key choice
//! by `kid`, signature, claims JSON, then `exp`/`nbf`/`iat` with Tyk's skews. jsonwebtoken's
//! own claim validation is never used: only its signature primitives are.
//!
//! What this module must not do: no I/O, no network (JWKS fetching is the caller's job), no
//! logging of secrets or tokens, no global state, and no panics on any input (token, header,
//! claims, `jwt_source`, JWKS): every failure is a typed [`JwtError`] or an error string at
//! config load.

use std::fmt;
use std::rc::Rc;
use std::str::FromStr;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Longest token accepted, in bytes. Real tokens are a few KiB; this bounds the work an
/// unauthenticated client can cause (base64 + JSON + hashing).
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Smallest RSA modulus accepted (RFC 7518 §3.3: "a key of size 2048 bits or larger MUST be used").
const RSA_MIN_BITS: usize = 2048;
/// Largest RSA modulus the RustCrypto backend verifies with.
const RSA_MAX_BITS: usize = 4096;

/// Strict base64url without padding, as JWS compact serialization requires.
const B64URL: GeneralPurpose = URL_SAFE_NO_PAD;
/// Lenient decoders for configuration values (padding optional).
const B64_STD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const B64_URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

// ---------------------------------------------------------------------------------------------
// Family
// ---------------------------------------------------------------------------------------------

/// Tyk's `jwt_signing_method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// HS256 / HS384 / HS512 with a shared secret.
    Hmac,
    /// RS256/384/512 and PS256/384/512.
    Rsa,
    /// ES256 (P-256) / ES384 (P-384).
    Ecdsa,
}

impl Family {
    /// `"hmac"`, `"rsa"` or `"ecdsa"`, case-insensitive, surrounding whitespace ignored.
    /// Anything else (including the empty string) is `None`; the caller decides what an
    /// unset signing method means.
    pub fn parse(s: &str) -> Option<Family> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("hmac") {
            Some(Family::Hmac)
        } else if s.eq_ignore_ascii_case("rsa") {
            Some(Family::Rsa)
        } else if s.eq_ignore_ascii_case("ecdsa") {
            Some(Family::Ecdsa)
        } else {
            None
        }
    }

    /// Tyk's name for the family.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Hmac => "hmac",
            Family::Rsa => "rsa",
            Family::Ecdsa => "ecdsa",
        }
    }

    fn allows(self, alg: Algorithm) -> bool {
        let kinds: &[KeyKind] = match self {
            Family::Hmac => &[KeyKind::Hmac],
            Family::Rsa => &[KeyKind::Rsa],
            Family::Ecdsa => &[KeyKind::EcP256, KeyKind::EcP384],
        };
        kinds.iter().any(|k| k.fits(alg))
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// Which algorithms a key can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Hmac,
    Rsa,
    EcP256,
    EcP384,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (KeyKind::Hmac, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
                | (
                    KeyKind::Rsa,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                )
                | (KeyKind::EcP256, Algorithm::ES256)
                | (KeyKind::EcP384, Algorithm::ES384)
        )
    }
}

#[derive(Clone)]
struct Key {
    kind: KeyKind,
    /// JWK `kid`, if any.
    kid: Option<String>,
    /// JWK `alg`, if any: the key then only verifies that algorithm.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl Key {
    fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material (HMAC secrets especially).
        f.debug_struct("Key")
            .field("kind", &self.kind)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Verification keys for one API, built at config load (control plane), read by workers.
///
/// Immutable once built; `Send + Sync`, so it can be shared behind an `Arc`.
#[derive(Clone)]
pub struct KeySet {
    family: Family,
    keys: Vec<Key>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet").field("family", &self.family).field("keys", &self.keys).finish()
    }
}

impl KeySet {
    /// No keys yet (a JWKS not fetched yet): every token gets [`JwtError::NoKey`].
    pub fn empty(family: Family) -> KeySet {
        KeySet { family, keys: Vec::new() }
    }

    /// Tyk's `jwt_source` for a static key: a base64-encoded value that decodes either to a
    /// PEM public key / certificate (RSA or EC: `PUBLIC KEY`, `RSA PUBLIC KEY`, `CERTIFICATE`)
    /// or, for the Hmac family, to the raw shared secret. PEM text given directly (not base64)
    /// is accepted for the rsa/ecdsa families, and so is base64 of a bare DER
    /// SubjectPublicKeyInfo (the body of a `PUBLIC KEY` PEM).
    ///
    /// A URL (plain or base64-encoded, as Tyk allows for JWKS) is an error here: the caller
    /// fetches it and uses [`KeySet::from_jwks`].
    pub fn from_source(family: Family, source: &str) -> Result<KeySet, String> {
        let src = source.trim();
        if src.is_empty() {
            return Err("jwt_source is empty".to_string());
        }
        if looks_like_url(src.as_bytes()) {
            return Err("jwt_source is a URL: fetch the JWKS and build the keys from it".to_string());
        }
        if src.starts_with("-----BEGIN") {
            return match family {
                Family::Hmac => Err("jwt_source is not valid base64 (the hmac family needs \
                                     the base64-encoded shared secret, not PEM)"
                    .to_string()),
                Family::Rsa | Family::Ecdsa => {
                    let key = key_from_pem(family, src.as_bytes())?;
                    Ok(KeySet { family, keys: vec![key] })
                }
            };
        }
        let decoded =
            decode_config_b64(src).ok_or_else(|| "jwt_source is not valid base64 (nor PEM text)".to_string())?;
        if looks_like_url(decoded.trim_ascii()) {
            return Err("jwt_source decodes to a URL: fetch the JWKS and build the keys from it".to_string());
        }
        let key = match family {
            Family::Hmac => {
                if decoded.is_empty() {
                    return Err("jwt_source decodes to an empty hmac secret".to_string());
                }
                Key { kind: KeyKind::Hmac, kid: None, alg: None, key: DecodingKey::from_secret(&decoded) }
            }
            Family::Rsa | Family::Ecdsa => {
                let text = decoded.trim_ascii();
                if contains(text, b"-----BEGIN") {
                    key_from_pem(family, text)?
                } else if text.first() == Some(&0x30) {
                    // Bare DER (a SEQUENCE): assume SubjectPublicKeyInfo.
                    key_from_pem(family, der_to_pem("PUBLIC KEY", text).as_bytes())
                        .map_err(|e| format!("jwt_source decodes to DER that is not a usable key: {e}"))?
                } else {
                    return Err(format!("jwt_source does not decode to a PEM public key for the {family} family"));
                }
            }
        };
        Ok(KeySet { family, keys: vec![key] })
    }

    /// A JWKS document (RFC 7517 JSON, `{"keys":[...]}`) fetched by the caller. Keeps keys whose
    /// `kty` fits the family (RSA `n`/`e`, or `x5c` when `n`/`e` are absent; EC `crv`/`x`/`y`
    /// on P-256/P-384; `oct` `k` for hmac) and remembers `kid` and `alg`. Keys for another
    /// family, with `use` other than `sig`, with an `alg` outside the family, or otherwise
    /// unusable are skipped. Errors if the document is not a JWKS or no key is usable.
    pub fn from_jwks(family: Family, json: &[u8]) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_slice(json).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
        let list = doc.get("keys").and_then(Value::as_array).ok_or_else(|| "JWKS has no \"keys\" array".to_string())?;
        let mut keys = Vec::new();
        let mut skipped: Vec<String> = Vec::new();
        for (i, jwk) in list.iter().enumerate() {
            match key_from_jwk(family, jwk) {
                Ok(Some(k)) => keys.push(k),
                Ok(None) => {}
                Err(e) => skipped.push(format!("key {i}: {e}")),
            }
        }
        if keys.is_empty() {
            let mut msg = format!("JWKS has no usable key for the {family} family");
            if !skipped.is_empty() {
                msg.push_str(" (");
                msg.push_str(&skipped.join("; "));
                msg.push(')');
            }
            return Err(msg);
        }
        Ok(KeySet { family, keys })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true for a set built by the constructors (they error instead).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The family the keys were built for.
    pub fn family(&self) -> Family {
        self.family
    }
}

fn looks_like_url(s: &[u8]) -> bool {
    let lower = |n: usize| s.get(..n).map(<[u8]>::to_ascii_lowercase);
    lower(7).as_deref() == Some(b"http://") || lower(8).as_deref() == Some(b"https://")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Standard or URL-safe base64, padding optional, ASCII whitespace (line wrapping) ignored.
fn decode_config_b64(s: &str) -> Option<Vec<u8>> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    B64_STD_LENIENT.decode(&compact).or_else(|_| B64_URL_LENIENT.decode(&compact)).ok()
}

fn der_to_pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    let mut rest = body.as_str();
    while let Some((line, tail)) = rest.split_at_checked(rest.len().min(64)) {
        if line.is_empty() {
            break;
        }
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The label of the first PEM block (`-----BEGIN <label>-----`).
fn pem_label(pem: &[u8]) -> Option<&str> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let start = pem.windows(BEGIN.len()).position(|w| w == BEGIN)? + BEGIN.len();
    let rest = pem.get(start..)?;
    let end = rest.windows(5).position(|w| w == b"-----")?;
    std::str::from_utf8(rest.get(..end)?).ok()
}

/// A static RSA/EC public key from PEM (`PUBLIC KEY`, `RSA PUBLIC KEY`, `CERTIFICATE`).
fn key_from_pem(family: Family, pem: &[u8]) -> Result<Key, String> {
    let label = pem_label(pem).ok_or_else(|| format!("not a PEM public key for the {family} family"))?;
    if label.contains("PRIVATE") {
        return Err(format!("jwt_source holds a private key ({label}); give the public key for the {family} family"));
    }
    // Start parsing at the first block so leading text does not matter.
    let from = pem.windows(10).position(|w| w == b"-----BEGIN").and_then(|i| pem.get(i..)).unwrap_or(pem);
    let rsa = || DecodingKey::from_rsa_pem(from).ok();
    let ec = || DecodingKey::from_ec_pem(from).ok();
    match family {
        Family::Rsa => match rsa() {
            Some(k) => {
                let der = k.try_get_as_bytes().map_err(|_| bad_pem(family, label))?;
                let (n, e) = (DEFAULT_PROVIDER.key_utils.rsa_pub_components_from_public_key)(der)
                    .map_err(|_| bad_pem(family, label))?;
                Ok(Key { kind: KeyKind::Rsa, kid: None, alg: None, key: rsa_key(&n, &e)? })
            }
            None if ec().is_some() => {
                Err("not a PEM public key for the rsa family (it is an EC key: use jwt_signing_method ecdsa)"
                    .to_string())
            }
            None => Err(bad_pem(family, label)),
        },
        Family::Ecdsa => match ec() {
            Some(k) => {
                let point = k.try_get_as_bytes().map_err(|_| bad_pem(family, label))?;
                ec_key(point).map(|(kind, key)| Key { kind, kid: None, alg: None, key })
            }
            None if rsa().is_some() => {
                Err("not a PEM public key for the ecdsa family (it is an RSA key: use jwt_signing_method rsa)"
                    .to_string())
            }
            None => Err(bad_pem(family, label)),
        },
        Family::Hmac => Err("the hmac family takes a shared secret, not a PEM key".to_string()),
    }
}

fn bad_pem(family: Family, label: &str) -> String {
    format!("not a PEM public key for the {family} family (PEM block \"{label}\" could not be read)")
}

/// Validates RSA components the way the RustCrypto backend will, plus the RFC 7518 minimum size.
fn rsa_key(n: &[u8], e: &[u8]) -> Result<DecodingKey, String> {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    let bits = match n.first() {
        Some(&b) => (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
        None => 0,
    };
    if bits < RSA_MIN_BITS {
        return Err(format!("RSA key is {bits} bits; at least {RSA_MIN_BITS} are required"));
    }
    if bits > RSA_MAX_BITS {
        return Err(format!("RSA key is {bits} bits; at most {RSA_MAX_BITS} are supported"));
    }
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err("RSA modulus is even".to_string());
    }
    if e.len() > 8 {
        return Err("RSA public exponent is too large".to_string());
    }
    let e_val = e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if !(3..=(1u64 << 33) - 1).contains(&e_val) || e_val & 1 == 0 {
        return Err("RSA public exponent is invalid".to_string());
    }
    Ok(DecodingKey::from_rsa_raw_components(n, e))
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b.get(first..).unwrap_or(&[])
}

/// An EC public key from its SEC1 point; the curve follows from the encoding length.
fn ec_key(point: &[u8]) -> Result<(KeyKind, DecodingKey), String> {
    let (kind, alg) = match (point.len(), point.first()) {
        (65, Some(4)) | (33, Some(2 | 3)) => (KeyKind::EcP256, Algorithm::ES256),
        (97, Some(4)) | (49, Some(2 | 3)) => (KeyKind::EcP384, Algorithm::ES384),
        _ => return Err("EC key is not on P-256 or P-384".to_string()),
    };
    let key = DecodingKey::from_ec_der(point);
    // Building a verifier parses the point: rejects points not on the curve.
    (DEFAULT_PROVIDER.verifier_factory)(&alg, &key)
        .map_err(|_| "EC public key is not a valid curve point".to_string())?;
    Ok((kind, key))
}

fn jwk_str<'a>(jwk: &'a Value, name: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{name}\" is not a string")),
    }
}

fn jwk_b64(jwk: &Value, name: &str) -> Result<Vec<u8>, String> {
    let s = jwk_str(jwk, name)?.ok_or_else(|| format!("missing \"{name}\""))?;
    B64_URL_LENIENT.decode(s.trim()).map_err(|_| format!("\"{name}\" is not valid base64url"))
}

/// `Ok(None)`: the key is for another family or another use (silently skipped).
/// `Err`: the key claims to fit but cannot be used (reported only if nothing is usable).
fn key_from_jwk(family: Family, jwk: &Value) -> Result<Option<Key>, String> {
    if !jwk.is_object() {
        return Err("not a JSON object".to_string());
    }
    let kind_fits = match jwk_str(jwk, "kty")? {
        Some("RSA") => family == Family::Rsa,
        Some("EC") => family == Family::Ecdsa,
        Some("oct") => family == Family::Hmac,
        _ => false,
    };
    if !kind_fits {
        return Ok(None);
    }
    if jwk_str(jwk, "use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array) {
        if !ops.iter().any(|o| o.as_str() == Some("verify")) {
            return Ok(None);
        }
    }
    let alg = match jwk_str(jwk, "alg")? {
        None => None,
        Some(a) => match Algorithm::from_str(a) {
            Ok(a) if family.allows(a) => Some(a),
            _ => return Ok(None), // e.g. "RSA-OAEP", or an alg of another family
        },
    };
    let kid = jwk_str(jwk, "kid")?.map(str::to_owned);

    let (kind, key) = match family {
        Family::Hmac => {
            let k = jwk_b64(jwk, "k")?;
            if k.is_empty() {
                return Err("empty \"k\"".to_string());
            }
            (KeyKind::Hmac, DecodingKey::from_secret(&k))
        }
        Family::Rsa => {
            if jwk.get("n").is_some() || jwk.get("e").is_some() {
                (KeyKind::Rsa, rsa_key(&jwk_b64(jwk, "n")?, &jwk_b64(jwk, "e")?)?)
            } else {
                let k = key_from_x5c(family, jwk)?;
                (k.kind, k.key)
            }
        }
        Family::Ecdsa => {
            if jwk.get("x").is_some() || jwk.get("y").is_some() {
                let (len, want) = match jwk_str(jwk, "crv")? {
                    Some("P-256") => (32, KeyKind::EcP256),
                    Some("P-384") => (48, KeyKind::EcP384),
                    _ => return Ok(None), // P-521, secp256k1, ...: not supported
                };
                let x = jwk_b64(jwk, "x")?;
                let y = jwk_b64(jwk, "y")?;
                if x.len() != len || y.len() != len {
                    return Err("EC coordinates have the wrong length for the curve".to_string());
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let (kind, key) = ec_key(&point)?;
                if kind != want {
                    return Err("EC point does not match \"crv\"".to_string());
                }
                (kind, key)
            } else {
                let k = key_from_x5c(family, jwk)?;
                (k.kind, k.key)
            }
        }
    };
    let key = Key { kind, kid, alg, key };
    if let Some(a) = alg {
        if !key.kind.fits(a) {
            return Ok(None); // e.g. alg ES384 on a P-256 key
        }
    }
    Ok(Some(key))
}

/// First certificate of `x5c` (standard base64 DER), for JWKS that only carry certificates.
fn key_from_x5c(family: Family, jwk: &Value) -> Result<Key, String> {
    let first = jwk
        .get("x5c")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .ok_or_else(|| "no key material (neither components nor \"x5c\")".to_string())?;
    let der = decode_config_b64(first).ok_or_else(|| "\"x5c\" is not valid base64".to_string())?;
    key_from_pem(family, der_to_pem("CERTIFICATE", &der).as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Claims and errors
// ---------------------------------------------------------------------------------------------

/// Clock skew allowances in seconds (Tyk: `jwt_expires_at_validation_skew`,
/// `jwt_not_before_validation_skew`, `jwt_issued_at_validation_skew`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Skew {
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
}

/// Verified claims.
#[derive(Debug, Clone)]
pub struct Claims {
    pub map: Map<String, Value>,
    /// `exp` if present (seconds since epoch; fractions dropped, negative values as 0).
    pub exp: Option<u64>,
    /// The identity claim as the API that verified the token reads it (`jwt_identity_base_field`,
    /// else `sub`), set on first use; `Some(None)`: the token has none.
    pub identity: std::cell::OnceCell<Result<Rc<str>, &'static str>>,
    /// The grant (policies) the API that verified the token gives it, set on first use. A
    /// cached `Claims` belongs to one API and snapshot generation, and so do the policies.
    pub grant: std::cell::OnceCell<Result<std::sync::Arc<super::policy::Grant>, super::policy::GrantError>>,
}

impl Claims {
    /// A claim rendered as text for headers/identities: strings as-is, numbers/bools via
    /// `to_string`, arrays/objects as compact JSON; `None` if absent or null.
    pub fn text(&self, name: &str) -> Option<String> {
        match self.map.get(name)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            v @ (Value::Array(_) | Value::Object(_)) => serde_json::to_string(v).ok(),
        }
    }
}

/// Why a token was rejected. Display texts are short and safe to send to clients.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// Not a compact JWS (three base64url parts), bad header/claims JSON, or a time claim
    /// that is not a number. The payload is a fixed, client-safe reason.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// `alg` is `none` in any letter case.
    #[error("signing algorithm none is not allowed")]
    AlgNone,
    /// `alg` is unknown or outside the API's family (e.g. HS256 on an rsa API). `alg` is a
    /// sanitised copy of the header value (at most 32 chars of `[A-Za-z0-9_+-]`).
    #[error("signing algorithm {alg} is not allowed for this API ({family})")]
    AlgNotAllowed { alg: String, family: Family },
    /// No key of the right type (and `kid`, when the header has one).
    #[error("no key matches the token")]
    NoKey,
    #[error("signature is invalid")]
    BadSignature,
    #[error("token is expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token is issued in the future")]
    IssuedInFuture,
}

/// The header fields we act on. Unknown fields are ignored (`typ`, `cty`, `x5t`, ...).
#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    alg: Option<Value>,
    #[serde(default)]
    kid: Option<Value>,
    #[serde(default)]
    crit: Option<Value>,
}

fn sanitize_alg(alg: &str) -> String {
    let s: String =
        alg.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+')).take(32).collect();
    if s.is_empty() {
        "(invalid)".to_string()
    } else {
        s
    }
}

/// A NumericDate claim: absent/null → None; a number → whole seconds (negative → 0);
/// anything else → Malformed.
fn numeric_date(map: &Map<String, Value>, name: &str, err: &'static str) -> Result<Option<u64>, JwtError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else if n.as_i64().is_some() {
                Ok(Some(0)) // negative integer
            } else {
                match n.as_f64() {
                    // `as` saturates: huge values become u64::MAX, negatives 0.
                    Some(f) if f.is_finite() => Ok(Some(f.floor() as u64)),
                    _ => Err(JwtError::Malformed(err)),
                }
            }
        }
        Some(_) => Err(JwtError::Malformed(err)),
    }
}

// ---------------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------------

/// Verifies `token` (compact JWS, without any "Bearer " prefix) against `keys` for `family`.
///
/// Checks, in order: size and shape; header JSON; `alg` against `family` (`none` in any case →
/// [`JwtError::AlgNone`], unknown or other-family → [`JwtError::AlgNotAllowed`]) before any key
/// is touched; key choice by `kid` (keys with another `kid` are never tried, keys without a
/// `kid` — e.g. a static `jwt_source` — are tried when no key has that `kid`; without a header
/// `kid` every key of the right type is tried); signature; claims JSON object; then with `now`
/// in seconds since epoch: expired when `now > exp + skew.exp`, not yet valid when
/// `now + skew.nbf < nbf`, issued in future when `iat > now + skew.iat`. `exp`/`nbf`/`iat` may
/// be absent but if present must be numbers.
pub fn verify(token: &str, family: Family, keys: &KeySet, skew: Skew, now: u64) -> Result<Claims, JwtError> {
    if token.is_empty() {
        return Err(JwtError::Malformed("empty token"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed("token too long"));
    }
    let (message, sig_b64) = token.rsplit_once('.').ok_or(JwtError::Malformed("not three parts"))?;
    let (header_b64, payload_b64) = message.split_once('.').ok_or(JwtError::Malformed("not three parts"))?;
    if payload_b64.contains('.') {
        return Err(JwtError::Malformed("not three parts"));
    }

    // Header.
    let header_json = B64URL.decode(header_b64).map_err(|_| JwtError::Malformed("header is not base64url"))?;
    let header: Header =
        serde_json::from_slice(&header_json).map_err(|_| JwtError::Malformed("header is not a JSON object"))?;
    let alg_text = match &header.alg {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(JwtError::Malformed("header alg is not a string")),
        None => return Err(JwtError::Malformed("header has no alg")),
    };
    if alg_text.eq_ignore_ascii_case("none") {
        return Err(JwtError::AlgNone);
    }
    let alg = match Algorithm::from_str(alg_text) {
        Ok(a) if family.allows(a) => a,
        _ => return Err(JwtError::AlgNotAllowed { alg: sanitize_alg(alg_text), family }),
    };
    if header.crit.is_some() {
        // RFC 7515 §4.1.11: we understand no extension, so any "crit" must be rejected.
        return Err(JwtError::Malformed("unsupported critical header"));
    }
    let kid = match &header.kid {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(JwtError::Malformed("header kid is not a string")),
    };

    // Remaining parts must be well-formed before we spend a signature check.
    let payload = B64URL.decode(payload_b64).map_err(|_| JwtError::Malformed("payload is not base64url"))?;
    let signature = B64URL.decode(sig_b64).map_err(|_| JwtError::Malformed("signature is not base64url"))?;

    // Keys.
    if keys.family != family {
        return Err(JwtError::NoKey);
    }
    let kid_matches = kid.is_some_and(|id| keys.keys.iter().any(|k| k.fits(alg) && k.kid.as_deref() == Some(id)));
    let mut tried = false;
    let mut ok = false;
    for key in keys.keys.iter().filter(|k| k.fits(alg)) {
        let eligible = match kid {
            None => true,
            Some(id) if kid_matches => key.kid.as_deref() == Some(id),
            Some(_) => key.kid.is_none(), // unknown kid: only keys without a kid (static keys)
        };
        if !eligible {
            continue;
        }
        tried = true;
        let Ok(verifier) = (DEFAULT_PROVIDER.verifier_factory)(&alg, &key.key) else {
            continue;
        };
        if verifier.verify(message.as_bytes(), &signature).is_ok() {
            ok = true;
            break;
        }
    }
    if !tried {
        return Err(JwtError::NoKey);
    }
    if !ok {
        return Err(JwtError::BadSignature);
    }

    // Claims (only parsed once the signature is known good).
    let map: Map<String, Value> =
        serde_json::from_slice(&payload).map_err(|_| JwtError::Malformed("claims are not a JSON object"))?;
    let exp = numeric_date(&map, "exp", "exp is not a number")?;
    let nbf = numeric_date(&map, "nbf", "nbf is not a number")?;
    let iat = numeric_date(&map, "iat", "iat is not a number")?;
    if let Some(exp) = exp {
        if now > exp.saturating_add(skew.exp) {
            return Err(JwtError::Expired);
        }
    }
    if let Some(nbf) = nbf {
        if now.saturating_add(skew.nbf) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    if let Some(iat) = iat {
        if iat > now.saturating_add(skew.iat) {
            return Err(JwtError::IssuedInFuture);
        }
    }
    Ok(Claims { map, exp, identity: Default::default(), grant: Default::default() })
}

// ---------------------------------------------------------------------------------------------
// Per-worker cache
// ---------------------------------------------------------------------------------------------

type CacheKey = [u8; 32];

struct Entry {
    claims: Rc<Claims>,
    /// First second at which the entry is no longer valid.
    deadline: u64,
}

/// Verified tokens of one worker, keyed by SHA-256 of (scope, token) so the token text itself
/// is not kept; an entry lives until min(exp, now + max_ttl) and the cache holds at most
/// `capacity` entries. When full: expired entries are swept (at most once per capacity/4
/// inserts, so O(1) amortised), else the scan-resistant cache evicts (`cache::Scan`, S3-FIFO):
/// a stream of distinct tokens each seen once evicts its own kind, not the tokens in use (the
/// insertion-order FIFO this replaced evicted the oldest token however busy it was).
/// Single-threaded: one per worker, no locks.
pub struct VerifiedCache {
    capacity: usize,
    max_ttl: u64,
    map: super::cache::Scan<CacheKey, Entry>,
    inserts_since_sweep: usize,
}

impl fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("capacity", &self.capacity)
            .field("max_ttl", &self.max_ttl)
            .field("len", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl VerifiedCache {
    pub fn new(capacity: usize, max_ttl_secs: u64) -> Self {
        VerifiedCache {
            capacity,
            max_ttl: max_ttl_secs,
            map: super::cache::scan_cache(capacity),
            inserts_since_sweep: 0,
        }
    }

    fn key(scope: &str, token: &str) -> CacheKey {
        let mut h = Sha256::new();
        // Length prefix keeps (scope, token) pairs unambiguous.
        h.update((scope.len() as u64).to_le_bytes());
        h.update(scope.as_bytes());
        h.update(token.as_bytes());
        h.finalize().into()
    }

    /// `scope` distinguishes APIs/keysets (caller passes e.g. api_id + generation).
    pub fn get(&mut self, scope: &str, token: &str, now: u64) -> Option<Rc<Claims>> {
        if self.map.is_empty() {
            return None;
        }
        self.get_key(&Self::key(scope, token), now)
    }

    fn get_key(&mut self, key: &CacheKey, now: u64) -> Option<Rc<Claims>> {
        let entry = self.map.get(key)?;
        if now < entry.deadline {
            return Some(Rc::clone(&entry.claims));
        }
        self.map.remove(key);
        None
    }

    pub fn insert(&mut self, scope: &str, token: &str, claims: Rc<Claims>, now: u64) {
        self.insert_key(Self::key(scope, token), claims, now);
    }

    fn insert_key(&mut self, key: CacheKey, claims: Rc<Claims>, now: u64) {
        let deadline = match claims.exp {
            // Valid while now <= exp, as in `verify` with no skew.
            Some(exp) => exp.saturating_add(1),
            None => u64::MAX,
        }
        .min(now.saturating_add(self.max_ttl));
        if self.capacity == 0 || deadline <= now {
            return;
        }
        if let Some(mut e) = self.map.peek_mut(&key) {
            e.claims = claims;
            e.deadline = deadline;
            return;
        }
        if self.map.len() >= self.capacity {
            self.inserts_since_sweep = self.inserts_since_sweep.saturating_add(1);
            if self.inserts_since_sweep >= (self.capacity / 4).max(1) {
                self.inserts_since_sweep = 0;
                self.map.retain(|_, e| now < e.deadline);
            }
        }
        self.map.insert(key, Entry { claims, deadline });
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests read the real clock to build and time their cases")]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header as JwtHeader};
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    // Test-only key pairs, generated once with `openssl genpkey` (RSA 2048, EC P-256/P-384),
    // certificates with `openssl req -x509`, and a 1024-bit RSA public key (too small).
    const RSA1_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDk2xvgMuWzJCgt\n\
s9sddBbYbEtdlylUTGam+GPyCCwvZFqutv3/q6bgxGsOocqabdNjLcfAHrM/2MNT\n\
mkUXWVSSbEueatB7QNKsd5pEN4oqi0T3n5v8KZ2fPEElOP/ZD1Kf8doQGzUX9l/w\n\
RZNQtLjlly90IoYn8RUMlzsg9c6oK59i7Rk2SHQ+bTsBuuvGNmEV+P3Y3PQwtEK2\n\
QudVLuJi6DMYm8uqW4BSCXbZWqmx9BRlDbY9gTItQHpv5BdgzAkXAO9wvO9Ry2Ej\n\
RijUtyvvPcekg5M43RFsRoHx2+7tSFyVu50AjctHaTJprggHzHpQNApI0bXO7NFw\n\
4l+H/nTfAgMBAAECggEAS5TBZA3rJnquekmH9/Y7BUberQ4bLCf/Tu2BtJFWZmBy\n\
QnlU8XczKdA0uyRb0RysT3jzG1QIRvHDsHymjMuHzsPNRYhpSgtiiGsHm7fr/Zj5\n\
Mf6YeXMVB13S9gQZGwqgcwpgxij2I+/OR3/y4xiMZ+bCWUx9mftYxEu9z2je01LU\n\
88yZagcO0a2fn+cRxg4qHa3TX1/d7jzBGeuK6TnzS+IV9hSE0OH3Ns5V0W5s4jU5\n\
kcSkWec+70W+1a0KY31qAlZi9Is7/fi7LF0PzJIaXyL5e7qO4gRgUUX1FvtJkW/t\n\
5l0LeYQsluWD9QBdP+Ntsh5ENHWz8UCKGbh939BcQQKBgQDy3dCdv8Y09hlYdjES\n\
f1dAdihoeT9N8h1tfuXcAXbhEnyEaMYnARa6EpX5TxB02rcmRQPML2H2+9QuU71s\n\
DV8R/gfA9ZcgGgPuWZhmYAx+cuAhBbvPD3gNFeAH95fpEra9AyfIbN7L/wvs+OXA\n\
2vpcJj9EmMCSGnvRSjZpsiX9yQKBgQDxO1XC91TFcqpy33vTKRD9wgV2/FGnBh2J\n\
A4zdqaw378uPXW/LrR2BTnpLuXTCSxPqBWBfsAZuKiEMPzXCvRLR6f0j8X52x4Bf\n\
qUSV0nZFAiU/r8/TV3v7hKTB1PrrusIT4h6qoQeJ3iBNByIMOPjAkHrG4rbpnofc\n\
BqinP4MRZwKBgH8pGLOf152fRUIGEEeJGRwNQbcB1N1w6WuNR7jbo2zRCxUg7q85\n\
aLbgSFoSxaEJa1/EPurH3Fk/Hadr/P/4OFDpWxHzBL+wH2LK0nq3y5LhfuyLXfxa\n\
MxdW3sgNISLNw5RPdKMCLd1NmubmoxVJElDxTasS97EH4NCCNN8+gZnRAoGBAMYF\n\
tSL0sUvcEvt1ZUozvdTw/ldsTQLUzE368hnL/Kl2WR140BrcIwpQh6e9t5D+3HwQ\n\
qcoiz0SDpNlO0izn1JkogTqONQgAQOtGIhzyxU9ksXsUMYAFoqsXeb/7u3biugpk\n\
ZlQfF/cetllE77gk1F4OvBqjZQ9lqZT+ilewlUElAoGAevKSKU6VbuhvM9YHmnaF\n\
9yMvl2dUGrbx5lp6w5kriCj/0x6UzcO0eVT2wn/csir33tbU2jHZu8TOiwgyFkgM\n\
5+U85qIuCrWOf2L4iHHoTOZgFUsNeakUiDoPYyOOiOdxwbS9dMfB23i/WdjdjP3K\n\
+c7mGz6Gxhiw/fZk+q8RAdg=\n\
-----END PRIVATE KEY-----\n\
";
    const RSA1_PUB: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA5Nsb4DLlsyQoLbPbHXQW\n\
2GxLXZcpVExmpvhj8ggsL2Rarrb9/6um4MRrDqHKmm3TYy3HwB6zP9jDU5pFF1lU\n\
kmxLnmrQe0DSrHeaRDeKKotE95+b/CmdnzxBJTj/2Q9Sn/HaEBs1F/Zf8EWTULS4\n\
5ZcvdCKGJ/EVDJc7IPXOqCufYu0ZNkh0Pm07AbrrxjZhFfj92Nz0MLRCtkLnVS7i\n\
YugzGJvLqluAUgl22VqpsfQUZQ22PYEyLUB6b+QXYMwJFwDvcLzvUcthI0Yo1Lcr\n\
7z3HpIOTON0RbEaB8dvu7UhclbudAI3LR2kyaa4IB8x6UDQKSNG1zuzRcOJfh/50\n\
3wIDAQAB\n\
-----END PUBLIC KEY-----\n\
";
    const RSA1_PKCS1_PUB: &str = "\
-----BEGIN RSA PUBLIC KEY-----\n\
MIIBCgKCAQEA5Nsb4DLlsyQoLbPbHXQW2GxLXZcpVExmpvhj8ggsL2Rarrb9/6um\n\
4MRrDqHKmm3TYy3HwB6zP9jDU5pFF1lUkmxLnmrQe0DSrHeaRDeKKotE95+b/Cmd\n\
nzxBJTj/2Q9Sn/HaEBs1F/Zf8EWTULS45ZcvdCKGJ/EVDJc7IPXOqCufYu0ZNkh0\n\
Pm07AbrrxjZhFfj92Nz0MLRCtkLnVS7iYugzGJvLqluAUgl22VqpsfQUZQ22PYEy\n\
LUB6b+QXYMwJFwDvcLzvUcthI0Yo1Lcr7z3HpIOTON0RbEaB8dvu7UhclbudAI3L\n\
R2kyaa4IB8x6UDQKSNG1zuzRcOJfh/503wIDAQAB\n\
-----END RSA PUBLIC KEY-----\n\
";
    const RSA1_CRT: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIDATCCAemgAwIBAgIUaH77TfsXb4FiMI1LDiMWgeGSYJUwDQYJKoZIhvcNAQEL\n\
BQAwDzENMAsGA1UEAwwEdGVzdDAgFw0yNjExMjMxNTQ4MTJaGA8yMTI2MTAzMDE1\n\
NDgxMlowDzENMAsGA1UEAwwEdGVzdDCCASIwDQYJKoZIhvcNAQEBBQADggEPADCC\n\
AQoCggEBAOTbG+Ay5bMkKC2z2x10FthsS12XKVRMZqb4Y/IILC9kWq62/f+rpuDE\n\
aw6hyppt02Mtx8Aesz/Yw1OaRRdZVJJsS55q0HtA0qx3mkQ3iiqLRPefm/wpnZ88\n\
QSU4/9kPUp/x2hAbNRf2X/BFk1C0uOWXL3QihifxFQyXOyD1zqgrn2LtGTZIdD5t\n\
OwG668Y2YRX4/djc9DC0QrZC51Uu4mLoMxiby6pbgFIJdtlaqbH0FGUNtj2BMi1A\n\
em/kF2DMCRcA73C871HLYSNGKNS3K+89x6SDkzjdEWxGgfHb7u1IXJW7nQCNy0dp\n\
MmmuCAfMelA0CkjRtc7s0XDiX4f+dN8CAwEAAaNTMFEwHQYDVR0OBBYEFOML4JRg\n\
ujA0B2HD1eOk+SVwYn+AMB8GA1UdIwQYMBaAFOML4JRgujA0B2HD1eOk+SVwYn+A\n\
MA8GA1UdEwEB/wQFMAMBAf8wDQYJKoZIhvcNAQELBQADggEBAF2mb46DsniD1ygH\n\
7QjjDZtS0fhkqTCQNASXuZbeYE7FC8IjsRZ/wHerZ98yLBLt5n16v/NVq+YntUUz\n\
ml8A1Z6OtpeJn2BmljKuQCIZRtzDfULTpqWjYmKG/lWaDPy6OFrhK0rZ3t9sFY9D\n\
1ta4/Q/+0j115iRnarcM890RnooCsM+IshX55dUUYjFdpDHe9IHVsoNbKx6AqAMV\n\
/nFzMYTsHz6bqdxkYh0zAD1djtgKAPJsx/DvzctYGE0Z0cAGsukqXqB23rudIpA/\n\
Az+A44P0e9zh1Et5saa/J/ofc9W9IAtHtmI4x6QB8gNYxnn3QOy2nzegzespjBau\n\
crbZ5wc=\n\
-----END CERTIFICATE-----\n\
";
    const RSA2_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDNTC0dkT5h1CG1\n\
23zFURQnns2CF/lynXNyHSntrf4t23MuO9Y7l16TPelIQyQvUbZy5aePQHLbu8QN\n\
s3RzmR0R/oR4N8aAZ7wKab1BQ9ymh7dr6sdbjoJXxSNzg9hZQTcyOwtIPVarmN/E\n\
e2awBIb4bQzYjG6WGUy0gPzgEIsG5so6tveO5pYN3U+qfFXQd/XT4K6J1S85j2oh\n\
m4oFfq6XS5Jnqdmjbv1/OcmLP5dDDOfS+7ewYJM01/9lNnip9qHKYtNHizeS0KW6\n\
vBgKy16altf+Jb4rh22b5ShW8LyorrvPh2cKm7DtKmFVjPBulFtxm9ik0lF1SFy0\n\
AzYjpE2FAgMBAAECggEAEnsgtesE+PI2FVSXNygPrsAOnf8h1zMyA6bOccqvpAR/\n\
qjzRZ0yUGKCCfJ0sB7p3uIDQrwZNO1dRfy5AIHE7JbXfdPcIaTdtZ76RvpX+VLDI\n\
+UUJrJtNQ9tyT+F25hSx2aq+Xu1up5nmeEiSO5bcvkZgLqpNq44cJ++oqVRelOtO\n\
TYUI5Xc0oaaSyzjZGXwQsbRG/3tFb3LE6GLy8iZDbqVYM96G+wMUf+nC+H0QPUdW\n\
5ImCqJ4VMkx8NTNUJ2nN+iN7Yq6gI18WTiGlr/IB4xj22YwPEL8ODCO+PMlk9yFh\n\
yjGDvg1hWApFBujMcIdweVP63A4lcmkZlPXASNOM7QKBgQD8Te0no1runuZYxN85\n\
zjl/E6d3fgJMDvqRPfUGfKEnQzX376tFqzgGbzK5Cgt4fKKURZyvWQ1gLXhb2USy\n\
dgJKbjjIQYer/D+5jJpumcuFJcciJ8+8+Q6CtR0NAt83KOxlonPmrCpcgXPYKaT4\n\
ZVIUPYNVmKos7PHxvevckqDekwKBgQDQTfyiq05Z2rLn8y6eY1z9ZIW6gZ9ExIr3\n\
nmNbaC6PZ0JN1CR3SvYOlN50T4DkmZ+0toELK6eXRwAf+v2tYRlD/rw1e6KoeRuA\n\
rG8cSh5j8giSKTvQA2Lw7LEt5EqbiLY4G/Oym2dNrTzYs6jCl3I5+pw2u8Aq32M/\n\
b60oiXwahwKBgQCW91HF+/q2+SE/UF15SyogHXSBDUb2l6faLEZmoUAULCUou6Gx\n\
yCd3wiWJjrcaWwk0ywpb6V8Vg1+XJcPzPKVWP+l9+afigsbmkXj+YMvkWZxzlXq5\n\
yhSipRhC5ssFSFla3v+WsMGQJG1alGB/uLCKJ9xj5Ts+MnD6gveUPbBAPQKBgHvl\n\
9x+2bvsJFyLZxV/WUCgz00r08IvRr6rLHePvmsoXLBvo0+vUvXg82fgqlcrjCVhO\n\
uYCwbZWQWKWs/5hRydpkuQPCzyQQLOijJ8+W0m62NpzhQ79dVEtjLZvTTwEmFuRW\n\
0+PnhVFxemCWtAlSVVHhG2t+zzVw+7JutXsIE7YfAoGBAMkcrw6aPaRyqGsaiZyw\n\
axzUTr0LEOwwHcUrFoVde2Ljc1fyWNMQO7Ve9ECuX0FRnBgTiTBSr7Z5x+IiHLQX\n\
s2zdAo6Gey6V0LtF1twShzEHv5QcKawtHqXtdO3M0jzbjOYlz/3/h8x0C+eyV0d5\n\
uLA+0dgz0c1OaISxcX2PfuxE\n\
-----END PRIVATE KEY-----\n\
";
    const RSA2_PUB: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAzUwtHZE+YdQhtdt8xVEU\n\
J57Nghf5cp1zch0p7a3+LdtzLjvWO5dekz3pSEMkL1G2cuWnj0By27vEDbN0c5kd\n\
Ef6EeDfGgGe8Cmm9QUPcpoe3a+rHW46CV8Ujc4PYWUE3MjsLSD1Wq5jfxHtmsASG\n\
+G0M2IxulhlMtID84BCLBubKOrb3juaWDd1PqnxV0Hf10+CuidUvOY9qIZuKBX6u\n\
l0uSZ6nZo279fznJiz+XQwzn0vu3sGCTNNf/ZTZ4qfahymLTR4s3ktClurwYCste\n\
mpbX/iW+K4dtm+UoVvC8qK67z4dnCpuw7SphVYzwbpRbcZvYpNJRdUhctAM2I6RN\n\
hQIDAQAB\n\
-----END PUBLIC KEY-----\n\
";
    const EC1_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgtJa543aeQpMyVPUY\n\
GW8dGaO+RAEkOK57WguwxGa7tXuhRANCAAR98aJ5Gvs9c6vMDf9LbwtgueNYd4xD\n\
Veuc7FElX6BfxnVwml+QvA4lHTxEWrK3UwprjH1CIKGCfCqLF9pOwuU3\n\
-----END PRIVATE KEY-----\n\
";
    const EC2_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgm/LT1ZzuS5YPXwXg\n\
Iph22UTnsQlacwBCF2nwnW9agX+hRANCAAQETI02VzCauSbBGfGtVHOPScQY6zX5\n\
VFUx74PdSop5tQe321Zy3wJjgB3bKx4wNJWSaRxrpC78buiTDT+qx5mR\n\
-----END PRIVATE KEY-----\n\
";
    const EC1_PUB: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEffGieRr7PXOrzA3/S28LYLnjWHeM\n\
Q1XrnOxRJV+gX8Z1cJpfkLwOJR08RFqyt1MKa4x9QiChgnwqixfaTsLlNw==\n\
-----END PUBLIC KEY-----\n\
";
    const EC1_CRT: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBdTCCARugAwIBAgIUIpC+reyVXTqlXf3MN8m0mysJaqcwCgYIKoZIzj0EAwIw\n\
DzENMAsGA1UEAwwEdGVzdDAgFw0yNjExMjMxNTQ4MTJaGA8yMTI2MTAzMDE1NDgx\n\
MlowDzENMAsGA1UEAwwEdGVzdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABH3x\n\
onka+z1zq8wN/0tvC2C541h3jENV65zsUSVfoF/GdXCaX5C8DiUdPERasrdTCmuM\n\
fUIgoYJ8KosX2k7C5TejUzBRMB0GA1UdDgQWBBTlVj3eH7JZHjBpGJDM4HyWSWPm\n\
UTAfBgNVHSMEGDAWgBTlVj3eH7JZHjBpGJDM4HyWSWPmUTAPBgNVHRMBAf8EBTAD\n\
AQH/MAoGCCqGSM49BAMCA0gAMEUCIQC0fHWMShKW5uN9ecwvigf+uVV30mxi09gH\n\
/sEPh3vmZgIgMxiCKbQsuOT+uaL+xmilch6K/M5LAj3juvTaWQPWrHw=\n\
-----END CERTIFICATE-----\n\
";
    const EC384_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDCeud/2oqFgGeSTawIZ\n\
7uC9Su8lXFXl2S8X6IF1comyGVklucsMXtIKnvfItk6W/A2hZANiAATmlj6z6/i1\n\
hyPCDUtsZQIeYp2SXWqf5KFlvGoeRvU2HA8SoAqIsMiXjVRPj2+lb9kUM/4QBbor\n\
K9mgz+Enzp2JvOwnFa26HzgfFR+1M69FluGr3pG2hoyZXn6y/KORHPo=\n\
-----END PRIVATE KEY-----\n\
";
    const EC384_PUB: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE5pY+s+v4tYcjwg1LbGUCHmKdkl1qn+Sh\n\
ZbxqHkb1NhwPEqAKiLDIl41UT49vpW/ZFDP+EAW6KyvZoM/hJ86dibzsJxWtuh84\n\
HxUftTOvRZbhq96RtoaMmV5+svyjkRz6\n\
-----END PUBLIC KEY-----\n\
";
    const RSA1024_PUB: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC0v33DuriAGgOqMZ0dyhEdQprN\n\
awwrgdhLOIONLBQjuwDIlyZE8H/9gj7DcVhkWnzTOuRDe9xI7z8hOAiysdEAFVDG\n\
0h/lYHdGZPXWBTbJrBP3WHpIHAn1RDHKigJBirzOTzs7LSaPg5ff5g+SRlLJq1pi\n\
l78OQtXQSo5zj6zGBQIDAQAB\n\
-----END PUBLIC KEY-----\n\
";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
        let mut h = JwtHeader::new(alg);
        h.kid = kid.map(str::to_owned);
        encode(&h, claims, key).unwrap()
    }

    fn rsa_enc(pem: &str) -> EncodingKey {
        EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
    }

    fn ec_enc(pem: &str) -> EncodingKey {
        EncodingKey::from_ec_pem(pem.as_bytes()).unwrap()
    }

    fn rsa_keys() -> KeySet {
        KeySet::from_source(Family::Rsa, &b64(RSA1_PUB)).unwrap()
    }

    fn hs_keys(secret: &str) -> KeySet {
        KeySet::from_source(Family::Hmac, &b64(secret)).unwrap()
    }

    /// Hand-built token: base64url(header).base64url(claims).signature-as-given.
    fn raw_token(header: &str, claims: &str, sig: &str) -> String {
        format!("{}.{}.{}", B64URL.encode(header), B64URL.encode(claims), sig)
    }

    /// Hand-built HS256 token over arbitrary header/claims text.
    fn hs256_raw(header: &str, claims: &str, secret: &[u8]) -> String {
        let msg = format!("{}.{}", B64URL.encode(header), B64URL.encode(claims));
        let sig =
            jsonwebtoken::crypto::sign(msg.as_bytes(), &EncodingKey::from_secret(secret), Algorithm::HS256).unwrap();
        format!("{msg}.{sig}")
    }

    fn jwk_json(pem: &str, alg: Algorithm, kid: &str) -> Value {
        let enc = if matches!(alg, Algorithm::ES256 | Algorithm::ES384) { ec_enc(pem) } else { rsa_enc(pem) };
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, alg).unwrap();
        let mut v = serde_json::to_value(jwk).unwrap();
        v["kid"] = json!(kid);
        v
    }

    // --- Family -------------------------------------------------------------------------------

    #[test]
    fn family_parse() {
        assert_eq!(Family::parse("hmac"), Some(Family::Hmac));
        assert_eq!(Family::parse("RSA"), Some(Family::Rsa));
        assert_eq!(Family::parse(" EcDsA "), Some(Family::Ecdsa));
        assert_eq!(Family::parse(""), None);
        assert_eq!(Family::parse("hs256"), None);
        assert_eq!(Family::Rsa.to_string(), "rsa");
    }

    // --- HMAC -----------------------------------------------------------------------------------

    const TYK_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJmb29AYmFyLmNvbSIsIm5hbWUiOiJBaG1ldCBTb29ybWFsbHkiLCJpYXQiOjE1MTYyMzkwMjJ9.8E-X89YnHe6m_jV4Lmyy487VnkCpzuYlsLDceCz4ScU";

    #[test]
    fn tyk_article_hs256_token() {
        let keys = KeySet::from_source(Family::Hmac, "Zm9v").unwrap();
        assert_eq!(keys.len(), 1);
        let c = verify(TYK_TOKEN, Family::Hmac, &keys, Skew::default(), NOW).unwrap();
        assert_eq!(c.text("sub").as_deref(), Some("foo@bar.com"));
        assert_eq!(c.text("name").as_deref(), Some("Ahmet Soormally"));
        assert_eq!(c.text("iat").as_deref(), Some("1516239022"));
        assert_eq!(c.exp, None);
        // Wrong secret.
        let other = KeySet::from_source(Family::Hmac, "YmFy").unwrap();
        assert_eq!(verify(TYK_TOKEN, Family::Hmac, &other, Skew::default(), NOW).unwrap_err(), JwtError::BadSignature);
        // Same token on an rsa API: HS256 is not allowed there.
        assert_eq!(
            verify(TYK_TOKEN, Family::Rsa, &rsa_keys(), Skew::default(), NOW).unwrap_err(),
            JwtError::AlgNotAllowed { alg: "HS256".into(), family: Family::Rsa }
        );
    }

    #[test]
    fn hs384_hs512_roundtrip() {
        let keys = hs_keys("s3cret");
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let t = sign(alg, None, &json!({"sub": "a"}), &EncodingKey::from_secret(b"s3cret"));
            assert!(verify(&t, Family::Hmac, &keys, Skew::default(), NOW).is_ok(), "{alg:?}");
        }
    }

    #[test]
    fn hmac_source_errors() {
        assert_eq!(KeySet::from_source(Family::Hmac, "").unwrap_err(), "jwt_source is empty");
        assert!(KeySet::from_source(Family::Hmac, "not base64 !!").unwrap_err().contains("not valid base64"));
        assert!(KeySet::from_source(Family::Hmac, RSA1_PUB).unwrap_err().contains("not valid base64"));
        assert!(KeySet::from_source(Family::Hmac, "https://idp/jwks").unwrap_err().contains("URL"));
        assert!(KeySet::from_source(Family::Hmac, &b64("https://idp/jwks")).unwrap_err().contains("URL"));
    }

    #[test]
    fn keyset_debug_hides_secret() {
        let keys = hs_keys("topsecretvalue");
        let dbg = format!("{keys:?}");
        assert!(!dbg.contains("topsecretvalue"), "{dbg}");
        assert!(!dbg.contains(&format!("{:?}", b"topsecretvalue")), "{dbg}");
        assert!(dbg.contains("Hmac"), "{dbg}");
    }

    // --- RSA / EC -------------------------------------------------------------------------------

    #[test]
    fn rs256_ps256_success_and_sources() {
        let claims = json!({"sub": "u1", "exp": NOW + 60, "n": 5, "ok": true, "o": {"a": [1]}});
        let enc = rsa_enc(RSA1_PEM);
        let rs = sign(Algorithm::RS256, None, &claims, &enc);
        let ps = sign(Algorithm::PS256, None, &claims, &enc);
        let rs512 = sign(Algorithm::RS512, None, &claims, &enc);
        for src in [b64(RSA1_PUB), RSA1_PUB.to_string(), b64(RSA1_PKCS1_PUB), b64(RSA1_CRT), RSA1_CRT.to_string()] {
            let keys = KeySet::from_source(Family::Rsa, &src).unwrap();
            for t in [&rs, &ps, &rs512] {
                let c = verify(t, Family::Rsa, &keys, Skew::default(), NOW).unwrap();
                assert_eq!(c.exp, Some(NOW + 60));
                assert_eq!(c.text("sub").as_deref(), Some("u1"));
                assert_eq!(c.text("n").as_deref(), Some("5"));
                assert_eq!(c.text("ok").as_deref(), Some("true"));
                assert_eq!(c.text("o").as_deref(), Some(r#"{"a":[1]}"#));
                assert_eq!(c.text("missing"), None);
            }
        }
        // Base64 of the bare DER SubjectPublicKeyInfo (PEM body only).
        let body: String = RSA1_PUB.lines().filter(|l| !l.starts_with("-----")).collect();
        let keys = KeySet::from_source(Family::Rsa, &body).unwrap();
        assert!(verify(&rs, Family::Rsa, &keys, Skew::default(), NOW).is_ok());
    }

    #[test]
    fn es256_success_and_sources() {
        let t = sign(Algorithm::ES256, None, &json!({"sub": "e"}), &ec_enc(EC1_PEM));
        for src in [b64(EC1_PUB), EC1_PUB.to_string(), b64(EC1_CRT)] {
            let keys = KeySet::from_source(Family::Ecdsa, &src).unwrap();
            let c = verify(&t, Family::Ecdsa, &keys, Skew::default(), NOW).unwrap();
            assert_eq!(c.text("sub").as_deref(), Some("e"));
        }
        // Wrong EC key, and junk signatures of odd sizes.
        let keys = KeySet::from_source(Family::Ecdsa, EC1_PUB).unwrap();
        let t_other = sign(Algorithm::ES256, None, &json!({}), &ec_enc(EC2_PEM));
        assert_eq!(verify(&t_other, Family::Ecdsa, &keys, Skew::default(), NOW).unwrap_err(), JwtError::BadSignature);
        let msg = t.rsplit_once('.').unwrap().0;
        for junk in [vec![], vec![0u8; 1], vec![0u8; 64], vec![0xffu8; 64], vec![1u8; 65], vec![7u8; 4096]] {
            let forged = format!("{msg}.{}", B64URL.encode(&junk));
            assert_eq!(
                verify(&forged, Family::Ecdsa, &keys, Skew::default(), NOW).unwrap_err(),
                JwtError::BadSignature
            );
        }
        // ES384 token against a P-256 key: no key of that type.
        let keys = KeySet::from_source(Family::Ecdsa, &b64(EC1_PUB)).unwrap();
        let t384 = sign(Algorithm::ES384, None, &json!({}), &ec_enc(EC384_PEM));
        assert_eq!(verify(&t384, Family::Ecdsa, &keys, Skew::default(), NOW).unwrap_err(), JwtError::NoKey);
        let keys384 = KeySet::from_source(Family::Ecdsa, EC384_PUB).unwrap();
        assert!(verify(&t384, Family::Ecdsa, &keys384, Skew::default(), NOW).is_ok());
    }

    #[test]
    fn pem_source_errors() {
        let e = KeySet::from_source(Family::Rsa, &b64(EC1_PUB)).unwrap_err();
        assert!(e.contains("not a PEM public key for the rsa family"), "{e}");
        let e = KeySet::from_source(Family::Ecdsa, RSA1_PUB).unwrap_err();
        assert!(e.contains("not a PEM public key for the ecdsa family"), "{e}");
        let e = KeySet::from_source(Family::Rsa, RSA1_PEM).unwrap_err();
        assert!(e.contains("private key"), "{e}");
        let e = KeySet::from_source(Family::Rsa, &b64("just some text")).unwrap_err();
        assert!(e.contains("PEM public key for the rsa family"), "{e}");
        let e = KeySet::from_source(Family::Rsa, "%%%").unwrap_err();
        assert!(e.contains("not valid base64"), "{e}");
        let e = KeySet::from_source(Family::Rsa, RSA1024_PUB).unwrap_err();
        assert!(e.contains("1024 bits"), "{e}");
        let garbage_pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        let e = KeySet::from_source(Family::Rsa, garbage_pem).unwrap_err();
        assert!(e.contains("rsa family"), "{e}");
    }

    #[test]
    fn wrong_key_is_bad_signature() {
        let t = sign(Algorithm::RS256, None, &json!({"sub": "x"}), &rsa_enc(RSA2_PEM));
        assert_eq!(verify(&t, Family::Rsa, &rsa_keys(), Skew::default(), NOW).unwrap_err(), JwtError::BadSignature);
        let k2 = KeySet::from_source(Family::Rsa, RSA2_PUB).unwrap();
        assert!(verify(&t, Family::Rsa, &k2, Skew::default(), NOW).is_ok());
        // Tampered payload, original signature.
        let good = sign(Algorithm::RS256, None, &json!({"sub": "x"}), &rsa_enc(RSA1_PEM));
        let parts: Vec<&str> = good.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], B64URL.encode(r#"{"sub":"admin"}"#), parts[2]);
        assert_eq!(
            verify(&forged, Family::Rsa, &rsa_keys(), Skew::default(), NOW).unwrap_err(),
            JwtError::BadSignature
        );
        // Empty signature.
        let nosig = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(verify(&nosig, Family::Rsa, &rsa_keys(), Skew::default(), NOW).unwrap_err(), JwtError::BadSignature);
    }

    #[test]
    fn alg_none_rejected() {
        let keys = hs_keys("foo");
        for alg in ["none", "None", "NONE", "nOnE"] {
            let t = raw_token(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#), r#"{"sub":"x"}"#, "");
            assert_eq!(verify(&t, Family::Hmac, &keys, Skew::default(), NOW).unwrap_err(), JwtError::AlgNone);
            assert_eq!(verify(&t, Family::Rsa, &rsa_keys(), Skew::default(), NOW).unwrap_err(), JwtError::AlgNone);
        }
    }

    #[test]
    fn unknown_and_foreign_algs_rejected() {
        let keys = hs_keys("foo");
        for (alg, shown) in [("hs256", "hs256"), ("XS256", "XS256"), ("EdDSA", "EdDSA"), ("RS256\r\nX: y", "RS256Xy")] {
            let h = serde_json::to_string(&json!({"alg": alg})).unwrap();
            let t = hs256_raw(&h, "{}", b"foo");
            assert_eq!(
                verify(&t, Family::Hmac, &keys, Skew::default(), NOW).unwrap_err(),
                JwtError::AlgNotAllowed { alg: shown.into(), family: Family::Hmac }
            );
        }
        let t = sign(Algorithm::HS256, None, &json!({}), &EncodingKey::from_secret(b"foo"));
        let e = verify(&t, Family::Ecdsa, &hs_keys("foo"), Skew::default(), NOW).unwrap_err();
        assert_eq!(e.to_string(), "signing algorithm HS256 is not allowed for this API (ecdsa)");
        // RS256 token on an hmac API.
        let rs = sign(Algorithm::RS256, None, &json!({}), &rsa_enc(RSA1_PEM));
        assert!(matches!(
            verify(&rs, Family::Hmac, &keys, Skew::default(), NOW).unwrap_err(),
            JwtError::AlgNotAllowed { family: Family::Hmac, .. }
        ));
    }

    #[test]
    fn hs_rs_confusion_rejected() {
        let keys = rsa_keys();
        // Attacker signs HS256 with the API's public key PEM bytes as the HMAC secret, in every
        // form the key might be known in.
        for secret in [RSA1_PUB.as_bytes().to_vec(), b64(RSA1_PUB).into_bytes(), RSA1_PKCS1_PUB.as_bytes().to_vec()] {
            let t = sign(Algorithm::HS256, None, &json!({"sub": "admin"}), &EncodingKey::from_secret(&secret));
            let e = verify(&t, Family::Rsa, &keys, Skew::default(), NOW).unwrap_err();
            assert_eq!(e, JwtError::AlgNotAllowed { alg: "HS256".into(), family: Family::Rsa });
            assert_eq!(e.to_string(), "signing algorithm HS256 is not allowed for this API (rsa)");
            // Relabelled as RS256 but still an HMAC signature: must not verify.
            let parts: Vec<&str> = t.split('.').collect();
            let relabelled_msg = format!("{}.{}", B64URL.encode(r#"{"alg":"RS256","typ":"JWT"}"#), parts[1]);
            let sig = jsonwebtoken::crypto::sign(
                relabelled_msg.as_bytes(),
                &EncodingKey::from_secret(&secret),
                Algorithm::HS256,
            )
            .unwrap();
            let relabelled = format!("{relabelled_msg}.{sig}");
            assert_eq!(
                verify(&relabelled, Family::Rsa, &keys, Skew::default(), NOW).unwrap_err(),
                JwtError::BadSignature
            );
        }
        // A KeySet for another family is never used (caller mix-up): no key.
        let hk = KeySet::from_source(Family::Hmac, &b64(RSA1_PUB)).unwrap();
        let t = sign(Algorithm::HS256, None, &json!({}), &EncodingKey::from_secret(RSA1_PUB.as_bytes()));
        assert!(verify(&t, Family::Hmac, &hk, Skew::default(), NOW).is_ok());
        assert_eq!(
            verify(&t, Family::Rsa, &hk, Skew::default(), NOW).unwrap_err(),
            JwtError::AlgNotAllowed { alg: "HS256".into(), family: Family::Rsa }
        );
        let rs = sign(Algorithm::RS256, None, &json!({}), &rsa_enc(RSA1_PEM));
        assert_eq!(verify(&rs, Family::Rsa, &hk, Skew::default(), NOW).unwrap_err(), JwtError::NoKey);
    }

    // --- time claims ----------------------------------------------------------------------------

    fn hs(claims: Value) -> String {
        sign(Algorithm::HS256, None, &claims, &EncodingKey::from_secret(b"k"))
    }

    fn check(claims: Value, skew: Skew) -> Result<Claims, JwtError> {
        verify(&hs(claims), Family::Hmac, &hs_keys("k"), skew, NOW)
    }

    #[test]
    fn exp_checks() {
        let none = Skew::default();
        assert!(check(json!({"exp": NOW}), none).is_ok());
        assert_eq!(check(json!({"exp": NOW - 1}), none).unwrap_err(), JwtError::Expired);
        assert_eq!(check(json!({"exp": NOW - 10}), Skew { exp: 9, ..none }).unwrap_err(), JwtError::Expired);
        assert!(check(json!({"exp": NOW - 10}), Skew { exp: 10, ..none }).is_ok());
        assert_eq!(check(json!({"exp": 0}), none).unwrap_err(), JwtError::Expired);
        assert_eq!(check(json!({"exp": -5}), none).unwrap_err(), JwtError::Expired);
        let c = check(json!({"exp": (NOW + 5) as f64 + 0.9}), none).unwrap();
        assert_eq!(c.exp, Some(NOW + 5));
        assert_eq!(check(json!({"exp": 1e300}), none).unwrap().exp, Some(u64::MAX));
        assert!(check(json!({"exp": u64::MAX}), Skew { exp: u64::MAX, nbf: u64::MAX, iat: u64::MAX }).is_ok());
        assert_eq!(JwtError::Expired.to_string(), "token is expired");
    }

    #[test]
    fn nbf_checks() {
        let none = Skew::default();
        assert!(check(json!({"nbf": NOW}), none).is_ok());
        assert_eq!(check(json!({"nbf": NOW + 1}), none).unwrap_err(), JwtError::NotYetValid);
        assert_eq!(check(json!({"nbf": NOW + 10}), Skew { nbf: 9, ..none }).unwrap_err(), JwtError::NotYetValid);
        assert!(check(json!({"nbf": NOW + 10}), Skew { nbf: 10, ..none }).is_ok());
    }

    #[test]
    fn iat_checks() {
        let none = Skew::default();
        assert!(check(json!({"iat": NOW}), none).is_ok());
        assert_eq!(check(json!({"iat": NOW + 1}), none).unwrap_err(), JwtError::IssuedInFuture);
        assert_eq!(check(json!({"iat": NOW + 10}), Skew { iat: 9, ..none }).unwrap_err(), JwtError::IssuedInFuture);
        assert!(check(json!({"iat": NOW + 10}), Skew { iat: 10, ..none }).is_ok());
        // Each skew only applies to its own claim.
        assert_eq!(
            check(json!({"iat": NOW + 10}), Skew { exp: 100, nbf: 100, iat: 0 }).unwrap_err(),
            JwtError::IssuedInFuture
        );
    }

    #[test]
    fn time_claims_must_be_numbers() {
        let none = Skew::default();
        for name in ["exp", "nbf", "iat"] {
            for bad in [json!("1900000000"), json!(true), json!([1]), json!({"a": 1})] {
                let mut m = Map::new();
                m.insert(name.into(), bad);
                assert!(matches!(check(Value::Object(m), none).unwrap_err(), JwtError::Malformed(_)), "{name}");
            }
        }
        assert!(check(json!({"exp": null, "nbf": null}), none).is_ok());
    }

    // --- malformed input ------------------------------------------------------------------------

    #[test]
    fn malformed_inputs() {
        let keys = hs_keys("foo");
        let mal = |t: &str| matches!(verify(t, Family::Hmac, &keys, Skew::default(), NOW), Err(JwtError::Malformed(_)));
        let (h, rest) = TYK_TOKEN.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        assert!(mal(""));
        assert!(mal("abc"));
        assert!(mal(&format!("{h}.{p}")));
        assert!(mal(&format!("{h}.{p}.{s}.{s}")));
        assert!(mal(".."));
        assert!(mal("!!!.???.***"));
        assert!(mal(&format!("{h}.{p}.{s}=")));
        assert!(mal(&format!("{h}=.{p}.{s}")));
        assert!(mal(&format!("{}.{p}.{s}", B64URL.encode("not json"))));
        assert!(mal(&format!("{}.{p}.{s}", B64URL.encode("[1,2]"))));
        assert!(mal(&format!("{}.{p}.{s}", B64URL.encode(r#"{"typ":"JWT"}"#))));
        assert!(mal(&format!("{}.{p}.{s}", B64URL.encode(r#"{"alg":256}"#))));
        assert!(mal(&format!("{}.{p}.{s}", B64URL.encode(r#"{"alg":"HS256","kid":7}"#))));
        assert!(mal(&format!("{}.{p}.{s}", B64URL.encode(r#"{"alg":"HS256","crit":["b64"],"b64":false}"#))));
        assert!(mal(&format!("{}.{p}.{s}", B64URL.encode([0xff, 0xfe, b'{']))));
        assert!(mal(&format!("{h}.{}.{s}", "A".repeat(MAX_TOKEN_LEN))));
        assert!(mal("é.é.é"));
        // Signed but with non-JSON / non-object / invalid UTF-8 claims.
        for claims in ["not json", "[1]", "\"s\"", "{\"a\":\"\u{0}\"", "{\"sub\":\"x\"} trailing"] {
            assert!(mal(&hs256_raw(r#"{"alg":"HS256"}"#, claims, b"foo")), "{claims}");
        }
        let msg = format!(
            "{}.{}",
            B64URL.encode(r#"{"alg":"HS256"}"#),
            B64URL.encode([b'{', b'"', 0xc3, 0x28, b'"', b':', b'1', b'}'])
        );
        let sig =
            jsonwebtoken::crypto::sign(msg.as_bytes(), &EncodingKey::from_secret(b"foo"), Algorithm::HS256).unwrap();
        assert!(mal(&format!("{msg}.{sig}")));
        // Deeply nested JSON does not blow the stack.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(mal(&format!("{}.{p}.{s}", B64URL.encode(&deep))));
    }

    #[test]
    fn no_panic_on_odd_tokens() {
        let keys = rsa_keys();
        let samples = [
            ".",
            "...",
            "a.b.c",
            "\u{0}.\u{0}.\u{0}",
            "e30.e30.e30",
            "e30.e30.",
            "eyJhbGciOiJSUzI1NiJ9.e30.",
            "eyJhbGciOiJSUzI1NiJ9.e30.AAAA",
            "eyJhbGciOiJSUzI1NiIsImtpZCI6bnVsbH0.e30.AAAA",
        ];
        for t in samples {
            assert!(verify(t, Family::Rsa, &keys, Skew::default(), NOW).is_err(), "{t}");
        }
        let big_sig = format!("eyJhbGciOiJSUzI1NiJ9.e30.{}", "A".repeat(40_000));
        assert_eq!(verify(&big_sig, Family::Rsa, &keys, Skew::default(), NOW).unwrap_err(), JwtError::BadSignature);
    }

    // --- JWKS -----------------------------------------------------------------------------------

    #[test]
    fn jwks_kid_selection() {
        let jwks =
            json!({"keys": [jwk_json(RSA1_PEM, Algorithm::RS256, "k1"), jwk_json(RSA2_PEM, Algorithm::RS256, "k2")]});
        let keys = KeySet::from_jwks(Family::Rsa, jwks.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 2);
        let t1 = sign(Algorithm::RS256, Some("k1"), &json!({"sub": "one"}), &rsa_enc(RSA1_PEM));
        let t2 = sign(Algorithm::RS256, Some("k2"), &json!({"sub": "two"}), &rsa_enc(RSA2_PEM));
        assert_eq!(verify(&t1, Family::Rsa, &keys, Skew::default(), NOW).unwrap().text("sub").as_deref(), Some("one"));
        assert_eq!(verify(&t2, Family::Rsa, &keys, Skew::default(), NOW).unwrap().text("sub").as_deref(), Some("two"));
        // kid names the other key: only that key is tried.
        let wrong = sign(Algorithm::RS256, Some("k2"), &json!({}), &rsa_enc(RSA1_PEM));
        assert_eq!(verify(&wrong, Family::Rsa, &keys, Skew::default(), NOW).unwrap_err(), JwtError::BadSignature);
        // Unknown kid: no key.
        let unknown = sign(Algorithm::RS256, Some("k9"), &json!({}), &rsa_enc(RSA1_PEM));
        assert_eq!(verify(&unknown, Family::Rsa, &keys, Skew::default(), NOW).unwrap_err(), JwtError::NoKey);
        // No kid: every RSA key is tried.
        let nokid = sign(Algorithm::RS256, None, &json!({}), &rsa_enc(RSA2_PEM));
        assert!(verify(&nokid, Family::Rsa, &keys, Skew::default(), NOW).is_ok());
        // JWK alg RS256 pins the key: a PS256 token with the same key is not accepted.
        let ps = sign(Algorithm::PS256, Some("k1"), &json!({}), &rsa_enc(RSA1_PEM));
        assert_eq!(verify(&ps, Family::Rsa, &keys, Skew::default(), NOW).unwrap_err(), JwtError::NoKey);
        // A static key (no kid) is still used when the token carries a kid.
        let stat = rsa_keys();
        assert!(verify(&t1, Family::Rsa, &stat, Skew::default(), NOW).is_ok());
    }

    #[test]
    fn jwks_unsupported_keys_ignored() {
        let mut ec = jwk_json(EC1_PEM, Algorithm::ES256, "ec");
        let ec384 = jwk_json(EC384_PEM, Algorithm::ES384, "ec384");
        let rsa = jwk_json(RSA1_PEM, Algorithm::RS256, "rsa");
        let mut rsa_enc_use = jwk_json(RSA2_PEM, Algorithm::RS256, "enc");
        rsa_enc_use["use"] = json!("enc");
        let jwks = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "ed"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"},
            {"kty": "RSA", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "k": "Zm9v", "kid": "hmac"},
            {"kty": "weird"},
            "not an object",
            rsa_enc_use, rsa.clone(), ec.clone(), ec384,
        ]});
        let raw = jwks.to_string();
        let rk = KeySet::from_jwks(Family::Rsa, raw.as_bytes()).unwrap();
        assert_eq!(rk.len(), 1);
        let ek = KeySet::from_jwks(Family::Ecdsa, raw.as_bytes()).unwrap();
        assert_eq!(ek.len(), 2);
        let hk = KeySet::from_jwks(Family::Hmac, raw.as_bytes()).unwrap();
        assert_eq!(hk.len(), 1);
        let t = sign(Algorithm::ES256, Some("ec"), &json!({"sub": "e"}), &ec_enc(EC1_PEM));
        assert!(verify(&t, Family::Ecdsa, &ek, Skew::default(), NOW).is_ok());
        let t = sign(Algorithm::HS256, Some("hmac"), &json!({}), &EncodingKey::from_secret(b"foo"));
        assert!(verify(&t, Family::Hmac, &hk, Skew::default(), NOW).is_ok());

        // x5c-only RSA key.
        let body: String = RSA1_CRT.lines().filter(|l| !l.starts_with("-----")).collect();
        let x5c = json!({"keys": [{"kty": "RSA", "kid": "c", "x5c": [body]}]});
        let xk = KeySet::from_jwks(Family::Rsa, x5c.to_string().as_bytes()).unwrap();
        let t = sign(Algorithm::RS256, Some("c"), &json!({}), &rsa_enc(RSA1_PEM));
        assert!(verify(&t, Family::Rsa, &xk, Skew::default(), NOW).is_ok());

        // Errors.
        assert!(KeySet::from_jwks(Family::Rsa, b"{").unwrap_err().contains("not valid JSON"));
        assert!(KeySet::from_jwks(Family::Rsa, b"{\"k\":[]}").unwrap_err().contains("\"keys\""));
        assert!(KeySet::from_jwks(Family::Rsa, b"{\"keys\":[]}").unwrap_err().contains("no usable key"));
        ec["y"] = ec["x"].clone(); // not on the curve
        let bad = json!({"keys": [ec]}).to_string();
        let e = KeySet::from_jwks(Family::Ecdsa, bad.as_bytes()).unwrap_err();
        assert!(e.contains("curve point"), "{e}");
        let weak = json!({"keys": [{"kty": "RSA", "n": B64URL.encode([0xffu8; 64]), "e": "AQAB"}]}).to_string();
        assert!(KeySet::from_jwks(Family::Rsa, weak.as_bytes()).unwrap_err().contains("512 bits"));
        let _ = rsa;
    }

    #[test]
    fn keyset_is_send_sync() {
        // Key sets live in the shared snapshot; `Claims` stay on the worker that verified them
        // (held in `Rc`, with the identity cached as `Rc<str>`), so they need not be `Send`.
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<KeySet>();
    }

    // --- cache ----------------------------------------------------------------------------------

    fn claims_exp(exp: Option<u64>) -> Rc<Claims> {
        Rc::new(Claims { map: Map::new(), exp, identity: Default::default(), grant: Default::default() })
    }

    #[test]
    fn cache_hit_miss_scope() {
        let mut c = VerifiedCache::new(10, 60);
        assert!(c.get("api", "tok", NOW).is_none());
        c.insert("api", "tok", claims_exp(None), NOW);
        assert_eq!(c.len(), 1);
        assert!(c.get("api", "tok", NOW).is_some());
        assert!(c.get("api2", "tok", NOW).is_none());
        assert!(c.get("api", "tok2", NOW).is_none());
        // Length prefix: ("ab","c") and ("a","bc") differ.
        c.insert("ab", "c", claims_exp(None), NOW);
        assert!(c.get("a", "bc", NOW).is_none());
        // Re-insert replaces, no growth.
        c.insert("api", "tok", claims_exp(Some(NOW + 5)), NOW);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("api", "tok", NOW).unwrap().exp, Some(NOW + 5));
    }

    #[test]
    fn cache_expiry() {
        let mut c = VerifiedCache::new(10, 60);
        c.insert("s", "ttl", claims_exp(None), NOW);
        c.insert("s", "exp", claims_exp(Some(NOW + 10)), NOW);
        c.insert("s", "past", claims_exp(Some(NOW - 1)), NOW);
        assert_eq!(c.len(), 2); // already-expired never stored
        assert!(c.get("s", "exp", NOW + 10).is_some());
        assert!(c.get("s", "exp", NOW + 11).is_none());
        assert_eq!(c.len(), 1); // expired entry dropped on get
        assert!(c.get("s", "ttl", NOW + 59).is_some());
        assert!(c.get("s", "ttl", NOW + 60).is_none());
        let mut z = VerifiedCache::new(10, 0);
        z.insert("s", "t", claims_exp(None), NOW);
        assert_eq!(z.len(), 0);
        let mut z = VerifiedCache::new(0, 60);
        z.insert("s", "t", claims_exp(None), NOW);
        assert_eq!(z.len(), 0);
    }

    #[test]
    fn cache_capacity() {
        let mut c = VerifiedCache::new(4, 60);
        for i in 0..4 {
            c.insert("s", &format!("t{i}"), claims_exp(None), NOW);
        }
        assert_eq!(c.len(), 4);
        // Full, nothing expired: one entry goes (which one is the eviction policy's choice).
        c.insert("s", "t4", claims_exp(None), NOW);
        assert_eq!(c.len(), 4);
        assert!(c.get("s", "t4", NOW).is_some());
        assert_eq!((0..4).filter(|i| c.get("s", &format!("t{i}"), NOW).is_none()).count(), 1);
        // Expired entries are evicted before live ones.
        let mut c = VerifiedCache::new(4, 60);
        c.insert("s", "old-live", claims_exp(None), NOW);
        c.insert("s", "short1", claims_exp(Some(NOW + 1)), NOW);
        c.insert("s", "short2", claims_exp(Some(NOW + 1)), NOW);
        c.insert("s", "live", claims_exp(None), NOW);
        c.insert("s", "new", claims_exp(None), NOW + 5);
        assert_eq!(c.len(), 3);
        for t in ["old-live", "live", "new"] {
            assert!(c.get("s", t, NOW + 5).is_some(), "{t}");
        }
        // Long churn stays bounded.
        let mut c = VerifiedCache::new(100, 60);
        for i in 0..10_000u64 {
            c.insert("s", &i.to_string(), claims_exp(Some(NOW + i / 50 + (i % 7))), NOW + i / 50);
            assert!(c.len() <= 100);
        }
        assert!(c.get("s", "9999", NOW + 9999 / 50).is_some());
    }

    #[test]
    fn cache_keeps_tokens_in_use_through_a_flood_of_new_tokens() {
        // A million distinct verified tokens, each seen once (keys stand in for the SHA-256 of
        // scope and token, so the test measures the cache, not the hashing), while a few tokens
        // stay in use: the old insertion-order FIFO evicted them after `capacity` inserts.
        let mut c = VerifiedCache::new(1_000, 60);
        let busy: Vec<CacheKey> = (0..20u8).map(|i| [i; 32]).collect();
        for k in &busy {
            c.insert_key(*k, claims_exp(None), NOW);
        }
        for i in 0..1_000_000u64 {
            let mut k = [0xeeu8; 32];
            k[..8].copy_from_slice(&i.to_le_bytes());
            c.insert_key(k, claims_exp(None), NOW);
            if i % 500 == 0 {
                for k in &busy {
                    assert!(c.get_key(k, NOW).is_some(), "token in use evicted after {i} new tokens");
                }
            }
        }
        assert!(c.len() <= 1_000);
        for k in &busy {
            assert!(c.get_key(k, NOW).is_some());
        }
    }

    // --- cost measurement (run: cargo test --release -- --ignored --nocapture measure) -------

    #[test]
    #[ignore]
    fn measure_costs() {
        use std::time::Instant;
        fn per_op(label: &str, n: u32, mut f: impl FnMut()) {
            for _ in 0..n / 10 {
                f();
            }
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            let ns = t.elapsed().as_nanos() / u128::from(n);
            println!("{label:<24} {ns:>9} ns/op");
        }
        let hk = KeySet::from_source(Family::Hmac, "Zm9v").unwrap();
        per_op("HS256 verify", 200_000, || {
            assert!(verify(std::hint::black_box(TYK_TOKEN), Family::Hmac, &hk, Skew::default(), NOW).is_ok());
        });
        let rk = rsa_keys();
        let rs = sign(Algorithm::RS256, None, &json!({"sub": "u", "exp": NOW + 60}), &rsa_enc(RSA1_PEM));
        per_op("RS256 verify (2048)", 5_000, || {
            assert!(verify(std::hint::black_box(&rs), Family::Rsa, &rk, Skew::default(), NOW).is_ok());
        });
        let ek = KeySet::from_source(Family::Ecdsa, EC1_PUB).unwrap();
        let es = sign(Algorithm::ES256, None, &json!({"sub": "u"}), &ec_enc(EC1_PEM));
        per_op("ES256 verify", 5_000, || {
            assert!(verify(std::hint::black_box(&es), Family::Ecdsa, &ek, Skew::default(), NOW).is_ok());
        });
        let mut cache = VerifiedCache::new(10_000, 60);
        let claims = Rc::new(verify(&rs, Family::Rsa, &rk, Skew::default(), NOW).unwrap());
        cache.insert("api:1", &rs, claims, NOW);
        per_op("cache hit (RS256 token)", 1_000_000, || {
            assert!(cache.get("api:1", std::hint::black_box(&rs), NOW).is_some());
        });
        per_op("cache miss", 1_000_000, || {
            assert!(cache.get("api:2", std::hint::black_box(&rs), NOW).is_none());
        });
    }
}
