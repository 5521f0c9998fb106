//! Settings a running script may change (the default scenario widens race windows only for its
//! race phase and runs one phase with post-cleanup/close at DISPATCH_LEVEL). Process-global like
//! the emulator itself; reset when an emulator loads.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::exec::Irql;

static WIDEN_RACE_WINDOWS: AtomicBool = AtomicBool::new(false);
/// `NO_OVERRIDE`, or the IRQL post-cleanup and post-close callbacks run at.
static POST_IRQL: AtomicU8 = AtomicU8::new(NO_OVERRIDE);
const NO_OVERRIDE: u8 = 0xFF;

/// Back to the configuration's values.
pub fn reset() {
    WIDEN_RACE_WINDOWS.store(false, Ordering::Relaxed);
    POST_IRQL.store(NO_OVERRIDE, Ordering::Relaxed);
}

/// Whether context Gets that find nothing sleep (the configured value or the override).
pub fn widen_race_windows(configured: bool) -> bool {
    configured || WIDEN_RACE_WINDOWS.load(Ordering::Relaxed)
}

/// Sets the race-window override.
pub fn set_widen_race_windows(on: bool) {
    WIDEN_RACE_WINDOWS.store(on, Ordering::Relaxed);
}

/// The IRQL post-cleanup/close callbacks run at: the override, else the configured one.
pub fn post_irql(configured: Irql) -> Irql {
    match POST_IRQL.load(Ordering::Relaxed) {
        NO_OVERRIDE => configured,
        irql => irql,
    }
}

/// Sets (Some) or clears (None) the post-operation IRQL override.
pub fn set_post_irql(irql: Option<Irql>) {
    POST_IRQL.store(irql.unwrap_or(NO_OVERRIDE), Ordering::Relaxed);
}
