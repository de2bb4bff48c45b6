//! The codec as a client in another language sees it: every message encodes to maps with named
//! fields, decodes back unchanged, and anything else is refused with a typed error.

use entente_protocol::codec::peek_kind;
use entente_protocol::{samples, *};
use rmpv::Value;

/// Decodes bytes with a generic MessagePack reader, as a Python or Go client would.
fn generic(bytes: &[u8]) -> Value {
    rmpv::decode::read_value(&mut &bytes[..]).expect("valid MessagePack")
}

fn encode_value(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

fn get<'a>(map: &'a Value, key: &str) -> &'a Value {
    map.as_map()
        .unwrap_or_else(|| panic!("expected a map holding {key:?}, got {map}"))
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no key {key:?} in {map}"))
}

fn set(map: &mut Value, path: &[&str], value: Value) {
    let Value::Map(entries) = map else { panic!("not a map") };
    let (_, slot) = entries.iter_mut().find(|(k, _)| k.as_str() == Some(path[0])).expect("key present");
    if path.len() == 1 {
        *slot = value;
    } else {
        set(slot, &path[1..], value);
    }
}

fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: M) {
    let bytes = encode(&m).unwrap();
    assert_eq!(decode::<M>(&bytes).unwrap(), m);
    assert_eq!(peek_kind(&bytes).unwrap(), (PROTOCOL_VERSION, M::KIND.to_owned()));
}

#[test]
fn every_message_round_trips() {
    round_trip(samples::host_registration());
    round_trip(samples::workload_spec());
    round_trip(samples::registration_reply());
    round_trip(RegistrationReply::Accepted);
    round_trip(samples::telemetry());
    round_trip(samples::forecast());
    round_trip(samples::round());
    round_trip(samples::bid());
    round_trip(samples::decision());
    round_trip(samples::rejection());
    round_trip(StatusRequest { workloads: true });
    round_trip(samples::cluster_status());
    round_trip(samples::membership_change());
    round_trip(QuotaChange { tenant: TenantId::new("shop").unwrap(), resource: Resource::Cpu, limit: Some(4_000) });
    round_trip(MembershipReply::Changed { members: vec![1, 3, 4] });
    round_trip(MembershipReply::Refused { reason: "not the leader".into() });
}

#[test]
fn membership_changes_must_say_something_consistent() {
    assert!(encode(&MembershipChange { add: vec![], remove: vec![] }).is_err());
    assert!(encode(&MembershipChange { add: vec![2], remove: vec![2] }).is_err());
}

#[test]
fn a_generic_decoder_sees_named_fields_string_uuids_and_tagged_enums() {
    let bid = generic(&encode(&samples::bid()).unwrap());
    assert_eq!(get(&bid, "version").as_u64(), Some(PROTOCOL_VERSION as u64));
    assert_eq!(get(&bid, "kind").as_str(), Some("bid"));
    let body = get(&bid, "body");
    assert_eq!(get(body, "bid_id").as_str(), Some("6a1e1c1a-9b0c-4c59-8f3e-51f2a0d47b11"));
    assert_eq!(get(body, "host").as_str(), Some("host-a"));
    let bundles = get(body, "bundles").as_array().unwrap();
    assert_eq!(get(&bundles[1], "alloc").as_map().unwrap().len(), 6);
    assert_eq!(get(get(&bundles[1], "alloc"), "cpu").as_u64(), Some(2_500));
    assert_eq!(get(get(&bundles[0], "offer"), "type").as_str(), Some("keep"));
    let trade = get(&bundles[2], "offer");
    assert_eq!(get(trade, "type").as_str(), Some("trade_off"));
    assert_eq!(get(trade, "give").as_str(), Some("disk_bw"));
    assert_eq!(get(get(body, "forecast"), "type").as_str(), Some("predictor"));

    let rejection = generic(&encode(&samples::rejection()).unwrap());
    let body = get(&rejection, "body");
    assert_eq!(get(body, "bid_id").as_str(), Some("00000000-0000-0000-0000-000000000007"));
    assert_eq!(get(body, "reason").as_str(), Some("late"));

    let spec = generic(&encode(&samples::workload_spec()).unwrap());
    let body = get(&spec, "body");
    assert_eq!(get(body, "class").as_str(), Some("latency_critical"));
    assert_eq!(get(get(body, "slo"), "type").as_str(), Some("metric"));
    assert!(get(body, "estimated_execution_s").is_nil());

    for bytes in [
        encode(&samples::host_registration()).unwrap(),
        encode(&samples::telemetry()).unwrap(),
        encode(&samples::forecast()).unwrap(),
        encode(&samples::round()).unwrap(),
        encode(&samples::decision()).unwrap(),
        encode(&samples::registration_reply()).unwrap(),
    ] {
        let v = generic(&bytes);
        assert!(get(&v, "body").is_map(), "body of {} is a map", get(&v, "kind"));
    }
}

