//! Fixture minifilters for fltemu's verifier tests.
//!
//! Without features: a correct pass-through filter on fltctx that uses instance, volume, stream
//! and stream-handle contexts the way fltmgr-semantics C1/C2 describes (find-or-create with
//! KEEP_IF_EXISTS, the allocation reference released after every Set), replaces each
//! stream-handle context at cleanup (REPLACE_IF_EXISTS, the old one released), deletes it at
//! close (FltDeleteStreamHandleContext, the unlinked one released) and unlinks the instance
//! context at teardown (FltDeleteContext); the registration comes from fltctx's builders. The
//! bugs below are planted with raw calls where a guard cannot express them, and by forgetting a
//! guard where it can. Each `bug-*` feature plants exactly one bug, which fltemu must report as
//! its exact violation:
//! - `bug-leak-on-already-defined`: the losing context of a KEEP_IF_EXISTS race is never
//!   released (ContextLeaked).
//! - `bug-double-release`: pre-cleanup releases the stream-handle context twice, taking a linked
//!   context to 0 (ReleasedLinkedToZero).
//! - `bug-get-not-released`: pre-close never releases what FltGetStreamContext returned
//!   (ContextLeaked at unload).
//! - `bug-paged-volume-context`: the volume context comes from paged pool (WrongPoolForType;
//!   A6: volume contexts must be non-paged — instance contexts may be paged, so the volume
//!   context is the one that shows the rule).
//! - `bug-no-unregister-on-failed-entry`: DriverEntry fails after FltRegisterFilter without
//!   FltUnregisterFilter (FailedDriverEntryDidNotUnregister).
//! - `bug-unresolvable-import`: imports fltmgr.sys!FltTagFile, which fltemu does not provide.
//! - `bug-fault-in-driver-entry`: DriverEntry writes through a wild pointer.
//! - `bug-deadlock-in-driver-entry`: DriverEntry takes one push lock exclusively twice.
//! - `bug-deep-stack`: DriverEntry recurses past the 24 KiB kernel stack (StackTooDeep).
//! - `bug-panic-in-driver-entry`: DriverEntry panics; the panic handler calls KeBugCheckEx.
//! - `bug-set-in-pre-create`: pre-create sets a context on the unopened FILE_OBJECT
//!   (ContextOnUnsupportedObject).
//! - `with-work-item`: DriverEntry queues a generic work item that prints through DbgPrintEx
//!   and frees itself; `bug-work-item-leak` never frees it (WorkItemLeaked).
//! - `bug-get-at-dispatch`: a post-cleanup callback gets/releases a paged context (IrqlTooHigh
//!   when fltemu runs post-cleanup at DISPATCH_LEVEL).
//! - `bug-use-after-free`, `bug-not-a-context`, `bug-completion-context`, `bug-pool-leak`: as
//!   named (UseAfterFree, NotAContext, CompletionContextMisuse, PoolLeaked).
//! - `bug-forget-replaced-context`, `bug-forget-deleted-context`: the guard `replace` / `delete`
//!   handed back is forgotten instead of dropped (ContextLeaked): the leak a missing release in
//!   either would cause, so the correct fixture's clean runs prove both releases happen.
//! - `visit-drops-last-reference`: pre-close drops a context's last reference inside a visit of
//!   the registry that lists it (runs clean because fltctx defers the release).
//!
//! `refuse-detach` makes InstanceQueryTeardown refuse manual detaches.
//! `with-port` adds a communication port (module `port`); `bug-touch-user-buffer` makes its
//! message callback read the user buffer directly (UserBufferTouchedDirectly when invalid).
#![cfg_attr(target_os = "windows", no_std)]
#![cfg(target_os = "windows")]
// Windows field widths (USHORT types, ULONG lengths, NTSTATUS hex literals) are cast on purpose.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]

use core::ffi::c_void;
use core::sync::atomic::{AtomicIsize, Ordering};

use fltctx::{
    Attached, Deleted, FileObjects, InstanceContext, InstanceObjects, Lookup, Operation, Registration, StreamContext, StreamHandleContext,
    VolumeContext,
};
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, PagedPool};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_FINISHED_PROCESSING, FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_SUCCESS_NO_CALLBACK,
    FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_RELATED_OBJECTS, FLT_SET_CONTEXT_KEEP_IF_EXISTS, FLT_SET_CONTEXT_REPLACE_IF_EXISTS, FltAllocateContext,
    FltGetStreamContext, FltGetStreamHandleContext, FltRegisterFilter, FltReleaseContext, FltSetStreamContext, FltSetStreamHandleContext,
    FltStartFiltering, FltUnregisterFilter, PFLT_CONTEXT, PFLT_FILTER,
};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS, UNICODE_STRING};
use windows_sys::Win32::Storage::InstallableFileSystems::FLT_FILESYSTEM_TYPE;

