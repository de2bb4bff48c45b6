//! `entente status`, `members`, `register` and `bid` against a real nats-server, with the test
//! playing the arbiter replica that answers: the real `entente` binary must send what its flags
//! say, print what the replica answered, and turn refusals and rejections into clear errors.

use entente_protocol::bus::{Bus, Inbox};
use entente_protocol::*;
use entente_tests::NatsServer;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(20);

fn entente(nats: &NatsServer, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_entente"));
    command.args(args).args(["--nats", &nats.url()]).env_remove("ENTENTE_LOG").env_remove("ENTENTE_PREFIX");
    command.kill_on_drop(true);
    command
}

async fn finish(command: &mut tokio::process::Command) -> Output {
    tokio::time::timeout(WAIT, command.output()).await.expect("entente finishes").unwrap()
}

async fn next<M: Message>(inbox: &mut Inbox<M>) -> entente_protocol::bus::Received<M> {
    tokio::time::timeout(WAIT, inbox.next()).await.expect("a request").expect("open")
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_what_the_replica_answered() {
    let nats = NatsServer::start();
    let replica: Bus = nats.bus().await;
    let mut requests = replica.subscribe::<StatusRequest>(replica.subjects().status()).await.unwrap();
    let answered = samples::cluster_status();
    let answer = {
        let replica = replica.clone();
        let answered = answered.clone();
        tokio::spawn(async move {
            let mut asked = Vec::new();
            for _ in 0..2 {
                let request = next(&mut requests).await;
                asked.push(request.message.unwrap().workloads);
                replica.reply(request.reply.unwrap(), &answered).await.unwrap();
            }
            asked
        })
    };
    let json = stdout(&finish(&mut entente(&nats, &["status", "--json"])).await);
    let table = stdout(&finish(&mut entente(&nats, &["status", "--summary"])).await);
    assert_eq!(answer.await.unwrap(), vec![true, false], "--summary leaves the workloads out");

    let printed: ClusterStatus = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(printed, answered);
    assert!(table.starts_with("leader 1  term 3  members [1, 2, 3]  last round 42"), "{table}");
    assert!(table.contains("1 hosts, 1 workloads") && table.contains("host-a"), "{table}");

    // No replica answers on another prefix.
    let output = finish(&mut entente(&nats, &["status", "--prefix", "elsewhere"])).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("entente: no arbiter answered"), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_register_send_what_the_flags_say() {
    let nats = NatsServer::start();
    let leader: Bus = nats.bus().await;
    let s = leader.subjects().clone();
    let mut changes = leader.subscribe::<MembershipChange>(s.members()).await.unwrap();
    let mut hosts = leader.subscribe::<HostRegistration>(s.register_host()).await.unwrap();
    let mut workloads = leader.subscribe::<WorkloadSpec>(s.register_workload()).await.unwrap();

    let output = finish(&mut entente(&nats, &["members"])).await;
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing to change"), "{output:?}");

    let mut members = entente(&nats, &["members", "--add", "4", "--remove", "1"]);
    let run = tokio::spawn(async move { finish(&mut members).await });
    let change = next(&mut changes).await;
    assert_eq!(change.message.as_ref().unwrap(), &MembershipChange { add: vec![4], remove: vec![1] });
    leader.reply(change.reply.unwrap(), &MembershipReply::Changed { members: vec![2, 3, 4] }).await.unwrap();
    assert_eq!(stdout(&run.await.unwrap()).trim(), "members: [2, 3, 4]");

    let mut register = entente(&nats, &["register", "host", "--host", "host-h", "--capacity", "cpu=4000,memory=8Gi"]);
    let run = tokio::spawn(async move { finish(&mut register).await });
    let request = next(&mut hosts).await;
    let registration = request.message.unwrap();
    assert_eq!(registration.host.as_str(), "host-h");
    assert_eq!(registration.capacity, ResourceVector::new(4000, 8 << 30, 0, 0));
    assert_eq!(registration.enforces, vec![Resource::Cpu, Resource::Memory]);
    leader.reply(request.reply.unwrap(), &RegistrationReply::Accepted).await.unwrap();
    assert_eq!(stdout(&run.await.unwrap()).trim(), "host host-h registered");

    let mut register = entente(
        &nats,
        &["register", "workload", "--host", "host-h", "--workload", "web", "--class", "latency-critical",
          "--priority", "90", "--guaranteed", "cpu=500", "--limit", "cpu=2000,memory=1Gi", "--budget", "300"],
    );
    let run = tokio::spawn(async move { finish(&mut register).await });
    let request = next(&mut workloads).await;
    let spec = request.message.unwrap();
    assert_eq!((spec.workload.as_str(), spec.class, spec.priority, spec.budget), ("web", WorkloadClass::LatencyCritical, 90, 300.0));
    assert_eq!((spec.guaranteed, spec.limit), (ResourceVector::new(500, 0, 0, 0), ResourceVector::new(2000, 1 << 30, 0, 0)));
    leader.reply(request.reply.unwrap(), &RegistrationReply::Refused { reason: "guarantees exceed capacity".into() }).await.unwrap();
    let output = run.await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("workload host-h/web refused: guarantees exceed capacity"), "{stderr}");

    // Bad input never reaches the bus.
    let output = finish(&mut entente(&nats, &["register", "host", "--host", "h", "--capacity", "cpu=lots"])).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cpu: \"lots\" is not a whole amount"), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bid_waits_for_a_round_and_reports_a_rejection() {
    let nats = NatsServer::start();
    let leader: Bus = nats.bus().await;
    let s = leader.subjects().clone();
    let host = HostId::new("host-b").unwrap();
    let mut bids = leader.subscribe::<Bid>(s.bids(&host)).await.unwrap();

    let mut bid = entente(
        &nats,
        &["bid", "--host", "host-b", "--workload", "web", "--bundle", "keep:cpu=500:0", "--bundle", "more:cpu=1500,memory=512Mi:20"],
    );
    let run = tokio::spawn(async move { finish(&mut bid).await });
    // Announce rounds until the command, subscribed at a moment the test cannot see, bids.
    let mut round = 1;
    let received = loop {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let announcement =
            RoundAnnouncement { round, announced_at_unix_ms: now, deadline_unix_ms: now + 2_000, interval_ms: 3_000, leader: 1, term: 1 };
        leader.announce_round(&announcement).await.unwrap();
        if let Ok(Some(received)) = tokio::time::timeout(Duration::from_millis(200), bids.next()).await {
            break received.message.unwrap();
        }
        round += 1;
        assert!(round < 100, "entente bid never bid");
    };
    // The bid is for a round announced (the command may have caught an earlier one).
    assert!((1..=round).contains(&received.round), "bid for round {} after {round} announced", received.round);
    let round = received.round;
    assert_eq!(received.workload.as_str(), "web");
    assert_eq!(received.bundles.len(), 2);
    assert_eq!((received.bundles[1].id.as_str(), received.bundles[1].alloc.memory, received.bundles[1].value), ("more", 512 << 20, 20.0));
    let rejection = Rejection {
        host: host.clone(),
        workload: Some(received.workload.clone()),
        round: Some(round),
        bid_id: Some(received.bid_id),
        reason: RejectReason::OverBudget,
        detail: "20 credits offered, budget 10".into(),
        at_unix_ms: 0,
    };
    leader.publish_rejection(&rejection).await.unwrap();
    let output = run.await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("round {round} rejected (over_budget): 20 credits offered, budget 10")), "{stderr}");

    // A bundle that does not parse is refused before anything is sent.
    let output = finish(&mut entente(&nats, &["bid", "--host", "host-b", "--workload", "web", "--bundle", "more:cpu=1500"])).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("ID:RESOURCES:VALUE"), "{output:?}");
}
