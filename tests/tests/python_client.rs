//! A Python client reads every message with a generic MessagePack library: the promise that
//! entente can be consumed from any language, checked with a real other-language decoder.

use entente_protocol::{encode, samples};
use std::process::Command;

fn python() -> String {
    std::env::var("ENTENTE_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn python_reads_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let messages: Vec<(&str, Vec<u8>)> = vec![
        ("host_registration", encode(&samples::host_registration()).unwrap()),
        ("workload_spec", encode(&samples::workload_spec()).unwrap()),
        ("registration_reply", encode(&samples::registration_reply()).unwrap()),
        ("telemetry", encode(&samples::telemetry()).unwrap()),
        ("forecast", encode(&samples::forecast()).unwrap()),
        ("round", encode(&samples::round()).unwrap()),
        ("bid", encode(&samples::bid()).unwrap()),
        ("decision", encode(&samples::decision()).unwrap()),
        ("rejection", encode(&samples::rejection()).unwrap()),
    ];
    for (name, bytes) in &messages {
        std::fs::write(dir.path().join(format!("{name}.msgpack")), bytes).unwrap();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/read_messages.py");
    let out = Command::new(python()).arg(script).arg(dir.path()).output().unwrap_or_else(|e| {
        panic!("cannot run {}: {e}; ./scripts/test.sh sets up Python with msgpack", python())
    });
    assert!(
        out.status.success(),
        "the Python client failed (./scripts/test.sh installs msgpack):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), messages.len());
    for line in &lines {
        let file = line["file"].as_str().unwrap();
        assert_eq!(format!("{}.msgpack", line["kind"].as_str().unwrap()), file);
        assert_eq!(line["version"], 1);
    }
    let bid = lines.iter().find(|l| l["kind"] == "bid").unwrap();
    assert_eq!(bid["bid_id"], "6a1e1c1a-9b0c-4c59-8f3e-51f2a0d47b11");
    assert_eq!(bid["offers"], serde_json::json!(["keep", "request", "trade_off"]));
    assert_eq!(bid["cpu"], serde_json::json!([1000, 2500, 3000]));
    assert_eq!(
        bid["fields"],
        serde_json::json!(["bid_id", "bundles", "forecast", "host", "round", "standing_rounds", "workload"])
    );
    let decision = lines.iter().find(|l| l["kind"] == "decision").unwrap();
    assert_eq!(decision["allocations"]["redis"]["cpu"], 2500);
}
