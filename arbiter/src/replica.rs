//! One arbiter replica, running: Raft over NATS with the ledger as its state, the status
//! endpoint every replica answers, and the leader's duties whenever it leads.
//!
//! Bootstrap is idempotent: every replica is started with the same peer list and asks to
//! initialize the cluster with it; openraft accepts that on a fresh cluster (all proposing the
//! same membership) and refuses it, harmlessly, once the cluster exists. A replica restarted
//! from its data directory rejoins from what it has on disk and catches up from the leader.

use crate::leader::{self, RoundSettings};
use crate::ledger::{Command, Ledger, Response};
use crate::raft::{start_node, NodeConfig, NodeId, RaftNode, ReplicatedState};
use openraft::LogId;
use entente_protocol::bus::{Bus, BusConfig, BusError};
use entente_protocol::{ClusterStatus, HostStatus, StatusRequest, WorkloadStatus};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

impl ReplicatedState for Ledger {
    type Command = Command;
    type Response = Response;

    fn apply(&mut self, command: &Command, log_id: &LogId<NodeId>) -> Response {
        let response = Ledger::apply(self, command, log_id.leader_id.term, log_id.index);
        metrics::gauge!(crate::metrics::LAST_ROUND).set(self.last_round as f64);
        metrics::gauge!(crate::metrics::HOSTS).set(self.hosts.len() as f64);
        metrics::gauge!(crate::metrics::WORKLOADS).set(self.workload_count() as f64);
        response
    }
}

impl Default for Response {
    /// What blank and membership entries answer: nothing to report.
    fn default() -> Self {
        Response::Accepted
    }
}

/// How to run a replica.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    pub node_id: NodeId,
    pub bootstrap: Bootstrap,
    pub data_dir: PathBuf,
    pub bus: BusConfig,
    pub rounds: RoundSettings,
    pub raft: NodeConfig,
}

/// How a replica with an empty data directory becomes part of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Found the cluster with these voters (this replica included), unless it exists already.
    Found { peers: Vec<NodeId> },
    /// Wait to be added by the existing cluster's leader (a replacement replica).
    Join,
}

/// Why a replica stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Raft(#[from] crate::raft::RaftNodeError),
    #[error("{0}")]
    Config(String),
}

/// Takes an exclusive lock on `dir` for as long as the returned file lives. Two replicas on one
/// data directory would both believe they hold its log and votes, which breaks Raft's safety, so
/// the second is refused. The operating system drops the lock when the process dies, even by
/// SIGKILL, so a crash never leaves a stale lock behind.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, ReplicaError> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ReplicaError::Config(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ReplicaError::Config(format!(
            "data directory {} is in use by another running replica",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(ReplicaError::Config(format!("cannot lock {}: {e}", path.display())))
        }
    }
}

/// Runs the replica until `shutdown` completes.
pub async fn run(settings: ReplicaSettings, shutdown: impl Future<Output = ()>) -> Result<(), ReplicaError> {
    if let Bootstrap::Found { peers } = &settings.bootstrap {
        if !peers.contains(&settings.node_id) {
            return Err(ReplicaError::Config(format!("node {} is not among the peers {peers:?}", settings.node_id)));
        }
    }
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        ReplicaError::Config(format!("cannot create data directory {}: {e}", settings.data_dir.display()))
    })?;
    let _data_dir_lock = lock_data_dir(&settings.data_dir)?;
    let bus = Bus::connect(&settings.bus).await?;
    let node = Arc::new(start_node::<Ledger>(settings.node_id, &settings.data_dir, &bus, settings.raft.clone()).await?);
    match &settings.bootstrap {
        Bootstrap::Found { peers } => match node.initialize_if_needed(peers).await {
            Ok(true) => tracing::info!(?peers, "initialized a new cluster"),
            Ok(false) => tracing::info!("joined the existing cluster"),
            Err(e) => tracing::warn!(error = %e, "cluster initialization failed; waiting for the others"),
        },
        Bootstrap::Join => tracing::info!(
            node = settings.node_id,
            "waiting to be added to the cluster (entente members --add {})",
            settings.node_id
        ),
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let status = tokio::spawn(serve_status(node.clone(), bus.clone(), stop_rx.clone()));
    let duties = tokio::spawn(leader::run(node.clone(), bus.clone(), settings.rounds.clone(), stop_rx));
    shutdown.await;
    tracing::info!(node = settings.node_id, "shutting down");
    let _ = stop_tx.send(true);
    let graceful = async {
        let _ = duties.await;
        let _ = status.await;
        match Arc::try_unwrap(node) {
            Ok(node) => node.shutdown().await?,
            Err(_) => tracing::warn!("raft still referenced at shutdown; leaving it to the runtime"),
        }
        let _ = bus.flush().await;
        Ok::<(), ReplicaError>(())
    };
    // Everything on disk is already fsynced; a shutdown stuck on an unreachable NATS server (a
    // round being committed, a flush) must not keep the process alive.
    match tokio::time::timeout(SHUTDOWN_GRACE, graceful).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "shutdown did not finish in time; exiting anyway");
            Ok(())
        }
    }
}

