//! Memory descriptor lists: IoAllocateMdl / IoFreeMdl, MmBuildMdlForNonPagedPool,
//! MmProbeAndLockPages / MmUnlockPages and MmMapLockedPagesSpecifyCache / MmUnmapLockedPages
//! (what MmGetSystemAddressForMdlSafe compiles to). fltemu has one address space, so the
//! "system address" of a locked range is its own address; what is checked is the life cycle:
//! map only what is locked or non-paged, unlock and unmap before freeing, free every MDL.
//! MDL headers are read and written only after the address is found among fltemu's own blocks
//! (8-aligned `u64` arrays), so those accesses are aligned whatever the driver passes.

use crate::catalog::{Emulated, Source};
use crate::exec::{APC_LEVEL, DISPATCH_LEVEL};
use crate::objects::{self, ObjectKind, Table};

/// MDL_MAPPED_TO_SYSTEM_VA, MDL_PAGES_LOCKED, MDL_SOURCE_IS_NONPAGED_POOL (wdm.h).
const MAPPED: i16 = 0x1;
const LOCKED: i16 = 0x2;
const NONPAGED: i16 = 0x4;
const PAGE: usize = 4096;

/// Live MDLs: address → allocation size in u64 units.
static MDLS: Table<usize, usize> = Table::new();

/// MDLs Filter Manager built itself (FltLockUserBuffer, paging I/O) → the kernel view of
/// their pages, which MmMapLockedPagesSpecifyCache returns; Filter Manager frees them when the
/// operation completes.
static OWNED: Table<usize, usize> = Table::new();

/// MDLs freed (by IoFreeMdl or by Filter Manager); their memory stays allocated and poisoned,
/// so an address here is never handed out again and a later use of it is known to be one.
static FREED: Table<usize, ()> = Table::new();

/// Forgets every MDL (a new emulator loads).
pub fn reset() {
    MDLS.clear();
    OWNED.clear();
    FREED.clear();
}

/// Poisons a live MDL's header and forgets it (the memory stays allocated, see [`FREED`]).
fn retire(mdl: usize) {
    // SAFETY: a live MDL's first 0x30 bytes (kept allocated, poisoned, like IoFreeMdl's).
    unsafe { core::ptr::write_bytes(mdl as *mut u8, 0xDF, 0x30) };
    MDLS.with(|t| t.remove(&mdl));
    FREED.with(|t| t.insert(mdl, ()));
}

/// Whether `mdl` is an MDL not freed yet.
pub(crate) fn is_live(mdl: usize) -> bool {
    MDLS.with(|t| t.contains_key(&mdl))
}

/// Whether `mdl` was an MDL and has been freed.
pub(crate) fn was_freed(mdl: usize) -> bool {
    FREED.with(|t| t.contains_key(&mdl))
}

/// Builds an MDL for `[address, address + length)` the way Filter Manager does for an
/// operation (not counted as a driver call): pages locked, `system` the kernel view of the
/// same bytes (a second mapping of a user buffer's pages, or the kernel buffer itself), mapped
/// only when the driver asks (MmGetSystemAddressForMdlSafe).
pub(crate) fn build_owned(address: usize, length: u32, system: usize) -> usize {
    let pages = (address % PAGE + length as usize).div_ceil(PAGE).max(1);
    let words = 6 + pages;
    let block = Box::into_raw(vec![0u64; words].into_boxed_slice()).cast::<u64>() as usize;
    let size = i16::try_from(words * 8).unwrap_or(i16::MAX);
    // SAFETY: the block was just allocated with `words` u64s (≥ 0x30 bytes).
    unsafe { ((block + 8) as *mut i16).write(size) };
    // SAFETY: as above.
    unsafe { ((block + 0xA) as *mut i16).write(LOCKED) };
    // SAFETY: as above.
    unsafe { ((block + 0x20) as *mut usize).write(address - address % PAGE) };
    // SAFETY: as above.
    unsafe { ((block + 0x28) as *mut u32).write(length) };
    // SAFETY: as above.
    unsafe { ((block + 0x2C) as *mut u32).write((address % PAGE) as u32) };
    MDLS.with(|t| t.insert(block, words));
    OWNED.with(|t| t.insert(block, system));
    block
}

/// Filter Manager frees an MDL it built, at the operation's completion (unlocked, unmapped).
pub(crate) fn free_owned(mdl: usize) {
    if OWNED.with(|t| t.remove(&mdl)).is_none() {
        return;
    }
    retire(mdl);
}

