//! The cgroup v1 backend: one hierarchy per controller, as on older distributions and hybrid
//! hosts.
//!
//! * cpu: `cpu.cfs_period_us` (100 ms) and `cpu.cfs_quota_us` cap the workload at its ceiling
//!   (its allocation, or more when it shares: see the `enforce` module); `cpu.shares` is its
//!   weight (1024 per core of allocation, a fraction of that when it shares), and `cpu.idle`
//!   puts an idle workload in the kernel's idle class instead.
//! * memory: `memory.limit_in_bytes`, which the kernel rounds down to whole pages. Lowering it
//!   below current usage makes the kernel reclaim first; if it cannot, the write fails with EBUSY
//!   and we report [`EnforceError::MemoryBelowUsage`] instead of killing anything. 0 removes the
//!   limit (`-1`).
//! * disk_bw: `blkio.throttle.read_bps_device` and `write_bps_device`, the whole amount in each
//!   direction on each configured device; 0 removes the rules (the kernel's `MAJ:MIN 0`).
//!
//! A controller that is not mounted is not enforced, and [`Backend::enforces`] says so.

use super::cgroup_files::{existing_dir, parse_limit, CgroupFiles};
use super::{
    cpu_quota_us, page_size, set_unchecked, standard_expected_reading, Backend,
    BlockDevice, CgroupTarget, EnforceError, Setting, Target, CPU_PERIOD_US, UNLIMITED,
};
use async_trait::async_trait;
use entente_protocol::{Resource, ResourceVector};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Enforces through cgroup v1 controller hierarchies.
#[derive(Debug)]
pub struct CgroupV1Backend {
    mounts: BTreeMap<String, PathBuf>,
    devices: Vec<BlockDevice>,
    files: CgroupFiles,
}

impl CgroupV1Backend {
    /// `mounts`: each mounted controller and its mount point (from [`super::detect_cgroup_layout`]);
    /// `devices`: the disks `disk_bw` throttles.
    pub fn new(mounts: BTreeMap<String, PathBuf>, devices: Vec<BlockDevice>) -> CgroupV1Backend {
        CgroupV1Backend {
            mounts,
            devices,
            files: CgroupFiles::default(),
        }
    }

    /// How many cgroup files this backend has written since it was made.
    pub fn files_written(&self) -> u64 {
        self.files.writes()
    }

    fn cgroup_target<'a>(&self, target: &'a Target) -> Result<&'a CgroupTarget, EnforceError> {
        match target {
            Target::Cgroup(c) => Ok(c),
            other => Err(EnforceError::WrongTarget {
                backend: self.name(),
                target: other.to_string(),
                handles: "cgroups",
            }),
        }
    }

    fn dir(&self, controller: &str, target: &CgroupTarget) -> Result<PathBuf, EnforceError> {
        let mount = self
            .mounts
            .get(controller)
            .expect("only enforced controllers are looked up");
        existing_dir(target.under(mount))
    }

    fn read_cpu(&self, dir: &Path) -> Result<u64, EnforceError> {
        let quota_file = dir.join("cpu.cfs_quota_us");
        let Some(quota) = self.files.read_limit(&quota_file)? else {
            return Ok(UNLIMITED);
        };
        let period_file = dir.join("cpu.cfs_period_us");
        let period = self
            .files
            .read_limit(&period_file)?
            .filter(|&p| p > 0)
            .ok_or_else(|| EnforceError::Parse {
                path: period_file,
                content: "max".into(),
                reason: "no period".into(),
            })?;
        Ok(quota * 1000 / period)
    }

    fn read_memory(&self, dir: &Path) -> Result<u64, EnforceError> {
        let limit = self.files.read_limit(&dir.join("memory.limit_in_bytes"))?;
        // "No limit" reads as the largest page multiple below 2^63, not as -1.
        Ok(match limit {
            Some(bytes) if bytes < 1 << 62 => bytes,
            _ => UNLIMITED,
        })
    }

    /// The throttle of every configured device in both directions: the common amount, UNLIMITED
    /// when there is none anywhere, and 0 when they disagree (nothing coherent is in force, so
    /// the drift check re-applies).
    fn read_disk(&self, dir: &Path) -> Result<u64, EnforceError> {
        let mut seen: Option<u64> = None;
        for file in [
            "blkio.throttle.read_bps_device",
            "blkio.throttle.write_bps_device",
        ] {
            let path = dir.join(file);
            let rules = parse_device_rules(&path, &self.files.read(&path)?)?;
            for device in &self.devices {
                let amount = rules.get(&device.number()).copied().unwrap_or(UNLIMITED);
                match seen {
                    None => seen = Some(amount),
                    Some(previous) if previous != amount => return Ok(0),
                    Some(_) => {}
                }
            }
        }
        Ok(seen.unwrap_or(UNLIMITED))
    }
}

