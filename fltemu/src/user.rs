//! Emulated user-mode memory: buffers in their own mappings that a test can make invalid.
//!
//! A driver must reach user buffers only through MmCopyMemory or a range secured with
//! MmSecureVirtualMemory and then copied (fltmgr-semantics F4/F5). fltemu keeps every user
//! buffer in a separate mmap with a PROT_NONE guard page after it, so a direct access to an
//! invalid or short buffer faults and is reported as
//! [`Violation::UserBufferTouchedDirectly`](crate::Violation::UserBufferTouchedDirectly).
//! "Unmapped" buffers stay reserved as PROT_NONE (so the address is never reused) but are
//! reported as not mapped to MmSecureVirtualMemory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

const PAGE: usize = 4096;

/// What a user buffer currently allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Readable and writable.
    ReadWrite,
    /// Read only.
    ReadOnly,
    /// Mapped, no access (PROT_NONE).
    NoAccess,
    /// Not mapped (kept reserved as PROT_NONE).
    Unmapped,
}

#[derive(Debug)]
pub(crate) struct Region {
    pub base: usize,
    /// The data pages only; the guard page after them is never accessible.
    pub length: usize,
    pub access: Access,
    pub secured: usize,
    /// Reported as a mapped view of a file (`MEM_MAPPED`) rather than private memory.
    pub mapped_file: bool,
    /// Its owner (a UserBuffer or an operation's buffer) is gone and the range is only a
    /// reservation: the user space may unmap it when it goes. A live buffer set to
    /// [`Access::Unmapped`] is not retired (its owner still mprotects and unmaps it).
    pub retired: bool,
}

/// `MEM_COMMIT` (winnt.h).
pub(crate) const MEM_COMMIT: u32 = 0x1000;
/// `MEM_FREE` (winnt.h).
pub(crate) const MEM_FREE: u32 = 0x1_0000;
/// `MEM_PRIVATE` (winnt.h).
pub(crate) const MEM_PRIVATE: u32 = 0x2_0000;
/// `MEM_MAPPED` (winnt.h).
pub(crate) const MEM_MAPPED: u32 = 0x4_0000;

/// One `MEMORY_BASIC_INFORMATION` answer: the run of equal pages holding an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RegionInfo {
    pub base: usize,
    pub allocation_base: usize,
    pub size: usize,
    pub state: u32,
    pub protect: u32,
    pub kind: u32,
}

/// The registry of user mappings.
#[derive(Debug, Default)]
pub struct UserSpace {
    /// Every user mapping made in this user space, by base address. Addresses are never reused
    /// while the user space lives (a retired range stays reserved), so the regions never overlap
    /// and the one holding an address is the last one starting at or below it.
    pub(crate) regions: Mutex<BTreeMap<usize, Arc<Mutex<Region>>>>,
    /// The user mappings (data and guard pages) of retired operation buffers, start → end:
    /// reservations still user memory to fault classification, so a kept address is a
    /// UserBufferTouchedDirectly however late. Touching ranges share one entry; in practice
    /// the kernel places each buffer's kernel view between two buffers, so every operation
    /// keeps one entry here and one in `retired_views` (about 50 bytes together with the
    /// B-tree's nodes) until the user space goes: 30,000 operations keep about 1.5 MB.
    retired_buffers: Mutex<BTreeMap<usize, usize>>,
    /// The kernel views of retired operation buffers, start → end, kept reserved as PROT_NONE
    /// so a driver holding a system address faults (classified with [`Self::in_retired_view`]);
    /// touching ranges merged as above. Both are unmapped when the user space goes.
    retired_views: Mutex<BTreeMap<usize, usize>>,
}

/// Adds `[base, base + length)` to `ranges` (start → end, none overlapping), merged with the
/// ranges it touches.
fn add_range(ranges: &mut BTreeMap<usize, usize>, base: usize, length: usize) {
    let (mut start, mut end) = (base, base.saturating_add(length));
    if let Some((&before, &before_end)) = ranges.range(..=start).next_back()
        && before_end >= start
    {
        start = before;
        end = end.max(before_end);
        ranges.remove(&before);
    }
    if let Some(after_end) = ranges.remove(&end) {
        end = after_end;
    }
    ranges.insert(start, end);
}

