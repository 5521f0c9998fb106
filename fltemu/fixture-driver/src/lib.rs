//! Fixture minifilters for fltemu's verifier tests.
//!
//! Without features: a correct pass-through filter that uses instance, volume, stream and
//! stream-handle contexts the way fltmgr-semantics C1/C2 describes (find-or-create with
//! KEEP_IF_EXISTS, the allocation reference released after every Set). Each `bug-*` feature
//! plants exactly one bug, which fltemu must report as its exact violation:
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

use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, NonPagedPoolNx, PagedPool};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_CONTEXT_REGISTRATION, FLT_OPERATION_REGISTRATION, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_FINISHED_PROCESSING,
    FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_SUCCESS_NO_CALLBACK, FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_REGISTRATION, FLT_RELATED_OBJECTS,
    FLT_SET_CONTEXT_KEEP_IF_EXISTS, FLT_SET_CONTEXT_REPLACE_IF_EXISTS, FltAllocateContext, FltGetStreamContext, FltGetStreamHandleContext,
    FltRegisterFilter, FltReleaseContext, FltSetInstanceContext, FltSetStreamContext, FltSetStreamHandleContext, FltSetVolumeContext,
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

#[repr(C)]
struct InstanceData {
    attached: u32,
}

#[repr(C)]
struct VolumeData {
    file_system: i32,
}

#[repr(C)]
struct StreamData {
    opens: u32,
}

#[repr(C)]
struct HandleData {
    pid: u32,
}

#[repr(transparent)]
struct Static<T>(T);
// SAFETY: immutable registration data; the raw pointers inside point to other immutable statics.
unsafe impl<T> Sync for Static<T> {}

const fn context(kind: u32, size: usize, tag: &[u8; 4]) -> FLT_CONTEXT_REGISTRATION {
    FLT_CONTEXT_REGISTRATION {
        ContextType: kind as u16,
        Flags: 0,
        ContextCleanupCallback: Some(cleanup),
        Size: size,
        PoolTag: u32::from_le_bytes(*tag),
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: core::ptr::null_mut(),
    }
}

static CONTEXTS: Static<[FLT_CONTEXT_REGISTRATION; 5]> = Static([
    context(0x1, size_of::<VolumeData>(), b"FxVo"),
    context(0x2, size_of::<InstanceData>(), b"FxIn"),
    context(0x8, size_of::<StreamData>(), b"FxSt"),
    context(0x10, size_of::<HandleData>(), b"FxSh"),
    FLT_CONTEXT_REGISTRATION {
        ContextType: 0xFFFF,
        Flags: 0,
        ContextCleanupCallback: None,
        Size: 0,
        PoolTag: 0,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: core::ptr::null_mut(),
    },
]);

const fn operation(
    major: u8,
    pre: Option<unsafe extern "system" fn(*mut FLT_CALLBACK_DATA, *const FLT_RELATED_OBJECTS, *mut *mut c_void) -> FLT_PREOP_CALLBACK_STATUS>,
    post: Option<unsafe extern "system" fn(*mut FLT_CALLBACK_DATA, *const FLT_RELATED_OBJECTS, *const c_void, u32) -> FLT_POSTOP_CALLBACK_STATUS>,
) -> FLT_OPERATION_REGISTRATION {
    FLT_OPERATION_REGISTRATION { MajorFunction: major, Flags: 0, PreOperation: pre, PostOperation: post, Reserved1: core::ptr::null_mut() }
}

static OPERATIONS: Static<[FLT_OPERATION_REGISTRATION; 4]> = Static([
    operation(0x00, Some(pre_create), Some(post_create)),
    operation(0x12, Some(pre_cleanup), if cfg!(feature = "bug-get-at-dispatch") { Some(post_cleanup) } else { None }),
    operation(0x02, Some(pre_close), None),
    operation(0x80, None, None),
]);

static REGISTRATION: Static<FLT_REGISTRATION> = Static(FLT_REGISTRATION {
    Size: size_of::<FLT_REGISTRATION>() as u16,
    Version: 0x0203,
    Flags: 0,
    ContextRegistration: CONTEXTS.0.as_ptr(),
    OperationRegistration: OPERATIONS.0.as_ptr(),
    FilterUnloadCallback: Some(unload),
    InstanceSetupCallback: Some(instance_setup),
    InstanceQueryTeardownCallback: Some(query_teardown),
    InstanceTeardownStartCallback: None,
    InstanceTeardownCompleteCallback: None,
    GenerateFileNameCallback: None,
    NormalizeNameComponentCallback: None,
    NormalizeContextCleanupCallback: None,
    TransactionNotificationCallback: None,
    NormalizeNameComponentExCallback: None,
    SectionNotificationCallback: None,
});

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
    let mut handle: PFLT_FILTER = 0;
    // SAFETY: a valid driver object and a static registration.
    let status = unsafe { FltRegisterFilter(driver, &raw const REGISTRATION.0, &raw mut handle) };
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
        unsafe { FltUnregisterFilter(handle) };
    }
    STATUS_SUCCESS
}

