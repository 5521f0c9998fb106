//! A test's hold point: the first thread that enters a named emulated call after
//! [`crate::Emulator::hold_at`] parks there until the test releases it, so a window between the
//! driver's last instruction before that call and the call's own work can be opened on purpose
//! (the seeded schedule only makes such windows likely). Process-global like the knobs.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

struct Hold {
    /// The call a thread is to park in; None when nothing is armed.
    site: Option<&'static str>,
    /// A thread is parked now.
    held: bool,
    /// Bumped by every arm and release, so a parked thread wakes for its own release only.
    ticket: u64,
}

static HOLD: Mutex<Hold> = Mutex::new(Hold { site: None, held: false, ticket: 0 });
static CHANGED: Condvar = Condvar::new();

fn lock() -> MutexGuard<'static, Hold> {
    HOLD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Parks the next thread that reaches `site`.
pub fn arm(site: &'static str) {
    let mut hold = lock();
    hold.site = Some(site);
    hold.held = false;
    hold.ticket += 1;
    CHANGED.notify_all();
}

/// Called at the entry of an emulated call: parks the caller if the hold is armed for `site`.
pub fn reach(site: &'static str) {
    let mut hold = lock();
    if hold.site != Some(site) || hold.held {
        return;
    }
    hold.held = true;
    let ticket = hold.ticket;
    CHANGED.notify_all();
    while hold.held && hold.ticket == ticket {
        hold = CHANGED.wait(hold).unwrap_or_else(PoisonError::into_inner);
    }
}

/// Waits up to `timeout` for a thread to park; whether one did.
pub fn wait_held(timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    let mut hold = lock();
    while !hold.held {
        let Some(left) = until.checked_duration_since(Instant::now()) else { return false };
        hold = CHANGED.wait_timeout(hold, left).unwrap_or_else(PoisonError::into_inner).0;
    }
    true
}

/// Lets the parked thread (if any) go on and disarms the hold.
pub fn release() {
    let mut hold = lock();
    hold.site = None;
    hold.held = false;
    hold.ticket += 1;
    CHANGED.notify_all();
}
