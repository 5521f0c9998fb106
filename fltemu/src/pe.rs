//! The PE loader: parse a kernel image, map its sections with their protections, apply base
//! relocations, verify the checksum and bind imports to the emulated exports.
//!
//! Formats follow the "PE Format" page of the Windows docs (learn.microsoft.com
//! windows/win32/debug/pe-format): DOS header `e_lfanew` at 0x3C, `PE\0\0`, COFF header,
//! PE32+ optional header (magic 0x20B) with `CheckSum` at optional-header offset 64 and the
//! data directories at offset 112; IMAGE_REL_BASED_DIR64 = 10, ABSOLUTE = 0.

use std::collections::HashMap;
use std::fmt;

pub mod rules;

/// `IMAGE_FILE_MACHINE_AMD64`.
pub const MACHINE_AMD64: u16 = 0x8664;
/// `IMAGE_FILE_MACHINE_ARM64`.
pub const MACHINE_ARM64: u16 = 0xAA64;
/// `IMAGE_SUBSYSTEM_NATIVE`.
pub const SUBSYSTEM_NATIVE: u16 = 1;
/// Offset of `CheckSum` within the optional header (PE32 and PE32+ alike).
const CHECKSUM_OFFSET_IN_OPTIONAL_HEADER: usize = 64;

/// Why an image could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The file could not be read.
    Io(String),
    /// Not a PE image: the named structure is missing or malformed.
    NotPe(String),
    /// The image is for another machine (the COFF `Machine` value).
    WrongMachine(u16),
    /// Not a PE32+ image.
    NotPe32Plus(u16),
    /// Not a native-subsystem (kernel) image.
    WrongSubsystem(u16),
    /// The stored checksum differs from the computed one.
    BadChecksum {
        /// `CheckSum` in the optional header.
        stored: u32,
        /// The checksum computed by the PE-spec algorithm.
        computed: u32,
    },
    /// Every import no emulated module exports, as `dll!function` (an import by ordinal as
    /// `dll!#ordinal`), in import-table order; the image is refused before DriverEntry.
    UnresolvedImports(Vec<String>),
    /// A relocation type the loader does not apply.
    UnsupportedRelocation(u16),
    /// mmap/mprotect failed.
    Map(String),
    /// Windows' image loader refuses the image ([`rules`]): the NTSTATUS it returns and why.
    InvalidImage {
        /// `STATUS_INVALID_IMAGE_FORMAT` or `STATUS_INVALID_IMAGE_HASH`.
        status: u32,
        /// One line naming the field and the rule.
        reason: String,
    },
}

impl fmt::Display for LoadError {
    /// One line whatever the image holds: control characters from names in the image (a section
    /// or import name with a newline) are escaped.
    /// The one exception is the list of unimplemented imports: one line per import, each
    /// escaped the same way.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let LoadError::UnresolvedImports(names) = self {
            write!(f, "{} unimplemented import(s), refused before DriverEntry:", names.len())?;
            for name in names {
                write!(f, "\n  {}", one_line(name))?;
            }
            return Ok(());
        }
        let mut text = String::new();
        self.describe(&mut text)?;
        f.write_str(&one_line(&text))
    }
}

/// `text` with its control characters escaped (`\n`, `\u{e}`), so that it prints as one line.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

