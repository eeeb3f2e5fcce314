//! The data plane's one error type and the one place errors become client responses.
//!
//! Pingora-style: a closed [`ErrorKind`] plus a static context string and an optional I/O cause,
//! so building an error never allocates. [`ErrorKind::status`] is the only mapping from failures
//! to HTTP status codes.

use std::fmt;
use std::io;

use crate::auth::Refusal;
use crate::config::{Override, OverrideBody, OverridePart};

/// What went wrong, classified once where it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed request or request-smuggling shape (CL+TE, conflicting Content-Length): 400.
    BadRequest,
    /// No API matches: 404.
    NoRoute,
    /// Request body larger than `max_request_body_size`: 413.
    BodyTooLarge,
    /// Request head larger than `max_request_head_size`: 431.
    HeadTooLarge,
    /// Request body slower than `request_body_timeout_ms` / `request_body_min_rate`: 408.
    BodyTimeout,
    /// The client already streams `max_streaming_bodies_per_client` bodies on this worker: 429.
    ClientBodies,
    /// Could not connect to the upstream (refused, unreachable, connect timeout): 500, as Tyk
    /// answers a failed dial (gateway/reverse_proxy.go, `ErrorHandler` fallthrough).
    UpstreamConnect,
    /// The upstream host name did not resolve: 500 (Tyk: "no such host").
    UpstreamLookup,
    /// Upstream sent something that is not valid HTTP/1.x, or closed early: 500 (Tyk).
    UpstreamProtocol,
    /// Upstream response head timed out: 504.
    UpstreamTimeout,
    /// The request's circuit breaker is open: 503, the upstream not contacted.
    CircuitOpen,
    /// Every connection `upstream_max_connections` allows to the target stayed in use for
    /// `upstream_queue_timeout_ms`: 503.
    UpstreamBusy,
    /// Client went away, timed out or broke the protocol mid-body: no response possible.
    ClientIo,
    /// Refused by IP rules, path lists, auth, quota or a rate limit: 400, 401, 403 or 429, as
    /// Tyk answers.
    Denied(crate::auth::Refusal),
    /// The control plane could not answer a key, password or quota question in time: 503.
    AuthUnavailable,
    /// The worker is shutting down or the client idled out: close quietly.
    Closed,
}

impl ErrorKind {
    /// Status and client-facing message, or `None` when no response can or should be sent.
    pub fn status(self) -> Option<(u16, &'static str)> {
        Some(match self {
            ErrorKind::BadRequest => (400, "Bad Request"),
            ErrorKind::NoRoute => (404, "Not Found"),
            ErrorKind::BodyTooLarge => (413, "Payload Too Large"),
            ErrorKind::HeadTooLarge => (431, "Request Header Fields Too Large"),
            ErrorKind::BodyTimeout => (408, "Request Timeout"),
            ErrorKind::ClientBodies => (429, "Too Many Requests"),
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamLookup | ErrorKind::UpstreamProtocol => {
                (500, "Internal Server Error")
            }
            ErrorKind::UpstreamTimeout => (504, "Gateway Timeout"),
            ErrorKind::UpstreamBusy | ErrorKind::AuthUnavailable | ErrorKind::CircuitOpen => {
                (503, "Service Unavailable")
            }
            ErrorKind::Denied(r) => match r {
                Refusal::BadRequest => (400, "Bad Request"),
                Refusal::Unauthorized => (401, "Unauthorized"),
                Refusal::Forbidden => (403, "Forbidden"),
                Refusal::TooManyRequests => (429, "Too Many Requests"),
                Refusal::LengthRequired => (411, "Length Required"),
                Refusal::Status(code) => (code, reason_phrase(code)),
            },
            ErrorKind::ClientIo | ErrorKind::Closed => return None,
        })
    }

    /// What the client is told about a failure of this kind that is not a refusal: Tyk's texts
    /// (gateway/reverse_proxy.go:1401-1420). `context`, our own detail, goes to logs and
    /// records, never into the body.
    pub fn client_message(self, context: &'static str) -> &'static str {
        match self {
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamProtocol => "There was a problem proxying the request",
            ErrorKind::UpstreamLookup => "Upstream host lookup failed",
            ErrorKind::UpstreamTimeout => "Upstream service reached hard timeout.",
            ErrorKind::CircuitOpen => "Service temporarily unavailable.",
            _ => context,
        }
    }

    /// The status code, or 0 when nothing is sent (as request records and metrics count it).
    pub fn code(self) -> u16 {
        self.status().map_or(0, |s| s.0)
    }
}

/// A data-plane failure: kind, static context, optional cause.
#[derive(Debug)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub context: &'static str,
    pub cause: Option<io::Error>,
}

