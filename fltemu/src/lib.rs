//! fltemu: an emulated Filter Manager that runs a minifilter `.sys` in a Linux x86_64 process
//! and verifies every context reference, pool block and IRQL against the documented contracts.
//!
//! ```no_run
//! use fltemu::{Config, Emulator, OpenOptions, VolumeSpec};
//! let emulator = Emulator::load("ctxguard.sys", Config::default()).unwrap();
//! let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
//! let file = emulator.open(volume, "\\dir\\a.txt", &OpenOptions::default()).unwrap();
//! emulator.cleanup(&file).unwrap();
//! emulator.close(file).unwrap();
//! let report = emulator.unload().unwrap();
//! assert!(report.is_clean(), "{report}");
//! ```
//!
//! One emulator may exist per process at a time (the imported functions have no context
//! argument, so they reach the emulator through a process-global pointer): [`Emulator::load`]
//! waits until any other emulator in the process is dropped. An [`Emulator`] is `Send + Sync`;
//! several threads may issue I/O through one emulator at once.
//!
//! Rule ids in the docs (A8, B3, E3, F2 …) refer to `fltmgr-semantics.md` in the shared docs.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]
// The emulator is FFI-heavy by nature; these pedantic lints flag the deliberate, checked casts
// between Windows field widths and Rust sizes rather than bugs.
#![allow(clippy::cast_possible_truncation, clippy::module_name_repetitions, clippy::missing_panics_doc)]

pub mod catalog;
mod cbdata;
mod createpath;
mod driver_mem;
mod exec;
mod flt;
mod fltfile;
mod gs;
mod hold;
pub mod imports;
mod io;
mod knobs;
mod mdl;
mod nt;
pub mod objects;
mod pend;
mod pool;
mod ps;
mod resource;
mod rtl;
mod rw;
mod sync;
mod system;
mod volume;
mod wild;
mod ansi;
mod table;
pub mod pe;
mod port;
mod printf;
pub mod scenario;
pub mod schedule;
mod seh;
mod state;
mod time;
mod unwind;
mod user;
mod verifier;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

pub use exec::{Irql, Stop, APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
pub use pe::LoadError;
pub use rw::{IoOptions, IoResult};

/// The `offset` of [`Emulator::write`] that asks for an append: ByteOffset HighPart -1, LowPart
/// FILE_WRITE_TO_END_OF_FILE (0xFFFFFFFF), bit for bit (the FltWriteFile page).
pub const FILE_WRITE_TO_END_OF_FILE: u64 = u64::MAX;
pub use port::{hresult_from_nt, Message, UserPort, FILTER_MESSAGE_HEADER_SIZE, HRESULT_NO_WAITER_FOR_REPLY};
pub use state::status;
pub use user::{Access, UserBuffer};
pub use verifier::{ContextType, PoolKind, Report, Tag, Violation};

use state::{Inner, Life};

/// The operation whose callback made a Filter Manager call (the key of [`CallCounts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// DriverEntry (and what runs inside it).
    DriverEntry,
    /// FilterUnloadCallback (and FltUnregisterFilter inside it).
    Unload,
    /// InstanceSetupCallback.
    InstanceSetup,
    /// InstanceQueryTeardownCallback.
    InstanceQueryTeardown,
    /// InstanceTeardownStartCallback.
    InstanceTeardownStart,
    /// InstanceTeardownCompleteCallback.
    InstanceTeardownComplete,
    /// Pre-create.
    PreCreate,
    /// Post-create.
    PostCreate,
    /// Pre-cleanup.
    PreCleanup,
    /// Post-cleanup.
    PostCleanup,
    /// Pre-close.
    PreClose,
    /// Post-close.
    PostClose,
    /// Pre-read (IRP_MJ_READ).
    PreRead,
    /// Post-read.
    PostRead,
    /// Pre-write (IRP_MJ_WRITE).
    PreWrite,
    /// Post-write.
    PostWrite,
    /// A context cleanup callback.
    ContextCleanup,
    /// A generic work item.
    WorkItem,
    /// The port connect callback.
    PortConnect,
    /// The port disconnect callback.
    PortDisconnect,
    /// The port message callback.
    PortMessage,
    /// Anything else.
    Other,
}

/// Emulator settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// IRQL post-cleanup callbacks run at (A9: post-ops may run at DISPATCH_LEVEL).
    pub post_cleanup_irql: Irql,
    /// IRQL post-close callbacks run at.
    pub post_close_irql: Irql,
    /// Verify the PE checksum (always on for real kernels; off only to test a patched image).
    pub check_checksum: bool,
    /// Service name (for the driver object and registry path).
    pub service_name: String,
    /// Sleep 2 ms whenever a context Get returns STATUS_NOT_FOUND, so that simultaneous first
    /// opens of one stream reliably meet in the find-or-create race (C3 "race path") instead of
    /// only when the scheduler happens to interleave them.
    pub widen_race_windows: bool,
    /// How long one call into the driver may take before the run ends with [`Stop::Hang`].
    pub call_timeout: std::time::Duration,
    /// Failures injected from the start (so DriverEntry's error paths can be driven); see
    /// [`Emulator::inject_failure`].
    pub failures: Vec<Failure>,
    /// Seed of the schedule that delays threads at call boundaries and race points inside the
    /// emulated calls ([`schedule`]); None = no delays. `Config::default()` takes it from the
    /// `FLTEMU_SCHEDULE_SEED` environment variable.
    pub schedule_seed: Option<u64>,
}

/// A planned failure of an emulated function (see [`Emulator::inject_failure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The function, e.g. "FltAllocateContext".
    pub function: &'static str,
    /// The status it fails with (ignored by the functions that fail with NULL).
    pub status: i32,
    /// Every `every`-th call fails.
    pub every: u64,
    /// At most this many times.
    pub times: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self { post_cleanup_irql: PASSIVE_LEVEL, post_close_irql: PASSIVE_LEVEL, check_checksum: true, service_name: "ctxguard".into(),
            widen_race_windows: false,
            call_timeout: std::time::Duration::from_secs(120),
            failures: Vec::new(),
            schedule_seed: schedule::seed_from_env(),
        }
    }
}

/// A volume to mount.
#[derive(Clone, Debug)]
pub struct VolumeSpec {
    /// Device name, e.g. `\Device\HarddiskVolume1`.
    pub name: String,
    /// FLT_FILESYSTEM_TYPE (NTFS = 2, FAT = 4, REFS = 0x18 …).
    pub file_system: i32,
    /// Whether the file system supports stream (and stream-handle) contexts (D1).
    pub stream_contexts: bool,
}

