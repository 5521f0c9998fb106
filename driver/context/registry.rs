//! Registries of live context payloads, so the port can list streams and handles.
//!
//! Filter Manager has no way to enumerate contexts, so each payload that should be listed
//! carries a [`Link`] and joins a [`Registry`] once attached; its `Drop` (run by the cleanup
//! callback) leaves it. A registry is an intrusive doubly-linked list under a Filter Manager
//! push lock: inserts and removals take it exclusively, visits shared. Visitors only copy: no
//! context is ever released while the lock is held, because a release can run a cleanup
//! callback that takes the lock again.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr;
use core::sync::atomic::Ordering::Relaxed;
use core::sync::atomic::{AtomicPtr, AtomicUsize};

use super::{Context, Kind, Payload};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltAcquirePushLockExclusive, FltAcquirePushLockShared, FltDeletePushLock, FltInitializePushLock, FltReleasePushLock,
};

/// A Filter Manager push lock (`EX_PUSH_LOCK`), usable at IRQL <= APC_LEVEL.
pub struct PushLock(UnsafeCell<usize>);

// SAFETY: the lock word is only touched through Filter Manager's interlocked push-lock calls.
unsafe impl Sync for PushLock {}

impl PushLock {
    /// A lock word; [`PushLock::initialize`] must run before first use.
    #[must_use]
    pub const fn new() -> Self {
        Self(UnsafeCell::new(0))
    }

    /// `FltInitializePushLock`: once, in DriverEntry, before any callback can run.
    pub fn initialize(&self) {
        // SAFETY: the lock word lives in a static; nothing uses the lock before this call.
        unsafe { FltInitializePushLock(self.0.get()) };
    }

    /// `FltDeletePushLock`: once, at unload, after every user is gone.
    pub fn delete(&self) {
        // SAFETY: called after FltUnregisterFilter returned, when no callback can hold it.
        unsafe { FltDeletePushLock(self.0.get()) };
    }

    fn exclusive(&self) -> Held<'_> {
        // SAFETY: the lock was initialised in DriverEntry; callers run at <= APC_LEVEL and
        // release it through Held's Drop. FltAcquirePushLock* disables normal kernel APCs.
        unsafe { FltAcquirePushLockExclusive(self.0.get()) };
        Held(self)
    }

    fn shared(&self) -> Held<'_> {
        // SAFETY: as for `exclusive`, in shared mode.
        unsafe { FltAcquirePushLockShared(self.0.get()) };
        Held(self)
    }
}

impl Default for PushLock {
    fn default() -> Self {
        Self::new()
    }
}

/// A held push lock, released on drop.
struct Held<'a>(&'a PushLock);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // SAFETY: this guard acquired the lock and releases it once.
        unsafe { FltReleasePushLock(self.0.0.get()) };
    }
}

/// The list links a registered payload embeds, plus a pointer back to the payload.
///
/// The fields are atomics only so that they need no `unsafe` to touch; the registry's lock
/// orders every access, so Relaxed suffices.
pub struct Link {
    previous: AtomicPtr<Link>,
    next: AtomicPtr<Link>,
    owner: AtomicPtr<()>,
}

