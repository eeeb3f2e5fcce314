//! Decimal numbers and hex digests written straight into byte buffers, for heads and records built on the
//! request path. `core::fmt` (`write!`) costs a formatter round trip per number: the status line
//! and rate-limit headers written with it showed up as `<usize as Display>::fmt` +
//! `core::fmt::write` in the gateway profile (0.4 % of cycles). Must not: allocate.

/// Appends `v` in decimal.
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    let mut digits = [0u8; 20];
    let n = write_u64(&mut digits, v);
    out.extend_from_slice(&digits[..n]);
}

/// Writes `v` in decimal at the start of `out` (20 bytes always suffice) and returns the number
/// of digits; digits that do not fit are cut off (never a panic).
pub fn write_u64(out: &mut [u8], mut v: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let n = (digits.len() - i).min(out.len());
    out[..n].copy_from_slice(&digits[i..i + n]);
    n
}

/// `v` as 16 lower-case hex digits into `out[..16]` (request ids).
pub fn hex16(v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, d) in out[..16].iter_mut().enumerate() {
        *d = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// A 32-byte digest as 64 lower-case hex digits.
pub fn hex64(h: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in h.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 0xf) as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_formatter() {
        for n in [0u64, 7, 10, 99, 100, 1234567890, u64::MAX] {
            let mut out = b"x".to_vec();
            super::push_u64(&mut out, n);
            assert_eq!(out, format!("x{n}").as_bytes());
            let mut buf = [0u8; 20];
            let len = super::write_u64(&mut buf, n);
            assert_eq!(&buf[..len], n.to_string().as_bytes());
        }
        let h: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let expect: String = h.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(&super::hex64(&h)[..], expect.as_bytes());
        for v in [0u64, 1, 0xf, 0x0123_4567_89ab_cdef, u64::MAX, 0x8000_0000_0000_0000] {
            let mut out = [0u8; 16];
            super::hex16(v, &mut out);
            assert_eq!(std::str::from_utf8(&out).unwrap(), format!("{v:016x}"));
        }
        let mut short = [0u8; 2];
        assert_eq!(super::write_u64(&mut short, 12345), 2);
    }
}
