//! Live accounting of contexts and open handles, read by the port.
//!
//! Counters are lock-free atomics, so any callback can update them at any IRQL; the
//! instance, stream and handle registries are read under a shared push lock (<= APC_LEVEL).

use core::ops::ControlFlow;
use core::sync::atomic::{AtomicU64, Ordering};

use ctxguard_protocol::KindStats;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_INSTANCE;

use crate::context::registry::Registry;
use crate::instance::{InstanceCounters, InstanceData};
use crate::operations::{StreamData, StreamHandleData};

/// Counters of one context type.
pub struct KindCounters {
    allocated: AtomicU64,
    attached: AtomicU64,
    collisions: AtomicU64,
    freed: AtomicU64,
    high_water: AtomicU64,
}

impl KindCounters {
    /// All zero.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            allocated: AtomicU64::new(0),
            attached: AtomicU64::new(0),
            collisions: AtomicU64::new(0),
            freed: AtomicU64::new(0),
            high_water: AtomicU64::new(0),
        }
    }

    /// Counts an allocation and raises the high-water mark.
    pub fn allocated(&self) {
        let allocated = self.allocated.fetch_add(1, Ordering::Relaxed) + 1;
        let live = allocated.saturating_sub(self.freed.load(Ordering::Relaxed));
        self.high_water.fetch_max(live, Ordering::Relaxed);
    }

    /// Counts a successful attach.
    pub fn attached(&self) {
        self.attached.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a set that lost to an attached context.
    pub fn collided(&self) {
        self.collisions.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a cleanup callback.
    pub fn freed(&self) {
        self.freed.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the counters, in the wire format's shape (the port sends them as they are).
    pub fn snapshot(&self) -> KindStats {
        let freed = self.freed.load(Ordering::Relaxed);
        let allocated = self.allocated.load(Ordering::Relaxed);
        KindStats {
            allocated,
            attached: self.attached.load(Ordering::Relaxed),
            collisions: self.collisions.load(Ordering::Relaxed),
            freed,
            live: allocated.saturating_sub(freed),
            high_water: self.high_water.load(Ordering::Relaxed),
        }
    }
}

impl Default for KindCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters of instance contexts.
pub static INSTANCE: KindCounters = KindCounters::new();
/// Counters of stream contexts.
pub static STREAM: KindCounters = KindCounters::new();
/// Counters of stream-handle contexts.
pub static STREAM_HANDLE: KindCounters = KindCounters::new();

/// Attached instance contexts, for per-instance counters.
pub static INSTANCES: Registry<InstanceData> = Registry::new();
/// Attached stream contexts, for ListStreams.
pub static STREAMS: Registry<StreamData> = Registry::new();
/// Attached stream-handle contexts, for QueryHandles.
pub static HANDLES: Registry<StreamHandleData> = Registry::new();

/// Handles open now, all streams.
static OPEN_HANDLES: AtomicU64 = AtomicU64::new(0);

/// Initialises the registries' locks (DriverEntry, before registering the filter).
pub fn initialize() {
    INSTANCES.initialize();
    STREAMS.initialize();
    HANDLES.initialize();
}

/// Deletes the registries' locks (unload, after FltUnregisterFilter freed every context).
pub fn delete() {
    INSTANCES.delete();
    STREAMS.delete();
    HANDLES.delete();
}

/// Counts a handle opened on a tracked stream.
pub fn handle_opened() {
    OPEN_HANDLES.fetch_add(1, Ordering::Relaxed);
}

/// Counts a tracked handle closed (cleanup, or its context torn down first).
pub fn handle_closed() {
    OPEN_HANDLES.fetch_sub(1, Ordering::Relaxed);
}

/// Runs `update` on the counters of `instance`'s context, if attached. No reference is taken:
/// the registry's shared lock keeps the payload alive for the call.
pub fn with_instance(instance: PFLT_INSTANCE, update: impl Fn(&InstanceCounters)) {
    INSTANCES.visit(&mut |data| {
        if data.instance == instance {
            update(&data.counters);
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
}

/// Everything the port's GetStats reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Instance contexts.
    pub instance: KindStats,
    /// Stream contexts.
    pub stream: KindStats,
    /// Stream-handle contexts.
    pub stream_handle: KindStats,
    /// Handles open now (successful creates whose cleanup has not run), all streams.
    pub open_handles: u64,
}

/// Reads all counters.
pub fn snapshot() -> Snapshot {
    Snapshot {
        instance: INSTANCE.snapshot(),
        stream: STREAM.snapshot(),
        stream_handle: STREAM_HANDLE.snapshot(),
        open_handles: OPEN_HANDLES.load(Ordering::Relaxed),
    }
}

/// One stream as the port lists it.
pub struct StreamView<'a> {
    /// The normalized name (UTF-16), e.g. `\Device\HarddiskVolume2\dir\a.txt:ads`.
    pub name: &'a [u16],
    /// Handles open on the stream now.
    pub open_handles: u32,
    /// The process that opened the stream first.
    pub first_opener_pid: u32,
    /// When it was first opened (100 ns since 1601, UTC).
    pub first_open_time: i64,
}

/// One open handle as the port lists it.
pub struct HandleView<'a> {
    /// The normalized name of the stream the handle is open on.
    pub stream_name: &'a [u16],
    /// The process that opened it.
    pub pid: u32,
    /// The access it asked for (`ACCESS_MASK`).
    pub desired_access: u32,
    /// The sharing it granted (`FILE_SHARE_*`).
    pub share_access: u32,
    /// When it was opened (100 ns since 1601, UTC).
    pub create_time: i64,
}

/// Calls `visit` for each live stream, skipping the first `skip`, until it returns
/// `ControlFlow::Break`. Runs at PASSIVE_LEVEL under a shared lock: `visit` must only copy.
pub fn visit_streams(skip: usize, visit: &mut dyn FnMut(&StreamView<'_>) -> ControlFlow<()>) {
    let mut index = 0_usize;
    STREAMS.visit(&mut |stream| {
        index += 1;
        if index <= skip {
            return ControlFlow::Continue(());
        }
        visit(&StreamView {
            name: &stream.name,
            open_handles: stream.open_handles.load(Ordering::Relaxed),
            first_opener_pid: stream.first_opener_pid,
            first_open_time: stream.first_open_time,
        })
    });
}

/// Calls `visit` for each open handle (cleanup not yet seen) until it returns
/// `ControlFlow::Break`. Runs at PASSIVE_LEVEL under a shared lock: `visit` must only copy.
pub fn visit_handles(visit: &mut dyn FnMut(&HandleView<'_>) -> ControlFlow<()>) {
    HANDLES.visit(&mut |handle| {
        if handle.cleaned_up.load(Ordering::Acquire) {
            return ControlFlow::Continue(());
        }
        visit(&HandleView {
            stream_name: &handle.stream.name,
            pid: handle.requestor_pid,
            desired_access: handle.desired_access,
            share_access: u32::from(handle.share_access),
            create_time: handle.create_time,
        })
    });
}
