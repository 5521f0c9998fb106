//! Run-time lookups and environment queries the samples make: MmGetSystemRoutineAddress and
//! FltGetRoutineAddress (answered from fltemu's own resolver, so an optional function a driver
//! probes for is found exactly when fltemu emulates it), FsRtlIsNtstatusExpected,
//! KeAreApcsDisabled / KeAreAllApcsDisabled, IoIs32bitProcess, the registry reads of a driver's
//! Parameters key (fltemu has no registry: the key is absent) and DbgBreakPoint.

use windows_sys::Win32::Foundation::UNICODE_STRING;

use crate::catalog::{Emulated, Source};
use crate::exec::{self, APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::objects;
use crate::state::status;

/// The driver's UNICODE_STRING as text, copied bytewise (it and its Buffer may sit at odd
/// addresses); None for NULL or a NULL Buffer.
fn counted(string: *const UNICODE_STRING) -> Option<String> {
    if string.is_null() {
        return None;
    }
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    let value = unsafe { crate::driver_mem::read(string) };
    if value.Buffer.is_null() {
        return None;
    }
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    Some(String::from_utf16_lossy(&unsafe { crate::driver_mem::counted_units(value.Buffer, value.Length) }))
}

/// `MmGetSystemRoutineAddress` (wdm.h; PASSIVE): the address of an ntoskrnl.exe or hal.dll
/// export fltemu emulates, else NULL (the documented "not found").
extern "win64" fn mm_get_system_routine_address(name: *const UNICODE_STRING) -> usize {
    objects::count("MmGetSystemRoutineAddress", PASSIVE_LEVEL);
    counted(name).and_then(|name| crate::resolve_import("ntoskrnl.exe", &name)).unwrap_or(0)
}

/// `FltGetRoutineAddress` (fltkernel.h; PASSIVE): a fltmgr.sys export by (narrow) name, else NULL.
extern "win64" fn flt_get_routine_address(name: *const u8) -> usize {
    objects::count("FltGetRoutineAddress", PASSIVE_LEVEL);
    if name.is_null() {
        return 0;
    }
    // SAFETY: a NUL-terminated routine name (the DDI's contract), copied out.
    let name = String::from_utf8_lossy(&unsafe { crate::driver_mem::c_string(name, 1 << 16) }).into_owned();
    crate::resolve_import("fltmgr.sys", &name).unwrap_or(0)
}

/// `FsRtlIsNtstatusExpected` (ntifs.h; any IRQL): FALSE for the statuses an exception filter
/// must not swallow (access violation, misalignment, illegal or misaligned instruction).
extern "win64" fn fs_rtl_is_ntstatus_expected(code: i32) -> u8 {
    objects::count("FsRtlIsNtstatusExpected", 15);
    let unexpected = [0xC000_0005_u32, 0x8000_0002, 0xC000_001D, 0xC000_00AA].map(u32::cast_signed);
    u8::from(!unexpected.contains(&code))
}

/// `KeAreApcsDisabled` (ntddk.h; any IRQL): in a critical or guarded region, or at APC_LEVEL
/// and above.
extern "win64" fn ke_are_apcs_disabled() -> u8 {
    objects::count("KeAreApcsDisabled", 15);
    u8::from(crate::sync::in_critical_region() || exec::irql() >= APC_LEVEL)
}

/// `KeAreAllApcsDisabled` (wdm.h; any IRQL): at APC_LEVEL and above (fltemu's guarded mutexes
/// are counted as critical regions, which disable normal APCs only).
extern "win64" fn ke_are_all_apcs_disabled() -> u8 {
    objects::count("KeAreAllApcsDisabled", 15);
    u8::from(exec::irql() >= APC_LEVEL)
}

/// `IoIs32bitProcess` (wdm.h; ≤ DISPATCH): fltemu's requestors are 64-bit processes.
extern "win64" fn io_is_32bit_process(_irp: usize) -> u8 {
    objects::count("IoIs32bitProcess", DISPATCH_LEVEL);
    0
}

/// `ZwOpenKey` (wdm.h; PASSIVE): fltemu has no registry, so every key is absent
/// (STATUS_OBJECT_NAME_NOT_FOUND, handle NULL): drivers take their defaults, as with a missing
/// Parameters key.
extern "win64" fn zw_open_key(handle: *mut usize, _access: u32, _attributes: usize) -> i32 {
    objects::count("ZwOpenKey", PASSIVE_LEVEL);
    if !handle.is_null() {
        // SAFETY: the caller's out handle.
        unsafe { handle.write_unaligned(0) };
    }
    status::OBJECT_NAME_NOT_FOUND
}

/// `ZwQueryValueKey` (wdm.h; PASSIVE): no key can be open, so STATUS_INVALID_HANDLE.
extern "win64" fn zw_query_value_key(_key: usize, _name: usize, _class: i32, _information: usize, _length: u32, returned: *mut u32) -> i32 {
    objects::count("ZwQueryValueKey", PASSIVE_LEVEL);
    if !returned.is_null() {
        // SAFETY: the caller's out length.
        unsafe { returned.write_unaligned(0) };
    }
    0xC000_0008_u32.cast_signed()
}

/// `DbgBreakPoint` (wdm.h): with no kernel debugger attached a breakpoint is an exception no one
/// handles; fltemu records it and continues, so the rest of the run is still checked.
extern "win64" fn dbg_break_point() {
    objects::count("DbgBreakPoint", 31);
    objects::flag(crate::Violation::InvalidParameter { function: "DbgBreakPoint", reason: "a breakpoint with no kernel debugger attached (an unhandled STATUS_BREAKPOINT on Windows)" });
}

/// ntoskrnl.exe exports of this module.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "MmGetSystemRoutineAddress" => mm_get_system_routine_address as *const () as usize,
        "FsRtlIsNtstatusExpected" => fs_rtl_is_ntstatus_expected as *const () as usize,
        "KeAreApcsDisabled" => ke_are_apcs_disabled as *const () as usize,
        "KeAreAllApcsDisabled" => ke_are_all_apcs_disabled as *const () as usize,
        "IoIs32bitProcess" => io_is_32bit_process as *const () as usize,
        "ZwOpenKey" => zw_open_key as *const () as usize,
        "ZwQueryValueKey" => zw_query_value_key as *const () as usize,
        "DbgBreakPoint" => dbg_break_point as *const () as usize,
        _ => return None,
    })
}

