//! Replies, driver → companion, written into the caller's output buffer.

use core::marker::PhantomData;

use crate::bytes::{EncodeError, ParseError, Reader, Writer};
use crate::text::Utf16Le;
use crate::{HEADER_BYTES, Header, PROTOCOL_MIN_VERSION, PROTOCOL_VERSION, command, pad8};

/// Body bytes of a Hello reply.
pub const HELLO_REPLY_BYTES: usize = 16;
/// Bytes of one [`KindStats`].
const KIND_BYTES: usize = 48;
/// Body bytes of a GetStats reply.
pub const STATS_REPLY_BYTES: usize = 3 * KIND_BYTES + 5 * 8;
/// Fixed body bytes of a list reply: `next_cursor u32, count u16, flags u16`.
pub const LIST_FIXED_BYTES: usize = 8;
/// List flag: more entries follow; ask again from `next_cursor`.
pub const LIST_FLAG_MORE: u16 = 1;
/// Fixed bytes of a stream entry: `open_handles u32, first_opener_pid u32,
/// first_open_time i64, name_units u16, reserved [u8; 6]`, then the name padded to 8.
pub const STREAM_ENTRY_FIXED_BYTES: usize = 24;
/// Fixed bytes of a handle entry: `pid u32, desired_access u32, share_access u32,
/// reserved u32, create_time i64, name_units u16, reserved [u8; 6]`, then the name padded to 8.
pub const HANDLE_ENTRY_FIXED_BYTES: usize = 32;

/// The answer to Hello.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HelloReply {
    /// The version both speak (0: none; the client must not send other commands).
    pub version: u16,
    /// The oldest version the driver speaks.
    pub driver_min_version: u16,
    /// The newest version the driver speaks.
    pub driver_max_version: u16,
    /// The port's MaxConnections.
    pub max_connections: u16,
    /// The driver's own version (major, minor, patch).
    pub driver_version: [u16; 3],
}

/// One context type's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Allocated with FltAllocateContext.
    pub allocated: u64,
    /// Attached by a successful set.
    pub attached: u64,
    /// Sets that found one already attached.
    pub collisions: u64,
    /// Cleanup callbacks run.
    pub freed: u64,
    /// Alive now.
    pub live: u64,
    /// Most alive at once.
    pub high_water: u64,
}

/// The answer to GetStats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsReply {
    /// Instance contexts.
    pub instance: KindStats,
    /// Stream contexts.
    pub stream: KindStats,
    /// Stream-handle contexts.
    pub stream_handle: KindStats,
    /// Handles open now.
    pub open_handles: u64,
    /// Events delivered to the subscriber.
    pub events_sent: u64,
    /// Events lost: queue full, lock contended, allocation failed, send timed out or failed.
    pub events_dropped: u64,
    /// Events waiting in the queue now.
    pub events_queued: u64,
    /// Clients connected now.
    pub connections: u64,
}

/// One live stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamEntry<'a> {
    /// Handles open on it now.
    pub open_handles: u32,
    /// The process that opened it first.
    pub first_opener_pid: u32,
    /// When it was first opened (100 ns since 1601, UTC).
    pub first_open_time: i64,
    /// Its normalized name.
    pub name: Utf16Le<'a>,
}

/// One open handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandleEntry<'a> {
    /// The process that opened it.
    pub pid: u32,
    /// Its `ACCESS_MASK`.
    pub desired_access: u32,
    /// Its `FILE_SHARE_*` bits.
    pub share_access: u32,
    /// When it was opened (100 ns since 1601, UTC).
    pub create_time: i64,
    /// The normalized name of its stream.
    pub name: Utf16Le<'a>,
}

/// An entry type a list reply carries.
pub trait ListEntry<'a>: Sized {
    /// The reply command that carries this entry type.
    const COMMAND: u16;
    /// Parses the entry at the start of `bytes`; returns it and the bytes it took.
    ///
    /// # Errors
    /// [`ParseError`] when the entry is cut short or a reserved byte is set.
    fn parse_entry(bytes: &'a [u8]) -> Result<(Self, usize), ParseError>;
}

/// Parses one entry with `parse` and reports how many bytes it consumed.
fn measured<'a, E>(
    bytes: &'a [u8],
    parse: impl FnOnce(&mut Reader<'a>) -> Result<E, ParseError>,
) -> Result<(E, usize), ParseError> {
    let mut reader = Reader::new(bytes);
    let entry = parse(&mut reader)?;
    Ok((entry, bytes.len() - reader.remaining().len()))
}

