//! `kprint!`: debug output through `DbgPrintEx` (no-WDK build) or `wdk::println!` (`wdk`).
//!
//! The no-WDK path formats into a fixed stack buffer and prints it with a constant `"%s"`
//! format, so nothing the driver formats is ever interpreted as a format string.

use core::fmt;

/// Bytes of one formatted line, including the terminating NUL; longer lines are truncated.
const LINE_CAPACITY: usize = 256;

/// A fixed-capacity, NUL-terminated line that silently truncates.
pub struct Line {
    buffer: [u8; LINE_CAPACITY],
    length: usize,
}

impl Line {
    /// An empty line.
    #[must_use]
    pub const fn new() -> Self {
        Self { buffer: [0; LINE_CAPACITY], length: 0 }
    }

    /// The line as a C string (always NUL-terminated).
    #[must_use]
    pub fn as_c_str(&self) -> *const u8 {
        self.buffer.as_ptr()
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = LINE_CAPACITY - 1 - self.length;
        let take = text.len().min(room);
        self.buffer[self.length..self.length + take].copy_from_slice(&text.as_bytes()[..take]);
        self.length += take;
        self.buffer[self.length] = 0;
        Ok(())
    }
}

/// `DPFLTR_IHVDRIVER_ID`: the component id for third-party drivers.
const DPFLTR_IHVDRIVER_ID: u32 = 77;
/// `DPFLTR_INFO_LEVEL`.
const DPFLTR_INFO_LEVEL: u32 = 3;

/// Prints one formatted line to the kernel debugger.
pub fn print(arguments: fmt::Arguments<'_>) {
    let mut line = Line::new();
    let _ = fmt::write(&mut line, arguments);
    #[cfg(not(feature = "wdk"))]
    // SAFETY: the format is a static NUL-terminated "%s" and its one argument is the
    // NUL-terminated buffer of `line`, alive for the call.
    unsafe {
        ntoskrnl_imports::DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, c"ctxguard: %s\n".as_ptr().cast(), line.as_c_str());
    }
    #[cfg(feature = "wdk")]
    {
        let _ = (DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL);
        wdk::println!("ctxguard: {}", core::str::from_utf8(&line.buffer[..line.length]).unwrap_or("?"));
    }
}

/// Prints a formatted line to the kernel debugger, prefixed with `ctxguard: `.
macro_rules! kprint {
    ($($argument:tt)*) => {
        $crate::kernel::print::print(format_args!($($argument)*))
    };
}