impl LoadError {
    fn describe(&self, f: &mut impl fmt::Write) -> fmt::Result {
        match self {
            LoadError::Io(e) => write!(f, "cannot read the image: {e}"),
            LoadError::NotPe(why) => write!(f, "not a PE image: {why}"),
            LoadError::WrongMachine(m) => write!(f, "wrong machine {m:#06x} (expected AMD64 {MACHINE_AMD64:#06x})"),
            LoadError::NotPe32Plus(m) => write!(f, "not a PE32+ image (optional header magic {m:#06x})"),
            LoadError::WrongSubsystem(s) => write!(f, "subsystem {s} is not NATIVE (1): not a kernel driver"),
            LoadError::BadChecksum { stored, computed } => {
                write!(f, "bad PE checksum: stored {stored:#010x}, computed {computed:#010x}")
            }
            LoadError::UnresolvedImports(names) => write!(f, "{} unimplemented import(s), refused before DriverEntry", names.len()),
            LoadError::UnsupportedRelocation(t) => write!(f, "unsupported base relocation type {t}"),
            LoadError::Map(e) => write!(f, "mapping the image failed: {e}"),
            LoadError::InvalidImage { status, reason } => {
                let name = if *status == rules::STATUS_INVALID_IMAGE_HASH { "STATUS_INVALID_IMAGE_HASH" } else { "STATUS_INVALID_IMAGE_FORMAT" };
                write!(f, "Windows would refuse this image ({name} {status:#010x}): {reason}")
            }
        }
    }
}

impl std::error::Error for LoadError {}

fn u16_at(bytes: &[u8], offset: usize, what: &str) -> Result<u16, LoadError> {
    bytes
        .get(offset..offset + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| LoadError::NotPe(format!("truncated at {what}")))
}

fn u32_at(bytes: &[u8], offset: usize, what: &str) -> Result<u32, LoadError> {
    bytes
        .get(offset..offset + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| LoadError::NotPe(format!("truncated at {what}")))
}

