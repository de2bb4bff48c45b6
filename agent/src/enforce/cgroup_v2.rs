//! The cgroup v2 backend: the unified hierarchy of current distributions.
//!
//! * cpu: `cpu.max` (`quota period`, 100 ms period) caps the workload at its ceiling (its
//!   allocation, or more when it shares: see the `enforce` module); `cpu.weight` is its weight,
//!   the usual conversion of v1 shares (2..262144) to 1..10000, and `cpu.idle` puts an idle
//!   workload in the kernel's idle class instead.
//! * memory: `memory.high` is the allocation: above it the kernel throttles and reclaims rather
//!   than kills. `memory.max`, the hard limit where the OOM killer acts, sits 1/8 above it so a
//!   short overshoot slows the workload down instead of killing it. 0 sets both to `max`.
//! * disk_bw: `io.max` `rbps`/`wbps`, the whole amount in each direction on each configured
//!   device; 0 sets them to `max`.
//!
//! A controller only has files in a cgroup when the parent enabled it in
//! `cgroup.subtree_control`; the cgroup's own `cgroup.controllers` lists what it got. Applying a
//! resource whose controller is missing there fails with [`EnforceError::MissingController`],
//! naming the controller, rather than with a bare "No such file".

use super::cgroup_files::{existing_dir, parse_limit, CgroupFiles};
use super::{
    cpu_quota_us, page_size, set_unchecked, standard_expected_reading, Backend,
    BlockDevice, CgroupTarget, CgroupV2Mount, EnforceError, Setting, Target, CPU_PERIOD_US,
    UNLIMITED,
};
use async_trait::async_trait;
use entente_protocol::{Resource, ResourceVector};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Enforces through a cgroup2 hierarchy.
#[derive(Debug)]
pub struct CgroupV2Backend {
    mount_point: PathBuf,
    resources: Vec<Resource>,
    devices: Vec<BlockDevice>,
    files: CgroupFiles,
}

/// The v2 controller that enforces a resource.
fn controller_of(resource: Resource) -> Option<&'static str> {
    match resource {
        Resource::Cpu => Some("cpu"),
        Resource::Memory => Some("memory"),
        Resource::DiskBw => Some("io"),
        _ => None,
    }
}

impl CgroupV2Backend {
    /// A backend enforcing what the hierarchy really offers: cpu, memory and (with devices) io,
    /// each only if the root's `cgroup.controllers` lists it.
    pub fn for_hierarchy(hierarchy: &CgroupV2Mount, devices: Vec<BlockDevice>) -> CgroupV2Backend {
        let resources = [Resource::Cpu, Resource::Memory, Resource::DiskBw]
            .into_iter()
            .filter(|&r| r != Resource::DiskBw || !devices.is_empty())
            .filter(|&r| controller_of(r).is_some_and(|c| hierarchy.has_controller(c)))
            .collect();
        CgroupV2Backend::new(hierarchy.mount_point.clone(), resources, devices)
    }

    /// A backend told which resources to enforce, whatever the hierarchy offers: applying one
    /// whose controller a cgroup lacks fails with [`EnforceError::MissingController`]. Resources
    /// other than cpu, memory and disk_bw are ignored.
    pub fn new(
        mount_point: PathBuf,
        resources: Vec<Resource>,
        devices: Vec<BlockDevice>,
    ) -> CgroupV2Backend {
        let resources = resources
            .into_iter()
            .filter(|&r| {
                controller_of(r).is_some() && (r != Resource::DiskBw || !devices.is_empty())
            })
            .collect();
        CgroupV2Backend {
            mount_point,
            resources,
            devices,
            files: CgroupFiles::default(),
        }
    }

    /// How many cgroup files this backend has written since it was made.
    pub fn files_written(&self) -> u64 {
        self.files.writes()
    }

    fn dir(&self, target: &Target) -> Result<PathBuf, EnforceError> {
        match target {
            Target::Cgroup(cgroup) => existing_dir(CgroupTarget::under(cgroup, &self.mount_point)),
            other => Err(EnforceError::WrongTarget {
                backend: self.name(),
                target: other.to_string(),
                handles: "cgroups",
            }),
        }
    }

