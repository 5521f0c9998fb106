//! File data: the contents of every stream, IRP_MJ_READ / IRP_MJ_WRITE issued through the
//! filter's callbacks, FltLockUserBuffer's MDL for them, and FltReadFile / FltWriteFile (I/O a
//! filter issues itself, which goes to the instances below it and the file system only).
//!
//! Parameters are laid out as the FLT_PARAMETERS page documents Read and Write (Length, Key,
//! ByteOffset, ReadBuffer/WriteBuffer, MdlAddress). A user-mode request's buffer is a fltemu
//! user buffer whose pages have a second, "kernel" mapping: FltLockUserBuffer's MDL maps to
//! that one, so MmGetSystemAddressForMdlSafe keeps working in a post-operation callback at
//! DISPATCH_LEVEL, where fltemu makes the user address itself inaccessible (the callback runs
//! in an arbitrary thread context; touching the user address there is
//! `Violation::UserBufferTouchedDirectly`). Paging reads carry IRP_PAGING_IO | IRP_NOCACHE and
//! a kernel buffer described by an MDL Filter Manager built.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_IO_PARAMETER_BLOCK;

use crate::catalog::{Emulated, Source};
use crate::exec::{self, APC_LEVEL, DISPATCH_LEVEL, Irql, PASSIVE_LEVEL};
use crate::io::{self, Pre};
use crate::objects::{self, Table};
use crate::state::{self, CallbackInfo, FileState, Inner, status};
use crate::user::{Access, Region, UserSpace};
use crate::verifier::Violation;
use crate::{EmuError, OpenOptions, Operation};

/// IRP_MJ_READ / IRP_MJ_WRITE (wdm.h).
pub const IRP_MJ_READ: u8 = 0x03;
pub const IRP_MJ_WRITE: u8 = 0x04;
/// Iopb->IrpFlags bits (wdm.h): IRP_NOCACHE, IRP_PAGING_IO, IRP_SYNCHRONOUS_API,
/// IRP_SYNCHRONOUS_PAGING_IO.
const IRP_NOCACHE: u32 = 0x1;
const IRP_PAGING_IO: u32 = 0x2;
const IRP_SYNCHRONOUS_API: u32 = 0x4;
const IRP_SYNCHRONOUS_PAGING_IO: u32 = 0x40;
/// `STATUS_END_OF_FILE` (ntstatus.h).
#[allow(clippy::cast_possible_wrap)]
pub const END_OF_FILE: i32 = 0xC000_0011_u32 as i32;
/// `STATUS_INVALID_USER_BUFFER` (ntstatus.h).
#[allow(clippy::cast_possible_wrap)]
const INVALID_USER_BUFFER: i32 = 0xC000_00E8_u32 as i32;
const PAGE: usize = 4096;

/// How fltemu issues one read or write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoOptions {
    /// Paging I/O: IRP_PAGING_IO | IRP_NOCACHE | IRP_SYNCHRONOUS_PAGING_IO, a kernel-mode
    /// requestor, the buffer a kernel buffer with an MDL; a paging write never extends the file.
    pub paging: bool,
    /// The IRQL of the post-operation callback (None: `post-irql` / the script's override, else
    /// PASSIVE_LEVEL).
    pub post_irql: Option<Irql>,
}

/// What a read or write returned to its requestor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoResult {
    /// IoStatus.Status.
    pub status: i32,
    /// IoStatus.Information (bytes transferred).
    pub information: usize,
    /// For a read, the first `information` bytes of the requestor's buffer after completion.
    pub data: Vec<u8>,
}

/// The buffer a fltemu-issued operation hands the filter, and the kernel view of its pages.
struct OpBuffer<'a> {
    /// The user address (or the kernel buffer, for paging I/O).
    address: usize,
    length: usize,
    /// The same bytes through the kernel view.
    system: usize,
    /// The user mapping (None for a kernel buffer) and the user space it is registered in.
    user: Option<(UserMapping, &'a UserSpace)>,
    /// Owns a kernel buffer.
    _kernel: Option<Box<[u8]>>,
}

struct UserMapping {
    region: Arc<Mutex<Region>>,
    base: usize,
    data_length: usize,
    alias: usize,
}

/// The running fltemu-issued reads and writes: callback data → (buffer, length, its kernel
/// view, whether the buffer is a user address), for FltLockUserBuffer.
static RUNNING: Table<usize, (usize, usize, usize, bool)> = Table::new();
/// MDLs FltLockUserBuffer put into a running operation's parameters: callback data → MDL.
static LOCKED: Table<usize, usize> = Table::new();

/// Forgets the running operations (a new emulator loads). The retired buffers belong to the old
/// emulator's [`UserSpace`], which unmaps them when it is dropped.
pub fn reset() {
    RUNNING.clear();
    LOCKED.clear();
}

impl<'a> OpBuffer<'a> {
    /// A user buffer of `length` bytes in its own shared mapping (guard page after it) plus a
    /// second mapping of the same pages: the kernel view an MDL of it maps to. Always a new
    /// mapping: a retired buffer's addresses are never handed out again (see [`retire`]).
    /// None when the host cannot map one (out of mappings or memory).
    fn user(inner: &'a Inner, length: usize) -> Option<Self> {
        // Overflow-checked: a length near usize::MAX has no page-rounded size.
        let data_length = length.div_ceil(PAGE).max(1).checked_mul(PAGE)?;
        let mapping = Self::map(inner, data_length)?;
        let (address, system) = (mapping.base, mapping.alias);
        Some(Self { address, length, system, user: Some((mapping, &inner.user)), _kernel: None })
    }

