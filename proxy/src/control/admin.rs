//! Admin HTTP API on its own listener (hyper on the control plane's tokio runtime).
//!
//! Open: `GET /hello` (Tyk-style health JSON, always 200), `GET /metrics`. Behind the admin
//! secret (`X-Tyk-Authorization: <secret>` or `Authorization: Bearer <secret>`, compared in
//! constant time; an empty secret disables them): `GET /tyk/reload` and `/tyk/reload/group`
//! (also `POST`; both reload this node only), `/tyk/apis` and `/tyk/policies` (Tyk's CRUD,
//! `definitions.rs`), `/tyk/keys` (`keys.rs`), `/api/bans`, `/api/connections`,
//! `/api/analytics/search` and `/api/analytics/aggregate` (`analytics.rs`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{render_metrics, ControlState, ReloadOutcome};

type Resp = Response<Full<Bytes>>;

use super::json_response;

/// Accepts admin connections until the listener fails (the runtime ends it on shutdown).
pub async fn serve_admin(listener: tokio::net::TcpListener, state: Arc<ControlState>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        // Read per connection, so a reload applies to the next connection.
        let head_timeout =
            std::time::Duration::from_millis(state.reloader.snapshot.load().config.admin.header_read_timeout_ms);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&state), req));
            let io = hyper_util::rt::TokioIo::new(stream);
            // hyper counts the head's time from when it starts waiting for a request (a new
            // connection, or the next request on a kept-alive one) and closes the connection
            // when the head is not complete by then: a slowloris client holds no admin
            // connection open for long. The timeout needs a timer (without one, hyper has none).
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(head_timeout)
                .serve_connection(io, svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection error");
            }
        });
    }
}

fn authorised(state: &ControlState, req: &Request<Incoming>) -> Result<(), Resp> {
    let secret = state.reloader.snapshot.load().config.admin.secret.clone();
    if secret.is_empty() {
        return Err(json_response(
            StatusCode::FORBIDDEN,
            json!({"status": "error", "message": "admin API writes are disabled: set [admin] secret"}),
        ));
    }
    let h = req.headers();
    let given = h
        .get("x-tyk-authorization")
        .map(|v| v.as_bytes())
        .or_else(|| h.get(hyper::header::AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")))
        .unwrap_or_default();
    if bool::from(given.ct_eq(secret.as_bytes())) {
        Ok(())
    } else {
        Err(json_response(
            StatusCode::FORBIDDEN,
            json!({"status": "error", "message": "Attempted administrative access with invalid or missing key!"}),
        ))
    }
}

async fn handle(state: Arc<ControlState>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let method = req.method().clone();
    let resp = match (&method, path.as_str()) {
        (&Method::GET, "/hello") => hello(&state),
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(render_metrics(&state))));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::GET | &Method::POST, "/tyk/reload" | "/tyk/reload/group") => match authorised(&state, &req) {
            Err(r) => r,
            Ok(()) => reload(&state).await,
        },
        (_, p) if p == "/tyk/apis" || p.starts_with("/tyk/apis/") => match authorised(&state, &req) {
            Err(r) => r,
            Ok(()) => super::definitions::apis(&state, req, p).await,
        },
        (_, p) if p == "/tyk/policies" || p.starts_with("/tyk/policies/") => match authorised(&state, &req) {
            Err(r) => r,
            Ok(()) => super::definitions::policies(&state, req, p).await,
        },
        (_, p) if p == "/tyk/keys" || p.starts_with("/tyk/keys/") => match authorised(&state, &req) {
            Err(r) => r,
            Ok(()) => super::keys::handle(&state, req, p).await,
        },
        (&Method::DELETE, p) if p.starts_with("/tyk/cache/") => match authorised(&state, &req) {
            Err(r) => r,
            Ok(()) => invalidate_cache(&state, &p["/tyk/cache/".len()..]),
        },
        (&Method::GET, "/api/analytics/search" | "/api/analytics/aggregate") => match authorised(&state, &req) {
            Err(r) => r,
            Ok(()) => super::analytics::handle(&state, &path, req.uri().query().unwrap_or_default()).await,
        },
        (_, p) if p.starts_with("/api/visibility/") => match authorised(&state, &req) {
            Err(r) => r,
            Ok(()) => super::visibility::handle(&state, req, p).await,
        },
        (&Method::GET, "/api/connections") => match authorised(&state, &req) {
            Err(r) => r,
            Ok(()) => connections(&state),
        },
        (&Method::GET, "/api/bans") => match authorised(&state, &req) {
            Err(r) => r,
            Ok(()) => list_bans(&state),
        },
        (&Method::POST, "/api/bans") => match authorised(&state, &req) {
            Err(r) => r,
            Ok(()) => add_ban(&state, req).await,
        },
        (&Method::DELETE, p) if p.starts_with("/api/bans/") => match authorised(&state, &req) {
            Err(r) => r,
            Ok(()) => {
                let target = p["/api/bans/".len()..]
                    .replace("%2F", "/")
                    .replace("%2f", "/")
                    .replace("%3A", ":")
                    .replace("%3a", ":");
                match state.bans.unban(&target) {
                    Ok(b) => json_response(
                        StatusCode::OK,
                        json!({"status": "ok", "action": "deleted", "ip": b.net.to_string()}),
                    ),
                    Err(e @ crate::bans::BanError::NotFound(_)) => {
                        json_response(StatusCode::NOT_FOUND, json!({"status": "error", "message": e.to_string()}))
                    }
                    Err(e) => {
                        json_response(StatusCode::BAD_REQUEST, json!({"status": "error", "message": e.to_string()}))
                    }
                }
            }
        },
        _ => json_response(StatusCode::NOT_FOUND, json!({"status": "error", "message": "not found"})),
    };
    Ok(resp)
}

fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Recent client connections as the kernel saw them (most recent first).
fn connections(state: &ControlState) -> Resp {
    let enabled = state.gate.as_ref().is_some_and(|g| g.telemetry_cgroup.is_some());
    let list: Vec<_> = state
        .telemetry
        .recent()
        .iter()
        .map(|c| {
            json!({
                "client_ip": c.client.to_string(),
                "client_port": c.client_port,
                "local_port": c.local_port,
                "start_ms": c.start.map(unix_ms),
                "end_ms": unix_ms(c.end),
                "bytes_in": c.bytes_in,
                "bytes_out": c.bytes_out,
                "srtt_us": c.srtt.as_micros() as u64,
                "retransmits": c.retransmits,
                "close_state": c.close_state,
            })
        })
        .collect();
    json_response(StatusCode::OK, json!({"telemetry": enabled, "connections": list}))
}

fn ban_json(b: &crate::bans::Ban) -> serde_json::Value {
    let now = std::time::Instant::now();
    json!({
        "ip": b.net.to_string(),
        "reason": b.reason,
        "created": b.created.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "expires_in": b.expires.map(|e| e.saturating_duration_since(now).as_secs_f64()),
        "source": if b.from_config { "config" } else { "api" },
    })
}

fn list_bans(state: &ControlState) -> Resp {
    let bans: Vec<_> = state.bans.list().iter().map(ban_json).collect();
    json_response(
        StatusCode::OK,
        json!({"bans": bans, "enforced_by": if state.gate.is_some() { "xdp+userspace" } else { "userspace" }}),
    )
}

/// `POST /api/bans` `{"ip": "203.0.113.7" | "10.0.0.0/8", "ttl": seconds (0 = until removed), "reason": text}`.
async fn add_ban(state: &ControlState, req: Request<Incoming>) -> Resp {
    use http_body_util::BodyExt;
    let bad = |m: String| json_response(StatusCode::BAD_REQUEST, json!({"status": "error", "message": m}));
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad(format!("cannot read body: {e}")),
    };
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad(format!("body is not JSON: {e}")),
    };
    let Some(ip) = v.get("ip").and_then(|x| x.as_str()) else {
        return bad("field `ip` (string) is required".into());
    };
    let ttl = match v.get("ttl") {
        None => std::time::Duration::ZERO,
        Some(t) => match ban_ttl(t) {
            Some(d) => d,
            None => {
                return bad(format!(
                    "field `ttl` must be a number of seconds from 0 to {} (0 = until removed), got {t}",
                    crate::bans::MAX_BAN_TTL_SECS
                ))
            }
        },
    };
    let reason = v.get("reason").and_then(|x| x.as_str()).unwrap_or("admin API");
    match state.bans.ban(ip, ttl, reason) {
        Ok(b) => json_response(StatusCode::OK, json!({"status": "ok", "action": "added", "ban": ban_json(&b)})),
        Err(e) => bad(e.to_string()),
    }
}

