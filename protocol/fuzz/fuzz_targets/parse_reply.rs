//! `Reply::parse` on arbitrary bytes. A reply that parses must re-encode, with the crate's own
//! encoders (`encode_hello_reply`, `encode_stats_reply`, `ListWriter`), to the very bytes it came
//! from (Hello's header version aside: any passes, the encoder writes this build's); every entry
//! of a list page is reachable and its name is a well-formed `Utf16Le` view.
//!
//! Each input is checked as given and again with a valid magic and length field.
#![no_main]

use ctxguard_protocol::{
    HEADER_BYTES, LIST_FIXED_BYTES, ListWriter, PROTOCOL_VERSION, Reply, command, encode_hello_reply, encode_stats_reply, status,
};
use ctxguard_protocol_fuzz::check_as_is_and_with_valid_header;
use libfuzzer_sys::fuzz_target;

/// Checks what a name view promises: an even byte count, units that read back as those bytes.
fn check_name(name: ctxguard_protocol::Utf16Le<'_>) -> Vec<u16> {
    let units: Vec<u16> = name.units().collect();
    assert_eq!(units.len(), name.len());
    assert_eq!(name.as_bytes().len(), 2 * name.len());
    assert_eq!(name.is_empty(), units.is_empty());
    assert!(name.eq_units(&units));
    let bytes: Vec<u8> = units.iter().flat_map(|unit| unit.to_le_bytes()).collect();
    assert_eq!(bytes, name.as_bytes());
    // Display replaces unpaired surrogates; it must not fail.
    let text = name.to_string();
    assert!(text.chars().count() <= units.len());
    units
}

fn check(data: &[u8]) {
    let (header, reply) = match Reply::parse(data) {
        Ok(parsed) => parsed,
        Err(error) => {
            assert_ne!(status::name(status::of(error)), "an NTSTATUS", "{error}");
            return;
        }
    };
    assert_eq!(header.length as usize, data.len());
    assert_ne!(header.command & command::REPLY, 0);
    let mut expected = data.to_vec();
    let mut out = vec![0; data.len()];
    let length = match reply {
        Reply::Hello(hello) => {
            expected[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
            encode_hello_reply(&hello, header.request_id, &mut out).expect("a parsed Hello reply re-encodes")
        }
        Reply::Stats(stats) => encode_stats_reply(&stats, header.request_id, &mut out).expect("a parsed stats reply re-encodes"),
        Reply::Streams(page) => {
            assert!(data.len() >= HEADER_BYTES + LIST_FIXED_BYTES);
            let mut writer = ListWriter::streams(&mut out, header.request_id, u32::from(page.count)).expect("room for the page");
            let mut seen = 0usize;
            for entry in page.entries() {
                let name = check_name(entry.name);
                writer
                    .push_stream(entry.open_handles, entry.first_opener_pid, entry.first_open_time, &name)
                    .expect("a parsed stream entry fits where it came from");
                seen += 1;
            }
            assert_eq!(seen, usize::from(page.count), "entries() stopped short of count");
            writer.finish(page.next_cursor, page.more())
        }
        Reply::Handles(page) => {
            assert!(data.len() >= HEADER_BYTES + LIST_FIXED_BYTES);
            let mut writer = ListWriter::handles(&mut out, header.request_id, u32::from(page.count)).expect("room for the page");
            let mut seen = 0usize;
            for entry in page.entries() {
                let name = check_name(entry.name);
                writer
                    .push_handle(entry.pid, entry.desired_access, entry.share_access, entry.create_time, &name)
                    .expect("a parsed handle entry fits where it came from");
                seen += 1;
            }
            assert_eq!(seen, usize::from(page.count), "entries() stopped short of count");
            writer.finish(page.next_cursor, page.more())
        }
    };
    assert_eq!(length, data.len());
    assert_eq!(out, expected, "{reply:?} did not re-encode to its own bytes");
    assert_eq!(Reply::parse(&out).expect("a re-encoded reply parses").1, reply);
}

fuzz_target!(|data: &[u8]| check_as_is_and_with_valid_header(data, check));
