//! The agent's configuration: which host it speaks for, how it reaches NATS, how it enforces,
//! and the workloads it negotiates for.
//!
//! Settings come from command-line flags, then `ENTENTE_*` environment variables, then an
//! optional TOML file, in that order of precedence (clap resolves flags and environment; this
//! module fills what they left unset from the file). Workloads are declared in the file; each
//! names how to find it (a cgroup, a PID, a container, or a command the agent starts) and its
//! spec. Everything is checked here, at start-up, so a typo is one clear error and not a
//! misbehaving negotiation later.

use crate::enforce::CpuEnforcement;
use entente_protocol::{HostId, ResourceVector, Slo, TenantId, WorkloadClass, WorkloadId};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// How a workload is found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadSource {
    /// An existing cgroup, as a path relative to the hierarchy root (`system.slice/redis.service`).
    Cgroup(String),
    /// An existing process (and whatever cgroup it lives in).
    Pid(u32),
    /// A Docker container, by name or id.
    Container(String),
    /// A command the agent starts itself, in a fresh cgroup `entente/<workload>`.
    Command(Vec<String>),
}

/// How a workload's cpu is held to its allocation (`cpu_enforcement` in the file,
/// `entente.cpu_enforcement` on a container; see `enforce` for the measurements behind the
/// default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuMode {
    /// The allocation is a ceiling: the workload never uses more cpu than it was given.
    Cap,
    /// The allocation is a reduced weight: the workload may use any cpu its neighbours leave
    /// idle, up to its limit, and yields to capped neighbours when they want theirs.
    Share,
    /// As `Share`, in the kernel's idle class: every other workload preempts it the moment it
    /// wakes, and idle workloads divide what is left equally.
    Idle,
}

impl CpuMode {
    /// The default of a class: best-effort work scavenges (idle), the rest is capped.
    pub fn default_for(class: WorkloadClass) -> CpuMode {
        match class {
            WorkloadClass::BestEffort => CpuMode::Idle,
            WorkloadClass::LatencyCritical | WorkloadClass::Batch => CpuMode::Cap,
        }
    }

    /// Parses `cap`, `share` or `idle`.
    pub fn parse(text: &str) -> Result<CpuMode, String> {
        match text {
            "cap" => Ok(CpuMode::Cap),
            "share" => Ok(CpuMode::Share),
            "idle" => Ok(CpuMode::Idle),
            other => Err(format!("cpu enforcement {other:?} is not cap, share or idle")),
        }
    }
}

/// One workload as configured: where it is and what it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadConfig {
    pub id: WorkloadId,
    pub source: WorkloadSource,
    pub tenant: TenantId,
    pub class: WorkloadClass,
    pub priority: u8,
    pub slo: Slo,
    pub estimated_execution_s: Option<f64>,
    pub guaranteed: ResourceVector,
    pub limit: ResourceVector,
    pub budget: f64,
    pub cpu_mode: CpuMode,
}

/// The workload table as written in the TOML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    id: String,
    cgroup: Option<String>,
    pid: Option<u32>,
    container: Option<String>,
    command: Option<Vec<String>>,
    #[serde(default = "default_tenant")]
    tenant: String,
    class: WorkloadClass,
    #[serde(default = "default_priority")]
    priority: u8,
    #[serde(default = "default_slo")]
    slo: Slo,
    estimated_execution_s: Option<f64>,
    #[serde(default)]
    guaranteed: ResourceVector,
    limit: ResourceVector,
    #[serde(default = "default_budget")]
    budget: f64,
    /// `cap` or `share`; by default from the class ([`CpuMode::default_for`]).
    cpu_enforcement: Option<CpuMode>,
}

fn default_tenant() -> String {
    "default".into()
}
fn default_priority() -> u8 {
    50
}
fn default_slo() -> Slo {
    Slo::None
}
fn default_budget() -> f64 {
    1000.0
}

