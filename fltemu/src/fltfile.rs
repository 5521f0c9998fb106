//! Files a filter opens itself: FltCreateFile / FltCreateFileEx / FltCreateFileEx2 and FltClose.
//!
//! The create is sent to the instances below the given Instance and to the file system, so the
//! filter does not see its own create (nor the cleanup and close FltClose causes). The handle is
//! a kernel handle the filter must FltClose; FltCreateFileEx(2) also return the FILE_OBJECT with
//! a reference the filter must drop with ObDereferenceObject. The FILE_OBJECT is closed when both
//! are gone. Leaked at unload: handles never closed and references never dropped
//! (`Violation::ObjectLeaked`).

use core::ffi::c_void;

use windows_sys::Wdk::Foundation::FILE_OBJECT;
use windows_sys::Win32::Foundation::UNICODE_STRING;

use crate::catalog::{Emulated, Source};
use crate::exec::PASSIVE_LEVEL;
use crate::objects::{self, ObjectKind, Table};
use crate::state::{self, FileRecord, FileState, Inner, StreamRecord, status};
use crate::verifier::Violation;

/// Open handles: handle → FILE_OBJECT.
static HANDLES: Table<usize, usize> = Table::new();
/// FILE_OBJECTs opened by FltCreateFile*: FILE_OBJECT → (references the driver holds, whether
/// its handle is still open).
static OPENED: Table<usize, (i64, bool)> = Table::new();
/// The next handle value (kernel handles have the top bit set; multiples of 4).
static NEXT_HANDLE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `STATUS_INVALID_HANDLE`, `STATUS_OBJECT_NAME_INVALID`, `STATUS_OBJECT_PATH_NOT_FOUND`
/// (ntstatus.h).
#[allow(clippy::cast_possible_wrap)]
const INVALID_HANDLE: i32 = 0xC000_0008_u32 as i32;
#[allow(clippy::cast_possible_wrap)]
const OBJECT_NAME_INVALID: i32 = 0xC000_0033_u32 as i32;
#[allow(clippy::cast_possible_wrap)]
const OBJECT_PATH_NOT_FOUND: i32 = 0xC000_003A_u32 as i32;

/// Forgets every handle (a new emulator loads).
pub fn reset() {
    HANDLES.clear();
    OPENED.clear();
}

/// Handles and FILE_OBJECT references still held.
pub fn outstanding() -> Vec<(ObjectKind, usize)> {
    let references = OPENED.with(|t| t.values().map(|(refs, _)| usize::try_from(*refs).unwrap_or(0)).sum());
    vec![(ObjectKind::FileHandle, HANDLES.with(|t| t.len())), (ObjectKind::FileObjectReference, references)]
}

/// `CreateDisposition` values (wdm.h, the FltCreateFile page) and the IoStatus.Information a
/// successful create reports (FILE_SUPERSEDED, FILE_OPENED, FILE_CREATED, FILE_OVERWRITTEN).
const FILE_SUPERSEDE: u32 = 0;
const FILE_OPEN: u32 = 1;
const FILE_CREATE: u32 = 2;
const FILE_OPEN_IF: u32 = 3;
const FILE_OVERWRITE: u32 = 4;
const FILE_OVERWRITE_IF: u32 = 5;
const FILE_SUPERSEDED: usize = 0;
const FILE_OPENED: usize = 1;
const FILE_CREATED: usize = 2;
const FILE_OVERWRITTEN: usize = 3;

/// The IoStatus.Information of a failed create (wdm.h; the IoCreateFileEx page's IoStatusBlock,
/// learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iocreatefileex): FILE_EXISTS for
/// a CREATE that found the file, FILE_DOES_NOT_EXIST for an OPEN/OVERWRITE that did not.
const FILE_EXISTS: usize = 4;
const FILE_DOES_NOT_EXIST: usize = 5;