/// Whether one of `ranges` holds `address`.
fn in_ranges(ranges: &BTreeMap<usize, usize>, address: usize) -> bool {
    ranges.range(..=address).next_back().is_some_and(|(_, &end)| address < end)
}

impl Drop for UserSpace {
    /// The emulator is gone, so no driver can hold a stale user address any more: the retired
    /// buffers' reserved ranges are returned (a long test run would otherwise exhaust the
    /// process's mapping count). A buffer still alive keeps its mapping (it unmaps it itself
    /// when it is dropped, see UserBuffer's Drop), even one set to [`Access::Unmapped`].
    fn drop(&mut self) {
        for (_, region) in std::mem::take(self.regions.get_mut().unwrap_or_else(PoisonError::into_inner)) {
            let region = region.lock().unwrap_or_else(PoisonError::into_inner);
            if region.retired {
                // SAFETY: the retired buffer's whole mapping (data pages and guard page), which
                // nothing references any more.
                unsafe { libc::munmap(region.base as *mut libc::c_void, region.length + PAGE) };
            }
        }
        let buffers = std::mem::take(self.retired_buffers.get_mut().unwrap_or_else(PoisonError::into_inner));
        let views = std::mem::take(self.retired_views.get_mut().unwrap_or_else(PoisonError::into_inner));
        for (start, end) in buffers.into_iter().chain(views) {
            // SAFETY: retired operation buffers and kernel views (PROT_NONE reservations,
            // merged only where they touch) that nothing references any more.
            unsafe { libc::munmap(start as *mut libc::c_void, end - start) };
        }
    }
}

impl UserSpace {
    /// Registers a new user mapping.
    pub(crate) fn insert(&self, region: Arc<Mutex<Region>>) {
        let base = region.lock().unwrap_or_else(PoisonError::into_inner).base;
        self.regions.lock().unwrap_or_else(PoisonError::into_inner).insert(base, region);
    }

    /// Records `[base, base + length)` as a retired kernel view, merged with the retired views
    /// it touches.
    pub(crate) fn retire_view(&self, base: usize, length: usize) {
        add_range(&mut self.retired_views.lock().unwrap_or_else(PoisonError::into_inner), base, length);
    }

    /// True when `address` lies in the kernel view of an operation buffer that was retired: a
    /// driver kept an MDL's system address past the end of its operation.
    pub(crate) fn in_retired_view(&self, address: usize) -> bool {
        in_ranges(&self.retired_views.lock().unwrap_or_else(PoisonError::into_inner), address)
    }

    /// Moves the operation buffer registered at `base` (its data pages and guard page) from the
    /// regions to the retired buffer ranges: still user memory to fault classification (listed
    /// there first, so the address is never in neither), no longer an entry of its own.
    pub(crate) fn retire_buffer(&self, base: usize, length: usize) {
        add_range(&mut self.retired_buffers.lock().unwrap_or_else(PoisonError::into_inner), base, length + PAGE);
        self.regions.lock().unwrap_or_else(PoisonError::into_inner).remove(&base);
    }

    /// Whether `address` lies in a retired operation buffer.
    fn in_retired_buffer(&self, address: usize) -> bool {
        in_ranges(&self.retired_buffers.lock().unwrap_or_else(PoisonError::into_inner), address)
    }

    /// The retired kernel view and buffer entries (after merging).
    #[cfg(test)]
    fn retired_entries(&self) -> (usize, usize) {
        let views = self.retired_views.lock().unwrap_or_else(PoisonError::into_inner).len();
        (views, self.retired_buffers.lock().unwrap_or_else(PoisonError::into_inner).len())
    }

    /// The region whose mapping (data pages and guard page) holds `address`.
    fn holding(&self, address: usize) -> Option<Arc<Mutex<Region>>> {
        let regions = self.regions.lock().unwrap_or_else(PoisonError::into_inner);
        let (_, region) = regions.range(..=address).next_back()?;
        let r = region.lock().unwrap_or_else(PoisonError::into_inner);
        (address < r.base + r.length + PAGE).then(|| Arc::clone(region))
    }

