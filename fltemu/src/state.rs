//! The emulator's process-global state and the context/pool bookkeeping that the exports share.
//!
//! The imported functions take no emulator argument, so the live emulator is reached through a
//! process-global pointer; one emulator may exist per process at a time (see
//! [`crate::Emulator::load`]). All bookkeeping sits behind one mutex; driver memory (out
//! pointers, context bodies) is written only after that mutex is released, so a fault on a bad
//! driver pointer cannot leave it held.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::exec::{self, Stop, Workers};
use crate::pe::MappedImage;
use crate::verifier::{ContextType, PoolKind, Tag, Violation};
use crate::{Config, Operation};

/// Poison written into every new context body (A5: Filter Manager does not zero contexts).
pub const CONTEXT_ALLOC_POISON: u8 = 0xC7;
/// Poison written into freed contexts and pool blocks.
pub const FREE_POISON: u8 = 0xDF;
/// Poison written into POOL_FLAG_UNINITIALIZED allocations.
pub const POOL_ALLOC_POISON: u8 = 0xA5;

/// NTSTATUS values used by the emulation (fltmgr-semantics "Status codes" table; ntstatus.h).
#[allow(clippy::cast_possible_wrap, missing_docs)]
pub mod status {
    pub const SUCCESS: i32 = 0;
    pub const TIMEOUT: i32 = 0x102;
    pub const BUFFER_OVERFLOW: i32 = 0x8000_0005_u32 as i32;
    pub const DATATYPE_MISALIGNMENT: i32 = 0x8000_0002_u32 as i32;
    pub const PARTIAL_COPY: i32 = 0x8000_000D_u32 as i32;
    pub const UNSUCCESSFUL: i32 = 0xC000_0001_u32 as i32;
    pub const ACCESS_VIOLATION: i32 = 0xC000_0005_u32 as i32;
    pub const INVALID_PARAMETER: i32 = 0xC000_000D_u32 as i32;
    pub const NO_SUCH_FILE: i32 = 0xC000_000F_u32 as i32;
    pub const ACCESS_DENIED: i32 = 0xC000_0022_u32 as i32;
    pub const BUFFER_TOO_SMALL: i32 = 0xC000_0023_u32 as i32;
    pub const OBJECT_NAME_NOT_FOUND: i32 = 0xC000_0034_u32 as i32;
    pub const OBJECT_NAME_COLLISION: i32 = 0xC000_0035_u32 as i32;
    pub const PORT_DISCONNECTED: i32 = 0xC000_0037_u32 as i32;
    pub const SHARING_VIOLATION: i32 = 0xC000_0043_u32 as i32;
    pub const INSUFFICIENT_RESOURCES: i32 = 0xC000_009A_u32 as i32;
    pub const NOT_SUPPORTED: i32 = 0xC000_00BB_u32 as i32;
    pub const INVALID_BUFFER_SIZE: i32 = 0xC000_0206_u32 as i32;
    pub const NOT_FOUND: i32 = 0xC000_0225_u32 as i32;
    pub const CONNECTION_REFUSED: i32 = 0xC000_0236_u32 as i32;
    pub const FLT_CONTEXT_ALREADY_DEFINED: i32 = 0xC01C_0002_u32 as i32;
    pub const FLT_NOT_INITIALIZED: i32 = 0xC01C_0007_u32 as i32;
    pub const FLT_DELETING_OBJECT: i32 = 0xC01C_000B_u32 as i32;
    pub const FLT_DO_NOT_ATTACH: i32 = 0xC01C_000F_u32 as i32;
    pub const FLT_DO_NOT_DETACH: i32 = 0xC01C_0010_u32 as i32;
    pub const FLT_CONTEXT_ALLOCATION_NOT_FOUND: i32 = 0xC01C_0016_u32 as i32;
    pub const FLT_INVALID_CONTEXT_REGISTRATION: i32 = 0xC01C_0017_u32 as i32;
    pub const FLT_CONTEXT_ALREADY_LINKED: i32 = 0xC01C_001C_u32 as i32;
    pub const FLT_INSTANCE_ALTITUDE_COLLISION: i32 = 0xC01C_0011_u32 as i32;
}

/// The filter handle fltemu hands out (an opaque, non-dereferenceable value).
pub const FILTER_HANDLE: isize = 0x0000_0F17_0000_0010;
/// Instance handles are `INSTANCE_BASE + 0x100 * n`.
pub const INSTANCE_BASE: isize = 0x0000_0F17_1000_0000;
/// Volume handles are `VOLUME_BASE + 0x100 * volume index`.
pub const VOLUME_BASE: isize = 0x0000_0F17_2000_0000;