impl<'a> ListEntry<'a> for StreamEntry<'a> {
    const COMMAND: u16 = command::LIST_STREAMS | command::REPLY;

    fn parse_entry(bytes: &'a [u8]) -> Result<(Self, usize), ParseError> {
        measured(bytes, |reader| {
            let open_handles = reader.u32()?;
            let first_opener_pid = reader.u32()?;
            let first_open_time = reader.i64()?;
            let name = name(reader)?;
            Ok(Self { open_handles, first_opener_pid, first_open_time, name })
        })
    }
}

impl<'a> ListEntry<'a> for HandleEntry<'a> {
    const COMMAND: u16 = command::QUERY_HANDLES | command::REPLY;

    fn parse_entry(bytes: &'a [u8]) -> Result<(Self, usize), ParseError> {
        measured(bytes, |reader| {
            let pid = reader.u32()?;
            let desired_access = reader.u32()?;
            let share_access = reader.u32()?;
            reader.reserved(4)?;
            let create_time = reader.i64()?;
            let name = name(reader)?;
            Ok(Self { pid, desired_access, share_access, create_time, name })
        })
    }
}

/// Reads `name_units u16, reserved [u8; 6]`, then the name and its zero padding.
fn name<'a>(reader: &mut Reader<'a>) -> Result<Utf16Le<'a>, ParseError> {
    let units = usize::from(reader.u16()?);
    reader.reserved(6)?;
    let bytes = reader.take(units * 2)?;
    reader.reserved(pad8(units * 2) - units * 2)?;
    Utf16Le::new(bytes).ok_or(ParseError::Malformed)
}

/// A page of entries, validated when parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListReply<'a, E> {
    /// The cursor to ask for the next page with.
    pub next_cursor: u32,
    /// Entries in this page.
    pub count: u16,
    /// [`LIST_FLAG_MORE`] when the listing did not end.
    pub flags: u16,
    entries: &'a [u8],
    entry: PhantomData<E>,
}

impl<'a, E: ListEntry<'a>> ListReply<'a, E> {
    fn parse(body: &'a [u8]) -> Result<Self, ParseError> {
        let mut reader = Reader::new(body);
        let next_cursor = reader.u32()?;
        let count = reader.u16()?;
        let flags = reader.u16()?;
        if flags & !LIST_FLAG_MORE != 0 {
            return Err(ParseError::Malformed);
        }
        let entries = reader.remaining();
        let mut rest = entries;
        for _ in 0..count {
            let (_, used) = E::parse_entry(rest)?;
            rest = &rest[used..];
        }
        if !rest.is_empty() {
            return Err(ParseError::TooLong);
        }
        Ok(Self { next_cursor, count, flags, entries, entry: PhantomData })
    }

    /// Whether more entries follow this page.
    #[must_use]
    pub const fn more(&self) -> bool {
        self.flags & LIST_FLAG_MORE != 0
    }

    /// The entries (already validated).
    pub fn entries(&self) -> impl Iterator<Item = E> + 'a {
        let mut rest = self.entries;
        (0..self.count).map_while(move |_| {
            let (entry, used) = E::parse_entry(rest).ok()?;
            rest = &rest[used..];
            Some(entry)
        })
    }
}

/// A reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// To Hello.
    Hello(HelloReply),
    /// To GetStats.
    Stats(StatsReply),
    /// To ListStreams.
    Streams(ListReply<'a, StreamEntry<'a>>),
    /// To QueryHandles.
    Handles(ListReply<'a, HandleEntry<'a>>),
}

