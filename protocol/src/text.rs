//! UTF-16 names on the wire: an unaligned little-endian view, case folding and prefix matching.

use core::fmt;

/// A UTF-16LE string inside a message: a view over an even number of bytes, any alignment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Utf16Le<'a> {
    bytes: &'a [u8],
}

impl<'a> Utf16Le<'a> {
    /// A view over `bytes`; `None` when the length is odd.
    #[must_use]
    pub const fn new(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len().is_multiple_of(2) { Some(Self { bytes }) } else { None }
    }

    /// The empty string.
    #[must_use]
    pub const fn empty() -> Self {
        Self { bytes: &[] }
    }

    /// Length in UTF-16 units.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.bytes.len() / 2
    }

    /// Whether the string has no units.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The units, in order.
    pub fn units(&self) -> impl Iterator<Item = u16> + Clone + 'a {
        self.bytes.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
    }

    /// The raw little-endian bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Whether the units equal `other`.
    #[must_use]
    pub fn eq_units(&self, other: &[u16]) -> bool {
        self.len() == other.len() && self.units().zip(other.iter().copied()).all(|(a, b)| a == b)
    }
}

impl fmt::Debug for Utf16Le<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "\"{self}\"")
    }
}

impl fmt::Display for Utf16Le<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for character in char::decode_utf16(self.units()) {
            fmt::Write::write_char(formatter, character.unwrap_or(char::REPLACEMENT_CHARACTER))?;
        }
        Ok(())
    }
}

/// Folds one UTF-16 unit to upper case the way a user expects of Windows paths, without
/// tables: ASCII, Latin-1, Latin Extended-A, basic Greek and basic Cyrillic. Other units are
/// returned unchanged (compared exactly).
#[must_use]
#[allow(clippy::match_same_arms)] // One arm per script reads better than merged ranges.
pub const fn fold_case(unit: u16) -> u16 {
    match unit {
        // ASCII and Latin-1 lower case (except ÷ and ÿ, which has no Latin-1 capital).
        0x61..=0x7A | 0xE0..=0xF6 | 0xF8..=0xFE => unit - 0x20,
        // Latin Extended-A: pairs (capital even, small odd), except the ı/ĸ/ŉ irregulars.
        0x0101..=0x012F | 0x0133..=0x0137 | 0x014B..=0x0177 if unit % 2 == 1 => unit - 1,
        0x013A..=0x0148 | 0x017A..=0x017E if unit.is_multiple_of(2) => unit - 1,
        // Greek small α..ω (except final sigma, folded to Σ).
        0x03B1..=0x03C1 | 0x03C3..=0x03C9 => unit - 0x20,
        0x03C2 => 0x03A3,
        // Cyrillic: а..я and ѐ..џ.
        0x0430..=0x044F => unit - 0x20,
        0x0450..=0x045F => unit - 0x50,
        _ => unit,
    }
}

/// Whether `name` lies under `prefix`: it starts with `prefix` (case-insensitively, see
/// [`fold_case`]) and the match ends at a component boundary — `prefix` ends with `\`, or
/// `name` ends there or continues with `\` or `:` (a stream of the file itself). An empty
/// prefix matches every name.
#[must_use]
pub fn name_is_under(name: &[u16], prefix: Utf16Le<'_>) -> bool {
    const BACKSLASH: u16 = b'\\' as u16;
    const COLON: u16 = b':' as u16;
    let count = prefix.len();
    if count == 0 {
        return true;
    }
    let Some(head) = name.get(..count) else {
        return false;
    };
    if !head.iter().zip(prefix.units()).all(|(a, b)| fold_case(*a) == fold_case(b)) {
        return false;
    }
    let prefix_ends_with_separator = prefix.units().last() == Some(BACKSLASH);
    match name.get(count) {
        None => true,
        Some(&next) => prefix_ends_with_separator || next == BACKSLASH || next == COLON,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn wire(text: &str) -> Vec<u8> {
        text.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    fn units(text: &str) -> Vec<u16> {
        text.encode_utf16().collect()
    }

    #[test]
    fn under_matches_case_insensitively_at_component_boundaries() {
        let prefix = wire("\\device\\HARDDISKVOLUME2\\Dir");
        let prefix = Utf16Le::new(&prefix).unwrap();
        assert!(name_is_under(&units("\\Device\\HarddiskVolume2\\dir\\a.txt"), prefix));
        assert!(name_is_under(&units("\\Device\\HarddiskVolume2\\DIR"), prefix));
        assert!(name_is_under(&units("\\Device\\HarddiskVolume2\\dir:ads"), prefix));
        assert!(!name_is_under(&units("\\Device\\HarddiskVolume2\\dir2\\a.txt"), prefix));
        assert!(!name_is_under(&units("\\Device\\HarddiskVolume2\\di"), prefix));
        let slash = wire("\\Device\\HarddiskVolume2\\");
        assert!(name_is_under(&units("\\Device\\HarddiskVolume2\\x"), Utf16Le::new(&slash).unwrap()));
        assert!(name_is_under(&units("anything"), Utf16Le::empty()));
    }

    #[test]
    fn folding_covers_latin_greek_cyrillic() {
        assert_eq!(fold_case(u16::from(b'a')), u16::from(b'A'));
        assert_eq!(fold_case(0xE9), 0xC9); // é → É
        assert_eq!(fold_case(0xF7), 0xF7); // ÷ unchanged
        assert_eq!(fold_case(0x0107), 0x0106); // ć → Ć
        assert_eq!(fold_case(0x017E), 0x017D); // ž → Ž
        assert_eq!(fold_case(0x03C9), 0x03A9); // ω → Ω
        assert_eq!(fold_case(0x044F), 0x042F); // я → Я
        assert_eq!(fold_case(0x0451), 0x0401); // ё → Ё
        assert_eq!(fold_case(0x4E2D), 0x4E2D); // 中 unchanged
        // Folding is idempotent over the whole BMP.
        for unit in 0..=u16::MAX {
            assert_eq!(fold_case(fold_case(unit)), fold_case(unit), "{unit:#x}");
        }
    }
}
