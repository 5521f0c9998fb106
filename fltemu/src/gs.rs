//! /GS and stack probing: the loader's security-cookie initialisation and `__chkstk`.
//!
//! Sources: PE format "Load Configuration Structure (Image Only)" (SecurityCookie: the VA of
//! the cookie, which the loader sets); learn.microsoft.com "/GS (Buffer Security Check)" (the
//! cookie is a random value chosen at load; the x64 default a /GS image carries is
//! 0x00002B992DDFA232, and the upper 16 bits of an x64 cookie are zero); "__chkstk Routine"
//! and "x64 prolog and epilog" (a frame larger than a page calls __chkstk with the size in RAX
//! before `sub rsp, rax`; it probes each page and preserves every register but R10, R11 and
//! the flags). With clang/lld the call is a direct `call __chkstk`, which lld-link binds to the
//! ntoskrnl.exe import (a jump through the IAT), so fltemu provides it as an ntoskrnl export.

use crate::exec;
use crate::unwind::Image;

/// The x64 default cookie value of a /GS image before the loader initialises it.
pub const DEFAULT_SECURITY_COOKIE: u64 = 0x0000_2B99_2DDF_A232;
/// `DRIVER_OVERRAN_STACK_BUFFER`, what the /GS runtime bug-checks with.
pub const DRIVER_OVERRAN_STACK_BUFFER: u32 = 0xF7;
/// `IMAGE_DIRECTORY_ENTRY_LOAD_CONFIG`.
const LOAD_CONFIG_DIRECTORY: usize = 10;
/// Offset of SecurityCookie in IMAGE_LOAD_CONFIG_DIRECTORY64.
const SECURITY_COOKIE_OFFSET: usize = 0x58;

/// What the loader did with the image's cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cookie {
    /// No load-config directory, or one too small to hold SecurityCookie, or SecurityCookie 0:
    /// the image does not use /GS.
    None,
    /// The cookie at this address was replaced by a random value.
    Initialised {
        /// Where the cookie lives.
        address: usize,
        /// The new value.
        value: u64,
    },
    /// SecurityCookie points outside the image or is misaligned; left alone.
    Invalid(u64),
}

fn random_cookie() -> u64 {
    let mut bytes = [0u8; 8];
    loop {
        // SAFETY: getrandom writes at most 8 bytes into the local buffer.
        let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        let value = if got == 8 {
            u64::from_le_bytes(bytes)
        } else {
            // Fallback without entropy: the clock and the stack address.
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            #[allow(clippy::cast_possible_truncation)]
            let mixed = (now as u64) ^ (&raw const bytes as u64).rotate_left(29);
            mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        } & 0x0000_FFFF_FFFF_FFFF;
        if value != 0 && value != DEFAULT_SECURITY_COOKIE {
            return value;
        }
    }
}

/// Initialises the image's /GS cookie from its load-config directory, as the kernel loader
/// does before DriverEntry. Called on the mapped, relocated image (the cookie's page is
/// writable data).
#[must_use]
pub fn initialise_cookie(base: usize, size: usize) -> Cookie {
    let image = Image { base, size };
    let Some((rva, length)) = image.directory(LOAD_CONFIG_DIRECTORY) else { return Cookie::None };
    let (rva, length) = (rva as usize, length as usize);
    if rva == 0 || length < SECURITY_COOKIE_OFFSET + 8 || rva + SECURITY_COOKIE_OFFSET + 8 > size {
        return Cookie::None;
    }
    // SAFETY: the directory lies inside the mapped image (checked above); headers and data
    // sections are readable.
    let declared_size = unsafe { ((base + rva) as *const u32).read_unaligned() } as usize;
    if declared_size < SECURITY_COOKIE_OFFSET + 8 {
        return Cookie::None;
    }
    // SAFETY: as above.
    let cookie_va = unsafe { ((base + rva + SECURITY_COOKIE_OFFSET) as *const u64).read_unaligned() };
    if cookie_va == 0 {
        return Cookie::None;
    }
    if !image.contains(cookie_va) || !cookie_va.is_multiple_of(8) || !image.contains(cookie_va + 7) {
        return Cookie::Invalid(cookie_va);
    }
    #[allow(clippy::cast_possible_truncation)]
    let address = cookie_va as usize;
    let value = random_cookie();
    // Only a writable section can hold it; mprotect answers without faulting if it is not.
    let page = address & !0xFFF;
    // SAFETY: querying/adding write permission on a page of our own image mapping is harmless;
    // a read-only cookie section is an invalid image, reported below.
    let writable = unsafe { libc::mprotect(page as *mut libc::c_void, 4096, libc::PROT_READ | libc::PROT_WRITE) } == 0;
    if !writable {
        return Cookie::Invalid(cookie_va);
    }
    // SAFETY: the cookie lies inside the image on a page that is now writable.
    unsafe { (address as *mut u64).write(value) };
    Cookie::Initialised { address, value }
}

