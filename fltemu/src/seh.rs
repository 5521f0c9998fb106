//! x64 structured exception handling for the driver image: exception dispatch, the unwind to a
//! handler, `__C_specific_handler`, and the raising exports (ExRaiseStatus, ProbeForRead,
//! ProbeForWrite).
//!
//! Sources: learn.microsoft.com "x64 exception handling" (language-specific handler,
//! DISPATCHER_CONTEXT, RtlUnwindEx's role, scope tables as `__C_specific_handler` reads them),
//! the ExRaiseStatus / ProbeForRead / ProbeForWrite DDI pages, "Bug Check 0x1E
//! KMODE_EXCEPTION_NOT_HANDLED" (parameters: code, address, information 0 and 1); ReactOS
//! ntoskrnl/rtl and sdk/lib/rtl/amd64 read as a second opinion; no code copied.
//!
//! Model: a fault in driver code (SIGSEGV/SIGBUS with RIP in the image) is turned, inside the
//! signal handler, into a call of [`dispatch`] on the faulting thread's own stack (as the
//! kernel's trap handler hands a trap frame to the dispatcher); a raising export captures the
//! caller's registers in an assembly thunk, so its exception starts at the driver's call site.
//! Dispatch walks the driver's frames with the virtual unwinder, calling each frame's exception
//! handler; `EXCEPTION_EXECUTE_HANDLER` unwinds (running termination handlers) and restores the
//! target frame's context at the `__except` block with RAX = the exception code. A walk that
//! reaches a frame outside the image (fltemu code that called the driver) has found no handler:
//! bug check 0x1E.

use core::cell::Cell;

use crate::exec::{self, APC_LEVEL};
use crate::unwind::{self, Context, Image, RAX, RSP, UNW_FLAG_EHANDLER, UNW_FLAG_UHANDLER};

/// Index of RSI in [`Context::gpr`].
const RSI: usize = 6;
/// Index of RDI in [`Context::gpr`].
const RDI: usize = 7;

/// `STATUS_ACCESS_VIOLATION`.
pub const STATUS_ACCESS_VIOLATION: i32 = 0xC000_0005_u32.cast_signed();
/// `STATUS_DATATYPE_MISALIGNMENT`.
pub const STATUS_DATATYPE_MISALIGNMENT: i32 = 0x8000_0002_u32.cast_signed();
/// `STATUS_NONCONTINUABLE_EXCEPTION`.
pub const STATUS_NONCONTINUABLE_EXCEPTION: i32 = 0xC000_0025_u32.cast_signed();
/// `STATUS_INVALID_DISPOSITION`.
pub const STATUS_INVALID_DISPOSITION: i32 = 0xC000_0026_u32.cast_signed();
/// `KMODE_EXCEPTION_NOT_HANDLED`.
pub const KMODE_EXCEPTION_NOT_HANDLED: u32 = 0x1E;
/// `STATUS_INTEGER_DIVIDE_BY_ZERO`.
pub const STATUS_INTEGER_DIVIDE_BY_ZERO: i32 = 0xC000_0094_u32.cast_signed();
/// `STATUS_INTEGER_OVERFLOW`.
pub const STATUS_INTEGER_OVERFLOW: i32 = 0xC000_0095_u32.cast_signed();
/// `STATUS_ILLEGAL_INSTRUCTION`.
pub const STATUS_ILLEGAL_INSTRUCTION: i32 = 0xC000_001D_u32.cast_signed();
/// `STATUS_BREAKPOINT`.
pub const STATUS_BREAKPOINT: i32 = 0x8000_0003_u32.cast_signed();
/// `STATUS_ASSERTION_FAILURE`, what `int 0x2c` (NT_ASSERT) raises.
pub const STATUS_ASSERTION_FAILURE: i32 = 0xC000_0420_u32.cast_signed();
/// `STATUS_STACK_BUFFER_OVERRUN`, the code of a fast fail's exception record.
pub const STATUS_STACK_BUFFER_OVERRUN: i32 = 0xC000_0409_u32.cast_signed();
/// `STATUS_UNWIND`, the code of RtlUnwindEx's own record when the caller passes none.
pub const STATUS_UNWIND: i32 = 0xC000_0027_u32.cast_signed();
/// `STATUS_BAD_STACK`, what RtlUnwindEx raises for a frame outside the stack limits or past
/// its target.
pub const STATUS_BAD_STACK: i32 = 0xC000_0028_u32.cast_signed();
/// `STATUS_UNWIND_CONSOLIDATE`.
const STATUS_UNWIND_CONSOLIDATE: i32 = 0x8000_0029_u32.cast_signed();
/// `SYSTEM_THREAD_EXCEPTION_NOT_HANDLED`.
pub const SYSTEM_THREAD_EXCEPTION_NOT_HANDLED: u32 = 0x7E;
/// `UNEXPECTED_KERNEL_MODE_TRAP`.
pub const UNEXPECTED_KERNEL_MODE_TRAP: u32 = 0x7F;
/// `KERNEL_SECURITY_CHECK_FAILURE`.
pub const KERNEL_SECURITY_CHECK_FAILURE: u32 = 0x139;
/// UNEXPECTED_KERNEL_MODE_TRAP's parameter 1 for a double fault (what a kernel stack overflow
/// becomes).
const EXCEPTION_DOUBLE_FAULT: usize = 8;

const EXCEPTION_NONCONTINUABLE: u32 = 0x1;
const EXCEPTION_UNWINDING: u32 = 0x2;
const EXCEPTION_EXIT_UNWIND: u32 = 0x4;
const EXCEPTION_STACK_INVALID: u32 = 0x8;
const EXCEPTION_NESTED_CALL: u32 = 0x10;
const EXCEPTION_TARGET_UNWIND: u32 = 0x20;
const EXCEPTION_COLLIDED_UNWIND: u32 = 0x40;

/// `EXCEPTION_DISPOSITION` values.
const EXCEPTION_CONTINUE_EXECUTION_DISPOSITION: i32 = 0;
const EXCEPTION_CONTINUE_SEARCH_DISPOSITION: i32 = 1;

/// Frames a walk visits at most (a corrupt stack must not loop forever).
const MAX_FRAMES: usize = 512;

/// `EXCEPTION_RECORD` (winnt.h, x64 layout).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExceptionRecord {
    /// ExceptionCode.
    pub code: i32,
    /// ExceptionFlags.
    pub flags: u32,
    /// ExceptionRecord (a nested record; unused).
    pub nested: u64,
    /// ExceptionAddress.
    pub address: u64,
    /// NumberParameters.
    pub parameter_count: u32,
    reserved: u32,
    /// ExceptionInformation.
    pub information: [u64; 15],
}

impl ExceptionRecord {
    /// A record for `code` raised at `address` with `parameters`.
    #[must_use]
    pub fn new(code: i32, flags: u32, address: u64, parameters: &[u64]) -> Self {
        let mut information = [0; 15];
        let count = parameters.len().min(15);
        information[..count].copy_from_slice(&parameters[..count]);
        #[allow(clippy::cast_possible_truncation)]
        Self { code, flags, nested: 0, address, parameter_count: count as u32, reserved: 0, information }
    }
}

/// `DISPATCHER_CONTEXT` (x64 exception handling).
#[repr(C)]
#[derive(Clone, Copy)]
struct DispatcherContext {
    control_pc: u64,
    image_base: u64,
    function_entry: usize,
    establisher_frame: u64,
    target_ip: u64,
    context_record: *mut Context,
    language_handler: usize,
    handler_data: usize,
    history_table: usize,
    scope_index: u32,
    fill: u32,
}

/// `EXCEPTION_POINTERS`, what a filter expression receives.
#[repr(C)]
struct ExceptionPointers {
    record: *mut ExceptionRecord,
    context: *mut Context,
}

type LanguageHandler = unsafe extern "win64" fn(*mut ExceptionRecord, u64, *mut Context, *mut DispatcherContext) -> i32;
type FilterRoutine = unsafe extern "win64" fn(*mut ExceptionPointers, u64) -> i32;
type TerminationRoutine = unsafe extern "win64" fn(u8, u64);

/// Which walk called a handler that is still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The search for a handler (RtlDispatchException).
    Dispatch,
    /// An unwind to a target frame (RtlUnwindEx).
    Unwind,
}

/// Where an unwind stood when it called a frame's unwind handler, so an unwind that collides with
/// it (started by an exception raised inside that handler) goes on from there.
#[derive(Clone, Copy, Debug)]
struct UnwindState {
    /// The frame's own context (before the step).
    before: *const Context,
    /// Its caller's context (after the step).
    after: *const Context,
    /// The DISPATCHER_CONTEXT the handler was given (ScopeIndex advanced past a running
    /// `__finally`, so that handler is not run twice).
    dispatcher: *const DispatcherContext,
}

/// A language handler fltemu's dispatcher or unwinder called and that has not returned: the
/// frames fltemu put between it and the driver frames the walk came from. A walk that leaves the
/// image through such a call goes on where that walk stood, as Windows' walk goes on through
/// RtlpExecuteHandlerForException / RtlpExecuteHandlerForUnwind and the dispatcher's own frames.
#[derive(Clone, Copy, Debug)]
struct Activation {
    phase: Phase,
    /// The context the walk that made the call started from (the exception's context).
    origin: *const Context,
    /// How many activations were running when that walk started.
    base: usize,
    /// The establisher frame of the frame whose handler is running.
    establisher: u64,
    /// [`exec::call_depth`] at the call: a walk at another depth crosses an export first.
    depth: usize,
    /// An address in the Rust frame that made the call (gone once a context above it resumes).
    frame: usize,
    /// For an unwind, where it stood.
    unwind: Option<UnwindState>,
}

thread_local! {
    /// The handler calls running on this thread, oldest first.
    static ACTIVE: core::cell::RefCell<Vec<Activation>> = const { core::cell::RefCell::new(Vec::new()) };
}

fn active_len() -> usize {
    ACTIVE.with(|a| a.borrow().len())
}

fn active(index: usize) -> Activation {
    ACTIVE.with(|a| a.borrow()[index])
}

fn push_active(activation: Activation) {
    ACTIVE.with(|a| a.borrow_mut().push(activation));
}

fn pop_active() {
    ACTIVE.with(|a| a.borrow_mut().pop());
}

/// The handler call a walk at `level` reaches when it leaves the image, if it is fltemu's
/// dispatcher's (same driver-call depth: no export's frames lie between).
fn below(level: usize) -> Option<Activation> {
    let activation = level.checked_sub(1).map(active)?;
    (activation.depth == exec::call_depth()).then_some(activation)
}

/// Continues in `context` (a driver frame): the handler calls whose frames lie below it are over.
fn resume(context: &Context) -> ! {
    let rsp = context.gpr[RSP];
    ACTIVE.with(|a| a.borrow_mut().retain(|activation| activation.frame as u64 > rsp));
    // A raise of the dispatcher whose frame lies below the resumed RSP is over as well, even
    // when an outer handler call is still running (a filter that caught it and goes on).
    RERAISES.with(|r| r.borrow_mut().retain(|frame| *frame as u64 > rsp));
    unwind::restore(context)
}

