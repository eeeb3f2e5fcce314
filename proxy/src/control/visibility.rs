//! `/api/visibility/{api_id}/...` (behind the admin secret): API visibility's admin API.
//!
//! | request | answer |
//! |---|---|
//! | `PUT .../spec` | provide the API's OpenAPI document (2.0, 3.0, 3.1; JSON or YAML): checked by the loader, written beside the definition and applied as a reload (`config::Change::PutSpec`) |
//! | `GET .../spec` | the provided document, as JSON |
//! | `DELETE .../spec` | remove it |
//! | `GET .../endpoints` | the inventory: method, path template, hits, statuses, first and last seen |
//! | `GET .../findings` | shadow, zombie and drift findings with counts and an example each |
//! | `GET .../spec/reconstructed` | the OpenAPI 3.1 document traffic says the API is (`?format=yaml`) |
//! | `GET .../diff` | the provided document against the reconstructed one, operation by operation |

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::{json_response, ControlState};
use crate::config::{ApiSpec, Change};
use portcullis_visibility::openapi::{ApiKeyIn, ApiMeta, SecurityScheme};

type Resp = Response<Full<Bytes>>;

/// The largest document `PUT .../spec` takes (the loader's limit for any file it reads).
const MAX_SPEC_BYTES: usize = 16 * 1024 * 1024;

/// `path` starts with `/api/visibility/`.
pub(super) async fn handle(state: &Arc<ControlState>, req: Request<Incoming>, path: &str) -> Resp {
    let rest = &path["/api/visibility/".len()..];
    let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(api_id) = super::definitions::percent_decode(id).filter(|s| !s.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "the path must name an API: /api/visibility/{api_id}/...");
    };
    let snap = state.reloader.snapshot.load_full();
    let Some(api) = snap.apis.iter().find(|a| a.api_id == api_id) else {
        return error(StatusCode::NOT_FOUND, "API not found");
    };
    let query = req.uri().query().unwrap_or_default().to_string();
    match (req.method().clone(), what) {
        (Method::PUT, "spec") => put_spec(state, req, api_id).await,
        (Method::GET, "spec") => match &api.visibility.spec {
            Some(s) => json_response(StatusCode::OK, s.document().clone()),
            None => error(StatusCode::NOT_FOUND, "no OpenAPI document provided for this API"),
        },
        (Method::DELETE, "spec") => {
            if api.visibility.spec.is_none() {
                return error(StatusCode::NOT_FOUND, "no OpenAPI document provided for this API");
            }
            apply(state, Change::DeleteSpec { api_id: api_id.clone() }, &api_id, "deleted").await
        }
        (Method::GET, "endpoints") => {
            let list = state.visibility.read(&api_id, |s| s.inventory.endpoints()).unwrap_or_default();
            json_response(StatusCode::OK, json!({"api_id": api_id, "endpoints": list}))
        }
        (Method::GET, "findings") => {
            let list: Vec<Value> = state
                .visibility
                .read(&api_id, |s| s.findings.values().filter_map(|f| serde_json::to_value(f).ok()).collect())
                .unwrap_or_default();
            let spec = api.visibility.spec.is_some();
            json_response(StatusCode::OK, json!({"api_id": api_id, "spec": spec, "findings": list}))
        }
        (Method::GET, "spec/reconstructed") => {
            let doc = reconstructed(state, api);
            if query.split('&').any(|p| p == "format=yaml") {
                let mut r = Response::new(Full::new(Bytes::from(portcullis_visibility::openapi::to_yaml(&doc))));
                r.headers_mut()
                    .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/yaml"));
                return r;
            }
            json_response(StatusCode::OK, doc)
        }
        (Method::GET, "diff") => {
            let Some(spec) = api.visibility.spec.as_deref() else {
                return error(StatusCode::NOT_FOUND, "no OpenAPI document provided for this API");
            };
            let doc = reconstructed(state, api);
            let diff = portcullis_visibility::diff::diff(spec, &doc);
            json_response(StatusCode::OK, json!({"api_id": api_id, "diff": diff}))
        }
        (_, "spec" | "endpoints" | "findings" | "spec/reconstructed" | "diff") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The reconstructed document of `api`.
fn reconstructed(state: &ControlState, api: &ApiSpec) -> Value {
    let security = security_schemes(api);
    let server = if api.listen_path.is_empty() { "/".to_string() } else { api.listen_path.clone() };
    let meta = ApiMeta {
        title: &api.name,
        version: api.auth.version.as_deref().unwrap_or("reconstructed"),
        server_url: Some(&server),
        security: &security,
    };
    let doc = state.visibility.read(&api.api_id, |s| s.inventory.openapi(&meta));
    doc.unwrap_or_else(|| portcullis_visibility::inventory::Inventory::default().openapi(&meta))
}

/// The security schemes of `api`'s auth config.
fn security_schemes(api: &ApiSpec) -> Vec<SecurityScheme> {
    let a = &api.auth;
    let mut out = Vec::new();
    if let Some(t) = &a.token {
        out.push(SecurityScheme::ApiKey { name: t.header.clone(), location: ApiKeyIn::Header });
        if let Some(p) = &t.param {
            out.push(SecurityScheme::ApiKey { name: p.clone(), location: ApiKeyIn::Query });
        }
        if let Some(c) = &t.cookie {
            out.push(SecurityScheme::ApiKey { name: c.clone(), location: ApiKeyIn::Cookie });
        }
    }
    if a.jwt.is_some() {
        out.push(SecurityScheme::Bearer { jwt: true });
    }
    if a.basic.is_some() {
        out.push(SecurityScheme::Basic);
    }
    out
}

async fn put_spec(state: &Arc<ControlState>, req: Request<Incoming>, api_id: String) -> Resp {
    let body = match http_body_util::Limited::new(req.into_body(), MAX_SPEC_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, format!("cannot read the document: {e}")),
    };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "the document is not UTF-8");
    };
    // Checked here first for a clear answer; the loader checks it again as it will be read.
    if let Err(e) = portcullis_visibility::spec::Spec::parse(text.as_bytes()) {
        let pointer = if e.pointer.is_empty() { "/".to_string() } else { e.pointer.clone() };
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"status": "error", "message": format!("invalid OpenAPI document at {pointer}: {}", e.message), "pointer": pointer}),
        );
    }
    apply(state, Change::PutSpec { api_id: api_id.clone(), text }, &api_id, "provided").await
}

