//! x64 unwinding over the driver image's `.pdata`/`.xdata`, as the kernel's RtlVirtualUnwind
//! does it.
//!
//! Written from learn.microsoft.com "x64 exception handling" (RUNTIME_FUNCTION, UNWIND_INFO,
//! UNWIND_CODE, chained unwind info, the epilog rules) with ReactOS's sdk/lib/rtl/amd64/unwind.c
//! read as a second opinion on the establisher-frame and SAVE_NONVOL base rules; no code copied.
//! Only the image fltemu loaded is unwound: a frame whose RIP lies outside it (fltemu's own
//! code, which calls the driver) ends every walk.

use core::sync::atomic::Ordering;

use crate::exec;

/// A Windows x64 `CONTEXT` (winnt.h), laid out exactly, because driver filters can read it
/// through GetExceptionInformation(). Integer registers are in x64 encoding order (RAX, RCX,
/// RDX, RBX, RSP, RBP, RSI, RDI, R8–R15), which is also the order UNWIND_CODE numbers them.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct Context {
    home: [u64; 6],
    /// CONTEXT_FLAGS.
    pub flags: u32,
    /// MXCSR.
    pub mx_csr: u32,
    segments: [u16; 6],
    /// RFLAGS.
    pub eflags: u32,
    debug: [u64; 6],
    /// RAX … R15.
    pub gpr: [u64; 16],
    /// RIP.
    pub rip: u64,
    float_header: [u8; 32],
    x87: [u128; 8],
    /// XMM0 … XMM15 (inside FltSave, XMM_SAVE_AREA32).
    pub xmm: [u128; 16],
    float_reserved: [u8; 96],
    vector: [u128; 26],
    tail: [u64; 6],
}

/// `CONTEXT_AMD64 | CONTEXT_CONTROL | CONTEXT_INTEGER | CONTEXT_FLOATING_POINT`.
pub const CONTEXT_FULL: u32 = 0x0010_000B;
/// Index of RAX in [`Context::gpr`].
pub const RAX: usize = 0;
/// Index of RSP in [`Context::gpr`].
pub const RSP: usize = 4;

const _: () = assert!(core::mem::size_of::<Context>() == 0x4D0);
const _: () = assert!(core::mem::offset_of!(Context, gpr) == 0x78);
const _: () = assert!(core::mem::offset_of!(Context, rip) == 0xF8);
const _: () = assert!(core::mem::offset_of!(Context, xmm) == 0x1A0);

impl Context {
    /// An all-zero context with the flags of a full capture.
    #[must_use]
    pub fn zeroed() -> Self {
        Self {
            home: [0; 6],
            flags: CONTEXT_FULL,
            mx_csr: 0x1F80,
            segments: [0; 6],
            eflags: 0x202,
            debug: [0; 6],
            gpr: [0; 16],
            rip: 0,
            float_header: [0; 32],
            x87: [0; 8],
            xmm: [0; 16],
            float_reserved: [0; 96],
            vector: [0; 26],
            tail: [0; 6],
        }
    }
}

/// One `.pdata` entry (RVAs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeFunction {
    /// First byte of the function.
    pub begin: u32,
    /// One past its last byte.
    pub end: u32,
    /// Its UNWIND_INFO.
    pub unwind_data: u32,
    /// Where the entry itself lies (DISPATCHER_CONTEXT.FunctionEntry points at it).
    pub entry_address: usize,
}

/// `UNW_FLAG_EHANDLER`.
pub const UNW_FLAG_EHANDLER: u8 = 1;
/// `UNW_FLAG_UHANDLER`.
pub const UNW_FLAG_UHANDLER: u8 = 2;
const UNW_FLAG_CHAININFO: u8 = 4;

/// Why a walk could not continue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnwindError {
    /// The unwind data (UNWIND_INFO at this RVA, its codes or its chain) is not what the format
    /// allows, lies outside the image, or moves RSP by an amount that overflows.
    BadUnwindInfo(u32),
    /// The UNWIND_INFO at `unwind` names a language handler at `handler`, which is not in an
    /// executable section of the image, or its handler data does not fit in the image.
    BadHandler {
        /// The UNWIND_INFO's RVA.
        unwind: u32,
        /// The handler RVA it holds.
        handler: u32,
    },
    /// The unwind codes point a stack read at this address, outside the thread's stack.
    StackOutOfRange(u64),
}

impl core::fmt::Display for UnwindError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadUnwindInfo(rva) => write!(f, "the UNWIND_INFO at RVA {rva:#x} is malformed or reaches outside the image"),
            Self::BadHandler { unwind, handler } => write!(
                f,
                "the UNWIND_INFO at RVA {unwind:#x} names a language handler at RVA {handler:#x}, outside the image's executable sections"
            ),
            Self::StackOutOfRange(address) => write!(f, "the unwind codes read the stack at {address:#x}, outside the thread's stack"),
        }
    }
}

thread_local! {
    /// The current thread's stack, `[low, high)` (0, 0: unknown, stack reads are not bounded).
    static STACK: core::cell::Cell<(usize, usize)> = const { core::cell::Cell::new((0, 0)) };
}

/// Records the current thread's stack range, which bounds every stack read of the unwinder.
pub fn set_thread_stack(low: usize, high: usize) {
    STACK.with(|c| c.set((low, high)));
}

/// The current thread's stack range, when known.
#[must_use]
pub fn thread_stack() -> Option<(usize, usize)> {
    let (low, high) = STACK.with(core::cell::Cell::get);
    (high != 0).then_some((low, high))
}

/// `IMAGE_SCN_MEM_EXECUTE`.
const SCN_EXECUTE: u32 = 0x2000_0000;

/// The loaded image, as the signal handler and the dispatcher see it.
#[derive(Clone, Copy, Debug)]
pub struct Image {
    /// Base address.
    pub base: usize,
    /// Mapped size.
    pub size: usize,
}

impl Image {
    /// The image fltemu currently runs, if any.
    #[must_use]
    pub fn current() -> Option<Self> {
        let base = exec::IMAGE_BASE.load(Ordering::Relaxed);
        let size = exec::IMAGE_SIZE.load(Ordering::Relaxed);
        (base != 0 && size != 0).then_some(Self { base, size })
    }

