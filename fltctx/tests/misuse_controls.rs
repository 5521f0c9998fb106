//! The compile-fail doctests' positive controls: each is the corresponding doctest with the
//! misuse taken out, and must compile, so a doctest fails for its stated reason only.
#![allow(dead_code, missing_docs)]

use fltctx::{Context, FileObjects, InstanceObjects, Instance, Lookup, Operation, Stream, StreamHandle};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_SUCCESS_NO_CALLBACK, FLT_RELATED_OBJECTS, PFLT_CONTEXT,
};

struct Data(u32);
struct HandleData(u32);
struct Counter(core::sync::atomic::AtomicU32);
struct A(u32);
struct InstanceData(u64);

fltctx::contexts! {
    static CONTEXTS: accounting = ();
    Data: Stream;
    HandleData: StreamHandle;
    A: Volume;
    Counter: File, tag b"TsFi";
    InstanceData: Instance;
}

unsafe extern "system" fn pre(_: *mut FLT_CALLBACK_DATA, _: *const FLT_RELATED_OBJECTS, _: *mut *mut core::ffi::c_void) -> FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_NO_CALLBACK
}

fltctx::operations! { static OPERATIONS = [Operation::new(0x12).pre(pre), Operation::new(0x02).pre(pre)]; }

static REGISTRATION: fltctx::Registration = fltctx::Registration::new(&CONTEXTS, &OPERATIONS);

fn before_release(guard: Context<Stream, Data>) -> u32 {
    let value = guard.0;
    drop(guard);
    value
}

fn set_as_stream_handle(objects: &FileObjects<'_>, handle: Context<StreamHandle, HandleData>) {
    let _ = handle.attach(objects);
}

fn wrap(raw: PFLT_CONTEXT) -> Context<StreamHandle, HandleData> {
    // SAFETY: a compile-only control; never called.
    unsafe { Context::adopt(raw, fltctx::Source::Get) }
}

fn setup(objects: &InstanceObjects<'_>) {
    let _ = Context::<Instance, InstanceData>::get(objects);
}

fn stream_from_file_objects(objects: &FileObjects<'_>) -> bool {
    matches!(Context::<Stream, Data>::get(objects), Lookup::Found(_))
}

#[test]
fn the_controls_compile_and_the_tables_end_with_their_markers() {
    assert!(!REGISTRATION.as_ptr().is_null());
}

/// The host has no Filter Manager: the symbols the registration tables reach (the cleanup
/// callbacks) are defined here so the control links; nothing calls them.
macro_rules! never_called {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        extern "system" fn $name() {
            unreachable!(concat!(stringify!($name), " is never called on the host"));
        }
    )*};
}
never_called!(FltAcquirePushLockExclusive, FltReleasePushLock, PsGetCurrentThreadId);
