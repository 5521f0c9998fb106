//! The checks Windows' image loader makes before it maps a kernel image, so that fltemu refuses
//! what Windows refuses ("this image will not load on Windows") instead of running it.
//!
//! Each rule is one function over [`Headers`] and names its source:
//! * PE = the "PE Format" page (learn.microsoft.com/windows/win32/debug/pe-format): field
//!   descriptions of the optional header, section table and data directories.
//! * ROS = ReactOS `ntoskrnl/mm/section.c`, `PeFmtCreateSection` (the image-section builder that
//!   mirrors nt's `MiCreateImageFileMap`): the alignment, image-base, section-count and
//!   section-adjacency refusals with STATUS_INVALID_IMAGE_FORMAT.
//! * PELIB = the PeLib `ImageLoader` checks (retdec), which model `MiCreateImageFileMap`'s
//!   refusals on Windows 7..10 (executable flag, FileAlignment < 512 only with equal
//!   SectionAlignment, SizeOfHeaders <= SizeOfImage, largest image 0x77000000, sections inside
//!   SizeOfImage).
//! * HVCI = "Implement memory integrity compatible code" (learn.microsoft.com
//!   windows-hardware/drivers/driversecurity/implement-hvci-compatible-code): no writable and
//!   executable section, section alignment a multiple of PAGE_SIZE.
//! * INTEGRITYCHECK = the `/INTEGRITYCHECK` linker page (learn.microsoft.com
//!   cpp/build/reference/integritycheck-require-signature-check): FORCE_INTEGRITY makes the
//!   memory manager demand a signature.
//!
//! The rules read only the headers and the section table; they never index past the file.

use super::LoadError;

/// `STATUS_INVALID_IMAGE_FORMAT`.
pub const STATUS_INVALID_IMAGE_FORMAT: u32 = 0xC000_007B;
/// `STATUS_INVALID_IMAGE_HASH`: code integrity found no valid signature.
pub const STATUS_INVALID_IMAGE_HASH: u32 = 0xC000_0428;

/// The page size of x64 Windows.
const PAGE_SIZE: u64 = 0x1000;
/// nt's `MM_SIZE_OF_LARGEST_IMAGE` (PELIB).
pub const LARGEST_IMAGE: u32 = 0x7700_0000;
/// "The Windows loader limits the number of sections to 96" (PE, NumberOfSections).
pub const MAX_SECTIONS: usize = 96;
/// Bytes of the PE32+ optional header before its data directories (PE).
const OPTIONAL_FIXED: usize = 112;
/// The data directories the PE format defines.
const DIRECTORY_ENTRIES: usize = 16;
/// Index of the attribute certificate table, whose "RVA" is a file offset (PE).
const SECURITY_DIRECTORY: usize = 4;

/// `IMAGE_FILE_RELOCS_STRIPPED`.
const FILE_RELOCS_STRIPPED: u16 = 0x0001;
/// `IMAGE_FILE_EXECUTABLE_IMAGE`.
const FILE_EXECUTABLE_IMAGE: u16 = 0x0002;
/// `IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY`.
const DLL_FORCE_INTEGRITY: u16 = 0x0080;
/// `IMAGE_SCN_MEM_EXECUTE`.
const SCN_EXECUTE: u32 = 0x2000_0000;
/// `IMAGE_SCN_MEM_WRITE`.
const SCN_WRITE: u32 = 0x8000_0000;

/// The header fields and section headers the rules look at, read with bounds checks.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    /// File length in bytes.
    pub file_len: u64,
    /// `e_lfanew`.
    pub nt_offset: u64,
    /// COFF `NumberOfSections`.
    pub section_count: usize,
    /// COFF `SizeOfOptionalHeader`.
    pub optional_size: usize,
    /// COFF `Characteristics`.
    pub characteristics: u16,
    /// `AddressOfEntryPoint`.
    pub entry_rva: u32,
    /// `ImageBase`.
    pub image_base: u64,
    /// `SectionAlignment`.
    pub section_alignment: u32,
    /// `FileAlignment`.
    pub file_alignment: u32,
    /// `SizeOfImage`.
    pub size_of_image: u32,
    /// `SizeOfHeaders`.
    pub size_of_headers: u32,
    /// `DllCharacteristics`.
    pub dll_characteristics: u16,
    /// `NumberOfRvaAndSizes` as stored.
    pub directory_count: u32,
    /// The data directories present (at most 16), as (VirtualAddress, Size).
    pub directories: Vec<(u32, u32)>,
    /// The section headers.
    pub sections: Vec<SectionHeader>,
}

