//! The leader's duties: run rounds, admit hosts and workloads, change membership.
//!
//! Only the Raft leader does any of this, so only the leader subscribes to the subjects that
//! carry bids, registrations and membership changes; a replica that loses leadership drops those
//! subscriptions and requests go unanswered (agents retry) until the next leader takes over.
//!
//! A round: announce round `r` (one past the last decided) with a deadline; until the deadline,
//! check each bid with the [`BidBook`] and answer rejections on the host's rejection subject.
//! A host whose every workload has bid closes early: it is cleared, committed (`DecideHosts`)
//! and published in the background while other bids still arrive, in batches so that a burst of
//! bids makes a few Raft entries, not one per host. At the deadline the leader waits for those,
//! clears every host not yet settled, proposes them to Raft as the command that closes the round
//! (`DecideRound`), and once committed publishes each host's decision on the JetStream stream
//! with message id `r/host`. The ledger refuses a second decision for any host and round, so a
//! round is decided at most once however leadership moves; a new leader continues at the round
//! after the last closed one, and first re-publishes the last decisions in case its predecessor
//! committed them but died before publishing (the stream drops the duplicates).

use crate::clearing::{self, ClearingOptions};
use crate::ledger::{Command, Ledger, Response};
use crate::metrics as m;
use crate::raft::{NodeId, RaftNode};
use crate::rounds::{decision_for_host, BidBook, OpenRound};
use entente_protocol::bus::{Bus, BusError, DecisionsStreamConfig, Received};
use entente_protocol::{
    Bid, HostId, HostRegistration, MembershipChange, MembershipReply, QuotaChange, RegistrationReply, RejectReason,
    Rejection, RoundAnnouncement, RoundId, Subject, WorkloadSpec,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use entente_protocol::clock::unix_ms_now;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Hosts that closed early are cleared and committed together once this many are waiting...
const EARLY_BATCH_HOSTS: usize = 64;
/// ...or once the first of them has waited this long.
const EARLY_BATCH_WAIT: Duration = Duration::from_millis(3);

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
        let mut term_duties = Leadership {
            node: &node,
            bus: &bus,
            settings: &settings,
            book: BidBook::default(),
            closed_early: Vec::new(),
            closed_early_since: None,
            early: JoinSet::new(),
        };
        if let Err(e) = term_duties.lead(&mut metrics, &mut shutdown).await {
            tracing::error!(error = %e, "leader duties failed; retrying");
            tokio::time::sleep(settings.interval).await;
        }
        metrics::gauge!(m::IS_LEADER).set(0.0);
        tracing::info!(node = node.id(), term, "no longer leading");
    }
}

struct Leadership<'a> {
    node: &'a Arc<RaftNode<Ledger>>,
    bus: &'a Bus,
    settings: &'a RoundSettings,
    book: BidBook,
    /// Hosts of the open round sealed by the book and waiting to be cleared as one batch.
    closed_early: Vec<HostId>,
    closed_early_since: Option<Instant>,
    /// Early batches being cleared and committed; all are awaited before the round closes.
    early: JoinSet<Option<Settled>>,
}

/// What woke the leader while it served requests.
enum Wake {
    Timer,
    Stop,
}

/// Which hosts one clearing settles, and so which command commits it.
enum Settlement {
    /// Hosts whose auction closed early: `DecideHosts`, the round stays open.
    Early(BTreeSet<HostId>),
    /// Every host not yet settled: `DecideRound`, which closes the round.
    Close,
}

