//! Fuzzes the decoder with arbitrary bytes: it must never panic, and whatever it accepts must
//! satisfy the message's invariants and survive re-encoding.
//!
//! Run with `cargo +nightly fuzz run decode` from `protocol/` (not part of CI).
#![no_main]

use entente_protocol::*;
use libfuzzer_sys::fuzz_target;

fn check<M: Message + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(message) = decode::<M>(data) {
        assert!(message.validate().is_ok());
        let again = encode(&message).expect("a decoded message re-encodes");
        assert_eq!(decode::<M>(&again).expect("and decodes again"), message);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Bid>(data);
    check::<Decision>(data);
    check::<TelemetrySample>(data);
    check::<Forecast>(data);
    check::<WorkloadSpec>(data);
    check::<HostRegistration>(data);
    check::<RoundAnnouncement>(data);
    check::<Rejection>(data);
    check::<RegistrationReply>(data);
});
