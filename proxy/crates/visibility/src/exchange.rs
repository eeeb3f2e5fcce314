//! One sampled exchange, parsed from the wire form the worker's capture wrote
//! (`analytics/capture.rs`: the head with credentials redacted, then the body, bounded).

/// A request and its response, borrowed from their captured bytes.
#[derive(Debug, Clone, Default)]
pub struct Exchange<'a> {
    pub method: &'a str,
    /// Relative to the API's listen path, from `/`, without the query.
    pub path: &'a str,
    /// The raw query, without `?`.
    pub query: &'a str,
    pub req_headers: Vec<(&'a str, &'a str)>,
    /// The request body as captured: cut at the capture's bound when `req_truncated`.
    pub req_body: &'a [u8],
    pub req_truncated: bool,
    pub status: u16,
    pub resp_headers: Vec<(&'a str, &'a str)>,
    pub resp_body: &'a [u8],
    pub resp_truncated: bool,
}

/// A captured head and the body bytes after it.
pub struct Wire<'a> {
    /// The request line or status line.
    pub start: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: &'a [u8],
}

/// Splits a captured message into its start line, headers and body. `None` when the head is
/// not complete (the capture's bound cut it) or not UTF-8.
pub fn split_wire(bytes: &[u8]) -> Option<Wire<'_>> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    let headers = lines
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim(), v.trim()))
        })
        .collect();
    Some(Wire { start, headers, body: &bytes[end + 4..] })
}

impl<'a> Exchange<'a> {
    /// The first request header named `name` (ASCII case-insensitive).
    pub fn req_header(&self, name: &str) -> Option<&'a str> {
        header(&self.req_headers, name)
    }

    /// The first response header named `name` (ASCII case-insensitive).
    pub fn resp_header(&self, name: &str) -> Option<&'a str> {
        header(&self.resp_headers, name)
    }

    /// The request body as JSON, when it says it is JSON, arrived whole and parses.
    pub fn req_json(&self) -> Option<serde_json::Value> {
        json(self.req_header("content-type"), self.req_body, self.req_truncated)
    }

    /// The response body as JSON, when it says it is JSON, arrived whole and parses.
    pub fn resp_json(&self) -> Option<serde_json::Value> {
        json(self.resp_header("content-type"), self.resp_body, self.resp_truncated)
    }

    /// Query parameters, `+` and percent-escapes left as sent.
    pub fn query_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, "")))
    }
}

fn header<'a>(headers: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, v)| v)
}

/// Whether a `Content-Type` is JSON: `application/json`, or any `+json` type.
pub fn is_json(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
        || mime.get(mime.len().saturating_sub(5)..).is_some_and(|s| s.eq_ignore_ascii_case("+json"))
}

fn json(content_type: Option<&str>, body: &[u8], truncated: bool) -> Option<serde_json::Value> {
    if truncated || body.is_empty() || !content_type.is_some_and(is_json) {
        return None;
    }
    serde_json::from_slice(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_captured_message_splits_into_start_headers_and_body() {
        let w = split_wire(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-A:  b \r\n\r\n{\"a\":1}").unwrap();
        assert_eq!(w.start, "HTTP/1.1 200 OK");
        assert_eq!(w.headers, vec![("Content-Type", "application/json"), ("X-A", "b")]);
        assert_eq!(w.body, b"{\"a\":1}");
        assert!(split_wire(b"HTTP/1.1 200 OK\r\nContent-Ty").is_none(), "a head cut by the bound");
    }

    #[test]
    fn json_bodies_are_read_only_when_whole_and_said_to_be_json() {
        let mut x = Exchange {
            resp_headers: vec![("content-type", "application/problem+json; charset=utf-8")],
            resp_body: b"{\"a\":[1]}",
            ..Default::default()
        };
        assert_eq!(x.resp_json(), Some(serde_json::json!({"a": [1]})));
        x.resp_truncated = true;
        assert_eq!(x.resp_json(), None);
        x.resp_truncated = false;
        x.resp_headers = vec![("Content-Type", "text/plain")];
        assert_eq!(x.resp_json(), None);
        assert!(is_json("Application/JSON") && !is_json("json") && !is_json("text/html"));
        let q = Exchange { query: "a=1&b&&c=x%20y", ..Default::default() };
        assert_eq!(q.query_pairs().collect::<Vec<_>>(), vec![("a", "1"), ("b", ""), ("c", "x%20y")]);
    }
}
