//! The recent history of every workload, grouped by host: what each inference is made from.
//!
//! Each workload keeps a ring buffer of its latest feature vectors plus the state of the stated
//! baseline (which needs every sample, model or not). Samples stamped in the future or not after
//! the workload's previous one are refused, so a replayed or skewed sample cannot reorder a
//! window. A workload that stops reporting is evicted so its slot frees up. A window shorter than
//! the model's is left-padded by repeating its oldest sample, per the model interface. Pure: the
//! caller passes the time in.

use crate::features::{features, FeatureVector};
use entente_protocol::baseline::{slowdown_from_pressure, FallbackPredictor};
use entente_protocol::{HostId, Pressure, TelemetrySample, Usage, WorkloadId};
use std::collections::{BTreeMap, VecDeque};

/// Why a sample was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("sample of {host}/{workload} is stamped {ahead_ms} ms in the future")]
    FromTheFuture { host: HostId, workload: WorkloadId, ahead_ms: u64 },
    #[error("sample of {host}/{workload} at {at_unix_ms} is not after the previous one at {previous_unix_ms}")]
    OutOfOrder { host: HostId, workload: WorkloadId, at_unix_ms: u64, previous_unix_ms: u64 },
}

/// How windows are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// Samples kept per workload (at least the model's window).
    pub capacity: usize,
    /// A workload not heard from for this long is evicted.
    pub stale_after_ms: u64,
    /// How far ahead of the receiver's clock a sample may be stamped (clock skew between hosts).
    pub max_future_ms: u64,
}

/// One workload's recent past, as the model and the baseline see it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadWindow {
    pub workload: WorkloadId,
    /// Exactly the requested number of feature vectors, oldest first, left-padded.
    pub window: Vec<FeatureVector>,
    /// The baseline's expected usage for the next interval.
    pub baseline_usage: Usage,
    /// The baseline's slowdown: what the latest pressure stalls imply.
    pub baseline_slowdown: f64,
}

#[derive(Debug)]
struct Track {
    history: VecDeque<FeatureVector>,
    last_at_unix_ms: u64,
    last_received_ms: u64,
    baseline: FallbackPredictor,
    pressure: Pressure,
}

#[derive(Debug, Default)]
struct Host {
    workloads: BTreeMap<WorkloadId, Track>,
    /// A sample arrived since the host was last served.
    fresh: bool,
}

/// Every host's workloads and their windows.
#[derive(Debug)]
pub struct Windows {
    config: WindowConfig,
    hosts: BTreeMap<HostId, Host>,
}

impl Windows {
    pub fn new(config: WindowConfig) -> Windows {
        Windows { config: WindowConfig { capacity: config.capacity.max(1), ..config }, hosts: BTreeMap::new() }
    }

    /// Keeps at least `capacity` samples per workload from now on (a newly loaded model may
    /// look further back than the previous one).
    pub fn ensure_capacity(&mut self, capacity: usize) {
        self.config.capacity = self.config.capacity.max(capacity);
    }

    /// Records a (validated) sample received at `now_ms`.
    pub fn record(&mut self, sample: &TelemetrySample, now_ms: u64) -> Result<(), Refused> {
        if sample.at_unix_ms > now_ms.saturating_add(self.config.max_future_ms) {
            return Err(Refused::FromTheFuture {
                host: sample.host.clone(),
                workload: sample.workload.clone(),
                ahead_ms: sample.at_unix_ms - now_ms,
            });
        }
        let host = self.hosts.entry(sample.host.clone()).or_default();
        let track = host.workloads.entry(sample.workload.clone()).or_insert_with(|| Track {
            history: VecDeque::with_capacity(self.config.capacity),
            last_at_unix_ms: 0,
            last_received_ms: now_ms,
            baseline: FallbackPredictor::default(),
            pressure: sample.pressure,
        });
        if !track.history.is_empty() && sample.at_unix_ms <= track.last_at_unix_ms {
            return Err(Refused::OutOfOrder {
                host: sample.host.clone(),
                workload: sample.workload.clone(),
                at_unix_ms: sample.at_unix_ms,
                previous_unix_ms: track.last_at_unix_ms,
            });
        }
        while track.history.len() >= self.config.capacity {
            track.history.pop_front();
        }
        track.history.push_back(features(sample));
        track.last_at_unix_ms = sample.at_unix_ms;
        track.last_received_ms = now_ms;
        track.baseline.observe(&sample.usage);
        track.pressure = sample.pressure;
        host.fresh = true;
        Ok(())
    }