/// `STATUS_NOT_FOUND`.
const STATUS_NOT_FOUND: NTSTATUS = 0xC000_0225_u32 as i32;
/// `STATUS_FLT_CONTEXT_ALREADY_DEFINED`.
const STATUS_FLT_CONTEXT_ALREADY_DEFINED: NTSTATUS = 0xC01C_0002_u32 as i32;
/// `STATUS_UNSUCCESSFUL`.
const STATUS_UNSUCCESSFUL: NTSTATUS = 0xC000_0001_u32 as i32;

struct InstanceData {
    attached: u32,
}

struct VolumeData {
    file_system: i32,
}

struct StreamData {
    opens: core::sync::atomic::AtomicU32,
}

struct HandleData {
    pid: u32,
    cleaned_up: bool,
    link: fltctx::Link,
}

fltctx::contexts! {
    static CONTEXTS: accounting = ();
    VolumeData: Volume, tag b"FxVo";
    InstanceData: Instance, tag b"FxIn";
    StreamData: Stream, tag b"FxSt";
    HandleData: StreamHandle, tag b"FxSh", in HANDLES => link;
}

/// The live stream-handle contexts (for `visit-drops-last-reference`).
static HANDLES: fltctx::Registry<HandleData> = fltctx::Registry::new();

fltctx::operations! {
    static OPERATIONS = [
        Operation::new(0x00).pre(pre_create).post(post_create),
        if cfg!(feature = "bug-get-at-dispatch") { Operation::new(0x12).pre(pre_cleanup).post(post_cleanup) } else { Operation::new(0x12).pre(pre_cleanup) },
        Operation::new(0x02).pre(pre_close),
    ];
}

static REGISTRATION: Registration = Registration::new(&CONTEXTS, &OPERATIONS)
    .unload(unload)
    .instance_setup(Some(instance_setup))
    .instance_query_teardown(Some(query_teardown))
    .instance_teardown_complete(Some(teardown_complete));

static FILTER: AtomicIsize = AtomicIsize::new(0);

fn filter() -> PFLT_FILTER {
    FILTER.load(Ordering::Acquire)
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: KeBugCheckEx never returns; the parameters are plain numbers.
    unsafe { ntoskrnl_imports::KeBugCheckEx(0x4658_5450, 1, 2, 3, 4) }
}

/// Allocates a context and initialises its body with `value`.
fn allocate<T>(kind: u32, pool: i32, value: T) -> Option<PFLT_CONTEXT> {
    let mut context: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: a registered type and size; `context` is a valid out pointer.
    let status = unsafe { FltAllocateContext(filter(), kind as u16, size_of::<T>(), pool, &raw mut context) };
    if status < 0 {
        return None;
    }
    // SAFETY: the context body is size_of::<T>() bytes, 16-byte aligned, owned by us until released.
    unsafe { context.cast::<T>().write(value) };
    Some(context)
}

/// Recurses `levels` deep with a 1 KiB frame each, then calls an import at the bottom.
#[inline(never)]
fn deep(levels: u32) -> u8 {
    let frame = core::hint::black_box([levels as u8; 1024]);
    if levels == 0 {
        // SAFETY: KeGetCurrentIrql has no preconditions.
        return unsafe { windows_sys::Wdk::System::SystemServices::KeGetCurrentIrql() };
    }
    deep(levels - 1).wrapping_add(core::hint::black_box(frame)[levels as usize % 1024])
}

fn release(context: PFLT_CONTEXT) {
    // SAFETY: the caller owns one reference to `context`.
    unsafe { FltReleaseContext(context) };
}

