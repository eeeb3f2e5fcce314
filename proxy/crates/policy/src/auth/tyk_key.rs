//! Where a Tyk gateway keeps the session of a key, so that keys Tyk gateways wrote to Redis
//! carry over (Tyk's internal/crypto/hash.go, internal/crypto/token.go and
//! gateway/auth_manager.go:171-205, `SessionDetail`).
//!
//! Portcullis keeps every key's session under the SHA-256 of the key (`super::hash_key`). A Tyk
//! gateway keeps it under `hex(hash(name))`, where the name is the key itself or, for a custom
//! key, the token Tyk makes of it (`{"org":..,"id":..,"h":..}` in base64), and the hash is the
//! token's `"h"`, its config's `hash_key_function`, or, for a key that is not a token,
//! MurmurHash3 (32 bits). A token with `"h": "sha256"` is therefore found where Portcullis
//! looks first, and so are the keys the key API makes here (tokens with `"h": "sha256"`).
//!
//! MurmurHash3 is not a cryptographic hash: anyone who reads a key's murmur hash (Tyk puts it in
//! analytics records and in the key API's `key_hash`) can compute a different key with the same
//! hash, and with 32 bits random keys collide with stored ones. A murmur address is therefore
//! tried only when `[auth] tyk_key_hashes` names that function (`Config` refuses unknown names;
//! docs/decisions/0024-tyk-key-hashes.md).
//! Must not: keep the key it is given, or log it.

use std::borrow::Cow;
use std::io::Cursor;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// Tyk's key hash functions (`hash_key_function`, a token's `"h"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TykHash {
    Sha256,
    Murmur32,
    Murmur64,
    Murmur128,
}

