//! entente-predictor as a library: interference forecasts for every host from its workloads'
//! telemetry.
//!
//! The pipeline follows the files: [`features`] turns a sample into the model's inputs,
//! [`window`] keeps each workload's recent history, [`model`] loads and runs the ONNX model
//! with tract, [`forecaster`] makes one host's prediction (or the stated baseline's),
//! [`interference`] and [`correlation`] derive who hurts whom, and [`service`] ties it all to
//! NATS, with [`reload`] noticing new models and [`metrics`] naming what it counts. The contract with the training script is
//! `predictor/MODEL_INTERFACE.md`.

pub mod correlation;
pub mod features;
pub mod forecaster;
pub mod interference;
pub mod metrics;
pub mod model;
pub mod reload;
pub mod service;
pub mod window;