/// The entry point.
///
/// # Safety
/// Called once by the I/O manager.
///
/// # Panics
/// Only with `bug-panic-in-driver-entry`, on purpose.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn DriverEntry(driver: *mut DRIVER_OBJECT, _registry: *const UNICODE_STRING) -> NTSTATUS {
    #[cfg(feature = "bug-fault-in-driver-entry")]
    {
        let wild = 0x10 as *mut u32;
        // SAFETY: deliberately not safe: this fixture proves fltemu catches the fault.
        unsafe { wild.write_volatile(0xDEAD) };
    }
    #[cfg(feature = "bug-unresolvable-import")]
    {
        // SAFETY: never reached in fltemu (the load fails on the import); the call only exists so
        // the image imports FltTagFile.
        unsafe { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltTagFile(0, core::ptr::null(), 0, core::ptr::null(), core::ptr::null(), 0) };
    }
    #[cfg(feature = "bug-deadlock-in-driver-entry")]
    {
        static LOCK: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
        let lock = LOCK.as_ptr().cast();
        // SAFETY: deliberately wrong: the second exclusive acquire never returns.
        unsafe { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltInitializePushLock(lock) };
        // SAFETY: as above.
        unsafe { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltAcquirePushLockExclusive(lock) };
        // SAFETY: as above.
        unsafe { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltAcquirePushLockExclusive(lock) };
    }
    // The planted panic reads as what it is: a branch that panics.
    #[allow(clippy::manual_assert)]
    if cfg!(feature = "bug-panic-in-driver-entry") {
        panic!("fixture panic");
    }
    if cfg!(feature = "bug-deep-stack") {
        let _ = deep(32);
    }
    if cfg!(feature = "bug-pool-leak") {
        // The bug: 100 bytes of 'FxLk' pool never freed.
        // SAFETY: a plain non-paged allocation.
        let _ = unsafe { windows_sys::Wdk::System::SystemServices::ExAllocatePool2(0x40, 100, u32::from_le_bytes(*b"FxLk")) };
    }
    HANDLES.initialize();
    let mut handle: PFLT_FILTER = 0;
    // SAFETY: a valid driver object and a static registration.
    let status = unsafe { FltRegisterFilter(driver, REGISTRATION.as_ptr(), &raw mut handle) };
    if status < 0 {
        return status;
    }
    FILTER.store(handle, Ordering::Release);
    if cfg!(feature = "bug-no-unregister-on-failed-entry") {
        // The bug: a failure after registering returns without FltUnregisterFilter (E7).
        return STATUS_UNSUCCESSFUL;
    }
    #[cfg(feature = "with-port")]
    {
        let status = port::create(handle);
        if status < 0 {
            // SAFETY: registered above, unregistered once.
            unsafe { FltUnregisterFilter(handle) };
            return status;
        }
    }
    // SAFETY: the handle from the successful FltRegisterFilter.
    let status = unsafe { FltStartFiltering(handle) };
    if status < 0 {
        // SAFETY: registered above, unregistered once.
        unsafe { FltUnregisterFilter(handle) };
        return status;
    }
    #[cfg(feature = "with-work-item")]
    work_item::queue(handle);
    STATUS_SUCCESS
}

unsafe extern "system" fn unload(_flags: u32) -> NTSTATUS {
    #[cfg(feature = "with-port")]
    port::close();
    let handle = FILTER.swap(0, Ordering::AcqRel);
    if handle != 0 {
        // SAFETY: the registered filter handle, unregistered once.
        let alive = unsafe { fltctx::unregister(handle) };
        if alive != 0 {
            // SAFETY: a NUL-terminated format whose one conversion matches the argument.
            unsafe { ntoskrnl_imports::DbgPrintEx(77, 3, c"%zu context guards outlived FltUnregisterFilter\n".as_ptr().cast(), alive) };
        }
        HANDLES.delete();
    }
    STATUS_SUCCESS
}

unsafe extern "system" fn instance_setup(objects: *const FLT_RELATED_OBJECTS, _flags: u32, _device: u32, file_system: FLT_FILESYSTEM_TYPE) -> NTSTATUS {
    // SAFETY: Filter Manager passes valid related objects; setup runs at PASSIVE_LEVEL.
    let Some(instance) = (unsafe { InstanceObjects::from_callback(objects) }) else { return STATUS_SUCCESS };
    if let Ok(context) = InstanceContext::new(&instance, InstanceData { attached: 1 }) {
        let _ = context.attach(&instance);
    }
    if cfg!(feature = "bug-paged-volume-context") {
        // The bug: a volume context from paged pool (A6), which fltctx cannot allocate.
        if let Some(context) = allocate(0x1, PagedPool, VolumeData { file_system }) {
            // SAFETY: Filter Manager passes valid related objects.
            let volume = unsafe { (*objects).Volume };
            // SAFETY: a valid volume and a fresh context.
            let _ = unsafe { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltSetVolumeContext(volume, FLT_SET_CONTEXT_KEEP_IF_EXISTS, context, core::ptr::null_mut()) };
            release(context);
        }
    } else if let Ok(context) = VolumeContext::new(&instance, VolumeData { file_system })
        && let Ok(attached) = context.attach(&instance)
    {
        let _ = attached.into_inner().file_system;
    }
    STATUS_SUCCESS
}

