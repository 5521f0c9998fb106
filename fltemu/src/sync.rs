//! Critical regions, events, fast and guarded mutexes, non-paged lookaside lists and the SLIST
//! primitives their header inlines call. Each object type keeps its own table behind its own
//! lock; waits are real (a condition variable), so a wait nobody satisfies ends in fltemu's
//! watchdog (`Stop::Hang`).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::catalog::{Emulated, Source};
use crate::driver_mem;
use crate::exec::{self, APC_LEVEL, DISPATCH_LEVEL};
use crate::objects::{self, ObjectKind, Table};
use crate::state::status;

thread_local! {
    static CRITICAL_REGIONS: Cell<u32> = const { Cell::new(0) };
}

/// Whether normal kernel APCs are disabled on this thread by a critical region.
pub fn in_critical_region() -> bool {
    CRITICAL_REGIONS.with(Cell::get) > 0
}

/// KeEnterCriticalRegion's effect (also used by the Flt/Ex resource wrappers).
pub fn enter_critical_region() {
    CRITICAL_REGIONS.with(|c| c.set(c.get() + 1));
}

/// KeLeaveCriticalRegion's effect; leaving one never entered is flagged.
pub fn leave_critical_region(function: &'static str) {
    let entered = CRITICAL_REGIONS.with(|c| {
        let value = c.get();
        c.set(value.saturating_sub(1));
        value > 0
    });
    if !entered {
        objects::misuse(function, ObjectKind::CriticalRegion, "left a critical region this thread had not entered");
    }
}

/// Critical regions this thread is still in, forgotten (a driver call returned inside them).
pub fn take_critical_regions() -> u32 {
    CRITICAL_REGIONS.with(|c| c.replace(0))
}

extern "win64" fn ke_enter_critical_region() {
    objects::count("KeEnterCriticalRegion", APC_LEVEL);
    enter_critical_region();
}

extern "win64" fn ke_leave_critical_region() {
    objects::count("KeLeaveCriticalRegion", APC_LEVEL);
    leave_critical_region("KeLeaveCriticalRegion");
}

// ---- events ----

#[derive(Clone, Copy)]
struct Event {
    /// SynchronizationEvent (auto-reset) rather than NotificationEvent.
    synchronization: bool,
    signaled: bool,
}

static EVENTS: Mutex<Option<HashMap<usize, Event>>> = Mutex::new(None);
static EVENT_CHANGED: Condvar = Condvar::new();

fn events<R>(f: impl FnOnce(&mut HashMap<usize, Event>) -> R) -> R {
    let mut guard = EVENTS.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(HashMap::new))
}

/// Writes the DISPATCHER_HEADER fields the header inlines read (Type at 0, SignalState at 4).
fn write_header(event: usize, synchronization: bool, signaled: bool) {
    // SAFETY: a KEVENT the driver owns (≥ 0x18 bytes, per KeInitializeEvent's contract).
    unsafe { (event as *mut u8).write(u8::from(synchronization)) };
    // SAFETY: as above; SignalState is the LONG at offset 4.
    unsafe { ((event + 4) as *mut i32).write_unaligned(i32::from(signaled)) };
}

/// `KeInitializeEvent` (wdm.h; any IRQL): Type 0 NotificationEvent, 1 SynchronizationEvent.
extern "win64" fn ke_initialize_event(event: usize, kind: i32, signaled: u8) {
    objects::count("KeInitializeEvent", 15);
    if event == 0 || !(0..=1).contains(&kind) {
        objects::misuse("KeInitializeEvent", ObjectKind::Event, "NULL event or unknown EVENT_TYPE");
        return;
    }
    write_header(event, kind == 1, signaled != 0);
    events(|table| table.insert(event, Event { synchronization: kind == 1, signaled: signaled != 0 }));
}

fn set_state(function: &'static str, event: usize, signaled: bool) -> i32 {
    objects::count(function, DISPATCH_LEVEL);
    let previous = events(|table| {
        table.get_mut(&event).map(|record| {
            let previous = record.signaled;
            record.signaled = signaled;
            (previous, record.synchronization)
        })
    });
    let Some((previous, synchronization)) = previous else {
        objects::misuse(function, ObjectKind::Event, "not an event initialised by KeInitializeEvent");
        return 0;
    };
    write_header(event, synchronization, signaled);
    EVENT_CHANGED.notify_all();
    i32::from(previous)
}

