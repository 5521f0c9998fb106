//! The C process/file monitor (`c-drivers/drivers/monitor.c`), written in the style of the
//! public minifilters the README surveys: clean under the default scenario in Release and Debug
//! builds (its own checks bug-check unless wild.rs's functions answer as documented), every
//! import documented, and each one-bug variant reported as exactly its leak.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod c_build;

use c_build::{CDriver, Profile, bare_run};

#[test]
fn monitor_is_clean_under_the_default_scenario_in_release_and_debug() {
    for profile in [Profile::Release, Profile::Debug] {
        let (code, text) = bare_run(&CDriver::new("monitor").profile(profile));
        assert_eq!(code, 0, "{profile:?}:\n{text}");
        assert!(text.contains("violations: 0"), "{profile:?}:\n{text}");
        assert!(text.contains("monitor: process 0000000000001092 image \\Device\\HarddiskVolume1\\Windows\\System32\\process4242.exe"), "{profile:?}: the worker examined process 4242:\n{text}");
        assert!(text.contains("monitor: provider {0F17E000-0001-4000-8000-00000000002A}"), "{profile:?}: RtlStringFromGUID:\n{text}");
        assert!(text.contains("1 processes examined, 1 exits matched"), "{profile:?}:\n{text}");
        assert!(text.contains("monitor: volume 0 \\??\\Volume{0f17e000-0000-4000-8000-000000000001}"), "{profile:?}: volume GUID names:\n{text}");
        assert!(text.contains("monitor: \\??\\FltemuMonitor -> \\Device\\FltemuMonitor"), "{profile:?}: its own link:\n{text}");
        assert!(text.contains("monitor: \\DosDevices\\C: -> \\Device\\vol1"), "{profile:?}: drive C:\n{text}");
    }
}

#[test]
fn monitor_imports_bind_with_documentation() {
    let image = CDriver::new("monitor").build();
    let report = fltemu::imports::report(&std::fs::read(image).unwrap()).unwrap();
    let undocumented: Vec<&str> = report.iter().filter(|i| !matches!(i.binding, fltemu::imports::Binding::Emulated { entry: Some(_), .. })).map(|i| i.name.as_str()).collect();
    assert!(undocumented.is_empty(), "{undocumented:?}");
}

#[test]
fn each_monitor_bug_is_caught_by_the_default_scenario() {
    let cases = [
        ("BUG_THREAD_NOT_STOPPED", "1 system thread(s) still running leaked at unload"),
        ("BUG_PROCESS_NOT_DEREFERENCED", "1 process object reference(s) not dereferenced leaked at unload"),
        ("BUG_HANDLE_NOT_CLOSED", "1 kernel handle(s) not closed leaked at unload"),
        ("BUG_IMAGE_NOTIFY_NOT_REMOVED", "1 callback registration(s) not removed leaked at unload"),
        ("BUG_DEVICE_NOT_DELETED", "1 device object(s) / symbolic link(s) not deleted leaked at unload"),
        ("BUG_VOLUME_NOT_DEREFERENCED", "1 volume object reference(s) not dereferenced leaked at unload"),
    ];
    for profile in [Profile::Release, Profile::Debug] {
        for (define, finding) in cases {
            let (code, text) = bare_run(&CDriver::new("monitor").define(define).profile(profile));
            assert_eq!(code, 1, "{define} {profile:?}:\n{text}");
            let violations: Vec<&str> = text.lines().filter(|l| l.starts_with("VIOLATION")).collect();
            assert!(violations.len() == 1 && violations[0].contains(finding), "{define} {profile:?}: want only \"{finding}\":\n{text}");
        }
    }
}
