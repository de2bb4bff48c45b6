//! Reader for entente's single-host JSON instance format, used by `entente-arbiter solve
//! --format json` and by anyone writing a host's round down by hand:
//!
//! ```json
//! {"capacity": {"cpu": 8000, "memory": 17179869184},
//!  "bidders": [{"id": "web", "guaranteed": {"cpu": 1000},
//!               "bundles": [{"id": "more", "alloc": {"cpu": 3000}, "value": 12.5}]}]}
//! ```
//!
//! A missing resource is 0, unknown fields are ignored, an unknown resource name is an error.
//! Amounts must be non-negative integers (JSON parsing already refuses NaN, negatives and
//! fractions for them, with a line and column). A bidder may carry an optional `balance`
//! (credits) and `tenant`. Like the rest of the clearing module this parses text and does no I/O.

use std::collections::BTreeMap;

use entente_protocol::{Resource, ResourceVector};
use serde::Deserialize;

use super::auction::{Bundle, HostAuction, WorkloadBid};

#[derive(Deserialize)]
struct JsonInstance {
    capacity: BTreeMap<String, u64>,
    bidders: Vec<JsonBidder>,
}

#[derive(Deserialize)]
struct JsonBidder {
    id: String,
    #[serde(default)]
    guaranteed: BTreeMap<String, u64>,
    #[serde(default)]
    balance: Option<f64>,
    #[serde(default)]
    tenant: Option<String>,
    bundles: Vec<JsonBundle>,
}

#[derive(Deserialize)]
struct JsonBundle {
    id: String,
    alloc: BTreeMap<String, u64>,
    value: f64,
}

/// Parses a JSON host instance. The result is not yet validated against itself (allocations
/// below guarantees and the like): [`HostAuction::validate`] does that, and clearing calls it.
pub fn parse_host_instance(text: &str, host: &str) -> Result<HostAuction, String> {
    let instance: JsonInstance = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let capacity = vector(&instance.capacity).map_err(|e| format!("capacity: {e}"))?;
    let workloads = instance
        .bidders
        .into_iter()
        .map(|b| {
            let guaranteed = vector(&b.guaranteed).map_err(|e| format!("bidder `{}` guaranteed: {e}", b.id))?;
            let bundles = b
                .bundles
                .into_iter()
                .map(|bundle| {
                    let alloc = vector(&bundle.alloc)
                        .map_err(|e| format!("bidder `{}` bundle `{}` alloc: {e}", b.id, bundle.id))?;
                    Ok(Bundle { id: bundle.id, alloc, value: bundle.value })
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(WorkloadBid { workload: b.id, tenant: b.tenant, guaranteed, balance: b.balance, bundles })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(HostAuction { host: host.to_string(), capacity, workloads })
}

fn vector(amounts: &BTreeMap<String, u64>) -> Result<ResourceVector, String> {
    let mut v = ResourceVector::ZERO;
    for (name, &amount) in amounts {
        let resource = Resource::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = Resource::ALL.iter().map(|r| r.name()).collect();
            format!("unknown resource `{name}` (known: {})", known.join(", "))
        })?;
        v.set(resource, amount).map_err(|e| e.to_string())?;
    }
    Ok(v)
}
