//! Emulated fltmgr.sys exports: registration, contexts, names, push locks, work items and
//! security descriptors (ports are in [`crate::port`]).
//!
//! Rule ids (A1, B3, E1, …) refer to /shared/docs/fltmgr-semantics.md, which cites the
//! learn.microsoft.com DDI/IFS pages each rule comes from.

use std::sync::atomic::{AtomicU32, Ordering};

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CONTEXT_REGISTRATION, FLT_FILE_NAME_INFORMATION, FLT_OPERATION_REGISTRATION, FLT_REGISTRATION,
};
use windows_sys::Win32::Foundation::UNICODE_STRING;

use crate::exec::{self, APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::state::{self, status, ContextRecord, ContextRegistration, Filter, Inner, Life, LinkKey, FILTER_HANDLE};
use crate::verifier::{ContextType, PoolKind, Violation};
use crate::{io, Operation};

/// `FLT_CONTEXT_END` (A1).
const FLT_CONTEXT_END: u16 = 0xFFFF;
/// `IRP_MJ_OPERATION_END` (E2).
const IRP_MJ_OPERATION_END: u8 = 0x80;
/// `FLTFL_CONTEXT_REGISTRATION_NO_EXACT_SIZE_MATCH` (A2).
const NO_EXACT_SIZE_MATCH: u16 = 0x1;
/// `FLT_VARIABLE_SIZED_CONTEXTS` (A2).
const VARIABLE_SIZE: usize = usize::MAX;
/// Registration flags E1 documents.
const REGISTRATION_FLAGS_KNOWN: u32 = 0x1 | 0x2 | 0x4;
/// `FLT_SET_CONTEXT_REPLACE_IF_EXISTS` (B4).
const REPLACE_IF_EXISTS: u32 = 0;
/// `FLT_SET_CONTEXT_KEEP_IF_EXISTS` (B3).
const KEEP_IF_EXISTS: u32 = 1;
/// Refuse registration arrays longer than this (a missing terminator).
const MAX_ENTRIES: usize = 256;

/// Writes `value` to a driver out pointer unless it is NULL.
fn put<T>(pointer: *mut T, value: T) {
    if !pointer.is_null() {
        // SAFETY: out pointers come from the driver, which promises them valid (each DDI's
        // contract); fltemu writes them with no lock held, so a bad one faults cleanly.
        unsafe { pointer.write_unaligned(value) };
    }
}

fn read<T: Copy>(pointer: *const T) -> T {
    // SAFETY: the driver passes valid in pointers (each DDI's contract), read with no lock held.
    unsafe { pointer.read_unaligned() }
}

/// Reads and validates FLT_REGISTRATION (E1, E2, A2, A3), returning the status to fail with.
fn parse_registration(registration: *const FLT_REGISTRATION) -> Result<Filter, i32> {
    let r: FLT_REGISTRATION = read(registration);
    let version = u32::from(r.Version);
    // E1: Version 0x0203 (Win8+) or 0x0202 (Vista); earlier 0x0200/0x0201 layouts are shorter.
    if !(0x0200..=0x0203).contains(&version) {
        return Err(status::INVALID_PARAMETER);
    }
    if version == 0x0203 && usize::from(r.Size) != size_of::<FLT_REGISTRATION>() {
        return Err(status::INVALID_PARAMETER);
    }
    if r.Flags & !REGISTRATION_FLAGS_KNOWN != 0 {
        return Err(status::INVALID_PARAMETER);
    }
    let mut filter = Filter {
        unload: r.FilterUnloadCallback.map_or(0, |f| f as usize),
        setup: r.InstanceSetupCallback.map_or(0, |f| f as usize),
        query_teardown: r.InstanceQueryTeardownCallback.map_or(0, |f| f as usize),
        teardown_start: r.InstanceTeardownStartCallback.map_or(0, |f| f as usize),
        teardown_complete: r.InstanceTeardownCompleteCallback.map_or(0, |f| f as usize),
        ..Filter::default()
    };
    if !r.ContextRegistration.is_null() {
        let mut count_fixed = std::collections::HashMap::<u16, (usize, usize, bool)>::new();
        for index in 0..=MAX_ENTRIES {
            if index == MAX_ENTRIES {
                return Err(status::FLT_INVALID_CONTEXT_REGISTRATION);
            }
            // SAFETY: the array is terminated by FLT_CONTEXT_END (A2), checked as we go.
            let entry: FLT_CONTEXT_REGISTRATION = read(unsafe { r.ContextRegistration.add(index) });
            if entry.ContextType == FLT_CONTEXT_END {
                break;
            }
            if ContextType::from_raw(entry.ContextType).is_none() || entry.Flags & !NO_EXACT_SIZE_MATCH != 0 || !entry.Reserved1.is_null() {
                return Err(status::FLT_INVALID_CONTEXT_REGISTRATION);
            }
            let custom = entry.ContextAllocateCallback.is_some();
            if custom != entry.ContextFreeCallback.is_some() {
                return Err(status::FLT_INVALID_CONTEXT_REGISTRATION);
            }
            // A3: fltemu treats a zero tag without an allocate callback as an error.
            if !custom && entry.PoolTag == 0 {
                return Err(status::FLT_INVALID_CONTEXT_REGISTRATION);
            }
            if !custom && entry.Size == 0 {
                return Err(status::FLT_INVALID_CONTEXT_REGISTRATION);
            }
            let counts = count_fixed.entry(entry.ContextType).or_insert((0, 0, false));
            // A3: an allocate callback must be the only entry of its type; ≤ 3 fixed, ≤ 1
            // variable-size entries per type.
            if counts.2 || (custom && counts.0 + counts.1 > 0) {
                return Err(status::FLT_INVALID_CONTEXT_REGISTRATION);
            }
            if custom {
                counts.2 = true;
            } else if entry.Size == VARIABLE_SIZE {
                counts.1 += 1;
            } else {
                counts.0 += 1;
            }
            if counts.0 > 3 || counts.1 > 1 {
                return Err(status::FLT_INVALID_CONTEXT_REGISTRATION);
            }
            filter.contexts.push(ContextRegistration {
                context_type: entry.ContextType,
                flags: entry.Flags,
                cleanup: entry.ContextCleanupCallback.map_or(0, |f| f as usize),
                size: entry.Size,
                tag: entry.PoolTag,
            });
        }
    }
    if !r.OperationRegistration.is_null() {
        for index in 0..=MAX_ENTRIES {
            if index == MAX_ENTRIES {
                return Err(status::INVALID_PARAMETER);
            }
            // SAFETY: the array is terminated by IRP_MJ_OPERATION_END (E2), checked as we go.
            let entry: FLT_OPERATION_REGISTRATION = read(unsafe { r.OperationRegistration.add(index) });
            if entry.MajorFunction == IRP_MJ_OPERATION_END {
                break;
            }
            // IRP_MJ_MAXIMUM_FUNCTION is 0x1B; Filter Manager's own operations are negative
            // (0xFF downwards as UCHAR).
            let valid_major = entry.MajorFunction <= 0x1B || entry.MajorFunction >= 0xE0;
            if !valid_major || !entry.Reserved1.is_null() || entry.Flags & !0xF != 0 {
                return Err(status::INVALID_PARAMETER);
            }
            let callbacks = (entry.PreOperation.map_or(0, |f| f as usize), entry.PostOperation.map_or(0, |f| f as usize));
            if filter.operations.insert(entry.MajorFunction, callbacks).is_some() {
                return Err(status::INVALID_PARAMETER);
            }
        }
    }
    Ok(filter)
}

/// `FltRegisterFilter` (DDI fltregisterfilter; E1): validates the registration; PASSIVE_LEVEL.
extern "win64" fn flt_register_filter(driver: usize, registration: *const FLT_REGISTRATION, filter_out: *mut isize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    inner.enter("FltRegisterFilter", PASSIVE_LEVEL);
    if let Some(failure) = inner.injected("FltRegisterFilter") {
        return failure;
    }
    if driver == 0 || registration.is_null() || filter_out.is_null() {
        return status::INVALID_PARAMETER;
    }
    let filter = match parse_registration(registration) {
        Ok(filter) => filter,
        Err(status) => return status,
    };
    {
        let mut registered = inner.filter_mut();
        if registered.is_some() {
            // One filter per driver object in fltemu's model.
            return status::INVALID_PARAMETER;
        }
        *registered = Some(filter);
    }
    let mut state = inner.lock();
    state.filter_ever_registered = true;
    state.unregistered = false;
    drop(state);
    put(filter_out, FILTER_HANDLE);
    status::SUCCESS
}

/// `FltStartFiltering` (DDI fltstartfiltering; E6: instance setup for mounted volumes may run
/// before it returns): PASSIVE_LEVEL.
extern "win64" fn flt_start_filtering(filter: isize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    inner.enter("FltStartFiltering", PASSIVE_LEVEL);
    if !inner.filter_ok(filter) {
        return status::INVALID_PARAMETER;
    }
    if let Some(failure) = inner.injected("FltStartFiltering") {
        return failure;
    }
    if let Some(f) = inner.filter_mut().as_mut() {
        if f.started {
            return status::INVALID_PARAMETER;
        }
        f.started = true;
    }
    let volumes: Vec<usize> = {
        let records = inner.volumes();
        (0..records.len()).filter(|v| records[*v].mounted && records[*v].instance.is_none()).collect()
    };
    for volume in volumes {
        // FLTFL_INSTANCE_SETUP_AUTOMATIC_ATTACHMENT (E6).
        io::attach_instance(inner, volume, 0x1);
    }
    status::SUCCESS
}

/// `FltUnregisterFilter` (DDI fltunregisterfilter; B11): tears every instance down (reason
/// FILTER_UNLOAD, + MANDATORY when the unload is mandatory), drops every link reference (cleanup
/// callbacks run), waits for queued work items, then checks for leaks.
extern "win64" fn flt_unregister_filter(filter: isize) {
    let Some(inner) = state::current() else { return };
    inner.enter("FltUnregisterFilter", PASSIVE_LEVEL);
    if !inner.filter_ok(filter) {
        inner.violation(Violation::InvalidParameter { function: "FltUnregisterFilter", reason: "not a registered filter handle" });
        return;
    }
    unregister(inner);
}

/// The body of FltUnregisterFilter, also used by the emulator when a failed DriverEntry left the
/// filter registered.
pub(crate) fn unregister(inner: &Inner) {
    let mandatory = io::unload_is_mandatory();
    // FLTFL_INSTANCE_TEARDOWN_FILTER_UNLOAD 0x2, MANDATORY_FILTER_UNLOAD 0x4 (E6, B11).
    let reason = if mandatory { 0x2 | 0x4 } else { 0x2 };
    let instances: Vec<isize> = inner.instances.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys().copied().collect();
    for instance in instances {
        io::teardown_instance(inner, instance, reason);
    }
    let ports = crate::port::close_all_server_ports(inner);
    if ports > 0 {
        inner.violation(Violation::PortOpenAtUnregister { count: ports });
    }
    let doomed = inner.unlink_where(None, |key| matches!(key, LinkKey::Volume(_)));
    inner.finish(doomed);
    inner.wait_for_work();
    inner.wait_for_finishes();
    let mut alike: std::collections::BTreeMap<(ContextType, usize, u32, i64), usize> = std::collections::BTreeMap::new();
    inner.contexts.for_each(|_, context| {
        if context.life() != Life::Freed {
            *alike.entry((context.context_type, context.size, context.tag, context.refs())).or_insert(0) += 1;
        }
    });
    let mut leaks: Vec<Violation> = alike
        .into_iter()
        .map(|((context_type, size, tag, refcount), count)| Violation::ContextLeaked { context_type, size, tag: crate::Tag(tag), refcount, count })
        .collect();
    purge_name_cache(inner, None);
    let names: usize = inner.name_infos.each().map(|shard| shard.live.len()).sum();
    if names > 0 {
        leaks.push(Violation::NameInfoLeaked { count: names });
    }
    for leak in leaks {
        inner.violation(leak);
    }
    *inner.filter_mut() = None;
    inner.lock().unregistered = true;
}

/// FltAllocateContext (DDI fltallocatecontext; A4, A5, A6, A8 ≤ APC_LEVEL).
extern "win64" fn flt_allocate_context(filter: isize, context_type: u16, size: usize, pool_type: i32, out: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    inner.enter("FltAllocateContext", APC_LEVEL);
    let result = (|| {
        if !inner.filter_ok(filter) {
            return Err(status::INVALID_PARAMETER);
        }
        if let Some(failure) = inner.injected("FltAllocateContext") {
            return Err(failure);
        }
        let Some(kind) = ContextType::from_raw(context_type) else { return Err(status::FLT_CONTEXT_ALLOCATION_NOT_FOUND) };
        if size == 0 || size > usize::from(u16::MAX) {
            return Err(status::INVALID_BUFFER_SIZE);
        }
        let pool = match pool_type {
            0 | 512 => PoolKind::NonPaged,
            1 => PoolKind::Paged,
            _ => return Err(status::INVALID_PARAMETER),
        };
        let registered = inner.filter();
        let filter = registered.as_ref().ok_or(status::INVALID_PARAMETER)?;
        let entries = || filter.contexts.iter().filter(|c: &&ContextRegistration| c.context_type == context_type);
        // A4: exact size match, else (NO_EXACT_SIZE_MATCH) the smallest size ≥ request, else the
        // variable-size entry.
        let chosen = entries()
            .find(|c| c.size == size)
            .or_else(|| entries().filter(|c| c.flags & NO_EXACT_SIZE_MATCH != 0 && c.size != VARIABLE_SIZE && c.size >= size).min_by_key(|c| c.size))
            .or_else(|| entries().find(|c| c.size == VARIABLE_SIZE))
            .ok_or(status::FLT_CONTEXT_ALLOCATION_NOT_FOUND)?;
        let body = if chosen.size == VARIABLE_SIZE { size } else { chosen.size };
        Ok((kind, pool, body, chosen.tag, chosen.cleanup))
    })();
    let (kind, pool, body, tag, cleanup) = match result {
        Ok(v) => v,
        Err(failure) => {
            put(out, 0);
            return failure;
        }
    };
    if kind == ContextType::Volume && pool == PoolKind::Paged {
        inner.violation(Violation::WrongPoolForType { context_type: kind, pool });
    }
    let Ok(layout) = std::alloc::Layout::from_size_align(body, 16) else { return status::INSUFFICIENT_RESOURCES };
    // SAFETY: non-zero size (checked above).
    let memory = unsafe { std::alloc::alloc(layout) };
    if memory.is_null() {
        put(out, 0);
        return status::INSUFFICIENT_RESOURCES;
    }
    // SAFETY: the block was just allocated with `body` bytes (A5: contexts are not zeroed).
    unsafe { core::ptr::write_bytes(memory, state::CONTEXT_ALLOC_POISON, body) };
    let address = memory as usize;
    inner.contexts.insert(address, ContextRecord::new(kind, pool, body, tag, cleanup));
    put(out, address);
    status::SUCCESS
}

/// FltReferenceContext (DDI fltreferencecontext; B1 +1; ≤ DISPATCH_LEVEL).
extern "win64" fn flt_reference_context(context: usize) {
    let Some(inner) = state::current() else { return };
    inner.enter("FltReferenceContext", DISPATCH_LEVEL);
    inner.reference(context, "FltReferenceContext");
}

/// FltReleaseContext (DDI fltreleasecontext; B1 −1, B10 cleanup at 0; A8: ≤ DISPATCH_LEVEL for
/// non-paged, ≤ APC_LEVEL for paged contexts).
extern "win64" fn flt_release_context(context: usize) {
    let Some(inner) = state::current() else { return };
    inner.enter("FltReleaseContext", DISPATCH_LEVEL);
    if let Some(record) = inner.contexts.get(context)
        && record.pool == PoolKind::Paged
        && record.refs() > 0
        && exec::irql() > APC_LEVEL
    {
        inner.violation(Violation::IrqlTooHigh { function: "FltReleaseContext", irql: exec::irql(), max: APC_LEVEL });
    }
    let doomed = inner.release(context, "FltReleaseContext");
    inner.finish(doomed.into_iter().collect());
}

/// Resolves the object a Get/Set/Delete names into a link key, or the failure status (B2, B6,
/// A9, D1). `setting` adds the checks only a Set makes.
fn resolve_key(inner: &Inner, function: &'static str, kind: ContextType, instance: isize, file_object: usize, setting: bool) -> Result<LinkKey, i32> {
    inner.enter(function, APC_LEVEL);
    if let Some(failure) = inner.injected(function) {
        return Err(failure);
    }
    let Some(instance_record) = inner.instance(instance) else {
        inner.violation(Violation::InvalidParameter { function, reason: "not an instance handle" });
        return Err(status::INVALID_PARAMETER);
    };
    if setting && instance_record.tearing_down.load(Ordering::SeqCst) {
        return Err(status::FLT_DELETING_OBJECT);
    }
    let volume = instance_record.volume;
    if kind == ContextType::Instance {
        return Ok(LinkKey::Instance(instance));
    }
    // A9: no file, stream or stream-handle contexts in post-close (the FILE_OBJECT is going).
    if exec::operation() == Operation::PostClose {
        inner.violation(Violation::ContextOnUnsupportedObject { function, reason: "file-object context used in post-close (A9)" });
        return Err(status::NOT_SUPPORTED);
    }
    let Some((file_volume, file_state, paging, stream, file_node)) =
        inner.with_file(file_object, |file| (file.volume, file.state, file.paging_file, file.stream, file.file_node.as_ref().map(|(node, _)| *node)))
    else {
        inner.violation(Violation::ContextOnUnsupportedObject { function, reason: "not a FILE_OBJECT Filter Manager knows" });
        return Err(status::INVALID_PARAMETER);
    };
    if file_volume != volume {
        inner.violation(Violation::InvalidParameter { function, reason: "FILE_OBJECT is not on the instance's volume" });
        return Err(status::INVALID_PARAMETER);
    }
    match file_state {
        state::FileState::Creating | state::FileState::Failed => {
            if setting {
                inner.violation(Violation::ContextOnUnsupportedObject { function, reason: "FILE_OBJECT not opened (pre-create or failed create, B6)" });
            }
            return Err(status::NOT_SUPPORTED);
        }
        state::FileState::Closed => {
            inner.violation(Violation::ContextOnUnsupportedObject { function, reason: "FILE_OBJECT already closed" });
            return Err(status::INVALID_PARAMETER);
        }
        state::FileState::Open | state::FileState::CleanedUp => {}
    }
    // A9: no stream contexts for paging files; D1: only volumes whose file system supports them
    // (fltemu's volumes support file contexts exactly when they support stream contexts).
    if paging || !inner.volumes()[volume].stream_contexts {
        return Err(status::NOT_SUPPORTED);
    }
    if kind == ContextType::File {
        return file_node.map(|node| LinkKey::File(instance, node)).ok_or(status::NOT_SUPPORTED);
    }
    let Some(stream) = stream else { return Err(status::NOT_SUPPORTED) };
    Ok(match kind {
        ContextType::Stream => LinkKey::Stream(instance, stream),
        _ => LinkKey::StreamHandle(instance, file_object),
    })
}

/// Get (B1 +1; B2: `*Context` = NULL and STATUS_NOT_FOUND / NOT_SUPPORTED on failure). The
/// count is raised with the key's link-table shard held, so the link cannot drop its reference
/// in between.
fn get_context(inner: &Inner, key: Result<LinkKey, i32>, out: *mut usize) -> i32 {
    let found = key.and_then(|key| {
        let table = inner.links.lock(key.object());
        let address = *table.get(&key).ok_or(status::NOT_FOUND)?;
        // A count at 0 under a link is a driver's over-release already reported as
        // ReleasedLinkedToZero; the dying context is not handed out again.
        if !inner.contexts.get(address).is_some_and(ContextRecord::try_reference) {
            return Err(status::NOT_FOUND);
        }
        Ok(address)
    });
    inner.race_point("context Get returned");
    match found {
        Ok(address) => {
            put(out, address);
            status::SUCCESS
        }
        Err(failure) => {
            put(out, 0);
            if failure == status::NOT_FOUND && crate::knobs::widen_race_windows(inner.config.widen_race_windows) {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            failure
        }
    }
}

/// Set (B3 KEEP_IF_EXISTS, B4 REPLACE_IF_EXISTS, B6 failures; OldContext NULL on failure). The
/// whole decision is taken with the key's link-table shard held, as Filter Manager holds the
/// object's context-list lock.
fn set_context(inner: &Inner, function: &'static str, key: Result<LinkKey, i32>, operation: u32, new: usize, old: *mut usize) -> i32 {
    inner.race_point("context Set entered");
    let mut doomed = Vec::new();
    let result = key.and_then(|key| {
        let mut table = inner.links.lock(key.object());
        let Some(record) = inner.live_context(new, function) else { return Err(status::INVALID_PARAMETER) };
        if record.context_type != key.context_type() {
            inner.violation(Violation::InvalidParameter { function, reason: "context type does not match the Set function" });
            return Err(status::INVALID_PARAMETER);
        }
        let mut link = record.link.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // B6 (per LNT, checked before ALREADY_DEFINED).
        if link.is_some() {
            return Err(status::FLT_CONTEXT_ALREADY_LINKED);
        }
        if operation != REPLACE_IF_EXISTS && operation != KEEP_IF_EXISTS {
            return Err(status::INVALID_PARAMETER);
        }
        let existing = table.get(&key).copied();
        if let (KEEP_IF_EXISTS, Some(existing)) = (operation, existing) {
            if old.is_null() {
                return Ok((status::FLT_CONTEXT_ALREADY_DEFINED, 0));
            }
            if !inner.contexts.get(existing).is_some_and(ContextRecord::try_reference) {
                return Ok((status::FLT_CONTEXT_ALREADY_DEFINED, 0));
            }
            return Ok((status::FLT_CONTEXT_ALREADY_DEFINED, existing));
        }
        if !record.try_reference() {
            inner.violation(Violation::UseAfterFree { function, context_type: record.context_type, tag: crate::verifier::Tag(record.tag) });
            return Err(status::INVALID_PARAMETER);
        }
        *link = Some(key);
        drop(link);
        table.insert(key, new);
        let mut handed_back = 0;
        if let Some(existing) = existing {
            if let Some(record) = inner.contexts.get(existing) {
                record.set_link(None);
            }
            if old.is_null() {
                doomed.extend(inner.drop_reference(existing));
            } else {
                handed_back = existing;
            }
        }
        Ok((status::SUCCESS, handed_back))
    });
    inner.finish(doomed);
    match result {
        Ok((result, old_value)) => {
            put(old, old_value);
            result
        }
        Err(failure) => {
            put(old, 0);
            failure
        }
    }
}

/// Delete (B7): unlink; OldContext NULL → drop the link reference, else hand it to the caller.
fn delete_context(inner: &Inner, key: Result<LinkKey, i32>, old: *mut usize) -> i32 {
    let mut doomed = Vec::new();
    let result = key.and_then(|key| {
        let mut table = inner.links.lock(key.object());
        let address = table.remove(&key).ok_or(status::NOT_FOUND)?;
        if let Some(record) = inner.contexts.get(address) {
            record.set_link(None);
        }
        drop(table);
        if old.is_null() {
            doomed.extend(inner.drop_reference(address));
            Ok(0)
        } else {
            Ok(address)
        }
    });
    inner.finish(doomed);
    match result {
        Ok(value) => {
            put(old, value);
            status::SUCCESS
        }
        Err(failure) => {
            put(old, 0);
            failure
        }
    }
}

extern "win64" fn flt_get_instance_context(instance: isize, out: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let key = resolve_key(inner, "FltGetInstanceContext", ContextType::Instance, instance, 0, false);
    get_context(inner, key, out)
}

extern "win64" fn flt_set_instance_context(instance: isize, operation: u32, new: usize, old: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let key = resolve_key(inner, "FltSetInstanceContext", ContextType::Instance, instance, 0, true);
    set_context(inner, "FltSetInstanceContext", key, operation, new, old)
}

extern "win64" fn flt_delete_instance_context(instance: isize, old: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let key = resolve_key(inner, "FltDeleteInstanceContext", ContextType::Instance, instance, 0, false);
    delete_context(inner, key, old)
}

extern "win64" fn flt_get_stream_context(instance: isize, file_object: usize, out: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let key = resolve_key(inner, "FltGetStreamContext", ContextType::Stream, instance, file_object, false);
    get_context(inner, key, out)
}

extern "win64" fn flt_set_stream_context(instance: isize, file_object: usize, operation: u32, new: usize, old: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let key = resolve_key(inner, "FltSetStreamContext", ContextType::Stream, instance, file_object, true);
    set_context(inner, "FltSetStreamContext", key, operation, new, old)
}

extern "win64" fn flt_delete_stream_context(instance: isize, file_object: usize, old: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let key = resolve_key(inner, "FltDeleteStreamContext", ContextType::Stream, instance, file_object, false);
    delete_context(inner, key, old)
}

extern "win64" fn flt_get_stream_handle_context(instance: isize, file_object: usize, out: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let key = resolve_key(inner, "FltGetStreamHandleContext", ContextType::StreamHandle, instance, file_object, false);
    get_context(inner, key, out)
}

extern "win64" fn flt_set_stream_handle_context(instance: isize, file_object: usize, operation: u32, new: usize, old: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let key = resolve_key(inner, "FltSetStreamHandleContext", ContextType::StreamHandle, instance, file_object, true);
    set_context(inner, "FltSetStreamHandleContext", key, operation, new, old)
}

extern "win64" fn flt_delete_stream_handle_context(instance: isize, file_object: usize, old: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let key = resolve_key(inner, "FltDeleteStreamHandleContext", ContextType::StreamHandle, instance, file_object, false);
    delete_context(inner, key, old)
}

/// FltGetFileContext (DDI fltgetfilecontext; B1 +1, B2; ≤ APC_LEVEL): the context of the file
/// all of the FILE_OBJECT's streams share.
extern "win64" fn flt_get_file_context(instance: isize, file_object: usize, out: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let key = resolve_key(inner, "FltGetFileContext", ContextType::File, instance, file_object, false);
    get_context(inner, key, out)
}

/// FltSetFileContext (DDI fltsetfilecontext; B3–B6; ≤ APC_LEVEL): NOT_SUPPORTED where the file
/// system has no file contexts; the link is dropped at the file's last close.
extern "win64" fn flt_set_file_context(instance: isize, file_object: usize, operation: u32, new: usize, old: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let key = resolve_key(inner, "FltSetFileContext", ContextType::File, instance, file_object, true);
    set_context(inner, "FltSetFileContext", key, operation, new, old)
}

/// FltDeleteFileContext (DDI fltdeletefilecontext; B7; ≤ APC_LEVEL).
extern "win64" fn flt_delete_file_context(instance: isize, file_object: usize, old: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let key = resolve_key(inner, "FltDeleteFileContext", ContextType::File, instance, file_object, false);
    delete_context(inner, key, old)
}

fn volume_key(inner: &Inner, function: &'static str, volume: isize) -> Result<LinkKey, i32> {
    inner.enter(function, APC_LEVEL);
    if let Some(failure) = inner.injected(function) {
        return Err(failure);
    }
    if let Some(index) = inner.volume_of_handle(volume) {
        Ok(LinkKey::Volume(index))
    } else {
        inner.violation(Violation::InvalidParameter { function, reason: "not a volume handle" });
        Err(status::INVALID_PARAMETER)
    }
}

extern "win64" fn flt_get_volume_context(filter: isize, volume: isize, out: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let _ = filter;
    let key = volume_key(inner, "FltGetVolumeContext", volume);
    get_context(inner, key, out)
}

extern "win64" fn flt_set_volume_context(volume: isize, operation: u32, new: usize, old: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let key = volume_key(inner, "FltSetVolumeContext", volume);
    set_context(inner, "FltSetVolumeContext", key, operation, new, old)
}

/// FltDeleteContext (DDI fltdeletecontext; B8): the caller holds a reference; unlink and drop
/// the link reference; the caller's reference remains.
extern "win64" fn flt_delete_context(context: usize) {
    let Some(inner) = state::current() else { return };
    inner.enter("FltDeleteContext", APC_LEVEL);
    let Some(record) = inner.live_context(context, "FltDeleteContext") else { return };
    let Some(key) = record.linked() else { return };
    {
        // Whoever removes the key under its shard owns the link's reference.
        let mut table = inner.links.lock(key.object());
        if table.get(&key) != Some(&context) {
            return;
        }
        table.remove(&key);
        record.set_link(None);
    }
    if record.refs() <= 1 {
        let violation = Violation::InvalidParameter { function: "FltDeleteContext", reason: "caller holds no reference of its own (B8)" };
        inner.violation(violation);
    }
    let doomed = inner.drop_reference(context);
    inner.finish(doomed.into_iter().collect());
}

/// FltGetVolumeName (DDI fltgetvolumename; ≤ APC_LEVEL): NULL name → STATUS_BUFFER_TOO_SMALL
/// with the size needed; too small a buffer likewise; else copies and sets Length.
extern "win64" fn flt_get_volume_name(volume: isize, name: *mut UNICODE_STRING, needed: *mut u32) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    inner.enter("FltGetVolumeName", APC_LEVEL);
    if let Some(failure) = inner.injected("FltGetVolumeName") {
        return failure;
    }
    let Some(index) = inner.volume_of_handle(volume) else {
        inner.violation(Violation::InvalidParameter { function: "FltGetVolumeName", reason: "not a volume handle" });
        return status::INVALID_PARAMETER;
    };
    let wide = inner.volumes()[index].name_wide.clone();
    #[allow(clippy::cast_possible_truncation)]
    let bytes = (wide.len() * 2) as u32;
    if name.is_null() {
        if needed.is_null() {
            return status::INVALID_PARAMETER;
        }
        put(needed, bytes);
        return status::BUFFER_TOO_SMALL;
    }
    let target: UNICODE_STRING = read(name);
    if u32::from(target.MaximumLength) < bytes || target.Buffer.is_null() {
        put(needed, bytes);
        return status::BUFFER_TOO_SMALL;
    }
    // The caller's buffer holds MaximumLength ≥ `bytes` bytes; it and the UNICODE_STRING may
    // sit at odd addresses (x64 allows it), so both are written unaligned.
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { crate::driver_mem::write_units(target.Buffer, &wide) };
    #[allow(clippy::cast_possible_truncation)]
    // Length is the first field.
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { crate::driver_mem::write(name.cast::<u16>(), bytes as u16) };
    put(needed, bytes);
    status::SUCCESS
}

/// The (major function, file object) of callback data Filter Manager built.
fn callback_info(inner: &Inner, data: usize) -> Option<state::CallbackInfo> {
    inner.callback_data.lock(data as u64).get(&data).copied()
}

/// `FLT_FILE_NAME_NORMALIZED` etc. (fltKernel.h).
const NAME_FORMAT_MASK: u32 = 0xFF;
const NAME_QUERY_MASK: u32 = 0xFF00;

/// `FLT_FILE_NAME_QUERY_DEFAULT` … `ALWAYS_ALLOW_CACHE_LOOKUP` (FLT_FILE_NAME_OPTIONS).
const QUERY_DEFAULT: u32 = 0x100;
const QUERY_CACHE_ONLY: u32 = 0x200;
const QUERY_FILESYSTEM_ONLY: u32 = 0x300;
const QUERY_ALWAYS_ALLOW_CACHE_LOOKUP: u32 = 0x400;
/// `FLT_FILE_NAME_DO_NOT_CACHE`.
const NAME_DO_NOT_CACHE: u32 = 0x0200_0000;
/// `FLT_FILE_NAME_SHORT`.
const NAME_SHORT: u32 = 3;

/// FltGetFileNameInformation (DDI fltgetfilenameinformation; ≤ APC_LEVEL; not in post-close).
extern "win64" fn flt_get_file_name_information(data: usize, options: u32, out: *mut *mut FLT_FILE_NAME_INFORMATION) -> i32 {
    const FUNCTION: &str = "FltGetFileNameInformation";
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    inner.enter(FUNCTION, APC_LEVEL);
    if let Some(code) = inner.injected(FUNCTION) {
        put(out, core::ptr::null_mut());
        return code;
    }
    if exec::operation() == Operation::PostClose {
        inner.violation(Violation::InvalidParameter { function: FUNCTION, reason: "called in post-close" });
        put(out, core::ptr::null_mut());
        return status::INVALID_PARAMETER;
    }
    let Some(info) = callback_info(inner, data) else {
        inner.violation(Violation::InvalidParameter { function: FUNCTION, reason: "not callback data of a running operation" });
        put(out, core::ptr::null_mut());
        return status::INVALID_PARAMETER;
    };
    name_information(inner, info.file_object, options, out)
}

/// FltGetFileNameInformationUnsafe (DDI fltgetfilenameinformationunsafe; ≤ APC_LEVEL): the
/// same query from a FILE_OBJECT alone (Instance may be NULL); the FILE_OBJECT must be opened.
extern "win64" fn flt_get_file_name_information_unsafe(file_object: usize, instance: isize, options: u32, out: *mut *mut FLT_FILE_NAME_INFORMATION) -> i32 {
    const FUNCTION: &str = "FltGetFileNameInformationUnsafe";
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    inner.enter(FUNCTION, APC_LEVEL);
    if instance != 0 && inner.instance(instance).is_none() {
        inner.violation(Violation::InvalidParameter { function: FUNCTION, reason: "not an instance handle" });
        put(out, core::ptr::null_mut());
        return status::INVALID_PARAMETER;
    }
    match inner.with_file(file_object, |file| file.state) {
        Some(state::FileState::Open | state::FileState::CleanedUp) => name_information(inner, file_object, options, out),
        Some(state::FileState::Creating | state::FileState::Failed) => {
            inner.violation(Violation::InvalidParameter { function: FUNCTION, reason: "FILE_OBJECT not opened (pre-create or failed create)" });
            put(out, core::ptr::null_mut());
            status::INVALID_PARAMETER
        }
        Some(state::FileState::Closed) | None => {
            inner.violation(Violation::InvalidParameter { function: FUNCTION, reason: "not an open FILE_OBJECT Filter Manager knows" });
            put(out, core::ptr::null_mut());
            status::INVALID_PARAMETER
        }
    }
}

/// The query both name functions make. Opened and normalized names have the same text in
/// fltemu (no short names to expand) but distinct `Format`; a short name is the final
/// component without its stream. Names of an opened stream are cached per (stream, format):
/// DEFAULT / ALWAYS_ALLOW_CACHE_LOOKUP return the cached block (+1) or query and cache,
/// CACHE_ONLY returns the cached block or STATUS_FLT_NAME_CACHE_MISS, FILESYSTEM_ONLY and
/// FLT_FILE_NAME_DO_NOT_CACHE neither look nor cache. Pre-create names are never cached.
fn name_information(inner: &Inner, file_object: usize, options: u32, out: *mut *mut FLT_FILE_NAME_INFORMATION) -> i32 {
    let failure = |code| {
        put(out, core::ptr::null_mut());
        code
    };
    let format = options & NAME_FORMAT_MASK;
    let method = options & NAME_QUERY_MASK;
    if !(1..=3).contains(&format) || ![QUERY_DEFAULT, QUERY_CACHE_ONLY, QUERY_FILESYSTEM_ONLY, QUERY_ALWAYS_ALLOW_CACHE_LOOKUP].contains(&method) {
        return failure(status::INVALID_PARAMETER);
    }
    let Some((file_volume, file_state, path, stream)) = inner.with_file(file_object, |file| (file.volume, file.state, file.path.clone(), file.stream)) else {
        return failure(status::INVALID_PARAMETER);
    };
    if format == 1 && file_state == state::FileState::Failed {
        return failure(status::OBJECT_NAME_NOT_FOUND);
    }
    // The short name is not valid in the pre-create path (the DDI's format table).
    if format == NAME_SHORT && matches!(file_state, state::FileState::Creating | state::FileState::Failed) {
        return failure(status::INVALID_PARAMETER);
    }
    let opened = matches!(file_state, state::FileState::Open | state::FileState::CleanedUp);
    let cache_key = stream.filter(|_| opened).map(|stream| (stream, format));
    let mut cache = inner.name_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(key) = cache_key
        && method != QUERY_FILESYSTEM_ONLY
        && let Some(address) = cache.get(&key).copied()
        && let Some(name) = inner.name_infos.lock(address as u64).live.get_mut(&address)
    {
        name.refs += 1;
        put(out, address as *mut FLT_FILE_NAME_INFORMATION);
        return status::SUCCESS;
    }
    if method == QUERY_CACHE_ONLY {
        return failure(status::FLT_NAME_CACHE_MISS);
    }
    let (full, volume_chars) = if format == NAME_SHORT {
        let final_component = path.rsplit('\\').next().unwrap_or("");
        let base = final_component.split(':').next().unwrap_or("");
        (base.encode_utf16().collect::<Vec<u16>>(), 0)
    } else {
        let volumes = inner.volumes();
        let volume = &volumes[file_volume];
        let full: Vec<u16> = volume.name_wide.iter().copied().chain(path.encode_utf16()).collect();
        (full, volume.name_wide.len())
    };
    let mut block = Box::new(FLT_FILE_NAME_INFORMATION {
        Size: u16::try_from(size_of::<FLT_FILE_NAME_INFORMATION>()).unwrap_or(u16::MAX),
        NamesParsed: 0,
        Format: format,
        Name: empty_string(),
        Volume: empty_string(),
        Share: empty_string(),
        Extension: empty_string(),
        Stream: empty_string(),
        FinalComponent: empty_string(),
        ParentDir: empty_string(),
    });
    let buffer = full;
    block.Name = slice_string(&buffer, 0, buffer.len());
    block.Volume = slice_string(&buffer, 0, volume_chars);
    let address = &raw mut *block as usize;
    let cached = cache_key.is_some() && method != QUERY_FILESYSTEM_ONLY && options & NAME_DO_NOT_CACHE == 0;
    inner.name_infos.lock(address as u64).live.insert(address, state::NameInfo { block, buffer, refs: 1 + i64::from(cached), volume_chars, cached });
    if cached && let Some(key) = cache_key {
        cache.insert(key, address);
    }
    drop(cache);
    put(out, address as *mut FLT_FILE_NAME_INFORMATION);
    status::SUCCESS
}

/// Drops the name cache's references: of one stream's names (its last close) or of all
/// (unregistration, before the leak count).
pub(crate) fn purge_name_cache(inner: &Inner, stream: Option<usize>) {
    let mut cache = inner.name_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let keys: Vec<(usize, u32)> = cache.keys().copied().filter(|(s, _)| stream.is_none_or(|stream| *s == stream)).collect();
    for key in keys {
        let Some(address) = cache.remove(&key) else { continue };
        let mut names = inner.name_infos.lock(address as u64);
        if let Some(name) = names.live.get_mut(&address) {
            name.cached = false;
            name.refs -= 1;
        }
        if names.live.get(&address).is_some_and(|name| name.refs <= 0)
            && let Some(name) = names.live.remove(&address)
        {
            names.dead.push(name);
        }
    }
}

fn empty_string() -> UNICODE_STRING {
    UNICODE_STRING { Length: 0, MaximumLength: 0, Buffer: core::ptr::null_mut() }
}

/// A UNICODE_STRING over `buffer[start..start + length]` (the Vec's heap buffer never moves).
fn slice_string(buffer: &[u16], start: usize, length: usize) -> UNICODE_STRING {
    let bytes = u16::try_from(length * 2).unwrap_or(0xFFFE);
    UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: buffer[start..].as_ptr().cast_mut() }
}

