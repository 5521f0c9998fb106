//! The older pool allocators (ExAllocatePoolWithTag, ExAllocatePool, ExFreePool, Filter
//! Manager's aligned pool) on top of ExAllocatePool2's accounting, so every block is
//! leak-checked and tag-checked the same way.

use core::ffi::c_void;

use crate::catalog::{Emulated, Source};
use crate::nt::{ex_allocate_pool2, ex_free_pool_with_tag};
use crate::state;
use crate::verifier::Violation;

/// `POOL_FLAG_UNINITIALIZED | POOL_FLAG_NON_PAGED` / `… | POOL_FLAG_PAGED`.
const UNINITIALIZED_NON_PAGED: u64 = 0x2 | 0x40;
const UNINITIALIZED_PAGED: u64 = 0x2 | 0x100;
/// The tag ExAllocatePool gives its blocks ('None').
const TAG_NONE: u32 = u32::from_le_bytes(*b"None");

/// POOL_TYPE → POOL_FLAGS: NonPagedPool 0, PagedPool 1, NonPagedPoolNx 512 (and their
/// must-succeed / cache-aligned variants by their base type); the old allocators do not zero.
fn flags_of(pool_type: i32) -> Option<u64> {
    match pool_type & !0x4 {
        0 | 512 | 2 | 514 | 16 | 528 => Some(UNINITIALIZED_NON_PAGED),
        1 | 3 | 17 => Some(UNINITIALIZED_PAGED),
        _ => None,
    }
}

/// `ExAllocatePoolWithTag` (wdm.h; deprecated for ExAllocatePool2, still what MSVC builds with
/// ExAllocatePoolZero or older code import): NOT zeroed (poison-filled, as Driver Verifier
/// does); ≤ DISPATCH (paged ≤ APC); NULL on failure.
extern "win64" fn ex_allocate_pool_with_tag(pool_type: i32, size: usize, tag: u32) -> *mut c_void {
    let Some(flags) = flags_of(pool_type) else {
        crate::objects::flag(Violation::BadPoolRequest { reason: "unknown POOL_TYPE" });
        return core::ptr::null_mut();
    };
    ex_allocate_pool2(flags, size, tag)
}

/// `ExAllocatePool` (wdm.h; deprecated): ExAllocatePoolWithTag with the tag 'None'.
extern "win64" fn ex_allocate_pool(pool_type: i32, size: usize) -> *mut c_void {
    ex_allocate_pool_with_tag(pool_type, size, TAG_NONE)
}

/// `ExFreePool` (wdm.h): frees any pool block whatever its tag; unknown/double free →
/// BadPoolFree.
extern "win64" fn ex_free_pool(block: *mut c_void) {
    let tag = state::current().and_then(|inner| inner.pool.lock(block as u64).get(&(block as usize)).map(|b| b.tag));
    ex_free_pool_with_tag(block, tag.unwrap_or(0));
}

/// `FltAllocatePoolAlignedWithTag` (fltkernel.h; ≤ APC): pool aligned for the instance's
/// device (fltemu's pool is 16-byte aligned, more than the 512-byte sector alignment fltemu's
/// volumes do not require); freed with FltFreePoolAlignedWithTag.
extern "win64" fn flt_allocate_pool_aligned_with_tag(_instance: isize, pool_type: i32, size: usize, tag: u32) -> *mut c_void {
    if let Some(inner) = state::current() {
        inner.enter("FltAllocatePoolAlignedWithTag", crate::exec::APC_LEVEL);
    }
    ex_allocate_pool_with_tag(pool_type, size, tag)
}

/// `FltFreePoolAlignedWithTag` (fltkernel.h; ≤ APC): the tag must match.
extern "win64" fn flt_free_pool_aligned_with_tag(_instance: isize, block: *mut c_void, tag: u32) {
    if let Some(inner) = state::current() {
        inner.enter("FltFreePoolAlignedWithTag", crate::exec::APC_LEVEL);
    }
    ex_free_pool_with_tag(block, tag);
}

/// ntoskrnl.exe exports of this module.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "ExAllocatePoolWithTag" => ex_allocate_pool_with_tag as *const () as usize,
        "ExAllocatePool" => ex_allocate_pool as *const () as usize,
        "ExFreePool" => ex_free_pool as *const () as usize,
        _ => return None,
    })
}

/// fltmgr.sys exports of this module.
pub fn resolve_flt(name: &str) -> Option<usize> {
    Some(match name {
        "FltAllocatePoolAlignedWithTag" => flt_allocate_pool_aligned_with_tag as *const () as usize,
        "FltFreePoolAlignedWithTag" => flt_free_pool_aligned_with_tag as *const () as usize,
        _ => return None,
    })
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    Emulated { dll: "ntoskrnl.exe", function: "ExAllocatePoolWithTag", notes: "NonPagedPool/NonPagedPoolNx/PagedPool (+ variants); not zeroed (0xA5 poison); accounted, tag-checked and leak-checked like ExAllocatePool2; unknown POOL_TYPE → NULL + BadPoolRequest. ExAllocatePoolZero is a header inline over this or ExAllocatePool2", source: Source::Ddi("wdm") },
    Emulated { dll: "ntoskrnl.exe", function: "ExAllocatePool", notes: "ExAllocatePoolWithTag with tag 'None'", source: Source::Ddi("wdm") },
    Emulated { dll: "ntoskrnl.exe", function: "ExFreePool", notes: "frees any live block regardless of tag; unknown/double free → BadPoolFree", source: Source::Ddi("wdm") },
    Emulated { dll: "fltmgr.sys", function: "FltAllocatePoolAlignedWithTag", notes: "≤ APC; as ExAllocatePoolWithTag (16-byte aligned)", source: Source::Ddi("fltkernel") },
    Emulated { dll: "fltmgr.sys", function: "FltFreePoolAlignedWithTag", notes: "≤ APC; tag must match", source: Source::Ddi("fltkernel") },
];
