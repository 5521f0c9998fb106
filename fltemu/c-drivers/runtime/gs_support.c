/*
 * gs_support.c: the /GS runtime a kernel driver normally takes from MSVC's BufferOverflowK.lib,
 * written for fltemu's C fixtures from the documented behaviour:
 *   - learn.microsoft.com "/GS (Buffer Security Check)": the cookie lives in __security_cookie,
 *     each protected frame stores it XORed with the frame address, the epilog calls
 *     __security_check_cookie, a mismatch ends the process (here: bug check 0xF7);
 *   - "Bug Check 0xF7 DRIVER_OVERRAN_STACK_BUFFER": parameters are the cookie found, the
 *     expected cookie, its complement, 0;
 *   - PE format "Load Configuration Structure (Image Only)": SecurityCookie is the VA of the
 *     cookie the loader initialises, so the image carries _load_config_used (lld-link points the
 *     load-config directory at that symbol, as link.exe does).
 * This file must be compiled without /GS (-fno-stack-protector): it is the check itself. It is
 * compiled with the driver's defines, so a fixture can ask for the BUG_COOKIE_READ_ONLY image.
 */
#include "fltemu_km.h"

/* The value link.exe-era images carry until the loader replaces it (x64 default cookie). */
#define DEFAULT_SECURITY_COOKIE 0x00002B992DDFA232ULL
#define DRIVER_OVERRAN_STACK_BUFFER 0xF7

ULONG_PTR __security_cookie = DEFAULT_SECURITY_COOKIE;
ULONG_PTR __security_cookie_complement = ~DEFAULT_SECURITY_COOKIE;

__declspec(noreturn) void __report_gsfailure(ULONG_PTR stack_cookie);

__declspec(noreturn) void __report_gsfailure(ULONG_PTR stack_cookie)
{
    KeBugCheckEx(DRIVER_OVERRAN_STACK_BUFFER, stack_cookie, __security_cookie, ~__security_cookie, 0);
}

/* Called by every /GS epilog with the frame's cookie XORed back (the compiler's contract). */
void __security_check_cookie(ULONG_PTR cookie);
void __security_check_cookie(ULONG_PTR cookie)
{
    if (cookie != __security_cookie) {
        __report_gsfailure(cookie);
    }
}

/* ---- __GSHandlerCheck ----------------------------------------------------------------------
 * The language handler link.exe/MSVC attaches to a /GS frame that has no other handler; it
 * checks the frame's cookie before the frame takes part in exception dispatch (x64 exception
 * handling: "Language-specific handler" receives the DISPATCHER_CONTEXT; the GS handler data is
 * a ULONG cookie offset whose low 3 bits are flags, then an optional aligned-frame offset and
 * alignment). clang does not emit it, but an image built against BufferOverflowK.lib has it. */
/* RUNTIME_FUNCTION comes from fltemu_km.h. */
typedef struct _DISPATCHER_CONTEXT {
    ULONG64 ControlPc;
    ULONG64 ImageBase;
    PRUNTIME_FUNCTION FunctionEntry;
    ULONG64 EstablisherFrame;
    ULONG64 TargetIp;
    PVOID ContextRecord;
    PVOID LanguageHandler;
    PVOID HandlerData;
    PVOID HistoryTable;
    ULONG ScopeIndex;
    ULONG Fill0;
} DISPATCHER_CONTEXT, *PDISPATCHER_CONTEXT;

#define GS_HAS_ALIGNMENT 0x4
#define GS_FLAG_MASK 0x7
#define EXCEPTION_CONTINUE_SEARCH_DISPOSITION 1 /* ExceptionContinueSearch */

typedef struct _GS_HANDLER_DATA {
    ULONG CookieOffset;
    LONG AlignedBaseOffset;
    LONG Alignment;
} GS_HANDLER_DATA;

int __GSHandlerCheck(PVOID ExceptionRecord, PVOID EstablisherFrame, PVOID ContextRecord, PDISPATCHER_CONTEXT DispatcherContext);
int __GSHandlerCheck(PVOID ExceptionRecord, PVOID EstablisherFrame, PVOID ContextRecord, PDISPATCHER_CONTEXT DispatcherContext)
{
    UNREFERENCED_PARAMETER(ExceptionRecord);
    UNREFERENCED_PARAMETER(ContextRecord);
    const GS_HANDLER_DATA *data = (const GS_HANDLER_DATA *)DispatcherContext->HandlerData;
    const UCHAR *unwind_info = (const UCHAR *)(DispatcherContext->ImageBase + DispatcherContext->FunctionEntry->UnwindData);
    ULONG_PTR frame = (ULONG_PTR)EstablisherFrame;
    /* The establisher frame is the frame register minus its offset when there is one; the
     * cookie was XORed with that register's value. */
    if ((unwind_info[3] & 0x0F) != 0) {
        frame += (ULONG_PTR)(unwind_info[3] >> 4) * 16;
    }
    if (data->CookieOffset & GS_HAS_ALIGNMENT) {
        frame = (frame + (ULONG_PTR)(LONG_PTR)data->AlignedBaseOffset) & ~(ULONG_PTR)((LONG_PTR)data->Alignment - 1);
    }
    ULONG_PTR stored = *(const ULONG_PTR *)(frame + (data->CookieOffset & ~(ULONG)GS_FLAG_MASK));
    __security_check_cookie(stored ^ frame);
    return EXCEPTION_CONTINUE_SEARCH_DISPOSITION;
}

/* ---- the load configuration directory (PE format, IMAGE_LOAD_CONFIG_DIRECTORY64) ----------
 * Laid out to the SEHandlerCount field (112 bytes), the part a /GS image needs; lld-link
 * records it as the load-config directory when a symbol named _load_config_used exists. */
typedef struct _IMAGE_LOAD_CONFIG_DIRECTORY64 {
    ULONG Size;
    ULONG TimeDateStamp;
    USHORT MajorVersion;
    USHORT MinorVersion;
    ULONG GlobalFlagsClear;
    ULONG GlobalFlagsSet;
    ULONG CriticalSectionDefaultTimeout;
    ULONGLONG DeCommitFreeBlockThreshold;
    ULONGLONG DeCommitTotalFreeThreshold;
    ULONGLONG LockPrefixTable;
    ULONGLONG MaximumAllocationSize;
    ULONGLONG VirtualMemoryThreshold;
    ULONGLONG ProcessAffinityMask;
    ULONG ProcessHeapFlags;
    USHORT CSDVersion;
    USHORT DependentLoadFlags;
    ULONGLONG EditList;
    ULONGLONG SecurityCookie;
    ULONGLONG SEHandlerTable;
    ULONGLONG SEHandlerCount;
} IMAGE_LOAD_CONFIG_DIRECTORY64;
_Static_assert(FIELD_OFFSET(IMAGE_LOAD_CONFIG_DIRECTORY64, SecurityCookie) == 0x58, "SecurityCookie offset (PE format)");

#if defined(BUG_COOKIE_READ_ONLY)
/* A broken image: SecurityCookie names a constant in a read-only section. */
static const ULONG_PTR read_only_cookie = DEFAULT_SECURITY_COOKIE;
#define COOKIE_ADDRESS (&read_only_cookie)
#else
#define COOKIE_ADDRESS (&__security_cookie)
#endif

const IMAGE_LOAD_CONFIG_DIRECTORY64 _load_config_used = {
    .Size = sizeof(IMAGE_LOAD_CONFIG_DIRECTORY64),
    .SecurityCookie = (ULONGLONG)COOKIE_ADDRESS,
};
