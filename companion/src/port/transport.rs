//! The byte-moving interface under the client, so that the same client code runs against the
//! real port (FltLib on Windows) and against fltemu's user side in tests.

use ctxguard_protocol::{ConnectContext, status};

/// What a transport reports when it cannot deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// No port of that name: the driver is not loaded (or did not create its port).
    PortNotFound,
    /// The port exists but this process may not connect (not elevated).
    AccessDenied,
    /// The port cannot be reached at all here (not Windows, Wine's FltLib stubs, a NULL handle).
    NotReachable(String),
    /// The driver refused: the NTSTATUS of its connect or message callback.
    Status(i32),
    /// Anything else, with the system's description.
    Other(String),
}

/// One connection to the driver's port.
pub trait Transport {
    /// Sends one request message and returns the reply bytes (FilterSendMessage).
    ///
    /// # Errors
    /// [`TransportError`], notably `Status` with the driver's NTSTATUS.
    fn send(&self, request: &[u8]) -> Result<Vec<u8>, TransportError>;

    /// Waits for the next message the driver sends (FilterGetMessage) and returns its bytes,
    /// without Filter Manager's message header.
    ///
    /// # Errors
    /// [`TransportError`] (the port was disconnected, e.g. the driver unloaded).
    fn get_message(&self) -> Result<Vec<u8>, TransportError>;
}

/// Opens connections (FilterConnectCommunicationPort) with a connection context.
pub trait Connector {
    /// Connects to the port.
    ///
    /// # Errors
    /// [`TransportError`] for a missing port, denied access, a refused context.
    fn connect(&self, context: &ConnectContext) -> Result<Box<dyn Transport>, TransportError>;
}

impl<F> Connector for F
where
    F: Fn(&ConnectContext) -> Result<Box<dyn Transport>, TransportError>,
{
    fn connect(&self, context: &ConnectContext) -> Result<Box<dyn Transport>, TransportError> {
        self(context)
    }
}

/// `E_NOTIMPL`: what Wine's FltLib returns.
const E_NOTIMPL: u32 = 0x8000_4001;
/// `FACILITY_NT_BIT`: an HRESULT that wraps an NTSTATUS (`HRESULT_FROM_NT`).
const FACILITY_NT_BIT: u32 = 0x1000_0000;
/// `HRESULT_FROM_WIN32(0)`: the Win32 facility.
const FACILITY_WIN32: u32 = 0x8007_0000;

/// What a failed FltLib HRESULT means. FltLib reports the driver's NTSTATUS either as
/// `HRESULT_FROM_WIN32(RtlNtStatusToDosError(status))` or, for statuses without a Win32 code,
/// as `HRESULT_FROM_NT(status)`; both forms of the statuses the companion acts on are mapped.
#[must_use]
pub fn classify_hresult(hresult: i32) -> TransportError {
    let bits = hresult.cast_unsigned();
    if bits == E_NOTIMPL {
        return TransportError::NotReachable("FltLib is not implemented here (Wine's FltLib returns E_NOTIMPL)".into());
    }
    if bits & FACILITY_NT_BIT != 0 {
        return TransportError::Status((bits & !FACILITY_NT_BIT).cast_signed());
    }
    if bits & 0xFFFF_0000 == FACILITY_WIN32 {
        return match bits & 0xFFFF {
            2 | 3 => TransportError::PortNotFound, // ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND
            5 => TransportError::AccessDenied,     // ERROR_ACCESS_DENIED
            170 => TransportError::Status(status::DEVICE_BUSY), // ERROR_BUSY
            1306 => TransportError::Status(status::REVISION_MISMATCH), // ERROR_REVISION_MISMATCH
            1238 => TransportError::Other(
                "the driver's port already has its maximum number of clients; close another ctxguard first".into(),
            ),
            code => TransportError::Other(format!("FltLib failed with HRESULT {bits:#010x} (Win32 error {code})")),
        };
    }
    TransportError::Other(format!("FltLib failed with HRESULT {bits:#010x}"))
}
