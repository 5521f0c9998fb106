//! `fltemu::map_image` on arbitrary bytes: parse, the Windows loader rules, map, relocate and
//! bind imports to the emulated exports. Nothing of the image runs (the entry point is never
//! called). It must return a `LoadError` with a one-line message or a mapped image, never
//! panic, crash or hang.
//!
//! Each input is tried as given and again with its PE checksum rewritten, so that mutations
//! reach the rules, the mapping and the imports instead of stopping at the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    match fltemu::map_image(data) {
        Ok(image) => {
            assert!(image.size >= image.parsed.size_of_image as usize);
            assert!(image.rva_of(image.entry()).is_some(), "the entry point lies inside the image");
        }
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty() && !message.contains('\n'), "not one line: {message:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    fltemu::fix_checksum(&mut fixed);
    if fixed != data {
        check(&fixed);
    }
});
