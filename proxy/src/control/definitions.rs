//! Tyk's gateway API for API definitions and policies on the admin listener: `GET|POST
//! /tyk/apis`, `GET|PUT|DELETE /tyk/apis/{id}`, and the same for `/tyk/policies`. Replies use
//! Tyk's shapes: the loaded definitions (as their files have them), `{"key", "status",
//! "action"}` for a change, `{"status": "error", "message"}` with Tyk's statuses otherwise.
//!
//! A change writes the file into `[apps] dir` (`<api_id>.json`, or the file the API was loaded
//! from) or the policies location (the map file rewritten, or `<id>.json` in a policy directory)
//! and reloads, through [`Reloader::apply`](super::Reloader::apply): a definition the loader
//! refuses gets 400 with the loader's errors and nothing is written. Tyk writes the file only
//! and needs `/tyk/reload` afterwards (which, here, finds nothing new). Must not: write an id
//! that is not a safe file name ([`crate::config::is_safe_id`]).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::config::{is_safe_id, Change};

use super::{ControlState, EditRefused};

type Resp = Response<Full<Bytes>>;

fn error(status: StatusCode, message: impl Into<String>) -> Resp {
    super::json_response(status, json!({"status": "error", "message": message.into()}))
}

fn done(key: &str, action: &str) -> Resp {
    super::json_response(StatusCode::OK, json!({"key": key, "status": "ok", "action": action}))
}

/// What the definitions are called in messages (Tyk's wording).
#[derive(Clone, Copy)]
enum Kind {
    Api,
    Policy,
}

/// Routes `/tyk/apis...` (the caller has checked the admin secret).
pub(super) async fn apis(state: &Arc<ControlState>, req: Request<Incoming>, path: &str) -> Resp {
    let Some(id) = path_id(path, "/tyk/apis") else {
        return error(StatusCode::BAD_REQUEST, "Invalid API ID");
    };
    let snap = state.reloader.snapshot.load_full();
    let loaded = |id: &str| snap.apis.iter().find(|a| a.api_id == id);
    let method = req.method().clone();
    match (method, id.as_deref()) {
        (Method::GET, None) => {
            let list: Vec<Value> = snap.apis.iter().map(|a| (*a.definition).clone()).collect();
            super::json_response(StatusCode::OK, Value::Array(list))
        }
        (Method::GET, Some(id)) => match loaded(id) {
            Some(a) => super::json_response(StatusCode::OK, (*a.definition).clone()),
            None => error(StatusCode::NOT_FOUND, "API not found"),
        },
        // Tyk: `POST /tyk/apis/{id}` creates from the body as `POST /tyk/apis` does, the path's
        // id unused (server.go:938-940, api.go handleAddApi).
        (Method::POST, _) => {
            let mut def = match read_object(req).await {
                Ok(d) => d,
                Err(r) => return r,
            };
            let api_id = match def.get("api_id") {
                None => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return error(StatusCode::BAD_REQUEST, "Request malformed: `api_id` must be a string"),
            };
            // Tyk generates an id when the definition has none (api.go:1354-1356, `uuid.NewHex`).
            let api_id = if api_id.is_empty() {
                match new_id() {
                    Ok(id) => id,
                    Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
                }
            } else {
                api_id
            };
            if !is_safe_id(&api_id) {
                return error(StatusCode::BAD_REQUEST, "Invalid API ID");
            }
            def.insert("api_id".into(), api_id.clone().into());
            let change = Change::PutApi { api_id: api_id.clone(), definition: Value::Object(def) };
            apply(state, change, &api_id, "added", Kind::Api).await
        }
        (Method::PUT, None) => error(StatusCode::BAD_REQUEST, "Must specify an apiID to update"),
        (Method::PUT, Some(id)) => {
            if !is_safe_id(id) {
                return error(StatusCode::BAD_REQUEST, "Invalid API ID");
            }
            if loaded(id).is_none() {
                return error(StatusCode::NOT_FOUND, "API not found");
            }
            let def = match read_object(req).await {
                Ok(d) => d,
                Err(r) => return r,
            };
            if def.get("api_id").and_then(Value::as_str) != Some(id) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Request APIID does not match that in Definition! For Update operations these must match.",
                );
            }
            let change = Change::PutApi { api_id: id.to_string(), definition: Value::Object(def) };
            apply(state, change, id, "modified", Kind::Api).await
        }
        (Method::DELETE, None) => error(StatusCode::BAD_REQUEST, "Must specify an apiID to delete"),
        (Method::DELETE, Some(id)) => {
            if !is_safe_id(id) {
                return error(StatusCode::BAD_REQUEST, "Invalid API ID");
            }
            if loaded(id).is_none() {
                return error(StatusCode::NOT_FOUND, "API not found");
            }
            apply(state, Change::DeleteApi { api_id: id.to_string() }, id, "deleted", Kind::Api).await
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "unsupported method for /tyk/apis"),
    }
}

