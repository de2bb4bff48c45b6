//! Scheduler figures: how long a workload's threads waited for a cpu, how long its own cpu
//! quota held it back, and how much cpu it may use at all.
//!
//! Cpu usage alone cannot tell a workload that wants little cpu from one that wants a lot and
//! waits for it; the wait is what co-runners inflict, so the predictor needs it. The kernel keeps
//! each thread's run delay (time runnable but not running) in `/proc/<tid>/schedstat`, and the
//! cgroup's throttled time in `cpu.stat`. Run delay includes throttling, so the two together
//! separate contention (others hold the cpus) from the workload's own limit. What the workload
//! would get alone is what it wanted, up to its cap (quota, or the cpus it may run on): a
//! two-thread workload held to one core is not slowed down by a neighbour that leaves it that
//! core, however long its second thread waits.
//!
//! Run delay is per thread and threads come and go, so [`RunDelays`] keeps each thread's last
//! reading and sums only what accrued since: a thread seen for the first time counts whole (it
//! started within the interval, or the monitor did), a thread that exited takes its last partial
//! interval with it. The parsers and that bookkeeping are pure; [`read_thread_run_delays`] is the
//! file-reading edge.

use super::stats::flat_keyed;
use std::collections::HashMap;
use std::path::Path;

/// The quota-throttled time in nanoseconds from a `cpu.stat` file: v1's `throttled_time` (ns) or
/// v2's `throttled_usec`.
pub fn parse_throttled_ns(cpu_stat: &str) -> Option<u64> {
    flat_keyed(cpu_stat, "throttled_time").or_else(|| flat_keyed(cpu_stat, "throttled_usec").map(|us| us * 1000))
}

/// A cpu quota in millicores from v1's `cpu.cfs_quota_us` and `cpu.cfs_period_us` (a quota of -1
/// is none).
pub fn parse_cfs_quota_millicores(quota_us: &str, period_us: &str) -> Option<f64> {
    let quota: i64 = quota_us.trim().parse().ok()?;
    let period: u64 = period_us.trim().parse().ok()?;
    (quota > 0 && period > 0).then(|| quota as f64 * 1000.0 / period as f64)
}

/// A cpu quota in millicores from v2's `cpu.max` (`<quota> <period>`, `max` for none).
pub fn parse_cpu_max_millicores(cpu_max: &str) -> Option<f64> {
    let mut fields = cpu_max.split_whitespace();
    let quota: u64 = fields.next()?.parse().ok()?;
    let period: u64 = fields.next()?.parse().ok()?;
    (quota > 0 && period > 0).then(|| quota as f64 * 1000.0 / period as f64)
}

/// The most cpu a workload can use, in millicores: its quota, or the cpus it may run on where
/// those are fewer.
pub fn cpu_cap_millicores(quota_millicores: Option<f64>, cpus: usize) -> f64 {
    let cpus = cpus.max(1) as f64 * 1000.0;
    quota_millicores.map_or(cpus, |q| q.min(cpus))
}

/// The run delay in nanoseconds from `/proc/<tid>/schedstat` (`<on cpu ns> <run delay ns>
/// <timeslices>`).
pub fn parse_schedstat_run_delay_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().nth(1)?.parse().ok()
}

/// Each thread's last cumulative run delay, to turn readings into per-interval sums.
#[derive(Debug, Default)]
pub struct RunDelays {
    last: HashMap<u32, u64>,
}

impl RunDelays {
    /// Records a new reading (thread id, cumulative run delay in ns) of every thread now in the
    /// workload and returns the run delay accrued since the previous reading.
    pub fn advance(&mut self, now: impl IntoIterator<Item = (u32, u64)>) -> u64 {
        let mut next = HashMap::with_capacity(self.last.len());
        let mut accrued = 0u64;
        for (tid, ns) in now {
            let before = self.last.get(&tid).copied();
            accrued = accrued.saturating_add(match before {
                Some(b) => ns.saturating_sub(b),
                None => ns,
            });
            next.insert(tid, ns);
        }
        self.last = next;
        accrued
    }
}

/// Reads the run delay of every thread listed in `dir` (`cgroup.threads` in a cgroup2 directory,
/// `tasks` in a v1 one). `None` if neither file can be read; a thread that exits between the
/// listing and its `schedstat` is skipped.
pub fn read_thread_run_delays(dir: &Path) -> Option<Vec<(u32, u64)>> {
    let read = |file: &str| std::fs::read_to_string(dir.join(file));
    let listing = read("cgroup.threads").or_else(|_| read("tasks")).ok()?;
    Some(
        listing
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .filter_map(|tid| {
                let text = std::fs::read_to_string(format!("/proc/{tid}/schedstat")).ok()?;
                Some((tid, parse_schedstat_run_delay_ns(&text)?))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_time_in_both_formats() {
        let v1 = "nr_periods 120\nnr_throttled 37\nthrottled_time 1163013371\n";
        assert_eq!(parse_throttled_ns(v1), Some(1_163_013_371));
        let v2 = "usage_usec 900\nuser_usec 800\nsystem_usec 100\nnr_periods 4\nnr_throttled 2\nthrottled_usec 2500\n";
        assert_eq!(parse_throttled_ns(v2), Some(2_500_000));
        // A v2 directory without the cpu controller enabled lists usage only.
        assert_eq!(parse_throttled_ns("usage_usec 900\nuser_usec 800\nsystem_usec 100\n"), None);
    }

    #[test]
    fn quotas_in_both_formats() {
        assert_eq!(parse_cfs_quota_millicores("50000\n", "100000\n"), Some(500.0));
        assert_eq!(parse_cfs_quota_millicores("-1\n", "100000\n"), None, "no quota");
        assert_eq!(parse_cfs_quota_millicores("150000", "0"), None);
        assert_eq!(parse_cpu_max_millicores("150000 100000\n"), Some(1500.0));
        assert_eq!(parse_cpu_max_millicores("max 100000\n"), None, "no quota");
        assert_eq!(parse_cpu_max_millicores(""), None);
    }

    #[test]
    fn the_cap_is_the_quota_or_the_cpus_whichever_is_less() {
        assert_eq!(cpu_cap_millicores(Some(500.0), 2), 500.0);
        assert_eq!(cpu_cap_millicores(None, 2), 2000.0);
        assert_eq!(cpu_cap_millicores(Some(4000.0), 2), 2000.0, "a quota above the cpus caps nothing");
        assert_eq!(cpu_cap_millicores(None, 0), 1000.0, "at least one cpu");
    }

    #[test]
    fn schedstat_run_delay() {
        assert_eq!(parse_schedstat_run_delay_ns("2003838839 1975916955 319\n"), Some(1_975_916_955));
        assert_eq!(parse_schedstat_run_delay_ns("2003838839\n"), None);
        assert_eq!(parse_schedstat_run_delay_ns(""), None);
    }

    #[test]
    fn run_delay_accrues_per_thread_across_arrivals_and_exits() {
        let mut delays = RunDelays::default();
        // The first reading counts every thread's delay so far.
        assert_eq!(delays.advance([(10, 500), (11, 200)]), 700);
        // Thread 10 waited 300 more, 11 exited, 12 appeared having waited 50.
        assert_eq!(delays.advance([(10, 800), (12, 50)]), 350);
        // A tid reused by a new thread with a smaller counter never counts backwards.
        assert_eq!(delays.advance([(10, 100), (12, 50)]), 0);
        assert_eq!(delays.advance([(10, 160), (12, 90)]), 100);
        assert_eq!(delays.advance(std::iter::empty()), 0);
    }
}
