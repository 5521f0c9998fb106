//! The I/O side of the emulated Filter Manager: instances, creates, cleanups and closes, built
//! and sequenced like Filter Manager does (fltmgr-semantics E3-E6, A9, B9). Every function here
//! runs on an emulator worker thread, so driver callbacks are called inline.

use core::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use windows_sys::Wdk::Foundation::{FILE_OBJECT, IO_SECURITY_CONTEXT};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FLT_CALLBACK_DATA, FLT_IO_PARAMETER_BLOCK, FLT_RELATED_OBJECTS};
use windows_sys::Win32::Foundation::UNICODE_STRING;

use crate::exec::{self, Irql, PASSIVE_LEVEL};
use crate::pend;
use crate::state::{self, status, CallbackInfo, FileRecord, FileState, Inner, InstanceRecord, StreamRecord, FILTER_HANDLE, INSTANCE_BASE};
use crate::verifier::Violation;
use crate::{EmuError, OpenOptions, Operation};

/// IRP_MJ_CREATE.
pub const IRP_MJ_CREATE: u8 = 0x00;
/// IRP_MJ_CLOSE.
pub const IRP_MJ_CLOSE: u8 = 0x02;
/// IRP_MJ_CLEANUP.
pub const IRP_MJ_CLEANUP: u8 = 0x12;
/// FLT_CALLBACK_DATA flag FLTFL_CALLBACK_DATA_IRP_OPERATION.
const FLTFL_CALLBACK_DATA_IRP_OPERATION: u32 = 0x1;
/// FILE_DEVICE_DISK_FILE_SYSTEM (the volume device type passed to InstanceSetup).
const FILE_DEVICE_DISK_FILE_SYSTEM: u32 = 0x8;

static MANDATORY_UNLOAD: AtomicBool = AtomicBool::new(true);

/// Whether the unload in progress is mandatory (sets the MANDATORY teardown reason, B11).
pub fn unload_is_mandatory() -> bool {
    MANDATORY_UNLOAD.load(Ordering::Relaxed)
}

/// Sets the mandatory flag for the next unload.
pub fn set_unload_mandatory(mandatory: bool) {
    MANDATORY_UNLOAD.store(mandatory, Ordering::Relaxed);
}

/// Runs `call` as a callback of `operation` at `irql`, restoring the thread's previous state.
pub fn as_callback<R>(operation: Operation, irql: Irql, call: impl FnOnce() -> R) -> R {
    let previous_operation = exec::set_operation(operation);
    let previous_irql = exec::set_irql(irql);
    let result = exec::driver_call(call);
    exec::set_irql(previous_irql);
    exec::set_operation(previous_operation);
    result
}

// Boxed: the driver gets its address, which must stay put while the callback runs.
#[allow(clippy::unnecessary_box_returns)]
fn related(instance: isize, volume: usize, file_object: usize) -> Box<FLT_RELATED_OBJECTS> {
    Box::new(FLT_RELATED_OBJECTS {
        Size: u16::try_from(size_of::<FLT_RELATED_OBJECTS>()).unwrap_or(0),
        TransactionContext: 0,
        Filter: FILTER_HANDLE,
        Volume: state::volume_handle(volume),
        Instance: instance,
        FileObject: file_object as *const FILE_OBJECT,
        Transaction: core::ptr::null(),
    })
}

