//! The guards against a small model of Filter Manager's context calls, on the build host.
//!
//! The model defines, under their ntoskrnl/fltmgr names, the calls fltctx makes for
//! stream-handle contexts: reference counts, one link per FILE_OBJECT with KEEP/REPLACE/delete
//! semantics as "Setting Contexts" and "Deleting Contexts" document them (B3, B4, B7, B8), the
//! cleanup callback at count 0 (B10), and a push lock that refuses to be taken twice by one
//! thread (a deadlock on Windows, a panic here). The tests count payload drops and references:
//! each would fail if the guard's release of what `replace`, `delete` or `attach` hands back
//! were removed. (fltemu runs the same paths in real images: tests/fltemu_fixtures.rs.)
#![allow(missing_docs, clippy::missing_safety_doc, non_snake_case)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use fltctx::{Attached, Deleted, FileObjects, InstanceObjects, Link, Lookup, Registry, StreamHandleContext};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FLT_RELATED_OBJECTS, PFLT_CONTEXT};
use windows_sys::Win32::Foundation::{STATUS_FLT_CONTEXT_ALREADY_DEFINED, STATUS_INVALID_PARAMETER, STATUS_NOT_FOUND};

static DROPS: AtomicUsize = AtomicUsize::new(0);

struct Handle {
    id: u32,
    link: Link,
}

