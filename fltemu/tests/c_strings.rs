//! Counted strings, their buffers and C strings at odd addresses (`c-drivers/drivers/oddstr.c`):
//! x64 Windows reads them without a fault, so fltemu must too. Under `cargo test` the fltemu
//! binary is a debug build (the dev profile keeps debug assertions), where an aligned read or an
//! aligned slice over an odd pointer fails a precondition check and aborts the whole process;
//! the routines' results must also be those of the DDI pages.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod c_build;

use c_build::{CDriver, Profile};
use std::process::Command;

fn bare_run(driver: &CDriver) -> (i32, String) {
    let image = driver.build();
    let output = Command::new(env!("CARGO_BIN_EXE_fltemu")).arg("run").arg(&image).output().expect("fltemu runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn string_routines_read_and_write_odd_addresses_without_aborting() {
    for profile in [Profile::Release, Profile::Debug] {
        let (code, text) = bare_run(&CDriver::new("oddstr").profile(profile));
        assert_eq!(code, 0, "{profile:?}:\n{text}");
        assert!(text.contains("violations: 0"), "{profile:?}:\n{text}");
        for line in [
            "oddstr: source = \\Dir\\File.TXT (\\Dir\\File.TXT)",
            "oddstr: copy = \\Dir\\File.TXT, length 26",
            "oddstr: compare insensitive 0, sensitive -1, equal 1, prefix 1, suffix 1",
            "oddstr: append 0x00000000 0x00000000 = \\Dir\\File.TXT:ads;1",
            "oddstr: ansi 0x00000000 = \\Dir\\File.TXT",
            "oddstr: upcase 0x00000000 = \\DIR\\FILE.TXT",
            "oddstr: expression 1 0",
            "oddstr: integer 0x00000000 = 31",
            "oddstr: init = init (8/10)",
            "oddstr: crt 0 3 0 = crt",
        ] {
            assert!(text.lines().any(|l| l.ends_with(line)), "{profile:?}: want \"{line}\":\n{text}");
        }
    }
}
