//! SLO slack: how far a workload is from violating its objective, in [-1, 1].
//!
//! 1 means far inside the objective, 0 exactly at the bound, negative violating (-1 at twice the
//! bound or worse). The bid strategy spends more when slack is low. Pure: the PSI figures come
//! from the monitor and a `Slo::Metric` value from a scrape the caller did.

use entente_protocol::{Pressure, PsiResource, PsiScope, Slo};

/// Slack of `slo` given the latest pressure figures and, for metric SLOs, the latest scraped
/// value. `None` when the workload has no SLO or the figure it needs is missing.
pub fn slo_slack(slo: &Slo, pressure: &Pressure, metric_value: Option<f64>) -> Option<f64> {
    match slo {
        Slo::None => None,
        Slo::Psi { resource, scope, max_avg10_pct } => {
            let observed = match (resource, scope) {
                (PsiResource::Cpu, PsiScope::Some) => pressure.cpu_some,
                (PsiResource::Cpu, PsiScope::Full) => pressure.cpu_full,
                (PsiResource::Memory, PsiScope::Some) => pressure.memory_some,
                (PsiResource::Memory, PsiScope::Full) => pressure.memory_full,
                (PsiResource::Io, PsiScope::Some) => pressure.io_some,
                (PsiResource::Io, PsiScope::Full) => pressure.io_full,
            }?;
            relative_slack(*max_avg10_pct, observed, false)
        }
        Slo::Metric { target, higher_is_better, .. } => relative_slack(*target, metric_value?, *higher_is_better),
    }
}

/// `(bound - observed) / |bound|` (sign flipped when higher is better), clamped to [-1, 1].
/// A zero bound has no scale: exactly meeting it is slack 0, any miss -1, any margin 1.
pub fn relative_slack(bound: f64, observed: f64, higher_is_better: bool) -> Option<f64> {
    if !bound.is_finite() || !observed.is_finite() {
        return None;
    }
    let margin = if higher_is_better { observed - bound } else { bound - observed };
    let slack = if bound == 0.0 { margin.signum() * f64::from(u8::from(margin != 0.0)) } else { margin / bound.abs() };
    Some(slack.clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use entente_protocol::PsiSource;

    fn pressure(cpu_some: f64) -> Pressure {
        Pressure {
            source: PsiSource::Cgroup,
            cpu_some: Some(cpu_some),
            cpu_full: None,
            memory_some: Some(0.0),
            memory_full: Some(0.0),
            io_some: None,
            io_full: None,
        }
    }

    #[test]
    fn psi_slack_compares_the_chosen_figure_with_the_bound() {
        let slo = Slo::Psi { resource: PsiResource::Cpu, scope: PsiScope::Some, max_avg10_pct: 20.0 };
        assert_eq!(slo_slack(&slo, &pressure(5.0), None), Some(0.75));
        assert_eq!(slo_slack(&slo, &pressure(20.0), None), Some(0.0));
        assert_eq!(slo_slack(&slo, &pressure(30.0), None), Some(-0.5));
        assert_eq!(slo_slack(&slo, &pressure(90.0), None), Some(-1.0));
        let full = Slo::Psi { resource: PsiResource::Cpu, scope: PsiScope::Full, max_avg10_pct: 20.0 };
        assert_eq!(slo_slack(&full, &pressure(5.0), None), None, "missing figure gives no slack");
    }

    #[test]
    fn metric_slack_respects_direction() {
        let latency = Slo::Metric {
            url: "http://x/metrics".into(),
            metric: "p99_ms".into(),
            target: 10.0,
            higher_is_better: false,
        };
        assert_eq!(slo_slack(&latency, &pressure(0.0), Some(5.0)), Some(0.5));
        assert_eq!(slo_slack(&latency, &pressure(0.0), Some(15.0)), Some(-0.5));
        assert_eq!(slo_slack(&latency, &pressure(0.0), None), None);
        let throughput =
            Slo::Metric { url: "http://x/metrics".into(), metric: "rps".into(), target: 100.0, higher_is_better: true };
        assert_eq!(slo_slack(&throughput, &pressure(0.0), Some(50.0)), Some(-0.5));
        assert_eq!(slo_slack(&throughput, &pressure(0.0), Some(300.0)), Some(1.0));
    }

    #[test]
    fn zero_bound_and_garbage() {
        assert_eq!(relative_slack(0.0, 0.0, false), Some(0.0));
        assert_eq!(relative_slack(0.0, 1.0, false), Some(-1.0));
        assert_eq!(relative_slack(0.0, 1.0, true), Some(1.0));
        assert_eq!(relative_slack(10.0, f64::NAN, false), None);
        assert_eq!(slo_slack(&Slo::None, &pressure(50.0), None), None);
    }
}
