//! Round-trip and robustness properties of the wire format.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // Test data sizes are small.

use ctxguard_protocol::{
    CONNECT_FLAG_EVENTS, ConnectContext, Event, EventKind, HEADER_BYTES, HandleQuery, Header, HelloReply, KindStats, ListWriter,
    MAX_EVENT_NAME_UNITS, MAX_REQUEST_BYTES, PROTOCOL_VERSION, ParseError, Reply, Request, StatsReply, Utf16Le, command,
    encode_hello_reply, encode_request, encode_stats_reply, status,
};
use proptest::prelude::*;

fn wire(units: &[u16]) -> Vec<u8> {
    units.iter().flat_map(|unit| unit.to_le_bytes()).collect()
}

fn units(name: Utf16Le<'_>) -> Vec<u16> {
    name.units().collect()
}

/// A request described by owned data, so proptest can generate it.
#[derive(Clone, Debug)]
enum OwnedRequest {
    Hello(u16, u16),
    GetStats,
    ListStreams(u32, u32),
    QueryHandles { pid: u32, any_pid: bool, cursor: u32, max_entries: u32, prefix: Vec<u8> },
}

impl OwnedRequest {
    fn borrow(&self) -> Request<'_> {
        match self {
            Self::Hello(min, max) => Request::Hello { min_version: *min, max_version: *max },
            Self::GetStats => Request::GetStats,
            Self::ListStreams(cursor, max_entries) => Request::ListStreams { cursor: *cursor, max_entries: *max_entries },
            Self::QueryHandles { pid, any_pid, cursor, max_entries, prefix } => Request::QueryHandles(HandleQuery {
                pid: *pid,
                any_pid: *any_pid,
                cursor: *cursor,
                max_entries: *max_entries,
                prefix: Utf16Le::new(prefix).unwrap(),
            }),
        }
    }
}

fn request_strategy() -> impl Strategy<Value = OwnedRequest> {
    prop_oneof![
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| OwnedRequest::Hello(a.min(b), a.max(b))),
        Just(OwnedRequest::GetStats),
        (any::<u32>(), any::<u32>()).prop_map(|(cursor, max)| OwnedRequest::ListStreams(cursor, max)),
        (any::<u32>(), any::<bool>(), any::<u32>(), any::<u32>(), prop::collection::vec(any::<u16>(), 0..300)).prop_map(
            |(pid, any_pid, cursor, max_entries, prefix)| OwnedRequest::QueryHandles {
                pid: if any_pid { 0 } else { pid },
                any_pid,
                cursor,
                max_entries,
                prefix: wire(&prefix),
            }
        ),
    ]
}

