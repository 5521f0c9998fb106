//! [`Context<K, T>`]: one owned reference to a Filter Manager context, released on drop.
//!
//! The rules it enforces, with their Filter Manager source (learn.microsoft.com, "Releasing
//! Contexts", "Setting Contexts", "Deleting Contexts" and the fltkernel DDI pages; rule ids are
//! those of the project's fltmgr-semantics digest):
//!
//! | Call | Reference the caller owes | Where the guard settles it |
//! |---|---|---|
//! | FltAllocateContext | 1, unlinked (B1) | [`Context::new`] returns the guard |
//! | FltGet*Context ok | 1 (B1) | [`Context::get`] returns the guard |
//! | FltSet*Context, any result | the allocation reference (B5) | [`Context::attach`] / [`Context::replace`] keep or release it |
//! | KEEP_IF_EXISTS → ALREADY_DEFINED with OldContext | 1 on the existing context (B3) | [`Attached::Existing`] |
//! | REPLACE_IF_EXISTS with OldContext | the old link reference (B4) | [`Replaced::old`] |
//! | FltDelete*Context with OldContext | the link reference (B7) | [`Deleted::Found`] |
//! | FltDeleteContext | the caller's own reference stays (B8) | [`Context::unlink`] releases it |
//! | FltReferenceContext | 1 | `Clone` |
//!
//! A guard is moved into every call that consumes its reference, so a released guard cannot
//! be used:
//!
//! ```compile_fail,E0382
//! # use fltctx::{Context, Stream};
//! # struct Data(u32);
//! # fltctx::contexts! { static CONTEXTS: accounting = (); Data: Stream; }
//! fn after_release(guard: Context<Stream, Data>) -> u32 {
//!     drop(guard);
//!     guard.0
//! }
//! # fn main() {}
//! ```
//!
//! The kind is part of the type: a payload registered for stream-handle contexts has no
//! stream-context guard, so it cannot be set as one.
//!
//! ```compile_fail,E0271
//! # use fltctx::{Context, FileObjects, Stream, StreamHandle};
//! # struct HandleData(u32);
//! # fltctx::contexts! { static CONTEXTS: accounting = (); HandleData: StreamHandle; }
//! fn set_as_stream(objects: &FileObjects<'_>, handle: Context<Stream, HandleData>) {
//!     let _ = handle.attach(objects);
//! }
//! # fn main() {}
//! ```
//!
//! A raw pointer becomes a guard only through the unsafe [`Context::adopt`], which names the
//! call whose reference it takes over:
//!
//! ```compile_fail,E0061
//! # use fltctx::{Context, StreamHandle};
//! # struct HandleData(u32);
//! # fltctx::contexts! { static CONTEXTS: accounting = (); HandleData: StreamHandle; }
//! fn wrap(raw: windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_CONTEXT) -> Context<StreamHandle, HandleData> {
//!     // SAFETY: (the source is missing)
//!     unsafe { Context::adopt(raw) }
//! }
//! # fn main() {}
//! ```

use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use windows_sys::Wdk::Foundation::NonPagedPoolNx;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_SET_CONTEXT_KEEP_IF_EXISTS, FLT_SET_CONTEXT_REPLACE_IF_EXISTS, FltAllocateContext, FltDeleteContext, FltReferenceContext,
    FltReleaseContext, PFLT_CONTEXT,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_FLT_CONTEXT_ALREADY_DEFINED, STATUS_INSUFFICIENT_RESOURCES, STATUS_NOT_FOUND, STATUS_NOT_SUPPORTED,
    STATUS_SUCCESS,
};

use crate::accounting::Accounting;
use crate::kind::{Kind, Settable};
use crate::objects::Reaches;
use crate::registry::{Link, Registry};