/// What exists of the name `key` (a stream key) on `volume` apart from its own contents entry:
/// Some(true) a directory (the root, or a parent of a stream with contents, open or not),
/// Some(false) a file (another stream of it has contents: a file exists when any of its streams
/// does) or a stream with an open FILE_OBJECT, None nothing. A name with a trailing `\` names a directory only;
/// a named stream (`a.txt:s`) exists only by itself.
fn exists_apart_from_contents(inner: &Inner, volume: usize, key: &str) -> Option<bool> {
    let directory_only = key.ends_with('\\');
    let name = key.trim_end_matches('\\');
    if name.is_empty() {
        return Some(true);
    }
    // An open FILE_OBJECT makes the name a file only when no stream lies below it: a directory
    // someone holds open is still a directory (else a SUPERSEDE would give it contents).
    let open = !directory_only
        && inner.streams.lock(state::name_hash(volume, key)).live.get(&(volume, key.to_owned())).is_some_and(|s| s.open_file_objects > 0);
    let other_streams_count = !directory_only && file_key(name) == name;
    let children = format!("{name}\\");
    let mut found = open.then_some(false);
    for shard in inner.contents.each() {
        for (v, k) in shard.keys() {
            if *v != volume {
                continue;
            }
            if k.starts_with(&children) {
                return Some(true);
            }
            if other_streams_count && k != key && file_key(k) == name {
                found = Some(false);
            }
        }
    }
    found
}

/// What the file system does for `disposition` and `create_options` (the FltCreateFile page's
/// CreateDisposition table) to the stream: Ok(IoStatus.Information), having created (empty
/// contents) or emptied it as the disposition says; Err((status, information)) otherwise (see
/// [`dispose`]). The decision and the create or truncate happen under one lock of the stream's
/// contents shard, so of two racing FILE_CREATEs of a new name one creates it and the other
/// collides. None: not a disposition.
fn apply_disposition(
    inner: &Inner,
    volume: usize,
    path: &str,
    disposition: u32,
    create_options: u32,
) -> Option<Result<usize, (i32, usize)>> {
    if disposition > FILE_OVERWRITE_IF {
        return None;
    }
    let key = (volume, crate::io::stream_key(path));
    // Scanned before the shard is locked (the scan locks every shard in turn); what it finds
    // only ever makes the name exist, and the name's own entry is decided under the lock. A
    // name with contents needs no scan: contents entries are emptied, never removed.
    let present = inner.contents.lock(state::name_hash(key.0, &key.1)).contains_key(&key);
    let elsewhere = if present { None } else { exists_apart_from_contents(inner, volume, &key.1) };
    let request = Request { disposition, create_options };
    Some(dispose(&inner.contents, &inner.contents_bytes, key, elsewhere, request, &|| {
        inner.race_point("create decided its disposition");
    }))
}

/// `FILE_NON_DIRECTORY_FILE` (wdm.h CreateOptions; FILE_DIRECTORY_FILE is io.rs's).
const FILE_NON_DIRECTORY_FILE: u32 = 0x40;
/// `STATUS_FILE_IS_A_DIRECTORY`, `STATUS_NOT_A_DIRECTORY` (ntstatus.h).
const FILE_IS_A_DIRECTORY: i32 = 0xC000_00BA_u32.cast_signed();
const NOT_A_DIRECTORY: i32 = 0xC000_0103_u32.cast_signed();

/// What a create asks of the file system: its CreateDisposition and CreateOptions.
#[derive(Clone, Copy)]
struct Request {
    disposition: u32,
    create_options: u32,
}