/// Filter Manager frees an MDL a filter swapped into an operation's parameters, after the
/// filter's post-operation callback (the FLT_PARAMETERS pages for IRP_MJ_READ/WRITE: "the filter
/// manager frees the MDL currently stored in MdlAddress and restores the previous value").
pub(crate) fn free_swapped(mdl: usize) {
    if OWNED.with(|t| t.contains_key(&mdl)) {
        free_owned(mdl);
    } else if is_live(mdl) {
        retire(mdl);
    }
}

/// FltFreeCallbackData frees the MDL chain of the callback data's parameters (`first`, linked
/// by MDL.Next at offset 0). A link the filter freed itself (IoFreeMdl) while it was attached
/// is a use after free by Filter Manager → ObjectMisuse; the walk stops at a pointer that was
/// never an MDL (and after 1024 links, in case a filter made a cycle).
pub(crate) fn free_attached_chain(function: &'static str, first: usize) {
    let mut mdl = first;
    for _ in 0..1024 {
        if mdl == 0 {
            return;
        }
        if !is_live(mdl) {
            if was_freed(mdl) {
                objects::misuse(
                    function,
                    ObjectKind::Mdl,
                    "an MDL still attached to the callback data was freed by the filter (IoFreeMdl); Filter Manager frees it (use after free)",
                );
            }
            return;
        }
        // SAFETY: a live MDL fltemu allocated: Next at offset 0 (read before it is poisoned).
        let next = unsafe { (mdl as *const usize).read() };
        free_swapped(mdl);
        mdl = next;
    }
}

/// Where the bytes an MDL describes can be reached from kernel mode (Filter Manager's kernel
/// view for its own MDLs, the described address otherwise); None for an unknown MDL.
pub(crate) fn system_view(mdl: usize) -> Option<usize> {
    if !MDLS.with(|t| t.contains_key(&mdl)) {
        return None;
    }
    Some(OWNED.with(|t| t.get(&mdl).copied()).unwrap_or_else(|| range(mdl).0))
}


/// MDLs not freed.
pub fn outstanding() -> Vec<(ObjectKind, usize)> {
    vec![(ObjectKind::Mdl, MDLS.with(|t| t.len()))]
}

fn flags(mdl: usize) -> i16 {
    // SAFETY: a live MDL fltemu allocated (MdlFlags at offset 0xA).
    unsafe { ((mdl + 0xA) as *const i16).read() }
}

fn set_flags(mdl: usize, value: i16) {
    // SAFETY: as above.
    unsafe { ((mdl + 0xA) as *mut i16).write(value) };
}

fn live(function: &'static str, mdl: usize) -> bool {
    let known = MDLS.with(|t| t.contains_key(&mdl));
    if !known {
        objects::misuse(function, ObjectKind::Mdl, "not an MDL from IoAllocateMdl (or already freed)");
    }
    known
}

/// The (start, byte count) an MDL describes.
fn range(mdl: usize) -> (usize, usize) {
    // SAFETY: a live MDL: StartVa at 0x20, ByteCount at 0x28, ByteOffset at 0x2C.
    let start = unsafe { ((mdl + 0x20) as *const usize).read() };
    // SAFETY: as above.
    let count = unsafe { ((mdl + 0x28) as *const u32).read() } as usize;
    // SAFETY: as above.
    let offset = unsafe { ((mdl + 0x2C) as *const u32).read() } as usize;
    (start + offset, count)
}

/// `IoAllocateMdl` (wdm.h; ≤ DISPATCH): an MDL for `length` bytes at `address` (the PFN array
/// is allocated, never filled); Irp association is not modelled (must be NULL here).
extern "win64" fn io_allocate_mdl(address: usize, length: u32, _secondary: u8, _charge_quota: u8, irp: usize) -> usize {
    objects::count("IoAllocateMdl", DISPATCH_LEVEL);
    if length == 0 || irp != 0 {
        if irp != 0 {
            objects::misuse("IoAllocateMdl", ObjectKind::Mdl, "IRP association is not modelled by fltemu");
        }
        return 0;
    }
    let pages = (address % PAGE + length as usize).div_ceil(PAGE);
    let words = 6 + pages;
    let block = Box::into_raw(vec![0u64; words].into_boxed_slice()).cast::<u64>() as usize;
    let size = i16::try_from(words * 8).unwrap_or(i16::MAX);
    // SAFETY: the block was just allocated with `words` u64s (≥ 0x30 bytes).
    unsafe { ((block + 8) as *mut i16).write(size) };
    // SAFETY: as above.
    unsafe { ((block + 0x20) as *mut usize).write(address - address % PAGE) };
    // SAFETY: as above.
    unsafe { ((block + 0x28) as *mut u32).write(length) };
    // SAFETY: as above.
    unsafe { ((block + 0x2C) as *mut u32).write((address % PAGE) as u32) };
    MDLS.with(|t| t.insert(block, words));
    block
}

