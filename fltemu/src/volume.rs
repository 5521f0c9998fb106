//! Filter Manager's volume, instance and filter objects as the driver reaches them
//! (FltGetVolumeFromInstance / FromFileObject / FromName, FltGetFilterFromInstance,
//! FltObjectReference / FltObjectDereference — each reference the driver takes must be dropped,
//! checked at unload like contexts), and the per-volume and per-file queries of the samples:
//! FltGetVolumeProperties, FltGetFileSystemType, FltIsVolumeWritable, FltIsDirectory,
//! FltSupportsStreamHandleContexts, FltGetIrpName.

use std::sync::PoisonError;
use crate::catalog::{Emulated, Source};
use crate::exec::{APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::objects::{self, ObjectKind, Table};
use crate::state::{self, status, FILTER_HANDLE};

/// References the driver holds, per object handle.
static REFERENCES: Table<isize, (ObjectKind, i64)> = Table::new();

/// Forgets every reference (a new emulator loads).
pub fn reset() {
    REFERENCES.clear();
}

/// References not dropped, per kind.
pub fn outstanding() -> Vec<(ObjectKind, usize)> {
    let count = |kind| usize::try_from(REFERENCES.with(|t| t.values().filter(|(k, _)| *k == kind).map(|(_, n)| (*n).max(0)).sum::<i64>())).unwrap_or(0);
    vec![(ObjectKind::VolumeReference, count(ObjectKind::VolumeReference)), (ObjectKind::InstanceReference, count(ObjectKind::InstanceReference))]
}

/// What kind of Filter Manager object `handle` is (None: not one).
fn kind_of(handle: isize) -> Option<ObjectKind> {
    let inner = state::current()?;
    if inner.volume_of_handle(handle).is_some() {
        Some(ObjectKind::VolumeReference)
    } else if inner.instances.read().unwrap_or_else(PoisonError::into_inner).contains_key(&handle) {
        Some(ObjectKind::InstanceReference)
    } else if handle == FILTER_HANDLE {
        // Filter references are counted with the instance ones (both block unload).
        Some(ObjectKind::InstanceReference)
    } else {
        None
    }
}

/// A reference wild.rs's enumerations hand out (FltObjectDereference drops it).
pub fn add_reference(handle: isize, kind: ObjectKind) {
    take_reference(handle, kind);
}

fn take_reference(handle: isize, kind: ObjectKind) {
    REFERENCES.with(|t| t.entry(handle).or_insert((kind, 0)).1 += 1);
}

fn put<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: the caller's out pointer (each DDI's contract).
        unsafe { out.write_unaligned(value) };
    }
}

/// The volume index of an instance handle.
fn instance_volume(instance: isize) -> Option<usize> {
    state::current()?.instances.read().unwrap_or_else(PoisonError::into_inner).get(&instance).map(|i| i.volume)
}

/// `FltGetVolumeFromInstance` (fltkernel.h; ≤ APC): a referenced volume; the caller must
/// FltObjectDereference it (else ObjectLeaked(VolumeReference) at unload).
extern "win64" fn flt_get_volume_from_instance(instance: isize, volume: *mut isize) -> i32 {
    objects::count("FltGetVolumeFromInstance", APC_LEVEL);
    let Some(index) = instance_volume(instance) else {
        put(volume, 0);
        return status::INVALID_PARAMETER;
    };
    let handle = state::volume_handle(index);
    take_reference(handle, ObjectKind::VolumeReference);
    put(volume, handle);
    status::SUCCESS
}

/// `FltGetVolumeFromFileObject` (fltkernel.h; ≤ APC): the FILE_OBJECT's volume, referenced.
extern "win64" fn flt_get_volume_from_file_object(_filter: isize, file_object: usize, volume: *mut isize) -> i32 {
    objects::count("FltGetVolumeFromFileObject", APC_LEVEL);
    let index = state::current().and_then(|inner| inner.files.lock(file_object as u64).live.get(&file_object).map(|f| f.volume));
    let Some(index) = index else {
        objects::flag(crate::Violation::InvalidParameter { function: "FltGetVolumeFromFileObject", reason: "not a FILE_OBJECT Filter Manager knows" });
        put(volume, 0);
        return status::INVALID_PARAMETER;
    };
    let handle = state::volume_handle(index);
    take_reference(handle, ObjectKind::VolumeReference);
    put(volume, handle);
    status::SUCCESS
}

