//! What public minifilters call beyond Microsoft's samples (README "Minifilters in the wild"):
//! kernel handles to processes and threads (ZwOpenProcess, ObOpenObjectByPointer,
//! ObReferenceObjectByHandle, ZwQueryInformationProcess, NtClose/ObCloseHandle; ZwClose in
//! rtl.rs closes them too), system threads (PsCreateSystemThread, PsTerminateSystemThread,
//! waits on the thread object through KeWaitForSingleObject), callback registrations
//! (ObRegisterCallbacks, image-load and thread notify routines), control device objects and
//! symbolic links, the top-level IRP, a few string and registry calls, and
//! FltGetVolumeInstanceFromName. Every object a driver creates here is leak-checked at unload:
//! a handle not closed, a system thread still running, a registration not removed, a device or
//! link not deleted → `ObjectLeaked`.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::UNICODE_STRING;

use crate::catalog::{Emulated, Source};
use crate::exec::{self, APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::objects::{self, ObjectKind, Table};
use crate::state::status;

const ANY: u8 = 15;
const INVALID_HANDLE: i32 = 0xC000_0008_u32.cast_signed();
const INVALID_CID: i32 = 0xC000_000B_u32.cast_signed();
const OBJECT_TYPE_MISMATCH: i32 = 0xC000_0024_u32.cast_signed();
const PROCEDURE_NOT_FOUND: i32 = 0xC000_007A_u32.cast_signed();
const STATUS_PENDING: i32 = 0x103;
/// OBJECT_ATTRIBUTES.Attributes flag for a handle in the kernel's own table.
const OBJ_KERNEL_HANDLE: u32 = 0x200;
/// OB_CALLBACK_REGISTRATION.Version (ObGetFilterVersion's answer).
const OB_FLT_REGISTRATION_VERSION: u16 = 0x0100;
/// NtCurrentProcess() / NtCurrentThread() pseudo-handles.
const CURRENT_PROCESS: usize = usize::MAX;
const CURRENT_THREAD: usize = usize::MAX - 1;
/// The documented limit of image-load (and thread) notify routines.
const MAX_NOTIFY_ROUTINES: usize = 64;

// ---- object types (exported data: `*PsProcessType`, `*PsThreadType`) ----

// Different contents: identical immutable statics may share one address.
static PROCESS_TYPE_BODY: [u64; 16] = [0x7079_5473_7365_636F; 16];
static THREAD_TYPE_BODY: [u64; 16] = [0x6570_7954_6461_6572; 16];
static FILE_TYPE_BODY: [u64; 16] = [0x6570_7954_656C_6946; 16];
/// The exported POBJECT_TYPE variables: drivers import their address and read the pointer.
static PS_PROCESS_TYPE: &[u64; 16] = &PROCESS_TYPE_BODY;
static PS_THREAD_TYPE: &[u64; 16] = &THREAD_TYPE_BODY;
static IO_FILE_OBJECT_TYPE: &[u64; 16] = &FILE_TYPE_BODY;

fn process_type() -> usize {
    std::ptr::from_ref(PS_PROCESS_TYPE) as usize
}

fn thread_type() -> usize {
    std::ptr::from_ref(PS_THREAD_TYPE) as usize
}

fn file_type() -> usize {
    std::ptr::from_ref(IO_FILE_OBJECT_TYPE) as usize
}

// ---- handles ----

#[derive(Clone, Copy)]
struct Handle {
    object: usize,
    /// The POBJECT_TYPE ObjectType parameters are checked against.
    object_type: usize,
}

static HANDLES: Table<usize, Handle> = Table::new();
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(1);

fn new_handle(object: usize, object_type: usize, kernel: bool) -> usize {
    let handle = handle_value(kernel);
    if !stale_thread() {
        HANDLES.with(|t| t.insert(handle, Handle { object, object_type }));
    }
    handle
}

fn handle_value(kernel: bool) -> usize {
    let n = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed) * 4;
    // Kernel handles have the top bit set, as the kernel's handle table marks them.
    if kernel { 0xFFFF_FFFF_8000_0000 | n } else { n }
}

/// Symbolic-link handles (ZwOpenSymbolicLinkObject): handle → the link's target.
static LINK_HANDLES: Table<usize, String> = Table::new();

/// Closes a handle this module handed out (ZwClose in rtl.rs asks here first).
pub fn close_handle(handle: usize) -> bool {
    HANDLES.with(|t| t.remove(&handle)).is_some() || LINK_HANDLES.with(|t| t.remove(&handle)).is_some()
}

/// The object behind a handle or pseudo-handle.
fn lookup(handle: usize) -> Option<Handle> {
    match handle {
        CURRENT_PROCESS => Some(Handle { object: crate::ps::process_of(exec::current_pid()), object_type: process_type() }),
        CURRENT_THREAD => Some(Handle { object: crate::ps::thread_object(), object_type: thread_type() }),
        // FltCreateFile's handles name FILE_OBJECTs (fltfile.rs keeps them).
        _ => HANDLES.with(|t| t.get(&handle).copied()).or_else(|| crate::fltfile::file_object_of(handle).map(|object| Handle { object, object_type: file_type() })),
    }
}

/// Whether a handle created now must carry OBJ_KERNEL_HANDLE: outside the system process a
/// handle without it lands in the current (user) process's handle table.
fn check_kernel_handle(function: &'static str, attributes: usize) -> bool {
    let flags = if attributes == 0 {
        0
    } else {
        // SAFETY: the caller's OBJECT_ATTRIBUTES; Attributes is the ULONG at offset 24.
        unsafe { ((attributes + 24) as *const u32).read_unaligned() }
    };
    let kernel = flags & OBJ_KERNEL_HANDLE != 0;
    if !kernel && exec::current_pid() != 4 {
        objects::flag(crate::Violation::InvalidParameter { function, reason: "a handle created outside the system process without OBJ_KERNEL_HANDLE (it lands in the user process's handle table)" });
    }
    kernel || exec::current_pid() == 4
}

fn write_out(out: *mut usize, value: usize) {
    // SAFETY: the caller's out pointer (checked non-NULL by each caller).
    unsafe { out.write_unaligned(value) };
}

/// `ZwOpenProcess` (ntddk.h; PASSIVE): a handle to the process named by ClientId.UniqueProcess.
extern "win64" fn zw_open_process(handle: *mut usize, _access: u32, attributes: usize, client_id: *const usize) -> i32 {
    objects::count("ZwOpenProcess", PASSIVE_LEVEL);
    if handle.is_null() || client_id.is_null() {
        return status::INVALID_PARAMETER;
    }
    // SAFETY: the caller's CLIENT_ID; UniqueProcess is its first field.
    let pid = unsafe { client_id.read_unaligned() };
    if pid == 0 || pid > u32::MAX as usize {
        write_out(handle, 0);
        return INVALID_CID;
    }
    let kernel = check_kernel_handle("ZwOpenProcess", attributes);
    let object = crate::ps::process_of(pid as u32);
    write_out(handle, new_handle(object, process_type(), kernel));
    status::SUCCESS
}

/// `ObOpenObjectByPointer` (ntifs.h; PASSIVE): a handle to a process or thread object.
extern "win64" fn ob_open_object_by_pointer(object: usize, attributes: u32, _state: usize, _access: u32, object_type: usize, _mode: i8, handle: *mut usize) -> i32 {
    objects::count("ObOpenObjectByPointer", PASSIVE_LEVEL);
    if handle.is_null() || object == 0 {
        return status::INVALID_PARAMETER;
    }
    let thread = crate::ps::is_thread(object);
    if !thread && crate::ps::pid_of(object).is_none() {
        objects::misuse("ObOpenObjectByPointer", ObjectKind::Handle, "not a process or thread object (the only objects fltemu opens handles to)");
        return status::INVALID_PARAMETER;
    }
    if object_type != 0 && object_type != if thread { thread_type() } else { process_type() } {
        return OBJECT_TYPE_MISMATCH;
    }
    let kernel = attributes & OBJ_KERNEL_HANDLE != 0;
    if !kernel && exec::current_pid() != 4 {
        objects::flag(crate::Violation::InvalidParameter { function: "ObOpenObjectByPointer", reason: "a handle created outside the system process without OBJ_KERNEL_HANDLE (it lands in the user process's handle table)" });
    }
    write_out(handle, new_handle(object, if thread { thread_type() } else { process_type() }, kernel || exec::current_pid() == 4));
    status::SUCCESS
}

/// `ObReferenceObjectByHandle` (wdm.h; PASSIVE): the object behind the handle, referenced (the
/// driver must ObDereferenceObject it: else ObjectLeaked at unload).
extern "win64" fn ob_reference_object_by_handle(handle: usize, _access: u32, object_type: usize, _mode: i8, object: *mut usize, _info: usize) -> i32 {
    objects::count("ObReferenceObjectByHandle", PASSIVE_LEVEL);
    if object.is_null() {
        return status::INVALID_PARAMETER;
    }
    let Some(entry) = lookup(handle) else {
        write_out(object, 0);
        return INVALID_HANDLE;
    };
    if object_type != 0 && object_type != entry.object_type {
        write_out(object, 0);
        return OBJECT_TYPE_MISMATCH;
    }
    crate::ps::add_reference(entry.object);
    write_out(object, entry.object);
    status::SUCCESS
}

/// `NtClose` / `ObCloseHandle` (ntifs.h / wdm.h; PASSIVE): as ZwClose.
extern "win64" fn nt_close(handle: usize) -> i32 {
    objects::count("NtClose", PASSIVE_LEVEL);
    close_or_flag("NtClose", handle)
}

extern "win64" fn ob_close_handle(handle: usize, _mode: i8) -> i32 {
    objects::count("ObCloseHandle", PASSIVE_LEVEL);
    close_or_flag("ObCloseHandle", handle)
}

fn close_or_flag(function: &'static str, handle: usize) -> i32 {
    if close_handle(handle) {
        return status::SUCCESS;
    }
    objects::misuse(function, ObjectKind::Handle, "not an open handle (closed twice, or never opened)");
    INVALID_HANDLE
}

/// The image path fltemu gives process `pid` (the same one SeLocateProcessImageName answers).
fn image_path(pid: u32) -> Vec<u16> {
    format!("\\Device\\HarddiskVolume1\\Windows\\System32\\process{pid}.exe").encode_utf16().collect()
}

