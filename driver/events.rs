//! Open/close events, driver → the subscribed companion, via FltSendMessage.
//!
//! The I/O path never waits: [`publish_open`] / [`publish_close`] encode the event into a
//! fresh pool buffer, try the queue's lock a bounded number of times, number the event and
//! append it to a bounded ring under that lock and, if no sender is scheduled, queue a generic
//! work item. The work item (PASSIVE_LEVEL, a system thread) sends a batch of events, each with
//! a bounded timeout. Every event that does not reach
//! the companion — no room, lock busy, no memory, send timed out or failed, discarded at
//! unload — is counted in [`dropped`]; each event carries a sequence number that also counts
//! the dropped ones, so the companion sees the gap.

use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ctxguard_protocol::{Event, EventKind};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltAllocateGenericWorkItem, FltFreeGenericWorkItem, FltQueueGenericWorkItem, FltSendMessage, PFLT_GENERIC_WORKITEM, PFLT_PORT,
};
use windows_sys::Wdk::System::SystemServices::{DelayedWorkQueue, KeQuerySystemTimePrecise};
use windows_sys::Win32::Foundation::STATUS_SUCCESS;

use crate::{kernel, port};

/// Events the ring holds; beyond this they are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 256;
/// How many times a publisher tries the queue's lock before dropping its event: the holders'
/// critical sections are a few loads and stores, so a short bounded spin almost always wins.
const PUBLISH_LOCK_ATTEMPTS: u32 = 256;
/// Events one sender work item sends at most before handing over to a fresh work item.
const SENDER_BATCH: usize = 16;
/// How long one FltSendMessage may wait for the companion to take an event: 100 ms,
/// negative = relative, in 100 ns units.
const SEND_TIMEOUT: i64 = -100 * 10_000;

/// A lock that is only ever tried by the I/O path and spun on by the sender and unload, whose
/// critical sections are a few loads and stores (no allocation, no call out).
struct TryLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialized by `locked` (acquire on lock, release on unlock);
// the ring holds owned `Vec<u8>`s, which are Send.
unsafe impl<T: Send> Sync for TryLock<T> {}

struct Guard<'a, T> {
    lock: &'a TryLock<T>,
}

impl<T> TryLock<T> {
    const fn new(value: T) -> Self {
        Self { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    fn try_lock(&self) -> Option<Guard<'_, T>> {
        // A guard exists only when this call took the lock: its Drop releases the lock, so one
        // built eagerly and dropped after a failed attempt would release someone else's.
        match self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Some(Guard { lock: self }),
            Err(_) => None,
        }
    }

    /// Tries up to `attempts` times: a bounded wait for another publisher's few stores, never
    /// an unbounded one.
    fn try_lock_bounded(&self, attempts: u32) -> Option<Guard<'_, T>> {
        for _ in 0..attempts {
            if let Some(guard) = self.try_lock() {
                return Some(guard);
            }
            core::hint::spin_loop();
        }
        None
    }

    /// Spins until the lock is free; only at PASSIVE_LEVEL, outside any I/O path.
    fn lock(&self) -> Guard<'_, T> {
        loop {
            if let Some(guard) = self.try_lock() {
                return guard;
            }
            core::hint::spin_loop();
        }
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while `locked` is held by this thread.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while `locked` is held by this thread.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// A fixed ring of encoded event messages.
struct Ring {
    slots: [Option<Vec<u8>>; QUEUE_CAPACITY],
    head: usize,
    len: usize,
}

impl Ring {
    fn push(&mut self, message: Vec<u8>) -> Result<(), Vec<u8>> {
        if self.len == QUEUE_CAPACITY {
            return Err(message);
        }
        self.slots[(self.head + self.len) % QUEUE_CAPACITY] = Some(message);
        self.len += 1;
        Ok(())
    }

    fn pop(&mut self) -> Option<Vec<u8>> {
        if self.len == 0 {
            return None;
        }
        let message = self.slots[self.head].take();
        self.head = (self.head + 1) % QUEUE_CAPACITY;
        self.len -= 1;
        message
    }
}

static QUEUE: TryLock<Ring> = TryLock::new(Ring { slots: [const { None }; QUEUE_CAPACITY], head: 0, len: 0 });
/// Set while the sender work item is queued or running.
static SENDER_SCHEDULED: AtomicBool = AtomicBool::new(false);
/// Set by unload: nothing more is queued or sent.
static CLOSING: AtomicBool = AtomicBool::new(false);
static SEQUENCE: AtomicU64 = AtomicU64::new(0);
static SENT: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static QUEUED: AtomicU64 = AtomicU64::new(0);

/// Events delivered to the subscriber.
pub fn sent() -> u64 {
    SENT.load(Ordering::Relaxed)
}

/// Events lost (see the module documentation for every way).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Events waiting in the ring.
pub fn queued() -> u64 {
    QUEUED.load(Ordering::Relaxed)
}

/// Counts a numbered event (already in the sequence) as lost.
fn drop_one() {
    DROPPED.fetch_add(1, Ordering::Relaxed);
}

/// Counts an event lost before it was numbered, and spends a sequence number on it so that the
/// companion sees the gap.
fn drop_unnumbered() {
    SEQUENCE.fetch_add(1, Ordering::Relaxed);
    drop_one();
}

/// Publishes an open of `stream_name` by `pid`. Never blocks; callable at IRQL <= DISPATCH_LEVEL.
pub fn publish_open(pid: u32, stream_name: &[u16]) {
    publish(EventKind::Open, pid, stream_name);
}

/// Publishes a close (cleanup) of `stream_name` by `pid`. Never blocks; IRQL <= DISPATCH_LEVEL.
pub fn publish_close(pid: u32, stream_name: &[u16]) {
    publish(EventKind::Close, pid, stream_name);
}

