//! The loader against bad images: a deterministic corpus of mutants of the shipped ctxguard.sys
//! (header fields, section table, data directories, import names and tables, relocation blocks,
//! truncations), each refused with its own one-line reason — in process through
//! `fltemu::map_image`, and every one through the `fltemu run` binary (exit 2, one `FAILED:`
//! line, no panic, no signal, no hang). Plus a sweep that overwrites every header byte and
//! must never panic. Nothing binary is checked in: the mutants are generated from the image
//! the test builds.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Builds ctxguard.sys the way the workspace's own tests do (same nested target directory).
fn shipped_image() -> Vec<u8> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let outer = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
    let target = outer.join("nested").join("default");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&workspace)
        .args(["build", "--release", "--quiet", "-p", "ctxguard", "--target", "x86_64-pc-windows-msvc", "--target-dir"])
        .arg(&target)
        .status()
        .expect("cargo starts");
    assert!(status.success(), "building ctxguard.sys failed");
    std::fs::read(target.join("x86_64-pc-windows-msvc/release/ctxguard.dll")).expect("ctxguard.dll was built")
}

fn u16_at(image: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([image[at], image[at + 1]])
}

fn u32_at(image: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(image[at..at + 4].try_into().unwrap())
}

fn put16(image: &mut [u8], at: usize, value: u16) {
    image[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put32(image: &mut [u8], at: usize, value: u32) {
    image[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put64(image: &mut [u8], at: usize, value: u64) {
    image[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Where the fields the mutants change live in the shipped image.
struct Layout {
    coff: usize,
    optional: usize,
    sections: Vec<(String, usize)>,
}

impl Layout {
    fn of(image: &[u8]) -> Self {
        let coff = u32_at(image, 0x3C) as usize + 4;
        let optional = coff + 20;
        let table = optional + usize::from(u16_at(image, coff + 16));
        let sections = (0..usize::from(u16_at(image, coff + 2)))
            .map(|index| {
                let at = table + index * 40;
                (String::from_utf8_lossy(&image[at..at + 8]).trim_end_matches('\0').to_owned(), at)
            })
            .collect();
        Layout { coff, optional, sections }
    }

    /// The section header of `name`.
    fn section(&self, name: &str) -> usize {
        self.sections.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("ctxguard.sys has a {name} section")).1
    }

    /// Data directory `index`'s (VirtualAddress field offset).
    fn directory(&self, index: usize) -> usize {
        self.optional + 112 + index * 8
    }

    /// The file offset of `rva`.
    fn file_offset(&self, image: &[u8], rva: u32) -> usize {
        let (_, at) = self
            .sections
            .iter()
            .find(|(_, at)| {
                let start = u32_at(image, at + 12);
                rva >= start && rva < start + u32_at(image, at + 16)
            })
            .expect("the RVA is in a section");
        (u32_at(image, at + 20) + (rva - u32_at(image, at + 12))) as usize
    }
}

/// One mutant: what it is, its bytes, and a piece of the reason it must be refused with.
struct Mutant {
    name: String,
    bytes: Vec<u8>,
    reason: &'static str,
}

/// Generates every mutant from the shipped image. The checksum is rewritten after each change
/// (except where the checksum is the point), so each one reaches the rule it targets.
#[allow(clippy::too_many_lines)] // one line per mutant reads best as one list.
fn mutants(good: &[u8]) -> Vec<Mutant> {
    let l = Layout::of(good);
    let (coff, opt) = (l.coff, l.optional);
    let text = l.section(".text");
    let rdata = l.section(".rdata");
    let data = l.section(".data");
    let pdata = l.section(".pdata");
    let reloc = l.section(".reloc");
    let import_rva = u32_at(good, l.directory(1));
    let descriptor = l.file_offset(good, import_rva);
    let lookup = l.file_offset(good, u32_at(good, descriptor));
    let reloc_block = l.file_offset(good, u32_at(good, l.directory(5)));
    let rdata_end = (u32_at(good, rdata + 12) + u32_at(good, rdata + 8)) as usize;

    let mut list = Vec::new();
    let mut add = |name: &str, reason: &'static str, fix_checksum: bool, change: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good.to_vec();
        change(&mut bytes);
        if fix_checksum {
            fltemu::fix_checksum(&mut bytes);
        }
        list.push(Mutant { name: name.to_owned(), bytes, reason });
    };
    // DOS/NT headers and the file header.
    add("empty file", "not a PE image", false, &|b| b.clear());
    add("no MZ", "no MZ signature", true, &|b| b[0] = b'Z');
    add("e_lfanew past the end", "no PE signature", false, &|b| put32(b, 0x3C, 0xFFFF_0000));
    add("e_lfanew into the DOS stub", "no PE signature", false, &|b| put32(b, 0x3C, 0x40));
    add("PE signature broken", "no PE signature", true, &|b| b[coff - 4] = b'X');
    add("machine i386", "wrong machine", true, &|b| put16(b, coff, 0x014C));
    add("machine 0", "wrong machine", true, &|b| put16(b, coff, 0));
    add("NumberOfSections 0xFFFF", "limit of 96", true, &|b| put16(b, coff + 2, 0xFFFF));
    add("NumberOfSections 97", "limit of 96", true, &|b| put16(b, coff + 2, 97));
    add("NumberOfSections 0", "not inside an executable section", true, &|b| put16(b, coff + 2, 0));
    add("NumberOfSections one too many", "ascending order", true, &|b| put16(b, coff + 2, 6));
    add("SizeOfOptionalHeader 0x80", "SizeOfOptionalHeader", true, &|b| put16(b, coff + 16, 0x80));
    add("SizeOfOptionalHeader 0xFFFF", "truncated", true, &|b| put16(b, coff + 16, 0xFFFF));
    add("not EXECUTABLE_IMAGE", "IMAGE_FILE_EXECUTABLE_IMAGE", true, &|b| {
        let value = u16_at(b, coff + 18) & !0x0002;
        put16(b, coff + 18, value);
    });
    add("RELOCS_STRIPPED", "RELOCS_STRIPPED", true, &|b| {
        let value = u16_at(b, coff + 18) | 0x0001;
        put16(b, coff + 18, value);
    });
    // Optional header.
    add("magic PE32", "not a PE32+ image", true, &|b| put16(b, opt, 0x010B));
    add("magic ROM", "not a PE32+ image", true, &|b| put16(b, opt, 0x0107));
    add("entry point 0", "needs DriverEntry", true, &|b| put32(b, opt + 16, 0));
    add("entry point in .rdata", "not inside an executable section", true, &|b| {
        let value = u32_at(b, rdata + 12);
        put32(b, opt + 16, value);
    });
    add("entry point past the image", "not inside an executable section", true, &|b| put32(b, opt + 16, 0xFFFF_FFF0));
    add("ImageBase not 64K-aligned", "multiple of 64K", true, &|b| put64(b, opt + 24, 0x1_8000_1000));
    add("SectionAlignment 0", "SectionAlignment 0x0 is not a power of 2", true, &|b| put32(b, opt + 32, 0));
    add("SectionAlignment 0x3000", "not a power of 2", true, &|b| put32(b, opt + 32, 0x3000));
    add("SectionAlignment below FileAlignment", "smaller than FileAlignment", true, &|b| put32(b, opt + 32, 0x100));
    add("SectionAlignment 0x800", "page size", true, &|b| put32(b, opt + 32, 0x800));
    add("SectionAlignment 0x2000", "multiple of SectionAlignment", true, &|b| put32(b, opt + 32, 0x2000));
    add("FileAlignment 0", "FileAlignment 0x0", true, &|b| put32(b, opt + 36, 0));
    add("FileAlignment 0x100", "FileAlignment 0x100", true, &|b| put32(b, opt + 36, 0x100));
    add("FileAlignment 0x300", "FileAlignment 0x300", true, &|b| put32(b, opt + 36, 0x300));
    add("FileAlignment 128K", "FileAlignment 0x20000", true, &|b| put32(b, opt + 36, 0x2_0000));
    add("SizeOfImage 0", "SizeOfImage 0x0", true, &|b| put32(b, opt + 56, 0));
    add("SizeOfImage 4 GiB", "largest image", true, &|b| put32(b, opt + 56, 0xFFFF_F000));
    add("SizeOfImage too small", "beyond SizeOfImage", true, &|b| {
        let value = u32_at(b, opt + 56) - 0x1000;
        put32(b, opt + 56, value);
    });
    add("SizeOfImage unaligned", "multiple of SectionAlignment", true, &|b| {
        let value = u32_at(b, opt + 56) + 0x800;
        put32(b, opt + 56, value);
    });
    add("SizeOfHeaders 0", "does not cover", true, &|b| put32(b, opt + 60, 0));
    add("SizeOfHeaders short of the section table", "does not cover", true, &|b| put32(b, opt + 60, 0x100));
    add("SizeOfHeaders over the first section", "overlaps the headers", true, &|b| put32(b, opt + 60, 0x1400));
    add("SizeOfHeaders past SizeOfImage", "larger than SizeOfImage", true, &|b| put32(b, opt + 60, 0x10_0000));
    add("subsystem WINDOWS_GUI", "not NATIVE", true, &|b| put16(b, opt + 68, 2));
    add("FORCE_INTEGRITY unsigned", "STATUS_INVALID_IMAGE_HASH", true, &|b| {
        let value = u16_at(b, opt + 70) | 0x0080;
        put16(b, opt + 70, value);
    });
    add("checksum wrong", "bad PE checksum", false, &|b| {
        let value = u32_at(b, opt + 64) ^ 0x0101;
        put32(b, opt + 64, value);
    });
    // Data directories.
    add("export directory huge", "data directory 0", true, &|b| put32(b, l.directory(0) + 4, 0xFFFF_FFFF));
    add("import directory past the image", "data directory 1", true, &|b| put32(b, l.directory(1), 0xFFFF_FF00));
    add("relocation directory at SizeOfImage", "data directory 5", true, &|b| {
        let end = u32_at(b, opt + 56);
        put32(b, l.directory(5), end);
    });
    add("IAT directory past the image", "data directory 12", true, &|b| put32(b, l.directory(12), 0x7FFF_0000));
    add("certificate table past the file", "outside the file", true, &|b| {
        let length = u32::try_from(b.len()).unwrap();
        put32(b, l.directory(4), length);
        put32(b, l.directory(4) + 4, 0x100);
    });
    // Section table.
    add(".text VirtualAddress unaligned", "not a multiple of SectionAlignment", true, &|b| put32(b, text + 12, 0x1800));
    add(".text at 0 over the headers", "overlaps the headers", true, &|b| put32(b, text + 12, 0));
    add(".rdata leaves a gap", "sections must be adjacent", true, &|b| {
        let value = u32_at(b, rdata + 12) + 0x1000;
        put32(b, rdata + 12, value);
    });
    // Fuzz finding: a newline in a section name used to split the refusal over two lines.
    add(".rdata named with a newline, with a gap", "section \\n\\u{e} at", true, &|b| {
        b[rdata..rdata + 8].copy_from_slice(b"\n\x0e\0\0\0\0\0\0");
        let value = u32_at(b, rdata + 12) + 0x1000;
        put32(b, rdata + 12, value);
    });
    add(".text VirtualSize over .rdata", "overlaps section .text", true, &|b| {
        // Reach one page into .rdata whatever size .text has today.
        let value = u32_at(b, rdata + 12) - u32_at(b, text + 12) + 0x1000;
        put32(b, text + 8, value);
    });
    add(".data over .rdata", "overlaps section .rdata", true, &|b| {
        let value = u32_at(b, rdata + 12);
        put32(b, data + 12, value);
    });
    add(".pdata before .text", "ascending order", true, &|b| put32(b, pdata + 12, 0x1000));
    add(".reloc VirtualSize huge", "beyond SizeOfImage", true, &|b| put32(b, reloc + 8, 0x1000_0000));
    add(".reloc VirtualSize past 4 GiB", "beyond 4 GiB", true, &|b| put32(b, reloc + 8, 0xFFFF_F000));
    add(".data without size", "SizeOfRawData 0", true, &|b| {
        put32(b, data + 8, 0);
        put32(b, data + 16, 0);
    });
    add(".text writable", ".text is both writable and executable", true, &|b| {
        let value = u32_at(b, text + 36) | 0x8000_0000;
        put32(b, text + 36, value);
    });
    add(".data executable", ".data is both writable and executable", true, &|b| {
        let value = u32_at(b, data + 36) | 0x2000_0000;
        put32(b, data + 36, value);
    });
    add(".text not executable", "not inside an executable section", true, &|b| {
        let value = u32_at(b, text + 36) & !0x2000_0000;
        put32(b, text + 36, value);
    });
    add(".text raw data past the file", "past the end of the file", true, &|b| {
        let value = u32::try_from(b.len()).unwrap();
        put32(b, text + 20, value);
    });
    add(".reloc SizeOfRawData huge", "past the end of the file", true, &|b| put32(b, reloc + 16, 0x10_0000));
    add(".data raw pointer overflows", "overflows 32 bits", true, &|b| put32(b, data + 20, 0xFFFF_FF00));
    // Imports.
    add("DLL name unterminated", "not NUL-terminated", true, &|b| {
        let name_rva = u32::try_from(rdata_end - 4).unwrap();
        let at = l.file_offset(b, name_rva);
        let raw_end = (u32_at(b, rdata + 20) + u32_at(b, rdata + 16)) as usize;
        b[at..raw_end].fill(b'A');
        put32(b, descriptor + 12, name_rva);
    });
    add("DLL name in no section", "in no section's raw data", true, &|b| put32(b, descriptor + 12, 0x7FFF_0000));
    add("import name unterminated", "not NUL-terminated", true, &|b| {
        let name_rva = u32::try_from(rdata_end - 6).unwrap();
        let at = l.file_offset(b, name_rva + 2);
        let raw_end = (u32_at(b, rdata + 20) + u32_at(b, rdata + 16)) as usize;
        b[at..raw_end].fill(b'B');
        put64(b, lookup, u64::from(name_rva));
    });
    add("import entry with reserved bits", "reserved bits", true, &|b| {
        let value = 0x0000_0001_0000_0000 | u64::from(u32_at(b, lookup));
        put64(b, lookup, value);
    });
    add("import hint/name in no section", "in no section's raw data", true, &|b| put64(b, lookup, 0x7FFF_0000));
    add("import by ordinal", "ntoskrnl.exe!#7", true, &|b| put64(b, lookup, 0x8000_0000_0000_0007));
    add("import lookup table in no section", "import lookup table outside the image", true, &|b| {
        put32(b, descriptor, 0x7FFF_0000);
    });
    add("import renamed", "unimplemented import(s), refused before DriverEntry:\n  fltmgr.sys!FltQetVolumeName", true, &|b| {
        let needle = b"FltGetVolumeName\0";
        let at = b.windows(needle.len()).position(|w| w == needle).expect("ctxguard imports FltGetVolumeName");
        b[at + 3] = b'Q';
    });
    add("DLL renamed", "unimplemented import(s), refused before DriverEntry:\n  qltmgr.sys!", true, &|b| {
        let needle = b"fltmgr.sys\0";
        let at = b.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle)).expect("ctxguard imports fltmgr.sys");
        b[at] = b'q';
    });
    // Base relocations.
    add("relocation SizeOfBlock 0", "SizeOfBlock 0x0", true, &|b| put32(b, reloc_block + 4, 0));
    add("relocation SizeOfBlock 10", "SizeOfBlock 0xa", true, &|b| put32(b, reloc_block + 4, 10));
    add("relocation block past the directory", "past the relocation directory", true, &|b| put32(b, reloc_block + 4, 0x1_0000));
    add("relocation page outside the image", "outside the image", true, &|b| put32(b, reloc_block, 0x7FFF_0000));
    add("relocation type HIGHLOW", "unsupported base relocation type 3", true, &|b| {
        let entry = u16_at(b, reloc_block + 8);
        put16(b, reloc_block + 8, 0x3000 | (entry & 0x0FFF));
    });
    add("relocation target past the image", "DIR64 relocation", true, &|b| {
        let last_page = u32_at(b, opt + 56) - 0x1000;
        put32(b, reloc_block, last_page);
        put16(b, reloc_block + 8, 0xAFFC);
    });
    add("relocation directory with a zero block after", "SizeOfBlock 0x0", true, &|b| {
        let size = u32_at(b, l.directory(5) + 4);
        put32(b, l.directory(5) + 4, size + 8);
    });
    // Truncations (the checksum of a cut file cannot be right: the cut is what is reported).
    for (cut, reason) in [
        (0x30, "no MZ signature"),
        (0x7A, "no PE signature"),
        (0x90, "truncated"),
        (0x100, "truncated"),
        (0x300, "truncated"),
        (0x1000, "past the end of the file"),
    ] {
        add(&format!("truncated to {cut:#x} bytes"), reason, false, &|b| b.truncate(cut));
    }
    add("last byte cut", "past the end of the file", false, &|b| {
        b.pop();
    });
    add("half the file", "past the end of the file", false, &|b| b.truncate(b.len() / 2));
    list
}

fn fltemu_run(image: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fltemu"))
        .arg("run")
        .arg(image)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fltemu runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("fltemu run {} hung", image.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

#[test]
fn the_shipped_image_still_maps_and_every_mutant_is_refused_with_its_reason() {
    let good = shipped_image();
    fltemu::map_image(&good).expect("the shipped ctxguard.sys maps");
    let mutants = mutants(&good);
    assert!(mutants.len() >= 80, "{} mutants", mutants.len());
    let mut wrong = Vec::new();
    for mutant in &mutants {
        match fltemu::map_image(&mutant.bytes) {
            Ok(_) => wrong.push(format!("{}: loaded", mutant.name)),
            Err(error) => {
                let message = error.to_string();
                // One line, except the list of unimplemented imports (one more line per import).
                let one_line = !message.contains('\n') || matches!(error, fltemu::LoadError::UnresolvedImports(_));
                if !message.contains(mutant.reason) || !one_line {
                    wrong.push(format!("{}: {message:?} lacks {:?}", mutant.name, mutant.reason));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {} mutants not refused as expected:\n{}", wrong.len(), mutants.len(), wrong.join("\n"));
}

#[test]
fn every_mutant_run_through_the_binary_exits_two_with_one_failed_line() {
    let good = shipped_image();
    let directory = std::env::temp_dir().join(format!("fltemu-bad-images-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let started = Instant::now();
    for (index, mutant) in mutants(&good).iter().enumerate() {
        let path = directory.join(format!("mutant-{index:03}.sys"));
        std::fs::write(&path, &mutant.bytes).unwrap();
        let (code, text) = fltemu_run(&path);
        assert_eq!(code, Some(2), "{}: killed by a signal or wrong exit status\n{text}", mutant.name);
        let failed: Vec<&str> = text.lines().filter(|line| line.starts_with("FAILED: ")).collect();
        assert_eq!(failed.len(), 1, "{}: expected one FAILED line\n{text}", mutant.name);
        // The FAILED line and, for unimplemented imports only, one indented `dll!name` line each.
        let listed = text.lines().skip_while(|line| !line.starts_with("FAILED: ")).skip(1).collect::<Vec<_>>();
        assert!(listed.iter().all(|line| line.starts_with("  ") && line.contains('!')), "{}: only import lines may follow\n{text}", mutant.name);
        let refusal = std::iter::once(failed[0]).chain(listed.iter().copied()).collect::<Vec<_>>().join("\n");
        assert!(refusal.contains(mutant.reason), "{}: {refusal:?} lacks {:?}", mutant.name, mutant.reason);
        assert!(!text.contains("panicked") && !text.contains("RUST_BACKTRACE"), "{}: panic\n{text}", mutant.name);
        assert_eq!(text.lines().count(), 2 + listed.len(), "{}: the header line and the refusal only\n{text}", mutant.name);
    }
    std::fs::remove_dir_all(&directory).ok();
    println!("{} mutants through the binary in {:.1} s", mutants(&good).len(), started.elapsed().as_secs_f64());
}

/// Every header byte overwritten with 0x00, 0x7F, 0x80 and 0xFF in turn (checksum rewritten):
/// the loader returns, refusing with one line or mapping the image, and never panics.
#[test]
fn overwriting_any_header_byte_never_panics() {
    let good = shipped_image();
    let headers = u32_at(&good, Layout::of(&good).optional + 60) as usize;
    let mut refused = 0;
    for at in 0..headers {
        for value in [0x00, 0x7F, 0x80, 0xFF] {
            if good[at] == value {
                continue;
            }
            let mut bytes = good.clone();
            bytes[at] = value;
            fltemu::fix_checksum(&mut bytes);
            if let Err(error) = fltemu::map_image(&bytes) {
                assert!(!error.to_string().contains('\n'), "byte {at:#x} = {value:#x}: {error}");
                refused += 1;
            }
        }
    }
    assert!(refused > 100, "only {refused} header corruptions were refused");
}