/// `KeSetEvent` (wdm.h; ≤ DISPATCH): signals; returns the previous state.
extern "win64" fn ke_set_event(event: usize, _increment: i32, _wait: u8) -> i32 {
    set_state("KeSetEvent", event, true)
}

/// `KeResetEvent` (wdm.h; ≤ DISPATCH): not signaled; returns the previous state.
extern "win64" fn ke_reset_event(event: usize) -> i32 {
    set_state("KeResetEvent", event, false)
}

/// `KeClearEvent` (wdm.h; ≤ DISPATCH).
extern "win64" fn ke_clear_event(event: usize) {
    set_state("KeClearEvent", event, false);
}

/// `KeReadStateEvent` (wdm.h; ≤ DISPATCH).
extern "win64" fn ke_read_state_event(event: usize) -> i32 {
    objects::count("KeReadStateEvent", DISPATCH_LEVEL);
    i32::from(events(|table| table.get(&event).is_some_and(|e| e.signaled)))
}

/// The deadline of a KeWaitFor* timeout (100 ns units; negative relative, positive absolute,
/// NULL forever).
fn deadline(timeout: *const i64) -> Option<Instant> {
    if timeout.is_null() {
        return None;
    }
    // SAFETY: an optional LARGE_INTEGER the caller owns.
    let value = unsafe { timeout.read_unaligned() };
    let hundreds = if value < 0 {
        value.unsigned_abs()
    } else {
        let now = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() / 100 + 116_444_736_000_000_000) as u64;
        value.cast_unsigned().saturating_sub(now)
    };
    Some(Instant::now() + Duration::from_nanos(hundreds.saturating_mul(100)))
}

/// `KeWaitForSingleObject` (wdm.h; ≤ APC, or ≤ DISPATCH with a zero timeout): waits for an event
/// initialised by KeInitializeEvent; STATUS_SUCCESS when signaled (a synchronization event is
/// reset by the satisfied wait), STATUS_TIMEOUT at the deadline. Other objects are not modelled
/// (ObjectMisuse, STATUS_INVALID_PARAMETER).
extern "win64" fn ke_wait_for_single_object(object: usize, _reason: i32, _mode: i8, _alertable: u8, timeout: *const i64) -> i32 {
    let deadline = deadline(timeout);
    let zero = deadline.is_some_and(|d| d <= Instant::now());
    objects::count("KeWaitForSingleObject", if zero { DISPATCH_LEVEL } else { APC_LEVEL });
    let mut guard = EVENTS.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let table = guard.get_or_insert_with(HashMap::new);
        let Some(record) = table.get_mut(&object) else {
            drop(guard);
            if let Some(status) = crate::wild::wait_for_object(object, deadline) {
                return status;
            }
            objects::misuse("KeWaitForSingleObject", ObjectKind::Event, "waits only on events initialised by KeInitializeEvent are modelled");
            return status::INVALID_PARAMETER;
        };
        if record.signaled {
            if record.synchronization {
                record.signaled = false;
                let synchronization = record.synchronization;
                drop(guard);
                write_header(object, synchronization, false);
            }
            return status::SUCCESS;
        }
        let step = match deadline {
            Some(d) if d <= Instant::now() => return status::TIMEOUT,
            Some(d) => (d - Instant::now()).min(Duration::from_millis(50)),
            None => Duration::from_millis(50),
        };
        guard = EVENT_CHANGED.wait_timeout(guard, step).unwrap_or_else(PoisonError::into_inner).0;
    }
}

// ---- fast and guarded mutexes ----

struct Owned {
    owner: usize,
    /// The IRQL to restore (fast mutexes raise to APC_LEVEL; guarded ones do not).
    restore: Option<u8>,
}

static MUTEXES: Mutex<Option<HashMap<usize, Owned>>> = Mutex::new(None);
static MUTEX_CHANGED: Condvar = Condvar::new();

fn acquire_mutex(function: &'static str, mutex: usize, raise: bool, wait: bool) -> bool {
    objects::count(function, APC_LEVEL);
    let me = objects::thread_id();
    let mut guard = MUTEXES.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let table = guard.get_or_insert_with(HashMap::new);
        match table.get(&mutex) {
            Some(owned) if owned.owner == me => {
                drop(guard);
                objects::misuse(function, ObjectKind::Mutex, "acquired again by its owner (fast and guarded mutexes are not recursive: a deadlock on Windows)");
                return false;
            }
            Some(_) if !wait => return false,
            Some(_) => guard = MUTEX_CHANGED.wait_timeout(guard, Duration::from_millis(50)).unwrap_or_else(PoisonError::into_inner).0,
            None => {
                let restore = raise.then(|| exec::set_irql(APC_LEVEL.max(exec::irql())));
                if !raise {
                    enter_critical_region();
                }
                table.insert(mutex, Owned { owner: me, restore });
                return true;
            }
        }
    }
}