    /// Drops the workloads not heard from within `stale_after_ms` of `now_ms` (and hosts left
    /// without any); returns who was dropped.
    pub fn evict_stale(&mut self, now_ms: u64) -> Vec<(HostId, WorkloadId)> {
        let mut evicted = Vec::new();
        let stale_after = self.config.stale_after_ms;
        for (host_id, host) in &mut self.hosts {
            host.workloads.retain(|workload, track| {
                let keep = now_ms.saturating_sub(track.last_received_ms) <= stale_after;
                if !keep {
                    evicted.push((host_id.clone(), workload.clone()));
                }
                keep
            });
        }
        self.hosts.retain(|_, h| !h.workloads.is_empty());
        evicted
    }

    /// Hosts with a sample that no forecast has used yet.
    pub fn fresh_hosts(&self) -> Vec<HostId> {
        self.hosts.iter().filter(|(_, h)| h.fresh).map(|(id, _)| id.clone()).collect()
    }

    /// Every workload of `host` in workload order, each window exactly `length` long, and marks
    /// the host as served.
    pub fn take_host(&mut self, host: &HostId, length: usize) -> Vec<WorkloadWindow> {
        let Some(h) = self.hosts.get_mut(host) else { return Vec::new() };
        h.fresh = false;
        h.workloads
            .iter()
            .filter(|(_, t)| !t.history.is_empty())
            .map(|(id, t)| WorkloadWindow {
                workload: id.clone(),
                window: left_padded(&t.history, length),
                baseline_usage: t.baseline.predict(1),
                baseline_slowdown: slowdown_from_pressure(&t.pressure),
            })
            .collect()
    }

    /// Number of hosts and of workloads held.
    pub fn counts(&self) -> (usize, usize) {
        (self.hosts.len(), self.hosts.values().map(|h| h.workloads.len()).sum())
    }
}