type OwnedStream = (u32, u32, i64, Vec<u16>);
type OwnedHandle = (u32, u32, u32, i64, Vec<u16>);

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip(request in request_strategy(), id in any::<u32>()) {
        let mut out = vec![0; MAX_REQUEST_BYTES];
        let length = encode_request(&request.borrow(), id, &mut out).unwrap();
        let (header, parsed) = Request::parse(&out[..length]).unwrap();
        prop_assert_eq!(header.request_id, id);
        prop_assert_eq!(header.length as usize, length);
        prop_assert_eq!(parsed, request.borrow());
        // Every strict prefix of a valid request is refused, never misread.
        for cut in 0..length {
            prop_assert!(Request::parse(&out[..cut]).is_err());
        }
    }

    #[test]
    fn hello_and_stats_replies_round_trip(version in any::<u16>(), id in any::<u32>(), values in prop::collection::vec(any::<u64>(), 23)) {
        let hello = HelloReply { version, driver_min_version: 1, driver_max_version: version, max_connections: 4, driver_version: [0, 1, version] };
        let mut out = [0u8; 512];
        let length = encode_hello_reply(&hello, id, &mut out).unwrap();
        prop_assert_eq!(Reply::parse(&out[..length]).unwrap(), (Header::new(command::HELLO | command::REPLY, length as u32, id), Reply::Hello(hello)));
        let kind = |at: usize| KindStats { allocated: values[at], attached: values[at + 1], collisions: values[at + 2], freed: values[at + 3], live: values[at + 4], high_water: values[at + 5] };
        let stats = StatsReply { instance: kind(0), stream: kind(6), stream_handle: kind(12), open_handles: values[18], events_sent: values[19], events_dropped: values[20], events_queued: values[21], connections: values[22] };
        let length = encode_stats_reply(&stats, id, &mut out).unwrap();
        prop_assert_eq!(Reply::parse(&out[..length]).unwrap().1, Reply::Stats(stats));
        prop_assert!(encode_stats_reply(&stats, id, &mut out[..length - 1]).is_err());
    }

    #[test]
    fn stream_pages_round_trip_and_stop_when_full(
        entries in prop::collection::vec((any::<u32>(), any::<u32>(), any::<i64>(), prop::collection::vec(any::<u16>(), 0..80)), 0..40),
        capacity in 24usize..4096,
        max_entries in 0u32..50,
    ) {
        let mut out = vec![0; capacity];
        let mut writer = ListWriter::streams(&mut out, 7, max_entries).unwrap();
        let mut written: Vec<OwnedStream> = Vec::new();
        for (handles, pid, time, name) in &entries {
            if writer.push_stream(*handles, *pid, *time, name).is_err() {
                break;
            }
            written.push((*handles, *pid, *time, name.clone()));
        }
        let more = written.len() < entries.len();
        let length = writer.finish(written.len() as u32, more);
        let (header, reply) = Reply::parse(&out[..length]).unwrap();
        prop_assert_eq!(header.request_id, 7);
        let Reply::Streams(page) = reply else { panic!("not a stream page") };
        prop_assert_eq!(page.more(), more);
        if max_entries > 0 { prop_assert!(written.len() <= max_entries as usize); }
        let parsed: Vec<OwnedStream> = page.entries().map(|entry| (entry.open_handles, entry.first_opener_pid, entry.first_open_time, units(entry.name))).collect();
        prop_assert_eq!(parsed, written);
    }

    #[test]
    fn handle_pages_round_trip(
        entries in prop::collection::vec((any::<u32>(), any::<u32>(), any::<u32>(), any::<i64>(), prop::collection::vec(any::<u16>(), 0..80)), 0..30),
    ) {
        let mut out = vec![0; 64 * 1024];
        let mut writer = ListWriter::handles(&mut out, 1, 0).unwrap();
        for (pid, access, share, time, name) in &entries {
            writer.push_handle(*pid, *access, *share, *time, name).unwrap();
        }
        let length = writer.finish(9, false);
        let Reply::Handles(page) = Reply::parse(&out[..length]).unwrap().1 else { panic!("not a handle page") };
        prop_assert_eq!(page.next_cursor, 9);
        let parsed: Vec<OwnedHandle> = page.entries().map(|entry| (entry.pid, entry.desired_access, entry.share_access, entry.create_time, units(entry.name))).collect();
        prop_assert_eq!(parsed, entries);
    }

    #[test]
    fn events_round_trip_and_truncate(open in any::<bool>(), pid in any::<u32>(), sequence in any::<u64>(), time in any::<i64>(), name in prop::collection::vec(any::<u16>(), 0..1500)) {
        let kind = if open { EventKind::Open } else { EventKind::Close };
        let mut out = vec![0; Event::encoded_len(name.len())];
        let length = Event::encode(kind, pid, sequence, time, &name, &mut out).unwrap();
        prop_assert_eq!(length, out.len());
        let event = Event::parse(&out).unwrap();
        prop_assert_eq!((event.kind, event.pid, event.sequence, event.time), (kind, pid, sequence, time));
        prop_assert_eq!(event.truncated, name.len() > MAX_EVENT_NAME_UNITS);
        prop_assert_eq!(units(event.name), name[..name.len().min(MAX_EVENT_NAME_UNITS)].to_vec());
        let renumbered = sequence.wrapping_add(17);
        prop_assert!(Event::set_sequence(&mut out, renumbered));
        let event = Event::parse(&out).unwrap();
        prop_assert_eq!((event.sequence, event.pid, event.time), (renumbered, pid, time));
        prop_assert_eq!(Header::parse(&out).unwrap().request_id, renumbered as u32);
        prop_assert!(!Event::set_sequence(&mut out[..HEADER_BYTES + 15], 1));
    }

    /// Arbitrary bytes never panic any parser, and whatever parses re-encodes to the same bytes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), patch_header in any::<bool>(), command in any::<u16>()) {
        let mut bytes = bytes;
        if patch_header && bytes.len() >= HEADER_BYTES {
            let length = bytes.len() as u32;
            Header { magic: ctxguard_protocol::MAGIC, version: PROTOCOL_VERSION, command, length, request_id: 0 }.encode(&mut bytes).unwrap();
        }
        if let Ok((header, request)) = Request::parse(&bytes) {
            let mut out = vec![0; bytes.len()];
            let length = encode_request(&request, header.request_id, &mut out).unwrap();
            // Hello parses at any version; the encoder always writes this build's.
            out[4..6].copy_from_slice(&header.version.to_le_bytes());
            prop_assert_eq!(&out[..length], &bytes[..]);
        }
        let _ = Reply::parse(&bytes);
        let _ = Event::parse(&bytes);
        let _ = ConnectContext::parse(&bytes);
    }
}

