//! I/O callbacks: create, cleanup and close.

use core::ffi::c_void;

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_FINISHED_PROCESSING, FLT_PREOP_CALLBACK_STATUS,
    FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_RELATED_OBJECTS,
};

/// The signature of a pre-operation callback.
pub type PreCallback = unsafe extern "system" fn(*mut FLT_CALLBACK_DATA, *const FLT_RELATED_OBJECTS, *mut *mut c_void) -> FLT_PREOP_CALLBACK_STATUS;
/// The signature of a post-operation callback.
pub type PostCallback =
    unsafe extern "system" fn(*mut FLT_CALLBACK_DATA, *const FLT_RELATED_OBJECTS, *const c_void, u32) -> FLT_POSTOP_CALLBACK_STATUS;

/// Pre-create: nothing to do before the file system opens the file.
pub unsafe extern "system" fn pre_create(_data: *mut FLT_CALLBACK_DATA, _objects: *const FLT_RELATED_OBJECTS, _completion: *mut *mut c_void) -> FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_WITH_CALLBACK
}

/// Post-create: pass-through.
pub unsafe extern "system" fn post_create(_data: *mut FLT_CALLBACK_DATA, _objects: *const FLT_RELATED_OBJECTS, _completion: *const c_void, _flags: u32) -> FLT_POSTOP_CALLBACK_STATUS {
    FLT_POSTOP_FINISHED_PROCESSING
}

/// Pre-cleanup: pass-through.
pub unsafe extern "system" fn pre_cleanup(_data: *mut FLT_CALLBACK_DATA, _objects: *const FLT_RELATED_OBJECTS, _completion: *mut *mut c_void) -> FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_WITH_CALLBACK
}

/// Post-cleanup: pass-through.
pub unsafe extern "system" fn post_cleanup(_data: *mut FLT_CALLBACK_DATA, _objects: *const FLT_RELATED_OBJECTS, _completion: *const c_void, _flags: u32) -> FLT_POSTOP_CALLBACK_STATUS {
    FLT_POSTOP_FINISHED_PROCESSING
}

/// Pre-close: pass-through.
pub unsafe extern "system" fn pre_close(_data: *mut FLT_CALLBACK_DATA, _objects: *const FLT_RELATED_OBJECTS, _completion: *mut *mut c_void) -> FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_WITH_CALLBACK
}

/// Post-close: pass-through.
pub unsafe extern "system" fn post_close(_data: *mut FLT_CALLBACK_DATA, _objects: *const FLT_RELATED_OBJECTS, _completion: *const c_void, _flags: u32) -> FLT_POSTOP_CALLBACK_STATUS {
    FLT_POSTOP_FINISHED_PROCESSING
}
