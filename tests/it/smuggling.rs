//! Differential request-smuggling test: every shape of the desync corpus
//! (`tests/fixtures/smuggling/`) goes through a real Portcullis to four real backends — a raw
//! recorder with a strict RFC 9112 parser (the reference), nginx, node's `http` server and node
//! with `insecureHTTPParser` — and each shape must be either refused or seen alike: no backend
//! parses a hidden request, no backend parses bytes the proxy did not forward as a request head,
//! the strict parser accepts everything the proxy forwards, and every other backend sees the
//! reference's requests (method, path, body) or refuses them. Every disagreement is collected and
//! the test fails once, naming each shape with what every backend saw. README.md next to the
//! corpus says more.
//!
//! nginx and node are started by the test on loopback ports; without them the test skips that
//! backend (printing why) unless `CI=true`, where a missing tool fails it. Every loop is bounded
//! in count and time; all traffic stays on 127.0.0.1.

#[path = "../fixtures/smuggling/corpus.rs"]
mod corpus;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use corpus::Shape;
use portcullis_tests::harness::{keyless_api, ProxyBuilder};

/// Longest body any backend here accepts.
const MAX_BODY: usize = 1 << 20;
/// How long a client waits for the proxy's answers to one shape.
const CLIENT_WAIT: Duration = Duration::from_millis(1000);
/// A backend's log must stay unchanged this long before the next shape is sent.
const SETTLE: Duration = Duration::from_millis(80);
/// Longest wait for a backend's log to settle.
const SETTLE_MAX: Duration = Duration::from_millis(1500);
/// Background threads and children stop after this whatever happens.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// What a backend saw.
#[derive(Clone, Debug)]
enum Seen {
    /// A request it parsed: `complete` when its whole body arrived.
    Request { method: String, target: String, body: Vec<u8>, complete: bool },
    /// Bytes it refused (a parse error, or an answer it made itself without forwarding).
    Refused(String),
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn push(log: &Log, s: Seen) {
    log.lock().unwrap_or_else(|e| e.into_inner()).push(s);
}

fn log_len(log: &Log) -> usize {
    log.lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// Bytes as an escaped excerpt.
fn esc(b: &[u8]) -> String {
    let mut s: String = b.iter().take(90).flat_map(|&c| std::ascii::escape_default(c)).map(char::from).collect();
    if b.len() > 90 {
        s.push_str(&format!("...(+{} bytes)", b.len() - 90));
    }
    s
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A strict RFC 9112 request parser (httparse for the head, framing and chunked coding by the
/// grammar): what a backend that accepts nothing ambiguous makes of the bytes the proxy sends.
mod strict {
    use super::{esc, find};

    pub(crate) enum Step {
        /// The head is not complete yet.
        NeedHead,
        /// The head is complete, the body is not.
        NeedBody {
            method: String,
            target: String,
            body: Vec<u8>,
        },
        Done {
            method: String,
            target: String,
            body: Vec<u8>,
            consumed: usize,
        },
        Bad(String),
    }

    fn is_tchar(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
    }

    fn is_field_byte(b: u8) -> bool {
        b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
    }

    fn trim_ows(v: &[u8]) -> &[u8] {
        let s = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
        let e = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(s, |i| i + 1);
        &v[s..e]
    }

    fn skip_bws(v: &[u8]) -> &[u8] {
        let n = v.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        &v[n..]
    }

    /// Where a line break is not CRLF (a CR at the very end may still get its LF).
    fn bare_cr_or_lf(d: &[u8]) -> Option<(usize, &'static str)> {
        (0..d.len()).find_map(|i| match d[i] {
            b'\n' if i == 0 || d[i - 1] != b'\r' => Some((i, "LF")),
            b'\r' if i + 1 < d.len() && d[i + 1] != b'\n' => Some((i, "CR")),
            _ => None,
        })
    }

    /// The bytes of one request from the start of `buf`.
    pub(crate) fn parse_one(buf: &[u8], max_body: usize) -> Step {
        let head_end = find(buf, b"\r\n\r\n").map(|i| i + 4);
        let head = &buf[..head_end.unwrap_or(buf.len())];
        if let Some((i, what)) = bare_cr_or_lf(head) {
            return Step::Bad(format!("bare {what} in the head at byte {i}: {}", esc(head)));
        }
        let Some(head_len) = head_end else {
            return if buf.len() > 64 * 1024 { Step::Bad("head over 64 KiB".into()) } else { Step::NeedHead };
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..head_len]) {
            Ok(httparse::Status::Complete(n)) if n == head_len => {}
            Ok(_) => return Step::Bad(format!("head does not end at its blank line: {}", esc(&buf[..head_len]))),
            Err(e) => return Step::Bad(format!("malformed head ({e}): {}", esc(&buf[..head_len]))),
        }
        let method = req.method.unwrap_or_default().to_string();
        let target = req.path.unwrap_or_default().to_string();
        let version = req.version.unwrap_or(1);
        let named =
            |n: &'static str| req.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(n)).map(|h| h.value);
        let cl: Vec<&[u8]> = named("content-length").collect();
        let te: Vec<&[u8]> = named("transfer-encoding").collect();
        let rest = &buf[head_len..];
        if !te.is_empty() {
            if !cl.is_empty() {
                return Step::Bad("both Content-Length and Transfer-Encoding".into());
            }
            if te.len() > 1 {
                return Step::Bad(format!("{} Transfer-Encoding headers", te.len()));
            }
            if !trim_ows(te[0]).eq_ignore_ascii_case(b"chunked") {
                return Step::Bad(format!("Transfer-Encoding `{}` is not `chunked`", esc(te[0])));
            }
            if version == 0 {
                return Step::Bad("Transfer-Encoding in an HTTP/1.0 request".into());
            }
            return match dechunk(rest) {
                Err(e) => Step::Bad(format!("chunked body: {e}")),
                Ok((body, _)) if body.len() > max_body => Step::Bad("body too large".into()),
                Ok((body, None)) => Step::NeedBody { method, target, body },
                Ok((body, Some(n))) => Step::Done { method, target, body, consumed: head_len + n },
            };
        }
        if cl.len() > 1 {
            return Step::Bad(format!("{} Content-Length headers", cl.len()));
        }
        let len = match cl.first() {
            None => 0,
            Some(v) => {
                let v = trim_ows(v);
                if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
                    return Step::Bad(format!("Content-Length `{}` is not a decimal number", esc(v)));
                }
                let n: usize = std::str::from_utf8(v).unwrap_or("0").parse().unwrap_or(usize::MAX);
                if n > max_body {
                    return Step::Bad(format!("Content-Length {n} too large"));
                }
                n
            }
        };
        if rest.len() < len {
            return Step::NeedBody { method, target, body: rest.to_vec() };
        }
        Step::Done { method, target, body: rest[..len].to_vec(), consumed: head_len + len }
    }

    /// One line of a chunked body (without its CRLF): no bare CR or LF in it.
    fn check_line(line: &[u8]) -> Result<(), String> {
        if line.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(format!("bare CR or LF in the line `{}`", esc(line)));
        }
        Ok(())
    }

    /// `chunk-size [ chunk-ext ]` (RFC 9112 7.1.1): `1*HEXDIG *( BWS ";" BWS name [ BWS "=" BWS value ] )`.
    fn size_line(line: &[u8]) -> Result<u64, String> {
        check_line(line)?;
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Err(format!("no chunk size in `{}`", esc(line)));
        }
        let mut size: u64 = 0;
        for &d in &line[..digits] {
            let v = (d as char).to_digit(16).unwrap_or(0) as u64;
            size = size.checked_mul(16).and_then(|s| s.checked_add(v)).ok_or("chunk size overflows")?;
        }
        let mut r = &line[digits..];
        while !r.is_empty() {
            let t = skip_bws(r);
            if t.first() != Some(&b';') {
                return Err(format!("junk after the chunk size: `{}`", esc(line)));
            }
            let t = skip_bws(&t[1..]);
            let n = t.iter().take_while(|&&b| is_tchar(b)).count();
            if n == 0 {
                return Err(format!("empty chunk extension name: `{}`", esc(line)));
            }
            r = &t[n..];
            let t = skip_bws(r);
            if t.first() == Some(&b'=') {
                let t = skip_bws(&t[1..]);
                let n = if t.first() == Some(&b'"') {
                    quoted_len(t)?
                } else {
                    t.iter().take_while(|&&b| is_tchar(b)).count()
                };
                if n == 0 {
                    return Err(format!("empty chunk extension value: `{}`", esc(line)));
                }
                r = &t[n..];
            }
        }
        Ok(size)
    }

