//! A generated-message campaign through the real ctxguard.sys in fltemu: valid requests,
//! mutated and truncated ones, random headers and bytes, delivered aligned, misaligned, with
//! short, missing, read-only or unmapped buffers. Every answer is checked against the protocol
//! crate as an oracle (the exact status, or a reply that parses and echoes the request id);
//! the driver must never stop, fltemu must record no violation, and the driver's pool must be
//! back to its baseline after every message batch and empty after unload.
//!
//! The suite runs 20,000 messages. The long campaign is the same test with a larger count:
//!
//! ```text
//! CTXGUARD_PORT_CAMPAIGN_MESSAGES=1000000 cargo test --release --test port_campaign -- --nocapture
//! ```
//!
//! (`CTXGUARD_PORT_CAMPAIGN_SEED` picks another seed; the figures are printed at the end.)
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]
// Random numbers are cut to field widths on purpose; figures are printed as f64.
#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss, clippy::too_many_lines)]

mod port_support;
mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use ctxguard_protocol::{
    ConnectContext, HEADER_BYTES, HandleQuery, Header, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Reply, Request, Utf16Le, command,
    encode_request, status,
};
use fltemu::{Access, OpenOptions, hresult_from_nt};
use port_support::{COMPANION_PID, assert_clean, connect_raw, load, unload_clean};

/// xorshift64*: small, seedable, good enough to spread the cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    fn bytes(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.next() as u8).collect()
    }
}

/// A number from the environment (decimal, or hex with `0x`); a value that does not parse
/// fails the test rather than silently running the default.
fn env_number(name: &str, default: u64) -> u64 {
    let Ok(value) = std::env::var(name) else { return default };
    let value = value.replace('_', "");
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    parsed.unwrap_or_else(|error| panic!("{name}={value}: {error}"))
}

/// A valid request of a random kind with random fields.
fn valid_request(rng: &mut Rng) -> Vec<u8> {
    let prefix_units = match rng.below(10) {
        0..=5 => 0,
        6..=8 => rng.below(40) as usize,
        _ => rng.below(32_768) as usize,
    };
    let prefix: Vec<u8> = (0..prefix_units)
        .flat_map(|_| {
            let unit = if rng.chance(3) {
                rng.next() as u16
            } else {
                u16::from(b"\\DeviceHarddiskVolume1docsABCxyz"[rng.below(32) as usize])
            };
            unit.to_le_bytes()
        })
        .collect();
    let any_pid = rng.chance(3);
    let request = match rng.below(4) {
        0 => {
            let a = rng.next() as u16 % 4;
            let b = rng.next() as u16 % 4;
            Request::Hello { min_version: a.min(b), max_version: a.max(b) }
        }
        1 => Request::GetStats,
        2 => Request::ListStreams {
            cursor: if rng.chance(2) { rng.below(40) as u32 } else { rng.next() as u32 },
            max_entries: rng.below(6) as u32,
        },
        _ => Request::QueryHandles(HandleQuery {
            pid: if any_pid { 0 } else { [100, 200, 1000, rng.next() as u32][rng.below(4) as usize] },
            any_pid,
            cursor: rng.below(8) as u32,
            max_entries: rng.below(4) as u32,
            prefix: Utf16Le::new(&prefix).unwrap(),
        }),
    };
    let mut out = vec![0; MAX_REQUEST_BYTES];
    let length = encode_request(&request, rng.next() as u32, &mut out).unwrap();
    out.truncate(length);
    out
}

/// A message from one of the generators.
fn generate(rng: &mut Rng) -> (Vec<u8>, &'static str) {
    match rng.below(10) {
        0..=2 => (valid_request(rng), "valid"),
        3 | 4 => {
            let mut message = valid_request(rng);
            for _ in 0..=rng.below(4) {
                let at = rng.below(message.len() as u64) as usize;
                message[at] ^= 1 << rng.below(8);
            }
            (message, "bit-flipped")
        }
        5 => {
            let mut message = valid_request(rng);
            if rng.chance(2) {
                message.truncate(rng.below(message.len() as u64) as usize);
            } else {
                let extra = rng.below(64) as usize;
                message.extend(rng.bytes(extra));
            }
            if rng.chance(2) && message.len() >= HEADER_BYTES {
                let length = message.len() as u32;
                message[8..12].copy_from_slice(&length.to_le_bytes());
            }
            (message, "resized")
        }
        6 | 7 => {
            // A consistent header with a command and version from small sets and a random body.
            let body_length = rng.below(80) as usize;
            let body = rng.bytes(body_length);
            let command = [
                command::HELLO,
                command::GET_STATS,
                command::LIST_STREAMS,
                command::QUERY_HANDLES,
                command::EVENT,
                0x8002,
                rng.next() as u16,
            ][rng.below(7) as usize];
            let version = [PROTOCOL_VERSION, PROTOCOL_VERSION, 0, PROTOCOL_VERSION + 1, rng.next() as u16][rng.below(5) as usize];
            let mut message = vec![0; HEADER_BYTES + body.len()];
            Header {
                magic: ctxguard_protocol::MAGIC,
                version,
                command,
                length: message.len() as u32,
                request_id: rng.next() as u32,
            }
            .encode(&mut message)
            .unwrap();
            message[HEADER_BYTES..].copy_from_slice(&body);
            (message, "random-body")
        }
        8 => {
            let length = if rng.chance(50) { MAX_REQUEST_BYTES - 32 + rng.below(64) as usize } else { rng.below(200) as usize };
            (rng.bytes(length), "random-bytes")
        }
        _ => {
            // A request whose length field lies.
            let mut message = valid_request(rng);
            let lie = rng.next() as u32;
            message[8..12].copy_from_slice(&lie.to_le_bytes());
            (message, "lying-length")
        }
    }
}

