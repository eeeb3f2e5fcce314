//! `cargo xtask dist`: the proxy's release binary built with profile-guided optimisation (PGO),
//! the build to deploy and the one `cargo xtask bench` measures.
//!
//! Four steps, each in its own directory under `target/pgo/` so that cargo caches them:
//! an instrumented release build (`-Cprofile-generate`), a training run of that binary against
//! a local upstream with a mixed workload ([`train`]), `llvm-profdata merge`, and the release
//! build that uses the profile (`-Cprofile-use`), copied to `target/dist/portcullis` and smoke
//! tested. Training is skipped when the instrumented binary has not changed since the profile
//! was made (so a change to the training alone takes effect with the next change to the proxy,
//! or after deleting `target/pgo/portcullis.profdata`). rustc lists the `-Cprofile-use` file in
//! every crate's dep-info, so cargo rebuilds the whole profile-using build, dependencies
//! included (they are compiled with the profile too), whenever the profile changes: a change
//! to the proxy crate costs one rebuild of the instrumented proxy, the training, and one full
//! release build.
//!
//! Why: the request path is one large async state machine per connection plus the runtime's
//! task and driver code; its user-space profile is flat (no symbol above 5 % of the proxy's
//! samples) and what PGO changes is the layout and branch order of all of it. Measured in
//! docs/decisions/0017-profile-guided-build.md.
//!
//! Must not: train on the benchmark's own configuration or upstream (its APIs, paths and the
//! nginx upstream are the bench's; training has its own, with request bodies, errors and
//! records on every API), or leave a training process running when it fails.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The JWT the training's authenticated API accepts (HS256, secret "train-secret", `sub`
/// "train-user").
const TRAIN_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ0cmFpbi11c2VyIiwiaWF0IjoxNzAwMDAwMDAwfQ._V9uomDHKdJMriDrAJqrjwiiggvhYnXl_2KiqgJnUJw";

/// `cargo xtask dist`: builds `target/dist/portcullis` with PGO and prints where.
pub(crate) fn dist(args: &[String], root: &Path) -> Result<()> {
    if let Some(a) = args.first() {
        bail!("unknown dist option {a:?} (cargo xtask dist takes none)");
    }
    let bin = build(root)?;
    println!("{}", bin.display());
    Ok(())
}

/// Builds (or reuses) the PGO binary and returns `target/dist/portcullis`.
pub(crate) fn build(root: &Path) -> Result<PathBuf> {
    let profdata = profdata_tool()?;
    let dir = root.join("target/pgo");
    let raw = dir.join("raw");
    let profile = dir.join("portcullis.profdata");

    eprintln!("pgo: [1/4] instrumented release build (target/pgo/gen)");
    let flags = rustflags(&format!("-Cprofile-generate={}", raw.display()));
    build_proxy(root, &dir.join("gen"), &flags)?;
    let instrumented = dir.join("gen/release/portcullis");

    if newer(&profile, &instrumented) {
        eprintln!("pgo: [2/4] training skipped: the profile is newer than the instrumented binary");
    } else {
        eprintln!("pgo: [2/4] training the instrumented proxy (target/pgo/work)");
        // Build scripts of the instrumented build write profiles too; only the proxy's count.
        let _ = std::fs::remove_dir_all(&raw);
        std::fs::create_dir_all(&raw)?;
        let report = train(&instrumented, &dir.join("work"))?;
        eprintln!("pgo: trained on {report}");
        eprintln!("pgo: [3/4] merging the profile ({})", profdata.display());
        let mut merge = Command::new(&profdata);
        merge.arg("merge").arg("-o").arg(&profile);
        let mut n = 0;
        for e in std::fs::read_dir(&raw)?.flatten() {
            if e.path().extension().is_some_and(|x| x == "profraw") {
                merge.arg(e.path());
                n += 1;
            }
        }
        if n == 0 {
            bail!("the instrumented proxy wrote no profile into {} (did it exit cleanly?)", raw.display());
        }
        crate::run_status(&mut merge)?;
    }

    eprintln!("pgo: [4/4] release build with the profile (target/pgo/use)");
    let flags = rustflags(&format!("-Cprofile-use={}", profile.display()));
    build_proxy(root, &dir.join("use"), &flags)?;
    let built = dir.join("use/release/portcullis");
    // Tested before it replaces what target/dist holds.
    smoke(&built, &dir.join("work")).context("the PGO binary failed its smoke test")?;
    let out = root.join("target/dist");
    std::fs::create_dir_all(&out)?;
    let bin = out.join("portcullis");
    // Copy through a temporary name: a running copy of the old binary keeps its inode.
    let tmp = out.join(".portcullis.new");
    std::fs::copy(&built, &tmp)?;
    std::fs::rename(&tmp, &bin)?;
    eprintln!("pgo: built {}", bin.display());
    Ok(bin)
}

