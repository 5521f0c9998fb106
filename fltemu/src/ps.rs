//! Processes and threads as the driver sees them: process and thread objects (opaque blocks
//! fltemu owns, one per emulated pid / host thread), their reference counts through
//! ObReferenceObject / ObDereferenceObject (references a driver takes and never drops are
//! leaks at unload), PsLookupProcessByProcessId, SeLocateProcessImageName, and
//! process-creation notify routines, which must be removed before unload.

use crate::catalog::{Emulated, Source};
use crate::exec::{self, APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::objects::{self, ObjectKind, Table};
use crate::state::status;

/// Size of the opaque EPROCESS / ETHREAD blocks handed out.
const OBJECT_BYTES: usize = 0x400;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Process(u32),
    Thread(usize, u32),
}

struct Object {
    kind: Kind,
    /// References the driver took (ObReferenceObject, PsLookup*) minus those it dropped.
    driver_refs: i64,
}

/// Object address → record; plus the address of each pid's process and each thread id's thread.
static OBJECTS: Table<usize, Object> = Table::new();
static BY_PROCESS: Table<u32, usize> = Table::new();
static BY_THREAD: Table<usize, usize> = Table::new();
/// Other objects the driver referenced (FILE_OBJECTs, …): address → references held.
static FOREIGN: Table<usize, i64> = Table::new();
/// Registered process notify routines: routine → Ex variant.
static NOTIFY: Table<usize, bool> = Table::new();

fn new_block() -> usize {
    Box::into_raw(Box::new([0u8; OBJECT_BYTES])) as usize
}

/// The process object of `pid` (created on first use, kept until the process ends).
fn process_object(pid: u32) -> usize {
    let address = BY_PROCESS.with(|t| *t.entry(pid).or_insert_with(new_block));
    OBJECTS.with(|t| {
        t.entry(address).or_insert(Object { kind: Kind::Process(pid), driver_refs: 0 });
    });
    address
}

/// The process object of `pid`, not referenced (FltGetRequestorProcess).
pub fn process_of(pid: u32) -> usize {
    process_object(pid)
}

/// This host thread's thread object (PsGetCurrentThread; also wild.rs's system threads).
pub fn thread_object() -> usize {
    let tid = objects::thread_id();
    let pid = exec::current_pid();
    let address = BY_THREAD.with(|t| *t.entry(tid).or_insert_with(new_block));
    OBJECTS.with(|t| t.insert(address, Object { kind: Kind::Thread(tid, pid), driver_refs: t.get(&address).map_or(0, |o| o.driver_refs) }));
    address
}

/// Forgets every object (a new emulator loads); the blocks stay allocated.
pub fn reset() {
    OBJECTS.clear();
    BY_PROCESS.clear();
    BY_THREAD.clear();
    FOREIGN.clear();
    NOTIFY.clear();
}

/// References held at unload and routines not removed.
pub fn outstanding() -> Vec<(ObjectKind, usize)> {
    let process_refs = OBJECTS.with(|t| t.values().map(|o| o.driver_refs.max(0)).sum::<i64>());
    let foreign = FOREIGN.with(|t| t.values().map(|r| (*r).max(0)).sum::<i64>());
    vec![(ObjectKind::ProcessReference, usize::try_from(process_refs + foreign).unwrap_or(0)), (ObjectKind::NotifyRoutine, NOTIFY.with(|t| t.len()))]
}

/// `IoGetCurrentProcess` (wdm.h; ≤ DISPATCH; `PsGetCurrentProcess` is the same export): the
/// current process, not referenced.
extern "win64" fn io_get_current_process() -> usize {
    objects::count("IoGetCurrentProcess", DISPATCH_LEVEL);
    process_object(exec::current_pid())
}

/// `PsGetCurrentThread` (wdm.h; ≤ DISPATCH): the current thread, not referenced.
extern "win64" fn ps_get_current_thread() -> usize {
    objects::count("PsGetCurrentThread", DISPATCH_LEVEL);
    thread_object()
}

/// `PsGetCurrentThreadId` (wdm.h; any IRQL).
extern "win64" fn ps_get_current_thread_id() -> usize {
    objects::count("PsGetCurrentThreadId", 15);
    objects::thread_id()
}

