//! Run-time library routines minifilters call: counted strings (Rtl*UnicodeString),
//! RtlCompareMemory, FsRtlIsNameInExpression, the kernel C runtime's string functions
//! (wcslen … _wcsnicmp, wcsstr, the `_s` copies) and its formatted printing (_vsnwprintf,
//! _snwprintf, swprintf_s, _vsnprintf, _snprintf: what ntstrsafe's RtlStringCch*Printf inlines
//! and drivers' own logging call), DbgPrint and ZwClose. Strings are read up to their
//! documented bounds; the checks are the documented ones (buffer sizes, allocations freed).

use windows_sys::Win32::Foundation::UNICODE_STRING;

use crate::catalog::{Emulated, Source};
use crate::driver_mem;
use crate::exec::{APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::objects;
use crate::state::status;

/// Longest C string read (the same bound DbgPrintEx uses).
const MAX_CHARS: usize = driver_mem::MAX_CHARS;
const ANY: u8 = 15;

// Driver strings may sit at odd addresses (x64 allows it), so wide strings and counted strings
// are read and written through driver_mem, never as aligned `u16` accesses.

/// The units of a NUL-terminated UTF-16 string before its NUL (the C contract of each caller).
fn wide_len(text: *const u16) -> usize {
    // SAFETY: a pointer the driver passed (the C contract: a NUL-terminated string); the
    // units read stop at the NUL, and driver_mem checks the NULL region.
    (0..MAX_CHARS).position(|index| unsafe { driver_mem::unit_at(text, index) } == 0).unwrap_or(MAX_CHARS)
}

fn wide(text: *const u16) -> Vec<u16> {
    wide_bounded(text, MAX_CHARS)
}

/// At most `count` units of a NUL-terminated string: the `n` routines read no further (the C
/// contract lets their argument be an array of `count` units without a NUL).
fn wide_bounded(text: *const u16, count: usize) -> Vec<u16> {
    // SAFETY: a pointer the driver passed, readable to its NUL or `count` units (the C
    // contract); driver_mem checks the NULL region.
    unsafe { driver_mem::wide_c_string(text, count.min(MAX_CHARS)) }
}

fn narrow(text: *const u8) -> Vec<u8> {
    // SAFETY: a NUL-terminated string the driver passed (the C contract), copied out; driver_mem
    // checks the NULL region.
    unsafe { driver_mem::c_string(text, MAX_CHARS) }
}

fn upcase(unit: u16) -> u16 {
    char::from_u32(u32::from(unit)).and_then(|c| c.to_uppercase().next()).and_then(|c| u16::try_from(u32::from(c)).ok()).unwrap_or(unit)
}

fn downcase(unit: u16) -> u16 {
    char::from_u32(u32::from(unit)).and_then(|c| c.to_lowercase().next()).and_then(|c| u16::try_from(u32::from(c)).ok()).unwrap_or(unit)
}

fn compare(a: &[u16], b: &[u16], insensitive: bool) -> i32 {
    for (x, y) in a.iter().zip(b) {
        let (x, y) = if insensitive { (upcase(*x), upcase(*y)) } else { (*x, *y) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    match a.len().cmp(&b.len()) {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => 1,
    }
}

fn sign(value: i32) -> i32 {
    value.signum()
}

/// The characters of a counted string (empty for NULL), copied out.
fn chars(string: *const UNICODE_STRING) -> Vec<u16> {
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { driver_mem::unicode_string(string) }
}

fn header(string: *const UNICODE_STRING) -> UNICODE_STRING {
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { driver_mem::read(string) }
}

fn set_length(string: *mut UNICODE_STRING, bytes: usize) {
    // Length is the first field.
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { driver_mem::write(string.cast::<u16>(), bytes as u16) };
}

/// `RtlInitUnicodeString` (wdm.h; ≤ DISPATCH for non-paged source): Length = bytes without the
/// NUL, MaximumLength = Length + 2 (both 0 for NULL); longer than 32,766 characters is flagged.
extern "win64" fn rtl_init_unicode_string(destination: *mut UNICODE_STRING, source: *const u16) {
    objects::count("RtlInitUnicodeString", DISPATCH_LEVEL);
    let (length, maximum) = if source.is_null() {
        (0, 0)
    } else {
        let bytes = wide_len(source) * 2;
        if bytes > 0xFFFC {
            objects::flag(crate::Violation::InvalidParameter { function: "RtlInitUnicodeString", reason: "source longer than UNICODE_STRING_MAX_CHARS" });
        }
        (bytes.min(0xFFFC) as u16, (bytes + 2).min(0xFFFE) as u16)
    };
    // SAFETY: the caller's out UNICODE_STRING.
    unsafe { destination.write_unaligned(UNICODE_STRING { Length: length, MaximumLength: maximum, Buffer: source.cast_mut() }) };
}

/// `RtlCopyUnicodeString` (wdm.h; ≤ DISPATCH for non-paged): copies up to MaximumLength bytes
/// (truncating), NUL-terminates when room remains; NULL source → Length 0.
extern "win64" fn rtl_copy_unicode_string(destination: *mut UNICODE_STRING, source: *const UNICODE_STRING) {
    objects::count("RtlCopyUnicodeString", DISPATCH_LEVEL);
    let target = header(destination);
    let from = chars(source);
    let count = from.len().min(usize::from(target.MaximumLength) / 2);
    // The destination buffer holds MaximumLength bytes; `from` is a copy, so overlap is harmless.
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { driver_mem::write_units(target.Buffer, &from[..count]) };
    if count * 2 + 2 <= usize::from(target.MaximumLength) {
        // Room for the terminator.
        // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
        unsafe { driver_mem::write(target.Buffer.wrapping_add(count), 0) };
    }
    set_length(destination, count * 2);
}

/// `RtlAppendUnicodeStringToString` (wdm.h): STATUS_BUFFER_TOO_SMALL when it does not fit.
extern "win64" fn rtl_append_unicode_string_to_string(destination: *mut UNICODE_STRING, source: *const UNICODE_STRING) -> i32 {
    objects::count("RtlAppendUnicodeStringToString", DISPATCH_LEVEL);
    append(destination, &chars(source))
}

/// `RtlAppendUnicodeToString` (wdm.h): appends a NUL-terminated string.
extern "win64" fn rtl_append_unicode_to_string(destination: *mut UNICODE_STRING, source: *const u16) -> i32 {
    objects::count("RtlAppendUnicodeToString", DISPATCH_LEVEL);
    append(destination, &wide(source))
}

fn append(destination: *mut UNICODE_STRING, from: &[u16]) -> i32 {
    let target = header(destination);
    let have = usize::from(target.Length) / 2;
    let room = usize::from(target.MaximumLength) / 2;
    if have + from.len() > room {
        return status::BUFFER_TOO_SMALL;
    }
    // The destination buffer holds MaximumLength bytes; the sum fits (checked).
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { driver_mem::write_units(target.Buffer.wrapping_add(have), from) };
    if have + from.len() < room {
        // Room for the terminator.
        // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
        unsafe { driver_mem::write(target.Buffer.wrapping_add(have + from.len()), 0) };
    }
    set_length(destination, (have + from.len()) * 2);
    status::SUCCESS
}

/// `RtlCompareUnicodeString` (wdm.h; PASSIVE): < 0, 0, > 0.
extern "win64" fn rtl_compare_unicode_string(a: *const UNICODE_STRING, b: *const UNICODE_STRING, insensitive: u8) -> i32 {
    objects::count("RtlCompareUnicodeString", PASSIVE_LEVEL);
    sign(compare(&chars(a), &chars(b), insensitive != 0))
}

/// `RtlEqualUnicodeString` (wdm.h; ≤ DISPATCH for non-paged strings).
extern "win64" fn rtl_equal_unicode_string(a: *const UNICODE_STRING, b: *const UNICODE_STRING, insensitive: u8) -> u8 {
    objects::count("RtlEqualUnicodeString", DISPATCH_LEVEL);
    let (a, b) = (chars(a), chars(b));
    u8::from(a.len() == b.len() && compare(&a, &b, insensitive != 0) == 0)
}

/// `RtlPrefixUnicodeString` (ntifs.h; PASSIVE).
extern "win64" fn rtl_prefix_unicode_string(prefix: *const UNICODE_STRING, string: *const UNICODE_STRING, insensitive: u8) -> u8 {
    objects::count("RtlPrefixUnicodeString", PASSIVE_LEVEL);
    let (prefix, string) = (chars(prefix), chars(string));
    u8::from(prefix.len() <= string.len() && compare(&prefix, &string[..prefix.len()], insensitive != 0) == 0)
}

/// `RtlUpcaseUnicodeChar` (ntifs.h; any IRQL).
extern "win64" fn rtl_upcase_unicode_char(unit: u16) -> u16 {
    objects::count("RtlUpcaseUnicodeChar", ANY);
    upcase(unit)
}

/// The tag of the buffers Rtl*UnicodeString allocate for the caller (RtlFreeUnicodeString frees
/// them; a leak shows as PoolLeaked with this tag).
pub const STRING_TAG: u32 = u32::from_le_bytes(*b"RtlS");

fn convert_case(function: &'static str, destination: *mut UNICODE_STRING, source: *const UNICODE_STRING, allocate: u8, up: bool) -> i32 {
    objects::count(function, PASSIVE_LEVEL);
    let from = chars(source);
    let converted: Vec<u16> = from.iter().map(|u| if up { upcase(*u) } else { downcase(*u) }).collect();
    let buffer = if allocate != 0 {
        let block = crate::nt::ex_allocate_pool2(0x100, converted.len().max(1) * 2, STRING_TAG).cast::<u16>();
        if block.is_null() {
            return status::INSUFFICIENT_RESOURCES;
        }
        // SAFETY: the caller's out UNICODE_STRING.
        unsafe { destination.write_unaligned(UNICODE_STRING { Length: 0, MaximumLength: (converted.len() * 2) as u16, Buffer: block }) };
        block
    } else {
        let target = header(destination);
        if usize::from(target.MaximumLength) < converted.len() * 2 {
            return status::BUFFER_OVERFLOW;
        }
        target.Buffer
    };
    // The buffer holds at least the converted length (checked, or just allocated).
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { driver_mem::write_units(buffer, &converted) };
    set_length(destination, converted.len() * 2);
    status::SUCCESS
}

/// `RtlUpcaseUnicodeString` (ntifs.h; PASSIVE): AllocateDestinationString allocates from paged
/// pool (free with RtlFreeUnicodeString); too small a buffer → STATUS_BUFFER_OVERFLOW.
extern "win64" fn rtl_upcase_unicode_string(destination: *mut UNICODE_STRING, source: *const UNICODE_STRING, allocate: u8) -> i32 {
    convert_case("RtlUpcaseUnicodeString", destination, source, allocate, true)
}

/// `RtlDowncaseUnicodeString` (ntifs.h; PASSIVE): as RtlUpcaseUnicodeString.
extern "win64" fn rtl_downcase_unicode_string(destination: *mut UNICODE_STRING, source: *const UNICODE_STRING, allocate: u8) -> i32 {
    convert_case("RtlDowncaseUnicodeString", destination, source, allocate, false)
}

/// `RtlFreeUnicodeString` (wdm.h; PASSIVE): frees a buffer an Rtl routine allocated.
extern "win64" fn rtl_free_unicode_string(string: *mut UNICODE_STRING) {
    objects::count("RtlFreeUnicodeString", PASSIVE_LEVEL);
    let value = header(string);
    if !value.Buffer.is_null() {
        crate::nt::ex_free_pool_with_tag(value.Buffer.cast(), STRING_TAG);
    }
    // SAFETY: the caller's UNICODE_STRING.
    unsafe { string.write_unaligned(UNICODE_STRING { Length: 0, MaximumLength: 0, Buffer: core::ptr::null_mut() }) };
}

/// `RtlCompareMemory` (wdm.h; any IRQL for non-paged memory): bytes equal before the first
/// difference.
extern "win64" fn rtl_compare_memory(a: *const u8, b: *const u8, length: usize) -> usize {
    objects::count("RtlCompareMemory", ANY);
    (0..length)
        .position(|i| {
            // SAFETY: both ranges hold `length` bytes (the DDI's contract); driver_mem checks the
            // NULL region.
            let x = unsafe { driver_mem::read(a.wrapping_add(i)) };
            // SAFETY: as above.
            let y = unsafe { driver_mem::read(b.wrapping_add(i)) };
            x != y
        })
        .unwrap_or(length)
}

/// FsRtlIsNameInExpression's matching: `*` any run, `?` one character, and the DOS wildcards
/// `<` (DOS_STAR), `>` (DOS_QM), `"` (DOS_DOT) as ntifs.h defines them.
fn matches(expression: &[u16], name: &[u16]) -> bool {
    const STAR: u16 = b'*' as u16;
    const QM: u16 = b'?' as u16;
    const DOS_STAR: u16 = b'<' as u16;
    const DOS_QM: u16 = b'>' as u16;
    const DOS_DOT: u16 = b'"' as u16;
    const DOT: u16 = b'.' as u16;
    let Some((&first, rest)) = expression.split_first() else { return name.is_empty() };
    match first {
        STAR => (0..=name.len()).any(|skip| matches(rest, &name[skip..])),
        DOS_STAR => {
            // Any run not passing the last dot.
            let last_dot = name.iter().rposition(|c| *c == DOT);
            (0..=name.len()).filter(|skip| last_dot.is_none_or(|d| *skip <= d)).any(|skip| matches(rest, &name[skip..]))
        }
        QM => !name.is_empty() && matches(rest, &name[1..]),
        DOS_QM => (!name.is_empty() && name[0] != DOT && matches(rest, &name[1..])) || matches(rest, name),
        DOS_DOT => (!name.is_empty() && name[0] == DOT && matches(rest, &name[1..])) || (name.is_empty() && matches(rest, name)),
        literal => name.first() == Some(&literal) && matches(rest, &name[1..]),
    }
}

/// `FsRtlIsNameInExpression` (ntifs.h; ≤ APC, PASSIVE with an upcase table): with IgnoreCase the
/// expression must already be upper case (the DDI's rule; a lower-case one is flagged).
extern "win64" fn fs_rtl_is_name_in_expression(expression: *const UNICODE_STRING, name: *const UNICODE_STRING, ignore_case: u8, upcase_table: usize) -> u8 {
    objects::count("FsRtlIsNameInExpression", if upcase_table == 0 { APC_LEVEL } else { PASSIVE_LEVEL });
    let expression = chars(expression);
    let name = chars(name);
    if ignore_case != 0 {
        if expression.iter().any(|u| upcase(*u) != *u) {
            objects::flag(crate::Violation::InvalidParameter { function: "FsRtlIsNameInExpression", reason: "IgnoreCase with an expression that is not upper case" });
        }
        let upper: Vec<u16> = name.iter().map(|u| upcase(*u)).collect();
        return u8::from(matches(&expression, &upper));
    }
    u8::from(matches(&expression, &name))
}

// ---- the C runtime ----

extern "win64" fn wcslen(text: *const u16) -> usize {
    wide_len(text)
}

extern "win64" fn wcsnlen(text: *const u16, maximum: usize) -> usize {
    // At most `maximum` units are read (the C contract).
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    (0..maximum).position(|i| unsafe { driver_mem::unit_at(text, i) } == 0).unwrap_or(maximum)
}

extern "win64" fn wcscmp(a: *const u16, b: *const u16) -> i32 {
    sign(compare(&wide(a), &wide(b), false))
}

extern "win64" fn wcsncmp(a: *const u16, b: *const u16, count: usize) -> i32 {
    sign(compare(&wide_bounded(a, count), &wide_bounded(b, count), false))
}

/// `_wcsicmp`: compares as lower case, as the CRT does.
extern "win64" fn wcsicmp(a: *const u16, b: *const u16) -> i32 {
    let (a, b): (Vec<u16>, Vec<u16>) = (wide(a).iter().map(|u| downcase(*u)).collect(), wide(b).iter().map(|u| downcase(*u)).collect());
    sign(compare(&a, &b, false))
}

extern "win64" fn wcsnicmp(a: *const u16, b: *const u16, count: usize) -> i32 {
    let a: Vec<u16> = wide_bounded(a, count).iter().map(|u| downcase(*u)).collect();
    let b: Vec<u16> = wide_bounded(b, count).iter().map(|u| downcase(*u)).collect();
    sign(compare(&a, &b, false))
}

extern "win64" fn wcschr(text: *const u16, unit: u16) -> *const u16 {
    let string = wide(text);
    if unit == 0 {
        // SAFETY: the terminator is inside the string's allocation.
        return unsafe { text.add(string.len()) };
    }
    // SAFETY: the position is inside the string.
    string.iter().position(|u| *u == unit).map_or(core::ptr::null(), |p| unsafe { text.add(p) })
}

extern "win64" fn wcsrchr(text: *const u16, unit: u16) -> *const u16 {
    let string = wide(text);
    if unit == 0 {
        // SAFETY: the terminator is inside the string's allocation.
        return unsafe { text.add(string.len()) };
    }
    // SAFETY: the position is inside the string.
    string.iter().rposition(|u| *u == unit).map_or(core::ptr::null(), |p| unsafe { text.add(p) })
}

extern "win64" fn wcsstr(text: *const u16, needle: *const u16) -> *const u16 {
    let (haystack, needle) = (wide(text), wide(needle));
    if needle.is_empty() {
        return text;
    }
    // SAFETY: the position is inside the string.
    haystack.windows(needle.len()).position(|w| w == needle).map_or(core::ptr::null(), |p| unsafe { text.add(p) })
}

/// `errno` values the `_s` functions return.
const EINVAL: i32 = 22;
const ERANGE: i32 = 34;

/// The `_s` copy family: EINVAL for NULL/zero-sized buffers, ERANGE (and an empty destination)
/// when the result does not fit, as the secure CRT documents.
fn copy_s(destination: *mut u16, size: usize, pieces: &[&[u16]]) -> i32 {
    if destination.is_null() || size == 0 {
        return EINVAL;
    }
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    if total + 1 > size {
        // size ≥ 1 units are writable.
        // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
        unsafe { driver_mem::write(destination, 0) };
        return ERANGE;
    }
    let mut at = 0;
    for piece in pieces {
        // The destination holds `size` > total units; the pieces are copies, so overlap is harmless.
        // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
        unsafe { driver_mem::write_units(destination.wrapping_add(at), piece) };
        at += piece.len();
    }
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { driver_mem::write(destination.wrapping_add(at), 0) };
    0
}

extern "win64" fn wcscpy_s(destination: *mut u16, size: usize, source: *const u16) -> i32 {
    if source.is_null() {
        return EINVAL;
    }
    let source: Vec<u16> = wide(source);
    copy_s(destination, size, &[&source])
}

extern "win64" fn wcsncpy_s(destination: *mut u16, size: usize, source: *const u16, count: usize) -> i32 {
    if source.is_null() {
        return EINVAL;
    }
    let source: Vec<u16> = wide(source).iter().take(count).copied().collect();
    copy_s(destination, size, &[&source])
}

extern "win64" fn wcscat_s(destination: *mut u16, size: usize, source: *const u16) -> i32 {
    if source.is_null() || destination.is_null() {
        return EINVAL;
    }
    // At most `size` units of the destination are read.
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    let have: Vec<u16> = unsafe { driver_mem::wide_c_string(destination, size) };
    if have.len() == size {
        return EINVAL;
    }
    let source: Vec<u16> = wide(source);
    copy_s(destination, size, &[&have, &source])
}

extern "win64" fn towupper(unit: u16) -> u16 {
    upcase(unit)
}

extern "win64" fn towlower(unit: u16) -> u16 {
    downcase(unit)
}

extern "win64" fn strcmp(a: *const u8, b: *const u8) -> i32 {
    let (a, b) = (narrow(a), narrow(b));
    a.cmp(&b) as i32
}

extern "win64" fn strncmp(a: *const u8, b: *const u8, count: usize) -> i32 {
    let (a, b) = (narrow(a), narrow(b));
    a[..a.len().min(count)].cmp(&b[..b.len().min(count)]) as i32
}

extern "win64" fn stricmp(a: *const u8, b: *const u8) -> i32 {
    narrow(a).to_ascii_lowercase().cmp(&narrow(b).to_ascii_lowercase()) as i32
}

extern "win64" fn strchr(text: *const u8, byte: i32) -> *const u8 {
    let string = narrow(text);
    let byte = byte.to_le_bytes()[0];
    if byte == 0 {
        // SAFETY: the terminator is inside the string's allocation.
        return unsafe { text.add(string.len()) };
    }
    // SAFETY: the position is inside the string.
    string.iter().position(|b| *b == byte).map_or(core::ptr::null(), |p| unsafe { text.add(p) })
}

extern "win64" fn strstr(text: *const u8, needle: *const u8) -> *const u8 {
    let (haystack, needle) = (narrow(text), narrow(needle));
    if needle.is_empty() {
        return text;
    }
    // SAFETY: the position is inside the string.
    haystack.windows(needle.len()).position(|w| w == needle).map_or(core::ptr::null(), |p| unsafe { text.add(p) })
}

/// Rewrites a wide-printf format into the narrow conventions printf.rs implements: in the
/// wide functions `%s`/`%c` are wide and `%S`/`%C` narrow.
fn narrow_format(format: &[u16]) -> Vec<u8> {
    let text = String::from_utf16_lossy(format);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        out.push(bytes[i]);
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        i += 1;
        let mut sized = false;
        while i < bytes.len() {
            let c = bytes[i];
            match c {
                b'-' | b'+' | b' ' | b'#' | b'0'..=b'9' | b'.' | b'*' => out.push(c),
                b'h' | b'l' | b'w' | b'I' | b'z' | b'L' => {
                    sized = true;
                    out.push(c);
                }
                b's' | b'c' if !sized => {
                    out.extend_from_slice(&[b'w', c]);
                    i += 1;
                    break;
                }
                b'S' | b'C' if !sized => {
                    out.extend_from_slice(&[b'h', c.to_ascii_lowercase()]);
                    i += 1;
                    break;
                }
                _ => {
                    out.push(c);
                    i += 1;
                    break;
                }
            }
            i += 1;
        }
    }
    out.push(0);
    out
}

/// Formats a wide format with the arguments `next` yields.
fn format_wide(format: *const u16, next: &mut dyn FnMut() -> u64) -> Vec<u16> {
    let narrow = narrow_format(&wide(format));
    // SAFETY: `narrow` is NUL-terminated; the arguments match the driver's format.
    let text = unsafe { crate::printf::format(narrow.as_ptr() as usize, next) }.text;
    text.encode_utf16().collect()
}

fn format_narrow(format: *const u8, next: &mut dyn FnMut() -> u64) -> Vec<u8> {
    // SAFETY: a NUL-terminated format; the arguments match it.
    unsafe { crate::printf::format(format as usize, next) }.text.into_bytes()
}

/// The `_vsn*printf` contract: up to `count` characters; NUL-terminated when it fits; the length
/// when it fits (terminator excluded), `count` when exactly `count` fit, −1 when truncated.
fn write_counted<T: driver_mem::DriverData + Default>(buffer: *mut T, count: usize, text: &[T]) -> i32 {
    let written = text.len().min(count);
    if written > 0 {
        // SAFETY: the caller's buffer holds `count` elements; copied as bytes because the buffer
        // may sit at an odd address (x64 allows it) and `text` is fltemu's own.
        unsafe { core::ptr::copy_nonoverlapping(text.as_ptr().cast::<u8>(), buffer.cast::<u8>(), core::mem::size_of_val(&text[..written])) };
    }
    if text.len() < count {
        // Room for the terminator.
        // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
        unsafe { driver_mem::write(buffer.wrapping_add(text.len()), T::default()) };
    }
    if text.len() <= count { i32::try_from(text.len()).unwrap_or(i32::MAX) } else { -1 }
}

fn va_list(list: usize) -> impl FnMut() -> u64 {
    let mut index = 0;
    move || {
        // SAFETY: a Win64 va_list points at consecutive 8-byte argument slots.
        let value = unsafe { ((list + index * 8) as *const u64).read_unaligned() };
        index += 1;
        value
    }
}

fn slots(values: [u64; 10]) -> impl FnMut() -> u64 {
    let mut index = 0;
    move || {
        let value = values.get(index).copied().unwrap_or(0);
        index += 1;
        value
    }
}

extern "win64" fn vsnwprintf(buffer: *mut u16, count: usize, format: *const u16, list: usize) -> i32 {
    objects::count("_vsnwprintf", DISPATCH_LEVEL);
    let text = format_wide(format, &mut va_list(list));
    write_counted(buffer, count, &text)
}

extern "win64" fn vsnprintf(buffer: *mut u8, count: usize, format: *const u8, list: usize) -> i32 {
    objects::count("_vsnprintf", DISPATCH_LEVEL);
    let text = format_narrow(format, &mut va_list(list));
    write_counted(buffer, count, &text)
}

/// C-variadic like DbgPrintEx: every variadic argument is one 8-byte slot after the fixed ones.
#[allow(clippy::too_many_arguments)]
extern "win64" fn snwprintf(buffer: *mut u16, count: usize, format: *const u16, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64, a6: u64, a7: u64, a8: u64, a9: u64) -> i32 {
    objects::count("_snwprintf", DISPATCH_LEVEL);
    let text = format_wide(format, &mut slots([a0, a1, a2, a3, a4, a5, a6, a7, a8, a9]));
    write_counted(buffer, count, &text)
}

#[allow(clippy::too_many_arguments)]
extern "win64" fn snprintf(buffer: *mut u8, count: usize, format: *const u8, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64, a6: u64, a7: u64, a8: u64, a9: u64) -> i32 {
    objects::count("_snprintf", DISPATCH_LEVEL);
    let text = format_narrow(format, &mut slots([a0, a1, a2, a3, a4, a5, a6, a7, a8, a9]));
    write_counted(buffer, count, &text)
}

/// `swprintf_s`: the result must fit with its terminator; otherwise the secure CRT's invalid
/// parameter path (the buffer emptied, −1; flagged).
#[allow(clippy::too_many_arguments)]
extern "win64" fn swprintf_s(buffer: *mut u16, size: usize, format: *const u16, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64, a6: u64, a7: u64, a8: u64, a9: u64) -> i32 {
    objects::count("swprintf_s", DISPATCH_LEVEL);
    if buffer.is_null() || size == 0 || format.is_null() {
        return -1;
    }
    let text = format_wide(format, &mut slots([a0, a1, a2, a3, a4, a5, a6, a7, a8, a9]));
    if text.len() + 1 > size {
        // size ≥ 1.
        // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
        unsafe { driver_mem::write(buffer, 0) };
        objects::flag(crate::Violation::InvalidParameter { function: "swprintf_s", reason: "formatted text does not fit the buffer" });
        return -1;
    }
    write_counted(buffer, size, &text)
}

/// `DbgPrint` (wdm.h): DbgPrintEx without component and level.
#[allow(clippy::too_many_arguments)]
extern "win64" fn dbg_print(format: usize, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64, a6: u64, a7: u64, a8: u64, a9: u64) -> i32 {
    let Some(inner) = objects::call("DbgPrint", 31) else { return status::SUCCESS };
    // SAFETY: a NUL-terminated format with matching arguments (DbgPrint's contract).
    let formatted = unsafe { crate::printf::format(format, &mut slots([a0, a1, a2, a3, a4, a5, a6, a7, a8, a9])) };
    if formatted.unicode && crate::exec::irql() > PASSIVE_LEVEL {
        inner.violation(crate::Violation::IrqlTooHigh { function: "DbgPrint (Unicode format)", irql: crate::exec::irql(), max: PASSIVE_LEVEL });
    }
    inner.debug.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(formatted.text.trim_end_matches('\n').to_owned());
    status::SUCCESS
}

/// `ZwClose` (wdm.h; PASSIVE): closes a handle wild.rs handed out (process, thread); any other
/// handle is invalid (STATUS_INVALID_HANDLE), which is what a driver closing a handle it never
/// opened gets.
extern "win64" fn zw_close(handle: usize) -> i32 {
    objects::count("ZwClose", PASSIVE_LEVEL);
    if crate::wild::close_handle(handle) {
        return status::SUCCESS;
    }
    objects::flag(crate::Violation::InvalidParameter { function: "ZwClose", reason: "not a handle fltemu handed out" });
    0xC000_0008_u32.cast_signed()
}

/// ntoskrnl.exe exports of this module.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "RtlInitUnicodeString" => rtl_init_unicode_string as *const () as usize,
        "RtlCopyUnicodeString" => rtl_copy_unicode_string as *const () as usize,
        "RtlAppendUnicodeStringToString" => rtl_append_unicode_string_to_string as *const () as usize,
        "RtlAppendUnicodeToString" => rtl_append_unicode_to_string as *const () as usize,
        "RtlCompareUnicodeString" => rtl_compare_unicode_string as *const () as usize,
        "RtlEqualUnicodeString" => rtl_equal_unicode_string as *const () as usize,
        "RtlPrefixUnicodeString" => rtl_prefix_unicode_string as *const () as usize,
        "RtlUpcaseUnicodeChar" => rtl_upcase_unicode_char as *const () as usize,
        "RtlUpcaseUnicodeString" => rtl_upcase_unicode_string as *const () as usize,
        "RtlDowncaseUnicodeString" => rtl_downcase_unicode_string as *const () as usize,
        "RtlFreeUnicodeString" => rtl_free_unicode_string as *const () as usize,
        "RtlCompareMemory" => rtl_compare_memory as *const () as usize,
        "FsRtlIsNameInExpression" => fs_rtl_is_name_in_expression as *const () as usize,
        "wcslen" => wcslen as *const () as usize,
        "wcsnlen" => wcsnlen as *const () as usize,
        "wcscmp" => wcscmp as *const () as usize,
        "wcsncmp" => wcsncmp as *const () as usize,
        "_wcsicmp" => wcsicmp as *const () as usize,
        "_wcsnicmp" => wcsnicmp as *const () as usize,
        "wcschr" => wcschr as *const () as usize,
        "wcsrchr" => wcsrchr as *const () as usize,
        "wcsstr" => wcsstr as *const () as usize,
        "wcscpy_s" => wcscpy_s as *const () as usize,
        "wcsncpy_s" => wcsncpy_s as *const () as usize,
        "wcscat_s" => wcscat_s as *const () as usize,
        "towupper" => towupper as *const () as usize,
        "towlower" => towlower as *const () as usize,
        "strcmp" => strcmp as *const () as usize,
        "strncmp" => strncmp as *const () as usize,
        "_stricmp" => stricmp as *const () as usize,
        "strchr" => strchr as *const () as usize,
        "strstr" => strstr as *const () as usize,
        "_vsnwprintf" => vsnwprintf as *const () as usize,
        "_vsnprintf" => vsnprintf as *const () as usize,
        "_snwprintf" => snwprintf as *const () as usize,
        "_snprintf" => snprintf as *const () as usize,
        "swprintf_s" => swprintf_s as *const () as usize,
        "DbgPrint" => dbg_print as *const () as usize,
        "ZwClose" => zw_close as *const () as usize,
        _ => return None,
    })
}

