//! File data and the I/O fltemu issues or a filter issues itself: reads see writes and end of
//! file (library level, through the C pass-through driver), and the C reader driver
//! (`c-drivers/drivers/reader.c`: FltCreateFileEx + FltReadFile scans in post-create,
//! FltLockUserBuffer / MmGetSystemAddressForMdlSafe in pre-write and post-read) clean under the
//! default scenario, each one-bug variant caught as its exact violation.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod c_build;

use c_build::{CDriver, Profile, bare_run};
use fltemu::{Config, Emulator, IoOptions, OpenOptions, VolumeSpec};

const END_OF_FILE: i32 = 0xC000_0011_u32.cast_signed();


#[test]
fn reads_see_earlier_writes_and_end_of_file() {
    let image = CDriver::new("passthrough").build();
    let emu = Emulator::load(&image, Config::default()).expect("loads");
    let volume = emu.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    emu.set_file_contents(volume, "\\dir\\seeded.txt", b"0123456789");
    let file = emu.open(volume, "\\DIR\\Seeded.txt", &OpenOptions::default()).unwrap();
    let read = emu.read(&file, 2, 4, &IoOptions::default()).unwrap();
    assert_eq!((read.status, read.information, read.data.as_slice()), (0, 4, &b"2345"[..]));
    // A short read at the end, then end of file at and past it.
    let short = emu.read(&file, 8, 100, &IoOptions::default()).unwrap();
    assert_eq!((short.status, short.information, short.data.as_slice()), (0, 2, &b"89"[..]));
    for offset in [10, 11, 1 << 40] {
        let eof = emu.read(&file, offset, 4, &IoOptions::default()).unwrap();
        assert_eq!((eof.status, eof.information), (END_OF_FILE, 0), "offset {offset}");
    }
    // A write past the end grows the file (the gap reads as zeros); reads see it, paging too.
    let written = emu.write(&file, 12, b"AB", &IoOptions::default()).unwrap();
    assert_eq!((written.status, written.information), (0, 2));
    assert_eq!(emu.file_contents(volume, "\\dir\\seeded.txt").unwrap(), b"0123456789\0\0AB");
    let paging = emu.read(&file, 10, 16, &IoOptions { paging: true, ..IoOptions::default() }).unwrap();
    assert_eq!((paging.status, paging.data.as_slice()), (0, &b"\0\0AB"[..]));
    // A paging write never extends the file.
    let paged = emu.write(&file, 13, b"xyz", &IoOptions { paging: true, ..IoOptions::default() }).unwrap();
    assert_eq!(paged.information, 1);
    assert_eq!(emu.file_contents(volume, "\\dir\\seeded.txt").unwrap(), b"0123456789\0\0Ax");
    // Another open of the stream sees the data; another stream of the file does not.
    let second = emu.open(volume, "\\dir\\seeded.txt::$DATA", &OpenOptions::default()).unwrap();
    assert_eq!(emu.read(&second, 0, 3, &IoOptions::default()).unwrap().data, b"012");
    let ads = emu.open(volume, "\\dir\\seeded.txt:ads", &OpenOptions::default()).unwrap();
    assert_eq!(emu.read(&ads, 0, 3, &IoOptions::default()).unwrap().status, END_OF_FILE);
    emu.close(ads).unwrap();
    emu.close(second).unwrap();
    emu.cleanup(&file).unwrap();
    // After cleanup only paging I/O reaches the file.
    assert_eq!(emu.read(&file, 0, 1, &IoOptions::default()), Err(fltemu::EmuError::InvalidHandle));
    assert_eq!(emu.read(&file, 0, 1, &IoOptions { paging: true, ..IoOptions::default() }).unwrap().data, b"0");
    emu.close(file).unwrap();
    // The contents outlive the last close.
    let again = emu.open(volume, "\\dir\\seeded.txt", &OpenOptions::default()).unwrap();
    assert_eq!(emu.read(&again, 0, 64, &IoOptions::default()).unwrap().information, 14);
    emu.close(again).unwrap();
    let report = emu.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}