fn request_bytes(request: &Request<'_>) -> Vec<u8> {
    let mut out = vec![0; MAX_REQUEST_BYTES];
    let length = encode_request(request, 1, &mut out).unwrap();
    out.truncate(length);
    out
}

#[test]
fn each_malformation_has_its_error_and_status() {
    let stats = request_bytes(&Request::GetStats);
    assert_eq!(Request::parse(&stats[..HEADER_BYTES - 1]), Err(ParseError::TooShort));
    assert_eq!(Request::parse(&vec![0; MAX_REQUEST_BYTES + 1]), Err(ParseError::TooLong));

    let mut bad_magic = stats.clone();
    bad_magic[0] ^= 1;
    assert_eq!(Request::parse(&bad_magic), Err(ParseError::BadMagic));

    let mut longer = stats.clone();
    longer.extend_from_slice(&[0; 8]);
    assert_eq!(Request::parse(&longer), Err(ParseError::LengthMismatch));
    longer[8..12].copy_from_slice(&24u32.to_le_bytes());
    assert_eq!(Request::parse(&longer), Err(ParseError::TooLong));

    let mut version = stats.clone();
    version[4..6].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
    assert_eq!(Request::parse(&version), Err(ParseError::UnsupportedVersion(PROTOCOL_VERSION + 1)));
    // Hello is understood at any version, so that a newer client learns the driver's range.
    let mut hello = request_bytes(&Request::Hello { min_version: 1, max_version: 9 });
    hello[4..6].copy_from_slice(&9u16.to_le_bytes());
    assert!(Request::parse(&hello).is_ok());

    let mut unknown = stats.clone();
    unknown[6..8].copy_from_slice(&0x77u16.to_le_bytes());
    assert_eq!(Request::parse(&unknown), Err(ParseError::UnknownCommand(0x77)));
    // A reply or an event is not a request.
    unknown[6..8].copy_from_slice(&command::EVENT.to_le_bytes());
    assert_eq!(Request::parse(&unknown), Err(ParseError::UnknownCommand(command::EVENT)));

    let prefix = wire(&[u16::from(b'C'), u16::from(b':')]);
    let query = request_bytes(&Request::QueryHandles(HandleQuery {
        pid: 4,
        any_pid: false,
        cursor: 0,
        max_entries: 0,
        prefix: Utf16Le::new(&prefix).unwrap(),
    }));
    // prefix_units claims more units than are present: the length is not trusted.
    let mut claims_more = query.clone();
    claims_more[26..28].copy_from_slice(&3u16.to_le_bytes());
    assert_eq!(Request::parse(&claims_more), Err(ParseError::TooShort));
    let mut claims_huge = query.clone();
    claims_huge[26..28].copy_from_slice(&u16::MAX.to_le_bytes());
    assert_eq!(Request::parse(&claims_huge), Err(ParseError::Malformed));
    let mut any_with_pid = query;
    any_with_pid[24..26].copy_from_slice(&1u16.to_le_bytes());
    assert_eq!(Request::parse(&any_with_pid), Err(ParseError::Malformed));

    assert_eq!(status::of(ParseError::TooShort), status::BUFFER_TOO_SMALL);
    assert_eq!(status::of(ParseError::TooLong), status::INVALID_BUFFER_SIZE);
    assert_eq!(status::of(ParseError::UnsupportedVersion(2)), status::REVISION_MISMATCH);
    assert_eq!(status::of(ParseError::UnknownCommand(2)), status::INVALID_DEVICE_REQUEST);
    assert_eq!(status::DATATYPE_MISALIGNMENT as u32, 0x8000_0002);
}

#[test]
fn connect_context_negotiates_versions() {
    let context = ConnectContext { min_version: 1, max_version: 5, flags: CONNECT_FLAG_EVENTS };
    let bytes = context.encode();
    assert_eq!(ConnectContext::parse(&bytes), Ok(context));
    assert_eq!(context.negotiate(), Some(PROTOCOL_VERSION));
    assert_eq!(ConnectContext { min_version: 2, max_version: 5, flags: 0 }.negotiate(), None);
    assert_eq!(ConnectContext::parse(&bytes[..15]), Err(ParseError::TooShort));
    let mut flags = bytes;
    flags[8] = 2;
    assert_eq!(ConnectContext::parse(&flags), Err(ParseError::Malformed));
}

#[test]
fn list_writer_refuses_a_buffer_without_room_for_an_empty_page() {
    let mut out = [0u8; 23];
    assert!(ListWriter::streams(&mut out, 0, 0).is_err());
}