    /// Fails unless the cgroup has the controller that enforces `resource`.
    fn require_controller(&self, dir: &Path, resource: Resource) -> Result<(), EnforceError> {
        let controller = controller_of(resource).expect("only cpu, memory and disk_bw are kept");
        let listed = self.files.read(&dir.join("cgroup.controllers"))?;
        if listed.split_whitespace().any(|c| c == controller) {
            Ok(())
        } else {
            Err(EnforceError::MissingController {
                cgroup: dir.to_path_buf(),
                controller,
                resource,
            })
        }
    }

    fn read_cpu(&self, dir: &Path) -> Result<u64, EnforceError> {
        let path = dir.join("cpu.max");
        let content = self.files.read(&path)?;
        let mut fields = content.split_whitespace();
        let quota = parse_limit(&path, fields.next().unwrap_or(""))?;
        let period = parse_limit(&path, fields.next().unwrap_or(""))?.filter(|&p| p > 0);
        match (quota, period) {
            (None, _) => Ok(UNLIMITED),
            (Some(quota), Some(period)) => Ok(quota * 1000 / period),
            (Some(_), None) => Err(EnforceError::Parse {
                path,
                content,
                reason: "expected `QUOTA PERIOD`".into(),
            }),
        }
    }

    /// `memory.high`, or 0 when `memory.max` is not where this backend puts it (drift).
    fn read_memory(&self, dir: &Path) -> Result<u64, EnforceError> {
        let high = self.files.read_limit(&dir.join("memory.high"))?;
        let max = self.files.read_limit(&dir.join("memory.max"))?;
        Ok(match high {
            None if max.is_none() => UNLIMITED,
            Some(high) if max == Some(memory_max_for(high)) => high,
            _ => 0,
        })
    }

    /// The common `rbps`/`wbps` of every configured device: UNLIMITED when none is limited, 0
    /// when they disagree (drift).
    fn read_disk(&self, dir: &Path) -> Result<u64, EnforceError> {
        let path = dir.join("io.max");
        let rules = parse_io_max(&path, &self.files.read(&path)?)?;
        let mut seen: Option<u64> = None;
        for device in &self.devices {
            let (read, write) = rules
                .get(&device.number())
                .copied()
                .unwrap_or((UNLIMITED, UNLIMITED));
            for amount in [read, write] {
                match seen {
                    None => seen = Some(amount),
                    Some(previous) if previous != amount => return Ok(0),
                    Some(_) => {}
                }
            }
        }
        Ok(seen.unwrap_or(UNLIMITED))
    }

    fn apply_cpu(&self, dir: &Path, setting: &Setting, expected: u64) -> Result<(), EnforceError> {
        if self.read_cpu(dir)? != expected {
            let quota =
                cpu_quota_us(setting.cpu_ceiling).map_or("max".to_string(), |q| q.to_string());
            self.files
                .write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        }
        if self.files.set_idle(dir, setting.cpu_idle)? {
            return Ok(());
        }
        let weight_file = dir.join("cpu.weight");
        let weight = cpu_weight(setting.cpu_shares);
        if self.files.read_limit(&weight_file)? != Some(weight) {
            self.files.write(&weight_file, &weight.to_string())?;
        }
        Ok(())
    }

    fn apply_memory(&self, dir: &Path, expected: u64) -> Result<(), EnforceError> {
        if self.read_memory(dir)? == expected {
            return Ok(());
        }
        let (high, max) = if expected == UNLIMITED {
            ("max".to_string(), "max".to_string())
        } else {
            (expected.to_string(), memory_max_for(expected).to_string())
        };
        // Raise the hard limit before the soft one when growing, and lower the soft one first
        // when shrinking, so that high <= max at every step.
        let high_file = dir.join("memory.high");
        let max_file = dir.join("memory.max");
        let current_high = self.files.read_limit(&high_file)?.unwrap_or(UNLIMITED);
        if expected >= current_high {
            self.files.write(&max_file, &max)?;
            self.files.write(&high_file, &high)
        } else {
            self.files.write(&high_file, &high)?;
            self.files.write(&max_file, &max)
        }
    }

