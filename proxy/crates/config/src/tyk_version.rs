//! Tyk's classic versioning fields of an API definition (`version_data`, `definition`) ->
//! [`Versioning`]: whether the API is versioned, where a request's version is (`location`,
//! `key`), its default, what is stripped, and each version's expiry and target. Each version's
//! middleware lists are compiled by `tyk_auth.rs` (`Pick::Named`) into its own `ApiSpec`
//! (tyk.rs), which [`Versioning`] addresses by index.
//!
//! As Tyk's loader and request path read them: gateway/api_definition.go:309-323 (expiry),
//! 2283-2462 (the version of a request), gateway/multi_target_proxy_handler.go (targets),
//! apidef/api_definitions.go:451-522 (the fields).

use serde_json::Value;

use portcullis_policy::version::{Location, Version, Versioning};

use super::{brief, ConfigError};

/// A versioned API's settings, with each version's target.
pub(super) struct Plan {
    /// [`Version::index`] is the version's position in `versions` until the snapshot places it.
    pub versioning: Versioning,
    pub versions: Vec<VersionPlan>,
    /// `location: header` with `strip_versioning_data`: the header, lower case, is removed
    /// before the upstream (api_definition.go:2299-2304).
    pub strip_header: Option<String>,
    /// `location: url-param` with `strip_versioning_data`: the parameter is removed and the query
    /// re-encoded (api_definition.go:2307-2314).
    pub strip_param: Option<String>,
}

/// One version's target.
pub(super) struct VersionPlan {
    pub name: String,
    /// The `override_target` a request for this version goes to, and the field it is in
    /// (`None`: the API's own targets).
    pub target: Option<(String, String)>,
}

/// Whether the API is versioned: Tyk reads an absent `not_versioned` as false
/// (apidef/api_definitions.go:494, a plain bool). `None` (with an error) when it is not a bool:
/// Tyk cannot load such a definition.
pub(super) fn is_versioned(file: &std::path::Path, json: &Value, errs: &mut Vec<ConfigError>) -> Option<bool> {
    match json.pointer("/version_data/not_versioned") {
        None | Some(Value::Null) => Some(true),
        Some(Value::Bool(b)) => Some(!b),
        Some(v) => {
            errs.push(ConfigError::new(file, "version_data.not_versioned", brief(v), "must be true or false"));
            None
        }
    }
}

/// Versions that share a `name`: Tyk compiles each version's lists under its `name`, not its key
/// (gateway/api_definition.go:405-417, looked up by name at 2361), so two versions with one name
/// would both get whichever it compiled last; refused.
pub(super) fn check_names(file: &std::path::Path, json: &Value, errs: &mut Vec<ConfigError>) {
    let Some(versions) = json.pointer("/version_data/versions").and_then(Value::as_object) else { return };
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (key, v) in versions {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if let Some((other, _)) = seen.iter().find(|(_, n)| *n == name) {
            errs.push(ConfigError::new(
                file,
                format!("version_data.versions.{key}.name"),
                name,
                format!("version {other:?} has the same name: Tyk would serve both with the lists of one of them"),
            ));
        }
        seen.push((key, name));
    }
}

