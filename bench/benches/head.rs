//! Request head parse + route + upstream head write, and response head parse + client head write,
//! for a typical browser-sized request and a small JSON response; and the check that decides
//! whether a large response's head can be spliced to the client unchanged (`forwards_verbatim`,
//! run on every response of an API whose bodies are spliced).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis_bench::{prepare, snapshot_with_apis, Prepared, Worker};
use portcullis_http1::{forwards_verbatim, prepare_response, PreparedResponse};

const REQUEST: &[u8] = b"GET /api5/v1/users/42?expand=true HTTP/1.1\r\nHost: gw.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0\r\nAccept: application/json\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\nCookie: session=abcdef0123456789; theme=dark\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n";
/// nginx's head for a static 16 KiB file (the bench scenario `16k`): `Connection: keep-alive` is
/// the only line the client head leaves out.
const FILE_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 15:30:00 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 16384\r\nLast-Modified: Wed, 02 Dec 2026 15:04:00 GMT\r\nConnection: keep-alive\r\nETag: \"692f0a40-4000\"\r\nAccept-Ranges: bytes\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 23 Nov 2026 13:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 27\r\nConnection: keep-alive\r\nCache-Control: no-store\r\n\r\n";

fn bench(c: &mut Criterion) {
    let snap = snapshot_with_apis(10);
    let mut w = Worker::default();
    let mut out = Vec::with_capacity(1024);
    c.bench_function("request_head/parse_route_rewrite", |b| {
        b.iter(|| {
            out.clear();
            let r = prepare(&snap, &mut w, black_box(REQUEST), 0, &mut out);
            assert!(matches!(r, Prepared::Routed(_)));
        })
    });
    out.clear();
    let Prepared::Routed(meta) = prepare(&snap, &mut w, REQUEST, 0, &mut out) else { panic!("not routed") };
    c.bench_function("response_head/parse_rewrite", |b| {
        b.iter(|| {
            out.clear();
            let r = prepare_response(black_box(RESPONSE), 100, &meta, true, |_| false, |_| {}, &mut out);
            assert!(matches!(r, Ok(PreparedResponse::Ready(_))));
        })
    });
    out.clear();
    let file_meta = match prepare_response(FILE_RESPONSE, 100, &meta, true, |_| false, |_| {}, &mut out) {
        Ok(PreparedResponse::Ready(m)) => m,
        other => panic!("{other:?}"),
    };
    let client_head = out.clone();
    assert!(forwards_verbatim(FILE_RESPONSE, &client_head, &file_meta));
    c.bench_function("response_head/forwards_verbatim", |b| {
        b.iter(|| assert!(forwards_verbatim(black_box(FILE_RESPONSE), black_box(&client_head), &file_meta)))
    });
    // The canonical path every request gets: a path already canonical (nearly all) is one scan
    // and borrowed; one with dot segments and escapes is rewritten into a new string.
    c.bench_function("request_path/canonical_unchanged", |b| {
        b.iter(|| portcullis_http1::path::canonical(black_box("/httpbin/anything/users/42/orders")).is_ok())
    });
    c.bench_function("request_path/canonical_rewritten", |b| {
        b.iter(|| portcullis_http1::path::canonical(black_box("/httpbin//anything/./users/%34%32/../orders")).is_ok())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