    /// True when `address` lies inside the image.
    #[must_use]
    pub fn contains(&self, address: u64) -> bool {
        usize::try_from(address).is_ok_and(|a| a >= self.base && a - self.base < self.size)
    }

    /// True when `[rva, rva + length)` lies inside the image (overflow-checked).
    #[must_use]
    pub fn holds(&self, rva: usize, length: usize) -> bool {
        rva.checked_add(length).is_some_and(|end| end <= self.size)
    }

    fn u8_at(&self, rva: usize) -> Option<u8> {
        self.holds(rva, 1).then(|| read::<u8>(self.base + rva))
    }

    fn u16_at(&self, rva: usize) -> Option<u16> {
        self.holds(rva, 2).then(|| read::<u16>(self.base + rva))
    }

    /// The little-endian u32 at `rva`, if it lies inside the image.
    #[must_use]
    pub fn u32_at(&self, rva: usize) -> Option<u32> {
        self.holds(rva, 4).then(|| read::<u32>(self.base + rva))
    }

    /// True when `rva` lies in an executable section of the mapped image (IMAGE_SCN_MEM_EXECUTE
    /// in the section table of the mapped headers, the bit the loader maps as PROT_EXEC): a
    /// handler, filter, `__finally` or `__except` target must, or jumping there would fault.
    #[must_use]
    pub fn executable(&self, rva: u32) -> bool {
        let Some(pe) = self.u32_at(0x3C).map(|at| at as usize) else { return false };
        let (Some(count), Some(optional)) = (self.u16_at(pe + 6), self.u16_at(pe + 20)) else { return false };
        let table = pe + 24 + usize::from(optional);
        (0..usize::from(count)).any(|index| {
            let at = table + index * 40;
            let (Some(virtual_size), Some(address), Some(characteristics)) =
                (self.u32_at(at + 8), self.u32_at(at + 12), self.u32_at(at + 36))
            else {
                return false;
            };
            characteristics & SCN_EXECUTE != 0
                && rva >= address
                && u64::from(rva) < u64::from(address) + u64::from(virtual_size)
                && self.holds(rva as usize, 1)
        })
    }

    /// Data directory `index` (RVA, size) from the mapped headers.
    #[must_use]
    pub fn directory(&self, index: usize) -> Option<(u32, u32)> {
        let pe = self.u32_at(0x3C)? as usize;
        // Signature 4 + file header 20; PE32+ optional header: data directories at 112.
        let count = self.u32_at(pe + 24 + 108)? as usize;
        if index >= count {
            return None;
        }
        let at = pe + 24 + 112 + index * 8;
        Some((self.u32_at(at)?, self.u32_at(at + 4)?))
    }

    /// The `.pdata` entry covering `rva` (binary search; the table is sorted by the linker).
    #[must_use]
    pub fn lookup(&self, rva: u32) -> Option<RuntimeFunction> {
        let (table, size) = self.directory(3)?;
        let count = size as usize / 12;
        let (mut low, mut high) = (0usize, count);
        while low < high {
            let middle = usize::midpoint(low, high);
            let at = table as usize + middle * 12;
            let begin = self.u32_at(at)?;
            let end = self.u32_at(at + 4)?;
            if rva < begin {
                high = middle;
            } else if rva >= end {
                low = middle + 1;
            } else {
                return Some(RuntimeFunction { begin, end, unwind_data: self.u32_at(at + 8)?, entry_address: self.base + at });
            }
        }
        None
    }

    /// The `.pdata` entry stored at `address` (a pointer RtlLookupFunctionEntry returned), if
    /// `address` is one of the image's entries.
    #[must_use]
    pub fn entry_at(&self, address: usize) -> Option<RuntimeFunction> {
        let (table, size) = self.directory(3)?;
        let offset = address.checked_sub(self.base + table as usize)?;
        if !offset.is_multiple_of(12) || offset + 12 > size as usize {
            return None;
        }
        let at = table as usize + offset;
        Some(RuntimeFunction { begin: self.u32_at(at)?, end: self.u32_at(at + 4)?, unwind_data: self.u32_at(at + 8)?, entry_address: address })
    }

    /// RVA of `address` (caller checked [`contains`](Self::contains)).
    #[must_use]
    #[allow(clippy::cast_possible_truncation)] // images are smaller than 4 GiB
    pub fn rva(&self, address: u64) -> u32 {
        (address as usize).wrapping_sub(self.base) as u32
    }
}

/// Reads a `T` from the mapped image (callers bounds-checked the address).
fn read<T: Copy>(address: usize) -> T {
    // SAFETY: callers pass addresses inside the mapped image, checked with Image::holds or
    // Image::contains; every section of the mapped image is readable.
    unsafe { (address as *const T).read_unaligned() }
}

/// Reads a `T` from the stack slot at `address` the unwind codes or the epilog name, if the
/// whole slot lies inside the thread's stack (when its range is known): corrupt unwind data
/// must not make fltemu read outside it.
fn read_stack<T: Copy>(address: u64) -> Result<T, UnwindError> {
    let out = UnwindError::StackOutOfRange(address);
    let start = usize::try_from(address).map_err(|_| out)?;
    let end = start.checked_add(size_of::<T>()).ok_or(out)?;
    if let Some((low, high)) = thread_stack()
        && (start < low || end > high)
    {
        return Err(out);
    }
    // SAFETY: inside this thread's stack (checked above; in unit tests, where the range is not
    // recorded, the callers' own buffers): mapped and readable.
    Ok(unsafe { (start as *const T).read_unaligned() })
}

/// A language handler found for a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handler {
    /// The handler's address.
    pub routine: usize,
    /// Its handler data (the scope table for __C_specific_handler).
    pub data: usize,
}

/// What one virtual unwind step found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame's establisher frame (RSP after its prolog, or frame register − 16·offset).
    pub establisher: u64,
    /// The handler matching the flags asked for, when the PC is in the body.
    pub handler: Option<Handler>,
}

struct Info {
    flags: u8,
    prolog_size: u8,
    code_count: usize,
    frame_register: usize,
    frame_offset: u64,
    codes_rva: usize,
}