/// The script commands: `contents` seeds, `read`/`write` log status and bytes, a failed open's
/// handle is skipped by later commands.
#[test]
fn script_reads_and_writes_log_what_happened() {
    let image = CDriver::new("passthrough").build();
    let emu = Emulator::load(&image, Config::default()).expect("loads");
    let script = "mount v\ncontents v \\a.txt hello  world\nopen a v \\a.txt\nread a 0 64\nwrite a 5 , dear\nread a 0 64 paging\nread a 64 1\n\
                  open gone v \\gone.txt status=0xC0000034\nread gone 0 1\nwrite gone 0 x\nclose gone\nclose a\n";
    let run = fltemu::scenario::run_script(&emu, script, 1).expect("runs");
    let log = run.log.join("\n");
    for line in [
        "contents \\a.txt: 12 bytes",
        "read a @0 64: status 0x00000000, 12 bytes",
        "write a @5 6: status 0x00000000, 6 bytes",
        "read a @0 64 paging: status 0x00000000, 12 bytes",
        "read a @64 1: status 0xc0000011, 0 bytes",
        "read gone: skipped (its open failed)",
        "write gone: skipped (its open failed)",
        "close gone: skipped (its open failed)",
    ] {
        assert!(log.contains(line), "missing {line:?} in:\n{log}");
    }
    assert!(run.report.is_clean(), "{}", run.report);
}

/// Post-read at DISPATCH_LEVEL reaches the data through FltLockUserBuffer's MDL (the kernel
/// view) while the user address is out of reach; pre-write refuses data carrying the marker.
#[test]
fn reader_sees_read_data_at_dispatch_through_its_mdl_and_blocks_marked_writes() {
    let image = CDriver::new("reader").build();
    let emu = Emulator::load(&image, Config::default()).expect("loads");
    let volume = emu.mount(VolumeSpec::ntfs("\\Device\\vol1")).unwrap();
    // The marker lies past the 4 KiB the post-create scan reads, so the open succeeds.
    let mut contents = vec![b'.'; 5000];
    contents.extend_from_slice(b"FLTEMU-BAD");
    emu.set_file_contents(volume, "\\big.bin", &contents);
    let file = emu.open(volume, "\\big.bin", &OpenOptions::default()).unwrap();
    let dispatch = IoOptions { post_irql: Some(fltemu::DISPATCH_LEVEL), ..IoOptions::default() };
    let read = emu.read(&file, 4995, 64, &dispatch).unwrap();
    assert_eq!((read.status, read.information), (0, 15));
    assert_eq!(&read.data[5..], b"FLTEMU-BAD");
    let refused = emu.write(&file, 0, b"xxFLTEMU-BADxx", &IoOptions::default()).unwrap();
    assert_eq!(refused.status, 0xC000_0022_u32.cast_signed());
    let allowed = emu.write(&file, 0, b"fine", &IoOptions::default()).unwrap();
    assert_eq!((allowed.status, allowed.information), (0, 4));
    assert_eq!(&emu.file_contents(volume, "\\big.bin").unwrap()[..6], b"fine..");
    emu.close(file).unwrap();
    // A file whose first 4 KiB hold the marker cannot be opened.
    emu.set_file_contents(volume, "\\bad.txt", b"FLTEMU-BAD");
    assert_eq!(
        emu.open(volume, "\\bad.txt", &OpenOptions::default()),
        Err(fltemu::EmuError::CreateFailed(0xC000_0022_u32.cast_signed()))
    );
    let report = emu.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    assert!(
        report.debug_output.iter().any(|l| l.contains("2 scanned, 2 blocked, 1 locked reads, 1 reads with the marker")),
        "{:?}",
        report.debug_output
    );
}

/// Parameters.Create as a WDK-built driver reads it (fltkernel.h's POINTER_ALIGNMENT members:
/// FileAttributes at 0x10, ShareAccess at 0x12, EaLength at 0x18), not windows-sys's packing.
#[test]
fn a_c_driver_reads_the_create_parameters_at_the_wdk_offsets() {
    let image = CDriver::new("reader").build();
    let emu = Emulator::load(&image, Config::default()).expect("loads");
    let volume = emu.mount(VolumeSpec::ntfs("\\Device\\vol1")).unwrap();
    let options = OpenOptions { share_access: 0x5, create_options: 0x40, disposition: 1, ..OpenOptions::default() };
    let file = emu.open(volume, "\\a.txt", &options).unwrap();
    emu.close(file).unwrap();
    let report = emu.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    assert!(
        report.debug_output.iter().any(|l| l.contains("last create options 0x01000040 attributes 0x0080 share 0x0005 ea 0")),
        "{:?}",
        report.debug_output
    );
}

