//! The `fltemu` command: exit codes, scenarios, scripts and JSON output.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod fixture_build;

use fixture_build::fixture;
use std::process::Command;

fn fltemu(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fltemu")).args(args).output().expect("fltemu runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn every_scenario_of_the_correct_fixture_exits_zero() {
    let image = fixture(None);
    for scenario in ["default", "load-unload", "open-storm", "race", "teardown-with-open-files", "unload-with-open-files", "unload-with-referenced-contexts"] {
        let (code, text) = fltemu(&["run", image.to_str().unwrap(), "--scenario", scenario, "--threads", "4"]);
        assert_eq!(code, 0, "{scenario}:\n{text}");
        assert!(text.contains("violations: 0"), "{scenario}:\n{text}");
    }
}

#[test]
fn a_violation_exits_one_and_json_names_it() {
    let image = fixture(Some("bug-get-not-released"));
    let (code, text) = fltemu(&["run", image.to_str().unwrap(), "--scenario", "open-storm", "--json"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.starts_with('{') && text.trim_end().ends_with('}'), "{text}");
    assert!(text.contains("context(s) leaked at unload: Stream"), "{text}");
}

#[test]
fn a_seeded_run_that_fails_prints_its_seed() {
    let image = fixture(Some("bug-get-not-released"));
    let (code, text) = fltemu(&["run", image.to_str().unwrap(), "--scenario", "race", "--threads", "4", "--seed", "0x2A"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("schedule seed: 42 (FLTEMU_SCHEDULE_SEED=42 replays its delays)"), "{text}");
    let (code, text) = fltemu(&["run", image.to_str().unwrap(), "--seed", "42", "--scenario", "race", "--json"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("\"schedule_seed\":42"), "{text}");
    let (code, text) = fltemu(&["run", image.to_str().unwrap(), "--seed", "forty-two"]);
    assert_eq!(code, 64, "{text}");
}

#[test]
fn scripts_run_line_by_line() {
    let image = fixture(None);
    let script = std::env::temp_dir().join(format!("fltemu-cli-{}.txt", std::process::id()));
    std::fs::write(&script, "# a failed create, a held open, a detach\nmount v1\nopen a v1 \\a.txt pid=7\nopen b v1 \\missing.txt status=0xC0000034\ndetach v1\nclose a\n").unwrap();
    let (code, text) = fltemu(&["run", image.to_str().unwrap(), "--script", script.to_str().unwrap()]);
    std::fs::remove_file(&script).ok();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("open b = \\missing.txt: failed 0xc0000034"), "{text}");
    assert!(text.contains("unload (implicit)"), "{text}");
}

#[test]
fn bad_images_and_crashes_exit_two_with_the_cause() {
    let not_pe = std::env::temp_dir().join(format!("fltemu-not-pe-{}.sys", std::process::id()));
    std::fs::write(&not_pe, b"not a driver").unwrap();
    let (code, text) = fltemu(&["run", not_pe.to_str().unwrap()]);
    std::fs::remove_file(&not_pe).ok();
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not a PE image"), "{text}");

    let (code, text) = fltemu(&["run", fixture(Some("bug-unresolvable-import")).to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("fltmgr.sys!FltTagFile"), "{text}");

    let (code, text) = fltemu(&["run", fixture(Some("bug-fault-in-driver-entry")).to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    // An access fault nobody handles is KMODE_EXCEPTION_NOT_HANDLED, as on Windows.
    assert!(text.contains("bug check 0x0000001e (0xc0000005") && text.contains("KMODE_EXCEPTION_NOT_HANDLED") && text.contains("image RVA"), "{text}");

    let (code, text) = fltemu(&["run", fixture(Some("bug-no-unregister-on-failed-entry")).to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("without calling FltUnregisterFilter"), "{text}");
}

#[test]
fn usage_errors_exit_64() {
    assert_eq!(fltemu(&["run"]).0, 64);
    assert_eq!(fltemu(&["run", "x.sys", "--scenario", "no-such-scenario"]).0, 64);
    assert_eq!(fltemu(&[]).0, 64);
}