fn release_mutex(function: &'static str, mutex: usize) {
    objects::count(function, APC_LEVEL);
    let me = objects::thread_id();
    let released = {
        let mut guard = MUTEXES.lock().unwrap_or_else(PoisonError::into_inner);
        let table = guard.get_or_insert_with(HashMap::new);
        match table.get(&mutex) {
            Some(owned) if owned.owner == me => table.remove(&mutex),
            _ => None,
        }
    };
    MUTEX_CHANGED.notify_all();
    match released {
        Some(Owned { restore: Some(irql), .. }) => {
            exec::set_irql(irql);
        }
        Some(Owned { restore: None, .. }) => leave_critical_region(function),
        None => objects::misuse(function, ObjectKind::Mutex, "released by a thread that does not own it"),
    }
}

/// `ExAcquireFastMutex` (wdm.h; ≤ APC): raises to APC_LEVEL; recursive acquire → ObjectMisuse.
extern "win64" fn ex_acquire_fast_mutex(mutex: usize) {
    acquire_mutex("ExAcquireFastMutex", mutex, true, true);
}

/// `ExTryToAcquireFastMutex` (wdm.h; ≤ APC).
extern "win64" fn ex_try_to_acquire_fast_mutex(mutex: usize) -> u8 {
    u8::from(acquire_mutex("ExTryToAcquireFastMutex", mutex, true, false))
}

/// `ExReleaseFastMutex` (wdm.h; APC_LEVEL): restores the IRQL saved by the acquire.
extern "win64" fn ex_release_fast_mutex(mutex: usize) {
    release_mutex("ExReleaseFastMutex", mutex);
}

/// `KeInitializeGuardedMutex` (wdm.h; ≤ DISPATCH).
extern "win64" fn ke_initialize_guarded_mutex(mutex: usize) {
    objects::count("KeInitializeGuardedMutex", DISPATCH_LEVEL);
    let mut guard = MUTEXES.lock().unwrap_or_else(PoisonError::into_inner);
    let held = guard.get_or_insert_with(HashMap::new).contains_key(&mutex);
    drop(guard);
    if held {
        objects::misuse("KeInitializeGuardedMutex", ObjectKind::Mutex, "initialised while held");
    }
}

/// `KeAcquireGuardedMutex` (wdm.h; ≤ APC): enters a guarded region (modelled as a critical
/// region), the IRQL stays.
extern "win64" fn ke_acquire_guarded_mutex(mutex: usize) {
    acquire_mutex("KeAcquireGuardedMutex", mutex, false, true);
}

extern "win64" fn ke_try_to_acquire_guarded_mutex(mutex: usize) -> u8 {
    u8::from(acquire_mutex("KeTryToAcquireGuardedMutex", mutex, false, false))
}

extern "win64" fn ke_release_guarded_mutex(mutex: usize) {
    release_mutex("KeReleaseGuardedMutex", mutex);
}

// ---- lookaside lists and SLISTs ----

/// Live NPAGED_LOOKASIDE_LISTs (address → entry size).
static LOOKASIDE: Table<usize, u32> = Table::new();
/// One lock for every SLIST operation (the emulator need not be lock-free).
static SLIST: Mutex<()> = Mutex::new(());

