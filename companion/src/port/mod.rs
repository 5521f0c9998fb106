//! The port client: talks to ctxguard.sys's filter communication port.
//!
//! Layers, bottom up:
//! * [`Transport`]: moves bytes (FilterSendMessage / FilterGetMessage on Windows — [`fltlib`];
//!   fltemu's emulated user side in the tests);
//! * [`Client`]: requests and replies of ctxguard-protocol, paging, version checks;
//! * [`cli`]: the `status`, `stats`, `streams`, `handles` and `watch` subcommands;
//! * [`witness`]: `ctxguard crypto`'s driver correlation over QueryHandles.

pub mod cli;
mod client;
mod error;
#[cfg(windows)]
pub mod fltlib;
pub mod paths;
mod transport;

pub use client::{Client, EventInfo, HandleInfo, Hello, KindInfo, Stats, StreamInfo};
pub use error::PortError;
pub use transport::{Connector, Transport, TransportError, classify_hresult};
