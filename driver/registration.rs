//! DriverEntry, the filter registration and unload.
//!
//! Order (fltmgr-semantics E7, E8): register → create the port → start filtering; on any
//! failure after registering, close what was opened and unregister before returning the status
//! (unload is never called when DriverEntry fails). Unload: close the port, unregister, then
//! global cleanup.

use core::sync::atomic::{AtomicIsize, Ordering};

use fltctx::{Operation, Registration};
use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FltRegisterFilter, FltStartFiltering, PFLT_FILTER};
use windows_sys::Wdk::System::SystemServices::{IRP_MJ_CLEANUP, IRP_MJ_CLOSE, IRP_MJ_CREATE};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS, UNICODE_STRING};

use crate::{events, instance, kernel, operations, payloads, port};

/// The IRP_MJ_* codes ctxguard registers, as the UCHAR of FLT_OPERATION_REGISTRATION.
#[allow(clippy::cast_possible_truncation)] // IRP_MJ_* codes fit the UCHAR field.
mod major {
    pub const CREATE: u8 = super::IRP_MJ_CREATE as u8;
    pub const CLEANUP: u8 = super::IRP_MJ_CLEANUP as u8;
    pub const CLOSE: u8 = super::IRP_MJ_CLOSE as u8;
}

fltctx::operations! {
    /// The operation table (IRP_MJ_OPERATION_END appended by fltctx).
    static OPERATIONS = [
        Operation::new(major::CREATE).pre(operations::pre_create).post(operations::post_create),
        // Cleanup and close do their work in the pre-operation and never ask for a post (E3).
        Operation::new(major::CLEANUP).pre(operations::pre_cleanup),
        Operation::new(major::CLOSE).pre(operations::pre_close),
    ];
}

static REGISTRATION: Registration = Registration::new(&payloads::CONTEXTS, &OPERATIONS)
    .unload(filter_unload)
    .instance_setup(Some(instance::setup))
    .instance_query_teardown(Some(instance::query_teardown))
    .instance_teardown_start(Some(instance::teardown_start))
    .instance_teardown_complete(Some(instance::teardown_complete));

/// The filter handle from FltRegisterFilter; 0 while unregistered.
static FILTER: AtomicIsize = AtomicIsize::new(0);

/// The registered filter handle (0 before DriverEntry registers and after unload).
pub fn filter() -> PFLT_FILTER {
    FILTER.load(Ordering::Acquire)
}

/// The driver's entry point: register the filter and start filtering.
///
/// # Safety
/// Called once by the I/O manager with a valid driver object.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn DriverEntry(driver_object: *mut DRIVER_OBJECT, _registry_path: *const UNICODE_STRING) -> NTSTATUS {
    payloads::initialize();
    let mut filter: PFLT_FILTER = 0;
    // SAFETY: the driver object comes from the I/O manager; REGISTRATION is a static that
    // outlives the filter; `filter` is a valid out pointer.
    let status = unsafe { FltRegisterFilter(driver_object, REGISTRATION.as_ptr(), &raw mut filter) };
    if !kernel::nt_success(status) {
        kprint!("FltRegisterFilter failed: {status:#010x}");
        payloads::delete();
        return status;
    }
    FILTER.store(filter, Ordering::Release);

    // The port exists before filtering starts, so the companion can connect from the first I/O.
    let status = port::open(filter);
    if !kernel::nt_success(status) {
        kprint!("creating the communication port failed: {status:#010x}");
        unregister();
        payloads::delete();
        return status;
    }

    // SAFETY: `filter` was just returned by a successful FltRegisterFilter.
    let status = unsafe { FltStartFiltering(filter) };
    if !kernel::nt_success(status) {
        kprint!("FltStartFiltering failed: {status:#010x}");
        port::close();
        unregister();
        payloads::delete();
        return status;
    }
    kprint!("loaded, version {}", env!("CARGO_PKG_VERSION"));
    STATUS_SUCCESS
}

/// Unregisters the filter if registered; Filter Manager then tears every instance down.
fn unregister() {
    let filter = FILTER.swap(0, Ordering::AcqRel);
    if filter != 0 {
        // SAFETY: `filter` came from a successful FltRegisterFilter and is unregistered once,
        // because the swap above hands it to exactly one caller.
        let parked = unsafe { fltctx::unregister(filter) };
        if parked != 0 {
            // Every guard ctxguard holds lives in a callback or in a context payload, so none
            // outlives FltUnregisterFilter; a non-zero count would be a bug worth seeing. (No
            // number in the message: formatting one would pull integer Display into the image.)
            kprint!("context guards outlived FltUnregisterFilter");
        }
    }
}

/// FilterUnloadCallback (PASSIVE_LEVEL): always accepts; unregisters, then global cleanup.
unsafe extern "system" fn filter_unload(_flags: u32) -> NTSTATUS {
    // Ports first: FltUnregisterFilter waits for open server ports (E8, B11).
    port::close();
    unregister();
    events::discard_remaining();
    // Every context was freed by FltUnregisterFilter, so the registries are empty.
    payloads::delete();
    kprint!("unloaded");
    STATUS_SUCCESS
}
