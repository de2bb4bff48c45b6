//! Forecasts: what the predictor expects each workload of a host to use and suffer next.
//!
//! One forecast covers a whole host, because interference is a property of the co-runners: the
//! pairwise entries say how much of a victim's predicted slowdown each aggressor causes (the
//! counterfactual difference with the aggressor removed). A forecast always says which model made
//! it, and `baseline` is true when the predictor had no model and fell back to its stated baseline.

use crate::codec::Message;
use crate::ids::{HostId, WorkloadId};
use crate::messages::telemetry::Usage;
use crate::validate::{check_count, check_non_negative, check_text, ValidationError, MAX_WORKLOADS_PER_HOST};
use serde::{Deserialize, Serialize};

/// Slowdowns are ratios (1.0 = no slowdown); anything above this is garbage.
const MAX_SLOWDOWN: f64 = 1e6;

/// The prediction for one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadForecast {
    pub workload: WorkloadId,
    /// Predicted usage over the next horizon.
    pub usage: Usage,
    /// Predicted slowdown versus running alone (1.0 = none, 1.5 = 50% slower).
    pub slowdown: f64,
}

/// How much `aggressor` adds to `victim`'s slowdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interference {
    pub victim: WorkloadId,
    pub aggressor: WorkloadId,
    /// Predicted slowdown of the victim with the aggressor, minus without it; may be negative
    /// when the aggressor's absence would not help.
    pub slowdown_delta: f64,
}

/// A pair that the rolling correlation analysis found to interfere often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterferingPair {
    pub victim: WorkloadId,
    pub aggressor: WorkloadId,
    /// Correlation of the aggressor's activity with the victim's slowdown, in -1..=1.
    pub correlation: f64,
}

/// Forecasts for every workload of one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    pub host: HostId,
    pub at_unix_ms: u64,
    /// How far ahead the prediction looks.
    pub horizon_ms: u32,
    pub model_version: String,
    /// True when no model was available and the stated baseline made this forecast.
    pub baseline: bool,
    pub workloads: Vec<WorkloadForecast>,
    pub interference: Vec<Interference>,
    pub frequent_pairs: Vec<InterferingPair>,
}

impl Message for Forecast {
    const KIND: &'static str = "forecast";
    fn validate(&self) -> Result<(), ValidationError> {
        check_text("model_version", &self.model_version)?;
        check_count("workloads", self.workloads.len(), MAX_WORKLOADS_PER_HOST)?;
        let pairs = MAX_WORKLOADS_PER_HOST * 8;
        check_count("interference", self.interference.len(), pairs)?;
        check_count("frequent_pairs", self.frequent_pairs.len(), pairs)?;
        for (i, w) in self.workloads.iter().enumerate() {
            w.usage.validate(&format!("workloads[{i}].usage"))?;
            check_non_negative(&format!("workloads[{i}].slowdown"), w.slowdown, MAX_SLOWDOWN)?;
        }
        for (i, p) in self.interference.iter().enumerate() {
            let field = format!("interference[{i}].slowdown_delta");
            if !p.slowdown_delta.is_finite() {
                return Err(ValidationError::NotFinite { field });
            }
            check_non_negative(&field, p.slowdown_delta.abs(), MAX_SLOWDOWN)?;
        }
        for (i, p) in self.frequent_pairs.iter().enumerate() {
            let field = format!("frequent_pairs[{i}].correlation");
            if !(p.correlation.is_finite() && (-1.0..=1.0).contains(&p.correlation)) {
                return Err(ValidationError::Inconsistent { field, reason: "must be within -1..=1".into() });
            }
        }
        Ok(())
    }
}