/// The versioning of a versioned API; `None` when a field is wrong (each problem pushed).
pub(super) fn parse(file: &std::path::Path, json: &Value, errs: &mut Vec<ConfigError>) -> Option<Plan> {
    let before = errs.len();
    let mut err = |field: &str, value: String, msg: &str| errs.push(ConfigError::new(file, field, value, msg));
    let string = |err: &mut dyn FnMut(&str, String, &str), ptr: &str| -> String {
        match json.pointer(ptr) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                err(&ptr[1..].replace('/', "."), brief(v), "must be a string");
                String::new()
            }
        }
    };
    let flag = |err: &mut dyn FnMut(&str, String, &str), ptr: &str| -> bool {
        match json.pointer(ptr) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                err(&ptr[1..].replace('/', "."), brief(v), "must be true or false");
                false
            }
        }
    };
    let location_text = string(&mut err, "/definition/location");
    let location = match location_text.as_str() {
        // Tyk reads no version from the request then (its switch has no case for it): every
        // request gets `default_version`.
        "" => Location::None,
        "header" => Location::Header,
        "url-param" => Location::Param,
        "url" => Location::Url,
        _ => {
            err("definition.location", location_text.clone(), "must be header, url-param or url");
            Location::None
        }
    };
    // No default: Tyk's loader sets none for a definition file (`x-api-version` is the default
    // of its versioning API for new APIs only, lib/apidef/version.go:182-184); a header version
    // with no key is never found (Go's `Header.Get("")`).
    let key = string(&mut err, "/definition/key");
    let strip_data = flag(&mut err, "/definition/strip_versioning_data");
    // `strip_path` is read only for URL versions (api_definition.go:2326).
    let strip_path = flag(&mut err, "/definition/strip_path");
    let fallback_to_default = flag(&mut err, "/definition/fallback_to_default");
    let pattern_text = string(&mut err, "/definition/url_versioning_pattern");
    let url_pattern = if pattern_text.is_empty() {
        None
    } else {
        match regex::Regex::new(&pattern_text) {
            Ok(re) => Some(re),
            Err(e) => {
                // Tyk logs the error per request and strips as if it matched; refused here.
                err("definition.url_versioning_pattern", pattern_text.clone(), &format!("not a valid pattern: {e}"));
                None
            }
        }
    };
    let slug = string(&mut err, "/slug");
    let default = string(&mut err, "/version_data/default_version");

    let Some(map) = json.pointer("/version_data/versions").and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        let v = json.pointer("/version_data/versions").map(brief).unwrap_or_default();
        err(
            "version_data.versions",
            v,
            "a versioned API (not_versioned false or absent) needs a version (Tyk answers every request 403 \"Version information not found\"); or set not_versioned to true",
        );
        return None;
    };
    let mut versions = Vec::new();
    let mut plans = Vec::new();
    for (name, v) in map {
        let field = |k: &str| format!("version_data.versions.{name}.{k}");
        let expires = match v.get("expires") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() || s == "-1" => None,
            Some(Value::String(s)) => match parse_expiry(s) {
                Some(at) => Some(at),
                None => {
                    // Tyk loads it and refuses every request to the version, "Could not parse
                    // expiry date, disallow" (apidef/api_definitions.go:1431-1433).
                    err(
                        &field("expires"),
                        s.clone(),
                        "must be a date as Tyk writes it, \"2006-01-02 15:04\" (UTC), or \"\" / \"-1\" for never",
                    );
                    None
                }
            },
            Some(other) => {
                err(&field("expires"), brief(other), "must be a string");
                None
            }
        };
        // The target of a request for this version: the override of the version whose key is
        // this version's `name` (Tyk keys its proxies by version key and looks them up by the
        // request version's name, multi_target_proxy_handler.go:18-24, 48-75), else the API's.
        let own_name = v.get("name").and_then(Value::as_str).unwrap_or("");
        let target = map
            .get(own_name)
            .and_then(|by_name| by_name.get("override_target"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(|t| (format!("version_data.versions.{own_name}.override_target"), t.to_string()));
        let own_target = v.get("override_target").and_then(Value::as_str).filter(|t| !t.is_empty());
        if own_target.is_some() && own_name != name {
            tracing::warn!(file = %file.display(), field = %field("override_target"), name = own_name,
                "the version's name is not its key: Tyk looks its target up by name, so this override_target is not this version's");
        }
        versions.push(Version { name: name.clone(), index: versions.len() as u32, expires });
        plans.push(VersionPlan { name: name.clone(), target });
    }
    if errs.len() > before {
        return None;
    }
    let strip_header = (location == Location::Header && strip_data).then(|| key.to_ascii_lowercase());
    let strip_param = (location == Location::Param && strip_data).then(|| key.clone());
    let versioning = Versioning {
        location,
        key,
        strip_url: strip_data || strip_path,
        url_pattern,
        slug,
        default,
        fallback_to_default,
        versions,
    };
    Some(Plan { versioning, versions: plans, strip_header, strip_param })
}

