//! HMAC request signing as Tyk implements it (`enable_signature_checking`).
//!
//! Clients send
//! `Authorization: Signature keyId="<key>",algorithm="hmac-sha256",headers="(request-target) date",signature="<sig>"`
//! (draft-cavage HTTP signatures, Tyk dialect). This module parses that value, builds the
//! signing string, verifies the HMAC in constant time, checks the allowed algorithms and
//! the Date clock skew. The caller looks the key up (`keyId` -> session, `hmac_string`)
//! and maps errors to responses.
//!
//! It must not do I/O (no logging, no store access, no clock reads: `now` is passed in)
//! and must not panic on any input: every header-derived string is parsed with checked
//! accessors, never `unwrap`/`expect`/indexing.
//!
//! Behaviour taken from Tyk's `gateway/mw_hmac.go` (`HTTPSignatureValidationMiddleware`):
//! * The header is the API's configured auth header (`auth_configs.hmac.auth_header_name`,
//!   default `Authorization`). Tyk has no `X-Aux-Authorization`; the only "aux" header is
//!   `X-Aux-Date`, which replaces `Date` (see [`date_value`] and [`signing_string`]).
//! * The `Signature`/`signature` scheme word is optional in Tyk (it is trimmed if present).
//! * Unknown parameter names reject the header; `headers` defaults to `["date"]`.
//! * Tyk compares `url.QueryEscape(base64(hmac))` with the raw `signature` value (upper-casing
//!   lower-case `%xx` escapes for .NET clients). Here the value is percent-decoded and then
//!   base64-decoded, which accepts the same inputs (plus raw, unescaped base64).
//! * `(request-target)` is `<method lower-case> <r.URL.Path>` in Tyk: the percent-decoded
//!   path *without* the query string (see [`tyk_target_path`]).
//! * The Date (or X-Aux-Date) header must always parse, even when the skew check is off.
//!
//! Every failure maps to Tyk's single response: **400 "Authorization field missing,
//! malformed or invalid"** (`authorizationError`), see [`SigError::tyk_status`].

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use std::time::{SystemTime, UNIX_EPOCH};

/// Status code Tyk returns for every HMAC failure (`authorizationError` in `mw_hmac.go`).
pub const TYK_STATUS: u16 = 400;
/// Body message Tyk returns for every HMAC failure (`authorizationError` in `mw_hmac.go`).
pub const TYK_MESSAGE: &str = "Authorization field missing, malformed or invalid";

/// Standard alphabet, padding optional (clients sometimes strip `=`).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Errors from parsing/verifying a signature. Display texts are short and safe to send to
/// clients. In Tyk every one of them is answered with 400 "Authorization field missing,
/// malformed or invalid" ([`TYK_STATUS`], [`TYK_MESSAGE`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// Header syntax is broken (unbalanced quote, unknown parameter, bad base64, ...).
    /// Tyk: `getFieldValues` error -> 400.
    #[error("malformed signature header: {0}")]
    Malformed(&'static str),
    /// `keyId` or `signature` is absent or empty.
    /// Tyk: empty keyId fails the session lookup, empty signature fails the compare -> 400.
    #[error("signature header is missing {0}")]
    MissingField(&'static str),
    /// `algorithm` is not one of hmac-sha1/256/384/512 (includes Tyk's `rsa-sha256`,
    /// which is not supported here). Tyk silently falls back to hmac-sha1 for unknown
    /// names, so the request fails its compare -> 400.
    #[error("unknown signature algorithm")]
    UnknownAlgorithm,
    /// Algorithm not in `hmac_allowed_algorithms`. Tyk: "Algorithm not supported" log -> 400.
    #[error("signature algorithm not allowed")]
    AlgorithmNotAllowed,
    /// A header named in `headers` is not on the request. Tyk signs an empty value
    /// instead (and the compare then fails unless the client did the same) -> 400.
    #[error("missing signed header {0}")]
    MissingHeader(String),
    /// Neither `Date` nor `X-Aux-Date` present. Tyk: date parse fails -> 400.
    #[error("Date header missing")]
    DateMissing,
    /// Date is not `Mon, 02 Jan 2006 15:04:05 GMT` (or `... -07`). Tyk: "Date parsing failed" -> 400.
    #[error("Date header invalid")]
    DateInvalid,
    /// Date further from now than `hmac_allowed_clock_skew`.
    /// Tyk: "Clock skew outside of acceptable bounds" -> 400.
    #[error("Date header outside the allowed clock skew")]
    ClockSkew,
    /// The key's secret is empty. Tyk: "Hmac secret is empty" / "This key ID is invalid" -> 400.
    #[error("no HMAC secret for this key")]
    EmptySecret,
    /// HMAC does not match. Tyk: "Signature string does not match!" -> 400.
    #[error("signature mismatch")]
    Mismatch,
}

impl SigError {
    /// HTTP status Tyk answers with for this error (always 400).
    pub fn tyk_status(&self) -> u16 {
        TYK_STATUS
    }

    /// Response message Tyk answers with for this error (always the same text).
    pub fn tyk_message(&self) -> &'static str {
        TYK_MESSAGE
    }
}

