//! Emulated ntoskrnl.exe exports.
//!
//! Each function cites the learn.microsoft.com DDI page it follows (wdm.h / ntifs.h pages) and
//! the IRQL its page documents. They are Win64-ABI functions whose addresses go into the
//! driver's import address table.

use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::exec::{self, APC_LEVEL, DISPATCH_LEVEL};
use crate::state::{self, POOL_ALLOC_POISON, PoolBlock, FREE_POISON, status};
use crate::verifier::{PoolKind, Tag, Violation};

/// `POOL_FLAG_UNINITIALIZED` (wdm.h).
const POOL_FLAG_UNINITIALIZED: u64 = 0x2;
/// `POOL_FLAG_NON_PAGED`.
const POOL_FLAG_NON_PAGED: u64 = 0x40;
/// `POOL_FLAG_NON_PAGED_EXECUTE`.
const POOL_FLAG_NON_PAGED_EXECUTE: u64 = 0x80;
/// `POOL_FLAG_PAGED`.
const POOL_FLAG_PAGED: u64 = 0x100;
/// Flags ExAllocatePool2 documents (USE_QUOTA 1, UNINITIALIZED 2, SESSION 4, CACHE_ALIGNED 8,
/// RAISE_ON_FAILURE 0x20, NON_PAGED 0x40, NON_PAGED_EXECUTE 0x80, PAGED 0x100).
const POOL_FLAGS_KNOWN: u64 = 0x1 | 0x2 | 0x4 | 0x8 | 0x20 | 0x40 | 0x80 | 0x100;
/// Pool blocks are 16-byte aligned on x64 (MEMORY_ALLOCATION_ALIGNMENT).
const POOL_ALIGNMENT: usize = 16;

/// `DbgPrintEx` (wdm.h "DbgPrintEx"): printf-style, captured per run. It is C-variadic; under
/// the Win64 convention every variadic integer/pointer argument occupies one 8-byte slot (the
/// first in R9, the rest on the stack after the shadow space), exactly where these fixed
/// parameters are read from, so a fixed-arity Win64 function sees the same values. Slots beyond
/// those the caller passed are never read unless the format asks for them.
#[allow(clippy::too_many_arguments)]
extern "win64" fn dbg_print_ex(
    _component: u32,
    _level: u32,
    format: usize,
    a0: u64,
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
    a5: u64,
    a6: u64,
    a7: u64,
    a8: u64,
    a9: u64,
    a10: u64,
    a11: u64,
) -> i32 {
    let Some(inner) = state::current() else { return status::SUCCESS };
    inner.enter("DbgPrintEx", 31);
    let slots = [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11];
    let mut index = 0;
    let mut next = || {
        let value = slots.get(index).copied().unwrap_or(0);
        index += 1;
        value
    };
    // SAFETY: the driver passes a NUL-terminated format and arguments matching it (DbgPrintEx's
    // contract); strings are read up to their terminator.
    let formatted = unsafe { crate::printf::format(format, &mut next) };
    // DbgPrintEx's Remarks: Unicode conversions only at PASSIVE_LEVEL.
    if formatted.unicode && exec::irql() > exec::PASSIVE_LEVEL {
        inner.violation(Violation::IrqlTooHigh { function: "DbgPrintEx (Unicode format)", irql: exec::irql(), max: exec::PASSIVE_LEVEL });
    }
    inner.debug.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(formatted.text.trim_end_matches('\n').to_owned());
    status::SUCCESS
}

/// `KeBugCheckEx` (wdm.h): ends the run with the code and parameters.
extern "win64" fn ke_bug_check_ex(code: u32, p1: usize, p2: usize, p3: usize, p4: usize) -> ! {
    if let Some(inner) = state::current() {
        inner.enter("KeBugCheckEx", 31);
    }
    exec::bug_check(code, [p1, p2, p3, p4])
}

extern "win64" fn memcpy(destination: *mut u8, source: *const u8, count: usize) -> *mut u8 {
    // SAFETY: the C contract of memcpy: both ranges valid and non-overlapping.
    unsafe { core::ptr::copy_nonoverlapping(source, destination, count) };
    destination
}