impl VolumeSpec {
    /// An NTFS volume (stream contexts supported).
    #[must_use]
    pub fn ntfs(name: &str) -> Self {
        Self { name: name.into(), file_system: 2, stream_contexts: true }
    }

    /// A third-party file system without stream-context support (D1).
    #[must_use]
    pub fn without_stream_contexts(name: &str) -> Self {
        Self { name: name.into(), file_system: 0x0F, stream_contexts: false }
    }
}

/// A mounted volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VolumeId(pub usize);

/// Parameters of one create.
#[derive(Clone, Debug)]
#[allow(clippy::struct_excessive_bools)] // Each is an independent property of one create.
pub struct OpenOptions {
    /// IO_SECURITY_CONTEXT.DesiredAccess.
    pub desired_access: u32,
    /// Parameters.Create.ShareAccess.
    pub share_access: u16,
    /// Parameters.Create.Options (low 24 bits).
    pub create_options: u32,
    /// Create disposition (FILE_OPEN_IF = 3 by default).
    pub disposition: u32,
    /// The requestor process id (FltGetRequestorProcessId, PsGetCurrentProcessId).
    pub pid: u32,
    /// The status the file system completes the create with (a failure = a failed create).
    pub final_status: i32,
    /// Open as a paging file (FsRtlIsPagingFile; no stream contexts, A9).
    pub paging_file: bool,
    /// RequestorMode UserMode.
    pub user_mode: bool,
    /// `SL_OPEN_TARGET_DIRECTORY` in the create's OperationFlags: the FILE_OBJECT opens the
    /// path's parent directory (its stream), while the name query answers the path itself.
    pub open_target_directory: bool,
    /// A volume open: `FO_VOLUME_OPEN` in the FILE_OBJECT's Flags, the volume's own stream.
    pub volume_open: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            desired_access: 0x0012_0089, // FILE_GENERIC_READ
            share_access: 0x3,
            create_options: 0,
            disposition: 3,
            pid: 1000,
            final_status: 0,
            paging_file: false,
            user_mode: true,
            open_target_directory: false,
            volume_open: false,
        }
    }
}

/// An open FILE_OBJECT (from [`Emulator::open`]).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FileHandle {
    /// The FILE_OBJECT address the driver sees.
    pub file_object: usize,
    /// The requestor.
    pub pid: u32,
}

/// Why an emulator call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmuError {
    /// The image could not be loaded.
    Load(LoadError),
    /// DriverEntry returned a failure status; the report holds what the verifier found.
    DriverEntryFailed {
        /// DriverEntry's status.
        status: i32,
        /// The report at that point.
        report: Box<Report>,
    },
    /// The driver crashed or bug-checked (now or earlier); the emulator accepts no more calls.
    Stopped(Stop),
    /// The create failed with this status.
    CreateFailed(i32),
    /// InstanceQueryTeardown refused a manual detach with this status.
    DetachRefused(i32),
    /// The filter has no FilterUnloadCallback or refused the unload.
    UnloadRefused(i32),
    /// No such volume.
    NoSuchVolume,
    /// The filter is not attached to the volume.
    NotAttached,
    /// The handle is not open (or cleanup/close out of order).
    InvalidHandle,
    /// The driver is already unloaded.
    Unloaded,
}

impl std::fmt::Display for EmuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmuError::Load(e) => write!(f, "load failed: {e}"),
            EmuError::DriverEntryFailed { status, .. } => write!(f, "DriverEntry failed with {status:#010x}"),
            EmuError::Stopped(Stop::Crash { address, rip, rva, signal }) => {
                write!(f, "driver crash: signal {signal} accessing {address:#x} at rip {rip:#x}")?;
                match rva {
                    Some(rva) => write!(f, " (image RVA {rva:#x})"),
                    None => write!(f, " (outside the image)"),
                }
            }
            EmuError::Stopped(Stop::Hang { after_ms }) => write!(f, "driver call did not return within {after_ms} ms"),
            EmuError::Stopped(Stop::BugCheck { code, params, rva }) => {
                write!(f, "bug check {code:#010x} ({:#x}, {:#x}, {:#x}, {:#x})", params[0], params[1], params[2], params[3])?;
                match *code {
                    seh::KMODE_EXCEPTION_NOT_HANDLED => {
                        write!(f, " KMODE_EXCEPTION_NOT_HANDLED: exception {:#010x}", params[0])?;
                        match rva {
                            Some(rva) => write!(f, " at image RVA {rva:#x}"),
                            None => write!(f, " at {:#x} (outside the image)", params[1]),
                        }
                    }
                    seh::PAGE_FAULT_IN_NONPAGED_AREA => match rva {
                        Some(rva) => write!(f, " PAGE_FAULT_IN_NONPAGED_AREA: {:#x} referenced at image RVA {rva:#x}", params[0]),
                        None => write!(f, " PAGE_FAULT_IN_NONPAGED_AREA: {:#x} referenced at {:#x}", params[0], params[2]),
                    },
                    gs::DRIVER_OVERRAN_STACK_BUFFER => write!(f, " DRIVER_OVERRAN_STACK_BUFFER: stack cookie {:#x}, expected {:#x}", params[0], params[1]),
                    seh::SYSTEM_THREAD_EXCEPTION_NOT_HANDLED => {
                        write!(f, " SYSTEM_THREAD_EXCEPTION_NOT_HANDLED: exception {:#010x}", params[0])?;
                        match rva {
                            Some(rva) => write!(f, " at image RVA {rva:#x}"),
                            None => write!(f, " at {:#x} (outside the image)", params[1]),
                        }
                    }
                    seh::KERNEL_SECURITY_CHECK_FAILURE => write!(f, " KERNEL_SECURITY_CHECK_FAILURE: __fastfail code {}", params[0]),
                    seh::UNEXPECTED_KERNEL_MODE_TRAP => write!(f, " UNEXPECTED_KERNEL_MODE_TRAP: trap {}", params[0]),
                    _ => Ok(()),
                }
            }
            EmuError::CreateFailed(s) => write!(f, "create failed with {s:#010x}"),
            EmuError::DetachRefused(s) => write!(f, "detach refused with {s:#010x}"),
            EmuError::UnloadRefused(s) => write!(f, "unload refused with {s:#010x}"),
            EmuError::NoSuchVolume => write!(f, "no such volume"),
            EmuError::NotAttached => write!(f, "the filter is not attached to that volume"),
            EmuError::InvalidHandle => write!(f, "invalid handle"),
            EmuError::Unloaded => write!(f, "the driver is unloaded"),
        }
    }
}