/// `ZwQueryInformationProcess` (ntddk.h; PASSIVE): ProcessBasicInformation (0, 48 bytes) and
/// ProcessImageFileName (27, a UNICODE_STRING followed by its characters); other classes
/// STATUS_INVALID_INFO_CLASS.
extern "win64" fn zw_query_information_process(handle: usize, class: u32, information: *mut u8, length: u32, returned: *mut u32) -> i32 {
    objects::count("ZwQueryInformationProcess", PASSIVE_LEVEL);
    let Some(entry) = lookup(handle) else { return INVALID_HANDLE };
    let Some(pid) = crate::ps::pid_of(entry.object) else { return OBJECT_TYPE_MISMATCH };
    let set_returned = |value: u32| {
        if !returned.is_null() {
            // SAFETY: the caller's optional out length.
            unsafe { returned.write_unaligned(value) };
        }
    };
    match class {
        0 => {
            if length != 48 {
                return status::INFO_LENGTH_MISMATCH;
            }
            let parent = if pid == 4 { 0 } else { 1000 };
            let info: [u64; 6] = [STATUS_PENDING as u64, 0, 1, 8, u64::from(pid), parent];
            // SAFETY: the caller's 48-byte PROCESS_BASIC_INFORMATION buffer.
            unsafe { core::ptr::copy_nonoverlapping(info.as_ptr().cast::<u8>(), information, 48) };
            set_returned(48);
            status::SUCCESS
        }
        27 => {
            let text = image_path(pid);
            let bytes = text.len() * 2;
            let needed = 16 + bytes + 2;
            set_returned(needed as u32);
            if (length as usize) < needed {
                return status::INFO_LENGTH_MISMATCH;
            }
            let header = [bytes as u16, (bytes + 2) as u16, 0, 0];
            // SAFETY: the caller's buffer holds `needed` bytes: the UNICODE_STRING header first.
            unsafe { core::ptr::copy_nonoverlapping(header.as_ptr().cast::<u8>(), information, 8) };
            // SAFETY: as above; Buffer at offset 8 points just past the header.
            unsafe { information.wrapping_add(8).cast::<usize>().write_unaligned(information as usize + 16) };
            // SAFETY: as above; the characters and their NUL follow the header.
            unsafe { core::ptr::copy_nonoverlapping(text.as_ptr().cast::<u8>(), information.wrapping_add(16), bytes) };
            // SAFETY: as above.
            unsafe { information.wrapping_add(16 + bytes).cast::<u16>().write_unaligned(0) };
            status::SUCCESS
        }
        _ => status::INVALID_INFO_CLASS,
    }
}

// ---- system threads ----

/// Callee-saved registers of the trampoline's caller, and where to return (see the assembly).
type JumpBuffer = [u64; 30];

core::arch::global_asm!(
    // fltemu_wild_thread_start(routine, context, buffer): saves the Win64 callee-saved state in
    // buffer, calls routine(context) and returns 0; fltemu_wild_thread_exit(buffer) returns 1
    // from the same call, abandoning the driver frames in between, as PsTerminateSystemThread
    // ends a thread wherever it is called.
    ".globl fltemu_wild_thread_start",
    "fltemu_wild_thread_start:",
    "mov [r8 + 0x00], rbx",
    "mov [r8 + 0x08], rbp",
    "mov [r8 + 0x10], rdi",
    "mov [r8 + 0x18], rsi",
    "mov [r8 + 0x20], r12",
    "mov [r8 + 0x28], r13",
    "mov [r8 + 0x30], r14",
    "mov [r8 + 0x38], r15",
    "movdqu [r8 + 0x40], xmm6",
    "movdqu [r8 + 0x50], xmm7",
    "movdqu [r8 + 0x60], xmm8",
    "movdqu [r8 + 0x70], xmm9",
    "movdqu [r8 + 0x80], xmm10",
    "movdqu [r8 + 0x90], xmm11",
    "movdqu [r8 + 0xA0], xmm12",
    "movdqu [r8 + 0xB0], xmm13",
    "movdqu [r8 + 0xC0], xmm14",
    "movdqu [r8 + 0xD0], xmm15",
    "lea rax, [rsp + 8]",
    "mov [r8 + 0xE0], rax",
    "mov rax, [rsp]",
    "mov [r8 + 0xE8], rax",
    "sub rsp, 40",
    "mov rax, rcx",
    "mov rcx, rdx",
    "call rax",
    "add rsp, 40",
    "xor eax, eax",
    "ret",
    ".globl fltemu_wild_thread_exit",
    "fltemu_wild_thread_exit:",
    "mov rbx, [rcx + 0x00]",
    "mov rbp, [rcx + 0x08]",
    "mov rdi, [rcx + 0x10]",
    "mov rsi, [rcx + 0x18]",
    "mov r12, [rcx + 0x20]",
    "mov r13, [rcx + 0x28]",
    "mov r14, [rcx + 0x30]",
    "mov r15, [rcx + 0x38]",
    "movdqu xmm6, [rcx + 0x40]",
    "movdqu xmm7, [rcx + 0x50]",
    "movdqu xmm8, [rcx + 0x60]",
    "movdqu xmm9, [rcx + 0x70]",
    "movdqu xmm10, [rcx + 0x80]",
    "movdqu xmm11, [rcx + 0x90]",
    "movdqu xmm12, [rcx + 0xA0]",
    "movdqu xmm13, [rcx + 0xB0]",
    "movdqu xmm14, [rcx + 0xC0]",
    "movdqu xmm15, [rcx + 0xD0]",
    "mov rsp, [rcx + 0xE0]",
    "mov eax, 1",
    "jmp qword ptr [rcx + 0xE8]",
);

unsafe extern "win64" {
    fn fltemu_wild_thread_start(routine: usize, context: usize, buffer: *mut JumpBuffer) -> u64;
    fn fltemu_wild_thread_exit(buffer: *const JumpBuffer) -> !;
}

/// Emulator generation: a system thread of an earlier emulator sees no emulator at all.
static GENERATION: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The generation of the emulator whose system thread runs on this worker (0: none).
    static THREAD_GENERATION: Cell<u64> = const { Cell::new(0) };
    /// Where PsTerminateSystemThread jumps to (null: not a system thread).
    static EXIT_BUFFER: Cell<*mut JumpBuffer> = const { Cell::new(core::ptr::null_mut()) };
}

/// Whether this thread is a system thread an earlier (unloaded) emulator left running.
pub fn stale_thread() -> bool {
    let mine = THREAD_GENERATION.with(Cell::get);
    mine != 0 && mine != GENERATION.load(Ordering::Acquire)
}

/// Thread object → whether the system thread has ended.
static THREADS: Mutex<Option<HashMap<usize, bool>>> = Mutex::new(None);
static THREAD_ENDED: Condvar = Condvar::new();

fn threads<R>(f: impl FnOnce(&mut HashMap<usize, bool>) -> R) -> R {
    let mut guard = THREADS.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(HashMap::new))
}

/// KeWaitForSingleObject on an object sync.rs does not know: a system thread (signaled once
/// it has ended) or a KMUTEX (acquired). None: neither.
pub fn wait_for_object(object: usize, deadline: Option<Instant>) -> Option<i32> {
    if MUTEXES.with(|t| t.contains_key(&object)) {
        return Some(wait_for_mutex(object, deadline));
    }
    let mut guard = THREADS.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let ended = *guard.get_or_insert_with(HashMap::new).get(&object)?;
        if ended {
            return Some(status::SUCCESS);
        }
        let step = match deadline {
            Some(d) if d <= Instant::now() => return Some(status::TIMEOUT),
            Some(d) => (d - Instant::now()).min(Duration::from_millis(50)),
            None => Duration::from_millis(50),
        };
        guard = THREAD_ENDED.wait_timeout(guard, step).unwrap_or_else(PoisonError::into_inner).0;
    }
}

/// Registered thread notify routines (PsSetCreateThreadNotifyRoutine).
static THREAD_NOTIFY: Table<usize, ()> = Table::new();
/// Registered image-load notify routines.
static IMAGE_NOTIFY: Table<usize, ()> = Table::new();

fn notify_thread(create: bool) {
    let routines: Vec<usize> = THREAD_NOTIFY.with(|t| t.keys().copied().collect());
    for routine in routines {
        // SAFETY: the driver's PCREATE_THREAD_NOTIFY_ROUTINE (ProcessId, ThreadId, Create).
        let call = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(usize, usize, u8)>(routine) };
        // SAFETY: arguments as the DDI documents, in the new (or ending) thread's context.
        exec::driver_call(|| unsafe { call(4, objects::thread_id(), u8::from(create)) });
    }
}

/// The body of one system thread, on an emulator worker.
fn run_system_thread(routine: usize, context: usize, started: &std::sync::mpsc::Sender<usize>, generation: u64) {
    THREAD_GENERATION.with(|g| g.set(generation));
    exec::enter(PASSIVE_LEVEL, 4, crate::Operation::Other);
    let object = crate::ps::thread_object();
    threads(|t| t.insert(object, false));
    let _ = started.send(object);
    notify_thread(true);
    let mut buffer: JumpBuffer = [0; 30];
    EXIT_BUFFER.with(|b| b.set(&raw mut buffer));
    // SAFETY: the driver's PKSTART_ROUTINE, called through the trampoline that
    // PsTerminateSystemThread returns through.
    exec::driver_call(|| unsafe { fltemu_wild_thread_start(routine, context, &raw mut buffer) });
    EXIT_BUFFER.with(|b| b.set(core::ptr::null_mut()));
    if !stale_thread() {
        exec::set_irql(PASSIVE_LEVEL);
        notify_thread(false);
    }
    threads(|t| t.insert(object, true));
    THREAD_ENDED.notify_all();
    THREAD_GENERATION.with(|g| g.set(0));
}

/// `PsCreateSystemThread` (wdm.h; PASSIVE): runs StartRoutine(StartContext) on an emulator
/// worker at PASSIVE_LEVEL in the system process; returns a kernel handle the driver must
/// ZwClose; the thread must have ended by the end of unload.
extern "win64" fn ps_create_system_thread(handle: *mut usize, _access: u32, attributes: usize, _process: usize, client_id: *mut usize, routine: usize, context: usize) -> i32 {
    let Some(inner) = objects::call("PsCreateSystemThread", PASSIVE_LEVEL) else { return status::UNSUCCESSFUL };
    if handle.is_null() || routine == 0 {
        return status::INVALID_PARAMETER;
    }
    if let Some(status) = inner.injected("PsCreateSystemThread") {
        write_out(handle, 0);
        return status;
    }
    let kernel = check_kernel_handle("PsCreateSystemThread", attributes);
    let Some(arc) = crate::state::current_arc() else { return status::UNSUCCESSFUL };
    let generation = GENERATION.load(Ordering::Acquire);
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let timeout = arc.config.call_timeout;
        let job = move || run_system_thread(routine, context, &sender, generation);
        if let Err(stop) = arc.workers.run(timeout, job) {
            // A crash or bug check in the thread ends the run like one in any driver call; a
            // thread still running past the call timeout is only a long-lived thread. Either
            // way the worker may still hold driver state: keep the image and state mapped.
            if !matches!(stop, exec::Stop::Hang { .. }) {
                arc.record_stop(stop);
                threads(|t| t.values_mut().for_each(|ended| *ended = true));
                THREAD_ENDED.notify_all();
            }
            std::mem::forget(arc);
        }
    });
    let Ok(object) = receiver.recv_timeout(Duration::from_secs(30)) else { return status::INSUFFICIENT_RESOURCES };
    write_out(handle, new_handle(object, thread_type(), kernel));
    if !client_id.is_null() {
        // SAFETY: the caller's optional CLIENT_ID (UniqueProcess, UniqueThread).
        unsafe { client_id.write_unaligned(4) };
        // SAFETY: as above.
        unsafe { client_id.wrapping_add(1).write_unaligned(crate::ps::thread_id_of(object)) };
    }
    status::SUCCESS
}

