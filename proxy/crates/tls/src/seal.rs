//! Secrets at rest in a store every node reads (an ACME certificate's private key in Redis):
//! AES-256-GCM under a key derived with HKDF-SHA256 from a secret the nodes share, as Tyk keeps
//! private keys in Redis encrypted with its `secret`.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};

fn key(secret: &[u8], purpose: &str) -> Option<LessSafeKey> {
    let prk = Salt::new(HKDF_SHA256, b"portcullis sealed secrets").extract(secret);
    let info = [purpose.as_bytes()];
    let okm = prk.expand(&info, &AES_256_GCM).ok()?;
    Some(LessSafeKey::new(UnboundKey::from(okm)))
}

/// `data` sealed under `secret` for `purpose` (the purpose is bound in: a value sealed for one
/// purpose does not open for another): nonce, then ciphertext and tag.
pub fn seal(secret: &[u8], purpose: &str, data: &[u8]) -> Option<Vec<u8>> {
    let key = key(secret, purpose)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).ok()?;
    let mut sealed = data.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(purpose.as_bytes()), &mut sealed)
        .ok()?;
    let mut out = nonce.to_vec();
    out.append(&mut sealed);
    Some(out)
}

/// What [`seal`] sealed, if `sealed` is intact and was sealed under `secret` for `purpose`.
pub fn open(secret: &[u8], purpose: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return None;
    }
    let key = key(secret, purpose)?;
    let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).ok()?;
    let mut body = sealed[NONCE_LEN..].to_vec();
    let plain = key.open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut body).ok()?;
    Some(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_with_its_secret_and_purpose_only() {
        let s = seal(b"node secret", "acme key example.com", b"-----BEGIN PRIVATE KEY-----").unwrap();
        assert_eq!(open(b"node secret", "acme key example.com", &s).unwrap(), b"-----BEGIN PRIVATE KEY-----");
        assert!(open(b"other secret", "acme key example.com", &s).is_none());
        assert!(open(b"node secret", "acme key other.com", &s).is_none());
        let mut tampered = s.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(open(b"node secret", "acme key example.com", &tampered).is_none());
        assert!(open(b"node secret", "acme key example.com", &s[..10]).is_none());
        assert_ne!(seal(b"k", "p", b"x").unwrap(), seal(b"k", "p", b"x").unwrap(), "a nonce per seal");
    }
}
