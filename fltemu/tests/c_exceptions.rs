//! Exceptions other than access faults, nested exceptions and the x64 unwind exports, through
//! the C driver `c-drivers/drivers/exceptions.c` built like an MSVC driver (Release and Debug):
//! what it catches is printed by DriverEntry, each bug variant ends the run with its exact bug
//! check and parameters.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod c_build;

use c_build::{CDriver, Profile};
use fltemu::{Config, EmuError, Emulator, Stop};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROFILES: [Profile; 2] = [Profile::Release, Profile::Debug];

fn fltemu(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fltemu")).args(args).output().expect("fltemu runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

fn run(driver: &CDriver) -> (i32, String) {
    let image = driver.build();
    fltemu(&["run", image.to_str().expect("UTF-8 path"), "--scenario", "load-unload"])
}

fn variant(define: &str, profile: Profile) -> CDriver {
    CDriver::new("exceptions").define(define).profile(profile)
}

/// The bug check a load ends in, with the image bytes at its RVA (mapped again, not run).
fn bug_check_at_load(driver: &CDriver) -> (u32, [usize; 4], Option<u32>, Vec<u8>, String) {
    let image = driver.build();
    let bytes = std::fs::read(&image).unwrap();
    match Emulator::load(&image, Config::default()) {
        Err(error @ EmuError::Stopped(Stop::BugCheck { code, params, rva })) => {
            let code_bytes = rva.map_or_else(Vec::new, |rva| {
                let mapped = fltemu::map_image(&bytes).expect("the image maps");
                // SAFETY: the RVA lies inside the mapped image (the bug check computed it so).
                unsafe { std::slice::from_raw_parts((mapped.base + rva as usize) as *const u8, 4) }.to_vec()
            });
            let text = error.to_string();
            (code, params, rva, code_bytes, text)
        }
        Err(other) => panic!("expected a bug check, got {other}"),
        Ok(_) => panic!("expected a bug check, the driver loaded"),
    }
}

#[test]
fn divide_errors_ud2_int3_and_nested_exceptions_reach_the_drivers_except_blocks() {
    for profile in PROFILES {
        let (code, text) = run(&CDriver::new("exceptions").profile(profile));
        assert_eq!(code, 0, "{profile:?}:\n{text}");
        for line in [
            "exceptions: divide by zero caught as 0xc0000094 (at the div: 1)",
            "exceptions: divide overflow caught as 0xc0000095",
            "exceptions: ud2 caught as 0xc000001d",
            "exceptions: int3 caught as 0x80000003 (record as Windows builds it: 1)",
            "exceptions: a fault in a filter reached the outer __except as 0xc0000005 (inner handler 0, nested flag 1)",
            "exceptions: a ud2 in a __finally during unwind reached the __except as 0xc000001d (__finally ran 1 time)",
            "exceptions: a ud2 in a __finally below a declining __except reached f as 0xc000001d (h's filter called 1 time, h's \
             handler ran 0, nested flag 0)",
            "exceptions: a ud2 in a __finally inside a __try/__except of the same function was caught there as 0xc000001d \
             (the caller's __except saw 0)",
            "exceptions: context cleanup caught 0xc0000094",
            "exceptions: work item caught 0xc0000094",
            "exceptions: continuing a noncontinuable exception raised 0xc0000025, caught by the outer __except (it chains to \
             0: none)",
            "exceptions: RtlUnwindEx to a frame below the stack raised 0xc0000028, caught by its caller's __except",
            "exceptions: 12 raises of the dispatcher caught inside a filter, then the outer __except ran",
            "exceptions: div cx behind an ignored REX caught as 0xc0000094",
            "exceptions: div rcx behind a segment prefix caught as 0xc0000094",
            "exceptions: RtlCaptureContext set ContextFlags 0x10000f",
        ] {
            assert!(text.contains(line), "{profile:?}: missing {line:?}:\n{text}");
        }
        assert!(text.contains("violations: 0"), "{profile:?}:\n{text}");
    }
}

#[test]
fn rtl_capture_lookup_and_virtual_unwind_walk_the_drivers_stack_and_rtl_unwind_ex_runs_finally_blocks() {
    for profile in PROFILES {
        let (code, text) = run(&CDriver::new("exceptions").profile(profile));
        assert_eq!(code, 0, "{profile:?}:\n{text}");
        assert!(
            text.contains(
                "exceptions: walked 5 frames (return addresses match: 1, ended outside the image: 1, saved registers found: 1)"
            ),
            "{profile:?}:\n{text}"
        );
        assert!(text.contains("exceptions: RtlUnwindEx ran 2 __finally blocks and resumed the caller with 42"), "{profile:?}:\n{text}");
        assert!(!text.contains("RtlUnwindEx returned"), "{profile:?}:\n{text}");
    }
}

#[test]
fn an_uncaught_divide_by_zero_is_bug_check_0x1e_at_the_div() {
    for profile in PROFILES {
        let (code, params, rva, bytes, text) = bug_check_at_load(&variant("BUG_DIVIDE_UNCAUGHT", profile));
        assert_eq!((code, params[0], params[2], params[3]), (0x1E, 0xC000_0094, 0, 0), "{profile:?}: {text}");
        assert!(rva.is_some(), "{profile:?}: the address is in the image: {text}");
        let opcode = if bytes[0] & 0xF0 == 0x40 { &bytes[1..] } else { &bytes[..] };
        assert!(matches!(opcode[0], 0xF6 | 0xF7) && (opcode[1] >> 3) & 7 >= 6, "{profile:?}: {bytes:02x?} is not a DIV/IDIV: {text}");
        assert!(text.contains("KMODE_EXCEPTION_NOT_HANDLED: exception 0xc0000094 at image RVA"), "{profile:?}: {text}");
    }
    let (code, text) = run(&variant("BUG_DIVIDE_UNCAUGHT", Profile::Release));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("bug check 0x0000001e (0xc0000094, "), "{text}");
}

