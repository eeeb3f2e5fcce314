//! Tyk's own sample API definitions, each run through `portcullis check` on its own, with the
//! shipped `active` and targets: which load is pinned, and every refusal names a feature
//! Portcullis does not have yet (`NOT_YET`). The samples (TykTechnologies/tyk @31e219be: apps/,
//! ci/tests, ci/smoke-tests, tests/regression) are read at test time from `../shared/tyk-samples`
//! beside the repository, or `PORTCULLIS_TYK_SAMPLES`; they are not part of it.

use std::path::PathBuf;
use std::process::Command;

/// The samples that load as shipped (39 of 86 on 2026-12-06).
const LOADED: &[&str] = &[
    "apps_quickstart.json",
    "ci_tests_api-functionality_data_api.json",
    "ci_tests_error-overrides_apps_test-aki.json",
    "ci_tests_error-overrides_apps_test-amf-authkey.json",
    "ci_tests_error-overrides_apps_test-amf-basicauth.json",
    "ci_tests_error-overrides_apps_test-api-override-aki.json",
    "ci_tests_error-overrides_apps_test-api-override-disabled.json",
    "ci_tests_error-overrides_apps_test-api-override-edge-cases.json",
    "ci_tests_error-overrides_apps_test-api-override-match.json",
    "ci_tests_error-overrides_apps_test-api-override-upstream.json",
    "ci_tests_error-overrides_apps_test-cdc.json",
    "ci_tests_error-overrides_apps_test-dns.json",
    "ci_tests_error-overrides_apps_test-ihd-basicauth.json",
    "ci_tests_error-overrides_apps_test-nrh.json",
    "ci_tests_error-overrides_apps_test-ok.json",
    "ci_tests_error-overrides_apps_test-qex.json",
    "ci_tests_error-overrides_apps_test-rlt.json",
    "ci_tests_error-overrides_apps_test-tke-jwt.json",
    "ci_tests_error-overrides_apps_test-ucf.json",
    "ci_tests_error-overrides_apps_test-uct.json",
    "ci_tests_error-overrides_apps_test-upe.json",
    "ci_tests_error-overrides_apps_test-upstream.json",
    "ci_tests_error-overrides_apps_test-urr.json",
    "ci_tests_error-overrides_apps_test-urs.json",
    "ci_tests_error-overrides_apps_test-urt.json",
    "ci_tests_metrics_apps_test-mcpapi.json",
    "ci_tests_metrics_apps_test-notrack.json",
    "ci_tests_metrics_apps_test-response-headers-cached.json",
    "ci_tests_metrics_apps_test-response-headers-error.json",
    "ci_tests_metrics_apps_test-response-headers-no-detail.json",
    "ci_tests_metrics_apps_test-response-headers.json",
    "ci_tests_metrics_apps_test.json",
    "ci_tests_tracing_apps_test-graphql-tracing-invalid.json",
    "ci_tests_tracing_apps_test-jwt.json",
    "ci_tests_tracing_apps_test-multiauth.json",
    "ci_tests_tracing_apps_test-response-mw.json",
    "ci_tests_tracing_apps_test.json",
    "tests_regression_testdata_issue-11806-api-no-domain.json",
    "tests_regression_testdata_issue-11806-api-with-domain.json",
];

/// Fields a refusal may name: what Portcullis does not have yet, and why a sample has it.
const NOT_YET: &[(&str, &str)] = &[
    ("custom_middleware", "custom middleware and plugins (a separate step)"),
    ("enable_coprocess_auth", "coprocess plugins"),
    ("use_oauth2", "OAuth2"),
    ("proxy.target_url", "https://, h2c:// and tyk:// targets (the TLS issue brings https)"),
    ("proxy.check_host_against_uptime_tests", "uptime tests"),
    ("enable_batch_request_support", "batch requests"),
    ("version_data.not_versioned", "versioning by header, parameter or URL"),
    ("override_target", "per-version targets"),
    ("extended_paths.validate_json", "JSON schema validation"),
    ("extended_paths.size_limits", "request size limits per endpoint"),
    ("extended_paths.circuit_breakers", "circuit breakers"),
    ("extended_paths.track_endpoints", "endpoint tracking"),
    ("extended_paths.url_rewrites", "URL rewrites"),
    ("extended_paths.transform_jq", "jq transforms"),
    ("openapi", "a Tyk OAS document checked without its classic definition"),
    // Not features: values Tyk loads and fails on at request time, refused here at load.
    ("jwt_source", "a JWT key source that is no key (Tyk's error-override tests use `header`)"),
    ("api_id", "no api_id (only in plugin samples, refused for their custom middleware too)"),
];

fn samples() -> Option<PathBuf> {
    let dir = std::env::var_os("PORTCULLIS_TYK_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/tyk-samples")));
    let src = dir.join("tyk-src");
    src.is_dir().then_some(src)
}

#[test]
fn tyk_sample_definitions_load_or_name_what_is_missing() {
    let Some(src) = samples() else {
        eprintln!("skipped: Tyk's samples are not beside the repository (set PORTCULLIS_TYK_SAMPLES)");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 80, "expected Tyk's 86 samples in {}", src.display());
    let mut loaded = Vec::new();
    let mut unexpected = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("apps")).unwrap();
        std::fs::copy(f, dir.path().join("apps").join(&name)).unwrap();
        std::fs::write(
            dir.path().join("p.toml"),
            "[proxy]\nlisten = \"127.0.0.1:1\"\n[admin]\nlisten = \"127.0.0.1:2\"\n[apps]\ndir = \"apps\"\npolicies = \"none.json\"\n",
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["check", "--config", "p.toml"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            loaded.push(name);
            continue;
        }
        // Every error must name a field of NOT_YET.
        for line in text.lines().filter(|l| l.starts_with("error: ")) {
            let field = line.split('`').nth(1).unwrap_or("");
            if !NOT_YET.iter().any(|(f, _)| field.starts_with(f) || field.contains(f)) {
                unexpected.push(format!("{name}: {line}"));
            }
        }
    }
    assert!(unexpected.is_empty(), "refusals that name no missing feature:\n{}", unexpected.join("\n"));
    let want: Vec<String> = LOADED.iter().map(|s| s.to_string()).collect();
    assert_eq!(loaded, want, "which samples load changed: update LOADED (and docs/tyk-compatibility.md)");
}
