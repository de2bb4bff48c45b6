//! The agent as a whole, against a real nats-server and a scripted arbiter played by the test:
//! it registers, publishes telemetry, answers a round with a valid bid, enforces the decision on
//! the real cgroup of a command it started, falls back to the guarantee when the lease runs out,
//! registers again when the arbiter no longer knows its workload, and on SIGTERM stops its
//! command and removes the cgroups it made.
//!
//! Needs root and a cgroup filesystem (CI runs as root).

use entente_agent::enforce::{detect_cgroup_layout, BackendKind, CgroupLayout};
use entente_protocol::bus::{Bus, DecisionsStreamConfig, Inbox};
use entente_protocol::*;
use entente_tests::NatsServer;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(15);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Kills the agent if the test fails half-way.
struct AgentProcess(Option<tokio::process::Child>);

impl Drop for AgentProcess {
    /// On a failed assertion too: a graceful stop first (the agent stops the command it started
    /// and removes its cgroup), a kill only if that does not end it within a few seconds.
    fn drop(&mut self) {
        let Some(child) = self.0.as_mut() else { return };
        if let Some(pid) = child.id() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            for _ in 0..50 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        let _ = child.start_kill();
    }
}

async fn next<M: Message>(inbox: &mut Inbox<M>, what: &str) -> entente_protocol::bus::Received<M> {
    tokio::time::timeout(WAIT, inbox.next())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
        .expect("subscription open")
}

/// The cpu limit file of `relative` and how to read millicores from it, on v1 or v2.
fn cpu_limit_reader(layout: &CgroupLayout, relative: &str) -> (PathBuf, fn(&str) -> Option<u64>) {
    match BackendKind::preferred_cgroup(layout) {
        Some(BackendKind::CgroupV1) => {
            let dir = layout.v1["cpu"].join(relative);
            (dir.join("cpu.cfs_quota_us"), |text| {
                text.trim().parse::<i64>().ok().filter(|q| *q > 0).map(|q| q as u64 / 100)
            })
        }
        Some(BackendKind::CgroupV2) => {
            let dir = layout.v2.as_ref().unwrap().mount_point.join(relative);
            (dir.join("cpu.max"), |text| text.split_whitespace().next()?.parse::<u64>().ok().map(|q| q / 100))
        }
        other => panic!("this host has no cgroup backend that enforces cpu ({other:?})"),
    }
}