    /// True when `address` lies inside any user mapping ever made, guard page included (fault
    /// classification).
    pub fn contains(&self, address: usize) -> bool {
        self.holding(address).is_some() || self.in_retired_buffer(address)
    }

    /// The access of the mapping holding `[address, address + length)`, if one holds it whole.
    pub fn access_of(&self, address: usize, length: usize) -> Option<Access> {
        let end = address.checked_add(length)?;
        let Some(region) = self.holding(address) else {
            // A retired operation buffer: nothing of it is accessible any more.
            return (self.in_retired_buffer(address) && self.in_retired_buffer(end.saturating_sub(1).max(address))).then_some(Access::Unmapped);
        };
        let r = region.lock().unwrap_or_else(PoisonError::into_inner);
        (end <= r.base + r.length).then_some(r.access)
    }

    /// What `ZwQueryVirtualMemory` reports for the page holding `address`: a buffer's data
    /// pages are one region (committed with the buffer's protection, or free once unmapped),
    /// its guard page another (committed, no access); an address in no mapping, or in a retired
    /// operation buffer, is a free page.
    pub(crate) fn query(&self, address: usize) -> RegionInfo {
        const PAGE_NOACCESS: u32 = 0x01;
        const PAGE_READONLY: u32 = 0x02;
        const PAGE_READWRITE: u32 = 0x04;
        let page = address & !(PAGE - 1);
        let free = RegionInfo { base: page, allocation_base: 0, size: PAGE, state: MEM_FREE, protect: PAGE_NOACCESS, kind: 0 };
        let Some(region) = self.holding(address) else { return free };
        let r = region.lock().unwrap_or_else(PoisonError::into_inner);
        let kind = if r.mapped_file { MEM_MAPPED } else { MEM_PRIVATE };
        if address >= r.base + r.length {
            return RegionInfo { base: r.base + r.length, allocation_base: r.base, size: PAGE, state: MEM_COMMIT, protect: PAGE_NOACCESS, kind };
        }
        let protect = match r.access {
            Access::ReadWrite => PAGE_READWRITE,
            Access::ReadOnly => PAGE_READONLY,
            Access::NoAccess => PAGE_NOACCESS,
            Access::Unmapped => return RegionInfo { base: r.base, size: r.length, ..free },
        };
        RegionInfo { base: r.base, allocation_base: r.base, size: r.length, state: MEM_COMMIT, protect, kind }
    }

    /// Marks the mapping holding `address` as secured (+1) or unsecured (-1).
    pub fn secure(&self, address: usize, delta: isize) {
        if let Some(region) = self.holding(address) {
            let mut r = region.lock().unwrap_or_else(PoisonError::into_inner);
            if address < r.base + r.length {
                r.secured = r.secured.saturating_add_signed(delta);
            }
        }
    }
}

/// A buffer in emulated user memory (its own mapping, a guard page after it).
#[derive(Debug)]
pub struct UserBuffer {
    region: Arc<Mutex<Region>>,
    mapping: usize,
    mapping_length: usize,
    address: usize,
    length: usize,
}

// SAFETY: the buffer owns its mapping; access goes through the region mutex or plain copies.
unsafe impl Send for UserBuffer {}
// SAFETY: as above.
unsafe impl Sync for UserBuffer {}

