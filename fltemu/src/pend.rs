//! Pended operations: FLT_PREOP_PENDING and FltCompletePendedPreOperation,
//! FLT_POSTOP_MORE_PROCESSING_REQUIRED and FltCompletePendedPostOperation,
//! FltDoCompletionProcessingWhenSafe, and the deferred I/O work items that carry a pended
//! operation to a worker thread (FltAllocate/Queue/FreeDeferredIoWorkItem).
//!
//! On Windows a pended operation continues on the thread that completes it; in fltemu the thread
//! that issued the operation waits (in [`wait`]) until the driver completes it from any thread,
//! then carries on as if the callback had returned the completion's status. A completion may
//! arrive before the callback has returned its pending status (the work item ran first): it is
//! kept as an early completion and used when the callback returns. An operation nobody completes
//! is given up after a quarter of `Config::call_timeout`, reported, and ended, so a driver bug
//! never hangs the run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FLT_CALLBACK_DATA, FLT_IO_PARAMETER_BLOCK};

use crate::catalog::{Emulated, Source};
use crate::exec::{self, APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::objects::{self, ObjectKind, Table};
use crate::state::{self, status, Inner};
use crate::verifier::Violation;
use crate::Operation;

/// `FLT_PREOP_SUCCESS_WITH_CALLBACK`, `_NO_CALLBACK`, `_PENDING`, `_COMPLETE` (fltkernel.h).
pub const PREOP_SUCCESS_WITH_CALLBACK: i32 = 0;
pub const PREOP_SUCCESS_NO_CALLBACK: i32 = 1;
pub const PREOP_PENDING: i32 = 2;
pub const PREOP_COMPLETE: i32 = 4;
/// `FLT_POSTOP_FINISHED_PROCESSING`, `FLT_POSTOP_MORE_PROCESSING_REQUIRED` (fltkernel.h).
pub const POSTOP_FINISHED_PROCESSING: i32 = 0;
pub const POSTOP_MORE_PROCESSING_REQUIRED: i32 = 1;
/// `STATUS_FLT_NOT_SAFE_TO_POST_OPERATION` (ntstatus.h).
pub const STATUS_FLT_NOT_SAFE_TO_POST_OPERATION: i32 = 0xC01C_0006_u32.cast_signed();
/// `FLTFL_CALLBACK_DATA_IRP_OPERATION` (fltkernel.h).
const IRP_OPERATION: u32 = 0x1;
/// `FLTFL_POST_OPERATION_DRAINING` (fltkernel.h).
const POST_OPERATION_DRAINING: u32 = 0x1;
/// `IRP_PAGING_IO`, `IRP_SYNCHRONOUS_PAGING_IO` (wdm.h), in `Iopb->IrpFlags`.
const PAGING_IO: u32 = 0x2 | 0x40;

const PRE_NOT_PENDED: &str = "callback data not pended in a pre-operation callback, or already completed";
const POST_NOT_PENDED: &str = "callback data not pended in a post-operation callback, or already completed";

/// Which callback pended the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The pre-operation callback returned FLT_PREOP_PENDING.
    Pre,
    /// The post-operation callback returned FLT_POSTOP_MORE_PROCESSING_REQUIRED.
    Post,
}

impl Phase {
    fn completion_function(self) -> &'static str {
        match self {
            Phase::Pre => "FltCompletePendedPreOperation",
            Phase::Post => "FltCompletePendedPostOperation",
        }
    }

    fn not_pended(self) -> &'static str {
        match self {
            Phase::Pre => PRE_NOT_PENDED,
            Phase::Post => POST_NOT_PENDED,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Completed by the driver on another thread before its callback returned.
    Early { status: i32, context: usize },
    /// The callback returned pending; the issuing thread waits.
    Waiting,
    /// FltDoCompletionProcessingWhenSafe posted the post-operation to a worker.
    Posted,
    /// Completed while the issuing thread waited.
    Completed { status: i32, context: usize },
    /// The completion was used (another one is a second completion).
    Done,
    /// The wait was given up (PendedOperationNotCompleted reported; the frame is retained, so
    /// the address is never reused): a late completion is not reported again.
    Abandoned,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pend {
    phase: Phase,
    state: State,
}

/// Callback data address → its pended state (only operations that pended or were completed).
/// Lock order: PENDED, then a `callback_data` shard; [`end`] forgets an operation's callback
/// data under PENDED, so whoever checks it is known while holding PENDED may also use it.
static PENDED: Mutex<Option<HashMap<usize, Pend>>> = Mutex::new(None);
static CHANGED: Condvar = Condvar::new();
/// Entries in PENDED, so operations that never pend pay one atomic load in [`not_pended`].
static ENTRIES: AtomicUsize = AtomicUsize::new(0);

fn with_pended<R>(f: impl FnOnce(&mut HashMap<usize, Pend>) -> R) -> R {
    let mut guard = PENDED.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(HashMap::new))
}

