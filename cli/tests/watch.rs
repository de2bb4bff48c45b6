//! `entente watch` against a real nats-server: decisions published through the bus the arbiter
//! uses come out of the real `entente` binary, replayed or followed, one JSON object per line
//! that reads back as the very decision published. Bad flags fail with a clear message.

use entente_protocol::bus::{Bus, DecisionsStreamConfig};
use entente_protocol::{samples, Decision, HostId};
use entente_tests::NatsServer;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn decision(round: u64, host: &str) -> Decision {
    let mut d = samples::decision();
    d.round = round;
    d.host = HostId::new(host).unwrap();
    d.index = round * 10;
    d.welfare = round as f64 + 0.25;
    d.allocations[0].value = d.welfare;
    d.allocations[0].payment = d.welfare / 2.0;
    d
}

async fn stream_with(bus: &Bus, decisions: &[Decision]) {
    let config = DecisionsStreamConfig { file_storage: false, ..Default::default() };
    bus.ensure_decisions_stream(&config).await.unwrap();
    for d in decisions {
        let ack = bus.publish_decision(d).await.unwrap();
        assert!(!ack.duplicate);
    }
}

fn entente(nats: &NatsServer, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_entente"));
    command.args(args).args(["--nats", &nats.url()]).env_remove("ENTENTE_LOG").env_remove("ENTENTE_PREFIX");
    command
}

/// Runs `entente watch` to completion (it must stop by itself, through `--limit`).
fn watch(nats: &NatsServer, args: &[&str]) -> Output {
    let mut child = entente(nats, &[&["watch"], args].concat()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("entente watch {args:?} did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Each stdout line as a JSON object, checked to carry a stream position, read back as a decision.
fn decisions_of(output: &Output) -> Vec<Decision> {
    assert!(output.status.success(), "entente watch failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    stdout
        .lines()
        .map(|line| {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(value["sequence"].as_u64().is_some_and(|s| s > 0), "{line}");
            let published = value["published"].as_str().unwrap_or_else(|| panic!("no published time: {line}"));
            assert!(published.ends_with('Z') && published.contains('T'), "{line}");
            serde_json::from_value(value).unwrap_or_else(|e| panic!("not a decision ({e}): {line}"))
        })
        .collect()
}

#[tokio::test]
async fn watch_json_replays_and_follows_the_decisions_stream() {
    let nats = NatsServer::start();
    let bus = nats.bus().await;
    let published: Vec<Decision> = (1..=5).flat_map(|r| [decision(r, "host-a"), decision(r, "host-b")]).collect();
    stream_with(&bus, &published).await;

    // Everything, in stream order.
    let all = decisions_of(&watch(&nats, &["--all", "--json", "--limit", "10"]));
    assert_eq!(all, published);

    // From round 3: rounds 1 and 2 are skipped.
    let from_3 = decisions_of(&watch(&nats, &["--from-round", "3", "--json", "--limit", "6"]));
    assert_eq!(from_3, published[4..].to_vec());

    // One host only.
    let host_b = decisions_of(&watch(&nats, &["--from-round", "4", "--host", "host-b", "--json", "--limit", "2"]));
    assert_eq!(host_b, vec![decision(4, "host-b"), decision(5, "host-b")]);

    // Since a minute ago: everything published in this test.
    let since = decisions_of(&watch(&nats, &["--since", "1m", "--json", "--limit", "10"]));
    assert_eq!(since, published);

    // Following from now: only decisions published after it started. Publish rounds until the
    // watcher (whose consumer starts at some unknown moment) prints one; every line is a round
    // published after the old ones, and lines arrive as they are published (flushed per line).
    let follower =
        FollowedChild::spawn(entente(&nats, &["watch", "--json"]).stdout(Stdio::piped()).stderr(Stdio::null()));
    let mut seen = Vec::new();
    for round in 100..200 {
        bus.publish_decision(&decision(round, "host-a")).await.unwrap();
        if let Ok(line) = follower.lines.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
            break;
        }
    }
    let line = seen.pop().expect("entente watch printed nothing while decisions were published");
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    let got: Decision = serde_json::from_value(value).unwrap();
    assert!(got.round >= 100, "a replayed decision was printed: {line}");
    assert_eq!(got, decision(got.round, "host-a"));
    // Later publications keep coming, each on its own line.
    let last = decision(500, "host-a");
    bus.publish_decision(&last).await.unwrap();
    loop {
        let line = follower.lines.recv_timeout(WAIT).expect("round 500 was not printed");
        let got: Decision = serde_json::from_value(serde_json::from_str(&line).unwrap()).unwrap();
        if got.round == 500 {
            assert_eq!(got, last);
            break;
        }
        assert!((100..200).contains(&got.round), "unexpected decision: {line}");
    }
}

#[tokio::test]
async fn watch_prints_a_readable_table_by_default() {
    let nats = NatsServer::start();
    let bus = nats.bus().await;
    stream_with(&bus, &[decision(7, "host-a")]).await;
    let output = watch(&nats, &["--all", "--limit", "1"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("round 7  host host-a  term 3  welfare 7.25  optimal  1 allocations"), "{text}");
    assert!(text.contains("bundle grow"), "{text}");
}

#[tokio::test]
async fn bad_flags_and_a_missing_stream_are_clear_errors() {
    let nats = NatsServer::start();
    let cases: [(&[&str], &str); 5] = [
        (&["watch", "--from-round", "0"], "--from-round"),
        (&["watch", "--from-round", "three"], "--from-round"),
        (&["watch", "--all", "--from-round", "3"], "cannot be used with"),
        (&["watch", "--since", "last tuesday"], "neither an RFC 3339 time"),
        (&["watch", "--host", "bad.host"], "--host"),
    ];
    for (args, expected) in cases {
        let output = entente(&nats, args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr:?} should mention {expected}");
        assert!(output.stdout.is_empty(), "{args:?} printed to stdout");
    }
    // No arbiter has created the stream on this server yet.
    let output = entente(&nats, &["watch", "--all"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.starts_with("entente: ") && stderr.contains("ENTENTE_DECISIONS"), "{stderr}");
}

/// A child process whose stdout lines arrive on a channel, killed when dropped.
struct FollowedChild {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl FollowedChild {
    fn spawn(command: &mut Command) -> FollowedChild {
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        FollowedChild { child, lines }
    }
}

impl Drop for FollowedChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
