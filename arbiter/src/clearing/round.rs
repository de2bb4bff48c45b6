//! Clearing a whole round: every host, in parallel, with quotas coupling hosts where they must.
//!
//! Hosts clear independently unless a cluster quota links them: a quota on (tenant, resource)
//! joins every host where that tenant has a workload bidding for more than its guarantee of that
//! resource. Linked hosts are merged (union-find) into one joint problem whose rows are the union
//! of their capacity rows plus the quota rows; everything else clears alone. The components are
//! independent, so they are solved in parallel with rayon. VCG payments of a joint problem are
//! computed over that joint problem (removing a workload from every host it could affect).
//!
//! A host whose input is invalid is reported with its error and skipped; it does not stop the
//! others (its workloads keep their guarantees, which still count towards their tenants' quotas).

use std::collections::HashMap;
use std::time::Duration;

use entente_protocol::ResourceVector;
use rayon::prelude::*;

use super::auction::{joint_problem, AuctionError, CappedBundle, HostAuction, Quota};
use super::solver::SolveOptions;
use super::vcg::clear_within;

/// How to clear.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClearingOptions {
    /// Time budget of each solve (one per component, plus one per winner for payments).
    pub time_limit: Option<Duration>,
    /// Compute VCG payments (otherwise every payment is 0).
    pub payments: bool,
}

impl Default for ClearingOptions {
    fn default() -> Self {
        ClearingOptions { time_limit: None, payments: true }
    }
}

/// What one workload gets.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadOutcome {
    pub workload: String,
    /// Index of the winning bundle in the workload's `bundles`, if it won one.
    pub bundle: Option<usize>,
    /// Its id.
    pub bundle_id: Option<String>,
    /// What to enforce: the winning bundle's allocation, or the guarantee.
    pub allocation: ResourceVector,
    /// The (possibly capped) value the winning bundle took part with; 0 for a loser.
    pub value: f64,
    /// VCG payment in credits, `0 ≤ payment ≤ value`.
    pub payment: f64,
}

/// One host's result.
#[derive(Debug, Clone, PartialEq)]
pub struct HostOutcome {
    pub host: String,
    /// Sum of the winning (capped) values on this host.
    pub welfare: f64,
    /// The allocation is proven optimal (for the host's component, when quotas couple hosts).
    pub optimal: bool,
    /// No feasible allocation of the host's component is worth more than this (equal to the
    /// component's welfare when `optimal`; with a relative gap, within that gap of it).
    pub welfare_bound: f64,
    /// The payments come from finished solves.
    pub payments_exact: bool,
    /// Other hosts this one was cleared jointly with, because of quotas.
    pub coupled_with: Vec<String>,
    /// One entry per workload, in input order.
    pub workloads: Vec<WorkloadOutcome>,
    /// Bundles whose value was capped at the workload's balance.
    pub capped: Vec<CappedBundle>,
}

/// Clears a single host (no quotas).
pub fn clear_host(host: &HostAuction, options: &ClearingOptions) -> Result<HostOutcome, AuctionError> {
    clear_host_within(host, options, 0.0)
}

/// [`clear_host`] with every solve stopped once proven within `relative_gap` of its optimum.
pub fn clear_host_within(
    host: &HostAuction,
    options: &ClearingOptions,
    relative_gap: f64,
) -> Result<HostOutcome, AuctionError> {
    clear_round_within(std::slice::from_ref(host), &[], options, relative_gap)
        .pop()
        .expect("one host in, one result out")
}

/// Clears every host of a round under `quotas`. The result has one entry per host, in order.
pub fn clear_round(
    hosts: &[HostAuction],
    quotas: &[Quota],
    options: &ClearingOptions,
) -> Vec<Result<HostOutcome, AuctionError>> {
    clear_round_within(hosts, quotas, options, 0.0)
}

