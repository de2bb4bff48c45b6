//! Where a workload's cgroup lives on this host.
//!
//! A host may mount cgroup v1 controllers (one mount per controller set), a single cgroup2
//! hierarchy, or both ("hybrid", e.g. `/sys/fs/cgroup/unified`). The monitor needs, for one
//! workload, the directory of each controller it reads. This module parses
//! `/proc/self/mountinfo` into a [`CgroupLayout`] and `/proc/<pid>/cgroup` into a
//! [`ProcCgroups`], and joins the two into [`CgroupDirs`]. The parsers are pure so both layouts can
//! be tested on literal file contents; only [`CgroupLayout::read`] and [`cgroup_of_pid`] touch the
//! file system.

use std::path::{Path, PathBuf};

/// One cgroup mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted, e.g. `/sys/fs/cgroup/cpu,cpuacct`.
    pub mount_point: PathBuf,
    /// The path inside the hierarchy that the mount shows as its root (`/` outside containers).
    pub root: String,
    /// v1 controllers bound to this mount (`cpu`, `cpuacct`, `name=systemd`, ...); empty for v2.
    pub controllers: Vec<String>,
}

/// How cgroups are mounted on a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLayout {
    pub v1: Vec<CgroupMount>,
    pub v2: Option<CgroupMount>,
}

/// The cgroup layout kind, as reported in [`super::Capabilities`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    /// Only v1 controller mounts.
    V1,
    /// Only the unified cgroup2 hierarchy.
    V2,
    /// v1 controllers and a cgroup2 hierarchy side by side.
    Hybrid,
    /// No cgroup file system mounted at all.
    None,
}

/// Octal escapes (`\040` for a space) that mountinfo uses in paths.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a v1 super option names a controller (`cpu`, `name=systemd`) rather than a mount flag.
fn is_v1_controller_option(option: &str) -> bool {
    const FLAGS: [&str; 6] = ["rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode"];
    !option.is_empty() && !FLAGS.contains(&option) && (option.starts_with("name=") || !option.contains('='))
}

impl CgroupLayout {
    /// Parses `/proc/self/mountinfo` contents. Lines that are not cgroup mounts, or that are
    /// malformed, are skipped: a host with odd mounts still gets every cgroup mount it has.
    pub fn parse_mountinfo(text: &str) -> CgroupLayout {
        let mut layout = CgroupLayout::default();
        for line in text.lines() {
            // Format: id parent major:minor root mount_point options [optional...] - fstype source super_options
            let Some((pre, post)) = line.split_once(" - ") else { continue };
            let pre: Vec<&str> = pre.split_whitespace().collect();
            let post: Vec<&str> = post.split_whitespace().collect();
            if pre.len() < 5 || post.is_empty() {
                continue;
            }
            let root = unescape_mountinfo(pre[3]);
            let mount_point = PathBuf::from(unescape_mountinfo(pre[4]));
            match post[0] {
                // Keep the first cgroup2 mount: a second one is a bind mount of the same tree.
                "cgroup2" if layout.v2.is_none() => {
                    layout.v2 = Some(CgroupMount { mount_point, root, controllers: Vec::new() });
                }
                "cgroup" => {
                    let super_options = post.get(2).copied().unwrap_or("");
                    let controllers: Vec<String> =
                        super_options.split(',').filter(|o| is_v1_controller_option(o)).map(str::to_owned).collect();
                    if controllers.is_empty() || layout.v1.iter().any(|m| m.controllers == controllers) {
                        continue;
                    }
                    layout.v1.push(CgroupMount { mount_point, root, controllers });
                }
                _ => {}
            }
        }
        layout
    }

    /// Reads this process's mountinfo; an unreadable file gives an empty layout.
    pub fn read() -> CgroupLayout {
        std::fs::read_to_string("/proc/self/mountinfo").map(|t| Self::parse_mountinfo(&t)).unwrap_or_default()
    }

    /// The v1 mount that carries `controller`, if any.
    pub fn v1_mount(&self, controller: &str) -> Option<&CgroupMount> {
        self.v1.iter().find(|m| m.controllers.iter().any(|c| c == controller))
    }