impl Link {
    /// An unlinked link.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            previous: AtomicPtr::new(ptr::null_mut()),
            next: AtomicPtr::new(ptr::null_mut()),
            owner: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

/// A payload type that can join a registry.
pub trait Registered: Sync {
    /// The link embedded in the payload.
    fn link(&self) -> &Link;
}

/// A list of live payloads of one type.
pub struct Registry<T: Registered> {
    lock: PushLock,
    head: AtomicPtr<Link>,
    count: AtomicUsize,
    member_type: PhantomData<*const T>,
}

// SAFETY: the list is only changed with `lock` held exclusively and read with it shared; the
// members are Sync payloads.
unsafe impl<T: Registered> Sync for Registry<T> {}

/// Follows a link pointer of the list.
///
/// # Safety
/// `link` is non-NULL and belongs to a live member of a registry whose lock the caller holds:
/// members leave (under the exclusive lock) before their memory is freed.
unsafe fn follow<'a>(link: *mut Link) -> &'a Link {
    // SAFETY: guaranteed by the caller.
    unsafe { &*link }
}

impl<T: Registered> Registry<T> {
    /// An empty registry; [`Registry::initialize`] must run in DriverEntry.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            lock: PushLock::new(),
            head: AtomicPtr::new(ptr::null_mut()),
            count: AtomicUsize::new(0),
            member_type: PhantomData,
        }
    }

    /// Initialises the lock (DriverEntry).
    pub fn initialize(&self) {
        self.lock.initialize();
    }

    /// Deletes the lock (unload, after FltUnregisterFilter: every payload is gone by then).
    pub fn delete(&self) {
        self.lock.delete();
    }

    /// Adds the payload of an attached context. Taking the context guard (not a bare `&T`)
    /// means the member lives in Filter Manager's context memory, which does not move; it
    /// leaves with [`Registry::remove`] in its `Drop`, before that memory is freed. A member
    /// already in the registry is left as it is.
    pub fn insert<K: Kind>(&self, context: &Context<K, T>)
    where
        T: Payload<Kind = K>,
    {
        let member: &T = context;
        let link = member.link();
        let link_pointer = ptr::from_ref(link).cast_mut();
        let _held = self.lock.exclusive();
        if !link.owner.load(Relaxed).is_null() {
            return;
        }
        let head = self.head.load(Relaxed);
        link.owner.store(ptr::from_ref(member).cast_mut().cast(), Relaxed);
        link.previous.store(ptr::null_mut(), Relaxed);
        link.next.store(head, Relaxed);
        if !head.is_null() {
            // SAFETY: `head` is a live member's link and the lock is held.
            unsafe { follow(head) }.previous.store(link_pointer, Relaxed);
        }
        self.head.store(link_pointer, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Removes `member` if it is in the registry (a non-NULL owner says it is).
    pub fn remove(&self, member: &T) {
        let link = member.link();
        let _held = self.lock.exclusive();
        if link.owner.load(Relaxed).is_null() {
            return;
        }
        let previous = link.previous.load(Relaxed);
        let next = link.next.load(Relaxed);
        if previous.is_null() {
            self.head.store(next, Relaxed);
        } else {
            // SAFETY: `previous` is a live member's link and the lock is held.
            unsafe { follow(previous) }.next.store(next, Relaxed);
        }
        if !next.is_null() {
            // SAFETY: `next` is a live member's link and the lock is held.
            unsafe { follow(next) }.previous.store(previous, Relaxed);
        }
        link.owner.store(ptr::null_mut(), Relaxed);
        self.count.fetch_sub(1, Relaxed);
    }

    /// Members now.
    pub fn len(&self) -> usize {
        let _held = self.lock.shared();
        self.count.load(Relaxed)
    }

    /// True when no payload is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `visit` on members, newest first, until it returns `Break`. Holds the lock
    /// shared: `visit` must only read and copy, and never release a context.
    pub fn visit(&self, visit: &mut dyn FnMut(&T) -> core::ops::ControlFlow<()>) {
        let _held = self.lock.shared();
        let mut cursor = self.head.load(Relaxed);
        while !cursor.is_null() {
            // SAFETY: `cursor` is a live member's link and the lock is held.
            let link = unsafe { follow(cursor) };
            let owner = link.owner.load(Relaxed).cast::<T>().cast_const();
            // SAFETY: a registered link's owner is the live T that embeds it (set by insert).
            let member = unsafe { &*owner };
            if visit(member).is_break() {
                break;
            }
            cursor = link.next.load(Relaxed);
        }
    }
}

impl<T: Registered> Default for Registry<T> {
    fn default() -> Self {
        Self::new()
    }
}