/// What one clearing settled, for the log.
struct Settled {
    hosts: usize,
    clearing_ms: f64,
    failed_publications: usize,
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
            let announced = unix_ms_now();
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
            self.close_round(round, &stats).await;
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
            let batch_due = self.closed_early_since.map(|since| since + EARLY_BATCH_WAIT);
            tokio::select! {
                _ = &mut timer => return Wake::Timer,
                _ = sleep_until_some(batch_due) => self.settle_closed_early(open.round),
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
                        Err(e) => Some(RegistrationReply::Refused { reason: e.to_string() }),
                    };
                    self.answer_registration("host", received.reply, reply).await;
                }
                Some(received) = specs.next() => {
                    let reply = match received.message {
                        Ok(spec) => self.admit(Command::RegisterWorkload { spec }).await,
                        Err(e) => Some(RegistrationReply::Refused { reason: e.to_string() }),
                    };
                    self.answer_registration("workload", received.reply, reply).await;
                }
                Some(received) = quotas.next() => {
                    let reply = match received.message {
                        Ok(q) => self.admit(Command::SetQuota { tenant: q.tenant, resource: q.resource, limit: q.limit }).await,
                        Err(e) => Some(RegistrationReply::Refused { reason: e.to_string() }),
                    };
                    self.answer_registration("quota", received.reply, reply).await;
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
        let now = unix_ms_now();
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
                let complete = self.node.read_state(|ledger| {
                    self.book.complete_hosts(ledger, &BTreeSet::from([subject_host.clone()]), open.round)
                });
                if !complete.is_empty() {
                    self.closed_early.extend(complete);
                    self.closed_early_since.get_or_insert_with(Instant::now);
                    if self.closed_early.len() >= EARLY_BATCH_HOSTS {
                        self.settle_closed_early(open.round);
                    }
                }
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

    /// Proposes a registration and turns the ledger's verdict into the agent's answer; `None`
    /// when it was not committed (this replica lost its leadership on the way, say). That is no
    /// verdict: a refusal would be final for the agent (a refused host stops its agent), while
    /// a registration can safely be sent again, so the requester is left to time out and retry.
    async fn admit(&self, command: Command) -> Option<RegistrationReply> {
        match self.node.write(command).await {
            Ok(Response::Accepted) => Some(RegistrationReply::Accepted),
            Ok(Response::Refused { reason }) => Some(RegistrationReply::Refused { reason }),
            Ok(other) => Some(RegistrationReply::Refused { reason: format!("unexpected ledger answer {other:?}") }),
            Err(e) => {
                tracing::warn!(error = %e, "registration not committed; not answering, so that it is sent again");
                None
            }
        }
    }

    /// Answers and counts a registration that has a verdict; one without is left unanswered.
    async fn answer_registration(
        &self,
        kind: &'static str,
        reply_to: Option<async_nats::Subject>,
        reply: Option<RegistrationReply>,
    ) {
        if let Some(reply) = reply {
            count_registration(kind, &reply);
            self.answer(reply_to, &reply).await;
        }
    }

    /// Starts clearing the hosts that closed early, in the background.
    fn settle_closed_early(&mut self, round: RoundId) {
        self.closed_early_since = None;
        if self.closed_early.is_empty() {
            return;
        }
        let hosts: Vec<HostId> = std::mem::take(&mut self.closed_early);
        let book = self.book.subset(&hosts);
        let (node, bus, settings) = (Arc::clone(self.node), self.bus.clone(), self.settings.clone());
        let settlement = Settlement::Early(hosts.into_iter().collect());
        self.early.spawn(async move { settle(&node, &bus, &settings, &book, round, settlement).await });
    }

    /// Closes round `round`: waits for the early batches, then clears every host not yet
    /// settled and commits them with the command that closes the round.
    async fn close_round(&mut self, round: RoundId, stats: &RoundStats) {
        let started = Instant::now();
        self.settle_closed_early(round);
        let (mut early_hosts, mut early_failed) = (0, 0);
        while let Some(joined) = self.early.join_next().await {
            match joined {
                Ok(Some(settled)) => {
                    early_hosts += settled.hosts;
                    early_failed += settled.failed_publications;
                }
                Ok(None) => {}
                Err(e) => tracing::error!(round, error = %e, "an early clearing task failed; its hosts close with the round"),
            }
        }
        self.node.read_state(|ledger| self.book.prune(ledger, round));
        let Some(settled) = settle(self.node, self.bus, self.settings, &self.book, round, Settlement::Close).await else {
            return;
        };
        metrics::counter!(m::ROUNDS_DECIDED).increment(1);
        metrics::histogram!(m::DECISION_LATENCY).record(started.elapsed());
        tracing::info!(
            round,
            hosts = settled.hosts + early_hosts,
            closed_early = early_hosts,
            bids = stats.bids_accepted,
            rejected = ?stats.rejected,
            clearing_ms = settled.clearing_ms,
            close_ms = started.elapsed().as_secs_f64() * 1e3,
            failed_publications = settled.failed_publications + early_failed,
            "round decided"
        );
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

/// Clears the hosts `settlement` names, commits their decisions through Raft and publishes
/// them. Returns `None` when nothing was committed (the reason is logged).
async fn settle(
    node: &RaftNode<Ledger>,
    bus: &Bus,
    settings: &RoundSettings,
    book: &BidBook,
    round: RoundId,
    settlement: Settlement,
) -> Option<Settled> {
    let started = Instant::now();
    // A failure of an early batch is not a skipped round: its hosts close with the round.
    let closing = matches!(settlement, Settlement::Close);
    let skipped = |reason: &'static str| {
        if closing {
            metrics::counter!(m::ROUNDS_SKIPPED, "reason" => reason).increment(1);
        }
    };
    let (auctions, quotas) = node.read_state(|ledger| match &settlement {
        Settlement::Early(hosts) => book.auctions(ledger, round, |h| hosts.contains(h)),
        Settlement::Close => book.auctions(ledger, round, |_| true),
    });
    if auctions.is_empty() && matches!(settlement, Settlement::Early(_)) {
        return None;
    }
    let options = ClearingOptions {
        time_limit: Some(per_solve_time_limit(settings.clearing_time_limit, &auctions)),
        payments: true,
    };
    let outcomes = match tokio::task::spawn_blocking(move || clearing::clear_round(&auctions, &quotas, &options)).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::error!(round, error = %e, "clearing panicked; hosts not settled");
            skipped("clearing_failed");
            return None;
        }
    };
    let clearing = started.elapsed();
    metrics::histogram!(m::CLEARING_DURATION).record(clearing);
    let clearing_ms = clearing.as_secs_f64() * 1e3;
    let not_optimal = outcomes.iter().filter(|o| matches!(o, Ok(o) if !o.optimal)).count();
    metrics::counter!(m::HOSTS_NOT_OPTIMAL).increment(not_optimal as u64);
    let decided_at = unix_ms_now();
    let lease_ms = settings.lease.as_millis() as u64;
    let decisions: Vec<_> = node.read_state(|ledger| {
        outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Ok(o) => decision_for_host(ledger, book, round, o, decided_at, lease_ms),
                Err(e) => {
                    tracing::error!(round, error = %e, "host not cleared");
                    None
                }
            })
            .collect()
    });
    let command = match settlement {
        Settlement::Early(_) => Command::DecideHosts { round, decided_at_unix_ms: decided_at, decisions },
        Settlement::Close => Command::DecideRound { round, decided_at_unix_ms: decided_at, decisions },
    };
    match node.write(command).await {
        Ok(Response::Decided { decisions }) => {
            let published = futures::future::join_all(decisions.iter().map(|d| bus.publish_decision(d))).await;
            let mut failed_publications = 0;
            for e in published.iter().filter_map(|p| p.as_ref().err()) {
                failed_publications += 1;
                tracing::warn!(round, error = %e, "cannot publish a decision");
            }
            metrics::counter!(m::DECISIONS_PUBLISHED).increment((published.len() - failed_publications) as u64);
            metrics::counter!(m::DECISION_PUBLISH_ERRORS).increment(failed_publications as u64);
            Some(Settled { hosts: decisions.len(), clearing_ms, failed_publications })
        }
        Ok(Response::AlreadyDecided { last_round, .. }) => {
            tracing::warn!(round, last_round, "round was already decided; skipping");
            skipped("already_decided");
            None
        }
        Ok(other) => {
            tracing::error!(round, ?other, "unexpected ledger answer to a round");
            skipped("not_committed");
            None
        }
        Err(e) if e.is_not_leader() => {
            tracing::info!(round, "lost leadership before the round committed");
            skipped("lost_leadership");
            None
        }
        Err(e) => {
            tracing::error!(round, error = %e, "decisions not committed; skipped");
            skipped("not_committed");
            None
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
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
