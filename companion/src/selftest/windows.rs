//! The Windows side of the selftest: the driver's name for an open file, and Filter Manager
//! asked through FltLib (FilterFindFirst / FilterInstanceFindFirst) or, failing that, `fltmc`.

use std::fs::File;
use std::os::windows::io::AsRawHandle;
use std::process::Command;

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::Storage::FileSystem::{FILE_NAME_NORMALIZED, GetFinalPathNameByHandleW, VOLUME_NAME_NT};
use windows_sys::Win32::Storage::InstallableFileSystems::{
    FilterFindClose, FilterFindFirst, FilterFindNext, FilterFullInformation, FilterInstanceFindClose, FilterInstanceFindFirst,
    FilterInstanceFindNext, InstanceFullInformation,
};

use super::probe::{DriverPresence, InstanceInfo, parse_fltmc_filters, parse_fltmc_instances};
use super::{DriverProbe, FILTER_NAME};

/// `HRESULT_FROM_WIN32(ERROR_NO_MORE_ITEMS)`: the end of an enumeration.
const NO_MORE_ITEMS: i32 = 0x8007_0103_u32.cast_signed();
/// Bytes offered to each FltLib enumeration call (one entry per call; names are ≤ 1,024 units).
const ENUMERATION_BYTES: usize = 8 * 1024;
/// Stops a misbehaving enumeration.
const MAX_ENTRIES: usize = 4096;

/// The normalized NT name of an open file (`\Device\HarddiskVolume3\...`): the form the driver
/// reports, with long names (the temp directory's path may hold 8.3 short names).
pub(super) fn nt_name(file: &File) -> Result<String, String> {
    let handle: HANDLE = file.as_raw_handle();
    let mut buffer = vec![0u16; 32 * 1024];
    #[allow(clippy::cast_possible_truncation)] // 32 Ki units.
    // SAFETY: `handle` is open for the life of `file`; `buffer` holds the length passed.
    let written = unsafe {
        GetFinalPathNameByHandleW(handle, buffer.as_mut_ptr(), buffer.len() as u32, FILE_NAME_NORMALIZED | VOLUME_NAME_NT)
    };
    let written = written as usize;
    if written == 0 || written >= buffer.len() {
        return Err(format!("GetFinalPathNameByHandleW failed: {}", std::io::Error::last_os_error()));
    }
    Ok(String::from_utf16_lossy(&buffer[..written]))
}

/// Filter Manager through FltLib, then `fltmc`.
pub struct SystemProbe;

impl DriverProbe for SystemProbe {
    fn probe(&self) -> Result<DriverPresence, String> {
        match fltlib_presence() {
            Ok(presence) => Ok(presence),
            Err(fltlib) => fltmc_presence().map_err(|fltmc| format!("FltLib: {fltlib}; fltmc: {fltmc}")),
        }
    }
}

fn hresult_text(function: &str, hresult: i32) -> String {
    format!("{function} failed with HRESULT {:#010x}", hresult.cast_unsigned())
}

/// The little-endian bytes of an 8-aligned buffer FltLib filled.
fn bytes_of(buffer: &[u64]) -> Vec<u8> {
    buffer.iter().flat_map(|word| word.to_le_bytes()).collect()
}

fn u16_at(bytes: &[u8], offset: usize) -> usize {
    bytes.get(offset..offset + 2).map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])))
}

