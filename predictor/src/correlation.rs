//! The rolling correlation analysis that names the pairs of workloads that interfere often.
//!
//! One interval's interference matrix says who hurts whom right now; an operator (and a placement
//! policy) wants the pairs for which that keeps happening. For every host this keeps, per
//! workload, the last few intervals of its activity (CPU and I/O, see
//! [`crate::features::activity`]) and its forecast slowdown. A pair (aggressor, victim) is named
//! when, over the intervals both were present, the aggressor's activity correlates strongly with
//! the victim's slowdown (Pearson's r at or above a threshold, with enough observations, and both
//! series actually varying). Pure: the caller numbers the intervals.

use entente_protocol::{HostId, InterferingPair, WorkloadId};
use std::collections::{BTreeMap, VecDeque};

/// How the analysis decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CorrelationConfig {
    /// Intervals looked back over.
    pub window: u64,
    /// Joint observations a pair needs before it can be named.
    pub min_observations: usize,
    /// Pearson's r at or above which a pair is named.
    pub threshold: f64,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig { window: 60, min_observations: 10, threshold: 0.6 }
    }
}

/// One workload in one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub workload: WorkloadId,
    pub activity: f64,
    pub slowdown: f64,
}

#[derive(Debug, Clone, Copy)]
struct Point {
    tick: u64,
    activity: f64,
    slowdown: f64,
}

#[derive(Debug, Default)]
struct HostSeries {
    tick: u64,
    workloads: BTreeMap<WorkloadId, VecDeque<Point>>,
}

/// The rolling series of every host.
#[derive(Debug)]
pub struct Correlations {
    config: CorrelationConfig,
    hosts: BTreeMap<HostId, HostSeries>,
}

impl Correlations {
    pub fn new(config: CorrelationConfig) -> Correlations {
        Correlations { config: CorrelationConfig { window: config.window.max(2), ..config }, hosts: BTreeMap::new() }
    }

    /// Records one interval of `host`: every workload that was forecast in it.
    pub fn observe(&mut self, host: &HostId, observations: &[Observation]) {
        let series = self.hosts.entry(host.clone()).or_default();
        series.tick += 1;
        let tick = series.tick;
        let oldest = tick.saturating_sub(self.config.window - 1);
        for o in observations {
            if !(o.activity.is_finite() && o.slowdown.is_finite()) {
                continue;
            }
            let points = series.workloads.entry(o.workload.clone()).or_default();
            points.push_back(Point { tick, activity: o.activity, slowdown: o.slowdown });
        }
        for points in series.workloads.values_mut() {
            while points.front().is_some_and(|p| p.tick < oldest) {
                points.pop_front();
            }
        }
        series.workloads.retain(|_, points| !points.is_empty());
    }

    /// Forgets a workload that left its host.
    pub fn forget(&mut self, host: &HostId, workload: &WorkloadId) {
        if let Some(series) = self.hosts.get_mut(host) {
            series.workloads.remove(workload);
            if series.workloads.is_empty() {
                self.hosts.remove(host);
            }
        }
    }

    /// The pairs of `host` that interfere often, strongest first, at most `limit`.
    pub fn frequent_pairs(&self, host: &HostId, limit: usize) -> Vec<InterferingPair> {
        let Some(series) = self.hosts.get(host) else { return Vec::new() };
        let mut pairs = Vec::new();
        for (aggressor, a_points) in &series.workloads {
            for (victim, v_points) in &series.workloads {
                if aggressor == victim {
                    continue;
                }
                let (xs, ys) = aligned(a_points, v_points);
                if xs.len() < self.config.min_observations {
                    continue;
                }
                if let Some(r) = pearson(&xs, &ys) {
                    if r >= self.config.threshold {
                        pairs.push(InterferingPair { victim: victim.clone(), aggressor: aggressor.clone(), correlation: r });
                    }
                }
            }
        }
        pairs.sort_by(|a, b| b.correlation.total_cmp(&a.correlation));
        pairs.truncate(limit);
        pairs
    }
}

/// The aggressor's activity and the victim's slowdown at the ticks both were observed.
fn aligned(aggressor: &VecDeque<Point>, victim: &VecDeque<Point>) -> (Vec<f64>, Vec<f64>) {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let (mut a, mut v) = (aggressor.iter().peekable(), victim.iter().peekable());
    while let (Some(pa), Some(pv)) = (a.peek(), v.peek()) {
        match pa.tick.cmp(&pv.tick) {
            std::cmp::Ordering::Less => {
                a.next();
            }
            std::cmp::Ordering::Greater => {
                v.next();
            }
            std::cmp::Ordering::Equal => {
                xs.push(pa.activity);
                ys.push(pv.slowdown);
                a.next();
                v.next();
            }
        }
    }
    (xs, ys)
}