/// `IoFreeMdl` (wdm.h; ≤ DISPATCH): pages still locked or mapped → ObjectMisuse.
extern "win64" fn io_free_mdl(mdl: usize) {
    objects::count("IoFreeMdl", DISPATCH_LEVEL);
    if !live("IoFreeMdl", mdl) {
        return;
    }
    if OWNED.with(|t| t.contains_key(&mdl)) {
        objects::misuse("IoFreeMdl", ObjectKind::Mdl, "the operation's MDL (FltLockUserBuffer) is freed by Filter Manager when the operation completes, not by the filter");
        return;
    }
    let value = flags(mdl);
    if value & LOCKED != 0 {
        objects::misuse("IoFreeMdl", ObjectKind::Mdl, "freed with its pages still locked (MmUnlockPages first)");
    }
    if value & MAPPED != 0 && value & NONPAGED == 0 {
        objects::misuse("IoFreeMdl", ObjectKind::Mdl, "freed while mapped (MmUnmapLockedPages first)");
    }
    // The MDL memory stays allocated (poisoned) so a later use is not a host crash.
    retire(mdl);
}

/// `MmBuildMdlForNonPagedPool` (wdm.h; ≤ DISPATCH): marks the MDL non-paged and mapped at its
/// own address.
extern "win64" fn mm_build_mdl_for_non_paged_pool(mdl: usize) {
    objects::count("MmBuildMdlForNonPagedPool", DISPATCH_LEVEL);
    if !live("MmBuildMdlForNonPagedPool", mdl) {
        return;
    }
    let (start, _) = range(mdl);
    // SAFETY: a live MDL: MappedSystemVa at 0x18.
    unsafe { ((mdl + 0x18) as *mut usize).write(start) };
    set_flags(mdl, flags(mdl) | NONPAGED);
}

/// `MmProbeAndLockPages` (wdm.h; ≤ APC, ≤ DISPATCH for non-paged): locks the described range.
/// A user range that is not accessible for the operation is Err(STATUS_ACCESS_VIOLATION), which
/// the caller's thunk ([`crate::seh`]) raises so the driver's __except can take it; an
/// exception no handler takes is bug check 0x1E as for any other.
pub(crate) fn probe_and_lock(mdl: usize, _mode: i8, operation: i32) -> Result<(), i32> {
    objects::count("MmProbeAndLockPages", APC_LEVEL);
    if !live("MmProbeAndLockPages", mdl) {
        return Ok(());
    }
    if flags(mdl) & LOCKED != 0 {
        objects::misuse("MmProbeAndLockPages", ObjectKind::Mdl, "pages already locked");
    }
    let (start, count) = range(mdl);
    if let Some(inner) = crate::state::current()
        && inner.user.contains(start)
    {
        use crate::user::Access;
        let ok = match inner.user.access_of(start, count) {
            Some(Access::ReadWrite) => true,
            Some(Access::ReadOnly) => operation == 0, // IoReadAccess
            _ => false,
        };
        if !ok {
            return Err(crate::status::ACCESS_VIOLATION);
        }
    }
    set_flags(mdl, flags(mdl) | LOCKED);
    Ok(())
}

/// `MmUnlockPages` (wdm.h; ≤ DISPATCH): not locked → ObjectMisuse; unmaps as well.
extern "win64" fn mm_unlock_pages(mdl: usize) {
    objects::count("MmUnlockPages", DISPATCH_LEVEL);
    if !live("MmUnlockPages", mdl) {
        return;
    }
    if flags(mdl) & LOCKED == 0 {
        objects::misuse("MmUnlockPages", ObjectKind::Mdl, "pages not locked");
    }
    set_flags(mdl, flags(mdl) & !(LOCKED | MAPPED));
}