/// FltReleaseFileNameInformation (DDI; ≤ APC_LEVEL): −1; over-release is 0xF5/0x68.
extern "win64" fn flt_release_file_name_information(info: usize) {
    let Some(inner) = state::current() else { return };
    inner.enter("FltReleaseFileNameInformation", APC_LEVEL);
    let released = {
        let mut names = inner.name_infos.lock(info as u64);
        // The cache's own reference is not the driver's to release.
        let released = names.live.get_mut(&info).filter(|name| name.refs > i64::from(name.cached)).map(|name| name.refs -= 1);
        if names.live.get(&info).is_some_and(|name| name.refs == 0)
            && let Some(name) = names.live.remove(&info)
        {
            names.dead.push(name);
        }
        released.is_some()
    };
    if !released {
        inner.violation(Violation::NameInfoOverReleased);
    }
}

/// FltReferenceFileNameInformation (DDI; ≤ APC_LEVEL): +1.
extern "win64" fn flt_reference_file_name_information(info: usize) {
    let Some(inner) = state::current() else { return };
    inner.enter("FltReferenceFileNameInformation", APC_LEVEL);
    let referenced = inner.name_infos.lock(info as u64).live.get_mut(&info).map(|name| name.refs += 1).is_some();
    if !referenced {
        inner.violation(Violation::InvalidParameter { function: "FltReferenceFileNameInformation", reason: "not live name information" });
    }
}