/// `PsTerminateSystemThread` (wdm.h; PASSIVE): ends the calling system thread (does not
/// return); called on any other thread it returns STATUS_INVALID_PARAMETER.
extern "win64" fn ps_terminate_system_thread(_status: i32) -> i32 {
    objects::count("PsTerminateSystemThread", PASSIVE_LEVEL);
    let buffer = EXIT_BUFFER.with(Cell::get);
    if buffer.is_null() {
        objects::flag(crate::Violation::InvalidParameter { function: "PsTerminateSystemThread", reason: "called on a thread that is not a system thread the driver created" });
        return status::INVALID_PARAMETER;
    }
    // SAFETY: the buffer the trampoline of this thread's start filled; nothing on this frame
    // needs dropping.
    unsafe { fltemu_wild_thread_exit(buffer) }
}

// ---- kernel mutexes (KMUTEX) ----

/// KMUTEX → (owning thread id or 0, recursion count).
static MUTEXES: Table<usize, (usize, u32)> = Table::new();

fn wait_for_mutex(mutex: usize, deadline: Option<Instant>) -> i32 {
    let me = objects::thread_id();
    loop {
        let acquired = MUTEXES.with(|t| match t.get_mut(&mutex) {
            Some((owner, count)) if *owner == 0 || *owner == me => {
                *owner = me;
                *count += 1;
                true
            }
            _ => false,
        });
        if acquired {
            // Holding a mutex object disables normal kernel APCs (KeWaitForSingleObject Remarks).
            crate::sync::enter_critical_region();
            return status::SUCCESS;
        }
        // Polled: a KMUTEX is rare in minifilters and held briefly.
        match deadline {
            Some(d) if d <= Instant::now() => return status::TIMEOUT,
            _ => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}

/// `KeInitializeMutex` (wdm.h; PASSIVE): a signaled (unowned) mutex object.
extern "win64" fn ke_initialize_mutex(mutex: usize, _level: u32) {
    objects::count("KeInitializeMutex", PASSIVE_LEVEL);
    if mutex != 0 {
        MUTEXES.with(|t| t.insert(mutex, (0, 0)));
    }
}

/// `KeReleaseMutex` (wdm.h; ≤ DISPATCH): one level of this thread's ownership; a mutex this
/// thread does not own → ObjectMisuse (STATUS_MUTANT_NOT_OWNED is raised on Windows).
extern "win64" fn ke_release_mutex(mutex: usize, _wait: u8) -> i32 {
    objects::count("KeReleaseMutex", DISPATCH_LEVEL);
    let me = objects::thread_id();
    let outcome = MUTEXES.with(|t| match t.get_mut(&mutex) {
        Some((owner, count)) if *owner == me && *count > 0 => {
            *count -= 1;
            if *count == 0 {
                *owner = 0;
            }
            Ok(i32::from(*count == 0))
        }
        _ => Err(()),
    });
    if let Ok(previous) = outcome {
        crate::sync::leave_critical_region("KeReleaseMutex");
        previous
    } else {
        objects::misuse("KeReleaseMutex", ObjectKind::Mutex, "released by a thread that does not own it (STATUS_MUTANT_NOT_OWNED)");
        0
    }
}

// ---- interlocked lists ----

/// The LIST_ENTRY links (Flink at 0, Blink at 8), in driver memory at whatever alignment the
/// driver chose (x64 loads need none), so read and written unaligned.
fn link(entry: usize, blink: bool) -> usize {
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { crate::driver_mem::read(entry.wrapping_add(8 * usize::from(blink)) as *const usize) }
}

fn set_link(entry: usize, blink: bool, value: usize) {
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { crate::driver_mem::write(entry.wrapping_add(8 * usize::from(blink)) as *mut usize, value) };
}

/// Runs `f` under the KSPIN_LOCK word at `lock` (the same word KeAcquireSpinLock takes); a
/// misaligned lock is reported and `f` does not run (None: the call does nothing).
fn with_spin_lock<R>(function: &'static str, lock: usize, f: impl FnOnce() -> R) -> Option<R> {
    if !crate::driver_mem::lock_word(function, lock) {
        return None;
    }
    // SAFETY: a KSPIN_LOCK: a pointer-sized word in non-paged driver memory, 8-byte aligned
    // (checked).
    let word = unsafe { std::sync::atomic::AtomicUsize::from_ptr(lock as *mut usize) };
    while word.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::thread::yield_now();
    }
    let result = f();
    word.store(0, Ordering::Release);
    Some(result)
}

/// `ExInterlockedInsertTailList` / `ExInterlockedInsertHeadList` (wdm.h; any IRQL): inserts
/// under the spin lock; returns the former tail (head), NULL if the list was empty.
extern "win64" fn ex_interlocked_insert_tail_list(head: usize, entry: usize, lock: usize) -> usize {
    objects::count("ExInterlockedInsertTailList", ANY);
    with_spin_lock("ExInterlockedInsertTailList", lock, || {
        let tail = link(head, true);
        set_link(entry, false, head);
        set_link(entry, true, tail);
        set_link(tail, false, entry);
        set_link(head, true, entry);
        if tail == head { 0 } else { tail }
    })
    .unwrap_or(0)
}

extern "win64" fn ex_interlocked_insert_head_list(head: usize, entry: usize, lock: usize) -> usize {
    objects::count("ExInterlockedInsertHeadList", ANY);
    with_spin_lock("ExInterlockedInsertHeadList", lock, || {
        let first = link(head, false);
        set_link(entry, false, first);
        set_link(entry, true, head);
        set_link(first, true, entry);
        set_link(head, false, entry);
        if first == head { 0 } else { first }
    })
    .unwrap_or(0)
}

/// `ExInterlockedRemoveHeadList` (wdm.h; any IRQL): the first entry removed, or NULL.
extern "win64" fn ex_interlocked_remove_head_list(head: usize, lock: usize) -> usize {
    objects::count("ExInterlockedRemoveHeadList", ANY);
    with_spin_lock("ExInterlockedRemoveHeadList", lock, || {
        let first = link(head, false);
        if first == head {
            return 0;
        }
        let next = link(first, false);
        set_link(head, false, next);
        set_link(next, true, head);
        first
    })
    .unwrap_or(0)
}

// ---- attaching to a process ----

thread_local! {
    /// KAPC_STATE addresses of this thread's attaches, with the pid to return to.
    static ATTACHED: std::cell::RefCell<Vec<(usize, u32)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `KeStackAttachProcess` (ntifs.h; ≤ DISPATCH): the thread runs in Process's context (its pid)
/// until KeUnstackDetachProcess with the same ApcState.
extern "win64" fn ke_stack_attach_process(process: usize, apc_state: usize) {
    objects::count("KeStackAttachProcess", DISPATCH_LEVEL);
    let Some(pid) = crate::ps::pid_of(process) else {
        objects::misuse("KeStackAttachProcess", ObjectKind::ProcessReference, "not a process object");
        return;
    };
    ATTACHED.with(|a| a.borrow_mut().push((apc_state, exec::current_pid())));
    exec::enter(exec::irql(), pid, exec::operation());
}

/// `KeUnstackDetachProcess` (ntifs.h; ≤ DISPATCH): back to the context before the matching
/// attach; an ApcState that is not the innermost attach → ObjectMisuse.
extern "win64" fn ke_unstack_detach_process(apc_state: usize) {
    objects::count("KeUnstackDetachProcess", DISPATCH_LEVEL);
    let top = ATTACHED.with(|a| {
        let mut a = a.borrow_mut();
        if a.last().is_some_and(|(state, _)| *state == apc_state) { a.pop() } else { None }
    });
    match top {
        Some((_, pid)) => exec::enter(exec::irql(), pid, exec::operation()),
        None => objects::misuse("KeUnstackDetachProcess", ObjectKind::ProcessReference, "ApcState is not this thread's innermost KeStackAttachProcess"),
    }
}

// ---- callback registrations ----

static OB_CALLBACKS: Table<usize, String> = Table::new();

/// `ObRegisterCallbacks` (wdm.h; PASSIVE): validates the registration and returns a handle the
/// driver passes to ObUnRegisterCallbacks; the callbacks are never called (fltemu issues no
/// handle operations).
extern "win64" fn ob_register_callbacks(registration: *const u8, handle: *mut usize) -> i32 {
    objects::count("ObRegisterCallbacks", PASSIVE_LEVEL);
    if registration.is_null() || handle.is_null() {
        return status::INVALID_PARAMETER;
    }
    // SAFETY: the caller's OB_CALLBACK_REGISTRATION: Version (USHORT) at 0.
    let version = unsafe { registration.cast::<u16>().read_unaligned() };
    // SAFETY: as above: OperationRegistrationCount (USHORT) at 2.
    let count = unsafe { registration.wrapping_add(2).cast::<u16>().read_unaligned() };
    // SAFETY: as above: OperationRegistration (pointer) at 32.
    let operations = unsafe { registration.wrapping_add(32).cast::<usize>().read_unaligned() };
    if version != OB_FLT_REGISTRATION_VERSION || count == 0 || operations == 0 {
        return status::INVALID_PARAMETER;
    }
    if !crate::ps::image_forces_integrity() {
        return status::ACCESS_DENIED;
    }
    let altitude = string_of(registration.wrapping_add(8).cast());
    if OB_CALLBACKS.with(|t| t.values().any(|a| *a == altitude)) {
        return status::FLT_INSTANCE_ALTITUDE_COLLISION;
    }
    let cookie = Box::into_raw(Box::new(0u64)) as usize;
    OB_CALLBACKS.with(|t| t.insert(cookie, altitude));
    write_out(handle, cookie);
    status::SUCCESS
}

/// `ObUnRegisterCallbacks` (wdm.h; PASSIVE): an unknown handle → ObjectMisuse.
extern "win64" fn ob_unregister_callbacks(handle: usize) {
    objects::count("ObUnRegisterCallbacks", PASSIVE_LEVEL);
    if OB_CALLBACKS.with(|t| t.remove(&handle)).is_none() {
        objects::misuse("ObUnRegisterCallbacks", ObjectKind::Callback, "not a registration ObRegisterCallbacks returned (or already unregistered)");
    }
}

/// `ObGetFilterVersion` (wdm.h; any IRQL).
extern "win64" fn ob_get_filter_version() -> u16 {
    objects::count("ObGetFilterVersion", ANY);
    OB_FLT_REGISTRATION_VERSION
}

fn add_notify(function: &'static str, table: &Table<usize, ()>, routine: usize) -> i32 {
    objects::count(function, PASSIVE_LEVEL);
    if routine == 0 {
        return status::INVALID_PARAMETER;
    }
    table.with(|t| {
        if t.contains_key(&routine) {
            status::INVALID_PARAMETER
        } else if t.len() >= MAX_NOTIFY_ROUTINES {
            status::INSUFFICIENT_RESOURCES
        } else {
            t.insert(routine, ());
            status::SUCCESS
        }
    })
}

fn remove_notify(function: &'static str, table: &Table<usize, ()>, routine: usize) -> i32 {
    objects::count(function, PASSIVE_LEVEL);
    if table.with(|t| t.remove(&routine)).is_some() { status::SUCCESS } else { PROCEDURE_NOT_FOUND }
}

extern "win64" fn ps_set_load_image_notify_routine(routine: usize) -> i32 {
    add_notify("PsSetLoadImageNotifyRoutine", &IMAGE_NOTIFY, routine)
}

extern "win64" fn ps_remove_load_image_notify_routine(routine: usize) -> i32 {
    remove_notify("PsRemoveLoadImageNotifyRoutine", &IMAGE_NOTIFY, routine)
}

extern "win64" fn ps_set_create_thread_notify_routine(routine: usize) -> i32 {
    add_notify("PsSetCreateThreadNotifyRoutine", &THREAD_NOTIFY, routine)
}

extern "win64" fn ps_remove_create_thread_notify_routine(routine: usize) -> i32 {
    remove_notify("PsRemoveCreateThreadNotifyRoutine", &THREAD_NOTIFY, routine)
}

// ---- device objects and symbolic links ----

/// DEVICE_OBJECT size on x64, and where its fields are.
const DEVICE_OBJECT_BYTES: usize = 0x150;

static DEVICES: Table<usize, Option<String>> = Table::new();
static LINKS: Table<String, String> = Table::new();

/// The driver's UNICODE_STRING as text (copied bytewise: it and its Buffer may sit at odd
/// addresses).
fn string_of(string: *const UNICODE_STRING) -> String {
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    String::from_utf16_lossy(&unsafe { crate::driver_mem::unicode_string(string) })
}

/// `IoCreateDevice` (wdm.h; PASSIVE): a zeroed DEVICE_OBJECT (Type 3, Size, DriverObject,
/// DeviceExtension of the asked size, DeviceType, Characteristics, DO_DEVICE_INITIALIZING)
/// linked at the head of DriverObject->DeviceObject; a name already used →
/// STATUS_OBJECT_NAME_COLLISION.
extern "win64" fn io_create_device(driver: usize, extension: u32, name: *const UNICODE_STRING, device_type: u32, characteristics: u32, _exclusive: u8, device: *mut usize) -> i32 {
    objects::count("IoCreateDevice", PASSIVE_LEVEL);
    if driver == 0 || device.is_null() {
        return status::INVALID_PARAMETER;
    }
    let name = (!name.is_null()).then(|| string_of(name));
    if let Some(text) = &name
        && DEVICES.with(|t| t.values().any(|n| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(text))))
    {
        write_out(device, 0);
        return status::OBJECT_NAME_COLLISION;
    }
    let bytes = DEVICE_OBJECT_BYTES + (extension as usize).next_multiple_of(16);
    let block = Box::into_raw(vec![0u8; bytes].into_boxed_slice()).cast::<u8>() as usize;
    let fields: [(usize, u64, usize); 9] = [
        (0x00, 3, 2),
        (0x02, DEVICE_OBJECT_BYTES as u64, 2),
        (0x08, driver as u64, 8),
        // SAFETY: DRIVER_OBJECT.DeviceObject (offset 8) of the driver object fltemu built.
        (0x10, unsafe { ((driver + 8) as *const u64).read_unaligned() }, 8),
        (0x30, 0x80, 4),
        (0x34, u64::from(characteristics), 4),
        (0x40, if extension == 0 { 0 } else { (block + DEVICE_OBJECT_BYTES) as u64 }, 8),
        (0x48, u64::from(device_type), 4),
        (0x4C, 1, 1),
    ];
    for (offset, value, width) in fields {
        // SAFETY: `block` has DEVICE_OBJECT_BYTES; each field lies inside it.
        unsafe { core::ptr::copy_nonoverlapping(value.to_le_bytes().as_ptr(), (block + offset) as *mut u8, width) };
    }
    // SAFETY: DRIVER_OBJECT.DeviceObject: the new device heads the driver's list.
    unsafe { ((driver + 8) as *mut usize).write_unaligned(block) };
    DEVICES.with(|t| t.insert(block, name));
    write_out(device, block);
    status::SUCCESS
}

/// `IoDeleteDevice` (wdm.h; PASSIVE): unlinks it from its driver's list; not a device fltemu
/// created (or deleted twice) → ObjectMisuse.
extern "win64" fn io_delete_device(device: usize) {
    objects::count("IoDeleteDevice", PASSIVE_LEVEL);
    if DEVICES.with(|t| t.remove(&device)).is_none() {
        objects::misuse("IoDeleteDevice", ObjectKind::Device, "not a device object IoCreateDevice returned (or already deleted)");
        return;
    }
    // SAFETY: DEVICE_OBJECT.DriverObject (offset 8) and NextDevice (0x10), set at creation.
    let driver = unsafe { ((device + 8) as *const usize).read_unaligned() };
    // SAFETY: as above.
    let next = unsafe { ((device + 0x10) as *const usize).read_unaligned() };
    let mut link = driver + 8;
    // Walk DriverObject->DeviceObject … NextDevice to the slot naming this device.
    for _ in 0..1024 {
        // SAFETY: a slot of the driver's device list (the driver object's or a live device's).
        let current = unsafe { (link as *const usize).read_unaligned() };
        if current == 0 {
            break;
        }
        if current == device {
            // SAFETY: as above.
            unsafe { (link as *mut usize).write_unaligned(next) };
            break;
        }
        link = current + 0x10;
    }
}

/// `IoCreateSymbolicLink` (wdm.h; PASSIVE): a link name already used →
/// STATUS_OBJECT_NAME_COLLISION.
extern "win64" fn io_create_symbolic_link(link: *const UNICODE_STRING, target: *const UNICODE_STRING) -> i32 {
    objects::count("IoCreateSymbolicLink", PASSIVE_LEVEL);
    if link.is_null() || target.is_null() {
        return status::INVALID_PARAMETER;
    }
    let name = link_key(&string_of(link));
    let target = string_of(target);
    LINKS.with(|t| match t.entry(name) {
        std::collections::hash_map::Entry::Occupied(_) => status::OBJECT_NAME_COLLISION,
        std::collections::hash_map::Entry::Vacant(slot) => {
            slot.insert(target);
            status::SUCCESS
        }
    })
}

/// `IoDeleteSymbolicLink` (wdm.h; PASSIVE): an unknown link → STATUS_OBJECT_NAME_NOT_FOUND.
extern "win64" fn io_delete_symbolic_link(link: *const UNICODE_STRING) -> i32 {
    objects::count("IoDeleteSymbolicLink", PASSIVE_LEVEL);
    let name = link_key(&string_of(link));
    if LINKS.with(|t| t.remove(&name)).is_some() { status::SUCCESS } else { status::OBJECT_NAME_NOT_FOUND }
}

/// `IofCompleteRequest` (wdm.h, IoCompleteRequest; ≤ DISPATCH): fltemu sends no IRPs to a
/// driver's own devices, so any IRP completed here is not one the I/O manager gave it.
extern "win64" fn iof_complete_request(_irp: usize, _boost: i8) {
    objects::count("IofCompleteRequest", DISPATCH_LEVEL);
    objects::flag(crate::Violation::InvalidParameter { function: "IofCompleteRequest", reason: "an IRP fltemu never sent to the driver (fltemu issues no IRPs to a driver's own devices)" });
}

thread_local! {
    static TOP_LEVEL_IRP: Cell<usize> = const { Cell::new(0) };
}

/// `IoGetTopLevelIrp` (ntifs.h; any IRQL): what IoSetTopLevelIrp stored on this thread; NULL
/// in Filter Manager's callbacks (fltemu's file system sets none).
extern "win64" fn io_get_top_level_irp() -> usize {
    objects::count("IoGetTopLevelIrp", ANY);
    TOP_LEVEL_IRP.with(Cell::get)
}

extern "win64" fn io_set_top_level_irp(irp: usize) {
    objects::count("IoSetTopLevelIrp", ANY);
    TOP_LEVEL_IRP.with(|c| c.set(irp));
}

/// The key a symbolic link is found under: lower case, `\DosDevices\` and `\GLOBAL??\` as `\??\`.
fn link_key(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    for prefix in ["\\dosdevices\\", "\\global??\\"] {
        if let Some(rest) = lower.strip_prefix(prefix) {
            return format!("\\??\\{rest}");
        }
    }
    lower
}

/// The target of a link: a driver's own (IoCreateSymbolicLink), else a drive letter naming the
/// volumes in mount order (`C:` the first volume fltemu mounted, `D:` the second …).
fn link_target(name: &str) -> Option<String> {
    let key = link_key(name);
    if let Some(target) = LINKS.with(|t| t.get(&key).cloned()) {
        return Some(target);
    }
    let letter = key.strip_prefix("\\??\\")?.strip_suffix(':')?;
    let [letter] = letter.as_bytes() else { return None };
    let index = usize::from(letter.checked_sub(b'c')?);
    let inner = crate::state::current()?;
    let volumes = inner.volumes.read().unwrap_or_else(PoisonError::into_inner);
    volumes.get(index).filter(|v| v.mounted).map(|v| v.name.clone())
}

/// `ZwOpenSymbolicLinkObject` (wdm.h; PASSIVE): ObjectAttributes->ObjectName names a link the
/// driver created or a drive letter (`\??\C:` …); unknown → STATUS_OBJECT_NAME_NOT_FOUND.
extern "win64" fn zw_open_symbolic_link_object(handle: *mut usize, _access: u32, attributes: usize) -> i32 {
    objects::count("ZwOpenSymbolicLinkObject", PASSIVE_LEVEL);
    if handle.is_null() || attributes == 0 {
        return status::INVALID_PARAMETER;
    }
    // SAFETY: the caller's OBJECT_ATTRIBUTES; ObjectName (PUNICODE_STRING) at offset 16.
    let name = unsafe { ((attributes + 16) as *const *const UNICODE_STRING).read_unaligned() };
    let Some(target) = link_target(&string_of(name)) else {
        write_out(handle, 0);
        return status::OBJECT_NAME_NOT_FOUND;
    };
    let kernel = check_kernel_handle("ZwOpenSymbolicLinkObject", attributes);
    let value = handle_value(kernel);
    if !stale_thread() {
        LINK_HANDLES.with(|t| t.insert(value, target));
    }
    write_out(handle, value);
    status::SUCCESS
}

/// `ZwQuerySymbolicLinkObject` (wdm.h; PASSIVE): the target into LinkTarget (MaximumLength too
/// small → STATUS_BUFFER_TOO_SMALL with the bytes needed in ReturnedLength).
extern "win64" fn zw_query_symbolic_link_object(handle: usize, target: *mut UNICODE_STRING, returned: *mut u32) -> i32 {
    objects::count("ZwQuerySymbolicLinkObject", PASSIVE_LEVEL);
    let Some(text) = LINK_HANDLES.with(|t| t.get(&handle).cloned()) else { return INVALID_HANDLE };
    if target.is_null() {
        return status::INVALID_PARAMETER;
    }
    let units: Vec<u16> = text.encode_utf16().collect();
    let bytes = units.len() * 2;
    if !returned.is_null() {
        // SAFETY: the caller's optional out length.
        unsafe { returned.write_unaligned(bytes as u32) };
    }
    // SAFETY: the caller's UNICODE_STRING (Buffer and MaximumLength set by the caller).
    let value = unsafe { target.read_unaligned() };
    if usize::from(value.MaximumLength) < bytes || value.Buffer.is_null() {
        return status::BUFFER_TOO_SMALL;
    }
    // Buffer holds MaximumLength ≥ bytes bytes (at any alignment).
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { crate::driver_mem::write_units(value.Buffer, &units) };
    // SAFETY: the caller's UNICODE_STRING.
    unsafe { target.write_unaligned(UNICODE_STRING { Length: bytes as u16, ..value }) };
    status::SUCCESS
}

// ---- volumes, instances, processes and threads by id, previous mode, addresses ----

/// The mounted volumes' indexes and their instances of this filter.
fn mounted() -> Vec<(usize, Option<isize>)> {
    let Some(inner) = crate::state::current() else { return Vec::new() };
    let volumes = inner.volumes.read().unwrap_or_else(PoisonError::into_inner);
    volumes.iter().enumerate().filter(|(_, v)| v.mounted).map(|(i, v)| (i, v.instance)).collect()
}

/// Writes up to `size` referenced handles into `list`; the count found into `returned`.
fn enumerate(function: &'static str, found: &[isize], kind: ObjectKind, list: *mut isize, size: u32, returned: *mut u32) -> i32 {
    if returned.is_null() {
        objects::flag(crate::Violation::InvalidParameter { function, reason: "NumberReturned is required" });
        return status::INVALID_PARAMETER;
    }
    // SAFETY: the caller's required out count.
    unsafe { returned.write_unaligned(found.len() as u32) };
    if list.is_null() || (size as usize) < found.len() {
        return status::BUFFER_TOO_SMALL;
    }
    for (i, handle) in found.iter().enumerate() {
        crate::volume::add_reference(*handle, kind);
        // SAFETY: the caller's array of `size` ≥ found.len() pointers.
        unsafe { list.wrapping_add(i).write_unaligned(*handle) };
    }
    status::SUCCESS
}

/// `FltEnumerateVolumes` (fltkernel.h; ≤ APC): every mounted volume, each referenced (the
/// caller must FltObjectDereference each: else ObjectLeaked(VolumeReference)); a list too
/// small (or NULL) → STATUS_BUFFER_TOO_SMALL with the count found.
extern "win64" fn flt_enumerate_volumes(_filter: usize, list: *mut isize, size: u32, returned: *mut u32) -> i32 {
    objects::count("FltEnumerateVolumes", APC_LEVEL);
    let found: Vec<isize> = mounted().iter().map(|(i, _)| crate::state::volume_handle(*i)).collect();
    enumerate("FltEnumerateVolumes", &found, ObjectKind::VolumeReference, list, size, returned)
}

/// `FltEnumerateInstances` (fltkernel.h; ≤ APC): this filter's instances (on Volume when it is
/// given), each referenced; too small → STATUS_BUFFER_TOO_SMALL with the count.
extern "win64" fn flt_enumerate_instances(volume: usize, _filter: usize, list: *mut isize, size: u32, returned: *mut u32) -> i32 {
    objects::count("FltEnumerateInstances", APC_LEVEL);
    let found: Vec<isize> = mounted().iter().filter(|(i, _)| volume == 0 || crate::state::volume_handle(*i).cast_unsigned() == volume).filter_map(|(_, instance)| *instance).collect();
    enumerate("FltEnumerateInstances", &found, ObjectKind::InstanceReference, list, size, returned)
}

/// `FltGetVolumeGuidName` (fltkernel.h; ≤ APC): `\??\Volume{0f17e000-0000-4000-8000-<volume>}`;
/// NULL or too small a buffer → STATUS_BUFFER_TOO_SMALL with the bytes needed; both NULL →
/// STATUS_INVALID_PARAMETER; not a volume → STATUS_FLT_VOLUME_NOT_FOUND.
extern "win64" fn flt_get_volume_guid_name(volume: usize, name: *mut UNICODE_STRING, needed: *mut u32) -> i32 {
    objects::count("FltGetVolumeGuidName", APC_LEVEL);
    let Some(index) = mounted().iter().map(|(i, _)| *i).find(|i| crate::state::volume_handle(*i).cast_unsigned() == volume) else {
        return status::FLT_VOLUME_NOT_FOUND;
    };
    let units: Vec<u16> = format!("\\??\\Volume{{0f17e000-0000-4000-8000-{:012x}}}", index + 1).encode_utf16().collect();
    let bytes = units.len() * 2;
    if name.is_null() && needed.is_null() {
        return status::INVALID_PARAMETER;
    }
    if !needed.is_null() {
        // SAFETY: the caller's optional out size.
        unsafe { needed.write_unaligned(bytes as u32) };
    }
    if name.is_null() {
        return status::BUFFER_TOO_SMALL;
    }
    // SAFETY: the caller's UNICODE_STRING.
    let value = unsafe { name.read_unaligned() };
    if usize::from(value.MaximumLength) < bytes || value.Buffer.is_null() {
        return status::BUFFER_TOO_SMALL;
    }
    // Buffer holds MaximumLength ≥ bytes bytes (at any alignment).
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { crate::driver_mem::write_units(value.Buffer, &units) };
    // SAFETY: the caller's UNICODE_STRING.
    unsafe { name.write_unaligned(UNICODE_STRING { Length: bytes as u16, ..value }) };
    status::SUCCESS
}

/// `ExGetPreviousMode` (wdm.h; any IRQL): UserMode in callbacks fltemu issues on behalf of a
/// user process (I/O, port messages from a requestor pid), KernelMode in the system process.
extern "win64" fn ex_get_previous_mode() -> i8 {
    objects::count("ExGetPreviousMode", ANY);
    i8::from(exec::current_pid() != 4)
}

/// `PsGetProcessExitStatus` (ntddk.h; ≤ DISPATCH): STATUS_PENDING (fltemu's processes are
/// running while a driver holds them).
extern "win64" fn ps_get_process_exit_status(process: usize) -> i32 {
    objects::count("PsGetProcessExitStatus", DISPATCH_LEVEL);
    if crate::ps::pid_of(process).is_none() {
        objects::misuse("PsGetProcessExitStatus", ObjectKind::ProcessReference, "not a process object");
        return status::INVALID_PARAMETER;
    }
    STATUS_PENDING
}

/// `PsLookupThreadByThreadId` (ntifs.h; ≤ APC): a referenced thread object (ObDereferenceObject
/// it, else ObjectLeaked) for a thread id fltemu has seen; else STATUS_INVALID_PARAMETER.
extern "win64" fn ps_lookup_thread_by_thread_id(tid: usize, thread: *mut usize) -> i32 {
    objects::count("PsLookupThreadByThreadId", APC_LEVEL);
    if thread.is_null() {
        return status::INVALID_PARAMETER;
    }
    let Some(object) = crate::ps::thread_by_id(tid) else {
        write_out(thread, 0);
        return status::INVALID_PARAMETER;
    };
    crate::ps::add_reference(object);
    write_out(thread, object);
    status::SUCCESS
}

/// `MmIsAddressValid` (ntddk.h; ≤ DISPATCH): whether reading the byte would not fault.
extern "win64" fn mm_is_address_valid(address: usize) -> u8 {
    objects::count("MmIsAddressValid", DISPATCH_LEVEL);
    let mut byte = 0u8;
    u8::from(crate::nt::copy_without_faulting(&raw mut byte as usize, address, 1) == 1)
}

// ---- strings, registry, Filter Manager ----

/// `RtlInitAnsiString` (wdm.h; ≤ DISPATCH for a non-paged source): Length = strlen, MaximumLength
/// = Length + 1; NULL source → an empty string.
extern "win64" fn rtl_init_ansi_string(string: *mut u8, source: *const u8) {
    objects::count("RtlInitAnsiString", DISPATCH_LEVEL);
    let length = if source.is_null() {
        0
    } else {
        // SAFETY: a NUL-terminated string (the DDI's contract); no more than 0xFFFF bytes read.
        unsafe { crate::driver_mem::c_string(source, 0xFFFF) }.len().min(0xFFFE)
    };
    let header = [length as u16, if source.is_null() { 0 } else { length as u16 + 1 }];
    // SAFETY: the caller's ANSI_STRING: Length, MaximumLength, then Buffer at 8.
    unsafe { core::ptr::copy_nonoverlapping(header.as_ptr().cast::<u8>(), string, 4) };
    // SAFETY: as above.
    unsafe { string.wrapping_add(8).cast::<usize>().write_unaligned(source as usize) };
}

/// `ZwSetValueKey` / `ZwEnumerateValueKey` / `ZwEnumerateKey` / `ZwQueryKey` (wdm.h; PASSIVE):
/// fltemu has no registry and ZwOpenKey opens no key, so every key handle is invalid.
extern "win64" fn zw_set_value_key(_key: usize, _name: usize, _index: u32, _kind: u32, _data: usize, _size: u32) -> i32 {
    objects::count("ZwSetValueKey", PASSIVE_LEVEL);
    INVALID_HANDLE
}

extern "win64" fn zw_enumerate_value_key(_key: usize, _index: u32, _class: i32, _information: usize, _length: u32, returned: *mut u32) -> i32 {
    objects::count("ZwEnumerateValueKey", PASSIVE_LEVEL);
    if !returned.is_null() {
        // SAFETY: the caller's out length.
        unsafe { returned.write_unaligned(0) };
    }
    INVALID_HANDLE
}

extern "win64" fn zw_enumerate_key(_key: usize, _index: u32, _class: i32, _information: usize, _length: u32, returned: *mut u32) -> i32 {
    objects::count("ZwEnumerateKey", PASSIVE_LEVEL);
    if !returned.is_null() {
        // SAFETY: the caller's out length.
        unsafe { returned.write_unaligned(0) };
    }
    INVALID_HANDLE
}

extern "win64" fn zw_query_key(_key: usize, _class: i32, _information: usize, _length: u32, returned: *mut u32) -> i32 {
    objects::count("ZwQueryKey", PASSIVE_LEVEL);
    if !returned.is_null() {
        // SAFETY: the caller's out length.
        unsafe { returned.write_unaligned(0) };
    }
    INVALID_HANDLE
}

extern "win64" fn zw_delete_key(_key: usize) -> i32 {
    objects::count("ZwDeleteKey", PASSIVE_LEVEL);
    INVALID_HANDLE
}

/// `MmFlushImageSection` (ntifs.h; ≤ APC): TRUE: fltemu maps no file as an image, so there is
/// never an image section to keep.
extern "win64" fn mm_flush_image_section(_pointers: usize, _kind: i32) -> u8 {
    objects::count("MmFlushImageSection", APC_LEVEL);
    1
}

/// The file object type's GENERIC_MAPPING: FILE_GENERIC_READ/WRITE/EXECUTE, FILE_ALL_ACCESS.
static FILE_GENERIC_MAPPING: [u32; 4] = [0x0012_0089, 0x0012_0116, 0x0012_00A0, 0x001F_01FF];

/// `IoGetFileObjectGenericMapping` (ntifs.h; any IRQL).
extern "win64" fn io_get_file_object_generic_mapping() -> usize {
    objects::count("IoGetFileObjectGenericMapping", ANY);
    FILE_GENERIC_MAPPING.as_ptr() as usize
}

/// `RtlMapGenericMask` (wdm.h; any IRQL): GENERIC_READ/WRITE/EXECUTE/ALL replaced by the
/// mapping's rights.
extern "win64" fn rtl_map_generic_mask(mask: *mut u32, mapping: *const u32) {
    objects::count("RtlMapGenericMask", ANY);
    if mask.is_null() || mapping.is_null() {
        return;
    }
    // SAFETY: the caller's ACCESS_MASK.
    let mut value = unsafe { mask.read_unaligned() };
    for (i, generic) in [0x8000_0000_u32, 0x4000_0000, 0x2000_0000, 0x1000_0000].into_iter().enumerate() {
        if value & generic != 0 {
            // SAFETY: the caller's GENERIC_MAPPING: four ACCESS_MASKs.
            value = (value & !generic) | unsafe { mapping.wrapping_add(i).read_unaligned() };
        }
    }
    // SAFETY: as above.
    unsafe { mask.write_unaligned(value) };
}

/// NTDDI_WIN10_VB: the newest DDI version of the Windows 10 22H2 RtlGetVersion reports.
const NTDDI_VERSION: u32 = 0x0A00_0008;

/// `RtlIsNtDdiVersionAvailable` (wdm.h; any IRQL): what ExInitializeDriverRuntime asks.
extern "win64" fn rtl_is_nt_ddi_version_available(version: u32) -> u8 {
    objects::count("RtlIsNtDdiVersionAvailable", ANY);
    u8::from(version <= NTDDI_VERSION)
}

/// `NlsMbCodePageTag` (data, wdm.h's NLS_MB_CODE_PAGE_TAG): FALSE, a single-byte code page.
static NLS_MB_CODE_PAGE_TAG: u8 = 0;

/// `RtlxUnicodeStringToAnsiSize` (wdm.h, behind RtlUnicodeStringToAnsiSize; PASSIVE): the
/// bytes an ANSI copy needs with its NUL.
extern "win64" fn rtlx_unicode_string_to_ansi_size(string: *const UNICODE_STRING) -> u32 {
    objects::count("RtlxUnicodeStringToAnsiSize", PASSIVE_LEVEL);
    if string.is_null() {
        return 1;
    }
    // SAFETY: the caller's UNICODE_STRING.
    let value = unsafe { string.read_unaligned() };
    u32::from(value.Length) / 2 + 1
}

/// `FltGetEcpListFromCallbackData` (fltkernel.h; ≤ APC): fltemu's creates carry no extra create
/// parameters, so STATUS_SUCCESS with a NULL list (as for a create without ECPs).
extern "win64" fn flt_get_ecp_list_from_callback_data(_filter: usize, data: usize, list: *mut usize) -> i32 {
    objects::count("FltGetEcpListFromCallbackData", APC_LEVEL);
    if data == 0 || list.is_null() {
        return status::INVALID_PARAMETER;
    }
    write_out(list, 0);
    status::SUCCESS
}

/// `FltFindExtraCreateParameter` (fltkernel.h; ≤ APC): fltemu hands out no ECP list, so any list
/// passed is not one Filter Manager gave (InvalidParameter); STATUS_NOT_FOUND.
extern "win64" fn flt_find_extra_create_parameter(_filter: usize, list: usize, _kind: usize, context: *mut usize, _size: *mut u32) -> i32 {
    objects::count("FltFindExtraCreateParameter", APC_LEVEL);
    if list == 0 {
        objects::flag(crate::Violation::InvalidParameter { function: "FltFindExtraCreateParameter", reason: "a NULL ECP list (FltGetEcpListFromCallbackData returned none)" });
    } else {
        objects::flag(crate::Violation::InvalidParameter { function: "FltFindExtraCreateParameter", reason: "not an ECP list fltemu handed out (its creates carry none)" });
    }
    if !context.is_null() {
        write_out(context, 0);
    }
    status::NOT_FOUND
}

/// `FltIsEcpFromUserMode` (fltkernel.h; ≤ APC): no ECP context exists in fltemu, so any context
/// is not one (InvalidParameter); FALSE.
extern "win64" fn flt_is_ecp_from_user_mode(_filter: usize, _context: usize) -> u8 {
    objects::count("FltIsEcpFromUserMode", APC_LEVEL);
    objects::flag(crate::Violation::InvalidParameter { function: "FltIsEcpFromUserMode", reason: "not an ECP context (fltemu's creates carry none)" });
    0
}

/// `RtlAssert` (what wdm.h's ASSERT / ASSERTMSG call in DBG builds; ≤ APC): the assertion
/// failed, which with no kernel debugger attached is recorded as InvalidParameter and the run
/// continues (as DbgBreakPoint).
extern "win64" fn rtl_assert(_assertion: usize, _file: usize, _line: u32, _message: usize) {
    objects::count("RtlAssert", APC_LEVEL);
    objects::flag(crate::Violation::InvalidParameter { function: "RtlAssert", reason: "an ASSERT failed (a DBG build stops in the kernel debugger)" });
}

/// KERNEL_STACK_SIZE on x64: the stack StackTooDeep measures against.
const KERNEL_STACK_BYTES: usize = 0x6000;

/// `IoGetStackLimits` (wdm.h; any IRQL): the 24 KiB kernel stack fltemu checks against, ending
/// where the outermost driver call on this thread began (IoGetRemainingStackSize, an inline,
/// subtracts the low limit from a local's address).
extern "win64" fn io_get_stack_limits(low: *mut usize, high: *mut usize) {
    objects::count("IoGetStackLimits", ANY);
    let top = exec::stack_top().next_multiple_of(16);
    if !low.is_null() {
        write_out(low, top.saturating_sub(KERNEL_STACK_BYTES));
    }
    if !high.is_null() {
        write_out(high, top);
    }
}

/// `RtlInterlockedClearBits` (wdm.h; any IRQL): clears the run of bits atomically, word by word;
/// a run past SizeOfBitMap → InvalidParameter (nothing cleared).
extern "win64" fn rtl_interlocked_clear_bits(bitmap: *const usize, start: u32, count: u32) {
    objects::count("RtlInterlockedClearBits", ANY);
    if bitmap.is_null() {
        return;
    }
    // SAFETY: the caller's RTL_BITMAP: SizeOfBitMap (ULONG) at 0, Buffer at 8.
    let size = unsafe { bitmap.cast::<u32>().read_unaligned() };
    // SAFETY: as above.
    let buffer = unsafe { bitmap.wrapping_add(1).read_unaligned() };
    if u64::from(start) + u64::from(count) > u64::from(size) {
        objects::flag(crate::Violation::InvalidParameter { function: "RtlInterlockedClearBits", reason: "bits past SizeOfBitMap" });
        return;
    }
    if !buffer.is_multiple_of(4) {
        // RtlInitializeBitMap: "The base address of this buffer must be ULONG-aligned"; the
        // interlocked update is a ULONG atomic, which needs that alignment.
        objects::flag(crate::Violation::InvalidParameter { function: "RtlInterlockedClearBits", reason: "bitmap Buffer not ULONG-aligned" });
        return;
    }
    for bit in start..start + count {
        let word = buffer.wrapping_add((bit / 32) as usize * 4);
        if word < crate::seh::NULL_REGION {
            crate::seh::export_access_violation(word, true);
        }
        // SAFETY: a ULONG of the bitmap's buffer, inside SizeOfBitMap bits, ULONG-aligned
        // (checked).
        let atomic = unsafe { std::sync::atomic::AtomicU32::from_ptr(word as *mut u32) };
        atomic.fetch_and(!(1u32 << (bit % 32)), Ordering::AcqRel);
    }
}

/// `FltCreateSystemVolumeInformationFolder` (fltkernel.h; PASSIVE): STATUS_SUCCESS for a live
/// instance (fltemu's volumes have no directories to create); anything else → INVALID_PARAMETER.
extern "win64" fn flt_create_system_volume_information_folder(instance: isize) -> i32 {
    let Some(inner) = objects::call("FltCreateSystemVolumeInformationFolder", PASSIVE_LEVEL) else { return status::UNSUCCESSFUL };
    if inner.instance(instance).is_none() {
        inner.violation(crate::Violation::InvalidParameter { function: "FltCreateSystemVolumeInformationFolder", reason: "not a live instance" });
        return status::INVALID_PARAMETER;
    }
    status::SUCCESS
}

/// `FltGetVolumeInstanceFromName` (fltkernel.h; ≤ APC): not resolved by name here: the
/// instance of the volume FltGetVolumeFromName finds is asked from volume.rs.
extern "win64" fn flt_get_volume_instance_from_name(filter: usize, volume: usize, instance_name: *const UNICODE_STRING, instance: *mut usize) -> i32 {
    objects::count("FltGetVolumeInstanceFromName", APC_LEVEL);
    if instance.is_null() {
        return status::INVALID_PARAMETER;
    }
    crate::volume::instance_of_volume("FltGetVolumeInstanceFromName", filter, volume, instance_name, instance)
}

// ---- bookkeeping ----

/// Forgets every object (a new emulator loads); earlier system threads become stale.
pub fn reset() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
    HANDLES.clear();
    LINK_HANDLES.clear();
    threads(HashMap::clear);
    THREAD_NOTIFY.clear();
    IMAGE_NOTIFY.clear();
    OB_CALLBACKS.clear();
    MUTEXES.clear();
    DEVICES.clear();
    LINKS.clear();
}