/// One registered context type entry (A2).
#[derive(Clone, Debug)]
pub struct ContextRegistration {
    pub context_type: u16,
    pub flags: u16,
    pub cleanup: usize,
    pub size: usize,
    pub tag: u32,
}

/// The copy of FLT_REGISTRATION Filter Manager keeps.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub contexts: Vec<ContextRegistration>,
    /// Pre/post callbacks by major function.
    pub operations: HashMap<u8, (usize, usize)>,
    pub unload: usize,
    pub setup: usize,
    pub query_teardown: usize,
    pub teardown_start: usize,
    pub teardown_complete: usize,
    pub started: bool,
}

/// What a context is linked to (A10 scopes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkKey {
    /// A volume context, per (filter, volume).
    Volume(usize),
    /// An instance context.
    Instance(isize),
    /// A stream context: (instance, FsContext).
    Stream(isize, usize),
    /// A stream-handle context: (instance, FILE_OBJECT).
    StreamHandle(isize, usize),
}

impl LinkKey {
    pub fn context_type(self) -> ContextType {
        match self {
            LinkKey::Volume(_) => ContextType::Volume,
            LinkKey::Instance(_) => ContextType::Instance,
            LinkKey::Stream(..) => ContextType::Stream,
            LinkKey::StreamHandle(..) => ContextType::StreamHandle,
        }
    }

    fn instance(self) -> Option<isize> {
        match self {
            LinkKey::Volume(_) => None,
            LinkKey::Instance(i) | LinkKey::Stream(i, _) | LinkKey::StreamHandle(i, _) => Some(i),
        }
    }
}

/// Life of a context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    Live,
    /// Count reached 0; cleanup running.
    Dying,
    Freed,
}

/// One context's bookkeeping.
#[derive(Clone, Debug)]
pub struct ContextRecord {
    pub context_type: ContextType,
    pub pool: PoolKind,
    pub size: usize,
    pub tag: u32,
    pub refs: i64,
    pub link: Option<LinkKey>,
    pub life: Life,
    pub cleanup: usize,
}

/// A context whose count reached 0: run its cleanup, then free it (B10).
#[derive(Clone, Copy, Debug)]
pub struct Doomed {
    pub address: usize,
    pub context_type: u16,
    pub cleanup: usize,
    pub size: usize,
}

/// A pool block.
#[derive(Clone, Copy, Debug)]
pub struct PoolBlock {
    pub size: usize,
    pub tag: u32,
    pub pool: PoolKind,
}

/// A planned failure: every `every`-th call fails with `status`, at most `remaining` times.
#[derive(Clone, Copy, Debug)]
pub struct Injection {
    pub status: i32,
    pub every: u64,
    pub remaining: u64,
    pub seen: u64,
}

/// Functions whose failure can be injected (each fails the way its DDI documents).
pub const INJECTABLE: &[&str] = &[
    "ExAllocatePool2",
    "FltAllocateContext",
    "FltAllocateGenericWorkItem",
    "FltBuildDefaultSecurityDescriptor",
    "FltCreateCommunicationPort",
    "FltGetFileNameInformation",
    "FltGetInstanceContext",
    "FltGetStreamContext",
    "FltGetStreamHandleContext",
    "FltGetVolumeContext",
    "FltGetVolumeName",
    "FltQueueGenericWorkItem",
    "FltRegisterFilter",
    "FltSendMessage",
    "FltSetInstanceContext",
    "FltSetStreamContext",
    "FltSetStreamHandleContext",
    "FltSetVolumeContext",
    "FltStartFiltering",
    "MmCopyMemory",
    "MmSecureVirtualMemory",
];

/// A volume.
#[derive(Debug)]
pub struct VolumeRecord {
    #[allow(dead_code)] // kept for debugging output
    pub name: String,
    pub name_wide: Vec<u16>,
    pub file_system: i32,
    pub stream_contexts: bool,
    pub mounted: bool,
    pub instance: Option<isize>,
}

/// An instance.
#[derive(Debug)]
pub struct InstanceRecord {
    pub volume: usize,
    pub tearing_down: bool,
    /// Operations between their pre- and post-callback (drained before TeardownComplete, E6).
    pub in_flight: usize,
}

/// A stream (one FsContext; alternate data streams are separate streams).
#[derive(Debug)]
pub struct StreamRecord {
    pub fs_context: Box<[u64; 8]>,
    pub volume: usize,
    pub key: String,
    pub open_file_objects: usize,
}

/// State of a FILE_OBJECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileState {
    /// Before the file system opened it (pre-create).
    Creating,
    Open,
    CleanedUp,
    Closed,
    /// The create failed.
    Failed,
}

