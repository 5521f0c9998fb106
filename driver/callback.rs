//! The FFI edge of a callback's arguments beyond the related objects (which fltctx reads):
//! FLT_CALLBACK_DATA, the volume name and the paging-file test, through small typed wrappers
//! so that callbacks stay safe.

use alloc::vec::Vec;
use core::marker::PhantomData;

use fltctx::{FileObjects, InstanceObjects};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_FILE_NAME_INFORMATION, FLT_FILE_NAME_NORMALIZED, FLT_FILE_NAME_QUERY_DEFAULT,
    FltGetFileNameInformation, FltGetRequestorProcessId, FltGetVolumeName, FltReleaseFileNameInformation,
};

use crate::kernel::paged_name::PagedName;
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_BUFFER_TOO_SMALL, STATUS_FLT_DO_NOT_ATTACH, STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS, UNICODE_STRING,
};

/// The volume's name, read with the documented two-call pattern (size, then fill).
///
/// # Errors
/// FltGetVolumeName's status, STATUS_FLT_DO_NOT_ATTACH for an oversized name, or
/// STATUS_INSUFFICIENT_RESOURCES.
pub fn volume_name(objects: &InstanceObjects<'_>) -> Result<Vec<u16>, NTSTATUS> {
    let volume = objects.volume();
    let mut needed: u32 = 0;
    let mut empty = UNICODE_STRING { Length: 0, MaximumLength: 0, Buffer: core::ptr::null_mut() };
    // SAFETY: `volume` comes from FLT_RELATED_OBJECTS; a zero-length UNICODE_STRING asks only
    // for the size, written to `needed`.
    let status = unsafe { FltGetVolumeName(volume, &raw mut empty, &raw mut needed) };
    if status != STATUS_BUFFER_TOO_SMALL && status != STATUS_SUCCESS {
        return Err(status);
    }
    let Ok(capacity) = u16::try_from(needed) else { return Err(STATUS_FLT_DO_NOT_ATTACH) };
    let units = capacity / 2;
    let mut name: Vec<u16> = Vec::new();
    name.try_reserve_exact(usize::from(units)).map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
    let capacity = units * 2;
    let mut string = UNICODE_STRING { Length: 0, MaximumLength: capacity, Buffer: name.as_mut_ptr() };
    // SAFETY: the buffer has room for `capacity` bytes as MaximumLength says.
    let status = unsafe { FltGetVolumeName(volume, &raw mut string, core::ptr::null_mut()) };
    if status != STATUS_SUCCESS {
        return Err(status);
    }
    let length = usize::from(string.Length.min(capacity)) / 2;
    // SAFETY: FltGetVolumeName wrote `Length` bytes (<= capacity) of UTF-16 into the buffer.
    unsafe { name.set_len(length) };
    Ok(name)
}

/// `FO_VOLUME_OPEN` (wdm.h): the FILE_OBJECT opened the volume itself, not a file.
const FO_VOLUME_OPEN: u32 = 0x0040_0000;
/// `SL_OPEN_TARGET_DIRECTORY` (wdm.h), in a create's `Iopb->OperationFlags`.
const SL_OPEN_TARGET_DIRECTORY: u8 = 0x04;

/// Whether the FILE_OBJECT is a volume open (`FO_VOLUME_OPEN`): it has no stream of a file, so
/// ctxguard tracks none for it.
#[must_use]
pub fn is_volume_open(objects: &FileObjects<'_>) -> bool {
    // SAFETY: the file object came from Filter Manager for this callback and is open; Flags is
    // set by the I/O manager before the create is sent.
    let flags = unsafe { (*objects.file_object()).Flags };
    flags & FO_VOLUME_OPEN != 0
}

/// Whether the file object is a paging file: no contexts for those (A9).
#[must_use]
pub fn is_paging_file(objects: &FileObjects<'_>) -> bool {
    // SAFETY: the file object came from Filter Manager for this callback; FsRtlIsPagingFile
    // only reads it.
    unsafe { windows_sys::Wdk::Storage::FileSystem::FsRtlIsPagingFile(objects.file_object()) != 0 }
}

/// One operation's FLT_CALLBACK_DATA, valid for as long as the callback runs.
#[derive(Clone, Copy)]
pub struct Operation<'callback> {
    data: *mut FLT_CALLBACK_DATA,
    callback: PhantomData<&'callback FLT_CALLBACK_DATA>,
}

/// The leading members of FLT_PARAMETERS' Create as fltkernel.h lays them out on x64:
/// `FileAttributes` is POINTER_ALIGNMENT, so it sits at 0x10 and ShareAccess at 0x12.
/// windows-sys 0.61's FLT_PARAMETERS_0 omits that alignment (ShareAccess at 0xE, padding in
/// the WDK layout), so its `Create.ShareAccess` is not what the I/O manager wrote.
#[repr(C)]
#[derive(Clone, Copy)]
struct CreateParameters {
    security_context: *const windows_sys::Wdk::Foundation::IO_SECURITY_CONTEXT,
    _options: u32,
    _options_pad: u32,
    _file_attributes: u16,
    share_access: u16,
}