#[test]
fn an_int3_without_a_debugger_or_try_is_bug_check_0x1e_with_status_breakpoint() {
    for profile in PROFILES {
        let (code, params, rva, bytes, text) = bug_check_at_load(&variant("BUG_INT3_UNCAUGHT", profile));
        assert_eq!((code, params[0], params[2], params[3]), (0x1E, 0x8000_0003, 0, 0), "{profile:?}: {text}");
        assert!(rva.is_some(), "{profile:?}: {text}");
        assert_eq!(bytes[0], 0xCC, "{profile:?}: the exception address is the int3 itself: {text}");
    }
}

#[test]
fn an_nt_assert_without_try_is_bug_check_0x1e_with_status_assertion_failure_at_the_int() {
    for profile in PROFILES {
        let (code, params, rva, bytes, text) = bug_check_at_load(&variant("BUG_ASSERT_UNCAUGHT", profile));
        assert_eq!((code, params[0], params[2], params[3]), (0x1E, 0xC000_0420, 0, 0), "{profile:?}: {text}");
        assert!(rva.is_some(), "{profile:?}: {text}");
        assert_eq!(&bytes[..2], &[0xCD, 0x2C], "{profile:?}: the exception address is the int 0x2c: {text}");
    }
}

#[test]
fn a_fast_fail_is_bug_check_0x139_and_no_except_sees_it() {
    for profile in PROFILES {
        let (code, params, _, _, text) = bug_check_at_load(&variant("BUG_FASTFAIL", profile));
        assert_eq!((code, params[0], params[3]), (0x139, 3, 0), "{profile:?}: {text}");
        assert_ne!(params[1], 0, "{profile:?}: the trap frame: {text}");
        assert_ne!(params[2], 0, "{profile:?}: the exception record: {text}");
        let (exit, text) = run(&variant("BUG_FASTFAIL", profile));
        assert_eq!(exit, 2, "{profile:?}:\n{text}");
        assert!(text.contains("KERNEL_SECURITY_CHECK_FAILURE"), "{profile:?}:\n{text}");
        assert!(!text.contains("a fast fail was caught"), "{profile:?}:\n{text}");
    }
}

