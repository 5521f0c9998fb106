//! fltemu's verifier against the fixture drivers: each planted bug is reported as its exact
//! violation, and the correct fixture runs clean.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;

use std::path::PathBuf;

use fltemu::{Config, ContextType, EmuError, Emulator, OpenOptions, PoolKind, Tag, Violation, VolumeSpec};
use support::{Arch, build_kernel_image};

fn fixture(feature: Option<&str>) -> PathBuf {
    let features: Vec<&str> = feature.into_iter().collect();
    build_kernel_image("fltemu-fixture-driver", Arch::X64, &features, "fltemu_fixture_driver")
}

fn tag(text: [u8; 4]) -> Tag {
    Tag(u32::from_le_bytes(text))
}

/// Opens and closes a few files (two opens of one stream overlap) on two volumes.
fn exercise(emulator: &Emulator) {
    let ntfs = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let other = emulator.mount(VolumeSpec::without_stream_contexts("\\Device\\HarddiskVolume2")).unwrap();
    let first = emulator.open(ntfs, "\\a.txt", &OpenOptions::default()).unwrap();
    let second = emulator.open(ntfs, "\\a.txt", &OpenOptions::default()).unwrap();
    let ads = emulator.open(ntfs, "\\a.txt:ads", &OpenOptions::default()).unwrap();
    let plain = emulator.open(other, "\\b.txt", &OpenOptions::default()).unwrap();
    for file in [first, second, ads, plain] {
        emulator.cleanup(&file).unwrap();
        emulator.close(file).unwrap();
    }
}

#[test]
fn correct_fixture_runs_clean_and_frees_everything() {
    let emulator = Emulator::load(fixture(None), Config::default()).unwrap();
    let ntfs = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    assert!(emulator.instance_context(ntfs).is_some(), "InstanceSetup linked an instance context");
    let first = emulator.open(ntfs, "\\a.txt", &OpenOptions::default()).unwrap();
    let stream = emulator.stream_context(&first).expect("post-create linked a stream context");
    assert_eq!(stream.refcount, 1, "only the link holds the stream context between operations");
    assert_eq!(stream.pool, PoolKind::NonPaged, "fltctx allocates every context from NonPagedPoolNx");
    let second = emulator.open(ntfs, "\\a.txt", &OpenOptions::default()).unwrap();
    assert_eq!(emulator.stream_context(&second).unwrap().address, stream.address, "one stream context per stream");
    assert_ne!(emulator.stream_handle_context(&first).unwrap().address, emulator.stream_handle_context(&second).unwrap().address);
    assert_eq!(emulator.open_file_objects(ntfs, "\\a.txt"), 2);
    emulator.close(first).unwrap();
    assert_eq!(emulator.context_refcount(stream.address), Some(1), "the stream lives while a FILE_OBJECT is open");
    emulator.close(second).unwrap();
    assert_eq!(emulator.context_refcount(stream.address), None, "the last close tore the stream down (B9)");
    exercise(&emulator);
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.contexts_outstanding, 0);
}

#[test]
fn replace_at_cleanup_and_delete_at_close_release_what_they_hand_back() {
    let emulator = Emulator::load(fixture(None), Config::default()).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let file = emulator.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    let opened = emulator.stream_handle_context(&file).expect("post-create attached a stream-handle context");
    let before = emulator.calls();
    emulator.cleanup(&file).unwrap();
    let cleanup = emulator.calls().since(&before);
    assert_eq!(cleanup.total("FltSetStreamHandleContext"), 1, "cleanup replaced the handle context");
    let replaced = emulator.stream_handle_context(&file).expect("the replacement is attached");
    assert_ne!(replaced.address, opened.address);
    assert_eq!(emulator.context_refcount(opened.address), None, "the replaced context was released to zero (B4)");
    assert_eq!(replaced.refcount, 1, "only the link holds the replacement");
    let before = emulator.calls();
    emulator.close(file).unwrap();
    assert_eq!(emulator.calls().since(&before).total("FltDeleteStreamHandleContext"), 1, "close deleted the handle context");
    assert_eq!(emulator.context_refcount(replaced.address), None, "the deleted context was released to zero (B7)");
    assert_eq!(emulator.live_context_count(ContextType::StreamHandle), 0);
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}

/// Opens, cleans up and closes one file, then unloads: the report of a fixture variant.
fn open_cleanup_close_unload(feature: &str) -> fltemu::Report {
    let emulator = Emulator::load(fixture(Some(feature)), Config::default()).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let file = emulator.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    emulator.cleanup(&file).unwrap();
    emulator.close(file).unwrap();
    emulator.unload().unwrap()
}

