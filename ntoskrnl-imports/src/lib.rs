//! Kernel imports that windows-sys declares against `ntdll.dll`, or not at all.
//!
//! windows-sys binds functions exported by both ntdll and ntoskrnl (DbgPrintEx, the C memory
//! routines) to `ntdll.dll`; a driver that imports from ntdll does not load. Declaring them here,
//! in a crate that itself depends on windows-sys, makes the linker see these import entries
//! first, so the image imports them from `ntoskrnl.exe`. The declarations exist only on Windows
//! targets: on a host build this crate is empty.
//!
//! With feature `link-arguments` (used as a build-dependency) it also provides
//! [`emit_kernel_link_arguments`], the one list of lld-link arguments every kernel image of the
//! workspace (ctxguard.sys, fltemu's fixture drivers) links with.
#![no_std]

#[cfg(feature = "link-arguments")]
extern crate std;

/// The lld-link arguments of a native-subsystem kernel driver linked without the WDK.
#[cfg(feature = "link-arguments")]
pub const KERNEL_LINK_ARGUMENTS: &[&str] = &[
    "/DRIVER",
    "/NODEFAULTLIB",
    "/SUBSYSTEM:NATIVE,10.0",
    "/OSVERSION:10.0",
    "/ENTRY:DriverEntry",
    "/NXCOMPAT",
    "/DYNAMICBASE",
    "/OPT:REF,ICF",
    // lld leaves the PE checksum 0 unless asked; the kernel loader requires it for drivers.
    "/RELEASE",
    "/MANIFEST:NO",
    // The map names functions for the stack-frame measurements (tests/stack_frames.rs).
    "/MAP",
    "/MAPINFO:EXPORTS",
];

/// From a build script: emits [`KERNEL_LINK_ARGUMENTS`] for the cdylib when the target is a
/// Windows MSVC one, and nothing otherwise (host builds stay ordinary libraries).
#[cfg(feature = "link-arguments")]
pub fn emit_kernel_link_arguments() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os != "windows" || target_env != "msvc" {
        return;
    }
    for argument in KERNEL_LINK_ARGUMENTS {
        std::println!("cargo::rustc-cdylib-link-arg={argument}");
    }
}

#[cfg(target_os = "windows")]
pub use imports::*;

#[cfg(target_os = "windows")]
mod imports {
    // The dependency is what orders this crate's import library before windows-sys's.
    use windows_sys as _;

    #[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
    unsafe extern "C" {
        /// `DbgPrintEx` (wdm.h): a C-variadic debug print, filtered by component and level.
        pub fn DbgPrintEx(component_id: u32, level: u32, format: *const u8, ...) -> u32;
    }

    // With the WDK (feature `wdk`) the C runtime routines come from the WDK's ntoskrnl.lib.
    #[cfg(not(feature = "wdk"))]
    #[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
    unsafe extern "C" {
        /// `memcpy`, exported by ntoskrnl; the compiler emits calls to it.
        pub fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8;
        /// `memmove`, exported by ntoskrnl; the compiler emits calls to it.
        pub fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8;
        /// `memset`, exported by ntoskrnl; the compiler emits calls to it.
        pub fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8;
        /// `strlen`, exported by ntoskrnl; unoptimised builds of `alloc` reference it.
        pub fn strlen(s: *const u8) -> usize;
        /// `memcmp`, exported by ntoskrnl; the compiler emits calls to it.
        pub fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32;
    }

    #[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
    unsafe extern "system" {
        /// `KeBugCheckEx` (wdm.h), declared diverging as documented ("does not return"); the
        /// windows-sys declaration returns `()`.
        pub fn KeBugCheckEx(code: u32, parameter1: usize, parameter2: usize, parameter3: usize, parameter4: usize) -> !;
    }

    // windows-sys 0.61.2 declares neither: on x64 and ARM64 wdm.h makes KeAcquireSpinLock a
    // macro over this ntoskrnl export (x86 had hal's KfAcquireSpinLock instead).
    #[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
    unsafe extern "system" {
        /// `KeAcquireSpinLockRaiseToDpc` (wdm.h): at IRQL <= DISPATCH_LEVEL, raises to
        /// DISPATCH_LEVEL, acquires the `KSPIN_LOCK` and returns the previous IRQL.
        pub fn KeAcquireSpinLockRaiseToDpc(spin_lock: *mut usize) -> u8;
        /// `KeReleaseSpinLock` (wdm.h): at DISPATCH_LEVEL, releases the `KSPIN_LOCK` and lowers
        /// the IRQL to `new_irql`, the value its acquire returned.
        pub fn KeReleaseSpinLock(spin_lock: *mut usize, new_irql: u8);
    }

    // windows-sys 0.61.2 binds this one to ntdll.dll; ntoskrnl exports it too (ntifs.h).
    #[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
    unsafe extern "system" {
        /// `ZwQueryVirtualMemory` (ntifs.h, IRQL PASSIVE_LEVEL): fills a
        /// `MEMORY_BASIC_INFORMATION` for the run of pages with equal attributes that starts at
        /// the page holding `base_address`, in the process `process` names.
        pub fn ZwQueryVirtualMemory(
            process: *mut core::ffi::c_void,
            base_address: *const core::ffi::c_void,
            information_class: i32,
            information: *mut core::ffi::c_void,
            information_length: usize,
            return_length: *mut usize,
        ) -> i32;
    }
}