#[test]
fn a_filter_that_always_faults_overflows_the_kernel_stack_with_nested_exceptions() {
    for profile in PROFILES {
        let (code, params, _, _, text) = bug_check_at_load(&variant("BUG_FILTER_RAISES_ALWAYS", profile));
        assert_eq!((code, params[0]), (0x7F, 8), "{profile:?}: UNEXPECTED_KERNEL_MODE_TRAP, double fault: {text}");
    }
}

#[test]
fn a_filter_that_always_continues_a_noncontinuable_exception_nests_the_dispatchers_raises_until_a_double_fault() {
    for profile in PROFILES {
        let (code, params, _, _, text) = bug_check_at_load(&variant("BUG_CONTINUE_ALWAYS", profile));
        assert_eq!((code, params[0]), (0x7F, 8), "{profile:?}: UNEXPECTED_KERNEL_MODE_TRAP, double fault: {text}");
    }
    let (exit, text) = run(&variant("BUG_CONTINUE_ALWAYS", Profile::Release));
    assert_eq!(exit, 2, "{text}");
    assert!(text.contains("raises of the dispatcher still running overflowed the 24 KiB kernel stack"), "{text}");
    assert!(text.contains("the dispatcher raises 0xc0000025"), "{text}");
}

#[test]
fn a_fault_with_rsp_outside_the_threads_stack_is_a_double_fault_not_a_dispatch() {
    for profile in PROFILES {
        let (code, params, _, _, text) = bug_check_at_load(&variant("BUG_BAD_RSP", profile));
        assert_eq!((code, params[0]), (0x7F, 8), "{profile:?}: {text}");
        let (exit, text) = run(&variant("BUG_BAD_RSP", profile));
        assert_eq!(exit, 2, "{profile:?}:\n{text}");
        assert!(text.contains("outside the thread's kernel stack or with no room left on it"), "{profile:?}:\n{text}");
        assert!(!text.contains("the fault on a bad stack was caught"), "{profile:?}:\n{text}");
    }
}

/// The pieces of a built driver image the unwind-data mutations need (read from the file).
struct Pe {
    bytes: Vec<u8>,
    /// (virtual address, virtual size, file offset) per section.
    sections: Vec<(u32, u32, u32)>,
}