    pub fn kind(&self) -> LayoutKind {
        match (self.v1.is_empty(), self.v2.is_some()) {
            (false, true) => LayoutKind::Hybrid,
            (false, false) => LayoutKind::V1,
            (true, true) => LayoutKind::V2,
            (true, false) => LayoutKind::None,
        }
    }
}

/// A process's cgroup membership, from `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcCgroups {
    /// `(controllers, path)` for each v1 hierarchy line, e.g. `(["cpu","cpuacct"], "/a/b")`.
    pub v1: Vec<(Vec<String>, String)>,
    /// The `0::/path` line: the cgroup2 path.
    pub v2: Option<String>,
}

impl ProcCgroups {
    /// Parses `/proc/<pid>/cgroup` contents (`N:controllers:/path` lines; `0::/path` for v2).
    pub fn parse(text: &str) -> ProcCgroups {
        let mut out = ProcCgroups::default();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if id == "0" && controllers.is_empty() {
                out.v2 = Some(path.to_owned());
            } else if !controllers.is_empty() {
                out.v1.push((controllers.split(',').map(str::to_owned).collect(), path.to_owned()));
            }
        }
        out
    }

    /// The v1 path of the hierarchy that carries `controller`.
    pub fn v1_path(&self, controller: &str) -> Option<&str> {
        self.v1.iter().find(|(cs, _)| cs.iter().any(|c| c == controller)).map(|(_, p)| p.as_str())
    }
}

/// Reads `/proc/<pid>/cgroup`: where a process (a container's init, say) lives in every hierarchy.
pub fn cgroup_of_pid(pid: u32) -> std::io::Result<ProcCgroups> {
    Ok(ProcCgroups::parse(&std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?))
}

/// Joins a hierarchy path (as `/proc/<pid>/cgroup` writes it, or a workload's configured relative
/// path) onto a mount. A mount whose root is not `/` (inside a container) shows only part of the
/// hierarchy, so a path under that root has the root stripped first.
pub fn join_cgroup_path(mount: &CgroupMount, path: &str) -> PathBuf {
    let root = mount.root.trim_end_matches('/');
    let rel = if !root.is_empty() && (path == root || path.starts_with(&format!("{root}/"))) {
        &path[root.len()..]
    } else {
        path
    };
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(rel)
    }
}

/// The directories the monitor reads for one workload; `None` where the workload has no
/// directory for that controller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupDirs {
    /// The v1 `cpu` controller (its `cpu.stat` counts quota throttling); often the same
    /// directory as `cpuacct`, where the two are mounted together.
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub blkio: Option<PathBuf>,
    /// The cgroup2 directory.
    pub unified: Option<PathBuf>,
    /// True when the cgroup2 path is the hierarchy root, whose figures are the whole host's.
    pub unified_is_root: bool,
}

impl CgroupDirs {
    /// Resolves a configured cgroup path (`entente/redis`) in every controller mount. The
    /// directories are not checked here; [`CgroupDirs::existing`] drops the absent ones.
    pub fn for_path(layout: &CgroupLayout, path: &str) -> CgroupDirs {
        let v1 = |c: &str| layout.v1_mount(c).map(|m| join_cgroup_path(m, path));
        CgroupDirs {
            cpu: v1("cpu"),
            cpuacct: v1("cpuacct"),
            memory: v1("memory"),
            blkio: v1("blkio"),
            unified: layout.v2.as_ref().map(|m| join_cgroup_path(m, path)),
            unified_is_root: path.trim_matches('/').is_empty(),
        }
    }

    /// Resolves a process's own memberships, which may differ per controller.
    pub fn for_proc(layout: &CgroupLayout, proc_cgroups: &ProcCgroups) -> CgroupDirs {
        let v1 = |c: &str| {
            let mount = layout.v1_mount(c)?;
            proc_cgroups.v1_path(c).map(|p| join_cgroup_path(mount, p))
        };
        let unified = match (&layout.v2, &proc_cgroups.v2) {
            (Some(m), Some(p)) => Some(join_cgroup_path(m, p)),
            _ => None,
        };
        CgroupDirs {
            cpu: v1("cpu"),
            cpuacct: v1("cpuacct"),
            memory: v1("memory"),
            blkio: v1("blkio"),
            unified,
            unified_is_root: proc_cgroups.v2.as_deref().is_some_and(|p| p.trim_matches('/').is_empty()),
        }
    }

