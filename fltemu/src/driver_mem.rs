//! Reads and writes of memory a driver hands fltemu: its structures, counted strings and their
//! buffers, C strings. On x64 Windows ordinary loads and stores have no alignment requirement,
//! so a driver may pass a UNICODE_STRING, its Buffer or any structure at an odd address and
//! Windows accepts it; fltemu must too. A Rust aligned access through such a pointer
//! (`ptr.read()`, `*ptr`, `&*ptr`, `slice::from_raw_parts` over `*const u16`) is undefined
//! behaviour, and a debug build's precondition checks abort the whole process, so every access
//! here is unaligned or a byte copy into fltemu's own buffer (never a slice over memory other
//! driver threads may be writing).
//!
//! The pointers are the driver's: fltemu trusts them as the kernel does (the DDI's contract),
//! which is why every helper is `unsafe`. One case is checked rather than trusted: an address
//! in the NULL region (below [`crate::seh::NULL_REGION`], never mapped on Windows), where the
//! kernel routine's access would fault. That becomes the driver fault Windows reports
//! ([`crate::seh::export_access_violation`]), never a Rust precondition abort.

use windows_sys::Win32::Foundation::UNICODE_STRING;

/// The longest NUL-terminated string read (the same bound DbgPrintEx uses).
pub(crate) const MAX_CHARS: usize = 1 << 16;

/// The most units one copy takes: counts come from the driver, and a byte count must stay well
/// inside `isize` for pointer arithmetic.
const MAX_UNITS: usize = isize::MAX as usize / 4;

/// Plain data: every bit pattern of its size is a valid value, it holds no references, and
/// reading one from driver bytes cannot produce an invalid value (so `bool`, `char`, enums and
/// references are not `DriverData`).
///
/// # Safety
/// Implement only for types where every bit pattern is a valid value.
pub(crate) unsafe trait DriverData: Copy {}

macro_rules! driver_data {
    ($($type:ty),* $(,)?) => { $(
        // SAFETY: an integer, raw pointer or #[repr(C)] structure of them: any bits are valid.
        unsafe impl DriverData for $type {}
    )* };
}

driver_data!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize, UNICODE_STRING);
// SAFETY: a raw pointer's bits need no validity beyond being a number.
unsafe impl<T> DriverData for *const T {}
// SAFETY: as above.
unsafe impl<T> DriverData for *mut T {}
// SAFETY: an array of plain data is plain data.
unsafe impl<T: DriverData, const N: usize> DriverData for [T; N] {}

/// Faults as the kernel routine's access would when `address` lies in the NULL region (the
/// driver passed NULL or a small offset from it); returns otherwise.
fn check(address: *const u8, write: bool) {
    if (address as usize) < crate::seh::NULL_REGION {
        crate::seh::export_access_violation(address as usize, write);
    }
}

/// Whether the driver's lock word at `address` (a KSPIN_LOCK or EX_PUSH_LOCK: one pointer-sized
/// word, which the lock routines update with interlocked instructions) may be used as an atomic:
/// a NULL-region address faults as the routine's access would; a word not 8-byte aligned is
/// reported as an invalid parameter (`false`), and the caller then leaves the lock alone (Rust
/// atomics require natural alignment; a misaligned interlocked operation on Windows may split
/// a cache line and is not atomic across it).
pub(crate) fn lock_word(function: &'static str, address: usize) -> bool {
    check(address as *const u8, true);
    if address.is_multiple_of(8) {
        return true;
    }
    if let Some(inner) = crate::state::current() {
        inner.violation(crate::verifier::Violation::InvalidParameter { function, reason: "lock not 8-byte aligned (the call is ignored)" });
    }
    false
}

/// A `T` the driver placed at `address`, read unaligned.
///
/// # Safety
/// Outside the NULL region (which is checked), `address` must be readable for a `T` (the
/// driver's pointer, the DDI's contract).
pub(crate) unsafe fn read<T: DriverData>(address: *const T) -> T {
    check(address.cast(), false);
    // SAFETY: readable for a T (the caller's contract); read_unaligned needs no alignment and
    // any bits are a valid T (DriverData).
    unsafe { address.read_unaligned() }
}

/// Stores `value` at the driver's `address`, unaligned.
///
/// # Safety
/// Outside the NULL region (which is checked), `address` must be writable for a `T`.
pub(crate) unsafe fn write<T: DriverData>(address: *mut T, value: T) {
    check(address.cast_const().cast(), true);
    // SAFETY: writable for a T (the caller's contract); write_unaligned needs no alignment.
    unsafe { address.write_unaligned(value) };
}

/// `count` bytes at `address`, copied out (empty for a count of 0, without touching `address`;
/// at most [`MAX_UNITS`] bytes).
///
/// # Safety
/// Outside the NULL region (which is checked), `address` must be readable for `count` bytes.
pub(crate) unsafe fn bytes(address: *const u8, count: usize) -> Vec<u8> {
    let count = count.min(MAX_UNITS);
    if count == 0 {
        return Vec::new();
    }
    check(address, false);
    let mut copy = vec![0u8; count];
    // SAFETY: readable for `count` bytes (the caller's contract); `copy` is fltemu's own.
    unsafe { core::ptr::copy_nonoverlapping(address, copy.as_mut_ptr(), count) };
    copy
}