/// Unlinks the instance context before Filter Manager would (FltDeleteContext), then
/// releases the reference the get took.
unsafe extern "system" fn teardown_complete(objects: *const FLT_RELATED_OBJECTS, _reason: u32) {
    // SAFETY: Filter Manager passes valid related objects; teardown runs at PASSIVE_LEVEL.
    if let Some(instance) = unsafe { InstanceObjects::from_callback(objects) }
        && let Lookup::Found(context) = InstanceContext::<InstanceData>::get(&instance)
    {
        let _ = context.attached;
        context.unlink();
    }
}

unsafe extern "system" fn query_teardown(_objects: *const FLT_RELATED_OBJECTS, _flags: u32) -> NTSTATUS {
    if cfg!(feature = "refuse-detach") {
        return 0xC01C_0010_u32 as i32; // STATUS_FLT_DO_NOT_DETACH
    }
    STATUS_SUCCESS
}

unsafe extern "system" fn pre_create(_data: *mut FLT_CALLBACK_DATA, objects: *const FLT_RELATED_OBJECTS, completion: *mut *mut c_void) -> FLT_PREOP_CALLBACK_STATUS {
    if cfg!(feature = "bug-set-in-pre-create")
        && let Some(handle) = allocate(0x10, PagedPool, HandleData { pid: 2, cleaned_up: false, link: fltctx::Link::new() })
    {
        // SAFETY: Filter Manager passes valid related objects.
        let objects = unsafe { &*objects };
        // The bug: the FILE_OBJECT is not opened yet in pre-create (B6).
        // SAFETY: valid arguments; the call itself is the contract violation under test.
        let _ = unsafe { FltSetStreamHandleContext(objects.Instance, objects.FileObject, FLT_SET_CONTEXT_REPLACE_IF_EXISTS, handle, core::ptr::null_mut()) };
        release(handle);
    }
    if cfg!(feature = "bug-completion-context") {
        // The bug: a completion context with a status that has no post-operation call (E3).
        // SAFETY: Filter Manager passes a valid out pointer.
        unsafe { *completion = 0x1234 as *mut c_void };
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    FLT_PREOP_SUCCESS_WITH_CALLBACK
}

/// Only with `bug-get-at-dispatch`: contexts APIs in a post-op that may run at DISPATCH_LEVEL.
unsafe extern "system" fn post_cleanup(_data: *mut FLT_CALLBACK_DATA, objects: *const FLT_RELATED_OBJECTS, _completion: *const c_void, _flags: u32) -> FLT_POSTOP_CALLBACK_STATUS {
    static NAME: [u16; 3] = [b'p' as u16, b'c' as u16, 0];
    // SAFETY: Filter Manager passes valid related objects.
    let objects = unsafe { &*objects };
    let mut handle: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: a valid instance and file object.
    if unsafe { FltGetStreamHandleContext(objects.Instance, objects.FileObject, &raw mut handle) } >= 0 {
        release(handle);
    }
    // SAFETY: a NUL-terminated format and a NUL-terminated wide string; Unicode conversions are
    // only allowed at PASSIVE_LEVEL, which is the bug when this runs at DISPATCH_LEVEL.
    unsafe { ntoskrnl_imports::DbgPrintEx(77, 3, c"post-cleanup %ws\n".as_ptr().cast(), NAME.as_ptr()) };
    FLT_POSTOP_FINISHED_PROCESSING
}

/// Find-or-create the stream context (C1), then a fresh stream-handle context.
unsafe extern "system" fn post_create(data: *mut FLT_CALLBACK_DATA, objects: *const FLT_RELATED_OBJECTS, _completion: *const c_void, _flags: u32) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: Filter Manager passes valid callback data.
    let data = unsafe { &*data };
    // SAFETY: IoStatus.Status is the member the file system set.
    if unsafe { data.IoStatus.Anonymous.Status } < 0 {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    if cfg!(feature = "bug-leak-on-already-defined") || cfg!(feature = "bug-get-at-dispatch") {
        // SAFETY: as above.
        unsafe { post_create_raw(objects) };
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // SAFETY: Filter Manager passes valid related objects; a successful create's FILE_OBJECT
    // is open in post-create (PASSIVE_LEVEL).
    let Some(file) = (unsafe { FileObjects::from_callback(objects) }) else { return FLT_POSTOP_FINISHED_PROCESSING };
    let stream = match StreamContext::<StreamData>::get(&file) {
        Lookup::Found(stream) => Some(stream),
        Lookup::NotFound => StreamContext::new(&file, StreamData { opens: core::sync::atomic::AtomicU32::new(0) })
            .ok()
            .and_then(|stream| stream.attach(&file).ok())
            .map(Attached::into_inner),
        Lookup::NotSupported | Lookup::Failed(_) => return FLT_POSTOP_FINISHED_PROCESSING,
    };
    if let Some(stream) = stream {
        stream.opens.fetch_add(1, Ordering::Relaxed);
    }
    #[cfg(feature = "with-port")]
    port::notify(filter());
    if let Ok(handle) = StreamHandleContext::new(&file, HandleData { pid: 0, cleaned_up: false, link: fltctx::Link::new() })
        && let Ok(Attached::New(handle)) = handle.attach(&file)
    {
        handle.list();
        #[cfg(feature = "bug-guard-parked-in-static")]
        parked::park(&handle);
    }
    FLT_POSTOP_FINISHED_PROCESSING
}

#[cfg(feature = "bug-guard-parked-in-static")]
mod parked {
    //! The bug: a guard kept in a static, where unload never drops it.

    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, Ordering};

    use super::{HandleData, StreamHandleContext};

    struct Slot(UnsafeCell<Option<StreamHandleContext<HandleData>>>);
    // SAFETY: written once, by the thread that wins `TAKEN`; never read.
    unsafe impl Sync for Slot {}

    static TAKEN: AtomicBool = AtomicBool::new(false);
    static PARKED: Slot = Slot(UnsafeCell::new(None));

    pub fn park(handle: &StreamHandleContext<HandleData>) {
        if !TAKEN.swap(true, Ordering::AcqRel) {
            // SAFETY: only the one thread that set TAKEN writes the slot.
            unsafe { *PARKED.0.get() = Some(handle.clone()) };
        }
    }
}

/// The raw find-or-create, for the bugs a guard cannot express: a loser never released
/// (`bug-leak-on-already-defined`) and a paged stream-handle context (`bug-get-at-dispatch`).
///
/// # Safety
/// `objects` is the running post-create's related objects.
unsafe fn post_create_raw(objects: *const FLT_RELATED_OBJECTS) {
    // SAFETY: the caller's contract.
    let objects = unsafe { &*objects };
    let mut stream: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: a valid instance and opened file object.
    let status = unsafe { FltGetStreamContext(objects.Instance, objects.FileObject, &raw mut stream) };
    if status == STATUS_NOT_FOUND {
        let Some(new) = allocate(0x8, PagedPool, StreamData { opens: core::sync::atomic::AtomicU32::new(0) }) else { return };
        let mut old: PFLT_CONTEXT = core::ptr::null_mut();
        // SAFETY: a valid instance, file object and fresh context.
        let status = unsafe { FltSetStreamContext(objects.Instance, objects.FileObject, FLT_SET_CONTEXT_KEEP_IF_EXISTS, new, &raw mut old) };
        if status >= 0 {
            stream = new;
        } else {
            if !cfg!(feature = "bug-leak-on-already-defined") {
                release(new);
            }
            if status == STATUS_FLT_CONTEXT_ALREADY_DEFINED {
                stream = old;
            }
        }
    } else if status < 0 {
        return;
    }
    if !stream.is_null() {
        release(stream);
    }
    if let Some(handle) = allocate(0x10, PagedPool, HandleData { pid: 0, cleaned_up: false, link: fltctx::Link::new() }) {
        // SAFETY: a valid instance, file object and fresh context; the old one is dropped by
        // Filter Manager (old NULL).
        let _ = unsafe { FltSetStreamHandleContext(objects.Instance, objects.FileObject, FLT_SET_CONTEXT_REPLACE_IF_EXISTS, handle, core::ptr::null_mut()) };
        release(handle);
    }
}

unsafe extern "system" fn pre_cleanup(_data: *mut FLT_CALLBACK_DATA, objects: *const FLT_RELATED_OBJECTS, _completion: *mut *mut c_void) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: Filter Manager passes valid related objects; a cleanup's FILE_OBJECT is open.
    let file = unsafe { FileObjects::from_callback(objects) };
    // SAFETY: Filter Manager passes valid related objects.
    let objects = unsafe { &*objects };
    if cfg!(feature = "bug-double-release") || cfg!(feature = "bug-get-at-dispatch") {
        // Raw: a double release is not expressible with guards, and the paged context
        // post-cleanup must find is the one post-create attached.
        let mut handle: PFLT_CONTEXT = core::ptr::null_mut();
        // SAFETY: a valid instance and file object.
        if unsafe { FltGetStreamHandleContext(objects.Instance, objects.FileObject, &raw mut handle) } >= 0 {
            release(handle);
            if cfg!(feature = "bug-double-release") {
                release(handle);
            }
        }
    } else if let Some(file) = &file
        && let Lookup::Found(handle) = StreamHandleContext::<HandleData>::get(file)
    {
        // The handle is marked closed by replacing its context (REPLACE_IF_EXISTS, B4); the
        // old one comes back as a guard and is released when it drops.
        let closed = HandleData { pid: handle.pid, cleaned_up: true, link: fltctx::Link::new() };
        drop(handle);
        if let Ok(replacement) = StreamHandleContext::new(file, closed)
            && let Ok(replaced) = replacement.replace(file)
        {
            replaced.new.list();
            if let Some(old) = replaced.old {
                if cfg!(feature = "bug-forget-replaced-context") {
                    // The bug: the old link reference is never released.
                    core::mem::forget(old);
                } else {
                    drop(old);
                }
            }
        }
    }
    if cfg!(feature = "bug-use-after-free")
        && let Some(scratch) = allocate(0x10, PagedPool, HandleData { pid: 1, cleaned_up: false, link: fltctx::Link::new() })
    {
        release(scratch);
        // The bug: the context was freed by the release above.
        // SAFETY: deliberately wrong: fltemu must report it.
        unsafe { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltReferenceContext(scratch) };
    }
    if cfg!(feature = "bug-not-a-context") {
        static NOT_A_CONTEXT: u64 = 0;
        // The bug: a pointer to our own static released as a context.
        release((&raw const NOT_A_CONTEXT).cast_mut().cast());
    }
    if cfg!(feature = "bug-get-at-dispatch") { FLT_PREOP_SUCCESS_WITH_CALLBACK } else { FLT_PREOP_SUCCESS_NO_CALLBACK }
}