/// [`clear_round`] with every solve (allocation and VCG re-solves) stopped once proven within
/// `relative_gap` of its optimum (see [`super::solve_within`]); 0 is exact. A host's `optimal`
/// then says whether its allocation is nevertheless proven optimal, and `welfare_bound` how far
/// from optimal it can be.
pub fn clear_round_within(
    hosts: &[HostAuction],
    quotas: &[Quota],
    options: &ClearingOptions,
    relative_gap: f64,
) -> Vec<Result<HostOutcome, AuctionError>> {
    let mut verdicts: Vec<Result<(), AuctionError>> = map_in_parallel(hosts, HostAuction::validate);
    let mut host_index: HashMap<&str, usize> = HashMap::new();
    for (h, host) in hosts.iter().enumerate() {
        if host_index.insert(host.host.as_str(), h).is_some() {
            verdicts[h] = Err(AuctionError::DuplicateHost { host: host.host.clone() });
        }
    }

    // What each quota's tenant already holds through guarantees, on every host.
    let mut quota_base = vec![0u128; quotas.len()];
    let mut quotas_of_tenant: HashMap<&str, Vec<usize>> = HashMap::new();
    for (q, quota) in quotas.iter().enumerate() {
        quotas_of_tenant.entry(quota.tenant.as_str()).or_default().push(q);
    }
    let mut hosts_of_quota: Vec<Vec<usize>> = vec![Vec::new(); quotas.len()];
    for (h, host) in hosts.iter().enumerate() {
        for w in &host.workloads {
            let Some(qs) = w.tenant.as_deref().and_then(|t| quotas_of_tenant.get(t)) else { continue };
            for &q in qs {
                let resource = quotas[q].resource;
                quota_base[q] += u128::from(w.guaranteed.get(resource));
                let wants_more = w.bundles.iter().any(|b| b.alloc.get(resource) > w.guaranteed.get(resource));
                if verdicts[h].is_ok() && wants_more && hosts_of_quota[q].last() != Some(&h) {
                    hosts_of_quota[q].push(h);
                }
            }
        }
    }

    // Components: hosts linked through quotas.
    let mut parent: Vec<usize> = (0..hosts.len()).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for linked in &hosts_of_quota {
        for pair in linked.windows(2) {
            let (a, b) = (root(&mut parent, pair[0]), root(&mut parent, pair[1]));
            parent[a] = b;
        }
    }
    let mut components: HashMap<usize, Vec<usize>> = HashMap::new();
    for h in (0..hosts.len()).filter(|&h| verdicts[h].is_ok()) {
        let r = root(&mut parent, h);
        components.entry(r).or_default().push(h);
    }
    let mut quotas_of_component: HashMap<usize, Vec<usize>> = HashMap::new();
    for (q, linked) in hosts_of_quota.iter().enumerate() {
        if let Some(&h) = linked.first() {
            quotas_of_component.entry(root(&mut parent, h)).or_default().push(q);
        }
    }
    let components: Vec<(Vec<usize>, Vec<usize>)> = components
        .into_iter()
        .map(|(r, members)| (members, quotas_of_component.remove(&r).unwrap_or_default()))
        .collect();

    let solved: Vec<Vec<(usize, HostOutcome)>> = map_in_parallel(&components, |(members, component_quotas)| {
        let quota_refs: Vec<(usize, &Quota)> = component_quotas.iter().map(|&q| (q, &quotas[q])).collect();
        clear_component(hosts, members, &quota_refs, &quota_base, options, relative_gap)
    });

    let mut outcomes: Vec<Option<HostOutcome>> = vec![None; hosts.len()];
    for (h, outcome) in solved.into_iter().flatten() {
        outcomes[h] = Some(outcome);
    }
    verdicts
        .into_iter()
        .zip(outcomes)
        .map(|(verdict, outcome)| verdict.map(|()| outcome.expect("every valid host is in a component")))
        .collect()
}

/// `f` over `items`, on rayon's pool when there are several. A single item runs on the calling
/// thread: handing it to the pool and waiting for it costs tens of microseconds, as much as
/// clearing a small host.
pub(crate) fn map_in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    if items.len() <= 1 {
        items.iter().map(f).collect()
    } else {
        items.par_iter().map(f).collect()
    }
}

fn clear_component(
    hosts: &[HostAuction],
    members: &[usize],
    quotas: &[(usize, &Quota)],
    quota_base: &[u128],
    options: &ClearingOptions,
    relative_gap: f64,
) -> Vec<(usize, HostOutcome)> {
    let joint = joint_problem(hosts, members, quotas, quota_base);
    let clearing =
        clear_within(&joint.problem, &SolveOptions { time_limit: options.time_limit }, relative_gap, options.payments);
    let chosen = &clearing.solution.chosen;
    let mut outcomes: Vec<(usize, HostOutcome)> = members
        .iter()
        .map(|&h| {
            let coupled_with =
                members.iter().filter(|&&o| o != h).map(|&o| hosts[o].host.clone()).collect::<Vec<_>>();
            let host = &hosts[h];
            let capped = host
                .workloads
                .iter()
                .flat_map(|w| {
                    w.bundles.iter().filter(|b| w.effective_value(b) < b.value).map(|b| CappedBundle {
                        host: host.host.clone(),
                        workload: w.workload.clone(),
                        bundle: b.id.clone(),
                        bid_value: b.value,
                        capped_value: w.effective_value(b),
                    })
                })
                .collect();
            let outcome = HostOutcome {
                host: host.host.clone(),
                welfare: 0.0,
                optimal: clearing.solution.optimal,
                welfare_bound: clearing.solution.bound,
                payments_exact: clearing.payments_exact,
                coupled_with,
                workloads: Vec::with_capacity(host.workloads.len()),
                capped,
            };
            (h, outcome)
        })
        .collect();
    // Slots own ascending, disjoint ranges of items and `chosen` is sorted: one walk over both
    // finds every winner.
    let mut next_chosen = chosen.iter().copied().peekable();
    for slot in &joint.slots {
        let w = &hosts[slot.host].workloads[slot.workload];
        while next_chosen.next_if(|&item| item < slot.items.start).is_some() {}
        let won = next_chosen.next_if(|item| slot.items.contains(item)).map(|item| item - slot.items.start);
        let (host_pos, _) = members.iter().enumerate().find(|&(_, &h)| h == slot.host).expect("slot host is a member");
        let outcome = &mut outcomes[host_pos].1;
        let value = won.map_or(0.0, |b| w.effective_value(&w.bundles[b]));
        outcome.welfare += value;
        outcome.workloads.push(WorkloadOutcome {
            workload: w.workload.clone(),
            bundle: won,
            bundle_id: won.map(|b| w.bundles[b].id.clone()),
            allocation: won.map_or(w.guaranteed, |b| w.bundles[b].alloc),
            value,
            payment: clearing.payments[slot.group],
        });
    }
    outcomes
}
