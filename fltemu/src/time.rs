//! Emulated clock and delay exports of ntoskrnl.exe (and hal.dll's forwarders to them).

use crate::catalog::{Emulated, Source};
use crate::exec;

/// HIGH_LEVEL: "any IRQL" functions.
const HIGH_LEVEL: u8 = 15;
use crate::state;

/// 100 ns intervals between 1601-01-01 and 1970-01-01.
const EPOCH_DIFFERENCE_100NS: u128 = 116_444_736_000_000_000;
/// The performance-counter frequency fltemu reports: 10 MHz (100 ns ticks).
const PERFORMANCE_FREQUENCY: i64 = 10_000_000;

fn counted(function: &'static str, max_irql: u8) {
    if let Some(inner) = state::current() {
        inner.enter(function, max_irql);
    }
}

/// `KeQuerySystemTime` (wdm.h; any IRQL): 100 ns units since 1601 from the host clock. (x64
/// WDK headers make it a macro reading KUSER_SHARED_DATA, which fltemu cannot map; this is the
/// exported function that Rust bindings and x86 builds import.)
extern "win64" fn ke_query_system_time(time: *mut i64) {
    counted("KeQuerySystemTime", HIGH_LEVEL);
    let since_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let value = (since_unix.as_nanos() / 100 + EPOCH_DIFFERENCE_100NS) as i64;
    if !time.is_null() {
        // SAFETY: the caller passes a valid LARGE_INTEGER out pointer.
        unsafe { time.write_unaligned(value) };
    }
}

/// `KeQueryPerformanceCounter` (wdm.h; any IRQL; hal.dll forwards it to ntoskrnl.exe): a
/// monotonic 10 MHz counter; the frequency is written when asked for.
extern "win64" fn ke_query_performance_counter(frequency: *mut i64) -> i64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    counted("KeQueryPerformanceCounter", HIGH_LEVEL);
    if !frequency.is_null() {
        // SAFETY: an optional LARGE_INTEGER out pointer the caller owns.
        unsafe { frequency.write_unaligned(PERFORMANCE_FREQUENCY) };
    }
    let elapsed = START.get_or_init(std::time::Instant::now).elapsed();
    (elapsed.as_nanos() / 100) as i64 + 1
}

/// `KeStallExecutionProcessor` (wdm.h; any IRQL): busy-waits; the docs ask for at most 50 µs,
/// and longer stalls are flagged (a processor spinning that long starves its others).
extern "win64" fn ke_stall_execution_processor(microseconds: u32) {
    counted("KeStallExecutionProcessor", HIGH_LEVEL);
    if microseconds > 50
        && let Some(inner) = state::current()
    {
        inner.violation(crate::Violation::InvalidParameter { function: "KeStallExecutionProcessor", reason: "stall longer than the documented 50 microseconds" });
    }
    let until = std::time::Instant::now() + std::time::Duration::from_micros(u64::from(microseconds));
    while std::time::Instant::now() < until {
        core::hint::spin_loop();
    }
}

/// `KeDelayExecutionThread` (wdm.h; ≤ APC_LEVEL, PASSIVE for alertable waits): sleeps for a
/// relative (negative, 100 ns units) interval or until an absolute time; returns
/// STATUS_SUCCESS.
extern "win64" fn ke_delay_execution_thread(_mode: i8, _alertable: u8, interval: *const i64) -> i32 {
    counted("KeDelayExecutionThread", exec::APC_LEVEL);
    if interval.is_null() {
        return state::status::INVALID_PARAMETER;
    }
    // SAFETY: the caller passes a valid LARGE_INTEGER.
    let value = unsafe { interval.read_unaligned() };
    let hundreds = if value < 0 {
        value.unsigned_abs()
    } else {
        let now = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() / 100 + EPOCH_DIFFERENCE_100NS) as u64;
        value.cast_unsigned().saturating_sub(now)
    };
    std::thread::sleep(std::time::Duration::from_nanos(hundreds.saturating_mul(100).min(10_000_000_000)));
    state::status::SUCCESS
}

/// ntoskrnl.exe exports of this module.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "KeQuerySystemTime" => ke_query_system_time as *const () as usize,
        "KeQueryPerformanceCounter" => ke_query_performance_counter as *const () as usize,
        "KeStallExecutionProcessor" => ke_stall_execution_processor as *const () as usize,
        "KeDelayExecutionThread" => ke_delay_execution_thread as *const () as usize,
        _ => return None,
    })
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    Emulated { dll: "ntoskrnl.exe", function: "KeQuerySystemTime", notes: "100 ns since 1601 from the host clock (the export; the x64 header macro reads KUSER_SHARED_DATA, which fltemu cannot map)", source: Source::Ddi("wdm") },
    Emulated { dll: "ntoskrnl.exe", function: "KeQueryPerformanceCounter", notes: "monotonic, 10 MHz frequency; also bound for hal.dll imports (hal.dll forwards to ntoskrnl.exe)", source: Source::Ddi("wdm") },
    Emulated { dll: "ntoskrnl.exe", function: "KeStallExecutionProcessor", notes: "busy-waits; more than 50 µs → InvalidParameter", source: Source::Ddi("wdm") },
    Emulated { dll: "ntoskrnl.exe", function: "KeDelayExecutionThread", notes: "≤ APC; sleeps for the relative or absolute interval (capped at 10 s)", source: Source::Ddi("wdm") },
];