/// The pid of a process object, or None (wild.rs's handles and process queries).
pub fn pid_of(object: usize) -> Option<u32> {
    match kind_of(object) {
        Some(Kind::Process(pid)) => Some(pid),
        _ => None,
    }
}

/// The thread id of a thread object (0 if it is not one).
pub fn thread_id_of(object: usize) -> usize {
    match kind_of(object) {
        Some(Kind::Thread(tid, _)) => tid,
        _ => 0,
    }
}

/// The thread object of thread id `tid`, if that thread exists (PsLookupThreadByThreadId).
pub fn thread_by_id(tid: usize) -> Option<usize> {
    BY_THREAD.with(|t| t.get(&tid).copied())
}

/// Whether `object` is one of this module's thread objects.
pub fn is_thread(object: usize) -> bool {
    matches!(kind_of(object), Some(Kind::Thread(..)))
}

/// One more driver reference on `object`, without counting a call (ObReferenceObjectByHandle
/// hands out a reference the driver must drop with ObDereferenceObject).
pub fn add_reference(object: usize) {
    if crate::fltfile::reference(object) {
        return;
    }
    if OBJECTS.with(|t| t.get_mut(&object).map(|o| o.driver_refs += 1)).is_none() {
        FOREIGN.with(|t| *t.entry(object).or_insert(0) += 1);
    }
}

fn kind_of(object: usize) -> Option<Kind> {
    OBJECTS.with(|t| t.get(&object).map(|o| o.kind))
}

/// `PsGetProcessId` (ntifs.h; any IRQL).
extern "win64" fn ps_get_process_id(process: usize) -> usize {
    objects::count("PsGetProcessId", 15);
    if let Some(Kind::Process(pid)) = kind_of(process) {
        pid as usize
    } else {
        objects::misuse("PsGetProcessId", ObjectKind::ProcessReference, "not a process object");
        0
    }
}

/// `IoThreadToProcess` (ntddk.h; any IRQL): the thread's process, not referenced.
extern "win64" fn io_thread_to_process(thread: usize) -> usize {
    objects::count("IoThreadToProcess", 15);
    if let Some(Kind::Thread(_, pid)) = kind_of(thread) {
        process_object(pid)
    } else {
        objects::misuse("IoThreadToProcess", ObjectKind::ProcessReference, "not a thread object");
        0
    }
}

/// `PsGetThreadProcessId` (ntifs.h; any IRQL) — what the issue calls IoThreadToProcessId.
extern "win64" fn ps_get_thread_process_id(thread: usize) -> usize {
    objects::count("PsGetThreadProcessId", 15);
    match kind_of(thread) {
        Some(Kind::Thread(_, pid)) => pid as usize,
        _ => 0,
    }
}

/// `PsGetThreadId` (ntifs.h; any IRQL).
extern "win64" fn ps_get_thread_id(thread: usize) -> usize {
    objects::count("PsGetThreadId", 15);
    match kind_of(thread) {
        Some(Kind::Thread(tid, _)) => tid,
        _ => 0,
    }
}

/// `PsLookupProcessByProcessId` (ntifs.h; ≤ APC): a referenced process object the caller must
/// ObDereferenceObject; pid 0 → STATUS_INVALID_PARAMETER.
extern "win64" fn ps_lookup_process_by_process_id(pid: usize, process: *mut usize) -> i32 {
    objects::count("PsLookupProcessByProcessId", APC_LEVEL);
    if process.is_null() {
        return status::INVALID_PARAMETER;
    }
    if pid == 0 || pid > u32::MAX as usize {
        // The caller's out pointer, at whatever alignment the driver chose.
        // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
        unsafe { crate::driver_mem::write(process, 0) };
        return status::INVALID_PARAMETER;
    }
    let object = process_object(pid as u32);
    OBJECTS.with(|t| t.get_mut(&object).map(|o| o.driver_refs += 1));
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { crate::driver_mem::write(process, object) };
    status::SUCCESS
}

