//! A record as the Tyk gateway writes its AnalyticsRecord for the pump: msgpack, encoded the way
//! `gopkg.in/vmihailenco/msgpack.v2` encodes the Go struct (tyk-pump's analytics/analytics.go),
//! so that an unchanged tyk-pump decodes it.
//!
//! That library writes a struct as a map keyed by the Go field names, in declaration order,
//! exported fields only (it reads no `json` tag, so `CollectionName`, `json:"-"`, is there too);
//! nested structs as maps; a `time.Time` as the fixarray `[unix seconds, nanoseconds]` (`0x92`,
//! not the msgpack timestamp extension; time.go `EncodeTime`); integers in their smallest form,
//! non-negative ones as unsigned (encode_number.go `EncodeInt64`); a nil slice or map as nil.
//! The fields Portcullis has no value for are written as Go's zero values, as the gateway writes
//! them when it has none (no GeoIP database, not GraphQL, not MCP).

use rmp::encode as mp;

use super::decode::Record;

/// Tyk's `SetExpiry(0)`: 100 years (analytics.go, `24 * 365 * 100` hours).
const HUNDRED_YEARS_SECS: u64 = 100 * 365 * 24 * 3600;

/// The AnalyticsRecord fields in Go's declaration order: what the encoder writes, and what the
/// tests check a decoder sees.
pub const FIELDS: [&str; 35] = [
    "Method",
    "Host",
    "Path",
    "RawPath",
    "ContentLength",
    "UserAgent",
    "Day",
    "Month",
    "Year",
    "Hour",
    "ResponseCode",
    "APIKey",
    "TimeStamp",
    "APIVersion",
    "APIName",
    "APIID",
    "OrgID",
    "OauthID",
    "RequestTime",
    "RawRequest",
    "RawResponse",
    "IPAddress",
    "Geo",
    "Network",
    "Latency",
    "Tags",
    "Alias",
    "TrackPath",
    "ExpireAt",
    "ApiSchema",
    "OriginalPath",
    "ListenPath",
    "GraphQLStats",
    "MCPStats",
    "CollectionName",
];

fn key(out: &mut Vec<u8>, k: &str) {
    let _ = mp::write_str(out, k);
}

fn str_field(out: &mut Vec<u8>, k: &str, v: &str) {
    key(out, k);
    let _ = mp::write_str(out, v);
}

fn int_field(out: &mut Vec<u8>, k: &str, v: u64) {
    key(out, k);
    let _ = mp::write_uint(out, v);
}

fn time(out: &mut Vec<u8>, secs: i64, nanos: u32) {
    let _ = mp::write_array_len(out, 2);
    let _ = mp::write_sint(out, secs);
    let _ = mp::write_uint(out, u64::from(nanos));
}

