//! `cargo xtask bench`: the side-by-side load benchmark (method and results: bench/README.md).
//!
//! For each scenario and run, measures in turn a `direct` row (no proxy), a `floor` row (a
//! byte-copy forwarder with no HTTP, `forward.rs`: what an epoll proxy pays the kernel here;
//! where bodies are large also `floor-splice`, the same forwarder splicing them, and
//! `floor-http`, that one framing responses by their parsed heads), Portcullis, nginx and
//! HAProxy, configured equivalently (one worker/thread, upstream keep-alive pool, access logs
//! off, and where the response outgrows the peers' default buffers, buffers that hold it:
//! [`PEER_BUFFER_KIB`]), against the same upstream (nginx `return 200` / a static 16 KiB file)
//! with the same load generator (wrk). Proxy pinned to CPU 1; upstream and wrk pinned to CPU 0.
//! Each proxy process is started fresh per run so its peak RSS belongs to that run. Reports
//! medians (min-max) of req/s, p50/p99 latency, proxy CPU microseconds per request (utime+stime from /proc over the wrk run /
//! requests, and its user/kernel split), the proxy's sleeps per request (voluntary context
//! switches of all its threads), its CPU's busy time per request (`/proc/stat`, a cross-check the
//! host's charge for wake-ups cannot inflate), peak RSS, errors and non-2xx; prints a markdown
//! table with the ratios and writes JSON to `target/bench/<timestamp>.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procstat::{parse_cpu_times, CpuTimes};
use crate::workload::{jwt_api, policy};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

const UPSTREAM_PORT: u16 = 18181;
/// The peers' response buffers in the scenarios with large bodies (`Scenario::large_body`), in
/// KiB: room for the 16 KiB body and its head, so nginx and HAProxy read a response in one go as
/// Portcullis (whose buffers grow to the response) and the floor (64 KiB) do. Their defaults
/// (nginx `proxy_buffer_size` 4k and 8 x 4k `proxy_buffers`, HAProxy `tune.bufsize` 16384 less
/// 1024 reserved) take a 16 KiB response in 5 and 2 pieces; measured on the 2026-12-03 machine,
/// nginx with these buffers spent 0.81x the CPU per 16k request of nginx with its defaults,
/// HAProxy 0.93x (bench/README.md, "The peers' buffers in 16k"). Only there: the other
/// scenarios' 12-byte responses fit the defaults, and c1000's memory is measured with them.
const PEER_BUFFER_KIB: u32 = 32;
const PORTS: [(Target, u16); 9] = [
    (Target::Direct, UPSTREAM_PORT),
    (Target::Floor, 18187),
    (Target::FloorSplice, 18188),
    (Target::FloorHttp, 18189),
    (Target::Portcullis, 18183),
    (Target::PortcullisUring, 18185),
    (Target::Baseline, 18186),
    (Target::Nginx, 18182),
    (Target::Haproxy, 18184),
];
/// A proxy's TLS listener is its plain port plus this.
const TLS_PORT_OFFSET: u16 = 50;
const PROXY_CPU: &str = "1";
const LOAD_CPU: &str = "0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    /// `cargo xtask forward` (`forward.rs`): a byte-copy forwarder with no HTTP, what the kernel
    /// charges any epoll proxy for the traffic; the floor the proxies' CPU figures sit on.
    Floor,
    /// The same forwarder splicing the upstream's bytes to the client (`forward --splice`):
    /// the floor for a proxy that splices response bodies, measured where bodies are large
    /// (`Scenario::large_body`) only.
    FloorSplice,
    /// The splicing forwarder parsing each request head and peeking at and parsing each
    /// response head to splice it by its length (`forward --splice --http`): what a
    /// hand-written epoll loop that understands HTTP/1.1 pays, with no runtime, routing, timers
    /// or pool; large-body scenarios only, next to `FloorSplice`.
    FloorHttp,
    Portcullis,
    /// Portcullis with `io_driver = "uring"` (only with `--uring`).
    PortcullisUring,
    /// Another Portcullis binary (`--baseline PATH`, e.g. built from an older commit) for an
    /// A/B comparison inside one run, where the machine's drift affects both sides alike.
    Baseline,
    Nginx,
    Haproxy,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Floor => "floor",
            Target::FloorSplice => "floor-splice",
            Target::FloorHttp => "floor-http",
            Target::Portcullis => "portcullis",
            Target::PortcullisUring => "portcullis-uring",
            Target::Baseline => "portcullis-baseline",
            Target::Nginx => "nginx",
            Target::Haproxy => "haproxy",
        }
    }
    /// Whether the target has a row in `sc` (the splicing floors only where bodies are large;
    /// over TLS the proxies alone: the upstream and the forwarders speak no TLS).
    fn measured_in(self, sc: &Scenario) -> bool {
        match self {
            Target::Direct | Target::Floor if sc.tls => false,
            Target::FloorSplice | Target::FloorHttp => sc.large_body && !sc.tls,
            _ => true,
        }
    }

    /// The port of its TLS listener (TLS scenarios).
    fn tls_port(self) -> u16 {
        self.port() + TLS_PORT_OFFSET
    }

    /// The port a scenario's load goes to.
    fn port_for(self, sc: &Scenario) -> u16 {
        if sc.tls {
            self.tls_port()
        } else {
            self.port()
        }
    }

    /// The forwarder's rows, which the proxies' figures are set against.
    fn is_floor(self) -> bool {
        matches!(self, Target::Floor | Target::FloorSplice | Target::FloorHttp)
    }

    fn port(self) -> u16 {
        PORTS.iter().find(|(t, _)| *t == self).map(|(_, p)| *p).unwrap_or(0)
    }
}

struct Scenario {
    name: &'static str,
    what: &'static str,
    path: &'static str,
    connections: u32,
    close: bool,
    /// Portcullis is measured through its JWT-protected API (`/gw/...`, with a token); the
    /// peers proxy the same path plainly.
    gateway: bool,
    /// The response is larger than the peers' default buffers: they run with buffers that hold
    /// it ([`PEER_BUFFER_KIB`]).
    large_body: bool,
    /// `None` when the feature it measures does not exist yet.
    available: Option<()>,
    /// Portcullis runs with its records going to the file only, not also to the embedded
    /// search index (the default): the A/B of indexing against `gateway`.
    no_search: bool,
    /// Portcullis runs with API visibility off: the A/B of visibility against `gateway`.
    no_visibility: bool,
    /// Clients speak TLS to the proxies (each terminating it with the same certificate, an
    /// ECDSA P-256 one, TLS 1.2 and 1.3, session tickets on), the upstream plain HTTP; no
    /// direct or floor rows.
    tls: bool,
}