/// Puts `pend` in the table; the entry it replaced, if any.
fn insert(table: &mut HashMap<usize, Pend>, data: usize, pend: Pend) -> Option<Pend> {
    let replaced = table.insert(data, pend);
    if replaced.is_none() {
        ENTRIES.fetch_add(1, Ordering::AcqRel);
    }
    replaced
}

/// The misuse an entry replaced while still standing was: a completion kept early for the
/// other phase completed data that phase never pended; a pend or post still outstanding means
/// the operation was posted again. None for entries whose business is over.
fn stood(replaced: Option<Pend>) -> Option<Violation> {
    match replaced? {
        Pend { state: State::Done | State::Abandoned, .. } => None,
        Pend { phase, state: State::Early { .. } } => Some(Violation::InvalidParameter { function: phase.completion_function(), reason: phase.not_pended() }),
        Pend { .. } => Some(Violation::InvalidParameter { function: "FltDoCompletionProcessingWhenSafe", reason: "the operation was pended or posted already" }),
    }
}

/// How long the issuing thread waits for a completion: a quarter of the call timeout, so the
/// report comes before the run would end as a hang.
fn patience(inner: &Inner) -> std::time::Duration {
    inner.config.call_timeout / 4
}

/// What the issuing thread finds when it starts waiting for `data` in `phase`.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// The completion is there (early, or arrived while waiting): go on with it.
    Completion(i32, usize),
    /// Not completed yet (an entry of the other phase that still stood is returned, to report).
    Wait(Option<Pend>),
}

/// Looks at `data`'s entry for a wait in `phase`: takes a completion, or marks it Waiting.
fn look(table: &mut HashMap<usize, Pend>, data: usize, phase: Phase) -> Found {
    match table.get(&data).copied() {
        Some(Pend { phase: p, state: State::Early { status, context } | State::Completed { status, context } }) if p == phase => {
            table.insert(data, Pend { phase, state: State::Done });
            Found::Completion(status, context)
        }
        Some(Pend { phase: p, state: State::Waiting | State::Posted }) if p == phase => Found::Wait(None),
        _ => Found::Wait(insert(table, data, Pend { phase, state: State::Waiting })),
    }
}

