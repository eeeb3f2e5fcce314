//! Integration tests of starting and checking: the files the proxy reads, the port it takes, the
//! admin listener's limits. The real binary on loopback; every wait is bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use portcullis_tests::client;
use portcullis_tests::harness::{keyless_api, ProxyBuilder};
use portcullis_tests::httpbin::upstream;
use portcullis_tests::{free_addr, wait};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// Waits for `child` to exit within `timeout`; kills it (and says so) if it does not.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> Result<ExitStatus, String> {
    if let Some(s) = wait::child_exit(child, timeout) {
        return Ok(s);
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("still running after {timeout:?} (killed)"))
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path this test owns.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

/// `portcullis check --config <config>` with a bound on its run time: (exit code, stdout).
fn check(config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(bin())
        .args(["check", "--config"])
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_or_kill(&mut child, Duration::from_secs(20)).unwrap_or_else(|e| panic!("check hung: {e}"));
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    (status.code(), out)
}

#[test]
fn fifos_devices_and_oversized_files_are_refused_without_hanging() {
    let up = upstream("up");
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps");
    std::fs::create_dir(&apps).unwrap();
    std::fs::write(apps.join("good.json"), keyless_api("good", "/good/", &up.url(), "", "")).unwrap();
    // A FIFO (opening it for reading waited for a writer forever), a symlink to an endless
    // device (read without bound), a file over the 16 MiB cap, a policies file that is a FIFO.
    mkfifo(&apps.join("fifo.json"));
    std::os::unix::fs::symlink("/dev/zero", apps.join("zero.json")).unwrap();
    std::fs::File::create(apps.join("big.json")).unwrap().set_len(17 << 20).unwrap();
    mkfifo(&apps.join("policies.json"));
    let (listen, admin) = (free_addr(), free_addr());
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!("[proxy]\nlisten = \"{listen}\"\nworkers = 1\n[admin]\nlisten = \"{admin}\"\n[ebpf]\nmode = \"off\"\n"),
    )
    .unwrap();

    let (code, out) = check(&config, &[]);
    assert_eq!(code, Some(1), "{out}");
    for (file, what) in [
        ("fifo.json", "not a regular file (a FIFO)"),
        ("zero.json", "not a regular file (a character device)"),
        ("big.json", "larger than 16 MiB"),
        ("policies.json", "not a regular file (a FIFO)"),
    ] {
        assert!(out.lines().any(|l| l.contains(file) && l.contains(what)), "{file}: {what}:\n{out}");
    }
    assert!(!out.contains("good.json"), "{out}");

    // `run` starts with the good API and reports the others.
    let log = dir.path().join("run.log");
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ready = wait::poll(Duration::from_secs(20), || {
        assert!(child.try_wait().unwrap().is_none(), "run exited:\n{}", std::fs::read_to_string(&log).unwrap());
        client::get(admin, "/hello").is_ok_and(|r| r.status == 200).then_some(())
    })
    .is_some();
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(ready, "run did not become ready (hung on a file?):\n{text}");
    assert!(text.contains("fifo.json") && text.contains("zero.json"), "{text}");

    // The config file itself: a FIFO is refused by `check` and by `run`, naming it.
    let fifo_config = dir.path().join("fifo.toml");
    mkfifo(&fifo_config);
    let (code, out) = check(&fifo_config, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("fifo.toml") && out.contains("FIFO"), "{out}");
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&fifo_config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_or_kill(&mut child, Duration::from_secs(20)).unwrap_or_else(|e| panic!("run hung: {e}"));
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("fifo.toml") && err.contains("FIFO"), "{err}");
}

#[test]
fn check_names_bad_workers_and_policy_rates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("apps")).unwrap();
    // A policy whose rate has a meaning in Tyk (-1: no limit) and two that have none.
    std::fs::write(
        dir.path().join("apps/policies.json"),
        r#"{"free": {"rate": -1}, "gold": {"rate": 100, "per": 0}, "odd": {"rate": -5, "per": 1}}"#,
    )
    .unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(&config, "[proxy]\nworkers = 100000\n").unwrap();
    let (code, out) = check(&config, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("proxy.workers") && out.contains("100000") && out.contains("at most 1024"), "{out}");
    // The command-line override is bounded the same way.
    std::fs::write(&config, "").unwrap();
    let (code, out) = check(&config, &["--workers", "5000"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("proxy.workers") && out.contains("5000"), "{out}");
    let (code, out) = check(&config, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.lines().any(|l| l.contains("policies.json") && l.contains("`gold.per` = 0")), "{out}");
    assert!(out.lines().any(|l| l.contains("policies.json") && l.contains("`odd.rate` = -5")), "{out}");
    assert!(!out.contains("free"), "{out}");
    assert!(out.contains("2 error(s)"), "{out}");
}

#[test]
fn a_second_instance_on_a_busy_port_refuses_to_start() {
    let first = ProxyBuilder::new(bin()).workers(2).section("[ebpf]\nmode = \"off\"\n").start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("apps")).unwrap();
    let admin = free_addr();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"{}\"\nworkers = 1\n[admin]\nlisten = \"{admin}\"\n[ebpf]\nmode = \"off\"\n",
            first.listen
        ),
    )
    .unwrap();
    let mut second = Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Before the fix it bound the port through SO_REUSEPORT and ran, taking a share of the
    // connections.
    let status = wait_or_kill(&mut second, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("the second instance started on the busy port: {e}"));
    let mut err = String::new();
    second.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success(), "{status}: {err}");
    let port = first.listen.port().to_string();
    assert!(err.contains(&port) && err.contains("already in use"), "{err}");
    // The first instance still has the port to itself.
    assert!(TcpStream::connect(first.listen).is_ok());
    assert_eq!(client::get(first.admin, "/hello").unwrap().status, 200);
}

#[test]
fn admin_connections_that_do_not_finish_their_head_are_closed() {
    let p = ProxyBuilder::new(bin()).admin_config("header_read_timeout_ms = 300").start();
    // A partial head, then nothing (slowloris), and a connection that sends nothing at all.
    let mut partial = TcpStream::connect(p.admin).unwrap();
    partial.write_all(b"GET /hello HTTP/1.1\r\nHost: admin\r\nX-Slow: ").unwrap();
    let silent = TcpStream::connect(p.admin).unwrap();
    let started = Instant::now();
    for (name, mut s) in [("partial head", partial), ("silent", silent)] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let r = s.read_to_end(&mut buf);
        assert!(r.is_ok(), "{name}: not closed by the server: {r:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{name}: closed only after {:?}", started.elapsed());
    }
    // Complete requests are served as before.
    assert_eq!(client::get(p.admin, "/hello").unwrap().status, 200);
}
