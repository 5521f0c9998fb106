//! I/O callbacks: create, cleanup and close, and the stream and stream-handle payloads.
//!
//! Filter Manager calls per operation (the README's budget table; ctx sample C3):
//! - first open of a stream: Get stream (NOT_FOUND) · name query · Allocate + Set stream ·
//!   Allocate + Set stream-handle · Release the stream-handle allocation reference. The stream
//!   reference moves into the stream-handle payload, which releases it when the FILE_OBJECT
//!   goes: Get 1, Allocate 2, Set 2, Release 1.
//! - later open: Get stream (found) · Allocate + Set stream-handle · Release: 1/1/1/1.
//! - cleanup: Get stream-handle · Release; close: nothing (the link is dropped by Filter
//!   Manager with the FILE_OBJECT, B9).

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU32};

use fltctx::{Attached, FileObjects, InstanceObjects, Lookup, StreamContext, StreamHandleContext};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_FINISHED_PROCESSING, FLT_PREOP_CALLBACK_STATUS,
    FLT_PREOP_SUCCESS_NO_CALLBACK, FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_RELATED_OBJECTS, FLTFL_POST_OPERATION_DRAINING,
};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_REPARSE};

use crate::accounting::{self, InstanceCounters};
use crate::callback::{Operation, is_paging_file, is_volume_open};
use crate::payloads::{StreamData, StreamHandleData};
use crate::{events, kernel};

/// Pre-create: contexts cannot be set before the file object is open (A9); ask for post.
pub(crate) unsafe extern "system" fn pre_create(
    _data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _completion: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_WITH_CALLBACK
}

/// Post-create (always PASSIVE_LEVEL, A9): track the stream and the handle.
pub(crate) unsafe extern "system" fn post_create(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion: *const c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // The instance is detaching: allocate nothing (E4).
    if flags & FLTFL_POST_OPERATION_DRAINING != 0 {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // SAFETY: Filter Manager's callback data for this callback, used only during it.
    let operation = unsafe { Operation::from_callback(data) };
    let status = operation.status();
    // SAFETY: likewise its related objects; post-create runs at PASSIVE_LEVEL (A9).
    let Some(instance) = (unsafe { InstanceObjects::from_callback(objects) }) else { return FLT_POSTOP_FINISHED_PROCESSING };
    if !kernel::nt_success(status) || status == STATUS_REPARSE {
        accounting::count(instance.instance(), |counters: &InstanceCounters| &counters.failed_creates);
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // SAFETY: as above; after a successful create the FILE_OBJECT is open (A9).
    let Some(objects) = (unsafe { FileObjects::from_callback(objects) }) else { return FLT_POSTOP_FINISHED_PROCESSING };
    if is_paging_file(&objects) {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    accounting::count(instance.instance(), |counters: &InstanceCounters| &counters.opens);
    // A target-directory open's FILE_OBJECT is the parent directory under the target's name,
    // and a volume open's is the volume: neither is the stream the name query describes.
    if operation.is_target_directory_open() || is_volume_open(&objects) {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // A failure leaves the open untracked and nothing allocated; the create itself succeeds.
    let _ = track_open(operation, &objects);
    FLT_POSTOP_FINISHED_PROCESSING
}

/// Attaches (or finds) the stream context, then attaches a stream-handle context holding it.
/// Every failing path leaves nothing allocated: the guards release what they hold.
fn track_open(operation: Operation<'_>, related: &FileObjects<'_>) -> Result<(), NTSTATUS> {
    let requestor_pid = operation.requestor_pid();
    let stream = match StreamContext::<StreamData>::get(related) {
        Lookup::Found(stream) => stream,
        Lookup::NotFound => {
            let payload = StreamData {
                name: operation.normalized_name()?,
                open_handles: AtomicU32::new(0),
                first_opener_pid: requestor_pid,
                first_open_time: kernel::system_time(),
                link: fltctx::Link::new(),
            };
            match StreamContext::new(related, payload)?.attach(related)? {
                Attached::New(stream) => {
                    stream.list();
                    stream
                }
                Attached::Existing(stream) => stream,
            }
        }
        // File systems without filter-context support (D1, D2): nothing to track.
        Lookup::NotSupported => return Ok(()),
        Lookup::Failed(status) => return Err(status),
    };
    let request = operation.create_request();
    let payload = StreamHandleData {
        stream,
        requestor_pid,
        desired_access: request.desired_access,
        create_time: kernel::system_time(),
        share_access: request.share_access,
        // Counted as open only once attached, so a lost or failed set never decrements.
        cleaned_up: AtomicBool::new(true),
        link: fltctx::Link::new(),
    };
    match StreamHandleContext::new(related, payload)?.attach(related)? {
        Attached::New(handle) => {
            handle.start_counting();
            handle.list();
            events::publish_open(requestor_pid, &handle.stream.name);
        }
        // A handle context already on this FILE_OBJECT: the handle counts through it, so an
        // open it does not count yet is counted now rather than lost.
        Attached::Existing(handle) => {
            if handle.cleaned_up.load(core::sync::atomic::Ordering::Acquire) {
                handle.start_counting();
            }
        }
    }
    Ok(())
}

/// Pre-cleanup (the last user handle to the FILE_OBJECT closed): the handle stops counting.
pub(crate) unsafe extern "system" fn pre_cleanup(
    _data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: Filter Manager's related objects for this callback, used only during it; a
    // cleanup's FILE_OBJECT is open.
    let Some(related) = (unsafe { FileObjects::from_callback(objects) }) else {
        // Context gets are not allowed above APC_LEVEL (A8).
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    if let Lookup::Found(handle) = StreamHandleContext::<StreamHandleData>::get(&related)
        && handle.stop_counting()
    {
        accounting::count(related.instance_objects().instance(), |counters: &InstanceCounters| &counters.cleanups);
        events::publish_close(handle.requestor_pid, &handle.stream.name);
    }
    FLT_PREOP_SUCCESS_NO_CALLBACK
}

/// Pre-close: counts the close; Filter Manager drops the stream-handle context with the
/// FILE_OBJECT (B9), which releases the stream reference it holds.
pub(crate) unsafe extern "system" fn pre_close(
    _data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: Filter Manager's related objects for this callback, read for the instance only.
    if let Some(related) = unsafe { InstanceObjects::from_callback(objects) } {
        accounting::count(related.instance(), |counters: &InstanceCounters| &counters.closes);
    }
    FLT_PREOP_SUCCESS_NO_CALLBACK
}
