//! The minimal minifilter on fltctx: a pass-through filter that keeps a stream-handle context
//! per open file, counting the reads and writes done through it. Copy this to start a filter.
//!
//! Everything Filter Manager needs is declared, not filled in by hand: the payload list makes
//! the context registration, the operation list the operation table, and the builder the
//! `FLT_REGISTRATION`. No callback releases a context itself: guards do.
#![cfg_attr(target_os = "windows", no_std)]
#![cfg(target_os = "windows")]

use core::ffi::c_void;
use core::sync::atomic::{AtomicIsize, AtomicU32, Ordering};

use fltctx::{Attached, FileObjects, Lookup, Operation, Registration, StreamHandleContext};
use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_FINISHED_PROCESSING, FLT_PREOP_CALLBACK_STATUS,
    FLT_PREOP_SUCCESS_NO_CALLBACK, FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_RELATED_OBJECTS, FLTFL_POST_OPERATION_DRAINING,
    FltRegisterFilter, FltStartFiltering, FltUnregisterFilter, PFLT_FILTER,
};
use windows_sys::Wdk::System::SystemServices::{IRP_MJ_CREATE, IRP_MJ_READ, IRP_MJ_WRITE};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS, UNICODE_STRING};

/// What the filter keeps per open: the reads and writes through that FILE_OBJECT.
struct HandleData {
    transfers: AtomicU32,
}

fltctx::contexts! {
    /// The context registration: one payload, for stream-handle contexts.
    static CONTEXTS: accounting = ();
    HandleData: StreamHandle, tag b"PtSh";
}

#[allow(clippy::cast_possible_truncation)] // IRP_MJ_* codes fit the UCHAR field.
mod majors {
    pub const CREATE: u8 = super::IRP_MJ_CREATE as u8;
    pub const READ: u8 = super::IRP_MJ_READ as u8;
    pub const WRITE: u8 = super::IRP_MJ_WRITE as u8;
}

fltctx::operations! {
    static OPERATIONS = [
        // Contexts can only be set once the FILE_OBJECT is open: in post-create (A9).
        Operation::new(majors::CREATE).pre(pre_create).post(post_create),
        Operation::new(majors::READ).pre(pre_transfer),
        Operation::new(majors::WRITE).pre(pre_transfer),
    ];
}

static REGISTRATION: Registration = Registration::new(&CONTEXTS, &OPERATIONS)
    .unload(unload)
    .instance_query_teardown(Some(query_teardown));

static FILTER: AtomicIsize = AtomicIsize::new(0);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: KeBugCheckEx never returns; the parameters are plain numbers ("PTHR").
    unsafe { ntoskrnl_imports::KeBugCheckEx(0x5054_4852, 0, 0, 0, 0) }
}

/// The entry point: register, start filtering; unregister if starting fails (E7).
///
/// # Safety
/// Called once by the I/O manager with a valid driver object.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn DriverEntry(driver: *mut DRIVER_OBJECT, _registry_path: *const UNICODE_STRING) -> NTSTATUS {
    let mut filter: PFLT_FILTER = 0;
    // SAFETY: a valid driver object, a registration that lives in a static, a valid out pointer.
    let status = unsafe { FltRegisterFilter(driver, REGISTRATION.as_ptr(), &raw mut filter) };
    if status < 0 {
        return status;
    }
    FILTER.store(filter, Ordering::Release);
    // SAFETY: the handle of the successful FltRegisterFilter above.
    let status = unsafe { FltStartFiltering(filter) };
    if status < 0 {
        FILTER.store(0, Ordering::Release);
        // SAFETY: registered above and unregistered once.
        unsafe { FltUnregisterFilter(filter) };
    }
    status
}

unsafe extern "system" fn unload(_flags: u32) -> NTSTATUS {
    let filter = FILTER.swap(0, Ordering::AcqRel);
    if filter != 0 {
        // SAFETY: the registered filter, unregistered once; no guard lives outside a callback.
        let _ = unsafe { fltctx::unregister(filter) };
    }
    STATUS_SUCCESS
}

unsafe extern "system" fn query_teardown(_objects: *const FLT_RELATED_OBJECTS, _flags: u32) -> NTSTATUS {
    STATUS_SUCCESS
}

unsafe extern "system" fn pre_create(_data: *mut FLT_CALLBACK_DATA, _objects: *const FLT_RELATED_OBJECTS, _completion: *mut *mut c_void) -> FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_WITH_CALLBACK
}

/// Post-create (PASSIVE_LEVEL): a fresh stream-handle context for the new FILE_OBJECT.
unsafe extern "system" fn post_create(data: *mut FLT_CALLBACK_DATA, objects: *const FLT_RELATED_OBJECTS, _completion: *const c_void, flags: u32) -> FLT_POSTOP_CALLBACK_STATUS {
    if flags & FLTFL_POST_OPERATION_DRAINING != 0 {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // SAFETY: Filter Manager's callback data, valid for this callback.
    let data = unsafe { &*data };
    // SAFETY: after the create completed, IoStatus holds its NTSTATUS.
    let status = unsafe { data.IoStatus.Anonymous.Status };
    // SAFETY: the callback's related objects; post-create has an open FILE_OBJECT when the
    // create succeeded.
    let Some(objects) = (status >= 0).then(|| unsafe { FileObjects::from_callback(objects) }).flatten() else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    if let Ok(context) = StreamHandleContext::new(&objects, HandleData { transfers: AtomicU32::new(0) }) {
        // The guard drops at the end of this block: the link keeps the context alive (B5).
        if let Ok(Attached::New(handle) | Attached::Existing(handle)) = context.attach(&objects) {
            let _ = handle.transfers.load(Ordering::Relaxed);
        }
    }
    FLT_POSTOP_FINISHED_PROCESSING
}

/// Pre-read/write: counts the transfer on the handle's context, if it has one.
unsafe extern "system" fn pre_transfer(_data: *mut FLT_CALLBACK_DATA, objects: *const FLT_RELATED_OBJECTS, _completion: *mut *mut c_void) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: the callback's related objects; a read or write has an open FILE_OBJECT.
    if let Some(objects) = unsafe { FileObjects::from_callback(objects) }
        && let Lookup::Found(handle) = StreamHandleContext::<HandleData>::get(&objects)
    {
        handle.transfers.fetch_add(1, Ordering::Relaxed);
    }
    FLT_PREOP_SUCCESS_NO_CALLBACK
}
