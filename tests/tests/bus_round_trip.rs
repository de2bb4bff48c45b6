//! The typed bus against a real nats-server: every message type travels and decodes, requests
//! get typed answers, garbage reaches subscribers as errors, decisions are deduplicated and
//! replayable on JetStream, and the connection survives a server restart.

use entente_protocol::bus::{BusError, DecisionsStreamConfig, ReplayFrom};
use entente_protocol::{samples, *};
use entente_tests::NatsServer;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

async fn next<M: Message>(inbox: &mut entente_protocol::bus::Inbox<M>) -> entente_protocol::bus::Received<M> {
    tokio::time::timeout(WAIT, inbox.next()).await.expect("message within 5 s").expect("subscription open")
}

#[tokio::test]
async fn every_message_type_crosses_a_real_server() {
    let nats = NatsServer::start();
    let bus = nats.bus().await;
    let s = bus.subjects().clone();
    let host = samples::host();

    let mut telemetry = bus.subscribe::<TelemetrySample>(s.telemetry_all()).await.unwrap();
    let mut forecasts = bus.subscribe::<Forecast>(s.forecast_all()).await.unwrap();
    let mut rounds = bus.subscribe::<RoundAnnouncement>(s.round()).await.unwrap();
    let mut bids = bus.subscribe::<Bid>(s.bids_all()).await.unwrap();
    let mut rejections = bus.subscribe::<Rejection>(s.rejections(&host)).await.unwrap();
    let mut hosts = bus.subscribe::<HostRegistration>(s.register_host()).await.unwrap();
    let mut specs = bus.subscribe::<WorkloadSpec>(s.register_workload()).await.unwrap();

    bus.publish_telemetry(&samples::telemetry()).await.unwrap();
    bus.publish_forecast(&samples::forecast()).await.unwrap();
    bus.announce_round(&samples::round()).await.unwrap();
    bus.submit_bid(&samples::bid()).await.unwrap();
    bus.publish_rejection(&samples::rejection()).await.unwrap();

    let t = next(&mut telemetry).await;
    assert_eq!(t.subject, "entente.telemetry.host-a.redis");
    assert_eq!(t.message.unwrap(), samples::telemetry());
    assert_eq!(next(&mut forecasts).await.message.unwrap(), samples::forecast());
    assert_eq!(next(&mut rounds).await.message.unwrap(), samples::round());
    let b = next(&mut bids).await;
    assert_eq!(s.parse(&b.subject).unwrap(), Subject::Bids { host: host.clone() });
    assert_eq!(b.message.unwrap(), samples::bid());
    assert_eq!(next(&mut rejections).await.message.unwrap(), samples::rejection());

    // Registrations are requests: answer them as the arbiter would.
    let responder = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let h = next(&mut hosts).await;
            assert_eq!(h.message.unwrap(), samples::host_registration());
            bus.reply(h.reply.unwrap(), &RegistrationReply::Accepted).await.unwrap();
            let w = next(&mut specs).await;
            assert_eq!(w.message.unwrap(), samples::workload_spec());
            bus.reply(w.reply.unwrap(), &samples::registration_reply()).await.unwrap();
        })
    };
    assert_eq!(bus.register_host(&samples::host_registration()).await.unwrap(), RegistrationReply::Accepted);
    assert_eq!(bus.register_workload(&samples::workload_spec()).await.unwrap(), samples::registration_reply());
    responder.await.unwrap();
}