    /// Length of the quoted-string at the start of `t`.
    fn quoted_len(t: &[u8]) -> Result<usize, String> {
        let mut i = 1;
        while i < t.len() {
            match t[i] {
                b'"' => return Ok(i + 1),
                b'\\' if i + 1 < t.len() && is_field_byte(t[i + 1]) => i += 2,
                b if is_field_byte(b) => i += 1,
                _ => return Err(format!("bad byte in a quoted chunk extension: `{}`", esc(t))),
            }
        }
        Err(format!("unterminated quoted chunk extension: `{}`", esc(t)))
    }

    /// `field-name ":" OWS field-value OWS`.
    fn field_line(line: &[u8]) -> Result<(), String> {
        check_line(line)?;
        let n = line.iter().take_while(|&&b| is_tchar(b)).count();
        if n == 0 || line.get(n) != Some(&b':') || !line[n + 1..].iter().all(|&b| is_field_byte(b)) {
            return Err(format!("malformed trailer field `{}`", esc(line)));
        }
        Ok(())
    }

    /// Decodes a chunked body: its data so far, and where it ended once it has.
    pub(crate) fn dechunk(b: &[u8]) -> Result<(Vec<u8>, Option<usize>), String> {
        let mut data = Vec::new();
        let mut i = 0;
        // An incomplete line may already show a bare LF or CR.
        let partial = |rest: &[u8]| {
            let cut = if rest.last() == Some(&b'\r') { &rest[..rest.len() - 1] } else { rest };
            check_line(cut)
        };
        loop {
            let Some(eol) = find(&b[i..], b"\r\n") else {
                partial(&b[i..])?;
                return Ok((data, None));
            };
            let size = size_line(&b[i..i + eol])?;
            i += eol + 2;
            if size == 0 {
                break;
            }
            let size = usize::try_from(size).map_err(|_| "chunk size too large")?;
            if size > super::MAX_BODY {
                return Err("chunk size too large".into());
            }
            if b.len() < i + size {
                data.extend_from_slice(&b[i..]);
                return Ok((data, None));
            }
            data.extend_from_slice(&b[i..i + size]);
            i += size;
            let after = &b[i..(i + 2).min(b.len())];
            if !b"\r\n".starts_with(after) {
                return Err(format!("chunk data not followed by CRLF but `{}`", esc(&b[i..])));
            }
            if after.len() < 2 {
                return Ok((data, None));
            }
            i += 2;
        }
        loop {
            let Some(eol) = find(&b[i..], b"\r\n") else {
                partial(&b[i..])?;
                return Ok((data, None));
            };
            let line = &b[i..i + eol];
            i += eol + 2;
            if line.is_empty() {
                return Ok((data, Some(i)));
            }
            field_line(line)?;
        }
    }
}