/// A context payload: the type a context of kind `Kind` carries.
///
/// # Safety
/// Implemented by [`contexts!`](crate::contexts), which registers `Self` as the one payload of
/// its kind, with `size_of::<Self>()` and the generic cleanup of `Self`: a context of that kind
/// obtained from Filter Manager then always holds an initialised `Self`. Do not implement it
/// by hand.
///
/// `Send + Sync`: Filter Manager shares a context between threads and runs its cleanup (the
/// payload's `Drop`) on whichever thread releases it last.
///
/// ```compile_fail,E0277
/// // A payload that is not Sync cannot be registered.
/// struct Counter(core::cell::Cell<u32>);
/// fltctx::contexts! { static CONTEXTS: accounting = (); Counter: Stream; }
/// # fn main() {}
/// ```
pub unsafe trait Payload: Send + Sync + Sized + 'static {
    /// The context kind carrying this payload.
    type Kind: Kind;
    /// The hooks told about every allocation, attach, collision, replace, delete and free.
    type Accounting: Accounting;

    /// The one registry this payload type joins, if it is listed.
    #[doc(hidden)]
    #[must_use]
    fn registry() -> Option<&'static Registry<Self>> {
        None
    }

    /// The link the payload embeds for its registry.
    #[doc(hidden)]
    #[must_use]
    fn link(&self) -> Option<&Link> {
        None
    }
}

/// Which Filter Manager call handed over the reference [`Context::adopt`] takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// FltAllocateContext succeeded: a new context, count 1, unlinked.
    Allocate,
    /// FltGet*Context succeeded: +1 for the caller.
    Get,
    /// FltSet*Context(KEEP_IF_EXISTS) returned ALREADY_DEFINED with a non-NULL OldContext.
    AlreadyDefined,
    /// FltSet*Context(REPLACE_IF_EXISTS) succeeded with a non-NULL OldContext: the old link
    /// reference.
    Replaced,
    /// FltDelete*Context succeeded with a non-NULL OldContext: the link reference.
    Deleted,
    /// FltReferenceContext on a context the caller holds.
    Referenced,
    /// A reference [`Context::into_raw`] gave up earlier (a completion context, a section).
    IntoRaw,
}

/// Guards alive now, every kind: see [`live_guards`].
static LIVE_GUARDS: AtomicUsize = AtomicUsize::new(0);

/// Guards alive now. After FltUnregisterFilter returns, Filter Manager has run down every
/// callback, so a non-zero value means a guard was parked where unload does not reach (a
/// static): its later release would touch a filter that is gone. [`crate::unregister`]
/// reports it.
#[must_use]
pub fn live_guards() -> usize {
    LIVE_GUARDS.load(Ordering::Acquire)
}

/// One owned reference to a context of kind `K` carrying `T`.
pub struct Context<K: Kind, T: Payload<Kind = K>> {
    context: NonNull<T>,
    kind: PhantomData<K>,
}

// SAFETY: Filter Manager shares a context between threads with its own interlocked count; the
// payload is Send + Sync.
unsafe impl<K: Kind, T: Payload<Kind = K>> Send for Context<K, T> {}
// SAFETY: as above; `&Context` only gives `&T`, and T is Sync.
unsafe impl<K: Kind, T: Payload<Kind = K>> Sync for Context<K, T> {}

/// What a `FltGet*Context` call found.
#[must_use]
pub enum Lookup<C> {
    /// A context is attached; the guard holds the reference the get took.
    Found(C),
    /// No context is attached (STATUS_NOT_FOUND).
    NotFound,
    /// The object cannot carry this context type (STATUS_NOT_SUPPORTED): paging files, file
    /// systems without FSRTL_FLAG2_SUPPORTS_FILTER_CONTEXTS (D1).
    NotSupported,
    /// Any other failure status.
    Failed(NTSTATUS),
}

/// The context that ended up attached after [`Context::attach`].
#[must_use]
pub enum Attached<C> {
    /// Ours: the set succeeded; the guard holds what was the allocation reference.
    New(C),
    /// Another thread's, attached first (STATUS_FLT_CONTEXT_ALREADY_DEFINED); ours was released.
    Existing(C),
}

impl<C> Attached<C> {
    /// The attached context, whichever it is.
    #[must_use]
    pub fn into_inner(self) -> C {
        match self {
            Self::New(context) | Self::Existing(context) => context,
        }
    }
}

