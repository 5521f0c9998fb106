//! The table of emulated functions: for each `dll!function` fltemu binds, what it checks and the
//! documentation it follows. `fltemu imports` prints the source of every emulated import from
//! it, and the README's "Emulated functions" table is generated from it (`fltemu exports
//! --markdown`; a test keeps the two equal).

use std::fmt::Write as _;

/// Where an emulated function's behaviour comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A learn.microsoft.com DDI reference page: the WDK header (without `.h`) it documents the
    /// function under, e.g. `fltkernel`, `wdm`, `ntifs`, `ntddk`.
    Ddi(&'static str),
    /// A DDI page documenting the function under another name (a header inline or macro that
    /// compiles to this export): (header, documented name).
    DdiAs(&'static str, &'static str),
    /// A C runtime reference page on learn.microsoft.com (the page's slug under
    /// `cpp/c-runtime-library/reference/`).
    Crt(&'static str),
    /// Another learn.microsoft.com page: (title, address).
    Page(&'static str, &'static str),
}

impl Source {
    /// The page's address.
    #[must_use]
    pub fn url(self, function: &str) -> String {
        match self {
            Source::Ddi(header) => {
                format!("https://learn.microsoft.com/windows-hardware/drivers/ddi/{header}/nf-{header}-{}", function.to_ascii_lowercase())
            }
            Source::DdiAs(header, documented) => Source::Ddi(header).url(documented),
            Source::Crt(slug) => format!("https://learn.microsoft.com/cpp/c-runtime-library/reference/{slug}"),
            Source::Page(_, url) => url.to_owned(),
        }
    }

    /// The page's title as the docs show it.
    #[must_use]
    pub fn title(self, function: &str) -> String {
        match self {
            Source::Ddi(header) => format!("{function} function ({header}.h)"),
            Source::DdiAs(header, documented) => format!("{documented} function ({header}.h)"),
            Source::Crt(_) => format!("{function} (C runtime reference)"),
            Source::Page(title, _) => title.to_owned(),
        }
    }
}

/// One emulated function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emulated {
    /// The module that exports it (`ntoskrnl.exe`, `fltmgr.sys`).
    pub dll: &'static str,
    /// Its name.
    pub function: &'static str,
    /// What fltemu does and checks (statuses, IRQL, leak checks).
    pub notes: &'static str,
    /// The documentation followed.
    pub source: Source,
}

const NT: &str = "ntoskrnl.exe";
const FLT: &str = "fltmgr.sys";

const fn nt(function: &'static str, header: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: NT, function, notes, source: Source::Ddi(header) }
}

const fn crt(function: &'static str, slug: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: NT, function, notes, source: Source::Crt(slug) }
}

const fn flt(function: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: FLT, function, notes, source: Source::Ddi("fltkernel") }
}

