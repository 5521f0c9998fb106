//! Context guards: every Filter Manager context reference ctxguard holds is a value of
//! [`Context`], whose `Drop` is `FltReleaseContext` and whose `Clone` is `FltReferenceContext`.
//!
//! This module (with [`registry`]) is where the driver's context `unsafe` lives. The rules it
//! encodes are those of fltmgr-semantics B1–B10:
//! - a guard owns exactly one reference; the only way to make one from a raw pointer is
//!   [`Context::adopt`], which names the Filter Manager call whose reference it takes over;
//! - allocation writes the whole payload before anything can release it (Filter Manager does
//!   not zero context memory, A5), so the cleanup callback always drops an initialised value;
//! - the payload's `Drop` runs exactly once, from the registered ContextCleanupCallback, when
//!   the last reference goes (B10); Filter Manager then frees the memory itself (A7);
//! - [`Context::attach`] sets with `FLT_SET_CONTEXT_KEEP_IF_EXISTS` and always hands back the
//!   context that ended up attached, releasing the allocation reference or the loser (B3, B5);
//! - the kind is part of the type: a stream-handle context has no method that sets it as a
//!   stream context.

pub mod registry;

use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr::NonNull;

use windows_sys::Wdk::Foundation::{NonPagedPoolNx, POOL_TYPE};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CONTEXT_END, FLT_CONTEXT_REGISTRATION, FLT_INSTANCE_CONTEXT, FLT_SET_CONTEXT_KEEP_IF_EXISTS, FLT_STREAM_CONTEXT,
    FLT_STREAMHANDLE_CONTEXT, FltAllocateContext, FltGetInstanceContext, FltGetStreamContext, FltGetStreamHandleContext,
    FltReferenceContext, FltReleaseContext, FltSetInstanceContext, FltSetStreamContext, FltSetStreamHandleContext, PFLT_CONTEXT,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_FLT_CONTEXT_ALREADY_DEFINED, STATUS_NOT_FOUND, STATUS_NOT_SUPPORTED, STATUS_SUCCESS,
};

use crate::accounting::KindCounters;
use crate::callback::Related;
use crate::instance::InstanceData;
use crate::operations::{StreamData, StreamHandleData};

/// A Filter Manager context type, as a type.
pub trait Kind {
    /// `FLT_CONTEXT_TYPE`.
    const CONTEXT_TYPE: u16;
    /// The context's pool tag (shown by `!fltkd` and pool tools).
    const POOL_TAG: u32;
    /// Lock-free accounting of this kind.
    fn counters() -> &'static KindCounters;

    /// This kind's `FltGet*Context`.
    ///
    /// # Safety
    /// `related` holds the running callback's objects; `context` is a valid out pointer.
    unsafe fn get(related: &Related<'_>, context: *mut PFLT_CONTEXT) -> NTSTATUS;

    /// This kind's `FltSet*Context` with `FLT_SET_CONTEXT_KEEP_IF_EXISTS`.
    ///
    /// # Safety
    /// As for [`Kind::get`]; `new` is an unlinked context of this kind the caller holds a
    /// reference to; `existing` is a valid out pointer.
    unsafe fn set_keep_if_exists(related: &Related<'_>, new: PFLT_CONTEXT, existing: *mut PFLT_CONTEXT) -> NTSTATUS;
}

/// Instance contexts: one per attached volume.
pub enum Instance {}
/// Stream contexts: one per (instance, stream).
pub enum Stream {}
/// Stream-handle contexts: one per (instance, FILE_OBJECT).
pub enum StreamHandle {}

#[allow(clippy::cast_possible_truncation)] // FLT_CONTEXT_TYPE is a USHORT; the constants fit.
impl Kind for Instance {
    const CONTEXT_TYPE: u16 = FLT_INSTANCE_CONTEXT as u16;
    const POOL_TAG: u32 = u32::from_le_bytes(*b"CxIn");
    fn counters() -> &'static KindCounters {
        &crate::accounting::INSTANCE
    }
    unsafe fn get(related: &Related<'_>, context: *mut PFLT_CONTEXT) -> NTSTATUS {
        // SAFETY: the caller's contract (Kind::get).
        unsafe { FltGetInstanceContext(related.instance(), context) }
    }
    unsafe fn set_keep_if_exists(related: &Related<'_>, new: PFLT_CONTEXT, existing: *mut PFLT_CONTEXT) -> NTSTATUS {
        // SAFETY: the caller's contract (Kind::set_keep_if_exists).
        unsafe { FltSetInstanceContext(related.instance(), FLT_SET_CONTEXT_KEEP_IF_EXISTS, new, existing) }
    }
}

#[allow(clippy::cast_possible_truncation)] // FLT_CONTEXT_TYPE is a USHORT; the constants fit.
impl Kind for Stream {
    const CONTEXT_TYPE: u16 = FLT_STREAM_CONTEXT as u16;
    const POOL_TAG: u32 = u32::from_le_bytes(*b"CxSt");
    fn counters() -> &'static KindCounters {
        &crate::accounting::STREAM
    }
    unsafe fn get(related: &Related<'_>, context: *mut PFLT_CONTEXT) -> NTSTATUS {
        // SAFETY: the caller's contract (Kind::get); the file object is the callback's.
        unsafe { FltGetStreamContext(related.instance(), related.file_object(), context) }
    }
    unsafe fn set_keep_if_exists(related: &Related<'_>, new: PFLT_CONTEXT, existing: *mut PFLT_CONTEXT) -> NTSTATUS {
        // SAFETY: the caller's contract (Kind::set_keep_if_exists); the file object is the callback's.
        unsafe { FltSetStreamContext(related.instance(), related.file_object(), FLT_SET_CONTEXT_KEEP_IF_EXISTS, new, existing) }
    }
}