/// HS256 token (`{"sub":"bench-user","iat":1700000000}`, secret `bench-secret`) for `gateway`.
const GATEWAY_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaC11c2VyIiwiaWF0IjoxNzAwMDAwMDAwfQ.HuDM4wCSCo7OHlspOkWXlW-RuY70BH9XxqQ7X7HSxZw";

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "small",
        what: "12-byte body, keep-alive, 32 connections",
        path: "/small",
        connections: 32,
        close: false,
        gateway: false,
        large_body: false,
        available: Some(()),
        no_search: false,
        no_visibility: false,
        tls: false,
    },
    Scenario {
        name: "16k",
        what: "16 KiB body, keep-alive, 32 connections",
        path: "/16k",
        connections: 32,
        close: false,
        gateway: false,
        large_body: true,
        available: Some(()),
        no_search: false,
        no_visibility: false,
        tls: false,
    },
    Scenario {
        name: "close",
        what: "12-byte body, new connection per request, 32 connections",
        path: "/small",
        connections: 32,
        close: true,
        gateway: false,
        large_body: false,
        available: Some(()),
        no_search: false,
        no_visibility: false,
        tls: false,
    },
    Scenario {
        name: "c1000",
        what: "12-byte body, keep-alive, 1000 connections",
        path: "/small",
        connections: 1000,
        close: false,
        gateway: false,
        large_body: false,
        available: Some(()),
        no_search: false,
        no_visibility: false,
        tls: false,
    },
    Scenario {
        name: "gateway",
        what: "Portcullis with JWT HS256 auth + rate limit (policy, high enough not to reject) + claim-to-header transform + auth header stripped + a request record per request (JSON lines file), vs plain proxying",
        path: "/small",
        connections: 32,
        close: false,
        gateway: true,
        large_body: false,
        available: Some(()),
        no_search: false,
        no_visibility: false,
        tls: false,
    },
    Scenario {
        name: "gateway-nosearch",
        what: "gateway, with Portcullis' records going to the JSON lines file only, not also indexed for search (the default): against `gateway` in the same run, what indexing costs",
        path: "/small",
        connections: 32,
        close: false,
        gateway: true,
        large_body: false,
        available: Some(()),
        no_search: true,
        no_visibility: false,
        tls: false,
    },
    Scenario {
        name: "gateway-novis",
        what: "gateway, with API visibility off (`[visibility] enabled = false`; the default is on, sampling 1 % of requests): against `gateway` in the same run, what visibility costs",
        path: "/small",
        connections: 32,
        close: false,
        gateway: true,
        large_body: false,
        available: Some(()),
        no_search: false,
        no_visibility: true,
        tls: false,
    },
    Scenario {
        name: "cached",
        what: "12-byte body from each proxy's response cache (Portcullis: Tyk's `cache_options`; nginx: `proxy_cache`; HAProxy: `cache`), keep-alive, 32 connections; direct and floor rows: the upstream",
        path: "/cached/small",
        connections: 32,
        close: false,
        gateway: false,
        large_body: false,
        available: Some(()),
        no_search: false,
        no_visibility: false,
        tls: false,
    },
    Scenario {
        name: "tls-small",
        what: "12-byte body over TLS (TLS 1.3, the proxy terminating it), keep-alive, 32 connections",
        path: "/small",
        connections: 32,
        close: false,
        gateway: false,
        large_body: false,
        available: Some(()),
        no_search: false,
        no_visibility: false,
        tls: true,
    },
    Scenario {
        name: "tls-16k",
        what: "16 KiB body over TLS (encrypted in user space by every proxy: no splice), keep-alive, 32 connections",
        path: "/16k",
        connections: 32,
        close: false,
        gateway: false,
        large_body: true,
        available: Some(()),
        no_search: false,
        no_visibility: false,
        tls: true,
    },
    Scenario {
        name: "tls-256k",
        what: "256 KiB body over TLS, keep-alive, 32 connections",
        path: "/256k",
        connections: 32,
        close: false,
        gateway: false,
        large_body: true,
        available: Some(()),
        no_search: false,
        no_visibility: false,
        tls: true,
    },
    Scenario {
        name: "tls-handshake",
        what: "a full TLS 1.3 handshake per request (new connection per request, wrk resumes no sessions), 12-byte body, 32 connections",
        path: "/small",
        connections: 32,
        close: true,
        gateway: false,
        large_body: false,
        available: Some(()),
        no_search: false,
        no_visibility: false,
        tls: true,
    },
    Scenario {
        name: "tls-c1000",
        what: "12-byte body over TLS, keep-alive, 1000 connections: memory per TLS connection",
        path: "/small",
        connections: 1000,
        close: false,
        gateway: false,
        large_body: false,
        available: Some(()),
        no_search: false,
        no_visibility: false,
        tls: true,
    },
];

/// One wrk run against one target.
#[derive(Debug, Clone, Default)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    cpu_us_per_req: Option<f64>,
    /// The user-space and kernel parts of `cpu_us_per_req`.
    user_us_per_req: Option<f64>,
    sys_us_per_req: Option<f64>,
    /// Times the proxy's threads went to sleep (voluntary context switches), per request.
    sleeps_per_req: Option<f64>,
    /// Busy time of the proxy's CPU (`/proc/stat`), per request: the cross-check of
    /// `cpu_us_per_req` that a wake-up from idle cannot inflate (bench/README.md, "Method").
    core_us_per_req: Option<f64>,
    /// Run time of the proxy's busiest thread (its worker), per request: the data plane's own
    /// cost, without Portcullis' analytics and sink threads (`schedstat`).
    worker_us_per_req: Option<f64>,
    peak_rss_kib: Option<u64>,
    base_rss_kib: Option<u64>,
    errors: u64,
    non_2xx: u64,
    /// What else the machine did while this run was measured (see [`Noise`]).
    noise: Option<Noise>,
}

/// Interference over one wrk run, in percent of the run. The proxy's CPU figure is only
/// comparable between rows when both are near zero. `steal_pct`: time the hypervisor gave one
/// of the two benchmark vCPUs to someone else (`/proc/stat`; the CPU-per-request figure
/// excludes it, but a stolen core also loses its caches). `wait_pct`: time the measured
/// process's busiest thread was runnable but waited for its core (`/proc/<pid>/task/*/schedstat`),
/// which is what another process on the proxy's CPU (a build, a second benchmark) costs it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Noise {
    /// Largest steal share of the two benchmark CPUs.
    steal_pct: f64,
    /// `None` for the direct row (no proxy process).
    wait_pct: Option<f64>,
}

/// Steal above this share of a run marks it noisy.
const STEAL_PCT: f64 = 2.0;
/// Run-queue waits above this share of a run mark it noisy. Higher than the steal threshold
/// because a proxy's own threads wait for one another on its one core: Portcullis' worker
/// waits about 1 % of a `small` run and 3.5 % of a `gateway` run with nothing else there, and
/// 10-12 % next to a `nice 10` busy loop.
const WAIT_PCT: f64 = 5.0;

/// Steal counters of the proxy's and the load generator's CPUs.
fn read_cpu_times() -> Option<(CpuTimes, CpuTimes)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    Some((parse_cpu_times(&stat, PROXY_CPU)?, parse_cpu_times(&stat, LOAD_CPU)?))
}

/// Per thread of `pid`: (thread id, nanoseconds run, nanoseconds runnable but waiting for a
/// CPU), the first two fields of its schedstat.
fn thread_sched(pid: u32) -> Option<Vec<(u32, u64, u64)>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else { continue };
        let s = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
        if let (Some(Some(run)), Some(Some(wait))) = (f.next(), f.next()) {
            out.push((tid, run, wait));
        }
    }
    Some(out)
}

/// Run-queue wait over a run of the thread that ran most in it (a proxy's worker): another
/// process on the proxy's core shows up there. The other threads are left out because they wait
/// for the worker itself: Portcullis' analytics thread is runnable but waiting for nearly the
/// whole `gateway` run (it writes a batch whenever the worker's time slice ends), while the
/// worker waits about 3 % of it for that thread.
fn busiest_thread_wait_ns(before: &[(u32, u64, u64)], after: &[(u32, u64, u64)]) -> Option<u64> {
    after
        .iter()
        .filter_map(|&(tid, run, wait)| {
            let &(_, run0, wait0) = before.iter().find(|b| b.0 == tid)?;
            Some((run.saturating_sub(run0), wait.saturating_sub(wait0)))
        })
        .max_by_key(|&(run, _)| run)
        .map(|(_, wait)| wait)
}

/// Run time over a run of the thread that ran most in it (a proxy's worker).
fn busiest_thread_run_ns(before: &[(u32, u64, u64)], after: &[(u32, u64, u64)]) -> Option<u64> {
    after.iter().filter_map(|&(tid, run, _)| Some(run.saturating_sub(before.iter().find(|b| b.0 == tid)?.1))).max()
}

/// The noise of one run: the CPUs' counters before and after it, and the measured process's
/// run-queue wait over the run's wall time.
fn noise(before: (CpuTimes, CpuTimes), after: (CpuTimes, CpuTimes), wait: Option<(u64, Duration)>) -> Noise {
    let pct = |part: u64, total: u64| if total == 0 { 0.0 } else { part as f64 * 100.0 / total as f64 };
    let steal = |b: CpuTimes, a: CpuTimes| pct(a.steal.saturating_sub(b.steal), a.total.saturating_sub(b.total));
    Noise {
        steal_pct: steal(before.0, after.0).max(steal(before.1, after.1)),
        wait_pct: wait.map(|(ns, wall)| pct(ns, wall.as_nanos().min(u64::MAX as u128) as u64)),
    }
}

fn is_noisy(n: &Noise) -> bool {
    n.steal_pct > STEAL_PCT || n.wait_pct.is_some_and(|w| w > WAIT_PCT)
}

