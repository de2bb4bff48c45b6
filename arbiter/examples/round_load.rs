//! Load generator for the arbiter cluster: thousands of simulated hosts bidding every round over
//! real NATS, measuring how many rounds the cluster decides per second and how long after each
//! round's deadline its decisions arrive, and how long after a host's last bid of a round its
//! decision arrives (hosts whose workloads all bid close before the deadline).
//!
//! With `--telemetry` every simulated workload also publishes a telemetry sample each round, as
//! an agent does every interval, so a running `entente-predictor` forecasts for every host; the
//! generator then counts the forecasts that come back and how old they are on arrival
//! (`scripts/scale-run.sh` uses this to measure the whole system as hosts are added).
//!
//! Run by `scripts/bench-rounds.sh`, which starts nats-server and three release arbiters first:
//!
//! ```text
//! cargo run --release -p entente-arbiter --example round_load -- \
//!     --nats nats://127.0.0.1:4222 --hosts 1000 --workloads 20 --rounds 30
//! ```

use clap::Parser;
use entente_protocol::bus::{Bus, BusConfig, BusError};
use entente_protocol::*;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    #[arg(long, default_value_t = 20)]
    workloads: usize,
    /// Rounds to measure, after registration.
    #[arg(long, default_value_t = 30)]
    rounds: u64,
    /// Also publish one telemetry sample per workload and round, and measure the forecasts.
    #[arg(long)]
    telemetry: bool,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn host(h: usize) -> HostId {
    HostId::new(format!("sim-{h:05}")).unwrap()
}

fn spec(h: usize, w: usize) -> WorkloadSpec {
    WorkloadSpec {
        host: host(h),
        workload: WorkloadId::new(format!("w{w:02}")).unwrap(),
        tenant: TenantId::new(format!("t{}", w % 4)).unwrap(),
        class: if w % 5 == 0 { WorkloadClass::LatencyCritical } else { WorkloadClass::BestEffort },
        priority: 10 + (w as u8 * 4) % 90,
        slo: Slo::None,
        estimated_execution_s: None,
        guaranteed: ResourceVector::new(100, 128 << 20, 1 << 20, 1 << 20),
        limit: ResourceVector::new(4_000, 8 << 30, 100 << 20, 100 << 20),
        budget: 1_000.0,
    }
}

fn bid(h: usize, w: usize, round: RoundId) -> Bid {
    let s = spec(h, w);
    let step = ((round as usize + h * 7 + w * 13) % 6) as u64;
    let grow = ResourceVector::new(300 + 150 * step, (256 + 64 * step) << 20, (4 + step) << 20, (4 + step) << 20);
    let trade = ResourceVector::new(400 + 150 * step, (256 + 64 * step) << 20, 1 << 20, (4 + step) << 20);
    Bid {
        bid_id: uuid::Uuid::new_v4(),
        round,
        host: s.host,
        workload: s.workload,
        bundles: vec![
            Bundle { id: "keep".into(), alloc: s.guaranteed, value: 0.0, offer: Offer::Keep },
            Bundle { id: "grow".into(), alloc: grow, value: 2.0 + (w % 7) as f64 + step as f64, offer: Offer::Request },
            Bundle {
                id: "trade".into(),
                alloc: trade,
                value: 1.5 + (w % 5) as f64 + step as f64,
                offer: Offer::TradeOff { give: Resource::DiskBw, take: Resource::Cpu },
            },
        ],
        standing_rounds: 1,
        forecast: ForecastSource::Fallback,
    }
}

