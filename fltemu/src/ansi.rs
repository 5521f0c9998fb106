//! The string and version calls the surveyed public minifilters make beyond rtl.rs: ANSI_STRING
//! comparisons and conversions to and from UNICODE_STRING (buffers the Rtl routine allocates
//! are pool blocks the driver frees with RtlFreeAnsiString / RtlFreeUnicodeString, so a missing
//! free is PoolLeaked), RtlUnicodeStringToInteger, RtlSuffixUnicodeString, RtlGetVersion and
//! the narrow CRT routines `_strnicmp` and `_strupr`. Conversions are the code page's ASCII
//! range; other characters become `?` (fltemu's names are ASCII).

use std::fmt::Write as _;

use windows_sys::Win32::Foundation::UNICODE_STRING;

use crate::catalog::{Emulated, Source};
use crate::exec::{DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::objects;
use crate::state::status;

/// The tag of the ANSI buffers RtlUnicodeStringToAnsiString allocates (freed by
/// RtlFreeAnsiString; a leak shows as PoolLeaked with this tag).
const ANSI_TAG: u32 = u32::from_le_bytes(*b"RtlA");
const ANY: u8 = 15;

/// An ANSI_STRING / STRING: Length, MaximumLength, Buffer (as UNICODE_STRING's layout).
#[repr(C)]
#[derive(Clone, Copy)]
struct Ansi {
    length: u16,
    maximum: u16,
    buffer: *mut u8,
}

fn read_ansi(string: *const Ansi) -> Option<Ansi> {
    if string.is_null() {
        return None;
    }
    // SAFETY: the caller's ANSI_STRING.
    Some(unsafe { string.read_unaligned() })
}

fn ansi_bytes(string: *const Ansi) -> Vec<u8> {
    match read_ansi(string) {
        Some(value) if !value.buffer.is_null() => {
            // SAFETY: Buffer holds Length bytes (the ANSI_STRING contract), copied out.
            unsafe { crate::driver_mem::bytes(value.buffer, usize::from(value.length)) }
        }
        _ => Vec::new(),
    }
}

/// The characters of the driver's UNICODE_STRING, copied out bytewise (it and its Buffer may
/// sit at odd addresses, which x64 allows).
fn wide_units(string: *const UNICODE_STRING) -> Vec<u16> {
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { crate::driver_mem::unicode_string(string) }
}

fn fold(byte: u8, insensitive: bool) -> u8 {
    if insensitive { byte.to_ascii_uppercase() } else { byte }
}

/// `RtlEqualString` (wdm.h; ≤ DISPATCH for resident strings): byte equality, ASCII
/// case-insensitive on request.
extern "win64" fn rtl_equal_string(a: *const Ansi, b: *const Ansi, insensitive: u8) -> u8 {
    objects::count("RtlEqualString", DISPATCH_LEVEL);
    let (a, b) = (ansi_bytes(a), ansi_bytes(b));
    u8::from(a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| fold(*x, insensitive != 0) == fold(*y, insensitive != 0)))
}

/// `RtlFreeAnsiString` (wdm.h; PASSIVE): frees a buffer RtlUnicodeStringToAnsiString allocated.
extern "win64" fn rtl_free_ansi_string(string: *mut Ansi) {
    objects::count("RtlFreeAnsiString", PASSIVE_LEVEL);
    if let Some(value) = read_ansi(string) {
        if !value.buffer.is_null() {
            crate::nt::ex_free_pool_with_tag(value.buffer.cast(), ANSI_TAG);
        }
        // SAFETY: the caller's ANSI_STRING.
        unsafe { string.write_unaligned(Ansi { length: 0, maximum: 0, buffer: core::ptr::null_mut() }) };
    }
}