impl ProxyError {
    pub fn new(kind: ErrorKind, context: &'static str) -> Self {
        ProxyError { kind, context, cause: None }
    }

    pub fn io(kind: ErrorKind, context: &'static str, cause: io::Error) -> Self {
        ProxyError { kind, context, cause: Some(cause) }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.context)?;
        if let Some(c) = &self.cause {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_ref().map(|e| e as _)
    }
}

impl From<portcullis_http1::HeadError> for ProxyError {
    fn from(e: portcullis_http1::HeadError) -> Self {
        use portcullis_http1::HeadErrorKind as K;
        let kind = match e.kind {
            K::BadRequest => ErrorKind::BadRequest,
            K::TooManyHeaders => ErrorKind::HeadTooLarge,
            K::UpstreamProtocol => ErrorKind::UpstreamProtocol,
        };
        ProxyError::new(kind, e.context)
    }
}

pub type Result<T, E = ProxyError> = std::result::Result<T, E>;

/// How an error body is written, chosen per request: Tyk's default templates
/// (`templates/error.json` / `error.xml`), XML when the request's `Content-Type` is one of the
/// XML types (Tyk: gateway/handler_error.go:291-307, compared exactly, parameters cut).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorStyle {
    pub xml: bool,
    /// `X-Generator: tyk.io` (unless `[proxy] hide_generator_header`).
    pub generator: bool,
    /// What an `error_overrides` body is written as (Tyk's `DetectErrorResponseContext`, which
    /// knows no `application/soap+xml`).
    pub media: Media,
}

/// The `Content-Type` of an overriding body, and so its template (gateway/error_response.go).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Media {
    #[default]
    Json,
    AppXml,
    TextXml,
}

impl Media {
    pub fn content_type(self) -> &'static str {
        match self {
            Media::Json => "application/json",
            Media::AppXml => "application/xml",
            Media::TextXml => "text/xml",
        }
    }

    fn xml(self) -> bool {
        self != Media::Json
    }
}

impl ErrorStyle {
    /// The style for a request with this `Content-Type` value (empty: none).
    pub fn of(content_type: &[u8], generator: bool) -> ErrorStyle {
        let media = content_type.split(|&b| b == b';').next().unwrap_or(b"");
        let xml = matches!(media, b"application/xml" | b"text/xml" | b"application/soap+xml");
        let media = match media {
            b"application/xml" => Media::AppXml,
            b"text/xml" => Media::TextXml,
            _ => Media::Json,
        };
        ErrorStyle { xml, generator, media }
    }
}

/// The body an `error_overrides` rule writes over an upstream response of `status` (Tyk:
/// res_handler_error_override.go `generateOverrideBody`), appended to `out`: an inline template
/// or a file template with the rule's message (JSON: escaped as Go's `JSEscapeString`; XML:
/// HTML-escaped) and the status; a literal body; a message alone in the default template.
/// False, and nothing written, when the rule has no body or no template file for `media`:
/// Tyk then keeps the upstream's body.
/// `detail` fills `{{.InvalidParams}}` (a validation refusal's; `None`: Go's `<no value>`).
pub fn override_body(out: &mut Vec<u8>, body: &OverrideBody, status: u16, media: Media, detail: Option<&str>) -> bool {
    let template = |out: &mut Vec<u8>, parts: &[OverridePart], m: &str| {
        for p in parts {
            match p {
                OverridePart::Text(t) => out.extend_from_slice(t.as_bytes()),
                OverridePart::StatusCode => portcullis_http1::digits::push_u64(out, u64::from(status)),
                OverridePart::Message if media.xml() => html_escape(out, m),
                OverridePart::Message => go_js_escape(out, m),
                OverridePart::InvalidParams => match detail {
                    Some(d) if media.xml() => html_escape(out, d),
                    Some(d) => go_js_escape(out, d),
                    // No template data (upstream responses, other errors): Go's word for a
                    // key its map lacks.
                    None => out.extend_from_slice(NO_VALUE),
                },
            }
        }
    };
    match body {
        OverrideBody::Original => return false,
        OverrideBody::Literal(b) => out.extend_from_slice(b.as_bytes()),
        OverrideBody::Template { parts, message } => template(out, parts, message),
        OverrideBody::File { json, xml, message, .. } => {
            let Some(parts) = (if media.xml() { xml } else { json }) else { return false };
            template(out, parts, message);
        }
        OverrideBody::Message(m) if media.xml() => {
            out.extend_from_slice(b"<?xml version = \"1.0\" encoding = \"UTF-8\"?>\n<error>");
            html_escape(out, m);
            out.extend_from_slice(b"</error>\n");
        }
        OverrideBody::Message(m) => {
            out.extend_from_slice(b"{\n    \"error\": \"");
            go_json_escape(out, m);
            out.extend_from_slice(b"\"\n}");
        }
    }
    true
}

