//! The dry-run backend: enforces nothing, records what it would apply.
//!
//! For trying entente on a host without touching its workloads (or without root), and for
//! watching what the arbiter would do. It claims every resource so that decisions are logged
//! whole; its readings are what it was last told, so the lease logic runs exactly as it would
//! with a real backend.

use super::{Backend, EnforceError, Setting, Target, UNLIMITED};
use async_trait::async_trait;
use entente_protocol::{Resource, ResourceVector};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// How many applies [`DryRunBackend::history`] keeps: a dry-run agent may run for weeks, and
/// its log already has every one.
pub const DRY_RUN_HISTORY: usize = 1024;

/// Records allocations instead of enforcing them.
#[derive(Debug, Default)]
pub struct DryRunBackend {
    applied: Mutex<HashMap<Target, ResourceVector>>,
    history: Mutex<VecDeque<(Target, Setting)>>,
}

impl DryRunBackend {
    pub fn new() -> DryRunBackend {
        DryRunBackend::default()
    }

    /// The last [`DRY_RUN_HISTORY`] applies, oldest first.
    pub fn history(&self) -> Vec<(Target, Setting)> {
        self.history.lock().expect("dry-run history lock").iter().cloned().collect()
    }
}

#[async_trait]
impl Backend for DryRunBackend {
    fn name(&self) -> &'static str {
        "dry-run"
    }

    fn enforces(&self) -> Vec<Resource> {
        Resource::ALL.to_vec()
    }

    async fn apply(&self, target: &Target, setting: &Setting) -> Result<(), EnforceError> {
        tracing::info!(%target, alloc = %setting.alloc, cpu_ceiling = setting.cpu_ceiling, "dry run: would apply");
        let in_force = self.expected_reading(setting);
        self.applied
            .lock()
            .expect("dry-run lock")
            .insert(target.clone(), in_force);
        let mut history = self.history.lock().expect("dry-run history lock");
        if history.len() == DRY_RUN_HISTORY {
            history.pop_front();
        }
        history.push_back((target.clone(), *setting));
        Ok(())
    }

    /// What was last applied; a target never applied reads as unconstrained everywhere.
    async fn read(&self, target: &Target) -> Result<ResourceVector, EnforceError> {
        let applied = self.applied.lock().expect("dry-run lock");
        Ok(applied.get(target).copied().unwrap_or(ResourceVector {
            cpu: UNLIMITED,
            memory: UNLIMITED,
            disk_bw: UNLIMITED,
            net_bw: UNLIMITED,
            llc: UNLIMITED,
            mem_bw: UNLIMITED,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::CpuEnforcement;

    #[tokio::test]
    async fn records_and_reads_back_what_it_would_apply() {
        let backend = DryRunBackend::new();
        let target = Target::Container("web".into());
        assert_eq!(backend.read(&target).await.unwrap().cpu, UNLIMITED);
        let alloc = ResourceVector::new(0, 0, 5_000, 7);
        backend.apply(&target, &alloc.into()).await.unwrap();
        let read = backend.read(&target).await.unwrap();
        assert_eq!(read, backend.expected_reading(&alloc.into()));
        assert_eq!((read.cpu, read.memory, read.disk_bw, read.net_bw), (10, UNLIMITED, 5_000, 7));
        assert_eq!(backend.history(), vec![(target.clone(), Setting::capped(alloc))]);
        // A sharing workload reads back its ceiling, its limit, as its cpu.
        let shared = CpuEnforcement::Share { up_to: 2_000 }.setting(ResourceVector::new(300, 0, 0, 0));
        backend.apply(&target, &shared).await.unwrap();
        assert_eq!(backend.read(&target).await.unwrap().cpu, 2_000);
    }

    #[tokio::test]
    async fn keeps_only_the_latest_applies() {
        let backend = DryRunBackend::new();
        let target = Target::Container("web".into());
        for cpu in 0..(DRY_RUN_HISTORY as u64 + 10) {
            backend.apply(&target, &ResourceVector::new(cpu, 0, 0, 0).into()).await.unwrap();
        }
        let history = backend.history();
        assert_eq!(history.len(), DRY_RUN_HISTORY);
        assert_eq!(history[0].1.alloc.cpu, 10, "the oldest applies were dropped");
        assert_eq!(history.last().unwrap().1.alloc.cpu, DRY_RUN_HISTORY as u64 + 9);
    }
}
