//! Requests, companion → driver.

use crate::bytes::{EncodeError, ParseError, Reader, Writer};
use crate::text::Utf16Le;
use crate::{HEADER_BYTES, Header, MAX_PREFIX_UNITS, MAX_REQUEST_BYTES, PROTOCOL_MIN_VERSION, PROTOCOL_VERSION, command};

/// Body bytes of Hello: `min_version u16, max_version u16, reserved u32`.
pub const HELLO_BYTES: usize = 8;
/// Body bytes of ListStreams: `cursor u32, max_entries u32`.
pub const LIST_STREAMS_BYTES: usize = 8;
/// Fixed body bytes of QueryHandles: `pid u32, cursor u32, flags u16, prefix_units u16,
/// max_entries u32`, followed by `prefix_units` UTF-16LE units (no padding).
pub const HANDLES_FIXED_BYTES: usize = 16;
/// QueryHandles flag: ignore `pid`, list every process's handles (`pid` must then be 0).
pub const HANDLES_FLAG_ANY_PID: u16 = 1;

/// Which handles a QueryHandles request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandleQuery<'a> {
    /// The process whose handles to list (ignored when `any_pid`).
    pub pid: u32,
    /// List every process's handles.
    pub any_pid: bool,
    /// How many matching handles earlier pages returned.
    pub cursor: u32,
    /// At most this many entries (0: as many as fit).
    pub max_entries: u32,
    /// Only handles whose stream name lies under this prefix (see [`crate::name_is_under`]);
    /// empty for all.
    pub prefix: Utf16Le<'a>,
}

/// A request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Version negotiation: the client's range.
    Hello {
        /// The oldest version the client speaks.
        min_version: u16,
        /// The newest version the client speaks.
        max_version: u16,
    },
    /// The context accounting and event counters.
    GetStats,
    /// A page of live streams, starting after `cursor` streams.
    ListStreams {
        /// How many streams earlier pages returned.
        cursor: u32,
        /// At most this many entries (0: as many as fit).
        max_entries: u32,
    },
    /// A page of open handles.
    QueryHandles(HandleQuery<'a>),
}

impl<'a> Request<'a> {
    /// The request's command number.
    #[must_use]
    pub const fn command(&self) -> u16 {
        match self {
            Self::Hello { .. } => command::HELLO,
            Self::GetStats => command::GET_STATS,
            Self::ListStreams { .. } => command::LIST_STREAMS,
            Self::QueryHandles(_) => command::QUERY_HANDLES,
        }
    }

    /// Parses a whole request message. Checks, in this order: size against the header and
    /// [`MAX_REQUEST_BYTES`], magic, the header's length, the version (any for Hello), the
    /// command, then the body, whose length must be exactly what the command defines.
    ///
    /// # Errors
    /// The first check that fails, as a [`ParseError`].
    pub fn parse(message: &'a [u8]) -> Result<(Header, Self), ParseError> {
        if message.len() > MAX_REQUEST_BYTES {
            return Err(ParseError::TooLong);
        }
        let header = Header::parse(message)?;
        if header.command != command::HELLO && !(PROTOCOL_MIN_VERSION..=PROTOCOL_VERSION).contains(&header.version) {
            return Err(ParseError::UnsupportedVersion(header.version));
        }
        let body = &message[HEADER_BYTES..];
        let mut reader = Reader::new(body);
        let request = match header.command {
            command::HELLO => {
                exact(body, HELLO_BYTES)?;
                let min_version = reader.u16()?;
                let max_version = reader.u16()?;
                reader.reserved(4)?;
                if min_version > max_version {
                    return Err(ParseError::Malformed);
                }
                Self::Hello { min_version, max_version }
            }
            command::GET_STATS => {
                exact(body, 0)?;
                Self::GetStats
            }
            command::LIST_STREAMS => {
                exact(body, LIST_STREAMS_BYTES)?;
                Self::ListStreams { cursor: reader.u32()?, max_entries: reader.u32()? }
            }
            command::QUERY_HANDLES => {
                if body.len() < HANDLES_FIXED_BYTES {
                    return Err(ParseError::TooShort);
                }
                let pid = reader.u32()?;
                let cursor = reader.u32()?;
                let flags = reader.u16()?;
                let prefix_units = usize::from(reader.u16()?);
                let max_entries = reader.u32()?;
                if flags & !HANDLES_FLAG_ANY_PID != 0 || prefix_units > MAX_PREFIX_UNITS {
                    return Err(ParseError::Malformed);
                }
                let any_pid = flags & HANDLES_FLAG_ANY_PID != 0;
                if any_pid && pid != 0 {
                    return Err(ParseError::Malformed);
                }
                exact(reader.remaining(), prefix_units * 2)?;
                let prefix = Utf16Le::new(reader.take(prefix_units * 2)?).ok_or(ParseError::Malformed)?;
                Self::QueryHandles(HandleQuery { pid, any_pid, cursor, max_entries, prefix })
            }
            other => return Err(ParseError::UnknownCommand(other)),
        };
        Ok((header, request))
    }
}

/// `TooShort` / `TooLong` unless `body` is exactly `expected` bytes.
fn exact(body: &[u8], expected: usize) -> Result<(), ParseError> {
    match body.len().cmp(&expected) {
        core::cmp::Ordering::Less => Err(ParseError::TooShort),
        core::cmp::Ordering::Equal => Ok(()),
        core::cmp::Ordering::Greater => Err(ParseError::TooLong),
    }
}

/// Encodes `request` with `request_id` into `out`, returning the message's length.
///
/// # Errors
/// [`EncodeError::BufferTooSmall`] when `out` is too short; [`EncodeError::TooLong`] when a
/// prefix exceeds [`MAX_PREFIX_UNITS`].
pub fn encode_request(request: &Request<'_>, request_id: u32, out: &mut [u8]) -> Result<usize, EncodeError> {
    let body = match request {
        Request::Hello { .. } => HELLO_BYTES,
        Request::GetStats => 0,
        Request::ListStreams { .. } => LIST_STREAMS_BYTES,
        Request::QueryHandles(query) => {
            if query.prefix.len() > MAX_PREFIX_UNITS {
                return Err(EncodeError::TooLong);
            }
            HANDLES_FIXED_BYTES + query.prefix.as_bytes().len()
        }
    };
    let length = HEADER_BYTES + body;
    let out = out.get_mut(..length).ok_or(EncodeError::BufferTooSmall)?;
    #[allow(clippy::cast_possible_truncation)] // length ≤ MAX_REQUEST_BYTES, far below u32::MAX.
    Header::new(request.command(), length as u32, request_id).encode(out)?;
    let mut writer = Writer::new(&mut out[HEADER_BYTES..]);
    match request {
        Request::Hello { min_version, max_version } => {
            writer.u16(*min_version)?;
            writer.u16(*max_version)?;
            writer.u32(0)?;
        }
        Request::GetStats => {}
        Request::ListStreams { cursor, max_entries } => {
            writer.u32(*cursor)?;
            writer.u32(*max_entries)?;
        }
        Request::QueryHandles(query) => {
            writer.u32(query.pid)?;
            writer.u32(query.cursor)?;
            writer.u16(if query.any_pid { HANDLES_FLAG_ANY_PID } else { 0 })?;
            #[allow(clippy::cast_possible_truncation)] // checked ≤ MAX_PREFIX_UNITS above.
            writer.u16(query.prefix.len() as u16)?;
            writer.u32(query.max_entries)?;
            writer.put(query.prefix.as_bytes())?;
        }
    }
    Ok(length)
}
