//! Integration tests: the real `portcullis` binary on loopback, against in-process httpbin-like
//! upstreams. Every loop is bounded in count and time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_tests::client::{self, Conn};
use portcullis_tests::harness::{keyless_api, Proxy, ProxyBuilder};
use portcullis_tests::httpbin::{pattern, upstream, Httpbin};
use portcullis_tests::{free_addr, metrics, wait, wait_until, WAIT};

fn builder() -> ProxyBuilder {
    ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
}

/// One keyless API at `/up/` in front of a fresh upstream.
fn simple(extra_proxy_config: &str) -> (Proxy, Httpbin) {
    let up = upstream("up");
    let p = builder().app("up", keyless_api("up", "/up/", &up.url(), "", "")).proxy_config(extra_proxy_config).start();
    (p, up)
}

/// The open client connections of worker 0 (a gauge read live, not on the 200 ms publish tick).
fn open_connections(p: &Proxy) -> f64 {
    p.metric("portcullis_worker_open_connections{worker=\"0\"}").unwrap_or(-1.0)
}

#[test]
fn seed_walkthrough_httpbin_get() {
    let up = upstream("httpbin");
    let def = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../apps/httpbin.json"))
        .unwrap()
        .replace("http://127.0.0.1:8081/", &up.url());
    let p = builder().app("httpbin", def).start();
    let r = client::get(p.listen, "/httpbin/get?foo=bar").unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["args"]["foo"], "bar");
    assert_eq!(v["headers"]["Host"], up.addr.to_string());
    assert!(v["url"].as_str().unwrap().ends_with("/get?foo=bar"));
    let r = client::get(p.listen, "/httpbin/status/500").unwrap();
    assert_eq!(r.status, 500);
}