/// What the driver still holds at the end of unload.
pub fn outstanding() -> Vec<(ObjectKind, usize)> {
    // A thread told to stop in the unload callback may still be on its way out.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut running = threads(|t| t.values().filter(|ended| !**ended).count());
    while running > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        running = threads(|t| t.values().filter(|ended| !**ended).count());
    }
    vec![
        (ObjectKind::Handle, HANDLES.with(|t| t.len()) + LINK_HANDLES.with(|t| t.len())),
        (ObjectKind::SystemThread, running),
        (ObjectKind::Callback, OB_CALLBACKS.with(|t| t.len()) + IMAGE_NOTIFY.with(|t| t.len()) + THREAD_NOTIFY.with(|t| t.len())),
        (ObjectKind::Device, DEVICES.with(|t| t.len()) + LINKS.with(|t| t.len())),
    ]
}

/// ntoskrnl.exe exports of this module.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "PsProcessType" => std::ptr::from_ref(&PS_PROCESS_TYPE) as usize,
        "PsThreadType" => std::ptr::from_ref(&PS_THREAD_TYPE) as usize,
        "IoFileObjectType" => std::ptr::from_ref(&IO_FILE_OBJECT_TYPE) as usize,
        "ZwOpenProcess" => zw_open_process as *const () as usize,
        "ObOpenObjectByPointer" => ob_open_object_by_pointer as *const () as usize,
        "ObReferenceObjectByHandle" => ob_reference_object_by_handle as *const () as usize,
        "NtClose" => nt_close as *const () as usize,
        "ObCloseHandle" => ob_close_handle as *const () as usize,
        "ZwQueryInformationProcess" => zw_query_information_process as *const () as usize,
        "PsCreateSystemThread" => ps_create_system_thread as *const () as usize,
        "PsTerminateSystemThread" => ps_terminate_system_thread as *const () as usize,
        "ObRegisterCallbacks" => ob_register_callbacks as *const () as usize,
        "ObUnRegisterCallbacks" => ob_unregister_callbacks as *const () as usize,
        "ObGetFilterVersion" => ob_get_filter_version as *const () as usize,
        "PsSetLoadImageNotifyRoutine" => ps_set_load_image_notify_routine as *const () as usize,
        "PsRemoveLoadImageNotifyRoutine" => ps_remove_load_image_notify_routine as *const () as usize,
        "PsSetCreateThreadNotifyRoutine" => ps_set_create_thread_notify_routine as *const () as usize,
        "PsRemoveCreateThreadNotifyRoutine" => ps_remove_create_thread_notify_routine as *const () as usize,
        "IoCreateDevice" => io_create_device as *const () as usize,
        "IoDeleteDevice" => io_delete_device as *const () as usize,
        "IoCreateSymbolicLink" => io_create_symbolic_link as *const () as usize,
        "IoDeleteSymbolicLink" => io_delete_symbolic_link as *const () as usize,
        "IofCompleteRequest" => iof_complete_request as *const () as usize,
        "IoGetTopLevelIrp" => io_get_top_level_irp as *const () as usize,
        "IoSetTopLevelIrp" => io_set_top_level_irp as *const () as usize,
        "RtlInitAnsiString" => rtl_init_ansi_string as *const () as usize,
        "ZwSetValueKey" => zw_set_value_key as *const () as usize,
        "ZwEnumerateValueKey" => zw_enumerate_value_key as *const () as usize,
        "ZwOpenSymbolicLinkObject" => zw_open_symbolic_link_object as *const () as usize,
        "ZwQuerySymbolicLinkObject" => zw_query_symbolic_link_object as *const () as usize,
        "ExGetPreviousMode" => ex_get_previous_mode as *const () as usize,
        "PsGetProcessExitStatus" => ps_get_process_exit_status as *const () as usize,
        "PsLookupThreadByThreadId" => ps_lookup_thread_by_thread_id as *const () as usize,
        "MmIsAddressValid" => mm_is_address_valid as *const () as usize,
        "KeInitializeMutex" => ke_initialize_mutex as *const () as usize,
        "KeReleaseMutex" => ke_release_mutex as *const () as usize,
        "ExInterlockedInsertTailList" => ex_interlocked_insert_tail_list as *const () as usize,
        "ExInterlockedInsertHeadList" => ex_interlocked_insert_head_list as *const () as usize,
        "ExInterlockedRemoveHeadList" => ex_interlocked_remove_head_list as *const () as usize,
        "KeStackAttachProcess" => ke_stack_attach_process as *const () as usize,
        "KeUnstackDetachProcess" => ke_unstack_detach_process as *const () as usize,
        "ZwEnumerateKey" => zw_enumerate_key as *const () as usize,
        "ZwQueryKey" => zw_query_key as *const () as usize,
        "ZwDeleteKey" => zw_delete_key as *const () as usize,
        "MmFlushImageSection" => mm_flush_image_section as *const () as usize,
        "IoGetFileObjectGenericMapping" => io_get_file_object_generic_mapping as *const () as usize,
        "RtlMapGenericMask" => rtl_map_generic_mask as *const () as usize,
        "RtlIsNtDdiVersionAvailable" => rtl_is_nt_ddi_version_available as *const () as usize,
        "NlsMbCodePageTag" => std::ptr::from_ref(&NLS_MB_CODE_PAGE_TAG) as usize,
        "RtlxUnicodeStringToAnsiSize" => rtlx_unicode_string_to_ansi_size as *const () as usize,
        "IoGetStackLimits" => io_get_stack_limits as *const () as usize,
        "RtlAssert" => rtl_assert as *const () as usize,
        "RtlInterlockedClearBits" => rtl_interlocked_clear_bits as *const () as usize,
        _ => return None,
    })
}

