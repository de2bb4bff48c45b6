//! Performance counters for one workload through perf events.
//!
//! Hardware counters (instructions, cycles, LLC misses, branch misses) need a PMU, which many
//! virtual machines do not expose (opening one fails with `ENOENT`). The agent then falls back to
//! the kernel's software counters (task clock, context switches, page faults, migrations) and
//! says so in every sample through [`CounterSource`]; if even those cannot be opened (perf
//! forbidden by `perf_event_paranoid` or a seccomp profile) it reports `Unavailable`. Nothing here
//! ever fails the monitor.
//!
//! Scope: counting is per cgroup where possible (the cgroup2 directory's fd, one counter per
//! online CPU, since the kernel only counts cgroups per CPU), which sees every present and future
//! process of the workload. Where that cannot be opened (no cgroup2 directory, or the kernel
//! refuses), counters are opened per listed PID with `inherit`, which sees the process and the
//! children and threads it creates after the counter was opened, but not threads it already had.
//!
//! LLC misses are `PERF_COUNT_HW_CACHE_MISSES`, which on x86 and most ARM cores counts last-level
//! cache misses.

use entente_protocol::{CounterSource, Counters};
use perf_event::events::{Event, Hardware, Software};
use perf_event::{Builder, Counter};
use std::fs::File;
use std::path::Path;

/// How a [`PerfCounters`] set is attached to the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerfScope {
    /// Per-CPU counters on the workload's cgroup2 directory.
    Cgroup,
    /// Per-PID counters with `inherit`.
    Pids,
    /// Nothing opened.
    None,
}

/// Which counter a slot measures, in the order of [`Counters`]' fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Instructions,
    Cycles,
    LlcMisses,
    BranchMisses,
    TaskClock,
    ContextSwitches,
    PageFaults,
    CpuMigrations,
}

const HARDWARE: [(Slot, Hardware); 4] = [
    (Slot::Instructions, Hardware::INSTRUCTIONS),
    (Slot::Cycles, Hardware::CPU_CYCLES),
    (Slot::LlcMisses, Hardware::CACHE_MISSES),
    (Slot::BranchMisses, Hardware::BRANCH_MISSES),
];

const SOFTWARE: [(Slot, Software); 4] = [
    (Slot::TaskClock, Software::TASK_CLOCK),
    (Slot::ContextSwitches, Software::CONTEXT_SWITCHES),
    (Slot::PageFaults, Software::PAGE_FAULTS),
    (Slot::CpuMigrations, Software::CPU_MIGRATIONS),
];

/// One logical counter: the same event opened on several CPUs or PIDs, summed.
struct SlotCounters {
    slot: Slot,
    counters: Vec<Counter>,
    /// Sum at the previous read, scaled for multiplexing.
    last: Option<f64>,
}

impl SlotCounters {
    /// Sums the counters, scaling each by enabled/running time when the kernel multiplexed it.
    fn read_total(&mut self) -> Option<f64> {
        let mut total = 0.0;
        for c in &mut self.counters {
            let ct = c.read_count_and_time().ok()?;
            let scaled = if ct.time_running == 0 {
                0.0
            } else if ct.time_running < ct.time_enabled {
                ct.count as f64 * ct.time_enabled as f64 / ct.time_running as f64
            } else {
                ct.count as f64
            };
            total += scaled;
        }
        Some(total)
    }
}

/// The open counters of one workload.
pub struct PerfCounters {
    slots: Vec<SlotCounters>,
    source: CounterSource,
    scope: PerfScope,
    /// Kept open: the cgroup-scoped counters refer to it.
    _cgroup_dir: Option<File>,
}

/// Online CPU numbers from `/sys/devices/system/cpu/online` (`0-3,6,8-9`).
pub fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(part.trim().parse::<usize>().ok()),
        }
    }
    cpus
}

/// The host's online cpus (all of them as numbered by `available_parallelism` if the file is
/// unreadable).
pub fn online_cpus() -> Vec<usize> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|t| parse_cpu_list(&t))
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect())
}

/// A builder for `event` that counts kernel time too: a workload's system calls and page
/// faults are part of what it costs the host.
fn builder_for<E: Event>(event: E) -> Builder<'static> {
    let mut b = Builder::new(event);
    b.exclude_kernel(false).exclude_hv(true);
    b
}

/// Opens `event` on every target; all or nothing, so a slot never silently covers a subset.
fn open_event<E: Event + Copy>(event: E, target: &Target<'_>) -> std::io::Result<Vec<Counter>> {
    let mut counters = Vec::new();
    match target {
        Target::Cgroup { dir, cpus } => {
            for &cpu in cpus.iter() {
                let mut b = builder_for(event);
                b.observe_cgroup(dir).one_cpu(cpu);
                counters.push(b.build()?);
            }
        }
        Target::Pids(pids) => {
            for &pid in pids.iter() {
                let mut b = builder_for(event);
                b.observe_pid(pid as libc::pid_t).any_cpu().inherit(true);
                counters.push(b.build()?);
            }
        }
    }
    for c in &mut counters {
        c.enable()?;
    }
    Ok(counters)
}

