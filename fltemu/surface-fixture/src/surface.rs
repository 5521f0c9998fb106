//! The calls into fltemu's surface: an ERESOURCE and a lookaside list for the driver's life, a
//! process notify routine, a volume reference and volume properties per instance, and per
//! successful create: resources both ways, an event, fast and guarded mutexes, the requestor's
//! process object and image name, an MDL over non-paged pool, name information. Each `bug-*`
//! feature drops one release, delete or balance.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, Ordering};

use windows_sys::Wdk::Foundation::{ERESOURCE, FAST_MUTEX, KEVENT, NonPagedPoolNx, PEPROCESS};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_FILE_NAME_INFORMATION, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_FINISHED_PROCESSING, FLT_RELATED_OBJECTS, FLT_VOLUME_PROPERTIES,
    FltAcquireResourceExclusive, FltGetFileNameInformation, FltGetFileNameInformationUnsafe, FltGetIrpName, FltGetVolumeFromInstance, FltGetVolumeProperties, FltIsDirectory,
    FltCancelFileOpen, FltGetRequestorProcess, FltObjectDereference, FltParseFileNameInformation, FltRequestOperationStatusCallback, FLT_IO_PARAMETER_BLOCK, FltReleaseFileNameInformation, FltReleaseResource, PFLT_VOLUME,
};
use windows_sys::Wdk::Storage::FileSystem::{PsLookupProcessByProcessId, SeLocateProcessImageName};
use windows_sys::Wdk::System::SystemServices::{
    ExAcquireFastMutex, ExAcquireResourceExclusiveLite, ExAcquireResourceSharedLite, ExAllocatePoolWithTag, ExDeleteResourceLite, ExFreePool,
    ExInitializeResourceLite, ExReleaseFastMutex, ExReleaseResourceLite, IoAllocateMdl, IoFreeMdl, IoGetCurrentProcess, KeAcquireGuardedMutex,
    KeEnterCriticalRegion, KeInitializeEvent, KeInitializeGuardedMutex, KeLeaveCriticalRegion, KeReleaseGuardedMutex, KeSetEvent,
    KeWaitForSingleObject, MmBuildMdlForNonPagedPool, MmMapLockedPagesSpecifyCache, ObfDereferenceObject, PS_CREATE_NOTIFY_INFO,
    PsGetCurrentThreadId, PsSetCreateProcessNotifyRoutineEx,
};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS, UNICODE_STRING};

#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "system" {
    /// `ExInitializeNPagedLookasideList` (wdm.h; windows-sys does not declare it).
    fn ExInitializeNPagedLookasideList(list: *mut c_void, allocate: usize, free: usize, flags: u32, size: usize, tag: u32, depth: u16);
    /// `ExDeleteNPagedLookasideList` (wdm.h).
    fn ExDeleteNPagedLookasideList(list: *mut c_void);
}

/// Driver-lifetime kernel objects, in non-paged static memory as their DDIs require.
#[repr(C, align(64))]
struct Globals {
    resource: ERESOURCE,
    lookaside: [u8; 0x80],
    fast_mutex: FAST_MUTEX,
    guarded_mutex: FAST_MUTEX,
}

struct Shared(core::cell::UnsafeCell<Globals>);
// SAFETY: every field is a kernel synchronization object the kernel routines serialize.
unsafe impl Sync for Shared {}

// SAFETY: kernel objects are plain data; all-zero is their state before initialisation.
static GLOBALS: Shared = Shared(core::cell::UnsafeCell::new(unsafe { core::mem::zeroed() }));
static NOTIFY_REGISTERED: AtomicBool = AtomicBool::new(false);
/// Operation statuses reported to `operation_status` (a non-zero value proves the routine ran).
static STATUSES: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

unsafe extern "system" fn operation_status(_objects: *const FLT_RELATED_OBJECTS, _iopb: *const FLT_IO_PARAMETER_BLOCK, _status: NTSTATUS, _context: *const c_void) {
    STATUSES.fetch_add(1, Ordering::Relaxed);
}

/// Pre-create: asks for the create's status.
pub fn request_status(data: *mut FLT_CALLBACK_DATA) {
    // SAFETY: the callback data of this pre-operation callback and a routine in this image.
    unsafe { FltRequestOperationStatusCallback(data, Some(operation_status), core::ptr::null()) };
}

fn globals() -> *mut Globals {
    GLOBALS.0.get()
}

fn resource() -> *mut ERESOURCE {
    // SAFETY: a field of the static; no reference is formed.
    unsafe { &raw mut (*globals()).resource }
}

