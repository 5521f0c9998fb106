//! ctxguard's wire format, shared by the driver (no_std) and the companion.
//!
//! Every message — request, reply or event — starts with a 16-byte [`Header`]
//! (magic, version, command, total length, request id), little-endian. Bodies are fixed-size
//! little-endian records, each padded to 8 bytes, followed by UTF-16LE names padded to 8.
//!
//! Parsing never allocates and never trusts a length: every count and length is checked
//! against the bytes actually present before anything is read, and names are handed out as
//! [`Utf16Le`] views over the input bytes (no alignment assumed). Encoding writes into a
//! caller-supplied `&mut [u8]` and fails with [`EncodeError`] when it does not fit.
//!
//! Direction of traffic:
//! * companion → driver: FilterSendMessage with a request ([`Request`]); the driver answers in
//!   the output buffer with a reply ([`Reply`]) or fails the call with an NTSTATUS
//!   ([`status`]).
//! * driver → companion: FltSendMessage with an [`Event`] (no reply expected).
//! * the connection context given to FilterConnectCommunicationPort is a [`ConnectContext`].
#![no_std]

#[cfg(test)]
extern crate std;

mod bytes;
mod event;
mod reply;
mod request;
pub mod status;
mod text;

pub use bytes::{EncodeError, ParseError};
pub use event::{EVENT_FIXED_BYTES, Event, EventKind, MAX_EVENT_NAME_UNITS};
pub use reply::{
    HANDLE_ENTRY_FIXED_BYTES, HandleEntry, HelloReply, KindStats, LIST_FIXED_BYTES, LIST_FLAG_MORE, ListReply, ListWriter, Reply,
    STREAM_ENTRY_FIXED_BYTES, StatsReply, StreamEntry, encode_hello_reply, encode_stats_reply,
};
pub use request::{
    HANDLES_FIXED_BYTES, HANDLES_FLAG_ANY_PID, HELLO_BYTES, HandleQuery, LIST_STREAMS_BYTES, Request, encode_request,
};
pub use text::{Utf16Le, fold_case, name_is_under};

/// The protocol version this build speaks (and the newest it understands).
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest protocol version this build understands.
pub const PROTOCOL_MIN_VERSION: u16 = 1;

/// The name of the driver's filter communication port.
pub const PORT_NAME: &str = "\\ctxguardPort";

/// `"CXGP"` read as a little-endian `u32`: the first four bytes of every message.
pub const MAGIC: u32 = u32::from_le_bytes(*b"CXGP");

/// Bytes of the [`Header`].
pub const HEADER_BYTES: usize = 16;

/// The longest path prefix a QueryHandles request may carry, in UTF-16 units (Windows' own
/// limit for a path).
pub const MAX_PREFIX_UNITS: usize = 32_767;

/// The longest request the driver accepts; anything longer is refused before it is captured.
pub const MAX_REQUEST_BYTES: usize = HEADER_BYTES + HANDLES_FIXED_BYTES + 2 * MAX_PREFIX_UNITS;

/// The most reply bytes the driver produces, whatever the output buffer's size.
pub const MAX_REPLY_BYTES: usize = 256 * 1024;

/// Required alignment of the request and reply buffers' addresses.
pub const BUFFER_ALIGNMENT: usize = 8;

/// Command numbers. A reply carries its request's command with [`command::REPLY`] set.
pub mod command {
    /// Version negotiation; accepted whatever the header's version.
    pub const HELLO: u16 = 1;
    /// The driver's context accounting and event counters.
    pub const GET_STATS: u16 = 2;
    /// A page of live streams.
    pub const LIST_STREAMS: u16 = 3;
    /// A page of the handles one process (or every process) holds open.
    pub const QUERY_HANDLES: u16 = 4;
    /// An open or close event, driver → companion.
    pub const EVENT: u16 = 0x0100;
    /// Set in a reply's command.
    pub const REPLY: u16 = 0x8000;
}

/// The 16-byte header of every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Always [`MAGIC`].
    pub magic: u32,
    /// The protocol version the sender speaks in this message.
    pub version: u16,
    /// One of [`command`].
    pub command: u16,
    /// The whole message's length in bytes, header included.
    pub length: u32,
    /// Chosen by the requester, echoed in the reply; the event sequence's low bits in events.
    pub request_id: u32,
}

impl Header {
    /// A header of `command` for a message of `length` bytes at [`PROTOCOL_VERSION`].
    #[must_use]
    pub const fn new(command: u16, length: u32, request_id: u32) -> Self {
        Self { magic: MAGIC, version: PROTOCOL_VERSION, command, length, request_id }
    }