/// FltParseFileNameInformation (DDI; ≤ APC_LEVEL): fills ParentDir, FinalComponent, Extension
/// and Stream from Name and sets NamesParsed (FLTFL_FILE_NAME_PARSED_* 0x1|0x2|0x4|0x8).
extern "win64" fn flt_parse_file_name_information(info: usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    inner.enter("FltParseFileNameInformation", APC_LEVEL);
    let mut names = inner.name_infos.lock(info as u64);
    let Some(name) = names.live.get_mut(&info) else {
        drop(names);
        inner.violation(Violation::InvalidParameter { function: "FltParseFileNameInformation", reason: "not live name information" });
        return status::INVALID_PARAMETER;
    };
    let path = &name.buffer[name.volume_chars..];
    let last_slash = path.iter().rposition(|c| *c == u16::from(b'\\')).map_or(0, |p| p + 1);
    let final_start = name.volume_chars + last_slash;
    let final_component = &name.buffer[final_start..];
    let colon = final_component.iter().position(|c| *c == u16::from(b':'));
    let base_end = colon.unwrap_or(final_component.len());
    let dot = final_component[..base_end].iter().rposition(|c| *c == u16::from(b'.'));
    let buffer = &name.buffer;
    let parent = slice_string(buffer, name.volume_chars, last_slash);
    let final_string = slice_string(buffer, final_start, final_component.len());
    let extension = dot.map_or_else(empty_string, |d| slice_string(buffer, final_start + d + 1, base_end - d - 1));
    let stream = colon.map_or_else(empty_string, |c| slice_string(buffer, final_start + c, final_component.len() - c));
    name.block.ParentDir = parent;
    name.block.FinalComponent = final_string;
    name.block.Extension = extension;
    name.block.Stream = stream;
    name.block.NamesParsed = 0xF;
    status::SUCCESS
}

