//! Finding workloads on the host: from a configured source to something to monitor and enforce.
//!
//! A workload can be an existing cgroup, a process, a Docker container, or a command the agent
//! starts itself. Whatever the source, it resolves to a cgroup to measure (the monitor's
//! target) and a place to enforce decisions (a cgroup, or the container for the Docker backend).
//! Commands are started already inside a fresh cgroup `<parent>/<workload>`: the child joins it
//! between fork and exec, so not one instruction of the workload runs unaccounted.
//!
//! Containers can also be discovered by label: every container with an `entente.class` label is
//! a workload, its spec read from `entente.*` labels (see [`config_from_labels`]).

use crate::config::{CpuMode, WorkloadConfig, WorkloadSource};
use crate::enforce::{BackendKind, Target};
use crate::monitor::cgroup::{cgroup_of_pid, join_cgroup_path, CgroupLayout};
use crate::monitor::{Monitor, WorkloadTarget};
use entente_protocol::{ResourceVector, Slo, TenantId, WorkloadClass, WorkloadId};
use std::collections::HashMap;
use std::ffi::CString;
use std::path::PathBuf;

/// The v1 controllers a started command's cgroup is created in: what is measured and enforced.
const V1_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "blkio"];

/// A workload found on the host.
pub struct ResolvedWorkload {
    pub monitor: Monitor,
    pub target: Target,
    pub started: Started,
}

impl ResolvedWorkload {
    /// Stops what the agent started for this workload, if anything.
    pub async fn stop(self) {
        self.started.stop().await;
    }
}

/// What the agent itself started for a workload: nothing, or a command and its cgroups.
#[derive(Default)]
pub struct Started {
    /// The process the agent started, for command workloads.
    child: Option<tokio::process::Child>,
    /// Cgroup directories the agent created, removed when it stops the workload.
    created: Vec<PathBuf>,
}

impl Started {
    /// Stops what the agent started (a command and its cgroups); leaves everything else alone.
    pub async fn stop(mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill().await;
        }
        if let Some(child) = self.child.as_mut() {
            // The cgroup can only be removed once the killed process is gone.
            let _ = child.wait().await;
        }
        for dir in self.created.iter().rev() {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                // A shared parent still holds another workload's cgroup: the last one removes it.
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) || e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a cgroup the agent created"),
            }
        }
    }
}

/// Resolves a configured workload on this host.
pub async fn resolve(
    config: &WorkloadConfig,
    cgroup_parent: &str,
    backend: BackendKind,
    layout: &CgroupLayout,
) -> Result<ResolvedWorkload, String> {
    let uses_v2 = backend == BackendKind::CgroupV2;
    match &config.source {
        WorkloadSource::Cgroup(path) => {
            let monitor = Monitor::new(layout, WorkloadTarget { cgroup: Some(path.clone()), pids: Vec::new() })
                .map_err(|e| e.to_string())?;
            Ok(ResolvedWorkload { monitor, target: cgroup_target(path, backend)?, started: Started::default() })
        }
        WorkloadSource::Pid(pid) => from_pid(*pid, None, backend, uses_v2, layout),
        WorkloadSource::Container(name) => {
            let (id, pid) = container_pid(name).await?;
            from_pid(pid, Some(id), backend, uses_v2, layout)
        }
        WorkloadSource::Command(argv) => start_command(config, argv, cgroup_parent, backend, layout),
    }
}

fn cgroup_target(path: &str, backend: BackendKind) -> Result<Target, String> {
    if backend == BackendKind::Docker {
        return Err("the docker backend enforces on containers; declare this workload as a container".into());
    }
    Target::cgroup(path.trim_start_matches('/')).map_err(|e| e.to_string())
}

