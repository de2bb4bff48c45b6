//! Registration: a host announces its capacity, and each workload its spec.
//!
//! Both are requests: the arbiter answers on the reply subject with a [`RegistrationReply`], so an
//! agent learns at once when admission control refuses a workload whose guarantee does not fit.

use crate::codec::Message;
use crate::ids::{HostId, TenantId, WorkloadId};
use crate::resources::{Resource, ResourceVector};
use crate::validate::{
    check_count, check_credits, check_fits, check_non_negative, check_resources, check_text, ValidationError,
};
use serde::{Deserialize, Serialize};

/// A host's offer to the cluster: what it has and what its enforcement backend can enforce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRegistration {
    pub host: HostId,
    /// Everything the host can hand out, guarantees included.
    pub capacity: ResourceVector,
    /// The resources the host's enforcement backend really enforces. A decision about any other
    /// resource is recorded and reported as unenforced.
    pub enforces: Vec<Resource>,
    /// The enforcement backend's name (`cgroup-v2`, `docker`, `dry-run`, ...).
    pub backend: String,
    /// The agent's software version.
    pub agent_version: String,
}

impl Message for HostRegistration {
    const KIND: &'static str = "host_registration";
    fn validate(&self) -> Result<(), ValidationError> {
        check_resources("capacity", &self.capacity)?;
        check_count("enforces", self.enforces.len(), Resource::COUNT)?;
        check_text("backend", &self.backend)?;
        check_text("agent_version", &self.agent_version)
    }
}

/// What kind of work a workload is; it decides how its agent bids and what it offers to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadClass {
    /// Latency-critical: a service with a tail-latency SLO.
    LatencyCritical,
    /// Best-effort: useful work with no deadline, first to yield.
    BestEffort,
    /// Batch: throughput work with an estimated execution time (a soft deadline).
    Batch,
}

/// Which pressure-stall figure an SLO bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PsiResource {
    Cpu,
    Memory,
    Io,
}

/// `some` (at least one task stalled) or `full` (all tasks stalled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PsiScope {
    Some,
    Full,
}

/// A workload's service-level objective, which its agent tracks the slack of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Slo {
    /// No objective: the workload bids from priority and budget alone.
    None,
    /// The 10-second PSI average of `resource`/`scope` stays under `max_avg10_pct` percent.
    Psi { resource: PsiResource, scope: PsiScope, max_avg10_pct: f64 },
    /// A gauge scraped from a Prometheus endpoint stays at or under `target` (or at or above it
    /// when `higher_is_better`), e.g. a p99 latency in milliseconds.
    Metric { url: String, metric: String, target: f64, higher_is_better: bool },
}

/// Everything the arbiter needs to know about a workload to admit it and clear its bids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub host: HostId,
    pub workload: WorkloadId,
    /// The owner cluster-wide quotas apply to.
    pub tenant: TenantId,
    pub class: WorkloadClass,
    /// 1 (lowest) to 100 (highest); budgets refill in proportion to it.
    pub priority: u8,
    pub slo: Slo,
    /// Expected run time in seconds, for batch work; `null` for services.
    pub estimated_execution_s: Option<f64>,
    /// Always honoured; admission control keeps the sum of guarantees within capacity.
    pub guaranteed: ResourceVector,
    /// Never exceeded: no bundle may ask for more.
    pub limit: ResourceVector,
    /// Credit budget: the most credits the workload may hold; it refills towards this each round.
    pub budget: f64,
}

/// Share of its budget a priority-100 workload gets back each round (priority 50: half that).
pub const REFILL_SHARE_PER_ROUND: f64 = 0.1;

impl WorkloadSpec {
    /// Credits the workload's balance regains each decided round: budgets refill in proportion
    /// to priority, never above the budget. The arbiter's ledger applies this rule and agents
    /// use it to estimate their balance between decisions.
    pub fn refill_per_round(&self) -> f64 {
        self.budget * f64::from(self.priority) / 100.0 * REFILL_SHARE_PER_ROUND
    }

    /// The balance available in the next round, given the current one.
    pub fn balance_after_refill(&self, balance: f64) -> f64 {
        (balance + self.refill_per_round()).min(self.budget)
    }
}

/// The lowest and highest workload priority.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<u8> = 1..=100;

impl Message for WorkloadSpec {
    const KIND: &'static str = "workload_spec";
    fn validate(&self) -> Result<(), ValidationError> {
        if !PRIORITY_RANGE.contains(&self.priority) {
            return Err(ValidationError::Inconsistent {
                field: "priority".into(),
                reason: format!("{} is outside 1..=100", self.priority),
            });
        }
        match &self.slo {
            Slo::None => {}
            Slo::Psi { max_avg10_pct, .. } => check_non_negative("slo.max_avg10_pct", *max_avg10_pct, 100.0)?,
            Slo::Metric { url, metric, target, .. } => {
                check_text("slo.url", url)?;
                check_text("slo.metric", metric)?;
                if !target.is_finite() {
                    return Err(ValidationError::NotFinite { field: "slo.target".into() });
                }
            }
        }
        if let Some(t) = self.estimated_execution_s {
            check_non_negative("estimated_execution_s", t, 1e9)?;
        }
        check_resources("guaranteed", &self.guaranteed)?;
        check_resources("limit", &self.limit)?;
        check_fits("guaranteed", &self.guaranteed, "limit", &self.limit)?;
        check_credits("budget", self.budget)
    }
}

/// The arbiter's answer to a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RegistrationReply {
    Accepted,
    /// Refused, with the reason (e.g. the guarantee does not fit the host's free capacity).
    Refused { reason: String },
}

impl Message for RegistrationReply {
    const KIND: &'static str = "registration_reply";
    fn validate(&self) -> Result<(), ValidationError> {
        match self {
            RegistrationReply::Accepted => Ok(()),
            RegistrationReply::Refused { reason } => check_text("reason", reason),
        }
    }
}