/// [`apply_disposition`]'s decision and its create or truncate, in one critical section on the
/// stream's contents shard; a truncation gives its bytes back to `contents_bytes` (Inner's
/// total of all streams' data) inside that section too, so a write elsewhere never sees
/// bytes counted that the stream no longer holds. `decided` runs between the decision and the
/// change (a race point: another create of the name waits for the section to end).
///
/// As file systems decide (the ZwCreateFile page's CreateOptions; the FastFat sample's create
/// path for the directory cases): FILE_DIRECTORY_FILE with FILE_NON_DIRECTORY_FILE, or with a
/// disposition other than CREATE / OPEN / OPEN_IF → STATUS_INVALID_PARAMETER;
/// FILE_NON_DIRECTORY_FILE on a directory → STATUS_FILE_IS_A_DIRECTORY; FILE_DIRECTORY_FILE on a
/// file → STATUS_NOT_A_DIRECTORY; an existing directory with a disposition other than OPEN /
/// OPEN_IF → STATUS_OBJECT_NAME_COLLISION (FILE_EXISTS), the root → STATUS_ACCESS_DENIED; OPEN /
/// OVERWRITE of a missing name → STATUS_OBJECT_NAME_NOT_FOUND (FILE_DOES_NOT_EXIST), CREATE of
/// an existing one → STATUS_OBJECT_NAME_COLLISION (FILE_EXISTS). A directory (an existing one,
/// FILE_DIRECTORY_FILE, a name ending in `\`) never gets contents.
fn dispose(
    contents: &Contents,
    contents_bytes: &std::sync::atomic::AtomicUsize,
    key: (usize, String),
    elsewhere: Option<bool>,
    request: Request,
    decided: &dyn Fn(),
) -> Result<usize, (i32, usize)> {
    use std::collections::hash_map::Entry;
    let Request { disposition, create_options } = request;
    let root = key.1.trim_end_matches('\\').is_empty();
    let directory_name = key.1.ends_with('\\');
    let directory_file = create_options & crate::io::FILE_DIRECTORY_FILE != 0;
    let non_directory_file = create_options & FILE_NON_DIRECTORY_FILE != 0;
    let mut shard = contents.lock(state::name_hash(key.0, &key.1));
    let entry = shard.entry(key);
    let directory = elsewhere == Some(true) && matches!(entry, Entry::Vacant(_));
    let exists = elsewhere.is_some() || matches!(entry, Entry::Occupied(_));
    let opens = matches!(disposition, FILE_OPEN | FILE_OPEN_IF);
    let (outcome, empty) = if directory_file && (non_directory_file || !(opens || disposition == FILE_CREATE)) {
        (Err((status::INVALID_PARAMETER, 0)), false)
    } else if exists && directory && non_directory_file {
        (Err((FILE_IS_A_DIRECTORY, 0)), false)
    } else if exists && !directory && directory_file {
        (Err((NOT_A_DIRECTORY, 0)), false)
    } else if exists && directory && !opens {
        (Err(if root { (status::ACCESS_DENIED, 0) } else { (status::OBJECT_NAME_COLLISION, FILE_EXISTS) }), false)
    } else {
        match (disposition, exists) {
            (FILE_SUPERSEDE, true) => (Ok(FILE_SUPERSEDED), true),
            (FILE_OPEN | FILE_OPEN_IF, true) => (Ok(FILE_OPENED), false),
            (FILE_OVERWRITE | FILE_OVERWRITE_IF, true) => (Ok(FILE_OVERWRITTEN), true),
            (FILE_SUPERSEDE | FILE_CREATE | FILE_OPEN_IF | FILE_OVERWRITE_IF, false) => (Ok(FILE_CREATED), true),
            (FILE_CREATE, true) => (Err((status::OBJECT_NAME_COLLISION, FILE_EXISTS)), false),
            _ => (Err((status::OBJECT_NAME_NOT_FOUND, FILE_DOES_NOT_EXIST)), false),
        }
    };
    decided();
    if empty && !directory && !directory_file && !directory_name {
        match entry {
            Entry::Occupied(mut contents) => {
                contents_bytes.fetch_sub(contents.get().len(), std::sync::atomic::Ordering::AcqRel);
                contents.get_mut().clear();
            }
            Entry::Vacant(slot) => {
                slot.insert(Vec::new());
            }
        }
    }
    outcome
}

/// The emulator's file contents (state.rs's `Inner::contents`).
type Contents = state::Sharded<state::FnvMap<(usize, String), Vec<u8>>>;

/// The file system's open of `path` on `volume` below every filter: a FILE_OBJECT sharing the
/// stream (and file node) with the other opens of that stream.
fn open_below(inner: &Inner, volume: usize, path: &str, desired_access: u32, share_access: u32) -> usize {
    let name: Vec<u16> = path.encode_utf16().collect();
    // SAFETY: FILE_OBJECT is plain data; all-zero is a valid value.
    let mut object: Box<FILE_OBJECT> = Box::new(unsafe { core::mem::zeroed() });
    object.Type = 5; // IO_TYPE_FILE
    object.Size = i16::try_from(size_of::<FILE_OBJECT>()).unwrap_or(0);
    object.FileName = UNICODE_STRING {
        Length: u16::try_from(name.len() * 2).unwrap_or(u16::MAX),
        MaximumLength: u16::try_from(name.len() * 2).unwrap_or(u16::MAX),
        Buffer: name.as_ptr().cast_mut(),
    };
    let file_object = &raw mut *object as usize;
    let key = (volume, crate::io::stream_key(path));
    let file_key = (volume, file_key(&key.1));
    let stream = {
        let mut streams = inner.streams.lock(state::name_hash(key.0, &key.1));
        let record =
            streams.live.entry(key).or_insert_with(|| StreamRecord { fs_context: Box::new([0; 8]), open_file_objects: 0 });
        record.open_file_objects += 1;
        record.fs_context.as_ptr() as usize
    };
    let node = {
        let mut nodes = inner.file_nodes.lock(state::name_hash(file_key.0, &file_key.1));
        let record = nodes
            .live
            .entry(file_key.clone())
            .or_insert_with(|| StreamRecord { fs_context: Box::new([0; 8]), open_file_objects: 0 });
        record.open_file_objects += 1;
        record.fs_context.as_ptr() as usize
    };
    object.FsContext = stream as *mut c_void;
    object.ReadAccess = desired_access & (0x1 | 0x8000_0000) != 0;
    object.WriteAccess = desired_access & (0x2 | 0x4 | 0x4000_0000) != 0;
    object.SharedRead = share_access & 0x1 != 0;
    object.SharedWrite = share_access & 0x2 != 0;
    object.SharedDelete = share_access & 0x4 != 0;
    inner.files.lock(file_object as u64).live.insert(
        file_object,
        FileRecord {
            object,
            name,
            volume,
            path: path.to_owned(),
            stream: Some(stream),
            file_node: Some((node, file_key.1)),
            state: FileState::Open,
            paging_file: false,
        },
    );
    file_object
}

