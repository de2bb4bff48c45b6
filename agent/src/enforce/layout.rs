//! Finding out how this host's cgroups are laid out, and which block devices to throttle.
//!
//! Hosts differ: v1 only (one mount per controller, sometimes co-mounted like `cpu,cpuacct`),
//! v2 only (`/sys/fs/cgroup`), or hybrid (v1 controllers plus a cgroup2 mount, often
//! `/sys/fs/cgroup/unified`, that may hold few or no resource controllers). Guessing paths goes
//! wrong on one of them, so the layout is read from `/proc/self/mountinfo`.

use super::EnforceError;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The v1 controllers the agent may look for; other mount options (`rw`, `name=systemd`, ...)
/// are not controllers.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// How cgroups are mounted on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLayout {
    /// Each mounted v1 controller and its mount point (the first mount, when there are several).
    pub v1: BTreeMap<String, PathBuf>,
    /// The cgroup2 hierarchy, if one is mounted.
    pub v2: Option<CgroupV2Mount>,
}

/// A mounted cgroup2 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupV2Mount {
    pub mount_point: PathBuf,
    /// The controllers in the root's `cgroup.controllers`: those this hierarchy can use.
    pub controllers: Vec<String>,
}

impl CgroupV2Mount {
    pub fn has_controller(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// The overall kind of layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    V1,
    V2,
    /// v1 controllers and a cgroup2 hierarchy side by side.
    Hybrid,
    /// No cgroup filesystem mounted at all.
    None,
}

impl CgroupLayout {
    pub fn mode(&self) -> CgroupMode {
        match (self.v1.is_empty(), self.v2.is_some()) {
            (false, false) => CgroupMode::V1,
            (true, true) => CgroupMode::V2,
            (false, true) => CgroupMode::Hybrid,
            (true, false) => CgroupMode::None,
        }
    }
}

/// Reads `/proc/self/mountinfo` and the cgroup2 root's `cgroup.controllers`.
pub fn detect_cgroup_layout() -> Result<CgroupLayout, EnforceError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(|source| EnforceError::Read {
        path: path.into(),
        source,
    })?;
    let (v1, v2_mounts) = parse_mountinfo(&text);
    let v2 = match v2_mounts.into_iter().next() {
        None => None,
        Some(mount_point) => {
            let file = mount_point.join("cgroup.controllers");
            let controllers = fs::read_to_string(&file)
                .map_err(|source| EnforceError::Read { path: file, source })?
                .split_whitespace()
                .map(str::to_string)
                .collect();
            Some(CgroupV2Mount {
                mount_point,
                controllers,
            })
        }
    };
    Ok(CgroupLayout { v1, v2 })
}

/// Parses mountinfo text into the v1 controllers with their mount points and the cgroup2 mount
/// points, in the order they appear. Lines that do not parse are skipped: mountinfo is written
/// by the kernel, and one odd line must not hide the others.
pub fn parse_mountinfo(text: &str) -> (BTreeMap<String, PathBuf>, Vec<PathBuf>) {
    let mut v1 = BTreeMap::new();
    let mut v2 = Vec::new();
    for line in text.lines() {
        // "<id> <parent> <maj:min> <root> <mount point> <options> [optional...] - <fstype> <source> <super options>"
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = before.split(' ').nth(4) else {
            continue;
        };
        let mut after = after.split(' ');
        let (Some(fstype), Some(_source), Some(super_options)) =
            (after.next(), after.next(), after.next())
        else {
            continue;
        };
        let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
        match fstype {
            "cgroup2" => v2.push(mount_point),
            "cgroup" => {
                for option in super_options.split(',') {
                    if V1_CONTROLLERS.contains(&option) {
                        v1.entry(option.to_string())
                            .or_insert_with(|| mount_point.clone());
                    }
                }
            }
            _ => {}
        }
    }
    (v1, v2)
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let code =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A block device whose bandwidth `disk_bw` throttles: its number for cgroup files and its
/// `/dev` path for Docker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockDevice {
    pub major: u32,
    pub minor: u32,
    pub path: PathBuf,
}

impl BlockDevice {
    /// The device at a `/dev` path (e.g. `/dev/vda`).
    pub fn from_dev_path(path: impl Into<PathBuf>) -> Result<BlockDevice, EnforceError> {
        let path = path.into();
        let meta = fs::metadata(&path).map_err(|source| EnforceError::Read {
            path: path.clone(),
            source,
        })?;
        let rdev = meta.rdev();
        Ok(BlockDevice {
            major: libc::major(rdev),
            minor: libc::minor(rdev),
            path,
        })
    }

    /// The whole disks of this host: entries of `/sys/block` backed by a device (real or
    /// virtual hardware), which leaves out loop, ram and zram devices. Throttles apply to whole
    /// disks; the kernel refuses them on partitions.
    pub fn list_disks() -> Result<Vec<BlockDevice>, EnforceError> {
        let dir = Path::new("/sys/block");
        let entries = fs::read_dir(dir).map_err(|source| EnforceError::Read {
            path: dir.into(),
            source,
        })?;
        let mut disks = Vec::new();
        for entry in entries.flatten() {
            let sys = entry.path();
            if !sys.join("device").exists() {
                continue;
            }
            let dev_file = sys.join("dev");
            let number = fs::read_to_string(&dev_file).map_err(|source| EnforceError::Read {
                path: dev_file.clone(),
                source,
            })?;
            let parsed = number
                .trim()
                .split_once(':')
                .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)));
            let Some((major, minor)) = parsed else {
                return Err(EnforceError::Parse {
                    path: dev_file,
                    content: number,
                    reason: "expected MAJOR:MINOR".into(),
                });
            };
            disks.push(BlockDevice {
                major,
                minor,
                path: Path::new("/dev").join(entry.file_name()),
            });
        }
        disks.sort_by_key(|d| (d.major, d.minor));
        Ok(disks)
    }

    /// `MAJOR:MINOR`, as cgroup files write it.
    pub fn number(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:5 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 31 0:38 / /mnt/with\\040space rw - cgroup cgroup rw,blkio
";

    #[test]
    fn parses_hybrid_mountinfo_with_co_mounted_controllers() {
        let (v1, v2) = parse_mountinfo(HYBRID);
        assert_eq!(
            v1.get("cpu").unwrap(),
            Path::new("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(
            v1.get("cpuacct").unwrap(),
            Path::new("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(
            v1.get("memory").unwrap(),
            Path::new("/sys/fs/cgroup/memory")
        );
        assert_eq!(v1.get("blkio").unwrap(), Path::new("/mnt/with space"));
        assert!(
            !v1.contains_key("name=systemd") && !v1.contains_key("xattr") && !v1.contains_key("rw")
        );
        assert_eq!(v2, vec![PathBuf::from("/sys/fs/cgroup/unified")]);
    }

    #[test]
    fn parses_v2_only_mountinfo() {
        let text = "30 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let (v1, v2) = parse_mountinfo(text);
        assert!(v1.is_empty());
        assert_eq!(v2, vec![PathBuf::from("/sys/fs/cgroup")]);
        let layout = CgroupLayout {
            v1,
            v2: Some(CgroupV2Mount {
                mount_point: v2[0].clone(),
                controllers: vec!["cpu".into()],
            }),
        };
        assert_eq!(layout.mode(), CgroupMode::V2);
    }
}