fn u64_at(bytes: &[u8], offset: usize, what: &str) -> Result<u64, LoadError> {
    bytes
        .get(offset..offset + 8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .ok_or_else(|| LoadError::NotPe(format!("truncated at {what}")))
}

/// The PE checksum (PE spec; the algorithm of `CheckSumMappedFile`): one's-complement-style
/// 16-bit sum with carries folded, skipping the 4 checksum bytes, plus the file length.
#[must_use]
pub fn pe_checksum(file: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u64 = 0;
    let mut offset = 0;
    while offset < file.len() {
        if offset == checksum_offset || offset == checksum_offset + 2 {
            offset += 2;
            continue;
        }
        let low = u64::from(file[offset]);
        let high = file.get(offset + 1).map_or(0, |b| u64::from(*b));
        sum += low | (high << 8);
        sum = (sum & 0xFFFF) + (sum >> 16);
        offset += 2;
    }
    sum = (sum & 0xFFFF) + (sum >> 16);
    #[allow(clippy::cast_possible_truncation)] // the sum is folded to 16 bits; PE files are < 4 GiB
    let result = (sum as u32).wrapping_add(file.len() as u32);
    result
}

/// One section header.
#[derive(Debug, Clone)]
pub struct Section {
    /// Section name (up to 8 bytes).
    pub name: String,
    /// RVA.
    pub virtual_address: u32,
    /// Size in memory.
    pub virtual_size: u32,
    /// Offset of the raw data in the file.
    pub raw_offset: u32,
    /// Size of the raw data.
    pub raw_size: u32,
    /// `IMAGE_SCN_*` characteristics.
    pub characteristics: u32,
}

impl Section {
    /// The bytes the section occupies in memory: VirtualSize, or SizeOfRawData when it is 0.
    #[must_use]
    pub fn memory_size(&self) -> u32 {
        if self.virtual_size == 0 { self.raw_size } else { self.virtual_size }
    }
}

/// The hint/name RVA of a PE32+ import lookup entry (not an ordinal), plus 2 for the hint: "bits
/// 30-0" hold the RVA and bits 62-31 must be 0 (PE format, import lookup table).
fn hint_name_rva(entry: u64) -> Result<u32, LoadError> {
    u32::try_from(entry)
        .ok()
        .filter(|rva| *rva < 0x8000_0000)
        .and_then(|rva| rva.checked_add(2))
        .ok_or_else(|| LoadError::NotPe(format!("import lookup entry {entry:#x} has reserved bits set")))
}

/// One import: module (lowercase), function name, and the RVA of its IAT slot.
#[derive(Debug, Clone)]
pub struct Import {
    /// The DLL name, lowercased.
    pub dll: String,
    /// The imported function's name (`#N` for an import by ordinal).
    pub name: String,
    /// The ordinal of an import by ordinal (IMAGE_ORDINAL_FLAG64 set), else None.
    pub ordinal: Option<u16>,
    /// RVA of the IAT slot to patch.
    pub iat_rva: u32,
}

/// A parsed (not yet mapped) PE32+ image.
#[derive(Debug, Clone)]
pub struct ParsedImage {
    /// COFF machine.
    pub machine: u16,
    /// Optional-header subsystem.
    pub subsystem: u16,
    /// Preferred base.
    pub image_base: u64,
    /// `SizeOfImage`.
    pub size_of_image: u32,
    /// `SizeOfHeaders`.
    pub size_of_headers: u32,
    /// Entry point RVA.
    pub entry_rva: u32,
    /// Stored checksum.
    pub stored_checksum: u32,
    /// Computed checksum.
    pub computed_checksum: u32,
    /// Sections.
    pub sections: Vec<Section>,
    /// Imports.
    pub imports: Vec<Import>,
    /// Base relocation directory (rva, size).
    pub relocations: (u32, u32),
    /// Named exports: name → RVA.
    pub exports: HashMap<String, u32>,
}

impl ParsedImage {
    /// Parses the headers, sections, imports and exports; checks machine, format and subsystem
    /// (machine first, so an ARM64 driver is reported as the wrong machine), then the checksum.
    ///
    /// # Errors
    /// A [`LoadError`] naming the first problem found.
    pub fn parse(file: &[u8]) -> Result<Self, LoadError> {
        if file.len() < 0x40 || &file[..2] != b"MZ" {
            return Err(LoadError::NotPe("no MZ signature".into()));
        }
        let pe = u32_at(file, 0x3C, "e_lfanew")? as usize;
        if file.get(pe..pe + 4) != Some(b"PE\0\0".as_slice()) {
            return Err(LoadError::NotPe("no PE signature at e_lfanew".into()));
        }
        let coff = pe + 4;
        let machine = u16_at(file, coff, "Machine")?;
        if machine != MACHINE_AMD64 {
            return Err(LoadError::WrongMachine(machine));
        }
        let section_count = usize::from(u16_at(file, coff + 2, "NumberOfSections")?);
        let optional_size = usize::from(u16_at(file, coff + 16, "SizeOfOptionalHeader")?);
        let optional = coff + 20;
        let magic = u16_at(file, optional, "Magic")?;
        if magic != 0x20B {
            return Err(LoadError::NotPe32Plus(magic));
        }
        let entry_rva = u32_at(file, optional + 16, "AddressOfEntryPoint")?;
        let image_base = u64_at(file, optional + 24, "ImageBase")?;
        let size_of_image = u32_at(file, optional + 56, "SizeOfImage")?;
        let size_of_headers = u32_at(file, optional + 60, "SizeOfHeaders")?;
        let stored_checksum = u32_at(file, optional + CHECKSUM_OFFSET_IN_OPTIONAL_HEADER, "CheckSum")?;
        let subsystem = u16_at(file, optional + 68, "Subsystem")?;
        if subsystem != SUBSYSTEM_NATIVE {
            return Err(LoadError::WrongSubsystem(subsystem));
        }
        // Windows' section-creation checks come before the driver loader's checksum check.
        rules::check(file)?;
        let directory_count = u32_at(file, optional + 108, "NumberOfRvaAndSizes")? as usize;
        let directory = |index: usize| -> Result<(u32, u32), LoadError> {
            if index >= directory_count {
                return Ok((0, 0));
            }
            let at = optional + 112 + index * 8;
            Ok((u32_at(file, at, "data directory")?, u32_at(file, at + 4, "data directory")?))
        };
        let computed_checksum = pe_checksum(file, optional + CHECKSUM_OFFSET_IN_OPTIONAL_HEADER);
        if stored_checksum != computed_checksum {
            return Err(LoadError::BadChecksum { stored: stored_checksum, computed: computed_checksum });
        }
        let mut sections = Vec::with_capacity(section_count);
        let table = optional + optional_size;
        for index in 0..section_count {
            let at = table + index * 40;
            let raw_name = file.get(at..at + 8).ok_or_else(|| LoadError::NotPe("truncated section table".into()))?;
            let name = String::from_utf8_lossy(raw_name).trim_end_matches('\0').to_owned();
            sections.push(Section {
                name,
                virtual_size: u32_at(file, at + 8, "section")?,
                virtual_address: u32_at(file, at + 12, "section")?,
                raw_size: u32_at(file, at + 16, "section")?,
                raw_offset: u32_at(file, at + 20, "section")?,
                characteristics: u32_at(file, at + 36, "section")?,
            });
        }
        let mut image = ParsedImage {
            machine,
            subsystem,
            image_base,
            size_of_image,
            size_of_headers,
            entry_rva,
            stored_checksum,
            computed_checksum,
            sections,
            imports: Vec::new(),
            relocations: directory(5)?,
            exports: HashMap::new(),
        };
        image.imports = image.parse_imports(file, directory(1)?)?;
        image.exports = image.parse_exports(file, directory(0)?)?;
        Ok(image)
    }

    /// Translates an RVA to a file offset through the section table.
    fn file_offset(&self, rva: u32) -> Option<usize> {
        self.file_range(rva).map(|(start, _)| start)
    }

    /// The file offset of `rva` and the end of the raw data holding it (headers or one section),
    /// so that a read starting at the RVA can be kept inside what the loader would map there.
    fn file_range(&self, rva: u32) -> Option<(usize, usize)> {
        if rva < self.size_of_headers {
            return Some((rva as usize, self.size_of_headers as usize));
        }
        self.sections.iter().find_map(|s| {
            let into = rva.checked_sub(s.virtual_address)?;
            (into < s.raw_size.min(s.memory_size()))
                .then(|| (u64::from(s.raw_offset) + u64::from(into), u64::from(s.raw_offset) + u64::from(s.raw_size)))
                .and_then(|(start, end)| Some((usize::try_from(start).ok()?, usize::try_from(end).ok()?)))
        })
    }

    /// A NUL-terminated name at `rva`; the NUL must come before the end of the section (or
    /// headers) holding the name, as the loader reads names from the mapped section.
    fn c_string(&self, file: &[u8], rva: u32) -> Result<String, LoadError> {
        let (start, end) = self.file_range(rva).ok_or_else(|| LoadError::NotPe(format!("name RVA {rva:#x} is in no section's raw data")))?;
        let bytes = file.get(start..end.min(file.len())).ok_or_else(|| LoadError::NotPe(format!("name RVA {rva:#x} outside the file")))?;
        let length = bytes
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| LoadError::NotPe(format!("name at RVA {rva:#x} is not NUL-terminated inside its section")))?;
        Ok(String::from_utf8_lossy(&bytes[..length]).into_owned())
    }

    fn parse_imports(&self, file: &[u8], (rva, size): (u32, u32)) -> Result<Vec<Import>, LoadError> {
        let mut imports = Vec::new();
        if rva == 0 || size == 0 {
            return Ok(imports);
        }
        let base = self.file_offset(rva).ok_or_else(|| LoadError::NotPe("import directory outside the image".into()))?;
        for descriptor in 0.. {
            let at = base + descriptor * 20;
            let lookup = u32_at(file, at, "import descriptor")?;
            let name_rva = u32_at(file, at + 12, "import descriptor")?;
            let iat = u32_at(file, at + 16, "import descriptor")?;
            if lookup == 0 && name_rva == 0 && iat == 0 {
                break;
            }
            let dll = self.c_string(file, name_rva)?.to_ascii_lowercase();
            let table = if lookup != 0 { lookup } else { iat };
            let table_offset = self.file_offset(table).ok_or_else(|| LoadError::NotPe("import lookup table outside the image".into()))?;
            for slot in 0u32.. {
                let entry = u64_at(file, table_offset + slot as usize * 8, "import lookup entry")?;
                if entry == 0 {
                    break;
                }
                let iat_rva = slot.checked_mul(8).and_then(|o| iat.checked_add(o)).ok_or_else(|| LoadError::NotPe("IAT slot past 4 GiB".into()))?;
                if entry & (1 << 63) != 0 {
                    // Kept, not refused here: binding reports it with every other missing import.
                    let ordinal = (entry & 0xFFFF) as u16;
                    imports.push(Import { dll: dll.clone(), name: format!("#{ordinal}"), ordinal: Some(ordinal), iat_rva });
                    continue;
                }
                let name = self.c_string(file, hint_name_rva(entry)?)?;
                imports.push(Import { dll: dll.clone(), name, ordinal: None, iat_rva });
            }
        }
        Ok(imports)
    }

    fn parse_exports(&self, file: &[u8], (rva, size): (u32, u32)) -> Result<HashMap<String, u32>, LoadError> {
        let mut exports = HashMap::new();
        if rva == 0 || size == 0 {
            return Ok(exports);
        }
        let base = self.file_offset(rva).ok_or_else(|| LoadError::NotPe("export directory outside the image".into()))?;
        let names = u32_at(file, base + 24, "export directory")?;
        let table = |at: usize, what: &str| -> Result<usize, LoadError> {
            let rva = u32_at(file, base + at, "export directory")?;
            self.file_offset(rva).ok_or_else(|| LoadError::NotPe(format!("export {what} table RVA {rva:#x} is in no section's raw data")))
        };
        let functions = table(28, "address")?;
        let name_table = table(32, "name")?;
        let ordinals = table(36, "ordinal")?;
        for index in 0..names as usize {
            let name = self.c_string(file, u32_at(file, name_table + index * 4, "export names")?)?;
            let ordinal = usize::from(u16_at(file, ordinals + index * 2, "export ordinals")?);
            exports.insert(name, u32_at(file, functions + ordinal * 4, "export functions")?);
        }
        Ok(exports)
    }
}

