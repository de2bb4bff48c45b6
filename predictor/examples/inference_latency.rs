//! Measures the predictor's inference cost: the latency of one host batch (features already
//! windowed → forecasts and the interference matrix) and how many workload forecasts one core
//! sustains. `scripts/bench-predictor.sh` runs it pinned to one core in a release build.
//!
//! Usage: `inference_latency [--model-dir DIR] [--workloads N] [--iterations K]`; prints JSON.
//!
//! With `--profile [--top N]` it says instead where one inference spends its time: it runs the
//! optimised graph on a full batch and times every node of tract's plan, then prints the
//! operators, most expensive first, and the `N` costliest nodes with their output shapes.

use entente_predictor::features::{features, FeatureVector};
use entente_predictor::forecaster::predict_with_model;
use entente_predictor::model::{model_files, Model, Sidecar};
use entente_predictor::window::WorkloadWindow;
use entente_protocol::{samples, Usage, WorkloadId};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::SimpleState;
use tract_onnx::tract_core::plan::eval;

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
    if args.iter().any(|a| a == "--profile") {
        return profile(&dir, iterations, arg(&args, "--top", 25)).unwrap_or_else(|e| panic!("{e:#}"));
    }
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

/// Times every node of the optimised plan over `iterations` runs of a full host batch.
fn profile(dir: &Path, iterations: usize, top: usize) -> TractResult<()> {
    let (onnx_path, sidecar_path) = model_files(dir);
    let sidecar = Sidecar::load(&sidecar_path).map_err(|e| TractError::msg(e.to_string()))?;
    let (n, t, f) = (sidecar.slots, sidecar.window, sidecar.features);
    // Optimised as `Model::load` does, but kept as a plan whose nodes can be timed one by one.
    let plan = tract_onnx::onnx().model_for_path(onnx_path)?.into_optimized()?.into_runnable()?;

    // A full host: every slot present, features in a plausible range.
    let batch: Vec<f32> = (0..n * t * f).map(|k| ((k * 7919) % 1000) as f32 / 1000.0).collect();
    let inputs = || -> TractResult<TVec<TValue>> {
        Ok(tvec![
            Tensor::from_shape(&[n, t, f], &batch)?.into(),
            Tensor::from_shape(&[n], &vec![1.0f32; n])?.into(),
        ])
    };

    let mut per_node: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut state = SimpleState::new(&plan)?;
    let started = Instant::now();
    for _ in 0..iterations {
        state.run_plan_with_eval(inputs()?, |ctx, op_state, node, node_inputs| {
            let t0 = Instant::now();
            let out = eval(ctx, op_state, node, node_inputs);
            *per_node.entry(node.id).or_default() += t0.elapsed();
            out
        })?;
    }
    let wall = started.elapsed();

    let model = plan.model();
    let mut by_op: BTreeMap<String, (Duration, usize)> = BTreeMap::new();
    for (&id, &d) in &per_node {
        let e = by_op.entry(model.node(id).op().name().to_string()).or_default();
        e.0 += d;
        e.1 += 1;
    }
    let per_run = |d: Duration| d.as_secs_f64() * 1e6 / iterations as f64;
    let total: Duration = per_node.values().sum();
    println!(
        "{} nodes; {:.1} µs per run in nodes, {:.1} µs per run in all ({} runs)",
        per_node.len(),
        per_run(total),
        per_run(wall),
        iterations
    );
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by(|a, b| b.1 .0.cmp(&a.1 .0));
    println!("\n{:<28} {:>6} {:>10}", "operator", "nodes", "µs/run");
    for (op, (d, count)) in &ops {
        println!("{op:<28} {count:>6} {:>10.1}", per_run(*d));
    }
    let mut nodes: Vec<_> = per_node.into_iter().collect();
    nodes.sort_by(|a, b| b.1.cmp(&a.1));
    println!("\n{:>10}  node", "µs/run");
    for (id, d) in nodes.into_iter().take(top) {
        let node = model.node(id);
        let shape = model.outlet_fact(OutletId::new(id, 0)).map(|f| format!("{:?}", f.shape)).unwrap_or_default();
        println!("{:>10.1}  #{id} {} [{}] -> {shape}", per_run(d), node.name, node.op().name());
    }
    Ok(())
}
