//! The predictor service: telemetry in, one forecast per host per interval out, over NATS.
//!
//! One task owns all state, so nothing is shared and a model swap is atomic by construction: it
//! receives every agent's telemetry (`telemetry.>`) into the windows, and at each interval it
//! evicts workloads that stopped reporting, runs one inference per host that has new samples
//! (off the async threads), updates the rolling correlation and publishes `forecast.<host>`. It
//! also watches the model directory and swaps in a new model once it loads; a model that fails to
//! load is reported and the current one (or the baseline) stays. Without a model the stated
//! baseline serves, and every forecast says so.

use crate::correlation::{CorrelationConfig, Correlations};
use crate::metrics;
use crate::forecaster::{observations, predict_with_baseline, predict_with_model, Prediction, MAX_INTERFERENCE};
use crate::model::{Model, ModelError};
use crate::reload::ModelWatcher;
use crate::window::{WindowConfig, Windows, WorkloadWindow};
use ::metrics::{counter, gauge, histogram};
use futures::StreamExt;
use entente_protocol::baseline::BASELINE_VERSION;
use entente_protocol::bus::{Bus, BusConfig, BusError, Received};
use entente_protocol::clock::unix_ms_now;
use entente_protocol::validate::MAX_WORKLOADS_PER_HOST;
use entente_protocol::{Forecast, HostId, Subject, TelemetrySample};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;

/// Everything the service needs to run.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub bus: BusConfig,
    /// Where `entente-predictor.onnx` and its sidecar live.
    pub model_dir: PathBuf,
    /// How often forecasts are made.
    pub interval: Duration,
    /// A workload silent for this many intervals is forgotten.
    pub stale_intervals: u32,
    /// How far ahead of this host's clock a sample may be stamped.
    pub max_clock_skew: Duration,
    /// How often the model directory is checked for a new model.
    pub reload_check: Duration,
    pub correlation: CorrelationConfig,
}

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("the telemetry subscription ended")]
    SubscriptionEnded,
}

/// Counters of what the service did, logged at shutdown.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub samples: u64,
    pub refused: u64,
    pub undecodable: u64,
    pub forecasts: u64,
    pub model_failures: u64,
}

/// Loads the model in `dir` off the async threads.
async fn load_model(dir: &Path) -> Result<Model, ModelError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || Model::load(&dir))
        .await
        .unwrap_or_else(|e| Err(ModelError::Inference(format!("the loading task failed: {e}"))))
}

/// The state the service loop owns.
struct Predictor {
    config: ServiceConfig,
    bus: Bus,
    model: Option<Arc<Model>>,
    windows: Windows,
    correlations: Correlations,
    counts: Counts,
    /// Hosts forecast at the same time: one per core.
    parallelism: usize,
}

/// Runs the service until `shutdown` completes.
pub async fn run(config: ServiceConfig, shutdown: impl Future<Output = ()>) -> Result<Counts, ServiceError> {
    // Watching starts before the first load, so a model that changes during it is noticed.
    let mut watcher = ModelWatcher::new(&config.model_dir);
    let model = match load_model(&config.model_dir).await {
        Ok(model) => {
            log_loaded(&model, &config, None);
            Some(Arc::new(model))
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                baseline = BASELINE_VERSION,
                "no usable model at start-up; serving the stated baseline (forecasts are marked baseline) until a valid model appears in {}",
                config.model_dir.display()
            );
            None
        }
    };
    match &model {
        Some(m) => metrics::model_in_use(m.version(), "model", None),
        None => metrics::model_in_use(BASELINE_VERSION, "baseline", None),
    }
    let bus = Bus::connect(&config.bus).await?;
    let mut inbox = bus.subscribe::<TelemetrySample>(bus.subjects().telemetry_all()).await?;
    // The subscription is in place at the server before the service calls itself ready.
    bus.flush().await?;
    let interval_ms = config.interval.as_millis() as u64;
    let mut windows = Windows::new(WindowConfig {
        capacity: model.as_ref().map_or(1, |m| m.window()),
        stale_after_ms: interval_ms * u64::from(config.stale_intervals.max(1)),
        max_future_ms: config.max_clock_skew.as_millis() as u64,
    });
    // Keep at least a typical window even under the baseline, so a model loaded later starts
    // from history rather than from padding.
    windows.ensure_capacity(crate::model::DEFAULT_WINDOW);
    let mut state = Predictor {
        correlations: Correlations::new(config.correlation),
        windows,
        model,
        bus,
        counts: Counts::default(),
        config,
        parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut tick = tokio::time::interval(state.config.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut reload_tick = tokio::time::interval(state.config.reload_check);
    reload_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tracing::info!(
        subject = %state.bus.subjects().telemetry_all(),
        interval_ms,
        model = state.model.as_ref().map_or(BASELINE_VERSION, |m| m.version()),
        "predictor ready: serving forecasts"
    );
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            received = inbox.next() => match received {
                Some(r) => state.on_telemetry(r),
                None => break Err(ServiceError::SubscriptionEnded),
            },
            _ = tick.tick() => state.serve().await,
            _ = reload_tick.tick() => {
                if watcher.changed() {
                    state.reload().await;
                }
            }
        }
    };
    let _ = inbox.unsubscribe().await;
    if let Err(e) = state.bus.flush().await {
        tracing::warn!(error = %e, "cannot flush the last forecasts");
    }
    let c = state.counts;
    tracing::info!(
        samples = c.samples,
        refused = c.refused,
        undecodable = c.undecodable,
        forecasts = c.forecasts,
        model_failures = c.model_failures,
        "predictor stopped"
    );
    result.map(|()| c)
}