thread_local! {
    /// Exceptions the dispatcher or unwinder raised itself (STATUS_NONCONTINUABLE_EXCEPTION,
    /// STATUS_INVALID_DISPOSITION, STATUS_BAD_STACK) whose dispatch is still running, each as
    /// an address in the Rust frame that raised it: each keeps RtlDispatchException's or
    /// RtlUnwindEx's frames on the kernel stack until a context above that frame resumes.
    static RERAISES: core::cell::RefCell<Vec<usize>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// How many raises of the dispatcher are still running on this thread.
fn reraises() -> usize {
    RERAISES.with(|r| r.borrow().len())
}

/// Raises `status` from inside the dispatcher or unwinder, as RtlRaiseStatus there does: the
/// amd64 RtlDispatchException / RtlUnwindEx (WRK `exdsptch.c`) call
/// RtlRaiseStatus(STATUS_NONCONTINUABLE_EXCEPTION / STATUS_INVALID_DISPOSITION /
/// STATUS_BAD_STACK), which builds a fresh noncontinuable record whose ExceptionRecord is NULL
/// (nothing chains it to the record being dispatched). Dispatched from `context`, the context
/// the raising routine's frames unwind to.
fn raise_from_dispatcher(status: i32, record: &ExceptionRecord, context: &Context) -> ! {
    let raised = ExceptionRecord::new(status, EXCEPTION_NONCONTINUABLE, record.address, &[]);
    debug_line(format!(
        "fltemu: exception {:#010x} at {}: the dispatcher raises {:#010x}",
        record.code.cast_unsigned(),
        place(Image::current().as_ref(), record.address),
        status.cast_unsigned()
    ));
    let marker = 0u8;
    let frame = core::hint::black_box(&raw const marker) as usize;
    RERAISES.with(|r| r.borrow_mut().push(frame));
    dispatch(raised, context)
}

/// Ends the run: the unwind data of a frame the walk reached is corrupt. Windows' dispatcher
/// stops its search there (RtlDispatchException gives up on a frame it cannot unwind, marking
/// the record EXCEPTION_STACK_INVALID) and the exception is not handled: bug check 0x1E with
/// the parameters of the exception being dispatched, and one line saying which data is bad.
fn corrupt_unwind(image: &Image, record: &ExceptionRecord, at: u64, error: unwind::UnwindError) -> ! {
    // A leaf step or an unwind code that reads outside the thread's stack is a corrupt stack
    // (registers or return addresses), not necessarily corrupt unwind data.
    let what = if matches!(error, unwind::UnwindError::StackOutOfRange(_)) { "corrupt stack" } else { "corrupt unwind data" };
    debug_line(format!(
        "fltemu: {what}: {error} (frame at {}) while dispatching exception {:#010x}",
        place(Some(image), at),
        record.code.cast_unsigned()
    ));
    not_handled(Some(image), record)
}

/// Ends the run: a `__C_specific_handler` scope table is corrupt (reaches outside the image, or
/// names a filter, `__finally` or `__except` target outside its executable sections). Windows
/// would read or jump there and crash inside the dispatch; fltemu reports the exception being
/// dispatched as not handled (bug check 0x1E) with one line naming the bad entry.
fn corrupt_scope_table(image: Option<&Image>, record: &ExceptionRecord, reason: &str) -> ! {
    debug_line(format!(
        "fltemu: corrupt scope table: {reason} while dispatching exception {:#010x}",
        record.code.cast_unsigned()
    ));
    not_handled(image, record)
}

fn calls(function: &'static str, max_irql: u8) {
    if let Some(inner) = crate::state::current() {
        inner.enter(function, max_irql);
    }
}

fn debug_line(line: String) {
    if let Some(inner) = crate::state::current() {
        inner.debug.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
    }
}

fn place(image: Option<&Image>, address: u64) -> String {
    match image {
        Some(image) if image.contains(address) => format!("image RVA {:#x}", image.rva(address)),
        _ => format!("{address:#x} (outside the image)"),
    }
}

/// Ends the run: nobody handled `record` (bug check 0x1E with the documented parameters).
fn not_handled(image: Option<&Image>, record: &ExceptionRecord) -> ! {
    debug_line(format!(
        "fltemu: KMODE_EXCEPTION_NOT_HANDLED: exception {:#010x} at {} reached the top of the driver's frames",
        record.code.cast_unsigned(),
        place(image, record.address)
    ));
    #[allow(clippy::cast_possible_truncation)]
    exec::bug_check(
        KMODE_EXCEPTION_NOT_HANDLED,
        [
            record.code.cast_unsigned() as usize,
            record.address as usize,
            record.information[0] as usize,
            record.information[1] as usize,
        ],
    )
}

/// A walk left the driver's frames with no dispatcher call of fltemu's to go on through: the
/// exception reached the top of this driver call. What Windows does next depends on what lies
/// below: an export's frames (a callback run from inside an emulated export), a system worker
/// thread's start (a work item), or the caller's.
fn reached_top(image: &Image, record: &ExceptionRecord, context: &Context) -> ! {
    let code = record.code.cast_unsigned();
    let depth = exec::call_depth();
    if depth > 1 {
        let export = match exec::crossed_export() {
            "" => "an emulated export",
            name => name,
        };
        debug_line(format!(
            "fltemu: exception {code:#010x} at {} in a {:?} callback would leave it through {export}: on Windows the dispatch \
             goes on into the driver frames that called {export} (a __try there could handle it, and {export}'s own frames \
             would be unwound without their cleanup); fltemu does not unwind its own frames, so it ends the run as not handled",
            place(Some(image), record.address),
            exec::operation()
        ));
        not_handled(Some(image), record);
    }
    if exec::operation() == crate::Operation::WorkItem {
        // A work item runs on a system worker thread, whose start routine catches what reaches
        // it with bug check 0x7E ("Bug Check 0x7E SYSTEM_THREAD_EXCEPTION_NOT_HANDLED").
        debug_line(format!(
            "fltemu: SYSTEM_THREAD_EXCEPTION_NOT_HANDLED: exception {code:#010x} at {} reached the top of a work item routine",
            place(Some(image), record.address)
        ));
        exec::bug_check(
            SYSTEM_THREAD_EXCEPTION_NOT_HANDLED,
            [code as usize, usize::try_from(record.address).unwrap_or(0), &raw const *record as usize, &raw const *context as usize],
        );
    }
    not_handled(Some(image), record)
}

/// Calls a frame's language handler as RtlpExecuteHandlerForException / ForUnwind do.
fn call_handler(
    routine: usize,
    record: &mut ExceptionRecord,
    establisher: u64,
    context: *mut Context,
    dispatcher: &mut DispatcherContext,
) -> i32 {
    // SAFETY: the routine is the image's language handler for this frame (its unwind info
    // names it): __C_specific_handler (fltemu's) or one the driver links, Win64 ABI.
    let routine = unsafe { core::mem::transmute::<usize, LanguageHandler>(routine) };
    // SAFETY: called as the dispatcher calls a language handler, with live records.
    unsafe { routine(&raw mut *record, establisher, context, &raw mut *dispatcher) }
}

/// Kernel stack a Windows dispatcher would have used on an x64 kernel stack by the time it
/// dispatches a nested exception raised in `context`: the driver's own frames below the outermost
/// driver call at the first exception, plus, per handler call still running, the trap frame
/// (KTRAP_FRAME, 0x190), exception frame (KEXCEPTION_FRAME, 0x140), exception record and the two
/// CONTEXT records KiDispatchException and RtlDispatchException keep (0x4D0 each), or for an
/// unwind RtlUnwindEx's CONTEXT and DISPATCHER_CONTEXT. fltemu's own frames are larger (and its
/// thread stack is 1 MiB), so they are not what is measured.
fn nested_kernel_stack(context: &Context, phase: Phase) -> usize {
    const DISPATCH_COST: usize = 0x190 + 0x140 + 0x98 + 2 * 0x4D0;
    const UNWIND_COST: usize = 0x4D0 + 0x100;
    let top = exec::stack_top() as u64;
    let first = if active_len() > 0 { active(0).origin } else { core::ptr::from_ref(context) };
    // SAFETY: the oldest activation's origin lives in its running frame.
    let driver = usize::try_from(top.saturating_sub(unsafe { (*first).gpr[RSP] })).unwrap_or(0);
    let handlers: usize = (0..active_len())
        .map(|index| if active(index).phase == Phase::Dispatch { DISPATCH_COST } else { UNWIND_COST })
        .sum();
    let reraises = reraises().saturating_mul(DISPATCH_COST);
    let starting = if phase == Phase::Dispatch { DISPATCH_COST } else { UNWIND_COST };
    driver.saturating_add(handlers).saturating_add(reraises).saturating_add(starting)
}

/// Ends the run with a double fault when the dispatch or unwind (`phase`) about to start from
/// `context` would overflow the kernel stack: nested in running handler calls or raises of the
/// dispatcher past the 24 KiB estimate, or with fltemu's own thread stack nearly used up.
/// `what` names it for the report, raised or started at `at`.
fn check_nesting(image: &Image, phase: Phase, context: &Context, at: u64, what: &dyn Fn() -> String) {
    let nested = active_len() > 0 || reraises() > 0;
    if nested && nested_kernel_stack(context, phase) > exec::KERNEL_STACK_SIZE || thread_stack_exhausted() {
        // Each nested exception or unwind stacks another trap frame and dispatch (or RtlUnwindEx's
        // records) on the kernel stack; a handler that raises again every time its frame is
        // searched, or a __finally that unwinds again, overflows it, which is a double fault
        // ("Bug Check 0x7F UNEXPECTED_KERNEL_MODE_TRAP", parameter 1 = 8).
        debug_line(format!(
            "fltemu: UNEXPECTED_KERNEL_MODE_TRAP (double fault): {} at {} with {} exception handlers and {} raises of the \
             dispatcher still running overflowed the {} KiB kernel stack",
            what(),
            place(Some(image), at),
            active_len(),
            reraises(),
            exec::KERNEL_STACK_SIZE / 1024
        ));
        exec::bug_check(UNEXPECTED_KERNEL_MODE_TRAP, [EXCEPTION_DOUBLE_FAULT, 0, 0, 0]);
    }
}

/// RtlpIsFrameInBounds: an establisher frame must be 8-byte aligned and inside the thread's
/// stack limits. The limits are unknown only when [`note_stack_bounds`] could not read them
/// (pthread_getattr_np failed) or did not run on this thread; then only the alignment is
/// checked, a documented gap (the README's list of exceptions).
fn frame_in_bounds(frame: u64) -> bool {
    frame.is_multiple_of(8) && unwind::thread_stack().is_none_or(|(low, high)| frame >= low as u64 && frame < high as u64)
}

/// True when fltemu's own thread stack has less room left than a dispatch needs (its frames are
/// larger than Windows'): a bound that holds however the nesting came about.
fn thread_stack_exhausted() -> bool {
    let low = STACK_LOW.with(Cell::get);
    let here = stack_address();
    low != 0 && here < low.saturating_add(DISPATCH_STACK / 2)
}

/// An address in the current frame.
#[inline(never)]
fn stack_address() -> usize {
    let marker = 0u8;
    core::hint::black_box(&raw const marker) as usize
}

/// Dispatches `record` raised in `context` through the driver's exception handlers (never
/// returns: it resumes at a handler, continues execution, or bug-checks).
///
/// An exception raised while a handler fltemu called is running is dispatched on through that
/// call, as RtlDispatchException does: out of a filter expression (a nested exception,
/// ExceptionNestedException from RtlpExceptionHandler) the walk goes on from where the outer
/// walk started, with EXCEPTION_NESTED_CALL set until it has passed the frame whose handler was
/// running; out of a `__finally` an unwind was running (ExceptionCollidedUnwind from
/// RtlpUnwindHandler) it calls the handler of the frame being unwound again with that unwind's
/// ScopeIndex and goes on from that frame's caller: the frames the unwind already left, and
/// the dispatch that started it, are not searched again and no nested flag is set for them.
pub fn dispatch(mut record: ExceptionRecord, context: &Context) -> ! {
    let Some(image) = Image::current() else { not_handled(None, &record) };
    let base = active_len();
    check_nesting(&image, Phase::Dispatch, context, record.address, &|| format!("nested exception {:#010x}", record.code.cast_unsigned()));
    let mut original = *context;
    let mut walk = *context;
    let mut level = base;
    let mut nested_frame = 0u64;
    let mut collided: Option<UnwindState> = None;
    for _ in 0..MAX_FRAMES {
        let (control_pc, establisher, handler, function_entry, scope_index) = if let Some(state) = collided.take() {
            // The unwind this walk left through was unwinding this frame: its handler runs again
            // from the scope the unwind had reached, then the walk goes on from its caller.
            // SAFETY: the collided unwind's frame is running (its handler call is below us).
            let old = unsafe { *state.dispatcher };
            // SAFETY: as above.
            walk = unsafe { *state.after };
            let handler = unwind::Handler { routine: old.language_handler, data: old.handler_data };
            (old.control_pc, old.establisher_frame, handler, old.function_entry, old.scope_index)
        } else {
            if !image.contains(walk.rip) {
                let Some(outer) = below(level) else { break };
                level = outer.base;
                if outer.phase == Phase::Unwind {
                    // Through RtlpExecuteHandlerForUnwind: a collided unwind. The frames that
                    // unwind already left, and the dispatch that started it, are not searched
                    // again (RtlDispatchException's ExceptionCollidedUnwind case).
                    let Some(state) = outer.unwind else { break };
                    collided = Some(state);
                    continue;
                }
                // Through RtlpExecuteHandlerForException into the frames the outer walk came
                // from: a nested exception until the frame whose handler was running is passed.
                record.flags |= EXCEPTION_NESTED_CALL;
                nested_frame = nested_frame.max(outer.establisher);
                // SAFETY: the outer walk's origin lives in its frame, which is running (it called
                // the handler this walk came out of).
                walk = unsafe { *outer.origin };
                continue;
            }
            let control_pc = walk.rip;
            let (frame, function) = match unwind::step(&image, &mut walk, UNW_FLAG_EHANDLER) {
                Ok(step) => step,
                Err(error) => corrupt_unwind(&image, &record, control_pc, error),
            };
            if function.is_some() && !frame_in_bounds(frame.establisher) {
                // RtlDispatchException checks every establisher frame (RtlpIsFrameInBounds): a
                // misaligned one or one outside the stack limits sets EXCEPTION_STACK_INVALID and
                // ends the search, so the exception is not handled.
                record.flags |= EXCEPTION_STACK_INVALID;
                debug_line(format!(
                    "fltemu: EXCEPTION_STACK_INVALID: the frame at {} has establisher frame {:#x}, misaligned or outside the \
                     thread's stack, so the dispatch of exception {:#010x} stops there",
                    place(Some(&image), control_pc),
                    frame.establisher,
                    record.code.cast_unsigned()
                ));
                not_handled(Some(&image), &record);
            }
            let (Some(handler), Some(function)) = (frame.handler, function) else { continue };
            (control_pc, frame.establisher, handler, function.entry_address, 0)
        };
        let mut dispatcher = DispatcherContext {
            control_pc,
            image_base: image.base as u64,
            function_entry,
            establisher_frame: establisher,
            target_ip: 0,
            context_record: &raw mut original,
            language_handler: handler.routine,
            handler_data: handler.data,
            history_table: 0,
            scope_index,
            fill: 0,
        };
        push_active(Activation {
            phase: Phase::Dispatch,
            origin: &raw const original,
            base,
            establisher,
            depth: exec::call_depth(),
            frame: &raw const dispatcher as usize,
            unwind: None,
        });
        let disposition = call_handler(handler.routine, &mut record, establisher, &raw mut original, &mut dispatcher);
        pop_active();
        if nested_frame == establisher {
            record.flags &= !EXCEPTION_NESTED_CALL;
            nested_frame = 0;
        }
        // RtlDispatchException raises these itself (RtlRaiseException / RtlRaiseStatus), so the
        // walk starts again from the exception's context: an outer __except may take them.
        match disposition {
            EXCEPTION_CONTINUE_EXECUTION_DISPOSITION => {
                if record.flags & EXCEPTION_NONCONTINUABLE != 0 {
                    raise_from_dispatcher(STATUS_NONCONTINUABLE_EXCEPTION, &record, context);
                }
                resume(&original);
            }
            EXCEPTION_CONTINUE_SEARCH_DISPOSITION => {}
            _ => raise_from_dispatcher(STATUS_INVALID_DISPOSITION, &record, context),
        }
    }
    reached_top(&image, &record, &original)
}

/// Where an unwind starts: the context of the walk it belongs to and the activations below it.
#[derive(Clone, Copy)]
struct UnwindStart {
    origin: *const Context,
    base: usize,
    /// Started by fltemu's `__C_specific_handler` from inside a dispatch (not by the driver
    /// calling RtlUnwindEx): a status the unwind raises goes out through that dispatch's call.
    by_handler: bool,
}

/// RtlUnwindEx's walk: from `start`, calls each frame's unwind handler (termination handlers
/// run) until the frame `target_frame`, then resumes it at `target_ip` with RAX =
/// `return_value`. A walk that leaves the image through a running unwind handler call has
/// collided with that unwind: it goes on where that unwind stood (the handler is called again
/// with EXCEPTION_COLLIDED_UNWIND and the old DISPATCHER_CONTEXT, so a `__finally` that raised
/// is not run again), as RtlpUnwindHandler makes RtlUnwindEx do. `written` receives the final
/// context (RtlUnwindEx's ContextRecord), when given.
fn unwind_walk(
    start: UnwindStart,
    target_frame: u64,
    target_ip: u64,
    record: &mut ExceptionRecord,
    return_value: u64,
    written: *mut Context,
) -> ! {
    let Some(image) = Image::current() else { not_handled(None, record) };
    // SAFETY: the origin lives in a frame that is running (the walk that owns it called us).
    let mut walk = unsafe { *start.origin };
    check_nesting(&image, Phase::Unwind, &walk, walk.rip, &|| "a nested unwind".to_owned());
    let mut level = start.base;
    let mut collided: Option<UnwindState> = None;
    record.flags |= EXCEPTION_UNWINDING;
    if target_frame == 0 {
        record.flags |= EXCEPTION_EXIT_UNWIND;
    }
    for _ in 0..MAX_FRAMES {
        let (before, frame, function, control_pc, mut dispatcher) = if let Some(state) = collided.take() {
            // SAFETY: the collided unwind's frame is running (its handler call is below us).
            let before = unsafe { *state.before };
            // SAFETY: as above.
            let after = unsafe { *state.after };
            // SAFETY: as above.
            let old = unsafe { *state.dispatcher };
            // The colliding unwind keeps its own target (RtlUnwindEx takes only the frame state).
            walk = after;
            record.flags |= EXCEPTION_COLLIDED_UNWIND;
            let handler = unwind::Handler { routine: old.language_handler, data: old.handler_data };
            let frame = unwind::Frame { establisher: old.establisher_frame, handler: Some(handler) };
            (before, frame, None, old.control_pc, Some(old))
        } else {
            if !image.contains(walk.rip) {
                let Some(outer) = below(level) else { break };
                level = outer.base;
                if outer.phase == Phase::Unwind {
                    collided = outer.unwind;
                } else {
                    // SAFETY: as above: that walk is running.
                    walk = unsafe { *outer.origin };
                }
                continue;
            }
            let before = walk;
            let control_pc = walk.rip;
            let (frame, function) = match unwind::step(&image, &mut walk, UNW_FLAG_UHANDLER) {
                Ok(step) => step,
                Err(error) => corrupt_unwind(&image, record, control_pc, error),
            };
            if function.is_some() && (!frame_in_bounds(frame.establisher) || target_frame != 0 && target_frame < frame.establisher) {
                // RtlUnwindEx checks each frame with a function entry (WRK amd64 exdsptch.c): an
                // establisher that is misaligned or outside the stack limits, or a target below it
                // (the unwind passed its target, which is not on this stack), raises
                // STATUS_BAD_STACK.
                raise_from_unwind(start, STATUS_BAD_STACK, record);
            }
            (before, frame, function, control_pc, None)
        };
        let is_target = frame.establisher == target_frame;
        if is_target {
            record.flags |= EXCEPTION_TARGET_UNWIND;
        }
        let mut scratch = before;
        if let Some(handler) = frame.handler {
            let mut dispatcher = dispatcher.take().unwrap_or(DispatcherContext {
                control_pc,
                image_base: image.base as u64,
                function_entry: function.map_or(0, |f| f.entry_address),
                establisher_frame: frame.establisher,
                target_ip,
                context_record: &raw mut scratch,
                language_handler: handler.routine,
                handler_data: handler.data,
                history_table: 0,
                scope_index: 0,
                fill: 0,
            });
            dispatcher.target_ip = target_ip;
            dispatcher.context_record = &raw mut scratch;
            push_active(Activation {
                phase: Phase::Unwind,
                origin: start.origin,
                base: start.base,
                establisher: frame.establisher,
                depth: exec::call_depth(),
                frame: &raw const dispatcher as usize,
                unwind: Some(UnwindState {
                    before: &raw const before,
                    after: &raw const walk,
                    dispatcher: &raw const dispatcher,
                }),
            });
            let disposition = call_handler(handler.routine, record, frame.establisher, &raw mut scratch, &mut dispatcher);
            pop_active();
            record.flags &= !EXCEPTION_COLLIDED_UNWIND;
            if disposition != EXCEPTION_CONTINUE_SEARCH_DISPOSITION {
                raise_from_unwind(start, STATUS_INVALID_DISPOSITION, record);
            }
        }
        if is_target {
            let mut resume_at = before;
            resume_at.rip = target_ip;
            resume_at.gpr[RAX] = return_value;
            if !written.is_null() {
                // SAFETY: the caller of RtlUnwindEx passed a CONTEXT buffer for the unwind.
                unsafe { written.write_unaligned(resume_at) };
            }
            resume(&resume_at);
        }
    }
    record.flags |= EXCEPTION_EXIT_UNWIND;
    // SAFETY: the origin lives in a running frame (see above).
    reached_top(&image, record, unsafe { &*start.origin })
}

/// Raises `status` from inside RtlUnwindEx: the walk starts at RtlUnwindEx's caller, which is
/// the driver code that called it, or (for the unwind `__C_specific_handler` starts) fltemu's
/// handler call, so the walk goes on through the dispatch that made it as a nested exception.
fn raise_from_unwind(start: UnwindStart, status: i32, record: &ExceptionRecord) -> ! {
    let context = if start.by_handler {
        // A context outside the image: the walk leaves through the innermost handler call.
        let mut outside = Context::zeroed();
        outside.gpr[RSP] = stack_address() as u64;
        outside
    } else {
        // SAFETY: the origin lives in a running frame (the walk that owns it called us).
        unsafe { *start.origin }
    };
    raise_from_dispatcher(status, record, &context)
}

/// The unwind `__C_specific_handler` starts for an `__except` whose filter chose
/// EXCEPTION_EXECUTE_HANDLER: it belongs to the dispatch that called the handler.
fn unwind_to(target_frame: u64, target_ip: u64, record: &mut ExceptionRecord, return_value: u64) -> ! {
    let Some(top) = active_len().checked_sub(1).map(active) else { not_handled(Image::current().as_ref(), record) };
    let start = UnwindStart { origin: top.origin, base: top.base, by_handler: true };
    unwind_walk(start, target_frame, target_ip, record, return_value, core::ptr::null_mut())
}

/// One `SCOPE_TABLE` entry (RVAs; `handler` 1 = the constant filter EXCEPTION_EXECUTE_HANDLER,
/// `target` 0 = a termination handler).
struct Scope {
    begin: u32,
    end: u32,
    handler: u32,
    target: u32,
}

/// A scope table checked to lie inside the image: its RVA and entry count.
#[derive(Clone, Copy)]
struct ScopeTable {
    rva: usize,
    count: u32,
}

impl ScopeTable {
    /// The scope table at `address` (DISPATCHER_CONTEXT.HandlerData), if its count and all its
    /// entries lie inside `image` (the count is the driver's: 16 × count is overflow-checked).
    fn at(image: &Image, address: usize) -> Result<Self, String> {
        let rva = address.wrapping_sub(image.base);
        let count = image.u32_at(rva).ok_or_else(|| format!("HandlerData {address:#x} is not in the image"))?;
        let length = (count as usize).checked_mul(16).and_then(|bytes| bytes.checked_add(4));
        if !length.is_some_and(|length| image.holds(rva, length)) {
            return Err(format!("the table at image RVA {rva:#x} claims {count} scope records, which reach past the image"));
        }
        Ok(Self { rva, count })
    }

    fn entry(self, image: &Image, index: u32) -> Scope {
        let at = self.rva + 4 + index as usize * 16;
        // In bounds: `at` checked every entry below `count` lies inside the image.
        let read = |offset: usize| image.u32_at(at + offset).unwrap_or(0);
        Scope { begin: read(0), end: read(4), handler: read(8), target: read(12) }
    }
}

/// Checks that an RVA a scope record names (a filter, `__finally` or `__except` target) is code
/// of the image.
fn scope_code(image: &Image, table: ScopeTable, index: u32, what: &str, rva: u32) -> Result<(), String> {
    if image.executable(rva) {
        Ok(())
    } else {
        Err(format!("scope record {index} of the table at image RVA {:#x} names a {what} at RVA {rva:#x}, outside the image's executable sections", table.rva))
    }
}

/// `__C_specific_handler` (ntoskrnl export; x64 exception handling, "language-specific
/// handler"): runs the `__except` filters of the scopes containing the PC during dispatch and
/// the `__finally` handlers of the scopes being left during unwind.
extern "win64" fn c_specific_handler(
    record: *mut ExceptionRecord,
    establisher: u64,
    context: *mut Context,
    dispatcher: *mut DispatcherContext,
) -> i32 {
    // Copied in unaligned: a driver may call this export itself with structures anywhere (no
    // references are formed over its memory); the one field written back is ScopeIndex.
    let dispatcher_at = dispatcher;
    // SAFETY: called by fltemu's dispatcher (or a driver) with a live DISPATCHER_CONTEXT.
    let dispatcher = unsafe { dispatcher_at.read_unaligned() };
    // SAFETY: as above, the record being dispatched.
    let mut record_copy = unsafe { record.read_unaligned() };
    let record_ref = &mut record_copy;
    let Some(image) = Image::current() else { return EXCEPTION_CONTINUE_SEARCH_DISPOSITION };
    if dispatcher.image_base != image.base as u64 {
        corrupt_scope_table(Some(&image), record_ref, &format!("DISPATCHER_CONTEXT.ImageBase {:#x} is not the driver image's", dispatcher.image_base));
    }
    let table = ScopeTable::at(&image, dispatcher.handler_data).unwrap_or_else(|reason| corrupt_scope_table(Some(&image), record_ref, &reason));
    let count = table.count;
    let base = dispatcher.image_base;
    #[allow(clippy::cast_possible_truncation)]
    let pc = dispatcher.control_pc.wrapping_sub(base) as u32;
    if record_ref.flags & (EXCEPTION_UNWINDING | EXCEPTION_EXIT_UNWIND) == 0 {
        for index in dispatcher.scope_index..count {
            let entry = table.entry(&image, index);
            if pc < entry.begin || pc >= entry.end || entry.target == 0 {
                continue;
            }
            let checked = scope_code(&image, table, index, "__except target", entry.target)
                .and_then(|()| if entry.handler == 1 { Ok(()) } else { scope_code(&image, table, index, "filter", entry.handler) });
            if let Err(reason) = checked {
                corrupt_scope_table(Some(&image), record_ref, &reason);
            }
            let verdict = if entry.handler == 1 {
                1
            } else {
                let mut pointers = ExceptionPointers { record, context };
                // SAFETY: a filter funclet of this image (scope table RVA), Win64 ABI:
                // (EXCEPTION_POINTERS*, establisher frame).
                let filter = unsafe { core::mem::transmute::<usize, FilterRoutine>(base as usize + entry.handler as usize) };
                // SAFETY: called as the language handler calls a filter expression.
                unsafe { filter(&raw mut pointers, establisher) }
            };
            if verdict < 0 {
                return EXCEPTION_CONTINUE_EXECUTION_DISPOSITION;
            }
            if verdict > 0 {
                let code = u64::from(record_ref.code.cast_unsigned());
                unwind_to(establisher, base + u64::from(entry.target), record_ref, code);
            }
        }
        return EXCEPTION_CONTINUE_SEARCH_DISPOSITION;
    }
    #[allow(clippy::cast_possible_truncation)]
    let target = dispatcher.target_ip.wrapping_sub(base) as u32;
    let target_unwind = record_ref.flags & EXCEPTION_TARGET_UNWIND != 0;
    for index in dispatcher.scope_index..count {
        let entry = table.entry(&image, index);
        if pc < entry.begin || pc >= entry.end {
            continue;
        }
        if target_unwind && (target >= entry.begin && target < entry.end || entry.target == target) {
            // The target lies in this scope (or is its __except block): the scope is not left.
            return EXCEPTION_CONTINUE_SEARCH_DISPOSITION;
        }
        if entry.target == 0 {
            if let Err(reason) = scope_code(&image, table, index, "__finally block", entry.handler) {
                corrupt_scope_table(Some(&image), record_ref, &reason);
            }
            // Written back before the __finally runs: a collided unwind reads it there.
            // SAFETY: the live DISPATCHER_CONTEXT (as above); a field place, no reference.
            let scope_index = unsafe { &raw mut (*dispatcher_at).scope_index };
            // SAFETY: as above; unaligned, as the structure may be.
            unsafe { scope_index.write_unaligned(index + 1) };
            // SAFETY: a termination funclet of this image, Win64 ABI: (abnormal, frame).
            let finally = unsafe { core::mem::transmute::<usize, TerminationRoutine>(base as usize + entry.handler as usize) };
            // SAFETY: called as the language handler calls a __finally block during unwind.
            unsafe { finally(1, establisher) };
        }
    }
    EXCEPTION_CONTINUE_SEARCH_DISPOSITION
}

/// A context captured by a raise thunk, copied into a clean CONTEXT.
fn captured(raw: *const Context) -> Context {
    // SAFETY: the thunk passes its own stack copy of the caller's registers.
    let raw = unsafe { &*raw };
    let mut context = Context::zeroed();
    context.gpr = raw.gpr;
    context.rip = raw.rip;
    context.xmm = raw.xmm;
    context.mx_csr = raw.mx_csr;
    context
}

fn raise(status: i32, context: &Context) -> ! {
    dispatch(ExceptionRecord::new(status, EXCEPTION_NONCONTINUABLE, context.rip, &[]), context)
}

/// `ExRaiseStatus` (wdm.h DDI): raises `status` (noncontinuable) at the caller; any IRQL.
extern "win64" fn ex_raise_status(status: i32, _unused: usize, _unused2: usize, context: *const Context) {
    calls("ExRaiseStatus", 31);
    raise(status, &captured(context));
}

/// Checks the alignment ProbeForRead/ProbeForWrite take (1, 2, 4, 8 or 16, per the DDI pages).
fn checked_alignment(function: &'static str, alignment: u32) -> usize {
    if !matches!(alignment, 1 | 2 | 4 | 8 | 16)
        && let Some(inner) = crate::state::current()
    {
        inner.violation(crate::verifier::Violation::InvalidParameter { function, reason: "Alignment must be 1, 2, 4, 8 or 16" });
    }
    alignment.max(1) as usize
}

/// Whether `[address, address + length)` is user address space (fltemu's user mappings stand
/// for the user half: everything else is kernel memory).
fn in_user_space(address: usize, length: usize) -> bool {
    let Some(inner) = crate::state::current() else { return false };
    address.checked_add(length).is_some_and(|end| inner.user.contains(address) && inner.user.contains(end - 1))
}

/// `ProbeForRead` (wdm.h DDI): length 0 checks nothing; a misaligned address raises
/// STATUS_DATATYPE_MISALIGNMENT; a range not in user space (or wrapping) raises
/// STATUS_ACCESS_VIOLATION. It does not read the memory (the DDI: the buffer may still become
/// invalid, so accesses stay inside __try). IRQL ≤ APC_LEVEL.
extern "win64" fn probe_for_read(address: usize, length: usize, alignment: u32, context: *const Context) {
    calls("ProbeForRead", APC_LEVEL);
    if length == 0 {
        return;
    }
    let alignment = checked_alignment("ProbeForRead", alignment);
    if !address.is_multiple_of(alignment) {
        raise(STATUS_DATATYPE_MISALIGNMENT, &captured(context));
    }
    if !in_user_space(address, length) {
        raise(STATUS_ACCESS_VIOLATION, &captured(context));
    }
}

/// `ProbeForWrite` (wdm.h DDI): as ProbeForRead, and every page must be writable (Windows
/// touches each one), else STATUS_ACCESS_VIOLATION. IRQL ≤ APC_LEVEL.
extern "win64" fn probe_for_write(address: usize, length: usize, alignment: u32, context: *const Context) {
    calls("ProbeForWrite", APC_LEVEL);
    if length == 0 {
        return;
    }
    let alignment = checked_alignment("ProbeForWrite", alignment);
    if !address.is_multiple_of(alignment) {
        raise(STATUS_DATATYPE_MISALIGNMENT, &captured(context));
    }
    let writable = in_user_space(address, length)
        && crate::state::current()
            .is_some_and(|inner| inner.user.access_of(address, length) == Some(crate::user::Access::ReadWrite));
    if !writable {
        raise(STATUS_ACCESS_VIOLATION, &captured(context));
    }
}

/// `MmProbeAndLockPages` (wdm.h DDI): a range the caller may not access for the operation
/// raises STATUS_ACCESS_VIOLATION at the caller (a driver calls it inside __try); the rest of
/// the checks and the lock are [`crate::mdl::probe_and_lock`]'s.
extern "win64" fn mm_probe_and_lock_pages(mdl: usize, mode: i8, operation: i32, context: *const Context) {
    if let Err(status) = crate::mdl::probe_and_lock(mdl, mode, operation) {
        raise(status, &captured(context));
    }
}

/// The entry point fltemu binds MmProbeAndLockPages to.
pub fn mm_probe_and_lock_pages_entry() -> usize {
    fltemu_mm_probe_and_lock_pages_thunk as *const () as usize
}

// ---- the unwind exports: RtlCaptureContext, RtlLookupFunctionEntry, RtlVirtualUnwind, RtlUnwindEx

core::arch::global_asm!(
    // RtlCaptureContext(PCONTEXT ContextRecord in RCX): the caller's registers as they are at
    // the call, RIP = the return address, RSP = the caller's after the return; FltSave by
    // FXSAVE when the CONTEXT is 16-byte aligned (as winnt.h declares it). Then tail-jumps to
    // the accounting routine, which returns to the caller.
    ".globl fltemu_rtl_capture_context",
    "fltemu_rtl_capture_context:",
    "pushfq",
    "mov [rcx + 0x78], rax",
    "mov [rcx + 0x80], rcx",
    "mov [rcx + 0x88], rdx",
    "mov [rcx + 0x90], rbx",
    "lea rax, [rsp + 16]",
    "mov [rcx + 0x98], rax",
    "mov [rcx + 0xA0], rbp",
    "mov [rcx + 0xA8], rsi",
    "mov [rcx + 0xB0], rdi",
    "mov [rcx + 0xB8], r8",
    "mov [rcx + 0xC0], r9",
    "mov [rcx + 0xC8], r10",
    "mov [rcx + 0xD0], r11",
    "mov [rcx + 0xD8], r12",
    "mov [rcx + 0xE0], r13",
    "mov [rcx + 0xE8], r14",
    "mov [rcx + 0xF0], r15",
    "mov rax, [rsp + 8]",
    "mov [rcx + 0xF8], rax",
    "pop rax",
    "mov [rcx + 0x44], eax",
    "mov word ptr [rcx + 0x38], cs",
    "mov word ptr [rcx + 0x3A], ds",
    "mov word ptr [rcx + 0x3C], es",
    "mov word ptr [rcx + 0x3E], fs",
    "mov word ptr [rcx + 0x40], gs",
    "mov word ptr [rcx + 0x42], ss",
    "stmxcsr [rcx + 0x34]",
    // CONTEXT_CONTROL | CONTEXT_INTEGER | CONTEXT_SEGMENTS | CONTEXT_FLOATING_POINT: what was
    // captured (no debug registers), as the x64 RtlCaptureContext reports it.
    "mov dword ptr [rcx + 0x30], 0x10000F",
    "xor edx, edx",
    "test cl, 15",
    "jnz 2f",
    "fxsave [rcx + 0x100]",
    "jmp {note}",
    "2:",
    "mov edx, 1",
    "jmp {note}",
    note = sym rtl_capture_context_note,
);

/// The accounting half of `RtlCaptureContext` (winnt.h; documented for x64 as capturing the
/// caller's context): any IRQL; a CONTEXT that is not 16-byte aligned (winnt.h declares it
/// DECLSPEC_ALIGN(16); FXSAVE needs it) → InvalidParameter, its floating-point state not captured.
extern "win64" fn rtl_capture_context_note(_context: *mut Context, misaligned: u64) {
    calls("RtlCaptureContext", 31);
    if misaligned != 0
        && let Some(inner) = crate::state::current()
    {
        inner.violation(crate::verifier::Violation::InvalidParameter {
            function: "RtlCaptureContext",
            reason: "ContextRecord is not 16-byte aligned (CONTEXT is DECLSPEC_ALIGN(16)); its FltSave was not captured",
        });
    }
}

fn invalid(function: &'static str, reason: &'static str) {
    if let Some(inner) = crate::state::current() {
        inner.violation(crate::verifier::Violation::InvalidParameter { function, reason });
    }
}

/// `RtlLookupFunctionEntry` (winnt.h): the `.pdata` entry covering ControlPc and the image base,
/// for the driver image; NULL for a PC in the image without an entry (a leaf function, base
/// still set) and NULL with ImageBase 0 for any other address (fltemu's own code has no
/// function table a driver could use). Any IRQL.
extern "win64" fn rtl_lookup_function_entry(control_pc: u64, image_base: *mut u64, _history_table: usize) -> usize {
    calls("RtlLookupFunctionEntry", 31);
    let image = Image::current().filter(|image| image.contains(control_pc));
    if image_base.is_null() {
        invalid("RtlLookupFunctionEntry", "ImageBase is NULL");
    } else {
        // SAFETY: the caller's out parameter (a ULONG64); unaligned writes are tolerated.
        unsafe { image_base.write_unaligned(image.map_or(0, |image| image.base as u64)) };
    }
    image.and_then(|image| image.lookup(image.rva(control_pc))).map_or(0, |function| function.entry_address)
}

/// `RtlVirtualUnwind` (winnt.h, x64 prototype): one virtual unwind step over the driver image's
/// unwind data (the dispatcher's own unwinder): ContextRecord becomes the caller's context,
/// EstablisherFrame the frame's establisher, ContextPointers (optional) the stack slots the
/// nonvolatile registers were restored from; returns the frame's language handler (and its
/// HandlerData) when HandlerType asks for one and ControlPc is in the body, else NULL. An image
/// base, PC or function entry that is not the driver image's → InvalidParameter, NULL, nothing
/// changed. Any IRQL.
#[allow(clippy::too_many_arguments)]
extern "win64" fn rtl_virtual_unwind(
    handler_type: u32,
    image_base: u64,
    control_pc: u64,
    function_entry: usize,
    context: *mut Context,
    handler_data: *mut usize,
    establisher_frame: *mut u64,
    context_pointers: *mut unwind::ContextPointers,
) -> usize {
    const FUNCTION: &str = "RtlVirtualUnwind";
    calls(FUNCTION, 31);
    let Some(image) = Image::current() else { return 0 };
    if image_base != image.base as u64 || !image.contains(control_pc) {
        invalid(FUNCTION, "ImageBase and ControlPc must be the driver image's (fltemu has unwind data for no other module)");
        return 0;
    }
    let Some(function) = image.entry_at(function_entry) else {
        invalid(FUNCTION, "FunctionEntry is not one of the image's .pdata entries (RtlLookupFunctionEntry's result)");
        return 0;
    };
    if context.is_null() || handler_data.is_null() || establisher_frame.is_null() {
        invalid(FUNCTION, "ContextRecord, HandlerData and EstablisherFrame are required");
        return 0;
    }
    // SAFETY: the caller's CONTEXT (read unaligned: a driver's copy need not be aligned).
    let mut working = unsafe { context.read_unaligned() };
    working.rip = control_pc;
    let mut pointers = unwind::ContextPointers::default();
    #[allow(clippy::cast_possible_truncation)]
    let wanted = handler_type as u8 & (UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER);
    let Ok(frame) = unwind::virtual_unwind_recording(&image, &function, &mut working, wanted, &mut pointers) else {
        invalid(FUNCTION, "the function's unwind data is malformed");
        return 0;
    };
    // SAFETY: as above, the caller's CONTEXT.
    unsafe { context.write_unaligned(working) };
    // SAFETY: the caller's out parameter.
    unsafe { establisher_frame.write_unaligned(frame.establisher) };
    if !context_pointers.is_null() {
        // SAFETY: the caller's KNONVOLATILE_CONTEXT_POINTERS; only restored registers change.
        let mut given = unsafe { context_pointers.read_unaligned() };
        for (slot, found) in given.xmm.iter_mut().chain(given.integer.iter_mut()).zip(pointers.xmm.iter().chain(pointers.integer.iter())) {
            if *found != 0 {
                *slot = *found;
            }
        }
        // SAFETY: as above.
        unsafe { context_pointers.write_unaligned(given) };
    }
    match frame.handler {
        Some(handler) => {
            // SAFETY: the caller's out parameter.
            unsafe { handler_data.write_unaligned(handler.data) };
            handler.routine
        }
        None => 0,
    }
}

/// `RtlUnwindEx` (winnt.h): unwinds from its caller to the frame TargetFrame, calling every
/// frame's unwind handler on the way (`__finally` blocks run with AbnormalTermination),
/// EXCEPTION_TARGET_UNWIND at the target, then continues there at TargetIp with RAX =
/// ReturnValue (ContextRecord receives that context). No ExceptionRecord → one with
/// STATUS_UNWIND. TargetFrame NULL is an exit unwind (every frame, then the top of the driver's
/// frames: bug check 0x1E); a target below a frame's establisher, or an establisher misaligned
/// or outside the stack → STATUS_BAD_STACK raised (bug check 0x1E when nothing takes it);
/// STATUS_UNWIND_CONSOLIDATE (C++ frame consolidation) → InvalidParameter, unwound
/// plainly. Any IRQL. The caller's registers come from the assembly thunk.
extern "win64" fn rtl_unwind_ex(
    target_frame: u64,
    target_ip: u64,
    record: *mut ExceptionRecord,
    return_value: u64,
    context_record: *mut Context,
    _history_table: usize,
    caller: *const Context,
) {
    calls("RtlUnwindEx", 31);
    let origin = captured(caller);
    let mut own = ExceptionRecord::new(STATUS_UNWIND, 0, origin.rip, &[]);
    // SAFETY: the caller's EXCEPTION_RECORD when given (RtlUnwindEx updates its flags in place).
    let record = if record.is_null() { &mut own } else { unsafe { &mut *record } };
    if record.code == STATUS_UNWIND_CONSOLIDATE {
        invalid("RtlUnwindEx", "STATUS_UNWIND_CONSOLIDATE (C++ frame consolidation) is not modelled: unwound as a plain unwind");
    }
    let start = UnwindStart { origin: &raw const origin, base: active_len(), by_handler: false };
    unwind_walk(start, target_frame, target_ip, record, return_value, context_record)
}

core::arch::global_asm!(
    // RtlUnwindEx's six arguments (two on the stack) plus the caller's registers, captured into
    // a CONTEXT at RSP + 0x40 of this frame, as a seventh.
    ".globl fltemu_rtl_unwind_ex_thunk",
    "fltemu_rtl_unwind_ex_thunk:",
    "sub rsp, 0x518",
    "mov [rsp + 0xB8], rax",
    "mov [rsp + 0xC0], rcx",
    "mov [rsp + 0xC8], rdx",
    "mov [rsp + 0xD0], rbx",
    "lea rax, [rsp + 0x520]",
    "mov [rsp + 0xD8], rax",
    "mov [rsp + 0xE0], rbp",
    "mov [rsp + 0xE8], rsi",
    "mov [rsp + 0xF0], rdi",
    "mov [rsp + 0xF8], r8",
    "mov [rsp + 0x100], r9",
    "mov [rsp + 0x108], r10",
    "mov [rsp + 0x110], r11",
    "mov [rsp + 0x118], r12",
    "mov [rsp + 0x120], r13",
    "mov [rsp + 0x128], r14",
    "mov [rsp + 0x130], r15",
    "mov rax, [rsp + 0x518]",
    "mov [rsp + 0x138], rax",
    "stmxcsr [rsp + 0x74]",
    "movdqa [rsp + 0x1E0], xmm0",
    "movdqa [rsp + 0x1F0], xmm1",
    "movdqa [rsp + 0x200], xmm2",
    "movdqa [rsp + 0x210], xmm3",
    "movdqa [rsp + 0x220], xmm4",
    "movdqa [rsp + 0x230], xmm5",
    "movdqa [rsp + 0x240], xmm6",
    "movdqa [rsp + 0x250], xmm7",
    "movdqa [rsp + 0x260], xmm8",
    "movdqa [rsp + 0x270], xmm9",
    "movdqa [rsp + 0x280], xmm10",
    "movdqa [rsp + 0x290], xmm11",
    "movdqa [rsp + 0x2A0], xmm12",
    "movdqa [rsp + 0x2B0], xmm13",
    "movdqa [rsp + 0x2C0], xmm14",
    "movdqa [rsp + 0x2D0], xmm15",
    "mov rax, [rsp + 0x540]",
    "mov [rsp + 0x20], rax",
    "mov rax, [rsp + 0x548]",
    "mov [rsp + 0x28], rax",
    "lea rax, [rsp + 0x40]",
    "mov [rsp + 0x30], rax",
    "call {target}",
    "add rsp, 0x518",
    "ret",
    target = sym rtl_unwind_ex,
);

unsafe extern "C" {
    fn fltemu_rtl_capture_context();
    fn fltemu_rtl_unwind_ex_thunk();
}

/// Generates a raise thunk: captures the caller's integer and XMM registers into a CONTEXT on
/// its own frame (RIP = the return address, RSP = the caller's), then calls `$target` with the
/// first three arguments unchanged and the CONTEXT as the fourth, and returns normally if it
/// does.
macro_rules! capture_thunk {
    ($name:literal, $target:path) => {
        core::arch::global_asm!(
            concat!(".globl ", $name),
            concat!($name, ":"),
            "sub rsp, 0x4F8",
            "mov [rsp + 0x98], rax",
            "mov [rsp + 0xA0], rcx",
            "mov [rsp + 0xA8], rdx",
            "mov [rsp + 0xB0], rbx",
            "lea rax, [rsp + 0x500]",
            "mov [rsp + 0xB8], rax",
            "mov [rsp + 0xC0], rbp",
            "mov [rsp + 0xC8], rsi",
            "mov [rsp + 0xD0], rdi",
            "mov [rsp + 0xD8], r8",
            "mov [rsp + 0xE0], r9",
            "mov [rsp + 0xE8], r10",
            "mov [rsp + 0xF0], r11",
            "mov [rsp + 0xF8], r12",
            "mov [rsp + 0x100], r13",
            "mov [rsp + 0x108], r14",
            "mov [rsp + 0x110], r15",
            "mov rax, [rsp + 0x4F8]",
            "mov [rsp + 0x118], rax",
            "stmxcsr [rsp + 0x54]",
            "movdqa [rsp + 0x1C0], xmm0",
            "movdqa [rsp + 0x1D0], xmm1",
            "movdqa [rsp + 0x1E0], xmm2",
            "movdqa [rsp + 0x1F0], xmm3",
            "movdqa [rsp + 0x200], xmm4",
            "movdqa [rsp + 0x210], xmm5",
            "movdqa [rsp + 0x220], xmm6",
            "movdqa [rsp + 0x230], xmm7",
            "movdqa [rsp + 0x240], xmm8",
            "movdqa [rsp + 0x250], xmm9",
            "movdqa [rsp + 0x260], xmm10",
            "movdqa [rsp + 0x270], xmm11",
            "movdqa [rsp + 0x280], xmm12",
            "movdqa [rsp + 0x290], xmm13",
            "movdqa [rsp + 0x2A0], xmm14",
            "movdqa [rsp + 0x2B0], xmm15",
            "lea r9, [rsp + 0x20]",
            "call {target}",
            "add rsp, 0x4F8",
            "ret",
            target = sym $target,
        );
    };
}

capture_thunk!("fltemu_ex_raise_status_thunk", ex_raise_status);
capture_thunk!("fltemu_probe_for_read_thunk", probe_for_read);
capture_thunk!("fltemu_probe_for_write_thunk", probe_for_write);
capture_thunk!("fltemu_mm_probe_and_lock_pages_thunk", mm_probe_and_lock_pages);

unsafe extern "C" {
    fn fltemu_ex_raise_status_thunk();
    fn fltemu_probe_for_read_thunk();
    fn fltemu_probe_for_write_thunk();
    fn fltemu_mm_probe_and_lock_pages_thunk();
}

/// An emulated routine's access to the NULL region through a driver's pointer (`wcslen(NULL)`,
/// RtlCopyUnicodeString into a NULL string): on Windows the kernel routine's load or store
/// faults, and the access violation (parameters 0 read / 1 write, and the address) is
/// dispatched from the routine's frames into the driver's. fltemu does not unwind its own
/// frames (as for an exception that would leave a callback through an export, see
/// [`reached_top`]), so the exception is not handled: bug check 0x1E with the exception's code
/// and parameters. The exception address (parameter 2) is 0: the faulting instruction would be
/// the routine's, which fltemu does not have as a driver-visible address.
pub(crate) fn export_access_violation(address: usize, write: bool) -> ! {
    let access = if write { "writing" } else { "reading" };
    debug_line(format!(
        "fltemu: access violation {access} {address:#x} inside an emulated kernel routine, through a NULL pointer from the \
         driver: on Windows it is dispatched from the routine's frames into the driver's (a __try around the call \
         could handle it); fltemu does not unwind its own frames, so it ends the run as not handled"
    ));
    let record = ExceptionRecord::new(STATUS_ACCESS_VIOLATION, 0, 0, &[u64::from(write), address as u64]);
    not_handled(Image::current().as_ref(), &record)
}

// ---- faults in driver code -----------------------------------------------------------------

/// `PAGE_FAULT_IN_NONPAGED_AREA`.
pub const PAGE_FAULT_IN_NONPAGED_AREA: u32 = 0x50;
/// Addresses below this are the NULL region of the user half (never mapped), so a fault there
/// is an ordinary access violation.
pub(crate) const NULL_REGION: usize = 0x1_0000;

/// How a redirected fault reached the dispatcher.
const TRAP_PAGE_FAULT: u64 = 0;
/// A fault that is not a page fault (divide error, invalid opcode, breakpoint, a general
/// protection fault raised as an access violation).
const TRAP_OTHER: u64 = 1;
/// `int 0x29`: a fast fail.
const TRAP_FAST_FAIL: u64 = 2;
/// A divide error on a DIV/IDIV: [`fault_entry`] tells a divide by zero from an overflow (it
/// may take locks to bound the operand read, which the signal handler may not).
const TRAP_DIVIDE: u64 = 3;

/// Where a redirected fault starts, on the faulting thread's stack. A page fault on an address
/// that is neither user memory nor the NULL region is invalid system memory, which Windows does
/// not dispatch as an exception at all ("Bug Check 0x50": it cannot be protected by try-except);
/// a fast fail is not dispatched either (bug check 0x139).
extern "sysv64" fn fault_entry(record: *const ExceptionRecord, context: *const Context, kind: u64) -> ! {
    // SAFETY: the signal handler wrote both below the faulting RSP, above this frame.
    let record = unsafe { *record };
    // SAFETY: as above.
    let context = unsafe { *context };
    if kind == TRAP_FAST_FAIL {
        fast_fail(&record, &context);
    }
    let mut record = record;
    if kind == TRAP_DIVIDE
        && let Some(image) = Image::current()
    {
        let code = |at: u64| code_byte(&image, at);
        let read = |at: u64, size: usize| divide_operand(at, size);
        record.code = divide_status(&code, &read, &context);
    }
    let address = record.information[1];
    let user = crate::state::current().is_some_and(|inner| usize::try_from(address).is_ok_and(|a| inner.user.contains(a)));
    if kind == TRAP_PAGE_FAULT && !user && address >= NULL_REGION as u64 {
        // Parameter 2 on x64 since Windows 10 1507: 0 read, 2 write, 0x10 execute.
        let operation = match record.information[0] {
            1 => 2,
            8 => 0x10,
            _ => 0,
        };
        if let Some(inner) = crate::state::current() {
            let place = exec::image_rva(usize::try_from(record.address).unwrap_or(0))
                .map_or_else(|| format!("{:#x}", record.address), |rva| format!("image RVA {rva:#x}"));
            inner.debug.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(format!(
                "fltemu: PAGE_FAULT_IN_NONPAGED_AREA: {address:#x} (not user memory) referenced at {place}; __try cannot catch it"
            ));
        }
        #[allow(clippy::cast_possible_truncation)]
        exec::bug_check(PAGE_FAULT_IN_NONPAGED_AREA, [address as usize, operation, record.address as usize, 0]);
    }
    dispatch(record, &context)
}

core::arch::global_asm!(
    // memcpy / memmove / memset as leaf routines that never touch the stack and keep RDI/RSI in
    // R9/R10 while they run: a fault inside them is dispatched from the driver's call site,
    // as Windows dispatches a fault in nt!memcpy through memcpy's own unwind data.
    ".globl fltemu_leaf_start",
    "fltemu_leaf_start:",
    ".globl fltemu_memcpy",
    "fltemu_memcpy:",
    "mov r9, rdi",
    "mov r10, rsi",
    "mov rax, rcx",
    "mov rdi, rcx",
    "mov rsi, rdx",
    "mov rcx, r8",
    "rep movsb",
    "mov rdi, r9",
    "mov rsi, r10",
    "ret",
    ".globl fltemu_memmove",
    "fltemu_memmove:",
    "mov r9, rdi",
    "mov r10, rsi",
    "mov rax, rcx",
    "mov rdi, rcx",
    "mov rsi, rdx",
    "mov rcx, r8",
    "cmp rdi, rsi",
    "jbe 2f",
    "lea r11, [rsi + rcx]",
    "cmp rdi, r11",
    "jae 2f",
    "lea rdi, [rdi + rcx - 1]",
    "lea rsi, [rsi + rcx - 1]",
    "std",
    "rep movsb",
    "cld",
    "jmp 3f",
    "2:",
    "rep movsb",
    "3:",
    "mov rdi, r9",
    "mov rsi, r10",
    "ret",
    ".globl fltemu_memset",
    "fltemu_memset:",
    "mov r9, rdi",
    "mov r11, rcx",
    "mov eax, edx",
    "mov rdi, rcx",
    "mov rcx, r8",
    "rep stosb",
    "mov rax, r11",
    "mov rdi, r9",
    "ret",
    ".globl fltemu_leaf_end",
    "fltemu_leaf_end:",
);

unsafe extern "C" {
    fn fltemu_leaf_start();
    fn fltemu_leaf_end();
    fn fltemu_memcpy();
    fn fltemu_memmove();
    fn fltemu_memset();
}

thread_local! {
    /// The lowest usable address of this driver thread's stack (0: unknown, never redirect).
    static STACK_LOW: Cell<usize> = const { Cell::new(0) };
    /// One past the highest address of this driver thread's stack.
    static STACK_HIGH: Cell<usize> = const { Cell::new(0) };
}

/// Stack the dispatcher needs below the redirected frame (its CONTEXT copies and handler calls).
const DISPATCH_STACK: usize = 64 * 1024;

/// Records the current thread's stack bounds, so a fault is only redirected when the dispatcher
/// has room to run (called by each driver worker thread when it starts).
pub fn note_stack_bounds() {
    // SAFETY: a zeroed pthread_attr_t is what pthread_getattr_np initialises.
    let mut attributes: libc::pthread_attr_t = unsafe { core::mem::zeroed() };
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    // SAFETY: queries the calling thread's own attributes into the local.
    if unsafe { libc::pthread_getattr_np(me, &raw mut attributes) } != 0 {
        return;
    }
    let mut low: *mut libc::c_void = core::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: reads the stack range from the attributes just filled.
    let found = unsafe { libc::pthread_attr_getstack(&raw const attributes, &raw mut low, &raw mut size) } == 0;
    // SAFETY: releases the attributes pthread_getattr_np initialised.
    unsafe { libc::pthread_attr_destroy(&raw mut attributes) };
    if found {
        // The guard page(s) lie at the low end; one page is left for them.
        STACK_LOW.with(|c| c.set(low as usize + 4096));
        STACK_HIGH.with(|c| c.set(low as usize + size));
        unwind::set_thread_stack(low as usize + 4096, low as usize + size);
    }
}

/// Space left untouched below the faulting RSP before the redirected frame (the faulting
/// function's outgoing area, and room for the restore's return slot).
const REDIRECT_GAP: usize = 256;

/// `SI_KERNEL`: a SIGSEGV the kernel raised for a general-protection fault (no faulting
/// address), or a SIGTRAP for `int3`.
const SI_KERNEL: i32 = 0x80;
/// `TRAP_BRKPT`: a SIGTRAP for a software breakpoint as valgrind reports `int3` (siginfo.h).
const TRAP_BRKPT: i32 = 1;
/// `BREAKPOINT_BREAK`, ExceptionInformation[0] of an `int3`'s STATUS_BREAKPOINT.
const BREAKPOINT_BREAK: u64 = 0;

/// Reads the driver's code byte at `address`, if it lies in the image.
fn code_byte(image: &Image, address: u64) -> Option<u8> {
    // SAFETY: inside the mapped image, whose sections are all readable.
    image.contains(address).then(|| unsafe { (address as *const u8).read() })
}

/// Skips the prefixes at `rip`: (REX byte or 0, operand-size prefix seen, address-size prefix
/// seen, segment FS/GS seen, address of the opcode). A REX prefix only counts when it is the last
/// prefix before the opcode: the processor ignores one that a legacy prefix follows (Intel SDM
/// vol. 2, 2.2.1 "REX Prefixes"), so `48 66 F7 F1` is `div cx`, not `div rcx`.
fn prefixes(code: &dyn Fn(u64) -> Option<u8>, rip: u64) -> Option<(u8, bool, bool, bool, u64)> {
    let (mut at, mut operand16, mut address32, mut segment, mut rex) = (rip, false, false, false, 0);
    // An instruction is at most 15 bytes, the opcode and ModRM among them.
    for _ in 0..14 {
        match code(at)? {
            0x66 => operand16 = true,
            0x67 => address32 = true,
            0x64 | 0x65 => segment = true,
            0x26 | 0x2E | 0x36 | 0x3E | 0xF0 | 0xF2 | 0xF3 => {}
            byte @ 0x40..=0x4F => {
                rex = byte;
                at += 1;
                continue;
            }
            _ => return Some((rex, operand16, address32, segment, at)),
        }
        // A legacy prefix after a REX: that REX is ignored.
        rex = 0;
        at += 1;
    }
    None
}

/// True when the instruction at `rip` is a DIV or IDIV (F6/F7 with ModRM reg 6 or 7), the only
/// instructions that raise #DE in 64-bit mode.
fn divide_at(code: &dyn Fn(u64) -> Option<u8>, rip: u64) -> bool {
    let Some((_, _, _, _, opcode_at)) = prefixes(code, rip) else { return false };
    matches!(code(opcode_at), Some(0xF6 | 0xF7)) && code(opcode_at + 1).is_some_and(|modrm| matches!((modrm >> 3) & 7, 6 | 7))
}

/// The status of a divide error at `rip`: a DIV/IDIV whose divisor is not zero overflowed its
/// quotient (STATUS_INTEGER_OVERFLOW), else STATUS_INTEGER_DIVIDE_BY_ZERO, as the x64 kernel's
/// KiOp_Div decides (the processor raises #DE for both). `read` fetches a memory operand.
fn divide_status(code: &dyn Fn(u64) -> Option<u8>, read: &dyn Fn(u64, usize) -> Option<u64>, context: &Context) -> i32 {
    let zero = STATUS_INTEGER_DIVIDE_BY_ZERO;
    let Some((rex, operand16, address32, segment, opcode_at)) = prefixes(code, context.rip) else { return zero };
    let (Some(opcode @ (0xF6 | 0xF7)), Some(modrm)) = (code(opcode_at), code(opcode_at + 1)) else { return zero };
    let (mode, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
    if reg != 6 && reg != 7 {
        return zero;
    }
    let size = match (opcode, rex & 8 != 0, operand16) {
        (0xF6, _, _) => 1,
        (_, true, _) => 8,
        (_, false, true) => 2,
        _ => 4,
    };
    let mask = |value: u64| if size == 8 { value } else { value & ((1u64 << (size * 8)) - 1) };
    let register = |index: u8| context.gpr[usize::from(index)];
    let divisor = if mode == 3 {
        let index = rm | ((rex & 1) << 3);
        if size == 1 && rex == 0 && (4..8).contains(&rm) {
            (register(rm - 4) >> 8) & 0xFF // AH, CH, DH, BH
        } else {
            mask(register(index))
        }
    } else {
        if segment {
            return zero; // an FS/GS-relative operand: its base is not in the context
        }
        let mut at = opcode_at + 2;
        let mut address = 0u64;
        let mut rip_relative = false;
        if rm == 4 {
            let Some(sib) = code(at) else { return zero };
            at += 1;
            let (scale, index, base) = (sib >> 6, ((sib >> 3) & 7) | ((rex & 2) << 2), (sib & 7) | ((rex & 1) << 3));
            if index != 4 {
                address = address.wrapping_add(register(index) << scale);
            }
            if sib & 7 == 5 && mode == 0 {
                let Some(displacement) = (0..4).try_fold(0u32, |acc, i| code(at + i).map(|b| acc | (u32::from(b) << (8 * i)))) else {
                    return zero;
                };
                at += 4;
                address = address.wrapping_add_signed(i64::from(displacement.cast_signed()));
            } else {
                address = address.wrapping_add(register(base));
            }
        } else if mode == 0 && rm == 5 {
            rip_relative = true;
        } else {
            address = register(rm | ((rex & 1) << 3));
        }
        let displacement: i64 = match (mode, rm, rip_relative) {
            (1, _, _) => {
                let Some(byte) = code(at) else { return zero };
                at += 1;
                i64::from(byte.cast_signed())
            }
            (2, _, _) | (0, _, true) => {
                let Some(value) = (0..4).try_fold(0u32, |acc, i| code(at + i).map(|b| acc | (u32::from(b) << (8 * i)))) else {
                    return zero;
                };
                at += 4;
                i64::from(value.cast_signed())
            }
            _ => 0,
        };
        address = address.wrapping_add_signed(displacement);
        if rip_relative {
            address = address.wrapping_add(at); // relative to the next instruction (DIV has no immediate)
        }
        if address32 {
            address &= 0xFFFF_FFFF;
        }
        let Some(value) = read(address, size) else { return zero };
        mask(value)
    };
    if divisor == 0 { zero } else { STATUS_INTEGER_OVERFLOW }
}

/// Reads the `size`-byte memory operand of a DIV/IDIV at `address` (computed from the trap's
/// registers, which valgrind can report stale) through `process_vm_readv`, which fails on an
/// unmapped or inaccessible page instead of faulting: pool, the image, stacks and user buffers
/// are all read, and an address nothing maps gives `None` (the caller then reports
/// STATUS_INTEGER_DIVIDE_BY_ZERO).
fn divide_operand(address: u64, size: usize) -> Option<u64> {
    let start = usize::try_from(address).ok()?;
    start.checked_add(size)?;
    let bytes = crate::rw::copy_from(start, size)?;
    Some(bytes.iter().rev().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// True when the instruction at `rip` is one user mode may not execute (a general-protection
/// fault on Linux) but kernel code may: CLI/STI, IN/OUT, HLT, control/debug register moves,
/// MSRs, descriptor tables (the x64 kernel's list of privileged opcodes), or `int n`.
fn privileged(code: &dyn Fn(u64) -> Option<u8>, rip: u64) -> bool {
    let Some((_, _, _, _, at)) = prefixes(code, rip) else { return false };
    match code(at) {
        Some(0xFA | 0xFB | 0xE4..=0xE7 | 0xEC..=0xEF | 0x6C..=0x6F | 0xF4 | 0xCD) => true,
        Some(0x0F) => matches!(code(at + 1), Some(0x00 | 0x01 | 0x06 | 0x07 | 0x08 | 0x09 | 0x20..=0x23 | 0x30..=0x33 | 0x35)),
        _ => false,
    }
}

/// The CONTEXT of a trapped driver thread from its signal frame: `rip`/`rsp` as the exception
/// sees them (a leaf routine's caller), integer and XMM registers, MXCSR and flags.
fn signal_context(ucontext: *mut libc::ucontext_t, rip: u64, rsp: u64, leaf: bool) -> Context {
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    let saved = unsafe { (*ucontext).uc_mcontext.gregs };
    let register = |index: i32| saved[usize::try_from(index).unwrap_or(0)].cast_unsigned();
    let mut context = Context::zeroed();
    let order = [
        libc::REG_RAX,
        libc::REG_RCX,
        libc::REG_RDX,
        libc::REG_RBX,
        libc::REG_RSP,
        libc::REG_RBP,
        libc::REG_RSI,
        libc::REG_RDI,
        libc::REG_R8,
        libc::REG_R9,
        libc::REG_R10,
        libc::REG_R11,
        libc::REG_R12,
        libc::REG_R13,
        libc::REG_R14,
        libc::REG_R15,
    ];
    for (slot, index) in context.gpr.iter_mut().zip(order) {
        *slot = register(index);
    }
    context.gpr[RSP] = rsp;
    if leaf {
        // The leaf routines park the caller's RDI and RSI in R9 and R10.
        context.gpr[RDI] = register(libc::REG_R9);
        context.gpr[RSI] = register(libc::REG_R10);
    }
    context.rip = rip;
    #[allow(clippy::cast_possible_truncation)]
    {
        context.eflags = register(libc::REG_EFL) as u32;
    }
    // SAFETY: reading the fpregs pointer of the valid ucontext.
    let fpregs = unsafe { (*ucontext).uc_mcontext.fpregs };
    if !fpregs.is_null() {
        // SAFETY: the kernel points fpregs at the saved FXSAVE area of this signal frame.
        let fp = unsafe { &*fpregs };
        context.mx_csr = fp.mxcsr;
        for (slot, xmm) in context.xmm.iter_mut().zip(fp._xmm.iter()) {
            let e = xmm.element;
            *slot = u128::from(e[0]) | (u128::from(e[1]) << 32) | (u128::from(e[2]) << 64) | (u128::from(e[3]) << 96);
        }
    }
    context
}

/// The x64 trap a synchronous signal on a driver thread stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trap {
    /// A page fault (SIGSEGV/SIGBUS on a memory access).
    PageFault,
    /// A general-protection fault (SIGSEGV with SI_KERNEL) that is none of the cases below.
    GeneralProtection,
    /// `int 0x29` (`__fastfail`).
    FastFail,
    /// `int 0x2c` (NT_ASSERT).
    Assertion,
    /// An instruction kernel code may execute but a Linux process may not.
    Privileged,
    /// A divide error (SIGFPE).
    DivideError,
    /// An invalid opcode (SIGILL).
    InvalidOpcode,
    /// `int3` (SIGTRAP).
    Breakpoint,
}

/// What trap `signal` (with `si_code`, at `rip`: the faulting instruction, or a leaf routine's
/// caller when `leaf`; `error` the page-fault error code) stands for, and the address the
/// exception is raised at; `None` when it is no trap of driver code fltemu models (a single
/// step, a hardware breakpoint). `code` reads the image's bytes.
fn classify(signal: i32, si_code: i32, rip: u64, leaf: bool, error: u64, code: &dyn Fn(u64) -> Option<u8>) -> Option<(Trap, u64)> {
    if signal == libc::SIGTRAP {
        // The trap leaves RIP after the int3; the kernel puts the exception (and RIP) on it.
        // Linux reports int3 with SI_KERNEL, valgrind with TRAP_BRKPT (as for a hardware
        // breakpoint, so the byte before RIP must be the int3).
        let at = rip.wrapping_sub(1);
        let int3 = si_code == SI_KERNEL || si_code == TRAP_BRKPT && code(at) == Some(0xCC);
        return int3.then_some((Trap::Breakpoint, at)); // else a single step or hardware breakpoint
    }
    let page_fault = matches!(signal, libc::SIGSEGV | libc::SIGBUS) && !(signal == libc::SIGSEGV && si_code == SI_KERNEL);
    // `int 0x29` / `int 0x2c` are a general-protection fault on Linux, SIGILL under valgrind:
    // whatever the signal, the bytes decide, so a fast fail is never dispatched to handlers.
    // Only an instruction fetch from a page that holds those bytes as data is a page fault.
    let fetch_fault = page_fault && error & 0x10 != 0;
    if !leaf && !fetch_fault && matches!(signal, libc::SIGSEGV | libc::SIGBUS | libc::SIGILL) && code(rip) == Some(0xCD) {
        match code(rip.wrapping_add(1)) {
            Some(0x29) => return Some((Trap::FastFail, rip)),
            Some(0x2C) => return Some((Trap::Assertion, rip)),
            _ => {}
        }
    }
    let trap = match signal {
        libc::SIGSEGV | libc::SIGBUS if page_fault => Trap::PageFault,
        libc::SIGSEGV if !leaf && privileged(code, rip) => Trap::Privileged,
        libc::SIGSEGV => Trap::GeneralProtection,
        libc::SIGFPE => Trap::DivideError,
        libc::SIGILL => Trap::InvalidOpcode,
        _ => return None,
    };
    Some((trap, rip))
}

/// Called by the fault-signal handler on a driver thread: when the faulting instruction is in
/// the driver image, rewrites the signal context so the thread, on return from the handler,
/// calls [`dispatch`] with the exception Windows raises for that trap:
/// - a page fault (SIGSEGV/SIGBUS): STATUS_ACCESS_VIOLATION, ExceptionInformation 0 read / 1
///   write / 8 execute, then the address;
/// - a general-protection fault (SIGSEGV with SI_KERNEL, e.g. a non-canonical address):
///   STATUS_ACCESS_VIOLATION with (0, 0xFFFF'FFFF'FFFF'FFFF), as KiPreprocessFault raises it;
///   `int 0x29` (__fastfail) is bug check 0x139 instead, `int 0x2c` (NT_ASSERT)
///   STATUS_ASSERTION_FAILURE at the int, and a privileged instruction (which kernel code may
///   execute) is not redirected;
/// - a divide error (SIGFPE, trap 0): STATUS_INTEGER_DIVIDE_BY_ZERO, or STATUS_INTEGER_OVERFLOW
///   when the divisor is not zero;
/// - an invalid opcode (SIGILL, `ud2`): STATUS_ILLEGAL_INSTRUCTION;
/// - `int3` (SIGTRAP with SI_KERNEL, or TRAP_BRKPT after a 0xCC as valgrind reports it):
///   STATUS_BREAKPOINT at the `int3` (BREAKPOINT_BREAK), RIP back on it;
/// - `int 0x29` / `int 0x2c` are told by their bytes whether they arrive as SIGSEGV or SIGILL.
///
/// A signal a process sent (kill, tgkill, sigqueue: `si_code` ≤ 0) is never redirected: no
/// instruction faulted. Async-signal-safe: plain reads and writes only.
pub fn redirect_fault(signal: i32, si_code: i32, address: usize, ucontext: *mut libc::ucontext_t) -> bool {
    let Some(image) = Image::current() else { return false };
    if exec::sent_by_a_process(si_code) {
        return false; // kill/tgkill/sigqueue: no instruction faulted
    }
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    let gregs = unsafe { &mut (*ucontext).uc_mcontext.gregs };
    let saved = *gregs;
    let register = |index: i32| saved[usize::try_from(index).unwrap_or(0)].cast_unsigned();
    let mut rip = register(libc::REG_RIP);
    let mut rsp = register(libc::REG_RSP);
    let fault_rip = rip;
    let leaf = matches!(signal, libc::SIGSEGV | libc::SIGBUS)
        && (fltemu_leaf_start as *const () as u64..fltemu_leaf_end as *const () as u64).contains(&rip);
    if leaf {
        // A leaf routine pushed nothing: its caller's frame is one return address up.
        // SAFETY: RSP of a thread inside a leaf routine points at its return address (read
        // unaligned: the driver's RSP, which a broken caller may have misaligned).
        rip = unsafe { (rsp as *const u64).read_unaligned() };
        rsp += 8;
    }
    let error = register(libc::REG_ERR);
    let code = |at: u64| code_byte(&image, at);
    let Some((trap, rip)) = classify(signal, si_code, rip, leaf, error, &code) else { return false };
    if !image.contains(rip) {
        return false;
    }
    let low = STACK_LOW.with(Cell::get);
    if low == 0 {
        return false; // not a driver worker thread with known stack bounds
    }
    #[allow(clippy::cast_possible_truncation)]
    let rsp_usize = rsp as usize;
    // Lay out [return slot][record][context] below the faulting RSP, 16-aligned (RSP is the
    // driver's: every step is overflow-checked).
    let layout = rsp_usize.checked_sub(REDIRECT_GAP + size_of::<Context>()).map(|at| at & !15).and_then(|context_at| {
        let record_at = context_at.checked_sub(size_of::<ExceptionRecord>())? & !15;
        Some((context_at, record_at, record_at.checked_sub(8)?))
    });
    // The driver runs on this thread's stack (exec::stack_top is a depth measure sampled inside
    // driver_call, not a frame boundary, so the thread's own end is the bound).
    let high = STACK_HIGH.with(Cell::get);
    // A fault just below RSP is the stack itself running out.
    let overflow = trap == Trap::PageFault && address < rsp_usize.saturating_add(64) && address.saturating_add(0x1_0000) > rsp_usize;
    let room = layout.filter(|(_, _, frame)| rsp_usize <= high && *frame >= low + DISPATCH_STACK && !overflow);
    let Some((context_at, record_at, frame)) = room else {
        // RSP is outside the thread's stack, or too deep to dispatch on: on Windows the trap
        // cannot push its frame there, a double fault (bug check 0x7F, parameter 1 = 8). The
        // report runs on the low end of this thread's stack, below every live frame.
        let stack = ((low + DISPATCH_STACK / 2) & !15) - 8;
        // SAFETY: inside this thread's stack above its guard page, below the frames fltemu keeps
        // (the driver's are abandoned: the bug check parks the thread); a zero return address.
        unsafe { (stack as *mut u64).write(0) };
        let set = |gregs: &mut [i64; 23], index: i32, value: u64| gregs[usize::try_from(index).unwrap_or(0)] = value.cast_signed();
        set(gregs, libc::REG_RIP, bad_stack_entry as *const () as u64);
        set(gregs, libc::REG_RSP, stack as u64);
        set(gregs, libc::REG_RDI, rsp);
        set(gregs, libc::REG_RSI, rip);
        set(gregs, libc::REG_EFL, register(libc::REG_EFL) & !0x400);
        return true;
    };
    let context = signal_context(ucontext, rip, rsp, leaf);
    let (record, kind) = match trap {
        Trap::PageFault => {
            let access = if error & 0x10 != 0 { 8 } else { u64::from(error & 0x2 != 0) };
            (ExceptionRecord::new(STATUS_ACCESS_VIOLATION, 0, fault_rip, &[access, address as u64]), TRAP_PAGE_FAULT)
        }
        Trap::FastFail => {
            let record = ExceptionRecord::new(STATUS_STACK_BUFFER_OVERRUN, EXCEPTION_NONCONTINUABLE, rip, &[context.gpr[1]]);
            (record, TRAP_FAST_FAIL)
        }
        // NT_ASSERT's int 0x2c: the kernel turns the trap into a fault at the int
        // (KiRaiseAssertion) and dispatches STATUS_ASSERTION_FAILURE, no parameters.
        Trap::Assertion => (ExceptionRecord::new(STATUS_ASSERTION_FAILURE, 0, rip, &[]), TRAP_OTHER),
        Trap::Privileged => return false,
        Trap::GeneralProtection => (ExceptionRecord::new(STATUS_ACCESS_VIOLATION, 0, fault_rip, &[0, u64::MAX]), TRAP_OTHER),
        Trap::DivideError => {
            if register(libc::REG_TRAPNO) != 0 {
                return false; // an x87/SSE floating-point exception: not modelled
            }
            if !divide_at(&code, rip) {
                // Only DIV/IDIV raise #DE, so the signal context is not the trap's: valgrind's
                // default register-update mode leaves RIP and registers stale at a trap that is no
                // memory access. Dispatching from it would resume the driver with wrong registers.
                return false;
            }
            // fault_entry decides between divide by zero and overflow (it reads the operand).
            (ExceptionRecord::new(STATUS_INTEGER_DIVIDE_BY_ZERO, 0, rip, &[]), TRAP_DIVIDE)
        }
        Trap::InvalidOpcode => (ExceptionRecord::new(STATUS_ILLEGAL_INSTRUCTION, 0, rip, &[]), TRAP_OTHER),
        Trap::Breakpoint => (ExceptionRecord::new(STATUS_BREAKPOINT, 0, rip, &[BREAKPOINT_BREAK]), TRAP_OTHER),
    };
    // SAFETY: dead stack below the faulting RSP on the driver thread's own stack (Win64 has no
    // red zone); the fault is not a stack overflow (checked above).
    unsafe { (context_at as *mut Context).write(context) };
    // SAFETY: as above.
    unsafe { (record_at as *mut ExceptionRecord).write(record) };
    // SAFETY: as above: a zero return address (fault_entry never returns).
    unsafe { (frame as *mut u64).write(0) };
    let set = |gregs: &mut [i64; 23], index: i32, value: u64| gregs[usize::try_from(index).unwrap_or(0)] = value.cast_signed();
    set(gregs, libc::REG_RIP, fault_entry as *const () as u64);
    set(gregs, libc::REG_RSP, frame as u64);
    set(gregs, libc::REG_RDI, record_at as u64);
    set(gregs, libc::REG_RSI, context_at as u64);
    set(gregs, libc::REG_RDX, kind);
    // Clear the direction flag, as the ABI requires at a call.
    set(gregs, libc::REG_EFL, register(libc::REG_EFL) & !0x400);
    true
}

/// Where a fault whose RSP is outside the thread's stack (or leaves no room to dispatch) ends:
/// bug check 0x7F UNEXPECTED_KERNEL_MODE_TRAP with EXCEPTION_DOUBLE_FAULT, what Windows gives
/// when the processor cannot push the trap frame on the kernel stack ("Bug Check 0x7F": 8 is a
/// double fault, mostly a kernel stack overflow).
extern "sysv64" fn bad_stack_entry(rsp: u64, rip: u64) -> ! {
    debug_line(format!(
        "fltemu: UNEXPECTED_KERNEL_MODE_TRAP (double fault): a fault at {} with RSP {rsp:#x}, outside the thread's kernel stack or \
         with no room left on it for the trap frame",
        place(Image::current().as_ref(), rip)
    ));
    exec::bug_check(UNEXPECTED_KERNEL_MODE_TRAP, [EXCEPTION_DOUBLE_FAULT, 0, 0, 0])
}

/// A fast fail (`__fastfail`, `int 0x29`): never dispatched to handlers; in kernel mode the
/// system bug-checks with KERNEL_SECURITY_CHECK_FAILURE (parameters: the code, the trap frame,
/// the exception record, 0).
fn fast_fail(record: &ExceptionRecord, context: &Context) -> ! {
    debug_line(format!(
        "fltemu: KERNEL_SECURITY_CHECK_FAILURE: __fastfail({}) at {}; a fast fail is not dispatched to exception handlers",
        record.information[0],
        place(Image::current().as_ref(), record.address)
    ));
    #[allow(clippy::cast_possible_truncation)]
    exec::bug_check(KERNEL_SECURITY_CHECK_FAILURE, [record.information[0] as usize, &raw const *context as usize, &raw const *record as usize, 0])
}

/// The resolver for the exception exports.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "__C_specific_handler" => c_specific_handler as *const () as usize,
        "ExRaiseStatus" => fltemu_ex_raise_status_thunk as *const () as usize,
        "ProbeForRead" => fltemu_probe_for_read_thunk as *const () as usize,
        "ProbeForWrite" => fltemu_probe_for_write_thunk as *const () as usize,
        "RtlCaptureContext" => fltemu_rtl_capture_context as *const () as usize,
        "RtlLookupFunctionEntry" => rtl_lookup_function_entry as *const () as usize,
        "RtlVirtualUnwind" => rtl_virtual_unwind as *const () as usize,
        "RtlUnwindEx" => fltemu_rtl_unwind_ex_thunk as *const () as usize,
        "memcpy" => fltemu_memcpy as *const () as usize,
        "memmove" => fltemu_memmove as *const () as usize,
        "memset" => fltemu_memset as *const () as usize,
        _ => return None,
    })
}

