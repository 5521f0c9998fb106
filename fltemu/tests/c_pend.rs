//! The C pend driver (`c-drivers/drivers/pend.c`): pended pre-creates resumed from deferred I/O
//! work items, post-cleanup through FltDoCompletionProcessingWhenSafe (posted in the default
//! scenario's DISPATCH_LEVEL phase), post-close completed from a generic work item. Clean under
//! the default scenario; each one-bug variant reported as exactly its violation.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod c_build;

use c_build::{CDriver, Profile, fltemu_run};
use std::time::{Duration, Instant};

/// `fltemu run` of the driver with the default scenario; `args` are extra options.
fn bare_run(driver: &CDriver, args: &[&str]) -> (i32, String) {
    fltemu_run(&driver.build(), args)
}

/// The driver's counter `name` from its unload line (`pend: creates N pended N …`).
fn counter(text: &str, name: &str) -> i64 {
    let line = text.lines().find(|l| l.contains("pend: creates")).unwrap_or_else(|| panic!("no counters line:\n{text}"));
    let words: Vec<&str> = line.split([' ', ';']).filter(|w| !w.is_empty()).collect();
    let at = words.iter().position(|w| *w == name).unwrap_or_else(|| panic!("no {name} in {line}"));
    words[at + 1].parse().unwrap_or_else(|_| panic!("{name} in {line}"))
}

#[test]
fn pend_is_clean_under_the_default_scenario_and_uses_every_path() {
    for profile in [Profile::Release, Profile::Debug] {
        let (code, text) = bare_run(&CDriver::new("pend").profile(profile), &[]);
        assert_eq!(code, 0, "{profile:?}:\n{text}");
        check_counters(&text);
    }
}

fn check_counters(text: &str) {
    assert!(text.contains("violations: 0"), "{text}");
    let text = text.to_owned();
    let creates = counter(&text, "creates");
    // Every eighth create pends; each pended create's work item ran and resumed it.
    assert_eq!(counter(&text, "pended"), creates / 8, "{text}");
    assert_eq!(counter(&text, "not-queued"), 0, "{text}");
    assert!(counter(&text, "with-context") > 0, "{text}");
    assert_eq!(counter(&text, "post-deferred"), counter(&text, "with-context"), "{text}");
    // Post-cleanup ran its safe callback inline at PASSIVE and, in the DISPATCH phase, posted.
    assert!(counter(&text, "safe-inline") > 0 && counter(&text, "safe-posted") > 0, "{text}");
    assert_eq!(counter(&text, "safe-at-passive"), counter(&text, "safe-inline") + counter(&text, "safe-posted"), "{text}");
    assert!(counter(&text, "deferred") > 0, "{text}");
    assert_eq!(counter(&text, "errors"), 0, "{text}");
}

#[test]
fn each_pend_bug_is_caught_by_the_default_scenario() {
    // The never-completed create costs one wait of a quarter of the call timeout (1 s here).
    let short = ["--call-timeout-ms", "4000"];
    let invalid_post_status = "post-operation callback: an IRP post-operation callback returns FLT_POSTOP_FINISHED_PROCESSING or FLT_POSTOP_MORE_PROCESSING_REQUIRED";
    let posted_but_finished = "FltDoCompletionProcessingWhenSafe: the post-operation callback returned FLT_POSTOP_FINISHED_PROCESSING for an operation it posted";
    let cases: [(&str, &[&str], &str); 13] = [
        ("BUG_NEVER_COMPLETED", &short, "PreCreate pended the operation and FltCompletePendedPreOperation never completed it (waited 1000 ms)"),
        ("BUG_POST_NEVER_COMPLETED", &short, "PostClose pended the operation and FltCompletePendedPostOperation never completed it (waited 1000 ms)"),
        ("BUG_POST_COMPLETED_TWICE", &[], "FltCompletePendedPostOperation: callback data not pended in a post-operation callback, or already completed"),
        ("BUG_CONTEXT_WITHOUT_CALLBACK", &[], "FltCompletePendedPreOperation: Context must be NULL unless CallbackStatus is FLT_PREOP_SUCCESS_WITH_CALLBACK"),
        ("BUG_PENDING_WITH_CONTEXT", &[], "PreCreate pre-op returned 2: CompletionContext set with FLT_PREOP_PENDING (E3, 0xF5/0x66)"),
        ("BUG_DEFERRED_FREED_TWICE", &[], "FltFreeDeferredIoWorkItem (deferred I/O work item): not a live deferred I/O work item (never allocated, or freed already)"),
        ("BUG_POSTED_BUT_FINISHED", &[], posted_but_finished),
        // Whether its SafePostCallback has returned MORE_PROCESSING_REQUIRED, and its completion
        // come, when post-cleanup returns: the same one finding.
        ("BUG_POSTED_MORE_BUT_FINISHED", &[], posted_but_finished),
        ("BUG_POSTED_BAD_STATUS", &[], invalid_post_status),
        (
            "BUG_WHEN_SAFE_IN_PRE",
            &[],
            "FltDoCompletionProcessingWhenSafe: only from a post-operation callback, with its callback data, a SafePostCallback and RetPostOperationStatus",
        ),
        ("BUG_COMPLETED_TWICE", &[], "FltCompletePendedPreOperation: callback data not pended in a pre-operation callback, or already completed"),
        ("BUG_WORK_ITEM_NOT_FREED", &[], "1 deferred I/O work item(s) not freed leaked at unload"),
        (
            "BUG_BAD_CALLBACK_STATUS",
            &[],
            "FltCompletePendedPreOperation: CallbackStatus must be FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_PREOP_SUCCESS_NO_CALLBACK or FLT_PREOP_COMPLETE",
        ),
    ];
    for (define, args, finding) in cases {
        let (code, text) = bare_run(&CDriver::new("pend").define(define), args);
        assert_eq!(code, 1, "{define}:\n{text}");
        let violations: Vec<&str> = text.lines().filter(|l| l.starts_with("VIOLATION")).collect();
        assert_eq!(violations, [format!("VIOLATION: {finding}")], "{define}:\n{text}");
    }
}