/// The callback of `operation` returned pending (`phase`): waits until the driver completes the
/// operation and returns the completion's (status, context); None when it never did (reported as
/// PendedOperationNotCompleted; the caller lets the operation go on without the filter and
/// retains its frame, which a late completion may still touch).
pub fn wait(inner: &Inner, data: usize, phase: Phase, operation: Operation) -> Option<(i32, usize)> {
    let deadline = std::time::Instant::now() + patience(inner);
    let mut misuse = None;
    let mut guard = PENDED.lock().unwrap_or_else(PoisonError::into_inner);
    let completion = loop {
        let table = guard.get_or_insert_with(HashMap::new);
        match look(table, data, phase) {
            Found::Completion(status, context) => break Some((status, context)),
            Found::Wait(replaced) => misuse = misuse.or_else(|| stood(replaced)),
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            table.insert(data, Pend { phase, state: State::Abandoned });
            break None;
        }
        guard = CHANGED.wait_timeout(guard, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
    };
    drop(guard);
    if let Some(violation) = misuse {
        inner.violation(violation);
    }
    if completion.is_none() {
        #[allow(clippy::cast_possible_truncation)]
        inner.violation(Violation::PendedOperationNotCompleted { operation, function: phase.completion_function(), waited_ms: patience(inner).as_millis() as u64 });
    }
    completion
}

/// What the issuing thread must do about `data` when its callback returned without pending.
#[derive(Debug, PartialEq, Eq)]
enum Settle {
    /// Nothing pended or completed it in this phase.
    Nothing,
    /// A completion arrived for it meanwhile: it completed an operation that was not pended.
    CompletedNotPended,
    /// FltDoCompletionProcessingWhenSafe posted it (its worker may still be running, or has
    /// returned FLT_POSTOP_MORE_PROCESSING_REQUIRED and left it to FltCompletePendedPostOperation,
    /// or it was completed): the callback data must outlive the post, so the operation waits.
    Posted,
}

fn settle(table: &mut HashMap<usize, Pend>, data: usize, phase: Phase) -> Settle {
    let Some(entry) = table.get_mut(&data).filter(|p| p.phase == phase) else { return Settle::Nothing };
    match entry.state {
        State::Early { .. } => {
            entry.state = State::Done;
            Settle::CompletedNotPended
        }
        State::Posted | State::Waiting | State::Completed { .. } => Settle::Posted,
        State::Done | State::Abandoned => Settle::Nothing,
    }
}

/// The callback of `operation` returned without pending (FLT_PREOP_* other than PENDING, or
/// FLT_POSTOP_FINISHED_PROCESSING): a completion that arrived for it meanwhile completed an
/// operation that was not pended; an operation FltDoCompletionProcessingWhenSafe posted is
/// reported and still waited for. False when that wait was given up (the caller retains the
/// frame).
pub fn not_pended(inner: &Inner, data: usize, phase: Phase, operation: Operation) -> bool {
    unpended(inner, data, phase, operation, true)
}

/// The post-operation callback of `operation` returned a status that is neither
/// FINISHED_PROCESSING nor MORE_PROCESSING_REQUIRED (the caller reports it): as
/// [`not_pended`], without a second report for a post.
pub fn invalid_post_status(inner: &Inner, data: usize, operation: Operation) -> bool {
    unpended(inner, data, Phase::Post, operation, false)
}

fn unpended(inner: &Inner, data: usize, phase: Phase, operation: Operation, report_posted: bool) -> bool {
    if ENTRIES.load(Ordering::Acquire) == 0 {
        return true;
    }
    match with_pended(|table| settle(table, data, phase)) {
        Settle::Nothing => true,
        Settle::CompletedNotPended => {
            inner.violation(Violation::InvalidParameter { function: phase.completion_function(), reason: phase.not_pended() });
            true
        }
        Settle::Posted => {
            if report_posted {
                inner.violation(Violation::InvalidParameter {
                    function: "FltDoCompletionProcessingWhenSafe",
                    reason: "the post-operation callback returned FLT_POSTOP_FINISHED_PROCESSING for an operation it posted",
                });
            }
            wait(inner, data, phase, operation).is_some()
        }
    }
}

/// The operation of `data` is over: forgets its callback data and its entry, both under PENDED,
/// so a completion racing with the end either finds the operation live or is rejected (a
/// completion that came after its callbacks was of an operation not pended). An abandoned
/// operation's entry stays (its frame is retained, the address never reused), so a late
/// completion is not reported again.
pub fn end(inner: &Inner, data: usize) {
    let removed = with_pended(|table| {
        inner.callback_data.lock(data as u64).remove(&data);
        if table.get(&data).is_none_or(|p| p.state == State::Abandoned) {
            return None;
        }
        ENTRIES.fetch_sub(1, Ordering::AcqRel);
        table.remove(&data)
    });
    if let Some(Pend { phase, state: State::Early { .. } }) = removed {
        inner.violation(Violation::InvalidParameter { function: phase.completion_function(), reason: phase.not_pended() });
    }
}

/// Whether a completion of `data` in `phase` is accepted, and what it changes: wakes the
/// waiting thread, or is kept for the callback still running (only for callback data of a live
/// operation: `known` is asked under PENDED, see [`end`]); a late completion of an abandoned
/// operation is accepted silently.
fn accept(table: &mut HashMap<usize, Pend>, data: usize, phase: Phase, status: i32, context: usize, known: impl Fn() -> bool) -> bool {
    match table.get(&data).copied() {
        Some(Pend { phase: p, state: State::Waiting | State::Posted }) if p == phase => {
            table.insert(data, Pend { phase, state: State::Completed { status, context } });
            CHANGED.notify_all();
            true
        }
        // Given up on and reported already.
        Some(Pend { phase: p, state: State::Abandoned }) if p == phase => true,
        // Completed already in this phase.
        Some(Pend { phase: p, .. }) if p == phase => false,
        // Nothing pended yet in this phase (the other one, if any, is over): the callback may
        // still be running on another thread and about to return pending.
        Some(Pend { state: State::Done, .. }) | None if known() => {
            insert(table, data, Pend { phase, state: State::Early { status, context } });
            true
        }
        _ => false,
    }
}

/// A driver's completion of `data` (`phase`) with (status, context); misuse when the data is
/// not pended or was completed already.
fn complete(inner: &Inner, data: usize, phase: Phase, status: i32, context: usize) {
    let accepted = with_pended(|table| accept(table, data, phase, status, context, || inner.callback_data.lock(data as u64).contains_key(&data)));
    if !accepted {
        inner.violation(Violation::InvalidParameter { function: phase.completion_function(), reason: phase.not_pended() });
    }
}

/// `FltCompletePendedPreOperation` (fltkernel.h; ≤ DISPATCH_LEVEL with FLT_PREOP_COMPLETE, else
/// ≤ APC_LEVEL): CallbackStatus must be SUCCESS_WITH_CALLBACK, SUCCESS_NO_CALLBACK or COMPLETE
/// (not PENDING, SYNCHRONIZE, DISALLOW_FASTIO); Context must be NULL unless WITH_CALLBACK.
extern "win64" fn flt_complete_pended_pre_operation(data: usize, callback_status: i32, context: usize) {
    const FUNCTION: &str = "FltCompletePendedPreOperation";
    let max_irql = if callback_status == PREOP_COMPLETE { DISPATCH_LEVEL } else { APC_LEVEL };
    let Some(inner) = objects::call(FUNCTION, max_irql) else { return };
    let mut callback_status = callback_status;
    let mut context = context;
    if ![PREOP_SUCCESS_WITH_CALLBACK, PREOP_SUCCESS_NO_CALLBACK, PREOP_COMPLETE].contains(&callback_status) {
        inner.violation(Violation::InvalidParameter { function: FUNCTION, reason: "CallbackStatus must be FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_PREOP_SUCCESS_NO_CALLBACK or FLT_PREOP_COMPLETE" });
        // The operation goes on as if the filter had let it pass, so the run continues.
        callback_status = PREOP_SUCCESS_NO_CALLBACK;
        context = 0;
    } else if callback_status != PREOP_SUCCESS_WITH_CALLBACK && context != 0 {
        inner.violation(Violation::InvalidParameter { function: FUNCTION, reason: "Context must be NULL unless CallbackStatus is FLT_PREOP_SUCCESS_WITH_CALLBACK" });
        context = 0;
    }
    complete(inner, data, Phase::Pre, callback_status, context);
}

/// `FltCompletePendedPostOperation` (fltkernel.h; ≤ DISPATCH_LEVEL).
extern "win64" fn flt_complete_pended_post_operation(data: usize) {
    let Some(inner) = objects::call("FltCompletePendedPostOperation", DISPATCH_LEVEL) else { return };
    complete(inner, data, Phase::Post, POSTOP_FINISHED_PROCESSING, 0);
}

/// Where the callback data at `data` keeps its Iopb pointer.
fn iopb_of(data: usize) -> *const *mut FLT_IO_PARAMETER_BLOCK {
    (data + core::mem::offset_of!(FLT_CALLBACK_DATA, Iopb)) as *const _
}

/// The member at `offset` of the parameter block `iopb`, as a `T` (read it unaligned: the driver
/// can rewrite the Iopb pointer, so its alignment is not guaranteed).
fn iopb_field<T>(iopb: *const FLT_IO_PARAMETER_BLOCK, offset: usize) -> *const T {
    iopb.cast::<u8>().wrapping_add(offset).cast()
}

/// Whether Filter Manager could post the operation of `data` to a worker: an IRP operation
/// that is not paging I/O (fltemu threads never have a top-level IRP).
fn safe_to_post(data: usize) -> bool {
    // SAFETY: `data` is callback data of a running operation (the caller checked it is known
    // while holding PENDED, and the operation cannot end before PENDED is released, see `end`).
    let callback_data = unsafe { (data as *const FLT_CALLBACK_DATA).read_unaligned() };
    if callback_data.Flags & IRP_OPERATION == 0 || callback_data.Iopb.is_null() {
        return false;
    }
    // SAFETY: Iopb points to the operation's parameter block, alive with the callback data;
    // read unaligned because the driver can rewrite the Iopb pointer.
    let irp_flags = unsafe { iopb_field::<u32>(callback_data.Iopb, core::mem::offset_of!(FLT_IO_PARAMETER_BLOCK, IrpFlags)).read_unaligned() };
    irp_flags & PAGING_IO == 0
}

/// Whether `operation` is a post-operation callback (by name, so operations added to
/// [`Operation`] later are covered).
fn is_post_operation(operation: Operation) -> bool {
    matches!(operation, Operation::PostCreate | Operation::PostCleanup | Operation::PostClose) || format!("{operation:?}").starts_with("Post")
}

/// IRP_MJ_READ, IRP_MJ_WRITE, IRP_MJ_FLUSH_BUFFERS: operations a storage driver may complete
/// directly, whose completion must not be posted to a worker (deadlock; both DDI pages' caution).
fn storage_completable(data: usize) -> bool {
    // SAFETY: `data` is callback data of a running operation (known, under PENDED, to the caller).
    let iopb = unsafe { iopb_of(data).read_unaligned() };
    // SAFETY: the operation's parameter block, alive with its callback data (unaligned: the
    // driver can rewrite the Iopb pointer).
    !iopb.is_null() && matches!(unsafe { iopb_field::<u8>(iopb, core::mem::offset_of!(FLT_IO_PARAMETER_BLOCK, MajorFunction)).read_unaligned() }, 0x03 | 0x04 | 0x09)
}

/// What FltDoCompletionProcessingWhenSafe does, decided under PENDED (with the callback data
/// known to be live, see [`end`]).
enum WhenSafe {
    /// Not from a post-operation callback with its live callback data, a SafePostCallback and
    /// RetPostOperationStatus.
    Misuse,
    /// Draining, or read/write/flush.
    Forbidden,
    /// Not an IRP operation, or paging I/O.
    NotSafe,
    /// At ≤ APC_LEVEL: the SafePostCallback runs at once.
    Inline,
    /// Posted to a worker (with the misuse an entry it replaced stood for).
    Posted(Option<Violation>),
}

/// `FltDoCompletionProcessingWhenSafe` (fltkernel.h; any IRQL): at ≤ APC_LEVEL the
/// SafePostCallback runs at once and its status is returned (TRUE); at DISPATCH_LEVEL the
/// operation is posted to a worker that calls it at PASSIVE_LEVEL, RetPostOperationStatus is
/// FLT_POSTOP_MORE_PROCESSING_REQUIRED (TRUE), and Filter Manager completes the operation when
/// the callback returns FLT_POSTOP_FINISHED_PROCESSING; not an IRP operation, or paging I/O →
/// FALSE. Never with FLTFL_POST_OPERATION_DRAINING, nor for read, write or flush (→
/// InvalidParameter, FALSE). Whenever it returns FALSE, RetPostOperationStatus (if not NULL) is
/// FLT_POSTOP_FINISHED_PROCESSING, the status the post-operation callback then returns.
extern "win64" fn flt_do_completion_processing_when_safe(data: usize, related: usize, context: usize, flags: u32, safe: usize, ret: *mut i32) -> u8 {
    const FUNCTION: &str = "FltDoCompletionProcessingWhenSafe";
    let put = |value: i32| {
        if !ret.is_null() {
            // SAFETY: RetPostOperationStatus is the caller's variable (checked non-NULL),
            // written with no fltemu lock held.
            unsafe { ret.write_unaligned(value) };
        }
    };
    let Some(inner) = objects::call(FUNCTION, 15) else {
        put(POSTOP_FINISHED_PROCESSING);
        return 0;
    };
    let operation = exec::operation();
    let inline = exec::irql() <= APC_LEVEL;
    let arc = if inline { None } else { state::current_arc() };
    let plan = with_pended(|table| {
        let known = inner.callback_data.lock(data as u64).contains_key(&data);
        if !known || safe == 0 || ret.is_null() || !is_post_operation(operation) {
            return WhenSafe::Misuse;
        }
        // The checks below read the callback data: live while PENDED is held (checked above).
        if flags & POST_OPERATION_DRAINING != 0 || storage_completable(data) {
            return WhenSafe::Forbidden;
        }
        if !safe_to_post(data) || (!inline && arc.is_none()) {
            return WhenSafe::NotSafe;
        }
        if inline {
            return WhenSafe::Inline;
        }
        WhenSafe::Posted(stood(insert(table, data, Pend { phase: Phase::Post, state: State::Posted })))
    });
    let misuse = match plan {
        WhenSafe::Misuse => Some("only from a post-operation callback, with its callback data, a SafePostCallback and RetPostOperationStatus"),
        WhenSafe::Forbidden => Some("never with FLTFL_POST_OPERATION_DRAINING, nor for IRP_MJ_READ, IRP_MJ_WRITE or IRP_MJ_FLUSH_BUFFERS"),
        _ => None,
    };
    if let Some(reason) = misuse {
        inner.violation(Violation::InvalidParameter { function: FUNCTION, reason });
    }
    // SAFETY: `safe` is the driver's PFLT_POST_OPERATION_CALLBACK (Win64); only called below,
    // after the checks (non-zero).
    let callback = || unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(usize, usize, usize, u32) -> i32>(safe) };
    match plan {
        WhenSafe::Misuse | WhenSafe::Forbidden | WhenSafe::NotSafe => {
            put(POSTOP_FINISHED_PROCESSING);
            0
        }
        WhenSafe::Inline => {
            let callback = callback();
            // SAFETY: (Data, FltObjects, CompletionContext, Flags) as the post-operation callback DDI documents.
            let result = exec::driver_call(|| unsafe { callback(data, related, context, flags) });
            put(result);
            1
        }
        WhenSafe::Posted(replaced) => {
            if let Some(violation) = replaced {
                inner.violation(violation);
            }
            let callback = callback();
            if let Some(arc) = arc {
                arc.spawn(move || {
                    exec::enter(PASSIVE_LEVEL, 4, operation);
                    // A test may hold the worker here, before the SafePostCallback runs.
                    crate::hold::reach("SafePostCallback");
                    // SAFETY: as above; the issuing thread keeps the callback data and objects
                    // alive until the post is over (it waits for it whatever its callback returns,
                    // and retains the frame if the wait is given up).
                    let result = crate::io::as_callback(operation, PASSIVE_LEVEL, || unsafe { callback(data, related, context, flags) });
                    let Some(inner) = state::current() else { return };
                    posted_callback_returned(inner, data, result);
                });
            }
            put(POSTOP_MORE_PROCESSING_REQUIRED);
            1
        }
    }
}

