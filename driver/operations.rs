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
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_FINISHED_PROCESSING, FLT_PREOP_CALLBACK_STATUS,
    FLT_PREOP_SUCCESS_NO_CALLBACK, FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_RELATED_OBJECTS, FLTFL_POST_OPERATION_DRAINING,
};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_REPARSE};

use crate::accounting;
use crate::callback::{Operation, Related};
use crate::context::registry::{Link, Registered};
use crate::context::{Attached, Lookup, StreamContext, StreamHandleContext};
use crate::instance::InstanceCounters;
use crate::kernel::paged_name::PagedName;
use crate::{events, kernel};

/// The signature of a pre-operation callback.
pub type PreCallback =
    unsafe extern "system" fn(*mut FLT_CALLBACK_DATA, *const FLT_RELATED_OBJECTS, *mut *mut c_void) -> FLT_PREOP_CALLBACK_STATUS;
/// The signature of a post-operation callback.
pub type PostCallback = unsafe extern "system" fn(
    *mut FLT_CALLBACK_DATA,
    *const FLT_RELATED_OBJECTS,
    *const c_void,
    u32,
) -> FLT_POSTOP_CALLBACK_STATUS;

/// What ctxguard keeps per stream (one per instance and stream, B9/A10).
pub struct StreamData {
    /// The normalized name, e.g. `\Device\HarddiskVolume2\dir\a.txt:ads` (UTF-16, paged pool).
    pub name: PagedName,
    /// Handles open on the stream (successful creates whose cleanup has not run).
    pub open_handles: AtomicU32,
    /// The process that opened the stream first.
    pub first_opener_pid: u32,
    /// When it was first opened (100 ns since 1601, UTC).
    pub first_open_time: i64,
    link: Link,
}

/// What ctxguard keeps per open (one per FILE_OBJECT).
pub struct StreamHandleData {
    /// The stream this handle is open on; the reference goes when the FILE_OBJECT does.
    pub stream: StreamContext<StreamData>,
    /// The requestor's process id.
    pub requestor_pid: u32,
    /// `DesiredAccess` of the create.
    pub desired_access: u32,
    /// When the create completed (100 ns since 1601, UTC).
    pub create_time: i64,
    /// `ShareAccess` of the create.
    pub share_access: u16,
    /// Set by IRP_MJ_CLEANUP: the handle is closed, the FILE_OBJECT may live on.
    pub cleaned_up: AtomicBool,
    link: Link,
}

impl Registered for StreamData {
    fn link(&self) -> &Link {
        &self.link
    }
}

impl Registered for StreamHandleData {
    fn link(&self) -> &Link {
        &self.link
    }
}

impl Drop for StreamData {
    fn drop(&mut self) {
        accounting::STREAMS.remove(self);
    }
}

impl StreamHandleData {
    /// The handle stops counting as open: at IRP_MJ_CLEANUP, or when its context goes first
    /// (instance teardown, unload). True for the one caller that made the change.
    fn stop_counting(&self) -> bool {
        if self.cleaned_up.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.stream.open_handles.fetch_sub(1, Ordering::AcqRel);
        accounting::handle_closed();
        true
    }
}

impl Drop for StreamHandleData {
    fn drop(&mut self) {
        accounting::HANDLES.remove(self);
        self.stop_counting();
    }
}

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
    // SAFETY: likewise its related objects.
    let related = unsafe { Related::from_callback(objects) };
    let status = operation.status();
    if !kernel::nt_success(status) || status == STATUS_REPARSE {
        accounting::with_instance(related.instance(), |counters| InstanceCounters::bump(&counters.failed_creates));
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    if !related.has_file_object() || related.is_paging_file() {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    accounting::with_instance(related.instance(), |counters| InstanceCounters::bump(&counters.opens));
    // A failure leaves the open untracked and nothing allocated; the create itself succeeds.
    let _ = track_open(operation, &related);
    FLT_POSTOP_FINISHED_PROCESSING
}

/// Attaches (or finds) the stream context, then attaches a stream-handle context holding it.
/// Every failing path leaves nothing allocated: the guards release what they hold.
fn track_open(operation: Operation<'_>, related: &Related<'_>) -> Result<(), NTSTATUS> {
    let requestor_pid = operation.requestor_pid();
    let stream = match StreamContext::<StreamData>::get(related) {
        Lookup::Found(stream) => stream,
        Lookup::NotFound => {
            let payload = StreamData {
                name: operation.normalized_name()?,
                open_handles: AtomicU32::new(0),
                first_opener_pid: requestor_pid,
                first_open_time: kernel::system_time(),
                link: Link::new(),
            };
            match StreamContext::new(related, payload)?.attach(related)? {
                Attached::New(stream) => {
                    accounting::STREAMS.insert(&stream);
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
        link: Link::new(),
    };
    if let Attached::New(handle) = StreamHandleContext::new(related, payload)?.attach(related)? {
        handle.stream.open_handles.fetch_add(1, Ordering::AcqRel);
        accounting::handle_opened();
        handle.cleaned_up.store(false, Ordering::Release);
        accounting::HANDLES.insert(&handle);
        events::publish_open(requestor_pid, &handle.stream.name);
    }
    Ok(())
}

/// Pre-cleanup (the last user handle to the FILE_OBJECT closed): the handle stops counting.
pub(crate) unsafe extern "system" fn pre_cleanup(
    _data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: Filter Manager's related objects for this callback, used only during it.
    let Some(related) = (unsafe { Related::from_callback_at_most_apc(objects) }) else {
        // Context gets are not allowed above APC_LEVEL (A8).
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    if let Lookup::Found(handle) = StreamHandleContext::<StreamHandleData>::get(&related)
        && handle.stop_counting()
    {
        accounting::with_instance(related.instance(), |counters| InstanceCounters::bump(&counters.cleanups));
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
    // SAFETY: Filter Manager's related objects for this callback, used only during it.
    if let Some(related) = unsafe { Related::from_callback_at_most_apc(objects) } {
        // The instance registry's push lock is for <= APC_LEVEL, hence the check.
        accounting::with_instance(related.instance(), |counters| InstanceCounters::bump(&counters.closes));
    }
    FLT_PREOP_SUCCESS_NO_CALLBACK
}
