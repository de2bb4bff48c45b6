//! The auction as entente's round loop sees it: hosts with capacities, workloads with guarantees,
//! credit balances and XOR bids of absolute target allocations, and cluster-wide tenant quotas.
//!
//! This module validates that input and translates a set of hosts into one [`Problem`]. The
//! translation works *above the guarantees*: a workload that wins nothing keeps `guaranteed`, so
//! each host row's capacity is what is left after every guarantee, and a bundle consumes only
//! `alloc − guaranteed`. A quota row is the tenant's limit minus the guarantees it already holds.
//!
//! **Budgets: values are capped, not rejected.** A bundle whose value exceeds the workload's
//! credit balance takes part with its value lowered to the balance, and is listed in the outcome
//! as capped. Capping keeps the workload in the auction (rejecting would starve a workload
//! whose balance dipped for a round) and, since a VCG payment never exceeds the winning value,
//! guarantees that nobody is charged more than it holds. A workload with no balance given is
//! unconstrained.

use entente_protocol::{Resource, ResourceVector, MAX_AMOUNT};

use super::problem::Problem;

/// One option in a workload's XOR bid.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub id: String,
    /// The absolute allocation asked for (at least the guarantee on every resource).
    pub alloc: ResourceVector,
    /// Credits the workload would pay at most for it.
    pub value: f64,
}

/// One workload's standing on a host this round.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadBid {
    pub workload: String,
    /// The tenant it belongs to, for quotas.
    pub tenant: Option<String>,
    /// Always honoured, whatever the auction decides.
    pub guaranteed: ResourceVector,
    /// Credit balance; bundle values above it are capped to it. `None`: no budget applies.
    pub balance: Option<f64>,
    /// Mutually exclusive options; may be empty (the workload just keeps its guarantee).
    pub bundles: Vec<Bundle>,
}

/// One host's auction.
#[derive(Debug, Clone, PartialEq)]
pub struct HostAuction {
    pub host: String,
    pub capacity: ResourceVector,
    pub workloads: Vec<WorkloadBid>,
}

/// A cluster-wide quota: `tenant` may hold at most `limit` of `resource` over all hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub tenant: String,
    pub resource: Resource,
    pub limit: u64,
}

/// A bundle whose value was lowered to the workload's balance.
#[derive(Debug, Clone, PartialEq)]
pub struct CappedBundle {
    pub host: String,
    pub workload: String,
    pub bundle: String,
    pub bid_value: f64,
    pub capped_value: f64,
}

/// Why an auction cannot be cleared as given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuctionError {
    #[error("host `{host}`: the guarantees need {needed} {resource} but the capacity is {capacity}")]
    GuaranteesOverCapacity { host: String, resource: Resource, needed: u128, capacity: u64 },
    #[error("host `{host}`, workload `{workload}`, bundle `{bundle}`: {resource} {alloc} is below the guarantee {guaranteed}")]
    AllocBelowGuarantee {
        host: String,
        workload: String,
        bundle: String,
        resource: Resource,
        alloc: u64,
        guaranteed: u64,
    },
    #[error("host `{host}`, workload `{workload}`, bundle `{bundle}`: value {value} must be a finite number >= 0")]
    BadValue { host: String, workload: String, bundle: String, value: f64 },
    #[error("host `{host}`, workload `{workload}`: balance {balance} must be a finite number")]
    BadBalance { host: String, workload: String, balance: f64 },
    #[error("host `{host}`, workload `{workload}`: {what} has an amount above the maximum {MAX_AMOUNT}")]
    AmountTooLarge { host: String, workload: String, what: String },
    #[error("host `{host}`: capacity has an amount above the maximum {MAX_AMOUNT}")]
    CapacityTooLarge { host: String },
    #[error("host `{host}`: workload `{workload}` appears twice")]
    DuplicateWorkload { host: String, workload: String },
    #[error("host `{host}`, workload `{workload}`: bundle `{bundle}` appears twice")]
    DuplicateBundle { host: String, workload: String, bundle: String },
    #[error("host `{host}` appears twice in the round")]
    DuplicateHost { host: String },
}

