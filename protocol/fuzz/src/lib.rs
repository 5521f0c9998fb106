//! Shared by the fuzz targets: feed an input, and the same input with a valid header, to a
//! check, so that most inputs get past the magic and length fields to the body checks.

use ctxguard_protocol::{HEADER_BYTES, MAGIC};

/// The input with a valid magic and a length field equal to its size; `None` when that changes
/// nothing or there is no header.
#[must_use]
pub fn with_valid_header(data: &[u8]) -> Option<Vec<u8>> {
    let length = u32::try_from(data.len()).ok()?;
    let mut patched = data.get(..HEADER_BYTES).map(|_| data.to_vec())?;
    patched[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    patched[8..12].copy_from_slice(&length.to_le_bytes());
    (patched != data).then_some(patched)
}

/// Runs `check` on the input and, when it differs, on the input with a valid header.
pub fn check_as_is_and_with_valid_header(data: &[u8], check: impl Fn(&[u8])) {
    check(data);
    if let Some(patched) = with_valid_header(data) {
        check(&patched);
    }
}