/// The IRP_MJ_* operations whose buffer FltLockUserBuffer can lock (its DDI page's list;
/// IRP_MJ_READ / IRP_MJ_WRITE only without IRP_MN_MDL).
const LOCKABLE_MAJORS: [u8; 11] = [0x03, 0x04, 0x07, 0x08, 0x0C, 0x0D, 0x0E, 0x0F, 0x11, 0x19, 0x1A];

/// FltLockUserBuffer (DDI fltlockuserbuffer; ≤ APC_LEVEL): callback data that is not of a
/// running operation → INVALID_PARAMETER + InvalidParameter; an operation without an MDL
/// parameter (create, cleanup, close) → STATUS_INVALID_PARAMETER, as the DDI documents; a
/// read or write gets an MDL of its buffer in its parameters (rw.rs).
extern "win64" fn flt_lock_user_buffer(data: usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    inner.enter("FltLockUserBuffer", APC_LEVEL);
    if callback_info(inner, data).is_none() {
        inner.violation(Violation::InvalidParameter { function: "FltLockUserBuffer", reason: "not callback data of a running operation" });
        return status::INVALID_PARAMETER;
    }
    // SAFETY: callback data Filter Manager built for a running operation (checked above).
    let callback: windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_CALLBACK_DATA = read(data as *const _);
    // SAFETY: its Iopb points at the operation's parameter block, alive while it runs.
    let major = read(unsafe { &raw const (*callback.Iopb).MajorFunction });
    if !LOCKABLE_MAJORS.contains(&major) {
        return status::INVALID_PARAMETER;
    }
    // Reads and writes fltemu issues get a real MDL (rw.rs); other lockable operations are not
    // issued.
    crate::rw::lock_user_buffer(data, callback.Iopb.cast_mut()).unwrap_or(status::NOT_SUPPORTED)
}

