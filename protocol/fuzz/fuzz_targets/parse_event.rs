//! `Event::parse` on arbitrary bytes. An event that parses must re-encode with `Event::encode`
//! to its own bytes, except two header/flag fields the parser does not tie to the rest: the
//! header's request id (the encoder writes the sequence's low 32 bits) and the truncated flag
//! (the encoder sets it only when it cuts a longer name itself). `set_sequence` on the bytes
//! must change the sequence and nothing else.
//!
//! Each input is checked as given and again with a valid magic and length field.
#![no_main]

use ctxguard_protocol::{EVENT_FIXED_BYTES, Event, HEADER_BYTES, Header, MAX_EVENT_NAME_UNITS, command, status};
use ctxguard_protocol_fuzz::check_as_is_and_with_valid_header;
use libfuzzer_sys::fuzz_target;

/// Byte offset of the event's `flags u32`: `kind`, `name_units`, `pid`, `sequence` and `time` come first.
const FLAGS_AT: usize = HEADER_BYTES + 24;

fn check(data: &[u8]) {
    // set_sequence must be safe on any buffer, parseable or not.
    let mut renumbered = data.to_vec();
    let fits = Event::set_sequence(&mut renumbered, 0x0123_4567_89ab_cdef);
    assert_eq!(fits, data.len() >= HEADER_BYTES + 16);

    let event = match Event::parse(data) {
        Ok(event) => event,
        Err(error) => {
            assert_ne!(status::name(status::of(error)), "an NTSTATUS", "{error}");
            return;
        }
    };
    let header = Header::parse(data).expect("a parsed event has a valid header");
    assert_eq!(header.command, command::EVENT);
    assert!(event.name.len() <= MAX_EVENT_NAME_UNITS);
    assert_eq!(data.len(), Event::encoded_len(event.name.len()));
    assert!(data.len() >= HEADER_BYTES + EVENT_FIXED_BYTES);

    let name: Vec<u16> = event.name.units().collect();
    assert!(event.name.eq_units(&name));
    let mut out = vec![0; data.len()];
    let length =
        Event::encode(event.kind, event.pid, event.sequence, event.time, &name, &mut out).expect("a parsed event re-encodes");
    assert_eq!(length, data.len());
    let mut expected = data.to_vec();
    #[allow(clippy::cast_possible_truncation)] // the header carries the sequence's low 32 bits by design.
    expected[12..16].copy_from_slice(&(event.sequence as u32).to_le_bytes());
    expected[FLAGS_AT..FLAGS_AT + 4].fill(0);
    assert_eq!(out, expected, "{event:?} did not re-encode to its own bytes");
    let reparsed = Event::parse(&out).expect("a re-encoded event parses");
    assert_eq!(reparsed, Event { truncated: false, ..event });

    let after = Event::parse(&renumbered).expect("renumbering keeps an event valid");
    assert_eq!(after, Event { sequence: 0x0123_4567_89ab_cdef, ..event });
    assert_eq!(Header::parse(&renumbered).expect("header").request_id, 0x89ab_cdef);
}

fuzz_target!(|data: &[u8]| check_as_is_and_with_valid_header(data, check));