/// Appends `r` as one msgpack AnalyticsRecord. `expire_after_s`: Tyk's `expire_analytics_after`
/// when the record has none (0: Tyk's 100 years).
pub fn encode(out: &mut Vec<u8>, r: &Record<'_>, expire_after_s: u64) {
    let us = r.unix_us();
    let (secs, nanos) = ((us / 1_000_000) as i64, ((us % 1_000_000) * 1000) as u32);
    let _ = mp::write_map_len(out, FIELDS.len() as u32);
    str_field(out, "Method", &r.method);
    str_field(out, "Host", &r.host);
    str_field(out, "Path", &r.path);
    str_field(out, "RawPath", &r.raw_path);
    int_field(out, "ContentLength", r.content_length);
    str_field(out, "UserAgent", &r.user_agent);
    int_field(out, "Day", u64::from(r.day));
    int_field(out, "Month", u64::from(r.month));
    int_field(out, "Year", u64::from(r.year));
    int_field(out, "Hour", u64::from(r.hour));
    int_field(out, "ResponseCode", u64::from(r.response_code));
    str_field(out, "APIKey", &r.api_key);
    key(out, "TimeStamp");
    time(out, secs, nanos);
    str_field(out, "APIVersion", &r.api_version);
    str_field(out, "APIName", &r.api_name);
    str_field(out, "APIID", &r.api_id);
    str_field(out, "OrgID", &r.org_id);
    str_field(out, "OauthID", &r.oauth_id);
    int_field(out, "RequestTime", r.request_time);
    str_field(out, "RawRequest", &r.raw_request);
    str_field(out, "RawResponse", &r.raw_response);
    str_field(out, "IPAddress", &r.ip_address);
    key(out, "Geo");
    let _ = mp::write_map_len(out, 3);
    key(out, "Country");
    let _ = mp::write_map_len(out, 1);
    str_field(out, "ISOCode", "");
    key(out, "City");
    let _ = mp::write_map_len(out, 2);
    int_field(out, "GeoNameID", 0);
    key(out, "Names");
    let _ = mp::write_nil(out);
    key(out, "Location");
    let _ = mp::write_map_len(out, 3);
    key(out, "Latitude");
    let _ = mp::write_f64(out, 0.0);
    key(out, "Longitude");
    let _ = mp::write_f64(out, 0.0);
    str_field(out, "TimeZone", "");
    key(out, "Network");
    let _ = mp::write_map_len(out, 4);
    int_field(out, "OpenConnections", r.network.open_connections);
    int_field(out, "ClosedConnection", r.network.closed_connections);
    int_field(out, "BytesIn", r.network.bytes_in);
    int_field(out, "BytesOut", r.network.bytes_out);
    key(out, "Latency");
    let _ = mp::write_map_len(out, 3);
    int_field(out, "Total", r.latency.total);
    int_field(out, "Upstream", r.latency.upstream);
    int_field(out, "Gateway", r.latency.gateway);
    key(out, "Tags");
    let _ = mp::write_array_len(out, r.tags.len() as u32);
    for t in &r.tags {
        let _ = mp::write_str(out, t);
    }
    str_field(out, "Alias", &r.alias);
    key(out, "TrackPath");
    let _ = mp::write_bool(out, r.track_path);
    key(out, "ExpireAt");
    let after = match (r.expire_after_s, expire_after_s) {
        (0, 0) => HUNDRED_YEARS_SECS,
        (0, d) | (d, _) => d,
    };
    time(out, secs.saturating_add(after as i64), nanos);
    str_field(out, "ApiSchema", "");
    str_field(out, "OriginalPath", "");
    str_field(out, "ListenPath", "");
    key(out, "GraphQLStats");
    let _ = mp::write_map_len(out, 7);
    str_field(out, "Variables", "");
    for k in ["RootFields", "Types", "Errors"] {
        key(out, k);
        let _ = mp::write_nil(out);
    }
    int_field(out, "OperationType", 0);
    for k in ["HasErrors", "IsGraphQL"] {
        key(out, k);
        let _ = mp::write_bool(out, false);
    }
    key(out, "MCPStats");
    let _ = mp::write_map_len(out, 4);
    key(out, "IsMCP");
    let _ = mp::write_bool(out, false);
    for k in ["JSONRPCMethod", "PrimitiveType", "PrimitiveName"] {
        str_field(out, k, "");
    }
    str_field(out, "CollectionName", "");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn record() -> Record<'static> {
        Record {
            method: "GET".into(),
            path: "/x".into(),
            response_code: 500,
            content_length: 300,
            tags: vec![Cow::Borrowed("user-foo@bar.com")],
            timestamp: "2026-12-01T06:41:25.123456Z".into(),
            day: 1,
            month: 12,
            year: 2026,
            hour: 6,
            ..Default::default()
        }
    }

    #[test]
    fn a_map_of_the_go_field_names_in_order_with_gos_encodings() {
        let mut out = Vec::new();
        encode(&mut out, &record(), 0);
        // map16 of 35 entries; first key "Method" as fixstr.
        assert_eq!(&out[..3], &[0xde, 0x00, 0x23]);
        assert_eq!(&out[3..10], b"\xa6Method");
        let find = |k: &str| {
            let mut pat = vec![0xa0 | k.len() as u8];
            pat.extend_from_slice(k.as_bytes());
            let at = out.windows(pat.len()).position(|w| w == pat).unwrap_or_else(|| panic!("no key {k}"));
            at + pat.len()
        };
        // Keys in declaration order.
        let positions: Vec<usize> = FIELDS.iter().map(|k| find(k)).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        // ResponseCode 500: uint16 (cd 01 f4); ContentLength 300 the same; Day 1: fixint.
        assert_eq!(&out[find("ResponseCode")..][..3], &[0xcd, 0x01, 0xf4]);
        assert_eq!(&out[find("ContentLength")..][..3], &[0xcd, 0x01, 0x2c]);
        assert_eq!(out[find("Day")], 0x01);
        // TimeStamp: [1796107285 (uint32), 123456000 (uint32)].
        let ts = find("TimeStamp");
        assert_eq!(&out[ts..ts + 11], &[0x92, 0xce, 0x6b, 0x0e, 0x6c, 0x15, 0xce, 0x07, 0x5b, 0xca, 0x00]);
        // ExpireAt: 100 years later.
        let ex = find("ExpireAt");
        assert_eq!(out[ex], 0x92);
        assert_eq!(out[ex + 1], 0xcf, "past 2106: uint64");
        let mut rd = &out[ex + 1..];
        assert_eq!(rmp::decode::read_int::<u64, _>(&mut rd).unwrap(), 1_796_107_285 + HUNDRED_YEARS_SECS);
        // Tags: fixarray of one; RootFields: nil; Latitude: float64.
        assert_eq!(out[find("Tags")], 0x91);
        assert_eq!(out[find("RootFields")], 0xc0);
        assert_eq!(out[find("Latitude")], 0xcb);
        // Go's zero time.Time (0001-01-01) as Go writes it: a negative int64.
        let mut zero = Vec::new();
        time(&mut zero, -62_135_596_800, 0);
        assert_eq!(zero[..2], [0x92, 0xd3]);
    }

    #[test]
    fn expiry_comes_from_the_record_then_the_config() {
        let ex = |rec_after: u64, cfg_after: u64| {
            let mut r = record();
            r.expire_after_s = rec_after;
            let mut out = Vec::new();
            encode(&mut out, &r, cfg_after);
            let at = out.windows(9).position(|w| w == b"\xa8ExpireAt").unwrap() + 9;
            let mut rd = &out[at + 1..];
            rmp::decode::read_int::<u64, _>(&mut rd).unwrap() - 1_796_107_285
        };
        assert_eq!(ex(60, 3600), 60);
        assert_eq!(ex(0, 3600), 3600);
        assert_eq!(ex(0, 0), HUNDRED_YEARS_SECS);
    }
}