impl Pe {
    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]])
    }
    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap())
    }
    fn put32(&mut self, at: usize, value: u32) {
        self.bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
    fn new(bytes: Vec<u8>) -> Self {
        let mut pe = Self { bytes, sections: Vec::new() };
        let header = pe.u32(0x3C) as usize;
        let table = header + 24 + usize::from(pe.u16(header + 20));
        pe.sections = (0..usize::from(pe.u16(header + 6)))
            .map(|index| {
                let at = table + index * 40;
                (pe.u32(at + 12), pe.u32(at + 8), pe.u32(at + 20))
            })
            .collect();
        pe
    }
    /// Recomputes the optional header's CheckSum (the PE format's: 16-bit one's-complement sum
    /// of the file with the field itself taken as 0, plus the file length), which fltemu checks.
    fn fix_checksum(&mut self) {
        let field = self.u32(0x3C) as usize + 24 + 64;
        self.put32(field, 0);
        let mut sum = 0u64;
        for (index, pair) in self.bytes.chunks(2).enumerate() {
            if index * 2 == field || index * 2 == field + 2 {
                continue;
            }
            sum += u64::from(u16::from_le_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        let length = u64::try_from(self.bytes.len()).unwrap();
        self.put32(field, u32::try_from(((sum & 0xFFFF) + (sum >> 16)) + length).unwrap());
    }
    /// The file offset of `rva`.
    fn offset(&self, rva: u32) -> usize {
        let (address, _, raw) = self.sections.iter().find(|(address, size, _)| rva >= *address && rva < address + size).expect("RVA in a section");
        (raw + (rva - address)) as usize
    }
    /// File offsets of the UNWIND_INFOs with an exception handler (not chained), each with the
    /// offset of its handler RVA (the handler data follows it).
    fn handler_infos(&self) -> Vec<(usize, usize)> {
        let header = self.u32(0x3C) as usize;
        let directory = header + 24 + 112 + 3 * 8;
        let (pdata, size) = (self.u32(directory), self.u32(directory + 4));
        let mut found: Vec<(usize, usize)> = (0..size / 12)
            .filter_map(|index| {
                let info = self.offset(self.u32(self.offset(pdata + index * 12) + 8));
                let flags = self.bytes[info] >> 3;
                let codes = usize::from(self.bytes[info + 2]);
                (flags & 1 != 0 && flags & 4 == 0).then_some((info, info + 4 + codes.div_ceil(2) * 4))
            })
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }
    /// File offsets of the scope records of every handler whose data is a plausible scope table.
    fn scope_records(&self) -> Vec<usize> {
        self.handler_infos()
            .into_iter()
            .flat_map(|(_, handler)| {
                let count = self.u32(handler + 4) as usize;
                (1..64).contains(&count).then(|| (0..count).map(move |index| handler + 8 + index * 16)).into_iter().flatten()
            })
            .collect()
    }
}

/// Runs a copy of the clean driver with `mutate` applied to its image.
fn run_mutated(profile: Profile, name: &str, mutate: impl Fn(&mut Pe)) -> (i32, String) {
    let image = CDriver::new("exceptions").profile(profile).build();
    let mut pe = Pe::new(std::fs::read(&image).unwrap());
    mutate(&mut pe);
    pe.fix_checksum();
    let path = image.with_file_name(format!("exceptions-mutated-{name}-{profile:?}.sys"));
    std::fs::write(&path, &pe.bytes).unwrap();
    fltemu(&["run", path.to_str().expect("UTF-8 path"), "--scenario", "load-unload"])
}

#[test]
fn corrupt_unwind_data_and_scope_tables_end_in_bug_check_0x1e_with_one_line_naming_them() {
    type Mutation = (&'static str, fn(&mut Pe), &'static str);
    let mutations: [Mutation; 8] = [
        (
            "handler-outside",
            |pe| pe.handler_infos().into_iter().for_each(|(_, handler)| pe.put32(handler, 0x7FFF_0000)),
            "names a language handler at RVA 0x7fff0000, outside the image's executable sections",
        ),
        ("handler-in-headers", |pe| pe.handler_infos().into_iter().for_each(|(_, handler)| pe.put32(handler, 0x10)), "language handler at RVA 0x10"),
        ("bad-version", |pe| pe.handler_infos().into_iter().for_each(|(info, _)| pe.bytes[info] |= 7), "is malformed or reaches outside the image"),
        (
            "scope-count",
            |pe| pe.handler_infos().into_iter().for_each(|(_, handler)| pe.put32(handler + 4, 0x0FFF_FFFF)),
            "claims 268435455 scope records, which reach past the image",
        ),
        (
            "filter-outside",
            |pe| {
                for record in pe.scope_records() {
                    if pe.u32(record + 8) > 1 && pe.u32(record + 12) != 0 {
                        pe.put32(record + 8, 0x10);
                    }
                }
            },
            "names a filter at RVA 0x10, outside the image's executable sections",
        ),
        (
            "target-outside",
            |pe| {
                for record in pe.scope_records() {
                    if pe.u32(record + 12) != 0 {
                        pe.put32(record + 12, 0x7FFF_0000);
                    }
                }
            },
            "names a __except target at RVA 0x7fff0000",
        ),
        (
            "finally-outside",
            |pe| {
                for record in pe.scope_records() {
                    if pe.u32(record + 12) == 0 {
                        pe.put32(record + 8, 0xFFFF_FFF0);
                    }
                }
            },
            "names a __finally block at RVA 0xfffffff0",
        ),
        (
            // Every UNWIND_INFO moved into a section with neither read, write nor execute rights
            // (IMAGE_SCN_CNT_INITIALIZED_DATA only): it is still readable, as every section of a
            // kernel image is, and what it holds there (relocation blocks) is not unwind data.
            "unwind-info-in-a-section-without-rights",
            |pe| {
                let header = pe.u32(0x3C) as usize;
                let table = header + 24 + usize::from(pe.u16(header + 20));
                let reloc = (0..usize::from(pe.u16(header + 6)))
                    .map(|index| table + index * 40)
                    .find(|at| &pe.bytes[*at..*at + 8] == b".reloc\0\0")
                    .expect("the image has a .reloc section");
                pe.put32(reloc + 36, 0x40);
                let reloc_rva = pe.u32(reloc + 12);
                let directory = header + 24 + 112 + 3 * 8;
                let (pdata, size) = (pe.u32(directory), pe.u32(directory + 4));
                for index in 0..size / 12 {
                    let at = pe.offset(pdata + index * 12) + 8;
                    pe.put32(at, reloc_rva);
                }
            },
            "is malformed or reaches outside the image",
        ),
    ];
    for profile in PROFILES {
        for (name, mutate, reason) in mutations {
            let (exit, text) = run_mutated(profile, name, mutate);
            assert_eq!(exit, 2, "{name} {profile:?}: a clean bug check report, not a crash:\n{text}");
            assert!(text.contains("bug check 0x0000001e (0xc0000094, "), "{name} {profile:?}:\n{text}");
            assert!(text.contains(reason), "{name} {profile:?}: missing {reason:?}:\n{text}");
            assert!(!text.contains("panicked") && !text.contains("crash"), "{name} {profile:?}:\n{text}");
        }
    }
}

#[test]
fn an_exception_escaping_a_cleanup_callback_is_reported_naming_the_export_it_would_cross() {
    for profile in PROFILES {
        let (code, text) = run(&variant("BUG_CLEANUP_RAISES", profile));
        assert_eq!(code, 2, "{profile:?}:\n{text}");
        assert!(text.contains("bug check 0x0000001e (0xc0000094, "), "{profile:?}:\n{text}");
        assert!(text.contains("would leave it through FltReleaseContext"), "{profile:?}:\n{text}");
        assert!(!text.contains("the __try around FltReleaseContext caught"), "{profile:?}:\n{text}");
    }
}

#[test]
fn an_exception_escaping_a_work_item_is_bug_check_0x7e() {
    for profile in PROFILES {
        let (code, text) = run(&variant("BUG_WORK_ITEM_RAISES", profile));
        assert_eq!(code, 2, "{profile:?}:\n{text}");
        assert!(text.contains("bug check 0x0000007e (0xc0000094, "), "{profile:?}:\n{text}");
        assert!(text.contains("SYSTEM_THREAD_EXCEPTION_NOT_HANDLED"), "{profile:?}:\n{text}");
    }
}

#[test]
fn misused_unwind_routines_are_invalid_parameter_violations() {
    for (define, line) in [
        ("BUG_CAPTURE_MISALIGNED", "RtlCaptureContext: ContextRecord is not 16-byte aligned"),
        ("BUG_LOOKUP_NULL_BASE", "RtlLookupFunctionEntry: ImageBase is NULL"),
        ("BUG_UNWIND_FOREIGN_ENTRY", "RtlVirtualUnwind: FunctionEntry is not one of the image's .pdata entries"),
    ] {
        for profile in PROFILES {
            let (code, text) = run(&variant(define, profile));
            assert_eq!(code, 1, "{define} {profile:?}:\n{text}");
            assert!(text.contains(line), "{define} {profile:?}:\n{text}");
            assert!(text.contains("violations: 1"), "{define} {profile:?}:\n{text}");
        }
    }
}

/// The id of `pid`'s driver worker thread once it is running (spinning in DriverEntry).
fn spinning_driver_thread(pid: u32) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
            // The state follows the parenthesised name: R = running (the spin), S = waiting.
            let running = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('R'));
            if comm.trim() == "fltemu-driver" && running {
                return task.file_name().to_str()?.parse().ok();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_fault_signal_sent_to_a_driver_thread_is_not_an_exception_its_default_action_applies() {
    let image = variant("SPIN_IN_DRIVER_ENTRY", Profile::Release).build();
    for signal in [libc::SIGSEGV, libc::SIGILL, libc::SIGTRAP, libc::SIGFPE] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fltemu"));
        command.args(["run", image.to_str().expect("UTF-8 path"), "--scenario", "load-unload", "--call-timeout-ms", "60000"]);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        let no_core_dump = move || {
            // SAFETY: setrlimit on the child itself with a valid rlimit (async-signal-safe).
            unsafe { libc::setrlimit(libc::RLIMIT_CORE, &raw const no_core) };
            Ok(())
        };
        // SAFETY: the hook runs only setrlimit between fork and exec: the child dumps no core.
        unsafe { command.pre_exec(no_core_dump) };
        let child = command.spawn().expect("fltemu starts");
        let pid = child.id();
        let Some(tid) = spinning_driver_thread(pid) else {
            let output = child.wait_with_output().unwrap();
            panic!("signal {signal}: no spinning driver thread:\n{}", String::from_utf8_lossy(&output.stdout));
        };
        // SAFETY: tgkill with the child's own pid and one of its thread ids; no memory is involved.
        let sent = unsafe { libc::syscall(libc::SYS_tgkill, libc::c_long::from(pid.cast_signed()), libc::c_long::from(tid), libc::c_long::from(signal)) };
        assert_eq!(sent, 0, "signal {signal}: tgkill failed");
        let output = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.signal(), Some(signal), "signal {signal}: the process ends by it, not as a driver exception:\n{text}");
        assert!(!text.contains("bug check"), "signal {signal}:\n{text}");
    }
}

