//! The stated baseline predictor: what entente predicts when no trained model is available.
//!
//! Two consumers share it so both fall back to the same, documented rule: the agent, when no
//! forecast arrives from the predictor service, and the predictor service itself, when it has no
//! model to load. Usage: Holt's double exponential smoothing per figure (an EWMA of the level
//! plus an EWMA of the trend, so a steady ramp is followed instead of lagged). Slowdown: read
//! from the workload's measured pressure stalls. Pure: the caller feeds one sample per interval.

use crate::messages::telemetry::{Pressure, Usage};

/// Smoothing of the level: weight of the newest observation.
pub const DEFAULT_LEVEL_ALPHA: f64 = 0.5;
/// Smoothing of the trend: weight of the newest level change.
pub const DEFAULT_TREND_BETA: f64 = 0.3;

/// How forecasts made by this baseline name their model (`Forecast::model_version`).
pub const BASELINE_VERSION: &str = "baseline-holt-psi-1";

const FIGURES: usize = 6;

fn to_array(u: &Usage) -> [f64; FIGURES] {
    [u.cpu_millicores, u.memory_bytes, u.disk_read_bps, u.disk_write_bps, u.net_rx_bps, u.net_tx_bps]
}

fn from_array(a: [f64; FIGURES]) -> Usage {
    Usage {
        cpu_millicores: a[0],
        memory_bytes: a[1],
        disk_read_bps: a[2],
        disk_write_bps: a[3],
        net_rx_bps: a[4],
        net_tx_bps: a[5],
    }
}

/// EWMA level + linear trend over recent usage samples.
#[derive(Debug, Clone, PartialEq)]
pub struct FallbackPredictor {
    alpha: f64,
    beta: f64,
    level: Option<[f64; FIGURES]>,
    /// `None` until two observations have set a first trend.
    trend: Option<[f64; FIGURES]>,
}

impl Default for FallbackPredictor {
    fn default() -> Self {
        FallbackPredictor::new(DEFAULT_LEVEL_ALPHA, DEFAULT_TREND_BETA)
    }
}

impl FallbackPredictor {
    /// `alpha` and `beta` are clamped into (0, 1].
    pub fn new(alpha: f64, beta: f64) -> Self {
        let clamp = |x: f64| if x.is_finite() { x.clamp(1e-3, 1.0) } else { 0.5 };
        FallbackPredictor { alpha: clamp(alpha), beta: clamp(beta), level: None, trend: None }
    }

    /// Whether at least one sample has been seen.
    pub fn is_primed(&self) -> bool {
        self.level.is_some()
    }

    /// Feeds one sample. Non-finite figures are ignored (the previous level stands for them).
    pub fn observe(&mut self, usage: &Usage) {
        let x = to_array(usage);
        let Some(level) = self.level else {
            self.level = Some(x.map(|v| if v.is_finite() { v.max(0.0) } else { 0.0 }));
            return;
        };
        let mut new_level = level;
        let mut new_trend = self.trend.unwrap_or([0.0; FIGURES]);
        for i in 0..FIGURES {
            if !x[i].is_finite() {
                continue;
            }
            match self.trend {
                // Second sample: the first difference is the best trend estimate there is.
                None => {
                    new_level[i] = x[i];
                    new_trend[i] = x[i] - level[i];
                }
                Some(trend) => {
                    new_level[i] = self.alpha * x[i] + (1.0 - self.alpha) * (level[i] + trend[i]);
                    new_trend[i] = self.beta * (new_level[i] - level[i]) + (1.0 - self.beta) * trend[i];
                }
            }
        }
        self.level = Some(new_level);
        self.trend = Some(new_trend);
    }

