//! From a workload's measurements, forecast, SLO slack and credits to a bid: an XOR of a few
//! bundles, always including "keep what I have".
//!
//! Requests: for each measured resource the need is the larger of current and predicted usage
//! (current + predicted growth), plus a margin that grows with the predicted slowdown, since a
//! workload that will be slowed by its neighbours needs headroom to absorb it. Every bundle is an
//! absolute allocation clamped between the spec's guarantee and limit.
//!
//! Values: payments are VCG, so the strategy bids its true value. A bundle's value is the
//! workload's willingness to pay this round times the weighted fraction of its need the bundle
//! covers, so a bundle that covers more is worth more and "keep" is worth what it already gives.
//! Willingness to pay is paced by income, not by savings: it is a few rounds of the workload's
//! refill ([`WorkloadSpec::refill_per_round`], which grows with priority), weighted by class, by
//! low SLO slack and by deadline pressure for batch work, and never more than a bounded share of
//! the balance, so no value exceeds the balance and a workload never spends everything on one
//! round. Pacing by income keeps prices sustainable: when willingness to pay was a share of the
//! balance, best-effort neighbours that never won kept full balances and so kept bidding high,
//! and a latency-critical workload holding cpu against them paid more each round in VCG prices
//! than it earned, until its capped bids lost everything it held (a fall to its guarantee some
//! thirty rounds after antagonists started, seen in the compose end-to-end run). Now what a
//! workload can outbid per round is proportional to what it earns per round.
//!
//! Trade-offs: an LC workload short of cpu offers to give up disk bandwidth it does not use for
//! it; a best-effort or relaxed batch workload offers to give up cpu in exchange for a delay.
//!
//! Three rules make the bid react to measured latency and predicted interference (they came out
//! of the colocation experiment, docs/EVALUATION.md):
//!
//! * **Censored demand.** A workload that uses nearly all the cpu it holds is held back by its
//!   allocation, so its usage understates its demand: it asks for [`CENSORED_GROWTH`] times what
//!   it holds rather than its usage plus a margin (which would grow it by a tenth per round).
//! * **Protective headroom.** A latency-critical workload is hurt by its neighbours' use of the
//!   host, not by its own cpu allocation, and the only thing it can buy in this market is an
//!   allocation; so when its SLO slack falls below [`COMFORT_SLACK`], or its predicted slowdown
//!   rises, it asks for cpu beyond what it uses, which the auction can only give by giving its
//!   neighbours less. Low slack raises the request step by step from what it holds (it keeps
//!   climbing while the objective is missed). Predicted slowdown does not drive it: the shipped
//!   model forecast slowdowns of 3 to 6 for every workload of the colocation experiment, alone
//!   or not, so it would hold the headroom all the time (docs/EVALUATION.md); it still widens
//!   the margin on the workload's own need, as before.
//!   The headroom counts in the bundle's value like the cpu it uses, and the bid offers a third
//!   and two thirds of it as well, since all of it may not fit next to the neighbours'
//!   guarantees.
//! * **Release.** A workload holding more cpu than its forecast needs offers to give half the
//!   excess back (a `release` bundle worth as much to it as keeping, since it covers the need),
//!   so the auction can hand it to a neighbour that values it; without it an allocation, once
//!   won, was never returned. Memory is not released this way: lowering a memory limit forces
//!   reclaim and may fail, while cpu can be taken back the next round.

use entente_protocol::messages::bid::MAX_STANDING_ROUNDS;
use entente_protocol::validate::{MAX_BUNDLES, MAX_CREDITS};
use entente_protocol::{
    Bid, Bundle, ForecastSource, HostId, Offer, Resource, ResourceVector, RoundId, Usage, WorkloadClass, WorkloadId,
    WorkloadSpec, MAX_AMOUNT,
};
use uuid::Uuid;

/// What the bid is based on for the next horizon.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub usage: Usage,
    /// Predicted slowdown versus running alone (1.0 = none).
    pub slowdown: f64,
    /// The predictor's model, or the agent's own fallback.
    pub source: ForecastSource,
}

/// Everything the strategy needs for one round. No I/O, no clock: elapsed time is passed in.
#[derive(Debug, Clone, PartialEq)]
pub struct BidInput<'a> {
    pub spec: &'a WorkloadSpec,
    /// The allocation the workload holds now.
    pub current: ResourceVector,
    /// The latest measured usage.
    pub usage: Usage,
    pub prediction: Prediction,
    /// SLO slack in [-1, 1] (see [`super::slack`]); `None` when there is no SLO or no figure.
    pub slack: Option<f64>,
    /// Credits the workload holds now.
    pub balance: f64,
    /// How long the workload has been running, in seconds (deadline pressure for batch work).
    pub elapsed_s: f64,
    /// The round length, in milliseconds: the unit a delay offer is expressed in.
    pub round_ms: u64,
}

