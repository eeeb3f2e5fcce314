//! `cargo xtask setup` and `cargo xtask build-ebpf`: the eBPF toolchain recipe, made
//! idempotent. rustup has no `rust-src` here, so the kernel crate is built with
//! Debian's `rustc-web` (and its library source for `-Z build-std=core`), linked into rustup as
//! the `debian-web` toolchain, and `bpf-linker` built against Debian's LLVM 22.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Result};

use crate::run_status as run;

const APT_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "rust-web-src", "llvm-22-dev", "libpolly-22-dev"];
const TOOLCHAIN: &str = "debian-web";

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// True when everything `build-ebpf` needs is present.
pub(crate) fn toolchain_ready() -> bool {
    ok(Command::new("bpf-linker").arg("--version"))
        && ok(Command::new("rustup").args(["run", TOOLCHAIN, "rustc", "--version"]))
        && APT_PACKAGES.iter().all(|p| installed(p))
}

pub(crate) fn setup() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        eprintln!("setup: Debian packages present ({})", APT_PACKAGES.join(" "));
    } else {
        eprintln!("setup: installing {}", missing.join(" "));
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if ok(Command::new("bpf-linker").arg("--version")) {
        eprintln!("setup: bpf-linker present");
    } else {
        eprintln!("setup: building bpf-linker against LLVM 22 (takes a few minutes)");
        let path = format!("/usr/lib/llvm-22/bin:{}", std::env::var("PATH").unwrap_or_default());
        run(Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                "0.13.0",
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env("PATH", path))?;
    }
    if ok(Command::new("rustup").args(["run", TOOLCHAIN, "rustc", "--version"])) {
        eprintln!("setup: rustup toolchain {TOOLCHAIN} linked");
    } else {
        run(Command::new("rustup").args(["toolchain", "link", TOOLCHAIN, "/usr"]))?;
    }
    eprintln!("setup: done; `cargo xtask build-ebpf` builds the kernel programs");
    Ok(())
}

/// Builds `proxy-ebpf` for `bpfel-unknown-none`; the proxy's build script embeds the result.
pub(crate) fn build(root: &Path) -> Result<()> {
    if !toolchain_ready() {
        bail!("the eBPF toolchain is not installed: run `cargo xtask setup` first");
    }
    run(Command::new("cargo")
        .arg(format!("+{TOOLCHAIN}"))
        .args(["build", "--release", "--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .current_dir(root.join("proxy-ebpf"))
        .env("RUSTC_BOOTSTRAP", "1")
        // The host workspace's cargo settings must not leak into this build.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO"))?;
    let obj = root.join("proxy-ebpf/target/bpfel-unknown-none/release/portcullis-ebpf");
    if !obj.is_file() {
        bail!("build finished but {} is missing", obj.display());
    }
    eprintln!(
        "build-ebpf: {} ({} bytes); the next proxy build embeds it",
        obj.display(),
        std::fs::metadata(&obj)?.len()
    );
    Ok(())
}
