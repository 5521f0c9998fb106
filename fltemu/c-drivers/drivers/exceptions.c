/*
 * exceptions.c: exceptions other than access faults, nested exceptions and the x64 unwind
 * routines, the way an MSVC-built driver meets them. DriverEntry runs each case and prints what
 * it saw (tests/c_exceptions.rs reads the lines), then registers a filter with an instance
 * context type and unloads like the pass-through:
 * - an integer divide by zero and a divide overflow (INT_MIN / -1) caught by __except, with the
 *   exception address on the divide instruction;
 * - ud2 (STATUS_ILLEGAL_INSTRUCTION) and int3 (STATUS_BREAKPOINT, address and context RIP on
 *   the int3, ExceptionInformation[0] = BREAKPOINT_BREAK) caught;
 * - an access violation raised inside a filter expression: dispatched as a nested exception to
 *   the outer __except (EXCEPTION_NESTED_CALL set when that frame's handler runs);
 * - ud2 inside a __finally that runs during an unwind: the new exception reaches the same
 *   __except, the unwind collides and the __finally does not run twice;
 * - the same below a frame whose __except declined the first exception and would accept the
 *   second (h in g in f): the frames the unwind already left are not searched again, so h's
 *   filter is not called for the ud2 and f's __except gets it without EXCEPTION_NESTED_CALL;
 *   and with an __except around that __finally in the same function: its filter is called for
 *   the ud2 (the unwound frame's handler runs again from the scope after the __finally);
 * - RtlCaptureContext + RtlLookupFunctionEntry + RtlVirtualUnwind walking the driver's own
 *   stack up to the caller of DriverEntry (whose PC is not in the image: NULL, ImageBase 0);
 * - RtlUnwindEx from two frames down to a caller, running both __finally blocks, so the call
 *   in the caller returns RtlUnwindEx's ReturnValue;
 * - a divide by zero caught inside a generic work item and inside a context cleanup callback
 *   (run by FltReleaseContext in the unload callback);
 * - a filter that returns EXCEPTION_CONTINUE_EXECUTION for a noncontinuable exception
 *   (ExRaiseStatus): the dispatcher raises STATUS_NONCONTINUABLE_EXCEPTION, a fresh record
 *   (RtlRaiseStatus: its ExceptionRecord is NULL), and an outer __except catches it; RtlUnwindEx to a frame below the stack
 *   raises STATUS_BAD_STACK, which the caller's own __except catches; a filter that catches 12
 *   such raises of the dispatcher itself and then accepts the exception;
 * - divide errors behind prefixes (48 66 F7 F1 = div cx, 2E 48 F7 F1 = div rcx) caught;
 * - RtlCaptureContext's ContextFlags printed (0x10000F).
 *
 * One-bug variants (each ends the run with a bug check):
 * - BUG_DIVIDE_UNCAUGHT: a divide by zero without __try: 0x1E (0xC0000094, the div's address).
 * - BUG_INT3_UNCAUGHT: __debugbreak() without a debugger or __try: 0x1E (0x80000003).
 * - BUG_ASSERT_UNCAUGHT: NT_ASSERT's int 0x2c without __try: 0x1E (0xC0000420) at the int.
 * - BUG_FASTFAIL: __fastfail(FAST_FAIL_CORRUPT_LIST_ENTRY) inside __try: 0x139, not caught.
 * - BUG_FILTER_RAISES_ALWAYS: a filter that faults for every exception it sees: nested
 *   exceptions until the kernel stack overflows: 0x7F (8, double fault).
 * - BUG_CLEANUP_RAISES: the context cleanup callback, run by FltReleaseContext under the
 *   unload callback's __try, lets a divide by zero escape: it would cross FltReleaseContext,
 *   which fltemu reports (bug check 0x1E) instead of unwinding its own frames.
 * - BUG_WORK_ITEM_RAISES: a work item routine lets a divide by zero escape: 0x7E.
 * - BUG_CONTINUE_ALWAYS: a filter that returns EXCEPTION_CONTINUE_EXECUTION for everything, around
 *   an ExRaiseStatus: every STATUS_NONCONTINUABLE_EXCEPTION the dispatcher raises is continued
 *   again, so the raises nest until the kernel stack overflows: 0x7F (8, double fault).
 * - BUG_MISALIGNED_FRAME: a ud2 in a frame-pointer function that made RBP odd, inside __try:
 *   the establisher frame is misaligned, so the dispatch stops (EXCEPTION_STACK_INVALID) and
 *   the exception is not handled: 0x1E (0xC000001D).
 * - BUG_FRAME_OFF_STACK: the same with RBP = 0x1000: the unwind codes read the saved RBP off the
 *   thread's stack, a corrupt stack: 0x1E (0xC000001D).
 * - BUG_UNWIND_RECURSION: a __finally that starts an exit unwind (RtlUnwindEx(NULL, ...)) from
 *   a function whose __finally does the same: the unwinds nest until the kernel stack
 *   overflows: 0x7F (8, double fault).
 * - BUG_BAD_RSP: a fault (a store through NULL, inside __try) while RSP points into the image's
 *   .data instead of the thread's stack: the trap frame cannot be pushed there: 0x7F (8).
 * Test aid (not a bug):
 * - SPIN_IN_DRIVER_ENTRY: DriverEntry spins forever, so a test can send its thread signals
 *   (a signal sent with kill/tgkill is not a fault of the driver: its default action applies).
 * Misuse of the unwind routines (each an InvalidParameter violation, the run goes on):
 * - BUG_CAPTURE_MISALIGNED: RtlCaptureContext into a CONTEXT 8 bytes off its 16-byte alignment.
 * - BUG_LOOKUP_NULL_BASE: RtlLookupFunctionEntry with a NULL ImageBase.
 * - BUG_UNWIND_FOREIGN_ENTRY: RtlVirtualUnwind with a RUNTIME_FUNCTION of the driver's own
 *   making instead of RtlLookupFunctionEntry's.
 */
