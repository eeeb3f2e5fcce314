//! The gateway's health checks, run on the control plane: the admin listener's `/hello`
//! renders them as it always has, and [`publish`] turns them into the bodies the workers answer
//! Tyk's `/hello` and `/ready` with on the gateway listener (`dataplane::health`), every second
//! and after each reload.
//!
//! The gateway listener is public, so what it shows is the state of each check and counts, never
//! an error text, file name or interface (the admin listener shows those).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::ControlState;
use crate::dataplane::health::{error_body, HealthReplies, VERSION};

/// One check: Tyk's `HealthCheckItem` (apidef/health_check.go:27-33) plus what only the admin
/// listener shows.
pub(crate) struct Check {
    pub name: &'static str,
    /// `pass` or `warn`.
    pub status: &'static str,
    /// Tyk's `componentType`: `system` or `datastore`.
    pub component: &'static str,
    /// What anyone may see: states and counts.
    pub output: String,
    /// The admin listener's `output` when it says more (error texts, interfaces).
    pub detail: Option<String>,
    /// The definitions the snapshot skipped (admin only).
    pub skipped: Option<serde_json::Value>,
}

/// Every check, at one time.
pub(crate) struct Health {
    /// `pass`, or `warn` when the configuration, the workers, the key store or the cluster link
    /// is not as it should be (the XDP gate's absence is a `warn` item but not overall).
    pub status: &'static str,
    pub checks: Vec<Check>,
    /// RFC 3339, UTC, seconds (Go's `time.RFC3339`, which Tyk's items carry).
    pub time: String,
    /// Tyk's readiness: `Err` with its message when not ready.
    pub ready: Result<(), &'static str>,
}

