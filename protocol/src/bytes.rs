//! Bounds-checked little-endian reading and writing over byte slices.

use core::fmt;

/// Why a message was refused. Each maps to one NTSTATUS (see [`crate::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes than the header or the command's fixed part needs.
    TooShort,
    /// More bytes than the command allows (or than [`crate::MAX_REQUEST_BYTES`]).
    TooLong,
    /// The header's length field differs from the bytes present.
    LengthMismatch,
    /// The first four bytes are not [`crate::MAGIC`].
    BadMagic,
    /// The header's version is not one this build speaks for this command.
    UnsupportedVersion(u16),
    /// A command number this build does not know (or not valid in this direction).
    UnknownCommand(u16),
    /// A field is out of range: reserved bits set, a count beyond the bytes present, an
    /// unknown enum value.
    Malformed,
}

impl fmt::Display for ParseError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort => formatter.write_str("message shorter than its command needs"),
            Self::TooLong => formatter.write_str("message longer than its command allows"),
            Self::LengthMismatch => formatter.write_str("header length differs from the message's size"),
            Self::BadMagic => formatter.write_str("bad magic"),
            Self::UnsupportedVersion(version) => write!(formatter, "unsupported protocol version {version}"),
            Self::UnknownCommand(command) => write!(formatter, "unknown command {command:#06x}"),
            Self::Malformed => formatter.write_str("malformed field"),
        }
    }
}

/// Why a message could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer cannot hold the message.
    BufferTooSmall,
    /// A name or prefix is longer than the protocol allows.
    TooLong,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall => formatter.write_str("output buffer too small"),
            Self::TooLong => formatter.write_str("name longer than the protocol allows"),
        }
    }
}

/// Reads little-endian fields front to back; every read checks the bytes remaining.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub(crate) fn take(&mut self, count: usize) -> Result<&'a [u8], ParseError> {
        let Some((head, tail)) = self.bytes.split_at_checked(count) else {
            return Err(ParseError::TooShort);
        };
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ParseError> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ParseError> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ParseError> {
        self.array().map(u64::from_le_bytes)
    }

    pub(crate) fn i64(&mut self) -> Result<i64, ParseError> {
        self.array().map(i64::from_le_bytes)
    }

    /// Skips `count` reserved bytes, which must be zero.
    pub(crate) fn reserved(&mut self, count: usize) -> Result<(), ParseError> {
        if self.take(count)?.iter().all(|byte| *byte == 0) { Ok(()) } else { Err(ParseError::Malformed) }
    }

    pub(crate) const fn remaining(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Writes little-endian fields front to back into a fixed slice.
pub(crate) struct Writer<'a> {
    bytes: &'a mut [u8],
    position: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(bytes: &'a mut [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    pub(crate) fn put(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        let end = self.position.checked_add(data.len()).ok_or(EncodeError::BufferTooSmall)?;
        let target = self.bytes.get_mut(self.position..end).ok_or(EncodeError::BufferTooSmall)?;
        target.copy_from_slice(data);
        self.position = end;
        Ok(())
    }

    pub(crate) fn u16(&mut self, value: u16) -> Result<(), EncodeError> {
        self.put(&value.to_le_bytes())
    }

    pub(crate) fn u32(&mut self, value: u32) -> Result<(), EncodeError> {
        self.put(&value.to_le_bytes())
    }

    pub(crate) fn u64(&mut self, value: u64) -> Result<(), EncodeError> {
        self.put(&value.to_le_bytes())
    }

    pub(crate) fn i64(&mut self, value: i64) -> Result<(), EncodeError> {
        self.put(&value.to_le_bytes())
    }

    pub(crate) fn zeros(&mut self, count: usize) -> Result<(), EncodeError> {
        let end = self.position.checked_add(count).ok_or(EncodeError::BufferTooSmall)?;
        self.bytes.get_mut(self.position..end).ok_or(EncodeError::BufferTooSmall)?.fill(0);
        self.position = end;
        Ok(())
    }

    /// Writes UTF-16 units little-endian, then zeros up to the next multiple of 8 bytes.
    pub(crate) fn name(&mut self, units: impl Iterator<Item = u16>, count: usize) -> Result<(), EncodeError> {
        let bytes = count.checked_mul(2).ok_or(EncodeError::TooLong)?;
        let end = self.position.checked_add(crate::pad8(bytes)).ok_or(EncodeError::BufferTooSmall)?;
        if end > self.bytes.len() {
            return Err(EncodeError::BufferTooSmall);
        }
        for unit in units.take(count) {
            self.u16(unit)?;
        }
        self.zeros(end - self.position)
    }

    pub(crate) const fn position(&self) -> usize {
        self.position
    }
}
