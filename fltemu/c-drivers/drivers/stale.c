/* A filter with a stale user-buffer pointer (fltemu's retired buffers must stay inaccessible
 * for good): pre-write keeps the first write's WriteBuffer address and, in the pre-write of
 * write STALE_AT, reads it directly (a bug: the address belongs to an operation that is over;
 * fltemu must bug check 0x1E and report UserBufferTouchedDirectly, never hand back another
 * operation's data). STALE_AT 0 never touches it. Pre-read prints the first bytes of its
 * ReadBuffer before the file system fills it: a fresh buffer is all zeros, so a buffer that
 * still held an earlier write's data would show here. NEGATIVE_READ_OFFSET: pre-read moves
 * every read to ByteOffset -4096 (marked dirty), which the file system must refuse.
 * STALE_VIEW: write 1's kept pointer is instead the system address of its MDL
 * (FltLockUserBuffer + MmGetSystemAddressForMdlSafe), unmapped once write 1 completed: the
 * stale read must bug check 0x50 and be reported as a misuse of the MDL. Pre-read also prints
 * its ReadBuffer's address (never handed out twice). PEND_FIRST_WRITE: write 1's pre-write
 * returns FLT_PREOP_PENDING and never completes it in time (fltemu gives up on it); the
 * pre-write of write STALE_AT reads its buffer, still the pended operation's, and completes it
 * late: only the missing completion is a bug. */
#include "fltemu_km.h"
#include "fltemu_km_ctx.h"

#ifndef STALE_AT
#define STALE_AT 0
#endif

static PFLT_FILTER g_filter;
static volatile LONG g_writes;
static const volatile UCHAR *g_first;
#if defined(PEND_FIRST_WRITE)
static PFLT_CALLBACK_DATA g_pended_write;
#endif

static FLT_PREOP_CALLBACK_STATUS pre_write(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID *completion)
{
    UNREFERENCED_PARAMETER(objects);
    *completion = NULL;
    LONG n = _InterlockedIncrement(&g_writes);
    const volatile UCHAR *buffer = (const volatile UCHAR *)data->Iopb->Parameters.Write.WriteBuffer;
    if (n == 1) {
        g_first = buffer;
#if defined(STALE_VIEW)
        if (NT_SUCCESS(FltLockUserBuffer(data))) {
            g_first = (const volatile UCHAR *)MmGetSystemAddressForMdlSafe(data->Iopb->Parameters.Write.MdlAddress, NormalPagePriority);
        }
#endif
#if defined(PEND_FIRST_WRITE)
        g_pended_write = data;
        return FLT_PREOP_PENDING;
#endif
    } else if (n == STALE_AT) {
        char seen[9];
        for (int i = 0; i < 8; i++) {
            seen[i] = (char)g_first[i];
        }
        seen[8] = 0;
        DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "stale: write %ld read write 1's buffer: '%s'\n", n, seen);
#if defined(PEND_FIRST_WRITE)
        FltCompletePendedPreOperation(g_pended_write, FLT_PREOP_SUCCESS_NO_CALLBACK, NULL);
#endif
    }
    return FLT_PREOP_SUCCESS_NO_CALLBACK;
}

static FLT_PREOP_CALLBACK_STATUS pre_read(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID *completion)
{
    UNREFERENCED_PARAMETER(objects);
    *completion = NULL;
    /* fltemu issues reads from user mode at PASSIVE_LEVEL in the requestor's context, where the
     * buffer is reachable; a real filter would probe it inside __try first. */
    const UCHAR *buffer = (const UCHAR *)data->Iopb->Parameters.Read.ReadBuffer;
    ULONG length = data->Iopb->Parameters.Read.Length;
    ULONG nonzero = 0;
    for (ULONG i = 0; i < length; i++) {
        nonzero += buffer[i] != 0;
    }
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "stale: pre-read buffer %p of %lu bytes has %lu non-zero bytes\n", (PVOID)buffer, length,
               nonzero);
#if defined(NEGATIVE_READ_OFFSET)
    data->Iopb->Parameters.Read.ByteOffset.QuadPart = -4096;
    FltSetCallbackDataDirty(data);
#endif
    return FLT_PREOP_SUCCESS_NO_CALLBACK;
}

static NTSTATUS instance_setup(PCFLT_RELATED_OBJECTS objects, FLT_INSTANCE_SETUP_FLAGS flags, DEVICE_TYPE device, FLT_FILESYSTEM_TYPE fs)
{
    UNREFERENCED_PARAMETER(objects);
    UNREFERENCED_PARAMETER(flags);
    UNREFERENCED_PARAMETER(device);
    UNREFERENCED_PARAMETER(fs);
    return STATUS_SUCCESS;
}

static NTSTATUS filter_unload(FLT_FILTER_UNLOAD_FLAGS flags)
{
    UNREFERENCED_PARAMETER(flags);
    FltUnregisterFilter(g_filter);
    return STATUS_SUCCESS;
}

static const FLT_OPERATION_REGISTRATION operations[] = {
    { IRP_MJ_READ, 0, pre_read, NULL, NULL },
    { IRP_MJ_WRITE, 0, pre_write, NULL, NULL },
    { IRP_MJ_OPERATION_END, 0, NULL, NULL, NULL },
};

static const FLT_REGISTRATION registration = {
    .Size = sizeof(FLT_REGISTRATION),
    .Version = FLT_REGISTRATION_VERSION,
    .OperationRegistration = operations,
    .FilterUnloadCallback = filter_unload,
    .InstanceSetupCallback = instance_setup,
};

NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path);
NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path)
{
    UNREFERENCED_PARAMETER(registry_path);
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
