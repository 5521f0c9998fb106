//! `name_is_under` on arbitrary UTF-16 name/prefix pairs: it must agree with its documented
//! rule, restated here independently (case-insensitive start per `fold_case`, then a component
//! boundary: the prefix ends with `\`, or the name ends or continues with `\` or `:`), and keep
//! the properties that rule implies.
//!
//! Input: `mode u8, split u16`, then bytes; the name is the first `split` bytes (an even count),
//! the rest is the prefix (or, with mode bit 0, a length picking the prefix from the name's own
//! head, so that matches are common; bit 1 folds that head, bit 2 appends `\`).
#![no_main]

use ctxguard_protocol::{Utf16Le, fold_case, name_is_under};
use libfuzzer_sys::fuzz_target;

const BACKSLASH: u16 = b'\\' as u16;
const COLON: u16 = b':' as u16;

fn units(bytes: &[u8]) -> Vec<u16> {
    bytes.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]])).collect()
}

fn wire(units: &[u16]) -> Vec<u8> {
    units.iter().flat_map(|unit| unit.to_le_bytes()).collect()
}

fn under(name: &[u16], prefix: &[u16]) -> bool {
    name_is_under(name, Utf16Le::new(&wire(prefix)).expect("an even byte count"))
}

/// The documented rule, written from the doc comment rather than from the code.
fn documented(name: &[u16], prefix: &[u16]) -> bool {
    if prefix.is_empty() {
        return true;
    }
    if name.len() < prefix.len() {
        return false;
    }
    let (head, rest) = name.split_at(prefix.len());
    let starts = head.iter().map(|unit| fold_case(*unit)).eq(prefix.iter().map(|unit| fold_case(*unit)));
    starts && (prefix.last() == Some(&BACKSLASH) || matches!(rest.first(), None | Some(&BACKSLASH | &COLON)))
}

fuzz_target!(|data: &[u8]| {
    let [mode, split_low, split_high, ref rest @ ..] = *data else { return };
    let split = usize::from(u16::from_le_bytes([split_low, split_high])).min(rest.len()) & !1;
    let (name_bytes, prefix_bytes) = rest.split_at(split);
    assert_eq!(Utf16Le::new(prefix_bytes).is_some(), prefix_bytes.len() % 2 == 0);
    let name = units(name_bytes);
    let tail = units(prefix_bytes);
    let prefix = if mode & 1 == 0 {
        tail.clone()
    } else {
        let length = usize::from(tail.first().copied().unwrap_or(0)) % (name.len() + 1);
        let mut prefix: Vec<u16> = name[..length].to_vec();
        if mode & 2 != 0 {
            for unit in &mut prefix {
                *unit = fold_case(*unit);
            }
        }
        if mode & 4 != 0 {
            prefix.push(BACKSLASH);
        }
        prefix
    };

    let answer = under(&name, &prefix);
    assert_eq!(answer, documented(&name, &prefix), "name {name:x?} prefix {prefix:x?}");

    // Documented corner cases: the empty prefix matches everything, a name lies under itself,
    // a prefix longer than the name never matches.
    assert!(name_is_under(&name, Utf16Le::empty()));
    assert!(under(&name, &name));
    if prefix.len() > name.len() {
        assert!(!answer);
    }

    // Case-insensitive on both sides: folding either changes nothing.
    let folded_name: Vec<u16> = name.iter().map(|unit| fold_case(*unit)).collect();
    let folded_prefix: Vec<u16> = prefix.iter().map(|unit| fold_case(*unit)).collect();
    assert_eq!(under(&folded_name, &prefix), answer);
    assert_eq!(under(&name, &folded_prefix), answer);

    // A name under the prefix stays under it when it continues with a component or a stream.
    if answer {
        for separator in [BACKSLASH, COLON] {
            let mut longer = name.clone();
            longer.push(separator);
            longer.extend_from_slice(&tail);
            assert!(under(&longer, &prefix), "{longer:x?} left {prefix:x?}");
        }
    }
});
