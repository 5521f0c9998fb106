//! What the surface modules share: the object kinds they leak-check, per-thread identity, and
//! the unload check that asks each module for what is still outstanding. Each module keeps its
//! own table behind its own lock (not in the central `State`), reset when an emulator loads.

use std::fmt;

use crate::exec::Irql;
use crate::state::{self, Inner};
use crate::verifier::Violation;

/// An emulated kernel object type with leak and wrong-release checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// An ERESOURCE (ExInitializeResourceLite … ExDeleteResourceLite).
    Resource,
    /// A reference to a volume object (FltGetVolumeFrom* … FltObjectDereference).
    VolumeReference,
    /// A reference to an instance object (FltGetInstanceFromName, FltObjectReference …).
    InstanceReference,
    /// A reference to a process object (PsLookupProcessByProcessId, ObReferenceObject …
    /// ObDereferenceObject).
    ProcessReference,
    /// A process-creation notify routine still registered.
    NotifyRoutine,
    /// A KEVENT (KeInitializeEvent).
    Event,
    /// A FAST_MUTEX or KGUARDED_MUTEX.
    Mutex,
    /// An NPAGED_LOOKASIDE_LIST not deleted.
    LookasideList,
    /// An MDL (IoAllocateMdl … IoFreeMdl).
    Mdl,
    /// A critical region (KeEnterCriticalRegion … KeLeaveCriticalRegion).
    CriticalRegion,
    /// A deferred I/O work item (FltAllocateDeferredIoWorkItem … FltFreeDeferredIoWorkItem).
    DeferredIoWorkItem,
    /// A handle from FltCreateFile* (… FltClose).
    FileHandle,
    /// A FILE_OBJECT reference from FltCreateFileEx(2) or ObReferenceObject on one (…
    /// ObDereferenceObject).
    FileObjectReference,
    /// Callback data from FltAllocateCallbackData (… FltFreeCallbackData).
    CallbackData,
}

impl ObjectKind {
    /// The object type's name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Resource => "ERESOURCE",
            ObjectKind::VolumeReference => "volume object",
            ObjectKind::InstanceReference => "instance/filter object",
            ObjectKind::ProcessReference => "object reference",
            ObjectKind::NotifyRoutine => "process notify routine",
            ObjectKind::Event => "event",
            ObjectKind::Mutex => "fast/guarded mutex",
            ObjectKind::LookasideList => "lookaside list",
            ObjectKind::Mdl => "MDL",
            ObjectKind::CriticalRegion => "critical region",
            ObjectKind::DeferredIoWorkItem => "deferred I/O work item",
            ObjectKind::FileHandle => "file handle (FltCreateFile)",
            ObjectKind::FileObjectReference => "FILE_OBJECT reference (FltCreateFileEx)",
            ObjectKind::CallbackData => "callback data (FltAllocateCallbackData)",
        }
    }
}

/// What is left over when `count` objects of this kind leak (for the report).
impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Resource => "ERESOURCE(s) not deleted",
            ObjectKind::VolumeReference => "volume object reference(s) not dereferenced",
            ObjectKind::InstanceReference => "instance object reference(s) not dereferenced",
            ObjectKind::ProcessReference => "process object reference(s) not dereferenced",
            ObjectKind::NotifyRoutine => "process notify routine(s) not removed",
            ObjectKind::Event => "event",
            ObjectKind::Mutex => "mutex",
            ObjectKind::LookasideList => "lookaside list(s) not deleted",
            ObjectKind::Mdl => "MDL(s) not freed",
            ObjectKind::CriticalRegion => "critical region",
            ObjectKind::DeferredIoWorkItem => "deferred I/O work item(s) not freed",
            ObjectKind::FileHandle => "file handle(s) (FltCreateFile) not closed with FltClose",
            ObjectKind::FileObjectReference => "FILE_OBJECT reference(s) (FltCreateFileEx) not dereferenced",
            ObjectKind::CallbackData => "callback data (FltAllocateCallbackData) not freed",
        })
    }
}

/// Counts the call, checks its IRQL and returns the live emulator (None outside a run).
#[must_use]
pub fn call(function: &'static str, max_irql: Irql) -> Option<&'static Inner> {
    let inner = state::current()?;
    inner.enter(function, max_irql);
    Some(inner)
}

/// Counts the call and checks its IRQL.
pub fn count(function: &'static str, max_irql: Irql) {
    if let Some(inner) = state::current() {
        inner.enter(function, max_irql);
    }
}

/// Records a misuse of an object of `kind`.
pub fn misuse(function: &'static str, kind: ObjectKind, reason: &'static str) {
    if let Some(inner) = state::current() {
        inner.violation(Violation::ObjectMisuse { function, kind, reason });
    }
}

/// Records a violation if an emulator is live.
pub fn flag(violation: Violation) {
    if let Some(inner) = state::current() {
        inner.violation(violation);
    }
}

/// This host thread's emulated thread id (PsGetCurrentThreadId): stable per thread, a multiple
/// of 4 like real client ids.
#[must_use]
pub fn thread_id() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    thread_local! {
        static ID: usize = NEXT.fetch_add(1, Ordering::Relaxed) * 4 + 0x1000;
    }
    ID.with(|id| *id)
}

/// Forgets every module's objects (a new emulator is loading).
pub fn reset() {
    crate::resource::reset();
    crate::sync::reset();
    crate::ps::reset();
    crate::volume::reset();
    crate::mdl::reset();
    crate::createpath::reset();
    crate::pend::reset();
    crate::rw::reset();
    crate::fltfile::reset();
    crate::cbdata::reset();
}

/// What every module still holds at the end of unload.
#[must_use]
pub fn leaks() -> Vec<Violation> {
    let mut found = Vec::new();
    for (kind, count) in crate::resource::outstanding()
        .into_iter()
        .chain(crate::sync::outstanding())
        .chain(crate::ps::outstanding())
        .chain(crate::volume::outstanding())
        .chain(crate::mdl::outstanding())
        .chain(crate::pend::outstanding())
        .chain(crate::fltfile::outstanding())
        .chain(crate::cbdata::outstanding())
    {
        if count > 0 {
            found.push(Violation::ObjectLeaked { kind, count });
        }
    }
    found
}

/// A table behind its own lock, usable from `static`.
#[derive(Default)]
pub struct Table<K, V>(std::sync::Mutex<Option<std::collections::HashMap<K, V>>>);

impl<K: std::hash::Hash + Eq, V> Table<K, V> {
    /// An empty table.
    #[must_use]
    pub const fn new() -> Self {
        Self(std::sync::Mutex::new(None))
    }

    /// Runs `f` on the map (a poisoned lock is still usable: each call keeps it consistent).
    pub fn with<R>(&self, f: impl FnOnce(&mut std::collections::HashMap<K, V>) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(guard.get_or_insert_with(std::collections::HashMap::new))
    }

    /// Empties the table.
    pub fn clear(&self) {
        self.with(std::collections::HashMap::clear);
    }
}
