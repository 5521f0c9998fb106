//! Instance callbacks: attach to a volume with an instance context, answer a detach request,
//! tear down.
//!
//! Setup follows the ctx sample's order (C2), with the name gathered before the context is
//! allocated so the payload is complete the moment it exists.

use fltctx::{Attached, InstanceContext, InstanceObjects};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_RELATED_OBJECTS;
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_FLT_DO_NOT_ATTACH, STATUS_SUCCESS};
use windows_sys::Win32::Storage::InstallableFileSystems::{
    FLT_FILESYSTEM_TYPE, FLT_FSTYPE_MSFS, FLT_FSTYPE_NPFS, FLT_FSTYPE_RAW,
};

use crate::accounting;
use crate::callback::volume_name;
use crate::payloads::InstanceData;

/// `FILE_DEVICE_NETWORK_FILE_SYSTEM`: redirectors, which ctxguard does not watch.
const FILE_DEVICE_NETWORK_FILE_SYSTEM: u32 = 0x14;

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
    // SAFETY: Filter Manager's related objects for this callback (PASSIVE_LEVEL), used only
    // during it.
    let Some(objects) = (unsafe { InstanceObjects::from_callback(objects) }) else { return STATUS_FLT_DO_NOT_ATTACH };
    let name = match volume_name(&objects) {
        Ok(name) => name,
        Err(status) => {
            kprint!("not attaching: no volume name ({status:#010x})");
            return STATUS_FLT_DO_NOT_ATTACH;
        }
    };
    // Counters first: the payload's Drop gives the slot back, on every path from here.
    accounting::add_instance(objects.instance());
    let payload = InstanceData { instance: objects.instance(), volume_name: name, file_system_type };
    let context = match InstanceContext::new(&objects, payload) {
        Ok(context) => context,
        Err(status) => return status,
    };
    match context.attach(&objects) {
        // Setup runs once per instance, so another context is not expected; if there is one it
        // is attached and complete, which is all the instance needs.
        Ok(Attached::New(_) | Attached::Existing(_)) => STATUS_SUCCESS,
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
