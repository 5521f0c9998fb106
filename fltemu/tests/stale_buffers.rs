//! The user buffers of the reads and writes fltemu issues are never handed out again: a driver
//! that keeps a buffer's address past its operation faults on it however many operations later
//! (bug check 0x1E + UserBufferTouchedDirectly), and a new read buffer holds zeros, not an
//! earlier write's data. Before, a retired buffer was reused by an operation of the same size
//! after a 32-operation quarantine (the stale pointer silently read the new operation's data),
//! and after 96 retirements its address was unmapped and left for the kernel to hand out again.
//! Fixture: `c-drivers/drivers/stale.c`.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod c_build;

use c_build::CDriver;

use fltemu::{Config, EmuError, Emulator, IoOptions, OpenOptions, Stop, Violation, VolumeSpec};

/// Writes 1..=`stale_at` (write i is `pages(i)` pages of "payNNNNN…"); the driver reads write 1's
/// buffer in write `stale_at`'s pre-write, which must be that write's bug check.
fn kept_pointer_faults(stale_at: usize, pages: impl Fn(usize) -> usize) {
    kept_address_faults(&[], stale_at, pages, 0x1E, |v| matches!(v, Violation::UserBufferTouchedDirectly { .. }));
}

/// As [`kept_pointer_faults`] for the address the `defines` make the driver keep: write
/// `stale_at` must stop with bug check `code` and a violation `expected` accepts.
fn kept_address_faults(
    defines: &[&str],
    stale_at: usize,
    pages: impl Fn(usize) -> usize,
    code: u32,
    expected: impl Fn(&Violation) -> bool,
) {
    let mut driver = CDriver::new("stale").define(&format!("STALE_AT={stale_at}"));
    for define in defines {
        driver = driver.define(define);
    }
    let image = driver.build();
    let emu = Emulator::load(&image, Config::default()).expect("loads");
    let volume = emu.mount(VolumeSpec::ntfs("\\Device\\vol1")).unwrap();
    emu.set_file_contents(volume, "\\a.txt", b"");
    let file = emu.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    for i in 1..stale_at {
        let mut payload = format!("pay{i:05}").into_bytes();
        payload.resize(4096 * pages(i), b'#');
        let written = emu.write(&file, 0, &payload, &IoOptions::default()).unwrap();
        assert_eq!(written.status, 0, "stale_at {stale_at}: write {i}");
    }
    let stale = emu.write(&file, 0, format!("pay{stale_at:05}").as_bytes(), &IoOptions::default());
    let Err(EmuError::Stopped(Stop::BugCheck { code: stopped_with, .. })) = stale else {
        panic!("stale_at {stale_at}: the stale read went unnoticed: {stale:?}\n{}", emu.report());
    };
    assert_eq!(stopped_with, code, "stale_at {stale_at}");
    let violations = emu.violations();
    assert!(violations.iter().any(expected), "stale_at {stale_at}: {violations:?}");
    let report = emu.report();
    assert!(!report.debug_output.iter().any(|line| line.contains("stale: write")), "stale_at {stale_at}: {report}");
}

#[test]
fn a_kept_write_buffer_faults_within_the_old_quarantine() {
    kept_pointer_faults(20, |_| 1);
}

/// Write 34 would have been handed write 1's retired buffer (same size, past the quarantine).
#[test]
fn a_kept_write_buffer_faults_past_the_old_quarantine() {
    kept_pointer_faults(34, |_| 1);
}

/// Sizes that never match: the old code unmapped write 1's buffer after 96 retirements.
#[test]
fn a_kept_write_buffer_faults_past_the_old_eviction() {
    kept_pointer_faults(120, |i| i);
}

/// The system address of write 1's MDL (FltLockUserBuffer + MmGetSystemAddressForMdlSafe), kept
/// and read in write 3: the view is unmapped since write 1 completed, so the read bug checks
/// 0x50 (a kernel address, as on Windows) and is reported as a misuse of the MDL. Before, the
/// fault was classified as "not user memory" with no violation at all.
#[test]
fn a_kept_mdl_system_address_is_a_reported_misuse() {
    kept_address_faults(&["STALE_VIEW"], 3, |_| 1, 0x50, |v| {
        matches!(v, Violation::ObjectMisuse { function: "FltLockUserBuffer", reason, .. } if reason.contains("after the operation completed"))
    });
}

