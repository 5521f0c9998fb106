//! Smoke test: ctxguard.sys loads and unloads in fltemu.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;

use fltemu::{Config, Emulator, OpenOptions, VolumeSpec};
use support::{Arch, driver_image};

#[test]
fn load_open_close_unload() {
    let emulator = Emulator::load(driver_image(Arch::X64), Config::default()).expect("ctxguard.sys loads");
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    assert!(emulator.is_attached(volume));
    let file = emulator.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    emulator.cleanup(&file).unwrap();
    emulator.close(file).unwrap();
    let report = emulator.unload().unwrap();
    println!("{report}");
    assert!(report.is_clean(), "{report}");
}
