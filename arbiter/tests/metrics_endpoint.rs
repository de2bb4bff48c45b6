//! The arbiter's Prometheus endpoint and JSON logs, on a real replica: one `entente-arbiter run`
//! on a real nats-server leads, takes a registration, a good bid and a bad one, and decides
//! rounds; its `/metrics` is scraped over HTTP while it runs, must pass `promtool check metrics`,
//! must hold every arbiter metric `docs/METRICS.md` lists, and must have counted what happened.
//! Its stderr, with `--log-format json`, must be JSON lines.

use entente_protocol::bus::{Bus, BusError};
use entente_protocol::*;
use entente_tests::prometheus::{assert_documented, check_exposition, sample_value, scrape};
use entente_tests::{eventually, free_port, NatsServer};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// The replica, stopped with SIGTERM (or killed) when the test ends however it ends.
struct Replica(Child);

impl Replica {
    fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        self.0.wait().unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn until_answered<M: Message>(bus: &Bus, subject: String, message: &M) -> RegistrationReply {
    let deadline = Instant::now() + WAIT;
    loop {
        match bus.request::<M, RegistrationReply>(subject.clone(), message, Some(Duration::from_secs(2))).await {
            Ok(reply) => return reply,
            Err(BusError::NoResponders { .. } | BusError::Timeout { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("request on {subject} failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_passes_promtool_and_counts_what_happened() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log_path = dir.path().join("arbiter.log");
    let child = Command::new(env!("CARGO_BIN_EXE_entente-arbiter"))
        .args(["--log-format", "json", "run", "--node-id", "1", "--peers", "1", "--round-ms", "500"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--nats", &nats.url(), "--metrics-addr", &metrics_addr.to_string()])
        .env("ENTENTE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start entente-arbiter");
    let mut replica = Replica(child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Before anything happens the endpoint already answers, with valid text.
    let first = eventually(WAIT, async || scrape(metrics_addr).ok()).await.unwrap_or_else(|| panic!("no /metrics: {}", log()));
    check_exposition(&first).unwrap();

    let bus = nats.bus().await;
    let s = bus.subjects().clone();
    assert_eq!(until_answered(&bus, s.register_host(), &samples::host_registration()).await, RegistrationReply::Accepted);
    assert_eq!(until_answered(&bus, s.register_workload(), &samples::workload_spec()).await, RegistrationReply::Accepted);
    let mut too_big = samples::workload_spec();
    too_big.workload = WorkloadId::new("too-big").unwrap();
    too_big.guaranteed.cpu = 100_000;
    too_big.limit.cpu = 100_000;
    assert!(matches!(
        until_answered(&bus, s.register_workload(), &too_big).await,
        RegistrationReply::Refused { .. }
    ));

    // In each round, one good bid and one for a workload nobody registered, until the counters
    // show both (a bid that misses a round's window on a loaded machine is simply late).
    let mut rounds = bus.subscribe::<RoundAnnouncement>(s.round()).await.unwrap();
    let counted = |text: &str, series: &str| sample_value(text, series).unwrap_or(0.0);
    let text = eventually(WAIT, async || {
        let round = tokio::time::timeout(Duration::from_secs(2), rounds.next()).await.ok()??.message.ok()?;
        let mut good = samples::bid();
        good.round = round.round;
        good.bid_id = uuid::Uuid::new_v4();
        let mut unknown = good.clone();
        unknown.bid_id = uuid::Uuid::new_v4();
        unknown.workload = WorkloadId::new("nobody").unwrap();
        bus.submit_bid(&good).await.unwrap();
        bus.submit_bid(&unknown).await.unwrap();
        bus.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let text = scrape(metrics_addr).ok()?;
        (counted(&text, "entente_arbiter_rounds_decided_total") >= 2.0
            && counted(&text, "entente_arbiter_bids_accepted_total") >= 1.0
            && counted(&text, "entente_arbiter_bids_rejected_total{reason=\"unknown_workload\"}") >= 1.0)
            .then_some(text)
    })
    .await
    .unwrap_or_else(|| panic!("the counters never showed the rounds and bids: {}\n{}", scrape(metrics_addr).unwrap_or_default(), log()));

    check_exposition(&text).unwrap();
    assert_documented(&text, &Path::new(env!("CARGO_MANIFEST_DIR")).join(".."), "arbiter", 10);

    assert_eq!(sample_value(&text, "entente_arbiter_is_leader"), Some(1.0));
    assert!(counted(&text, "entente_arbiter_term") >= 1.0);
    assert_eq!(sample_value(&text, "entente_arbiter_hosts"), Some(1.0));
    assert_eq!(sample_value(&text, "entente_arbiter_workloads"), Some(1.0));
    assert!(counted(&text, "entente_arbiter_last_round") >= 2.0);
    assert_eq!(sample_value(&text, "entente_arbiter_registrations_total{kind=\"host\",outcome=\"accepted\"}"), Some(1.0));
    assert_eq!(sample_value(&text, "entente_arbiter_registrations_total{kind=\"workload\",outcome=\"refused\"}"), Some(1.0));
    assert_eq!(sample_value(&text, "entente_arbiter_bids_rejected_total{reason=\"over_budget\"}"), Some(0.0));
    assert!(counted(&text, "entente_arbiter_decisions_published_total") >= 1.0);
    assert!(counted(&text, "entente_arbiter_clearing_duration_seconds_count") >= 2.0);
    assert!(counted(&text, "entente_arbiter_decision_latency_seconds_count") >= 2.0);
    assert!(sample_value(&text, "entente_arbiter_clearing_duration_seconds_bucket{le=\"+Inf\"}").is_some(), "{text}");

    // Stopped, the replica's whole log was JSON lines.
    let status = replica.terminate();
    assert!(status.success(), "exited with {status}: {}", log());
    let log = log();
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(event["level"].is_string() && event["timestamp"].is_string(), "{line}");
        messages.push(event["fields"]["message"].as_str().unwrap_or_default().to_owned());
    }
    assert!(messages.iter().any(|m| m == "leading"), "no 'leading' event in {messages:?}");
    assert!(messages.iter().any(|m| m == "round decided"), "no 'round decided' event in {messages:?}");
}

#[test]
fn a_metrics_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_entente-arbiter"))
        .args(["run", "--node-id", "1", "--nats", "nats://127.0.0.1:1"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--metrics-addr", &addr.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&format!("cannot serve metrics on {addr}")), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_entente-arbiter"))
        .args(["run", "--node-id", "1", "--metrics-addr", "9464"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("--metrics-addr") && stderr.contains("not HOST:PORT"), "{stderr}");
}