/// Every pended create is completed by its work routine before its pre-create returns
/// FLT_PREOP_PENDING (the driver waits for it): each completion is kept and used when the callback
/// pends, nothing is reported.
#[test]
fn completions_that_arrive_before_the_callback_pends_are_kept() {
    let (code, text) = bare_run(&CDriver::new("pend").define("EARLY_COMPLETION"), &[]);
    assert_eq!(code, 0, "{text}");
    check_counters(&text);
}

/// A post-cleanup that posted its work with FltDoCompletionProcessingWhenSafe and then returns
/// an invalid status is reported, and the cleanup still waits for the posted SafePostCallback
/// (which uses the callback data) before the operation ends.
#[test]
fn an_invalid_post_status_after_a_post_still_waits_for_the_posted_callback() {
    let image = CDriver::new("pend").define("BUG_POSTED_BAD_STATUS").build();
    let emu = fltemu::Emulator::load(&image, fltemu::Config::default()).expect("loads");
    let volume = emu.mount(fltemu::VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).expect("mounts");
    let file = emu.open(volume, "\\posted.txt", &fltemu::OpenOptions::default()).expect("opens");
    emu.set_post_operation_irql(Some(fltemu::DISPATCH_LEVEL));
    emu.hold_at("SafePostCallback");
    std::thread::scope(|scope| {
        let cleaner = scope.spawn(|| emu.cleanup(&file));
        assert!(emu.wait_held(Duration::from_secs(10)), "post-cleanup posted its SafePostCallback");
        std::thread::sleep(Duration::from_millis(200));
        assert!(!cleaner.is_finished(), "the cleanup ended while its posted SafePostCallback had not run");
        emu.release_hold();
        cleaner.join().expect("the cleaner returns").expect("cleans up");
    });
    emu.set_post_operation_irql(None);
    emu.close(file).expect("closes");
    let report = emu.unload().expect("unloads");
    assert_eq!(
        report.violations,
        [fltemu::Violation::InvalidParameter {
            function: "post-operation callback",
            reason: "an IRP post-operation callback returns FLT_POSTOP_FINISHED_PROCESSING or FLT_POSTOP_MORE_PROCESSING_REQUIRED",
        }],
        "{report}"
    );
    let text = report.debug_output.join("\n");
    assert_eq!(counter(&text, "safe-posted"), 1, "{text}");
    assert_eq!(counter(&text, "safe-at-passive"), 1, "{text}");
}

#[test]
fn pend_imports_bind_with_documentation() {
    let image = CDriver::new("pend").build();
    let report = fltemu::imports::report(&std::fs::read(image).unwrap()).unwrap();
    let undocumented: Vec<&str> = report.iter().filter(|i| !matches!(i.binding, fltemu::imports::Binding::Emulated { entry: Some(_), .. })).map(|i| i.name.as_str()).collect();
    assert!(undocumented.is_empty(), "{undocumented:?}");
}