/// Attaches an instance to `volume` and calls InstanceSetup (E6; PASSIVE_LEVEL). Returns whether
/// the filter attached (a failure status from InstanceSetup means "do not attach": no teardown
/// callbacks, link references dropped).
pub fn attach_instance(inner: &Inner, volume: usize, flags: u32) -> bool {
    let Some(setup) = inner.filter().as_ref().filter(|f| f.started).map(|f| f.setup) else { return false };
    let (instance, file_system) = {
        let mut volumes = inner.volumes_mut();
        if volumes[volume].instance.is_some() || !volumes[volume].mounted {
            return false;
        }
        let instance = INSTANCE_BASE + (inner.next_instance.fetch_add(1, Ordering::Relaxed) + 1) * 0x100;
        let record = InstanceRecord { volume, tearing_down: AtomicBool::new(false), in_flight: AtomicUsize::new(0) };
        inner.instances_mut().insert(instance, std::sync::Arc::new(record));
        volumes[volume].instance = Some(instance);
        (instance, volumes[volume].file_system)
    };
    let mut result = status::SUCCESS;
    if setup != 0 {
        let objects = related(instance, volume, 0);
        // SAFETY: `setup` is the driver's PFLT_INSTANCE_SETUP_CALLBACK (Win64 ABI).
        let callback = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(*const FLT_RELATED_OBJECTS, u32, u32, i32) -> i32>(setup) };
        result = as_callback(Operation::InstanceSetup, PASSIVE_LEVEL, || {
            // SAFETY: arguments as the InstanceSetupCallback DDI documents.
            unsafe { callback(&raw const *objects, flags, FILE_DEVICE_DISK_FILE_SYSTEM, file_system) }
        });
    }
    if result >= 0 {
        return true;
    }
    let doomed = inner.unlink_instance(instance);
    inner.instances_mut().remove(&instance);
    inner.volumes_mut()[volume].instance = None;
    inner.finish(doomed);
    false
}

/// Asks InstanceQueryTeardown (E6): no callback registered means manual detach is refused.
pub fn query_teardown(inner: &Inner, instance: isize) -> i32 {
    let callback = inner.filter().as_ref().map_or(0, |f| f.query_teardown);
    let Some(volume) = inner.instance(instance).map(|i| i.volume) else { return status::INVALID_PARAMETER };
    if callback == 0 {
        return status::FLT_DO_NOT_DETACH;
    }
    let objects = related(instance, volume, 0);
    // SAFETY: the driver's PFLT_INSTANCE_QUERY_TEARDOWN_CALLBACK.
    let callback = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(*const FLT_RELATED_OBJECTS, u32) -> i32>(callback) };
    as_callback(Operation::InstanceQueryTeardown, PASSIVE_LEVEL, || {
        // SAFETY: arguments as the DDI documents (flags reserved, 0).
        unsafe { callback(&raw const *objects, 0) }
    })
}

/// Tears an instance down (E6, B9): TeardownStart, TeardownComplete (the instance context is
/// still gettable there), then every link reference of the instance is dropped.
pub fn teardown_instance(inner: &Inner, instance: isize, reason: u32) {
    let Some(record) = inner.instance(instance) else { return };
    // SeqCst pairs with filter_for's increment-then-check: an operation either sees the flag or
    // is counted before the drain below looks.
    record.tearing_down.store(true, Ordering::SeqCst);
    let volume = record.volume;
    let (start, complete) = inner.filter().as_ref().map_or((0, 0), |f| (f.teardown_start, f.teardown_complete));
    let objects = related(instance, volume, 0);
    for (callback, operation) in [(start, Operation::InstanceTeardownStart), (complete, Operation::InstanceTeardownComplete)] {
        if operation == Operation::InstanceTeardownComplete {
            // E6: TeardownComplete comes after the instance's outstanding I/O has drained.
            while record.in_flight.load(Ordering::SeqCst) > 0 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        if callback != 0 {
            // SAFETY: the driver's PFLT_INSTANCE_TEARDOWN_CALLBACK.
            let callback = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(*const FLT_RELATED_OBJECTS, u32)>(callback) };
            as_callback(operation, PASSIVE_LEVEL, || {
                // SAFETY: arguments as the DDI documents.
                unsafe { callback(&raw const *objects, reason) };
            });
        }
    }
    let doomed = inner.unlink_instance(instance);
    inner.instances_mut().remove(&instance);
    {
        let mut volumes = inner.volumes_mut();
        if volumes[volume].instance == Some(instance) {
            volumes[volume].instance = None;
        }
    }
    inner.finish(doomed);
}

/// `SL_OPEN_TARGET_DIRECTORY` (wdm.h): a create that opens the target's parent directory (a
/// rename or link's target), in `Iopb->OperationFlags`.
const SL_OPEN_TARGET_DIRECTORY: u8 = 0x04;
/// `FO_VOLUME_OPEN` (wdm.h): a FILE_OBJECT that opened the volume itself, in `FileObject->Flags`.
const FO_VOLUME_OPEN: u32 = 0x0040_0000;

