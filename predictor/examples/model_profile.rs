//! Where one inference of the shipped model spends its time, operator by operator, in tract.
//!
//! `inference_latency` says how long a host batch takes; this says why. It optimises the ONNX
//! graph the way the service does, runs it on a full 32-slot batch, and times every node of
//! the plan over many runs, then prints the nodes grouped by operator, most expensive first.
//!
//! Usage: `model_profile [--model-dir DIR] [--iterations K] [--top N]`.

use std::collections::BTreeMap;
use std::path::PathBuf;
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

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir: PathBuf = arg(&args, "--model-dir", PathBuf::from("predictor/model"));
    let iterations: usize = arg(&args, "--iterations", 2000);
    let top: usize = arg(&args, "--top", 25);

    let sidecar = entente_predictor::model::Sidecar::load(&dir.join(entente_predictor::model::SIDECAR_FILE))
        .map_err(|e| TractError::msg(e.to_string()))?;
    let (n, t, f) = (sidecar.slots, sidecar.window, sidecar.features);
    let graph = tract_onnx::onnx().model_for_path(dir.join(entente_predictor::model::MODEL_FILE))?;
    let plan = graph.into_optimized()?.into_runnable()?;

    // A full host: every slot present, features in a plausible range.
    let features: Vec<f32> = (0..n * t * f).map(|k| ((k * 7919) % 1000) as f32 / 1000.0).collect();
    let inputs = || -> TractResult<TVec<TValue>> {
        Ok(tvec![
            Tensor::from_shape(&[n, t, f], &features)?.into(),
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