/// HMAC algorithm named by the `algorithm` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha1,
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Algorithm {
    /// Wire name, e.g. `"hmac-sha256"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HmacSha1 => "hmac-sha1",
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha384 => "hmac-sha384",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }

    /// Parses a wire name. Exact, case-sensitive match, like Tyk's `switch`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "hmac-sha1" => Some(Algorithm::HmacSha1),
            "hmac-sha256" => Some(Algorithm::HmacSha256),
            "hmac-sha384" => Some(Algorithm::HmacSha384),
            "hmac-sha512" => Some(Algorithm::HmacSha512),
            _ => None,
        }
    }

    /// Tyk's `hmac_allowed_algorithms` check: an empty list allows everything, otherwise
    /// the wire name must be in the list (exact string compare, as in Tyk).
    pub fn is_allowed<S: AsRef<str>>(self, allowed: &[S]) -> bool {
        allowed.is_empty() || allowed.iter().any(|a| a.as_ref() == self.as_str())
    }

    /// Tag length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Algorithm::HmacSha1 => 20,
            Algorithm::HmacSha256 => 32,
            Algorithm::HmacSha384 => 48,
            Algorithm::HmacSha512 => 64,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// [`Algorithm::is_allowed`] as a `Result`, for `?` chains.
pub fn check_algorithm_allowed<S: AsRef<str>>(algorithm: Algorithm, allowed: &[S]) -> Result<(), SigError> {
    if algorithm.is_allowed(allowed) {
        Ok(())
    } else {
        Err(SigError::AlgorithmNotAllowed)
    }
}

/// A parsed `Signature` authorization value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// `keyId`, non-empty. The caller resolves it to a session.
    pub key_id: String,
    /// `algorithm`; hmac-sha1 when absent (Tyk's fallback).
    pub algorithm: Algorithm,
    /// Lower-case signed header names in order; `["date"]` when absent or empty, as Tyk.
    pub headers: Vec<String>,
    /// The raw MAC: `signature` percent-decoded, then base64-decoded. Non-empty.
    pub signature: Vec<u8>,
}

/// Parses the value of the authorization header (everything after `Authorization:`),
/// e.g. `Signature keyId="k",algorithm="hmac-sha256",headers="date",signature="..."`.
///
/// The `Signature` scheme word is matched case-insensitively and, as in Tyk, may be
/// omitted. Parameter names are case-insensitive; values may be quoted (with `\` escapes)
/// or bare tokens. Unknown or repeated parameters are rejected.
pub fn parse(authorization_value: &str) -> Result<SignatureHeader, SigError> {
    let params = strip_scheme(authorization_value.trim());
    if params.is_empty() {
        return Err(SigError::Malformed("no parameters"));
    }

    let mut key_id: Option<String> = None;
    let mut algorithm: Option<String> = None;
    let mut headers: Option<String> = None;
    let mut signature: Option<String> = None;

    for item in ParamIter::new(params) {
        let (name, value) = item?;
        let slot = if name.eq_ignore_ascii_case("keyid") {
            &mut key_id
        } else if name.eq_ignore_ascii_case("algorithm") {
            &mut algorithm
        } else if name.eq_ignore_ascii_case("headers") {
            &mut headers
        } else if name.eq_ignore_ascii_case("signature") {
            &mut signature
        } else {
            return Err(SigError::Malformed("unknown parameter"));
        };
        if slot.is_some() {
            return Err(SigError::Malformed("repeated parameter"));
        }
        *slot = Some(value);
    }

    let key_id = match key_id {
        Some(k) if !k.is_empty() => k,
        _ => return Err(SigError::MissingField("keyId")),
    };
    let signature_text = match signature {
        Some(s) if !s.is_empty() => s,
        _ => return Err(SigError::MissingField("signature")),
    };
    let algorithm = match algorithm {
        None => Algorithm::HmacSha1,
        Some(a) => Algorithm::from_name(&a).ok_or(SigError::UnknownAlgorithm)?,
    };

    let mut header_names = Vec::new();
    if let Some(h) = headers {
        for name in h.split_whitespace() {
            let lower = name.to_ascii_lowercase();
            if lower != "(request-target)" && !is_token(&lower) {
                return Err(SigError::Malformed("invalid header name in headers"));
            }
            header_names.push(lower);
        }
    }
    if header_names.is_empty() {
        header_names.push("date".to_owned());
    }

    let unescaped =
        percent_decode(signature_text.as_bytes()).ok_or(SigError::Malformed("bad percent-encoding in signature"))?;
    let raw = B64.decode(unescaped).map_err(|_| SigError::Malformed("signature is not base64"))?;
    if raw.is_empty() {
        return Err(SigError::MissingField("signature"));
    }

    Ok(SignatureHeader { key_id, algorithm, headers: header_names, signature: raw })
}