/// The SafePostCallback a worker ran returned `result`: FINISHED_PROCESSING completes the
/// operation (Filter Manager does), MORE_PROCESSING_REQUIRED leaves it to
/// FltCompletePendedPostOperation. Returns whether the operation had been completed with
/// FltCompletePendedPostOperation already (then FINISHED_PROCESSING completes it twice).
fn post_returned(table: &mut HashMap<usize, Pend>, data: usize, result: i32) -> bool {
    let Some(entry) = table.get_mut(&data).filter(|p| p.phase == Phase::Post) else { return false };
    match (entry.state, result) {
        (State::Posted, POSTOP_FINISHED_PROCESSING) => {
            entry.state = State::Completed { status: 0, context: 0 };
            CHANGED.notify_all();
            false
        }
        (State::Posted, _) => {
            entry.state = State::Waiting;
            false
        }
        // Given up on and reported already: a slow callback is not a second completion.
        (State::Abandoned, _) => false,
        (_, POSTOP_FINISHED_PROCESSING) => true,
        _ => false,
    }
}

fn posted_callback_returned(inner: &Inner, data: usize, result: i32) {
    if with_pended(|table| post_returned(table, data, result)) {
        inner.violation(Violation::InvalidParameter { function: "FltCompletePendedPostOperation", reason: "called for an operation whose SafePostCallback then returned FLT_POSTOP_FINISHED_PROCESSING" });
    }
}

