//! Per-host and per-round clearing times on synthetic hosts (see `clearing::synthetic`), as a
//! distribution (median, p99, max) rather than criterion's mean: the targets are about the tail.
//!
//! `cargo run --release -p entente-arbiter --example host_timings -- [hosts] [round_hosts] [time_limit_ms] [relative_gap] [allocation] [warm]`
//!
//! Without a time limit (`-` or nothing) and without a relative gap (0, the default) every solve
//! runs to a proof of optimality; with a gap, each solve stops once proven within it. The time
//! limit may be fractional (`0.2` is 200 µs). With `allocation` as the fifth argument only the
//! allocations are timed, not the VCG payments. With `warm` as the sixth, each host is cleared
//! once untimed just before its timed clearing, so its input is in cache (the round loop reads
//! a host's bids just after decoding them): the difference to the default is what reading the
//! input cold costs.

use std::time::Instant;

use entente_arbiter::clearing::{clear_host_within, clear_round_within, ClearingOptions, SyntheticHost};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let hosts: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let round_hosts: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let time_limit =
        args.next().and_then(|a| a.parse::<f64>().ok()).map(|ms| std::time::Duration::from_secs_f64(ms / 1000.0));
    let relative_gap: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0.0);
    let with_payments = args.next().as_deref() != Some("allocation");
    let warm = args.next().as_deref() == Some("warm");
    let shape = SyntheticHost::default();
    let instances: Vec<_> = (0..hosts).map(|seed| shape.generate(seed)).collect();
    println!(
        "synthetic hosts: {} workloads x {} bundles x 4 resources, oversubscription {}, time limit per solve {:?}, relative gap {}, input {}",
        shape.workloads, shape.bundles, shape.oversubscription, time_limit, relative_gap, if warm { "warm" } else { "cold" }
    );
    for payments in [false, true].into_iter().filter(|&p| with_payments || !p) {
        let options = ClearingOptions { time_limit, payments };
        let mut times = Vec::with_capacity(instances.len());
        let (mut optimal, mut winners) = (0, 0usize);
        let mut worst_gap = 0.0f64;
        let mut welfare = 0.0;
        for host in &instances {
            if warm {
                std::hint::black_box(clear_host_within(host, &options, relative_gap).expect("synthetic hosts are valid"));
            }
            let started = Instant::now();
            let outcome = clear_host_within(host, &options, relative_gap).expect("synthetic hosts are valid");
            times.push(started.elapsed().as_secs_f64() * 1e6);
            optimal += usize::from(outcome.optimal);
            worst_gap = worst_gap.max(outcome.welfare_bound / outcome.welfare.max(1e-300) - 1.0);
            winners += outcome.workloads.iter().filter(|w| w.bundle.is_some()).count();
            welfare += outcome.welfare;
        }
        times.sort_by(f64::total_cmp);
        println!(
            "per host, {:<13} n={} median={:.1}us p99={:.1}us max={:.1}us mean winners={:.1}/{} optimal={}/{} worst proven gap={:.2e} mean welfare={:.6}",
            if payments { "with VCG:" } else { "without VCG:" },
            times.len(),
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1],
            winners as f64 / instances.len() as f64,
            shape.workloads,
            optimal,
            instances.len(),
            worst_gap,
            welfare / instances.len() as f64
        );
    }
    let round: Vec<_> = (0..round_hosts).map(|seed| shape.generate(1_000_000 + seed)).collect();
    for payments in [false, true].into_iter().filter(|&p| round_hosts > 0 && (with_payments || !p)) {
        let options = ClearingOptions { time_limit, payments };
        let started = Instant::now();
        let outcomes = clear_round_within(&round, &[], &options, relative_gap);
        let elapsed = started.elapsed().as_secs_f64();
        let optimal = outcomes.iter().filter(|o| o.as_ref().is_ok_and(|o| o.optimal)).count();
        println!(
            "round of {} hosts on {} threads, {:<13} {:.3}s (optimal {}/{})",
            round.len(),
            rayon::current_num_threads(),
            if payments { "with VCG:" } else { "without VCG:" },
            elapsed,
            optimal,
            round.len()
        );
    }
}