impl<'a> Reply<'a> {
    /// Parses a whole reply message.
    ///
    /// # Errors
    /// A [`ParseError`] for a short, long, inconsistent or unknown reply.
    pub fn parse(message: &'a [u8]) -> Result<(Header, Self), ParseError> {
        let header = Header::parse(message)?;
        if header.command != (command::HELLO | command::REPLY)
            && !(PROTOCOL_MIN_VERSION..=PROTOCOL_VERSION).contains(&header.version)
        {
            return Err(ParseError::UnsupportedVersion(header.version));
        }
        let body = &message[HEADER_BYTES..];
        let mut reader = Reader::new(body);
        let reply = match header.command {
            command if command == command::HELLO | command::REPLY => {
                exact(body, HELLO_REPLY_BYTES)?;
                let hello = HelloReply {
                    version: reader.u16()?,
                    driver_min_version: reader.u16()?,
                    driver_max_version: reader.u16()?,
                    max_connections: reader.u16()?,
                    driver_version: [reader.u16()?, reader.u16()?, reader.u16()?],
                };
                // The trailing reserved u16, like every reserved field, must be zero.
                reader.reserved(2)?;
                Self::Hello(hello)
            }
            command if command == command::GET_STATS | command::REPLY => {
                exact(body, STATS_REPLY_BYTES)?;
                let mut kind = || -> Result<KindStats, ParseError> {
                    Ok(KindStats {
                        allocated: reader.u64()?,
                        attached: reader.u64()?,
                        collisions: reader.u64()?,
                        freed: reader.u64()?,
                        live: reader.u64()?,
                        high_water: reader.u64()?,
                    })
                };
                let instance = kind()?;
                let stream = kind()?;
                let stream_handle = kind()?;
                Self::Stats(StatsReply {
                    instance,
                    stream,
                    stream_handle,
                    open_handles: reader.u64()?,
                    events_sent: reader.u64()?,
                    events_dropped: reader.u64()?,
                    events_queued: reader.u64()?,
                    connections: reader.u64()?,
                })
            }
            command if command == StreamEntry::COMMAND => Self::Streams(ListReply::parse(body)?),
            command if command == HandleEntry::COMMAND => Self::Handles(ListReply::parse(body)?),
            other => return Err(ParseError::UnknownCommand(other)),
        };
        Ok((header, reply))
    }
}

fn exact(body: &[u8], expected: usize) -> Result<(), ParseError> {
    match body.len().cmp(&expected) {
        core::cmp::Ordering::Less => Err(ParseError::TooShort),
        core::cmp::Ordering::Equal => Ok(()),
        core::cmp::Ordering::Greater => Err(ParseError::TooLong),
    }
}

/// Writes a Hello reply; returns its length.
///
/// # Errors
/// [`EncodeError::BufferTooSmall`].
pub fn encode_hello_reply(reply: &HelloReply, request_id: u32, out: &mut [u8]) -> Result<usize, EncodeError> {
    let length = HEADER_BYTES + HELLO_REPLY_BYTES;
    let out = out.get_mut(..length).ok_or(EncodeError::BufferTooSmall)?;
    #[allow(clippy::cast_possible_truncation)] // a constant 32.
    let header = Header::new(command::HELLO | command::REPLY, length as u32, request_id);
    header.encode(out)?;
    let mut writer = Writer::new(&mut out[HEADER_BYTES..]);
    for value in [reply.version, reply.driver_min_version, reply.driver_max_version, reply.max_connections] {
        writer.u16(value)?;
    }
    for value in reply.driver_version {
        writer.u16(value)?;
    }
    writer.u16(0)?;
    Ok(length)
}

/// Writes a GetStats reply; returns its length.
///
/// # Errors
/// [`EncodeError::BufferTooSmall`].
pub fn encode_stats_reply(reply: &StatsReply, request_id: u32, out: &mut [u8]) -> Result<usize, EncodeError> {
    let length = HEADER_BYTES + STATS_REPLY_BYTES;
    let out = out.get_mut(..length).ok_or(EncodeError::BufferTooSmall)?;
    #[allow(clippy::cast_possible_truncation)] // a constant 200.
    let header = Header::new(command::GET_STATS | command::REPLY, length as u32, request_id);
    header.encode(out)?;
    let mut writer = Writer::new(&mut out[HEADER_BYTES..]);
    for kind in [&reply.instance, &reply.stream, &reply.stream_handle] {
        for value in [kind.allocated, kind.attached, kind.collisions, kind.freed, kind.live, kind.high_water] {
            writer.u64(value)?;
        }
    }
    for value in [reply.open_handles, reply.events_sent, reply.events_dropped, reply.events_queued, reply.connections] {
        writer.u64(value)?;
    }
    Ok(length)
}

/// Builds a list reply in place: entries are appended while they fit, then [`Self::finish`]
/// writes the header and the fixed part in front of them.
pub struct ListWriter<'a> {
    out: &'a mut [u8],
    command: u16,
    request_id: u32,
    position: usize,
    count: u16,
    max_entries: u16,
}

impl<'a> ListWriter<'a> {
    fn new(out: &'a mut [u8], command: u16, request_id: u32, max_entries: u32) -> Result<Self, EncodeError> {
        let position = HEADER_BYTES + LIST_FIXED_BYTES;
        if out.len() < position {
            return Err(EncodeError::BufferTooSmall);
        }
        // A page holds at most u16::MAX entries whatever the caller asked for.
        let max_entries = match u16::try_from(max_entries) {
            Ok(0) | Err(_) => u16::MAX,
            Ok(limit) => limit,
        };
        Ok(Self { out, command, request_id, position, count: 0, max_entries })
    }

