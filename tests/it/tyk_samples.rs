//! Tyk's own sample API definitions, each run through `portcullis check` on its own, with the
//! shipped `active` and targets: which load is pinned, and every refusal names a feature
//! Portcullis does not have yet (`NOT_YET`). The samples (TykTechnologies/tyk @31e219be: apps/,
//! ci/tests, ci/smoke-tests, tests/regression) are read at test time from `../shared/tyk-samples`
//! beside the repository, or `PORTCULLIS_TYK_SAMPLES`; they are not part of it.

use std::path::PathBuf;
use std::process::Command;

/// The samples that load as shipped (63 of 86 on 2026-12-07, since `https://` targets work).
const LOADED: &[&str] = &[
    "apps_app_sample.json",
    "apps_jq.json",
    "apps_quickstart.json",
    "ci_tests_api-functionality_data_api.json",
    "ci_tests_error-overrides_apps_test-aki.json",
    "ci_tests_error-overrides_apps_test-amf-authkey.json",
    "ci_tests_error-overrides_apps_test-amf-basicauth.json",
    "ci_tests_error-overrides_apps_test-amf-jwt.json",
    "ci_tests_error-overrides_apps_test-api-override-aki.json",
    "ci_tests_error-overrides_apps_test-api-override-disabled.json",
    "ci_tests_error-overrides_apps_test-api-override-edge-cases.json",
    "ci_tests_error-overrides_apps_test-api-override-match.json",
    "ci_tests_error-overrides_apps_test-api-override-upstream.json",
    "ci_tests_error-overrides_apps_test-biv-json.json",
    "ci_tests_error-overrides_apps_test-biv-schema.json",
    "ci_tests_error-overrides_apps_test-btl.json",
    "ci_tests_error-overrides_apps_test-cbo.json",
    "ci_tests_error-overrides_apps_test-cdc.json",
    "ci_tests_error-overrides_apps_test-clm.json",
    "ci_tests_error-overrides_apps_test-dns.json",
    "ci_tests_error-overrides_apps_test-ihd-basicauth.json",
    "ci_tests_error-overrides_apps_test-nhu.json",
    "ci_tests_error-overrides_apps_test-nrh.json",
    "ci_tests_error-overrides_apps_test-ok.json",
    "ci_tests_error-overrides_apps_test-qex.json",
    "ci_tests_error-overrides_apps_test-rlt.json",
    "ci_tests_error-overrides_apps_test-tke-jwt.json",
    "ci_tests_error-overrides_apps_test-tki-jwt.json",
    "ci_tests_error-overrides_apps_test-tle.json",
    "ci_tests_error-overrides_apps_test-tlh.json",
    "ci_tests_error-overrides_apps_test-tli.json",
    "ci_tests_error-overrides_apps_test-tlm.json",
    "ci_tests_error-overrides_apps_test-tln.json",
    "ci_tests_error-overrides_apps_test-tlp.json",
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
    "ci_tests_metrics_apps_test-tracked.json",
    "ci_tests_metrics_apps_test.json",
    "ci_tests_tracing_apps_test-auth.json",
    "ci_tests_tracing_apps_test-graphql-detailed-tracing-disabled.json",
    "ci_tests_tracing_apps_test-graphql-tracing-invalid.json",
    "ci_tests_tracing_apps_test-graphql-tracing.json",
    "ci_tests_tracing_apps_test-jwt.json",
    "ci_tests_tracing_apps_test-multiauth.json",
    "ci_tests_tracing_apps_test-ratelimit.json",
    "ci_tests_tracing_apps_test-response-mw.json",
    "ci_tests_tracing_apps_test.json",
    "ci_tests_tracing_apps_versioned-not-detailed.json",
    "ci_tests_tracing_apps_versioned.json",
    "tests_regression_testdata_issue-11806-api-no-domain.json",
    "tests_regression_testdata_issue-11806-api-with-domain.json",
    "tests_regression_testdata_issue-12865.json",
];

/// Fields a refusal may name: what Portcullis does not have yet, and why a sample has it.
const NOT_YET: &[(&str, &str)] = &[
    ("custom_middleware", "custom middleware and plugins (a separate step)"),
    ("enable_coprocess_auth", "coprocess plugins"),
    ("use_oauth2", "OAuth2"),
    ("proxy.target_url", "h2c:// and tyk:// targets"),
    ("openapi", "a Tyk OAS document checked without its classic definition"),
    ("response.template", "an error template file that Tyk's CI keeps beside its config, not among the samples"),
    // Not features: values Tyk loads and fails on at request time, refused here at load.
    ("api_id", "no api_id (only in plugin samples, refused for their custom middleware too)"),
];