#[test]
fn routing_path_host_strip_longest_prefix() {
    let (a, b, c, d) = (upstream("a"), upstream("b"), upstream("c"), upstream("d"));
    let p = builder()
        .app("a", keyless_api("a", "/app", &a.url(), "", ""))
        .app("b", keyless_api("b", "/app/v2/", &format!("{}base/", b.url()), "", ""))
        .app("c", keyless_api("c", "/app", &c.url(), "", r#""domain": "api.example.com","#))
        .app(
            "d",
            keyless_api("d", "/anything", &d.url(), r#", "preserve_host_header": true"#, "")
                .replace(r#""strip_listen_path": true"#, r#""strip_listen_path": false"#),
        )
        .start();
    let mut conn = Conn::connect(p.listen).unwrap();
    let get = |conn: &mut Conn, host: &str, path: &str| {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        conn.send(raw.as_bytes()).unwrap();
        conn.read_response(false).unwrap()
    };
    let r = get(&mut conn, "x", "/app/anything/1");
    assert_eq!(r.header("x-upstream"), Some("a"));
    assert!(r.json()["url"].as_str().unwrap().ends_with("/anything/1"), "stripped: {}", r.text());
    let r = get(&mut conn, "x", "/app/v2/anything/2");
    assert_eq!(r.header("x-upstream"), Some("b"), "longest listen path wins");
    assert_eq!(r.json()["path"], "/base/anything/2", "target path prefix + stripped path");
    let r = get(&mut conn, "API.example.com:8080", "/app/anything");
    assert_eq!(r.header("x-upstream"), Some("c"), "domain APIs win over path-only ones");
    let r = get(&mut conn, "x", "/apple");
    assert_eq!(r.status, 404, "/app must not match /apple");
    assert_eq!(r.text(), "Not Found", "Tyk's router answers a path no API has in plain text (proxy_muxer.go:214-222)");
    let r = get(&mut conn, "client.example", "/anything/kept");
    assert_eq!(r.header("x-upstream"), Some("d"));
    let v = r.json();
    assert_eq!(v["headers"]["Host"], "client.example", "preserve_host_header");
    assert!(v["url"].as_str().unwrap().ends_with("/anything/kept"), "not stripped: {v}");
}

#[test]
fn load_balanced_targets_round_robin_with_weights() {
    let (a, b) = (upstream("a"), upstream("b"));
    let targets =
        format!(r#", "enable_load_balancing": true, "target_list": ["{}", "{}", "{}"]"#, a.url(), a.url(), b.url());
    let p = builder().app("lb", keyless_api("lb", "/lb", "", &targets, "")).start();
    let mut conn = Conn::connect(p.listen).unwrap();
    let names: Vec<String> =
        (0..9).map(|_| conn.get("/lb/get").unwrap().header("x-upstream").unwrap().to_string()).collect();
    assert_eq!(names.iter().filter(|n| *n == "a").count(), 6, "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "b").count(), 3, "{names:?}");
}

#[test]
fn large_bodies_stream_both_ways_through_a_small_buffer() {
    let (p, _up) = simple("buffer_size = 4096");
    let mut conn = Conn::connect(p.listen).unwrap();
    let body = pattern(3 * 1024 * 1024 + 17);
    let r = conn.request("POST", "/up/echo", "", &body).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == body, "echoed body differs ({} vs {} bytes)", r.body.len(), body.len());
    let r = conn.get("/up/bytes/2000000").unwrap();
    assert_eq!(r.body, pattern(2_000_000));
    // Medium bodies that arrive whole with their head (once the buffers have grown) are written
    // in the same syscall as the head.
    for n in [5_000, 10_000, 3_000, 40_000, 10_000] {
        assert_eq!(conn.get(&format!("/up/bytes/{n}")).unwrap().body, pattern(n));
    }
    // Close-delimited upstream bodies reach the client and close its connection.
    let r = conn.get("/up/close-delimited/100000").unwrap();
    assert_eq!(r.body, pattern(100_000));
    assert_eq!(r.header("connection"), Some("close"));
}

/// Heads longer than a fresh read buffer (2 KiB) and than its first growth (4 KiB) pass intact
/// both ways, on one keep-alive connection, so pooled buffers of either size are reused.
#[test]
fn heads_longer_than_the_first_read_pass_both_ways() {
    let (p, _up) = simple("");
    let mut conn = Conn::connect(p.listen).unwrap();
    for n in [100, 3_000, 7_000, 20_000, 1_500, 7_000] {
        let v = "h".repeat(n);
        let r = conn.request("GET", "/up/headers", &format!("X-Long: {v}\r\n"), b"").unwrap();
        assert_eq!(r.status, 200, "request head with a {n}-byte header");
        let seen = r.json()["headers"].as_object().and_then(|h| {
            h.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-long")).and_then(|(_, v)| v.as_str().map(str::len))
        });
        assert_eq!(seen, Some(n), "request header of {n} bytes");
        let r = conn.get(&format!("/up/response-headers?X-Long={v}")).unwrap();
        assert_eq!(r.status, 200, "response head with a {n}-byte header");
        assert_eq!(r.header("x-long").map(str::len), Some(n), "response header of {n} bytes");
        assert_eq!(r.json()["X-Long"].as_str().map(str::len), Some(n), "body after a {n}-byte header");
    }
}

#[test]
fn chunked_both_ways_with_trailers() {
    let (p, _up) = simple("buffer_size = 4096");
    let mut conn = Conn::connect(p.listen).unwrap();
    let data = pattern(50_000);
    let mut raw = b"POST /up/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n".to_vec();
    for c in data.chunks(3000) {
        raw.extend_from_slice(format!("{:x};ext=1\r\n", c.len()).as_bytes());
        raw.extend_from_slice(c);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\nX-Sum: 42\r\n\r\n");
    conn.send(&raw).unwrap();
    let r = conn.read_response(false).unwrap();
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body, data);
    assert_eq!(
        r.trailers,
        vec![("X-Sum".to_string(), "42".to_string())],
        "request trailers reach the upstream and come back"
    );
    let r = conn.get("/up/stream-bytes/100000").unwrap();
    assert_eq!(r.body, pattern(100_000));
    let sum: u64 = pattern(100_000).iter().map(|&b| b as u64).sum();
    assert_eq!(r.trailers, vec![("X-Checksum".to_string(), sum.to_string())]);

    // An HTTP/1.0 client gets the chunked response decoded, without trailers, then close.
    let mut c10 = Conn::connect(p.listen).unwrap();
    c10.send(b"GET /up/stream-bytes/30000 HTTP/1.0\r\n\r\n").unwrap();
    let r = c10.read_response(false).unwrap();
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.body, pattern(30_000));
}

#[test]
fn upstream_keep_alive_connections_are_reused() {
    let (p, up) = simple("");
    for _ in 0..5 {
        let mut conn = Conn::connect(p.listen).unwrap();
        for _ in 0..20 {
            assert_eq!(conn.get("/up/get").unwrap().status, 200);
        }
    }
    assert_eq!(up.accepted(), 1, "100 requests over 5 client connections used one upstream connection");
    // The upstream closing its side (Connection: close) is handled by opening a new one.
    let mut conn = Conn::connect(p.listen).unwrap();
    assert_eq!(conn.request("GET", "/up/get", "", b"").unwrap().status, 200);
}

/// An upstream that cannot be reached and one that does not answer in time: Tyk's statuses and
/// words (gateway/reverse_proxy.go:1401-1420: a failed dial is 500 "There was a problem proxying
/// the request", a response-header timeout 504 "Upstream service reached hard timeout.").
#[test]
fn unreachable_and_slow_upstreams_answer_as_tyk() {
    let closed = free_addr();
    let up = upstream("slow");
    let p = builder()
        .app("dead", keyless_api("dead", "/dead", &format!("http://{closed}/"), "", ""))
        .app("slow", keyless_api("slow", "/slow", &up.url(), "", ""))
        .proxy_config("upstream_response_timeout_ms = 500")
        .start();
    let r = client::get(p.listen, "/dead/get").unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"], "There was a problem proxying the request");
    assert_eq!(r.header("x-generator"), Some("tyk.io"));
    // The upstream answers after 3 s; 504 means the 500 ms timeout fired first.
    let r = client::get(p.listen, "/slow/slow-head/3000").unwrap();
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "Upstream service reached hard timeout.");
    let m = p.wait_metrics("one upstream timeout", |m| {
        metrics::value(m, "portcullis_upstream_timeouts_total{worker=\"0\"}") == Some(1.0)
    });
    assert_eq!(metrics::value(&m, "portcullis_upstream_connect_errors_total{worker=\"0\"}"), Some(1.0));
    assert_eq!(metrics::value(&m, "portcullis_upstream_timeouts_total{worker=\"0\"}"), Some(1.0));
}

#[test]
fn oversized_head_and_body_are_refused() {
    let (p, _up) = simple("max_request_head_size = 8192\nmax_request_body_size = 1000");
    let mut conn = Conn::connect(p.listen).unwrap();
    let big = format!("X-Big: {}\r\n", "a".repeat(10_000));
    let r = conn.request("GET", "/up/get", &big, b"").unwrap();
    assert_eq!(r.status, 431);
    let mut conn = Conn::connect(p.listen).unwrap();
    let r = conn.request("POST", "/up/anything", "", &[b'x'; 1001]).unwrap();
    assert_eq!(r.status, 413);
    // A chunked body over the limit is cut off with 413 too.
    let mut conn = Conn::connect(p.listen).unwrap();
    let mut raw = b"POST /up/anything HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'y'; 512]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    conn.send(&raw).unwrap();
    let r = conn.read_response(false).unwrap();
    assert_eq!(r.status, 413);
    // Within limits it works.
    let mut conn = Conn::connect(p.listen).unwrap();
    assert_eq!(conn.request("POST", "/up/anything", "", &[b'x'; 1000]).unwrap().status, 200);
}

#[test]
fn smuggling_shapes_are_rejected_and_the_connection_closed() {
    let (p, up) = simple("");
    for raw in [
        &b"POST /up/anything HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST /up/anything HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /up/anything HTTP/1.1\r\nHost: t\r\nContent-Length: +4\r\n\r\nabcd",
        b"POST /up/anything HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"GET /up/get HTTP/1.1\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ] {
        let mut conn = Conn::connect(p.listen).unwrap();
        conn.send(raw).unwrap();
        let r = conn.read_response(false).unwrap();
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(raw));
        assert_eq!(r.header("connection"), Some("close"));
        assert!(conn.closed(), "connection closed after 400");
    }
    assert_eq!(up.accepted(), 0, "nothing reached the upstream");
}

#[test]
fn websocket_upgrade_is_tunnelled() {
    let (p, _up) = simple("");
    let mut conn = Conn::connect(p.listen).unwrap();
    conn.send(b"GET /up/ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
    let r = conn.read_head().unwrap();
    assert_eq!(r.status, 101);
    assert_eq!(r.header("upgrade"), Some("websocket"));
    for msg in [&b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"[..], b"second frame", &pattern(100_000)] {
        conn.send(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        conn.reader().read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }
}

/// A kept-alive connection is read in several ways (the idle wait for the next head, the rest of
/// a head, body relays, the tunnel after an upgrade); every way of sending a request after the
/// first must arrive whole and in order: bodies that trail their head, chunked bodies in pieces,
/// pipelined requests, a large body, and an upgrade. (Written for the multishot-receive
/// experiment, docs/decisions/0007-poll-first-receives-not-multishot.md, kept as the check for
/// any change to how these reads are made.)
#[test]
fn kept_alive_connections_carry_trailing_bodies_pipelining_and_upgrades() {
    let (p, _up) = simple("");
    let mut conn = Conn::connect(p.listen).unwrap();
    for _ in 0..3 {
        assert_eq!(conn.get("/up/get").unwrap().status, 200);
    }
    // A body that comes after its head: the head alone is read first.
    conn.send(b"POST /up/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n").unwrap();
    // Stays: the gap between head and body is what is tested (the proxy sees nothing to wait on).
    std::thread::sleep(Duration::from_millis(50));
    conn.send(b"0123456789").unwrap();
    let r = conn.read_response(false).unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"0123456789"[..]));
    // Chunked, in pieces.
    conn.send(b"POST /up/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n").unwrap();
    // Stays: the gap between the pieces is what is tested.
    std::thread::sleep(Duration::from_millis(30));
    conn.send(b"6\r\n world\r\n0\r\n\r\n").unwrap();
    let r = conn.read_response(false).unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"hello world"[..]));
    // Receiving again after the stop, then two requests in one write.
    assert_eq!(conn.get("/up/get").unwrap().status, 200);
    conn.send(b"GET /up/bytes/7 HTTP/1.1\r\nHost: x\r\n\r\nGET /up/bytes/9 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(conn.read_response(false).unwrap().body == pattern(7));
    assert!(conn.read_response(false).unwrap().body == pattern(9));
    // A large body right behind its head.
    let big = pattern(300_000);
    let r = conn.request("POST", "/up/echo", "", &big).unwrap();
    assert!(r.status == 200 && r.body == big, "echoed {} bytes", r.body.len());
    // And an upgrade on the same connection: the tunnel gets every byte.
    assert_eq!(conn.get("/up/get").unwrap().status, 200);
    conn.send(b"GET /up/ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
    assert_eq!(conn.read_head().unwrap().status, 101);
    for msg in [&b"first frame"[..], &pattern(100_000)] {
        conn.send(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        conn.reader().read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }
}

#[test]
fn forwarding_headers_hop_by_hop_expect_and_connection_close() {
    let (p, _up) = simple("");
    let mut conn = Conn::connect(p.listen).unwrap();
    let r = conn
        .request("GET", "/up/headers", "X-Forwarded-For: 203.0.113.9\r\nConnection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Request-Id: abc\r\n", b"")
        .unwrap();
    let h = &r.json()["headers"];
    assert_eq!(h["X-Forwarded-For"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["X-Forwarded-Proto"], "http");
    assert_eq!(h["X-Request-Id"], "abc");
    assert!(h.get("X-Secret").is_none() && h.get("Keep-Alive").is_none() && h.get("Connection").is_none(), "{h}");
    let r = conn.get("/up/headers").unwrap();
    assert_eq!(r.json()["headers"]["X-Request-Id"].as_str().unwrap().len(), 32, "generated when absent");

    // Expect: 100-continue is answered before the body is sent.
    conn.send(b"POST /up/anything HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    let r = conn.read_head().unwrap();
    assert_eq!(r.status, 100);
    conn.send(b"hello").unwrap();
    let r = conn.read_response(false).unwrap();
    assert_eq!(r.json()["data"], "hello");

    // HTTP/1.0 keep-alive and Connection: close.
    let mut c10 = Conn::connect(p.listen).unwrap();
    c10.send(b"GET /up/get HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    let r = c10.read_response(false).unwrap();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c10.send(b"GET /up/get HTTP/1.0\r\n\r\n").unwrap();
    let r = c10.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(c10.closed());
    let r = conn.request("GET", "/up/get", "Connection: close\r\n", b"").unwrap();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(conn.closed());
}

#[test]
fn hot_reload_under_load_loses_no_request_skips_bad_definitions_and_rejects_bad_config() {
    let (p, _up) = simple("");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut threads = Vec::new();
    for keep_alive in [true, false] {
        let (stop, ok, failed, addr) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed), p.listen);
        threads.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut conn = Conn::connect(addr).unwrap();
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let r = if keep_alive { conn.get("/up/get") } else { client::get(addr, "/up/get") };
                match r {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    let up2 = upstream("second");
    // Each step happens while both clients keep getting answers: at least 20 more each time.
    let answered_more = |what: &str| {
        let from = ok.load(Ordering::SeqCst);
        wait_until(what, WAIT, || ok.load(Ordering::SeqCst) >= from + 20);
    };
    answered_more("the load to be running");
    std::fs::write(p.apps_dir().join("second.json"), keyless_api("second", "/second", &up2.url(), "", "")).unwrap();
    let r = p.admin_get("/tyk/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["generation"], 2);
    answered_more("requests after the reload");
    p.signal(libc::SIGHUP);
    p.wait_metrics("the SIGHUP reload (generation 3)", |m| {
        metrics::value(m, "portcullis_config_generation") == Some(3.0)
    });
    answered_more("requests after the SIGHUP reload");
    // A broken definition next to a new valid one: the broken one is skipped (reported with file,
    // field and value), the valid one loads, as Tyk does.
    std::fs::write(p.apps_dir().join("broken.json"), r#"{"api_id": "broken", "active": true, "use_keyless": true, "proxy": {"listen_path": "/b", "target_url": "gopher://x"}}"#).unwrap();
    std::fs::write(p.apps_dir().join("third.json"), keyless_api("third", "/third", &up2.url(), "", "")).unwrap();
    let r = p.admin_get("/tyk/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    let skipped = r.json()["skipped"].to_string();
    assert!(
        skipped.contains("broken.json") && skipped.contains("proxy.target_url") && skipped.contains("gopher://x"),
        "{skipped}"
    );
    assert_eq!(client::get(p.listen, "/third/get").unwrap().status, 200, "the valid new API is served");
    assert_eq!(client::get(p.listen, "/b/get").unwrap().status, 404);
    let hello = client::get(p.admin, "/hello").unwrap().json();
    assert_eq!(hello["status"], "warn");
    assert!(hello.to_string().contains("broken.json"), "{hello}");
    answered_more("requests after the reload that skipped a definition");
    // A broken policies file: reload rejected, running config kept.
    std::fs::write(p.apps_dir().join("policies.json"), "{not json").unwrap();
    let r = p.admin_get("/tyk/reload");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["errors"].to_string().contains("policies.json"), "{}", r.text());
    answered_more("requests after the rejected reload");
    assert_eq!(client::get(p.listen, "/third/get").unwrap().status, 200);
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "{} ok", ok.load(Ordering::SeqCst));
    assert!(ok.load(Ordering::SeqCst) > 20);
    assert_eq!(client::get(p.listen, "/second/get").unwrap().header("x-upstream"), Some("second"));
    assert_eq!(client::get(p.listen, "/up/get").unwrap().status, 200);
    // Reload needs the secret.
    let mut c = Conn::connect(p.admin).unwrap();
    assert_eq!(c.request("GET", "/tyk/reload", "X-Tyk-Authorization: wrong\r\n", b"").unwrap().status, 403);
}

#[test]
fn sigterm_drains_in_flight_requests() {
    let (mut p, up) = simple("drain_timeout_ms = 5000");
    let addr = p.listen;
    // A keep-alive connection between requests: the drain closes it at once instead of waiting
    // for it until the drain timeout.
    let mut idle = Conn::connect(addr).unwrap();
    assert_eq!(idle.get("/up/get").unwrap().status, 200);
    // A kept-alive request in flight when the drain starts.
    let inflight = std::thread::spawn(move || Conn::connect(addr).and_then(|mut c| c.get("/up/delay/1")));
    wait_until("the upstream to read the in-flight request", WAIT, || up.heads() >= 2);
    let signalled = std::time::Instant::now();
    p.signal(libc::SIGTERM);
    idle.set_read_timeout(Duration::from_secs(4)).unwrap();
    assert!(idle.closed(), "idle keep-alive connection closed by the drain");
    assert!(signalled.elapsed() < Duration::from_secs(3), "idle connection held {:?}", signalled.elapsed());
    let r = inflight.join().unwrap().expect("in-flight request finished");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("connection").map(str::to_ascii_lowercase).as_deref(),
        Some("close"),
        "a response during the drain tells its client the connection closes"
    );
    let status = p.wait_exit(Duration::from_secs(8)).expect("exited after drain");
    assert!(status.success(), "{status}");
    assert!(signalled.elapsed() < Duration::from_secs(4), "exited before the drain timeout: nothing was left open");
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
}

#[test]
fn check_reports_every_broken_file_with_field_and_value() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("apps")).unwrap();
    std::fs::write(dir.path().join("apps/oauth.json"), r#"{"api_id": "o", "active": true, "use_keyless": true, "use_oauth2": true, "proxy": {"listen_path": "/o", "target_url": "http://127.0.0.1:1/"}}"#).unwrap();
    std::fs::write(dir.path().join("apps/bad.json"), "{ not json").unwrap();
    std::fs::write(dir.path().join("apps/good.json"), keyless_api("good", "/good", "http://127.0.0.1:1/", "", ""))
        .unwrap();
    std::fs::write(dir.path().join("portcullis.toml"), "[proxy]\nlisten = \"nowhere\"\n").unwrap();
    let run = |cfg: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["check", "--config"])
            .arg(dir.path().join(cfg))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = run("portcullis.toml");
    assert_eq!(code, Some(1));
    assert!(out.contains("proxy.listen") && out.contains("nowhere"), "{out}");
    std::fs::write(dir.path().join("portcullis.toml"), "[proxy]\nlisten = \"127.0.0.1:1\"\n").unwrap();
    let (code, out) = run("portcullis.toml");
    assert_eq!(code, Some(1));
    assert!(out.contains("oauth.json") && out.contains("use_oauth2") && out.contains("true"), "{out}");
    assert!(out.contains("bad.json") && out.contains("not valid JSON"), "{out}");
    assert!(!out.contains("good.json"), "{out}");
    std::fs::remove_file(dir.path().join("apps/oauth.json")).unwrap();
    std::fs::remove_file(dir.path().join("apps/bad.json")).unwrap();
    let (code, out) = run("portcullis.toml");
    assert_eq!(code, Some(0), "{out}");
    // A running proxy loads the good APIs and reports the bad ones.
    let up = upstream("up");
    let p = builder()
        .app("good", keyless_api("good", "/good", &up.url(), "", ""))
        .app("oauth", r#"{"api_id": "o", "active": true, "use_keyless": true, "use_oauth2": true, "proxy": {"listen_path": "/o", "target_url": "http://127.0.0.1:1/"}}"#)
        .start();
    assert_eq!(client::get(p.listen, "/good/get").unwrap().status, 200);
    assert_eq!(client::get(p.listen, "/o/get").unwrap().status, 404);
    assert!(p.log_text().contains("use_oauth2"));
}

#[test]
fn metrics_parse_as_prometheus_text() {
    let (p, _up) = simple("");
    let mut conn = Conn::connect(p.listen).unwrap();
    for _ in 0..5 {
        conn.get("/up/get").unwrap();
    }
    conn.get("/nowhere").unwrap();
    let text = p.wait_metrics("six requests counted", |m| {
        metrics::value(m, "portcullis_worker_requests_total{worker=\"0\"}") == Some(6.0)
    });
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition");
    let count = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "http_server_request_duration_seconds_count"
                && s.labels.get("api") == Some("up")
                && s.labels.get("code") == Some("200")
        })
        .expect("duration histogram for api=up");
    assert!(
        matches!(count.value, prometheus_parse::Value::Untyped(v) | prometheus_parse::Value::Counter(v) if v == 5.0),
        "{:?}",
        count.value
    );
    for family in [
        "http_server_request_duration_seconds",
        "portcullis_worker_open_connections",
        "portcullis_request_bytes_total",
        "portcullis_response_bytes_total",
        "portcullis_upstream_connect_errors_total",
        "portcullis_upstream_timeouts_total",
        "portcullis_worker_info",
    ] {
        assert!(scrape.docs.contains_key(family), "missing {family}");
    }
    assert!(text.contains("code=\"404\""));
}

#[test]
fn two_workers_pinned_with_own_listeners_share_traffic() {
    if portcullis::dataplane::affinity_cpus().len() < 2 {
        eprintln!("skipped: needs 2 CPUs in the affinity mask");
        return;
    }
    let up = upstream("up");
    let p = builder().workers(2).app("up", keyless_api("up", "/up/", &up.url(), "", "")).start();
    for _ in 0..40 {
        assert_eq!(client::get(p.listen, "/up/get").unwrap().status, 200);
    }
    let m = p.wait_metrics("requests on both workers", |m| {
        (0..2).all(|w| {
            metrics::value(m, &format!("portcullis_worker_requests_total{{worker=\"{w}\"}}")).unwrap_or(0.0) > 0.0
        })
    });
    for w in 0..2 {
        let n = metrics::value(&m, &format!("portcullis_worker_requests_total{{worker=\"{w}\"}}")).unwrap();
        assert!(n > 0.0, "worker {w} served nothing:\n{m}");
    }
    assert!(m.contains("portcullis_worker_info{worker=\"0\",cpu=\"0\""), "{m}");
    assert!(m.contains("portcullis_worker_info{worker=\"1\",cpu=\"1\""), "{m}");
    // Each worker thread is pinned to one CPU.
    let pid = p.child.id();
    let mut pinned = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap();
        if comm.starts_with("portcullis-w") {
            let status = std::fs::read_to_string(dir.join("status")).unwrap();
            let cpus = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_string();
            pinned.push((comm.trim().to_string(), cpus));
        }
    }
    pinned.sort();
    assert_eq!(pinned, vec![("portcullis-w0".into(), "0".into()), ("portcullis-w1".into(), "1".into())]);
    // Two listening sockets (SO_REUSEPORT), one per worker.
    let port_hex = format!(":{:04X}", p.listen.port());
    let listening = std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&port_hex) && f[3] == "0A"
        })
        .count();
    assert_eq!(listening, 2);
}

