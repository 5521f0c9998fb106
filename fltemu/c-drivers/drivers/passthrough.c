/*
 * passthrough.c: a pass-through minifilter in C, fltemu's C counterpart of the samples'
 * passThrough: pre and post callbacks for create, cleanup and close that only count, instance
 * setup attaching everywhere, an unload that unregisters. Written from the fltkernel.h DDI pages.
 */
#include "fltemu_km.h"

static PFLT_FILTER g_filter;
static volatile LONG g_operations;

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
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "passthrough: unload after %ld operations\n", g_operations);
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