/// The value Tyk uses for `Date`: `X-Aux-Date` if present and non-empty, else `Date`
/// (non-empty), else `None`. Pass the result to [`check_date`].
pub fn date_value(lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    date_header(lookup).map(|(_, v)| v)
}

/// `(line name, value)` of the date header Tyk signs: `x-aux-date` wins over `date`.
fn date_header(lookup: &dyn Fn(&str) -> Option<String>) -> Option<(&'static str, String)> {
    if let Some(v) = lookup("x-aux-date").filter(|v| !v.is_empty()) {
        return Some(("x-aux-date", v));
    }
    lookup("date").filter(|v| !v.is_empty()).map(|v| ("date", v))
}

/// The signing string: one `name: value` line per entry of `sig.headers`, joined by `\n`.
///
/// * `(request-target)` -> `(request-target): <method lower-case> <target_path>`. For Tyk
///   compatibility pass what Tyk uses, Go's `r.URL.Path` (percent-decoded, no query; see
///   [`tyk_target_path`]); the draft spec would use the raw path with query instead.
/// * `date` -> the `X-Aux-Date` value if that header is present (and the line is then
///   named `x-aux-date`, as Tyk does), else `Date`.
/// * others -> `lookup(name)` (lower-case name, first occurrence), trimmed.
///
/// A missing header is an error naming it (Tyk would sign an empty value instead).
pub fn signing_string(
    sig: &SignatureHeader,
    method: &str,
    target_path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, SigError> {
    let mut out = String::new();
    for (i, name) in sig.headers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if name == "(request-target)" {
            out.push_str("(request-target): ");
            out.push_str(&method.to_ascii_lowercase());
            out.push(' ');
            out.push_str(target_path);
        } else if name == "date" {
            let (line_name, value) = date_header(lookup).ok_or_else(|| SigError::MissingHeader("date".to_owned()))?;
            out.push_str(line_name);
            out.push_str(": ");
            out.push_str(value.trim());
        } else {
            let value = lookup(name).ok_or_else(|| SigError::MissingHeader(name.clone()))?;
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value.trim());
        }
    }
    Ok(out)
}