/// The stream a create opens: the path's, its parent directory's for an
/// SL_OPEN_TARGET_DIRECTORY open (the name query still answers the path), or the volume's
/// (empty key) for a volume open.
fn opened_stream_key(path: &str, options: &OpenOptions) -> String {
    if options.volume_open {
        return String::new();
    }
    if options.open_target_directory {
        let parent = path.rfind('\\').map_or("", |at| &path[..at]);
        return stream_key(if parent.is_empty() { "\\" } else { parent });
    }
    stream_key(path)
}

/// `FILE_DIRECTORY_FILE` (wdm.h CreateOptions).
pub(crate) const FILE_DIRECTORY_FILE: u32 = 0x1;

/// Whether a successful create of `options` leaves its stream existing: a creating disposition
/// (FILE_SUPERSEDE, FILE_CREATE, FILE_OPEN_IF, FILE_OVERWRITE_IF) of a file's stream (not a
/// volume, target-directory or directory open, which name no stream with contents).
fn creates_stream(options: &OpenOptions) -> bool {
    matches!(options.disposition, 0 | 2 | 3 | 5)
        && !options.volume_open
        && !options.open_target_directory
        && options.create_options & FILE_DIRECTORY_FILE == 0
}

/// The file system created the stream of a successful create with a creating disposition if it
/// was missing: it exists from now on (a later FltCreateFile with FILE_OPEN finds it). A name
/// ending in `\` is a directory and gets no contents.
fn record_created(inner: &Inner, key: &(usize, String), options: &OpenOptions) {
    if creates_stream(options) && !key.1.ends_with('\\') {
        inner.contents.lock(state::name_hash(key.0, &key.1)).entry(key.clone()).or_default();
    }
}

/// The stream key of a path: case-insensitive, `::$DATA` is the unnamed stream.
pub(crate) fn stream_key(path: &str) -> String {
    let lower = path.to_lowercase();
    lower.strip_suffix("::$data").map_or(lower.clone(), str::to_owned)
}

/// The file key of a stream key: the path without its `:stream` suffix (every stream of one
/// file shares the file's node, as NTFS's streams share its FCB).
fn file_key(stream_key: &str) -> String {
    let name_start = stream_key.rfind('\\').map_or(0, |at| at + 1);
    match stream_key[name_start..].find(':') {
        Some(colon) => stream_key[..name_start + colon].to_owned(),
        None => stream_key.to_owned(),
    }
}

/// Everything one operation's callbacks see.
pub(crate) struct OpFrame {
    pub(crate) data: Box<FLT_CALLBACK_DATA>,
    _iopb: Box<FLT_IO_PARAMETER_BLOCK>,
    _security: Box<IO_SECURITY_CONTEXT>,
    pub(crate) objects: Box<FLT_RELATED_OBJECTS>,
    /// A pended operation fltemu gave up on: the driver may still hold its callback data, so
    /// the frame's memory is never returned to the allocator.
    retained: bool,
}

impl OpFrame {
    /// Whether fltemu gave up on this pended operation (the driver may still use it).
    pub(crate) const fn is_retained(&self) -> bool {
        self.retained
    }
}

/// Leaves `slot`'s allocation behind (forgotten) and puts a fresh one in its place.
fn retain<T>(slot: &mut Box<T>, fresh: T) {
    core::mem::forget(core::mem::replace(slot, Box::new(fresh)));
}

impl Drop for OpFrame {
    #[allow(clippy::used_underscore_binding)] // the fields are only kept alive, never read
    fn drop(&mut self) {
        if self.retained {
            // SAFETY: plain-data structures; all-zero is a valid value.
            retain(&mut self.data, unsafe { core::mem::zeroed() });
            // SAFETY: as above.
            retain(&mut self._iopb, unsafe { core::mem::zeroed() });
            // SAFETY: as above.
            retain(&mut self._security, unsafe { core::mem::zeroed() });
            // SAFETY: as above.
            retain(&mut self.objects, unsafe { core::mem::zeroed() });
        }
    }
}

