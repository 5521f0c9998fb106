/*
 * scanner.c: a scanner-style minifilter in C (the shape of the samples' scanner, written from
 * the fltkernel.h DDI pages, no sample code): a communication port "\ScannerPort" for one
 * client; each post-create sends the opener's process id to the client with FltSendMessage and
 * waits (1 s) for its verdict; the client's commands arrive in the message callback with raw
 * user-mode buffers, which are probed (ProbeForRead/ProbeForWrite) and copied inside __try.
 *
 * Commands (SCANNER_COMMAND, then Length data bytes):
 *   1 SUM        output ULONG: the byte sum of the data (summed from a kernel copy)
 *   2 COUNT      output ULONG: creates scanned so far, verdicts received
 *   3 RAISE      ExRaiseStatus(0xC0000000 | the ULONG data) inside __try, with a filter
 *                matching that code: returns the status
 *   4 UNWIND     output ULONG: how many __finally blocks ran while an ExRaiseStatus inside
 *                two nested __try/__finally unwound to the outer __except (2 per call)
 *   5 LOCK       locks the output buffer for write through an MDL (MmProbeAndLockPages inside
 *                __try), unlocks and frees it; output ULONG 1, or the exception's status
 *
 * One-bug variants (each a /D switch):
 *   BUG_NO_TRY              the data is copied without __try: a bad buffer is bug check 0x1E
 *   BUG_TRY_KERNEL_POINTER  a __try/__except meant to "protect" a stale kernel pointer: Windows
 *                           cannot catch that fault (bug check 0x50)
 *   BUG_GS_OVERRUN          SUM copies the data into a 16-byte stack buffer without checking
 *                           the length: the /GS cookie catches it (bug check 0xF7)
 *   BUG_RAISE_UNCAUGHT      RAISE calls ExRaiseStatus outside any __try (bug check 0x1E)
 *   BUG_LOCK_WITHOUT_TRY    LOCK calls MmProbeAndLockPages outside __try: a bad output buffer
 *                           is bug check 0x1E
 *   BUG_CONTINUE_RAISE      RAISE's filter answers EXCEPTION_CONTINUE_EXECUTION to ExRaiseStatus,
 *                           whose exception is noncontinuable: the dispatcher raises
 *                           STATUS_NONCONTINUABLE_EXCEPTION, which the same constant filter
 *                           continues again, until the kernel stack overflows (bug check 0x7F,
 *                           double fault)
 */
#include "fltemu_km.h"

#define SCANNER_TAG 'nacS'
#define SCANNER_SUM 1
#define SCANNER_COUNT 2
#define SCANNER_RAISE 3
#define SCANNER_UNWIND 4
#define SCANNER_LOCK 5
#define SCANNER_MAX_DATA 4096

typedef struct _SCANNER_COMMAND {
    ULONG Command;
    ULONG Length;
} SCANNER_COMMAND;

typedef struct _SCANNER_NOTIFICATION {
    ULONG ProcessId;
    ULONG Sequence;
} SCANNER_NOTIFICATION;

typedef struct _SCANNER_REPLY {
    ULONG Verdict;
} SCANNER_REPLY;

static PFLT_FILTER g_filter;
static PFLT_PORT g_server_port;
static PFLT_PORT g_client_port;
static volatile LONG g_scanned;
static volatile LONG g_verdicts;
static volatile LONG g_finally_runs;

/* Raises from two __finally-protected levels; both handlers run during the unwind. */
static __declspec(noinline) VOID raise_through_finally(NTSTATUS status)
{
    __try {
        __try {
            ExRaiseStatus(status);
        } __finally {
            _InterlockedIncrement(&g_finally_runs);
        }
    } __finally {
        if (AbnormalTermination()) {
            _InterlockedIncrement(&g_finally_runs);
        }
    }
}

void *memcpy(void *destination, const void *source, SIZE_T count);
#pragma intrinsic(memcpy)

/* Sums `length` bytes the caller already copied into kernel memory (not inlined: its stack
 * buffer gets its own /GS cookie, as MSVC would give it). */
static __declspec(noinline) ULONG sum_bytes(const UCHAR *data, ULONG length)
{
    UCHAR local[16];
    ULONG total = 0;
#if !defined(BUG_GS_OVERRUN)
    if (length > sizeof(local)) {
        for (ULONG i = 0; i < length; i++) {
            total += data[i];
        }
        return total;
    }
#endif
    memcpy(local, data, length);
    for (ULONG i = 0; i < length; i++) {
        total += ((volatile UCHAR *)local)[i];
    }
    return total;
}

/* Copies the command header and data from the user buffer; raises on a bad buffer. Not
 * inlined, so its user accesses sit behind a call the caller's __try covers (clang's SEH only
 * guarantees coverage for calls). */
#if !defined(BUG_NO_TRY)
static __declspec(noinline) VOID capture(PVOID input, ULONG input_length, SCANNER_COMMAND *command, UCHAR *data)
{
    ProbeForRead(input, input_length, sizeof(ULONG));
    memcpy(command, input, sizeof(*command));
    if (command->Length > SCANNER_MAX_DATA || command->Length > input_length - sizeof(*command)) {
        ExRaiseStatus(STATUS_INVALID_PARAMETER);
    }
    memcpy(data, (const UCHAR *)input + sizeof(*command), command->Length);
}
#endif