/// Runs the checks (reads published state only: no I/O).
pub(crate) fn gather(state: &ControlState) -> Health {
    let snap = state.reloader.snapshot.load();
    let last_error = state.reloader.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let workers_up = state.workers.iter().filter(|(_, w)| w.driver.get().is_some()).count();
    let check = |name, status, component, output: String| Check {
        name,
        status,
        component,
        output,
        detail: None,
        skipped: None,
    };
    let loaded = format!("generation {}, {} APIs", snap.generation, snap.apis.len());
    let config = match &last_error {
        None if snap.skipped.is_empty() => check("config", "pass", "system", loaded),
        // Refused definitions are a warning; `active: false` ones are listed only.
        None => Check {
            skipped: Some(skipped_json(&snap.skipped)),
            ..check(
                "config",
                if snap.skipped.iter().any(|s| !s.inactive) { "warn" } else { "pass" },
                "system",
                format!("{loaded}, {} definitions skipped", snap.skipped.len()),
            )
        },
        Some(errs) => Check {
            detail: Some(format!("last reload rejected: {}", errs.join("; "))),
            ..check("config", "warn", "system", "last reload rejected; the running configuration is kept".into())
        },
    };
    let workers = check(
        "workers",
        if workers_up == state.workers.len() { "pass" } else { "warn" },
        "system",
        format!("{workers_up} of {} workers running", state.workers.len()),
    );
    let ebpf = match &state.gate {
        Some(g) => Check {
            detail: Some(format!("XDP gate attached: {:?}", g.attached)),
            ..check("ebpf", "pass", "system", "XDP gate attached".into())
        },
        None => {
            let status = if snap.config.ebpf.mode == crate::config::EbpfMode::Off { "pass" } else { "warn" };
            check("ebpf", status, "system", "XDP gate not loaded; bans and deny lists enforced in user space".into())
        }
    };
    let store_problem = state.keys.redis_store().and_then(|r| r.status());
    let name = state.keys.backend_name();
    let keystore = match &store_problem {
        None => check("keystore", "pass", "datastore", format!("{name} key store")),
        Some(why) => Check {
            detail: Some(format!("{name} key store unavailable: {why}")),
            ..check("keystore", "warn", "datastore", format!("{name} key store unavailable"))
        },
    };
    let cluster_problem = (state.cluster_enabled && !state.limits.cluster_ok.load(Ordering::Relaxed))
        .then(|| state.limits.cluster_error.lock().unwrap_or_else(|p| p.into_inner()).clone());
    let cluster = match (&cluster_problem, state.cluster_enabled) {
        (_, false) => {
            check("cluster", "pass", "system", "single node (no [storage] redis): limits are node-wide".into())
        }
        (None, true) => check(
            "cluster",
            "pass",
            "system",
            format!("limits gossiped through redis; {} peers seen", state.limits.peers_seen()),
        ),
        (Some(why), true) => Check {
            detail: Some(format!("redis unavailable, limits are node-local: {why}")),
            ..check("cluster", "warn", "system", "redis unavailable, limits are node-local".into())
        },
    };
    let healthy = last_error.is_none()
        && config.status == "pass"
        && workers_up == state.workers.len()
        && store_problem.is_none()
        && cluster_problem.is_none();
    // Tyk: not ready without its Redis (health_check.go:284-304); its other condition, a
    // successful API load, holds for as long as Portcullis runs (it starts only with one, and a
    // rejected reload keeps it).
    let ready = if store_problem.is_some() { Err("Redis connection not available") } else { Ok(()) };
    Health {
        status: if healthy { "pass" } else { "warn" },
        checks: vec![config, workers, ebpf, keystore, cluster],
        time: rfc3339_seconds(crate::analytics::clock::WallTime::at(now_us())),
        ready,
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// `2006-01-02T15:04:05Z`: Go's `time.RFC3339` of a UTC time.
fn rfc3339_seconds(t: crate::analytics::clock::WallTime) -> String {
    let mut s = String::from_utf8_lossy(&t.rfc3339[..19]).into_owned();
    s.push('Z');
    s
}

/// Definitions a snapshot does not serve, for `/hello` and `/tyk/reload`.
pub(crate) fn skipped_json(skipped: &[crate::config::Skipped]) -> serde_json::Value {
    skipped
        .iter()
        .map(|s| json!({"file": s.file, "api_id": s.api_id, "reason": s.reason, "inactive": s.inactive}))
        .collect()
}

/// The admin listener's `/hello` body: Portcullis' own (its description, `uptime_seconds`, and
/// each check's full output).
pub(crate) fn admin_body(state: &ControlState, h: &Health) -> serde_json::Value {
    let details: serde_json::Map<String, serde_json::Value> = h
        .checks
        .iter()
        .map(|c| {
            let mut item = json!({
                "status": c.status,
                "componentType": c.component,
                "output": c.detail.as_deref().unwrap_or(&c.output),
                "time": h.time,
            });
            if let Some(s) = &c.skipped {
                item["skipped"] = s.clone();
            }
            (c.name.to_string(), item)
        })
        .collect();
    json!({
        "status": h.status,
        "version": VERSION,
        "description": "Portcullis API gateway",
        "uptime_seconds": state.started.elapsed().as_secs(),
        "details": details,
    })
}

/// Tyk's `HealthCheckResponse` (apidef/health_check.go:19-25), fields in its order.
#[derive(Serialize)]
struct TykResponse<'a> {
    status: &'a str,
    version: &'a str,
    description: &'a str,
    /// A Go map: encoded with its keys sorted.
    details: &'a BTreeMap<&'a str, TykItem<'a>>,
}

/// Tyk's `HealthCheckItem` (apidef/health_check.go:27-33), fields in its order.
#[derive(Serialize)]
struct TykItem<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    output: &'a str,
    #[serde(rename = "componentType")]
    component_type: &'a str,
    time: &'a str,
}

/// The bodies the gateway listener answers with: Tyk's JSON as its `json.Encoder` writes it
/// (compact, `<`, `>`, `&` escaped, a newline at the end), from the public outputs only.
pub(crate) fn gateway_replies(h: &Health) -> HealthReplies {
    let details = h
        .checks
        .iter()
        .map(|c| (c.name, TykItem { status: c.status, output: &c.output, component_type: c.component, time: &h.time }))
        .collect::<BTreeMap<_, _>>();
    let body =
        |status, description| go_encode(&TykResponse { status, version: VERSION, description, details: &details });
    HealthReplies {
        // health_check.go:218-257: the overall status of the checks, always 200.
        live: body(h.status, "Tyk GW").into(),
        // health_check.go:307-312: `pass` whenever ready.
        ready: match h.ready {
            Ok(()) => Ok(body("pass", "Tyk GW Ready").into()),
            Err(message) => Err(error_body(message).into()),
        },
    }
}

