//! The filter registration, built at compile time from typed declarations.
//!
//! [`contexts!`](crate::contexts) turns the payload list into the context registration array
//! (one entry per payload, `FLT_CONTEXT_END` appended) and is the only way a type becomes a
//! [`Payload`]; [`operations!`](crate::operations) does the same for the operation table
//! (`IRP_MJ_OPERATION_END` appended); [`Registration`] fills `FLT_REGISTRATION` from both and
//! the callbacks, each of the function type Filter Manager calls, so a callback with the wrong
//! signature does not compile. The checks Filter Manager makes at FltRegisterFilter (E1, E2,
//! A2, A3: one entry per kind here, no duplicate majors, a non-zero tag) fail the build instead.
//!
//! ```compile_fail,E0080
//! // Two payloads for one kind: the second would be read as the first.
//! struct A(u32);
//! struct B(u64);
//! fltctx::contexts! { static CONTEXTS: accounting = (); A: Stream; B: Stream; }
//! # fn main() {}
//! ```
//!
//! ```compile_fail,E0080
//! // One major function registered twice (FltRegisterFilter: STATUS_INVALID_PARAMETER).
//! use fltctx::Operation;
//! # use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FLT_CALLBACK_DATA, FLT_RELATED_OBJECTS, FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_SUCCESS_NO_CALLBACK};
//! unsafe extern "system" fn pre(_: *mut FLT_CALLBACK_DATA, _: *const FLT_RELATED_OBJECTS, _: *mut *mut core::ffi::c_void) -> FLT_PREOP_CALLBACK_STATUS { FLT_PREOP_SUCCESS_NO_CALLBACK }
//! fltctx::operations! { static OPERATIONS = [Operation::new(0x12).pre(pre), Operation::new(0x12).pre(pre)]; }
//! # fn main() {}
//! ```

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CONTEXT_END, FLT_CONTEXT_REGISTRATION, FLT_OPERATION_REGISTRATION, FLT_REGISTRATION, FLT_REGISTRATION_VERSION_0203,
    FltUnregisterFilter, IRP_MJ_OPERATION_END, PFLT_FILTER, PFLT_INSTANCE_QUERY_TEARDOWN_CALLBACK, PFLT_INSTANCE_SETUP_CALLBACK,
    PFLT_INSTANCE_TEARDOWN_CALLBACK, PFLT_SECTION_CONFLICT_NOTIFICATION_CALLBACK, PFLT_TRANSACTION_NOTIFICATION_CALLBACK,
};
use windows_sys::Win32::Foundation::NTSTATUS;

use crate::context::{CONTEXT_ALIGNMENT, Payload, cleanup, live_guards};
use crate::kind::Kind;

/// The signature of a pre-operation callback.
pub type PreOperation = unsafe extern "system" fn(
    *mut windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_CALLBACK_DATA,
    *const windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_RELATED_OBJECTS,
    *mut *mut core::ffi::c_void,
) -> windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_PREOP_CALLBACK_STATUS;
/// The signature of a post-operation callback.
pub type PostOperation = unsafe extern "system" fn(
    *mut windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_CALLBACK_DATA,
    *const windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_RELATED_OBJECTS,
    *const core::ffi::c_void,
    u32,
) -> windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_POSTOP_CALLBACK_STATUS;
/// The signature of the FilterUnloadCallback.
pub type FilterUnload = unsafe extern "system" fn(u32) -> NTSTATUS;

/// One context registration entry, made only from a [`Payload`] (or the end marker).
#[derive(Clone, Copy)]
pub struct ContextEntry(FLT_CONTEXT_REGISTRATION);

impl ContextEntry {
    /// `T`'s entry: its kind, `size_of::<T>()`, the kind's pool tag, and the generic cleanup
    /// that drops a `T` (A2, A7).
    #[must_use]
    pub const fn of<T: Payload>() -> Self {
        Self::with_tag::<T>(pool_tag(<T::Kind as Kind>::CONTEXT_TYPE))
    }

    /// As [`ContextEntry::of`] with the pool tag `tag` (four characters, e.g. `*b"CxSt"`).
    #[must_use]
    pub const fn tagged<T: Payload>(tag: [u8; 4]) -> Self {
        Self::with_tag::<T>(u32::from_le_bytes(tag))
    }

