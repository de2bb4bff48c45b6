//! Raft RPCs between arbiter replicas over NATS request/reply.
//!
//! Each replica answers on `<prefix>.raft.<node>.{append,vote,snapshot}`. Requests and replies
//! are MessagePack with named fields; they are internal to the cluster, so they carry openraft's
//! own types rather than the public protocol envelope. A reply is an [`RpcReply`]: the RPC's
//! response, the Raft error the remote returned, or a note that the request was malformed.
//!
//! NATS imposes two limits that openraft does not know about, and this module maps both:
//! - time: every request carries the RPC's hard TTL as its NATS timeout; a timeout becomes
//!   `RPCError::Timeout`, and "no responders" (the replica is down) becomes `Unreachable`, so
//!   openraft backs off instead of hammering a dead node;
//! - size: no message may exceed the server's `max_payload`. An AppendEntries batch that would is
//!   refused locally with `PayloadTooLarge` and a hint of how many entries fit, and openraft
//!   resends fewer; snapshot chunks bigger than what fits are cut into several requests with
//!   consecutive offsets, which the receiver reassembles as if the leader had sent them so.

use super::{ArbiterRaft, NodeId, ReplicatedState, TypeConfig};
use entente_protocol::{RaftRpc, Subjects};
use futures::StreamExt;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, SnapshotMeta, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Room left in every message for what is not the RPC itself (NATS protocol line, reply
/// subject): the limit applies to the payload only, but a margin costs nothing.
const PAYLOAD_HEADROOM: usize = 1024;
/// The payload limit assumed when the server has not told one (NATS's own default).
const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// The answer to a Raft RPC, as sent back over NATS.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcReply<T, E> {
    /// The RPC's response.
    Ok(T),
    /// The remote Raft refused or failed the RPC.
    Raft(E),
    /// The request could not be decoded (or arrived on a subject that is no RPC).
    BadRequest(String),
}

/// An InstallSnapshot chunk on the wire: openraft's request with the data as a MessagePack
/// binary (a plain `Vec<u8>` would be encoded as an array, up to twice as big).
#[derive(Serialize, Deserialize)]
struct SnapshotChunk {
    vote: Vote<NodeId>,
    meta: SnapshotMeta<NodeId, BasicNode>,
    offset: u64,
    done: bool,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// Counters of what the transport did, shared by a replica's clients and its endpoint: the
/// figures an operator (and a test) needs to see that limits are being hit.
#[derive(Debug, Default)]
pub struct RpcStats {
    requests: AtomicU64,
    timeouts: AtomicU64,
    unreachable: AtomicU64,
    append_too_large: AtomicU64,
    snapshot_requests: AtomicU64,
    malformed_received: AtomicU64,
}

/// A reading of [`RpcStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RpcCounts {
    /// Requests sent to other replicas.
    pub requests: u64,
    /// Requests that got no reply within their TTL.
    pub timeouts: u64,
    /// Requests nobody answered, or answered with something unusable.
    pub unreachable: u64,
    /// AppendEntries batches refused locally as too large for one message.
    pub append_too_large: u64,
    /// InstallSnapshot requests sent (more than openraft's chunks when chunks are split).
    pub snapshot_requests: u64,
    /// Malformed requests this replica received and refused.
    pub malformed_received: u64,
}

