//! The monitor against real processes in real cgroups on this machine.
//!
//! A CPU burner runs in fresh v1 cpuacct, memory and blkio cgroups and a fresh cgroup2 directory; two samples
//! ~1.5 s apart must show the cpu the kernel accounted to the burner over the same time (however
//! busy the machine is, which decides how much that is), PSI read from the workload's own cgroup2
//! directory, and perf counters. This host has no PMU, so the counters are the software fallback
//! with a positive task clock (the perf-event fallback acceptance test). A burner held to a fifth
//! of a core by a cpu quota must show the scheduler figures: it is throttled, and it waits for the
//! cpu whenever it does not run. Needs root.

use entente_agent::monitor::{self, CgroupLayout, Monitor, WorkloadTarget};
use entente_protocol::{CounterSource, PsiSource};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "monitor tests create cgroups and open perf events: run them as root");
}

/// A burner process in fresh cgroups; kills it and removes the directories on drop.
struct Burner {
    child: Child,
    dirs: Vec<PathBuf>,
    name: String,
}

impl Burner {
    fn start(layout: &CgroupLayout) -> Burner {
        Burner::start_with_quota(layout, None)
    }

    /// A burner limited to `quota` cores (v1 `cpu.cfs_quota_us`, or v2 `cpu.max`).
    fn start_with_quota(layout: &CgroupLayout, quota: Option<f64>) -> Burner {
        let name = format!(
            "entente-mon-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
        );
        let child = Command::new("sh").arg("-c").arg("while :; do :; done").spawn().expect("spawn burner");
        let mut burner = Burner { child, dirs: Vec::new(), name: name.clone() };
        let mut mounts: Vec<PathBuf> = ["cpu", "cpuacct", "memory", "blkio"]
            .iter()
            .filter_map(|c| layout.v1_mount(c))
            .map(|m| m.mount_point.clone())
            .collect();
        // cpu and cpuacct are often one hierarchy.
        mounts.dedup();
        mounts.extend(layout.v2.as_ref().map(|m| m.mount_point.clone()));
        assert!(!mounts.is_empty(), "no cpuacct or cgroup2 mount on this host");
        for mount in mounts {
            let dir = mount.join(&name);
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            burner.dirs.push(dir.clone());
            if let Some(cores) = quota {
                let period = 100_000;
                let quota_us = (cores * period as f64) as u64;
                if dir.join("cpu.cfs_quota_us").exists() {
                    std::fs::write(dir.join("cpu.cfs_period_us"), period.to_string()).expect("set cpu period");
                    std::fs::write(dir.join("cpu.cfs_quota_us"), quota_us.to_string()).expect("set cpu quota");
                } else if dir.join("cpu.max").exists() && layout.v1_mount("cpu").is_none() {
                    std::fs::write(dir.join("cpu.max"), format!("{quota_us} {period}")).expect("set cpu.max");
                }
            }
            std::fs::write(dir.join("cgroup.procs"), burner.child.id().to_string())
                .unwrap_or_else(|e| panic!("move burner into {}: {e}", dir.display()));
        }
        burner
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The kernel frees a cgroup only once its last task has exited: retry briefly.
        for dir in self.dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// CPU time the kernel has accounted to `pid` (user + system), in seconds, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis don't.
    let after_name = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_second
}

#[test]
fn burner_cpu_matches_the_kernel_accounting_with_cgroup_psi_and_software_counters() {
    require_root();
    let caps = monitor::probe();
    eprintln!("capabilities: {caps}");
    let layout = CgroupLayout::read();
    let burner = Burner::start(&layout);
    let mut m =
        Monitor::new(&layout, WorkloadTarget { cgroup: Some(burner.name.clone()), pids: vec![burner.child.id()] })
            .expect("monitor for the burner's cgroup");
    eprintln!("dirs: {:?}, counters: {:?} ({:?})", m.dirs(), m.counter_source(), m.counter_scope());

    let cpu_before = cpu_seconds(burner.child.id());
    let first = m.sample().expect("first sample");
    assert_eq!(first.interval, None, "the first sample has no interval");
    assert_eq!(first.usage.cpu_millicores, 0.0, "the first sample has no rates");
    std::thread::sleep(Duration::from_millis(1500));
    let second = m.sample().expect("second sample");
    let cpu_after = cpu_seconds(burner.child.id());
    eprintln!("{second:#?}");

    let interval = second.interval.expect("the second sample has an interval");
    assert!(interval >= Duration::from_millis(1400), "{interval:?}");
    // What the kernel says the burner used over (nearly) the same interval. How much that is
    // depends on how busy the machine is; the monitor must agree with it.
    let kernel = (cpu_after - cpu_before) / interval.as_secs_f64() * 1000.0;
    let measured = second.usage.cpu_millicores;
    eprintln!("burner: monitor {measured:.0} millicores, kernel accounting {kernel:.0}");
    assert!(kernel > 50.0, "the burner barely ran ({kernel:.0} millicores): the test shows nothing");
    assert!((measured - kernel).abs() <= 0.2 * kernel + 50.0, "monitor {measured:.0} vs kernel {kernel:.0} millicores");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
    assert!(measured < cores * 1000.0 * 1.05, "more than the whole host: {measured}");
    // Memory and disk come from the v1 controllers where mounted (a hybrid host's cgroup2 tree
    // usually has those controllers disabled).
    assert_eq!(second.measured.memory, layout.v1_mount("memory").is_some(), "{:?}", second.measured);
    assert_eq!(second.measured.disk, layout.v1_mount("blkio").is_some(), "{:?}", second.measured);
    assert!(second.measured.net, "the burner's /proc/<pid>/net/dev is readable");
    if layout.v2.is_some() {
        assert_eq!(second.pressure.source, PsiSource::Cgroup, "PSI should come from the burner's cgroup2 dir");
        assert!(second.pressure.cpu_some.is_some());
    }
    match caps.counters {
        CounterSource::Hardware => {
            assert_eq!(second.counters.source, CounterSource::Hardware);
            assert!(second.counters.instructions.is_some_and(|v| v > 0.0));
        }
        CounterSource::Software => {
            // No PMU: the fallback must still give counters, labelled as software.
            assert_eq!(second.counters.source, CounterSource::Software);
            assert_eq!(second.counters.instructions, None);
            assert!(second.counters.task_clock_ms.is_some_and(|v| v > 0.0), "{:?}", second.counters);
        }
        CounterSource::Unavailable => assert_eq!(second.counters.source, CounterSource::Unavailable),
    }
}

#[test]
fn a_burner_under_a_quota_is_throttled_and_waits_whenever_it_does_not_run() {
    require_root();
    let layout = CgroupLayout::read();
    let burner = Burner::start_with_quota(&layout, Some(0.2));
    let mut m = Monitor::new(&layout, WorkloadTarget { cgroup: Some(burner.name.clone()), pids: Vec::new() })
        .expect("monitor for the burner's cgroup");
    let first = m.sample().expect("first sample");
    assert_eq!(first.scheduler.run_delay_ms, None, "the first sample has no rates");
    std::thread::sleep(Duration::from_millis(1500));
    let second = m.sample().expect("second sample");
    eprintln!("{:?} at {:.0} millicores", second.scheduler, second.usage.cpu_millicores);
    let throttled = second.scheduler.throttled_ms.expect("cpu.stat counts throttling");
    let waited = second.scheduler.run_delay_ms.expect("the burner's thread has a schedstat");
    // A fifth of a core: throttled most of each period, however busy the machine is.
    assert!(second.usage.cpu_millicores < 260.0, "the quota did not hold: {:?}", second.usage);
    assert!(throttled > 300.0, "throttled only {throttled:.0} ms per s under a 0.2-core quota");
    // One always-runnable thread either runs or waits (throttled time included): the two add up to
    // the interval, less what the two readings' few milliseconds apart blur.
    let accounted = waited + second.usage.cpu_millicores;
    assert!((accounted - 1000.0).abs() < 100.0, "ran {:.0} + waited {waited:.0} ms per s", second.usage.cpu_millicores);
    // The quota is read back, and it is the cap: the host has more than a fifth of a cpu.
    assert_eq!(second.scheduler.cpu_quota_millicores, Some(200.0));
    assert_eq!(second.scheduler.cpu_cap_millicores, Some(200.0));
}

#[test]
fn a_workload_without_a_quota_is_capped_by_the_hosts_cpus() {
    require_root();
    let layout = CgroupLayout::read();
    let burner = Burner::start_with_quota(&layout, None);
    let mut m = Monitor::new(&layout, WorkloadTarget { cgroup: Some(burner.name.clone()), pids: Vec::new() })
        .expect("monitor for the burner's cgroup");
    let sample = m.sample().expect("sample");
    assert_eq!(sample.scheduler.cpu_quota_millicores, None);
    let cpus = monitor::perf::online_cpus().len();
    assert_eq!(sample.scheduler.cpu_cap_millicores, Some(cpus as f64 * 1000.0));
}

#[test]
fn a_pid_resolves_to_its_cgroups_and_a_vanished_cgroup_is_an_error() {
    require_root();
    let layout = CgroupLayout::read();
    let burner = Burner::start(&layout);
    let procs = monitor::cgroup_of_pid(burner.child.id()).expect("read /proc/<pid>/cgroup");
    if layout.v1_mount("cpuacct").is_some() {
        assert_eq!(procs.v1_path("cpuacct"), Some(format!("/{}", burner.name).as_str()));
    }
    if layout.v2.is_some() {
        assert_eq!(procs.v2, Some(format!("/{}", burner.name)));
    }
    let mut m = Monitor::for_pid(burner.child.id()).expect("monitor by pid");
    m.sample().expect("sample by pid");
    let name = burner.name.clone();
    drop(burner);
    assert!(m.sample().is_err(), "sampling a removed cgroup must fail, not report zeros");
    assert!(Monitor::for_cgroup(&name).is_err());
}