/// Computes the raw HMAC of `signing_string` with `secret` (for tests, clients and
/// upstream signing). See [`encode_signature`] for the wire form.
pub fn compute(algorithm: Algorithm, signing_string: &str, secret: &[u8]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(secret: &[u8], msg: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        match <M as hmac::digest::KeyInit>::new_from_slice(secret) {
            Ok(mut m) => {
                m.update(msg);
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }
    let msg = signing_string.as_bytes();
    match algorithm {
        Algorithm::HmacSha1 => run::<Hmac<sha1::Sha1>>(secret, msg),
        Algorithm::HmacSha256 => run::<Hmac<sha2::Sha256>>(secret, msg),
        Algorithm::HmacSha384 => run::<Hmac<sha2::Sha384>>(secret, msg),
        Algorithm::HmacSha512 => run::<Hmac<sha2::Sha512>>(secret, msg),
    }
}

/// The wire form Tyk expects in `signature="..."`: `url.QueryEscape(base64(mac))`.
pub fn encode_signature(mac: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(mac);
    let mut out = String::with_capacity(b64.len() + 8);
    for c in b64.chars() {
        match c {
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            '=' => out.push_str("%3D"),
            other => out.push(other),
        }
    }
    out
}

/// Checks `sig.signature` against the HMAC of `signing_string` keyed with `secret` (the
/// session's `hmac_string`), in constant time. An empty secret is refused, as in Tyk.
pub fn verify(sig: &SignatureHeader, signing_string: &str, secret: &[u8]) -> Result<(), SigError> {
    fn run<M: Mac + hmac::digest::KeyInit>(secret: &[u8], msg: &[u8], tag: &[u8]) -> Result<(), SigError> {
        let mut m = <M as hmac::digest::KeyInit>::new_from_slice(secret).map_err(|_| SigError::Mismatch)?;
        m.update(msg);
        // Constant-time compare; a tag of the wrong length is an error, not a panic.
        m.verify_slice(tag).map_err(|_| SigError::Mismatch)
    }
    if secret.is_empty() {
        return Err(SigError::EmptySecret);
    }
    let msg = signing_string.as_bytes();
    let tag = sig.signature.as_slice();
    match sig.algorithm {
        Algorithm::HmacSha1 => run::<Hmac<sha1::Sha1>>(secret, msg, tag),
        Algorithm::HmacSha256 => run::<Hmac<sha2::Sha256>>(secret, msg, tag),
        Algorithm::HmacSha384 => run::<Hmac<sha2::Sha384>>(secret, msg, tag),
        Algorithm::HmacSha512 => run::<Hmac<sha2::Sha512>>(secret, msg, tag),
    }
}

/// Tyk's clock-skew check (`checkClockSkew`). `date_header` is the value from
/// [`date_value`] (X-Aux-Date preferred over Date).
///
/// As in Tyk the date must be present and parse *even when the skew check is off*;
/// then, if `allowed_skew_ms > 0` (`hmac_allowed_clock_skew`; `<= 0` or NaN = off), the
/// whole-millisecond distance between `now` and the date must not exceed it.
///
/// Accepted formats (Go layouts Tyk tries): `Mon, 02 Jan 2006 15:04:05 MST` and
/// `Mon, 02 Jan 2006 15:04:05 -07`. A letter zone (GMT, UTC, any 3-5 letter abbreviation)
/// counts as UTC, which is what Go does on a UTC host; the weekday is not checked
/// against the date (Go ignores it too).
pub fn check_date(date_header: Option<&str>, now: SystemTime, allowed_skew_ms: f64) -> Result<(), SigError> {
    let value = match date_header {
        Some(v) if !v.is_empty() => v,
        _ => return Err(SigError::DateMissing),
    };
    let date_secs = parse_tyk_date(value).ok_or(SigError::DateInvalid)?;
    if allowed_skew_ms.is_nan() || allowed_skew_ms <= 0.0 {
        return Ok(());
    }
    let now_ns: i128 = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    let diff_ms = (now_ns - i128::from(date_secs) * 1_000_000_000) / 1_000_000;
    if diff_ms.unsigned_abs() as f64 > allowed_skew_ms {
        return Err(SigError::ClockSkew);
    }
    Ok(())
}

/// What Tyk puts after the method in `(request-target)`: Go's `r.URL.Path`, i.e. the
/// request target without `?query`, percent-decoded (`+` stays `+`). `None` if the path
/// has a broken `%` escape or decodes to invalid UTF-8 (Go would have refused the
/// request line with 400 in the first case).
pub fn tyk_target_path(raw_path_and_query: &str) -> Option<String> {
    let path = match raw_path_and_query.split_once('?') {
        Some((p, _)) => p,
        None => raw_path_and_query,
    };
    let bytes = percent_decode(path.as_bytes())?;
    String::from_utf8(bytes).ok()
}

// ---------------------------------------------------------------------------------------
// Parsing helpers (no panics: only iterators, `get`, `split_at_checked`, `strip_prefix`).

/// Removes a leading `Signature` scheme word (any case) followed by whitespace.
fn strip_scheme(v: &str) -> &str {
    const SCHEME: &str = "signature";
    match v.split_at_checked(SCHEME.len()) {
        Some((head, rest)) if head.eq_ignore_ascii_case(SCHEME) => {
            if rest.is_empty() || rest.starts_with([' ', '\t']) {
                rest.trim_start()
            } else {
                v
            }
        }
        _ => v,
    }
}

/// RFC 7230 `token` characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Iterator over `name=value` pairs separated by commas. Yields `Err` once on bad syntax
/// and then stops.
struct ParamIter<'a> {
    rest: &'a str,
    done: bool,
}

impl<'a> ParamIter<'a> {
    fn new(s: &'a str) -> Self {
        ParamIter { rest: s, done: false }
    }

    fn next_param(&mut self) -> Option<Result<(String, String), SigError>> {
        // Skip whitespace and empty list elements.
        self.rest = self.rest.trim_start_matches([' ', '\t', ',']);
        if self.rest.is_empty() {
            return None;
        }
        let name_end = self.rest.find(|c: char| !(c.is_ascii() && is_tchar(c as u8))).unwrap_or(self.rest.len());
        let Some((name, after)) = self.rest.split_at_checked(name_end) else {
            return Some(Err(SigError::Malformed("expected parameter name")));
        };
        if name.is_empty() {
            return Some(Err(SigError::Malformed("expected parameter name")));
        }
        let after = after.trim_start_matches([' ', '\t']);
        let Some(after) = after.strip_prefix('=') else {
            return Some(Err(SigError::Malformed("expected '=' after parameter name")));
        };
        let after = after.trim_start_matches([' ', '\t']);
        let (value, rest) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, e)) => value.push(e),
                        None => break,
                    },
                    c => value.push(c),
                }
            }
            let Some(end) = end else {
                return Some(Err(SigError::Malformed("unbalanced quote")));
            };
            (value, quoted.get(end..).unwrap_or(""))
        } else {
            let end = after.find([',', ' ', '\t', '"']).unwrap_or(after.len());
            let Some((v, r)) = after.split_at_checked(end) else {
                return Some(Err(SigError::Malformed("empty parameter value")));
            };
            if v.is_empty() {
                return Some(Err(SigError::Malformed("empty parameter value")));
            }
            (v.to_owned(), r)
        };
        let rest = rest.trim_start_matches([' ', '\t']);
        if !(rest.is_empty() || rest.starts_with(',')) {
            return Some(Err(SigError::Malformed("expected ',' between parameters")));
        }
        self.rest = rest;
        Some(Ok((name.to_owned(), value)))
    }
}

impl Iterator for ParamIter<'_> {
    type Item = Result<(String, String), SigError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_param();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (either hex case); other bytes, `+` included, pass through.
fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut it = input.iter().copied();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hi = hex_val(it.next()?)?;
            let lo = hex_val(it.next()?)?;
            out.push((hi << 4) | lo);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// Byte cursor for the date parser.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn literal(&mut self, b: u8) -> Option<()> {
        (self.bump()? == b).then_some(())
    }

    /// A layout space: one or more spaces (Go's `skip`).
    fn spaces(&mut self) -> Option<()> {
        self.literal(b' ')?;
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
        Some(())
    }

    fn digit(&mut self) -> Option<u32> {
        let b = self.peek()?;
        if b.is_ascii_digit() {
            self.pos += 1;
            Some(u32::from(b - b'0'))
        } else {
            None
        }
    }

    /// Exactly `n` digits.
    fn fixed(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = v * 10 + self.digit()?;
        }
        Some(v)
    }

    /// Three ASCII letters matched case-insensitively against `names`; returns the index.
    fn name3(&mut self, names: &[&str]) -> Option<usize> {
        let word = self.s.get(self.pos..self.pos + 3)?;
        let idx = names.iter().position(|n| n.as_bytes().eq_ignore_ascii_case(word))?;
        self.pos += 3;
        Some(idx)
    }

    fn rest(&self) -> &[u8] {
        self.s.get(self.pos..).unwrap_or(&[])
    }
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses Tyk's two accepted layouts into Unix seconds.
fn parse_tyk_date(value: &str) -> Option<i64> {
    let mut c = Cursor { s: value.as_bytes(), pos: 0 };
    c.name3(&DAYS)?;
    c.literal(b',')?;
    c.spaces()?;
    let day = c.fixed(2)?;
    c.spaces()?;
    let month = u32::try_from(c.name3(&MONTHS)?).ok()? + 1;
    c.spaces()?;
    let year = i64::from(c.fixed(4)?);
    c.spaces()?;
    // Go's "15": one or two digits.
    let mut hour = c.digit()?;
    if let Some(d) = c.digit() {
        hour = hour * 10 + d;
    }
    c.literal(b':')?;
    let minute = c.fixed(2)?;
    c.literal(b':')?;
    let second = c.fixed(2)?;
    c.spaces()?;
    let offset_secs = parse_zone(c.rest())?;

    if day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + i64::from(hour) * 3_600 + i64::from(minute) * 60 + i64::from(second) - offset_secs)
}