    /// Keeps only the directories that exist.
    pub fn existing(self) -> CgroupDirs {
        let keep = |p: Option<PathBuf>| p.filter(|p| Path::new(p).is_dir());
        CgroupDirs {
            cpu: keep(self.cpu),
            cpuacct: keep(self.cpuacct),
            memory: keep(self.memory),
            blkio: keep(self.blkio),
            unified: keep(self.unified),
            unified_is_root: self.unified_is_root,
        }
    }

    pub fn is_empty(&self) -> bool {
        [&self.cpu, &self.cpuacct, &self.memory, &self.blkio, &self.unified].iter().all(|d| d.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
";

    const V2_ONLY: &str = "\
25 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    const V2_IN_CONTAINER: &str = "700 650 0:26 /kubepods/pod1 /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n";

    #[test]
    fn hybrid_layout_resolves_each_controller_and_the_unified_dir() {
        let layout = CgroupLayout::parse_mountinfo(HYBRID);
        assert_eq!(layout.kind(), LayoutKind::Hybrid);
        assert_eq!(layout.v1.len(), 4);
        let dirs = CgroupDirs::for_path(&layout, "entente/redis");
        assert_eq!(dirs.cpuacct, Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/entente/redis")));
        assert_eq!(dirs.cpu, dirs.cpuacct);
        assert_eq!(dirs.memory, Some(PathBuf::from("/sys/fs/cgroup/memory/entente/redis")));
        assert_eq!(dirs.blkio, Some(PathBuf::from("/sys/fs/cgroup/blkio/entente/redis")));
        assert_eq!(dirs.unified, Some(PathBuf::from("/sys/fs/cgroup/unified/entente/redis")));
        assert!(!dirs.unified_is_root);
    }

    #[test]
    fn v2_only_layout_has_no_v1_dirs() {
        let layout = CgroupLayout::parse_mountinfo(V2_ONLY);
        assert_eq!(layout.kind(), LayoutKind::V2);
        let dirs = CgroupDirs::for_path(&layout, "/entente/redis/");
        assert_eq!(dirs.cpuacct, None);
        assert_eq!(dirs.cpu, None);
        assert_eq!(dirs.unified, Some(PathBuf::from("/sys/fs/cgroup/entente/redis")));
    }

    #[test]
    fn container_mount_root_is_stripped() {
        let layout = CgroupLayout::parse_mountinfo(V2_IN_CONTAINER);
        let procs = ProcCgroups::parse("0::/kubepods/pod1/app\n");
        let dirs = CgroupDirs::for_proc(&layout, &procs);
        assert_eq!(dirs.unified, Some(PathBuf::from("/sys/fs/cgroup/app")));
    }

    #[test]
    fn proc_cgroup_lines_of_both_versions_parse() {
        let procs = ProcCgroups::parse(
            "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/init.scope\n0::/system.slice/docker-abc.scope\n",
        );
        assert_eq!(procs.v1_path("cpuacct"), Some("/docker/abc"));
        assert_eq!(procs.v1_path("memory"), Some("/docker/abc"));
        assert_eq!(procs.v1_path("blkio"), None);
        assert_eq!(procs.v2.as_deref(), Some("/system.slice/docker-abc.scope"));
        let layout = CgroupLayout::parse_mountinfo(HYBRID);
        let dirs = CgroupDirs::for_proc(&layout, &procs);
        assert_eq!(dirs.cpuacct, Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/docker/abc")));
        assert_eq!(dirs.blkio, None);
        assert_eq!(dirs.unified, Some(PathBuf::from("/sys/fs/cgroup/unified/system.slice/docker-abc.scope")));
    }

    #[test]
    fn root_membership_is_flagged_as_host_wide() {
        let layout = CgroupLayout::parse_mountinfo(V2_ONLY);
        let dirs = CgroupDirs::for_proc(&layout, &ProcCgroups::parse("0::/\n"));
        assert_eq!(dirs.unified, Some(PathBuf::from("/sys/fs/cgroup")));
        assert!(dirs.unified_is_root);
    }

    #[test]
    fn escaped_mount_points_are_unescaped() {
        let layout = CgroupLayout::parse_mountinfo("41 31 0:38 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n");
        assert_eq!(layout.v2.unwrap().mount_point, PathBuf::from("/mnt/my cg"));
    }
}