/// FLT_PARAMETERS' Create member as fltkernel.h lays it out on x64: `FileAttributes` and
/// `EaLength` are POINTER_ALIGNMENT (8-aligned), so ShareAccess is at 0x12, EaLength at 0x18,
/// EaBuffer at 0x20 and AllocationSize at 0x28 (the FLT_PARAMETERS for IRP_MJ_CREATE page).
/// windows-sys 0.61's FLT_PARAMETERS_0 omits that alignment (ShareAccess at 0xE), which is not
/// what a driver built with the WDK reads.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct CreateParameters {
    pub security_context: *mut IO_SECURITY_CONTEXT,
    pub options: u32,
    _options_pad: u32,
    pub file_attributes: u16,
    pub share_access: u16,
    _share_pad: u32,
    pub ea_length: u32,
    _ea_length_pad: u32,
    pub ea_buffer: usize,
    pub allocation_size: i64,
}

const _: () = assert!(
    core::mem::offset_of!(CreateParameters, options) == 8
        && core::mem::offset_of!(CreateParameters, file_attributes) == 0x10
        && core::mem::offset_of!(CreateParameters, share_access) == 0x12
        && core::mem::offset_of!(CreateParameters, ea_length) == 0x18
        && core::mem::offset_of!(CreateParameters, ea_buffer) == 0x20
        && core::mem::offset_of!(CreateParameters, allocation_size) == 0x28
        && size_of::<CreateParameters>() <= size_of::<windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_PARAMETERS>()
);

pub(crate) fn build_operation(major: u8, instance: isize, volume: usize, file_object: usize, options: &OpenOptions) -> OpFrame {
    let mut security = Box::new(IO_SECURITY_CONTEXT {
        SecurityQos: core::ptr::null_mut(),
        AccessState: core::ptr::null_mut(),
        DesiredAccess: options.desired_access,
        FullCreateOptions: options.create_options,
    });
    // SAFETY: FLT_IO_PARAMETER_BLOCK is plain data; all-zero is a valid value.
    let mut iopb: Box<FLT_IO_PARAMETER_BLOCK> = Box::new(unsafe { core::mem::zeroed() });
    iopb.MajorFunction = major;
    iopb.TargetFileObject = file_object as *mut FILE_OBJECT;
    iopb.TargetInstance = instance;
    if major == IRP_MJ_CREATE {
        let create = CreateParameters {
            security_context: &raw mut *security,
            options: options.create_options | (options.disposition << 24),
            _options_pad: 0,
            file_attributes: 0x80, // FILE_ATTRIBUTE_NORMAL
            share_access: options.share_access,
            _share_pad: 0,
            ea_length: 0,
            _ea_length_pad: 0,
            ea_buffer: 0,
            allocation_size: 0,
        };
        let parameters = (&raw mut iopb.Parameters).cast::<CreateParameters>();
        // SAFETY: the block's own Parameters union (large enough, asserted below); unaligned
        // write so the struct's 8-alignment is never assumed of the union's placement.
        unsafe { parameters.write_unaligned(create) };
        if options.open_target_directory {
            iopb.OperationFlags |= SL_OPEN_TARGET_DIRECTORY;
        }
    }
    // SAFETY: FLT_CALLBACK_DATA is plain data; all-zero is a valid value.
    let mut data: Box<FLT_CALLBACK_DATA> = Box::new(unsafe { core::mem::zeroed() });
    data.Flags = FLTFL_CALLBACK_DATA_IRP_OPERATION;
    data.Iopb = &raw const *iopb;
    data.RequestorMode = i8::from(options.user_mode);
    OpFrame { data, _iopb: iopb, _security: security, objects: related(instance, volume, file_object), retained: false }
}

/// Pre-operation outcome (E3).
pub(crate) enum Pre {
    /// Call the post-operation callback with this completion context.
    WithCallback(usize),
    /// Skip the post-operation callback.
    NoCallback,
    /// The filter completed the operation with this status.
    Complete(i32),
}

