//! The only code in ctxguard.sys that touches a user-mode address.
//!
//! Rust has no structured exception handling, so no Rust code may dereference a user address:
//! a page the client frees or protects while the driver reads it would fault, and the fault
//! would be a bug check. This module hands out nothing but kernel copies:
//!
//! * **Reads** go through `MmCopyMemory(MM_COPY_MEMORY_VIRTUAL)` into a non-paged pool buffer.
//!   MmCopyMemory is documented not to crash on an invalid address; it fails instead and
//!   reports how many bytes it copied. The input is captured once, whole, before it is parsed,
//!   so the client cannot change it between check and use.
//! * **Writes** pin the output range with `MmSecureVirtualMemory(PAGE_READWRITE)` — while
//!   secured it cannot be freed or made read-only / no-access — copy, then
//!   `MmUnsecureVirtualMemory` in the same process context (the message callback runs in the
//!   sender's). Between securing and copying, `ZwQueryVirtualMemory` must report the whole
//!   range as committed private memory: a mapped view of a file could take an in-page I/O
//!   error from its backing file (a network share, removable media) during the copy, and
//!   nothing would catch it. A writable page of the client's image (`.data`, `.bss`: MEM_IMAGE)
//!   is refused for the same reason: until first written it is copy-on-write, backed by the
//!   image file, and the region information cannot tell whether it was. What remains
//!   unprotected is documented in docs/port.md.
//!
//! Every refusal is an NTSTATUS from [`ctxguard_protocol::status`], and a refused capture
//! frees its buffer before returning.

use alloc::vec::Vec;
use core::ffi::c_void;

use ctxguard_protocol::{BUFFER_ALIGNMENT, status};
use windows_sys::Wdk::System::SystemServices::{
    MM_COPY_ADDRESS, MM_COPY_ADDRESS_0, MM_COPY_MEMORY_VIRTUAL, MmCopyMemory, MmSecureVirtualMemory, MmUnsecureVirtualMemory,
};
use windows_sys::Win32::Foundation::NTSTATUS;

/// `PAGE_READWRITE` (winnt.h): the range must stay readable and writable while secured.
const PAGE_READWRITE: u32 = 0x04;
/// `NtCurrentProcess()` / `ZwCurrentProcess()` (wdm.h): the pseudo-handle `(HANDLE)-1`.
const CURRENT_PROCESS: *mut c_void = usize::MAX as *mut c_void;
/// `MemoryBasicInformation` (ntifs.h `MEMORY_INFORMATION_CLASS`).
const MEMORY_BASIC_INFORMATION_CLASS: i32 = 0;
/// `MEM_COMMIT` (winnt.h): the region's pages are committed.
const MEM_COMMIT: u32 = 0x1000;
/// `MEM_PRIVATE` (winnt.h): the region is private memory, backed by the page file only.
const MEM_PRIVATE: u32 = 0x2_0000;

/// `MEMORY_BASIC_INFORMATION` (winnt.h) on 64-bit targets; declared here because the
/// workspace does not enable windows-sys's `Win32_System_Memory`.
#[repr(C)]
#[derive(Default)]
struct MemoryBasicInformation {
    base_address: usize,
    allocation_base: usize,
    allocation_protect: u32,
    partition_id: u16,
    region_size: usize,
    state: u32,
    protect: u32,
    kind: u32,
}

/// Whether `address` meets the protocol's alignment.
fn aligned(address: usize) -> bool {
    address.is_multiple_of(BUFFER_ALIGNMENT)
}

/// Checks an output buffer before anything is computed for it: NULL with a non-zero length
/// is an invalid address, a misaligned one is refused.
///
/// # Errors
/// `STATUS_INVALID_USER_BUFFER`, `STATUS_DATATYPE_MISALIGNMENT`.
pub fn check_output(address: *mut c_void, length: usize) -> Result<(), NTSTATUS> {
    if length == 0 {
        return Ok(());
    }
    if address.is_null() {
        return Err(status::INVALID_USER_BUFFER);
    }
    if !aligned(address as usize) {
        return Err(status::DATATYPE_MISALIGNMENT);
    }
    Ok(())
}

/// Copies `length` bytes at user address `address` into a new kernel buffer.
///
/// The caller has already bounded `length` (no allocation is sized by an unchecked length).
///
/// # Errors
/// `STATUS_INVALID_USER_BUFFER` (NULL or unreadable), `STATUS_DATATYPE_MISALIGNMENT`,
/// `STATUS_INSUFFICIENT_RESOURCES`.
pub fn capture(address: *const c_void, length: usize) -> Result<Vec<u8>, NTSTATUS> {
    let mut buffer = Vec::new();
    if length == 0 {
        return Ok(buffer);
    }
    if address.is_null() {
        return Err(status::INVALID_USER_BUFFER);
    }
    if !aligned(address as usize) {
        return Err(status::DATATYPE_MISALIGNMENT);
    }
    buffer.try_reserve_exact(length).map_err(|_| status::INSUFFICIENT_RESOURCES)?;
    let source = MM_COPY_ADDRESS { Anonymous: MM_COPY_ADDRESS_0 { VirtualAddress: address.cast_mut() } };
    let mut copied = 0usize;
    // SAFETY: the target is `buffer`'s reserved, non-paged capacity of at least `length` bytes;
    // MmCopyMemory validates the source itself and fails rather than faulting on a bad address.
    // The message callback runs at PASSIVE_LEVEL, within MmCopyMemory's <= APC_LEVEL.
    let result = unsafe { MmCopyMemory(buffer.as_mut_ptr().cast(), source, length, MM_COPY_MEMORY_VIRTUAL, &raw mut copied) };
    if result != status::SUCCESS || copied != length {
        return Err(status::INVALID_USER_BUFFER);
    }
    // SAFETY: MmCopyMemory reported all `length` bytes written into the reserved capacity.
    unsafe { buffer.set_len(length) };
    Ok(buffer)
}

