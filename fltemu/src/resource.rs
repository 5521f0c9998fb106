//! ERESOURCE (executive reader/writer resources): ExInitializeResourceLite and friends, and
//! Filter Manager's FltAcquireResource* wrappers. A real reader/writer lock per initialised
//! resource (recursive, as ERESOURCEs are), with the documented checks: acquires need normal
//! kernel APCs disabled (a critical region or APC_LEVEL), only the owner releases, a held
//! resource is not deleted, and every initialised resource is deleted by the end of unload
//! (Driver Verifier reports an ERESOURCE left in freed memory).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::catalog::{Emulated, Source};
use crate::exec::{self, APC_LEVEL, DISPATCH_LEVEL};
use crate::objects::{self, ObjectKind};

#[derive(Default)]
struct Resource {
    exclusive_owner: Option<usize>,
    exclusive_count: u32,
    shared: HashMap<usize, u32>,
}

static RESOURCES: Mutex<Option<HashMap<usize, Resource>>> = Mutex::new(None);
static CHANGED: Condvar = Condvar::new();

fn with<R>(f: impl FnOnce(&mut HashMap<usize, Resource>) -> R) -> R {
    let mut guard = RESOURCES.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(HashMap::new))
}

/// Forgets every resource (a new emulator loads).
pub fn reset() {
    with(HashMap::clear);
}

/// Resources initialised and not deleted.
pub fn outstanding() -> Vec<(ObjectKind, usize)> {
    vec![(ObjectKind::Resource, with(|table| table.len()))]
}

/// Pool at `block` (`size` bytes) is being freed: a live ERESOURCE inside it was never deleted
/// (Driver Verifier stops here: freed pool containing an active ERESOURCE). It is forgotten,
/// so the unload check does not report it again.
pub fn check_freed(block: usize, size: usize) {
    let inside = with(|table| {
        let found: Vec<usize> = table.keys().copied().filter(|r| *r >= block && *r < block + size.max(1)).collect();
        for resource in &found {
            table.remove(resource);
        }
        found.len()
    });
    for _ in 0..inside {
        objects::misuse("ExFreePoolWithTag", ObjectKind::Resource, "freed pool holds an ERESOURCE never deleted (ExDeleteResourceLite first)");
    }
}

const MISSING: &str = "not an initialised ERESOURCE (ExInitializeResourceLite first, or already deleted)";

/// Acquires `resource`; returns false when `wait` is false and it is not available (or the
/// resource is unknown).
fn acquire(function: &'static str, resource: usize, exclusive: bool, wait: bool) -> bool {
    if objects::call(function, APC_LEVEL).is_none() {
        return false;
    }
    if exec::irql() < APC_LEVEL && !crate::sync::in_critical_region() {
        objects::misuse(function, ObjectKind::Resource, "normal kernel APCs enabled: call KeEnterCriticalRegion first (or use FltAcquireResource*)");
    }
    let me = objects::thread_id();
    let mut guard = RESOURCES.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let table = guard.get_or_insert_with(HashMap::new);
        let Some(record) = table.get_mut(&resource) else {
            drop(guard);
            objects::misuse(function, ObjectKind::Resource, MISSING);
            return false;
        };
        let others_shared = record.shared.iter().any(|(thread, count)| *thread != me && *count > 0);
        let free_for_me = match record.exclusive_owner {
            Some(owner) => owner == me,
            None => !exclusive || !others_shared,
        };
        if free_for_me {
            if exclusive || record.exclusive_owner == Some(me) {
                if exclusive && record.shared.get(&me).copied().unwrap_or(0) > 0 && record.exclusive_owner.is_none() {
                    drop(guard);
                    objects::misuse(function, ObjectKind::Resource, "exclusive acquire by a thread holding it shared (deadlocks on Windows)");
                    return false;
                }
                record.exclusive_owner = Some(me);
                record.exclusive_count += 1;
            } else {
                *record.shared.entry(me).or_insert(0) += 1;
            }
            return true;
        }
        if !wait {
            return false;
        }
        guard = CHANGED.wait_timeout(guard, Duration::from_millis(50)).unwrap_or_else(PoisonError::into_inner).0;
    }
}

fn release(function: &'static str, resource: usize, thread: usize) {
    if objects::call(function, DISPATCH_LEVEL).is_none() {
        return;
    }
    let outcome = with(|table| {
        let Some(record) = table.get_mut(&resource) else { return Err(MISSING) };
        if record.exclusive_owner == Some(thread) {
            record.exclusive_count -= 1;
            if record.exclusive_count == 0 {
                record.exclusive_owner = None;
            }
            return Ok(());
        }
        match record.shared.get_mut(&thread) {
            Some(count) if *count > 0 => {
                *count -= 1;
                if *count == 0 {
                    record.shared.remove(&thread);
                }
                Ok(())
            }
            _ => Err("released by a thread that does not hold it"),
        }
    });
    CHANGED.notify_all();
    if let Err(reason) = outcome {
        objects::misuse(function, ObjectKind::Resource, reason);
    }
}

