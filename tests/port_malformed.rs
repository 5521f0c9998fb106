//! Every malformed-message class against the real ctxguard.sys in fltemu: each gets its
//! documented NTSTATUS (docs/port.md, as FltLib's HRESULT) and leaves no pool allocated.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]
// Test messages are small: their lengths fit the header's u32.
#![allow(clippy::cast_possible_truncation, clippy::too_many_lines)]

mod port_support;
mod support;

use ctxguard_protocol::{
    ConnectContext, HEADER_BYTES, Header, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Reply, Request, command, encode_request, status,
};
use fltemu::{Access, Emulator, UserPort, hresult_from_nt};
use port_support::{COMPANION_PID, assert_clean, connect_raw, load, unload_clean};

fn request(request: &Request<'_>) -> Vec<u8> {
    let mut out = vec![0; MAX_REQUEST_BYTES];
    let length = encode_request(request, 7, &mut out).unwrap();
    out.truncate(length);
    out
}

/// A message with a consistent header around `body`.
fn message(version: u16, command: u16, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0; HEADER_BYTES + body.len()];
    Header { magic: ctxguard_protocol::MAGIC, version, command, length: out.len() as u32, request_id: 1 }
        .encode(&mut out)
        .unwrap();
    out[HEADER_BYTES..].copy_from_slice(body);
    out
}

struct Probe<'a> {
    emulator: &'a Emulator,
    port: UserPort,
}

impl Probe<'_> {
    /// Sends through (address, length) pairs and asserts the HRESULT of `expected` and that the
    /// driver's pool is exactly as before.
    fn expect(&self, what: &str, input: Option<(usize, usize)>, output: Option<(usize, usize)>, expected: i32) {
        let before = self.emulator.pool_outstanding();
        let result = self.port.send_raw(input, output).expect("the driver survives");
        assert_eq!(
            result,
            Err(hresult_from_nt(expected)),
            "{what}: expected {} ({:#010x})",
            status::name(expected),
            expected.cast_unsigned()
        );
        assert_eq!(self.emulator.pool_outstanding(), before, "{what}: pool changed");
        assert_clean(self.emulator);
    }

    fn expect_bytes(&self, what: &str, bytes: &[u8], expected: i32) {
        let input = self.emulator.user_buffer_from(bytes);
        let output = self.emulator.user_buffer(4096);
        self.expect(what, Some((input.address(), input.len())), Some((output.address(), output.len())), expected);
    }
}

