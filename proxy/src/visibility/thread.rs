//! The `portcullis-visibility` thread: takes the batches the analytics thread offers it (the
//! workers' request records, and their sampled exchanges), and for each API that learns
//! (`config::Visibility::learn`): every record is a hit in its inventory, and a record tagged
//! shadow or zombie by the worker (`dataplane/phase/visibility.rs`) a finding; every sampled
//! exchange teaches the inventory its parameters and schemas and is compared with the provided
//! document (drift). It saves the state every 10 s and when the analytics thread lets go.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use portcullis_visibility::exchange::{split_wire, Exchange};
use portcullis_visibility::inventory::{Limits, Refusal};
use portcullis_visibility::spec::Route;
use serde::Deserialize;

use super::sample::{self, Frame};
use super::state::{ApiState, DriftDetail, Example, Finding, FindingKind, VisibilityState, MAX_EXAMPLE_BYTES};
use crate::analytics::Shared;
use crate::config::{ApiSpec, Snapshot};

/// Batches queued for the visibility thread.
const QUEUE: usize = 256;
/// How often a changed state is written.
const SAVE_EVERY: Duration = Duration::from_secs(10);

/// The analytics thread's end: offers a batch without waiting.
pub struct Feed {
    tx: Sender<Arc<Shared>>,
    dropped: Arc<VisibilityState>,
}