/// A mapped image; unmapped on drop.
#[derive(Debug)]
pub struct MappedImage {
    /// Where the image was mapped.
    pub base: usize,
    /// Its size (SizeOfImage rounded to pages).
    pub size: usize,
    /// The parsed headers.
    pub parsed: ParsedImage,
}

// SAFETY: the mapping is plain memory owned by this value; the raw base address is only an
// address, and the emulator serializes what runs in it.
unsafe impl Send for MappedImage {}
// SAFETY: as above; shared access only reads addresses.
unsafe impl Sync for MappedImage {}

const PAGE: usize = 4096;
/// `IMAGE_SCN_MEM_EXECUTE`.
const SCN_EXECUTE: u32 = 0x2000_0000;
/// `IMAGE_SCN_MEM_WRITE`.
const SCN_WRITE: u32 = 0x8000_0000;

/// Resolves every import before anything is mapped: the (IAT RVA, address) pairs, or all the
/// imports that do not resolve, each as `dll!name` (`dll!#N` by ordinal: kernel exports are
/// bound by name, and an ordinal names no function fltemu could look up).
///
/// # Errors
/// [`LoadError::UnresolvedImports`] listing every missing import.
pub fn bind_imports(imports: &[Import], resolve: &dyn Fn(&str, &str) -> Option<usize>) -> Result<Vec<(u32, usize)>, LoadError> {
    let mut bindings = Vec::with_capacity(imports.len());
    let mut missing = Vec::new();
    for import in imports {
        let address = if import.ordinal.is_some() { None } else { resolve(&import.dll, &import.name) };
        match address {
            Some(address) => bindings.push((import.iat_rva, address)),
            None => missing.push(format!("{}!{}", import.dll, import.name)),
        }
    }
    if missing.is_empty() { Ok(bindings) } else { Err(LoadError::UnresolvedImports(missing)) }
}