fn reference(function: &'static str, object: usize) {
    objects::count(function, DISPATCH_LEVEL);
    if crate::fltfile::reference(object) {
        return;
    }
    if object == 0 {
        objects::misuse(function, ObjectKind::ProcessReference, "NULL object");
        return;
    }
    if OBJECTS.with(|t| t.get_mut(&object).map(|o| o.driver_refs += 1)).is_none() {
        FOREIGN.with(|t| *t.entry(object).or_insert(0) += 1);
    }
}

fn dereference(function: &'static str, object: usize) {
    objects::count(function, DISPATCH_LEVEL);
    if crate::fltfile::dereference(function, object) {
        return;
    }
    let known = OBJECTS.with(|t| {
        t.get_mut(&object).map(|o| {
            o.driver_refs -= 1;
            o.driver_refs
        })
    });
    let remaining = known.or_else(|| {
        FOREIGN.with(|t| {
            let entry = t.entry(object).or_insert(0);
            *entry -= 1;
            Some(*entry)
        })
    });
    if remaining.is_some_and(|r| r < 0) {
        objects::misuse(function, ObjectKind::ProcessReference, "dereferenced more often than the driver referenced it");
        OBJECTS.with(|t| t.get_mut(&object).map(|o| o.driver_refs = 0));
        FOREIGN.with(|t| t.remove(&object));
    }
}

/// `ObfReferenceObject` (wdm.h; ObReferenceObject is a macro for it; ≤ DISPATCH).
extern "win64" fn obf_reference_object(object: usize) -> isize {
    reference("ObfReferenceObject", object);
    1
}

/// `ObfDereferenceObject` (wdm.h; ObDereferenceObject is a macro for it; ≤ DISPATCH): more
/// dereferences than references → ObjectMisuse.
extern "win64" fn obf_dereference_object(object: usize) -> isize {
    dereference("ObfDereferenceObject", object);
    0
}

extern "win64" fn ob_dereference_object_defer_delete(object: usize) {
    dereference("ObDereferenceObjectDeferDelete", object);
}

/// `SeLocateProcessImageName` (ntddk.h; PASSIVE): a UNICODE_STRING and its buffer in one pool
/// block the caller frees with ExFreePool (leak-checked as pool).
extern "win64" fn se_locate_process_image_name(process: usize, name: *mut usize) -> i32 {
    objects::count("SeLocateProcessImageName", PASSIVE_LEVEL);
    let Some(Kind::Process(pid)) = kind_of(process) else {
        objects::misuse("SeLocateProcessImageName", ObjectKind::ProcessReference, "not a process object");
        return status::INVALID_PARAMETER;
    };
    if name.is_null() {
        return status::INVALID_PARAMETER;
    }
    let text: Vec<u16> = format!("\\Device\\HarddiskVolume1\\Windows\\System32\\process{pid}.exe").encode_utf16().collect();
    let bytes = text.len() * 2;
    let block = crate::nt::ex_allocate_pool2(0x40, 16 + bytes, u32::from_le_bytes(*b"SeIn")) as usize;
    if block == 0 {
        return status::INSUFFICIENT_RESOURCES;
    }
    let header = [bytes as u16, bytes as u16, 0, 0];
    // SAFETY: the block has 16 + bytes bytes: a UNICODE_STRING (Length, MaximumLength, pad,
    // Buffer) then the characters; it is fltemu's own pool block, 16-byte aligned.
    unsafe { core::ptr::copy_nonoverlapping(header.as_ptr(), block as *mut u16, 4) };
    // SAFETY: as above.
    unsafe { ((block + 8) as *mut usize).write(block + 16) };
    // SAFETY: as above.
    unsafe { core::ptr::copy_nonoverlapping(text.as_ptr(), (block + 16) as *mut u16, text.len()) };
    // The caller's out pointer, at whatever alignment the driver chose.
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { crate::driver_mem::write(name, block) };
    status::SUCCESS
}

fn set_notify(function: &'static str, routine: usize, remove: bool, ex: bool) -> i32 {
    objects::count(function, PASSIVE_LEVEL);
    if routine == 0 {
        return status::INVALID_PARAMETER;
    }
    if remove {
        return if NOTIFY.with(|t| t.remove(&routine)).is_some() { status::SUCCESS } else { status::INVALID_PARAMETER };
    }
    if NOTIFY.with(|t| t.contains_key(&routine)) {
        return status::INVALID_PARAMETER;
    }
    NOTIFY.with(|t| t.insert(routine, ex));
    status::SUCCESS
}