/// A deferred I/O work item's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    Idle,
    Queued,
}

/// Live deferred I/O work items (their 64-byte bodies are never returned to the allocator, so an
/// address is never reused within a run).
static ITEMS: Table<usize, Item> = Table::new();

/// `FltAllocateDeferredIoWorkItem` (fltkernel.h; ≤ DISPATCH_LEVEL): never freed by unload →
/// ObjectLeaked(DeferredIoWorkItem).
extern "win64" fn flt_allocate_deferred_io_work_item() -> usize {
    let Some(inner) = objects::call("FltAllocateDeferredIoWorkItem", DISPATCH_LEVEL) else { return 0 };
    if inner.injected("FltAllocateDeferredIoWorkItem").is_some() {
        return 0;
    }
    let address = Box::leak(Box::new([0u64; 8])).as_ptr() as usize;
    ITEMS.with(|t| t.insert(address, Item::Idle));
    address
}

/// `FltFreeDeferredIoWorkItem` (fltkernel.h; ≤ DISPATCH_LEVEL): unknown or already freed →
/// ObjectMisuse; freeing one still queued (its routine has not started) → ObjectMisuse.
extern "win64" fn flt_free_deferred_io_work_item(item: usize) {
    const FUNCTION: &str = "FltFreeDeferredIoWorkItem";
    objects::count(FUNCTION, DISPATCH_LEVEL);
    match ITEMS.with(|t| t.remove(&item)) {
        None => objects::misuse(FUNCTION, ObjectKind::DeferredIoWorkItem, "not a live deferred I/O work item (never allocated, or freed already)"),
        Some(Item::Queued) => objects::misuse(FUNCTION, ObjectKind::DeferredIoWorkItem, "freed while queued, before its routine ran"),
        Some(Item::Idle) => {}
    }
}

