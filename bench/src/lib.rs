//! Fixtures shared by the criterion benches: snapshots with N synthetic APIs, built through the
//! same loader the proxy uses (real `apps/*.json` files in a temporary directory).

use std::path::PathBuf;

use portcullis::config::{Config, Snapshot};
use portcullis::control::load_snapshot;

/// A snapshot with `n` keyless APIs at `/api{i}/v1` (plus a domain API every 10th).
pub fn snapshot_with_apis(n: usize) -> Snapshot {
    let dir: PathBuf = std::env::temp_dir().join(format!("portcullis-bench-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    for i in 0..n {
        let domain = if i % 10 == 9 { format!(r#""domain": "host{i}.example.com","#) } else { String::new() };
        let json = format!(
            r#"{{"api_id": "api{i}", "active": true, "use_keyless": true, {domain}
                "version_data": {{"not_versioned": true}},
                "proxy": {{"listen_path": "/api{i}/v1/", "target_url": "http://127.0.0.1:9/", "strip_listen_path": true}}}}"#
        );
        std::fs::write(dir.join(format!("api{i}.json")), json).expect("write api");
    }
    let mut cfg = Config::default();
    cfg.apps.dir = dir.clone();
    cfg.apps.policies = dir.join("none.json");
    let (snap, errs) = load_snapshot(cfg, 1);
    assert!(errs.is_empty(), "{errs:?}");
    let _ = std::fs::remove_dir_all(&dir);
    snap
}

/// A snapshot of the given API definitions (`(file stem, json)`) and policies file, loaded by the
/// proxy's own loader.
pub fn snapshot_from(apps: &[(&str, String)], policies: &str) -> Snapshot {
    let dir: PathBuf = std::env::temp_dir().join(format!("portcullis-bench-apps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    for (name, json) in apps {
        std::fs::write(dir.join(format!("{name}.json")), json).expect("write api");
    }
    std::fs::write(dir.join("policies.json"), policies).expect("write policies");
    let mut cfg = Config::default();
    cfg.apps.dir = dir.clone();
    cfg.apps.policies = dir.join("policies.json");
    let (snap, errs) = load_snapshot(cfg, 1);
    assert!(errs.is_empty(), "{errs:?}");
    let _ = std::fs::remove_dir_all(&dir);
    snap
}

/// The worker state a request head needs on its way through the phases.
pub struct Worker {
    pub auth: portcullis::auth::WorkerAuth,
    pub limiter: portcullis::limit::Limiter,
    spans: Vec<portcullis_http1::HeaderSpan>,
    path: String,
}

impl Default for Worker {
    fn default() -> Self {
        Worker {
            auth: portcullis::auth::WorkerAuth::detached(Default::default()),
            limiter: portcullis::limit::Limiter::new(portcullis::limit::LimiterConfig { max_keys: 1000 }, 0.0),
            spans: Vec::new(),
            path: String::new(),
        }
    }
}

/// What a worker does with a request head before forwarding it: parse it once, then run the
/// request phases (route, access, authenticate, quota, rate, transform, upstream head) with the
/// clock at `now`; the upstream head goes to `out`. The outcome (routed, or why not).
pub fn prepare(snap: &Snapshot, w: &mut Worker, req: &[u8], now: u64, out: &mut Vec<u8>) -> Prepared {
    use portcullis::dataplane::phase::{start, ClientCtx, Env, Outcome};
    let head = match portcullis_http1::parse_request(req, 100, &mut w.spans) {
        Ok(Some(h)) => h,
        Ok(None) => return Prepared::Partial,
        Err(_) => return Prepared::Refused,
    };
    let view = head.view(req, &w.spans);
    let ctx = ClientCtx { client_ip: "203.0.113.9", client_addr: [203, 0, 113, 9].into(), tls_certs: None };
    let mut env = Env {
        client: &ctx,
        auth: &mut w.auth,
        limiter: &mut w.limiter,
        now: &|| now,
        request_id: &|| *b"0123456789abcdef0123456789abcdef",
        pick: &|_, _| Some(0),
    };
    match start(&view, snap, &mut w.path, &mut env, out) {
        Ok((_, Outcome::Routed(r))) => Prepared::Routed(r.meta),
        Ok(_) | Err(_) => Prepared::Refused,
    }
}

/// See [`prepare`].
#[derive(Debug)]
pub enum Prepared {
    Partial,
    Routed(portcullis_http1::RequestMeta),
    Refused,
}