/// `RtlUnicodeStringToAnsiString` (wdm.h; PASSIVE): allocates Length/2 + 1 bytes when asked
/// (RtlFreeAnsiString frees them), else needs MaximumLength > the result (the terminating NUL),
/// STATUS_BUFFER_OVERFLOW otherwise (copying what fits, as documented).
extern "win64" fn rtl_unicode_string_to_ansi_string(destination: *mut Ansi, source: *const UNICODE_STRING, allocate: u8) -> i32 {
    objects::count("RtlUnicodeStringToAnsiString", PASSIVE_LEVEL);
    if destination.is_null() {
        return status::INVALID_PARAMETER;
    }
    let converted: Vec<u8> = wide_units(source).iter().map(|u| u8::try_from(*u).ok().filter(u8::is_ascii).unwrap_or(b'?')).collect();
    if converted.len() > 0xFFFE {
        return 0xC000_000E_u32.cast_signed(); // STATUS_INVALID_PARAMETER_2
    }
    let (buffer, capacity) = if allocate != 0 {
        let block = crate::nt::ex_allocate_pool2(0x100, converted.len() + 1, ANSI_TAG).cast::<u8>();
        if block.is_null() {
            return status::INSUFFICIENT_RESOURCES;
        }
        (block, converted.len() + 1)
    } else {
        let Some(value) = read_ansi(destination) else { return status::INVALID_PARAMETER };
        (value.buffer, usize::from(value.maximum))
    };
    let fits = converted.len().min(capacity);
    if !buffer.is_null() {
        // SAFETY: `buffer` holds `capacity` bytes (allocated here, or the caller's MaximumLength).
        unsafe { core::ptr::copy_nonoverlapping(converted.as_ptr(), buffer, fits) };
        if fits < capacity {
            // SAFETY: as above; one byte past the characters is inside the buffer.
            unsafe { buffer.wrapping_add(fits).write(0) };
        }
    }
    // SAFETY: the caller's ANSI_STRING.
    unsafe { destination.write_unaligned(Ansi { length: fits as u16, maximum: capacity as u16, buffer }) };
    if converted.len() >= capacity && allocate == 0 { status::BUFFER_OVERFLOW } else { status::SUCCESS }
}

/// `RtlAnsiStringToUnicodeString` (wdm.h; PASSIVE): allocates when asked (RtlFreeUnicodeString
/// frees the buffer), else needs MaximumLength ≥ the result (STATUS_BUFFER_OVERFLOW).
extern "win64" fn rtl_ansi_string_to_unicode_string(destination: *mut UNICODE_STRING, source: *const Ansi, allocate: u8) -> i32 {
    objects::count("RtlAnsiStringToUnicodeString", PASSIVE_LEVEL);
    if destination.is_null() {
        return status::INVALID_PARAMETER;
    }
    let converted: Vec<u16> = ansi_bytes(source).iter().map(|b| if b.is_ascii() { u16::from(*b) } else { u16::from(b'?') }).collect();
    let bytes = converted.len() * 2;
    if bytes > 0xFFFC {
        return 0xC000_000E_u32.cast_signed(); // STATUS_INVALID_PARAMETER_2
    }
    let (buffer, capacity) = if allocate != 0 {
        let block = crate::nt::ex_allocate_pool2(0x100, bytes + 2, crate::rtl::STRING_TAG).cast::<u16>();
        if block.is_null() {
            return status::INSUFFICIENT_RESOURCES;
        }
        (block, bytes + 2)
    } else {
        // SAFETY: the caller's UNICODE_STRING.
        let value = unsafe { destination.read_unaligned() };
        (value.Buffer, usize::from(value.MaximumLength))
    };
    if bytes > capacity {
        return status::BUFFER_OVERFLOW;
    }
    // `buffer` holds `capacity` ≥ `bytes` bytes (the caller's Buffer may sit at an odd address).
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    unsafe { crate::driver_mem::write_units(buffer, &converted) };
    if bytes + 2 <= capacity {
        // SAFETY: as above; the NUL fits.
        unsafe { buffer.wrapping_add(converted.len()).write_unaligned(0) };
    }
    // SAFETY: the caller's UNICODE_STRING.
    unsafe { destination.write_unaligned(UNICODE_STRING { Length: bytes as u16, MaximumLength: capacity as u16, Buffer: buffer }) };
    status::SUCCESS
}