struct Opts {
    uring: bool,
    /// Measure the plain release build instead of the PGO one (`--no-pgo`).
    no_pgo: bool,
    baseline: Option<PathBuf>,
    scenarios: Vec<String>,
    runs: usize,
    duration: u64,
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts { uring: false, no_pgo: false, baseline: None, scenarios: Vec::new(), runs: 3, duration: 10 };
    let mut quick = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().cloned().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--scenario" => o.scenarios.push(val("--scenario")?),
            "--runs" => o.runs = val("--runs")?.parse().context("--runs: not a number")?,
            "--duration" => o.duration = val("--duration")?.parse().context("--duration: not a number")?,
            "--quick" => quick = true,
            "--uring" => o.uring = true,
            "--no-pgo" => o.no_pgo = true,
            "--baseline" => {
                let path = PathBuf::from(val("--baseline")?);
                if !path.is_file() {
                    bail!(
                        "--baseline {}: no such file (give a portcullis binary, e.g. one built from an older commit)",
                        path.display()
                    );
                }
                o.baseline = Some(path);
            }
            other => {
                bail!("unknown bench option {other:?} (use --scenario NAME, --runs N, --duration S, --quick, --uring, --no-pgo, --baseline PATH)")
            }
        }
    }
    if quick {
        o.runs = 1;
        o.duration = 3;
    }
    for s in &o.scenarios {
        if !SCENARIOS.iter().any(|x| x.name == s) {
            bail!("unknown scenario {s:?}; known: {}", SCENARIOS.iter().map(|s| s.name).collect::<Vec<_>>().join(", "));
        }
    }
    if o.runs == 0 || o.duration == 0 {
        bail!("--runs and --duration must be at least 1");
    }
    Ok(o)
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs missing tools through apt; returns the ones still missing with the reason.
fn ensure_tools() -> Vec<(&'static str, String)> {
    let wanted = [("wrk", "wrk"), ("nginx", "nginx-light"), ("haproxy", "haproxy"), ("taskset", "util-linux")];
    let missing: Vec<_> = wanted.iter().filter(|(c, _)| !have(c)).collect();
    if !missing.is_empty() {
        let pkgs: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
        eprintln!(
            "bench: installing {} through apt (missing: {})",
            pkgs.join(" "),
            missing.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
        );
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
    }
    wanted
        .iter()
        .filter(|(c, _)| !have(c))
        .map(|(c, p)| (*c, format!("`{c}` not installed and `apt-get install {p}` failed")))
        .collect()
}

fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit on our own process with a valid, initialised struct.
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn pinned(cpu: &str, prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(cpu).arg(prog);
    c
}

fn wait_port(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on port {port} after {timeout:?}")
}

/// Waits up to `timeout` for `port` to be free (a target of the previous row may still be
/// letting go of it). A port that stays taken belongs to a process this run did not start:
/// measuring then would load that process and read the CPU of one that failed to bind, so the
/// row fails instead, naming the port.
fn wait_port_free(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "port {port} is in use by a process this benchmark did not start \
                 (`ss -ltnp 'sport = :{port}'` names it); stop it and run again"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write_configs(dir: &Path, root: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("www"))?;
    std::fs::create_dir_all(dir.join("apps"))?;
    std::fs::write(dir.join("www/16k"), vec![b'x'; 16384])?;
    std::fs::write(dir.join("www/256k"), vec![b'x'; 256 * 1024])?;
    let d = dir.display();
    tls_certificate(dir)?;
    std::fs::write(
        dir.join("upstream.conf"),
        format!(
            "worker_processes 1; daemon off; pid {d}/upstream.pid; error_log {d}/upstream.err; worker_rlimit_nofile 16384;\n\
             events {{ worker_connections 16384; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000000;\n\
               server {{ listen 127.0.0.1:{UPSTREAM_PORT} reuseport backlog=4096;\n\
                 location = /small {{ return 200 \"hello world\\n\"; }}\n\
                 location = /cached/small {{ add_header Cache-Control max-age=60; return 200 \"hello world\\n\"; }}\n\
                 location = /16k {{ root {d}/www; }}\n\
                 location = /256k {{ root {d}/www; }} }} }}\n"
        ),
    )?;
    // The large bodies' paths get buffers that hold them (PEER_BUFFER_KIB); the rest nginx's defaults.
    const PROXY: &str = "proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\";";
    let mut large = String::new();
    let mut paths: Vec<&str> = SCENARIOS.iter().filter(|sc| sc.large_body).map(|sc| sc.path).collect();
    paths.sort_unstable();
    paths.dedup();
    for path in paths {
        let _ = writeln!(large, "                 location = {path} {{ {PROXY} {} }}", nginx_large_buffers());
    }
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err; worker_rlimit_nofile 16384;\n\
             events {{ worker_connections 16384; }}\n\
             http {{ access_log off; keepalive_requests 100000000;\n\
               proxy_cache_path {d}/nginx-cache levels=1 keys_zone=c:1m;\n\
               upstream u {{ server 127.0.0.1:{UPSTREAM_PORT}; keepalive 64; }}\n\
               server {{ listen 127.0.0.1:{} backlog=4096;\n\
                 location / {{ {PROXY} }}\n\
                 location /cached/ {{ proxy_cache c; proxy_cache_valid 200 60s; {PROXY} }}\n{large} }}\n\
               server {{ listen 127.0.0.1:{} ssl backlog=4096;\n\
                 ssl_certificate {d}/tls.crt; ssl_certificate_key {d}/tls.key; ssl_protocols TLSv1.2 TLSv1.3;\n\
                 ssl_session_tickets on; ssl_session_timeout 1h;\n\
                 location / {{ {PROXY} }}\n{large} }} }}\n",
            Target::Nginx.port(),
            Target::Nginx.tls_port()
        ),
    )?;
    for large_body in [false, true] {
        let bufsize = large_body.then_some(PEER_BUFFER_KIB * 1024);
        std::fs::write(dir.join(haproxy_cfg_file(large_body)), haproxy_cfg(bufsize, dir))?;
    }
    std::fs::write(
        dir.join("apps/bench.json"),
        format!(
            r#"{{"api_id": "bench", "name": "bench", "active": true, "use_keyless": true, "do_not_track": true, "version_data": {{"not_versioned": true}}, "proxy": {{"listen_path": "/", "target_url": "http://127.0.0.1:{UPSTREAM_PORT}/"}}}}"#
        ),
    )?;
    // The gateway scenario's API: JWT (HS256, secret "bench-secret"), identity claim injected
    // as a header, Authorization stripped, a policy granting the API, request records on (the
    // plain `bench` API has `do_not_track`, as nginx and HAProxy run with access logs off).
    std::fs::write(
        dir.join("apps/gw.json"),
        jwt_api("gw", "/gw/", "YmVuY2gtc2VjcmV0", "gw", &format!("127.0.0.1:{UPSTREAM_PORT}")),
    )?;
    std::fs::write(dir.join("apps/policies.json"), policy("gw", "gw"))?;
    // The cached scenario's API (its upstream says `Cache-Control: max-age=60`, without which
    // HAProxy's cache keeps nothing): Tyk's response cache on every GET (as Tyk's own sample
    // test-response-headers-cached.json), no records (as the peers run without access logs).
    std::fs::write(
        dir.join("apps/cached.json"),
        format!(
            r#"{{"api_id": "cached", "name": "cached", "active": true, "use_keyless": true, "do_not_track": true, "cache_options": {{"enable_cache": true, "cache_all_safe_requests": true, "cache_timeout": 60, "cache_response_codes": [200]}}, "version_data": {{"not_versioned": true}}, "proxy": {{"listen_path": "/cached/", "target_url": "http://127.0.0.1:{UPSTREAM_PORT}/"}}}}"#
        ),
    )?;
    for (file, target, driver) in [
        ("portcullis.toml", Target::Portcullis, "auto"),
        ("portcullis-uring.toml", Target::PortcullisUring, "uring"),
        ("portcullis-baseline.toml", Target::Baseline, "auto"),
    ] {
        let stem = file.trim_end_matches(".toml");
        // The default sinks (the file and the search index), and for `no_search` scenarios the
        // file alone. Each run starts with an empty index and spool. The baseline's config
        // names neither (a build from before them refuses the keys): its index and spool are
        // the defaults under analytics/.
        let own = if target == Target::Baseline {
            String::new()
        } else {
            format!("spool_dir = \"spool-{stem}\"\nindex_path = \"index-{stem}\"\n")
        };
        for d in [format!("spool-{stem}"), format!("index-{stem}"), "analytics".to_string()] {
            let _ = std::fs::remove_dir_all(dir.join(d));
        }
        let tls = format!(
            "\n[tls]\nlisten = \"127.0.0.1:{}\"\ncert_file = \"tls.crt\"\nkey_file = \"tls.key\"\n",
            target.tls_port()
        );
        for (suffix, sinks) in [
            ("", String::new()),
            ("-nosearch", "\n[[analytics.sinks]]\nsink = \"file\"\nrotate_mb = 64\nkeep = 1\n".into()),
            ("-novis", "\n[visibility]\nenabled = false\n".into()),
            ("-tls", tls),
        ] {
            std::fs::write(
                dir.join(format!("{stem}{suffix}.toml")),
                format!(
                    "[proxy]\nlisten = \"127.0.0.1:{}\"\nworkers = 1\nio_driver = \"{driver}\"\n\n[admin]\nlisten = \"127.0.0.1:{}\"\n\n[apps]\ndir = \"apps\"\npolicies = \"apps/policies.json\"\n\n[log]\nlevel = \"warn\"\n\n[analytics]\nenabled = true\npath = \"records-{stem}.jsonl\"\nrotate_mb = 64\nkeep = 1\n{own}{sinks}",
                    target.port(),
                    target.port() + 1000,
                ),
            )?;
        }
    }
    let _ = root;
    Ok(())
}