impl RpcStats {
    pub fn counts(&self) -> RpcCounts {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RpcCounts {
            requests: read(&self.requests),
            timeouts: read(&self.timeouts),
            unreachable: read(&self.unreachable),
            append_too_large: read(&self.append_too_large),
            snapshot_requests: read(&self.snapshot_requests),
            malformed_received: read(&self.malformed_received),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The largest RPC payload that may be sent through `client`, given an optional lower cap.
pub fn rpc_payload_limit(client: &async_nats::Client, cap: Option<usize>) -> usize {
    let server = match client.server_info().max_payload {
        0 => DEFAULT_MAX_PAYLOAD,
        n => n,
    };
    let limit = cap.map_or(server, |c| c.min(server));
    limit.saturating_sub(PAYLOAD_HEADROOM).max(PAYLOAD_HEADROOM)
}

/// Opens RPC clients to the other replicas.
pub struct NatsNetworkFactory<S> {
    client: async_nats::Client,
    subjects: Subjects,
    self_id: NodeId,
    max_rpc_bytes: Option<usize>,
    stats: Arc<RpcStats>,
    state: PhantomData<fn() -> S>,
}

impl<S> NatsNetworkFactory<S> {
    /// RPC clients for replica `self_id` over `client`.
    pub fn new(client: async_nats::Client, subjects: Subjects, self_id: NodeId) -> Self {
        NatsNetworkFactory { client, subjects, self_id, max_rpc_bytes: None, stats: Arc::default(), state: PhantomData }
    }

    /// Counts into `stats` instead of counters of its own.
    pub fn with_stats(mut self, stats: Arc<RpcStats>) -> Self {
        self.stats = stats;
        self
    }

    pub fn stats(&self) -> Arc<RpcStats> {
        self.stats.clone()
    }

    /// Caps RPC payloads below the server's `max_payload` (tests use it to force splitting).
    pub fn with_max_rpc_bytes(mut self, max: Option<usize>) -> Self {
        self.max_rpc_bytes = max;
        self
    }
}

impl<S: ReplicatedState> RaftNetworkFactory<TypeConfig<S>> for NatsNetworkFactory<S> {
    type Network = NatsNetwork<S>;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        NatsNetwork {
            client: self.client.clone(),
            subjects: self.subjects.clone(),
            self_id: self.self_id,
            target,
            max_rpc_bytes: self.max_rpc_bytes,
            stats: self.stats.clone(),
            state: PhantomData,
        }
    }
}

/// The RPC client from this replica to one other.
pub struct NatsNetwork<S> {
    client: async_nats::Client,
    subjects: Subjects,
    self_id: NodeId,
    target: NodeId,
    max_rpc_bytes: Option<usize>,
    stats: Arc<RpcStats>,
    state: PhantomData<fn() -> S>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

fn unreachable_because<E: std::error::Error>(message: String) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(message)))
}

impl<S> NatsNetwork<S> {
    fn limit(&self) -> usize {
        rpc_payload_limit(&self.client, self.max_rpc_bytes)
    }

    /// Sends one request and decodes its reply, mapping what NATS reports to what openraft
    /// expects of a network.
    async fn call<T, E>(&self, rpc: RaftRpc, action: RPCTypes, payload: Vec<u8>, ttl: Duration) -> RpcResult<T, E>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let subject = self.subjects.raft(self.target, rpc);
        let request = async_nats::Request::new().payload(payload.into()).timeout(Some(ttl));
        bump(&self.stats.requests);
        let reply = match self.client.send_request(subject.clone(), request).await {
            Ok(reply) => reply,
            Err(e) => {
                use async_nats::RequestErrorKind;
                match e.kind() {
                    RequestErrorKind::TimedOut => bump(&self.stats.timeouts),
                    RequestErrorKind::NoResponders | RequestErrorKind::MaxPayloadExceeded => {
                        bump(&self.stats.unreachable)
                    }
                    _ => {}
                }
                return Err(match e.kind() {
                    RequestErrorKind::TimedOut => {
                        RPCError::Timeout(Timeout { action, id: self.self_id, target: self.target, timeout: ttl })
                    }
                    // Nobody subscribes: the replica is down. Unreachable makes openraft back
                    // off before the next try.
                    RequestErrorKind::NoResponders => unreachable_because(format!("no replica answers on {subject}")),
                    RequestErrorKind::MaxPayloadExceeded => {
                        unreachable_because(format!("request on {subject} exceeds the server's max payload"))
                    }
                    _ => RPCError::Network(NetworkError::new(&e)),
                });
            }
        };
        match rmp_serde::from_slice::<RpcReply<T, RaftError<NodeId, E>>>(&reply.payload) {
            Ok(RpcReply::Ok(response)) => Ok(response),
            Ok(RpcReply::Raft(error)) => Err(RPCError::RemoteError(RemoteError::new(self.target, error))),
            Ok(RpcReply::BadRequest(reason)) => {
                bump(&self.stats.unreachable);
                tracing::error!(target = self.target, %subject, %reason, "a replica refused a raft request as malformed");
                Err(unreachable_because(format!("replica {} refused the request: {reason}", self.target)))
            }
            Err(e) => {
                bump(&self.stats.unreachable);
                tracing::error!(target = self.target, %subject, error = %e, "undecodable raft reply");
                Err(unreachable_because(format!("undecodable reply from replica {}: {e}", self.target)))
            }
        }
    }
}