/// A NUL-terminated byte string without its NUL, at most `limit` bytes; bytes past the NUL or
/// the limit are not read. NULL faults (the C routines take no NULL).
///
/// # Safety
/// `text` must be readable up to its NUL or `limit` bytes, whichever comes first.
pub(crate) unsafe fn c_string(text: *const u8, limit: usize) -> Vec<u8> {
    let mut found = Vec::new();
    for index in 0..limit.min(MAX_UNITS) {
        // SAFETY: before the NUL and inside the limit (the caller's contract).
        let byte = unsafe { read(text.wrapping_add(index)) };
        if byte == 0 {
            break;
        }
        found.push(byte);
    }
    found
}

/// `count` UTF-16 units at `buffer`, copied out bytewise (empty for a count of 0, without
/// touching `buffer`; at most [`MAX_UNITS`]).
///
/// # Safety
/// Outside the NULL region (which is checked), `buffer` must be readable for `count` units.
pub(crate) unsafe fn units(buffer: *const u16, count: usize) -> Vec<u16> {
    let count = count.min(MAX_UNITS);
    if count == 0 {
        return Vec::new();
    }
    check(buffer.cast(), false);
    let mut bytes = vec![0u8; count * 2];
    // SAFETY: the driver's buffer holds `count` units (the caller's contract), `bytes` is
    // fltemu's own with room for them, and a byte copy needs no alignment.
    unsafe { core::ptr::copy_nonoverlapping(buffer.cast::<u8>(), bytes.as_mut_ptr(), bytes.len()) };
    bytes.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]])).collect()
}

/// The UTF-16 units of a driver's counted string: `length` bytes at `buffer`. A zero length is
/// the empty string; an odd Length drops the last byte, as Length / 2 characters are all a
/// UNICODE_STRING holds.
///
/// # Safety
/// As [`units`], for `length / 2` units.
pub(crate) unsafe fn counted_units(buffer: *const u16, length: u16) -> Vec<u16> {
    // SAFETY: the caller's contract.
    unsafe { units(buffer, usize::from(length / 2)) }
}

/// The characters of the UNICODE_STRING at `string` (empty for a NULL `string`, which the
/// routines that call this accept; a NULL Buffer with a non-zero Length faults).
///
/// # Safety
/// `string` must be NULL or readable for a UNICODE_STRING whose Buffer is readable for Length
/// bytes (or lies in the NULL region).
pub(crate) unsafe fn unicode_string(string: *const UNICODE_STRING) -> Vec<u16> {
    if string.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller's contract.
    let value = unsafe { read(string) };
    // SAFETY: the caller's contract for the Buffer.
    unsafe { counted_units(value.Buffer, value.Length) }
}

/// The UTF-16 unit `index` units past `text`.
///
/// # Safety
/// As [`read`] for the unit at `text + index`.
pub(crate) unsafe fn unit_at(text: *const u16, index: usize) -> u16 {
    // SAFETY: the caller's contract.
    unsafe { read(text.wrapping_add(index)) }
}

/// A NUL-terminated UTF-16 string without its NUL, at most `limit` units; units past the NUL or
/// the limit are not read. NULL faults (the C routines take no NULL).
///
/// # Safety
/// `text` must be readable up to its NUL or `limit` units, whichever comes first.
pub(crate) unsafe fn wide_c_string(text: *const u16, limit: usize) -> Vec<u16> {
    let mut found = Vec::new();
    for index in 0..limit.min(MAX_UNITS) {
        // SAFETY: before the NUL and inside the limit (the caller's contract).
        let unit = unsafe { unit_at(text, index) };
        if unit == 0 {
            break;
        }
        found.push(unit);
    }
    found
}

/// Copies `from` to the driver's buffer at `destination` bytewise (no alignment assumed).
///
/// # Safety
/// Outside the NULL region (which is checked), `destination` must be writable for
/// `from.len()` units (each caller checks the capacity first).
pub(crate) unsafe fn write_units(destination: *mut u16, from: &[u16]) {
    if from.is_empty() {
        return;
    }
    check(destination.cast_const().cast(), true);
    let bytes: Vec<u8> = from.iter().flat_map(|unit| unit.to_le_bytes()).collect();
    // SAFETY: writable for `from.len()` units (the caller's contract); a byte copy needs no
    // alignment and `bytes` is fltemu's own.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), destination.cast::<u8>(), bytes.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::cast_ptr_alignment)] // the misaligned pointers are what is tested
    fn odd_addresses_are_read_and_written_bytewise() {
        let mut storage = [0u8; 16];
        let odd = storage.as_mut_ptr().wrapping_add(1).cast::<u16>();
        // SAFETY: 15 bytes of `storage` lie at `odd`.
        unsafe { write_units(odd, &[0x4241, 0x0043]) };
        assert_eq!(&storage[..6], &[0, 0x41, 0x42, 0x43, 0, 0]);
        // SAFETY: as above.
        assert_eq!(unsafe { units(odd, 2) }, vec![0x4241, 0x0043]);
        // SAFETY: as above.
        assert_eq!(unsafe { counted_units(odd, 3) }, vec![0x4241], "an odd Length drops its last byte");
        // SAFETY: as above (NUL-terminated inside storage).
        assert_eq!(unsafe { wide_c_string(odd, 8) }, vec![0x4241, 0x0043]);
        // SAFETY: as above.
        assert_eq!(unsafe { wide_c_string(odd, 1) }, vec![0x4241], "bounded by the limit");
        let at = storage.as_mut_ptr().wrapping_add(3).cast::<u32>();
        // SAFETY: 13 bytes of `storage` lie at `at`.
        unsafe { write(at, 0x0102_0304) };
        // SAFETY: as above.
        assert_eq!(unsafe { read(at.cast_const()) }, 0x0102_0304);
        // SAFETY: a zero count touches nothing.
        assert!(unsafe { units(core::ptr::null(), 0) }.is_empty());
    }
}