/// `ExInitializeNPagedLookasideList` (wdm.h; ≤ DISPATCH): fills the GENERAL_LOOKASIDE fields
/// the header inlines read (Depth 0 so every ExFreeToNPagedLookasideList goes to the Free
/// routine and every block stays pool-accounted; Type NonPagedPoolNx; Tag; Size; Allocate/Free,
/// defaulting to ExAllocatePoolWithTag/ExFreePool). Must be deleted by the end of unload.
extern "win64" fn ex_initialize_npaged_lookaside_list(list: usize, allocate: usize, free: usize, _flags: u32, size: usize, tag: u32, _depth: u16) {
    objects::count("ExInitializeNPagedLookasideList", DISPATCH_LEVEL);
    if list == 0 || !list.is_multiple_of(16) {
        objects::misuse("ExInitializeNPagedLookasideList", ObjectKind::LookasideList, "NULL or not 16-byte aligned (NPAGED_LOOKASIDE_LIST is cache aligned)");
        return;
    }
    let allocate = if allocate == 0 { crate::pool::resolve("ExAllocatePoolWithTag").unwrap_or(0) } else { allocate };
    let free = if free == 0 { crate::pool::resolve("ExFreePool").unwrap_or(0) } else { free };
    let mut fields = [0u8; 0x60];
    fields[0x24..0x28].copy_from_slice(&512u32.to_le_bytes());
    fields[0x28..0x2C].copy_from_slice(&tag.to_le_bytes());
    fields[0x2C..0x30].copy_from_slice(&(size as u32).to_le_bytes());
    fields[0x30..0x38].copy_from_slice(&(allocate as u64).to_le_bytes());
    fields[0x38..0x40].copy_from_slice(&(free as u64).to_le_bytes());
    // SAFETY: the caller's NPAGED_LOOKASIDE_LIST (0x80 bytes on x64) ≥ the 0x60 written.
    unsafe { core::ptr::copy_nonoverlapping(fields.as_ptr(), list as *mut u8, fields.len()) };
    if LOOKASIDE.with(|table| table.insert(list, size as u32)).is_some() {
        objects::misuse("ExInitializeNPagedLookasideList", ObjectKind::LookasideList, "initialised again while live");
    }
}

/// `ExDeleteNPagedLookasideList` (wdm.h; ≤ DISPATCH): frees cached entries through Free.
extern "win64" fn ex_delete_npaged_lookaside_list(list: usize) {
    objects::count("ExDeleteNPagedLookasideList", DISPATCH_LEVEL);
    if LOOKASIDE.with(|table| table.remove(&list)).is_none() {
        objects::misuse("ExDeleteNPagedLookasideList", ObjectKind::LookasideList, "not a live lookaside list");
        return;
    }
    // The list's Free routine pointer at offset 0x38 (written by the initialise), in the
    // driver's NPAGED_LOOKASIDE_LIST at whatever alignment it chose.
    // SAFETY: a live lookaside list (checked above) is the driver's 0x80-byte structure.
    let free = unsafe { driver_mem::read(list.wrapping_add(0x38) as *const usize) };
    while let Some(entry) = pop(list) {
        if free != 0 {
            // SAFETY: the Free routine (PFREE_FUNCTION: one pointer argument, Win64).
            let free = unsafe { core::mem::transmute::<usize, extern "win64" fn(usize)>(free) };
            exec::driver_call(|| free(entry));
        }
    }
}

/// Whether `address` (an SLIST_HEADER or SLIST_ENTRY) is 16-byte aligned, as the SLIST_ENTRY
/// and SLIST_HEADER pages require on 64-bit Windows ("SLIST_ENTRY structures must be 16-byte
/// aligned"; the header is updated with a 16-byte compare-exchange). A misaligned one is
/// reported as an invalid parameter; the caller then leaves the list alone.
fn slist_aligned(function: &'static str, what: &'static str, address: usize) -> bool {
    if address.is_multiple_of(16) {
        return true;
    }
    if let Some(inner) = crate::state::current() {
        let reason = if what == "header" { "SLIST_HEADER not 16-byte aligned" } else { "SLIST_ENTRY not 16-byte aligned" };
        inner.violation(crate::verifier::Violation::InvalidParameter { function, reason });
    }
    false
}

/// Pops the first entry of the SLIST at `header`: Depth in the low 16 bits of the first
/// quadword, the first entry's address in the second.
fn pop(header: usize) -> Option<usize> {
    let _serial = SLIST.lock().unwrap_or_else(PoisonError::into_inner);
    // The header and entries are driver memory (SLIST_HEADER, then each entry's Next pointer
    // first); read unaligned so a corrupted list cannot abort a debug fltemu. Addresses are
    // the driver's: wrapping arithmetic, so a wild one faults as the driver's access would.
    // SAFETY: the driver's SLIST_HEADER (16 bytes; the DDI's contract).
    let first = unsafe { driver_mem::read(header.wrapping_add(8) as *const usize) };
    if first == 0 {
        return None;
    }
    // SAFETY: the list's first entry, whose Next pointer comes first (SLIST_ENTRY).
    let next = unsafe { driver_mem::read(first as *const usize) };
    // SAFETY: the driver's SLIST_HEADER, as above.
    unsafe { driver_mem::write(header.wrapping_add(8) as *mut usize, next) };
    // SAFETY: as above.
    let depth = unsafe { driver_mem::read(header as *const u16) };
    // SAFETY: as above.
    unsafe { driver_mem::write(header as *mut u16, depth.saturating_sub(1)) };
    Some(first)
}