/// `PsSetCreateProcessNotifyRoutine` (ntddk.h; PASSIVE): add or remove; removing one not
/// registered → STATUS_INVALID_PARAMETER; still registered at unload → ObjectLeaked.
extern "win64" fn ps_set_create_process_notify_routine(routine: usize, remove: u8) -> i32 {
    set_notify("PsSetCreateProcessNotifyRoutine", routine, remove != 0, false)
}

/// `PsSetCreateProcessNotifyRoutineEx` (ntddk.h; PASSIVE): as above, and STATUS_ACCESS_DENIED
/// unless the image was linked with /INTEGRITYCHECK (IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY).
extern "win64" fn ps_set_create_process_notify_routine_ex(routine: usize, remove: u8) -> i32 {
    if remove == 0 && !image_forces_integrity() {
        objects::count("PsSetCreateProcessNotifyRoutineEx", PASSIVE_LEVEL);
        return status::ACCESS_DENIED;
    }
    set_notify("PsSetCreateProcessNotifyRoutineEx", routine, remove != 0, true)
}

/// Whether the loaded image has IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY (0x80).
pub fn image_forces_integrity() -> bool {
    let Some(inner) = crate::state::current() else { return false };
    let base = inner.image.base;
    // SAFETY: the mapped image's headers are readable (mapped PROT_READ); e_lfanew at 0x3C.
    let pe = unsafe { ((base + 0x3C) as *const u32).read_unaligned() } as usize;
    // SAFETY: DllCharacteristics is at optional header + 70; the loader checked the headers.
    let characteristics = unsafe { ((base + pe + 24 + 70) as *const u16).read_unaligned() };
    characteristics & 0x80 != 0
}

/// Calls every registered notify routine for a process `pid` created by `parent` (or exiting),
/// at PASSIVE_LEVEL in the creator's context, as the process manager does.
pub fn notify_process(pid: u32, parent: u32, create: bool) {
    let routines: Vec<(usize, bool)> = NOTIFY.with(|t| t.iter().map(|(r, ex)| (*r, *ex)).collect());
    let process = process_object(pid);
    let image: &'static [u16] = Box::leak(format!("\\??\\C:\\Windows\\System32\\process{pid}.exe").encode_utf16().collect::<Vec<u16>>().into_boxed_slice());
    let image_name: &'static [u64; 2] = Box::leak(Box::new([(image.len() as u64 * 2) | ((image.len() as u64 * 2) << 16), image.as_ptr() as u64]));
    for (routine, ex) in routines {
        exec::enter(PASSIVE_LEVEL, if create { parent } else { pid }, crate::Operation::Other);
        if ex {
            let mut info = [0u64; 9];
            info[0] = 0x48; // Size
            info[2] = u64::from(parent);
            info[3] = u64::from(parent);
            info[4] = objects::thread_id() as u64;
            info[6] = std::ptr::from_ref(image_name) as u64;
            let info_pointer = if create { info.as_mut_ptr() as usize } else { 0 };
            // SAFETY: the driver's PCREATE_PROCESS_NOTIFY_ROUTINE_EX (process, pid, info).
            let call = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(usize, usize, usize)>(routine) };
            // SAFETY: arguments as the DDI documents (CreateInfo NULL at exit).
            exec::driver_call(|| unsafe { call(process, pid as usize, info_pointer) });
        } else {
            // SAFETY: the driver's PCREATE_PROCESS_NOTIFY_ROUTINE (parent, pid, create).
            let call = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(usize, usize, u8)>(routine) };
            // SAFETY: arguments as the DDI documents.
            exec::driver_call(|| unsafe { call(parent as usize, pid as usize, u8::from(create)) });
        }
    }
}

