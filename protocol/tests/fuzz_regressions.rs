//! Inputs found by the libFuzzer targets in `protocol/fuzz/` (see docs/port.md, "Fuzzing"),
//! each pinned as the exact message that exposed the bug.

use ctxguard_protocol::{HelloReply, ParseError, Reply};

/// `parse_reply` (2026-11-22): a Hello reply whose trailing reserved u16 is not zero
/// (`06 5d`) parsed, so it could not re-encode to its own bytes and broke the rule that
/// reserved bytes are zero. This is the crash artifact with the length field the harness
/// makes valid (32); its header version 0xffcb is legal, Hello replies take any version.
const HELLO_REPLY_WITH_RESERVED_SET: [u8; 32] = [
    0x43, 0x58, 0x47, 0x50, 0xcb, 0xff, 0x01, 0x80, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, //
    0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x06, 0x5d,
];

#[test]
fn hello_reply_with_a_nonzero_reserved_field_is_refused() {
    assert_eq!(Reply::parse(&HELLO_REPLY_WITH_RESERVED_SET), Err(ParseError::Malformed));
    // The same reply with the reserved field cleared is well-formed, so the refusal is about
    // that field alone.
    let mut cleared = HELLO_REPLY_WITH_RESERVED_SET;
    cleared[30..32].fill(0);
    let (_, reply) = Reply::parse(&cleared).unwrap();
    let expected = HelloReply {
        version: 0,
        driver_min_version: 0xff00,
        driver_max_version: 0xffff,
        max_connections: 0xfeff,
        driver_version: [0xffff, 0x00ff, 0],
    };
    assert_eq!(reply, Reply::Hello(expected));
    // Either reserved byte alone is enough to refuse it.
    for at in [30, 31] {
        let mut one = cleared;
        one[at] = 1;
        assert_eq!(Reply::parse(&one), Err(ParseError::Malformed), "byte {at}");
    }
}
