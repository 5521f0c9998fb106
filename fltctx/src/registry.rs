//! Registries: lists of live payloads of one type, so a driver can enumerate its contexts
//! (Filter Manager has no call that does).
//!
//! A payload type joins at most one registry, named in [`contexts!`](crate::contexts) together
//! with the [`Link`] field it embeds; nothing else can add it to another. A context joins with
//! [`Context::list`](crate::Context::list) once attached, and leaves in the generic cleanup
//! callback *before* its payload is dropped, so no payload `Drop` has to remember it and no
//! visitor can see a payload that is being dropped.
//!
//! The list is intrusive, under a Filter Manager push lock (IRQL <= APC_LEVEL), held
//! exclusively by inserts, removals and visits. The visitor is an ordinary closure and may
//! capture or drop guards: every guard released on the visiting thread during the visit is
//! released after the lock is given up (up to 32 per visit; see `context::visits`), so a last
//! release cannot run a cleanup that waits for the lock its own thread holds, and the payload
//! the visitor borrows cannot be freed under it. A nested visit or an insert from inside a
//! visit finds the lock held by its own thread and goes ahead.

use core::cell::UnsafeCell;
use core::ops::ControlFlow;
use core::ptr;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use core::sync::atomic::{AtomicPtr, AtomicUsize};

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltAcquirePushLockExclusive, FltDeletePushLock, FltInitializePushLock, FltReleasePushLock,
};

use crate::context::{Context, Payload};
use crate::kind::Kind;

use crate::context::visits::{self, current_thread};

/// The list links a listed payload embeds, plus a pointer back to the payload.
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
        Self { previous: AtomicPtr::new(ptr::null_mut()), next: AtomicPtr::new(ptr::null_mut()), owner: AtomicPtr::new(ptr::null_mut()) }
    }
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

/// A list of the live payloads of one type.
pub struct Registry<T: Payload> {
    lock: UnsafeCell<usize>,
    /// The thread holding the lock, 0 when none; written only by the holder.
    holder: AtomicUsize,
    head: AtomicPtr<Link>,
    count: AtomicUsize,
    member_type: core::marker::PhantomData<*const T>,
}

// SAFETY: the list is only read or changed by the thread holding `lock` (FltAcquirePushLock*
// orders the accesses); the members are Sync payloads.
unsafe impl<T: Payload> Sync for Registry<T> {}

/// Follows a link pointer of the list.
///
/// # Safety
/// `link` is non-NULL and belongs to a live member of a registry whose lock the caller holds:
/// members leave (under the lock) before their memory is freed.
unsafe fn follow<'a>(link: *mut Link) -> &'a Link {
    // SAFETY: guaranteed by the caller.
    unsafe { &*link }
}

/// The lock, held by this thread: released on drop unless this thread already held it.
struct Held<'a, T: Payload> {
    registry: &'a Registry<T>,
    acquired: bool,
}

impl<T: Payload> Drop for Held<'_, T> {
    fn drop(&mut self) {
        if self.acquired {
            self.registry.holder.store(0, Release);
            // SAFETY: this guard acquired the lock and releases it once.
            unsafe { FltReleasePushLock(self.registry.lock.get()) };
        }
    }
}

impl<T: Payload> Registry<T> {
    /// An empty registry; [`Registry::initialize`] must run in DriverEntry.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            lock: UnsafeCell::new(0),
            holder: AtomicUsize::new(0),
            head: AtomicPtr::new(ptr::null_mut()),
            count: AtomicUsize::new(0),
            member_type: core::marker::PhantomData,
        }
    }

    /// `FltInitializePushLock`: once, in DriverEntry, before FltRegisterFilter.
    pub fn initialize(&self) {
        // SAFETY: the lock word lives in the registry (a static); nothing uses it before this.
        unsafe { FltInitializePushLock(self.lock.get()) };
    }

    /// `FltDeletePushLock`: once, after FltUnregisterFilter returned (every payload is gone).
    pub fn delete(&self) {
        // SAFETY: no callback can hold the lock once the filter is unregistered.
        unsafe { FltDeletePushLock(self.lock.get()) };
    }

    /// Takes the lock exclusively, or notes that this thread already holds it (an insert or a
    /// nested visit from inside a visitor).
    fn hold(&self) -> Held<'_, T> {
        let me = current_thread();
        if self.holder.load(Acquire) == me {
            return Held { registry: self, acquired: false };
        }
        self.acquire(me)
    }

    /// Takes the lock exclusively. A removal always comes here: on a visiting thread it would
    /// wait for itself rather than free a payload its visitor borrows, but no removal runs there,
    /// because the visit defers that thread's releases.
    fn acquire(&self, me: usize) -> Held<'_, T> {
        // SAFETY: initialised in DriverEntry; callers run at <= APC_LEVEL (every guard was
        // made there) and release it through Held's Drop.
        unsafe { FltAcquirePushLockExclusive(self.lock.get()) };
        self.holder.store(me, Release);
        Held { registry: self, acquired: true }
    }

    /// Adds an attached context's payload; the payload lives in Filter Manager's context
    /// memory, which does not move, and leaves in the cleanup callback.
    pub(crate) fn insert<K: Kind>(&self, context: &Context<K, T>)
    where
        T: Payload<Kind = K>,
    {
        let member: &T = context;
        let Some(link) = member.link() else { return };
        let link_pointer = ptr::from_ref(link).cast_mut();
        let _held = self.hold();
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

    /// Removes `member` if listed (a non-NULL owner says it is); the cleanup callback's first
    /// step.
    pub(crate) fn remove(&self, member: &T) {
        let Some(link) = member.link() else { return };
        let _held = self.acquire(current_thread());
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
        self.count.load(Relaxed)
    }

    /// True when no payload is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `visit` on members, newest first, until it returns `Break`, at IRQL <=
    /// APC_LEVEL (PASSIVE_LEVEL in practice: the port's message callback). The visitor may do
    /// anything a callback may, including dropping guards, whose releases wait for the visit's
    /// end.
    pub fn visit(&self, visit: &mut dyn FnMut(&T) -> ControlFlow<()>) {
        // Declared first, so dropped last: the deferred releases run after the lock is free.
        let _scope = visits::Scope::begin();
        let _held = self.hold();
        let mut cursor = self.head.load(Relaxed);
        while !cursor.is_null() {
            // SAFETY: `cursor` is a live member's link and the lock is held.
            let link = unsafe { follow(cursor) };
            let next = link.next.load(Relaxed);
            let owner = link.owner.load(Relaxed).cast::<T>().cast_const();
            // SAFETY: a listed link's owner is the live T that embeds it (set by insert); it
            // cannot leave during the call: other threads' removals wait for the lock, and this
            // thread's releases are deferred until the visit ends.
            if visit(unsafe { &*owner }).is_break() {
                break;
            }
            // Inserts from the visitor add at the head, so `next` is still the member after.
            cursor = next;
        }
    }
}

impl<T: Payload> Default for Registry<T> {
    fn default() -> Self {
        Self::new()
    }
}