fn publish(kind: EventKind, pid: u32, name: &[u16]) {
    if CLOSING.load(Ordering::Acquire) || !port::has_subscriber() {
        return;
    }
    if kernel::current_irql() > kernel::DISPATCH_LEVEL {
        drop_unnumbered();
        return;
    }
    let mut time = 0i64;
    // SAFETY: `time` is a valid out pointer; KeQuerySystemTimePrecise runs at any IRQL.
    unsafe { KeQuerySystemTimePrecise(&raw mut time) };
    let length = Event::encoded_len(name.len());
    let mut message = Vec::new();
    if message.try_reserve_exact(length).is_err() {
        drop_unnumbered();
        return;
    }
    message.resize(length, 0);
    // Numbered below, under the lock, so that the ring's order is the sequence's order.
    if Event::encode(kind, pid, 0, time, name, &mut message).is_err() {
        drop_unnumbered();
        return;
    }
    let Some(mut ring) = QUEUE.try_lock_bounded(PUBLISH_LOCK_ATTEMPTS) else {
        drop_unnumbered();
        return;
    };
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed) + 1;
    Event::set_sequence(&mut message, sequence);
    let pushed = ring.push(message);
    QUEUED.store(ring.len as u64, Ordering::Relaxed);
    drop(ring);
    if pushed.is_err() {
        drop_one();
        return;
    }
    schedule_sender();
}

/// Queues the sender work item unless it is already queued or running.
fn schedule_sender() {
    if CLOSING.load(Ordering::Acquire) || SENDER_SCHEDULED.swap(true, Ordering::AcqRel) {
        return;
    }
    let filter = port::filter();
    // SAFETY: FltAllocateGenericWorkItem takes no arguments and runs at <= DISPATCH_LEVEL.
    let item = unsafe { FltAllocateGenericWorkItem() };
    if item == 0 || filter == 0 {
        if item != 0 {
            // SAFETY: `item` was just allocated and never queued.
            unsafe { FltFreeGenericWorkItem(item) };
        }
        // The events stay queued; the next publish tries again.
        SENDER_SCHEDULED.store(false, Ordering::Release);
        return;
    }
    // SAFETY: `item` is a fresh generic work item, `filter` the registered filter (the work
    // item holds it for the routine's duration), and `send_queued` matches the routine type.
    let status =
        unsafe { FltQueueGenericWorkItem(item, filter as *const c_void, Some(send_queued), DelayedWorkQueue, core::ptr::null()) };
    if !kernel::nt_success(status) {
        // SAFETY: queueing failed, so the item is still ours and not queued.
        unsafe { FltFreeGenericWorkItem(item) };
        SENDER_SCHEDULED.store(false, Ordering::Release);
    }
}

/// The sender (PASSIVE_LEVEL, system thread): sends a batch, frees its work item, and queues a
/// fresh one if events remain.
unsafe extern "system" fn send_queued(item: PFLT_GENERIC_WORKITEM, filter: *const c_void, _context: *const c_void) {
    // A bounded batch, so that a companion that stopped reading holds a system worker thread
    // for at most SENDER_BATCH timeouts; the re-check below queues a fresh item for the rest.
    for _ in 0..SENDER_BATCH {
        let Some(message) = QUEUE.lock().pop_counted() else { break };
        send(filter as isize, &message);
    }
    SENDER_SCHEDULED.store(false, Ordering::Release);
    // SAFETY: `item` is this routine's own work item, no longer queued once it runs.
    unsafe { FltFreeGenericWorkItem(item) };
    // Events left after the batch, or published between the last pop and clearing the flag
    // (that publisher found the flag set): a fresh work item sends them.
    if QUEUE.lock().len != 0 {
        schedule_sender();
    }
}

impl Ring {
    /// Pops and mirrors the new length into [`QUEUED`].
    fn pop_counted(&mut self) -> Option<Vec<u8>> {
        let message = self.pop();
        QUEUED.store(self.len as u64, Ordering::Relaxed);
        message
    }
}

/// Sends one event to the subscriber, counting it as sent or dropped.
fn send(filter: isize, message: &[u8]) {
    let Some(client_port) = port::subscriber_port() else {
        drop_one();
        return;
    };
    if CLOSING.load(Ordering::Acquire) {
        drop_one();
        return;
    }
    let timeout = SEND_TIMEOUT;
    #[allow(clippy::cast_possible_truncation)] // events are at most a few KiB.
    let length = message.len() as u32;
    // SAFETY: `client_port` points to the subscriber's slot, a static that FltCloseClientPort
    // NULLs under Filter Manager's serialization with FltSendMessage; the message is a live
    // kernel buffer; no reply is asked for; the timeout is a relative 100 ms.
    let status = unsafe {
        FltSendMessage(
            filter,
            client_port.cast::<PFLT_PORT>(),
            message.as_ptr().cast(),
            length,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            &raw const timeout,
        )
    };
    // STATUS_TIMEOUT is a success status: only STATUS_SUCCESS means delivered.
    if status == STATUS_SUCCESS {
        SENT.fetch_add(1, Ordering::Relaxed);
    } else {
        drop_one();
    }
}

/// Unload (before the server port closes): refuse new events and discard queued ones (counted
/// as dropped). A sender still running finds the ring empty; Filter Manager runs it down
/// before FltUnregisterFilter returns.
pub fn shutdown() {
    CLOSING.store(true, Ordering::Release);
    let mut ring = QUEUE.lock();
    while ring.pop_counted().is_some() {
        drop_one();
    }
}

/// Allows events again (a DriverEntry after an earlier unload in the same process, as fltemu does).
pub fn start() {
    CLOSING.store(false, Ordering::Release);
}