/// The functions of the first emulated surface (nt.rs, flt.rs, port.rs).
const CORE: &[Emulated] = &[
    nt("DbgPrintEx", "wdm", "printf subset: flags `-0+#`, width/precision incl. `*`, `hh h l ll I64 I32 z`, `%d %i %u %x %X %o %c %C %s %S %ws %Z %wZ %p %%`; ≤ 12 variadic slots; output captured per run; a Unicode conversion above PASSIVE_LEVEL → IrqlTooHigh (DDI Remarks)"),
    nt("KeBugCheckEx", "wdm", "ends the run: `Stop::BugCheck{code, params}`"),
    crt("memcpy", "memcpy-wmemcpy", "C semantics; memcpy/memmove/memset are leaf assembly routines, so a fault inside them (a bad user buffer under `__try`) is dispatched from the driver's call site, as a fault in nt!memcpy is"),
    crt("memmove", "memmove-wmemmove", "C semantics; memcpy/memmove/memset are leaf assembly routines, so a fault inside them (a bad user buffer under `__try`) is dispatched from the driver's call site, as a fault in nt!memcpy is"),
    crt("memset", "memset-wmemset", "C semantics; memcpy/memmove/memset are leaf assembly routines, so a fault inside them (a bad user buffer under `__try`) is dispatched from the driver's call site, as a fault in nt!memcpy is"),
    crt("memcmp", "memcmp-wmemcmp", "C semantics; a count of 0 reads nothing (0 for any pointers)"),
    crt("strlen", "strlen-wcslen-mbslen-mbslen-l-mbstrlen-mbstrlen-l", "C semantics"),
    nt("ExAllocatePool2", "wdm", "exactly one of NON_PAGED/NON_PAGED_EXECUTE/PAGED, known flags, non-zero tag (else NULL + BadPoolRequest); zeroed unless POOL_FLAG_UNINITIALIZED (then 0xA5 poison); 16-byte aligned; ≤ DISPATCH (paged ≤ APC); tag/bytes accounted"),
    nt("ExFreePoolWithTag", "wdm", "tag must match (PoolTagMismatch), unknown/double free (BadPoolFree); 0xDF poison; leaks at unload → PoolLeaked{tag, bytes, count}"),
    nt("KeGetCurrentIrql", "wdm", "the emulated per-thread IRQL (an import, not the CR8 read of the WDK headers)"),
    nt("KeQuerySystemTimePrecise", "wdm", "100 ns since 1601 from the host clock"),
    nt("KeAcquireSpinLockRaiseToDpc", "wdm", "IRQL ≤ DISPATCH; a real mutual exclusion on the KSPIN_LOCK word; raises the thread's IRQL to DISPATCH and returns the old one, so every export called under the lock is checked against DISPATCH; re-acquiring a held lock → InvalidParameter (then `Stop::Hang`); a callback returning with a lock held → InvalidParameter; a KSPIN_LOCK not 8-byte aligned → InvalidParameter, not taken, IRQL unchanged"),
    nt("KeReleaseSpinLock", "wdm", "IRQL = DISPATCH; releases a lock this thread holds and sets the IRQL to NewIrql; not held by this thread, called below DISPATCH, NewIrql > DISPATCH, or a KSPIN_LOCK not 8-byte aligned → InvalidParameter"),
    nt("PsGetCurrentProcessId", "ntddk", "the requestor (I/O), the sender (port callbacks), else System (4)"),
    nt("FsRtlIsPagingFile", "ntifs", "TRUE for opens with `paging_file`"),
    nt("MmCopyMemory", "ntddk", "MM_COPY_MEMORY_VIRTUAL copies via `process_vm_readv` (never faults); nothing copied → STATUS_ACCESS_VIOLATION, part → STATUS_PARTIAL_COPY; physical copies NOT_SUPPORTED; ≤ APC (F5)"),
    nt("MmSecureVirtualMemory", "ntddk", "NULL unless the whole range is in one user mapping with ≥ the asked protection; while secured the test cannot unmap or tighten it (F5)"),
    nt("MmUnsecureVirtualMemory", "ntddk", "releases a secure handle; an unknown handle → InvalidParameter"),
    nt("ZwQueryVirtualMemory", "ntifs", "PASSIVE only; ZwCurrentProcess() only; MemoryBasicInformation only (else STATUS_INVALID_INFO_CLASS), < 48 bytes → STATUS_INFO_LENGTH_MISMATCH; user buffers are MEM_PRIVATE or MEM_MAPPED regions with a guard page"),
    flt("FltRegisterFilter", "validates Version 0x0200–0x0203 (Size = 0x70 for 0x0203), Flags, context registrations (A1 types, flags, non-zero tag, ≤ 3 fixed + ≤ 1 variable per type) → STATUS_FLT_INVALID_CONTEXT_REGISTRATION; operations (valid majors, no duplicates) → STATUS_INVALID_PARAMETER; one filter per driver (E1, E2, A2, A3)"),
    flt("FltStartFiltering", "InstanceSetup (AUTOMATIC) for mounted volumes before it returns (E6)"),
    flt("FltUnregisterFilter", "TeardownStart/Complete (FILTER_UNLOAD, +MANDATORY), link references dropped (cleanups run), server ports closed (PortOpenAtUnregister), waits for work items, then ContextLeaked / NameInfoLeaked (B9, B11)"),
    flt("FltAllocateContext", "exact size, else NO_EXACT_SIZE_MATCH smallest ≥, else variable entry; 0 or > 0xFFFF → INVALID_BUFFER_SIZE; none → ALLOCATION_NOT_FOUND; count 1, poison-filled; volume context from paged pool → WrongPoolForType (A4–A6)"),
    flt("FltReferenceContext", "+1; freed → UseAfterFree (0xF5/0x6E); foreign → NotAContext (B1)"),
    flt("FltReleaseContext", "−1; cleanup once at 0; release to 0 while linked → ReleasedLinkedToZero (0xF5/0x6D); paged release ≤ APC (B1, B10, A8)"),
    flt("FltGetInstanceContext", "+1 on success; NULL + NOT_FOUND (B2)"),
    flt("FltSetInstanceContext", "KEEP → ALREADY_DEFINED with referenced OldContext; REPLACE hands the old link reference over; ALREADY_LINKED first; DELETING_OBJECT after TeardownStart (B3–B6)"),
    flt("FltDeleteInstanceContext", "unlink; NULL OldContext drops the link reference, else hands it over (B7)"),
    flt("FltGetStreamContext", "+1 on success; NULL + NOT_FOUND / NOT_SUPPORTED (paging file, volume without stream contexts, unopened FILE_OBJECT) (B2, A9, D1)"),
    flt("FltSetStreamContext", "as FltSetInstanceContext; Set on an unopened/closed/unknown FILE_OBJECT → ContextOnUnsupportedObject (B3–B6)"),
    flt("FltDeleteStreamContext", "as FltDeleteInstanceContext (B7)"),
    flt("FltGetFileContext", "as FltGetStreamContext, per file (all its streams share one); NOT_SUPPORTED where the volume has no stream/file contexts (B2, A9, D1)"),
    flt("FltSetFileContext", "as FltSetStreamContext, per file; the link is dropped at the file's last close over all its streams (B3–B6)"),
    flt("FltDeleteFileContext", "as FltDeleteInstanceContext (B7)"),
    flt("FltGetStreamHandleContext", "as FltGetStreamContext, per FILE_OBJECT (B2, A9, D1)"),
    flt("FltSetStreamHandleContext", "as FltSetStreamContext, per FILE_OBJECT (B3–B6)"),
    flt("FltDeleteStreamHandleContext", "as FltDeleteInstanceContext (B7)"),
    flt("FltGetVolumeContext", "+1 on success; NULL + NOT_FOUND (B2)"),
    flt("FltSetVolumeContext", "as FltSetInstanceContext, per volume (B3–B6)"),
    flt("FltDeleteContext", "unlinks; keeps the caller's reference (flagged if it holds none) (B8)"),
    flt("FltGetVolumeName", "NULL buffer / too small → BUFFER_TOO_SMALL + size needed"),
    flt("FltGetFileNameInformation", "Name = volume + path, Volume filled; OPENED and NORMALIZED same text (no short names to expand), own Format; SHORT = final component only, INVALID_PARAMETER in pre-create; one query method required; cached per (opened stream, format) until the stream's last close: DEFAULT / ALWAYS_ALLOW_CACHE_LOOKUP return the cached block +1, CACHE_ONLY a miss → FLT_NAME_CACHE_MISS, FILESYSTEM_ONLY and DO_NOT_CACHE bypass; NORMALIZED for a failed create → OBJECT_NAME_NOT_FOUND; refused in post-close; leaks at unload → NameInfoLeaked"),
    flt("FltLockUserBuffer", "≤ APC; callback data not of a running operation → INVALID_PARAMETER + InvalidParameter; an operation without an MDL parameter (create, cleanup, close) → STATUS_INVALID_PARAMETER as documented; IRP_MJ_READ/WRITE: probe-and-lock of the buffer (a read needs write access, a write read access, else STATUS_ACCESS_VIOLATION), an MDL in Parameters.Read/Write.MdlAddress (already one → SUCCESS), mapped by MmGetSystemAddressForMdlSafe to a kernel view valid at DISPATCH_LEVEL, freed by Filter Manager at completion (IoFreeMdl of it → ObjectMisuse; its system address used after completion → bug check 0x50 + ObjectMisuse); other lockable operations are not issued by fltemu"),
    flt("FltGetFileNameInformationUnsafe", "as FltGetFileNameInformation from a FILE_OBJECT (Instance may be NULL); a FILE_OBJECT not opened or unknown → INVALID_PARAMETER + InvalidParameter"),
    flt("FltReleaseFileNameInformation", "−1; over-release (below the cache's own reference) → NameInfoOverReleased (0xF5/0x68)"),
    flt("FltReferenceFileNameInformation", "+1; not live → InvalidParameter"),
    flt("FltParseFileNameInformation", "fills ParentDir, FinalComponent, Extension, Stream; NamesParsed"),
    flt("FltGetRequestorProcessId", "the opener's pid from the callback data Filter Manager built"),
    flt("FltBuildDefaultSecurityDescriptor", "opaque descriptor, leak-checked at unload (SecurityDescriptorLeaked) (F1)"),
    flt("FltFreeSecurityDescriptor", "frees a descriptor; unknown → InvalidParameter (F1)"),
    flt("FltInitializePushLock", "a real reader/writer lock on the EX_PUSH_LOCK word (its low 32 bits); a contended acquire yields a few times, then sleeps on the word until a release wakes it, as a push lock's waiters block; an EX_PUSH_LOCK not 8-byte aligned → InvalidParameter and every push-lock call on it does nothing; ≤ APC"),
    flt("FltAcquirePushLockExclusive", "not recursive: a self-deadlock ends in `Stop::Hang`; ≤ APC"),
    flt("FltAcquirePushLockShared", "shared holders counted on the word; ≤ APC"),
    flt("FltReleasePushLock", "unbalanced release → PushLockMisuse; ≤ APC"),
    flt("FltDeletePushLock", "delete while held → PushLockMisuse; ≤ APC"),
    flt("FltAllocateGenericWorkItem", "≤ DISPATCH; never freed → WorkItemLeaked"),
    flt("FltQueueGenericWorkItem", "routine runs on an emulator worker at PASSIVE; FltUnregisterFilter waits for queued items; DELETING_OBJECT after unregister (B11)"),
    flt("FltFreeGenericWorkItem", "not a live work item → InvalidParameter"),
    flt("FltCreateCommunicationPort", "PASSIVE; OBJ_KERNEL_HANDLE required; connect/disconnect callbacks required; MaxConnections > 0 and enforced; duplicate name → OBJECT_NAME_COLLISION (F2)"),
    flt("FltCloseCommunicationPort", "stops new connections only (F3)"),
    flt("FltCloseClientPort", "closes the kernel side, NULLs the variable; the disconnect callback must call it (F3)"),
    flt("FltSendMessage", "queues for FilterGetMessage; waits for delivery or the reply; timeout → STATUS_TIMEOUT; PORT_DISCONNECTED; reply longer than ReplyLength → BUFFER_OVERFLOW (F6)"),
];