/// `ExpInterlockedPopEntrySList` (InterlockedPopEntrySList, wdm.h): NULL for an empty list or a
/// misaligned header.
extern "win64" fn exp_interlocked_pop_entry_slist(header: usize) -> usize {
    objects::count("ExpInterlockedPopEntrySList", 15);
    if !slist_aligned("ExpInterlockedPopEntrySList", "header", header) {
        return 0;
    }
    pop(header).unwrap_or(0)
}

/// `ExpInterlockedPushEntrySList` (InterlockedPushEntrySList, wdm.h): the previous first
/// entry; a misaligned header or entry is not pushed (NULL returned).
extern "win64" fn exp_interlocked_push_entry_slist(header: usize, entry: usize) -> usize {
    objects::count("ExpInterlockedPushEntrySList", 15);
    if !slist_aligned("ExpInterlockedPushEntrySList", "header", header) || !slist_aligned("ExpInterlockedPushEntrySList", "entry", entry) {
        return 0;
    }
    let _serial = SLIST.lock().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: the driver's SLIST_HEADER (16 bytes; the DDI's contract).
    let first = unsafe { driver_mem::read(header.wrapping_add(8) as *const usize) };
    // SAFETY: the driver's SLIST_ENTRY, its Next pointer first.
    unsafe { driver_mem::write(entry as *mut usize, first) };
    // SAFETY: the driver's SLIST_HEADER, as above.
    unsafe { driver_mem::write(header.wrapping_add(8) as *mut usize, entry) };
    // SAFETY: as above.
    let depth = unsafe { driver_mem::read(header as *const u16) };
    // SAFETY: as above.
    unsafe { driver_mem::write(header as *mut u16, depth.wrapping_add(1)) };
    first
}

/// `ExpInterlockedFlushSList` (InterlockedFlushSList, wdm.h): the former first entry; a
/// misaligned header is left alone (NULL returned).
extern "win64" fn exp_interlocked_flush_slist(header: usize) -> usize {
    objects::count("ExpInterlockedFlushSList", 15);
    if !slist_aligned("ExpInterlockedFlushSList", "header", header) {
        return 0;
    }
    let _serial = SLIST.lock().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: the driver's SLIST_HEADER (16 bytes; the DDI's contract).
    let first = unsafe { driver_mem::read(header.wrapping_add(8) as *const usize) };
    // SAFETY: as above.
    unsafe { driver_mem::write(header as *mut [u64; 2], [0, 0]) };
    first
}

/// Forgets every object (a new emulator loads).
pub fn reset() {
    events(HashMap::clear);
    MUTEXES.lock().unwrap_or_else(PoisonError::into_inner).take();
    LOOKASIDE.clear();
}

/// Lookaside lists not deleted.
pub fn outstanding() -> Vec<(ObjectKind, usize)> {
    vec![(ObjectKind::LookasideList, LOOKASIDE.with(|t| t.len()))]
}

/// ntoskrnl.exe exports of this module.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "KeEnterCriticalRegion" => ke_enter_critical_region as *const () as usize,
        "KeLeaveCriticalRegion" => ke_leave_critical_region as *const () as usize,
        "KeInitializeEvent" => ke_initialize_event as *const () as usize,
        "KeSetEvent" => ke_set_event as *const () as usize,
        "KeResetEvent" => ke_reset_event as *const () as usize,
        "KeClearEvent" => ke_clear_event as *const () as usize,
        "KeReadStateEvent" => ke_read_state_event as *const () as usize,
        "KeWaitForSingleObject" => ke_wait_for_single_object as *const () as usize,
        "ExAcquireFastMutex" => ex_acquire_fast_mutex as *const () as usize,
        "ExTryToAcquireFastMutex" => ex_try_to_acquire_fast_mutex as *const () as usize,
        "ExReleaseFastMutex" => ex_release_fast_mutex as *const () as usize,
        "KeInitializeGuardedMutex" => ke_initialize_guarded_mutex as *const () as usize,
        "KeAcquireGuardedMutex" => ke_acquire_guarded_mutex as *const () as usize,
        "KeTryToAcquireGuardedMutex" => ke_try_to_acquire_guarded_mutex as *const () as usize,
        "KeReleaseGuardedMutex" => ke_release_guarded_mutex as *const () as usize,
        "ExInitializeNPagedLookasideList" => ex_initialize_npaged_lookaside_list as *const () as usize,
        "ExDeleteNPagedLookasideList" => ex_delete_npaged_lookaside_list as *const () as usize,
        "ExpInterlockedPopEntrySList" => exp_interlocked_pop_entry_slist as *const () as usize,
        "ExpInterlockedPushEntrySList" => exp_interlocked_push_entry_slist as *const () as usize,
        "ExpInterlockedFlushSList" => exp_interlocked_flush_slist as *const () as usize,
        _ => return None,
    })
}

