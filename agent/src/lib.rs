//! entente-agent as a library: one agent per host, an actor per workload that runs the
//! negotiation loop monitor -> predict -> bid -> enforce.
//!
//! The folders follow the loop: [`monitor`] measures a workload, [`strategy`] turns measurements
//! and forecasts into a bid (pure logic, no I/O), [`enforce`] applies decisions to cgroups or
//! containers and holds them under their lease.

pub mod config;
pub mod enforce;
pub mod metrics;
pub mod monitor;
pub mod negotiator;
pub mod runtime;
pub mod slo_probe;
pub mod strategy;
pub mod workload;