/// The file key of a stream key (as io.rs computes it: the path without `:stream`).
pub(crate) fn file_key(stream_key: &str) -> String {
    let name_start = stream_key.rfind('\\').map_or(0, |at| at + 1);
    match stream_key[name_start..].find(':') {
        Some(colon) => stream_key[..name_start + colon].to_owned(),
        None => stream_key.to_owned(),
    }
}

/// The volume and volume-relative path an OBJECT_ATTRIBUTES names (`\Device\VOL\dir\a.txt`;
/// RootDirectory is not modelled).
fn resolve_name(inner: &Inner, attributes: usize) -> Result<(usize, String), i32> {
    if attributes == 0 {
        return Err(status::INVALID_PARAMETER);
    }
    // The driver's structures are read unaligned: nothing guarantees their alignment, and an
    // aligned read of a misaligned pointer would abort a debug build of fltemu.
    // SAFETY: the caller's OBJECT_ATTRIBUTES: RootDirectory at 8, ObjectName at 16 (x64).
    let root = unsafe { ((attributes + 8) as *const usize).read_unaligned() };
    // SAFETY: as above.
    let name = unsafe { ((attributes + 16) as *const *const UNICODE_STRING).read_unaligned() };
    if root != 0 || name.is_null() {
        return Err(OBJECT_NAME_INVALID);
    }
    // SAFETY: the caller's UNICODE_STRING.
    let name = unsafe { name.read_unaligned() };
    if name.Buffer.is_null() {
        return Err(OBJECT_NAME_INVALID);
    }
    // SAFETY: the caller's UNICODE_STRING: Buffer holds Length bytes (the DDI's contract).
    let units = unsafe { crate::driver_mem::counted_units(name.Buffer, name.Length) };
    let text = String::from_utf16_lossy(&units);
    let lower = text.to_lowercase();
    let volumes = inner.volumes();
    for (index, volume) in volumes.iter().enumerate() {
        let prefix = volume.name.to_lowercase();
        if let Some(rest) = lower.strip_prefix(&prefix)
            && (rest.is_empty() || rest.starts_with('\\'))
        {
            if !volume.mounted {
                return Err(status::VOLUME_DISMOUNTED);
            }
            let path = &text[text.len() - rest.len()..];
            return Ok((index, if path.is_empty() { "\\".to_owned() } else { path.to_owned() }));
        }
    }
    Err(OBJECT_PATH_NOT_FOUND)
}

/// The arguments every FltCreateFile* variant shares.
struct CreateArgs {
    function: &'static str,
    filter: isize,
    instance: isize,
    handle: *mut usize,
    file_object: *mut usize,
    desired_access: u32,
    attributes: usize,
    io_status: *mut [usize; 2],
    share_access: u32,
    disposition: u32,
    create_options: u32,
}