unsafe extern "system" fn pre_close(_data: *mut FLT_CALLBACK_DATA, objects: *const FLT_RELATED_OBJECTS, _completion: *mut *mut c_void) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: Filter Manager passes valid related objects; a close's FILE_OBJECT is still open
    // in pre-close.
    let Some(file) = (unsafe { FileObjects::from_callback(objects) }) else { return FLT_PREOP_SUCCESS_NO_CALLBACK };
    if let Lookup::Found(stream) = StreamContext::<StreamData>::get(&file) {
        if cfg!(feature = "bug-get-not-released") {
            // The bug: the reference the get took is never released.
            core::mem::forget(stream);
        } else {
            drop(stream);
        }
    }
    if cfg!(feature = "visit-drops-last-reference") {
        // Holds the only reference left once the context is deleted, and drops it inside a
        // visit of the registry that lists it.
        let mut last = match StreamHandleContext::<HandleData>::get(&file) {
            Lookup::Found(handle) => Some(handle),
            _ => None,
        };
        if let Deleted::Found(unlinked) = StreamHandleContext::<HandleData>::delete(&file) {
            drop(unlinked);
        }
        HANDLES.visit(&mut |member| {
            let _ = member.cleaned_up;
            drop(last.take());
            core::ops::ControlFlow::Continue(())
        });
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    // The stream-handle context goes with the FILE_OBJECT anyway; deleting it here hands its
    // link reference back as a guard (B7), released when it drops.
    if let Deleted::Found(handle) = StreamHandleContext::<HandleData>::delete(&file) {
        let _ = handle.pid;
        if cfg!(feature = "bug-forget-deleted-context") {
            // The bug: the link reference the delete handed over is never released.
            core::mem::forget(handle);
        } else {
            drop(handle);
        }
    }
    FLT_PREOP_SUCCESS_NO_CALLBACK
}

