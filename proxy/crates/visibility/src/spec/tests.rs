//! Tests of the spec compiler, and the small documents they (and the diff tests) share:
//! Swagger 2.0 in YAML, OpenAPI 3.0 in JSON, OpenAPI 3.1 in YAML, all written for these tests.

use super::*;
use serde_json::json;

/// Swagger 2.0, YAML: basePath, body and formData parameters, consumes/produces, definitions.
pub(crate) const PETSTORE_V2: &str = r##"
swagger: "2.0"
info: { title: Pets, version: "1" }
basePath: /v2
consumes: [application/json]
produces: [application/json]
securityDefinitions:
  key: { type: apiKey, in: header, name: X-Pet-Key }
paths:
  /pets:
    get:
      operationId: listPets
      parameters:
        - { name: limit, in: query, type: integer, format: int32, maximum: 100 }
        - { name: tags, in: query, type: array, items: { type: string } }
      responses:
        200:
          description: ok
          schema: { type: array, items: { $ref: "#/definitions/Pet" } }
    post:
      parameters:
        - { name: pet, in: body, required: true, schema: { $ref: "#/definitions/Pet" } }
      responses:
        201: { description: created, schema: { $ref: "#/definitions/Pet" } }
        default: { description: error }
  /pets/{petId}:
    parameters:
      - { name: petId, in: path, required: true, type: integer }
    get:
      responses:
        200: { description: ok, schema: { $ref: "#/definitions/Pet" } }
        404: { description: missing }
    delete:
      deprecated: true
      responses:
        204: { description: gone }
  /pets/{petId}/photo:
    post:
      consumes: [application/x-www-form-urlencoded]
      parameters:
        - { name: petId, in: path, required: true, type: integer }
        - { name: caption, in: formData, type: string, maxLength: 5 }
      responses:
        200: { description: ok }
definitions:
  Pet:
    type: object
    required: [id, name]
    properties:
      id: { type: integer, format: int64, readOnly: true }
      name: { type: string }
      born: { type: string, format: date }
      tag: { type: string, example: cat }
"##;

/// OpenAPI 3.0, JSON: servers with a variable, nullable, path-level parameters, requestBody,
/// literal vs template, mixed segments, a recursive schema, writeOnly.
pub(crate) const USERS_V30: &str = r##"{
  "openapi": "3.0.3",
  "info": { "title": "Users", "version": "1" },
  "servers": [{ "url": "https://{host}/api/{v}/", "variables": { "host": { "default": "x.io" }, "v": { "default": "v1" } } }],
  "paths": {
    "/users": {
      "get": {
        "parameters": [
          { "name": "limit", "in": "query", "required": true, "schema": { "type": "integer", "minimum": 1 } },
          { "name": "X-Tenant", "in": "header", "schema": { "type": "string", "enum": ["a", "b"] } }
        ],
        "responses": { "200": { "description": "ok", "content": { "application/json": { "schema": {
          "type": "object", "required": ["items"],
          "properties": { "items": { "type": "array", "items": { "$ref": "#/components/schemas/User" } }, "next": { "type": "string", "nullable": true } }
        } } } } }
      },
      "post": {
        "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/User" } } } },
        "responses": { "2XX": { "$ref": "#/components/responses/User" } }
      }
    },
    "/users/me": { "get": { "operationId": "me", "responses": { "200": { "$ref": "#/components/responses/User" } } } },
    "/users/{userId}": {
      "parameters": [{ "$ref": "#/components/parameters/UserId" }],
      "get": { "operationId": "getUser", "responses": { "200": { "$ref": "#/components/responses/User" }, "default": { "description": "error" } } },
      "put": { "deprecated": true, "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/User" } } } }, "responses": { "200": { "description": "ok" } } }
    },
    "/files/{name}.json": { "get": { "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^[a-z]+$" } }], "responses": { "200": { "description": "ok" } } } },
    "/": { "get": { "responses": { "200": { "description": "root" } } } }
  },
  "components": {
    "parameters": { "UserId": { "name": "userId", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } } },
    "responses": { "User": { "description": "a user", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/User" } } } } },
    "schemas": {
      "User": {
        "type": "object",
        "required": ["id", "email", "password"],
        "properties": {
          "id": { "type": "string", "format": "uuid", "readOnly": true },
          "email": { "type": "string", "format": "email" },
          "password": { "type": "string", "writeOnly": true },
          "age": { "type": "integer", "nullable": true },
          "created": { "type": "string", "format": "date-time" },
          "manager": { "$ref": "#/components/schemas/User" },
          "tags": { "type": "array", "items": { "type": "string" } }
        },
        "example": { "id": "x" },
        "discriminator": { "propertyName": "id" }
      }
    }
  }
}"##;

