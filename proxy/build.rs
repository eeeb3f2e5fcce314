//! Embeds the XDP gate object when `cargo xtask build-ebpf` has built it (or when
//! `PORTCULLIS_EBPF_OBJECT` names one); without it the proxy builds and runs with user-space
//! enforcement only, and says so once at startup.

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ebpf_embedded)");
    println!("cargo::rerun-if-env-changed=PORTCULLIS_EBPF_OBJECT");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let object = std::env::var_os("PORTCULLIS_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../proxy-ebpf/target/bpfel-unknown-none/release/portcullis-ebpf"));
    // Watching a missing file would re-run this script (and rebuild the crate) on every build;
    // watch the eBPF crate's directory instead until the object exists.
    if object.is_file() {
        println!("cargo::rerun-if-changed={}", object.display());
    } else {
        println!("cargo::rerun-if-changed={}", manifest.join("../proxy-ebpf").display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("portcullis-ebpf.o");
    if object.is_file() {
        std::fs::copy(&object, &out).expect("copy eBPF object into OUT_DIR");
        println!("cargo::rustc-cfg=ebpf_embedded");
    } else {
        let _ = std::fs::remove_file(&out);
    }
}
