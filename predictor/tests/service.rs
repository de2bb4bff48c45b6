//! The real `entente-predictor` binary against a real nats-server, with the shipped model: two
//! hosts' telemetry becomes forecasts for both, with an interference matrix, within two
//! intervals; a missing or corrupt model is reported and the baseline serves, saying so; a model
//! copied into the model directory is picked up without a restart, and a broken one is refused
//! while the current one keeps serving; the rolling correlation names a pair that keeps
//! interfering; SIGTERM stops the service cleanly; its `/metrics` passes promtool and counts what
//! it did.

use entente_predictor::model::{Sidecar, MODEL_FILE, SIDECAR_FILE};
use entente_protocol::baseline::BASELINE_VERSION;
use entente_protocol::bus::{Bus, Inbox};
use entente_protocol::clock::unix_ms_now;
use entente_protocol::{
    CounterSource, Counters, Forecast, HostId, Pressure, PsiSource, Scheduler, TelemetrySample, Usage, WorkloadId,
};
use entente_tests::NatsServer;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// The model shipped in the repository.
fn shipped_model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("model")
}

fn shipped_version() -> String {
    Sidecar::load(&shipped_model_dir().join(SIDECAR_FILE)).expect("the shipped sidecar loads").version
}

/// A running `entente-predictor`, killed when dropped; its log is a file.
struct Predictor {
    child: Option<Child>,
    log: PathBuf,
}

impl Predictor {
    fn start(nats: &NatsServer, model_dir: &Path, interval_ms: u64, log_dir: &Path) -> Predictor {
        Predictor::start_with(nats, model_dir, interval_ms, log_dir, &[])
    }

