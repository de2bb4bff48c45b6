//! Monitoring: what a workload uses, how much it stalls, and its performance counters.
//!
//! One file per source: [`cgroup`] finds the workload's directories (v1, v2 or hybrid hosts),
//! [`stats`] parses the accounting files, [`psi`] the pressure-stall files, [`perf`] opens
//! perf-event counters with a software fallback, [`sched`] reads run delay and quota throttling,
//! and [`sampler`] ties them into a [`Monitor`] that yields one [`Sample`] per interval. [`probe`]
//! summarises what this host can measure, for the agent to log at start-up.

pub mod cgroup;
pub mod perf;
pub mod psi;
pub mod sampler;
pub mod sched;
pub mod stats;

pub use cgroup::{cgroup_of_pid, CgroupDirs, CgroupLayout, LayoutKind, ProcCgroups};
pub use perf::{PerfCounters, PerfScope};
pub use sampler::{Measured, Monitor, MonitorError, Sample, WorkloadTarget};

use entente_protocol::CounterSource;
use std::path::Path;
use std::time::Duration;

/// The default sampling interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Where PSI figures can come from on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsiCapability {
    /// Per-cgroup pressure files in the cgroup2 hierarchy (and the host's).
    PerCgroup,
    /// Only `/proc/pressure`: figures are the host's.
    HostOnly,
    None,
}

/// What this host lets the monitor measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub cgroups: LayoutKind,
    pub psi: PsiCapability,
    pub counters: CounterSource,
}

impl std::fmt::Display for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cgroups={:?} psi={:?} counters={:?}", self.cgroups, self.psi, self.counters)
    }
}

/// Probes the host: its cgroup layout, where PSI is available, and what perf events open.
pub fn probe() -> Capabilities {
    let layout = CgroupLayout::read();
    let host_psi = Path::new(psi::HOST_PRESSURE_DIR).join("cpu").is_file()
        && std::fs::read_to_string(Path::new(psi::HOST_PRESSURE_DIR).join("cpu")).is_ok();
    // The hierarchy root has no pressure files on some kernels, so look at our own cgroup too.
    let own_v2 = cgroup_of_pid(std::process::id()).ok().and_then(|p| CgroupDirs::for_proc(&layout, &p).unified);
    let cgroup_psi = layout.v2.as_ref().is_some_and(|m| {
        [Some(m.mount_point.clone()), own_v2].into_iter().flatten().any(|d| d.join("cpu.pressure").is_file())
    });
    let psi = match (cgroup_psi, host_psi) {
        (true, _) => PsiCapability::PerCgroup,
        (false, true) => PsiCapability::HostOnly,
        (false, false) => PsiCapability::None,
    };
    Capabilities { cgroups: layout.kind(), psi, counters: perf::probe_counter_source() }
}
