//! The leader's duties: run rounds, admit hosts and workloads, change membership.
//!
//! Only the Raft leader does any of this, so only the leader subscribes to the subjects that
//! carry bids, registrations and membership changes; a replica that loses leadership drops those
//! subscriptions and requests go unanswered (agents retry) until the next leader takes over.
//!
//! A round: announce round `r` (one past the last decided) with a deadline; until the deadline,
//! check each bid with the [`BidBook`] and answer rejections on the host's rejection subject;
//! at the deadline clear every host with the clearing engine, propose the decisions to Raft as
//! one command, and once committed publish each host's decision on the JetStream stream with
//! message id `r/host`. The ledger refuses a second decision for any round, so a round is decided
//! at most once however leadership moves; a new leader continues at the round after the last
//! decided one, and first re-publishes the last decisions in case its predecessor committed them
//! but died before publishing (the stream drops the duplicates).

use crate::clearing::{self, ClearingOptions};
use crate::ledger::{Command, Ledger, Response};
use crate::metrics as m;
use crate::raft::{NodeId, RaftNode};
use crate::rounds::{decision_for_host, BidBook, OpenRound};
use entente_protocol::bus::{Bus, BusError, DecisionsStreamConfig, Received};
use entente_protocol::{
    Bid, HostRegistration, MembershipChange, MembershipReply, QuotaChange, RegistrationReply, RejectReason, Rejection,
    RoundAnnouncement, RoundId, Subject, WorkloadSpec,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How rounds are paced.
#[derive(Debug, Clone)]
pub struct RoundSettings {
    /// One round every `interval`.
    pub interval: Duration,
    /// How long after the announcement bids are taken.
    pub bid_window: Duration,
    /// How long a decision holds without renewal.
    pub lease: Duration,
    /// How long clearing a whole round may take (shared among all its solves).
    pub clearing_time_limit: Duration,
    pub stream: DecisionsStreamConfig,
}

impl RoundSettings {
    /// Defaults for a round `interval`: bids for 60% of it, clearing for about 20%, and leases
    /// of three rounds so one lost round does not throw workloads back to their guarantees.
    pub fn for_interval(interval: Duration) -> RoundSettings {
        RoundSettings {
            interval,
            bid_window: interval.mul_f64(0.6),
            lease: interval * 3,
            clearing_time_limit: interval.mul_f64(0.2),
            stream: DecisionsStreamConfig::default(),
        }
    }
}

/// What one round did, for the log line that closes it.
#[derive(Debug, Default)]
struct RoundStats {
    bids_accepted: u32,
    rejected: BTreeMap<&'static str, u32>,
}

fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Runs the leader's duties whenever this replica leads, until `shutdown` turns true.
pub async fn run(node: Arc<RaftNode<Ledger>>, bus: Bus, settings: RoundSettings, mut shutdown: watch::Receiver<bool>) {
    let mut metrics = node.raft().metrics();
    loop {
        loop {
            if *shutdown.borrow() {
                return;
            }
            metrics::gauge!(m::TERM).set(metrics.borrow().current_term as f64);
            if metrics.borrow().current_leader == Some(node.id()) {
                break;
            }
            tokio::select! {
                r = metrics.changed() => if r.is_err() { return },
                _ = shutdown.changed() => {}
            }
        }
        let term = metrics.borrow().current_term;
        tracing::info!(node = node.id(), term, "leading");
        metrics::gauge!(m::IS_LEADER).set(1.0);
        let mut term_duties = Leadership { node: &node, bus: &bus, settings: &settings, book: BidBook::default() };
        if let Err(e) = term_duties.lead(&mut metrics, &mut shutdown).await {
            tracing::error!(error = %e, "leader duties failed; retrying");
            tokio::time::sleep(settings.interval).await;
        }
        metrics::gauge!(m::IS_LEADER).set(0.0);
        tracing::info!(node = node.id(), term, "no longer leading");
    }
}

struct Leadership<'a> {
    node: &'a RaftNode<Ledger>,
    bus: &'a Bus,
    settings: &'a RoundSettings,
    book: BidBook,
}

/// What woke the leader while it served requests.
enum Wake {
    Timer,
    Stop,
}