    fn apply_disk(&self, dir: &Path, expected: u64) -> Result<(), EnforceError> {
        if self.read_disk(dir)? == expected {
            return Ok(());
        }
        let rate = if expected == UNLIMITED {
            "max".to_string()
        } else {
            expected.to_string()
        };
        for device in &self.devices {
            self.files.write(
                &dir.join("io.max"),
                &format!("{} rbps={rate} wbps={rate}", device.number()),
            )?;
        }
        Ok(())
    }
}

/// `memory.max` for a `memory.high`: 1/8 above, in whole pages.
fn memory_max_for(high: u64) -> u64 {
    let page = page_size();
    high.saturating_add(high / 8) / page * page
}

/// `cpu.weight` (1..10000) for a weight in v1 shares (2..262144), the usual conversion.
fn cpu_weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// Parses `io.max` lines (`MAJ:MIN rbps=.. wbps=.. riops=.. wiops=..`) into (rbps, wbps).
fn parse_io_max(path: &Path, text: &str) -> Result<BTreeMap<String, (u64, u64)>, EnforceError> {
    let mut rules = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let device = fields.next().unwrap_or_default().to_string();
        let (mut read, mut write) = (UNLIMITED, UNLIMITED);
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            let amount = parse_limit(path, value)?.unwrap_or(UNLIMITED);
            match key {
                "rbps" => read = amount,
                "wbps" => write = amount,
                _ => {}
            }
        }
        rules.insert(device, (read, write));
    }
    Ok(rules)
}

#[async_trait]
impl Backend for CgroupV2Backend {
    fn name(&self) -> &'static str {
        "cgroup-v2"
    }

    fn enforces(&self) -> Vec<Resource> {
        self.resources.clone()
    }

    async fn apply(&self, target: &Target, setting: &Setting) -> Result<(), EnforceError> {
        let dir = self.dir(target)?;
        let expected = self.expected_reading(setting);
        for &resource in &self.resources {
            self.require_controller(&dir, resource)?;
            match resource {
                Resource::Cpu => self.apply_cpu(&dir, setting, expected.cpu)?,
                Resource::Memory => self.apply_memory(&dir, expected.memory)?,
                Resource::DiskBw => self.apply_disk(&dir, expected.disk_bw)?,
                _ => {}
            }
        }
        Ok(())
    }

    async fn read(&self, target: &Target) -> Result<ResourceVector, EnforceError> {
        let dir = self.dir(target)?;
        let mut in_force = ResourceVector::ZERO;
        for &resource in &self.resources {
            self.require_controller(&dir, resource)?;
            let amount = match resource {
                Resource::Cpu => self.read_cpu(&dir)?,
                Resource::Memory => self.read_memory(&dir)?,
                Resource::DiskBw => self.read_disk(&dir)?,
                _ => continue,
            };
            set_unchecked(&mut in_force, resource, amount);
        }
        Ok(in_force)
    }

    fn expected_reading(&self, setting: &Setting) -> ResourceVector {
        standard_expected_reading(&self.resources, setting, page_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_spans_the_kernel_range() {
        assert_eq!(cpu_weight(0), 1);
        assert_eq!(cpu_weight(2), 1);
        assert_eq!(cpu_weight(1024), 1 + (1024 - 2) * 9999 / 262_142);
        assert_eq!(cpu_weight(262_144), 10_000);
        assert_eq!(cpu_weight(UNLIMITED), 10_000);
    }

    #[test]
    fn parses_io_max() {
        let rules = parse_io_max(
            Path::new("io.max"),
            "254:0 rbps=1000 wbps=max riops=max wiops=max\n",
        )
        .unwrap();
        assert_eq!(rules["254:0"], (1000, UNLIMITED));
    }
}