fn from_pid(
    pid: u32,
    container: Option<String>,
    backend: BackendKind,
    uses_v2: bool,
    layout: &CgroupLayout,
) -> Result<ResolvedWorkload, String> {
    let cgroups = cgroup_of_pid(pid).map_err(|e| format!("process {pid}: {e}"))?;
    let monitor = Monitor::new(layout, WorkloadTarget { cgroup: None, pids: vec![pid] }).map_err(|e| e.to_string())?;
    let target = match container {
        Some(id) if backend == BackendKind::Docker => Target::Container(id),
        _ => {
            let path = if uses_v2 { cgroups.v2.clone() } else { cgroups.v1_path("cpu").map(str::to_owned) };
            let path = path.ok_or_else(|| format!("process {pid} has no cgroup the {backend} backend can use"))?;
            if path == "/" {
                return Err(format!("process {pid} lives in the root cgroup, which cannot be limited"));
            }
            cgroup_target(&path, backend)?
        }
    };
    Ok(ResolvedWorkload { monitor, target, started: Started::default() })
}

/// Starts `argv` inside a fresh cgroup `<parent>/<workload>` in every relevant hierarchy.
fn start_command(
    config: &WorkloadConfig,
    argv: &[String],
    parent: &str,
    backend: BackendKind,
    layout: &CgroupLayout,
) -> Result<ResolvedWorkload, String> {
    let relative = format!("{}/{}", parent.trim_matches('/'), config.id);
    let mut dirs: Vec<PathBuf> = Vec::new();
    for controller in V1_CONTROLLERS {
        if let Some(mount) = layout.v1_mount(controller) {
            let dir = join_cgroup_path(mount, &relative);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    if let Some(v2) = &layout.v2 {
        dirs.push(join_cgroup_path(v2, &relative));
    }
    if dirs.is_empty() {
        return Err("no cgroup hierarchy is mounted: cannot start a command in its own cgroup".into());
    }
    // Record every directory created (the parent too, when it is new) to remove them all later.
    let mut created = Vec::new();
    for dir in &dirs {
        let mut missing: Vec<PathBuf> = dir.ancestors().take_while(|d| !d.exists()).map(PathBuf::from).collect();
        missing.reverse();
        for d in missing {
            std::fs::create_dir(&d).map_err(|e| format!("cannot create cgroup {}: {e}", d.display()))?;
            created.push(d);
        }
    }
    let procs: Vec<CString> = dirs
        .iter()
        .map(|d| CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| "cgroup path contains a NUL byte".to_string())?;
    let mut command = tokio::process::Command::new(&argv[0]);
    command.args(&argv[1..]).kill_on_drop(true);
    // SAFETY: between fork and exec only async-signal-safe calls are allowed: open, write and
    // close on paths prepared before the fork are exactly that.
    unsafe {
        command.pre_exec(move || {
            for path in &procs {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| format!("cannot start {:?}: {e}", argv[0]))?;
    let pid = child.id().ok_or("the command exited at once")?;
    tracing::info!(workload = %config.id, pid, cgroup = %relative, "started command");
    let monitor = Monitor::new(layout, WorkloadTarget { cgroup: Some(relative.clone()), pids: vec![pid] })
        .map_err(|e| e.to_string())?;
    let target = cgroup_target(&relative, backend)?;
    Ok(ResolvedWorkload { monitor, target, started: Started { child: Some(child), created } })
}

fn docker() -> Result<bollard::Docker, String> {
    bollard::Docker::connect_with_local_defaults().map_err(|e| format!("cannot reach the Docker engine: {e}"))
}

/// A running container's id and main process.
async fn container_pid(name: &str) -> Result<(String, u32), String> {
    let inspected = docker()?
        .inspect_container(name, None)
        .await
        .map_err(|e| format!("container {name}: {e}"))?;
    let id = inspected.id.ok_or_else(|| format!("container {name} has no id"))?;
    let pid = inspected
        .state
        .and_then(|s| s.pid)
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("container {name} is not running"))?;
    Ok((id, pid as u32))
}

/// Every running container labelled `entente.class`, as workloads.
pub async fn discover_containers() -> Result<Vec<WorkloadConfig>, String> {
    let filters: HashMap<&str, Vec<&str>> = HashMap::from([("label", vec!["entente.class"])]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::new().filters(&filters).build();
    let containers = docker()?.list_containers(Some(options)).await.map_err(|e| format!("cannot list containers: {e}"))?;
    let mut found = Vec::new();
    for c in containers {
        let name = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_owned())
            .or(c.id.clone())
            .unwrap_or_default();
        let labels = c.labels.unwrap_or_default();
        match config_from_labels(&name, &labels) {
            Ok(config) => found.push(config),
            Err(e) => tracing::error!(container = %name, error = %e, "ignoring container with bad entente labels"),
        }
    }
    Ok(found)
}

/// Reads a workload spec from container labels:
///
/// | label | meaning |
/// |---|---|
/// | `entente.class` | `latency_critical`, `best_effort` or `batch` (required) |
/// | `entente.workload` | workload id (default: the container name) |
/// | `entente.tenant`, `entente.priority`, `entente.budget` | as in the TOML file |
/// | `entente.guaranteed.<resource>`, `entente.limit.<resource>` | amounts (`cpu` in millicores, `memory` in bytes, ...) |
/// | `entente.slo.psi` | `<cpu\|memory\|io>:<some\|full>:<max avg10 %>` |
/// | `entente.slo.metric` | `<url>\|<metric>\|<target>`: a gauge that must stay at or under the target |
/// | `entente.cpu_enforcement` | `cap`, `share` or `idle` (default: `idle` for best-effort, else `cap`) |
pub fn config_from_labels(container: &str, labels: &HashMap<String, String>) -> Result<WorkloadConfig, String> {
    let get = |key: &str| labels.get(&format!("entente.{key}")).map(|s| s.trim());
    let class = match get("class").ok_or("missing label entente.class")? {
        "latency_critical" | "lc" => WorkloadClass::LatencyCritical,
        "best_effort" | "be" => WorkloadClass::BestEffort,
        "batch" => WorkloadClass::Batch,
        other => return Err(format!("entente.class {other:?} is not latency_critical, best_effort or batch")),
    };
    let id = get("workload").map_or_else(|| container.replace(['.', ' '], "-"), str::to_owned);
    let id = WorkloadId::new(id).map_err(|e| format!("workload id: {e}"))?;
    let tenant = TenantId::new(get("tenant").unwrap_or("default")).map_err(|e| format!("entente.tenant: {e}"))?;
    let number = |key: &str| -> Result<Option<f64>, String> {
        get(key).map(|v| v.parse::<f64>().map_err(|_| format!("entente.{key} {v:?} is not a number"))).transpose()
    };
    let priority = match number("priority")? {
        Some(p) if (1.0..=100.0).contains(&p) && p.fract() == 0.0 => p as u8,
        Some(p) => return Err(format!("entente.priority {p} is not an integer in 1..=100")),
        None => 50,
    };
    let vector = |prefix: &str| -> Result<ResourceVector, String> {
        let mut v = ResourceVector::ZERO;
        for r in entente_protocol::Resource::ALL {
            if let Some(text) = get(&format!("{prefix}.{}", r.name())) {
                let amount: u64 = text.parse().map_err(|_| format!("entente.{prefix}.{r} {text:?} is not an amount"))?;
                v.set(r, amount).map_err(|e| format!("entente.{prefix}.{r}: {e}"))?;
            }
        }
        Ok(v)
    };
    let slo = if let Some(psi) = get("slo.psi") {
        let parts: Vec<&str> = psi.split(':').collect();
        let [resource, scope, max] = parts[..] else {
            return Err(format!("entente.slo.psi {psi:?} is not <resource>:<some|full>:<max %>"));
        };
        let resource = match resource {
            "cpu" => entente_protocol::PsiResource::Cpu,
            "memory" => entente_protocol::PsiResource::Memory,
            "io" => entente_protocol::PsiResource::Io,
            other => return Err(format!("entente.slo.psi resource {other:?} is not cpu, memory or io")),
        };
        let scope = match scope {
            "some" => entente_protocol::PsiScope::Some,
            "full" => entente_protocol::PsiScope::Full,
            other => return Err(format!("entente.slo.psi scope {other:?} is not some or full")),
        };
        let max_avg10_pct = max.parse().map_err(|_| format!("entente.slo.psi bound {max:?} is not a number"))?;
        Slo::Psi { resource, scope, max_avg10_pct }
    } else if let Some(metric) = get("slo.metric") {
        let parts: Vec<&str> = metric.split('|').collect();
        let [url, name, target] = parts[..] else {
            return Err(format!("entente.slo.metric {metric:?} is not <url>|<metric>|<target>"));
        };
        let target = target.parse().map_err(|_| format!("entente.slo.metric target {target:?} is not a number"))?;
        Slo::Metric { url: url.into(), metric: name.into(), target, higher_is_better: false }
    } else {
        Slo::None
    };
    let config = WorkloadConfig {
        id,
        source: WorkloadSource::Container(container.to_owned()),
        tenant,
        class,
        priority,
        slo,
        estimated_execution_s: number("estimated_execution_s")?,
        guaranteed: vector("guaranteed")?,
        limit: vector("limit")?,
        budget: number("budget")?.unwrap_or(1000.0),
        cpu_mode: match get("cpu_enforcement") {
            Some(text) => CpuMode::parse(text).map_err(|e| format!("entente.cpu_enforcement: {e}"))?,
            None => CpuMode::default_for(class),
        },
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn labels_make_a_workload() {
        let config = config_from_labels(
            "redis",
            &labels(&[
                ("entente.class", "latency_critical"),
                ("entente.priority", "90"),
                ("entente.guaranteed.cpu", "500"),
                ("entente.limit.cpu", "2000"),
                ("entente.limit.memory", "1073741824"),
                ("entente.slo.psi", "cpu:some:5"),
            ]),
        )
        .unwrap();
        assert_eq!(config.id.as_str(), "redis");
        assert_eq!(config.priority, 90);
        assert_eq!(config.guaranteed.cpu, 500);
        assert_eq!(config.limit.memory, 1 << 30);
        assert_eq!(
            config.slo,
            Slo::Psi {
                resource: entente_protocol::PsiResource::Cpu,
                scope: entente_protocol::PsiScope::Some,
                max_avg10_pct: 5.0
            }
        );
        assert_eq!(config.source, WorkloadSource::Container("redis".into()));
        assert_eq!(config.cpu_mode, CpuMode::Cap, "latency-critical work is capped by default");

        let be = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("entente.class", "best_effort"), ("entente.limit.cpu", "1500")];
            pairs.extend_from_slice(extra);
            config_from_labels("scraper", &labels(&pairs)).unwrap()
        };
        assert_eq!(be(&[]).cpu_mode, CpuMode::Idle, "best-effort work scavenges by default");
        assert_eq!(be(&[]).cpu_enforcement(), crate::enforce::CpuEnforcement::Idle { up_to: 1500 });
        assert_eq!(be(&[("entente.cpu_enforcement", "share")]).cpu_mode, CpuMode::Share);
        assert_eq!(be(&[("entente.cpu_enforcement", "cap")]).cpu_enforcement(), crate::enforce::CpuEnforcement::Cap);
    }

    #[test]
    fn bad_labels_are_named() {
        let cases: [(&[(&str, &str)], &str); 6] = [
            (&[], "missing label entente.class"),
            (&[("entente.class", "urgent")], "entente.class"),
            (&[("entente.class", "batch"), ("entente.priority", "0")], "entente.priority"),
            (&[("entente.class", "batch"), ("entente.limit.cpu", "-1")], "entente.limit.cpu"),
            (&[("entente.class", "batch"), ("entente.slo.psi", "cpu:5")], "entente.slo.psi"),
            (&[("entente.class", "batch"), ("entente.cpu_enforcement", "soft")], "\"soft\" is not cap, share or idle"),
        ];
        for (pairs, expected) in cases {
            let err = config_from_labels("c", &labels(pairs)).unwrap_err();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }
}
