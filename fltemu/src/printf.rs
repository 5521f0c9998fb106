//! A printf-style formatter for DbgPrintEx (the kernel's C-runtime conventions: `%ws`/`%S` wide
//! strings, `%wZ` a UNICODE_STRING pointer, `%Z` an ANSI_STRING pointer, `I64`/`ll`/`l`/`h`/`z`
//! length modifiers; learn.microsoft.com "DbgPrintEx" and "Format Specification Syntax").
//!
//! Arguments come from a closure returning the next 64-bit slot, because a Win64 C-variadic call
//! passes every integer and pointer argument in one 8-byte slot.

/// Longest string read from driver memory for one `%s`-like conversion.
const MAX_STRING: usize = 4096;

/// Reads a NUL-terminated byte string.
///
/// # Safety
/// `pointer` must be null or point to readable memory up to a NUL or `MAX_STRING` bytes.
unsafe fn narrow(pointer: usize) -> String {
    if pointer == 0 {
        return "(null)".into();
    }
    let mut bytes = Vec::new();
    for index in 0..MAX_STRING {
        // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
        let byte = unsafe { crate::driver_mem::read(pointer.wrapping_add(index) as *const u8) };
        if byte == 0 {
            break;
        }
        bytes.push(byte);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Reads a NUL-terminated UTF-16 string.
///
/// # Safety
/// As [`narrow`], for 16-bit units.
unsafe fn wide(pointer: usize) -> String {
    if pointer == 0 {
        return "(null)".into();
    }
    // A driver's wide string may sit at an odd address (x64 allows it): read bytewise.
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    String::from_utf16_lossy(&unsafe { crate::driver_mem::wide_c_string(pointer as *const u16, MAX_STRING) })
}

/// Reads a counted string (UNICODE_STRING when `is_wide`, ANSI_STRING otherwise): Length at 0,
/// Buffer at 8.
///
/// # Safety
/// `pointer` must be null or point to a valid counted string.
unsafe fn counted(pointer: usize, is_wide: bool) -> String {
    if pointer == 0 {
        return "(null)".into();
    }
    // The structure and its Buffer may sit at odd addresses (x64 allows it): read unaligned.
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    let length = unsafe { crate::driver_mem::read(pointer as *const u16) };
    // Buffer is the pointer at offset 8.
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    let buffer = unsafe { crate::driver_mem::read(pointer.wrapping_add(8) as *const usize) };
    if buffer == 0 {
        return "(null)".into();
    }
    if is_wide {
        // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
        String::from_utf16_lossy(&unsafe { crate::driver_mem::counted_units(buffer as *const u16, length) })
    } else {
        let length = usize::from(length);
        // SAFETY: Length bytes at Buffer are readable for a valid ANSI_STRING; copied out.
        let bytes = unsafe { crate::driver_mem::bytes(buffer as *const u8, length) };
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn pad(text: String, width: usize, left: bool, zero: bool) -> String {
    if text.chars().count() >= width {
        return text;
    }
    let fill = width - text.chars().count();
    if left {
        format!("{text}{}", " ".repeat(fill))
    } else if zero {
        let (sign, digits) = text.strip_prefix('-').map_or(("", text.as_str()), |rest| ("-", rest));
        format!("{sign}{}{digits}", "0".repeat(fill))
    } else {
        format!("{}{text}", " ".repeat(fill))
    }
}

/// A formatted line and whether it used a Unicode conversion (`%C %S %lc %ls %wc %ws %wZ`),
/// which DbgPrintEx allows only at PASSIVE_LEVEL (DDI DbgPrintEx, Remarks).
pub struct Formatted {
    /// The text.
    pub text: String,
    /// A Unicode conversion was used.
    pub unicode: bool,
}

/// Formats `format` (a NUL-terminated C string in driver memory) with arguments from `next`.
///
/// # Safety
/// `format` and every string argument the format names must be readable as described in the
/// readers above.
#[allow(clippy::too_many_lines, clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]
pub unsafe fn format(format: usize, next: &mut dyn FnMut() -> u64) -> Formatted {
    let mut unicode = false;
    // SAFETY: forwarded contract.
    let spec = unsafe { narrow(format) };
    let bytes = spec.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let start = i;
            while i < bytes.len() && bytes[i] != b'%' {
                i += 1;
            }
            out.push_str(&spec[start..i]);
            continue;
        }
        i += 1;
        if i >= bytes.len() {
            break;
        }
        let (mut left, mut zero, mut plus, mut alternate) = (false, false, false, false);
        while i < bytes.len() && matches!(bytes[i], b'-' | b'0' | b'+' | b'#' | b' ') {
            match bytes[i] {
                b'-' => left = true,
                b'0' => zero = true,
                b'+' => plus = true,
                b'#' => alternate = true,
                _ => {}
            }
            i += 1;
        }
        let mut width = 0usize;
        if i < bytes.len() && bytes[i] == b'*' {
            width = next() as i32 as usize;
            i += 1;
        }
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            width = width * 10 + usize::from(bytes[i] - b'0');
            i += 1;
        }
        let mut precision: Option<usize> = None;
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let mut p = 0usize;
            if i < bytes.len() && bytes[i] == b'*' {
                p = next() as i32 as usize;
                i += 1;
            }
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                p = p * 10 + usize::from(bytes[i] - b'0');
                i += 1;
            }
            precision = Some(p);
        }
        // Length modifiers: 64-bit for ll / I64 / z / I / l on pointers; l alone is 32-bit on Windows.
        let mut bits = 32;
        let mut is_wide = false;
        let mut long = false;
        loop {
            if i >= bytes.len() {
                break;
            }
            match bytes[i] {
                b'l' if bytes.get(i + 1) == Some(&b'l') => {
                    bits = 64;
                    i += 2;
                }
                b'I' if bytes.get(i + 1) == Some(&b'6') && bytes.get(i + 2) == Some(&b'4') => {
                    bits = 64;
                    i += 3;
                }
                b'I' if bytes.get(i + 1) == Some(&b'3') && bytes.get(i + 2) == Some(&b'2') => {
                    bits = 32;
                    i += 3;
                }
                b'z' | b'I' | b'j' | b't' => {
                    bits = 64;
                    i += 1;
                }
                b'l' => {
                    long = true;
                    i += 1;
                }
                b'w' => {
                    is_wide = true;
                    i += 1;
                }
                b'h' => {
                    bits = if bytes.get(i + 1) == Some(&b'h') {
                        i += 1;
                        8
                    } else {
                        16
                    };
                    i += 1;
                }
                _ => break,
            }
        }
        let Some(&conversion) = bytes.get(i) else { break };
        i += 1;
        // `l` on %c / %s means a wide character / string, as `w` does.
        let is_wide = is_wide || (long && matches!(conversion, b'c' | b's'));
        unicode |= matches!(conversion, b'C' | b'S') || (is_wide && matches!(conversion, b'c' | b's' | b'Z'));
        let truncate = |value: u64| -> u64 {
            match bits {
                8 => value & 0xFF,
                16 => value & 0xFFFF,
                32 => value & 0xFFFF_FFFF,
                _ => value,
            }
        };
        let text = match conversion {
            b'%' => "%".to_owned(),
            b'd' | b'i' => {
                let raw = truncate(next());
                let value: i64 = match bits {
                    8 => i64::from(raw as u8 as i8),
                    16 => i64::from(raw as u16 as i16),
                    32 => i64::from(raw as u32 as i32),
                    _ => raw as i64,
                };
                if plus && value >= 0 { format!("+{value}") } else { value.to_string() }
            }
            b'u' => truncate(next()).to_string(),
            b'x' => {
                let value = truncate(next());
                if alternate && value != 0 { format!("0x{value:x}") } else { format!("{value:x}") }
            }
            b'X' => {
                let value = truncate(next());
                if alternate && value != 0 { format!("0X{value:X}") } else { format!("{value:X}") }
            }
            b'o' => format!("{:o}", truncate(next())),
            b'p' => format!("{:016X}", next()),
            b'c' => {
                let value = next() as u32;
                char::from_u32(if is_wide { value & 0xFFFF } else { value & 0xFF }).unwrap_or('?').to_string()
            }
            b'C' => char::from_u32(next() as u32 & 0xFFFF).unwrap_or('?').to_string(),
            b's' => {
                let pointer = next() as usize;
                // SAFETY: forwarded contract: string arguments are readable.
                let text = if is_wide { unsafe { wide(pointer) } } else { unsafe { narrow(pointer) } };
                precision.map_or(text.clone(), |p| text.chars().take(p).collect())
            }
            b'S' => {
                let pointer = next() as usize;
                // SAFETY: forwarded contract.
                unsafe { wide(pointer) }
            }
            b'Z' => {
                let pointer = next() as usize;
                // SAFETY: forwarded contract: %Z / %wZ arguments point to counted strings.
                unsafe { counted(pointer, is_wide) }
            }
            other => {
                // Unknown conversion: print it literally, consuming nothing.
                format!("%{}", other as char)
            }
        };
        let zero_ok = zero && !left && !matches!(conversion, b's' | b'S' | b'Z' | b'c' | b'C');
        out.push_str(&pad(text, width, left, zero_ok));
    }
    Formatted { text: out, unicode }
}

