//! A jsonplaceholder-like REST API (posts, comments, users, todos), served by the demo upstream
//! next to httpbin's endpoints: the API visibility walkthrough's second API. Its data is made
//! up here, deterministic, and small: 10 users, 100 posts, 500 comments, 200 todos.

use serde_json::{json, Value};

const USERS: u64 = 10;
const POSTS: u64 = 100;
const COMMENTS: u64 = 500;
const TODOS: u64 = 200;

fn user(id: u64) -> Value {
    json!({
        "id": id,
        "name": format!("User {id}"),
        "username": format!("user{id}"),
        "email": format!("user{id}@example.com"),
        "address": {"street": format!("{id} Main Street"), "city": "Springfield", "zipcode": format!("{:05}", 10000 + id),
                    "geo": {"lat": format!("{}.5", id), "lng": format!("-{}.25", id)}},
        "phone": format!("555-01{id:02}"),
        "website": format!("https://user{id}.example.com"),
        "company": {"name": format!("Company {id}"), "catchPhrase": "Made up for the demo"},
    })
}

fn post(id: u64) -> Value {
    json!({"userId": (id - 1) / 10 + 1, "id": id, "title": format!("Post {id}"), "body": format!("The body of post {id}.")})
}

fn comment(id: u64) -> Value {
    json!({"postId": (id - 1) / 5 + 1, "id": id, "name": format!("Comment {id}"),
           "email": format!("reader{id}@example.org"), "body": format!("Comment {id} says hello.")})
}

fn todo(id: u64) -> Value {
    json!({"userId": (id - 1) / 20 + 1, "id": id, "title": format!("Todo {id}"), "completed": id.is_multiple_of(3)})
}

/// The answer to `method` `segments` (of the path) with `query` and request `body`, or `None`
/// when the path is not one of this API's.
pub fn respond(method: &str, segments: &[&str], query: &str, body: &[u8]) -> Option<(u16, Value)> {
    let id = |s: &str, max: u64| s.parse::<u64>().ok().filter(|n| (1..=max).contains(n));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
    };
    let not_found = Some((404, json!({})));
    Some(match (method, segments) {
        ("GET", ["posts"]) => {
            let list: Vec<Value> =
                (1..=POSTS).map(post).filter(|p| param("userId").is_none_or(|u: u64| p["userId"] == u)).collect();
            (200, Value::Array(list))
        }
        ("POST", ["posts"]) => {
            let mut v: Value = serde_json::from_slice(body).unwrap_or(json!({}));
            if !v.is_object() {
                return Some((400, json!({"error": "a post is a JSON object"})));
            }
            v["id"] = json!(POSTS + 1);
            (201, v)
        }
        ("GET", ["posts", p]) => match id(p, POSTS) {
            Some(n) => (200, post(n)),
            None => return not_found,
        },
        ("PUT" | "PATCH", ["posts", p]) => match id(p, POSTS) {
            Some(n) => {
                let mut v = post(n);
                if let (Some(o), Ok(Value::Object(patch))) = (v.as_object_mut(), serde_json::from_slice(body)) {
                    o.extend(patch);
                }
                (200, v)
            }
            None => return not_found,
        },
        ("DELETE", ["posts", p]) => match id(p, POSTS) {
            Some(_) => (200, json!({})),
            None => return not_found,
        },
        ("GET", ["posts", p, "comments"]) => match id(p, POSTS) {
            Some(n) => (200, Value::Array((n * 5 - 4..=n * 5).map(comment).collect())),
            None => return not_found,
        },
        ("GET", ["comments"]) => {
            let list = (1..=COMMENTS).map(comment).filter(|c| param("postId").is_none_or(|p: u64| c["postId"] == p));
            (200, Value::Array(list.collect()))
        }
        ("GET", ["comments", c]) => match id(c, COMMENTS) {
            Some(n) => (200, comment(n)),
            None => return not_found,
        },
        ("GET", ["users"]) => (200, Value::Array((1..=USERS).map(user).collect())),
        ("GET", ["users", u]) => match id(u, USERS) {
            Some(n) => (200, user(n)),
            None => return not_found,
        },
        ("GET", ["users", u, "todos"]) => match id(u, USERS) {
            Some(n) => (200, Value::Array((n * 20 - 19..=n * 20).map(todo).collect())),
            None => return not_found,
        },
        ("GET", ["todos", t]) => match id(t, TODOS) {
            Some(n) => (200, todo(n)),
            None => return not_found,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_nest_and_filter() {
        let (s, v) = respond("GET", &["posts", "3", "comments"], "", b"").unwrap();
        assert_eq!((s, v.as_array().unwrap().len(), v[0]["postId"].clone()), (200, 5, json!(3)));
        let (_, v) = respond("GET", &["comments"], "postId=2", b"").unwrap();
        assert!(v.as_array().unwrap().iter().all(|c| c["postId"] == 2));
        assert_eq!(respond("GET", &["users", "11"], "", b"").unwrap().0, 404);
        assert_eq!(
            respond("POST", &["posts"], "", br#"{"title":"t"}"#).unwrap(),
            (201, json!({"title": "t", "id": 101}))
        );
        assert!(respond("GET", &["get"], "", b"").is_none());
    }
}