/// The MSVC runtime support (seh.rs, gs.rs).
const MSVC_RUNTIME: &[Emulated] = &[
    Emulated { dll: NT, function: "__C_specific_handler", notes: "the language handler of `__try` frames: during dispatch, runs the `__except` filters of the scope-table entries containing the PC (`1` = constant EXCEPTION_EXECUTE_HANDLER), CONTINUE_SEARCH / CONTINUE_EXECUTION / EXECUTE_HANDLER → unwind to the JumpTarget with RAX = the code; during unwind, runs the `__finally` handlers of the scopes being left (ScopeIndex advanced first) and stops at the target scope; an exception raised in a filter or `__finally` is dispatched as a nested exception through the frames below the dispatcher (EXCEPTION_NESTED_CALL), and its unwind collides with the running one (EXCEPTION_COLLIDED_UNWIND, the old DISPATCHER_CONTEXT), as RtlDispatchException / RtlUnwindEx do", source: Source::Page("x64 exception handling", "https://learn.microsoft.com/cpp/build/exception-handling-x64") },
    nt("ExRaiseStatus", "wdm", "raises the status (EXCEPTION_NONCONTINUABLE) from the caller's registers (captured by an assembly thunk); CONTINUE_EXECUTION of it → the dispatcher raises STATUS_NONCONTINUABLE_EXCEPTION (an outer __except may take it); any IRQL"),
    nt("ProbeForRead", "wdm", "length 0 checks nothing; address not a multiple of Alignment → raises STATUS_DATATYPE_MISALIGNMENT; range not inside a user mapping (fltemu's user half) or wrapping → raises STATUS_ACCESS_VIOLATION; does not touch the memory (a no-access user page passes, the later access faults); Alignment not 1/2/4/8/16 → InvalidParameter; ≤ APC"),
    nt("ProbeForWrite", "wdm", "as ProbeForRead, plus every byte must be writable user memory (else STATUS_ACCESS_VIOLATION, as its page touch faults); ≤ APC"),
    Emulated { dll: NT, function: "RtlCaptureContext", notes: "the caller's integer and segment registers, EFlags, MXCSR and (FXSAVE) FltSave, RIP = the return address, RSP = the caller's after the return, ContextFlags CONTROL|INTEGER|SEGMENTS|FLOATING_POINT; a CONTEXT not 16-byte aligned → InvalidParameter (FltSave not captured); any IRQL", source: Source::Page("RtlCaptureContext function (winnt.h)", "https://learn.microsoft.com/windows/win32/api/winnt/nf-winnt-rtlcapturecontext") },
    Emulated { dll: NT, function: "RtlLookupFunctionEntry", notes: "binary search of the driver image's `.pdata`: the entry and ImageBase; a PC in the image without an entry (leaf) → NULL, ImageBase set; any other PC (fltemu's own code, which has no function table a driver can use) → NULL, ImageBase 0; NULL ImageBase → InvalidParameter; any IRQL", source: Source::Page("RtlLookupFunctionEntry function (winnt.h)", "https://learn.microsoft.com/windows/win32/api/winnt/nf-winnt-rtllookupfunctionentry") },
    Emulated { dll: NT, function: "RtlVirtualUnwind", notes: "one step of the dispatcher's own unwinder (prolog offsets, epilog markers ret / rep ret / ret n, chained info, machine frames): ContextRecord becomes the caller's, EstablisherFrame set, ContextPointers (optional) get the stack slots nonvolatile registers came from; returns the language handler (and HandlerData) when HandlerType asks and ControlPc is in the body; ImageBase/ControlPc/FunctionEntry not the driver image's → InvalidParameter, NULL, nothing changed; any IRQL", source: Source::Page("RtlVirtualUnwind function (winnt.h)", "https://learn.microsoft.com/windows/win32/api/winnt/nf-winnt-rtlvirtualunwind") },
    Emulated { dll: NT, function: "RtlUnwindEx", notes: "from the caller (registers captured by a thunk) to TargetFrame: every frame's unwind handler runs with EXCEPTION_UNWINDING (`__finally` blocks abnormally), EXCEPTION_TARGET_UNWIND at the target, then TargetIp with RAX = ReturnValue (ContextRecord gets that context); no ExceptionRecord → STATUS_UNWIND; TargetFrame NULL = exit unwind to the top (0x1E); a frame whose establisher is misaligned or outside the stack, or a target below a frame's establisher (not on the stack) → raises STATUS_BAD_STACK (Windows' RtlUnwindEx check), an unwind handler answering other than CONTINUE_SEARCH → raises STATUS_INVALID_DISPOSITION (0x1E when nothing takes them); an exception in a `__finally` meets it as a collided unwind; STATUS_UNWIND_CONSOLIDATE → InvalidParameter (not modelled); any IRQL", source: Source::Page("RtlUnwindEx function (winnt.h)", "https://learn.microsoft.com/windows/win32/api/winnt/nf-winnt-rtlunwindex") },
    Emulated { dll: NT, function: "__chkstk", notes: "RAX = frame size: a frame that would end more than 24 KiB (KERNEL_STACK_SIZE) below the outermost driver call → StackTooDeep{function: \"__chkstk\"}; then probes every page of the new frame; preserves all registers but R10/R11", source: Source::Page("__chkstk routine", "https://learn.microsoft.com/windows/win32/devnotes/-win32-chkstk") },
];

