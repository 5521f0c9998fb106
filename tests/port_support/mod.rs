//! Shared by tests/port_*.rs: ctxguard.sys loaded in fltemu, and the companion's port client
//! connected to it through fltemu's emulated user side.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use ctxguard_companion::port::{Connector, Transport, TransportError, classify_hresult};
use ctxguard_protocol::{ConnectContext, Event, MAX_EVENT_NAME_UNITS, PORT_NAME};
use fltemu::{Config, EmuError, Emulator, FILTER_MESSAGE_HEADER_SIZE, UserPort, VolumeId, VolumeSpec};

use crate::support::{Arch, driver_image};

/// The volume the tests mount.
pub const VOLUME: &str = "\\Device\\HarddiskVolume1";
/// The process the companion runs as.
pub const COMPANION_PID: u32 = 4242;
/// Output buffer each request offers (the driver fills at most this much).
pub const REPLY_CAPACITY: usize = 64 * 1024;

/// ctxguard.sys running in fltemu with one NTFS volume attached.
pub struct Harness {
    pub emulator: Arc<Emulator>,
    pub volume: VolumeId,
}

/// Loads the real ctxguard.sys (x64, release) and mounts [`VOLUME`].
pub fn load() -> Harness {
    let emulator = Emulator::load(driver_image(Arch::X64), Config::default()).expect("ctxguard.sys loads in fltemu");
    let volume = emulator.mount(VolumeSpec::ntfs(VOLUME)).expect("mount");
    Harness { emulator: Arc::new(emulator), volume }
}

/// The companion's transport over fltemu's user side.
pub struct EmuTransport {
    emulator: Arc<Emulator>,
    port: UserPort,
}

impl EmuTransport {
    /// The user port, for tests that drive it directly.
    pub fn port(&self) -> &UserPort {
        &self.port
    }
}

fn emu_error(error: &EmuError) -> TransportError {
    TransportError::Other(format!("fltemu: {error}"))
}

impl Transport for EmuTransport {
    fn send(&self, request: &[u8]) -> Result<Vec<u8>, TransportError> {
        let input = self.emulator.user_buffer_from(request);
        let output = self.emulator.user_buffer(REPLY_CAPACITY);
        match self.port.send_message(Some(&input), Some(&output)) {
            Ok(Ok(returned)) => Ok(output.read()[..returned as usize].to_vec()),
            Ok(Err(hresult)) => Err(classify_hresult(hresult)),
            Err(error) => Err(emu_error(&error)),
        }
    }

    fn get_message(&self) -> Result<Vec<u8>, TransportError> {
        let capacity = FILTER_MESSAGE_HEADER_SIZE + Event::encoded_len(MAX_EVENT_NAME_UNITS);
        match self.port.get_message(capacity, Some(Duration::from_secs(2))) {
            Ok(message) => Ok(message.payload),
            Err(hresult) => Err(classify_hresult(hresult)),
        }
    }
}

/// Connects as process `pid`, returning the raw port (HRESULT on refusal).
pub fn connect_raw(emulator: &Emulator, context: &[u8], pid: u32) -> Result<UserPort, i32> {
    emulator.connect_port(PORT_NAME, context, pid).expect("the driver survives connect")
}

/// A connector the companion's [`ctxguard_companion::port::Client`] uses.
pub fn connector(emulator: &Arc<Emulator>) -> impl Connector + use<> {
    let emulator = Arc::clone(emulator);
    move |context: &ConnectContext| -> Result<Box<dyn Transport>, TransportError> {
        let port = emulator
            .connect_port(PORT_NAME, &context.encode(), COMPANION_PID)
            .map_err(|error| emu_error(&error))?
            .map_err(classify_hresult)?;
        Ok(Box::new(EmuTransport { emulator: Arc::clone(&emulator), port }))
    }
}

/// Asserts the emulator recorded no violation and no stop.
pub fn assert_clean(emulator: &Emulator) {
    let report = emulator.report();
    assert!(report.violations.is_empty(), "violations: {:#?}", report.violations);
    assert!(report.stop.is_none(), "stopped: {:?}", report.stop);
}

/// Unloads and asserts a clean report: no violation, no leaked pool, work item or context.
pub fn unload_clean(emulator: &Emulator) {
    let report = emulator.unload().expect("unload");
    assert!(report.violations.is_empty(), "violations at unload: {:#?}", report.violations);
    assert!(report.stop.is_none(), "stopped: {:?}", report.stop);
    assert_eq!((report.pool_bytes_outstanding, report.pool_blocks_outstanding), (0, 0), "pool leaked");
    assert_eq!(report.contexts_outstanding, 0, "contexts leaked");
}