impl std::error::Error for EmuError {}

/// One live context, as Filter Manager sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextInfo {
    /// The context address.
    pub address: usize,
    /// Its type.
    pub context_type: ContextType,
    /// Its size.
    pub size: usize,
    /// Its tag.
    pub tag: Tag,
    /// Its pool.
    pub pool: PoolKind,
    /// Its reference count.
    pub refcount: i64,
    /// Whether it is linked to an object.
    pub linked: bool,
}

/// Filter Manager/ntoskrnl calls per (operation, function).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCounts(pub BTreeMap<(Operation, String), u64>);

impl CallCounts {
    /// Calls of `function` during `operation`.
    #[must_use]
    pub fn get(&self, operation: Operation, function: &str) -> u64 {
        self.0.get(&(operation, function.to_owned())).copied().unwrap_or(0)
    }

    /// Calls of `function` in any operation.
    #[must_use]
    pub fn total(&self, function: &str) -> u64 {
        self.0.iter().filter(|((_, f), _)| f == function).map(|(_, n)| n).sum()
    }

    /// Calls of functions whose name starts with `prefix` (e.g. "Flt").
    #[must_use]
    pub fn total_prefix(&self, prefix: &str) -> u64 {
        self.0.iter().filter(|((_, f), _)| f.starts_with(prefix)).map(|(_, n)| n).sum()
    }

    /// `self - earlier`, per key (for budgets of one operation).
    #[must_use]
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        CallCounts(
            self.0
                .iter()
                .filter_map(|(k, v)| {
                    let d = v - earlier.0.get(k).copied().unwrap_or(0);
                    (d > 0).then(|| (k.clone(), d))
                })
                .collect(),
        )
    }
}

/// The process-wide lease: one emulator at a time.
static LEASE: Mutex<bool> = Mutex::new(false);
static LEASE_FREE: Condvar = Condvar::new();

struct Lease;

impl Lease {
    fn take() -> Self {
        let mut taken = LEASE.lock().unwrap_or_else(PoisonError::into_inner);
        while *taken {
            taken = LEASE_FREE.wait(taken).unwrap_or_else(PoisonError::into_inner);
        }
        *taken = true;
        Lease
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        *LEASE.lock().unwrap_or_else(PoisonError::into_inner) = false;
        LEASE_FREE.notify_one();
    }
}

/// The report of the last load whose DriverEntry crashed or bug-checked: the emulator it ran in
/// is gone with the error, so this keeps what the driver printed and the reasons fltemu gave.
static STOPPED_LOAD_REPORT: Mutex<Option<Report>> = Mutex::new(None);