impl HostAuction {
    /// Checks everything the solver relies on; the first problem found is returned.
    pub fn validate(&self) -> Result<(), AuctionError> {
        let host = || self.host.clone();
        if self.capacity.validate().is_err() {
            return Err(AuctionError::CapacityTooLarge { host: host() });
        }
        if let Some(workload) = first_duplicate(self.workloads.iter().map(|w| w.workload.as_str())) {
            return Err(AuctionError::DuplicateWorkload { host: host(), workload: workload.to_owned() });
        }
        let mut guaranteed = [0u128; Resource::COUNT];
        for w in &self.workloads {
            let workload = || w.workload.clone();
            if w.guaranteed.validate().is_err() {
                return Err(AuctionError::AmountTooLarge { host: host(), workload: workload(), what: "guarantee".into() });
            }
            if let Some(balance) = w.balance.filter(|b| !b.is_finite()) {
                return Err(AuctionError::BadBalance { host: host(), workload: workload(), balance });
            }
            for (sum, amount) in guaranteed.iter_mut().zip(w.guaranteed.as_array()) {
                *sum += u128::from(amount);
            }
            if let Some(bundle) = first_duplicate(w.bundles.iter().map(|b| b.id.as_str())) {
                return Err(AuctionError::DuplicateBundle { host: host(), workload: workload(), bundle: bundle.to_owned() });
            }
            for b in &w.bundles {
                let bundle = || b.id.clone();
                if !b.value.is_finite() || b.value < 0.0 {
                    return Err(AuctionError::BadValue { host: host(), workload: workload(), bundle: bundle(), value: b.value });
                }
                if b.alloc.validate().is_err() {
                    return Err(AuctionError::AmountTooLarge {
                        host: host(),
                        workload: workload(),
                        what: format!("bundle `{}`", b.id),
                    });
                }
                if let Some(resource) = w.guaranteed.first_excess_over(&b.alloc) {
                    return Err(AuctionError::AllocBelowGuarantee {
                        host: host(),
                        workload: workload(),
                        bundle: bundle(),
                        resource,
                        alloc: b.alloc.get(resource),
                        guaranteed: w.guaranteed.get(resource),
                    });
                }
            }
        }
        for resource in Resource::ALL {
            let (needed, capacity) = (guaranteed[resource.index()], self.capacity.get(resource));
            if needed > u128::from(capacity) {
                return Err(AuctionError::GuaranteesOverCapacity { host: host(), resource, needed, capacity });
            }
        }
        Ok(())
    }
}

/// A name that occurs more than once, if any. Validation runs on every host of every round, so
/// this neither hashes nor allocates for a short list (a workload's bundles): it compares pairs,
/// and first a key of each name (its length and its first and last bytes), since names in one
/// list mostly share a prefix and a length ("b0", "b1", ...); a hash set cost more than the rest
/// of the check. A longer list (a host's workloads) is sorted, which beats comparing pairs from
/// a few dozen names on.
fn first_duplicate<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> Option<&'a str> {
    const SHORT: usize = 16;
    if names.len() <= SHORT {
        let key = |name: &str| {
            let bytes = name.as_bytes();
            (bytes.len() as u64) << 16 | u64::from(bytes.first().copied().unwrap_or(0)) << 8
                | u64::from(bytes.last().copied().unwrap_or(0))
        };
        let (mut short, mut keys) = ([""; SHORT], [0u64; SHORT]);
        for (k, name) in names.enumerate() {
            (short[k], keys[k]) = (name, key(name));
            if (0..k).any(|j| keys[j] == keys[k] && short[j] == name) {
                return Some(name);
            }
        }
        return None;
    }
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    names.windows(2).find(|pair| pair[0] == pair[1]).map(|pair| pair[0])
}

impl WorkloadBid {
    /// The value a bundle takes part with: its bid, capped at the balance.
    pub fn effective_value(&self, bundle: &Bundle) -> f64 {
        match self.balance {
            Some(balance) => bundle.value.min(balance.max(0.0)),
            None => bundle.value,
        }
    }
}

/// Where a workload's group and bundles sit in a joint problem.
#[derive(Debug, Clone)]
pub(crate) struct WorkloadSlot {
    pub host: usize,
    pub workload: usize,
    pub group: usize,
    /// Problem items of the bundles, in the same order (bundle `k` is item `items.start + k`).
    pub items: std::ops::Range<usize>,
}

/// A set of (already validated) hosts, with the quotas that link them, as one problem.
pub(crate) struct JointProblem {
    pub problem: Problem,
    /// One per workload, in the order of their items (ascending, disjoint ranges).
    pub slots: Vec<WorkloadSlot>,
}