impl MappedImage {
    /// Maps `file`, relocates it and binds every import through `resolve(dll, name)`.
    ///
    /// # Errors
    /// Any [`LoadError`]; an import `resolve` does not know fails naming `dll!function`.
    pub fn load(file: &[u8], resolve: &dyn Fn(&str, &str) -> Option<usize>) -> Result<Self, LoadError> {
        let parsed = ParsedImage::parse(file)?;
        let bindings = bind_imports(&parsed.imports, resolve)?;
        let size = (parsed.size_of_image as usize).div_ceil(PAGE) * PAGE;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing.
        let base = unsafe {
            libc::mmap(core::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if base == libc::MAP_FAILED {
            return Err(LoadError::Map(std::io::Error::last_os_error().to_string()));
        }
        let image = MappedImage { base: base as usize, size, parsed };
        // SAFETY: the mapping is `size` bytes, readable and writable, owned by `image`.
        let memory = unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>(), size) };
        let headers = (image.parsed.size_of_headers as usize).min(file.len()).min(size);
        memory[..headers].copy_from_slice(&file[..headers]);
        for section in &image.parsed.sections {
            copy_section(file, memory, section)?;
        }
        image.relocate(memory)?;
        for (iat_rva, address) in bindings {
            let slot = memory
                .get_mut(iat_rva as usize..iat_rva as usize + 8)
                .ok_or_else(|| LoadError::NotPe("IAT slot outside the image".into()))?;
            slot.copy_from_slice(&(address as u64).to_le_bytes());
        }
        image.protect()?;
        Ok(image)
    }