fn log_loaded(model: &Model, config: &ServiceConfig, replaced: Option<&str>) {
    let sidecar = model.sidecar();
    tracing::info!(
        version = %sidecar.version,
        replaced = replaced.unwrap_or("-"),
        window = sidecar.window,
        slots = sidecar.slots,
        trained_interval_ms = sidecar.interval_ms,
        dir = %config.model_dir.display(),
        "model loaded"
    );
    if u128::from(sidecar.interval_ms) != config.interval.as_millis() {
        tracing::warn!(
            trained_interval_ms = sidecar.interval_ms,
            serving_interval_ms = config.interval.as_millis() as u64,
            "the model was trained at another interval than it is served at; its windows span a different time"
        );
    }
}

impl Predictor {
    fn on_telemetry(&mut self, received: Received<TelemetrySample>) {
        let sample = match received.message {
            Ok(sample) => sample,
            Err(e) => {
                self.counts.undecodable += 1;
                counter!(metrics::SAMPLES, "outcome" => "undecodable").increment(1);
                tracing::warn!(subject = %received.subject, error = %e, "dropping undecodable telemetry");
                return;
            }
        };
        match self.bus.subjects().parse(&received.subject) {
            Ok(Subject::Telemetry { host, workload }) if host == sample.host && workload == sample.workload => {}
            _ => {
                self.counts.refused += 1;
                counter!(metrics::SAMPLES, "outcome" => "refused").increment(1);
                tracing::warn!(
                    subject = %received.subject,
                    host = %sample.host,
                    workload = %sample.workload,
                    "dropping telemetry whose subject does not name its host and workload"
                );
                return;
            }
        }
        match self.windows.record(&sample, unix_ms_now()) {
            Ok(()) => {
                self.counts.samples += 1;
                counter!(metrics::SAMPLES, "outcome" => "accepted").increment(1);
            }
            Err(e) => {
                self.counts.refused += 1;
                counter!(metrics::SAMPLES, "outcome" => "refused").increment(1);
                tracing::warn!(error = %e, "dropping telemetry");
            }
        }
    }