fn create(args: &CreateArgs) -> i32 {
    objects::count(args.function, PASSIVE_LEVEL);
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let misuse = |reason| {
        inner.violation(Violation::InvalidParameter { function: args.function, reason });
        status::INVALID_PARAMETER
    };
    if !args.handle.is_null() {
        // SAFETY: the caller's out parameter (written unaligned: a driver's pointer).
        unsafe { args.handle.write_unaligned(0) };
    }
    if !args.file_object.is_null() {
        // SAFETY: the caller's optional out parameter.
        unsafe { args.file_object.write_unaligned(0) };
    }
    if args.filter != state::FILTER_HANDLE {
        return misuse("Filter is not the filter's handle");
    }
    if args.handle.is_null() || args.io_status.is_null() {
        return misuse("FileHandle and IoStatusBlock are required");
    }
    if args.instance == 0 {
        return misuse("a NULL Instance (the create goes to the top of the stack, to this filter too) is not modelled by fltemu");
    }
    let Some(instance_volume) = inner.instance(args.instance).map(|i| i.volume) else {
        return misuse("Instance is not an instance handle");
    };
    let (volume, path) = match resolve_name(inner, args.attributes) {
        Ok(found) => found,
        Err(result) => return result,
    };
    if volume != instance_volume {
        return misuse("ObjectAttributes names a file on another volume than the Instance's");
    }
    let information = match apply_disposition(inner, volume, &path, args.disposition, args.create_options) {
        Some(Ok(information)) => information,
        Some(Err((failure, information))) => {
            // SAFETY: the caller's IO_STATUS_BLOCK (Status, Information), checked above.
            unsafe { args.io_status.write_unaligned([failure.cast_unsigned() as usize, information]) };
            return failure;
        }
        None => return misuse("CreateDisposition is not FILE_SUPERSEDE, FILE_OPEN, FILE_CREATE, FILE_OPEN_IF, FILE_OVERWRITE or FILE_OVERWRITE_IF"),
    };
    let file_object = open_below(inner, volume, &path, args.desired_access, args.share_access);
    let handle = 0xFFFF_FFFF_8000_0000_usize + (NEXT_HANDLE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1) * 4;
    HANDLES.with(|t| t.insert(handle, file_object));
    let referenced = !args.file_object.is_null();
    OPENED.with(|t| t.insert(file_object, (i64::from(referenced), true)));
    // SAFETY: the caller's out parameters, checked above.
    unsafe { args.handle.write_unaligned(handle) };
    if referenced {
        // SAFETY: as above.
        unsafe { args.file_object.write_unaligned(file_object) };
    }
    // SAFETY: the caller's IO_STATUS_BLOCK (Status, Information).
    unsafe { args.io_status.write_unaligned([0, information]) };
    status::SUCCESS
}

/// `FltCreateFile` (fltkernel.h; PASSIVE): a handle only.
#[allow(clippy::too_many_arguments)]
extern "win64" fn flt_create_file(
    filter: isize,
    instance: isize,
    handle: *mut usize,
    desired_access: u32,
    attributes: usize,
    io_status: *mut [usize; 2],
    _allocation_size: usize,
    _file_attributes: u32,
    share_access: u32,
    disposition: u32,
    create_options: u32,
    _ea_buffer: usize,
    _ea_length: u32,
    _flags: u32,
) -> i32 {
    create(&CreateArgs {
        function: "FltCreateFile",
        filter,
        instance,
        handle,
        file_object: core::ptr::null_mut(),
        desired_access,
        attributes,
        io_status,
        share_access,
        disposition,
        create_options,
    })
}

/// `FltCreateFileEx` (fltkernel.h; PASSIVE): a handle and a referenced FILE_OBJECT.
#[allow(clippy::too_many_arguments)]
extern "win64" fn flt_create_file_ex(
    filter: isize,
    instance: isize,
    handle: *mut usize,
    file_object: *mut usize,
    desired_access: u32,
    attributes: usize,
    io_status: *mut [usize; 2],
    _allocation_size: usize,
    _file_attributes: u32,
    share_access: u32,
    disposition: u32,
    create_options: u32,
    _ea_buffer: usize,
    _ea_length: u32,
    _flags: u32,
) -> i32 {
    create(&CreateArgs {
        function: "FltCreateFileEx",
        filter,
        instance,
        handle,
        file_object,
        desired_access,
        attributes,
        io_status,
        share_access,
        disposition,
        create_options,
    })
}

/// `FltCreateFileEx2` (fltkernel.h; PASSIVE): as FltCreateFileEx; DriverContext (ECPs) is
/// accepted and not modelled.
#[allow(clippy::too_many_arguments)]
extern "win64" fn flt_create_file_ex2(
    filter: isize,
    instance: isize,
    handle: *mut usize,
    file_object: *mut usize,
    desired_access: u32,
    attributes: usize,
    io_status: *mut [usize; 2],
    _allocation_size: usize,
    _file_attributes: u32,
    share_access: u32,
    disposition: u32,
    create_options: u32,
    _ea_buffer: usize,
    _ea_length: u32,
    _flags: u32,
    _driver_context: usize,
) -> i32 {
    create(&CreateArgs {
        function: "FltCreateFileEx2",
        filter,
        instance,
        handle,
        file_object,
        desired_access,
        attributes,
        io_status,
        share_access,
        disposition,
        create_options,
    })
}

