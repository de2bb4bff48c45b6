//! Property tests: whatever valid message a client builds survives the codec unchanged, and no
//! sequence of bytes makes the decoder panic.

use entente_protocol::{samples, *};
use proptest::prelude::*;

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![0..=10_000u64, 0..=MAX_AMOUNT]
}

fn resources() -> impl Strategy<Value = ResourceVector> {
    proptest::array::uniform6(amount()).prop_map(ResourceVector::from_array)
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,64}"
}

fn offer() -> impl Strategy<Value = Offer> {
    let resource = proptest::sample::select(Resource::ALL.to_vec());
    prop_oneof![
        Just(Offer::Keep),
        Just(Offer::Request),
        (resource.clone(), resource).prop_map(|(give, take)| Offer::TradeOff { give, take }),
        any::<u64>().prop_map(|delay_ms| Offer::Delay { delay_ms }),
    ]
}

fn bid() -> impl Strategy<Value = Bid> {
    let bundle = (resources(), 0.0..1e12f64, offer());
    (any::<u128>(), 1..u64::MAX, token(), token(), proptest::collection::vec(bundle, 1..=16), 1..=64u32, any::<bool>())
        .prop_map(|(id, round, host, workload, bundles, standing_rounds, fallback)| Bid {
            bid_id: uuid::Uuid::from_u128(id),
            round,
            host: HostId::new(host).unwrap(),
            workload: WorkloadId::new(workload).unwrap(),
            bundles: bundles
                .into_iter()
                .enumerate()
                .map(|(i, (alloc, value, offer))| Bundle { id: format!("b{i}"), alloc, value, offer })
                .collect(),
            standing_rounds,
            forecast: if fallback {
                ForecastSource::Fallback
            } else {
                ForecastSource::Predictor { model_version: "m1".into() }
            },
        })
}

fn telemetry() -> impl Strategy<Value = TelemetrySample> {
    let rate = 0.0..1e12f64;
    let pct = proptest::option::of(0.0..=100.0f64);
    (token(), token(), any::<u64>(), 1..u32::MAX, proptest::array::uniform6(rate), proptest::array::uniform6(pct))
        .prop_map(|(host, workload, at, interval, u, p)| TelemetrySample {
            host: HostId::new(host).unwrap(),
            workload: WorkloadId::new(workload).unwrap(),
            at_unix_ms: at,
            interval_ms: interval,
            usage: Usage {
                cpu_millicores: u[0],
                memory_bytes: u[1],
                disk_read_bps: u[2],
                disk_write_bps: u[3],
                net_rx_bps: u[4],
                net_tx_bps: u[5],
            },
            pressure: Pressure {
                source: PsiSource::Host,
                cpu_some: p[0],
                cpu_full: p[1],
                memory_some: p[2],
                memory_full: p[3],
                io_some: p[4],
                io_full: p[5],
            },
            counters: samples::telemetry().counters,
            scheduler: samples::telemetry().scheduler,
        })
}

proptest! {
    #[test]
    fn bids_round_trip(b in bid()) {
        let bytes = encode(&b).unwrap();
        prop_assert_eq!(decode::<Bid>(&bytes).unwrap(), b);
    }

    #[test]
    fn telemetry_round_trips(t in telemetry()) {
        let bytes = encode(&t).unwrap();
        prop_assert_eq!(decode::<TelemetrySample>(&bytes).unwrap(), t);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<Bid>(&bytes);
        let _ = decode::<Decision>(&bytes);
        let _ = decode::<Forecast>(&bytes);
        let _ = decode::<WorkloadSpec>(&bytes);
    }

    #[test]
    fn corrupted_messages_never_panic_and_never_decode_to_invalid_values(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let mut bytes = encode(&samples::bid()).unwrap();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(b) = decode::<Bid>(&bytes) {
            // Whatever survives corruption still satisfies every invariant.
            prop_assert!(b.validate().is_ok());
        }
    }
}
