//! One round, from bids to decisions, as pure logic.
//!
//! The leader's round loop (the I/O around it) feeds received bids into a [`BidBook`], which
//! either accepts a bid as the workload's standing bid or returns the [`Rejection`] to send back.
//! At the deadline, [`BidBook::auctions`] turns the ledger and the standing bids into the
//! clearing engine's input, and [`decisions`] turns the engine's outcome into one [`Decision`]
//! per host. Nothing here reads a clock or the network, so every rule (late, foreign, over
//! budget, outside limits, standing for a few rounds) is tested directly.
//!
//! Early close: a host's auction closes as soon as every one of its workloads has bid for the
//! open round ([`BidBook::complete_hosts`]), unless one of them belongs to a tenant with a
//! cluster quota (quotas couple hosts, so those wait for the deadline and clear together). The
//! leader then clears and commits that host before the deadline, and later bids for it in the
//! same round are rejected as late: the sealed bids are final.
//!
//! Budgets: a bid offering more than the workload's whole budget can never be paid and is
//! rejected as over budget. A bid within the budget but above the current balance takes part
//! with its value capped at the balance (the clearing engine reports the cap), so a workload
//! whose balance dipped is still heard.

use crate::clearing::{self, HostAuction, HostOutcome, Quota, WorkloadBid};
use crate::ledger::Ledger;
use entente_protocol::{
    Allocation, Bid, Decision, HostId, Message, RejectReason, Rejection, Resource, RoundId, WorkloadId,
};
use std::collections::{BTreeMap, BTreeSet};

/// A bid that stands until the round `last_round` (inclusive) unless replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct StandingBid {
    pub bid: Bid,
    pub last_round: RoundId,
}

/// The open round's timing, as the leader announced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenRound {
    pub round: RoundId,
    pub deadline_unix_ms: u64,
}

/// Standing bids by host and workload, and the hosts whose auction closed early.
#[derive(Debug, Clone, Default)]
pub struct BidBook {
    standing: BTreeMap<(HostId, WorkloadId), StandingBid>,
    /// Hosts sealed in round `sealed_round`; any other round has none.
    sealed: BTreeSet<HostId>,
    sealed_round: RoundId,
}

impl BidBook {
    /// Checks a bid received on `subject_host`'s subject at `received_unix_ms` and, if it is
    /// acceptable, makes it the workload's standing bid (replacing any earlier one).
    pub fn accept(
        &mut self,
        ledger: &Ledger,
        subject_host: &HostId,
        bid: Bid,
        open: OpenRound,
        received_unix_ms: u64,
    ) -> Result<(), Rejection> {
        let reject = |reason: RejectReason, detail: String| Rejection {
            host: subject_host.clone(),
            workload: Some(bid.workload.clone()),
            round: Some(bid.round),
            bid_id: Some(bid.bid_id),
            reason,
            detail,
            at_unix_ms: received_unix_ms,
        };
        if let Err(e) = bid.validate() {
            return Err(reject(RejectReason::Malformed, e.to_string()));
        }
        if &bid.host != subject_host {
            return Err(reject(
                RejectReason::ForeignHost,
                format!("bid for host {} arrived on the subject of host {subject_host}", bid.host),
            ));
        }
        if bid.round > open.round {
            return Err(reject(RejectReason::UnknownRound, format!("round {} is not open (open: {})", bid.round, open.round)));
        }
        if bid.round < open.round || received_unix_ms > open.deadline_unix_ms {
            return Err(reject(
                RejectReason::Late,
                format!(
                    "bid for round {} arrived at {received_unix_ms}; round {} closed at {}",
                    bid.round, open.round, open.deadline_unix_ms
                ),
            ));
        }
        let Some(entry) = ledger.workload(&bid.host, &bid.workload) else {
            return Err(reject(RejectReason::UnknownWorkload, format!("{}/{} is not registered", bid.host, bid.workload)));
        };
        if self.is_sealed(&bid.host, open.round) {
            return Err(reject(
                RejectReason::Late,
                format!("host {}'s auction for round {} closed early: every workload had bid", bid.host, bid.round),
            ));
        }
        if let Err(e) = bid.check_against(&entry.spec) {
            return Err(reject(RejectReason::OutsideLimits, e.to_string()));
        }
        if let Some(b) = bid.bundles.iter().find(|b| b.value > entry.spec.budget) {
            return Err(reject(
                RejectReason::OverBudget,
                format!("bundle {} offers {} credits; the workload's budget is {}", b.id, b.value, entry.spec.budget),
            ));
        }
        let last_round = bid.round + RoundId::from(bid.standing_rounds) - 1;
        self.standing.insert((bid.host.clone(), bid.workload.clone()), StandingBid { bid, last_round });
        Ok(())
    }