/// Takes the report of the last load that ended with [`EmuError::Stopped`] in DriverEntry (its
/// debug output holds the one-line reason of a bug check fltemu raised), if any.
pub fn take_stopped_load_report() -> Option<Report> {
    STOPPED_LOAD_REPORT.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// Records a stop, classifying faults on user mappings, and builds the error.
pub(crate) fn stopped(inner: &Inner, stop: Stop) -> EmuError {
    if let Stop::Crash { address, rva, .. } = stop
        && inner.user.contains(address)
    {
        inner.violation(Violation::UserBufferTouchedDirectly { address, rva });
    }
    // An access violation on a user address that no __except handled: the driver touched the
    // buffer outside structured exception handling (F4).
    if let Stop::BugCheck { code: seh::KMODE_EXCEPTION_NOT_HANDLED, params, rva } = stop
        && params[0] == seh::STATUS_ACCESS_VIOLATION.cast_unsigned() as usize
        && inner.user.contains(params[3])
    {
        inner.violation(Violation::UserBufferTouchedDirectly { address: params[3], rva });
    }
    // A kernel address in the view of a finished operation's buffer: the driver kept the system
    // address of the operation's MDL (FltLockUserBuffer) past its completion, when Filter
    // Manager unmapped it. Windows bug checks 0x50 on the unmapped page as fltemu does; the
    // violation names the cause.
    if let Stop::BugCheck { code: seh::PAGE_FAULT_IN_NONPAGED_AREA, params, .. } = stop
        && inner.user.in_retired_view(params[0])
    {
        inner.violation(Violation::ObjectMisuse {
            function: "FltLockUserBuffer",
            kind: objects::ObjectKind::Mdl,
            reason: "the system address of an operation's MDL was used after the operation completed (its view was unmapped then)",
        });
    }
    inner.record_stop(stop.clone());
    EmuError::Stopped(inner.stop.get().cloned().unwrap_or(stop))
}

/// Resolves an import of the driver against the emulated modules (the central resolver: each
/// module's `resolve(name)` is chained here; forwarders such as `hal.dll` are followed first).
pub(crate) fn resolve_import(dll: &str, name: &str) -> Option<usize> {
    match imports::forward(dll) {
        "ntoskrnl.exe" => seh::resolve(name)
            .or_else(|| gs::resolve(name))
            .or_else(|| nt::resolve(name))
            .or_else(|| time::resolve(name))
            .or_else(|| pool::resolve(name))
            .or_else(|| resource::resolve(name))
            .or_else(|| sync::resolve(name))
            .or_else(|| ps::resolve(name))
            .or_else(|| rtl::resolve(name))
            .or_else(|| mdl::resolve(name))
            .or_else(|| system::resolve(name))
            .or_else(|| wild::resolve(name))
            .or_else(|| ansi::resolve(name))
            .or_else(|| table::resolve(name)),
        "fltmgr.sys" => flt::resolve(name).or_else(|| volume::resolve(name)).or_else(|| pool::resolve_flt(name)).or_else(|| resource::resolve_flt(name)).or_else(|| system::resolve_flt(name)).or_else(|| createpath::resolve(name)).or_else(|| pend::resolve(name)).or_else(|| rw::resolve_flt(name)).or_else(|| fltfile::resolve_flt(name)).or_else(|| cbdata::resolve_flt(name)).or_else(|| wild::resolve_flt(name)),
        _ => None,
    }
}

/// Maps `bytes` as [`Emulator::load_bytes`] does with the default [`Config`] (header rules, checksum, sections,
/// relocations, imports bound to the emulated exports) without running any of it: the loader
/// alone, for checking an image and for fuzzing.
///
/// # Errors
/// The [`LoadError`] `fltemu run` would report for this image.
pub fn map_image(bytes: &[u8]) -> Result<pe::MappedImage, LoadError> {
    pe::MappedImage::load(bytes, &resolve_import)
}

/// Every emulated export as `dll!function`, from the catalog.
#[must_use]
pub fn emulated_exports() -> Vec<String> {
    let mut names: Vec<String> = catalog::all().iter().map(|e| format!("{}!{}", e.dll, e.function)).collect();
    // The MSVC-runtime modules list their exports themselves; any not yet in the catalog still count.
    for function in seh::EXPORTS.iter().chain(gs::EXPORTS) {
        let name = format!("ntoskrnl.exe!{function}");
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// A loaded driver running against the emulated Filter Manager.
pub struct Emulator {
    inner: Arc<Inner>,
    unloaded: Mutex<bool>,
    _lease: Lease,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").field("image_base", &self.inner.image.base).finish_non_exhaustive()
    }
}

impl Emulator {
    /// Loads the image at `path` and runs DriverEntry.
    ///
    /// # Errors
    /// [`EmuError::Load`] for a bad image, [`EmuError::DriverEntryFailed`] when DriverEntry
    /// fails (with the verifier's report), [`EmuError::Stopped`] when it crashes or bug-checks.
    pub fn load(path: impl AsRef<Path>, config: Config) -> Result<Self, EmuError> {
        let bytes = std::fs::read(path.as_ref()).map_err(|e| EmuError::Load(LoadError::Io(format!("{}: {e}", path.as_ref().display()))))?;
        Self::load_bytes(&bytes, config)
    }

    /// Loads an image from memory and runs DriverEntry.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn load_bytes(bytes: &[u8], config: Config) -> Result<Self, EmuError> {
        let lease = Lease::take();
        let image = if config.check_checksum {
            pe::MappedImage::load(bytes, &resolve_import)
        } else {
            let mut patched = bytes.to_vec();
            fix_checksum(&mut patched);
            pe::MappedImage::load(&patched, &resolve_import)
        }
        .map_err(EmuError::Load)?;
        knobs::reset();
        hold::release();
        objects::reset();
        exec::IMAGE_BASE.store(image.base, std::sync::atomic::Ordering::Relaxed);
        exec::IMAGE_SIZE.store(image.size, std::sync::atomic::Ordering::Relaxed);
        // The loader's /GS step: a random __security_cookie before any driver code runs.
        if let gs::Cookie::Invalid(va) = gs::initialise_cookie(&image) {
            return Err(EmuError::Load(LoadError::NotPe(format!("load config SecurityCookie {va:#x} is not an aligned address in a writable section of the image"))));
        }
        let inner = Arc::new(Inner::new(image, config));
        state::install(&inner);
        let emulator = Emulator { inner, unloaded: Mutex::new(false), _lease: lease };
        for failure in emulator.inner.config.failures.clone() {
            if !emulator.inject_failure(failure.function, failure.status, failure.every, failure.times) {
                return Err(EmuError::Load(LoadError::Io(format!("fltemu cannot inject a failure into {}", failure.function))));
            }
        }
        if let Err(error) = emulator.driver_entry() {
            if matches!(error, EmuError::Stopped(_)) {
                *STOPPED_LOAD_REPORT.lock().unwrap_or_else(PoisonError::into_inner) = Some(emulator.report());
            }
            return Err(error);
        }
        Ok(emulator)
    }

    fn driver_entry(&self) -> Result<(), EmuError> {
        let entry = self.inner.image.entry();
        let base = self.inner.image.base;
        let size = self.inner.image.size;
        let service = self.inner.config.service_name.clone();
        let result = self.run(move |_| {
            exec::enter(PASSIVE_LEVEL, 4, Operation::DriverEntry);
            let driver_name: &'static [u16] = Box::leak(format!("\\Driver\\{service}").encode_utf16().collect::<Vec<u16>>().into_boxed_slice());
            let registry: &'static [u16] = Box::leak(
                format!("\\REGISTRY\\MACHINE\\SYSTEM\\CurrentControlSet\\Services\\{service}").encode_utf16().collect::<Vec<u16>>().into_boxed_slice(),
            );
            let unicode = |s: &'static [u16]| windows_sys::Win32::Foundation::UNICODE_STRING {
                Length: (s.len() * 2) as u16,
                MaximumLength: (s.len() * 2) as u16,
                Buffer: s.as_ptr().cast_mut(),
            };
            // SAFETY: DRIVER_OBJECT is plain data; all-zero is a valid value.
            let driver: &'static mut windows_sys::Wdk::Foundation::DRIVER_OBJECT = Box::leak(Box::new(unsafe { core::mem::zeroed() }));
            driver.Type = 4; // IO_TYPE_DRIVER
            driver.Size = i16::try_from(size_of::<windows_sys::Wdk::Foundation::DRIVER_OBJECT>()).unwrap_or(0);
            driver.DriverStart = base as *mut core::ffi::c_void;
            driver.DriverSize = size as u32;
            driver.DriverName = unicode(driver_name);
            let registry_path: &'static windows_sys::Win32::Foundation::UNICODE_STRING = Box::leak(Box::new(unicode(registry)));
            // SAFETY: the image's entry point is DriverEntry (Win64 ABI, /ENTRY:DriverEntry).
            let entry = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(usize, usize) -> i32>(entry) };
            // SAFETY: called as the I/O manager does: a driver object and the registry path.
            exec::driver_call(|| unsafe { entry(&raw mut *driver as usize, &raw const *registry_path as usize) })
        })?;
        if result >= 0 {
            return Ok(());
        }
        // E7: a failing DriverEntry must have unregistered; Filter Manager is then left with a
        // registered filter whose image is gone.
        let still_registered = self.inner.filter_registered();
        if still_registered {
            self.inner.violation(Violation::FailedDriverEntryDidNotUnregister { status: result });
            *self.inner.filter_mut() = None;
        }
        self.check_pool_at_unload();
        *self.unloaded.lock().unwrap_or_else(PoisonError::into_inner) = true;
        Err(EmuError::DriverEntryFailed { status: result, report: Box::new(self.report()) })
    }

    /// Runs `job` on a driver worker; a crash or bug check becomes [`EmuError::Stopped`].
    fn run<T: Send + 'static>(&self, job: impl FnOnce(&Inner) -> T + Send + 'static) -> Result<T, EmuError> {
        if let Some(stop) = self.inner.stop.get().cloned() {
            return Err(EmuError::Stopped(stop));
        }
        let inner = Arc::clone(&self.inner);
        self.inner
            .workers
            .run(self.inner.config.call_timeout, move || {
                // Each job starts as a System-process thread at PASSIVE_LEVEL; I/O jobs then
                // switch to the requestor's process.
                exec::enter(PASSIVE_LEVEL, 4, Operation::Other);
                job(&inner)
            })
            .map_err(|stop| stopped(&self.inner, stop))
    }

    fn run_io<T: Send + 'static>(&self, job: impl FnOnce(&Inner) -> Result<T, EmuError> + Send + 'static) -> Result<T, EmuError> {
        self.run(job)?
    }

    /// Mounts a volume; when filtering has started the filter's InstanceSetup runs
    /// (FLTFL_INSTANCE_SETUP_AUTOMATIC_ATTACHMENT | NEWLY_MOUNTED_VOLUME).
    ///
    /// # Errors
    /// [`EmuError::Stopped`] when InstanceSetup crashed.
    pub fn mount(&self, spec: VolumeSpec) -> Result<VolumeId, EmuError> {
        let index = {
            let mut volumes = self.inner.volumes_mut();
            let name_wide = spec.name.encode_utf16().collect();
            volumes.push(state::VolumeRecord {
                name: spec.name,
                name_wide,
                file_system: spec.file_system,
                stream_contexts: spec.stream_contexts,
                mounted: true,
                instance: None,
            });
            volumes.len() - 1
        };
        self.run(move |inner| io::attach_instance(inner, index, 0x1 | 0x4))?;
        Ok(VolumeId(index))
    }

    /// Attaches manually (FLTFL_INSTANCE_SETUP_MANUAL_ATTACHMENT); false when InstanceSetup
    /// declined.
    ///
    /// # Errors
    /// [`EmuError::NoSuchVolume`], [`EmuError::Stopped`].
    pub fn attach(&self, volume: VolumeId) -> Result<bool, EmuError> {
        self.check_volume(volume)?;
        self.run(move |inner| io::attach_instance(inner, volume.0, 0x2))
    }

    /// Whether the filter has an instance on `volume`.
    #[must_use]
    pub fn is_attached(&self, volume: VolumeId) -> bool {
        self.inner.volumes().get(volume.0).is_some_and(|v| v.instance.is_some())
    }

    fn check_volume(&self, volume: VolumeId) -> Result<(), EmuError> {
        if volume.0 < self.inner.volumes().len() { Ok(()) } else { Err(EmuError::NoSuchVolume) }
    }

    /// Manual detach (`fltmc detach`): InstanceQueryTeardown, then TeardownStart and
    /// TeardownComplete with FLTFL_INSTANCE_TEARDOWN_MANUAL; open files stay open.
    ///
    /// # Errors
    /// [`EmuError::DetachRefused`] when QueryTeardown refused (or is not registered),
    /// [`EmuError::NotAttached`], [`EmuError::Stopped`].
    pub fn detach(&self, volume: VolumeId) -> Result<(), EmuError> {
        self.check_volume(volume)?;
        self.run_io(move |inner| {
            let instance = inner.volumes()[volume.0].instance.ok_or(EmuError::NotAttached)?;
            let verdict = io::query_teardown(inner, instance);
            if verdict < 0 {
                return Err(EmuError::DetachRefused(verdict));
            }
            io::teardown_instance(inner, instance, 0x1);
            Ok(())
        })
    }

    /// Dismounts a volume: teardown with FLTFL_INSTANCE_TEARDOWN_VOLUME_DISMOUNT (no query) and
    /// the volume context link is dropped; later opens on it fail.
    ///
    /// # Errors
    /// [`EmuError::NoSuchVolume`], [`EmuError::Stopped`].
    pub fn dismount(&self, volume: VolumeId) -> Result<(), EmuError> {
        self.check_volume(volume)?;
        self.run(move |inner| {
            let instance = inner.volumes()[volume.0].instance;
            if let Some(instance) = instance {
                io::teardown_instance(inner, instance, 0x8);
            }
            inner.volumes_mut()[volume.0].mounted = false;
            let doomed = inner.unlink(state::LinkKey::Volume(volume.0));
            inner.finish(doomed.into_iter().collect());
        })
    }

    /// IRP_MJ_CREATE of `path` (relative to the volume, e.g. `\dir\a.txt` or `\a.txt:ads`).
    ///
    /// # Errors
    /// [`EmuError::CreateFailed`] with the final status for a failed create (the driver saw
    /// it), [`EmuError::NoSuchVolume`], [`EmuError::Stopped`].
    pub fn open(&self, volume: VolumeId, path: &str, options: &OpenOptions) -> Result<FileHandle, EmuError> {
        let path = path.to_owned();
        let options = options.clone();
        let pid = options.pid;
        let file_object = self.run_io(move |inner| io::create(inner, volume.0, &path, &options))?;
        Ok(FileHandle { file_object, pid })
    }

    /// IRP_MJ_CLEANUP (the handle is closed).
    ///
    /// # Errors
    /// [`EmuError::InvalidHandle`], [`EmuError::Stopped`].
    pub fn cleanup(&self, file: &FileHandle) -> Result<(), EmuError> {
        let (file_object, pid) = (file.file_object, file.pid);
        self.run_io(move |inner| io::cleanup(inner, file_object, pid))
    }

    /// IRP_MJ_CLOSE (the last reference to the FILE_OBJECT goes); runs cleanup first if needed.
    ///
    /// # Errors
    /// [`EmuError::InvalidHandle`], [`EmuError::Stopped`].
    // Takes the handle by value so that a closed handle cannot be used again.
    #[allow(clippy::needless_pass_by_value)]
    pub fn close(&self, file: FileHandle) -> Result<(), EmuError> {
        let (file_object, pid) = (file.file_object, file.pid);
        self.run_io(move |inner| {
            let needs_cleanup = inner.with_file(file_object, |f| f.state == state::FileState::Open).unwrap_or(false);
            if needs_cleanup {
                io::cleanup(inner, file_object, pid)?;
            }
            io::close(inner, file_object, pid)
        })
    }

    /// Open, cleanup and close in one call (one worker round trip).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_close(&self, volume: VolumeId, path: &str, options: &OpenOptions) -> Result<(), EmuError> {
        let path = path.to_owned();
        let options = options.clone();
        self.run_io(move |inner| {
            let file_object = io::create(inner, volume.0, &path, &options)?;
            io::cleanup(inner, file_object, options.pid)?;
            io::close(inner, file_object, options.pid)
        })
    }

    /// IRP_MJ_READ of `length` bytes at `offset` through the filter's pre/post-read callbacks
    /// (a user buffer for the requestor, or with `options.paging` a paging read into a kernel
    /// buffer with an MDL). Reads see earlier writes; at or past the end the status is
    /// STATUS_END_OF_FILE, at the end a read is short. An offset above `i64::MAX` is a negative
    /// ByteOffset, which the I/O manager refuses (STATUS_INVALID_PARAMETER) before any filter
    /// sees the read.
    ///
    /// # Errors
    /// [`EmuError::InvalidHandle`] when `file` is not open, [`EmuError::Stopped`].
    pub fn read(&self, file: &FileHandle, offset: u64, length: usize, options: &IoOptions) -> Result<IoResult, EmuError> {
        let (file_object, pid, options) = (file.file_object, file.pid, *options);
        self.run_io(move |inner| rw::issue(inner, file_object, pid, offset, length, None, options))
    }

    /// IRP_MJ_WRITE of `data` at `offset` through the filter's pre/post-write callbacks;
    /// [`FILE_WRITE_TO_END_OF_FILE`] appends (the filter sees ByteOffset -1 as Windows sends it).
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub fn write(&self, file: &FileHandle, offset: u64, data: &[u8], options: &IoOptions) -> Result<IoResult, EmuError> {
        let (file_object, pid, options, data) = (file.file_object, file.pid, *options, data.to_vec());
        self.run_io(move |inner| rw::issue(inner, file_object, pid, offset, data.len(), Some(&data), options))
    }

    /// Sets the contents of the stream `path` on `volume` (`\dir\a.txt`, `\a.txt:ads`), as
    /// if written before the run: later reads, FltReadFile and the standard information's
    /// EndOfFile see it.
    pub fn set_file_contents(&self, volume: VolumeId, path: &str, bytes: &[u8]) {
        rw::set_contents(&self.inner, volume.0, path, bytes);
    }

    /// The contents of the stream `path` on `volume` (None when never written or seeded).
    #[must_use]
    pub fn file_contents(&self, volume: VolumeId, path: &str) -> Option<Vec<u8>> {
        rw::contents(&self.inner, volume.0, path)
    }

    /// Unloads the driver (`sc stop`: FLTFL_FILTER_UNLOAD_MANDATORY) and returns the report:
    /// FilterUnloadCallback runs; it must call FltUnregisterFilter, which tears instances down
    /// and checks for leaked contexts; then leaked pool is reported.
    ///
    /// # Errors
    /// [`EmuError::UnloadRefused`] without a FilterUnloadCallback, [`EmuError::Unloaded`],
    /// [`EmuError::Stopped`].
    pub fn unload(&self) -> Result<Report, EmuError> {
        self.unload_with(true)
    }

    /// As [`unload`](Self::unload); `mandatory: false` is `fltmc unload`, which the driver may
    /// refuse (then it stays loaded and [`EmuError::UnloadRefused`] is returned).
    ///
    /// # Errors
    /// As [`unload`](Self::unload).
    pub fn unload_with(&self, mandatory: bool) -> Result<Report, EmuError> {
        if *self.unloaded.lock().unwrap_or_else(PoisonError::into_inner) {
            return Err(EmuError::Unloaded);
        }
        let callback = self.inner.filter().as_ref().map_or(0, |f| f.unload);
        if callback == 0 {
            return Err(EmuError::UnloadRefused(status::FLT_DO_NOT_DETACH));
        }
        io::set_unload_mandatory(mandatory);
        let result = self.run(move |_| {
            exec::enter(PASSIVE_LEVEL, 4, Operation::Unload);
            // SAFETY: the driver's PFLT_FILTER_UNLOAD_CALLBACK.
            let callback = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(u32) -> i32>(callback) };
            // SAFETY: called with FLTFL_FILTER_UNLOAD_MANDATORY (0x1) or 0, as the DDI documents.
            exec::driver_call(|| unsafe { callback(u32::from(mandatory)) })
        })?;
        if result < 0 {
            if mandatory {
                self.inner.violation(Violation::InvalidParameter { function: "FilterUnloadCallback", reason: "failed a mandatory unload" });
            } else {
                return Err(EmuError::UnloadRefused(result));
            }
        }
        if self.inner.filter_registered() {
            self.inner.violation(Violation::InvalidParameter { function: "FilterUnloadCallback", reason: "returned without FltUnregisterFilter" });
            let inner = Arc::clone(&self.inner);
            self.run(move |_| flt::unregister(&inner))?;
        }
        self.check_pool_at_unload();
        *self.unloaded.lock().unwrap_or_else(PoisonError::into_inner) = true;
        Ok(self.report())
    }

    /// The image is gone: pool, work items and descriptors still outstanding are leaks.
    fn check_pool_at_unload(&self) {
        self.inner.wait_for_work();
        let mut by_tag: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
        for shard in self.inner.pool.each() {
            for block in shard.values() {
                let entry = by_tag.entry(block.tag).or_insert((0, 0));
                entry.0 += block.size;
                entry.1 += 1;
            }
        }
        let mut found: Vec<Violation> = by_tag.into_iter().map(|(tag, (bytes, count))| Violation::PoolLeaked { tag: Tag(tag), bytes, count }).collect();
        {
            let state = self.inner.lock();
            if !state.work_items.is_empty() {
                found.push(Violation::WorkItemLeaked { count: state.work_items.len() });
            }
            if !state.security_descriptors.is_empty() {
                found.push(Violation::SecurityDescriptorLeaked { count: state.security_descriptors.len() });
            }
        }
        found.extend(objects::leaks());
        for violation in found {
            self.inner.violation(violation);
        }
    }

    /// The report so far (violations, debug output, stop, outstanding pool and contexts).
    #[must_use]
    pub fn report(&self) -> Report {
        let (bytes, blocks) = self.inner.pool_outstanding();
        Report {
            violations: self.inner.violations(),
            debug_output: self.debug_output(),
            stop: self.inner.stop.get().cloned(),
            pool_bytes_outstanding: bytes,
            pool_blocks_outstanding: blocks,
            contexts_outstanding: self.inner.contexts_outstanding(),
            max_stack_depth: self.inner.max_stack_depth.load(std::sync::atomic::Ordering::Acquire),
            schedule_seed: self.inner.config.schedule_seed,
        }
    }

    /// Violations found so far.
    #[must_use]
    pub fn violations(&self) -> Vec<Violation> {
        self.inner.violations()
    }

    /// How many times an emulated call so far found one of fltemu's sharded-table or
    /// reader/writer locks held by another thread and waited (see README "Locking"): the
    /// contention the state split leaves, for benchmarks.
    #[must_use]
    pub fn lock_waits(&self) -> u64 {
        state::LOCK_WAITS.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The delays the seeded schedule applied so far, in the order applied (empty without
    /// [`Config::schedule_seed`]); the same seed gives each job the same delays.
    #[must_use]
    pub fn schedule_trace(&self) -> Vec<schedule::Decision> {
        self.inner.schedule.as_ref().map_or_else(Vec::new, schedule::Schedule::trace)
    }

    /// The driver's DbgPrintEx output so far.
    #[must_use]
    pub fn debug_output(&self) -> Vec<String> {
        self.inner.debug.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every context not yet freed.
    #[must_use]
    pub fn live_contexts(&self) -> Vec<ContextInfo> {
        let mut list = Vec::new();
        self.inner.contexts.for_each(|address, c| {
            if c.life() != Life::Freed {
                list.push(ContextInfo {
                    address,
                    context_type: c.context_type,
                    size: c.size,
                    tag: Tag(c.tag),
                    pool: c.pool,
                    refcount: c.refs(),
                    linked: c.linked().is_some(),
                });
            }
        });
        list.sort_by_key(|c| c.address);
        list
    }

    /// How many contexts of `context_type` are not yet freed.
    #[must_use]
    pub fn live_context_count(&self, context_type: ContextType) -> usize {
        let mut count = 0;
        self.inner.contexts.for_each(|_, c| count += usize::from(c.life() != Life::Freed && c.context_type == context_type));
        count
    }

    /// The reference count of the context at `address` (None when unknown or freed).
    #[must_use]
    pub fn context_refcount(&self, address: usize) -> Option<i64> {
        self.inner.contexts.get(address).filter(|c| c.life() != Life::Freed).map(state::ContextRecord::refs)
    }

    /// The stream context linked to the stream of `file` by the filter's instance, if any.
    #[must_use]
    pub fn stream_context(&self, file: &FileHandle) -> Option<ContextInfo> {
        self.file_link(file, |instance, stream| Some(state::LinkKey::Stream(instance, stream?)))
    }

    /// The stream-handle context linked to `file`, if any.
    #[must_use]
    pub fn stream_handle_context(&self, file: &FileHandle) -> Option<ContextInfo> {
        self.file_link(file, |instance, _| Some(state::LinkKey::StreamHandle(instance, file.file_object)))
    }

    /// The live context linked under the key `key` builds from `file`'s instance and stream.
    fn file_link(&self, file: &FileHandle, key: impl FnOnce(isize, Option<usize>) -> Option<state::LinkKey>) -> Option<ContextInfo> {
        let (volume, stream) = self.inner.with_file(file.file_object, |record| (record.volume, record.stream))?;
        let instance = self.inner.volumes()[volume].instance?;
        let address = self.inner.linked_at(key(instance, stream)?)?;
        self.context_info(address)
    }

    /// The instance context on `volume`, if any.
    #[must_use]
    pub fn instance_context(&self, volume: VolumeId) -> Option<ContextInfo> {
        let instance = self.inner.volumes().get(volume.0)?.instance?;
        let address = self.inner.linked_at(state::LinkKey::Instance(instance))?;
        self.context_info(address)
    }

    /// The live context at `address`.
    fn context_info(&self, address: usize) -> Option<ContextInfo> {
        let c = self.inner.contexts.get(address).filter(|c| c.life() != Life::Freed)?;
        Some(ContextInfo {
            address,
            context_type: c.context_type,
            size: c.size,
            tag: Tag(c.tag),
            pool: c.pool,
            refcount: c.refs(),
            linked: c.linked().is_some(),
        })
    }

    /// Open FILE_OBJECTs (not yet closed) on the stream `path` of `volume`.
    #[must_use]
    pub fn open_file_objects(&self, volume: VolumeId, path: &str) -> usize {
        let key = (volume.0, path.to_lowercase());
        self.inner.streams.lock(state::name_hash(key.0, &key.1)).live.get(&key).map_or(0, |s| s.open_file_objects)
    }

    /// Reads the driver-visible bytes of a context (for tests that check what the driver stored).
    #[must_use]
    pub fn context_bytes(&self, address: usize) -> Option<Vec<u8>> {
        let size = self.inner.contexts.get(address).filter(|c| c.life() != Life::Freed)?.size;
        // SAFETY: a live context body of `size` bytes allocated by fltemu.
        Some(unsafe { std::slice::from_raw_parts(address as *const u8, size) }.to_vec())
    }

    /// Filter Manager / ntoskrnl calls so far, per (operation, function).
    #[must_use]
    pub fn calls(&self) -> CallCounts {
        let mut counts = BTreeMap::new();
        for shard in self.inner.calls.each() {
            for ((operation, _), (function, n)) in shard.iter() {
                *counts.entry((*operation, (*function).to_owned())).or_insert(0) += *n;
            }
        }
        CallCounts(counts)
    }

    /// Pool bytes and blocks outstanding.
    #[must_use]
    pub fn pool_outstanding(&self) -> (usize, usize) {
        self.inner.pool_outstanding()
    }

    /// A new user-mode buffer of `length` bytes (own mapping, guard page after it).
    #[must_use]
    pub fn user_buffer(&self, length: usize) -> UserBuffer {
        UserBuffer::new(&self.inner.user, length, 0)
    }

    /// A user buffer whose address is `misalignment` bytes past a 16-byte boundary.
    #[must_use]
    pub fn user_buffer_misaligned(&self, length: usize, misalignment: usize) -> UserBuffer {
        UserBuffer::new(&self.inner.user, length, misalignment % 16)
    }

    /// A user buffer that `ZwQueryVirtualMemory` reports as a mapped view of a file
    /// (`MEM_MAPPED`), like a view of a file on a network share; reads and writes work as for
    /// [`user_buffer`](Self::user_buffer).
    #[must_use]
    pub fn user_buffer_mapped_file(&self, length: usize) -> UserBuffer {
        let buffer = self.user_buffer(length);
        buffer.mark_mapped_file();
        buffer
    }

    /// A user buffer holding `bytes`.
    #[must_use]
    pub fn user_buffer_from(&self, bytes: &[u8]) -> UserBuffer {
        let buffer = self.user_buffer(bytes.len());
        let written = buffer.write(bytes);
        debug_assert!(written, "a fresh buffer is writable");
        buffer
    }

    /// FilterConnectCommunicationPort from process `pid` with `context` (≤ 65,535 bytes).
    /// The inner result is the HRESULT on failure.
    ///
    /// # Errors
    /// [`EmuError::Stopped`] when the connect callback crashed.
    pub fn connect_port(&self, name: &str, context: &[u8], pid: u32) -> Result<Result<UserPort, i32>, EmuError> {
        port::connect(&self.inner, name, context, pid)
    }

    /// Makes every `every`-th later call of `function` fail with `status` (at most `times`
    /// times), the way its DDI documents failures: NULL for ExAllocatePool2,
    /// MmSecureVirtualMemory and FltAllocateGenericWorkItem; the status with out pointers NULLed
    /// for the NTSTATUS functions. Use it to drive a driver's error paths (e.g.
    /// `STATUS_INSUFFICIENT_RESOURCES` from FltAllocateContext) and check nothing leaks.
    /// `every` = 1 fails the next `times` calls. Returns false for a function fltemu cannot fail
    /// (see [`injectable_functions`](Self::injectable_functions)).
    pub fn inject_failure(&self, function: &'static str, status: i32, every: u64, times: u64) -> bool {
        if !state::INJECTABLE.contains(&function) || every == 0 {
            return false;
        }
        self.inner.injections.plans.lock().unwrap_or_else(PoisonError::into_inner).insert(function, state::Injection { status, every, remaining: times, seen: 0 });
        self.inner.injections.any.store(true, std::sync::atomic::Ordering::Release);
        true
    }

    /// Turns the race-window widening of [`Config::widen_race_windows`] on or off from now on
    /// (on also when the configuration asks for it).
    pub fn set_widen_race_windows(&self, on: bool) {
        knobs::set_widen_race_windows(on);
    }

    /// Runs later post-cleanup and post-close callbacks at `irql` (None: back to
    /// [`Config::post_cleanup_irql`] / [`Config::post_close_irql`]).
    pub fn set_post_operation_irql(&self, irql: Option<Irql>) {
        knobs::set_post_irql(irql);
    }

    /// Parks the next thread that enters the emulated call `function` (only "FltSendMessage"
    /// and "FltQueueDeferredIoWorkItem" have a hold point) until [`release_hold`](Self::release_hold), so a test can act in the
    /// window between the driver's last step before the call and the call's own work; or, with
    /// "SafePostCallback", the worker FltDoCompletionProcessingWhenSafe posted to, before it
    /// calls the driver's SafePostCallback.
    pub fn hold_at(&self, function: &'static str) {
        hold::arm(function);
    }

    /// Waits up to `timeout` for a thread to park at the armed hold point; whether one did.
    #[must_use]
    pub fn wait_held(&self, timeout: std::time::Duration) -> bool {
        hold::wait_held(timeout)
    }

    /// Lets the parked thread go on and disarms the hold point.
    pub fn release_hold(&self) {
        hold::release();
    }

    /// Runs the driver's process-creation notify routines for process `pid` created by
    /// `parent` (`create`) or exiting, as the process manager does (PASSIVE_LEVEL).
    ///
    /// # Errors
    /// [`EmuError::Stopped`] when a routine crashed.
    pub fn notify_process(&self, pid: u32, parent: u32, create: bool) -> Result<(), EmuError> {
        self.run(move |_| ps::notify_process(pid, parent, create))
    }

    /// Stops all failure injection.
    pub fn clear_injected_failures(&self) {
        self.inner.injections.any.store(false, std::sync::atomic::Ordering::Release);
        self.inner.injections.plans.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// The functions [`inject_failure`](Self::inject_failure) can fail.
    #[must_use]
    pub fn injectable_functions() -> &'static [&'static str] {
        state::INJECTABLE
    }

    /// The image base (to turn RVAs from [`Stop::Crash`] into addresses and back).
    #[must_use]
    pub fn image_base(&self) -> usize {
        self.inner.image.base
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let stopped = self.inner.stop.get().is_some();
        let busy = *self.inner.outstanding_work.lock().unwrap_or_else(PoisonError::into_inner) > 0;
        state::uninstall();
        if stopped || busy {
            // A parked or still-running driver thread may reference the image and state: keep
            // them (a crashed kernel's memory is not reclaimed either).
            std::mem::forget(Arc::clone(&self.inner));
        }
    }
}

/// Rewrites the PE checksum of `image` (for tests that patch bytes on purpose).
pub fn fix_checksum(image: &mut [u8]) {
    let Some(pe) = image.get(0x3C..0x40).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize) else { return };
    let at = pe + 4 + 20 + 64;
    if image.len() < at + 4 {
        return;
    }
    let sum = pe::pe_checksum(image, at);
    image[at..at + 4].copy_from_slice(&sum.to_le_bytes());
}

#[cfg(test)]
mod layout_tests {
    use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, FILE_OBJECT, IO_SECURITY_CONTEXT, OBJECT_ATTRIBUTES};
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
        FLT_CALLBACK_DATA, FLT_CONTEXT_REGISTRATION, FLT_FILE_NAME_INFORMATION, FLT_IO_PARAMETER_BLOCK, FLT_OPERATION_REGISTRATION, FLT_REGISTRATION,
        FLT_RELATED_OBJECTS,
    };

    /// Sizes of the x64 structures the driver and fltemu share (fltKernel.h / wdm.h layouts as
    /// computed from their field lists; FILE_OBJECT 0xD8 and DRIVER_OBJECT 0x150 are the known x64
    /// sizes).
    #[test]
    fn x64_structure_sizes() {
        assert_eq!(size_of::<FLT_REGISTRATION>(), 0x70);
        assert_eq!(size_of::<FLT_CONTEXT_REGISTRATION>(), 0x38);
        assert_eq!(size_of::<FLT_OPERATION_REGISTRATION>(), 0x20);
        assert_eq!(size_of::<FLT_RELATED_OBJECTS>(), 0x30);
        assert_eq!(size_of::<FLT_CALLBACK_DATA>(), 0x58);
        assert_eq!(std::mem::offset_of!(FLT_IO_PARAMETER_BLOCK, Parameters), 0x18);
        assert_eq!(size_of::<FLT_FILE_NAME_INFORMATION>(), 0x78);
        assert_eq!(size_of::<FILE_OBJECT>(), 0xD8);
        assert_eq!(size_of::<DRIVER_OBJECT>(), 0x150);
        assert_eq!(size_of::<IO_SECURITY_CONTEXT>(), 0x18);
        assert_eq!(size_of::<OBJECT_ATTRIBUTES>(), 0x30);
    }
}
