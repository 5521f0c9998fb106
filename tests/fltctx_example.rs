//! fltctx's example minifilter (fltctx/examples/passthrough), built for x86_64-pc-windows-msvc
//! and run in fltemu: it registers through fltctx's builders, attaches a stream-handle context
//! per open, and leaves nothing behind.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;

use fltemu::{Config, ContextType, Emulator, OpenOptions, PoolKind, VolumeSpec};
use support::{Arch, build_kernel_image};

#[test]
fn the_example_minifilter_runs_clean_in_fltemu() {
    let image = build_kernel_image("fltctx-example-passthrough", Arch::X64, &[], "fltctx_example_passthrough");
    let emulator = Emulator::load(image, Config::default()).unwrap();
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
    let first = emulator.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    let second = emulator.open(volume, "\\a.txt", &OpenOptions::default()).unwrap();
    let handle = emulator.stream_handle_context(&first).expect("post-create attached a stream-handle context");
    assert_eq!(handle.refcount, 1, "only the link holds it between operations: the guard was released");
    assert_eq!(handle.pool, PoolKind::NonPaged);
    assert_ne!(emulator.stream_handle_context(&second).unwrap().address, handle.address, "one per FILE_OBJECT");
    assert_eq!(emulator.live_context_count(ContextType::StreamHandle), 2);
    for file in [first, second] {
        emulator.cleanup(&file).unwrap();
        emulator.close(file).unwrap();
    }
    assert_eq!(emulator.live_context_count(ContextType::StreamHandle), 0, "each went with its FILE_OBJECT (B9)");
    for round in 0..20 {
        emulator.open_close(volume, &format!("\\f{}.txt", round % 3), &OpenOptions::default()).unwrap();
    }
    let report = emulator.unload().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.contexts_outstanding, 0);
}
