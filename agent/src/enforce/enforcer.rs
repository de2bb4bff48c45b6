//! Holding decisions under their lease: the part of enforcement that is the same on every
//! backend.
//!
//! A decision is valid until its `lease_expires_unix_ms`. The arbiter renews it every round by
//! deciding again; when no renewal arrives in time (the lease ran out, or the arbiter has been
//! unreachable for longer than the lease, which looks the same from here) the workload falls
//! back to its guarantee, the one amount that is always honoured. So what should be in force for
//! a workload is: its decided allocation while the lease holds, its guarantee otherwise
//! (including before the first decision).
//!
//! [`Enforcer::tick`], called every round or more often, makes that true on the backend: it reads
//! what is in force, compares it with [`Backend::expected_reading`] of what should be, and applies
//! only when they differ, or when what should be in force changed since the last tick (a
//! sharing workload's new allocation may change only its cpu weight, which the reading does not
//! show).
//!
//! That gives idempotence (an unchanged allocation writes nothing), drift repair (someone
//! edited the cgroup's limits: re-applied) and retries (a failed apply is tried again next tick).
//! Amounts of resources the backend does not enforce are reported, never silently dropped.

use super::{Backend, CpuEnforcement, EnforceError, Setting, Target};
use entente_protocol::{Decision, Resource, ResourceVector, RoundId, WorkloadId};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Milliseconds since the Unix epoch, the clock leases are written in.
pub use entente_protocol::clock::unix_ms_now;

/// Why the enforcer wrote to the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppliedBecause {
    /// A decided allocation under a valid lease.
    Decided,
    /// The guarantee: the lease expired, or no decision has arrived yet.
    Guarantee,
    /// What should be in force had not changed, but the backend read `found`, not it.
    Drift { found: ResourceVector },
}

/// What happened to one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `Some` when the backend was written to.
    pub applied: Option<AppliedBecause>,
    /// Resources with a non-zero amount in force that the backend does not enforce.
    pub unenforced: Vec<Resource>,
}

/// What a decision or a tick did, per workload.
#[derive(Debug, Default)]
pub struct TickReport {
    pub applied: Vec<(WorkloadId, AppliedBecause)>,
    /// Workloads whose lease expired during this call: they went back to their guarantee.
    pub fell_back: Vec<WorkloadId>,
    /// Workloads with amounts the backend does not enforce, and which resources.
    pub unenforced: Vec<(WorkloadId, Vec<Resource>)>,
    /// Allocations in a decision for workloads this enforcer does not hold.
    pub unknown_workloads: Vec<WorkloadId>,
    /// True when the decision was for a round not newer than one already held (a replay).
    pub stale_decision: bool,
    pub errors: Vec<(WorkloadId, EnforceError)>,
}

#[derive(Debug)]
struct Lease {
    alloc: ResourceVector,
    expires_unix_ms: u64,
}

#[derive(Debug)]
struct Held {
    target: Target,
    guarantee: ResourceVector,
    cpu: CpuEnforcement,
    lease: Option<Lease>,
    /// What was last made to hold on the backend (applied, or found already in force).
    in_force: Option<Setting>,
}

/// Holds every workload of the host at its decided allocation or its guarantee.
pub struct Enforcer {
    backend: Arc<dyn Backend>,
    workloads: BTreeMap<WorkloadId, Held>,
    last_round: Option<RoundId>,
    applies: u64,
}

