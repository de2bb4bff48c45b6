//! One arbiter replica, assembled: storage opened from its data directory, openraft started,
//! and its RPC endpoint serving on NATS, behind a handle that can propose commands, read the
//! applied state and shut everything down.

use super::log_store::{LogStore, LogStoreOptions};
use super::network::{rpc_payload_limit, NatsNetworkFactory, RaftServer, RpcCounts, RpcStats};
use super::state_machine::{SharedState, StateMachineStore};
use super::{ArbiterRaft, NodeId, ReplicatedState, TypeConfig};
use entente_protocol::bus::Bus;
use entente_protocol::Subjects;
use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{BasicNode, Config, StorageError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a replica runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// openraft's timing, snapshot policy and limits.
    pub raft: Config,
    /// When the log file is compacted.
    pub log: LogStoreOptions,
    /// Caps Raft RPC payloads below the NATS server's `max_payload`; `None` uses the server's.
    pub max_rpc_bytes: Option<usize>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            raft: Config {
                cluster_name: "entente-arbiter".into(),
                // openraft also uses the heartbeat interval as the TTL of every AppendEntries,
                // which includes the follower's fsync: not much lower than this.
                // Elections start after three to six missed heartbeats: failover (an election
                // timeout, twice when the first vote meets a live leader lease) stays within
                // about two seconds without spurious elections on a loaded host.
                heartbeat_interval: 150,
                election_timeout_min: 450,
                election_timeout_max: 900,
                // Chunks that fit a default NATS message (1 MiB) in one request, and a TTL per
                // chunk that a busy follower writing to disk can meet.
                snapshot_max_chunk_size: 512 << 10,
                install_snapshot_timeout: 2000,
                // Snapshots are the whole ledger (small); the log holds every round's decisions
                // (megabytes per round at a thousand hosts), in memory as well as on disk until a
                // snapshot lets it be purged. A snapshot every thousand entries (about a minute
                // of 1 s rounds at a thousand hosts) bounds both; a lagging follower within the
                // last 200 entries still catches up from the log instead of a snapshot.
                snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
                max_in_snapshot_log_to_keep: 200,
                // Must exceed the snapshot interval, or a snapshot cannot close the gap.
                replication_lag_threshold: 10_000,
                ..Config::default()
            },
            log: LogStoreOptions::default(),
            max_rpc_bytes: None,
        }
    }
}

/// Why a replica could not start, initialize or stop.
#[derive(Debug, thiserror::Error)]
pub enum RaftNodeError {
    #[error("invalid raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("raft storage in {dir}: {source}")]
    Storage { dir: PathBuf, source: StorageError<NodeId> },
    #[error("raft stopped: {0}")]
    Fatal(#[from] Fatal<NodeId>),
    #[error("raft RPC endpoint: {0}")]
    Endpoint(String),
    #[error("cannot initialize the cluster: {0}")]
    Initialize(RaftError<NodeId, InitializeError<NodeId, BasicNode>>),
    #[error("a background task failed: {0}")]
    Task(String),
}

/// Why a proposed command was not applied.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("command of {bytes} bytes exceeds the raft payload limit of {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    #[error("cannot encode the command: {0}")]
    Encode(String),
    #[error(transparent)]
    Raft(#[from] RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>),
}

impl WriteError {
    /// The leader to send the command to instead, when this replica is not the leader and knows
    /// who is.
    pub fn forward_to_leader(&self) -> Option<NodeId> {
        match self {
            WriteError::Raft(e) => e.forward_to_leader().and_then(|f| f.leader_id),
            _ => None,
        }
    }