/// ntoskrnl.exe exports of this module.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "IoGetCurrentProcess" | "PsGetCurrentProcess" => io_get_current_process as *const () as usize,
        "PsGetCurrentThread" => ps_get_current_thread as *const () as usize,
        "PsGetCurrentThreadId" => ps_get_current_thread_id as *const () as usize,
        "PsGetProcessId" => ps_get_process_id as *const () as usize,
        "IoThreadToProcess" => io_thread_to_process as *const () as usize,
        "PsGetThreadProcessId" => ps_get_thread_process_id as *const () as usize,
        "PsGetThreadId" => ps_get_thread_id as *const () as usize,
        "PsLookupProcessByProcessId" => ps_lookup_process_by_process_id as *const () as usize,
        "ObfReferenceObject" => obf_reference_object as *const () as usize,
        "ObfDereferenceObject" | "ObDereferenceObject" => obf_dereference_object as *const () as usize,
        "ObDereferenceObjectDeferDelete" => ob_dereference_object_defer_delete as *const () as usize,
        "SeLocateProcessImageName" => se_locate_process_image_name as *const () as usize,
        "PsSetCreateProcessNotifyRoutine" => ps_set_create_process_notify_routine as *const () as usize,
        "PsSetCreateProcessNotifyRoutineEx" => ps_set_create_process_notify_routine_ex as *const () as usize,
        _ => return None,
    })
}

const fn nt(function: &'static str, source: Source, notes: &'static str) -> Emulated {
    Emulated { dll: "ntoskrnl.exe", function, notes, source }
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    nt("IoGetCurrentProcess", Source::Ddi("wdm"), "≤ DISPATCH; the requestor's process object (one opaque block per pid), not referenced"),
    nt("PsGetCurrentProcess", Source::DdiAs("wdm", "IoGetCurrentProcess"), "the same export as IoGetCurrentProcess"),
    nt("PsGetCurrentThread", Source::Ddi("wdm"), "≤ DISPATCH; this host thread's thread object, not referenced"),
    nt("PsGetCurrentThreadId", Source::Ddi("wdm"), "a stable id per emulated thread (multiples of 4)"),
    nt("PsGetProcessId", Source::Ddi("ntifs"), "pid of a process object; anything else → ObjectMisuse"),
    nt("IoThreadToProcess", Source::Ddi("ntddk"), "the thread's process object, not referenced"),
    nt("PsGetThreadProcessId", Source::Ddi("ntifs"), "the thread's pid"),
    nt("PsGetThreadId", Source::Ddi("ntifs"), "the thread's id"),
    nt("PsLookupProcessByProcessId", Source::Ddi("ntifs"), "≤ APC; a referenced process object (must be ObDereferenceObject'ed: else ObjectLeaked(ProcessReference) at unload); pid 0 → INVALID_PARAMETER"),
    nt("ObfReferenceObject", Source::DdiAs("wdm", "ObReferenceObject"), "≤ DISPATCH; +1 on a process, thread or any other object (FILE_OBJECTs …); held at unload → ObjectLeaked(ProcessReference)"),
    nt("ObfDereferenceObject", Source::DdiAs("wdm", "ObDereferenceObject"), "≤ DISPATCH; −1; more dereferences than references → ObjectMisuse; on a FILE_OBJECT from FltCreateFileEx(2): its reference (the FILE_OBJECT closes once its handle is closed too)"),
    nt("ObDereferenceObject", Source::Ddi("wdm"), "as ObfDereferenceObject"),
    nt("ObDereferenceObjectDeferDelete", Source::Ddi("wdm"), "as ObfDereferenceObject"),
    nt("SeLocateProcessImageName", Source::Ddi("ntddk"), "PASSIVE; a UNICODE_STRING + buffer in one pool block (tag 'SeIn') the caller frees with ExFreePool (else PoolLeaked)"),
    nt("PsSetCreateProcessNotifyRoutine", Source::Ddi("ntddk"), "PASSIVE; add/remove (removing an unknown one or adding twice → INVALID_PARAMETER); still registered at unload → ObjectLeaked(NotifyRoutine); called by `Emulator::notify_process` / script `process`"),
    nt("PsSetCreateProcessNotifyRoutineEx", Source::Ddi("ntddk"), "as above; STATUS_ACCESS_DENIED unless the image is linked /INTEGRITYCHECK (FORCE_INTEGRITY)"),
];
