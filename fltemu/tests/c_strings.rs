//! Counted strings, their buffers and C strings at odd addresses (`c-drivers/drivers/oddstr.c`):
//! x64 Windows reads them without a fault, so fltemu must too. Under `cargo test` the fltemu
//! binary is a debug build (the dev profile keeps debug assertions), where an aligned read or an
//! aligned slice over an odd pointer fails a precondition check and aborts the whole process;
//! the routines' results must also be those of the DDI pages.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod c_build;

use c_build::{CDriver, Profile, bare_run};

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
            "oddstr: bounded 0 0 -1",
            "oddstr: wcscat_s 0 = crt+x, wcsnlen 5 2",
            "oddstr: memcmp of nothing 0",
            "oddstr: volume properties 0x00000000",
        ] {
            assert!(text.lines().any(|l| l.ends_with(line)), "{profile:?}: want \"{line}\":\n{text}");
        }
    }
}

/// A NULL pointer handed to a routine is an access violation inside it on Windows: with no
/// handler fltemu can run, bug check 0x1E with STATUS_ACCESS_VIOLATION and the access's
/// parameters (0 read / 1 write, address 0); never a debug-fltemu abort.
#[test]
fn a_null_pointer_in_a_routine_is_an_unhandled_access_violation_not_an_abort() {
    for (define, write) in [("BUG_WCSLEN_NULL", 0), ("BUG_COPY_NULL", 0)] {
        let (code, text) = bare_run(&CDriver::new("oddstr").define(define).profile(Profile::Debug));
        assert_ne!(code, 0, "{define}:\n{text}");
        assert!(text.contains(&format!("bug check 0x0000001e (0xc0000005, 0x0, {write:#x}, 0x0)")), "{define}:\n{text}");
        assert!(text.contains("access violation reading 0x0 inside an emulated kernel routine"), "{define}:\n{text}");
    }
}

/// Lock words not 8-byte aligned (KSPIN_LOCK, EX_PUSH_LOCK) and an RTL_BITMAP Buffer not
/// ULONG-aligned are invalid parameters; each call leaves them alone (no atomic is formed over
/// them) and the spin-lock acquire leaves the IRQL at PASSIVE_LEVEL.
#[test]
fn misaligned_lock_words_and_bitmap_buffers_are_invalid_parameters_and_left_alone() {
    let (_, text) = bare_run(&CDriver::new("oddstr").define("BUG_LOCK_MISALIGNED").profile(Profile::Debug));
    for function in [
        "KeAcquireSpinLockRaiseToDpc",
        "KeReleaseSpinLock",
        "FltInitializePushLock",
        "FltAcquirePushLockExclusive",
        "FltReleasePushLock",
        "FltDeletePushLock",
    ] {
        assert!(text.contains(&format!("{function}: lock not 8-byte aligned (the call is ignored)")), "{function}:\n{text}");
    }
    assert!(text.contains("RtlInterlockedClearBits: bitmap Buffer not ULONG-aligned"), "{text}");
    assert!(!text.contains("called below DISPATCH_LEVEL"), "the release of a lock never taken is not a second finding:\n{text}");
    assert!(text.lines().any(|l| l.ends_with("oddstr: misaligned locks left alone, IRQL 0")), "{text}");
}

/// An SLIST_HEADER that is not 16-byte aligned (required on 64-bit Windows) is an invalid
/// parameter; the push and pop leave it alone and return NULL.
#[test]
fn a_misaligned_slist_header_is_an_invalid_parameter_and_is_left_alone() {
    let (_, text) = bare_run(&CDriver::new("oddstr").define("BUG_SLIST_MISALIGNED").profile(Profile::Debug));
    assert!(text.contains("ExpInterlockedPushEntrySList: SLIST_HEADER not 16-byte aligned"), "{text}");
    assert!(text.contains("ExpInterlockedPopEntrySList: SLIST_HEADER not 16-byte aligned"), "{text}");
    assert!(text.lines().any(|l| l.ends_with("oddstr: misaligned push 0000000000000000, pop 0000000000000000")), "{text}");
}