#[cfg(feature = "with-port")]
mod port {
    //! An echo port: the reply is the input reversed. User buffers are reached only through
    //! MmCopyMemory (input) and a secured range (output), unless `bug-touch-user-buffer`.

    use core::ffi::c_void;
    use core::sync::atomic::{AtomicIsize, Ordering};

    use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
        FltBuildDefaultSecurityDescriptor, FltCloseClientPort, FltCloseCommunicationPort, FltCreateCommunicationPort, FltFreeSecurityDescriptor,
        FltSendMessage, PFLT_FILTER, PFLT_PORT,
    };
    use windows_sys::Wdk::System::SystemServices::{MM_COPY_ADDRESS, MM_COPY_ADDRESS_0, MmCopyMemory, MmSecureVirtualMemory, MmUnsecureVirtualMemory};
    use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS, UNICODE_STRING};

    static SERVER: AtomicIsize = AtomicIsize::new(0);
    static CLIENT: AtomicIsize = AtomicIsize::new(0);
    static NAME: [u16; 7] = [b'\\' as u16, b'F' as u16, b'x' as u16, b'P' as u16, b'o' as u16, b'r' as u16, b't' as u16];
    const MAX: usize = 64;
    const STATUS_INVALID_PARAMETER: NTSTATUS = 0xC000_000D_u32 as i32;
    const STATUS_ACCESS_VIOLATION: NTSTATUS = 0xC000_0005_u32 as i32;

    pub fn create(filter: PFLT_FILTER) -> NTSTATUS {
        let mut descriptor = core::ptr::null_mut();
        // SAFETY: a valid out pointer; FLT_PORT_ALL_ACCESS.
        let status = unsafe { FltBuildDefaultSecurityDescriptor(&raw mut descriptor, 0x001F_0001) };
        if status < 0 {
            return status;
        }
        let name = UNICODE_STRING { Length: 14, MaximumLength: 14, Buffer: NAME.as_ptr().cast_mut() };
        let attributes = OBJECT_ATTRIBUTES {
            Length: size_of::<OBJECT_ATTRIBUTES>() as u32,
            RootDirectory: core::ptr::null_mut(),
            ObjectName: &raw const name,
            Attributes: 0x200 | 0x40, // OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE
            SecurityDescriptor: descriptor.cast(),
            SecurityQualityOfService: core::ptr::null(),
        };
        let mut server: PFLT_PORT = 0;
        // SAFETY: valid attributes and callbacks; one connection at a time.
        let status = unsafe { FltCreateCommunicationPort(filter, &raw mut server, &raw const attributes, core::ptr::null(), Some(connect), Some(disconnect), Some(message), 1) };
        // SAFETY: the descriptor from FltBuildDefaultSecurityDescriptor, freed once (F1).
        unsafe { FltFreeSecurityDescriptor(descriptor) };
        if status >= 0 {
            SERVER.store(server, Ordering::Release);
        }
        status
    }

    pub fn close() {
        let server = SERVER.swap(0, Ordering::AcqRel);
        if server != 0 {
            // SAFETY: the server port from FltCreateCommunicationPort, closed once.
            unsafe { FltCloseCommunicationPort(server) };
        }
    }

    /// Sends the create notification "open" to a connected client and waits up to 100 ms for
    /// a reply; STATUS_TIMEOUT is a success code and is simply ignored here (F6).
    pub fn notify(filter: PFLT_FILTER) {
        if CLIENT.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut reply = [0u8; 8];
        let mut length = reply.len() as u32;
        let timeout: i64 = -1_000_000;
        // SAFETY: the client port variable lives in a static; buffers are ours.
        let _ = unsafe { FltSendMessage(filter, CLIENT.as_ptr(), b"open".as_ptr().cast(), 4, reply.as_mut_ptr().cast(), &raw mut length, &raw const timeout) };
    }

    unsafe extern "system" fn connect(client: PFLT_PORT, _server_cookie: *const c_void, _context: *const c_void, _size: u32, cookie: *mut *mut c_void) -> NTSTATUS {
        CLIENT.store(client, Ordering::Release);
        // SAFETY: Filter Manager passes a valid out pointer.
        unsafe { *cookie = core::ptr::null_mut() };
        STATUS_SUCCESS
    }

    unsafe extern "system" fn disconnect(_cookie: *const c_void) {
        // SAFETY: the filter handle and our client port variable (NULLed by the call, F3).
        unsafe { FltCloseClientPort(super::filter(), CLIENT.as_ptr()) };
    }

    unsafe extern "system" fn message(_cookie: *const c_void, input: *const c_void, input_length: u32, output: *mut c_void, output_length: u32, returned: *mut u32) -> NTSTATUS {
        let length = input_length as usize;
        if input.is_null() || length == 0 || length > MAX || output.is_null() || (output_length as usize) < length {
            return STATUS_INVALID_PARAMETER;
        }
        let mut buffer = [0u8; MAX];
        if cfg!(feature = "bug-touch-user-buffer") {
            // The bug: a direct read of a user address (F4).
            // SAFETY: deliberately unsafe: this fixture proves fltemu catches it.
            unsafe { core::ptr::copy_nonoverlapping(input.cast::<u8>(), buffer.as_mut_ptr(), length) };
        } else {
            let mut copied = 0usize;
            let source = MM_COPY_ADDRESS { Anonymous: MM_COPY_ADDRESS_0 { VirtualAddress: input.cast_mut() } };
            // SAFETY: MmCopyMemory reads the user range without faulting into our stack buffer.
            let status = unsafe { MmCopyMemory(buffer.as_mut_ptr().cast(), source, length, 2, &raw mut copied) };
            if status < 0 || copied != length {
                return STATUS_ACCESS_VIOLATION;
            }
        }
        buffer[..length].reverse();
        // SAFETY: pins the user output range with write access, or returns NULL.
        let secure = unsafe { MmSecureVirtualMemory(output, length, 0x04) };
        if secure.is_null() {
            return STATUS_ACCESS_VIOLATION;
        }
        // SAFETY: the secured range stays mapped and writable until unsecured.
        unsafe { core::ptr::copy_nonoverlapping(buffer.as_ptr(), output.cast::<u8>(), length) };
        // SAFETY: the handle from MmSecureVirtualMemory, released once.
        unsafe { MmUnsecureVirtualMemory(secure) };
        // SAFETY: Filter Manager passes a valid out pointer.
        unsafe { *returned = length as u32 };
        STATUS_SUCCESS
    }
}

