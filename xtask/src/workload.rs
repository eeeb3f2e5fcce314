//! The gateway workload both the load benchmark (`bench.rs`, its `gateway` scenario) and the PGO
//! training run (`pgo.rs`) serve: a JWT API and the policy it grants.

/// A Tyk API definition behind JWT (HS256 with the base64 secret `secret_b64`) that injects the
/// `sub` claim as `X-User`, strips the Authorization header and grants `policy` to every token,
/// proxying `listen_path` (stripped) to `upstream` (`host:port`). The gateway scenario's API,
/// and the PGO training's (pgo.rs).
pub(crate) fn jwt_api(id: &str, listen_path: &str, secret_b64: &str, policy: &str, upstream: &str) -> String {
    format!(
        r#"{{"api_id": "{id}", "name": "{id}", "active": true, "enable_jwt": true, "jwt_signing_method": "hmac",
            "jwt_source": "{secret_b64}", "jwt_identity_base_field": "sub", "jwt_default_policies": ["{policy}"],
            "enable_context_vars": true, "strip_auth_data": true,
            "version_data": {{"not_versioned": true, "versions": {{"Default": {{"name": "Default", "global_headers": {{"X-User": "$tyk_context.jwt_claims_sub"}}}}}}}},
            "proxy": {{"listen_path": "{listen_path}", "target_url": "http://{upstream}/", "strip_listen_path": true}}}}"#
    )
}

/// A policies file with one policy granting `api` at a rate too high to reject anything.
pub(crate) fn policy(name: &str, api: &str) -> String {
    format!(
        r#"{{"{name}": {{"rate": 1000000, "per": 1, "quota_max": -1, "access_rights": {{"{api}": {{"api_id": "{api}", "versions": ["Default"]}}}}}}}}"#
    )
}
