//! `cargo xtask wake-cost`: what this host charges a thread for sleeping and being woken.
//!
//! A producer pinned to CPU 0 signals an eventfd every `gap` microseconds (busy-waiting in
//! between); a consumer pinned to CPU 1 blocks in `read(2)` on it, so it sleeps and is woken
//! once per signal, and does nothing else. Printed per wake-up: the consumer's own CPU time
//! (`getrusage(RUSAGE_THREAD)`, what `/proc/<pid>/stat` reports and `cargo xtask bench` divides
//! into "CPU us/req") and CPU 1's busy time over the same interval (`/proc/stat`, what
//! `cargo xtask bench` reports as "core us/req"). On a machine whose accounting is sound the two
//! agree and are a few microseconds at most; where the first is several times the second, a
//! process that sleeps often is charged for time its core spent idle (bench/README.md,
//! "Method"). Must not: run anything but the two threads it measures, or run unbounded (at most
//! 20,000 signals per gap, and the consumer stops when the producer has finished).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

const SIGNALS: u64 = 20_000;

fn pin(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("cannot pin to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn thread_cpu_us() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// CPU 1's busy clock ticks (user nice system irq softirq) from `/proc/stat`.
fn cpu1_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    crate::procstat::parse_cpu_times(&stat, "1").map(|c| c.busy)
}

struct Row {
    gap_us: u64,
    wakes: u64,
    thread_us_per_wake: f64,
    core_us_per_wake: Option<f64>,
}

fn measure(gap: Duration) -> Result<Row> {
    // SAFETY: plain syscall; the fd is closed below.
    let efd = unsafe { libc::eventfd(0, 0) };
    if efd < 0 {
        bail!("eventfd: {}", std::io::Error::last_os_error());
    }
    if let Err(e) = pin(1) {
        // SAFETY: closing the fd this function opened.
        unsafe { libc::close(efd) };
        return Err(e);
    }
    let core0 = cpu1_busy_ticks();
    let cpu0 = thread_cpu_us();
    let producer = std::thread::spawn(move || -> Result<()> {
        if let Err(e) = pin(0) {
            // Release the consumer, which waits for SIGNALS signals in all.
            let all: u64 = SIGNALS;
            // SAFETY: writes 8 bytes from a live u64 to the eventfd.
            unsafe { libc::write(efd, (&all as *const u64).cast(), 8) };
            return Err(e);
        }
        for _ in 0..SIGNALS {
            let t = Instant::now();
            while t.elapsed() < gap {
                std::hint::spin_loop();
            }
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to the eventfd.
            unsafe { libc::write(efd, (&one as *const u64).cast(), 8) };
        }
        Ok(())
    });
    let (mut got, mut wakes) = (0u64, 0u64);
    while got < SIGNALS {
        let mut n: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; blocks until the counter is non-zero.
        let r = unsafe { libc::read(efd, (&mut n as *mut u64).cast(), 8) };
        if r != 8 {
            // SAFETY: closing the fd this function opened.
            unsafe { libc::close(efd) };
            bail!("eventfd read: {}", std::io::Error::last_os_error());
        }
        got += n;
        wakes += 1;
    }
    let cpu = thread_cpu_us() - cpu0;
    let core1 = cpu1_busy_ticks();
    let produced = producer.join().map_err(|_| anyhow::anyhow!("producer thread panicked"))?;
    // SAFETY: closing the fd this function opened; the producer has finished with it.
    unsafe { libc::close(efd) };
    produced?;
    // SAFETY: sysconf with a valid name has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(Row {
        gap_us: gap.as_micros() as u64,
        wakes,
        thread_us_per_wake: cpu / wakes as f64,
        core_us_per_wake: core0.zip(core1).map(|(a, b)| b.saturating_sub(a) as f64 / hz * 1e6 / wakes as f64),
    })
}

pub(crate) fn wake_cost() -> Result<()> {
    if std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) < 2 {
        bail!("needs 2 CPUs (a producer on CPU 0, the sleeper on CPU 1)");
    }
    // The producer busy-waits between signals; the consumer runs a few microseconds per signal.
    println!("| gap between signals | wake-ups | sleeper's own CPU per wake-up | CPU 1 busy per wake-up |");
    println!("|---|---|---|---|");
    for gap_us in [2, 10, 50] {
        let r = measure(Duration::from_micros(gap_us))?;
        let core = r.core_us_per_wake.map_or("-".to_string(), |c| format!("{c:.2} us"));
        println!("| {} us | {} | {:.2} us | {core} |", r.gap_us, r.wakes, r.thread_us_per_wake);
    }
    println!("\nCPU 1 busy counts everything on that CPU (10 ms ticks): with the machine otherwise idle it is the sleeper's true cost.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleeper_is_woken_once_per_signal_or_less() {
        if std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) < 2 {
            eprintln!("skipped: needs 2 CPUs");
            return;
        }
        let r = match measure(Duration::from_micros(20)) {
            Err(e) if e.to_string().starts_with("cannot pin") => {
                eprintln!("skipped: {e} (CPUs 0 and 1 are not both allowed here)");
                return;
            }
            r => r.unwrap(),
        };
        // Signals that arrive while the sleeper is still awake are read together.
        assert!(r.wakes >= 1 && r.wakes <= SIGNALS, "{} wakes", r.wakes);
        assert!(r.thread_us_per_wake > 0.0);
        assert!(r.core_us_per_wake.is_some());
    }
}