/// A complete error response for `kind`, whose status comes from [`ErrorKind::status`], the one
/// mapping: there is no other way to write one. Returns false (and writes nothing) for a kind
/// that is not answered.
pub fn error_response(out: &mut Vec<u8>, kind: ErrorKind, message: &str, close: bool, style: ErrorStyle) -> bool {
    error_response_with(out, kind, message, close, &[], style, None, None, None)
}

/// What Go's `text/template` writes for a key its map does not have (Tyk's template data is a
/// map: handler_error.go:442-455).
const NO_VALUE: &[u8] = b"<no value>";

/// Tyk's response flag of a failure that is not a refusal (internal/errors/classification.go;
/// refusals carry theirs, `Denial::flag`).
pub fn flag_of(kind: ErrorKind, context: &str) -> Option<&'static str> {
    match kind {
        ErrorKind::UpstreamConnect if context.contains("timed out") => Some("UCT"),
        ErrorKind::UpstreamConnect => Some("UCF"),
        ErrorKind::UpstreamLookup => Some("DNS"),
        ErrorKind::UpstreamTimeout => Some("URT"),
        ErrorKind::UpstreamProtocol => Some("UPE"),
        ErrorKind::CircuitOpen => Some("CBO"),
        _ => None,
    }
}

/// As [`error_response`], with extra header lines (each ending in CRLF: `WWW-Authenticate`,
/// `X-RateLimit-*`).
///
/// The body is Tyk's default template, byte for byte: `{\n    "error": "<msg>"\n}` with the
/// message escaped as Tyk's `jsonEscapeString` does (gateway/util.go:21-64), or
/// `<?xml version = "1.0" encoding = "UTF-8"?>\n<error><msg></error>\n`. No API matched (404):
/// `Not Found` as text, as Tyk's router answers (proxy_muxer.go:214-222).
///
/// With an `error_overrides` rule (`ov`), its status, body and headers, in Tyk's priority
/// (gateway/error_response.go:30-100): a literal body as is; an inline template with the rule's
/// message (or the error's) escaped as Go's `JSEscapeString` (XML: HTML-escaped) and the status;
/// a message alone in the default template; nothing, the default template with the error's
/// message. The rule's headers are set last and may replace `Content-Type`.
pub fn error_response_with(
    out: &mut Vec<u8>,
    kind: ErrorKind,
    message: &str,
    close: bool,
    extra: &[u8],
    style: ErrorStyle,
    ov: Option<&Override>,
    detail: Option<&str>,
    templates: Option<&crate::config::ErrorTemplates>,
) -> bool {
    use std::io::Write as _;
    let Some((mut status, mut reason)) = kind.status() else {
        return false;
    };
    if let Some(o) = ov.filter(|o| o.status != 0) {
        status = o.status;
        reason = reason_phrase(status);
    }
    let mut body = Vec::with_capacity(message.len() + 24);
    let default_template = |body: &mut Vec<u8>, message: &str| {
        // The `error*` files of `template_path` (Tyk's `writeTemplateErrorResponse`,
        // handler_error.go:312-373): the message JSON-escaped, or HTML-escaped for XML.
        if let Some((parts, xml)) = templates.and_then(|t| t.find(status, style.xml)) {
            for p in parts {
                match p {
                    OverridePart::Text(t) => body.extend_from_slice(t.as_bytes()),
                    OverridePart::Message if xml => html_escape(body, message),
                    OverridePart::Message => go_json_escape(body, message),
                    _ => {}
                }
            }
            return if xml { "application/xml" } else { "application/json" };
        }
        if style.xml {
            body.extend_from_slice(b"<?xml version = \"1.0\" encoding = \"UTF-8\"?>\n<error>");
            html_escape(body, message);
            body.extend_from_slice(b"</error>\n");
            "application/xml"
        } else {
            body.extend_from_slice(b"{\n    \"error\": \"");
            go_json_escape(body, message);
            body.extend_from_slice(b"\"\n}");
            "application/json"
        }
    };
    let own_type = if style.xml { "application/xml" } else { "application/json" };
    let content_type = match ov.map(|o| &o.body) {
        None if kind == ErrorKind::NoRoute => {
            body.extend_from_slice(b"Not Found");
            "text/plain; charset=utf-8"
        }
        None | Some(OverrideBody::Original) => default_template(&mut body, message),
        Some(OverrideBody::Message(m)) => default_template(&mut body, m),
        Some(OverrideBody::Literal(b)) => {
            body.extend_from_slice(b.as_bytes());
            own_type
        }
        Some(OverrideBody::Template { parts, message: own }) => {
            let m = if own.is_empty() { message } else { own.as_str() };
            for p in parts {
                match p {
                    OverridePart::Text(t) => body.extend_from_slice(t.as_bytes()),
                    OverridePart::StatusCode => {
                        let _ = write!(body, "{status}");
                    }
                    OverridePart::Message if style.xml => html_escape(&mut body, m),
                    OverridePart::Message => go_js_escape(&mut body, m),
                    OverridePart::InvalidParams => match detail {
                        Some(d) if style.xml => html_escape(&mut body, d),
                        Some(d) => go_js_escape(&mut body, d),
                        None => body.extend_from_slice(NO_VALUE),
                    },
                }
            }
            own_type
        }
        // Tyk: a template file with the rule's message; none for this content type, the
        // default template with the error's (handler_error.go `writeOverrideResponse`).
        Some(f @ OverrideBody::File { .. }) => {
            if override_body(&mut body, f, status, style.media, detail) {
                style.media.content_type()
            } else {
                default_template(&mut body, message)
            }
        }
    };
    let headers: &[(String, String)] = ov.map_or(&[], |o| &o.headers);
    let replaced = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
    if !replaced("content-type") {
        let _ = write!(out, "Content-Type: {content_type}\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n", body.len());
    if style.generator && kind != ErrorKind::NoRoute && !replaced("x-generator") {
        out.extend_from_slice(b"X-Generator: tyk.io\r\n");
    }
    for (k, v) in headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("content-length")) {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    out.extend_from_slice(extra);
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    true
}

/// Go's `text/template.JSEscapeString`, which Tyk applies to `{{.Message}}` in a JSON override
/// body: backslash, `'` and `"` escaped with a backslash; `<`, `>`, `&`, `=` and control
/// characters as `\uXXXX`.
fn go_js_escape(out: &mut Vec<u8>, s: &str) {
    use std::io::Write as _;
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\'' => out.extend_from_slice(b"\\'"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'<' | b'>' | b'&' | b'=' | 0..=0x1f | 0x7f => {
                let _ = write!(out, "\\u{:04X}", b);
            }
            _ => out.push(b),
        }
    }
}

