//! Session-ticket keys that every worker and every node derive alike, so that a ticket issued
//! by one resumes on any other, and that rotate by themselves.
//!
//! The key of period `p` (unix time / `period_s`) is HKDF-SHA256 of a shared secret with `p`
//! as info, for AES-256-GCM. Tickets are sealed with the current period's key and open with the
//! current or the previous one, so a ticket lives between one and two periods. Nodes share the
//! secret (configured, or kept in Redis), never the keys: nothing is exchanged per rotation.

use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf::{Prk, Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// Fewest bytes of secret accepted.
pub const MIN_SECRET_BYTES: usize = 32;

/// The secret of this process when none is configured ([`process_secret`]).
static PROCESS_SECRET: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Makes `secret` this process's ticket secret (one kept in Redis, say, so that every node
/// shares it). Only before the first [`process_secret`]; after, the secret in use stays and
/// this returns false.
pub fn set_process_secret(secret: Vec<u8>) -> bool {
    secret.len() >= MIN_SECRET_BYTES && PROCESS_SECRET.set(secret).is_ok()
}

/// The ticket secret of this process: the one [`set_process_secret`] gave, else 32 random
/// bytes drawn on first use, the same for every configuration the process builds (tickets
/// resume across reloads).
pub fn process_secret() -> &'static [u8] {
    PROCESS_SECRET.get_or_init(|| {
        let mut s = vec![0u8; MIN_SECRET_BYTES];
        // SystemRandom fails only without a system RNG (getrandom(2)), where nothing secure
        // can run; the zero secret is not used then, as the panic stops the load.
        SystemRandom::new().fill(&mut s).expect("the system random number generator");
        s
    })
}

/// A ticketer over keys derived from a shared secret (see the module).
pub struct SharedTicketer {
    prk: Prk,
    period_s: u64,
    clock: fn() -> u64,
    rng: SystemRandom,
}

impl fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTicketer").field("period_s", &self.period_s).finish_non_exhaustive()
    }
}

impl SharedTicketer {
    /// Keys from `secret` (at least [`MIN_SECRET_BYTES`]), a new one every `period_s` seconds
    /// (at least 60) of `clock` (unix seconds).
    pub fn new(secret: &[u8], period_s: u64, clock: fn() -> u64) -> Result<SharedTicketer, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the ticket secret has {} bytes; at least {MIN_SECRET_BYTES} are needed",
                secret.len()
            ));
        }
        if period_s < 60 {
            return Err(format!("the ticket key period is {period_s} s; at least 60 s"));
        }
        let prk = Salt::new(HKDF_SHA256, b"portcullis tls session tickets").extract(secret);
        Ok(SharedTicketer { prk, period_s, clock, rng: SystemRandom::new() })
    }

    fn key(&self, period: u64) -> Option<LessSafeKey> {
        let info = period.to_be_bytes();
        let info = [&info[..]];
        let okm = self.prk.expand(&info, &AES_256_GCM).ok()?;
        Some(LessSafeKey::new(UnboundKey::from(okm)))
    }

    fn period(&self) -> u64 {
        (self.clock)() / self.period_s
    }
}

/// A ticket: the period (8 bytes, big-endian, also the AEAD's associated data), the nonce,
/// then the sealed state and its tag.
const HEADER: usize = 8 + NONCE_LEN;

impl ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        u32::try_from(self.period_s).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let period = self.period();
        let key = self.key(period)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(HEADER + plain.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&period.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(period.to_be_bytes()), &mut sealed)
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < HEADER + AES_256_GCM.tag_len() {
            return None;
        }
        let period = u64::from_be_bytes(cipher[..8].try_into().ok()?);
        let now = self.period();
        if period != now && period.checked_add(1) != Some(now) {
            return None;
        }
        let key = self.key(period)?;
        let nonce = Nonce::try_assume_unique_for_key(&cipher[8..HEADER]).ok()?;
        let mut body = cipher[HEADER..].to_vec();
        let plain = key.open_in_place(nonce, Aad::from(period.to_be_bytes()), &mut body).ok()?;
        Some(plain.to_vec())
    }
}
