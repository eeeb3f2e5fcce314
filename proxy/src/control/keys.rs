//! Tyk's key API on the admin listener: `POST /tyk/keys/create`, `POST|PUT|GET|DELETE
//! /tyk/keys/{key}`, `GET /tyk/keys`. Replies use Tyk's shapes (`{"key", "status", "action",
//! "key_hash"}`); `key_hash` is the key's SHA-256 (hex), the only form in which keys are stored,
//! listed or logged, or for a key a Tyk gateway wrote to Redis the Tyk hash it is stored under
//! (`auth::tyk_key`). `GET|DELETE /tyk/keys/{hash}?hashed=true` address a key by either hash.
//! New keys are Tyk's tokens with `"h": "sha256"`; `DELETE` removes every copy of a key, `PUT`
//! moves a Tyk-written key to its SHA-256.
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

use crate::auth::tyk_key::{self, TykHash};
use crate::auth::{hash_key, hex, parse_hex, policy, KeyHash, KeyLookup};
use crate::config::TykSession;

use super::ControlState;

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: serde_json::Value) -> Resp {
    super::json_response(status, body)
}

fn error(status: StatusCode, message: impl Into<String>) -> Resp {
    reply(status, json!({"status": "error", "message": message.into()}))
}

/// 32 random hex digits (Tyk's `uuid.NewHex`).
fn random_hex() -> Result<String, String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A new key as a Tyk gateway with `hash_key_function: sha256` makes one (internal/crypto/
/// token.go:25-41): base64 of `{"org":..,"id":<32 hex>,"h":"sha256"}`. Stored under its
/// SHA-256, where such a Tyk gateway looks for it too (module docs of `auth::tyk_key`).
fn new_key(org_id: &str) -> Result<String, String> {
    Ok(tyk_key::generate_token(org_id, &random_hex()?, TykHash::Sha256))
}

/// How a request names a key.
enum Addr {
    /// The key itself: found under its SHA-256 or where Tyk gateways keep it.
    Key(String),
    /// `?hashed=true` with 64 hex digits: a SHA-256.
    Sha(KeyHash),
    /// `?hashed=true` with 8, 16 or 32 hex digits: a Tyk gateway's murmur hash.
    Tyk(String),
}

fn address(key: &str, hashed: bool) -> Result<Addr, Resp> {
    if !hashed {
        return Ok(Addr::Key(key.to_string()));
    }
    let hex_digits = key.bytes().all(|b| b.is_ascii_hexdigit());
    match key.len() {
        64 if hex_digits => parse_hex(key).map(Addr::Sha).ok_or_else(bad_hash),
        8 | 16 | 32 if hex_digits => Ok(Addr::Tyk(key.to_ascii_lowercase())),
        _ => Err(bad_hash()),
    }
}

fn bad_hash() -> Resp {
    error(
        StatusCode::BAD_REQUEST,
        "hashed=true needs a key hash in hex: 64 digits (SHA-256), or 8, 16 or 32 (a Tyk gateway's murmur32, 64, 128)",
    )
}

/// Where `key` may be stored: its SHA-256, then Tyk's names for it in the org of `?api_id=`
/// (Tyk's key API takes the org from that API too), as `[auth] tyk_key_hashes` allows.
fn lookup(state: &ControlState, key: &str, api_id: Option<&str>) -> KeyLookup {
    let snap = state.reloader.snapshot.load();
    let org = api_id.and_then(|id| snap.apis.iter().find(|a| a.api_id == id)).map_or("", |a| a.org_id.as_str());
    KeyLookup { hash: hash_key(key), tyk: tyk_key::tyk_addresses(key, org, &snap.tyk_key_hashes) }
}

/// Routes `/tyk/keys...` (the caller has checked the admin secret).
pub(super) async fn handle(state: &ControlState, req: Request<Incoming>, path: &str) -> Resp {
    let query_flag = |name: &str| {
        req.uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == format!("{name}=true") || kv == format!("{name}=1")))
    };
    let hashed = query_flag("hashed");
    let api_id: Option<String> =
        req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("api_id=")).map(str::to_string));
    let api_id = api_id.as_deref();
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
            store(state, &key, body, "added", reset_quota, None, Via::Create).await
        }
        (Method::POST, key) if !key.is_empty() => {
            let body = match read_session(req).await {
                Ok(s) => s,
                Err(r) => return r,
            };
            store(state, key, body, "added", reset_quota, None, Via::Key).await
        }
        (Method::PUT, key) if !key.is_empty() => {
            let body = match read_session(req).await {
                Ok(s) => s,
                Err(r) => return r,
            };
            let at = lookup(state, key, api_id);
            match state.keys.find(&at).await {
                Ok(Some((old, tyk_name))) => {
                    let mut body = body;
                    body.date_created = old.date_created;
                    // An update without a new password keeps the stored hash.
                    if body.basic_auth_data.password.is_empty() {
                        body.basic_auth_data = old.basic_auth_data;
                    }
                    let resp = store(state, key, body, "modified", reset_quota, tyk_name.as_deref(), Via::Key).await;
                    // A key a Tyk gateway wrote now lives under its SHA-256: the old copy goes,
                    // so that no second, stale session grants what the update took away.
                    if let (true, Some(name)) = (resp.status() == StatusCode::OK, tyk_name) {
                        if let Err(e) = state.keys.delete_tyk(&[name], Some(&at.hash)).await {
                            return error(
                                StatusCode::SERVICE_UNAVAILABLE,
                                format!("key stored, but its Tyk copy remains: {e}"),
                            );
                        }
                    }
                    resp
                }
                Ok(None) => error(StatusCode::NOT_FOUND, "Key not found"),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        (Method::GET, key) if !key.is_empty() => {
            let found = match address(key, hashed) {
                Err(r) => return r,
                Ok(Addr::Key(k)) => {
                    let at = lookup(state, &k, api_id);
                    state.keys.find(&at).await.map(|f| f.map(|(s, name)| (s, name.unwrap_or_else(|| hex(&at.hash)))))
                }
                Ok(Addr::Sha(h)) => state.keys.get(&h).await.map(|f| f.map(|s| (s, hex(&h)))),
                Ok(Addr::Tyk(name)) => state.keys.get_tyk(&name).await.map(|f| f.map(|s| (s, name))),
            };
            match found {
                Ok(Some((s, key_hash))) => {
                    let mut v = serde_json::to_value(s.redacted()).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.insert("key_hash".into(), key_hash.into());
                    }
                    reply(StatusCode::OK, v)
                }
                Ok(None) => error(StatusCode::NOT_FOUND, "Key not found"),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        (Method::DELETE, key) if !key.is_empty() => {
            // Every copy goes: under the SHA-256 and where Tyk gateways keep it (Tyk deletes
            // both of its forms too, auth_manager.go:159-171).
            let deleted = match address(key, hashed) {
                Err(r) => return r,
                Ok(Addr::Key(k)) => {
                    let at = lookup(state, &k, api_id);
                    match state.keys.delete(&at.hash).await {
                        Ok(own) => {
                            state.keys.delete_tyk(&at.tyk, Some(&at.hash)).await.map(|t| (own || t, hex(&at.hash)))
                        }
                        Err(e) => Err(e),
                    }
                }
                Ok(Addr::Sha(h)) => state.keys.delete(&h).await.map(|d| (d, hex(&h))),
                Ok(Addr::Tyk(name)) => {
                    state.keys.delete_tyk(std::slice::from_ref(&name), None).await.map(|d| (d, name))
                }
            };
            match deleted.map(|(d, h)| d.then_some(h)) {
                Ok(Some(key_hash)) => {
                    tracing::info!(key_hash = %key_hash, "key deleted");
                    reply(
                        StatusCode::OK,
                        json!({"key": key, "status": "ok", "action": "deleted", "key_hash": key_hash}),
                    )
                }
                Ok(None) => error(StatusCode::NOT_FOUND, "Key not found"),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "unsupported method for /tyk/keys"),
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
/// Stores session `s` for `key` under its SHA-256. `reset_quota` starts its quota counters over;
/// `moved_from` (a key a Tyk gateway wrote, under that name) carries Tyk's counters over to the
/// SHA-256's, so that moving the key spends no quota anew.
async fn store(
    state: &ControlState,
    key: &str,
    mut s: TykSession,
    action: &str,
    reset_quota: bool,
    moved_from: Option<&str>,
    via: Via,
) -> Resp {
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
        match random_hex() {
            Ok(secret) => s.hmac_string = secret,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }
    // Tyk's formats (user/session.go:305, 335; gateway/api.go:410): `date_created` a Go
    // `time.Time` (RFC 3339), `last_updated` Unix seconds as a string.
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    if s.date_created.is_empty() {
        let t = crate::analytics::clock::WallTime::at(now_us);
        s.date_created = String::from_utf8_lossy(&t.rfc3339).into_owned();
    }
    s.last_updated = (now_us / 1_000_000).to_string();
    let hash = hash_key(key);
    // Before the put, whose invalidation makes workers drop their quota blocks.
    if reset_quota || moved_from.is_some() {
        // The key's own counter and those of its scopes (an API's own limit, a policy's),
        // named as `Identity::quota_id` names them: Tyk's `quota-[<scope>-]<hash>`.
        let mut scopes: Vec<Option<&str>> = vec![None];
        for a in grant.access.iter().flat_map(|m| m.values()) {
            if let Some(scope) = a.limits.as_ref().and_then(|l| l.scope.as_deref()) {
                if !scopes.contains(&Some(scope)) {
                    scopes.push(Some(scope));
                }
            }
        }
        let base = hex(&hash);
        let id = |scope: Option<&str>, name: &str| scope.map_or_else(|| name.to_string(), |s| format!("{s}-{name}"));
        for scope in scopes {
            let done = match moved_from {
                Some(from) if !reset_quota => state.keys.copy_quota(&id(scope, from), &id(scope, &base)).await,
                _ => state.keys.reset_quota(&id(scope, &base)).await,
            };
            if let Err(e) = done {
                return error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot reset or carry over the quota: {e}"));
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