/// The most of its balance a workload offers in one round, at full urgency.
pub const MAX_SPEND_FRACTION: f64 = 0.5;
/// Rounds of income a workload offers in one round at full urgency: it may outbid its income
/// while savings last (VCG payments are usually well below the value bid), but not for long.
pub const INCOME_ROUNDS: f64 = 4.0;
/// Headroom on top of the need even with no predicted slowdown.
pub const BASE_MARGIN: f64 = 0.10;
/// Extra headroom per unit of predicted slowdown above 1.0.
pub const SLOWDOWN_MARGIN: f64 = 0.5;
/// Slowdowns beyond this add no more margin (the limit caps the request anyway).
const MAX_MARGIN_SLOWDOWN: f64 = 4.0;
/// Share of the cpu a best-effort workload offers to give up for a delay.
const DELAY_CPU_SHARE: f64 = 0.5;
/// The longest delay offered, in rounds of work.
const MAX_DELAY_ROUNDS: f64 = 10.0;

/// Share of its cpu allocation a workload must use to count as held back by it.
pub const CENSORED_SHARE: f64 = 0.9;
/// What a held-back workload asks for, as a multiple of the cpu it holds.
pub const CENSORED_GROWTH: f64 = 1.5;
/// SLO slack below which a latency-critical workload buys protective cpu headroom.
pub const COMFORT_SLACK: f64 = 0.3;
/// Share of the cpu it holds beyond its forecast need that a workload offers back in one round.
pub const RELEASE_SHARE: f64 = 0.5;

/// Weights of each resource in how satisfied a workload is with an allocation.
const SATISFACTION_WEIGHTS: [(Resource, f64); 4] =
    [(Resource::Cpu, 0.5), (Resource::Memory, 0.3), (Resource::DiskBw, 0.1), (Resource::NetBw, 0.1)];

/// Converts a computed amount to a wire amount: NaN and negatives to 0, rounded up (a request
/// must not lose its margin to truncation), capped at [`MAX_AMOUNT`].
pub fn to_amount(x: f64) -> u64 {
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= MAX_AMOUNT as f64 {
        MAX_AMOUNT
    } else {
        (x.ceil() as u64).min(MAX_AMOUNT)
    }
}

/// Each resource of `v` clamped into `[guaranteed, limit]` (the limit wins if a malformed spec
/// has a guarantee above it).
pub fn clamp_to_spec(v: &ResourceVector, spec: &WorkloadSpec) -> ResourceVector {
    let (g, l) = (spec.guaranteed.as_array(), spec.limit.as_array());
    let mut a = v.as_array();
    for i in 0..a.len() {
        a[i] = a[i].max(g[i]).min(l[i]).min(MAX_AMOUNT);
    }
    ResourceVector::from_array(a)
}

fn finite_or(x: f64, default: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        default
    }
}

/// The margin fraction for a predicted slowdown: [`BASE_MARGIN`] plus [`SLOWDOWN_MARGIN`] per
/// unit of slowdown above 1.
pub fn margin_fraction(slowdown: f64) -> f64 {
    let excess = (finite_or(slowdown, 1.0) - 1.0).clamp(0.0, MAX_MARGIN_SLOWDOWN);
    BASE_MARGIN + SLOWDOWN_MARGIN * excess
}

/// Usage figures summed into the four resource dimensions they are measured in.
fn usage_by_resource(u: &Usage) -> [f64; 4] {
    let nn = |x: f64| finite_or(x, 0.0).max(0.0);
    [
        nn(u.cpu_millicores),
        nn(u.memory_bytes),
        nn(u.disk_read_bps) + nn(u.disk_write_bps),
        nn(u.net_rx_bps) + nn(u.net_tx_bps),
    ]
}

/// What the workload needs next horizon, before the margin: current usage plus predicted growth.
fn need_without_margin(input: &BidInput<'_>) -> [f64; 4] {
    let now = usage_by_resource(&input.usage);
    let predicted = usage_by_resource(&input.prediction.usage);
    let mut need: [f64; 4] = std::array::from_fn(|i| now[i] + (predicted[i] - now[i]).max(0.0));
    if is_cpu_censored(input) {
        need[0] = need[0].max(input.current.cpu as f64 * CENSORED_GROWTH);
    }
    need
}

