//! The emulator's process-global state and the context/pool bookkeeping that the exports share.
//!
//! The imported functions take no emulator argument, so the live emulator is reached through a
//! process-global pointer; one emulator may exist per process at a time (see
//! [`crate::Emulator::load`]).
//!
//! The bookkeeping is split the way Filter Manager splits its own (fltemu/README "Locking"):
//! context reference counts are atomic; the link tables, files, streams, pool blocks, callback
//! data and name blocks are sharded maps keyed by the object they belong to, each shard behind
//! its own mutex; registration, volumes and instances sit behind reader/writer locks that I/O
//! only reads; the violations list and the rare objects (ports, work items, descriptors) have
//! their own mutexes. No lock is held while driver code runs or while driver memory (out
//! pointers) is written, so a fault on a bad driver pointer cannot leave one held. Lock order,
//! where two are held at once: link shard, then a context's link mutex, then a context shard.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicIsize, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

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
    pub const FLT_NAME_CACHE_MISS: i32 = 0xC01C_0018_u32 as i32;
    pub const INVALID_INFO_CLASS: i32 = 0xC000_0003_u32 as i32;
    pub const INFO_LENGTH_MISMATCH: i32 = 0xC000_0004_u32 as i32;
    pub const VOLUME_DISMOUNTED: i32 = 0xC000_026E_u32 as i32;
    pub const FLT_DO_NOT_ATTACH: i32 = 0xC01C_000F_u32 as i32;
    pub const FLT_DO_NOT_DETACH: i32 = 0xC01C_0010_u32 as i32;
    pub const FLT_CONTEXT_ALLOCATION_NOT_FOUND: i32 = 0xC01C_0016_u32 as i32;
    pub const FLT_INVALID_CONTEXT_REGISTRATION: i32 = 0xC01C_0017_u32 as i32;
    pub const FLT_CONTEXT_ALREADY_LINKED: i32 = 0xC01C_001C_u32 as i32;
    pub const FLT_INSTANCE_ALTITUDE_COLLISION: i32 = 0xC01C_0011_u32 as i32;
    /// ntstatus.h's value, taken from windows-sys so it cannot drift (0xC01C0014).
    pub const FLT_VOLUME_NOT_FOUND: i32 = windows_sys::Win32::Foundation::STATUS_FLT_VOLUME_NOT_FOUND;
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
    pub operations: FnvMap<u8, (usize, usize)>,
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
    /// A file context: (instance, the file's node), shared by all streams of one file.
    File(isize, usize),
}

impl LinkKey {
    pub fn context_type(self) -> ContextType {
        match self {
            LinkKey::Volume(_) => ContextType::Volume,
            LinkKey::Instance(_) => ContextType::Instance,
            LinkKey::Stream(..) => ContextType::Stream,
            LinkKey::StreamHandle(..) => ContextType::StreamHandle,
            LinkKey::File(..) => ContextType::File,
        }
    }

    /// The object whose link table holds this key (instance, volume, FsContext or FILE_OBJECT):
    /// Filter Manager keeps each context list on its object, so the shard follows the object.
    pub fn object(self) -> u64 {
        match self {
            LinkKey::Volume(volume) => volume as u64,
            LinkKey::Instance(instance) => instance.cast_unsigned() as u64,
            LinkKey::Stream(_, object) | LinkKey::StreamHandle(_, object) | LinkKey::File(_, object) => object as u64,
        }
    }

