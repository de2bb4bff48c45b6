//! Strategy: from usage, forecast, SLO slack and budget to a bid. Pure logic, no I/O.
//!
//! The fallback predictor for when the predictor service is silent is the stated baseline shared
//! with that service (`entente_protocol::baseline`); [`slack`] measures how close a
//! workload is to its SLO, and [`bid`] turns all of it into an XOR bid of a few bundles.

pub mod bid;
pub mod slack;

pub use bid::{make_bid, plan_bundles, BidInput, Prediction};
pub use entente_protocol::baseline::{slowdown_from_pressure, FallbackPredictor};
pub use slack::slo_slack;
