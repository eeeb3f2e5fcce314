//! A bounded SYN flood for measuring the XDP gate (see bench/README.md, "XDP gate"): opens
//! non-blocking TCP connections to ADDR as fast as one core allows for SECONDS (at most 60),
//! keeping the last 512 open so that handshakes the server answers complete (and reach the
//! proxy's accept queue) before they are closed, and prints how many SYNs it sent. Run it inside a test network namespace
//! (`ip netns exec NS synflood 10.0.0.1:8080 5`), never against hosts you do not own.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(secs)) = (args.next(), args.next()) else {
        eprintln!("usage: synflood IPV4:PORT SECONDS");
        std::process::exit(2);
    };
    let addr: SocketAddrV4 = addr.parse().unwrap_or_else(|e| {
        eprintln!("synflood: bad address {addr:?}: {e}");
        std::process::exit(2)
    });
    let secs: u64 = secs.parse::<u64>().unwrap_or(5).min(60);
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(addr.ip().octets()) },
        sin_zero: [0; 8],
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut sent: u64 = 0;
    let mut ring = [-1i32; 512];
    let mut slot = 0;
    while Instant::now() < deadline {
        for _ in 0..256 {
            // SAFETY: plain socket calls on sockets we own; each is closed when its ring slot is
            // reused or at the end; sa outlives the calls.
            unsafe {
                if ring[slot] >= 0 {
                    libc::close(ring[slot]);
                }
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                ring[slot] = fd;
                slot = (slot + 1) % ring.len();
                if fd < 0 {
                    continue;
                }
                libc::connect(
                    fd,
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                );
            }
            sent += 1;
        }
    }
    for fd in ring.into_iter().filter(|fd| *fd >= 0) {
        // SAFETY: closing sockets we opened.
        unsafe { libc::close(fd) };
    }
    println!("{sent} SYNs in {secs} s = {:.0}/s", sent as f64 / secs as f64);
}
