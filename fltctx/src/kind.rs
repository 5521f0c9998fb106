//! The seven Filter Manager context kinds, as types.
//!
//! Each kind names its `FLT_CONTEXT_TYPE` and the object it is attached to, and goes through
//! its own `FltGet*Context` / `FltSet*Context` / `FltDelete*Context`. [`Kind`] is sealed: its
//! calls are the crate's, so an outside impl cannot pair one kind's type with another kind's
//! Get and make [`Context::adopt`](crate::Context::adopt) reinterpret the wrong memory.
//!
//! ```compile_fail,E0277
//! // A kind of one's own does not exist: `Kind` is sealed.
//! enum Mine {}
//! impl fltctx::Kind for Mine {
//!     const CONTEXT_TYPE: u16 = 0x8;
//!     const KIND: fltctx::ContextKind = fltctx::ContextKind::Stream;
//! }
//! ```

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_FILE_CONTEXT, FLT_INSTANCE_CONTEXT, FLT_SECTION_CONTEXT, FLT_SET_CONTEXT_OPERATION, FLT_STREAM_CONTEXT,
    FLT_STREAMHANDLE_CONTEXT, FLT_TRANSACTION_CONTEXT, FLT_VOLUME_CONTEXT, FltDeleteFileContext, FltDeleteInstanceContext,
    FltDeleteStreamContext, FltDeleteStreamHandleContext, FltDeleteTransactionContext, FltDeleteVolumeContext, FltGetFileContext,
    FltGetInstanceContext, FltGetSectionContext, FltGetStreamContext, FltGetStreamHandleContext, FltGetTransactionContext,
    FltGetVolumeContext, FltSetFileContext, FltSetInstanceContext, FltSetStreamContext, FltSetStreamHandleContext,
    FltSetTransactionContext, FltSetVolumeContext, PFLT_CONTEXT,
};
use windows_sys::Win32::Foundation::NTSTATUS;

use crate::objects::Raw;

/// Which kind a context is, for accounting hooks and diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContextKind {
    /// `FLT_VOLUME_CONTEXT`.
    Volume,
    /// `FLT_INSTANCE_CONTEXT`.
    Instance,
    /// `FLT_FILE_CONTEXT`.
    File,
    /// `FLT_STREAM_CONTEXT`.
    Stream,
    /// `FLT_STREAMHANDLE_CONTEXT`.
    StreamHandle,
    /// `FLT_TRANSACTION_CONTEXT`.
    Transaction,
    /// `FLT_SECTION_CONTEXT`.
    Section,
}

pub(crate) mod sealed {
    use super::{FLT_SET_CONTEXT_OPERATION, NTSTATUS, PFLT_CONTEXT, Raw};

    /// The kind's Filter Manager calls; private, so only this crate's kinds exist.
    pub trait KindCalls {
        /// `FltGet*Context`.
        ///
        /// # Safety
        /// `raw` holds objects of the running callback that reach this kind; `out` is valid.
        unsafe fn get(raw: &Raw, out: *mut PFLT_CONTEXT) -> NTSTATUS;
        /// `FltDelete*Context` with a non-NULL OldContext; `None` for a kind without one.
        ///
        /// # Safety
        /// As for `get`.
        unsafe fn delete(raw: &Raw, out: *mut PFLT_CONTEXT) -> Option<NTSTATUS>;
    }

    /// The kind's `FltSet*Context`.
    pub trait SetCall {
        /// # Safety
        /// As for `KindCalls::get`; `new` is an unlinked context of this kind the caller holds
        /// a reference to; `old` is NULL or valid.
        unsafe fn set(raw: &Raw, operation: FLT_SET_CONTEXT_OPERATION, new: PFLT_CONTEXT, old: *mut PFLT_CONTEXT) -> NTSTATUS;
    }

    /// Seals [`super::super::Reaches`].
    pub trait Objects {
        /// The raw handles.
        fn raw(&self) -> Raw;
    }
}

/// A Filter Manager context type, as a type. Sealed: the seven kinds below are all there is.
pub trait Kind: sealed::KindCalls + 'static {
    /// `FLT_CONTEXT_TYPE`.
    const CONTEXT_TYPE: u16;
    /// The same, as an enum.
    const KIND: ContextKind;
}

/// A kind that has an `FltSet*Context` call, so that [`Context::attach`](crate::Context::attach)
/// and [`Context::replace`](crate::Context::replace) exist for it. Section contexts have none:
/// FltCreateSectionForDataScan attaches them.
pub trait Settable: Kind + sealed::SetCall {}

