//! The ledger: the replicated state machine of the arbiter cluster.
//!
//! Everything the cluster agrees on lives here and changes only through a [`Command`] committed
//! by Raft: the hosts and their capacities, each workload's spec, its current allocation and
//! lease, its credit balance, the cluster quotas, and the last decided round. Applying a command
//! is pure and deterministic (no clock, no I/O, no randomness: times come inside the command),
//! so every replica that applies the same log reaches the same ledger, and the ledger can be
//! tested without a cluster.
//!
//! Two rules are enforced here rather than by the leader, so that no leader (old, new, buggy)
//! can break them: admission control (the guarantees on a host never exceed its capacity), and
//! "a round is decided at most once for each host" (a decision for a round at or below the last
//! one settled on that host is refused, whoever proposes it).
//!
//! A round settles host by host. A host whose every workload has bid can be decided before the
//! deadline ([`Command::DecideHosts`], only for the round after the last closed one); the round
//! then closes with [`Command::DecideRound`], which settles every host not yet settled and moves
//! `last_round`. Settling a host refills its workloads' balances, returns expired leases to the
//! guarantee and applies the host's decision, if any: exactly once per host and round, whichever
//! command does it.

use entente_protocol::{
    Decision, HostId, HostRegistration, Resource, ResourceVector, RoundId, TenantId, WorkloadId, WorkloadSpec,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A change to the ledger, proposed by the leader and committed through Raft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Adds a host or updates its capacity and enforcement set.
    RegisterHost { registration: HostRegistration },
    /// Admits a workload (or replaces its spec), subject to admission control.
    RegisterWorkload { spec: WorkloadSpec },
    /// Removes a workload; its guarantee is freed.
    DeregisterWorkload { host: HostId, workload: WorkloadId },
    /// Sets (or with `limit: None`, removes) a tenant's cluster-wide quota on one resource.
    SetQuota { tenant: TenantId, resource: Resource, limit: Option<u64> },
    /// Closes a round: settles every host not yet settled for it, with its decision if one is
    /// listed, and makes `round` the last decided round. Decisions for hosts already settled
    /// (early, by [`Command::DecideHosts`]) are dropped. `term` and `index` of each decision are
    /// filled in from the log entry that commits it.
    DecideRound { round: RoundId, decided_at_unix_ms: u64, decisions: Vec<Decision> },
    /// Settles some hosts of the open round (`last_round + 1`) before it closes: those whose
    /// workloads had all bid. A host already settled for the round is skipped.
    DecideHosts { round: RoundId, decided_at_unix_ms: u64, decisions: Vec<Decision> },
}

/// What applying a command answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Response {
    Accepted,
    Refused { reason: String },
    /// The committed decisions, with their term and index.
    Decided { decisions: Vec<Decision> },
    /// The round was already decided (or an older one was proposed, or early decisions for a
    /// round that is not the open one): nothing changed.
    AlreadyDecided { round: RoundId, last_round: RoundId },
}

/// A workload as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadEntry {
    pub spec: WorkloadSpec,
    /// Credits available; refilled each round by priority, never above the budget.
    pub balance: f64,
    /// What the last decision allocated (the guarantee until one does, or once its lease expired).
    pub allocation: ResourceVector,
    pub lease_expires_unix_ms: u64,
    /// The winning bundle of the last decision, if any.
    pub bundle: Option<String>,
}

impl WorkloadEntry {
    /// The balance the workload may spend in the next round: the current one plus the refill
    /// ([`WorkloadSpec::refill_per_round`]), capped at the budget. The leader caps bids with it;
    /// applying the round subtracts the payment from it, so both sides use the same figure.
    pub fn balance_for_next_round(&self) -> f64 {
        self.spec.balance_after_refill(self.balance)
    }

    /// The allocation in force at `now`: the decided one under a live lease, else the guarantee.
    pub fn allocation_at(&self, now_unix_ms: u64) -> ResourceVector {
        if now_unix_ms < self.lease_expires_unix_ms {
            self.allocation
        } else {
            self.spec.guaranteed
        }
    }
}

/// A host as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostEntry {
    pub registration: HostRegistration,
    pub workloads: BTreeMap<WorkloadId, WorkloadEntry>,
    /// The last committed decision, kept so a new leader can re-publish it (deduplicated by
    /// the stream) in case the old one crashed between commit and publication.
    pub last_decision: Option<Decision>,
    /// The last round settled on this host (see the module comment); 0 before the first.
    #[serde(default)]
    pub settled_round: RoundId,
}