/// The outcome of [`Context::replace`].
#[must_use]
pub struct Replaced<C> {
    /// The context now attached (what was the allocation reference).
    pub new: C,
    /// The one it replaced, with the link reference Filter Manager handed over (B4); dropping
    /// it releases that reference.
    pub old: Option<C>,
}

/// The outcome of [`Context::delete`].
#[must_use]
pub enum Deleted<C> {
    /// The context was unlinked; the guard holds the link reference Filter Manager handed
    /// over (B7), so the payload lives until it drops.
    Found(C),
    /// None was attached (STATUS_NOT_FOUND).
    NotFound,
    /// Any other failure status (STATUS_FLT_DELETING_OBJECT, STATUS_NOT_SUPPORTED).
    Failed(NTSTATUS),
}

/// The alignment a payload may rely on: Filter Manager places the context after its own header
/// in a pool block, which guarantees pointer alignment, not the pool's 16 bytes.
pub const CONTEXT_ALIGNMENT: usize = 8;

impl<K: Kind, T: Payload<Kind = K>> Context<K, T> {
    /// FltAllocateContext from NonPagedPoolNx, then moves `payload` in before anything can
    /// release it: Filter Manager does not zero context memory (A5), so the cleanup callback
    /// must never see an uninitialised payload. Non-paged, so that a release is legal up to
    /// DISPATCH_LEVEL (A8) and volume contexts are allowed (A6).
    ///
    /// On failure the payload is dropped here, so what it owns is freed.
    ///
    /// # Errors
    /// FltAllocateContext's failure status (STATUS_INSUFFICIENT_RESOURCES,
    /// STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND when `T` is not in the registration).
    pub fn new(objects: &impl Reaches<K>, payload: T) -> Result<Self, NTSTATUS> {
        let filter = objects.raw().filter;
        let mut raw: PFLT_CONTEXT = core::ptr::null_mut();
        // SAFETY: `filter` came with the callback's objects; the type and size are T's
        // registration entry (Payload's contract); `raw` is a valid out pointer.
        let status = unsafe { FltAllocateContext(filter, K::CONTEXT_TYPE, size_of::<T>(), NonPagedPoolNx, &raw mut raw) };
        if status != STATUS_SUCCESS || raw.is_null() {
            return Err(if status == STATUS_SUCCESS { STATUS_INSUFFICIENT_RESOURCES } else { status });
        }
        T::Accounting::allocated(K::KIND);
        // SAFETY: Filter Manager returned size_of::<T>() bytes, pointer-aligned (enough for T:
        // ContextEntry::of checked), uninitialised and ours alone until published.
        unsafe { raw.cast::<T>().write(payload) };
        // SAFETY: FltAllocateContext succeeded and the payload is initialised.
        Ok(unsafe { Self::adopt(raw, Source::Allocate) })
    }

    /// Takes over one reference that a Filter Manager call handed back.
    ///
    /// # Safety
    /// `raw` is a non-NULL context of kind `K` of this driver (hence, by [`Payload`]'s
    /// contract, an initialised `T`) for which the caller owns one reference obtained as
    /// `source` says; the guard releases it on drop.
    #[must_use]
    pub unsafe fn adopt(raw: PFLT_CONTEXT, source: Source) -> Self {
        let _ = source;
        LIVE_GUARDS.fetch_add(1, Ordering::Relaxed);
        Self {
            // SAFETY: the caller guarantees `raw` is non-NULL.
            context: unsafe { NonNull::new_unchecked(raw.cast::<T>()) },
            kind: PhantomData,
        }
    }

    /// The raw context pointer, for Filter Manager calls; the guard keeps its reference.
    #[must_use]
    pub fn as_raw(&self) -> PFLT_CONTEXT {
        self.context.as_ptr().cast()
    }

    /// Gives up the guard without releasing: the reference goes with the pointer (to
    /// FltCreateSectionForDataScan, or through a CompletionContext to the post-operation,
    /// which takes it back with `adopt(raw, Source::IntoRaw)`).
    #[must_use]
    pub fn into_raw(self) -> PFLT_CONTEXT {
        let raw = self.as_raw();
        core::mem::forget(self);
        LIVE_GUARDS.fetch_sub(1, Ordering::Relaxed);
        raw
    }

