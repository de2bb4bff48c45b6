//! What the arbiter counts, for its Prometheus endpoint (see `docs/METRICS.md`).
//!
//! The names live here and the recording happens where each thing occurs: the leader's round
//! loop, the state machine's apply (so every replica reports the ledger it holds, not only the
//! leader). [`describe`] gives every metric its help text and starts the series whose labels are
//! known up front at zero, so a scrape shows them before the first event.

use entente_protocol::RejectReason;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};

pub const ROUNDS_DECIDED: &str = "entente_arbiter_rounds_decided_total";
pub const ROUNDS_SKIPPED: &str = "entente_arbiter_rounds_skipped_total";
pub const CLEARING_DURATION: &str = "entente_arbiter_clearing_duration_seconds";
pub const DECISION_LATENCY: &str = "entente_arbiter_decision_latency_seconds";
pub const HOSTS_NOT_OPTIMAL: &str = "entente_arbiter_host_auctions_not_optimal_total";
pub const DECISIONS_PUBLISHED: &str = "entente_arbiter_decisions_published_total";
pub const DECISION_PUBLISH_ERRORS: &str = "entente_arbiter_decision_publish_errors_total";
pub const BIDS_ACCEPTED: &str = "entente_arbiter_bids_accepted_total";
pub const BIDS_REJECTED: &str = "entente_arbiter_bids_rejected_total";
pub const REGISTRATIONS: &str = "entente_arbiter_registrations_total";
pub const IS_LEADER: &str = "entente_arbiter_is_leader";
pub const TERM: &str = "entente_arbiter_term";
pub const LAST_ROUND: &str = "entente_arbiter_last_round";
pub const HOSTS: &str = "entente_arbiter_hosts";
pub const WORKLOADS: &str = "entente_arbiter_workloads";

/// The `reason` label of [`ROUNDS_SKIPPED`].
pub const SKIP_REASONS: [&str; 4] = ["clearing_failed", "already_decided", "lost_leadership", "not_committed"];
/// The `kind` label of [`REGISTRATIONS`].
pub const REGISTRATION_KINDS: [&str; 3] = ["host", "workload", "quota"];
/// The `outcome` label of [`REGISTRATIONS`].
pub const REGISTRATION_OUTCOMES: [&str; 2] = ["accepted", "refused"];

/// Describes every metric and starts the known series at zero.
pub fn describe() {
    describe_counter!(ROUNDS_DECIDED, "Rounds this replica decided as leader (committed to Raft).");
    describe_counter!(ROUNDS_SKIPPED, "Rounds this replica announced but did not decide, by reason.");
    describe_histogram!(CLEARING_DURATION, metrics::Unit::Seconds, "Time to clear one batch of host auctions: hosts that closed early, or the rest of a round at its deadline.");
    describe_histogram!(
        DECISION_LATENCY,
        metrics::Unit::Seconds,
        "Time from a round's bid deadline until its decisions are committed and published."
    );
    describe_counter!(HOSTS_NOT_OPTIMAL, "Host auctions whose allocation was not proven optimal within the time budget.");
    describe_counter!(DECISIONS_PUBLISHED, "Decisions published on the decisions stream (one per host and round).");
    describe_counter!(DECISION_PUBLISH_ERRORS, "Committed decisions that could not be published.");
    describe_counter!(BIDS_ACCEPTED, "Bids accepted as a workload's standing bid.");
    describe_counter!(BIDS_REJECTED, "Bids rejected, by reason (a rejection notice was sent for each).");
    describe_counter!(REGISTRATIONS, "Host, workload and quota registrations answered, by kind and outcome.");
    describe_gauge!(IS_LEADER, "1 while this replica leads the cluster, else 0.");
    describe_gauge!(TERM, "The Raft term this replica is in.");
    describe_gauge!(LAST_ROUND, "The last round decided in the ledger this replica holds.");
    describe_gauge!(HOSTS, "Hosts registered in the ledger this replica holds.");
    describe_gauge!(WORKLOADS, "Workloads registered in the ledger this replica holds.");
    for name in [ROUNDS_DECIDED, HOSTS_NOT_OPTIMAL, DECISIONS_PUBLISHED, DECISION_PUBLISH_ERRORS, BIDS_ACCEPTED] {
        counter!(name).absolute(0);
    }
    for reason in SKIP_REASONS {
        counter!(ROUNDS_SKIPPED, "reason" => reason).absolute(0);
    }
    for reason in RejectReason::ALL {
        counter!(BIDS_REJECTED, "reason" => reason.as_str()).absolute(0);
    }
    for kind in REGISTRATION_KINDS {
        for outcome in REGISTRATION_OUTCOMES {
            counter!(REGISTRATIONS, "kind" => kind, "outcome" => outcome).absolute(0);
        }
    }
    for name in [CLEARING_DURATION, DECISION_LATENCY] {
        let _registered = metrics::histogram!(name);
    }
    for name in [IS_LEADER, TERM, LAST_ROUND, HOSTS, WORKLOADS] {
        gauge!(name).set(0.0);
    }
}