#[test]
fn resctrl_resources_may_be_left_out_by_clients() {
    let mut v = generic(&encode(&samples::host_registration()).unwrap());
    let Value::Map(body) = &mut v.as_map().unwrap()[2].1.clone() else { panic!() };
    let capacity = &mut body.iter_mut().find(|(k, _)| k.as_str() == Some("capacity")).unwrap().1;
    if let Value::Map(fields) = capacity {
        fields.retain(|(k, _)| k.as_str() != Some("llc") && k.as_str() != Some("mem_bw"));
    }
    set(&mut v, &["body"], Value::Map(body.clone()));
    let decoded = decode::<HostRegistration>(&encode_value(&v)).unwrap();
    assert_eq!(decoded.capacity.llc, 0);
    assert_eq!(decoded, samples::host_registration());
}

#[test]
fn telemetry_from_an_agent_without_scheduler_figures_still_decodes() {
    let mut v = generic(&encode(&samples::telemetry()).unwrap());
    let Value::Map(mut body) = get(&v, "body").clone() else { panic!("body is a map") };
    body.retain(|(k, _)| k.as_str() != Some("scheduler"));
    set(&mut v, &["body"], Value::Map(body));
    let decoded = decode::<TelemetrySample>(&encode_value(&v)).unwrap();
    assert_eq!(decoded.scheduler, Scheduler::default());
    assert_eq!(TelemetrySample { scheduler: samples::telemetry().scheduler, ..decoded }, samples::telemetry());
}

#[test]
fn telemetry_from_an_agent_without_the_cpu_cap_still_decodes() {
    let mut v = generic(&encode(&samples::telemetry()).unwrap());
    let Value::Map(mut scheduler) = get(get(&v, "body"), "scheduler").clone() else { panic!("scheduler is a map") };
    scheduler.retain(|(k, _)| !matches!(k.as_str(), Some("cpu_quota_millicores" | "cpu_cap_millicores")));
    set(&mut v, &["body", "scheduler"], Value::Map(scheduler));
    let decoded = decode::<TelemetrySample>(&encode_value(&v)).unwrap();
    let sent = samples::telemetry().scheduler;
    assert_eq!(
        decoded.scheduler,
        Scheduler { cpu_quota_millicores: None, cpu_cap_millicores: None, ..sent },
        "the run delay and throttling survive, the cpu figures read as null"
    );
}

#[test]
fn unknown_versions_and_wrong_kinds_are_named() {
    let mut v = generic(&encode(&samples::bid()).unwrap());
    set(&mut v, &["version"], Value::from(2));
    assert!(matches!(
        decode::<Bid>(&encode_value(&v)),
        Err(DecodeError::UnknownVersion { found: 2, supported: PROTOCOL_VERSION })
    ));
    let decision = encode(&samples::decision()).unwrap();
    match decode::<Bid>(&decision) {
        Err(DecodeError::WrongKind { expected: "bid", found }) => assert_eq!(found, "decision"),
        other => panic!("expected WrongKind, got {other:?}"),
    }
}

