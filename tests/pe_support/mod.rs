//! PE helpers shared by the image and package tests.
#![allow(dead_code)]

use object::LittleEndian as LE;
use object::pe;
use object::read::pe::{ImageNtHeaders, PeFile64};

/// Parses a PE32+ image (every image ctxguard ships is one).
pub fn parse(data: &[u8]) -> PeFile64<'_> {
    PeFile64::parse(data).expect("not a valid PE32+ image")
}

/// Offset of `OptionalHeader.CheckSum`: after the "PE\0\0" signature (4), the file header
/// (20) and 64 bytes of optional header, the same in PE32 and PE32+.
pub fn checksum_field_offset(file: &PeFile64<'_>) -> usize {
    usize::try_from(file.dos_header().nt_headers_offset()).expect("offset fits usize") + 4 + 20 + 64
}

/// The PE checksum (as `CheckSumMappedFile` computes it): the sum of the file's 16-bit
/// little-endian words with the checksum field taken as zero, carries folded back into 16
/// bits, plus the file length.
pub fn pe_checksum(data: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u64 = 0;
    for (index, chunk) in data.chunks(2).enumerate() {
        let offset = index * 2;
        if offset == checksum_offset || offset == checksum_offset + 2 {
            continue;
        }
        let word = u16::from_le_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u64::from(word);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    let length = u64::try_from(data.len()).expect("file length fits u64");
    u32::try_from(sum + length).expect("an image is far below 4 GiB")
}

/// Size of data directory `index` (0 when absent).
pub fn directory_size(data: &[u8], index: usize) -> u32 {
    parse(data).data_directories().get(index).map_or(0, |directory| directory.size.get(LE))
}

/// The machine field of the file header.
pub fn machine(data: &[u8]) -> u16 {
    parse(data).nt_headers().file_header().machine.get(LE)
}

/// Whether the image carries an Authenticode signature (a security directory).
pub fn has_signature(data: &[u8]) -> bool {
    directory_size(data, pe::IMAGE_DIRECTORY_ENTRY_SECURITY) > 0
}
