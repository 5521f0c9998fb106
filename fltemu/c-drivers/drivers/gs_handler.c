/*
 * gs_handler.c: proves the /GS runtime's __GSHandlerCheck the way an MSVC image uses it: a
 * frame whose only language handler is __GSHandlerCheck (what link.exe attaches to a /GS frame
 * without its own handler) takes part in dispatch of an exception raised below it; the handler
 * checks that frame's cookie before the search goes on to DriverEntry's __except. The frame is
 * written in assembly because clang does not emit __GSHandlerCheck itself. Then the driver
 * registers a filter with no callbacks and unloads like the pass-through.
 *
 * One-bug variant: BUG_GS_HANDLER_COOKIE corrupts the frame's cookie before the raise, so
 * __GSHandlerCheck finds it during dispatch: bug check 0xF7.
 */
#include "fltemu_km.h"

#if defined(BUG_GS_HANDLER_COOKIE)
#define COOKIE_DAMAGE 1
#else
#define COOKIE_DAMAGE 0
#endif

/* gs_protected_raise(status, damage): stores the frame's cookie (XORed with RSP) at RSP+0x40,
 * adds `damage` to it, raises `status`. Unwind data: ALLOC_SMALL 0x48; handler
 * __GSHandlerCheck with GS handler data = cookie offset 0x40. */
VOID gs_protected_raise(NTSTATUS status, ULONG_PTR damage);
__asm__(
    ".intel_syntax noprefix\n"
    ".text\n"
    ".globl gs_protected_raise\n"
    ".def gs_protected_raise; .scl 2; .type 32; .endef\n"
    "gs_protected_raise:\n"
    ".seh_proc gs_protected_raise\n"
    "    sub rsp, 0x48\n"
    ".seh_stackalloc 0x48\n"
    ".seh_endprologue\n"
    "    mov rax, qword ptr [rip + __security_cookie]\n"
    "    xor rax, rsp\n"
    "    add rax, rdx\n"
    "    mov qword ptr [rsp + 0x40], rax\n"
    "    call qword ptr [rip + __imp_ExRaiseStatus]\n"
    "    nop\n"
    "    add rsp, 0x48\n"
    "    ret\n"
    ".seh_handler __GSHandlerCheck, @except\n"
    ".seh_handlerdata\n"
    "    .long 0x40\n"
    ".text\n"
    ".seh_endproc\n"
    ".att_syntax prefix\n");

static PFLT_FILTER g_filter;

static NTSTATUS filter_unload(FLT_FILTER_UNLOAD_FLAGS flags)
{
    UNREFERENCED_PARAMETER(flags);
    FltUnregisterFilter(g_filter);
    return STATUS_SUCCESS;
}

static const FLT_OPERATION_REGISTRATION operations[] = {
    { IRP_MJ_OPERATION_END, 0, NULL, NULL, NULL },
};

static const FLT_REGISTRATION registration = {
    .Size = sizeof(FLT_REGISTRATION),
    .Version = FLT_REGISTRATION_VERSION,
    .OperationRegistration = operations,
    .FilterUnloadCallback = filter_unload,
};

NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path);
NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path)
{
    UNREFERENCED_PARAMETER(registry_path);
    NTSTATUS caught = STATUS_SUCCESS;
    __try {
        gs_protected_raise(STATUS_UNSUCCESSFUL, COOKIE_DAMAGE);
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        caught = GetExceptionCode();
    }
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "gs_handler: caught %#lx past a __GSHandlerCheck frame\n", caught);
    NTSTATUS status = FltRegisterFilter(driver, &registration, &g_filter);
    if (!NT_SUCCESS(status)) {
        return status;
    }
    status = FltStartFiltering(g_filter);
    if (!NT_SUCCESS(status)) {
        FltUnregisterFilter(g_filter);
    }
    return status;
}
