//! Enforcement: apply a decided allocation to a workload's cgroup or container, and hold it.
//!
//! The arbiter decides *what* each workload may use; this module makes the kernel (or the
//! container engine) actually impose it. Every backend sits behind one trait, [`Backend`], so the
//! negotiation loop does not care whether the host runs cgroup v1, cgroup v2, Docker or nothing
//! at all (dry run). The [`Enforcer`] on top holds each decision under its lease, falls back to
//! the workload's guarantee when the lease runs out, re-applies when someone changed the cgroup
//! behind our back (drift), and writes nothing when nothing changed.
//!
//! ## What an amount means here
//!
//! Allocations arrive as [`ResourceVector`]s. The protocol writes 0 for a resource a workload did
//! not ask for (a host that does not trade `disk_bw` decides 0 for it), so:
//!
//! * `memory` and `disk_bw` of **0 mean "not constrained"**: the limit is removed (`max`, `-1`).
//! * `cpu` of 0 means **as little CPU as the kernel allows**, not "unlimited": a best-effort
//!   workload whose guarantee is 0 and that lost the auction must not run free. The smallest CFS
//!   quota is 1 ms per 100 ms period, so 0 (or anything below 10) is enforced as 10 millicores
//!   with the minimum weight. [`Backend::expected_reading`] says so, so the drift check agrees.
//! * [`UNLIMITED`] (`u64::MAX`) asks for, and is what [`Backend::read`] reports for, a resource
//!   that is in force without any limit.
//! * `net_bw`, `llc` and `mem_bw` are enforced by no backend yet (no `tc`, no resctrl); each
//!   backend says what it enforces in [`Backend::enforces`], and the [`Enforcer`] reports every
//!   non-zero amount of any other resource as unenforced instead of dropping it silently.
//!
//! ## Cap or share: how cpu is held to an allocation
//!
//! A cpu allocation always sets the workload's weight (`cpu.shares`, `cpu.weight`, Docker's
//! `CpuShares`). What else it does depends on the workload's [`CpuEnforcement`]:
//!
//! * a **capped** workload's quota is its allocation, so it never uses more, and its weight is in
//!   proportion to it (1024 shares per core);
//! * a **sharing** workload has no quota below its limit: it may use any cpu its neighbours
//!   leave idle, and its allocation is only a weight, the allocation's divided by
//!   [`SHARING_WEIGHT_DIVISOR`]. Sharers divide contended cpu among themselves in proportion to
//!   their allocations, and a capped workload that wakes up preempts them (CFS and EEVDF favour
//!   the heavier entity on a wake-up), so cpu a neighbour bought is the neighbour's the moment
//!   it wants it, without a quota.
//! * an **idle** workload (a scavenger) has no quota below its limit either, and runs in the
//!   kernel's idle class (`cpu.idle`, Linux 5.15 and later, v1 and v2): any other workload that
//!   wakes up preempts it at once, where a heavier weight only wins once the running sharer's
//!   slice is over (EEVDF protects a running task's slice from wake-ups). Idle workloads divide
//!   contended cpu among themselves equally, whatever their allocations: the price of the
//!   immediate preemption. Where the kernel (or Docker, which has no such setting) offers no
//!   idle class, an idle workload is enforced as a sharing one.
//!
//! The backend is handed the quota, the weight and the idle flag in a [`Setting`]. Idle is the
//! default for best-effort work, because of the colocation experiment (docs/EVALUATION.md):
//!
//! * A CFS quota on best-effort work makes a latency-critical neighbour's tail *worse*, on two
//!   different machines: a throttled group comes back at the start of the next period with a
//!   burst of all its threads, and requests that arrive then wait. Quotas of "allocation plus
//!   the cpu no allocation holds" throttled the antagonists in more than half of their periods
//!   and broke the SLO more often than no control at all.
//! * With equal weights per core, a service holding 500 millicores next to best-effort work
//!   holding as much got no more wake-up priority than with no control.
//! * On one core shared by the service and the antagonists, best-effort work in the idle class
//!   broke the SLO in 18 % of the 1 s windows (three runs), sharing by weight in 29 % (two
//!   runs): the direction the scheduler's rules predict (a running sharer's slice is protected
//!   from wake-ups, an idle task's is not), though within the runs' spread. Both kept about
//!   93 % of the best-effort throughput of no control.
//!
//! `disk_bw` is the read + write bandwidth of the workload. Block-layer throttles are set per
//! device and per direction; each configured device gets the whole amount in each direction, an
//! upper bound (a workload that only reads or only writes gets all of it).