    /// A ListStreams reply over `out`.
    ///
    /// # Errors
    /// [`EncodeError::BufferTooSmall`] when `out` cannot hold even an empty page.
    pub fn streams(out: &'a mut [u8], request_id: u32, max_entries: u32) -> Result<Self, EncodeError> {
        Self::new(out, StreamEntry::COMMAND, request_id, max_entries)
    }

    /// A QueryHandles reply over `out`.
    ///
    /// # Errors
    /// [`EncodeError::BufferTooSmall`] when `out` cannot hold even an empty page.
    pub fn handles(out: &'a mut [u8], request_id: u32, max_entries: u32) -> Result<Self, EncodeError> {
        Self::new(out, HandleEntry::COMMAND, request_id, max_entries)
    }

    /// Entries written so far.
    #[must_use]
    pub const fn count(&self) -> u16 {
        self.count
    }

    /// Whether the page holds as many entries as the request allows.
    #[must_use]
    pub const fn is_full(&self) -> bool {
        self.count >= self.max_entries
    }

    fn append(&mut self, fixed: &[u8], name: &[u16]) -> Result<(), EncodeError> {
        if self.is_full() {
            return Err(EncodeError::BufferTooSmall);
        }
        let units = u16::try_from(name.len()).map_err(|_| EncodeError::TooLong)?;
        let needed = fixed.len() + 8 + pad8(name.len() * 2);
        let end = self.position.checked_add(needed).ok_or(EncodeError::BufferTooSmall)?;
        let target = self.out.get_mut(self.position..end).ok_or(EncodeError::BufferTooSmall)?;
        let mut writer = Writer::new(target);
        writer.put(fixed)?;
        writer.u16(units)?;
        writer.zeros(6)?;
        writer.name(name.iter().copied(), name.len())?;
        self.position = end;
        self.count += 1;
        Ok(())
    }

    /// Appends a stream entry.
    ///
    /// # Errors
    /// [`EncodeError::BufferTooSmall`] when it does not fit or the page is full (the caller
    /// then finishes with "more"); [`EncodeError::TooLong`] for a name over 65,535 units.
    pub fn push_stream(
        &mut self,
        open_handles: u32,
        first_opener_pid: u32,
        first_open_time: i64,
        name: &[u16],
    ) -> Result<(), EncodeError> {
        let mut fixed = [0; 16];
        fixed[0..4].copy_from_slice(&open_handles.to_le_bytes());
        fixed[4..8].copy_from_slice(&first_opener_pid.to_le_bytes());
        fixed[8..16].copy_from_slice(&first_open_time.to_le_bytes());
        self.append(&fixed, name)
    }

    /// Appends a handle entry.
    ///
    /// # Errors
    /// As [`Self::push_stream`].
    pub fn push_handle(
        &mut self,
        pid: u32,
        desired_access: u32,
        share_access: u32,
        create_time: i64,
        name: &[u16],
    ) -> Result<(), EncodeError> {
        let mut fixed = [0; 24];
        fixed[0..4].copy_from_slice(&pid.to_le_bytes());
        fixed[4..8].copy_from_slice(&desired_access.to_le_bytes());
        fixed[8..12].copy_from_slice(&share_access.to_le_bytes());
        fixed[16..24].copy_from_slice(&create_time.to_le_bytes());
        self.append(&fixed, name)
    }

    /// Writes the header and fixed part; returns the reply's length.
    #[must_use]
    pub fn finish(self, next_cursor: u32, more: bool) -> usize {
        let length = self.position;
        let mut fixed = [0; HEADER_BYTES + LIST_FIXED_BYTES];
        #[allow(clippy::cast_possible_truncation)] // bounded by the output buffer, itself ≤ MAX_REPLY_BYTES in practice.
        let header = Header::new(self.command, length.min(u32::MAX as usize) as u32, self.request_id);
        // Both writes fit: `fixed` is exactly header + fixed part.
        let _ = header.encode(&mut fixed);
        fixed[16..20].copy_from_slice(&next_cursor.to_le_bytes());
        fixed[20..22].copy_from_slice(&self.count.to_le_bytes());
        fixed[22..24].copy_from_slice(&(if more { LIST_FLAG_MORE } else { 0 }).to_le_bytes());
        self.out[..fixed.len()].copy_from_slice(&fixed);
        length
    }
}
