//! Decimal numbers written straight into byte buffers, for heads and records built on the
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
        let mut short = [0u8; 2];
        assert_eq!(super::write_u64(&mut short, 12345), 2);
    }
}