#[test]
fn hostile_values_are_rejected_with_the_field_named() {
    let bid = generic(&encode(&samples::bid()).unwrap());
    let cases: Vec<(Vec<&str>, Value, &str)> = vec![
        (vec!["body", "host"], Value::from("host.a"), "host"),
        (vec!["body", "workload"], Value::from(">"), ""),
        (vec!["body", "round"], Value::from(0), "round"),
        (vec!["body", "bid_id"], Value::from("not-a-uuid"), ""),
        (vec!["body", "standing_rounds"], Value::from(1000), "standing_rounds"),
        (vec!["body", "bundles"], Value::Array(vec![]), "bundles"),
    ];
    for (path, value, field) in cases {
        let mut v = bid.clone();
        set(&mut v, &path, value.clone());
        let err = decode::<Bid>(&encode_value(&v)).expect_err(&format!("{path:?} = {value} must be refused"));
        assert!(err.to_string().contains(field), "{err}");
    }

    // Values inside bundles: NaN, negative and oversized credits, negative and oversized amounts.
    let bundle_cases: Vec<(Vec<&str>, Value)> = vec![
        (vec!["value"], Value::F64(f64::NAN)),
        (vec!["value"], Value::F64(f64::INFINITY)),
        (vec!["value"], Value::F64(-1.0)),
        (vec!["value"], Value::F64(1e300)),
        (vec!["alloc", "cpu"], Value::from(-5)),
        (vec!["alloc", "memory"], Value::from(u64::MAX)),
        (vec!["alloc", "cpu"], Value::F64(1.5)),
        (vec!["id"], Value::from("a b")),
    ];
    for (path, value) in bundle_cases {
        let mut v = bid.clone();
        let mut bundles = get(get(&v, "body"), "bundles").clone();
        let Value::Array(items) = &mut bundles else { panic!() };
        set(&mut items[1], &path, value.clone());
        set(&mut v, &["body", "bundles"], bundles);
        let err = decode::<Bid>(&encode_value(&v)).expect_err(&format!("bundle {path:?} = {value} must be refused"));
        assert!(matches!(err, DecodeError::Invalid { .. } | DecodeError::Malformed(_)), "{err}");
    }

    // Too many bundles.
    let mut many = samples::bid();
    many.bundles = (0..17)
        .map(|i| Bundle { id: format!("b{i}"), alloc: ResourceVector::ZERO, value: 1.0, offer: Offer::Request })
        .collect();
    assert!(matches!(encode(&many), Err(EncodeError::Invalid { .. })));
    let mut v = generic(&encode(&samples::bid()).unwrap());
    let b = get(get(&v, "body"), "bundles").as_array().unwrap()[1].clone();
    let dozens: Vec<Value> = (0..17)
        .map(|i| {
            let mut b = b.clone();
            set(&mut b, &["id"], Value::from(format!("b{i}")));
            b
        })
        .collect();
    set(&mut v, &["body", "bundles"], Value::Array(dozens));
    match decode::<Bid>(&encode_value(&v)) {
        Err(DecodeError::Invalid { source: ValidationError::TooMany { count: 17, .. }, .. }) => {}
        other => panic!("expected TooMany, got {other:?}"),
    }
}

#[test]
fn bids_are_checked_against_the_workload_spec() {
    let spec = samples::workload_spec();
    assert!(samples::bid().check_against(&spec).is_ok());
    let mut greedy = samples::bid();
    greedy.bundles[1].alloc.cpu = spec.limit.cpu + 1;
    let err = greedy.check_against(&spec).unwrap_err();
    assert_eq!(err.to_string(), "bundles[1].alloc.cpu: 4001 exceeds the limit of 4000");
    let mut meagre = samples::bid();
    meagre.bundles[0].alloc.memory = 0;
    assert!(meagre.check_against(&spec).unwrap_err().to_string().contains("below the guarantee"));
    let mut foreign = samples::bid();
    foreign.host = HostId::new("host-b").unwrap();
    assert!(foreign.check_against(&spec).is_err());
}

#[test]
fn decisions_never_charge_more_than_the_value() {
    let mut d = samples::decision();
    d.allocations[0].payment = d.allocations[0].value + 1.0;
    assert!(matches!(encode(&d), Err(EncodeError::Invalid { .. })));
    assert_eq!(samples::decision().message_id(), "42/host-a");
}

#[test]
fn garbage_truncation_and_oversize_are_typed_errors() {
    for bytes in [
        encode(&samples::bid()).unwrap(),
        encode(&samples::decision()).unwrap(),
        encode(&samples::forecast()).unwrap(),
        encode(&samples::telemetry()).unwrap(),
    ] {
        for cut in 0..bytes.len() {
            assert!(decode::<Bid>(&bytes[..cut]).is_err());
            assert!(decode::<Decision>(&bytes[..cut]).is_err());
        }
    }
    for junk in [&b""[..], b"\xc1", b"\xff\xff\xff", b"{\"version\":1}", b"\x91\x01", b"\x80"] {
        assert!(matches!(decode::<Bid>(junk), Err(DecodeError::Malformed(_))), "{junk:?}");
    }
    // A map that claims four billion entries, and an array nested far deeper than any message.
    assert!(decode::<Bid>(b"\xdf\xff\xff\xff\xff").is_err());
    let deep: Vec<u8> = std::iter::repeat_n(0x91u8, 100_000).chain([0x01]).collect();
    assert!(decode::<Bid>(&deep).is_err());
    let huge = vec![0u8; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(decode::<Bid>(&huge), Err(DecodeError::TooLarge { .. })));
}

#[test]
fn oversized_messages_are_refused_before_sending() {
    let mut f = samples::forecast();
    f.model_version = "x".repeat(2000);
    assert!(matches!(encode(&f), Err(EncodeError::Invalid { .. })));
}