/// `RtlUnicodeStringToInteger` (wdm.h; PASSIVE): leading blanks, an optional sign, a `0x` /
/// `0o` / `0b` prefix when Base is 0, digits of the base up to the first other character;
/// Base not 0, 2, 8, 10 or 16 → STATUS_INVALID_PARAMETER.
extern "win64" fn rtl_unicode_string_to_integer(string: *const UNICODE_STRING, base: u32, value: *mut u32) -> i32 {
    objects::count("RtlUnicodeStringToInteger", PASSIVE_LEVEL);
    if value.is_null() || ![0, 2, 8, 10, 16].contains(&base) {
        return status::INVALID_PARAMETER;
    }
    let text = String::from_utf16_lossy(&wide_units(string));
    let mut rest = text.trim_start_matches([' ', '\t']);
    let negative = rest.starts_with('-');
    rest = rest.trim_start_matches(['-', '+']);
    let mut radix = base;
    if base == 0 {
        radix = 10;
        for (prefix, r) in [("0x", 16), ("0o", 8), ("0b", 2)] {
            if let Some(tail) = rest.strip_prefix(prefix) {
                rest = tail;
                radix = r;
            }
        }
    }
    let mut result: u32 = 0;
    for c in rest.chars() {
        let Some(digit) = c.to_digit(radix) else { break };
        result = result.wrapping_mul(radix).wrapping_add(digit);
    }
    // SAFETY: the caller's out ULONG.
    unsafe { value.write_unaligned(if negative { result.wrapping_neg() } else { result }) };
    status::SUCCESS
}

/// `RtlSuffixUnicodeString` (ntifs.h; PASSIVE): whether String ends with Suffix.
extern "win64" fn rtl_suffix_unicode_string(suffix: *const UNICODE_STRING, string: *const UNICODE_STRING, insensitive: u8) -> u8 {
    objects::count("RtlSuffixUnicodeString", PASSIVE_LEVEL);
    let (suffix, string) = (wide_units(suffix), wide_units(string));
    if suffix.len() > string.len() {
        return 0;
    }
    let tail = &string[string.len() - suffix.len()..];
    let same = |a: u16, b: u16| a == b || (insensitive != 0 && char::from_u32(a.into()).zip(char::from_u32(b.into())).is_some_and(|(x, y)| x.to_uppercase().eq(y.to_uppercase())));
    u8::from(tail.iter().zip(&suffix).all(|(a, b)| same(*a, *b)))
}

/// `RtlGetVersion` (wdm.h; PASSIVE): Windows 10 version 22H2 (10.0.19045, VER_NT_WORKSTATION);
/// dwOSVersionInfoSize must be that of RTL_OSVERSIONINFOW (276) or RTL_OSVERSIONINFOEXW (284).
extern "win64" fn rtl_get_version(info: *mut u8) -> i32 {
    objects::count("RtlGetVersion", PASSIVE_LEVEL);
    if info.is_null() {
        return status::INVALID_PARAMETER;
    }
    // SAFETY: the caller's RTL_OSVERSIONINFOW: dwOSVersionInfoSize first.
    let size = unsafe { info.cast::<u32>().read_unaligned() };
    if size != 276 && size != 284 {
        return status::INVALID_PARAMETER;
    }
    let fields: [u32; 4] = [10, 0, 19045, 2];
    // SAFETY: Major, Minor, Build, PlatformId follow the size field.
    unsafe { core::ptr::copy_nonoverlapping(fields.as_ptr().cast::<u8>(), info.wrapping_add(4), 16) };
    // SAFETY: szCSDVersion (128 WCHARs) at 20: empty.
    unsafe { core::ptr::write_bytes(info.wrapping_add(20), 0, 256) };
    if size == 284 {
        // SAFETY: the EX tail (service pack, suite mask, product type, reserved) at 276.
        unsafe { core::ptr::write_bytes(info.wrapping_add(276), 0, 8) };
        // SAFETY: wProductType at 282: VER_NT_WORKSTATION.
        unsafe { info.wrapping_add(282).write(1) };
    }
    status::SUCCESS
}

fn c_string(text: *const u8, limit: usize) -> Vec<u8> {
    if text.is_null() {
        return Vec::new();
    }
    // SAFETY: a NUL-terminated string (the CRT contract), read up to `limit` and copied out.
    unsafe { crate::driver_mem::c_string(text, limit) }
}