#[test]
fn taskset_pins_the_single_worker_to_the_allowed_cpu() {
    let cpus = portcullis::dataplane::affinity_cpus();
    if cpus.len() < 2 || std::process::Command::new("taskset").arg("-V").output().is_err() {
        eprintln!("skipped: needs 2 CPUs and taskset");
        return;
    }
    let cpu = cpus[1];
    let up = upstream("up");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("apps")).unwrap();
    std::fs::write(dir.path().join("apps/up.json"), keyless_api("up", "/up", &up.url(), "", "")).unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    std::fs::write(
        dir.path().join("p.toml"),
        format!("[proxy]\nlisten = \"{listen}\"\n[admin]\nlisten = \"{admin}\"\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new("taskset")
        .args(["-c", &cpu.to_string(), env!("CARGO_BIN_EXE_portcullis"), "run", "--workers", "1", "--config"])
        .arg(dir.path().join("p.toml"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut text = String::new();
    // Until the worker reports its io driver (not "starting"); the process is killed either way.
    wait::poll(WAIT, || {
        text = client::get(admin, "/metrics").ok()?.text();
        ["epoll", "uring"]
            .iter()
            .any(|d| metrics::value(&text, &format!("portcullis_worker_info{{driver=\"{d}\"}}")).is_some())
            .then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    let pinned = format!("portcullis_worker_info{{worker=\"0\",cpu=\"{cpu}\"}}");
    assert!(metrics::value(&text, &pinned).is_some(), "{text}");
    assert!(!text.contains("worker=\"1\""), "{text}");
}

#[test]
fn connections_over_the_per_worker_limit_are_refused_and_counted() {
    let (p, _up) = simple("max_connections_per_worker = 2");
    // Until the worker has seen the harness's readiness probe connection (accepted, counted on
    // the publish tick) close (the open gauge is live).
    p.wait_metrics("the readiness probe's connection closed", |m| {
        metrics::value(m, "portcullis_worker_connections_accepted_total{worker=\"0\"}").unwrap_or(0.0) >= 1.0
            && metrics::value(m, "portcullis_worker_open_connections{worker=\"0\"}") == Some(0.0)
    });
    let mut a = Conn::connect(p.listen).unwrap();
    let mut b = Conn::connect(p.listen).unwrap();
    assert_eq!(a.get("/up/get").unwrap().status, 200);
    assert_eq!(b.get("/up/get").unwrap().status, 200);
    let mut c = Conn::connect(p.listen).unwrap();
    let _ = c.send(b"GET /up/get HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(c.read_response(false).is_err(), "third connection is closed");
    let m = p.wait_metrics("one refused connection", |m| {
        metrics::value(m, "portcullis_worker_connections_refused_total{worker=\"0\"}") == Some(1.0)
    });
    assert_eq!(metrics::value(&m, "portcullis_worker_connections_refused_total{worker=\"0\"}"), Some(1.0));
    drop(a);
    wait_until("the worker to see a closed connection", WAIT, || open_connections(&p) <= 1.0);
    let mut d = Conn::connect(p.listen).unwrap();
    assert_eq!(d.get("/up/get").unwrap().status, 200, "capacity freed by a closed connection is reused");
    let _ = b.stream().write_all(b"");
}

#[test]
fn readme_walkthrough_with_the_repository_config() {
    // `cargo xtask run` = demo upstream on 127.0.0.1:8081 + `portcullis run --config portcullis.toml`.
    // Here the upstream runs in-process (same code as the demo-upstream binary) and the listen
    // addresses are overridden so the test cannot collide with a running instance.
    let up = match Httpbin::start("127.0.0.1:8081") {
        Ok(u) => u,
        Err(e) => {
            panic!("port 8081 (apps/httpbin.json's target) is busy: {e}; stop whatever uses it")
        }
    };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let (listen, admin) = (free_addr(), free_addr());
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(root)
        .args(["run", "--config", "portcullis.toml", "--listen", &listen.to_string(), "--admin", &admin.to_string()])
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let resp = wait::poll(WAIT, || client::get(listen, "/httpbin/get?foo=bar").ok());
    // The API visibility walkthrough's API.
    let post = client::get(listen, "/jsonplaceholder/posts/1");
    let _ = child.kill();
    let _ = child.wait();
    let r = resp.unwrap_or_else(|| panic!("no answer:\n{}", std::fs::read_to_string(log.path()).unwrap_or_default()));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["args"]["foo"], "bar");
    let post = post.expect("jsonplaceholder");
    assert_eq!((post.status, post.json()["id"].as_u64()), (200, Some(1)), "{}", post.text());
    assert!((1..=2).contains(&up.accepted()), "a pooled upstream connection, or one per worker");
}

/// Above 256 open connections a waiting connection gives its read buffer back and writes go
/// through the runtime instead of a direct send; requests on such connections (with and without
/// bodies, keep-alive) must be served the same.
#[test]
fn many_open_connections_release_idle_buffers_and_still_serve() {
    let (p, _up) = simple("");
    let mut conns: Vec<Conn> = (0..300).map(|_| Conn::connect(p.listen).expect("connect")).collect();
    let m = p.wait_metrics("300 open connections", |m| {
        metrics::value(m, "portcullis_worker_open_connections{worker=\"0\"}").unwrap_or(0.0) >= 300.0
    });
    assert!(metrics::value(&m, "portcullis_worker_open_connections{worker=\"0\"}").unwrap_or(0.0) >= 300.0, "{m}");
    for (i, c) in conns.iter_mut().enumerate().step_by(15) {
        for _ in 0..2 {
            let r = c.get(&format!("/up/get?i={i}")).expect("get");
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["args"]["i"], i.to_string());
        }
        let body = pattern(10_000);
        let r = c.request("POST", "/up/anything", "", &body).expect("post");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["data"].as_str().unwrap().len(), 10_000);
    }
}

#[test]
fn upstream_connection_cap_queues_requests_and_times_them_out() {
    // Two slots: six concurrent 300 ms requests are all answered over at most two upstream
    // connections, four of them after waiting; a tunnel does not hold a slot.
    let (p, up) = simple("upstream_max_connections = 2\nupstream_queue_timeout_ms = 5000");
    let listen = p.listen;
    let started = Instant::now();
    let handles: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || client::get(listen, "/up/slow-head/300").map(|r| r.status)))
        .collect();
    let statuses: Vec<_> = handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
    assert_eq!(statuses, vec![200; 6]);
    assert!(up.accepted() <= 2, "upstream saw {} connections, cap is 2", up.accepted());
    // Three rounds of two at 300 ms each (no upper bound asserted: the machine may be busy).
    assert!(started.elapsed() >= Duration::from_millis(850), "the cap did not queue: {:?}", started.elapsed());
    // Four wait when all six arrive within the first 300 ms (the usual case); a thread started
    // late on a busy machine may find a slot free, so at least one, at most four.
    let queued = |m: &str| metrics::value(m, "portcullis_upstream_queued_total{worker=\"0\"}").unwrap_or(0.0);
    // The six requests and their waits are counted in the same published snapshot.
    let m = p.wait_metrics("the six requests counted", |m| {
        metrics::value(m, "portcullis_worker_requests_total{worker=\"0\"}").unwrap_or(0.0) >= 6.0
    });
    assert!((1.0..=4.0).contains(&queued(&m)), "{m}");

    let mut ws = Conn::connect(p.listen).unwrap();
    ws.send(b"GET /up/ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert_eq!(ws.read_head().unwrap().status, 101);
    let mut ws2 = Conn::connect(p.listen).unwrap();
    ws2.send(b"GET /up/ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert_eq!(ws2.read_head().unwrap().status, 101);
    assert_eq!(client::get(p.listen, "/up/get").unwrap().status, 200, "two tunnels must not take both slots");
    drop((ws, ws2));

    // One slot, a short queue timeout: the second request gets 503 while the first holds it.
    let (p, up) = simple("upstream_max_connections = 1\nupstream_queue_timeout_ms = 100");
    let listen = p.listen;
    let slow = std::thread::spawn(move || client::get(listen, "/up/slow-head/1500").map(|r| r.status));
    wait_until("the slow request to hold the one upstream slot", WAIT, || up.heads() >= 1);
    let r = client::get(p.listen, "/up/get").unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("upstream connection limit reached"), "{}", r.text());
    assert_eq!(slow.join().unwrap().unwrap(), 200);
    // The slot came back: the next request is served.
    assert_eq!(client::get(p.listen, "/up/get").unwrap().status, 200);
    let m = p.wait_metrics("one queue timeout", |m| {
        metrics::value(m, "portcullis_upstream_queue_timeouts_total{worker=\"0\"}") == Some(1.0)
    });
    assert_eq!(metrics::value(&m, "portcullis_upstream_queue_timeouts_total{worker=\"0\"}"), Some(1.0), "{m}");
}

/// Pooled upstream connections idle past `upstream_idle_timeout_ms` are closed by the worker's
/// periodic prune, not kept open (in CLOSE-WAIT once the upstream gives up on them) until a
/// request happens to take them.
/// A burst's upstream connections beyond `upstream_pool_size` serve the next burst, then close
/// once idle for `upstream_pool_surplus_ms`; with 0 they close at once and the next burst
/// reconnects (nginx's `keepalive N`).
#[test]
fn upstream_connections_past_the_pool_size_outlive_a_burst() {
    let idle = |m: &str| metrics::value(m, "portcullis_upstream_idle_connections{worker=\"0\"}").unwrap_or(-1.0);
    let burst = |listen: SocketAddr| {
        let handles: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(move || client::get(listen, "/up/slow-head/400").map(|r| r.status)))
            .collect();
        let statuses: Vec<_> = handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
        assert_eq!(statuses, vec![200; 8]);
    };
    let (p, up) = simple("upstream_pool_size = 2\nupstream_pool_surplus_ms = 1500");
    burst(p.listen);
    let opened = up.accepted();
    assert!((2..=8).contains(&opened), "first burst opened {opened}");
    burst(p.listen);
    assert_eq!(up.accepted(), opened, "the second burst reconnected instead of reusing the first's connections");
    let m = p.wait_metrics("two idle upstream connections", |m| idle(m) == 2.0);
    assert_eq!(idle(&m), 2.0, "surplus connections did not close after upstream_pool_surplus_ms:\n{m}");
    assert_eq!(client::get(p.listen, "/up/get").unwrap().status, 200);

    let (p, up) = simple("upstream_pool_size = 2\nupstream_pool_surplus_ms = 0");
    burst(p.listen);
    let opened = up.accepted();
    let m = p.wait_metrics("two idle upstream connections", |m| idle(m) == 2.0);
    assert_eq!(metrics::value(&m, "portcullis_upstream_idle_connections{worker=\"0\"}"), Some(2.0));
    burst(p.listen);
    // Eight concurrent 400 ms requests and two pooled connections: at least one new one, as
    // long as more than two overlap (they start together; a busy machine may stagger some).
    assert!(up.accepted() > opened, "with no surplus the pool kept more than its size");
}

#[test]
fn idle_upstream_connections_are_closed_after_the_idle_timeout() {
    let (p, _up) = simple("upstream_idle_timeout_ms = 300");
    let idle = |m: &str| metrics::sum(m, "portcullis_upstream_idle_connections");
    let r = client::get(p.listen, "/up/get").unwrap();
    assert_eq!(r.status, 200);
    let m = p.wait_metrics("a pooled upstream connection", |m| idle(m) >= 1.0);
    assert_eq!(idle(&m), 1.0, "the connection was pooled:\n{m}");
    let m = p.wait_metrics("no idle upstream connection", |m| idle(m) == 0.0);
    assert_eq!(idle(&m), 0.0, "the idle connection outlived upstream_idle_timeout_ms:\n{m}");
    // A new request still works (a fresh connection).
    assert_eq!(client::get(p.listen, "/up/get").unwrap().status, 200);
}

#[test]
fn large_response_bodies_are_spliced_intact_and_not_when_turned_off() {
    let up = upstream("up");
    for (config, expect_spliced) in [("", true), ("splice_min_body = 0", false)] {
        let p = builder().app("up", keyless_api("up", "/up/", &up.url(), "", "")).proxy_config(config).start();
        let mut conn = Conn::connect(p.listen).unwrap();
        // Sizes on both sides of the thresholds, before and after the worker has seen that this
        // API's bodies are large (then it reads heads with a small read).
        for n in [20_000, 20_000, 20_000, 3_000, 5_000, 100, 16_384, 70_000, 2_000_000, 4_000, 0, 9_000, 20_000] {
            let r = conn.get(&format!("/up/bytes/{n}")).unwrap();
            assert_eq!(r.status, 200);
            assert!(r.body == pattern(n), "{config:?} /bytes/{n}: {} bytes back", r.body.len());
        }
        // A body that trickles in: the proxy waits for the upstream between splices.
        let r = conn.get("/up/drip/50000/5/20").unwrap();
        assert!(r.body == pattern(50_000), "{config:?} drip: {} bytes back", r.body.len());
        let key = "portcullis_response_bodies_spliced_total{worker=\"0\"}";
        let m = p.wait_metrics("the 14 requests (and the spliced bodies) counted", |m| {
            metrics::value(m, "portcullis_worker_requests_total{worker=\"0\"}").unwrap_or(0.0) >= 14.0
                && (!expect_spliced || metrics::value(m, key).unwrap_or(0.0) >= 7.0)
        });
        let spliced = metrics::value(&m, key).unwrap_or(-1.0);
        if expect_spliced {
            // 20k x4, 16k, 70k, 2M and the drip at least.
            assert!(spliced >= 7.0, "{config:?}: {spliced} bodies spliced\n{m}");
            assert!(metrics::value(&m, "portcullis_response_bytes_spliced_total{worker=\"0\"}").unwrap_or(0.0) > 2e6);
        } else {
            assert_eq!(spliced, 0.0, "{config:?}\n{m}");
        }
    }
}

/// Once an API's large responses have had heads that go to the client unchanged, the next head
/// is peeked and spliced with its body: the client then gets the upstream's head byte for byte,
/// its `Connection: keep-alive` line included. A head that must be rewritten (another hop-by-hop
/// header) or a body too small to splice after a peek is read out of the socket as usual, with
/// nothing lost or seen twice. (In the default configuration: `X-RateLimit-*` reporting
/// quotas adds nothing to a keyless response.)
#[test]
fn unchanged_heads_are_spliced_with_their_bodies_and_the_others_rewritten() {
    let (p, _up) = simple("");
    let mut conn = Conn::connect(p.listen).unwrap();
    let mut whole = 0;
    let get = |conn: &mut Conn, n: usize, header: &str| {
        let r = conn.get(&format!("/up/bytes-header/{n}/{header}")).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body == pattern(n), "/bytes-header/{n}/{header}: {} bytes back", r.body.len());
        r
    };
    // Large, then small and empty bodies, then large again, on one connection.
    for n in [20_000, 20_000, 20_000, 20_000, 20_000, 100, 0, 70_000, 16_384, 5_000, 300_000, 20_000] {
        let r = get(&mut conn, n, "Connection/keep-alive");
        if r.header("connection") == Some("keep-alive") {
            assert!(n >= 4096, "a {n}-byte body was spliced with its head");
            whole += 1;
        }
    }
    assert!(whole >= 4, "only {whole} heads went out unchanged with their bodies");
    // The same API's heads now need rewriting: peeked, then read out as usual.
    for n in [20_000, 20_000, 20_000, 100, 20_000, 20_000, 70_000] {
        let r = get(&mut conn, n, "Keep-Alive/timeout=5");
        assert_eq!(r.header("keep-alive"), None, "a hop-by-hop header was passed on");
        assert_eq!(r.header("connection"), None);
    }
    // And back: unchanged heads are spliced whole again once seen twice.
    let mut whole_again = 0;
    for n in [20_000, 20_000, 20_000, 20_000] {
        whole_again += usize::from(get(&mut conn, n, "Connection/keep-alive").header("connection").is_some());
    }
    assert!(whole_again >= 1, "unchanged heads were not spliced again");
    // A client that asks to close gets `Connection: close`, never the upstream's keep-alive.
    let r = client::get(p.listen, "/up/bytes-header/20000/Connection/keep-alive").unwrap();
    assert!(r.body == pattern(20_000));
    assert_ne!(r.header("connection"), Some("keep-alive"));
}