macro_rules! kinds {
    ($(
        $(#[$doc:meta])*
        $name:ident = $constant:ident, $kind:ident,
        get: |$g:ident, $gout:ident| $get:expr,
        delete: |$d:ident, $dout:ident| $delete:expr
        $(, set: |$s:ident, $op:ident, $new:ident, $old:ident| $set:expr)?;
    )*) => {$(
        $(#[$doc])*
        pub enum $name {}

        #[allow(clippy::cast_possible_truncation)] // FLT_CONTEXT_TYPE is a USHORT; the constants fit.
        impl Kind for $name {
            const CONTEXT_TYPE: u16 = $constant as u16;
            const KIND: ContextKind = ContextKind::$kind;
        }

        impl sealed::KindCalls for $name {
            unsafe fn get($g: &Raw, $gout: *mut PFLT_CONTEXT) -> NTSTATUS {
                // SAFETY: the caller's contract (KindCalls::get): the objects reach this kind.
                unsafe { $get }
            }
            unsafe fn delete($d: &Raw, $dout: *mut PFLT_CONTEXT) -> Option<NTSTATUS> {
                $delete
            }
        }

        $(
        impl sealed::SetCall for $name {
            unsafe fn set($s: &Raw, $op: FLT_SET_CONTEXT_OPERATION, $new: PFLT_CONTEXT, $old: *mut PFLT_CONTEXT) -> NTSTATUS {
                // SAFETY: the caller's contract (SetCall::set).
                unsafe { $set }
            }
        }
        impl Settable for $name {}
        )?
    )*};
}

kinds! {
    /// Volume contexts: one per (filter, volume), attached with FltSetVolumeContext; must be
    /// non-paged (A6), which [`Context::new`](crate::Context::new) always is.
    Volume = FLT_VOLUME_CONTEXT, Volume,
    get: |raw, out| FltGetVolumeContext(raw.filter, raw.volume, out),
    // SAFETY: the caller's contract (KindCalls::delete).
    delete: |raw, out| Some(unsafe { FltDeleteVolumeContext(raw.filter, raw.volume, out) }),
    set: |raw, operation, new, old| FltSetVolumeContext(raw.volume, operation, new, old);

    /// Instance contexts: one per instance, attached with FltSetInstanceContext.
    Instance = FLT_INSTANCE_CONTEXT, Instance,
    get: |raw, out| FltGetInstanceContext(raw.instance, out),
    // SAFETY: the caller's contract (KindCalls::delete).
    delete: |raw, out| Some(unsafe { FltDeleteInstanceContext(raw.instance, out) }),
    set: |raw, operation, new, old| FltSetInstanceContext(raw.instance, operation, new, old);

    /// File contexts: one per (instance, file), reached through an open FILE_OBJECT (Vista+).
    File = FLT_FILE_CONTEXT, File,
    get: |raw, out| FltGetFileContext(raw.instance, raw.file_object, out),
    // SAFETY: the caller's contract (KindCalls::delete).
    delete: |raw, out| Some(unsafe { FltDeleteFileContext(raw.instance, raw.file_object, out) }),
    set: |raw, operation, new, old| FltSetFileContext(raw.instance, raw.file_object, operation, new, old);

    /// Stream contexts: one per (instance, stream), reached through an open FILE_OBJECT (A10).
    Stream = FLT_STREAM_CONTEXT, Stream,
    get: |raw, out| FltGetStreamContext(raw.instance, raw.file_object, out),
    // SAFETY: the caller's contract (KindCalls::delete).
    delete: |raw, out| Some(unsafe { FltDeleteStreamContext(raw.instance, raw.file_object, out) }),
    set: |raw, operation, new, old| FltSetStreamContext(raw.instance, raw.file_object, operation, new, old);

    /// Stream-handle contexts: one per (instance, FILE_OBJECT).
    StreamHandle = FLT_STREAMHANDLE_CONTEXT, StreamHandle,
    get: |raw, out| FltGetStreamHandleContext(raw.instance, raw.file_object, out),
    // SAFETY: the caller's contract (KindCalls::delete).
    delete: |raw, out| Some(unsafe { FltDeleteStreamHandleContext(raw.instance, raw.file_object, out) }),
    set: |raw, operation, new, old| FltSetStreamHandleContext(raw.instance, raw.file_object, operation, new, old);

    /// Transaction contexts: one per (instance, KTRANSACTION) (Vista+).
    Transaction = FLT_TRANSACTION_CONTEXT, Transaction,
    get: |raw, out| FltGetTransactionContext(raw.instance, raw.transaction, out),
    // SAFETY: the caller's contract (KindCalls::delete).
    delete: |raw, out| Some(unsafe { FltDeleteTransactionContext(raw.instance, raw.transaction, out) }),
    set: |raw, operation, new, old| FltSetTransactionContext(raw.instance, raw.transaction, operation, new, old);

    /// Section contexts: one per data-scan section (Win8+), attached by
    /// FltCreateSectionForDataScan rather than a Set call, so they are not [`Settable`].
    Section = FLT_SECTION_CONTEXT, Section,
    get: |raw, out| FltGetSectionContext(raw.instance, raw.file_object, out),
    delete: |_raw, _out| None;
}
