//! The budget measurements shared by tests/contexts.rs, tests/stack_frames.rs and
//! benches/budget.rs: Filter Manager context calls per operation (counted by fltemu) and
//! stack frame sizes (read from the image's x64 unwind information).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use object::LittleEndian as LE;
use object::pe::IMAGE_DIRECTORY_ENTRY_EXCEPTION;
use object::read::pe::PeFile64;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[allow(unused_imports)] // Not every includer measures calls.
pub use calls::*;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod calls {
    use fltemu::{CallCounts, Emulator};

    /// Filter Manager context calls of one operation, grouped as the budget counts them.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Budget {
        pub get: u64,
        pub allocate: u64,
        pub set: u64,
        pub release: u64,
        pub name_queries: u64,
    }

    pub fn budget(calls: &CallCounts) -> Budget {
        let sum = |names: &[&str]| names.iter().map(|name| calls.total(name)).sum();
        Budget {
            get: sum(&["FltGetInstanceContext", "FltGetStreamContext", "FltGetStreamHandleContext", "FltGetContexts"]),
            allocate: sum(&["FltAllocateContext"]),
            set: sum(&["FltSetInstanceContext", "FltSetStreamContext", "FltSetStreamHandleContext"]),
            release: sum(&["FltReleaseContext", "FltReleaseContexts"]),
            name_queries: sum(&["FltGetFileNameInformation"]),
        }
    }

    /// Runs `action` and returns the context calls it made.
    pub fn measure<R>(emulator: &Emulator, action: impl FnOnce() -> R) -> (Budget, R) {
        let before = emulator.calls();
        let result = action();
        (budget(&emulator.calls().since(&before)), result)
    }
}

/// Frame size of the function whose UNWIND_INFO sits at `rva`, following chained entries.
fn frame_size(file: &PeFile64<'_>, data: &[u8], rva: u32) -> u64 {
    let sections = file.section_table();
    let info = sections.pe_data_at(data, rva).expect("UNWIND_INFO inside the image");
    let flags = info[0] >> 3;
    let code_count = usize::from(info[2]);
    let codes: Vec<u16> = (0..code_count).map(|slot| u16::from_le_bytes([info[4 + 2 * slot], info[5 + 2 * slot]])).collect();
    let mut size = 0_u64;
    let mut slot = 0;
    while slot < codes.len() {
        let code = codes[slot];
        let operation = (code >> 8) & 0x0F;
        let operation_info = u64::from(code >> 12);
        slot += 1;
        match operation {
            // UWOP_PUSH_NONVOL
            0 => size += 8,
            // UWOP_ALLOC_LARGE: the size follows in one slot (x8) or two slots (unscaled).
            1 => {
                if operation_info == 0 {
                    size += u64::from(codes[slot]) * 8;
                    slot += 1;
                } else {
                    size += u64::from(codes[slot]) | (u64::from(codes[slot + 1]) << 16);
                    slot += 2;
                }
            }
            // UWOP_ALLOC_SMALL
            2 => size += operation_info * 8 + 8,
            // UWOP_SET_FPREG: no allocation.
            3 => {}
            // UWOP_SAVE_NONVOL, UWOP_SAVE_XMM128: one extra slot, stored inside the allocation.
            4 | 8 => slot += 1,
            // UWOP_SAVE_NONVOL_FAR, UWOP_SAVE_XMM128_FAR: two extra slots.
            5 | 9 => slot += 2,
            // UWOP_PUSH_MACHFRAME: a machine frame, with or without an error code.
            10 => size += if operation_info == 0 { 40 } else { 48 },
            other => panic!("unknown unwind operation {other}"),
        }
    }
    // UNW_FLAG_CHAININFO: the primary entry's frame is part of this function's frame too.
    if flags & 0x4 != 0 {
        let aligned = 4 + 2 * ((code_count + 1) & !1);
        let chained_unwind = u32::from_le_bytes(info[aligned + 8..aligned + 12].try_into().unwrap());
        size += frame_size(file, data, chained_unwind);
    }
    size
}

/// Function start RVA → frame size (without the return address) for every `.pdata` entry.
pub fn frames(image: &[u8]) -> BTreeMap<u32, u64> {
    let file = PeFile64::parse(image).expect("a PE32+ image");
    let directory = file.data_directory(IMAGE_DIRECTORY_ENTRY_EXCEPTION).expect("an exception directory");
    let (rva, size) = directory.address_range();
    let table = file.section_table().pe_data_at(image, rva).expect(".pdata inside the image");
    let mut frames = BTreeMap::new();
    for entry in table[..size as usize].chunks_exact(12) {
        let begin = u32::from_le_bytes(entry[0..4].try_into().unwrap());
        let unwind = u32::from_le_bytes(entry[8..12].try_into().unwrap());
        let frame = frame_size(&file, image, unwind);
        frames.entry(begin).and_modify(|known: &mut u64| *known = (*known).max(frame)).or_insert(frame);
    }
    frames
}

/// Symbol name → RVA from the linker map (`Address  Publics by Value  Rva+Base  Lib:Object`).
pub fn map_symbols(map: &Path, image_base: u64) -> BTreeMap<u32, String> {
    let text = std::fs::read_to_string(map).expect("the /MAP file");
    let mut symbols = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 3
            && fields[0].contains(':')
            && let Ok(address) = u64::from_str_radix(fields[2], 16)
            && address >= image_base
        {
            symbols.insert(u32::try_from(address - image_base).unwrap(), fields[1].to_owned());
        }
    }
    symbols
}

/// Every function's frame in the x64 image at `image_path` (return address included), largest
/// last, named from the `/MAP` file beside it.
pub fn named_frames(image_path: &Path) -> Vec<(u64, String)> {
    let image = std::fs::read(image_path).expect("the image");
    let map = image_path.parent().expect("the image's directory").join("deps").join("ctxguard.map");
    let file = PeFile64::parse(&*image).expect("a PE32+ image");
    let image_base = file.nt_headers().optional_header.image_base.get(LE);
    let symbols = map_symbols(&map, image_base);
    let mut named: Vec<(u64, String)> = frames(&image)
        .into_iter()
        .map(|(rva, frame)| (frame + 8, symbols.get(&rva).cloned().unwrap_or_else(|| format!("rva {rva:#x}"))))
        .collect();
    named.sort();
    named
}

/// The callbacks Filter Manager (and the I/O manager) call into ctxguard.sys, by name part.
pub const CALLBACKS: [&str; 14] = [
    "DriverEntry",
    "filter_unload",
    "setup",
    "query_teardown",
    "teardown_start",
    "teardown_complete",
    "pre_create",
    "post_create",
    "pre_cleanup",
    "pre_close",
    "cleanup",
    "connect",
    "disconnect",
    "message",
];