enum Target<'a> {
    Cgroup { dir: &'a File, cpus: Vec<usize> },
    Pids(&'a [u32]),
}

/// Opens one set of slots on `target`: hardware and software if the PMU allows, software only
/// otherwise; `None` if not even the software counters open.
fn open_slots(target: &Target<'_>) -> Option<(Vec<SlotCounters>, CounterSource)> {
    let mut software = Vec::new();
    for (slot, event) in SOFTWARE {
        let counters = open_event(event, target).ok()?;
        software.push(SlotCounters { slot, counters, last: None });
    }
    let mut hardware = Vec::new();
    for (slot, event) in HARDWARE {
        match open_event(event, target) {
            Ok(counters) => hardware.push(SlotCounters { slot, counters, last: None }),
            Err(_) => {
                hardware.clear();
                break;
            }
        }
    }
    if hardware.is_empty() {
        Some((software, CounterSource::Software))
    } else {
        hardware.extend(software);
        Some((hardware, CounterSource::Hardware))
    }
}

impl PerfCounters {
    /// Opens counters for a workload: cgroup-scoped on `cgroup2_dir` if given and possible,
    /// else per PID. Never fails: the result says what it could open.
    pub fn open(cgroup2_dir: Option<&Path>, pids: &[u32]) -> PerfCounters {
        if let Some(dir) = cgroup2_dir.and_then(|d| File::open(d).ok()) {
            let target = Target::Cgroup { dir: &dir, cpus: online_cpus() };
            if let Some((slots, source)) = open_slots(&target) {
                return PerfCounters { slots, source, scope: PerfScope::Cgroup, _cgroup_dir: Some(dir) };
            }
        }
        if !pids.is_empty() {
            if let Some((slots, source)) = open_slots(&Target::Pids(pids)) {
                return PerfCounters { slots, source, scope: PerfScope::Pids, _cgroup_dir: None };
            }
        }
        PerfCounters::unavailable()
    }

    /// A set with nothing open.
    pub fn unavailable() -> PerfCounters {
        PerfCounters {
            slots: Vec::new(),
            source: CounterSource::Unavailable,
            scope: PerfScope::None,
            _cgroup_dir: None,
        }
    }

    pub fn source(&self) -> CounterSource {
        self.source
    }

    pub fn scope(&self) -> PerfScope {
        self.scope
    }

    /// Reads every counter and returns per-second rates over `elapsed_s`. Counters read for the
    /// first time have no rate yet (`None`), nor do counters that failed to read.
    pub fn read_rates(&mut self, elapsed_s: Option<f64>) -> Counters {
        let mut out = Counters {
            source: self.source,
            instructions: None,
            cycles: None,
            llc_misses: None,
            branch_misses: None,
            task_clock_ms: None,
            context_switches: None,
            page_faults: None,
            cpu_migrations: None,
        };
        for s in &mut self.slots {
            let total = s.read_total();
            let rate = match (total, s.last, elapsed_s) {
                (Some(now), Some(before), Some(dt)) if dt > 0.0 => Some((now - before).max(0.0) / dt),
                _ => None,
            };
            if total.is_some() {
                s.last = total;
            }
            let Some(rate) = rate else { continue };
            match s.slot {
                Slot::Instructions => out.instructions = Some(rate),
                Slot::Cycles => out.cycles = Some(rate),
                Slot::LlcMisses => out.llc_misses = Some(rate),
                Slot::BranchMisses => out.branch_misses = Some(rate),
                // task-clock counts nanoseconds; the wire figure is milliseconds per second.
                Slot::TaskClock => out.task_clock_ms = Some(rate / 1e6),
                Slot::ContextSwitches => out.context_switches = Some(rate),
                Slot::PageFaults => out.page_faults = Some(rate),
                Slot::CpuMigrations => out.cpu_migrations = Some(rate),
            }
        }
        out
    }
}

/// What this host's perf events allow, probed on the calling process: hardware if a PMU counter
/// opens, software if only the software clock does, unavailable otherwise.
pub fn probe_counter_source() -> CounterSource {
    let hardware = builder_for(Hardware::INSTRUCTIONS).build().is_ok();
    if hardware {
        return CounterSource::Hardware;
    }
    if builder_for(Software::TASK_CLOCK).build().is_ok() {
        CounterSource::Software
    } else {
        CounterSource::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-1\n"), vec![0, 1]);
        assert_eq!(parse_cpu_list("0-2,5,7-8"), vec![0, 1, 2, 5, 7, 8]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
    }

    #[test]
    fn unavailable_set_reports_no_figures() {
        let mut p = PerfCounters::unavailable();
        let c = p.read_rates(Some(1.0));
        assert_eq!(c.source, CounterSource::Unavailable);
        assert_eq!(c.task_clock_ms, None);
        assert_eq!(p.scope(), PerfScope::None);
    }
}
