//! `ConnectContext::parse` and version negotiation on arbitrary bytes. A context that parses
//! is exactly 16 bytes and re-encodes to them; negotiation answers the newest version in both
//! the client's range and this build's, or none exactly when the ranges do not overlap.
#![no_main]

use ctxguard_protocol::{
    CONNECT_CONTEXT_BYTES, CONNECT_FLAG_EVENTS, ConnectContext, MAGIC, PROTOCOL_MIN_VERSION, PROTOCOL_VERSION, negotiate,
};
use libfuzzer_sys::fuzz_target;

/// The documented answer, computed by searching the range instead of by arithmetic.
fn check_negotiation(min: u16, max: u16, answer: Option<u16>) {
    let newest_common = (PROTOCOL_MIN_VERSION..=PROTOCOL_VERSION).rev().find(|version| (min..=max).contains(version));
    assert_eq!(answer, newest_common, "negotiate({min}, {max})");
}

fn check(data: &[u8]) {
    // The free function on any pair, ordered or not.
    if let [a, b, c, d, ..] = *data {
        let (min, max) = (u16::from_le_bytes([a, b]), u16::from_le_bytes([c, d]));
        check_negotiation(min, max, negotiate(min, max));
    }
    let Ok(context) = ConnectContext::parse(data) else { return };
    assert_eq!(data.len(), CONNECT_CONTEXT_BYTES);
    assert_eq!(context.encode().as_slice(), data, "{context:?} did not re-encode to its own bytes");
    assert!(context.min_version <= context.max_version);
    assert_eq!(context.flags & !CONNECT_FLAG_EVENTS, 0);
    check_negotiation(context.min_version, context.max_version, context.negotiate());
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // Again with a valid magic, so that most 16-byte inputs reach the field checks.
    if data.len() >= 4 && data[..4] != MAGIC.to_le_bytes() {
        let mut patched = data.to_vec();
        patched[..4].copy_from_slice(&MAGIC.to_le_bytes());
        check(&patched);
    }
});
