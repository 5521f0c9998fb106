//! DriverEntry, the filter registration and unload.
//!
//! Order (fltmgr-semantics E7, E8): register → create the port → start filtering; on any
//! failure after registering, close what was opened and unregister before returning the status
//! (unload is never called when DriverEntry fails). Unload: close the port, unregister, then
//! global cleanup.

use core::sync::atomic::{AtomicIsize, Ordering};

use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CONTEXT_REGISTRATION, FLT_OPERATION_REGISTRATION, FLT_REGISTRATION, FLT_REGISTRATION_VERSION_0203, FltRegisterFilter,
    FltStartFiltering, FltUnregisterFilter, IRP_MJ_OPERATION_END, PFLT_FILTER,
};
use windows_sys::Wdk::System::SystemServices::{IRP_MJ_CLEANUP, IRP_MJ_CLOSE, IRP_MJ_CREATE};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS, UNICODE_STRING};

use crate::{accounting, context, events, instance, kernel, operations, port};

/// Registration data holds raw pointers; it lives in immutable statics that Filter Manager
/// only reads.
#[repr(transparent)]
struct Static<T>(T);

// SAFETY: the wrapped registration structures are never mutated after compilation; the raw
// pointers inside point to other immutable statics.
unsafe impl<T> Sync for Static<T> {}

static CONTEXTS: Static<[FLT_CONTEXT_REGISTRATION; 4]> = Static(context::CONTEXT_REGISTRATION);

const fn operation(
    major_function: u32,
    pre: operations::PreCallback,
    post: Option<operations::PostCallback>,
) -> FLT_OPERATION_REGISTRATION {
    FLT_OPERATION_REGISTRATION {
        #[allow(clippy::cast_possible_truncation)] // IRP_MJ_* codes fit the UCHAR field.
        MajorFunction: major_function as u8,
        Flags: 0,
        PreOperation: Some(pre),
        PostOperation: post,
        Reserved1: core::ptr::null_mut(),
    }
}

static OPERATIONS: Static<[FLT_OPERATION_REGISTRATION; 4]> = Static([
    operation(IRP_MJ_CREATE, operations::pre_create, Some(operations::post_create)),
    // Cleanup and close do their work in the pre-operation and never ask for a post (E3).
    operation(IRP_MJ_CLEANUP, operations::pre_cleanup, None),
    operation(IRP_MJ_CLOSE, operations::pre_close, None),
    FLT_OPERATION_REGISTRATION {
        #[allow(clippy::cast_possible_truncation)] // 0x80 fits the UCHAR field.
        MajorFunction: IRP_MJ_OPERATION_END as u8,
        Flags: 0,
        PreOperation: None,
        PostOperation: None,
        Reserved1: core::ptr::null_mut(),
    },
]);

static REGISTRATION: Static<FLT_REGISTRATION> = Static(FLT_REGISTRATION {
    #[allow(clippy::cast_possible_truncation)]
    Size: size_of::<FLT_REGISTRATION>() as u16,
    #[allow(clippy::cast_possible_truncation)]
    Version: FLT_REGISTRATION_VERSION_0203 as u16,
    Flags: 0,
    ContextRegistration: CONTEXTS.0.as_ptr(),
    OperationRegistration: OPERATIONS.0.as_ptr(),
    FilterUnloadCallback: Some(filter_unload),
    InstanceSetupCallback: Some(instance::setup),
    InstanceQueryTeardownCallback: Some(instance::query_teardown),
    InstanceTeardownStartCallback: Some(instance::teardown_start),
    InstanceTeardownCompleteCallback: Some(instance::teardown_complete),
    GenerateFileNameCallback: None,
    NormalizeNameComponentCallback: None,
    NormalizeContextCleanupCallback: None,
    TransactionNotificationCallback: None,
    NormalizeNameComponentExCallback: None,
    SectionNotificationCallback: None,
});

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
    accounting::initialize();
    let mut filter: PFLT_FILTER = 0;
    // SAFETY: the driver object comes from the I/O manager; REGISTRATION is a static that
    // outlives the filter; `filter` is a valid out pointer.
    let status = unsafe { FltRegisterFilter(driver_object, &raw const REGISTRATION.0, &raw mut filter) };
    if !kernel::nt_success(status) {
        kprint!("FltRegisterFilter failed: {status:#010x}");
        accounting::delete();
        return status;
    }
    FILTER.store(filter, Ordering::Release);

    // The port exists before filtering starts, so the companion can connect from the first I/O.
    let status = port::open(filter);
    if !kernel::nt_success(status) {
        kprint!("creating the communication port failed: {status:#010x}");
        unregister();
        accounting::delete();
        return status;
    }

    // SAFETY: `filter` was just returned by a successful FltRegisterFilter.
    let status = unsafe { FltStartFiltering(filter) };
    if !kernel::nt_success(status) {
        kprint!("FltStartFiltering failed: {status:#010x}");
        port::close();
        unregister();
        accounting::delete();
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
        unsafe { FltUnregisterFilter(filter) };
    }
}

/// FilterUnloadCallback (PASSIVE_LEVEL): always accepts; unregisters, then global cleanup.
unsafe extern "system" fn filter_unload(_flags: u32) -> NTSTATUS {
    // Ports first: FltUnregisterFilter waits for open server ports (E8, B11).
    port::close();
    unregister();
    events::discard_remaining();
    // Every context was freed by FltUnregisterFilter, so the registries are empty.
    accounting::delete();
    kprint!("unloaded");
    STATUS_SUCCESS
}