/// Kills (and reaps) a child when dropped; children also get SIGKILL if the test thread that
/// started them dies.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_guarded(cmd: &mut Command) -> std::io::Result<ChildGuard> {
    // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().map(ChildGuard)
}

/// The raw recorder: a TCP server that parses with [`strict`] and logs what it sees; answers
/// `200` (`Content-Length: 2`) to every complete request and `400` + close to anything else.
fn start_recorder(log: Log, stop: Arc<AtomicBool>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("recorder bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        let deadline = Instant::now() + RUN_LIMIT;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match l.accept() {
                Ok((s, _)) => {
                    let (log, stop) = (log.clone(), stop.clone());
                    std::thread::spawn(move || record_connection(s, &log, &stop));
                }
                // Stays: the accept is non-blocking so the stop flag is seen; this only stops a spin.
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    addr
}

fn record_connection(mut s: TcpStream, log: &Log, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let started = Instant::now();
    let mut last_read = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
        if last_read.elapsed() > Duration::from_secs(10) {
            break;
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                last_read = Instant::now();
                buf.extend_from_slice(&chunk[..n]);
                // At most one step per byte: every Done consumes at least one.
                for _ in 0..buf.len() {
                    match strict::parse_one(&buf, MAX_BODY) {
                        strict::Step::Done { method, target, body, consumed } => {
                            let answer: &[u8] = if method == "HEAD" {
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
                            } else {
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                            };
                            push(log, Seen::Request { method, target, body, complete: true });
                            buf.drain(..consumed);
                            let _ = s.write_all(answer);
                        }
                        strict::Step::NeedHead | strict::Step::NeedBody { .. } => break,
                        strict::Step::Bad(why) => {
                            push(log, Seen::Refused(why));
                            let _ = s.write_all(
                                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                            );
                            return;
                        }
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => break,
        }
    }
    if buf.is_empty() {
        return;
    }
    match strict::parse_one(&buf, MAX_BODY) {
        strict::Step::NeedBody { method, target, body } => {
            push(log, Seen::Request { method, target, body, complete: false })
        }
        strict::Step::NeedHead => {
            push(log, Seen::Refused(format!("connection closed inside a request head: {}", esc(&buf))))
        }
        strict::Step::Bad(why) => push(log, Seen::Refused(why)),
        strict::Step::Done { .. } => {}
    }
}

/// A tool on PATH or in the usual system directories.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A running backend: where the proxy sends requests, and what the backend saw.
struct Backend {
    name: &'static str,
    addr: SocketAddr,
    log: Log,
    _guard: Option<ChildGuard>,
    _dir: Option<tempfile::TempDir>,
}

fn start_raw(stop: &Arc<AtomicBool>) -> Backend {
    let log = Log::default();
    let addr = start_recorder(log.clone(), stop.clone());
    Backend { name: "raw", addr, log, _guard: None, _dir: None }
}

fn wait_listening(addr: SocketAddr, child: &mut ChildGuard, what: &str, diag: impl Fn() -> String) {
    let listening = portcullis_tests::wait::poll(portcullis_tests::WAIT, || {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("{what} exited early ({status}):\n{}", diag());
        }
        TcpStream::connect(addr).is_ok().then_some(())
    });
    if listening.is_none() {
        panic!("{what} did not listen on {addr}:\n{}", diag());
    }
}

/// nginx as a backend: it parses the proxy's requests and proxies each to a raw recorder of
/// its own (so its requests are logged with their bodies); what it answers itself (a parse
/// error, 411, 501...) comes from its access log.
fn start_nginx(bin: &Path, stop: &Arc<AtomicBool>) -> Backend {
    use std::os::unix::fs::PermissionsExt;
    let log = Log::default();
    let rec = start_recorder(log.clone(), stop.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    // One process (`master_process off`), which as root keeps its user; still world-readable,
    // should nginx ever run workers as `nobody`.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let port = portcullis_tests::free_port();
    let d = dir.path().display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 512; }}
http {{
    log_format smuggling escape=json '{{"status":"$status","request":"$request","method":"$request_method","uri":"$request_uri","upstream":"$upstream_addr"}}';
    access_log {d}/access.log smuggling;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 1m;
    client_body_buffer_size 1m;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{rec};
            proxy_ignore_client_abort on;
            proxy_connect_timeout 2s;
            proxy_read_timeout 5s;
        }}
    }}
}}
"#
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).expect("nginx.conf");
    let out = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr.log");
    let mut cmd = Command::new(bin);
    cmd.arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out);
    let mut guard = spawn_guarded(&mut cmd).unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let diag_dir = dir.path().to_path_buf();
    wait_listening(addr, &mut guard, "nginx", || {
        ["stderr.log", "error.log"]
            .iter()
            .map(|f| std::fs::read_to_string(diag_dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    });
    // Tail the access log for what nginx answered itself.
    let access = dir.path().join("access.log");
    let (tail_log, tail_stop) = (log.clone(), stop.clone());
    std::thread::spawn(move || {
        let deadline = Instant::now() + RUN_LIMIT;
        let mut offset = 0usize;
        while !tail_stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            // Stays: the tail's read interval; it runs until the stop flag, with nothing to wait on.
            std::thread::sleep(Duration::from_millis(10));
            let Ok(text) = std::fs::read(&access) else { continue };
            let Some(end) = text.iter().rposition(|&b| b == b'\n').map(|i| i + 1).filter(|&e| e > offset) else {
                continue;
            };
            for line in text[offset..end].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
                let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                if !field("upstream").is_empty() {
                    continue; // forwarded: the recorder logged it
                }
                let (method, uri) = (field("method"), field("uri"));
                if !method.is_empty() && !uri.is_empty() {
                    push(&tail_log, Seen::Request { method, target: uri, body: Vec::new(), complete: false });
                }
                push(
                    &tail_log,
                    Seen::Refused(format!(
                        "nginx answered {} itself to `{}`",
                        field("status"),
                        esc(field("request").as_bytes())
                    )),
                );
            }
            offset = end;
        }
    });
    Backend { name: "nginx", addr, log, _guard: Some(guard), _dir: Some(dir) }
}