#[cfg(test)]
mod tests {
    use super::format;

    fn run(spec: &str, args: &[u64]) -> String {
        let c = format!("{spec}\0");
        let mut it = args.iter().copied();
        // SAFETY: the format is a NUL-terminated Rust string alive for the call; the tests pass
        // only string pointers to live NUL-terminated data.
        unsafe { format(c.as_ptr() as usize, &mut || it.next().unwrap_or(0)) }.text
    }

    fn unicode(spec: &str) -> bool {
        let c = format!("{spec}\0");
        let wide: Vec<u16> = "w\0".encode_utf16().collect();
        let pointer = wide.as_ptr() as u64;
        let counted = [0u64, pointer];
        let argument = if spec.contains('Z') { counted.as_ptr() as u64 } else { pointer };
        // SAFETY: a NUL-terminated format; every string argument is the live wide string (or a
        // counted string whose Length 0 reads nothing).
        unsafe { format(c.as_ptr() as usize, &mut || argument) }.unicode
    }

    #[test]
    fn unicode_conversions_are_detected() {
        for spec in ["%ws", "%wZ", "%S", "%ls", "%C", "%lc", "%wc"] {
            assert!(unicode(spec), "{spec}");
        }
        for spec in ["%s", "%d", "%Z", "%x", "%c"] {
            assert!(!unicode(spec), "{spec}");
        }
    }

