//! The demo upstream for `cargo xtask run`: an httpbin-like server on 127.0.0.1:8081 (or the
//! address given as the first argument), so the README walkthrough works with no internet.

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8081".into());
    let server = match portcullis_tests::httpbin::Httpbin::start(&addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo-upstream: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("demo-upstream: httpbin-like server on http://{}", server.addr);
    loop {
        std::thread::park();
    }
}
