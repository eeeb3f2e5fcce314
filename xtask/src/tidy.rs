//! Code-tidiness checks run as tests (rust-analyzer's `tidy.rs`): every module file starts with a
//! `//!` doc comment saying its job, no test uses the `should_panic` attribute,
//! `docs/configuration.md` is what `cargo xtask docs` generates from the config structs, and
//! `vendor/monoio` is crates.io monoio 0.2.4 with `vendor/patches/monoio/*.patch` applied.

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
        for d in ["proxy/src", "xtask/src", "tests/src", "tests/it"] {
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