/// FltSetCallbackDataDirty marks one operation's callback data: a later read or write whose
/// callback data reuses the address (the allocator hands it out again) starts clean.
#[test]
fn a_dirty_flag_ends_with_its_operation() {
    let image = CDriver::new("reader").define("READER_DIRTY_CREATE").build();
    let emu = Emulator::load(&image, Config::default()).expect("loads");
    let volume = emu.mount(VolumeSpec::ntfs("\\Device\\vol1")).unwrap();
    emu.set_file_contents(volume, "\\a.txt", b"data");
    for _ in 0..20 {
        let opened = emu.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
        emu.close(opened).unwrap();
        let file = emu.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
        assert_eq!(emu.read(&file, 0, 4, &IoOptions::default()).unwrap().data, b"data");
        emu.cleanup(&file).unwrap();
        emu.close(file).unwrap();
    }
    let report = emu.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    assert!(report.debug_output.iter().any(|l| l.contains("reader: 0 reads arrived dirty")), "{:?}", report.debug_output);
}

#[test]
fn reader_is_clean_under_the_default_scenario_in_release_and_debug() {
    for profile in [Profile::Release, Profile::Debug] {
        let (code, text) = bare_run(&CDriver::new("reader").profile(profile));
        assert_eq!(code, 0, "{profile:?}:\n{text}");
        assert!(text.contains("violations: 0"), "{profile:?}:\n{text}");
        // The seeded marker file's open was cancelled, its read and close skipped.
        assert!(text.contains("open marked = \\marked.txt: failed 0xc0000022"), "{profile:?}:\n{text}");
        assert!(text.contains("read marked: skipped (its open failed)"), "{profile:?}:\n{text}");
    }
}

/// After FLT_PREOP_SYNCHRONIZE post-read runs at PASSIVE_LEVEL in the requestor's thread, so
/// touching the user buffer there is fine even when post-read would run at DISPATCH_LEVEL. The
/// driver reads the user buffer directly and prints what it found: it must be the bytes of this
/// read (an unmapped buffer would fault, a stale or wrong one would show other bytes).
#[test]
fn a_synchronized_post_read_may_touch_the_user_buffer() {
    let driver = CDriver::new("reader").define("READER_SYNCHRONIZE").define("BUG_POST_READ_TOUCHES_USER_BUFFER");
    let emu = Emulator::load(driver.build(), Config::default()).expect("loads");
    let volume = emu.mount(VolumeSpec::ntfs("\\Device\\vol1")).unwrap();
    emu.set_file_contents(volume, "\\sync.txt", b"first read, then the second");
    let file = emu.open(volume, "\\sync.txt", &OpenOptions::default()).unwrap();
    let dispatch = IoOptions { post_irql: Some(fltemu::DISPATCH_LEVEL), ..IoOptions::default() };
    assert_eq!(emu.read(&file, 0, 10, &dispatch).unwrap().data, b"first read");
    assert_eq!(emu.read(&file, 17, 64, &dispatch).unwrap().data, b"the second");
    assert_eq!(emu.read(&file, 6, 4, &dispatch).unwrap().data, b"read");
    emu.close(file).unwrap();
    let report = emu.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    let seen: Vec<&str> = report.debug_output.iter().filter_map(|l| l.trim_end().strip_prefix("reader: post-read saw ")).collect();
    assert_eq!(seen, ["10 bytes 'first read'", "10 bytes 'the second'", "4 bytes 'read'"], "{:?}", report.debug_output);
    // And under the default scenario's DISPATCH_LEVEL phase.
    let (code, text) = bare_run(&driver);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("violations: 0"), "{text}");
}

#[test]
fn reader_imports_bind_with_documentation() {
    let image = CDriver::new("reader").build();
    let report = fltemu::imports::report(&std::fs::read(image).unwrap()).unwrap();
    let undocumented: Vec<&str> = report
        .iter()
        .filter(|i| !matches!(i.binding, fltemu::imports::Binding::Emulated { entry: Some(_), .. }))
        .map(|i| i.name.as_str())
        .collect();
    assert!(undocumented.is_empty(), "{undocumented:?}");
}

