//! The gateway's health checks, run on the control plane: the admin listener's `/hello` renders
//! them.

use std::sync::atomic::Ordering;

use serde_json::json;

use super::ControlState;

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
    Health {
        status: if healthy { "pass" } else { "warn" },
        checks: vec![config, workers, ebpf, keystore, cluster],
        time: rfc3339_seconds(crate::analytics::clock::WallTime::at(now_us())),
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
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Portcullis API gateway",
        "uptime_seconds": state.started.elapsed().as_secs(),
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_go_rfc3339_utc() {
        let t = crate::analytics::clock::WallTime::at(1_798_729_445_123_456);
        assert_eq!(rfc3339_seconds(t), "2026-12-31T15:04:05Z");
    }
}
