//! `cargo xtask`: project automation (rust-analyzer's pattern: plain Rust, no make/shell).
//!
//! - `cargo xtask run` builds release binaries and starts the httpbin-like demo upstream on
//!   127.0.0.1:8081 and the proxy with `portcullis.toml` and `apps/`.
//! - `cargo xtask test` runs the gates of `cargo xtask lint`, builds the XDP gate when the eBPF
//!   toolchain is there, then runs every test in the workspace (unit, integration, privileged
//!   netns/XDP, tidy).
//! - `cargo xtask lint`: the CI gates alone: `cargo fmt --check`, no unused dependencies
//!   (cargo-machete), `cargo clippy --workspace --all-targets -- -D warnings`.
//! - `cargo xtask setup` / `build-ebpf`: the eBPF toolchain and build (see `ebpf.rs`).
//! - `cargo xtask dist` builds the deployable binary with profile-guided optimisation,
//!   `target/dist/portcullis` (see `pgo.rs`).
//! - `cargo xtask bench` runs the side-by-side load benchmark on that binary (see `bench.rs`).
//! - `cargo xtask bench-limits` reports limiter accuracy (see `bench_limits.rs`).
//! - `cargo xtask wake-cost` measures what the host charges per sleep and wake-up (see
//!   `wake_cost.rs`), the check behind the benchmark's "core us/req" column.
//! - `cargo xtask forward --listen ADDR --upstream ADDR [--splice [--http]]`: the minimal
//!   forwarder the benchmark's `floor`, `floor-splice` and `floor-http` rows measure (see
//!   `forward.rs`).
//! - `cargo xtask docs` writes `docs/configuration.md` from the config structs' doc comments
//!   (see `docs.rs`; a tidy test fails when the file is out of date).
//! - `cargo xtask visibility-eval` measures API visibility's OpenAPI reconstruction on public
//!   specs, with Prism as the upstream and Schemathesis as the traffic (see `visibility_eval.rs`
//!   and docs/visibility-eval.md).

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

mod bench;
mod bench_limits;
mod docs;
mod ebpf;
mod forward;
mod pgo;
mod procstat;
mod tidy;
#[cfg(test)]
mod vendored;
mod visibility_eval;
mod wake_cost;
mod workload;

/// The cargo that runs xtask, without the variables `cargo run` set for xtask itself. Left in,
/// `CARGO_MANIFEST_DIR=.../xtask` reaches the build scripts of the nested build, and one that
/// watches it (ring's) reruns, rebuilding ring, rustls, ureq and the proxy (a fat-LTO release
/// link, about 2 minutes here) every time `cargo xtask bench` follows a plain `cargo build`.
pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if is_cargo_run_var(name) {
            c.env_remove(name);
        }
    }
    c
}

/// Set by `cargo run` for the package it runs (here xtask); not meant for a nested build.
fn is_cargo_run_var(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || matches!(name, "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE")
}