fn parse_info(image: &Image, rva: u32) -> Result<Info, UnwindError> {
    let at = rva as usize;
    let bad = UnwindError::BadUnwindInfo(rva);
    let first = image.u8_at(at).ok_or(bad)?;
    let version = first & 7;
    if version != 1 && version != 2 {
        return Err(bad);
    }
    let frame = image.u8_at(at + 3).ok_or(bad)?;
    Ok(Info {
        flags: first >> 3,
        prolog_size: image.u8_at(at + 1).ok_or(bad)?,
        code_count: usize::from(image.u8_at(at + 2).ok_or(bad)?),
        frame_register: usize::from(frame & 0x0F),
        frame_offset: u64::from(frame >> 4) * 16,
        codes_rva: at + 4,
    })
}

/// Slots an unwind operation occupies (x64 exception handling, "Unwind operation code").
fn slots(op: u8, info: u8) -> usize {
    match op {
        1 => 2 + usize::from(info != 0),
        4 | 6 | 8 => 2,
        5 | 7 | 9 => 3,
        _ => 1,
    }
}

/// Applies `info`'s unwind codes to `context`. `prolog_offset` = how far into the prolog the PC
/// is (codes for instructions not yet executed are skipped); `None` = prolog complete.
fn apply_codes(
    image: &Image,
    rva: u32,
    info: &Info,
    context: &mut Context,
    frame_base: u64,
    prolog_offset: Option<u8>,
    pointers: &mut ContextPointers,
) -> Result<bool, UnwindError> {
    let bad = UnwindError::BadUnwindInfo(rva);
    let mut index = 0;
    while index < info.code_count {
        let at = info.codes_rva + index * 2;
        let code_offset = image.u8_at(at).ok_or(bad)?;
        let op_info = image.u8_at(at + 1).ok_or(bad)?;
        let (op, reg) = (op_info & 0x0F, op_info >> 4);
        // Operation info the format does not define: ALLOC_LARGE and PUSH_MACHFRAME take only 0
        // or 1, and SET_FPREG needs a frame register in the UNWIND_INFO.
        if matches!(op, 1 | 10) && reg > 1 || op == 3 && info.frame_register == 0 {
            return Err(bad);
        }
        let size = slots(op, reg);
        let slot = |n: usize| image.u16_at(at + n * 2).ok_or(bad);
        if prolog_offset.is_some_and(|offset| code_offset > offset) {
            index += size;
            continue;
        }
        let rsp = context.gpr[RSP];
        // RSP and the frame base come from the driver's context and the offsets from its unwind
        // codes: a sum that overflows is corrupt unwind data, not a wrapped address.
        let add = |value: u64, bytes: u64| value.checked_add(bytes).ok_or(bad);
        match op {
            0 => {
                context.gpr[usize::from(reg)] = read_stack::<u64>(rsp)?;
                pointers.integer[usize::from(reg)] = rsp;
                context.gpr[RSP] = add(rsp, 8)?;
            }
            1 => {
                let bytes = if reg == 0 { u64::from(slot(1)?) * 8 } else { u64::from(slot(1)?) | (u64::from(slot(2)?) << 16) };
                context.gpr[RSP] = add(rsp, bytes)?;
            }
            2 => context.gpr[RSP] = add(rsp, u64::from(reg) * 8 + 8)?,
            3 => context.gpr[RSP] = context.gpr[info.frame_register].checked_sub(info.frame_offset).ok_or(bad)?,
            4 | 5 => {
                let offset = if op == 4 { u64::from(slot(1)?) * 8 } else { u64::from(slot(1)?) | (u64::from(slot(2)?) << 16) };
                let at = add(frame_base, offset)?;
                context.gpr[usize::from(reg)] = read_stack::<u64>(at)?;
                pointers.integer[usize::from(reg)] = at;
            }
            8 | 9 => {
                let offset = if op == 8 { u64::from(slot(1)?) * 16 } else { u64::from(slot(1)?) | (u64::from(slot(2)?) << 16) };
                let at = add(frame_base, offset)?;
                context.xmm[usize::from(reg)] = read_stack::<u128>(at)?;
                pointers.xmm[usize::from(reg)] = at;
            }
            10 => {
                // PUSH_MACHFRAME: RIP, CS, EFLAGS, old RSP, SS (after an error code when info 1).
                let top = add(rsp, if reg == 1 { 8 } else { 0 })?;
                context.rip = read_stack::<u64>(top)?;
                context.gpr[RSP] = read_stack::<u64>(add(top, 24)?)?;
                return Ok(true);
            }
            // UWOP_EPILOG (version 2) and the spare code describe nothing to undo here.
            6 | 7 => {}
            _ => return Err(bad),
        }
        index += size;
    }
    Ok(false)
}