#[test]
fn spliced_bodies_survive_slow_and_vanishing_clients_and_truncating_or_stalling_upstreams() {
    let (p, _up) = simple("upstream_response_timeout_ms = 400");
    // A client that reads nothing for a while: the proxy must wait for room in the client's
    // socket (20 MB is more than the socket buffers hold), not block the worker or drop bytes.
    let mut slow = Conn::connect(p.listen).unwrap();
    slow.send(b"GET /up/bytes/20000000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Stays: a client not reading for a while is what is tested.
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile the worker serves others.
    let r = client::get(p.listen, "/up/bytes/30000").unwrap();
    assert!(r.body == pattern(30_000));
    let r = slow.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == pattern(20_000_000), "slow reader got {} bytes", r.body.len());

    // A client that goes away in the middle of a spliced body (the next splice to its socket
    // fails with EPIPE, which must not kill the process): the worker goes on serving.
    for _ in 0..3 {
        let mut gone = Conn::connect(p.listen).unwrap();
        gone.send(b"GET /up/bytes/20000000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut some = [0u8; 100_000];
        gone.stream().read_exact(&mut some).unwrap();
        drop(gone);
    }
    let r = client::get(p.listen, "/up/bytes/30000").unwrap();
    assert!(r.body == pattern(30_000));

    // A body that trickles in: the worker waits for the upstream between splices instead of
    // spinning (a spinning worker would burn about the second the body takes).
    let cpu_secs = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.child.id())).unwrap();
        let f: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    };
    let before = cpu_secs();
    let r = client::get(p.listen, "/up/drip/40000/4/250").unwrap();
    assert!(r.body == pattern(40_000));
    let used = cpu_secs() - before;
    assert!(used < 0.5, "{used} s of CPU while a body trickled in for 1 s");

    // An upstream that closes in the middle of a body: the client's connection is closed
    // before the announced length, and the next exchange gets clean bytes.
    let mut conn = Conn::connect(p.listen).unwrap();
    conn.set_read_timeout(Duration::from_secs(5)).unwrap();
    assert!(conn.get("/up/truncated/100000/30000/0").is_err(), "a truncated body must not look complete");
    let r = client::get(p.listen, "/up/bytes/100000").unwrap();
    assert!(r.body == pattern(100_000));

    // An upstream that stalls in the middle of a body: closed after the response timeout.
    let mut conn = Conn::connect(p.listen).unwrap();
    conn.set_read_timeout(Duration::from_secs(5)).unwrap();
    let t = Instant::now();
    assert!(conn.get("/up/truncated/100000/30000/3000").is_err());
    assert!(t.elapsed() < Duration::from_millis(2500), "stalled body held the client {:?}", t.elapsed());
    let mut conn = Conn::connect(p.listen).unwrap();
    for n in [100_000, 20_000, 5_000] {
        assert!(conn.get(&format!("/up/bytes/{n}")).unwrap().body == pattern(n));
    }
}