/// The exception exports (ntoskrnl.exe).
/// (memcpy, memmove and memset are listed with the other ntoskrnl exports.)
pub const EXPORTS: &[&str] = &[
    "__C_specific_handler",
    "ExRaiseStatus",
    "ProbeForRead",
    "ProbeForWrite",
    "RtlCaptureContext",
    "RtlLookupFunctionEntry",
    "RtlVirtualUnwind",
    "RtlUnwindEx",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_export_resolves() {
        for name in EXPORTS.iter().chain(crate::gs::EXPORTS).chain(&["memcpy", "memmove", "memset"]) {
            assert!(resolve(name).or_else(|| crate::gs::resolve(name)).is_some(), "{name}");
        }
    }

    #[test]
    fn leaf_routines_copy_move_and_fill() {
        // SAFETY: the leaf routines follow the Win64 C signatures of memcpy/memmove/memset.
        let memmove = unsafe {
            core::mem::transmute::<usize, extern "win64" fn(*mut u8, *const u8, usize) -> *mut u8>(resolve("memmove").unwrap())
        };
        // SAFETY: as above.
        let memset = unsafe {
            core::mem::transmute::<usize, extern "win64" fn(*mut u8, i32, usize) -> *mut u8>(resolve("memset").unwrap())
        };
        // SAFETY: as above.
        let memcpy = unsafe {
            core::mem::transmute::<usize, extern "win64" fn(*mut u8, *const u8, usize) -> *mut u8>(resolve("memcpy").unwrap())
        };
        let mut bytes: Vec<u8> = (0..16).collect();
        let base = bytes.as_mut_ptr();
        // Overlapping forward move (destination above source) must copy backwards.
        assert_eq!(memmove(base.wrapping_add(4), base, 8), base.wrapping_add(4));
        assert_eq!(bytes, [0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 14, 15]);
        let base = bytes.as_mut_ptr();
        memmove(base, base.wrapping_add(2), 4);
        assert_eq!(&bytes[..6], &[2, 3, 0, 1, 0, 1]);
        let base = bytes.as_mut_ptr();
        assert_eq!(memset(base, 0x1AB, 3), base);
        assert_eq!(&bytes[..4], &[0xAB, 0xAB, 0xAB, 1]);
        let source = [9u8; 5];
        let base = bytes.as_mut_ptr();
        assert_eq!(memcpy(base.wrapping_add(10), source.as_ptr(), 5), base.wrapping_add(10));
        assert_eq!(&bytes[10..15], &[9; 5]);
    }

    fn decode(bytes: &[u8], context: &Context, memory: &[(u64, u64)]) -> i32 {
        let code = |at: u64| usize::try_from(at.wrapping_sub(0x1000)).ok().and_then(|i| bytes.get(i).copied());
        let read = |at: u64, size: usize| {
            memory.iter().find(|(address, _)| *address == at).map(|(_, value)| if size == 8 { *value } else { value & ((1 << (size * 8)) - 1) })
        };
        let mut context = *context;
        context.rip = 0x1000;
        divide_status(&code, &read, &context)
    }

    #[test]
    fn a_divide_error_with_a_non_zero_divisor_is_an_overflow() {
        let mut context = Context::zeroed();
        context.gpr[1] = 0; // ecx
        assert_eq!(decode(&[0xF7, 0xF9], &context, &[]), STATUS_INTEGER_DIVIDE_BY_ZERO, "idiv ecx, ecx = 0");
        context.gpr[1] = 0xFFFF_FFFF;
        assert_eq!(decode(&[0xF7, 0xF9], &context, &[]), STATUS_INTEGER_OVERFLOW, "idiv ecx, ecx = -1");
        context.gpr[1] = 0x1_0000_0000;
        assert_eq!(decode(&[0xF7, 0xF9], &context, &[]), STATUS_INTEGER_DIVIDE_BY_ZERO, "only ECX counts for a 32-bit divide");
        assert_eq!(decode(&[0x48, 0xF7, 0xF9], &context, &[]), STATUS_INTEGER_OVERFLOW, "REX.W: RCX counts");
        context.gpr[9] = 3;
        assert_eq!(decode(&[0x49, 0xF7, 0xF1], &context, &[]), STATUS_INTEGER_OVERFLOW, "div r9");
        context.gpr[3] = 0x0500;
        assert_eq!(decode(&[0xF6, 0xF7], &context, &[]), STATUS_INTEGER_OVERFLOW, "div bh (no REX: rm 7 is BH)");
        assert_eq!(decode(&[0x40, 0xF6, 0xF3], &context, &[]), STATUS_INTEGER_DIVIDE_BY_ZERO, "div bl with REX: BL is 0");
        // idiv dword ptr [rip + 0x10]: the operand is relative to the next instruction (6 bytes).
        assert_eq!(decode(&[0xF7, 0x3D, 0x10, 0, 0, 0], &context, &[(0x1016, 0)]), STATUS_INTEGER_DIVIDE_BY_ZERO);
        assert_eq!(decode(&[0xF7, 0x3D, 0x10, 0, 0, 0], &context, &[(0x1016, 7)]), STATUS_INTEGER_OVERFLOW);
        // div qword ptr [rsp + rbx*8 + 0x20]
        context.gpr[RSP] = 0x8000;
        context.gpr[3] = 2;
        assert_eq!(decode(&[0x48, 0xF7, 0x74, 0xDC, 0x20], &context, &[(0x8030, 9)]), STATUS_INTEGER_OVERFLOW);
        assert_eq!(decode(&[0x90], &context, &[]), STATUS_INTEGER_DIVIDE_BY_ZERO, "not a divide: the default");
        // The REX.W of `48 66 F7 F1` is ignored (a legacy prefix follows it): `div cx`, and only CX
        // counts; with the REX last it is `div rcx` (the 66 then only matters without REX.W).
        context.gpr[1] = 0x1_0000;
        assert_eq!(decode(&[0x48, 0x66, 0xF7, 0xF1], &context, &[]), STATUS_INTEGER_DIVIDE_BY_ZERO, "div cx, CX = 0");
        assert_eq!(decode(&[0x66, 0x48, 0xF7, 0xF1], &context, &[]), STATUS_INTEGER_OVERFLOW, "div rcx, RCX != 0");
        // A REX that a legacy prefix follows does not extend ModRM.rm either: F1 is CX, not R9.
        context.gpr[9] = 5;
        context.gpr[1] = 0;
        assert_eq!(decode(&[0x49, 0x2E, 0xF7, 0xF1], &context, &[]), STATUS_INTEGER_DIVIDE_BY_ZERO, "div ecx (REX.B ignored)");
    }

    #[test]
    fn a_divide_operand_is_read_only_where_memory_is_mapped_readable() {
        let pool = vec![0x11u8; 64].into_boxed_slice();
        let at = |address: usize| address as u64;
        assert_eq!(divide_operand(at(pool.as_ptr() as usize + 8), 4), Some(0x1111_1111), "heap memory, as pool");
        let stack = [0x22u8; 16];
        assert_eq!(divide_operand(at(stack.as_ptr() as usize), 8), Some(0x2222_2222_2222_2222));
        // An address nothing maps readable (a stale register under valgrind): not read. The old
        // unbounded read faulted in fltemu itself on the NULL page.
        assert_eq!(divide_operand(8, 4), None, "the NULL page");
        assert_eq!(divide_operand(u64::MAX - 1, 4), None, "wraps");
        // SAFETY: a fresh anonymous inaccessible page, owned by this test.
        let page = unsafe { libc::mmap(core::ptr::null_mut(), 4096, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        assert_ne!(page, libc::MAP_FAILED);
        assert_eq!(divide_operand(at(page as usize), 4), None, "a PROT_NONE page (a retired user buffer)");
        // SAFETY: unmaps the page mapped above.
        unsafe { libc::munmap(page, 4096) };
    }

    #[test]
    fn only_div_and_idiv_are_divide_errors() {
        let at = |bytes: &'static [u8]| move |address: u64| usize::try_from(address).ok().and_then(|i| bytes.get(i).copied());
        assert!(divide_at(&at(&[0xF7, 0xF9]), 0), "idiv ecx");
        assert!(divide_at(&at(&[0x49, 0xF7, 0xF1]), 0), "div r9");
        assert!(divide_at(&at(&[0x66, 0xF7, 0x3D, 0, 0, 0, 0]), 0), "idiv word ptr [rip]");
        assert!(!divide_at(&at(&[0xF7, 0xD9]), 0), "neg ecx (F7 /3)");
        assert!(!divide_at(&at(&[0x89, 0xC8]), 0), "mov eax, ecx: a stale RIP, as valgrind can report");
        assert!(divide_at(&at(&[0x48, 0x66, 0xF7, 0xF1]), 0), "div cx: a REX before a legacy prefix is ignored");
        assert!(divide_at(&at(&[0x2E, 0x48, 0xF7, 0xF1]), 0), "div rcx after a segment prefix");
        assert!(divide_at(&at(&[0x48, 0x48, 0xF7, 0xF1]), 0), "two REX prefixes: the last counts");
    }

    #[test]
    fn privileged_instructions_are_told_apart_from_a_general_protection_fault() {
        let at = |bytes: &'static [u8]| move |address: u64| usize::try_from(address).ok().and_then(|i| bytes.get(i).copied());
        assert!(privileged(&at(&[0xFA]), 0), "cli");
        assert!(privileged(&at(&[0x0F, 0x20, 0xC0]), 0), "mov rax, cr0");
        assert!(privileged(&at(&[0x44, 0x0F, 0x20, 0xC0]), 0), "mov rax, cr8");
        assert!(privileged(&at(&[0xCD, 0x2E]), 0), "int 0x2e");
        assert!(!privileged(&at(&[0x48, 0x8B, 0x00]), 0), "mov rax, [rax] (a non-canonical address)");
    }

    /// si_code values of siginfo.h (the libc crate does not name them all).
    const SEGV_MAPERR: i32 = 1;
    const SEGV_ACCERR: i32 = 2;
    const ILL_ILLOPN: i32 = 2;
    const TRAP_TRACE: i32 = 2;

    /// `classify` over code bytes at address 0x1000.
    fn trap(signal: i32, si_code: i32, rip: u64, bytes: &'static [u8]) -> Option<(Trap, u64)> {
        let code = move |at: u64| usize::try_from(at.wrapping_sub(0x1000)).ok().and_then(|i| bytes.get(i).copied());
        classify(signal, si_code, rip, false, 0, &code)
    }

    #[test]
    fn int3_is_a_breakpoint_on_the_int3_whether_linux_or_valgrind_reports_it() {
        assert_eq!(trap(libc::SIGTRAP, SI_KERNEL, 0x1001, &[0xCC]), Some((Trap::Breakpoint, 0x1000)), "Linux: SI_KERNEL");
        assert_eq!(trap(libc::SIGTRAP, TRAP_BRKPT, 0x1001, &[0xCC]), Some((Trap::Breakpoint, 0x1000)), "valgrind: TRAP_BRKPT");
        assert_eq!(trap(libc::SIGTRAP, TRAP_BRKPT, 0x1001, &[0x90]), None, "TRAP_BRKPT with no int3 before RIP (a hardware breakpoint)");
        assert_eq!(trap(libc::SIGTRAP, TRAP_TRACE, 0x1001, &[0xCC]), None, "a single step");
    }

    #[test]
    fn int_29_and_int_2c_are_recognised_by_their_bytes_however_the_signal_arrives() {
        for (signal, si_code) in [(libc::SIGSEGV, SI_KERNEL), (libc::SIGILL, ILL_ILLOPN), (libc::SIGSEGV, SEGV_MAPERR)] {
            assert_eq!(trap(signal, si_code, 0x1000, &[0xCD, 0x29]), Some((Trap::FastFail, 0x1000)), "{signal}/{si_code}: int 0x29");
            assert_eq!(trap(signal, si_code, 0x1000, &[0xCD, 0x2C]), Some((Trap::Assertion, 0x1000)), "{signal}/{si_code}: int 0x2c");
        }
        assert_eq!(trap(libc::SIGILL, ILL_ILLOPN, 0x1000, &[0x0F, 0x0B]), Some((Trap::InvalidOpcode, 0x1000)), "ud2");
        assert_eq!(trap(libc::SIGSEGV, SI_KERNEL, 0x1000, &[0xFA]), Some((Trap::Privileged, 0x1000)), "cli");
        assert_eq!(trap(libc::SIGSEGV, SI_KERNEL, 0x1000, &[0x48, 0x8B, 0x00]), Some((Trap::GeneralProtection, 0x1000)));
        assert_eq!(trap(libc::SIGSEGV, SEGV_MAPERR, 0x1000, &[0x48, 0x8B, 0x00]), Some((Trap::PageFault, 0x1000)));
        let code = |at: u64| [0xCD_u8, 0x29].get(usize::try_from(at.wrapping_sub(0x1000)).ok()?).copied();
        assert_eq!(
            classify(libc::SIGSEGV, SEGV_ACCERR, 0x1000, false, 0x10, &code),
            Some((Trap::PageFault, 0x1000)),
            "an instruction fetch from a non-executable page holding those bytes is a page fault"
        );
        assert_eq!(classify(libc::SIGSEGV, SEGV_MAPERR, 0x1000, true, 0x4, &code), Some((Trap::PageFault, 0x1000)), "a leaf's caller");
    }

    #[test]
    fn rtl_capture_context_reports_control_integer_segments_and_floating_point() {
        // SAFETY: RtlCaptureContext's Win64 signature; the CONTEXT is 16-byte aligned.
        let capture = unsafe { core::mem::transmute::<usize, extern "win64" fn(*mut Context)>(resolve("RtlCaptureContext").unwrap()) };
        let mut context = Context::zeroed();
        context.flags = 0;
        capture(&raw mut context);
        // CONTEXT_AMD64 | CONTEXT_CONTROL | CONTEXT_INTEGER | CONTEXT_SEGMENTS | CONTEXT_FLOATING_POINT;
        // not CONTEXT_DEBUG_REGISTERS (0x10): the debug registers are not captured.
        assert_eq!(context.flags, 0x0010_000F);
        assert_ne!(context.rip, 0, "the return address was captured");
    }

    #[test]
    fn records_are_laid_out_as_winnt_h() {
        assert_eq!(size_of::<ExceptionRecord>(), 152);
        assert_eq!(core::mem::offset_of!(ExceptionRecord, information), 32);
        assert_eq!(size_of::<DispatcherContext>(), 80);
    }
}
