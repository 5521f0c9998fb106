//! fltemu's import binding and emulated surface against `fltemu/surface-fixture`: imports are
//! known before DriverEntry (all missing ones listed, ordinals refused, hal.dll forwarded), and
//! each object type's leak and wrong-release checks fire on the one-bug variants.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod fixture_build;

use std::path::{Path, PathBuf};
use std::process::Command;

use fltemu::imports::Binding;
use fltemu::{Config, EmuError, Emulator, LoadError};

/// Builds the surface fixture with `features` and returns a test-signed copy of the image named
/// after the variant.
fn surface(features: &[&str]) -> PathBuf {
    let built = fixture_build::build("fltemu-surface-fixture", "fltemu_surface_fixture", "surface-fixture", "unsigned", features);
    let name = if features.is_empty() { "default".to_owned() } else { features.join("+") };
    let signed = built.with_file_name(format!("surface-{name}.sys"));
    sign(&built, &signed, built.parent().expect("the image is in a directory"));
    signed
}

/// Test-signs `image` into `signed` (Authenticode SHA-256, a throw-away certificate made once in
/// `directory`): the fixture is linked /INTEGRITYCHECK, which PsSetCreateProcessNotifyRoutineEx
/// requires, and an image with FORCE_INTEGRITY and no signature is one Windows refuses to load.
fn sign(image: &Path, signed: &Path, directory: &Path) {
    let (cert, key) = (directory.join("surface-test.crt"), directory.join("surface-test.key"));
    if !cert.exists() || !key.exists() {
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=fltemu surface fixture (test only)", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl starts (./make.sh installs it)");
        assert!(made.status.success(), "openssl req failed: {}", String::from_utf8_lossy(&made.stderr));
    }
    std::fs::remove_file(signed).ok();
    let output = Command::new("osslsigncode")
        .args(["sign", "-h", "sha256", "-certs"])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .arg("-in")
        .arg(image)
        .arg("-out")
        .arg(signed)
        .output()
        .expect("osslsigncode starts (./make.sh installs it)");
    assert!(output.status.success(), "osslsigncode sign failed: {}", String::from_utf8_lossy(&output.stderr));
    // The checksum field is outside the Authenticode hash; fltemu checks it like the loader.
    let mut bytes = std::fs::read(signed).expect("read the signed image");
    fltemu::fix_checksum(&mut bytes);
    std::fs::write(signed, bytes).expect("write the signed image");
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

/// A bare default run of the surface fixture with `feature`: its exit status and output.
fn bare(feature: Option<&str>) -> (i32, String) {
    let image = surface(feature.as_slice());
    fltemu(&["run", image.to_str().unwrap()])
}

#[test]
fn the_correct_surface_fixture_is_clean_under_the_default_scenario() {
    let (code, text) = bare(None);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("violations: 0") && text.contains("ran: process 4242 create"), "{text}");
}

/// Each planted misuse and what the report must say.
const SURFACE_BUGS: &[(&str, &str)] = &[
    ("bug-resource-not-deleted", "1 ERESOURCE(s) not deleted leaked at unload"),
    ("bug-resource-release-unowned", "ExReleaseResourceLite (ERESOURCE): released by a thread that does not hold it"),
    ("bug-resource-without-critical-region", "ExAcquireResourceExclusiveLite (ERESOURCE): normal kernel APCs enabled"),
    ("bug-volume-not-dereferenced", "3 volume object reference(s) not dereferenced leaked at unload"),
    ("bug-process-not-dereferenced", "process object reference(s) not dereferenced leaked at unload"),
    ("bug-image-name-leaked", "pool leaked at unload: tag 'SeIn'"),
    ("bug-notify-not-removed", "1 process notify routine(s) not removed leaked at unload"),
    ("bug-mdl-leaked", "MDL(s) not freed leaked at unload"),
    ("bug-lookaside-not-deleted", "1 lookaside list(s) not deleted leaked at unload"),
    ("bug-fast-mutex-recursive", "ExAcquireFastMutex (fast/guarded mutex): acquired again by its owner"),
    ("bug-critical-region-unbalanced", "a driver callback returned inside a critical region"),
    ("bug-name-info-leaked", "file name information structures leaked"),
    ("bug-name-info-over-released", "FltReleaseFileNameInformation released too often (0xF5/0x68)"),
];

#[test]
fn each_surface_misuse_is_caught_by_the_default_scenario() {
    let mut missed = Vec::new();
    for (feature, finding) in SURFACE_BUGS {
        let (code, text) = bare(Some(feature));
        let kinds: std::collections::BTreeSet<&str> = text.lines().filter(|l| l.starts_with("VIOLATION")).collect();
        if code != 1 || !text.contains(finding) || kinds.iter().any(|line| !line.contains(finding)) {
            missed.push(format!("{feature}: exit {code}, want only \"{finding}\":\n{text}"));
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n\n"));
}

#[test]
fn the_surface_fixture_counts_what_it_calls_per_operation() {
    let emulator = Emulator::load(surface(&[]), Config::default()).unwrap();
    let volume = emulator.mount(fltemu::VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    emulator.notify_process(77, 1000, true).unwrap();
    emulator.open_close(volume, "\\dir\\a.txt", &fltemu::OpenOptions::default()).unwrap();
    let calls = emulator.calls();
    for function in ["FltAcquireResourceExclusive", "ExAcquireResourceSharedLite", "KeWaitForSingleObject", "ExAcquireFastMutex", "KeAcquireGuardedMutex", "PsLookupProcessByProcessId", "SeLocateProcessImageName", "IoAllocateMdl", "MmMapLockedPagesSpecifyCache", "FltIsDirectory"] {
        assert_eq!(calls.get(fltemu::Operation::PostCreate, function), 1, "{function}");
    }
    assert_eq!(calls.get(fltemu::Operation::InstanceSetup, "FltGetVolumeProperties"), 1);
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn a_cancelled_open_fails_with_the_filters_status_and_leaves_nothing_open() {
    let emulator = Emulator::load(surface(&[]), Config::default()).unwrap();
    let volume = emulator.mount(fltemu::VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let before = emulator.calls();
    assert_eq!(emulator.open(volume, "\\deny.txt", &fltemu::OpenOptions::default()), Err(EmuError::CreateFailed(fltemu::status::ACCESS_DENIED)));
    assert_eq!(emulator.open_file_objects(volume, "\\deny.txt"), 0, "FltCancelFileOpen closed the FILE_OBJECT below the filter");
    let calls = emulator.calls().since(&before);
    assert_eq!(calls.get(fltemu::Operation::PreCreate, "FltRequestOperationStatusCallback"), 1);
    assert_eq!(calls.get(fltemu::Operation::PostCreate, "FltCancelFileOpen"), 1);
    assert_eq!(calls.total("FltGetRequestorProcess"), 1);
    emulator.open_close(volume, "\\ok.txt", &fltemu::OpenOptions::default()).unwrap();
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    // One emulator per process: the next load waits until this one is dropped.
    drop(emulator);

    let emulator = Emulator::load(surface(&["bug-cancel-open-success"]), Config::default()).unwrap();
    let volume = emulator.mount(fltemu::VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    assert_eq!(emulator.open(volume, "\\deny.txt", &fltemu::OpenOptions::default()), Err(EmuError::CreateFailed(fltemu::status::ACCESS_DENIED)));
    assert_eq!(
        emulator.violations(),
        vec![fltemu::Violation::InvalidParameter { function: "FltCancelFileOpen", reason: "the create's IoStatus was left a success status" }]
    );
    drop(emulator.unload().unwrap());
}