/// Writes `data` to the user address `address`, which the client said holds `capacity` bytes.
///
/// # Errors
/// `STATUS_BUFFER_TOO_SMALL` when `data` is longer than `capacity`,
/// `STATUS_INVALID_USER_BUFFER` (NULL, or the range cannot be secured writable),
/// `STATUS_DATATYPE_MISALIGNMENT`.
// Safe for any address by design: the range is only written after MmSecureVirtualMemory has
// validated it as user memory and pinned it writable.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn write(address: *mut c_void, capacity: usize, data: &[u8]) -> Result<(), NTSTATUS> {
    if data.len() > capacity {
        return Err(status::BUFFER_TOO_SMALL);
    }
    if data.is_empty() {
        return Ok(());
    }
    check_output(address, capacity)?;
    // SAFETY: MmSecureVirtualMemory validates the range itself and returns NULL for a range
    // it cannot secure; it is called in the client's process context (the message callback
    // runs in the sender's thread).
    let secured = unsafe { MmSecureVirtualMemory(address, data.len(), PAGE_READWRITE) };
    if secured.is_null() {
        return Err(status::INVALID_USER_BUFFER);
    }
    if !committed_private(address as usize, data.len()) {
        // SAFETY: `secured` came from MmSecureVirtualMemory above, in this same process
        // context, and is released exactly once (nothing was written).
        unsafe { MmUnsecureVirtualMemory(secured) };
        return Err(status::INVALID_USER_BUFFER);
    }
    // SAFETY: the range [address, address + data.len()) is secured read-write for the
    // duration of the copy, so it is mapped and writable; `data` is kernel memory that cannot
    // overlap a user range.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), address.cast::<u8>(), data.len()) };
    // SAFETY: `secured` came from MmSecureVirtualMemory above, in this same process context,
    // and is released exactly once.
    unsafe { MmUnsecureVirtualMemory(secured) };
    Ok(())
}

/// Whether every region overlapping `[address, address + length)` of the current process is
/// committed private memory. Called only on a secured range, which cannot be freed or remapped
/// until it is unsecured, so the answer stays true for the copy that follows.
fn committed_private(address: usize, length: usize) -> bool {
    let Some(end) = address.checked_add(length) else { return false };
    let mut cursor = address;
    while cursor < end {
        let mut information = MemoryBasicInformation::default();
        let mut returned = 0usize;
        // SAFETY: `information` is a writable MEMORY_BASIC_INFORMATION of the length passed;
        // ZwQueryVirtualMemory validates the address itself. The message callback runs at
        // PASSIVE_LEVEL in the sender's process, which the current-process handle names.
        let result = unsafe {
            ntoskrnl_imports::ZwQueryVirtualMemory(
                CURRENT_PROCESS,
                cursor as *const c_void,
                MEMORY_BASIC_INFORMATION_CLASS,
                (&raw mut information).cast(),
                size_of::<MemoryBasicInformation>(),
                &raw mut returned,
            )
        };
        if result != status::SUCCESS || information.state != MEM_COMMIT || information.kind != MEM_PRIVATE {
            return false;
        }
        // The region starts at the page holding `cursor`; a zero size would never advance.
        let Some(region_end) = information.base_address.checked_add(information.region_size) else { return false };
        if region_end <= cursor {
            return false;
        }
        cursor = region_end;
    }
    true
}

/// Copies exactly `out.len()` bytes at `address` (any alignment) into `out`, allocating nothing.
///
/// # Errors
/// `STATUS_INVALID_USER_BUFFER` when the range cannot be read whole.
pub fn capture_into(address: *const c_void, out: &mut [u8]) -> Result<(), NTSTATUS> {
    if out.is_empty() {
        return Ok(());
    }
    if address.is_null() {
        return Err(status::INVALID_USER_BUFFER);
    }
    let source = MM_COPY_ADDRESS { Anonymous: MM_COPY_ADDRESS_0 { VirtualAddress: address.cast_mut() } };
    let mut copied = 0usize;
    // SAFETY: the target is `out`, a kernel buffer of `out.len()` bytes; MmCopyMemory validates
    // the source itself and fails rather than faulting.
    let result = unsafe { MmCopyMemory(out.as_mut_ptr().cast(), source, out.len(), MM_COPY_MEMORY_VIRTUAL, &raw mut copied) };
    if result != status::SUCCESS || copied != out.len() {
        return Err(status::INVALID_USER_BUFFER);
    }
    Ok(())
}
