//! The kernel corner: allocator, panic handler, debug print, runtime symbols and IRQL.
//!
//! Only these few lines differ between the no-WDK build and the `wdk` feature: without it the
//! driver brings its own allocator, panic handler and runtime symbols; with it the wdk crates do.

#[macro_use]
pub mod print;
pub mod paged_name;

#[cfg(not(feature = "wdk"))]
mod panic;
#[cfg(not(feature = "wdk"))]
mod pool_allocator;
#[cfg(not(feature = "wdk"))]
mod runtime;
pub mod spin_lock;

#[cfg(feature = "wdk")]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;
#[cfg(feature = "wdk")]
use wdk_panic as _;

/// The pool tag of every allocation ctxguard makes ('CxGd', shown reversed by pool tools).
pub const POOL_TAG: u32 = u32::from_le_bytes(*b"CxGd");

/// `PASSIVE_LEVEL`.
pub const PASSIVE_LEVEL: u8 = 0;
/// `APC_LEVEL`.
pub const APC_LEVEL: u8 = 1;
/// `DISPATCH_LEVEL`.
pub const DISPATCH_LEVEL: u8 = 2;

/// The processor's current IRQL.
///
/// Goes through the ntoskrnl import rather than an inline CR8 read, so that an emulator
/// (fltemu) can model IRQL and check the documented limits.
#[must_use]
pub fn current_irql() -> u8 {
    // SAFETY: KeGetCurrentIrql takes no arguments, may be called at any IRQL and only reads
    // processor state.
    unsafe { windows_sys::Wdk::System::SystemServices::KeGetCurrentIrql() }
}

/// The system time (100 ns since 1601, UTC), `KeQuerySystemTimePrecise`.
#[must_use]
pub fn system_time() -> i64 {
    let mut time = 0_i64;
    // SAFETY: `time` is a valid out pointer; callable at any IRQL.
    unsafe { windows_sys::Wdk::System::SystemServices::KeQuerySystemTimePrecise(&raw mut time) };
    time
}

/// `NT_SUCCESS`: severity success or informational.
#[must_use]
pub const fn nt_success(status: i32) -> bool {
    status >= 0
}
