//! Callback data a filter allocates to issue I/O itself: FltAllocateCallbackData,
//! FltPerformSynchronousIo, FltReuseCallbackData and FltFreeCallbackData. The operation goes to
//! the instances below the initiating instance and the file system only (the filter's own
//! callbacks do not see it). IRP_MJ_READ, IRP_MJ_WRITE (on the stream's contents) and
//! IRP_MJ_QUERY_INFORMATION (as FltQueryInformationFile answers it) are performed; other majors
//! complete with STATUS_NOT_SUPPORTED. Callback data never freed by unload is
//! `ObjectLeaked(callback data)`; performing, reusing or freeing freed (or foreign) callback data
//! is `ObjectMisuse`. The callback data and parameter blocks read here are fltemu's own boxes
//! (found in [`ALLOCATED`] first), so those reads are aligned; the driver's out pointer is
//! written unaligned.

use windows_sys::Wdk::Foundation::FILE_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FLT_CALLBACK_DATA, FLT_IO_PARAMETER_BLOCK};

use crate::catalog::{Emulated, Source};
use crate::exec::{APC_LEVEL, DISPATCH_LEVEL};
use crate::objects::{self, ObjectKind, Table};
use crate::state::{self, status};
use crate::verifier::Violation;

/// FLTFL_CALLBACK_DATA_IRP_OPERATION | FLTFL_CALLBACK_DATA_GENERATED_IO (fltkernel.h).
const GENERATED_IRP: u32 = 0x1 | 0x0001_0000;
/// IRP_MJ_QUERY_INFORMATION (wdm.h).
const IRP_MJ_QUERY_INFORMATION: u8 = 0x05;

/// One allocated callback data and its parameter block.
struct Allocated {
    data: Box<FLT_CALLBACK_DATA>,
    iopb: Box<FLT_IO_PARAMETER_BLOCK>,
    instance: isize,
    volume: usize,
    freed: bool,
}

// SAFETY: the raw pointers inside point into the record's own boxes (Iopb) or at emulated
// kernel objects; they are only dereferenced by the driver and under the table's lock.
unsafe impl Send for Allocated {}

/// Every callback data FltAllocateCallbackData handed out (freed ones kept, so an address is
/// never reused and a stale pointer still reads a block).
static ALLOCATED: Table<usize, Allocated> = Table::new();

/// Forgets every allocation (a new emulator loads).
pub fn reset() {
    // The blocks are leaked on purpose: a driver of the previous run might still hold one.
    ALLOCATED.with(|t| t.drain().for_each(|(_, record)| std::mem::forget(record)));
}

/// Callback data not freed.
pub fn outstanding() -> Vec<(ObjectKind, usize)> {
    vec![(ObjectKind::CallbackData, ALLOCATED.with(|t| t.values().filter(|a| !a.freed).count()))]
}

/// `FltAllocateCallbackData` (fltkernel.h; ≤ APC): callback data for an IRP operation the
/// filter will initiate on `file_object` (optional), Iopb->TargetInstance/TargetFileObject set.
extern "win64" fn flt_allocate_callback_data(instance: isize, file_object: usize, out: *mut usize) -> i32 {
    objects::count("FltAllocateCallbackData", APC_LEVEL);
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    if out.is_null() {
        inner
            .violation(Violation::InvalidParameter { function: "FltAllocateCallbackData", reason: "RetNewCallbackData is NULL" });
        return status::INVALID_PARAMETER;
    }
    // SAFETY: the caller's out parameter (any alignment: a driver's pointer).
    unsafe { out.write_unaligned(0) };
    let Some(volume) = inner.instance(instance).map(|i| i.volume) else {
        inner.violation(Violation::InvalidParameter {
            function: "FltAllocateCallbackData",
            reason: "Instance is not an instance handle",
        });
        return status::INVALID_PARAMETER;
    };
    // SAFETY: FLT_IO_PARAMETER_BLOCK and FLT_CALLBACK_DATA are plain data; all-zero is valid.
    let mut iopb: Box<FLT_IO_PARAMETER_BLOCK> = Box::new(unsafe { core::mem::zeroed() });
    iopb.TargetInstance = instance;
    iopb.TargetFileObject = file_object as *mut FILE_OBJECT;
    // SAFETY: as above.
    let mut data: Box<FLT_CALLBACK_DATA> = Box::new(unsafe { core::mem::zeroed() });
    data.Flags = GENERATED_IRP;
    data.Iopb = &raw mut *iopb;
    data.RequestorMode = 0; // KernelMode
    let address = &raw const *data as usize;
    ALLOCATED.with(|t| t.insert(address, Allocated { data, iopb, instance, volume, freed: false }));
    // SAFETY: as above.
    unsafe { out.write_unaligned(address) };
    status::SUCCESS
}

