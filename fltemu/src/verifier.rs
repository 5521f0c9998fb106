//! The verifier's findings: typed violations and the end-of-run report.
//!
//! Each violation names the Filter Verifier / Driver Verifier check it mirrors
//! (fltmgr-semantics section H: bug check 0xF5 parameters 0x66, 0x68, 0x6D, 0x6E; the leak
//! check at unload) or the documented contract it enforces.

use std::fmt;

use crate::exec::Stop;

/// A four-character pool tag, shown as the characters (`CxSt`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u32);

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0.to_le_bytes();
        if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            write!(f, "'{}'", String::from_utf8_lossy(&bytes))
        } else {
            write!(f, "{:#010x}", self.0)
        }
    }
}

/// Pool a block or context was allocated from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    /// NonPagedPool / NonPagedPoolNx / POOL_FLAG_NON_PAGED.
    NonPaged,
    /// PagedPool / POOL_FLAG_PAGED.
    Paged,
}

/// A context type (`FLT_CONTEXT_TYPE`, fltmgr-semantics A1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContextType {
    /// FLT_VOLUME_CONTEXT 0x1.
    Volume,
    /// FLT_INSTANCE_CONTEXT 0x2.
    Instance,
    /// FLT_FILE_CONTEXT 0x4.
    File,
    /// FLT_STREAM_CONTEXT 0x8.
    Stream,
    /// FLT_STREAMHANDLE_CONTEXT 0x10.
    StreamHandle,
    /// FLT_TRANSACTION_CONTEXT 0x20.
    Transaction,
    /// FLT_SECTION_CONTEXT 0x40.
    Section,
}

impl ContextType {
    /// From the `FLT_CONTEXT_TYPE` value.
    #[must_use]
    pub fn from_raw(value: u16) -> Option<Self> {
        Some(match value {
            0x1 => Self::Volume,
            0x2 => Self::Instance,
            0x4 => Self::File,
            0x8 => Self::Stream,
            0x10 => Self::StreamHandle,
            0x20 => Self::Transaction,
            0x40 => Self::Section,
            _ => return None,
        })
    }

    /// The `FLT_CONTEXT_TYPE` value.
    #[must_use]
    pub fn raw(self) -> u16 {
        match self {
            Self::Volume => 0x1,
            Self::Instance => 0x2,
            Self::File => 0x4,
            Self::Stream => 0x8,
            Self::StreamHandle => 0x10,
            Self::Transaction => 0x20,
            Self::Section => 0x40,
        }
    }
}