/// A FILE_OBJECT.
pub struct FileRecord {
    pub object: Box<windows_sys::Wdk::Foundation::FILE_OBJECT>,
    /// Owns the buffer FILE_OBJECT.FileName points to.
    #[allow(dead_code)]
    pub name: Vec<u16>,
    pub volume: usize,
    pub path: String,
    pub stream: Option<usize>,
    pub state: FileState,
    pub paging_file: bool,
}

/// What Filter Manager knows about an FLT_CALLBACK_DATA it built.
#[derive(Clone, Copy, Debug)]
pub struct CallbackInfo {
    pub file_object: usize,
    pub requestor_pid: u32,
}

/// A file name information block handed out by FltGetFileNameInformation.
pub struct NameInfo {
    pub block: Box<windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_FILE_NAME_INFORMATION>,
    pub buffer: Vec<u16>,
    pub refs: i64,
    pub volume_chars: usize,
}

/// Everything behind the state mutex.
#[derive(Default)]
pub struct State {
    pub filter: Option<Filter>,
    pub filter_ever_registered: bool,
    pub unregistered: bool,
    pub volumes: Vec<VolumeRecord>,
    pub instances: HashMap<isize, InstanceRecord>,
    pub next_instance: isize,
    pub links: HashMap<LinkKey, usize>,
    pub contexts: HashMap<usize, ContextRecord>,
    pub pool: HashMap<usize, PoolBlock>,
    pub streams: HashMap<usize, StreamRecord>,
    pub stream_names: HashMap<(usize, String), usize>,
    pub files: HashMap<usize, FileRecord>,
    pub dead_files: Vec<FileRecord>,
    pub dead_streams: Vec<StreamRecord>,
    pub callback_data: HashMap<usize, CallbackInfo>,
    pub name_infos: HashMap<usize, NameInfo>,
    pub work_items: HashMap<usize, bool>,
    pub security_descriptors: HashMap<usize, Box<[u8; 64]>>,
    pub secured: HashMap<usize, (usize, usize)>,
    pub next_secure: usize,
    pub violations: Vec<Violation>,
    pub calls: BTreeMap<(Operation, &'static str), u64>,
    /// Failure injection per function (see [`crate::Emulator::inject_failure`]).
    pub injections: HashMap<&'static str, Injection>,
    /// The deepest driver stack seen at an import call, and whether it was reported.
    pub max_stack_depth: usize,
    pub stack_reported: bool,
    pub ports: crate::port::Ports,
}

// SAFETY: the raw pointers inside State (FILE_OBJECT fields, name blocks) point to emulated
// kernel objects that State itself owns; they are only dereferenced by the driver and by fltemu
// under the state mutex or with the documented kernel synchronization.
unsafe impl Send for State {}

/// The live emulator.
pub struct Inner {
    pub image: MappedImage,
    pub workers: Workers,
    pub state: Mutex<State>,
    pub config: Config,
    pub debug: Mutex<Vec<String>>,
    pub stop: Mutex<Option<Stop>>,
    pub outstanding_work: Mutex<usize>,
    /// Threads currently inside [`Inner::finish`] (a cleanup callback may be running).
    pub finishing: std::sync::atomic::AtomicUsize,
    pub work_done: Condvar,
    pub user: crate::user::UserSpace,
}

impl Drop for Inner {
    /// Returns context bodies and pool blocks to the allocator. Only reached when no driver
    /// thread can run any more (the emulator leaks `Inner` after a crash, bug check or hang).
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        for (address, context) in state.contexts.drain() {
            if let Ok(layout) = std::alloc::Layout::from_size_align(context.size, 16) {
                // SAFETY: allocated with this layout by FltAllocateContext and never freed
                // (freed contexts stay allocated, poisoned, until now).
                unsafe { std::alloc::dealloc(address as *mut u8, layout) };
            }
        }
        for (address, block) in state.pool.drain() {
            if let Ok(layout) = std::alloc::Layout::from_size_align(block.size.max(1), 16) {
                // SAFETY: a live ExAllocatePool2 block of this layout the driver never freed.
                unsafe { std::alloc::dealloc(address as *mut u8, layout) };
            }
        }
        for (address, _) in state.work_items.drain() {
            // SAFETY: allocated by FltAllocateGenericWorkItem as Box<[u64; 8]> and never freed.
            drop(unsafe { Box::from_raw(address as *mut [u64; 8]) });
        }
    }
}