    fn relocate(&self, memory: &mut [u8]) -> Result<(), LoadError> {
        let delta = (self.base as u64).wrapping_sub(self.parsed.image_base);
        let (rva, size) = self.parsed.relocations;
        let mut offset = rva as usize;
        let end = offset + size as usize;
        while offset + 8 <= end {
            let (page, entries) = relocation_block(memory, offset, end)?;
            let next = entries.end;
            for entry in entries.step_by(2) {
                let value = u16_at(memory, entry, "relocation entry")?;
                let at = page + usize::from(value & 0x0FFF);
                match value >> 12 {
                    0 => {}
                    10 => {
                        let target = memory.get_mut(at..at + 8).ok_or_else(|| LoadError::NotPe(format!("DIR64 relocation at RVA {at:#x} outside the image")))?;
                        let old = u64::from_le_bytes(target.try_into().unwrap_or([0; 8]));
                        target.copy_from_slice(&old.wrapping_add(delta).to_le_bytes());
                    }
                    other => return Err(LoadError::UnsupportedRelocation(other)),
                }
            }
            offset = next;
        }
        Ok(())
    }

    fn protect(&self) -> Result<(), LoadError> {
        let set = |start: usize, length: usize, protection: i32| -> Result<(), LoadError> {
            if length == 0 {
                return Ok(());
            }
            let length = length.div_ceil(PAGE) * PAGE;
            // SAFETY: the range lies inside this image's own mapping (checked by the callers).
            let result = unsafe { libc::mprotect((self.base + start) as *mut libc::c_void, length.min(self.size - start), protection) };
            if result == 0 { Ok(()) } else { Err(LoadError::Map(std::io::Error::last_os_error().to_string())) }
        };
        set(0, self.parsed.size_of_headers as usize, libc::PROT_READ)?;
        for section in &self.parsed.sections {
            let start = section.virtual_address as usize;
            if start >= self.size {
                return Err(LoadError::NotPe(format!("section {} outside SizeOfImage", section.name)));
            }
            let c = section.characteristics;
            // Every mapped section is readable: an x64 kernel page has no "not readable" bit
            // (a present PTE is always readable), so IMAGE_SCN_MEM_READ (and DISCARDABLE) change
            // nothing, and the unwinder and the trap decoder may read any section.
            let mut protection = libc::PROT_READ;
            if c & SCN_WRITE != 0 {
                protection |= libc::PROT_WRITE;
            }
            if c & SCN_EXECUTE != 0 {
                protection |= libc::PROT_EXEC;
            }
            set(start, section.memory_size() as usize, protection)?;
        }
        Ok(())
    }

    /// The address of a named export.
    #[must_use]
    pub fn export(&self, name: &str) -> Option<usize> {
        self.parsed.exports.get(name).map(|rva| self.base + *rva as usize)
    }

