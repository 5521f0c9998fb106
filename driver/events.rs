//! Open/close events, driver → the subscribed companion, via FltSendMessage.
//!
//! The I/O path never blocks: [`publish_open`] / [`publish_close`] encode the event into a
//! fresh pool buffer, then under the queue's spin lock number the event and append it to a
//! bounded ring and, if no sender is scheduled, queue a generic work item. The spin lock's
//! holders run at DISPATCH_LEVEL for a few stores (no allocation, no call out, no free), so a
//! publisher spins for at most that long and never waits for a preempted thread. The work item
//! (PASSIVE_LEVEL, a system thread) sends a batch of events, each with a bounded timeout. Every
//! event that does not reach the companion — no room, no memory, published while unloading,
//! send timed out or failed, discarded at unload — is counted in [`dropped`]; each event
//! carries a sequence number that also counts the dropped ones, so the companion sees the gap.

use alloc::vec::Vec;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ctxguard_protocol::{Event, EventKind};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltAllocateGenericWorkItem, FltFreeGenericWorkItem, FltQueueGenericWorkItem, FltSendMessage, PFLT_GENERIC_WORKITEM,
};
use windows_sys::Wdk::System::SystemServices::{DelayedWorkQueue, KeQuerySystemTimePrecise};
use windows_sys::Win32::Foundation::STATUS_SUCCESS;

use crate::kernel::spin_lock::SpinLock;
use crate::{clients, kernel};

/// Events the ring holds; beyond this they are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 256;
/// Events one sender work item sends at most before handing over to a fresh work item.
const SENDER_BATCH: usize = 16;
/// How long one FltSendMessage may wait for the companion to take an event: 100 ms,
/// negative = relative, in 100 ns units.
const SEND_TIMEOUT: i64 = -100 * 10_000;

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

/// The queue; its critical sections only move a buffer pointer and a few counters, so pool
/// buffers are allocated before taking it and freed after releasing it.
static QUEUE: SpinLock<Ring> = SpinLock::new(Ring { slots: [const { None }; QUEUE_CAPACITY], head: 0, len: 0 });
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

/// Publishes an open of `stream_name` by `pid`. Never blocks; callable at any IRQL, and drops
/// (counted) what it is given above APC_LEVEL, where the paged name must not be read.
pub fn publish_open(pid: u32, stream_name: &[u16]) {
    publish(EventKind::Open, pid, stream_name);
}

/// Publishes a close (cleanup) of `stream_name` by `pid`; as [`publish_open`].
pub fn publish_close(pid: u32, stream_name: &[u16]) {
    publish(EventKind::Close, pid, stream_name);
}

fn publish(kind: EventKind, pid: u32, name: &[u16]) {
    if CLOSING.load(Ordering::Acquire) || !clients::has_subscriber() {
        return;
    }
    // The name is in paged pool (kernel::paged_name): reading it above APC_LEVEL could fault.
    if kernel::current_irql() > kernel::APC_LEVEL {
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
    let refused = {
        let mut ring = QUEUE.lock();
        // Unload sets CLOSING before it takes this lock to empty the ring: a publisher that
        // passed the check above but gets the lock after that drain must not refill the ring,
        // or its buffer would outlive the image. Under the lock the flag cannot be missed.
        if CLOSING.load(Ordering::Acquire) {
            Some((message, false))
        } else {
            let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed) + 1;
            Event::set_sequence(&mut message, sequence);
            let pushed = ring.push(message);
            QUEUED.store(ring.len as u64, Ordering::Relaxed);
            pushed.err().map(|message| (message, true))
        }
    };
    // The refused buffer is freed here, after the lock is released.
    match refused {
        None => schedule_sender(),
        Some((message, numbered)) => {
            drop(message);
            if numbered { drop_one() } else { drop_unnumbered() }
        }
    }
}

/// Queues the sender work item unless it is already queued or running.
fn schedule_sender() {
    if CLOSING.load(Ordering::Acquire) || SENDER_SCHEDULED.swap(true, Ordering::AcqRel) {
        return;
    }
    let filter = clients::filter();
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
        let Some(message) = pop_next() else { break };
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

/// Pops the oldest event under the lock; the caller frees it after the lock is released.
fn pop_next() -> Option<Vec<u8>> {
    QUEUE.lock().pop_counted()
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
    if CLOSING.load(Ordering::Acquire) {
        drop_one();
        return;
    }
    let timeout = SEND_TIMEOUT;
    #[allow(clippy::cast_possible_truncation)] // events are at most a few KiB.
    let length = message.len() as u32;
    // Only the subscriber whose token was read first receives it (clients: generations).
    let status = clients::with_subscriber(|client_port| {
        // SAFETY: `client_port` is the subscriber's slot, a static that FltCloseClientPort
        // NULLs under Filter Manager's serialization with FltSendMessage; the message is a live
        // kernel buffer; no reply is asked for; the timeout is a relative 100 ms.
        unsafe {
            FltSendMessage(filter, client_port, message.as_ptr().cast(), length, core::ptr::null_mut(), core::ptr::null_mut(), &raw const timeout)
        }
    });
    // STATUS_TIMEOUT is a success status: only STATUS_SUCCESS means delivered.
    if status == Some(STATUS_SUCCESS) {
        SENT.fetch_add(1, Ordering::Relaxed);
    } else {
        drop_one();
    }
}

/// Unload (before the server port closes): refuse new events and discard queued ones (counted
/// as dropped). A sender still running finds the ring empty; Filter Manager runs it down
/// before FltUnregisterFilter returns.
pub fn shutdown() {
    // Set before the drain takes the lock: a publisher that gets the lock after the drain
    // sees it there and keeps its event out of the ring.
    CLOSING.store(true, Ordering::Release);
    discard_remaining();
}

/// Frees every queued event, counting each as dropped. Unload calls it again after
/// FltUnregisterFilter, when no callback or sender can run any more, so no pool buffer outlives
/// the image.
pub fn discard_remaining() {
    // One event per acquisition, freed after each release: nothing is freed under the lock.
    while let Some(message) = pop_next() {
        drop(message);
        drop_one();
    }
}

/// Allows events again (a DriverEntry after an earlier unload in the same process, as fltemu does).
pub fn start() {
    CLOSING.store(false, Ordering::Release);
}
