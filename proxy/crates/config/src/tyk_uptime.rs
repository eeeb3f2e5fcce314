//! Tyk's uptime tests as load balancing uses them: `uptime_tests.check_list` and
//! `proxy.check_host_against_uptime_tests` (apidef/api_definitions.go:999-1040,
//! gateway/host_checker.go, gateway/reverse_proxy.go:157-191). The control plane runs the
//! checks (`control/uptime.rs`); a load-balanced API with `check_host_against_uptime_tests`
//! skips the targets whose host the checks found down, and with every target down answers 503.
//! Must not: do I/O (the checks are described here, run elsewhere).

use std::time::Duration;

use serde_json::Value;

use super::ConfigError;

/// An API's uptime checks, kept only where they steer load balancing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UptimeTests {
    pub checks: Vec<UptimeCheck>,
}

/// One `check_list` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UptimeCheck {
    /// As written; the checks' state is kept per URL, as Tyk's samples are.
    pub url: String,
    /// Go's `url.Host` of it (`host` or `host:port` as written, lower case): the host a
    /// failing check marks down, compared with each target's.
    pub host: String,
    /// Where to connect.
    pub connect_host: String,
    pub port: u16,
    /// Request target (path and query, `/` when empty) for an HTTP check.
    pub path: String,
    pub kind: CheckKind,
    /// Tyk's `timeout` (a Go duration: nanoseconds); 0: Tyk's checker client's 500 ms.
    pub timeout: Duration,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// How a host is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// An HTTP request: up when it answers 200 (Tyk counts anything else as a failure).
    Http,
    /// A TCP connection, then Tyk's `commands`: `send` a message, `expect` one back.
    Tcp(Vec<Command>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Send(String),
    Expect(String),
}

/// Tyk's checker client timeout (gateway/server.go:297-299).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// The checks of a definition, when they steer its load balancing: `Ok(None)` when they would
/// change nothing (no `check_host_against_uptime_tests`, no load balancing, or tests disabled).
pub(crate) fn parse(json: &Value, err: &mut dyn FnMut(String, String, String)) -> Option<UptimeTests> {
    let steer = json.pointer("/proxy/check_host_against_uptime_tests").is_some_and(super::truthy)
        && json.pointer("/proxy/enable_load_balancing").is_some_and(super::truthy);
    if !steer || json.pointer("/uptime_tests/disabled").is_some_and(super::truthy) {
        return None;
    }
    let list = json.pointer("/uptime_tests/check_list").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut checks = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let at = |f: &str| format!("uptime_tests.check_list[{i}].{f}");
        let s = |f: &str| c.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        let url = s("url");
        let protocol = s("protocol").to_ascii_lowercase();
        if c.get("enable_proxy_protocol").is_some_and(super::truthy) {
            err(
                at("enable_proxy_protocol"),
                "true".into(),
                "the PROXY protocol in uptime checks is not supported".into(),
            );
            continue;
        }
        let timeout = match c.get("timeout") {
            None | Some(Value::Null) => Duration::ZERO,
            Some(v) => match v.as_u64() {
                Some(ns) => Duration::from_nanos(ns),
                None => {
                    err(at("timeout"), v.to_string(), "must be a Go duration in nanoseconds (a whole number)".into());
                    continue;
                }
            },
        };
        let (kind, rest) = match protocol.as_str() {
            "" | "http" => match url.strip_prefix("http://") {
                Some(rest) => (CheckKind::Http, rest),
                None if url.starts_with("https://") => {
                    err(at("url"), url.clone(), "https:// checks need TLS, not supported yet".into());
                    continue;
                }
                None => {
                    err(at("url"), url.clone(), "must be an http:// URL".into());
                    continue;
                }
            },
            "tcp" => {
                let mut commands = Vec::new();
                for (j, cmd) in c.get("commands").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    let msg = cmd.get("message").and_then(Value::as_str).unwrap_or("").to_string();
                    match cmd.get("name").and_then(Value::as_str).unwrap_or("") {
                        "send" => commands.push(Command::Send(msg)),
                        "expect" => commands.push(Command::Expect(msg)),
                        other => err(at(&format!("commands[{j}].name")), other.into(), "must be send or expect".into()),
                    }
                }
                (CheckKind::Tcp(commands), url.strip_prefix("tcp://").unwrap_or(&url))
            }
            other => {
                err(
                    at("protocol"),
                    other.into(),
                    "must be http or tcp (tls checks need TLS, not supported yet)".into(),
                );
                continue;
            }
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(p) => (&rest[..p], &rest[p..]),
            None => (rest, ""),
        };
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        let (connect_host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => match p.parse::<u16>() {
                Ok(p) => (h.trim_start_matches('[').trim_end_matches(']').to_string(), p),
                Err(_) => {
                    err(at("url"), url.clone(), "bad port".into());
                    continue;
                }
            },
            _ if matches!(kind, CheckKind::Tcp(_)) => {
                err(at("url"), url.clone(), "a tcp check needs host:port".into());
                continue;
            }
            _ => (authority.to_string(), 80),
        };
        if connect_host.is_empty() || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            err(at("url"), url.clone(), "not a valid check URL".into());
            continue;
        }
        let mut headers = Vec::new();
        for (name, value) in c.get("headers").and_then(Value::as_object).into_iter().flatten() {
            let value = value.as_str().unwrap_or("").to_string();
            if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == b':') || value.contains(['\r', '\n', '\0']) {
                err(at(&format!("headers.{name}")), value, "not a valid header".into());
                continue;
            }
            headers.push((name.clone(), value));
        }
        let method = match s("method") {
            m if m.is_empty() => "GET".to_string(),
            m if m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => m,
            m => {
                err(at("method"), m, "not an HTTP method".into());
                continue;
            }
        };
        checks.push(UptimeCheck {
            host: authority.to_ascii_lowercase(),
            url,
            connect_host,
            port,
            path,
            kind,
            timeout,
            method,
            headers,
            body: s("body"),
        });
    }
    Some(UptimeTests { checks })
}

