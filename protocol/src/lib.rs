//! ctxguard's wire format, shared by the driver (no_std) and the companion.
#![no_std]

/// The protocol version both sides speak.
pub const PROTOCOL_VERSION: u16 = 1;

/// The name of the driver's filter communication port.
pub const PORT_NAME: &str = "\\ctxguardPort";