mod cgroup_files;
mod cgroup_v1;
mod cgroup_v2;
mod docker;
mod dry_run;
mod enforcer;
mod layout;

pub use cgroup_v1::CgroupV1Backend;
pub use cgroup_v2::CgroupV2Backend;
pub use docker::DockerBackend;
pub use dry_run::DryRunBackend;
pub use enforcer::{unix_ms_now, AppliedBecause, Enforcer, Outcome, TickReport};
pub use layout::{
    detect_cgroup_layout, parse_mountinfo, BlockDevice, CgroupLayout, CgroupMode, CgroupV2Mount,
};

use async_trait::async_trait;
use entente_protocol::{Resource, ResourceVector};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// An amount meaning "no limit at all": what [`Backend::read`] reports for an unconstrained
/// resource, and accepted by [`Backend::apply`] with that meaning.
pub const UNLIMITED: u64 = u64::MAX;

/// The CFS period every cgroup backend writes, in microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CPU allocation the kernel can enforce: a 1 ms quota per 100 ms period.
pub const MIN_CPU_MILLICORES: u64 = 10;

/// How a workload's cpu allocation is held (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuEnforcement {
    /// The allocation is the quota: the workload never uses more.
    Cap,
    /// The allocation is a (reduced) weight; the quota is `up_to`, the workload's limit.
    Share { up_to: u64 },
    /// The kernel's idle class; the quota is `up_to`, the workload's limit. Enforced as
    /// [`CpuEnforcement::Share`] where there is no idle class.
    Idle { up_to: u64 },
}

/// A sharing workload's cpu weight is its allocation's weight divided by this (see the module
/// documentation): 1 000 millicores shared weigh 16 shares, as much as 16 millicores capped.
pub const SHARING_WEIGHT_DIVISOR: u64 = 64;

impl CpuEnforcement {
    /// What to impose for `alloc`.
    pub fn setting(self, alloc: ResourceVector) -> Setting {
        match self {
            CpuEnforcement::Cap => Setting::capped(alloc),
            CpuEnforcement::Share { up_to } => Setting {
                alloc,
                cpu_ceiling: up_to.max(alloc.cpu),
                cpu_shares: (cpu_shares(alloc.cpu) / SHARING_WEIGHT_DIVISOR).max(MIN_CPU_SHARES),
                cpu_idle: false,
            },
            CpuEnforcement::Idle { up_to } => Setting {
                cpu_idle: true,
                ..CpuEnforcement::Share { up_to }.setting(alloc)
            },
        }
    }
}

/// What a backend imposes on one workload: the allocation (every resource's limit), the cpu
/// quota, which is the allocation unless the workload shares, and the cpu weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub alloc: ResourceVector,
    /// The most cpu the workload may use, in millicores ([`UNLIMITED`]: no quota).
    pub cpu_ceiling: u64,
    /// The cpu weight in cgroup v1 shares (1024 per core, 2..=262144); cgroup v2 and Docker
    /// convert it.
    pub cpu_shares: u64,
    /// Run in the kernel's idle class (`cpu.idle`); `cpu_shares` is then written only where
    /// there is no idle class (the kernel refuses a weight for an idle group).
    pub cpu_idle: bool,
}

impl Setting {
    /// The allocation as a ceiling: the quota is the cpu allocation, the weight in proportion.
    pub fn capped(alloc: ResourceVector) -> Setting {
        Setting { alloc, cpu_ceiling: alloc.cpu, cpu_shares: cpu_shares(alloc.cpu), cpu_idle: false }
    }
}