#[test]
fn every_malformed_class_gets_its_status_and_leaks_nothing() {
    let harness = load();
    let emulator = &*harness.emulator;
    let context = ConnectContext { min_version: 1, max_version: 1, flags: 0 }.encode();
    let probe = Probe { emulator, port: connect_raw(emulator, &context, COMPANION_PID).unwrap() };
    let stats = request(&Request::GetStats);
    let output = emulator.user_buffer(4096);
    let out = Some((output.address(), output.len()));

    // A well-formed request works, and is the baseline the malformed ones differ from.
    let input = emulator.user_buffer_from(&stats);
    let returned = probe.port.send_message(Some(&input), Some(&output)).unwrap().unwrap();
    assert!(matches!(Reply::parse(&output.read()[..returned as usize]).unwrap().1, Reply::Stats(_)));

    // Misaligned input and output addresses.
    let misaligned = emulator.user_buffer_misaligned(stats.len(), 4);
    assert!(misaligned.write(&stats));
    probe.expect("misaligned input", Some((misaligned.address(), misaligned.len())), out, status::DATATYPE_MISALIGNMENT);
    let misaligned_out = emulator.user_buffer_misaligned(4096, 2);
    probe.expect(
        "misaligned output",
        Some((input.address(), input.len())),
        Some((misaligned_out.address(), misaligned_out.len())),
        status::DATATYPE_MISALIGNMENT,
    );

    // Short: no input, less than a header, a body shorter than its command needs, a prefix
    // shorter than its count claims, an output buffer too small for the reply.
    probe.expect("no input", None, out, status::BUFFER_TOO_SMALL);
    probe.expect_bytes("half a header", &stats[..8], status::BUFFER_TOO_SMALL);
    probe.expect_bytes(
        "short ListStreams body",
        &message(PROTOCOL_VERSION, command::LIST_STREAMS, &[0; 4]),
        status::BUFFER_TOO_SMALL,
    );
    let mut handles_body = vec![0u8; 16];
    handles_body[10..12].copy_from_slice(&5u16.to_le_bytes()); // claims 5 prefix units, carries 0
    probe.expect_bytes(
        "prefix shorter than its count",
        &message(PROTOCOL_VERSION, command::QUERY_HANDLES, &handles_body),
        status::BUFFER_TOO_SMALL,
    );
    let tiny = emulator.user_buffer(24);
    probe.expect(
        "output too small",
        Some((input.address(), input.len())),
        Some((tiny.address(), tiny.len())),
        status::BUFFER_TOO_SMALL,
    );
    probe.expect("no output", Some((input.address(), input.len())), None, status::BUFFER_TOO_SMALL);

    // Oversized: beyond the protocol's maximum (refused before capture), a body too long.
    let huge = emulator.user_buffer(MAX_REQUEST_BYTES + 8);
    probe.expect("oversized input", Some((huge.address(), huge.len())), out, status::INVALID_BUFFER_SIZE);
    probe.expect_bytes(
        "GetStats with a body",
        &message(PROTOCOL_VERSION, command::GET_STATS, &[0; 8]),
        status::INVALID_BUFFER_SIZE,
    );

    // Header: bad magic, length field disagreeing with the bytes sent.
    let mut bad_magic = stats.clone();
    bad_magic[1] ^= 0x40;
    probe.expect_bytes("bad magic", &bad_magic, status::INVALID_PARAMETER);
    let mut mismatch = stats.clone();
    mismatch.extend_from_slice(&[0; 8]);
    probe.expect_bytes("length mismatch", &mismatch, status::INFO_LENGTH_MISMATCH);
    let mut reserved = request(&Request::Hello { min_version: 1, max_version: 1 });
    reserved[HEADER_BYTES + 5] = 1;
    probe.expect_bytes("reserved bytes set", &reserved, status::INVALID_PARAMETER);

    // Wrong version and unknown commands (including a reply's and an event's numbers).
    probe.expect_bytes("wrong version", &message(PROTOCOL_VERSION + 1, command::GET_STATS, &[]), status::REVISION_MISMATCH);
    probe.expect_bytes("version 0", &message(0, command::GET_STATS, &[]), status::REVISION_MISMATCH);
    probe.expect_bytes("unknown command", &message(PROTOCOL_VERSION, 0x77, &[]), status::INVALID_DEVICE_REQUEST);
    probe.expect_bytes(
        "a reply as a request",
        &message(PROTOCOL_VERSION, command::GET_STATS | command::REPLY, &[]),
        status::INVALID_DEVICE_REQUEST,
    );
    probe.expect_bytes("an event as a request", &message(PROTOCOL_VERSION, command::EVENT, &[]), status::INVALID_DEVICE_REQUEST);

    // Invalid addresses, with Filter Manager's probe off so that the driver itself meets them
    // (a user thread freeing or protecting the buffer after the probe).
    probe.port.set_probe(false);
    probe.expect("NULL input with a length", Some((0, 32)), out, status::INVALID_USER_BUFFER);
    let gone = emulator.user_buffer_from(&stats);
    assert!(gone.set_access(Access::NoAccess));
    probe.expect("no-access input", Some((gone.address(), gone.len())), out, status::INVALID_USER_BUFFER);
    assert!(gone.set_access(Access::Unmapped));
    probe.expect("unmapped input", Some((gone.address(), gone.len())), out, status::INVALID_USER_BUFFER);
    probe.expect(
        "input running into the guard page",
        Some((input.address(), input.len() + 64)),
        out,
        status::INVALID_USER_BUFFER,
    );
    let read_only = emulator.user_buffer(4096);
    assert!(read_only.set_access(Access::ReadOnly));
    probe.expect(
        "read-only output",
        Some((input.address(), input.len())),
        Some((read_only.address(), read_only.len())),
        status::INVALID_USER_BUFFER,
    );
    let unmapped_out = emulator.user_buffer(4096);
    assert!(unmapped_out.set_access(Access::Unmapped));
    probe.expect(
        "unmapped output",
        Some((input.address(), input.len())),
        Some((unmapped_out.address(), unmapped_out.len())),
        status::INVALID_USER_BUFFER,
    );
    probe.expect("NULL output with a length", Some((input.address(), input.len())), Some((0, 4096)), status::INVALID_USER_BUFFER);
    // A mapped view of a file could take an in-page I/O error during the write: refused after
    // securing, and not one byte of the reply lands in it.
    let mapped_out = emulator.user_buffer_mapped_file(4096);
    assert!(mapped_out.write(&[0xA5; 4096]));
    probe.expect(
        "mapped-file output",
        Some((input.address(), input.len())),
        Some((mapped_out.address(), mapped_out.len())),
        status::INVALID_USER_BUFFER,
    );
    assert!(mapped_out.read().iter().all(|&b| b == 0xA5), "mapped-file output: the driver wrote into it");
    probe.port.set_probe(true);

    // After all that the port still answers.
    let returned = probe.port.send_message(Some(&input), Some(&output)).unwrap().unwrap();
    assert!(matches!(Reply::parse(&output.read()[..returned as usize]).unwrap().1, Reply::Stats(_)));
    drop(probe);
    unload_clean(emulator);
}

#[test]
fn reply_running_into_the_guard_page_is_refused() {
    let harness = load();
    let emulator = &*harness.emulator;
    let context = ConnectContext { min_version: 1, max_version: 1, flags: 0 }.encode();
    let probe = Probe { emulator, port: connect_raw(emulator, &context, COMPANION_PID).unwrap() };
    let input = emulator.user_buffer_from(&request(&Request::GetStats));
    // Only the reply's bytes are secured and written: a 64-byte buffer that claims 4 KiB fails
    // because the 200-byte reply would run past its end into the guard page.
    probe.port.set_probe(false);
    let short_out = emulator.user_buffer(64);
    probe.expect(
        "reply running into the guard page",
        Some((input.address(), input.len())),
        Some((short_out.address(), 4096)),
        status::INVALID_USER_BUFFER,
    );
    drop(probe);
    unload_clean(emulator);
}
