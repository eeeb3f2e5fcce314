//! Bans and the XDP gate, end to end with the real binary.
//!
//! - User-space enforcement (any user): the proxy starts without the gate, says so once, and
//!   refuses banned clients itself.
//! - Privileged (root; must run under CI=true, skips with a reason elsewhere): two network
//!   namespaces joined to ours by veth pairs, the gate attached to the host ends; bans, CIDR
//!   bans, TTL expiry, a SYN flood dropped in XDP while the other client is served, and no XDP
//!   program left after shutdown.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use portcullis_tests::client::{self, Conn};
use portcullis_tests::harness::{keyless_api, Proxy, ProxyBuilder};
use portcullis_tests::httpbin::upstream;
use portcullis_tests::netns::{privileged, NetNs};
use portcullis_tests::{wait_for, wait_until, WAIT};

fn builder() -> ProxyBuilder {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn metric(p: &Proxy, series: &str) -> f64 {
    p.metric(series).unwrap_or(0.0)
}

/// GET through a fresh connection; `None` if the connection cannot be made or is cut.
fn try_get(addr: SocketAddr, timeout: Duration) -> Option<u16> {
    let mut c = Conn::connect_timeout(addr, timeout).ok()?;
    c.set_read_timeout(timeout).ok()?;
    c.request("GET", "/up/get", "Connection: close\r\n", b"").ok().map(|r| r.status)
}

#[test]
fn user_space_bans_without_the_gate() {
    let up = upstream("up");
    // Started as an unprivileged user (nobody) when the test runs as root, so loading the gate
    // fails for the real reason (no privileges) and the proxy falls back; as a normal user it
    // is unprivileged already.
    let mut b = builder()
        .app("up", keyless_api("up", "/up/", &up.url(), "", ""))
        .section("[ebpf]\nmode = \"auto\"\ninterfaces = [\"lo\"]\n");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        b = b.run_as(65534);
    }
    let p = b.start();
    let log = p.log_text();
    assert_eq!(log.matches("XDP gate not loaded").count(), 1, "one fallback line:\n{log}");
    assert!(log.contains("enforcing bans and deny lists in user space"));
    eprintln!("fallback: {}", log.lines().find(|l| l.contains("XDP gate not loaded")).unwrap_or(""));
    assert_eq!(client::get(p.listen, "/up/get").unwrap().status, 200);

    // A keep-alive connection opened before the ban is cut at its next request.
    let mut kept = Conn::connect(p.listen).unwrap();
    assert_eq!(kept.get("/up/get").unwrap().status, 200);

    let r = p.admin_send("POST", "/api/bans", r#"{"ip": "127.0.0.1", "ttl": 2, "reason": "test"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ban"]["ip"], "127.0.0.1/32");
    assert!(client::get(p.listen, "/up/get").is_err(), "banned client is refused");
    assert!(kept.get("/up/get").is_err(), "existing connection refused too");
    let list = p.admin_get("/api/bans").json();
    assert_eq!(list["bans"][0]["reason"], "test");
    assert_eq!(list["enforced_by"], "userspace");
    assert!(metric(&p, "portcullis_bans_active") >= 1.0);

    // TTL expiry un-bans.
    wait_until("the 2 s ban to expire", WAIT, || client::get(p.listen, "/up/get").is_ok_and(|r| r.status == 200));

    // A CIDR ban, then DELETE restores.
    let r = p.admin_send("POST", "/api/bans", r#"{"ip": "127.0.0.0/8", "ttl": 0}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(client::get(p.listen, "/up/get").is_err());
    assert_eq!(p.admin_send("DELETE", "/api/bans/127.0.0.0%2F8", "").status, 200);
    assert_eq!(client::get(p.listen, "/up/get").unwrap().status, 200);

    // Bad input is refused with a reason naming it.
    let r = p.admin_send("POST", "/api/bans", r#"{"ip": "not-an-ip"}"#);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("not-an-ip"));
    assert_eq!(p.admin_send("DELETE", "/api/bans/192.0.2.1", "").status, 404);
    let mut c = Conn::connect(p.admin).unwrap();
    let r = c.request("POST", "/api/bans", "X-Tyk-Authorization: wrong\r\n", br#"{"ip":"192.0.2.1"}"#).unwrap();
    assert_eq!(r.status, 403, "writes need the secret");
    wait_until("two banned connections counted", WAIT, || {
        metric(&p, "portcullis_connections_banned_total{worker=\"0\"}") >= 2.0
    });
}

#[test]
fn ban_ttl_out_of_range_is_refused_naming_field_and_value() {
    let p = builder().section("[ebpf]\nmode = \"off\"\n").start();
    // `1e30` and u64::MAX made `Duration::from_secs_f64` panic on the control plane.
    for ttl in ["1e30", "18446744073709551615", "315360001", "-1", "\"60\""] {
        let r = p.admin_send("POST", "/api/bans", &format!(r#"{{"ip": "192.0.2.1", "ttl": {ttl}}}"#));
        assert_eq!(r.status, 400, "ttl {ttl}: {}", r.text());
        let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains("`ttl`") && msg.contains("315360000"), "ttl {ttl}: {msg}");
    }
    let r = p.admin_send("POST", "/api/bans", r#"{"ip": "192.0.2.1", "ttl": 1e30}"#);
    assert!(r.json()["message"].as_str().unwrap().contains("got 1e+30"), "{}", r.text());
    // The control plane is still there, and a ban of the longest TTL is taken.
    assert_eq!(client::get(p.admin, "/hello").unwrap().status, 200);
    let r = p.admin_send("POST", "/api/bans", r#"{"ip": "192.0.2.1", "ttl": 315360000}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(p.admin_get("/api/bans").json()["bans"][0]["expires_in"].as_f64().unwrap() > 3.0e8);
}

fn skip_or_fail(reason: &str) -> bool {
    if portcullis_tests::in_ci() {
        panic!("privileged test cannot run under CI=true: {reason}");
    }
    eprintln!("skipped: {reason} (privileged tests run in CI as root)");
    true
}

#[test]
fn xdp_gate_in_network_namespaces() {
    if let Some(why) = privileged() {
        if skip_or_fail(&why) {
            return;
        }
    }
    let a = NetNs::create("a", 171).expect("netns a");
    let b = NetNs::create("b", 172).expect("netns b");
    let up = upstream("up");
    let mut p = builder()
        .listen_ip("0.0.0.0")
        .app("up", keyless_api("up", "/up/", &up.url(), "", ""))
        .section(&format!(
            "[ebpf]\nmode = \"on\"\ninterfaces = [\"{}\", \"{}\"]\nsyn_rate_per_sec = 5\nsyn_burst = 10\n",
            a.host_if, b.host_if
        ))
        .start();
    let log = p.log_text();
    if log.contains("without the eBPF object")
        && skip_or_fail("this portcullis binary has no eBPF object (run `cargo xtask setup` and `cargo xtask test`)")
    {
        return;
    }
    assert!(log.contains("XDP gate loaded"), "{log}");
    assert!(a.host_if_has_xdp() && b.host_if_has_xdp());
    assert_eq!(metric(&p, "portcullis_ebpf_loaded"), 1.0);
    let port = p.listen.port();
    let to_a = SocketAddr::from((a.host_ip, port));
    let to_b = SocketAddr::from((b.host_ip, port));
    let get_from = |ns: &NetNs, addr: SocketAddr| ns.run(move || try_get(addr, Duration::from_millis(800)));

    assert_eq!(get_from(&a, to_a), Some(200));
    assert_eq!(get_from(&b, to_b), Some(200));

    // Telemetry: a served connection is reported with the client's address and port, the bytes
    // it sent and received, and an RTT.
    let (client_port, sent, received) = a.run(move || {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect_timeout(&to_a, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let req = b"GET /up/bytes/5000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        s.write_all(req).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        (s.local_addr().unwrap().port(), req.len() as u64, resp.len() as u64)
    });
    let conn = wait_for(&format!("connection {client_port} reported in /api/connections"), WAIT, || {
        let v = p.admin_get("/api/connections").json();
        assert_eq!(v["telemetry"], true, "{v}");
        v["connections"].as_array().unwrap().iter().find(|c| c["client_port"] == client_port).cloned()
    });
    assert_eq!(conn["client_ip"], a.ns_ip.to_string());
    // The kernel counts sequence space: the FIN adds one to each direction.
    let bytes_in = conn["bytes_in"].as_u64().unwrap();
    let bytes_out = conn["bytes_out"].as_u64().unwrap();
    assert!(bytes_in == sent || bytes_in == sent + 1, "bytes_in {bytes_in} vs sent {sent}");
    assert!(bytes_out == received || bytes_out == received + 1, "bytes_out {bytes_out} vs received {received}");
    assert!(conn["srtt_us"].as_u64().unwrap() > 0, "{conn}");
    let m = p.metrics();
    assert!(!portcullis_tests::metrics::values(&m, "portcullis_tcp_connections_closed_total").is_empty(), "{m}");

    // Ban A: its connects time out (dropped in XDP), B is served.
    let r = p.admin_send("POST", "/api/bans", &format!(r#"{{"ip": "{}", "ttl": 60, "reason": "test"}}"#, a.ns_ip));
    assert_eq!(r.status, 200, "{}", r.text());
    let before = metric(&p, "portcullis_xdp_dropped_total{reason=\"banned\"}");
    let t = Instant::now();
    assert_eq!(get_from(&a, to_a), None, "banned client must not connect");
    assert!(t.elapsed() >= Duration::from_millis(700), "a timeout, not a refusal: the SYN was dropped");
    assert_eq!(get_from(&b, to_b), Some(200));
    assert!(metric(&p, "portcullis_xdp_dropped_total{reason=\"banned\"}") > before);
    assert_eq!(p.admin_get("/api/bans").json()["enforced_by"], "xdp+userspace");

    // Unban restores.
    assert_eq!(p.admin_send("DELETE", &format!("/api/bans/{}", a.ns_ip), "").status, 200);
    assert_eq!(get_from(&a, to_a), Some(200));

    // A deny CIDR drops the whole network.
    let net_b = format!("{}/24", b.ns_ip);
    assert_eq!(p.admin_send("POST", "/api/bans", &format!(r#"{{"ip": "{net_b}", "ttl": 0}}"#)).status, 200);
    let before = metric(&p, "portcullis_xdp_dropped_total{reason=\"deny\"}");
    assert_eq!(get_from(&b, to_b), None);
    assert!(metric(&p, "portcullis_xdp_dropped_total{reason=\"deny\"}") > before);
    assert_eq!(get_from(&a, to_a), Some(200));
    assert_eq!(p.admin_send("DELETE", &format!("/api/bans/{}", net_b.replace('/', "%2F")), "").status, 200);
    assert_eq!(get_from(&b, to_b), Some(200));

    // TTL expiry un-bans, in the kernel too.
    assert_eq!(p.admin_send("POST", "/api/bans", &format!(r#"{{"ip": "{}", "ttl": 1}}"#, a.ns_ip)).status, 200);
    assert_eq!(get_from(&a, to_a), None);
    wait_until("the 1 s ban to expire in the kernel", WAIT, || get_from(&a, to_a) == Some(200));

    // SYN flood from A above 5/s (burst 10): dropped in XDP while B keeps being served.
    let before = metric(&p, "portcullis_xdp_dropped_total{reason=\"syn_rate\"}");
    let flood = {
        let addr = to_a;
        std::thread::spawn({
            let ns = a.ns.clone();
            move || {
                let path = format!("/var/run/netns/{ns}");
                let f = std::fs::File::open(&path).unwrap();
                // SAFETY: setns on a valid namespace fd, for this thread only.
                assert_eq!(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) }, 0);
                let deadline = Instant::now() + Duration::from_secs(2);
                let mut attempts = 0;
                while Instant::now() < deadline && attempts < 400 {
                    let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(20));
                    attempts += 1;
                }
                attempts
            }
        })
    };
    // B behaves: 5 requests over ~1.5 s, under its own SYN budget.
    let mut served = 0;
    for _ in 0..5 {
        if get_from(&b, to_b) == Some(200) {
            served += 1;
        }
        // Stays: B's pace (about 3 connections/s) is what keeps it under its SYN budget.
        std::thread::sleep(Duration::from_millis(300));
    }
    let attempts = flood.join().unwrap();
    assert_eq!(served, 5, "the other client kept being served during the flood");
    let dropped = metric(&p, "portcullis_xdp_dropped_total{reason=\"syn_rate\"}") - before;
    assert!(dropped > 0.0, "SYN flood of {attempts} attempts was not dropped in XDP");
    eprintln!("SYN flood: {attempts} connect attempts, {dropped} SYNs dropped in XDP");

    // After shutdown no XDP program remains.
    p.signal(libc::SIGTERM);
    assert!(p.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()));
    assert!(!a.host_if_has_xdp() && !b.host_if_has_xdp(), "XDP detached on shutdown");
}
