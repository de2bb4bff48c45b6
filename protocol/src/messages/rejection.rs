//! Rejection notices: the answer to a message the arbiter would not act on.
//!
//! A rejected bid never crashes or stalls a round: the arbiter counts it, logs it and publishes
//! one of these on `rejections.<host>`, so the agent (and an operator watching) learns why.

use crate::codec::Message;
use crate::ids::{HostId, RoundId, WorkloadId};
use crate::validate::{check_text, ValidationError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why something was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// It did not decode or did not validate.
    Malformed,
    /// It arrived after the round's deadline, or for a round already decided.
    Late,
    /// It names a round that has not been announced.
    UnknownRound,
    /// It names a host or workload the ledger does not know.
    UnknownWorkload,
    /// It came on another host's subject.
    ForeignHost,
    /// A bundle lies outside the workload's guarantee..limit range.
    OutsideLimits,
    /// Its value exceeds the workload's credit balance.
    OverBudget,
    /// Admission control refused a registration.
    AdmissionRefused,
    /// This replica is not the leader.
    NotLeader,
}

impl RejectReason {
    /// Every reason, so a counter by reason can start each at zero.
    pub const ALL: [RejectReason; 9] = [
        RejectReason::Malformed,
        RejectReason::Late,
        RejectReason::UnknownRound,
        RejectReason::UnknownWorkload,
        RejectReason::ForeignHost,
        RejectReason::OutsideLimits,
        RejectReason::OverBudget,
        RejectReason::AdmissionRefused,
        RejectReason::NotLeader,
    ];

    /// The reason's name as on the wire (`over_budget`), for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::Late => "late",
            RejectReason::UnknownRound => "unknown_round",
            RejectReason::UnknownWorkload => "unknown_workload",
            RejectReason::ForeignHost => "foreign_host",
            RejectReason::OutsideLimits => "outside_limits",
            RejectReason::OverBudget => "over_budget",
            RejectReason::AdmissionRefused => "admission_refused",
            RejectReason::NotLeader => "not_leader",
        }
    }
}

/// A notice that one message was rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub host: HostId,
    pub workload: Option<WorkloadId>,
    pub round: Option<RoundId>,
    pub bid_id: Option<Uuid>,
    pub reason: RejectReason,
    /// Human-readable detail: the validation error, the deadline missed, ...
    pub detail: String,
    pub at_unix_ms: u64,
}

impl Message for Rejection {
    const KIND: &'static str = "rejection";
    fn validate(&self) -> Result<(), ValidationError> {
        check_text("detail", &self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_the_wire_names() {
        for reason in RejectReason::ALL {
            let wire: String = rmp_serde::from_slice(&rmp_serde::to_vec(&reason).unwrap()).unwrap();
            assert_eq!(reason.as_str(), wire);
        }
        let distinct: std::collections::HashSet<_> = RejectReason::ALL.iter().collect();
        assert_eq!(distinct.len(), RejectReason::ALL.len());
    }
}