const fn ddi(function: &'static str, header: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "ntoskrnl.exe", function, notes, source: Source::Ddi(header) }
}

const fn crt(function: &'static str, slug: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "ntoskrnl.exe", function, notes, source: Source::Crt(slug) }
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    ddi("RtlInitUnicodeString", "wdm", "Length/MaximumLength from the NUL-terminated source (0 for NULL); > 32,766 characters → InvalidParameter"),
    ddi("RtlCopyUnicodeString", "wdm", "truncates to MaximumLength; NUL-terminates when room remains"),
    ddi("RtlAppendUnicodeStringToString", "wdm", "STATUS_BUFFER_TOO_SMALL when it does not fit"),
    ddi("RtlAppendUnicodeToString", "wdm", "as above, from a NUL-terminated string"),
    ddi("RtlCompareUnicodeString", "wdm", "PASSIVE; −1/0/1, optionally case-insensitive"),
    ddi("RtlEqualUnicodeString", "wdm", "≤ DISPATCH; optionally case-insensitive"),
    ddi("RtlPrefixUnicodeString", "ntifs", "PASSIVE"),
    ddi("RtlUpcaseUnicodeChar", "ntifs", "Unicode simple upper case"),
    ddi("RtlUpcaseUnicodeString", "ntifs", "PASSIVE; AllocateDestinationString → paged pool tag 'RtlS' (RtlFreeUnicodeString, else PoolLeaked); too small → BUFFER_OVERFLOW"),
    ddi("RtlDowncaseUnicodeString", "ntifs", "as RtlUpcaseUnicodeString"),
    ddi("RtlFreeUnicodeString", "wdm", "PASSIVE; frees what an Rtl routine allocated (tag-checked)"),
    ddi("RtlCompareMemory", "wdm", "bytes equal before the first difference"),
    ddi("FsRtlIsNameInExpression", "ntifs", "`*`, `?` and the DOS wildcards `<` `>` `\"`; IgnoreCase with a lower-case expression → InvalidParameter (the DDI requires it upper case)"),
    crt("wcslen", "strlen-wcslen-mbslen-mbslen-l-mbstrlen-mbstrlen-l", "C semantics"),
    crt("wcsnlen", "strnlen-strnlen-s", "C semantics"),
    crt("wcscmp", "strcmp-wcscmp-mbscmp", "C semantics (sign)"),
    crt("wcsncmp", "strncmp-wcsncmp-mbsncmp-mbsncmp-l", "C semantics (sign); reads at most count units of each"),
    crt("_wcsicmp", "stricmp-wcsicmp-mbsicmp-stricmp-l-wcsicmp-l-mbsicmp-l", "compares lower-cased, as the CRT does"),
    crt("_wcsnicmp", "strnicmp-wcsnicmp-mbsnicmp-strnicmp-l-wcsnicmp-l-mbsnicmp-l", "as _wcsicmp, at most n characters (none read past them)"),
    crt("wcschr", "strchr-wcschr-mbschr-mbschr-l", "C semantics"),
    crt("wcsrchr", "strrchr-wcsrchr-mbsrchr-mbsrchr-l", "C semantics"),
    crt("wcsstr", "strstr-wcsstr-mbsstr-mbsstr-l", "C semantics"),
    crt("wcscpy_s", "strcpy-s-wcscpy-s-mbscpy-s-mbscpy-s-l", "EINVAL for NULL/0, ERANGE + empty destination when it does not fit"),
    crt("wcsncpy_s", "strncpy-s-strncpy-s-l-wcsncpy-s-wcsncpy-s-l-mbsncpy-s-mbsncpy-s-l", "as wcscpy_s, at most n characters"),
    crt("wcscat_s", "strcat-s-wcscat-s-mbscat-s", "as wcscpy_s; an unterminated destination → EINVAL"),
    crt("towupper", "toupper-toupper-towupper-toupper-l-towupper-l", "Unicode simple case mapping"),
    crt("towlower", "tolower-tolower-towlower-tolower-l-towlower-l", "Unicode simple case mapping"),
    crt("strcmp", "strcmp-wcscmp-mbscmp", "C semantics (sign)"),
    crt("strncmp", "strncmp-wcsncmp-mbsncmp-mbsncmp-l", "C semantics (sign)"),
    crt("_stricmp", "stricmp-wcsicmp-mbsicmp-stricmp-l-wcsicmp-l-mbsicmp-l", "ASCII case-insensitive"),
    crt("strchr", "strchr-wcschr-mbschr-mbschr-l", "C semantics"),
    crt("strstr", "strstr-wcsstr-mbsstr-mbsstr-l", "C semantics"),
    crt("_vsnwprintf", "vsnprintf-vsnprintf-vsnprintf-l-vsnwprintf-vsnwprintf-l", "the DbgPrintEx formatter with wide `%s`/`%c` (narrow `%S`/`%C`); count semantics (−1 when truncated, no NUL when exactly full); what RtlStringCch*PrintfW inline to"),
    crt("_vsnprintf", "vsnprintf-vsnprintf-vsnprintf-l-vsnwprintf-vsnwprintf-l", "narrow counterpart"),
    crt("_snwprintf", "snprintf-snprintf-snprintf-l-snwprintf-snwprintf-l", "variadic _vsnwprintf (≤ 10 slots)"),
    crt("_snprintf", "snprintf-snprintf-snprintf-l-snwprintf-snwprintf-l", "variadic _vsnprintf (≤ 10 slots)"),
    crt("swprintf_s", "sprintf-s-sprintf-s-l-swprintf-s-swprintf-s-l", "must fit with its NUL, else empty buffer, −1 and InvalidParameter"),
    ddi("DbgPrint", "wdm", "as DbgPrintEx (≤ 10 variadic slots)"),
    ddi("ZwClose", "wdm", "PASSIVE; closes a process or thread handle fltemu handed out (ZwOpenProcess, ObOpenObjectByPointer, PsCreateSystemThread); any other handle → STATUS_INVALID_HANDLE + InvalidParameter"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str) -> Vec<u16> {
        text.encode_utf16().chain(Some(0)).collect()
    }

    fn counted(text: &[u16]) -> UNICODE_STRING {
        UNICODE_STRING { Length: ((text.len() - 1) * 2) as u16, MaximumLength: (text.len() * 2) as u16, Buffer: text.as_ptr().cast_mut() }
    }

    #[test]
    fn name_expressions_follow_the_wildcard_rules() {
        let check = |expression: &str, name: &str, ignore: bool| {
            let (e, n) = (w(expression), w(name));
            fs_rtl_is_name_in_expression(std::ptr::from_ref(&counted(&e)), std::ptr::from_ref(&counted(&n)), u8::from(ignore), 0) != 0
        };
        assert!(check("*.TXT", "A.TXT", false));
        assert!(!check("*.TXT", "a.txt", false));
        assert!(check("*.TXT", "a.txt", true));
        assert!(check("A?C", "ABC", false) && !check("A?C", "AC", false));
        assert!(check("<.DOC", "REPORT.DOC", false), "DOS_STAR stops before the last dot");
        assert!(check("FILE\"TXT", "FILE.TXT", false), "DOS_DOT matches a dot");
        assert!(check("*", "", false) && !check("?", "", false));
    }

    #[test]
    fn wide_formats_swap_the_meaning_of_s_and_capital_s() {
        let format: Vec<u16> = "%s|%-5s|%S|%ls|%c|%d".encode_utf16().collect();
        assert_eq!(narrow_format(&format), b"%ws|%-5ws|%hs|%ls|%wc|%d\0".to_vec());
        let name = w("vol");
        let format = w("%s:%d");
        let mut out = [0u16; 16];
        let written = snwprintf(out.as_mut_ptr(), out.len(), format.as_ptr(), name.as_ptr() as u64, 7, 0, 0, 0, 0, 0, 0, 0, 0);
        assert_eq!(written, 5);
        assert_eq!(String::from_utf16_lossy(&out[..5]), "vol:7");
        assert_eq!(out[5], 0);
        let mut small = [0xFFFFu16; 3];
        assert_eq!(snwprintf(small.as_mut_ptr(), 3, format.as_ptr(), name.as_ptr() as u64, 7, 0, 0, 0, 0, 0, 0, 0, 0), -1, "truncated");
        assert_eq!(String::from_utf16_lossy(&small), "vol", "no terminator when truncated");
    }

    #[test]
    fn crt_strings_and_secure_copies() {
        let (a, b) = (w("Alpha"), w("alphA"));
        assert_eq!(wcsicmp(a.as_ptr(), b.as_ptr()), 0);
        assert!(wcscmp(a.as_ptr(), b.as_ptr()) < 0);
        assert_eq!(wcsnicmp(w("abcX").as_ptr(), w("ABCY").as_ptr(), 3), 0);
        let hay = w("\\dir\\file.txt");
        assert_eq!(wcsstr(hay.as_ptr(), w("file").as_ptr()), hay[5..].as_ptr());
        assert!(wcsstr(hay.as_ptr(), w("nope").as_ptr()).is_null());
        assert_eq!(wcsrchr(hay.as_ptr(), u16::from(b'\\')), hay[4..].as_ptr());
        let mut buffer = [0u16; 4];
        assert_eq!(wcscpy_s(buffer.as_mut_ptr(), 4, w("abc").as_ptr()), 0);
        assert_eq!(wcscat_s(buffer.as_mut_ptr(), 4, w("d").as_ptr()), ERANGE);
        assert_eq!(buffer[0], 0, "ERANGE empties the destination");
        assert_eq!(wcscpy_s(core::ptr::null_mut(), 4, w("a").as_ptr()), EINVAL);
        assert_eq!(rtl_compare_memory(b"abcd".as_ptr(), b"abXd".as_ptr(), 4), 2);
    }

    #[test]
    fn counted_strings_copy_append_and_compare() {
        let source = w("abc");
        let mut storage = [0u16; 4];
        let mut target = UNICODE_STRING { Length: 0, MaximumLength: 8, Buffer: storage.as_mut_ptr() };
        rtl_copy_unicode_string(&raw mut target, std::ptr::from_ref(&counted(&source)));
        assert_eq!((target.Length, &storage[..4]), (6, &[97, 98, 99, 0][..]));
        assert_eq!(rtl_append_unicode_to_string(&raw mut target, w("d").as_ptr()), status::SUCCESS);
        assert_eq!(target.Length, 8);
        assert_eq!(rtl_append_unicode_to_string(&raw mut target, w("e").as_ptr()), status::BUFFER_TOO_SMALL);
        let upper = w("ABCD");
        assert_eq!(rtl_equal_unicode_string(&raw const target, std::ptr::from_ref(&counted(&upper)), 1), 1);
        assert_eq!(rtl_compare_unicode_string(&raw const target, std::ptr::from_ref(&counted(&upper)), 0), 1);
        let mut init = UNICODE_STRING { Length: 1, MaximumLength: 1, Buffer: core::ptr::null_mut() };
        rtl_init_unicode_string(&raw mut init, source.as_ptr());
        assert_eq!((init.Length, init.MaximumLength), (6, 8));
    }
}
