//! Reads and writes of memory a driver hands fltemu: its structures, counted strings and their
//! buffers, C strings. On x64 Windows ordinary loads and stores have no alignment requirement,
//! so a driver may pass a UNICODE_STRING, its Buffer or any structure at an odd address and
//! Windows accepts it; fltemu must too. A Rust aligned access through such a pointer
//! (`ptr.read()`, `*ptr`, `&*ptr`, `slice::from_raw_parts` over `*const u16`) is undefined
//! behaviour, and a debug build's precondition checks abort the whole process, so every access
//! here is unaligned or bytewise. The pointers are the driver's: fltemu trusts them as the
//! kernel does (the DDI's contract), these helpers only drop the alignment assumption.

/// The longest NUL-terminated string read (the same bound DbgPrintEx uses).
pub(crate) const MAX_CHARS: usize = 1 << 16;

/// A `T` the driver placed at `address`, read unaligned.
pub(crate) fn read<T: Copy>(address: *const T) -> T {
    // SAFETY: the driver's pointer to a T (the DDI's contract); read_unaligned needs no alignment.
    unsafe { address.read_unaligned() }
}

/// Stores `value` at the driver's `address`, unaligned.
pub(crate) fn write<T>(address: *mut T, value: T) {
    // SAFETY: the driver's pointer to writable room for a T; write_unaligned needs no alignment.
    unsafe { address.write_unaligned(value) };
}

/// `count` UTF-16 units at `buffer`, copied out bytewise (empty for NULL or 0).
pub(crate) fn units(buffer: *const u16, count: usize) -> Vec<u16> {
    if buffer.is_null() || count == 0 {
        return Vec::new();
    }
    let Some(length) = count.checked_mul(2) else { return Vec::new() };
    // SAFETY: the driver's buffer holds `count` units (its contract); bytes have no alignment.
    let bytes = unsafe { std::slice::from_raw_parts(buffer.cast::<u8>(), length) };
    bytes.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]])).collect()
}

/// The UTF-16 units of a driver's counted string: `length` bytes at `buffer`. NULL or a zero
/// length is the empty string; an odd Length drops the last byte, as Length / 2 characters are
/// all a UNICODE_STRING holds.
pub(crate) fn wide_units(buffer: *const u16, length: u16) -> Vec<u16> {
    units(buffer, usize::from(length / 2))
}

/// The characters of the UNICODE_STRING at `string` (empty for NULL or a NULL Buffer).
pub(crate) fn unicode_string(string: *const windows_sys::Win32::Foundation::UNICODE_STRING) -> Vec<u16> {
    if string.is_null() {
        return Vec::new();
    }
    let value = read(string);
    wide_units(value.Buffer, value.Length)
}

/// The UTF-16 unit `index` units past `text`.
pub(crate) fn unit_at(text: *const u16, index: usize) -> u16 {
    read(text.wrapping_add(index))
}

/// A NUL-terminated UTF-16 string without its NUL, at most `limit` units (empty for NULL).
pub(crate) fn wide_c_string(text: *const u16, limit: usize) -> Vec<u16> {
    if text.is_null() {
        return Vec::new();
    }
    (0..limit).map(|index| unit_at(text, index)).take_while(|unit| *unit != 0).collect()
}

/// Copies `from` to the driver's buffer at `destination` bytewise (no alignment assumed).
pub(crate) fn write_units(destination: *mut u16, from: &[u16]) {
    if from.is_empty() {
        return;
    }
    let bytes: Vec<u8> = from.iter().flat_map(|unit| unit.to_le_bytes()).collect();
    // SAFETY: the driver's buffer has room for `from.len()` units (each caller checks its
    // capacity first); a byte copy needs no alignment and `bytes` is fltemu's own.
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
        write_units(odd, &[0x4241, 0x0043]);
        assert_eq!(&storage[..6], &[0, 0x41, 0x42, 0x43, 0, 0]);
        assert_eq!(units(odd, 2), vec![0x4241, 0x0043]);
        assert_eq!(wide_units(odd, 3), vec![0x4241], "an odd Length drops its last byte");
        assert_eq!(wide_c_string(odd, 8), vec![0x4241, 0x0043]);
        assert_eq!(wide_c_string(odd, 1), vec![0x4241], "bounded by the limit");
        write(storage.as_mut_ptr().wrapping_add(3).cast::<u32>(), 0x0102_0304);
        assert_eq!(read(storage.as_ptr().wrapping_add(3).cast::<u32>()), 0x0102_0304);
        assert!(units(core::ptr::null(), 4).is_empty());
    }
}
