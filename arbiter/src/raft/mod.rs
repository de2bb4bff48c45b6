//! Consensus plumbing of the arbiter cluster: openraft 0.9 (storage-v2) over NATS, with the log,
//! the vote and snapshots on local disk.
//!
//! The plumbing knows nothing about the ledger. Whatever the arbiter replicates implements
//! [`ReplicatedState`]: a deterministic value that commands are applied to, serializable so that
//! snapshots can carry it whole. [`TypeConfig<S>`] wires such a state into openraft, and
//! [`start_node`] assembles one replica: the durable log ([`log_store`]), the state machine and its
//! snapshots ([`state_machine`]), and the NATS transport ([`network`]).

// The storage and RPC errors are openraft's own types, fixed by the traits implemented here;
// boxing them at our boundaries would only add conversions on every call.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod network;
pub mod node;
pub mod state_machine;

use openraft::{BasicNode, LogId, StoredMembership};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cmp::Ordering;
use std::fmt;
use std::marker::PhantomData;

pub use log_store::{LogStore, LogStoreOptions};
pub use network::{serve, NatsNetwork, NatsNetworkFactory, RaftServer, RpcCounts, RpcReply, RpcStats};
pub use node::{member_node, start_node, NodeConfig, RaftNode, RaftNodeError, WriteError};
pub use state_machine::{Applied, SharedState, StateMachineStore};

/// A node of the arbiter cluster is named by a number; it is also the `<node>` token of its Raft
/// subjects.
pub type NodeId = u64;

/// The openraft handle of a replica replicating `S`.
pub type ArbiterRaft<S> = openraft::Raft<TypeConfig<S>>;

/// The state that the arbiter cluster replicates.
///
/// `apply` must be deterministic: every replica applies the same commands in the same order and
/// has to end in the same state, so it may not read clocks, randomness or anything outside `self`
/// and the command (a time the command needs travels inside it). It cannot fail either: a command
/// that turns out to be invalid is answered through `Response`, after it has been committed.
pub trait ReplicatedState: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What a proposer submits through the leader.
    type Command: openraft::AppData + Clone + fmt::Debug;
    /// What applying a command answers to its proposer. openraft wants an answer for every
    /// entry, and blank and membership entries answer `Response::default()`.
    type Response: openraft::AppDataResponse + Clone + Default + fmt::Debug;

    /// Applies one committed command.
    fn apply(&mut self, command: &Self::Command, log_id: &LogId<NodeId>) -> Self::Response;

    /// Called when a membership change is applied, for states that track the cluster.
    fn on_membership(&mut self, _membership: &StoredMembership<NodeId, BasicNode>) {}
}

/// openraft's type configuration for a cluster replicating `S`.
///
/// openraft wants its configuration type to be `Copy + Ord + Default + Debug`; derives would
/// demand the same of `S`, so those traits are implemented by hand for the zero-sized marker.
/// `fn() -> S` keeps the marker `Send + Sync` whatever `S` is.
pub struct TypeConfig<S>(PhantomData<fn() -> S>);

impl<S> Clone for TypeConfig<S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for TypeConfig<S> {}
impl<S> Default for TypeConfig<S> {
    fn default() -> Self {
        TypeConfig(PhantomData)
    }
}
impl<S> PartialEq for TypeConfig<S> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<S> Eq for TypeConfig<S> {}
impl<S> PartialOrd for TypeConfig<S> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<S> Ord for TypeConfig<S> {
    fn cmp(&self, _: &Self) -> Ordering {
        Ordering::Equal
    }
}
impl<S> fmt::Debug for TypeConfig<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TypeConfig<{}>", std::any::type_name::<S>())
    }
}

impl<S: ReplicatedState> openraft::RaftTypeConfig for TypeConfig<S> {
    type D = S::Command;
    type R = S::Response;
    type NodeId = NodeId;
    type Node = BasicNode;
    type Entry = openraft::Entry<Self>;
    type SnapshotData = std::io::Cursor<Vec<u8>>;
    type AsyncRuntime = openraft::TokioRuntime;
    type Responder = openraft::impls::OneshotResponder<Self>;
}