fn samples() -> Option<PathBuf> {
    let dir = std::env::var_os("PORTCULLIS_TYK_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/tyk-samples")));
    let src = dir.join("tyk-src");
    src.is_dir().then_some(src)
}

/// Runs `portcullis check` on one definition alone; `Ok(())` when it loads, else the error lines.
fn check(name: &str, json: &[u8]) -> Result<(), Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("apps")).unwrap();
    std::fs::write(dir.path().join("apps").join(name), json).unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "[proxy]\nlisten = \"127.0.0.1:1\"\n[admin]\nlisten = \"127.0.0.1:2\"\n[apps]\ndir = \"apps\"\npolicies = \"none.json\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", "p.toml"])
        // PORTCULLIS_* variables are config overrides to the binary; this one is the test's.
        .env_remove("PORTCULLIS_TYK_SAMPLES")
        .current_dir(dir.path())
        .output()
        .unwrap();
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let errors: Vec<String> = text.lines().filter(|l| l.starts_with("error: ")).map(str::to_string).collect();
    assert!(!errors.is_empty(), "{name}: check failed without naming an error:\n{text}");
    Err(errors)
}

/// The field an error line names (`field \`x\``).
fn field_of(line: &str) -> &str {
    line.split('`').nth(1).unwrap_or("")
}

fn names(fields: &[(&str, &str)], field: &str) -> bool {
    fields.iter().any(|(f, _)| field.starts_with(f) || field.contains(f))
}

fn sample_files() -> Option<Vec<PathBuf>> {
    let src = samples()?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 80, "expected Tyk's 86 samples in {}", src.display());
    Some(files)
}

#[test]
fn tyk_sample_definitions_load_or_name_what_is_missing() {
    let Some(files) = sample_files() else {
        eprintln!("skipped: Tyk's samples are not beside the repository (set PORTCULLIS_TYK_SAMPLES)");
        return;
    };
    let mut loaded = Vec::new();
    let mut unexpected = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        match check(&name, &std::fs::read(f).unwrap()) {
            Ok(()) => loaded.push(name),
            Err(errors) => {
                for line in errors.iter().filter(|l| !names(NOT_YET, field_of(l))) {
                    unexpected.push(format!("{name}: {line}"));
                }
            }
        }
    }
    assert!(unexpected.is_empty(), "refusals that name no missing feature:\n{}", unexpected.join("\n"));
    let want: Vec<String> = LOADED.iter().map(|s| s.to_string()).collect();
    assert_eq!(loaded, want, "which samples load changed: update LOADED (and docs/tyk-compatibility.md)");
}

/// What a sample may still be refused for once its upstreams are on loopback: what issue-level
/// scope leaves out (plugins, OAuth2) and what is not built yet (`TODO`, to shrink).
const OUT_OF_SCOPE: &[(&str, &str)] = &[
    ("custom_middleware", "custom middleware and plugins (a separate step)"),
    ("enable_coprocess_auth", "coprocess plugins"),
    ("use_oauth2", "OAuth2"),
    ("response.template", "an error template file that Tyk's CI keeps beside its config, not among the samples"),
];

/// In scope and refused with a clear error, as the issue allows: a Tyk OAS document alone
/// (its classic definition is what loads).
const TODO: &[(&str, &str)] = &[("openapi", "a Tyk OAS document without its classic definition")];