#[allow(clippy::cast_possible_truncation)] // FLT_CONTEXT_TYPE is a USHORT; the constants fit.
impl Kind for StreamHandle {
    const CONTEXT_TYPE: u16 = FLT_STREAMHANDLE_CONTEXT as u16;
    const POOL_TAG: u32 = u32::from_le_bytes(*b"CxSh");
    fn counters() -> &'static KindCounters {
        &crate::accounting::STREAM_HANDLE
    }
    unsafe fn get(related: &Related<'_>, context: *mut PFLT_CONTEXT) -> NTSTATUS {
        // SAFETY: the caller's contract (Kind::get); the file object is the callback's.
        unsafe { FltGetStreamHandleContext(related.instance(), related.file_object(), context) }
    }
    unsafe fn set_keep_if_exists(related: &Related<'_>, new: PFLT_CONTEXT, existing: *mut PFLT_CONTEXT) -> NTSTATUS {
        // SAFETY: the caller's contract (Kind::set_keep_if_exists); the file object is the callback's.
        unsafe {
            FltSetStreamHandleContext(related.instance(), related.file_object(), FLT_SET_CONTEXT_KEEP_IF_EXISTS, new, existing)
        }
    }
}

/// The payload registered for a kind.
///
/// # Safety
/// Implementing it asserts that `Self` is the only payload type registered for `Kind` in
/// [`CONTEXT_REGISTRATION`], with `size_of::<Self>()` and `cleanup::<Self>`: a context of that
/// kind obtained from Filter Manager then always holds an initialised `Self`.
///
/// `Send + Sync`: Filter Manager shares a context between threads and runs the cleanup callback
/// (the payload's `Drop`) on whichever thread releases it last.
pub unsafe trait Payload: Send + Sync + Sized + 'static {
    /// The context type carrying this payload.
    type Kind: Kind;
}

// SAFETY: CONTEXT_REGISTRATION registers InstanceData alone for instance contexts.
unsafe impl Payload for InstanceData {
    type Kind = Instance;
}
// SAFETY: CONTEXT_REGISTRATION registers StreamData alone for stream contexts.
unsafe impl Payload for StreamData {
    type Kind = Stream;
}
// SAFETY: CONTEXT_REGISTRATION registers StreamHandleData alone for stream-handle contexts.
unsafe impl Payload for StreamHandleData {
    type Kind = StreamHandle;
}

/// Every context is non-paged so that a release is legal up to DISPATCH_LEVEL (A8); the
/// payloads are small (see the README's budget table).
const CONTEXT_POOL: POOL_TYPE = NonPagedPoolNx;

/// The alignment a payload may rely on: Filter Manager places the context after its own header
/// in a pool block, which guarantees pointer alignment, not the pool's 16 bytes.
const CONTEXT_ALIGNMENT: usize = 8;

