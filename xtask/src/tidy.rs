//! Code-tidiness checks run as tests (rust-analyzer's `tidy.rs`): every module file starts with a
//! `//!` doc comment saying its job, no test uses the `should_panic` attribute,
//! `docs/configuration.md` is what `cargo xtask docs` generates from the config structs, and
//! `vendor/monoio` is crates.io monoio 0.2.4 with `vendor/patches/monoio/*.patch` applied, and
//! the module and crate boundaries ARCHITECTURE.md states hold (`module_boundaries_hold`,
//! `crate_dependencies_hold`).

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "target") {
                    continue;
                }
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    fn files() -> Vec<PathBuf> {
        let root = super::super::root();
        let mut v = Vec::new();
        for d in ["proxy/src", "proxy/crates", "xtask/src", "tests/src", "tests/it"] {
            rust_files(&root.join(d), &mut v);
        }
        v
    }

    #[test]
    fn every_module_starts_with_a_doc_comment() {
        let missing: Vec<_> =
            files().into_iter().filter(|p| !std::fs::read_to_string(p).unwrap().starts_with("//!")).collect();
        assert!(missing.is_empty(), "files without a leading //! doc comment: {missing:?}");
    }

    #[test]
    fn no_should_panic() {
        let offenders: Vec<_> = files()
            .into_iter()
            .filter(|p| std::fs::read_to_string(p).unwrap().contains(concat!("#[should", "_panic")))
            .collect();
        assert!(offenders.is_empty(), "use explicit assertions instead of should_panic: {offenders:?}");
    }

    /// The code of `file` outside comments and outside its test module (by convention the
    /// `#[cfg(test)]` module at the end of the file), line by line.
    fn code_lines(file: &Path) -> Vec<(usize, String)> {
        let text = std::fs::read_to_string(file).unwrap();
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            let code = line.split("//").next().unwrap_or("");
            out.push((i + 1, code.to_string()));
        }
        out
    }

    /// The boundaries ARCHITECTURE.md states, checked on the code: each rule is a directory (or
    /// file), what its code must not name, and why.
    #[test]
    fn module_boundaries_hold() {
        let root = super::super::root();
        let rules: &[(&str, &[&str], &str)] = &[
            ("proxy/src/dataplane", &["tokio"], "the data plane never awaits a tokio future"),
            (
                "proxy/crates/config/src",
                &["TcpStream", "UdpSocket"],
                "config turns files into a snapshot: no network I/O (the control plane passes the JWKS fetcher)",
            ),
            (
                "proxy/src/dataplane",
                &["redis::", "aya::", "crate::ebpf"],
                "only the control plane talks to Redis or the store, and writes the XDP maps",
            ),
            (
                "proxy/crates/policy/src/auth",
                &["serde::", "Deserialize", "Serialize", "#[serde"],
                "only config knows Tyk's JSON: auth has plain types, config's serde types convert into them",
            ),
            ("proxy/crates/policy/src/limit", &["crate::auth"], "limits do not depend on auth (auth uses limits)"),
            (
                "proxy/crates/config/src/tyk_auth.rs",
                &["super::tyk::"],
                "tyk.rs uses tyk_auth.rs, not the other way round",
            ),
            (
                "proxy/src/control/keys.rs",
                &["super::admin"],
                "the admin API routes to the key API, not the other way round",
            ),
            (
                "xtask/src/pgo.rs",
                &["crate::bench", "bench::"],
                "the benchmark uses the PGO build, not the other way round",
            ),
            (
                "xtask/src/wake_cost.rs",
                &["crate::bench", "bench::"],
                "wake-cost measures on its own; shared code is procstat.rs",
            ),
            (
                "proxy/src/dataplane/worker.rs",
                &["conn::", "accept::"],
                "a worker's state knows nothing of the connections that use it (accept.rs runs them): \
                 no conn <-> worker cycle",
            ),
            (
                "proxy/crates/http1/src",
                &["std::fs", "std::net", "std::time", "std::thread", "std::process", "std::env"],
                "the HTTP/1 codec does no I/O and reads no clock, so every rule is unit tested without sockets \
                 (its Cargo.toml keeps runtimes and gateway crates out: `crate_dependencies_hold`)",
            ),
            (
                "proxy/src/dataplane/phase",
                &["monoio", "TcpStream", "std::fs", ".await", "async ", "Instant::now", "SystemTime::now", "RefCell"],
                "the request phases are functions of the head, the snapshot and the worker state they are \
                 lent: no I/O, no wait, no clock (the connection loop passes the time)",
            ),
        ];
        // Lines exempt from the rules above: (file, the whole line, trimmed, why).
        let allowed: &[(&str, &str, &str)] = &[
            (
                "proxy/crates/policy/src/auth/jwt.rs",
                "use serde::Deserialize;",
                "a JWT's JOSE header is JWT's format, not Tyk's",
            ),
            ("proxy/crates/policy/src/auth/jwt.rs", "#[derive(Deserialize)]", "the JOSE header (`jwt::Header`)"),
            ("proxy/crates/policy/src/auth/jwt.rs", "#[serde(default)]", "the JOSE header's fields"),
        ];
        let mut broken = Vec::new();
        for (place, banned, why) in rules {
            let path = root.join(place);
            let mut files = Vec::new();
            if path.is_dir() {
                rust_files(&path, &mut files);
            } else {
                files.push(path);
            }
            for f in files {
                if f.file_name().is_some_and(|n| n == "tests.rs") {
                    continue;
                }
                let rel = f.strip_prefix(&root).unwrap().to_path_buf();
                for (n, code) in code_lines(&f) {
                    if allowed.iter().any(|(file, line, _)| rel == Path::new(file) && code.trim() == *line) {
                        continue;
                    }
                    for b in banned.iter().filter(|b| code.contains(*b)) {
                        broken.push(format!("{}:{n}: `{b}` ({why})", f.strip_prefix(&root).unwrap().display()));
                    }
                }
            }
        }
        assert!(broken.is_empty(), "module boundaries broken:\n{}", broken.join("\n"));
    }

    /// The types a worker holds to reach the control plane (its key lookups, its gossip link) are
    /// defined outside the data plane, so the rule that the data plane names no tokio type does
    /// not see them: their definitions must not name tokio either (runtime-agnostic channels).
    #[test]
    fn worker_ends_of_channels_name_no_tokio() {
        let root = super::super::root();
        for (file, ty) in
            [("proxy/src/keystore/mod.rs", "pub struct KeyClient"), ("proxy/src/gossip.rs", "pub struct WorkerLink")]
        {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let start = text.find(ty).unwrap_or_else(|| panic!("{file}: no `{ty}`"));
            let body = &text[start..start + text[start..].find("\n}").expect("end of struct")];
            let code: Vec<&str> = body.lines().map(|l| l.split("//").next().unwrap_or("")).collect();
            assert!(
                !code.iter().any(|l| l.contains("tokio")),
                "{file}: `{ty}` names tokio; workers must hold no tokio type:\n{body}"
            );
        }
    }

    /// ARCHITECTURE.md: no sink runs on the analytics thread and the thread never waits on one.
    /// `pump.rs` reaches the sinks only through `SinkThread::offer`, which only `try_send`s.
    #[test]
    fn the_analytics_thread_never_waits_on_a_sink() {
        let root = super::super::root();
        let code = |file: &str| -> String {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let text = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
            text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
        };
        let pump = code("proxy/src/analytics/pump.rs");
        for banned in [".send(", ".send_timeout(", ".tick(", "Sink>", "dyn Sink"] {
            assert!(
                !pump.contains(banned),
                "proxy/src/analytics/pump.rs: `{banned}`: the analytics thread must only offer batches to sink threads"
            );
        }
        let sink = code("proxy/src/analytics/sink/mod.rs");
        let start = sink.find("pub fn offer").expect("SinkThread::offer");
        let body = &sink[start..start + sink[start..].find("\n    }").expect("end of offer")];
        assert!(body.contains("try_send") && !body.contains(".send("), "SinkThread::offer must not wait:\n{body}");
    }

    /// Crates whose dependency list is the boundary: each may depend only on what is listed here
    /// (and the workspace's own crates listed with it), so the compiler keeps the rest out.
    #[test]
    fn crate_dependencies_hold() {
        let allowed: &[(&str, &[&str], &str)] = &[
            (
                "portcullis-http1",
                &["httparse"],
                "the HTTP/1 codec knows no runtime, no I/O library and no gateway policy",
            ),
            (
                "portcullis-policy",
                &[
                    "portcullis-http1",
                    "ahash",
                    "arc-swap",
                    "base64",
                    "bcrypt",
                    "crossbeam-channel",
                    "hmac",
                    "ipnet",
                    "jsonwebtoken",
                    "murmur3",
                    "quick_cache",
                    "regex",
                    "serde",
                    "serde_json",
                    "sha1",
                    "sha2",
                    "subtle",
                    "thiserror",
                    "tracing",
                ],
                "gateway policy knows no runtime, no I/O library (Redis, HTTP clients, files) and no config \
                 format; its clippy.toml bans clocks, files, sockets, threads and locks",
            ),
            (
                "portcullis-config",
                &[
                    "portcullis-http1",
                    "portcullis-policy",
                    "portcullis-visibility",
                    "portcullis-tls",
                    "portcullis-ebpf-common",
                    "ahash",
                    "arc-swap",
                    "base64",
                    "ipnet",
                    "jsonschema",
                    "libc",
                    "regex",
                    "serde",
                    "serde_ignored",
                    "serde_json",
                    "serde_norway",
                    "serde_path_to_error",
                    "thiserror",
                    "toml",
                    "tracing",
                    "tracing-subscriber",
                    "url",
                ],
                "config sits below both planes: no runtime, no network client, no proxy crate",
            ),
            (
                "portcullis-visibility",
                &["jsonschema", "serde", "serde_json", "serde_norway"],
                "API visibility is pure functions of exchanges and documents: no runtime, no I/O library",
            ),
            (
                "portcullis-tls",
                &["ring", "rustls", "rustls-native-certs", "rustls-pki-types", "x509-parser"],
                "TLS policy (certificates, SNI, the rustls configuration) knows no runtime and no socket: \
                 the data plane drives rustls over its own streams",
            ),
        ];
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
            .current_dir(super::super::root())
            .output()
            .expect("cargo metadata");
        assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
        let packages = meta["packages"].as_array().expect("packages");
        for (name, deps, why) in allowed {
            let pkg = packages.iter().find(|p| p["name"] == *name).unwrap_or_else(|| panic!("no package {name}"));
            let extra: Vec<&str> = pkg["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str())
                .filter(|d| !deps.contains(d))
                .collect();
            assert!(extra.is_empty(), "{name} depends on {extra:?}, which it must not ({why})");
        }
    }

    #[test]
    fn configuration_reference_is_generated() {
        let root = super::super::root();
        let want = crate::docs::configuration_md(&root).unwrap_or_else(|e| panic!("{e:#}"));
        let have = std::fs::read_to_string(root.join(crate::docs::CONFIG_DOC)).unwrap_or_default();
        assert!(
            have == want,
            "{} is not what `cargo xtask docs` generates from the doc comments in {}: run `cargo xtask docs`",
            crate::docs::CONFIG_DOC,
            crate::docs::CONFIG_SOURCE
        );
    }

    #[test]
    fn vendored_monoio_is_the_published_crate_plus_its_patches() {
        match crate::vendored::check_monoio(&super::super::root()) {
            Err(e) => panic!("{e:#}"),
            Ok(Ok(())) => {}
            // Offline with no cached copy: only CI (which has the network) must run it.
            Ok(Err(unavailable)) if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
                panic!("cannot fetch the published monoio under CI=true: {}", unavailable.0)
            }
            Ok(Err(unavailable)) => eprintln!("skipped: cannot fetch the published monoio: {}", unavailable.0),
        }
    }
}
