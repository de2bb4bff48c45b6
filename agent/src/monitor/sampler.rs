//! The monitor of one workload: reads its cgroup files, PSI and counters every interval and
//! turns cumulative counters into rates.
//!
//! This is the thin file-reading edge over the pure parsers in [`super::stats`],
//! [`super::psi`] and [`super::cgroup`]. Source preference per figure: v1 controller directory
//! if the workload has one, else the cgroup2 directory (which carries `cpu.stat` always, and
//! `memory.current`/`io.stat` where those controllers are enabled). Network is counted per
//! network namespace through `/proc/<pid>/net/dev` of a member process, because cgroups do not
//! count network traffic; a workload in the host's namespace therefore reports the host's traffic.
//!
//! A workload whose cgroup is a hierarchy root (a process in `/`) is the whole host as far as
//! cgroups can tell: its cpu, memory and disk figures are host-wide, and PSI is labelled `Host`.
//!
//! Rates are deltas over a monotonic clock. The first sample after creation has no previous
//! reading: its rates are 0 and [`Sample::interval`] is `None`, so the caller can skip publishing
//! it (the agent does). A counter that went backwards (cgroup recreated, member pid changed
//! namespace) gives a rate of 0 for that interval rather than a negative or huge figure.

use super::cgroup::{cgroup_of_pid, CgroupDirs, CgroupLayout};
use super::perf::{online_cpus, parse_cpu_list, PerfCounters, PerfScope};
use super::psi::read_pressure;
use super::sched::{self, RunDelays};
use super::stats::{self, IoBytes, NetBytes};
use entente_protocol::{CounterSource, Counters, Pressure, Scheduler, Usage};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How the monitor finds a workload: its cgroup path, its PIDs, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadTarget {
    /// Path relative to every cgroup mount's root, e.g. `entente/redis`.
    pub cgroup: Option<String>,
    /// Member processes: used to find the cgroup when none is given, for network counters, and
    /// for per-PID perf counters when cgroup-scoped ones cannot be opened.
    pub pids: Vec<u32>,
}

/// Why a monitor could not be created or sampled.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("the workload target names neither a cgroup nor a pid")]
    EmptyTarget,
    #[error("cannot read the cgroups of pid {pid}: {source}")]
    Pid { pid: u32, source: std::io::Error },
    #[error("cgroup {0:?} exists in no mounted hierarchy")]
    NoCgroup(String),
    #[error("no cpu accounting readable for the workload (tried {0:?})")]
    NoCpu(Vec<PathBuf>),
}

/// Which usage figures a sample really measured. An unmeasured figure is reported as 0 in
/// [`Usage`] (the wire type has no null there), so the caller must look here before trusting it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measured {
    pub cpu: bool,
    pub memory: bool,
    pub disk: bool,
    pub net: bool,
}

/// One interval's measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub usage: Usage,
    pub pressure: Pressure,
    pub counters: Counters,
    pub scheduler: Scheduler,
    /// Time since the previous sample; `None` for the first, whose rates are 0.
    pub interval: Option<Duration>,
    pub measured: Measured,
}

/// Cumulative readings at one instant.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    cpu_ns: Option<u64>,
    io: Option<IoBytes>,
    net: Option<NetBytes>,
    throttled_ns: Option<u64>,
}

/// Monitors one workload.
pub struct Monitor {
    dirs: CgroupDirs,
    pids: Vec<u32>,
    perf: PerfCounters,
    run_delays: RunDelays,
    last: Option<Reading>,
}

impl Monitor {
    /// A monitor for the workload at cgroup path `path` (relative to each mount's root).
    pub fn for_cgroup(path: &str) -> Result<Monitor, MonitorError> {
        Monitor::new(&CgroupLayout::read(), WorkloadTarget { cgroup: Some(path.to_owned()), pids: Vec::new() })
    }

    /// A monitor for the workload that process `pid` (a container's init, say) belongs to.
    pub fn for_pid(pid: u32) -> Result<Monitor, MonitorError> {
        Monitor::new(&CgroupLayout::read(), WorkloadTarget { cgroup: None, pids: vec![pid] })
    }

