//! Context types and their registration with Filter Manager.
//!
//! (The guard types arrive with the contexts work; this step declares the types.)

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CONTEXT_END, FLT_CONTEXT_REGISTRATION, FLT_INSTANCE_CONTEXT, FLT_STREAM_CONTEXT, FLT_STREAMHANDLE_CONTEXT, PFLT_CONTEXT,
};

/// Per-volume data attached to each instance.
pub struct InstanceData {
    /// Placeholder until the contexts work fills the instance context in.
    pub volume_file_system: u32,
}

/// Per-stream data attached on the first open of a stream.
pub struct StreamData {
    /// Open handles on the stream.
    pub open_handles: u32,
}

/// Per-open data attached to each successful open.
pub struct StreamHandleData {
    /// The opener's process id.
    pub requestor_pid: u32,
}

const fn registration<T>(context_type: u32, tag: &[u8; 4]) -> FLT_CONTEXT_REGISTRATION {
    FLT_CONTEXT_REGISTRATION {
        #[allow(clippy::cast_possible_truncation)]
        ContextType: context_type as u16,
        Flags: 0,
        ContextCleanupCallback: Some(cleanup),
        Size: size_of::<T>(),
        PoolTag: u32::from_le_bytes(*tag),
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: core::ptr::null_mut(),
    }
}

/// The context registration array, ended by `FLT_CONTEXT_END`.
pub const CONTEXT_REGISTRATION: [FLT_CONTEXT_REGISTRATION; 4] = [
    registration::<InstanceData>(FLT_INSTANCE_CONTEXT, b"CxIn"),
    registration::<StreamData>(FLT_STREAM_CONTEXT, b"CxSt"),
    registration::<StreamHandleData>(FLT_STREAMHANDLE_CONTEXT, b"CxSh"),
    FLT_CONTEXT_REGISTRATION {
        #[allow(clippy::cast_possible_truncation)]
        ContextType: FLT_CONTEXT_END as u16,
        Flags: 0,
        ContextCleanupCallback: None,
        Size: 0,
        PoolTag: 0,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: core::ptr::null_mut(),
    },
];

unsafe extern "system" fn cleanup(_context: PFLT_CONTEXT, _context_type: u16) {}
