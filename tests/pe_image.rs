//! The shipped kernel image, read as the Windows loader reads it: machine, subsystem, entry
//! point, checksum, imports, section permissions, TLS, relocations and mitigation flags, for
//! both architectures. Each test builds the image it inspects (`support::driver_image`).

mod pe_support;
mod support;

use std::path::PathBuf;

use object::LittleEndian as LE;
use object::pe;
use object::read::pe::{Import, ImageNtHeaders, ImageOptionalHeader, PeFile64};
use pe_support::{checksum_field_offset, directory_size, parse, pe_checksum};
use support::{Arch, driver_image};

const ARCHES: [Arch; 2] = [Arch::X64, Arch::Arm64];

/// The only modules a ctxguard.sys may import from (compared case-insensitively).
const ALLOWED_IMPORT_MODULES: [&str; 3] = ["ntoskrnl.exe", "fltmgr.sys", "hal.dll"];

fn image_bytes(arch: Arch) -> Vec<u8> {
    let path = driver_image(arch);
    std::fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// The `/MAP` file lld writes beside the image's object files.
fn map_file(arch: Arch) -> PathBuf {
    let image = driver_image(arch);
    let map = image.parent().expect("image has a directory").join("deps").join("ctxguard.map");
    assert!(map.is_file(), "{} missing: build.rs passes /MAP to the linker", map.display());
    map
}

/// The RVA the export directory gives for `name`.
///
/// Read by hand: lld places the export directory at an odd RVA and the `object` crate refuses
/// unaligned structures, while the Windows loader reads them byte-wise.
fn exported_function_rva(data: &[u8], file: &PeFile64<'_>, name: &[u8]) -> Option<u32> {
    let directory = file.data_directories().get(pe::IMAGE_DIRECTORY_ENTRY_EXPORT)?;
    let sections = file.section_table();
    let at = |rva: u32| sections.pe_data_at(data, rva).unwrap_or_else(|| panic!("RVA {rva:#x} is outside every section"));
    let u32_at = |rva: u32| u32::from_le_bytes(at(rva)[..4].try_into().expect("4 bytes"));
    let u16_at = |rva: u32| u16::from_le_bytes(at(rva)[..2].try_into().expect("2 bytes"));
    let base = directory.virtual_address.get(LE);
    if base == 0 || directory.size.get(LE) < 40 {
        return None;
    }
    // IMAGE_EXPORT_DIRECTORY: NumberOfNames at 24, AddressOfFunctions at 28, AddressOfNames
    // at 32, AddressOfNameOrdinals at 36.
    let (count, functions, names, ordinals) = (u32_at(base + 24), u32_at(base + 28), u32_at(base + 32), u32_at(base + 36));
    (0..count).find_map(|index| {
        let name_bytes = at(u32_at(names + 4 * index));
        let end = name_bytes.iter().position(|&byte| byte == 0)?;
        (&name_bytes[..end] == name).then(|| u32_at(functions + 4 * u32::from(u16_at(ordinals + 2 * index))))
    })
}

/// Module name → imported function names, in the order of the import directory.
fn imports(file: &PeFile64<'_>) -> Vec<(String, Vec<String>)> {
    let mut modules = Vec::new();
    let Some(table) = file.import_table().expect("import directory unreadable") else {
        return modules;
    };
    let mut descriptors = table.descriptors().expect("import descriptors unreadable");
    while let Some(descriptor) = descriptors.next().expect("import descriptor unreadable") {
        let module = table.name(descriptor.name.get(LE)).expect("import module name unreadable");
        let mut functions = Vec::new();
        let lookup = match descriptor.original_first_thunk.get(LE) {
            0 => descriptor.first_thunk.get(LE),
            rva => rva,
        };
        let mut thunks = table.thunks(lookup).expect("import thunks unreadable");
        while let Some(thunk) = thunks.next::<pe::ImageNtHeaders64>().expect("import thunk unreadable") {
            functions.push(match table.import::<pe::ImageNtHeaders64>(thunk).expect("import unreadable") {
                Import::Name(_hint, name) => String::from_utf8_lossy(name).into_owned(),
                Import::Ordinal(ordinal) => format!("#{ordinal}"),
            });
        }
        modules.push((String::from_utf8_lossy(module).into_owned(), functions));
    }
    modules
}

#[test]
fn machine_type_matches_the_architecture() {
    for (arch, expected) in [(Arch::X64, pe::IMAGE_FILE_MACHINE_AMD64), (Arch::Arm64, pe::IMAGE_FILE_MACHINE_ARM64)] {
        let data = image_bytes(arch);
        let machine = parse(&data).nt_headers().file_header().machine.get(LE);
        assert_eq!(machine, expected, "{arch:?}: machine {machine:#06x}, expected {expected:#06x}");
    }
}

#[test]
fn subsystem_is_native() {
    for arch in ARCHES {
        let data = image_bytes(arch);
        let subsystem = parse(&data).nt_headers().optional_header().subsystem();
        assert_eq!(subsystem, pe::IMAGE_SUBSYSTEM_NATIVE, "{arch:?}: subsystem {subsystem}, a driver must be NATIVE (1)");
    }
}

#[test]
fn entry_point_is_the_driver_entry_export_and_map_symbol() {
    for arch in ARCHES {
        let data = image_bytes(arch);
        let file = parse(&data);
        let optional = file.nt_headers().optional_header();
        let entry = optional.address_of_entry_point();
        assert_ne!(entry, 0, "{arch:?}: no entry point");

        let export_rva = exported_function_rva(&data, &file, b"DriverEntry").unwrap_or_else(|| panic!("{arch:?}: DriverEntry is not exported"));
        assert_eq!(entry, export_rva, "{arch:?}: entry point {entry:#x} is not DriverEntry ({export_rva:#x})");

        // The linker's own record: "<sec>:<off>  DriverEntry  <Rva+Base>  <object>".
        let map = std::fs::read_to_string(map_file(arch)).expect("map file unreadable");
        let map_address = map
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.len() >= 3 && fields[1] == "DriverEntry").then(|| u64::from_str_radix(fields[2], 16).ok()).flatten()
            })
            .expect("DriverEntry is not in the map file");
        assert_eq!(map_address - optional.image_base(), u64::from(entry), "{arch:?}: map file disagrees on DriverEntry");

        let in_code = file.section_table().iter().any(|section| {
            let start = section.virtual_address.get(LE);
            let characteristics = section.characteristics.get(LE);
            characteristics & pe::IMAGE_SCN_MEM_EXECUTE != 0 && (start..start + section.virtual_size.get(LE)).contains(&entry)
        });
        assert!(in_code, "{arch:?}: the entry point is not inside an executable section");
    }
}