/// `ExInitializeResourceLite` (wdm.h; ≤ DISPATCH): the resource must be in non-paged memory and
/// must be deleted before that memory is freed; initialising a live one again is flagged.
extern "win64" fn ex_initialize_resource_lite(resource: usize) -> i32 {
    if objects::call("ExInitializeResourceLite", DISPATCH_LEVEL).is_none() {
        return crate::status::UNSUCCESSFUL;
    }
    if resource == 0 || !resource.is_multiple_of(8) {
        objects::misuse("ExInitializeResourceLite", ObjectKind::Resource, "NULL or misaligned ERESOURCE");
        return crate::status::INVALID_PARAMETER;
    }
    let again = with(|table| table.insert(resource, Resource::default()).is_some());
    if again {
        objects::misuse("ExInitializeResourceLite", ObjectKind::Resource, "initialised again while live (ExDeleteResourceLite first)");
    }
    crate::status::SUCCESS
}

/// `ExDeleteResourceLite` (wdm.h; ≤ DISPATCH): a resource still held is flagged.
extern "win64" fn ex_delete_resource_lite(resource: usize) -> i32 {
    if objects::call("ExDeleteResourceLite", DISPATCH_LEVEL).is_none() {
        return crate::status::UNSUCCESSFUL;
    }
    let removed = with(|table| table.remove(&resource));
    match removed {
        None => {
            objects::misuse("ExDeleteResourceLite", ObjectKind::Resource, MISSING);
            crate::status::INVALID_PARAMETER
        }
        Some(record) => {
            if record.exclusive_owner.is_some() || !record.shared.is_empty() {
                objects::misuse("ExDeleteResourceLite", ObjectKind::Resource, "deleted while acquired");
            }
            crate::status::SUCCESS
        }
    }
}

extern "win64" fn ex_acquire_resource_exclusive_lite(resource: usize, wait: u8) -> u8 {
    u8::from(acquire("ExAcquireResourceExclusiveLite", resource, true, wait != 0))
}

extern "win64" fn ex_acquire_resource_shared_lite(resource: usize, wait: u8) -> u8 {
    u8::from(acquire("ExAcquireResourceSharedLite", resource, false, wait != 0))
}

extern "win64" fn ex_release_resource_lite(resource: usize) {
    release("ExReleaseResourceLite", resource, objects::thread_id());
}

/// `ExReleaseResourceForThreadLite` (wdm.h): releases on behalf of `thread` (an
/// ERESOURCE_THREAD, the value ExGetCurrentResourceThread returns: fltemu's thread id).
extern "win64" fn ex_release_resource_for_thread_lite(resource: usize, thread: usize) {
    release("ExReleaseResourceForThreadLite", resource, thread);
}

/// `ExGetCurrentResourceThread` (wdm.h): this thread's resource owner id.
extern "win64" fn ex_get_current_resource_thread() -> usize {
    objects::count("ExGetCurrentResourceThread", DISPATCH_LEVEL);
    objects::thread_id()
}

extern "win64" fn ex_is_resource_acquired_exclusive_lite(resource: usize) -> u8 {
    objects::count("ExIsResourceAcquiredExclusiveLite", DISPATCH_LEVEL);
    let me = objects::thread_id();
    u8::from(with(|table| table.get(&resource).is_some_and(|r| r.exclusive_owner == Some(me))))
}

/// `ExIsResourceAcquiredSharedLite` (wdm.h): how many times this thread holds it (shared or
/// exclusive).
extern "win64" fn ex_is_resource_acquired_shared_lite(resource: usize) -> u32 {
    objects::count("ExIsResourceAcquiredSharedLite", DISPATCH_LEVEL);
    let me = objects::thread_id();
    with(|table| {
        table.get(&resource).map_or(0, |r| r.shared.get(&me).copied().unwrap_or(0) + if r.exclusive_owner == Some(me) { r.exclusive_count } else { 0 })
    })
}

/// `ExEnterCriticalRegionAndAcquireResourceExclusive` (ntifs.h): both, returning the resource's
/// (opaque) owner entry.
extern "win64" fn ex_enter_critical_region_and_acquire_resource_exclusive(resource: usize) -> usize {
    crate::sync::enter_critical_region();
    acquire("ExEnterCriticalRegionAndAcquireResourceExclusive", resource, true, true);
    resource
}

extern "win64" fn ex_enter_critical_region_and_acquire_resource_shared(resource: usize) -> usize {
    crate::sync::enter_critical_region();
    acquire("ExEnterCriticalRegionAndAcquireResourceShared", resource, false, true);
    resource
}

extern "win64" fn ex_release_resource_and_leave_critical_region(resource: usize) {
    release("ExReleaseResourceAndLeaveCriticalRegion", resource, objects::thread_id());
    crate::sync::leave_critical_region("ExReleaseResourceAndLeaveCriticalRegion");
}

/// `FltAcquireResourceExclusive` (fltkernel.h; ≤ APC): enters a critical region, then acquires.
extern "win64" fn flt_acquire_resource_exclusive(resource: usize) {
    crate::sync::enter_critical_region();
    acquire("FltAcquireResourceExclusive", resource, true, true);
}

