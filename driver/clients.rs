//! The port's client slots and the event subscriber, shared by the port (which connects and
//! disconnects clients) and the event sender (which sends to the subscriber). Below both, so
//! neither imports the other.
//!
//! Each client holds one slot of [`CLIENT_PORTS`], a static, so FltCloseClientPort and
//! FltSendMessage always get a stable `PFLT_PORT*`. The subscriber is named by a token of
//! (generation, slot): a sender that read the token before a disconnect must not send to the
//! next client in that slot, so it announces itself in the slot's in-flight count, re-reads
//! the token, and sends only if it is unchanged; a connect does not take a slot while a sender
//! is in flight on it.

use core::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering::SeqCst};

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{PFLT_FILTER, PFLT_PORT};

/// The most clients connected at once (FltCreateCommunicationPort's MaxConnections).
pub const MAX_CONNECTIONS: usize = 4;

/// The filter handle the port belongs to (0 while closed).
static FILTER: AtomicIsize = AtomicIsize::new(0);
/// One client port per connection slot; 0 when free. FltCloseClientPort NULLs its slot.
static CLIENT_PORTS: [AtomicIsize; MAX_CONNECTIONS] = [const { AtomicIsize::new(0) }; MAX_CONNECTIONS];
/// Senders about to send on each slot.
static IN_FLIGHT: [AtomicUsize; MAX_CONNECTIONS] = [const { AtomicUsize::new(0) }; MAX_CONNECTIONS];
/// The subscriber's token, `generation << 8 | (slot + 1)`; 0 when none.
static SUBSCRIBER: AtomicUsize = AtomicUsize::new(0);
/// Bumped by every subscription, so each subscriber's token differs from the last one's.
static GENERATION: AtomicUsize = AtomicUsize::new(0);
/// Clients connected now.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// The filter the port was opened for (0 when closed).
pub fn filter() -> PFLT_FILTER {
    FILTER.load(SeqCst)
}

/// Records the filter (port open) or 0 (port closed).
pub fn set_filter(filter: PFLT_FILTER) {
    FILTER.store(filter, SeqCst);
}

/// Whether a client subscribed to events.
pub fn has_subscriber() -> bool {
    SUBSCRIBER.load(SeqCst) != 0
}

/// Clients connected now.
pub fn connections() -> u64 {
    CONNECTIONS.load(SeqCst)
}

/// Takes a free slot for `client_port`, subscribing it if `subscribe`.
///
/// # Errors
/// `Err(true)` when only the subscription failed (another client subscribed), `Err(false)`
/// when no slot is free.
pub fn connect(client_port: PFLT_PORT, subscribe: bool) -> Result<usize, bool> {
    let slot = (0..MAX_CONNECTIONS)
        .find(|&slot| {
            if CLIENT_PORTS[slot].compare_exchange(0, client_port, SeqCst, SeqCst).is_err() {
                return false;
            }
            // A sender that read the previous subscriber's token may still be on its way here.
            if IN_FLIGHT[slot].load(SeqCst) != 0 {
                CLIENT_PORTS[slot].store(0, SeqCst);
                return false;
            }
            true
        })
        .ok_or(false)?;
    if subscribe {
        let generation = GENERATION.fetch_add(1, SeqCst).wrapping_add(1) & (usize::MAX >> 8);
        if SUBSCRIBER.compare_exchange(0, (generation << 8) | (slot + 1), SeqCst, SeqCst).is_err() {
            CLIENT_PORTS[slot].store(0, SeqCst);
            return Err(true);
        }
    }
    CONNECTIONS.fetch_add(1, SeqCst);
    Ok(slot)
}

/// A disconnecting client gives up the subscription if it held it; the caller then closes
/// its port (FltCloseClientPort on [`client_port_slot`]).
pub fn disconnect(slot: usize) {
    let token = SUBSCRIBER.load(SeqCst);
    if token & 0xFF == slot + 1 {
        let _ = SUBSCRIBER.compare_exchange(token, 0, SeqCst, SeqCst);
    }
    CONNECTIONS.fetch_sub(1, SeqCst);
}

/// The slot variable of client `slot`, for FltCloseClientPort.
pub fn client_port_slot(slot: usize) -> *mut PFLT_PORT {
    CLIENT_PORTS[slot].as_ptr()
}

/// Runs `send` with the subscriber's port variable if the subscriber is still the one whose
/// token was read first; `None` when there is none (or it changed).
pub fn with_subscriber<R>(send: impl FnOnce(*mut PFLT_PORT) -> R) -> Option<R> {
    let token = SUBSCRIBER.load(SeqCst);
    let slot = (token & 0xFF).checked_sub(1).filter(|slot| *slot < MAX_CONNECTIONS)?;
    IN_FLIGHT[slot].fetch_add(1, SeqCst);
    let result = (SUBSCRIBER.load(SeqCst) == token).then(|| send(CLIENT_PORTS[slot].as_ptr()));
    IN_FLIGHT[slot].fetch_sub(1, SeqCst);
    result
}
