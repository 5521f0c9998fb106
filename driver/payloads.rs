//! ctxguard's context payloads, their registration and the registries the port lists.
//!
//! The guards, the registration entries and the cleanup callbacks come from fltctx; this module
//! only says what ctxguard keeps. Each payload's `Drop` frees what it owns; leaving its registry
//! is fltctx's generic cleanup, before the drop.

use alloc::vec::Vec;
use core::ops::ControlFlow;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use fltctx::{Link, Registry, StreamContext};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_INSTANCE;
use windows_sys::Win32::Storage::InstallableFileSystems::FLT_FILESYSTEM_TYPE;

use crate::accounting::{self, ContextAccounting};
use crate::kernel::paged_name::PagedName;

/// What ctxguard keeps per attached volume.
pub struct InstanceData {
    /// The instance this context is attached to (an identity, never dereferenced).
    pub instance: PFLT_INSTANCE,
    /// The volume's device name, e.g. `\Device\HarddiskVolume2` (UTF-16).
    pub volume_name: Vec<u16>,
    /// `FLT_FILESYSTEM_TYPE` of the volume.
    pub file_system_type: FLT_FILESYSTEM_TYPE,
}

impl Drop for InstanceData {
    fn drop(&mut self) {
        accounting::remove_instance(self.instance);
    }
}

/// What ctxguard keeps per stream (one per instance and stream, B9/A10).
pub struct StreamData {
    /// The normalized name, e.g. `\Device\HarddiskVolume2\dir\a.txt:ads` (UTF-16, paged pool).
    pub name: PagedName,
    /// Handles open on the stream (successful creates whose cleanup has not run).
    pub open_handles: AtomicU32,
    /// The process that opened the stream first.
    pub first_opener_pid: u32,
    /// When it was first opened (100 ns since 1601, UTC).
    pub first_open_time: i64,
    /// The link of [`STREAMS`].
    pub link: Link,
}

/// What ctxguard keeps per open (one per FILE_OBJECT).
pub struct StreamHandleData {
    /// The stream this handle is open on; the reference goes when the FILE_OBJECT does.
    pub stream: StreamContext<StreamData>,
    /// The requestor's process id.
    pub requestor_pid: u32,
    /// `DesiredAccess` of the create.
    pub desired_access: u32,
    /// When the create completed (100 ns since 1601, UTC).
    pub create_time: i64,
    /// `ShareAccess` of the create.
    pub share_access: u16,
    /// Set by IRP_MJ_CLEANUP: the handle is closed, the FILE_OBJECT may live on.
    pub cleaned_up: AtomicBool,
    /// The link of [`HANDLES`].
    pub link: Link,
}

fltctx::contexts! {
    /// The context registration array of FLT_REGISTRATION (FLT_CONTEXT_END appended by fltctx).
    pub static CONTEXTS: accounting = ContextAccounting;
    InstanceData: Instance, tag b"CxIn";
    StreamData: Stream, tag b"CxSt", in STREAMS => link;
    StreamHandleData: StreamHandle, tag b"CxSh", in HANDLES => link;
}

/// Attached stream contexts, for ListStreams.
pub static STREAMS: Registry<StreamData> = Registry::new();
/// Attached stream-handle contexts, for QueryHandles.
pub static HANDLES: Registry<StreamHandleData> = Registry::new();

/// Initialises the registries' locks (DriverEntry, before registering the filter).
pub fn initialize() {
    STREAMS.initialize();
    HANDLES.initialize();
}

/// Deletes the registries' locks (unload, after FltUnregisterFilter freed every context).
pub fn delete() {
    STREAMS.delete();
    HANDLES.delete();
}

impl StreamHandleData {
    /// The handle stops counting as open: at IRP_MJ_CLEANUP, or when its context goes first
    /// (instance teardown, unload). True for the one caller that made the change.
    pub fn stop_counting(&self) -> bool {
        if self.cleaned_up.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.stream.open_handles.fetch_sub(1, Ordering::AcqRel);
        accounting::handle_closed();
        true
    }

    /// The handle starts counting as open, once its context is attached.
    pub fn start_counting(&self) {
        self.stream.open_handles.fetch_add(1, Ordering::AcqRel);
        accounting::handle_opened();
        self.cleaned_up.store(false, Ordering::Release);
    }
}

impl Drop for StreamHandleData {
    fn drop(&mut self) {
        self.stop_counting();
    }
}

/// One stream as the port lists it.
pub struct StreamView<'a> {
    /// The normalized name (UTF-16), e.g. `\Device\HarddiskVolume2\dir\a.txt:ads`.
    pub name: &'a [u16],
    /// Handles open on the stream now.
    pub open_handles: u32,
    /// The process that opened the stream first.
    pub first_opener_pid: u32,
    /// When it was first opened (100 ns since 1601, UTC).
    pub first_open_time: i64,
}

/// One open handle as the port lists it.
pub struct HandleView<'a> {
    /// The normalized name of the stream the handle is open on.
    pub stream_name: &'a [u16],
    /// The process that opened it.
    pub pid: u32,
    /// The access it asked for (`ACCESS_MASK`).
    pub desired_access: u32,
    /// The sharing it granted (`FILE_SHARE_*`).
    pub share_access: u32,
    /// When it was opened (100 ns since 1601, UTC).
    pub create_time: i64,
}

/// Calls `visit` for each live stream, skipping the first `skip`, until it returns
/// `ControlFlow::Break` (PASSIVE_LEVEL, under the registry's lock).
pub fn visit_streams(skip: usize, visit: &mut dyn FnMut(&StreamView<'_>) -> ControlFlow<()>) {
    let mut index = 0_usize;
    STREAMS.visit(&mut |stream| {
        index += 1;
        if index <= skip {
            return ControlFlow::Continue(());
        }
        visit(&StreamView {
            name: &stream.name,
            open_handles: stream.open_handles.load(Ordering::Relaxed),
            first_opener_pid: stream.first_opener_pid,
            first_open_time: stream.first_open_time,
        })
    });
}

/// Calls `visit` for each open handle (cleanup not yet seen) until it returns
/// `ControlFlow::Break` (PASSIVE_LEVEL, under the registry's lock).
pub fn visit_handles(visit: &mut dyn FnMut(&HandleView<'_>) -> ControlFlow<()>) {
    HANDLES.visit(&mut |handle| {
        if handle.cleaned_up.load(Ordering::Acquire) {
            return ControlFlow::Continue(());
        }
        visit(&HandleView {
            stream_name: &handle.stream.name,
            pid: handle.requestor_pid,
            desired_access: handle.desired_access,
            share_access: u32::from(handle.share_access),
            create_time: handle.create_time,
        })
    });
}