impl From<ResourceVector> for Setting {
    fn from(alloc: ResourceVector) -> Setting {
        Setting::capped(alloc)
    }
}

/// Where a workload lives, as a backend sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A cgroup, by its path below the hierarchy root (for v1: below each controller's mount).
    Cgroup(CgroupTarget),
    /// A container, by id or name.
    Container(String),
}

impl Target {
    /// A cgroup target from its path relative to the hierarchy root, e.g. `"entente/redis"`.
    pub fn cgroup(relative: impl Into<PathBuf>) -> Result<Target, EnforceError> {
        Ok(Target::Cgroup(CgroupTarget::new(relative)?))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Cgroup(c) => write!(f, "cgroup {}", c.relative.display()),
            Target::Container(id) => write!(f, "container {id}"),
        }
    }
}

/// A workload's cgroup: its path relative to the root of the hierarchy. The backend knows the
/// mount points, so the same target works on v1 (one mount per controller) and v2 (one mount).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupTarget {
    relative: PathBuf,
}

impl CgroupTarget {
    /// Refuses absolute paths and `..`, so a target can never point outside the hierarchy.
    pub fn new(relative: impl Into<PathBuf>) -> Result<CgroupTarget, EnforceError> {
        let relative = relative.into();
        let safe = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !safe || relative.as_os_str().is_empty() {
            return Err(EnforceError::BadTarget {
                target: relative.display().to_string(),
                reason: "a cgroup target is a non-empty path relative to the hierarchy root, without `..`",
            });
        }
        Ok(CgroupTarget { relative })
    }

    /// The path relative to the hierarchy root.
    pub fn relative(&self) -> &Path {
        &self.relative
    }

    /// The cgroup's directory under a mount point.
    pub fn under(&self, mount_point: &Path) -> PathBuf {
        mount_point.join(&self.relative)
    }
}

/// Why enforcement failed. Every variant names the file, cgroup or container involved.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error(
        "the kernel refused memory limit {value} in {path} (EBUSY): the cgroup uses more than that \
         and could not reclaim enough"
    )]
    MemoryBelowUsage { path: PathBuf, value: String },
    #[error("unexpected content {content:?} in {path}: {reason}")]
    Parse {
        path: PathBuf,
        content: String,
        reason: String,
    },
    #[error(
        "cgroup {cgroup} has no `{controller}` controller (not listed in its cgroup.controllers), \
         so {resource} cannot be enforced there; enable it in the parent's cgroup.subtree_control"
    )]
    MissingController {
        cgroup: PathBuf,
        controller: &'static str,
        resource: Resource,
    },
    #[error("cgroup {0} does not exist")]
    NoSuchCgroup(PathBuf),
    #[error("bad target {target:?}: {reason}")]
    BadTarget {
        target: String,
        reason: &'static str,
    },
    #[error("backend {backend} cannot enforce on {target}: it handles {handles} only")]
    WrongTarget {
        backend: &'static str,
        target: String,
        handles: &'static str,
    },
    #[error("no Docker engine reachable: {0}")]
    DockerUnreachable(#[source] bollard::errors::Error),
    #[error("Docker {op} of container {container}: {source}")]
    Docker {
        container: String,
        op: &'static str,
        source: bollard::errors::Error,
    },
    #[error("backend {kind} is not available on this host: {reason}")]
    Unavailable { kind: BackendKind, reason: String },
    #[error("unknown backend {0:?}: expected cgroup-v1, cgroup-v2, docker or dry-run")]
    UnknownBackend(String),
}