/// `FltQueueDeferredIoWorkItem` (fltkernel.h; ≤ DISPATCH_LEVEL): the routine runs on an emulator
/// worker at PASSIVE_LEVEL with (work item, callback data, context); FltUnregisterFilter waits
/// for it. STATUS_FLT_NOT_SAFE_TO_POST_OPERATION for an operation that is not IRP-based or is
/// paging I/O; STATUS_FLT_DELETING_OBJECT when the target instance is being torn down.
extern "win64" fn flt_queue_deferred_io_work_item(item: usize, data: usize, routine: usize, queue_type: i32, context: usize) -> i32 {
    const FUNCTION: &str = "FltQueueDeferredIoWorkItem";
    let Some(inner) = objects::call(FUNCTION, DISPATCH_LEVEL) else { return status::FLT_NOT_INITIALIZED };
    // A test may hold the caller here, inside its operation, while the instance starts tearing down.
    crate::hold::reach(FUNCTION);
    match ITEMS.with(|t| t.get(&item).copied()) {
        None => {
            objects::misuse(FUNCTION, ObjectKind::DeferredIoWorkItem, "not a live deferred I/O work item");
            return status::INVALID_PARAMETER;
        }
        Some(Item::Queued) => {
            objects::misuse(FUNCTION, ObjectKind::DeferredIoWorkItem, "queued again before its routine ran");
            return status::INVALID_PARAMETER;
        }
        Some(Item::Idle) => {}
    }
    let post_operation = is_post_operation(exec::operation());
    // Decided under PENDED, so the callback data read here stays live (see [`end`]).
    let refused = with_pended(|_| {
        let known = inner.callback_data.lock(data as u64).contains_key(&data);
        // CriticalWorkQueue 0, DelayedWorkQueue 1; HyperCriticalWorkQueue (2) is reserved for the system.
        if !known || routine == 0 || !(0..=1).contains(&queue_type) {
            return Some((Some("needs callback data of a running operation, a routine, and CriticalWorkQueue or DelayedWorkQueue"), status::INVALID_PARAMETER));
        }
        if post_operation && storage_completable(data) {
            return Some((Some("a post-operation callback must not post IRP_MJ_READ, IRP_MJ_WRITE or IRP_MJ_FLUSH_BUFFERS"), status::INVALID_PARAMETER));
        }
        if !safe_to_post(data) {
            return Some((None, STATUS_FLT_NOT_SAFE_TO_POST_OPERATION));
        }
        // SAFETY: `data` is callback data of a running operation (known, under PENDED, above).
        let iopb = unsafe { iopb_of(data).read_unaligned() };
        if iopb.is_null() {
            return Some((None, status::INVALID_PARAMETER));
        }
        // SAFETY: the operation's parameter block, alive with its callback data (unaligned: the
        // driver can rewrite the Iopb pointer).
        let instance = unsafe { iopb_field::<isize>(iopb, core::mem::offset_of!(FLT_IO_PARAMETER_BLOCK, TargetInstance)).read_unaligned() };
        inner.instance(instance).is_none_or(|record| record.tearing_down.load(Ordering::SeqCst)).then_some((None, status::FLT_DELETING_OBJECT))
    });
    if let Some((misuse, status)) = refused {
        if let Some(reason) = misuse {
            inner.violation(Violation::InvalidParameter { function: FUNCTION, reason });
        }
        return status;
    }
    if let Some(failure) = inner.injected(FUNCTION) {
        return failure;
    }
    let Some(arc) = state::current_arc() else { return status::FLT_NOT_INITIALIZED };
    ITEMS.with(|t| t.insert(item, Item::Queued));
    arc.spawn(move || {
        exec::enter(PASSIVE_LEVEL, 4, Operation::WorkItem);
        ITEMS.with(|t| {
            if let Some(state) = t.get_mut(&item) {
                *state = Item::Idle;
            }
        });
        // SAFETY: `routine` is the driver's PFLT_DEFERRED_IO_WORKITEM_ROUTINE (Win64).
        let routine = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(usize, usize, usize)>(routine) };
        // SAFETY: called as FltQueueDeferredIoWorkItem documents: (work item, callback data, context).
        exec::driver_call(|| unsafe { routine(item, data, context) });
    });
    status::SUCCESS
}