pub(crate) fn call_pre(inner: &Inner, op: &mut OpFrame, pre: usize, post: usize, operation: Operation) -> Pre {
    if pre == 0 {
        return if post == 0 { Pre::NoCallback } else { Pre::WithCallback(0) };
    }
    let mut completion: *mut c_void = core::ptr::null_mut();
    // SAFETY: the driver's PFLT_PRE_OPERATION_CALLBACK.
    let callback = unsafe {
        core::mem::transmute::<usize, unsafe extern "win64" fn(*mut FLT_CALLBACK_DATA, *const FLT_RELATED_OBJECTS, *mut *mut c_void) -> i32>(pre)
    };
    let data = &raw mut *op.data;
    let objects = &raw const *op.objects;
    let result = as_callback(operation, PASSIVE_LEVEL, || {
        // SAFETY: arguments as the pre-operation callback DDI documents.
        unsafe { callback(data, objects, &raw mut completion) }
    });
    let completion = completion as usize;
    let data_address = data as usize;
    if result == pend::PREOP_PENDING {
        // "Pending an I/O Operation in a Preoperation Callback Routine": CompletionContext NULL;
        // the operation waits for FltCompletePendedPreOperation and goes on with its status.
        if completion != 0 {
            inner.violation(Violation::CompletionContextMisuse { operation, status: result, reason: "CompletionContext set with FLT_PREOP_PENDING" });
        }
        if let Some((status, context)) = pend::wait(inner, data_address, pend::Phase::Pre, operation) {
            return pre_outcome(inner, op, post, operation, status, context);
        }
        // Never completed (reported): the operation goes on without the filter, so the run
        // (whose script expects the operation's own outcome) continues.
        op.retained = true;
        return Pre::NoCallback;
    }
    if !pend::not_pended(inner, data_address, pend::Phase::Pre, operation) {
        op.retained = true;
    }
    pre_outcome(inner, op, post, operation, result, completion)
}

/// What a pre-operation status (returned, or given to FltCompletePendedPreOperation) means (E3).
fn pre_outcome(inner: &Inner, op: &mut OpFrame, post: usize, operation: Operation, result: i32, completion: usize) -> Pre {
    let misuse = |reason| Violation::CompletionContextMisuse { operation, status: result, reason };
    match result {
        0 | 5 => {
            if post == 0 {
                inner.violation(misuse("asked for a post-operation callback that is not registered"));
                return Pre::NoCallback;
            }
            if result == 5 && operation == Operation::PreCreate {
                inner.violation(misuse("FLT_PREOP_SYNCHRONIZE is not for IRP_MJ_CREATE"));
            }
            Pre::WithCallback(completion)
        }
        1 | 3 | 4 | 6 => {
            if completion != 0 {
                inner.violation(misuse("CompletionContext set without a post-operation callback"));
            }
            if result == 4 {
                // SAFETY: reading the IoStatus union's Status member the filter set.
                let status = unsafe { op.data.IoStatus.Anonymous.Status };
                if status == 0x103 {
                    inner.violation(misuse("FLT_PREOP_COMPLETE with STATUS_PENDING"));
                }
                if status < 0 && matches!(operation, Operation::PreCleanup | Operation::PreClose) {
                    inner.violation(misuse("cleanup/close completed with a failure status"));
                }
                return Pre::Complete(status);
            }
            Pre::NoCallback
        }
        _ => {
            inner.violation(misuse("unknown FLT_PREOP_CALLBACK_STATUS"));
            Pre::NoCallback
        }
    }
}

pub(crate) fn call_post(inner: &Inner, op: &mut OpFrame, post: usize, completion: usize, operation: Operation, irql: Irql) {
    if post == 0 {
        return;
    }
    // SAFETY: the driver's PFLT_POST_OPERATION_CALLBACK.
    let callback = unsafe {
        core::mem::transmute::<usize, unsafe extern "win64" fn(*mut FLT_CALLBACK_DATA, *const FLT_RELATED_OBJECTS, *const c_void, u32) -> i32>(post)
    };
    let data = &raw mut *op.data;
    let objects = &raw const *op.objects;
    let result = as_callback(operation, irql, || {
        // SAFETY: arguments as the post-operation callback DDI documents (flags 0: not draining).
        unsafe { callback(data, objects, completion as *const c_void, 0) }
    });
    let settled = match result {
        pend::POSTOP_FINISHED_PROCESSING => pend::not_pended(inner, data as usize, pend::Phase::Post, operation),
        // Completion processing stops until FltCompletePendedPostOperation (or the worker
        // FltDoCompletionProcessingWhenSafe posted to returns).
        pend::POSTOP_MORE_PROCESSING_REQUIRED => pend::wait(inner, data as usize, pend::Phase::Post, operation).is_some(),
        _ => {
            inner.violation(Violation::InvalidParameter {
                function: "post-operation callback",
                reason: "an IRP post-operation callback returns FLT_POSTOP_FINISHED_PROCESSING or FLT_POSTOP_MORE_PROCESSING_REQUIRED",
            });
            // A post FltDoCompletionProcessingWhenSafe made is still waited for.
            pend::invalid_post_status(inner, data as usize, operation)
        }
    };
    if !settled {
        // Given up on: the driver may still use the callback data.
        op.retained = true;
    }
}