    /// A new user buffer mapping of `data_length` bytes, registered in the user space; None
    /// (with whatever was mapped undone) when a host call fails, so the I/O request fails with
    /// STATUS_INSUFFICIENT_RESOURCES instead of fltemu panicking.
    fn map(inner: &Inner, data_length: usize) -> Option<UserMapping> {
        let reserved = data_length.checked_add(PAGE)?;
        // SAFETY: an anonymous reservation chosen by the kernel (data pages + guard page).
        let base = unsafe {
            libc::mmap(core::ptr::null_mut(), reserved, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let release_reservation = || {
            // SAFETY: the reservation made above, not yet handed out.
            unsafe { libc::munmap(base, reserved) };
        };
        // SAFETY: a NUL-terminated name; the descriptor is only used below.
        let fd = unsafe { libc::memfd_create(c"fltemu-user-buffer".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            release_reservation();
            return None;
        }
        // SAFETY: sizes the memory file just created.
        let sized = unsafe { libc::ftruncate(fd, i64::try_from(data_length).unwrap_or(i64::MAX)) };
        let user = if sized == 0 {
            // SAFETY: replaces the data pages of the reservation just made with the shared file.
            unsafe { libc::mmap(base, data_length, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_FIXED, fd, 0) }
        } else {
            libc::MAP_FAILED
        };
        let alias = if user == libc::MAP_FAILED {
            libc::MAP_FAILED
        } else {
            // SAFETY: a second mapping of the same file, placed by the kernel.
            unsafe { libc::mmap(core::ptr::null_mut(), data_length, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) }
        };
        // SAFETY: the mappings keep the file; the descriptor is no longer needed.
        unsafe { libc::close(fd) };
        if alias == libc::MAP_FAILED {
            // The reservation covers the data pages too (MAP_FIXED replaced them in place).
            release_reservation();
            return None;
        }
        let base = base as usize;
        let region =
            Arc::new(Mutex::new(Region { base, length: data_length, access: Access::ReadWrite, secured: 0, mapped_file: false, retired: false }));
        inner.user.insert(Arc::clone(&region));
        Some(UserMapping { region, base, data_length, alias: alias as usize })
    }

    /// A kernel buffer (paging I/O): its own kernel view. None when the host has no memory
    /// for it (an allocation failure would abort the process).
    fn kernel(length: usize) -> Option<Self> {
        let mut buffer = Vec::new();
        buffer.try_reserve_exact(length.max(1)).ok()?;
        buffer.resize(length.max(1), 0u8);
        let mut buffer = buffer.into_boxed_slice();
        let address = buffer.as_mut_ptr() as usize;
        Some(Self { address, length, system: address, user: None, _kernel: Some(buffer) })
    }

    /// Makes the user address reachable (true) or not (false: an arbitrary thread context).
    fn set_user_reachable(&self, reachable: bool) {
        if let Some((user, _)) = &self.user {
            let protection = if reachable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_NONE };
            // SAFETY: this buffer's own data pages.
            unsafe { libc::mprotect(user.base as *mut libc::c_void, user.data_length, protection) };
        }
    }

    /// The buffer's bytes through the kernel view.
    fn bytes(&self) -> &[u8] {
        // SAFETY: the kernel view holds `length` readable bytes while the buffer lives.
        unsafe { std::slice::from_raw_parts(self.system as *const u8, self.length) }
    }

    fn fill(&self, data: &[u8]) {
        let n = data.len().min(self.length);
        // SAFETY: the kernel view holds `length` writable bytes.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), self.system as *mut u8, n) };
    }
}

/// Replaces `[base, base + length)` with an anonymous PROT_NONE reservation: the memory file's
/// pages are released, the address stays taken (a driver holding it faults instead of reaching
/// whatever the kernel would place there next). The flags are the reservation's own (private,
/// anonymous, no MAP_NORESERVE), so the kernel merges adjacent retired ranges and guard pages
/// into few mappings. Should the kernel refuse (out of mappings), the pages are made
/// inaccessible in place instead, which keeps the address just as unavailable.
fn reserve_over(base: usize, length: usize) {
    // SAFETY: replaces a retired buffer's own pages (data or kernel view), which nothing of
    // fltemu reads any more, by a fresh inaccessible reservation at the same address.
    let replaced = unsafe {
        libc::mmap(base as *mut libc::c_void, length, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED, -1, 0)
    };
    if replaced == libc::MAP_FAILED {
        // SAFETY: the same pages, still this buffer's own mapping.
        unsafe { libc::mprotect(base as *mut libc::c_void, length, libc::PROT_NONE) };
    }
}

/// Retires an operation's user buffer for good: reported unmapped first (so from the moment its
/// pages become inaccessible a touch is classified as a stale user buffer), then its data pages
/// and kernel view become PROT_NONE reservations kept until the user space is dropped. The
/// region stays registered, so a later fault on the address is still
/// `Violation::UserBufferTouchedDirectly`.
fn retire(mapping: &UserMapping, space: &UserSpace) {
    {
        let mut region = mapping.region.lock().unwrap_or_else(PoisonError::into_inner);
        region.access = Access::Unmapped;
        region.retired = true;
    }
    reserve_over(mapping.base, mapping.data_length);
    reserve_over(mapping.alias, mapping.data_length);
    space.retire_view(mapping.alias, mapping.data_length);
    space.retire_buffer(mapping.base, mapping.data_length);
}

impl Drop for OpBuffer<'_> {
    /// The operation is over: the user buffer is retired like a dropped [`crate::UserBuffer`]
    /// (inaccessible, reported unmapped, its address never reused); the kernel view becomes
    /// inaccessible too, so a driver that kept the system address faults rather than reading
    /// another operation's memory.
    fn drop(&mut self) {
        if let Some((user, space)) = self.user.take() {
            retire(&user, space);
        }
    }
}

/// The stream key of an open FILE_OBJECT's contents.
fn contents_key(volume: usize, path: &str) -> (usize, String) {
    (volume, io::stream_key(path))
}

/// The contents of the stream `path` on `volume` (empty when never written).
pub fn contents(inner: &Inner, volume: usize, path: &str) -> Option<Vec<u8>> {
    let key = contents_key(volume, path);
    inner.contents.lock(state::name_hash(key.0, &key.1)).get(&key).cloned()
}

/// Replaces the contents of the stream `path` on `volume`.
pub fn set_contents(inner: &Inner, volume: usize, path: &str, bytes: &[u8]) {
    let key = contents_key(volume, path);
    let mut shard = inner.contents.lock(state::name_hash(key.0, &key.1));
    let old = shard.insert(key, bytes.to_vec()).map_or(0, |old| old.len());
    // The host's own data counts towards the total (it is not refused: the cap is for writes);
    // every length change is counted under its shard's lock, so the total never underflows.
    resized(inner, old, bytes.len());
}

/// Accounts a stream's change of length from `old` to `new` bytes in the contents total.
pub(crate) fn resized(inner: &Inner, old: usize, new: usize) {
    if new >= old {
        inner.contents_bytes.fetch_add(new - old, Ordering::AcqRel);
    } else {
        inner.contents_bytes.fetch_sub(old - new, Ordering::AcqRel);
    }
}

/// The file system's read: up to `length` bytes at `offset` (STATUS_END_OF_FILE at or past the
/// end, a short read at the end).
fn fs_read(inner: &Inner, key: &(usize, String), offset: u64, length: usize) -> (i32, Vec<u8>) {
    let shard = inner.contents.lock(state::name_hash(key.0, &key.1));
    let data = shard.get(key).map_or(&[][..], Vec::as_slice);
    let Ok(start) = usize::try_from(offset) else { return (END_OF_FILE, Vec::new()) };
    if start >= data.len() {
        return (END_OF_FILE, Vec::new());
    }
    let end = start.saturating_add(length).min(data.len());
    (status::SUCCESS, data[start..end].to_vec())
}

/// `FILE_WRITE_TO_END_OF_FILE` as a write's ByteOffset (HighPart -1, LowPart 0xFFFFFFFF; the
/// FltWriteFile page): the write starts at the end of the file (an append).
pub const WRITE_TO_END_OF_FILE: i64 = -1;
/// `STATUS_DISK_FULL` (ntstatus.h).
const DISK_FULL: i32 = 0xC000_007F_u32.cast_signed();
/// The most file data fltemu keeps, one stream or all of them together: a write that would
/// take a stream or the total past it fails with STATUS_DISK_FULL rather than have a driver's
/// wild offsets (on one stream or many) allocate the host's memory.
const MAX_CONTENTS: usize = 1 << 28;

/// Where a write's ByteOffset says it starts: None for FILE_WRITE_TO_END_OF_FILE (the end,
/// decided under the contents lock), Err(STATUS_INVALID_PARAMETER) for other negative values
/// (FILE_USE_FILE_POINTER_POSITION needs FO_SYNCHRONOUS_IO, which fltemu's FILE_OBJECTs lack).
fn write_start(offset: i64) -> Result<Option<u64>, i32> {
    if offset == WRITE_TO_END_OF_FILE {
        return Ok(None);
    }
    u64::try_from(offset).map(Some).map_err(|_| status::INVALID_PARAMETER)
}

/// The file system's write of `bytes` at `offset` (None: at the end of the file); a gap before
/// it reads as zeros. Paging writes do not extend the file (what lies past the end is dropped).
/// Returns the bytes written, or STATUS_DISK_FULL past [`MAX_CONTENTS`].
fn fs_write(inner: &Inner, key: &(usize, String), offset: Option<u64>, bytes: &[u8], mode: WriteMode) -> Result<usize, i32> {
    let WriteMode { paging, non_cached } = mode;
    let mut shard = inner.contents.lock(state::name_hash(key.0, &key.1));
    let data = shard.entry(key.clone()).or_default();
    let start = match offset {
        None => data.len(),
        Some(offset) => usize::try_from(offset).unwrap_or(usize::MAX),
    };
    // Non-cached I/O must start on a sector boundary; for an append the start is the end of
    // file, known only here (an explicit offset was checked by the caller).
    if non_cached && !(start as u64).is_multiple_of(SECTOR) {
        return Err(status::INVALID_PARAMETER);
    }
    let bytes = if paging { &bytes[..data.len().saturating_sub(start).min(bytes.len())] } else { bytes };
    if bytes.is_empty() {
        return Ok(0);
    }
    let end = start.checked_add(bytes.len()).filter(|end| *end <= MAX_CONTENTS).ok_or(DISK_FULL)?;
    if data.len() < end {
        let growth = end - data.len();
        inner
            .contents_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |total| total.checked_add(growth).filter(|t| *t <= MAX_CONTENTS))
            .map_err(|_| DISK_FULL)?;
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(bytes);
    Ok(bytes.len())
}

/// How the file system writes: paging I/O (never extends the file), non-cached (sector-aligned).
#[derive(Clone, Copy, Default)]
struct WriteMode {
    paging: bool,
    non_cached: bool,
}

/// A write of the operation's parameters: (status, bytes written).
fn write_at(inner: &Inner, key: &(usize, String), offset: i64, bytes: &[u8], mode: WriteMode) -> (i32, usize) {
    match write_start(offset).and_then(|start| fs_write(inner, key, start, bytes, mode)) {
        Ok(written) => (status::SUCCESS, written),
        Err(failure) => (failure, 0),
    }
}

/// Copies `bytes` to `address` in this process without faulting (a bad driver buffer is
/// refused, as the file system's own probe would): false when not all of it could be written.
fn copy_to(address: usize, bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    let local = libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
    let remote = libc::iovec { iov_base: address as *mut libc::c_void, iov_len: bytes.len() };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    // SAFETY: process_vm_writev reports EFAULT instead of faulting on a bad remote range.
    let written = unsafe { libc::process_vm_writev(pid, &raw const local, 1, &raw const remote, 1, 0) };
    usize::try_from(written).is_ok_and(|n| n == bytes.len())
}

/// Copies `length` bytes from `address` without faulting (None when unreadable).
pub(crate) fn copy_from(address: usize, length: usize) -> Option<Vec<u8>> {
    let mut bytes = vec![0u8; length];
    if length == 0 {
        return Some(bytes);
    }
    let local = libc::iovec { iov_base: bytes.as_mut_ptr().cast(), iov_len: length };
    let remote = libc::iovec { iov_base: address as *mut libc::c_void, iov_len: length };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    // SAFETY: process_vm_readv reports EFAULT instead of faulting on a bad remote range.
    let read = unsafe { libc::process_vm_readv(pid, &raw const local, 1, &raw const remote, 1, 0) };
    usize::try_from(read).is_ok_and(|n| n == length).then_some(bytes)
}

/// The Read/Write parameters (identical layouts in FLT_PARAMETERS).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Params {
    length: u32,
    offset: i64,
    buffer: usize,
    mdl: usize,
}

