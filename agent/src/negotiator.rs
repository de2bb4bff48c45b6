//! The negotiator: one actor per workload, running the loop monitor -> predict -> bid.
//!
//! Each negotiator owns everything about its workload that changes between rounds: its monitor,
//! its fallback predictor, the latest forecast, the SLO figure, the allocation it holds and an
//! estimate of its credit balance. It reacts to events routed by the runtime: on every tick it
//! samples and publishes telemetry; on a round announcement it bids; on a forecast or a decision
//! it updates what it knows. Enforcement is host-wide (one lease holder for all workloads) and
//! lives in the runtime, so a slow bid never delays applying a decision.

use crate::enforce::unix_ms_now;
use crate::metrics as m;
use crate::monitor::{Monitor, Sample};
use crate::slo_probe;
use crate::strategy::{self, BidInput, FallbackPredictor, Prediction};
use entente_protocol::bus::Bus;
use entente_protocol::{
    Decision, Forecast, ForecastSource, RejectReason, Rejection, ResourceVector, RoundAnnouncement, Slo,
    TelemetrySample, WorkloadId, WorkloadSpec,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How many rounds a bid stands unless replaced: a workload that misses a round (a slow tick,
/// a dropped message) keeps bidding what it last asked for.
pub const STANDING_ROUNDS: u32 = 3;

/// A forecast older than this many intervals is stale; the fallback predictor takes over.
pub const FORECAST_FRESH_INTERVALS: u32 = 3;

/// Something a negotiator reacts to.
#[derive(Debug, Clone)]
pub enum Event {
    Tick,
    Round(Arc<RoundAnnouncement>),
    Forecast(Arc<Forecast>),
    Decision(Arc<Decision>),
    Rejected(Arc<Rejection>),
}

/// One workload's negotiating state.
pub struct Negotiator {
    spec: WorkloadSpec,
    bus: Bus,
    monitor: Monitor,
    interval: Duration,
    fallback: FallbackPredictor,
    forecast: Option<(Prediction, Instant)>,
    last: Option<Sample>,
    metric_value: Option<f64>,
    current: ResourceVector,
    balance: f64,
    started: Instant,
}

impl Negotiator {
    pub fn new(spec: WorkloadSpec, monitor: Monitor, bus: Bus, interval: Duration) -> Negotiator {
        Negotiator {
            current: spec.guaranteed,
            balance: spec.budget,
            spec,
            bus,
            monitor,
            interval,
            fallback: FallbackPredictor::default(),
            forecast: None,
            last: None,
            metric_value: None,
            started: Instant::now(),
        }
    }

    fn id(&self) -> &WorkloadId {
        &self.spec.workload
    }

    /// Handles events until the runtime closes the channel (shutdown).
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            match event {
                Event::Tick => self.on_tick().await,
                Event::Round(round) => self.on_round(&round).await,
                Event::Forecast(forecast) => self.on_forecast(&forecast),
                Event::Decision(decision) => self.on_decision(&decision),
                Event::Rejected(rejection) => self.on_rejection(&rejection),
            }
        }
    }

    async fn on_tick(&mut self) {
        let sample = match self.monitor.sample() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(workload = %self.id(), error = %e, "cannot sample workload");
                metrics::counter!(m::SAMPLE_ERRORS).increment(1);
                return;
            }
        };
        if let Slo::Metric { url, metric, .. } = &self.spec.slo {
            match slo_probe::scrape(url, metric, self.interval / 2).await {
                Ok(v) => self.metric_value = Some(v),
                Err(e) => {
                    tracing::debug!(workload = %self.id(), error = %e, "SLO metric unavailable");
                    self.metric_value = None;
                }
            }
        }
        metrics::counter!(m::SAMPLES).increment(1);
        // The first sample of a monitor has no rates yet: nothing to publish or learn from.
        if let Some(interval) = sample.interval {
            self.fallback.observe(&sample.usage);
            let telemetry = TelemetrySample {
                host: self.spec.host.clone(),
                workload: self.spec.workload.clone(),
                at_unix_ms: unix_ms_now(),
                interval_ms: interval.as_millis().clamp(1, u128::from(u32::MAX)) as u32,
                usage: sample.usage,
                pressure: sample.pressure,
                counters: sample.counters,
                scheduler: sample.scheduler,
            };
            if let Err(e) = self.bus.publish_telemetry(&telemetry).await {
                tracing::warn!(workload = %self.id(), error = %e, "cannot publish telemetry");
            }
            self.last = Some(sample);
        }
    }

    fn prediction(&self) -> Prediction {
        let fresh = self.interval * FORECAST_FRESH_INTERVALS;
        match &self.forecast {
            Some((p, at)) if at.elapsed() <= fresh => p.clone(),
            _ => Prediction {
                usage: self.fallback.predict(1),
                // Measured stalls stand in for the predicted slowdown: a throttled workload's
                // usage shows only what it was allowed, its stalls show what it lacks.
                slowdown: self.last.as_ref().map_or(1.0, |s| strategy::slowdown_from_pressure(&s.pressure)),
                source: ForecastSource::Fallback,
            },
        }
    }

    async fn on_round(&mut self, round: &RoundAnnouncement) {
        let usage = self.last.as_ref().map(|s| s.usage).unwrap_or_default();
        let slack = self.last.as_ref().and_then(|s| strategy::slo_slack(&self.spec.slo, &s.pressure, self.metric_value));
        let input = BidInput {
            spec: &self.spec,
            current: self.current,
            usage,
            prediction: self.prediction(),
            slack,
            balance: self.spec.balance_after_refill(self.balance),
            elapsed_s: self.started.elapsed().as_secs_f64(),
            round_ms: u64::from(round.interval_ms),
        };
        let forecast = match input.prediction.source {
            ForecastSource::Predictor { .. } => "predictor",
            ForecastSource::Fallback => "fallback",
        };
        let bid = strategy::make_bid(&input, uuid::Uuid::new_v4(), round.round, STANDING_ROUNDS);
        tracing::debug!(
            workload = %self.id(),
            round = round.round,
            bundles = bid.bundles.len(),
            slack = ?input.slack,
            slowdown = input.prediction.slowdown,
            forecast,
            "bidding"
        );
        match self.bus.submit_bid(&bid).await {
            Ok(()) => metrics::counter!(m::BIDS_SENT, "forecast" => forecast).increment(1),
            Err(e) => {
                tracing::warn!(workload = %self.id(), round = round.round, error = %e, "cannot submit bid");
                metrics::counter!(m::BID_ERRORS).increment(1);
            }
        }
    }

    fn on_forecast(&mut self, forecast: &Forecast) {
        if let Some(mine) = forecast.workloads.iter().find(|w| &w.workload == self.id()) {
            let prediction = Prediction {
                usage: mine.usage,
                slowdown: mine.slowdown,
                source: ForecastSource::Predictor { model_version: forecast.model_version.clone() },
            };
            self.forecast = Some((prediction, Instant::now()));
        }
    }

    fn on_decision(&mut self, decision: &Decision) {
        if decision.host != self.spec.host {
            return;
        }
        // The ledger refills every workload once per decided round and charges the payment;
        // mirroring it keeps the estimate close without asking the arbiter each round.
        self.balance = self.spec.balance_after_refill(self.balance);
        if let Some(a) = decision.allocation(self.id()) {
            self.current = a.alloc;
            self.balance = (self.balance - a.payment).max(0.0);
        }
    }

    fn on_rejection(&self, rejection: &Rejection) {
        if rejection.workload.as_ref() != Some(self.id()) {
            return;
        }
        metrics::counter!(m::REJECTIONS_RECEIVED, "reason" => rejection.reason.as_str()).increment(1);
        match rejection.reason {
            RejectReason::Late => tracing::info!(workload = %self.id(), detail = %rejection.detail, "bid was late"),
            _ => tracing::warn!(
                workload = %self.id(),
                reason = ?rejection.reason,
                detail = %rejection.detail,
                "bid rejected"
            ),
        }
    }
}
