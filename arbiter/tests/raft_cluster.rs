//! A three-replica arbiter cluster over a real nats-server: replication, failover, a restarted
//! replica catching up from its data directory, and a lagging replica brought up to date by a
//! chunked snapshot.

use entente_arbiter::raft::{start_node, NodeConfig, NodeId, RaftNode, ReplicatedState, RpcReply};
use entente_protocol::bus::Bus;
use entente_tests::{eventually, NatsServer};
use openraft::{LogId, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const PREFIX: &str = "rafttest";
/// Generous: the machine running the tests may be busy.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Kv {
    map: BTreeMap<String, String>,
    /// The log index of every applied command, to check that none is applied twice.
    applied: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Set {
    key: String,
    value: String,
}

impl ReplicatedState for Kv {
    type Command = Set;
    type Response = Option<String>;

    fn apply(&mut self, command: &Set, log_id: &LogId<NodeId>) -> Option<String> {
        self.applied.push(log_id.index);
        self.map.insert(command.key.clone(), command.value.clone())
    }
}

fn config(snapshot_every: u64, chunk: usize, max_rpc_bytes: Option<usize>) -> NodeConfig {
    let mut config = NodeConfig::default();
    config.raft.heartbeat_interval = 100;
    config.raft.election_timeout_min = 300;
    config.raft.election_timeout_max = 600;
    config.raft.snapshot_policy = SnapshotPolicy::LogsSinceLast(snapshot_every);
    config.raft.snapshot_max_chunk_size = chunk as u64;
    config.max_rpc_bytes = max_rpc_bytes;
    config
}

async fn bus(server: &NatsServer) -> Bus {
    Bus::connect(&server.bus_config(PREFIX)).await.expect("connect to nats-server")
}

async fn start(server: &NatsServer, id: NodeId, dir: &Path, config: &NodeConfig) -> RaftNode<Kv> {
    start_node::<Kv>(id, dir, &bus(server).await, config.clone()).await.expect("start replica")
}

/// The leader all `nodes` agree on, once they do.
async fn agreed_leader(nodes: &[&RaftNode<Kv>]) -> NodeId {
    eventually(WAIT, async || {
        let mut leaders = Vec::new();
        for node in nodes {
            leaders.push(node.current_leader().await?);
        }
        let first = leaders[0];
        (leaders.iter().all(|l| *l == first) && nodes.iter().any(|n| n.id() == first)).then_some(first)
    })
    .await
    .expect("the replicas agree on a leader")
}

async fn wait_for_keys(node: &RaftNode<Kv>, keys: usize) {
    let reached = eventually(WAIT, async || (node.read_state(|s| s.map.len()) >= keys).then_some(())).await;
    assert!(reached.is_some(), "replica {} has {} of {keys} keys", node.id(), node.read_state(|s| s.map.len()));
}

fn find(nodes: &[Option<RaftNode<Kv>>], id: NodeId) -> &RaftNode<Kv> {
    nodes.iter().flatten().find(|n| n.id() == id).expect("running replica")
}

async fn write_range(leader: &RaftNode<Kv>, range: std::ops::Range<usize>, value_len: usize) {
    for i in range {
        let command = Set { key: format!("key-{i:04}"), value: format!("{i:0width$}", width = value_len) };
        leader.write(command).await.unwrap_or_else(|e| panic!("write {i} through the leader: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_fails_over_and_catches_up() {
    let server = NatsServer::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("temporary directory")).collect();
    // RPCs capped at 2 KiB (1 KiB after headroom): the restarted replica's catch-up batch does
    // not fit in one AppendEntries and has to be cut down.
    let config = config(5000, 1 << 20, Some(2048));
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(Some(start(&server, i as NodeId + 1, dir.path(), &config).await));
    }
    let first = nodes[0].as_ref().expect("node 1");
    assert!(first.initialize_if_needed(&[1, 2, 3]).await.expect("initialize"));
    // Initializing is idempotent: a second call (a restart) leaves the cluster alone.
    assert!(!first.initialize_if_needed(&[1, 2, 3]).await.expect("initialize again"));

    let leader_id = agreed_leader(&nodes.iter().flatten().collect::<Vec<_>>()).await;
    let started = Instant::now();
    write_range(find(&nodes, leader_id), 0..50, 8).await;
    eprintln!("50 writes through the leader: {:?}", started.elapsed());
    for node in nodes.iter().flatten() {
        wait_for_keys(node, 50).await;
    }
    let reference = find(&nodes, leader_id).state();
    for node in nodes.iter().flatten() {
        assert_eq!(node.state(), reference, "replica {} diverged", node.id());
    }

    // A follower refuses writes and names the leader.
    let follower = nodes.iter().flatten().find(|n| n.id() != leader_id).expect("a follower");
    let refused = follower.write(Set { key: "x".into(), value: "y".into() }).await.expect_err("follower refuses");
    assert_eq!(refused.forward_to_leader(), Some(leader_id));

    // The leader goes away; the two others elect a new one and keep accepting writes.
    let old_index = nodes.iter().position(|n| n.as_ref().is_some_and(|n| n.id() == leader_id)).expect("leader");
    let stopped_at = Instant::now();
    nodes[old_index].take().expect("leader").shutdown().await.expect("shut down the leader");
    let survivors: Vec<&RaftNode<Kv>> = nodes.iter().flatten().collect();
    let new_leader = eventually(WAIT, async || {
        let leader = survivors[0].current_leader().await?;
        (leader != leader_id && survivors[1].current_leader().await == Some(leader)).then_some(leader)
    })
    .await
    .expect("a new leader among the survivors");
    eprintln!("new leader {new_leader} elected {:?} after the old one stopped", stopped_at.elapsed());
    assert!(stopped_at.elapsed() < Duration::from_secs(10), "election took {:?}", stopped_at.elapsed());
    write_range(find(&nodes, new_leader), 50..60, 100).await;

    // The old leader restarts from its data directory and catches up.
    nodes[old_index] = Some(start(&server, leader_id, dirs[old_index].path(), &config).await);
    let restarted = nodes[old_index].as_ref().expect("restarted");
    assert!(!restarted.initialize_if_needed(&[1, 2, 3]).await.expect("initialize after restart"));
    wait_for_keys(restarted, 60).await;
    let reference = find(&nodes, new_leader).state();
    eventually(WAIT, async || (restarted.state() == reference).then_some(()))
        .await
        .expect("restarted replica converges");
    let applied = &reference.applied;
    assert!(applied.windows(2).all(|w| w[0] < w[1]), "commands applied out of order or twice: {applied:?}");
    let counts = find(&nodes, new_leader).rpc_counts();
    eprintln!("new leader's transport: {counts:?}");
    assert!(counts.append_too_large > 0, "the catch-up batch should have been too large: {counts:?}");

    // Garbage on a replica's RPC subject is answered with an error, and the replica carries on.
    let client = bus(&server).await.client().clone();
    let subject = format!("{PREFIX}.raft.{new_leader}.append");
    let reply = client.request(subject, vec![0xc1, 0x00, 0xff].into()).await.expect("an answer to garbage");
    let decoded: RpcReply<(), ()> = rmp_serde::from_slice(&reply.payload).expect("a raft reply");
    assert!(matches!(decoded, RpcReply::BadRequest(_)), "{decoded:?}");
    assert_eq!(find(&nodes, new_leader).rpc_counts().malformed_received, 1);
    write_range(find(&nodes, new_leader), 60..61, 8).await;

    for node in nodes.into_iter().flatten() {
        node.shutdown().await.expect("shut down");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_installs_a_chunked_snapshot() {
    let server = NatsServer::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("temporary directory")).collect();
    // Snapshot every 20 entries and keep no log behind it, so a replica that missed them can
    // only catch up from a snapshot. The snapshot is cut into 1 KiB chunks by openraft, and the
    // 2 KiB RPC cap (1 KiB after headroom) makes the transport split each chunk again, and
    // refuse AppendEntries batches bigger than that.
    let mut config = config(20, 1024, Some(2048));
    config.raft.max_in_snapshot_log_to_keep = 0;
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(Some(start(&server, i as NodeId + 1, dir.path(), &config).await));
    }
    nodes[0].as_ref().expect("node 1").initialize_if_needed(&[1, 2, 3]).await.expect("initialize");
    let leader_id = agreed_leader(&nodes.iter().flatten().collect::<Vec<_>>()).await;
    write_range(find(&nodes, leader_id), 0..10, 100).await;
    for node in nodes.iter().flatten() {
        wait_for_keys(node, 10).await;
    }

    // Stop a follower; the others move on far enough to snapshot and purge what it lacks.
    let lagging_index = nodes.iter().position(|n| n.as_ref().is_some_and(|n| n.id() != leader_id)).expect("follower");
    let lagging = nodes[lagging_index].take().expect("follower");
    let lagging_id = lagging.id();
    let lagging_last = lagging.raft().metrics().borrow().last_log_index.expect("some log");
    lagging.shutdown().await.expect("shut down the follower");
    write_range(find(&nodes, leader_id), 10..120, 100).await;
    let leader = find(&nodes, leader_id);
    let purged = eventually(WAIT, async || {
        let metrics = leader.raft().metrics().borrow().clone();
        metrics.purged.filter(|p| p.index > lagging_last + 1).map(|p| p.index)
    })
    .await
    .expect("the leader purges the log behind its snapshot");
    eprintln!("leader purged up to {purged}; the lagging replica's log ends at {lagging_last}");

    let restarted_at = Instant::now();
    nodes[lagging_index] = Some(start(&server, lagging_id, dirs[lagging_index].path(), &config).await);
    let restarted = nodes[lagging_index].as_ref().expect("restarted");
    wait_for_keys(restarted, 120).await;
    eprintln!("lagging replica caught up through a snapshot in {:?}", restarted_at.elapsed());
    let counts = find(&nodes, leader_id).rpc_counts();
    let snapshot_bytes = rmp_serde::to_vec_named(&find(&nodes, leader_id).state()).expect("encode").len();
    eprintln!("leader's transport: {counts:?}; state of {snapshot_bytes} bytes");
    // Over 1 KiB chunks, each split again by the transport: clearly more requests than KiB.
    assert!(counts.snapshot_requests as usize > snapshot_bytes / 1024 + 1, "{counts:?}");
    let snapshot = restarted.raft().metrics().borrow().snapshot;
    assert!(snapshot.is_some_and(|s| s.index >= purged), "replica holds snapshot {snapshot:?}, leader purged {purged}");
    let reference = find(&nodes, leader_id).state();
    eventually(WAIT, async || (restarted.state().map == reference.map).then_some(()))
        .await
        .expect("the lagging replica converges");

    for node in nodes.into_iter().flatten() {
        node.shutdown().await.expect("shut down");
    }
}