#include "fltemu_km_ctx.h"

#define PRINT(...) DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, __VA_ARGS__)
#define FAST_FAIL_CORRUPT_LIST_ENTRY 3
#define EXCEPTION_NESTED_CALL 0x10

/* Volatile so that the compiler emits the faulting instructions instead of folding them. */
static volatile LONG g_zero = 0;
static volatile LONG g_minimum = (LONG)0x80000000;
static volatile LONG g_minus_one = -1;
static volatile LONG g_sink;
static LONG *volatile g_null = NULL;

__declspec(noinline) static LONG divide(LONG dividend, LONG divisor)
{
    return dividend / divisor;
}

/* The trapping instructions sit in functions of their own: clang's __try covers calls (it
 * does not implement /EHa's asynchronous exceptions inside the __try body itself). */
__declspec(noinline) static void breakpoint(void)
{
    __debugbreak();
}

#if defined(BUG_ASSERT_UNCAUGHT)
/* What a failing NT_ASSERT compiles to on x64 (__int2c). */
__declspec(noinline) static void assertion_failure(void)
{
    __asm__ volatile("int $0x2c");
}
#endif

__declspec(noinline) static void illegal_instruction(void)
{
    __asm__ volatile("ud2");
}

#if defined(BUG_FASTFAIL)
/* __fastfail as the x64 intrinsic compiles it: int 0x29 with the code in RCX. */
__declspec(noinline) static void fast_fail(ULONG code)
{
    __asm__ volatile("int $0x29" : : "c"(code));
}
#endif

/* True when the instruction at `address` is a DIV/IDIV (F6/F7 after an optional REX). */
static BOOLEAN is_divide(const UCHAR *address)
{
    if ((address[0] & 0xF0) == 0x40) {
        address++;
    }
    return (address[0] == 0xF6 || address[0] == 0xF7) && ((address[1] >> 3) & 7) >= 6;
}

static LONG g_divide_at_div;