/// fltmgr.sys exports of this module.
pub fn resolve_flt(name: &str) -> Option<usize> {
    (name == "FltGetRoutineAddress").then_some(flt_get_routine_address as *const () as usize)
}

const fn nt(function: &'static str, header: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "ntoskrnl.exe", function, notes, source: Source::Ddi(header) }
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    nt("MmGetSystemRoutineAddress", "wdm", "PASSIVE; an emulated ntoskrnl.exe/hal.dll export's address, else NULL"),
    Emulated { dll: "fltmgr.sys", function: "FltGetRoutineAddress", notes: "PASSIVE; an emulated fltmgr.sys export's address, else NULL", source: Source::Ddi("fltkernel") },
    nt("FsRtlIsNtstatusExpected", "ntifs", "FALSE for ACCESS_VIOLATION, DATATYPE_MISALIGNMENT, ILLEGAL_INSTRUCTION, INSTRUCTION_MISALIGNMENT"),
    nt("KeAreApcsDisabled", "ntddk", "in a critical region or at ≥ APC_LEVEL"),
    nt("KeAreAllApcsDisabled", "wdm", "at ≥ APC_LEVEL"),
    nt("IoIs32bitProcess", "wdm", "FALSE (64-bit requestors)"),
    nt("ZwOpenKey", "wdm", "PASSIVE; no registry: STATUS_OBJECT_NAME_NOT_FOUND, NULL handle (drivers fall back to defaults)"),
    nt("ZwQueryValueKey", "wdm", "PASSIVE; no key can be open: STATUS_INVALID_HANDLE"),
    nt("DbgBreakPoint", "wdm", "recorded as InvalidParameter (no kernel debugger), the run continues"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> usize {
        let units: Vec<u16> = name.encode_utf16().collect();
        let string = UNICODE_STRING { Length: (units.len() * 2) as u16, MaximumLength: (units.len() * 2) as u16, Buffer: units.as_ptr().cast_mut() };
        mm_get_system_routine_address(&raw const string)
    }

    #[test]
    fn routine_lookups_find_exactly_what_is_emulated() {
        assert_eq!(lookup("ExAllocatePool2"), crate::resolve_import("ntoskrnl.exe", "ExAllocatePool2").unwrap());
        assert_eq!(lookup("ExAllocatePool3"), 0, "not emulated: NULL, as for a routine the kernel lacks");
        assert_ne!(flt_get_routine_address(c"FltGetVolumeProperties".as_ptr().cast()), 0);
        assert_eq!(flt_get_routine_address(c"FltNoSuchRoutine".as_ptr().cast()), 0);
    }

    #[test]
    fn exception_statuses_a_filter_must_not_swallow() {
        assert_eq!(fs_rtl_is_ntstatus_expected(status::ACCESS_VIOLATION), 0);
        assert_eq!(fs_rtl_is_ntstatus_expected(status::DATATYPE_MISALIGNMENT), 0);
        assert_eq!(fs_rtl_is_ntstatus_expected(status::INVALID_PARAMETER), 1);
    }
}