impl UserBuffer {
    /// Maps a buffer of `length` bytes whose first byte is `misalignment` bytes past a 16-byte
    /// boundary; the buffer ends right before a PROT_NONE guard page.
    pub(crate) fn new(space: &UserSpace, length: usize, misalignment: usize) -> Self {
        let data_pages = (length + misalignment + 16).div_ceil(PAGE).max(1);
        let mapping_length = (data_pages + 1) * PAGE;
        // SAFETY: anonymous private mapping chosen by the kernel.
        let mapping = unsafe {
            libc::mmap(core::ptr::null_mut(), mapping_length, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert!(mapping != libc::MAP_FAILED, "fltemu could not map a user buffer");
        let mapping = mapping as usize;
        let guard = mapping + data_pages * PAGE;
        // SAFETY: the last page of the mapping just made becomes the guard page.
        unsafe { libc::mprotect(guard as *mut libc::c_void, PAGE, libc::PROT_NONE) };
        // End the buffer at the guard page; step back to the requested alignment.
        let end_aligned = (guard - length) & !15;
        let address = end_aligned + misalignment;
        let address = if address + length > guard { end_aligned - 16 + misalignment } else { address };
        let region = Arc::new(Mutex::new(Region { base: mapping, length: data_pages * PAGE, access: Access::ReadWrite, secured: 0, mapped_file: false, retired: false }));
        space.insert(Arc::clone(&region));
        Self { region, mapping, mapping_length, address, length }
    }

    /// Reports the buffer's mapping as a mapped view of a file (`MEM_MAPPED`) from now on.
    pub(crate) fn mark_mapped_file(&self) {
        self.region.lock().unwrap_or_else(PoisonError::into_inner).mapped_file = true;
    }

    /// The user-mode address the driver sees.
    #[must_use]
    pub fn address(&self) -> usize {
        self.address
    }

    /// The length passed to the driver.
    #[must_use]
    pub fn len(&self) -> usize {
        self.length
    }

    /// True for a zero-length buffer.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// The current access.
    #[must_use]
    pub fn access(&self) -> Access {
        self.region.lock().unwrap_or_else(PoisonError::into_inner).access
    }

    /// Copies the buffer out (empty when not readable).
    #[must_use]
    pub fn read(&self) -> Vec<u8> {
        if matches!(self.access(), Access::NoAccess | Access::Unmapped) {
            return Vec::new();
        }
        // SAFETY: the buffer lies inside its readable mapping.
        unsafe { std::slice::from_raw_parts(self.address as *const u8, self.length) }.to_vec()
    }

    /// Writes `bytes` at the start of the buffer (truncated to its length); false when the
    /// buffer is not writable.
    #[must_use = "a write to a read-only or invalid buffer does nothing"]
    pub fn write(&self, bytes: &[u8]) -> bool {
        if self.access() != Access::ReadWrite {
            return false;
        }
        let n = bytes.len().min(self.length);
        // SAFETY: the first `n` bytes lie inside the writable mapping.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.address as *mut u8, n) };
        true
    }

    /// Changes the access, as a user thread could (VirtualProtect / VirtualFree) while the
    /// driver works. Refused (false) while the range is secured, which is what
    /// MmSecureVirtualMemory guarantees ("Remarks" of learn.microsoft.com MmSecureVirtualMemory).
    pub fn set_access(&self, access: Access) -> bool {
        let mut region = self.region.lock().unwrap_or_else(PoisonError::into_inner);
        let loosening = matches!(access, Access::ReadWrite) || (access == Access::ReadOnly && region.access != Access::ReadWrite);
        if region.secured > 0 && !loosening {
            return false;
        }
        let protection = match access {
            Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
            Access::ReadOnly => libc::PROT_READ,
            Access::NoAccess | Access::Unmapped => libc::PROT_NONE,
        };
        // SAFETY: changes the protection of this buffer's own data pages (not the guard page).
        unsafe { libc::mprotect(self.mapping as *mut libc::c_void, self.mapping_length - PAGE, protection) };
        region.access = access;
        true
    }
}

impl Drop for UserBuffer {
    fn drop(&mut self) {
        let mut region = self.region.lock().unwrap_or_else(PoisonError::into_inner);
        if Arc::strong_count(&self.region) == 1 {
            // The user space (and its emulator) is gone: no driver can hold the address any
            // more, and nothing else will unmap the range.
            // SAFETY: this buffer's own mapping, which nothing else references.
            unsafe { libc::munmap(self.mapping as *mut libc::c_void, self.mapping_length) };
        } else {
            // Keep the range reserved and inaccessible rather than unmapping it: a driver
            // holding a stale user address must fault, never read someone else's new mapping.
            // SAFETY: this buffer's own mapping.
            unsafe { libc::mprotect(self.mapping as *mut libc::c_void, self.mapping_length, libc::PROT_NONE) };
        }
        region.access = Access::Unmapped;
        region.retired = true;
    }
}

#[cfg(test)]
mod tests {
    use super::{Access, UserBuffer, UserSpace};

    /// Whether `[address, address + length)` is mapped in this process (msync fails with ENOMEM
    /// on an unmapped range).
    fn mapped(address: usize, length: usize) -> bool {
        // SAFETY: msync only inspects the range; MS_ASYNC writes nothing back for anonymous memory.
        unsafe { libc::msync((address & !(super::PAGE - 1)) as *mut libc::c_void, length, libc::MS_ASYNC) == 0 }
    }

    /// A retired operation buffer leaves the regions for the merged retired ranges: still user
    /// memory (a touch is a stale user buffer), inaccessible, one entry for buffers side by side.
    #[test]
    fn retired_operation_buffers_stay_user_memory_in_one_entry() {
        let space = UserSpace::default();
        for base in [0x20_000, 0x22_000, 0x24_000] {
            let region = super::Region { base, length: 0x1000, access: Access::ReadWrite, secured: 0, mapped_file: false, retired: false };
            space.insert(std::sync::Arc::new(std::sync::Mutex::new(region)));
        }
        for base in [0x20_000, 0x24_000, 0x22_000] {
            space.retire_buffer(base, 0x1000);
        }
        assert_eq!(space.regions.lock().unwrap().len(), 0);
        assert_eq!(space.retired_entries(), (0, 1));
        assert!(space.contains(0x20_000) && space.contains(0x25_fff) && !space.contains(0x26_000) && !space.contains(0x1f_fff));
        assert_eq!(space.access_of(0x22_010, 16), Some(Access::Unmapped));
        assert_eq!(space.access_of(0x25_ff0, 0x20), None, "past the retired range");
        assert_eq!(space.query(0x22_010).state, super::MEM_FREE);
        std::mem::take(&mut *space.retired_buffers.lock().unwrap());
    }

    /// A buffer still alive keeps its mapping when the user space goes, even while set to
    /// Unmapped (before, the space unmapped it, and the buffer's later set_access and Drop
    /// changed the protection of a range the kernel may have handed to someone else); the
    /// buffer unmaps it itself when it is dropped after the space. A buffer dropped first is a
    /// retired reservation the space unmaps.
    #[test]
    fn a_live_buffer_keeps_its_mapping_past_its_user_space() {
        let space = UserSpace::default();
        let live = UserBuffer::new(&space, 100, 0);
        let gone = UserBuffer::new(&space, 100, 0);
        let gone_address = gone.address();
        drop(gone);
        assert!(mapped(gone_address, 100), "a retired buffer stays reserved while the space lives");
        assert!(live.set_access(Access::Unmapped));
        drop(space);
        assert!(!mapped(gone_address, 100), "the space returns the retired reservation");
        assert!(mapped(live.address(), 100), "the live buffer's mapping is still its own");
        assert!(live.set_access(Access::ReadWrite));
        assert!(live.write(b"still mine"));
        assert_eq!(&live.read()[..10], b"still mine");
        let address = live.address();
        drop(live);
        assert!(!mapped(address, 100), "the last owner unmaps it");
    }

    /// Retired views are found by any address inside them (not past their end), and touching
    /// views share one entry whichever order they retire in.
    #[test]
    fn retired_views_are_found_and_touching_ones_merged() {
        let space = UserSpace::default();
        space.retire_view(0x10_000, 0x2000);
        space.retire_view(0x14_000, 0x1000);
        assert!(space.in_retired_view(0x10_000) && space.in_retired_view(0x11_fff) && space.in_retired_view(0x14_800));
        assert!(!space.in_retired_view(0x12_000) && !space.in_retired_view(0xf_fff) && !space.in_retired_view(0x15_000));
        assert_eq!(space.retired_entries(), (2, 0));
        space.retire_view(0x12_000, 0x2000);
        assert_eq!(space.retired_entries(), (1, 0), "the gap's view joins both neighbours");
        space.retire_view(0xe_000, 0x2000);
        space.retire_view(0x15_000, 0x1000);
        assert_eq!(space.retired_entries(), (1, 0));
        assert!(space.in_retired_view(0xe_000) && space.in_retired_view(0x15_fff) && !space.in_retired_view(0x16_000));
        // Nothing was mapped at these addresses: forget them rather than unmap someone else's.
        std::mem::take(&mut *space.retired_views.lock().unwrap());
    }
}