/// The version a non-versioned API serves, as Tyk picks it: its only version, else the one
/// named `Default`, `default` or `` (in that order).
pub(super) fn default_version_name(versions: &serde_json::Map<String, Value>) -> Option<&str> {
    if versions.len() == 1 {
        return versions.keys().next().map(String::as_str);
    }
    ["Default", "default", ""].into_iter().find(|n| versions.contains_key(*n))
}

/// Go's `time.Parse("2006-01-02 15:04", s)` as Unix seconds (UTC, as Go reads a layout without
/// a zone): a 4-digit year, 2-digit month, day and minute, a 1- or 2-digit hour, each in range
/// (the day within its month), nothing after.
pub(super) fn parse_expiry(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let d = b.get(r)?;
        d.iter().all(u8::is_ascii_digit).then(|| d.iter().fold(0, |n, c| n * 10 + u32::from(c - b'0')))
    };
    let year = num(0..4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || b.get(10) != Some(&b' ') {
        return None;
    }
    let (month, day) = (num(5..7)?, num(8..10)?);
    let hour_len = if b.get(12) == Some(&b':') { 1 } else { 2 };
    let hour = num(11..11 + hour_len)?;
    if b.get(11 + hour_len) != Some(&b':') {
        return None;
    }
    let minute = num(12 + hour_len..14 + hour_len)?;
    if b.len() != 14 + hour_len || !(1..=12).contains(&month) || hour > 23 || minute > 59 {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month as usize - 1];
    if day < 1 || day > days_in {
        return None;
    }
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let (y, m) = (i64::from(year) - i64::from(month <= 2), i64::from(month));
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60;
    // Before 1970: long expired; `now >= 0` refuses it as Tyk does.
    Some(secs.max(0) as u64)
}

/// Go's `time.RFC1123` of a UTC time (`Mon, 02 Jan 2006 15:04:05 UTC`), as Tyk writes
/// `X-Tyk-Api-Expires` (gateway/mw_version_check.go:169-173).
pub(super) fn rfc1123_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} UTC",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[month as usize - 1],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_dates_parse_as_go_parses_tyks_layout() {
        assert_eq!(parse_expiry("1970-01-01 00:00"), Some(0));
        // Go: time.Date(3000, 1, 2, 15, 4, 0, 0, time.UTC).Format(time.RFC1123).
        assert_eq!(rfc1123_utc(parse_expiry("3000-01-02 15:04").unwrap()), "Thu, 02 Jan 3000 15:04:00 UTC");
        assert_eq!(rfc1123_utc(0), "Thu, 01 Jan 1970 00:00:00 UTC");
        assert_eq!(rfc1123_utc(parse_expiry("2024-02-29 9:05").unwrap()), "Thu, 29 Feb 2024 09:05:00 UTC");
        assert_eq!(parse_expiry("2080-07-28 15:00"), Some(3_489_404_400));
        assert_eq!(parse_expiry("2024-02-29 23:59"), Some(1_709_251_140));
        assert_eq!(parse_expiry("2024-02-29 9:05"), Some(1_709_197_500), "Go's `15` takes one digit too");
        for bad in [
            "2023-02-29 10:00",
            "2024-13-01 10:00",
            "2024-1-01 10:00",
            "2024-01-01 24:00",
            "2024-01-01 10:60",
            "2024-01-01T10:00",
            "2024-01-01 10:00:00",
            "2024-01-01",
            "24-01-01 10:00",
            "2024-01-01 10:0",
            "x",
        ] {
            assert_eq!(parse_expiry(bad), None, "{bad}");
        }
    }
}