/// FLT_PARAMETERS' Read and Write members as fltkernel.h lays them out on x64: `Key` is
/// POINTER_ALIGNMENT (8-aligned), so ByteOffset is at 0x10 and MdlAddress at 0x20. (windows-sys
/// 0.61's FLT_PARAMETERS_3/_4 omit that alignment and put ByteOffset at 8, which is not what a
/// driver built with the WDK reads.)
#[repr(C)]
#[derive(Clone, Copy)]
struct RwParameters {
    length: u32,
    _pad: u32,
    key: u32,
    _key_pad: u32,
    byte_offset: i64,
    buffer: usize,
    mdl: usize,
}

const _: () = assert!(
    core::mem::offset_of!(RwParameters, key) == 8
        && core::mem::offset_of!(RwParameters, byte_offset) == 0x10
        && core::mem::offset_of!(RwParameters, mdl) == 0x20
);

/// The Read/Write parameters of `iopb` (Parameters at 0x18).
fn parameters(iopb: *const FLT_IO_PARAMETER_BLOCK) -> *mut RwParameters {
    iopb.cast::<u8>().wrapping_add(core::mem::offset_of!(FLT_IO_PARAMETER_BLOCK, Parameters)).cast_mut().cast()
}

fn params(iopb: *const FLT_IO_PARAMETER_BLOCK) -> Params {
    // SAFETY: the operation's parameter block, alive while it runs (Read and Write share a
    // layout); read unaligned because the block may be one the driver points at.
    let p = unsafe { parameters(iopb).read_unaligned() };
    Params { length: p.length, offset: p.byte_offset, buffer: p.buffer, mdl: p.mdl }
}