    fn instance(self) -> Option<isize> {
        match self {
            LinkKey::Volume(_) => None,
            LinkKey::Instance(i) | LinkKey::Stream(i, _) | LinkKey::StreamHandle(i, _) | LinkKey::File(i, _) => Some(i),
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

/// One context's bookkeeping. The count is atomic, as Filter Manager's is (interlocked
/// increments and decrements, no lock); the link has its own mutex.
#[derive(Debug)]
pub struct ContextRecord {
    pub context_type: ContextType,
    pub pool: PoolKind,
    pub size: usize,
    pub tag: u32,
    pub cleanup: usize,
    refs: AtomicI64,
    life: AtomicU8,
    /// The object the context is linked to; changed only with its link-table shard held.
    pub link: Mutex<Option<LinkKey>>,
}

impl ContextRecord {
    /// A new context holding the allocation's reference.
    pub fn new(context_type: ContextType, pool: PoolKind, size: usize, tag: u32, cleanup: usize) -> Self {
        Self { context_type, pool, size, tag, cleanup, refs: AtomicI64::new(1), life: AtomicU8::new(0), link: Mutex::new(None) }
    }

    pub fn refs(&self) -> i64 {
        self.refs.load(Ordering::Acquire)
    }

    pub fn life(&self) -> Life {
        match self.life.load(Ordering::Acquire) {
            0 => Life::Live,
            1 => Life::Dying,
            _ => Life::Freed,
        }
    }

    fn set_life(&self, life: Life) {
        self.life.store(life as u8, Ordering::Release);
    }

    /// The current link (a snapshot).
    pub fn linked(&self) -> Option<LinkKey> {
        *self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the link (the caller holds the key's link-table shard).
    pub fn set_link(&self, key: Option<LinkKey>) {
        *self.link.lock().unwrap_or_else(PoisonError::into_inner) = key;
    }

    /// +1 unless the count already reached 0 (then the context is dying or freed: false).
    pub fn try_reference(&self) -> bool {
        let mut current = self.refs.load(Ordering::Acquire);
        loop {
            if current <= 0 {
                return false;
            }
            match self.refs.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// −1: Ok(true) when this release took the count to 0, Err when it was already 0 (a
    /// release too many, caught at the call that makes it).
    pub fn try_release(&self) -> Result<bool, ()> {
        let mut current = self.refs.load(Ordering::Acquire);
        loop {
            if current <= 0 {
                return Err(());
            }
            match self.refs.compare_exchange_weak(current, current - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(current == 1),
                Err(now) => current = now,
            }
        }
    }
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
    "FltAllocateDeferredIoWorkItem",
    "FltAllocateGenericWorkItem",
    "FltBuildDefaultSecurityDescriptor",
    "FltCreateCommunicationPort",
    "FltGetFileNameInformation",
    "FltGetInstanceContext",
    "FltGetStreamContext",
    "FltGetStreamHandleContext",
    "FltGetVolumeContext",
    "FltGetVolumeName",
    "FltQueueDeferredIoWorkItem",
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
    pub tearing_down: AtomicBool,
    /// Operations between their pre- and post-callback (drained before TeardownComplete, E6).
    pub in_flight: AtomicUsize,
}

/// A stream (one FsContext; alternate data streams are separate streams).
#[derive(Debug)]
pub struct StreamRecord {
    pub fs_context: Box<[u64; 8]>,
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
    /// The file node (all streams of one file share it) and its key, once opened.
    pub file_node: Option<(usize, String)>,
    pub state: FileState,
    pub paging_file: bool,
}

/// What Filter Manager knows about an FLT_CALLBACK_DATA it built.
#[derive(Clone, Copy, Debug)]
pub struct CallbackInfo {
    pub file_object: usize,
    pub requestor_pid: u32,
    /// FltSetCallbackDataDirty was called for this operation (ends with its registration, so
    /// callback data reusing the address starts clean).
    pub dirty: bool,
}

/// A file name information block handed out by FltGetFileNameInformation.
pub struct NameInfo {
    pub block: Box<windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_FILE_NAME_INFORMATION>,
    pub buffer: Vec<u16>,
    pub refs: i64,
    pub volume_chars: usize,
    /// Held by the name cache (one of `refs` is the cache's).
    pub cached: bool,
}


/// A 64-byte aligned cell, so neighbouring shards never share a cache line.
#[repr(align(64))]
struct Padded<T>(T);

/// How many shards each sharded table has.
pub const SHARDS: usize = 64;

/// The shard of a key (Fibonacci hashing: addresses differ in their middle bits).
fn shard_index(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize
}

/// A fast multiplicative hasher (FxHash's step, eight bytes at a time) for the emulator's small
/// integer and name keys (no untrusted keys here, so no DoS resistance is needed).
#[derive(Default)]
pub struct Fnv(u64);

impl Fnv {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517C_C1B7_2722_0A95);
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        // Fold the well-mixed high half into the low bits the table indexes with (keys are
        // 16-byte aligned addresses, whose product has zero low bits).
        self.0 ^ (self.0 >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u16(&mut self, value: u16) {
        self.add(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn write_isize(&mut self, value: isize) {
        self.add(value.cast_unsigned() as u64);
    }
}

/// A HashMap with the fast hasher.
pub type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// The hash of a stream name key.
pub fn name_hash(volume: usize, key: &str) -> u64 {
    let mut hasher = Fnv::default();
    hasher.write(&volume.to_le_bytes());
    hasher.write(key.as_bytes());
    hasher.finish()
}

/// One call-counter shard: (operation, address of the function name) → (name, calls).
pub type CallShard = FnvMap<(Operation, usize), (&'static str, u64)>;

/// Acquisitions of a shard or reader/writer lock that found it held and had to wait (reset by
/// each new emulator; see [`crate::Emulator::lock_waits`]).
pub static LOCK_WAITS: AtomicU64 = AtomicU64::new(0);

/// Reads `lock`, counting the acquisition in [`LOCK_WAITS`] when a writer holds it.
fn read_counted<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    match lock.try_read() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            LOCK_WAITS.fetch_add(1, Ordering::Relaxed);
            lock.read().unwrap_or_else(PoisonError::into_inner)
        }
    }
}

/// A table split into [`SHARDS`] independently locked parts.
pub struct Sharded<T> {
    shards: Box<[Padded<Mutex<T>>]>,
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Padded(Mutex::new(T::default()))).collect() }
    }
}

impl<T> Sharded<T> {
    /// The shard holding `key`.
    pub fn lock(&self, key: u64) -> MutexGuard<'_, T> {
        self.lock_index(shard_index(key))
    }

    fn lock_index(&self, index: usize) -> MutexGuard<'_, T> {
        let shard = &self.shards[index].0;
        match shard.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                LOCK_WAITS.fetch_add(1, Ordering::Relaxed);
                shard.lock().unwrap_or_else(PoisonError::into_inner)
            }
        }
    }