static LONG divide_filter(PEXCEPTION_POINTERS pointers)
{
    g_divide_at_div = is_divide((const UCHAR *)pointers->ExceptionRecord->ExceptionAddress)
                      && (ULONG64)pointers->ExceptionRecord->ExceptionAddress == pointers->ContextRecord->Rip;
    return EXCEPTION_EXECUTE_HANDLER;
}

static LONG g_breakpoint_ok;

static LONG breakpoint_filter(PEXCEPTION_POINTERS pointers)
{
    PEXCEPTION_RECORD record = pointers->ExceptionRecord;
    g_breakpoint_ok = *(const UCHAR *)record->ExceptionAddress == 0xCC
                      && (ULONG64)record->ExceptionAddress == pointers->ContextRecord->Rip
                      && record->NumberParameters == 1 && record->ExceptionInformation[0] == 0;
    return EXCEPTION_EXECUTE_HANDLER;
}

/* Faults (a store through NULL) when it sees the divide by zero; declines anything else. */
static LONG faulting_filter(NTSTATUS code)
{
    if (code == STATUS_INTEGER_DIVIDE_BY_ZERO) {
        *g_null = 1;
    }
    return EXCEPTION_CONTINUE_SEARCH;
}

#if defined(BUG_FILTER_RAISES_ALWAYS)
static LONG always_faulting_filter(void)
{
    *g_null = 1;
    return EXCEPTION_EXECUTE_HANDLER;
}
#endif

static ULONG g_outer_flags;

/* ---- exceptions the dispatcher raises ------------------------------------------------------ */
#define STATUS_DRIVER_RAISED ((NTSTATUS)0xE0000001L)
static ULONG g_first_code;

/* Continues the driver's own noncontinuable exception, declines the rest. */
static LONG continue_filter(NTSTATUS code)
{
    return code == STATUS_DRIVER_RAISED ? EXCEPTION_CONTINUE_EXECUTION : EXCEPTION_CONTINUE_SEARCH;
}

__declspec(noinline) static void raise_and_continue(void)
{
    __try {
        ExRaiseStatus(STATUS_DRIVER_RAISED);
    } __except (continue_filter(GetExceptionCode())) {
        PRINT("exceptions: continue_filter's handler ran\n");
    }
}

/* Catches a raise of the dispatcher (the STATUS_NONCONTINUABLE_EXCEPTION raise_and_continue
 * leads to) 12 times while this filter runs: each is over once its __except resumes here. */
static LONG looping_filter(void)
{
    int i;
    for (i = 0; i < 12; i++) {
        __try {
            raise_and_continue();
        } __except (EXCEPTION_EXECUTE_HANDLER) {
        }
    }
    return EXCEPTION_EXECUTE_HANDLER;
}

/* A real divide error behind prefixes: `48 66 F7 F1` is `div cx` (a REX that a legacy prefix
 * follows is ignored), `2E 48 F7 F1` is `div rcx`; both divide by zero (ECX = 0). */
__declspec(noinline) static void divide_rex_then_operand_size(void)
{
    /* CX = 0 but RCX != 0: read as div rcx it would be an overflow (0xC0000095), not a divide by zero. */
    __asm__ volatile("mov $0x10000, %%ecx\n\t.byte 0x48, 0x66, 0xF7, 0xF1" : : : "rax", "rcx", "rdx");
}

__declspec(noinline) static void divide_segment_then_rex(void)
{
    __asm__ volatile("xor %%ecx, %%ecx\n\t.byte 0x2E, 0x48, 0xF7, 0xF1" : : : "rax", "rcx", "rdx");
}

/* Notes the code of the record the dispatcher's exception points at. */
static LONG nested_record_filter(PEXCEPTION_POINTERS pointers)
{
    PEXCEPTION_RECORD first = pointers->ExceptionRecord->ExceptionRecord;
    g_first_code = first != NULL ? (ULONG)first->ExceptionCode : 0;
    return EXCEPTION_EXECUTE_HANDLER;
}

#if defined(BUG_CONTINUE_ALWAYS)
__declspec(noinline) static void continue_always(void)
{
    __try {
        ExRaiseStatus(STATUS_DRIVER_RAISED);
    } __except (EXCEPTION_CONTINUE_EXECUTION) {
    }
}
#endif

