//! Round announcements: the arbiter leader opens round `r` and says until when it takes bids.

use crate::codec::Message;
use crate::ids::{NodeId, RoundId};
use crate::validate::ValidationError;
use serde::{Deserialize, Serialize};

/// The leader's call for bids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundAnnouncement {
    pub round: RoundId,
    pub announced_at_unix_ms: u64,
    /// Bids that arrive after this instant are rejected as late.
    pub deadline_unix_ms: u64,
    /// The round period, so agents can size their leases and intervals.
    pub interval_ms: u32,
    /// The Raft node that leads this round, and its term.
    pub leader: NodeId,
    pub term: u64,
}

impl Message for RoundAnnouncement {
    const KIND: &'static str = "round";
    fn validate(&self) -> Result<(), ValidationError> {
        if self.round == 0 {
            return Err(ValidationError::Empty { field: "round".into() });
        }
        if self.deadline_unix_ms < self.announced_at_unix_ms {
            return Err(ValidationError::Inconsistent {
                field: "deadline_unix_ms".into(),
                reason: "is before announced_at_unix_ms".into(),
            });
        }
        if self.interval_ms == 0 {
            return Err(ValidationError::Empty { field: "interval_ms".into() });
        }
        Ok(())
    }
}