/// The reason phrase for a status an override sets.
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        418 => "I'm a teapot",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// Tyk's `jsonEscapeString`: `"`, `\\`, `\n`, `\r`, `\t` escaped by name, other bytes below
/// 0x20 as `\u00XX`; everything else as is.
fn go_json_escape(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            _ => out.push(b),
        }
    }
}

/// Go's `html/template.HTMLEscapeString`, which Tyk's XML template uses.
fn html_escape(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'"' => out.extend_from_slice(b"&#34;"),
            b'\'' => out.extend_from_slice(b"&#39;"),
            0 => out.extend_from_slice("\u{fffd}".as_bytes()),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one mapping, whole: every status the data plane writes is one of these.
    #[test]
    fn every_kind_has_its_status() {
        let table = [
            (ErrorKind::BadRequest, 400),
            (ErrorKind::NoRoute, 404),
            (ErrorKind::BodyTimeout, 408),
            (ErrorKind::BodyTooLarge, 413),
            (ErrorKind::ClientBodies, 429),
            (ErrorKind::HeadTooLarge, 431),
            (ErrorKind::UpstreamConnect, 500),
            (ErrorKind::UpstreamLookup, 500),
            (ErrorKind::UpstreamProtocol, 500),
            (ErrorKind::UpstreamBusy, 503),
            (ErrorKind::CircuitOpen, 503),
            (ErrorKind::AuthUnavailable, 503),
            (ErrorKind::UpstreamTimeout, 504),
            (ErrorKind::Denied(Refusal::BadRequest), 400),
            (ErrorKind::Denied(Refusal::Unauthorized), 401),
            (ErrorKind::Denied(Refusal::Forbidden), 403),
            (ErrorKind::Denied(Refusal::TooManyRequests), 429),
            (ErrorKind::Denied(Refusal::LengthRequired), 411),
            (ErrorKind::ClientIo, 0),
            (ErrorKind::Closed, 0),
        ];
        for (kind, code) in table {
            assert_eq!(kind.code(), code, "{kind:?}");
        }
    }

    fn split(out: Vec<u8>) -> (String, String) {
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{text}");
        (head.to_string(), body.to_string())
    }

    /// Tyk's default `templates/error.json`, byte for byte: 46 bytes for "Authorization field
    /// missing" (gateway/handler_error.go:287-373, templates/error.json).
    #[test]
    fn error_bodies_are_tyks_default_template() {
        let mut none = Vec::new();
        let style = ErrorStyle { xml: false, generator: true, media: Media::Json };
        assert!(
            !error_response(&mut none, ErrorKind::Closed, "x", true, style) && none.is_empty(),
            "nothing to answer"
        );
        let mut out = Vec::new();
        assert!(error_response(
            &mut out,
            ErrorKind::Denied(Refusal::Unauthorized),
            "Authorization field missing",
            false,
            style
        ));
        let (head, body) = split(out);
        assert_eq!(body, "{\n    \"error\": \"Authorization field missing\"\n}");
        assert_eq!(body.len(), 46);
        assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"), "{head}");
        assert!(head.contains("\r\nX-Generator: tyk.io"), "{head}");
        assert!(!head.contains("Connection: close"), "{head}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "Authorization field missing");
    }

    #[test]
    fn messages_are_escaped_as_tyks_json_escape_string() {
        let mut out = Vec::new();
        let msg = "a\"b\\c\nd\te\u{8}<&é";
        error_response(&mut out, ErrorKind::BadRequest, msg, true, ErrorStyle::default());
        let (head, body) = split(out);
        assert_eq!(body, "{\n    \"error\": \"a\\\"b\\\\c\\nd\\te\\u0008<&é\"\n}");
        assert!(head.contains("Connection: close") && !head.contains("X-Generator"), "{head}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], msg);
    }

    #[test]
    fn xml_requests_get_tyks_xml_template_and_no_route_is_plain_text() {
        for (ct, xml) in [
            (&b"application/xml"[..], true),
            (b"text/xml; charset=utf-8", true),
            (b"application/soap+xml", true),
            (b"Application/XML", false),
            (b"application/json", false),
            (b"", false),
        ] {
            assert_eq!(ErrorStyle::of(ct, true).xml, xml, "{}", String::from_utf8_lossy(ct));
        }
        let mut out = Vec::new();
        let style = ErrorStyle::of(b"text/xml", false);
        error_response(&mut out, ErrorKind::Denied(Refusal::Forbidden), "<Quota> & \"more\"", false, style);
        let (head, body) = split(out);
        assert!(head.contains("Content-Type: application/xml"), "{head}");
        assert_eq!(
            body,
            "<?xml version = \"1.0\" encoding = \"UTF-8\"?>\n<error>&lt;Quota&gt; &amp; &#34;more&#34;</error>\n"
        );
        let mut out = Vec::new();
        error_response(&mut out, ErrorKind::NoRoute, "no API matches this request", false, style);
        let (head, body) = split(out);
        assert_eq!(body, "Not Found");
        assert!(head.contains("Content-Type: text/plain; charset=utf-8") && !head.contains("X-Generator"), "{head}");
    }

    /// Our detail stays in logs; the client gets Tyk's words (reverse_proxy.go:1401-1420).
    #[test]
    fn upstream_failures_tell_the_client_what_tyk_tells_it() {
        assert_eq!(
            ErrorKind::UpstreamConnect.client_message("cannot connect"),
            "There was a problem proxying the request"
        );
        assert_eq!(ErrorKind::UpstreamProtocol.client_message("x"), "There was a problem proxying the request");
        assert_eq!(ErrorKind::UpstreamLookup.client_message("x"), "Upstream host lookup failed");
        assert_eq!(ErrorKind::UpstreamTimeout.client_message("x"), "Upstream service reached hard timeout.");
        assert_eq!(ErrorKind::BadRequest.client_message("malformed request head"), "malformed request head");
    }
}