fn lookaside() -> *mut c_void {
    // SAFETY: as above.
    unsafe { (&raw mut (*globals()).lookaside).cast() }
}

/// Called for process creation and exit (PASSIVE_LEVEL).
unsafe extern "system" fn process_notify(_process: PEPROCESS, _pid: windows_sys::Win32::Foundation::HANDLE, info: *mut PS_CREATE_NOTIFY_INFO) {
    if !info.is_null() {
        // SAFETY: the process manager passes a valid PS_CREATE_NOTIFY_INFO on creation.
        let size = unsafe { (*info).Size };
        if size < 0x40 {
            // SAFETY: KeBugCheckEx never returns.
            unsafe { ntoskrnl_imports::KeBugCheckEx(0x4658_5346, 2, size, 0, 0) };
        }
    }
}

/// DriverEntry's part (before FltRegisterFilter).
pub fn driver_entry() -> NTSTATUS {
    // SAFETY: a non-paged, 8-aligned ERESOURCE, initialised once.
    let status = unsafe { ExInitializeResourceLite(resource()) };
    if status < 0 {
        return status;
    }
    // SAFETY: a 64-aligned NPAGED_LOOKASIDE_LIST; default allocate/free routines.
    unsafe { ExInitializeNPagedLookasideList(lookaside(), 0, 0, 0, 64, u32::from_le_bytes(*b"SfLa"), 0) };
    // SAFETY: a field of the static; no reference is formed.
    let guarded = unsafe { &raw mut (*globals()).guarded_mutex };
    // SAFETY: a guarded mutex in non-paged memory.
    unsafe { KeInitializeGuardedMutex(guarded) };
    // SAFETY: a routine in this image, which is linked /INTEGRITYCHECK.
    let status = unsafe { PsSetCreateProcessNotifyRoutineEx(Some(process_notify), false) };
    if status >= 0 {
        NOTIFY_REGISTERED.store(true, Ordering::Release);
    }
    status
}

/// The unload part (after FltUnregisterFilter, or on a failed DriverEntry).
pub fn unload() {
    if NOTIFY_REGISTERED.swap(false, Ordering::AcqRel) && !cfg!(feature = "bug-notify-not-removed") {
        // SAFETY: removes the routine registered in DriverEntry.
        unsafe { PsSetCreateProcessNotifyRoutineEx(Some(process_notify), true) };
    }
    if !cfg!(feature = "bug-lookaside-not-deleted") {
        // SAFETY: the list initialised in DriverEntry, deleted once.
        unsafe { ExDeleteNPagedLookasideList(lookaside()) };
    }
    if !cfg!(feature = "bug-resource-not-deleted") {
        // SAFETY: the resource initialised in DriverEntry, not held, deleted once.
        unsafe { ExDeleteResourceLite(resource()) };
    }
}

/// InstanceSetup: a volume reference, the volume's properties, the reference dropped.
pub unsafe extern "system" fn instance_setup(objects: *const FLT_RELATED_OBJECTS, _flags: u32, _device: u32, _file_system: i32) -> NTSTATUS {
    // SAFETY: Filter Manager passes valid related objects.
    let instance = unsafe { (*objects).Instance };
    let mut volume: PFLT_VOLUME = 0;
    // SAFETY: a valid instance and out pointer.
    if unsafe { FltGetVolumeFromInstance(instance, &raw mut volume) } < 0 {
        return STATUS_SUCCESS;
    }
    let mut buffer = [0u64; 64];
    let mut needed = 0u32;
    // SAFETY: a 512-byte buffer for FLT_VOLUME_PROPERTIES and its names.
    let status = unsafe { FltGetVolumeProperties(volume, buffer.as_mut_ptr().cast::<FLT_VOLUME_PROPERTIES>(), 512, &raw mut needed) };
    if status < 0 || needed < 0x48 {
        // SAFETY: KeBugCheckEx never returns.
        unsafe { ntoskrnl_imports::KeBugCheckEx(0x4658_5346, 3, status as usize, needed as usize, 0) };
    }
    if !cfg!(feature = "bug-volume-not-dereferenced") {
        // SAFETY: the reference FltGetVolumeFromInstance took.
        unsafe { FltObjectDereference(volume as *mut c_void) };
    }
    STATUS_SUCCESS
}