/// Reads what the proxy sends on `s` until it closes or `within` passes; the status of the
/// first response, if any.
fn status_within(s: &mut TcpStream, within: Duration) -> Option<u16> {
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok())
}

/// Slow request bodies (a byte now and then, each read well inside the idle timeout) used to
/// hold every upstream connection `upstream_max_connections` allows, and every other request
/// then got 503. Small bodies are now read whole before a connection is taken; bodies too slow
/// for `request_body_timeout_ms` + `request_body_min_rate` get 408.
#[test]
fn slow_request_bodies_hold_no_upstream_connection() {
    let (p, _up) = simple(
        "upstream_max_connections = 4\nupstream_queue_timeout_ms = 300\nrequest_body_timeout_ms = 1500\nrequest_body_min_rate = 500",
    );
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(p.listen).unwrap();
        s.write_all(b"POST /up/anything HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nx").unwrap();
        slow.push(s);
    }
    wait_until("the 40 trickling connections to be open", WAIT, || open_connections(&p) >= 40.0);
    for i in 0..20 {
        let r = client::get(p.listen, "/up/get").unwrap();
        assert_eq!(r.status, 200, "legitimate request {i} while 40 bodies trickle in");
        let mut c = Conn::connect(p.listen).unwrap();
        let r = c.request("POST", "/up/anything", "Connection: close\r\n", b"{\"a\": 1}").unwrap();
        assert_eq!(r.status, 200, "legitimate POST {i}");
    }
    // Each trickled body is cut off once it falls behind the body clock: 408.
    let mut timed_out = 0;
    for s in &mut slow {
        if status_within(s, Duration::from_secs(5)) == Some(408) {
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, slow.len(), "every trickled body ends in 408");
}

/// Bodies larger than `request_buffer_size` stream to the upstream; one client IP streams at
/// most `max_streaming_bodies_per_client` at once per worker, and each is held to the body
/// clock, so a few slow large uploads cannot hold the upstream's connections either.
#[test]
fn streamed_bodies_are_capped_per_client_and_held_to_a_minimum_rate() {
    let (p, up) = simple(
        "upstream_max_connections = 4\nupstream_queue_timeout_ms = 300\nrequest_buffer_size = 16\nmax_streaming_bodies_per_client = 2\nrequest_body_timeout_ms = 1500\nrequest_body_min_rate = 100",
    );
    let mut streaming = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(p.listen).unwrap();
        s.write_all(b"POST /up/anything HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nx").unwrap();
        streaming.push(s);
    }
    wait_until("both bodies to be streaming to the upstream", WAIT, || up.heads() >= 2);
    let mut third = TcpStream::connect(p.listen).unwrap();
    third.write_all(b"POST /up/anything HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nx").unwrap();
    assert_eq!(status_within(&mut third, Duration::from_secs(5)), Some(429), "a third streamed body from one IP");
    // Two connections are held; the other two serve everyone else.
    for i in 0..10 {
        assert_eq!(client::get(p.listen, "/up/get").unwrap().status, 200, "request {i}");
    }
    // A body that stops coming falls behind 100 bytes/s once the 1.5 s grace is over.
    for s in &mut streaming {
        assert_eq!(status_within(s, Duration::from_secs(6)), Some(408));
    }
    // Their count is given back: a normal large upload goes through.
    let mut c = Conn::connect(p.listen).unwrap();
    let body = vec![b'z'; 5000];
    assert_eq!(c.request("POST", "/up/anything", "Connection: close\r\n", &body).unwrap().status, 200);
}

/// `[apps] strict = true`: one refused definition rejects the whole reload (and would fail
/// startup); the valid definition written with it is not loaded either.
#[test]
fn strict_apps_reject_a_reload_with_one_bad_definition() {
    let up = upstream("up");
    let p = builder().app("up", keyless_api("up", "/up/", &up.url(), "", "")).apps_config("strict = true").start();
    std::fs::write(
        p.apps_dir().join("broken.json"),
        r#"{"api_id": "broken", "use_keyless": true, "proxy": {"listen_path": "/b", "target_url": "gopher://x"}}"#,
    )
    .unwrap();
    std::fs::write(p.apps_dir().join("third.json"), keyless_api("third", "/third", &up.url(), "", "")).unwrap();
    let r = p.admin_get("/tyk/reload");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["errors"].to_string().contains("broken.json"), "{}", r.text());
    assert_eq!(client::get(p.listen, "/third/get").unwrap().status, 404, "nothing of the rejected reload applies");
    assert_eq!(client::get(p.listen, "/up/get").unwrap().status, 200);
}

/// Upstream host names are resolved when a request needs them, by the control plane (never on a
/// worker): a definition whose host does not resolve still loads and only its requests fail
/// (500 "Upstream host lookup failed", as Tyk: reverse_proxy.go:1416); a name that resolves is
/// proxied. Tyk resolves per dial too (reverse_proxy.go).
#[test]
fn upstream_host_names_resolve_per_request_and_a_bad_one_fails_only_its_requests() {
    let up = upstream("up");
    let by_name = up.url().replace("127.0.0.1", "localhost");
    let p = builder()
        .app("named", keyless_api("named", "/named/", &by_name, "", ""))
        .app("nowhere", keyless_api("nowhere", "/nowhere/", "http://portcullis-no-such-host.invalid:81", "", ""))
        .start();
    let hello = client::get(p.admin, "/hello").unwrap().json();
    // The overall status also says whether the workers are up yet; what this test means is that
    // the configuration loaded both definitions and skipped none.
    let config = &hello["details"]["config"];
    assert_eq!(config["status"], "pass", "both definitions load: {hello}");
    assert!(config["output"].as_str().unwrap_or("").contains("2 APIs"), "{hello}");
    for _ in 0..3 {
        let r = client::get(p.listen, "/named/get").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-upstream"), Some("up"));
    }
    let r = client::get(p.listen, "/nowhere/get").unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json()["error"], "Upstream host lookup failed");
    assert_eq!(client::get(p.listen, "/named/get").unwrap().status, 200, "the other API is still served");
}