/// The certificate every proxy terminates TLS with in the TLS scenarios: a self-signed ECDSA
/// P-256 one for 127.0.0.1 (`tls.crt`, `tls.key`, and both in `tls.pem` for HAProxy).
fn tls_certificate(dir: &Path) -> Result<()> {
    let key = rcgen::KeyPair::generate().context("generating the bench's TLS key")?;
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .context("certificate names")?;
    let now = std::time::SystemTime::now();
    params.not_before = (now - Duration::from_secs(86_400)).into();
    params.not_after = (now + Duration::from_secs(30 * 86_400)).into();
    let cert = params.self_signed(&key).context("signing the bench's certificate")?;
    std::fs::write(dir.join("tls.crt"), cert.pem())?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
    std::fs::write(dir.join("tls.pem"), format!("{}{}", cert.pem(), key.serialize_pem()))?;
    Ok(())
}

/// nginx's buffer directives for the large-body scenarios' locations.
fn nginx_large_buffers() -> String {
    format!("proxy_buffer_size {k}k; proxy_buffers 4 {k}k;", k = PEER_BUFFER_KIB)
}

/// What the peers run with in the large-body scenarios, for the table and the JSON.
fn peer_buffers() -> String {
    format!(
        "nginx and HAProxy with buffers that hold the response: nginx `{}`, HAProxy `tune.bufsize {}` (their defaults take it in pieces; bench/README.md, \"The peers' buffers in 16k\")",
        nginx_large_buffers(),
        PEER_BUFFER_KIB * 1024
    )
}

/// The file holding HAProxy's configuration for scenarios with (or without) large bodies.
fn haproxy_cfg_file(large_body: bool) -> &'static str {
    if large_body {
        "haproxy-large.cfg"
    } else {
        "haproxy.cfg"
    }
}

/// HAProxy's configuration; `bufsize` sets `tune.bufsize` (global, hence a file of its own for
/// the scenarios with large bodies).
fn haproxy_cfg(bufsize: Option<u32>, dir: &Path) -> String {
    let tune = bufsize.map(|b| format!("  tune.bufsize {b}\n")).unwrap_or_default();
    format!(
        "global\n  nbthread 1\n  maxconn 4000\n{tune}\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  http-reuse always\n\n\
         cache c\n  total-max-size 4\n  max-age 60\n\n\
         frontend f\n  bind 127.0.0.1:{}\n  bind 127.0.0.1:{} ssl crt {}/tls.pem alpn http/1.1\n  default_backend b\n\nbackend b\n\
           http-request set-var(txn.cached) bool(1) if {{ path_beg /cached/ }}\n\
           http-request cache-use c if {{ var(txn.cached) -m bool }}\n\
           http-response cache-store c if {{ var(txn.cached) -m bool }}\n\
           server s1 127.0.0.1:{UPSTREAM_PORT}\n",
        Target::Haproxy.port(),
        Target::Haproxy.tls_port(),
        dir.display()
    )
}

/// The binaries under test: this tree's release builds of Portcullis and of xtask (for the
/// floor's forwarder), and an optional baseline Portcullis.
struct Binaries {
    portcullis: PathBuf,
    xtask: PathBuf,
    baseline: Option<PathBuf>,
}

