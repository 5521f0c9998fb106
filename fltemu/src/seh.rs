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

const EXCEPTION_NONCONTINUABLE: u32 = 0x1;
const EXCEPTION_UNWINDING: u32 = 0x2;
const EXCEPTION_EXIT_UNWIND: u32 = 0x4;
const EXCEPTION_TARGET_UNWIND: u32 = 0x20;

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

thread_local! {
    /// The context the current dispatch started from (RtlUnwindEx unwinds from it: fltemu's
    /// own frames between the fault and the handler have no unwind data).
    static ORIGIN: Cell<*const Context> = const { Cell::new(core::ptr::null()) };
}

fn calls(function: &'static str, max_irql: u8) {
    if let Some(inner) = crate::state::current() {
        inner.enter(function, max_irql);
    }
}

/// Ends the run: nobody handled `record` (bug check 0x1E with the documented parameters).
fn not_handled(image: Option<&Image>, record: &ExceptionRecord) -> ! {
    if let Some(inner) = crate::state::current() {
        let place = match image {
            Some(image) if image.contains(record.address) => format!("image RVA {:#x}", image.rva(record.address)),
            _ => format!("{:#x} (outside the image)", record.address),
        };
        inner.debug.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(format!(
            "fltemu: KMODE_EXCEPTION_NOT_HANDLED: exception {:#010x} at {place} reached the top of the driver's frames",
            record.code.cast_unsigned()
        ));
    }
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

/// Dispatches `record` raised in `context` through the driver's exception handlers (never
/// returns: it resumes at a handler, continues execution, or bug-checks).
pub fn dispatch(mut record: ExceptionRecord, context: &Context) -> ! {
    let Some(image) = Image::current() else { not_handled(None, &record) };
    let mut original = *context;
    ORIGIN.with(|c| c.set(&raw const original));
    let mut walk = *context;
    for _ in 0..MAX_FRAMES {
        if !image.contains(walk.rip) {
            break;
        }
        let control_pc = walk.rip;
        let Ok((frame, function)) = unwind::step(&image, &mut walk, UNW_FLAG_EHANDLER) else { break };
        let (Some(handler), Some(function)) = (frame.handler, function) else { continue };
        let mut dispatcher = DispatcherContext {
            control_pc,
            image_base: image.base as u64,
            function_entry: function.entry_address,
            establisher_frame: frame.establisher,
            target_ip: 0,
            context_record: &raw mut original,
            language_handler: handler.routine,
            handler_data: handler.data,
            history_table: 0,
            scope_index: 0,
            fill: 0,
        };
        // SAFETY: the routine is the image's language handler for this frame (its unwind info
        // names it): __C_specific_handler (fltemu's) or one the driver links, Win64 ABI.
        let routine = unsafe { core::mem::transmute::<usize, LanguageHandler>(handler.routine) };
        // SAFETY: called as RtlDispatchException calls a language handler, with live records.
        let disposition = unsafe { routine(&raw mut record, frame.establisher, &raw mut original, &raw mut dispatcher) };
        match disposition {
            EXCEPTION_CONTINUE_EXECUTION_DISPOSITION => {
                if record.flags & EXCEPTION_NONCONTINUABLE != 0 {
                    let nested =
                        ExceptionRecord::new(STATUS_NONCONTINUABLE_EXCEPTION, EXCEPTION_NONCONTINUABLE, record.address, &[]);
                    not_handled(Some(&image), &nested);
                }
                unwind::restore(&original);
            }
            EXCEPTION_CONTINUE_SEARCH_DISPOSITION => {}
            _ => {
                let invalid = ExceptionRecord::new(STATUS_INVALID_DISPOSITION, EXCEPTION_NONCONTINUABLE, record.address, &[]);
                not_handled(Some(&image), &invalid);
            }
        }
    }
    not_handled(Some(&image), &record)
}

/// RtlUnwindEx for the target `target_frame`/`target_ip`: walks from the dispatch's original
/// context, calling each frame's unwind handler (termination handlers run), then resumes the
/// target frame at `target_ip` with RAX = `return_value`.
fn unwind_to(target_frame: u64, target_ip: u64, record: &mut ExceptionRecord, return_value: u64) -> ! {
    let Some(image) = Image::current() else { not_handled(None, record) };
    let origin = ORIGIN.with(Cell::get);
    if origin.is_null() {
        not_handled(Some(&image), record);
    }
    // SAFETY: ORIGIN points at the dispatch's `original`, in a frame below this one that stays
    // alive (dispatch never returns while a handler it called runs).
    let mut walk = unsafe { *origin };
    record.flags |= EXCEPTION_UNWINDING;
    for _ in 0..MAX_FRAMES {
        if !image.contains(walk.rip) {
            break;
        }
        let before = walk;
        let control_pc = walk.rip;
        let Ok((frame, function)) = unwind::step(&image, &mut walk, UNW_FLAG_UHANDLER) else { break };
        if frame.establisher > target_frame {
            break; // passed the target: it is not on this stack
        }
        let is_target = frame.establisher == target_frame;
        if is_target {
            record.flags |= EXCEPTION_TARGET_UNWIND;
        }
        if let (Some(handler), Some(function)) = (frame.handler, function) {
            let mut scratch = before;
            let mut dispatcher = DispatcherContext {
                control_pc,
                image_base: image.base as u64,
                function_entry: function.entry_address,
                establisher_frame: frame.establisher,
                target_ip,
                context_record: &raw mut scratch,
                language_handler: handler.routine,
                handler_data: handler.data,
                history_table: 0,
                scope_index: 0,
                fill: 0,
            };
            // SAFETY: as in dispatch: the frame's own language handler, Win64 ABI.
            let routine = unsafe { core::mem::transmute::<usize, LanguageHandler>(handler.routine) };
            // SAFETY: called as RtlUnwindEx calls an unwind handler.
            let disposition = unsafe { routine(&raw mut *record, frame.establisher, &raw mut scratch, &raw mut dispatcher) };
            if disposition != EXCEPTION_CONTINUE_SEARCH_DISPOSITION {
                let invalid = ExceptionRecord::new(STATUS_INVALID_DISPOSITION, EXCEPTION_NONCONTINUABLE, record.address, &[]);
                not_handled(Some(&image), &invalid);
            }
        }
        if is_target {
            let mut resume = before;
            resume.rip = target_ip;
            resume.gpr[RAX] = return_value;
            unwind::restore(&resume);
        }
    }
    record.flags |= EXCEPTION_EXIT_UNWIND;
    not_handled(Some(&image), record)
}

/// One `SCOPE_TABLE` entry (RVAs; `handler` 1 = the constant filter EXCEPTION_EXECUTE_HANDLER,
/// `target` 0 = a termination handler).
struct Scope {
    begin: u32,
    end: u32,
    handler: u32,
    target: u32,
}

fn scope(table: usize, index: u32) -> Scope {
    let at = table + 4 + index as usize * 16;
    let read = |offset: usize| -> u32 {
        // SAFETY: the scope table lies in the image's .xdata right after the handler RVA (the
        // unwinder bounds-checked where it starts); entries are 16 bytes each, `count` of them.
        unsafe { ((at + offset) as *const u32).read_unaligned() }
    };
    Scope { begin: read(0), end: read(4), handler: read(8), target: read(12) }
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
    // SAFETY: called by fltemu's dispatcher (or a driver) with a live DISPATCHER_CONTEXT.
    let dispatcher = unsafe { &mut *dispatcher };
    // SAFETY: as above, the record being dispatched.
    let record_ref = unsafe { &mut *record };
    let table = dispatcher.handler_data;
    // SAFETY: the handler data of a __C_specific_handler frame starts with the scope count.
    let count = unsafe { (table as *const u32).read_unaligned() };
    let base = dispatcher.image_base;
    #[allow(clippy::cast_possible_truncation)]
    let pc = dispatcher.control_pc.wrapping_sub(base) as u32;
    if record_ref.flags & (EXCEPTION_UNWINDING | EXCEPTION_EXIT_UNWIND) == 0 {
        for index in dispatcher.scope_index..count {
            let entry = scope(table, index);
            if pc < entry.begin || pc >= entry.end || entry.target == 0 {
                continue;
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
        let entry = scope(table, index);
        if pc < entry.begin || pc >= entry.end {
            continue;
        }
        if target_unwind && (target >= entry.begin && target < entry.end || entry.target == target) {
            // The target lies in this scope (or is its __except block): the scope is not left.
            return EXCEPTION_CONTINUE_SEARCH_DISPOSITION;
        }
        if entry.target == 0 {
            dispatcher.scope_index = index + 1;
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

// ---- faults in driver code -----------------------------------------------------------------

/// `PAGE_FAULT_IN_NONPAGED_AREA`.
pub const PAGE_FAULT_IN_NONPAGED_AREA: u32 = 0x50;
/// Addresses below this are the NULL region of the user half (never mapped), so a fault there
/// is an ordinary access violation.
const NULL_REGION: u64 = 0x1_0000;

/// Where a redirected fault starts, on the faulting thread's stack. A fault on an address that
/// is neither user memory nor the NULL region is invalid system memory, which Windows does not
/// dispatch as an exception at all ("Bug Check 0x50": it cannot be protected by try-except).
extern "sysv64" fn fault_entry(record: *const ExceptionRecord, context: *const Context) -> ! {
    // SAFETY: the signal handler wrote both below the faulting RSP, above this frame.
    let record = unsafe { *record };
    // SAFETY: as above.
    let context = unsafe { *context };
    let address = record.information[1];
    let user = crate::state::current().is_some_and(|inner| usize::try_from(address).is_ok_and(|a| inner.user.contains(a)));
    if !user && address >= NULL_REGION {
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
    }
}

/// Space left untouched below the faulting RSP before the redirected frame (the faulting
/// function's outgoing area, and room for the restore's return slot).
const REDIRECT_GAP: usize = 256;

/// Called by the SIGSEGV/SIGBUS handler on a driver thread: when the faulting instruction is in
/// the driver image, rewrites the signal context so the thread, on return from the handler,
/// calls [`dispatch`] with STATUS_ACCESS_VIOLATION (ExceptionInformation: 0 read / 1 write /
/// 8 execute, then the address). Async-signal-safe: plain reads and writes only.
pub fn redirect_fault(address: usize, ucontext: *mut libc::ucontext_t) -> bool {
    let Some(image) = Image::current() else { return false };
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    let gregs = unsafe { &mut (*ucontext).uc_mcontext.gregs };
    let saved = *gregs;
    let register = |index: i32| saved[usize::try_from(index).unwrap_or(0)].cast_unsigned();
    let mut rip = register(libc::REG_RIP);
    let mut rsp = register(libc::REG_RSP);
    let fault_rip = rip;
    let leaf = (fltemu_leaf_start as *const () as u64..fltemu_leaf_end as *const () as u64).contains(&rip);
    if leaf {
        // A leaf routine pushed nothing: its caller's frame is one return address up.
        // SAFETY: RSP of a thread inside a leaf routine points at its return address.
        rip = unsafe { (rsp as *const u64).read() };
        rsp += 8;
    }
    if !image.contains(rip) {
        return false;
    }
    // A fault just below RSP is the stack itself running out: there is no room to dispatch.
    #[allow(clippy::cast_possible_truncation)]
    let rsp_usize = rsp as usize;
    if address < rsp_usize.saturating_add(64) && address + 0x1_0000 > rsp_usize {
        return false;
    }
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
    let error = register(libc::REG_ERR);
    let kind = if error & 0x10 != 0 { 8 } else { u64::from(error & 0x2 != 0) };
    let record = ExceptionRecord::new(STATUS_ACCESS_VIOLATION, 0, fault_rip, &[kind, address as u64]);
    // Lay out [return slot][record][context] below the faulting RSP, 16-aligned.
    let context_at = (rsp_usize - REDIRECT_GAP - size_of::<Context>()) & !15;
    let record_at = (context_at - size_of::<ExceptionRecord>()) & !15;
    let frame = record_at - 8;
    let low = STACK_LOW.with(Cell::get);
    if low == 0 || frame < low + DISPATCH_STACK || rsp_usize < frame {
        return false; // no room to dispatch on this stack: the fault ends the run as a crash
    }
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
    // Clear the direction flag, as the ABI requires at a call.
    set(gregs, libc::REG_EFL, register(libc::REG_EFL) & !0x400);
    true
}

/// The resolver for the exception exports.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "__C_specific_handler" => c_specific_handler as *const () as usize,
        "ExRaiseStatus" => fltemu_ex_raise_status_thunk as *const () as usize,
        "ProbeForRead" => fltemu_probe_for_read_thunk as *const () as usize,
        "ProbeForWrite" => fltemu_probe_for_write_thunk as *const () as usize,
        "memcpy" => fltemu_memcpy as *const () as usize,
        "memmove" => fltemu_memmove as *const () as usize,
        "memset" => fltemu_memset as *const () as usize,
        _ => return None,
    })
}

/// The exception exports (ntoskrnl.exe).
/// (memcpy, memmove and memset are listed with the other ntoskrnl exports.)
pub const EXPORTS: &[&str] = &["__C_specific_handler", "ExRaiseStatus", "ProbeForRead", "ProbeForWrite"];

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

    #[test]
    fn records_are_laid_out_as_winnt_h() {
        assert_eq!(size_of::<ExceptionRecord>(), 152);
        assert_eq!(core::mem::offset_of!(ExceptionRecord, information), 32);
        assert_eq!(size_of::<DispatcherContext>(), 80);
    }
}