    /// One interval: forget the silent, forecast every host with new samples, publish.
    async fn serve(&mut self) {
        let now = unix_ms_now();
        for (host, workload) in self.windows.evict_stale(now) {
            tracing::info!(%host, %workload, "workload stopped reporting; forgotten");
            self.correlations.forget(&host, &workload);
        }
        let (host_count, workload_count) = self.windows.counts();
        gauge!(metrics::HOSTS).set(host_count as f64);
        gauge!(metrics::WORKLOADS).set(workload_count as f64);
        let hosts = self.windows.fresh_hosts();
        if hosts.is_empty() {
            return;
        }
        let length = self.model.as_ref().map_or(1, |m| m.window());
        let mut batches: Vec<(HostId, Vec<WorkloadWindow>)> = Vec::with_capacity(hosts.len());
        for host in hosts {
            let mut windows = self.windows.take_host(&host, length);
            if windows.len() > MAX_WORKLOADS_PER_HOST {
                tracing::warn!(%host, workloads = windows.len(), "host has more workloads than a forecast may carry; serving the first {MAX_WORKLOADS_PER_HOST}");
                windows.truncate(MAX_WORKLOADS_PER_HOST);
            }
            batches.push((host, windows));
        }
        let horizon_ms = self.config.interval.as_millis().min(u128::from(u32::MAX)) as u32;
        let started = Instant::now();
        let served = batches.len();
        // Hosts are forecast side by side on the blocking pool, as many at a time as there are
        // cores, and each forecast goes out as soon as it is ready: awaiting one host after the
        // other left the cores idle between inferences and capped the service at a few hundred
        // hosts per interval.
        let model = self.model.clone();
        let mut predictions = futures::stream::iter(batches)
            .map(|(host, windows)| {
                let model = model.clone();
                tokio::task::spawn_blocking(move || {
                    let inference = Instant::now();
                    let prediction = match &model {
                        Some(model) => predict_with_model(model, &windows)
                            .map_err(|e| (e, predict_with_baseline(&windows, horizon_ms))),
                        None => Ok(predict_with_baseline(&windows, horizon_ms)),
                    };
                    histogram!(metrics::INFERENCE_DURATION).record(inference.elapsed().as_secs_f64());
                    (host, windows, prediction)
                })
            })
            .buffer_unordered(self.parallelism);
        while let Some(predicted) = predictions.next().await {
            let (host, windows, prediction) = match predicted {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "an inference task failed; no forecast for its host this interval");
                    continue;
                }
            };
            let prediction = prediction.unwrap_or_else(|(e, baseline)| {
                self.counts.model_failures += 1;
                counter!(metrics::MODEL_FAILURES).increment(1);
                tracing::error!(%host, error = %e, "model inference failed; this forecast is the baseline's");
                baseline
            });
            self.publish(host, &windows, prediction, now).await;
        }
        histogram!(metrics::INTERVAL_DURATION).record(started.elapsed().as_secs_f64());
        tracing::debug!(hosts = served, elapsed_us = started.elapsed().as_micros() as u64, "interval served");
    }

    async fn publish(&mut self, host: HostId, windows: &[WorkloadWindow], prediction: Prediction, now: u64) {
        self.correlations.observe(&host, &observations(windows, &prediction));
        let forecast = Forecast {
            frequent_pairs: self.correlations.frequent_pairs(&host, MAX_INTERFERENCE),
            host,
            at_unix_ms: now,
            horizon_ms: prediction.horizon_ms,
            model_version: prediction.model_version,
            baseline: prediction.baseline,
            workloads: prediction.workloads,
            interference: prediction.interference,
        };
        match self.bus.publish_forecast(&forecast).await {
            Ok(()) => {
                self.counts.forecasts += 1;
                counter!(metrics::FORECASTS_PUBLISHED).increment(1);
            }
            Err(e) => {
                counter!(metrics::FORECAST_PUBLISH_ERRORS).increment(1);
                tracing::warn!(host = %forecast.host, error = %e, "cannot publish forecast")
            }
        }
    }

    /// Loads the model directory's new contents; keeps the current model if they do not load.
    async fn reload(&mut self) {
        let current = self.model.as_ref().map_or(BASELINE_VERSION, |m| m.version()).to_owned();
        match load_model(&self.config.model_dir).await {
            Ok(model) => {
                log_loaded(&model, &self.config, Some(&current));
                counter!(metrics::MODEL_RELOADS, "outcome" => "loaded").increment(1);
                let previous_source = if self.model.is_some() { "model" } else { "baseline" };
                metrics::model_in_use(model.version(), "model", Some((current.clone(), previous_source)));
                self.windows.ensure_capacity(model.window());
                self.model = Some(Arc::new(model));
            }
            Err(e) => {
                counter!(metrics::MODEL_RELOADS, "outcome" => "refused").increment(1);
                tracing::error!(error = %e, keeping = %current, "the model directory changed but its model does not load; keeping the current one");
            }
        }
    }
}