/// Tyk's `error_overrides` on the errors the gateway answers itself (gateway/error_overrides.go:
/// 197-283, error_response.go:30-100): matched by the error's flag (AKI unknown key, AMF missing
/// credential, UCF upstream refused), exact status before its class, a literal body, an inline
/// template, a message alone, headers; `error_overrides_disabled` turns them off. Before, the
/// block was ignored.
#[test]
fn error_overrides_rewrite_the_gateways_own_errors() {
    let closed = free_addr();
    let overrides = r#""error_overrides": {
        "403": [{"match": {"flag": "AKI"}, "response": {"status_code": 418, "body": "{\"error\": \"api_level_override\"}",
                 "headers": {"X-Error-Flag": "AKI-API"}}}],
        "4xx": [{"match": {"flag": "AMF"}, "response": {"message": "send a key, \"please\""}}],
        "5xx": [{"match": {"flag": "UCF"}, "response": {"status_code": 502,
                 "body": "{\"code\": {{.StatusCode}}, \"m\": \"{{.Message}}\"}"}}]
    },"#;
    let keyed = |id: &str, target: &str, top: &str| {
        portcullis_tests::harness::api(
            id,
            &format!("/{id}/"),
            target,
            &format!(r#""use_standard_auth": true, {top}"#),
            "",
        )
    };
    let up = upstream("up");
    let p = builder()
        .app("k", keyed("k", &up.url(), overrides))
        .app("off", keyed("off", &up.url(), &format!("{overrides} \"error_overrides_disabled\": true,")))
        .app("dead", keyless_api("dead", "/dead/", &format!("http://{closed}/"), "", overrides))
        .start();
    let r = p.get("/k/get", "Authorization: nope\r\n");
    assert_eq!(r.status, 418, "{}", r.text());
    assert_eq!(r.text(), r#"{"error": "api_level_override"}"#);
    assert_eq!(r.header("x-error-flag"), Some("AKI-API"));
    let r = client::get(p.listen, "/k/get").unwrap();
    assert_eq!(r.status, 401, "the status stays: {}", r.text());
    assert_eq!(r.text(), "{\n    \"error\": \"send a key, \\\"please\\\"\"\n}", "message alone: the default template");
    let r = client::get(p.listen, "/dead/get").unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), r#"{"code": 502, "m": "There was a problem proxying the request"}"#);
    let r = p.get("/off/get", "Authorization: nope\r\n");
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("Access to this API has been disallowed")));
}

/// An upstream that answers each request on its own connection with the raw response its path
/// names (`/<name>`), then closes.
fn scripted_upstream(responses: Vec<(&'static str, Vec<u8>)>) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut req = Vec::new();
            let mut b = [0; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            let text = String::from_utf8_lossy(&req).to_string();
            let path = text.split(' ').nth(1).unwrap_or("").trim_start_matches("/u").to_string();
            let resp = responses.iter().find(|(p, _)| *p == path).map(|(_, r)| r.clone()).unwrap_or_default();
            let _ = s.write_all(&resp);
        }
    });
    addr
}