/// OpenAPI 3.1, YAML: type arrays, oneOf, a relative server path, webhooks-only parts ignored.
pub(crate) const ORDERS_V31: &str = r##"
openapi: 3.1.0
info: { title: Orders, version: "1" }
servers: [{ url: /shop }]
paths:
  /orders/{id}:
    get:
      parameters:
        - { name: id, in: path, required: true, schema: { type: integer } }
        - { name: expand, in: query, schema: { type: boolean } }
        - { name: fields, in: query, schema: { type: array, items: { type: string, enum: [a, b] } } }
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema:
                type: object
                properties:
                  id: { type: integer }
                  note: { type: [string, "null"] }
                  payment:
                    oneOf:
                      - { type: object, properties: { card: { type: string } }, required: [card] }
                      - { type: object, properties: { iban: { type: string } }, required: [iban] }
    patch:
      requestBody:
        content:
          application/merge-patch+json:
            schema: { type: object, properties: { note: { type: [string, "null"], maxLength: 3 } }, additionalProperties: false }
      responses: { "200": { description: ok } }
"##;

pub(crate) fn v2() -> Spec {
    Spec::parse(PETSTORE_V2.as_bytes()).expect("2.0 parses")
}
pub(crate) fn v30() -> Spec {
    Spec::parse(USERS_V30.as_bytes()).expect("3.0 parses")
}
pub(crate) fn v31() -> Spec {
    Spec::parse(ORDERS_V31.as_bytes()).expect("3.1 parses")
}

fn op(spec: &Spec, method: &str, path: &str) -> OpId {
    match spec.route(method, path) {
        Route::Op(id) => id,
        r => panic!("{method} {path}: {r:?}"),
    }
}

fn template(spec: &Spec, method: &str, path: &str) -> String {
    let o = spec.operation(op(spec, method, path));
    format!("{} {}", o.method, o.template)
}

#[test]
fn versions_and_documents_are_read_from_json_and_yaml() {
    assert_eq!(v2().version(), "2.0");
    assert_eq!(v30().version(), "3.0.3");
    assert_eq!(v31().version(), "3.1.0");
    assert_eq!(v2().document()["paths"]["/pets"]["post"]["responses"]["201"]["description"], "created");
    assert_eq!(v2().base_path(), Some("/v2"));
    assert_eq!(v30().base_path(), Some("/api/v1"));
    assert_eq!(v31().base_path(), Some("/shop"));
    assert_eq!(v2().operations().count(), 5);
    let unquoted = Spec::parse(b"swagger: 2.0\ninfo: {title: t, version: v}\npaths: {}\n").unwrap();
    assert_eq!(unquoted.version(), "2.0");
}

#[test]
fn routes_with_and_without_the_base_path() {
    let s = v2();
    assert_eq!(template(&s, "GET", "/v2/pets"), "GET /pets");
    assert_eq!(template(&s, "GET", "/pets"), "GET /pets");
    assert_eq!(template(&s, "get", "/pets/"), "GET /pets", "case-insensitive, trailing slash");
    assert_eq!(template(&s, "GET", "/v2/pets/7"), "GET /pets/{petId}");
    assert_eq!(s.route("GET", "/v2x/pets"), Route::UnknownPath, "a base path is a whole segment");
    assert_eq!(s.route("GET", "/v2/pets/7/photo/x"), Route::UnknownPath);
    assert_eq!(s.route("PATCH", "/v2/pets/7"), Route::UnknownMethod);
    assert_eq!(s.route("PURGE", "/pets"), Route::UnknownMethod);
    assert_eq!(s.route("GET", "/"), Route::UnknownPath);
    assert_eq!(s.route("GET", ""), Route::UnknownPath);
    assert_eq!(template(&s, "HEAD", "/pets"), "GET /pets", "HEAD falls back to GET");

    let s = v30();
    assert_eq!(template(&s, "GET", "/api/v1/users"), "GET /users");
    assert_eq!(template(&s, "GET", "/api/v1"), "GET /");
    assert_eq!(template(&s, "GET", "/"), "GET /");
    assert_eq!(template(&s, "GET", "/api/v1/"), "GET /");
    assert_eq!(s.route("DELETE", "/api/v1/users"), Route::UnknownMethod);
    assert_eq!(s.route("GET", "/users//"), Route::UnknownPath, "an empty segment is no parameter");
}

