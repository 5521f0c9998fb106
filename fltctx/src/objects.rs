//! The objects a callback may reach contexts through, split by what they hold.
//!
//! Filter Manager's `FLT_RELATED_OBJECTS` is one structure for every callback, with NULL
//! fields where a callback has no such object (an instance callback has no FileObject) and no
//! word about IRQL. Context calls need both right: the DDIs of every Get/Set/Delete and of
//! FltAllocateContext require IRQL <= APC_LEVEL (A8), and file, stream, stream-handle and
//! section contexts need an open FILE_OBJECT (A9). So the crate reads the structure into one
//! of three types, each made only after checking what it promises:
//!
//! | Type | Holds | Reaches |
//! |---|---|---|
//! | [`InstanceObjects`] | filter, instance, volume; IRQL <= APC_LEVEL checked | volume, instance contexts |
//! | [`FileObjects`] | the above + a non-NULL FileObject | + file, stream, stream-handle, section |
//! | [`TransactionObjects`] | the instance objects + a non-NULL Transaction | + transaction |
//!
//! All three borrow the callback (`'cb`) and are neither `Send` nor `Sync`: the IRQL they
//! checked is this thread's, and the objects are only guaranteed for the callback's duration.
//!
//! ```compile_fail,E0277
//! // An instance callback's objects do not reach a stream context.
//! # use fltctx::{Context, InstanceObjects, Stream, Lookup};
//! # struct Data;
//! # fltctx::contexts! { static CONTEXTS: accounting = (); Data: Stream; }
//! fn setup(objects: &InstanceObjects<'_>) {
//!     let _ = Context::<Stream, Data>::get(objects);
//! }
//! # fn main() {}
//! ```

use core::marker::PhantomData;

use windows_sys::Wdk::Foundation::{FILE_OBJECT, KTRANSACTION};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FLT_RELATED_OBJECTS, PFLT_FILTER, PFLT_INSTANCE, PFLT_VOLUME};

use crate::kind::{File, Instance, Kind, Section, Stream, StreamHandle, Transaction, Volume, sealed};

/// `APC_LEVEL`.
pub const APC_LEVEL: u8 = 1;

/// The processor's current IRQL (`KeGetCurrentIrql`, an ntoskrnl export, so that an emulator can
/// model it).
#[must_use]
pub fn current_irql() -> u8 {
    // SAFETY: KeGetCurrentIrql takes no arguments and may be called at any IRQL.
    unsafe { windows_sys::Wdk::System::SystemServices::KeGetCurrentIrql() }
}

/// The handles a context call passes on, copied out of `FLT_RELATED_OBJECTS`.
#[derive(Clone, Copy)]
#[doc(hidden)]
pub struct Raw {
    pub(crate) filter: PFLT_FILTER,
    pub(crate) instance: PFLT_INSTANCE,
    pub(crate) volume: PFLT_VOLUME,
    pub(crate) file_object: *const FILE_OBJECT,
    pub(crate) transaction: *const KTRANSACTION,
}

/// Objects that reach contexts of kind `K`. Sealed: implemented by the three object types as
/// the table in [`crate::objects`] says.
pub trait Reaches<K: Kind>: sealed::Objects {}

/// Borrows the callback, and is neither Send nor Sync (the IRQL check is this thread's).
type CallbackBound<'cb> = PhantomData<(&'cb FLT_RELATED_OBJECTS, *const ())>;

/// The filter, instance and volume of a callback running at IRQL <= APC_LEVEL.
pub struct InstanceObjects<'cb> {
    raw: Raw,
    callback: CallbackBound<'cb>,
}