/// FltGetRequestorProcessId (DDI; ≤ DISPATCH_LEVEL): the process that requested the I/O.
extern "win64" fn flt_get_requestor_process_id(data: usize) -> u32 {
    let Some(inner) = state::current() else { return 0 };
    inner.enter("FltGetRequestorProcessId", DISPATCH_LEVEL);
    callback_info(inner, data).map_or_else(
        || {
            inner.violation(Violation::InvalidParameter { function: "FltGetRequestorProcessId", reason: "not callback data of a running operation" });
            0
        },
        |info| info.requestor_pid,
    )
}

/// FltBuildDefaultSecurityDescriptor (DDI; F1): an opaque descriptor; must be freed with
/// FltFreeSecurityDescriptor (leaks are reported at unload).
extern "win64" fn flt_build_default_security_descriptor(descriptor: *mut usize, _access: u32) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    inner.enter("FltBuildDefaultSecurityDescriptor", APC_LEVEL);
    if descriptor.is_null() {
        return status::INVALID_PARAMETER;
    }
    if let Some(failure) = inner.injected("FltBuildDefaultSecurityDescriptor") {
        put(descriptor, 0);
        return failure;
    }
    let mut block = Box::new([0u8; 64]);
    block[0] = 1; // SECURITY_DESCRIPTOR_REVISION
    let address = block.as_ptr() as usize;
    inner.lock().security_descriptors.insert(address, block);
    put(descriptor, address);
    status::SUCCESS
}

