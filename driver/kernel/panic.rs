//! The panic handler: print where, then stop the machine with ctxguard's own bug check code.
//!
//! A panic in a driver is a bug in the driver; spinning would hang the system silently, so the
//! handler bug-checks with a code a crash dump identifies as ours.

use core::panic::PanicInfo;
use ntoskrnl_imports::KeBugCheckEx;

/// ctxguard's bug check code ("CTXG"); parameter 1 is the source line, 2 the column, 3 the
/// address of the file name bytes and 4 their length.
pub const CTXGUARD_BUGCHECK_CODE: u32 = u32::from_be_bytes(*b"CTXG");

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let (file, line, column) =
        info.location().map_or(("?", 0, 0), |location| (location.file(), location.line(), location.column()));
    kprint!("panic at {file}:{line}:{column}: {}", info.message());
    // SAFETY: KeBugCheckEx never returns; the parameters are plain numbers and the address of a
    // static string, for the crash dump only.
    unsafe {
        KeBugCheckEx(CTXGUARD_BUGCHECK_CODE, line as usize, column as usize, file.as_ptr() as usize, file.len());
    }
}