fn resources_both_ways() {
    // SAFETY: the initialised resource; FltAcquireResourceExclusive enters a critical region.
    unsafe { FltAcquireResourceExclusive(resource()) };
    // SAFETY: held by this thread; leaves the critical region.
    unsafe { FltReleaseResource(resource()) };
    if cfg!(feature = "bug-resource-without-critical-region") {
        // SAFETY: deliberately wrong: normal kernel APCs are enabled here.
        unsafe { ExAcquireResourceExclusiveLite(resource(), true) };
        // SAFETY: as above, released by its owner.
        unsafe { ExReleaseResourceLite(resource()) };
    }
    // SAFETY: no preconditions.
    unsafe { KeEnterCriticalRegion() };
    // SAFETY: APCs disabled; the initialised resource.
    unsafe { ExAcquireResourceSharedLite(resource(), true) };
    // SAFETY: held shared by this thread.
    unsafe { ExReleaseResourceLite(resource()) };
    if cfg!(feature = "bug-resource-release-unowned") {
        // SAFETY: deliberately wrong: not held any more.
        unsafe { ExReleaseResourceLite(resource()) };
    }
    if !cfg!(feature = "bug-critical-region-unbalanced") {
        // SAFETY: balances the KeEnterCriticalRegion above.
        unsafe { KeLeaveCriticalRegion() };
    }
}

fn events_and_mutexes() {
    // SAFETY: KEVENT is plain data; KeInitializeEvent initialises it.
    let mut event: KEVENT = unsafe { core::mem::zeroed() };
    // SAFETY: a stack event (waited on only in this function), notification type.
    unsafe { KeInitializeEvent(&raw mut event, 0, false) };
    // SAFETY: the initialised event.
    unsafe { KeSetEvent(&raw mut event, 0, false) };
    let zero = 0i64;
    // SAFETY: the signaled event and a zero timeout.
    let status = unsafe { KeWaitForSingleObject((&raw const event).cast(), 0, 0, false, &raw const zero) };
    if status != STATUS_SUCCESS {
        // SAFETY: KeBugCheckEx never returns.
        unsafe { ntoskrnl_imports::KeBugCheckEx(0x4658_5346, 4, status as usize, 0, 0) };
    }
    // SAFETY: a fast mutex in non-paged memory (its inline initialiser only zeroes here).
    let fast = unsafe { &raw mut (*globals()).fast_mutex };
    // SAFETY: at PASSIVE_LEVEL; released below.
    unsafe { ExAcquireFastMutex(fast) };
    if cfg!(feature = "bug-fast-mutex-recursive") {
        // SAFETY: deliberately wrong: fast mutexes are not recursive.
        unsafe { ExAcquireFastMutex(fast) };
    }
    // SAFETY: owned by this thread.
    unsafe { ExReleaseFastMutex(fast) };
    // SAFETY: the initialised guarded mutex.
    let guarded = unsafe { &raw mut (*globals()).guarded_mutex };
    // SAFETY: as above.
    unsafe { KeAcquireGuardedMutex(guarded) };
    // SAFETY: owned by this thread.
    unsafe { KeReleaseGuardedMutex(guarded) };
}

fn requestor_process() {
    // SAFETY: no preconditions.
    let current = unsafe { IoGetCurrentProcess() };
    // SAFETY: no preconditions.
    let thread = unsafe { PsGetCurrentThreadId() };
    if current == 0 || thread.is_null() {
        return;
    }
    let mut process: PEPROCESS = 0;
    // SAFETY: pid 1000 is the default requestor; a valid out pointer.
    if unsafe { PsLookupProcessByProcessId(1000 as _, &raw mut process) } < 0 {
        return;
    }
    let mut name: *mut UNICODE_STRING = core::ptr::null_mut();
    // SAFETY: a referenced process and an out pointer.
    if unsafe { SeLocateProcessImageName(process, &raw mut name) } >= 0 && !cfg!(feature = "bug-image-name-leaked") {
        // SAFETY: the pool block SeLocateProcessImageName allocated for the caller.
        unsafe { ExFreePool(name.cast()) };
    }
    if !cfg!(feature = "bug-process-not-dereferenced") {
        // SAFETY: the reference PsLookupProcessByProcessId took.
        unsafe { ObfDereferenceObject(process as *const c_void) };
    }
}

