//! The stack budget: every callback's frame stays under 1 KiB (README budget table).
//!
//! Frame sizes come from the x64 unwind information the linker puts in `.pdata`/`.xdata`
//! (the same data the kernel's unwinder uses): pushes plus the fixed allocation plus the
//! return address. Function names come from the `/MAP` file the build writes beside the image.

mod support;

mod budget_support;

use budget_support::{CALLBACKS, named_frames};

/// The goal from the contexts issue: no callback frame above 1 KiB.
const FRAME_BUDGET: u64 = 1024;

#[test]
fn every_callback_frame_is_within_one_kib() {
    let report = named_frames(support::driver_image(support::Arch::X64));
    assert!(!report.is_empty(), "no unwind information: frames cannot be measured");
    for (total, name) in &report {
        assert!(*total <= FRAME_BUDGET, "{name} needs a {total}-byte frame, over the {FRAME_BUDGET}-byte budget");
    }
    let deepest = report.last().unwrap();
    println!("deepest frame: {} bytes ({})", deepest.0, deepest.1);
    let callbacks: Vec<_> = report.iter().filter(|(_, name)| CALLBACKS.iter().any(|callback| name.contains(callback))).collect();
    for (total, name) in &callbacks {
        println!("callback frame: {total:>5} bytes  {name}");
    }
    assert!(callbacks.iter().any(|(_, name)| name.contains("post_create")), "post_create's frame was not found in the map");
}