/// node's `http` server (`tests/fixtures/smuggling/node-backend.js`), strict or insecure.
fn start_node(bin: &Path, insecure: bool) -> Backend {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/smuggling/node-backend.js");
    let name = if insecure { "node-insecure" } else { "node" };
    let mut cmd = Command::new(bin);
    cmd.arg(script)
        .arg(if insecure { "insecure" } else { "strict" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut guard = spawn_guarded(&mut cmd).unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let stdout = guard.0.stdout.take().expect("stdout");
    let log = Log::default();
    let (port_tx, port_rx) = mpsc::channel();
    let reader_log = log.clone();
    std::thread::spawn(move || {
        // Ends when node exits (the guard kills it at the end of the test).
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            match v["ev"].as_str() {
                Some("listening") => {
                    let _ = port_tx.send(v["port"].as_u64().unwrap_or(0) as u16);
                }
                Some("request") => push(
                    &reader_log,
                    Seen::Request {
                        method: s("method"),
                        target: s("url"),
                        body: from_hex(&s("body")),
                        complete: v["complete"].as_bool().unwrap_or(false),
                    },
                ),
                Some("error") => push(&reader_log, Seen::Refused(format!("node {}: {}", s("code"), s("reason")))),
                _ => {}
            }
        }
    });
    let port = port_rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("{name} did not start"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    wait_listening(addr, &mut guard, name, String::new);
    Backend { name, addr, log, _guard: Some(guard), _dir: None }
}

fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()).collect()
}

