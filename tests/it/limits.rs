//! Integration tests of rate limiting: the real binary (one or three processes, one or two
//! workers), real sockets on loopback, a real redis-server for the cluster cases. Load loops are
//! bounded by time and count. Tolerances are derived from the design's bound: a worker's view can
//! miss what others admitted during one gossip round (5 ms between workers, +10 ms between nodes),
//! plus timer slop of a request or two at the window edges.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_tests::client::Conn;
use portcullis_tests::harness::{self, Proxy, ProxyBuilder};
use portcullis_tests::httpbin::Httpbin;
use portcullis_tests::redis::RedisServer;
use portcullis_tests::{metrics, wait, wait_until, WAIT};
use serde_json::json;

/// A proxy whose abuse detector is off (these tests hammer limits on purpose from 127.0.0.1).
fn builder() -> ProxyBuilder {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis")).section("[limits]\nban_threshold = 0\n")
}

fn upstream() -> Httpbin {
    portcullis_tests::httpbin::upstream("up")
}

/// A keyless API at `/{id}/` with `top` fields (limits).
fn api(id: &str, target: &str, top: &str) -> String {
    harness::api(id, &format!("/{id}/"), target, &format!(r#""use_keyless": true, {top}"#), "")
}

/// Counts of one load run.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    ok: u64,
    limited: u64,
    other: u64,
}

/// Sends GETs from one thread per `(addr, interval)` on keep-alive connections (reconnecting if
/// closed) for `total`; only responses completed after `count_from` are counted. Bounded by time
/// and by 50,000 requests per thread.
fn load(
    targets: &[(SocketAddr, Duration)],
    path: &str,
    headers: &str,
    total: Duration,
    count_from: Duration,
) -> Counts {
    let start = Instant::now();
    let ok = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = targets
        .iter()
        .enumerate()
        .map(|(i, &(addr, every))| {
            let (ok, limited, other) = (Arc::clone(&ok), Arc::clone(&limited), Arc::clone(&other));
            let (path, headers) = (path.to_string(), headers.to_string());
            std::thread::spawn(move || {
                let mut conn: Option<Conn> = None;
                // Paced senders start staggered (half a period apart), as independent clients do.
                let mut next = Instant::now() + every / 2 * i as u32;
                // Time is the bound that matters; the count only stops a runaway loop (a release
                // build's unpaced client makes 50,000 requests in about 3.5 s, before `total`).
                for _ in 0..1_000_000 {
                    if start.elapsed() >= total {
                        break;
                    }
                    if every > Duration::ZERO {
                        let now = Instant::now();
                        if next > now {
                            // Stays: pacing; the offered rate is what the tests set.
                            std::thread::sleep(next - now);
                        }
                        next += every;
                    }
                    if conn.is_none() {
                        conn = Conn::connect(addr).ok();
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    let r = c.request("GET", &path, &headers, b"");
                    let counted = start.elapsed() >= count_from && start.elapsed() < total;
                    match r {
                        Ok(resp) => {
                            if counted {
                                let n = match resp.status {
                                    200 => &ok,
                                    429 => &limited,
                                    _ => &other,
                                };
                                n.fetch_add(1, Ordering::Relaxed);
                            }
                            if resp.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                                conn = None;
                            }
                        }
                        Err(_) => {
                            conn = None;
                            if counted {
                                other.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Counts {
        ok: ok.load(Ordering::Relaxed),
        limited: limited.load(Ordering::Relaxed),
        other: other.load(Ordering::Relaxed),
    }
}

fn assert_near(what: &str, got: u64, want: f64, tolerance: f64) {
    let err = (got as f64 - want).abs() / want;
    eprintln!("{what}: admitted {got}, limit allows {want:.0} ({:+.1}%)", (got as f64 - want) / want * 100.0);
    assert!(err <= tolerance, "{what}: admitted {got}, expected {want:.0} within {:.0}%", tolerance * 100.0);
}

fn worker_decisions(p: &Proxy) -> Vec<f64> {
    let m = p.metrics();
    (0..8)
        .filter_map(|w| {
            let series =
                |outcome: &str| format!("portcullis_limit_decisions_total{{worker=\"{w}\",outcome=\"{outcome}\"}}");
            Some(metrics::value(&m, &series("admitted"))? + metrics::value(&m, &series("rejected"))?)
        })
        .collect()
}

#[test]
fn limit_holds_on_one_worker_and_spread_over_workers() {
    let up = upstream();
    let rate = 40.0;
    let p = builder()
        .workers(2)
        .app("one", api("one", &up.url(), r#""global_rate_limit": {"rate": 40, "per": 1},"#))
        .app("spread", api("spread", &up.url(), r#""global_rate_limit": {"rate": 40, "per": 1},"#))
        .start();
    // (a) One connection: all traffic on one worker. Counting from 1 s on (the first second
    // spends the initial burst), 3 s at 40/s.
    let c = load(&[(p.listen, Duration::ZERO)], "/one/get", "", Duration::from_secs(4), Duration::from_secs(1));
    assert!(c.limited > 0, "the load must exceed the limit: {c:?}");
    assert_eq!(c.other, 0, "{c:?}");
    assert_near("one worker", c.ok, rate * 3.0, 0.10);

    // (b) Sixteen connections spread over both workers (SO_REUSEPORT hashes them; all sixteen on
    // one worker would happen once in 32,768 runs).
    let before = worker_decisions(&p);
    let targets: Vec<_> = (0..16).map(|_| (p.listen, Duration::from_millis(4))).collect();
    let c = load(&targets, "/spread/get", "", Duration::from_secs(4), Duration::from_secs(1));
    // Until the workers' published decision counts show the run on both (they publish every
    // 200 ms); what they show then is asserted below.
    let mut per_worker = Vec::new();
    wait::poll(WAIT, || {
        let after = worker_decisions(&p);
        per_worker = after.iter().zip(before.iter().chain(std::iter::repeat(&0.0))).map(|(a, b)| a - b).collect();
        (per_worker.iter().filter(|d| **d > 100.0).count() == 2).then_some(())
    });
    eprintln!("decisions per worker during the spread run: {per_worker:?}");
    assert!(per_worker.iter().filter(|d| **d > 100.0).count() == 2, "traffic must reach both workers: {per_worker:?}");
    assert_eq!(c.other, 0, "{c:?}");
    assert_near("spread over 2 workers", c.ok, rate * 3.0, 0.10);
}

#[test]
fn one_per_second_admits_exactly_one_per_second_and_backing_off_is_admitted_at_once() {
    let up = upstream();
    let p = builder()
        .workers(2)
        .app("slow", api("slow", &up.url(), r#""global_rate_limit": {"rate": 1, "per": 1},"#))
        .app("five", api("five", &up.url(), r#""global_rate_limit": {"rate": 5, "per": 1},"#))
        .start();
    // Two connections (usually one per worker), a request every 50 ms each, staggered by 25 ms
    // (longer than a gossip round trip), 5 s: exactly one per second.
    let targets = [(p.listen, Duration::from_millis(50)), (p.listen, Duration::from_millis(50))];
    let c = load(&targets, "/slow/get", "", Duration::from_millis(4950), Duration::ZERO);
    eprintln!("1 per second, 4.95 s, 2 connections: admitted {}, limit allows 5 ({} refused)", c.ok, c.limited);
    assert_eq!(c.ok, 5, "{c:?}");
    assert!(c.limited > 100);

    // Hammer /five/ into 429s, then back off for one token's time: admitted at once.
    let mut conn = Conn::connect(p.listen).unwrap();
    let mut last = None;
    for _ in 0..200 {
        let r = conn.request("GET", "/five/get", "", b"").unwrap();
        if r.status == 429 {
            last = Some(r);
        }
    }
    let r = last.expect("hammering must hit the limit");
    assert_eq!(r.json()["error"], "API Rate Limit Exceeded");
    // Stays: backing off for one token's time (1/5 s) is what is tested.
    std::thread::sleep(Duration::from_millis(250));
    let r = conn.request("GET", "/five/get", "", b"").unwrap();
    assert_eq!(r.status, 200, "a client that backed off for one token's time must be admitted");
}

#[test]
fn key_rate_from_policy_with_headers_and_disable_rate_limit() {
    let up = upstream();
    let keyed = |id: &str, extra: &str| {
        harness::api(id, &format!("/{id}/"), &up.url(), &format!(r#""use_standard_auth": true, {extra}"#), "")
    };
    let p = builder()
        .proxy_config(r#"rate_limit_response_headers = "rate_limits""#)
        .app("k", keyed("k", ""))
        .app("free", keyed("free", r#""disable_rate_limit": true,"#))
        .policies(
            r#"{"slow": {"rate": 2, "per": 1, "access_rights": {"k": {}, "free": {}}},
                "fast": {"rate": 10, "per": 1, "access_rights": {"k": {}, "free": {}}}}"#,
        )
        .start();
    let r = p.admin_send(
        "POST",
        "/tyk/keys/create",
        &p.with_every_api(&json!({"apply_policies": ["slow", "fast"]})).to_string(),
    );
    let key = r.json()["key"].as_str().unwrap().to_string();
    let auth = format!("Authorization: {key}\r\n");
    let mut conn = Conn::connect(p.listen).unwrap();
    let r = conn.request("GET", "/k/get", &auth, b"").unwrap();
    assert_eq!(r.status, 200);
    // The highest rate of the two policies (10/s) applies; the headers carry rate values.
    assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("9"));
    let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(reset >= now && reset <= now + 2, "reset {reset} now {now}");
    let statuses: Vec<u16> = (0..15).map(|_| conn.request("GET", "/k/get", &auth, b"").unwrap().status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 9, "{statuses:?}");
    // disable_rate_limit: the same key is not limited there.
    assert!((0..30).all(|_| conn.request("GET", "/free/get", &auth, b"").unwrap().status == 200));
    let m = p.metrics();
    assert!(metrics::value(&m, "portcullis_limit_decisions_total{worker=\"0\",outcome=\"rejected\"}").is_some(), "{m}");
}

#[test]
fn abusive_client_is_banned_then_unbanned_after_ttl() {
    let up = upstream();
    let p = ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
        .app("a", api("a", &up.url(), r#""global_rate_limit": {"rate": 5, "per": 1},"#))
        .section("[limits]\nban_threshold = 50\nban_window_secs = 10\nban_ttl_secs = 2\n")
        .start();
    let mut conn = Conn::connect(p.listen).unwrap();
    // Bounded in time and count; a release build answers 300 requests before one gossip round
    // has carried the rejections to the hub, so the count alone cannot be the bound.
    let (mut served, started) = (0, Instant::now());
    let banned = loop {
        if served >= 100_000 || started.elapsed() > Duration::from_secs(5) {
            break false;
        }
        match conn.request("GET", "/a/get", "", b"") {
            Ok(_) => served += 1,
            Err(_) => break true, // banned: the connection is dropped
        }
    };
    assert!(banned, "the client should have been banned ({served} requests served in {:?})", started.elapsed());
    let bans = p.admin_get("/api/bans").json();
    let ban =
        bans["bans"].as_array().unwrap().iter().find(|b| b["ip"] == "127.0.0.1/32" || b["ip"] == "127.0.0.1").cloned();
    let ban = ban.unwrap_or_else(|| panic!("no ban for 127.0.0.1: {bans}"));
    assert!(ban["reason"].as_str().unwrap().contains("rate limit"), "{ban}");
    let m = p.metrics();
    assert!(metrics::values(&m, "portcullis_limit_bans_total").iter().any(|v| *v != 0.0), "{m}");
    // After the TTL the client is served again.
    wait_until("the client to be served again after the ban's TTL", WAIT, || {
        Conn::connect_timeout(p.listen, Duration::from_secs(1))
            .is_ok_and(|mut c| c.request("GET", "/a/get", "", b"").is_ok_and(|r| r.status == 200 || r.status == 429))
    });
}

#[test]
fn three_nodes_share_a_limit_through_redis_and_survive_redis_loss() {
    let Some(mut redis) = RedisServer::start() else { return };
    let up = upstream();
    let storage = format!("[storage]\nredis = \"{}\"\n", redis.url());
    let def = api("shared", &up.url(), r#""global_rate_limit": {"rate": 30, "per": 1},"#);
    let nodes: Vec<Proxy> = (0..3).map(|_| builder().app("shared", def.clone()).section(&storage).start()).collect();
    // Wait until every node has heard from the other two.
    for n in &nodes {
        n.wait_metrics("the other two nodes", |m| metrics::value(m, "portcullis_cluster_peers") == Some(2.0));
    }
    // Uneven offered load: 200/s, 100/s and 25/s on the three nodes; limit 30/s cluster-wide.
    let targets = [
        (nodes[0].listen, Duration::from_millis(5)),
        (nodes[1].listen, Duration::from_millis(10)),
        (nodes[2].listen, Duration::from_millis(40)),
    ];
    let c = load(&targets, "/shared/get", "", Duration::from_secs(5), Duration::from_secs(1));
    assert_eq!(c.other, 0, "{c:?}");
    // 4 s at 30/s; nodes add up to 10 ms of each other's admissions late: +-15 %.
    assert_near("3 nodes, uneven split", c.ok, 30.0 * 4.0, 0.15);

    // Redis killed: every node keeps limiting locally (never more than its own limit, no errors)
    // and says so; Redis back: they rejoin.
    redis.stop();
    wait_until("/hello to report the lost Redis", WAIT, || {
        nodes[0].admin_get("/hello").json()["details"]["cluster"]["status"] == "warn"
    });
    // (The other nodes' share of the demand fades over the 1 s share window first.)
    let c = load(&targets[..1], "/shared/get", "", Duration::from_secs(3), Duration::from_secs(1));
    assert_eq!(c.other, 0, "{c:?}");
    assert_near("node-local while Redis is down", c.ok, 60.0, 0.15);
    let m = nodes[0].metrics();
    assert!(metrics::values(&m, "portcullis_cluster_redis_errors_total").iter().any(|v| *v != 0.0), "{m}");
    redis.restart();
    for n in &nodes {
        wait_until("the node to rejoin after Redis returned", WAIT, || {
            n.admin_get("/hello").json()["details"]["cluster"]["status"] == "pass"
        });
    }
}

fn keyed_api(id: &str, target: &str) -> String {
    harness::api(id, &format!("/{id}/"), target, r#""use_standard_auth": true,"#, "")
}

/// Sends `n` requests with `auth` on fresh connections (spread over the workers), counting
/// statuses; bounded by `n`.
fn count_statuses(
    addrs: &[SocketAddr],
    path: &str,
    auth: &str,
    n: usize,
) -> (usize, usize, Option<portcullis_tests::client::Response>) {
    let (mut ok, mut quota, mut last) = (0, 0, None);
    for i in 0..n {
        let mut c = Conn::connect(addrs[i % addrs.len()]).unwrap();
        let r = c.request("GET", path, &format!("{auth}Connection: close\r\n"), b"").unwrap();
        match r.status {
            200 => ok += 1,
            403 => {
                quota += 1;
                last = Some(r);
            }
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    (ok, quota, last)
}

#[test]
fn quota_is_exact_across_workers_resets_through_the_key_api_and_survives_restart() {
    let up = upstream();
    let mut p = builder().workers(2).app("q", keyed_api("q", &up.url())).start();
    let r = p.admin_send(
        "POST",
        "/tyk/keys/my-quota-key",
        &p.with_every_api(&json!({"quota_max": 10, "quota_renewal_rate": 3600})).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = "Authorization: my-quota-key\r\n";
    let (ok, over, last) = count_statuses(&[p.listen], "/q/get", auth, 25);
    assert_eq!((ok, over), (10, 15));
    let last = last.unwrap();
    assert_eq!(last.json()["error"], "Quota exceeded");
    // suppress_reset keeps the count; a plain update starts the quota over.
    p.admin_send(
        "PUT",
        "/tyk/keys/my-quota-key?suppress_reset=1",
        &p.with_every_api(&json!({"quota_max": 10, "quota_renewal_rate": 3600})).to_string(),
    );
    assert_eq!(count_statuses(&[p.listen], "/q/get", auth, 3).0, 0);
    p.admin_send(
        "PUT",
        "/tyk/keys/my-quota-key",
        &p.with_every_api(&json!({"quota_max": 10, "quota_renewal_rate": 3600})).to_string(),
    );
    let mut c = Conn::connect(p.listen).unwrap();
    let r = c.request("GET", "/q/get", auth, b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("9"));
    assert_eq!(count_statuses(&[p.listen], "/q/get", auth, 4).0, 4);
    // 5 used; the embedded table is written within a second, and read back after a restart.
    let quotas = p.dir.path().join("data/quotas.json");
    wait_until("quotas.json to hold the 5 used", WAIT, || {
        let table: serde_json::Value =
            std::fs::read(&quotas).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        table.as_object().is_some_and(|t| t.values().any(|c| c["used"] == 5))
    });
    p.restart();
    let (ok, over, _) = count_statuses(&[p.listen], "/q/get", auth, 8);
    assert_eq!((ok, over), (5, 3), "quota use must survive a restart");
}

#[test]
fn quota_never_overruns_across_three_nodes() {
    let Some(redis) = RedisServer::start() else { return };
    let up = upstream();
    let storage = format!("[storage]\nredis = \"{}\"\n", redis.url());
    let nodes: Vec<Proxy> =
        (0..3).map(|_| builder().workers(2).app("q", keyed_api("q", &up.url())).section(&storage).start()).collect();
    let r = nodes[0].admin_send(
        "POST",
        "/tyk/keys/shared-quota",
        &nodes[0].with_every_api(&json!({"quota_max": 30, "quota_renewal_rate": 3600})).to_string(),
    );
    assert_eq!(r.status, 200);
    let auth = "Authorization: shared-quota\r\n";
    // Concurrent clients on all three nodes (and both workers of each).
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.listen).collect();
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let addrs = vec![addrs[i % 3]];
            std::thread::spawn(move || count_statuses(&addrs, "/q/get", auth, 20))
        })
        .collect();
    let (mut ok, mut over) = (0, 0);
    for h in handles {
        let (o, q, _) = h.join().unwrap();
        ok += o;
        over += q;
    }
    eprintln!("quota 30 over 3 nodes x 2 workers: admitted {ok}, limit allows 30 ({over} refused)");
    assert_eq!(ok + over, 120);
    assert!(ok <= 30, "quota overrun: {ok} admitted for a quota of 30");
    assert!(ok >= 28, "blocks stranded on idle workers may leave a little unused, not more: {ok}");
}

#[test]
fn endpoint_ip_and_per_api_key_limits() {
    let up = upstream();
    let ep = r#", "extended_paths": {"rate_limit": [{"path": "/headers", "method": "GET", "rate": 2, "per": 60}]}"#;
    let def =
        |id: &str, top: &str, version_extra: &str| harness::api(id, &format!("/{id}/"), &up.url(), top, version_extra);
    let p = builder()
        .app("ep", def("ep", r#""use_keyless": true,"#, ep))
        .app("ip", def("ip", r#""use_keyless": true, "ip_rate_limit": {"rate": 3, "per": 60},"#, ""))
        .app("k1", def("k1", r#""use_standard_auth": true,"#, ""))
        .app("k2", def("k2", r#""use_standard_auth": true,"#, ""))
        .start();
    let mut c = Conn::connect(p.listen).unwrap();
    let mut statuses = |path: &str, auth: &str, n: usize| -> Vec<u16> {
        (0..n).map(|_| c.request("GET", path, auth, b"").unwrap().status).collect()
    };
    // Endpoint limit: 2 per minute on GET /headers only.
    assert_eq!(statuses("/ep/headers", "", 4), [200, 200, 429, 429]);
    assert_eq!(statuses("/ep/get", "", 4), [200; 4]);
    // Per-IP limit: 3 per minute.
    assert_eq!(statuses("/ip/get", "", 5), [200, 200, 200, 429, 429]);
    // A key with a per-API limit on k1 (2/min) and its own rate elsewhere (100/s).
    let session = json!({"rate": 100, "per": 1, "access_rights": {
        "k1": {"api_id": "k1", "versions": [], "limit": {"rate": 2, "per": 60}},
        "k2": {"api_id": "k2", "versions": []}}});
    let r = p.admin_send("POST", "/tyk/keys/per-api-key", &session.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = "Authorization: per-api-key\r\n";
    assert_eq!(statuses("/k1/get", auth, 3), [200, 200, 429]);
    assert_eq!(statuses("/k2/get", auth, 5), [200; 5]);
}

/// The first refusal on `path` within `n` requests (bounded): its status and `error` message.
fn first_refusal(c: &mut Conn, path: &str, auth: &str, n: usize) -> Option<(u16, String)> {
    (0..n).find_map(|_| {
        let r = c.request("GET", path, auth, b"").unwrap();
        (r.status != 200).then(|| (r.status, r.json()["error"].as_str().unwrap_or_default().to_string()))
    })
}

/// A 429 says whose limit refused, in Tyk's words: the key's own rate (its session rate or its
/// per-API `access_rights` limit) "Rate Limit Exceeded" (gateway/mw_rate_limiting.go:103-140,
/// `handleRateLimitFailure`), an API-level limit (`global_rate_limit`, the definition's
/// `extended_paths.rate_limit`) "API Rate Limit Exceeded" (gateway/mw_api_rate_limit.go:129-132).
/// `ip_rate_limit` (Portcullis' own, an API setting) answers as the API's. When the key's and
/// the API's limits both refuse, the key's answer wins: Tyk checks it first (api_loader.go:617
/// before 633).
#[test]
fn rate_limit_refusals_answer_in_tyks_words() {
    let up = upstream();
    let ep = r#", "extended_paths": {"rate_limit": [{"path": "/get", "method": "GET", "rate": 1, "per": 3600}]}"#;
    let def =
        |id: &str, top: &str, version_extra: &str| harness::api(id, &format!("/{id}/"), &up.url(), top, version_extra);
    let one_an_hour = r#""global_rate_limit": {"rate": 1, "per": 3600},"#;
    let p = builder()
        .app("g", def("g", &format!(r#""use_keyless": true, {one_an_hour}"#), ""))
        .app("ep", def("ep", r#""use_keyless": true,"#, ep))
        .app("ip", def("ip", r#""use_keyless": true, "ip_rate_limit": {"rate": 1, "per": 3600},"#, ""))
        .app("k", def("k", r#""use_standard_auth": true,"#, ""))
        .app("kg", def("kg", &format!(r#""use_standard_auth": true, {one_an_hour}"#), ""))
        .start();
    let mut c = Conn::connect(p.listen).unwrap();
    let api_words = Some((429, "API Rate Limit Exceeded".to_string()));
    let key_words = Some((429, "Rate Limit Exceeded".to_string()));
    assert_eq!(first_refusal(&mut c, "/g/get", "", 5), api_words, "global_rate_limit");
    assert_eq!(first_refusal(&mut c, "/ep/get", "", 5), api_words, "extended_paths.rate_limit");
    assert_eq!(first_refusal(&mut c, "/ip/get", "", 5), api_words, "ip_rate_limit");
    let key = |session: serde_json::Value| format!("Authorization: {}\r\n", p.create_key(&session).0);
    // The key's session rate, and its per-API limit.
    let auth = key(json!({"rate": 1, "per": 3600}));
    assert_eq!(first_refusal(&mut c, "/k/get", &auth, 5), key_words, "session rate");
    let auth = key(json!({"rate": 100, "per": 1, "access_rights": {
        "k": {"api_id": "k", "versions": [], "limit": {"rate": 1, "per": 3600}}}}));
    assert_eq!(first_refusal(&mut c, "/k/get", &auth, 5), key_words, "per-API key limit");
    // On an API with its own limit: the API's refuses a key with room left, and when both
    // refuse the key's is named.
    let auth = key(json!({"rate": 100, "per": 1}));
    assert_eq!(first_refusal(&mut c, "/kg/get", &auth, 5), api_words, "API limit, key within its rate");
    let auth = key(json!({"rate": 1, "per": 3600}));
    assert_eq!(c.request("GET", "/k/get", &auth, b"").unwrap().status, 200, "the key's one request an hour");
    assert_eq!(first_refusal(&mut c, "/kg/get", &auth, 5), key_words, "both refuse");
}

/// The key's rate is checked before its quota, as Tyk's `ForwardMessage` does
/// (gateway/session_manager.go:301-333): a request over both gets 429 "Rate Limit Exceeded",
/// not 403 "Quota exceeded", and a request the rate refuses spends no quota.
#[test]
fn rate_is_checked_before_quota_and_a_429_spends_no_quota() {
    let up = upstream();
    let def = |id: &str, top: &str| harness::api(id, &format!("/{id}/"), &up.url(), top, "");
    let p = builder()
        .app("k", def("k", r#""use_standard_auth": true,"#))
        .app("free", def("free", r#""use_standard_auth": true, "disable_rate_limit": true,"#))
        .start();
    let (key, _) = p.create_key(&json!({"rate": 2, "per": 3600, "quota_max": 3, "quota_renewal_rate": 3600}));
    let auth = format!("Authorization: {key}\r\n");
    let mut c = Conn::connect(p.listen).unwrap();
    let mut answer = |path: &str| {
        let r = c.request("GET", path, &auth, b"").unwrap();
        (r.status, if r.status == 200 { String::new() } else { r.json()["error"].as_str().unwrap().to_string() })
    };
    let ok = (200, String::new());
    let rate = (429, "Rate Limit Exceeded".to_string());
    let quota = (403, "Quota exceeded".to_string());
    // Two of the three quota units, and the whole rate.
    assert_eq!([answer("/k/get"), answer("/k/get")], [ok.clone(), ok.clone()]);
    // Refused by the rate: no quota spent.
    for _ in 0..5 {
        assert_eq!(answer("/k/get"), rate);
    }
    // So one unit is left, spent where the API turns rate limits off; then the quota refuses.
    assert_eq!(answer("/free/get"), ok);
    assert_eq!(answer("/free/get"), quota);
    // Over its rate and its quota: the rate's answer.
    assert_eq!(answer("/k/get"), rate);
}

/// How many headers of `name` the response has (the upstream's must not be passed on beside
/// the gateway's).
fn count_header(r: &portcullis_tests::client::Response, name: &str) -> usize {
    r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).count()
}

/// `[Limit, Remaining, Reset]` of a response's `X-RateLimit-*`, each sent once, as numbers.
fn limit_headers(r: &portcullis_tests::client::Response) -> [i64; 3] {
    let n = |h: &str| {
        assert_eq!(count_header(r, h), 1, "one {h}: {:?}", r.headers);
        r.header(h).unwrap().parse::<i64>().unwrap_or_else(|e| panic!("{h}: {e}"))
    };
    [n("x-ratelimit-limit"), n("x-ratelimit-remaining"), n("x-ratelimit-reset")]
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Upstream response headers of the three names the gateway owns (httpbin sets them from the query).
const UPSTREAM_LIMITS: &str = "/response-headers?X-RateLimit-Limit=99&X-RateLimit-Remaining=98&X-RateLimit-Reset=1";

/// `rate_limit_response_headers = "quotas"`, Tyk's default (internal/rate/headers.go:43-67): a
/// proxied response's `X-RateLimit-*` are the identity's quota (max, left, renewal time),
/// `0`/`0`/`0` when there is none (Tyk's empty session for keyless APIs,
/// reverse_proxy.go:1442-1445), the upstream's own replaced; refusals carry none (headers.go:25-28),
/// and no answer has `Retry-After` or `X-Quota-*`, which Tyk never sends.
#[test]
fn x_ratelimit_headers_report_the_quota_on_proxied_responses_only() {
    let up = upstream();
    let def = |id: &str, top: &str| harness::api(id, &format!("/{id}/"), &up.url(), top, "");
    let p = builder()
        .app("q", def("q", r#""use_standard_auth": true,"#))
        .app("open", def("open", r#""use_keyless": true,"#))
        .app("g", def("g", r#""use_keyless": true, "global_rate_limit": {"rate": 1, "per": 3600},"#))
        .start();
    let mut c = Conn::connect(p.listen).unwrap();
    let no_extras = |r: &portcullis_tests::client::Response| {
        for h in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after", "x-quota-limit"] {
            assert_eq!(r.header(h), None, "{} answer with {h}: {:?}", r.status, r.headers);
        }
    };
    // A key with a quota of 3 an hour: max, what is left after the request, when it renews.
    let (key, _) = p.create_key(&json!({"quota_max": 3, "quota_renewal_rate": 3600}));
    let auth = format!("Authorization: {key}\r\n");
    let before = unix_now();
    for left in [2, 1, 0] {
        let r = c.request("GET", &format!("/q{UPSTREAM_LIMITS}"), &auth, b"").unwrap();
        assert_eq!(r.status, 200);
        let [limit, remaining, reset] = limit_headers(&r);
        assert_eq!((limit, remaining), (3, left), "{:?}", r.headers);
        assert!(reset >= before + 3600 - 1 && reset <= unix_now() + 3600 + 1, "reset {reset}, now {}", unix_now());
        assert_eq!(r.header("x-quota-limit"), None);
    }
    // The quota's 403 carries none of them.
    let r = c.request("GET", "/q/get", &auth, b"").unwrap();
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("Quota exceeded")));
    no_extras(&r);
    // A key without a quota: 0, 0, 0, the upstream's replaced. A keyless API: none (Tyk sends
    // 0, 0, 0 there; docs/tyk-compatibility.md says why not), the upstream's removed.
    let (key, _) = p.create_key(&json!({"rate": 100, "per": 1}));
    let r = c.request("GET", &format!("/q{UPSTREAM_LIMITS}"), &format!("Authorization: {key}\r\n"), b"").unwrap();
    assert_eq!((r.status, limit_headers(&r)), (200, [0, 0, 0]));
    let r = c.request("GET", &format!("/open{UPSTREAM_LIMITS}"), "", b"").unwrap();
    assert_eq!(r.status, 200);
    no_extras(&r);
    assert_eq!(count_header(&r, "x-ratelimit-limit"), 0, "{:?}", r.headers);
    // A rate limit's 429 carries none either.
    assert_eq!(c.request("GET", "/g/get", "", b"").unwrap().status, 200);
    let r = c.request("GET", "/g/get", "", b"").unwrap();
    assert_eq!(r.status, 429);
    no_extras(&r);
}

/// `rate_limit_response_headers = "rate_limits"` (internal/rate/headers.go:69-92): the rate
/// limit's `X-RateLimit-*`, set before the decision (gateway/session_manager.go:309-315), so on
/// the proxied response, the 429 and a quota's 403 alike; the upstream's own removed, also where
/// no rate applies; no `Retry-After`.
#[test]
fn x_ratelimit_headers_report_the_rate_limit_when_configured() {
    let up = upstream();
    let def = |id: &str, top: &str| harness::api(id, &format!("/{id}/"), &up.url(), top, "");
    let p = builder()
        .proxy_config(r#"rate_limit_response_headers = "rate_limits""#)
        .app("g", def("g", r#""use_keyless": true, "global_rate_limit": {"rate": 2, "per": 3600},"#))
        .app("open", def("open", r#""use_keyless": true,"#))
        .app("q", def("q", r#""use_standard_auth": true,"#))
        .start();
    let mut c = Conn::connect(p.listen).unwrap();
    // The API's limit, 2 an hour: requests per period, left, when the bucket is full again.
    let before = unix_now();
    for left in [1, 0] {
        let r = c.request("GET", &format!("/g{UPSTREAM_LIMITS}"), "", b"").unwrap();
        assert_eq!(r.status, 200);
        let [limit, remaining, reset] = limit_headers(&r);
        assert_eq!((limit, remaining), (2, left), "{:?}", r.headers);
        assert!(reset >= before && reset <= unix_now() + 3600 + 1, "reset {reset}, now {}", unix_now());
    }
    let r = c.request("GET", "/g/get", "", b"").unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(&limit_headers(&r)[..2], &[2, 0][..]);
    assert_eq!(r.header("retry-after"), None);
    // No rate applies: none, and the upstream's are not passed on (others are).
    let r = c.request("GET", &format!("/open{UPSTREAM_LIMITS}&X-RateLimit-Policy=mine"), "", b"").unwrap();
    assert_eq!(r.status, 200);
    for h in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
        assert_eq!(r.header(h), None, "{h}: {:?}", r.headers);
    }
    assert_eq!(r.header("x-ratelimit-policy"), Some("mine"));
    // A key with a rate and a quota of 1: the quota's 403 carries the rate's headers.
    let (key, _) = p.create_key(&json!({"rate": 10, "per": 3600, "quota_max": 1, "quota_renewal_rate": 3600}));
    let auth = format!("Authorization: {key}\r\n");
    let r = c.request("GET", "/q/get", &auth, b"").unwrap();
    assert_eq!((r.status, &limit_headers(&r)[..2]), (200, &[10, 9][..]));
    let r = c.request("GET", "/q/get", &auth, b"").unwrap();
    assert_eq!((r.status, &limit_headers(&r)[..2]), (403, &[10, 8][..]));
    assert_eq!(r.header("x-quota-limit"), None);
}

/// The gateway sends no `Retry-After` (Tyk sends none), and one set the way Tyk users set it, a
/// header of an `error_overrides` rule on flag `RLT` (as Tyk's ci/tests/error-overrides config
/// does), comes out once, with the 429's own status and words.
#[test]
fn retry_after_is_an_error_override_header_as_in_tyk() {
    let up = upstream();
    let rule =
        r#""error_overrides": {"429": [{"match": {"flag": "RLT"}, "response": {"headers": {"Retry-After": "60"}}}]},"#;
    let limit = r#""global_rate_limit": {"rate": 1, "per": 3600},"#;
    let def = |id: &str, top: &str| harness::api(id, &format!("/{id}/"), &up.url(), top, "");
    let p = builder()
        .app("plain", def("plain", &format!(r#""use_keyless": true, {limit}"#)))
        .app("ov", def("ov", &format!(r#""use_keyless": true, {limit} {rule}"#)))
        .start();
    let mut c = Conn::connect(p.listen).unwrap();
    let refusal = |c: &mut Conn, path: &str| {
        (0..5).map(|_| c.request("GET", path, "", b"").unwrap()).find(|r| r.status != 200).expect("a refusal")
    };
    let r = refusal(&mut c, "/plain/get");
    assert_eq!((r.status, r.header("retry-after")), (429, None));
    let r = refusal(&mut c, "/ov/get");
    assert_eq!((r.status, r.json()["error"].as_str()), (429, Some("API Rate Limit Exceeded")));
    assert_eq!((r.header("retry-after"), count_header(&r, "retry-after")), (Some("60"), 1));
}
