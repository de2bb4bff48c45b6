//! What the predictor counts, for its Prometheus endpoint (see `docs/METRICS.md`).
//!
//! The names live here; the service records where things happen. An operator's first questions
//! about a predictor are whether forecasts go out, how long they take, and whether they come from
//! the model or the baseline (and which model): every one has a series. [`describe`] gives each
//! metric its help text and starts the known series at zero, so a scrape shows them at once.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};

pub const SAMPLES: &str = "entente_predictor_telemetry_samples_total";
pub const FORECASTS_PUBLISHED: &str = "entente_predictor_forecasts_published_total";
pub const FORECAST_PUBLISH_ERRORS: &str = "entente_predictor_forecast_publish_errors_total";
pub const INFERENCE_DURATION: &str = "entente_predictor_inference_duration_seconds";
pub const INTERVAL_DURATION: &str = "entente_predictor_interval_duration_seconds";
pub const MODEL_FAILURES: &str = "entente_predictor_model_failures_total";
pub const MODEL_RELOADS: &str = "entente_predictor_model_reloads_total";
pub const MODEL_INFO: &str = "entente_predictor_model_info";
pub const HOSTS: &str = "entente_predictor_hosts";
pub const WORKLOADS: &str = "entente_predictor_workloads";

/// The `outcome` label of [`SAMPLES`].
pub const SAMPLE_OUTCOMES: [&str; 3] = ["accepted", "refused", "undecodable"];
/// The `outcome` label of [`MODEL_RELOADS`].
pub const RELOAD_OUTCOMES: [&str; 2] = ["loaded", "refused"];

/// Describes every metric and starts the known series at zero.
pub fn describe() {
    describe_counter!(SAMPLES, "Telemetry samples received, by outcome (refused: wrong subject, stale or from the future).");
    describe_counter!(FORECASTS_PUBLISHED, "Forecasts published (one per host and interval with fresh telemetry).");
    describe_counter!(FORECAST_PUBLISH_ERRORS, "Forecasts that could not be published.");
    describe_histogram!(INFERENCE_DURATION, metrics::Unit::Seconds, "Time to forecast one host: one batched model inference with its counterfactuals (or the baseline).");
    describe_histogram!(INTERVAL_DURATION, metrics::Unit::Seconds, "Time from the start of an interval until every host's forecast is published.");
    describe_counter!(MODEL_FAILURES, "Forecasts the model failed to make; the baseline's were published instead.");
    describe_counter!(MODEL_RELOADS, "New model files noticed in the model directory, by outcome (refused: it did not load; the current one stays).");
    describe_gauge!(MODEL_INFO, "1 for the model (or baseline) that forecasts now, 0 for ones served before; labels: version, source (model or baseline).");
    describe_gauge!(HOSTS, "Hosts with recent telemetry.");
    describe_gauge!(WORKLOADS, "Workloads with recent telemetry.");
    for outcome in SAMPLE_OUTCOMES {
        counter!(SAMPLES, "outcome" => outcome).absolute(0);
    }
    for outcome in RELOAD_OUTCOMES {
        counter!(MODEL_RELOADS, "outcome" => outcome).absolute(0);
    }
    for name in [FORECASTS_PUBLISHED, FORECAST_PUBLISH_ERRORS, MODEL_FAILURES] {
        counter!(name).absolute(0);
    }
    for name in [INFERENCE_DURATION, INTERVAL_DURATION] {
        let _registered = metrics::histogram!(name);
    }
    for name in [HOSTS, WORKLOADS] {
        gauge!(name).set(0.0);
    }
}

/// Marks `version` (from `source`: "model" or "baseline") as the one in use, and `previous`, if
/// any, as no longer.
pub fn model_in_use(version: &str, source: &'static str, previous: Option<(String, &'static str)>) {
    if let Some((old, old_source)) = previous {
        gauge!(MODEL_INFO, "version" => old, "source" => old_source).set(0.0);
    }
    gauge!(MODEL_INFO, "version" => version.to_owned(), "source" => source).set(1.0);
}
