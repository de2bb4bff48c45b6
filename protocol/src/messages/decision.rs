//! Decisions: what the arbiter cluster decided for one host in one round.
//!
//! A decision is published only after Raft committed it, and carries the term and log index that
//! committed it, so a subscriber can tell an old leader's decision from a new one's. The JetStream
//! message id is `<round>/<host>`: a new leader re-publishing after failover cannot duplicate it.

use crate::codec::Message;
use crate::ids::{HostId, RoundId, WorkloadId};
use crate::messages::bid::Offer;
use crate::resources::{Resource, ResourceVector};
use crate::validate::{
    check_count, check_credits, check_non_negative, check_resources, ValidationError, MAX_CREDITS,
    MAX_WORKLOADS_PER_HOST,
};
use serde::{Deserialize, Serialize};

/// What one workload holds until the lease expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    pub workload: WorkloadId,
    /// The absolute allocation to enforce.
    pub alloc: ResourceVector,
    /// The id of the winning bundle; `null` when the workload won nothing and keeps its guarantee.
    pub bundle: Option<String>,
    /// The winning bundle's offer (tells the agent a trade-off or a delay was accepted).
    pub offer: Option<Offer>,
    /// The bundle's value as bid (after any cap at the workload's balance).
    pub value: f64,
    /// The VCG payment charged, in credits; never above `value`.
    pub payment: f64,
}

/// The outcome of one round for one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub round: RoundId,
    pub host: HostId,
    /// Raft term and log index of the entry that committed this decision.
    pub term: u64,
    pub index: u64,
    pub decided_at_unix_ms: u64,
    /// Agents hold the allocation until then; past it, unrenewed, they fall back to guarantees.
    pub lease_expires_unix_ms: u64,
    pub allocations: Vec<Allocation>,
    /// Sum of winning values.
    pub welfare: f64,
    /// True when the clearing engine proved the allocation optimal within its time budget.
    pub optimal: bool,
    /// Resources this decision allocates that the host's backend cannot enforce.
    pub unenforced: Vec<Resource>,
}

impl Decision {
    /// The JetStream message id that deduplicates this decision across leader failover.
    pub fn message_id(&self) -> String {
        format!("{}/{}", self.round, self.host)
    }

    /// The allocation of one workload, if the decision names it.
    pub fn allocation(&self, workload: &WorkloadId) -> Option<&Allocation> {
        self.allocations.iter().find(|a| &a.workload == workload)
    }
}

impl Message for Decision {
    const KIND: &'static str = "decision";
    fn validate(&self) -> Result<(), ValidationError> {
        if self.round == 0 {
            return Err(ValidationError::Empty { field: "round".into() });
        }
        check_count("allocations", self.allocations.len(), MAX_WORKLOADS_PER_HOST)?;
        check_count("unenforced", self.unenforced.len(), Resource::COUNT)?;
        check_non_negative("welfare", self.welfare, MAX_CREDITS * MAX_WORKLOADS_PER_HOST as f64)?;
        for (i, a) in self.allocations.iter().enumerate() {
            check_resources(&format!("allocations[{i}].alloc"), &a.alloc)?;
            check_credits(&format!("allocations[{i}].value"), a.value)?;
            check_credits(&format!("allocations[{i}].payment"), a.payment)?;
            if a.payment > a.value {
                return Err(ValidationError::Inconsistent {
                    field: format!("allocations[{i}].payment"),
                    reason: format!("{} is above the bundle's value of {}", a.payment, a.value),
                });
            }
            if self.allocations[..i].iter().any(|earlier| earlier.workload == a.workload) {
                return Err(ValidationError::Inconsistent {
                    field: format!("allocations[{i}].workload"),
                    reason: format!("{} is allocated twice", a.workload),
                });
            }
        }
        Ok(())
    }
}