/// Sends one shape (and the probe) on a fresh connection; the statuses of the responses that
/// came back, in order (interim 1xx left out).
fn exchange(proxy: SocketAddr, shape: &Shape) -> Vec<u16> {
    let Ok(mut s) = TcpStream::connect_timeout(&proxy, Duration::from_secs(2)) else { return Vec::new() };
    let _ = s.set_nodelay(true);
    let _ = s.set_write_timeout(Some(CLIENT_WAIT));
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let mut raw = shape.bytes.clone();
    raw.extend_from_slice(&corpus::probe(&shape.name));
    let _ = s.write_all(&raw);
    let deadline = Instant::now() + CLIENT_WAIT;
    let mut got = Vec::new();
    let mut chunk = [0u8; 8192];
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => break,
        }
    }
    let first_is_head = shape.bytes.starts_with(b"HEAD ");
    statuses(&got, first_is_head)
}

/// Statuses of the responses in `b`, framed by their heads.
fn statuses(mut b: &[u8], first_is_head: bool) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..16 {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = r.parse(b) else { break };
        let code = r.code.unwrap_or(0);
        let header = |name: &str| {
            r.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| String::from_utf8_lossy(h.value))
        };
        let cl = header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        b = &b[n..];
        if (100..200).contains(&code) {
            continue;
        }
        out.push(code);
        let bodyless = (out.len() == 1 && first_is_head) || code == 204 || code == 304;
        if bodyless {
            continue;
        }
        if chunked {
            match strict::dechunk(b) {
                Ok((_, Some(end))) => b = &b[end..],
                _ => break,
            }
        } else if let Some(len) = cl {
            b = &b[len.min(b.len())..];
        } else {
            break; // close-delimited: the rest is its body
        }
    }
    out
}