/// Pearson's correlation coefficient, or `None` when either series (nearly) does not vary: a
/// constant says nothing about co-movement.
pub fn pearson(xs: &[f64], ys: &[f64]) -> Option<f64> {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mean_x = xs[..n].iter().sum::<f64>() / nf;
    let mean_y = ys[..n].iter().sum::<f64>() / nf;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for k in 0..n {
        let dx = xs[k] - mean_x;
        let dy = ys[k] - mean_y;
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    // Relative to the values' size, so that float noise on a constant series is not "variation".
    let tiny = |s: f64, mean: f64| s <= nf * 1e-12 * mean.abs().max(1e-6).powi(2);
    if tiny(sxx, mean_x) || tiny(syy, mean_y) {
        return None;
    }
    let r = sxy / (sxx.sqrt() * syy.sqrt());
    r.is_finite().then(|| r.clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(workload: &str, activity: f64, slowdown: f64) -> Observation {
        Observation { workload: WorkloadId::new(workload).unwrap(), activity, slowdown }
    }

    #[test]
    fn pearson_of_known_series() {
        let xs = [1.0, 2.0, 3.0, 4.0];
        assert!((pearson(&xs, &[2.0, 4.0, 6.0, 8.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((pearson(&xs, &[8.0, 6.0, 4.0, 2.0]).unwrap() + 1.0).abs() < 1e-12);
        // x = 1,2,3 and y = 1,3,2: r = 0.5.
        assert!((pearson(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(pearson(&xs, &[1.5; 4]), None, "a constant victim says nothing");
        assert_eq!(pearson(&[1.0], &[1.0]), None);
    }

    #[test]
    fn names_the_aggressor_whose_activity_tracks_the_victims_slowdown() {
        let host = HostId::new("h").unwrap();
        let mut c = Correlations::new(CorrelationConfig { window: 30, min_observations: 10, threshold: 0.8 });
        for t in 0..20 {
            let burst = if t % 3 == 0 { 4.0 } else { 0.5 };
            // Noise: its activity wanders independently of the victim's slowdown.
            let noise = [0.3, 1.0, 0.2, 0.9, 0.5, 0.1, 0.8][t % 7];
            c.observe(&host, &[obs("batch", burst, 1.0), obs("web", 0.2, 1.0 + 0.1 * burst), obs("noise", noise, 1.0)]);
        }
        let pairs = c.frequent_pairs(&host, 100);
        assert_eq!(pairs.len(), 1, "{pairs:?}");
        assert_eq!((pairs[0].aggressor.as_str(), pairs[0].victim.as_str()), ("batch", "web"));
        assert!(pairs[0].correlation > 0.99);
        assert!(c.frequent_pairs(&host, 0).is_empty());
    }

    #[test]
    fn needs_enough_joint_observations_within_the_window() {
        let host = HostId::new("h").unwrap();
        let mut c = Correlations::new(CorrelationConfig { window: 6, min_observations: 5, threshold: 0.5 });
        for t in 0..4 {
            let x = f64::from(t);
            c.observe(&host, &[obs("a", x, 1.0), obs("v", 0.0, 1.0 + x)]);
        }
        assert!(c.frequent_pairs(&host, 10).is_empty(), "4 observations are not enough");
        let x = 4.0;
        c.observe(&host, &[obs("a", x, 1.0), obs("v", 0.0, 1.0 + x)]);
        assert_eq!(c.frequent_pairs(&host, 10).len(), 1);
        // Ticks without the victim age the pair's evidence out of the window.
        for _ in 0..3 {
            c.observe(&host, &[obs("a", 1.0, 1.0)]);
        }
        assert!(c.frequent_pairs(&host, 10).is_empty(), "only 3 joint observations remain in the window");
    }

    #[test]
    fn forgotten_workloads_are_no_longer_named() {
        let host = HostId::new("h").unwrap();
        let mut c = Correlations::new(CorrelationConfig { window: 20, min_observations: 3, threshold: 0.5 });
        for t in 0..5 {
            let x = f64::from(t);
            c.observe(&host, &[obs("a", x, 1.0), obs("v", 0.0, 1.0 + x)]);
        }
        assert_eq!(c.frequent_pairs(&host, 10).len(), 1);
        c.forget(&host, &WorkloadId::new("a").unwrap());
        assert!(c.frequent_pairs(&host, 10).is_empty());
    }
}
