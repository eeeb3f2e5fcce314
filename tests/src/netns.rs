//! Network namespaces joined to the test's namespace by veth pairs, made and removed by the test
//! itself (`ip netns`, `ip link`), and a way to run code inside one: a thread that `setns(2)`s into
//! it, so its sockets live there. Needs root; [`privileged`] says whether this run can do it.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;

/// Why privileged tests cannot run here, or `None` when they can.
pub fn privileged() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    None
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A namespace `ns` with interface `ns_if` (address `ns_ip`/24) paired with `host_if`
/// (`host_ip`/24) in the test's namespace. Removed on drop.
pub struct NetNs {
    pub ns: String,
    pub host_if: String,
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
}

impl NetNs {
    /// `tag` keeps names unique per test (interface names must stay within 15 characters);
    /// `subnet` picks 10.<subnet>.<pid-derived>.0/24.
    pub fn create(tag: &str, subnet: u8) -> Result<NetNs, String> {
        let pid = std::process::id() % 10_000;
        let ns = format!("pc{tag}{pid}");
        let host_if = format!("pc{tag}{pid}h");
        let ns_if = format!("pc{tag}{pid}n");
        let third = (std::process::id() % 250) as u8 + 1;
        let host_ip = Ipv4Addr::new(10, subnet, third, 1);
        let ns_ip = Ipv4Addr::new(10, subnet, third, 2);
        // Leftovers of a killed earlier run with the same pid.
        let _ = ip(&["netns", "del", &ns]);
        let _ = ip(&["link", "del", &host_if]);
        let me = NetNs { ns: ns.clone(), host_if: host_if.clone(), host_ip, ns_ip };
        ip(&["netns", "add", &ns])?;
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if])?;
        ip(&["link", "set", &ns_if, "netns", &ns])?;
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{ns_ip}/24"), "dev", &ns_if])?;
        ip(&["-n", &ns, "link", "set", &ns_if, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(me)
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns on a valid namespace fd; it only changes this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}) failed: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread panicked")
    }

    /// Whether an XDP program is attached to the host-side interface.
    pub fn host_if_has_xdp(&self) -> bool {
        Command::new("ip")
            .args(["link", "show", "dev", &self.host_if])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(" xdp"))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.ns]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}