/// Waits until `log` has not changed for [`SETTLE`] (at most [`SETTLE_MAX`]).
fn settle(log: &Log) {
    let start = Instant::now();
    let mut len = log_len(log);
    let mut changed = Instant::now();
    while start.elapsed() < SETTLE_MAX {
        // Stays: settling is the absence of news for SETTLE, which no event signals.
        std::thread::sleep(Duration::from_millis(10));
        let now = log_len(log);
        if now != len {
            len = now;
            changed = Instant::now();
        } else if changed.elapsed() >= SETTLE {
            return;
        }
    }
}

/// The target without an absolute form's scheme and authority.
fn normalize(target: &str) -> &str {
    for scheme in ["http://", "https://"] {
        if let Some(rest) = target.strip_prefix(scheme) {
            return rest.find('/').map_or("/", |i| &rest[i..]);
        }
    }
    target
}

/// The shape a target names (`/t/<name>/...` as sent, `/<name>/...` as the proxy forwards it).
fn shape_of<'a>(target: &'a str, names: &HashSet<&str>) -> Option<&'a str> {
    let p = normalize(target);
    let p = p.strip_prefix(corpus::LISTEN).or_else(|| p.strip_prefix('/'))?;
    let name = p.split(['/', '?', '#']).next()?;
    names.contains(name).then_some(name)
}

/// One backend's run of the corpus: per shape, the statuses the client got and what the
/// backend saw.
struct Run {
    backend: &'static str,
    statuses: Vec<Vec<u16>>,
    seen: Vec<Vec<Seen>>,
}