impl HostEntry {
    /// Settles this host for `round`: refills every workload's balance, returns expired leases
    /// to the guarantee, then applies `decision` (if any) and returns it as committed.
    fn settle(
        &mut self,
        round: RoundId,
        decided_at_unix_ms: u64,
        decision: Option<&Decision>,
        term: u64,
        index: u64,
    ) -> Option<Decision> {
        self.settled_round = round;
        for w in self.workloads.values_mut() {
            w.balance = w.balance_for_next_round();
            if w.lease_expires_unix_ms <= decided_at_unix_ms {
                w.allocation = w.spec.guaranteed;
                w.bundle = None;
            }
        }
        let mut decision = decision?.clone();
        decision.round = round;
        decision.term = term;
        decision.index = index;
        // A workload deregistered between clearing and commit is dropped from the decision.
        decision.allocations.retain(|a| self.workloads.contains_key(&a.workload));
        for a in &decision.allocations {
            if let Some(w) = self.workloads.get_mut(&a.workload) {
                w.balance = (w.balance - a.payment).max(0.0);
                w.allocation = a.alloc;
                w.lease_expires_unix_ms = decision.lease_expires_unix_ms;
                w.bundle = a.bundle.clone();
            }
        }
        self.last_decision = Some(decision.clone());
        Some(decision)
    }

    /// Sum of the guarantees of every workload except `except`.
    fn guaranteed_except(&self, except: Option<&WorkloadId>) -> Result<ResourceVector, String> {
        ResourceVector::checked_sum(
            self.workloads.iter().filter(|(id, _)| Some(*id) != except).map(|(_, w)| &w.spec.guaranteed),
        )
        .map_err(|e| e.to_string())
    }
}

/// A tenant's cluster-wide limit on one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaEntry {
    pub tenant: TenantId,
    pub resource: Resource,
    pub limit: u64,
}

/// The replicated state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub hosts: BTreeMap<HostId, HostEntry>,
    pub quotas: Vec<QuotaEntry>,
    /// The last round decided; 0 before the first.
    pub last_round: RoundId,
}

impl Ledger {
    /// Applies a committed command. `term` and `index` identify its log entry.
    pub fn apply(&mut self, command: &Command, term: u64, index: u64) -> Response {
        match command {
            Command::RegisterHost { registration } => self.register_host(registration),
            Command::RegisterWorkload { spec } => self.register_workload(spec),
            Command::DeregisterWorkload { host, workload } => {
                match self.hosts.get_mut(host).and_then(|h| h.workloads.remove(workload)) {
                    Some(_) => Response::Accepted,
                    None => Response::Refused { reason: format!("no workload {host}/{workload}") },
                }
            }
            Command::SetQuota { tenant, resource, limit } => {
                self.quotas.retain(|q| !(q.tenant == *tenant && q.resource == *resource));
                if let Some(limit) = limit {
                    self.quotas.push(QuotaEntry { tenant: tenant.clone(), resource: *resource, limit: *limit });
                }
                Response::Accepted
            }
            Command::DecideRound { round, decided_at_unix_ms, decisions } => {
                self.decide_round(*round, *decided_at_unix_ms, decisions, term, index)
            }
            Command::DecideHosts { round, decided_at_unix_ms, decisions } => {
                self.decide_hosts(*round, *decided_at_unix_ms, decisions, term, index)
            }
        }
    }

    fn register_host(&mut self, registration: &HostRegistration) -> Response {
        if let Err(e) = registration.capacity.validate() {
            return Response::Refused { reason: format!("capacity: {e}") };
        }
        match self.hosts.get_mut(&registration.host) {
            Some(entry) => {
                // A host that shrank must still hold the guarantees it already admitted.
                let guaranteed = match entry.guaranteed_except(None) {
                    Ok(g) => g,
                    Err(e) => return Response::Refused { reason: e },
                };
                if let Some(r) = guaranteed.first_excess_over(&registration.capacity) {
                    return Response::Refused {
                        reason: format!(
                            "new {r} capacity {} is below the {} already guaranteed on {}",
                            registration.capacity.get(r),
                            guaranteed.get(r),
                            registration.host
                        ),
                    };
                }
                entry.registration = registration.clone();
            }
            None => {
                self.hosts.insert(
                    registration.host.clone(),
                    HostEntry {
                        registration: registration.clone(),
                        workloads: BTreeMap::new(),
                        last_decision: None,
                        settled_round: 0,
                    },
                );
            }
        }
        Response::Accepted
    }