/// Whether the workload uses nearly all the cpu it holds, so that its usage shows only what it
/// was allowed (see the module documentation).
pub fn is_cpu_censored(input: &BidInput<'_>) -> bool {
    let used = finite_or(input.usage.cpu_millicores, 0.0);
    input.current.cpu > 0 && used >= CENSORED_SHARE * input.current.cpu as f64
}

/// How much protective headroom a latency-critical workload buys: a share in [0, 1] of the cpu
/// between what it holds and its limit, 0 at [`COMFORT_SLACK`] or more, 1 at slack -1.
pub fn protection(input: &BidInput<'_>) -> f64 {
    if input.spec.class != WorkloadClass::LatencyCritical {
        return 0.0;
    }
    input
        .slack
        .filter(|s| s.is_finite())
        .map_or(0.0, |s| ((COMFORT_SLACK - s.clamp(-1.0, 1.0)) / (COMFORT_SLACK + 1.0)).clamp(0.0, 1.0))
}

/// The allocation the forecast asks for: need plus margin on the measured resources; the
/// resctrl resources, which the monitor cannot measure, stay as they are.
pub fn forecast_target(input: &BidInput<'_>) -> ResourceVector {
    let need = need_without_margin(input);
    let margin = 1.0 + margin_fraction(input.prediction.slowdown);
    let limit = input.spec.limit.cpu as f64;
    let share = protection(input);
    let own = need[0] * margin;
    let held = input.current.cpu as f64;
    let cpu = if share > 0.0 { own.max(held + (limit - held).max(0.0) * share) } else { own };
    let v = ResourceVector {
        cpu: to_amount(cpu),
        memory: to_amount(need[1] * margin),
        disk_bw: to_amount(need[2] * margin),
        net_bw: to_amount(need[3] * margin),
        llc: input.current.llc,
        mem_bw: input.current.mem_bw,
    };
    clamp_to_spec(&v, input.spec)
}

/// Deadline pressure of batch work in [0, 1]: none in the first half of its estimated run
/// time, rising to 1 at the estimate and beyond.
pub fn deadline_pressure(spec: &WorkloadSpec, elapsed_s: f64) -> f64 {
    match (spec.class, spec.estimated_execution_s) {
        (WorkloadClass::Batch, Some(estimate)) if estimate > 0.0 && estimate.is_finite() => {
            let progress = finite_or(elapsed_s, 0.0).max(0.0) / estimate;
            ((progress - 0.5) * 2.0).clamp(0.0, 1.0)
        }
        _ => 0.0,
    }
}

/// Credits the workload would pay this round for a bundle that meets its whole need.
pub fn willingness_to_pay(input: &BidInput<'_>) -> f64 {
    let spec = input.spec;
    let balance = finite_or(input.balance, 0.0).clamp(0.0, MAX_CREDITS);
    let class_weight = match spec.class {
        WorkloadClass::LatencyCritical => 1.0,
        WorkloadClass::Batch => 0.7,
        WorkloadClass::BestEffort => 0.4,
    };
    // Slack 1 -> 0 urgency, slack -1 -> 1; no SLO is neither relaxed nor urgent.
    let slo_urgency = input.slack.map_or(0.5, |s| (1.0 - finite_or(s, 0.0).clamp(-1.0, 1.0)) / 2.0);
    let urgency = slo_urgency.max(deadline_pressure(spec, input.elapsed_s));
    let intensity = class_weight * (0.3 + 0.7 * urgency);
    // Priority enters once, through the income (the refill is proportional to it).
    let income = finite_or(spec.refill_per_round(), 0.0).clamp(0.0, MAX_CREDITS);
    (income * INCOME_ROUNDS * intensity).min(balance * MAX_SPEND_FRACTION).clamp(0.0, balance)
}

/// Weighted fraction of the need that `alloc` covers, in [0, 1]; a resource with no need counts
/// as met.
fn satisfaction(alloc: &ResourceVector, need: &[f64; 4]) -> f64 {
    let mut covered = 0.0;
    for (i, (resource, weight)) in SATISFACTION_WEIGHTS.iter().enumerate() {
        let fraction = if need[i] <= 0.0 { 1.0 } else { (alloc.get(*resource) as f64 / need[i]).min(1.0) };
        covered += weight * fraction;
    }
    covered.clamp(0.0, 1.0)
}