/// Tyk's `error_overrides` on upstream 4xx/5xx responses (gateway/res_handler_error_override.go,
/// error_overrides.go `ApplyUpstreamOverride`): by status alone, by `body_field`/`body_value`
/// (gjson) and `message_pattern` in the first 4096 bytes of the body, first match wins; the
/// replaced body as an inline template (`{{.StatusCode}}`, `{{.Message}}` JSON-escaped) or a
/// template file; upstream headers kept, Content-Type and Content-Length set. A response no
/// rule matches arrives byte for byte, whatever its framing. Before, such rules were refused.
#[test]
fn error_overrides_rewrite_upstream_errors() {
    let big_json = format!("{{\"pad\": \"{}\", \"target_value\": \"find_me_if_you_can\"}}", "x".repeat(5000));
    let big_body: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let resp = |status: &str, extra: &str, body: &[u8]| {
        let mut r = format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        r.extend_from_slice(body);
        r
    };
    let chunked_body = "{\"error\": {\"type\": \"other\"}, \"detail\": \"Connection kept\"}";
    let mut chunked =
        b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\nX-Up: kept\r\n\r\n".to_vec();
    for piece in chunked_body.as_bytes().chunks(7) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut chunked_match = b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    chunked_match.extend_from_slice(b"10\r\n{\"error\": {\"type\r\n19\r\n\": \"database_timeout\"}}   \r\n0\r\n\r\n");
    let mut close_delimited = b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\n".to_vec();
    close_delimited.extend_from_slice(&big_body);
    let up = scripted_upstream(vec![
        ("/missing", resp("404 Not Found", "X-Up: kept\r\nContent-Type: text/html\r\n", b"<h1>nope</h1>")),
        ("/field", resp("500 Internal Server Error", "X-Up: kept\r\n", br#"{"error": {"type": "database_timeout"}}"#)),
        ("/pattern", resp("500 Internal Server Error", "", b"Connection to db lost")),
        ("/template", resp("500 Internal Server Error", "", br#"{"error": "template"}"#)),
        ("/escape", resp("500 Internal Server Error", "", br#"{"error": "json_escape"}"#)),
        ("/file", resp("502 Bad Gateway", "", b"bad")),
        ("/beyond", resp("500 Internal Server Error", "", big_json.as_bytes())),
        ("/nomatch", resp("500 Internal Server Error", "X-Up: kept\r\n", br#"{"error": {"type": "other"}}"#)),
        ("/large", resp("500 Internal Server Error", "", &big_body)),
        ("/chunked", chunked),
        ("/chunked-match", chunked_match),
        ("/close", close_delimited),
        ("/ok", resp("200 OK", "", br#"{"error": "template"}"#)),
    ]);
    let overrides = r#""error_overrides": {
        "404": [{"response": {"status_code": 420, "body": "{\"error\": \"api_level_upstream\", \"status\": 404}",
                 "headers": {"X-Error-Flag": "UPSTREAM-API"}}}],
        "500": [
            {"match": {"body_field": "error.type", "body_value": "database_timeout"},
             "response": {"status_code": 501, "body": "{\"status\": \"field\"}", "headers": {"X-Override": "1"}}},
            {"match": {"message_pattern": "Connection.*lost"}, "response": {"status_code": 503, "message": "db <down>"}},
            {"match": {"body_field": "error", "body_value": "template"},
             "response": {"status_code": 501, "body": "{\"code\": {{.StatusCode}}}"}},
            {"match": {"body_field": "error", "body_value": "json_escape"},
             "response": {"status_code": 502, "message": "Invalid token \"abc\"\nand <b>",
                          "body": "{\"error_detail\": \"{{.Message}}\"}"}},
            {"match": {"body_field": "target_value", "body_value": "find_me_if_you_can"},
             "response": {"status_code": 506, "body": "{\"status\": \"matched_truncated_body\"}"}}
        ],
        "502": [{"response": {"template": "upstream_error", "message": "upstream \"broke\""}}]
    },"#;
    let templates = tempfile::tempdir().unwrap();
    std::fs::write(
        templates.path().join("upstream_error.json"),
        "{\"status\": \"{{.StatusCode}}\", \"detail\": \"{{ .Message }}\"}",
    )
    .unwrap();
    std::fs::write(templates.path().join("upstream_error.xml"), "<e s=\"{{.StatusCode}}\">{{.Message}}</e>").unwrap();
    let p = builder()
        .apps_config(&format!("template_path = {:?}", templates.path().display().to_string()))
        .app("u", keyless_api("u", "/u/", &format!("http://{up}"), "", overrides))
        .start();
    let get = |path: &str| client::get(p.listen, path).unwrap();

    let r = get("/u/missing");
    assert_eq!(r.status, 420, "{}", r.text());
    assert_eq!(r.text(), r#"{"error": "api_level_upstream", "status": 404}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()));
    assert_eq!((r.header("x-error-flag"), r.header("x-up")), (Some("UPSTREAM-API"), Some("kept")));

    let r = get("/u/field");
    assert_eq!((r.status, r.text().as_str(), r.header("x-override")), (501, r#"{"status": "field"}"#, Some("1")));
    let r = get("/u/chunked-match");
    assert_eq!((r.status, r.text().as_str()), (501, r#"{"status": "field"}"#), "a chunked body, decoded to match");
    assert_eq!(r.header("transfer-encoding"), None);

    let r = get("/u/pattern");
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "{\n    \"error\": \"db <down>\"\n}", "a message alone: the default template");

    let r = get("/u/template");
    assert_eq!((r.status, r.text().as_str()), (501, r#"{"code": 501}"#));
    let r = get("/u/escape");
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), r#"{"error_detail": "Invalid token \"abc\"\u000Aand \u003Cb\u003E"}"#, "Go's JSEscapeString");

    let r = get("/u/file");
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), r#"{"status": "502", "detail": "upstream \"broke\""}"#);
    let mut c = client::Conn::connect(p.listen).unwrap();
    let r = c.request("GET", "/u/file", "Content-Type: text/xml\r\n", b"").unwrap();
    assert_eq!(r.text(), "<e s=\"502\">upstream &#34;broke&#34;</e>");
    assert_eq!(r.header("content-type"), Some("text/xml"));

    // Tyk looks at the first 4096 bytes only: a value beyond them does not match.
    let r = get("/u/beyond");
    assert_eq!((r.status, r.body.len()), (500, big_json.len()));
    assert_eq!(r.body, big_json.as_bytes());

    // No rule matches: everything arrives as sent.
    let r = get("/u/nomatch");
    assert_eq!((r.status, r.text().as_str()), (500, r#"{"error": {"type": "other"}}"#));
    assert_eq!(r.header("x-up"), Some("kept"));
    let r = get("/u/large");
    assert_eq!(r.status, 500);
    assert!(r.body == big_body, "a large Content-Length body: {} bytes of {}", r.body.len(), big_body.len());
    let r = get("/u/chunked");
    assert_eq!((r.status, r.text().as_str()), (500, chunked_body));
    assert_eq!((r.header("transfer-encoding"), r.header("x-up")), (Some("chunked"), Some("kept")));
    let r = get("/u/close");
    assert_eq!(r.status, 500);
    assert!(r.body == big_body, "a close-delimited body: {} bytes of {}", r.body.len(), big_body.len());
    let r = get("/u/ok");
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"error": "template"}"#), "2xx never");
}

/// A rule naming a template file that is not there refuses its definition, naming the field and
/// the template.
#[test]
fn error_overrides_with_a_missing_template_are_refused() {
    let up = upstream("up");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("apps")).unwrap();
    let rule = r#""error_overrides": {"404": [{"response": {"template": "nowhere"}}]},"#;
    std::fs::write(dir.path().join("apps/u.json"), keyless_api("u", "/u/", &up.url(), "", rule)).unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "[proxy]\nlisten = \"127.0.0.1:1\"\n[admin]\nlisten = \"127.0.0.1:2\"\n[apps]\ndir = \"apps\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", "p.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("error_overrides.404[0].response.template"), "{text}");
    assert!(text.contains("nowhere"), "{text}");
}

/// Tyk's request size limits (gateway/mw_request_size_limit.go:22-112): `size_limits` entries
/// (path below the listen path, method exact) and the version's `global_size_limit`, judged by
/// the declared `Content-Length` (over: 400 "Request is too large", equal passes; none: 411),
/// never on GET. Before, such definitions were refused (size_limits) or the limit ignored
/// (global_size_limit).
#[test]
fn size_limits_refuse_what_tyk_refuses() {
    let up = upstream("up");
    let ext = r#", "extended_paths": {"size_limits": [{"path": ".*", "method": "POST", "size_limit": 10}]}"#;
    let p = builder()
        .app("s", portcullis_tests::harness::api("s", "/s/", &up.url(), r#""use_keyless": true,"#, ext))
        .app(
            "g",
            portcullis_tests::harness::api(
                "g",
                "/g/",
                &up.url(),
                r#""use_keyless": true,"#,
                r#", "global_size_limit": 20"#,
            ),
        )
        .start();
    let send = |method: &str, path: &str, headers: &str, body: &[u8]| {
        let mut c = Conn::connect(p.listen).unwrap();
        c.request(method, path, &format!("{headers}Connection: close\r\n"), body).unwrap()
    };
    let r = send("POST", "/s/anything", "", b"01234567890");
    assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("Request is too large")));
    assert_eq!(send("POST", "/s/anything", "", b"0123456789").status, 200, "equal passes");
    assert_eq!(send("PUT", "/s/anything", "", b"01234567890").status, 200, "the entry is for POST only");
    let mut c = Conn::connect(p.listen).unwrap();
    let chunked = "POST /s/anything HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    c.send(chunked.as_bytes()).unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.json()["error"].as_str()), (411, Some("Content length is required for this request")));
    assert_eq!(send("POST", "/g/anything", "", &[b'x'; 21]).status, 400);
    assert_eq!(send("PATCH", "/g/anything", "", &[b'x'; 20]).status, 200);
}

/// Tyk's `validate_json` (gateway/mw_validate_json.go:36-92): the body of a matching request is
/// checked against the entry's schema (the pattern `anything`, without a leading `/`, is searched
/// in the path as Tyk does); not JSON: 400 `JSON parsing error: ...`; refused by the schema:
/// 422 or `error_response_code`, every error as `<field>: <what>`. Before, the definition was
/// refused.
#[test]
fn validate_json_checks_bodies_against_the_schema() {
    let up = upstream("up");
    let schema = r#"{"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                     "email": {"type": "string", "format": "email"}}, "required": ["name"]}"#;
    let ext = |code: u16| {
        format!(
            r#", "extended_paths": {{"validate_json": [{{"path": "anything", "method": "POST", "schema": {schema}, "error_response_code": {code}}}]}}"#
        )
    };
    let p = builder()
        .app("v", portcullis_tests::harness::api("v", "/v/", &up.url(), r#""use_keyless": true,"#, &ext(0)))
        .app("w", portcullis_tests::harness::api("w", "/w/", &up.url(), r#""use_keyless": true,"#, &ext(400)))
        .start();
    let post = |path: &str, body: &str| {
        let mut c = Conn::connect(p.listen).unwrap();
        c.request("POST", path, "Content-Type: application/json\r\nConnection: close\r\n", body.as_bytes()).unwrap()
    };
    assert_eq!(post("/v/anything", r#"{"name": "x", "age": 3}"#).status, 200);
    let r = post("/v/anything", r#"{"age": "old", "email": "nope"}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("(root): ") && msg.contains("age: ") && msg.contains("email: ") && msg.contains("; "),
        "{msg}"
    );
    let r = post("/v/anything", "{not json");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().starts_with("JSON parsing error: "), "{}", r.text());
    assert_eq!(post("/v/anything", "").status, 400, "an empty body is not JSON");
    assert_eq!(post("/w/anything", r#"{"age": 1}"#).status, 400, "error_response_code");
    let mut c = Conn::connect(p.listen).unwrap();
    let r = c.request("PUT", "/v/anything", "Connection: close\r\n", b"{not json").unwrap();
    assert_eq!(r.status, 200, "the entry is for POST");
}

/// Tyk's circuit breakers (gateway/reverse_proxy.go:1354-1369; circuitbreaker's RateBreaker):
/// upstream errors and 5xx answers count as failures; once `samples` requests are in the window
/// and the failure share reaches `threshold_percent`, the breaker opens and requests get 503
/// "Service temporarily unavailable." without reaching the upstream. Before, the definition was
/// refused.
#[test]
fn circuit_breakers_open_on_failures_and_answer_503() {
    let up = upstream("up");
    let closed = free_addr();
    let cb = r#", "extended_paths": {"circuit_breakers": [{"path": "status", "method": "GET", "threshold_percent": 0.5,
                   "samples": 3, "return_to_service_after": 60, "disable_half_open_state": true}]}"#;
    let p = builder()
        .app("c", portcullis_tests::harness::api("c", "/c/", &up.url(), r#""use_keyless": true,"#, cb))
        .app(
            "d",
            portcullis_tests::harness::api("d", "/d/", &format!("http://{closed}/"), r#""use_keyless": true,"#, cb),
        )
        .start();
    assert_eq!(client::get(p.listen, "/c/status/200").unwrap().status, 200);
    assert_eq!(client::get(p.listen, "/c/status/500").unwrap().status, 500);
    assert_eq!(client::get(p.listen, "/c/status/503").unwrap().status, 503, "2 of 3 failed: open now");
    let heads = up.heads();
    let r = client::get(p.listen, "/c/status/200").unwrap();
    assert_eq!((r.status, r.json()["error"].as_str()), (503, Some("Service temporarily unavailable.")));
    assert_eq!(up.heads(), heads, "the upstream was not contacted");
    assert_eq!(client::get(p.listen, "/c/get").unwrap().status, 200, "paths without the entry are not held");
    // Connection failures count too.
    for _ in 0..3 {
        assert_eq!(client::get(p.listen, "/d/status/200").unwrap().status, 500);
    }
    assert_eq!(client::get(p.listen, "/d/status/200").unwrap().status, 503);
}

/// `GET /hello` and `/ready` on the gateway listener, as Tyk serves them when it has no separate
/// control port: registered on its router before any API (gateway/server.go:898-899, the router
/// of api_loader.go:1388), so they win over an API at listen path `/`. The body is
/// `liveCheckHandler`'s (health_check.go:212-262): `HealthCheckResponse`'s fields in order
/// (apidef/health_check.go:19-33), each item with `time`, written by `json.Encoder` (a trailing
/// newline); `/ready` is `readinessHandler`'s (health_check.go:306-321); another method gets
/// 405 (health_check.go:213-216, api.go:113 and 198-216). They count in the metrics as requests
/// with no API and write no request record (Tyk's analytics see only APIs).
#[test]
fn hello_and_ready_answer_on_the_gateway_listener_before_any_api() {
    let up = upstream("root");
    let p = builder().app("root", keyless_api("root", "/", &up.url(), "", "")).start();
    let mut c = Conn::connect(p.listen).unwrap();
    let r = c.get("/hello").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-upstream"), None, "answered by the gateway, not the API at /");
    let text = r.text();
    assert!(text.ends_with("}\n") && !text.ends_with("\n\n"), "{text:?}");
    let at = |k: &str| text.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("no {k} in {text}"));
    assert_eq!(at("status"), 1, "{text}");
    assert!(at("version") < at("description") && at("description") < at("details"), "{text}");
    let v = r.json();
    assert_eq!((v["description"].as_str(), v["version"].as_str()), (Some("Tyk GW"), Some(env!("CARGO_PKG_VERSION"))));
    assert!(v.get("uptime_seconds").is_none(), "the admin listener's fields stay there: {v}");
    let details = v["details"].as_object().unwrap_or_else(|| panic!("no details: {v}"));
    assert!(details.contains_key("config") && details.contains_key("keystore"), "{v}");
    for (name, item) in details {
        assert!(matches!(item["status"].as_str(), Some("pass" | "warn")), "{name}: {item}");
        assert!(matches!(item["componentType"].as_str(), Some("system" | "datastore")), "{name}: {item}");
        let time = item["time"].as_str().unwrap_or_default().as_bytes();
        assert!(time.len() == 20 && time[10] == b'T' && time[19] == b'Z', "{name}: {item}");
        assert!(item.get("skipped").is_none(), "{name}: {item}");
    }
    // Same connection, kept alive: the API at `/` still has every other path.
    let r = c.get("/get").unwrap();
    assert_eq!((r.status, r.header("x-upstream")), (200, Some("root")));
    let r = c.get("/hello?probe=1").unwrap();
    assert_eq!((r.status, r.json()["description"].as_str()), (200, Some("Tyk GW")), "the query is not the path");
    for path in ["/hello/x", "/helloo", "/readyz"] {
        let r = c.get(path).unwrap();
        assert_eq!(r.header("x-upstream"), Some("root"), "{path}: {}", r.text());
    }
    let r = c.get("/ready").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().ends_with("}\n"), "{:?}", r.text());
    let v = r.json();
    assert_eq!((v["status"].as_str(), v["description"].as_str()), (Some("pass"), Some("Tyk GW Ready")));
    // Once the workers are up, the overall status is the admin listener's `pass`.
    wait_until("the gateway's /hello to pass", WAIT, || {
        client::get(p.listen, "/hello").unwrap().json()["status"] == "pass"
    });
    assert_eq!(p.admin_get("/hello").json()["status"], "pass");
    for (method, path) in [("POST", "/hello"), ("DELETE", "/ready"), ("PUT", "/hello")] {
        let r = Conn::connect(p.listen).unwrap().request(method, path, "", b"").unwrap();
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.text(), "{\"status\":\"error\",\"message\":\"Method Not Allowed\"}\n", "{method} {path}");
        assert_eq!(r.header("x-upstream"), None);
    }
    // Counted like a 404: no API; and no request record, while the API's requests have theirs.
    let series =
        |code: u16| format!("http_server_request_duration_seconds_count{{api=\"\",method=\"GET\",code=\"{code}\"}}");
    p.wait_metrics("the health answers counted with api=\"\"", |m| {
        metrics::value(m, &series(200)).is_some_and(|n| n >= 4.0)
            && metrics::value(m, "http_server_request_duration_seconds_count{api=\"\",method=\"POST\",code=\"405\"}")
                == Some(1.0)
    });
    let records = p.dir.path().join("analytics/records.jsonl");
    let recs = wait::wait_for("the API's four records", WAIT, || {
        let text = std::fs::read_to_string(&records).unwrap_or_default();
        (text.lines().count() >= 4).then_some(text)
    });
    for line in recs.lines() {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(rec["api_id"], "root", "{rec}");
        assert!(!matches!(rec["path"].as_str(), Some("/hello" | "/ready")), "{rec}");
    }
}

/// Tyk's `health_check_endpoint_name` and `readiness_check_endpoint_name` (config/config.go:
/// 1139-1145, routed as `"/" + name`: server.go:898-899): with `health`, `/health` answers and
/// `/hello` is an ordinary path for the APIs. An empty name is not served on the gateway
/// listener (Tyk falls back to `hello` and `ready` then: server.go:1984-1990). A reload changes
/// them; the admin listener's `/hello` stays.
#[test]
fn health_endpoint_names_are_configurable_and_empty_serves_none() {
    let up = upstream("root");
    let p = builder()
        .app("root", keyless_api("root", "/", &up.url(), "", ""))
        .proxy_config("health_check_endpoint_name = \"health\"\nreadiness_check_endpoint_name = \"\"")
        .start();
    let r = client::get(p.listen, "/health").unwrap();
    assert_eq!((r.status, r.json()["description"].as_str()), (200, Some("Tyk GW")), "{}", r.text());
    assert_eq!(r.header("x-upstream"), None);
    for path in ["/hello", "/ready"] {
        let r = client::get(p.listen, path).unwrap();
        assert_eq!(r.header("x-upstream"), Some("root"), "{path} goes to the API at /: {}", r.text());
    }
    assert_eq!(p.admin_get("/hello").status, 200, "the admin listener's /hello is always there");
    // Back to Tyk's names by reload.
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    let config = config
        .replace("health_check_endpoint_name = \"health\"", "health_check_endpoint_name = \"hello\"")
        .replace("readiness_check_endpoint_name = \"\"", "readiness_check_endpoint_name = \"ready\"");
    std::fs::write(p.config_path(), config).unwrap();
    let r = p.admin_get("/tyk/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["restart_needed"].as_array().is_some_and(|a| a.is_empty()), "{}", r.text());
    let r = client::get(p.listen, "/hello").unwrap();
    assert_eq!((r.status, r.header("x-upstream")), (200, None), "{}", r.text());
    assert_eq!(client::get(p.listen, "/ready").unwrap().json()["description"], "Tyk GW Ready");
    assert_eq!(client::get(p.listen, "/health").unwrap().header("x-upstream"), Some("root"));
}

/// Tyk's uptime checks steer load balancing (gateway/reverse_proxy.go:157-191,
/// host_checker.go): with `check_host_against_uptime_tests`, targets on a host whose check
/// fails are skipped, and with every host down the answer is 503 "all hosts are down". A
/// definition with it was refused before.
#[test]
fn uptime_checks_take_down_hosts_out_of_load_balancing() {
    let (a, b) = (upstream("a"), upstream("b"));
    let lb = |id: &str, check_b: &str| {
        format!(
            r#"{{"name": "{id}", "api_id": "{id}", "use_keyless": true,
              "version_data": {{"not_versioned": true, "versions": {{"Default": {{"name": "Default"}}}}}},
              "proxy": {{"listen_path": "/{id}/", "strip_listen_path": true, "enable_load_balancing": true,
                "target_list": ["{a}", "{b}"], "check_host_against_uptime_tests": true}},
              "uptime_tests": {{"check_list": [{{"url": "{a}/get"}}, {{"url": "{b}{check_b}"}}]}}}}"#,
            a = a.url(),
            b = b.url(),
        )
    };
    let p = builder()
        .apps_config("uptime_check_interval_secs = 1\nuptime_failure_trigger_sample_size = 2\n")
        .app("lb", lb("lb", "/status/503"))
        .start();
    let served = |p: &Proxy| -> Vec<String> {
        (0..6).map(|_| p.get("/lb/get", "").header("X-Upstream").unwrap_or("none").to_string()).collect()
    };
    // Before two failed checks both serve; then only `a` (b's check answers 503, not 200).
    wait_until("b taken out after two failed checks", WAIT, || served(&p).iter().all(|u| u == "a"));

    // Every host down: Tyk's 503.
    let p2 = builder()
        .apps_config("uptime_check_interval_secs = 1\nuptime_failure_trigger_sample_size = 1\n")
        .app("lb", lb("lb", "/status/500").replace(&format!("{}/get", a.url()), &format!("{}/status/404", a.url())))
        .start();
    wait_until("every host down", WAIT, || p2.get("/lb/get", "").status == 503);
    let r = p2.get("/lb/get", "");
    assert!(r.text().contains("all hosts are down"), "{}", r.text());
}

/// A validation refusal's file template with `{{.InvalidParams}}`, as Tyk's own CI uses one
/// (ci/tests/error-overrides: mw_validate_json.go:60-75 fills it with the error's detail,
/// handler_error.go:442-455 escapes it as the message). It refused the definition before.
#[test]
fn error_templates_get_a_validation_refusals_invalid_params() {
    let up = upstream("up");
    let templates = tempfile::tempdir().unwrap();
    std::fs::write(
        templates.path().join("error_validation_invalid_params.json"),
        r#"{"status": "{{.StatusCode}}", "detail": "{{.Message}}", "invalid_params": "{{.InvalidParams}}"}"#,
    )
    .unwrap();
    let schema = r#"{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}"#;
    let def = format!(
        r#"{{"name": "v", "api_id": "v", "use_keyless": true,
            "error_overrides": {{"422": [{{"match": {{"flag": "BIV"}}, "response": {{"status_code": 422,
                "template": "error_validation_invalid_params", "message": "Request body failed schema validation"}}}}],
              "400": [{{"match": {{"flag": "BIV"}}, "response": {{"status_code": 400,
                "template": "error_validation_invalid_params", "message": "Request body is not valid JSON"}}}}]}},
            "version_data": {{"not_versioned": true, "versions": {{"Default": {{"name": "Default", "use_extended_paths": true,
              "extended_paths": {{"validate_json": [{{"path": "/anything", "method": "POST", "schema": {schema}}}]}}}}}}}},
            "proxy": {{"listen_path": "/v/", "target_url": "{}", "strip_listen_path": true}}}}"#,
        up.url()
    );
    let p = builder()
        .apps_config(&format!("template_path = {:?}", templates.path().display().to_string()))
        .app("v", def)
        .start();
    let post = |body: &str| {
        let mut c = Conn::connect(p.listen).unwrap();
        let head = format!("Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
        c.request("POST", "/v/anything", &head, body.as_bytes()).unwrap()
    };
    let r = post(r#"{"n": "x"}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    let v = r.json();
    assert_eq!(v["detail"], "Request body failed schema validation");
    assert!(v["invalid_params"].as_str().unwrap().starts_with("n: "), "{v}");
    let r = post("{not json");
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v["detail"], "Request body is not valid JSON");
    let ip = v["invalid_params"].as_str().unwrap();
    assert!(!ip.is_empty() && !ip.starts_with("JSON parsing error") && ip != "<no value>", "{v}");
    assert_eq!(post(r#"{"n": 1}"#).status, 200);
}

/// Tyk's gateway error templates (gateway/handler_error.go:286-373, server.go:614-617): the
/// `error*` files of `template_path` write the gateway's own errors: `error_<status>.json|xml`
/// first, then `error.json|xml`, then `error.json` answered as JSON; the message JSON-escaped
/// (XML: HTML-escaped). Before, the files were ignored and Tyk's built-in template was always
/// written. A template with an action other than `{{.Message}}` is refused naming the file, as
/// any error outside a definition: the running configuration stays (Tyk panics at start).
#[test]
fn gateway_error_templates_from_template_path_write_the_gateways_errors() {
    let up = upstream("u");
    let templates = tempfile::tempdir().unwrap();
    let t = |name: &str, text: &str| std::fs::write(templates.path().join(name), text).unwrap();
    t("error.json", "{\"problem\": \"{{.Message}}\"}\n");
    t("error_401.json", "{\"code\": 401, \"why\": \"{{ .Message }}\"}");
    t("error_403.xml", "<forbidden>{{.Message}}</forbidden>");
    t("unrelated.json", "{{.Anything}}");
    let keyed = portcullis_tests::harness::api("k", "/k/", &up.url(), r#""use_standard_auth": true,"#, "");
    let p = builder()
        .apps_config(&format!("template_path = {:?}", templates.path().display().to_string()))
        .app("k", keyed)
        .start();
    let r = p.get("/k/get", "");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.text(), r#"{"code": 401, "why": "Authorization field missing"}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = p.get("/k/get", "Authorization: nope \"x\"\r\n");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.text(), "{\"problem\": \"Access to this API has been disallowed\"}\n", "error.json for a 403 in JSON");
    let r = p.get("/k/get", "Authorization: nope\r\nContent-Type: text/xml\r\n");
    assert_eq!((r.status, r.text().as_str()), (403, "<forbidden>Access to this API has been disallowed</forbidden>"));
    assert_eq!(r.header("content-type"), Some("application/xml"));
    // XML without an XML template for the status or an error.xml: error.json, as JSON.
    let r = p.get("/k/get", "Content-Type: application/xml\r\n");
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "{\"problem\": \"Authorization field missing\"}\n");
    assert_eq!(r.header("content-type"), Some("application/json"));
    // A template it cannot write: the reload is refused naming the file, the running templates stay.
    t("error_429.json", "{\"status\": {{.StatusCode}}}");
    let r = p.admin_get("/tyk/reload");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("error_429.json"), "{}", r.text());
    assert_eq!(p.get("/k/get", "").text(), r#"{"code": 401, "why": "Authorization field missing"}"#);
}