/// The live allocation at `data`: (its parameter block, instance, volume), or the misuse.
fn live(function: &'static str, data: usize) -> Option<(usize, isize, usize)> {
    let found = ALLOCATED.with(|t| t.get(&data).map(|a| (a.freed, &raw const *a.iopb as usize, a.instance, a.volume)));
    match found {
        Some((false, iopb, instance, volume)) => Some((iopb, instance, volume)),
        Some((true, ..)) => {
            objects::misuse(function, ObjectKind::CallbackData, "callback data already freed by FltFreeCallbackData");
            None
        }
        None => {
            objects::misuse(function, ObjectKind::CallbackData, "not callback data from FltAllocateCallbackData");
            None
        }
    }
}

/// `FltPerformSynchronousIo` (fltkernel.h; ≤ APC): performs the operation the callback data
/// describes below the initiating instance and sets IoStatus.
extern "win64" fn flt_perform_synchronous_io(data: usize) {
    objects::count("FltPerformSynchronousIo", APC_LEVEL);
    let Some(inner) = state::current() else { return };
    let Some((iopb_address, instance, volume)) = live("FltPerformSynchronousIo", data) else { return };
    let iopb = iopb_address as *const FLT_IO_PARAMETER_BLOCK;
    // SAFETY: the allocation's own parameter block (the filter filled it in).
    let block = unsafe { iopb.read() };
    let (major, file_object) = (block.MajorFunction, block.TargetFileObject as usize);
    let (result, information) = match major {
        crate::rw::IRP_MJ_READ | crate::rw::IRP_MJ_WRITE => crate::rw::perform_generated(inner, volume, file_object, iopb, major),
        IRP_MJ_QUERY_INFORMATION => {
            // Parameters.QueryFileInformation: Length at 0, FileInformationClass
            // (POINTER_ALIGNMENT) at 8, InfoBuffer at 0x10.
            #[repr(C)]
            #[derive(Clone, Copy)]
            struct QueryParameters {
                length: u32,
                _pad: u32,
                class: i32,
                _class_pad: u32,
                buffer: *mut u8,
            }
            #[allow(clippy::cast_ptr_alignment)] // Parameters sits 8-aligned at 0x18.
            let parameters = iopb
                .cast::<u8>()
                .wrapping_add(core::mem::offset_of!(FLT_IO_PARAMETER_BLOCK, Parameters))
                .cast::<QueryParameters>();
            // SAFETY: the allocation's own parameter block (Parameters is 8-aligned).
            let QueryParameters { length, class, buffer, .. } = unsafe { parameters.read() };
            let mut returned = 0u32;
            // Filter Manager's own query: not a call the driver made (no count, no IRQL check).
            let result =
                crate::volume::query_information_file(instance, file_object, buffer, length, class, &raw mut returned);
            (result, returned as usize)
        }
        _ => {
            inner.violation(Violation::InvalidParameter {
                function: "FltPerformSynchronousIo",
                reason: "only IRP_MJ_READ, IRP_MJ_WRITE and IRP_MJ_QUERY_INFORMATION are modelled by fltemu",
            });
            (status::NOT_SUPPORTED, 0)
        }
    };
    let io_status = windows_sys::Win32::System::IO::IO_STATUS_BLOCK {
        Anonymous: windows_sys::Win32::System::IO::IO_STATUS_BLOCK_0 { Status: result },
        Information: information,
    };
    // SAFETY: the allocation's own callback data: IoStatus is where the result goes.
    unsafe { io_status_of(data).write(io_status) };
}

/// The IoStatus member of the callback data at `data`.
fn io_status_of(data: usize) -> *mut windows_sys::Win32::System::IO::IO_STATUS_BLOCK {
    (data + core::mem::offset_of!(FLT_CALLBACK_DATA, IoStatus)) as *mut _
}

/// `FltReuseCallbackData` (fltkernel.h; ≤ APC): clears the result and the parameters for another
/// operation on the same instance and FILE_OBJECT, freeing the MDL chain of a read/write's
/// parameters first (the DDI page: it "frees any MDL chain associated with" the callback data).
extern "win64" fn flt_reuse_callback_data(data: usize) {
    objects::count("FltReuseCallbackData", APC_LEVEL);
    let Some((iopb_address, ..)) = live("FltReuseCallbackData", data) else { return };
    let iopb = iopb_address as *mut FLT_IO_PARAMETER_BLOCK;
    // SAFETY: the allocation's own parameter block (plain data).
    let mut block = unsafe { iopb.read() };
    if matches!(block.MajorFunction, crate::rw::IRP_MJ_READ | crate::rw::IRP_MJ_WRITE) {
        crate::mdl::free_attached_chain("FltReuseCallbackData", crate::rw::mdl_of(iopb));
    }
    block.MajorFunction = 0;
    block.MinorFunction = 0;
    block.IrpFlags = 0;
    // SAFETY: FLT_PARAMETERS is plain data; all-zero is a valid value.
    block.Parameters = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    unsafe { iopb.write(block) };
    let cleared = windows_sys::Win32::System::IO::IO_STATUS_BLOCK {
        Anonymous: windows_sys::Win32::System::IO::IO_STATUS_BLOCK_0 { Status: 0 },
        Information: 0,
    };
    // SAFETY: the allocation's own callback data.
    unsafe { io_status_of(data).write(cleared) };
}

