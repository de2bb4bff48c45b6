//! The wall clock every message is stamped with: milliseconds since the Unix epoch.
//!
//! Samples, forecasts, rounds and leases all carry this clock, so components compare stamps
//! written on different hosts; one helper keeps them all reading it the same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the system clock is set before it).
pub fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