/// One section header's fields.
#[derive(Debug, Clone, Default)]
pub struct SectionHeader {
    /// The name, NULs trimmed (lossy UTF-8); `#N` (1-based table index) when empty.
    pub name: String,
    /// `VirtualSize`.
    pub virtual_size: u32,
    /// `VirtualAddress`.
    pub virtual_address: u32,
    /// `SizeOfRawData`.
    pub raw_size: u32,
    /// `PointerToRawData`.
    pub raw_offset: u32,
    /// `Characteristics`.
    pub characteristics: u32,
}

impl SectionHeader {
    /// The size the section occupies in memory: VirtualSize, or SizeOfRawData when VirtualSize is
    /// 0 (ROS: a zero VirtualSize means the raw size).
    #[must_use]
    pub fn memory_size(&self) -> u32 {
        if self.virtual_size == 0 { self.raw_size } else { self.virtual_size }
    }
}

fn refuse(reason: String) -> LoadError {
    LoadError::InvalidImage { status: STATUS_INVALID_IMAGE_FORMAT, reason }
}

fn bytes<const N: usize>(file: &[u8], at: u64, what: &str) -> Result<[u8; N], LoadError> {
    usize::try_from(at)
        .ok()
        .and_then(|start| file.get(start..start.checked_add(N)?))
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| LoadError::NotPe(format!("file truncated at {what}")))
}

fn le16(file: &[u8], at: u64, what: &str) -> Result<u16, LoadError> {
    bytes::<2>(file, at, what).map(u16::from_le_bytes)
}

fn le32(file: &[u8], at: u64, what: &str) -> Result<u32, LoadError> {
    bytes::<4>(file, at, what).map(u32::from_le_bytes)
}

fn le64(file: &[u8], at: u64, what: &str) -> Result<u64, LoadError> {
    bytes::<8>(file, at, what).map(u64::from_le_bytes)
}

fn align_up(value: u64, alignment: u64) -> u64 {
    // Alignments are checked powers of two before this is used; 0 leaves the value as it is.
    if alignment == 0 { value } else { value.div_ceil(alignment) * alignment }
}

