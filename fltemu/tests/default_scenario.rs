//! A bare `fltemu run X.sys` (the default scenario) catches every one-bug fixture and is clean
//! on the correct ones.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod fixture_build;

use fixture_build::fixture;
use std::path::Path;
use std::process::Command;

fn bare_run(image: &Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fltemu")).arg("run").arg(image).args(["--call-timeout-ms", "3000"]).output().expect("fltemu runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

/// Every one-bug feature of `fltemu/fixture-driver`, the exit status of a bare run, and what its
/// report must say. `bug-touch-user-buffer` is absent: it needs a port client sending from an
/// inaccessible buffer, which the default scenario does not have.
const BUGS: &[(&str, i32, &str)] = &[
    ("bug-leak-on-already-defined", 1, "context(s) leaked at unload: Stream"),
    ("bug-double-release", 1, "release took a linked StreamHandle context"),
    ("bug-get-not-released", 1, "context(s) leaked at unload: Stream"),
    ("bug-paged-volume-context", 1, "Volume context allocated from Paged pool"),
    ("bug-no-unregister-on-failed-entry", 2, "without calling FltUnregisterFilter"),
    ("bug-unresolvable-import", 2, "fltmgr.sys!FltTagFile"),
    ("bug-fault-in-driver-entry", 2, "KMODE_EXCEPTION_NOT_HANDLED: exception 0xc0000005 at image RVA"),
    ("bug-get-at-dispatch", 1, "FltGetStreamHandleContext called at IRQL 2"),
    ("bug-use-after-free", 1, "used a freed StreamHandle context"),
    ("bug-not-a-context", 1, "which is not a context"),
    ("bug-completion-context", 1, "CompletionContext set without a post-operation callback"),
    ("bug-pool-leak", 1, "pool leaked at unload"),
    ("bug-deadlock-in-driver-entry", 2, "did not return within 3000 ms"),
    ("bug-deep-stack", 1, "kernel stacks have 24576"),
    ("bug-panic-in-driver-entry", 2, "bug check 0x46585450"),
    ("bug-work-item-leak", 1, "generic work items never freed"),
    ("bug-set-in-pre-create", 1, "FltSetStreamHandleContext: FILE_OBJECT not opened"),
    ("bug-forget-replaced-context", 1, "context(s) leaked at unload: StreamHandle"),
    ("bug-forget-deleted-context", 1, "context(s) leaked at unload: StreamHandle"),
    ("bug-guard-parked-in-static", 1, "context(s) leaked at unload: StreamHandle"),
];

#[test]
fn a_bare_run_catches_every_one_bug_fixture() {
    let mut missed = Vec::new();
    for (feature, code, finding) in BUGS {
        let (got, text) = bare_run(&fixture(Some(feature)));
        assert!(text.contains("(scenario default (the default))") || got == 2, "{feature} ran the default scenario:\n{text}");
        if got != *code || !text.contains(finding) {
            missed.push(format!("{feature}: exit {got} (want {code}), want \"{finding}\":\n{text}"));
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n\n"));
}

#[test]
fn a_bare_run_is_clean_on_the_correct_fixtures() {
    for feature in [None, Some("refuse-detach"), Some("with-work-item"), Some("with-port")] {
        let (code, text) = bare_run(&fixture(feature));
        assert_eq!(code, 0, "{feature:?}:\n{text}");
        assert!(text.contains("violations: 0") && text.contains("ran: race 40 rounds"), "{feature:?}:\n{text}");
        let detach = if feature == Some("refuse-detach") { "detach vol2: refused by the filter" } else { "ran: detach vol2" };
        assert!(text.contains(detach), "{feature:?}:\n{text}");
    }
}
