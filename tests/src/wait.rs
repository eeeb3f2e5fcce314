//! Waiting in tests: a bounded poll on something the test can observe (a metric, a file, a port,
//! a process exit, an answer), instead of a sleep that guesses how long it takes. Every wait has
//! a timeout, generous because CI machines are slow and shared; no test asserts on how long a
//! wait took. There is one polling loop, [`poll`]; the others say what to do when it times out.

use std::time::{Duration, Instant};

/// The timeout of a wait for something that normally takes milliseconds.
pub const WAIT: Duration = Duration::from_secs(10);

/// How often a condition is looked at again.
const EVERY: Duration = Duration::from_millis(10);

/// Calls `probe` every few ms until it returns `Some`, for at most `timeout` (always at least
/// once); `None` if it never did.
pub fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(EVERY);
    }
}

/// [`poll`] that panics, naming `what`, when `probe` has not returned `Some` within `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Option<T>) -> T {
    poll(timeout, probe).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// [`wait_for`] a condition.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    wait_for(what, timeout, || cond().then_some(()))
}

/// Waits up to `timeout` for `child` to exit; its status, or `None` if it is still running.
pub fn child_exit(child: &mut std::process::Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    poll(timeout, || child.try_wait().ok().flatten())
}

/// Waits until something accepts TCP connections on `addr`.
pub fn port_accepting(addr: std::net::SocketAddr, what: &str) {
    wait_until(&format!("{what} to accept connections on {addr}"), WAIT, || std::net::TcpStream::connect(addr).is_ok());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value_and_gives_up_after_the_timeout() {
        let mut n = 0;
        assert_eq!(poll(WAIT, || (n += 1, (n == 3).then_some(n)).1), Some(3));
        assert_eq!(poll::<()>(Duration::ZERO, || None), None);
        let r = std::panic::catch_unwind(|| wait_until("nothing", Duration::from_millis(20), || false));
        let msg = r.unwrap_err().downcast::<String>().unwrap();
        assert!(msg.contains("waiting for nothing"), "{msg}");
    }
}
