/*
 * passthrough.c: a pass-through minifilter in C, fltemu's C counterpart of the samples'
 * passThrough: pre and post callbacks for create, cleanup and close that only count, instance
 * setup attaching everywhere, an unload that unregisters. Written from the fltkernel.h DDI pages.
 * DriverEntry touches a 6,000-byte stack frame, so the image calls __chkstk (a frame larger
 * than a page must probe it).
 *
 * One-bug variant: BUG_DEEP_STACK makes that frame 40,000 bytes, more than the 24 KiB x64
 * kernel stack (KERNEL_STACK_SIZE): __chkstk reports StackTooDeep.
 */
#include "fltemu_km.h"

#if defined(BUG_DEEP_STACK)
#define BIG_FRAME 40000
#else
#define BIG_FRAME 6000
#endif

static PFLT_FILTER g_filter;
static volatile LONG g_operations;
static ULONG g_frame_sum;

static FLT_PREOP_CALLBACK_STATUS pre_operation(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID *completion)
{
    UNREFERENCED_PARAMETER(data);
    UNREFERENCED_PARAMETER(objects);
    *completion = NULL;
    _InterlockedIncrement(&g_operations);
    return FLT_PREOP_SUCCESS_WITH_CALLBACK;
}

static FLT_POSTOP_CALLBACK_STATUS post_operation(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID completion, FLT_POST_OPERATION_FLAGS flags)
{
    UNREFERENCED_PARAMETER(data);
    UNREFERENCED_PARAMETER(objects);
    UNREFERENCED_PARAMETER(completion);
    UNREFERENCED_PARAMETER(flags);
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
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "passthrough: unload after %ld operations (frame sum %lu)\n", g_operations, g_frame_sum);
    FltUnregisterFilter(g_filter);
    return STATUS_SUCCESS;
}

static const FLT_OPERATION_REGISTRATION operations[] = {
    { IRP_MJ_CREATE, 0, pre_operation, post_operation, NULL },
    { IRP_MJ_CLEANUP, 0, pre_operation, post_operation, NULL },
    { IRP_MJ_CLOSE, 0, pre_operation, post_operation, NULL },
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

static __declspec(noinline) ULONG touch_big_frame(ULONG seed)
{
    volatile UCHAR scratch[BIG_FRAME];
    ULONG sum = 0;
    /* A start that depends on the argument keeps the whole array (and its size) real. */
    for (ULONG i = seed % 64; i < sizeof(scratch); i += 512) {
        scratch[i] = (UCHAR)(seed + i);
    }
    for (ULONG i = seed % 64; i < sizeof(scratch); i += 512) {
        sum += scratch[i];
    }
    return sum;
}

NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path);
NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path)
{
    g_frame_sum = touch_big_frame(registry_path->Length);
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