    /// Whether `host`'s auction for `round` closed early.
    pub fn is_sealed(&self, host: &HostId, round: RoundId) -> bool {
        self.sealed_round == round && self.sealed.contains(host)
    }

    /// Seals the hosts among `candidates` whose auction for `round` can close now, and returns
    /// them: every registered workload has a bid made for this very round (a bid standing from
    /// an earlier round may still be replaced), and no workload's tenant has a cluster quota.
    pub fn complete_hosts(&mut self, ledger: &Ledger, candidates: &BTreeSet<HostId>, round: RoundId) -> Vec<HostId> {
        if self.sealed_round != round {
            self.sealed.clear();
            self.sealed_round = round;
        }
        let quota_tenants: BTreeSet<_> = ledger.quotas.iter().map(|q| &q.tenant).collect();
        let mut complete = Vec::new();
        for host_id in candidates {
            if self.sealed.contains(host_id) {
                continue;
            }
            let Some(host) = ledger.hosts.get(host_id) else { continue };
            let ready = !host.workloads.is_empty()
                && host.settled_round < round
                && host.workloads.iter().all(|(workload_id, w)| {
                    !quota_tenants.contains(&w.spec.tenant)
                        && self
                            .standing
                            .get(&(host_id.clone(), workload_id.clone()))
                            .is_some_and(|s| s.bid.round == round)
                });
            if ready {
                self.sealed.insert(host_id.clone());
                complete.push(host_id.clone());
            }
        }
        complete
    }

    /// A copy holding only the standing bids of `hosts`, for clearing them away from the book.
    pub fn subset(&self, hosts: &[HostId]) -> BidBook {
        let wanted: BTreeSet<&HostId> = hosts.iter().collect();
        BidBook {
            standing: self.standing.iter().filter(|((h, _), _)| wanted.contains(h)).map(|(k, v)| (k.clone(), v.clone())).collect(),
            sealed: BTreeSet::new(),
            sealed_round: 0,
        }
    }

    /// Drops bids that no longer stand at `round`, and bids of workloads the ledger forgot.
    pub fn prune(&mut self, ledger: &Ledger, round: RoundId) {
        self.standing.retain(|(h, w), s| s.last_round >= round && ledger.workload(h, w).is_some());
    }

    /// The standing bid of a workload at `round`.
    pub fn standing(&self, host: &HostId, workload: &WorkloadId, round: RoundId) -> Option<&Bid> {
        self.standing
            .get(&(host.clone(), workload.clone()))
            .filter(|s| s.bid.round <= round && s.last_round >= round)
            .map(|s| &s.bid)
    }

    /// Number of standing bids.
    pub fn len(&self) -> usize {
        self.standing.len()
    }

    pub fn is_empty(&self) -> bool {
        self.standing.is_empty()
    }