/// What is outstanding at unload (deferred I/O work items never freed).
pub fn outstanding() -> Vec<(ObjectKind, usize)> {
    vec![(ObjectKind::DeferredIoWorkItem, ITEMS.with(|t| t.len()))]
}

/// Forgets every pended operation and work item (a new emulator loads).
pub fn reset() {
    ITEMS.clear();
    with_pended(HashMap::clear);
    ENTRIES.store(0, Ordering::Release);
}

/// fltmgr.sys exports of this module.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "FltCompletePendedPreOperation" => flt_complete_pended_pre_operation as *const () as usize,
        "FltCompletePendedPostOperation" => flt_complete_pended_post_operation as *const () as usize,
        "FltDoCompletionProcessingWhenSafe" => flt_do_completion_processing_when_safe as *const () as usize,
        "FltAllocateDeferredIoWorkItem" => flt_allocate_deferred_io_work_item as *const () as usize,
        "FltQueueDeferredIoWorkItem" => flt_queue_deferred_io_work_item as *const () as usize,
        "FltFreeDeferredIoWorkItem" => flt_free_deferred_io_work_item as *const () as usize,
        _ => return None,
    })
}

const fn flt(function: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "fltmgr.sys", function, notes, source: Source::Ddi("fltkernel") }
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    flt("FltCompletePendedPreOperation", "≤ DISPATCH with FLT_PREOP_COMPLETE, else ≤ APC; the operation a pre-operation callback pended (FLT_PREOP_PENDING, CompletionContext NULL) goes on as if the callback had returned CallbackStatus (the issuing thread waits; a completion before the callback returns is kept); CallbackStatus other than SUCCESS_WITH_CALLBACK / SUCCESS_NO_CALLBACK / COMPLETE → InvalidParameter (goes on as NO_CALLBACK); Context not NULL without WITH_CALLBACK → InvalidParameter; data not pended (also: completed early for one phase while the other pends), data of an operation that ended, or completed twice → InvalidParameter; never completed (a quarter of the call timeout) → PendedOperationNotCompleted, and the operation goes on without the filter (its callback data and read/write buffer stay valid for good; a late completion is not reported again)"),
    flt("FltCompletePendedPostOperation", "≤ DISPATCH; completion processing of an operation whose post-operation callback returned FLT_POSTOP_MORE_PROCESSING_REQUIRED resumes; data not pended, data of an operation that ended, or completed twice → InvalidParameter; never completed → PendedOperationNotCompleted (a late completion is not reported again)"),
    flt("FltDoCompletionProcessingWhenSafe", "any IRQL; post-operation callbacks only (else InvalidParameter, FALSE); never with FLTFL_POST_OPERATION_DRAINING nor for read/write/flush (InvalidParameter, FALSE); ≤ APC: SafePostCallback runs at once, TRUE with its status; DISPATCH: posted to a worker at PASSIVE, TRUE with MORE_PROCESSING_REQUIRED, the operation completes when the callback returns FINISHED_PROCESSING (a post-operation callback that posted and then returns FINISHED_PROCESSING → InvalidParameter; with that or an invalid status the operation still waits for the post); not an IRP operation or paging I/O → FALSE; every FALSE sets RetPostOperationStatus (if not NULL) to FINISHED_PROCESSING"),
    flt("FltAllocateDeferredIoWorkItem", "≤ DISPATCH; never freed by unload → ObjectLeaked(DeferredIoWorkItem)"),
    flt("FltQueueDeferredIoWorkItem", "≤ DISPATCH; routine(work item, data, context) on an emulator worker at PASSIVE, FltUnregisterFilter waits for it; not IRP-based or paging I/O → STATUS_FLT_NOT_SAFE_TO_POST_OPERATION (fltemu threads have no top-level IRP); target instance tearing down → STATUS_FLT_DELETING_OBJECT; unknown or still-queued item → ObjectMisuse; not running callback data, no routine, HyperCriticalWorkQueue, read/write/flush from a post-operation callback → InvalidParameter"),
    flt("FltFreeDeferredIoWorkItem", "≤ DISPATCH; unknown, freed twice, or still queued → ObjectMisuse"),
];