/// The settings the file may hold; flags and environment override each.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub host: Option<String>,
    pub nats_url: Option<String>,
    pub prefix: Option<String>,
    pub interval_ms: Option<u64>,
    pub backend: Option<String>,
    pub capacity: Option<ResourceVector>,
    /// Where the agent creates cgroups for the commands it starts (default `entente`).
    pub cgroup_parent: Option<String>,
    /// Manage every Docker container that carries an `entente.class` label.
    pub discover_containers: Option<bool>,
    #[serde(default, rename = "workload")]
    workloads: Vec<RawWorkload>,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("workload {workload}: {message}")]
    Workload { workload: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl FileSettings {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<FileSettings, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        FileSettings::parse(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<FileSettings, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks and converts the workload tables for `host`.
    pub fn workloads(&self, host: &HostId) -> Result<Vec<WorkloadConfig>, ConfigError> {
        let mut out: Vec<WorkloadConfig> = Vec::new();
        for raw in &self.workloads {
            let workload = check_workload(raw, host)?;
            if out.iter().any(|w| w.id == workload.id) {
                return Err(ConfigError::Workload { workload: raw.id.clone(), message: "declared twice".into() });
            }
            out.push(workload);
        }
        Ok(out)
    }
}

fn check_workload(raw: &RawWorkload, host: &HostId) -> Result<WorkloadConfig, ConfigError> {
    let fail = |message: String| ConfigError::Workload { workload: raw.id.clone(), message };
    let id = WorkloadId::new(raw.id.clone()).map_err(|e| fail(format!("invalid id: {e}")))?;
    let tenant = TenantId::new(raw.tenant.clone()).map_err(|e| fail(format!("invalid tenant: {e}")))?;
    let sources = [
        raw.cgroup.clone().map(WorkloadSource::Cgroup),
        raw.pid.map(WorkloadSource::Pid),
        raw.container.clone().map(WorkloadSource::Container),
        raw.command.clone().map(WorkloadSource::Command),
    ];
    let mut given = sources.into_iter().flatten();
    let source = given.next().ok_or_else(|| fail("needs one of cgroup, pid, container or command".into()))?;
    if given.next().is_some() {
        return Err(fail("give only one of cgroup, pid, container or command".into()));
    }
    match &source {
        WorkloadSource::Command(argv) if argv.is_empty() => return Err(fail("command is empty".into())),
        WorkloadSource::Cgroup(path) if path.split('/').any(|c| c == "..") => {
            return Err(fail("cgroup path must not contain '..'".into()))
        }
        _ => {}
    }
    let workload = WorkloadConfig {
        id,
        source,
        tenant,
        class: raw.class,
        priority: raw.priority,
        slo: raw.slo.clone(),
        estimated_execution_s: raw.estimated_execution_s,
        guaranteed: raw.guaranteed,
        limit: raw.limit,
        budget: raw.budget,
        cpu_mode: raw.cpu_enforcement.unwrap_or(CpuMode::default_for(raw.class)),
    };
    workload.validate(host)?;
    Ok(workload)
}

impl WorkloadConfig {
    /// Applies the spec's own validation, the one the arbiter applies, to fail early.
    pub fn validate(&self, host: &HostId) -> Result<(), ConfigError> {
        use entente_protocol::Message;
        self.spec(host)
            .validate()
            .map_err(|e| ConfigError::Workload { workload: self.id.to_string(), message: e.to_string() })
    }

    /// How the enforcer holds this workload's cpu: a sharing or idle workload is capped at its
    /// limit.
    pub fn cpu_enforcement(&self) -> CpuEnforcement {
        match self.cpu_mode {
            CpuMode::Cap => CpuEnforcement::Cap,
            CpuMode::Share => CpuEnforcement::Share { up_to: self.limit.cpu },
            CpuMode::Idle => CpuEnforcement::Idle { up_to: self.limit.cpu },
        }
    }

    /// The spec registered with the arbiter.
    pub fn spec(&self, host: &HostId) -> entente_protocol::WorkloadSpec {
        entente_protocol::WorkloadSpec {
            host: host.clone(),
            workload: self.id.clone(),
            tenant: self.tenant.clone(),
            class: self.class,
            priority: self.priority,
            slo: self.slo.clone(),
            estimated_execution_s: self.estimated_execution_s,
            guaranteed: self.guaranteed,
            limit: self.limit,
            budget: self.budget,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostId {
        HostId::new("h1").unwrap()
    }

    #[test]
    fn parses_a_full_file() {
        let settings = FileSettings::parse(
            r#"
            host = "h1"
            interval_ms = 500
            backend = "cgroup"
            [[workload]]
            id = "redis"
            cgroup = "system.slice/redis.service"
            class = "latency_critical"
            priority = 90
            slo = { type = "psi", resource = "cpu", scope = "some", max_avg10_pct = 5.0 }
            guaranteed = { cpu = 500, memory = 268435456, disk_bw = 0, net_bw = 0 }
            limit = { cpu = 2000, memory = 1073741824, disk_bw = 0, net_bw = 0 }
            [[workload]]
            id = "batch-1"
            command = ["stress-ng", "--cpu", "1"]
            class = "batch"
            estimated_execution_s = 600.0
            limit = { cpu = 1000, memory = 536870912, disk_bw = 0, net_bw = 0 }
            "#,
        )
        .unwrap();
        assert_eq!(settings.interval_ms, Some(500));
        let workloads = settings.workloads(&host()).unwrap();
        assert_eq!(workloads.len(), 2);
        assert_eq!(workloads[0].source, WorkloadSource::Cgroup("system.slice/redis.service".into()));
        assert_eq!(workloads[1].source, WorkloadSource::Command(vec!["stress-ng".into(), "--cpu".into(), "1".into()]));
        assert_eq!(workloads[1].priority, 50);
        assert_eq!(workloads[1].guaranteed, ResourceVector::ZERO);
        assert_eq!(workloads[1].cpu_mode, CpuMode::Cap, "batch work is capped by default");
    }

    #[test]
    fn cpu_enforcement_defaults_by_class_and_can_be_chosen() {
        let workload = |class: &str, extra: &str| {
            let table = format!(
                "[[workload]]\nid = \"w\"\npid = 1\nclass = \"{class}\"\n{extra}\n\
                 limit = {{ cpu = 1500, memory = 1, disk_bw = 0, net_bw = 0 }}"
            );
            FileSettings::parse(&table).and_then(|s| s.workloads(&host()).map_err(|e| e.to_string()))
        };
        let be = workload("best_effort", "").unwrap();
        assert_eq!(be[0].cpu_enforcement(), CpuEnforcement::Idle { up_to: 1500 });
        let shared = workload("best_effort", "cpu_enforcement = \"share\"").unwrap();
        assert_eq!(shared[0].cpu_enforcement(), CpuEnforcement::Share { up_to: 1500 });
        let capped = workload("best_effort", "cpu_enforcement = \"cap\"").unwrap();
        assert_eq!(capped[0].cpu_enforcement(), CpuEnforcement::Cap);
        let shared_lc = workload("latency_critical", "cpu_enforcement = \"share\"").unwrap();
        assert_eq!(shared_lc[0].cpu_mode, CpuMode::Share);
        assert!(workload("batch", "cpu_enforcement = \"soft\"").unwrap_err().contains("unknown variant"));
    }

    #[test]
    fn bad_workloads_are_named() {
        let cases = [
            ("id = \"a.b\"\npid = 1\nclass = \"batch\"\nlimit = { cpu = 1, memory = 1, disk_bw = 0, net_bw = 0 }", "invalid id"),
            ("id = \"w\"\nclass = \"batch\"\nlimit = { cpu = 1, memory = 1, disk_bw = 0, net_bw = 0 }", "needs one of"),
            ("id = \"w\"\npid = 1\ncgroup = \"x\"\nclass = \"batch\"\nlimit = { cpu = 1, memory = 1, disk_bw = 0, net_bw = 0 }", "only one"),
            ("id = \"w\"\npid = 1\nclass = \"batch\"\nguaranteed = { cpu = 5, memory = 0, disk_bw = 0, net_bw = 0 }\nlimit = { cpu = 1, memory = 1, disk_bw = 0, net_bw = 0 }", "exceeds the limit"),
            ("id = \"w\"\ncommand = []\nclass = \"batch\"\nlimit = { cpu = 1, memory = 1, disk_bw = 0, net_bw = 0 }", "empty"),
        ];
        for (table, expected) in cases {
            let settings = FileSettings::parse(&format!("[[workload]]\n{table}")).unwrap();
            let err = settings.workloads(&host()).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
        assert!(FileSettings::parse("hots = \"typo\"").unwrap_err().contains("unknown field"));
    }
}