impl Feed {
    /// Hands `batch` over, or drops it (counted) when the queue is full.
    pub fn offer(&self, batch: &Arc<Shared>) {
        if self.tx.try_send(Arc::clone(batch)).is_err() {
            self.dropped.stats.batches_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the thread; it ends once the [`Feed`] is dropped, after saving.
pub fn spawn(state: Arc<VisibilityState>, snapshot: Arc<ArcSwap<Snapshot>>) -> std::io::Result<(Feed, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    let feed = Feed { tx, dropped: Arc::clone(&state) };
    let thread =
        std::thread::Builder::new().name("portcullis-visibility".into()).spawn(move || run(rx, state, snapshot))?;
    Ok((feed, thread))
}

fn run(rx: Receiver<Arc<Shared>>, state: Arc<VisibilityState>, snapshot: Arc<ArcSwap<Snapshot>>) {
    let mut learner = Learner::default();
    let mut saved = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(batch) => {
                let snap = snapshot.load_full();
                learner.batch(&state, &snap, &batch.bytes, &batch.samples, unix_now());
                // Take what else is queued before saving.
                loop {
                    match rx.try_recv() {
                        Ok(b) => learner.batch(&state, &snap, &b.bytes, &b.samples, unix_now()),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => break,
                    }
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        if saved.elapsed() >= SAVE_EVERY {
            state.save();
            saved = Instant::now();
        }
    }
    state.save();
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The fields of a record the inventory needs.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Line<'a> {
    #[serde(borrow)]
    api_id: Cow<'a, str>,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow)]
    path: Cow<'a, str>,
    response_code: u16,
    #[serde(borrow)]
    tags: Vec<Cow<'a, str>>,
}

/// Per snapshot generation: each API by id, and its document's hash.
#[derive(Default)]
pub(crate) struct Learner {
    generation: u64,
    apis: HashMap<String, (usize, Option<u64>)>,
}

impl Learner {
    fn refresh(&mut self, snap: &Snapshot) {
        if self.generation == snap.generation && !self.apis.is_empty() {
            return;
        }
        self.generation = snap.generation;
        self.apis = snap
            .apis
            .iter()
            .enumerate()
            .map(|(i, a)| (a.api_id.clone(), (i, a.visibility.spec.as_ref().map(|s| doc_hash(s.document())))))
            .collect();
    }

    /// Learns from one batch: `records` (JSON lines) and `samples` (frames).
    pub(crate) fn batch(&mut self, state: &VisibilityState, snap: &Snapshot, records: &[u8], samples: &[u8], now: u64) {
        self.refresh(snap);
        let max_endpoints = snap.config.visibility.max_endpoints_per_api;
        // The trie's nodes scale with the endpoints it may hold (4 per endpoint, as the
        // inventory's own default).
        let limits = |_: &ApiSpec| Limits { max_endpoints, max_nodes: max_endpoints.saturating_mul(4) };
        let mut n_records = 0;
        let mut n_samples = 0;
        state.with(|all| {
            let super::state::Apis { by_id, dirty } = all;
            for line in records.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let Ok(r) = serde_json::from_slice::<Line<'_>>(line) else { continue };
                let Some((api, hash)) = self.api(snap, &r.api_id) else { continue };
                n_records += 1;
                let st = api_state(by_id, &api.api_id, hash);
                let rel = api.rel_path(&r.path);
                let hit = st.inventory.hit(&r.method, rel, r.response_code, now, &limits(api));
                let guard = match hit.refused {
                    Some(Refusal::EndpointCap) => Some("endpoints"),
                    Some(Refusal::NodeCap) => Some("cardinality"),
                    Some(Refusal::TooDeep) => Some("depth"),
                    Some(Refusal::BadMethod) => Some("method"),
                    None if hit.guard => Some("cardinality"),
                    None => None,
                };
                if let Some(reason) = guard {
                    *st.capped.entry(reason.into()).or_default() += 1;
                }
                let kind = if r.tags.iter().any(|t| t == crate::dataplane::SHADOW_TAG) {
                    FindingKind::Shadow
                } else if r.tags.iter().any(|t| t == crate::dataplane::ZOMBIE_TAG) {
                    FindingKind::Zombie
                } else {
                    continue;
                };
                let path = template_for(api, st, kind, &r.method, rel);
                let key = format!("{} {} {}", kind.label(), r.method, path);
                let example = Example {
                    method: r.method.to_string(),
                    path: rel.to_string(),
                    status: r.response_code,
                    ..Default::default()
                };
                st.note(key, now, || Finding {
                    kind,
                    method: r.method.to_string(),
                    path,
                    drift: None,
                    count: 0,
                    first_seen: now,
                    last_seen: now,
                    example,
                });
                dirty.insert(api.api_id.clone());
            }
            for f in sample::frames(samples) {
                let Some((api, hash)) = self.api(snap, f.api_id) else { continue };
                n_samples += 1;
                let mut chunked = (Vec::new(), Vec::new());
                let Some(x) = exchange(&f, &mut chunked) else { continue };
                let st = api_state(by_id, &api.api_id, hash);
                st.inventory.sample(&x, &limits(api));
                dirty.insert(api.api_id.clone());
                let Some(spec) = api.visibility.spec.as_deref() else { continue };
                let kind = match spec.route(x.method, x.path) {
                    Route::Op(op) => {
                        let mut drifts = Vec::new();
                        spec.drift(op, &x, &mut drifts);
                        let template = spec.operation(op).template.clone();
                        for d in drifts {
                            let kind = serde_json::to_value(d.kind)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default();
                            let key = format!("drift {} {} {} {}", x.method, template, kind, d.location);
                            let detail = DriftDetail { kind, location: d.location, detail: d.detail };
                            st.note(key, now, || Finding {
                                kind: FindingKind::Drift,
                                method: x.method.to_string(),
                                path: template.clone(),
                                drift: Some(detail),
                                count: 0,
                                first_seen: now,
                                last_seen: now,
                                example: example_of(&x, &f),
                            });
                        }
                        if !spec.operation(op).deprecated {
                            continue;
                        }
                        FindingKind::Zombie
                    }
                    _ => FindingKind::Shadow,
                };
                // A shadow or zombie finding (counted from its record) gets this exchange as
                // its example if it has none with bodies yet.
                let path = template_for(api, st, kind, x.method, x.path);
                let key = format!("{} {} {}", kind.label(), x.method, path);
                if let Some(found) = st.findings.get_mut(&key) {
                    if found.example.request.is_none() {
                        found.example = example_of(&x, &f);
                    }
                }
            }
        });
        state.stats.records.fetch_add(n_records, Ordering::Relaxed);
        state.stats.samples.fetch_add(n_samples, Ordering::Relaxed);
    }

    /// The API `api_id` of `snap`, when it learns, and its document's hash.
    fn api<'s>(&self, snap: &'s Snapshot, api_id: &str) -> Option<(&'s ApiSpec, Option<u64>)> {
        let &(i, hash) = self.apis.get(api_id)?;
        let api = snap.apis.get(i)?;
        api.visibility.learn.then_some((api, hash))
    }
}

/// The state of `api_id`, its findings started over if its document changed.
fn api_state<'a>(by_id: &'a mut HashMap<String, ApiState>, api_id: &str, hash: Option<u64>) -> &'a mut ApiState {
    let st = by_id.entry(api_id.to_string()).or_default();
    if st.spec_hash != hash {
        st.findings.clear();
        st.spec_hash = hash;
    }
    st
}

