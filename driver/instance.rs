//! Instance callbacks: attach to a volume, answer a detach request, tear down.

use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_RELATED_OBJECTS;
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS};
use windows_sys::Win32::Storage::InstallableFileSystems::FLT_FILESYSTEM_TYPE;

/// InstanceSetupCallback (PASSIVE_LEVEL): attach to every volume for now.
pub unsafe extern "system" fn setup(
    _objects: *const FLT_RELATED_OBJECTS,
    _flags: u32,
    _volume_device_type: u32,
    _file_system_type: FLT_FILESYSTEM_TYPE,
) -> NTSTATUS {
    STATUS_SUCCESS
}

/// InstanceQueryTeardownCallback: a manual detach is always allowed.
pub unsafe extern "system" fn query_teardown(_objects: *const FLT_RELATED_OBJECTS, _flags: u32) -> NTSTATUS {
    STATUS_SUCCESS
}

/// InstanceTeardownStartCallback.
pub unsafe extern "system" fn teardown_start(_objects: *const FLT_RELATED_OBJECTS, _reason: u32) {}

/// InstanceTeardownCompleteCallback.
pub unsafe extern "system" fn teardown_complete(_objects: *const FLT_RELATED_OBJECTS, _reason: u32) {}
