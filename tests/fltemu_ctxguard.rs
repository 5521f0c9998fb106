//! ctxguard.sys itself, run in fltemu: load/unload, an open storm, and bad images.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;

use fltemu::{Config, EmuError, Emulator, LoadError, OpenOptions, VolumeSpec};
use support::{Arch, driver_image};

#[test]
fn load_then_unload_is_clean() {
    let emulator = Emulator::load(driver_image(Arch::X64), Config::default()).expect("ctxguard.sys loads");
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.pool_bytes_outstanding, 0, "{report}");
    assert!(!report.debug_output.is_empty(), "the driver prints through DbgPrintEx");
}

/// ≥ 10,000 opens across 4 threads and 3 volumes (one without stream contexts), with files held
/// open while others open the same stream, simultaneous first opens, alternate streams, failed
/// creates and paging files; then 0 violations and 0 pool at unload.
#[test]
fn ten_thousand_opens_on_four_threads_leave_nothing_behind() {
    const THREADS: usize = 4;
    const OPENS_PER_THREAD: usize = 2_600;
    let emulator = Emulator::load(driver_image(Arch::X64), Config::default()).unwrap();
    let volumes = [
        emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap(),
        emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume2")).unwrap(),
        emulator.mount(VolumeSpec::without_stream_contexts("\\Device\\HarddiskVolume3")).unwrap(),
    ];
    let opened = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (emulator, opened) = (&emulator, &opened);
            scope.spawn(move || {
                for round in 0..OPENS_PER_THREAD {
                    let volume = volumes[round % volumes.len()];
                    let options = OpenOptions { pid: 1000 + u32::try_from(thread).unwrap(), ..OpenOptions::default() };
                    // Shared names across threads make simultaneous first opens of one stream.
                    let path = match round % 5 {
                        0 => format!("\\shared\\file{}.txt", round % 16),
                        1 => format!("\\shared\\file{}.txt:ads", round % 16),
                        _ => format!("\\t{thread}\\file{}.dat", round % 64),
                    };
                    if round % 97 == 0 {
                        let failed = OpenOptions { final_status: fltemu::status::OBJECT_NAME_NOT_FOUND, ..options.clone() };
                        assert_eq!(emulator.open(volume, &path, &failed), Err(EmuError::CreateFailed(fltemu::status::OBJECT_NAME_NOT_FOUND)));
                        opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else if round % 7 == 0 {
                        // Hold one open while the same stream is opened again.
                        let held = emulator.open(volume, &path, &options).unwrap();
                        emulator.open_close(volume, &path, &options).unwrap();
                        emulator.close(held).unwrap();
                        opened.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
                    } else if round % 211 == 0 {
                        let paging = OpenOptions { paging_file: true, ..options.clone() };
                        emulator.open_close(volume, "\\pagefile.sys", &paging).unwrap();
                        opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        emulator.open_close(volume, &path, &options).unwrap();
                        opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert!(opened.load(std::sync::atomic::Ordering::Relaxed) >= 10_000);
    assert!(emulator.violations().is_empty(), "{:?}", emulator.violations());
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!((report.pool_bytes_outstanding, report.pool_blocks_outstanding, report.contexts_outstanding), (0, 0, 0), "{report}");
    // Sampled at every import call: the driver stays far inside a 24 KiB kernel stack.
    assert!(report.max_stack_depth > 0 && report.max_stack_depth < 12 * 1024, "{report}");
}

fn image_bytes() -> Vec<u8> {
    std::fs::read(driver_image(Arch::X64)).unwrap()
}

#[test]
fn not_a_pe_is_refused() {
    let error = Emulator::load_bytes(b"this is not a driver image, just some text bytes ......................", Config::default()).unwrap_err();
    assert!(matches!(error, EmuError::Load(LoadError::NotPe(_))), "{error:?}");
}

#[test]
fn arm64_image_is_the_wrong_machine() {
    let error = Emulator::load(driver_image(Arch::Arm64), Config::default()).unwrap_err();
    assert_eq!(error, EmuError::Load(LoadError::WrongMachine(0xAA64)));
    assert!(error.to_string().contains("wrong machine"));
}

#[test]
fn a_patched_byte_breaks_the_checksum() {
    let mut bytes = image_bytes();
    bytes[0x4E] ^= 0x20; // inside the DOS stub text
    let error = Emulator::load_bytes(&bytes, Config::default()).unwrap_err();
    assert!(matches!(error, EmuError::Load(LoadError::BadChecksum { stored, computed }) if stored != computed), "{error:?}");
}

#[test]
fn a_renamed_import_is_unresolvable_and_named() {
    let mut bytes = image_bytes();
    let needle = b"FltGetVolumeName\0";
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("ctxguard imports FltGetVolumeName");
    bytes[at + needle.len() - 2] = b'X';
    fltemu::fix_checksum(&mut bytes);
    let error = Emulator::load_bytes(&bytes, Config::default()).unwrap_err();
    assert_eq!(error, EmuError::Load(LoadError::UnresolvedImports(vec!["fltmgr.sys!FltGetVolumeNamX".into()])));
}

/// Simultaneous first opens of one stream on 4 threads, with the find-or-create window widened
/// so they really meet: ctxguard's race path (ALREADY_DEFINED → use the winner, release the
/// loser) leaves nothing behind.
#[test]
fn simultaneous_first_opens_race_cleanly() {
    const ROUNDS: usize = 40;
    let config = Config { widen_race_windows: true, ..Config::default() };
    let emulator = Emulator::load(driver_image(Arch::X64), config).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let before = emulator.calls();
    fltemu::scenario::race(&emulator, volume, ROUNDS, 4).unwrap();
    let calls = emulator.calls().since(&before);
    assert!(calls.total("FltSetStreamContext") > ROUNDS as u64, "the racers met in FltSetStreamContext: {calls:?}");
    assert!(emulator.violations().is_empty(), "{:?}", emulator.violations());
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}

/// The same storm with post-cleanup and post-close at DISPATCH_LEVEL (A9: post-ops may run
/// there): ctxguard must make no call above its documented IRQL.
#[test]
fn post_operations_at_dispatch_stay_within_irql_limits() {
    let config = Config { post_cleanup_irql: fltemu::DISPATCH_LEVEL, post_close_irql: fltemu::DISPATCH_LEVEL, ..Config::default() };
    let emulator = Emulator::load(driver_image(Arch::X64), config).unwrap();
    let volumes = [emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap()];
    fltemu::scenario::storm(&emulator, &volumes, 400, 4).unwrap();
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}

/// The loader maps each section with the protection its characteristics ask for.
#[test]
fn sections_are_mapped_with_their_protections() {
    let bytes = image_bytes();
    let parsed = fltemu::pe::ParsedImage::parse(&bytes).unwrap();
    let emulator = Emulator::load_bytes(&bytes, Config::default()).unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let permissions = |address: usize| -> String {
        maps.lines()
            .find_map(|line| {
                let (range, rest) = line.split_once(' ')?;
                let (start, end) = range.split_once('-')?;
                let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
                (address >= start && address < end).then(|| rest[..4].to_owned())
            })
            .unwrap_or_default()
    };
    let mut seen = 0;
    for section in &parsed.sections {
        let expected = match section.name.as_str() {
            ".text" => "r-xp",
            ".rdata" | ".pdata" => "r--p",
            ".data" => "rw-p",
            _ => continue,
        };
        assert_eq!(permissions(emulator.image_base() + section.virtual_address as usize), expected, "{}", section.name);
        seen += 1;
    }
    assert!(seen >= 3, "ctxguard.sys has .text, .rdata and .data");
    assert_eq!(permissions(emulator.image_base()), "r--p", "headers are read-only");
    drop(emulator.unload().unwrap());
}

const INSUFFICIENT_RESOURCES: i32 = fltemu::status::INSUFFICIENT_RESOURCES;

fn failing(function: &'static str, every: u64, times: u64) -> fltemu::Failure {
    fltemu::Failure { function, status: INSUFFICIENT_RESOURCES, every, times }
}

/// DriverEntry's error paths (E7): whichever step fails, DriverEntry returns that status, has
/// unregistered, and leaves no pool, context or descriptor behind.
#[test]
fn driver_entry_failures_unwind_completely() {
    for function in ["FltRegisterFilter", "FltBuildDefaultSecurityDescriptor", "FltCreateCommunicationPort", "FltStartFiltering"] {
        let config = Config { failures: vec![failing(function, 1, 1)], ..Config::default() };
        match Emulator::load(driver_image(Arch::X64), config) {
            Err(EmuError::DriverEntryFailed { status, report }) => {
                assert_eq!(status, INSUFFICIENT_RESOURCES, "{function}");
                assert!(report.is_clean(), "{function}: {report}");
                assert_eq!((report.pool_bytes_outstanding, report.contexts_outstanding), (0, 0), "{function}: {report}");
            }
            Ok(_) => panic!("{function} failed but DriverEntry succeeded"),
            Err(other) => panic!("{function}: {other}"),
        }
    }
}

/// An open storm while allocations, name queries and Sets keep failing: every error path
/// releases what it took (0 violations, 0 pool, 0 contexts at unload).
#[test]
fn opens_survive_injected_failures_without_leaking() {
    let config = Config {
        failures: vec![
            failing("FltAllocateContext", 7, u64::MAX),
            failing("ExAllocatePool2", 11, u64::MAX),
            failing("FltGetFileNameInformation", 5, u64::MAX),
            failing("FltSetStreamContext", 13, u64::MAX),
            failing("FltSetStreamHandleContext", 17, u64::MAX),
            failing("FltGetStreamContext", 19, u64::MAX),
        ],
        ..Config::default()
    };
    let emulator = Emulator::load(driver_image(Arch::X64), config).unwrap();
    let volumes = [
        emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap(),
        emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume2")).unwrap(),
    ];
    fltemu::scenario::storm(&emulator, &volumes, 3_000, 4).unwrap();
    let held: Vec<_> = (0..20).map(|i| emulator.open(volumes[i % 2], &format!("\\held{}.txt", i % 5), &OpenOptions::default()).unwrap()).collect();
    for file in held {
        emulator.close(file).unwrap();
    }
    let injected = emulator.calls();
    assert!(injected.total("FltAllocateContext") > 100, "the storm reached the allocation paths");
    emulator.clear_injected_failures();
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!((report.pool_bytes_outstanding, report.contexts_outstanding), (0, 0), "{report}");
}

/// Manual detach/attach cycles and finally the unload itself, while four threads keep opening
/// files: teardown drains the instance's in-flight operations before TeardownComplete (E6), and
/// nothing is leaked or used after teardown.
#[test]
fn detach_attach_and_unload_during_an_open_storm() {
    let emulator = Emulator::load(driver_image(Arch::X64), Config::default()).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let report = std::thread::scope(|scope| {
        for thread in 0..4 {
            let (emulator, stop) = (&emulator, &stop);
            scope.spawn(move || {
                let mut round = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let path = if round.is_multiple_of(3) { format!("\\shared{}.txt", round % 8) } else { format!("\\t{thread}\\{}.txt", round % 32) };
                    emulator.open_close(volume, &path, &OpenOptions::default()).unwrap();
                    round += 1;
                }
            });
        }
        for _ in 0..10 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            emulator.detach(volume).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
            assert!(emulator.attach(volume).unwrap());
        }
        let report = emulator.unload().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        report
    });
    assert!(report.is_clean(), "{report}");
    assert_eq!((report.pool_bytes_outstanding, report.contexts_outstanding), (0, 0), "{report}");
}