impl Enforcer {
    pub fn new(backend: Arc<dyn Backend>) -> Enforcer {
        Enforcer {
            backend,
            workloads: BTreeMap::new(),
            last_round: None,
            applies: 0,
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Starts holding a workload, its cpu capped or shared as `cpu` says. Nothing is written
    /// until the next decision or tick, which puts it at its guarantee unless a decision says
    /// otherwise. Registering again replaces the target, guarantee and cpu enforcement and keeps
    /// a valid lease.
    pub fn register(
        &mut self,
        workload: WorkloadId,
        target: Target,
        guarantee: ResourceVector,
        cpu: CpuEnforcement,
    ) {
        let held = self.workloads.entry(workload).or_insert(Held {
            target: target.clone(),
            guarantee,
            cpu,
            lease: None,
            in_force: None,
        });
        if held.target != target {
            held.in_force = None;
        }
        held.target = target;
        held.guarantee = guarantee;
        held.cpu = cpu;
    }

    /// Stops holding a workload (it left the host); its cgroup or container is left as it is.
    pub fn unregister(&mut self, workload: &WorkloadId) -> bool {
        self.workloads.remove(workload).is_some()
    }

    /// How many times the backend's `apply` was called.
    pub fn applies(&self) -> u64 {
        self.applies
    }

    /// What should be in force for a workload at `now_unix_ms`.
    pub fn should_be_in_force(
        &self,
        workload: &WorkloadId,
        now_unix_ms: u64,
    ) -> Option<ResourceVector> {
        self.workloads
            .get(workload)
            .map(|held| desired(held, now_unix_ms))
    }

    /// The resources with a non-zero amount in `alloc` that the backend does not enforce.
    pub fn unenforced(&self, alloc: &ResourceVector) -> Vec<Resource> {
        let enforced = self.backend.enforces();
        Resource::ALL
            .into_iter()
            .filter(|r| alloc.get(*r) != 0 && !enforced.contains(r))
            .collect()
    }

    /// Takes a decision for this host: holds each allocation for a registered workload under the
    /// decision's lease and applies it. A decision for a round not newer than the last one taken
    /// is a replay and is ignored (`stale_decision`).
    pub async fn on_decision(&mut self, decision: &Decision, now_unix_ms: u64) -> TickReport {
        let mut report = TickReport::default();
        if self.last_round.is_some_and(|last| decision.round <= last) {
            tracing::debug!(
                round = decision.round,
                "ignoring a decision for an old round"
            );
            report.stale_decision = true;
            return report;
        }
        self.last_round = Some(decision.round);
        // Every lease first, then every workload (which also repairs drift on those the decision
        // did not name).
        for allocation in &decision.allocations {
            if !self.workloads.contains_key(&allocation.workload) {
                tracing::warn!(workload = %allocation.workload.as_str(), round = decision.round, "decision for a workload this agent does not hold");
                report.unknown_workloads.push(allocation.workload.clone());
                continue;
            }
            self.hold(
                &allocation.workload,
                allocation.alloc,
                decision.lease_expires_unix_ms,
                now_unix_ms,
            );
        }
        let workloads: Vec<WorkloadId> = self.workloads.keys().cloned().collect();
        for workload in workloads {
            let outcome = self.reconcile(&workload, now_unix_ms).await;
            record(&mut report, &workload, outcome);
        }
        report
    }

    /// Holds `alloc` for one workload until `lease_expires_unix_ms` and makes it so on the
    /// backend. A lease already expired at `now_unix_ms` holds nothing: the guarantee applies.
    pub async fn on_allocation(
        &mut self,
        workload: &WorkloadId,
        alloc: ResourceVector,
        lease_expires_unix_ms: u64,
        now_unix_ms: u64,
    ) -> Result<Outcome, EnforceError> {
        if !self.workloads.contains_key(workload) {
            return Err(EnforceError::BadTarget {
                target: workload.as_str().to_string(),
                reason: "the workload is not registered with the enforcer",
            });
        }
        self.hold(workload, alloc, lease_expires_unix_ms, now_unix_ms);
        self.reconcile(workload, now_unix_ms).await
    }

    /// Holds `alloc` for a registered workload under its lease, writing nothing.
    fn hold(&mut self, workload: &WorkloadId, alloc: ResourceVector, lease_expires_unix_ms: u64, now_unix_ms: u64) {
        let Some(held) = self.workloads.get_mut(workload) else {
            return;
        };
        if lease_expires_unix_ms > now_unix_ms {
            held.lease = Some(Lease {
                alloc,
                expires_unix_ms: lease_expires_unix_ms,
            });
        } else {
            tracing::warn!(workload = %workload.as_str(), lease_expires_unix_ms, now_unix_ms, "allocation arrived with its lease already expired; holding the guarantee");
        }
    }

    /// Drops expired leases (the workload falls back to its guarantee) and makes what should be
    /// in force true on the backend for every workload, writing only where it is not.
    pub async fn tick(&mut self, now_unix_ms: u64) -> TickReport {
        let mut report = TickReport::default();
        let workloads: Vec<WorkloadId> = self.workloads.keys().cloned().collect();
        for workload in workloads {
            let held = self.workloads.get_mut(&workload).expect("listed just now");
            if held
                .lease
                .as_ref()
                .is_some_and(|lease| lease.expires_unix_ms <= now_unix_ms)
            {
                held.lease = None;
                tracing::warn!(workload = %workload.as_str(), "lease expired without renewal; falling back to the guarantee");
                report.fell_back.push(workload.clone());
            }
            let outcome = self.reconcile(&workload, now_unix_ms).await;
            record(&mut report, &workload, outcome);
        }
        report
    }

    async fn reconcile(
        &mut self,
        workload: &WorkloadId,
        now_unix_ms: u64,
    ) -> Result<Outcome, EnforceError> {
        let held = self
            .workloads
            .get(workload)
            .expect("callers check registration");
        let should = desired(held, now_unix_ms);
        let because_of_lease = if held
            .lease
            .as_ref()
            .is_some_and(|l| l.expires_unix_ms > now_unix_ms)
        {
            AppliedBecause::Decided
        } else {
            AppliedBecause::Guarantee
        };
        let target = held.target.clone();
        let setting = held.cpu.setting(should);
        let previously = held.in_force;
        let unenforced = self.unenforced(&should);
        if !unenforced.is_empty() {
            tracing::warn!(workload = %workload.as_str(), ?unenforced, backend = self.backend.name(), "allocation has amounts this backend cannot enforce");
        }

        let expected = self.backend.expected_reading(&setting);
        let found = self.backend.read(&target).await?;
        let applied = if found == expected && previously == Some(setting) {
            None
        } else {
            let because = if previously == Some(setting) {
                AppliedBecause::Drift { found }
            } else {
                because_of_lease
            };
            if let AppliedBecause::Drift { found } = &because {
                tracing::warn!(workload = %workload.as_str(), %target, ?found, ?expected, "enforced allocation drifted; re-applying");
            }
            self.applies += 1;
            self.backend.apply(&target, &setting).await?;
            Some(because)
        };
        if let Some(held) = self.workloads.get_mut(workload) {
            held.in_force = Some(setting);
        }
        Ok(Outcome {
            applied,
            unenforced,
        })
    }
}

fn desired(held: &Held, now_unix_ms: u64) -> ResourceVector {
    match &held.lease {
        Some(lease) if lease.expires_unix_ms > now_unix_ms => lease.alloc,
        _ => held.guarantee,
    }
}

fn record(report: &mut TickReport, workload: &WorkloadId, outcome: Result<Outcome, EnforceError>) {
    match outcome {
        Ok(outcome) => {
            if let Some(because) = outcome.applied {
                report.applied.push((workload.clone(), because));
            }
            if !outcome.unenforced.is_empty() {
                report
                    .unenforced
                    .push((workload.clone(), outcome.unenforced));
            }
        }
        Err(error) => {
            tracing::error!(workload = %workload.as_str(), %error, "enforcement failed; will retry next tick");
            report.errors.push((workload.clone(), error));
        }
    }
}

#[cfg(test)]
mod tests {
    //! The lease and drift logic against an in-memory backend (this module's unit tests only;
    //! the real backends are tested against real cgroups in agent/tests).
    use super::*;
    use crate::enforce::{Setting, UNLIMITED};
    use async_trait::async_trait;
    use std::sync::Mutex;

    /// Enforces cpu and memory in a map; counts applies; can be made to drift or fail.
    #[derive(Default)]
    struct MemoryBackend {
        state: Mutex<BTreeMap<String, ResourceVector>>,
        applies: Mutex<u64>,
        fail: Mutex<bool>,
        /// The cpu weight (shares) last applied, which is not part of a reading.
        weights: Mutex<BTreeMap<String, u64>>,
    }

    impl MemoryBackend {
        fn key(target: &Target) -> String {
            target.to_string()
        }
        fn applies(&self) -> u64 {
            *self.applies.lock().unwrap()
        }
        fn tamper(&self, target: &Target, v: ResourceVector) {
            self.state.lock().unwrap().insert(Self::key(target), v);
        }
    }

    #[async_trait]
    impl Backend for MemoryBackend {
        fn name(&self) -> &'static str {
            "memory-test"
        }
        fn enforces(&self) -> Vec<Resource> {
            vec![Resource::Cpu, Resource::Memory]
        }
        async fn apply(&self, target: &Target, setting: &Setting) -> Result<(), EnforceError> {
            if *self.fail.lock().unwrap() {
                return Err(EnforceError::NoSuchCgroup("/gone".into()));
            }
            *self.applies.lock().unwrap() += 1;
            self.weights.lock().unwrap().insert(Self::key(target), setting.cpu_shares);
            let v = self.expected_reading(setting);
            self.state.lock().unwrap().insert(Self::key(target), v);
            Ok(())
        }
        async fn read(&self, target: &Target) -> Result<ResourceVector, EnforceError> {
            let unconstrained = ResourceVector {
                cpu: UNLIMITED,
                memory: UNLIMITED,
                ..ResourceVector::ZERO
            };
            Ok(self
                .state
                .lock()
                .unwrap()
                .get(&Self::key(target))
                .copied()
                .unwrap_or(unconstrained))
        }
    }

    fn wl(name: &str) -> WorkloadId {
        WorkloadId::new(name).unwrap()
    }

    fn setup() -> (Arc<MemoryBackend>, Enforcer, Target) {
        let backend = Arc::new(MemoryBackend::default());
        let mut enforcer = Enforcer::new(backend.clone());
        let target = Target::cgroup("entente/web").unwrap();
        enforcer.register(
            wl("web"),
            target.clone(),
            ResourceVector::new(500, 1 << 30, 0, 0),
            CpuEnforcement::Cap,
        );
        (backend, enforcer, target)
    }

    #[tokio::test]
    async fn a_sharing_workload_is_capped_at_its_limit_and_weighted_by_a_fraction_of_its_allocation() {
        let backend = Arc::new(MemoryBackend::default());
        let mut enforcer = Enforcer::new(backend.clone());
        let target = Target::cgroup("entente/batch").unwrap();
        let guarantee = ResourceVector::new(50, 1 << 30, 0, 0);
        enforcer.register(wl("batch"), target.clone(), guarantee, CpuEnforcement::Share { up_to: 2_000 });
        enforcer.tick(0).await;
        assert_eq!(backend.read(&target).await.unwrap().cpu, 2_000, "the quota is the limit");
        // The guarantee's weight (51 shares) divided by 64, at least the kernel's minimum.
        assert_eq!(backend.weights.lock().unwrap()[&target.to_string()], 2, "the weight is the guarantee's");

        // A new allocation changes only the weight: the reading is the same, yet it is applied.
        let decided = ResourceVector::new(700, 1 << 30, 0, 0);
        let outcome = enforcer.on_allocation(&wl("batch"), decided, 10_000, 1).await.unwrap();
        assert_eq!(outcome.applied, Some(AppliedBecause::Decided));
        assert_eq!(backend.read(&target).await.unwrap().cpu, 2_000);
        assert_eq!(backend.weights.lock().unwrap()[&target.to_string()], 716 / 64);
        // Renewed unchanged: nothing is written.
        let outcome = enforcer.on_allocation(&wl("batch"), decided, 20_000, 2).await.unwrap();
        assert_eq!(outcome.applied, None);
        assert_eq!(backend.applies(), 2);
    }

    #[tokio::test]
    async fn a_sharer_keeps_its_limit_whatever_a_neighbour_bought_and_yields_by_weight() {
        let backend = Arc::new(MemoryBackend::default());
        let mut enforcer = Enforcer::new(backend.clone());
        let (lc, be) = (Target::cgroup("entente/lc").unwrap(), Target::cgroup("entente/be").unwrap());
        enforcer.register(wl("lc"), lc.clone(), ResourceVector::new(500, 0, 0, 0), CpuEnforcement::Cap);
        enforcer.register(wl("be"), be.clone(), ResourceVector::new(50, 0, 0, 0), CpuEnforcement::Share { up_to: 2_000 });
        let mut decision = entente_protocol::samples::decision();
        decision.lease_expires_unix_ms = 10_000;
        let allocate = |decision: &mut Decision, round, lc_cpu, be_cpu| {
            decision.round = round;
            let template = decision.allocations[0].clone();
            decision.allocations = [("lc", lc_cpu), ("be", be_cpu)]
                .into_iter()
                .map(|(w, cpu)| entente_protocol::Allocation {
                    workload: wl(w),
                    alloc: ResourceVector::new(cpu, 0, 0, 0),
                    ..template.clone()
                })
                .collect();
        };
        let weight = |target: &Target| backend.weights.lock().unwrap()[&target.to_string()];

        // The service bought headroom: it is capped there at full weight; the sharer keeps its
        // limit (no quota to come back from in a burst) at a 64th of its allocation's weight.
        allocate(&mut decision, 1, 1_800, 200);
        let report = enforcer.on_decision(&decision, 0).await;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(backend.read(&lc).await.unwrap().cpu, 1_800);
        assert_eq!(backend.read(&be).await.unwrap().cpu, 2_000);
        assert_eq!(weight(&lc), 1_843);
        assert_eq!(weight(&be), 204 / 64);

        // The leases run out: both at their guarantees; the sharer still up to its limit.
        let report = enforcer.tick(10_000).await;
        assert_eq!(report.fell_back.len(), 2);
        assert_eq!(backend.read(&lc).await.unwrap().cpu, 500);
        assert_eq!(backend.read(&be).await.unwrap().cpu, 2_000);
        assert_eq!((weight(&lc), weight(&be)), (512, 2));
    }

    #[tokio::test]
    async fn holds_the_decision_then_falls_back_to_the_guarantee_when_the_lease_expires() {
        let (backend, mut enforcer, target) = setup();
        let decided = ResourceVector::new(1500, 2 << 30, 0, 0);
        let outcome = enforcer
            .on_allocation(&wl("web"), decided, 2_000, 1_000)
            .await
            .unwrap();
        assert_eq!(outcome.applied, Some(AppliedBecause::Decided));
        assert_eq!(backend.read(&target).await.unwrap().cpu, 1500);

        let report = enforcer.tick(1_999).await;
        assert!(
            report.applied.is_empty() && report.fell_back.is_empty() && report.errors.is_empty()
        );

        let report = enforcer.tick(2_000).await;
        assert_eq!(report.fell_back, vec![wl("web")]);
        assert_eq!(report.applied, vec![(wl("web"), AppliedBecause::Guarantee)]);
        assert_eq!(backend.read(&target).await.unwrap().cpu, 500);
        assert_eq!(backend.applies(), 2);
    }

    #[tokio::test]
    async fn a_renewed_lease_writes_nothing() {
        let (backend, mut enforcer, _) = setup();
        let decided = ResourceVector::new(1500, 2 << 30, 0, 0);
        enforcer
            .on_allocation(&wl("web"), decided, 2_000, 1_000)
            .await
            .unwrap();
        for round in 1..10u64 {
            let outcome = enforcer
                .on_allocation(
                    &wl("web"),
                    decided,
                    2_000 + round * 1_000,
                    1_000 + round * 1_000,
                )
                .await
                .unwrap();
            assert_eq!(outcome.applied, None);
            assert!(enforcer
                .tick(1_500 + round * 1_000)
                .await
                .applied
                .is_empty());
        }
        assert_eq!(backend.applies(), 1);
        assert_eq!(enforcer.applies(), 1);
    }

    #[tokio::test]
    async fn drift_is_repaired_and_reported() {
        let (backend, mut enforcer, target) = setup();
        enforcer.tick(0).await;
        backend.tamper(
            &target,
            ResourceVector {
                cpu: UNLIMITED,
                memory: 1 << 30,
                ..ResourceVector::ZERO
            },
        );
        let report = enforcer.tick(10).await;
        assert!(
            matches!(report.applied.as_slice(), [(_, AppliedBecause::Drift { found })] if found.cpu == UNLIMITED)
        );
        assert_eq!(backend.read(&target).await.unwrap().cpu, 500);
        assert!(enforcer.tick(20).await.applied.is_empty());
    }

    #[tokio::test]
    async fn unenforced_resources_are_reported_and_failures_retried() {
        let (backend, mut enforcer, _) = setup();
        *backend.fail.lock().unwrap() = true;
        let decided = ResourceVector::new(800, 1 << 30, 5_000_000, 1_000_000);
        let err = enforcer
            .on_allocation(&wl("web"), decided, 10_000, 0)
            .await
            .unwrap_err();
        assert!(matches!(err, EnforceError::NoSuchCgroup(_)));
        *backend.fail.lock().unwrap() = false;
        let report = enforcer.tick(1).await;
        assert_eq!(report.applied, vec![(wl("web"), AppliedBecause::Decided)]);
        assert_eq!(
            report.unenforced,
            vec![(wl("web"), vec![Resource::DiskBw, Resource::NetBw])]
        );
    }

    #[tokio::test]
    async fn expired_or_replayed_decisions_hold_nothing() {
        let (_, mut enforcer, _) = setup();
        let outcome = enforcer
            .on_allocation(&wl("web"), ResourceVector::new(3000, 0, 0, 0), 100, 100)
            .await
            .unwrap();
        assert_eq!(outcome.applied, Some(AppliedBecause::Guarantee));
        assert_eq!(
            enforcer.should_be_in_force(&wl("web"), 100).unwrap().cpu,
            500
        );

        let mut decision = entente_protocol::samples::decision();
        decision.allocations[0].workload = wl("web");
        decision.lease_expires_unix_ms = u64::MAX;
        let first = enforcer.on_decision(&decision, 0).await;
        assert!(!first.stale_decision && first.errors.is_empty());
        assert!(enforcer.on_decision(&decision, 0).await.stale_decision);
    }
}