const fn registration<T: Payload>() -> FLT_CONTEXT_REGISTRATION {
    assert!(align_of::<T>() <= CONTEXT_ALIGNMENT, "a context payload may not need more than pointer alignment");
    FLT_CONTEXT_REGISTRATION {
        ContextType: T::Kind::CONTEXT_TYPE,
        Flags: 0,
        ContextCleanupCallback: Some(cleanup::<T>),
        Size: size_of::<T>(),
        PoolTag: T::Kind::POOL_TAG,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: core::ptr::null_mut(),
    }
}

/// The context registration array for FLT_REGISTRATION, ended by `FLT_CONTEXT_END` (A2).
pub const CONTEXT_REGISTRATION: [FLT_CONTEXT_REGISTRATION; 4] = [
    registration::<InstanceData>(),
    registration::<StreamData>(),
    registration::<StreamHandleData>(),
    FLT_CONTEXT_REGISTRATION {
        #[allow(clippy::cast_possible_truncation)] // FLT_CONTEXT_END is 0xFFFF.
        ContextType: FLT_CONTEXT_END as u16,
        Flags: 0,
        ContextCleanupCallback: None,
        Size: 0,
        PoolTag: 0,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: core::ptr::null_mut(),
    },
];

/// ContextCleanupCallback: drops the payload in place; Filter Manager frees the memory (A7).
unsafe extern "system" fn cleanup<T: Payload>(context: PFLT_CONTEXT, _context_type: u16) {
    // SAFETY: Filter Manager calls the cleanup callback once, when the last reference to a
    // context of T's kind is gone; every such context was initialised with a T by
    // Context::new before any reference could be released (Payload's contract).
    unsafe { core::ptr::drop_in_place(context.cast::<T>()) };
    T::Kind::counters().freed();
}

/// Which Filter Manager call handed over the reference [`Context::adopt`] takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `FltAllocateContext` succeeded: the new context, count 1, unlinked.
    Allocate,
    /// `FltGet*Context` succeeded: +1 for the caller.
    Get,
    /// `FltSet*Context(KEEP_IF_EXISTS)` returned ALREADY_DEFINED with a non-NULL OldContext: the
    /// existing context, +1 for the caller.
    AlreadyDefined,
}

/// One owned reference to a context of kind `K` carrying `T`.
pub struct Context<K: Kind, T: Payload<Kind = K>> {
    context: NonNull<T>,
    kind: PhantomData<K>,
}

/// A reference to an instance context.
pub type InstanceContext<T> = Context<Instance, T>;
/// A reference to a stream context.
pub type StreamContext<T> = Context<Stream, T>;
/// A reference to a stream-handle context.
pub type StreamHandleContext<T> = Context<StreamHandle, T>;

// SAFETY: a context is shared by Filter Manager between threads; the payload is Sync and the
// reference count is Filter Manager's own interlocked count.
unsafe impl<K: Kind, T: Payload<Kind = K>> Send for Context<K, T> {}
// SAFETY: as above; &Context only gives &T, and T is Sync.
unsafe impl<K: Kind, T: Payload<Kind = K>> Sync for Context<K, T> {}

/// What a `FltGet*Context` call found.
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

impl<K: Kind, T: Payload<Kind = K>> Context<K, T> {
    /// Allocates a context and moves `payload` into it before anything can release it.
    ///
    /// On failure the payload is dropped here, so what it owns is freed.
    ///
    /// # Errors
    /// FltAllocateContext's failure status (STATUS_INSUFFICIENT_RESOURCES,
    /// STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND).
    pub fn new(related: &Related<'_>, payload: T) -> Result<Self, NTSTATUS> {
        let filter = related.filter();
        let mut raw: PFLT_CONTEXT = core::ptr::null_mut();
        // SAFETY: `filter` came from Filter Manager with the callback; the size and type match a registration
        // entry (Payload's contract); `raw` is a valid out pointer.
        let status = unsafe { FltAllocateContext(filter, K::CONTEXT_TYPE, size_of::<T>(), CONTEXT_POOL, &raw mut raw) };
        if status != STATUS_SUCCESS || raw.is_null() {
            return Err(if status == STATUS_SUCCESS {
                windows_sys::Win32::Foundation::STATUS_INSUFFICIENT_RESOURCES
            } else {
                status
            });
        }
        K::counters().allocated();
        let context = raw.cast::<T>();
        // SAFETY: Filter Manager returned `size_of::<T>()` bytes of pool, pointer-aligned (which
        // `registration::<T>` checked is enough for T), uninitialised and ours alone until
        // published.
        unsafe { context.write(payload) };
        // SAFETY: FltAllocateContext succeeded and the payload is now initialised.
        Ok(unsafe { Self::adopt(raw, Source::Allocate) })
    }