/// A way of enforcing allocations. Implementations must be idempotent: applying the allocation
/// that is already in force writes nothing.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The name used in host registration: `cgroup-v1`, `cgroup-v2`, `docker`, `dry-run`.
    fn name(&self) -> &'static str;

    /// The resources this backend really enforces on this host.
    fn enforces(&self) -> Vec<Resource>;

    /// Imposes `setting` on the target for every resource in [`Backend::enforces`]; the other
    /// amounts are ignored (the [`Enforcer`] reports them). See the module documentation for
    /// what 0 and [`UNLIMITED`] mean, and for the cpu weight and ceiling.
    async fn apply(&self, target: &Target, setting: &Setting) -> Result<(), EnforceError>;

    /// What is in force now, for the enforced resources (0 for the others; [`UNLIMITED`] where
    /// there is no limit). For cpu that is the quota (the ceiling), not the weight.
    async fn read(&self, target: &Target) -> Result<ResourceVector, EnforceError>;

    /// What [`Backend::read`] returns right after `apply(setting)` succeeded: the allocation with
    /// the backend's rounding (pages, the minimum quota) and its meaning of 0, for the enforced
    /// resources, 0 for the others, and the cpu ceiling for cpu. The drift check compares
    /// readings with this.
    fn expected_reading(&self, setting: &Setting) -> ResourceVector {
        standard_expected_reading(&self.enforces(), setting, 1)
    }
}

/// [`Backend::expected_reading`] for backends following the module's conventions, with memory
/// rounded down to `memory_granularity` bytes.
pub(crate) fn standard_expected_reading(
    enforced: &[Resource],
    setting: &Setting,
    memory_granularity: u64,
) -> ResourceVector {
    let mut expected = ResourceVector::ZERO;
    for &resource in enforced {
        let amount = match resource {
            Resource::Cpu => setting.cpu_ceiling,
            _ => setting.alloc.get(resource),
        };
        let reading = match resource {
            Resource::Cpu if amount == UNLIMITED => UNLIMITED,
            Resource::Cpu => amount.max(MIN_CPU_MILLICORES),
            Resource::Memory if amount == 0 || amount == UNLIMITED => UNLIMITED,
            Resource::Memory => amount / memory_granularity * memory_granularity,
            _ if amount == 0 => UNLIMITED,
            _ => amount,
        };
        set_unchecked(&mut expected, resource, reading);
    }
    expected
}

/// Sets an amount without the protocol's 2^53 cap: readings use [`UNLIMITED`].
pub(crate) fn set_unchecked(v: &mut ResourceVector, resource: Resource, amount: u64) {
    match resource {
        Resource::Cpu => v.cpu = amount,
        Resource::Memory => v.memory = amount,
        Resource::DiskBw => v.disk_bw = amount,
        Resource::NetBw => v.net_bw = amount,
        Resource::Llc => v.llc = amount,
        Resource::MemBw => v.mem_bw = amount,
    }
}

/// The CFS quota, in microseconds per [`CPU_PERIOD_US`], for a CPU allocation; `None` for no
/// quota.
pub(crate) fn cpu_quota_us(millicores: u64) -> Option<u64> {
    if millicores == UNLIMITED {
        return None;
    }
    Some(
        millicores
            .max(MIN_CPU_MILLICORES)
            .saturating_mul(CPU_PERIOD_US)
            / 1000,
    )
}

/// cgroup v1 `cpu.shares` (and Docker `CpuShares`) for a CPU allocation: 1024 per core, at
/// least the kernel's minimum of 2.
pub(crate) fn cpu_shares(millicores: u64) -> u64 {
    if millicores == UNLIMITED {
        return 1024;
    }
    (millicores.saturating_mul(1024) / 1000).clamp(MIN_CPU_SHARES, 262_144)
}

/// The smallest `cpu.shares` the kernel accepts.
const MIN_CPU_SHARES: u64 = 2;

/// The kernel page size, the granularity of memory limits.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 only for unknown names.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// The backends, by the names used in host registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    CgroupV1,
    CgroupV2,
    Docker,
    DryRun,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::CgroupV1 => "cgroup-v1",
            BackendKind::CgroupV2 => "cgroup-v2",
            BackendKind::Docker => "docker",
            BackendKind::DryRun => "dry-run",
        }
    }

    /// The cgroup backend that enforces the most on this layout: v2 when its hierarchy has the
    /// cpu or memory controller, else v1 when cpu or memory is mounted there; `None` otherwise.
    pub fn preferred_cgroup(layout: &CgroupLayout) -> Option<BackendKind> {
        let v2_useful = layout
            .v2
            .as_ref()
            .is_some_and(|v2| v2.has_controller("cpu") || v2.has_controller("memory"));
        if v2_useful {
            Some(BackendKind::CgroupV2)
        } else if layout.v1.contains_key("cpu") || layout.v1.contains_key("memory") {
            Some(BackendKind::CgroupV1)
        } else {
            None
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = EnforceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cgroup-v1" => Ok(BackendKind::CgroupV1),
            "cgroup-v2" => Ok(BackendKind::CgroupV2),
            "docker" => Ok(BackendKind::Docker),
            "dry-run" => Ok(BackendKind::DryRun),
            other => Err(EnforceError::UnknownBackend(other.to_string())),
        }
    }
}

