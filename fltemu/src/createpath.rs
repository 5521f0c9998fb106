//! What a filter may ask of the create in flight: FltRequestOperationStatusCallback (pre-op
//! only; the routine runs once the file system has a status, before post-create),
//! FltCancelFileOpen (post-create only; the filter must also fail the create: Filter Manager
//! then closes the FILE_OBJECT below the filter) and FltGetRequestorProcess.

use crate::catalog::{Emulated, Source};
use crate::exec::{self, APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::objects::{self, Table};
use crate::state::{self, status};
use crate::verifier::Violation;
use crate::Operation;

/// Callback data → (status routine, requester context).
static STATUS_CALLBACKS: Table<usize, (usize, usize)> = Table::new();
/// FILE_OBJECTs whose open a filter cancelled.
static CANCELLED: Table<usize, ()> = Table::new();

fn is_pre_operation(operation: Operation) -> bool {
    matches!(operation, Operation::PreCreate | Operation::PreCleanup | Operation::PreClose)
}

/// `FltRequestOperationStatusCallback` (fltkernel.h; ≤ APC): only from a pre-operation callback
/// of an IRP operation, once per callback data (else STATUS_INVALID_PARAMETER + InvalidParameter).
extern "win64" fn flt_request_operation_status_callback(data: usize, routine: usize, context: usize) -> i32 {
    objects::count("FltRequestOperationStatusCallback", APC_LEVEL);
    let known = state::current().is_some_and(|inner| inner.callback_data.lock(data as u64).contains_key(&data));
    if !known || routine == 0 || !is_pre_operation(exec::operation()) {
        objects::flag(Violation::InvalidParameter { function: "FltRequestOperationStatusCallback", reason: "only from a pre-operation callback, with its callback data and a routine" });
        return status::INVALID_PARAMETER;
    }
    if STATUS_CALLBACKS.with(|t| t.insert(data, (routine, context))).is_some() {
        objects::flag(Violation::InvalidParameter { function: "FltRequestOperationStatusCallback", reason: "requested twice for one operation" });
    }
    status::SUCCESS
}

/// The file system has a status for the operation of `data`: runs its status routine (PASSIVE
/// here; documented ≤ DISPATCH) with the related objects, a snapshot of the parameter block and
/// the status.
pub fn operation_status(data: usize, objects: usize, iopb: usize, result: i32) {
    let Some((routine, context)) = STATUS_CALLBACKS.with(|t| t.remove(&data)) else { return };
    // SAFETY: FLT_IO_PARAMETER_BLOCK is plain data (the snapshot the DDI passes is a copy). The
    // pointer is read from FLT_CALLBACK_DATA.Iopb, which the driver may overwrite, so it is read
    // unaligned rather than trusted to be fltemu's boxed block.
    let snapshot: Box<windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_IO_PARAMETER_BLOCK> = Box::new(unsafe { (iopb as *const windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_IO_PARAMETER_BLOCK).read_unaligned() });
    // SAFETY: the driver's PFLT_GET_OPERATION_STATUS_CALLBACK (Win64).
    let call = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(usize, usize, i32, usize)>(routine) };
    let snapshot_address = &raw const *snapshot as usize;
    crate::io::as_callback(Operation::Other, PASSIVE_LEVEL, || {
        // SAFETY: (FltObjects, IopbSnapshot, OperationStatus, RequesterContext) as documented.
        unsafe { call(objects, snapshot_address, result, context) };
    });
}

/// `FltCancelFileOpen` (fltkernel.h; PASSIVE): only in post-create for a create the file system
/// completed successfully; the filter must then set a failure status in IoStatus.
extern "win64" fn flt_cancel_file_open(_instance: isize, file_object: usize) {
    objects::count("FltCancelFileOpen", PASSIVE_LEVEL);
    if exec::operation() != Operation::PostCreate {
        objects::flag(Violation::InvalidParameter { function: "FltCancelFileOpen", reason: "only from a post-create callback" });
        return;
    }
    let open = state::current().is_some_and(|inner| inner.files.lock(file_object as u64).live.get(&file_object).is_some_and(|f| f.state == state::FileState::Open));
    if !open {
        objects::flag(Violation::InvalidParameter { function: "FltCancelFileOpen", reason: "not a FILE_OBJECT the file system opened" });
        return;
    }
    CANCELLED.with(|t| t.insert(file_object, ()));
}

/// After post-create: the failure status of a cancelled open (a filter that left a success
/// status is flagged, and the create fails with STATUS_ACCESS_DENIED).
pub fn take_cancelled(file_object: usize, data: &windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_CALLBACK_DATA) -> Option<i32> {
    CANCELLED.with(|t| t.remove(&file_object))?;
    // SAFETY: reading the IoStatus union's Status member the filter set.
    let result = unsafe { data.IoStatus.Anonymous.Status };
    if result >= 0 {
        objects::flag(Violation::InvalidParameter { function: "FltCancelFileOpen", reason: "the create's IoStatus was left a success status" });
        return Some(status::ACCESS_DENIED);
    }
    Some(result)
}

/// `FltGetRequestorProcess` (fltkernel.h; ≤ DISPATCH): the requestor's process object, not
/// referenced.
extern "win64" fn flt_get_requestor_process(data: usize) -> usize {
    objects::count("FltGetRequestorProcess", DISPATCH_LEVEL);
    let pid = state::current().and_then(|inner| inner.callback_data.lock(data as u64).get(&data).map(|c| c.requestor_pid));
    if let Some(pid) = pid {
        crate::ps::process_of(pid)
    } else {
        objects::flag(Violation::InvalidParameter { function: "FltGetRequestorProcess", reason: "not callback data of a running operation" });
        0
    }
}

/// Forgets pending requests (a new emulator loads).
pub fn reset() {
    STATUS_CALLBACKS.clear();
    CANCELLED.clear();
}

/// fltmgr.sys exports of this module.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "FltRequestOperationStatusCallback" => flt_request_operation_status_callback as *const () as usize,
        "FltCancelFileOpen" => flt_cancel_file_open as *const () as usize,
        "FltGetRequestorProcess" => flt_get_requestor_process as *const () as usize,
        _ => return None,
    })
}

const fn flt(function: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "fltmgr.sys", function, notes, source: Source::Ddi("fltkernel") }
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    flt("FltRequestOperationStatusCallback", "≤ APC; pre-operation callbacks only (else InvalidParameter + INVALID_PARAMETER), once per operation; the routine runs with (objects, IOPB snapshot, status, context) when the file system has the create's status, before post-create"),
    flt("FltCancelFileOpen", "post-create only, on a FILE_OBJECT the file system opened; the FILE_OBJECT is closed below the filter and the create fails with the IoStatus the filter set (a success status left there → InvalidParameter, STATUS_ACCESS_DENIED)"),
    flt("FltGetRequestorProcess", "≤ DISPATCH; the requestor's process object (as IoGetCurrentProcess gives it), not referenced"),
];
