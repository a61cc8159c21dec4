//! CPU accounting of the benchmark: per-CPU busy shares from /proc/stat, this process's own
//! time, and how much other processes used, to flag disturbed measurements.

use super::*;

/// Jiffies of one CPU from /proc/stat.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuTimes {
    /// Not idle (user, nice, system, irq, softirq, steal).
    pub(crate) busy: u64,
    /// User, nice and system: time spent by tasks (not interrupts or idle).
    pub(crate) task: u64,
    pub(crate) total: u64,
}

/// Per-CPU times from /proc/stat.
pub(crate) fn cpu_times() -> Result<Vec<CpuTimes>> {
    let s = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    Ok(s.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let f = |i: usize| v.get(i).copied().unwrap_or(0);
            let total: u64 = v.iter().take(8).sum();
            CpuTimes {
                busy: total - f(3) - f(4),
                task: f(0) + f(1) + f(2),
                total,
            }
        })
        .collect())
}

/// Busy share per CPU between two [`cpu_times`] samples.
pub(crate) fn busy_between(a: &[CpuTimes], b: &[CpuTimes]) -> Vec<f64> {
    share_between(a, b, |c| c.busy)
}

/// CPU time of this process and its waited-for children (ip, nft), in jiffies.
pub(crate) fn own_cpu_time() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // After the command name (in parentheses) come state (field 3) ... utime, stime, cutime,
    // cstime (fields 14 to 17).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    Ok((11..15).map(|i| f.get(i).copied().unwrap_or(0)).sum())
}

/// CPU times and this process's own time, to tell other processes' work apart.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) cpus: Vec<CpuTimes>,
    pub(crate) own: u64,
}

pub(crate) fn snapshot() -> Result<Snapshot> {
    Ok(Snapshot {
        cpus: cpu_times()?,
        own: own_cpu_time()?,
    })
}

/// Share of the machine's CPU time that other processes used between two snapshots: user and
/// system time not spent by this process. (Packet processing is softirq time and counts for
/// nobody; a generator in a syscall is this process's system time.)
pub(crate) fn others_between(a: &Snapshot, b: &Snapshot) -> f64 {
    let task: u64 = a
        .cpus
        .iter()
        .zip(&b.cpus)
        .map(|(x, y)| y.task - x.task)
        .sum();
    let total: u64 = a
        .cpus
        .iter()
        .zip(&b.cpus)
        .map(|(x, y)| y.total - x.total)
        .sum();
    let own = b.own.saturating_sub(a.own);
    task.saturating_sub(own) as f64 / total.max(1) as f64
}

pub(crate) fn share_between(
    a: &[CpuTimes],
    b: &[CpuTimes],
    f: impl Fn(&CpuTimes) -> u64,
) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f(y) - f(x)) as f64 / (y.total - x.total).max(1) as f64)
        .collect()
}

/// Share of the machine's CPU time other processes may use before a measurement counts as
/// disturbed.
pub(crate) const DISTURBED: f64 = 0.02;

pub(crate) fn percent(v: &[f64]) -> String {
    v.iter()
        .enumerate()
        .map(|(i, b)| format!("cpu{i} {:.0}%", b * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How busy the machine is without us (one second), to flag runs disturbed by other work.
pub(crate) fn background_load() -> Result<Vec<f64>> {
    let a = cpu_times()?;
    std::thread::sleep(Duration::from_secs(1));
    Ok(busy_between(&a, &cpu_times()?))
}

/// Waits (at most a minute) until no CPU is more than 10% busy, e.g. while the kernel frees
/// the previous part's namespaces and maps; returns the last second's load and the seconds
/// waited.
pub(crate) fn settle() -> Result<(Vec<f64>, u32)> {
    let mut load = background_load()?;
    let mut waited = 1;
    while waited < 60 && load.iter().any(|b| *b > 0.1) {
        load = background_load()?;
        waited += 1;
    }
    Ok((load, waited))
}