/// One contract violation found by the verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Contexts still allocated when FltUnregisterFilter finished (Filter Verifier's leak check
    /// at unload; B11), one entry per (type, size, tag, refcount) with how many.
    ContextLeaked {
        /// Its type.
        context_type: ContextType,
        /// Its size.
        size: usize,
        /// Its pool tag.
        tag: Tag,
        /// Its reference count then.
        refcount: i64,
        /// How many contexts leaked alike.
        count: usize,
    },
    /// FltReleaseContext took a context that is still linked to an object to 0 (bug check
    /// 0xF5/0x6D, "context released too many times").
    ReleasedLinkedToZero {
        /// Its type.
        context_type: ContextType,
        /// Its pool tag.
        tag: Tag,
    },
    /// A freed context was passed to a Filter Manager function (bug check 0xF5/0x6E).
    UseAfterFree {
        /// The function it was passed to.
        function: &'static str,
        /// Its type.
        context_type: ContextType,
        /// Its pool tag.
        tag: Tag,
    },
    /// A pointer that is not a context was passed as one.
    NotAContext {
        /// The function.
        function: &'static str,
        /// The pointer.
        pointer: usize,
    },
    /// A context allocated from a pool its type must not use. fltemu flags volume contexts
    /// from paged pool (A6: "volume contexts must be nonpaged"; the other types may be either).
    WrongPoolForType {
        /// Its type.
        context_type: ContextType,
        /// The pool asked for.
        pool: PoolKind,
    },
    /// A function called above its documented maximum IRQL (A8, the DDI pages' req.irql).
    IrqlTooHigh {
        /// The function.
        function: &'static str,
        /// The IRQL it was called at.
        irql: u8,
        /// Its documented maximum.
        max: u8,
    },
    /// A context set on an object that cannot hold one: an unopened FILE_OBJECT (pre-create,
    /// B6), a closed one, or a FILE_OBJECT Filter Manager does not know.
    ContextOnUnsupportedObject {
        /// The function.
        function: &'static str,
        /// Why the object cannot hold a context.
        reason: &'static str,
    },
    /// Pool blocks with this tag were not freed by the end of unload.
    PoolLeaked {
        /// The tag.
        tag: Tag,
        /// Bytes outstanding.
        bytes: usize,
        /// Blocks outstanding.
        count: usize,
    },
    /// A pre-operation callback set a CompletionContext with a status other than
    /// SUCCESS_WITH_CALLBACK/SYNCHRONIZE, or asked for a post callback it has not registered
    /// (E3; bug check 0xF5/0x66).
    CompletionContextMisuse {
        /// The operation.
        operation: crate::Operation,
        /// The pre-operation status returned.
        status: i32,
        /// Which rule was broken.
        reason: &'static str,
    },
    /// DriverEntry failed after FltRegisterFilter and did not call FltUnregisterFilter (E7).
    FailedDriverEntryDidNotUnregister {
        /// DriverEntry's status.
        status: i32,
    },
    /// The driver faulted on a user-mode buffer: it touched user memory directly instead of
    /// through MmCopyMemory or a secured range (F4, F5).
    UserBufferTouchedDirectly {
        /// The faulting address.
        address: usize,
        /// The faulting instruction's RVA, if in the image.
        rva: Option<u32>,
    },
    /// ExFreePoolWithTag with a tag other than the block's.
    PoolTagMismatch {
        /// The block's tag.
        allocated: Tag,
        /// The tag passed to the free.
        freed: Tag,
    },
    /// ExFreePoolWithTag of a pointer that is not a live pool block (double or foreign free).
    BadPoolFree {
        /// The pointer.
        pointer: usize,
    },
    /// ExAllocatePool2 with invalid flags or a zero tag.
    BadPoolRequest {
        /// What was wrong.
        reason: &'static str,
    },
    /// File name information released more times than referenced (bug check 0xF5/0x68).
    NameInfoOverReleased,
    /// File name information still referenced at unload.
    NameInfoLeaked {
        /// How many.
        count: usize,
    },
    /// A generic work item allocated and never freed by unload.
    WorkItemLeaked {
        /// How many.
        count: usize,
    },
    /// A server communication port still open at FltUnregisterFilter (B11, E8: close ports
    /// first).
    PortOpenAtUnregister {
        /// How many.
        count: usize,
    },
    /// A push lock released by a thread that does not hold it, or deleted while held.
    PushLockMisuse {
        /// The function.
        function: &'static str,
    },
    /// A Filter Manager call with a parameter its contract forbids (the named rule).
    InvalidParameter {
        /// The function.
        function: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// A security descriptor from FltBuildDefaultSecurityDescriptor never freed.
    SecurityDescriptorLeaked {
        /// How many.
        count: usize,
    },
    /// The driver's stack, measured when it called `function`, went past the 24 KiB an x64
    /// kernel thread has (KERNEL_STACK_SIZE): on Windows that is a double fault (reported once).
    StackTooDeep {
        /// Bytes in use.
        bytes: usize,
        /// The import being called.
        function: &'static str,
        /// The limit.
        limit: usize,
    },
    /// Emulated kernel objects of `kind` the driver created or referenced and had not deleted
    /// or dereferenced by the end of unload (Driver Verifier's leak checks at unload).
    ObjectLeaked {
        /// The object type.
        kind: crate::objects::ObjectKind,
        /// How many.
        count: usize,
    },
    /// A release, delete, wait or acquire its object's contract forbids (not held, not
    /// initialised, deleted while held, released more often than referenced …).
    ObjectMisuse {
        /// The function.
        function: &'static str,
        /// The object type.
        kind: crate::objects::ObjectKind,
        /// What was wrong.
        reason: &'static str,
    },
    /// An operation a callback pended (FLT_PREOP_PENDING, FLT_POSTOP_MORE_PROCESSING_REQUIRED)
    /// was never completed with `function`; fltemu gave up after `waited_ms` and ended it.
    PendedOperationNotCompleted {
        /// The callback that pended it.
        operation: crate::Operation,
        /// The completion function the driver never called.
        function: &'static str,
        /// How long fltemu waited.
        waited_ms: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ContextLeaked { context_type, size, tag, refcount, count } => {
                write!(f, "{count} context(s) leaked at unload: {context_type:?} size {size} tag {tag} refcount {refcount}")
            }
            Self::ReleasedLinkedToZero { context_type, tag } => {
                write!(f, "release took a linked {context_type:?} context ({tag}) to 0 (0xF5/0x6D)")
            }
            Self::UseAfterFree { function, context_type, tag } => {
                write!(f, "{function} used a freed {context_type:?} context ({tag}) (0xF5/0x6E)")
            }
            Self::NotAContext { function, pointer } => write!(f, "{function} got {pointer:#x}, which is not a context"),
            Self::WrongPoolForType { context_type, pool } => write!(f, "{context_type:?} context allocated from {pool:?} pool"),
            Self::IrqlTooHigh { function, irql, max } => write!(f, "{function} called at IRQL {irql} (max {max})"),
            Self::ContextOnUnsupportedObject { function, reason } | Self::InvalidParameter { function, reason } => write!(f, "{function}: {reason}"),
            Self::PoolLeaked { tag, bytes, count } => write!(f, "pool leaked at unload: tag {tag}, {count} blocks, {bytes} bytes"),
            Self::CompletionContextMisuse { operation, status, reason } => {
                write!(f, "{operation:?} pre-op returned {status}: {reason} (E3, 0xF5/0x66)")
            }
            Self::FailedDriverEntryDidNotUnregister { status } => {
                write!(f, "DriverEntry failed with {status:#010x} without calling FltUnregisterFilter (E7)")
            }
            Self::UserBufferTouchedDirectly { address, rva } => {
                write!(f, "driver touched user buffer {address:#x} directly (rva {rva:x?}) (F4)")
            }
            Self::PoolTagMismatch { allocated, freed } => write!(f, "ExFreePoolWithTag tag {freed} but block has {allocated}"),
            Self::BadPoolFree { pointer } => write!(f, "ExFreePoolWithTag of {pointer:#x}, not a live pool block"),
            Self::BadPoolRequest { reason } => write!(f, "ExAllocatePool2: {reason}"),
            Self::NameInfoOverReleased => write!(f, "FltReleaseFileNameInformation released too often (0xF5/0x68)"),
            Self::NameInfoLeaked { count } => write!(f, "{count} file name information structures leaked"),
            Self::WorkItemLeaked { count } => write!(f, "{count} generic work items never freed"),
            Self::PortOpenAtUnregister { count } => write!(f, "{count} server ports open at FltUnregisterFilter (E8)"),
            Self::PushLockMisuse { function } => write!(f, "{function}: push lock misuse"),
            Self::SecurityDescriptorLeaked { count } => write!(f, "{count} security descriptors never freed (F1)"),
            Self::ObjectLeaked { kind, count } => write!(f, "{count} {kind} leaked at unload"),
            Self::ObjectMisuse { function, kind, reason } => write!(f, "{function} ({}): {reason}", kind.name()),
            Self::PendedOperationNotCompleted { operation, function, waited_ms } => {
                write!(f, "{operation:?} pended the operation and {function} never completed it (waited {waited_ms} ms)")
            }
            Self::StackTooDeep { bytes, function, limit } => write!(f, "driver stack {bytes} bytes deep at {function} (kernel stacks have {limit})"),
        }
    }
}