#[cfg(feature = "with-work-item")]
mod work_item {
    //! A generic work item that prints a formatted line.

    use core::ffi::c_void;

    use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FltAllocateGenericWorkItem, FltFreeGenericWorkItem, FltQueueGenericWorkItem, PFLT_FILTER};
    use windows_sys::Win32::Foundation::UNICODE_STRING;

    static WIDE: [u16; 5] = [b'w' as u16, b'i' as u16, b'd' as u16, b'e' as u16, 0];
    static COUNTED: [u16; 7] = [b'c' as u16, b'o' as u16, b'u' as u16, b'n' as u16, b't' as u16, b'e' as u16, b'd' as u16];

    pub fn queue(filter: PFLT_FILTER) {
        // SAFETY: no preconditions at PASSIVE_LEVEL.
        let item = unsafe { FltAllocateGenericWorkItem() };
        if item == 0 {
            return;
        }
        // SAFETY: a fresh work item, our filter, a routine with the documented signature;
        // DelayedWorkQueue = 1.
        let _ = unsafe { FltQueueGenericWorkItem(item, filter as *const c_void, Some(routine), 1, core::ptr::null()) };
    }

    unsafe extern "system" fn routine(item: isize, _object: *const c_void, _context: *const c_void) {
        let counted = UNICODE_STRING { Length: 14, MaximumLength: 14, Buffer: COUNTED.as_ptr().cast_mut() };
        // SAFETY: a NUL-terminated format whose conversions match the arguments.
        unsafe {
            ntoskrnl_imports::DbgPrintEx(
                77,
                3,
                c"work item %d %s %ws %wZ %08x %-3u|\n".as_ptr().cast(),
                -42i32,
                c"narrow".as_ptr(),
                WIDE.as_ptr(),
                &raw const counted,
                0xBEEFu32,
                7u32,
            );
        }
        if !cfg!(feature = "bug-work-item-leak") {
            // SAFETY: the work item this routine was queued with, freed once.
            unsafe { FltFreeGenericWorkItem(item) };
        }
    }
}