/// `MmMapLockedPagesSpecifyCache` (wdm.h; ≤ DISPATCH for KernelMode): the range must be locked
/// or from non-paged pool; returns its address (one address space) and sets MappedSystemVa;
/// UserMode mappings are not modelled (NULL).
extern "win64" fn mm_map_locked_pages_specify_cache(mdl: usize, mode: i8, _cache: i32, _requested: usize, _bug_check: u32, _priority: u32) -> usize {
    objects::count("MmMapLockedPagesSpecifyCache", DISPATCH_LEVEL);
    if !live("MmMapLockedPagesSpecifyCache", mdl) || mode != 0 {
        return 0;
    }
    if flags(mdl) & (LOCKED | NONPAGED) == 0 {
        objects::misuse("MmMapLockedPagesSpecifyCache", ObjectKind::Mdl, "pages neither locked (MmProbeAndLockPages) nor non-paged (MmBuildMdlForNonPagedPool)");
        return 0;
    }
    // Filter Manager's MDLs of a user buffer map to a kernel view of their pages, which stays
    // valid in any thread context (the user address does not, at DISPATCH_LEVEL).
    let start = OWNED.with(|t| t.get(&mdl).copied()).unwrap_or_else(|| range(mdl).0);
    // SAFETY: a live MDL: MappedSystemVa at 0x18.
    unsafe { ((mdl + 0x18) as *mut usize).write(start) };
    set_flags(mdl, flags(mdl) | MAPPED);
    start
}

/// `MmUnmapLockedPages` (wdm.h; ≤ DISPATCH): the address must be the MDL's mapping.
extern "win64" fn mm_unmap_locked_pages(address: usize, mdl: usize) {
    objects::count("MmUnmapLockedPages", DISPATCH_LEVEL);
    if !live("MmUnmapLockedPages", mdl) {
        return;
    }
    let mapped_at = OWNED.with(|t| t.get(&mdl).copied()).unwrap_or_else(|| range(mdl).0);
    if flags(mdl) & MAPPED == 0 || mapped_at != address {
        objects::misuse("MmUnmapLockedPages", ObjectKind::Mdl, "not this MDL's mapping");
        return;
    }
    set_flags(mdl, flags(mdl) & !MAPPED);
}

/// ntoskrnl.exe exports of this module.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "IoAllocateMdl" => io_allocate_mdl as *const () as usize,
        "IoFreeMdl" => io_free_mdl as *const () as usize,
        "MmBuildMdlForNonPagedPool" => mm_build_mdl_for_non_paged_pool as *const () as usize,
        "MmProbeAndLockPages" => crate::seh::mm_probe_and_lock_pages_entry(),
        "MmUnlockPages" => mm_unlock_pages as *const () as usize,
        "MmMapLockedPagesSpecifyCache" => mm_map_locked_pages_specify_cache as *const () as usize,
        "MmUnmapLockedPages" => mm_unmap_locked_pages as *const () as usize,
        _ => return None,
    })
}

const fn wdm(function: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "ntoskrnl.exe", function, notes, source: Source::Ddi("wdm") }
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    wdm("IoAllocateMdl", "≤ DISPATCH; MDL header (Size, StartVa, ByteCount, ByteOffset) + PFN array; never freed by unload → ObjectLeaked(Mdl); IRP association not modelled"),
    wdm("IoFreeMdl", "≤ DISPATCH; still locked or mapped → ObjectMisuse; unknown/double free → ObjectMisuse; the MDL FltLockUserBuffer put in the operation's parameters (Filter Manager frees it at completion) → ObjectMisuse; an MDL the filter swapped into a read/write's parameters and freed while still attached → ObjectMisuse when Filter Manager reaches it (use after free)"),
    wdm("MmBuildMdlForNonPagedPool", "≤ DISPATCH; MDL_SOURCE_IS_NONPAGED_POOL, MappedSystemVa = the buffer"),
    wdm("MmProbeAndLockPages", "≤ APC; locks; a user range not accessible for the operation raises STATUS_ACCESS_VIOLATION at the caller (its __except takes it; none → bug check 0x1E); already locked → ObjectMisuse"),
    wdm("MmUnlockPages", "≤ DISPATCH; not locked → ObjectMisuse"),
    wdm("MmMapLockedPagesSpecifyCache", "≤ DISPATCH; KernelMode only; needs locked or non-paged pages (else ObjectMisuse, NULL); returns the buffer's own address (what MmGetSystemAddressForMdlSafe yields), or for the MDL of a read/write's user buffer a kernel view of its pages that stays valid at DISPATCH_LEVEL in any thread"),
    wdm("MmUnmapLockedPages", "≤ DISPATCH; must be the MDL's mapping"),
];