/// Routes `/tyk/policies...` (the caller has checked the admin secret).
pub(super) async fn policies(state: &Arc<ControlState>, req: Request<Incoming>, path: &str) -> Resp {
    let Some(id) = path_id(path, "/tyk/policies") else {
        return error(StatusCode::BAD_REQUEST, INVALID_POLICY_ID);
    };
    let snap = state.reloader.snapshot.load_full();
    let method = req.method().clone();
    match (method, id.as_deref()) {
        (Method::GET, None) => {
            let list: Vec<Value> = snap.policy_sources.values().map(|s| s.json.clone()).collect();
            super::json_response(StatusCode::OK, Value::Array(list))
        }
        (Method::GET, Some(id)) => match snap.policy_sources.get(id) {
            Some(s) => super::json_response(StatusCode::OK, s.json.clone()),
            None => error(StatusCode::NOT_FOUND, "Policy not found"),
        },
        (Method::PUT, None) => error(StatusCode::BAD_REQUEST, "Must specify an apiID to update"),
        (m @ (Method::POST | Method::PUT), in_path) => {
            let policy = match read_object(req).await {
                Ok(p) => p,
                Err(r) => return r,
            };
            let id = match policy.get("id") {
                None => "",
                Some(Value::String(s)) => s.as_str(),
                Some(_) => return error(StatusCode::BAD_REQUEST, "Request malformed: `id` must be a string"),
            };
            // Tyk's checks, in its order (api.go:1147-1160): the id's characters, a PUT's id
            // against the path's, an id at all.
            let allowed = id.is_empty() || (is_policy_id(id) && is_safe_id(id));
            if !allowed {
                return error(StatusCode::BAD_REQUEST, INVALID_POLICY_ID);
            }
            if m == Method::PUT && in_path != Some(id) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Request ID does not match that in policy! For Update operations these must match.",
                );
            }
            if id.is_empty() {
                return error(StatusCode::BAD_REQUEST, "Unable to create policy without id.");
            }
            let id = id.to_string();
            let action = if m == Method::POST { "added" } else { "modified" };
            let change = Change::PutPolicy { id: id.clone(), policy: Value::Object(policy) };
            apply(state, change, &id, action, Kind::Policy).await
        }
        (Method::DELETE, None) => error(StatusCode::BAD_REQUEST, "Must specify an apiID to delete"),
        (Method::DELETE, Some(id)) => {
            if !is_safe_id(id) {
                return error(StatusCode::BAD_REQUEST, INVALID_POLICY_ID);
            }
            if !snap.policy_sources.contains_key(id) {
                return error(StatusCode::NOT_FOUND, "Policy not found");
            }
            apply(state, Change::DeletePolicy { id: id.to_string() }, id, "deleted", Kind::Policy).await
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "unsupported method for /tyk/policies"),
    }
}

/// Tyk's message for a policy id outside its characters (pkg/identifier/custom.go:11).
const INVALID_POLICY_ID: &str = "Invalid Policy ID: Allowed characters: a-z, A-Z, 0-9, ., _, -, ~";

