//! fltemu's import binding and emulated surface against `fltemu/surface-fixture`: imports are
//! known before DriverEntry (all missing ones listed, ordinals refused, hal.dll forwarded), and
//! each object type's leak and wrong-release checks fire on the one-bug variants.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use fltemu::imports::Binding;
use fltemu::{Config, EmuError, Emulator, LoadError};

/// Builds the surface fixture with `features` (one shared target directory, so only the crate
/// itself is rebuilt per variant) and returns a copy of the image named after the variant.
fn surface(features: &[&str]) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _serial = BUILD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let outer = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
    let target = outer.join("nested").join("surface-fixture");
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(&workspace)
        .args(["build", "--release", "--quiet", "-p", "fltemu-surface-fixture", "--target", "x86_64-pc-windows-msvc", "--target-dir"])
        .arg(&target);
    if !features.is_empty() {
        command.arg("--features").arg(features.join(","));
    }
    assert!(command.status().expect("cargo starts").success(), "building the surface fixture with {features:?} failed");
    let built = target.join("x86_64-pc-windows-msvc/release/fltemu_surface_fixture.dll");
    let name = if features.is_empty() { "default".to_owned() } else { features.join("+") };
    let copy = target.join(format!("surface-{name}.sys"));
    std::fs::copy(&built, &copy).expect("copy the image");
    copy
}

fn fltemu(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fltemu")).args(args).output().expect("fltemu runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

const MISSING: [&str; 4] = ["ntoskrnl.exe!FxNoSuchKernelFunction", "ntoskrnl.exe!#7", "fltmgr.sys!FltTagFile", "cng.sys!BCryptGenRandom"];

#[test]
fn every_missing_import_is_listed_before_driver_entry() {
    let image = surface(&["unknown-imports"]);
    let error = Emulator::load(&image, Config::default()).unwrap_err();
    assert_eq!(error, EmuError::Load(LoadError::UnresolvedImports(MISSING.iter().map(|s| (*s).to_owned()).collect())));
    let (code, text) = fltemu(&["run", image.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("4 unimplemented import(s), refused before DriverEntry"), "{text}");
    for name in MISSING {
        assert!(text.lines().any(|line| line.trim() == name), "{name} on a line of its own:\n{text}");
    }
    assert!(!text.contains("ran:"), "nothing ran: {text}");
}

#[test]
fn imports_command_names_each_import_with_its_source_or_why_it_is_missing() {
    let image = surface(&["unknown-imports"]);
    let (code, text) = fltemu(&["imports", image.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("4 missing"), "{text}");
    assert!(text.contains("missing   ntoskrnl.exe!#7") && text.contains("import by ordinal"), "{text}");
    assert!(text.contains("missing   cng.sys!BCryptGenRandom") && text.contains("module not emulated"), "{text}");
    let register = text.lines().find(|l| l.contains("fltmgr.sys!FltRegisterFilter")).expect("listed");
    assert!(register.starts_with("emulated") && register.contains("https://learn.microsoft.com/windows-hardware/drivers/ddi/fltkernel/nf-fltkernel-fltregisterfilter"), "{register}");
    let forwarded = text.lines().find(|l| l.contains("hal.dll!KeQueryPerformanceCounter")).expect("listed");
    assert!(forwarded.starts_with("emulated") && forwarded.contains("[forwarded by hal.dll]"), "{forwarded}");
}

#[test]
fn a_hal_import_binds_through_the_forwarder_and_runs() {
    let image = surface(&[]);
    let report = fltemu::imports::report(&std::fs::read(&image).unwrap()).unwrap();
    assert!(report.iter().all(|i| matches!(i.binding, Binding::Emulated { entry: Some(_), .. })), "{report:?}");
    let (code, text) = fltemu(&["imports", image.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    let emulator = Emulator::load(&image, Config::default()).unwrap();
    let volume = emulator.mount(fltemu::VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    emulator.open_close(volume, "\\a.txt", &fltemu::OpenOptions::default()).unwrap();
    assert_eq!(emulator.calls().get(fltemu::Operation::PreCreate, "KeQueryPerformanceCounter"), 1);
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}
