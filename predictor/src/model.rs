//! The trained model: its sidecar and ONNX graph, loaded with tract and checked against the
//! interface before a single forecast is made from it.
//!
//! The contract with the training script is `predictor/MODEL_INTERFACE.md`. A model that breaks
//! it (another feature list, other input names, other shapes) would produce plausible-looking
//! nonsense, so loading refuses it with an error that names the file and what differs. Running
//! takes one host's batch of `slots` windows and returns the three outputs as plain vectors.

use crate::features::{FEATURES, FEATURE_NAMES, USAGE_FIGURES};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tract_onnx::prelude::*;

/// The interface version this service implements (`interface` in the sidecar).
pub const INTERFACE: u32 = 3;
/// The window of the interface's reference model (T): history kept even before a model loads.
pub const DEFAULT_WINDOW: usize = 8;
/// The model file inside a model directory.
pub const MODEL_FILE: &str = "entente-predictor.onnx";
/// The sidecar inside a model directory.
pub const SIDECAR_FILE: &str = "entente-predictor.json";

const INPUT_FEATURES: &str = "features";
const INPUT_PRESENT: &str = "present";
const OUTPUT_USAGE: &str = "usage";
const OUTPUT_SLOWDOWN: &str = "slowdown";
const OUTPUT_SLOWDOWN_WITHOUT: &str = "slowdown_without";

/// Why a model cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: missing ({reason})", path.display())]
    Missing { path: PathBuf, reason: String },
    #[error("{}: cannot read: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{}: not a valid sidecar: {reason}", path.display())]
    BadSidecar { path: PathBuf, reason: String },
    #[error("{}: breaks the model interface: {reason}", path.display())]
    Interface { path: PathBuf, reason: String },
    #[error("{}: not a loadable ONNX model: {reason}", path.display())]
    BadOnnx { path: PathBuf, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
}

/// The sidecar: what the model is and the shapes it was exported with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Sidecar {
    pub interface: u32,
    /// What every forecast names as `model_version`.
    pub version: String,
    /// Samples per workload (T).
    pub window: usize,
    /// Workloads per batch (N).
    pub slots: usize,
    /// Features per sample (F).
    pub features: usize,
    /// The interval the model was trained at: its forecasts look this far ahead.
    pub interval_ms: u32,
    pub feature_names: Vec<String>,
    #[serde(default)]
    pub trained_on: Option<String>,
}

impl Sidecar {
    /// Reads and checks the sidecar at `path`.
    pub fn load(path: &Path) -> Result<Sidecar, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ModelError::Missing { path: path.to_owned(), reason: e.to_string() },
            _ => ModelError::Unreadable { path: path.to_owned(), reason: e.to_string() },
        })?;
        let sidecar: Sidecar = serde_json::from_str(&text)
            .map_err(|e| ModelError::BadSidecar { path: path.to_owned(), reason: e.to_string() })?;
        sidecar.check().map_err(|reason| ModelError::Interface { path: path.to_owned(), reason })?;
        Ok(sidecar)
    }

    fn check(&self) -> Result<(), String> {
        if self.interface != INTERFACE {
            return Err(format!("interface {} (this service implements {INTERFACE})", self.interface));
        }
        if self.version.trim().is_empty() || self.version.len() > 200 {
            return Err("version must be a non-empty name of at most 200 bytes".into());
        }
        if self.features != FEATURES {
            return Err(format!("{} features (the interface has {FEATURES})", self.features));
        }
        if self.feature_names != FEATURE_NAMES {
            return Err(format!("feature_names {:?} differ from the interface's {:?}", self.feature_names, FEATURE_NAMES));
        }
        if self.window == 0 || self.window > 1024 {
            return Err(format!("window {} is outside 1..=1024", self.window));
        }
        if self.slots < 2 || self.slots > 1024 {
            return Err(format!("slots {} is outside 2..=1024", self.slots));
        }
        if self.interval_ms == 0 {
            return Err("interval_ms must be positive".into());
        }
        Ok(())
    }
}

/// What one inference returns, slot by slot (absent slots hold meaningless values).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOutputs {
    /// `[slot]`: next-interval usage in the units of features 0–5.
    pub usage: Vec<[f32; USAGE_FIGURES]>,
    /// `[slot]`: slowdown with every present co-runner.
    pub slowdown: Vec<f32>,
    /// `[j * slots + i]`: slowdown of slot i with slot j removed.
    pub slowdown_without: Vec<f32>,
}