/// Everything a run produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Violations in the order found.
    pub violations: Vec<Violation>,
    /// DbgPrintEx output, one entry per call (trailing newline removed).
    pub debug_output: Vec<String>,
    /// The crash or bug check that ended the run, if any.
    pub stop: Option<Stop>,
    /// Pool bytes outstanding at the time of the report.
    pub pool_bytes_outstanding: usize,
    /// Pool blocks outstanding.
    pub pool_blocks_outstanding: usize,
    /// Contexts allocated and not freed.
    pub contexts_outstanding: usize,
    /// The deepest driver stack seen at an import call, in bytes (a lower bound of its real
    /// maximum; x64 kernel stacks are 24 KiB).
    pub max_stack_depth: usize,
    /// The seed of the schedule the run used ([`crate::Config::schedule_seed`]), printed with a
    /// report that is not clean so the interleaving can be replayed.
    pub schedule_seed: Option<u64>,
}

impl Report {
    /// True when the run had no violation and did not stop.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty() && self.stop.is_none()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.debug_output {
            writeln!(f, "dbg: {line}")?;
        }
        if let Some(stop) = &self.stop {
            writeln!(f, "STOPPED: {stop:?}")?;
        }
        for violation in &self.violations {
            writeln!(f, "VIOLATION: {violation}")?;
        }
        writeln!(
            f,
            "pool outstanding: {} bytes in {} blocks; contexts outstanding: {}; deepest driver stack seen: {} bytes; violations: {}",
            self.pool_bytes_outstanding,
            self.pool_blocks_outstanding,
            self.contexts_outstanding,
            self.max_stack_depth,
            self.violations.len()
        )?;
        if let (false, Some(seed)) = (self.is_clean(), self.schedule_seed) {
            writeln!(f, "schedule seed: {seed} (FLTEMU_SCHEDULE_SEED={seed} replays its delays)")?;
        }
        Ok(())
    }
}