impl Headers {
    /// Reads the fields of a PE32+ image whose `MZ`, `PE\0\0`, machine and magic were checked.
    ///
    /// # Errors
    /// [`LoadError::NotPe`] when the file ends inside the headers or the section table, or the
    /// section count is above the loader's limit (checked before the table is read, so a huge
    /// count costs nothing).
    pub fn read(file: &[u8]) -> Result<Self, LoadError> {
        let file_len = file.len() as u64;
        let nt_offset = u64::from(le32(file, 0x3C, "e_lfanew")?);
        let coff = nt_offset + 4;
        let section_count = usize::from(le16(file, coff + 2, "NumberOfSections")?);
        let optional_size = usize::from(le16(file, coff + 16, "SizeOfOptionalHeader")?);
        let characteristics = le16(file, coff + 18, "Characteristics")?;
        let optional = coff + 20;
        let mut headers = Headers {
            file_len,
            nt_offset,
            section_count,
            optional_size,
            characteristics,
            entry_rva: le32(file, optional + 16, "AddressOfEntryPoint")?,
            image_base: le64(file, optional + 24, "ImageBase")?,
            section_alignment: le32(file, optional + 32, "SectionAlignment")?,
            file_alignment: le32(file, optional + 36, "FileAlignment")?,
            size_of_image: le32(file, optional + 56, "SizeOfImage")?,
            size_of_headers: le32(file, optional + 60, "SizeOfHeaders")?,
            dll_characteristics: le16(file, optional + 70, "DllCharacteristics")?,
            directory_count: le32(file, optional + 108, "NumberOfRvaAndSizes")?,
            directories: Vec::new(),
            sections: Vec::new(),
        };
        let present = (headers.directory_count as usize).min(DIRECTORY_ENTRIES);
        for index in 0..present {
            let at = optional + (OPTIONAL_FIXED + index * 8) as u64;
            headers.directories.push((le32(file, at, "data directory")?, le32(file, at + 4, "data directory")?));
        }
        section_count_within_limit(&headers)?;
        let table = optional + optional_size as u64;
        for index in 0..section_count {
            let at = table + (index * 40) as u64;
            let raw_name = bytes::<8>(file, at, "section table")?;
            let name = String::from_utf8_lossy(&raw_name).trim_end_matches('\0').to_owned();
            headers.sections.push(SectionHeader {
                name: if name.is_empty() { format!("#{}", index + 1) } else { name },
                virtual_size: le32(file, at + 8, "section table")?,
                virtual_address: le32(file, at + 12, "section table")?,
                raw_size: le32(file, at + 16, "section table")?,
                raw_offset: le32(file, at + 20, "section table")?,
                characteristics: le32(file, at + 36, "section table")?,
            });
        }
        Ok(headers)
    }

    /// Where the section table starts in the file.
    fn section_table_offset(&self) -> u64 {
        self.nt_offset + 24 + self.optional_size as u64
    }
}

/// One loader rule: `Err` with the refusal when the headers break it.
pub type Rule = fn(&Headers) -> Result<(), LoadError>;

/// Every rule with a short name, in the order Windows meets them (file header, optional header,
/// section table, directories, then the kernel-image and code-integrity rules).
pub const RULES: &[(&str, Rule)] = &[
    ("executable image", executable_image),
    ("relocations kept", relocations_not_stripped),
    ("optional header holds its directories", optional_header_holds_directories),
    ("file alignment", file_alignment),
    ("section alignment", section_alignment),
    ("image base", image_base),
    ("size of image", size_of_image),
    ("size of headers", size_of_headers),
    ("section count", section_count_within_limit),
    ("section layout", section_layout),
    ("raw data", raw_data_inside_file),
    ("data directories", data_directories_inside_image),
    ("entry point", entry_point),
    ("no writable executable section", no_writable_executable_section),
    ("force integrity needs a signature", force_integrity_needs_signature),
];

/// Runs every rule; the first refusal wins.
///
/// # Errors
/// The first rule's [`LoadError::InvalidImage`] (or [`LoadError::NotPe`] for a truncated file).
pub fn check(file: &[u8]) -> Result<Headers, LoadError> {
    let headers = Headers::read(file)?;
    for (_, rule) in RULES {
        rule(&headers)?;
    }
    Ok(headers)
}

/// PE, Characteristics: IMAGE_FILE_EXECUTABLE_IMAGE "indicates that the image file is valid and can
/// be run. If this flag is not set, it indicates a linker error"; PELIB: refused.
fn executable_image(h: &Headers) -> Result<(), LoadError> {
    if h.characteristics & FILE_EXECUTABLE_IMAGE == 0 {
        return Err(refuse(format!(
            "IMAGE_FILE_EXECUTABLE_IMAGE is not set in Characteristics {:#06x} (a linker error)",
            h.characteristics
        )));
    }
    Ok(())
}

/// PE, Characteristics: with IMAGE_FILE_RELOCS_STRIPPED "the image must be loaded at its
/// preferred base address"; a kernel image is always loaded where the system puts it.
fn relocations_not_stripped(h: &Headers) -> Result<(), LoadError> {
    if h.characteristics & FILE_RELOCS_STRIPPED != 0 {
        return Err(refuse("IMAGE_FILE_RELOCS_STRIPPED is set: a driver must be relocatable".into()));
    }
    Ok(())
}