/// Write 1 pends and is never completed in time: fltemu gives up on it (PendedOperationNotCompleted)
/// and the write goes on without the filter. Its buffer is still the driver's (the operation
/// was never completed to it): write 2's pre-write reads it and completes write 1 late. That
/// read must see write 1's data, and the missing completion must be the only violation. Before,
/// the buffer was retired when write 1 returned, so the read bug checked 0x1E with
/// UserBufferTouchedDirectly on top.
#[test]
fn an_abandoned_pended_write_keeps_its_buffer() {
    let image = CDriver::new("stale").define("STALE_AT=2").define("PEND_FIRST_WRITE").build();
    let config = Config { call_timeout: std::time::Duration::from_millis(800), ..Config::default() };
    let emu = Emulator::load(&image, config).expect("loads");
    let volume = emu.mount(VolumeSpec::ntfs("\\Device\\vol1")).unwrap();
    emu.set_file_contents(volume, "\\a.txt", b"");
    let file = emu.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    let abandoned = emu.write(&file, 0, b"pay00001", &IoOptions::default()).expect("goes on without the filter");
    assert_eq!((abandoned.status, abandoned.information), (0, 8));
    let late = emu.write(&file, 8, b"pay00002", &IoOptions::default());
    assert!(late.as_ref().is_ok_and(|r| r.status == 0), "{late:?}\n{}", emu.report());
    emu.close(file).unwrap();
    let report = emu.unload().unwrap();
    assert!(report.debug_output.iter().any(|line| line.contains("stale: write 2 read write 1's buffer: 'pay00001'")), "{report}");
    assert!(
        matches!(&report.violations[..], [Violation::PendedOperationNotCompleted { operation: fltemu::Operation::PreWrite, .. }]),
        "{report}"
    );
    assert!(report.stop.is_none(), "{report}");
}

/// Pre-read counts the non-zero bytes of its ReadBuffer before the file system fills it: after
/// same-size writes of non-zero data (more of them than the old quarantine) it must see zeros,
/// and no two reads may get the same buffer address.
#[test]
fn a_read_buffer_starts_zeroed_after_same_size_writes() {
    let image = CDriver::new("stale").build();
    let emu = Emulator::load(&image, Config::default()).expect("loads");
    let volume = emu.mount(VolumeSpec::ntfs("\\Device\\vol1")).unwrap();
    emu.set_file_contents(volume, "\\a.txt", b"");
    let file = emu.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    let payload = [0xAB_u8; 100];
    for i in 0..40 {
        assert_eq!(emu.write(&file, 0, &payload, &IoOptions::default()).unwrap().information, 100, "write {i}");
    }
    for i in 0..40 {
        assert_eq!(emu.write(&file, 0, &payload, &IoOptions::default()).unwrap().information, 100, "write {i}");
        let read = emu.read(&file, 0, 100, &IoOptions::default()).unwrap();
        assert_eq!(read.data, payload, "read {i}");
    }
    emu.close(file).unwrap();
    let report = emu.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    let pre_reads: Vec<&String> = report.debug_output.iter().filter(|line| line.contains("stale: pre-read")).collect();
    assert_eq!(pre_reads.len(), 40, "{report}");
    assert!(pre_reads.iter().all(|line| line.contains(" of 100 bytes has 0 non-zero bytes")), "{pre_reads:?}");
    // Every read got a buffer at a new address (the old code handed a same-size buffer out
    // again after 32 operations, so 80 operations of one size repeated addresses).
    let addresses: std::collections::HashSet<&str> =
        pre_reads.iter().filter_map(|line| line.split("buffer ").nth(1)?.split(' ').next()).collect();
    assert_eq!(addresses.len(), pre_reads.len(), "a read buffer address repeated: {pre_reads:?}");
}