/// A started proxy: the process to kill and the pid whose CPU and RSS we measure.
struct Running {
    child: Child,
    measured_pid: u32,
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: signalling a child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(target: Target, sc: &Scenario, dir: &Path, bins: &Binaries) -> Result<Option<Running>> {
    let child = match target {
        Target::Direct => return Ok(None),
        Target::Floor | Target::FloorSplice | Target::FloorHttp => pinned(PROXY_CPU, &bins.xtask)
            .args(["forward", "--listen", &format!("127.0.0.1:{}", target.port())])
            .args(["--upstream", &format!("127.0.0.1:{UPSTREAM_PORT}")])
            .args((target != Target::Floor).then_some("--splice"))
            .args((target == Target::FloorHttp).then_some("--http"))
            .stderr(std::fs::File::create(dir.join(format!("{}.log", target.name())))?)
            .spawn()?,
        Target::Portcullis | Target::PortcullisUring | Target::Baseline => {
            let name = target.name();
            let bin = match (target, &bins.baseline) {
                (Target::Baseline, Some(b)) => b.as_path(),
                (Target::Baseline, None) => bail!("no --baseline binary given"),
                _ => bins.portcullis.as_path(),
            };
            let suffix = match (sc.no_search, sc.no_visibility, sc.tls) {
                (true, _, _) => "-nosearch",
                (_, true, _) => "-novis",
                (_, _, true) => "-tls",
                _ => "",
            };
            pinned(PROXY_CPU, bin)
                .arg("run")
                .arg("--config")
                .arg(dir.join(format!("{name}{suffix}.toml")))
                .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
                .spawn()?
        }
        Target::Nginx => {
            pinned(PROXY_CPU, "nginx").arg("-c").arg(dir.join("nginx.conf")).stderr(Stdio::null()).spawn()?
        }
        Target::Haproxy => pinned(PROXY_CPU, "haproxy")
            .arg("-db")
            .arg("-f")
            .arg(dir.join(haproxy_cfg_file(sc.large_body)))
            .stderr(Stdio::null())
            .spawn()?,
    };
    let mut running = Running { measured_pid: child.id(), child };
    wait_port(target.port_for(sc), Duration::from_secs(10))
        .with_context(|| format!("{} did not start", target.name()))?;
    // Something answered on the port; make sure it is what was just started.
    if let Ok(Some(status)) = running.child.try_wait() {
        bail!("{} exited right after starting ({status}); see its log in {}", target.name(), dir.display());
    }
    // taskset execs the program, so the child pid is the proxy; nginx's worker is its child.
    if target == Target::Nginx {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let kids =
                std::fs::read_to_string(format!("/proc/{}/task/{}/children", running.child.id(), running.child.id()))
                    .unwrap_or_default();
            if let Some(pid) = kids.split_whitespace().next().and_then(|p| p.parse().ok()) {
                running.measured_pid = pid;
                break;
            }
            if Instant::now() > deadline {
                bail!("nginx worker process not found");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(Some(running))
}

/// A process' CPU time in clock ticks (all its threads) and how often its threads went to sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcCpu {
    user: u64,
    sys: u64,
    sleeps: u64,
}

fn proc_cpu(pid: u32) -> Option<ProcCpu> {
    let (user, sys) = stat_times(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    // /proc/PID/status counts the main thread's switches only; the worker is another thread.
    let mut sleeps = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        // A thread that ended between the listing and the read took its count with it.
        sleeps +=
            std::fs::read_to_string(task.path().join("status")).ok().and_then(|s| voluntary_switches(&s)).unwrap_or(0);
    }
    Some(ProcCpu { user, sys, sleeps })
}

/// utime and stime (fields 14 and 15) of a /proc/PID/stat line. The command (field 2) may hold
/// spaces and parentheses, so fields are counted from its last ')'.
fn stat_times(stat: &str) -> Option<(u64, u64)> {
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = after.split_whitespace().collect();
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

fn voluntary_switches(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:")).and_then(|v| v.trim().parse().ok())
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn parse_latency_us(v: &str) -> Option<f64> {
    let (num, mult) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().ok().map(|x| x * mult)
}

fn parse_wrk(out: &str) -> Result<Sample> {
    let mut s = Sample::default();
    for line in out.lines().map(str::trim) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [n, "requests", "in", ..] => s.requests = n.parse().unwrap_or(0),
            ["Requests/sec:", v] => s.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => s.p50_us = parse_latency_us(v).unwrap_or(0.0),
            ["99%", v] => s.p99_us = parse_latency_us(v).unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", n] => s.non_2xx = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                s.errors = rest.iter().filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok()).sum();
            }
            _ => {}
        }
    }
    if s.requests == 0 {
        bail!("wrk served no requests:\n{out}");
    }
    Ok(s)
}

fn run_wrk(sc: &Scenario, target: Target, duration: u64) -> Result<Sample> {
    let port = target.port_for(sc);
    let scheme = if sc.tls { "https" } else { "http" };
    let through_gateway =
        sc.gateway && matches!(target, Target::Portcullis | Target::PortcullisUring | Target::Baseline);
    let mut cmd = pinned(LOAD_CPU, "wrk");
    cmd.args(["-t1", &format!("-c{}", sc.connections), &format!("-d{duration}s"), "--latency", "--timeout", "5s"]);
    if sc.close {
        cmd.args(["-H", "Connection: close"]);
    }
    if through_gateway {
        cmd.args(["-H", &format!("Authorization: Bearer {GATEWAY_TOKEN}")]);
        cmd.arg(format!("{scheme}://127.0.0.1:{port}/gw{}", sc.path));
    } else {
        cmd.arg(format!("{scheme}://127.0.0.1:{port}{}", sc.path));
    }
    let out = cmd.output().context("running wrk")?;
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

fn measure(target: Target, sc: &Scenario, dir: &Path, bins: &Binaries, duration: u64) -> Result<Sample> {
    // The direct row's port is the upstream's, which stays bound: waiting for it to be free
    // only spent the 5 s timeout on every direct row.
    if target != Target::Direct {
        wait_port_free(target.port(), Duration::from_secs(5))?;
        if sc.tls {
            wait_port_free(target.tls_port(), Duration::from_secs(5))?;
        }
    }
    let running = start(target, sc, dir, bins)?;
    let pid = running.as_ref().map(|r| r.measured_pid);
    // Short warm-up so connection pools and caches are filled before measuring.
    let _ = run_wrk(&Scenario { connections: sc.connections.min(32), ..*sc }, target, 1);
    let base_rss = pid.and_then(|p| status_kib(p, "VmRSS:"));
    let machine0 = read_cpu_times();
    let sched0 = pid.and_then(thread_sched);
    let wall = Instant::now();
    let t0 = pid.and_then(proc_cpu);
    let mut s = run_wrk(sc, target, duration)?;
    let t1 = pid.and_then(proc_cpu);
    let wall = wall.elapsed();
    let sched1 = pid.and_then(thread_sched);
    let wait = sched0
        .as_ref()
        .zip(sched1.as_ref())
        .and_then(|(before, after)| busiest_thread_wait_ns(before, after))
        .map(|ns| (ns, wall));
    if let (Some(before), Some(after), true) = (&sched0, &sched1, s.requests > 0) {
        s.worker_us_per_req = busiest_thread_run_ns(before, after).map(|ns| ns as f64 / 1e3 / s.requests as f64);
    }
    let machine1 = read_cpu_times();
    s.noise = machine1.zip(machine0).map(|(after, before)| noise(before, after, wait));
    // SAFETY: sysconf with a valid name has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let per_req = |ticks: u64| ticks as f64 / hz * 1e6 / s.requests as f64;
    if let (Some(before), Some(after), true, true) = (machine0, machine1, pid.is_some(), s.requests > 0) {
        s.core_us_per_req = Some(per_req(after.0.busy.saturating_sub(before.0.busy)));
    }
    if let (Some(t0), Some(t1), true) = (t0, t1, s.requests > 0) {
        let (user, sys) = (t1.user.saturating_sub(t0.user), t1.sys.saturating_sub(t0.sys));
        s.cpu_us_per_req = Some(per_req(user + sys));
        s.user_us_per_req = Some(per_req(user));
        s.sys_us_per_req = Some(per_req(sys));
        s.sleeps_per_req = Some(t1.sleeps.saturating_sub(t0.sleeps) as f64 / s.requests as f64);
    }
    s.peak_rss_kib = pid.and_then(|p| status_kib(p, "VmHWM:"));
    s.base_rss_kib = base_rss;
    drop(running);
    Ok(s)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median, min, max of one field over the runs.
fn stat(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = samples.iter().filter_map(f).collect();
    if v.is_empty() {
        return None;
    }
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    Some((median(&mut v), min, max))
}

fn fmt_stat(s: Option<(f64, f64, f64)>, prec: usize, runs: usize) -> String {
    match s {
        None => "-".into(),
        Some((m, lo, hi)) if runs > 1 => format!("{m:.prec$} ({lo:.prec$}-{hi:.prec$})"),
        Some((m, _, _)) => format!("{m:.prec$}"),
    }
}

pub(crate) fn bench(args: &[String], root: &Path) -> Result<()> {
    let opts = parse_opts(args)?;
    let missing = ensure_tools();
    if missing.iter().any(|(c, _)| *c == "wrk" || *c == "taskset") {
        bail!("cannot benchmark: {}", missing.iter().map(|(_, r)| r.as_str()).collect::<Vec<_>>().join("; "));
    }
    raise_nofile();
    if std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) < 2 {
        eprintln!(
            "bench: WARNING fewer than 2 CPUs: proxy and load generator share a core; numbers are not comparable"
        );
    }
    // xtask in release too: the floor row runs its forwarder, which must not carry debug code.
    // Separate builds, not one with both packages: features are unified across the packages of
    // one build, which would give Portcullis other dependency builds than `cargo build -p
    // portcullis` (and a fat-LTO relink whenever the two alternate).
    let st = crate::cargo().current_dir(root).args(["build", "--release", "-p", "xtask"]).status()?;
    if !st.success() {
        bail!("release build of xtask failed");
    }
    // Portcullis as it is deployed: the PGO build of `cargo xtask dist` (pgo.rs), or the plain
    // release build with `--no-pgo` or where the PGO build cannot be made (said once, and
    // recorded in the JSON).
    let plain = |why: &str| -> Result<(PathBuf, String)> {
        let st = crate::cargo().current_dir(root).args(["build", "--release", "-p", "portcullis"]).status()?;
        if !st.success() {
            bail!("release build of portcullis failed");
        }
        Ok((root.join("target/release/portcullis"), format!("release without PGO ({why})")))
    };
    let (portcullis, build) = if opts.no_pgo {
        plain("--no-pgo")?
    } else {
        match crate::pgo::build(root) {
            Ok(bin) => (bin, "release with PGO (cargo xtask dist)".to_string()),
            Err(e) => {
                eprintln!("bench: WARNING no PGO build ({e:#}); measuring the plain release build");
                plain(&format!("PGO build failed: {e:#}"))?
            }
        }
    };
    eprintln!("bench: Portcullis binary {} ({build})", portcullis.display());
    let bins = Binaries { portcullis, xtask: root.join("target/release/xtask"), baseline: opts.baseline.clone() };
    let dir = root.join("target/bench/work");
    write_configs(&dir, root)?;

    let scenarios: Vec<&Scenario> =
        SCENARIOS.iter().filter(|s| opts.scenarios.is_empty() || opts.scenarios.iter().any(|n| n == s.name)).collect();
    let targets: Vec<Target> = [
        Target::Direct,
        Target::Floor,
        Target::FloorSplice,
        Target::FloorHttp,
        Target::Portcullis,
        Target::Baseline,
        Target::PortcullisUring,
        Target::Nginx,
        Target::Haproxy,
    ]
    .into_iter()
    .filter(|t| *t != Target::PortcullisUring || opts.uring)
    .filter(|t| *t != Target::Baseline || opts.baseline.is_some())
    .filter(|t| !missing.iter().any(|(c, _)| *c == t.name()))
    .collect();
    for (c, why) in &missing {
        eprintln!("bench: {c} will be reported as missing: {why}");
    }

    // Upstream for the whole benchmark.
    wait_port_free(UPSTREAM_PORT, Duration::from_secs(5))?;
    let upstream = pinned(LOAD_CPU, "nginx")
        .arg("-c")
        .arg(dir.join("upstream.conf"))
        .stderr(Stdio::null())
        .spawn()
        .context("starting upstream nginx")?;
    let upstream = Running { measured_pid: upstream.id(), child: upstream };
    wait_port(UPSTREAM_PORT, Duration::from_secs(10))?;

    // Each scenario's targets (the splicing floor only in some), and so the number of steps.
    let rows_of = |sc: &Scenario| -> Vec<Row> {
        targets.iter().filter(|t| t.measured_in(sc)).map(|t| (*t, Vec::new(), Vec::new())).collect()
    };
    let total =
        scenarios.iter().filter(|s| s.available.is_some()).map(|sc| rows_of(sc).len()).sum::<usize>() * opts.runs;
    let per_step = Duration::from_secs(opts.duration + 2);
    let started = Instant::now();
    let mut step = 0;
    let mut results: Vec<(&Scenario, Vec<Row>)> = Vec::new();
    for sc in &scenarios {
        if sc.available.is_none() {
            eprintln!("bench: scenario {}: not available yet", sc.name);
            results.push((sc, Vec::new()));
            continue;
        }
        let mut rows = rows_of(sc);
        for run in 1..=opts.runs {
            for (target, samples, failures) in rows.iter_mut() {
                step += 1;
                let left = per_step * (total - step + 1) as u32;
                eprintln!(
                    "bench: [{step}/{total}] scenario {} run {run}/{} {} (~{}s left)",
                    sc.name,
                    opts.runs,
                    target.name(),
                    left.as_secs()
                );
                match measure(*target, sc, &dir, &bins, opts.duration) {
                    Ok(s) => samples.push(s),
                    Err(e) => {
                        eprintln!("bench: {} failed: {e:#}", target.name());
                        failures.push(format!("{e:#}"));
                    }
                }
            }
        }
        results.push((sc, rows));
    }
    // SIGTERM through Running's Drop: nginx's master stops its worker (SIGKILL would orphan it).
    drop(upstream);
    let elapsed = started.elapsed();

    let (table, json_rows) = report(&results, &missing, opts.runs);
    println!("Portcullis build: {build}");
    println!("{table}");
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let path: PathBuf = out_dir.join(format!("{stamp}.json"));
    let doc = json!({
        "timestamp": stamp,
        "runs": opts.runs,
        "duration_seconds": opts.duration,
        "elapsed_seconds": elapsed.as_secs(),
        "portcullis_build": build,
        "machine": machine(),
        "peer_buffers": {"scenarios": SCENARIOS.iter().filter(|sc| sc.large_body).map(|sc| sc.name).collect::<Vec<_>>(), "what": peer_buffers()},
        "method": "proxy on CPU 1 (1 worker), wrk -t1 + upstream nginx on CPU 0; floor = `cargo xtask forward`, a byte-copy forwarder with no HTTP (an upstream connection per client connection); floor-splice (large-body scenarios) = the same forwarder splicing the upstream's bytes to the client (`forward --splice`); floor-http (large-body scenarios) = the splicing forwarder parsing each request head and splicing each response by the length in its peeked head (`forward --splice --http`); CPU = utime+stime over the wrk run / requests (user + kernel split); sleeps = voluntary context switches of all the proxy threads / requests; core = busy time of CPU 1 (/proc/stat) / requests; medians of runs",
        "missing": missing.iter().map(|(c, r)| json!({"peer": c, "reason": r})).collect::<Vec<_>>(),
        "scenarios": json_rows,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
    eprintln!("bench: wrote {} ({}s)", path.display(), elapsed.as_secs());
    Ok(())
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let version = |c: &str, a: &str| {
        Command::new(c).arg(a).output().ok().map(|o| {
            let t = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            t.lines().next().unwrap_or("").trim().to_string()
        })
    };
    json!({
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": kernel,
        "nginx": version("nginx", "-v"),
        "haproxy": version("haproxy", "-v"),
        "wrk": version("wrk", "-v"),
    })
}

/// One target's samples and failure messages in one scenario.
type Row = (Target, Vec<Sample>, Vec<String>);
type Rows<'a> = [(&'a Scenario, Vec<Row>)];

fn report(results: &Rows<'_>, missing: &[(&'static str, String)], runs: usize) -> (String, Vec<Value>) {
    let mut t = String::new();
    let mut json_rows = Vec::new();
    for (sc, rows) in results {
        let _ = writeln!(t, "\n### {} — {}\n", sc.name, sc.what);
        if sc.available.is_none() {
            let _ = writeln!(t, "not available yet");
            json_rows.push(json!({"scenario": sc.name, "available": false}));
            continue;
        }
        if sc.large_body {
            let _ = writeln!(t, "{}\n", peer_buffers());
        }
        let per_conn = sc.connections >= 1000;
        let _ = writeln!(
            t,
            "| target | req/s | p50 ms | p99 ms | CPU us/req | user + kernel | sleeps/req | core us/req | peak RSS MiB |{} errors | non-2xx |",
            if per_conn { " RSS/conn KiB |" } else { "" }
        );
        let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|{}---|---|", if per_conn { "---|" } else { "" });
        // Per target: medians of CPU per request, p99, RSS per connection, req/s, core busy per request.
        let mut medians: Vec<(Target, [Option<f64>; 5])> = Vec::new();
        let mut worker_rows = Vec::new();
        let mut json_targets = Vec::new();
        for (target, samples, failures) in rows {
            if samples.is_empty() {
                let _ = writeln!(
                    t,
                    "| {} | failed: {} |",
                    target.name(),
                    failures.first().map(String::as_str).unwrap_or("no samples")
                );
                json_targets.push(json!({"target": target.name(), "failures": failures}));
                continue;
            }
            let rps = stat(samples, |s| Some(s.rps));
            let p50 = stat(samples, |s| Some(s.p50_us / 1e3));
            let p99 = stat(samples, |s| Some(s.p99_us / 1e3));
            let cpu = stat(samples, |s| s.cpu_us_per_req);
            let user = stat(samples, |s| s.user_us_per_req);
            let sys = stat(samples, |s| s.sys_us_per_req);
            let sleeps = stat(samples, |s| s.sleeps_per_req);
            let core = stat(samples, |s| s.core_us_per_req);
            let worker = stat(samples, |s| s.worker_us_per_req);
            worker_rows.push((target.name(), worker));
            let rss = stat(samples, |s| s.peak_rss_kib.map(|k| k as f64 / 1024.0));
            let rss_conn =
                stat(samples, |s| Some((s.peak_rss_kib? as f64 - s.base_rss_kib? as f64) / sc.connections as f64));
            let errors: u64 = samples.iter().map(|s| s.errors).sum();
            let non2xx: u64 = samples.iter().map(|s| s.non_2xx).sum();
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |{} {errors} | {non2xx} |",
                target.name(),
                fmt_stat(rps, 0, runs),
                fmt_stat(p50, 3, runs),
                fmt_stat(p99, 3, runs),
                fmt_stat(cpu, 2, runs),
                // Medians only: the split explains the total, the total carries the spread.
                match (user, sys) {
                    (Some(u), Some(k)) => format!("{:.2} + {:.2}", u.0, k.0),
                    _ => "-".into(),
                },
                fmt_stat(sleeps, 3, 1),
                fmt_stat(core, 2, runs),
                fmt_stat(rss, 1, runs),
                if per_conn { format!(" {} |", fmt_stat(rss_conn, 1, runs)) } else { String::new() },
            );
            medians.push((*target, [cpu, p99, rss_conn, rps, core].map(|s| s.map(|c| c.0))));
            json_targets.push(json!({
                "target": target.name(),
                "samples": samples.iter().map(|s| json!({
                    "rps": s.rps, "p50_us": s.p50_us, "p99_us": s.p99_us, "requests": s.requests,
                    "cpu_us_per_req": s.cpu_us_per_req, "user_us_per_req": s.user_us_per_req,
                    "sys_us_per_req": s.sys_us_per_req, "sleeps_per_req": s.sleeps_per_req, "core_us_per_req": s.core_us_per_req, "worker_us_per_req": s.worker_us_per_req, "peak_rss_kib": s.peak_rss_kib, "base_rss_kib": s.base_rss_kib,
                    "errors": s.errors, "non_2xx": s.non_2xx,
                    "steal_pct": s.noise.map(|n| n.steal_pct), "runqueue_wait_pct": s.noise.and_then(|n| n.wait_pct),
                })).collect::<Vec<_>>(),
                "median": {"rps": rps.map(|x| x.0), "p50_ms": p50.map(|x| x.0), "p99_ms": p99.map(|x| x.0),
                           "cpu_us_per_req": cpu.map(|x| x.0), "user_us_per_req": user.map(|x| x.0),
                           "sys_us_per_req": sys.map(|x| x.0), "sleeps_per_req": sleeps.map(|x| x.0), "core_us_per_req": core.map(|x| x.0), "peak_rss_mib": rss.map(|x| x.0), "rss_per_conn_kib": rss_conn.map(|x| x.0)},
                "errors": errors, "non_2xx": non2xx, "failures": failures,
            }));
        }
        for (c, why) in missing {
            if *c == "nginx" || *c == "haproxy" {
                let _ = writeln!(t, "| {c} | missing: {why} |");
            }
        }
        let workers: Vec<String> = worker_rows
            .iter()
            .filter_map(|(name, w)| w.map(|w| format!("{name} {}", fmt_stat(Some(w), 2, runs))))
            .collect();
        if !workers.is_empty() {
            let _ = writeln!(
                t,
                "\nBusiest thread's CPU us/req (a proxy's worker: Portcullis' analytics and sink threads left out): {}",
                workers.join(", ")
            );
        }
        let noisy = noisy_runs(rows);
        if !noisy.is_empty() {
            let _ = writeln!(
                t,
                "\nNoisy runs (over {STEAL_PCT} % of the run stolen by the hypervisor, or the proxy waiting over {WAIT_PCT} % of it for its core; compare these rows with care): {}",
                noisy.join("; ")
            );
        }
        let get = |tg: Target| medians.iter().find(|m| m.0 == tg).cloned();
        let mut ratios = serde_json::Map::new();
        if let Some(p) = get(Target::Portcullis) {
            for peer in [Target::Baseline, Target::Nginx, Target::Haproxy] {
                if let Some(o) = get(peer) {
                    let [cpu, p99, rss, rps, core] = [0, 1, 2, 3, 4].map(|i| ratio(p.1[i], o.1[i]));
                    let _ = write!(
                        t,
                        "\nPortcullis/{}: CPU per request {} (core {}), p99 {}, req/s {}",
                        peer.name(),
                        fmt_ratio(cpu),
                        fmt_ratio(core),
                        fmt_ratio(p99),
                        fmt_ratio(rps)
                    );
                    if per_conn {
                        let _ = write!(t, ", RSS per connection {}", fmt_ratio(rss));
                    }
                    ratios.insert(
                        peer.name().into(),
                        json!({"cpu_per_req": cpu, "core_per_req": core, "p99": p99, "rps": rps, "rss_per_conn": rss}),
                    );
                }
            }
            let _ = writeln!(t);
        }
        // The floors open an upstream connection per client connection (no pool), so they are
        // floors only where connections are kept alive.
        let floors = [
            (Target::Floor, "a byte-copy forwarder with no HTTP", ""),
            (Target::FloorSplice, "the same forwarder splicing the upstream's bytes", " splice"),
            (Target::FloorHttp, "the splicing forwarder framing responses by their parsed heads", " HTTP"),
        ];
        for (floor, what, label) in floors {
            let (Some(fl), false) = (get(floor), sc.close) else { continue };
            // The JSON keys name the row: `floor_vs_nginx`, `above_floor_splice_us` ...
            let key = floor.name().replace('-', "_");
            if let Some(n) = get(Target::Nginx) {
                let (cpu, core) = (ratio(fl.1[0], n.1[0]), ratio(fl.1[4], n.1[4]));
                let _ = writeln!(
                    t,
                    "{}/nginx: CPU per request {} (core {}): what {what} costs here",
                    floor.name(),
                    fmt_ratio(cpu),
                    fmt_ratio(core)
                );
                ratios.insert(format!("{key}_vs_nginx"), json!({"cpu_per_req": cpu, "core_per_req": core}));
            }
            // What each proxy spends above the floor: its own work, comparable across hosts
            // where the kernel's share (and so every ratio to nginx) is not.
            let above: Vec<(Target, f64)> = medians
                .iter()
                .filter(|m| m.0 != Target::Direct && !m.0.is_floor())
                .filter_map(|m| Some((m.0, m.1[0]? - fl.1[0]?)))
                .collect();
            if !above.is_empty() {
                let list: Vec<String> = above.iter().map(|(t, us)| format!("{} {us:+.2}", t.name())).collect();
                let _ = writeln!(t, "CPU us/req above the{label} floor: {}", list.join(", "));
                ratios.insert(
                    format!("above_{key}_us"),
                    above.iter().map(|(t, us)| (t.name().to_string(), json!(us))).collect(),
                );
            }
        }
        json_rows.push(json!({"scenario": sc.name, "what": sc.what, "connections": sc.connections, "available": true, "targets": json_targets, "ratios": ratios, "noisy_runs": noisy}));
    }
    (t, json_rows)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).map(|(a, b)| a / b)
}