/// PE: the data directories counted by NumberOfRvaAndSizes are part of the optional header, so
/// SizeOfOptionalHeader must cover the fixed fields and them.
fn optional_header_holds_directories(h: &Headers) -> Result<(), LoadError> {
    let needed = OPTIONAL_FIXED + 8 * (h.directory_count as usize).min(DIRECTORY_ENTRIES);
    if h.optional_size < needed {
        return Err(refuse(format!(
            "SizeOfOptionalHeader {:#x} is smaller than the {needed:#x} bytes its fields and {} data directories need",
            h.optional_size, h.directory_count
        )));
    }
    Ok(())
}

/// PE, FileAlignment: "a power of 2 between 512 and 64 K, inclusive"; PELIB: below 512 Windows
/// accepts it only equal to a sub-page SectionAlignment, which a kernel image cannot have.
fn file_alignment(h: &Headers) -> Result<(), LoadError> {
    let alignment = h.file_alignment;
    if !alignment.is_power_of_two() || !(512..=0x1_0000).contains(&alignment) {
        return Err(refuse(format!("FileAlignment {alignment:#x} is not a power of 2 between 512 and 64K")));
    }
    Ok(())
}

/// PE, SectionAlignment: "must be greater than or equal to FileAlignment"; ROS: both powers of 2;
/// HVCI: "Section alignment is a multiple of 0x1000 (PAGE_SIZE)".
fn section_alignment(h: &Headers) -> Result<(), LoadError> {
    let alignment = h.section_alignment;
    if !alignment.is_power_of_two() {
        return Err(refuse(format!("SectionAlignment {alignment:#x} is not a power of 2")));
    }
    if alignment < h.file_alignment {
        return Err(refuse(format!("SectionAlignment {alignment:#x} is smaller than FileAlignment {:#x}", h.file_alignment)));
    }
    if !u64::from(alignment).is_multiple_of(PAGE_SIZE) {
        return Err(refuse(format!("SectionAlignment {alignment:#x} is not a multiple of the page size 0x1000 (kernel images)")));
    }
    Ok(())
}

/// PE, ImageBase: "must be a multiple of 64 K"; ROS: refused otherwise.
fn image_base(h: &Headers) -> Result<(), LoadError> {
    if !h.image_base.is_multiple_of(0x1_0000) {
        return Err(refuse(format!("ImageBase {:#x} is not a multiple of 64K", h.image_base)));
    }
    Ok(())
}

/// PE, SizeOfImage: "It must be a multiple of SectionAlignment"; PELIB: not 0 and at most nt's
/// largest image (0x77000000).
fn size_of_image(h: &Headers) -> Result<(), LoadError> {
    let size = h.size_of_image;
    if size == 0 || size > LARGEST_IMAGE {
        return Err(refuse(format!("SizeOfImage {size:#x} is 0 or larger than the largest image {LARGEST_IMAGE:#x}")));
    }
    if !size.is_multiple_of(h.section_alignment) {
        return Err(refuse(format!("SizeOfImage {size:#x} is not a multiple of SectionAlignment {:#x}", h.section_alignment)));
    }
    Ok(())
}

/// PE, SizeOfHeaders: "the combined size of an MS-DOS stub, PE header, and section headers";
/// ROS: "the section headers overflow SizeOfHeaders"; PELIB: SizeOfHeaders <= SizeOfImage. The
/// headers must also be in the file (a file cut inside them).
fn size_of_headers(h: &Headers) -> Result<(), LoadError> {
    let size = u64::from(h.size_of_headers);
    let table_end = h.section_table_offset() + 40 * h.section_count as u64;
    if size < table_end {
        return Err(refuse(format!("SizeOfHeaders {size:#x} does not cover the headers and section table (end {table_end:#x})")));
    }
    if size > u64::from(h.size_of_image) {
        return Err(refuse(format!("SizeOfHeaders {size:#x} is larger than SizeOfImage {:#x}", h.size_of_image)));
    }
    if size > h.file_len {
        return Err(refuse(format!("the file ({} bytes) ends inside SizeOfHeaders {size:#x}: truncated", h.file_len)));
    }
    Ok(())
}

