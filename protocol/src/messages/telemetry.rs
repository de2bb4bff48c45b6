//! Telemetry: what one workload used during the last interval, as its agent measured it.
//!
//! The same sample feeds the predictor's model and the agent's own strategy, so the fields are
//! exactly the model's features. Figures a host cannot measure are `null`, never a made-up zero,
//! and the sample says where its PSI and counter figures came from.

use crate::codec::Message;
use crate::ids::{HostId, WorkloadId};
use crate::validate::{check_non_negative, check_optional, ValidationError};
use serde::{Deserialize, Serialize};

/// Rates are capped here only to reject garbage: 2^53 is beyond any real device.
pub const MAX_RATE: f64 = 9.007_199_254_740_992e15;

/// Resource usage over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Average CPU use, in millicores.
    pub cpu_millicores: f64,
    /// Resident memory at the end of the interval, in bytes.
    pub memory_bytes: f64,
    pub disk_read_bps: f64,
    pub disk_write_bps: f64,
    pub net_rx_bps: f64,
    pub net_tx_bps: f64,
}

impl Usage {
    pub(crate) fn validate(&self, field: &str) -> Result<(), ValidationError> {
        for (name, v) in [
            ("cpu_millicores", self.cpu_millicores),
            ("memory_bytes", self.memory_bytes),
            ("disk_read_bps", self.disk_read_bps),
            ("disk_write_bps", self.disk_write_bps),
            ("net_rx_bps", self.net_rx_bps),
            ("net_tx_bps", self.net_tx_bps),
        ] {
            check_non_negative(&format!("{field}.{name}"), v, MAX_RATE)?;
        }
        Ok(())
    }
}

/// Where pressure-stall figures were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PsiSource {
    /// The workload's own cgroup2 directory.
    Cgroup,
    /// `/proc/pressure`: the whole host (the workload has no cgroup2 directory).
    Host,
    /// Not available on this kernel.
    Unavailable,
}

/// Pressure-stall `avg10` percentages (0..=100).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    pub source: PsiSource,
    pub cpu_some: Option<f64>,
    pub cpu_full: Option<f64>,
    pub memory_some: Option<f64>,
    pub memory_full: Option<f64>,
    pub io_some: Option<f64>,
    pub io_full: Option<f64>,
}

/// Where performance-counter figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterSource {
    /// Hardware counters from the PMU (and software counters too).
    Hardware,
    /// Software counters only: the host has no PMU.
    Software,
    /// No perf events at all (not permitted, or not supported).
    Unavailable,
}

/// Performance-counter rates, per second, over the interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub source: CounterSource,
    pub instructions: Option<f64>,
    pub cycles: Option<f64>,
    pub llc_misses: Option<f64>,
    pub branch_misses: Option<f64>,
    /// Milliseconds of CPU time per second.
    pub task_clock_ms: Option<f64>,
    pub context_switches: Option<f64>,
    pub page_faults: Option<f64>,
    pub cpu_migrations: Option<f64>,
}

/// Scheduler figures: how long the workload waited for a cpu, and how long its own quota held it
/// back, in milliseconds per second of the interval (summed over its threads, so a workload with
/// several threads can wait more than 1000 ms per second).
///
/// They separate the two reasons a workload gets less cpu than it wants: waiting for a cpu that
/// others hold (contention, which co-runners cause) and being throttled by its own cpu limit
/// (which they do not). The cpu the workload may use at all (its quota, and the cpus it can run
/// on) says how much of what it wanted it would get alone, which is what its slowdown is measured
/// against. Samples from agents older than any of these figures decode with them `null`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Scheduler {
    /// Time the workload's threads were runnable but not running (`/proc/<tid>/schedstat`'s run
    /// delay), throttled time included: ms per s.
    pub run_delay_ms: Option<f64>,
    /// Time the workload's cgroup was throttled by its cpu quota (`cpu.stat`): ms per s.
    pub throttled_ms: Option<f64>,
    /// The workload's cpu quota at the end of the interval, in millicores; `null` when it has none.
    #[serde(default)]
    pub cpu_quota_millicores: Option<f64>,
    /// The most cpu the workload can use, in millicores: its quota, or the cpus it may run on
    /// (its cpuset, else the host's online cpus) where those are fewer.
    #[serde(default)]
    pub cpu_cap_millicores: Option<f64>,
}

/// One workload's measurements over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySample {
    pub host: HostId,
    pub workload: WorkloadId,
    /// End of the interval, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    pub interval_ms: u32,
    pub usage: Usage,
    pub pressure: Pressure,
    pub counters: Counters,
    #[serde(default)]
    pub scheduler: Scheduler,
}

impl Message for TelemetrySample {
    const KIND: &'static str = "telemetry";
    fn validate(&self) -> Result<(), ValidationError> {
        if self.interval_ms == 0 {
            return Err(ValidationError::Empty { field: "interval_ms".into() });
        }
        self.usage.validate("usage")?;
        let p = &self.pressure;
        for (name, v) in [
            ("cpu_some", p.cpu_some),
            ("cpu_full", p.cpu_full),
            ("memory_some", p.memory_some),
            ("memory_full", p.memory_full),
            ("io_some", p.io_some),
            ("io_full", p.io_full),
        ] {
            check_optional(&format!("pressure.{name}"), v, 100.0)?;
        }
        let c = &self.counters;
        for (name, v) in [
            ("instructions", c.instructions),
            ("cycles", c.cycles),
            ("llc_misses", c.llc_misses),
            ("branch_misses", c.branch_misses),
            ("task_clock_ms", c.task_clock_ms),
            ("context_switches", c.context_switches),
            ("page_faults", c.page_faults),
            ("cpu_migrations", c.cpu_migrations),
        ] {
            check_optional(&format!("counters.{name}"), v, MAX_RATE)?;
        }
        let s = &self.scheduler;
        for (name, v) in [
            ("run_delay_ms", s.run_delay_ms),
            ("throttled_ms", s.throttled_ms),
            ("cpu_quota_millicores", s.cpu_quota_millicores),
            ("cpu_cap_millicores", s.cpu_cap_millicores),
        ] {
            check_optional(&format!("scheduler.{name}"), v, MAX_RATE)?;
        }
        Ok(())
    }
}