impl Leadership<'_> {
    fn still_leading(&self, metrics: &watch::Receiver<openraft::RaftMetrics<NodeId, openraft::BasicNode>>) -> bool {
        metrics.borrow().current_leader == Some(self.node.id())
    }

    async fn lead(
        &mut self,
        metrics: &mut watch::Receiver<openraft::RaftMetrics<NodeId, openraft::BasicNode>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), BusError> {
        // A replica restarted from disk may briefly believe in its old term's leadership; a
        // quorum round-trip proves it really leads before it announces anything.
        if let Err(e) = self.node.raft().ensure_linearizable().await {
            tracing::info!(error = %e, "leadership not confirmed by a quorum; standing by");
            tokio::time::sleep(self.settings.interval / 4).await;
            return Ok(());
        }
        let s = self.bus.subjects().clone();
        let mut bids = self.bus.subscribe::<Bid>(s.bids_all()).await?;
        let mut hosts = self.bus.subscribe::<HostRegistration>(s.register_host()).await?;
        let mut specs = self.bus.subscribe::<WorkloadSpec>(s.register_workload()).await?;
        let mut members = self.bus.subscribe::<MembershipChange>(s.members()).await?;
        let mut quotas = self.bus.subscribe::<QuotaChange>(s.quotas()).await?;
        self.bus.ensure_decisions_stream(&self.settings.stream).await?;
        self.republish_last_decisions().await;

        let mut next_round_at = Instant::now();
        let mut open = OpenRound { round: 0, deadline_unix_ms: 0 };
        let mut stats = RoundStats::default();
        loop {
            // Idle until the next round starts, still serving registrations and late bids.
            let wake = self
                .serve_until(next_round_at, open, &mut stats, &mut bids, &mut hosts, &mut specs, &mut members, &mut quotas, metrics, shutdown)
                .await;
            if matches!(wake, Wake::Stop) || !self.still_leading(metrics) {
                return Ok(());
            }
            let term = metrics.borrow().current_term;
            let round = self.node.read_state(|l| l.last_round) + 1;
            let announced = now_unix_ms();
            let window = self.settings.bid_window;
            open = OpenRound { round, deadline_unix_ms: announced + window.as_millis() as u64 };
            let announcement = RoundAnnouncement {
                round,
                announced_at_unix_ms: announced,
                deadline_unix_ms: open.deadline_unix_ms,
                interval_ms: self.settings.interval.as_millis().clamp(1, u128::from(u32::MAX)) as u32,
                leader: self.node.id(),
                term,
            };
            self.bus.announce_round(&announcement).await?;
            next_round_at += self.settings.interval;
            let wake = self
                .serve_until(Instant::now() + window, open, &mut stats, &mut bids, &mut hosts, &mut specs, &mut members, &mut quotas, metrics, shutdown)
                .await;
            if matches!(wake, Wake::Stop) || !self.still_leading(metrics) {
                return Ok(());
            }
            self.decide(round, &stats).await;
            stats = RoundStats::default();
            if next_round_at < Instant::now() {
                // Clearing overran the interval: start the next round now rather than bunching up.
                next_round_at = Instant::now();
            }
        }
    }

    /// Serves bids, registrations and membership requests until `until`.
    #[allow(clippy::too_many_arguments)]
    async fn serve_until(
        &mut self,
        until: Instant,
        open: OpenRound,
        stats: &mut RoundStats,
        bids: &mut entente_protocol::bus::Inbox<Bid>,
        hosts: &mut entente_protocol::bus::Inbox<HostRegistration>,
        specs: &mut entente_protocol::bus::Inbox<WorkloadSpec>,
        members: &mut entente_protocol::bus::Inbox<MembershipChange>,
        quotas: &mut entente_protocol::bus::Inbox<QuotaChange>,
        metrics: &mut watch::Receiver<openraft::RaftMetrics<NodeId, openraft::BasicNode>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Wake {
        let timer = tokio::time::sleep_until(until.into());
        tokio::pin!(timer);
        loop {
            tokio::select! {
                _ = &mut timer => return Wake::Timer,
                _ = shutdown.changed() => return Wake::Stop,
                changed = metrics.changed() => {
                    if changed.is_err() || !self.still_leading(metrics) {
                        return Wake::Stop;
                    }
                }
                Some(received) = bids.next() => self.on_bid(received, open, stats).await,
                Some(received) = hosts.next() => {
                    let reply = match received.message {
                        Ok(registration) => self.admit(Command::RegisterHost { registration }).await,
                        Err(e) => RegistrationReply::Refused { reason: e.to_string() },
                    };
                    count_registration("host", &reply);
                    self.answer(received.reply, &reply).await;
                }
                Some(received) = specs.next() => {
                    let reply = match received.message {
                        Ok(spec) => self.admit(Command::RegisterWorkload { spec }).await,
                        Err(e) => RegistrationReply::Refused { reason: e.to_string() },
                    };
                    count_registration("workload", &reply);
                    self.answer(received.reply, &reply).await;
                }
                Some(received) = quotas.next() => {
                    let reply = match received.message {
                        Ok(q) => self.admit(Command::SetQuota { tenant: q.tenant, resource: q.resource, limit: q.limit }).await,
                        Err(e) => RegistrationReply::Refused { reason: e.to_string() },
                    };
                    count_registration("quota", &reply);
                    self.answer(received.reply, &reply).await;
                }
                Some(received) = members.next() => {
                    let reply = match received.message {
                        Ok(change) => self.change_membership(&change).await,
                        Err(e) => MembershipReply::Refused { reason: e.to_string() },
                    };
                    self.answer(received.reply, &reply).await;
                }
            }
        }
    }

    async fn answer<M: entente_protocol::Message>(&self, reply_to: Option<async_nats::Subject>, message: &M) {
        match reply_to {
            Some(to) => {
                if let Err(e) = self.bus.reply(to, message).await {
                    tracing::warn!(error = %e, "cannot answer a request");
                }
            }
            None => tracing::warn!(kind = M::KIND, "request without a reply subject"),
        }
    }

    async fn on_bid(&mut self, received: Received<Bid>, open: OpenRound, stats: &mut RoundStats) {
        let subject_host = match self.bus.subjects().parse(&received.subject) {
            Ok(Subject::Bids { host }) => host,
            _ => {
                tracing::warn!(subject = %received.subject, "bid on an unexpected subject");
                return;
            }
        };
        let now = now_unix_ms();
        let verdict = match received.message {
            Ok(bid) => self.node.read_state(|ledger| self.book.accept(ledger, &subject_host, bid, open, now)),
            Err(e) => Err(Rejection {
                host: subject_host.clone(),
                workload: None,
                round: None,
                bid_id: None,
                reason: RejectReason::Malformed,
                detail: e.to_string(),
                at_unix_ms: now,
            }),
        };
        match verdict {
            Ok(()) => {
                stats.bids_accepted += 1;
                metrics::counter!(m::BIDS_ACCEPTED).increment(1);
            }
            Err(rejection) => {
                *stats.rejected.entry(rejection.reason.as_str()).or_default() += 1;
                metrics::counter!(m::BIDS_REJECTED, "reason" => rejection.reason.as_str()).increment(1);
                tracing::debug!(host = %rejection.host, reason = ?rejection.reason, detail = %rejection.detail, "bid rejected");
                if let Err(e) = self.bus.publish_rejection(&rejection).await {
                    tracing::warn!(error = %e, "cannot publish a rejection notice");
                }
            }
        }
    }

    /// Proposes a registration and turns the ledger's verdict into the agent's answer.
    async fn admit(&self, command: Command) -> RegistrationReply {
        match self.node.write(command).await {
            Ok(Response::Accepted) => RegistrationReply::Accepted,
            Ok(Response::Refused { reason }) => RegistrationReply::Refused { reason },
            Ok(other) => RegistrationReply::Refused { reason: format!("unexpected ledger answer {other:?}") },
            Err(e) => RegistrationReply::Refused { reason: format!("not committed: {e}") },
        }
    }

    /// Clears round `round` and, once Raft committed it, publishes its decisions.
    async fn decide(&mut self, round: RoundId, stats: &RoundStats) {
        let started = Instant::now();
        let (auctions, quotas) = self.node.read_state(|ledger| {
            self.book.prune(ledger, round);
            self.book.auctions(ledger, round)
        });
        let options = ClearingOptions {
            time_limit: Some(per_solve_time_limit(self.settings.clearing_time_limit, &auctions)),
            payments: true,
        };
        let outcomes = match tokio::task::spawn_blocking(move || {
            let outcomes = clearing::clear_round(&auctions, &quotas, &options);
            (auctions, outcomes)
        })
        .await
        {
            Ok((_, outcomes)) => outcomes,
            Err(e) => {
                tracing::error!(round, error = %e, "clearing panicked; round skipped");
                metrics::counter!(m::ROUNDS_SKIPPED, "reason" => "clearing_failed").increment(1);
                return;
            }
        };
        let clearing = started.elapsed();
        metrics::histogram!(m::CLEARING_DURATION).record(clearing);
        let clearing_ms = clearing.as_secs_f64() * 1e3;
        let not_optimal = outcomes.iter().filter(|o| matches!(o, Ok(o) if !o.optimal)).count();
        metrics::counter!(m::HOSTS_NOT_OPTIMAL).increment(not_optimal as u64);
        let decided_at = now_unix_ms();
        let lease_ms = self.settings.lease.as_millis() as u64;
        let decisions: Vec<_> = self.node.read_state(|ledger| {
            outcomes
                .iter()
                .filter_map(|outcome| match outcome {
                    Ok(o) => decision_for_host(ledger, &self.book, round, o, decided_at, lease_ms),
                    Err(e) => {
                        tracing::error!(round, error = %e, "host not cleared");
                        None
                    }
                })
                .collect()
        });
        let command = Command::DecideRound { round, decided_at_unix_ms: decided_at, decisions };
        match self.node.write(command).await {
            Ok(Response::Decided { decisions }) => {
                let published = futures::future::join_all(decisions.iter().map(|d| self.bus.publish_decision(d))).await;
                let failed = published.iter().filter(|p| p.is_err()).count();
                metrics::counter!(m::ROUNDS_DECIDED).increment(1);
                metrics::counter!(m::DECISIONS_PUBLISHED).increment((published.len() - failed) as u64);
                metrics::counter!(m::DECISION_PUBLISH_ERRORS).increment(failed as u64);
                metrics::histogram!(m::DECISION_LATENCY).record(started.elapsed());
                for e in published.iter().filter_map(|p| p.as_ref().err()) {
                    tracing::warn!(round, error = %e, "cannot publish a decision");
                }
                tracing::info!(
                    round,
                    hosts = decisions.len(),
                    bids = stats.bids_accepted,
                    rejected = ?stats.rejected,
                    clearing_ms,
                    decision_ms = started.elapsed().as_secs_f64() * 1e3,
                    failed,
                    "round decided"
                );
            }
            Ok(Response::AlreadyDecided { last_round, .. }) => {
                tracing::warn!(round, last_round, "round was already decided; skipping");
                metrics::counter!(m::ROUNDS_SKIPPED, "reason" => "already_decided").increment(1);
            }
            Ok(other) => {
                tracing::error!(round, ?other, "unexpected ledger answer to a round");
                metrics::counter!(m::ROUNDS_SKIPPED, "reason" => "not_committed").increment(1);
            }
            Err(e) if e.is_not_leader() => {
                tracing::info!(round, "lost leadership before the round committed");
                metrics::counter!(m::ROUNDS_SKIPPED, "reason" => "lost_leadership").increment(1);
            }
            Err(e) => {
                tracing::error!(round, error = %e, "round not committed; skipped");
                metrics::counter!(m::ROUNDS_SKIPPED, "reason" => "not_committed").increment(1);
            }
        }
    }

    /// Re-publishes every host's last committed decision: harmless if already published (the
    /// stream deduplicates by `round/host`), essential if the previous leader died in between.
    async fn republish_last_decisions(&self) {
        let last: Vec<_> = self.node.read_state(|l| l.hosts.values().filter_map(|h| h.last_decision.clone()).collect());
        let mut fresh = 0;
        for d in &last {
            match self.bus.publish_decision(d).await {
                Ok(ack) if !ack.duplicate => fresh += 1,
                Ok(_) => {}
                Err(e) => tracing::warn!(round = d.round, host = %d.host, error = %e, "cannot re-publish a decision"),
            }
        }
        if fresh > 0 {
            tracing::warn!(fresh, "published decisions the previous leader had committed but not published");
        }
    }

    /// Adds replicas as learners, waits for them to catch up, then makes the new voter set.
    async fn change_membership(&self, change: &MembershipChange) -> MembershipReply {
        let raft = self.node.raft();
        let current: BTreeSet<NodeId> =
            raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        for &id in &change.add {
            let node = crate::raft::member_node(self.bus.subjects(), id);
            if let Err(e) = raft.add_learner(id, node, true).await {
                return MembershipReply::Refused { reason: format!("cannot add node {id}: {e}") };
            }
        }
        let voters: BTreeSet<NodeId> =
            current.iter().chain(&change.add).copied().filter(|n| !change.remove.contains(n)).collect();
        if voters.is_empty() {
            return MembershipReply::Refused { reason: "the change would leave no voter".into() };
        }
        match raft.change_membership(voters.clone(), false).await {
            Ok(_) => MembershipReply::Changed { members: voters.into_iter().collect() },
            Err(e) => MembershipReply::Refused { reason: format!("membership change failed: {e}") },
        }
    }
}

/// The time limit of each solve, so that a whole round's clearing fits `budget`: one solve per
/// host for the allocation and up to one per workload for its VCG payment, spread over the
/// clearing threads. The search finds a first allocation in its first dive, so even a very short
/// limit yields a feasible, if unproven, answer; the decision then says it is not optimal.
pub fn per_solve_time_limit(budget: Duration, auctions: &[clearing::HostAuction]) -> Duration {
    let solves: usize = auctions.iter().map(|h| 1 + h.workloads.iter().filter(|w| !w.bundles.is_empty()).count()).sum();
    let threads = rayon::current_num_threads().max(1);
    let share = budget.mul_f64(threads as f64 / solves.max(1) as f64);
    share.clamp(Duration::from_micros(20), budget)
}

fn count_registration(kind: &'static str, reply: &RegistrationReply) {
    let outcome = match reply {
        RegistrationReply::Accepted => "accepted",
        RegistrationReply::Refused { .. } => "refused",
    };
    metrics::counter!(m::REGISTRATIONS, "kind" => kind, "outcome" => outcome).increment(1);
}