/// PE, NumberOfSections: "the Windows loader limits the number of sections to 96"; ROS: refused
/// above 96.
fn section_count_within_limit(h: &Headers) -> Result<(), LoadError> {
    if h.section_count > MAX_SECTIONS {
        return Err(refuse(format!("NumberOfSections {} is above the loader's limit of {MAX_SECTIONS}", h.section_count)));
    }
    Ok(())
}

/// PE, section table: "the VAs for sections must be assigned by the linker so that they are in
/// ascending order and adjacent, and they must be a multiple of the SectionAlignment value";
/// ROS: the first section starts at SizeOfHeaders aligned up, each next one where the previous
/// ends, no section has size 0, the image stays below 4 GiB; PELIB: the sections end inside
/// SizeOfImage.
fn section_layout(h: &Headers) -> Result<(), LoadError> {
    let alignment = u64::from(h.section_alignment);
    let mut expected = align_up(u64::from(h.size_of_headers), alignment);
    let mut previous: Option<&SectionHeader> = None;
    for section in &h.sections {
        let address = u64::from(section.virtual_address);
        let name = &section.name;
        if !address.is_multiple_of(alignment) {
            return Err(refuse(format!(
                "section {name} VirtualAddress {address:#x} is not a multiple of SectionAlignment {alignment:#x}"
            )));
        }
        if let Some(before) = previous.filter(|before| section.virtual_address < before.virtual_address) {
            return Err(refuse(format!(
                "section {name} at {address:#x} comes after {} at {:#x}: not in ascending order",
                before.name, before.virtual_address
            )));
        }
        if address < expected {
            let what = previous.map_or_else(|| "the headers".to_owned(), |before| format!("section {}", before.name));
            return Err(refuse(format!("section {name} at {address:#x} overlaps {what} (which end at {expected:#x})")));
        }
        if address > expected {
            return Err(refuse(format!(
                "section {name} at {address:#x} leaves a gap after {expected:#x}: sections must be adjacent"
            )));
        }
        if section.memory_size() == 0 {
            return Err(refuse(format!("section {name} has VirtualSize and SizeOfRawData 0")));
        }
        expected = address + align_up(u64::from(section.memory_size()), alignment);
        if expected > u64::from(u32::MAX) {
            return Err(refuse(format!("section {name} ends beyond 4 GiB")));
        }
        previous = Some(section);
    }
    if expected > u64::from(h.size_of_image) {
        return Err(refuse(format!("the sections end at {expected:#x}, beyond SizeOfImage {:#x}", h.size_of_image)));
    }
    Ok(())
}

/// ROS: PointerToRawData + SizeOfRawData must not overflow; PELIB: a section's raw data past the
/// end of the file is a cut file Windows refuses. (fltemu cannot map bytes it does not have.)
fn raw_data_inside_file(h: &Headers) -> Result<(), LoadError> {
    for section in h.sections.iter().filter(|s| s.raw_size != 0) {
        let end = u64::from(section.raw_offset) + u64::from(section.raw_size);
        if end > u64::from(u32::MAX) {
            return Err(refuse(format!(
                "section {} raw data {:#x}+{:#x} overflows 32 bits",
                section.name, section.raw_offset, section.raw_size
            )));
        }
        if end > h.file_len {
            return Err(refuse(format!(
                "section {} raw data {:#x}..{end:#x} lies past the end of the file ({} bytes): truncated",
                section.name, section.raw_offset, h.file_len
            )));
        }
    }
    Ok(())
}

/// PE, optional header data directories: each gives the RVA and size of a table loaded into
/// memory, so it must lie inside SizeOfImage; the certificate table's address is a file pointer,
/// so it must lie inside the file.
fn data_directories_inside_image(h: &Headers) -> Result<(), LoadError> {
    for (index, &(address, size)) in h.directories.iter().enumerate() {
        if address == 0 && size == 0 {
            continue;
        }
        let end = u64::from(address) + u64::from(size);
        let (limit, what) =
            if index == SECURITY_DIRECTORY { (h.file_len, "the file") } else { (u64::from(h.size_of_image), "SizeOfImage") };
        if end > limit {
            return Err(refuse(format!("data directory {index} ({address:#x}+{size:#x}) lies outside {what} ({limit:#x})")));
        }
    }
    Ok(())
}

