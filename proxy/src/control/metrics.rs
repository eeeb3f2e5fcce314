//! Prometheus text exposition of the workers' published counters plus control-plane state.
//!
//! Names follow Prometheus conventions (base units, `_total` for counters); the request duration
//! histogram is OTel's `http_server_request_duration_seconds` with `api`, `method`, `code` labels
//! (the API id, never a raw path, so cardinality is bounded by the number of APIs).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::dataplane::stats::{Histogram, DURATION_BUCKETS};

use super::ControlState;

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every metric.
pub fn render_metrics(state: &ControlState) -> String {
    let mut out = String::with_capacity(8192);
    let published: Vec<_> = state.workers.iter().map(|(id, w)| (*id, w, w.published.load_full())).collect();

    // Request durations, summed over workers.
    let mut hists: BTreeMap<(String, &'static str, u16), Histogram> = BTreeMap::new();
    let mut bytes: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (_, _, s) in &published {
        for (api, a) in &s.apis {
            let b = bytes.entry(api.to_string()).or_default();
            b.0 += a.request_bytes;
            b.1 += a.response_bytes;
            for ((method, code), h) in &a.durations {
                let t = hists.entry((api.to_string(), method.as_str(), *code)).or_default();
                for (d, s) in t.buckets.iter_mut().zip(h.buckets.iter()) {
                    *d += s;
                }
                t.count += h.count;
                t.sum_seconds += h.sum_seconds;
            }
        }
    }
    header(
        &mut out,
        "http_server_request_duration_seconds",
        "histogram",
        "Duration of HTTP requests served, from first request byte to last response byte.",
    );
    for ((api, method, code), h) in &hists {
        let labels = format!("api=\"{}\",method=\"{method}\",code=\"{code}\"", esc(api));
        let mut cum = 0;
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            cum += h.buckets[i];
            let _ = writeln!(out, "http_server_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cum}");
        }
        cum += h.buckets[DURATION_BUCKETS.len()];
        let _ = writeln!(out, "http_server_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cum}");
        let _ = writeln!(out, "http_server_request_duration_seconds_sum{{{labels}}} {}", h.sum_seconds);
        let _ = writeln!(out, "http_server_request_duration_seconds_count{{{labels}}} {}", h.count);
    }
    header(
        &mut out,
        "portcullis_request_bytes_total",
        "counter",
        "Request bytes received from clients (heads and bodies), by API.",
    );
    for (api, (i, _)) in &bytes {
        let _ = writeln!(out, "portcullis_request_bytes_total{{api=\"{}\"}} {i}", esc(api));
    }
    header(
        &mut out,
        "portcullis_response_bytes_total",
        "counter",
        "Response bytes sent to clients (heads and bodies), by API.",
    );
    for (api, (_, o)) in &bytes {
        let _ = writeln!(out, "portcullis_response_bytes_total{{api=\"{}\"}} {o}", esc(api));
    }

    // Per worker.
    header(&mut out, "portcullis_worker_info", "gauge", "One per worker: the CPU it is pinned to and its io driver.");
    for (id, w, _) in &published {
        let cpu = w.cpu.get().copied().flatten().map_or_else(|| "none".to_string(), |c| c.to_string());
        let driver = w.driver.get().copied().unwrap_or("starting");
        let _ = writeln!(out, "portcullis_worker_info{{worker=\"{id}\",cpu=\"{cpu}\",driver=\"{driver}\"}} 1");
    }
    header(&mut out, "portcullis_worker_open_connections", "gauge", "Client connections open on each worker.");
    for (id, w, _) in &published {
        let _ = writeln!(
            out,
            "portcullis_worker_open_connections{{worker=\"{id}\"}} {}",
            w.open_connections.load(Ordering::Relaxed)
        );
    }
    type Field = fn(&crate::dataplane::stats::LocalStats) -> u64;
    let counters: [(&str, &str, &str, Field); 26] = [
        (
            "portcullis_tls_handshakes_total",
            "counter",
            "TLS handshakes completed on the TLS listener ([tls] listen).",
            |s| s.tls_handshakes,
        ),
        (
            "portcullis_tls_handshake_failures_total",
            "counter",
            "TLS handshakes on the TLS listener that failed: refused by either side, malformed, or timed out.",
            |s| s.tls_handshake_failures,
        ),
        (
            "portcullis_analytics_records_queued_total",
            "counter",
            "Request records each worker handed to the analytics pump.",
            |s| s.analytics.queued,
        ),
        ("portcullis_limit_tracked_keys", "gauge", "Rate-limit keys (buckets) each worker tracks.", |s| {
            s.limiter.tracked_keys
        }),
        ("portcullis_limit_evicted_total", "counter", "Buckets evicted at [limits] max_keys_per_worker.", |s| {
            s.limiter.evicted
        }),
        ("portcullis_limit_gossip_sent_total", "counter", "Gossip rounds in which a worker reported deltas.", |s| {
            s.limiter.gossip_sent
        }),
        (
            "portcullis_limit_gossip_reports_dropped_total",
            "counter",
            "Gossip reports a worker dropped because the hub's queue was full.",
            |s| s.limiter.gossip_dropped,
        ),
        (
            "portcullis_limit_gossip_received_total",
            "counter",
            "Gossip batches a worker applied (from other workers and nodes).",
            |s| s.limiter.gossip_received,
        ),
        (
            "portcullis_auth_denied_total",
            "counter",
            "Requests refused by IP rules, path lists or authentication (401/403).",
            |s| s.auth_denied,
        ),
        (
            "portcullis_key_lookups_total",
            "counter",
            "Session cache misses sent to the key store by each worker.",
            |s| s.key_lookups,
        ),
        ("portcullis_key_lookup_errors_total", "counter", "Key store lookups that failed or timed out (503).", |s| {
            s.key_lookup_errors
        }),
        ("portcullis_auth_cached_sessions", "gauge", "Sessions held in each worker's cache.", |s| s.cached_sessions),
        ("portcullis_worker_requests_total", "counter", "Requests answered by each worker.", |s| s.requests),
        (
            "portcullis_worker_connections_accepted_total",
            "counter",
            "Client connections accepted by each worker.",
            |s| s.connections_accepted,
        ),
        (
            "portcullis_worker_connections_refused_total",
            "counter",
            "Client connections closed at once because the worker was at max_connections_per_worker.",
            |s| s.connections_refused,
        ),
        (
            "portcullis_upstream_connections_opened_total",
            "counter",
            "Upstream connections opened (pool misses).",
            |s| s.upstream_connections_opened,
        ),
        (
            "portcullis_response_bodies_spliced_total",
            "counter",
            "Response bodies moved from upstream to client with splice(2), never copied through the proxy.",
            |s| s.bodies_spliced,
        ),
        ("portcullis_response_bytes_spliced_total", "counter", "Body bytes moved with splice(2).", |s| s.bytes_spliced),
        (
            "portcullis_response_cache_hits_total",
            "counter",
            "Responses served from Tyk's response cache (cache_options) without asking the upstream.",
            |s| s.cache_hits,
        ),
        ("portcullis_response_cache_stores_total", "counter", "Upstream responses kept in the response cache.", |s| {
            s.cache_stores
        }),
        (
            "portcullis_upstream_connect_errors_total",
            "counter",
            "Upstream connection attempts that failed (502).",
            |s| s.upstream_connect_errors,
        ),
        (
            "portcullis_upstream_timeouts_total",
            "counter",
            "Upstream connects or responses that timed out (504).",
            |s| s.upstream_timeouts,
        ),
        (
            "portcullis_upstream_idle_connections",
            "gauge",
            "Idle keep-alive upstream connections pooled by each worker.",
            |s| s.upstream_idle,
        ),
        (
            "portcullis_upstream_queued_total",
            "counter",
            "Requests that waited for an upstream connection (all upstream_max_connections in use).",
            |s| s.upstream_queued,
        ),
        (
            "portcullis_upstream_queue_timeouts_total",
            "counter",
            "Requests answered 503 after waiting upstream_queue_timeout_ms for an upstream connection.",
            |s| s.upstream_queue_timeouts,
        ),
        (
            "portcullis_upstream_waiting_requests",
            "gauge",
            "Requests waiting for an upstream connection now, per worker.",
            |s| s.upstream_waiting,
        ),
    ];
    for (name, kind, help, f) in counters {
        header(&mut out, name, kind, help);
        for (id, _, s) in &published {
            let _ = writeln!(out, "{name}{{worker=\"{id}\"}} {}", f(s));
        }
    }

    // Analytics.
    let queue_full: u64 = published.iter().map(|(_, _, s)| s.analytics.dropped).sum();
    header(&mut out, "portcullis_analytics_dropped_total", "counter", "Request records lost, by reason.");
    let _ = writeln!(out, "portcullis_analytics_dropped_total{{reason=\"queue_full\"}} {queue_full}");
    let sinks = &state.analytics.sinks;
    header(
        &mut out,
        "portcullis_analytics_sink_dropped_total",
        "counter",
        "Request records a sink lost, by reason: spool_full, queue_full, no_spool, unreadable.",
    );
    for st in sinks {
        for (reason, v) in [
            ("spool_full", &st.dropped_spool_full),
            ("queue_full", &st.dropped_queue_full),
            ("no_spool", &st.dropped_no_spool),
            ("unreadable", &st.dropped_unreadable),
        ] {
            let _ = writeln!(
                out,
                "portcullis_analytics_sink_dropped_total{{sink=\"{}\",reason=\"{reason}\"}} {}",
                st.name,
                v.load(Ordering::Relaxed)
            );
        }
    }
    type SinkStat = fn(&crate::analytics::sink::SinkStats) -> &std::sync::atomic::AtomicU64;
    let per_sink: [(&str, &str, &str, SinkStat); 7] = [
        ("portcullis_analytics_records_written_total", "counter", "Request records a sink delivered.", |s| &s.written),
        (
            "portcullis_analytics_written_bytes_total",
            "counter",
            "Bytes (as JSON lines) of the records a sink delivered.",
            |s| &s.bytes,
        ),
        ("portcullis_analytics_sink_errors_total", "counter", "Failed deliveries (the batch was spooled).", |s| {
            &s.errors
        }),
        ("portcullis_analytics_spooled_total", "counter", "Request records put in a sink's disk spool.", |s| {
            &s.spooled
        }),
        ("portcullis_analytics_spool_records", "gauge", "Request records in a sink's disk spool now.", |s| {
            &s.spool_records
        }),
        ("portcullis_analytics_spool_bytes", "gauge", "Bytes in a sink's disk spool now.", |s| &s.spool_bytes),
        ("portcullis_analytics_rotations_total", "counter", "Rotations of a file sink's file.", |s| &s.rotations),
    ];
    for (name, kind, help, f) in per_sink {
        header(&mut out, name, kind, help);
        for st in sinks {
            let _ = writeln!(out, "{name}{{sink=\"{}\"}} {}", st.name, f(st).load(Ordering::Relaxed));
        }
    }

    // Rate limits.
    header(
        &mut out,
        "portcullis_limit_decisions_total",
        "counter",
        "Rate-limit decisions by outcome (requests with at least one limit).",
    );
    for (id, _, s) in &published {
        let _ = writeln!(
            out,
            "portcullis_limit_decisions_total{{worker=\"{id}\",outcome=\"admitted\"}} {}",
            s.limiter.admitted
        );
        let _ = writeln!(
            out,
            "portcullis_limit_decisions_total{{worker=\"{id}\",outcome=\"rejected\"}} {}",
            s.limiter.rejected
        );
    }
    header(
        &mut out,
        "portcullis_limit_gossip_lag_seconds",
        "gauge",
        "Age of the newest gossip a worker applied in its last round.",
    );
    for (id, _, s) in &published {
        let _ = writeln!(out, "portcullis_limit_gossip_lag_seconds{{worker=\"{id}\"}} {}", s.limiter.gossip_lag_secs);
    }
    let h = &state.limits;
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    for (name, kind, help, v) in [
        (
            "portcullis_limit_gossip_relayed_total",
            "counter",
            "Gossip batches the hub passed to workers.",
            ld(&h.relayed_total),
        ),
        (
            "portcullis_limit_gossip_dropped_total",
            "counter",
            "Gossip batches or reports dropped because a queue was full.",
            ld(&h.dropped_total),
        ),
        (
            "portcullis_cluster_messages_published_total",
            "counter",
            "Limiter messages this node published to Redis.",
            ld(&h.cluster_published_total),
        ),
        (
            "portcullis_cluster_messages_received_total",
            "counter",
            "Limiter messages received from other nodes.",
            ld(&h.cluster_received_total),
        ),
        (
            "portcullis_cluster_redis_errors_total",
            "counter",
            "Failed Redis operations of the cluster gossip (limits are node-local meanwhile).",
            ld(&h.cluster_errors_total),
        ),
        ("portcullis_cluster_peers", "gauge", "Other nodes heard from in the last 10 s.", h.peers_seen() as u64),
        (
            "portcullis_limit_bans_total",
            "counter",
            "Client IPs banned by the abuse detector (rate-limit rejections over the threshold).",
            ld(&h.bans_total),
        ),
    ] {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }

    // Bans and the XDP gate.
    header(
        &mut out,
        "portcullis_connections_banned_total",
        "counter",
        "Connections and requests refused in user space because the client is banned.",
    );
    for (id, _, s) in &published {
        let _ = writeln!(out, "portcullis_connections_banned_total{{worker=\"{id}\"}} {}", s.connections_banned);
    }
    // The TLS listener's certificates: the earliest expiry among them.
    if let Some(expiry) = snap_tls_expiry(state) {
        header(
            &mut out,
            "portcullis_tls_certificate_expiry_timestamp_seconds",
            "gauge",
            "When the first of the TLS listener's certificates expires (notAfter, Unix seconds).",
        );
        let _ = writeln!(out, "portcullis_tls_certificate_expiry_timestamp_seconds {expiry}");
    }
    header(
        &mut out,
        "portcullis_bans_active",
        "gauge",
        "Bans in force (addresses and networks, including [ebpf] deny_cidrs).",
    );
    let _ = writeln!(out, "portcullis_bans_active {}", state.bans.list().len());
    header(
        &mut out,
        "portcullis_bans_issued_total",
        "counter",
        "Bans issued through the admin API or the abuse detector.",
    );
    let _ = writeln!(out, "portcullis_bans_issued_total {}", state.bans.issued_total.load(Ordering::Relaxed));
    header(
        &mut out,
        "portcullis_ebpf_loaded",
        "gauge",
        "1 when the XDP gate is loaded and attached, 0 when enforcement is in user space.",
    );
    let _ = writeln!(out, "portcullis_ebpf_loaded {}", u8::from(state.gate.is_some()));
    if let Some(g) = &state.gate {
        let c = g.counters();
        header(
            &mut out,
            "portcullis_xdp_packets_total",
            "counter",
            "Packets seen by the XDP gate, by action and reason.",
        );
        let _ = writeln!(out, "portcullis_xdp_packets_total{{action=\"pass\",reason=\"\"}} {}", c[0]);
        let _ = writeln!(out, "portcullis_xdp_packets_total{{action=\"drop\",reason=\"banned\"}} {}", c[1]);
        let _ = writeln!(out, "portcullis_xdp_packets_total{{action=\"drop\",reason=\"deny\"}} {}", c[2]);
        let _ = writeln!(out, "portcullis_xdp_packets_total{{action=\"drop\",reason=\"syn_rate\"}} {}", c[3]);
        header(&mut out, "portcullis_xdp_dropped_total", "counter", "Packets dropped by the XDP gate, by reason.");
        for (i, r) in [(1, "banned"), (2, "deny"), (3, "syn_rate")] {
            let _ = writeln!(out, "portcullis_xdp_dropped_total{{reason=\"{r}\"}} {}", c[i]);
        }
    }

    // Per-connection telemetry.
    let (rtt, retrans, closed, _) = state.telemetry.snapshot();
    let hist = |out: &mut String, name: &str, bounds: &[f64], h: &super::telemetry::Hist| {
        for (i, b) in bounds.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", h.counts.get(i).copied().unwrap_or(0));
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}", h.sum);
        let _ = writeln!(out, "{name}_count {}", h.count);
    };
    header(
        &mut out,
        "portcullis_tcp_rtt_seconds",
        "histogram",
        "Smoothed RTT of client connections when they closed (eBPF sock_ops).",
    );
    hist(&mut out, "portcullis_tcp_rtt_seconds", &super::telemetry::RTT_BUCKETS, &rtt);
    header(
        &mut out,
        "portcullis_tcp_retransmits",
        "histogram",
        "Retransmitted segments per client connection (eBPF sock_ops).",
    );
    hist(&mut out, "portcullis_tcp_retransmits", &super::telemetry::RETRANS_BUCKETS, &retrans);
    header(
        &mut out,
        "portcullis_tcp_connections_closed_total",
        "counter",
        "Client connections closed, by the TCP state they closed from.",
    );
    for (state_name, n) in closed {
        let _ = writeln!(out, "portcullis_tcp_connections_closed_total{{state=\"{state_name}\"}} {n}");
    }

    // Control plane.
    let snap = state.reloader.snapshot.load();
    header(&mut out, "portcullis_apis_loaded", "gauge", "APIs in the running configuration.");
    let _ = writeln!(out, "portcullis_apis_loaded {}", snap.apis.len());
    header(
        &mut out,
        "portcullis_config_generation",
        "gauge",
        "Generation of the running configuration (1 at start, +1 per applied reload).",
    );
    let _ = writeln!(out, "portcullis_config_generation {}", snap.generation);
    header(&mut out, "portcullis_config_reloads_total", "counter", "Reload attempts by result.");
    let _ = writeln!(
        out,
        "portcullis_config_reloads_total{{result=\"ok\"}} {}",
        state.reloader.ok_total.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "portcullis_config_reloads_total{{result=\"error\"}} {}",
        state.reloader.error_total.load(Ordering::Relaxed)
    );
    visibility(&mut out, &state.visibility);
    out
}

