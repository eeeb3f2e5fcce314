//! Wall-clock time for records: RFC 3339 text (microseconds, UTC) and the calendar fields Tyk's
//! records carry (`day`, `month`, `year`, `hour`). The date part is worked out once per second
//! and reused; only the microseconds are written per record.

use std::time::{SystemTime, UNIX_EPOCH};

/// One instant, formatted.
#[derive(Debug, Clone, Copy)]
pub struct WallTime {
    /// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`.
    pub rfc3339: [u8; 27],
    pub year: u32,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
}

impl WallTime {
    /// The instant `unix_us` microseconds after the epoch.
    pub fn at(unix_us: u64) -> WallTime {
        let mut c = SecondCache::default();
        c.format(unix_us)
    }
}

/// Reuses the date and time of day while the second does not change.
#[derive(Debug, Default)]
pub struct SecondCache {
    second: Option<u64>,
    last: Option<WallTime>,
}

impl SecondCache {
    /// Now, from the system clock (a vDSO read).
    pub fn now(&mut self) -> WallTime {
        let us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        self.format(us)
    }

    pub fn format(&mut self, unix_us: u64) -> WallTime {
        let secs = unix_us / 1_000_000;
        let mut t = match (self.second, self.last) {
            (Some(s), Some(t)) if s == secs => t,
            _ => {
                let t = format_second(secs);
                self.second = Some(secs);
                self.last = Some(t);
                t
            }
        };
        let mut micros = unix_us % 1_000_000;
        for i in (20..26).rev() {
            t.rfc3339[i] = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        t
    }
}

fn format_second(secs: u64) -> WallTime {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = ((rem / 3600) as u8, ((rem / 60) % 60) as u8, (rem % 60) as u8);
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let two = |b: &mut [u8; 27], at: usize, v: u8| {
        b[at] = b'0' + v / 10;
        b[at + 1] = b'0' + v % 10;
    };
    let y = year.min(9999);
    b[0] = b'0' + (y / 1000) as u8;
    b[1] = b'0' + (y / 100 % 10) as u8;
    b[2] = b'0' + (y / 10 % 10) as u8;
    b[3] = b'0' + (y % 10) as u8;
    two(&mut b, 5, month);
    two(&mut b, 8, day);
    two(&mut b, 11, h);
    two(&mut b, 14, m);
    two(&mut b, 17, s);
    WallTime { rfc3339: b, year, month, day, hour: h }
}

/// Unix microseconds of `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` as [`WallTime`] writes it.
pub fn unix_us_of(t: &[u8]) -> Option<u64> {
    if t.len() != 27 || t[4] != b'-' || t[7] != b'-' || t[10] != b'T' || t[19] != b'.' || t[26] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        t[r].iter().try_fold(0u64, |n, &c| c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0')))
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s, us) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y as i64, mo as i64, d as i64);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + s;
    Some(secs * 1_000_000 + us)
}

/// (year, month, day) to days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (u32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    ((y + i64::from(m <= 2)) as u32, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(us: u64) -> String {
        String::from_utf8(WallTime::at(us).rfc3339.to_vec()).unwrap()
    }

    #[test]
    fn known_instants() {
        assert_eq!(text(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(text(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(text(1_796_107_285_123_456), "2026-12-01T06:41:25.123456Z");
        assert_eq!(text(4_102_444_799_999_999), "2099-12-31T23:59:59.999999Z");
    }

    #[test]
    fn agrees_with_httpdate_over_many_days() {
        // httpdate formats "Tue, 01 Dec 2026 06:41:25 GMT": compare the calendar fields.
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let mut secs = 0u64;
        while secs < 4_102_444_800 {
            let w = WallTime::at(secs * 1_000_000);
            let h = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs));
            let expect = format!("{:02} {} {} {:02}:", w.day, months[w.month as usize - 1], w.year, w.hour);
            assert!(h.contains(&expect), "{h} vs {expect}");
            assert_eq!(&h[17..25], std::str::from_utf8(&w.rfc3339[11..19]).unwrap());
            secs += 86_400 * 7 + 3_601;
        }
    }

    #[test]
    fn rfc3339_reads_back() {
        for us in [0, 951_782_400_000_001, 1_796_107_285_123_456, 4_102_444_799_999_999] {
            assert_eq!(unix_us_of(&WallTime::at(us).rfc3339), Some(us));
        }
        assert_eq!(unix_us_of(b"2026-13-01T06:41:25.000001Z"), None);
        assert_eq!(unix_us_of(b"2026-12-01 06:41:25"), None);
    }

    #[test]
    fn cache_reuses_the_second_and_writes_new_micros() {
        let mut c = SecondCache::default();
        let a = c.format(1_796_107_285_000_001);
        let b = c.format(1_796_107_285_999_999);
        let d = c.format(1_796_107_286_000_000);
        assert_eq!(&a.rfc3339[..], b"2026-12-01T06:41:25.000001Z");
        assert_eq!(&b.rfc3339[..], b"2026-12-01T06:41:25.999999Z");
        assert_eq!(&d.rfc3339[..], b"2026-12-01T06:41:26.000000Z");
    }
}