/// Builds the backend of `kind` for this host. `block_devices` are the devices whose bandwidth
/// `disk_bw` throttles (none: `disk_bw` is not enforced). Docker connects to the engine found
/// the usual way (`DOCKER_HOST` or the local socket) and negotiates the API version.
pub async fn backend_for(
    layout: &CgroupLayout,
    kind: BackendKind,
    block_devices: &[BlockDevice],
) -> Result<Arc<dyn Backend>, EnforceError> {
    match kind {
        BackendKind::CgroupV1 => {
            if layout.v1.is_empty() {
                return Err(EnforceError::Unavailable {
                    kind,
                    reason: "no cgroup v1 controller is mounted (see /proc/self/mountinfo)".into(),
                });
            }
            Ok(Arc::new(CgroupV1Backend::new(
                layout.v1.clone(),
                block_devices.to_vec(),
            )))
        }
        BackendKind::CgroupV2 => {
            let Some(v2) = &layout.v2 else {
                return Err(EnforceError::Unavailable {
                    kind,
                    reason: "no cgroup2 hierarchy is mounted (see /proc/self/mountinfo)".into(),
                });
            };
            Ok(Arc::new(CgroupV2Backend::for_hierarchy(
                v2,
                block_devices.to_vec(),
            )))
        }
        BackendKind::Docker => Ok(Arc::new(DockerBackend::connect().await?)),
        BackendKind::DryRun => Ok(Arc::new(DryRunBackend::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(millicores: u64) -> ResourceVector {
        ResourceVector::new(millicores, 0, 0, 0)
    }

    #[test]
    fn a_capped_workload_is_held_to_its_allocation_at_full_weight() {
        let setting = CpuEnforcement::Cap.setting(cpu(500));
        assert_eq!(setting.cpu_ceiling, 500);
        assert_eq!(setting.cpu_shares, 512);
    }

    #[test]
    fn a_sharer_runs_up_to_its_limit_at_a_fraction_of_the_weight() {
        let share = CpuEnforcement::Share { up_to: 2_000 };
        assert_eq!(share.setting(cpu(300)).cpu_ceiling, 2_000);
        assert_eq!(share.setting(cpu(2_500)).cpu_ceiling, 2_500, "never below its allocation");
        // Weights keep their order among sharers, far below a capped workload's.
        assert_eq!(share.setting(cpu(2_000)).cpu_shares, 2_048 / SHARING_WEIGHT_DIVISOR);
        assert!(share.setting(cpu(1_000)).cpu_shares > share.setting(cpu(500)).cpu_shares);
        assert_eq!(share.setting(cpu(0)).cpu_shares, 2, "the kernel's minimum");
        assert!(share.setting(cpu(2_000)).cpu_shares < CpuEnforcement::Cap.setting(cpu(100)).cpu_shares);
        assert!(!share.setting(cpu(300)).cpu_idle);
        assert!(!CpuEnforcement::Cap.setting(cpu(300)).cpu_idle);
    }

    #[test]
    fn an_idle_workload_is_a_sharer_in_the_idle_class() {
        let idle = CpuEnforcement::Idle { up_to: 2_000 }.setting(cpu(300));
        let share = CpuEnforcement::Share { up_to: 2_000 }.setting(cpu(300));
        assert!(idle.cpu_idle);
        // Where there is no idle class it is enforced exactly as a sharer.
        assert_eq!(Setting { cpu_idle: false, ..idle }, share);
    }
}