impl Drop for Handle {
    fn drop(&mut self) {
        DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

fltctx::contexts! {
    static CONTEXTS: accounting = ();
    Handle: StreamHandle, tag b"TsSh", in HANDLES => link;
}

static HANDLES: Registry<Handle> = Registry::new();

/// The model's state: reference counts by context address, the link per FILE_OBJECT.
#[derive(Default)]
struct Model {
    counts: HashMap<usize, usize>,
    links: HashMap<usize, usize>,
    lock_holder: Option<std::thread::ThreadId>,
}

static MODEL: Mutex<Option<Model>> = Mutex::new(None);
static IRQL: AtomicU8 = AtomicU8::new(0);
/// One test at a time: the model is global, like Filter Manager.
static SERIAL: Mutex<()> = Mutex::new(());

fn with_model<R>(f: impl FnOnce(&mut Model) -> R) -> R {
    f(MODEL.lock().unwrap().get_or_insert_with(Model::default))
}

/// The cleanup callback fltctx registered for `Handle` (the table's first entry).
fn cleanup(context: usize) {
    // SAFETY: the table is fltctx's, with FLT_CONTEXT_REGISTRATION layout (repr(C) arrays).
    let entry = unsafe { &*(&raw const CONTEXTS).cast::<windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_CONTEXT_REGISTRATION>() };
    let callback = entry.ContextCleanupCallback.expect("a cleanup callback");
    // SAFETY: the callback's contract: a context of its type at count 0, called once.
    unsafe { callback(context as PFLT_CONTEXT, 0x10) };
    // SAFETY: allocated by FltAllocateContext below with this layout.
    unsafe { std::alloc::dealloc(context as *mut u8, std::alloc::Layout::from_size_align(entry.Size, 8).unwrap()) };
}

fn release(context: usize) {
    let zero = with_model(|model| {
        let count = model.counts.get_mut(&context).expect("a live context");
        *count -= 1;
        if *count == 0 {
            model.counts.remove(&context);
            assert!(!model.links.values().any(|linked| *linked == context), "a linked context released to zero (B8/0xF5)");
            true
        } else {
            false
        }
    });
    if zero {
        cleanup(context);
    }
}

#[unsafe(no_mangle)]
extern "system" fn KeGetCurrentIrql() -> u8 {
    IRQL.load(Ordering::SeqCst)
}

#[unsafe(no_mangle)]
extern "system" fn PsGetCurrentThreadId() -> usize {
    thread_local!(static ID: usize = { static NEXT: AtomicUsize = AtomicUsize::new(4); NEXT.fetch_add(4, Ordering::SeqCst) });
    ID.with(|id| *id)
}

#[unsafe(no_mangle)]
extern "system" fn FltAllocateContext(_filter: isize, _type: u16, size: usize, _pool: i32, out: *mut PFLT_CONTEXT) -> i32 {
    // SAFETY: a non-zero size with pointer alignment.
    let block = unsafe { std::alloc::alloc(std::alloc::Layout::from_size_align(size, 8).unwrap()) };
    with_model(|model| model.counts.insert(block as usize, 1));
    // SAFETY: fltctx passes a valid out pointer.
    unsafe { out.write(block.cast()) };
    0
}

#[unsafe(no_mangle)]
extern "system" fn FltReferenceContext(context: PFLT_CONTEXT) {
    with_model(|model| *model.counts.get_mut(&(context as usize)).expect("a live context") += 1);
}

#[unsafe(no_mangle)]
extern "system" fn FltReleaseContext(context: PFLT_CONTEXT) {
    release(context as usize);
}

#[unsafe(no_mangle)]
extern "system" fn FltGetStreamHandleContext(_instance: isize, file_object: usize, out: *mut PFLT_CONTEXT) -> i32 {
    let found = with_model(|model| {
        let linked = model.links.get(&file_object).copied();
        if let Some(context) = linked {
            *model.counts.get_mut(&context).unwrap() += 1;
        }
        linked
    });
    // SAFETY: fltctx passes a valid out pointer.
    unsafe { out.write(found.unwrap_or(0) as PFLT_CONTEXT) };
    if found.is_some() { 0 } else { STATUS_NOT_FOUND }
}

#[unsafe(no_mangle)]
extern "system" fn FltSetStreamHandleContext(_instance: isize, file_object: usize, operation: i32, new: PFLT_CONTEXT, old: *mut PFLT_CONTEXT) -> i32 {
    let (status, handed_back, dropped) = with_model(|model| {
        let existing = model.links.get(&file_object).copied();
        match (operation, existing) {
            // KEEP_IF_EXISTS with one attached: ALREADY_DEFINED, the existing one +1 (B3).
            (1, Some(existing)) => {
                *model.counts.get_mut(&existing).unwrap() += 1;
                (STATUS_FLT_CONTEXT_ALREADY_DEFINED, existing, None)
            }
            // REPLACE_IF_EXISTS: the old link reference goes to the caller (B4).
            (0, Some(existing)) => {
                model.links.insert(file_object, new as usize);
                *model.counts.get_mut(&(new as usize)).unwrap() += 1;
                if old.is_null() { (0, 0, Some(existing)) } else { (0, existing, None) }
            }
            (_, None) => {
                model.links.insert(file_object, new as usize);
                *model.counts.get_mut(&(new as usize)).unwrap() += 1;
                (0, 0, None)
            }
            _ => (STATUS_INVALID_PARAMETER, 0, None),
        }
    });
    if !old.is_null() {
        // SAFETY: fltctx passes a valid out pointer.
        unsafe { old.write(handed_back as PFLT_CONTEXT) };
    }
    if let Some(context) = dropped {
        release(context);
    }
    status
}

#[unsafe(no_mangle)]
extern "system" fn FltDeleteStreamHandleContext(_instance: isize, file_object: usize, old: *mut PFLT_CONTEXT) -> i32 {
    let Some(context) = with_model(|model| model.links.remove(&file_object)) else { return STATUS_NOT_FOUND };
    // fltctx always asks for the old context: the link reference is the caller's now (B7).
    assert!(!old.is_null());
    // SAFETY: a valid out pointer.
    unsafe { old.write(context as PFLT_CONTEXT) };
    0
}

#[unsafe(no_mangle)]
extern "system" fn FltDeleteContext(context: PFLT_CONTEXT) {
    let unlinked = with_model(|model| {
        let file = model.links.iter().find(|(_, linked)| **linked == context as usize).map(|(file, _)| *file);
        file.map(|file| model.links.remove(&file))
    });
    // The link reference is dropped; the caller's stays (B8).
    if unlinked.is_some() {
        release(context as usize);
    }
}

#[unsafe(no_mangle)]
extern "system" fn FltInitializePushLock(_lock: *mut usize) {}
#[unsafe(no_mangle)]
extern "system" fn FltDeletePushLock(_lock: *mut usize) {}

#[unsafe(no_mangle)]
extern "system" fn FltAcquirePushLockExclusive(_lock: *mut usize) {
    let me = std::thread::current().id();
    with_model(|model| {
        assert_ne!(model.lock_holder, Some(me), "the push lock taken twice by one thread: a deadlock on Windows");
        model.lock_holder = Some(me);
    });
}

#[unsafe(no_mangle)]
extern "system" fn FltReleasePushLock(_lock: *mut usize) {
    with_model(|model| model.lock_holder = None);
}

#[unsafe(no_mangle)]
extern "system" fn FltUnregisterFilter(_filter: isize) {}

/// FLT_RELATED_OBJECTS of an I/O callback on FILE_OBJECT `file_object`.
fn related(file_object: usize) -> FLT_RELATED_OBJECTS {
    // SAFETY: plain data; all-zero is valid.
    let mut objects: FLT_RELATED_OBJECTS = unsafe { std::mem::zeroed() };
    objects.Size = u16::try_from(size_of::<FLT_RELATED_OBJECTS>()).unwrap();
    objects.Filter = 0x100;
    objects.Instance = 0x200;
    objects.Volume = 0x300;
    objects.FileObject = file_object as *const _;
    objects
}

fn live() -> usize {
    with_model(|model| model.counts.len())
}

fn handle(id: u32) -> Handle {
    Handle { id, link: Link::new() }
}

#[test]
fn replace_hands_back_the_old_context_and_dropping_it_frees_it() {
    let _serial = SERIAL.lock().unwrap();
    let objects = related(0x1000);
    // SAFETY: the model's objects stand for a running callback's.
    let file = unsafe { FileObjects::from_callback(&raw const objects) }.unwrap();
    let first = StreamHandleContext::new(&file, handle(1)).unwrap().attach(&file).unwrap().into_inner();
    drop(first);
    let drops = DROPS.load(Ordering::SeqCst);
    let replaced = StreamHandleContext::new(&file, handle(2)).unwrap().replace(&file).unwrap();
    let old = replaced.old.expect("REPLACE_IF_EXISTS with an attached context hands it back");
    assert_eq!(old.id, 1);
    assert_eq!(DROPS.load(Ordering::SeqCst), drops, "the old payload lives while its guard does");
    drop(old);
    assert_eq!(DROPS.load(Ordering::SeqCst), drops + 1, "dropping the old guard released the last reference");
    assert_eq!(replaced.new.id, 2);
    drop(replaced.new);
    match StreamHandleContext::<Handle>::delete(&file) {
        Deleted::Found(deleted) => {
            assert_eq!(deleted.id, 2);
            drop(deleted);
        }
        _ => panic!("the replacement was attached"),
    }
    assert_eq!(DROPS.load(Ordering::SeqCst), drops + 2, "dropping the deleted guard released the link reference");
    assert!(matches!(StreamHandleContext::<Handle>::delete(&file), Deleted::NotFound));
    assert_eq!(live(), 0);
}

#[test]
fn attach_keeps_the_first_and_releases_the_loser() {
    let _serial = SERIAL.lock().unwrap();
    let objects = related(0x2000);
    // SAFETY: as above.
    let file = unsafe { FileObjects::from_callback(&raw const objects) }.unwrap();
    let winner = StreamHandleContext::new(&file, handle(1)).unwrap().attach(&file).unwrap();
    assert!(matches!(winner, Attached::New(_)));
    let drops = DROPS.load(Ordering::SeqCst);
    let loser = StreamHandleContext::new(&file, handle(2)).unwrap().attach(&file).unwrap();
    let Attached::Existing(existing) = loser else { panic!("KEEP_IF_EXISTS found the first") };
    assert_eq!(existing.id, 1);
    assert_eq!(DROPS.load(Ordering::SeqCst), drops + 1, "the losing payload was dropped at once (B5)");
    let clone = existing.clone();
    drop((winner, existing, clone));
    let Lookup::Found(found) = StreamHandleContext::<Handle>::get(&file) else { panic!("still attached") };
    found.unlink();
    assert_eq!(DROPS.load(Ordering::SeqCst), drops + 2, "unlink dropped the link and the guard's reference (B8)");
    assert_eq!(live(), 0);
}

#[test]
fn a_visitor_may_drop_the_last_reference_to_what_it_visits() {
    let _serial = SERIAL.lock().unwrap();
    let objects = related(0x3000);
    // SAFETY: as above.
    let file = unsafe { FileObjects::from_callback(&raw const objects) }.unwrap();
    let attached = StreamHandleContext::new(&file, handle(7)).unwrap().attach(&file).unwrap().into_inner();
    attached.list();
    assert_eq!(HANDLES.len(), 1);
    let Deleted::Found(unlinked) = StreamHandleContext::<Handle>::delete(&file) else { panic!("attached") };
    drop(unlinked);
    let drops = DROPS.load(Ordering::SeqCst);
    let mut last = Some(attached);
    let mut seen = Vec::new();
    HANDLES.visit(&mut |member| {
        drop(last.take());
        // The payload is still alive: the release waits for the end of the visit.
        seen.push(member.id);
        std::ops::ControlFlow::Continue(())
    });
    assert_eq!(seen, [7]);
    assert_eq!(DROPS.load(Ordering::SeqCst), drops + 1, "released after the visit, and the cleanup left the registry");
    assert_eq!(HANDLES.len(), 0);
    assert_eq!(live(), 0);
}

#[test]
fn objects_above_apc_level_or_without_a_file_object_are_refused() {
    let _serial = SERIAL.lock().unwrap();
    let objects = related(0x4000);
    IRQL.store(2, Ordering::SeqCst);
    // SAFETY: as above.
    assert!(unsafe { FileObjects::from_callback(&raw const objects) }.is_none(), "DISPATCH_LEVEL: no context calls (A8)");
    // SAFETY: as above.
    assert!(unsafe { InstanceObjects::from_callback(&raw const objects) }.is_none());
    IRQL.store(0, Ordering::SeqCst);
    let instance_callback = related(0);
    // SAFETY: as above.
    assert!(unsafe { FileObjects::from_callback(&raw const instance_callback) }.is_none(), "no FileObject, no file-object contexts");
    // SAFETY: as above.
    assert!(unsafe { InstanceObjects::from_callback(&raw const instance_callback) }.is_some());
}