/// For `ConfigError`s named by file.
pub(crate) fn errors(file: &std::path::Path, json: &Value, errs: &mut Vec<ConfigError>) -> Option<UptimeTests> {
    parse(json, &mut |field, value, message| errs.push(ConfigError::new(file, field, value, message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(json: &str) -> (Option<UptimeTests>, Vec<String>) {
        let v: Value = serde_json::from_str(json).unwrap();
        let mut errs = Vec::new();
        let t = parse(&v, &mut |f, v, m| errs.push(format!("{f} = {v}: {m}")));
        (t, errs)
    }

    #[test]
    fn checks_steer_only_load_balanced_apis_that_ask_for_it() {
        let list = r#""uptime_tests": {"check_list": [{"url": "http://b1:9999/health", "method": "GET"}]}"#;
        for proxy in [r#"{"check_host_against_uptime_tests": true}"#, r#"{"enable_load_balancing": true}"#] {
            let (t, errs) = parsed(&format!(r#"{{"proxy": {proxy}, {list}}}"#));
            assert!(t.is_none() && errs.is_empty(), "{proxy}");
        }
        let (t, errs) = parsed(&format!(
            r#"{{"proxy": {{"check_host_against_uptime_tests": true, "enable_load_balancing": true}}, {list}}}"#
        ));
        assert!(errs.is_empty(), "{errs:?}");
        let c = &t.unwrap().checks[0];
        assert_eq!(
            (c.host.as_str(), c.connect_host.as_str(), c.port, c.path.as_str()),
            ("b1:9999", "b1", 9999, "/health")
        );
        assert_eq!((c.kind.clone(), c.timeout, c.method.as_str()), (CheckKind::Http, Duration::ZERO, "GET"));
    }

    #[test]
    fn what_cannot_be_checked_is_refused_by_field() {
        let (_, errs) = parsed(
            r#"{"proxy": {"check_host_against_uptime_tests": true, "enable_load_balancing": true},
                "uptime_tests": {"check_list": [
                  {"url": "https://b1/health"}, {"url": "b2:1", "protocol": "tls"},
                  {"url": "http://b3/", "timeout": "5s"}, {"url": "tcp://b4", "protocol": "tcp"},
                  {"url": "http://b5/x y"}, {"url": "http://b6/", "headers": {"X": "a\r\nB: c"}},
                  {"url": "b7:1", "protocol": "tcp", "commands": [{"name": "wait", "message": "x"}]},
                  {"url": "http://b8/", "enable_proxy_protocol": true}]}}"#,
        );
        let fields: Vec<&str> = errs.iter().map(|e| e.split(" = ").next().unwrap()).collect();
        assert_eq!(
            fields,
            [
                "uptime_tests.check_list[0].url",
                "uptime_tests.check_list[1].protocol",
                "uptime_tests.check_list[2].timeout",
                "uptime_tests.check_list[3].url",
                "uptime_tests.check_list[4].url",
                "uptime_tests.check_list[5].headers.X",
                "uptime_tests.check_list[6].commands[0].name",
                "uptime_tests.check_list[7].enable_proxy_protocol",
            ],
            "{errs:#?}"
        );
    }

    #[test]
    fn tcp_checks_keep_their_commands() {
        let (t, errs) = parsed(
            r#"{"proxy": {"check_host_against_uptime_tests": true, "enable_load_balancing": true},
                "uptime_tests": {"check_list": [{"url": "tcp://db:5432", "protocol": "tcp", "timeout": 2000000000,
                  "commands": [{"name": "send", "message": "ping"}, {"name": "expect", "message": "pong"}]}]}}"#,
        );
        assert!(errs.is_empty(), "{errs:?}");
        let c = &t.unwrap().checks[0];
        assert_eq!((c.host.as_str(), c.port, c.timeout), ("db:5432", 5432, Duration::from_secs(2)));
        assert_eq!(c.kind, CheckKind::Tcp(vec![Command::Send("ping".into()), Command::Expect("pong".into())]));
    }
}
