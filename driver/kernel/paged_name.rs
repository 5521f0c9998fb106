//! `PagedName`: a UTF-16 name in paged pool.
//!
//! A stream context lives until its stream is torn down, which for a cached file can be long
//! after the last handle closed; keeping every name in non-paged pool would pin memory a busy
//! server needs. Names are only read at IRQL <= APC_LEVEL (post-create, the registries' visits,
//! event encoding before the queue lock) and freed from cleanup callbacks, which Filter Manager
//! calls at <= APC_LEVEL, so paged pool is legal for them.

use core::ops::Deref;
use core::ptr::NonNull;

use windows_sys::Wdk::System::SystemServices::{ExAllocatePool2, ExFreePoolWithTag};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_INSUFFICIENT_RESOURCES};

use super::POOL_TAG;

/// `POOL_FLAG_PAGED` (wdm.h).
const POOL_FLAG_PAGED: u64 = 0x0000_0000_0000_0100;

/// An owned, immutable UTF-16 name in paged pool.
pub struct PagedName {
    units: NonNull<u16>,
    length: usize,
}

// SAFETY: the name is owned and never mutated after construction; freeing it from another
// thread is what pool memory allows.
unsafe impl Send for PagedName {}
// SAFETY: as above: shared access is read-only.
unsafe impl Sync for PagedName {}

impl PagedName {
    /// Copies `units` into a new paged pool block.
    ///
    /// # Errors
    /// STATUS_INSUFFICIENT_RESOURCES when the pool cannot supply the block.
    pub fn copy_from(units: &[u16]) -> Result<Self, NTSTATUS> {
        if units.is_empty() {
            return Ok(Self { units: NonNull::dangling(), length: 0 });
        }
        let bytes = units.len().checked_mul(2).ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        // SAFETY: a plain pool request; ExAllocatePool2 returns NULL when it cannot satisfy it.
        let block = unsafe { ExAllocatePool2(POOL_FLAG_PAGED, bytes, POOL_TAG) };
        let units_pointer = NonNull::new(block.cast::<u16>()).ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        // SAFETY: the block holds `bytes` = 2 × units.len() bytes, is suitably aligned (pool
        // blocks are 16-byte aligned) and cannot overlap the caller's slice.
        unsafe { core::ptr::copy_nonoverlapping(units.as_ptr(), units_pointer.as_ptr(), units.len()) };
        Ok(Self { units: units_pointer, length: units.len() })
    }
}

impl Deref for PagedName {
    type Target = [u16];

    fn deref(&self) -> &[u16] {
        // SAFETY: `units` points to `length` initialised units we own (or is dangling with
        // length 0, which a slice allows).
        unsafe { core::slice::from_raw_parts(self.units.as_ptr(), self.length) }
    }
}

impl Drop for PagedName {
    fn drop(&mut self) {
        if self.length != 0 {
            // SAFETY: the block came from ExAllocatePool2 with POOL_TAG in `copy_from` and is
            // freed once, here.
            unsafe { ExFreePoolWithTag(self.units.as_ptr().cast(), POOL_TAG) };
        }
    }
}