static __declspec(noinline) VOID store_ulong(PVOID output, ULONG value)
{
    ProbeForWrite(output, sizeof(ULONG), sizeof(ULONG));
    *(volatile ULONG *)output = value;
}

/* Locks `output` for write through an MDL and lets it go again; MmProbeAndLockPages raises
 * STATUS_ACCESS_VIOLATION for a range the caller may not write. */
static NTSTATUS lock_output(PVOID output, ULONG output_length)
{
    PMDL mdl = IoAllocateMdl(output, output_length, FALSE, FALSE, NULL);
    if (mdl == NULL) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    NTSTATUS status = STATUS_SUCCESS;
#if defined(BUG_LOCK_WITHOUT_TRY)
    MmProbeAndLockPages(mdl, UserMode, IoWriteAccess);
#else
    __try {
        MmProbeAndLockPages(mdl, UserMode, IoWriteAccess);
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        status = GetExceptionCode();
    }
#endif
    if (NT_SUCCESS(status)) {
        MmUnlockPages(mdl);
    }
    IoFreeMdl(mdl);
    return status;
}

static NTSTATUS reply_ulong(PVOID output, ULONG output_length, ULONG value, PULONG returned)
{
    if (output == NULL || output_length < sizeof(ULONG)) {
        return STATUS_BUFFER_TOO_SMALL;
    }
    __try {
        store_ulong(output, value);
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        return GetExceptionCode();
    }
    *returned = sizeof(ULONG);
    return STATUS_SUCCESS;
}

static NTSTATUS message_notify(PVOID cookie, PVOID input, ULONG input_length, PVOID output, ULONG output_length, PULONG returned)
{
    UNREFERENCED_PARAMETER(cookie);
    SCANNER_COMMAND command;
    *returned = 0;
    if (input == NULL || input_length < sizeof(SCANNER_COMMAND)) {
        return STATUS_INVALID_PARAMETER;
    }
    UCHAR *data = ExAllocatePool2(POOL_FLAG_PAGED, SCANNER_MAX_DATA, SCANNER_TAG);
    if (data == NULL) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    NTSTATUS status = STATUS_SUCCESS;
#if defined(BUG_NO_TRY)
    memcpy(&command, input, sizeof(command));
    if (command.Length > SCANNER_MAX_DATA || command.Length > input_length - sizeof(command)) {
        status = STATUS_INVALID_PARAMETER;
    } else {
        memcpy(data, (const UCHAR *)input + sizeof(command), command.Length);
    }
#else
    __try {
        capture(input, input_length, &command, data);
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        status = GetExceptionCode();
    }
#endif
    if (NT_SUCCESS(status)) {
        switch (command.Command) {
        case SCANNER_SUM:
            status = reply_ulong(output, output_length, sum_bytes(data, command.Length), returned);
            break;
        case SCANNER_COUNT:
            status = reply_ulong(output, output_length, (ULONG)g_scanned * 0x10000 + (ULONG)g_verdicts, returned);
            break;
        case SCANNER_RAISE: {
            if (command.Length < sizeof(ULONG)) {
                status = STATUS_INVALID_PARAMETER;
                break;
            }
            NTSTATUS raised = (NTSTATUS)(*(const ULONG *)data | 0xC0000000);
#if defined(BUG_RAISE_UNCAUGHT)
            ExRaiseStatus(raised);
#else
            __try {
                ExRaiseStatus(raised);
#if defined(BUG_CONTINUE_RAISE)
            } __except (EXCEPTION_CONTINUE_EXECUTION) {
#else
            } __except (GetExceptionCode() == raised ? EXCEPTION_EXECUTE_HANDLER : EXCEPTION_CONTINUE_SEARCH) {
#endif
                status = GetExceptionCode();
            }
#endif
            break;
        }
        case SCANNER_UNWIND: {
            LONG before = g_finally_runs;
            __try {
                raise_through_finally(STATUS_UNSUCCESSFUL);
            } __except (EXCEPTION_EXECUTE_HANDLER) {
                status = reply_ulong(output, output_length, (ULONG)(g_finally_runs - before), returned);
            }
            break;
        }
        case SCANNER_LOCK:
            status = output == NULL || output_length < sizeof(ULONG) ? STATUS_BUFFER_TOO_SMALL : lock_output(output, output_length);
            if (NT_SUCCESS(status)) {
                status = reply_ulong(output, output_length, 1, returned);
            }
            break;
        default:
            status = STATUS_INVALID_PARAMETER;
            break;
        }
    }
    ExFreePoolWithTag(data, SCANNER_TAG);
    return status;
}

static NTSTATUS connect_notify(PFLT_PORT client, PVOID server_cookie, PVOID context, ULONG context_size, PVOID *connection_cookie)
{
    UNREFERENCED_PARAMETER(server_cookie);
    UNREFERENCED_PARAMETER(context);
    UNREFERENCED_PARAMETER(context_size);
    g_client_port = client;
    *connection_cookie = NULL;
    return STATUS_SUCCESS;
}