/// Every emulated function, grouped by the module that implements it.
#[must_use]
pub fn all() -> Vec<Emulated> {
    let groups: &[&[Emulated]] = &[
        CORE,
        MSVC_RUNTIME,
        crate::time::DOCS,
        crate::pool::DOCS,
        crate::resource::DOCS,
        crate::sync::DOCS,
        crate::ps::DOCS,
        crate::rtl::DOCS,
        crate::mdl::DOCS,
        crate::volume::DOCS,
        crate::system::DOCS,
        crate::createpath::DOCS,
        crate::wild::DOCS,
        crate::ansi::DOCS,
        crate::table::DOCS,
        crate::pend::DOCS,
        crate::rw::DOCS,
        crate::fltfile::DOCS,
        crate::cbdata::DOCS,
    ];
    groups.iter().flat_map(|g| g.iter().copied()).collect()
}

/// The entry for `dll!function`, if fltemu emulates it.
#[must_use]
pub fn find(dll: &str, function: &str) -> Option<Emulated> {
    all().into_iter().find(|e| e.dll.eq_ignore_ascii_case(dll) && e.function == function)
}

/// The README table: one row per function, `| dll!function | notes | [title](url) |`.
#[must_use]
pub fn markdown() -> String {
    let mut table = String::from("| Function | Fidelity notes | Source |\n|---|---|---|\n");
    for entry in all() {
        let source = entry.source;
        let _ = writeln!(
            table,
            "| `{}!{}` | {} | [{}]({}) |",
            entry.dll,
            entry.function,
            entry.notes,
            source.title(entry.function),
            source.url(entry.function)
        );
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_entry_resolves_and_appears_once() {
        let entries = all();
        for entry in &entries {
            assert!(crate::resolve_import(entry.dll, entry.function).is_some(), "{}!{} is in the catalog but does not resolve", entry.dll, entry.function);
            assert_eq!(entries.iter().filter(|e| e.dll == entry.dll && e.function == entry.function).count(), 1, "{} listed twice", entry.function);
            assert!(!entry.notes.is_empty());
        }
    }

    #[test]
    fn sources_are_learn_microsoft_pages() {
        let entry = find("fltmgr.sys", "FltGetFileNameInformation").unwrap();
        assert_eq!(entry.source.url(entry.function), "https://learn.microsoft.com/windows-hardware/drivers/ddi/fltkernel/nf-fltkernel-fltgetfilenameinformation");
        assert!(markdown().contains("| `ntoskrnl.exe!strlen` | C semantics | [strlen (C runtime reference)](https://learn.microsoft.com/cpp/c-runtime-library/reference/strlen-wcslen-mbslen-mbslen-l-mbstrlen-mbstrlen-l) |"));
    }
}
