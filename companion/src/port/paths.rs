//! The driver names files by their normalized device path (`\Device\HarddiskVolume3\dir\a`);
//! people type DOS paths (`C:\dir\a`). On Windows the drive letters are mapped with
//! QueryDosDeviceW; elsewhere (fltemu tests) paths pass through unchanged.

/// The device form of `path`: `C:\x` → `\Device\HarddiskVolume3\x` when the drive letter maps;
/// anything else unchanged.
#[must_use]
pub fn to_device_path(path: &str) -> String {
    let bytes = path.as_bytes();
    if bytes.len() >= 2
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && let Some(device) = drive_device(&path[..2])
    {
        return format!("{device}{}", &path[2..]);
    }
    path.to_owned()
}

/// The DOS form of a device path when one of the drive letters maps to its volume.
#[must_use]
pub fn to_dos_path(path: &str) -> String {
    for letter in b'A'..=b'Z' {
        let drive = format!("{}:", char::from(letter));
        if let Some(device) = drive_device(&drive) {
            let lower = path.to_ascii_lowercase();
            let device_lower = device.to_ascii_lowercase();
            if lower.starts_with(&device_lower) && matches!(path.as_bytes().get(device.len()), None | Some(b'\\')) {
                return format!("{drive}{}", &path[device.len()..]);
            }
        }
    }
    path.to_owned()
}

/// The device a drive letter (`"C:"`) maps to.
#[cfg(windows)]
fn drive_device(drive: &str) -> Option<String> {
    use windows_sys::Win32::Storage::FileSystem::QueryDosDeviceW;
    let name: Vec<u16> = drive.encode_utf16().chain(Some(0)).collect();
    let mut target = vec![0u16; 1024];
    #[allow(clippy::cast_possible_truncation)] // 1024.
    // SAFETY: `name` is NUL-terminated; `target` holds the length passed.
    let written = unsafe { QueryDosDeviceW(name.as_ptr(), target.as_mut_ptr(), target.len() as u32) };
    if written == 0 {
        return None;
    }
    // The result is a list of NUL-terminated strings; the first is the current mapping.
    let first = target.split(|unit| *unit == 0).next()?;
    (!first.is_empty()).then(|| String::from_utf16_lossy(first))
}

#[cfg(not(windows))]
fn drive_device(_drive: &str) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_paths_pass_through() {
        assert_eq!(to_device_path("\\Device\\HarddiskVolume2\\a"), "\\Device\\HarddiskVolume2\\a");
        assert_eq!(to_dos_path("\\Device\\Nowhere\\a"), "\\Device\\Nowhere\\a");
    }
}