    /// Adds this (attached) context's payload to the one registry its type names in
    /// [`contexts!`](crate::contexts); a no-op for a payload without one or already listed. It
    /// leaves by itself, in the cleanup callback.
    pub fn list(&self) {
        if let Some(registry) = T::registry() {
            registry.insert(self);
        }
    }

    /// `FltGet*Context` of kind `K` on the callback's objects.
    pub fn get(objects: &impl Reaches<K>) -> Lookup<Self> {
        let raw_objects = objects.raw();
        let mut raw: PFLT_CONTEXT = core::ptr::null_mut();
        // SAFETY: the objects are the running callback's and reach kind K; `raw` is a valid out
        // pointer.
        let status = unsafe { K::get(&raw_objects, &raw mut raw) };
        match status {
            STATUS_SUCCESS if !raw.is_null() => {
                // SAFETY: a successful get returns an attached context of kind K (a T) with a
                // reference for the caller (B1).
                Lookup::Found(unsafe { Self::adopt(raw, Source::Get) })
            }
            STATUS_NOT_FOUND | STATUS_SUCCESS => Lookup::NotFound,
            STATUS_NOT_SUPPORTED => Lookup::NotSupported,
            other => Lookup::Failed(other),
        }
    }

    /// `FltDelete*Context` of kind `K` on the callback's objects, with an OldContext: the
    /// context is unlinked and its link reference comes back as a guard (B7), so the release
    /// Filter Manager expects cannot be forgotten. For a section context, which has no
    /// per-object delete call, this is NotFound; use [`Context::unlink`] on a guard.
    pub fn delete(objects: &impl Reaches<K>) -> Deleted<Self> {
        let raw_objects = objects.raw();
        let mut raw: PFLT_CONTEXT = core::ptr::null_mut();
        // SAFETY: as for `get`.
        let Some(status) = (unsafe { K::delete(&raw_objects, &raw mut raw) }) else { return Deleted::NotFound };
        match status {
            STATUS_SUCCESS if !raw.is_null() => {
                T::Accounting::deleted(K::KIND);
                // SAFETY: a successful delete with a non-NULL OldContext hands the link
                // reference of the context of kind K (a T) to the caller (B7).
                Deleted::Found(unsafe { Self::adopt(raw, Source::Deleted) })
            }
            STATUS_NOT_FOUND | STATUS_SUCCESS => Deleted::NotFound,
            other => Deleted::Failed(other),
        }
    }

    /// `FltDeleteContext` on this context: unlinks it from its object (Filter Manager drops the
    /// link reference), then releases the guard's own reference, which FltDeleteContext leaves
    /// with the caller (B8).
    pub fn unlink(self) {
        T::Accounting::deleted(K::KIND);
        // SAFETY: the guard holds a reference, which FltDeleteContext requires; legal at
        // <= APC_LEVEL, which every way to get a guard but Clone (a guard is already
        // held) and adopt (the caller's contract) checked.
        unsafe { FltDeleteContext(self.as_raw()) };
        drop(self);
    }

    /// Links the new context to the objects with `operation`, settling the allocation
    /// reference: kept on success (the link holds its own), released on failure (B5).
    fn set(self, objects: &impl Reaches<K>, operation: i32, old: &mut PFLT_CONTEXT) -> Result<Self, (NTSTATUS, PFLT_CONTEXT)>
    where
        K: Settable,
    {
        let raw_objects = objects.raw();
        // SAFETY: `self` is an unlinked context of kind K we hold a reference to; the objects
        // reach K; `old` is a valid out pointer.
        let status = unsafe { K::set(&raw_objects, operation, self.as_raw(), old) };
        if status == STATUS_SUCCESS {
            T::Accounting::attached(K::KIND);
            return Ok(self);
        }
        // Every failed set leaves the new context unlinked: dropping `self` releases the
        // allocation reference, count 0, cleanup runs (B5).
        drop(self);
        Err((status, *old))
    }
}