/// How the message is handed to the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Delivery {
    Aligned,
    MisalignedInput,
    MisalignedOutput,
    SmallOutput,
    NoOutput,
    /// Probe off: the input buffer became inaccessible after Filter Manager's probe.
    InaccessibleInput,
    /// Probe off: the output buffer became read-only after the probe.
    ReadOnlyOutput,
    /// The claimed input length runs past the buffer into its guard page (probe off).
    InputOverrun,
}

const DELIVERIES: [Delivery; 8] = [
    Delivery::Aligned,
    Delivery::MisalignedInput,
    Delivery::MisalignedOutput,
    Delivery::SmallOutput,
    Delivery::NoOutput,
    Delivery::InaccessibleInput,
    Delivery::ReadOnlyOutput,
    Delivery::InputOverrun,
];

/// The status the driver must answer, from the protocol crate: `Ok(())` for a reply.
fn expected(message: &[u8], claimed: usize, delivery: Delivery, output_length: usize) -> Result<(), i32> {
    if claimed > MAX_REQUEST_BYTES {
        return Err(status::INVALID_BUFFER_SIZE);
    }
    if claimed < HEADER_BYTES {
        return Err(status::BUFFER_TOO_SMALL);
    }
    match delivery {
        Delivery::MisalignedInput | Delivery::MisalignedOutput => return Err(status::DATATYPE_MISALIGNMENT),
        Delivery::InaccessibleInput | Delivery::InputOverrun => return Err(status::INVALID_USER_BUFFER),
        _ => {}
    }
    let (_, request) = Request::parse(message).map_err(status::of)?;
    let needed = match request {
        Request::Hello { .. } => 32,
        Request::GetStats => 200,
        Request::ListStreams { .. } | Request::QueryHandles(_) => 24,
    };
    if output_length < needed {
        return Err(status::BUFFER_TOO_SMALL);
    }
    if delivery == Delivery::ReadOnlyOutput {
        return Err(status::INVALID_USER_BUFFER);
    }
    Ok(())
}

fn is_list(message: &[u8]) -> bool {
    matches!(Request::parse(message), Ok((_, Request::ListStreams { .. } | Request::QueryHandles(_))))
}