/// A detach while a create is pended waits for it (E6: TeardownComplete after the instance's
/// operations drained); a create never completed is reported and ended, so the detach finishes.
#[test]
fn teardown_waits_for_a_pended_create_and_a_never_completed_one_does_not_hang_it() {
    let image = CDriver::new("pend").define("BUG_NEVER_COMPLETED").build();
    let config = fltemu::Config { call_timeout: Duration::from_secs(4), ..fltemu::Config::default() };
    let emu = fltemu::Emulator::load(&image, config).expect("loads");
    let volume = emu.mount(fltemu::VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).expect("mounts");
    let options = fltemu::OpenOptions::default();
    for i in 0..7 {
        emu.open_close(volume, &format!("\\a{i}.txt"), &options).expect("opens");
    }
    let (file, open_took, detach_took) = std::thread::scope(|scope| {
        // The eighth create pends, and its work routine never completes it.
        let opener = scope.spawn(|| {
            let started = Instant::now();
            let file = emu.open(volume, "\\pended.txt", &options);
            (file, started.elapsed())
        });
        // Its work routine has run (freeing its work item, never completing it): the create waits.
        let until = Instant::now() + Duration::from_secs(10);
        while emu.calls().total("FltFreeDeferredIoWorkItem") == 0 {
            assert!(Instant::now() < until, "the pended create's work routine never ran");
            std::thread::sleep(Duration::from_millis(1));
        }
        let started = Instant::now();
        emu.detach(volume).expect("detaches");
        let detach_took = started.elapsed();
        let (file, open_took) = opener.join().expect("the opener returns");
        (file, open_took, detach_took)
    });
    // The wait is a quarter of the call timeout; the detach began as it started and drained it.
    assert!(open_took >= Duration::from_millis(900), "{open_took:?}");
    assert!(detach_took >= Duration::from_millis(500), "detach did not wait for the pended create: {detach_took:?}");
    let file = file.expect("the abandoned create goes on without the filter");
    emu.close(file).expect("closes");
    let report = emu.unload().expect("unloads");
    assert_eq!(
        report.violations,
        [fltemu::Violation::PendedOperationNotCompleted { operation: fltemu::Operation::PreCreate, function: "FltCompletePendedPreOperation", waited_ms: 1000 }],
        "{report}"
    );
    // No bug check either (an abandoned write's buffer: stale_buffers.rs).
    assert!(report.stop.is_none(), "{report}");
}

/// FltQueueDeferredIoWorkItem for an operation whose instance started tearing down meanwhile
/// returns STATUS_FLT_DELETING_OBJECT (the driver then lets the create pass), and the detach
/// waits for that create.
#[test]
fn a_deferred_work_item_queued_during_teardown_gets_deleting_object() {
    let image = CDriver::new("pend").build();
    let emu = fltemu::Emulator::load(&image, fltemu::Config::default()).expect("loads");
    let volume = emu.mount(fltemu::VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).expect("mounts");
    let options = fltemu::OpenOptions::default();
    for i in 0..7 {
        emu.open_close(volume, &format!("\\a{i}.txt"), &options).expect("opens");
    }
    emu.hold_at("FltQueueDeferredIoWorkItem");
    std::thread::scope(|scope| {
        // The eighth pre-create stops at FltQueueDeferredIoWorkItem.
        let opener = scope.spawn(|| emu.open(volume, "\\queued.txt", &options));
        assert!(emu.wait_held(Duration::from_secs(10)), "the pre-create reached FltQueueDeferredIoWorkItem");
        let detacher = scope.spawn(|| emu.detach(volume));
        // TeardownStart has begun once the detach waits for the create to drain.
        std::thread::sleep(Duration::from_millis(300));
        assert!(!detacher.is_finished(), "the detach waits for the create in flight");
        emu.release_hold();
        let file = opener.join().expect("the opener returns").expect("the create passes");
        detacher.join().expect("the detacher returns").expect("detaches");
        emu.close(file).expect("closes");
    });
    let report = emu.unload().expect("unloads");
    assert!(report.is_clean(), "{report}");
    let text = report.debug_output.join("\n");
    assert_eq!(counter(&text, "not-queued"), 1, "{text}");
    assert_eq!(counter(&text, "pended"), 0, "{text}");
}

/// Injected failures of FltAllocateDeferredIoWorkItem and FltQueueDeferredIoWorkItem take the
/// driver's do-it-inline path; the default scenario stays clean.
#[test]
fn injected_deferred_work_item_failures_take_the_inline_path() {
    let image = CDriver::new("pend").build();
    let emu = fltemu::Emulator::load(&image, fltemu::Config::default()).expect("loads");
    assert!(emu.inject_failure("FltAllocateDeferredIoWorkItem", 0, 3, u64::MAX));
    assert!(emu.inject_failure("FltQueueDeferredIoWorkItem", fltemu::status::INSUFFICIENT_RESOURCES, 2, u64::MAX));
    let run = fltemu::scenario::run_script(&emu, fltemu::scenario::scenario("default").expect("default scenario"), 4).expect("runs");
    assert!(run.report.is_clean(), "{}", run.report);
    let text = run.report.debug_output.join("\n");
    let (creates, pended, not_queued) = (counter(&text, "creates"), counter(&text, "pended"), counter(&text, "not-queued"));
    assert!(pended > 0 && not_queued > 0 && pended + not_queued < creates / 8, "{text}");
}