/// The path a finding is listed under: the document's template for a zombie, the inventory's
/// for a shadow request.
fn template_for(api: &ApiSpec, st: &ApiState, kind: FindingKind, method: &str, rel: &str) -> String {
    if kind == FindingKind::Zombie {
        if let Some(spec) = api.visibility.spec.as_deref() {
            if let Route::Op(op) = spec.route(method, rel) {
                return spec.operation(op).template.clone();
            }
        }
    }
    st.inventory.template_of(method, rel).unwrap_or_else(|| rel.to_string())
}

fn doc_hash(doc: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    doc.to_string().hash(&mut h);
    h.finish()
}

fn example_of(x: &Exchange<'_>, f: &Frame<'_>) -> Example {
    let text = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(MAX_EXAMPLE_BYTES)]).into_owned();
    Example {
        method: x.method.to_string(),
        path: x.path.to_string(),
        status: x.status,
        request: Some(text(f.request)),
        response: Some(text(f.response)),
    }
}

/// The exchange a frame holds; a chunked body is decoded into `bufs` as far as it arrived.
fn exchange<'a>(f: &'a Frame<'a>, bufs: &'a mut (Vec<u8>, Vec<u8>)) -> Option<Exchange<'a>> {
    let req = split_wire(f.request)?;
    let mut parts = req.start.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let (resp_headers, resp_body, resp_status) = match split_wire(f.response) {
        Some(w) => {
            let status = w.start.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            (w.headers, w.body, status)
        }
        None => (Vec::new(), &[][..], 0),
    };
    let mut x = Exchange {
        method,
        path: f.path,
        query,
        req_headers: req.headers,
        req_body: req.body,
        req_truncated: f.flags & sample::REQ_CUT != 0,
        status: resp_status,
        resp_headers,
        resp_body,
        resp_truncated: f.flags & sample::RESP_CUT != 0,
    };
    let (rq, rs) = bufs;
    if is_chunked(&x.req_headers) {
        x.req_truncated |= !dechunk(x.req_body, rq);
        x.req_body = rq;
    }
    if is_chunked(&x.resp_headers) {
        x.resp_truncated |= !dechunk(x.resp_body, rs);
        x.resp_body = rs;
    }
    Some(x)
}

fn is_chunked(headers: &[(&str, &str)]) -> bool {
    headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked"))
}

/// Decodes a chunked body into `out`; `false` when it ends before its last chunk.
fn dechunk(mut b: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return false };
        let size = std::str::from_utf8(&b[..eol]).ok().and_then(|s| {
            let hex = s.split(';').next()?.trim();
            usize::from_str_radix(hex, 16).ok()
        });
        let Some(size) = size else { return false };
        b = &b[eol + 2..];
        if size == 0 {
            return true;
        }
        if b.len() < size + 2 {
            out.extend_from_slice(&b[..size.min(b.len())]);
            return false;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_decoded_as_far_as_they_arrived() {
        let mut out = Vec::new();
        assert!(dechunk(b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n", &mut out));
        assert_eq!(out, b"abcde");
        assert!(!dechunk(b"3\r\nabc\r\n5\r\nde", &mut out));
        assert_eq!(out, b"abcde");
        assert!(!dechunk(b"zz\r\n", &mut out));
    }
}
