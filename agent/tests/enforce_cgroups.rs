//! The cgroup backends against the real kernel: decisions must change what a process can use,
//! not just what a file says.
//!
//! These tests need root and a cgroup filesystem. They create cgroups named `entente-test-*`
//! and remove them, and their processes, even when an assertion fails. A host has v1
//! controllers, a cgroup2 hierarchy, or both; each test checks what the host it runs on really
//! offers (see each test), and a test for a hierarchy the host lacks says so and returns.

use entente_agent::enforce::{
    backend_for, detect_cgroup_layout, AppliedBecause, Backend, BackendKind, BlockDevice,
    CgroupLayout, CgroupV1Backend, CgroupV2Backend, CpuEnforcement, EnforceError, Enforcer, Target,
    UNLIMITED,
};
use entente_protocol::{Resource, ResourceVector, WorkloadId};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests create cgroups and must run as root (euid is {euid})"
    );
}

fn layout() -> CgroupLayout {
    require_root();
    detect_cgroup_layout().expect("reading the cgroup layout")
}

/// A cgroup created for one test (in one directory per v1 controller, or one v2 directory),
/// with the processes put in it; all removed on drop.
struct TestCgroup {
    relative: String,
    dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl TestCgroup {
    fn create(mounts: &[&Path]) -> TestCgroup {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let relative = format!("entente-test-{}-{nanos}", std::process::id());
        let mut cgroup = TestCgroup {
            relative: relative.clone(),
            dirs: Vec::new(),
            children: Vec::new(),
        };
        for mount in mounts {
            let dir = mount.join(&relative);
            fs::create_dir(&dir)
                .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
            cgroup.dirs.push(dir);
        }
        cgroup
    }

    fn target(&self) -> Target {
        Target::cgroup(&self.relative).unwrap()
    }

    /// Starts a shell spinning in a loop and moves it into every directory of the cgroup.
    fn spawn_busy_loop(&mut self) -> u32 {
        let child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning sh");
        let pid = child.id();
        self.children.push(child);
        for dir in &self.dirs {
            let procs = dir.join("cgroup.procs");
            fs::write(&procs, pid.to_string())
                .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", procs.display()));
        }
        pid
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in &self.dirs {
            // A killed process can take a moment to leave the cgroup.
            for _ in 0..50 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// CPU time (user + system) of a process, in seconds, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc/<pid>/stat");
    // The command name may hold spaces; the fields after it are fixed.
    let after_name = &stat[stat.rfind(')').expect("stat has the name in parentheses") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / per_second
}

/// Cores used by a process, measured over `window`.
fn cores_used(pid: u32, window: Duration) -> f64 {
    let (start_cpu, start) = (cpu_seconds(pid), Instant::now());
    std::thread::sleep(window);
    (cpu_seconds(pid) - start_cpu) / start.elapsed().as_secs_f64()
}

/// How many periods the kernel has throttled a cgroup (`nr_throttled` of cpu.stat, v1 and v2).
fn nr_throttled(cpu_dir: &Path) -> u64 {
    let stat = fs::read_to_string(cpu_dir.join("cpu.stat")).unwrap();
    stat.lines()
        .find_map(|line| line.strip_prefix("nr_throttled "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no nr_throttled in {}: {stat:?}",
                cpu_dir.join("cpu.stat").display()
            )
        })
}

fn workload(name: &str) -> WorkloadId {
    WorkloadId::new(name).unwrap()
}

fn now_ms() -> u64 {
    entente_agent::enforce::unix_ms_now()
}

/// The v1 hierarchies the v1 backend enforces through: a workload's cgroup exists in each (as
/// systemd and container engines make them), or the backend reports it missing.
fn v1_enforced_mounts(layout: &CgroupLayout) -> Vec<PathBuf> {
    ["cpu", "memory", "blkio"]
        .iter()
        .filter_map(|c| layout.v1.get(*c).cloned())
        .collect()
}

/// The cgroup backend this host prefers, with the mounts a cpu test needs.
fn cpu_capable_backend(layout: &CgroupLayout) -> (BackendKind, Vec<PathBuf>) {
    match BackendKind::preferred_cgroup(layout) {
        Some(BackendKind::CgroupV2) => {
            let v2 = layout.v2.as_ref().unwrap();
            assert!(
                v2.has_controller("cpu"),
                "the preferred v2 hierarchy at {} has no cpu controller",
                v2.mount_point.display()
            );
            // The backend enforces every controller the root has, so the test cgroup needs each.
            let subtree = v2.mount_point.join("cgroup.subtree_control");
            for controller in ["cpu", "memory"]
                .into_iter()
                .filter(|c| v2.has_controller(c))
            {
                fs::write(&subtree, format!("+{controller}")).unwrap_or_else(|e| {
                    panic!("enabling {controller} in {}: {e}", subtree.display())
                });
            }
            (BackendKind::CgroupV2, vec![v2.mount_point.clone()])
        }
        Some(BackendKind::CgroupV1) => {
            assert!(
                layout.v1.contains_key("cpu"),
                "this host has neither a v2 nor a v1 cpu controller"
            );
            (BackendKind::CgroupV1, v1_enforced_mounts(layout))
        }
        other => panic!(
            "no cgroup hierarchy with a cpu controller on this host: {other:?} from {layout:?}"
        ),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_cpu_decision_throttles_a_busy_process_and_the_guarantee_returns_when_the_lease_expires()
{
    let layout = layout();
    let (kind, mounts) = cpu_capable_backend(&layout);
    let backend = backend_for(&layout, kind, &[]).await.unwrap();
    assert!(
        backend.enforces().contains(&Resource::Cpu),
        "{kind} on this host must enforce cpu"
    );

    let mut cgroup = TestCgroup::create(&mounts.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    let pid = cgroup.spawn_busy_loop();
    let mut enforcer = Enforcer::new(backend.clone());
    let guarantee = ResourceVector::new(500, 0, 0, 0);
    enforcer.register(workload("busy"), cgroup.target(), guarantee, CpuEnforcement::Cap);

    let start = now_ms();
    let decided = ResourceVector::new(200, 0, 0, 0);
    let outcome = enforcer
        .on_allocation(&workload("busy"), decided, start + 60_000, start)
        .await
        .unwrap();
    assert_eq!(outcome.applied, Some(AppliedBecause::Decided));
    assert!(
        outcome.unenforced.is_empty(),
        "cpu alone must be enforced: {outcome:?}"
    );

    // The decision also lowered the weight (shares/cpu.weight), which on a loaded machine would
    // starve the loop below its quota. To measure the quota alone, raise the weight far above
    // everything else's; the quota stays as applied.
    let cpu_dir = mounts[0].join(&cgroup.relative);
    let (weight_file, top_weight) = if cpu_dir.join("cpu.shares").exists() {
        ("cpu.shares", "262144")
    } else {
        ("cpu.weight", "10000")
    };
    fs::write(cpu_dir.join(weight_file), top_weight).unwrap();

    // Let the first period with the new quota pass, then measure over 3 s.
    std::thread::sleep(Duration::from_millis(300));
    let throttled_before = nr_throttled(&cpu_dir);
    let used = cores_used(pid, Duration::from_secs(3));
    assert!(
        (used - 0.2).abs() <= 0.08,
        "a 200-millicore decision let the busy loop use {used:.3} cores"
    );
    assert!(
        nr_throttled(&cpu_dir) > throttled_before,
        "the kernel never throttled the loop: the quota is not what held it"
    );

    // No renewal: past the lease the guarantee (500 millicores) is put back.
    let report = enforcer.tick(start + 60_001).await;
    assert_eq!(report.fell_back, vec![workload("busy")]);
    assert_eq!(
        report.applied,
        vec![(workload("busy"), AppliedBecause::Guarantee)]
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(backend.read(&cgroup.target()).await.unwrap().cpu, 500);
    let used = cores_used(pid, Duration::from_secs(2));
    assert!(
        used <= 0.58,
        "the 500-millicore guarantee let the busy loop use {used:.3} cores"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_sharing_workload_runs_past_its_allocation_unthrottled_with_a_fraction_of_its_allocation_as_weight() {
    let layout = layout();
    let (kind, mounts) = cpu_capable_backend(&layout);
    let backend = backend_for(&layout, kind, &[]).await.unwrap();
    let mut cgroup = TestCgroup::create(&mounts.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    let pid = cgroup.spawn_busy_loop();
    let mut enforcer = Enforcer::new(backend.clone());
    let sharing = CpuEnforcement::Share { up_to: 2000 };
    enforcer.register(workload("batch"), cgroup.target(), ResourceVector::new(50, 0, 0, 0), sharing);

    let start = now_ms();
    let decided = ResourceVector::new(100, 0, 0, 0);
    let outcome = enforcer.on_allocation(&workload("batch"), decided, start + 60_000, start).await.unwrap();
    assert_eq!(outcome.applied, Some(AppliedBecause::Decided));
    // The quota is the limit; the weight is a 64th of the allocation's.
    assert_eq!(backend.read(&cgroup.target()).await.unwrap().cpu, 2000);
    let cpu_dir = mounts[0].join(&cgroup.relative);
    let (weight_file, weight, top_weight) = if cpu_dir.join("cpu.shares").exists() {
        ("cpu.shares", "2", "262144") // 100 millicores are 102 shares, a 64th of it the minimum
    } else {
        ("cpu.weight", "1", "10000") // the same shares mapped onto 1..10000
    };
    assert_eq!(fs::read_to_string(cpu_dir.join(weight_file)).unwrap().trim(), weight);

    // A new allocation changes the weight alone, and is still written.
    let outcome = enforcer
        .on_allocation(&workload("batch"), ResourceVector::new(2000, 0, 0, 0), start + 60_000, start + 1)
        .await
        .unwrap();
    assert_eq!(outcome.applied, Some(AppliedBecause::Decided));
    assert_eq!(backend.read(&cgroup.target()).await.unwrap().cpu, 2000);
    assert_ne!(fs::read_to_string(cpu_dir.join(weight_file)).unwrap().trim(), weight);

    // Alone at the top weight (so that the rest of a busy machine does not starve it), the loop
    // runs far beyond its 100-millicore allocation and the quota never throttles it.
    fs::write(cpu_dir.join(weight_file), top_weight).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let throttled_before = nr_throttled(&cpu_dir);
    let used = cores_used(pid, Duration::from_secs(2));
    assert!(used > 0.5, "a sharing workload allocated 100 millicores used only {used:.3} cores");
    assert_eq!(nr_throttled(&cpu_dir), throttled_before, "the sharing workload was throttled");
}

#[tokio::test(flavor = "current_thread")]
async fn an_idle_workload_is_put_in_the_kernels_idle_class_and_taken_out_again() {
    let layout = layout();
    let (kind, mounts) = cpu_capable_backend(&layout);
    let backend = backend_for(&layout, kind, &[]).await.unwrap();
    let cgroup = TestCgroup::create(&mounts.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    let cpu_dir = mounts[0].join(&cgroup.relative);
    let weight_file = if cpu_dir.join("cpu.shares").exists() { "cpu.shares" } else { "cpu.weight" };
    let read = |file: &str| fs::read_to_string(cpu_dir.join(file)).unwrap().trim().to_string();
    let mut enforcer = Enforcer::new(backend.clone());
    enforcer.register(workload("scavenger"), cgroup.target(), ResourceVector::new(50, 0, 0, 0), CpuEnforcement::Idle { up_to: 2000 });

    let start = now_ms();
    let outcome = enforcer
        .on_allocation(&workload("scavenger"), ResourceVector::new(300, 0, 0, 0), start + 60_000, start)
        .await
        .unwrap();
    assert_eq!(outcome.applied, Some(AppliedBecause::Decided));
    assert_eq!(backend.read(&cgroup.target()).await.unwrap().cpu, 2000, "the quota is the limit");
    if !cpu_dir.join("cpu.idle").exists() {
        // Before Linux 5.15 there is no idle class: the workload is enforced as a sharing one.
        eprintln!("this kernel has no cpu.idle; the idle workload got a sharing weight instead");
        assert_eq!(read(weight_file), if weight_file == "cpu.shares" { "4" } else { "1" });
        return;
    }
    assert_eq!(read("cpu.idle"), "1");

    // Held as a sharer now: out of the idle class, with the sharing weight written.
    let mut enforcer = Enforcer::new(backend.clone());
    enforcer.register(workload("scavenger"), cgroup.target(), ResourceVector::new(50, 0, 0, 0), CpuEnforcement::Share { up_to: 2000 });
    let outcome = enforcer
        .on_allocation(&workload("scavenger"), ResourceVector::new(2000, 0, 0, 0), start + 60_000, start + 1)
        .await
        .unwrap();
    assert_eq!(outcome.applied, Some(AppliedBecause::Decided));
    assert_eq!(read("cpu.idle"), "0");
    // 2000 millicores are 2048 shares, a 64th of it 32 (v2: the same shares mapped onto 1..10000).
    assert_eq!(read(weight_file), if weight_file == "cpu.shares" { "32" } else { "2" });
}

/// Skips (with a message) when the host has no v1 controllers: a v2-only host is covered by the
/// v2 tests and the cpu test above.
fn v1_mount(layout: &CgroupLayout, controller: &str) -> Option<PathBuf> {
    let mount = layout.v1.get(controller).cloned();
    if mount.is_none() {
        eprintln!(
            "no cgroup v1 `{controller}` controller on this host ({:?}); nothing to test for v1",
            layout.mode()
        );
    }
    mount
}

#[tokio::test(flavor = "current_thread")]
async fn v1_cpu_is_written_once_and_repaired_after_drift() {
    let layout = layout();
    let Some(cpu_mount) = v1_mount(&layout, "cpu") else {
        return;
    };
    let cgroup = TestCgroup::create(
        &v1_enforced_mounts(&layout)
            .iter()
            .map(PathBuf::as_path)
            .collect::<Vec<_>>(),
    );
    let backend = Arc::new(CgroupV1Backend::new(layout.v1.clone(), vec![]));
    let mut enforcer = Enforcer::new(backend.clone());
    enforcer.register(
        workload("web"),
        cgroup.target(),
        ResourceVector::new(250, 0, 0, 0),
        CpuEnforcement::Cap,
    );

    let start = now_ms();
    enforcer
        .on_allocation(
            &workload("web"),
            ResourceVector::new(1500, 0, 0, 0),
            start + 60_000,
            start,
        )
        .await
        .unwrap();
    let dir = cpu_mount.join(&cgroup.relative);
    let file = |name: &str| {
        fs::read_to_string(dir.join(name))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(file("cpu.cfs_period_us"), "100000");
    assert_eq!(file("cpu.cfs_quota_us"), "150000");
    assert_eq!(file("cpu.shares"), "1536");

    let written = backend.files_written();
    for step in 1..=3 {
        let report = enforcer.tick(start + step * 1_000).await;
        assert!(
            report.applied.is_empty() && report.errors.is_empty(),
            "{report:?}"
        );
    }
    assert_eq!(
        backend.files_written(),
        written,
        "ticks with nothing changed must write no file"
    );

    fs::write(dir.join("cpu.cfs_quota_us"), "-1").unwrap();
    let report = enforcer.tick(start + 5_000).await;
    assert!(
        matches!(report.applied.as_slice(), [(_, AppliedBecause::Drift { found })] if found.cpu == UNLIMITED),
        "{report:?}"
    );
    assert_eq!(file("cpu.cfs_quota_us"), "150000");
    // cpu=0 is as little as the kernel allows, not "unlimited".
    backend
        .apply(&cgroup.target(), &ResourceVector::ZERO.into())
        .await
        .unwrap();
    assert_eq!(file("cpu.cfs_quota_us"), "1000");
    assert_eq!(file("cpu.shares"), "2");
}

#[tokio::test(flavor = "current_thread")]
async fn v1_memory_limit_is_written_in_whole_pages_and_read_back() {
    let layout = layout();
    let Some(memory_mount) = v1_mount(&layout, "memory") else {
        return;
    };
    let cgroup = TestCgroup::create(
        &v1_enforced_mounts(&layout)
            .iter()
            .map(PathBuf::as_path)
            .collect::<Vec<_>>(),
    );
    let memory_dir = memory_mount.join(&cgroup.relative);
    let backend = CgroupV1Backend::new(layout.v1.clone(), vec![]);
    assert!(backend.enforces().contains(&Resource::Memory));

    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let asked = ResourceVector::new(0, (100 << 20) + 123, 0, 0);
    backend.apply(&cgroup.target(), &asked.into()).await.unwrap();
    let limit: u64 = fs::read_to_string(memory_dir.join("memory.limit_in_bytes"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(limit, (100 << 20) / page * page);
    let read = backend.read(&cgroup.target()).await.unwrap();
    assert_eq!(read.memory, limit);
    assert_eq!(
        read,
        backend.expected_reading(&asked.into()),
        "reading right after apply must be what the drift check expects"
    );

    let written = backend.files_written();
    backend.apply(&cgroup.target(), &asked.into()).await.unwrap();
    assert_eq!(
        backend.files_written(),
        written,
        "re-applying the same limit must write nothing"
    );

    // 0 removes the limit.
    backend
        .apply(&cgroup.target(), &ResourceVector::ZERO.into())
        .await
        .unwrap();
    assert_eq!(
        backend.read(&cgroup.target()).await.unwrap().memory,
        UNLIMITED
    );
}

#[tokio::test(flavor = "current_thread")]
async fn v1_disk_bandwidth_throttles_every_configured_disk_in_both_directions() {
    let layout = layout();
    let Some(blkio_mount) = v1_mount(&layout, "blkio") else {
        return;
    };
    let disks = BlockDevice::list_disks().unwrap();
    assert!(!disks.is_empty(), "no disk under /sys/block to throttle");
    let cgroup = TestCgroup::create(
        &v1_enforced_mounts(&layout)
            .iter()
            .map(PathBuf::as_path)
            .collect::<Vec<_>>(),
    );
    let blkio_dir = blkio_mount.join(&cgroup.relative);
    let backend = CgroupV1Backend::new(layout.v1.clone(), disks.clone());
    assert!(backend.enforces().contains(&Resource::DiskBw));

    backend
        .apply(&cgroup.target(), &ResourceVector::new(0, 0, 10 << 20, 0).into())
        .await
        .unwrap();
    for file in [
        "blkio.throttle.read_bps_device",
        "blkio.throttle.write_bps_device",
    ] {
        let content = fs::read_to_string(blkio_dir.join(file)).unwrap();
        for disk in &disks {
            assert!(
                content.contains(&format!("{} {}", disk.number(), 10 << 20)),
                "{file}: {content:?}"
            );
        }
    }
    assert_eq!(
        backend.read(&cgroup.target()).await.unwrap().disk_bw,
        10 << 20
    );
    backend
        .apply(&cgroup.target(), &ResourceVector::ZERO.into())
        .await
        .unwrap();
    assert_eq!(
        backend.read(&cgroup.target()).await.unwrap().disk_bw,
        UNLIMITED
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_missing_cgroup_is_a_clear_error() {
    let layout = layout();
    let kind =
        BackendKind::preferred_cgroup(&layout).expect("a cgroup hierarchy with cpu or memory");
    let backend = backend_for(&layout, kind, &[]).await.unwrap();
    let target = Target::cgroup("entente-test-does-not-exist").unwrap();
    let err = backend
        .apply(&target, &ResourceVector::new(100, 1 << 30, 0, 0).into())
        .await
        .unwrap_err();
    assert!(matches!(err, EnforceError::NoSuchCgroup(_)), "{err:?}");
    assert!(
        err.to_string().contains("entente-test-does-not-exist"),
        "{err}"
    );
    assert!(Target::cgroup("../etc").is_err() && Target::cgroup("/sys").is_err());
}

/// On a host whose cgroup2 hierarchy has cpu and memory, they are applied and read back; on a
/// host whose v2 lacks them (hybrid hosts keep them in v1), applying them fails naming the
/// missing controller, and the backend built for the hierarchy claims exactly what it has.
#[tokio::test(flavor = "current_thread")]
async fn v2_applies_what_the_hierarchy_has_and_names_a_missing_controller() {
    let layout = layout();
    let Some(v2) = layout.v2.clone() else {
        eprintln!(
            "no cgroup2 hierarchy on this host ({:?}); nothing to test for v2",
            layout.mode()
        );
        return;
    };
    let root = &v2.mount_point;
    let root_controllers = fs::read_to_string(root.join("cgroup.controllers")).unwrap();
    let root_has = |c: &str| root_controllers.split_whitespace().any(|x| x == c);
    for controller in ["cpu", "memory"] {
        if root_has(controller) {
            let subtree = root.join("cgroup.subtree_control");
            fs::write(&subtree, format!("+{controller}"))
                .unwrap_or_else(|e| panic!("enabling {controller} in {}: {e}", subtree.display()));
        }
    }
    let cgroup = TestCgroup::create(&[root]);
    let child_controllers = fs::read_to_string(cgroup.dirs[0].join("cgroup.controllers")).unwrap();
    let child_has = |c: &str| child_controllers.split_whitespace().any(|x| x == c);

    // What the factory's backend claims is what the root really has.
    let factory_backend = backend_for(&layout, BackendKind::CgroupV2, &[])
        .await
        .unwrap();
    let expected_claims: Vec<Resource> = [(Resource::Cpu, "cpu"), (Resource::Memory, "memory")]
        .into_iter()
        .filter(|(_, c)| root_has(c))
        .map(|(r, _)| r)
        .collect();
    assert_eq!(
        factory_backend.enforces(),
        expected_claims,
        "root cgroup.controllers: {root_controllers:?}"
    );
    let for_hierarchy = CgroupV2Backend::for_hierarchy(&v2, vec![]);
    let alloc = ResourceVector::new(300, (64 << 20) + 5, 0, 0);
    for_hierarchy.apply(&cgroup.target(), &alloc.into()).await.unwrap();
    if expected_claims.is_empty() {
        assert_eq!(
            for_hierarchy.files_written(),
            0,
            "nothing enforceable here, so nothing may be written"
        );
    }

    // Asked for cpu and memory whatever the hierarchy has.
    let backend = CgroupV2Backend::new(root.clone(), vec![Resource::Cpu, Resource::Memory], vec![]);
    let result = backend.apply(&cgroup.target(), &alloc.into()).await;
    let first_missing = ["cpu", "memory"].into_iter().find(|c| !child_has(c));
    match first_missing {
        None => {
            result.unwrap();
            let dir = &cgroup.dirs[0];
            assert_eq!(
                fs::read_to_string(dir.join("cpu.max")).unwrap().trim(),
                "30000 100000"
            );
            let high: u64 = fs::read_to_string(dir.join("memory.high"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let max: u64 = fs::read_to_string(dir.join("memory.max"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert!(
                high <= 64 << 20 && high > (64 << 20) - 4096 * 16,
                "memory.high {high}"
            );
            assert!(
                max > high,
                "memory.max {max} must sit above memory.high {high}"
            );
            let read = backend.read(&cgroup.target()).await.unwrap();
            assert_eq!(read, backend.expected_reading(&alloc.into()));
            assert_eq!(read.cpu, 300);
            let written = backend.files_written();
            backend.apply(&cgroup.target(), &alloc.into()).await.unwrap();
            assert_eq!(
                backend.files_written(),
                written,
                "re-applying must write nothing"
            );
        }
        Some(missing) => {
            let err = result.expect_err("applying to a cgroup without the controller must fail");
            match &err {
                EnforceError::MissingController {
                    controller,
                    cgroup: path,
                    ..
                } => {
                    assert_eq!(*controller, missing);
                    assert_eq!(path, &cgroup.dirs[0]);
                }
                other => panic!("expected MissingController for {missing}, got {other:?}"),
            }
            let message = err.to_string();
            assert!(
                message.contains(&format!("`{missing}` controller"))
                    && message.contains(&cgroup.relative),
                "{message}"
            );
            assert_eq!(backend.files_written(), 0);
        }
    }
}

#[test]
fn detected_layout_points_at_real_hierarchies() {
    let layout = layout();
    for (controller, mount) in &layout.v1 {
        assert!(
            mount.join("cgroup.procs").exists(),
            "v1 {controller} mount {} has no cgroup.procs",
            mount.display()
        );
    }
    if let Some(cpu) = layout.v1.get("cpu") {
        assert!(cpu.join("cpu.cfs_quota_us").exists());
    }
    if let Some(v2) = &layout.v2 {
        assert!(v2.mount_point.join("cgroup.controllers").exists());
    }
    assert!(
        !layout.v1.is_empty() || layout.v2.is_some(),
        "no cgroup filesystem mounted"
    );
}
