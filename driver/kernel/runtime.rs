//! Symbols the compiler expects from a C runtime, which a kernel image links without.
//!
//! `memcpy`, `memset`, `memmove` and `memcmp` are imported from ntoskrnl by the
//! `ntoskrnl-imports` crate. `__chkstk` is deliberately absent: a frame over 4 KiB would need
//! it, and the link then fails, which is how the build refuses a large stack frame.

use ntoskrnl_imports as _;

/// Tells the linker floating point is used; the kernel saves no FP state for us, and ctxguard
/// uses none.
#[unsafe(no_mangle)]
#[used]
pub static _fltused: i32 = 0;

/// The unwinding personality routine referenced by unoptimised builds (rust-lang/rust#101134).
/// With `panic = "abort"` nothing unwinds, so it is never called.
#[unsafe(no_mangle)]
pub extern "C" fn __CxxFrameHandler3() -> i32 {
    0
}