    /// The clearing engine's input for `round`: every registered host that `include` admits and
    /// that is not yet settled for the round, with every workload (bundles from its standing
    /// bid, if any; otherwise it keeps its guarantee), balances as they will be after this
    /// round's refill, and the cluster quotas.
    pub fn auctions(
        &self,
        ledger: &Ledger,
        round: RoundId,
        include: impl Fn(&HostId) -> bool,
    ) -> (Vec<HostAuction>, Vec<Quota>) {
        let hosts = ledger
            .hosts
            .iter()
            .filter(|(host_id, host)| host.settled_round < round && include(host_id))
            .map(|(host_id, host)| HostAuction {
                host: host_id.to_string(),
                capacity: host.registration.capacity,
                workloads: host
                    .workloads
                    .iter()
                    .map(|(workload_id, w)| WorkloadBid {
                        workload: workload_id.to_string(),
                        tenant: Some(w.spec.tenant.to_string()),
                        guaranteed: w.spec.guaranteed,
                        balance: Some(w.balance_for_next_round()),
                        bundles: self
                            .standing(host_id, workload_id, round)
                            .map(|bid| {
                                bid.bundles
                                    .iter()
                                    .map(|b| clearing::Bundle { id: b.id.clone(), alloc: b.alloc, value: b.value })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect();
        let quotas = ledger
            .quotas
            .iter()
            .map(|q| Quota { tenant: q.tenant.to_string(), resource: q.resource, limit: q.limit })
            .collect();
        (hosts, quotas)
    }
}

/// Turns one host's clearing outcome into its decision. Workloads that won nothing are listed
/// with their guarantee, so every workload's lease is renewed each round.
pub fn decision_for_host(
    ledger: &Ledger,
    book: &BidBook,
    round: RoundId,
    outcome: &HostOutcome,
    decided_at_unix_ms: u64,
    lease_ms: u64,
) -> Option<Decision> {
    let host_id = HostId::new(outcome.host.clone()).ok()?;
    let host = ledger.hosts.get(&host_id)?;
    let mut allocations = Vec::with_capacity(outcome.workloads.len());
    for w in &outcome.workloads {
        let workload = WorkloadId::new(w.workload.clone()).ok()?;
        let offer = w.bundle_id.as_ref().and_then(|id| {
            let bid = book.standing(&host_id, &workload, round)?;
            bid.bundles.iter().find(|b| &b.id == id).map(|b| b.offer.clone())
        });
        allocations.push(Allocation {
            workload,
            alloc: w.allocation,
            bundle: w.bundle_id.clone(),
            offer,
            value: w.value,
            // A payment may exceed the value by float rounding in the engine; never charge more.
            payment: w.payment.min(w.value).max(0.0),
        });
    }
    let enforced = &host.registration.enforces;
    let unenforced = Resource::ALL
        .into_iter()
        .filter(|r| !enforced.contains(r) && allocations.iter().any(|a| a.alloc.get(*r) > 0))
        .collect();
    Some(Decision {
        round,
        host: host_id,
        term: 0,
        index: 0,
        decided_at_unix_ms,
        lease_expires_unix_ms: decided_at_unix_ms + lease_ms,
        allocations,
        welfare: outcome.welfare.max(0.0),
        optimal: outcome.optimal,
        unenforced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clearing::{clear_round, ClearingOptions};
    use crate::ledger::Command;
    use entente_protocol::{samples, Bundle, ForecastSource, Offer, ResourceVector};

    fn ledger() -> Ledger {
        let mut ledger = Ledger::default();
        ledger.apply(&Command::RegisterHost { registration: samples::host_registration() }, 1, 1);
        ledger.apply(&Command::RegisterWorkload { spec: samples::workload_spec() }, 1, 2);
        let mut batch = samples::workload_spec();
        batch.workload = WorkloadId::new("batch").unwrap();
        batch.priority = 10;
        ledger.apply(&Command::RegisterWorkload { spec: batch }, 1, 3);
        ledger
    }

    const OPEN: OpenRound = OpenRound { round: 42, deadline_unix_ms: 10_000 };

    #[test]
    fn accepts_a_good_bid_and_it_stands_for_its_rounds() {
        let ledger = ledger();
        let mut book = BidBook::default();
        book.accept(&ledger, &samples::host(), samples::bid(), OPEN, 9_000).unwrap();
        let (h, w) = (samples::host(), samples::workload());
        assert!(book.standing(&h, &w, 42).is_some());
        assert!(book.standing(&h, &w, 44).is_some(), "standing_rounds = 3");
        assert!(book.standing(&h, &w, 45).is_none());
        book.prune(&ledger, 45);
        assert!(book.is_empty());
    }

    #[test]
    fn rejects_with_the_right_reason() {
        let ledger = ledger();
        let mut book = BidBook::default();
        let reason = |book: &mut BidBook, subject: &str, bid: Bid, at: u64| {
            book.accept(&ledger, &HostId::new(subject).unwrap(), bid, OPEN, at).unwrap_err().reason
        };
        assert_eq!(reason(&mut book, "host-b", samples::bid(), 9_000), RejectReason::ForeignHost);
        assert_eq!(reason(&mut book, "host-a", samples::bid(), 10_001), RejectReason::Late);
        let mut old = samples::bid();
        old.round = 41;
        assert_eq!(reason(&mut book, "host-a", old, 9_000), RejectReason::Late);
        let mut future = samples::bid();
        future.round = 43;
        assert_eq!(reason(&mut book, "host-a", future, 9_000), RejectReason::UnknownRound);
        let mut stranger = samples::bid();
        stranger.workload = WorkloadId::new("ghost").unwrap();
        assert_eq!(reason(&mut book, "host-a", stranger, 9_000), RejectReason::UnknownWorkload);
        let mut greedy = samples::bid();
        greedy.bundles[1].alloc.cpu = 100_000;
        assert_eq!(reason(&mut book, "host-a", greedy, 9_000), RejectReason::OutsideLimits);
        let mut rich = samples::bid();
        rich.bundles[1].value = 1e6;
        assert_eq!(reason(&mut book, "host-a", rich, 9_000), RejectReason::OverBudget);
        let mut nan = samples::bid();
        nan.bundles[1].value = f64::NAN;
        assert_eq!(reason(&mut book, "host-a", nan, 9_000), RejectReason::Malformed);
        assert!(book.is_empty(), "nothing rejected was kept");
    }

    fn batch_bid(round: RoundId) -> Bid {
        Bid {
            bid_id: uuid::Uuid::from_u128(9),
            round,
            workload: WorkloadId::new("batch").unwrap(),
            bundles: vec![Bundle {
                id: "all".into(),
                alloc: ResourceVector::new(4_000, 1 << 30, 10 << 20, 10 << 20),
                value: 5.0,
                offer: Offer::Delay { delay_ms: 1_000 },
            }],
            forecast: ForecastSource::Fallback,
            ..samples::bid()
        }
    }

    #[test]
    fn a_host_closes_early_once_every_workload_bid_for_the_round() {
        let ledger = ledger();
        let mut book = BidBook::default();
        let host = samples::host();
        let candidates = BTreeSet::from([host.clone()]);
        book.accept(&ledger, &host, samples::bid(), OPEN, 9_000).unwrap();
        assert!(book.complete_hosts(&ledger, &candidates, 42).is_empty(), "batch has not bid yet");
        // A bid standing from an earlier round does not count: it may still be replaced.
        book.accept(&ledger, &host, batch_bid(41), OpenRound { round: 41, deadline_unix_ms: 10_000 }, 9_000).unwrap();
        assert!(book.complete_hosts(&ledger, &candidates, 42).is_empty());
        book.accept(&ledger, &host, batch_bid(42), OPEN, 9_100).unwrap();
        assert_eq!(book.complete_hosts(&ledger, &candidates, 42), vec![host.clone()]);
        assert!(book.is_sealed(&host, 42));
        assert!(book.complete_hosts(&ledger, &candidates, 42).is_empty(), "sealed once");
        let late = book.accept(&ledger, &host, samples::bid(), OPEN, 9_200).unwrap_err();
        assert_eq!(late.reason, RejectReason::Late);
        assert!(late.detail.contains("closed early"), "{}", late.detail);
        let mut stranger = samples::bid();
        stranger.workload = WorkloadId::new("ghost").unwrap();
        let unknown = book.accept(&ledger, &host, stranger, OPEN, 9_200).unwrap_err();
        assert_eq!(unknown.reason, RejectReason::UnknownWorkload, "a sealed host still names unknown workloads");
        // The next round starts unsealed.
        assert!(!book.is_sealed(&host, 43));
    }

    #[test]
    fn hosts_with_quota_tenants_wait_for_the_deadline() {
        let mut ledger = ledger();
        let tenant = samples::workload_spec().tenant;
        ledger.apply(&Command::SetQuota { tenant, resource: Resource::Cpu, limit: Some(1_000_000) }, 1, 9);
        let mut book = BidBook::default();
        let host = samples::host();
        book.accept(&ledger, &host, samples::bid(), OPEN, 9_000).unwrap();
        book.accept(&ledger, &host, batch_bid(42), OPEN, 9_100).unwrap();
        assert!(book.complete_hosts(&ledger, &BTreeSet::from([host]), 42).is_empty());
    }

    #[test]
    fn a_round_clears_into_decisions_that_fit_and_name_unenforced_resources() {
        let ledger = ledger();
        let mut book = BidBook::default();
        book.accept(&ledger, &samples::host(), samples::bid(), OPEN, 9_000).unwrap();
        book.accept(&ledger, &samples::host(), batch_bid(42), OPEN, 9_500).unwrap();
        let (hosts, quotas) = book.auctions(&ledger, 42, |_| true);
        let outcomes = clear_round(&hosts, &quotas, &ClearingOptions::default());
        let outcome = outcomes[0].as_ref().unwrap();
        let d = decision_for_host(&ledger, &book, 42, outcome, 10_050, 3_000).unwrap();
        assert_eq!(d.lease_expires_unix_ms, 13_050);
        assert_eq!(d.allocations.len(), 2);
        let total = ResourceVector::checked_sum(d.allocations.iter().map(|a| &a.alloc)).unwrap();
        assert!(total.fits_within(&samples::host_registration().capacity));
        // 8000 millicores: redis's "grow" (2500) and batch's 4000 both fit, so both win.
        let redis = d.allocation(&samples::workload()).unwrap();
        assert!(redis.bundle.is_some());
        assert!(redis.payment <= redis.value);
        // The sample host enforces cpu, memory and disk_bw, not net_bw.
        assert_eq!(d.unenforced, vec![Resource::NetBw]);
        d.validate().unwrap();
    }
}
