//! API visibility's costs. On the worker, per request: the provided document's match of a
//! request (`Spec::route`, every request of an API with a document), and the request check of
//! `enforce` with `validate_requests` (`Spec::check_request`, parameters and a JSON body). On
//! the visibility thread, per record: a hit in the inventory (`Inventory::hit`); per sampled
//! exchange: parsing it from its captured wire form, learning its schemas
//! (`Inventory::sample`) and comparing it with the document (`Spec::drift`). The document is
//! the walkthrough's (`apps/openapi/jsonplaceholder.yaml`).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis_visibility::exchange::{split_wire, Exchange};
use portcullis_visibility::inventory::{Inventory, Limits};
use portcullis_visibility::spec::{Route, Spec};

fn spec() -> Spec {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../apps/openapi/jsonplaceholder.yaml");
    Spec::parse(&std::fs::read(path).expect("apps/openapi/jsonplaceholder.yaml")).expect("the document compiles")
}

/// A captured `GET /users/3` and its response, as a worker's frame holds them.
fn captured() -> (Vec<u8>, Vec<u8>) {
    let req = b"GET /jsonplaceholder/users/3 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
        .to_vec();
    let body = serde_json::json!({
        "id": 3, "name": "User 3", "username": "user3", "email": "user3@example.com",
        "address": {"street": "3 Main Street", "city": "Springfield", "zipcode": "10003",
                    "geo": {"lat": "3.5", "lng": "-3.25"}},
        "phone": "555-0103", "website": "https://user3.example.com",
        "company": {"name": "Company 3", "catchPhrase": "Made up"}
    })
    .to_string();
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    resp.extend_from_slice(body.as_bytes());
    (req, resp)
}

fn exchange<'a>(req: &'a [u8], resp: &'a [u8]) -> Exchange<'a> {
    let q = split_wire(req).expect("request head");
    let r = split_wire(resp).expect("response head");
    Exchange {
        method: "GET",
        path: "/users/3",
        query: "",
        req_headers: q.headers,
        req_body: q.body,
        req_truncated: false,
        status: 200,
        resp_headers: r.headers,
        resp_body: r.body,
        resp_truncated: false,
    }
}

fn worker(c: &mut Criterion) {
    let s = spec();
    c.bench_function("visibility/route_documented", |b| {
        b.iter(|| s.route(black_box("GET"), black_box("/posts/42/comments")))
    });
    c.bench_function("visibility/route_shadow", |b| b.iter(|| s.route(black_box("GET"), black_box("/todos/42"))));
    let Route::Op(post) = s.route("POST", "/posts") else { panic!("POST /posts is documented") };
    let body = br#"{"title":"a title","body":"a body","userId":7}"#;
    let headers = [("Host", "localhost"), ("Content-Type", "application/json")];
    c.bench_function("visibility/check_request_json_body", |b| {
        b.iter(|| s.check_request(post, "/posts", "", &headers, Some(black_box(&body[..])), Some("application/json")))
    });
    let Route::Op(list) = s.route("GET", "/posts") else { panic!("GET /posts is documented") };
    c.bench_function("visibility/check_request_query", |b| {
        b.iter(|| s.check_request(list, "/posts", black_box("userId=3"), &headers[..1], None, None))
    });
}

fn thread(c: &mut Criterion) {
    let s = spec();
    let limits = Limits::default();
    let mut inv = Inventory::default();
    let mut n = 0u64;
    c.bench_function("visibility/hit", |b| {
        b.iter(|| {
            n += 1;
            let path = format!("/posts/{}", n % 100 + 1);
            inv.hit("GET", black_box(&path), 200, 1_800_000_000, &limits)
        })
    });
    let (req, resp) = captured();
    let Route::Op(op) = s.route("GET", "/users/3") else { panic!("GET /users/3 is documented") };
    let mut inv = Inventory::default();
    let mut drifts = Vec::new();
    c.bench_function("visibility/sampled_exchange", |b| {
        b.iter(|| {
            let x = exchange(black_box(&req), black_box(&resp));
            inv.sample(&x, &limits);
            drifts.clear();
            s.drift(op, &x, &mut drifts);
            drifts.len()
        })
    });
}

criterion_group!(benches, worker, thread);
criterion_main!(benches);
