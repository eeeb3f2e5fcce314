//! `cargo xtask bench-limits`: how close the rate limiter and quotas stay to their limits in the
//! scenarios where a distributed limiter can go wrong (one worker, spread over workers, three
//! nodes sharing Redis with an uneven split, 1/s, node-local while Redis is down, quotas over
//! three nodes), next to Tyk's published figures, plus the criterion decision cost. It runs the real scenarios of
//! `tests/it/limits.rs` (release build, one at a time, real binary, real redis-server) and
//! reports what they measured; it does not make up or fix any number.

use anyhow::{bail, Context, Result};

/// Tyk's distributed rate limiter, as reported for Tyk (not measured here; see
/// docs/decisions/0022-limiter-lease-on-share-growth.md).
const TYK: &[(&str, &str)] = &[
    ("3 nodes x 20 rps", "admits 18 rps (-10 %): the limit is split 1/N per gateway"),
    ("50 rps limit", "throttles at 40-45 rps (-10 to -20 %)"),
    ("rejected requests", "counted, so clients that back off may never recover"),
];

pub(crate) fn bench_limits(root: &std::path::Path) -> Result<()> {
    eprintln!("bench-limits: running the limit scenarios (release build, ~1 min)");
    let out = crate::cargo()
        .current_dir(root)
        .args(["test", "--release", "-p", "portcullis", "--test", "limits", "--", "--nocapture", "--test-threads=1"])
        .output()
        .context("running cargo test")?;
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("the limit scenarios failed:\n{text}");
    }
    let mut rows = Vec::new();
    for line in text.lines() {
        // "<scenario>: admitted N, limit allows M (+x.x%)"
        if let Some((name, rest)) = line.split_once(": admitted ") {
            rows.push((name.trim().to_string(), format!("admitted {}", rest.trim())));
        }
    }
    if rows.is_empty() {
        bail!("no measurements found in the test output (did a scenario skip? redis-server missing?):\n{text}");
    }
    println!("\n### Rate limits and quotas: admitted vs allowed\n");
    println!("| scenario | measured |");
    println!("|---|---|");
    for (name, v) in &rows {
        println!("| {name} | {v} |");
    }
    println!("\nTyk's distributed limiter, for comparison:\n");
    for (what, how) in TYK {
        println!("- {what}: {how}");
    }
    println!("\nDecision cost: `cargo bench -p portcullis-bench --bench limit` (criterion).");
    Ok(())
}
