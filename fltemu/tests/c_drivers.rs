//! fltemu's C fixture drivers (`c-drivers/`), built by clang-cl + lld-link like an MSVC
//! minifilter, run through the `fltemu` command: clean ones exit 0, each bug variant is reported
//! as its exact bug check or violation.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod c_build;

use c_build::{CDriver, Profile};
use std::process::Command;

fn fltemu(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fltemu")).args(args).output().expect("fltemu runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

fn run(driver: &CDriver, scenario: &str) -> (i32, String) {
    let image = driver.build();
    fltemu(&["run", image.to_str().expect("UTF-8 path"), "--scenario", scenario, "--threads", "2"])
}

#[test]
fn passthrough_is_clean_in_release_and_debug_builds() {
    for profile in [Profile::Release, Profile::Debug] {
        let (code, text) = run(&CDriver::new("passthrough").profile(profile), "open-storm");
        assert_eq!(code, 0, "{profile:?}:\n{text}");
        assert!(text.contains("violations: 0"), "{profile:?}:\n{text}");
    }
}
