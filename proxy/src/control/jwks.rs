//! JWKS documents for JWT APIs whose `jwt_source` is a URL: fetched when the snapshot is built
//! and then refreshed on the control plane every `[auth] jwks_refresh_secs` (every 10 s while a
//! fetch keeps failing); workers read the current key set through an `ArcSwap`. Must not: run on
//! a worker; hold a response larger than [`MAX_BYTES`].

use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::auth::jwt::KeySet;
use crate::config::Snapshot;

/// Largest JWKS document accepted.
pub const MAX_BYTES: u64 = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(3);

/// Blocking GET of a JWKS URL (control plane, or `portcullis check`).
pub fn http_fetch(url: &str) -> Result<Vec<u8>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(TIMEOUT)).build().into();
    let resp = agent.get(url).call().map_err(|e| format!("GET {url}: {e}"))?;
    let mut body = Vec::new();
    resp.into_body().into_reader().take(MAX_BYTES + 1).read_to_end(&mut body).map_err(|e| format!("GET {url}: {e}"))?;
    if body.len() as u64 > MAX_BYTES {
        return Err(format!("GET {url}: document larger than {MAX_BYTES} bytes"));
    }
    Ok(body)
}

/// Refreshes every JWKS of the current snapshot, forever (control plane task).
pub async fn refresh_loop(snapshot: Arc<ArcSwap<Snapshot>>) {
    let mut last_ok: Vec<(String, Instant)> = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let snap = snapshot.load_full();
        let every = Duration::from_secs(snap.config.auth.jwks_refresh_secs.max(1));
        for api in &snap.apis {
            let Some(jwt) = &api.auth.jwt else { continue };
            let Some(url) = jwt.jwks_url.clone() else {
                continue;
            };
            let fresh = !jwt.keys.load().is_empty() && last_ok.iter().any(|(u, t)| *u == url && t.elapsed() < every);
            if fresh {
                continue;
            }
            let family = jwt.family;
            let fetch_url = url.clone();
            let r =
                tokio::task::spawn_blocking(move || http_fetch(&fetch_url).and_then(|b| KeySet::from_jwks(family, &b)))
                    .await;
            match r {
                Ok(Ok(keys)) => {
                    tracing::debug!(api_id = %api.api_id, %url, keys = keys.len(), "JWKS refreshed");
                    jwt.keys.store(Arc::new(keys));
                    last_ok.retain(|(u, _)| *u != url);
                    last_ok.push((url, Instant::now()));
                }
                Ok(Err(e)) => {
                    tracing::warn!(api_id = %api.api_id, error = %e, "JWKS refresh failed; keeping the last keys")
                }
                Err(e) => tracing::warn!(error = %e, "JWKS refresh task failed"),
            }
        }
    }
}