    /// The entry point's address.
    #[must_use]
    pub fn entry(&self) -> usize {
        self.base + self.parsed.entry_rva as usize
    }

    /// The RVA of `address` if it lies inside the image.
    #[must_use]
    pub fn rva_of(&self, address: usize) -> Option<u32> {
        #[allow(clippy::cast_possible_truncation)] // images are smaller than 4 GiB
        (address >= self.base && address < self.base + self.size).then(|| (address - self.base) as u32)
    }
}

/// Copies a section's raw data to its RVA: SizeOfRawData bytes, but no more than the section
/// occupies in memory (page-rounded), so an oversized SizeOfRawData cannot spill into the next one.
fn copy_section(file: &[u8], memory: &mut [u8], section: &Section) -> Result<(), LoadError> {
    let in_memory = (section.memory_size() as usize).div_ceil(PAGE) * PAGE;
    let length = (section.raw_size as usize).min(in_memory);
    let (offset, address) = (section.raw_offset as usize, section.virtual_address as usize);
    let source = file
        .get(offset..offset + length)
        .ok_or_else(|| LoadError::NotPe(format!("section {} raw data outside the file", section.name)))?;
    let target = memory
        .get_mut(address..(address + length).min(memory.len()))
        .ok_or_else(|| LoadError::NotPe(format!("section {} outside SizeOfImage", section.name)))?;
    let length = target.len();
    target.copy_from_slice(&source[..length]);
    Ok(())
}

/// The page RVA and entry byte range of the base relocation block at `offset`, checked against
/// the PE format's block rules: "Each block must start on a 32-bit boundary", SizeOfBlock counts
/// its 8-byte header and its 2-byte entries and the block lies inside the relocation directory
/// (ending at `end`); the page must lie inside the image.
fn relocation_block(memory: &[u8], offset: usize, end: usize) -> Result<(usize, std::ops::Range<usize>), LoadError> {
    let page = u32_at(memory, offset, "relocation block")? as usize;
    let block = u32_at(memory, offset + 4, "relocation block")? as usize;
    if block < 8 || !block.is_multiple_of(4) {
        return Err(LoadError::NotPe(format!("base relocation block at RVA {offset:#x} has SizeOfBlock {block:#x} (not a multiple of 4 of at least 8)")));
    }
    if offset + block > end {
        return Err(LoadError::NotPe(format!("base relocation block at RVA {offset:#x} (size {block:#x}) runs past the relocation directory end {end:#x}")));
    }
    if page >= memory.len() {
        return Err(LoadError::NotPe(format!("base relocation block at RVA {offset:#x} is for page {page:#x}, outside the image")));
    }
    Ok((page, offset + 8..offset + block))
}

