//! The model's features: one `TelemetrySample` becomes the 28 numbers the model was trained on.
//!
//! This file and the training script implement the same table, `predictor/MODEL_INTERFACE.md`;
//! a feature computed differently here than in training would silently skew every forecast, so
//! each transform has its own test. Missing figures (`null` in the sample) become 0.0 and the
//! presence flags say whether the group was measured at all. Pure: no I/O.

use entente_protocol::messages::telemetry::MAX_RATE;
use entente_protocol::{CounterSource, PsiSource, TelemetrySample, Usage};

/// Features per workload per interval (F).
pub const FEATURES: usize = 28;

/// Usage figures the model predicts (features 0–5, in the same units).
pub const USAGE_FIGURES: usize = 6;

/// The features in order, as the sidecar's `feature_names` must list them.
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "cpu_cores",
    "memory_log_mib",
    "disk_read_log_mibps",
    "disk_write_log_mibps",
    "net_rx_log_mibps",
    "net_tx_log_mibps",
    "psi_cpu_some",
    "psi_cpu_full",
    "psi_memory_some",
    "psi_memory_full",
    "psi_io_some",
    "psi_io_full",
    "psi_present",
    "task_clock_cores",
    "context_switches_log_k",
    "page_faults_log_k",
    "ipc",
    "llc_mpki",
    "hardware_counters_present",
    "run_delay_cores",
    "throttled_cores",
    "cpu_wait_share",
    "scheduler_present",
    "cpu_cap_cores",
    "cpu_quota_present",
    "cpu_headroom_cores",
    "cpu_demand_cores",
    "uncontended_cpu_ratio_log",
];

/// One workload's features for one interval.
pub type FeatureVector = [f32; FEATURES];

const MIB: f64 = 1024.0 * 1024.0;

/// `ln(1 + x / scale)`, for rates and sizes that span orders of magnitude.
fn log_scaled(x: f64, scale: f64) -> f64 {
    (x.max(0.0) / scale).ln_1p()
}

/// The inverse of [`log_scaled`], within what the wire accepts.
fn unlog_scaled(y: f64, scale: f64) -> f64 {
    (y.exp_m1() * scale).clamp(0.0, MAX_RATE)
}

fn or_zero(v: Option<f64>) -> f64 {
    v.filter(|x| x.is_finite()).unwrap_or(0.0)
}

/// The least cpu use the uncontended-ratio feature divides by, in cores: an idle workload's ratio
/// stays finite and says nothing.
const MIN_RATIO_CORES: f64 = 0.01;

/// `num / den` when both are present and `den > 0`, else 0.
fn ratio(num: Option<f64>, den: Option<f64>) -> f64 {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 && n.is_finite() && d.is_finite() => n / d,
        _ => 0.0,
    }
}