unsafe extern "system" fn instance_setup(objects: *const FLT_RELATED_OBJECTS, _flags: u32, _device: u32, file_system: FLT_FILESYSTEM_TYPE) -> NTSTATUS {
    // SAFETY: Filter Manager passes valid related objects.
    let objects = unsafe { &*objects };
    if let Some(context) = allocate(0x2, NonPagedPoolNx, InstanceData { attached: 1 }) {
        // SAFETY: a valid instance and a fresh context; the old context is not wanted.
        let _ = unsafe { FltSetInstanceContext(objects.Instance, FLT_SET_CONTEXT_KEEP_IF_EXISTS, context, core::ptr::null_mut()) };
        release(context);
    }
    let pool = if cfg!(feature = "bug-paged-volume-context") { PagedPool } else { NonPagedPoolNx };
    if let Some(context) = allocate(0x1, pool, VolumeData { file_system }) {
        // SAFETY: a valid volume and a fresh context.
        let _ = unsafe { FltSetVolumeContext(objects.Volume, FLT_SET_CONTEXT_KEEP_IF_EXISTS, context, core::ptr::null_mut()) };
        release(context);
    }
    STATUS_SUCCESS
}

unsafe extern "system" fn query_teardown(_objects: *const FLT_RELATED_OBJECTS, _flags: u32) -> NTSTATUS {
    if cfg!(feature = "refuse-detach") {
        return 0xC01C_0010_u32 as i32; // STATUS_FLT_DO_NOT_DETACH
    }
    STATUS_SUCCESS
}

unsafe extern "system" fn cleanup(_context: PFLT_CONTEXT, _kind: u16) {}

unsafe extern "system" fn pre_create(_data: *mut FLT_CALLBACK_DATA, objects: *const FLT_RELATED_OBJECTS, completion: *mut *mut c_void) -> FLT_PREOP_CALLBACK_STATUS {
    if cfg!(feature = "bug-set-in-pre-create")
        && let Some(handle) = allocate(0x10, PagedPool, HandleData { pid: 2 })
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
    // SAFETY: Filter Manager passes valid related objects.
    let objects = unsafe { &*objects };
    // SAFETY: IoStatus.Status is the member the file system set.
    if unsafe { data.IoStatus.Anonymous.Status } < 0 {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    let mut stream: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: a valid instance and opened file object.
    let status = unsafe { FltGetStreamContext(objects.Instance, objects.FileObject, &raw mut stream) };
    if status == STATUS_NOT_FOUND {
        let Some(new) = allocate(0x8, PagedPool, StreamData { opens: 0 }) else { return FLT_POSTOP_FINISHED_PROCESSING };
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
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    if !stream.is_null() {
        // SAFETY: we hold a reference to the stream context.
        unsafe { (*stream.cast::<StreamData>()).opens += 1 };
        release(stream);
    }
    #[cfg(feature = "with-port")]
    port::notify(filter());
    let pid = 0;
    if let Some(handle) = allocate(0x10, PagedPool, HandleData { pid }) {
        // SAFETY: a valid instance, file object and fresh context; the old one is dropped by
        // Filter Manager (old NULL).
        let _ = unsafe { FltSetStreamHandleContext(objects.Instance, objects.FileObject, FLT_SET_CONTEXT_REPLACE_IF_EXISTS, handle, core::ptr::null_mut()) };
        release(handle);
    }
    FLT_POSTOP_FINISHED_PROCESSING
}

unsafe extern "system" fn pre_cleanup(_data: *mut FLT_CALLBACK_DATA, objects: *const FLT_RELATED_OBJECTS, _completion: *mut *mut c_void) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: Filter Manager passes valid related objects.
    let objects = unsafe { &*objects };
    let mut handle: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: a valid instance and file object.
    if unsafe { FltGetStreamHandleContext(objects.Instance, objects.FileObject, &raw mut handle) } >= 0 {
        release(handle);
        if cfg!(feature = "bug-double-release") {
            release(handle);
        }
    }
    if cfg!(feature = "bug-use-after-free")
        && let Some(scratch) = allocate(0x10, PagedPool, HandleData { pid: 1 })
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
    // SAFETY: Filter Manager passes valid related objects.
    let objects = unsafe { &*objects };
    let mut stream: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: a valid instance and file object.
    if unsafe { FltGetStreamContext(objects.Instance, objects.FileObject, &raw mut stream) } >= 0 && !cfg!(feature = "bug-get-not-released") {
        release(stream);
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