/// API visibility: findings, inventory size and guards per API, and the thread's counters.
fn visibility(out: &mut String, v: &crate::visibility::VisibilityState) {
    use crate::visibility::state::FindingKind;
    let apis = v.metrics();
    header(out, "portcullis_api_findings_total", "counter", "Requests found shadow, zombie or drifting, by API.");
    for a in &apis {
        let api = &a.api;
        for kind in [FindingKind::Shadow, FindingKind::Zombie, FindingKind::Drift] {
            let n = a.findings.get(&kind).copied().unwrap_or(0);
            let _ = writeln!(out, "portcullis_api_findings_total{{api=\"{api}\",kind=\"{}\"}} {n}", kind.label());
        }
    }
    header(
        out,
        "portcullis_visibility_endpoints",
        "gauge",
        "Endpoints (method and path template) in an API's inventory.",
    );
    for a in &apis {
        let _ = writeln!(out, "portcullis_visibility_endpoints{{api=\"{}\"}} {}", a.api, a.endpoints);
    }
    header(
        out,
        "portcullis_visibility_capped_total",
        "counter",
        "Times a visibility guard fired, by API and reason: endpoints (the cap), cardinality, findings.",
    );
    for a in &apis {
        for (reason, n) in &a.capped {
            let _ = writeln!(out, "portcullis_visibility_capped_total{{api=\"{}\",reason=\"{reason}\"}} {n}", a.api);
        }
    }
    let s = &v.stats;
    for (name, help, value) in [
        ("portcullis_visibility_records_total", "Request records the visibility thread learnt from.", &s.records),
        ("portcullis_visibility_samples_total", "Sampled exchanges the visibility thread learnt from.", &s.samples),
        (
            "portcullis_visibility_dropped_batches_total",
            "Record batches the visibility thread's queue had no room for.",
            &s.batches_dropped,
        ),
        (
            "portcullis_visibility_save_errors_total",
            "Visibility state files that could not be written.",
            &s.save_errors,
        ),
    ] {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
    }
}

/// The earliest notAfter of the running TLS listener's certificates.
fn snap_tls_expiry(state: &ControlState) -> Option<i64> {
    state.reloader.snapshot.load().tls.as_ref()?.earliest_expiry
}