async fn wait_for_cpu_limit(file: &PathBuf, read: fn(&str) -> Option<u64>, millicores: u64) {
    let got = entente_tests::eventually(WAIT, async || {
        let text = std::fs::read_to_string(file).ok()?;
        (read(&text) == Some(millicores)).then_some(())
    })
    .await;
    assert!(
        got.is_some(),
        "{} never showed {millicores} millicores (last: {:?})",
        file.display(),
        std::fs::read_to_string(file)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_negotiates_and_enforces_against_a_scripted_arbiter() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test creates cgroups and must run as root");
    let layout = detect_cgroup_layout().expect("cgroup layout");
    let nats = NatsServer::start();
    let arbiter: Bus = nats.bus().await;
    arbiter.ensure_decisions_stream(&DecisionsStreamConfig::default()).await.unwrap();
    let s = arbiter.subjects().clone();
    let suffix = std::process::id();
    let host = HostId::new(format!("agent-test-{suffix}")).unwrap();
    let parent = format!("entente-agent-test-{suffix}");
    let workload = WorkloadId::new("burner").unwrap();

    let mut host_registrations = arbiter.subscribe::<HostRegistration>(s.register_host()).await.unwrap();
    let mut workload_registrations = arbiter.subscribe::<WorkloadSpec>(s.register_workload()).await.unwrap();
    let mut telemetry = arbiter.subscribe::<TelemetrySample>(s.telemetry_all()).await.unwrap();
    let mut bids = arbiter.subscribe::<Bid>(s.bids(&host)).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            host = "{host}"
            interval_ms = 200
            cgroup_parent = "{parent}"
            capacity = {{ cpu = 2000, memory = 4294967296, disk_bw = 0, net_bw = 0 }}
            [[workload]]
            id = "burner"
            command = ["sh", "-c", "while :; do :; done"]
            class = "best_effort"
            cpu_enforcement = "cap"
            priority = 40
            guaranteed = {{ cpu = 100, memory = 0, disk_bw = 0, net_bw = 0 }}
            limit = {{ cpu = 1000, memory = 1073741824, disk_bw = 0, net_bw = 0 }}
            "#
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_entente-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .args(["--nats", &nats.url()])
        .env("ENTENTE_LOG", "debug")
        .stderr(log)
        .spawn()
        .expect("start entente-agent");
    let mut agent = AgentProcess(Some(child));
    let agent_log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();

    // Registration: the host, then its workload.
    let h = next(&mut host_registrations, "host registration").await;
    let registration = h.message.unwrap();
    assert_eq!(registration.host, host);
    assert!(registration.enforces.contains(&Resource::Cpu), "{:?}", registration.enforces);
    arbiter.reply(h.reply.unwrap(), &RegistrationReply::Accepted).await.unwrap();
    let w = next(&mut workload_registrations, "workload registration").await;
    let spec = w.message.unwrap();
    assert_eq!((spec.workload.as_str(), spec.class), ("burner", WorkloadClass::BestEffort));
    arbiter.reply(w.reply.unwrap(), &RegistrationReply::Accepted).await.unwrap();

    // The command runs in its cgroup, held at the guarantee (100 millicores) until a decision.
    let relative = format!("{parent}/burner");
    let (cpu_file, read_cpu) = cpu_limit_reader(&layout, &relative);
    wait_for_cpu_limit(&cpu_file, read_cpu, 100).await;

    // Telemetry shows the burner using cpu.
    let sample = next(&mut telemetry, "telemetry").await;
    assert_eq!(sample.subject, s.telemetry(&host, &workload));
    let sample = sample.message.unwrap();
    assert!(sample.usage.cpu_millicores > 0.0, "{sample:?}");
    assert_ne!(sample.counters.source, CounterSource::Unavailable);

    // A round announcement produces a valid bid within the deadline.
    let round = RoundAnnouncement {
        round: 1,
        announced_at_unix_ms: now_ms(),
        deadline_unix_ms: now_ms() + 2_000,
        interval_ms: 1_000,
        leader: 1,
        term: 1,
    };
    arbiter.announce_round(&round).await.unwrap();
    let bid = next(&mut bids, "bid").await.message.unwrap();
    assert_eq!(bid.round, 1);
    bid.check_against(&spec).unwrap();
    assert!(bid.bundles.iter().any(|b| b.offer == Offer::Keep), "{bid:?}");
    assert_eq!(bid.forecast, ForecastSource::Fallback, "no predictor runs in this test");

    // A decision is enforced on the real cgroup...
    let lease_ms = 2_500;
    let decision = Decision {
        round: 1,
        host: host.clone(),
        term: 1,
        index: 7,
        decided_at_unix_ms: now_ms(),
        lease_expires_unix_ms: now_ms() + lease_ms,
        allocations: vec![Allocation {
            workload: workload.clone(),
            alloc: ResourceVector::new(300, 512 << 20, 0, 0),
            bundle: Some(bid.bundles[0].id.clone()),
            offer: Some(bid.bundles[0].offer.clone()),
            value: bid.bundles[0].value,
            payment: 0.0,
        }],
        welfare: bid.bundles[0].value,
        optimal: true,
        unenforced: vec![],
    };
    arbiter.publish_decision(&decision).await.unwrap();
    wait_for_cpu_limit(&cpu_file, read_cpu, 300).await;

    // ...and when its lease runs out unrenewed, the workload falls back to its guarantee.
    wait_for_cpu_limit(&cpu_file, read_cpu, 100).await;

    // A cluster that lost its state rejects the next bid as from an unknown workload: the agent
    // tells it again about the host, then the workload, with the same figures.
    let forgotten = Rejection {
        host: host.clone(),
        workload: Some(workload.clone()),
        round: Some(2),
        bid_id: None,
        reason: RejectReason::UnknownWorkload,
        detail: format!("{host}/burner is not registered"),
        at_unix_ms: now_ms(),
    };
    arbiter.publish_rejection(&forgotten).await.unwrap();
    let h = next(&mut host_registrations, "host registration after the rejection").await;
    assert_eq!(h.message.unwrap(), registration);
    arbiter.reply(h.reply.unwrap(), &RegistrationReply::Accepted).await.unwrap();
    let w = next(&mut workload_registrations, "workload registration after the rejection").await;
    assert_eq!(w.message.unwrap(), spec);
    arbiter.reply(w.reply.unwrap(), &RegistrationReply::Accepted).await.unwrap();

    // SIGTERM: the agent stops its command, removes the cgroups it created, and exits cleanly.
    let mut child = agent.0.take().unwrap();
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(WAIT, child.wait()).await.expect("agent exits after SIGTERM").unwrap();
    assert!(status.success(), "agent exited with {status}:\n{}", agent_log());
    for mount in layout.v1.values().chain(layout.v2.as_ref().map(|v2| &v2.mount_point)) {
        assert!(!mount.join(&parent).exists(), "the agent removed the cgroup {parent} it created under {}", mount.display());
    }
}
