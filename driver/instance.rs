//! Instance callbacks: attach to a volume with an instance context, answer a detach request,
//! tear down.
//!
//! Setup follows the ctx sample's order (C2), with the name gathered before the context is
//! allocated so the payload is complete the moment it exists.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FLT_RELATED_OBJECTS, PFLT_INSTANCE};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_FLT_DO_NOT_ATTACH, STATUS_SUCCESS};
use windows_sys::Win32::Storage::InstallableFileSystems::{
    FLT_FILESYSTEM_TYPE, FLT_FSTYPE_MSFS, FLT_FSTYPE_NPFS, FLT_FSTYPE_RAW,
};

use crate::accounting;
use crate::callback::Related;
use crate::context::registry::{Link, Registered};
use crate::context::{Attached, InstanceContext};

/// `FILE_DEVICE_NETWORK_FILE_SYSTEM`: redirectors, which ctxguard does not watch.
const FILE_DEVICE_NETWORK_FILE_SYSTEM: u32 = 0x14;

/// What ctxguard keeps per attached volume.
pub struct InstanceData {
    /// The instance this context is attached to (an identity, never dereferenced).
    pub instance: PFLT_INSTANCE,
    /// The volume's device name, e.g. `\Device\HarddiskVolume2` (UTF-16).
    pub volume_name: Vec<u16>,
    /// `FLT_FILESYSTEM_TYPE` of the volume.
    pub file_system_type: FLT_FILESYSTEM_TYPE,
    /// Per-instance counters.
    pub counters: InstanceCounters,
    link: Link,
}

/// Per-volume operation counts, lock-free.
#[derive(Default)]
pub struct InstanceCounters {
    /// Successful creates seen in post-create.
    pub opens: AtomicU64,
    /// Creates the file system failed.
    pub failed_creates: AtomicU64,
    /// IRP_MJ_CLEANUP (handle closes) of handles ctxguard tracked.
    pub cleanups: AtomicU64,
    /// IRP_MJ_CLOSE requests seen on the instance.
    pub closes: AtomicU64,
}

impl InstanceCounters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Registered for InstanceData {
    fn link(&self) -> &Link {
        &self.link
    }
}

impl Drop for InstanceData {
    fn drop(&mut self) {
        accounting::INSTANCES.remove(self);
    }
}

/// InstanceSetupCallback (PASSIVE_LEVEL): attach to local file systems with an instance
/// context; decline RAW, named pipes, mailslots and network redirectors (E6: an error status
/// means "do not attach").
pub(crate) unsafe extern "system" fn setup(
    objects: *const FLT_RELATED_OBJECTS,
    _flags: u32,
    volume_device_type: u32,
    file_system_type: FLT_FILESYSTEM_TYPE,
) -> NTSTATUS {
    if matches!(file_system_type, FLT_FSTYPE_RAW | FLT_FSTYPE_NPFS | FLT_FSTYPE_MSFS)
        || volume_device_type == FILE_DEVICE_NETWORK_FILE_SYSTEM
    {
        return STATUS_FLT_DO_NOT_ATTACH;
    }
    // SAFETY: Filter Manager's related objects for this callback, used only during it.
    let related = unsafe { Related::from_callback(objects) };
    let name = match related.volume_name() {
        Ok(name) => name,
        Err(status) => {
            kprint!("not attaching: no volume name ({status:#010x})");
            return STATUS_FLT_DO_NOT_ATTACH;
        }
    };
    let payload = InstanceData {
        instance: related.instance(),
        volume_name: name,
        file_system_type,
        counters: InstanceCounters::default(),
        link: Link::new(),
    };
    let context = match InstanceContext::new(&related, payload) {
        Ok(context) => context,
        Err(status) => return status,
    };
    match context.attach(&related) {
        Ok(Attached::New(attached)) => {
            accounting::INSTANCES.insert(&attached);
            STATUS_SUCCESS
        }
        // Setup runs once per instance, so another context is not expected; it is attached
        // and complete, which is all the instance needs.
        Ok(Attached::Existing(_)) => STATUS_SUCCESS,
        Err(status) => status,
    }
    // The guard drops here: the link keeps the context alive (B5).
}

/// InstanceQueryTeardownCallback: a manual detach is always allowed.
pub(crate) unsafe extern "system" fn query_teardown(_objects: *const FLT_RELATED_OBJECTS, _flags: u32) -> NTSTATUS {
    STATUS_SUCCESS
}

/// InstanceTeardownStartCallback: nothing to stop; ctxguard queues no I/O of its own.
pub(crate) unsafe extern "system" fn teardown_start(_objects: *const FLT_RELATED_OBJECTS, _reason: u32) {}

/// InstanceTeardownCompleteCallback: Filter Manager deletes the instance's contexts after
/// this returns (B9); their cleanup callbacks free what they own.
pub(crate) unsafe extern "system" fn teardown_complete(_objects: *const FLT_RELATED_OBJECTS, _reason: u32) {}