fn run_corpus(b: &Backend, shapes: &[Shape]) -> Run {
    let p = ProxyBuilder::new(env!("CARGO_BIN_EXE_portcullis"))
        .app("t", keyless_api("t", corpus::LISTEN, &format!("http://{}/", b.addr), "", ""))
        // Every exchange on its own upstream connection (no pooling), so nothing one shape
        // leaves in a connection reaches the next shape's requests; a backend still parses
        // every byte written to it.
        .proxy_config("upstream_pool_size = 0\nupstream_response_timeout_ms = 1500\nheader_read_timeout_ms = 1500")
        .start();
    let names: HashSet<&str> = shapes.iter().map(|s| s.name.as_str()).collect();
    let mut statuses = Vec::with_capacity(shapes.len());
    let mut starts = Vec::with_capacity(shapes.len());
    for shape in shapes {
        starts.push(log_len(&b.log));
        statuses.push(exchange(p.listen, shape));
        settle(&b.log);
    }
    // Attribute: by the shape a request's path names, else by when it was seen.
    let all = b.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let index: HashMap<&str, usize> = shapes.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    let mut seen = vec![Vec::new(); shapes.len()];
    for (j, s) in all.into_iter().enumerate() {
        let by_time = starts.iter().rposition(|&st| st <= j).unwrap_or(0);
        let by_tag = match &s {
            Seen::Request { target, .. } => shape_of(target, &names).and_then(|n| index.get(n).copied()),
            Seen::Refused(_) => None,
        };
        seen[by_tag.unwrap_or(by_time)].push(s);
    }
    drop(p);
    Run { backend: b.name, statuses, seen }
}

/// A complete request as compared between backends: method, normalized target, body.
type Req = (String, String, Vec<u8>);

