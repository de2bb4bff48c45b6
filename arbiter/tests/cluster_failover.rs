//! The arbiter cluster as operators run it: three `entente-arbiter run` processes on a real
//! nats-server, hosts and workloads registered through the protocol, simulated agents bidding
//! every round, the leader killed with SIGKILL mid-run, and the whole cluster restarted from
//! disk. The decisions stream is the ground truth checked at the end.

use entente_protocol::bus::{Bus, BusError, ReplayFrom};
use entente_protocol::*;
use entente_tests::NatsServer;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Each test runs a cluster of its own (three or four replicas, a nats-server, simulated
/// agents). Two at once on a 2-core machine make elections wait for the scheduler, and the
/// failover time asserted below measures that instead of the cluster, so they take turns.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ROUND_MS: u64 = 300;
const HOSTS: usize = 3;
const WORKLOADS_PER_HOST: usize = 4;
const CPU_CAPACITY: u64 = 4_000;
const TENANT_CPU_QUOTA: u64 = 7_000;

/// Three replicas as child processes, killed when the test ends however it ends.
struct Cluster {
    nats_url: String,
    dir: tempfile::TempDir,
    replicas: BTreeMap<NodeId, Child>,
}

impl Cluster {
    fn start(nats: &NatsServer) -> Cluster {
        let mut cluster =
            Cluster { nats_url: nats.url(), dir: tempfile::tempdir().unwrap(), replicas: BTreeMap::new() };
        for node in 1..=3 {
            cluster.start_replica(node);
        }
        cluster
    }

    fn data_dir(&self, node: NodeId) -> PathBuf {
        self.dir.path().join(format!("arbiter-{node}"))
    }

    fn log(&self, node: NodeId) -> PathBuf {
        self.dir.path().join(format!("arbiter-{node}.log"))
    }

    fn start_replica(&mut self, node: NodeId) {
        self.spawn(node, &["--peers", "1,2,3"]);
    }

    /// Starts a replacement replica that waits to be added to the running cluster.
    fn start_joining(&mut self, node: NodeId) {
        self.spawn(node, &["--join"]);
    }

    fn spawn(&mut self, node: NodeId, bootstrap: &[&str]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log(node)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_entente-arbiter"))
            .args(["run", "--node-id", &node.to_string(), "--round-ms", &ROUND_MS.to_string()])
            .args(bootstrap)
            .arg("--data-dir")
            .arg(self.data_dir(node))
            .args(["--nats", &self.nats_url])
            .env("ENTENTE_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start entente-arbiter");
        self.replicas.insert(node, child);
    }

    fn kill(&mut self, node: NodeId) {
        if let Some(mut child) = self.replicas.remove(&node) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM one replica and wait for a clean exit.
    fn stop(&mut self, node: NodeId) {
        let mut child = self.replicas.remove(&node).expect("a running replica");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert!(status.success(), "replica {node} exited with {status}: {}", tail(&self.log(node)));
    }

    /// SIGTERM every replica and wait for clean exits.
    fn stop_all(&mut self) {
        let replicas = std::mem::take(&mut self.replicas);
        for child in replicas.values() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        // Every replica is waited for before any verdict, so a failed one leaves no process behind.
        let exits: Vec<_> = replicas.into_iter().map(|(node, mut child)| (node, child.wait().unwrap())).collect();
        for (node, status) in exits {
            assert!(status.success(), "replica {node} exited with {status}: {}", tail(&self.log(node)));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.replicas.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

async fn status(bus: &Bus, subject: String) -> Option<ClusterStatus> {
    bus.request(subject, &StatusRequest { workloads: true }, Some(Duration::from_millis(500))).await.ok()
}

/// Waits until some replica reports a leader other than `not`.
async fn wait_for_leader(bus: &Bus, not: Option<NodeId>, timeout: Duration) -> Option<(NodeId, Duration)> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some(s) = status(bus, bus.subjects().status()).await {
            if let Some(leader) = s.leader.filter(|l| Some(*l) != not) {
                return Some((leader, started.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Sends a registration-style request until a leader answers it.
async fn until_answered<M: Message>(bus: &Bus, subject: String, message: &M) -> RegistrationReply {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match bus.request::<M, RegistrationReply>(subject.clone(), message, Some(Duration::from_secs(2))).await {
            Ok(reply) => return reply,
            Err(BusError::NoResponders { .. } | BusError::Timeout { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("request on {subject} failed: {e}"),
        }
    }
}

fn host_id(h: usize) -> HostId {
    HostId::new(format!("host-{h}")).unwrap()
}

fn spec(h: usize, w: usize) -> WorkloadSpec {
    WorkloadSpec {
        host: host_id(h),
        workload: WorkloadId::new(format!("w{w}")).unwrap(),
        tenant: TenantId::new(if w % 2 == 0 { "shop" } else { "batch" }).unwrap(),
        class: if w == 0 { WorkloadClass::LatencyCritical } else { WorkloadClass::BestEffort },
        priority: 20 + 20 * (w % 4) as u8,
        slo: Slo::None,
        estimated_execution_s: None,
        guaranteed: ResourceVector::new(250, 256 << 20, 0, 0),
        limit: ResourceVector::new(3_000, 4 << 30, 0, 0),
        budget: 500.0,
    }
}

/// Simulated agents: every workload bids for every announced round.
async fn simulated_agents(bus: Bus) {
    let mut rounds = bus.subscribe::<RoundAnnouncement>(bus.subjects().round()).await.unwrap();
    while let Some(received) = rounds.next().await {
        let Ok(round) = received.message else { continue };
        for h in 0..HOSTS {
            for w in 0..WORKLOADS_PER_HOST {
                let s = spec(h, w);
                let want = 1_000 + 300 * ((round.round as u64 + w as u64 + h as u64) % 5);
                let bid = Bid {
                    bid_id: uuid::Uuid::new_v4(),
                    round: round.round,
                    host: s.host.clone(),
                    workload: s.workload.clone(),
                    bundles: vec![
                        Bundle { id: "keep".into(), alloc: s.guaranteed, value: 0.0, offer: Offer::Keep },
                        Bundle {
                            id: "grow".into(),
                            alloc: ResourceVector::new(want, 1 << 30, 0, 0),
                            value: 5.0 + (w as f64) * 3.0,
                            offer: Offer::Request,
                        },
                    ],
                    standing_rounds: 1,
                    forecast: ForecastSource::Fallback,
                };
                let _ = bus.submit_bid(&bid).await;
            }
        }
    }
}

async fn register_everything(bus: &Bus) {
    for h in 0..HOSTS {
        let registration = HostRegistration {
            host: host_id(h),
            capacity: ResourceVector::new(CPU_CAPACITY, 16 << 30, 0, 0),
            enforces: vec![Resource::Cpu, Resource::Memory],
            backend: "dry-run".into(),
            agent_version: "test".into(),
        };
        let reply = until_answered(bus, bus.subjects().register_host(), &registration).await;
        assert_eq!(reply, RegistrationReply::Accepted);
        for w in 0..WORKLOADS_PER_HOST {
            let reply = until_answered(bus, bus.subjects().register_workload(), &spec(h, w)).await;
            assert_eq!(reply, RegistrationReply::Accepted);
        }
    }
    // Admission control answers on the reply subject.
    let mut greedy = spec(0, 9);
    greedy.guaranteed.cpu = CPU_CAPACITY;
    greedy.limit.cpu = CPU_CAPACITY;
    match until_answered(bus, bus.subjects().register_workload(), &greedy).await {
        RegistrationReply::Refused { reason } => assert!(reason.contains("does not fit"), "{reason}"),
        other => panic!("an oversized guarantee was admitted: {other:?}"),
    }
    let quota = QuotaChange { tenant: TenantId::new("shop").unwrap(), resource: Resource::Cpu, limit: Some(TENANT_CPU_QUOTA) };
    assert_eq!(until_answered(bus, bus.subjects().quotas(), &quota).await, RegistrationReply::Accepted);
}

/// Reads the decisions on the stream up to round `last` (rounds go on meanwhile), checking each
/// against capacity and quota.
async fn read_decisions(bus: &Bus, last: RoundId) -> BTreeMap<(RoundId, HostId), Decision> {
    let mut feed = bus.decisions(ReplayFrom::All, None).await.unwrap();
    let mut seen = BTreeMap::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(2), feed.next()).await {
        let d = item.unwrap().decision.expect("every stored decision decodes");
        if d.round > last {
            break;
        }
        let total = ResourceVector::checked_sum(d.allocations.iter().map(|a| &a.alloc)).unwrap();
        assert!(total.cpu <= CPU_CAPACITY, "round {} host {} allocates {} millicores", d.round, d.host, total.cpu);
        for a in &d.allocations {
            assert!(a.payment <= a.value + 1e-9);
        }
        let previous = seen.insert((d.round, d.host.clone()), d);
        assert!(previous.is_none(), "a round/host pair appears twice on the stream");
    }
    seen
}

fn check_quota(decisions: &BTreeMap<(RoundId, HostId), Decision>) {
    let mut per_round: BTreeMap<RoundId, u64> = BTreeMap::new();
    for ((round, _), d) in decisions {
        for a in &d.allocations {
            let w: usize = a.workload.as_str()[1..].parse().unwrap();
            if w % 2 == 0 {
                *per_round.entry(*round).or_default() += a.alloc.cpu;
            }
        }
    }
    for (round, cpu) in per_round {
        // Quota rounds start once the quota is committed; all rounds are checked, which is stricter.
        assert!(cpu <= TENANT_CPU_QUOTA, "round {round}: tenant shop holds {cpu} millicores > quota");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_survive_the_leader_being_killed_and_the_cluster_restarting() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let nats = NatsServer::start();
    let bus = nats.bus().await;
    let mut cluster = Cluster::start(&nats);
    let (first_leader, elected_in) =
        wait_for_leader(&bus, None, Duration::from_secs(20)).await.expect("a leader is elected");
    println!("first leader: node {first_leader} after {elected_in:?}");
    register_everything(&bus).await;
    let agents = tokio::spawn(simulated_agents(bus.clone()));

    // Run rounds, then SIGKILL the leader mid-run.
    // The cluster's progress: the highest round any replica has applied (a replica that just
    // restarted may answer with an older view).
    let start_round = progress_of(&bus, &[1, 2, 3]).await;
    run_until(&bus, &[1, 2, 3], start_round + 15).await;
    let leader = status(&bus, bus.subjects().status()).await.unwrap().leader.unwrap();
    let killed_at = Instant::now();
    cluster.kill(leader);
    let (new_leader, _) = wait_for_leader(&bus, Some(leader), Duration::from_secs(10)).await.expect("a new leader");
    let failover = killed_at.elapsed();
    println!("failover: node {leader} killed, node {new_leader} leads after {failover:?}");
    assert!(failover < Duration::from_secs(3), "failover took {failover:?}");

    // Rounds continue under the new leader.
    let at_failover = progress_of(&bus, &[1, 2, 3]).await;
    run_until(&bus, &[1, 2, 3], at_failover + 20).await;

    // The killed replica restarts from its own disk and catches up.
    cluster.start_replica(leader);
    let caught_up = entente_tests::eventually(Duration::from_secs(15), async || {
        let mine = status(&bus, bus.subjects().node_status(leader)).await?;
        let any = status(&bus, bus.subjects().status()).await?;
        (mine.last_round + 3 >= any.last_round && mine.hosts_total == HOSTS as u32).then_some(mine)
    })
    .await;
    let rejoined = caught_up.unwrap_or_else(|| panic!("node {leader} did not catch up:\n{}", tail(&cluster.log(leader))));
    assert_eq!(rejoined.workloads_total, (HOSTS * WORKLOADS_PER_HOST) as u32);
    agents.abort();

    // The stream: every decision fits, no round twice per host, and no gap for any host.
    let last = progress_of(&bus, &[1, 2, 3]).await;
    tokio::time::sleep(Duration::from_millis(2 * ROUND_MS)).await;
    let decisions = read_decisions(&bus, last).await;
    check_quota(&decisions);
    for h in 0..HOSTS {
        let rounds: Vec<RoundId> = decisions.keys().filter(|(_, host)| *host == host_id(h)).map(|(r, _)| *r).collect();
        assert!(rounds.len() >= 35, "host {h} has only {} decided rounds", rounds.len());
        let first = rounds[0];
        let expected: Vec<RoundId> = (first..first + rounds.len() as u64).collect();
        assert_eq!(rounds, expected, "host {h}: decided rounds have a gap");
    }
    let growers = decisions.values().flat_map(|d| &d.allocations).filter(|a| a.bundle.as_deref() == Some("grow")).count();
    assert!(growers > 0, "some bids won");

    // The whole cluster restarts from disk with its ledger intact.
    let before = status(&bus, bus.subjects().status()).await.unwrap();
    cluster.stop_all();
    for node in 1..=3 {
        cluster.start_replica(node);
    }
    wait_for_leader(&bus, None, Duration::from_secs(20)).await.expect("a leader after the restart");
    let after = entente_tests::eventually(Duration::from_secs(15), async || {
        status(&bus, bus.subjects().status()).await.filter(|s| s.last_round >= before.last_round)
    })
    .await
    .expect("the restarted cluster continues from its last round");
    assert_eq!(after.hosts_total, before.hosts_total);
    assert_eq!(after.workloads_total, before.workloads_total);
    let names = |s: &ClusterStatus| -> BTreeSet<(String, String)> {
        s.hosts.iter().flat_map(|h| h.workloads.iter().map(|w| (h.host.to_string(), w.workload.to_string()))).collect()
    };
    assert_eq!(names(&after), names(&before));
    let budgets_ok = after.hosts.iter().flat_map(|h| &h.workloads).all(|w| w.balance <= w.budget && w.balance >= 0.0);
    assert!(budgets_ok);
    // Two replicas are enough for the checks above; the third may still be starting. Every one
    // answers for itself (so it has installed its signal handlers) before the clean stop, which
    // would otherwise kill a replica that had not got that far yet.
    for node in 1..=3 {
        entente_tests::eventually(Duration::from_secs(15), async || status(&bus, bus.subjects().node_status(node)).await)
            .await
            .unwrap_or_else(|| panic!("node {node} did not come back after the restart:\n{}", tail(&cluster.log(node))));
    }
    cluster.stop_all();
}

/// The highest round any of `nodes` has applied.
async fn progress_of(bus: &Bus, nodes: &[NodeId]) -> RoundId {
    let mut last = 0;
    for &node in nodes {
        if let Some(s) = status(bus, bus.subjects().node_status(node)).await {
            last = last.max(s.last_round);
        }
    }
    last
}

/// Waits until one of `nodes` has applied `round`.
async fn run_until(bus: &Bus, nodes: &[NodeId], round: RoundId) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress_of(bus, nodes).await < round {
        assert!(Instant::now() < deadline, "rounds stopped short of round {round}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_replaced_by_a_new_one_that_then_votes() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let nats = NatsServer::start();
    let bus = nats.bus().await;
    let mut cluster = Cluster::start(&nats);
    wait_for_leader(&bus, None, Duration::from_secs(20)).await.expect("a leader is elected");
    register_everything(&bus).await;
    let agents = tokio::spawn(simulated_agents(bus.clone()));
    let start = progress_of(&bus, &[1, 2, 3]).await;
    run_until(&bus, &[1, 2, 3], start + 5).await;

    // Replace a follower with node 4, the way an operator would: start the new replica with
    // --join, then ask the leader to change the members.
    let leader = status(&bus, bus.subjects().status()).await.unwrap().leader.unwrap();
    let retired = (1..=3).find(|n| *n != leader).unwrap();
    cluster.start_joining(4);
    let change = MembershipChange { add: vec![4], remove: vec![retired] };
    let reply: MembershipReply = bus
        .request(bus.subjects().members(), &change, Some(Duration::from_secs(30)))
        .await
        .expect("the leader answers a membership change");
    let mut expected: Vec<NodeId> = (1..=4).filter(|n| *n != retired).collect();
    expected.sort();
    assert_eq!(reply, MembershipReply::Changed { members: expected.clone() });
    cluster.stop(retired);

    // The new replica holds the ledger and reports the new membership.
    let joined = entente_tests::eventually(Duration::from_secs(15), async || {
        let s = status(&bus, bus.subjects().node_status(4)).await?;
        (s.members == expected && s.hosts_total == HOSTS as u32).then_some(s)
    })
    .await
    .unwrap_or_else(|| panic!("node 4 did not join:\n{}", tail(&cluster.log(4))));
    assert_eq!(joined.workloads_total, (HOSTS * WORKLOADS_PER_HOST) as u32);

    // Node 4 is a voter: with the old leader gone, the remaining two of {leader, other, 4}
    // elect a new leader only if node 4 votes, and rounds continue.
    let at_replacement = progress_of(&bus, &expected).await;
    cluster.kill(leader);
    let (new_leader, _) = wait_for_leader(&bus, Some(leader), Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no leader without node {leader}:\n{}", tail(&cluster.log(4))));
    assert_ne!(new_leader, retired);
    let survivors: Vec<NodeId> = expected.iter().copied().filter(|n| *n != leader).collect();
    run_until(&bus, &survivors, at_replacement + 10).await;
    agents.abort();

    // The stream through the whole change: every decision fits, no round twice per host.
    let last = progress_of(&bus, &survivors).await;
    tokio::time::sleep(Duration::from_millis(2 * ROUND_MS)).await;
    let decisions = read_decisions(&bus, last).await;
    check_quota(&decisions);
    assert!(decisions.keys().any(|(r, _)| *r > at_replacement + 5), "rounds were decided after the change");
    cluster.stop_all();
}