/// fltmgr.sys exports of this module.
pub fn resolve_flt(name: &str) -> Option<usize> {
    Some(match name {
        "FltGetVolumeInstanceFromName" => flt_get_volume_instance_from_name as *const () as usize,
        "FltEnumerateVolumes" => flt_enumerate_volumes as *const () as usize,
        "FltEnumerateInstances" => flt_enumerate_instances as *const () as usize,
        "FltGetVolumeGuidName" => flt_get_volume_guid_name as *const () as usize,
        "FltGetEcpListFromCallbackData" => flt_get_ecp_list_from_callback_data as *const () as usize,
        "FltFindExtraCreateParameter" => flt_find_extra_create_parameter as *const () as usize,
        "FltIsEcpFromUserMode" => flt_is_ecp_from_user_mode as *const () as usize,
        "FltCreateSystemVolumeInformationFolder" => flt_create_system_volume_information_folder as *const () as usize,
        _ => return None,
    })
}

const fn nt(function: &'static str, header: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "ntoskrnl.exe", function, notes, source: Source::Ddi(header) }
}

const fn nt_as(function: &'static str, header: &'static str, documented: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "ntoskrnl.exe", function, notes, source: Source::DdiAs(header, documented) }
}

const OBJECT_TYPES_PAGE: Source = Source::Page("Object types (ObReferenceObjectByHandle's ObjectType parameter)", "https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-obreferenceobjectbyhandle");

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    Emulated { dll: "ntoskrnl.exe", function: "PsProcessType", notes: "data: the POBJECT_TYPE of process objects (for ObReferenceObjectByHandle / ObOpenObjectByPointer type checks)", source: OBJECT_TYPES_PAGE },
    Emulated { dll: "ntoskrnl.exe", function: "PsThreadType", notes: "data: the POBJECT_TYPE of thread objects", source: OBJECT_TYPES_PAGE },
    Emulated { dll: "ntoskrnl.exe", function: "IoFileObjectType", notes: "data: the POBJECT_TYPE of FILE_OBJECTs (ObReferenceObjectByHandle on a FltCreateFile handle)", source: OBJECT_TYPES_PAGE },
    nt("ZwOpenProcess", "ntddk", "PASSIVE; a handle to ClientId.UniqueProcess's process (pid 0 → STATUS_INVALID_CID); without OBJ_KERNEL_HANDLE outside the system process → InvalidParameter; not closed at unload → ObjectLeaked(Handle)"),
    nt("ObOpenObjectByPointer", "ntifs", "PASSIVE; a handle to a process or thread object (else ObjectMisuse + INVALID_PARAMETER); ObjectType mismatch → STATUS_OBJECT_TYPE_MISMATCH; OBJ_KERNEL_HANDLE rule and leak check as ZwOpenProcess"),
    nt("ObReferenceObjectByHandle", "wdm", "PASSIVE; the handle's object referenced (must be ObDereferenceObject'ed: else ObjectLeaked(ProcessReference), or FILE_OBJECT reference for a FltCreateFile handle); process, thread and FltCreateFile handles, NtCurrentProcess()/NtCurrentThread(); unknown handle → STATUS_INVALID_HANDLE; type mismatch → STATUS_OBJECT_TYPE_MISMATCH"),
    nt("NtClose", "ntifs", "PASSIVE; closes a handle fltemu handed out; anything else → ObjectMisuse + STATUS_INVALID_HANDLE"),
    nt("ObCloseHandle", "wdm", "as NtClose"),
    nt("ZwQueryInformationProcess", "ntddk", "PASSIVE; ProcessBasicInformation (length ≠ 48 → INFO_LENGTH_MISMATCH; pid, parent 1000, ExitStatus STATUS_PENDING) and ProcessImageFileName (UNICODE_STRING + `\\Device\\HarddiskVolume1\\Windows\\System32\\process<pid>.exe`; too small → INFO_LENGTH_MISMATCH with the size needed); other classes → INVALID_INFO_CLASS; a thread handle → OBJECT_TYPE_MISMATCH"),
    nt("PsCreateSystemThread", "wdm", "PASSIVE; StartRoutine runs on an emulator worker at PASSIVE in the system process (thread notify routines called first); a kernel handle to close; waitable with KeWaitForSingleObject (signaled when it ends); still running at the end of unload → ObjectLeaked(SystemThread); OBJ_KERNEL_HANDLE rule as ZwOpenProcess; injectable"),
    nt("PsTerminateSystemThread", "wdm", "PASSIVE; ends the calling system thread without returning (its driver frames are abandoned); on any other thread → InvalidParameter + STATUS_INVALID_PARAMETER"),
    nt("ObRegisterCallbacks", "wdm", "PASSIVE; Version OB_FLT_REGISTRATION_VERSION, a non-zero OperationRegistrationCount and array (else INVALID_PARAMETER); STATUS_ACCESS_DENIED unless linked /INTEGRITYCHECK; an altitude in use → FLT_INSTANCE_ALTITUDE_COLLISION; not unregistered at unload → ObjectLeaked(Callback); the callbacks are never called (no handle operations are issued)"),
    nt("ObUnRegisterCallbacks", "wdm", "PASSIVE; an unknown or already-removed registration → ObjectMisuse"),
    nt("ObGetFilterVersion", "wdm", "OB_FLT_REGISTRATION_VERSION (0x0100)"),
    nt("PsSetLoadImageNotifyRoutine", "ntddk", "PASSIVE; ≤ 64 routines (else INSUFFICIENT_RESOURCES), twice → INVALID_PARAMETER; still registered at unload → ObjectLeaked(Callback); not called (fltemu loads no images)"),
    nt("PsRemoveLoadImageNotifyRoutine", "ntddk", "PASSIVE; not registered → STATUS_PROCEDURE_NOT_FOUND"),
    nt("PsSetCreateThreadNotifyRoutine", "ntddk", "as PsSetLoadImageNotifyRoutine; called (pid 4, thread id, Create) in each system thread the driver creates, at its start and end"),
    nt("PsRemoveCreateThreadNotifyRoutine", "ntddk", "PASSIVE; not registered → STATUS_PROCEDURE_NOT_FOUND"),
    nt("IoCreateDevice", "wdm", "PASSIVE; a zeroed DEVICE_OBJECT (Type, Size, DriverObject, DeviceExtension, DeviceType, Characteristics, DO_DEVICE_INITIALIZING) at the head of DriverObject->DeviceObject; name in use → OBJECT_NAME_COLLISION; not deleted at unload → ObjectLeaked(Device); fltemu sends it no IRPs"),
    nt("IoDeleteDevice", "wdm", "PASSIVE; unlinked from the driver's list; not a live device → ObjectMisuse"),
    nt("IoCreateSymbolicLink", "wdm", "PASSIVE; link name in use → OBJECT_NAME_COLLISION; not deleted at unload → ObjectLeaked(Device)"),
    nt("IoDeleteSymbolicLink", "wdm", "PASSIVE; unknown link → OBJECT_NAME_NOT_FOUND"),
    nt_as("IofCompleteRequest", "wdm", "IoCompleteRequest", "≤ DISPATCH; fltemu sends no IRPs to a driver's devices, so any completion is InvalidParameter"),
    nt("IoGetTopLevelIrp", "ntifs", "any IRQL; what IoSetTopLevelIrp stored on this thread, NULL in Filter Manager callbacks"),
    nt("IoSetTopLevelIrp", "ntifs", "any IRQL; per thread"),
    nt("RtlInitAnsiString", "wdm", "≤ DISPATCH; Length = strlen, MaximumLength = Length + 1 (NULL → empty)"),
    nt("ZwSetValueKey", "wdm", "PASSIVE; no registry (ZwOpenKey opens no key): STATUS_INVALID_HANDLE"),
    nt("ZwEnumerateValueKey", "wdm", "PASSIVE; no registry: STATUS_INVALID_HANDLE"),
    nt("ZwOpenSymbolicLinkObject", "wdm", "PASSIVE; a link the driver created (IoCreateSymbolicLink) or a drive letter (`\\??\\C:` = the first volume mounted, `D:` the second …; `\\DosDevices\\`, `\\GLOBAL??\\` alike); unknown → OBJECT_NAME_NOT_FOUND; OBJ_KERNEL_HANDLE rule and leak check as ZwOpenProcess"),
    nt("ZwQuerySymbolicLinkObject", "wdm", "PASSIVE; the target; MaximumLength too small → BUFFER_TOO_SMALL with the bytes needed in ReturnedLength; not a link handle → STATUS_INVALID_HANDLE"),
    nt("ExGetPreviousMode", "wdm", "any IRQL; UserMode in callbacks issued for a user requestor, KernelMode in the system process"),
    nt("PsGetProcessExitStatus", "ntddk", "≤ DISPATCH; STATUS_PENDING (the process is running); not a process → ObjectMisuse"),
    nt("PsLookupThreadByThreadId", "ntifs", "≤ APC; a referenced thread object (ObDereferenceObject it, else ObjectLeaked(ProcessReference)); an id fltemu has not seen → INVALID_PARAMETER"),
    nt("MmIsAddressValid", "ntddk", "≤ DISPATCH; whether a one-byte read faults (process_vm_readv)"),
    nt("KeInitializeMutex", "wdm", "PASSIVE; a signaled KMUTEX; KeWaitForSingleObject acquires it (recursively for its owner) and enters a critical region, TIMEOUT at the deadline"),
    nt("KeReleaseMutex", "wdm", "≤ DISPATCH; one level of ownership, leaves the critical region; not the owner → ObjectMisuse (STATUS_MUTANT_NOT_OWNED on Windows)"),
    nt("ExInterlockedInsertTailList", "wdm", "any IRQL; under the KSPIN_LOCK word (the one KeAcquireSpinLock takes); returns the former tail or NULL; a lock not 8-byte aligned → InvalidParameter, nothing done, NULL (also for the head insert and remove)"),
    nt("ExInterlockedInsertHeadList", "wdm", "any IRQL; as ExInterlockedInsertTailList at the head"),
    nt("ExInterlockedRemoveHeadList", "wdm", "any IRQL; the first entry removed, NULL when empty"),
    nt("KeStackAttachProcess", "ntifs", "≤ DISPATCH; the thread runs in the process's context (PsGetCurrentProcessId …) until the matching detach; not a process → ObjectMisuse"),
    nt("KeUnstackDetachProcess", "ntifs", "≤ DISPATCH; back to the previous context; an ApcState that is not the innermost attach → ObjectMisuse"),
    nt("ZwEnumerateKey", "wdm", "PASSIVE; no registry: STATUS_INVALID_HANDLE"),
    nt("ZwQueryKey", "wdm", "PASSIVE; no registry: STATUS_INVALID_HANDLE"),
    nt("ZwDeleteKey", "wdm", "PASSIVE; no registry: STATUS_INVALID_HANDLE"),
    nt("MmFlushImageSection", "ntifs", "≤ APC; TRUE (fltemu maps no file as an image)"),
    nt("IoGetFileObjectGenericMapping", "ntifs", "any IRQL; FILE_GENERIC_READ/WRITE/EXECUTE, FILE_ALL_ACCESS"),
    nt("RtlMapGenericMask", "wdm", "any IRQL; GENERIC_* bits replaced by the mapping's rights"),
    nt("RtlIsNtDdiVersionAvailable", "wdm", "any IRQL; TRUE up to NTDDI_WIN10_VB (the 10.0.19045 RtlGetVersion reports); what ExInitializeDriverRuntime asks"),
    Emulated { dll: "ntoskrnl.exe", function: "NlsMbCodePageTag", notes: "data: FALSE (a single-byte ANSI code page), read by RtlUnicodeStringToAnsiSize", source: Source::DdiAs("wdm", "RtlUnicodeStringToAnsiSize") },
    Emulated { dll: "ntoskrnl.exe", function: "RtlxUnicodeStringToAnsiSize", notes: "PASSIVE; Length / 2 + 1", source: Source::DdiAs("wdm", "RtlUnicodeStringToAnsiSize") },
    nt_as("RtlAssert", "wdm", "ASSERT", "≤ APC; what ASSERT/ASSERTMSG call in Debug (DBG) builds when the expression is false: InvalidParameter, the run continues"),
    nt("IoGetStackLimits", "wdm", "any IRQL; the 24 KiB (KERNEL_STACK_SIZE) stack StackTooDeep measures, ending where this thread's outermost driver call began"),
    nt("RtlInterlockedClearBits", "wdm", "any IRQL; atomic per ULONG; a run past SizeOfBitMap, or a Buffer not ULONG-aligned (RtlInitializeBitMap's page requires it) → InvalidParameter, nothing cleared"),
    Emulated { dll: "fltmgr.sys", function: "FltCreateSystemVolumeInformationFolder", notes: "PASSIVE; STATUS_SUCCESS for a live instance (no directories exist to create); else InvalidParameter + INVALID_PARAMETER", source: Source::Ddi("fltkernel") },
    Emulated { dll: "fltmgr.sys", function: "FltGetEcpListFromCallbackData", notes: "≤ APC; STATUS_SUCCESS with a NULL list: fltemu's creates carry no extra create parameters", source: Source::Ddi("fltkernel") },
    Emulated { dll: "fltmgr.sys", function: "FltFindExtraCreateParameter", notes: "≤ APC; no list fltemu hands out exists, so any call is InvalidParameter; STATUS_NOT_FOUND", source: Source::Ddi("fltkernel") },
    Emulated { dll: "fltmgr.sys", function: "FltIsEcpFromUserMode", notes: "≤ APC; no ECP context exists: InvalidParameter, FALSE", source: Source::Ddi("fltkernel") },
    Emulated { dll: "fltmgr.sys", function: "FltEnumerateVolumes", notes: "≤ APC; every mounted volume, each referenced (FltObjectDereference each, else ObjectLeaked(VolumeReference)); NULL or too small a list → BUFFER_TOO_SMALL with the count", source: Source::Ddi("fltkernel") },
    Emulated { dll: "fltmgr.sys", function: "FltEnumerateInstances", notes: "≤ APC; the filter's instances (on Volume when given), each referenced (else ObjectLeaked(InstanceReference)); too small → BUFFER_TOO_SMALL with the count", source: Source::Ddi("fltkernel") },
    Emulated { dll: "fltmgr.sys", function: "FltGetVolumeGuidName", notes: "≤ APC; `\\??\\Volume{0f17e000-0000-4000-8000-<n>}`; NULL or too small → BUFFER_TOO_SMALL with the bytes needed; both NULL → INVALID_PARAMETER; unknown volume → FLT_VOLUME_NOT_FOUND", source: Source::Ddi("fltkernel") },
    Emulated { dll: "fltmgr.sys", function: "FltGetVolumeInstanceFromName", notes: "≤ APC; the filter's instance on the volume (fltemu attaches one per volume, so any InstanceName names it), referenced (FltObjectDereference; else ObjectLeaked(InstanceReference)); none → STATUS_FLT_INSTANCE_NOT_FOUND", source: Source::Ddi("fltkernel") },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_fold_the_dos_device_prefixes() {
        assert_eq!(link_key("\\DosDevices\\C:"), "\\??\\c:");
        assert_eq!(link_key("\\GLOBAL??\\FltemuMonitor"), "\\??\\fltemumonitor");
        assert_eq!(link_key("\\??\\X:"), "\\??\\x:");
    }

    #[test]
    fn interlocked_lists_keep_fifo_order_and_report_the_former_tail() {
        let mut head = [0usize; 2];
        let mut entries = [[0usize; 2]; 3];
        let head_at = head.as_mut_ptr() as usize;
        head = [head_at, head_at];
        let mut lock = 0usize;
        let lock_at = &raw mut lock as usize;
        let at = |i: usize, e: &mut [[usize; 2]; 3]| e[i].as_mut_ptr() as usize;
        assert_eq!(ex_interlocked_insert_tail_list(head_at, at(0, &mut entries), lock_at), 0, "empty list: NULL");
        assert_eq!(ex_interlocked_insert_tail_list(head_at, at(1, &mut entries), lock_at), at(0, &mut entries));
        assert_eq!(ex_interlocked_insert_head_list(head_at, at(2, &mut entries), lock_at), at(0, &mut entries));
        assert_eq!(ex_interlocked_remove_head_list(head_at, lock_at), at(2, &mut entries));
        assert_eq!(ex_interlocked_remove_head_list(head_at, lock_at), at(0, &mut entries));
        assert_eq!(ex_interlocked_remove_head_list(head_at, lock_at), at(1, &mut entries));
        assert_eq!(ex_interlocked_remove_head_list(head_at, lock_at), 0);
        assert_eq!(head, [head_at, head_at]);
        assert_eq!(lock, 0, "the spin lock is released");
    }

    #[test]
    fn generic_rights_map_to_the_file_mapping() {
        let mut mask = 0x8000_0000_u32 | 0x0001;
        rtl_map_generic_mask(&raw mut mask, io_get_file_object_generic_mapping() as *const u32);
        assert_eq!(mask, 0x0012_0089 | 0x0001);
        assert_eq!(rtl_is_nt_ddi_version_available(0x0A00_0000), 1);
        assert_eq!(rtl_is_nt_ddi_version_available(0x0A00_000C), 0);
    }

    #[test]
    fn ob_callback_registrations_are_validated_before_the_signing_rule() {
        let mut handle = 0usize;
        let mut registration = [0u8; 40];
        registration[0..2].copy_from_slice(&0x0200u16.to_le_bytes());
        assert_eq!(ob_register_callbacks(registration.as_ptr(), &raw mut handle), status::INVALID_PARAMETER, "wrong version");
        registration[0..2].copy_from_slice(&OB_FLT_REGISTRATION_VERSION.to_le_bytes());
        assert_eq!(ob_register_callbacks(registration.as_ptr(), &raw mut handle), status::INVALID_PARAMETER, "no operations");
        let operation = [0u8; 32];
        registration[2..4].copy_from_slice(&1u16.to_le_bytes());
        registration[32..40].copy_from_slice(&(operation.as_ptr() as u64).to_le_bytes());
        assert_eq!(ob_register_callbacks(registration.as_ptr(), &raw mut handle), status::ACCESS_DENIED, "an image not linked /INTEGRITYCHECK");
        assert_eq!(ob_get_filter_version(), 0x0100);
    }

    #[test]
    fn address_validity_and_bitmaps() {
        let local = 7u64;
        assert_eq!(mm_is_address_valid(&raw const local as usize), 1);
        assert_eq!(mm_is_address_valid(0x10), 0);
        let mut bits = [u32::MAX; 2];
        let bitmap: [usize; 2] = [64, bits.as_mut_ptr() as usize];
        rtl_interlocked_clear_bits(bitmap.as_ptr(), 30, 4);
        assert_eq!(bits, [0x3FFF_FFFF, 0xFFFF_FFFC]);
        rtl_interlocked_clear_bits(bitmap.as_ptr(), 62, 4);
        assert_eq!(bits[1], 0xFFFF_FFFC, "a run past the end clears nothing");
    }

    #[test]
    fn a_handle_closes_once() {
        let handle = new_handle(0x1234, process_type(), true);
        assert!(handle & 0xFFFF_FFFF_8000_0000 == 0xFFFF_FFFF_8000_0000, "kernel handles have the top bit set");
        assert_eq!(nt_close(handle), status::SUCCESS);
        assert_eq!(nt_close(handle), INVALID_HANDLE);
    }

    #[test]
    fn object_types_are_distinct() {
        assert_ne!(process_type(), thread_type());
    }
}