    /// A monitor for `target` under an explicit layout. The cgroup path, if given, wins over the
    /// PIDs' memberships; PIDs still serve network and per-PID counters.
    pub fn new(layout: &CgroupLayout, target: WorkloadTarget) -> Result<Monitor, MonitorError> {
        let dirs = match (&target.cgroup, target.pids.first()) {
            (Some(path), _) => {
                let dirs = CgroupDirs::for_path(layout, path).existing();
                if dirs.is_empty() {
                    return Err(MonitorError::NoCgroup(path.clone()));
                }
                dirs
            }
            (None, Some(&pid)) => {
                let procs = cgroup_of_pid(pid).map_err(|source| MonitorError::Pid { pid, source })?;
                CgroupDirs::for_proc(layout, &procs).existing()
            }
            (None, None) => return Err(MonitorError::EmptyTarget),
        };
        // The hierarchy root's figures are the host's, not the workload's: don't read PSI there
        // as if it were per-cgroup (psi falls back to /proc/pressure, labelled Host).
        let perf_dir = dirs.unified.as_deref().filter(|_| !dirs.unified_is_root);
        let perf_pids = if target.pids.is_empty() { member_pids(&dirs) } else { target.pids.clone() };
        let perf = PerfCounters::open(perf_dir, &perf_pids);
        let monitor = Monitor { dirs, pids: target.pids, perf, run_delays: RunDelays::default(), last: None };
        if monitor.read_cpu_ns().is_none() {
            return Err(MonitorError::NoCpu(monitor.cpu_files()));
        }
        Ok(monitor)
    }

    /// The directories this monitor reads.
    pub fn dirs(&self) -> &CgroupDirs {
        &self.dirs
    }

    /// Where the counters come from, fixed when the monitor was created.
    pub fn counter_source(&self) -> CounterSource {
        self.perf.source()
    }

    /// Whether counters are cgroup-scoped or per PID.
    pub fn counter_scope(&self) -> PerfScope {
        self.perf.scope()
    }

    /// Measures the workload now. Fails only if cpu accounting, the one figure every layout
    /// has, cannot be read (the cgroup was removed).
    pub fn sample(&mut self) -> Result<Sample, MonitorError> {
        let now = Instant::now();
        let cpu_ns = self.read_cpu_ns();
        if cpu_ns.is_none() {
            return Err(MonitorError::NoCpu(self.cpu_files()));
        }
        // Run delay is not a cumulative reading but what accrued since the last one, per thread.
        let run_delay_ns = self.read_run_delay_ns();
        let reading = Reading {
            at: now,
            cpu_ns,
            io: self.read_io(),
            net: self.read_net(),
            throttled_ns: self.read_throttled_ns(),
        };
        let memory = self.read_memory();
        let pressure = read_pressure(self.dirs.unified.as_deref().filter(|_| !self.dirs.unified_is_root));

        let elapsed = self.last.map(|last| now.duration_since(last.at)).filter(|d| !d.is_zero());
        let secs = elapsed.map(|d| d.as_secs_f64());
        let rate = |now: Option<u64>, before: Option<u64>| -> f64 {
            match (now, before, secs) {
                (Some(n), Some(b), Some(s)) => n.saturating_sub(b) as f64 / s,
                _ => 0.0,
            }
        };
        let last = self.last;
        let prev = |f: fn(&Reading) -> Option<u64>| last.as_ref().and_then(f);
        let usage = Usage {
            // ns of cpu per s of wall time / 1e6 = millicores.
            cpu_millicores: rate(reading.cpu_ns, prev(|r| r.cpu_ns)) / 1e6,
            memory_bytes: memory.unwrap_or(0) as f64,
            disk_read_bps: rate(reading.io.map(|i| i.read), prev(|r| r.io.map(|i| i.read))),
            disk_write_bps: rate(reading.io.map(|i| i.write), prev(|r| r.io.map(|i| i.write))),
            net_rx_bps: rate(reading.net.map(|n| n.rx), prev(|r| r.net.map(|n| n.rx))),
            net_tx_bps: rate(reading.net.map(|n| n.tx), prev(|r| r.net.map(|n| n.tx))),
        };
        let counters = self.perf.read_rates(secs);
        // ns per s / 1e6 = ms per s. Both figures are null when unreadable, or on the first sample
        // (which has no `secs`).
        let per_second = |ns: Option<u64>| secs.zip(ns).map(|(s, ns)| ns as f64 / s / 1e6);
        let quota = self.read_cpu_quota_millicores();
        let scheduler = Scheduler {
            run_delay_ms: per_second(run_delay_ns),
            throttled_ms: per_second(
                reading.throttled_ns.zip(prev(|r| r.throttled_ns)).map(|(n, b)| n.saturating_sub(b)),
            ),
            cpu_quota_millicores: quota,
            cpu_cap_millicores: Some(sched::cpu_cap_millicores(quota, self.usable_cpus())),
        };
        self.last = Some(reading);
        Ok(Sample {
            usage,
            pressure,
            counters,
            scheduler,
            interval: elapsed,
            measured: Measured {
                cpu: true,
                memory: memory.is_some(),
                disk: reading.io.is_some(),
                net: reading.net.is_some(),
            },
        })
    }