    /// Parses the header of `message` and checks its magic and that its length field equals
    /// the bytes present (the version is checked by the caller, which knows the command).
    ///
    /// # Errors
    /// [`ParseError::TooShort`], [`ParseError::BadMagic`], [`ParseError::LengthMismatch`].
    pub fn parse(message: &[u8]) -> Result<Self, ParseError> {
        let mut reader = bytes::Reader::new(message);
        let magic = reader.u32()?;
        let version = reader.u16()?;
        let command = reader.u16()?;
        let length = reader.u32()?;
        let request_id = reader.u32()?;
        if magic != MAGIC {
            return Err(ParseError::BadMagic);
        }
        if usize::try_from(length).ok() != Some(message.len()) {
            return Err(ParseError::LengthMismatch);
        }
        Ok(Self { magic, version, command, length, request_id })
    }

    /// Writes the header into the first [`HEADER_BYTES`] of `out`.
    ///
    /// # Errors
    /// [`EncodeError::BufferTooSmall`] when `out` is shorter than a header.
    pub fn encode(&self, out: &mut [u8]) -> Result<(), EncodeError> {
        let mut writer = bytes::Writer::new(out);
        writer.u32(self.magic)?;
        writer.u16(self.version)?;
        writer.u16(self.command)?;
        writer.u32(self.length)?;
        writer.u32(self.request_id)
    }
}

/// The connection context the companion passes to FilterConnectCommunicationPort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectContext {
    /// The oldest protocol version the client speaks.
    pub min_version: u16,
    /// The newest protocol version the client speaks.
    pub max_version: u16,
    /// [`CONNECT_FLAG_EVENTS`] to receive open/close events on this connection.
    pub flags: u32,
}

/// Bytes of a [`ConnectContext`].
pub const CONNECT_CONTEXT_BYTES: usize = 16;
/// Connection flag: this connection receives the event stream (one subscriber at a time).
pub const CONNECT_FLAG_EVENTS: u32 = 1;

impl ConnectContext {
    /// Parses a connection context; it must be exactly [`CONNECT_CONTEXT_BYTES`] long.
    ///
    /// # Errors
    /// [`ParseError::TooShort`] / [`ParseError::TooLong`] for a wrong size,
    /// [`ParseError::BadMagic`], [`ParseError::Malformed`] for unknown flags, reserved bits or
    /// `min > max`.
    pub fn parse(context: &[u8]) -> Result<Self, ParseError> {
        if context.len() > CONNECT_CONTEXT_BYTES {
            return Err(ParseError::TooLong);
        }
        let mut reader = bytes::Reader::new(context);
        let magic = reader.u32()?;
        let min_version = reader.u16()?;
        let max_version = reader.u16()?;
        let flags = reader.u32()?;
        let reserved = reader.u32()?;
        if magic != MAGIC {
            return Err(ParseError::BadMagic);
        }
        if reserved != 0 || flags & !CONNECT_FLAG_EVENTS != 0 || min_version > max_version {
            return Err(ParseError::Malformed);
        }
        Ok(Self { min_version, max_version, flags })
    }

    /// Encodes the context.
    #[must_use]
    pub fn encode(&self) -> [u8; CONNECT_CONTEXT_BYTES] {
        let mut out = [0; CONNECT_CONTEXT_BYTES];
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..6].copy_from_slice(&self.min_version.to_le_bytes());
        out[6..8].copy_from_slice(&self.max_version.to_le_bytes());
        out[8..12].copy_from_slice(&self.flags.to_le_bytes());
        out
    }

    /// The version both sides speak, if any: the newest in both ranges.
    #[must_use]
    pub fn negotiate(&self) -> Option<u16> {
        negotiate(self.min_version, self.max_version)
    }
}

/// The newest version in both `[min, max]` and this build's range, if the ranges overlap.
#[must_use]
pub fn negotiate(min: u16, max: u16) -> Option<u16> {
    let high = max.min(PROTOCOL_VERSION);
    let low = min.max(PROTOCOL_MIN_VERSION);
    (low <= high).then_some(high)
}

/// Rounds `length` up to a multiple of 8 (saturating).
#[must_use]
pub const fn pad8(length: usize) -> usize {
    match length.checked_add(7) {
        Some(padded) => padded & !7,
        None => usize::MAX & !7,
    }
}