#if defined(BUG_MISALIGNED_FRAME) || defined(BUG_FRAME_OFF_STACK)
#if defined(BUG_MISALIGNED_FRAME)
#define CORRUPT_RBP "    orq $1, %rbp\n"
#else
#define CORRUPT_RBP "    movq $0x1000, %rbp\n"
#endif
/* A frame-pointer function (its unwind data: push rbp; mov rbp, rsp; SET_FPREG rbp) that
 * corrupts RBP before its ud2: made odd, the establisher frame the unwinder computes from it is
 * misaligned; pointed at 0x1000, the saved RBP the unwind codes name is off the stack. */
void misaligned_frame_fault(void);
__asm__(".text\n"
        ".def misaligned_frame_fault; .scl 2; .type 32; .endef\n"
        ".globl misaligned_frame_fault\n"
        ".p2align 4\n"
        "misaligned_frame_fault:\n"
        ".seh_proc misaligned_frame_fault\n"
        "    pushq %rbp\n"
        "    .seh_pushreg %rbp\n"
        "    movq %rsp, %rbp\n"
        "    .seh_setframe %rbp, 0\n"
        "    .seh_endprologue\n"
        CORRUPT_RBP
        "    ud2\n"
        "    popq %rbp\n"
        "    retq\n"
        ".seh_endproc\n");
#endif

#if defined(BUG_UNWIND_RECURSION)
static CONTEXT g_recursion_scratch;

/* An exit unwind whose __finally starts another exit unwind, without end: each nests the
 * unwinder's frames on the kernel stack. */
__declspec(noinline) static void exit_unwind_recursion(void)
{
    __try {
        RtlUnwindEx(NULL, NULL, NULL, NULL, &g_recursion_scratch, NULL);
    } __finally {
        if (g_zero == 0) {
            exit_unwind_recursion();
        }
    }
}
#endif

#if defined(BUG_BAD_RSP)
static UCHAR g_not_a_stack[4096];

/* Points RSP into .data, then stores through NULL (RCX = 0). */
__declspec(noinline) static void fault_on_a_bad_stack(void)
{
    __asm__ volatile("mov %%rsp, %%rbx\n\t"
                     "lea 2048(%0), %%rsp\n\t"
                     "movl $1, (%%rcx)\n\t"
                     "mov %%rbx, %%rsp"
                     :
                     : "r"(g_not_a_stack), "c"(0)
                     : "rbx", "memory");
}
#endif

static LONG outer_filter(PEXCEPTION_POINTERS pointers)
{
    g_outer_flags = pointers->ExceptionRecord->ExceptionFlags;
    return EXCEPTION_EXECUTE_HANDLER;
}

static LONG g_finally_runs;

__declspec(noinline) static void finally_raises(void)
{
    __try {
        g_sink = divide(1, g_zero);
    } __finally {
        if (AbnormalTermination()) {
            g_finally_runs++;
            illegal_instruction();
        }
    }
}

/* ---- collided unwinds below a declining __except ---------------------------------------- */
static LONG g_h_filter_calls;
static LONG g_h_handled;
static ULONG g_f_flags;

/* Declines the divide by zero, would accept an illegal instruction. */
static LONG h_filter(NTSTATUS code)
{
    g_h_filter_calls++;
    return code == STATUS_ILLEGAL_INSTRUCTION ? EXCEPTION_EXECUTE_HANDLER : EXCEPTION_CONTINUE_SEARCH;
}

/* Accepts everything, and notes the flags it saw for the illegal instruction. */
static LONG f_filter(PEXCEPTION_POINTERS pointers)
{
    if (pointers->ExceptionRecord->ExceptionCode == STATUS_ILLEGAL_INSTRUCTION) {
        g_f_flags = pointers->ExceptionRecord->ExceptionFlags;
    }
    return EXCEPTION_EXECUTE_HANDLER;
}