/// The last `length` entries of `history`, the oldest repeated in front when there are fewer.
fn left_padded(history: &VecDeque<FeatureVector>, length: usize) -> Vec<FeatureVector> {
    let Some(oldest) = history.front() else { return Vec::new() };
    let have = history.len().min(length);
    let mut out = Vec::with_capacity(length);
    out.extend(std::iter::repeat_n(*oldest, length - have));
    out.extend(history.iter().skip(history.len() - have).copied());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use entente_protocol::{CounterSource, Counters, PsiSource, Scheduler};

    fn config() -> WindowConfig {
        WindowConfig { capacity: 4, stale_after_ms: 3000, max_future_ms: 1000 }
    }

    fn sample(host: &str, workload: &str, at: u64, cpu_millicores: f64) -> TelemetrySample {
        TelemetrySample {
            host: HostId::new(host).unwrap(),
            workload: WorkloadId::new(workload).unwrap(),
            at_unix_ms: at,
            interval_ms: 1000,
            usage: Usage { cpu_millicores, ..Usage::default() },
            pressure: Pressure {
                source: PsiSource::Cgroup,
                cpu_some: Some(50.0),
                cpu_full: None,
                memory_some: None,
                memory_full: None,
                io_some: None,
                io_full: None,
            },
            counters: Counters {
                source: CounterSource::Unavailable,
                instructions: None,
                cycles: None,
                llc_misses: None,
                branch_misses: None,
                task_clock_ms: None,
                context_switches: None,
                page_faults: None,
                cpu_migrations: None,
            },
            scheduler: Scheduler::default(),
        }
    }

    fn cpus(w: &WorkloadWindow) -> Vec<f32> {
        w.window.iter().map(|f| f[0]).collect()
    }

    #[test]
    fn a_short_history_is_left_padded_with_its_oldest_sample() {
        let mut windows = Windows::new(config());
        windows.record(&sample("h", "a", 1000, 1000.0), 1000).unwrap();
        windows.record(&sample("h", "a", 2000, 2000.0), 2000).unwrap();
        let got = windows.take_host(&HostId::new("h").unwrap(), 4);
        assert_eq!(got.len(), 1);
        assert_eq!(cpus(&got[0]), vec![1.0, 1.0, 1.0, 2.0]);
        assert_eq!(got[0].baseline_slowdown, 2.0, "50% cpu stall");
        assert_eq!(got[0].baseline_usage.cpu_millicores, 3000.0, "the baseline follows the trend");
    }

    #[test]
    fn the_ring_keeps_only_the_newest_samples() {
        let mut windows = Windows::new(config());
        for t in 1..=6u64 {
            windows.record(&sample("h", "a", t * 1000, t as f64 * 1000.0), t * 1000).unwrap();
        }
        let got = windows.take_host(&HostId::new("h").unwrap(), 4);
        assert_eq!(cpus(&got[0]), vec![3.0, 4.0, 5.0, 6.0]);
        let shorter = windows.take_host(&HostId::new("h").unwrap(), 2);
        assert_eq!(cpus(&shorter[0]), vec![5.0, 6.0]);
    }

    #[test]
    fn growing_the_capacity_keeps_more_from_then_on() {
        let mut windows = Windows::new(config());
        windows.ensure_capacity(6);
        for t in 1..=6u64 {
            windows.record(&sample("h", "a", t * 1000, t as f64 * 1000.0), t * 1000).unwrap();
        }
        let got = windows.take_host(&HostId::new("h").unwrap(), 6);
        assert_eq!(cpus(&got[0]), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn refuses_samples_from_the_future_and_out_of_order() {
        let mut windows = Windows::new(config());
        let err = windows.record(&sample("h", "a", 5000, 1.0), 3000).unwrap_err();
        assert!(matches!(err, Refused::FromTheFuture { ahead_ms: 2000, .. }), "{err}");
        windows.record(&sample("h", "a", 3500, 1.0), 3000).unwrap();
        let err = windows.record(&sample("h", "a", 3500, 1.0), 3100).unwrap_err();
        assert!(matches!(err, Refused::OutOfOrder { previous_unix_ms: 3500, .. }), "{err}");
        assert!(windows.record(&sample("h", "a", 2000, 1.0), 3100).is_err());
        // Refused samples leave the window as it was.
        assert_eq!(windows.take_host(&HostId::new("h").unwrap(), 2)[0].window.len(), 2);
        assert_eq!(windows.counts(), (1, 1));
    }

    #[test]
    fn only_hosts_with_new_samples_are_fresh() {
        let mut windows = Windows::new(config());
        windows.record(&sample("h1", "a", 1000, 1.0), 1000).unwrap();
        windows.record(&sample("h2", "a", 1000, 1.0), 1000).unwrap();
        assert_eq!(windows.fresh_hosts().len(), 2);
        windows.take_host(&HostId::new("h1").unwrap(), 4);
        assert_eq!(windows.fresh_hosts(), vec![HostId::new("h2").unwrap()]);
        windows.record(&sample("h1", "b", 2000, 1.0), 2000).unwrap();
        assert_eq!(windows.fresh_hosts().len(), 2);
    }

    #[test]
    fn workloads_that_stop_reporting_are_evicted() {
        let mut windows = Windows::new(config());
        windows.record(&sample("h1", "quiet", 1000, 1.0), 1000).unwrap();
        windows.record(&sample("h2", "quiet", 1000, 1.0), 1000).unwrap();
        windows.record(&sample("h1", "busy", 1000, 1.0), 1000).unwrap();
        windows.record(&sample("h1", "busy", 4000, 1.0), 4000).unwrap();
        assert!(windows.evict_stale(4000).is_empty(), "3000 ms is not yet stale");
        let evicted = windows.evict_stale(4001);
        assert_eq!(evicted.len(), 2);
        assert_eq!(windows.counts(), (1, 1));
        let left = windows.take_host(&HostId::new("h1").unwrap(), 1);
        assert_eq!(left[0].workload.as_str(), "busy");
    }
}
