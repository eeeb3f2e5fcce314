//! Phase `record`: every exchange is counted in the worker's metrics, and, when analytics are on
//! and the API is tracked, its request record is begun while the request head is still in the
//! read buffer and finished when the exchange ends (`analytics::record`).

use std::time::Instant;

use portcullis_http1::{BodyKind, Method, RequestMeta};

use super::worker::Worker;
use crate::analytics::{Outcome, RequestFacts};
use crate::config::{ApiSpec, Snapshot};

/// Counts the exchange in the worker's metrics and, when a record was begun for it (`rec` not
/// empty), finishes the record and hands it to the worker's recorder. Returns the time it read
/// (the exchange's end, for whatever else needs a time then).
pub(super) fn record(
    worker: &Worker,
    rec: &mut Vec<u8>,
    api: &str,
    method: Method,
    started: Instant,
    mut o: Outcome,
) -> Instant {
    let now = Instant::now();
    let elapsed = now.saturating_duration_since(started);
    worker.stats.borrow_mut().record(api, method, o.code, elapsed.as_secs_f64(), o.bytes_in, o.bytes_out);
    if !rec.is_empty() {
        o.total_us = elapsed.as_micros() as u64;
        worker.analytics.borrow_mut().push(rec, &o, now);
    }
    now
}

pub(super) fn outcome(code: u16, bytes_in: u64, bytes_out: u64, upstream_us: u64) -> Outcome {
    Outcome { code, total_us: 0, upstream_us, bytes_in, bytes_out }
}

/// Who a record is about, besides the request head.
pub(super) struct RecordCtx<'a> {
    pub(super) api: &'a ApiSpec,
    /// The canonical path, as routing and the rules saw it (Tyk records the decoded path too).
    pub(super) path: &'a str,
    /// The upstream target's host (Tyk's `host`).
    pub(super) host: &'a str,
    pub(super) identity: Option<&'a crate::auth::Identity>,
    /// Tags from `tag_headers`.
    pub(super) tags: &'a [String],
}

/// Begins the record of a request refused before a target was picked (its `host` is the
/// API's first target's).
pub(super) fn begin_refused_record(
    worker: &Worker,
    snap: &Snapshot,
    head: &[u8],
    meta: &RequestMeta,
    client_ip: &str,
    api: &ApiSpec,
    path: &str,
    rec: &mut Vec<u8>,
) {
    let host = api.targets.first().map_or("", |t| t.host_header.as_str());
    let facts = RecordCtx { api, path, host, identity: None, tags: &[] };
    begin_record(worker, snap, head, meta, client_ip, facts, rec);
}

/// Begins the request's record in `rec` (from the head, still in the read buffer) when
/// analytics are on and the API is tracked; otherwise leaves `rec` empty.
pub(super) fn begin_record(
    worker: &Worker,
    snap: &Snapshot,
    head: &[u8],
    meta: &RequestMeta,
    client_ip: &str,
    c: RecordCtx<'_>,
    rec: &mut Vec<u8>,
) {
    rec.clear();
    if !snap.config.analytics.enabled || c.api.do_not_track {
        return;
    }
    // `track_endpoints` / `do_not_track_endpoints` (Tyk: mw_track_endpoints.go:43-51): a
    // tracked request is recorded under its entry's pattern, an untracked one not at all.
    let mut path = c.path.as_bytes();
    let mut track_path = false;
    let method = std::str::from_utf8(meta.spans.method.get(head)).unwrap_or("");
    let rel = c.api.rel_path(c.path);
    if !c.api.track_endpoints.is_empty() || !c.api.do_not_track_endpoints.is_empty() {
        if c.api.do_not_track_endpoints.iter().any(|r| r.matches(method, rel, rel)) {
            return;
        }
        if let Some((_, pattern)) = c.api.track_endpoints.iter().find(|(r, _)| r.matches(method, rel, rel)) {
            path = pattern.as_bytes();
            track_path = true;
        }
    }
    let raw_path = meta.spans.target.get(head);
    let mut recorder = worker.analytics.borrow_mut();
    let key;
    let api_key = match c.identity {
        Some(crate::auth::Identity { key_hash: Some(h), .. }) => {
            key = portcullis_http1::digits::hex64(h);
            std::str::from_utf8(&key).unwrap_or_default()
        }
        Some(ident) => recorder.identity_key(&ident.id),
        None => "",
    };
    let grant_tags: &[String] = c.identity.map_or(&[], |i| &i.grant.tags);
    let facts = RequestFacts {
        method: meta.spans.method.get(head),
        path,
        raw_path,
        host: c.host,
        content_length: match meta.body {
            BodyKind::Length(n) => n,
            _ => 0,
        },
        user_agent: meta.spans.user_agent.get(head),
        api_key,
        api_id: &c.api.api_id,
        api_name: &c.api.name,
        api_version: c.api.auth.version.as_deref(),
        org_id: &c.api.org_id,
        ip_address: client_ip,
        tags: [c.tags, grant_tags],
        track_path,
        expire_after_s: c.api.expire_analytics_after,
        alias: c.identity.map_or("", |i| i.grant.alias.as_str()),
        finding: super::phase::visibility::judge(c.api, method, rel).tag(),
    };
    crate::analytics::record::begin(rec, facts);
    if detailed(snap, c.api, c.identity) {
        // The request as sent: its head, and the body bytes read with it.
        let body = &head[meta.head_len.min(head.len())..];
        let body = match meta.body {
            BodyKind::Length(n) => &body[..body.len().min(n as usize)],
            BodyKind::None => &[],
            _ => body,
        };
        let secrets = crate::analytics::capture::Secrets::of(&c.api.auth);
        let mut wire = std::mem::take(&mut recorder.scratch);
        wire.clear();
        let max = snap.config.analytics.detailed_max_bytes;
        crate::analytics::capture::wire(&mut wire, &head[..meta.head_len.min(head.len())], body, max, &secrets);
        crate::analytics::record::raw_field(rec, "raw_request", &wire);
        recorder.scratch = wire;
    }
}