/// FltFreeSecurityDescriptor (DDI).
extern "win64" fn flt_free_security_descriptor(descriptor: usize) {
    let Some(inner) = state::current() else { return };
    inner.enter("FltFreeSecurityDescriptor", APC_LEVEL);
    let known = inner.lock().security_descriptors.remove(&descriptor).is_some();
    if !known {
        inner.violation(Violation::InvalidParameter { function: "FltFreeSecurityDescriptor", reason: "not a descriptor from FltBuildDefaultSecurityDescriptor" });
    }
}

/// A push lock's state lives in the low 32 bits of the EX_PUSH_LOCK word (x64 is
/// little-endian, so that is the word's address), so a contended waiter can sleep on it with a
/// futex, as a kernel push lock's waiters block until a release wakes them instead of spinning:
/// bit 0 = held exclusive, bit 1 = a waiter sleeps, bits 2.. = shared holders.
const PUSH_LOCK_EXCLUSIVE: u32 = 1;
const PUSH_LOCK_WAITING: u32 = 2;
const PUSH_LOCK_SHARED: u32 = 4;
/// Tries before a contended acquire sleeps: a holder on the other CPU usually releases within
/// a few yields, and a sleep costs a wake-up system call on the release.
const PUSH_LOCK_SPINS: u32 = 8;
/// The longest sleep between re-checks, so a deadlocked driver costs little CPU while the
/// watchdog (Config::call_timeout) runs out, and a lost wake-up could only delay, never hang.
const PUSH_LOCK_SLEEP: std::time::Duration = std::time::Duration::from_millis(20);