impl<K: Settable, T: Payload<Kind = K>> Context<K, T> {
    /// `FltSet*Context(FLT_SET_CONTEXT_KEEP_IF_EXISTS)`: returns the context that is attached
    /// afterwards, ours or the one another thread attached first (B3), so the race two first
    /// opens of a stream run cannot be mishandled.
    ///
    /// # Errors
    /// The set's failure status other than ALREADY_DEFINED (our context is released, B5/B6).
    pub fn attach(self, objects: &impl Reaches<K>) -> Result<Attached<Self>, NTSTATUS> {
        let mut existing: PFLT_CONTEXT = core::ptr::null_mut();
        match self.set(objects, FLT_SET_CONTEXT_KEEP_IF_EXISTS, &mut existing) {
            Ok(new) => Ok(Attached::New(new)),
            Err((STATUS_FLT_CONTEXT_ALREADY_DEFINED, existing)) if !existing.is_null() => {
                T::Accounting::collided(K::KIND);
                // SAFETY: ALREADY_DEFINED with a non-NULL OldContext hands back the attached
                // context of the same kind (a T) with a reference for us (B3).
                Ok(Attached::Existing(unsafe { Self::adopt(existing, Source::AlreadyDefined) }))
            }
            Err((status, _)) => Err(status),
        }
    }

    /// `FltSet*Context(FLT_SET_CONTEXT_REPLACE_IF_EXISTS)` with an OldContext: ours is
    /// attached and the one it replaced comes back as a guard holding the old link reference
    /// (B4), released when it drops.
    ///
    /// # Errors
    /// The set's failure status (our context is released, B5/B6).
    pub fn replace(self, objects: &impl Reaches<K>) -> Result<Replaced<Self>, NTSTATUS> {
        let mut old: PFLT_CONTEXT = core::ptr::null_mut();
        match self.set(objects, FLT_SET_CONTEXT_REPLACE_IF_EXISTS, &mut old) {
            Ok(new) => {
                let old = (!old.is_null()).then(|| {
                    T::Accounting::replaced(K::KIND);
                    // SAFETY: a successful REPLACE with a non-NULL OldContext hands the old
                    // context's link reference (kind K, a T) to the caller (B4).
                    unsafe { Self::adopt(old, Source::Replaced) }
                });
                Ok(Replaced { new, old })
            }
            Err((status, _)) => Err(status),
        }
    }
}

impl<K: Kind, T: Payload<Kind = K>> Deref for Context<K, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard's reference keeps the context, and its initialised payload, alive.
        unsafe { self.context.as_ref() }
    }
}

impl<K: Kind, T: Payload<Kind = K>> Clone for Context<K, T> {
    fn clone(&self) -> Self {
        // SAFETY: we hold a reference, so the context is alive; FltReferenceContext adds one
        // for the new guard (legal up to DISPATCH_LEVEL, A8).
        unsafe { FltReferenceContext(self.as_raw()) };
        // SAFETY: the reference was just taken for the new guard.
        unsafe { Self::adopt(self.as_raw(), Source::Referenced) }
    }
}

impl<K: Kind, T: Payload<Kind = K>> Drop for Context<K, T> {
    fn drop(&mut self) {
        LIVE_GUARDS.fetch_sub(1, Ordering::Relaxed);
        release(self.as_raw());
    }
}

/// Gives back one reference: at once, or — on a thread inside a registry visit — when the
/// visit has released its lock. A release there could be the last one, run the cleanup and
/// with it the removal from the registry being visited, on the thread that holds its lock;
/// deferred, the payload the visitor borrows also stays alive for the whole call.
fn release(raw: PFLT_CONTEXT) {
    if visits::defer(raw) {
        return;
    }
    // SAFETY: the caller owned exactly one reference and gives it back once; contexts are
    // non-paged, so this is legal up to DISPATCH_LEVEL (A8).
    unsafe { FltReleaseContext(raw) };
}

/// The threads inside a registry visit and the releases deferred on each.
pub(crate) mod visits {
    use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
    use core::sync::atomic::{AtomicPtr, AtomicUsize};