#[test]
fn literal_segments_beat_templates_and_mixed_segments_beat_whole_parameters() {
    let s = v30();
    assert_eq!(template(&s, "GET", "/users/me"), "GET /users/me");
    assert_eq!(s.operation(op(&s, "GET", "/users/me")).operation_id.as_deref(), Some("me"));
    assert_eq!(template(&s, "GET", "/users/42"), "GET /users/{userId}");
    assert_eq!(template(&s, "PUT", "/users/me"), "PUT /users/{userId}", "backtracks to the template for a method");
    assert_eq!(template(&s, "GET", "/files/report.json"), "GET /files/{name}.json");
    assert_eq!(s.route("GET", "/files/.json"), Route::UnknownPath, "a parameter captures at least one byte");
    assert_eq!(s.route("GET", "/files/report.xml"), Route::UnknownPath);

    let doc = r#"{"openapi":"3.0.0","paths":{
        "/a/{x}/c":{"get":{"responses":{}}},
        "/a/b/{y}":{"get":{"responses":{}}},
        "/a/{x}/{y}":{"post":{"responses":{}}},
        "/r/{id}.{ext}":{"get":{"responses":{}}}}}"#;
    let s = Spec::parse(doc.as_bytes()).unwrap();
    assert_eq!(template(&s, "GET", "/a/b/c"), "GET /a/b/{y}", "leftmost literal first");
    assert_eq!(template(&s, "GET", "/a/z/c"), "GET /a/{x}/c");
    assert_eq!(template(&s, "POST", "/a/b/c"), "POST /a/{x}/{y}");
    assert_eq!(template(&s, "GET", "/r/a.b.c"), "GET /r/{id}.{ext}");
}

#[test]
fn deprecated_operations_and_ids_are_exposed() {
    let s = v30();
    let put = s.operation(op(&s, "PUT", "/users/1"));
    assert!(put.deprecated);
    assert_eq!(put.pointer, "/paths/~1users~1{userId}/put");
    assert!(!s.operation(op(&s, "GET", "/users/1")).deprecated);
    let s = v2();
    assert!(s.operation(op(&s, "DELETE", "/pets/1")).deprecated);
    assert_eq!(s.operation(op(&s, "GET", "/pets")).operation_id.as_deref(), Some("listPets"));
}

fn check(
    s: &Spec,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    ct: Option<&str>,
) -> Result<(), String> {
    let id = op(s, method, path);
    s.check_request(id, path, query, headers, body.map(str::as_bytes), ct).map_err(|v| v.pointer)
}