#[test]
fn each_reader_bug_is_caught_by_the_default_scenario() {
    let cases = [
        ("BUG_HANDLE_NOT_CLOSED", 1, "file handle(s) (FltCreateFile) not closed with FltClose"),
        ("BUG_FILE_OBJECT_NOT_DEREFERENCED", 1, "FILE_OBJECT reference(s) (FltCreateFileEx) not dereferenced"),
        ("BUG_POST_READ_TOUCHES_USER_BUFFER", 2, "driver touched user buffer"),
        ("BUG_FREE_LOCKED_MDL", 1, "freed by Filter Manager when the operation completes"),
        ("BUG_READ_IN_PRE_CREATE", 1, "FltReadFile: FILE_OBJECT not open"),
        ("BUG_CHANGE_WITHOUT_DIRTY", 1, "without FltSetCallbackDataDirty"),
        ("BUG_CLOSE_TWICE", 1, "FltClose: not an open handle"),
        ("BUG_CALLBACK_DATA_NOT_FREED", 1, "callback data (FltAllocateCallbackData) not freed"),
        (
            "BUG_PERFORM_FREED",
            1,
            "FltPerformSynchronousIo (callback data (FltAllocateCallbackData)): callback data already freed",
        ),
        ("BUG_FREE_SWAPPED_MDL", 1, "freed the MDL it put in the callback data while it was still attached"),
        ("BUG_FREE_CALLBACK_DATA_MDL", 1, "IoFreeMdl (MDL): not an MDL from IoAllocateMdl (or already freed)"),
    ];
    for profile in [Profile::Release, Profile::Debug] {
        for (define, exit, finding) in cases {
            let (code, text) = bare_run(&CDriver::new("reader").define(define).profile(profile));
            assert_eq!(code, exit, "{define} {profile:?}:\n{text}");
            let violations: Vec<&str> = text.lines().filter(|l| l.starts_with("VIOLATION")).collect();
            assert!(
                !violations.is_empty() && violations.iter().all(|l| l.contains(finding)),
                "{define} {profile:?}: want only \"{finding}\":\n{text}"
            );
        }
    }
}

/// The scan's FltCreateFileEx name and FltGetVolumeFromName's volume name come with the
/// UNICODE_STRING and its Buffer at odd addresses. x64 Windows reads them without a fault, so
/// fltemu must too: under `cargo test` the fltemu binary is a debug build (the dev profile keeps
/// debug assertions), where an aligned slice over an odd Buffer fails a precondition check and
/// aborts the process.
#[test]
fn names_at_odd_addresses_are_read_without_aborting_a_debug_build() {
    let (code, text) = bare_run(&CDriver::new("reader").define("READER_ODD_NAME"));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("violations: 0"), "{text}");
    assert!(text.contains("open marked = \\marked.txt: failed 0xc0000022"), "the scan ran on the odd name:\n{text}");
}