/// Reads a UNICODE_STRING's characters.
fn unicode(string: *const windows_sys::Win32::Foundation::UNICODE_STRING) -> Option<String> {
    if string.is_null() {
        return None;
    }
    // SAFETY: the caller's UNICODE_STRING.
    let value = unsafe { string.read_unaligned() };
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    Some(String::from_utf16_lossy(&unsafe { crate::driver_mem::counted_units(value.Buffer, value.Length) }))
}

/// `FltGetVolumeFromName` (fltkernel.h; PASSIVE): by device name (`\Device\HarddiskVolume1`),
/// referenced; an unknown name → STATUS_FLT_VOLUME_NOT_FOUND (0xC01C0014, ntstatus.h).
extern "win64" fn flt_get_volume_from_name(_filter: isize, name: *const windows_sys::Win32::Foundation::UNICODE_STRING, volume: *mut isize) -> i32 {
    objects::count("FltGetVolumeFromName", PASSIVE_LEVEL);
    let wanted = unicode(name).unwrap_or_default().to_lowercase();
    let index = state::current().and_then(|inner| inner.volumes.read().unwrap_or_else(PoisonError::into_inner).iter().position(|v| v.mounted && v.name.to_lowercase() == wanted.trim_end_matches('\\')));
    let Some(index) = index else {
        put(volume, 0);
        return status::FLT_VOLUME_NOT_FOUND;
    };
    let handle = state::volume_handle(index);
    take_reference(handle, ObjectKind::VolumeReference);
    put(volume, handle);
    status::SUCCESS
}

/// FltGetVolumeInstanceFromName's answer (wild.rs): this filter's instance on `volume`,
/// referenced; fltemu attaches one instance per volume, so any instance name names it.
pub fn instance_of_volume(function: &'static str, _filter: usize, volume: usize, _instance_name: *const windows_sys::Win32::Foundation::UNICODE_STRING, instance: *mut usize) -> i32 {
    let found = state::current().and_then(|inner| {
        let index = inner.volume_of_handle(volume.cast_signed())?;
        inner.volumes.read().unwrap_or_else(PoisonError::into_inner).get(index).and_then(|v| v.instance)
    });
    let Some(handle) = found else {
        if volume == 0 {
            objects::flag(crate::Violation::InvalidParameter { function, reason: "a NULL volume (fltemu looks instances up by volume object)" });
        }
        put(instance, 0);
        return 0xC01C_0015_u32.cast_signed(); // STATUS_FLT_INSTANCE_NOT_FOUND
    };
    take_reference(handle, ObjectKind::InstanceReference);
    put(instance, handle.cast_unsigned());
    status::SUCCESS
}

/// `FltGetFilterFromInstance` (fltkernel.h; ≤ APC): the filter, referenced.
extern "win64" fn flt_get_filter_from_instance(instance: isize, filter: *mut isize) -> i32 {
    objects::count("FltGetFilterFromInstance", APC_LEVEL);
    if instance_volume(instance).is_none() {
        put(filter, 0);
        return status::INVALID_PARAMETER;
    }
    take_reference(FILTER_HANDLE, ObjectKind::InstanceReference);
    put(filter, FILTER_HANDLE);
    status::SUCCESS
}

/// `FltObjectReference` (fltkernel.h; ≤ DISPATCH): +1 on a filter, instance or volume;
/// STATUS_FLT_DELETING_OBJECT once it is being torn down (fltemu: not an object any more).
extern "win64" fn flt_object_reference(object: isize) -> i32 {
    objects::count("FltObjectReference", DISPATCH_LEVEL);
    match kind_of(object) {
        Some(kind) => {
            take_reference(object, kind);
            status::SUCCESS
        }
        None => status::FLT_DELETING_OBJECT,
    }
}

/// `FltObjectDereference` (fltkernel.h; ≤ DISPATCH): −1; more than the driver took →
/// ObjectMisuse.
extern "win64" fn flt_object_dereference(object: isize) {
    objects::count("FltObjectDereference", DISPATCH_LEVEL);
    let outcome = REFERENCES.with(|t| match t.get_mut(&object) {
        Some((kind, count)) if *count > 0 => {
            *count -= 1;
            Ok(())
        }
        Some((kind, _)) => Err(*kind),
        None => Err(ObjectKind::VolumeReference),
    });
    if let Err(kind) = outcome {
        objects::misuse("FltObjectDereference", kind, "dereferenced more often than the driver referenced it");
    }
}