/// `llvm-profdata` of the active Rust toolchain (rustup's `llvm-tools` component), installed
/// through rustup when missing: its profile format must match the compiler's LLVM.
pub(crate) fn profdata_tool() -> Result<PathBuf> {
    // The compiler cargo uses: `RUSTC` when set, as cargo honours it.
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let find = || -> Option<PathBuf> {
        let out = Command::new(&rustc).args(["--print", "sysroot"]).output().ok()?;
        let sysroot = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        let out = Command::new(&rustc).arg("-vV").output().ok()?;
        let host = String::from_utf8(out.stdout).ok()?.lines().find_map(|l| l.strip_prefix("host: "))?.to_string();
        let tool = sysroot.join("lib/rustlib").join(host).join("bin/llvm-profdata");
        tool.is_file().then_some(tool)
    };
    if let Some(t) = find() {
        return Ok(t);
    }
    eprintln!("pgo: llvm-profdata missing; installing rustup's llvm-tools component");
    let ok = Command::new("rustup").args(["component", "add", "llvm-tools"]).status().is_ok_and(|s| s.success());
    match find() {
        Some(t) => Ok(t),
        None if ok => bail!("rustup installed llvm-tools but llvm-profdata is not in the toolchain's sysroot"),
        None => bail!("no llvm-profdata: `rustup component add llvm-tools` failed or rustup is missing"),
    }
}

/// RUSTFLAGS for a PGO step: the caller's own flags, then `extra`.
fn rustflags(extra: &str) -> String {
    join_flags(std::env::var("RUSTFLAGS").ok(), extra)
}

fn join_flags(own: Option<String>, extra: &str) -> String {
    match own {
        Some(f) if !f.trim().is_empty() => format!("{} {extra}", f.trim()),
        _ => extra.to_string(),
    }
}

fn build_proxy(root: &Path, target_dir: &Path, flags: &str) -> Result<()> {
    let mut cmd = crate::cargo();
    cmd.current_dir(root)
        .args(["build", "--release", "-p", "portcullis", "--target-dir"])
        .arg(target_dir)
        .env("RUSTFLAGS", flags);
    crate::run_status(&mut cmd)
}