/// Parameters.Read/Write.MdlAddress of `iopb` (cbdata.rs's FltFreeCallbackData).
pub(crate) fn mdl_of(iopb: *const FLT_IO_PARAMETER_BLOCK) -> usize {
    params(iopb).mdl
}

/// A filter's own MDL in the operation's parameters that it freed itself (IoFreeMdl) while
/// still attached: Filter Manager uses it (the file system's transfer, the free after the
/// post-operation callback) after it is gone → ObjectMisuse, once per operation.
fn check_swapped_mdl(inner: &Inner, mdl: usize, original: usize, locked: Option<usize>, reported: &mut bool) {
    if *reported || mdl == 0 || mdl == original || Some(mdl) == locked || !crate::mdl::was_freed(mdl) {
        return;
    }
    *reported = true;
    inner.violation(Violation::ObjectMisuse {
        function: "IoFreeMdl",
        kind: crate::objects::ObjectKind::Mdl,
        reason: "the filter freed the MDL it put in the callback data while it was still attached (Filter Manager frees it after the post-operation callback: use after free)",
    });
}

/// Where the file system reads or writes the operation's data: its MDL's kernel view when it
/// has one, else its buffer.
fn target_of(p: Params) -> usize {
    if p.mdl != 0 {
        return crate::mdl::system_view(p.mdl).unwrap_or(0);
    }
    p.buffer
}

