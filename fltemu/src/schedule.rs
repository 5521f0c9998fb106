//! The seeded schedule: at every call boundary (each emulated export's entry) and at the race
//! points inside the emulated calls (between a context lookup and its link, between a count
//! reaching 0 and the cleanup callback, inside create and close), a thread may be delayed —
//! a yield, a short or a long sleep — so that other threads run into the window.
//!
//! Each decision is a pure function of (seed, lane, step, site): the lane is the calling
//! thread's job number (its n-th call into this emulator), the step counts the points that job
//! has passed. The same seed therefore gives every job the same delays at the same points, so a
//! failing interleaving found with a seed is re-created by running with that seed again (the
//! host scheduler still decides what the other threads do meanwhile, so a reproduction is
//! likely, not certain). The seed comes from [`crate::Config::schedule_seed`], the
//! `FLTEMU_SCHEDULE_SEED` environment variable (read by `Config::default()`) or `fltemu run
//! --seed N`, and is printed in a report that is not clean.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The environment variable `Config::default()` reads the seed from.
pub const SEED_VARIABLE: &str = "FLTEMU_SCHEDULE_SEED";

/// What the schedule does to a thread at one point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Delay {
    /// Give the CPU away once.
    Yield,
    /// Sleep this many microseconds.
    Sleep(u32),
}

/// One delay the schedule applied (see [`crate::Emulator::schedule_trace`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Decision {
    /// The job: the calling thread's n-th call into the emulator.
    pub lane: u64,
    /// The point's number within the job.
    pub step: u64,
    /// The call or race point.
    pub site: &'static str,
    /// What was done.
    pub delay: Delay,
}

/// Recorded decisions are capped so a long run does not grow without bound.
const TRACE_LIMIT: usize = 1 << 16;

/// The schedule of one emulator.
pub struct Schedule {
    seed: u64,
    trace: Mutex<Vec<Decision>>,
}

/// Counts emulators, so each one numbers a thread's jobs from 0.
static EMULATORS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// On a caller's thread: (emulator, how many jobs it has submitted to that emulator).
    static JOBS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    /// On a worker: the current job's lane and the points it has passed.
    static LANE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// SplitMix64's finaliser: a well-mixed 64-bit function of its input.
fn mix(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

fn site_hash(site: &str) -> u64 {
    site.bytes().fold(0xCBF2_9CE4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3))
}

/// The decision at one point: most points run on, 1 in 8 yields, 1 in 32 sleeps 100 µs and 1
/// in 256 sleeps 2 ms (the length of the widened race window).
#[must_use]
pub fn decide(seed: u64, lane: u64, step: u64, site: &str) -> Option<Delay> {
    let value = mix(mix(mix(seed) ^ lane) ^ step ^ site_hash(site));
    match value % 256 {
        0 => Some(Delay::Sleep(2_000)),
        1..=8 => Some(Delay::Sleep(100)),
        9..=40 => Some(Delay::Yield),
        _ => None,
    }
}

/// The lane of the next job the current (calling) thread submits.
#[must_use]
pub fn next_lane() -> u64 {
    let emulator = EMULATORS.load(Ordering::Acquire);
    JOBS.with(|jobs| {
        let (seen, count) = jobs.get();
        let lane = if seen == emulator { count } else { 0 };
        jobs.set((emulator, lane + 1));
        lane
    })
}

/// A new emulator starts: every thread's job numbers start again from 0.
pub fn new_emulator() {
    EMULATORS.fetch_add(1, Ordering::AcqRel);
}

/// The lane of work the current job queues (a work item, a deferred cleanup): a function of
/// the job's own lane and step, so it too repeats with the seed.
#[must_use]
pub fn child_lane() -> u64 {
    let (lane, step) = LANE.with(Cell::get);
    mix(lane ^ mix(step)) | 1 << 63
}

/// Starts a job on the current worker thread.
pub fn begin_job(lane: u64) {
    LANE.with(|cell| cell.set((lane, 0)));
}

impl Schedule {
    /// A schedule for `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { seed, trace: Mutex::new(Vec::new()) }
    }

    /// The seed.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Passes one point: applies the decision for this job's next step.
    pub fn point(&self, site: &'static str) {
        let (lane, step) = LANE.with(|cell| {
            let (lane, step) = cell.get();
            cell.set((lane, step + 1));
            (lane, step)
        });
        let Some(delay) = decide(self.seed, lane, step, site) else { return };
        {
            let mut trace = self.trace.lock().unwrap_or_else(PoisonError::into_inner);
            if trace.len() < TRACE_LIMIT {
                trace.push(Decision { lane, step, site, delay });
            }
        }
        match delay {
            Delay::Yield => std::thread::yield_now(),
            Delay::Sleep(micros) => std::thread::sleep(Duration::from_micros(u64::from(micros))),
        }
    }

    /// The decisions applied so far, in the order they were applied.
    #[must_use]
    pub fn trace(&self) -> Vec<Decision> {
        self.trace.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The seed in `FLTEMU_SCHEDULE_SEED` (decimal or 0x-prefixed hexadecimal), if set.
#[must_use]
pub fn seed_from_env() -> Option<u64> {
    parse_seed(&std::env::var(SEED_VARIABLE).ok()?)
}

/// Parses a seed written in decimal or as 0x-prefixed hexadecimal.
#[must_use]
pub fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_a_function_of_seed_lane_step_and_site() {
        let run = |seed| (0..4).flat_map(|lane| (0..500).map(move |step| decide(seed, lane, step, "FltGetStreamContext"))).collect::<Vec<_>>();
        assert_eq!(run(7), run(7), "same seed, same decisions");
        assert_ne!(run(7), run(8), "another seed, other decisions");
        let delays = run(7).into_iter().flatten().count();
        assert!((150..=450).contains(&delays), "about 1 point in 6 is delayed, got {delays} of 2000");
    }

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 0x2A "), Some(42));
        assert_eq!(parse_seed("forty-two"), None);
    }
}