/// Closes the FILE_OBJECT below the filter once neither a handle nor a reference holds it.
fn close_if_unused(inner: &Inner, file_object: usize) {
    let unused = OPENED.with(|t| {
        let unused = t.get(&file_object).is_some_and(|(refs, open)| *refs <= 0 && !*open);
        if unused {
            t.remove(&file_object);
        }
        unused
    });
    if unused {
        crate::io::close_file_object(inner, file_object);
    }
}

/// `FltClose` (fltkernel.h; PASSIVE): closes a handle from FltCreateFile*; the cleanup and
/// close go below the filter. A handle that is not open → InvalidParameter, STATUS_INVALID_HANDLE.
extern "win64" fn flt_close(handle: usize) -> i32 {
    objects::count("FltClose", PASSIVE_LEVEL);
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let Some(file_object) = HANDLES.with(|t| t.remove(&handle)) else {
        inner.violation(Violation::InvalidParameter {
            function: "FltClose",
            reason: "not an open handle from FltCreateFile* (closed twice?)",
        });
        return INVALID_HANDLE;
    };
    if let Some(file) = inner.files.lock(file_object as u64).live.get_mut(&file_object) {
        file.state = FileState::CleanedUp;
    }
    OPENED.with(|t| t.get_mut(&file_object).map(|o| o.1 = false));
    close_if_unused(inner, file_object);
    status::SUCCESS
}

/// The FILE_OBJECT of an open FltCreateFile handle (wild.rs's ObReferenceObjectByHandle).
pub fn file_object_of(handle: usize) -> Option<usize> {
    HANDLES.with(|t| t.get(&handle).copied())
}

/// ObReferenceObject of a FILE_OBJECT FltCreateFileEx opened: +1 (true when it is one).
pub fn reference(object: usize) -> bool {
    OPENED.with(|t| t.get_mut(&object).map(|o| o.0 += 1)).is_some()
}

/// ObDereferenceObject of a FILE_OBJECT FltCreateFileEx opened: −1, closing it when neither a
/// reference nor its handle remains; more dereferences than references → ObjectMisuse (true
/// when it is one).
pub fn dereference(function: &'static str, object: usize) -> bool {
    let Some(remaining) = OPENED.with(|t| {
        t.get_mut(&object).map(|o| {
            o.0 -= 1;
            o.0
        })
    }) else {
        return false;
    };
    if remaining < 0 {
        objects::misuse(
            function,
            ObjectKind::FileObjectReference,
            "dereferenced more often than FltCreateFileEx and ObReferenceObject referenced it",
        );
        OPENED.with(|t| t.get_mut(&object).map(|o| o.0 = 0));
    }
    if let Some(inner) = state::current() {
        close_if_unused(inner, object);
    }
    true
}

/// fltmgr.sys exports of this module.
pub fn resolve_flt(name: &str) -> Option<usize> {
    Some(match name {
        "FltCreateFile" => flt_create_file as *const () as usize,
        "FltCreateFileEx" => flt_create_file_ex as *const () as usize,
        "FltCreateFileEx2" => flt_create_file_ex2 as *const () as usize,
        "FltClose" => flt_close as *const () as usize,
        _ => return None,
    })
}