/// The name of a volume's file system and whether it is NTFS.
fn file_system(index: usize) -> Option<(i32, String, bool)> {
    let inner = state::current()?;
    let volumes = inner.volumes.read().unwrap_or_else(PoisonError::into_inner);
    let volume = volumes.get(index)?;
    Some((volume.file_system, volume.name.clone(), volume.stream_contexts))
}

/// `FltGetVolumeProperties` (fltkernel.h; ≤ APC): FLT_VOLUME_PROPERTIES (0x48 bytes) followed by
/// the three names; a buffer below 0x48 bytes → STATUS_BUFFER_TOO_SMALL, one too small for the
/// names → STATUS_BUFFER_OVERFLOW with the fixed part filled; `*LengthReturned` = bytes needed.
extern "win64" fn flt_get_volume_properties(volume: isize, properties: usize, length: u32, returned: *mut u32) -> i32 {
    const FIXED: usize = 0x48;
    objects::count("FltGetVolumeProperties", APC_LEVEL);
    let index = state::current().and_then(|inner| inner.volume_of_handle(volume));
    let Some((fs, device, ntfs)) = index.and_then(file_system) else {
        return status::INVALID_PARAMETER;
    };
    let driver = if ntfs && fs == 2 { "\\FileSystem\\Ntfs" } else { "\\FileSystem\\FxFs" };
    let fs_device = if ntfs && fs == 2 { "\\Ntfs" } else { "\\FxFs" };
    let names: Vec<Vec<u16>> = [driver, fs_device, device.as_str()].iter().map(|s| s.encode_utf16().collect()).collect();
    let needed = FIXED + names.iter().map(|n| n.len() * 2).sum::<usize>();
    put(returned, needed as u32);
    let length = length as usize;
    if length < FIXED || properties == 0 {
        return status::BUFFER_TOO_SMALL;
    }
    let mut fixed = [0u8; FIXED];
    fixed[0..4].copy_from_slice(&0x8u32.to_le_bytes()); // FILE_DEVICE_DISK_FILE_SYSTEM
    fixed[0xC..0x10].copy_from_slice(&1u32.to_le_bytes()); // FILE_WORD_ALIGNMENT
    fixed[0x10..0x12].copy_from_slice(&512u16.to_le_bytes()); // SectorSize
    let full = length >= needed;
    let mut at = properties + FIXED;
    for (slot, name) in names.iter().enumerate() {
        let offset = 0x18 + slot * 0x10;
        if full {
            let bytes = (name.len() * 2) as u16;
            fixed[offset..offset + 2].copy_from_slice(&bytes.to_le_bytes());
            fixed[offset + 2..offset + 4].copy_from_slice(&bytes.to_le_bytes());
            fixed[offset + 8..offset + 16].copy_from_slice(&(at as u64).to_le_bytes());
            // SAFETY: the caller's buffer holds `length` ≥ `needed` bytes; copied bytewise, as the
            // buffer (and so each name) may sit at any address.
            unsafe { crate::driver_mem::write_units(at as *mut u16, name) };
            at += name.len() * 2;
        }
    }
    // SAFETY: the caller's buffer holds at least FIXED bytes.
    unsafe { core::ptr::copy_nonoverlapping(fixed.as_ptr(), properties as *mut u8, FIXED) };
    if full { status::SUCCESS } else { status::BUFFER_OVERFLOW }
}

/// `FltGetFileSystemType` (fltkernel.h; ≤ APC): of an instance or a volume.
extern "win64" fn flt_get_file_system_type(object: isize, kind: *mut i32) -> i32 {
    objects::count("FltGetFileSystemType", APC_LEVEL);
    let index = state::current().and_then(|inner| {
        inner.volume_of_handle(object).or_else(|| inner.instances.read().unwrap_or_else(PoisonError::into_inner).get(&object).map(|i| i.volume))
    });
    match index.and_then(file_system) {
        Some((fs, ..)) => {
            put(kind, fs);
            status::SUCCESS
        }
        None => status::INVALID_PARAMETER,
    }
}