extern "win64" fn memmove(destination: *mut u8, source: *const u8, count: usize) -> *mut u8 {
    // SAFETY: the C contract of memmove: both ranges valid, overlap allowed.
    unsafe { core::ptr::copy(source, destination, count) };
    destination
}

extern "win64" fn memset(destination: *mut u8, value: i32, count: usize) -> *mut u8 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    // SAFETY: the C contract of memset: the range is valid for writes.
    unsafe {
        core::ptr::write_bytes(destination, value as u8, count);
    }
    destination
}

/// `memcmp`: a count of 0 compares nothing (0, whatever the pointers); otherwise both ranges
/// are copied out (another driver thread may be writing them) and compared bytewise.
extern "win64" fn memcmp(a: *const u8, b: *const u8, count: usize) -> i32 {
    // SAFETY: the C contract of memcmp: both ranges valid for `count` bytes; driver_mem checks
    // the NULL region and reads nothing for a count of 0.
    let a = unsafe { crate::driver_mem::bytes(a, count) };
    // SAFETY: as above.
    let b = unsafe { crate::driver_mem::bytes(b, count) };
    for (x, y) in a.iter().zip(&b) {
        let (x, y) = (*x, *y);
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

extern "win64" fn strlen(text: *const u8) -> usize {
    // SAFETY: the C contract of strlen: a NUL-terminated string; driver_mem checks the NULL
    // region.
    unsafe { crate::driver_mem::c_string(text, usize::MAX) }.len()
}

/// `ExAllocatePool2` (wdm.h "ExAllocatePool2"): zeroed unless POOL_FLAG_UNINITIALIZED
/// (then poison-filled here); exactly one of NON_PAGED / NON_PAGED_EXECUTE / PAGED; non-zero
/// tag; paged pool at IRQL ≤ APC_LEVEL, non-paged ≤ DISPATCH_LEVEL; NULL on failure.
pub(crate) extern "win64" fn ex_allocate_pool2(flags: u64, size: usize, tag: u32) -> *mut c_void {
    let Some(inner) = state::current() else { return core::ptr::null_mut() };
    let pool_bits = flags & (POOL_FLAG_NON_PAGED | POOL_FLAG_NON_PAGED_EXECUTE | POOL_FLAG_PAGED);
    let pool = if pool_bits == POOL_FLAG_PAGED { PoolKind::Paged } else { PoolKind::NonPaged };
    let max = if pool == PoolKind::Paged { APC_LEVEL } else { DISPATCH_LEVEL };
    inner.enter("ExAllocatePool2", max);
    let problem = if pool_bits.count_ones() != 1 {
        Some("exactly one of POOL_FLAG_NON_PAGED, NON_PAGED_EXECUTE, PAGED is required")
    } else if flags & !POOL_FLAGS_KNOWN != 0 {
        Some("unknown POOL_FLAG bits")
    } else if tag == 0 {
        Some("zero pool tag")
    } else {
        None
    };
    if let Some(reason) = problem {
        inner.violation(Violation::BadPoolRequest { reason });
        return core::ptr::null_mut();
    }
    if inner.injected("ExAllocatePool2").is_some() {
        return core::ptr::null_mut();
    }
    let Ok(layout) = std::alloc::Layout::from_size_align(size.max(1), POOL_ALIGNMENT) else { return core::ptr::null_mut() };
    // SAFETY: the layout has a non-zero size.
    let block = unsafe { std::alloc::alloc(layout) };
    if block.is_null() {
        return core::ptr::null_mut();
    }
    let fill = if flags & POOL_FLAG_UNINITIALIZED != 0 { POOL_ALLOC_POISON } else { 0 };
    // SAFETY: the block was just allocated with `size` (or 1) bytes.
    unsafe { core::ptr::write_bytes(block, fill, size) };
    inner.pool.lock(block as u64).insert(block as usize, PoolBlock { size, tag, pool });
    block.cast()
}

/// `ExFreePoolWithTag` (wdm.h): the tag must match the allocation's; ≤ DISPATCH_LEVEL
/// (≤ APC_LEVEL for paged blocks). Freed blocks are poison-filled before release.
pub(crate) extern "win64" fn ex_free_pool_with_tag(block: *mut c_void, tag: u32) {
    let Some(inner) = state::current() else { return };
    inner.enter("ExFreePoolWithTag", DISPATCH_LEVEL);
    let removed = inner.pool.lock(block as u64).remove(&(block as usize));
    let Some(record) = removed else {
        inner.violation(Violation::BadPoolFree { pointer: block as usize });
        return;
    };
    if record.tag != tag {
        inner.violation(Violation::PoolTagMismatch { allocated: Tag(record.tag), freed: Tag(tag) });
    }
    if record.pool == PoolKind::Paged && exec::irql() > APC_LEVEL {
        inner.violation(Violation::IrqlTooHigh { function: "ExFreePoolWithTag", irql: exec::irql(), max: APC_LEVEL });
    }
    crate::resource::check_freed(block as usize, record.size);
    // SAFETY: the block is a live allocation of `size` bytes made by ex_allocate_pool2.
    unsafe { core::ptr::write_bytes(block.cast::<u8>(), FREE_POISON, record.size) };
    if let Ok(layout) = std::alloc::Layout::from_size_align(record.size.max(1), POOL_ALIGNMENT) {
        // SAFETY: same pointer and layout as the allocation.
        unsafe { std::alloc::dealloc(block.cast(), layout) };
    }
}

/// `KeGetCurrentIrql` (wdm.h): the emulated IRQL of this thread.
extern "win64" fn ke_get_current_irql() -> u8 {
    if let Some(inner) = state::current() {
        inner.enter("KeGetCurrentIrql", 31);
    }
    exec::irql()
}

thread_local! {
    /// The KSPIN_LOCK addresses this emulated thread holds, in acquisition order.
    static HELD_SPIN_LOCKS: core::cell::RefCell<Vec<usize>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// The KSPIN_LOCK at `pointer` as an atomic word, or None (reported) when it is misaligned.
fn spin_lock_word(function: &'static str, pointer: *mut usize) -> Option<&'static AtomicUsize> {
    if !crate::driver_mem::lock_word(function, pointer as usize) {
        return None;
    }
    // SAFETY: a KSPIN_LOCK is a pointer-sized word in non-paged driver memory that lives as
    // long as the lock is used (the spin-lock DDIs' contract); its alignment was checked.
    Some(unsafe { AtomicUsize::from_ptr(pointer) })
}

/// Waits for a spin lock's holder: a real waiter spins, but an emulated holder is a host thread
/// the host may preempt, so after a short spin the waiter gives its core away.
fn spin_back_off(round: &mut u32) {
    *round = round.saturating_add(1);
    if *round < 64 {
        core::hint::spin_loop();
    } else if *round < 128 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// `KeAcquireSpinLockRaiseToDpc` (wdm.h; learn.microsoft.com
/// /windows-hardware/drivers/ddi/wdm/nf-wdm-keacquirespinlockraisetodpc): IRQL <=
/// DISPATCH_LEVEL; acquires the KSPIN_LOCK (a real mutual exclusion on the word, 0 = free),
/// raises this thread's IRQL to DISPATCH_LEVEL and returns the previous IRQL. Every export the
/// driver calls while holding it is then checked against DISPATCH_LEVEL. Spin locks are not
/// recursive: acquiring one this thread holds is flagged, then spins (a real processor would
/// hang; fltemu ends in `Stop::Hang`).
extern "win64" fn ke_acquire_spin_lock_raise_to_dpc(lock: *mut usize) -> u8 {
    let inner = state::current();
    if let Some(inner) = inner {
        inner.enter("KeAcquireSpinLockRaiseToDpc", DISPATCH_LEVEL);
        if HELD_SPIN_LOCKS.with(|held| held.borrow().contains(&(lock as usize))) {
            inner.violation(Violation::InvalidParameter {
                function: "KeAcquireSpinLockRaiseToDpc",
                reason: "spin lock already held by this thread (deadlock)",
            });
        }
    }
    // A misaligned lock is reported and not taken: the IRQL stays (the returned value is the
    // current one, so the matching release restores it unchanged).
    let Some(word) = spin_lock_word("KeAcquireSpinLockRaiseToDpc", lock) else { return exec::irql() };
    let old_irql = exec::set_irql(DISPATCH_LEVEL.max(exec::irql()));
    let mut round = 0;
    while word.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
        spin_back_off(&mut round);
    }
    HELD_SPIN_LOCKS.with(|held| held.borrow_mut().push(lock as usize));
    old_irql
}

/// `KeReleaseSpinLock` (wdm.h; learn.microsoft.com
/// /windows-hardware/drivers/ddi/wdm/nf-wdm-kereleasespinlock): IRQL = DISPATCH_LEVEL; releases
/// a spin lock this thread acquired and restores the IRQL to `new_irql`, the value its acquire
/// returned. Releasing a lock this thread does not hold, releasing below DISPATCH_LEVEL, or a
/// `new_irql` above DISPATCH_LEVEL is flagged; a lock held by another thread is left held.
extern "win64" fn ke_release_spin_lock(lock: *mut usize, new_irql: u8) {
    let inner = state::current();
    if let Some(inner) = inner {
        inner.enter("KeReleaseSpinLock", DISPATCH_LEVEL);
    }
    let flag = |reason: &'static str| {
        if let Some(inner) = inner {
            inner.violation(Violation::InvalidParameter { function: "KeReleaseSpinLock", reason });
        }
    };
    let Some(word) = spin_lock_word("KeReleaseSpinLock", lock) else {
        // Never taken (its acquire reported it and left the IRQL): only the IRQL is restored.
        exec::set_irql(new_irql);
        return;
    };
    if exec::irql() < DISPATCH_LEVEL {
        flag("called below DISPATCH_LEVEL");
    }
    if new_irql > DISPATCH_LEVEL {
        flag("NewIrql above DISPATCH_LEVEL (not a value KeAcquireSpinLockRaiseToDpc returns)");
    }
    let held = HELD_SPIN_LOCKS.with(|held| {
        let mut held = held.borrow_mut();
        let position = held.iter().rposition(|&address| address == lock as usize);
        position.map(|position| held.remove(position)).is_some()
    });
    if held {
        word.store(0, Ordering::Release);
    } else {
        flag("spin lock not held by this thread");
    }
    exec::set_irql(new_irql);
}

/// Spin locks the current thread still holds, forgotten (a driver call returned holding them).
pub fn take_held_spin_locks() -> usize {
    HELD_SPIN_LOCKS.with(|held| core::mem::take(&mut *held.borrow_mut()).len())
}

/// `KeQuerySystemTimePrecise` (wdm.h): 100 ns units since 1601-01-01 UTC.
extern "win64" fn ke_query_system_time_precise(time: *mut i64) {
    const EPOCH_DIFFERENCE_100NS: u128 = 116_444_736_000_000_000;
    if let Some(inner) = state::current() {
        inner.enter("KeQuerySystemTimePrecise", 31);
    }
    let since_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    #[allow(clippy::cast_possible_truncation)]
    let value = (since_unix.as_nanos() / 100 + EPOCH_DIFFERENCE_100NS) as i64;
    if !time.is_null() {
        // The caller's LARGE_INTEGER out pointer, at whatever alignment the driver chose.
        // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
        unsafe { crate::driver_mem::write(time, value) };
    }
}

/// `PsGetCurrentProcessId` (ntddk.h): the emulated process of this thread (the requestor in
/// I/O callbacks, the sender in port callbacks, System (4) otherwise).
extern "win64" fn ps_get_current_process_id() -> usize {
    if let Some(inner) = state::current() {
        inner.enter("PsGetCurrentProcessId", 31);
    }
    exec::current_pid() as usize
}

/// `PsGetCurrentThreadId` (ntddk.h, any IRQL): the host thread's id, so that each emulated
/// kernel thread (driver calls run on emulator worker threads) has a distinct non-zero one.
extern "win64" fn ps_get_current_thread_id() -> usize {
    if let Some(inner) = state::current() {
        inner.enter("PsGetCurrentThreadId", 31);
    }
    // SAFETY: gettid has no preconditions.
    let id = unsafe { libc::gettid() };
    usize::try_from(id).unwrap_or(usize::MAX)
}

/// `FsRtlIsPagingFile` (ntifs.h): TRUE for file objects opened as a paging file.
extern "win64" fn fs_rtl_is_paging_file(file_object: usize) -> u32 {
    let Some(inner) = state::current() else { return 0 };
    inner.enter("FsRtlIsPagingFile", APC_LEVEL);
    u32::from(inner.with_file(file_object, |f| f.paging_file).unwrap_or(false))
}

/// `MM_COPY_MEMORY_PHYSICAL`.
const MM_COPY_MEMORY_PHYSICAL: u32 = 1;
/// `MM_COPY_MEMORY_VIRTUAL`.
const MM_COPY_MEMORY_VIRTUAL: u32 = 2;

/// Reads `length` bytes at `source` into `target` without faulting: process_vm_readv on our
/// own process returns EFAULT (or a short count) for unmapped or PROT_NONE pages.
pub fn copy_without_faulting(target: usize, source: usize, length: usize) -> usize {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut done = 0;
    while done < length {
        let local = libc::iovec { iov_base: (target + done) as *mut c_void, iov_len: length - done };
        let remote = libc::iovec { iov_base: (source + done) as *mut c_void, iov_len: length - done };
        // SAFETY: `local` is the caller's kernel buffer (valid for `length` bytes per
        // MmCopyMemory's contract); the remote side is only read by the kernel, which checks it.
        let copied = unsafe { libc::process_vm_readv(pid, &raw const local, 1, &raw const remote, 1, 0) };
        if copied <= 0 {
            break;
        }
        #[allow(clippy::cast_sign_loss)]
        let copied = copied as usize;
        done += copied;
    }
    done
}

/// `MmCopyMemory` (ntddk.h "MmCopyMemory", Windows 8.1+, IRQL ≤ APC_LEVEL): with
/// MM_COPY_MEMORY_VIRTUAL copies from a virtual address without faulting; an inaccessible range
/// fails with STATUS_ACCESS_VIOLATION (fltemu's choice of "an appropriate error"), a partly
/// accessible one with STATUS_PARTIAL_COPY; `*NumberOfBytesTransferred` reports the bytes copied.
/// Physical copies are not modelled (STATUS_NOT_SUPPORTED).
extern "win64" fn mm_copy_memory(target: usize, source: usize, length: usize, flags: u32, transferred: *mut usize) -> i32 {
    let Some(inner) = state::current() else { return status::UNSUCCESSFUL };
    inner.enter("MmCopyMemory", APC_LEVEL);
    if let Some(failure) = inner.injected("MmCopyMemory") {
        if !transferred.is_null() {
            // The caller's SIZE_T out pointer, at whatever alignment the driver chose.
            // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
            unsafe { crate::driver_mem::write(transferred, 0) };
        }
        return failure;
    }
    let (result, copied) = if flags == MM_COPY_MEMORY_VIRTUAL {
        let copied = copy_without_faulting(target, source, length);
        let result = if copied == length {
            status::SUCCESS
        } else if copied == 0 {
            status::ACCESS_VIOLATION
        } else {
            status::PARTIAL_COPY
        };
        (result, copied)
    } else if flags == MM_COPY_MEMORY_PHYSICAL {
        (status::NOT_SUPPORTED, 0)
    } else {
        (status::INVALID_PARAMETER, 0)
    };
    if !transferred.is_null() {
        // The caller's SIZE_T out pointer, at whatever alignment the driver chose.
        // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
        unsafe { crate::driver_mem::write(transferred, copied) };
    }
    result
}

/// `PAGE_READONLY`.
const PAGE_READONLY: u32 = 0x02;
/// `PAGE_READWRITE`.
const PAGE_READWRITE: u32 = 0x04;

/// `MmSecureVirtualMemory` (ntddk.h, IRQL ≤ APC_LEVEL): a non-NULL handle when the whole user
/// range is mapped with at least the asked protection (PAGE_READONLY or PAGE_READWRITE), which
/// then cannot be unmapped or made more restrictive until MmUnsecureVirtualMemory; NULL
/// otherwise.
extern "win64" fn mm_secure_virtual_memory(address: usize, size: usize, probe_mode: u32) -> usize {
    use crate::user::Access;
    let Some(inner) = state::current() else { return 0 };
    inner.enter("MmSecureVirtualMemory", APC_LEVEL);
    if inner.injected("MmSecureVirtualMemory").is_some() {
        return 0;
    }
    if size == 0 {
        return 0;
    }
    let ok = match inner.user.access_of(address, size) {
        Some(Access::ReadWrite) => probe_mode == PAGE_READONLY || probe_mode == PAGE_READWRITE,
        Some(Access::ReadOnly) => probe_mode == PAGE_READONLY,
        _ => false,
    };
    if !ok {
        return 0;
    }
    inner.user.secure(address, 1);
    let mut state = inner.lock();
    state.next_secure += 1;
    let handle = 0x0000_5EC0_0000_0000 + state.next_secure * 16;
    state.secured.insert(handle, (address, size));
    handle
}

/// `MmUnsecureVirtualMemory` (ntddk.h): releases a handle from MmSecureVirtualMemory.
extern "win64" fn mm_unsecure_virtual_memory(handle: usize) {
    let Some(inner) = state::current() else { return };
    inner.enter("MmUnsecureVirtualMemory", APC_LEVEL);
    let range = inner.lock().secured.remove(&handle);
    if range.is_none() {
        inner.violation(Violation::InvalidParameter { function: "MmUnsecureVirtualMemory", reason: "not a handle from MmSecureVirtualMemory" });
    }
    if let Some((address, _)) = range {
        inner.user.secure(address, -1);
    }
}

/// `MemoryBasicInformation` (ntifs.h `MEMORY_INFORMATION_CLASS`).
const MEMORY_BASIC_INFORMATION_CLASS: i32 = 0;
/// `sizeof(MEMORY_BASIC_INFORMATION)` on x64.
const MEMORY_BASIC_INFORMATION_SIZE: usize = 48;
/// `STATUS_INVALID_INFO_CLASS`.
const STATUS_INVALID_INFO_CLASS: i32 = 0xC000_0003_u32.cast_signed();
/// `STATUS_INFO_LENGTH_MISMATCH`.
const STATUS_INFO_LENGTH_MISMATCH: i32 = 0xC000_0004_u32.cast_signed();

/// `ZwQueryVirtualMemory` (ntifs.h, IRQL PASSIVE_LEVEL): the state, protection and type of the
/// run of pages holding `address` in the current process (the only process handle the
/// emulated driver can hold is `ZwCurrentProcess()`, `(HANDLE)-1`). Only
/// MemoryBasicInformation is supported, as documented.
extern "win64" fn zw_query_virtual_memory(
    process: usize,
    address: usize,
    class: i32,
    information: usize,
    length: usize,
    returned: usize,
) -> i32 {
    let Some(inner) = state::current() else { return status::UNSUCCESSFUL };
    inner.enter("ZwQueryVirtualMemory", exec::PASSIVE_LEVEL);
    if process != usize::MAX {
        inner.violation(Violation::InvalidParameter { function: "ZwQueryVirtualMemory", reason: "not ZwCurrentProcess()" });
        return status::INVALID_PARAMETER;
    }
    if class != MEMORY_BASIC_INFORMATION_CLASS {
        return STATUS_INVALID_INFO_CLASS;
    }
    if length < MEMORY_BASIC_INFORMATION_SIZE || information == 0 {
        return STATUS_INFO_LENGTH_MISMATCH;
    }
    let region = inner.user.query(address);
    let mut bytes = [0u8; MEMORY_BASIC_INFORMATION_SIZE];
    bytes[0..8].copy_from_slice(&region.base.to_le_bytes());
    bytes[8..16].copy_from_slice(&region.allocation_base.to_le_bytes());
    bytes[16..20].copy_from_slice(&(if region.allocation_base == 0 { 0 } else { region.protect }).to_le_bytes());
    bytes[24..32].copy_from_slice(&region.size.to_le_bytes());
    bytes[32..36].copy_from_slice(&region.state.to_le_bytes());
    bytes[36..40].copy_from_slice(&region.protect.to_le_bytes());
    bytes[40..44].copy_from_slice(&region.kind.to_le_bytes());
    // SAFETY: the caller passed a buffer of at least `length` ≥ 48 bytes (checked above).
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), information as *mut u8, bytes.len()) };
    if returned != 0 {
        // SAFETY: ReturnLength is an optional PSIZE_T the caller owns.
        unsafe { (returned as *mut usize).write_unaligned(MEMORY_BASIC_INFORMATION_SIZE) };
    }
    status::SUCCESS
}