extern "win64" fn flt_acquire_resource_shared(resource: usize) {
    crate::sync::enter_critical_region();
    acquire("FltAcquireResourceShared", resource, false, true);
}

/// `FltReleaseResource` (fltkernel.h; ≤ APC): releases, then leaves the critical region.
extern "win64" fn flt_release_resource(resource: usize) {
    release("FltReleaseResource", resource, objects::thread_id());
    crate::sync::leave_critical_region("FltReleaseResource");
}

/// ntoskrnl.exe exports of this module.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "ExInitializeResourceLite" => ex_initialize_resource_lite as *const () as usize,
        "ExDeleteResourceLite" => ex_delete_resource_lite as *const () as usize,
        "ExAcquireResourceExclusiveLite" => ex_acquire_resource_exclusive_lite as *const () as usize,
        "ExAcquireResourceSharedLite" => ex_acquire_resource_shared_lite as *const () as usize,
        "ExReleaseResourceLite" => ex_release_resource_lite as *const () as usize,
        "ExReleaseResourceForThreadLite" => ex_release_resource_for_thread_lite as *const () as usize,
        "ExGetCurrentResourceThread" => ex_get_current_resource_thread as *const () as usize,
        "ExIsResourceAcquiredExclusiveLite" => ex_is_resource_acquired_exclusive_lite as *const () as usize,
        "ExIsResourceAcquiredSharedLite" => ex_is_resource_acquired_shared_lite as *const () as usize,
        "ExEnterCriticalRegionAndAcquireResourceExclusive" => ex_enter_critical_region_and_acquire_resource_exclusive as *const () as usize,
        "ExEnterCriticalRegionAndAcquireResourceShared" => ex_enter_critical_region_and_acquire_resource_shared as *const () as usize,
        "ExReleaseResourceAndLeaveCriticalRegion" => ex_release_resource_and_leave_critical_region as *const () as usize,
        _ => return None,
    })
}

/// fltmgr.sys exports of this module.
pub fn resolve_flt(name: &str) -> Option<usize> {
    Some(match name {
        "FltAcquireResourceExclusive" => flt_acquire_resource_exclusive as *const () as usize,
        "FltAcquireResourceShared" => flt_acquire_resource_shared as *const () as usize,
        "FltReleaseResource" => flt_release_resource as *const () as usize,
        _ => return None,
    })
}

const fn nt(function: &'static str, header: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "ntoskrnl.exe", function, notes, source: Source::Ddi(header) }
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    nt("ExInitializeResourceLite", "wdm", "≤ DISPATCH; NULL/misaligned → INVALID_PARAMETER; re-initialising a live one → ObjectMisuse; never deleted by the end of unload → ObjectLeaked(Resource)"),
    nt("ExDeleteResourceLite", "wdm", "≤ DISPATCH; unknown → ObjectMisuse + INVALID_PARAMETER; deleted while held → ObjectMisuse"),
    nt("ExAcquireResourceExclusiveLite", "wdm", "≤ APC; a real recursive reader/writer lock (Wait FALSE → FALSE when busy); below APC_LEVEL outside a critical region → ObjectMisuse; exclusive while holding it shared → ObjectMisuse"),
    nt("ExAcquireResourceSharedLite", "wdm", "≤ APC; shared with other readers, recursive; same APC rule"),
    nt("ExReleaseResourceLite", "wdm", "≤ DISPATCH; not held by this thread → ObjectMisuse"),
    nt("ExReleaseResourceForThreadLite", "wdm", "≤ DISPATCH; releases for the ERESOURCE_THREAD given"),
    nt("ExGetCurrentResourceThread", "wdm", "this emulated thread's owner id"),
    nt("ExIsResourceAcquiredExclusiveLite", "wdm", "TRUE when this thread owns it exclusively"),
    nt("ExIsResourceAcquiredSharedLite", "wdm", "how often this thread holds it (shared or exclusive)"),
    nt("ExEnterCriticalRegionAndAcquireResourceExclusive", "ntifs", "KeEnterCriticalRegion + exclusive acquire"),
    nt("ExEnterCriticalRegionAndAcquireResourceShared", "ntifs", "KeEnterCriticalRegion + shared acquire"),
    nt("ExReleaseResourceAndLeaveCriticalRegion", "ntifs", "release + KeLeaveCriticalRegion"),
    Emulated { dll: "fltmgr.sys", function: "FltAcquireResourceExclusive", notes: "≤ APC; enters a critical region, then acquires exclusively", source: Source::Ddi("fltkernel") },
    Emulated { dll: "fltmgr.sys", function: "FltAcquireResourceShared", notes: "≤ APC; enters a critical region, then acquires shared", source: Source::Ddi("fltkernel") },
    Emulated { dll: "fltmgr.sys", function: "FltReleaseResource", notes: "≤ APC; releases, then leaves the critical region; not held → ObjectMisuse", source: Source::Ddi("fltkernel") },
];