/// The bundles of this round's bid: `keep` first, then the forecast request and any trade-off
/// that differs from the bundles before it. Between 1 and 4 bundles, ids unique.
pub fn plan_bundles(input: &BidInput<'_>) -> Vec<Bundle> {
    let spec = input.spec;
    let target = forecast_target(input);
    let protecting = protection(input) > 0.0;
    let need = {
        let n = need_without_margin(input);
        let margin = 1.0 + margin_fraction(input.prediction.slowdown);
        let mut need = n.map(|x| x * margin);
        // Protective headroom is needed as much as the cpu the workload uses: a bundle with less
        // of it is worth less, so the auction has a reason to give it.
        if protecting {
            need[0] = need[0].max(target.cpu as f64);
        }
        need
    };
    let wtp = willingness_to_pay(input);
    let value_of = |alloc: &ResourceVector| {
        let v = wtp * satisfaction(alloc, &need);
        if v.is_finite() {
            v.clamp(0.0, wtp)
        } else {
            0.0
        }
    };

    let keep = clamp_to_spec(&input.current, spec);
    let mut candidates: Vec<(&str, ResourceVector, Offer)> = vec![("keep", keep, Offer::Keep)];

    // Grow where the forecast needs more; shrinking is left to the trade-off offers, so that a
    // noisy low forecast cannot talk a workload out of what it holds.
    let grow = ResourceVector::from_array(std::array::from_fn(|i| keep.as_array()[i].max(target.as_array()[i])));
    candidates.push(("grow", clamp_to_spec(&grow, spec), Offer::Request));

    // Headroom may be more than the host can give once the neighbours' guarantees are kept:
    // offer a third and two thirds of the way too, so the auction can give what it has.
    if protecting && grow.cpu > keep.cpu {
        for (id, share) in [("protect-2-3", 2.0 / 3.0), ("protect-1-3", 1.0 / 3.0)] {
            let cpu = keep.cpu as f64 + (grow.cpu - keep.cpu) as f64 * share;
            candidates.push((id, clamp_to_spec(&grow.with_cpu(to_amount(cpu)), spec), Offer::Request));
        }
    }

    // Offer back half of the cpu held beyond the forecast's need (see the module documentation).
    if target.cpu < keep.cpu {
        let cpu = target.cpu as f64 + (keep.cpu - target.cpu) as f64 * (1.0 - RELEASE_SHARE);
        let release = clamp_to_spec(&keep.with_cpu(to_amount(cpu).min(keep.cpu)), spec);
        if release.cpu < keep.cpu {
            candidates.push(("release", release, Offer::Request));
        }
    }

    match spec.class {
        WorkloadClass::LatencyCritical => {
            // Give up unneeded disk bandwidth for the cpu the forecast asks for.
            let disk_needed = clamp_to_spec(&keep.with_disk(to_amount(need[2])), spec).disk_bw;
            if grow.cpu > keep.cpu && disk_needed < keep.disk_bw {
                let mut alloc = keep;
                alloc.cpu = grow.cpu;
                alloc.disk_bw = disk_needed;
                candidates.push((
                    "trade-disk-for-cpu",
                    clamp_to_spec(&alloc, spec),
                    Offer::TradeOff { give: Resource::DiskBw, take: Resource::Cpu },
                ));
            }
        }
        WorkloadClass::BestEffort | WorkloadClass::Batch => {
            let relaxed = spec.class == WorkloadClass::BestEffort || deadline_pressure(spec, input.elapsed_s) < 0.5;
            let reduced_cpu =
                clamp_to_spec(&keep.with_cpu(to_amount(keep.cpu as f64 * (1.0 - DELAY_CPU_SHARE))), spec).cpu;
            if relaxed && reduced_cpu < keep.cpu {
                // Work that needs `need` cpu but gets `reduced` runs need/reduced times longer.
                let cpu_need = need[0].max(keep.cpu as f64);
                let stretch = if reduced_cpu == 0 {
                    MAX_DELAY_ROUNDS
                } else {
                    (cpu_need / reduced_cpu as f64 - 1.0).clamp(0.0, MAX_DELAY_ROUNDS)
                };
                let delay_ms = to_amount(stretch * input.round_ms as f64);
                let mut alloc = keep;
                alloc.cpu = reduced_cpu;
                candidates.push(("delay", alloc, Offer::Delay { delay_ms }));
            }
        }
    }

    let mut bundles: Vec<Bundle> = Vec::with_capacity(candidates.len());
    for (id, alloc, offer) in candidates {
        // An alternative identical to an earlier one adds nothing to an XOR bid.
        if bundles.iter().any(|b| b.alloc == alloc) {
            continue;
        }
        bundles.push(Bundle { id: id.to_owned(), alloc, value: value_of(&alloc), offer });
    }
    bundles.truncate(MAX_BUNDLES);
    bundles
}

