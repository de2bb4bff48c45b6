//! What the agent counts, for its Prometheus endpoint (see `docs/METRICS.md`).
//!
//! The names live here and the recording happens where each thing occurs (the negotiator, the
//! runtime's event loop); [`describe`] gives every metric its help text and starts the counters
//! whose labels are known up front at zero, so a scrape shows them before the first event.

use entente_protocol::RejectReason;
use metrics::{counter, describe_counter, describe_gauge, gauge};

pub const SAMPLES: &str = "entente_agent_samples_total";
pub const SAMPLE_ERRORS: &str = "entente_agent_sample_errors_total";
pub const BIDS_SENT: &str = "entente_agent_bids_sent_total";
pub const BID_ERRORS: &str = "entente_agent_bid_errors_total";
pub const DECISIONS_RECEIVED: &str = "entente_agent_decisions_received_total";
pub const DECISIONS_ENFORCED: &str = "entente_agent_decisions_enforced_total";
pub const ENFORCEMENT_ERRORS: &str = "entente_agent_enforcement_errors_total";
pub const LEASE_FALLBACKS: &str = "entente_agent_lease_fallbacks_total";
pub const REJECTIONS_RECEIVED: &str = "entente_agent_rejections_received_total";
pub const FORECASTS_RECEIVED: &str = "entente_agent_forecasts_received_total";
pub const FORECAST_AGE: &str = "entente_agent_forecast_age_seconds";
pub const FORECAST_FRESH: &str = "entente_agent_forecast_fresh";
pub const WORKLOADS: &str = "entente_agent_workloads";

/// The `forecast` label of [`BIDS_SENT`]: what the bid's prediction came from.
pub const FORECAST_SOURCES: [&str; 2] = ["predictor", "fallback"];

/// Describes every metric and starts the known series at zero.
pub fn describe() {
    describe_counter!(SAMPLES, "Workload measurements taken (one per workload per interval).");
    describe_counter!(SAMPLE_ERRORS, "Workload measurements that failed.");
    describe_counter!(BIDS_SENT, "Bids submitted, by where their prediction came from (forecast=predictor|fallback).");
    describe_counter!(BID_ERRORS, "Bids that could not be submitted.");
    describe_counter!(DECISIONS_RECEIVED, "Decisions for this host read from the decisions stream.");
    describe_counter!(DECISIONS_ENFORCED, "Decisions for a new round applied with no enforcement error.");
    describe_counter!(ENFORCEMENT_ERRORS, "Failed reads or writes of an allocation on the enforcement backend, by backend.");
    describe_counter!(LEASE_FALLBACKS, "Workloads put back to their guarantee because their lease expired unrenewed.");
    describe_counter!(REJECTIONS_RECEIVED, "Rejection notices received for this agent's bids, by reason.");
    describe_counter!(FORECASTS_RECEIVED, "Forecasts received from the predictor for this host.");
    describe_gauge!(FORECAST_AGE, metrics::Unit::Seconds, "Age of the last forecast for this host; absent until one arrives.");
    describe_gauge!(FORECAST_FRESH, "1 while the last forecast is fresh enough to bid on, 0 while bids use the fallback predictor.");
    describe_gauge!(WORKLOADS, "Workloads this agent negotiates for.");
    for name in [SAMPLES, SAMPLE_ERRORS, BID_ERRORS, DECISIONS_RECEIVED, DECISIONS_ENFORCED, LEASE_FALLBACKS, FORECASTS_RECEIVED] {
        counter!(name).absolute(0);
    }
    for source in FORECAST_SOURCES {
        counter!(BIDS_SENT, "forecast" => source).absolute(0);
    }
    for reason in RejectReason::ALL {
        counter!(REJECTIONS_RECEIVED, "reason" => reason.as_str()).absolute(0);
    }
    gauge!(FORECAST_FRESH).set(0.0);
    gauge!(WORKLOADS).set(0.0);
}
