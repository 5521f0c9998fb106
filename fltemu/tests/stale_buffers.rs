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
    let image = CDriver::new("stale").define(&format!("STALE_AT={stale_at}")).build();
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
    let Err(EmuError::Stopped(Stop::BugCheck { code, .. })) = stale else {
        panic!("stale_at {stale_at}: the stale read went unnoticed: {stale:?}\n{}", emu.report());
    };
    assert_eq!(code, 0x1E, "stale_at {stale_at}");
    let violations = emu.violations();
    assert!(
        violations.iter().any(|v| matches!(v, Violation::UserBufferTouchedDirectly { .. })),
        "stale_at {stale_at}: {violations:?}"
    );
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

/// Pre-read counts the non-zero bytes of its ReadBuffer before the file system fills it: after
/// same-size writes of non-zero data (more of them than the old quarantine) it must see zeros.
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
    assert!(pre_reads.iter().all(|line| line.contains("100 bytes has 0 non-zero bytes")), "{pre_reads:?}");
}