/// Tyk's policy ids: `^[a-zA-Z0-9.\-_~]+$` (pkg/identifier/custom.go:10).
fn is_policy_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-~".contains(&b))
}

/// The id after `prefix` in `path` (percent-decoded, as Tyk's router sees it): `Some(None)` for
/// the collection itself, `None` when the id cannot be decoded.
fn path_id(path: &str, prefix: &str) -> Option<Option<String>> {
    let rest = path.strip_prefix(prefix).unwrap_or_default().trim_start_matches('/');
    if rest.is_empty() {
        return Some(None);
    }
    percent_decode(rest).map(Some)
}

pub(super) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A new API id: 32 random hex digits, a version 4 UUID without dashes (Tyk's `uuid.NewHex`).
fn new_id() -> Result<String, String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The request body as a JSON object; otherwise 400 `Request malformed` (Tyk's answer when the
/// body does not decode, api.go:1345-1348 and 1142-1145).
async fn read_object(req: Request<Incoming>) -> Result<serde_json::Map<String, Value>, Resp> {
    let limit = crate::config::MAX_FILE_BYTES as usize;
    let body = http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("Request malformed: cannot read the body: {e}")))?
        .to_bytes();
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(error(StatusCode::BAD_REQUEST, "Request malformed: the body must be a JSON object")),
        Err(e) => Err(error(StatusCode::BAD_REQUEST, format!("Request malformed: {e}"))),
    }
}

/// Makes the change (a reload, on the blocking pool) and answers as Tyk does.
async fn apply(state: &Arc<ControlState>, change: Change, key: &str, action: &str, kind: Kind) -> Resp {
    let st = Arc::clone(state);
    let outcome = match tokio::task::spawn_blocking(move || st.reloader.apply(&change)).await {
        Ok(o) => o,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("reload task failed: {e}")),
    };
    let (what, not_found) = match kind {
        Kind::Api => ("API Definition", "API not found"),
        Kind::Policy => ("policy", "Policy not found"),
    };
    let refused = |status: StatusCode, message: String, errors: Vec<String>| {
        super::json_response(status, json!({"status": "error", "message": message, "errors": errors}))
    };
    match outcome {
        Ok(generation) => {
            tracing::info!(key, action, generation, "definition changed through the admin API");
            done(key, action)
        }
        Err(EditRefused::NotFound) => error(StatusCode::NOT_FOUND, not_found),
        // Tyk: `Validation of API Definition failed. Reason: ...` (api.go:3782-3794).
        Err(EditRefused::Invalid(errors)) => refused(
            StatusCode::BAD_REQUEST,
            format!("Validation of {what} failed; nothing written. Reason: {}.", errors.join("; ")),
            errors,
        ),
        Err(EditRefused::NotReloadable(errors)) => refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("The configuration would not reload; nothing written. Reason: {}.", errors.join("; ")),
            errors,
        ),
        Err(EditRefused::Write(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids_are_percent_decoded() {
        assert_eq!(path_id("/tyk/apis", "/tyk/apis"), Some(None));
        assert_eq!(path_id("/tyk/apis/a", "/tyk/apis"), Some(Some("a".into())));
        assert_eq!(path_id("/tyk/apis/a%20b", "/tyk/apis"), Some(Some("a b".into())));
        assert_eq!(path_id("/tyk/apis/..%2F..%2Fetc", "/tyk/apis"), Some(Some("../../etc".into())));
        assert_eq!(path_id("/tyk/apis/a%2", "/tyk/apis"), None);
        assert_eq!(path_id("/tyk/apis/a%+1", "/tyk/apis"), None);
        assert_eq!(path_id("/tyk/apis/%ff", "/tyk/apis"), None);
    }

    #[test]
    fn ids() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()) && is_safe_id(&id));
        assert!(is_policy_id("gold.v1_a-b~c") && !is_policy_id("a b") && !is_policy_id("a/b") && !is_policy_id(""));
    }
}
