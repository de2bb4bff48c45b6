//! Cluster status and administration: what `entente status` asks and what changes the
//! membership of the arbiter cluster.
//!
//! Every replica answers a status request with its own view (who it thinks leads, in which
//! term, and the ledger it has applied); membership changes are answered by the leader only.

use crate::codec::Message;
use crate::ids::{HostId, NodeId, RoundId, TenantId, WorkloadId};
use crate::messages::registration::WorkloadClass;
use crate::resources::{Resource, ResourceVector, MAX_AMOUNT};
use crate::validate::{check_count, check_text, ValidationError, MAX_WORKLOADS_PER_HOST};
use serde::{Deserialize, Serialize};

/// The most hosts a status reply lists; larger clusters are summarised (`hosts_total`).
pub const MAX_STATUS_HOSTS: usize = 256;
/// The most replicas a cluster may have.
pub const MAX_MEMBERS: usize = 9;

/// Asks a replica for its view of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// Include every workload of every listed host (bigger replies).
    pub workloads: bool,
}

impl Message for StatusRequest {
    const KIND: &'static str = "status_request";
    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }
}

/// One workload as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadStatus {
    pub workload: WorkloadId,
    pub tenant: TenantId,
    pub class: WorkloadClass,
    pub priority: u8,
    pub guaranteed: ResourceVector,
    pub limit: ResourceVector,
    /// The allocation in force (the guarantee when the lease has expired).
    pub allocation: ResourceVector,
    pub lease_expires_unix_ms: u64,
    pub bundle: Option<String>,
    pub balance: f64,
    pub budget: f64,
}

/// One host as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    pub host: HostId,
    pub capacity: ResourceVector,
    pub backend: String,
    pub enforces: Vec<Resource>,
    pub workload_count: u32,
    /// Listed only when the request asked for workloads.
    pub workloads: Vec<WorkloadStatus>,
    pub last_decided_round: Option<RoundId>,
}

/// A replica's view of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The replica that answered.
    pub node: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub members: Vec<NodeId>,
    pub last_round: RoundId,
    pub last_applied_index: Option<u64>,
    pub hosts_total: u32,
    pub workloads_total: u32,
    pub hosts: Vec<HostStatus>,
}

impl Message for ClusterStatus {
    const KIND: &'static str = "cluster_status";
    fn validate(&self) -> Result<(), ValidationError> {
        check_count("members", self.members.len(), MAX_MEMBERS)?;
        check_count("hosts", self.hosts.len(), MAX_STATUS_HOSTS)?;
        for (i, h) in self.hosts.iter().enumerate() {
            check_text(&format!("hosts[{i}].backend"), &h.backend)?;
            check_count(&format!("hosts[{i}].workloads"), h.workloads.len(), MAX_WORKLOADS_PER_HOST)?;
        }
        Ok(())
    }
}

/// Asks the leader to change the cluster's membership: add replicas (they catch up as learners
/// first), then remove others. Replacing a replica is one request with both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembershipChange {
    pub add: Vec<NodeId>,
    pub remove: Vec<NodeId>,
}

impl Message for MembershipChange {
    const KIND: &'static str = "membership_change";
    fn validate(&self) -> Result<(), ValidationError> {
        check_count("add", self.add.len(), MAX_MEMBERS)?;
        check_count("remove", self.remove.len(), MAX_MEMBERS)?;
        if self.add.is_empty() && self.remove.is_empty() {
            return Err(ValidationError::Empty { field: "add/remove".into() });
        }
        if let Some(n) = self.add.iter().find(|n| self.remove.contains(n)) {
            return Err(ValidationError::Inconsistent {
                field: "add".into(),
                reason: format!("node {n} is both added and removed"),
            });
        }
        Ok(())
    }
}

/// The leader's answer to a membership change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum MembershipReply {
    Changed { members: Vec<NodeId> },
    Refused { reason: String },
}

impl Message for MembershipReply {
    const KIND: &'static str = "membership_reply";
    fn validate(&self) -> Result<(), ValidationError> {
        match self {
            MembershipReply::Changed { members } => check_count("members", members.len(), MAX_MEMBERS),
            MembershipReply::Refused { reason } => check_text("reason", reason),
        }
    }
}

/// Sets (or with `limit: null`, removes) a tenant's cluster-wide quota on one resource: the most
/// of it the tenant's workloads may hold across all hosts together. Answered by the leader with
/// a [`RegistrationReply`](crate::RegistrationReply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaChange {
    pub tenant: TenantId,
    pub resource: Resource,
    pub limit: Option<u64>,
}

impl Message for QuotaChange {
    const KIND: &'static str = "quota_change";
    fn validate(&self) -> Result<(), ValidationError> {
        if let Some(limit) = self.limit.filter(|l| *l > MAX_AMOUNT) {
            return Err(ValidationError::TooLarge { field: "limit".into(), value: limit as f64, max: MAX_AMOUNT as f64 });
        }
        Ok(())
    }
}