/// ntoskrnl.exe exports by name.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "DbgPrintEx" => dbg_print_ex as *const () as usize,
        "KeBugCheckEx" => ke_bug_check_ex as *const () as usize,
        "memcpy" => memcpy as *const () as usize,
        "memmove" => memmove as *const () as usize,
        "memset" => memset as *const () as usize,
        "memcmp" => memcmp as *const () as usize,
        "strlen" => strlen as *const () as usize,
        "ExAllocatePool2" => ex_allocate_pool2 as *const () as usize,
        "ExFreePoolWithTag" => ex_free_pool_with_tag as *const () as usize,
        "KeGetCurrentIrql" => ke_get_current_irql as *const () as usize,
        "KeQuerySystemTimePrecise" => ke_query_system_time_precise as *const () as usize,
        "KeAcquireSpinLockRaiseToDpc" => ke_acquire_spin_lock_raise_to_dpc as *const () as usize,
        "KeReleaseSpinLock" => ke_release_spin_lock as *const () as usize,
        "PsGetCurrentProcessId" => ps_get_current_process_id as *const () as usize,
        "PsGetCurrentThreadId" => ps_get_current_thread_id as *const () as usize,
        "FsRtlIsPagingFile" => fs_rtl_is_paging_file as *const () as usize,
        "MmCopyMemory" => mm_copy_memory as *const () as usize,
        "MmSecureVirtualMemory" => mm_secure_virtual_memory as *const () as usize,
        "MmUnsecureVirtualMemory" => mm_unsecure_virtual_memory as *const () as usize,
        "ZwQueryVirtualMemory" => zw_query_virtual_memory as *const () as usize,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_lock_excludes_other_threads_and_restores_irql() {
        // A read-yield-write increment loses updates unless the spin lock really excludes.
        static LOCK: AtomicUsize = AtomicUsize::new(0);
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        const THREADS: usize = 4;
        const ROUNDS: usize = 500;
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..ROUNDS {
                        let old = ke_acquire_spin_lock_raise_to_dpc(LOCK.as_ptr());
                        assert_eq!((old, exec::irql()), (exec::PASSIVE_LEVEL, DISPATCH_LEVEL));
                        let value = COUNTER.load(Ordering::Relaxed);
                        std::thread::yield_now();
                        COUNTER.store(value + 1, Ordering::Relaxed);
                        ke_release_spin_lock(LOCK.as_ptr(), old);
                        assert_eq!(exec::irql(), exec::PASSIVE_LEVEL);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(COUNTER.load(Ordering::Relaxed), THREADS * ROUNDS);
        assert_eq!(LOCK.load(Ordering::Relaxed), 0, "released");
    }

    #[test]
    fn acquire_at_dispatch_returns_dispatch_and_held_locks_are_tracked() {
        let lock = AtomicUsize::new(0);
        let outer = std::thread::spawn(move || {
            exec::set_irql(DISPATCH_LEVEL);
            let old = ke_acquire_spin_lock_raise_to_dpc(lock.as_ptr());
            assert_eq!(old, DISPATCH_LEVEL);
            assert_eq!(lock.load(Ordering::Relaxed), 1, "held");
            assert_eq!(take_held_spin_locks(), 1, "a forgotten lock is reported");
            assert_eq!(take_held_spin_locks(), 0, "and the record starts afresh");
            // Forgotten by the record, the word stays held: release it by hand.
            lock.store(0, Ordering::Relaxed);
            let old = ke_acquire_spin_lock_raise_to_dpc(lock.as_ptr());
            ke_release_spin_lock(lock.as_ptr(), old);
            assert_eq!((exec::irql(), lock.load(Ordering::Relaxed), take_held_spin_locks()), (DISPATCH_LEVEL, 0, 0));
        });
        outer.join().unwrap();
    }
}