pub(crate) fn set_io_status(op: &mut OpFrame, status: i32, information: usize) {
    op.data.IoStatus.Anonymous.Status = status;
    op.data.IoStatus.Information = information;
}

/// The filter's instance on a volume and its callbacks for `major`, if any. An instance being
/// torn down receives no new operations; the operation is counted in flight until
/// [`op_done`], so teardown can drain it (E6).
pub(crate) fn filter_for(inner: &Inner, volume: usize, major: u8) -> Option<(isize, usize, usize)> {
    let instance = inner.volumes()[volume].instance?;
    let (pre, post) = inner.filter().as_ref()?.operations.get(&major).copied().unwrap_or((0, 0));
    let record = inner.instance(instance)?;
    // Counted first, then the flag checked (SeqCst, paired with teardown_instance).
    record.in_flight.fetch_add(1, Ordering::SeqCst);
    if record.tearing_down.load(Ordering::SeqCst) {
        record.in_flight.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    Some((instance, pre, post))
}

/// The operation on `instance` has finished its callbacks.
pub(crate) fn op_done(inner: &Inner, instance: isize) {
    if let Some(record) = inner.instance(instance) {
        record.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// IRP_MJ_CREATE: pre-create (PASSIVE), the file system (`options.final_status`), post-create
/// (always PASSIVE, A9), pre-op return values honoured (E3). Returns the FILE_OBJECT address.
pub fn create(inner: &Inner, volume: usize, path: &str, options: &OpenOptions) -> Result<usize, EmuError> {
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
    {
        let volumes = inner.volumes();
        if volume >= volumes.len() || !volumes[volume].mounted {
            return Err(EmuError::NoSuchVolume);
        }
    }
    inner.files.lock(file_object as u64).live.insert(
        file_object,
        FileRecord { object, name, volume, path: path.to_owned(), stream: None, file_node: None, state: FileState::Creating, paging_file: options.paging_file },
    );
    let filter = filter_for(inner, volume, IRP_MJ_CREATE);
    let (instance, pre, post) = filter.unwrap_or((0, 0, 0));
    let mut op = build_operation(IRP_MJ_CREATE, instance, volume, file_object, options);
    let data_address = &raw const *op.data as usize;
    inner.callback_data.lock(data_address as u64).insert(data_address, CallbackInfo { file_object, requestor_pid: options.pid, dirty: false });
    exec::enter(PASSIVE_LEVEL, options.pid, Operation::Other);
    let pre_result = if filter.is_some() { call_pre(inner, &mut op, pre, post, Operation::PreCreate) } else { Pre::NoCallback };
    let final_status = match pre_result {
        Pre::Complete(status) => status,
        Pre::WithCallback(_) | Pre::NoCallback => {
            let status = options.final_status;
            let mut information = 0;
            if status >= 0 {
                let key = (volume, opened_stream_key(path, options));
                let file_key = (volume, file_key(&key.1));
                record_created(inner, &key, options);
                let stream = {
                    let mut streams = inner.streams.lock(state::name_hash(key.0, &key.1));
                    let record = streams.live.entry(key).or_insert_with(|| StreamRecord { fs_context: Box::new([0; 8]), open_file_objects: 0 });
                    information = if record.open_file_objects == 0 { 2 } else { 1 }; // FILE_CREATED / FILE_OPENED
                    record.open_file_objects += 1;
                    record.fs_context.as_ptr() as usize
                };
                let node = {
                    let mut nodes = inner.file_nodes.lock(state::name_hash(file_key.0, &file_key.1));
                    let record = nodes.live.entry(file_key.clone()).or_insert_with(|| StreamRecord { fs_context: Box::new([0; 8]), open_file_objects: 0 });
                    record.open_file_objects += 1;
                    record.fs_context.as_ptr() as usize
                };
                inner.race_point("create opened the stream");
                if let Some(file) = inner.files.lock(file_object as u64).live.get_mut(&file_object) {
                    file.stream = Some(stream);
                    file.file_node = Some((node, file_key.1));
                    file.state = FileState::Open;
                    file.object.FsContext = stream as *mut c_void;
                    if options.volume_open {
                        file.object.Flags |= FO_VOLUME_OPEN;
                    }
                    file.object.ReadAccess = options.desired_access & (0x1 | 0x8000_0000) != 0;
                    file.object.WriteAccess = options.desired_access & (0x2 | 0x4 | 0x4000_0000) != 0;
                    file.object.DeleteAccess = options.desired_access & 0x1_0000 != 0;
                    file.object.SharedRead = options.share_access & 0x1 != 0;
                    file.object.SharedWrite = options.share_access & 0x2 != 0;
                    file.object.SharedDelete = options.share_access & 0x4 != 0;
                }
            }
            set_io_status(&mut op, status, information);
            status
        }
    };
    crate::createpath::operation_status(data_address, &raw const *op.objects as usize, op.data.Iopb as usize, final_status);
    if let Pre::WithCallback(completion) = pre_result {
        call_post(inner, &mut op, post, completion, Operation::PostCreate, PASSIVE_LEVEL);
    }
    // Forgets the callback data (under the pended operations' lock, see pend::end).
    crate::pend::end(inner, data_address);
    // FltCancelFileOpen in post-create: Filter Manager closes the FILE_OBJECT below the filter
    // and the create fails with the status the filter set.
    if final_status >= 0 && let Some(status) = crate::createpath::take_cancelled(file_object, &op.data) {
        close_file_object(inner, file_object);
        if filter.is_some() {
            op_done(inner, instance);
        }
        return Err(EmuError::CreateFailed(status));
    }
    if final_status >= 0 {
        // Completed by the filter with success: opened without a file-system stream.
        if let Some(file) = inner.files.lock(file_object as u64).live.get_mut(&file_object).filter(|f| f.state == FileState::Creating) {
            file.state = FileState::Open;
        }
        if filter.is_some() {
            op_done(inner, instance);
        }
        return Ok(file_object);
    }
    // A failed create: the FILE_OBJECT goes away; anything linked to it is dropped (B9).
    if let Some(file) = inner.files.lock(file_object as u64).live.get_mut(&file_object) {
        file.state = FileState::Failed;
    }
    let doomed = inner.unlink_where(Some(file_object as u64), |key| matches!(key, state::LinkKey::StreamHandle(_, fo) if fo == file_object));
    inner.finish(doomed);
    if filter.is_some() {
        op_done(inner, instance);
    }
    Err(EmuError::CreateFailed(final_status))
}

/// IRP_MJ_CLEANUP (the last handle closed): pre at PASSIVE, post at the configured IRQL.
pub fn cleanup(inner: &Inner, file_object: usize, pid: u32) -> Result<(), EmuError> {
    let volume = {
        let mut files = inner.files.lock(file_object as u64);
        let file = files.live.get_mut(&file_object).ok_or(EmuError::InvalidHandle)?;
        if file.state != FileState::Open {
            return Err(EmuError::InvalidHandle);
        }
        file.state = FileState::CleanedUp;
        file.volume
    };
    if let Some(instance) = run_simple(inner, volume, file_object, pid, IRP_MJ_CLEANUP, crate::knobs::post_irql(inner.config.post_cleanup_irql)) {
        op_done(inner, instance);
    }
    Ok(())
}

/// IRP_MJ_CLOSE (the last reference to the FILE_OBJECT): pre at PASSIVE, post at the configured
/// IRQL; then the FILE_OBJECT goes (stream-handle links dropped) and, at the last close of the
/// stream, the stream is torn down (stream links dropped) (B9).
pub fn close(inner: &Inner, file_object: usize, pid: u32) -> Result<(), EmuError> {
    let volume = {
        let files = inner.files.lock(file_object as u64);
        let file = files.live.get(&file_object).ok_or(EmuError::InvalidHandle)?;
        if file.state != FileState::CleanedUp {
            return Err(EmuError::InvalidHandle);
        }
        file.volume
    };
    let instance = run_simple(inner, volume, file_object, pid, IRP_MJ_CLOSE, crate::knobs::post_irql(inner.config.post_close_irql));
    close_file_object(inner, file_object);
    if let Some(instance) = instance {
        op_done(inner, instance);
    }
    Ok(())
}

/// Filter Manager's side of a close: the FILE_OBJECT goes, and the stream with its last one.
pub(crate) fn close_file_object(inner: &Inner, file_object: usize) {
    let Some(mut file) = inner.files.lock(file_object as u64).live.remove(&file_object) else { return };
    file.state = FileState::Closed;
    let (stream, volume, path, file_node) = (file.stream, file.volume, file.path.clone(), file.file_node.take());
    let mut doomed = inner.unlink_where(Some(file_object as u64), |key| matches!(key, state::LinkKey::StreamHandle(_, fo) if fo == file_object));
    inner.race_point("close unlinked the FILE_OBJECT");
    if let Some(stream) = stream {
        let key = (volume, stream_key(&path));
        let last = {
            let mut streams = inner.streams.lock(state::name_hash(key.0, &key.1));
            let last = streams.live.get_mut(&key).is_some_and(|s| {
                s.open_file_objects -= 1;
                s.open_file_objects == 0
            });
            if last && let Some(record) = streams.live.remove(&key) {
                // Keep the FsContext allocation alive until the emulator goes, so a new stream
                // never reuses the address of one a driver may still hold a stale key for.
                streams.dead.push(record);
            }
            last
        };
        if last {
            crate::flt::purge_name_cache(inner, Some(stream));
            doomed.extend(inner.unlink_where(Some(stream as u64), |key| matches!(key, state::LinkKey::Stream(_, s) if s == stream)));
        }
    }
    // The file's last FILE_OBJECT (over all its streams) releases its file contexts.
    if let Some((node, file_key)) = file_node {
        let key = (volume, file_key);
        let last = {
            let mut nodes = inner.file_nodes.lock(state::name_hash(key.0, &key.1));
            let last = nodes.live.get_mut(&key).is_some_and(|n| {
                n.open_file_objects -= 1;
                n.open_file_objects == 0
            });
            if last && let Some(record) = nodes.live.remove(&key) {
                nodes.dead.push(record);
            }
            last
        };
        if last {
            doomed.extend(inner.unlink_where(Some(node as u64), |key| matches!(key, state::LinkKey::File(_, n) if n == node)));
        }
    }
    // The FILE_OBJECT memory stays allocated (retired) for the same reason.
    inner.files.lock(file_object as u64).dead.push(file);
    inner.finish(doomed);
}

/// Runs cleanup or close through the filter; returns the instance whose operation is still
/// counted in flight (the caller ends it with [`op_done`] once Filter Manager's own processing
/// of the operation is over).
fn run_simple(inner: &Inner, volume: usize, file_object: usize, pid: u32, major: u8, post_irql: Irql) -> Option<isize> {
    let (instance, pre, post) = filter_for(inner, volume, major)?;
    let options = OpenOptions { pid, ..OpenOptions::default() };
    let mut op = build_operation(major, instance, volume, file_object, &options);
    let data_address = &raw const *op.data as usize;
    inner.callback_data.lock(data_address as u64).insert(data_address, CallbackInfo { file_object, requestor_pid: pid, dirty: false });
    exec::enter(PASSIVE_LEVEL, pid, Operation::Other);
    let (pre_op, post_op) = if major == IRP_MJ_CLEANUP { (Operation::PreCleanup, Operation::PostCleanup) } else { (Operation::PreClose, Operation::PostClose) };
    let pre_result = call_pre(inner, &mut op, pre, post, pre_op);
    if let Pre::WithCallback(completion) = pre_result {
        set_io_status(&mut op, status::SUCCESS, 0);
        call_post(inner, &mut op, post, completion, post_op, post_irql);
    }
    // Forgets the callback data (under the pended operations' lock, see pend::end).
    crate::pend::end(inner, data_address);
    Some(instance)
}

#[cfg(test)]
mod file_key_tests {
    use super::file_key;

    #[test]
    fn streams_of_one_file_share_its_key() {
        assert_eq!(file_key("\\dir\\a.txt:ads"), "\\dir\\a.txt");
        assert_eq!(file_key("\\dir\\a.txt"), "\\dir\\a.txt");
        assert_eq!(file_key("\\dir:x\\a.txt"), "\\dir:x\\a.txt");
        assert_eq!(file_key(""), "");
    }
}