/// The features of one sample, exactly per the interface table.
pub fn features(sample: &TelemetrySample) -> FeatureVector {
    let u = &sample.usage;
    let p = &sample.pressure;
    let c = &sample.counters;
    let s = &sample.scheduler;
    // Waiting for a cpu that others hold: run delay less the workload's own quota throttling,
    // as a share of the cpu time it wanted.
    let cpu = u.cpu_millicores.max(0.0) / 1000.0;
    let contention_wait = (or_zero(s.run_delay_ms) - or_zero(s.throttled_ms)).max(0.0) / 1000.0;
    let wait_share = ratio(Some(contention_wait), Some(cpu + contention_wait));
    // What the workload would run alone: what it ran plus what it waited for others, up to its
    // cap. Over what it ran, that is the slowdown a purely cpu-bound workload would show; the
    // model corrects it for everything else. Without a cap (an older agent) it is uncapped.
    let cap = s.cpu_cap_millicores.filter(|c| c.is_finite() && *c > 0.0).map(|c| c / 1000.0);
    let ran = cpu.max(MIN_RATIO_CORES);
    let alone = cap.map_or(cpu + contention_wait, |cap| (cpu + contention_wait).min(cap));
    let uncontended_ratio = (alone.max(ran) / ran).ln();
    let values: [f64; FEATURES] = [
        u.cpu_millicores / 1000.0,
        log_scaled(u.memory_bytes, MIB),
        log_scaled(u.disk_read_bps, MIB),
        log_scaled(u.disk_write_bps, MIB),
        log_scaled(u.net_rx_bps, MIB),
        log_scaled(u.net_tx_bps, MIB),
        or_zero(p.cpu_some) / 100.0,
        or_zero(p.cpu_full) / 100.0,
        or_zero(p.memory_some) / 100.0,
        or_zero(p.memory_full) / 100.0,
        or_zero(p.io_some) / 100.0,
        or_zero(p.io_full) / 100.0,
        if p.source == PsiSource::Unavailable { 0.0 } else { 1.0 },
        or_zero(c.task_clock_ms) / 1000.0,
        log_scaled(or_zero(c.context_switches), 1000.0),
        log_scaled(or_zero(c.page_faults), 1000.0),
        ratio(c.instructions, c.cycles),
        ratio(c.llc_misses, c.instructions.map(|i| i / 1000.0)),
        if c.source == CounterSource::Hardware { 1.0 } else { 0.0 },
        or_zero(s.run_delay_ms) / 1000.0,
        or_zero(s.throttled_ms) / 1000.0,
        wait_share,
        if s.run_delay_ms.is_some() { 1.0 } else { 0.0 },
        cap.unwrap_or(0.0),
        if s.cpu_quota_millicores.is_some() { 1.0 } else { 0.0 },
        cap.map_or(0.0, |cap| cap - cpu),
        cpu + or_zero(s.run_delay_ms) / 1000.0,
        uncontended_ratio,
    ];
    values.map(|v| if v.is_finite() { v as f32 } else { 0.0 })
}

/// Predicted usage in the units of features 0–5, back in the wire's units. Non-finite or
/// negative predictions become zero (a forecast never claims negative use) and absurdly large
/// ones are capped where the wire's validation draws the line.
pub fn usage_from_features(predicted: &[f32; USAGE_FIGURES]) -> Usage {
    let v = predicted.map(|x| if x.is_finite() { f64::from(x) } else { 0.0 });
    Usage {
        cpu_millicores: (v[0] * 1000.0).clamp(0.0, MAX_RATE),
        memory_bytes: unlog_scaled(v[1], MIB),
        disk_read_bps: unlog_scaled(v[2], MIB),
        disk_write_bps: unlog_scaled(v[3], MIB),
        net_rx_bps: unlog_scaled(v[4], MIB),
        net_tx_bps: unlog_scaled(v[5], MIB),
    }
}

