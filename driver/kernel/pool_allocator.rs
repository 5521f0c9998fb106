//! The global allocator: non-paged, no-execute pool from `ExAllocatePool2`, tagged with ours.
//!
//! Callers use the fallible `try_reserve` APIs so that an exhausted pool becomes
//! `STATUS_INSUFFICIENT_RESOURCES`, not a panic.

use core::alloc::{GlobalAlloc, Layout};
use windows_sys::Wdk::System::SystemServices::{ExAllocatePool2, ExFreePoolWithTag};

use super::POOL_TAG;

/// `POOL_FLAG_NON_PAGED` (wdm.h): non-paged, non-executable pool.
const POOL_FLAG_NON_PAGED: u64 = 0x0000_0000_0000_0040;
/// Pool blocks are aligned to `MEMORY_ALLOCATION_ALIGNMENT` (16 on 64-bit Windows).
const POOL_ALIGNMENT: usize = 16;

/// Allocates from non-paged pool with ctxguard's tag.
struct PoolAllocator;

#[global_allocator]
static GLOBAL_ALLOCATOR: PoolAllocator = PoolAllocator;

// SAFETY: ExAllocatePool2 returns blocks aligned to POOL_ALIGNMENT or null; larger alignments are
// refused with null, and dealloc frees exactly what alloc returned, with the same tag.
unsafe impl GlobalAlloc for PoolAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > POOL_ALIGNMENT {
            return core::ptr::null_mut();
        }
        // SAFETY: any size is acceptable to ExAllocatePool2 (it returns null when it cannot
        // satisfy it); the flags select non-paged pool, valid at IRQL <= DISPATCH_LEVEL.
        unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, layout.size(), POOL_TAG).cast() }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a block this allocator returned, so it came from
        // ExAllocatePool2 with POOL_TAG and has not been freed.
        unsafe { ExFreePoolWithTag(pointer.cast(), POOL_TAG) }
    }
}