/// A ban's `ttl` (JSON seconds) as a duration: `None` unless it is a number from 0 to
/// [`crate::bans::MAX_BAN_TTL_SECS`] (`1e30` or `u64::MAX` made `Duration::from_secs_f64` panic).
fn ban_ttl(t: &serde_json::Value) -> Option<std::time::Duration> {
    let secs = t.as_f64().filter(|s| s.is_finite() && (0.0..=crate::bans::MAX_BAN_TTL_SECS as f64).contains(s))?;
    std::time::Duration::try_from_secs_f64(secs).ok()
}

/// Portcullis' own health body (the checks: `health.rs`, which also publishes Tyk's bodies for
/// the gateway listener).
fn hello(state: &ControlState) -> Resp {
    json_response(StatusCode::OK, super::health::admin_body(state, &super::health::gather(state)))
}

/// `/tyk/reload` and `/tyk/reload/group`: Tyk's `{"status": "ok", "message": ""}` (api.go
/// resetHandler, groupResetHandler) with what the reload did. Always waits for the reload (Tyk
/// does with `?block=true`). The group reload reloads this node only: no channel tells other
/// nodes to reload (Tyk publishes on Redis); reload each node.
async fn reload(state: &Arc<ControlState>) -> Resp {
    let st = Arc::clone(state);
    let outcome = match tokio::task::spawn_blocking(move || st.reloader.reload()).await {
        Ok(o) => o,
        Err(e) => ReloadOutcome::Rejected { errors: vec![format!("reload task failed: {e}")] },
    };
    match outcome {
        ReloadOutcome::Applied { generation, apis, restart_needed, skipped } => json_response(
            StatusCode::OK,
            json!({"status": "ok", "message": "", "generation": generation, "apis": apis,
                   "restart_needed": restart_needed, "skipped": super::health::skipped_json(&skipped)}),
        ),
        ReloadOutcome::Rejected { errors } => json_response(
            StatusCode::BAD_REQUEST,
            json!({"status": "error", "message": "reload rejected; the running configuration is kept", "errors": errors}),
        ),
    }
}

/// `DELETE /tyk/cache/{api_id}`: every worker stops serving the API's cached responses (its
/// versions' too), as Tyk's `invalidateCacheHandler` deletes its `cache-<api_id>` keys
/// (gateway/api.go:3099-3124): `{"status": "ok", "message": "cache invalidated"}`, also for an
/// API that caches nothing, as Tyk's answer does not depend on keys being there. This node's
/// workers only: each node of a cluster keeps its own entries.
fn invalidate_cache(state: &ControlState, api_id: &str) -> Resp {
    let snap = state.reloader.snapshot.load();
    for i in 0..snap.apis.len() + snap.versions.len() {
        let spec = snap.api(i as crate::router::ApiIndex);
        if spec.api_id == api_id {
            if let Some(c) = &spec.cache {
                c.epoch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    json_response(StatusCode::OK, json!({"status": "ok", "message": "cache invalidated"}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_ttl_range() {
        let secs = |v: serde_json::Value| ban_ttl(&v).map(|d| d.as_secs_f64());
        assert_eq!(secs(json!(0)), Some(0.0));
        assert_eq!(secs(json!(1.5)), Some(1.5));
        assert_eq!(secs(json!(crate::bans::MAX_BAN_TTL_SECS)), Some(crate::bans::MAX_BAN_TTL_SECS as f64));
        let too_long: serde_json::Value = serde_json::from_str("1e30").unwrap();
        for bad in
            [too_long, json!(u64::MAX), json!(crate::bans::MAX_BAN_TTL_SECS + 1), json!(-1), json!("60"), json!(null)]
        {
            assert_eq!(ban_ttl(&bad), None, "{bad}");
        }
    }
}