fn utf16_at(bytes: &[u8], offset: usize, length: usize) -> String {
    let units: Vec<u16> = bytes
        .get(offset..offset + length)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// One FILTER_FULL_INFORMATION: (instances, name).
fn filter_entry(bytes: &[u8]) -> (u32, String) {
    let instances = bytes.get(8..12).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    (instances, utf16_at(bytes, 14, u16_at(bytes, 12)))
}

/// One INSTANCE_FULL_INFORMATION: name, altitude and volume at their buffer offsets.
fn instance_entry(bytes: &[u8]) -> InstanceInfo {
    InstanceInfo {
        name: utf16_at(bytes, u16_at(bytes, 6), u16_at(bytes, 4)),
        altitude: utf16_at(bytes, u16_at(bytes, 10), u16_at(bytes, 8)),
        volume: utf16_at(bytes, u16_at(bytes, 14), u16_at(bytes, 12)),
    }
}

fn fltlib_presence() -> Result<DriverPresence, String> {
    let mut buffer = vec![0u64; ENUMERATION_BYTES / 8];
    let mut returned = 0u32;
    let mut find: HANDLE = std::ptr::null_mut();
    #[allow(clippy::cast_possible_truncation)] // 8 KiB.
    // SAFETY: `buffer` is 8-aligned and holds the length passed; `returned` and `find` are valid out pointers.
    let first = unsafe {
        FilterFindFirst(
            FilterFullInformation,
            buffer.as_mut_ptr().cast(),
            ENUMERATION_BYTES as u32,
            &raw mut returned,
            &raw mut find,
        )
    };
    if first == NO_MORE_ITEMS {
        return Ok(DriverPresence { loaded: false, instances: Vec::new(), source: "fltlib".into() });
    }
    if first < 0 {
        return Err(hresult_text("FilterFindFirst", first));
    }
    let mut loaded = false;
    let mut result = Ok(());
    for _ in 0..MAX_ENTRIES {
        let (_, name) = filter_entry(&bytes_of(&buffer));
        loaded |= name.eq_ignore_ascii_case(FILTER_NAME);
        #[allow(clippy::cast_possible_truncation)] // 8 KiB.
        // SAFETY: `find` came from FilterFindFirst and is still open; the buffer is as above.
        let next = unsafe {
            FilterFindNext(find, FilterFullInformation, buffer.as_mut_ptr().cast(), ENUMERATION_BYTES as u32, &raw mut returned)
        };
        if next == NO_MORE_ITEMS {
            break;
        }
        if next < 0 {
            result = Err(hresult_text("FilterFindNext", next));
            break;
        }
    }
    // SAFETY: `find` is the open enumeration handle, closed once.
    unsafe { FilterFindClose(find) };
    result?;
    let instances = if loaded { fltlib_instances()? } else { Vec::new() };
    Ok(DriverPresence { loaded, instances, source: "fltlib".into() })
}

fn fltlib_instances() -> Result<Vec<InstanceInfo>, String> {
    let name: Vec<u16> = FILTER_NAME.encode_utf16().chain(Some(0)).collect();
    let mut buffer = vec![0u64; ENUMERATION_BYTES / 8];
    let mut returned = 0u32;
    let mut find: HANDLE = std::ptr::null_mut();
    #[allow(clippy::cast_possible_truncation)] // 8 KiB.
    // SAFETY: `name` is NUL-terminated; the buffer is 8-aligned and holds the length passed; the out pointers are valid.
    let first = unsafe {
        FilterInstanceFindFirst(
            name.as_ptr(),
            InstanceFullInformation,
            buffer.as_mut_ptr().cast(),
            ENUMERATION_BYTES as u32,
            &raw mut returned,
            &raw mut find,
        )
    };
    if first == NO_MORE_ITEMS {
        return Ok(Vec::new());
    }
    if first < 0 {
        return Err(hresult_text("FilterInstanceFindFirst", first));
    }
    let mut instances = Vec::new();
    let mut result = Ok(());
    for _ in 0..MAX_ENTRIES {
        instances.push(instance_entry(&bytes_of(&buffer)));
        #[allow(clippy::cast_possible_truncation)] // 8 KiB.
        // SAFETY: `find` came from FilterInstanceFindFirst and is still open; the buffer is as above.
        let next = unsafe {
            FilterInstanceFindNext(
                find,
                InstanceFullInformation,
                buffer.as_mut_ptr().cast(),
                ENUMERATION_BYTES as u32,
                &raw mut returned,
            )
        };
        if next == NO_MORE_ITEMS {
            break;
        }
        if next < 0 {
            result = Err(hresult_text("FilterInstanceFindNext", next));
            break;
        }
    }
    // SAFETY: `find` is the open enumeration handle, closed once.
    unsafe { FilterInstanceFindClose(find) };
    result.map(|()| instances)
}

fn fltmc(arguments: &[&str]) -> Result<String, String> {
    let output = Command::new("fltmc").args(arguments).output().map_err(|error| format!("cannot run fltmc: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!("fltmc {} exited with {}: {}", arguments.join(" "), output.status, text.trim()))
    }
}

fn fltmc_presence() -> Result<DriverPresence, String> {
    let filters = fltmc(&["filters"])?;
    if parse_fltmc_filters(&filters, FILTER_NAME).is_none() {
        return Ok(DriverPresence { loaded: false, instances: Vec::new(), source: "fltmc".into() });
    }
    let instances = parse_fltmc_instances(&fltmc(&["instances", "-f", FILTER_NAME])?, FILTER_NAME);
    Ok(DriverPresence { loaded: true, instances, source: "fltmc".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fltlib_records_are_decoded_at_their_offsets() {
        let mut filter = vec![0u8; 14];
        filter[8] = 2;
        filter[12] = 16;
        filter.extend("ctxguard".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(filter_entry(&filter), (2, "ctxguard".to_owned()));

        let mut instance = vec![0u8; 20];
        let push = |field: usize, text: &str, record: &mut Vec<u8>| {
            let offset = record.len();
            let bytes: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
            record[field..field + 2].copy_from_slice(&u16::try_from(bytes.len()).unwrap().to_le_bytes());
            record[field + 2..field + 4].copy_from_slice(&u16::try_from(offset).unwrap().to_le_bytes());
            record.extend(bytes);
        };
        push(4, "ctxguard Instance", &mut instance);
        push(8, "370020", &mut instance);
        push(12, "\\Device\\HarddiskVolume3", &mut instance);
        let decoded = instance_entry(&instance);
        assert_eq!((decoded.name.as_str(), decoded.altitude.as_str()), ("ctxguard Instance", "370020"));
        assert_eq!(decoded.volume, "\\Device\\HarddiskVolume3");
    }
}