/// FltCreateFileEx honours CreateDisposition against the file table, FltWriteFile at
/// FILE_WRITE_TO_END_OF_FILE appends, and FltGetVolumeFromName of a missing volume returns
/// STATUS_FLT_VOLUME_NOT_FOUND (0xC01C0014).
#[test]
fn flt_create_file_honours_the_create_disposition() {
    let image = CDriver::new("reader").define("READER_PROBES").build();
    let emu = Emulator::load(&image, Config::default()).expect("loads");
    let volume = emu.mount(VolumeSpec::ntfs("\\Device\\vol1")).unwrap();
    // made.txt: created by the emulator's open (FILE_OPEN_IF), never written; opened without
    // FILE_READ_DATA so the reader does not scan it.
    let made = emu.open(volume, "\\made.txt", &OpenOptions { desired_access: 0x2, ..OpenOptions::default() }).unwrap();
    emu.close(made).unwrap();
    emu.set_file_contents(volume, "\\adsonly.txt:ads", b"x");
    emu.set_file_contents(volume, "\\dir\\sub\\f.txt", b"f");
    emu.set_file_contents(volume, "\\probe.txt", b"hello");
    let file = emu.open(volume, "\\probe.txt", &OpenOptions::default()).unwrap();
    emu.close(file).unwrap();
    assert_eq!(emu.file_contents(volume, "\\probe.txt.a").unwrap(), b"xyz");
    assert_eq!(emu.file_contents(volume, "\\probe.txt.d").unwrap(), b"");
    let emu_contents_len = emu.file_contents(volume, "\\probe.txt.e").unwrap().len();
    let report = emu.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    let probes: Vec<&str> =
        report.debug_output.iter().filter_map(|l| l.trim_end().strip_prefix("reader: probe ")).collect();
    // A failed create's Information is FILE_DOES_NOT_EXIST (5) or FILE_EXISTS (4).
    let expected = [
        "path '' disposition 1 options 0x0: status 0x00000000 information 1", // the volume's root
        "path '\\' disposition 1 options 0x0: status 0x00000000 information 1",
        "path '\\' disposition 2 options 0x0: status 0xc0000022 information 0", // the root: only opened
        "path '\\made.txt' disposition 1 options 0x0: status 0x00000000 information 1", // made by a create
        "path '\\made.txt:ads' disposition 1 options 0x0: status 0xc0000034 information 5", // a missing stream
        "path '\\adsonly.txt' disposition 1 options 0x0: status 0x00000000 information 1", // data only in an ADS
        "path '\\adsonly.txt' disposition 2 options 0x0: status 0xc0000035 information 4",
        "path '\\dir' disposition 1 options 0x0: status 0x00000000 information 1", // parents of a stream
        "path '\\dir\\' disposition 1 options 0x0: status 0x00000000 information 1",
        "path '\\DIR\\sub' disposition 3 options 0x0: status 0x00000000 information 1",
        "path '\\di' disposition 1 options 0x0: status 0xc0000034 information 5", // a prefix, not a parent
        "path '\\dir\\su\\' disposition 1 options 0x0: status 0xc0000034 information 5",
        "path '\\dir' disposition 0 options 0x0: status 0xc0000035 information 4", // a directory: only opened
        "path '\\dir' disposition 5 options 0x0: status 0xc0000035 information 4",
        "path '\\dir\\' disposition 4 options 0x0: status 0xc0000035 information 4",
        "path '\\' disposition 5 options 0x0: status 0xc0000022 information 0",
        "path '\\dir' disposition 1 options 0x40: status 0xc00000ba information 0", // FILE_IS_A_DIRECTORY
        "path '\\dir' disposition 1 options 0x1: status 0x00000000 information 1",
        "path '\\made.txt' disposition 1 options 0x1: status 0xc0000103 information 0", // NOT_A_DIRECTORY
        "path '\\made.txt' disposition 1 options 0x40: status 0x00000000 information 1",
        "path '\\newdir' disposition 2 options 0x1: status 0x00000000 information 2", // a directory made
        "path '\\newdir' disposition 5 options 0x1: status 0xc000000d information 0", // not for a directory
        "path '\\dir' disposition 0 options 0x0: status 0xc0000035 information 4", // while open: still a directory
        ".a disposition 1: status 0xc0000034 information 5 append 0x00000000 size -1", // OPEN, missing
        ".a disposition 4: status 0xc0000034 information 5 append 0x00000000 size -1", // OVERWRITE, missing
        ".a disposition 2: status 0x00000000 information 2 append 0x00000000 size 3", // CREATE + "abc"
        ".a disposition 2: status 0xc0000035 information 4 append 0x00000000 size -1", // CREATE, exists
        ".a disposition 1: status 0x00000000 information 1 append 0x00000000 size 5",   // OPEN + "de" at the end
        ".a disposition 3: status 0x00000000 information 1 append 0x00000000 size 5",   // OPEN_IF, exists
        ".a disposition 4: status 0x00000000 information 3 append 0x00000000 size 0",   // OVERWRITE truncates
        ".a disposition 0: status 0x00000000 information 0 append 0x00000000 size 3",   // SUPERSEDE + "xyz"
        ".b disposition 5: status 0x00000000 information 2 append 0x00000000 size 0",   // OVERWRITE_IF, missing
        ".b disposition 5: status 0x00000000 information 3 append 0x00000000 size 0",   // OVERWRITE_IF, exists
        ".c disposition 0: status 0x00000000 information 2 append 0x00000000 size 0",   // SUPERSEDE, missing
        ".d disposition 3: status 0x00000000 information 2 append 0x00000000 size 0",   // OPEN_IF, missing
    ];
    assert_eq!(probes, expected, "{:?}", report.debug_output);
    assert_eq!(emu.file_contents(volume, "\\newdir"), None, "a directory gets no contents");
    assert_eq!(emu.file_contents(volume, "\\dir"), None, "nor does a superseded or overwritten one");
    // A non-cached append must start on a sector boundary (the end of file decides).
    assert!(
        report.debug_output.iter().any(|l| l.contains("non-cached append at end of file 3: 0xc000000d, at 512: 0x00000000 (512 written)")),
        "{:?}",
        report.debug_output
    );
    assert_eq!(emu_contents_len, 1024);
    assert!(
        report.debug_output.iter().any(|l| l.contains("FltGetVolumeFromName of a missing volume: 0xc01c0014")),
        "{:?}",
        report.debug_output
    );
}

