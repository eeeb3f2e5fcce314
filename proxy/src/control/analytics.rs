//! `GET /api/analytics/search` and `GET /api/analytics/aggregate` (behind the admin secret):
//! queries of the `search` sink's index (`analytics/search.rs`), run on tokio's blocking pool so
//! that a long query holds up no other admin request.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::json;

use super::{json_response, ControlState};
use crate::analytics::search::{Params, SearchError};

type Resp = Response<Full<Bytes>>;

/// `path` is `/api/analytics/search` or `/api/analytics/aggregate`; `query` the URL's query.
pub(super) async fn handle(state: &ControlState, path: &str, query: &str) -> Resp {
    let Some(index) = state.search.as_ref().map(Arc::clone) else {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"status": "error", "message": "no search index: add a `search` sink to [analytics] (docs/analytics.md)"}),
        );
    };
    let params = match Params::parse(query) {
        Ok(p) => p,
        Err(e) => return error(&e),
    };
    let search = path.ends_with("/search");
    let done = tokio::task::spawn_blocking(move || {
        if search {
            index.search(&params)
        } else {
            index.aggregate(&params).map(|v| v.to_string())
        }
    })
    .await;
    match done {
        Ok(Ok(body)) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
            r
        }
        Ok(Err(e)) => error(&e),
        Err(e) => error(&SearchError::Failed(format!("search task: {e}"))),
    }
}

fn error(e: &SearchError) -> Resp {
    let status = match e {
        SearchError::BadRequest(_) => StatusCode::BAD_REQUEST,
        SearchError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_response(status, json!({"status": "error", "message": e.to_string()}))
}