/// Tyk's `recordDetail` (handler_success.go:373-394): the API's `enable_detailed_recording`,
/// the session's, else `[analytics] detailed_recording`.
pub(super) fn detailed(snap: &Snapshot, api: &ApiSpec, identity: Option<&crate::auth::Identity>) -> bool {
    api.detailed_recording
        || identity.is_some_and(|i| i.grant.detailed_recording)
        || snap.config.analytics.detailed_recording
}

/// Detailed recording of a proxied response (the caller checked [`detailed`]): appends `raw_response` (the head the client
/// gets, and the body bytes held with it: `a` then `b`) to a begun record.
pub(super) fn record_response(worker: &Worker, snap: &Snapshot, api: &ApiSpec, rec: &mut Vec<u8>, a: &[u8], b: &[u8]) {
    if rec.is_empty() {
        return;
    }
    let head_len = a.windows(4).position(|w| w == b"\r\n\r\n").map_or(a.len(), |i| i + 4);
    let mut recorder = worker.analytics.borrow_mut();
    let mut wire = std::mem::take(&mut recorder.scratch);
    wire.clear();
    let secrets = crate::analytics::capture::Secrets::of(&api.auth);
    let max = snap.config.analytics.detailed_max_bytes;
    crate::analytics::capture::wire(&mut wire, &a[..head_len], &a[head_len..], max, &secrets);
    if wire.len() < max {
        wire.extend_from_slice(&b[..b.len().min(max - wire.len())]);
    }
    crate::analytics::record::raw_field(rec, "raw_response", &wire);
    recorder.scratch = wire;
}

/// API visibility: starts the sampled exchange's frame in `out` (`visibility::sample`) with the
/// request head as sent, credentials redacted (`analytics::capture`, as detailed recording).
pub(super) fn begin_sample(api: &ApiSpec, head: &[u8], rel_path: &str, out: &mut Vec<u8>) {
    use crate::visibility::sample;
    sample::begin(out, &api.api_id, rel_path);
    let secrets = crate::analytics::capture::Secrets::of(&api.auth);
    crate::analytics::capture::wire(out, head, &[], head.len(), &secrets);
}

/// Ends the sampled request with its body, `None` when it was not read whole; a body whose
/// media type is not kept, or past `max_body_bytes`, is left out and flagged cut.
pub(super) fn sample_request_body(api: &ApiSpec, body: Option<&[u8]>, out: &mut Vec<u8>) {
    use crate::visibility::sample;
    let v = &api.visibility;
    let content_type = header_value(sample::request_so_far(out), b"content-type").unwrap_or(b"");
    match body {
        Some([]) => {}
        Some(b) if v.keeps_body(content_type) => {
            out.extend_from_slice(&b[..b.len().min(v.max_body_bytes)]);
            if b.len() > v.max_body_bytes {
                sample::flag(out, sample::REQ_CUT);
            }
        }
        _ => sample::flag(out, sample::REQ_CUT),
    }
    sample::end_request(out);
}

/// Whether a sampled response's body should be read whole (copied, not spliced): its media
/// type is kept and its length within `max_body_bytes`.
pub(super) fn sample_wants_body(api: &ApiSpec, resp_head: &[u8], len: u64) -> bool {
    let v = &api.visibility;
    len <= v.max_body_bytes as u64 && v.keeps_body(header_value(resp_head, b"content-type").unwrap_or(b""))
}

/// The first value of header `name` (lower case) in a response head.
fn header_value<'h>(head: &'h [u8], name: &[u8]) -> Option<&'h [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let i = line.iter().position(|&b| b == b':')?;
        line[..i].eq_ignore_ascii_case(name).then(|| line[i + 1..].trim_ascii())
    })
}

/// Ends the sampled exchange with its response (the head the client gets and the body bytes
/// held with it: `a` then `b`), and hands the frame to the worker's batch.
pub(super) fn finish_sample(worker: &Worker, api: &ApiSpec, out: &mut Vec<u8>, a: &[u8], b: &[u8]) {
    use crate::visibility::sample;
    let head_len = a.windows(4).position(|w| w == b"\r\n\r\n").map_or(a.len(), |i| i + 4);
    let at = sample::begin_response(out);
    let secrets = crate::analytics::capture::Secrets::of(&api.auth);
    let keep = api.visibility.keeps_body(header_value(&a[..head_len], b"content-type").unwrap_or(b""));
    let max = api.visibility.max_body_bytes;
    let body_a = if keep { &a[head_len..] } else { &[][..] };
    crate::analytics::capture::wire(out, &a[..head_len], body_a, head_len + max, &secrets);
    if keep {
        let room = (at + head_len + max).saturating_sub(out.len());
        out.extend_from_slice(&b[..b.len().min(room)]);
    }
    if !keep || a.len() - head_len + b.len() > max {
        sample::flag(out, sample::RESP_CUT);
    }
    sample::end(out, at);
    worker.analytics.borrow_mut().push_sample(out);
    out.clear();
}