/// The bid for one round. The caller supplies the id (a fresh v4 uuid) to keep this pure.
/// `standing_rounds` is clamped into 1..=[`MAX_STANDING_ROUNDS`].
pub fn make_bid(input: &BidInput<'_>, bid_id: Uuid, round: RoundId, standing_rounds: u32) -> Bid {
    let host: HostId = input.spec.host.clone();
    let workload: WorkloadId = input.spec.workload.clone();
    Bid {
        bid_id,
        round,
        host,
        workload,
        bundles: plan_bundles(input),
        standing_rounds: standing_rounds.clamp(1, MAX_STANDING_ROUNDS),
        forecast: input.prediction.source.clone(),
    }
}

/// Small helpers to replace one dimension without the checked setter's error path: amounts
/// here are already within [`MAX_AMOUNT`].
trait With {
    fn with_cpu(self, cpu: u64) -> Self;
    fn with_disk(self, disk_bw: u64) -> Self;
}

impl With for ResourceVector {
    fn with_cpu(mut self, cpu: u64) -> Self {
        self.cpu = cpu.min(MAX_AMOUNT);
        self
    }
    fn with_disk(mut self, disk_bw: u64) -> Self {
        self.disk_bw = disk_bw.min(MAX_AMOUNT);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use entente_protocol::{Message, Slo, TenantId};
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;
    const MIB: f64 = (1u64 << 20) as f64;

    fn spec(class: WorkloadClass, priority: u8) -> WorkloadSpec {
        WorkloadSpec {
            host: HostId::new("host-1").unwrap(),
            workload: WorkloadId::new("redis").unwrap(),
            tenant: TenantId::new("shop").unwrap(),
            class,
            priority,
            slo: Slo::None,
            estimated_execution_s: (class == WorkloadClass::Batch).then_some(600.0),
            guaranteed: ResourceVector::new(500, GIB, 10_000_000, 10_000_000),
            limit: ResourceVector::new(4000, 8 * GIB, 200_000_000, 200_000_000),
            budget: 1000.0,
        }
    }

    fn input(spec: &WorkloadSpec, slack: Option<f64>, slowdown: f64) -> BidInput<'_> {
        let usage = Usage {
            cpu_millicores: 900.0,
            memory_bytes: 1500.0 * MIB,
            disk_read_bps: 1_000_000.0,
            disk_write_bps: 1_000_000.0,
            net_rx_bps: 5_000_000.0,
            net_tx_bps: 5_000_000.0,
        };
        BidInput {
            spec,
            current: ResourceVector::new(1000, 2 * GIB, 100_000_000, 50_000_000),
            usage,
            prediction: Prediction {
                usage: Usage { cpu_millicores: 1400.0, ..usage },
                slowdown,
                source: ForecastSource::Predictor { model_version: "m1".into() },
            },
            slack,
            balance: 500.0,
            elapsed_s: 60.0,
            round_ms: 1000,
        }
    }

