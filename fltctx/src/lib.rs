//! Filter Manager context guards for Rust minifilters: every context reference is a value
//! whose `Drop` is the release, so a reference cannot leak or be released twice in safe code.
//!
//! - [`Context<K, T>`] owns one reference to a context of kind `K` ([`Volume`], [`Instance`],
//!   [`File`], [`Stream`], [`StreamHandle`], [`Transaction`], [`Section`]) carrying a `T`:
//!   [`Context::new`] allocates with the payload moved in, [`Context::get`], [`Context::attach`]
//!   (KEEP_IF_EXISTS, returns what ended up attached), [`Context::replace`] (REPLACE_IF_EXISTS,
//!   returns the old one as a guard), [`Context::delete`] (returns the unlinked one as a guard),
//!   [`Context::unlink`] (FltDeleteContext), `Clone` (FltReferenceContext), and the unsafe
//!   [`Context::adopt`], which names the call whose reference it takes.
//! - [`InstanceObjects`], [`FileObjects`], [`TransactionObjects`]: a callback's
//!   `FLT_RELATED_OBJECTS`, checked for IRQL <= APC_LEVEL and the object each kind needs; a
//!   kind is only reachable through the objects that carry it ([`Reaches`]).
//! - [`contexts!`] declares the payloads (the only way to make a [`Payload`]), each with its
//!   kind, optional pool tag and optional [`Registry`], and builds the context registration
//!   array; [`operations!`] builds the operation table; [`Registration`] builds
//!   `FLT_REGISTRATION`. The payload's `Drop` runs once, from the generic cleanup callback,
//!   after it has left its registry.
//! - [`Accounting`]: hooks the driver supplies to count allocations, attaches, collisions,
//!   replaces, deletes and frees.
//!
//! Rule ids (A5, B3, …) name the rules of the project's Filter Manager digest, each taken from
//! learn.microsoft.com's fltkernel DDI pages and IFS topics ("Registering Context Types",
//! "Creating Contexts", "Setting Contexts", "Getting Contexts", "Referencing Contexts",
//! "Releasing Contexts", "Deleting Contexts"); the README maps every API to its rule.
//!
//! The crate knows nothing of any particular driver and depends on windows-sys alone. It
//! compiles for any target (so its compile-fail tests run on the build host) but only does
//! anything in a Windows kernel image.
#![no_std]

mod accounting;
mod context;
mod kind;
mod objects;
mod registration;
mod registry;

pub use accounting::Accounting;
pub use context::{Attached, CONTEXT_ALIGNMENT, Context, Deleted, Lookup, Payload, Replaced, Source, live_guards};
pub use kind::{ContextKind, File, Instance, Kind, Section, Settable, Stream, StreamHandle, Transaction, Volume};
pub use objects::{APC_LEVEL, FileObjects, InstanceObjects, Reaches, TransactionObjects, current_irql};
pub use registration::{
    ContextEntry, ContextTable, FilterUnload, Operation, OperationTable, PostOperation, PreOperation, Registration, unregister,
};
pub use registry::{Link, Registry};

/// A reference to a volume context.
pub type VolumeContext<T> = Context<Volume, T>;
/// A reference to an instance context.
pub type InstanceContext<T> = Context<Instance, T>;
/// A reference to a file context.
pub type FileContext<T> = Context<File, T>;
/// A reference to a stream context.
pub type StreamContext<T> = Context<Stream, T>;
/// A reference to a stream-handle context.
pub type StreamHandleContext<T> = Context<StreamHandle, T>;
/// A reference to a transaction context.
pub type TransactionContext<T> = Context<Transaction, T>;
/// A reference to a section context.
pub type SectionContext<T> = Context<Section, T>;