    const fn with_tag<T: Payload>(tag: u32) -> Self {
        assert!(tag != 0, "a context registration needs a pool tag (A3)");
        assert!(align_of::<T>() <= CONTEXT_ALIGNMENT, "a context payload may not need more than pointer alignment");
        assert!(size_of::<T>() > 0 && size_of::<T>() <= 0xFFFF, "FltAllocateContext sizes are 1..=MAXUSHORT (A4)");
        Self(FLT_CONTEXT_REGISTRATION {
            ContextType: <T::Kind as Kind>::CONTEXT_TYPE,
            Flags: 0,
            ContextCleanupCallback: Some(cleanup::<T>),
            Size: size_of::<T>(),
            PoolTag: tag,
            ContextAllocateCallback: None,
            ContextFreeCallback: None,
            Reserved1: core::ptr::null_mut(),
        })
    }

    /// `FLT_CONTEXT_END`.
    #[allow(clippy::cast_possible_truncation)] // FLT_CONTEXT_END is 0xFFFF.
    pub const END: Self = Self(FLT_CONTEXT_REGISTRATION {
        ContextType: FLT_CONTEXT_END as u16,
        Flags: 0,
        ContextCleanupCallback: None,
        Size: 0,
        PoolTag: 0,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: core::ptr::null_mut(),
    });
}

/// The pool tag of a kind's contexts, `Fc` + two letters (shown reversed by pool tools): a tag
/// is required (A3) and per-kind tags tell `!poolused` which kind leaks.
const fn pool_tag(context_type: u16) -> u32 {
    let name = match context_type {
        0x1 => *b"FcVo",
        0x2 => *b"FcIn",
        0x4 => *b"FcFi",
        0x8 => *b"FcSt",
        0x10 => *b"FcSh",
        0x20 => *b"FcTx",
        _ => *b"FcSe",
    };
    u32::from_le_bytes(name)
}

/// The context registration array, ended by `FLT_CONTEXT_END`. Made by
/// [`contexts!`](crate::contexts).
#[repr(transparent)]
pub struct ContextTable<const N: usize>([FLT_CONTEXT_REGISTRATION; N]);

// SAFETY: the table is immutable; its only pointers are to functions.
unsafe impl<const N: usize> Sync for ContextTable<N> {}

impl<const N: usize> ContextTable<N> {
    /// Checks the entries: the end marker last and only there, at most one entry per kind.
    #[doc(hidden)]
    #[must_use]
    pub const fn new(entries: [ContextEntry; N]) -> Self {
        let mut table = [ContextEntry::END.0; N];
        let mut index = 0;
        while index < N {
            let kind = entries[index].0.ContextType;
            assert!((kind == ContextEntry::END.0.ContextType) == (index + 1 == N), "FLT_CONTEXT_END ends the table, once");
            let mut earlier = 0;
            while earlier < index {
                assert!(entries[earlier].0.ContextType != kind, "one payload per context kind: a Get must know what it reads");
                earlier += 1;
            }
            table[index] = entries[index].0;
            index += 1;
        }
        Self(table)
    }
}

/// One operation registration: a major function and its typed callbacks.
#[derive(Clone, Copy)]
pub struct Operation(FLT_OPERATION_REGISTRATION);

impl Operation {
    /// An entry for `IRP_MJ_*` code `major_function` with no callbacks yet.
    #[must_use]
    pub const fn new(major_function: u8) -> Self {
        Self(FLT_OPERATION_REGISTRATION {
            MajorFunction: major_function,
            Flags: 0,
            PreOperation: None,
            PostOperation: None,
            Reserved1: core::ptr::null_mut(),
        })
    }

    /// The pre-operation callback.
    #[must_use]
    pub const fn pre(mut self, callback: PreOperation) -> Self {
        self.0.PreOperation = Some(callback);
        self
    }

    /// The post-operation callback.
    #[must_use]
    pub const fn post(mut self, callback: PostOperation) -> Self {
        self.0.PostOperation = Some(callback);
        self
    }

    /// `FLTFL_OPERATION_REGISTRATION_*` flags (e.g. SKIP_PAGING_IO).
    #[must_use]
    pub const fn flags(mut self, flags: u32) -> Self {
        self.0.Flags = flags;
        self
    }

    /// `IRP_MJ_OPERATION_END`.
    #[allow(clippy::cast_possible_truncation)] // 0x80 fits the UCHAR field.
    pub const END: Self = Self::new(IRP_MJ_OPERATION_END as u8);
}

