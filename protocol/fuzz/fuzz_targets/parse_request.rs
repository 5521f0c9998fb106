//! `Request::parse` on arbitrary bytes. A request that parses must re-encode to the very bytes
//! it came from (the format has one encoding per request: exact body lengths, zero reserved
//! bytes), except Hello's header version, which any value passes and the encoder writes as this
//! build's. Every strict prefix of a parsed request must be refused.
//!
//! Each input is checked as given and again with a valid magic and length field, so that most
//! inputs get past the header to the body checks.
#![no_main]

use ctxguard_protocol::{
    HEADER_BYTES, MAX_PREFIX_UNITS, MAX_REQUEST_BYTES, PROTOCOL_MIN_VERSION, PROTOCOL_VERSION, Request, encode_request, status,
};
use ctxguard_protocol_fuzz::check_as_is_and_with_valid_header;
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    let (header, request) = match Request::parse(data) {
        Ok(parsed) => parsed,
        Err(error) => {
            // Every refusal has a status the companion can name.
            assert_ne!(status::name(status::of(error)), "an NTSTATUS", "{error}");
            return;
        }
    };
    assert!(data.len() <= MAX_REQUEST_BYTES);
    assert_eq!(header.length as usize, data.len());
    assert_eq!(header.command, request.command());
    match request {
        Request::Hello { min_version, max_version } => assert!(min_version <= max_version),
        Request::QueryHandles(query) => {
            assert!(query.prefix.len() <= MAX_PREFIX_UNITS);
            assert!(!query.any_pid || query.pid == 0);
        }
        Request::GetStats | Request::ListStreams { .. } => {
            assert!((PROTOCOL_MIN_VERSION..=PROTOCOL_VERSION).contains(&header.version));
        }
    }

    // The input's own length is exactly enough, one byte less is not.
    let mut out = vec![0; data.len()];
    let length = encode_request(&request, header.request_id, &mut out).expect("a parsed request re-encodes");
    assert_eq!(length, data.len());
    assert!(encode_request(&request, header.request_id, &mut out[..length - 1]).is_err());
    let mut expected = data.to_vec();
    if matches!(request, Request::Hello { .. }) {
        expected[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    }
    assert_eq!(out, expected, "{request:?} did not re-encode to its own bytes");
    let (reparsed_header, reparsed) = Request::parse(&out).expect("a re-encoded request parses");
    assert_eq!(reparsed, request);
    assert_eq!(reparsed_header.request_id, header.request_id);

    // A cut message is refused, never read as a shorter request.
    for cut in 0..data.len() {
        assert!(Request::parse(&data[..cut]).is_err(), "prefix of {cut} bytes parsed");
    }
    assert!(data.len() >= HEADER_BYTES);
}

fuzz_target!(|data: &[u8]| check_as_is_and_with_valid_header(data, check));