const fn flt(function: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "fltmgr.sys", function, notes, source: Source::Ddi("fltkernel") }
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    flt(
        "FltCreateFile",
        "PASSIVE; `\\Device\\VOL\\path` in ObjectName (RootDirectory not modelled; unknown volume → OBJECT_PATH_NOT_FOUND); opened below the Instance (the filter's callbacks do not see it), sharing the stream with other opens; CreateDisposition honoured against the file table, decided and applied atomically (a stream exists once it has contents, a creating disposition of any create made it, or it has an open; a file exists when any of its streams does; the root and every parent of a stream are directories that exist): OPEN / OVERWRITE of a missing one → OBJECT_NAME_NOT_FOUND with Information FILE_DOES_NOT_EXIST, CREATE of an existing one → OBJECT_NAME_COLLISION with FILE_EXISTS, SUPERSEDE / OVERWRITE(_IF) empty a file; an existing directory opens with OPEN / OPEN_IF only (other dispositions → OBJECT_NAME_COLLISION with FILE_EXISTS; the root → ACCESS_DENIED) and never gets contents; CreateOptions: FILE_DIRECTORY_FILE makes CREATE / OPEN_IF create a directory (no contents; it is not remembered, so a later open of it alone finds nothing), allows only CREATE / OPEN / OPEN_IF (else INVALID_PARAMETER, as with FILE_NON_DIRECTORY_FILE too) and on a file → NOT_A_DIRECTORY; FILE_NON_DIRECTORY_FILE on a directory → FILE_IS_A_DIRECTORY; IoStatus.Information FILE_SUPERSEDED/FILE_OPENED/FILE_CREATED/FILE_OVERWRITTEN, another value → InvalidParameter; ObjectName's Buffer may be at any address (copied bytewise, as x64 Windows has no alignment fault); a handle never FltClose'd → ObjectLeaked(file handle); NULL Instance (top of the stack) not modelled, Instance on another volume, wrong Filter → InvalidParameter",
    ),
    flt(
        "FltCreateFileEx",
        "as FltCreateFile, plus a referenced FILE_OBJECT the caller must ObDereferenceObject (else ObjectLeaked(FILE_OBJECT reference)); the FILE_OBJECT closes when its handle and references are gone",
    ),
    flt("FltCreateFileEx2", "as FltCreateFileEx; DriverContext (ECPs) not modelled"),
    flt(
        "FltClose",
        "PASSIVE; cleanup and close below the filter; a handle not open (closed twice, never opened) → InvalidParameter + STATUS_INVALID_HANDLE",
    ),
];

