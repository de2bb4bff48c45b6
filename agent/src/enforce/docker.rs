//! The Docker backend: enforces through the Engine API (`POST /containers/{id}/update`), for
//! hosts where workloads are containers and their cgroups belong to the engine.
//!
//! The engine has rules the cgroup files do not:
//! * CPU: `NanoCpus` and `CpuQuota`/`CpuPeriod` are exclusive; the engine refuses to update one
//!   kind on a container created with the other. So a container that has `NanoCpus` keeps being
//!   updated through `NanoCpus`, any other through `CpuQuota`/`CpuPeriod` (100 ms period, as the
//!   cgroup backends). `CpuShares` follows the allocation as on cgroup v1. The engine has no
//!   setting for the kernel's idle class, so an idle workload is enforced as a sharing one.
//! * Memory: raising `Memory` above the container's `MemorySwap` is refused, so `MemorySwap` is
//!   always sent with it, equal to it (no swap beyond the allocation). The engine refuses limits
//!   under 6 MiB (the error is reported) and refuses -1 on update, so a limit once set cannot be
//!   lifted: 0 ("unconstrained") is sent as the host's physical memory, which is the same in
//!   effect, and a limit at or above it reads back as unconstrained.
//! * Block-device throttles (`BlkioDeviceReadBps`...) cannot be changed on a running container:
//!   the engine ignores them on update. So `disk_bw` is not enforced here, and
//!   [`Backend::enforces`] says so.

use super::{
    cpu_quota_us, set_unchecked, Backend, EnforceError, Setting, Target, CPU_PERIOD_US,
    UNLIMITED,
};
use async_trait::async_trait;
use bollard::models::{ContainerUpdateBody, HostConfig};
use bollard::Docker;
use entente_protocol::{Resource, ResourceVector};

/// Enforces through a Docker engine.
pub struct DockerBackend {
    docker: Docker,
}

impl DockerBackend {
    /// Connects the usual way (`DOCKER_HOST`, else the local socket) and negotiates the API
    /// version down to the engine's, so older engines accept the requests.
    pub async fn connect() -> Result<DockerBackend, EnforceError> {
        let docker =
            Docker::connect_with_local_defaults().map_err(EnforceError::DockerUnreachable)?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(EnforceError::DockerUnreachable)?;
        Ok(DockerBackend { docker })
    }

    /// Uses an existing client (its API version is used as is).
    pub fn with_client(docker: Docker) -> DockerBackend {
        DockerBackend { docker }
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    fn container<'a>(&self, target: &'a Target) -> Result<&'a str, EnforceError> {
        match target {
            Target::Container(id) => Ok(id),
            other => Err(EnforceError::WrongTarget {
                backend: self.name(),
                target: other.to_string(),
                handles: "containers",
            }),
        }
    }

    async fn host_config(&self, container: &str) -> Result<HostConfig, EnforceError> {
        let inspected = self
            .docker
            .inspect_container(container, None)
            .await
            .map_err(|source| EnforceError::Docker {
                container: container.to_string(),
                op: "inspect",
                source,
            })?;
        Ok(inspected.host_config.unwrap_or_default())
    }

    /// The number of CPUs of this host, in nano-CPUs: "no limit" for a container that must stay
    /// on `NanoCpus` (the engine cannot set it back to 0).
    fn all_cpus_nano() -> i64 {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        cpus as i64 * 1_000_000_000
    }
}

/// The CPU allocation a host config holds, in millicores.
fn cpu_of(config: &HostConfig) -> u64 {
    match (config.nano_cpus, config.cpu_quota, config.cpu_period) {
        (Some(nano), _, _) if nano > 0 => {
            let all = DockerBackend::all_cpus_nano();
            if nano >= all {
                UNLIMITED
            } else {
                nano as u64 / 1_000_000
            }
        }
        (_, Some(quota), period) if quota > 0 => {
            // The engine's default period, when none was set, is the kernel's 100 ms.
            let period = period.filter(|&p| p > 0).unwrap_or(CPU_PERIOD_US as i64);
            quota as u64 * 1000 / period as u64
        }
        _ => UNLIMITED,
    }
}

fn memory_of(config: &HostConfig) -> u64 {
    match config.memory {
        Some(bytes) if bytes > 0 && (bytes as u64) < host_memory_bytes() => bytes as u64,
        _ => UNLIMITED,
    }
}

/// The host's physical memory: the "no limit" of a container whose limit cannot be removed.
fn host_memory_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 only for unknown names.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    if pages > 0 {
        pages as u64 * super::page_size()
    } else {
        i64::MAX as u64
    }
}

#[async_trait]
impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    // Readings follow the module's conventions with byte-exact memory, so the trait's default
    // `expected_reading` is this backend's.
    fn enforces(&self) -> Vec<Resource> {
        vec![Resource::Cpu, Resource::Memory]
    }

    async fn apply(&self, target: &Target, setting: &Setting) -> Result<(), EnforceError> {
        let container = self.container(target)?;
        let config = self.host_config(container).await?;
        let expected = self.expected_reading(setting);
        let mut update = ContainerUpdateBody::default();
        let mut changed = false;

        if cpu_of(&config) != expected.cpu
            || config.cpu_shares != Some(setting.cpu_shares as i64)
        {
            changed = true;
            update.cpu_shares = Some(setting.cpu_shares as i64);
            if config.nano_cpus.is_some_and(|n| n > 0) {
                update.nano_cpus = Some(match expected.cpu {
                    UNLIMITED => Self::all_cpus_nano(),
                    millicores => millicores as i64 * 1_000_000,
                });
            } else {
                update.cpu_period = Some(CPU_PERIOD_US as i64);
                update.cpu_quota = Some(cpu_quota_us(setting.cpu_ceiling).map_or(-1, |q| q as i64));
            }
        }
        if memory_of(&config) != expected.memory {
            changed = true;
            let bytes = if expected.memory == UNLIMITED {
                host_memory_bytes()
            } else {
                expected.memory
            } as i64;
            update.memory = Some(bytes);
            update.memory_swap = Some(bytes);
        }
        if !changed {
            return Ok(());
        }
        self.docker
            .update_container(container, update)
            .await
            .map_err(|source| EnforceError::Docker {
                container: container.to_string(),
                op: "update",
                source,
            })
    }

    async fn read(&self, target: &Target) -> Result<ResourceVector, EnforceError> {
        let container = self.container(target)?;
        let config = self.host_config(container).await?;
        let mut in_force = ResourceVector::ZERO;
        set_unchecked(&mut in_force, Resource::Cpu, cpu_of(&config));
        set_unchecked(&mut in_force, Resource::Memory, memory_of(&config));
        Ok(in_force)
    }
}