    fn register_workload(&mut self, spec: &WorkloadSpec) -> Response {
        let Some(host) = self.hosts.get_mut(&spec.host) else {
            return Response::Refused { reason: format!("host {} is not registered", spec.host) };
        };
        let others = match host.guaranteed_except(Some(&spec.workload)) {
            Ok(g) => g,
            Err(e) => return Response::Refused { reason: e },
        };
        let capacity = host.registration.capacity;
        let free = capacity.saturating_sub(&others);
        if let Some(r) = spec.guaranteed.first_excess_over(&free) {
            return Response::Refused {
                reason: format!(
                    "guarantee {r}={} does not fit: {} of {} on {} is already guaranteed",
                    spec.guaranteed.get(r),
                    others.get(r),
                    capacity.get(r),
                    spec.host
                ),
            };
        }
        match host.workloads.get_mut(&spec.workload) {
            Some(entry) => {
                entry.balance = entry.balance.min(spec.budget);
                entry.spec = spec.clone();
            }
            None => {
                host.workloads.insert(
                    spec.workload.clone(),
                    WorkloadEntry {
                        spec: spec.clone(),
                        balance: spec.budget,
                        allocation: spec.guaranteed,
                        lease_expires_unix_ms: 0,
                        bundle: None,
                    },
                );
            }
        }
        Response::Accepted
    }

    fn decide_round(
        &mut self,
        round: RoundId,
        decided_at_unix_ms: u64,
        decisions: &[Decision],
        term: u64,
        index: u64,
    ) -> Response {
        if round <= self.last_round {
            return Response::AlreadyDecided { round, last_round: self.last_round };
        }
        self.last_round = round;
        let mut listed: BTreeMap<&HostId, &Decision> = decisions.iter().map(|d| (&d.host, d)).collect();
        let mut committed = Vec::with_capacity(decisions.len());
        for (host_id, host) in &mut self.hosts {
            if host.settled_round >= round {
                continue;
            }
            // Every host settles once per closed round, whether it had a decision or not.
            if let Some(d) = host.settle(round, decided_at_unix_ms, listed.remove(host_id), term, index) {
                committed.push(d);
            }
        }
        Response::Decided { decisions: committed }
    }

    fn decide_hosts(
        &mut self,
        round: RoundId,
        decided_at_unix_ms: u64,
        decisions: &[Decision],
        term: u64,
        index: u64,
    ) -> Response {
        if round != self.last_round + 1 {
            return Response::AlreadyDecided { round, last_round: self.last_round };
        }
        let mut committed = Vec::with_capacity(decisions.len());
        for decision in decisions {
            let Some(host) = self.hosts.get_mut(&decision.host) else { continue };
            if host.settled_round >= round {
                continue;
            }
            if let Some(d) = host.settle(round, decided_at_unix_ms, Some(decision), term, index) {
                committed.push(d);
            }
        }
        Response::Decided { decisions: committed }
    }

    /// Looks up one workload.
    pub fn workload(&self, host: &HostId, workload: &WorkloadId) -> Option<&WorkloadEntry> {
        self.hosts.get(host)?.workloads.get(workload)
    }

