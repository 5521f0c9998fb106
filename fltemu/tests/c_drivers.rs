//! fltemu's C fixture drivers (`c-drivers/`), built by clang-cl + lld-link like an MSVC
//! minifilter, run through the `fltemu` command: clean ones exit 0, each bug variant is reported
//! as its exact bug check or violation.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod c_build;

use c_build::{CDriver, Profile};
use fltemu::{Access, Config, EmuError, Emulator, OpenOptions, Stop, Violation, VolumeSpec};
use std::process::Command;
use std::time::{Duration, Instant};

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

#[test]
fn scanner_is_clean_in_the_open_storm_scenario() {
    for profile in [Profile::Release, Profile::Debug] {
        let (code, text) = run(&CDriver::new("scanner").profile(profile), "open-storm");
        assert_eq!(code, 0, "{profile:?}:\n{text}");
        assert!(text.contains("violations: 0"), "{profile:?}:\n{text}");
    }
}

const SUM: u32 = 1;
const COUNT: u32 = 2;
const RAISE: u32 = 3;
const UNWIND: u32 = 4;
const LOCK: u32 = 5;

fn command(command: u32, data: &[u8]) -> Vec<u8> {
    let mut bytes = command.to_le_bytes().to_vec();
    bytes.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn raise_command(low: u32) -> Vec<u8> {
    command(RAISE, &low.to_le_bytes())
}

fn load(driver: &CDriver) -> Emulator {
    Emulator::load(driver.build(), Config::default()).expect("the scanner loads")
}

fn load_timed(driver: &CDriver) -> (Emulator, Instant) {
    let image = driver.build();
    let started = Instant::now();
    (Emulator::load(image, Config::default()).expect("the scanner loads"), started)
}

fn hresult(status: u32) -> i32 {
    fltemu::hresult_from_nt(status.cast_signed())
}

/// The scanner's message callback under good and bad user buffers: every bad buffer's
/// exception (ProbeForRead/ProbeForWrite raising, a fault inside memcpy, ExRaiseStatus) lands in
/// the driver's __except, whose status reaches the client; nothing leaks.
#[test]
fn scanner_catches_bad_user_buffers_in_its_except_blocks() {
    for profile in [Profile::Release, Profile::Debug] {
        let (emulator, started) = load_timed(&CDriver::new("scanner").profile(profile));
        let port = emulator.connect_port("\\ScannerPort", &[], 77).unwrap().unwrap();
        let output = emulator.user_buffer(4);

        let input = emulator.user_buffer_from(&command(SUM, &[1, 2, 3, 250]));
        assert_eq!(port.send_message(Some(&input), Some(&output)).unwrap(), Ok(4), "{profile:?}");
        assert_eq!(output.read(), 256u32.to_le_bytes(), "{profile:?}");
        let long: Vec<u8> = (0..=99).collect();
        let input = emulator.user_buffer_from(&command(SUM, &long));
        assert_eq!(port.send_message(Some(&input), Some(&output)).unwrap(), Ok(4), "{profile:?}");
        assert_eq!(output.read(), 4950u32.to_le_bytes(), "{profile:?}");

        // ProbeForRead(…, 4) on an address 2 bytes past a 16-byte boundary.
        let misaligned = emulator.user_buffer_misaligned(12, 2);
        assert!(misaligned.write(&command(SUM, &[1, 2, 3, 4])));
        port.set_probe(false);
        assert_eq!(
            port.send_message(Some(&misaligned), Some(&output)).unwrap(),
            Err(hresult(0x8000_0002)),
            "{profile:?}: misalignment"
        );
        // A no-access user buffer passes ProbeForRead (user space) and faults inside memcpy.
        let no_access = emulator.user_buffer_from(&command(SUM, &[9; 8]));
        assert!(no_access.set_access(Access::NoAccess));
        assert_eq!(
            port.send_message(Some(&no_access), Some(&output)).unwrap(),
            Err(hresult(0xC000_0005)),
            "{profile:?}: fault in memcpy"
        );
        // A kernel address: ProbeForRead raises STATUS_ACCESS_VIOLATION before any access.
        let kernel = Box::new([0u8; 16]);
        let kernel_range = (&raw const *kernel as usize, 16);
        assert_eq!(
            port.send_raw(Some(kernel_range), Some((output.address(), 4))).unwrap(),
            Err(hresult(0xC000_0005)),
            "{profile:?}: kernel pointer"
        );
        // A read-only output buffer: ProbeForWrite raises.
        let read_only = emulator.user_buffer(4);
        assert!(read_only.set_access(Access::ReadOnly));
        let input = emulator.user_buffer_from(&command(SUM, &[5]));
        assert_eq!(
            port.send_message(Some(&input), Some(&read_only)).unwrap(),
            Err(hresult(0xC000_0005)),
            "{profile:?}: read-only output"
        );
        // ExRaiseStatus inside __try with a filter that matches the code.
        let input = emulator.user_buffer_from(&raise_command(0x123));
        assert_eq!(
            port.send_message(Some(&input), Some(&output)).unwrap(),
            Err(hresult(0xC000_0123)),
            "{profile:?}: ExRaiseStatus"
        );
        // Both __finally blocks between the raise and the __except run during the unwind.
        let input = emulator.user_buffer_from(&command(UNWIND, &[]));
        assert_eq!(port.send_message(Some(&input), Some(&output)).unwrap(), Ok(4), "{profile:?}: unwind");
        assert_eq!(output.read(), 2u32.to_le_bytes(), "{profile:?}: termination handlers run once each");
        // The cost of one dispatch: a fault in memcpy caught by the driver's __except.
        let dispatches = 1000;
        let timed = Instant::now();
        for _ in 0..dispatches {
            assert_eq!(port.send_message(Some(&no_access), Some(&output)).unwrap(), Err(hresult(0xC000_0005)));
        }
        let per_dispatch = timed.elapsed() / dispatches;
        let valid = emulator.user_buffer_from(&command(SUM, &[9; 8]));
        let timed = Instant::now();
        for _ in 0..dispatches {
            assert_eq!(port.send_message(Some(&valid), Some(&output)).unwrap(), Ok(4));
        }
        let per_message = timed.elapsed() / dispatches;
        port.set_probe(true);

        port.close().unwrap();
        let calls = emulator.calls();
        let report = emulator.unload().unwrap();
        assert!(report.is_clean(), "{profile:?}: {report}");
        eprintln!(
            "scanner {profile:?} port checks: {} ProbeForRead, {} ProbeForWrite, {} ExRaiseStatus, {} calls in all, {:?} in all; {per_dispatch:?} per caught fault vs {per_message:?} per valid message",
            calls.total("ProbeForRead"),
            calls.total("ProbeForWrite"),
            calls.total("ExRaiseStatus"),
            calls.0.values().sum::<u64>(),
            started.elapsed()
        );
    }
}

/// FltSendMessage with a reply: a client thread answers each post-create notification with
/// its sequence number; the driver counts the verdicts that match.
#[test]
fn scanner_scan_round_trip_with_replies() {
    for profile in [Profile::Release, Profile::Debug] {
        let (emulator, started) = load_timed(&CDriver::new("scanner").profile(profile));
        let port = emulator.connect_port("\\ScannerPort", &[], 77).unwrap().unwrap();
        let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
        let opens = 50u32;
        std::thread::scope(|scope| {
            let port = &port;
            let client = scope.spawn(move || {
                for _ in 0..opens {
                    let message = port.get_message(1024, Some(Duration::from_secs(30))).expect("a scan notification");
                    assert_eq!(message.payload.len(), 8);
                    let pid = u32::from_le_bytes(message.payload[0..4].try_into().unwrap());
                    assert_eq!(pid, 4242);
                    port.reply_message(message.message_id, &message.payload[4..8]).expect("the driver waits for the reply");
                }
            });
            for index in 0..opens {
                emulator
                    .open_close(volume, &format!("\\scan\\{index}.txt"), &OpenOptions { pid: 4242, ..Default::default() })
                    .unwrap();
            }
            client.join().unwrap();
        });
        let output = emulator.user_buffer(4);
        let input = emulator.user_buffer_from(&command(COUNT, &[]));
        assert_eq!(port.send_message(Some(&input), Some(&output)).unwrap(), Ok(4));
        assert_eq!(
            u32::from_le_bytes(output.read().try_into().unwrap()),
            opens * 0x10000 + opens,
            "{profile:?}: every scan got its verdict"
        );
        port.close().unwrap();
        let calls = emulator.calls();
        let report = emulator.unload().unwrap();
        assert!(report.is_clean(), "{profile:?}: {report}");
        eprintln!(
            "scanner {profile:?} round trip: {opens} opens, {} FltSendMessage, {} calls in all, {:?}",
            calls.total("FltSendMessage"),
            calls.0.values().sum::<u64>(),
            started.elapsed()
        );
    }
}

fn bug_check_of(result: Result<Result<u32, i32>, EmuError>) -> (u32, [usize; 4], String) {
    match result {
        Err(error @ EmuError::Stopped(Stop::BugCheck { code, params, .. })) => (code, params, error.to_string()),
        other => panic!("expected a bug check, got {other:?}"),
    }
}

/// MmProbeAndLockPages over an output buffer the client may not write raises
/// STATUS_ACCESS_VIOLATION into the driver's __except (no bug check, nothing leaked); without
/// the __try the same call is bug check 0x1E.
#[test]
fn mm_probe_and_lock_pages_raises_into_the_drivers_except() {
    for profile in [Profile::Release, Profile::Debug] {
        let emulator = load(&CDriver::new("scanner").profile(profile));
        let port = emulator.connect_port("\\ScannerPort", &[], 77).unwrap().unwrap();
        port.set_probe(false);
        let input = emulator.user_buffer_from(&command(LOCK, &[]));
        let output = emulator.user_buffer(4);
        assert_eq!(port.send_message(Some(&input), Some(&output)).unwrap(), Ok(4), "{profile:?}: a writable buffer locks");
        assert_eq!(output.read(), 1u32.to_le_bytes(), "{profile:?}");
        let read_only = emulator.user_buffer(4);
        assert!(read_only.set_access(Access::ReadOnly));
        assert_eq!(port.send_message(Some(&input), Some(&read_only)).unwrap(), Err(hresult(0xC000_0005)), "{profile:?}: read-only output");
        let no_access = emulator.user_buffer(4);
        assert!(no_access.set_access(Access::NoAccess));
        assert_eq!(port.send_message(Some(&input), Some(&no_access)).unwrap(), Err(hresult(0xC000_0005)), "{profile:?}: no-access output");
        port.close().unwrap();
        let calls = emulator.calls();
        let report = emulator.unload().unwrap();
        assert!(report.is_clean(), "{profile:?}: {report}");
        assert_eq!(calls.total("MmProbeAndLockPages"), 3, "{profile:?}");
        assert_eq!(calls.total("MmUnlockPages"), 1, "{profile:?}");
        drop(emulator);

        let emulator = load(&CDriver::new("scanner").define("BUG_LOCK_WITHOUT_TRY").profile(profile));
        let port = emulator.connect_port("\\ScannerPort", &[], 77).unwrap().unwrap();
        port.set_probe(false);
        let input = emulator.user_buffer_from(&command(LOCK, &[]));
        let read_only = emulator.user_buffer(4);
        assert!(read_only.set_access(Access::ReadOnly));
        let (code, params, text) = bug_check_of(port.send_message(Some(&input), Some(&read_only)));
        assert_eq!(code, 0x1E, "{profile:?}: {text}");
        assert_eq!(params[0], 0xC000_0005, "{profile:?}: {text}");
        std::mem::forget(port);
    }
}

#[test]
fn an_exception_not_caught_is_bug_check_0x1e_with_the_faulting_rva() {
    for profile in [Profile::Release, Profile::Debug] {
        let emulator = load(&CDriver::new("scanner").define("BUG_NO_TRY").profile(profile));
        let port = emulator.connect_port("\\ScannerPort", &[], 77).unwrap().unwrap();
        let output = emulator.user_buffer(4);
        let input = emulator.user_buffer_from(&command(SUM, &[1, 2]));
        assert_eq!(port.send_message(Some(&input), Some(&output)).unwrap(), Ok(4), "a valid buffer happens to work");
        assert!(input.set_access(Access::NoAccess));
        port.set_probe(false);
        let (code, params, text) = bug_check_of(port.send_message(Some(&input), Some(&output)));
        assert_eq!(code, 0x1E, "{text}");
        assert_eq!(params[0], 0xC000_0005, "{text}");
        assert_eq!(params[2], 0, "a read: {text}");
        let inside = |address: usize| address >= input.address() && address < input.address() + input.len();
        assert!(inside(params[3]), "the faulting address is in the user buffer: {text}");
        assert!(
            text.contains("KMODE_EXCEPTION_NOT_HANDLED") && text.contains("image RVA") || text.contains("outside the image"),
            "{text}"
        );
        assert!(
            emulator
                .violations()
                .iter()
                .any(|v| matches!(v, Violation::UserBufferTouchedDirectly { address, .. } if inside(*address))),
            "{:?}",
            emulator.violations()
        );
        std::mem::forget(port);
    }
}

#[test]
fn an_uncaught_ex_raise_status_is_bug_check_0x1e_at_the_call_site() {
    for profile in [Profile::Release, Profile::Debug] {
        let emulator = load(&CDriver::new("scanner").define("BUG_RAISE_UNCAUGHT").profile(profile));
        let port = emulator.connect_port("\\ScannerPort", &[], 77).unwrap().unwrap();
        let output = emulator.user_buffer(4);
        let input = emulator.user_buffer_from(&raise_command(0x123));
        let (code, params, text) = bug_check_of(port.send_message(Some(&input), Some(&output)));
        assert_eq!(code, 0x1E, "{text}");
        assert_eq!(params[0], 0xC000_0123, "{text}");
        let base = emulator.image_base();
        assert!(params[1] > base && params[1] < base + 0x10_0000, "the exception address is the driver's call site: {text}");
        assert!(text.contains(&format!("image RVA {:#x}", params[1] - base)), "{text}");
        std::mem::forget(port);
    }
}

#[test]
fn continuing_a_noncontinuable_raise_nests_the_dispatchers_raises_into_a_double_fault() {
    for profile in [Profile::Release, Profile::Debug] {
        let emulator = load(&CDriver::new("scanner").define("BUG_CONTINUE_RAISE").profile(profile));
        let port = emulator.connect_port("\\ScannerPort", &[], 77).unwrap().unwrap();
        let output = emulator.user_buffer(4);
        let input = emulator.user_buffer_from(&raise_command(0x123));
        let (code, params, text) = bug_check_of(port.send_message(Some(&input), Some(&output)));
        // The constant filter continues every STATUS_NONCONTINUABLE_EXCEPTION the dispatcher
        // raises for it as well: the raises nest until the kernel stack overflows.
        assert_eq!((code, params[0]), (0x7F, 8), "UNEXPECTED_KERNEL_MODE_TRAP, double fault: {text}");
        std::mem::forget(port);
    }
}

#[test]
fn a_gs_cookie_overrun_is_bug_check_0xf7_with_a_randomised_cookie() {
    let mut cookies = Vec::new();
    for profile in [Profile::Release, Profile::Debug] {
        let emulator = load(&CDriver::new("scanner").define("BUG_GS_OVERRUN").profile(profile));
        let port = emulator.connect_port("\\ScannerPort", &[], 77).unwrap().unwrap();
        let output = emulator.user_buffer(4);
        let small = emulator.user_buffer_from(&command(SUM, &[1; 16]));
        assert_eq!(port.send_message(Some(&small), Some(&output)).unwrap(), Ok(4), "16 bytes fit");
        let long: Vec<u8> = (0..64).collect();
        let input = emulator.user_buffer_from(&command(SUM, &long));
        let (code, params, text) = bug_check_of(port.send_message(Some(&input), Some(&output)));
        assert_eq!(code, 0xF7, "{text}");
        assert_ne!(params[0], params[1], "the stack cookie differs from the expected one: {text}");
        assert_ne!(params[1], 0x2B99_2DDF_A232, "the loader replaced the default cookie: {text}");
        assert_eq!(params[1] >> 48, 0, "x64 cookies keep the top 16 bits clear: {text}");
        assert_eq!(params[2], !params[1], "{text}");
        assert_eq!(params[3], 0, "{text}");
        assert!(text.contains("DRIVER_OVERRAN_STACK_BUFFER"), "{text}");
        cookies.push(params[1]);
        std::mem::forget(port);
    }
    assert_ne!(cookies[0], cookies[1], "each load draws a new cookie");
}

#[test]
fn a_try_around_a_bad_kernel_pointer_is_bug_check_0x50_in_the_default_run() {
    for profile in [Profile::Release, Profile::Debug] {
        let (code, text) = run(&CDriver::new("scanner").define("BUG_TRY_KERNEL_POINTER").profile(profile), "open-storm");
        assert_eq!(code, 2, "{profile:?}:\n{text}");
        assert!(text.contains("bug check 0x00000050 (0xffffc0000bad0000, 0x0"), "{profile:?}:\n{text}");
        assert!(text.contains("PAGE_FAULT_IN_NONPAGED_AREA"), "{profile:?}:\n{text}");
    }
}

#[test]
fn chkstk_probes_big_frames_and_reports_one_past_the_kernel_stack() {
    for profile in [Profile::Release, Profile::Debug] {
        let image = CDriver::new("passthrough").profile(profile).build();
        let parsed = fltemu::pe::ParsedImage::parse(&std::fs::read(&image).unwrap()).unwrap();
        assert!(
            parsed.imports.iter().any(|i| i.dll == "ntoskrnl.exe" && i.name == "__chkstk"),
            "{profile:?}: lld-link binds __chkstk to the ntoskrnl import"
        );
        let clean = Emulator::load(&image, Config::default()).unwrap();
        let report = clean.unload().unwrap();
        assert!(report.is_clean(), "{profile:?}: {report}");
        drop(clean);
        let (code, text) = run(&CDriver::new("passthrough").define("BUG_DEEP_STACK").profile(profile), "load-unload");
        assert_eq!(code, 1, "{profile:?}:\n{text}");
        assert!(text.contains("__chkstk"), "{profile:?}:\n{text}");
    }
}

/// A frame whose language handler is __GSHandlerCheck (our /GS runtime's) takes part in
/// dispatch: an intact cookie lets the exception reach DriverEntry's __except, a damaged one is
/// bug check 0xF7 during the dispatch.
#[test]
fn gs_handler_check_runs_during_dispatch() {
    for profile in [Profile::Release, Profile::Debug] {
        let (code, text) = run(&CDriver::new("gs_handler").profile(profile), "load-unload");
        assert_eq!(code, 0, "{profile:?}:\n{text}");
        assert!(text.contains("gs_handler: caught 0xc0000001 past a __GSHandlerCheck frame"), "{profile:?}:\n{text}");
        let (code, text) = run(&CDriver::new("gs_handler").define("BUG_GS_HANDLER_COOKIE").profile(profile), "load-unload");
        assert_eq!(code, 2, "{profile:?}:\n{text}");
        assert!(text.contains("bug check 0x000000f7") && text.contains("DRIVER_OVERRAN_STACK_BUFFER"), "{profile:?}:\n{text}");
    }
}

/// The loader refuses an image whose load-config SecurityCookie is not writable data.
#[test]
fn a_security_cookie_in_a_read_only_section_refuses_the_load() {
    let image = CDriver::new("passthrough").define("BUG_COOKIE_READ_ONLY").build();
    match Emulator::load(image, Config::default()) {
        Err(EmuError::Load(error)) => assert!(error.to_string().contains("SecurityCookie"), "{error}"),
        other => panic!("expected a load failure, got {other:?}"),
    }
}