/// FltPerformSynchronousIo of IRP_MJ_QUERY_INFORMATION is answered by Filter Manager itself: the
/// call statistics hold only the driver's own FltQueryInformationFile calls.
#[test]
fn a_query_through_callback_data_is_not_counted_as_a_driver_call() {
    let image = CDriver::new("reader").build();
    let emu = Emulator::load(&image, Config::default()).expect("loads");
    let volume = emu.mount(VolumeSpec::ntfs("\\Device\\vol1")).unwrap();
    emu.set_file_contents(volume, "\\a.txt", b"some data");
    for _ in 0..3 {
        let file = emu.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
        emu.close(file).unwrap();
    }
    let counted = emu.calls().total("FltQueryInformationFile");
    let report = emu.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(counted, 3);
    assert!(report.debug_output.iter().any(|l| l.contains("reader: 3 FltQueryInformationFile calls")), "{:?}", report.debug_output);
}

/// IRP_MJ_WRITE at FILE_WRITE_TO_END_OF_FILE appends (a paging one writes nothing: paging never
/// extends a file); FILE_USE_FILE_POINTER_POSITION without FO_SYNCHRONOUS_IO is refused, and a
/// write far past any sane size fails with STATUS_DISK_FULL instead of allocating it.
#[test]
fn a_write_to_end_of_file_appends() {
    let image = CDriver::new("passthrough").build();
    let emu = Emulator::load(&image, Config::default()).expect("loads");
    let volume = emu.mount(VolumeSpec::ntfs("\\Device\\vol1")).unwrap();
    emu.set_file_contents(volume, "\\log.txt", b"0123");
    let file = emu.open(volume, "\\log.txt", &OpenOptions::default()).unwrap();
    let appended = emu.write(&file, fltemu::FILE_WRITE_TO_END_OF_FILE, b"45", &IoOptions::default()).unwrap();
    assert_eq!((appended.status, appended.information), (0, 2));
    let again = emu.write(&file, fltemu::FILE_WRITE_TO_END_OF_FILE, b"6", &IoOptions::default()).unwrap();
    assert_eq!((again.status, again.information), (0, 1));
    assert_eq!(emu.file_contents(volume, "\\log.txt").unwrap(), b"0123456");
    let paging = emu.write(&file, fltemu::FILE_WRITE_TO_END_OF_FILE, b"7", &IoOptions { paging: true, ..IoOptions::default() }).unwrap();
    assert_eq!((paging.status, paging.information), (0, 0));
    let pointer = emu.write(&file, u64::MAX - 1, b"8", &IoOptions::default()).unwrap();
    assert_eq!((pointer.status, pointer.information), (0xC000_000D_u32.cast_signed(), 0));
    let far = emu.write(&file, 1 << 40, b"9", &IoOptions::default()).unwrap();
    assert_eq!((far.status, far.information), (0xC000_007F_u32.cast_signed(), 0));
    assert_eq!(emu.file_contents(volume, "\\log.txt").unwrap(), b"0123456");
    emu.close(file).unwrap();
    let report = emu.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}

/// A filter's own MDL swapped into a read is Filter Manager's to free after post-read: the
/// requestor gets the data the filter copied back, nothing leaks, nothing is misused.
#[test]
fn a_swapped_read_buffer_reaches_the_requestor_and_its_mdl_is_freed_by_filter_manager() {
    let image = CDriver::new("reader").define("READER_SWAP_BUFFERS").build();
    let emu = Emulator::load(&image, Config::default()).expect("loads");
    let volume = emu.mount(VolumeSpec::ntfs("\\Device\\vol1")).unwrap();
    // The marker lies past the 4 KiB the post-create scan reads, so the open succeeds.
    let mut contents = b"swapped buffers".to_vec();
    contents.resize(5000, b'.');
    contents.extend_from_slice(b"FLTEMU-BAD");
    emu.set_file_contents(volume, "\\a.txt", &contents);
    let file = emu.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    let dispatch = IoOptions { post_irql: Some(fltemu::DISPATCH_LEVEL), ..IoOptions::default() };
    let read = emu.read(&file, 0, 15, &dispatch).unwrap();
    assert_eq!((read.status, read.data.as_slice()), (0, &b"swapped buffers"[..]));
    let marked = emu.read(&file, 4998, 100, &IoOptions::default()).unwrap();
    assert_eq!(marked.data, b"..FLTEMU-BAD");
    emu.close(file).unwrap();
    let report = emu.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    assert!(report.debug_output.iter().any(|l| l.contains("2 locked reads, 1 reads with the marker")), "{:?}", report.debug_output);
}