impl InstanceObjects<'_> {
    /// Reads the callback's related objects; `None` above APC_LEVEL, where no context call is
    /// allowed (A8).
    ///
    /// # Safety
    /// `objects` is the FLT_RELATED_OBJECTS pointer Filter Manager passed to the running
    /// callback, and the value is used only during that callback, on its thread.
    #[must_use]
    pub unsafe fn from_callback(objects: *const FLT_RELATED_OBJECTS) -> Option<Self> {
        if current_irql() > APC_LEVEL || objects.is_null() {
            return None;
        }
        // SAFETY: the caller's contract: Filter Manager's pointer, valid for the callback.
        let objects = unsafe { &*objects };
        let raw = Raw {
            filter: objects.Filter,
            instance: objects.Instance,
            volume: objects.Volume,
            file_object: objects.FileObject,
            transaction: objects.Transaction,
        };
        Some(Self { raw, callback: PhantomData })
    }

    /// The filter.
    #[must_use]
    pub fn filter(&self) -> PFLT_FILTER {
        self.raw.filter
    }

    /// The instance (an identity; Filter Manager calls take it).
    #[must_use]
    pub fn instance(&self) -> PFLT_INSTANCE {
        self.raw.instance
    }

    /// The volume.
    #[must_use]
    pub fn volume(&self) -> PFLT_VOLUME {
        self.raw.volume
    }
}

/// The instance objects plus the open FILE_OBJECT of an I/O callback at IRQL <= APC_LEVEL.
pub struct FileObjects<'cb> {
    instance: InstanceObjects<'cb>,
}

impl<'cb> FileObjects<'cb> {
    /// Reads an I/O callback's related objects; `None` above APC_LEVEL or without a
    /// FileObject.
    ///
    /// # Safety
    /// As for [`InstanceObjects::from_callback`], and the FILE_OBJECT is open: the callback is
    /// not a pre-create, a post-close or an IRP_MJ_NETWORK_QUERY_OPEN, where Filter Manager
    /// allows no file, stream or stream-handle context (A9).
    #[must_use]
    pub unsafe fn from_callback(objects: *const FLT_RELATED_OBJECTS) -> Option<Self> {
        // SAFETY: the caller's contract.
        let instance = unsafe { InstanceObjects::from_callback(objects) }?;
        if instance.raw.file_object.is_null() {
            return None;
        }
        Some(Self { instance })
    }

    /// The instance objects, for instance and volume contexts.
    #[must_use]
    pub fn instance_objects(&self) -> &InstanceObjects<'cb> {
        &self.instance
    }

    /// The FILE_OBJECT (never NULL), for Filter Manager calls.
    #[must_use]
    pub fn file_object(&self) -> *const FILE_OBJECT {
        self.instance.raw.file_object
    }
}

/// The instance objects plus the KTRANSACTION of a callback at IRQL <= APC_LEVEL.
pub struct TransactionObjects<'cb> {
    instance: InstanceObjects<'cb>,
}

impl<'cb> TransactionObjects<'cb> {
    /// Reads the related objects of a callback that runs in a transaction; `None` above
    /// APC_LEVEL or without one.
    ///
    /// # Safety
    /// As for [`InstanceObjects::from_callback`].
    #[must_use]
    pub unsafe fn from_callback(objects: *const FLT_RELATED_OBJECTS) -> Option<Self> {
        // SAFETY: the caller's contract.
        let instance = unsafe { InstanceObjects::from_callback(objects) }?;
        if instance.raw.transaction.is_null() {
            return None;
        }
        Some(Self { instance })
    }

    /// The instance objects.
    #[must_use]
    pub fn instance_objects(&self) -> &InstanceObjects<'cb> {
        &self.instance
    }
}

impl sealed::Objects for InstanceObjects<'_> {
    fn raw(&self) -> Raw {
        self.raw
    }
}
impl sealed::Objects for FileObjects<'_> {
    fn raw(&self) -> Raw {
        self.instance.raw
    }
}
impl sealed::Objects for TransactionObjects<'_> {
    fn raw(&self) -> Raw {
        self.instance.raw
    }
}

impl Reaches<Volume> for InstanceObjects<'_> {}
impl Reaches<Instance> for InstanceObjects<'_> {}
impl Reaches<Volume> for FileObjects<'_> {}
impl Reaches<Instance> for FileObjects<'_> {}
impl Reaches<File> for FileObjects<'_> {}
impl Reaches<Stream> for FileObjects<'_> {}
impl Reaches<StreamHandle> for FileObjects<'_> {}
impl Reaches<Section> for FileObjects<'_> {}
impl Reaches<Volume> for TransactionObjects<'_> {}
impl Reaches<Instance> for TransactionObjects<'_> {}
impl Reaches<Transaction> for TransactionObjects<'_> {}