    fn start_with(nats: &NatsServer, model_dir: &Path, interval_ms: u64, log_dir: &Path, extra: &[&str]) -> Predictor {
        let log = log_dir.join("predictor.log");
        let child = Command::new(env!("CARGO_BIN_EXE_entente-predictor"))
            .args(["run", "--nats", &nats.url(), "--model-dir"])
            .arg(model_dir)
            .args(["--interval-ms", &interval_ms.to_string(), "--reload-check-ms", "100"])
            .args(extra)
            .env("ENTENTE_LOG", "info")
            .env_remove("ENTENTE_LOG_FORMAT")
            .stderr(std::fs::File::create(&log).expect("create the log file"))
            .spawn()
            .expect("start entente-predictor");
        let predictor = Predictor { child: Some(child), log };
        predictor.wait_for_log("predictor ready", Duration::from_secs(120));
        predictor
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle` (model loading in a debug build takes a moment).
    fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in the predictor's log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status.
    fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("entente-predictor did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Predictor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn sample(host: &str, workload: &str, at_unix_ms: u64, cpu_millicores: f64, cpu_stall: f64) -> TelemetrySample {
    TelemetrySample {
        host: HostId::new(host).unwrap(),
        workload: WorkloadId::new(workload).unwrap(),
        at_unix_ms,
        interval_ms: 1000,
        usage: Usage {
            cpu_millicores,
            memory_bytes: 256.0 * 1024.0 * 1024.0,
            disk_read_bps: 1e6,
            disk_write_bps: 2e6,
            net_rx_bps: 5e5,
            net_tx_bps: 5e5,
        },
        pressure: Pressure {
            source: PsiSource::Cgroup,
            cpu_some: Some(cpu_stall),
            cpu_full: Some(cpu_stall / 2.0),
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
            task_clock_ms: Some(cpu_millicores),
            context_switches: Some(2000.0),
            page_faults: Some(100.0),
            cpu_migrations: Some(10.0),
        },
        scheduler: Scheduler {
            run_delay_ms: Some(cpu_stall * 10.0),
            throttled_ms: Some(0.0),
            cpu_quota_millicores: None,
            cpu_cap_millicores: Some(2000.0),
        },
    }
}

/// The workloads of the two test hosts.
const HOSTS: [(&str, &[&str]); 2] = [("host-a", &["web", "batch", "cache"]), ("host-b", &["db", "etl"])];

/// Publishes one sample for every workload of both hosts, busier with each step.
async fn publish_step(bus: &Bus, step: u64) {
    let now = unix_ms_now();
    for (host, workloads) in HOSTS {
        for (k, workload) in workloads.iter().enumerate() {
            let cpu = 200.0 + 300.0 * k as f64 + 50.0 * (step % 5) as f64;
            bus.publish_telemetry(&sample(host, workload, now, cpu, 5.0 + k as f64)).await.unwrap();
        }
    }
    bus.flush().await.unwrap();
}

/// Keeps publishing a step every `interval` until `done` finds what it looks for in a forecast;
/// gives up after `timeout`.
async fn forecasts_until(
    bus: &Bus,
    inbox: &mut Inbox<Forecast>,
    interval: Duration,
    timeout: Duration,
    mut done: impl FnMut(&Forecast) -> bool,
) -> Option<Forecast> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut step = 0;
    let mut next_publish = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_publish {
            publish_step(bus, step).await;
            step += 1;
            next_publish += interval;
        }
        let wait = next_publish.min(deadline);
        match tokio::time::timeout_at(wait, inbox.next()).await {
            Ok(Some(r)) => {
                let forecast = r.message.expect("the predictor publishes valid forecasts");
                if done(&forecast) {
                    return Some(forecast);
                }
            }
            Ok(None) => panic!("forecast subscription ended"),
            Err(_) if tokio::time::Instant::now() >= deadline => return None,
            Err(_) => {}
        }
    }
}

#[tokio::test]
async fn two_hosts_get_forecasts_with_interference_within_two_intervals() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(3000);
    let mut predictor = Predictor::start(&nats, &shipped_model_dir(), interval.as_millis() as u64, dir.path());
    predictor.wait_for_log("model loaded", Duration::from_secs(1));
    let bus = nats.bus().await;
    let mut inbox = bus.subscribe::<Forecast>(bus.subjects().forecast_all()).await.unwrap();
    bus.flush().await.unwrap();

    // One round of telemetry, then forecasts for both hosts must follow within two intervals.
    let published = Instant::now();
    publish_step(&bus, 0).await;
    let mut got: BTreeMap<String, Forecast> = BTreeMap::new();
    while got.len() < 2 {
        let left = (2 * interval).saturating_sub(published.elapsed());
        match tokio::time::timeout(left, inbox.next()).await {
            Ok(Some(r)) => {
                let f = r.message.expect("valid forecast");
                got.insert(f.host.to_string(), f);
            }
            Ok(None) => panic!("forecast subscription ended"),
            Err(_) => panic!(
                "forecasts for {:?} only within two intervals ({:?}):\n{}",
                got.keys().collect::<Vec<_>>(),
                2 * interval,
                predictor.log()
            ),
        }
    }

    let version = shipped_version();
    for (host, workloads) in HOSTS {
        let f = &got[host];
        assert_eq!(f.model_version, version, "{f:?}");
        assert!(!f.baseline, "the shipped model serves, not the baseline: {f:?}");
        assert_eq!(f.horizon_ms, Sidecar::load(&shipped_model_dir().join(SIDECAR_FILE)).unwrap().interval_ms);
        let mut names: Vec<&str> = f.workloads.iter().map(|w| w.workload.as_str()).collect();
        names.sort_unstable();
        let mut expected = workloads.to_vec();
        expected.sort_unstable();
        assert_eq!(names, expected, "one forecast per workload of {host}");
        for w in &f.workloads {
            assert!(w.slowdown.is_finite() && w.slowdown >= 0.0, "{w:?}");
        }
        // The full counterfactual matrix: every ordered pair of distinct co-runners, once.
        let n = workloads.len();
        assert_eq!(f.interference.len(), n * (n - 1), "{:?}", f.interference);
        let mut pairs: Vec<(&str, &str)> =
            f.interference.iter().map(|p| (p.aggressor.as_str(), p.victim.as_str())).collect();
        pairs.sort_unstable();
        pairs.dedup();
        assert_eq!(pairs.len(), n * (n - 1));
        assert!(f.interference.iter().all(|p| p.victim != p.aggressor && p.slowdown_delta.is_finite()));
    }

    // A clean stop on SIGTERM.
    let status = predictor.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", predictor.log());
    assert!(predictor.log().contains("predictor stopped"), "{}", predictor.log());
}

#[tokio::test]
async fn a_corrupt_model_is_reported_and_the_baseline_serves_saying_so() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    std::fs::create_dir(&model_dir).unwrap();
    std::fs::copy(shipped_model_dir().join(SIDECAR_FILE), model_dir.join(SIDECAR_FILE)).unwrap();
    std::fs::write(model_dir.join(MODEL_FILE), b"this is not an ONNX protobuf").unwrap();
    let interval = Duration::from_millis(300);
    let predictor = Predictor::start(&nats, &model_dir, interval.as_millis() as u64, dir.path());
    let log = predictor.log();
    assert!(log.contains("no usable model at start-up"), "{log}");
    assert!(log.contains(&model_dir.join(MODEL_FILE).display().to_string()), "the error names the file:\n{log}");

    let bus = nats.bus().await;
    let mut inbox = bus.subscribe::<Forecast>(bus.subjects().forecast_all()).await.unwrap();
    let forecast = forecasts_until(&bus, &mut inbox, interval, Duration::from_secs(10), |f| f.host.as_str() == "host-a")
        .await
        .unwrap_or_else(|| panic!("no baseline forecast:\n{}", predictor.log()));
    assert!(forecast.baseline);
    assert_eq!(forecast.model_version, BASELINE_VERSION);
    assert_eq!(forecast.workloads.len(), 3);
    assert!(forecast.interference.is_empty(), "the baseline makes no interference claims");
    // The baseline's slowdown is what the measured stalls imply: never below 1.
    assert!(forecast.workloads.iter().all(|w| w.slowdown >= 1.0), "{forecast:?}");
}

#[tokio::test]
async fn a_model_copied_in_is_served_without_a_restart_and_a_broken_one_is_refused() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    std::fs::create_dir(&model_dir).unwrap();
    let interval = Duration::from_millis(1000);
    let predictor = Predictor::start(&nats, &model_dir, interval.as_millis() as u64, dir.path());
    assert!(predictor.log().contains("missing"), "a missing model is named as such:\n{}", predictor.log());

    let bus = nats.bus().await;
    let mut inbox = bus.subscribe::<Forecast>(bus.subjects().forecast_all()).await.unwrap();
    let first = forecasts_until(&bus, &mut inbox, interval, Duration::from_secs(10), |_| true).await.expect("a forecast");
    assert!(first.baseline);
    assert_eq!(first.model_version, BASELINE_VERSION);

    // Copy the shipped model in (graph first, sidecar last) while the service runs.
    std::fs::copy(shipped_model_dir().join(MODEL_FILE), model_dir.join(MODEL_FILE)).unwrap();
    std::fs::copy(shipped_model_dir().join(SIDECAR_FILE), model_dir.join(SIDECAR_FILE)).unwrap();
    let version = shipped_version();
    let served = forecasts_until(&bus, &mut inbox, interval, Duration::from_secs(60), |f| f.model_version == version).await;
    let served = served.unwrap_or_else(|| panic!("the copied model was never served:\n{}", predictor.log()));
    assert!(!served.baseline);
    assert!(predictor.log().contains("model loaded"));

    // A broken graph under a new version name: refused, the loaded model keeps serving.
    let mut sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir.join(SIDECAR_FILE)).unwrap()).unwrap();
    sidecar["version"] = serde_json::Value::from("broken-1");
    std::fs::write(model_dir.join(MODEL_FILE), b"\x08\x07 truncated").unwrap();
    std::fs::write(model_dir.join(SIDECAR_FILE), sidecar.to_string()).unwrap();
    predictor.wait_for_log("keeping the current one", Duration::from_secs(30));
    let after = forecasts_until(&bus, &mut inbox, interval, Duration::from_secs(10), |_| true).await.expect("a forecast");
    assert_eq!(after.model_version, version, "the broken model is not served");
    assert!(!after.baseline);
}

#[tokio::test]
async fn a_pair_that_keeps_interfering_is_named() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    // The baseline serves (no model): its slowdown is the measured stall, so the test controls
    // the victim's slowdown exactly.
    let interval = Duration::from_millis(200);
    let extra = ["--correlation-min-observations", "6", "--correlation-window", "30", "--correlation-threshold", "0.9"];
    let predictor = Predictor::start_with(&nats, dir.path(), interval.as_millis() as u64, dir.path(), &extra);
    let bus = nats.bus().await;
    let mut inbox = bus.subscribe::<Forecast>(bus.subjects().forecast_all()).await.unwrap();
    bus.flush().await.unwrap();

    // "batch" bursts irregularly; "web" stalls exactly when it does; "cache" stalls on its own
    // schedule. Only batch -> web is a pair that interferes often.
    let bursts = [1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 0, 1];
    let cache_stalls = [0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0];
    let mut named = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut step = 0usize;
    while named.is_none() && Instant::now() < deadline {
        let now = unix_ms_now();
        let burst = f64::from(bursts[step % bursts.len()]);
        let cache = f64::from(cache_stalls[step % cache_stalls.len()]);
        for (workload, cpu, stall) in
            [("batch", 200.0 + 3000.0 * burst, 1.0), ("web", 300.0, 2.0 + 30.0 * burst), ("cache", 250.0, 2.0 + 20.0 * cache)]
        {
            bus.publish_telemetry(&sample("host-c", workload, now, cpu, stall)).await.unwrap();
        }
        bus.flush().await.unwrap();
        step += 1;
        let until = tokio::time::Instant::now() + interval;
        while let Ok(Some(r)) = tokio::time::timeout_at(until, inbox.next()).await {
            let f = r.message.expect("valid forecast");
            if !f.frequent_pairs.is_empty() {
                named = Some(f);
            }
        }
    }
    let forecast = named.unwrap_or_else(|| panic!("no pair named within 30 s:\n{}", predictor.log()));
    let pairs: Vec<(&str, &str)> =
        forecast.frequent_pairs.iter().map(|p| (p.aggressor.as_str(), p.victim.as_str())).collect();
    assert_eq!(pairs, vec![("batch", "web")], "{:?}", forecast.frequent_pairs);
    assert!(forecast.frequent_pairs[0].correlation > 0.9);
}

#[tokio::test]
async fn the_metrics_endpoint_passes_promtool_and_counts_forecasts() {
    use entente_tests::prometheus::{assert_documented, check_exposition, sample_value, scrape};
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], entente_tests::free_port()).into();
    let interval = Duration::from_millis(500);
    let predictor = Predictor::start_with(
        &nats,
        &shipped_model_dir(),
        interval.as_millis() as u64,
        dir.path(),
        &["--metrics-addr", &addr.to_string()],
    );
    let bus = nats.bus().await;
    let mut inbox = bus.subscribe::<Forecast>(bus.subjects().forecast_all()).await.unwrap();
    bus.flush().await.unwrap();
    // A sample on a subject that does not name its workload is refused, and counted.
    let stray = sample("host-a", "web", unix_ms_now(), 100.0, 1.0);
    bus.publish(format!("{}.telemetry.host-a.other", bus.subjects().prefix()), &stray).await.unwrap();

    let mut forecasts = 0;
    forecasts_until(&bus, &mut inbox, interval, Duration::from_secs(60), |_| {
        forecasts += 1;
        forecasts >= 4
    })
    .await
    .unwrap_or_else(|| panic!("too few forecasts:\n{}", predictor.log()));
    let text = entente_tests::eventually(Duration::from_secs(10), async || {
        let text = scrape(addr).ok()?;
        (sample_value(&text, "entente_predictor_forecasts_published_total")? >= 4.0).then_some(text)
    })
    .await
    .unwrap_or_else(|| panic!("the counters never showed the forecasts: {}", scrape(addr).unwrap_or_default()));

    check_exposition(&text).unwrap();
    assert_documented(&text, &Path::new(env!("CARGO_MANIFEST_DIR")).join(".."), "predictor", 8);

    let series = format!("entente_predictor_model_info{{version=\"{}\",source=\"model\"}}", shipped_version());
    assert_eq!(sample_value(&text, &series), Some(1.0), "{text}");
    assert!(sample_value(&text, "entente_predictor_telemetry_samples_total{outcome=\"accepted\"}").unwrap() >= 5.0);
    assert_eq!(sample_value(&text, "entente_predictor_telemetry_samples_total{outcome=\"refused\"}"), Some(1.0));
    assert_eq!(sample_value(&text, "entente_predictor_model_failures_total"), Some(0.0));
    assert!(sample_value(&text, "entente_predictor_inference_duration_seconds_count").unwrap() >= 4.0);
    assert!(sample_value(&text, "entente_predictor_interval_duration_seconds_count").unwrap() >= 2.0);
    assert_eq!(sample_value(&text, "entente_predictor_hosts"), Some(2.0));
    assert_eq!(sample_value(&text, "entente_predictor_workloads"), Some(5.0));
}