/// The operation table, ended by `IRP_MJ_OPERATION_END`. Made by
/// [`operations!`](crate::operations).
#[repr(transparent)]
pub struct OperationTable<const N: usize>([FLT_OPERATION_REGISTRATION; N]);

// SAFETY: the table is immutable; its only pointers are to functions.
unsafe impl<const N: usize> Sync for OperationTable<N> {}

impl<const N: usize> OperationTable<N> {
    /// Checks the entries: the end marker last and only there, no major function twice, every
    /// entry with a callback.
    #[doc(hidden)]
    #[must_use]
    pub const fn new(entries: [Operation; N]) -> Self {
        let end = Operation::END.0.MajorFunction;
        let mut table = [Operation::END.0; N];
        let mut index = 0;
        while index < N {
            let entry = entries[index].0;
            assert!((entry.MajorFunction == end) == (index + 1 == N), "IRP_MJ_OPERATION_END ends the table, once");
            assert!(
                index + 1 == N || entry.PreOperation.is_some() || entry.PostOperation.is_some(),
                "an operation entry needs a callback"
            );
            let mut earlier = 0;
            while earlier < index {
                assert!(entries[earlier].0.MajorFunction != entry.MajorFunction, "a major function is registered once (E2)");
                earlier += 1;
            }
            table[index] = entry;
            index += 1;
        }
        Self(table)
    }
}

/// `FLT_REGISTRATION` (version 0x0203), for FltRegisterFilter; lives in a static.
#[repr(transparent)]
pub struct Registration(FLT_REGISTRATION);

// SAFETY: immutable after compilation; its pointers go to immutable statics and functions.
unsafe impl Sync for Registration {}

impl Registration {
    /// A registration of `contexts` and `operations` with no other callback.
    #[must_use]
    #[allow(clippy::cast_possible_truncation)] // FLT_REGISTRATION's size and version fit a USHORT.
    pub const fn new<const C: usize, const O: usize>(contexts: &'static ContextTable<C>, operations: &'static OperationTable<O>) -> Self {
        Self(FLT_REGISTRATION {
            Size: size_of::<FLT_REGISTRATION>() as u16,
            Version: FLT_REGISTRATION_VERSION_0203 as u16,
            Flags: 0,
            ContextRegistration: contexts.0.as_ptr(),
            OperationRegistration: operations.0.as_ptr(),
            FilterUnloadCallback: None,
            InstanceSetupCallback: None,
            InstanceQueryTeardownCallback: None,
            InstanceTeardownStartCallback: None,
            InstanceTeardownCompleteCallback: None,
            GenerateFileNameCallback: None,
            NormalizeNameComponentCallback: None,
            NormalizeContextCleanupCallback: None,
            TransactionNotificationCallback: None,
            NormalizeNameComponentExCallback: None,
            SectionNotificationCallback: None,
        })
    }

    /// `FLTFL_REGISTRATION_*` flags.
    #[must_use]
    pub const fn flags(mut self, flags: u32) -> Self {
        self.0.Flags = flags;
        self
    }

    /// FilterUnloadCallback. Without one, Filter Manager refuses to unload the filter.
    #[must_use]
    pub const fn unload(mut self, callback: FilterUnload) -> Self {
        self.0.FilterUnloadCallback = Some(callback);
        self
    }

    /// InstanceSetupCallback (PASSIVE_LEVEL); an error status declines the volume (E6).
    #[must_use]
    pub const fn instance_setup(mut self, callback: PFLT_INSTANCE_SETUP_CALLBACK) -> Self {
        self.0.InstanceSetupCallback = callback;
        self
    }

    /// InstanceQueryTeardownCallback; without one, manual detaches are refused.
    #[must_use]
    pub const fn instance_query_teardown(mut self, callback: PFLT_INSTANCE_QUERY_TEARDOWN_CALLBACK) -> Self {
        self.0.InstanceQueryTeardownCallback = callback;
        self
    }

    /// InstanceTeardownStartCallback.
    #[must_use]
    pub const fn instance_teardown_start(mut self, callback: PFLT_INSTANCE_TEARDOWN_CALLBACK) -> Self {
        self.0.InstanceTeardownStartCallback = callback;
        self
    }

    /// InstanceTeardownCompleteCallback.
    #[must_use]
    pub const fn instance_teardown_complete(mut self, callback: PFLT_INSTANCE_TEARDOWN_CALLBACK) -> Self {
        self.0.InstanceTeardownCompleteCallback = callback;
        self
    }