/// A workload's activity as an aggressor: CPU cores plus its disk and network rates (log MiB/s).
/// Memory is left out: it is a level that stays put, not activity that competes each interval.
pub fn activity(f: &FeatureVector) -> f64 {
    [0, 2, 3, 4, 5].iter().map(|&i| f64::from(f[i])).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use entente_protocol::{Counters, HostId, Pressure, Scheduler, WorkloadId};

    fn sample() -> TelemetrySample {
        TelemetrySample {
            host: HostId::new("h1").unwrap(),
            workload: WorkloadId::new("w1").unwrap(),
            at_unix_ms: 1_000,
            interval_ms: 1000,
            usage: Usage::default(),
            pressure: Pressure {
                source: PsiSource::Unavailable,
                cpu_some: None,
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

    fn close(a: f32, b: f64) -> bool {
        (f64::from(a) - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn an_empty_sample_is_all_zero() {
        assert_eq!(features(&sample()), [0.0; FEATURES]);
    }

    #[test]
    fn cpu_is_in_cores() {
        let mut s = sample();
        s.usage.cpu_millicores = 2500.0;
        assert!(close(features(&s)[0], 2.5));
    }

    #[test]
    fn sizes_and_rates_are_log_mib() {
        let mut s = sample();
        s.usage.memory_bytes = 3.0 * MIB;
        s.usage.disk_read_bps = 1.0 * MIB;
        s.usage.disk_write_bps = 7.0 * MIB;
        s.usage.net_rx_bps = 0.5 * MIB;
        s.usage.net_tx_bps = 1023.0 * MIB;
        let f = features(&s);
        assert!(close(f[1], 4f64.ln()));
        assert!(close(f[2], 2f64.ln()));
        assert!(close(f[3], 8f64.ln()));
        assert!(close(f[4], 1.5f64.ln()));
        assert!(close(f[5], 1024f64.ln()));
    }

    #[test]
    fn pressure_is_a_fraction_and_its_presence_is_flagged() {
        let mut s = sample();
        s.pressure = Pressure {
            source: PsiSource::Cgroup,
            cpu_some: Some(10.0),
            cpu_full: Some(5.0),
            memory_some: Some(20.0),
            memory_full: None,
            io_some: Some(100.0),
            io_full: Some(1.0),
        };
        let f = features(&s);
        let expected = [0.1, 0.05, 0.2, 0.0, 1.0, 0.01, 1.0];
        for (k, e) in expected.iter().enumerate() {
            assert!(close(f[6 + k], *e), "feature {} = {}, expected {e}", 6 + k, f[6 + k]);
        }
        s.pressure.source = PsiSource::Host;
        assert_eq!(features(&s)[12], 1.0);
        s.pressure.source = PsiSource::Unavailable;
        assert_eq!(features(&s)[12], 0.0);
    }

    #[test]
    fn software_counters_are_scaled() {
        let mut s = sample();
        s.counters.source = CounterSource::Software;
        s.counters.task_clock_ms = Some(1500.0);
        s.counters.context_switches = Some(3000.0);
        s.counters.page_faults = Some(999_000.0);
        let f = features(&s);
        assert!(close(f[13], 1.5));
        assert!(close(f[14], 4f64.ln()));
        assert!(close(f[15], 1000f64.ln()));
        assert_eq!(f[18], 0.0, "software counters are not hardware counters");
    }

    #[test]
    fn ipc_and_mpki_need_their_denominators() {
        let mut s = sample();
        s.counters.source = CounterSource::Hardware;
        s.counters.instructions = Some(2e9);
        s.counters.cycles = Some(1e9);
        s.counters.llc_misses = Some(4e6);
        let f = features(&s);
        assert!(close(f[16], 2.0));
        assert!(close(f[17], 2.0), "4e6 misses per 2e6 kilo-instructions");
        assert_eq!(f[18], 1.0);
        s.counters.cycles = Some(0.0);
        s.counters.instructions = None;
        let f = features(&s);
        assert_eq!(f[16], 0.0, "no ipc without cycles");
        assert_eq!(f[17], 0.0, "no mpki without instructions");
        s.counters.instructions = Some(0.0);
        s.counters.cycles = None;
        let f = features(&s);
        assert_eq!((f[16], f[17]), (0.0, 0.0));
    }

    #[test]
    fn scheduler_figures_separate_contention_from_throttling() {
        let mut s = sample();
        s.usage.cpu_millicores = 600.0;
        s.scheduler = Scheduler { run_delay_ms: Some(900.0), throttled_ms: Some(500.0), ..Scheduler::default() };
        let f = features(&s);
        assert!(close(f[19], 0.9));
        assert!(close(f[20], 0.5));
        // 0.4 cores of the wait is contention (0.5 was the quota), against 0.6 cores run.
        assert!(close(f[21], 0.4));
        assert_eq!(f[22], 1.0);
        // Throttling beyond the run delay (the two are read a moment apart) is no contention.
        s.scheduler.throttled_ms = Some(950.0);
        assert_eq!(features(&s)[21], 0.0);
        // Nothing run and nothing waited: no share, not a division by zero.
        s.usage.cpu_millicores = 0.0;
        s.scheduler = Scheduler { run_delay_ms: Some(0.0), throttled_ms: None, ..Scheduler::default() };
        assert_eq!(features(&s)[21], 0.0);
        assert_eq!(features(&s)[22], 1.0, "measured, and zero");
    }

    #[test]
    fn the_cap_bounds_what_a_workload_would_run_alone() {
        let mut s = sample();
        // Two threads under a one-core quota, running 0.6 cores beside a neighbour: they waited
        // 1.4 cores' worth, but alone they would run one core, not two.
        s.usage.cpu_millicores = 600.0;
        s.scheduler = Scheduler {
            run_delay_ms: Some(1400.0),
            throttled_ms: Some(0.0),
            cpu_quota_millicores: Some(1000.0),
            cpu_cap_millicores: Some(1000.0),
        };
        let f = features(&s);
        assert_eq!((f[23], f[24]), (1.0, 1.0));
        assert!(close(f[25], 0.4), "headroom: cap less use");
        assert!(close(f[26], 2.0), "demand: run plus waited");
        assert!(close(f[27], (1.0f64 / 0.6).ln()));
        // Without a quota the cap is the host's cpus: two cores, all of which it would get.
        s.scheduler.cpu_quota_millicores = None;
        s.scheduler.cpu_cap_millicores = Some(2000.0);
        let f = features(&s);
        assert_eq!((f[23], f[24]), (2.0, 0.0));
        assert!(close(f[27], (2.0f64 / 0.6).ln()));
        // A sample from an agent that sends no cap: the wanted cpu is not capped.
        s.scheduler.cpu_cap_millicores = None;
        let f = features(&s);
        assert_eq!((f[23], f[25]), (0.0, 0.0));
        assert!(close(f[27], (2.0f64 / 0.6).ln()));
        // Idle: no ratio from a division by nothing.
        s.usage.cpu_millicores = 0.0;
        s.scheduler = Scheduler::default();
        assert_eq!(features(&s)[27], 0.0);
    }

    #[test]
    fn usage_round_trips_through_the_features() {
        let mut s = sample();
        s.usage = Usage {
            cpu_millicores: 1234.0,
            memory_bytes: 5e8,
            disk_read_bps: 3e6,
            disk_write_bps: 0.0,
            net_rx_bps: 1e9,
            net_tx_bps: 42.0,
        };
        let f = features(&s);
        let back = usage_from_features(&[f[0], f[1], f[2], f[3], f[4], f[5]]);
        for (a, b) in [
            (back.cpu_millicores, s.usage.cpu_millicores),
            (back.memory_bytes, s.usage.memory_bytes),
            (back.disk_read_bps, s.usage.disk_read_bps),
            (back.disk_write_bps, s.usage.disk_write_bps),
            (back.net_rx_bps, s.usage.net_rx_bps),
            (back.net_tx_bps, s.usage.net_tx_bps),
        ] {
            assert!((a - b).abs() <= 1e-5 * b.max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn impossible_predictions_become_zero_usage() {
        let u = usage_from_features(&[-1.0, -3.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0]);
        assert_eq!(u.cpu_millicores, 0.0);
        assert_eq!(u.memory_bytes, 0.0);
        assert_eq!(u.disk_read_bps, 0.0);
        assert_eq!(u.disk_write_bps, 0.0);
        assert_eq!(u.net_rx_bps, 0.0);
        let huge = usage_from_features(&[1e30, 1e30, 1e4, 0.0, 0.0, 0.0]);
        assert_eq!((huge.cpu_millicores, huge.memory_bytes, huge.disk_read_bps), (MAX_RATE, MAX_RATE, MAX_RATE));
    }

    #[test]
    fn activity_counts_cpu_and_io_but_not_memory() {
        let mut f = [0.0; FEATURES];
        f[1] = 10.0;
        assert_eq!(activity(&f), 0.0);
        f[0] = 1.5;
        f[3] = 0.5;
        assert_eq!(activity(&f), 2.0);
    }
}