/// `_strnicmp` (CRT): ASCII case-insensitive comparison of at most `count` characters.
extern "win64" fn strnicmp(a: *const u8, b: *const u8, count: usize) -> i32 {
    objects::count("_strnicmp", ANY);
    let (a, b) = (c_string(a, count), c_string(b, count));
    for i in 0..count {
        let x = a.get(i).map_or(0, u8::to_ascii_lowercase);
        let y = b.get(i).map_or(0, u8::to_ascii_lowercase);
        if x != y || x == 0 {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// `_strupr` (CRT): upper-cases the string in place (ASCII) and returns it.
extern "win64" fn strupr(text: *mut u8) -> *mut u8 {
    objects::count("_strupr", ANY);
    let length = c_string(text, 1 << 16).len();
    for i in 0..length {
        let at = text.wrapping_add(i);
        // SAFETY: inside the string just measured.
        let byte = unsafe { at.read() };
        // SAFETY: as above.
        unsafe { at.write(byte.to_ascii_uppercase()) };
    }
    text
}

/// `RtlStringFromGUID` (wdm.h; PASSIVE): `{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}` (upper case) in
/// a buffer the driver frees with RtlFreeUnicodeString (else PoolLeaked 'RtlS').
extern "win64" fn rtl_string_from_guid(guid: *const u8, string: *mut UNICODE_STRING) -> i32 {
    objects::count("RtlStringFromGUID", PASSIVE_LEVEL);
    if guid.is_null() || string.is_null() {
        return status::INVALID_PARAMETER;
    }
    let mut bytes = [0u8; 16];
    // SAFETY: the caller's GUID (16 bytes).
    unsafe { core::ptr::copy_nonoverlapping(guid, bytes.as_mut_ptr(), 16) };
    let data1 = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let data2 = u16::from_le_bytes([bytes[4], bytes[5]]);
    let data3 = u16::from_le_bytes([bytes[6], bytes[7]]);
    let tail = bytes[10..].iter().fold(String::new(), |mut text, b| {
        let _ = write!(text, "{b:02X}");
        text
    });
    let text = format!("{{{data1:08X}-{data2:04X}-{data3:04X}-{:02X}{:02X}-{tail}}}", bytes[8], bytes[9]);
    let units: Vec<u16> = text.encode_utf16().chain([0]).collect();
    let block = crate::nt::ex_allocate_pool2(0x100, units.len() * 2, crate::rtl::STRING_TAG).cast::<u16>();
    if block.is_null() {
        return status::INSUFFICIENT_RESOURCES;
    }
    // SAFETY: the block holds units.len() characters; it is fltemu's own pool block (aligned).
    unsafe { core::ptr::copy_nonoverlapping(units.as_ptr(), block, units.len()) };
    // SAFETY: the caller's UNICODE_STRING.
    unsafe { string.write_unaligned(UNICODE_STRING { Length: ((units.len() - 1) * 2) as u16, MaximumLength: (units.len() * 2) as u16, Buffer: block }) };
    status::SUCCESS
}

/// Writes `text` and its NUL as `wide` or narrow characters into `out` when `*length` (in
/// characters) holds them; `*length` becomes the characters needed, NUL included. Too small →
/// STATUS_INVALID_PARAMETER (the IP-string routines' documented answer).
fn put_text(text: &str, out: *mut u8, length: *mut u32, wide: bool) -> i32 {
    if length.is_null() {
        return status::INVALID_PARAMETER;
    }
    let needed = text.len() + 1;
    // SAFETY: the caller's in/out length.
    let room = unsafe { length.read_unaligned() } as usize;
    // SAFETY: as above.
    unsafe { length.write_unaligned(needed as u32) };
    if out.is_null() || room < needed {
        return status::INVALID_PARAMETER;
    }
    for (i, byte) in text.bytes().chain([0]).enumerate() {
        if wide {
            // SAFETY: `out` holds `room` ≥ `needed` WCHARs (written unaligned, byte-wise).
            unsafe { core::ptr::copy_nonoverlapping(u16::from(byte).to_le_bytes().as_ptr(), out.wrapping_add(2 * i), 2) };
        } else {
            // SAFETY: `out` holds `room` ≥ `needed` CHARs.
            unsafe { out.wrapping_add(i).write(byte) };
        }
    }
    status::SUCCESS
}

fn ipv4_text(address: *const u8, port: u16) -> Option<String> {
    if address.is_null() {
        return None;
    }
    let mut octets = [0u8; 4];
    // SAFETY: the caller's IN_ADDR (4 bytes, network order).
    unsafe { core::ptr::copy_nonoverlapping(address, octets.as_mut_ptr(), 4) };
    let ip = std::net::Ipv4Addr::from(octets);
    // Port is in network byte order.
    Some(if port == 0 { ip.to_string() } else { format!("{ip}:{}", u16::from_be(port)) })
}

fn ipv6_text(address: *const u8, scope: u32, port: u16) -> Option<String> {
    if address.is_null() {
        return None;
    }
    let mut octets = [0u8; 16];
    // SAFETY: the caller's IN6_ADDR (16 bytes).
    unsafe { core::ptr::copy_nonoverlapping(address, octets.as_mut_ptr(), 16) };
    let ip = std::net::Ipv6Addr::from(octets);
    let scoped = if scope == 0 { ip.to_string() } else { format!("{ip}%{scope}") };
    Some(if port == 0 { scoped } else { format!("[{scoped}]:{}", u16::from_be(port)) })
}

/// `RtlIpv4AddressToStringExW` / `…ExA` (ip2string.h; any IRQL): dotted decimal, `:port` when
/// Port (network order) is not 0; AddressStringLength in characters, NUL included.
extern "win64" fn rtl_ipv4_address_to_string_ex_w(address: *const u8, port: u16, out: *mut u8, length: *mut u32) -> i32 {
    objects::count("RtlIpv4AddressToStringExW", ANY);
    ipv4_text(address, port).map_or(status::INVALID_PARAMETER, |t| put_text(&t, out, length, true))
}

extern "win64" fn rtl_ipv4_address_to_string_ex_a(address: *const u8, port: u16, out: *mut u8, length: *mut u32) -> i32 {
    objects::count("RtlIpv4AddressToStringExA", ANY);
    ipv4_text(address, port).map_or(status::INVALID_PARAMETER, |t| put_text(&t, out, length, false))
}

/// `RtlIpv6AddressToStringExW` / `…ExA` (ip2string.h; any IRQL): RFC 5952 text, `%scope` when
/// ScopeId is not 0, `[…]:port` when Port is not 0.
extern "win64" fn rtl_ipv6_address_to_string_ex_w(address: *const u8, scope: u32, port: u16, out: *mut u8, length: *mut u32) -> i32 {
    objects::count("RtlIpv6AddressToStringExW", ANY);
    ipv6_text(address, scope, port).map_or(status::INVALID_PARAMETER, |t| put_text(&t, out, length, true))
}

extern "win64" fn rtl_ipv6_address_to_string_ex_a(address: *const u8, scope: u32, port: u16, out: *mut u8, length: *mut u32) -> i32 {
    objects::count("RtlIpv6AddressToStringExA", ANY);
    ipv6_text(address, scope, port).map_or(status::INVALID_PARAMETER, |t| put_text(&t, out, length, false))
}

/// ntoskrnl.exe exports of this module.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "RtlEqualString" => rtl_equal_string as *const () as usize,
        "RtlFreeAnsiString" => rtl_free_ansi_string as *const () as usize,
        "RtlUnicodeStringToAnsiString" => rtl_unicode_string_to_ansi_string as *const () as usize,
        "RtlAnsiStringToUnicodeString" => rtl_ansi_string_to_unicode_string as *const () as usize,
        "RtlUnicodeStringToInteger" => rtl_unicode_string_to_integer as *const () as usize,
        "RtlSuffixUnicodeString" => rtl_suffix_unicode_string as *const () as usize,
        "RtlGetVersion" => rtl_get_version as *const () as usize,
        "_strnicmp" => strnicmp as *const () as usize,
        "_strupr" => strupr as *const () as usize,
        "RtlStringFromGUID" => rtl_string_from_guid as *const () as usize,
        "RtlIpv4AddressToStringExW" => rtl_ipv4_address_to_string_ex_w as *const () as usize,
        "RtlIpv4AddressToStringExA" => rtl_ipv4_address_to_string_ex_a as *const () as usize,
        "RtlIpv6AddressToStringExW" => rtl_ipv6_address_to_string_ex_w as *const () as usize,
        "RtlIpv6AddressToStringExA" => rtl_ipv6_address_to_string_ex_a as *const () as usize,
        _ => return None,
    })
}

