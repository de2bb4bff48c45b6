//! The agent's Prometheus endpoint and JSON logs, on a real agent: `entente-agent run` with the
//! dry-run backend and one command workload, against a real nats-server and a scripted arbiter
//! and predictor played by the test. The test registers it, announces a round, rejects its bid,
//! sends a forecast and a decision whose lease runs out; `/metrics`, scraped over HTTP while the
//! agent runs, must pass `promtool check metrics`, hold every agent metric `docs/METRICS.md`
//! lists, and have counted each of those events. Its stderr, with `--log-format json`, must be
//! JSON lines.
//!
//! Needs root (the agent starts its command in a cgroup of its own; CI runs as root).

use entente_protocol::bus::{Bus, DecisionsStreamConfig, Inbox};
use entente_protocol::*;
use entente_tests::prometheus::{assert_documented, check_exposition, sample_value, scrape};
use entente_tests::{eventually, free_port, NatsServer};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Kills the agent if the test fails half-way.
struct AgentProcess(tokio::process::Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn next<M: Message>(inbox: &mut Inbox<M>, what: &str) -> entente_protocol::bus::Received<M> {
    tokio::time::timeout(WAIT, inbox.next()).await.unwrap_or_else(|_| panic!("no {what} within {WAIT:?}")).expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_passes_promtool_and_counts_what_happened() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test starts a command in a cgroup and must run as root");
    let nats = NatsServer::start();
    let arbiter: Bus = nats.bus().await;
    arbiter.ensure_decisions_stream(&DecisionsStreamConfig { file_storage: false, ..Default::default() }).await.unwrap();
    let s = arbiter.subjects().clone();
    let suffix = std::process::id();
    let host = HostId::new(format!("metrics-test-{suffix}")).unwrap();
    let workload = WorkloadId::new("sleeper").unwrap();
    let mut host_registrations = arbiter.subscribe::<HostRegistration>(s.register_host()).await.unwrap();
    let mut workload_registrations = arbiter.subscribe::<WorkloadSpec>(s.register_workload()).await.unwrap();
    let mut bids = arbiter.subscribe::<Bid>(s.bids(&host)).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            host = "{host}"
            interval_ms = 200
            cgroup_parent = "entente-metrics-test-{suffix}"
            capacity = {{ cpu = 2000, memory = 4294967296, disk_bw = 0, net_bw = 0 }}
            [[workload]]
            id = "sleeper"
            command = ["sleep", "600"]
            class = "batch"
            priority = 40
            guaranteed = {{ cpu = 100, memory = 0, disk_bw = 0, net_bw = 0 }}
            limit = {{ cpu = 1000, memory = 1073741824, disk_bw = 0, net_bw = 0 }}
            "#
        ),
    )
    .unwrap();
    let metrics_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log_path = dir.path().join("agent.log");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_entente-agent"))
        .args(["run", "--backend", "dry-run", "--log-format", "json", "--config"])
        .arg(&config)
        .args(["--nats", &nats.url(), "--metrics-addr", &metrics_addr.to_string()])
        .env("ENTENTE_LOG", "info")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start entente-agent");
    let mut agent = AgentProcess(child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let h = next(&mut host_registrations, "host registration").await;
    arbiter.reply(h.reply.unwrap(), &RegistrationReply::Accepted).await.unwrap();
    let w = next(&mut workload_registrations, "workload registration").await;
    arbiter.reply(w.reply.unwrap(), &RegistrationReply::Accepted).await.unwrap();

    // A round: the agent bids (on its fallback prediction: no forecast yet); the bid is rejected.
    let now = now_ms();
    let round = RoundAnnouncement { round: 1, announced_at_unix_ms: now, deadline_unix_ms: now + 500, interval_ms: 200, leader: 1, term: 1 };
    arbiter.announce_round(&round).await.unwrap();
    let bid = next(&mut bids, "bid").await.message.unwrap();
    assert_eq!(bid.forecast, ForecastSource::Fallback);
    let rejection = Rejection {
        host: host.clone(),
        workload: Some(workload.clone()),
        round: Some(1),
        bid_id: Some(bid.bid_id),
        reason: RejectReason::OverBudget,
        detail: "test".into(),
        at_unix_ms: now_ms(),
    };
    arbiter.publish_rejection(&rejection).await.unwrap();

    // A forecast, and a decision whose lease runs out after 600 ms.
    let forecast = Forecast {
        host: host.clone(),
        at_unix_ms: now_ms(),
        horizon_ms: 1_000,
        model_version: "test".into(),
        baseline: false,
        workloads: vec![WorkloadForecast { workload: workload.clone(), usage: Usage::default(), slowdown: 1.0 }],
        interference: vec![],
        frequent_pairs: vec![],
    };
    arbiter.publish_forecast(&forecast).await.unwrap();
    // The agent follows decisions from "now" on: publish until one has been counted.
    let counted = |text: &str, series: &str| sample_value(text, series).unwrap_or(0.0);
    let mut round_id = 1;
    let received = eventually(WAIT, async || {
        let now = now_ms();
        let decision = Decision {
            round: round_id,
            host: host.clone(),
            term: 1,
            index: round_id,
            decided_at_unix_ms: now,
            lease_expires_unix_ms: now + 600,
            allocations: vec![Allocation {
                workload: workload.clone(),
                alloc: ResourceVector::new(500, 256 << 20, 0, 0),
                bundle: Some("more".into()),
                offer: Some(Offer::Request),
                value: 5.0,
                payment: 1.0,
            }],
            welfare: 5.0,
            optimal: true,
            unenforced: vec![],
        };
        round_id += 1;
        arbiter.publish_decision(&decision).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = scrape(metrics_addr).ok()?;
        (counted(&text, "entente_agent_decisions_received_total") >= 1.0).then_some(())
    })
    .await;
    assert!(received.is_some(), "no decision was counted: {}", log());

    let text = eventually(WAIT, async || {
        let text = scrape(metrics_addr).ok()?;
        (counted(&text, "entente_agent_samples_total") >= 2.0
            && counted(&text, "entente_agent_lease_fallbacks_total") >= 1.0
            && counted(&text, "entente_agent_forecasts_received_total") >= 1.0
            && counted(&text, "entente_agent_rejections_received_total{reason=\"over_budget\"}") >= 1.0)
            .then_some(text)
    })
    .await
    .unwrap_or_else(|| panic!("the counters never showed the events: {}\n{}", scrape(metrics_addr).unwrap_or_default(), log()));

    check_exposition(&text).unwrap();
    assert_documented(&text, &Path::new(env!("CARGO_MANIFEST_DIR")).join(".."), "agent", 10);

    assert_eq!(sample_value(&text, "entente_agent_workloads"), Some(1.0));
    assert!(counted(&text, "entente_agent_bids_sent_total{forecast=\"fallback\"}") >= 1.0);
    assert!(counted(&text, "entente_agent_decisions_enforced_total") >= 1.0);
    assert_eq!(sample_value(&text, "entente_agent_enforcement_errors_total{backend=\"dry-run\"}"), Some(0.0));
    assert_eq!(sample_value(&text, "entente_agent_rejections_received_total{reason=\"late\"}"), Some(0.0));
    assert!(sample_value(&text, "entente_agent_forecast_age_seconds").is_some_and(|age| (0.0..60.0).contains(&age)), "{text}");

    // Stopped, the agent's whole log was JSON lines.
    unsafe { libc::kill(agent.0.id().unwrap() as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(WAIT, agent.0.wait()).await.expect("agent stops").unwrap();
    assert!(status.success(), "exited with {status}: {}", log());
    let log = log();
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(event["level"].is_string() && event["timestamp"].is_string(), "{line}");
        messages.push(event["fields"]["message"].as_str().unwrap_or_default().to_owned());
    }
    assert!(messages.iter().any(|m| m == "host registered"), "{messages:?}");
    assert!(messages.iter().any(|m| m.starts_with("lease expired")), "{messages:?}");
}