fn encode<T: Serialize, E: std::error::Error>(value: &T) -> Result<Vec<u8>, RPCError<NodeId, BasicNode, E>> {
    rmp_serde::to_vec_named(value).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

impl<S: ReplicatedState> RaftNetwork<TypeConfig<S>> for NatsNetwork<S> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig<S>>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let payload = encode(&rpc)?;
        let limit = self.limit();
        if payload.len() > limit {
            let entries = rpc.entries.len() as u64;
            if entries > 1 {
                // Entries make up nearly all of the size: ask for the share that fits, less a
                // tenth for entries bigger than the average.
                let fit = (entries as u128 * limit as u128 / payload.len() as u128) as u64;
                let hint = (fit - fit / 10).clamp(1, entries - 1);
                tracing::debug!(
                    target = self.target,
                    bytes = payload.len(),
                    limit,
                    entries,
                    hint,
                    "append batch too large"
                );
                bump(&self.stats.append_too_large);
                return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)));
            }
            tracing::error!(
                target = self.target,
                bytes = payload.len(),
                limit,
                "a single raft entry exceeds the NATS payload limit; it cannot be replicated"
            );
            return Err(unreachable_because(format!(
                "a single entry of {} bytes exceeds the payload limit of {limit}",
                payload.len()
            )));
        }
        self.call(RaftRpc::Append, RPCTypes::AppendEntries, payload, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig<S>>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let InstallSnapshotRequest { vote, meta, offset, data, done } = rpc;
        let mut chunk = SnapshotChunk { vote, meta, offset, done, data: Vec::new() };
        let header = encode(&chunk)?.len();
        let room = self.limit().saturating_sub(header + 16);
        if room == 0 {
            return Err(unreachable_because(format!(
                "snapshot metadata of {header} bytes leaves no room for data under the payload limit"
            )));
        }
        let total = data.len();
        let mut start = 0;
        loop {
            let end = (start + room).min(total);
            let last = end == total;
            chunk.offset = offset + start as u64;
            chunk.done = done && last;
            chunk.data = data[start..end].to_vec();
            let payload = encode(&chunk)?;
            bump(&self.stats.snapshot_requests);
            let response: InstallSnapshotResponse<NodeId> =
                self.call(RaftRpc::Snapshot, RPCTypes::InstallSnapshot, payload, option.hard_ttl()).await?;
            // A higher vote means this leader is deposed: stop sending, openraft reads the vote.
            if last || response.vote > chunk.vote {
                return Ok(response);
            }
            start = end;
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        let payload = encode(&rpc)?;
        self.call(RaftRpc::Vote, RPCTypes::Vote, payload, option.hard_ttl()).await
    }
}

/// A replica's RPC endpoint, subscribed and ready to [`RaftServer::run`].
pub struct RaftServer<S: ReplicatedState> {
    raft: ArbiterRaft<S>,
    client: async_nats::Client,
    subjects: Subjects,
    node_id: NodeId,
    subscriber: async_nats::Subscriber,
    stats: Arc<RpcStats>,
}

impl<S: ReplicatedState> RaftServer<S> {
    /// Subscribes to `<prefix>.raft.<node_id>.*` and waits until the server has the subscription,
    /// so that peers can reach this replica as soon as this returns.
    pub async fn bind(
        raft: ArbiterRaft<S>,
        client: async_nats::Client,
        subjects: Subjects,
        node_id: NodeId,
    ) -> Result<Self, String> {
        let subject = subjects.raft_node_all(node_id);
        let subscriber =
            client.subscribe(subject.clone()).await.map_err(|e| format!("cannot subscribe to {subject}: {e}"))?;
        client.flush().await.map_err(|e| format!("cannot flush the subscription to {subject}: {e}"))?;
        Ok(RaftServer { raft, client, subjects, node_id, subscriber, stats: Arc::default() })
    }