__declspec(noinline) static void collide_h(void)
{
    __try {
        g_sink = divide(1, g_zero);
    } __except (h_filter(GetExceptionCode())) {
        g_h_handled++;
    }
}

__declspec(noinline) static void collide_g(void)
{
    __try {
        collide_h();
    } __finally {
        if (AbnormalTermination()) {
            illegal_instruction();
        }
    }
}

static LONG g_g2_caught;

/* The ud2 of the __finally is caught by the __except around it in the same function. */
__declspec(noinline) static void collide_g2(void)
{
    __try {
        __try {
            g_sink = divide(1, g_zero);
        } __finally {
            if (AbnormalTermination()) {
                illegal_instruction();
            }
        }
    } __except (GetExceptionCode() == STATUS_ILLEGAL_INSTRUCTION ? EXCEPTION_EXECUTE_HANDLER : EXCEPTION_CONTINUE_SEARCH) {
        g_g2_caught = GetExceptionCode();
    }
}

/* ---- the stack walk ------------------------------------------------------------------------ */
#define WALK_MAX 16
static ULONG64 g_walk_rip[WALK_MAX];
static ULONG64 g_return[3];
static BOOLEAN g_walk_ended_outside;
static ULONG g_walk_pointers;

__declspec(noinline) static ULONG walk_stack(void)
{
    CONTEXT context;
    ULONG frames = 0;
    g_return[0] = (ULONG64)_ReturnAddress();
    RtlCaptureContext(&context);
    while (frames < 64) {
        ULONG64 base = 1;
        PRUNTIME_FUNCTION entry = RtlLookupFunctionEntry(context.Rip, &base, NULL);
        if (entry == NULL) {
            g_walk_ended_outside = base == 0;
            break;
        }
        PVOID handler_data = NULL;
        ULONG64 establisher = 0;
        KNONVOLATILE_CONTEXT_POINTERS pointers;
        for (int i = 0; i < 16; i++) {
            pointers.FloatingContext[i] = NULL;
            pointers.IntegerContext[i] = NULL;
        }
        RtlVirtualUnwind(UNW_FLAG_NHANDLER, base, context.Rip, entry, &context, &handler_data, &establisher, &pointers);
        for (int i = 0; i < 16; i++) {
            g_walk_pointers += pointers.IntegerContext[i] != NULL;
        }
        if (frames < WALK_MAX) {
            g_walk_rip[frames] = context.Rip;
        }
        frames++;
    }
    return frames;
}

__declspec(noinline) static ULONG walk_level2(void)
{
    g_return[1] = (ULONG64)_ReturnAddress();
    return walk_stack() + 1;
}

__declspec(noinline) static ULONG walk_level1(void)
{
    g_return[2] = (ULONG64)_ReturnAddress();
    return walk_level2() + 1;
}

/* ---- misuse of the unwind routines ------------------------------------------------------- */
static void misuse_unwind_routines(void)
{
#if defined(BUG_CAPTURE_MISALIGNED)
    static UCHAR buffer[sizeof(CONTEXT) + 32];
    PCONTEXT misaligned = (PCONTEXT)(((ULONG_PTR)buffer + 15) / 16 * 16 + 8);
    RtlCaptureContext(misaligned);
#elif defined(BUG_LOOKUP_NULL_BASE)
    CONTEXT context;
    RtlCaptureContext(&context);
    PRUNTIME_FUNCTION entry = RtlLookupFunctionEntry(context.Rip, NULL, NULL);
    PRINT("exceptions: lookup without ImageBase returned %p\n", (PVOID)entry);
#elif defined(BUG_UNWIND_FOREIGN_ENTRY)
    CONTEXT context;
    ULONG64 base = 0;
    PVOID data = NULL;
    ULONG64 frame = 0;
    RtlCaptureContext(&context);
    PRUNTIME_FUNCTION entry = RtlLookupFunctionEntry(context.Rip, &base, NULL);
    RUNTIME_FUNCTION copy = *entry;
    RtlVirtualUnwind(UNW_FLAG_NHANDLER, base, context.Rip, &copy, &context, &data, &frame, NULL);
#endif
}