#[test]
fn a_replaced_context_not_released_is_a_leak() {
    let report = open_cleanup_close_unload("bug-forget-replaced-context");
    assert_eq!(
        report.violations,
        vec![Violation::ContextLeaked { context_type: ContextType::StreamHandle, size: 32, tag: tag(*b"FxSh"), refcount: 1, count: 1 }],
        "{report}"
    );
}

#[test]
fn a_deleted_context_not_released_is_a_leak() {
    let report = open_cleanup_close_unload("bug-forget-deleted-context");
    assert_eq!(
        report.violations,
        vec![Violation::ContextLeaked { context_type: ContextType::StreamHandle, size: 32, tag: tag(*b"FxSh"), refcount: 1, count: 1 }],
        "{report}"
    );
}

#[test]
fn a_guard_parked_in_a_static_is_reported_after_unregister() {
    let emulator = Emulator::load(fixture(Some("bug-guard-parked-in-static")), Config::default()).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    emulator.open_close(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    let report = emulator.unload().unwrap();
    assert!(
        report.violations.iter().any(|v| matches!(v, Violation::ContextLeaked { context_type: ContextType::StreamHandle, .. })),
        "{report}"
    );
    let output = emulator.debug_output().join("");
    assert!(output.contains("1 context guards outlived FltUnregisterFilter"), "fltctx::unregister counted the parked guard: {output}");
}

#[test]
fn dropping_the_last_reference_inside_a_registry_visit_neither_deadlocks_nor_leaks() {
    // Without fltctx deferring the release, the cleanup it triggers would wait for the
    // registry lock its own thread holds: a hang, which this timeout turns into a failure.
    let config = Config { call_timeout: std::time::Duration::from_secs(10), ..Config::default() };
    let emulator = Emulator::load(fixture(Some("visit-drops-last-reference")), config).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    for round in 0..3 {
        let file = emulator.open(volume, &format!("\\v{round}.txt"), &OpenOptions::default()).unwrap();
        emulator.cleanup(&file).unwrap();
        emulator.close(file).unwrap();
        assert_eq!(emulator.live_context_count(ContextType::StreamHandle), 0, "the last reference was released after the visit");
    }
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn leak_on_already_defined_is_a_leaked_stream_context() {
    // Simultaneous first opens of one stream make the KEEP_IF_EXISTS race happen for real.
    let config = Config { widen_race_windows: true, ..Config::default() };
    let emulator = Emulator::load(fixture(Some("bug-leak-on-already-defined")), config).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let mut lost_race = false;
    let start = std::sync::Barrier::new(4);
    for round in 0..50 {
        let path = format!("\\race{round}.txt");
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        emulator.open(volume, &path, &OpenOptions::default()).unwrap()
                    })
                })
                .collect();
            for handle in handles {
                emulator.close(handle.join().unwrap()).unwrap();
            }
        });
        if emulator.live_context_count(ContextType::Stream) > 0 {
            lost_race = true;
            break;
        }
    }
    assert!(lost_race, "no KEEP_IF_EXISTS race happened in 50 rounds of 4 simultaneous first opens");
    let report = emulator.unload().unwrap();
    assert!(
        report.violations.iter().any(|v| matches!(v, Violation::ContextLeaked { context_type: ContextType::Stream, tag: t, refcount: 1, .. } if *t == tag(*b"FxSt"))),
        "{report}"
    );
    assert!(report.violations.iter().all(|v| matches!(v, Violation::ContextLeaked { .. })), "{report}");
}

#[test]
fn double_release_takes_a_linked_context_to_zero() {
    let emulator = Emulator::load(fixture(Some("bug-double-release")), Config::default()).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let file = emulator.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    emulator.cleanup(&file).unwrap();
    let violations = emulator.violations();
    assert_eq!(violations, vec![Violation::ReleasedLinkedToZero { context_type: ContextType::StreamHandle, tag: tag(*b"FxSh") }]);
    emulator.close(file).unwrap();
    let report = emulator.unload().unwrap();
    assert_eq!(report.violations.len(), 1, "{report}");
}

