//! A request record read back from its JSON line, on the analytics thread: what the sinks that
//! do not write the line as it is (Tyk's msgpack for the pump, ClickHouse's rows, the search
//! index) encode from. The line ([`super::record`]) is the one form a record has between the
//! worker and the sinks, and in the spool: the worker writes it once, without allocating, and
//! each sink reads the fields it needs here, borrowing the line's text where no escape was
//! undone.

use std::borrow::Cow;

use serde::Deserialize;

/// One record, fields as the worker writes them (docs/analytics.md).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Record<'a> {
    #[serde(borrow)]
    pub method: Cow<'a, str>,
    #[serde(borrow)]
    pub host: Cow<'a, str>,
    #[serde(borrow)]
    pub path: Cow<'a, str>,
    #[serde(borrow)]
    pub raw_path: Cow<'a, str>,
    pub content_length: u64,
    #[serde(borrow)]
    pub user_agent: Cow<'a, str>,
    #[serde(borrow)]
    pub api_key: Cow<'a, str>,
    #[serde(borrow)]
    pub api_version: Cow<'a, str>,
    #[serde(borrow)]
    pub api_name: Cow<'a, str>,
    #[serde(borrow)]
    pub api_id: Cow<'a, str>,
    #[serde(borrow)]
    pub org_id: Cow<'a, str>,
    #[serde(borrow)]
    pub oauth_id: Cow<'a, str>,
    #[serde(borrow)]
    pub alias: Cow<'a, str>,
    #[serde(borrow)]
    pub ip_address: Cow<'a, str>,
    #[serde(borrow)]
    pub tags: Vec<Cow<'a, str>>,
    pub track_path: bool,
    pub response_code: u16,
    pub request_time: u64,
    pub request_time_us: u64,
    pub latency: Latency,
    pub network: Network,
    #[serde(borrow)]
    pub timestamp: Cow<'a, str>,
    pub day: u8,
    pub month: u8,
    pub year: u32,
    pub hour: u8,
    /// Seconds after `timestamp` that Tyk's `ExpireAt` lies; 0: Tyk's 100 years.
    pub expire_after_s: u64,
    /// Detailed recording: the request and response as sent, base64 (empty otherwise).
    #[serde(borrow)]
    pub raw_request: Cow<'a, str>,
    #[serde(borrow)]
    pub raw_response: Cow<'a, str>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Latency {
    pub total: u64,
    pub upstream: u64,
    pub gateway: u64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Network {
    pub open_connections: u64,
    pub closed_connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Record<'_> {
    /// Unix microseconds of `timestamp` (0 if it does not read as the worker writes it).
    pub fn unix_us(&self) -> u64 {
        super::clock::unix_us_of(self.timestamp.as_bytes()).unwrap_or(0)
    }
}

/// The lines of a batch (whole records, each ending in `\n`), empty ones skipped.
pub fn lines(batch: &[u8]) -> impl Iterator<Item = &[u8]> {
    batch.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

/// Reads one line. A line that does not read (it can only come from a spool file edited by
/// hand, or from a newer or older version's format) is an error the sink counts and skips.
pub fn record(line: &[u8]) -> Result<Record<'_>, serde_json::Error> {
    serde_json::from_slice(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::record::{begin, finish, Outcome, RequestFacts};

    #[test]
    fn reads_back_what_the_worker_writes() {
        let mut out = Vec::new();
        let tags = vec!["user-foo@bar.com".to_string(), "quote\"d".to_string()];
        begin(
            &mut out,
            RequestFacts {
                method: b"POST",
                path: b"/api/x",
                raw_path: b"/api/x?y=1",
                host: "up:80",
                content_length: 12,
                user_agent: b"curl/8",
                api_key: "abc",
                api_id: "api1",
                api_version: None,
                api_name: "API 1",
                org_id: "org",
                ip_address: "10.0.0.1",
                tags: [&tags, &[]],
                track_path: true,
                expire_after_s: 0,
                alias: "",
                finding: None,
            },
        );
        let wall = super::super::clock::WallTime::at(1_796_107_285_123_456);
        finish(&mut out, &Outcome { code: 500, total_us: 2500, upstream_us: 1000, bytes_in: 10, bytes_out: 20 }, &wall);
        let batch = [out.clone(), out].concat();
        assert_eq!(lines(&batch).count(), 2);
        let r = record(lines(&batch).next().unwrap()).unwrap();
        assert_eq!((&*r.method, &*r.path, &*r.raw_path, r.content_length), ("POST", "/api/x", "/api/x?y=1", 12));
        assert_eq!((&*r.api_version, &*r.api_id, r.response_code), ("Non Versioned", "api1", 500));
        assert_eq!(r.tags, vec!["user-foo@bar.com", "quote\"d"]);
        assert!(matches!(r.path, Cow::Borrowed(_)), "no escape: borrowed");
        assert_eq!(r.latency, Latency { total: 2, upstream: 1, gateway: 1 });
        assert_eq!((r.network.bytes_in, r.network.bytes_out, r.request_time_us), (10, 20, 2500));
        assert_eq!(r.unix_us(), 1_796_107_285_123_456);
        assert!(record(b"{\"response_code\":\"x\"}").is_err());
    }
}