/// `FltFreeCallbackData` (fltkernel.h; ≤ DISPATCH_LEVEL): frees it (kept allocated, poisoned)
/// and, as the DDI page says ("frees any MDL chain associated with the supplied CallbackData"),
/// the MDL chain in an IRP_MJ_READ / IRP_MJ_WRITE's Parameters MdlAddress; a later IoFreeMdl of
/// it is a double free. Other majors' MDL parameters (QueryDirectory, QueryEa, SetEa, quota,
/// security, DeviceIoControl) are not freed: fltemu performs none of those through allocated
/// callback data, and their x64 offsets (POINTER_ALIGNMENT members windows-sys omits) are not
/// modelled, so a driver that leaves one for FltFreeCallbackData is reported ObjectLeaked(Mdl).
extern "win64" fn flt_free_callback_data(data: usize) {
    objects::count("FltFreeCallbackData", DISPATCH_LEVEL);
    let Some((iopb_address, ..)) = live("FltFreeCallbackData", data) else { return };
    let iopb = iopb_address as *const FLT_IO_PARAMETER_BLOCK;
    // SAFETY: the allocation's own parameter block (the filter filled it in).
    let major = unsafe { iopb.read() }.MajorFunction;
    if matches!(major, crate::rw::IRP_MJ_READ | crate::rw::IRP_MJ_WRITE) {
        crate::mdl::free_attached_chain("FltFreeCallbackData", crate::rw::mdl_of(iopb));
    }
    ALLOCATED.with(|t| {
        if let Some(record) = t.get_mut(&data) {
            record.freed = true;
            // SAFETY: the record's own callback data (plain data): poisoned like freed pool.
            unsafe { core::ptr::write_bytes(&raw mut *record.data, 0xDF, 1) };
        }
    });
}

/// fltmgr.sys exports of this module.
pub fn resolve_flt(name: &str) -> Option<usize> {
    Some(match name {
        "FltAllocateCallbackData" => flt_allocate_callback_data as *const () as usize,
        "FltPerformSynchronousIo" => flt_perform_synchronous_io as *const () as usize,
        "FltReuseCallbackData" => flt_reuse_callback_data as *const () as usize,
        "FltFreeCallbackData" => flt_free_callback_data as *const () as usize,
        _ => return None,
    })
}

const fn flt(function: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "fltmgr.sys", function, notes, source: Source::Ddi("fltkernel") }
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    flt(
        "FltAllocateCallbackData",
        "≤ APC; zeroed callback data (IRP operation, generated I/O, KernelMode) with Iopb TargetInstance/TargetFileObject set; unknown Instance, NULL out pointer → InvalidParameter; never freed by unload → ObjectLeaked(callback data)",
    ),
    flt(
        "FltPerformSynchronousIo",
        "≤ APC; below the initiating instance only; IRP_MJ_READ / IRP_MJ_WRITE on the stream's contents (Parameters.Read/Write, MDL or buffer), IRP_MJ_QUERY_INFORMATION as FltQueryInformationFile; other majors → STATUS_NOT_SUPPORTED + InvalidParameter; result in IoStatus; freed or foreign callback data → ObjectMisuse",
    ),
    flt(
        "FltReuseCallbackData",
        "≤ APC; frees the MDL chain in a read/write's Parameters MdlAddress (as FltFreeCallbackData), clears IoStatus and the parameters (instance and FILE_OBJECT kept); only a read/write's MdlAddress is known to fltemu: an MDL in another major's parameters (QueryDirectory, QueryEa, DeviceIoControl …) is not freed, so a driver relying on that is reported ObjectLeaked(Mdl); freed or foreign → ObjectMisuse",
    ),
    flt(
        "FltFreeCallbackData",
        "≤ DISPATCH; frees the MDL chain in a read/write's Parameters MdlAddress too (a later IoFreeMdl of it → ObjectMisuse; one the filter freed already → ObjectMisuse); only a read/write's MdlAddress is known to fltemu: an MDL in another major's parameters (QueryDirectory, QueryEa, DeviceIoControl …) is not freed, so a driver relying on that is reported ObjectLeaked(Mdl); freed twice or foreign → ObjectMisuse",
    ),
];
