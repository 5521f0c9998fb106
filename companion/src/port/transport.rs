//! The byte-moving interface under the client, so that the same client code runs against the
//! real port (FltLib on Windows) and against fltemu's user side in tests.

use ctxguard_protocol::ConnectContext;

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
