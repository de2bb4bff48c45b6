//! Strategy: from usage, forecast, SLO slack and budget to a bid. Pure logic, no I/O.
//!
//! [`fallback`] predicts usage when the predictor is silent, [`slack`] measures how close a
//! workload is to its SLO, and [`bid`] turns all of it into an XOR bid of a few bundles.

pub mod bid;
pub mod fallback;
pub mod slack;

pub use bid::{make_bid, plan_bundles, BidInput, Prediction};
pub use fallback::{slowdown_from_pressure, FallbackPredictor};
pub use slack::slo_slack;
