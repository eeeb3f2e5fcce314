//! Tyk's uptime checks for load balancing (gateway/host_checker.go, host_checker_manager.go):
//! every check of the loaded APIs that steer by them (`config::UptimeTests`) runs every
//! `[apps] uptime_check_interval_secs`, all at once; a host whose check fails
//! `uptime_failure_trigger_sample_size` times is down until it has passed as many times, counted
//! as Tyk counts (`HostReporter`). The hosts down are published to the workers
//! (`dataplane::DownHosts`), whose target pick skips them. Control plane task; must not: block
//! (every check is bounded by its timeout), or keep state for checks no longer loaded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::config::{CheckKind, Snapshot, UptimeCheck, UptimeCommand};
use crate::dataplane::DownHosts;

/// Tyk's per-check-URL sample (host_checker.go:45-49).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sample {
    count: u32,
    reached: bool,
}

/// The state of every check, by URL.
#[derive(Debug, Default)]
struct Samples(HashMap<String, Sample>);

impl Samples {
    /// One result, as Tyk's `HostReporter` takes it (host_checker.go:148-217): a failure adds
    /// one (stored until the limit is reached, then held there); a pass after the limit takes
    /// one away, and at zero the host is up; a pass before the limit changes nothing.
    fn report(&mut self, url: &str, ok: bool, limit: u32) {
        if ok {
            if let Some(s) = self.0.get_mut(url) {
                if s.reached {
                    if s.count <= 1 {
                        self.0.remove(url);
                    } else {
                        s.count -= 1;
                    }
                }
            }
            return;
        }
        let mut s = self.0.get(url).copied().unwrap_or_default();
        s.count += 1;
        if s.count >= limit {
            if !s.reached {
                s.reached = true;
                self.0.insert(url.to_string(), s);
            }
        } else {
            self.0.insert(url.to_string(), s);
        }
    }

    /// Hosts with a check that is down.
    fn down(&self, checks: &[UptimeCheck]) -> DownHosts {
        checks.iter().filter(|c| self.0.get(&c.url).is_some_and(|s| s.reached)).map(|c| c.host.clone()).collect()
    }
}

/// Every check of the snapshot's steering APIs (versions share their API's), once per URL.
fn checks(snap: &Snapshot) -> Vec<UptimeCheck> {
    let mut out: Vec<UptimeCheck> = Vec::new();
    for api in snap.apis.iter() {
        for c in api.uptime.iter().flat_map(|u| u.checks.iter()) {
            if !out.iter().any(|o| o.url == c.url) {
                out.push(c.clone());
            }
        }
    }
    out
}

/// Runs the checks until the process ends.
pub async fn run(snapshot: Arc<ArcSwap<Snapshot>>, down: Arc<ArcSwap<DownHosts>>) {
    let mut samples = Samples::default();
    loop {
        let snap = snapshot.load_full();
        let (every, limit) = (
            snap.config.apps.uptime_check_interval_secs.max(1),
            snap.config.apps.uptime_failure_trigger_sample_size.max(1),
        );
        let list = checks(&snap);
        samples.0.retain(|url, _| list.iter().any(|c| &c.url == url));
        let results = futures_util::future::join_all(list.iter().map(check)).await;
        for (c, ok) in list.iter().zip(results) {
            if !ok {
                tracing::debug!(url = %c.url, "uptime check failed");
            }
            samples.report(&c.url, ok, limit);
        }
        let now = samples.down(&list);
        if **down.load() != now {
            tracing::warn!(down = ?now, "uptime checks: hosts down changed");
            down.store(Arc::new(now));
        }
        tokio::time::sleep(staggered(every)).await;
    }
}

/// Tyk's `getStaggeredTime` (host_checker.go:90-102): the interval as set up to 5 s, else a
/// whole number of seconds in `[t-3, t+3)`, so that many nodes do not check at once.
fn staggered(secs: u64) -> Duration {
    if secs <= 5 {
        return Duration::from_secs(secs);
    }
    let jitter =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()) as u64 % 6;
    Duration::from_secs(secs - 3 + jitter)
}

/// One check: up when an HTTP check answers 200, or a TCP check connects and its commands pass
/// (host_checker.go:219-335), all within its timeout.
async fn check(c: &UptimeCheck) -> bool {
    let timeout = if c.timeout.is_zero() { crate::config::UPTIME_DEFAULT_TIMEOUT } else { c.timeout };
    tokio::time::timeout(timeout, attempt(c)).await.is_ok_and(|r| r.unwrap_or(false))
}

async fn attempt(c: &UptimeCheck) -> std::io::Result<bool> {
    let mut s = tokio::net::TcpStream::connect((c.connect_host.as_str(), c.port)).await?;
    match &c.kind {
        CheckKind::Http => {
            let mut req = format!("{} {} HTTP/1.1\r\nHost: {}\r\n", c.method, c.path, c.host);
            for (name, value) in &c.headers {
                req.push_str(&format!("{name}: {value}\r\n"));
            }
            req.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", c.body.len()));
            req.push_str(&c.body);
            s.write_all(req.as_bytes()).await?;
            // The status line is all that counts.
            let mut head = Vec::with_capacity(64);
            let mut buf = [0u8; 256];
            while !head.contains(&b'\n') && head.len() < 1024 {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let line = String::from_utf8_lossy(&head);
            let mut parts = line.split(' ');
            Ok(parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) && parts.next() == Some("200"))
        }
        CheckKind::Tcp(commands) => {
            for cmd in commands {
                match cmd {
                    UptimeCommand::Send(m) => s.write_all(m.as_bytes()).await?,
                    UptimeCommand::Expect(m) => {
                        let mut got = vec![0u8; m.len()];
                        s.read_exact(&mut got).await?;
                        if got != m.as_bytes() {
                            return Ok(false);
                        }
                    }
                }
            }
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_go_down_after_the_limit_and_up_after_as_many_passes() {
        let mut s = Samples::default();
        let down = |s: &Samples| s.0.get("u").is_some_and(|x| x.reached);
        s.report("u", false, 3);
        s.report("u", false, 3);
        assert!(!down(&s));
        // A pass before the limit changes nothing (Tyk's count is not reset by it).
        s.report("u", true, 3);
        assert_eq!(s.0["u"], Sample { count: 2, reached: false });
        s.report("u", false, 3);
        assert!(down(&s));
        // Held at the limit while failing.
        s.report("u", false, 3);
        assert_eq!(s.0["u"].count, 3);
        s.report("u", true, 3);
        s.report("u", true, 3);
        assert!(down(&s), "two passes of three");
        s.report("u", true, 3);
        assert!(!down(&s) && !s.0.contains_key("u"));
    }

    #[test]
    fn intervals_are_staggered_as_tyks() {
        assert_eq!(staggered(5), Duration::from_secs(5));
        let d = staggered(10).as_secs();
        assert!((7..13).contains(&d), "{d}");
    }
}