    use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FltReleaseContext, PFLT_CONTEXT};

    /// Visits at once that defer releases; a fifth runs without (see [`Scope::begin`]).
    const SLOTS: usize = 4;
    /// Releases one visit defers; past that they happen at once.
    const DEFERRED: usize = 32;

    struct Slot {
        /// The visiting thread's id, 0 when free.
        thread: AtomicUsize,
        len: AtomicUsize,
        deferred: [AtomicPtr<core::ffi::c_void>; DEFERRED],
    }

    static SLOTS_IN_USE: AtomicUsize = AtomicUsize::new(0);
    static VISITS: [Slot; SLOTS] =
        [const { Slot { thread: AtomicUsize::new(0), len: AtomicUsize::new(0), deferred: [const { AtomicPtr::new(core::ptr::null_mut()) }; DEFERRED] } }; SLOTS];

    /// The current thread's id (`PsGetCurrentThreadId`, any IRQL), as a number.
    pub(crate) fn current_thread() -> usize {
        // SAFETY: PsGetCurrentThreadId takes no arguments and may be called at any IRQL.
        unsafe { windows_sys::Wdk::System::SystemServices::PsGetCurrentThreadId() as usize }
    }

    /// Defers `raw`'s release if this thread is visiting; false when it must release now.
    pub(super) fn defer(raw: PFLT_CONTEXT) -> bool {
        if SLOTS_IN_USE.load(Acquire) == 0 {
            return false;
        }
        let me = current_thread();
        let Some(slot) = VISITS.iter().find(|slot| slot.thread.load(Acquire) == me) else { return false };
        // Only the owning thread touches its slot's entries.
        let len = slot.len.load(Relaxed);
        if len == DEFERRED {
            return false;
        }
        slot.deferred[len].store(raw, Relaxed);
        slot.len.store(len + 1, Relaxed);
        true
    }

    /// A visit's claim on a slot; dropped after the registry lock is released, it performs
    /// the deferred releases.
    pub(crate) struct Scope(Option<&'static Slot>);

    impl Scope {
        /// Claims a free slot for this thread, or none when this thread already has one (a
        /// nested visit) or all are taken.
        pub(crate) fn begin() -> Self {
            let me = current_thread();
            if VISITS.iter().any(|slot| slot.thread.load(Acquire) == me) {
                return Self(None);
            }
            let claimed = VISITS.iter().find(|slot| slot.thread.compare_exchange(0, me, Acquire, Relaxed).is_ok());
            if claimed.is_some() {
                SLOTS_IN_USE.fetch_add(1, Release);
            }
            Self(claimed)
        }
    }

    impl Drop for Scope {
        fn drop(&mut self) {
            let Some(slot) = self.0 else { return };
            let len = slot.len.swap(0, Relaxed);
            slot.thread.store(0, Release);
            SLOTS_IN_USE.fetch_sub(1, Release);
            for entry in &slot.deferred[..len] {
                let raw = entry.swap(core::ptr::null_mut(), Relaxed);
                // SAFETY: a reference a guard gave up on this thread during the visit, released
                // once, now that no registry lock is held.
                unsafe { FltReleaseContext(raw) };
            }
        }
    }
}

/// The ContextCleanupCallback registered for `T`: leaves `T`'s registry first — so no visitor
/// can see the payload while or after it is dropped — then drops it in place. Filter Manager
/// frees the memory itself (A7) and calls this once, at count 0 (B10).
pub(crate) unsafe extern "system" fn cleanup<T: Payload>(context: PFLT_CONTEXT, _context_type: u16) {
    let payload = context.cast::<T>();
    if let Some(registry) = T::registry() {
        // SAFETY: the payload is initialised (Payload's contract) and alive until the drop
        // below.
        registry.remove(unsafe { &*payload });
    }
    // SAFETY: Filter Manager calls the cleanup callback once, when the last reference to a
    // context of T's kind is gone; every such context was initialised with a T by
    // Context::new before any reference could be released.
    unsafe { core::ptr::drop_in_place(payload) };
    T::Accounting::freed(<T::Kind as Kind>::KIND);
}
