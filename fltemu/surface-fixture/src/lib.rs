//! A minifilter that calls fltemu's emulated surface beyond what ctxguard imports, correct by
//! default; each `bug-*` feature plants one misuse the verifier must report. Feature
//! `unknown-imports` links imports fltemu does not provide (the load must be refused before
//! DriverEntry with all of them listed). Every image imports `KeQueryPerformanceCounter` from
//! `hal.dll`, which fltemu forwards to its ntoskrnl.exe.
#![cfg_attr(target_os = "windows", no_std)]
#![cfg(target_os = "windows")]
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use core::ffi::c_void;
use core::sync::atomic::{AtomicIsize, Ordering};

use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_OPERATION_REGISTRATION, FLT_POSTOP_CALLBACK_STATUS, FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_REGISTRATION,
    FLT_RELATED_OBJECTS, FltRegisterFilter, FltStartFiltering, FltUnregisterFilter, PFLT_FILTER,
};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS, UNICODE_STRING};

#[cfg(feature = "unknown-imports")]
mod unknown {
    #[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
    unsafe extern "system" {
        /// A name ntoskrnl.exe does not export at all.
        pub fn FxNoSuchKernelFunction() -> i32;
        /// An import by ordinal.
        #[link_ordinal(7)]
        pub fn ordinal_seven() -> i32;
    }

    #[link(name = "cng.sys", kind = "raw-dylib", modifiers = "+verbatim")]
    unsafe extern "system" {
        /// A module fltemu does not emulate.
        pub fn BCryptGenRandom(algorithm: usize, buffer: *mut u8, length: u32, flags: u32) -> i32;
    }

    /// Calls each import so the linker keeps it.
    pub fn touch() -> i32 {
        // SAFETY: never reached under fltemu (the load is refused); on Windows the calls exist
        // only to make the image import these names.
        let tag = unsafe { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltTagFile(0, core::ptr::null(), 0, core::ptr::null(), core::ptr::null(), 0) };
        // SAFETY: as above.
        let missing = unsafe { FxNoSuchKernelFunction() };
        // SAFETY: as above.
        let ordinal = unsafe { ordinal_seven() };
        // SAFETY: as above.
        let random = unsafe { BCryptGenRandom(0, core::ptr::null_mut(), 0, 2) };
        tag ^ missing ^ ordinal ^ random
    }
}

mod surface;

#[repr(transparent)]
struct Static<T>(T);
// SAFETY: immutable registration data; the raw pointers inside point to other immutable statics.
unsafe impl<T> Sync for Static<T> {}

const fn operation(
    major: u8,
    pre: Option<unsafe extern "system" fn(*mut FLT_CALLBACK_DATA, *const FLT_RELATED_OBJECTS, *mut *mut c_void) -> FLT_PREOP_CALLBACK_STATUS>,
    post: Option<unsafe extern "system" fn(*mut FLT_CALLBACK_DATA, *const FLT_RELATED_OBJECTS, *const c_void, u32) -> FLT_POSTOP_CALLBACK_STATUS>,
) -> FLT_OPERATION_REGISTRATION {
    FLT_OPERATION_REGISTRATION { MajorFunction: major, Flags: 0, PreOperation: pre, PostOperation: post, Reserved1: core::ptr::null_mut() }
}

static OPERATIONS: Static<[FLT_OPERATION_REGISTRATION; 2]> = Static([operation(0x00, Some(pre_create), Some(surface::post_create)), operation(0x80, None, None)]);

static REGISTRATION: Static<FLT_REGISTRATION> = Static(FLT_REGISTRATION {
    Size: size_of::<FLT_REGISTRATION>() as u16,
    Version: 0x0203,
    Flags: 0,
    ContextRegistration: core::ptr::null(),
    OperationRegistration: OPERATIONS.0.as_ptr(),
    FilterUnloadCallback: Some(unload),
    InstanceSetupCallback: Some(surface::instance_setup),
    InstanceQueryTeardownCallback: None,
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

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: KeBugCheckEx never returns; the parameters are plain numbers.
    unsafe { ntoskrnl_imports::KeBugCheckEx(0x4658_5346, 0, 0, 0, 0) }
}

/// The entry point.
///
/// # Safety
/// Called once by the I/O manager.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn DriverEntry(driver: *mut DRIVER_OBJECT, _registry: *const UNICODE_STRING) -> NTSTATUS {
    #[cfg(feature = "unknown-imports")]
    if unknown::touch() == 0x1234_5678 {
        return 0;
    }
    let status = surface::driver_entry();
    if status < 0 {
        return status;
    }
    let mut filter: PFLT_FILTER = 0;
    // SAFETY: a valid driver object, a static registration and an out pointer.
    let status = unsafe { FltRegisterFilter(driver, &raw const REGISTRATION.0, &raw mut filter) };
    if status < 0 {
        surface::unload();
        return status;
    }
    FILTER.store(filter, Ordering::Release);
    // SAFETY: the handle FltRegisterFilter returned.
    let status = unsafe { FltStartFiltering(filter) };
    if status < 0 {
        // SAFETY: as above, unregistered once on this failure path.
        unsafe { FltUnregisterFilter(FILTER.swap(0, Ordering::AcqRel)) };
        surface::unload();
    }
    status
}

unsafe extern "system" fn unload(_flags: u32) -> NTSTATUS {
    let handle = FILTER.swap(0, Ordering::AcqRel);
    if handle != 0 {
        // SAFETY: the registered filter handle, unregistered once.
        unsafe { FltUnregisterFilter(handle) };
    }
    surface::unload();
    STATUS_SUCCESS
}

unsafe extern "system" fn pre_create(data: *mut FLT_CALLBACK_DATA, _objects: *const FLT_RELATED_OBJECTS, _context: *mut *mut c_void) -> FLT_PREOP_CALLBACK_STATUS {
    surface::request_status(data);
    let mut frequency = 0i64;
    // SAFETY: a valid out pointer; windows-sys imports this from hal.dll.
    let counter = unsafe { windows_sys::Wdk::System::SystemServices::KeQueryPerformanceCounter(&raw mut frequency) };
    if counter <= 0 || frequency <= 0 {
        // SAFETY: KeBugCheckEx never returns; the parameters are plain numbers.
        unsafe { ntoskrnl_imports::KeBugCheckEx(0x4658_5346, 1, counter as usize, frequency as usize, 0) };
    }
    FLT_PREOP_SUCCESS_WITH_CALLBACK
}