/// `json.NewEncoder(w).Encode(v)`: compact JSON with HTML-sensitive characters escaped (Go's
/// default `SetEscapeHTML(true)`) and a newline.
fn go_encode(v: &impl Serialize) -> Vec<u8> {
    let json = serde_json::to_string(v).unwrap_or_default();
    let mut out = String::with_capacity(json.len() + 8);
    for ch in json.chars() {
        match ch {
            // Outside strings JSON has none of these; inside, Go writes them escaped.
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('\n');
    out.into_bytes()
}

/// Runs the checks and publishes the gateway listener's bodies.
pub(crate) fn publish(state: &ControlState) {
    state.health.store(Arc::new(gateway_replies(&gather(state))));
}

/// Publishes every second, and at once after a reload, for the life of the process.
pub(crate) async fn publish_loop(state: Arc<ControlState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.reloader.reloaded.notified() => {}
        }
        publish(&state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(status: &'static str, ready: Result<(), &'static str>) -> Health {
        let item = |name, status, component, output: &str| Check {
            name,
            status,
            component,
            output: output.into(),
            detail: Some("admin only: /etc/secret".into()),
            skipped: None,
        };
        Health {
            status,
            checks: vec![
                item("workers", "pass", "system", "2 of 2 workers running"),
                item("keystore", "warn", "datastore", "redis key store unavailable"),
                item("config", "pass", "system", "<1> & <2>"),
            ],
            time: "2026-01-02T15:04:05Z".into(),
            ready,
        }
    }

    /// Tyk's body byte for byte in shape: `HealthCheckResponse` field order, `details` keys
    /// sorted (a Go map), items' fields in `HealthCheckItem` order, Go's HTML escaping, the
    /// encoder's newline (health_check.go:225-262, apidef/health_check.go:19-33).
    #[test]
    fn gateway_bodies_are_tyks_encoding() {
        let r = gateway_replies(&health("warn", Ok(())));
        let live = String::from_utf8(r.live.to_vec()).unwrap();
        let want = format!(
            "{{\"status\":\"warn\",\"version\":\"{VERSION}\",\"description\":\"Tyk GW\",\"details\":{{\
             \"config\":{{\"status\":\"pass\",\"output\":\"\\u003c1\\u003e \\u0026 \\u003c2\\u003e\",\"componentType\":\"system\",\"time\":\"2026-01-02T15:04:05Z\"}},\
             \"keystore\":{{\"status\":\"warn\",\"output\":\"redis key store unavailable\",\"componentType\":\"datastore\",\"time\":\"2026-01-02T15:04:05Z\"}},\
             \"workers\":{{\"status\":\"pass\",\"output\":\"2 of 2 workers running\",\"componentType\":\"system\",\"time\":\"2026-01-02T15:04:05Z\"}}}}}}\n"
        );
        assert_eq!(live, want);
        assert!(!live.contains("admin only"), "the gateway listener shows no admin detail");
        let ready: serde_json::Value = serde_json::from_slice(r.ready.as_ref().unwrap()).unwrap();
        assert_eq!((ready["status"].as_str(), ready["description"].as_str()), (Some("pass"), Some("Tyk GW Ready")));
        assert!(r.ready.as_ref().unwrap().ends_with(b"}\n"));
        let r = gateway_replies(&health("warn", Err("Redis connection not available")));
        assert_eq!(
            r.ready.unwrap_err().as_ref(),
            b"{\"status\":\"error\",\"message\":\"Redis connection not available\"}\n"
        );
    }

    #[test]
    fn times_are_go_rfc3339_utc() {
        let t = crate::analytics::clock::WallTime::at(1_798_729_445_123_456);
        assert_eq!(rfc3339_seconds(t), "2026-12-31T15:04:05Z");
    }
}