#[tokio::test]
async fn requests_without_a_responder_fail_fast_and_typed() {
    let nats = NatsServer::start();
    let bus = nats.bus().await;
    match bus.register_host(&samples::host_registration()).await {
        Err(BusError::NoResponders { subject }) => assert_eq!(subject, "entente.register.host"),
        other => panic!("expected NoResponders, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_reaches_subscribers_as_decode_errors() {
    let nats = NatsServer::start();
    let bus = nats.bus().await;
    let subject = bus.subjects().bids(&samples::host());
    let mut bids = bus.subscribe::<Bid>(bus.subjects().bids_all()).await.unwrap();
    bus.client().publish(subject.clone(), "not msgpack at all".into()).await.unwrap();
    bus.publish(subject.clone(), &samples::decision()).await.unwrap();
    bus.submit_bid(&samples::bid()).await.unwrap();
    assert!(matches!(next(&mut bids).await.message, Err(DecodeError::Malformed(_))));
    assert!(matches!(next(&mut bids).await.message, Err(DecodeError::WrongKind { .. })));
    assert_eq!(next(&mut bids).await.message.unwrap(), samples::bid(), "the subscription survives garbage");
}

#[tokio::test]
async fn decisions_are_published_once_per_round_and_host_and_replayable() {
    let nats = NatsServer::start();
    let bus = nats.bus().await;
    bus.ensure_decisions_stream(&DecisionsStreamConfig::default()).await.unwrap();
    // Creating it again is harmless.
    bus.ensure_decisions_stream(&DecisionsStreamConfig::default()).await.unwrap();

    let first = bus.publish_decision(&samples::decision()).await.unwrap();
    assert!(!first.duplicate);
    let again = bus.publish_decision(&samples::decision()).await.unwrap();
    assert!(again.duplicate, "a re-published round/host is dropped by the stream");
    assert_eq!(again.sequence, first.sequence);

    let other_host = HostId::new("host-b").unwrap();
    let mut next_round = samples::decision();
    next_round.round = 43;
    bus.publish_decision(&next_round).await.unwrap();
    let mut elsewhere = samples::decision();
    elsewhere.host = other_host.clone();
    bus.publish_decision(&elsewhere).await.unwrap();

    let collect = |from: ReplayFrom, host: Option<HostId>| {
        let bus = bus.clone();
        async move {
            let mut feed = bus.decisions(from, host.as_ref()).await.unwrap();
            let mut seen = Vec::new();
            while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(500), feed.next()).await {
                let d = item.unwrap().decision.unwrap();
                seen.push((d.round, d.host.to_string()));
            }
            seen
        }
    };
    let a = || "host-a".to_string();
    assert_eq!(collect(ReplayFrom::All, None).await, vec![(42, a()), (43, a()), (42, "host-b".into())]);
    assert_eq!(collect(ReplayFrom::Round(43), None).await, vec![(43, a())]);
    assert_eq!(collect(ReplayFrom::All, Some(other_host)).await, vec![(42, "host-b".into())]);

    // A live follower sees what is published after it started, and nothing before.
    let mut live = bus.decisions(ReplayFrom::New, None).await.unwrap();
    let mut later = samples::decision();
    later.round = 44;
    bus.publish_decision(&later).await.unwrap();
    let got = tokio::time::timeout(WAIT, live.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(got.decision.unwrap().round, 44);
}

#[tokio::test]
async fn the_bus_reconnects_after_the_server_restarts() {
    let mut nats = NatsServer::start();
    let bus = nats.bus().await;
    let mut rounds = bus.subscribe::<RoundAnnouncement>(bus.subjects().round()).await.unwrap();
    bus.announce_round(&samples::round()).await.unwrap();
    assert_eq!(next(&mut rounds).await.message.unwrap().round, 42);

    nats.restart();

    // Publish until the reconnected client's subscription is re-established server-side.
    let mut later = samples::round();
    later.round = 43;
    let got = entente_tests::eventually(Duration::from_secs(15), async || {
        let _ = bus.announce_round(&later).await;
        tokio::time::timeout(Duration::from_millis(200), rounds.next()).await.ok().flatten()
    })
    .await
    .expect("a round announced after the restart arrives");
    assert_eq!(got.message.unwrap().round, 43);
}

#[tokio::test]
async fn bad_connection_settings_are_clear_errors() {
    let mut config = entente_protocol::bus::BusConfig { prefix: "bad prefix".into(), ..Default::default() };
    assert!(matches!(entente_protocol::bus::Bus::connect(&config).await, Err(BusError::Subject(_))));
    config.prefix = "entente".into();
    config.user = Some("me".into());
    assert!(matches!(entente_protocol::bus::Bus::connect(&config).await, Err(BusError::Config(_))));
    config.user = None;
    config.url = format!("nats://127.0.0.1:{}", entente_tests::free_port());
    config.connect_timeout = Duration::from_millis(500);
    assert!(matches!(entente_protocol::bus::Bus::connect(&config).await, Err(BusError::Connect { .. })));
}