fn mdl_over_pool() {
    // SAFETY: a valid pool type and tag.
    let buffer = unsafe { ExAllocatePoolWithTag(NonPagedPoolNx, 256, u32::from_le_bytes(*b"SfMd")) };
    if buffer.is_null() {
        return;
    }
    // SAFETY: a 256-byte non-paged buffer, no IRP.
    let mdl = unsafe { IoAllocateMdl(buffer, 256, false, false, core::ptr::null_mut()) };
    if !mdl.is_null() {
        // SAFETY: the MDL describes non-paged pool.
        unsafe { MmBuildMdlForNonPagedPool(mdl) };
        // SAFETY: a non-paged MDL mapped for kernel mode (MmGetSystemAddressForMdlSafe's call).
        let mapped = unsafe { MmMapLockedPagesSpecifyCache(mdl, 0, 1, core::ptr::null(), 0, 16) };
        if mapped != buffer {
            // SAFETY: KeBugCheckEx never returns.
            unsafe { ntoskrnl_imports::KeBugCheckEx(0x4658_5346, 5, mapped as usize, buffer as usize, 0) };
        }
        if !cfg!(feature = "bug-mdl-leaked") {
            // SAFETY: the MDL allocated above (non-paged: no unmap needed).
            unsafe { IoFreeMdl(mdl) };
        }
    }
    // SAFETY: the block allocated above.
    unsafe { ExFreePool(buffer) };
}

/// One name query: the block, or NULL on failure.
fn name_query(data: *mut FLT_CALLBACK_DATA, options: u32) -> *mut FLT_FILE_NAME_INFORMATION {
    let mut name: *mut FLT_FILE_NAME_INFORMATION = core::ptr::null_mut();
    // SAFETY: the callback data of this operation; the out pointer is a local.
    if unsafe { FltGetFileNameInformation(data, options, &raw mut name) } < 0 {
        return core::ptr::null_mut();
    }
    name
}

/// A copy of a name block's header (None for NULL).
fn read_name(name: *mut FLT_FILE_NAME_INFORMATION) -> Option<FLT_FILE_NAME_INFORMATION> {
    // SAFETY: NULL or a live block a name query returned and not yet released.
    (!name.is_null()).then(|| unsafe { name.read() })
}

fn release_name(name: *mut FLT_FILE_NAME_INFORMATION) {
    if !name.is_null() {
        // SAFETY: a reference a name query returned.
        unsafe { FltReleaseFileNameInformation(name) };
    }
}

/// The name rules a post-create relies on: while the opened stream's name is cached a second
/// DEFAULT query and a CACHE_ONLY one return the same block, FILESYSTEM_ONLY a fresh one,
/// NORMALIZED its own block with its own format, SHORT the final component alone, and the
/// Unsafe variant the cached block again. Any other answer is a bug check.
fn name_rules(data: *mut FLT_CALLBACK_DATA, file_object: *const windows_sys::Wdk::Foundation::FILE_OBJECT, instance: windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_INSTANCE) {
    const OPENED: u32 = 0x2;
    const NORMALIZED: u32 = 0x1;
    const SHORT: u32 = 0x3;
    let first = name_query(data, OPENED | 0x100);
    let again = name_query(data, OPENED | 0x100);
    let cache_only = name_query(data, OPENED | 0x200);
    let fresh = name_query(data, OPENED | 0x300);
    let normalized = name_query(data, NORMALIZED | 0x100);
    let short = name_query(data, SHORT | 0x100);
    let mut unsafe_name: *mut FLT_FILE_NAME_INFORMATION = core::ptr::null_mut();
    // SAFETY: the operation's opened FILE_OBJECT and instance; the out pointer is a local.
    let unsafe_status = unsafe { FltGetFileNameInformationUnsafe(file_object, instance, OPENED | 0x100, &raw mut unsafe_name) };
    let same = !first.is_null() && first == again && first == cache_only && first == unsafe_name && unsafe_status >= 0;
    let (first_info, fresh_info, normalized_info, short_info) = (read_name(first), read_name(fresh), read_name(normalized), read_name(short));
    let formats = fresh != first
        && normalized != first
        && fresh_info.is_some_and(|n| n.Format == OPENED)
        && normalized_info.zip(first_info).is_some_and(|(n, f)| n.Format == NORMALIZED && n.Name.Length == f.Name.Length);
    // A short name has no volume or directory part.
    let short_ok = short_info.zip(first_info).is_some_and(|(s, f)| s.Format == SHORT && s.Volume.Length == 0 && s.Name.Length < f.Name.Length);
    for name in [first, again, cache_only, fresh, normalized, short, unsafe_name] {
        release_name(name);
    }
    if cfg!(feature = "bug-name-info-over-released") {
        release_name(first);
    }
    if !(same && formats && short_ok) {
        // SAFETY: KeBugCheckEx never returns.
        unsafe { ntoskrnl_imports::KeBugCheckEx(0x4658_5346, 8, usize::from(same), usize::from(formats), usize::from(short_ok)) };
    }
}

