//! The NTSTATUS each refusal gets, shared so the companion can explain them.
//!
//! The driver's message callback returns these; FilterSendMessage turns them into an HRESULT
//! (`HRESULT_FROM_NT`, i.e. the status with bit 28 set). NTSTATUS values are kept as `i32`
//! like windows-sys's `NTSTATUS`.

use crate::ParseError;

/// `STATUS_SUCCESS`.
pub const SUCCESS: i32 = 0;
/// `STATUS_DATATYPE_MISALIGNMENT`: a buffer address is not 8-byte aligned.
#[allow(clippy::cast_possible_wrap)]
pub const DATATYPE_MISALIGNMENT: i32 = 0x8000_0002_u32 as i32;
/// `STATUS_INFO_LENGTH_MISMATCH`: the header's length differs from the bytes sent.
#[allow(clippy::cast_possible_wrap)]
pub const INFO_LENGTH_MISMATCH: i32 = 0xC000_0004_u32 as i32;
/// `STATUS_INVALID_PARAMETER`: bad magic, a reserved field set or a field out of range.
#[allow(clippy::cast_possible_wrap)]
pub const INVALID_PARAMETER: i32 = 0xC000_000D_u32 as i32;
/// `STATUS_INVALID_DEVICE_REQUEST`: an unknown command.
#[allow(clippy::cast_possible_wrap)]
pub const INVALID_DEVICE_REQUEST: i32 = 0xC000_0010_u32 as i32;
/// `STATUS_BUFFER_TOO_SMALL`: the request is shorter than its command needs, or the output
/// buffer cannot hold the reply (for lists: not even one entry).
#[allow(clippy::cast_possible_wrap)]
pub const BUFFER_TOO_SMALL: i32 = 0xC000_0023_u32 as i32;
/// `STATUS_REVISION_MISMATCH`: a protocol version the driver does not speak.
#[allow(clippy::cast_possible_wrap)]
pub const REVISION_MISMATCH: i32 = 0xC000_0059_u32 as i32;
/// `STATUS_INSUFFICIENT_RESOURCES`: the driver could not allocate the capture buffer.
#[allow(clippy::cast_possible_wrap)]
pub const INSUFFICIENT_RESOURCES: i32 = 0xC000_009A_u32 as i32;
/// `STATUS_INVALID_USER_BUFFER`: an address the driver could not read or write.
#[allow(clippy::cast_possible_wrap)]
pub const INVALID_USER_BUFFER: i32 = 0xC000_00E8_u32 as i32;
/// `STATUS_INVALID_BUFFER_SIZE`: the request (or the connection context) is longer than its
/// command allows, or longer than [`crate::MAX_REQUEST_BYTES`].
#[allow(clippy::cast_possible_wrap)]
pub const INVALID_BUFFER_SIZE: i32 = 0xC000_0206_u32 as i32;
/// `STATUS_DEVICE_BUSY`: a second client asked for the event stream.
#[allow(clippy::cast_possible_wrap)]
pub const DEVICE_BUSY: i32 = 0x8000_0011_u32 as i32;
/// `STATUS_ACCESS_DENIED`.
#[allow(clippy::cast_possible_wrap)]
pub const ACCESS_DENIED: i32 = 0xC000_0022_u32 as i32;

/// The status a request refused with `error` gets.
#[must_use]
pub const fn of(error: ParseError) -> i32 {
    match error {
        ParseError::TooShort => BUFFER_TOO_SMALL,
        ParseError::TooLong => INVALID_BUFFER_SIZE,
        ParseError::LengthMismatch => INFO_LENGTH_MISMATCH,
        ParseError::BadMagic | ParseError::Malformed => INVALID_PARAMETER,
        ParseError::UnsupportedVersion(_) => REVISION_MISMATCH,
        ParseError::UnknownCommand(_) => INVALID_DEVICE_REQUEST,
    }
}

/// A short name for `status`, for messages a person reads.
#[must_use]
pub const fn name(status: i32) -> &'static str {
    match status {
        SUCCESS => "STATUS_SUCCESS",
        DATATYPE_MISALIGNMENT => "STATUS_DATATYPE_MISALIGNMENT",
        INFO_LENGTH_MISMATCH => "STATUS_INFO_LENGTH_MISMATCH",
        INVALID_PARAMETER => "STATUS_INVALID_PARAMETER",
        INVALID_DEVICE_REQUEST => "STATUS_INVALID_DEVICE_REQUEST",
        BUFFER_TOO_SMALL => "STATUS_BUFFER_TOO_SMALL",
        REVISION_MISMATCH => "STATUS_REVISION_MISMATCH",
        INSUFFICIENT_RESOURCES => "STATUS_INSUFFICIENT_RESOURCES",
        INVALID_USER_BUFFER => "STATUS_INVALID_USER_BUFFER",
        INVALID_BUFFER_SIZE => "STATUS_INVALID_BUFFER_SIZE",
        DEVICE_BUSY => "STATUS_DEVICE_BUSY",
        ACCESS_DENIED => "STATUS_ACCESS_DENIED",
        _ => "an NTSTATUS",
    }
}