/// How long a replica may take to stop cleanly.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Answers status requests with this replica's view, until told to stop.
async fn serve_status(node: Arc<RaftNode<Ledger>>, bus: Bus, mut stop: watch::Receiver<bool>) {
    let subjects = bus.subjects();
    let subscribed = futures::future::try_join(
        bus.queue_subscribe::<StatusRequest>(subjects.status(), "arbiter-status".into()),
        bus.subscribe::<StatusRequest>(subjects.node_status(node.id())),
    )
    .await;
    let (mut any, mut mine) = match subscribed {
        Ok(inboxes) => inboxes,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve status");
            return;
        }
    };
    loop {
        let received = tokio::select! {
            _ = stop.changed() => return,
            r = any.next() => match r { Some(r) => r, None => return },
            r = mine.next() => match r { Some(r) => r, None => return },
        };
        let Some(reply) = received.reply else { continue };
        let workloads = received.message.map(|r| r.workloads).unwrap_or(false);
        let status = cluster_status(&node, workloads);
        if let Err(e) = bus.reply(reply, &status).await {
            tracing::warn!(error = %e, "cannot answer a status request");
        }
    }
}

/// This replica's view of the cluster.
pub fn cluster_status(node: &RaftNode<Ledger>, with_workloads: bool) -> ClusterStatus {
    let metrics = node.raft().metrics().borrow().clone();
    let now = entente_protocol::clock::unix_ms_now();
    node.read_state(|ledger| ClusterStatus {
        node: node.id(),
        leader: metrics.current_leader,
        term: metrics.current_term,
        members: metrics.membership_config.membership().voter_ids().collect(),
        last_round: ledger.last_round,
        last_applied_index: metrics.last_applied.map(|l| l.index),
        hosts_total: ledger.hosts.len() as u32,
        workloads_total: ledger.workload_count() as u32,
        hosts: ledger
            .hosts
            .iter()
            .take(entente_protocol::messages::status::MAX_STATUS_HOSTS)
            .map(|(id, h)| HostStatus {
                host: id.clone(),
                capacity: h.registration.capacity,
                backend: h.registration.backend.clone(),
                enforces: h.registration.enforces.clone(),
                workload_count: h.workloads.len() as u32,
                workloads: if with_workloads {
                    h.workloads
                        .iter()
                        .map(|(wid, w)| WorkloadStatus {
                            workload: wid.clone(),
                            tenant: w.spec.tenant.clone(),
                            class: w.spec.class,
                            priority: w.spec.priority,
                            guaranteed: w.spec.guaranteed,
                            limit: w.spec.limit,
                            allocation: w.allocation_at(now),
                            lease_expires_unix_ms: w.lease_expires_unix_ms,
                            bundle: w.bundle.clone(),
                            balance: w.balance,
                            budget: w.spec.budget,
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                last_decided_round: h.last_decision.as_ref().map(|d| d.round),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_serves_one_replica_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_data_dir(dir.path()).expect("the first replica locks its directory");
        let refused = lock_data_dir(dir.path()).expect_err("a second replica on the same directory");
        assert!(refused.to_string().contains("in use by another running replica"), "{refused}");
        drop(held);
        lock_data_dir(dir.path()).expect("the lock is free again once its holder is gone");
    }
}