    /// TransactionNotificationCallback.
    #[must_use]
    pub const fn transaction_notification(mut self, callback: PFLT_TRANSACTION_NOTIFICATION_CALLBACK) -> Self {
        self.0.TransactionNotificationCallback = callback;
        self
    }

    /// SectionNotificationCallback.
    #[must_use]
    pub const fn section_notification(mut self, callback: PFLT_SECTION_CONFLICT_NOTIFICATION_CALLBACK) -> Self {
        self.0.SectionNotificationCallback = callback;
        self
    }

    /// The structure, for FltRegisterFilter.
    #[must_use]
    pub const fn as_ptr(&'static self) -> *const FLT_REGISTRATION {
        &raw const self.0
    }
}

/// `FltUnregisterFilter`, then the guards still alive ([`live_guards`]): Filter Manager has
/// torn down every instance and run down every callback by the time it returns (B11), so a
/// non-zero count is a guard parked outside any callback (a static) whose release would come
/// after the filter is gone. Drop such guards before calling this; report a non-zero result.
///
/// # Safety
/// `filter` came from a successful FltRegisterFilter and is unregistered once.
#[must_use]
pub unsafe fn unregister(filter: PFLT_FILTER) -> usize {
    // SAFETY: the caller's contract.
    unsafe { FltUnregisterFilter(filter) };
    live_guards()
}

/// Declares the driver's context payloads: implements [`Payload`] for each, ties a listed one
/// to its one registry and link field, and defines the checked context registration array.
///
/// ```text
/// fltctx::contexts! {
///     /// The context registration.
///     pub static CONTEXTS: accounting = MyAccounting;
///     InstanceData: Instance;
///     StreamData: Stream, tag b"MySt", in STREAMS => link;  // listed in STREAMS, via field `link`
///     HandleData: StreamHandle, tag b"MySh";
/// }
/// ```
///
/// Without `tag`, the kind's default tag (`FcIn`, `FcSt`, …) is used.
#[macro_export]
macro_rules! contexts {
    (
        $(#[$meta:meta])*
        $vis:vis static $name:ident : accounting = $accounting:ty ;
        $( $payload:ty : $kind:ident $(, tag $tag:literal)? $(, in $registry:path => $field:ident)? ; )+
    ) => {
        $(
            // SAFETY: the entry for this payload in the table below is built from the same
            // type, and the table admits one payload per kind.
            unsafe impl $crate::Payload for $payload {
                type Kind = $crate::$kind;
                type Accounting = $accounting;
                $(
                    fn registry() -> ::core::option::Option<&'static $crate::Registry<Self>> {
                        ::core::option::Option::Some(&$registry)
                    }
                    fn link(&self) -> ::core::option::Option<&$crate::Link> {
                        ::core::option::Option::Some(&self.$field)
                    }
                )?
            }
        )+
        $(#[$meta])*
        $vis static $name: $crate::ContextTable<{ [$(stringify!($payload)),+].len() + 1 }> =
            $crate::ContextTable::new([$($crate::__context_entry!($payload $(, $tag)?),)+ $crate::ContextEntry::END]);
    };
}

/// Defines the checked operation table, `IRP_MJ_OPERATION_END` appended.
///
/// ```text
/// fltctx::operations! {
///     static OPERATIONS = [
///         Operation::new(IRP_MJ_CREATE as u8).pre(pre_create).post(post_create),
///         Operation::new(IRP_MJ_CLEANUP as u8).pre(pre_cleanup),
///     ];
/// }
/// ```
#[macro_export]
macro_rules! operations {
    ($(#[$meta:meta])* $vis:vis static $name:ident = [$($operation:expr),* $(,)?];) => {
        $(#[$meta])*
        $vis static $name: $crate::OperationTable<{ [$(stringify!($operation)),*].len() + 1 }> =
            $crate::OperationTable::new([$($operation,)* $crate::Operation::END]);
    };
}

/// One entry of [`contexts!`]: tagged or with the kind's default tag.
#[doc(hidden)]
#[macro_export]
macro_rules! __context_entry {
    ($payload:ty) => {
        $crate::ContextEntry::of::<$payload>()
    };
    ($payload:ty, $tag:literal) => {
        $crate::ContextEntry::tagged::<$payload>(*$tag)
    };
}