/// IRP_MJ_READ (`data` None) or IRP_MJ_WRITE of `data` on `file_object`, through the filter's
/// pre- and post-operation callbacks, then completed to the requestor.
///
/// # Errors
/// [`EmuError::InvalidHandle`] when the FILE_OBJECT is not open (not yet cleaned up, or for
/// paging I/O not closed).
#[allow(clippy::too_many_lines)]
pub fn issue(
    inner: &Inner,
    file_object: usize,
    pid: u32,
    offset: u64,
    length: usize,
    data: Option<&[u8]>,
    options: IoOptions,
) -> Result<IoResult, EmuError> {
    let (volume, path) = {
        let files = inner.files.lock(file_object as u64);
        let file = files.live.get(&file_object).ok_or(EmuError::InvalidHandle)?;
        let open = file.state == FileState::Open || (options.paging && file.state == FileState::CleanedUp);
        if !open {
            return Err(EmuError::InvalidHandle);
        }
        (file.volume, file.path.clone())
    };
    // The I/O manager refuses a read at a negative ByteOffset before any filter sees it (only a
    // write has a negative special value, FILE_WRITE_TO_END_OF_FILE).
    if data.is_none() && offset.cast_signed() < 0 {
        return Ok(IoResult { status: status::INVALID_PARAMETER, information: 0, data: Vec::new() });
    }
    let key = contents_key(volume, &path);
    let major = if data.is_some() { IRP_MJ_WRITE } else { IRP_MJ_READ };
    let (pre_operation, post_operation) =
        if data.is_some() { (Operation::PreWrite, Operation::PostWrite) } else { (Operation::PreRead, Operation::PostRead) };
    // The I/O manager fails a request it cannot get resources for before any filter sees it.
    let buffer = if options.paging { OpBuffer::kernel(length) } else { OpBuffer::user(inner, length) };
    let Some(buffer) = buffer else {
        return Ok(IoResult { status: status::INSUFFICIENT_RESOURCES, information: 0, data: Vec::new() });
    };
    if let Some(bytes) = data {
        buffer.fill(bytes);
    }
    let owned_mdl =
        options.paging.then(|| crate::mdl::build_owned(buffer.address, u32::try_from(length).unwrap_or(u32::MAX), buffer.system));
    let filter = io::filter_for(inner, volume, major);
    let (instance, pre, post) = filter.unwrap_or((0, 0, 0));
    let open_options = OpenOptions { pid, user_mode: !options.paging, ..OpenOptions::default() };
    let mut op = io::build_operation(major, instance, volume, file_object, &open_options);
    let iopb = op.data.Iopb.cast_mut();
    // SAFETY: the parameter block build_operation made for this operation (owned by `op`).
    unsafe {
        (*iopb).IrpFlags =
            if options.paging { IRP_PAGING_IO | IRP_NOCACHE | IRP_SYNCHRONOUS_PAGING_IO } else { IRP_SYNCHRONOUS_API };
    }
    let read = RwParameters {
        length: u32::try_from(length).unwrap_or(u32::MAX),
        _pad: 0,
        key: 0,
        _key_pad: 0,
        // Bit for bit: u64::MAX is FILE_WRITE_TO_END_OF_FILE (HighPart -1, LowPart 0xFFFFFFFF).
        byte_offset: offset.cast_signed(),
        buffer: buffer.address,
        mdl: owned_mdl.unwrap_or(0),
    };
    // SAFETY: as above; Read and Write have the same layout in the FLT_PARAMETERS union.
    unsafe { parameters(iopb).write(read) };
    let data_address = &raw const *op.data as usize;
    inner.callback_data.lock(data_address as u64).insert(data_address, CallbackInfo { file_object, requestor_pid: pid, dirty: false });
    RUNNING.with(|t| t.insert(data_address, (buffer.address, length, buffer.system, buffer.user.is_some())));
    exec::enter(PASSIVE_LEVEL, pid, Operation::Other);
    let before = params(iopb);
    // The pre-callback is called through a trampoline that keeps its return value: after
    // FLT_PREOP_SYNCHRONIZE the post-callback runs at PASSIVE_LEVEL in the requestor's thread.
    let trampoline = if pre == 0 { 0 } else { pre_with_status as *const () as usize };
    REAL_PRE.with(|cell| cell.set(pre));
    PRE_STATUS.with(|cell| cell.set(0));
    let pre_result =
        if filter.is_some() { io::call_pre(inner, &mut op, trampoline, post, pre_operation) } else { Pre::NoCallback };
    let synchronized = PRE_STATUS.with(std::cell::Cell::get) == FLT_PREOP_SYNCHRONIZE;
    let locked = LOCKED.with(|t| t.get(&data_address).copied());
    let after = params(iopb);
    let changed = Params { mdl: if Some(after.mdl) == locked { before.mdl } else { after.mdl }, ..after } != before;
    if changed && !matches!(pre_result, Pre::Complete(_)) && !is_dirty(inner, data_address) {
        inner.violation(Violation::InvalidParameter {
            function: "pre-operation callback",
            reason: "changed the read/write parameters without FltSetCallbackDataDirty",
        });
    }
    let mut swapped_freed = false;
    let (final_status, information) = if let Pre::Complete(result) = pre_result {
        (result, op.data.IoStatus.Information)
    } else {
        // The file system works on the parameters as the filter left them.
        check_swapped_mdl(inner, after.mdl, before.mdl, locked, &mut swapped_freed);
        let target = target_of(after);
        let length = after.length as usize;
        if data.is_some() {
            match copy_from(target, length) {
                Some(bytes) => write_at(inner, &key, after.offset, &bytes, WriteMode { paging: options.paging, non_cached: false }),
                None => (INVALID_USER_BUFFER, 0),
            }
        } else if let Ok(offset) = u64::try_from(after.offset) {
            let (result, bytes) = fs_read(inner, &key, offset, length);
            if copy_to(target, &bytes) { (result, bytes.len()) } else { (INVALID_USER_BUFFER, 0) }
        } else {
            // A filter moved the read to a negative offset: the file system refuses it, as
            // FltReadFile does.
            (status::INVALID_PARAMETER, 0)
        }
    };
    io::set_io_status(&mut op, final_status, information);
    if let Pre::WithCallback(completion) = pre_result {
        let post_irql = if synchronized {
            PASSIVE_LEVEL
        } else {
            options.post_irql.unwrap_or_else(|| crate::knobs::post_irql(PASSIVE_LEVEL))
        };
        // Above APC_LEVEL the callback runs in an arbitrary thread: the requestor's user
        // address is not there (only a locked MDL's kernel view is).
        let arbitrary_thread = post_irql >= DISPATCH_LEVEL;
        if arbitrary_thread {
            buffer.set_user_reachable(false);
        }
        io::call_post(inner, &mut op, post, completion, post_operation, post_irql);
        if arbitrary_thread {
            buffer.set_user_reachable(true);
        }
    }
    // A filter that put its own MDL into the parameters (swapped buffers) has it freed by
    // Filter Manager after its post-operation callback; the original parameters come back.
    let finished = params(iopb);
    check_swapped_mdl(inner, finished.mdl, before.mdl, locked, &mut swapped_freed);
    if finished.mdl != before.mdl
        && Some(finished.mdl) != locked
        && finished.mdl != 0
        && matches!(pre_result, Pre::WithCallback(_))
    {
        crate::mdl::free_swapped(finished.mdl);
    }
    // SAFETY: reading the IoStatus the operation completed with (a post-callback may change it).
    let (final_status, information) = (unsafe { op.data.IoStatus.Anonymous.Status }, op.data.IoStatus.Information);
    // Forgets the callback data (under the pended operations' lock, see pend::end).
    crate::pend::end(inner, data_address);
    RUNNING.with(|t| t.remove(&data_address));
    // Completion: Filter Manager (the I/O manager) frees the MDLs of the operation, the one
    // FltLockUserBuffer made and its own paging MDL.
    if let Some(mdl) = LOCKED.with(|t| t.remove(&data_address)) {
        crate::mdl::free_owned(mdl);
    }
    if let Some(mdl) = owned_mdl {
        crate::mdl::free_owned(mdl);
    }
    if filter.is_some() {
        io::op_done(inner, instance);
    }
    let data = if data.is_none() && final_status >= 0 { buffer.bytes()[..information.min(length)].to_vec() } else { Vec::new() };
    if op.is_retained() {
        // fltemu gave up waiting for the driver to complete the pended operation, so to the
        // driver it is still running and its buffer still valid: kept mapped for good, like the
        // retained frame, rather than retired (a late touch would be a false stale access).
        core::mem::forget(buffer);
    }
    Ok(IoResult { status: final_status, information, data })
}