#[test]
fn generated_messages_through_the_real_driver() {
    let messages = env_number("CTXGUARD_PORT_CAMPAIGN_MESSAGES", 20_000);
    let seed = env_number("CTXGUARD_PORT_CAMPAIGN_SEED", 0x5EED_C7C6_0000_0005);
    let mut rng = Rng(seed | 1);
    let harness = load();
    let emulator = &*harness.emulator;
    // Something to list: files of three processes, one with a long name.
    let long = "n".repeat(300);
    let files: Vec<_> = (0..24)
        .map(|index| {
            let path = if index == 0 { format!("\\docs\\{long}") } else { format!("\\docs\\dir{}\\file{index}.txt", index % 3) };
            emulator
                .open(harness.volume, &path, &OpenOptions { pid: [100, 200, 1000][index % 3], ..OpenOptions::default() })
                .unwrap()
        })
        .collect();
    let context = ConnectContext { min_version: 1, max_version: 1, flags: 0 }.encode();
    let port = connect_raw(emulator, &context, COMPANION_PID).unwrap();

    // Buffers are reused: fltemu keeps every buffer's address range reserved forever.
    let input = emulator.user_buffer(MAX_REQUEST_BYTES + 64);
    let tail = emulator.user_buffer(256);
    let output = emulator.user_buffer(64 * 1024);
    let small_output = emulator.user_buffer(24);
    let inaccessible = emulator.user_buffer(4096);
    assert!(inaccessible.set_access(Access::NoAccess));
    let read_only = emulator.user_buffer(4096);
    assert!(read_only.set_access(Access::ReadOnly));

    let baseline = emulator.pool_outstanding();
    let mut outcomes: BTreeMap<(&str, i32), u64> = BTreeMap::new();
    let mut deliveries: BTreeMap<Delivery, u64> = BTreeMap::new();
    let started = Instant::now();
    for index in 0..messages {
        let (message, kind) = generate(&mut rng);
        // Half the messages are delivered cleanly, so that the parser and the answers get most
        // of the campaign; the other half spread over the buffer faults.
        let mut delivery =
            if rng.chance(2) { Delivery::Aligned } else { DELIVERIES[rng.below(DELIVERIES.len() as u64) as usize] };
        if delivery == Delivery::InputOverrun && (message.is_empty() || message.len() > 200) {
            delivery = Delivery::Aligned;
        }
        *deliveries.entry(delivery).or_default() += 1;
        let misalignment = 1 + rng.below(7) as usize;
        let mut in_range = (input.address(), message.len());
        match delivery {
            Delivery::MisalignedInput => {
                let mut staged = vec![0; misalignment];
                staged.extend_from_slice(&message);
                assert!(input.write(&staged));
                in_range.0 += misalignment;
            }
            Delivery::InputOverrun => {
                // The message ends 8-aligned at the buffer's end; the claimed length runs on.
                let start = (256 - message.len()) & !7;
                let mut staged = vec![0; start];
                staged.extend_from_slice(&message);
                assert!(tail.write(&staged));
                in_range = (tail.address() + start, message.len() + 64);
            }
            Delivery::InaccessibleInput => in_range.0 = inaccessible.address(),
            _ => assert!(input.write(&message)),
        }
        let out_range = match delivery {
            Delivery::MisalignedOutput => Some((output.address() + misalignment, output.len() - misalignment)),
            Delivery::SmallOutput => Some((small_output.address(), small_output.len())),
            Delivery::NoOutput => None,
            Delivery::ReadOnlyOutput => Some((read_only.address(), read_only.len())),
            _ => Some((output.address(), output.len())),
        };
        let probe_off = matches!(delivery, Delivery::InaccessibleInput | Delivery::ReadOnlyOutput | Delivery::InputOverrun);
        port.set_probe(!probe_off);
        let input_range = if message.is_empty() && delivery != Delivery::InputOverrun { None } else { Some(in_range) };
        let result = port
            .send_raw(input_range, out_range)
            .unwrap_or_else(|error| panic!("message {index} ({kind}, {delivery:?}) stopped the driver: {error}"));
        let output_length = out_range.map_or(0, |(_, length)| length);
        let want = expected(&message, input_range.map_or(0, |(_, length)| length), delivery, output_length);
        match (result, want) {
            (Ok(returned), Ok(())) => {
                let reply = if delivery == Delivery::SmallOutput { small_output.read() } else { output.read() };
                let (header, _) = Reply::parse(&reply[..returned as usize])
                    .unwrap_or_else(|error| panic!("message {index}: unparseable reply: {error}"));
                let request_id = u32::from_le_bytes([message[12], message[13], message[14], message[15]]);
                assert_eq!(header.request_id, request_id, "message {index}");
                *outcomes.entry((kind, 0)).or_default() += 1;
            }
            (Err(hresult), Err(want)) => {
                assert_eq!(
                    hresult,
                    hresult_from_nt(want),
                    "message {index} ({kind}, {delivery:?}): got {hresult:#x}, want {} {:02x?}",
                    status::name(want),
                    &message[..message.len().min(48)]
                );
                *outcomes.entry((kind, want)).or_default() += 1;
            }
            // A 24-byte output holds an empty page only: with streams to list the driver must
            // refuse rather than answer "more" with no entries.
            (Err(hresult), Ok(()))
                if delivery == Delivery::SmallOutput
                    && hresult == hresult_from_nt(status::BUFFER_TOO_SMALL)
                    && is_list(&message) =>
            {
                *outcomes.entry((kind, status::BUFFER_TOO_SMALL)).or_default() += 1;
            }
            (got, want) => panic!(
                "message {index} ({kind}, {delivery:?}): got {got:?}, want {want:?}; {:02x?}",
                &message[..message.len().min(48)]
            ),
        }
        if index % 1000 == 999 {
            assert_eq!(emulator.pool_outstanding(), baseline, "pool changed by message batch ending at {index}");
            assert_clean(emulator);
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(emulator.pool_outstanding(), baseline);
    assert_clean(emulator);
    port.set_probe(true);
    drop(port);
    for file in files {
        emulator.cleanup(&file).unwrap();
        emulator.close(file).unwrap();
    }
    unload_clean(emulator);

    eprintln!(
        "port campaign: {messages} messages, seed {seed:#x}, {:.1} s ({:.0} messages/s); 0 stops, 0 violations, 0 bytes of pool left",
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64()
    );
    eprintln!("deliveries: {deliveries:?}");
    for ((kind, status_code), count) in &outcomes {
        eprintln!("  {kind:<13} {:<32} {count}", if *status_code == 0 { "reply" } else { status::name(*status_code) });
    }
}
