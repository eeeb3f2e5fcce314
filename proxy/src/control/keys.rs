//! Tyk's key API on the admin listener: `POST /tyk/keys/create`, `POST|PUT|GET|DELETE
//! /tyk/keys/{key}`, `GET /tyk/keys`. Replies use Tyk's shapes (`{"key", "status", "action",
//! "key_hash"}`); `key_hash` is the key's SHA-256 (hex), the only form in which keys are stored,
//! listed or logged. `GET|DELETE /tyk/keys/{hash}?hashed=true` address a key by its hash.
//!
//! Before storing, a session is checked (its policies exist, `allowed_urls` compile), a plain
//! basic-auth password is hashed with bcrypt, and an HMAC secret is generated when HMAC is
//! enabled without one. Storing a key starts its quota over (Tyk's behaviour) unless the request
//! has `?suppress_reset=1`. Must not: echo a stored password hash, or log a key.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::auth::{hash_key, hex, parse_hex, policy};
use crate::config::TykSession;

use super::ControlState;

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: serde_json::Value) -> Resp {
    super::json_response(status, body)
}

fn error(status: StatusCode, message: impl Into<String>) -> Resp {
    reply(status, json!({"status": "error", "message": message.into()}))
}

/// A new random key: `org_id` followed by 32 hex digits (Tyk's shape).
fn new_key(org_id: &str) -> Result<String, String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
    Ok(format!("{org_id}{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()))
}

/// Routes `/tyk/keys...` (the caller has checked the admin secret).
pub(super) async fn handle(state: &ControlState, req: Request<Incoming>, path: &str) -> Resp {
    let query_flag = |name: &str| {
        req.uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == format!("{name}=true") || kv == format!("{name}=1")))
    };
    let hashed = query_flag("hashed");
    // Tyk: storing a key starts its quota over, unless `suppress_reset=1`.
    let reset_quota = !query_flag("suppress_reset");
    let rest = path.trim_start_matches("/tyk/keys").trim_start_matches('/');
    let method = req.method().clone();
    match (method, rest) {
        (Method::GET, "") => list(state).await,
        (Method::POST, "create") => {
            let body = match read_session(req).await {
                Ok(s) => s,
                Err(r) => return r,
            };
            let key = match new_key(&body.org_id) {
                Ok(k) => k,
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
            };
            store(state, &key, body, "added", reset_quota, Via::Create).await
        }
        (Method::POST, key) if !key.is_empty() => {
            let body = match read_session(req).await {
                Ok(s) => s,
                Err(r) => return r,
            };
            store(state, key, body, "added", reset_quota, Via::Key).await
        }
        (Method::PUT, key) if !key.is_empty() => {
            let body = match read_session(req).await {
                Ok(s) => s,
                Err(r) => return r,
            };
            match state.keys.get(&hash_key(key)).await {
                Ok(Some(old)) => {
                    let mut body = body;
                    body.date_created = old.date_created;
                    // An update without a new password keeps the stored hash.
                    if body.basic_auth_data.password.is_empty() {
                        body.basic_auth_data = old.basic_auth_data;
                    }
                    store(state, key, body, "modified", reset_quota, Via::Key).await
                }
                Ok(None) => error(StatusCode::NOT_FOUND, "Key not found"),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        (Method::GET, key) if !key.is_empty() => {
            let Some(hash) = address(key, hashed) else {
                return error(StatusCode::BAD_REQUEST, "hashed=true needs a 64-digit hex key hash");
            };
            match state.keys.get(&hash).await {
                Ok(Some(s)) => {
                    let mut v = serde_json::to_value(s.redacted()).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.insert("key_hash".into(), hex(&hash).into());
                    }
                    reply(StatusCode::OK, v)
                }
                Ok(None) => error(StatusCode::NOT_FOUND, "Key not found"),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        (Method::DELETE, key) if !key.is_empty() => {
            let Some(hash) = address(key, hashed) else {
                return error(StatusCode::BAD_REQUEST, "hashed=true needs a 64-digit hex key hash");
            };
            match state.keys.delete(&hash).await {
                Ok(true) => {
                    tracing::info!(key_hash = %hex(&hash), "key deleted");
                    reply(
                        StatusCode::OK,
                        json!({"key": key, "status": "ok", "action": "deleted", "key_hash": hex(&hash)}),
                    )
                }
                Ok(false) => error(StatusCode::NOT_FOUND, "Key not found"),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "unsupported method for /tyk/keys"),
    }
}

fn address(key: &str, hashed: bool) -> Option<crate::auth::KeyHash> {
    if hashed {
        parse_hex(key)
    } else {
        Some(hash_key(key))
    }
}

async fn list(state: &ControlState) -> Resp {
    match state.keys.list().await {
        Ok(keys) => reply(StatusCode::OK, json!({"keys": keys})),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn read_session(req: Request<Incoming>) -> Result<TykSession, Resp> {
    let body = http_body_util::Limited::new(req.into_body(), 1024 * 1024)
        .collect()
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("cannot read body: {e}")))?
        .to_bytes();
    let de = &mut serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        error(StatusCode::BAD_REQUEST, format!("invalid session: field `{field}`: {}", e.inner()))
    })
}

/// Which endpoint stores a key: Tyk refuses a key without access rights differently on each.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `POST /tyk/keys/create`.
    Create,
    /// `POST` / `PUT /tyk/keys/{key}`.
    Key,
}