fn run_status(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("lint") => lint(),
        Some("bench") => bench::bench(&args[1..], &root()),
        Some("dist") => pgo::dist(&args[1..], &root()),
        Some("bench-limits") => bench_limits::bench_limits(&root()),
        Some("wake-cost") => wake_cost::wake_cost(),
        Some("forward") => forward::forward(&args[1..]),
        Some("setup") => ebpf::setup(),
        Some("build-ebpf") => ebpf::build(&root()),
        Some("docs") => docs::docs(&root()),
        Some("visibility-eval") => visibility_eval::visibility_eval(&args[1..], &root()),
        _ => {
            eprintln!("usage: cargo xtask <setup|build-ebpf|run|test|lint|dist|bench|bench-limits|wake-cost|forward|docs|visibility-eval> [args]\n  setup       install the eBPF toolchain (Debian rustc-web, LLVM 22, bpf-linker)\n  build-ebpf  build the XDP gate (proxy-ebpf) so the proxy embeds it\n  run    [--tls] start the demo upstream and the proxy (--tls: also HTTPS on 127.0.0.1:8443 with a self-signed certificate; extra args go to `portcullis run`)\n  test   the gates of `lint`, then every test\n  lint   the CI gates: cargo fmt --check, cargo machete (unused dependencies), cargo clippy -D warnings\n  dist   the release binary built with profile-guided optimisation: target/dist/portcullis\n  bench  [--scenario NAME] [--runs N] [--duration S] [--quick] [--no-pgo]: load benchmark vs nginx and HAProxy\n  bench-limits  admitted vs allowed in the rate-limit and quota scenarios\n  wake-cost  what this host charges a thread per sleep and wake-up (against its core's busy time)\n  forward --listen ADDR --upstream ADDR [--splice [--http]]  the benchmark's floors: a minimal byte-copy (or splicing, or HTTP-framing) forwarder\n  docs   write docs/configuration.md from the config structs' doc comments\n  visibility-eval  [--specs NAME,...] [--max-examples N] [--gateway PATH] [--spec-timeout S] [--total-timeout S] [--direct]: OpenAPI reconstruction quality on public specs (Prism upstream, Schemathesis traffic); writes target/visibility-eval/report.md");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let root = root();
    let tls = args.iter().any(|a| a == "--tls");
    let extra: Vec<&String> = args.iter().filter(|a| *a != "--tls").collect();
    run_status(cargo().current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "portcullis",
        "-p",
        "portcullis-tests",
        "--bins",
    ]))?;
    let bin = root.join("target/release");
    let upstream_addr = "127.0.0.1:8081";
    let mut upstream = if std::net::TcpStream::connect(upstream_addr).is_ok() {
        eprintln!("xtask: something already listens on {upstream_addr}; using it as the upstream");
        None
    } else {
        Some(Command::new(bin.join("demo-upstream")).arg(upstream_addr).spawn().context("starting demo-upstream")?)
    };
    let mut cmd = Command::new(bin.join("portcullis"));
    cmd.current_dir(&root).args(["run", "--config", "portcullis.toml"]).args(extra);
    eprintln!("xtask: try `curl -i localhost:8080/httpbin/get?foo=bar` (Ctrl-C stops)");
    if tls {
        let (cert, key) = demo_certificate(&root.join("target/run-tls"))?;
        // The `[tls]` section through the environment, so portcullis.toml stays as it is.
        cmd.env("PORTCULLIS_TLS_LISTEN", DEMO_TLS_LISTEN)
            .env("PORTCULLIS_TLS_CERT_FILE", &cert)
            .env("PORTCULLIS_TLS_KEY_FILE", &key);
        eprintln!(
            "xtask: and `curl -i --cacert {} https://localhost:8443/httpbin/get?foo=bar`",
            cert.strip_prefix(&root).unwrap_or(&cert).display()
        );
    }
    let status = cmd.status().context("starting portcullis")?;
    if let Some(u) = upstream.as_mut() {
        let _ = u.kill();
        let _ = u.wait();
    }
    if !status.success() {
        bail!("portcullis exited with {status}");
    }
    Ok(())
}

/// Where `cargo xtask run --tls` listens for TLS.
const DEMO_TLS_LISTEN: &str = "127.0.0.1:8443";

/// A self-signed certificate for `localhost` and 127.0.0.1 in `dir` (made once, kept while
/// valid: a new one after 300 days), for `cargo xtask run --tls`: its certificate and key files.
fn demo_certificate(dir: &std::path::Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("localhost.pem"), dir.join("localhost.key"));
    let age = std::fs::metadata(&cert).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
    if key.is_file() && age.is_some_and(|a| a < std::time::Duration::from_secs(300 * 86_400)) {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pair = rcgen::KeyPair::generate().context("generating a key")?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .context("certificate names")?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    // A year from when it was made: `cargo xtask run --tls` makes a new one once it is gone.
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + std::time::Duration::from_secs(365 * 86_400)).into();
    let made = params.self_signed(&pair).context("signing the certificate")?;
    std::fs::write(&cert, made.pem()).with_context(|| format!("writing {}", cert.display()))?;
    std::fs::write(&key, pair.serialize_pem()).with_context(|| format!("writing {}", key.display()))?;
    eprintln!("xtask: made a self-signed certificate for localhost: {}", cert.display());
    Ok((cert, key))
}

/// Crates whose dependencies cargo-machete checks: the workspace members and the eBPF crates
/// (not vendor/monoio: third-party code, patched only where Portcullis needs it).
const MACHETE_DIRS: &[&str] = &[
    "proxy",
    "proxy/crates/http1",
    "proxy/crates/policy",
    "proxy/crates/config",
    "proxy/crates/visibility",
    "proxy/crates/tls",
    "xtask",
    "tests",
    "bench",
    "proxy-ebpf",
];

