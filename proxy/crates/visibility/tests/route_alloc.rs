//! `Spec::route` runs on every request on the gateway's workers: this test binary counts the
//! allocations of the calling thread around it and wants none.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use portcullis_visibility::spec::{Route, Spec};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised thread-local
// `Cell`, which neither allocates nor re-enters the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, that is from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

#[test]
fn routing_does_not_allocate() {
    let doc = r#"{"openapi":"3.0.3","servers":[{"url":"https://x.io/api/v1"}],"paths":{
        "/users":{"get":{"responses":{}}},
        "/users/me":{"get":{"responses":{}}},
        "/users/{id}":{"get":{"responses":{}},"put":{"responses":{}}},
        "/users/{id}/posts/{post}.json":{"get":{"responses":{}}}}}"#;
    let spec = Spec::parse(doc.as_bytes()).unwrap();
    let requests = [
        ("GET", "/api/v1/users/me"),
        ("PUT", "/users/me"),
        ("get", "/users/42/posts/7.json/"),
        ("DELETE", "/users/42"),
        ("GET", "/nope/at/all"),
        ("HEAD", "/api/v1/users"),
    ];
    let before = ALLOCS.with(Cell::get);
    let routes: [Route; 6] = requests.map(|(m, p)| spec.route(m, p));
    let after = ALLOCS.with(Cell::get);
    assert_eq!(after - before, 0, "allocations while routing");
    let counted = std::hint::black_box(vec![1u8]);
    assert!(ALLOCS.with(Cell::get) > after && counted.len() == 1, "the counter counts");
    assert!(
        matches!(routes[0], Route::Op(_)) && matches!(routes[1], Route::Op(_)) && matches!(routes[2], Route::Op(_))
    );
    assert_eq!(routes[3], Route::UnknownMethod);
    assert_eq!(routes[4], Route::UnknownPath);
    assert!(matches!(routes[5], Route::Op(_)));
}
