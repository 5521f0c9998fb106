//! The C ctx-style driver (`c-drivers/drivers/ctx.c`): clean under the default scenario in
//! Release and Debug builds; each one-bug variant reported as exactly its violation.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod c_build;

use c_build::{CDriver, Profile, bare_run};
use std::process::Command;


#[test]
fn ctx_is_clean_under_the_default_scenario_in_release_and_debug() {
    for profile in [Profile::Release, Profile::Debug] {
        let (code, text) = bare_run(&CDriver::new("ctx").profile(profile));
        assert_eq!(code, 0, "{profile:?}:\n{text}");
        assert!(text.contains("(scenario default (the default))") && text.contains("violations: 0"), "{profile:?}:\n{text}");
    }
}

#[test]
fn ctx_imports_bind_with_documentation() {
    let image = CDriver::new("ctx").build();
    let report = fltemu::imports::report(&std::fs::read(image).unwrap()).unwrap();
    let undocumented: Vec<&str> = report.iter().filter(|i| !matches!(i.binding, fltemu::imports::Binding::Emulated { entry: Some(_), .. })).map(|i| i.name.as_str()).collect();
    assert!(undocumented.is_empty(), "{undocumented:?}");
}

#[test]
fn each_ctx_bug_is_caught_by_the_default_scenario() {
    let cases = [
        ("BUG_LEAK_NAME_INFO", "file name information structures leaked"),
        ("BUG_VOLUME_NOT_DEREFERENCED", "3 volume object reference(s) not dereferenced leaked at unload"),
        ("BUG_RESOURCE_NOT_DELETED", "ExFreePoolWithTag (ERESOURCE): freed pool holds an ERESOURCE never deleted"),
        ("BUG_FILE_CONTEXT_LEAKED", "leaked at unload: File size 4 tag"),
        ("BUG_NAME_OVER_RELEASED", "FltReleaseFileNameInformation released too often (0xF5/0x68)"),
        ("BUG_LOCK_STALE_DATA", "FltLockUserBuffer: not callback data of a running operation"),
        ("BUG_QUERY_IN_PRE_CREATE", "FltQueryInformationFile: FILE_OBJECT not opened"),
    ];
    for profile in [Profile::Release, Profile::Debug] {
        for (define, finding) in cases {
            let (code, text) = bare_run(&CDriver::new("ctx").define(define).profile(profile));
            assert_eq!(code, 1, "{define} {profile:?}:\n{text}");
            let violations: Vec<&str> = text.lines().filter(|l| l.starts_with("VIOLATION")).collect();
            assert!(!violations.is_empty() && violations.iter().all(|l| l.contains(finding)), "{define} {profile:?}: want only \"{finding}\":\n{text}");
        }
    }
}

/// The README's shell example, run as written against the C ctx driver (fltemu on PATH).
#[test]
fn the_readme_script_example_runs_clean_on_ctx() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let begin = readme.find("<!-- script-example:begin -->\n```sh\n").expect("begin marker") + "<!-- script-example:begin -->\n```sh\n".len();
    let end = readme.find("```\n<!-- script-example:end -->").expect("end marker");
    let image = CDriver::new("ctx").build();
    let dir = std::env::temp_dir().join(format!("fltemu-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&image, dir.join("myfilter.sys")).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_fltemu")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("sh").arg("-ec").arg(&readme[begin..end]).current_dir(&dir).env("PATH", path).output().expect("sh runs");
    let report = std::fs::read_to_string(dir.join("report.json")).unwrap_or_default();
    std::fs::remove_dir_all(&dir).ok();
    assert!(output.status.success(), "{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(report.contains("\"violations\":[]") && report.contains("storm 500"), "{report}");
}