    /// Counts into `stats` (usually the replica's client counters) instead of counters of its own.
    pub fn with_stats(mut self, stats: Arc<RpcStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Answers RPCs until `shutdown` completes or the subscription ends. Each request is handled
    /// in its own task, so a slow snapshot install does not hold up votes and heartbeats.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                message = self.subscriber.next() => match message {
                    Some(message) => {
                        let raft = self.raft.clone();
                        let client = self.client.clone();
                        let rpc = self.rpc_of(&message.subject);
                        let stats = self.stats.clone();
                        tokio::spawn(async move { handle(raft, client, rpc, message, &stats).await });
                    }
                    None => {
                        tracing::warn!(node = self.node_id, "raft RPC subscription ended");
                        break;
                    }
                },
            }
        }
        if let Err(e) = self.subscriber.unsubscribe().await {
            tracing::debug!(node = self.node_id, error = %e, "unsubscribing the raft RPC subject");
        }
    }

    fn rpc_of(&self, subject: &str) -> Option<RaftRpc> {
        [RaftRpc::Append, RaftRpc::Vote, RaftRpc::Snapshot]
            .into_iter()
            .find(|rpc| self.subjects.raft(self.node_id, *rpc) == subject)
    }
}

/// Answers Raft RPCs addressed to `node_id` until `shutdown` completes.
pub async fn serve<S: ReplicatedState>(
    raft: ArbiterRaft<S>,
    client: async_nats::Client,
    subjects: Subjects,
    node_id: NodeId,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), String> {
    RaftServer::bind(raft, client, subjects, node_id).await?.run(shutdown).await;
    Ok(())
}

async fn handle<S: ReplicatedState>(
    raft: ArbiterRaft<S>,
    client: async_nats::Client,
    rpc: Option<RaftRpc>,
    message: async_nats::Message,
    stats: &RpcStats,
) {
    let Some(reply_to) = message.reply.clone() else {
        tracing::warn!(subject = %message.subject, "raft RPC without a reply subject; ignored");
        return;
    };
    let encoded = match rpc {
        Some(RaftRpc::Append) => match rmp_serde::from_slice::<AppendEntriesRequest<TypeConfig<S>>>(&message.payload) {
            Ok(request) => encode_reply(raft.append_entries(request).await),
            Err(e) => bad_request(stats, &message.subject, e),
        },
        Some(RaftRpc::Vote) => match rmp_serde::from_slice::<VoteRequest<NodeId>>(&message.payload) {
            Ok(request) => encode_reply(raft.vote(request).await),
            Err(e) => bad_request(stats, &message.subject, e),
        },
        Some(RaftRpc::Snapshot) => match rmp_serde::from_slice::<SnapshotChunk>(&message.payload) {
            Ok(chunk) => {
                let request = InstallSnapshotRequest {
                    vote: chunk.vote,
                    meta: chunk.meta,
                    offset: chunk.offset,
                    data: chunk.data,
                    done: chunk.done,
                };
                encode_reply(raft.install_snapshot(request).await)
            }
            Err(e) => bad_request(stats, &message.subject, e),
        },
        None => bad_request(stats, &message.subject, "not a raft RPC subject"),
    };
    let payload = match encoded {
        Ok(payload) => payload,
        Err(e) => {
            tracing::error!(subject = %message.subject, error = %e, "cannot encode a raft reply");
            return;
        }
    };
    if let Err(e) = client.publish(reply_to, payload.into()).await {
        tracing::warn!(subject = %message.subject, error = %e, "cannot send a raft reply");
    }
}

fn encode_reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let reply: RpcReply<T, E> = match result {
        Ok(response) => RpcReply::Ok(response),
        Err(error) => RpcReply::Raft(error),
    };
    rmp_serde::to_vec_named(&reply)
}

fn bad_request(
    stats: &RpcStats,
    subject: &str,
    reason: impl std::fmt::Display,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    bump(&stats.malformed_received);
    tracing::warn!(%subject, %reason, "malformed raft request");
    rmp_serde::to_vec_named(&RpcReply::<(), ()>::BadRequest(format!("malformed request on {subject}: {reason}")))
}
