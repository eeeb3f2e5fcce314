//! Tyk's liveness and readiness checks on the gateway listener: `GET /hello` and `GET /ready`
//! (`[proxy] health_check_endpoint_name`, `readiness_check_endpoint_name`), answered before the
//! route phase, as Tyk registers them on its router before any API (gateway/server.go:898-899),
//! so they win over an API at listen path `/`.
//!
//! The control plane runs the checks (every second and after a reload, `control::health`) and
//! publishes the bodies as bytes ([`HealthReplies`]); a worker only picks the body and writes a
//! head in front of it: no check, lock or allocation on the worker.

use portcullis_http1::{Method, TargetForm};

use crate::config::ProxyConfig;

/// The bodies the gateway listener answers its health endpoints with, as the control plane last
/// published them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReplies {
    /// `/hello`: always 200 (Tyk's `liveCheckHandler`, gateway/health_check.go:212-262).
    pub live: Box<[u8]>,
    /// `/ready`: `Ok` is 200, `Err` 503 (Tyk's `readinessHandler`, health_check.go:270-325).
    pub ready: Result<Box<[u8]>, Box<[u8]>>,
}

impl HealthReplies {
    /// Before the control plane's first checks: Tyk's body before its first check (no
    /// `details`: health_check.go:56 and apidef/health_check.go:24, `omitempty`), and not ready yet.
    pub fn starting() -> HealthReplies {
        let live = format!("{{\"status\":\"pass\",\"version\":\"{}\",\"description\":\"Tyk GW\"}}\n", VERSION);
        HealthReplies {
            live: live.into_bytes().into(),
            ready: Err(error_body("Health checks have not run yet").into()),
        }
    }
}

/// The version both bodies carry.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Tyk's `apiError` body as `doJSONWrite` writes it: `{"status":"error","message":"..."}` and a
/// newline (gateway/api.go:113, 198-216). `message` is one of our fixed texts (no escaping needed:
/// no `"`, `\\`, control characters or `<>&`).
pub fn error_body(message: &str) -> Vec<u8> {
    debug_assert!(!message.bytes().any(|b| matches!(b, b'"' | b'\\' | b'<' | b'>' | b'&') || b < 0x20));
    let mut b = Vec::with_capacity(message.len() + 32);
    b.extend_from_slice(b"{\"status\":\"error\",\"message\":\"");
    b.extend_from_slice(message.as_bytes());
    b.extend_from_slice(b"\"}\n");
    b
}

/// What a non-GET request to either endpoint gets (health_check.go:213-216, 271-274).
const METHOD_NOT_ALLOWED: &[u8] = b"{\"status\":\"error\",\"message\":\"Method Not Allowed\"}\n";

/// What `/ready` answers while the worker drains (health_check.go:276-279).
const SHUTTING_DOWN: &[u8] = b"{\"status\":\"error\",\"message\":\"Gateway is shutting down\"}\n";

/// Which health endpoint a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Live,
    Ready,
}

/// The endpoint a request names: its path as sent, without the query (`raw_path`), is exactly
/// `/<name>` for a configured (non-empty) name, as Tyk's router matches it (gorilla/mux, on the
/// path only; any host). Two length checks for every other request.
pub(super) fn endpoint(cfg: &ProxyConfig, form: TargetForm, raw_path: &str) -> Option<Endpoint> {
    if form == TargetForm::Other {
        return None;
    }
    let named = |name: &str| {
        !name.is_empty() && raw_path.len() == name.len() + 1 && raw_path.as_bytes()[0] == b'/' && &raw_path[1..] == name
    };
    if named(&cfg.health_check_endpoint_name) {
        Some(Endpoint::Live)
    } else if named(&cfg.readiness_check_endpoint_name) {
        Some(Endpoint::Ready)
    } else {
        None
    }
}

