//! One host's prediction from its workloads' windows: by the model, or by the stated baseline.
//!
//! With a model, the host's workloads fill the model's slots (a host with more workloads than
//! slots is served in chunks, and interference across chunks is not reported, per the model
//! interface); one inference per chunk yields usage, slowdown and the counterfactual
//! interference matrix. Without one, the baseline of `entente_protocol::baseline` predicts usage
//! and slowdown and makes no interference claims: it has no way to tell who causes a stall.
//! Either way the result says which made it. Compute only, no I/O.

use crate::correlation::Observation;
use crate::features::{activity, usage_from_features, FEATURES};
use crate::interference::{interference_matrix, strongest};
use crate::model::{Model, ModelError};
use crate::window::WorkloadWindow;
use entente_protocol::baseline::BASELINE_VERSION;
use entente_protocol::validate::MAX_WORKLOADS_PER_HOST;
use entente_protocol::{Interference, WorkloadForecast};

/// The most interference entries one forecast carries (the wire's limit); the strongest are kept.
pub const MAX_INTERFERENCE: usize = MAX_WORKLOADS_PER_HOST * 8;
/// Predicted slowdowns are capped here: beyond it a figure is an artefact, not a forecast.
const MAX_SLOWDOWN: f64 = 1e3;

/// What one host is expected to do next.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub model_version: String,
    /// True when the baseline made it.
    pub baseline: bool,
    pub horizon_ms: u32,
    pub workloads: Vec<WorkloadForecast>,
    pub interference: Vec<Interference>,
}

/// The model's prediction for a host's workloads (at most [`MAX_WORKLOADS_PER_HOST`] of them are
/// served; the caller truncates). Each window must be the model's window long.
pub fn predict_with_model(model: &Model, windows: &[WorkloadWindow]) -> Result<Prediction, ModelError> {
    let (slots, length) = (model.slots(), model.window());
    let mut workloads = Vec::with_capacity(windows.len());
    let mut interference = Vec::new();
    let mut batch = vec![0.0f32; slots * length * FEATURES];
    let mut present = vec![0.0f32; slots];
    for chunk in windows.chunks(slots) {
        batch.fill(0.0);
        present.fill(0.0);
        for (slot, w) in chunk.iter().enumerate() {
            if w.window.len() != length {
                return Err(ModelError::Inference(format!(
                    "window of {} has {} samples, the model takes {length}",
                    w.workload,
                    w.window.len()
                )));
            }
            let base = slot * length * FEATURES;
            for (t, f) in w.window.iter().enumerate() {
                batch[base + t * FEATURES..base + (t + 1) * FEATURES].copy_from_slice(f);
            }
            present[slot] = 1.0;
        }
        let out = model.run(&batch, &present)?;
        for (slot, w) in chunk.iter().enumerate() {
            let slowdown = f64::from(out.slowdown[slot]);
            if !slowdown.is_finite() {
                return Err(ModelError::Inference(format!("the model predicted slowdown {slowdown} for {}", w.workload)));
            }
            workloads.push(WorkloadForecast {
                workload: w.workload.clone(),
                usage: usage_from_features(&out.usage[slot]),
                slowdown: slowdown.clamp(0.0, MAX_SLOWDOWN),
            });
        }
        let ids: Vec<_> = chunk.iter().map(|w| w.workload.clone()).collect();
        interference.extend(interference_matrix(&ids, &out.slowdown, &out.slowdown_without));
    }
    Ok(Prediction {
        model_version: model.version().to_owned(),
        baseline: false,
        horizon_ms: model.sidecar().interval_ms,
        workloads,
        interference: strongest(interference, MAX_INTERFERENCE),
    })
}

/// The stated baseline's prediction: smoothed usage trend, slowdown from pressure stalls.
pub fn predict_with_baseline(windows: &[WorkloadWindow], horizon_ms: u32) -> Prediction {
    Prediction {
        model_version: BASELINE_VERSION.to_owned(),
        baseline: true,
        horizon_ms,
        workloads: windows
            .iter()
            .map(|w| WorkloadForecast {
                workload: w.workload.clone(),
                usage: w.baseline_usage,
                slowdown: w.baseline_slowdown,
            })
            .collect(),
        interference: Vec::new(),
    }
}

/// What the correlation analysis learns from this interval: each workload's latest activity
/// and its forecast slowdown.
pub fn observations(windows: &[WorkloadWindow], prediction: &Prediction) -> Vec<Observation> {
    windows
        .iter()
        .zip(&prediction.workloads)
        .filter_map(|(w, f)| {
            Some(Observation { workload: w.workload.clone(), activity: activity(w.window.last()?), slowdown: f.slowdown })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use entente_protocol::{Usage, WorkloadId};

    #[test]
    fn the_baseline_says_so_and_claims_no_interference() {
        let mut f = [0.0; FEATURES];
        f[0] = 2.0;
        let windows = vec![WorkloadWindow {
            workload: WorkloadId::new("a").unwrap(),
            window: vec![f],
            baseline_usage: Usage { cpu_millicores: 2000.0, ..Usage::default() },
            baseline_slowdown: 1.25,
        }];
        let p = predict_with_baseline(&windows, 500);
        assert!(p.baseline);
        assert_eq!(p.model_version, BASELINE_VERSION);
        assert_eq!(p.horizon_ms, 500);
        assert_eq!(p.workloads[0].slowdown, 1.25);
        assert_eq!(p.workloads[0].usage.cpu_millicores, 2000.0);
        assert!(p.interference.is_empty());
        let o = observations(&windows, &p);
        assert_eq!((o[0].activity, o[0].slowdown), (2.0, 1.25));
    }
}