/* ---- RtlUnwindEx ----------------------------------------------------------------------------- */
static LONG g_unwind_finally_runs;
/* Volatile, so the optimiser cannot assume the caller receives this constant. */
static volatile ULONG64 g_not_reached = 7;
static CONTEXT g_unwind_scratch;

__declspec(noinline) static void unwind_from_here(ULONG64 target_frame, ULONG64 target_ip)
{
    __try {
        RtlUnwindEx((PVOID)target_frame, (PVOID)target_ip, NULL, (PVOID)42, &g_unwind_scratch, NULL);
        PRINT("exceptions: RtlUnwindEx returned\n");
    } __finally {
        if (AbnormalTermination()) {
            g_unwind_finally_runs++;
        }
    }
}

/* Finds its caller's frame with the unwind routines, then unwinds to it from a frame below. */
__declspec(noinline) static ULONG64 unwind_middle(void)
{
    CONTEXT context;
    ULONG64 base = 0;
    PVOID data = NULL;
    ULONG64 own_frame = 0;
    ULONG64 caller_frame = 0;
    RtlCaptureContext(&context);
    PRUNTIME_FUNCTION entry = RtlLookupFunctionEntry(context.Rip, &base, NULL);
    RtlVirtualUnwind(UNW_FLAG_NHANDLER, base, context.Rip, entry, &context, &data, &own_frame, NULL);
    CONTEXT caller = context;
    entry = RtlLookupFunctionEntry(caller.Rip, &base, NULL);
    RtlVirtualUnwind(UNW_FLAG_NHANDLER, base, caller.Rip, entry, &caller, &data, &caller_frame, NULL);
    __try {
        unwind_from_here(caller_frame, context.Rip);
    } __finally {
        if (AbnormalTermination()) {
            g_unwind_finally_runs++;
        }
    }
    return g_not_reached; /* not reached: RtlUnwindEx resumes the caller with 42 */
}

__declspec(noinline) static ULONG64 unwind_target(void)
{
    ULONG64 value = unwind_middle();
    return value;
}

/* ---- a filter, a context and a work item --------------------------------------------------- */
static PFLT_FILTER g_filter;

static VOID context_cleanup(PFLT_CONTEXT context, FLT_CONTEXT_TYPE type)
{
    UNREFERENCED_PARAMETER(context);
    UNREFERENCED_PARAMETER(type);
#if defined(BUG_CLEANUP_RAISES)
    g_sink = divide(1, g_zero);
#else
    __try {
        g_sink = divide(1, g_zero);
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        PRINT("exceptions: context cleanup caught %#lx\n", GetExceptionCode());
    }
#endif
}

static VOID work_routine(PFLT_GENERIC_WORKITEM item, PVOID object, PVOID context)
{
    UNREFERENCED_PARAMETER(object);
    UNREFERENCED_PARAMETER(context);
#if defined(BUG_WORK_ITEM_RAISES)
    g_sink = divide(1, g_zero);
#else
    __try {
        g_sink = divide(1, g_zero);
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        PRINT("exceptions: work item caught %#lx\n", GetExceptionCode());
    }
#endif
    FltFreeGenericWorkItem(item);
}

/* The cleanup callback runs inside FltReleaseContext, below the driver's __try. */
static void release_a_context(void)
{
    PFLT_CONTEXT context = NULL;
    if (NT_SUCCESS(FltAllocateContext(g_filter, FLT_INSTANCE_CONTEXT, 16, NonPagedPoolNx, &context))) {
        __try {
            FltReleaseContext(context);
        } __except (EXCEPTION_EXECUTE_HANDLER) {
            PRINT("exceptions: the __try around FltReleaseContext caught %#lx\n", GetExceptionCode());
        }
    }
}

static NTSTATUS filter_unload(FLT_FILTER_UNLOAD_FLAGS flags)
{
    UNREFERENCED_PARAMETER(flags);
    release_a_context();
    FltUnregisterFilter(g_filter);
    return STATUS_SUCCESS;
}