static CURRENT: AtomicPtr<Inner> = AtomicPtr::new(core::ptr::null_mut());
static CURRENT_ARC: Mutex<Option<Arc<Inner>>> = Mutex::new(None);

/// Makes `inner` the process's live emulator.
pub fn install(inner: &Arc<Inner>) {
    *CURRENT_ARC.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(inner));
    CURRENT.store(Arc::as_ptr(inner).cast_mut(), Ordering::Release);
}

/// Forgets the live emulator.
pub fn uninstall() {
    CURRENT.store(core::ptr::null_mut(), Ordering::Release);
    CURRENT_ARC.lock().unwrap_or_else(PoisonError::into_inner).take();
}

/// The live emulator, for the exports.
pub fn current() -> Option<&'static Inner> {
    let pointer = CURRENT.load(Ordering::Acquire);
    // SAFETY: the pointer is set from an Arc that CURRENT_ARC keeps alive until `uninstall`,
    // and the emulator is only dropped after no driver code runs (or leaked when it might).
    (!pointer.is_null()).then(|| unsafe { &*pointer })
}

/// The live emulator as an Arc (for spawning work).
pub fn current_arc() -> Option<Arc<Inner>> {
    CURRENT_ARC.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

impl Inner {
    /// Locks the state (a poisoned lock is still usable: the data stays consistent per call).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a violation.
    pub fn violation(&self, violation: Violation) {
        self.lock().violations.push(violation);
    }

    /// Counts a call of `function` for the current operation and checks its IRQL limit (A8).
    pub fn enter(&self, function: &'static str, max_irql: u8) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        *state.calls.entry((exec::operation(), function)).or_insert(0) += 1;
        let irql = exec::irql();
        if irql > max_irql {
            state.violations.push(Violation::IrqlTooHigh { function, irql, max: max_irql });
        }
        let depth = exec::stack_depth();
        if depth > state.max_stack_depth {
            state.max_stack_depth = depth;
            if depth > exec::KERNEL_STACK_SIZE && !state.stack_reported {
                state.stack_reported = true;
                state.violations.push(Violation::StackTooDeep { bytes: depth, function, limit: exec::KERNEL_STACK_SIZE });
            }
        }
        state
    }

    /// Records that the run stopped (crash or bug check in a work item).
    pub fn record_stop(&self, stop: Stop) {
        let mut slot = self.stop.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(stop);
        }
    }

    /// Runs `job` on a worker asynchronously (work items, deferred cleanups); FltUnregisterFilter
    /// waits for all of them (B11).
    pub fn spawn(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) {
        *self.outstanding_work.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        let inner = Arc::clone(self);
        std::thread::spawn(move || {
            if let Err(stop) = inner.workers.run(inner.config.call_timeout, job) {
                inner.record_stop(stop);
            }
            let mut count = inner.outstanding_work.lock().unwrap_or_else(PoisonError::into_inner);
            *count -= 1;
            inner.work_done.notify_all();
        });
    }

    /// Waits until no work item or deferred cleanup is queued or running.
    pub fn wait_for_work(&self) {
        let mut count = self.outstanding_work.lock().unwrap_or_else(PoisonError::into_inner);
        while *count > 0 {
            count = self.work_done.wait(count).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Runs cleanup callbacks for doomed contexts, then frees them (B10: cleanup exactly once, at
    /// count 0; deferred to a work item when released above APC_LEVEL).
    pub fn finish(&self, doomed: Vec<Doomed>) {
        if doomed.is_empty() {
            return;
        }
        self.finishing.fetch_add(1, Ordering::AcqRel);
        self.finish_counted(doomed);
        self.finishing.fetch_sub(1, Ordering::AcqRel);
    }

    /// Waits until no thread is freeing contexts (so a leak check sees a settled state).
    pub fn wait_for_finishes(&self) {
        while self.finishing.load(Ordering::Acquire) > 0 {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    fn finish_counted(&self, doomed: Vec<Doomed>) {
        if exec::irql() > exec::APC_LEVEL
            && let Some(inner) = current_arc()
        {
            {
                inner.spawn(move || {
                    exec::enter(exec::PASSIVE_LEVEL, 4, Operation::ContextCleanup);
                    if let Some(inner) = current() {
                        inner.finish(doomed);
                    }
                });
                return;
            }
        }
        for context in doomed {
            if context.cleanup != 0 {
                let previous = exec::set_operation(Operation::ContextCleanup);
                // SAFETY: `cleanup` is the registered PFLT_CONTEXT_CLEANUP_CALLBACK from the
                // driver's FLT_REGISTRATION, a Win64 function taking (context, type).
                let callback = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(usize, u16)>(context.cleanup) };
                // SAFETY: the context is alive (Dying) and the callback's contract is A7.
                exec::driver_call(|| unsafe { callback(context.address, context.context_type) });
                exec::set_operation(previous);
            }
            // SAFETY: the context body is `size` bytes fltemu allocated and never returns to the
            // allocator (freed contexts stay mapped, poisoned, so later use is detectable).
            unsafe { core::ptr::write_bytes(context.address as *mut u8, FREE_POISON, context.size) };
            if let Some(record) = self.lock().contexts.get_mut(&context.address) {
                record.life = Life::Freed;
            }
        }
    }
}

impl State {
    /// A live context, or a recorded violation (UseAfterFree for freed, NotAContext for foreign).
    pub fn live_context(&mut self, address: usize, function: &'static str) -> Option<&mut ContextRecord> {
        let verdict = match self.contexts.get(&address) {
            None => Err(Violation::NotAContext { function, pointer: address }),
            Some(record) if record.life != Life::Live => {
                Err(Violation::UseAfterFree { function, context_type: record.context_type, tag: Tag(record.tag) })
            }
            Some(_) => Ok(()),
        };
        match verdict {
            Ok(()) => self.contexts.get_mut(&address),
            Err(violation) => {
                self.violations.push(violation);
                None
            }
        }
    }

    /// Drops one reference; returns the context when it reached 0.
    pub fn drop_reference(&mut self, address: usize) -> Option<Doomed> {
        let record = self.contexts.get_mut(&address)?;
        record.refs -= 1;
        if record.refs > 0 {
            return None;
        }
        record.life = Life::Dying;
        let doomed = Doomed { address, context_type: record.context_type.raw(), cleanup: record.cleanup, size: record.size };
        if let Some(key) = record.link.take() {
            // Filter Verifier bug-checks here (0xF5/0x6D); fltemu records it and unlinks so the
            // bookkeeping stays consistent.
            let violation = Violation::ReleasedLinkedToZero { context_type: record.context_type, tag: Tag(record.tag) };
            self.links.remove(&key);
            self.violations.push(violation);
        }
        Some(doomed)
    }

    /// Unlinks whatever is linked at `key` and drops the link's reference (B9).
    pub fn unlink(&mut self, key: LinkKey) -> Option<Doomed> {
        let address = self.links.remove(&key)?;
        if let Some(record) = self.contexts.get_mut(&address) {
            record.link = None;
        }
        self.drop_reference(address)
    }

    /// Unlinks every context whose key matches `predicate`.
    pub fn unlink_where(&mut self, predicate: impl Fn(LinkKey) -> bool) -> Vec<Doomed> {
        let keys: Vec<LinkKey> = self.links.keys().copied().filter(|k| predicate(*k)).collect();
        keys.into_iter().filter_map(|key| self.unlink(key)).collect()
    }

    /// Unlinks every context of `instance` (instance teardown, B9).
    pub fn unlink_instance(&mut self, instance: isize) -> Vec<Doomed> {
        self.unlink_where(|key| key.instance() == Some(instance))
    }

    /// The volume index of a volume handle.
    pub fn volume_of_handle(&self, handle: isize) -> Option<usize> {
        let offset = handle.checked_sub(VOLUME_BASE)?;
        if offset < 0 || offset % 0x100 != 0 {
            return None;
        }
        #[allow(clippy::cast_sign_loss)]
        let index = (offset / 0x100) as usize;
        (index < self.volumes.len()).then_some(index)
    }

    /// Checks a filter handle.
    pub fn filter_ok(&self, handle: isize) -> bool {
        handle == FILTER_HANDLE && self.filter.is_some()
    }

    /// The injected failure status for this call of `function`, if one is due.
    pub fn injected(&mut self, function: &'static str) -> Option<i32> {
        let injection = self.injections.get_mut(function)?;
        injection.seen += 1;
        if injection.remaining == 0 || injection.seen % injection.every != 0 {
            return None;
        }
        injection.remaining -= 1;
        Some(injection.status)
    }

    /// Pool bytes and blocks outstanding.
    pub fn pool_outstanding(&self) -> (usize, usize) {
        (self.pool.values().map(|b| b.size).sum(), self.pool.len())
    }

    /// Contexts not yet freed.
    pub fn contexts_outstanding(&self) -> usize {
        self.contexts.values().filter(|c| c.life != Life::Freed).count()
    }
}

/// The volume handle of volume index `index`.
#[must_use]
pub fn volume_handle(index: usize) -> isize {
    #[allow(clippy::cast_possible_wrap)]
    let index = index as isize;
    VOLUME_BASE + index * 0x100
}