const fn wdm(function: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "ntoskrnl.exe", function, notes, source: Source::Ddi("wdm") }
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    wdm("KeEnterCriticalRegion", "≤ APC; per-thread count (ERESOURCE acquires check it)"),
    wdm("KeLeaveCriticalRegion", "≤ APC; leaving one not entered → ObjectMisuse(CriticalRegion)"),
    wdm("KeInitializeEvent", "Notification (0) or Synchronization (1); writes the DISPATCHER_HEADER Type/SignalState the inlines read"),
    wdm("KeSetEvent", "≤ DISPATCH; wakes waiters; returns the previous state; not an initialised event → ObjectMisuse"),
    wdm("KeResetEvent", "≤ DISPATCH; returns the previous state"),
    wdm("KeClearEvent", "≤ DISPATCH"),
    wdm("KeReadStateEvent", "≤ DISPATCH"),
    wdm("KeWaitForSingleObject", "≤ APC (≤ DISPATCH with a zero timeout); real wait on an event, synchronization events auto-reset; STATUS_TIMEOUT at the deadline (relative, absolute, NULL forever → watchdog); other objects → ObjectMisuse + INVALID_PARAMETER"),
    wdm("ExAcquireFastMutex", "≤ APC; raises to APC_LEVEL; exclusive; recursive acquire → ObjectMisuse (not acquired)"),
    wdm("ExTryToAcquireFastMutex", "≤ APC; FALSE when owned"),
    wdm("ExReleaseFastMutex", "restores the saved IRQL; not the owner → ObjectMisuse"),
    wdm("KeInitializeGuardedMutex", "≤ DISPATCH; initialising a held one → ObjectMisuse"),
    wdm("KeAcquireGuardedMutex", "≤ APC; exclusive; enters a guarded (critical) region; recursive → ObjectMisuse"),
    wdm("KeTryToAcquireGuardedMutex", "≤ APC; FALSE when owned"),
    wdm("KeReleaseGuardedMutex", "not the owner → ObjectMisuse"),
    wdm("ExInitializeNPagedLookasideList", "≤ DISPATCH; 16-byte aligned; Depth 0 so every block stays pool-accounted; default Allocate/Free = ExAllocatePoolWithTag/ExFreePool; not deleted by unload → ObjectLeaked(LookasideList)"),
    wdm("ExDeleteNPagedLookasideList", "≤ DISPATCH; frees cached entries through Free; not live → ObjectMisuse"),
    Emulated { dll: "ntoskrnl.exe", function: "ExpInterlockedPopEntrySList", notes: "what InterlockedPopEntrySList (and ExAllocateFromNPagedLookasideList) compile to on x64; serialized; an SLIST_HEADER not 16-byte aligned (the SLIST_ENTRY page: required on 64-bit Windows) → InvalidParameter, NULL, list untouched", source: Source::DdiAs("wdm", "InterlockedPopEntrySList") },
    Emulated { dll: "ntoskrnl.exe", function: "ExpInterlockedPushEntrySList", notes: "what InterlockedPushEntrySList compiles to on x64; serialized; an SLIST_HEADER or SLIST_ENTRY not 16-byte aligned → InvalidParameter, nothing pushed, NULL", source: Source::DdiAs("wdm", "InterlockedPushEntrySList") },
    Emulated { dll: "ntoskrnl.exe", function: "ExpInterlockedFlushSList", notes: "what InterlockedFlushSList compiles to on x64; an SLIST_HEADER not 16-byte aligned → InvalidParameter, NULL, list untouched", source: Source::DdiAs("wdm", "InterlockedFlushSList") },
];
