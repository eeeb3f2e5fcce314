//! One request record as a JSON line, with Tyk's AnalyticsRecord field names, written in two
//! halves into the exchange's own buffer: what the request said ([`begin`], while its head is still
//! in the read buffer) and how it ended ([`finish`]). Pure byte writing: no allocation beyond the
//! buffer's growth, no clock read (the caller passes the time), no I/O.
//!
//! Field meanings (see docs/analytics.md): `path` is the request path without the query as the
//! client sent it, `raw_path` the request target with the query; `host` is the upstream target's
//! host (as Tyk records it); `api_key` is the SHA-256 of the key (hex), as stored; `request_time`
//! and `latency` are whole milliseconds as in Tyk, `request_time_us` the same in microseconds.

use super::clock::WallTime;
use portcullis_http1::digits::push_u64;

/// What a record says about the request, known once it is routed and decided.
pub struct RequestFacts<'a> {
    pub method: &'a [u8],
    /// Path without the query.
    pub path: &'a [u8],
    /// Request target as sent (path and query).
    pub raw_path: &'a [u8],
    pub host: &'a str,
    pub content_length: u64,
    pub user_agent: &'a [u8],
    /// Hex SHA-256 of the credential, or empty.
    pub api_key: &'a str,
    pub api_id: &'a str,
    /// The request's version on a versioned API; `None`: Tyk's `Non Versioned`
    /// (gateway/handler_success.go:206-209).
    pub api_version: Option<&'a str>,
    pub api_name: &'a str,
    pub org_id: &'a str,
    pub ip_address: &'a str,
    /// Tags from `tag_headers` (`<header>-<value>`), then the session's and its policies'.
    pub tags: [&'a [String]; 2],
    /// A `track_endpoints` entry matched: `path` is its pattern (Tyk's `TrackPath`).
    pub track_path: bool,
    /// The API's `expire_analytics_after` (0: none; not written).
    pub expire_after_s: u64,
    /// The session's `alias` (empty: not written).
    pub alias: &'a str,
    /// API visibility's verdict on the request against the API's provided OpenAPI document, a
    /// tag after the others: `visibility-shadow` or `visibility-zombie` (`None`: documented, or
    /// no document).
    pub finding: Option<&'static str>,
}

/// How the exchange ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    pub code: u16,
    /// Total time from the first byte of the request head to the end of the response, us.
    pub total_us: u64,
    /// Time from sending the request upstream to its response head, us (0: never reached it).
    pub upstream_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Writes the request half of a record into `out` (cleared first).
pub fn begin(out: &mut Vec<u8>, f: RequestFacts<'_>) {
    out.clear();
    out.extend_from_slice(b"{\"method\":");
    json_str(out, f.method);
    out.extend_from_slice(b",\"host\":");
    json_str(out, f.host.as_bytes());
    out.extend_from_slice(b",\"path\":");
    json_str(out, f.path);
    out.extend_from_slice(b",\"raw_path\":");
    json_str(out, f.raw_path);
    out.extend_from_slice(b",\"content_length\":");
    push_u64(out, f.content_length);
    out.extend_from_slice(b",\"user_agent\":");
    json_str(out, f.user_agent);
    out.extend_from_slice(b",\"api_key\":");
    json_str(out, f.api_key.as_bytes());
    out.extend_from_slice(b",\"api_version\":");
    json_str(out, f.api_version.unwrap_or("Non Versioned").as_bytes());
    out.extend_from_slice(b",\"api_name\":");
    json_str(out, f.api_name.as_bytes());
    out.extend_from_slice(b",\"api_id\":");
    json_str(out, f.api_id.as_bytes());
    out.extend_from_slice(b",\"org_id\":");
    json_str(out, f.org_id.as_bytes());
    out.extend_from_slice(b",\"ip_address\":");
    json_str(out, f.ip_address.as_bytes());
    out.extend_from_slice(b",\"tags\":[");
    let tags = f.tags.iter().flat_map(|t| t.iter()).map(String::as_str).chain(f.finding);
    for (i, t) in tags.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, t.as_bytes());
    }
    out.push(b']');
    out.extend_from_slice(if f.track_path { b",\"track_path\":true" } else { b",\"track_path\":false" });
    if !f.alias.is_empty() {
        out.extend_from_slice(b",\"alias\":");
        json_str(out, f.alias.as_bytes());
    }
    if f.expire_after_s > 0 {
        out.extend_from_slice(b",\"expire_after_s\":");
        push_u64(out, f.expire_after_s);
    }
}

/// Appends `,"<name>":"<base64 of wire>"` (detailed recording's `raw_request` and
/// `raw_response`, base64 as Tyk writes them) to a record [`begin`] started.
pub fn raw_field(out: &mut Vec<u8>, name: &str, wire: &[u8]) {
    use base64::Engine;
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":\"");
    let at = out.len();
    out.resize(at + base64::encoded_len(wire.len(), true).unwrap_or(0), 0);
    let n = base64::engine::general_purpose::STANDARD.encode_slice(wire, &mut out[at..]).unwrap_or(0);
    out.truncate(at + n);
    out.push(b'"');
}