/// True when the code at `rip` is an epilog (x64 exception handling, "Epilog code": an optional
/// `add rsp, n` / `lea rsp, [fp+n]`, then `pop` of nonvolatile registers, then `ret`); if so it
/// is simulated forward on `context`.
fn unwind_epilog(image: &Image, context: &mut Context, info: &Info, pointers: &mut ContextPointers) -> bool {
    let code = |offset: u64| -> Option<u8> {
        let address = context.rip.checked_add(offset)?;
        image.contains(address).then(|| read::<u8>(address as usize))
    };
    let mut simulated = *context;
    let mut popped = *pointers;
    let mut pc = 0u64;
    let rex_w = code(0) == Some(0x48);
    match (rex_w, code(1), code(2)) {
        (true, Some(0x83), Some(0xC4)) => {
            let Some(rsp) = simulated.gpr[RSP].checked_add(u64::from(code(3).unwrap_or(0))) else { return false };
            simulated.gpr[RSP] = rsp;
            pc = 4;
        }
        (true, Some(0x81), Some(0xC4)) => {
            let bytes = [code(3), code(4), code(5), code(6)];
            let Some(value) = bytes.iter().try_fold(0u32, |acc, b| b.map(|b| (acc >> 8) | (u32::from(b) << 24))) else {
                return false;
            };
            let Some(rsp) = simulated.gpr[RSP].checked_add(u64::from(value)) else { return false };
            simulated.gpr[RSP] = rsp;
            pc = 7;
        }
        (true, Some(0x8D), Some(modrm)) if info.frame_register != 0 && (modrm >> 3) & 7 == 4 => {
            let base = usize::from(modrm & 7);
            let mod_bits = modrm >> 6;
            let displacement = match mod_bits {
                1 => {
                    pc = 4;
                    i64::from(code(3).unwrap_or(0).cast_signed())
                }
                2 => {
                    let bytes = [code(3), code(4), code(5), code(6)];
                    let Some(value) = bytes.iter().try_fold(0u32, |acc, b| b.map(|b| (acc >> 8) | (u32::from(b) << 24))) else {
                        return false;
                    };
                    pc = 7;
                    i64::from(value.cast_signed())
                }
                _ => return false,
            };
            let Some(rsp) = simulated.gpr[base].checked_add_signed(displacement) else { return false };
            simulated.gpr[RSP] = rsp;
        }
        _ => {}
    }
    loop {
        match (code(pc), code(pc + 1)) {
            (Some(op @ 0x58..=0x5F), _) => {
                let rsp = simulated.gpr[RSP];
                let (Ok(value), Some(next)) = (read_stack::<u64>(rsp), rsp.checked_add(8)) else { return false };
                simulated.gpr[usize::from(op - 0x58)] = value;
                popped.integer[usize::from(op - 0x58)] = rsp;
                simulated.gpr[RSP] = next;
                pc += 1;
            }
            (Some(0x41), Some(op @ 0x58..=0x5F)) => {
                let rsp = simulated.gpr[RSP];
                let (Ok(value), Some(next)) = (read_stack::<u64>(rsp), rsp.checked_add(8)) else { return false };
                simulated.gpr[usize::from(op - 0x58) + 8] = value;
                popped.integer[usize::from(op - 0x58) + 8] = rsp;
                simulated.gpr[RSP] = next;
                pc += 2;
            }
            // ret, rep ret, ret imm16 (RtlVirtualUnwind's list of epilog markers).
            (Some(0xC3 | 0xC2), _) | (Some(0xF3), Some(0xC3)) => {
                let rsp = simulated.gpr[RSP];
                let (Ok(value), Some(next)) = (read_stack::<u64>(rsp), rsp.checked_add(8)) else { return false };
                simulated.rip = value;
                simulated.gpr[RSP] = next;
                *context = simulated;
                *pointers = popped;
                return true;
            }
            _ => return false,
        }
    }
}

/// One RtlVirtualUnwind step: `context` (a frame inside `function`) becomes its caller's;
/// returns the frame's establisher and, when the PC is in the body and the flags include
/// `wanted`, its language handler.
///
/// # Errors
/// [`UnwindError`] for unwind data the format does not allow.
pub fn virtual_unwind(
    image: &Image,
    function: &RuntimeFunction,
    context: &mut Context,
    wanted: u8,
) -> Result<Frame, UnwindError> {
    virtual_unwind_recording(image, function, context, wanted, &mut ContextPointers::default())
}

/// Where a virtual unwind restored nonvolatile registers from (KNONVOLATILE_CONTEXT_POINTERS
/// on x64: 16 XMM slots, then 16 integer slots in encoding order); 0 = not restored.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContextPointers {
    /// Xmm0 … Xmm15.
    pub xmm: [u64; 16],
    /// Rax … R15.
    pub integer: [u64; 16],
}

/// [`virtual_unwind`], also noting in `pointers` the stack slot each restored nonvolatile
/// register came from (RtlVirtualUnwind's ContextPointers).
///
/// # Errors
/// As [`virtual_unwind`].
pub fn virtual_unwind_recording(
    image: &Image,
    function: &RuntimeFunction,
    context: &mut Context,
    wanted: u8,
    pointers: &mut ContextPointers,
) -> Result<Frame, UnwindError> {
    let info = parse_info(image, function.unwind_data)?;
    let offset_in_function = image.rva(context.rip).saturating_sub(function.begin);
    let in_prolog = offset_in_function < u32::from(info.prolog_size);
    // The establisher frame: the frame register once the prolog has set it, else RSP.
    let mut frame_base = context.gpr[RSP];
    if info.frame_register != 0 {
        let set_at = set_fpreg_offset(image, &info);
        if !in_prolog || set_at.is_some_and(|at| u32::from(at) <= offset_in_function) {
            frame_base = context.gpr[info.frame_register]
                .checked_sub(info.frame_offset)
                .ok_or(UnwindError::BadUnwindInfo(function.unwind_data))?;
        }
    }
    let establisher = frame_base;
    if !in_prolog && unwind_epilog(image, context, &info, pointers) {
        return Ok(Frame { establisher, handler: None });
    }
    #[allow(clippy::cast_possible_truncation)] // in_prolog: the offset is below prolog_size (u8)
    let prolog_offset = in_prolog.then_some(offset_in_function as u8);
    let mut machine_frame = apply_codes(image, function.unwind_data, &info, context, frame_base, prolog_offset, pointers)?;
    let mut chained = info.flags & UNW_FLAG_CHAININFO != 0;
    let mut tail = info.codes_rva + info.code_count.div_ceil(2) * 4;
    let mut depth = 0;
    while chained {
        depth += 1;
        let bad = UnwindError::BadUnwindInfo(function.unwind_data);
        if depth > 32 {
            return Err(bad);
        }
        let parent_unwind = image.u32_at(tail + 8).ok_or(bad)?;
        let parent = parse_info(image, parent_unwind)?;
        machine_frame |= apply_codes(image, parent_unwind, &parent, context, frame_base, None, pointers)?;
        chained = parent.flags & UNW_FLAG_CHAININFO != 0;
        tail = parent.codes_rva + parent.code_count.div_ceil(2) * 4;
    }
    // Return address (unless a machine frame already restored RIP).
    if !machine_frame {
        let rsp = context.gpr[RSP];
        context.rip = read_stack::<u64>(rsp)?;
        context.gpr[RSP] = rsp.checked_add(8).ok_or(UnwindError::BadUnwindInfo(function.unwind_data))?;
    }
    let handler = if in_prolog || info.flags & UNW_FLAG_CHAININFO != 0 || info.flags & wanted == 0 {
        None
    } else {
        let handler_at = info.codes_rva + info.code_count.div_ceil(2) * 4;
        let routine = image.u32_at(handler_at).ok_or(UnwindError::BadUnwindInfo(function.unwind_data))?;
        // The handler must be code of this image; its data (a scope table's count, for
        // __C_specific_handler) must at least start inside it. A handler reads the rest itself.
        if !image.executable(routine) || !image.holds(handler_at + 4, 4) {
            return Err(UnwindError::BadHandler { unwind: function.unwind_data, handler: routine });
        }
        Some(Handler { routine: image.base + routine as usize, data: image.base + handler_at + 4 })
    };
    Ok(Frame { establisher, handler })
}