#[cfg(test)]
mod disposition_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A create of `disposition` without CreateOptions.
    const fn plain(disposition: u32) -> Request {
        Request { disposition, create_options: 0 }
    }

    /// Two FILE_CREATEs of one new name: the second starts while the first has decided to
    /// create (and waits 50 ms there); it must wait for the first to finish and collide
    /// (FILE_EXISTS). Had the decision and the create separate critical sections, the second
    /// would find the name missing too and both would report FILE_CREATED.
    #[test]
    fn of_two_racing_creates_one_creates_and_one_collides() {
        let contents = Contents::default();
        let total = AtomicUsize::new(0);
        let key = (0, "\\race.txt".to_owned());
        let (decided_tx, decided_rx) = std::sync::mpsc::channel();
        let (first, second) = std::thread::scope(|scope| {
            let first = scope.spawn(|| {
                dispose(&contents, &total, key.clone(), None, plain(FILE_CREATE), &|| {
                    decided_tx.send(()).expect("the test waits");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                })
            });
            decided_rx.recv().expect("the first create decides");
            let second = dispose(&contents, &total, key.clone(), None, plain(FILE_CREATE), &|| ());
            (first.join().expect("no panic"), second)
        });
        assert_eq!(first, Ok(FILE_CREATED));
        assert_eq!(second, Err((status::OBJECT_NAME_COLLISION, FILE_EXISTS)));
        assert_eq!(dispose(&contents, &total, key, None, plain(FILE_OPEN), &|| ()), Ok(FILE_OPENED));
    }

    /// An existing directory opens with OPEN / OPEN_IF only: every other disposition collides
    /// (FILE_EXISTS) as on a file system, and nothing gives it contents; the root refuses them
    /// with STATUS_ACCESS_DENIED.
    #[test]
    fn a_directory_opens_but_is_never_superseded_or_overwritten() {
        let contents = Contents::default();
        let total = AtomicUsize::new(0);
        let key = (0, "\\dir".to_owned());
        let root = (0, "\\".to_owned());
        for disposition in [FILE_OPEN, FILE_OPEN_IF] {
            assert_eq!(dispose(&contents, &total, key.clone(), Some(true), plain(disposition), &|| ()), Ok(FILE_OPENED));
            assert_eq!(dispose(&contents, &total, root.clone(), Some(true), plain(disposition), &|| ()), Ok(FILE_OPENED));
        }
        for disposition in [FILE_SUPERSEDE, FILE_CREATE, FILE_OVERWRITE, FILE_OVERWRITE_IF] {
            let collision = Err((status::OBJECT_NAME_COLLISION, FILE_EXISTS));
            assert_eq!(dispose(&contents, &total, key.clone(), Some(true), plain(disposition), &|| ()), collision, "{disposition}");
            let denied = Err((status::ACCESS_DENIED, 0));
            assert_eq!(dispose(&contents, &total, root.clone(), Some(true), plain(disposition), &|| ()), denied, "{disposition}");
        }
        assert!(!contents.lock(state::name_hash(key.0, &key.1)).contains_key(&key));
        assert!(!contents.lock(state::name_hash(root.0, &root.1)).contains_key(&root));
        let missing = Err((status::OBJECT_NAME_NOT_FOUND, FILE_DOES_NOT_EXIST));
        assert_eq!(dispose(&contents, &total, key, None, plain(FILE_OPEN), &|| ()), missing);
    }

    /// FILE_DIRECTORY_FILE creates a directory (no contents) with CREATE / OPEN_IF, refuses the
    /// dispositions that supersede or overwrite, and does not open a file;
    /// FILE_NON_DIRECTORY_FILE does not open a directory; both together are contradictory.
    #[test]
    fn create_options_say_whether_a_directory_or_a_file_is_meant() {
        let contents = Contents::default();
        let total = AtomicUsize::new(0);
        let directory = |disposition| Request { disposition, create_options: crate::io::FILE_DIRECTORY_FILE };
        let new = (0, "\\newdir".to_owned());
        for disposition in [FILE_CREATE, FILE_OPEN_IF] {
            assert_eq!(dispose(&contents, &total, new.clone(), None, directory(disposition), &|| ()), Ok(FILE_CREATED));
        }
        assert!(!contents.lock(state::name_hash(new.0, &new.1)).contains_key(&new), "a directory has no contents");
        for disposition in [FILE_SUPERSEDE, FILE_OVERWRITE, FILE_OVERWRITE_IF] {
            let invalid = Err((status::INVALID_PARAMETER, 0));
            assert_eq!(dispose(&contents, &total, new.clone(), None, directory(disposition), &|| ()), invalid, "{disposition}");
        }
        let both = Request { disposition: FILE_OPEN, create_options: crate::io::FILE_DIRECTORY_FILE | FILE_NON_DIRECTORY_FILE };
        assert_eq!(dispose(&contents, &total, new, Some(true), both, &|| ()), Err((status::INVALID_PARAMETER, 0)));
        let dir = (0, "\\dir".to_owned());
        let file_only = Request { disposition: FILE_OPEN, create_options: FILE_NON_DIRECTORY_FILE };
        assert_eq!(dispose(&contents, &total, dir.clone(), Some(true), file_only, &|| ()), Err((FILE_IS_A_DIRECTORY, 0)));
        assert_eq!(dispose(&contents, &total, dir, Some(true), directory(FILE_OPEN), &|| ()), Ok(FILE_OPENED));
        let file = (0, "\\f.txt".to_owned());
        assert_eq!(dispose(&contents, &total, file.clone(), None, plain(FILE_CREATE), &|| ()), Ok(FILE_CREATED));
        assert_eq!(dispose(&contents, &total, file.clone(), None, directory(FILE_OPEN), &|| ()), Err((NOT_A_DIRECTORY, 0)));
        assert_eq!(dispose(&contents, &total, file, None, file_only, &|| ()), Ok(FILE_OPENED));
    }

    /// Emptying a stream gives its bytes back to the total within dispose's critical section
    /// (before, the caller subtracted them after the lock was dropped, so a write elsewhere in
    /// between saw the emptied bytes still counted against the 256 MiB cap).
    #[test]
    fn an_emptied_stream_gives_its_bytes_back_before_the_lock_is_released() {
        let contents = Contents::default();
        let key = (0, "\\big.txt".to_owned());
        contents.lock(state::name_hash(key.0, &key.1)).insert(key.clone(), vec![7; 1000]);
        for disposition in [FILE_OVERWRITE, FILE_SUPERSEDE, FILE_OVERWRITE_IF] {
            let total = AtomicUsize::new(1000 + 24);
            contents.lock(state::name_hash(key.0, &key.1)).insert(key.clone(), vec![7; 1000]);
            assert!(dispose(&contents, &total, key.clone(), None, plain(disposition), &|| ()).is_ok());
            assert_eq!(total.load(Ordering::Acquire), 24, "{disposition}");
            assert!(contents.lock(state::name_hash(key.0, &key.1))[&key].is_empty());
        }
        let total = AtomicUsize::new(24);
        assert_eq!(dispose(&contents, &total, key, None, plain(FILE_OPEN), &|| ()), Ok(FILE_OPENED));
        assert_eq!(total.load(Ordering::Acquire), 24, "an open empties nothing");
    }
}