fn complete(seen: &[Seen]) -> Vec<Req> {
    let mut v: Vec<Req> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Request { method, target, body, complete: true } => {
                Some((method.clone(), normalize(target).to_string(), body.clone()))
            }
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn describe(seen: &[Seen]) -> String {
    if seen.is_empty() {
        return "nothing".into();
    }
    seen.iter()
        .map(|s| match s {
            Seen::Request { method, target, body, complete } => format!(
                "{method} {} body={}B \"{}\"{}",
                esc(target.as_bytes()),
                body.len(),
                esc(&body[..body.len().min(48)]),
                if *complete { "" } else { " (incomplete)" }
            ),
            Seen::Refused(why) => format!("refused: {why}"),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Multiset difference `a - b`.
fn minus(a: &[Req], b: &[Req]) -> Vec<Req> {
    let mut rest: Vec<&Req> = b.iter().collect();
    a.iter()
        .filter(|r| match rest.iter().position(|x| x == r) {
            Some(i) => {
                rest.swap_remove(i);
                false
            }
            None => true,
        })
        .cloned()
        .collect()
}

fn show(reqs: &[Req]) -> String {
    reqs.iter().map(|(m, t, b)| format!("{m} {} body={}B", esc(t.as_bytes()), b.len())).collect::<Vec<_>>().join(", ")
}

/// The problems of one shape across the runs (`runs[0]` is the raw recorder's).
fn judge(i: usize, runs: &[Run]) -> Vec<String> {
    let mut problems = Vec::new();
    let raw = &runs[0];
    for run in runs {
        for s in &run.seen[i] {
            let Seen::Request { method, target, .. } = s else { continue };
            let t = normalize(target);
            if t.contains("/smuggled") {
                problems.push(format!(
                    "{}: parsed the hidden request `{method} {}` as a request{}",
                    run.backend,
                    esc(target.as_bytes()),
                    if t.starts_with(corpus::LISTEN) {
                        " (unstripped: the backend split it from bytes the proxy forwarded as body)"
                    } else {
                        " (stripped: the proxy itself split it off and forwarded it)"
                    }
                ));
            } else if t.starts_with(corpus::LISTEN) {
                problems.push(format!(
                    "{}: parsed `{method} {}` with the listen path still on: bytes the proxy did not forward as a request head reached its parser",
                    run.backend,
                    esc(target.as_bytes())
                ));
            }
        }
    }
    // Whatever the client got: a backend's own 400 reaches it through the proxy too.
    for s in &raw.seen[i] {
        if let Seen::Refused(why) = s {
            problems.push(format!("raw: the strict parser rejects what the proxy forwarded: {why}"));
        }
    }
    let reference = complete(&raw.seen[i]);
    for run in &runs[1..] {
        let got = complete(&run.seen[i]);
        let extra = minus(&got, &reference);
        let missing = minus(&reference, &got);
        let errors = run.statuses[i].iter().filter(|&&c| c >= 400).count();
        if !extra.is_empty() {
            problems.push(format!("{}: saw requests the reference did not: {}", run.backend, show(&extra)));
        }
        if missing.len() > errors {
            problems.push(format!(
                "{}: did not see {} and its client got only {errors} error answer(s)",
                run.backend,
                show(&missing)
            ));
        }
    }
    problems
}

#[test]
fn every_shape_is_refused_or_seen_alike_by_every_backend() {
    let shapes = corpus::corpus();
    {
        let mut names = HashSet::new();
        for s in &shapes {
            assert!(
                s.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "shape name {:?}",
                s.name
            );
            assert!(names.insert(s.name.as_str()), "duplicate shape name {}", s.name);
        }
        assert!(shapes.len() >= 150, "the corpus has {} shapes, fewer than 150", shapes.len());
    }
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut backends = vec![start_raw(&stop)];
    let tool = |name: &str| {
        let found = find_tool(name);
        if found.is_none() {
            assert!(!portcullis_tests::in_ci(), "`{name}` is not installed and CI=true (.ci/run installs it)");
            println!("smuggling: `{name}` is not installed: skipping its backend(s) (CI=true makes this a failure)");
        }
        found
    };
    if let Some(nginx) = tool("nginx") {
        backends.push(start_nginx(&nginx, &stop));
    }
    if let Some(node) = tool("node") {
        backends.push(start_node(&node, false));
        backends.push(start_node(&node, true));
    }
    println!(
        "smuggling: {} shapes x {} backends ({})",
        shapes.len(),
        backends.len(),
        backends.iter().map(|b| b.name).collect::<Vec<_>>().join(", ")
    );
    let runs: Vec<Run> = std::thread::scope(|sc| {
        let handles: Vec<_> = backends.iter().map(|b| sc.spawn(|| run_corpus(b, &shapes))).collect();
        handles.into_iter().map(|h| h.join().expect("backend run panicked")).collect()
    });
    stop.store(true, Ordering::Relaxed);

    // SMUGGLING_VERBOSE=1 prints every shape's views, not only the disagreeing ones.
    let verbose = std::env::var_os("SMUGGLING_VERBOSE").is_some_and(|v| v != "0");
    let views = |i: usize| {
        runs.iter()
            .map(|run| {
                format!("    {:<13} client got {:?}; saw: {}\n", run.backend, run.statuses[i], describe(&run.seen[i]))
            })
            .collect::<String>()
    };
    let mut report = Vec::new();
    let mut refused = 0;
    for (i, shape) in shapes.iter().enumerate() {
        // Refused by the proxy itself: an error, and the reference saw nothing but the probe.
        let only_probe = runs[0].seen[i]
            .iter()
            .all(|s| matches!(s, Seen::Request { target, complete: true, .. } if target.ends_with("/second")));
        if runs[0].statuses[i].first().is_some_and(|&c| c >= 400) && only_probe {
            refused += 1;
        }
        let problems = judge(i, &runs);
        if verbose {
            println!("shape `{}` ({}): {}\n{}", shape.name, shape.family, esc(&shape.bytes), views(i));
        }
        if problems.is_empty() {
            continue;
        }
        let mut block = format!("shape `{}` ({}; {}):\n", shape.name, shape.family, shape.origin);
        for p in &problems {
            block.push_str(&format!("    - {p}\n"));
        }
        block.push_str(&format!("    sent: {}\n", esc(&shape.bytes)));
        block.push_str(&views(i));
        report.push(block);
    }
    println!(
        "smuggling: {} shapes, {refused} refused by the proxy, {} with disagreements, {:.1} s",
        shapes.len(),
        report.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        report.is_empty(),
        "{} of {} shapes disagree (each: the problems, then what every backend saw):\n{}",
        report.len(),
        shapes.len(),
        report.join("")
    );
}