/// Zone at the end of the date: a Go-style abbreviation (taken as UTC) or `±hh`.
fn parse_zone(z: &[u8]) -> Option<i64> {
    match z {
        [sign @ (b'+' | b'-'), h1, h2] if h1.is_ascii_digit() && h2.is_ascii_digit() => {
            let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            if hours > 24 {
                return None;
            }
            Some(if *sign == b'-' { -hours * 3_600 } else { hours * 3_600 })
        }
        b"ChST" | b"MeST" => Some(0),
        _ => {
            let upper = z.iter().all(u8::is_ascii_uppercase);
            let ok = upper
                && match z.len() {
                    3 => true,
                    4 => z.last() == Some(&b'T') || z == b"WITA",
                    5 => z.last() == Some(&b'T'),
                    _ => false,
                };
            ok.then_some(0)
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests read the real clock to build and time their cases")]
mod tests {
    use super::*;
    use hmac::digest::KeyInit;
    use std::collections::HashMap;
    use std::time::Duration;

    fn mac<M: Mac + KeyInit>(secret: &[u8], msg: &str) -> Vec<u8> {
        let mut m = <M as KeyInit>::new_from_slice(secret).unwrap();
        m.update(msg.as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned())).collect()
    }

    fn lookup_in(map: &HashMap<String, String>) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| map.get(name).cloned()
    }

    const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const DATE_UNIX: u64 = 784_111_777;

    fn auth(alg: &str, hdrs: &str, sig: &[u8]) -> String {
        format!(
            "Signature keyId=\"key-1\",algorithm=\"{alg}\",headers=\"{hdrs}\",signature=\"{}\"",
            encode_signature(sig)
        )
    }

    #[test]
    fn known_hmac_vectors() {
        let msg = "The quick brown fox jumps over the lazy dog";
        assert_eq!(
            encode_hex(&compute(Algorithm::HmacSha256, msg, b"key")),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert_eq!(encode_hex(&compute(Algorithm::HmacSha1, msg, b"key")), "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9");
        for alg in [Algorithm::HmacSha1, Algorithm::HmacSha256, Algorithm::HmacSha384, Algorithm::HmacSha512] {
            assert_eq!(compute(alg, msg, b"key").len(), alg.output_len());
        }
    }

    fn encode_hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn end_to_end_all_algorithms() {
        let req = headers(&[("Date", DATE), ("X-Foo", "  bar  ")]);
        let lookup = lookup_in(&req);
        let expected_ss = format!("(request-target): get /api/v1/x\ndate: {DATE}\nx-foo: bar");
        let secret = b"s3cret";
        let cases: [(&str, Vec<u8>); 4] = [
            ("hmac-sha1", mac::<Hmac<sha1::Sha1>>(secret, &expected_ss)),
            ("hmac-sha256", mac::<Hmac<sha2::Sha256>>(secret, &expected_ss)),
            ("hmac-sha384", mac::<Hmac<sha2::Sha384>>(secret, &expected_ss)),
            ("hmac-sha512", mac::<Hmac<sha2::Sha512>>(secret, &expected_ss)),
        ];
        for (alg, sig) in cases {
            let h = parse(&auth(alg, "(request-target) Date X-Foo", &sig)).unwrap();
            assert_eq!(h.key_id, "key-1");
            assert_eq!(h.algorithm.as_str(), alg);
            assert_eq!(h.headers, ["(request-target)", "date", "x-foo"]);
            assert_eq!(h.signature, sig);
            let ss = signing_string(&h, "GET", "/api/v1/x", &lookup).unwrap();
            assert_eq!(ss, expected_ss);
            assert_eq!(verify(&h, &ss, secret), Ok(()));
            assert_eq!(verify(&h, &ss, b"wrong"), Err(SigError::Mismatch));
        }
    }

    #[test]
    fn tampered_header_value_fails() {
        let secret = b"k";
        let good = headers(&[("Date", DATE), ("X-Foo", "bar")]);
        let sig = mac::<Hmac<sha2::Sha256>>(secret, &format!("date: {DATE}\nx-foo: bar"));
        let h = parse(&auth("hmac-sha256", "date x-foo", &sig)).unwrap();
        let ss = signing_string(&h, "GET", "/", &lookup_in(&good)).unwrap();
        assert_eq!(verify(&h, &ss, secret), Ok(()));

        let bad = headers(&[("Date", DATE), ("X-Foo", "baz")]);
        let ss = signing_string(&h, "GET", "/", &lookup_in(&bad)).unwrap();
        assert_eq!(verify(&h, &ss, secret), Err(SigError::Mismatch));
    }

    #[test]
    fn request_target_method_and_path_are_signed() {
        let secret = b"k";
        let req = headers(&[("Date", DATE)]);
        let ss_good = format!("(request-target): post /orders\ndate: {DATE}");
        let sig = mac::<Hmac<sha2::Sha512>>(secret, &ss_good);
        let h = parse(&auth("hmac-sha512", "(request-target) date", &sig)).unwrap();
        let ss = signing_string(&h, "POST", "/orders", &lookup_in(&req)).unwrap();
        assert_eq!(ss, ss_good);
        assert_eq!(verify(&h, &ss, secret), Ok(()));
        let other_path = signing_string(&h, "POST", "/admin", &lookup_in(&req)).unwrap();
        assert_eq!(verify(&h, &other_path, secret), Err(SigError::Mismatch));
        let other_method = signing_string(&h, "DELETE", "/orders", &lookup_in(&req)).unwrap();
        assert_eq!(verify(&h, &other_method, secret), Err(SigError::Mismatch));
    }

    #[test]
    fn tyk_target_path_drops_query_and_decodes() {
        assert_eq!(tyk_target_path("/a%20b/c?x=1&y=2").as_deref(), Some("/a b/c"));
        assert_eq!(tyk_target_path("/p+q").as_deref(), Some("/p+q"));
        assert_eq!(tyk_target_path("/bad%zz"), None);
        assert_eq!(tyk_target_path("/trunc%2"), None);
        assert_eq!(tyk_target_path("/bin%ff"), None);
    }

    #[test]
    fn missing_signed_header_is_named() {
        let h = parse(&auth("hmac-sha256", "date x-missing", &[1; 32])).unwrap();
        let req = headers(&[("Date", DATE)]);
        assert_eq!(signing_string(&h, "GET", "/", &lookup_in(&req)), Err(SigError::MissingHeader("x-missing".into())));
        assert_eq!(SigError::MissingHeader("x-missing".into()).to_string(), "missing signed header x-missing");
        let none = headers(&[]);
        assert_eq!(signing_string(&h, "GET", "/", &lookup_in(&none)), Err(SigError::MissingHeader("date".into())));
    }

    #[test]
    fn headers_default_to_date_and_aux_date_wins() {
        let secret = b"k";
        let aux = "Mon, 07 Nov 1994 08:49:37 GMT";
        let req = headers(&[("Date", DATE), ("X-Aux-Date", aux)]);
        let sig = mac::<Hmac<sha1::Sha1>>(secret, &format!("x-aux-date: {aux}"));
        // No headers and no algorithm: Tyk defaults (["date"], hmac-sha1).
        let value = format!("Signature keyId=\"k1\",signature=\"{}\"", encode_signature(&sig));
        let h = parse(&value).unwrap();
        assert_eq!(h.headers, ["date"]);
        assert_eq!(h.algorithm, Algorithm::HmacSha1);
        let ss = signing_string(&h, "GET", "/", &lookup_in(&req)).unwrap();
        assert_eq!(ss, format!("x-aux-date: {aux}"));
        assert_eq!(verify(&h, &ss, secret), Ok(()));
        assert_eq!(date_value(&lookup_in(&req)).as_deref(), Some(aux));
        let only_date = headers(&[("Date", DATE), ("X-Aux-Date", "")]);
        assert_eq!(date_value(&lookup_in(&only_date)).as_deref(), Some(DATE));
    }

    #[test]
    fn signature_encodings_accepted() {
        let sig: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(250)).collect();
        let std_b64 = base64::engine::general_purpose::STANDARD.encode(&sig);
        assert!(std_b64.contains('+') || std_b64.contains('/'));
        let escaped = encode_signature(&sig);
        let lower = escaped.replace("%2B", "%2b").replace("%2F", "%2f").replace("%3D", "%3d");
        let unpadded = std_b64.trim_end_matches('=').to_owned();
        for form in [escaped, lower, std_b64, unpadded] {
            let v = format!("Signature keyId=k,algorithm=hmac-sha256,signature=\"{form}\"");
            assert_eq!(parse(&v).unwrap().signature, sig, "form {form}");
        }
    }

    #[test]
    fn parse_variants() {
        // Case-insensitive scheme and names, spaces, bare tokens, escapes.
        let h = parse("signature  KEYID = \"a\\\"b\" , Algorithm=hmac-sha384,signature=AAAA").unwrap();
        assert_eq!(h.key_id, "a\"b");
        assert_eq!(h.algorithm, Algorithm::HmacSha384);
        assert_eq!(h.signature, vec![0, 0, 0]);
        // Scheme word optional, as in Tyk's stripSignature.
        assert!(parse("keyId=\"a\",signature=\"AAAA\"").is_ok());
        // Empty headers falls back to date.
        let h = parse("Signature keyId=a,headers=\"\",signature=AAAA").unwrap();
        assert_eq!(h.headers, ["date"]);
    }

    #[test]
    fn garbage_headers_are_errors_not_panics() {
        let cases: &[(&str, SigError)] = &[
            ("", SigError::Malformed("no parameters")),
            ("Signature", SigError::Malformed("no parameters")),
            ("Signature   ", SigError::Malformed("no parameters")),
            ("Signature algorithm=\"hmac-sha256\",signature=\"AAAA\"", SigError::MissingField("keyId")),
            ("Signature keyId=\"\",signature=\"AAAA\"", SigError::MissingField("keyId")),
            ("Signature keyId=\"k\"", SigError::MissingField("signature")),
            ("Signature keyId=\"k\",signature=\"%%%\"", SigError::Malformed("bad percent-encoding in signature")),
            ("Signature keyId=\"k\",signature=\"not base64!\"", SigError::Malformed("signature is not base64")),
            ("Signature keyId=\"k\",algorithm=\"rsa-sha256\",signature=\"AAAA\"", SigError::UnknownAlgorithm),
            ("Signature keyId=\"k\",algorithm=\"HMAC-SHA256\",signature=\"AAAA\"", SigError::UnknownAlgorithm),
            ("Signature keyId=\"k,signature=\"AAAA", SigError::Malformed("expected ',' between parameters")),
            ("Signature keyId=\"k", SigError::Malformed("unbalanced quote")),
            ("Signature keyId=\"k\\", SigError::Malformed("unbalanced quote")),
            ("Signature keyId", SigError::Malformed("expected '=' after parameter name")),
            ("Signature keyId=", SigError::Malformed("empty parameter value")),
            ("Signature =x", SigError::Malformed("expected parameter name")),
            ("Signature keyId=k,foo=bar,signature=AAAA", SigError::Malformed("unknown parameter")),
            ("Signature keyId=k,keyId=j,signature=AAAA", SigError::Malformed("repeated parameter")),
            ("Signature keyId=k headers=date", SigError::Malformed("expected ',' between parameters")),
            (
                "Signature keyId=k,headers=\"da:te\",signature=AAAA",
                SigError::Malformed("invalid header name in headers"),
            ),
            ("Basic dXNlcjpwYXNz", SigError::Malformed("expected '=' after parameter name")),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).as_ref(), Err(want), "input {input:?}");
        }
        // Multi-byte characters at every boundary the parser looks at.
        for s in ["Signatur€", "Signature€", "€", "Signature kéyId=\"é\"", "Signature keyId=é€,signature=€"]
        {
            assert!(parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn pseudo_random_inputs_never_panic() {
        let alphabet: Vec<char> = "Signature keyId=\"\\,%2bB+/=aé€\t(request-target)hmac-sha256".chars().collect();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut ok = 0usize;
        for _ in 0..20_000 {
            let mut s = String::new();
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let len = (state >> 58) as usize;
            for _ in 0..len {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let idx = (state >> 33) as usize % alphabet.len();
                if let Some(c) = alphabet.get(idx) {
                    s.push(*c);
                }
            }
            if let Ok(h) = parse(&s) {
                ok += 1;
                let _ = signing_string(&h, "GET", "/", &|_| None);
                let _ = verify(&h, "x", b"k");
            }
            let _ = check_date(Some(&s), SystemTime::now(), 1000.0);
            let _ = tyk_target_path(&s);
        }
        assert!(ok < 20_000);
    }

    #[test]
    fn allowed_algorithms() {
        let none: [&str; 0] = [];
        assert!(Algorithm::HmacSha1.is_allowed(&none));
        let list = vec!["hmac-sha256".to_owned(), "hmac-sha512".to_owned()];
        assert_eq!(check_algorithm_allowed(Algorithm::HmacSha256, &list), Ok(()));
        assert_eq!(check_algorithm_allowed(Algorithm::HmacSha1, &list), Err(SigError::AlgorithmNotAllowed));
    }

    #[test]
    fn verify_rejects_empty_secret_and_wrong_length() {
        let h = SignatureHeader {
            key_id: "k".into(),
            algorithm: Algorithm::HmacSha256,
            headers: vec!["date".into()],
            signature: compute(Algorithm::HmacSha256, "x", b"k"),
        };
        assert_eq!(verify(&h, "x", b""), Err(SigError::EmptySecret));
        assert_eq!(verify(&h, "x", b"k"), Ok(()));
        let mut short = h.clone();
        short.signature.truncate(16);
        assert_eq!(verify(&short, "x", b"k"), Err(SigError::Mismatch));
        let mut sha1 = h;
        sha1.algorithm = Algorithm::HmacSha1;
        assert_eq!(verify(&sha1, "x", b"k"), Err(SigError::Mismatch));
    }

    #[test]
    fn date_parsing() {
        assert_eq!(parse_tyk_date(DATE), Some(DATE_UNIX as i64));
        assert_eq!(parse_tyk_date("Sun, 06 Nov 1994 08:49:37 UTC"), Some(DATE_UNIX as i64));
        assert_eq!(parse_tyk_date("sun,  06 nov 1994 8:49:37 GMT"), Some(DATE_UNIX as i64));
        // Numeric zone fallback: 09:49:37 +01 == 08:49:37 GMT.
        assert_eq!(parse_tyk_date("Sun, 06 Nov 1994 09:49:37 +01"), Some(DATE_UNIX as i64));
        assert_eq!(parse_tyk_date("Sun, 06 Nov 1994 03:49:37 -05"), Some(DATE_UNIX as i64));
        // Weekday is not checked (Go ignores it).
        assert_eq!(parse_tyk_date("Fri, 06 Nov 1994 08:49:37 GMT"), Some(DATE_UNIX as i64));
        assert_eq!(parse_tyk_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_tyk_date("Tue, 29 Feb 2000 00:00:00 GMT"), Some(951_782_400));
        for bad in [
            "",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 1994 08:49:37 GMTX",
            "Sun, 06 Nov 1994 08:49:37 +0100",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 29 Feb 1900 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "1994-11-06T08:49:37Z",
            "Sun, 06 Nov 1994 08:49:37 gmt",
            "Sun, 06 Nov 1994 08:49:37 +1€",
        ] {
            assert_eq!(parse_tyk_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn clock_skew() {
        let date_time = UNIX_EPOCH + Duration::from_secs(DATE_UNIX);
        let inside = date_time + Duration::from_millis(299_999);
        let edge = date_time + Duration::from_millis(300_000);
        let outside = date_time + Duration::from_millis(300_001);
        let before = date_time - Duration::from_millis(300_001);
        assert_eq!(check_date(Some(DATE), inside, 300_000.0), Ok(()));
        assert_eq!(check_date(Some(DATE), edge, 300_000.0), Ok(()));
        assert_eq!(check_date(Some(DATE), outside, 300_000.0), Err(SigError::ClockSkew));
        assert_eq!(check_date(Some(DATE), before, 300_000.0), Err(SigError::ClockSkew));
        // Skew check off: any parseable date passes, but the date must still parse.
        assert_eq!(check_date(Some(DATE), SystemTime::now(), 0.0), Ok(()));
        assert_eq!(check_date(Some(DATE), SystemTime::now(), -1.0), Ok(()));
        assert_eq!(check_date(Some(DATE), SystemTime::now(), f64::NAN), Ok(()));
        assert_eq!(check_date(None, SystemTime::now(), 0.0), Err(SigError::DateMissing));
        assert_eq!(check_date(Some(""), SystemTime::now(), 1.0), Err(SigError::DateMissing));
        assert_eq!(check_date(Some("yesterday"), SystemTime::now(), 0.0), Err(SigError::DateInvalid));
        // `now` before the epoch does not panic.
        assert_eq!(check_date(Some(DATE), UNIX_EPOCH - Duration::from_secs(10), 1.0), Err(SigError::ClockSkew));
    }

    #[test]
    fn tyk_mapping_is_uniform() {
        assert_eq!(SigError::Mismatch.tyk_status(), 400);
        assert_eq!(SigError::DateMissing.tyk_message(), "Authorization field missing, malformed or invalid");
    }
}