/// Makes the change as a reload, on the blocking pool.
async fn apply(state: &Arc<ControlState>, change: Change, api_id: &str, action: &str) -> Resp {
    let st = Arc::clone(state);
    let outcome = match tokio::task::spawn_blocking(move || st.reloader.apply(&change)).await {
        Ok(o) => o,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("reload task failed: {e}")),
    };
    use super::reload::EditRefused;
    let refused = |status: StatusCode, errors: Vec<String>| {
        json_response(status, json!({"status": "error", "message": errors.join("; "), "errors": errors}))
    };
    match outcome {
        Ok(generation) => {
            // Findings judged against the old document start over (the thread sees the new
            // document's hash too; this makes the answer to the next GET right at once).
            state.visibility.clear_findings(api_id);
            tracing::info!(api_id, action, generation, "OpenAPI document changed through the admin API");
            json_response(StatusCode::OK, json!({"status": "ok", "action": action, "api_id": api_id}))
        }
        Err(EditRefused::NotFound) => error(StatusCode::NOT_FOUND, "API not found"),
        Err(EditRefused::Invalid(errors)) => refused(StatusCode::BAD_REQUEST, errors),
        Err(EditRefused::NotReloadable(errors)) => refused(StatusCode::INTERNAL_SERVER_ERROR, errors),
        Err(EditRefused::Write(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Resp {
    json_response(status, json!({"status": "error", "message": message.into()}))
}