    /// Expected usage `horizon_steps` samples ahead (0 = the smoothed present), never negative.
    /// Before any sample it predicts zero usage.
    pub fn predict(&self, horizon_steps: u32) -> Usage {
        let level = self.level.unwrap_or([0.0; FIGURES]);
        let trend = self.trend.unwrap_or([0.0; FIGURES]);
        let h = f64::from(horizon_steps);
        let mut out = [0.0; FIGURES];
        for i in 0..FIGURES {
            let v = level[i] + h * trend[i];
            out[i] = if v.is_finite() { v.max(0.0) } else { 0.0 };
        }
        from_array(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cpu(v: f64) -> Usage {
        Usage { cpu_millicores: v, ..Usage::default() }
    }

    #[test]
    fn follows_a_linear_ramp() {
        let mut p = FallbackPredictor::default();
        for t in 0..30 {
            p.observe(&cpu(100.0 + 10.0 * f64::from(t)));
        }
        // Last observation 390: one step ahead is 400, five steps 440.
        assert!((p.predict(1).cpu_millicores - 400.0).abs() < 1e-6, "{:?}", p.predict(1));
        assert!((p.predict(5).cpu_millicores - 440.0).abs() < 1e-6);
    }

    #[test]
    fn catches_up_with_a_ramp_after_a_flat_start() {
        let mut p = FallbackPredictor::default();
        for _ in 0..10 {
            p.observe(&cpu(500.0));
        }
        let mut last = 0.0;
        for t in 1..=40 {
            last = 500.0 + 20.0 * f64::from(t);
            p.observe(&cpu(last));
        }
        let predicted = p.predict(1).cpu_millicores;
        assert!((predicted - (last + 20.0)).abs() < 5.0, "predicted {predicted}, expected about {}", last + 20.0);
    }

    #[test]
    fn a_falling_trend_never_predicts_negative_usage() {
        let mut p = FallbackPredictor::default();
        for t in 0..10 {
            p.observe(&cpu(100.0 - 10.0 * f64::from(t)));
        }
        assert_eq!(p.predict(100).cpu_millicores, 0.0);
    }

    #[test]
    fn unprimed_predicts_zero() {
        assert_eq!(FallbackPredictor::default().predict(3), Usage::default());
    }

    proptest! {
        #[test]
        fn predictions_are_finite_and_non_negative(
            xs in proptest::collection::vec(prop_oneof![0.0f64..1e12, Just(f64::NAN), Just(f64::INFINITY)], 0..20),
            h in 0u32..100,
        ) {
            let mut p = FallbackPredictor::default();
            for x in xs {
                p.observe(&Usage { cpu_millicores: x, memory_bytes: x, disk_read_bps: x, disk_write_bps: x, net_rx_bps: x, net_tx_bps: x });
            }
            let u = p.predict(h);
            for v in [u.cpu_millicores, u.memory_bytes, u.disk_read_bps, u.disk_write_bps, u.net_rx_bps, u.net_tx_bps] {
                prop_assert!(v.is_finite() && v >= 0.0);
            }
        }
    }
}

/// The slowdown the fallback assumes from pressure-stall figures: a workload whose tasks stall
/// a share `s` of the time (PSI `some`, the worst of cpu, memory and io) progresses at most at
/// `1 - s` of its unhindered speed, so its slowdown is at least `1 / (1 - s)`. Capped at 4, where
/// the request margin stops growing anyway. Without figures there is no evidence of slowdown.
pub fn slowdown_from_pressure(pressure: &Pressure) -> f64 {
    let stalled = [pressure.cpu_some, pressure.memory_some, pressure.io_some]
        .into_iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .clamp(0.0, 75.0);
    1.0 / (1.0 - stalled / 100.0)
}

#[cfg(test)]
mod pressure_tests {
    use super::*;
    use crate::messages::telemetry::PsiSource;

    fn pressure(cpu: Option<f64>, io: Option<f64>) -> Pressure {
        Pressure {
            source: PsiSource::Cgroup,
            cpu_some: cpu,
            cpu_full: None,
            memory_some: Some(0.0),
            memory_full: None,
            io_some: io,
            io_full: None,
        }
    }

    #[test]
    fn stalls_become_slowdown() {
        assert_eq!(slowdown_from_pressure(&pressure(None, None)), 1.0);
        assert!((slowdown_from_pressure(&pressure(Some(50.0), Some(10.0))) - 2.0).abs() < 1e-12);
        assert!((slowdown_from_pressure(&pressure(Some(5.0), Some(20.0))) - 1.25).abs() < 1e-12);
        assert_eq!(slowdown_from_pressure(&pressure(Some(99.0), None)), 4.0);
        assert_eq!(slowdown_from_pressure(&pressure(Some(f64::NAN), None)), 1.0);
    }
}