/// `FLT_PREOP_SYNCHRONIZE` (fltkernel.h).
const FLT_PREOP_SYNCHRONIZE: i32 = 5;

thread_local! {
    /// The driver's pre-operation callback the trampoline calls, and what it returned.
    static REAL_PRE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    static PRE_STATUS: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// Calls this thread's [`REAL_PRE`] with the pre-operation callback's arguments and records its
/// FLT_PREOP_CALLBACK_STATUS.
extern "win64" fn pre_with_status(data: usize, objects: usize, completion: usize) -> i32 {
    let pre = REAL_PRE.with(std::cell::Cell::get);
    // SAFETY: the driver's PFLT_PRE_OPERATION_CALLBACK, set by `issue` just before.
    let callback = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(usize, usize, usize) -> i32>(pre) };
    // SAFETY: the arguments call_pre passes, unchanged.
    let result = unsafe { callback(data, objects, completion) };
    PRE_STATUS.with(|cell| cell.set(result));
    result
}

/// FltLockUserBuffer for a running fltemu-issued read or write: an MDL describing its buffer
/// (probe-and-lock: the user range must allow the access the operation needs), stored in
/// Iopb->Parameters.Read/Write.MdlAddress; Filter Manager frees it at completion. Success
/// without a new MDL when the operation already has one. None: not such an operation.
pub fn lock_user_buffer(data: usize, iopb: *mut FLT_IO_PARAMETER_BLOCK) -> Option<i32> {
    let (address, length, system, user) = RUNNING.with(|t| t.get(&data).copied())?;
    let current = params(iopb);
    if current.mdl != 0 {
        return Some(status::SUCCESS);
    }
    // The filter may have swapped the buffer (then it must lock its own): only the buffer
    // Filter Manager handed out has a known kernel view.
    if current.buffer != address {
        return Some(status::INVALID_PARAMETER);
    }
    if user && let Some(inner) = state::current() {
        // SAFETY: reading the major function of the running operation's parameter block (a
        // byte: any address will do).
        let major = unsafe {
            iopb.cast::<u8>().wrapping_add(core::mem::offset_of!(FLT_IO_PARAMETER_BLOCK, MajorFunction)).read_unaligned()
        };
        // A read writes into the buffer (IoWriteAccess), a write reads it (IoReadAccess).
        let ok = match inner.user.access_of(address, length.max(1)) {
            Some(Access::ReadWrite) => true,
            Some(Access::ReadOnly) => major == IRP_MJ_WRITE,
            _ => false,
        };
        if !ok {
            return Some(status::ACCESS_VIOLATION);
        }
    }
    let mdl = crate::mdl::build_owned(address, u32::try_from(length).unwrap_or(u32::MAX), system);
    LOCKED.with(|t| t.insert(data, mdl));
    // SAFETY: the running operation's parameter block (Read and Write share the layout).
    unsafe { parameters(iopb).cast::<u8>().wrapping_add(core::mem::offset_of!(RwParameters, mdl)).cast::<usize>().write_unaligned(mdl) };
    Some(status::SUCCESS)
}

/// `FltSetCallbackDataDirty` (fltkernel.h; any IRQL ≤ DISPATCH): the filter changed the
/// callback data's parameters.
extern "win64" fn flt_set_callback_data_dirty(data: usize) {
    objects::count("FltSetCallbackDataDirty", DISPATCH_LEVEL);
    if !known_data(data) {
        objects::flag(Violation::InvalidParameter {
            function: "FltSetCallbackDataDirty",
            reason: "not callback data of a running operation",
        });
        return;
    }
    set_dirty(data, true);
}

/// Sets the dirty flag of running callback data (false: not running).
fn set_dirty(data: usize, dirty: bool) -> bool {
    state::current()
        .and_then(|inner| inner.callback_data.lock(data as u64).get_mut(&data).map(|info| info.dirty = dirty))
        .is_some()
}

fn is_dirty(inner: &Inner, data: usize) -> bool {
    inner.callback_data.lock(data as u64).get(&data).is_some_and(|info| info.dirty)
}

/// `FltClearCallbackDataDirty` (fltkernel.h; ≤ DISPATCH).
extern "win64" fn flt_clear_callback_data_dirty(data: usize) {
    objects::count("FltClearCallbackDataDirty", DISPATCH_LEVEL);
    set_dirty(data, false);
}

/// `FltIsCallbackDataDirty` (fltkernel.h; ≤ DISPATCH).
extern "win64" fn flt_is_callback_data_dirty(data: usize) -> u8 {
    objects::count("FltIsCallbackDataDirty", DISPATCH_LEVEL);
    u8::from(state::current().is_some_and(|inner| is_dirty(inner, data)))
}