/// `FltIsVolumeWritable` (fltkernel.h; ≤ APC): fltemu's volumes are writable.
extern "win64" fn flt_is_volume_writable(volume: isize, writable: *mut u8) -> i32 {
    objects::count("FltIsVolumeWritable", APC_LEVEL);
    if state::current().and_then(|inner| inner.volume_of_handle(volume)).is_none() {
        return status::INVALID_PARAMETER;
    }
    put(writable, 1);
    status::SUCCESS
}

/// `FltIsDirectory` (fltkernel.h; ≤ APC): TRUE for the volume root and paths ending in `\`
/// (fltemu's model has no other directories); an unknown FILE_OBJECT → INVALID_PARAMETER.
extern "win64" fn flt_is_directory(file_object: usize, _instance: isize, directory: *mut u8) -> i32 {
    objects::count("FltIsDirectory", APC_LEVEL);
    let path = state::current().and_then(|inner| inner.files.lock(file_object as u64).live.get(&file_object).map(|f| f.path.clone()));
    let Some(path) = path else {
        put(directory, 0);
        return status::INVALID_PARAMETER;
    };
    put(directory, u8::from(path.is_empty() || path.ends_with('\\')));
    status::SUCCESS
}

/// `FileBasicInformation`, `FileStandardInformation`, `FilePositionInformation`
/// (FILE_INFORMATION_CLASS) and the sizes of their structures (wdm.h / ntifs.h).
const FILE_BASIC_INFORMATION: i32 = 4;
const FILE_STANDARD_INFORMATION: i32 = 5;
const FILE_POSITION_INFORMATION: i32 = 14;
const BASIC_SIZE: u32 = 40;
const STANDARD_SIZE: u32 = 24;
const POSITION_SIZE: u32 = 8;
/// `FILE_ATTRIBUTE_DIRECTORY`, `FILE_ATTRIBUTE_NORMAL`.
const ATTRIBUTE_DIRECTORY: u32 = 0x10;
const ATTRIBUTE_NORMAL: u32 = 0x80;

/// `FltQueryInformationFile` (fltkernel.h; PASSIVE_LEVEL): Basic, Standard and Position
/// information of an open FILE_OBJECT. Sizes come from the stream's contents (rw.rs); fltemu's
/// files have no times, so times are 0 (the DDI: members a file system does not support are 0); one link; Directory and
/// FILE_ATTRIBUTE_DIRECTORY as FltIsDirectory; the position is FILE_OBJECT.CurrentByteOffset.
/// A buffer smaller than the class's structure → STATUS_INFO_LENGTH_MISMATCH and another class
/// → STATUS_INVALID_INFO_CLASS (MS-FSA 2.1.5.12); a dismounted volume → STATUS_VOLUME_DISMOUNTED.
extern "win64" fn flt_query_information_file(instance: isize, file_object: usize, information: *mut u8, length: u32, class: i32, returned: *mut u32) -> i32 {
    objects::count("FltQueryInformationFile", PASSIVE_LEVEL);
    query_information_file(instance, file_object, information, length, class, returned)
}