/// The samples refused once their upstreams point at a loopback `http://` server, with the field
/// each is refused for. Every entry names an OUT_OF_SCOPE field or is a TODO.
const REFUSED_ON_LOOPBACK: &[(&str, &str)] = &[
    ("apps_coprocess_app_sample.json", "custom_middleware.pre"),
    ("apps_coprocess_app_sample_protected.json", "enable_coprocess_auth"),
    ("apps_coprocess_grpc_app_sample.json", "custom_middleware.pre"),
    ("apps_coprocess_grpc_app_sample_protected.json", "custom_middleware_bundle"),
    ("apps_coprocess_lua_app_sample.json", "custom_middleware.pre"),
    ("ci_smoke-tests_plugin-aliasing_foobar-plugin_foobar-plugin-1.json", "custom_middleware.post"),
    ("ci_smoke-tests_plugin-aliasing_foobar-plugin_foobar-plugin-2.json", "custom_middleware.post"),
    ("ci_smoke-tests_plugin-aliasing_helloworld-plugin_helloworld-plugin-1.json", "custom_middleware.post"),
    ("ci_smoke-tests_plugin-aliasing_helloworld-plugin_helloworld-plugin-2.json", "custom_middleware.post"),
    ("ci_tests_error-overrides_apps_test-aki-oauth.json", "use_oauth2"),
    ("ci_tests_error-overrides_apps_test-amf-oauth.json", "use_oauth2"),
    ("ci_tests_error-overrides_apps_test-biv-json-invalid-params.json", "error_overrides.400[0].response.template"),
    ("ci_tests_error-overrides_apps_test-biv-schema-invalid-params.json", "error_overrides.422[0].response.template"),
    ("ci_tests_error-overrides_apps_test-ead.json", "use_oauth2"),
    ("ci_tests_error-overrides_apps_test-ihd-oauth.json", "use_oauth2"),
    ("ci_tests_metrics_apps_test-mcpapi-mcp.json", "openapi"),
    ("ci_tests_plugin-compiler_testdata_test-plugin_apidef.json", "custom_middleware.post"),
    ("ci_tests_python-plugins_src_apidef.json", "custom_middleware_bundle"),
    ("ci_tests_tracing_apps_test-multiauth-oas.json", "openapi"),
    ("tests_regression_testdata_issue-10104-apidef.json", "custom_middleware.post"),
];

/// The migration the issue describes: upstreams pointed at a loopback `http://` server (scheme,
/// host and port replaced, path kept), `active` as shipped.
#[test]
fn tyk_sample_definitions_with_loopback_upstreams_load_unless_out_of_scope() {
    let Some(files) = sample_files() else {
        eprintln!("skipped: Tyk's samples are not beside the repository (set PORTCULLIS_TYK_SAMPLES)");
        return;
    };
    let mut refused = Vec::new();
    let mut loaded = 0;
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        let mut def: serde_json::Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        to_loopback(&mut def);
        match check(&name, &serde_json::to_vec(&def).unwrap()) {
            Ok(()) => loaded += 1,
            Err(errors) => {
                // Name the out-of-scope reason when there is one (plugin samples are refused for
                // their missing api_id too).
                let field = errors
                    .iter()
                    .map(|l| field_of(l))
                    .find(|f| names(OUT_OF_SCOPE, f))
                    .unwrap_or_else(|| field_of(&errors[0]));
                refused.push(format!("{name}: {field}"));
            }
        }
    }
    let want: Vec<String> = REFUSED_ON_LOOPBACK.iter().map(|(n, f)| format!("{n}: {f}")).collect();
    assert_eq!(refused, want, "refused with loopback upstreams ({loaded} of {} load)", files.len());
    for (n, f) in REFUSED_ON_LOOPBACK {
        assert!(names(OUT_OF_SCOPE, f) || names(TODO, f), "{n} is refused for `{f}`, which is in scope");
    }
}

/// `scheme://host:port/path` -> `http://127.0.0.1:9/path` in `proxy.target_url`,
/// `proxy.target_list`, the versions' `override_target` and their absolute `url_rewrites`
/// `rewrite_to`s (issue-12865's goes to `http://httpbin.org`).
fn to_loopback(def: &mut serde_json::Value) {
    fn rewrite(url: &mut serde_json::Value) {
        if let Some(s) = url.as_str() {
            let rest = s.split_once("://").map_or(s, |(_, r)| r);
            let path = rest.find('/').map_or("", |i| &rest[i..]);
            *url = serde_json::Value::String(format!("http://127.0.0.1:9{path}"));
        }
    }
    // A version's `override_target` is an upstream too.
    if let Some(serde_json::Value::Object(versions)) = def.pointer_mut("/version_data/versions") {
        for v in versions.values_mut() {
            if let Some(t) = v.get_mut("override_target").filter(|t| t.as_str().is_some_and(|s| !s.is_empty())) {
                rewrite(t);
            }
            if let Some(serde_json::Value::Array(rws)) = v.pointer_mut("/extended_paths/url_rewrites") {
                for rw in rws {
                    if let Some(t) = rw.get_mut("rewrite_to").filter(|t| t.as_str().is_some_and(|s| s.contains("://")))
                    {
                        rewrite(t);
                    }
                }
            }
        }
    }
    if let Some(p) = def.get_mut("proxy") {
        if let Some(t) = p.get_mut("target_url") {
            rewrite(t);
        }
        if let Some(serde_json::Value::Array(list)) = p.get_mut("target_list") {
            list.iter_mut().for_each(rewrite);
        }
    }
}