/// Parses `MAJ:MIN bytes` lines of a blkio throttle file.
fn parse_device_rules(path: &Path, text: &str) -> Result<BTreeMap<String, u64>, EnforceError> {
    let mut rules = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (device, amount) = line
            .trim()
            .split_once(' ')
            .ok_or_else(|| EnforceError::Parse {
                path: path.into(),
                content: line.into(),
                reason: "expected `MAJ:MIN bytes`".into(),
            })?;
        let amount = parse_limit(path, amount.trim())?.unwrap_or(UNLIMITED);
        rules.insert(device.to_string(), amount);
    }
    Ok(rules)
}

#[async_trait]
impl Backend for CgroupV1Backend {
    fn name(&self) -> &'static str {
        "cgroup-v1"
    }

    fn enforces(&self) -> Vec<Resource> {
        let mut resources = Vec::new();
        if self.mounts.contains_key("cpu") {
            resources.push(Resource::Cpu);
        }
        if self.mounts.contains_key("memory") {
            resources.push(Resource::Memory);
        }
        if self.mounts.contains_key("blkio") && !self.devices.is_empty() {
            resources.push(Resource::DiskBw);
        }
        resources
    }

    async fn apply(&self, target: &Target, setting: &Setting) -> Result<(), EnforceError> {
        let cgroup = self.cgroup_target(target)?;
        let expected = self.expected_reading(setting);
        for resource in self.enforces() {
            match resource {
                Resource::Cpu => {
                    let dir = self.dir("cpu", cgroup)?;
                    if self.read_cpu(&dir)? != expected.cpu {
                        // The period first: a quota is checked against the period in force.
                        let period_file = dir.join("cpu.cfs_period_us");
                        if self.files.read_limit(&period_file)? != Some(CPU_PERIOD_US) {
                            self.files.write(&period_file, &CPU_PERIOD_US.to_string())?;
                        }
                        let quota = cpu_quota_us(setting.cpu_ceiling)
                            .map_or("-1".to_string(), |q| q.to_string());
                        self.files.write(&dir.join("cpu.cfs_quota_us"), &quota)?;
                    }
                    if !self.files.set_idle(&dir, setting.cpu_idle)? {
                        let shares_file = dir.join("cpu.shares");
                        let shares = setting.cpu_shares;
                        if self.files.read_limit(&shares_file)? != Some(shares) {
                            self.files.write(&shares_file, &shares.to_string())?;
                        }
                    }
                }
                Resource::Memory => {
                    let dir = self.dir("memory", cgroup)?;
                    if self.read_memory(&dir)? != expected.memory {
                        let value = if expected.memory == UNLIMITED {
                            "-1".to_string()
                        } else {
                            expected.memory.to_string()
                        };
                        self.files
                            .write(&dir.join("memory.limit_in_bytes"), &value)?;
                    }
                }
                Resource::DiskBw => {
                    let dir = self.dir("blkio", cgroup)?;
                    if self.read_disk(&dir)? != expected.disk_bw {
                        // The kernel's way to remove a rule is a rate of 0.
                        let rate = if expected.disk_bw == UNLIMITED {
                            0
                        } else {
                            expected.disk_bw
                        };
                        for file in [
                            "blkio.throttle.read_bps_device",
                            "blkio.throttle.write_bps_device",
                        ] {
                            for device in &self.devices {
                                self.files.write(
                                    &dir.join(file),
                                    &format!("{} {rate}", device.number()),
                                )?;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn read(&self, target: &Target) -> Result<ResourceVector, EnforceError> {
        let cgroup = self.cgroup_target(target)?;
        let mut in_force = ResourceVector::ZERO;
        for resource in self.enforces() {
            let amount = match resource {
                Resource::Cpu => self.read_cpu(&self.dir("cpu", cgroup)?)?,
                Resource::Memory => self.read_memory(&self.dir("memory", cgroup)?)?,
                Resource::DiskBw => self.read_disk(&self.dir("blkio", cgroup)?)?,
                _ => continue,
            };
            set_unchecked(&mut in_force, resource, amount);
        }
        Ok(in_force)
    }

    fn expected_reading(&self, setting: &Setting) -> ResourceVector {
        standard_expected_reading(&self.enforces(), setting, page_size())
    }
}