/// Appends the outcome half and the closing `}\n` to a record [`begin`] started.
pub fn finish(out: &mut Vec<u8>, o: &Outcome, now: &WallTime) {
    let ms = |us: u64| us / 1000;
    out.extend_from_slice(b",\"response_code\":");
    push_u64(out, u64::from(o.code));
    out.extend_from_slice(b",\"request_time\":");
    push_u64(out, ms(o.total_us));
    out.extend_from_slice(b",\"request_time_us\":");
    push_u64(out, o.total_us);
    let gateway_us = o.total_us.saturating_sub(o.upstream_us);
    out.extend_from_slice(b",\"latency\":{\"total\":");
    push_u64(out, ms(o.total_us));
    out.extend_from_slice(b",\"upstream\":");
    push_u64(out, ms(o.upstream_us));
    out.extend_from_slice(b",\"gateway\":");
    push_u64(out, ms(gateway_us));
    out.extend_from_slice(b"},\"network\":{\"open_connections\":0,\"closed_connections\":0,\"bytes_in\":");
    push_u64(out, o.bytes_in);
    out.extend_from_slice(b",\"bytes_out\":");
    push_u64(out, o.bytes_out);
    out.extend_from_slice(b"},\"timestamp\":\"");
    out.extend_from_slice(&now.rfc3339);
    out.extend_from_slice(b"\",\"day\":");
    push_u64(out, u64::from(now.day));
    out.extend_from_slice(b",\"month\":");
    push_u64(out, u64::from(now.month));
    out.extend_from_slice(b",\"year\":");
    push_u64(out, u64::from(now.year));
    out.extend_from_slice(b",\"hour\":");
    push_u64(out, u64::from(now.hour));
    out.extend_from_slice(b"}\n");
}

/// `s` as a JSON string. Bytes that are not UTF-8 become U+FFFD (header values may be any
/// bytes); quotes, backslashes and control characters are escaped.
fn json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    // Fast path: printable ASCII with nothing to escape (almost every value) is copied as is.
    // Measured (`cargo bench -p portcullis-bench --bench record`): see bench/README.md.
    // No early exit, so the compiler vectorises the check (the release build does; the PGO
    // build keeps a scalar loop unrolled twice, most values being a few bytes: in perf annotate
    // of the gateway scenario, 2026-12-03, about half of `begin`, 0.2 us of a record's 0.6 us,
    // 1 % of the request; a 16-byte-chunk version measured slower on short values).
    let special = s.iter().fold(false, |any, &b| any | !(0x20..0x7f).contains(&b) | (b == b'"') | (b == b'\\'));
    if !special {
        out.extend_from_slice(s);
        out.push(b'"');
        return;
    }
    let mut rest = s;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                escape_into(out, valid);
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                // Checked by from_utf8 up to valid_up_to.
                escape_into(out, std::str::from_utf8(valid).unwrap_or_default());
                out.extend_from_slice("\u{FFFD}".as_bytes());
                let skip = e.error_len().unwrap_or(after.len());
                rest = &after[skip..];
            }
        }
    }
    out.push(b'"');
}

fn escape_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(ua: &'a [u8], tags: &'a [String]) -> RequestFacts<'a> {
        RequestFacts {
            method: b"GET",
            path: b"/httpbin/get",
            raw_path: b"/httpbin/get?foo=bar",
            host: "127.0.0.1:8081",
            content_length: 0,
            user_agent: ua,
            api_key: "ab12",
            api_id: "httpbin",
            api_name: "httpbin \"demo\"",
            api_version: None,
            org_id: "acme",
            ip_address: "127.0.0.1",
            tags: [tags, &[]],
            track_path: false,
            expire_after_s: 0,
            alias: "",
            finding: None,
        }
    }

    fn encode(ua: &[u8], tags: &[&str], o: Outcome) -> serde_json::Value {
        let mut out = Vec::new();
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        begin(&mut out, facts(ua, &tags));
        finish(&mut out, &o, &WallTime::at(1_796_107_285_123_456));
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line per record");
        serde_json::from_slice(&out).expect("a record is valid JSON")
    }

    #[test]
    fn record_has_tyk_field_names_and_values() {
        let o = Outcome { code: 500, total_us: 2_345, upstream_us: 1_200, bytes_in: 80, bytes_out: 120 };
        let v = encode(b"curl/8.5", &["user-foo@bar.com", "gold"], o);
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/httpbin/get");
        assert_eq!(v["raw_path"], "/httpbin/get?foo=bar");
        assert_eq!(v["host"], "127.0.0.1:8081");
        assert_eq!(v["user_agent"], "curl/8.5");
        assert_eq!(v["response_code"], 500);
        assert_eq!(v["api_id"], "httpbin");
        assert_eq!(v["api_name"], "httpbin \"demo\"");
        // Tyk's word for a non-versioned API (handler_success.go:206-209); it was "".
        assert_eq!(v["api_version"], "Non Versioned");
        assert_eq!(v["org_id"], "acme");
        assert_eq!(v["api_key"], "ab12");
        assert_eq!(v["ip_address"], "127.0.0.1");
        assert_eq!(v["tags"], serde_json::json!(["user-foo@bar.com", "gold"]));
        assert_eq!(v["request_time"], 2);
        assert_eq!(v["request_time_us"], 2345);
        assert_eq!(v["latency"], serde_json::json!({"total": 2, "upstream": 1, "gateway": 1}));
        assert_eq!(v["network"]["bytes_in"], 80);
        assert_eq!(v["network"]["bytes_out"], 120);
        assert_eq!(v["timestamp"], "2026-12-01T06:41:25.123456Z");
        assert_eq!(
            (v["year"].as_u64(), v["month"].as_u64(), v["day"].as_u64(), v["hour"].as_u64()),
            (Some(2026), Some(12), Some(1), Some(6))
        );
    }

    #[test]
    fn hostile_header_bytes_stay_one_valid_json_line() {
        let ua = b"a\"b\\c\nd\re\tf\x01g\x7fh\xff\xfei\xe2\x82";
        let v = encode(ua, &[], Outcome::default());
        assert_eq!(v["user_agent"], "a\"b\\c\nd\re\tf\u{1}g\u{7f}h\u{FFFD}\u{FFFD}i\u{FFFD}");
        assert_eq!(v["tags"], serde_json::json!([]));
    }
}