/// What FltQueryInformationFile answers, without counting a driver call or checking the IRQL:
/// for Filter Manager's own use (FltPerformSynchronousIo of IRP_MJ_QUERY_INFORMATION), so the
/// driver's call statistics show only the calls it made.
pub(crate) fn query_information_file(instance: isize, file_object: usize, information: *mut u8, length: u32, class: i32, returned: *mut u32) -> i32 {
    const FUNCTION: &str = "FltQueryInformationFile";
    put(returned, 0);
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let misuse = |reason| {
        inner.violation(crate::verifier::Violation::InvalidParameter { function: FUNCTION, reason });
        status::INVALID_PARAMETER
    };
    let Some(volume) = instance_volume(instance) else { return misuse("not an instance handle") };
    let file = inner.files.lock(file_object as u64).live.get(&file_object).map(|f| (f.volume, f.state, f.path.clone(), f.object.CurrentByteOffset));
    let Some((file_volume, file_state, path, position)) = file else { return misuse("not an open FILE_OBJECT Filter Manager knows") };
    if !matches!(file_state, state::FileState::Open | state::FileState::CleanedUp) {
        return misuse("FILE_OBJECT not opened (the DDI: the file must be open)");
    }
    if file_volume != volume {
        return misuse("FILE_OBJECT is not on the instance's volume");
    }
    if information.is_null() {
        return misuse("FileInformation is NULL");
    }
    if !inner.volumes.read().unwrap_or_else(PoisonError::into_inner).get(volume).is_some_and(|v| v.mounted) {
        return status::VOLUME_DISMOUNTED;
    }
    let directory = path.is_empty() || path.ends_with('\\');
    let mut bytes = [0u8; 40];
    let size = match class {
        FILE_BASIC_INFORMATION => {
            let attributes = if directory { ATTRIBUTE_DIRECTORY } else { ATTRIBUTE_NORMAL };
            bytes[32..36].copy_from_slice(&attributes.to_le_bytes());
            BASIC_SIZE
        }
        FILE_STANDARD_INFORMATION => {
            // AllocationSize (rounded up to the cluster) and EndOfFile from the stream's contents.
            let end = crate::rw::end_of_file(inner, volume, &path);
            bytes[..8].copy_from_slice(&end.next_multiple_of(4096).to_le_bytes());
            bytes[8..16].copy_from_slice(&end.to_le_bytes());
            bytes[16..20].copy_from_slice(&1u32.to_le_bytes());
            bytes[21] = u8::from(directory);
            STANDARD_SIZE
        }
        FILE_POSITION_INFORMATION => {
            bytes[..8].copy_from_slice(&position.to_le_bytes());
            POSITION_SIZE
        }
        _ => return status::INVALID_INFO_CLASS,
    };
    if length < size {
        return status::INFO_LENGTH_MISMATCH;
    }
    // SAFETY: the caller's buffer holds `length` ≥ `size` bytes (the DDI's contract).
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), information, size as usize) };
    put(returned, size);
    status::SUCCESS
}

/// `FltSupportsStreamHandleContexts` (fltkernel.h; ≤ APC): whether the FILE_OBJECT's file
/// system supports stream-handle contexts (D1; paging files do not, A9).
extern "win64" fn flt_supports_stream_handle_contexts(file_object: usize) -> u8 {
    objects::count("FltSupportsStreamHandleContexts", APC_LEVEL);
    let supported = state::current().is_some_and(|inner| {
        let file = inner.files.lock(file_object as u64).live.get(&file_object).map(|f| (f.paging_file, f.volume));
        file.is_some_and(|(paging, volume)| {
            !paging && inner.volumes.read().unwrap_or_else(PoisonError::into_inner).get(volume).is_some_and(|v| v.stream_contexts)
        })
    });
    u8::from(supported)
}

/// IRP_MJ_* names by major function (wdm.h values 0x00..=0x1B).
const IRP_NAMES: [&str; 28] = [
    "IRP_MJ_CREATE\0", "IRP_MJ_CREATE_NAMED_PIPE\0", "IRP_MJ_CLOSE\0", "IRP_MJ_READ\0", "IRP_MJ_WRITE\0", "IRP_MJ_QUERY_INFORMATION\0",
    "IRP_MJ_SET_INFORMATION\0", "IRP_MJ_QUERY_EA\0", "IRP_MJ_SET_EA\0", "IRP_MJ_FLUSH_BUFFERS\0", "IRP_MJ_QUERY_VOLUME_INFORMATION\0",
    "IRP_MJ_SET_VOLUME_INFORMATION\0", "IRP_MJ_DIRECTORY_CONTROL\0", "IRP_MJ_FILE_SYSTEM_CONTROL\0", "IRP_MJ_DEVICE_CONTROL\0",
    "IRP_MJ_INTERNAL_DEVICE_CONTROL\0", "IRP_MJ_SHUTDOWN\0", "IRP_MJ_LOCK_CONTROL\0", "IRP_MJ_CLEANUP\0", "IRP_MJ_CREATE_MAILSLOT\0",
    "IRP_MJ_QUERY_SECURITY\0", "IRP_MJ_SET_SECURITY\0", "IRP_MJ_POWER\0", "IRP_MJ_SYSTEM_CONTROL\0", "IRP_MJ_DEVICE_CHANGE\0",
    "IRP_MJ_QUERY_QUOTA\0", "IRP_MJ_SET_QUOTA\0", "IRP_MJ_PNP\0",
];