/// A plausible sample for workload `w` of host `h` in `round`: usage that moves with the round so
/// the predictor's windows are not constant.
fn telemetry(h: usize, w: usize, round: RoundId) -> TelemetrySample {
    let phase = ((round as usize + h * 3 + w * 5) % 10) as f64 / 10.0;
    TelemetrySample {
        host: host(h),
        workload: WorkloadId::new(format!("w{w:02}")).unwrap(),
        at_unix_ms: now_ms(),
        interval_ms: 1000,
        usage: Usage {
            cpu_millicores: 200.0 + 600.0 * phase,
            memory_bytes: (256.0 + 128.0 * phase) * 1048576.0,
            disk_read_bps: 1e6 * phase,
            disk_write_bps: 5e5,
            net_rx_bps: 2e6,
            net_tx_bps: 1e6 * phase,
        },
        pressure: Pressure {
            source: PsiSource::Cgroup,
            cpu_some: Some(10.0 * phase),
            cpu_full: Some(2.0 * phase),
            memory_some: Some(0.0),
            memory_full: Some(0.0),
            io_some: Some(1.0),
            io_full: Some(0.5),
        },
        counters: Counters {
            source: CounterSource::Software,
            instructions: None,
            cycles: None,
            llc_misses: None,
            branch_misses: None,
            task_clock_ms: Some(200.0 + 600.0 * phase),
            context_switches: Some(500.0),
            page_faults: Some(10.0),
            cpu_migrations: Some(5.0),
        },
        scheduler: Scheduler {
            run_delay_ms: Some(40.0),
            throttled_ms: Some(0.0),
            cpu_quota_millicores: None,
            cpu_cap_millicores: Some(2000.0),
        },
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<(), BusError> {
    let args = Args::parse();
    let bus = Bus::connect(&BusConfig { url: args.nats.clone(), name: "round-load".into(), ..Default::default() }).await?;

    // Registration, many requests in flight at once; retried until a leader answers.
    let started = Instant::now();
    let capacity = ResourceVector::new(16_000, 64 << 30, 1 << 30, 1 << 30);
    let hosts = futures::stream::iter(0..args.hosts)
        .map(|h| {
            let bus = bus.clone();
            async move {
                let registration = HostRegistration {
                    host: host(h),
                    capacity,
                    enforces: vec![Resource::Cpu, Resource::Memory, Resource::DiskBw],
                    backend: "simulated".into(),
                    agent_version: "load".into(),
                };
                loop {
                    match bus.register_host(&registration).await {
                        Ok(RegistrationReply::Accepted) => break,
                        Ok(refused) => panic!("host refused: {refused:?}"),
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
                for w in 0..args.workloads {
                    loop {
                        match bus.register_workload(&spec(h, w)).await {
                            Ok(RegistrationReply::Accepted) => break,
                            Ok(refused) => panic!("workload refused: {refused:?}"),
                            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                        }
                    }
                }
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>();
    hosts.await;
    eprintln!(
        "registered {} hosts x {} workloads in {:.1} s",
        args.hosts,
        args.workloads,
        started.elapsed().as_secs_f64()
    );

    // Decisions arrive on the stream's subjects as plain NATS messages too.
    let mut decisions = bus.client().subscribe(bus.subjects().decisions_all()).await.map_err(|e| BusError::Subscribe {
        subject: "decisions".into(),
        reason: e.to_string(),
    })?;
    let mut rounds = bus.subscribe::<RoundAnnouncement>(bus.subjects().round()).await?;
    let mut forecasts = bus.subscribe::<Forecast>(bus.subjects().forecast_all()).await?;
    let mut forecast_ages: Vec<f64> = Vec::new();
    let mut forecast_hosts: std::collections::HashSet<String> = Default::default();
    let telemetry_sent = Arc::new(AtomicU64::new(0));
    let measure_start_unix_ms = Arc::new(AtomicU64::new(0));
    let expected = args.hosts;
    let mut deadlines: BTreeMap<RoundId, u64> = BTreeMap::new();
    let mut arrivals: BTreeMap<RoundId, Vec<u64>> = BTreeMap::new();
    let mut first_round = None;
    let mut measure_started = None;
    // Bids go out from their own task, so decisions are timestamped as they arrive, even while
    // a round's bids are still being sent (hosts whose workloads all bid can close early).
    let bids_sent = Arc::new(AtomicU64::new(0));
    let last_bid_at: Arc<Mutex<HashMap<(RoundId, String), u64>>> = Arc::default();
    let mut bid_to_decision = Vec::new();
    loop {
        tokio::select! {
            Some(r) = rounds.next() => {
                let Ok(round) = r.message else { continue };
                let first = *first_round.get_or_insert(round.round);
                if round.round >= first + args.rounds {
                    continue;
                }
                measure_started.get_or_insert_with(Instant::now);
                let _ = measure_start_unix_ms.compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
                if args.telemetry {
                    let (bus, sent) = (bus.clone(), Arc::clone(&telemetry_sent));
                    let (hosts, workloads, r) = (args.hosts, args.workloads, round.round);
                    tokio::spawn(async move {
                        for h in 0..hosts {
                            for w in 0..workloads {
                                if bus.publish_telemetry(&telemetry(h, w, r)).await.is_err() {
                                    return;
                                }
                                sent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
                deadlines.insert(round.round, round.deadline_unix_ms);
                let (bus, bids_sent, last_bid_at) = (bus.clone(), Arc::clone(&bids_sent), Arc::clone(&last_bid_at));
                let (hosts, workloads) = (args.hosts, args.workloads);
                tokio::spawn(async move {
                    for h in 0..hosts {
                        for w in 0..workloads {
                            if let Err(e) = bus.submit_bid(&bid(h, w, round.round)).await {
                                eprintln!("cannot send a bid: {e}");
                                return;
                            }
                            bids_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        last_bid_at.lock().unwrap().insert((round.round, host(h).to_string()), now_ms());
                    }
                });
            }
            Some(f) = forecasts.next() => {
                if let Ok(forecast) = f.message {
                    if measure_started.is_some() {
                        forecast_ages.push(now_ms().saturating_sub(forecast.at_unix_ms) as f64);
                        forecast_hosts.insert(forecast.host.to_string());
                    }
                }
            }
            Some(message) = decisions.next() => {
                let at = now_ms();
                if let Ok(d) = decode::<Decision>(&message.payload) {
                    arrivals.entry(d.round).or_default().push(at);
                    if let Some(sent) = last_bid_at.lock().unwrap().get(&(d.round, d.host.to_string())) {
                        bid_to_decision.push(at.saturating_sub(*sent) as f64);
                    }
                }
                let done = first_round.is_some_and(|first| {
                    (first..first + args.rounds).all(|r| arrivals.get(&r).is_some_and(|a| a.len() >= expected))
                });
                if done {
                    break;
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(30)) => {
                eprintln!("no progress for 30 s; stopping");
                break;
            }
        }
    }
    let elapsed = measure_started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let measure_end_unix_ms = now_ms();
    forecast_ages.sort_by(f64::total_cmp);
    let mut all_hosts_latency = Vec::new();
    let mut per_decision = Vec::new();
    let mut before_deadline = 0usize;
    for (round, deadline) in &deadlines {
        if let Some(times) = arrivals.get(round) {
            for t in times {
                // A decision that arrives before the deadline (its host closed early) counts as 0.
                per_decision.push(t.saturating_sub(*deadline) as f64);
                before_deadline += usize::from(t < deadline);
            }
            let last = times.iter().max().map_or(0, |t| t.saturating_sub(*deadline));
            let late = times.iter().filter(|t| *t >= deadline).count();
            eprintln!("round {round}: {} decisions, {late} after the deadline, last {last} ms after it", times.len());
            if times.len() >= expected {
                all_hosts_latency.push(last as f64);
            }
        }
    }
    all_hosts_latency.sort_by(f64::total_cmp);
    per_decision.sort_by(f64::total_cmp);
    bid_to_decision.sort_by(f64::total_cmp);
    let summary = serde_json::json!({
        "hosts": args.hosts,
        "workloads_per_host": args.workloads,
        "rounds_measured": deadlines.len(),
        "rounds_fully_decided": all_hosts_latency.len(),
        "bids_sent": bids_sent.load(Ordering::Relaxed),
        "rounds_per_second": all_hosts_latency.len() as f64 / elapsed.max(1e-9),
        "decision_latency_ms_p50": percentile(&per_decision, 0.5),
        "decision_latency_ms_p99": percentile(&per_decision, 0.99),
        "last_decision_of_round_ms_p50": percentile(&all_hosts_latency, 0.5),
        "last_decision_of_round_ms_p99": percentile(&all_hosts_latency, 0.99),
        "decided_before_deadline_share": before_deadline as f64 / per_decision.len().max(1) as f64,
        "bid_to_decision_ms_p50": percentile(&bid_to_decision, 0.5),
        "bid_to_decision_ms_p99": percentile(&bid_to_decision, 0.99),
        "telemetry_sent": telemetry_sent.load(Ordering::Relaxed),
        "forecasts_received": forecast_ages.len(),
        "forecasts_per_second": forecast_ages.len() as f64 / elapsed.max(1e-9),
        "hosts_forecast": forecast_hosts.len(),
        "forecast_age_ms_p50": percentile(&forecast_ages, 0.5),
        "forecast_age_ms_p99": percentile(&forecast_ages, 0.99),
        "measure_start_unix_ms": measure_start_unix_ms.load(Ordering::Relaxed),
        "measure_end_unix_ms": measure_end_unix_ms,
        "elapsed_s": elapsed,
    });
    println!("{summary}");
    Ok(())
}
