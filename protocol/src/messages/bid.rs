//! Bids: what a workload asks for this round and what it would pay for it.
//!
//! A bid is an XOR of bundles: the workload wins at most one. Each bundle is an absolute target
//! allocation (not a delta, so a lost or repeated message cannot compound) with a value in
//! credits. The [`Offer`] on each bundle says what it means to the bidder: keep what it has, ask
//! for more, give up one resource for another, or accept a delay; the arbiter treats them all as
//! ordinary bundles, and the decision reports which one won.

use crate::codec::Message;
use crate::ids::{validate_token, HostId, RoundId, WorkloadId};
use crate::messages::registration::WorkloadSpec;
use crate::resources::{Resource, ResourceVector};
use crate::validate::{
    check_at_least, check_count, check_credits, check_fits, check_resources, check_text, ValidationError,
    MAX_BUNDLES,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The longest a bid may stand, in rounds.
pub const MAX_STANDING_ROUNDS: u32 = 64;

/// What a bundle means to the bidder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Offer {
    /// Keep the current allocation.
    Keep,
    /// Grow towards what the forecast says it will need.
    Request,
    /// Take less of `give` in exchange for more of `take`.
    TradeOff { give: Resource, take: Resource },
    /// Accept a smaller allocation and finish `delay_ms` later.
    Delay { delay_ms: u64 },
}

/// One alternative of a bid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    /// Unique within the bid; a subject-safe token.
    pub id: String,
    /// The absolute allocation asked for.
    pub alloc: ResourceVector,
    /// Willingness to pay, in credits.
    pub value: f64,
    pub offer: Offer,
}

/// What the bidder based its request on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ForecastSource {
    /// A forecast from the predictor service, made by this model.
    Predictor { model_version: String },
    /// The agent's own fallback (EWMA and linear trend): no forecast arrived in time.
    Fallback,
}

/// A workload's bid for one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bid {
    /// Unique per bid; a replacement bid for the same round carries a new id.
    pub bid_id: Uuid,
    pub round: RoundId,
    pub host: HostId,
    pub workload: WorkloadId,
    pub bundles: Vec<Bundle>,
    /// How many rounds the bid stands (from `round` on) unless replaced; at least 1.
    pub standing_rounds: u32,
    pub forecast: ForecastSource,
}

impl Message for Bid {
    const KIND: &'static str = "bid";
    fn validate(&self) -> Result<(), ValidationError> {
        if self.round == 0 {
            return Err(ValidationError::Empty { field: "round".into() });
        }
        if self.bundles.is_empty() {
            return Err(ValidationError::Empty { field: "bundles".into() });
        }
        check_count("bundles", self.bundles.len(), MAX_BUNDLES)?;
        if !(1..=MAX_STANDING_ROUNDS).contains(&self.standing_rounds) {
            return Err(ValidationError::Inconsistent {
                field: "standing_rounds".into(),
                reason: format!("{} is outside 1..={MAX_STANDING_ROUNDS}", self.standing_rounds),
            });
        }
        if let ForecastSource::Predictor { model_version } = &self.forecast {
            check_text("forecast.model_version", model_version)?;
        }
        for (i, b) in self.bundles.iter().enumerate() {
            validate_token(&b.id)
                .map_err(|source| ValidationError::Id { field: format!("bundles[{i}].id"), source })?;
            if self.bundles[..i].iter().any(|earlier| earlier.id == b.id) {
                return Err(ValidationError::Inconsistent {
                    field: format!("bundles[{i}].id"),
                    reason: format!("{:?} is used by an earlier bundle", b.id),
                });
            }
            check_resources(&format!("bundles[{i}].alloc"), &b.alloc)?;
            check_credits(&format!("bundles[{i}].value"), b.value)?;
        }
        Ok(())
    }
}

impl Bid {
    /// Checks the bid against its workload's spec: same host and workload, and every bundle
    /// between the guarantee and the limit. (The arbiter also checks the budget, which changes
    /// every round and so is not part of the spec.)
    pub fn check_against(&self, spec: &WorkloadSpec) -> Result<(), ValidationError> {
        if self.host != spec.host || self.workload != spec.workload {
            return Err(ValidationError::Inconsistent {
                field: "workload".into(),
                reason: format!(
                    "bid is for {}/{}, spec is for {}/{}",
                    self.host, self.workload, spec.host, spec.workload
                ),
            });
        }
        for (i, b) in self.bundles.iter().enumerate() {
            let field = format!("bundles[{i}].alloc");
            check_fits(&field, &b.alloc, "limit", &spec.limit)?;
            check_at_least(&field, &b.alloc, "guarantee", &spec.guaranteed)?;
        }
        Ok(())
    }
}