/// Builds the joint problem of `hosts` (indices into `all_hosts`). `quotas` are the quotas whose
/// tenant has workloads among these hosts; `quota_base[q]` is what the tenant's guarantees already
/// hold of quota `q` across the whole round (a quota already exceeded by guarantees leaves 0).
pub(crate) fn joint_problem(
    all_hosts: &[HostAuction],
    hosts: &[usize],
    quotas: &[(usize, &Quota)],
    quota_base: &[u128],
) -> JointProblem {
    let mut capacities = Vec::with_capacity(hosts.len() * Resource::COUNT + quotas.len());
    for &h in hosts {
        let host = &all_hosts[h];
        let mut left = host.capacity.as_array();
        for w in &host.workloads {
            for (l, g) in left.iter_mut().zip(w.guaranteed.as_array()) {
                *l -= g;
            }
        }
        capacities.extend_from_slice(&left);
    }
    for &(q, quota) in quotas {
        let left = u128::from(quota.limit).saturating_sub(quota_base[q]);
        capacities.push(u64::try_from(left).unwrap_or(u64::MAX));
    }
    let workloads = hosts.iter().map(|&h| all_hosts[h].workloads.len()).sum();
    let bundles: usize = hosts.iter().flat_map(|&h| &all_hosts[h].workloads).map(|w| w.bundles.len()).sum();
    let rows_per_bundle = Resource::COUNT + quotas.len().min(Resource::COUNT);
    let mut problem = Problem::with_capacity(capacities, bundles, bundles * rows_per_bundle);
    let mut slots = Vec::with_capacity(workloads);
    for (position, &h) in hosts.iter().enumerate() {
        let host = &all_hosts[h];
        for (wi, w) in host.workloads.iter().enumerate() {
            let group = problem.add_group();
            let first = problem.item_count();
            for b in &w.bundles {
                let extra = b.alloc.saturating_sub(&w.guaranteed).as_array();
                let host_rows = (0..Resource::COUNT).map(|r| (position * Resource::COUNT + r, extra[r]));
                let quota_rows = quotas
                    .iter()
                    .enumerate()
                    .filter(|(_, &(_, quota))| w.tenant.as_deref() == Some(quota.tenant.as_str()))
                    .map(|(k, &(_, quota))| (hosts.len() * Resource::COUNT + k, extra[quota.resource.index()]));
                problem
                    .add_item(group, w.effective_value(b), host_rows.chain(quota_rows))
                    .expect("validated bundle maps onto existing rows");
            }
            slots.push(WorkloadSlot { host: h, workload: wi, group, items: first..problem.item_count() });
        }
    }
    JointProblem { problem, slots }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_repeated_name_is_found_in_short_and_long_lists() {
        let short = ["b0", "b1", "a1", "b2", "a1", "b1"];
        assert_eq!(first_duplicate(short.into_iter()), Some("a1"), "the first name that repeats an earlier one");
        assert_eq!(first_duplicate(["x1", "y1", "z1", ""].into_iter()), None, "same last byte is not the same name");
        assert_eq!(first_duplicate(["", "a", ""].into_iter()), Some(""), "empty names count too");
        assert_eq!(first_duplicate(std::iter::empty()), None);
        let long: Vec<String> = (0..40).map(|k| format!("w{k}")).collect();
        assert_eq!(first_duplicate(long.iter().map(String::as_str)), None);
        let mut repeated = long.clone();
        repeated.push("w17".to_owned());
        assert_eq!(first_duplicate(repeated.iter().map(String::as_str)), Some("w17"));
    }

    #[test]
    fn a_repeated_bundle_or_workload_is_refused_by_name() {
        let bundle = |id: &str| Bundle { id: id.to_owned(), alloc: ResourceVector::new(2, 2, 0, 0), value: 1.0 };
        let workload = |name: &str, bundles: Vec<Bundle>| WorkloadBid {
            workload: name.to_owned(),
            tenant: None,
            guaranteed: ResourceVector::new(1, 1, 0, 0),
            balance: None,
            bundles,
        };
        let host = HostAuction {
            host: "h".into(),
            capacity: ResourceVector::new(10, 10, 0, 0),
            workloads: vec![workload("redis", vec![bundle("b0"), bundle("b1"), bundle("b0")])],
        };
        assert_eq!(
            host.validate(),
            Err(AuctionError::DuplicateBundle { host: "h".into(), workload: "redis".into(), bundle: "b0".into() })
        );
        let host = HostAuction {
            workloads: vec![workload("redis", vec![bundle("b0")]), workload("redis", vec![])],
            ..host
        };
        assert_eq!(host.validate(), Err(AuctionError::DuplicateWorkload { host: "h".into(), workload: "redis".into() }));
    }
}