static const FLT_OPERATION_REGISTRATION operations[] = {
    { IRP_MJ_OPERATION_END, 0, NULL, NULL, NULL },
};

static const FLT_CONTEXT_REGISTRATION contexts[] = {
    { FLT_INSTANCE_CONTEXT, 0, context_cleanup, 16, 'cxEx', NULL, NULL, NULL },
    { FLT_CONTEXT_END, 0, NULL, 0, 0, NULL, NULL, NULL },
};

static const FLT_REGISTRATION registration = {
    .Size = sizeof(FLT_REGISTRATION),
    .Version = FLT_REGISTRATION_VERSION,
    .ContextRegistration = contexts,
    .OperationRegistration = operations,
    .FilterUnloadCallback = filter_unload,
};

__declspec(noinline) static void caught_cases(void)
{
    NTSTATUS code = STATUS_SUCCESS;
    __try {
        g_sink = divide(100, g_zero);
    } __except (divide_filter(GetExceptionInformation())) {
        code = GetExceptionCode();
    }
    PRINT("exceptions: divide by zero caught as %#lx (at the div: %ld)\n", code, g_divide_at_div);

    code = STATUS_SUCCESS;
    __try {
        g_sink = divide(g_minimum, g_minus_one);
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        code = GetExceptionCode();
    }
    PRINT("exceptions: divide overflow caught as %#lx\n", code);

    code = STATUS_SUCCESS;
    __try {
        illegal_instruction();
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        code = GetExceptionCode();
    }
    PRINT("exceptions: ud2 caught as %#lx\n", code);

    code = STATUS_SUCCESS;
    __try {
        breakpoint();
    } __except (breakpoint_filter(GetExceptionInformation())) {
        code = GetExceptionCode();
    }
    PRINT("exceptions: int3 caught as %#lx (record as Windows builds it: %ld)\n", code, g_breakpoint_ok);

    code = STATUS_SUCCESS;
    LONG inner = 0;
    __try {
        __try {
            g_sink = divide(1, g_zero);
        } __except (faulting_filter(GetExceptionCode())) {
            inner = 1;
        }
    } __except (outer_filter(GetExceptionInformation())) {
        code = GetExceptionCode();
    }
    PRINT("exceptions: a fault in a filter reached the outer __except as %#lx (inner handler %ld, nested flag %ld)\n",
          code, inner, (LONG)((g_outer_flags & EXCEPTION_NESTED_CALL) != 0));

    code = STATUS_SUCCESS;
    __try {
        finally_raises();
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        code = GetExceptionCode();
    }
    PRINT("exceptions: a ud2 in a __finally during unwind reached the __except as %#lx (__finally ran %ld time)\n",
          code, g_finally_runs);

    code = STATUS_SUCCESS;
    __try {
        collide_g();
    } __except (f_filter(GetExceptionInformation())) {
        code = GetExceptionCode();
    }
    PRINT("exceptions: a ud2 in a __finally below a declining __except reached f as %#lx (h's filter called %ld time, h's "
          "handler ran %ld, nested flag %ld)\n",
          code, g_h_filter_calls, g_h_handled, (LONG)((g_f_flags & EXCEPTION_NESTED_CALL) != 0));

    code = STATUS_SUCCESS;
    __try {
        collide_g2();
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        code = GetExceptionCode();
    }
    PRINT("exceptions: a ud2 in a __finally inside a __try/__except of the same function was caught there as %#lx "
          "(the caller's __except saw %#lx)\n",
          g_g2_caught, code);

    ULONG frames = walk_level1();
    PRINT("exceptions: walked %lu frames (return addresses match: %ld, ended outside the image: %ld, saved registers found: %ld)\n",
          frames - 2,
          (LONG)(g_walk_rip[0] == g_return[0] && g_walk_rip[1] == g_return[1] && g_walk_rip[2] == g_return[2]),
          (LONG)g_walk_ended_outside, (LONG)(g_walk_pointers > 0));

    ULONG64 value = unwind_target();
    PRINT("exceptions: RtlUnwindEx ran %ld __finally blocks and resumed the caller with %llu\n", g_unwind_finally_runs, value);

    code = STATUS_SUCCESS;
    __try {
        raise_and_continue();
    } __except (nested_record_filter(GetExceptionInformation())) {
        code = GetExceptionCode();
    }
    PRINT("exceptions: continuing a noncontinuable exception raised %#lx, caught by the outer __except (it chains to "
          "%#lx: none)\n",
          code, g_first_code);

    code = STATUS_SUCCESS;
    __try {
        RtlUnwindEx((PVOID)16, (PVOID)_ReturnAddress(), NULL, NULL, &g_unwind_scratch, NULL);
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        code = GetExceptionCode();
    }
    PRINT("exceptions: RtlUnwindEx to a frame below the stack raised %#lx, caught by its caller's __except\n", code);

    LONG outer_ran = 0;
    __try {
        g_sink = divide(1, g_zero);
    } __except (looping_filter()) {
        outer_ran = 1;
    }
    if (outer_ran) {
        PRINT("exceptions: 12 raises of the dispatcher caught inside a filter, then the outer __except ran\n");
    }

    code = STATUS_SUCCESS;
    __try {
        divide_rex_then_operand_size();
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        code = GetExceptionCode();
    }
    PRINT("exceptions: div cx behind an ignored REX caught as %#lx\n", code);
    code = STATUS_SUCCESS;
    __try {
        divide_segment_then_rex();
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        code = GetExceptionCode();
    }
    PRINT("exceptions: div rcx behind a segment prefix caught as %#lx\n", code);

    CONTEXT captured;
    captured.ContextFlags = 0;
    RtlCaptureContext(&captured);
    PRINT("exceptions: RtlCaptureContext set ContextFlags %#lx\n", captured.ContextFlags);
}

NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path);
NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path)
{
    UNREFERENCED_PARAMETER(registry_path);
#if defined(BUG_DIVIDE_UNCAUGHT)
    g_sink = divide(100, g_zero);
#elif defined(BUG_INT3_UNCAUGHT)
    breakpoint();
#elif defined(BUG_ASSERT_UNCAUGHT)
    assertion_failure();
#elif defined(BUG_FASTFAIL)
    __try {
        fast_fail(FAST_FAIL_CORRUPT_LIST_ENTRY);
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        PRINT("exceptions: a fast fail was caught\n");
    }
#elif defined(SPIN_IN_DRIVER_ENTRY)
    while (g_zero == 0) {
    }
#elif defined(BUG_CONTINUE_ALWAYS)
    continue_always();
#elif defined(BUG_MISALIGNED_FRAME) || defined(BUG_FRAME_OFF_STACK)
    __try {
        misaligned_frame_fault();
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        PRINT("exceptions: the fault below a misaligned frame was caught\n");
    }
#elif defined(BUG_UNWIND_RECURSION)
    exit_unwind_recursion();
#elif defined(BUG_BAD_RSP)
    __try {
        fault_on_a_bad_stack();
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        PRINT("exceptions: the fault on a bad stack was caught\n");
    }
#elif defined(BUG_FILTER_RAISES_ALWAYS)
    __try {
        g_sink = divide(1, g_zero);
    } __except (always_faulting_filter()) {
        PRINT("exceptions: the always-faulting filter's exception was handled\n");
    }
#endif
    caught_cases();
    misuse_unwind_routines();
    NTSTATUS status = FltRegisterFilter(driver, &registration, &g_filter);
    if (!NT_SUCCESS(status)) {
        return status;
    }
    PFLT_GENERIC_WORKITEM item = FltAllocateGenericWorkItem();
    if (item != NULL && !NT_SUCCESS(FltQueueGenericWorkItem(item, g_filter, work_routine, DelayedWorkQueue, NULL))) {
        FltFreeGenericWorkItem(item);
    }
    status = FltStartFiltering(g_filter);
    if (!NT_SUCCESS(status)) {
        FltUnregisterFilter(g_filter);
    }
    return status;
}
