//! tract runs the shipped ONNX model exactly as PyTorch did: the training script exports one
//! input batch and the outputs PyTorch computed for it (`predictor/model/reference.json`), and
//! this test feeds the same batch through the model as the service loads it. A sidecar whose
//! shapes disagree with the graph is refused at load time.

use entente_predictor::model::{Model, ModelError, ModelOutputs, MODEL_FILE, SIDECAR_FILE};
use serde_json::Value;
use std::path::Path;

/// The values of a (nested) JSON array, flattened in row-major order.
fn flatten(value: &Value, out: &mut Vec<f32>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        Value::Number(n) => out.push(n.as_f64().expect("a number") as f32),
        other => panic!("reference.json holds {other} where numbers belong"),
    }
}

/// `outputs.<name>` or `inputs.<name>` of the reference, flattened.
fn field(reference: &Value, group: &str, name: &str) -> Vec<f32> {
    let value = &reference[group][name];
    assert!(!value.is_null(), "reference.json has no {group}.{name}");
    let mut out = Vec::new();
    flatten(value, &mut out);
    out
}

/// Compares the meaningful values, those of present slots (`meaningful(k)`), within the
/// reference's absolute tolerance.
fn assert_close(name: &str, got: &[f32], expected: &[f32], tolerance: f32, meaningful: impl Fn(usize) -> bool) {
    assert_eq!(got.len(), expected.len(), "{name}: tract gives {} values, the reference {}", got.len(), expected.len());
    let mut compared = 0;
    for (k, (g, e)) in got.iter().zip(expected).enumerate() {
        if !meaningful(k) {
            continue;
        }
        compared += 1;
        assert!((g - e).abs() <= tolerance, "{name}[{k}]: tract {g} vs PyTorch {e} (tolerance {tolerance})");
    }
    assert!(compared > 0, "{name}: nothing to compare");
}

#[test]
fn tract_matches_the_reference_outputs_of_the_training_script() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("model");
    let model = Model::load(&dir).unwrap_or_else(|e| panic!("the shipped model loads: {e}"));
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("read reference.json");
    let reference: Value = serde_json::from_str(&text).expect("reference.json is JSON");

    let features = field(&reference, "inputs", "features");
    let present = field(&reference, "inputs", "present");
    let tolerance = reference["tolerance"].as_f64().unwrap_or(1e-4) as f32;
    assert!(tolerance > 0.0 && tolerance <= 1e-3, "a parity tolerance of {tolerance} proves nothing");
    assert_eq!(reference["version"].as_str(), Some(model.version()), "reference.json belongs to the shipped model");
    let (n, t, f) = (model.slots(), model.window(), model.sidecar().features);
    assert_eq!(features.len(), n * t * f, "the reference batch has the sidecar's shape");
    assert_eq!(present.len(), n);
    assert!(present.iter().any(|p| *p == 1.0), "the reference batch holds at least one workload");

    let ModelOutputs { usage, slowdown, slowdown_without } = model.run(&features, &present).expect("inference");
    let usage: Vec<f32> = usage.into_iter().flatten().collect();
    let is_present = |slot: usize| present[slot] == 1.0;
    assert_close("usage", &usage, &field(&reference, "outputs", "usage"), tolerance, |k| is_present(k / 6));
    assert_close("slowdown", &slowdown, &field(&reference, "outputs", "slowdown"), tolerance, is_present);
    // Row j (the removed slot) and column i (the victim) both of present slots, i != j (a
    // removed slot's own prediction means nothing).
    let without = field(&reference, "outputs", "slowdown_without");
    let pair = |k: usize| (k / n, k % n);
    assert_close("slowdown_without", &slowdown_without, &without, tolerance, |k| {
        let (j, i) = pair(k);
        i != j && is_present(j) && is_present(i)
    });
}

#[test]
fn a_sidecar_that_disagrees_with_the_graph_is_refused() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("model");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(shipped.join(MODEL_FILE), dir.path().join(MODEL_FILE)).unwrap();
    let mut sidecar: Value = serde_json::from_str(&std::fs::read_to_string(shipped.join(SIDECAR_FILE)).unwrap()).unwrap();
    let slots = sidecar["slots"].as_u64().unwrap();
    sidecar["slots"] = Value::from(slots / 2);
    std::fs::write(dir.path().join(SIDECAR_FILE), sidecar.to_string()).unwrap();
    let err = Model::load(dir.path()).expect_err("the graph's shapes do not match the sidecar");
    assert!(matches!(err, ModelError::Interface { .. }), "{err}");
    assert!(err.to_string().contains("features has shape"), "the error says which input differs: {err}");
}
