//! fltemu's communication ports, both sides, with the port fixture (an echo server).
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use fltemu::{Access, Config, EmuError, Emulator, OpenOptions, Violation, VolumeSpec, hresult_from_nt, status};
use support::{Arch, build_kernel_image};

fn fixture(features: &[&str]) -> PathBuf {
    build_kernel_image("fltemu-fixture-driver", Arch::X64, features, "fltemu_fixture_driver")
}

#[test]
fn echo_through_user_buffers_and_limits() {
    let emulator = Emulator::load(fixture(&["with-port"]), Config::default()).unwrap();
    assert_eq!(emulator.connect_port("\\NoSuchPort", &[], 77).unwrap().err(), Some(hresult_from_nt(status::OBJECT_NAME_NOT_FOUND)));
    let port = emulator.connect_port("\\FxPort", b"hello", 77).unwrap().expect("connects");
    // MaxConnections = 1 (F2).
    assert_eq!(emulator.connect_port("\\FxPort", &[], 78).unwrap().err(), Some(0x8007_04D6_u32.cast_signed()));

    let input = emulator.user_buffer_from(b"abcdef");
    let output = emulator.user_buffer(16);
    assert_eq!(port.send_message(Some(&input), Some(&output)).unwrap(), Ok(6));
    assert_eq!(&output.read()[..6], b"fedcba");

    // Misaligned user buffers are passed as they are (F4: not alignment-checked).
    let odd = emulator.user_buffer_misaligned(3, 1);
    assert!(odd.write(b"xyz"));
    assert_eq!(odd.address() % 16, 1);
    assert_eq!(port.send_message(Some(&odd), Some(&output)).unwrap(), Ok(3));
    assert_eq!(&output.read()[..3], b"zyx");

    // Short output: the driver refuses with STATUS_INVALID_PARAMETER → E_INVALIDARG-like HRESULT.
    let short = emulator.user_buffer(2);
    assert_eq!(port.send_message(Some(&input), Some(&short)).unwrap(), Err(hresult_from_nt(status::INVALID_PARAMETER)));

    // An invalid input buffer is refused by Filter Manager's probe …
    assert!(input.set_access(Access::Unmapped));
    assert_eq!(port.send_message(Some(&input), Some(&output)).unwrap(), Err(hresult_from_nt(status::ACCESS_VIOLATION)));
    // … and, when it becomes invalid after the probe, MmCopyMemory fails without a fault.
    port.set_probe(false);
    assert_eq!(port.send_message(Some(&input), Some(&output)).unwrap(), Err(hresult_from_nt(status::ACCESS_VIOLATION)));
    // A read-only output cannot be secured for writing.
    let readable = emulator.user_buffer_from(b"qq");
    assert!(output.set_access(Access::ReadOnly));
    assert_eq!(port.send_message(Some(&readable), Some(&output)).unwrap(), Err(hresult_from_nt(status::ACCESS_VIOLATION)));

    port.close().unwrap();
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn driver_messages_are_delivered_replied_and_time_out() {
    let emulator = Emulator::load(fixture(&["with-port"]), Config::default()).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let port = emulator.connect_port("\\FxPort", &[], 9).unwrap().unwrap();
    std::thread::scope(|scope| {
        let opener = scope.spawn(|| emulator.open(volume, "\\a.txt", &OpenOptions::default()).unwrap());
        let message = port.get_message(1024, Some(Duration::from_secs(10))).expect("the driver's FltSendMessage arrives");
        assert_eq!(message.payload, b"open");
        assert_eq!(message.reply_length, 8);
        port.reply_message(message.message_id, b"ok").unwrap();
        emulator.close(opener.join().unwrap()).unwrap();
        // A second reply has no waiter.
        assert_eq!(port.reply_message(message.message_id, b"again"), Err(fltemu::HRESULT_NO_WAITER_FOR_REPLY));
    });
    // Nobody reads: FltSendMessage times out after 100 ms (STATUS_TIMEOUT, a success code) and
    // the create still completes.
    let started = std::time::Instant::now();
    let file = emulator.open(volume, "\\b.txt", &OpenOptions::default()).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
    emulator.close(file).unwrap();
    // The timed-out message was withdrawn.
    assert_eq!(port.get_message(1024, Some(Duration::from_millis(10))).err(), Some(hresult_from_nt(status::TIMEOUT)));
    port.close().unwrap();
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn touching_a_user_buffer_directly_is_reported() {
    let emulator = Emulator::load(fixture(&["bug-touch-user-buffer"]), Config::default()).unwrap();
    let port = emulator.connect_port("\\FxPort", &[], 5).unwrap().unwrap();
    let input = emulator.user_buffer_from(b"abc");
    let output = emulator.user_buffer(8);
    assert_eq!(port.send_message(Some(&input), Some(&output)).unwrap(), Ok(3), "a valid buffer happens to work");
    assert!(input.set_access(Access::NoAccess));
    port.set_probe(false);
    match port.send_message(Some(&input), Some(&output)) {
        // An access violation no __except handles: bug check 0x1E with the address as parameter 4.
        Err(EmuError::Stopped(fltemu::Stop::BugCheck { code: 0x1E, params, .. })) => assert_eq!(params[3], input.address()),
        other => panic!("expected bug check 0x1E, got {other:?}"),
    }
    assert!(
        emulator.violations().iter().any(|v| matches!(v, Violation::UserBufferTouchedDirectly { address, .. } if *address == input.address())),
        "{:?}",
        emulator.violations()
    );
    // The emulator refuses further driver calls after a crash.
    assert!(matches!(emulator.unload(), Err(EmuError::Stopped(_))));
}

#[test]
fn user_ranges_running_into_the_guard_page_are_not_accessible() {
    let emulator = Emulator::load(fixture(&["with-port"]), Config::default()).unwrap();
    let port = emulator.connect_port("\\FxPort", &[], 5).unwrap().unwrap();
    // 16-byte buffers end exactly at their guard page (buffers are 16-byte aligned).
    let input = emulator.user_buffer_from(b"0123456789abcdef");
    let output = emulator.user_buffer(16);
    // The claimed output length runs past the buffer into the guard page: Filter Manager's
    // probe refuses it, and without the probe MmSecureVirtualMemory does.
    let claimed = Some((output.address(), 32));
    assert_eq!(port.send_raw(Some((input.address(), 16)), claimed).unwrap(), Err(hresult_from_nt(status::ACCESS_VIOLATION)));
    port.set_probe(false);
    let long_input = emulator.user_buffer_from(&[7; 32]);
    assert_eq!(port.send_raw(Some((long_input.address(), 32)), claimed).unwrap(), Err(hresult_from_nt(status::ACCESS_VIOLATION)));
    // Reading past the input's end: MmCopyMemory copies what it can and fails (no fault).
    let wide_output = emulator.user_buffer(64);
    assert_eq!(
        port.send_raw(Some((input.address(), 32)), Some((wide_output.address(), 64))).unwrap(),
        Err(hresult_from_nt(status::ACCESS_VIOLATION))
    );
    assert!(emulator.violations().is_empty(), "{:?}", emulator.violations());
    port.close().unwrap();
    assert!(emulator.unload().unwrap().is_clean());
}