#[test]
fn get_not_released_leaks_the_stream_context() {
    let emulator = Emulator::load(fixture(Some("bug-get-not-released")), Config::default()).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let file = emulator.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    emulator.close(file).unwrap();
    assert_eq!(emulator.live_context_count(ContextType::Stream), 1, "the un-released Get keeps the stream context alive");
    let report = emulator.unload().unwrap();
    assert_eq!(
        report.violations,
        vec![Violation::ContextLeaked { context_type: ContextType::Stream, size: 4, tag: tag(*b"FxSt"), refcount: 1, count: 1 }],
        "{report}"
    );
}

#[test]
fn paged_volume_context_is_the_wrong_pool() {
    let emulator = Emulator::load(fixture(Some("bug-paged-volume-context")), Config::default()).unwrap();
    emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let report = emulator.unload().unwrap();
    assert_eq!(report.violations, vec![Violation::WrongPoolForType { context_type: ContextType::Volume, pool: PoolKind::Paged }], "{report}");
}

#[test]
fn failed_driver_entry_without_unregister_is_reported() {
    match Emulator::load(fixture(Some("bug-no-unregister-on-failed-entry")), Config::default()) {
        Err(EmuError::DriverEntryFailed { status, report }) => {
            assert_eq!(report.violations, vec![Violation::FailedDriverEntryDidNotUnregister { status }], "{report}");
        }
        other => panic!("expected DriverEntryFailed, got {other:?}"),
    }
}

#[test]
fn unresolvable_import_names_dll_and_function() {
    let error = Emulator::load(fixture(Some("bug-unresolvable-import")), Config::default()).unwrap_err();
    assert_eq!(error, EmuError::Load(fltemu::LoadError::UnresolvedImports(vec!["fltmgr.sys!FltTagFile".into()])));
    assert!(error.to_string().contains("fltmgr.sys!FltTagFile"));
}

#[test]
fn fault_in_driver_entry_is_kmode_exception_not_handled_with_its_rva() {
    let error = Emulator::load(fixture(Some("bug-fault-in-driver-entry")), Config::default()).unwrap_err();
    let text = error.to_string();
    match error {
        // An access violation no __except handles: bug check 0x1E (code, address, read/write, target).
        EmuError::Stopped(fltemu::Stop::BugCheck { code: 0x1E, params, .. }) => {
            assert_eq!(params[0], 0xC000_0005, "{text}");
            assert_eq!(params[3], 0x10, "{text}");
            assert!(text.contains("image RVA 0x1"), "the faulting instruction is inside the image: {text}");
        }
        other => panic!("expected bug check 0x1E, got {other:?}"),
    }
}

#[test]
fn context_calls_at_dispatch_are_irql_violations() {
    let config = Config { post_cleanup_irql: fltemu::DISPATCH_LEVEL, ..Config::default() };
    let emulator = Emulator::load(fixture(Some("bug-get-at-dispatch")), config).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let file = emulator.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    emulator.cleanup(&file).unwrap();
    assert_eq!(
        emulator.violations(),
        vec![
            Violation::IrqlTooHigh { function: "FltGetStreamHandleContext", irql: 2, max: 1 },
            // The stream-handle context is paged: its release needs ≤ APC_LEVEL (A8).
            Violation::IrqlTooHigh { function: "FltReleaseContext", irql: 2, max: 1 },
            // DbgPrintEx's Unicode conversions are PASSIVE_LEVEL only.
            Violation::IrqlTooHigh { function: "DbgPrintEx (Unicode format)", irql: 2, max: 0 },
        ]
    );
    emulator.close(file).unwrap();
    drop(emulator.unload().unwrap());
}

#[test]
fn post_cleanup_at_passive_is_fine_for_the_same_driver() {
    let emulator = Emulator::load(fixture(Some("bug-get-at-dispatch")), Config::default()).unwrap();
    exercise(&emulator);
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    assert!(report.debug_output.iter().any(|line| line == "post-cleanup pc"), "{report}");
}