#[test]
fn checksum_is_valid() {
    for arch in ARCHES {
        let data = image_bytes(arch);
        let file = parse(&data);
        let stored = file.nt_headers().optional_header().check_sum();
        assert_ne!(stored, 0, "{arch:?}: checksum is 0; lld writes one only with /RELEASE");
        let computed = pe_checksum(&data, checksum_field_offset(&file));
        assert_eq!(stored, computed, "{arch:?}: stored checksum {stored:#x}, computed {computed:#x}");
    }
}

#[test]
fn checksum_calculation_detects_a_changed_byte() {
    // The checksum test is only worth something if a corrupted image fails it.
    let mut data = image_bytes(Arch::X64);
    let offset = checksum_field_offset(&parse(&data));
    let stored = parse(&data).nt_headers().optional_header().check_sum();
    let last = data.len() - 1;
    data[last] ^= 0x5a;
    assert_ne!(pe_checksum(&data, offset), stored);
}

#[test]
fn imports_only_kernel_modules() {
    for arch in ARCHES {
        let data = image_bytes(arch);
        let modules = imports(&parse(&data));
        assert!(!modules.is_empty(), "{arch:?}: no imports at all; the import table was not found");
        for (module, functions) in &modules {
            assert!(
                ALLOWED_IMPORT_MODULES.iter().any(|allowed| module.eq_ignore_ascii_case(allowed)),
                "{arch:?}: imports {functions:?} from {module}; a driver may import only from {ALLOWED_IMPORT_MODULES:?}"
            );
            assert!(!functions.is_empty(), "{arch:?}: empty import descriptor for {module}");
        }
        let names: Vec<&str> = modules.iter().map(|(module, _)| module.as_str()).collect();
        assert!(names.iter().any(|name| name.eq_ignore_ascii_case("fltmgr.sys")), "{arch:?}: a minifilter imports fltmgr.sys: {names:?}");
        let delay = directory_size(&data, pe::IMAGE_DIRECTORY_ENTRY_DELAY_IMPORT);
        assert_eq!(delay, 0, "{arch:?}: delay-load imports cannot be resolved for a driver");
    }
}

