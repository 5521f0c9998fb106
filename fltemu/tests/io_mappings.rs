//! The user buffers of the reads and writes fltemu issues are retired as PROT_NONE reservations
//! that the kernel merges with their neighbours: a long run keeps the process's mapping count
//! flat although no address is ever reused. Before, every operation left three mappings behind
//! (data pages, guard page, kernel view), and about 21,000 operations exhausted
//! vm.max_map_count (65530 by default), after which fltemu could not map a buffer and failed.
//! (That a retired buffer is never handed out again is tests/stale_buffers.rs.)
//! Its own test binary, so no other test's mappings come and go meanwhile.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod c_build;

use c_build::CDriver;
use fltemu::{Config, Emulator, IoOptions, OpenOptions, VolumeSpec};

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").expect("procfs").lines().count()
}

#[test]
fn thirty_thousand_reads_and_writes_keep_the_mapping_count_bounded() {
    let image = CDriver::new("passthrough").build();
    let emu = Emulator::load(&image, Config::default()).expect("loads");
    let volume = emu.mount(VolumeSpec::ntfs("\\Device\\vol1")).unwrap();
    emu.set_file_contents(volume, "\\a.txt", b"0123456789");
    let file = emu.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    let options = IoOptions::default();
    // One operation pair: a one-byte write, then a read of one page or of two (two sizes of
    // buffer, retired next to each other), each checked against the file's contents.
    let pair = |i: usize| {
        let byte = b'a' + u8::try_from(i % 26).unwrap();
        let written = emu.write(&file, (i % 10) as u64, &[byte], &options).unwrap();
        assert_eq!((written.status, written.information), (0, 1), "write {i}");
        let length = if i.is_multiple_of(2) { 16 } else { 8192 };
        let read = emu.read(&file, (i % 10) as u64, length, &options).unwrap();
        assert_eq!((read.status, read.data.first()), (0, Some(&byte)), "read {i}");
        assert_eq!(read.information, 10 - i % 10, "read {i}");
    };
    // Let the allocator and the emulator's tables settle first.
    for i in 0..300 {
        pair(i);
    }
    let before = mappings();
    for i in 300..15_300 {
        pair(i);
    }
    let after = mappings();
    assert!(after <= before + 32, "mappings grew from {before} to {after} over 30,000 operations");
    emu.close(file).unwrap();
    let report = emu.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}

/// A read whose buffer the host cannot map (a length past the 47-bit user address space, or
/// an allocation past the host's memory for paging I/O) fails with
/// STATUS_INSUFFICIENT_RESOURCES, as an I/O request the I/O manager has no resources for does,
/// and the emulator goes on; before, fltemu panicked (`assert!` on the failed mmap).
#[test]
fn a_buffer_the_host_cannot_map_fails_the_request_instead_of_panicking() {
    const INSUFFICIENT_RESOURCES: i32 = 0xC000_009A_u32.cast_signed();
    let image = CDriver::new("passthrough").build();
    let emu = Emulator::load(&image, Config::default()).expect("loads");
    let volume = emu.mount(VolumeSpec::ntfs("\\Device\\vol1")).unwrap();
    emu.set_file_contents(volume, "\\a.txt", b"0123456789");
    let file = emu.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    for (length, paging) in [(1usize << 60, false), (usize::MAX, false), (1 << 60, true)] {
        let result = emu.read(&file, 0, length, &IoOptions { paging, ..IoOptions::default() }).unwrap();
        assert_eq!((result.status, result.information), (INSUFFICIENT_RESOURCES, 0), "length {length:#x} paging {paging}");
    }
    let read = emu.read(&file, 0, 4, &IoOptions::default()).unwrap();
    assert_eq!((read.status, read.data.as_slice()), (0, &b"0123"[..]), "the emulator still works");
    emu.cleanup(&file).unwrap();
    emu.close(file).unwrap();
    let report = emu.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}
