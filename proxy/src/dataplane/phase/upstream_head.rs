//! Phase `upstream head`: the request head the upstream gets, written into the exchange's
//! buffer: request line (listen path stripped, target prefix; or the rewritten path and query),
//! the client's headers less the
//! hop-by-hop ones and what `transform` removes, the added headers, the canonical framing,
//! `Host`, `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Request-Id`. Keyless APIs with no rules
//! come here straight from `route`, with no edits.

use portcullis_http1::request::{push_header, strip_non_field_bytes, trim};
use portcullis_http1::Request;

use super::transform::Edits;
use super::ClientCtx;
use crate::config::{ApiSpec, Target};
use crate::rewrite::Rewritten;

/// Writes the upstream head of `req` to `target` into `out`; returns the `tag_headers` tags
/// (`<header lower case>-<value>`) for the record. `rid` is the generated request id, used when
/// the client sent none (with `edits`, the id is already in them). `rewritten`: what the
/// `rewrite` phase made of the path and query (below `target`'s path when relative, as it is
/// for an absolute `rewrite_to`, whose host `target` is).
pub(crate) fn write(
    out: &mut Vec<u8>,
    req: &Request<'_>,
    path: &str,
    api: &ApiSpec,
    target: &Target,
    client: &ClientCtx<'_>,
    edits: Option<&Edits<'_>>,
    rewritten: Option<&Rewritten>,
    rid: impl FnOnce() -> [u8; 32],
) -> Vec<String> {
    // Request line.
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    match rewritten {
        // Tyk joins a relative rewrite with the target's path (reverse_proxy.go:277-306) and
        // sends an absolute one's path as it is; the query is the rewrite's.
        Some(rw) => {
            if rw.target.is_none() {
                out.extend_from_slice(target.path_prefix.as_bytes());
            }
            out.extend_from_slice(rw.url.as_bytes());
        }
        None => {
            write_upstream_path(out, api, target, path);
            match edits {
                Some(e) => e.write_query(out, req.query),
                None => out.extend_from_slice(req.query.as_bytes()),
            }
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let mut xff: Option<&[u8]> = None;
    let mut client_rid: Option<&[u8]> = None;
    for h in req.headers.iter() {
        let n = h.name;
        if !req.forwards(n) || n.eq_ignore_ascii_case(b"x-forwarded-proto") {
            continue;
        }
        if n.eq_ignore_ascii_case(b"x-forwarded-for") {
            xff = Some(trim(h.value));
            continue;
        }
        if n.eq_ignore_ascii_case(b"x-request-id") {
            client_rid = Some(h.value);
            if edits.is_some() {
                // Written below, once, where templates saw it.
                continue;
            }
        }
        if let Some(e) = edits {
            if e.removes(n) {
                continue;
            }
            if let (Some(c), true) = (e.stripped_cookie(), n.eq_ignore_ascii_case(b"cookie")) {
                let rest = std::str::from_utf8(h.value).ok().and_then(|v| crate::auth::token::cookie_without(v, c));
                if let Some(rest) = rest {
                    push_header(out, n, rest.as_bytes());
                }
                continue;
            }
        }
        push_header(out, n, h.value);
    }
    let mut tags = Vec::new();
    let mut added_at: Vec<(&str, std::ops::Range<usize>)> = Vec::new();
    if let Some(e) = edits {
        // Expanded straight into the head (no buffer per header per request); where each added
        // value landed is kept only when `tag_headers` may ask for one.
        let tcx = e.context(req, path, client.client_addr);
        for (i, (name, tpl)) in e.adds().enumerate() {
            if e.adds().skip(i + 1).any(|(later, _)| later.eq_ignore_ascii_case(name)) {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            let start = out.len();
            tpl.expand(&tcx, out);
            strip_non_field_bytes(out, start);
            if !e.tag_headers().is_empty() {
                added_at.push((name.as_str(), start..out.len()));
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    req.write_framing(out);
    out.extend_from_slice(b"Host: ");
    match (api.preserve_host_header, req.host) {
        (true, Some(h)) => out.extend_from_slice(h),
        _ => out.extend_from_slice(target.host_header.as_bytes()),
    }
    out.extend_from_slice(b"\r\nX-Forwarded-For: ");
    if let Some(prev) = xff.filter(|v| !v.is_empty()) {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client.client_ip.as_bytes());
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\n");
    match (edits, client_rid) {
        (Some(e), _) => {
            out.extend_from_slice(b"X-Request-Id: ");
            out.extend_from_slice(e.request_id);
            out.extend_from_slice(b"\r\n");
        }
        (None, Some(_)) => {}
        (None, None) => {
            out.extend_from_slice(b"X-Request-Id: ");
            out.extend_from_slice(&rid());
            out.extend_from_slice(b"\r\n");
        }
    }
    req.finish_head(out);

    if let Some(e) = edits {
        for name in e.tag_headers() {
            let value = added_at
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, at)| &out[at.clone()])
                .or_else(|| req.headers.iter().find(|h| h.is(name) && !e.removes(h.name)).map(|h| h.value));
            if let Some(v) = value {
                tags.push(format!("{}-{}", name.to_ascii_lowercase(), String::from_utf8_lossy(v)));
            }
        }
    }
    tags
}

fn write_upstream_path(out: &mut Vec<u8>, api: &ApiSpec, target: &Target, path: &str) {
    let rest = if api.strip_listen_path { &path[api.listen_path.len().min(path.len())..] } else { path };
    out.extend_from_slice(target.path_prefix.as_bytes());
    if rest.is_empty() || !rest.starts_with('/') {
        out.push(b'/');
    }
    out.extend_from_slice(rest.as_bytes());
}