/// PE, AddressOfEntryPoint: "For device drivers, this is the address of the initialization
/// function"; a driver without one, or whose entry is not executable code, cannot start (on an
/// NX kernel a jump into a non-executable section faults).
fn entry_point(h: &Headers) -> Result<(), LoadError> {
    let entry = h.entry_rva;
    if entry == 0 {
        return Err(refuse("AddressOfEntryPoint is 0: a driver needs DriverEntry".into()));
    }
    let in_code = h.sections.iter().any(|s| {
        let start = u64::from(s.virtual_address);
        s.characteristics & SCN_EXECUTE != 0 && (start..start + u64::from(s.memory_size())).contains(&u64::from(entry))
    });
    if !in_code {
        return Err(refuse(format!("AddressOfEntryPoint {entry:#x} is not inside an executable section")));
    }
    Ok(())
}

/// HVCI: "Does not use sections that are both writable and executable" (memory integrity, on by
/// default on Windows 11, refuses such a driver).
fn no_writable_executable_section(h: &Headers) -> Result<(), LoadError> {
    if let Some(section) = h.sections.iter().find(|s| s.characteristics & (SCN_WRITE | SCN_EXECUTE) == SCN_WRITE | SCN_EXECUTE) {
        return Err(refuse(format!("section {} is both writable and executable (memory integrity refuses it)", section.name)));
    }
    Ok(())
}