    /// Every shard in turn (one locked at a time).
    pub fn each(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        (0..SHARDS).map(|index| self.lock_index(index))
    }

    fn each_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.shards.iter_mut().map(|shard| shard.0.get_mut().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The context records by address; records are never removed while the emulator lives (freed
/// contexts stay, poisoned), so a record's address is stable.
#[derive(Default)]
pub struct Contexts {
    shards: Sharded<FnvMap<usize, Box<ContextRecord>>>,
}

impl Contexts {
    /// Registers a new context.
    pub fn insert(&self, address: usize, record: ContextRecord) {
        self.shards.lock(address as u64).insert(address, Box::new(record));
    }

    /// The record of `address`, if fltemu allocated a context there.
    pub fn get(&self, address: usize) -> Option<&ContextRecord> {
        let record: *const ContextRecord = &raw const **self.shards.lock(address as u64).get(&address)?;
        // SAFETY: the record is boxed (its address is stable) and only removed by Inner's Drop,
        // which takes `&mut self`; the returned borrow is tied to `&self`.
        Some(unsafe { &*record })
    }

    /// Calls `visit` for every record (for ground truth and the leak check).
    pub fn for_each(&self, mut visit: impl FnMut(usize, &ContextRecord)) {
        for shard in self.shards.each() {
            for (address, record) in shard.iter() {
                visit(*address, record);
            }
        }
    }
}

/// The FILE_OBJECTs of one shard, live and retired.
#[derive(Default)]
pub struct FileShard {
    pub live: FnvMap<usize, FileRecord>,
    /// Closed FILE_OBJECTs stay allocated so an address is never reused within one run.
    pub dead: Vec<FileRecord>,
}

/// The streams of one shard, by (volume, stream key), live and retired.
#[derive(Default)]
pub struct StreamShard {
    pub live: HashMap<(usize, String), StreamRecord, BuildHasherDefault<Fnv>>,
    /// Torn-down FsContexts stay allocated so an address is never reused within one run.
    pub dead: Vec<StreamRecord>,
}

/// The name information blocks of one shard: referenced ones, and released ones kept
/// allocated (so a stale pointer reads a block, never freed memory) but out of the lookup.
#[derive(Default)]
pub struct NameShard {
    pub live: FnvMap<usize, NameInfo>,
    pub dead: Vec<NameInfo>,
}

/// Failure injection: the map is consulted only when `any` says a plan exists.
#[derive(Default)]
pub struct Injections {
    pub any: AtomicBool,
    pub plans: Mutex<HashMap<&'static str, Injection>>,
}

/// The rarely used objects, behind one mutex of their own.
#[derive(Default)]
pub struct State {
    pub filter_ever_registered: bool,
    pub unregistered: bool,
    pub work_items: HashMap<usize, bool>,
    pub security_descriptors: HashMap<usize, Box<[u8; 64]>>,
    pub secured: HashMap<usize, (usize, usize)>,
    pub next_secure: usize,
    pub ports: crate::port::Ports,
}

// SAFETY: the raw pointers inside the records (FILE_OBJECT fields, name blocks) point to
// emulated kernel objects the records themselves own; they are only dereferenced by the driver
// and by fltemu under the owning shard's lock or with the documented kernel synchronization.
unsafe impl Send for State {}
// SAFETY: as for State: FileRecord's raw pointers point into its own boxes.
unsafe impl Send for FileShard {}
// SAFETY: as for State: NameInfo's UNICODE_STRING pointers point into its own buffer.
unsafe impl Send for NameInfo {}

thread_local! {
    /// The call-counter shard of this thread (assigned round robin at its first call).
    static CALL_SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}
static NEXT_CALL_SHARD: AtomicUsize = AtomicUsize::new(0);

/// The live emulator.
pub struct Inner {
    pub image: MappedImage,
    pub workers: Workers,
    pub config: Config,
    /// Rare objects (ports, work items, descriptors, secured ranges).
    pub state: Mutex<State>,
    /// The registered filter (written by register/unregister, read by every operation).
    pub filter: RwLock<Option<Filter>>,
    /// Volumes (written by mount/attach/detach/dismount, read by every operation).
    pub volumes: RwLock<Vec<VolumeRecord>>,
    /// Instances (written by attach and teardown; in-flight counts and teardown flags atomic).
    pub instances: RwLock<FnvMap<isize, Arc<InstanceRecord>>>,
    pub contexts: Contexts,
    /// Link tables: key -> context, sharded by the object the key names.
    pub links: Sharded<FnvMap<LinkKey, usize>>,
    pub pool: Sharded<FnvMap<usize, PoolBlock>>,
    pub files: Sharded<FileShard>,
    pub streams: Sharded<StreamShard>,
    /// Files (the SCB/FCB-level object file contexts hang on), by (volume, file key); the
    /// count is of open FILE_OBJECTs over all the file's streams.
    pub file_nodes: Sharded<StreamShard>,
    pub callback_data: Sharded<FnvMap<usize, CallbackInfo>>,
    /// File contents per stream, by (volume, stream key as io.rs computes it), kept for the run
    /// (a stream's data outlives its last close, as a file's data does on disk).
    pub contents: Sharded<FnvMap<(usize, String), Vec<u8>>>,
    /// The bytes all of `contents` holds (rw.rs caps what writes may add to it).
    pub contents_bytes: AtomicUsize,
    pub name_infos: Sharded<NameShard>,
    /// Filter Manager's name cache: (stream FsContext, name format) → the cached block. Taken
    /// before a `name_infos` shard, never the other way round.
    pub name_cache: Mutex<FnvMap<(usize, u32), usize>>,
    pub violations: Mutex<Vec<Violation>>,
    /// Calls per (operation, function), one shard per calling thread, keyed by the name's
    /// address (no string hashing per call; `Emulator::calls` merges by name).
    pub calls: Sharded<CallShard>,
    pub injections: Injections,
    /// The deepest driver stack seen at an import call, and whether it was reported.
    pub max_stack_depth: AtomicUsize,
    pub stack_reported: AtomicBool,
    /// The seeded schedule of delays at call boundaries and race points (None: no delays).
    pub schedule: Option<crate::schedule::Schedule>,
    pub debug: Mutex<Vec<String>>,
    /// The first crash or bug check of the run (a OnceLock: every driver call reads it, lock-free).
    pub stop: std::sync::OnceLock<Stop>,
    pub outstanding_work: Mutex<usize>,
    /// Threads currently inside [`Inner::finish`] (a cleanup callback may be running).
    pub finishing: AtomicUsize,
    pub work_done: Condvar,
    pub user: crate::user::UserSpace,
    /// Instance handles are numbered from this counter.
    pub next_instance: AtomicIsize,
}

impl Drop for Inner {
    /// Returns context bodies and pool blocks to the allocator. Only reached when no driver
    /// thread can run any more (the emulator leaks `Inner` after a crash, bug check or hang).
    fn drop(&mut self) {
        for shard in self.contexts.shards.each_mut() {
            for (address, context) in shard.drain() {
                if let Ok(layout) = std::alloc::Layout::from_size_align(context.size, 16) {
                    // SAFETY: allocated with this layout by FltAllocateContext and never freed
                    // (freed contexts stay allocated, poisoned, until now).
                    unsafe { std::alloc::dealloc(address as *mut u8, layout) };
                }
            }
        }
        for shard in self.pool.each_mut() {
            for (address, block) in shard.drain() {
                if let Ok(layout) = std::alloc::Layout::from_size_align(block.size.max(1), 16) {
                    // SAFETY: a live ExAllocatePool2 block of this layout the driver never freed.
                    unsafe { std::alloc::dealloc(address as *mut u8, layout) };
                }
            }
        }
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
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
    if crate::wild::stale_thread() {
        return None;
    }
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
    /// A new emulator's state around a mapped image.
    pub fn new(image: MappedImage, config: Config) -> Self {
        crate::schedule::new_emulator();
        LOCK_WAITS.store(0, Ordering::Relaxed);
        let schedule = config.schedule_seed.map(crate::schedule::Schedule::new);
        Self {
            image,
            workers: Workers::new(),
            config,
            state: Mutex::new(State::default()),
            filter: RwLock::new(None),
            volumes: RwLock::new(Vec::new()),
            instances: RwLock::new(FnvMap::default()),
            contexts: Contexts::default(),
            links: Sharded::default(),
            pool: Sharded::default(),
            files: Sharded::default(),
            streams: Sharded::default(),
            file_nodes: Sharded::default(),
            callback_data: Sharded::default(),
            contents: Sharded::default(),
            contents_bytes: AtomicUsize::new(0),
            name_infos: Sharded::default(),
            name_cache: Mutex::default(),
            violations: Mutex::new(Vec::new()),
            calls: Sharded::default(),
            injections: Injections::default(),
            max_stack_depth: AtomicUsize::new(0),
            stack_reported: AtomicBool::new(false),
            schedule,
            debug: Mutex::new(Vec::new()),
            stop: std::sync::OnceLock::new(),
            outstanding_work: Mutex::new(0),
            finishing: AtomicUsize::new(0),
            work_done: Condvar::new(),
            user: crate::user::UserSpace::default(),
            next_instance: AtomicIsize::new(0),
        }
    }

    /// Locks the rarely used objects (a poisoned lock is still usable: the data stays
    /// consistent per call).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The registered filter, for reading.
    pub fn filter(&self) -> RwLockReadGuard<'_, Option<Filter>> {
        read_counted(&self.filter)
    }

    /// The registered filter, for writing.
    pub fn filter_mut(&self) -> RwLockWriteGuard<'_, Option<Filter>> {
        self.filter.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The volumes, for reading.
    pub fn volumes(&self) -> RwLockReadGuard<'_, Vec<VolumeRecord>> {
        read_counted(&self.volumes)
    }

    /// The volumes, for writing.
    pub fn volumes_mut(&self) -> RwLockWriteGuard<'_, Vec<VolumeRecord>> {
        self.volumes.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The instance record of `instance`.
    pub fn instance(&self, instance: isize) -> Option<Arc<InstanceRecord>> {
        read_counted(&self.instances).get(&instance).cloned()
    }

    /// The instances, for writing.
    pub fn instances_mut(&self) -> RwLockWriteGuard<'_, FnvMap<isize, Arc<InstanceRecord>>> {
        self.instances.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a violation.
    pub fn violation(&self, violation: Violation) {
        self.violations.lock().unwrap_or_else(PoisonError::into_inner).push(violation);
    }

    /// A copy of the violations so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.violations.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Counts a call of `function` for the current operation, checks its IRQL limit (A8) and the
    /// stack depth, and passes the call boundary to the seeded schedule.
    pub fn enter(&self, function: &'static str, max_irql: u8) {
        exec::note_export(function);
        let mut shard = CALL_SHARD.with(std::cell::Cell::get);
        if shard == usize::MAX {
            shard = NEXT_CALL_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            CALL_SHARD.with(|cell| cell.set(shard));
        }
        self.calls.lock_index(shard).entry((exec::operation(), function.as_ptr() as usize)).or_insert((function, 0)).1 += 1;
        let irql = exec::irql();
        if irql > max_irql {
            self.violation(Violation::IrqlTooHigh { function, irql, max: max_irql });
        }
        let depth = exec::stack_depth();
        if depth > self.max_stack_depth.load(Ordering::Relaxed) {
            self.max_stack_depth.fetch_max(depth, Ordering::AcqRel);
            if depth > exec::KERNEL_STACK_SIZE && !self.stack_reported.swap(true, Ordering::AcqRel) {
                self.violation(Violation::StackTooDeep { bytes: depth, function, limit: exec::KERNEL_STACK_SIZE });
            }
        }
        self.race_point(function);
    }

    /// A point where the seeded schedule may delay this thread (no-op without a seed).
    pub fn race_point(&self, site: &'static str) {
        if let Some(schedule) = &self.schedule {
            schedule.point(site);
        }
    }

    /// The injected failure status for this call of `function`, if one is due.
    pub fn injected(&self, function: &'static str) -> Option<i32> {
        if !self.injections.any.load(Ordering::Acquire) {
            return None;
        }
        let mut plans = self.injections.plans.lock().unwrap_or_else(PoisonError::into_inner);
        let injection = plans.get_mut(function)?;
        injection.seen += 1;
        if injection.remaining == 0 || injection.seen % injection.every != 0 {
            return None;
        }
        injection.remaining -= 1;
        Some(injection.status)
    }

    /// Records that the run stopped (crash or bug check in a work item).
    pub fn record_stop(&self, stop: Stop) {
        // Only the first stop is kept: later ones are consequences of it.
        let _ = self.stop.set(stop);
    }

    /// Runs `job` on a worker asynchronously (work items, deferred cleanups); FltUnregisterFilter
    /// waits for all of them (B11).
    pub fn spawn(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) {
        *self.outstanding_work.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        let inner = Arc::clone(self);
        let lane = crate::schedule::child_lane();
        std::thread::spawn(move || {
            let job = move || {
                crate::schedule::begin_job(lane);
                job();
            };
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
            self.race_point("context cleanup");
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
            if let Some(record) = self.contexts.get(context.address) {
                record.set_life(Life::Freed);
            }
        }
    }

    /// A live context, or a recorded violation (UseAfterFree for a context whose count reached
    /// 0, NotAContext for a foreign pointer).
    pub fn live_context(&self, address: usize, function: &'static str) -> Option<&ContextRecord> {
        let Some(record) = self.contexts.get(address) else {
            self.violation(Violation::NotAContext { function, pointer: address });
            return None;
        };
        if record.refs() <= 0 {
            self.violation(Violation::UseAfterFree { function, context_type: record.context_type, tag: Tag(record.tag) });
            return None;
        }
        Some(record)
    }

    /// FltReferenceContext's +1: UseAfterFree when the count already reached 0.
    pub fn reference(&self, address: usize, function: &'static str) {
        let Some(record) = self.live_context(address, function) else { return };
        if !record.try_reference() {
            self.violation(Violation::UseAfterFree { function, context_type: record.context_type, tag: Tag(record.tag) });
        }
    }

    /// A caller's −1 (FltReleaseContext): UseAfterFree when the count was already 0, so a
    /// release too many is caught at the call that makes it. Returns the context when it
    /// reached 0.
    pub fn release(&self, address: usize, function: &'static str) -> Option<Doomed> {
        let Some(record) = self.contexts.get(address) else {
            self.violation(Violation::NotAContext { function, pointer: address });
            return None;
        };
        match record.try_release() {
            Err(()) => {
                self.violation(Violation::UseAfterFree { function, context_type: record.context_type, tag: Tag(record.tag) });
                None
            }
            Ok(false) => None,
            Ok(true) => Some(self.doom(address, record)),
        }
    }

    /// Drops the reference a link held (its key already removed and the record's link
    /// cleared); returns the context when it reached 0.
    pub fn drop_reference(&self, address: usize) -> Option<Doomed> {
        let record = self.contexts.get(address)?;
        match record.try_release() {
            Ok(true) => Some(self.doom(address, record)),
            Ok(false) | Err(()) => None,
        }
    }

    /// The count of `record` reached 0: it is dying; if it is still linked that is a
    /// verifier bug check (0xF5/0x6D), recorded, and the link is removed so the bookkeeping stays
    /// consistent. Never called with the context's link shard held while it is linked.
    fn doom(&self, address: usize, record: &ContextRecord) -> Doomed {
        record.set_life(Life::Dying);
        if let Some(key) = record.linked() {
            self.violation(Violation::ReleasedLinkedToZero { context_type: record.context_type, tag: Tag(record.tag) });
            let mut table = self.links.lock(key.object());
            if table.get(&key) == Some(&address) {
                table.remove(&key);
            }
            record.set_link(None);
        }
        Doomed { address, context_type: record.context_type.raw(), cleanup: record.cleanup, size: record.size }
    }

    /// Unlinks whatever is linked at `key` and drops the link's reference (B9).
    pub fn unlink(&self, key: LinkKey) -> Option<Doomed> {
        let mut table = self.links.lock(key.object());
        let address = table.remove(&key)?;
        let record = self.contexts.get(address)?;
        record.set_link(None);
        drop(table);
        self.drop_reference(address)
    }

    /// Unlinks every context whose key matches `predicate`, looking only in the shard of
    /// `object` when given (the keys of one object share a shard).
    pub fn unlink_where(&self, object: Option<u64>, predicate: impl Fn(LinkKey) -> bool) -> Vec<Doomed> {
        let mut unlinked = Vec::new();
        let mut visit = |table: &mut FnvMap<LinkKey, usize>| {
            let keys: Vec<LinkKey> = table.keys().copied().filter(|key| predicate(*key)).collect();
            for key in keys {
                if let Some(address) = table.remove(&key) {
                    if let Some(record) = self.contexts.get(address) {
                        record.set_link(None);
                    }
                    unlinked.push(address);
                }
            }
        };
        match object {
            Some(object) => visit(&mut self.links.lock(object)),
            None => {
                for mut table in self.links.each() {
                    visit(&mut table);
                }
            }
        }
        unlinked.into_iter().filter_map(|address| self.drop_reference(address)).collect()
    }

    /// Unlinks every context of `instance` (instance teardown, B9).
    pub fn unlink_instance(&self, instance: isize) -> Vec<Doomed> {
        self.unlink_where(None, |key| key.instance() == Some(instance))
    }

    /// The context linked at `key`, if any.
    pub fn linked_at(&self, key: LinkKey) -> Option<usize> {
        self.links.lock(key.object()).get(&key).copied()
    }

    /// The volume index of a volume handle.
    pub fn volume_of_handle(&self, handle: isize) -> Option<usize> {
        let offset = handle.checked_sub(VOLUME_BASE)?;
        if offset < 0 || offset % 0x100 != 0 {
            return None;
        }
        #[allow(clippy::cast_sign_loss)]
        let index = (offset / 0x100) as usize;
        (index < self.volumes().len()).then_some(index)
    }

    /// Checks a filter handle.
    pub fn filter_ok(&self, handle: isize) -> bool {
        handle == FILTER_HANDLE && self.filter().is_some()
    }

    /// Whether a filter is registered.
    pub fn filter_registered(&self) -> bool {
        self.filter().is_some()
    }

    /// Pool bytes and blocks outstanding.
    pub fn pool_outstanding(&self) -> (usize, usize) {
        self.pool.each().fold((0, 0), |(bytes, blocks), shard| (bytes + shard.values().map(|b| b.size).sum::<usize>(), blocks + shard.len()))
    }

    /// Contexts not yet freed.
    pub fn contexts_outstanding(&self) -> usize {
        let mut count = 0;
        self.contexts.for_each(|_, record| count += usize::from(record.life() != Life::Freed));
        count
    }

    /// The FILE_OBJECT record of `file_object`, through `visit`, with its shard held.
    pub fn with_file<R>(&self, file_object: usize, visit: impl FnOnce(&mut FileRecord) -> R) -> Option<R> {
        self.files.lock(file_object as u64).live.get_mut(&file_object).map(visit)
    }
}

/// The volume handle of volume index `index`.
#[must_use]
pub fn volume_handle(index: usize) -> isize {
    #[allow(clippy::cast_possible_wrap)]
    let index = index as isize;
    VOLUME_BASE + index * 0x100
}