    #[test]
    fn integers_and_widths() {
        assert_eq!(run("%d %u %x %X %5d|%-4u|%08x", &[u64::MAX, 7, 255, 255, 42, 3, 0xBEEF]), "-1 7 ff FF    42|3   |0000beef");
        assert_eq!(run("%lu %llu %I64x %zu", &[0x1_0000_0001, u64::MAX, 0x1234_5678_9ABC, 9]), "1 18446744073709551615 123456789abc 9");
        assert_eq!(run("%c%c %%", &[u64::from(b'o'), u64::from(b'k')]), "ok %");
    }

    #[test]
    fn strings() {
        let narrow = b"hello\0";
        let wide: Vec<u16> = "wide\0".encode_utf16().collect();
        let unicode = [8u16, 10, 0, 0];
        let mut unicode_string = [0u64; 2];
        unicode_string[0] = u64::from(unicode[0]) | (u64::from(unicode[1]) << 16);
        unicode_string[1] = wide.as_ptr() as u64;
        assert_eq!(
            run("%s %ws %S %wZ %.3s", &[narrow.as_ptr() as u64, wide.as_ptr() as u64, wide.as_ptr() as u64, unicode_string.as_ptr() as u64, narrow.as_ptr() as u64]),
            "hello wide wide wide hel"
        );
        assert_eq!(run("%s", &[0]), "(null)");
        assert_eq!(run("%p", &[0xABC]), "0000000000000ABC");
    }
}
