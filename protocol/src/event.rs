//! Events, driver → companion, sent with FltSendMessage (no reply expected).

use crate::bytes::{EncodeError, ParseError, Reader, Writer};
use crate::text::Utf16Le;
use crate::{HEADER_BYTES, Header, PROTOCOL_MIN_VERSION, PROTOCOL_VERSION, command, pad8};

/// Fixed body bytes of an event: `kind u16, name_units u16, pid u32, sequence u64, time i64,
/// flags u32, reserved u32`, then the name padded to 8.
pub const EVENT_FIXED_BYTES: usize = 32;
/// Names longer than this many units are cut, and the event carries [`Event::truncated`].
pub const MAX_EVENT_NAME_UNITS: usize = 1024;
/// Event flag: the name was cut to [`MAX_EVENT_NAME_UNITS`].
const FLAG_TRUNCATED: u32 = 1;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A handle was opened (successful create).
    Open,
    /// A handle was closed (cleanup).
    Close,
}

impl EventKind {
    const fn wire(self) -> u16 {
        match self {
            Self::Open => 1,
            Self::Close => 2,
        }
    }
}

/// One open or close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// Open or close.
    pub kind: EventKind,
    /// The process that opened or closed.
    pub pid: u32,
    /// Numbered from 1 for every event the driver tried to queue, dropped ones included: a
    /// gap in the sequence is a count of lost events.
    pub sequence: u64,
    /// When (100 ns since 1601, UTC).
    pub time: i64,
    /// The name was cut to [`MAX_EVENT_NAME_UNITS`].
    pub truncated: bool,
    /// The stream's normalized name.
    pub name: Utf16Le<'a>,
}

impl<'a> Event<'a> {
    /// Parses a whole event message.
    ///
    /// # Errors
    /// A [`ParseError`] for anything but a well-formed event.
    pub fn parse(message: &'a [u8]) -> Result<Self, ParseError> {
        let header = Header::parse(message)?;
        if !(PROTOCOL_MIN_VERSION..=PROTOCOL_VERSION).contains(&header.version) {
            return Err(ParseError::UnsupportedVersion(header.version));
        }
        if header.command != command::EVENT {
            return Err(ParseError::UnknownCommand(header.command));
        }
        let mut reader = Reader::new(&message[HEADER_BYTES..]);
        let kind = match reader.u16()? {
            1 => EventKind::Open,
            2 => EventKind::Close,
            _ => return Err(ParseError::Malformed),
        };
        let units = usize::from(reader.u16()?);
        let pid = reader.u32()?;
        let sequence = reader.u64()?;
        let time = reader.i64()?;
        let flags = reader.u32()?;
        reader.reserved(4)?;
        if flags & !FLAG_TRUNCATED != 0 || units > MAX_EVENT_NAME_UNITS {
            return Err(ParseError::Malformed);
        }
        let name = Utf16Le::new(reader.take(units * 2)?).ok_or(ParseError::Malformed)?;
        reader.reserved(pad8(units * 2) - units * 2)?;
        if !reader.remaining().is_empty() {
            return Err(ParseError::TooLong);
        }
        Ok(Self { kind, pid, sequence, time, truncated: flags & FLAG_TRUNCATED != 0, name })
    }

    /// Rewrites the sequence number of an encoded event in place (the driver numbers an event
    /// only once it holds the queue, so that delivery order is sequence order). Returns false,
    /// changing nothing, when `message` is too short to be an event.
    pub fn set_sequence(message: &mut [u8], sequence: u64) -> bool {
        let Some(field) = message.get_mut(HEADER_BYTES + 8..HEADER_BYTES + 16) else {
            return false;
        };
        field.copy_from_slice(&sequence.to_le_bytes());
        #[allow(clippy::cast_possible_truncation)] // the header carries the low 32 bits.
        message[12..16].copy_from_slice(&(sequence as u32).to_le_bytes());
        true
    }

    /// Bytes an event about `name_units` units of name takes (after truncation).
    #[must_use]
    pub const fn encoded_len(name_units: usize) -> usize {
        let units = if name_units > MAX_EVENT_NAME_UNITS { MAX_EVENT_NAME_UNITS } else { name_units };
        HEADER_BYTES + EVENT_FIXED_BYTES + pad8(units * 2)
    }

    /// Encodes an event about `name` (cut to [`MAX_EVENT_NAME_UNITS`] units, flagged), returning
    /// its length. `truncated` is set by this function, not taken from the caller.
    ///
    /// # Errors
    /// [`EncodeError::BufferTooSmall`] when `out` is shorter than [`Self::encoded_len`].
    pub fn encode(
        kind: EventKind,
        pid: u32,
        sequence: u64,
        time: i64,
        name: &[u16],
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let truncated = name.len() > MAX_EVENT_NAME_UNITS;
        let name = &name[..name.len().min(MAX_EVENT_NAME_UNITS)];
        let length = Self::encoded_len(name.len());
        let out = out.get_mut(..length).ok_or(EncodeError::BufferTooSmall)?;
        #[allow(clippy::cast_possible_truncation)] // ≤ 16 + 32 + 2048.
        let header = Header::new(command::EVENT, length as u32, sequence as u32);
        header.encode(out)?;
        let mut writer = Writer::new(&mut out[HEADER_BYTES..]);
        writer.u16(kind.wire())?;
        #[allow(clippy::cast_possible_truncation)] // ≤ MAX_EVENT_NAME_UNITS.
        writer.u16(name.len() as u16)?;
        writer.u32(pid)?;
        writer.u64(sequence)?;
        writer.i64(time)?;
        writer.u32(if truncated { FLAG_TRUNCATED } else { 0 })?;
        writer.u32(0)?;
        writer.name(name.iter().copied(), name.len())?;
        debug_assert_eq!(writer.position(), length - HEADER_BYTES);
        Ok(length)
    }
}