/// Writes the whole response to `endpoint` into `out`; returns its status. Tyk's handlers:
/// another method than GET gets 405 (HEAD too: Tyk compares with `GET` only), the body is the
/// published one (`Content-Type: application/json`), and a HEAD request gets the head alone.
pub(super) fn write_reply(
    out: &mut Vec<u8>,
    replies: &HealthReplies,
    endpoint: Endpoint,
    method: Method,
    shutting_down: bool,
    close: bool,
) -> u16 {
    let (status, body): (u16, &[u8]) = match (method, endpoint) {
        (Method::Get, Endpoint::Live) => (200, &replies.live),
        (Method::Get, Endpoint::Ready) if shutting_down => (503, SHUTTING_DOWN),
        (Method::Get, Endpoint::Ready) => match &replies.ready {
            Ok(b) => (200, b),
            Err(b) => (503, b),
        },
        _ => (405, METHOD_NOT_ALLOWED),
    };
    out.extend_from_slice(match status {
        200 => b"HTTP/1.1 200 OK\r\n".as_slice(),
        405 => b"HTTP/1.1 405 Method Not Allowed\r\n",
        _ => b"HTTP/1.1 503 Service Unavailable\r\n",
    });
    out.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
    portcullis_http1::digits::push_u64(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if method != Method::Head {
        out.extend_from_slice(body);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint_of(cfg: &ProxyConfig, target: &str) -> Option<Endpoint> {
        let raw = format!("{} {target} HTTP/1.1\r\nHost: x\r\n\r\n", if target == "*" { "OPTIONS" } else { "GET" });
        let mut spans = Vec::new();
        let head = portcullis_http1::parse_request(raw.as_bytes(), 100, &mut spans).unwrap().unwrap();
        let req = head.view(raw.as_bytes(), &spans);
        endpoint(cfg, req.head.form, req.raw_path)
    }

    /// Tyk's router matches `/<name>` on the path alone (gateway/server.go:898-899): the query
    /// does not matter, a longer or shorter path is not it.
    #[test]
    fn the_configured_paths_and_only_they_are_the_endpoints() {
        let mut cfg = ProxyConfig::default();
        assert_eq!(endpoint_of(&cfg, "/hello"), Some(Endpoint::Live));
        assert_eq!(endpoint_of(&cfg, "/hello?probe=1"), Some(Endpoint::Live));
        assert_eq!(endpoint_of(&cfg, "http://gw.example/hello"), Some(Endpoint::Live));
        assert_eq!(endpoint_of(&cfg, "/ready"), Some(Endpoint::Ready));
        for other in ["/hello/", "/hello/x", "/hell", "/helloo", "/", "/Hello", "//hello", "/x/hello"] {
            assert_eq!(endpoint_of(&cfg, other), None, "{other}");
        }
        cfg.health_check_endpoint_name = "health/live".into();
        cfg.readiness_check_endpoint_name = String::new();
        assert_eq!(endpoint_of(&cfg, "/health/live"), Some(Endpoint::Live));
        assert_eq!(endpoint_of(&cfg, "/hello"), None);
        assert_eq!(endpoint_of(&cfg, "/ready"), None, "an empty name is not served");
        assert_eq!(endpoint_of(&cfg, "*"), None);
    }

    fn split(out: &[u8]) -> (String, String) {
        let text = String::from_utf8(out.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_string(), body.to_string())
    }

    /// health_check.go:212-262 (live), 270-325 (ready), api.go:198-216 (`doJSONWrite`).
    #[test]
    fn replies_are_tyks() {
        let replies = HealthReplies {
            live: b"{\"status\":\"pass\"}\n".as_slice().into(),
            ready: Ok(b"{\"status\":\"pass\",\"description\":\"Tyk GW Ready\"}\n".as_slice().into()),
        };
        let mut out = Vec::new();
        assert_eq!(write_reply(&mut out, &replies, Endpoint::Live, Method::Get, true, false), 200);
        let (head, body) = split(&out);
        assert_eq!(head, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 18");
        assert_eq!(body, "{\"status\":\"pass\"}\n", "liveness stays 200 while draining");
        for method in [Method::Post, Method::Head, Method::Delete] {
            for ep in [Endpoint::Live, Endpoint::Ready] {
                out.clear();
                assert_eq!(write_reply(&mut out, &replies, ep, method, false, true), 405);
                let (head, body) = split(&out);
                assert!(head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{head}");
                assert!(head.ends_with("Content-Length: 50\r\nConnection: close"), "{head}");
                let want = if method == Method::Head {
                    ""
                } else {
                    "{\"status\":\"error\",\"message\":\"Method Not Allowed\"}\n"
                };
                assert_eq!(body, want);
            }
        }
        out.clear();
        assert_eq!(write_reply(&mut out, &replies, Endpoint::Ready, Method::Get, false, false), 200);
        assert!(split(&out).1.contains("Tyk GW Ready"));
        out.clear();
        assert_eq!(write_reply(&mut out, &replies, Endpoint::Ready, Method::Get, true, false), 503);
        assert_eq!(split(&out).1, "{\"status\":\"error\",\"message\":\"Gateway is shutting down\"}\n");
        out.clear();
        let starting = HealthReplies::starting();
        assert_eq!(write_reply(&mut out, &starting, Endpoint::Ready, Method::Get, false, false), 503);
        let v: serde_json::Value = serde_json::from_str(&split(&out).1).unwrap();
        assert_eq!(v["status"], "error");
        let live: serde_json::Value = serde_json::from_slice(&starting.live).unwrap();
        assert_eq!((live["status"].as_str(), live["description"].as_str()), (Some("pass"), Some("Tyk GW")));
        assert!(starting.live.ends_with(b"}\n"));
    }
}