static VOID disconnect_notify(PVOID connection_cookie)
{
    UNREFERENCED_PARAMETER(connection_cookie);
    FltCloseClientPort(g_filter, &g_client_port);
}

static FLT_POSTOP_CALLBACK_STATUS post_create(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID completion, FLT_POST_OPERATION_FLAGS flags)
{
    UNREFERENCED_PARAMETER(objects);
    UNREFERENCED_PARAMETER(completion);
    UNREFERENCED_PARAMETER(flags);
#if defined(BUG_TRY_KERNEL_POINTER)
    /* A "defensive" read of a stale kernel pointer: __try does not make it safe. */
    volatile ULONG *stale = (volatile ULONG *)(ULONG_PTR)0xFFFFC0000BAD0000ULL;
    __try {
        g_verdicts += (LONG)*stale;
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        g_verdicts = 0;
    }
#endif
    if (!NT_SUCCESS(data->IoStatus.Status) || g_client_port == NULL) {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    SCANNER_NOTIFICATION notification;
    notification.ProcessId = FltGetRequestorProcessId(data);
    notification.Sequence = (ULONG)_InterlockedIncrement(&g_scanned);
    SCANNER_REPLY reply = { 0 };
    ULONG reply_length = sizeof(reply);
    LARGE_INTEGER timeout;
    timeout.QuadPart = -10 * 1000 * 1000; /* 1 s, relative */
    NTSTATUS status = FltSendMessage(g_filter, &g_client_port, &notification, sizeof(notification), &reply, &reply_length, &timeout);
    if (status == STATUS_SUCCESS && reply_length >= sizeof(reply) && reply.Verdict == notification.Sequence) {
        _InterlockedIncrement(&g_verdicts);
    }
    return FLT_POSTOP_FINISHED_PROCESSING;
}

static NTSTATUS instance_setup(PCFLT_RELATED_OBJECTS objects, FLT_INSTANCE_SETUP_FLAGS flags, DEVICE_TYPE device, FLT_FILESYSTEM_TYPE fs)
{
    UNREFERENCED_PARAMETER(objects);
    UNREFERENCED_PARAMETER(flags);
    UNREFERENCED_PARAMETER(device);
    UNREFERENCED_PARAMETER(fs);
    return STATUS_SUCCESS;
}

static NTSTATUS instance_query_teardown(PCFLT_RELATED_OBJECTS objects, FLT_INSTANCE_QUERY_TEARDOWN_FLAGS flags)
{
    UNREFERENCED_PARAMETER(objects);
    UNREFERENCED_PARAMETER(flags);
    return STATUS_SUCCESS;
}

static NTSTATUS filter_unload(FLT_FILTER_UNLOAD_FLAGS flags)
{
    UNREFERENCED_PARAMETER(flags);
    FltCloseCommunicationPort(g_server_port);
    FltUnregisterFilter(g_filter);
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "scanner: unload after %ld scans, %ld verdicts\n", g_scanned, g_verdicts);
    return STATUS_SUCCESS;
}

static const FLT_OPERATION_REGISTRATION operations[] = {
    { IRP_MJ_CREATE, 0, NULL, post_create, NULL },
    { IRP_MJ_OPERATION_END, 0, NULL, NULL, NULL },
};

static const FLT_REGISTRATION registration = {
    .Size = sizeof(FLT_REGISTRATION),
    .Version = FLT_REGISTRATION_VERSION,
    .OperationRegistration = operations,
    .FilterUnloadCallback = filter_unload,
    .InstanceSetupCallback = instance_setup,
    .InstanceQueryTeardownCallback = instance_query_teardown,
};

NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path);
NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path)
{
    UNREFERENCED_PARAMETER(registry_path);
    NTSTATUS status = FltRegisterFilter(driver, &registration, &g_filter);
    if (!NT_SUCCESS(status)) {
        return status;
    }
    PSECURITY_DESCRIPTOR descriptor = NULL;
    status = FltBuildDefaultSecurityDescriptor(&descriptor, FLT_PORT_ALL_ACCESS);
    if (NT_SUCCESS(status)) {
        static const WCHAR port_name[] = L"\\ScannerPort";
        UNICODE_STRING name = RTL_CONSTANT_STRING(port_name);
        OBJECT_ATTRIBUTES attributes;
        InitializeObjectAttributes(&attributes, &name, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, descriptor);
        status = FltCreateCommunicationPort(g_filter, &g_server_port, &attributes, NULL, connect_notify, disconnect_notify, message_notify, 1);
        FltFreeSecurityDescriptor(descriptor);
    }
    if (NT_SUCCESS(status)) {
        status = FltStartFiltering(g_filter);
        if (!NT_SUCCESS(status)) {
            FltCloseCommunicationPort(g_server_port);
        }
    }
    if (!NT_SUCCESS(status)) {
        FltUnregisterFilter(g_filter);
    }
    return status;
}
