//! Measures the predictor's inference cost: the latency of one host batch (features already
//! windowed → forecasts and the interference matrix) and how many workload forecasts one core
//! sustains. `scripts/bench-predictor.sh` runs it pinned to one core in a release build.
//!
//! Usage: `inference_latency [--model-dir DIR] [--workloads N] [--iterations K]`; prints JSON.

use entente_predictor::features::{features, FeatureVector};
use entente_predictor::forecaster::predict_with_model;
use entente_predictor::model::Model;
use entente_predictor::window::WorkloadWindow;
use entente_protocol::{samples, Usage, WorkloadId};
use std::path::PathBuf;
use std::time::Instant;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} {v}: not a valid value")))
        .unwrap_or(default)
}

/// A small deterministic generator, so every run measures the same inputs.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` workloads with `length` varied samples each, built the way the service builds them.
fn host_windows(n: usize, length: usize, rng: &mut Lcg) -> Vec<WorkloadWindow> {
    (0..n)
        .map(|k| {
            let window: Vec<FeatureVector> = (0..length)
                .map(|_| {
                    let mut s = samples::telemetry();
                    s.usage.cpu_millicores = 4000.0 * rng.next();
                    s.usage.memory_bytes = 4e9 * rng.next();
                    s.usage.disk_write_bps = 5e7 * rng.next();
                    s.usage.net_rx_bps = 1e8 * rng.next();
                    s.pressure.cpu_some = Some(30.0 * rng.next());
                    s.pressure.io_some = Some(10.0 * rng.next());
                    features(&s)
                })
                .collect();
            WorkloadWindow {
                workload: WorkloadId::new(format!("w{k}")).unwrap(),
                window,
                baseline_usage: Usage::default(),
                baseline_slowdown: 1.0,
            }
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir: PathBuf = arg(&args, "--model-dir", PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/model")));
    let iterations: usize = arg(&args, "--iterations", 5000);
    let started = Instant::now();
    let model = Model::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let workloads: usize = arg(&args, "--workloads", model.slots());
    let mut rng = Lcg(42);
    // A few different hosts, cycled, so the measurement is not of one cached input.
    let hosts: Vec<_> = (0..8).map(|_| host_windows(workloads, model.window(), &mut rng)).collect();
    for h in &hosts {
        predict_with_model(&model, h).expect("warm-up inference");
    }
    let mut batch_us = Vec::with_capacity(iterations);
    let mut raw_us = Vec::with_capacity(iterations);
    let (n, t, f) = (model.slots(), model.window(), model.sidecar().features);
    let raw_features: Vec<f32> = (0..n * t * f).map(|_| rng.next() as f32).collect();
    let present = vec![1.0f32; n];
    let total = Instant::now();
    for i in 0..iterations {
        let started = Instant::now();
        let p = predict_with_model(&model, &hosts[i % hosts.len()]).expect("inference");
        batch_us.push(started.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(p);
    }
    let total_s = total.elapsed().as_secs_f64();
    for _ in 0..iterations.min(2000) {
        let started = Instant::now();
        std::hint::black_box(model.run(&raw_features, &present).expect("inference"));
        raw_us.push(started.elapsed().as_secs_f64() * 1e6);
    }
    batch_us.sort_by(f64::total_cmp);
    raw_us.sort_by(f64::total_cmp);
    let report = serde_json::json!({
        "model_version": model.version(),
        "slots": model.slots(),
        "window": model.window(),
        "workloads_per_host": workloads,
        "iterations": iterations,
        "load_ms": load_ms,
        "host_batch_us": {
            "p50": percentile(&batch_us, 0.50),
            "p99": percentile(&batch_us, 0.99),
            "max": batch_us[batch_us.len() - 1],
            "mean": batch_us.iter().sum::<f64>() / batch_us.len() as f64,
        },
        "model_run_us": { "p50": percentile(&raw_us, 0.50), "p99": percentile(&raw_us, 0.99) },
        "host_batches_per_s": iterations as f64 / total_s,
        "workload_forecasts_per_s": (iterations * workloads) as f64 / total_s,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