/// INTEGRITYCHECK: FORCE_INTEGRITY "tells the memory manager to check for a digital signature in
/// order to load the image"; without a certificate table there is none (STATUS_INVALID_IMAGE_HASH).
fn force_integrity_needs_signature(h: &Headers) -> Result<(), LoadError> {
    let signed = h.directories.get(SECURITY_DIRECTORY).is_some_and(|&(_, size)| size != 0);
    if h.dll_characteristics & DLL_FORCE_INTEGRITY != 0 && !signed {
        return Err(LoadError::InvalidImage {
            status: STATUS_INVALID_IMAGE_HASH,
            reason: "IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY is set but the image has no signature (empty certificate table)"
                .into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of a well-formed driver as lld-link writes it (the shipped ctxguard.sys has this
    /// shape): .text RX, .rdata R, .data RW, .reloc R-discardable.
    fn good() -> Headers {
        let section = |name: &str, virtual_address: u32, size: u32, raw_offset: u32, characteristics: u32| SectionHeader {
            name: name.into(),
            virtual_size: size,
            virtual_address,
            raw_size: size.next_multiple_of(0x200),
            raw_offset,
            characteristics,
        };
        Headers {
            file_len: 0x2000,
            nt_offset: 0x80,
            section_count: 4,
            optional_size: 240,
            characteristics: 0x2022,
            entry_rva: 0x1000,
            image_base: 0x1_4000_0000,
            section_alignment: 0x1000,
            file_alignment: 0x200,
            size_of_image: 0x5000,
            size_of_headers: 0x400,
            dll_characteristics: 0x160,
            directory_count: 16,
            directories: vec![(0, 0), (0x2000, 0x28), (0, 0), (0, 0), (0, 0), (0x4000, 0x10)],
            sections: vec![
                section(".text", 0x1000, 0x400, 0x400, 0x6000_0020),
                section(".rdata", 0x2000, 0x200, 0x800, 0x4000_0040),
                section(".data", 0x3000, 0x200, 0xA00, 0xC000_0040),
                section(".reloc", 0x4000, 0x10, 0xC00, 0x4200_0040),
            ],
        }
    }

    fn refusal(result: Result<(), LoadError>) -> String {
        match result {
            Err(LoadError::InvalidImage { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_well_formed_driver_passes_every_rule() {
        let h = good();
        for (name, rule) in RULES {
            assert!(rule(&h).is_ok(), "{name}: {:?}", rule(&h));
        }
    }

    #[test]
    fn a_non_executable_image_is_refused() {
        let h = Headers { characteristics: 0x2020, ..good() };
        assert!(refusal(executable_image(&h)).contains("IMAGE_FILE_EXECUTABLE_IMAGE"));
    }

    #[test]
    fn stripped_relocations_are_refused() {
        let h = Headers { characteristics: 0x2023, ..good() };
        assert!(refusal(relocations_not_stripped(&h)).contains("RELOCS_STRIPPED"));
    }

    #[test]
    fn an_optional_header_too_small_for_its_directories_is_refused() {
        let h = Headers { optional_size: 112 + 8 * 15, ..good() };
        assert!(refusal(optional_header_holds_directories(&h)).contains("SizeOfOptionalHeader"));
        // Fewer directories fit a smaller header.
        assert!(optional_header_holds_directories(&Headers { directory_count: 15, ..h }).is_ok());
    }

    #[test]
    fn file_alignment_must_be_a_power_of_two_from_512_to_64k() {
        for bad in [0, 1, 256, 0x300, 0x2_0000] {
            let h = Headers { file_alignment: bad, ..good() };
            assert!(refusal(file_alignment(&h)).contains("FileAlignment"), "{bad:#x}");
        }
        for ok in [512, 0x1000, 0x1_0000] {
            assert!(file_alignment(&Headers { file_alignment: ok, ..good() }).is_ok(), "{ok:#x}");
        }
    }

    #[test]
    fn section_alignment_must_be_a_page_multiple_power_of_two_not_below_file_alignment() {
        assert!(refusal(section_alignment(&Headers { section_alignment: 0, ..good() })).contains("not a power of 2"));
        assert!(refusal(section_alignment(&Headers { section_alignment: 0x3000, ..good() })).contains("not a power of 2"));
        let below = Headers { section_alignment: 0x1000, file_alignment: 0x2000, ..good() };
        assert!(refusal(section_alignment(&below)).contains("smaller than FileAlignment"));
        let sub_page = Headers { section_alignment: 0x200, file_alignment: 0x200, ..good() };
        assert!(refusal(section_alignment(&sub_page)).contains("page size"));
        assert!(section_alignment(&Headers { section_alignment: 0x2000, ..good() }).is_ok());
    }

    #[test]
    fn image_base_must_be_64k_aligned() {
        assert!(refusal(image_base(&Headers { image_base: 0x1_4000_1000, ..good() })).contains("64K"));
    }

    #[test]
    fn size_of_image_must_be_aligned_nonzero_and_not_huge() {
        assert!(refusal(size_of_image(&Headers { size_of_image: 0, ..good() })).contains("SizeOfImage"));
        assert!(refusal(size_of_image(&Headers { size_of_image: 0xFFFF_F000, ..good() })).contains("largest image"));
        assert!(refusal(size_of_image(&Headers { size_of_image: 0x5100, ..good() })).contains("multiple of SectionAlignment"));
    }

    #[test]
    fn size_of_headers_must_cover_the_section_table_and_fit() {
        // 0x80 + 24 + 240 + 4 * 40 = 0x238.
        assert!(refusal(size_of_headers(&Headers { size_of_headers: 0x200, ..good() })).contains("does not cover"));
        assert!(refusal(size_of_headers(&Headers { size_of_headers: 0x6000, ..good() })).contains("larger than SizeOfImage"));
        assert!(refusal(size_of_headers(&Headers { file_len: 0x300, ..good() })).contains("truncated"));
    }

    #[test]
    fn more_than_96_sections_are_refused() {
        assert!(refusal(section_count_within_limit(&Headers { section_count: 97, ..good() })).contains("96"));
    }

    #[test]
    fn sections_must_be_aligned_ascending_adjacent_and_sized() {
        let with = |index: usize, change: &dyn Fn(&mut SectionHeader)| {
            let mut h = good();
            change(&mut h.sections[index]);
            refusal(section_layout(&h))
        };
        assert!(with(1, &|s| s.virtual_address = 0x2100).contains("not a multiple of SectionAlignment"));
        assert!(with(0, &|s| s.virtual_address = 0).contains("overlaps the headers"));
        assert!(with(1, &|s| s.virtual_address = 0x5000).contains("leaves a gap"));
        assert!(with(0, &|s| s.virtual_size = 0x1400).contains("overlaps section .text"));
        assert!(with(2, &|s| s.virtual_address = 0x1000).contains("not in ascending order"));
        assert!(with(3, &|s| (s.virtual_size, s.raw_size) = (0, 0)).contains("SizeOfRawData 0"));
        assert!(with(3, &|s| s.virtual_size = 0x2000).contains("beyond SizeOfImage"));
        // A zero VirtualSize means SizeOfRawData.
        let mut h = good();
        h.sections[3].virtual_size = 0;
        assert!(section_layout(&h).is_ok());
    }

    #[test]
    fn raw_data_must_be_inside_the_file() {
        let mut h = good();
        h.sections[2].raw_offset = 0x1F00;
        assert!(refusal(raw_data_inside_file(&h)).contains("past the end of the file"));
        h.sections[2].raw_offset = 0xFFFF_FF00;
        assert!(refusal(raw_data_inside_file(&h)).contains("overflows"));
        // Uninitialized data has no raw bytes, wherever its pointer points.
        h.sections[2].raw_size = 0;
        assert!(raw_data_inside_file(&h).is_ok());
    }

    #[test]
    fn data_directories_must_be_inside_the_image_and_certificates_inside_the_file() {
        let mut h = good();
        h.directories[1] = (0x4FF0, 0x28);
        assert!(refusal(data_directories_inside_image(&h)).contains("data directory 1"));
        h.directories[1] = (0xFFFF_FFF0, 0x20);
        assert!(refusal(data_directories_inside_image(&h)).contains("outside SizeOfImage"));
        let mut h = good();
        h.directories[4] = (0x1F00, 0x200);
        assert!(refusal(data_directories_inside_image(&h)).contains("outside the file"));
        // The certificate table is a file offset: past SizeOfImage is fine when the file holds it.
        h.file_len = 0x9000;
        h.directories[4] = (0x8000, 0x800);
        assert!(data_directories_inside_image(&h).is_ok());
    }

    #[test]
    fn the_entry_point_must_be_in_executable_code() {
        assert!(refusal(entry_point(&Headers { entry_rva: 0, ..good() })).contains("DriverEntry"));
        assert!(refusal(entry_point(&Headers { entry_rva: 0x3010, ..good() })).contains("not inside an executable section"));
        assert!(refusal(entry_point(&Headers { entry_rva: 0x10_0000, ..good() })).contains("not inside an executable section"));
    }

    #[test]
    fn a_writable_executable_section_is_refused() {
        let mut h = good();
        h.sections[0].characteristics |= SCN_WRITE;
        assert!(refusal(no_writable_executable_section(&h)).contains(".text is both writable and executable"));
    }

    #[test]
    fn force_integrity_without_a_signature_is_refused_with_invalid_image_hash() {
        let mut h = Headers { dll_characteristics: 0x1E0, ..good() };
        assert!(matches!(
            force_integrity_needs_signature(&h),
            Err(LoadError::InvalidImage { status: STATUS_INVALID_IMAGE_HASH, .. })
        ));
        h.directories[4] = (0x1C00, 0x400);
        assert!(force_integrity_needs_signature(&h).is_ok(), "a certificate table satisfies it");
    }

    #[test]
    fn reading_stops_at_the_section_limit_before_the_table() {
        // A huge NumberOfSections in a short file is refused for the count, not read.
        let mut file = vec![0u8; 0x200];
        file[0x3C] = 0x40;
        file[0x46..0x48].copy_from_slice(&0xFFFFu16.to_le_bytes());
        assert!(matches!(Headers::read(&file), Err(LoadError::InvalidImage { .. })));
    }
}
