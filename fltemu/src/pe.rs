//! The PE loader: parse a kernel image, map its sections with their protections, apply base
//! relocations, verify the checksum and bind imports to the emulated exports.
//!
//! Formats follow the "PE Format" page of the Windows docs (learn.microsoft.com
//! windows/win32/debug/pe-format): DOS header `e_lfanew` at 0x3C, `PE\0\0`, COFF header,
//! PE32+ optional header (magic 0x20B) with `CheckSum` at optional-header offset 64 and the
//! data directories at offset 112; IMAGE_REL_BASED_DIR64 = 10, ABSOLUTE = 0.

use std::collections::HashMap;
use std::fmt;

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
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io(e) => write!(f, "cannot read the image: {e}"),
            LoadError::NotPe(why) => write!(f, "not a PE image: {why}"),
            LoadError::WrongMachine(m) => write!(f, "wrong machine {m:#06x} (expected AMD64 {MACHINE_AMD64:#06x})"),
            LoadError::NotPe32Plus(m) => write!(f, "not a PE32+ image (optional header magic {m:#06x})"),
            LoadError::WrongSubsystem(s) => write!(f, "subsystem {s} is not NATIVE (1): not a kernel driver"),
            LoadError::BadChecksum { stored, computed } => {
                write!(f, "bad PE checksum: stored {stored:#010x}, computed {computed:#010x}")
            }
            LoadError::UnresolvedImports(names) => {
                write!(f, "{} unimplemented import(s), refused before DriverEntry:", names.len())?;
                for name in names {
                    write!(f, "\n  {name}")?;
                }
                Ok(())
            }
            LoadError::UnsupportedRelocation(t) => write!(f, "unsupported base relocation type {t}"),
            LoadError::Map(e) => write!(f, "mapping the image failed: {e}"),
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
        if rva < self.size_of_headers {
            return Some(rva as usize);
        }
        self.sections.iter().find_map(|s| {
            let end = s.virtual_address + s.virtual_size.max(s.raw_size);
            (rva >= s.virtual_address && rva < end && rva - s.virtual_address < s.raw_size)
                .then(|| (s.raw_offset + (rva - s.virtual_address)) as usize)
        })
    }

    fn c_string(&self, file: &[u8], rva: u32) -> Result<String, LoadError> {
        let start = self.file_offset(rva).ok_or_else(|| LoadError::NotPe(format!("name RVA {rva:#x} outside the image")))?;
        let bytes = file.get(start..).ok_or_else(|| LoadError::NotPe("name outside the file".into()))?;
        let end = bytes.iter().position(|b| *b == 0).ok_or_else(|| LoadError::NotPe("unterminated name".into()))?;
        Ok(String::from_utf8_lossy(&bytes[..end]).into_owned())
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
                if entry & (1 << 63) != 0 {
                    // Kept, not refused here: binding reports it with every other missing import.
                    let ordinal = (entry & 0xFFFF) as u16;
                    imports.push(Import { dll: dll.clone(), name: format!("#{ordinal}"), ordinal: Some(ordinal), iat_rva: iat + slot * 8 });
                    continue;
                }
                #[allow(clippy::cast_possible_truncation)] // a hint/name RVA is 31 bits
                let name = self.c_string(file, (entry as u32) + 2)?;
                imports.push(Import { dll: dll.clone(), name, ordinal: None, iat_rva: iat + slot * 8 });
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
        let functions = self.file_offset(u32_at(file, base + 28, "export directory")?).unwrap_or(0);
        let name_table = self.file_offset(u32_at(file, base + 32, "export directory")?).unwrap_or(0);
        let ordinals = self.file_offset(u32_at(file, base + 36, "export directory")?).unwrap_or(0);
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
/// `IMAGE_SCN_MEM_READ`.
const SCN_READ: u32 = 0x4000_0000;
/// `IMAGE_SCN_MEM_WRITE`.
const SCN_WRITE: u32 = 0x8000_0000;
/// `IMAGE_SCN_MEM_DISCARDABLE`.
const SCN_DISCARDABLE: u32 = 0x0200_0000;

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
            let raw = (section.raw_size as usize).min(section.virtual_size.max(section.raw_size) as usize);
            let source = file
                .get(section.raw_offset as usize..section.raw_offset as usize + raw)
                .ok_or_else(|| LoadError::NotPe(format!("section {} raw data outside the file", section.name)))?;
            let target = memory
                .get_mut(section.virtual_address as usize..section.virtual_address as usize + raw)
                .ok_or_else(|| LoadError::NotPe(format!("section {} outside SizeOfImage", section.name)))?;
            target.copy_from_slice(source);
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
            let page = u32_at(memory, offset, "relocation block")? as usize;
            let block = u32_at(memory, offset + 4, "relocation block")? as usize;
            if block < 8 {
                break;
            }
            for entry in (offset + 8..offset + block).step_by(2) {
                let value = u16_at(memory, entry, "relocation entry")?;
                let kind = value >> 12;
                let at = page + usize::from(value & 0x0FFF);
                match kind {
                    0 => {}
                    10 => {
                        let target = memory.get_mut(at..at + 8).ok_or_else(|| LoadError::NotPe("relocation outside the image".into()))?;
                        let old = u64::from_le_bytes(target.try_into().unwrap_or([0; 8]));
                        target.copy_from_slice(&old.wrapping_add(delta).to_le_bytes());
                    }
                    other => return Err(LoadError::UnsupportedRelocation(other)),
                }
            }
            offset += block;
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
            let mut protection = libc::PROT_NONE;
            if c & (SCN_READ | SCN_DISCARDABLE) != 0 {
                protection |= libc::PROT_READ;
            }
            if c & SCN_WRITE != 0 {
                protection |= libc::PROT_WRITE | libc::PROT_READ;
            }
            if c & SCN_EXECUTE != 0 {
                protection |= libc::PROT_EXEC | libc::PROT_READ;
            }
            set(start, section.virtual_size.max(section.raw_size) as usize, protection)?;
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
    fn garbage_is_not_a_pe() {
        assert!(matches!(ParsedImage::parse(b"hello world, not an image at all.............................................."), Err(LoadError::NotPe(_))));
    }
}