/// The CI gates, which `cargo xtask test` runs first: formatting, no unused dependencies, and
/// clippy with every warning an error (the lints and their allow-list are in the workspace
/// Cargo.toml).
fn lint() -> Result<()> {
    gate_fmt()?;
    gate_unused_deps()?;
    gate_clippy()
}

fn gate_fmt() -> Result<()> {
    run_status(cargo().current_dir(root()).args(["fmt", "--all", "--check"]))
        .context("gate: formatting (`cargo fmt --all` fixes it)")
}

fn gate_unused_deps() -> Result<()> {
    let installed = cargo().args(["machete", "--version"]).output().is_ok_and(|o| o.status.success());
    if !installed {
        bail!("gate: cargo-machete is not installed: `cargo install cargo-machete --locked` (.ci/run installs it)");
    }
    run_status(cargo().current_dir(root()).arg("machete").args(MACHETE_DIRS)).context(
        "gate: unused dependencies (remove them; list a false positive, with why, under \
         `[package.metadata.cargo-machete] ignored` in that crate's Cargo.toml)",
    )
}

fn gate_clippy() -> Result<()> {
    run_status(cargo().current_dir(root()).args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
        .context("gate: clippy (fix the warnings above, or `#[expect(clippy::..., reason = \"...\")]` one)")
}

fn test(extra: &[String]) -> Result<()> {
    // The gates, unless the arguments ask for some tests only: the quick ones first, clippy after
    // the eBPF build (so it checks the proxy the tests build).
    let gates = extra.is_empty();
    if gates {
        gate_fmt()?;
        gate_unused_deps()?;
    }
    // With the eBPF toolchain present, build the XDP gate first so the tests run against a proxy
    // that embeds it (the privileged tests need it; under CI=true they fail without it).
    if ebpf::toolchain_ready() {
        ebpf::build(&root())?;
    } else {
        eprintln!("xtask: eBPF toolchain not installed (`cargo xtask setup`); testing without the XDP gate");
    }
    if gates {
        gate_clippy()?;
    }
    run_status(cargo().current_dir(root()).args(["test", "--workspace"]).args(extra))?;
    // The workers run on io_uring where the kernel allows it (`io_driver = "auto"`); run the
    // proxy and auth integration tests once more on the epoll driver so both stay covered.
    if extra.is_empty() {
        eprintln!("xtask: proxy and auth integration tests again on the epoll driver");
        run_status(cargo().current_dir(root()).env("PORTCULLIS_PROXY_IO_DRIVER", "epoll").args([
            "test",
            "-p",
            "portcullis",
            "--test",
            "proxy",
            "--test",
            "auth",
        ]))?;
        // The criterion benches are not built by `cargo test`; build them so an API change
        // that breaks one fails here, not the next time someone measures.
        eprintln!("xtask: building the criterion benches");
        run_status(cargo().current_dir(root()).args(["build", "-p", "portcullis-bench", "--benches"]))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_cargo_runs_without_xtask_package_variables() {
        for name in
            ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_PKG_NAME", "CARGO_CRATE_NAME", "CARGO_BIN_NAME"]
        {
            assert!(is_cargo_run_var(name), "{name}");
        }
        for name in ["CARGO", "CARGO_HOME", "CARGO_TARGET_DIR", "CARGO_TERM_COLOR", "PATH"] {
            assert!(!is_cargo_run_var(name), "{name}");
        }
        // Under `cargo test` cargo sets CARGO_MANIFEST_DIR for this crate: the command drops it.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let c = cargo();
        let removed: Vec<_> = c.get_envs().filter(|(_, v)| v.is_none()).map(|(k, _)| k.to_owned()).collect();
        assert!(removed.iter().any(|k| k == "CARGO_MANIFEST_DIR"), "{removed:?}");
        assert!(!removed.iter().any(|k| k == "CARGO"), "{removed:?}");
    }

    #[test]
    fn unused_dependency_gate_covers_every_workspace_member() {
        let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
        let members = manifest.lines().find_map(|l| l.trim().strip_prefix("members = [")).expect("members line");
        for m in members.trim_end_matches(']').split(',').map(|m| m.trim().trim_matches('"')) {
            assert!(MACHETE_DIRS.contains(&m), "{m} is a workspace member missing from MACHETE_DIRS");
        }
    }
}