fn known_data(data: usize) -> bool {
    state::current().is_some_and(|inner| inner.callback_data.lock(data as u64).contains_key(&data))
}

/// `FltIsOperationSynchronous` (fltkernel.h; ≤ DISPATCH): every operation fltemu issues is
/// waited for (IRP_SYNCHRONOUS_API or IRP_SYNCHRONOUS_PAGING_IO for reads and writes; create,
/// cleanup and close are synchronous by nature).
extern "win64" fn flt_is_operation_synchronous(data: usize) -> u8 {
    objects::count("FltIsOperationSynchronous", DISPATCH_LEVEL);
    if !known_data(data) {
        objects::flag(Violation::InvalidParameter {
            function: "FltIsOperationSynchronous",
            reason: "not callback data of a running operation",
        });
        return 0;
    }
    1
}

/// `FLTFL_IO_OPERATION_*` (fltkernel.h).
const FLTFL_IO_OPERATION_NON_CACHED: u32 = 0x1;
const FLTFL_IO_OPERATION_PAGING: u32 = 0x2;
const FLTFL_IO_OPERATION_DO_NOT_UPDATE_BYTE_OFFSET: u32 = 0x4;
const FLTFL_IO_OPERATION_SYNCHRONOUS_PAGING: u32 = 0x8;
const KNOWN_IO_FLAGS: u32 = FLTFL_IO_OPERATION_NON_CACHED
    | FLTFL_IO_OPERATION_PAGING
    | FLTFL_IO_OPERATION_DO_NOT_UPDATE_BYTE_OFFSET
    | FLTFL_IO_OPERATION_SYNCHRONOUS_PAGING;
/// The sector size non-cached I/O must be a multiple of.
const SECTOR: u64 = 512;

/// What FltReadFile / FltWriteFile check before the file system runs: the instance is attached
/// to the FILE_OBJECT's volume, the FILE_OBJECT is open, the flags are known, non-cached I/O is
/// sector-aligned, and the call is synchronous (no callback: asynchronous completion is not
/// modelled). Ok(contents key, offset) or the status to return.
/// The arguments FltReadFile and FltWriteFile share.
#[derive(Clone, Copy)]
struct IssuedIo {
    function: &'static str,
    instance: isize,
    file_object: usize,
    offset: *const i64,
    length: u32,
    buffer: usize,
    flags: u32,
    callback: usize,
}

fn issued_io(io: &IssuedIo) -> Result<((usize, String), i64), i32> {
    let IssuedIo { function, instance, file_object, offset, length, buffer, flags, callback } = *io;
    let Some(inner) = state::current() else { return Err(status::FLT_NOT_INITIALIZED) };
    let misuse = |reason| {
        inner.violation(Violation::InvalidParameter { function, reason });
        Err(status::INVALID_PARAMETER)
    };
    let Some(volume) = inner.instance(instance).map(|i| i.volume) else {
        return misuse("InitiatingInstance is not an instance handle");
    };
    let file = inner.files.lock(file_object as u64).live.get(&file_object).map(|f| (f.volume, f.state, f.path.clone()));
    let Some((file_volume, file_state, path)) = file else { return misuse("not a FILE_OBJECT Filter Manager knows") };
    if file_state != FileState::Open {
        return misuse("FILE_OBJECT not open (pre-create, post-cleanup or closed: the DDI requires an open file)");
    }
    if file_volume != volume {
        return misuse("the instance is not attached to the FILE_OBJECT's volume");
    }
    if flags & !KNOWN_IO_FLAGS != 0 {
        return misuse("unknown FLTFL_IO_OPERATION_* flags");
    }
    if callback != 0 {
        return misuse("asynchronous completion (CallbackRoutine) is not modelled by fltemu");
    }
    if buffer == 0 && length != 0 {
        return misuse("Buffer is NULL");
    }
    if offset.is_null() {
        // FO_SYNCHRONOUS_IO is never set on fltemu's FILE_OBJECTs, so the offset is required.
        return misuse("ByteOffset NULL on a FILE_OBJECT not opened for synchronous I/O");
    }
    // SAFETY: the caller's LARGE_INTEGER (read unaligned: a driver's pointer).
    let offset = unsafe { offset.read_unaligned() };
    // Negative offsets other than a write's FILE_WRITE_TO_END_OF_FILE are refused by the callers.
    let aligned = u64::try_from(offset).map_or(true, |offset| offset % SECTOR == 0);
    if flags & FLTFL_IO_OPERATION_NON_CACHED != 0 && (!aligned || u64::from(length) % SECTOR != 0) {
        return Err(status::INVALID_PARAMETER);
    }
    Ok((contents_key(volume, &path), offset))
}

