//! Wine detection and the process's own kernel handle count.

use std::ffi::{CStr, c_char, c_void};

use windows_sys::Wdk::System::SystemInformation::NtQuerySystemInformation;
use windows_sys::Win32::Foundation::STATUS_INFO_LENGTH_MISMATCH;
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetCurrentProcessId, GetProcessHandleCount};
use windows_sys::{s, w};

use crate::crypto::handle_table::{HEADER_SIZE, count_own};
use crate::crypto::runner::HandleCounter;

/// `ntdll!wine_get_version()` if this process runs under Wine, else `None`.
pub fn wine_version() -> Option<String> {
    // SAFETY: ntdll is mapped into every process; the name is a static NUL-terminated string.
    let ntdll = unsafe { GetModuleHandleW(w!("ntdll.dll")) };
    if ntdll.is_null() {
        return None;
    }
    // SAFETY: `ntdll` is a loaded module handle; the name is a static NUL-terminated string.
    let export = unsafe { GetProcAddress(ntdll, s!("wine_get_version")) }?;
    // SAFETY: Wine exports wine_get_version as `const char *(void)` (cdecl, which is the one
    // x64 calling convention), so the function pointer types are ABI-compatible.
    let get_version: unsafe extern "C" fn() -> *const c_char = unsafe { std::mem::transmute(export) };
    // SAFETY: takes no arguments and returns a pointer to a static string.
    let version = unsafe { get_version() };
    if version.is_null() {
        return Some(String::new());
    }
    // SAFETY: Wine returns a NUL-terminated static string that lives as long as the process.
    let version = unsafe { CStr::from_ptr(version) };
    Some(version.to_string_lossy().into_owned())
}

/// NtQuerySystemInformation class SystemExtendedHandleInformation.
const SYSTEM_EXTENDED_HANDLE_INFORMATION: i32 = 64;
/// Give up growing the buffer past this (a machine with millions of handles).
const MAX_BUFFER: usize = 512 << 20;

/// Counts handles with the system handle table (works under Wine) and GetProcessHandleCount.
pub struct KernelHandles;

impl KernelHandles {
    fn system_handle_table() -> Result<Vec<u8>, String> {
        let mut size = 1usize << 20;
        loop {
            let mut buffer = vec![0u8; size];
            let mut returned = 0u32;
            let len = u32::try_from(size).map_err(|_| "handle table larger than 4 GiB".to_owned())?;
            // SAFETY: `buffer` is writable for `len` bytes; `returned` is a valid out pointer.
            let status = unsafe {
                NtQuerySystemInformation(
                    SYSTEM_EXTENDED_HANDLE_INFORMATION,
                    buffer.as_mut_ptr().cast::<c_void>(),
                    len,
                    &raw mut returned,
                )
            };
            if status == STATUS_INFO_LENGTH_MISMATCH {
                size = size.max(returned as usize).saturating_mul(2);
                if size > MAX_BUFFER {
                    return Err("system handle table too large".to_owned());
                }
                continue;
            }
            if status < 0 {
                #[allow(clippy::cast_sign_loss, reason = "NTSTATUS shown as its bit pattern")]
                return Err(format!("NtQuerySystemInformation(SystemExtendedHandleInformation) → {:#010x}", status as u32));
            }
            // Some implementations leave `returned` at 0 on success: keep the whole buffer then.
            let returned = returned as usize;
            if (HEADER_SIZE..size).contains(&returned) {
                buffer.truncate(returned);
            }
            return Ok(buffer);
        }
    }
}

impl HandleCounter for KernelHandles {
    fn kernel_handles(&self) -> Result<u64, String> {
        let table = Self::system_handle_table()?;
        // SAFETY: GetCurrentProcessId has no preconditions.
        let pid = unsafe { GetCurrentProcessId() };
        count_own(&table, u64::from(pid))
    }

    fn process_handle_count(&self) -> Option<u32> {
        let mut count = 0u32;
        // SAFETY: GetCurrentProcess returns a pseudo-handle; no preconditions.
        let process = unsafe { GetCurrentProcess() };
        // SAFETY: `process` is the current-process pseudo-handle; `count` is a valid out pointer.
        let ok = unsafe { GetProcessHandleCount(process, &raw mut count) };
        (ok != 0).then_some(count)
    }
}