    /// Takes over one reference that a Filter Manager call handed back.
    ///
    /// # Safety
    /// `raw` is a non-NULL context of kind `K`, initialised with a `T`, for which the caller
    /// owns one reference obtained as `source` says; the guard releases it on drop.
    pub unsafe fn adopt(raw: PFLT_CONTEXT, source: Source) -> Self {
        let _ = source;
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

    /// Sets or looks up with one of the `FltSet*Context` calls, then settles references.
    fn settle(self, set: impl FnOnce(PFLT_CONTEXT, *mut PFLT_CONTEXT) -> NTSTATUS) -> Result<Attached<Self>, NTSTATUS> {
        let mut existing: PFLT_CONTEXT = core::ptr::null_mut();
        let status = set(self.as_raw(), &raw mut existing);
        if status == STATUS_SUCCESS {
            // The link holds its own reference now; ours (the allocation's) goes to the caller.
            K::counters().attached();
            return Ok(Attached::New(self));
        }
        // Every failed set leaves the new context unlinked: dropping `self` releases the
        // allocation reference, count 0, cleanup runs (B5).
        drop(self);
        if status == STATUS_FLT_CONTEXT_ALREADY_DEFINED && !existing.is_null() {
            K::counters().collided();
            // SAFETY: ALREADY_DEFINED with a non-NULL OldContext hands back the attached
            // context of the same kind (hence a T) with a reference for us (B3).
            return Ok(Attached::Existing(unsafe { Self::adopt(existing, Source::AlreadyDefined) }));
        }
        Err(status)
    }

    fn lookup(status: NTSTATUS, raw: PFLT_CONTEXT) -> Lookup<Self> {
        match status {
            STATUS_SUCCESS if !raw.is_null() => {
                // SAFETY: a successful get returns an attached context of kind K (a T) with a
                // reference for the caller (B1).
                Lookup::Found(unsafe { Self::adopt(raw, Source::Get) })
            }
            STATUS_NOT_FOUND => Lookup::NotFound,
            STATUS_NOT_SUPPORTED => Lookup::NotSupported,
            other => Lookup::Failed(if other == STATUS_SUCCESS { STATUS_NOT_FOUND } else { other }),
        }
    }
}

impl<K: Kind, T: Payload<Kind = K>> Context<K, T> {
    /// `FltGet{Instance,Stream,StreamHandle}Context` on the callback's objects.
    #[must_use]
    pub fn get(related: &Related<'_>) -> Lookup<Self> {
        let mut raw: PFLT_CONTEXT = core::ptr::null_mut();
        // SAFETY: `related` holds the running callback's objects; `raw` is a valid out pointer.
        let status = unsafe { K::get(related, &raw mut raw) };
        Self::lookup(status, raw)
    }

    /// `FltSet{Instance,Stream,StreamHandle}Context(KEEP_IF_EXISTS)` on the callback's objects;
    /// returns the context that is attached.
    ///
    /// # Errors
    /// The set's failure status other than ALREADY_DEFINED (our context is released).
    pub fn attach(self, related: &Related<'_>) -> Result<Attached<Self>, NTSTATUS> {
        self.settle(|new, existing| {
            // SAFETY: `new` is an unlinked context of kind K we hold a reference to; `related`
            // holds the running callback's objects; `existing` is a valid out pointer.
            unsafe { K::set_keep_if_exists(related, new, existing) }
        })
    }
}

impl<K: Kind, T: Payload<Kind = K>> Deref for Context<K, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard's reference keeps the context (and its initialised payload) alive.
        unsafe { self.context.as_ref() }
    }
}

impl<K: Kind, T: Payload<Kind = K>> Clone for Context<K, T> {
    fn clone(&self) -> Self {
        // SAFETY: we hold a reference, so the context is alive; FltReferenceContext adds one
        // for the new guard (legal up to DISPATCH_LEVEL).
        unsafe { FltReferenceContext(self.as_raw()) };
        Self { context: self.context, kind: PhantomData }
    }
}

impl<K: Kind, T: Payload<Kind = K>> Drop for Context<K, T> {
    fn drop(&mut self) {
        // SAFETY: the guard owns exactly one reference and gives it back once; contexts are
        // non-paged, so this is legal up to DISPATCH_LEVEL (A8).
        unsafe { FltReleaseContext(self.as_raw()) };
    }
}