/// `FltReadFile` (fltkernel.h; ≤ APC): a synchronous read by the filter itself, sent to the
/// instances below it and the file system only (its own callbacks do not see it).
#[allow(clippy::too_many_arguments)]
extern "win64" fn flt_read_file(
    instance: isize,
    file_object: usize,
    offset: *const i64,
    length: u32,
    buffer: *mut u8,
    flags: u32,
    bytes_read: *mut u32,
    callback: usize,
    _context: usize,
) -> i32 {
    objects::count("FltReadFile", APC_LEVEL);
    put(bytes_read, 0);
    let (key, offset) = match issued_io(&IssuedIo {
        function: "FltReadFile",
        instance,
        file_object,
        offset,
        length,
        buffer: buffer as usize,
        flags,
        callback,
    }) {
        Ok(found) => found,
        Err(result) => return result,
    };
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let Ok(offset) = u64::try_from(offset) else { return status::INVALID_PARAMETER };
    let (result, bytes) = fs_read(inner, &key, offset, length as usize);
    if !copy_to(buffer as usize, &bytes) {
        return INVALID_USER_BUFFER;
    }
    put(bytes_read, u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    result
}

/// `FltWriteFile` (fltkernel.h; ≤ APC): as FltReadFile; the file grows as needed (a paging
/// write never extends it).
#[allow(clippy::too_many_arguments)]
extern "win64" fn flt_write_file(
    instance: isize,
    file_object: usize,
    offset: *const i64,
    length: u32,
    buffer: *const u8,
    flags: u32,
    bytes_written: *mut u32,
    callback: usize,
    _context: usize,
) -> i32 {
    objects::count("FltWriteFile", APC_LEVEL);
    put(bytes_written, 0);
    let (key, offset) = match issued_io(&IssuedIo {
        function: "FltWriteFile",
        instance,
        file_object,
        offset,
        length,
        buffer: buffer as usize,
        flags,
        callback,
    }) {
        Ok(found) => found,
        Err(result) => return result,
    };
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let Some(bytes) = copy_from(buffer as usize, length as usize) else { return INVALID_USER_BUFFER };
    let mode = WriteMode {
        paging: flags & FLTFL_IO_OPERATION_PAGING != 0,
        non_cached: flags & FLTFL_IO_OPERATION_NON_CACHED != 0,
    };
    let (result, written) = write_at(inner, &key, offset, &bytes, mode);
    put(bytes_written, u32::try_from(written).unwrap_or(u32::MAX));
    result
}

fn put(out: *mut u32, value: u32) {
    if !out.is_null() {
        // SAFETY: the caller's optional out parameter (any alignment: a driver's pointer).
        unsafe { out.write_unaligned(value) };
    }
}

/// The file system's part of a read or write the filter built itself (FltAllocateCallbackData
/// and FltPerformSynchronousIo): the parameters as the filter set them, on the open FILE_OBJECT
/// `file_object` of `volume`. Returns (status, information).
pub(crate) fn perform_generated(
    inner: &Inner,
    volume: usize,
    file_object: usize,
    iopb: *const FLT_IO_PARAMETER_BLOCK,
    major: u8,
) -> (i32, usize) {
    let file = inner.files.lock(file_object as u64).live.get(&file_object).map(|f| (f.volume, f.state, f.path.clone()));
    let Some((file_volume, FileState::Open, path)) = file else { return (status::INVALID_PARAMETER, 0) };
    if file_volume != volume {
        return (status::INVALID_PARAMETER, 0);
    }
    let key = contents_key(volume, &path);
    let p = params(iopb);
    let target = target_of(p);
    if major == IRP_MJ_WRITE {
        let Some(bytes) = copy_from(target, p.length as usize) else { return (INVALID_USER_BUFFER, 0) };
        return write_at(inner, &key, p.offset, &bytes, WriteMode::default());
    }
    let Ok(offset) = u64::try_from(p.offset) else { return (status::INVALID_PARAMETER, 0) };
    let (result, bytes) = fs_read(inner, &key, offset, p.length as usize);
    if copy_to(target, &bytes) { (result, bytes.len()) } else { (INVALID_USER_BUFFER, 0) }
}

/// The open file's size (FltQueryInformationFile's EndOfFile / AllocationSize).
pub fn end_of_file(inner: &Inner, volume: usize, path: &str) -> u64 {
    let key = contents_key(volume, path);
    inner.contents.lock(state::name_hash(key.0, &key.1)).get(&key).map_or(0, |c| c.len() as u64)
}

/// fltmgr.sys exports of this module.
pub fn resolve_flt(name: &str) -> Option<usize> {
    Some(match name {
        "FltReadFile" => flt_read_file as *const () as usize,
        "FltWriteFile" => flt_write_file as *const () as usize,
        "FltSetCallbackDataDirty" => flt_set_callback_data_dirty as *const () as usize,
        "FltClearCallbackDataDirty" => flt_clear_callback_data_dirty as *const () as usize,
        "FltIsCallbackDataDirty" => flt_is_callback_data_dirty as *const () as usize,
        "FltIsOperationSynchronous" => flt_is_operation_synchronous as *const () as usize,
        _ => return None,
    })
}

const fn flt(function: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "fltmgr.sys", function, notes, source: Source::Ddi("fltkernel") }
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    flt(
        "FltReadFile",
        "≤ APC; synchronous only (a CallbackRoutine → InvalidParameter: not modelled); sent below the filter (its own callbacks do not see it); reads the stream's contents (STATUS_END_OF_FILE at/after the end, short read at the end, *BytesRead); instance not on the FILE_OBJECT's volume, FILE_OBJECT not open (pre-create, post-cleanup), unknown FLTFL_IO_OPERATION_* flags, NULL ByteOffset (no FO_SYNCHRONOUS_IO) → INVALID_PARAMETER + InvalidParameter; NON_CACHED not sector-aligned → INVALID_PARAMETER",
    ),
    flt(
        "FltWriteFile",
        "as FltReadFile; writes the stream's contents (grows it; FLTFL_IO_OPERATION_PAGING never extends it); ByteOffset FILE_WRITE_TO_END_OF_FILE (HighPart -1) appends (NON_CACHED: the end of file must be sector-aligned, else INVALID_PARAMETER), other negative offsets → INVALID_PARAMETER; a write ending past 256 MiB, or taking all streams' data together past 256 MiB → STATUS_DISK_FULL",
    ),
    flt(
        "FltSetCallbackDataDirty",
        "≤ DISPATCH; marks the parameters changed; a pre-read/write that changed Length, ByteOffset, the buffer or the MDL without it (and did not complete the operation) → InvalidParameter",
    ),
    flt("FltClearCallbackDataDirty", "≤ DISPATCH"),
    flt("FltIsCallbackDataDirty", "≤ DISPATCH"),
    flt(
        "FltIsOperationSynchronous",
        "≤ DISPATCH; TRUE: fltemu waits for every operation it issues (IRP_SYNCHRONOUS_API / IRP_SYNCHRONOUS_PAGING_IO on reads and writes); unknown callback data → InvalidParameter",
    ),
];
