//! Decimal numbers and hex digests written straight into byte buffers, for heads and records built on the
//! request path. `core::fmt` (`write!`) costs a formatter round trip per number: the status line
//! and rate-limit headers written with it showed up as `<usize as Display>::fmt` +
//! `core::fmt::write` in the gateway profile (0.4 % of cycles). Must not: allocate.

/// Appends `v` in decimal.
///
/// Written in place: the number of digits first, then the digits from the last. Copying a
/// variable-length run of digits goes through a `memmove` call for a handful of bytes, which was
/// 1 % of the gateway's cycles (perf, records on); a fixed 20-byte extend is a pair of stores.
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    let n = digit_count(v);
    let start = out.len();
    out.extend_from_slice(&[0u8; 20]);
    fill_digits(&mut out[start..start + n], v);
    out.truncate(start + n);
}

/// Writes `v` in decimal at the start of `out` (20 bytes always suffice) and returns the number
/// of digits written; the last digits of a number that does not fit are cut off (never a panic).
pub fn write_u64(out: &mut [u8], v: u64) -> usize {
    let n = digit_count(v);
    if n <= out.len() {
        fill_digits(&mut out[..n], v);
        return n;
    }
    let mut digits = [0u8; 20];
    fill_digits(&mut digits[..n], v);
    let m = out.len();
    out.copy_from_slice(&digits[..m]);
    m
}

/// Decimal digits of `v` (1 for 0).
#[inline]
fn digit_count(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// Fills `out` with the last `out.len()` decimal digits of `v`.
#[inline]
fn fill_digits(out: &mut [u8], mut v: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
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
        for n in [0u64, 7, 9, 10, 99, 100, 999, 1000, 1234567890, 9_999_999_999_999_999_999, u64::MAX] {
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
        assert_eq!(&short, b"12", "the leading digits are kept");
    }
}