fn fmt_ratio(x: Option<f64>) -> String {
    x.map_or("-".to_string(), |x| format!("{x:.2}x"))
}

/// "target run N: steal X %, waited Y %" for every run over a noise threshold.
fn noisy_runs(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    for (target, samples, _) in rows {
        for (i, s) in samples.iter().enumerate() {
            if let Some(n) = s.noise.filter(is_noisy) {
                let wait = n.wait_pct.map_or(String::new(), |w| format!(", waited for its core {w:.1} %"));
                out.push(format!("{} run {}: steal {:.1} %{wait}", target.name(), i + 1, n.steal_pct));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jwt_api_and_its_policy_are_valid_json_naming_each_other() {
        let api: Value = serde_json::from_str(&jwt_api("gw", "/gw/", "c2VjcmV0", "p", "127.0.0.1:1")).unwrap();
        assert_eq!(api["api_id"], "gw");
        assert_eq!(api["jwt_default_policies"][0], "p");
        assert_eq!(api["proxy"]["target_url"], "http://127.0.0.1:1/");
        let pol: Value = serde_json::from_str(&policy("p", "gw")).unwrap();
        assert_eq!(pol["p"]["access_rights"]["gw"]["api_id"], "gw");
    }

    #[test]
    fn the_peers_buffers_hold_the_large_response_and_only_there() {
        let dir = std::env::temp_dir().join(format!("portcullis-bench-configs-{}", std::process::id()));
        write_configs(&dir, &dir).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let (nginx, haproxy, haproxy_large) =
            (read("nginx.conf"), read(haproxy_cfg_file(false)), read(haproxy_cfg_file(true)));
        // The served body plus room for its head (under 512 bytes from the upstream).
        let response = std::fs::metadata(dir.join("www/16k")).unwrap().len() + 512;
        let kib = |line: &str, key: &str| -> u64 {
            let v = line.split(key).nth(1).unwrap().trim_start().split(['k', ';']).next().unwrap();
            v.trim().parse::<u64>().unwrap() * 1024
        };
        for sc in SCENARIOS {
            let location = nginx.lines().find(|l| l.contains(&format!("location = {} ", sc.path)));
            assert_eq!(location.is_some(), sc.large_body, "{}: {nginx}", sc.name);
            if let Some(l) = location {
                assert!(kib(l, "proxy_buffer_size") >= response, "{l}");
                assert!(kib(l, "proxy_buffers 4") >= response, "{l}");
            }
        }
        assert!(SCENARIOS.iter().any(|sc| sc.large_body));
        assert!(!nginx.lines().any(|l| l.contains("location / ") && l.contains("buffer")), "{nginx}");
        assert!(!haproxy.contains("tune.bufsize"), "{haproxy}");
        let bufsize = haproxy_large.lines().find_map(|l| l.trim().strip_prefix("tune.bufsize ")).unwrap();
        // HAProxy keeps `tune.maxrewrite` (1024 by default) of each buffer free for rewrites.
        assert!(bufsize.parse::<u64>().unwrap() - 1024 >= response, "{haproxy_large}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_wrk_output() {
        let out = "Running 3s test @ http://127.0.0.1:18183/small\n  1 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   512.00us  100.00us   3.00ms   90.00%\n  Latency Distribution\n     50%  452.00us\n     75%  500.00us\n     90%  600.00us\n     99%    1.07ms\n  179798 requests in 3.00s, 24.01MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 5\nRequests/sec:  59932.98\nTransfer/sec:      8.00MB\n";
        let s = parse_wrk(out).unwrap();
        assert_eq!(s.requests, 179798);
        assert_eq!(s.p50_us, 452.0);
        assert_eq!(s.p99_us, 1070.0);
        assert_eq!(s.errors, 3);
        assert_eq!(s.non_2xx, 5);
        assert!((s.rps - 59932.98).abs() < 1e-6);
    }

    #[test]
    fn the_floor_is_set_against_nginx_where_connections_are_kept_alive() {
        let sample = |cpu: f64| Sample {
            requests: 1000,
            rps: 1000.0,
            cpu_us_per_req: Some(cpu),
            core_us_per_req: Some(cpu / 2.0),
            ..Default::default()
        };
        let rows = |floor: f64, nginx: f64| -> Vec<Row> {
            vec![
                (Target::Floor, vec![sample(floor)], Vec::new()),
                (Target::Portcullis, vec![sample(14.0)], Vec::new()),
                (Target::Nginx, vec![sample(nginx)], Vec::new()),
            ]
        };
        let find = |name: &str| SCENARIOS.iter().find(|s| s.name == name).unwrap();
        let results = vec![(find("small"), rows(12.0, 16.0)), (find("close"), rows(40.0, 30.0))];
        let (table, json) = report(&results, &[], 1);
        assert!(table.contains("| floor | 1000 |"), "{table}");
        let small = &table[..table.find("### close").unwrap()];
        assert!(small.contains("floor/nginx: CPU per request 0.75x (core 0.75x)"), "{small}");
        assert!(small.contains("Portcullis/nginx: CPU per request 0.88x"), "{small}");
        assert_eq!(json[0]["ratios"]["floor_vs_nginx"]["cpu_per_req"], 0.75);
        assert!(small.contains("CPU us/req above the floor: portcullis +2.00, nginx +4.00"), "{small}");
        assert_eq!(json[0]["ratios"]["above_floor_us"]["portcullis"], 2.0);
        // With a connection per request the floor pays an upstream connect the pooling proxies
        // do not: no floor line there.
        assert!(!table[table.find("### close").unwrap()..].contains("floor/nginx"), "{table}");
        assert!(json[1]["ratios"].get("floor_vs_nginx").is_none());
        assert!(json[1]["ratios"].get("above_floor_us").is_none());
        // The splicing floor: a row in the large-body scenarios only, set against nginx and
        // giving its own "above" line next to the byte-copy floor's.
        let large = find("16k");
        assert!(Target::FloorSplice.measured_in(large) && Target::Floor.measured_in(find("small")));
        assert!(!Target::FloorSplice.measured_in(find("small")));
        assert!(Target::FloorHttp.measured_in(large) && !Target::FloorHttp.measured_in(find("small")));
        let mut with_splice = rows(15.0, 20.0);
        with_splice.insert(1, (Target::FloorSplice, vec![sample(13.0)], Vec::new()));
        with_splice.insert(2, (Target::FloorHttp, vec![sample(13.5)], Vec::new()));
        let (table, json) = report(&[(large, with_splice)], &[], 1);
        assert!(table.contains("| floor-splice | 1000 |"), "{table}");
        assert!(table.contains("floor-splice/nginx: CPU per request 0.65x (core 0.65x)"), "{table}");
        assert!(table.contains("CPU us/req above the splice floor: portcullis +1.00, nginx +7.00"), "{table}");
        assert!(table.contains("CPU us/req above the floor: portcullis -1.00, nginx +5.00"), "{table}");
        assert_eq!(json[0]["ratios"]["floor_splice_vs_nginx"]["cpu_per_req"], 0.65);
        assert_eq!(json[0]["ratios"]["above_floor_splice_us"]["nginx"], 7.0);
        // The HTTP floor likewise, and no floor is counted above another.
        assert!(table.contains("| floor-http | 1000 |"), "{table}");
        assert!(table.contains("floor-http/nginx: CPU per request 0.68x (core 0.68x)"), "{table}");
        assert!(table.contains("CPU us/req above the HTTP floor: portcullis +0.50, nginx +6.50\n"), "{table}");
        assert_eq!(json[0]["ratios"]["above_floor_http_us"]["portcullis"], 0.5);
        assert!(json[0]["ratios"]["above_floor_us"].get("floor-http").is_none());
    }

    #[test]
    fn noise_is_steal_and_waiting_for_the_core() {
        let before = "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 100 0 50 1000 5 0 20 10 0 0\ncpu1 200 3 100 2000 0 1 30 0 7 0\nintr 1\n";
        // Over the run: cpu1 (the proxy's) 100 ticks, none stolen; cpu0 (load) 200, 8 stolen.
        let after =
            "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 150 0 100 1080 5 0 32 18 0 0\ncpu1 240 3 120 2030 0 1 40 0 7 0\n";
        let b = (parse_cpu_times(before, PROXY_CPU).unwrap(), parse_cpu_times(before, LOAD_CPU).unwrap());
        let a = (parse_cpu_times(after, PROXY_CPU).unwrap(), parse_cpu_times(after, LOAD_CPU).unwrap());
        assert_eq!(b.0, CpuTimes { steal: 0, busy: 334, total: 2334 });
        // Busy: user, nice, system, irq, softirq — not idle, iowait or steal.
        assert_eq!(a.0.busy - b.0.busy, 70);
        assert_eq!(a.1.busy - b.1.busy, 112);
        let n = noise(b, a, Some((300_000_000, Duration::from_secs(3))));
        assert!((n.steal_pct - 4.0).abs() < 1e-9, "{n:?}");
        assert!((n.wait_pct.unwrap() - 10.0).abs() < 1e-9, "{n:?}");
        assert_eq!(noise(b, a, None).wait_pct, None);
        assert_eq!(parse_cpu_times(before, "7"), None);
        assert!(thread_sched(std::process::id()).is_some_and(|t| !t.is_empty()));
        // The worker (thread 2) ran most; the analytics thread's (3) long wait is not counted.
        let before = [(1, 0, 0), (2, 1_000, 50), (3, 10, 10)];
        let after = [(1, 5, 5), (2, 900_000, 20_050), (3, 50_000, 800_000), (4, 1_000_000, 1_000_000)];
        assert_eq!(busiest_thread_wait_ns(&before, &after), Some(20_000));
        assert_eq!(busiest_thread_wait_ns(&[], &after), None);
        let quiet = Sample { noise: Some(Noise { steal_pct: 0.5, wait_pct: Some(1.0) }), ..Default::default() };
        let stolen = Sample { noise: Some(Noise { steal_pct: 2.5, wait_pct: None }), ..Default::default() };
        let rows = vec![
            (Target::Nginx, vec![quiet.clone(), Sample { noise: Some(n), ..Default::default() }], Vec::new()),
            (Target::Direct, vec![stolen, quiet], Vec::new()),
        ];
        assert_eq!(
            noisy_runs(&rows),
            ["nginx run 2: steal 4.0 %, waited for its core 10.0 %", "direct run 1: steal 2.5 %"]
        );
    }

    #[test]
    fn a_port_taken_by_someone_else_fails_the_row_and_a_free_one_passes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let e = wait_port_free(port, Duration::from_millis(100)).unwrap_err().to_string();
        assert!(e.contains(&format!("port {port} is in use")), "{e}");
        drop(l);
        wait_port_free(port, Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn cpu_split_and_sleeps_are_read_from_proc() {
        // A command with spaces and a ')' of its own; utime 1234, stime 567.
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 3 0 99 1000 50";
        assert_eq!(stat_times(stat), Some((1234, 567)));
        assert_eq!(stat_times("4242 (cut short) S 1"), None);
        let status = "Name:\tportcullis-w0\nvoluntary_ctxt_switches:\t1500\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(voluntary_switches(status), Some(1500));
        assert_eq!(voluntary_switches("Name:\tx\n"), None);
        // This process: CPU time and sleeps never go backwards.
        let me = std::process::id();
        let a = proc_cpu(me).expect("own /proc entry");
        std::thread::sleep(Duration::from_millis(20));
        let b = proc_cpu(me).expect("own /proc entry");
        assert!(b.user >= a.user && b.sys >= a.sys && b.sleeps > a.sleeps, "{a:?} then {b:?}");
    }

    #[test]
    fn median_and_options() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        let o = parse_opts(&["--quick".into(), "--scenario".into(), "small".into()]).unwrap();
        assert_eq!((o.runs, o.duration, o.scenarios.len()), (1, 3, 1));
        assert!(parse_opts(&["--scenario".into(), "nope".into()]).is_err());
        let err = parse_opts(&["--baseline".into(), "/nonexistent/portcullis".into()]).err().unwrap();
        assert!(format!("{err}").contains("/nonexistent/portcullis"), "{err}");
        let exe = std::env::current_exe().unwrap();
        let o = parse_opts(&["--baseline".into(), exe.display().to_string()]).unwrap();
        assert_eq!(o.baseline.as_deref(), Some(exe.as_path()));
    }
}