    fn bundle<'b>(bundles: &'b [Bundle], id: &str) -> &'b Bundle {
        bundles.iter().find(|b| b.id == id).unwrap_or_else(|| panic!("no {id} bundle in {bundles:?}"))
    }

    #[test]
    fn lc_bid_keeps_grows_and_trades_disk_for_cpu() {
        let s = spec(WorkloadClass::LatencyCritical, 80);
        let bid = make_bid(&input(&s, Some(0.2), 1.2), Uuid::nil(), 7, 3);
        bid.validate().unwrap();
        bid.check_against(&s).unwrap();
        assert_eq!(bid.bundles[0].id, "keep");
        assert_eq!(bid.bundles[0].offer, Offer::Keep);
        let grow = bundle(&bid.bundles, "grow");
        // It uses 900 of the 1000 it holds, so it counts as held back: max(1400 predicted,
        // 1.5 * 1000) = 1500, margin 0.1 + 0.5 * 0.2 = 0.2 -> 1800 (above the small protective
        // headroom its slack of 0.2 asks for: 1000 + 3000 * 0.1 / 1.3).
        assert_eq!(grow.alloc.cpu, 1800);
        let trade = bundle(&bid.bundles, "trade-disk-for-cpu");
        assert_eq!(trade.offer, Offer::TradeOff { give: Resource::DiskBw, take: Resource::Cpu });
        assert_eq!(trade.alloc.cpu, 1800);
        assert!(trade.alloc.disk_bw < 100_000_000 && trade.alloc.disk_bw >= s.guaranteed.disk_bw);
        assert!(grow.value >= bid.bundles[0].value);
        assert_eq!(bid.standing_rounds, 3);
        assert_eq!(bid.forecast, ForecastSource::Predictor { model_version: "m1".into() });
    }

    #[test]
    fn a_held_back_workload_asks_for_half_as_much_again() {
        let s = spec(WorkloadClass::BestEffort, 10);
        let mut i = input(&s, None, 1.0);
        i.usage.cpu_millicores = 400.0;
        i.prediction.usage = i.usage;
        assert!(!is_cpu_censored(&i));
        assert_eq!(forecast_target(&i).cpu, 500, "usage 400 + 10 % is below the guarantee");
        i.usage.cpu_millicores = 990.0;
        i.prediction.usage.cpu_millicores = 990.0;
        assert!(is_cpu_censored(&i));
        // max(990, 1000 * 1.5) plus the 10 % base margin.
        assert_eq!(forecast_target(&i).cpu, to_amount(1000.0 * CENSORED_GROWTH * (1.0 + BASE_MARGIN)));
    }

    #[test]
    fn low_slack_buys_headroom_that_climbs_while_the_slo_is_missed() {
        let s = spec(WorkloadClass::LatencyCritical, 90);
        let mut i = input(&s, Some(0.8), 1.0);
        i.usage.cpu_millicores = 300.0;
        i.prediction.usage.cpu_millicores = 300.0;
        assert_eq!(protection(&i), 0.0);
        assert_eq!(forecast_target(&i).cpu, 500, "comfortable: only its own need (the guarantee)");
        i.slack = Some(-1.0);
        assert_eq!(protection(&i), 1.0);
        assert_eq!(forecast_target(&i).cpu, s.limit.cpu, "twice over the bound: everything it may hold");
        i.slack = Some(-0.3);
        // From the 1000 it holds, (0.3 + 0.3) / 1.3 of the way to the 4000 limit.
        let first = forecast_target(&i).cpu;
        assert_eq!(first, to_amount(1000.0 + 3000.0 * 0.6 / 1.3));
        i.current.cpu = first;
        assert!(forecast_target(&i).cpu > first, "missing again asks for more again");
        assert_eq!(protection(&input(&spec(WorkloadClass::BestEffort, 90), Some(-1.0), 3.0)), 0.0);
        // A high predicted slowdown alone buys no headroom, only the margin on its own need.
        i.slack = Some(0.9);
        i.prediction.slowdown = 5.0;
        assert_eq!(protection(&i), 0.0);
        assert_eq!(forecast_target(&i).cpu, to_amount(300.0 * (1.0 + margin_fraction(5.0))));
    }

    #[test]
    fn headroom_is_offered_in_steps_worth_more_the_more_they_give() {
        let s = spec(WorkloadClass::LatencyCritical, 90);
        let mut i = input(&s, Some(-1.0), 1.0);
        i.usage.cpu_millicores = 300.0;
        i.prediction.usage.cpu_millicores = 300.0;
        let bundles = plan_bundles(&i);
        let (keep, third, two_thirds, grow) = (
            bundle(&bundles, "keep"),
            bundle(&bundles, "protect-1-3"),
            bundle(&bundles, "protect-2-3"),
            bundle(&bundles, "grow"),
        );
        assert_eq!((third.alloc.cpu, two_thirds.alloc.cpu, grow.alloc.cpu), (2000, 3000, 4000));
        assert!(keep.value < third.value && third.value < two_thirds.value && two_thirds.value < grow.value);
        // Without an SLO miss or a predicted slowdown there is no ladder.
        i.slack = Some(0.9);
        assert!(!plan_bundles(&i).iter().any(|b| b.id.starts_with("protect")));
    }

    #[test]
    fn cpu_held_beyond_the_need_is_offered_back_half_at_a_time() {
        let s = spec(WorkloadClass::LatencyCritical, 90);
        let mut i = input(&s, Some(0.8), 1.0);
        i.usage.cpu_millicores = 300.0;
        i.prediction.usage.cpu_millicores = 300.0;
        i.current.cpu = 3500;
        let bundles = plan_bundles(&i);
        let release = bundle(&bundles, "release");
        assert_eq!(release.alloc.cpu, 2000, "halfway from 3500 to the 500 it needs");
        assert_eq!(release.alloc.memory, i.current.memory, "memory is not released");
        assert_eq!(release.value, bundle(&bundles, "keep").value, "worth as much as keeping: it covers the need");
        i.current.cpu = 500;
        assert!(!plan_bundles(&i).iter().any(|b| b.id == "release"), "nothing to give back");
    }

    #[test]
    fn lc_with_negative_slack_bids_more() {
        let s = spec(WorkloadClass::LatencyCritical, 50);
        let hurting = plan_bundles(&input(&s, Some(-0.5), 1.0));
        let relaxed = plan_bundles(&input(&s, Some(0.5), 1.0));
        assert!(bundle(&hurting, "grow").value > bundle(&relaxed, "grow").value);
        assert!(bundle(&hurting, "keep").value > bundle(&relaxed, "keep").value);
    }

    #[test]
    fn higher_slowdown_gives_a_larger_margin() {
        let s = spec(WorkloadClass::LatencyCritical, 50);
        let calm = bundle(&plan_bundles(&input(&s, None, 1.0)), "grow").alloc;
        let contended = bundle(&plan_bundles(&input(&s, None, 2.0)), "grow").alloc;
        assert!(contended.cpu > calm.cpu, "{contended:?} vs {calm:?}");
        assert!(contended.memory > calm.memory);
        assert!(margin_fraction(1.5) > margin_fraction(1.1));
        assert_eq!(margin_fraction(f64::NAN), BASE_MARGIN);
    }

    #[test]
    fn best_effort_offers_cpu_for_a_delay() {
        let s = spec(WorkloadClass::BestEffort, 10);
        let bundles = plan_bundles(&input(&s, None, 1.0));
        let delay = bundle(&bundles, "delay");
        let Offer::Delay { delay_ms } = delay.offer else { panic!("{delay:?}") };
        assert!(delay_ms > 0);
        assert_eq!(delay.alloc.cpu, 500);
        assert!(delay.value < bundle(&bundles, "keep").value);
    }

    #[test]
    fn batch_near_its_deadline_stops_offering_delays_and_bids_more() {
        let s = spec(WorkloadClass::Batch, 50);
        let early = input(&s, None, 1.0);
        let mut late = early.clone();
        late.elapsed_s = 590.0;
        assert!(plan_bundles(&early).iter().any(|b| b.id == "delay"));
        assert!(!plan_bundles(&late).iter().any(|b| b.id == "delay"));
        assert!(willingness_to_pay(&late) > willingness_to_pay(&early));
    }

    #[test]
    fn willingness_to_pay_follows_income_not_savings() {
        let s = spec(WorkloadClass::BestEffort, 20);
        let mut rich = input(&s, None, 1.0);
        rich.balance = s.budget;
        let mut saving = rich.clone();
        saving.balance = s.budget / 2.0;
        assert_eq!(willingness_to_pay(&rich), willingness_to_pay(&saving), "savings do not raise the bid");
        let mut poor = rich.clone();
        poor.balance = 1.0;
        assert!(willingness_to_pay(&poor) <= poor.balance * MAX_SPEND_FRACTION, "but a low balance caps it");
        let higher = spec(WorkloadClass::BestEffort, 40);
        assert!(willingness_to_pay(&input(&higher, None, 1.0)) > willingness_to_pay(&input(&s, None, 1.0)));
    }

    #[test]
    fn a_latency_critical_workload_can_afford_to_hold_cpu_against_best_effort_neighbours() {
        // A VCG payment is the value the others lose, so it is at most the sum of what they bid.
        // Four best-effort neighbours (priority 20) on full balances must bid, in all, less than
        // a priority-90 service earns per round, or holding its cpu against them drains it.
        let be = spec(WorkloadClass::BestEffort, 20);
        let mut neighbour = input(&be, None, 1.0);
        neighbour.balance = be.budget;
        let lc = spec(WorkloadClass::LatencyCritical, 90);
        assert!(4.0 * willingness_to_pay(&neighbour) < lc.refill_per_round());
        // And even relaxed, the service outbids any one of them.
        let relaxed = input(&lc, Some(1.0), 1.0);
        assert!(willingness_to_pay(&relaxed) > willingness_to_pay(&neighbour));
    }

    #[test]
    fn requests_are_clamped_to_the_spec() {
        let s = spec(WorkloadClass::LatencyCritical, 100);
        let mut i = input(&s, Some(-1.0), 50.0);
        i.prediction.usage.cpu_millicores = 1e30;
        i.current = ResourceVector::ZERO;
        let bid = make_bid(&i, Uuid::nil(), 1, 0);
        bid.validate().unwrap();
        bid.check_against(&s).unwrap();
        assert_eq!(bundle(&bid.bundles, "grow").alloc.cpu, s.limit.cpu);
        assert_eq!(bundle(&bid.bundles, "keep").alloc, s.guaranteed);
        assert_eq!(bid.standing_rounds, 1);
    }

    #[test]
    fn an_empty_balance_bids_zero() {
        let s = spec(WorkloadClass::LatencyCritical, 100);
        let mut i = input(&s, Some(-1.0), 1.0);
        i.balance = 0.0;
        assert!(plan_bundles(&i).iter().all(|b| b.value == 0.0));
        i.balance = f64::NAN;
        assert!(plan_bundles(&i).iter().all(|b| b.value == 0.0));
    }

    #[test]
    fn amounts_convert_safely() {
        assert_eq!(to_amount(f64::NAN), 0);
        assert_eq!(to_amount(-5.0), 0);
        assert_eq!(to_amount(f64::INFINITY), MAX_AMOUNT);
        assert_eq!(to_amount(1e300), MAX_AMOUNT);
        assert_eq!(to_amount(1.2), 2);
    }

    fn arb_usage() -> impl Strategy<Value = Usage> {
        let f = || prop_oneof![4 => 0.0f64..1e10, 1 => Just(f64::NAN), 1 => Just(f64::INFINITY), 1 => Just(-1.0)];
        (f(), f(), f(), f(), f(), f()).prop_map(|(a, b, c, d, e, g)| Usage {
            cpu_millicores: a,
            memory_bytes: b,
            disk_read_bps: c,
            disk_write_bps: d,
            net_rx_bps: e,
            net_tx_bps: g,
        })
    }

    fn arb_vector() -> impl Strategy<Value = ResourceVector> {
        proptest::array::uniform6(prop_oneof![0u64..100_000, 0u64..=MAX_AMOUNT]).prop_map(ResourceVector::from_array)
    }

    proptest! {
        #[test]
        fn every_bid_is_valid_within_spec_and_balance(
            class in prop_oneof![Just(WorkloadClass::LatencyCritical), Just(WorkloadClass::BestEffort), Just(WorkloadClass::Batch)],
            priority in 1u8..=100,
            a in arb_vector(),
            b in arb_vector(),
            current in arb_vector(),
            usage in arb_usage(),
            predicted in arb_usage(),
            slowdown in prop_oneof![0.0f64..10.0, Just(f64::NAN), Just(1e9)],
            slack in proptest::option::of(-2.0f64..2.0),
            balance in prop_oneof![0.0f64..1e12, Just(-1.0), Just(f64::NAN)],
            elapsed_s in 0.0f64..2000.0,
            round_ms in 1u64..10_000,
            fallback in any::<bool>(),
        ) {
            let mut s = spec(class, priority);
            let (ga, la) = (a.as_array(), b.as_array());
            s.guaranteed = ResourceVector::from_array(std::array::from_fn(|i| ga[i].min(la[i])));
            s.limit = ResourceVector::from_array(std::array::from_fn(|i| ga[i].max(la[i])));
            let source = if fallback { ForecastSource::Fallback } else { ForecastSource::Predictor { model_version: "v2".into() } };
            let i = BidInput {
                spec: &s, current, usage,
                prediction: Prediction { usage: predicted, slowdown, source },
                slack, balance, elapsed_s, round_ms,
            };
            let bid = make_bid(&i, Uuid::from_u128(42), 3, 2);
            prop_assert!(bid.validate().is_ok(), "{:?}", bid.validate());
            prop_assert!(bid.check_against(&s).is_ok(), "{:?}", bid.check_against(&s));
            prop_assert!(!bid.bundles.is_empty() && bid.bundles.len() <= 6);
            prop_assert_eq!(&bid.bundles[0].id, "keep");
            let cap = if balance.is_finite() { balance.max(0.0) } else { 0.0 };
            for bundle in &bid.bundles {
                prop_assert!(bundle.value.is_finite() && bundle.value >= 0.0 && bundle.value <= cap);
            }
        }
    }
}