/// `FltGetIrpName` (fltkernel.h; any IRQL): a static name; Filter Manager's own negative
/// majors and unknown values give "IRP_MJ_UNKNOWN" here.
extern "win64" fn flt_get_irp_name(major: u8) -> *const u8 {
    objects::count("FltGetIrpName", 15);
    IRP_NAMES.get(usize::from(major)).copied().unwrap_or("IRP_MJ_UNKNOWN\0").as_ptr()
}

/// fltmgr.sys exports of this module.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "FltGetVolumeFromInstance" => flt_get_volume_from_instance as *const () as usize,
        "FltGetVolumeFromFileObject" => flt_get_volume_from_file_object as *const () as usize,
        "FltGetVolumeFromName" => flt_get_volume_from_name as *const () as usize,
        "FltGetFilterFromInstance" => flt_get_filter_from_instance as *const () as usize,
        "FltObjectReference" => flt_object_reference as *const () as usize,
        "FltObjectDereference" => flt_object_dereference as *const () as usize,
        "FltGetVolumeProperties" => flt_get_volume_properties as *const () as usize,
        "FltGetFileSystemType" => flt_get_file_system_type as *const () as usize,
        "FltIsVolumeWritable" => flt_is_volume_writable as *const () as usize,
        "FltIsDirectory" => flt_is_directory as *const () as usize,
        "FltQueryInformationFile" => flt_query_information_file as *const () as usize,
        "FltSupportsStreamHandleContexts" => flt_supports_stream_handle_contexts as *const () as usize,
        "FltGetIrpName" => flt_get_irp_name as *const () as usize,
        _ => return None,
    })
}

const fn flt(function: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "fltmgr.sys", function, notes, source: Source::Ddi("fltkernel") }
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    flt("FltGetVolumeFromInstance", "≤ APC; a referenced volume: not FltObjectDereference'd by unload → ObjectLeaked(VolumeReference); unknown instance → INVALID_PARAMETER"),
    flt("FltGetVolumeFromFileObject", "≤ APC; the FILE_OBJECT's volume, referenced; unknown FILE_OBJECT → InvalidParameter"),
    flt("FltGetVolumeFromName", "PASSIVE; by device name, referenced; unknown → STATUS_FLT_VOLUME_NOT_FOUND (0xC01C0014); the name's Buffer may be at any address (copied bytewise)"),
    flt("FltGetFilterFromInstance", "≤ APC; the filter, referenced (counted as InstanceReference)"),
    flt("FltObjectReference", "≤ DISPATCH; +1 on a filter, instance or volume; gone → STATUS_FLT_DELETING_OBJECT"),
    flt("FltObjectDereference", "≤ DISPATCH; −1; more than taken → ObjectMisuse"),
    flt("FltGetVolumeProperties", "≤ APC; FLT_VOLUME_PROPERTIES + driver/device/real names; < 0x48 bytes → BUFFER_TOO_SMALL, names not fitting → BUFFER_OVERFLOW; LengthReturned = bytes needed"),
    flt("FltGetFileSystemType", "≤ APC; the mounted volume's FLT_FILESYSTEM_TYPE (instance or volume)"),
    flt("FltIsVolumeWritable", "≤ APC; TRUE"),
    flt("FltIsDirectory", "≤ APC; TRUE for the root and paths ending in `\\`; unknown FILE_OBJECT → INVALID_PARAMETER"),
    flt("FltQueryInformationFile", "PASSIVE; FileBasicInformation (times 0, attributes NORMAL/DIRECTORY), FileStandardInformation (EndOfFile = the stream's contents, AllocationSize rounded up to 4 KiB, 1 link, Directory), FilePositionInformation (CurrentByteOffset); shorter buffer → INFO_LENGTH_MISMATCH, other classes → INVALID_INFO_CLASS (MS-FSA 2.1.5.12); dismounted volume → VOLUME_DISMOUNTED; FILE_OBJECT not open / unknown, NULL buffer → INVALID_PARAMETER + InvalidParameter"),
    flt("FltSupportsStreamHandleContexts", "≤ APC; FALSE on volumes without stream contexts and for paging files (D1, A9)"),
    flt("FltGetIrpName", "any IRQL; static IRP_MJ_* names"),
];