    fn cpu_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.dirs.cpuacct.iter().map(|d| d.join("cpuacct.usage")).collect();
        files.extend(self.dirs.unified.iter().map(|d| d.join("cpu.stat")));
        files
    }

    fn read_cpu_ns(&self) -> Option<u64> {
        let v1 = self.dirs.cpuacct.as_deref().and_then(|d| read(d, "cpuacct.usage"));
        v1.and_then(|t| stats::parse_cpuacct_usage_ns(&t)).or_else(|| {
            let text = read(self.dirs.unified.as_deref()?, "cpu.stat")?;
            stats::parse_cpu_stat_usage_ns(&text)
        })
    }

    /// Quota throttling: the v1 `cpu` controller's `cpu.stat`, else the cgroup2 one (which
    /// counts it only where the cpu controller is enabled).
    fn read_throttled_ns(&self) -> Option<u64> {
        let v1 = self.dirs.cpu.as_deref().and_then(|d| read(d, "cpu.stat")).and_then(|t| sched::parse_throttled_ns(&t));
        v1.or_else(|| {
            let d = self.dirs.unified.as_deref().filter(|_| !self.dirs.unified_is_root)?;
            sched::parse_throttled_ns(&read(d, "cpu.stat")?)
        })
    }

    /// The cpu quota: the v1 `cpu` controller's CFS files, else the cgroup2 `cpu.max` (present
    /// where the cpu controller is enabled). The hierarchy root has none.
    fn read_cpu_quota_millicores(&self) -> Option<f64> {
        let v1 = self.dirs.cpu.as_deref().and_then(|d| {
            sched::parse_cfs_quota_millicores(&read(d, "cpu.cfs_quota_us")?, &read(d, "cpu.cfs_period_us")?)
        });
        v1.or_else(|| {
            let d = self.dirs.unified.as_deref().filter(|_| !self.dirs.unified_is_root)?;
            sched::parse_cpu_max_millicores(&read(d, "cpu.max")?)
        })
    }

    /// The cpus the workload may run on: its cgroup2 cpuset where that controller is enabled,
    /// else every online cpu of the host.
    fn usable_cpus(&self) -> usize {
        let cpuset = self.dirs.unified.as_deref().filter(|_| !self.dirs.unified_is_root).and_then(|d| {
            let cpus = parse_cpu_list(&read(d, "cpuset.cpus.effective")?);
            (!cpus.is_empty()).then_some(cpus.len())
        });
        cpuset.unwrap_or_else(|| online_cpus().len())
    }

    /// The run delay of the workload's threads since the last reading. Not read for a workload at
    /// the cgroup2 root: that would be every thread of the host.
    fn read_run_delay_ns(&mut self) -> Option<u64> {
        let dir = match (&self.dirs.unified, self.dirs.unified_is_root) {
            (Some(d), false) => d.as_path(),
            (Some(_), true) => return None,
            (None, _) => self.dirs.cpuacct.as_deref().or(self.dirs.cpu.as_deref())?,
        };
        let threads = sched::read_thread_run_delays(dir)?;
        Some(self.run_delays.advance(threads))
    }

    fn read_memory(&self) -> Option<u64> {
        if let Some(d) = self.dirs.memory.as_deref() {
            if let (Some(usage), Some(stat)) = (read(d, "memory.usage_in_bytes"), read(d, "memory.stat")) {
                return stats::working_set_bytes(&usage, &stat, true);
            }
        }
        let d = self.dirs.unified.as_deref()?;
        stats::working_set_bytes(&read(d, "memory.current")?, &read(d, "memory.stat").unwrap_or_default(), false)
    }

    fn read_io(&self) -> Option<IoBytes> {
        if let Some(d) = self.dirs.blkio.as_deref() {
            // The recursive file includes child cgroups, like the cpu and memory figures do.
            let text = read(d, "blkio.throttle.io_service_bytes_recursive")
                .or_else(|| read(d, "blkio.throttle.io_service_bytes"));
            if let Some(text) = text {
                return Some(stats::parse_blkio_service_bytes(&text));
            }
        }
        read(self.dirs.unified.as_deref()?, "io.stat").map(|t| stats::parse_io_stat(&t))
    }

    fn read_net(&self) -> Option<NetBytes> {
        let pid = self
            .pids
            .iter()
            .copied()
            .find(|p| Path::new(&format!("/proc/{p}")).exists())
            .or_else(|| member_pids(&self.dirs).first().copied())?;
        std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok().map(|t| stats::parse_net_dev(&t))
    }
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// The processes currently in the workload's cgroup (first directory that lists any).
fn member_pids(dirs: &CgroupDirs) -> Vec<u32> {
    let unified = dirs.unified.as_deref().filter(|_| !dirs.unified_is_root);
    [dirs.cpuacct.as_deref(), unified, dirs.memory.as_deref(), dirs.blkio.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|d| read(d, "cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<u32>>())
        .find(|p| !p.is_empty())
        .unwrap_or_default()
}
