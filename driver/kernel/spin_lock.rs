//! A value behind an executive spin lock (`KSPIN_LOCK`).
//!
//! Holders run at DISPATCH_LEVEL, so the thread scheduler cannot preempt them: a waiter spins
//! for at most the holder's critical section, never for a preempted holder's time slice. Keep
//! critical sections to a few loads and stores: no allocation, no call out, no wait, nothing
//! paged (wdm.h "Introduction to Spin Locks").

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

use ntoskrnl_imports::{KeAcquireSpinLockRaiseToDpc, KeReleaseSpinLock};

/// `T` guarded by a `KSPIN_LOCK`.
pub struct SpinLock<T> {
    /// The `KSPIN_LOCK` word; only ntoskrnl reads and writes it.
    word: UnsafeCell<usize>,
    value: UnsafeCell<T>,
}

// SAFETY: `value` is only reached through a guard, and a guard exists only while this thread
// holds the spin lock, which ntoskrnl grants to one processor at a time (with the acquire and
// release ordering of its interlocked operations); `T: Send` because holders on different
// processors take turns owning it.
unsafe impl<T: Send> Sync for SpinLock<T> {}

/// Access to the value while the spin lock is held; dropping it releases the lock and restores
/// the IRQL the acquire found.
pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
    old_irql: u8,
    /// Not `Send`: the release must happen on the processor (at the raised IRQL, the thread
    /// cannot migrate) that acquired.
    _not_send: PhantomData<*const ()>,
}

impl<T> SpinLock<T> {
    /// A released spin lock: a zero word, which is all KeInitializeSpinLock stores.
    pub const fn new(value: T) -> Self {
        Self { word: UnsafeCell::new(0), value: UnsafeCell::new(value) }
    }

    /// Raises to DISPATCH_LEVEL and acquires, spinning while another processor holds the lock.
    ///
    /// Callable at IRQL <= DISPATCH_LEVEL (KeAcquireSpinLockRaiseToDpc's contract; above it
    /// Windows bug-checks). Not re-entrant: acquiring a lock this thread holds spins forever.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        // SAFETY: `word` is a pointer-aligned KSPIN_LOCK that lives as long as `self` and is
        // touched only by these two ntoskrnl routines.
        let old_irql = unsafe { KeAcquireSpinLockRaiseToDpc(self.word.get()) };
        SpinLockGuard { lock: self, old_irql, _not_send: PhantomData }
    }
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard exists only while this thread holds the spin lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard exists only while this thread holds the spin lock.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this thread acquired the lock in `lock` (a guard is built only there) and is
        // still at DISPATCH_LEVEL; `old_irql` is what that acquire returned.
        unsafe { KeReleaseSpinLock(self.lock.word.get(), self.old_irql) };
    }
}