/// FltFreeCallbackData is documented for IRQL <= DISPATCH_LEVEL, and it and FltReuseCallbackData
/// free the MDL chain of the callback data: reusing callback data with an MDL attached, then
/// freeing it at DISPATCH_LEVEL with another attached, is clean (no IRQL finding, no leaked MDL).
#[test]
fn flt_free_callback_data_at_dispatch_frees_its_mdl() {
    for profile in [Profile::Release, Profile::Debug] {
        let (code, text) = bare_run(&CDriver::new("reader").define("READER_CALLBACK_DATA_MDL").profile(profile));
        assert_eq!(code, 0, "{profile:?}:\n{text}");
        assert!(text.contains("violations: 0"), "{profile:?}:\n{text}");
    }
}

/// A read at a negative ByteOffset is STATUS_INVALID_PARAMETER: from the requestor before any
/// filter sees it (fltemu handed the filter ByteOffset -1 and answered END_OF_FILE), and from
/// the file system when a filter moved the read there (was END_OF_FILE), as FltReadFile answers.
#[test]
fn a_negative_read_offset_is_invalid_parameter() {
    const INVALID_PARAMETER: i32 = 0xC000_000D_u32.cast_signed();
    for negative_in_pre_read in [false, true] {
        let driver = CDriver::new("stale");
        let driver = if negative_in_pre_read { driver.define("NEGATIVE_READ_OFFSET") } else { driver };
        let emu = Emulator::load(driver.build(), Config::default()).expect("loads");
        let volume = emu.mount(VolumeSpec::ntfs("\\Device\\vol1")).unwrap();
        emu.set_file_contents(volume, "\\a.txt", b"0123456789");
        let file = emu.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
        let offsets: &[u64] = if negative_in_pre_read { &[0, 4] } else { &[u64::MAX, 1 << 63, u64::MAX - 1] };
        for &offset in offsets {
            let read = emu.read(&file, offset, 4, &IoOptions::default()).unwrap();
            assert_eq!((read.status, read.information), (INVALID_PARAMETER, 0), "offset {offset:#x} {negative_in_pre_read}");
        }
        emu.close(file).unwrap();
        let report = emu.unload().unwrap();
        assert!(report.is_clean(), "{report}");
        let pre_reads = report.debug_output.iter().filter(|line| line.contains("stale: pre-read")).count();
        assert_eq!(pre_reads, if negative_in_pre_read { 2 } else { 0 }, "{report}");
    }
}

/// Wild offsets on many streams cannot add up to more than 256 MiB of the host's memory: a
/// write that would take all streams' data together past it is STATUS_DISK_FULL (before, each
/// stream could take 256 MiB); data released by replacing a stream counts back.
#[test]
fn all_streams_together_are_capped() {
    const DISK_FULL: i32 = 0xC000_007F_u32.cast_signed();
    let image = CDriver::new("passthrough").build();
    let emu = Emulator::load(&image, Config::default()).expect("loads");
    let volume = emu.mount(VolumeSpec::ntfs("\\Device\\vol1")).unwrap();
    let far = 150 << 20;
    let first = emu.open(volume, "\\first.bin", &OpenOptions::default()).unwrap();
    let second = emu.open(volume, "\\second.bin", &OpenOptions::default()).unwrap();
    let grown = emu.write(&first, far, b"x", &IoOptions::default()).unwrap();
    assert_eq!((grown.status, grown.information), (0, 1));
    let refused = emu.write(&second, far, b"y", &IoOptions::default()).unwrap();
    assert_eq!((refused.status, refused.information), (DISK_FULL, 0));
    emu.set_file_contents(volume, "\\first.bin", b"");
    let after_release = emu.write(&second, far, b"y", &IoOptions::default()).unwrap();
    assert_eq!((after_release.status, after_release.information), (0, 1));
    emu.close(first).unwrap();
    emu.close(second).unwrap();
    let report = emu.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}
