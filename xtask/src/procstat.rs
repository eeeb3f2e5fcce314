//! `/proc/stat` CPU counters, read by the load benchmark (steal and busy time of its CPUs) and by
//! `wake-cost` (its core's busy time).

/// One CPU's counters from `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CpuTimes {
    pub(crate) steal: u64,
    /// Time the CPU was running anything: user, nice, system, irq and softirq.
    pub(crate) busy: u64,
    /// Every field (user nice system idle iowait irq softirq steal).
    pub(crate) total: u64,
}

/// The `cpuN` line of a `/proc/stat` text.
pub(crate) fn parse_cpu_times(stat: &str, cpu: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some(&format!("cpu{cpu}")[..]))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().ok()).collect::<Option<_>>()?;
    // guest and guest_nice (fields 9 and 10) are already counted in user and nice.
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    Some(CpuTimes { steal: get(7), busy: [0, 1, 2, 5, 6].map(get).iter().sum(), total: (0..8).map(get).sum() })
}