#[test]
fn requests_are_checked_with_the_pointer_of_the_failing_field() {
    let s = v30();
    let get = |q: &str, h: &[(&str, &str)]| check(&s, "GET", "/users", q, h, None, None);
    assert_eq!(get("limit=5", &[]), Ok(()));
    assert_eq!(get("", &[]), Err("/query/limit".into()), "required");
    assert_eq!(get("limit=0", &[]), Err("/query/limit".into()), "minimum");
    assert_eq!(get("limit=abc", &[]), Err("/query/limit".into()), "not an integer");
    assert_eq!(get("limit=%35", &[("X-Tenant", "a")]), Ok(()), "percent-decoded, header enum");
    assert_eq!(get("limit=5", &[("x-tenant", "c")]), Err("/header/x-tenant".into()));
    let v = s.check_request(op(&s, "GET", "/users"), "/users", "limit=0", &[], None, None).unwrap_err();
    assert!(v.message.contains("minimum") || v.message.contains('1'), "{}", v.message);

    let uid = "0f8fad5b-d9cb-469f-a165-70867728950e";
    assert_eq!(check(&s, "GET", &format!("/users/{uid}"), "", &[], None, None), Ok(()));
    assert_eq!(check(&s, "GET", "/api/v1/users/42", "", &[], None, None), Err("/path/userId".into()), "uuid format");
    assert_eq!(check(&s, "GET", "/files/ABC.json", "", &[], None, None), Err("/path/name".into()));
    assert_eq!(check(&s, "GET", "/files/abc.json", "", &[], None, None), Ok(()));

    let post = |b: Option<&str>, ct: Option<&str>| check(&s, "POST", "/users", "", &[], b, ct);
    let json = Some("application/json; charset=utf-8");
    assert_eq!(post(Some(r#"{"email":"a@b.co","password":"x"}"#), json), Ok(()), "readOnly id not required");
    assert_eq!(post(None, json), Err("/body".into()), "required body");
    assert_eq!(post(Some("{"), json), Err("/body".into()), "not JSON");
    assert_eq!(post(Some(r#"{"email":"nope","password":"x"}"#), json), Err("/body/email".into()));
    assert_eq!(post(Some(r#"{"email":"a@b.co"}"#), json), Err("/body".into()), "missing required password");
    assert_eq!(post(Some(r#"{"email":"a@b.co","password":"x","age":null}"#), json), Ok(()), "nullable");
    assert_eq!(post(Some(r#"{"email":"a@b.co","password":"x","age":"1"}"#), json), Err("/body/age".into()));
    let deep = r#"{"email":"a@b.co","password":"x","manager":{"email":"a@b.co","password":"y","tags":["a",2]}}"#;
    assert_eq!(post(Some(deep), json), Err("/body/manager/tags/1".into()), "recursive $ref");
    assert_eq!(post(Some("a=b"), Some("text/plain")), Err("/header/content-type".into()));

    let s = v31();
    assert_eq!(check(&s, "GET", "/shop/orders/1", "expand=true&fields=a,b", &[], None, None), Ok(()));
    assert_eq!(check(&s, "GET", "/orders/x", "", &[], None, None), Err("/path/id".into()));
    assert_eq!(check(&s, "GET", "/orders/1", "expand=maybe", &[], None, None), Err("/query/expand".into()));
    assert_eq!(check(&s, "GET", "/orders/1", "fields=a,c", &[], None, None), Err("/query/fields/1".into()));
    assert_eq!(check(&s, "GET", "/orders/1", "fields=a&fields=c", &[], None, None), Err("/query/fields/1".into()));
    let mp = Some("application/merge-patch+json");
    assert_eq!(check(&s, "PATCH", "/orders/1", "", &[], Some(r#"{"note":null}"#), mp), Ok(()), "3.1 type array");
    assert_eq!(check(&s, "PATCH", "/orders/1", "", &[], Some(r#"{"note":"long"}"#), mp), Err("/body/note".into()));
    assert_eq!(check(&s, "PATCH", "/orders/1", "", &[], Some(r#"{"x":1}"#), mp), Err("/body".into()));

    let s = v2();
    assert_eq!(check(&s, "GET", "/v2/pets", "limit=100&tags=a,b", &[], None, None), Ok(()));
    assert_eq!(check(&s, "GET", "/v2/pets", "limit=101", &[], None, None), Err("/query/limit".into()));
    assert_eq!(check(&s, "GET", "/v2/pets", "limit=3000000000", &[], None, None), Err("/query/limit".into()), "int32");
    assert_eq!(check(&s, "GET", "/pets/x", "", &[], None, None), Err("/path/petId".into()));
    let json = Some("application/json");
    assert_eq!(check(&s, "POST", "/pets", "", &[], Some(r#"{"name":"rex","tag":"x"}"#), json), Ok(()));
    assert_eq!(check(&s, "POST", "/pets", "", &[], Some(r#"{"name":1}"#), json), Err("/body/name".into()));
    assert_eq!(check(&s, "POST", "/pets", "", &[], None, json), Err("/body".into()));
    let form = Some("application/x-www-form-urlencoded");
    assert_eq!(check(&s, "POST", "/pets/1/photo", "", &[], Some("caption=abc"), form), Ok(()));
    assert_eq!(check(&s, "POST", "/pets/1/photo", "", &[], Some("caption=abcdef"), form), Err("/body/caption".into()));
    assert_eq!(check(&s, "POST", "/pets/1/photo", "", &[], Some("{}"), json), Err("/header/content-type".into()));
}

fn exchange<'a>(
    method: &'a str,
    path: &'a str,
    query: &'a str,
    status: u16,
    req: &'a str,
    resp: &'a str,
) -> Exchange<'a> {
    Exchange {
        method,
        path,
        query,
        req_headers: if req.is_empty() { vec![] } else { vec![("Content-Type", "application/json")] },
        req_body: req.as_bytes(),
        status,
        resp_headers: vec![("Content-Type", "application/json")],
        resp_body: resp.as_bytes(),
        ..Default::default()
    }
}

fn drifts(s: &Spec, x: &Exchange<'_>) -> Vec<(DriftKind, String)> {
    let mut out = Vec::new();
    s.drift(op(s, x.method, x.path), x, &mut out);
    out.into_iter().map(|d| (d.kind, d.location)).collect()
}

#[test]
fn drift_reports_statuses_and_parameters() {
    let s = v30();
    let mut x = exchange("GET", "/users", "limit=1&debug=1&debug=2", 418, "", "");
    x.req_headers = vec![
        ("Host", "x"),
        ("Accept-Encoding", "gzip"),
        ("X-Forwarded-For", "1.2.3.4"),
        ("X-Trace-Me", "1"),
        ("x-tenant", "a"),
    ];
    assert_eq!(
        drifts(&s, &x),
        vec![
            (DriftKind::UndocumentedStatus, "response 418".into()),
            (DriftKind::UndocumentedParameter, "query debug".into()),
            (DriftKind::UndocumentedParameter, "header x-trace-me".into()),
        ]
    );
    let x = exchange("GET", "/users", "", 200, "", r#"{"items":[]}"#);
    assert_eq!(drifts(&s, &x), vec![(DriftKind::MissingRequiredParameter, "query limit".into())]);
    // A range and `default` document statuses.
    let x = exchange("POST", "/users", "", 204, "", "");
    assert_eq!(drifts(&s, &x), vec![]);
    let x = exchange("GET", "/users/1", "", 503, "", "");
    assert_eq!(drifts(&s, &x), vec![]);
    // An object parameter spread over query keys documents any key.
    let doc = r#"{"openapi":"3.0.0","paths":{"/s":{"get":{"parameters":[
        {"name":"filter","in":"query","style":"deepObject","schema":{"type":"object"}}],"responses":{"200":{"description":""}}}}}}"#;
    let x = exchange("GET", "/s", "filter[a]=1&color=red", 200, "", "");
    assert_eq!(drifts(&Spec::parse(doc.as_bytes()).unwrap(), &x), vec![]);
    // API keys of security schemes are documented headers.
    let mut x = exchange("GET", "/pets", "", 200, "", "[]");
    x.req_headers = vec![("X-Pet-Key", "k"), ("Authorization", "Bearer x")];
    assert_eq!(drifts(&v2(), &x), vec![]);
}

#[test]
fn drift_reports_body_fields_once_per_normalised_location() {
    let s = v30();
    let body = r#"{"items":[
        {"id":"0f8fad5b-d9cb-469f-a165-70867728950e","email":"a@b.co","extra":1},
        {"id":"0f8fad5b-d9cb-469f-a165-70867728950e","email":"a@b.co","extra":2,"created":"yesterday"},
        {"id":7,"age":"old"},
        {"email":"not-an-email","id":"nope","manager":{"email":"a@b.co","id":"0f8fad5b-d9cb-469f-a165-70867728950e","more":true}}
    ],"next":null}"#;
    let x = exchange("GET", "/users", "limit=1", 200, "", body);
    let mut got = drifts(&s, &x);
    got.sort();
    assert_eq!(
        got,
        vec![
            (DriftKind::ResponseFieldAdded, "response 200 body /items/*/extra".into()),
            (DriftKind::ResponseFieldAdded, "response 200 body /items/*/manager/more".into()),
            (DriftKind::ResponseFieldMissing, "response 200 body /items/*/email".into()),
            (DriftKind::ResponseFieldType, "response 200 body /items/*/age".into()),
            (DriftKind::ResponseFieldType, "response 200 body /items/*/id".into()),
            (DriftKind::ResponseFieldFormat, "response 200 body /items/*/created".into()),
            (DriftKind::ResponseFieldFormat, "response 200 body /items/*/email".into()),
            (DriftKind::ResponseFieldFormat, "response 200 body /items/*/id".into()),
        ],
        "writeOnly password is never missing from a response"
    );
    let x = exchange("GET", "/users", "limit=1", 200, "", r#"[1]"#);
    assert_eq!(drifts(&s, &x), vec![(DriftKind::ResponseFieldType, "response 200 body".into())]);

    let x = exchange("POST", "/users", "", 201, r#"{"email":"a@b.co","bogus":1,"age":1.5}"#, "");
    let mut got = drifts(&s, &x);
    got.sort();
    assert_eq!(
        got,
        vec![
            (DriftKind::RequestFieldAdded, "request body /bogus".into()),
            (DriftKind::RequestFieldMissing, "request body /password".into()),
            (DriftKind::RequestFieldType, "request body /age".into()),
        ],
        "readOnly id is never missing from a request"
    );
    let x = exchange("POST", "/users", "", 201, r#"{"email":"a@b.co","password":"p","created":"2024-01-01"}"#, "");
    assert_eq!(drifts(&s, &x), vec![(DriftKind::RequestFieldFormat, "request body /created".into())]);

    // oneOf: the closest alternative.
    let s = v31();
    let x = exchange("GET", "/orders/1", "", 200, "", r#"{"id":1,"note":null,"payment":{"iban":"x"}}"#);
    assert_eq!(drifts(&s, &x), vec![]);
    let x = exchange("GET", "/orders/1", "", 200, "", r#"{"id":1,"payment":{"iban":"x","bic":"y"}}"#);
    assert_eq!(drifts(&s, &x), vec![(DriftKind::ResponseFieldAdded, "response 200 body /payment/bic".into())]);
    // 2.0: date format, body from a body parameter.
    let s = v2();
    let x = exchange("GET", "/pets", "", 200, "", r#"[{"id":1,"name":"a","born":"1 May"}]"#);
    assert_eq!(drifts(&s, &x), vec![(DriftKind::ResponseFieldFormat, "response 200 body /*/born".into())]);
    let x = exchange("POST", "/pets", "", 201, r#"{"name":5}"#, r#"{"id":1,"name":"a"}"#);
    assert_eq!(drifts(&s, &x), vec![(DriftKind::RequestFieldType, "request body /name".into())]);
}

#[test]
fn drift_is_capped_and_says_so() {
    let s = v30();
    let fields: Vec<String> = (0..500).map(|i| format!("\"f{i}\":1")).collect();
    let body = format!(
        r#"{{"items":[{{"email":"a@b.co","id":"0f8fad5b-d9cb-469f-a165-70867728950e",{}}}]}}"#,
        fields.join(",")
    );
    let x = exchange("GET", "/users", "limit=1", 200, "", &body);
    let mut out = Vec::new();
    s.drift(op(&s, "GET", "/users"), &x, &mut out);
    assert_eq!(out.len(), MAX_DRIFTS + 1);
    assert_eq!(out.last().unwrap().kind, DriftKind::Truncated);

    let items: Vec<String> = (0..20_000).map(|_| r#"{"id":1}"#.to_string()).collect();
    let body = format!(r#"{{"items":[{}]}}"#, items.join(","));
    let x = exchange("GET", "/users", "limit=1", 200, "", &body);
    let mut out = Vec::new();
    s.drift(op(&s, "GET", "/users"), &x, &mut out);
    assert!(out.len() <= MAX_DRIFTS + 1, "{}", out.len());
    assert!(out.iter().any(|d| d.kind == DriftKind::Truncated));
    assert!(out.iter().any(|d| d.location == "response 200 body /items/*/id"));
}

#[test]
fn bad_documents_are_refused_naming_the_place() {
    let e = |doc: &str| Spec::parse(doc.as_bytes()).expect_err("refused");
    let x = e("- just\n- a list\n");
    assert_eq!(x.pointer, "");
    assert!(x.message.contains("not an OpenAPI document"), "{x}");
    let x = e(r#"{"info":{}}"#);
    assert!(x.message.contains("neither"), "{x}");
    let x = e(r#"{"openapi":"4.0.0"}"#);
    assert_eq!(x.pointer, "/openapi");
    assert!(x.message.contains("4.0.0"), "{x}");
    assert_eq!(e(r#"{"swagger":"1.2"}"#).pointer, "/swagger");
    assert!(e("{ not json").message.contains("JSON"));
    assert!(e("a: [").message.contains("YAML"));
    let x = e(
        r##"{"openapi":"3.0.0","paths":{"/users":{"get":{"parameters":[{"$ref":"#/components/parameters/Nope"}],"responses":{}}}}}"##,
    );
    assert_eq!(x.pointer, "/paths/~1users/get/parameters/0/$ref");
    assert!(x.message.contains("broken reference"), "{x}");
    let x = e(
        r##"{"openapi":"3.0.0","paths":{"/u":{"post":{"requestBody":{"content":{"application/json":{"schema":{"properties":{"a":{"$ref":"other.yaml#/X"}}}}}},"responses":{}}}}}"##,
    );
    assert_eq!(x.pointer, "/paths/~1u/post/requestBody/content/application~1json/schema/properties/a/$ref");
    assert!(x.message.contains("not local"), "{x}");
    let x = e(
        r#"{"openapi":"3.1.0","paths":{"/u":{"get":{"parameters":[{"name":"q","in":"query","schema":{"type":"string","pattern":"("}}],"responses":{}}}}}"#,
    );
    assert_eq!(x.pointer, "/paths/~1u/get/parameters/0/schema");
    assert!(x.message.contains("does not compile"), "{x}");
    let x = e(
        r#"{"openapi":"3.0.0","paths":{"/u":{"get":{"parameters":[{"name":"q","in":"query","schema":{"type":"strnig"}}],"responses":{}}}}}"#,
    );
    assert_eq!(x.pointer, "/paths/~1u/get/parameters/0/schema");
    let x = e(r#"{"openapi":"3.0.0","paths":{"/u":{"get":{"parameters":[{"name":"q","in":"body"}],"responses":{}}}}}"#);
    assert_eq!(x.pointer, "/paths/~1u/get/parameters/0/in");
    let x = e(r#"{"openapi":"3.0.0","paths":{"u":{}}}"#);
    assert_eq!(x.pointer, "/paths/u");
    let x = e(
        r##"{"openapi":"3.0.0","paths":{"/u":{"get":{"responses":{"200":{"description":"","content":{"application/json":{"schema":{"$ref":"#/nope"}}}}}}}}}"##,
    );
    assert_eq!(x.pointer, "/paths/~1u/get/responses/200/content/application~1json/schema/$ref");
    let x = e(r##"{"openapi":"3.0.0","paths":{"/u":{"$ref":"#/x"}},"x":{"$ref":"#/x"}}"##);
    assert!(x.message.contains("cycle"), "{x}");
}

#[test]
fn garbage_and_deep_documents_do_not_panic() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for doc in [PETSTORE_V2, USERS_V30, ORDERS_V31] {
        let bytes = doc.as_bytes();
        for _ in 0..300 {
            let mut b = bytes.to_vec();
            for _ in 0..1 + next() % 4 {
                if b.is_empty() {
                    break;
                }
                let i = (next() % b.len() as u64) as usize;
                match next() % 3 {
                    0 => b[i] = (next() % 256) as u8,
                    1 => {
                        b.remove(i);
                    }
                    _ => b.truncate(i),
                }
            }
            if let Ok(s) = Spec::parse(&b) {
                for (id, o) in s.operations() {
                    let _ = s.check_request(id, &o.template, "a=%zz&b", &[("x", "\u{e9}")], Some(b"{\"a\":[1]}"), None);
                    let x = exchange(&o.method, &o.template, "q", 200, "[{}]", r#"{"a":[{"b":null}]}"#);
                    s.drift(id, &x, &mut Vec::new());
                }
            }
        }
    }
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(Spec::parse(deep_json.as_bytes()).is_err());
    let deep_yaml = format!("openapi: 3.0.0\nx: {}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(Spec::parse(deep_yaml.as_bytes()).is_err());
    let mut nested = json!({"type": "string"});
    for _ in 0..100 {
        nested = json!({"type": "object", "properties": {"a": nested}});
    }
    let doc = json!({"openapi": "3.0.0", "paths": {"/u": {"post": {"requestBody": {"content": {"application/json": {"schema": nested}}}, "responses": {}}}}});
    let x = Spec::from_value(doc).expect_err("too deep");
    assert!(x.message.contains("deeper"), "{x}");
    // A deep request body under a recursive schema (deeper than the walk's bound, not than
    // serde_json's).
    let s = v30();
    let mut body = String::from(r#"{"email":"a@b.co","password":"p"}"#);
    for _ in 0..100 {
        body = format!(r#"{{"email":"a@b.co","password":"p","manager":{body}}}"#);
    }
    let x = exchange("POST", "/users", "", 201, &body, "");
    let mut out = Vec::new();
    s.drift(op(&s, "POST", "/users"), &x, &mut out);
    assert!(out.iter().any(|d| d.kind == DriftKind::Truncated));
    let _ =
        s.check_request(op(&s, "POST", "/users"), "/users", "", &[], Some(body.as_bytes()), Some("application/json"));
    for path in ["", "/", "//", "/api/v1/users/\u{e9}/x", &"/a".repeat(10_000)] {
        for m in ["", "GET", "get ", "\u{e9}"] {
            let _ = s.route(m, path);
        }
    }
}

#[test]
fn huge_documents_load_and_route() {
    let mut paths = serde_json::Map::new();
    for i in 0..3000 {
        paths.insert(
            format!("/r{i}/{{id}}/s{}", i % 7),
            json!({"get": {"parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}], "responses": {"200": {"description": "ok"}}}}),
        );
    }
    let s = Spec::from_value(json!({"openapi": "3.1.0", "paths": paths})).unwrap();
    assert_eq!(template(&s, "GET", "/r2999/5/s3"), "GET /r2999/{id}/s3");
    assert_eq!(s.route("GET", "/r2999/5/s4"), Route::UnknownPath);
}

#[test]
fn specs_are_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Spec>();
}

#[test]
fn dialect_conversion_to_2020_12() {
    let doc: Value = serde_json::from_str(USERS_V30).unwrap();
    let cx = Cx { root: &doc, dialect: Dialect::OpenApi30 };
    let s =
        json!({"type": "integer", "nullable": true, "exclusiveMaximum": true, "maximum": 5, "example": 1, "x-a": 1});
    assert_eq!(
        cx.to_json_schema(&s, "", Dir::Request).unwrap(),
        json!({"type": ["integer", "null"], "exclusiveMaximum": 5})
    );
    let s = json!({"allOf": [{"$ref": "#/components/schemas/User"}], "nullable": true});
    let js = cx.to_json_schema(&s, "", Dir::Request).unwrap();
    assert_eq!(js["anyOf"][0], json!({"type": "null"}));
    assert_eq!(js["anyOf"][1]["allOf"][0]["$ref"], "#/$defs/~1components~1schemas~1User");
    assert_eq!(
        js["$defs"]["/components/schemas/User"]["required"],
        json!(["email", "password"]),
        "readOnly id dropped"
    );
    let resp = cx.to_json_schema(&json!({"$ref": "#/components/schemas/User"}), "", Dir::Response).unwrap();
    assert_eq!(
        resp["$defs"]["/components/schemas/User"]["required"],
        json!(["id", "email"]),
        "writeOnly password dropped"
    );
}
