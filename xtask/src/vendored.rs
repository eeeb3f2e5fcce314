//! The vendored monoio (`vendor/monoio`) is crates.io monoio 0.2.4 with the patches in
//! `vendor/patches/monoio/` applied in order. [`check_monoio`] (a tidy test) rebuilds that tree
//! from the published crate, checksum verified, and compares it with the vendored one byte for
//! byte. vendor/monoio/PORTCULLIS.md says how to change or add a patch.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

const NAME: &str = "monoio";
const VERSION: &str = "0.2.4";
/// SHA-256 of `monoio-0.2.4.crate` as crates.io serves it (the `cksum` of its index entry).
/// Cargo.lock has no checksum for monoio: `[patch.crates-io]` replaces the registry package
/// with the path one. If the lock ever has one, [`expected_sha256`] uses it.
const SHA256: &str = "3bd0f8bcde87b1949f95338b547543fcab187bc7e7a5024247e359a5e828ba6a";
/// Paths of the published crate that are not vendored: cargo's packaging files, and the tests
/// (nothing here runs monoio's own tests; the first patch drops their `[[test]]` targets).
const NOT_VENDORED: &[&str] = &[".cargo_vcs_info.json", "Cargo.toml.orig", "tests"];
/// Portcullis' own files in vendor/monoio, not part of the crate's source.
const PORTCULLIS_ONLY: &[&str] = &["PORTCULLIS.md"];

/// The outcome of [`check_monoio`] when the published crate could not be fetched.
#[derive(Debug)]
pub(crate) struct Unavailable(pub(crate) String);

/// Ok(Ok(())) when `vendor/monoio` is the pristine crate plus the patches; Ok(Err(_)) when the
/// crate is neither cached nor downloadable (no network); Err when the trees differ, a patch does
/// not apply or the download has the wrong checksum.
pub(crate) fn check_monoio(root: &Path) -> Result<Result<(), Unavailable>> {
    let cache = root.join("target/vendor-check");
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let expected = expected_sha256(root)?;
    let krate = match published_crate(&cache, &expected)? {
        Ok(p) => p,
        Err(u) => return Ok(Err(u)),
    };

    // Pristine, then each patch in order.
    let tree = cache.join(format!("{NAME}-{VERSION}"));
    if tree.exists() {
        std::fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    run(Command::new("tar").arg("xzf").arg(&krate).arg("-C").arg(&cache))?;
    for p in NOT_VENDORED {
        let p = tree.join(p);
        if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) }
            .with_context(|| format!("removing {} (not vendored)", p.display()))?;
    }
    let patch_dir = root.join("vendor/patches").join(NAME);
    let mut patches: Vec<PathBuf> = std::fs::read_dir(&patch_dir)
        .with_context(|| format!("reading {}", patch_dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    patches.retain(|p| p.extension().is_some_and(|x| x == "patch"));
    patches.sort();
    if patches.is_empty() {
        bail!("no patches in {}", patch_dir.display());
    }
    for p in &patches {
        // `git apply` outside any repository (the ceiling keeps it from finding this one, which
        // would make the paths relative to the repository's root), so it patches `tree`.
        let mut cmd = Command::new("git");
        cmd.current_dir(&tree)
            .env("GIT_CEILING_DIRECTORIES", &cache)
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .args(["apply", "--whitespace=nowarn"])
            .arg(p);
        run(&mut cmd).with_context(|| format!("applying {} to pristine {NAME} {VERSION}", p.display()))?;
    }

    let vendored = root.join("vendor").join(NAME);
    let differ = compare(&tree, &vendored)?;
    if !differ.is_empty() {
        bail!(
            "{} is not crates.io {NAME} {VERSION} with {} applied ({} is): {}\n\
             Every change to the vendored crate is a patch: see vendor/{NAME}/PORTCULLIS.md",
            vendored.display(),
            patch_dir.display(),
            tree.display(),
            differ.join("; ")
        );
    }
    Ok(Ok(()))
}

/// The checksum Cargo.lock records for the registry's monoio 0.2.4, if any, else [`SHA256`].
fn expected_sha256(root: &Path) -> Result<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    for block in lock.split("[[package]]") {
        let field =
            |k: &str| block.lines().find_map(|l| l.strip_prefix(k)?.trim().strip_prefix("= \"")?.strip_suffix('"'));
        if field("name ") == Some(NAME) && field("version ") == Some(VERSION) {
            if let Some(sum) = field("checksum ") {
                return Ok(sum.to_owned());
            }
        }
    }
    Ok(SHA256.to_owned())
}

/// The cached `.crate` under `cache`, downloaded from crates.io if absent or corrupt.
fn published_crate(cache: &Path, expected: &str) -> Result<Result<PathBuf, Unavailable>> {
    let path = cache.join(format!("{NAME}-{VERSION}.crate"));
    if path.is_file() {
        if sha256(&path)? == expected {
            return Ok(Ok(path));
        }
        std::fs::remove_file(&path)?;
    }
    let url = format!("https://static.crates.io/crates/{NAME}/{NAME}-{VERSION}.crate");
    let tmp = cache.join(format!("{NAME}-{VERSION}.crate.part"));
    let fetched = Command::new("curl").args(["-sSfL", "--retry", "3", "-o"]).arg(&tmp).arg(&url).status();
    match fetched {
        Ok(s) if s.success() => {}
        Ok(s) => return Ok(Err(Unavailable(format!("curl {url}: {s}")))),
        Err(e) => return Ok(Err(Unavailable(format!("cannot run curl: {e}")))),
    }
    let got = sha256(&tmp)?;
    if got != expected {
        let _ = std::fs::remove_file(&tmp);
        bail!("{url} has SHA-256 {got}, expected {expected}");
    }
    std::fs::rename(&tmp, &path)?;
    Ok(Ok(path))
}

fn sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The relative paths that differ between `want` (pristine + patches) and `have` (vendored),
/// each with how.
fn compare(want: &Path, have: &Path) -> Result<Vec<String>> {
    let (w, h) = (files(want)?, files(have)?);
    let mut differ = Vec::new();
    for p in w.union(&h) {
        let d = match (w.contains(p), h.contains(p)) {
            (true, false) => "missing from the vendored tree",
            (false, true) if PORTCULLIS_ONLY.iter().any(|o| Path::new(o) == p) => continue,
            (false, true) => "only in the vendored tree",
            _ if std::fs::read(want.join(p))? != std::fs::read(have.join(p))? => "differs",
            _ => continue,
        };
        differ.push(format!("{}: {d}", p.display()));
    }
    Ok(differ)
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Result<BTreeSet<PathBuf>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                walk(base, &p, out)?;
            } else {
                out.insert(p.strip_prefix(base).expect("under base").to_path_buf());
            }
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_names_each_differing_path() {
        let dir = std::env::temp_dir().join(format!("xtask-vendored-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        for (d, files) in [
            (&a, &[("same", "x"), ("src/changed.rs", "1"), ("gone", "g")][..]),
            (&b, &[("same", "x"), ("src/changed.rs", "2"), ("extra", "e"), ("PORTCULLIS.md", "notes")][..]),
        ] {
            for (p, text) in files {
                std::fs::create_dir_all(d.join(p).parent().unwrap()).unwrap();
                std::fs::write(d.join(p), text).unwrap();
            }
        }
        let differ = compare(&a, &b).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            differ,
            ["extra: only in the vendored tree", "gone: missing from the vendored tree", "src/changed.rs: differs"]
        );
    }
}