const fn nt(function: &'static str, header: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "ntoskrnl.exe", function, notes, source: Source::Ddi(header) }
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    nt("RtlEqualString", "wdm", "≤ DISPATCH; byte equality, ASCII case-insensitive on request"),
    nt("RtlFreeAnsiString", "wdm", "PASSIVE; frees a buffer RtlUnicodeStringToAnsiString allocated (pool tag 'RtlA'), zeroes the string"),
    nt("RtlUnicodeStringToAnsiString", "wdm", "PASSIVE; ASCII (else `?`); AllocateDestinationString → pool the driver frees with RtlFreeAnsiString (else PoolLeaked 'RtlA'); a caller buffer too small → STATUS_BUFFER_OVERFLOW with what fits"),
    nt("RtlAnsiStringToUnicodeString", "wdm", "PASSIVE; allocation freed by RtlFreeUnicodeString (tag 'RtlS'); a caller buffer too small → STATUS_BUFFER_OVERFLOW"),
    nt("RtlUnicodeStringToInteger", "wdm", "PASSIVE; blanks, sign, 0x/0o/0b with Base 0, digits up to the first other character; Base not 0/2/8/10/16 → INVALID_PARAMETER"),
    nt("RtlSuffixUnicodeString", "ntifs", "PASSIVE; whether String ends with Suffix (case-insensitive on request)"),
    nt("RtlGetVersion", "wdm", "PASSIVE; 10.0.19045, platform 2, VER_NT_WORKSTATION in the EX form; dwOSVersionInfoSize not 276/284 → INVALID_PARAMETER"),
    nt("RtlStringFromGUID", "wdm", "PASSIVE; `{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}` upper case, in pool the driver frees with RtlFreeUnicodeString (else PoolLeaked 'RtlS')"),
    nt("RtlIpv4AddressToStringExW", "ip2string", "any IRQL; dotted decimal, `:port` for a non-zero Port (network order); the length in characters with the NUL; too small → INVALID_PARAMETER with the length needed"),
    Emulated { dll: "ntoskrnl.exe", function: "RtlIpv4AddressToStringExA", notes: "as RtlIpv4AddressToStringExW, narrow", source: Source::DdiAs("ip2string", "RtlIpv4AddressToStringExW") },
    nt("RtlIpv6AddressToStringExW", "ip2string", "any IRQL; RFC 5952 text (`::` compression, `::ffff:a.b.c.d`), `%scope`, `[…]:port`; length rule as the IPv4 form"),
    Emulated { dll: "ntoskrnl.exe", function: "RtlIpv6AddressToStringExA", notes: "as RtlIpv6AddressToStringExW, narrow", source: Source::DdiAs("ip2string", "RtlIpv6AddressToStringExW") },
    Emulated { dll: "ntoskrnl.exe", function: "_strnicmp", notes: "ASCII case-insensitive, at most count characters", source: Source::Crt("strnicmp-wcsnicmp-mbsnicmp-strnicmp-l-wcsnicmp-l-mbsnicmp-l") },
    Emulated { dll: "ntoskrnl.exe", function: "_strupr", notes: "ASCII upper case in place", source: Source::Crt("strupr-strupr-l-mbsupr-mbsupr-l-wcsupr-l-wcsupr") },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn wide(text: &str) -> (Vec<u16>, UNICODE_STRING) {
        let mut units: Vec<u16> = text.encode_utf16().collect();
        let string = UNICODE_STRING { Length: (units.len() * 2) as u16, MaximumLength: (units.len() * 2) as u16, Buffer: units.as_mut_ptr() };
        (units, string)
    }

    #[test]
    fn integers_parse_as_documented() {
        let mut value = 0;
        let (_keep, s) = wide("  4242 rest");
        assert_eq!(rtl_unicode_string_to_integer(&raw const s, 10, &raw mut value), status::SUCCESS);
        assert_eq!(value, 4242);
        let (_keep, s) = wide("0x1F");
        assert_eq!(rtl_unicode_string_to_integer(&raw const s, 0, &raw mut value), status::SUCCESS);
        assert_eq!(value, 31);
        assert_eq!(rtl_unicode_string_to_integer(&raw const s, 7, &raw mut value), status::INVALID_PARAMETER);
    }

    #[test]
    fn suffixes_and_narrow_comparisons() {
        let (_a, exe) = wide(".EXE");
        let (_b, name) = wide("\\x\\process4242.exe");
        assert_eq!(rtl_suffix_unicode_string(&raw const exe, &raw const name, 1), 1);
        assert_eq!(rtl_suffix_unicode_string(&raw const exe, &raw const name, 0), 0);
        assert_eq!(strnicmp(c"ABCd".as_ptr().cast(), c"abcX".as_ptr().cast(), 3), 0);
        assert!(strnicmp(c"abc".as_ptr().cast(), c"abd".as_ptr().cast(), 3) < 0);
        let mut text = *b"Nt!x\0";
        strupr(text.as_mut_ptr());
        assert_eq!(&text, b"NT!X\0");
    }

    #[test]
    fn ansi_strings_compare_and_widen() {
        let mut a = *b"Process";
        let mut b = *b"PROCESS";
        let left = Ansi { length: 7, maximum: 7, buffer: a.as_mut_ptr() };
        let right = Ansi { length: 7, maximum: 7, buffer: b.as_mut_ptr() };
        assert_eq!(rtl_equal_string(&raw const left, &raw const right, 1), 1);
        assert_eq!(rtl_equal_string(&raw const left, &raw const right, 0), 0);
        let mut wide = [0u16; 8];
        let mut out = UNICODE_STRING { Length: 0, MaximumLength: 16, Buffer: wide.as_mut_ptr() };
        assert_eq!(rtl_ansi_string_to_unicode_string(&raw mut out, &raw const left, 0), status::SUCCESS);
        assert_eq!((out.Length, String::from_utf16_lossy(&wide[..7])), (14, "Process".to_owned()));
        let mut small = [0u16; 2];
        let mut out = UNICODE_STRING { Length: 0, MaximumLength: 4, Buffer: small.as_mut_ptr() };
        assert_eq!(rtl_ansi_string_to_unicode_string(&raw mut out, &raw const left, 0), status::BUFFER_OVERFLOW);
    }

    #[test]
    fn ip_addresses_format_with_ports_and_scopes() {
        let mut text = [0u16; 64];
        let mut length = 64u32;
        let v4 = [192u8, 168, 1, 20];
        assert_eq!(rtl_ipv4_address_to_string_ex_w(v4.as_ptr(), 443u16.to_be(), text.as_mut_ptr().cast(), &raw mut length), status::SUCCESS);
        assert_eq!(String::from_utf16_lossy(&text[..length as usize - 1]), "192.168.1.20:443");
        let mut v6 = [0u8; 16];
        v6[0] = 0xfe;
        v6[1] = 0x80;
        v6[15] = 1;
        let mut narrow = [0u8; 64];
        let mut length = 64u32;
        assert_eq!(rtl_ipv6_address_to_string_ex_a(v6.as_ptr(), 3, 80u16.to_be(), narrow.as_mut_ptr(), &raw mut length), status::SUCCESS);
        assert_eq!(&narrow[..length as usize - 1], b"[fe80::1%3]:80");
        let mut short = 4u32;
        assert_eq!(rtl_ipv4_address_to_string_ex_a(v4.as_ptr(), 0, narrow.as_mut_ptr(), &raw mut short), status::INVALID_PARAMETER);
        assert_eq!(short, 13, "192.168.1.20 and its NUL");
    }

    #[test]
    fn a_caller_buffer_too_small_overflows() {
        let (_keep, source) = wide("abcdef");
        let mut storage = [0u8; 4];
        let mut ansi = Ansi { length: 0, maximum: 4, buffer: storage.as_mut_ptr() };
        assert_eq!(rtl_unicode_string_to_ansi_string(&raw mut ansi, &raw const source, 0), status::BUFFER_OVERFLOW);
        assert_eq!(&storage, b"abcd");
        let mut ansi = Ansi { length: 0, maximum: 0, buffer: core::ptr::null_mut() };
        let (_k, short) = wide("ab");
        let mut big = [0u8; 8];
        ansi.buffer = big.as_mut_ptr();
        ansi.maximum = 8;
        assert_eq!(rtl_unicode_string_to_ansi_string(&raw mut ansi, &raw const short, 0), status::SUCCESS);
        assert_eq!((ansi.length, &big[..3]), (2, &b"ab\0"[..]));
    }
}