fn names(data: *mut FLT_CALLBACK_DATA, objects: *const FLT_RELATED_OBJECTS) {
    let name = name_query(data, 0x0002 | 0x0100);
    if name.is_null() {
        return;
    }
    // SAFETY: the name information just returned.
    unsafe { FltParseFileNameInformation(name) };
    if !cfg!(feature = "bug-name-info-leaked") {
        release_name(name);
    }
    let mut directory = false;
    // SAFETY: Filter Manager passes valid related objects.
    let related = unsafe { objects.read() };
    let (file_object, instance) = (related.FileObject, related.Instance);
    name_rules(data, file_object, instance);
    // SAFETY: the operation's FILE_OBJECT and instance.
    unsafe { FltIsDirectory(file_object, instance, &raw mut directory) };
    // SAFETY: a static string.
    let irp = unsafe { FltGetIrpName(0) };
    if irp.is_null() {
        // SAFETY: KeBugCheckEx never returns.
        unsafe { ntoskrnl_imports::KeBugCheckEx(0x4658_5346, 6, 0, 0, 0) };
    }
}

/// Whether the opened name's final component starts with "deny".
fn denied(data: *mut FLT_CALLBACK_DATA) -> bool {
    let mut name: *mut FLT_FILE_NAME_INFORMATION = core::ptr::null_mut();
    // SAFETY: the callback data of this operation; FLT_FILE_NAME_OPENED | QUERY_DEFAULT.
    if unsafe { FltGetFileNameInformation(data, 0x0002 | 0x0100, &raw mut name) } < 0 {
        return false;
    }
    // SAFETY: the name information just returned.
    unsafe { FltParseFileNameInformation(name) };
    // SAFETY: as above; FinalComponent was filled by the parse.
    let component = unsafe { (*name).FinalComponent };
    let prefix: [u16; 4] = [0x64, 0x65, 0x6E, 0x79]; // "deny"
    let deny = usize::from(component.Length) >= 8 && !component.Buffer.is_null() && (0..4).all(|i| {
        // SAFETY: Length ≥ 8 bytes, so 4 units are readable.
        let unit = unsafe { component.Buffer.wrapping_add(i).read() };
        unit | 0x20 == prefix[i]
    });
    // SAFETY: the reference FltGetFileNameInformation returned.
    unsafe { FltReleaseFileNameInformation(name) };
    deny
}

/// Post-create (PASSIVE_LEVEL): the per-create calls on successful creates.
pub unsafe extern "system" fn post_create(data: *mut FLT_CALLBACK_DATA, objects: *const FLT_RELATED_OBJECTS, _context: *const c_void, _flags: u32) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: Filter Manager passes valid callback data; Status is the union member it sets.
    let io_status = unsafe { (*data).IoStatus };
    // SAFETY: as above.
    let status = unsafe { io_status.Anonymous.Status };
    if status < 0 {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    resources_both_ways();
    events_and_mutexes();
    requestor_process();
    mdl_over_pool();
    names(data, objects);
    // SAFETY: the callback data of this operation.
    let requestor = unsafe { FltGetRequestorProcess(data) };
    if requestor == 0 || STATUSES.load(Ordering::Relaxed) == 0 {
        // SAFETY: KeBugCheckEx never returns.
        unsafe { ntoskrnl_imports::KeBugCheckEx(0x4658_5346, 7, requestor as usize, 0, 0) };
    }
    if denied(data) {
        // SAFETY: Filter Manager passes valid related objects.
        let related = unsafe { objects.read() };
        // SAFETY: post-create of a successful create, its instance and FILE_OBJECT.
        unsafe { FltCancelFileOpen(related.Instance, related.FileObject) };
        if !cfg!(feature = "bug-cancel-open-success") {
            let denied = windows_sys::Win32::System::IO::IO_STATUS_BLOCK { Anonymous: windows_sys::Win32::System::IO::IO_STATUS_BLOCK_0 { Status: 0xC000_0022_u32 as i32 }, Information: 0 };
            // SAFETY: a field of the callback data of this operation; no reference is formed.
            let slot = unsafe { &raw mut (*data).IoStatus };
            // SAFETY: as above; the create now fails.
            unsafe { slot.write(denied) };
        }
    }
    FLT_POSTOP_FINISHED_PROCESSING
}