/// Whether `a` exists and was modified after `b` (false when `b` is missing too).
fn newer(a: &Path, b: &Path) -> bool {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (m(a), m(b)) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

/// A proxy started for training or the smoke test; stopped with SIGTERM (a clean exit is what
/// writes the profile), killed if it does not exit in time.
struct Proxy(Child);

impl Proxy {
    fn start(bin: &Path, work: &Path, port: u16) -> Result<Proxy> {
        let log = std::fs::File::create(work.join("proxy.log"))?;
        let child = Command::new(bin)
            .current_dir(work)
            .args(["run", "--config", "portcullis.toml"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut p = Proxy(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = p.0.try_wait() {
                bail!("the proxy exited at start ({st}); see {}", work.join("proxy.log").display());
            }
            if Instant::now() > deadline {
                bail!("the proxy did not listen on 127.0.0.1:{port} within 15 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(p)
    }

    fn stop(mut self) -> Result<()> {
        // SAFETY: signalling a child we started and have not reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.0.try_wait()? {
                if !st.success() {
                    bail!("the proxy exited with {st}");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the proxy did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A free loopback port (bound, then released for the proxy to take).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Writes the training configuration: a keyless API and a JWT API with a policy, both with
/// request records on, in front of `upstream`.
fn write_config(work: &Path, port: u16, admin: u16, upstream: SocketAddr) -> Result<()> {
    std::fs::create_dir_all(work.join("apps"))?;
    std::fs::write(
        work.join("apps/open.json"),
        format!(
            r#"{{"api_id": "open", "name": "open", "active": true, "use_keyless": true,
                "version_data": {{"not_versioned": true}},
                "proxy": {{"listen_path": "/open/", "target_url": "http://{upstream}/", "strip_listen_path": true}}}}"#
        ),
    )?;
    let upstream = upstream.to_string();
    std::fs::write(
        work.join("apps/jwt.json"),
        crate::workload::jwt_api("jwt", "/jwt/", "dHJhaW4tc2VjcmV0", "p", &upstream),
    )?;
    std::fs::write(work.join("apps/policies.json"), crate::workload::policy("p", "jwt"))?;
    std::fs::write(
        work.join("portcullis.toml"),
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{port}\"\nworkers = 1\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[apps]\ndir = \"apps\"\npolicies = \"apps/policies.json\"\n\n[analytics]\nenabled = true\npath = \"records.jsonl\"\nrotate_mb = 16\nkeep = 1\n\n[log]\nlevel = \"warn\"\n"
        ),
    )?;
    Ok(())
}

/// A fresh `work` directory with the training configuration, its upstream, and `bin` started on
/// it; returns the proxy's address. The upstream stops accepting when its handle is dropped.
fn start_configured(bin: &Path, work: &Path) -> Result<(Upstream, Proxy, SocketAddr)> {
    let _ = std::fs::remove_dir_all(work);
    let upstream = Upstream::start()?;
    let (port, admin) = (free_port()?, free_port()?);
    write_config(work, port, admin, upstream.addr)?;
    let proxy = Proxy::start(bin, work, port)?;
    Ok((upstream, proxy, ([127, 0, 0, 1], port).into()))
}

/// Runs the instrumented proxy through the training workload and stops it cleanly.
fn train(bin: &Path, work: &Path) -> Result<Report> {
    let (_upstream, proxy, addr) = start_configured(bin, work)?;
    let mut report = Report::default();
    for phase in PHASES {
        let r = run_phase(addr, phase)?;
        eprintln!("pgo:   {:<44} {r}", phase.name);
        report.add(&r);
    }
    proxy.stop()?;
    check(&report)?;
    Ok(report)
}

/// A training run is also a check of the instrumented proxy: every answer must be the expected
/// one, and connections may fail for at most one request in a thousand (a loaded loopback
/// host's 5 s socket timeouts).
fn check(r: &Report) -> Result<()> {
    if r.ok == 0 || r.unexpected > 0 || r.errors * 1000 > r.ok + r.unexpected + r.errors {
        bail!("the proxy answered the training workload wrongly: {r}; see target/pgo/work/proxy.log");
    }
    Ok(())
}

/// Starts `bin` with the training configuration and checks one request of each kind.
fn smoke(bin: &Path, work: &Path) -> Result<()> {
    let (_upstream, proxy, addr) = start_configured(bin, &work.join("smoke"))?;
    for phase in PHASES {
        let one = Phase { connections: 1, requests: 1, ..*phase };
        let r = run_phase(addr, &one)?;
        if r.ok != 1 {
            bail!("{}: expected one good answer, got {r}", phase.name);
        }
    }
    proxy.stop()
}

/// One kind of traffic: `requests` requests over `connections` connections (spread over a few
/// client threads), each answered with `status`. Bounded by count and by [`PHASE_LIMIT`].
#[derive(Clone, Copy)]
struct Phase {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: usize,
    jwt: bool,
    close: bool,
    connections: usize,
    requests: u64,
    status: u16,
}

const PHASE_LIMIT: Duration = Duration::from_secs(20);

const fn phase(name: &'static str, path: &'static str, connections: usize, requests: u64) -> Phase {
    Phase { name, method: "GET", path, body: 0, jwt: false, close: false, connections, requests, status: 200 }
}

/// The training mix: what an edge gateway serves (small and large keep-alive responses, a
/// request body, short connections, JWT-authenticated calls with a policy, many open
/// connections at once), plus the refusals a gateway answers itself.
const PHASES: &[Phase] = &[
    phase("small responses, keep-alive, 32 connections", "/open/small", 32, 30_000),
    phase("16 KiB responses, keep-alive, 32 connections", "/open/16k", 32, 10_000),
    Phase { method: "POST", body: 1024, ..phase("1 KiB request bodies, keep-alive", "/open/small", 16, 10_000) },
    Phase { jwt: true, ..phase("JWT + policy + header transform, keep-alive", "/jwt/small", 32, 30_000) },
    Phase { close: true, ..phase("a connection per request", "/open/small", 16, 3_000) },
    phase("400 connections open at once", "/open/small", 400, 20_000),
    Phase { status: 404, ..phase("no API matches (404)", "/nope", 8, 2_000) },
    Phase { status: 400, ..phase("JWT missing (400, as Tyk)", "/jwt/small", 8, 2_000) },
];

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Report {
    ok: u64,
    unexpected: u64,
    errors: u64,
}

impl Report {
    fn add(&mut self, o: &Report) {
        self.ok += o.ok;
        self.unexpected += o.unexpected;
        self.errors += o.errors;
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} answered as expected, {} unexpected, {} connection errors", self.ok, self.unexpected, self.errors)
    }
}

/// Runs a phase with up to 8 client threads, each keeping its share of the connections busy
/// (a request on every one of them, then every answer), until the phase's count or time is up.
fn run_phase(addr: SocketAddr, p: &Phase) -> Result<Report> {
    let threads = p.connections.clamp(1, 8);
    let deadline = Instant::now() + PHASE_LIMIT;
    let left = Arc::new(AtomicU64::new(p.requests));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let conns = p.connections / threads + usize::from(t < p.connections % threads);
            let (left, p) = (Arc::clone(&left), *p);
            std::thread::spawn(move || client(addr, &p, conns, &left, deadline))
        })
        .collect();
    let mut r = Report::default();
    for h in handles {
        r.add(&h.join().map_err(|_| anyhow::anyhow!("a training client thread panicked"))?);
    }
    Ok(r)
}

fn request(p: &Phase) -> Vec<u8> {
    let mut r = format!(
        "{} {} HTTP/1.1\r\nHost: train.local\r\nUser-Agent: portcullis-pgo\r\nAccept: */*\r\nX-Trace: abc123\r\n",
        p.method, p.path
    );
    if p.jwt {
        r.push_str(&format!("Authorization: Bearer {TRAIN_TOKEN}\r\n"));
    }
    if p.close {
        r.push_str("Connection: close\r\n");
    }
    if p.body > 0 {
        r.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", p.body));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.resize(r.len() + p.body, b'x');
    r
}

fn client(addr: SocketAddr, p: &Phase, conns: usize, left: &AtomicU64, deadline: Instant) -> Report {
    let req = request(p);
    let mut r = Report::default();
    let mut slots: Vec<Option<BufReader<TcpStream>>> = (0..conns).map(|_| None).collect();
    let take = || left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
    while Instant::now() < deadline {
        let mut sent = Vec::with_capacity(conns);
        let mut taken = 0;
        for (i, slot) in slots.iter_mut().enumerate() {
            if !take() {
                break;
            }
            taken += 1;
            if slot.is_none() {
                *slot = connect(addr).ok().map(BufReader::new);
            }
            match slot.as_mut().map(|s| s.get_mut().write_all(&req)) {
                Some(Ok(())) => sent.push(i),
                _ => {
                    r.errors += 1;
                    *slot = None;
                }
            }
        }
        if taken == 0 {
            break;
        }
        for i in sent {
            let Some(s) = slots[i].as_mut() else { continue };
            match read_response(s) {
                Ok((status, close)) => {
                    if status == p.status {
                        r.ok += 1;
                    } else {
                        r.unexpected += 1;
                    }
                    if close || p.close {
                        slots[i] = None;
                    }
                }
                Err(_) => {
                    r.errors += 1;
                    slots[i] = None;
                }
            }
        }
    }
    r
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Reads one response (Content-Length framing, as the training upstream and the proxy's own
/// answers use); returns its status and whether the server closes the connection.
fn read_response(r: &mut BufReader<TcpStream>) -> io::Result<(u16, bool)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("status line"))?;
    let (mut len, mut close) = (0usize, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                len = value.parse().map_err(|_| bad("content-length"))?;
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    io::copy(&mut r.by_ref().take(len as u64), &mut io::sink())?;
    Ok((status, close))
}

/// The training upstream: a thread per connection answering every request in one write, with
/// a 16 KiB body for paths ending in `16k` and 12 bytes otherwise (request bodies are read and
/// dropped). Stops accepting when dropped.
struct Upstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    fn start() -> Result<Upstream> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the training upstream")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(c) = conn {
                    std::thread::spawn(move || serve_upstream(c));
                }
            }
        });
        Ok(Upstream { addr, stop })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_upstream(c: TcpStream) -> io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = c.try_clone()?;
    let mut r = BufReader::new(c);
    let small = b"hello world\n".to_vec();
    let large = vec![b'x'; 16 * 1024];
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (mut len, mut close) = (0u64, false);
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection") && value.trim().eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        io::copy(&mut r.by_ref().take(len), &mut io::sink())?;
        let body = if path.ends_with("16k") { &large } else { &small };
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nServer: pgo-upstream\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes();
        out.extend_from_slice(body);
        w.write_all(&out)?;
        if close {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_training_client_and_upstream_agree_on_every_kind_of_request() {
        let up = Upstream::start().unwrap();
        for p in PHASES.iter().filter(|p| p.status == 200 && !p.jwt) {
            // Straight to the upstream: the paths keep their `/open` prefix, which it ignores.
            let one = Phase { connections: 3, requests: 7, ..*p };
            let r = run_phase(up.addr, &one).unwrap();
            assert_eq!(r, Report { ok: 7, unexpected: 0, errors: 0 }, "{}", p.name);
        }
        // A large body arrives whole.
        let mut s = BufReader::new(connect(up.addr).unwrap());
        s.get_mut().write_all(&request(&phase("x", "/16k", 1, 1))).unwrap();
        let mut head = String::new();
        while s.read_line(&mut head).unwrap() > 2 && !head.ends_with("\r\n\r\n") {}
        assert!(head.contains("Content-Length: 16384"), "{head}");
    }

    #[test]
    fn a_phase_stops_at_its_count_and_counts_refusals_as_unexpected() {
        let up = Upstream::start().unwrap();
        let p = Phase { status: 404, ..phase("x", "/a", 4, 10) };
        assert_eq!(run_phase(up.addr, &p).unwrap(), Report { ok: 0, unexpected: 10, errors: 0 });
        // Nobody listening: errors, and the phase ends by itself.
        let dead: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
        let r = run_phase(dead, &phase("x", "/a", 2, 5)).unwrap();
        assert_eq!((r.ok, r.errors), (0, 5));
    }

    #[test]
    fn training_fails_on_a_wrong_answer_or_more_than_one_error_in_a_thousand() {
        assert!(check(&Report { ok: 1000, unexpected: 0, errors: 1 }).is_ok());
        assert!(check(&Report { ok: 999, unexpected: 1, errors: 0 }).is_err());
        assert!(check(&Report { ok: 998, unexpected: 0, errors: 2 }).is_err());
        assert!(check(&Report::default()).is_err());
    }

    #[test]
    fn the_callers_rustflags_are_kept_in_front() {
        assert_eq!(
            join_flags(Some("-Ctarget-cpu=native ".into()), "-Cprofile-use=p"),
            "-Ctarget-cpu=native -Cprofile-use=p"
        );
        assert_eq!(join_flags(Some("  ".into()), "-Cprofile-use=p"), "-Cprofile-use=p");
        assert_eq!(join_flags(None, "-Cprofile-use=p"), "-Cprofile-use=p");
    }
}