/// The EX_PUSH_LOCK at `pointer` as an atomic word, or None (reported; the call then does
/// nothing) when it is misaligned.
fn push_lock(function: &'static str, pointer: *mut usize) -> Option<&'static AtomicU32> {
    if !crate::driver_mem::lock_word(function, pointer as usize) {
        return None;
    }
    // SAFETY: an EX_PUSH_LOCK is a pointer-sized word in driver memory that lives as long as
    // the lock is used (the push-lock DDIs' contract), 8-byte aligned (checked); fltemu only
    // ever accesses its low 32 bits, always atomically and always at this size.
    Some(unsafe { AtomicU32::from_ptr(pointer.cast::<u32>()) })
}

/// Acquires `word` when `free(value)` says the lock can be taken as `value + add`; sleeps on the
/// word (setting the waiting bit) after a few failed tries.
fn acquire_push_lock(word: &AtomicU32, free: impl Fn(u32) -> bool, add: u32) {
    let mut round = 0;
    loop {
        let value = word.load(Ordering::Relaxed);
        if free(value) {
            if word.compare_exchange_weak(value, value + add, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return;
            }
            continue;
        }
        round += 1;
        if round < PUSH_LOCK_SPINS {
            std::thread::yield_now();
            continue;
        }
        let waiting = value | PUSH_LOCK_WAITING;
        if waiting == value || word.compare_exchange_weak(value, waiting, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            exec::futex_wait_for(word, waiting, PUSH_LOCK_SLEEP);
        }
    }
}

/// The push lock word's initial state.
extern "win64" fn flt_initialize_push_lock(lock: *mut usize) {
    if let Some(inner) = state::current() {
        inner.enter("FltInitializePushLock", APC_LEVEL);
    }
    if let Some(word) = push_lock("FltInitializePushLock", lock) {
        word.store(0, Ordering::Release);
    }
}

extern "win64" fn flt_acquire_push_lock_exclusive(lock: *mut usize) {
    if let Some(inner) = state::current() {
        inner.enter("FltAcquirePushLockExclusive", APC_LEVEL);
    }
    // Free when neither exclusive nor shared holders are left (a sleeper's bit is kept).
    if let Some(word) = push_lock("FltAcquirePushLockExclusive", lock) {
        acquire_push_lock(word, |value| value & !PUSH_LOCK_WAITING == 0, PUSH_LOCK_EXCLUSIVE);
    }
}

extern "win64" fn flt_acquire_push_lock_shared(lock: *mut usize) {
    if let Some(inner) = state::current() {
        inner.enter("FltAcquirePushLockShared", APC_LEVEL);
    }
    if let Some(word) = push_lock("FltAcquirePushLockShared", lock) {
        acquire_push_lock(word, |value| value & PUSH_LOCK_EXCLUSIVE == 0, PUSH_LOCK_SHARED);
    }
}

extern "win64" fn flt_release_push_lock(lock: *mut usize) {
    let inner = state::current();
    if let Some(inner) = inner {
        inner.enter("FltReleasePushLock", APC_LEVEL);
    }
    let Some(word) = push_lock("FltReleasePushLock", lock) else { return };
    let value = word.load(Ordering::Acquire);
    let woke = if value & PUSH_LOCK_EXCLUSIVE != 0 {
        // The last holder: clear the waiting bit too, and wake every sleeper to retry.
        word.fetch_and(!(PUSH_LOCK_EXCLUSIVE | PUSH_LOCK_WAITING), Ordering::Release) & PUSH_LOCK_WAITING != 0
    } else if value >= PUSH_LOCK_SHARED {
        let before = word.fetch_sub(PUSH_LOCK_SHARED, Ordering::Release);
        before & !PUSH_LOCK_WAITING == PUSH_LOCK_SHARED && word.fetch_and(!PUSH_LOCK_WAITING, Ordering::Relaxed) & PUSH_LOCK_WAITING != 0
    } else {
        if let Some(inner) = inner {
            inner.violation(Violation::PushLockMisuse { function: "FltReleasePushLock" });
        }
        false
    };
    if woke {
        exec::futex_wake(word);
    }
}

extern "win64" fn flt_delete_push_lock(lock: *mut usize) {
    let Some(inner) = state::current() else { return };
    inner.enter("FltDeletePushLock", APC_LEVEL);
    if push_lock("FltDeletePushLock", lock).is_some_and(|word| word.load(Ordering::Acquire) != 0) {
        inner.violation(Violation::PushLockMisuse { function: "FltDeletePushLock" });
    }
}

/// FltAllocateGenericWorkItem (DDI; ≤ DISPATCH_LEVEL).
extern "win64" fn flt_allocate_generic_work_item() -> usize {
    let Some(inner) = state::current() else { return 0 };
    inner.enter("FltAllocateGenericWorkItem", DISPATCH_LEVEL);
    if inner.injected("FltAllocateGenericWorkItem").is_some() {
        return 0;
    }
    let address = Box::into_raw(Box::new([0u64; 8])) as usize;
    inner.lock().work_items.insert(address, false);
    address
}

/// FltFreeGenericWorkItem (DDI; ≤ DISPATCH_LEVEL).
extern "win64" fn flt_free_generic_work_item(item: usize) {
    let Some(inner) = state::current() else { return };
    inner.enter("FltFreeGenericWorkItem", DISPATCH_LEVEL);
    let known = inner.lock().work_items.remove(&item).is_some();
    if !known {
        inner.violation(Violation::InvalidParameter { function: "FltFreeGenericWorkItem", reason: "not a live work item" });
    }
}

/// FltQueueGenericWorkItem (DDI; ≤ DISPATCH_LEVEL): runs the routine on an emulator worker at
/// PASSIVE_LEVEL; FltUnregisterFilter waits for it (B11). STATUS_FLT_DELETING_OBJECT once the
/// filter is unregistering.
extern "win64" fn flt_queue_generic_work_item(item: usize, object: usize, routine: usize, _queue: i32, context: usize) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    inner.enter("FltQueueGenericWorkItem", DISPATCH_LEVEL);
    let known = inner.lock().work_items.contains_key(&item);
    if !known || routine == 0 {
        inner.violation(Violation::InvalidParameter { function: "FltQueueGenericWorkItem", reason: "not a live work item or no routine" });
        return status::INVALID_PARAMETER;
    }
    if !inner.filter_registered() {
        return status::FLT_DELETING_OBJECT;
    }
    if let Some(failure) = inner.injected("FltQueueGenericWorkItem") {
        return failure;
    }
    let Some(arc) = state::current_arc() else { return status::FLT_NOT_INITIALIZED };
    arc.spawn(move || {
        exec::enter(PASSIVE_LEVEL, 4, Operation::WorkItem);
        // SAFETY: `routine` is the driver's PFLT_GENERIC_WORKITEM_ROUTINE (Win64).
        let routine = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(usize, usize, usize)>(routine) };
        // SAFETY: called as FltQueueGenericWorkItem documents: (work item, object, context).
        exec::driver_call(|| unsafe { routine(item, object, context) });
    });
    status::SUCCESS
}

