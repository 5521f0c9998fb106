//! Errors a person can act on.

use std::fmt;

use ctxguard_protocol::{PORT_NAME, PROTOCOL_MIN_VERSION, PROTOCOL_VERSION, ParseError, status};

use super::transport::TransportError;

/// Why a port command failed, phrased as what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortError {
    /// The port does not exist: the driver is not loaded.
    DriverNotLoaded,
    /// Connecting needs an administrator (or SYSTEM).
    AccessDenied,
    /// The two sides share no protocol version.
    VersionMismatch {
        /// The driver's range, when it could be learned.
        driver: Option<(u16, u16)>,
    },
    /// The port cannot be reached in this environment.
    NotReachable(String),
    /// Another client already receives the events.
    EventsBusy,
    /// The driver refused a request with this NTSTATUS.
    Refused(i32),
    /// The driver's reply did not parse.
    BadReply(ParseError),
    /// Anything else.
    Other(String),
}

impl From<TransportError> for PortError {
    fn from(error: TransportError) -> Self {
        match error {
            TransportError::PortNotFound => Self::DriverNotLoaded,
            TransportError::AccessDenied | TransportError::Status(status::ACCESS_DENIED) => Self::AccessDenied,
            TransportError::Status(status::REVISION_MISMATCH) => Self::VersionMismatch { driver: None },
            TransportError::Status(status::DEVICE_BUSY) => Self::EventsBusy,
            TransportError::Status(code) => Self::Refused(code),
            TransportError::NotReachable(detail) => Self::NotReachable(detail),
            TransportError::Other(detail) => Self::Other(detail),
        }
    }
}

impl fmt::Display for PortError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DriverNotLoaded => write!(
                formatter,
                "the ctxguard driver is not loaded (no port {PORT_NAME}); load it from an elevated prompt with: fltmc load ctxguard"
            ),
            Self::AccessDenied => write!(
                formatter,
                "access denied to {PORT_NAME}: only administrators and SYSTEM may connect; run ctxguard from an elevated prompt"
            ),
            Self::VersionMismatch { driver: Some((min, max)) } => write!(
                formatter,
                "protocol version mismatch: this ctxguard speaks {PROTOCOL_MIN_VERSION}..={PROTOCOL_VERSION}, the driver speaks {min}..={max}; install a matching ctxguard and ctxguard.sys"
            ),
            Self::VersionMismatch { driver: None } => write!(
                formatter,
                "protocol version mismatch: this ctxguard speaks {PROTOCOL_MIN_VERSION}..={PROTOCOL_VERSION}, the driver refused it and did not say its own; install a matching ctxguard and ctxguard.sys"
            ),
            Self::NotReachable(detail) => write!(formatter, "the driver's port is not reachable here: {detail}"),
            Self::EventsBusy => {
                formatter.write_str("another ctxguard watch is already receiving the driver's events; stop it first")
            }
            Self::Refused(code) => {
                write!(formatter, "the driver refused the request: {} ({:#010x})", status::name(*code), code.cast_unsigned())
            }
            Self::BadReply(error) => write!(formatter, "the driver's reply is malformed: {error}"),
            Self::Other(detail) => formatter.write_str(detail),
        }
    }
}

impl std::error::Error for PortError {}