const _: () = assert!(
    core::mem::offset_of!(CreateParameters, _file_attributes) == 0x10
        && core::mem::offset_of!(CreateParameters, share_access) == 0x12
);

/// What a create asked for.
#[derive(Clone, Copy, Debug, Default)]
pub struct CreateRequest {
    /// `DesiredAccess` from the create's security context.
    pub desired_access: u32,
    /// `ShareAccess`.
    pub share_access: u16,
}

impl Operation<'_> {
    /// Wraps the callback's data.
    ///
    /// # Safety
    /// `data` is the FLT_CALLBACK_DATA pointer of the running callback, and the value is used
    /// only during that callback.
    #[must_use]
    pub unsafe fn from_callback(data: *mut FLT_CALLBACK_DATA) -> Self {
        Self { data, callback: PhantomData }
    }

    /// The operation's final status (`IoStatus.Status`), meaningful in a post-operation.
    #[must_use]
    pub fn status(&self) -> NTSTATUS {
        // SAFETY: `data` is valid for the callback (from_callback's contract).
        let data = unsafe { &*self.data };
        // SAFETY: after the operation completed, IoStatus holds its NTSTATUS.
        unsafe { data.IoStatus.Anonymous.Status }
    }

    /// Whether a create carries `SL_OPEN_TARGET_DIRECTORY` (a rename or hard link's target): its
    /// FILE_OBJECT is the target's parent directory while the name query answers the target's
    /// name, so its stream must not be given that name. Call only for IRP_MJ_CREATE.
    #[must_use]
    pub fn is_target_directory_open(&self) -> bool {
        // SAFETY: `data` is valid for the callback.
        let data = unsafe { &*self.data };
        // SAFETY: Iopb is valid for the callback.
        let flags = unsafe { (*data.Iopb).OperationFlags };
        flags & SL_OPEN_TARGET_DIRECTORY != 0
    }

    /// The requestor's process id (`FltGetRequestorProcessId`).
    #[must_use]
    pub fn requestor_pid(&self) -> u32 {
        // SAFETY: `data` is valid for the callback.
        unsafe { FltGetRequestorProcessId(self.data) }
    }

    /// The create's parameters; call only for IRP_MJ_CREATE.
    #[must_use]
    pub fn create_request(&self) -> CreateRequest {
        // SAFETY: `data` is valid for the callback.
        let data = unsafe { &*self.data };
        // SAFETY: Iopb is valid for the callback.
        let parameters = unsafe { &raw const (*data.Iopb).Parameters };
        // SAFETY: for IRP_MJ_CREATE the Create member of the parameter union is the active one,
        // laid out as fltkernel.h does (see `CreateParameters`).
        let create = unsafe { parameters.cast::<CreateParameters>().read_unaligned() };
        let desired_access = if create.security_context.is_null() {
            0
        } else {
            // SAFETY: a create's non-NULL SecurityContext is valid for the callback.
            unsafe { (*create.security_context).DesiredAccess }
        };
        CreateRequest { desired_access, share_access: create.share_access }
    }

    /// The normalized name of the target file (`FltGetFileNameInformation`), copied into
    /// paged pool.
    ///
    /// # Errors
    /// The name query's failure status, or STATUS_INSUFFICIENT_RESOURCES for the copy.
    pub fn normalized_name(&self) -> Result<PagedName, NTSTATUS> {
        let mut information: *mut FLT_FILE_NAME_INFORMATION = core::ptr::null_mut();
        // SAFETY: `data` is valid for the callback; `information` is a valid out pointer.
        let status = unsafe {
            FltGetFileNameInformation(self.data, FLT_FILE_NAME_NORMALIZED | FLT_FILE_NAME_QUERY_DEFAULT, &raw mut information)
        };
        if information.is_null() {
            return Err(if status == STATUS_SUCCESS { STATUS_INSUFFICIENT_RESOURCES } else { status });
        }
        let result = if status == STATUS_SUCCESS {
            // SAFETY: a successful query returns a referenced, valid name information block.
            let name = unsafe { &(*information).Name };
            let units = if name.Length == 0 || name.Buffer.is_null() {
                &[][..]
            } else {
                // SAFETY: Name.Buffer holds Name.Length bytes of UTF-16 while the block is referenced.
                unsafe { core::slice::from_raw_parts(name.Buffer, usize::from(name.Length / 2)) }
            };
            PagedName::copy_from(units)
        } else {
            Err(status)
        };
        // SAFETY: gives back the reference FltGetFileNameInformation returned, once.
        unsafe { FltReleaseFileNameInformation(information) };
        result
    }
}
