//! Live accounting of contexts, open handles and per-volume operations, read by the port.
//!
//! Everything here is a lock-free atomic, so any callback can update it at any IRQL. This
//! module imports nothing of the driver: the guards report through [`ContextAccounting`] (the
//! fltctx hook), the callbacks through the functions below.

use core::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

use ctxguard_protocol::KindStats;
use fltctx::ContextKind;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_INSTANCE;

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

    fn allocated(&self) {
        let allocated = self.allocated.fetch_add(1, Ordering::Relaxed) + 1;
        let live = allocated.saturating_sub(self.freed.load(Ordering::Relaxed));
        self.high_water.fetch_max(live, Ordering::Relaxed);
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

/// The fltctx accounting hook of every ctxguard payload.
pub enum ContextAccounting {}

fn counters(kind: ContextKind) -> Option<&'static KindCounters> {
    match kind {
        ContextKind::Instance => Some(&INSTANCE),
        ContextKind::Stream => Some(&STREAM),
        ContextKind::StreamHandle => Some(&STREAM_HANDLE),
        _ => None,
    }
}

impl fltctx::Accounting for ContextAccounting {
    fn allocated(kind: ContextKind) {
        if let Some(counters) = counters(kind) {
            counters.allocated();
        }
    }
    fn attached(kind: ContextKind) {
        if let Some(counters) = counters(kind) {
            counters.attached.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn collided(kind: ContextKind) {
        if let Some(counters) = counters(kind) {
            counters.collisions.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn freed(kind: ContextKind) {
        if let Some(counters) = counters(kind) {
            counters.freed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Handles open now, all streams.
static OPEN_HANDLES: AtomicU64 = AtomicU64::new(0);

/// Counts a handle opened on a tracked stream.
pub fn handle_opened() {
    OPEN_HANDLES.fetch_add(1, Ordering::Relaxed);
}

/// Counts a tracked handle closed (cleanup, or its context torn down first).
pub fn handle_closed() {
    OPEN_HANDLES.fetch_sub(1, Ordering::Relaxed);
}

/// Per-volume operation counts.
#[derive(Default)]
pub struct InstanceCounters {
    /// Successful creates seen in post-create.
    pub opens: AtomicU64,
    /// Creates the file system failed.
    pub failed_creates: AtomicU64,
    /// IRP_MJ_CLEANUP (handle closes) of handles ctxguard tracked.
    pub cleanups: AtomicU64,
    /// IRP_MJ_CLOSE requests seen on the instance.
    pub closes: AtomicU64,
}

/// Instances whose counters can be kept at once; an instance beyond that is not counted.
pub const INSTANCE_SLOTS: usize = 64;

/// One volume's counters, keyed by its instance handle (0 = free).
struct InstanceSlot {
    instance: AtomicIsize,
    counters: InstanceCounters,
}

/// The per-instance counters, an open-addressing table keyed by the instance handle: a create
/// or close finds its instance's counters with a hash and a few atomic loads, with no lock
/// and no Filter Manager call (it used to scan the instance list under a push lock).
static INSTANCES: [InstanceSlot; INSTANCE_SLOTS] = [const {
    InstanceSlot {
        instance: AtomicIsize::new(0),
        counters: InstanceCounters {
            opens: AtomicU64::new(0),
            failed_creates: AtomicU64::new(0),
            cleanups: AtomicU64::new(0),
            closes: AtomicU64::new(0),
        },
    }
}; INSTANCE_SLOTS];

/// The probe order of `instance`: its slot by hash, then the following ones.
fn probe(instance: PFLT_INSTANCE) -> impl Iterator<Item = &'static InstanceSlot> {
    // Instance handles are pool addresses: the low bits are alignment, the next ones vary.
    #[allow(clippy::cast_sign_loss)]
    let start = ((instance as usize) >> 4).wrapping_mul(0x9E37_79B9) % INSTANCE_SLOTS;
    (0..INSTANCE_SLOTS).map(move |step| &INSTANCES[(start + step) % INSTANCE_SLOTS])
}

/// A slot whose instance went: skipped by lookups (the probe run stays intact), reused by
/// [`add_instance`].
const TOMBSTONE: isize = -1;

/// Claims zeroed counters for a newly attached instance (InstanceSetup); false when the table
/// is full (the instance is then simply not counted).
#[allow(clippy::must_use_candidate)] // A full table only means the volume goes uncounted.
pub fn add_instance(instance: PFLT_INSTANCE) -> bool {
    if probe(instance).take_while(|slot| slot.instance.load(Ordering::Acquire) != 0).any(|slot| slot.instance.load(Ordering::Acquire) == instance) {
        return true;
    }
    for slot in probe(instance) {
        let key = slot.instance.load(Ordering::Acquire);
        if key == 0 || key == TOMBSTONE {
            // Nobody counts into a free slot, so zeroing before the claim races with no one.
            for counter in [&slot.counters.opens, &slot.counters.failed_creates, &slot.counters.cleanups, &slot.counters.closes] {
                counter.store(0, Ordering::Relaxed);
            }
            if slot.instance.compare_exchange(key, instance, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Frees the instance's slot (its context's cleanup).
pub fn remove_instance(instance: PFLT_INSTANCE) {
    if let Some(slot) = probe(instance)
        .take_while(|slot| slot.instance.load(Ordering::Acquire) != 0)
        .find(|slot| slot.instance.load(Ordering::Acquire) == instance)
    {
        slot.instance.store(TOMBSTONE, Ordering::Release);
    }
}

/// Adds one to `field` of `instance`'s counters, if it has a slot.
pub fn count(instance: PFLT_INSTANCE, field: fn(&InstanceCounters) -> &AtomicU64) {
    for slot in probe(instance) {
        match slot.instance.load(Ordering::Acquire) {
            0 => return,
            key if key == instance => {
                field(&slot.counters).fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => {}
        }
    }
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