    /// True when this replica is not the leader (whether or not it knows the leader).
    pub fn is_not_leader(&self) -> bool {
        matches!(self, WriteError::Raft(RaftError::APIError(ClientWriteError::ForwardToLeader(_))))
    }
}

/// A running replica.
pub struct RaftNode<S: ReplicatedState> {
    id: NodeId,
    raft: ArbiterRaft<S>,
    shared: SharedState<S>,
    subjects: Subjects,
    client: async_nats::Client,
    max_rpc_bytes: Option<usize>,
    stats: Arc<RpcStats>,
    stop_server: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// The node description openraft stores in the membership: the replica's subject root, for
/// humans reading metrics (routing uses the node id).
pub fn member_node(subjects: &Subjects, id: NodeId) -> BasicNode {
    BasicNode::new(format!("{}.raft.{id}", subjects.prefix()))
}

/// Starts replica `node_id` with its log and snapshots in `data_dir`, reachable through `bus`.
///
/// A fresh replica waits to be added to a cluster or for [`RaftNode::initialize_if_needed`]; a
/// restarted one resumes from its data directory.
pub async fn start_node<S: ReplicatedState>(
    node_id: NodeId,
    data_dir: &Path,
    bus: &Bus,
    config: NodeConfig,
) -> Result<RaftNode<S>, RaftNodeError> {
    let raft_config = Arc::new(config.raft.validate()?);
    let dir = data_dir.to_owned();
    let opened = tokio::task::spawn_blocking(move || {
        let log = LogStore::<TypeConfig<S>>::open(&dir, config.log)?;
        let state_machine = StateMachineStore::<S>::open(&dir)?;
        Ok::<_, StorageError<NodeId>>((log, state_machine))
    })
    .await
    .map_err(|e| RaftNodeError::Task(e.to_string()))?;
    let (log, state_machine) = opened.map_err(|source| RaftNodeError::Storage { dir: data_dir.to_owned(), source })?;
    let shared = state_machine.shared();
    let client = bus.client().clone();
    let subjects = bus.subjects().clone();
    let stats = Arc::new(RpcStats::default());
    let network = NatsNetworkFactory::<S>::new(client.clone(), subjects.clone(), node_id)
        .with_max_rpc_bytes(config.max_rpc_bytes)
        .with_stats(stats.clone());
    let raft = openraft::Raft::new(node_id, raft_config, network, log, state_machine).await?;
    let server = match RaftServer::bind(raft.clone(), client.clone(), subjects.clone(), node_id).await {
        Ok(server) => server.with_stats(stats.clone()),
        Err(e) => {
            let _ = raft.shutdown().await;
            return Err(RaftNodeError::Endpoint(e));
        }
    };
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    tracing::info!(node = node_id, dir = %data_dir.display(), "raft replica started");
    Ok(RaftNode {
        id: node_id,
        raft,
        shared,
        subjects,
        client,
        max_rpc_bytes: config.max_rpc_bytes,
        stats,
        stop_server: Some(stop_server),
        server: Some(server),
    })
}

impl<S: ReplicatedState> RaftNode<S> {
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The openraft handle, for everything this wrapper does not cover (metrics, membership
    /// changes, linearizable reads).
    pub fn raft(&self) -> &ArbiterRaft<S> {
        &self.raft
    }

    /// A handle on the applied state that outlives this borrow.
    pub fn shared(&self) -> SharedState<S> {
        self.shared.clone()
    }

    /// A copy of the state as this replica has applied it.
    pub fn state(&self) -> S {
        self.shared.state()
    }

    /// Reads the applied state without copying it.
    pub fn read_state<R>(&self, read: impl FnOnce(&S) -> R) -> R {
        read(&self.shared.read().state)
    }

    /// What the Raft transport of this replica has done so far.
    pub fn rpc_counts(&self) -> RpcCounts {
        self.stats.counts()
    }

    /// The leader as this replica last heard.
    pub async fn current_leader(&self) -> Option<NodeId> {
        self.raft.current_leader().await
    }

    /// Bootstraps a cluster of `members` if this replica has never been part of one (empty log,
    /// no vote). Safe on every start, and on every member: an initialized replica refuses, which
    /// counts as success. Returns whether this call initialized the cluster.
    pub async fn initialize_if_needed(&self, members: &[NodeId]) -> Result<bool, RaftNodeError> {
        if self.raft.is_initialized().await? {
            return Ok(false);
        }
        let nodes: BTreeMap<NodeId, BasicNode> =
            members.iter().map(|id| (*id, member_node(&self.subjects, *id))).collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(RaftNodeError::Initialize(e)),
        }
    }

    /// Proposes `command` and returns what applying it answered, once it is committed and applied
    /// on this replica (which must be the leader: see [`WriteError::forward_to_leader`]).
    pub async fn write(&self, command: S::Command) -> Result<S::Response, WriteError> {
        // A command that cannot travel in one AppendEntries would be committed by nobody and
        // retried forever: refuse it here, where the proposer can still hear about it. Half the
        // RPC limit leaves room for the entry's framing and the request around it.
        let bytes = rmp_serde::to_vec_named(&command).map_err(|e| WriteError::Encode(e.to_string()))?.len();
        let limit = rpc_payload_limit(&self.client, self.max_rpc_bytes) / 2;
        if bytes > limit {
            return Err(WriteError::TooLarge { bytes, limit });
        }
        Ok(self.raft.client_write(command).await?.data)
    }

    /// Stops answering RPCs and shuts Raft down; the data directory keeps everything for a
    /// restart.
    pub async fn shutdown(mut self) -> Result<(), RaftNodeError> {
        self.stop_endpoint().await;
        self.raft.shutdown().await.map_err(|e| RaftNodeError::Task(e.to_string()))
    }

    async fn stop_endpoint(&mut self) {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            if let Err(e) = server.await {
                tracing::warn!(node = self.id, error = %e, "raft RPC endpoint task failed");
            }
        }
    }
}

impl<S: ReplicatedState> Drop for RaftNode<S> {
    fn drop(&mut self) {
        // Dropped without `shutdown`: at least stop answering, so peers see the replica gone.
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
    }
}
