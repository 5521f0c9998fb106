//! fltemu's seeded schedule: the same seed makes the same delay decisions at the same points,
//! another seed other ones, no seed none; a report that is not clean names its seed.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;

use std::path::PathBuf;

use fltemu::schedule::Decision;
use fltemu::{Config, Emulator, OpenOptions, VolumeSpec};
use support::{Arch, build_kernel_image};

fn fixture(feature: Option<&str>) -> PathBuf {
    let features: Vec<&str> = feature.into_iter().collect();
    build_kernel_image("fltemu-fixture-driver", Arch::X64, &features, "fltemu_fixture_driver")
}

/// Runs `threads` threads of open/close cycles, each on its own files (so every thread's calls
/// are the same from run to run), and returns the decisions sorted by (lane, step, site).
fn decisions(seed: Option<u64>, threads: usize) -> Vec<Decision> {
    let config = Config { schedule_seed: seed, ..Config::default() };
    let emulator = Emulator::load(fixture(None), config).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let emulator = &emulator;
            scope.spawn(move || {
                for index in 0..40 {
                    emulator.open_close(volume, &format!("\\t{thread}\\f{}.txt", index % 8), &OpenOptions::default()).unwrap();
                }
            });
        }
    });
    let mut trace = emulator.schedule_trace();
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    trace.sort();
    trace
}

#[test]
fn the_same_seed_makes_the_same_decisions() {
    let first = decisions(Some(0x5EED), 1);
    assert!(first.len() > 50, "a seeded run delays some points: {}", first.len());
    assert_eq!(first, decisions(Some(0x5EED), 1), "one thread: the same decisions");
    assert_ne!(first, decisions(Some(0x5EEE), 1), "another seed: other decisions");
    let threaded = decisions(Some(0x5EED), 4);
    assert_eq!(threaded, decisions(Some(0x5EED), 4), "four threads: each job gets the same decisions");
    assert!(decisions(None, 1).is_empty(), "no seed, no delays");
}

#[test]
fn a_report_that_is_not_clean_names_its_seed() {
    let config = Config { schedule_seed: Some(42), ..Config::default() };
    let emulator = Emulator::load(fixture(Some("bug-double-release")), config).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    emulator.open_close(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    let report = emulator.unload().unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.schedule_seed, Some(42));
    assert!(report.to_string().contains("FLTEMU_SCHEDULE_SEED=42"), "{report}");
}