/// Called by the `__chkstk` thunk with the RSP the frame will have: checks it against the
/// 24 KiB kernel stack (a frame that would pass it is a StackTooDeep violation, as the kernel
/// would run off its stack).
extern "win64" fn chkstk_check(new_rsp: usize) {
    let top = exec::stack_top();
    if top == 0 {
        return;
    }
    let depth = top.saturating_sub(new_rsp);
    if depth > exec::KERNEL_STACK_SIZE
        && let Some(inner) = crate::state::current()
    {
        inner.violation(crate::verifier::Violation::StackTooDeep { bytes: depth, function: "__chkstk", limit: exec::KERNEL_STACK_SIZE });
    }
}

core::arch::global_asm!(
    // __chkstk: RAX = bytes the caller will subtract from RSP. Saves the argument registers
    // (the caller is in its prolog: RCX, RDX, R8, R9 and XMM0-XMM5 hold its arguments), lets
    // fltemu check the depth, then probes every page from the caller's RSP down, as the real
    // routine does, and returns with RAX unchanged.
    ".globl fltemu_chkstk",
    "fltemu_chkstk:",
    "push rax",
    "push rcx",
    "push rdx",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push rbx",
    // The prolog may call with either RSP alignment: realign for the Win64 call.
    "mov rbx, rsp",
    "and rsp, -16",
    "sub rsp, 0x80",
    "movdqu [rsp + 0x20], xmm0",
    "movdqu [rsp + 0x30], xmm1",
    "movdqu [rsp + 0x40], xmm2",
    "movdqu [rsp + 0x50], xmm3",
    "movdqu [rsp + 0x60], xmm4",
    "movdqu [rsp + 0x70], xmm5",
    // The caller's RSP at the call: 8 pushes and the return address above RBX.
    "lea rcx, [rbx + 0x48]",
    "sub rcx, rax",
    "call {check}",
    "movdqu xmm0, [rsp + 0x20]",
    "movdqu xmm1, [rsp + 0x30]",
    "movdqu xmm2, [rsp + 0x40]",
    "movdqu xmm3, [rsp + 0x50]",
    "movdqu xmm4, [rsp + 0x60]",
    "movdqu xmm5, [rsp + 0x70]",
    "mov rsp, rbx",
    "pop rbx",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdx",
    "pop rcx",
    "pop rax",
    // Probe: R10 walks down a page at a time from the caller's RSP to RSP - RAX.
    "lea r10, [rsp + 8]",
    "mov r11, r10",
    "sub r11, rax",
    "2:",
    "sub r10, 0x1000",
    "cmp r10, r11",
    "jb 3f",
    "test [r10], r10",
    "jmp 2b",
    "3:",
    "test [r11], r11",
    "ret",
    check = sym chkstk_check,
);

unsafe extern "C" {
    fn fltemu_chkstk();
}

/// The resolver for the /GS and stack exports.
pub fn resolve(name: &str) -> Option<usize> {
    match name {
        "__chkstk" => Some(fltemu_chkstk as *const () as usize),
        _ => None,
    }
}

/// The stack exports (ntoskrnl.exe).
pub const EXPORTS: &[&str] = &["__chkstk"];