#[cfg(test)]
mod state_tests {
    //! The pended-operation state machine on a table of its own (addresses no emulator uses).
    use super::{accept, look, post_returned, settle, stood, Found, Pend, Phase, Settle, State, POSTOP_FINISHED_PROCESSING, POSTOP_MORE_PROCESSING_REQUIRED};
    use crate::verifier::Violation;
    use std::collections::HashMap;

    const DATA: usize = 0xdead_0000;

    fn table(phase: Phase, state: State) -> HashMap<usize, Pend> {
        HashMap::from([(DATA, Pend { phase, state })])
    }

    #[test]
    fn a_post_whose_safe_callback_pended_it_is_waited_for_when_the_post_callback_finishes() {
        // The worker's SafePostCallback returned MORE_PROCESSING_REQUIRED before the outer
        // post-operation callback returned FINISHED_PROCESSING.
        let mut t = table(Phase::Post, State::Posted);
        assert!(!post_returned(&mut t, DATA, POSTOP_MORE_PROCESSING_REQUIRED));
        assert_eq!(t[&DATA].state, State::Waiting);
        assert_eq!(settle(&mut t, DATA, Phase::Post), Settle::Posted);
        for state in [State::Posted, State::Completed { status: 0, context: 0 }] {
            assert_eq!(settle(&mut table(Phase::Post, state), DATA, Phase::Post), Settle::Posted, "{state:?}");
        }
    }

    #[test]
    fn an_early_completion_of_an_operation_that_did_not_pend_is_reported_once() {
        let mut t = table(Phase::Pre, State::Early { status: 1, context: 0 });
        assert_eq!(settle(&mut t, DATA, Phase::Pre), Settle::CompletedNotPended);
        assert_eq!(settle(&mut t, DATA, Phase::Pre), Settle::Nothing);
        assert_eq!(settle(&mut HashMap::new(), DATA, Phase::Pre), Settle::Nothing);
    }

    #[test]
    fn an_early_completion_is_taken_by_the_wait() {
        let mut t = HashMap::new();
        assert!(accept(&mut t, DATA, Phase::Pre, 1, 0, || true));
        assert_eq!(look(&mut t, DATA, Phase::Pre), Found::Completion(1, 0));
        assert_eq!(t[&DATA].state, State::Done);
        // A second completion of the phase is refused.
        assert!(!accept(&mut t, DATA, Phase::Pre, 1, 0, || true));
    }

    #[test]
    fn a_completion_of_callback_data_no_longer_live_is_refused_and_kept_nowhere() {
        let mut t = HashMap::new();
        assert!(!accept(&mut t, DATA, Phase::Post, 0, 0, || false));
        assert!(t.is_empty());
    }

    #[test]
    fn a_completion_kept_for_the_other_phase_is_reported_when_its_entry_is_replaced() {
        // FltCompletePendedPostOperation came while the pre-operation callback was to pend.
        let mut t = HashMap::new();
        assert!(accept(&mut t, DATA, Phase::Post, 0, 0, || true));
        let Found::Wait(replaced) = look(&mut t, DATA, Phase::Pre) else { panic!("no completion for the pre phase") };
        assert_eq!(
            stood(replaced),
            Some(Violation::InvalidParameter { function: "FltCompletePendedPostOperation", reason: super::POST_NOT_PENDED })
        );
        assert_eq!(t[&DATA], Pend { phase: Phase::Pre, state: State::Waiting });
        // Replacing an entry whose business is over is no misuse.
        assert_eq!(stood(Some(Pend { phase: Phase::Pre, state: State::Done })), None);
        assert_eq!(stood(None), None);
    }

    #[test]
    fn late_completions_of_an_abandoned_operation_are_not_reported_again() {
        let mut t = table(Phase::Pre, State::Abandoned);
        assert!(accept(&mut t, DATA, Phase::Pre, 0, 0, || false));
        assert!(accept(&mut t, DATA, Phase::Pre, 0, 0, || false));
        let mut t = table(Phase::Post, State::Abandoned);
        assert!(!post_returned(&mut t, DATA, POSTOP_FINISHED_PROCESSING));
        assert!(accept(&mut t, DATA, Phase::Post, 0, 0, || false));
        assert_eq!(t[&DATA].state, State::Abandoned);
        // The other phase was never pended.
        assert!(!accept(&mut table(Phase::Pre, State::Abandoned), DATA, Phase::Post, 0, 0, || true));
    }
}