fn set_fpreg_offset(image: &Image, info: &Info) -> Option<u8> {
    let mut index = 0;
    while index < info.code_count {
        let at = info.codes_rva + index * 2;
        let op_info = image.u8_at(at + 1)?;
        if op_info & 0x0F == 3 {
            return image.u8_at(at);
        }
        index += slots(op_info & 0x0F, op_info >> 4);
    }
    None
}

/// Steps `context` to its caller: through `.pdata` when the PC has an entry, as a leaf (return
/// address at RSP) when it has none.
///
/// # Errors
/// As [`virtual_unwind`].
pub fn step(image: &Image, context: &mut Context, wanted: u8) -> Result<(Frame, Option<RuntimeFunction>), UnwindError> {
    let Some(function) = image.lookup(image.rva(context.rip)) else {
        let rsp = context.gpr[RSP];
        let establisher = rsp;
        context.rip = read_stack::<u64>(rsp)?;
        context.gpr[RSP] = rsp.checked_add(8).ok_or(UnwindError::StackOutOfRange(rsp))?;
        return Ok((Frame { establisher, handler: None }, None));
    };
    virtual_unwind(image, &function, context, wanted).map(|frame| (frame, Some(function)))
}

core::arch::global_asm!(
    // fltemu_restore_context(ctx in RDI): loads a CONTEXT's XMM and integer registers and jumps
    // to its RIP on its RSP (RtlRestoreContext's job). The RIP is parked just below the
    // target RSP, which is dead stack in the Win64 ABI (no red zone).
    ".globl fltemu_restore_context",
    "fltemu_restore_context:",
    "movdqu xmm0, [rdi + 0x1A0]",
    "movdqu xmm1, [rdi + 0x1B0]",
    "movdqu xmm2, [rdi + 0x1C0]",
    "movdqu xmm3, [rdi + 0x1D0]",
    "movdqu xmm4, [rdi + 0x1E0]",
    "movdqu xmm5, [rdi + 0x1F0]",
    "movdqu xmm6, [rdi + 0x200]",
    "movdqu xmm7, [rdi + 0x210]",
    "movdqu xmm8, [rdi + 0x220]",
    "movdqu xmm9, [rdi + 0x230]",
    "movdqu xmm10, [rdi + 0x240]",
    "movdqu xmm11, [rdi + 0x250]",
    "movdqu xmm12, [rdi + 0x260]",
    "movdqu xmm13, [rdi + 0x270]",
    "movdqu xmm14, [rdi + 0x280]",
    "movdqu xmm15, [rdi + 0x290]",
    "ldmxcsr [rdi + 0x34]",
    "mov rdx, [rdi + 0x98]",
    "mov rax, [rdi + 0xF8]",
    "sub rdx, 8",
    "mov [rdx], rax",
    "mov rsp, rdx",
    "mov rax, [rdi + 0x78]",
    "mov rcx, [rdi + 0x80]",
    "mov rdx, [rdi + 0x88]",
    "mov rbx, [rdi + 0x90]",
    "mov rbp, [rdi + 0xA0]",
    "mov rsi, [rdi + 0xA8]",
    "mov r8, [rdi + 0xB8]",
    "mov r9, [rdi + 0xC0]",
    "mov r10, [rdi + 0xC8]",
    "mov r11, [rdi + 0xD0]",
    "mov r12, [rdi + 0xD8]",
    "mov r13, [rdi + 0xE0]",
    "mov r14, [rdi + 0xE8]",
    "mov r15, [rdi + 0xF0]",
    "cld",
    "mov rdi, [rdi + 0xB0]",
    "ret",
);

unsafe extern "sysv64" {
    fn fltemu_restore_context(context: *const Context) -> !;
}