/// A loaded, optimised model ready to run.
pub struct Model {
    sidecar: Sidecar,
    plan: Arc<TypedRunnableModel>,
    /// Position of `features` and `present` among the graph's inputs.
    input_order: [usize; 2],
    /// Position of `usage`, `slowdown`, `slowdown_without` among the graph's outputs.
    output_order: [usize; 3],
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("sidecar", &self.sidecar).finish_non_exhaustive()
    }
}

/// The two files of the model in `dir`: (ONNX, sidecar).
pub fn model_files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(MODEL_FILE), dir.join(SIDECAR_FILE))
}

impl Model {
    /// Loads the model in `dir` (sidecar first, then the graph) and checks it against the
    /// interface.
    pub fn load(dir: &Path) -> Result<Model, ModelError> {
        let (onnx_path, sidecar_path) = model_files(dir);
        let sidecar = Sidecar::load(&sidecar_path)?;
        let bytes = std::fs::read(&onnx_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ModelError::Missing { path: onnx_path.clone(), reason: e.to_string() },
            _ => ModelError::Unreadable { path: onnx_path.clone(), reason: e.to_string() },
        })?;
        Model::from_bytes(sidecar, &bytes, &onnx_path)
    }

    /// Builds the model from the graph's bytes; `path` names it in errors.
    pub fn from_bytes(sidecar: Sidecar, bytes: &[u8], path: &Path) -> Result<Model, ModelError> {
        let bad = |reason: String| ModelError::BadOnnx { path: path.to_owned(), reason };
        let interface = |reason: String| ModelError::Interface { path: path.to_owned(), reason };
        let graph = tract_onnx::onnx().model_for_read(&mut &bytes[..]).map_err(|e| bad(format!("{e:#}")))?;

        let input_names: Vec<String> = graph
            .input_outlets()
            .map_err(|e| bad(format!("{e:#}")))?
            .iter()
            .map(|o| graph.node(o.node).name.clone())
            .collect();
        let output_names: Vec<String> = graph
            .output_outlets()
            .map_err(|e| bad(format!("{e:#}")))?
            .iter()
            .map(|o| graph.outlet_label(*o).map_or_else(|| graph.node(o.node).name.clone(), str::to_owned))
            .collect();
        let position = |names: &[String], wanted: &str, kind: &str| {
            names.iter().position(|n| n == wanted).ok_or_else(|| {
                interface(format!("has no {kind} named {wanted:?} (its {kind}s are {names:?})"))
            })
        };
        if input_names.len() != 2 {
            return Err(interface(format!("has inputs {input_names:?}; the interface has exactly features and present")));
        }
        let input_order = [position(&input_names, INPUT_FEATURES, "input")?, position(&input_names, INPUT_PRESENT, "input")?];
        let output_order = [
            position(&output_names, OUTPUT_USAGE, "output")?,
            position(&output_names, OUTPUT_SLOWDOWN, "output")?,
            position(&output_names, OUTPUT_SLOWDOWN_WITHOUT, "output")?,
        ];

        let typed = graph.into_optimized().map_err(|e| bad(format!("cannot optimise: {e:#}")))?;
        let (n, t, f) = (sidecar.slots, sidecar.window, sidecar.features);
        let expect = |fact: &TypedFact, name: &str, shape: &[usize]| -> Result<(), ModelError> {
            if fact.datum_type != f32::datum_type() {
                return Err(interface(format!("{name} is {:?}, not float32", fact.datum_type)));
            }
            match fact.shape.as_concrete() {
                Some(s) if s == shape => Ok(()),
                Some(s) => Err(interface(format!("{name} has shape {s:?}; the sidecar implies {shape:?}"))),
                None => Err(interface(format!("{name} has no fixed shape ({:?})", fact.shape))),
            }
        };
        let fact = |ix: usize| typed.input_fact(ix).map_err(|e| bad(format!("{e:#}")));
        expect(fact(input_order[0])?, INPUT_FEATURES, &[n, t, f])?;
        expect(fact(input_order[1])?, INPUT_PRESENT, &[n])?;
        let fact = |ix: usize| typed.output_fact(ix).map_err(|e| bad(format!("{e:#}")));
        expect(fact(output_order[0])?, OUTPUT_USAGE, &[n, USAGE_FIGURES])?;
        expect(fact(output_order[1])?, OUTPUT_SLOWDOWN, &[n])?;
        expect(fact(output_order[2])?, OUTPUT_SLOWDOWN_WITHOUT, &[n, n])?;

        let plan = typed.into_runnable().map_err(|e| bad(format!("cannot plan: {e:#}")))?;
        Ok(Model { sidecar, plan, input_order, output_order })
    }

    pub fn sidecar(&self) -> &Sidecar {
        &self.sidecar
    }

    pub fn version(&self) -> &str {
        &self.sidecar.version
    }

    pub fn slots(&self) -> usize {
        self.sidecar.slots
    }

    pub fn window(&self) -> usize {
        self.sidecar.window
    }

    /// Runs one batch. `features` is `[slots, window, features]` row-major, `present` is
    /// `[slots]` (1.0 for a slot that holds a workload).
    pub fn run(&self, features: &[f32], present: &[f32]) -> Result<ModelOutputs, ModelError> {
        let (n, t, f) = (self.sidecar.slots, self.sidecar.window, self.sidecar.features);
        if features.len() != n * t * f || present.len() != n {
            return Err(ModelError::Inference(format!(
                "batch of {} features and {} presence flags; the model takes {} and {n}",
                features.len(),
                present.len(),
                n * t * f
            )));
        }
        let failed = |e: TractError| ModelError::Inference(format!("{e:#}"));
        let features = Tensor::from_shape(&[n, t, f], features).map_err(failed)?;
        let present = Tensor::from_shape(&[n], present).map_err(failed)?;
        let inputs: TVec<TValue> = if self.input_order[0] == 0 {
            tvec![features.into(), present.into()]
        } else {
            tvec![present.into(), features.into()]
        };
        let outputs = self.plan.run(inputs).map_err(failed)?;
        let values = |ix: usize| -> Result<Vec<f32>, ModelError> {
            let view = outputs[ix].to_plain_array_view::<f32>().map_err(failed)?;
            Ok(view.iter().copied().collect())
        };
        let usage_flat = values(self.output_order[0])?;
        let usage = usage_flat
            .chunks_exact(USAGE_FIGURES)
            .map(|c| {
                let mut u = [0.0; USAGE_FIGURES];
                u.copy_from_slice(c);
                u
            })
            .collect();
        Ok(ModelOutputs {
            usage,
            slowdown: values(self.output_order[1])?,
            slowdown_without: values(self.output_order[2])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar_json() -> serde_json::Value {
        serde_json::json!({
            "interface": 3, "version": "v-test", "window": 8, "slots": 32, "features": 28,
            "interval_ms": 1000, "feature_names": FEATURE_NAMES, "trained_on": "nothing"
        })
    }

    fn write_sidecar(dir: &Path, value: &serde_json::Value) -> PathBuf {
        let path = dir.join(SIDECAR_FILE);
        std::fs::write(&path, value.to_string()).unwrap();
        path
    }

    #[test]
    fn a_valid_sidecar_loads() {
        let dir = tempfile::tempdir().unwrap();
        let sidecar = Sidecar::load(&write_sidecar(dir.path(), &sidecar_json())).unwrap();
        assert_eq!((sidecar.version.as_str(), sidecar.window, sidecar.slots), ("v-test", 8, 32));
    }

    #[test]
    fn sidecars_that_break_the_interface_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, serde_json::Value, &str); 5] = [
            ("interface", serde_json::json!(1), "interface 1"),
            ("features", serde_json::json!(18), "18 features"),
            ("version", serde_json::json!(" "), "version"),
            ("window", serde_json::json!(0), "window 0"),
            ("feature_names", serde_json::json!(["cpu_cores"]), "feature_names"),
        ];
        for (field, value, expected) in cases {
            let mut json = sidecar_json();
            json[field] = value;
            let err = Sidecar::load(&write_sidecar(dir.path(), &json)).unwrap_err();
            assert!(matches!(err, ModelError::Interface { .. }), "{field}: {err}");
            assert!(err.to_string().contains(expected), "{field}: {err}");
            assert!(err.to_string().contains(SIDECAR_FILE), "the error names the file: {err}");
        }
        let mut json = sidecar_json();
        json.as_object_mut().unwrap().remove("version");
        let err = Sidecar::load(&write_sidecar(dir.path(), &json)).unwrap_err();
        assert!(matches!(err, ModelError::BadSidecar { .. }) && err.to_string().contains("version"), "{err}");
    }

    #[test]
    fn missing_and_corrupt_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Model::load(dir.path()).unwrap_err();
        assert!(matches!(err, ModelError::Missing { .. }) && err.to_string().contains(SIDECAR_FILE), "{err}");
        write_sidecar(dir.path(), &sidecar_json());
        let err = Model::load(dir.path()).unwrap_err();
        assert!(matches!(err, ModelError::Missing { .. }) && err.to_string().contains(MODEL_FILE), "{err}");
        std::fs::write(dir.path().join(MODEL_FILE), b"\x0a\xff\xff\xff\x0f not protobuf").unwrap();
        let err = Model::load(dir.path()).unwrap_err();
        assert!(matches!(err, ModelError::BadOnnx { .. }) && err.to_string().contains(MODEL_FILE), "{err}");
    }
}