#[test]
fn a_misaligned_establisher_frame_stops_the_dispatch_with_the_stack_invalid() {
    for profile in PROFILES {
        let (code, params, _, _, text) = bug_check_at_load(&variant("BUG_MISALIGNED_FRAME", profile));
        assert_eq!((code, params[0]), (0x1E, 0xC000_001D), "{profile:?}: the ud2 is not handled: {text}");
        let (exit, text) = run(&variant("BUG_MISALIGNED_FRAME", profile));
        assert_eq!(exit, 2, "{profile:?}:\n{text}");
        assert!(text.contains("EXCEPTION_STACK_INVALID: the frame at image RVA"), "{profile:?}:\n{text}");
        assert!(text.contains("misaligned or outside the thread's stack, so the dispatch of exception 0xc000001d stops there"), "{profile:?}:\n{text}");
        assert!(!text.contains("the fault below a misaligned frame was caught"), "{profile:?}:\n{text}");
    }
}

#[test]
fn a_frame_pointer_off_the_stack_is_reported_as_a_corrupt_stack() {
    for profile in PROFILES {
        let (exit, text) = run(&variant("BUG_FRAME_OFF_STACK", profile));
        assert_eq!(exit, 2, "{profile:?}:\n{text}");
        assert!(text.contains("bug check 0x0000001e (0xc000001d, "), "{profile:?}:\n{text}");
        assert!(
            text.contains("fltemu: corrupt stack: the unwind codes read the stack at 0x1000, outside the thread's stack"),
            "{profile:?}:\n{text}"
        );
        assert!(!text.contains("the fault below a misaligned frame was caught"), "{profile:?}:\n{text}");
    }
}

#[test]
fn a_finally_that_starts_an_exit_unwind_every_time_nests_unwinds_until_a_double_fault() {
    for profile in PROFILES {
        let (code, params, _, _, text) = bug_check_at_load(&variant("BUG_UNWIND_RECURSION", profile));
        assert_eq!((code, params[0]), (0x7F, 8), "{profile:?}: UNEXPECTED_KERNEL_MODE_TRAP, double fault: {text}");
    }
    let (exit, text) = run(&variant("BUG_UNWIND_RECURSION", Profile::Release));
    assert_eq!(exit, 2, "{text}");
    assert!(text.contains("a nested unwind at image RVA"), "{text}");
    assert!(text.contains("overflowed the 24 KiB kernel stack"), "{text}");
}