/// Validates, completes and stores a session under `key`.
async fn store(state: &ControlState, key: &str, mut s: TykSession, action: &str, reset_quota: bool, via: Via) -> Resp {
    if key.len() > 1024 || key.chars().any(|c| c.is_control() || c == '/') {
        return error(
            StatusCode::BAD_REQUEST,
            "keys must be at most 1024 characters, without '/' or control characters",
        );
    }
    // rate/per without a meaning in Tyk (negative other than -1, per <= 0 with a rate) would
    // act as no limit: refused, naming the field and the value.
    if let Some(p) = s.rate_problems().into_iter().next() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid session: field `{}` = {}: {}", p.field, p.value, p.message),
        );
    }
    let snap = state.reloader.snapshot.load_full();
    for id in s.policy_ids() {
        if snap.policies.get(id).is_none() {
            return error(StatusCode::BAD_REQUEST, format!("apply_policies: policy {id:?} does not exist"));
        }
    }
    let grant = match policy::grant_for_session(&s.to_session(), &snap.policies) {
        Ok(g) => g,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    // A key with no access rights, its own or from policies, would open every API: refused
    // unless `[auth] allow_master_keys`, as Tyk's default config does (gateway/api.go:454-459,
    // 652-670; 2260-2302 for /tyk/keys/create).
    if grant.access.is_none() && !snap.config.auth.allow_master_keys {
        return match via {
            Via::Create => error(
                StatusCode::BAD_REQUEST,
                "Failed to create key, keys must have at least one Access Rights record set.",
            ),
            Via::Key => {
                error(StatusCode::INTERNAL_SERVER_ERROR, "Failed to create key, ensure security settings are correct.")
            }
        };
    }
    let bad = &s.basic_auth_data;
    if !bad.password.is_empty() && bad.hash_type.is_empty() {
        let cost = snap.config.auth.bcrypt_cost;
        let plain = std::mem::take(&mut s.basic_auth_data.password);
        match tokio::task::spawn_blocking(move || crate::auth::basic::hash_password(&plain, cost)).await {
            Ok(Ok(h)) => {
                s.basic_auth_data.password = h;
                s.basic_auth_data.hash_type = "bcrypt".into();
            }
            Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("basic_auth_data.password: {e}")),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("hashing failed: {e}")),
        }
    } else if !bad.password.is_empty() && bad.hash_type != "bcrypt" {
        return error(StatusCode::BAD_REQUEST, format!("basic_auth_data.hash_type {:?} is not supported (send the plain password, or a bcrypt hash with hash_type \"bcrypt\")", bad.hash_type));
    }
    if s.hmac_enabled && s.hmac_string.is_empty() {
        match new_key("") {
            Ok(secret) => s.hmac_string = secret,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }
    let now = httpdate::fmt_http_date(std::time::SystemTime::now());
    if s.date_created.is_empty() {
        s.date_created = now.clone();
    }
    s.last_updated = now;
    let hash = hash_key(key);
    // Before the put, whose invalidation makes workers drop their quota blocks.
    if reset_quota {
        // The key's own counter and those of its scopes (an API's own limit, a policy's).
        let base = format!("k:{}", hex(&hash));
        let mut ids = vec![base.clone()];
        for a in grant.access.iter().flat_map(|m| m.values()) {
            if let Some(scope) = a.limits.as_ref().and_then(|l| l.scope.as_ref()) {
                let id = format!("{base}/{scope}");
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        for id in ids {
            if let Err(e) = state.keys.reset_quota(&id).await {
                return error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot reset the quota: {e}"));
            }
        }
    }
    match state.keys.put(&hash, &s).await {
        Ok(()) => {
            tracing::info!(key_hash = %hex(&hash), action, "key stored");
            let mut body = json!({"key": key, "status": "ok", "action": action, "key_hash": hex(&hash)});
            if s.hmac_enabled {
                body["hmac_string"] = s.hmac_string.clone().into();
            }
            reply(StatusCode::OK, body)
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