    /// Number of workloads across all hosts.
    pub fn workload_count(&self) -> usize {
        self.hosts.values().map(|h| h.workloads.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use entente_protocol::{samples, Allocation};

    fn ledger_with_host() -> Ledger {
        let mut ledger = Ledger::default();
        let r = ledger.apply(&Command::RegisterHost { registration: samples::host_registration() }, 1, 1);
        assert_eq!(r, Response::Accepted);
        ledger
    }

    fn spec(name: &str, cpu: u64) -> WorkloadSpec {
        let mut s = samples::workload_spec();
        s.workload = WorkloadId::new(name).unwrap();
        s.guaranteed = ResourceVector::new(cpu, 0, 0, 0);
        s.limit = ResourceVector::new(8_000, 1 << 30, 0, 0);
        s
    }

    #[test]
    fn admission_control_keeps_guarantees_within_capacity() {
        let mut ledger = ledger_with_host();
        // The sample host has 8000 millicores.
        assert_eq!(ledger.apply(&Command::RegisterWorkload { spec: spec("a", 5_000) }, 1, 2), Response::Accepted);
        match ledger.apply(&Command::RegisterWorkload { spec: spec("b", 3_001) }, 1, 3) {
            Response::Refused { reason } => assert!(reason.contains("cpu=3001 does not fit"), "{reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(ledger.apply(&Command::RegisterWorkload { spec: spec("b", 3_000) }, 1, 4), Response::Accepted);
        // Re-registering a workload replaces its own guarantee rather than adding to it.
        assert_eq!(ledger.apply(&Command::RegisterWorkload { spec: spec("a", 4_000) }, 1, 5), Response::Accepted);
        // A host cannot shrink below what it already guarantees.
        let mut smaller = samples::host_registration();
        smaller.capacity.cpu = 6_000;
        assert!(matches!(
            ledger.apply(&Command::RegisterHost { registration: smaller }, 1, 6),
            Response::Refused { .. }
        ));
        let mut unknown = spec("c", 1);
        unknown.host = HostId::new("nowhere").unwrap();
        assert!(matches!(ledger.apply(&Command::RegisterWorkload { spec: unknown }, 1, 7), Response::Refused { .. }));
    }

    fn decision(round: RoundId, workload: &str, cpu: u64, payment: f64, lease: u64) -> Decision {
        Decision {
            round,
            host: samples::host(),
            term: 0,
            index: 0,
            decided_at_unix_ms: 1_000,
            lease_expires_unix_ms: lease,
            allocations: vec![Allocation {
                workload: WorkloadId::new(workload).unwrap(),
                alloc: ResourceVector::new(cpu, 0, 0, 0),
                bundle: Some("grow".into()),
                offer: None,
                value: payment * 2.0,
                payment,
            }],
            welfare: payment * 2.0,
            optimal: true,
            unenforced: vec![],
        }
    }

    #[test]
    fn a_round_is_decided_at_most_once_and_charges_payments() {
        let mut ledger = ledger_with_host();
        ledger.apply(&Command::RegisterWorkload { spec: spec("a", 1_000) }, 1, 2);
        let budget = samples::workload_spec().budget;
        let decide = |round, at| Command::DecideRound {
            round,
            decided_at_unix_ms: at,
            decisions: vec![decision(round, "a", 3_000, 10.0, at + 3_000)],
        };
        match ledger.apply(&decide(1, 1_000), 2, 10) {
            Response::Decided { decisions } => {
                assert_eq!((decisions[0].term, decisions[0].index), (2, 10));
            }
            other => panic!("{other:?}"),
        }
        let w = ledger.workload(&samples::host(), &WorkloadId::new("a").unwrap()).unwrap();
        assert_eq!(w.allocation.cpu, 3_000);
        assert_eq!(w.balance, budget - 10.0, "the refill is capped at the budget, then the payment is charged");
        assert_eq!(ledger.apply(&decide(1, 2_000), 2, 11), Response::AlreadyDecided { round: 1, last_round: 1 });
        assert_eq!(ledger.last_round, 1);
        // Skipping ahead is allowed (rounds lost in an election), going back is not.
        assert!(matches!(ledger.apply(&decide(5, 2_000), 3, 12), Response::Decided { .. }));
        assert!(matches!(ledger.apply(&decide(4, 2_000), 3, 13), Response::AlreadyDecided { .. }));
    }

    #[test]
    fn a_host_decided_early_settles_once_and_the_round_close_skips_it() {
        let mut ledger = ledger_with_host();
        let mut other = samples::host_registration();
        other.host = HostId::new("host-b").unwrap();
        ledger.apply(&Command::RegisterHost { registration: other }, 1, 2);
        ledger.apply(&Command::RegisterWorkload { spec: spec("a", 1_000) }, 1, 3);
        let mut on_b = spec("b", 1_000);
        on_b.host = HostId::new("host-b").unwrap();
        ledger.apply(&Command::RegisterWorkload { spec: on_b }, 1, 4);
        let id = WorkloadId::new("a").unwrap();
        let before = ledger.workload(&samples::host(), &id).unwrap().balance;

        // Early decisions are only for the open round.
        let early = |round| Command::DecideHosts {
            round,
            decided_at_unix_ms: 1_000,
            decisions: vec![decision(round, "a", 3_000, 10.0, 4_000)],
        };
        assert_eq!(ledger.apply(&early(2), 2, 5), Response::AlreadyDecided { round: 2, last_round: 0 });
        match ledger.apply(&early(1), 2, 6) {
            Response::Decided { decisions } => assert_eq!((decisions.len(), decisions[0].index), (1, 6)),
            other => panic!("{other:?}"),
        }
        assert_eq!(ledger.last_round, 0, "the round is still open");
        let after_early = ledger.workload(&samples::host(), &id).unwrap().clone();
        assert_eq!(after_early.allocation.cpu, 3_000);
        // A second early decision for the same host and round changes nothing.
        assert_eq!(ledger.apply(&early(1), 2, 7), Response::Decided { decisions: vec![] });
        assert_eq!(ledger.workload(&samples::host(), &id).unwrap(), &after_early);

        // The close settles host-b only; host-a's listed decision is dropped, its balance is
        // not refilled a second time.
        let close = Command::DecideRound {
            round: 1,
            decided_at_unix_ms: 1_500,
            decisions: vec![decision(1, "a", 5_000, 1.0, 4_500)],
        };
        match ledger.apply(&close, 2, 8) {
            Response::Decided { decisions } => assert!(decisions.is_empty(), "{decisions:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(ledger.last_round, 1);
        assert_eq!(ledger.workload(&samples::host(), &id).unwrap(), &after_early);
        let spec_a = &after_early.spec;
        assert!((after_early.balance - (spec_a.balance_after_refill(before) - 10.0)).abs() < 1e-9);
        let host_b = &ledger.hosts[&HostId::new("host-b").unwrap()];
        assert_eq!(host_b.settled_round, 1);
        // Early decisions for a closed round are refused.
        assert!(matches!(ledger.apply(&early(1), 2, 9), Response::AlreadyDecided { .. }));
    }

    #[test]
    fn expired_leases_return_to_the_guarantee_and_budgets_refill() {
        let mut ledger = ledger_with_host();
        ledger.apply(&Command::RegisterWorkload { spec: spec("a", 1_000) }, 1, 2);
        ledger.apply(
            &Command::DecideRound { round: 1, decided_at_unix_ms: 1_000, decisions: vec![decision(1, "a", 3_000, 500.0, 4_000)] },
            1,
            3,
        );
        let id = WorkloadId::new("a").unwrap();
        let w = ledger.workload(&samples::host(), &id).unwrap().clone();
        assert_eq!(w.allocation_at(3_999).cpu, 3_000);
        assert_eq!(w.allocation_at(4_000).cpu, 1_000);
        // A round that does not mention the workload, after its lease: back to the guarantee,
        // and the balance refills by budget * priority/100 * share.
        ledger.apply(&Command::DecideRound { round: 2, decided_at_unix_ms: 5_000, decisions: vec![] }, 1, 4);
        let after = ledger.workload(&samples::host(), &id).unwrap();
        assert_eq!(after.allocation.cpu, 1_000);
        assert_eq!(after.bundle, None);
        assert!((after.balance - (w.balance + w.spec.refill_per_round())).abs() < 1e-9);
    }

    #[test]
    fn quotas_are_set_and_removed() {
        let mut ledger = Ledger::default();
        let tenant = TenantId::new("shop").unwrap();
        let set = |limit| Command::SetQuota { tenant: tenant.clone(), resource: Resource::Cpu, limit };
        ledger.apply(&set(Some(4_000)), 1, 1);
        ledger.apply(&set(Some(6_000)), 1, 2);
        assert_eq!(ledger.quotas, vec![QuotaEntry { tenant: tenant.clone(), resource: Resource::Cpu, limit: 6_000 }]);
        ledger.apply(&set(None), 1, 3);
        assert!(ledger.quotas.is_empty());
    }

    #[test]
    fn the_ledger_survives_serialization() {
        let mut ledger = ledger_with_host();
        ledger.apply(&Command::RegisterWorkload { spec: spec("a", 1_000) }, 1, 2);
        let bytes = rmp_serde::to_vec_named(&ledger).unwrap();
        assert_eq!(rmp_serde::from_slice::<Ledger>(&bytes).unwrap(), ledger);
    }
}