impl Drop for MappedImage {
    fn drop(&mut self) {
        // SAFETY: base/size describe the mapping made in `load`, owned by this value; no driver
        // code runs any more (the emulator drops the image last).
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_skips_its_own_field_and_adds_the_length() {
        // Words 0x0201 and 0x0403, checksum field (bytes 4..8) ignored, plus length 8.
        let file = [1, 2, 3, 4, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(pe_checksum(&file, 4), 0x0201 + 0x0403 + 8);
    }

    #[test]
    fn an_import_entry_with_reserved_bits_is_refused_not_wrapped() {
        assert_eq!(hint_name_rva(0x5000), Ok(0x5002));
        // 0xFFFF_FFFF + 2 used to overflow; bits 62-31 must be 0.
        assert!(matches!(hint_name_rva(0xFFFF_FFFF), Err(LoadError::NotPe(_))));
        assert!(matches!(hint_name_rva(0x0000_0001_0000_0000), Err(LoadError::NotPe(_))));
    }

    #[test]
    fn malformed_relocation_blocks_are_refused() {
        let mut memory = vec![0u8; 0x3000];
        let block = |memory: &mut Vec<u8>, page: u32, size: u32| {
            memory[0x2000..0x2004].copy_from_slice(&page.to_le_bytes());
            memory[0x2004..0x2008].copy_from_slice(&size.to_le_bytes());
        };
        block(&mut memory, 0x1000, 12);
        assert_eq!(relocation_block(&memory, 0x2000, 0x2010), Ok((0x1000, 0x2008..0x200C)));
        // A size below the header used to end relocation silently (the rest ignored).
        block(&mut memory, 0x1000, 0);
        assert!(matches!(relocation_block(&memory, 0x2000, 0x2010), Err(LoadError::NotPe(why)) if why.contains("SizeOfBlock")));
        block(&mut memory, 0x1000, 10);
        assert!(matches!(relocation_block(&memory, 0x2000, 0x2010), Err(LoadError::NotPe(why)) if why.contains("multiple of 4")));
        block(&mut memory, 0x1000, 0x20);
        assert!(matches!(relocation_block(&memory, 0x2000, 0x2010), Err(LoadError::NotPe(why)) if why.contains("past the relocation directory")));
        block(&mut memory, 0x10_0000, 12);
        assert!(matches!(relocation_block(&memory, 0x2000, 0x2010), Err(LoadError::NotPe(why)) if why.contains("outside the image")));
    }

    #[test]
    fn an_oversized_raw_size_copies_only_the_section_own_pages() {
        let file = vec![0xAAu8; 0x4000];
        let mut memory = vec![0u8; 0x3000];
        let section = Section { name: ".text".into(), virtual_address: 0x1000, virtual_size: 0x10, raw_offset: 0, raw_size: 0x3000, characteristics: 0 };
        copy_section(&file, &mut memory, &section).unwrap();
        assert!(memory[0x1000..0x2000].iter().all(|b| *b == 0xAA));
        assert!(memory[0x2000..].iter().all(|b| *b == 0), "the next section's page was overwritten");
    }

    #[test]
    fn a_name_must_end_inside_its_section() {
        let file = b"headers.AAAAAAAA".to_vec();
        let image = ParsedImage {
            machine: MACHINE_AMD64,
            subsystem: 1,
            image_base: 0,
            size_of_image: 0x2000,
            size_of_headers: 8,
            entry_rva: 0,
            stored_checksum: 0,
            computed_checksum: 0,
            sections: vec![Section { name: ".rdata".into(), virtual_address: 0x1000, virtual_size: 8, raw_offset: 8, raw_size: 8, characteristics: 0 }],
            imports: Vec::new(),
            relocations: (0, 0),
            exports: HashMap::new(),
        };
        assert!(matches!(image.c_string(&file, 0x1000), Err(LoadError::NotPe(why)) if why.contains("not NUL-terminated")));
        let mut terminated = file.clone();
        terminated[12] = 0;
        assert_eq!(image.c_string(&terminated, 0x1000), Ok("AAAA".into()));
        assert!(matches!(image.c_string(&file, 0x0FFF_FFFF), Err(LoadError::NotPe(_))));
    }

    /// Fuzz finding: a section name with a newline made a two-line refusal.
    #[test]
    fn a_refusal_naming_a_name_with_control_characters_stays_one_line() {
        let error = LoadError::InvalidImage { status: rules::STATUS_INVALID_IMAGE_FORMAT, reason: "section \u{e}\0\n at 0x10000000 leaves a gap".into() };
        let text = error.to_string();
        assert!(!text.contains('\n') && text.contains("\\n at 0x10000000"), "{text}");
        // The import list keeps one line per import, each escaped.
        assert_eq!(
            LoadError::UnresolvedImports(vec!["ntoskrnl.exe!a\r\nb".into(), "fltmgr.sys!c".into()]).to_string(),
            "2 unimplemented import(s), refused before DriverEntry:\n  ntoskrnl.exe!a\\r\\nb\n  fltmgr.sys!c"
        );
    }

    #[test]
    fn garbage_is_not_a_pe() {
        assert!(matches!(ParsedImage::parse(b"hello world, not an image at all.............................................."), Err(LoadError::NotPe(_))));
    }
}