/// fltmgr.sys exports by name.
pub fn resolve(name: &str) -> Option<usize> {
    let address = match name {
        "FltRegisterFilter" => flt_register_filter as *const () as usize,
        "FltStartFiltering" => flt_start_filtering as *const () as usize,
        "FltUnregisterFilter" => flt_unregister_filter as *const () as usize,
        "FltAllocateContext" => flt_allocate_context as *const () as usize,
        "FltReferenceContext" => flt_reference_context as *const () as usize,
        "FltReleaseContext" => flt_release_context as *const () as usize,
        "FltGetInstanceContext" => flt_get_instance_context as *const () as usize,
        "FltSetInstanceContext" => flt_set_instance_context as *const () as usize,
        "FltDeleteInstanceContext" => flt_delete_instance_context as *const () as usize,
        "FltGetStreamContext" => flt_get_stream_context as *const () as usize,
        "FltSetStreamContext" => flt_set_stream_context as *const () as usize,
        "FltDeleteStreamContext" => flt_delete_stream_context as *const () as usize,
        "FltGetFileNameInformationUnsafe" => flt_get_file_name_information_unsafe as *const () as usize,
        "FltLockUserBuffer" => flt_lock_user_buffer as *const () as usize,
        "FltGetFileContext" => flt_get_file_context as *const () as usize,
        "FltSetFileContext" => flt_set_file_context as *const () as usize,
        "FltDeleteFileContext" => flt_delete_file_context as *const () as usize,
        "FltGetStreamHandleContext" => flt_get_stream_handle_context as *const () as usize,
        "FltSetStreamHandleContext" => flt_set_stream_handle_context as *const () as usize,
        "FltDeleteStreamHandleContext" => flt_delete_stream_handle_context as *const () as usize,
        "FltGetVolumeContext" => flt_get_volume_context as *const () as usize,
        "FltSetVolumeContext" => flt_set_volume_context as *const () as usize,
        "FltDeleteContext" => flt_delete_context as *const () as usize,
        "FltGetVolumeName" => flt_get_volume_name as *const () as usize,
        "FltGetFileNameInformation" => flt_get_file_name_information as *const () as usize,
        "FltReleaseFileNameInformation" => flt_release_file_name_information as *const () as usize,
        "FltReferenceFileNameInformation" => flt_reference_file_name_information as *const () as usize,
        "FltParseFileNameInformation" => flt_parse_file_name_information as *const () as usize,
        "FltGetRequestorProcessId" => flt_get_requestor_process_id as *const () as usize,
        "FltBuildDefaultSecurityDescriptor" => flt_build_default_security_descriptor as *const () as usize,
        "FltFreeSecurityDescriptor" => flt_free_security_descriptor as *const () as usize,
        "FltInitializePushLock" => flt_initialize_push_lock as *const () as usize,
        "FltAcquirePushLockExclusive" => flt_acquire_push_lock_exclusive as *const () as usize,
        "FltAcquirePushLockShared" => flt_acquire_push_lock_shared as *const () as usize,
        "FltReleasePushLock" => flt_release_push_lock as *const () as usize,
        "FltDeletePushLock" => flt_delete_push_lock as *const () as usize,
        "FltAllocateGenericWorkItem" => flt_allocate_generic_work_item as *const () as usize,
        "FltQueueGenericWorkItem" => flt_queue_generic_work_item as *const () as usize,
        "FltFreeGenericWorkItem" => flt_free_generic_work_item as *const () as usize,
        other => return crate::port::resolve(other),
    };
    Some(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_CONTEXT;

    unsafe extern "system" fn cleanup(_context: PFLT_CONTEXT, _kind: u16) {}

    fn context(kind: u16, size: usize, tag: u32) -> FLT_CONTEXT_REGISTRATION {
        FLT_CONTEXT_REGISTRATION {
            ContextType: kind,
            Flags: 0,
            ContextCleanupCallback: Some(cleanup),
            Size: size,
            PoolTag: tag,
            ContextAllocateCallback: None,
            ContextFreeCallback: None,
            Reserved1: core::ptr::null_mut(),
        }
    }

    fn end() -> FLT_CONTEXT_REGISTRATION {
        context(FLT_CONTEXT_END, 0, 0)
    }

    fn operation(major: u8) -> FLT_OPERATION_REGISTRATION {
        FLT_OPERATION_REGISTRATION { MajorFunction: major, Flags: 0, PreOperation: None, PostOperation: None, Reserved1: core::ptr::null_mut() }
    }

    fn parse(contexts: &[FLT_CONTEXT_REGISTRATION], operations: &[FLT_OPERATION_REGISTRATION], version: u16, size: u16) -> Result<Filter, i32> {
        // SAFETY: FLT_REGISTRATION is plain data; all-zero is a valid value.
        let mut registration: FLT_REGISTRATION = unsafe { core::mem::zeroed() };
        registration.Size = size;
        registration.Version = version;
        registration.ContextRegistration = contexts.as_ptr();
        registration.OperationRegistration = operations.as_ptr();
        parse_registration(&raw const registration)
    }

    const SIZE: u16 = size_of::<FLT_REGISTRATION>() as u16;

    #[test]
    fn a_valid_registration_is_copied() {
        let contexts = [context(0x2, 16, 0x6E49_7843), context(0x8, 8, 0x7453_7843), context(0x8, usize::MAX, 0x7453_7843), end()];
        let operations = [operation(0x00), operation(0x12), operation(IRP_MJ_OPERATION_END)];
        let filter = parse(&contexts, &operations, 0x0203, SIZE).unwrap();
        assert_eq!(filter.contexts.len(), 3);
        assert_eq!(filter.operations.len(), 2);
        assert!(parse(&contexts, &operations, 0x0202, SIZE).is_ok(), "Vista layout version accepted");
    }

    #[test]
    fn version_size_and_operations_are_checked() {
        let contexts = [end()];
        let good = [operation(IRP_MJ_OPERATION_END)];
        assert_eq!(parse(&contexts, &good, 0x0100, SIZE).err(), Some(status::INVALID_PARAMETER));
        assert_eq!(parse(&contexts, &good, 0x0203, SIZE - 8).err(), Some(status::INVALID_PARAMETER));
        let duplicate = [operation(0x00), operation(0x00), operation(IRP_MJ_OPERATION_END)];
        assert_eq!(parse(&contexts, &duplicate, 0x0203, SIZE).err(), Some(status::INVALID_PARAMETER));
        let bad_major = [operation(0x40), operation(IRP_MJ_OPERATION_END)];
        assert_eq!(parse(&contexts, &bad_major, 0x0203, SIZE).err(), Some(status::INVALID_PARAMETER));
    }

    #[test]
    fn context_registration_rules_a2_a3() {
        let operations = [operation(IRP_MJ_OPERATION_END)];
        let invalid = Some(status::FLT_INVALID_CONTEXT_REGISTRATION);
        assert_eq!(parse(&[context(0x8, 8, 0), end()], &operations, 0x0203, SIZE).err(), invalid, "zero tag");
        assert_eq!(parse(&[context(0x3, 8, 1), end()], &operations, 0x0203, SIZE).err(), invalid, "not a context type");
        assert_eq!(parse(&[context(0x8, 0, 1), end()], &operations, 0x0203, SIZE).err(), invalid, "zero size");
        let four_fixed = [context(0x8, 8, 1), context(0x8, 16, 1), context(0x8, 24, 1), context(0x8, 32, 1), end()];
        assert_eq!(parse(&four_fixed, &operations, 0x0203, SIZE).err(), invalid, "more than 3 fixed sizes");
        let two_variable = [context(0x8, usize::MAX, 1), context(0x8, usize::MAX, 1), end()];
        assert_eq!(parse(&two_variable, &operations, 0x0203, SIZE).err(), invalid, "more than 1 variable size");
        let mut flagged = context(0x8, 8, 1);
        flagged.Flags = 0x2;
        assert_eq!(parse(&[flagged, end()], &operations, 0x0203, SIZE).err(), invalid, "unknown flag");
    }

    /// Many threads on one push lock: exclusive holders are alone, shared holders never overlap
    /// an exclusive one, no acquire is lost to a missed wake-up, and the word ends free.
    #[test]
    fn push_lock_excludes_and_wakes_its_sleepers() {
        use std::sync::atomic::AtomicUsize;
        const ROUNDS: usize = 20_000;
        let word = AtomicUsize::new(0);
        let pointer = word.as_ptr() as usize;
        let exclusive = AtomicUsize::new(0);
        let shared = AtomicUsize::new(0);
        let mut counter = 0usize;
        let counter_address = &raw mut counter as usize;
        flt_initialize_push_lock(pointer as *mut usize);
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let (exclusive, shared) = (&exclusive, &shared);
                scope.spawn(move || {
                    for round in 0..ROUNDS {
                        if (round + thread) % 3 == 0 {
                            flt_acquire_push_lock_shared(pointer as *mut usize);
                            shared.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(exclusive.load(Ordering::SeqCst), 0, "a shared holder beside an exclusive one");
                            shared.fetch_sub(1, Ordering::SeqCst);
                            flt_release_push_lock(pointer as *mut usize);
                        } else {
                            flt_acquire_push_lock_exclusive(pointer as *mut usize);
                            assert_eq!(exclusive.fetch_add(1, Ordering::SeqCst), 0, "two exclusive holders");
                            assert_eq!(shared.load(Ordering::SeqCst), 0, "an exclusive holder beside a shared one");
                            // SAFETY: the push lock is held exclusively, so no other thread touches it.
                            unsafe { *(counter_address as *mut usize) += 1 };
                            exclusive.fetch_sub(1, Ordering::SeqCst);
                            flt_release_push_lock(pointer as *mut usize);
                        }
                    }
                });
            }
        });
        let exclusive_rounds = (0..4).map(|thread| (0..ROUNDS).filter(|round| (round + thread) % 3 != 0).count()).sum::<usize>();
        assert_eq!(counter, exclusive_rounds);
        assert_eq!(word.load(Ordering::SeqCst), 0, "the lock word ends free, with no waiter bit left");
    }

    /// A contended acquire sleeps with the waiting bit set, and the release wakes it.
    #[test]
    fn push_lock_release_wakes_a_sleeping_waiter() {
        use std::sync::atomic::AtomicUsize;
        let word = AtomicUsize::new(0);
        let pointer = word.as_ptr() as usize;
        flt_acquire_push_lock_exclusive(pointer as *mut usize);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(move || {
                flt_acquire_push_lock_shared(pointer as *mut usize);
                flt_release_push_lock(pointer as *mut usize);
            });
            while word.load(Ordering::SeqCst) & PUSH_LOCK_WAITING as usize == 0 {
                std::thread::yield_now();
            }
            flt_release_push_lock(pointer as *mut usize);
            waiter.join().unwrap();
        });
        assert_eq!(word.load(Ordering::SeqCst), 0);
    }
}