/// Continues execution in `context` (never returns). The frames between here and the target
/// are abandoned, as RtlRestoreContext abandons the dispatcher's.
pub fn restore(context: &Context) -> ! {
    // SAFETY: the context describes a frame of the driver thread's stack above this one, built
    // by capture or virtual unwind; the code below it is abandoned, holding no locks.
    unsafe { fltemu_restore_context(context) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake image: headers with an exception directory, `.pdata`, unwind infos and code.
    struct Fake {
        bytes: Vec<u64>,
    }

    const PDATA: usize = 0x400;
    const XDATA: usize = 0x600;
    const SIZE: usize = 0x2000;

    impl Fake {
        fn new() -> Self {
            let mut fake = Self { bytes: vec![0; SIZE / 8] };
            fake.put32(0x3C, 0x80);
            fake.put32(0x80 + 24 + 108, 16);
            // One section, .text at 0x1000..0x1800 (code, executable), after a 0xF0-byte optional
            // header: the handlers the tests name must lie in it.
            fake.put(0x80 + 6, &[1, 0]);
            fake.put(0x80 + 20, &[0xF0, 0]);
            let section = 0x80 + 24 + 0xF0;
            fake.put32(section + 8, 0x800);
            fake.put32(section + 12, 0x1000);
            fake.put32(section + 36, 0x6000_0020);
            // Code bytes default to int3, which no epilog starts with.
            for at in 0x1000..0x1800 {
                fake.put8(at, 0xCC);
            }
            fake
        }
        fn base(&self) -> usize {
            self.bytes.as_ptr() as usize
        }
        fn image(&self) -> Image {
            Image { base: self.base(), size: SIZE }
        }
        fn bytes_mut(&mut self) -> &mut [u8] {
            // SAFETY: a Vec<u64> viewed as its bytes; u8 has no alignment or validity needs.
            unsafe { core::slice::from_raw_parts_mut(self.bytes.as_mut_ptr().cast::<u8>(), SIZE) }
        }
        fn put8(&mut self, at: usize, value: u8) {
            self.bytes_mut()[at] = value;
        }
        fn put32(&mut self, at: usize, value: u32) {
            self.bytes_mut()[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
        fn put(&mut self, at: usize, data: &[u8]) {
            self.bytes_mut()[at..at + data.len()].copy_from_slice(data);
        }
        /// Writes the `.pdata` table (sorted) and its directory entry.
        fn functions(&mut self, entries: &[(u32, u32, u32)]) {
            for (index, (begin, end, unwind)) in entries.iter().enumerate() {
                self.put32(PDATA + index * 12, *begin);
                self.put32(PDATA + index * 12 + 4, *end);
                self.put32(PDATA + index * 12 + 8, *unwind);
            }
            self.put32(0x80 + 24 + 112 + 3 * 8, PDATA as u32);
            #[allow(clippy::cast_possible_truncation)]
            self.put32(0x80 + 24 + 112 + 3 * 8 + 4, (entries.len() * 12) as u32);
        }
    }

    /// A context at `rva` of the fake image with RSP and RBP set, the rest zero.
    fn context_at(fake: &Fake, rva: usize, rsp: u64, rbp: u64) -> Context {
        let mut context = Context::zeroed();
        context.rip = (fake.base() + rva) as u64;
        context.gpr[RSP] = rsp;
        context.gpr[5] = rbp;
        context
    }

    fn stack() -> Vec<u64> {
        vec![0; 64]
    }

    /// push rbp; push rsi; sub rsp, 0x28; lea rbp, [rsp + 0x20] — with a handler.
    fn framed_function(fake: &mut Fake) {
        let flags = UNW_FLAG_EHANDLER << 3;
        fake.put(XDATA, &[1 | flags, 11, 4, 0x25, 11, 0x03, 6, 0x42, 2, 0x60, 1, 0x50]);
        fake.put32(XDATA + 12, 0x1700);
        fake.put32(XDATA + 16, 0xABCD);
    }

    #[test]
    fn a_framed_function_body_restores_pushes_and_finds_its_handler() {
        let mut fake = Fake::new();
        framed_function(&mut fake);
        fake.functions(&[(0x1000, 0x1100, XDATA as u32)]);
        let mut stack = stack();
        let s = &raw mut stack[16] as u64;
        stack[16 + 5] = 0x5151; // saved rsi at S + 0x28
        stack[16 + 6] = 0xB0B0; // saved rbp at S + 0x30
        stack[16 + 7] = 0x7777; // return address at S + 0x38
        let image = fake.image();
        let mut context = context_at(&fake, 0x1050, s, s + 0x20);
        let function = image.lookup(0x1050).expect("covered by .pdata");
        let frame = virtual_unwind(&image, &function, &mut context, UNW_FLAG_EHANDLER).unwrap();
        assert_eq!(frame.establisher, s, "frame register minus 16 x offset");
        assert_eq!((context.gpr[6], context.gpr[5], context.rip, context.gpr[RSP]), (0x5151, 0xB0B0, 0x7777, s + 0x40));
        let handler = frame.handler.expect("EHANDLER in the body");
        assert_eq!(handler.routine, fake.base() + 0x1700);
        assert_eq!(handler.data, fake.base() + XDATA + 16);
        // SAFETY: the handler data lies inside the fake image.
        assert_eq!(unsafe { (handler.data as *const u32).read_unaligned() }, 0xABCD);
    }

    #[test]
    fn inside_the_prolog_only_executed_codes_are_undone_and_no_handler_runs() {
        let mut fake = Fake::new();
        framed_function(&mut fake);
        fake.functions(&[(0x1000, 0x1100, XDATA as u32)]);
        let mut stack = stack();
        let t = &raw mut stack[8] as u64;
        stack[8] = 0x5151; // rsi pushed last
        stack[9] = 0xB0B0;
        stack[10] = 0x7777;
        let image = fake.image();
        let mut context = context_at(&fake, 0x1002, t, 0xDEAD); // after both pushes, before sub rsp
        let function = image.lookup(0x1002).unwrap();
        let frame = virtual_unwind(&image, &function, &mut context, UNW_FLAG_EHANDLER).unwrap();
        assert_eq!(frame.establisher, t, "before SET_FPREG the establisher is RSP");
        assert_eq!(frame.handler, None);
        assert_eq!((context.gpr[6], context.gpr[5], context.rip, context.gpr[RSP]), (0x5151, 0xB0B0, 0x7777, t + 24));
    }

    #[test]
    fn an_epilog_is_simulated_forward() {
        let mut fake = Fake::new();
        framed_function(&mut fake);
        fake.functions(&[(0x1000, 0x1100, XDATA as u32)]);
        // add rsp, 0x28; pop rsi; pop rbp; ret
        fake.put(0x1080, &[0x48, 0x83, 0xC4, 0x28, 0x5E, 0x5D, 0xC3]);
        let mut stack = stack();
        let s = &raw mut stack[16] as u64;
        stack[16 + 5] = 0x5151;
        stack[16 + 6] = 0xB0B0;
        stack[16 + 7] = 0x7777;
        let image = fake.image();
        let mut context = context_at(&fake, 0x1080, s, s + 0x20);
        let function = image.lookup(0x1080).unwrap();
        let frame = virtual_unwind(&image, &function, &mut context, UNW_FLAG_EHANDLER).unwrap();
        assert_eq!(frame.handler, None, "no handler runs for a frame in its epilog");
        assert_eq!((context.gpr[6], context.gpr[5], context.rip, context.gpr[RSP]), (0x5151, 0xB0B0, 0x7777, s + 0x40));
    }

    #[test]
    fn chained_info_save_nonvol_alloc_large_and_xmm_saves() {
        let mut fake = Fake::new();
        // Parent: sub rsp, 0x100 (ALLOC_LARGE info 0: size / 8 in the next slot) after push r12.
        let parent = XDATA + 0x100;
        fake.put(parent, &[1, 9, 3, 0, 9, 0x01, 0x20, 0x00, 2, 0xC0]);
        // Chained child: SAVE_NONVOL rbx at frame + 2 x 8, SAVE_XMM128 xmm6 at frame + 3 x 16.
        let child = XDATA;
        fake.put(child, &[1 | (4 << 3), 0, 4, 0, 0, 0x34, 2, 0, 0, 0x68, 3, 0]);
        fake.put32(child + 4 + 8, 0x1200);
        fake.put32(child + 4 + 12, 0x1300);
        #[allow(clippy::cast_possible_truncation)]
        fake.put32(child + 4 + 16, parent as u32);
        fake.functions(&[(0x1200, 0x1300, parent as u32), (0x1300, 0x1400, child as u32)]);
        let mut stack = vec![0u64; 0x120 / 8 + 2];
        let first = stack.as_ptr() as u64;
        let skip = usize::from(!first.is_multiple_of(16));
        let u = first + skip as u64 * 8;
        for (offset, value) in [(16, 0xB8B8), (48, 0x6666), (56, 0x6667), (0x100, 0x1212), (0x108, 0x7777)] {
            stack[skip + offset / 8] = value;
        }
        let image = fake.image();
        let mut context = Context::zeroed();
        context.rip = (fake.base() + 0x1310) as u64;
        context.gpr[RSP] = u;
        let function = image.lookup(0x1310).unwrap();
        let frame = virtual_unwind(&image, &function, &mut context, UNW_FLAG_EHANDLER).unwrap();
        assert_eq!(frame.establisher, u);
        assert_eq!(context.gpr[3], 0xB8B8, "rbx from SAVE_NONVOL");
        assert_eq!(context.xmm[6], 0x6667_u128 << 64 | 0x6666, "xmm6 from SAVE_XMM128");
        assert_eq!(context.gpr[12], 0x1212, "r12 from the chained parent's PUSH_NONVOL");
        assert_eq!((context.rip, context.gpr[RSP]), (0x7777, u + 0x110));
    }

    #[test]
    fn context_pointers_name_the_slots_registers_came_from_and_rep_ret_is_an_epilog() {
        let mut fake = Fake::new();
        framed_function(&mut fake);
        fake.functions(&[(0x1000, 0x1100, XDATA as u32)]);
        let mut stack = stack();
        let s = &raw mut stack[16] as u64;
        stack[16 + 5] = 0x5151;
        stack[16 + 6] = 0xB0B0;
        stack[16 + 7] = 0x7777;
        let image = fake.image();
        let mut context = context_at(&fake, 0x1050, s, s + 0x20);
        let function = image.lookup(0x1050).unwrap();
        assert_eq!(image.entry_at(function.entry_address), Some(function));
        assert_eq!(image.entry_at(function.entry_address + 4), None, "not the start of an entry");
        let mut pointers = ContextPointers::default();
        virtual_unwind_recording(&image, &function, &mut context, 0, &mut pointers).unwrap();
        assert_eq!((pointers.integer[6], pointers.integer[5]), (s + 0x28, s + 0x30), "rsi and rbp slots");
        assert_eq!(pointers.integer.iter().filter(|p| **p != 0).count(), 2);
        // add rsp, 0x28; pop rsi; pop rbp; rep ret
        fake.put(0x1080, &[0x48, 0x83, 0xC4, 0x28, 0x5E, 0x5D, 0xF3, 0xC3]);
        let mut context = context_at(&fake, 0x1080, s, s + 0x20);
        let mut pointers = ContextPointers::default();
        let frame = virtual_unwind_recording(&image, &function, &mut context, UNW_FLAG_EHANDLER, &mut pointers).unwrap();
        assert_eq!(frame.handler, None);
        assert_eq!((context.rip, context.gpr[RSP], pointers.integer[6]), (0x7777, s + 0x40, s + 0x28));
    }

    #[test]
    fn a_function_without_pdata_is_a_leaf() {
        let mut fake = Fake::new();
        fake.functions(&[(0x1000, 0x1010, XDATA as u32)]);
        let mut stack = stack();
        let t = &raw mut stack[4] as u64;
        stack[4] = 0x4242;
        let image = fake.image();
        let mut context = Context::zeroed();
        context.rip = (fake.base() + 0x1500) as u64;
        context.gpr[RSP] = t;
        let (frame, function) = step(&image, &mut context, UNW_FLAG_EHANDLER).unwrap();
        assert_eq!(function, None);
        assert_eq!((frame.establisher, context.rip, context.gpr[RSP]), (t, 0x4242, t + 8));
    }

    #[test]
    fn a_handler_outside_the_executable_sections_is_refused() {
        for handler in [0x0600, 0x1800, 0x1FFF, 0xFFFF_FFF0] {
            let mut fake = Fake::new();
            framed_function(&mut fake);
            fake.put32(XDATA + 12, handler);
            fake.functions(&[(0x1000, 0x1100, XDATA as u32)]);
            let mut stack = stack();
            let s = &raw mut stack[16] as u64;
            let image = fake.image();
            let mut context = context_at(&fake, 0x1050, s, s + 0x20);
            let function = image.lookup(0x1050).unwrap();
            assert_eq!(
                virtual_unwind(&image, &function, &mut context, UNW_FLAG_EHANDLER),
                Err(UnwindError::BadHandler { unwind: XDATA as u32, handler }),
                "{handler:#x}"
            );
        }
    }

    #[test]
    fn a_handler_in_a_code_section_without_execute_rights_is_refused() {
        // IMAGE_SCN_CNT_CODE alone: the loader maps the section without PROT_EXEC, so a handler
        // there would fault when called.
        let mut fake = Fake::new();
        fake.put32(0x80 + 24 + 0xF0 + 36, 0x4000_0020);
        framed_function(&mut fake);
        fake.put32(XDATA + 12, 0x1400);
        fake.functions(&[(0x1000, 0x1100, XDATA as u32)]);
        let mut stack = stack();
        let s = &raw mut stack[16] as u64;
        let image = fake.image();
        let mut context = context_at(&fake, 0x1050, s, s + 0x20);
        let function = image.lookup(0x1050).unwrap();
        assert_eq!(
            virtual_unwind(&image, &function, &mut context, UNW_FLAG_EHANDLER),
            Err(UnwindError::BadHandler { unwind: XDATA as u32, handler: 0x1400 })
        );
    }

    #[test]
    fn unwind_info_and_chains_reaching_past_the_image_are_refused() {
        let mut fake = Fake::new();
        // Unwind info 2 bytes before the end: its header does not fit.
        fake.functions(&[(0x1000, 0x1010, (SIZE - 2) as u32)]);
        let image = fake.image();
        let mut context = Context::zeroed();
        context.rip = (fake.base() + 0x1004) as u64;
        let function = image.lookup(0x1004).unwrap();
        assert_eq!(virtual_unwind(&image, &function, &mut context, 0), Err(UnwindError::BadUnwindInfo((SIZE - 2) as u32)));
        // Chained info whose parent RVA is far outside the image.
        let mut fake = Fake::new();
        fake.put(XDATA, &[1 | (4 << 3), 0, 0, 0]);
        fake.put32(XDATA + 4 + 8, 0xFFFF_FF00);
        fake.functions(&[(0x1000, 0x1010, XDATA as u32)]);
        let mut stack = stack();
        let image = fake.image();
        let mut context = Context::zeroed();
        context.rip = (fake.base() + 0x1004) as u64;
        context.gpr[RSP] = &raw mut stack[4] as u64;
        let function = image.lookup(0x1004).unwrap();
        assert_eq!(virtual_unwind(&image, &function, &mut context, 0), Err(UnwindError::BadUnwindInfo(0xFFFF_FF00)));
        assert!(!image.executable(0x0600) && image.executable(0x1000) && !image.executable(0x1800));
        assert!(!image.holds(usize::MAX - 1, 4), "an RVA near usize::MAX does not wrap into the image");
    }

    #[test]
    fn stack_arithmetic_that_overflows_is_corrupt_unwind_data() {
        // ALLOC_LARGE (info 1, 32-bit size 0xFFFF_FFF8) on an RSP near the top of the address space.
        let mut fake = Fake::new();
        fake.put(XDATA, &[1, 4, 3, 0, 4, 0x11, 0xF8, 0xFF, 0xFF, 0xFF]);
        fake.functions(&[(0x1000, 0x1010, XDATA as u32)]);
        let image = fake.image();
        let mut context = Context::zeroed();
        context.rip = (fake.base() + 0x1008) as u64;
        context.gpr[RSP] = u64::MAX - 0x10;
        let function = image.lookup(0x1008).unwrap();
        assert_eq!(virtual_unwind(&image, &function, &mut context, 0), Err(UnwindError::BadUnwindInfo(XDATA as u32)));
        // SET_FPREG with frame offset 16 x 2 on a frame register of 8: the subtraction underflows.
        let mut fake = Fake::new();
        fake.put(XDATA, &[1, 4, 1, 0x25, 4, 0x03]);
        fake.functions(&[(0x1000, 0x1010, XDATA as u32)]);
        let image = fake.image();
        let mut context = Context::zeroed();
        context.rip = (fake.base() + 0x1008) as u64;
        context.gpr[5] = 8;
        let function = image.lookup(0x1008).unwrap();
        assert_eq!(virtual_unwind(&image, &function, &mut context, 0), Err(UnwindError::BadUnwindInfo(XDATA as u32)));
    }

    #[test]
    fn stack_reads_outside_the_recorded_thread_stack_are_refused() {
        let mut fake = Fake::new();
        // SAVE_NONVOL rbx at frame + 0xFFFF x 8: far past the stack buffer.
        fake.put(XDATA, &[1, 4, 2, 0, 4, 0x34, 0xFF, 0xFF]);
        fake.functions(&[(0x1000, 0x1010, XDATA as u32)]);
        let stack = stack();
        let low = stack.as_ptr() as usize;
        set_thread_stack(low, low + stack.len() * 8);
        let image = fake.image();
        let mut context = Context::zeroed();
        context.rip = (fake.base() + 0x1008) as u64;
        context.gpr[RSP] = low as u64;
        let function = image.lookup(0x1008).unwrap();
        let result = virtual_unwind(&image, &function, &mut context, 0);
        // A leaf step whose RSP is past the stack's end is refused as well.
        let mut leaf = Context::zeroed();
        leaf.rip = (fake.base() + 0x1500) as u64;
        leaf.gpr[RSP] = (low + stack.len() * 8 - 4) as u64;
        let leaf_result = step(&image, &mut leaf, 0).map(|_| ());
        set_thread_stack(0, 0);
        assert_eq!(result, Err(UnwindError::StackOutOfRange(low as u64 + 0xFFFF * 8)));
        assert_eq!(leaf_result, Err(UnwindError::StackOutOfRange((low + stack.len() * 8 - 4) as u64)));
    }

    #[test]
    fn undefined_operation_info_and_a_set_fpreg_without_frame_register_are_refused() {
        // (UNWIND_INFO bytes, what is wrong): ALLOC_LARGE info 2, PUSH_MACHFRAME info 2,
        // SET_FPREG with FrameRegister 0.
        let cases: [(&[u8], &str); 3] = [
            (&[1, 4, 2, 0, 4, 0x21, 0x10, 0x00], "ALLOC_LARGE with operation info 2"),
            (&[1, 4, 1, 0, 4, 0x2A, 0, 0], "PUSH_MACHFRAME with operation info 2"),
            (&[1, 4, 1, 0, 4, 0x03, 0, 0], "SET_FPREG with FrameRegister 0"),
        ];
        for (info, what) in cases {
            let mut fake = Fake::new();
            fake.put(XDATA, info);
            fake.functions(&[(0x1000, 0x1100, XDATA as u32)]);
            let mut stack = stack();
            let image = fake.image();
            let mut context = Context::zeroed();
            context.rip = (fake.base() + 0x1050) as u64;
            context.gpr[RSP] = &raw mut stack[16] as u64;
            let function = image.lookup(0x1050).unwrap();
            assert_eq!(
                virtual_unwind(&image, &function, &mut context, UNW_FLAG_EHANDLER),
                Err(UnwindError::BadUnwindInfo(XDATA as u32)),
                "{what}"
            );
        }
    }

    #[test]
    fn unknown_versions_and_codes_are_refused() {
        let mut fake = Fake::new();
        fake.put(XDATA, &[3, 0, 0, 0]);
        fake.functions(&[(0x1000, 0x1010, XDATA as u32)]);
        let image = fake.image();
        let mut context = Context::zeroed();
        context.rip = (fake.base() + 0x1004) as u64;
        let function = image.lookup(0x1004).unwrap();
        assert_eq!(virtual_unwind(&image, &function, &mut context, 0), Err(UnwindError::BadUnwindInfo(XDATA as u32)));
    }
}