#[test]
fn reference_after_free_is_use_after_free() {
    let emulator = Emulator::load(fixture(Some("bug-use-after-free")), Config::default()).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    emulator.open_close(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    assert_eq!(
        emulator.violations(),
        vec![Violation::UseAfterFree { function: "FltReferenceContext", context_type: ContextType::StreamHandle, tag: tag(*b"FxSh") }]
    );
    drop(emulator.unload().unwrap());
}

#[test]
fn releasing_a_foreign_pointer_is_not_a_context() {
    let emulator = Emulator::load(fixture(Some("bug-not-a-context")), Config::default()).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    emulator.open_close(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    let violations = emulator.violations();
    assert!(matches!(violations.as_slice(), [Violation::NotAContext { function: "FltReleaseContext", pointer }] if *pointer > emulator.image_base()), "{violations:?}");
    drop(emulator.unload().unwrap());
}

#[test]
fn completion_context_without_post_callback_is_misuse() {
    let emulator = Emulator::load(fixture(Some("bug-completion-context")), Config::default()).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let before = emulator.calls();
    emulator.open_close(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    assert_eq!(emulator.calls().since(&before).total("FltGetStreamContext"), 1, "no post-create ran (SUCCESS_NO_CALLBACK honoured), pre-close did");
    assert!(
        matches!(emulator.violations().as_slice(), [Violation::CompletionContextMisuse { operation: fltemu::Operation::PreCreate, status: 1, .. }]),
        "{:?}",
        emulator.violations()
    );
    drop(emulator.unload().unwrap());
}

#[test]
fn pool_never_freed_is_reported_by_tag() {
    let emulator = Emulator::load(fixture(Some("bug-pool-leak")), Config::default()).unwrap();
    let report = emulator.unload().unwrap();
    assert_eq!(report.violations, vec![Violation::PoolLeaked { tag: tag(*b"FxLk"), bytes: 100, count: 1 }], "{report}");
    assert_eq!(report.pool_bytes_outstanding, 100);
}

#[test]
fn a_deadlocked_driver_entry_is_a_hang_not_a_hung_test() {
    let config = Config { call_timeout: std::time::Duration::from_millis(500), ..Config::default() };
    // Built first: the limit is on the run, not on compiling the fixture under load.
    let image = fixture(Some("bug-deadlock-in-driver-entry"));
    let started = std::time::Instant::now();
    let error = Emulator::load(image, config).unwrap_err();
    assert_eq!(error, EmuError::Stopped(fltemu::Stop::Hang { after_ms: 500 }));
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn a_stack_deeper_than_a_kernel_stack_is_reported() {
    let emulator = Emulator::load(fixture(Some("bug-deep-stack")), Config::default()).unwrap();
    let report = emulator.unload().unwrap();
    assert!(report.max_stack_depth > 32 * 1024, "{report}");
    assert!(
        matches!(report.violations.as_slice(), [Violation::StackTooDeep { function: "KeGetCurrentIrql", limit: 0x6000, bytes }] if *bytes > 32 * 1024),
        "{report}"
    );
}

#[test]
fn a_panic_is_a_bug_check_with_code_and_parameters() {
    let error = Emulator::load(fixture(Some("bug-panic-in-driver-entry")), Config::default()).unwrap_err();
    assert_eq!(error, EmuError::Stopped(fltemu::Stop::BugCheck { code: 0x4658_5450, params: [1, 2, 3, 4], rva: None }));
    assert!(error.to_string().contains("bug check 0x46585450"), "{error}");
}

#[test]
fn work_items_run_and_print_formatted() {
    let emulator = Emulator::load(fixture(Some("with-work-item")), Config::default()).unwrap();
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.debug_output, vec!["work item -42 narrow wide counted 0000beef 7  |".to_owned()]);
    assert_eq!(emulator.calls().get(fltemu::Operation::WorkItem, "FltFreeGenericWorkItem"), 1);
}

#[test]
fn a_work_item_never_freed_is_reported() {
    let emulator = Emulator::load(fixture(Some("bug-work-item-leak")), Config::default()).unwrap();
    let report = emulator.unload().unwrap();
    assert_eq!(report.violations, vec![Violation::WorkItemLeaked { count: 1 }], "{report}");
}

#[test]
fn detach_with_open_files_drops_every_link_and_later_closes_bypass_the_filter() {
    let emulator = Emulator::load(fixture(None), Config::default()).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let a = emulator.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    let b = emulator.open(volume, "\\a.txt:ads", &OpenOptions::default()).unwrap();
    assert_eq!(emulator.live_context_count(ContextType::Stream), 2);
    emulator.detach(volume).unwrap();
    assert!(!emulator.is_attached(volume));
    assert_eq!(emulator.instance_context(volume), None);
    for kind in [ContextType::Instance, ContextType::Stream, ContextType::StreamHandle] {
        assert_eq!(emulator.live_context_count(kind), 0, "{kind:?} links dropped at teardown (B9)");
    }
    assert_eq!(emulator.live_context_count(ContextType::Volume), 1, "volume contexts live until dismount or unload");
    let before = emulator.calls();
    emulator.close(a).unwrap();
    emulator.close(b).unwrap();
    assert_eq!(emulator.calls().since(&before), fltemu::CallCounts::default(), "no instance, no callbacks");
    assert!(emulator.attach(volume).unwrap());
    assert!(emulator.instance_context(volume).is_some());
    emulator.dismount(volume).unwrap();
    assert_eq!(emulator.live_context_count(ContextType::Volume), 0);
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn paging_files_unsupported_volumes_and_failed_creates_hold_no_contexts() {
    let emulator = Emulator::load(fixture(None), Config::default()).unwrap();
    let ntfs = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let other = emulator.mount(VolumeSpec::without_stream_contexts("\\Device\\HarddiskVolume2")).unwrap();

    // A paging file: stream and stream-handle contexts are NOT_SUPPORTED (A9).
    let paging = emulator.open(ntfs, "\\pagefile.sys", &OpenOptions { paging_file: true, ..OpenOptions::default() }).unwrap();
    assert_eq!(emulator.stream_context(&paging), None);
    assert_eq!(emulator.stream_handle_context(&paging), None);
    // A file system without stream-context support (D1).
    let plain = emulator.open(other, "\\b.txt", &OpenOptions::default()).unwrap();
    assert_eq!(emulator.stream_context(&plain), None);
    assert_eq!(emulator.live_context_count(ContextType::StreamHandle), 0, "the refused stream-handle contexts were released");

    // A failed create: post-create sees the failure and allocates nothing.
    let before = emulator.calls();
    let failed = OpenOptions { final_status: fltemu::status::OBJECT_NAME_NOT_FOUND, ..OpenOptions::default() };
    assert_eq!(emulator.open(ntfs, "\\missing.txt", &failed), Err(EmuError::CreateFailed(fltemu::status::OBJECT_NAME_NOT_FOUND)));
    assert_eq!(emulator.calls().since(&before).total("FltAllocateContext"), 0);
    assert_eq!(emulator.open_file_objects(ntfs, "\\missing.txt"), 0);

    emulator.close(paging).unwrap();
    emulator.close(plain).unwrap();
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn the_correct_fixture_unregisters_when_start_filtering_fails() {
    let failure = fltemu::Failure { function: "FltStartFiltering", status: fltemu::status::INSUFFICIENT_RESOURCES, every: 1, times: 1 };
    let config = Config { failures: vec![failure], ..Config::default() };
    match Emulator::load(fixture(None), config) {
        Err(EmuError::DriverEntryFailed { status, report }) => {
            assert_eq!(status, fltemu::status::INSUFFICIENT_RESOURCES);
            assert!(report.is_clean(), "{report}");
        }
        other => panic!("expected DriverEntryFailed, got {other:?}"),
    }
}

#[test]
fn injected_allocation_failures_take_the_fixture_error_paths_cleanly() {
    let emulator = Emulator::load(fixture(None), Config::default()).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    assert!(emulator.inject_failure("FltAllocateContext", fltemu::status::INSUFFICIENT_RESOURCES, 2, 50));
    assert!(!emulator.inject_failure("FltReleaseContext", 0, 1, 1), "a release cannot fail");
    for round in 0..40 {
        emulator.open_close(volume, &format!("\\f{}.txt", round % 4), &OpenOptions::default()).unwrap();
    }
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn a_context_set_in_pre_create_is_on_an_unsupported_object() {
    let emulator = Emulator::load(fixture(Some("bug-set-in-pre-create")), Config::default()).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    emulator.open_close(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    assert!(
        matches!(emulator.violations().as_slice(), [Violation::ContextOnUnsupportedObject { function: "FltSetStreamHandleContext", .. }]),
        "{:?}",
        emulator.violations()
    );
    let report = emulator.unload().unwrap();
    assert_eq!(report.contexts_outstanding, 0, "the refused context was released: {report}");
}

#[test]
fn query_teardown_can_refuse_a_manual_detach() {
    let emulator = Emulator::load(fixture(Some("refuse-detach")), Config::default()).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let file = emulator.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    assert_eq!(emulator.detach(volume), Err(EmuError::DetachRefused(fltemu::status::FLT_DO_NOT_DETACH)));
    assert!(emulator.is_attached(volume));
    assert!(emulator.stream_context(&file).is_some(), "nothing was torn down");
    emulator.close(file).unwrap();
    // A mandatory unload is not asked: the instance goes anyway.
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}