#[test]
fn no_section_is_both_writable_and_executable() {
    for arch in ARCHES {
        let data = image_bytes(arch);
        let file = parse(&data);
        for section in file.section_table().iter() {
            let characteristics = section.characteristics.get(LE);
            let name = String::from_utf8_lossy(section.raw_name()).trim_end_matches('\0').to_owned();
            assert!(
                characteristics & (pe::IMAGE_SCN_MEM_WRITE | pe::IMAGE_SCN_MEM_EXECUTE) != (pe::IMAGE_SCN_MEM_WRITE | pe::IMAGE_SCN_MEM_EXECUTE),
                "{arch:?}: section {name} is writable and executable ({characteristics:#x})"
            );
        }
    }
}

#[test]
fn no_tls_directory() {
    for arch in ARCHES {
        let data = image_bytes(arch);
        assert_eq!(directory_size(&data, pe::IMAGE_DIRECTORY_ENTRY_TLS), 0, "{arch:?}: a driver has no TLS callbacks or data");
    }
}

#[test]
fn base_relocations_present() {
    for arch in ARCHES {
        let data = image_bytes(arch);
        let file = parse(&data);
        let characteristics = file.nt_headers().file_header().characteristics.get(LE);
        assert_eq!(characteristics & pe::IMAGE_FILE_RELOCS_STRIPPED, 0, "{arch:?}: relocations stripped");
        let size = directory_size(&data, pe::IMAGE_DIRECTORY_ENTRY_BASERELOC);
        assert!(size > 0, "{arch:?}: no base relocation directory; the kernel loads drivers at any address");
        let blocks = file.data_directories().relocation_blocks(data.as_slice(), &file.section_table()).expect("relocations unreadable");
        assert!(blocks.is_some(), "{arch:?}: base relocation directory cannot be read");
    }
}

#[test]
fn dynamic_base_and_nx_compat_set() {
    for arch in ARCHES {
        let data = image_bytes(arch);
        let flags = parse(&data).nt_headers().optional_header().dll_characteristics();
        assert_ne!(flags & pe::IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE, 0, "{arch:?}: DYNAMICBASE not set ({flags:#x})");
        assert_ne!(flags & pe::IMAGE_DLLCHARACTERISTICS_NX_COMPAT, 0, "{arch:?}: NXCOMPAT not set ({flags:#x})");
    }
}

#[test]
fn chkstk_is_never_referenced() {
    // A frame over 4 KiB makes LLVM call __chkstk, which the no-WDK link does not provide:
    // the link fails. This checks the outcome in both records of the link.
    for arch in ARCHES {
        let data = image_bytes(arch);
        for (module, functions) in imports(&parse(&data)) {
            assert!(!functions.iter().any(|function| function.contains("chkstk")), "{arch:?}: imports __chkstk from {module}");
        }
        let map = std::fs::read_to_string(map_file(arch)).expect("map file unreadable");
        assert!(!map.contains("__chkstk"), "{arch:?}: the map file references __chkstk");
    }
}