impl TykHash {
    /// Tyk's names (internal/crypto/hash.go:15-19).
    pub fn parse(name: &str) -> Option<TykHash> {
        Some(match name {
            "sha256" => TykHash::Sha256,
            "murmur32" => TykHash::Murmur32,
            "murmur64" => TykHash::Murmur64,
            "murmur128" => TykHash::Murmur128,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            TykHash::Sha256 => "sha256",
            TykHash::Murmur32 => "murmur32",
            TykHash::Murmur64 => "murmur64",
            TykHash::Murmur128 => "murmur128",
        }
    }

    /// MurmurHash3: a key can be made to match a known hash (module docs).
    pub fn is_weak(self) -> bool {
        self != TykHash::Sha256
    }

    /// Tyk's `HashStr(input, algo)`: the digest in hex, big-endian as Go's `hash.Hash.Sum`
    /// writes it (TykTechnologies/murmur3: murmur64 is the first half of x64/128, seed 0).
    pub fn hex(self, input: &str) -> String {
        // Reading from a slice cannot fail; 0 keeps a failure visible rather than panicking.
        let mut r = Cursor::new(input.as_bytes());
        match self {
            TykHash::Sha256 => super::hex(&Sha256::digest(input.as_bytes()).into()),
            TykHash::Murmur32 => format!("{:08x}", murmur3::murmur3_32(&mut r, 0).unwrap_or(0)),
            TykHash::Murmur64 => {
                let (h1, _) = split(murmur3::murmur3_x64_128(&mut r, 0).unwrap_or(0));
                format!("{h1:016x}")
            }
            TykHash::Murmur128 => {
                let (h1, h2) = split(murmur3::murmur3_x64_128(&mut r, 0).unwrap_or(0));
                format!("{h1:016x}{h2:016x}")
            }
        }
    }
}

/// The murmur3 crate returns x64/128 as `h2 << 64 | h1`.
fn split(v: u128) -> (u64, u64) {
    (v as u64, (v >> 64) as u64)
}

/// `{"` in base64: how Tyk tells a token from a legacy key (token.go:17).
const B64_JSON_PREFIX: &str = "ey";

fn token_json(key: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    if !key.starts_with(B64_JSON_PREFIX) {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Tyk's `TokenHashAlgo` (token.go:44-60) as the function Tyk then hashes the key with
/// (`hashFunction`, hash.go:21-33): a token's `"h"`, or murmur32 for a legacy key, a token
/// without `"h"`, or an unknown name.
pub fn key_hash_function(key: &str) -> TykHash {
    token_json(key)
        .and_then(|t| t.get("h").and_then(|h| h.as_str()).and_then(TykHash::parse))
        .unwrap_or(TykHash::Murmur32)
}

/// Tyk's `TokenOrg` (token.go:71-92): a token's `"org"`, else the first 24 characters of a
/// legacy key longer than that when they are hex (a Mongo object id), else empty.
pub fn token_org(key: &str) -> Cow<'_, str> {
    if let Some(org) = token_json(key).and_then(|t| t.get("org").and_then(|o| o.as_str().map(str::to_owned))) {
        return Cow::Owned(org);
    }
    match key.get(..24) {
        Some(head) if key.len() > 24 && head.bytes().all(|b| b.is_ascii_hexdigit()) => Cow::Borrowed(head),
        _ => Cow::Borrowed(""),
    }
}

/// Tyk's `GenerateToken(orgID, keyID, algo)` as `generateToken` calls it (auth_manager.go:243-257,
/// token.go:25-41): the key id without the org prefix, in Tyk's JSON text (written with `%s`, not
/// escaped, so that the hash matches Tyk's byte for byte), in standard base64.
pub fn generate_token(org: &str, key_id: &str, hash: TykHash) -> String {
    let id = key_id.strip_prefix(org).unwrap_or(key_id);
    let json = format!(r#"{{"org":"{org}","id":"{id}","h":"{}"}}"#, hash.name());
    base64::engine::general_purpose::STANDARD.encode(json)
}

/// The names, after the store's prefix, under which a Tyk gateway whose `hash_key_function` is
/// `hashes[0]` (and `hash_key_function_fallback` the rest) looks for the session of `key`
/// presented to an API of `org`, in Tyk's order (auth_manager.go:180-205): the custom-key token
/// of the API's org, the key itself hashed as its own form says, the fallbacks' tokens. Only
/// functions in `hashes` are used, and the SHA-256 of the key itself (where Portcullis looks
/// first) is left out.
pub fn tyk_addresses(key: &str, org: &str, hashes: &[TykHash]) -> Vec<String> {
    let own = TykHash::Sha256.hex(key);
    let mut out: Vec<String> = Vec::new();
    let mut push = |name: String| {
        if name != own && !out.contains(&name) {
            out.push(name);
        }
    };
    let custom = token_org(key) != org;
    if let (true, Some(&main)) = (custom, hashes.first()) {
        push(main.hex(&generate_token(org, key, main)));
    }
    let own_form = key_hash_function(key);
    if hashes.contains(&own_form) {
        push(own_form.hex(key));
    }
    if custom {
        for &h in hashes.iter().skip(1) {
            push(h.hex(&generate_token(org, key, h)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected digests from an independent implementation (Python's `mmh3` 5 and `hashlib`),
    // written as Go's `hash.Sum` orders the bytes.
    #[test]
    fn hashes_match_tyks_byte_order() {
        assert_eq!(TykHash::Murmur32.hex("hello"), "248bfa47");
        assert_eq!(TykHash::Murmur64.hex("hello"), "cbd8a7b341bd9b02");
        assert_eq!(TykHash::Murmur128.hex("hello"), "cbd8a7b341bd9b025b1e906a48ae1d19");
        assert_eq!(TykHash::Murmur32.hex("abcdefghijklmnopqrstuvwxyz0123456789"), "5b4c2c16");
        assert_eq!(TykHash::Murmur128.hex("abcdefghijklmnopqrstuvwxyz0123456789"), "f2596f5eb4ff5e3a3996b9372e6d94c0");
        assert_eq!(TykHash::Sha256.hex("hello"), "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    }

    #[test]
    fn tokens_are_tyks_text_and_name_their_hash() {
        let t = generate_token("default", "aa11", TykHash::Murmur64);
        assert_eq!(t, "eyJvcmciOiJkZWZhdWx0IiwiaWQiOiJhYTExIiwiaCI6Im11cm11cjY0In0=");
        assert_eq!(TykHash::Murmur64.hex(&t), "d51bcad24f495eb8");
        // The org prefix of a key id is dropped, as generateToken does.
        assert_eq!(generate_token("default", "defaultaa11", TykHash::Murmur64), t);
        assert_eq!(key_hash_function(&t), TykHash::Murmur64);
        assert_eq!(token_org(&t), "default");
        // Legacy keys: murmur32; a Mongo-id org prefix is the org.
        assert_eq!(key_hash_function("5e9d9544a1dcd60001d0ed20abcdef"), TykHash::Murmur32);
        assert_eq!(token_org("5e9d9544a1dcd60001d0ed20abcdef"), "5e9d9544a1dcd60001d0ed20");
        assert_eq!(token_org("short"), "");
        // Looks like a token but is not JSON: a legacy key.
        assert_eq!(key_hash_function("eyJub3QganNvbg"), TykHash::Murmur32);
        assert_eq!(key_hash_function(&generate_token("o", "i", TykHash::Sha256)), TykHash::Sha256);
    }

    #[test]
    fn addresses_follow_tyks_search_order_and_only_the_named_functions() {
        let m64 = generate_token("default", "aa11", TykHash::Murmur64);
        // Nothing weak is named: a murmur token is not looked for, nor a legacy key's murmur32.
        assert_eq!(tyk_addresses(&m64, "default", &[TykHash::Sha256]), Vec::<String>::new());
        assert_eq!(tyk_addresses("legacykey", "default", &[]), Vec::<String>::new());
        // A custom key by its name: the SHA-256 of its token in the API's org.
        let custom = generate_token("default", "my-key", TykHash::Sha256);
        assert_eq!(tyk_addresses("my-key", "default", &[TykHash::Sha256]), vec![TykHash::Sha256.hex(&custom)]);
        // Named: the token's own murmur64, and murmur32 for the legacy key.
        assert_eq!(tyk_addresses(&m64, "default", &[TykHash::Murmur64]), vec!["d51bcad24f495eb8".to_string()]);
        assert_eq!(
            tyk_addresses("hello", "o", &[TykHash::Murmur64, TykHash::Murmur32]),
            vec![
                TykHash::Murmur64.hex(&generate_token("o", "hello", TykHash::Murmur64)),
                "248bfa47".to_string(),
                TykHash::Murmur32.hex(&generate_token("o", "hello", TykHash::Murmur32)),
            ]
        );
    }
}
