/*
 * monitor.c: a process and file monitor in the style of the public minifilters surveyed in the
 * README ("Minifilters in the wild"), written from the wdm.h / ntddk.h / ntifs.h / fltkernel.h
 * DDI pages. A control device and its symbolic link; process, thread and image-load notify
 * routines; a system thread that examines each new process (ZwOpenProcess and
 * ZwQueryInformationProcess for its image name, PsLookupProcessByProcessId, KeStackAttachProcess
 * and ObOpenObjectByPointer for its basic information, ObReferenceObjectByHandle for its object;
 * the queue is an ExInterlocked list, one examination at a time under a KMUTEX; examined pids
 * are kept in an AVL generic table until their process exits);
 * pre-create counting opens per requestor. With the first process it also surveys the volumes
 * (FltEnumerateVolumes, FltGetVolumeGuidName, FltEnumerateInstances; FltGetVolumeInstanceFromName,
 * then FltCreateFileEx and ObReferenceObjectByHandle on its handle) and resolves its own
 * symbolic link and drive C: (ZwOpenSymbolicLinkObject). Unload stops the thread, waits for its
 * object and removes everything in reverse order.
 *
 * The clean build bug-checks (0x4D4F4E00 + n) unless the emulated functions behave as the DDI
 * pages say: the image-name query's size probe, the basic information's pid, the thread notify
 * routine seeing the worker start and end, no top-level IRP in a pre-create, the two-call size
 * protocols of FltEnumerateVolumes / FltGetVolumeGuidName / ZwQuerySymbolicLinkObject.
 *
 * One-bug variants: BUG_THREAD_NOT_STOPPED (unload neither signals nor waits for the thread:
 * ObjectLeaked SystemThread), BUG_PROCESS_NOT_DEREFERENCED (ObReferenceObjectByHandle's
 * reference kept: ObjectLeaked ProcessReference), BUG_HANDLE_NOT_CLOSED (ZwOpenProcess's handle
 * kept: ObjectLeaked Handle), BUG_IMAGE_NOTIFY_NOT_REMOVED (ObjectLeaked Callback),
 * BUG_DEVICE_NOT_DELETED (ObjectLeaked Device), BUG_VOLUME_NOT_DEREFERENCED (a volume from
 * FltEnumerateVolumes kept: ObjectLeaked VolumeReference).
 */
#include "fltemu_km.h"

#define MONITOR_TAG 0x6E6F4D66 /* 'fMon' */

/* A process waiting for the worker: queued by the notify routine in non-paged pool. */
typedef struct _PENDING_PROCESS {
    LIST_ENTRY Link;
    HANDLE Pid;
} PENDING_PROCESS;

static PFLT_FILTER g_filter;
static PDEVICE_OBJECT g_device;
static UNICODE_STRING g_device_name = RTL_CONSTANT_STRING(L"\\Device\\FltemuMonitor");
static UNICODE_STRING g_link_name = RTL_CONSTANT_STRING(L"\\??\\FltemuMonitor");
static KEVENT g_stop;
static PVOID g_thread;
static KSPIN_LOCK g_queue_lock;
static LIST_ENTRY g_queue;
static KMUTEX g_examine_mutex;
static volatile LONG g_processes_created, g_processes_examined, g_thread_starts, g_thread_ends, g_opens;

static BOOLEAN g_surveyed;
static RTL_AVL_TABLE g_examined;
static volatile LONG g_exits_matched;

static RTL_GENERIC_COMPARE_RESULTS compare_pids(PRTL_AVL_TABLE table, PVOID a, PVOID b)
{
    UNREFERENCED_PARAMETER(table);
    ULONG_PTR x = *(ULONG_PTR *)a, y = *(ULONG_PTR *)b;
    return x < y ? GenericLessThan : x > y ? GenericGreaterThan : GenericEqual;
}

static PVOID allocate_element(PRTL_AVL_TABLE table, ULONG bytes)
{
    UNREFERENCED_PARAMETER(table);
    return ExAllocatePool2(POOL_FLAG_PAGED, bytes, MONITOR_TAG);
}

static VOID free_element(PRTL_AVL_TABLE table, PVOID buffer)
{
    UNREFERENCED_PARAMETER(table);
    ExFreePoolWithTag(buffer, MONITOR_TAG);
}

static VOID check(BOOLEAN ok, ULONG step, ULONG_PTR detail)
{
    if (!ok) {
        KeBugCheckEx(0x4D4F4E00 + step, detail, 0, 0, 0);
    }
}

static VOID process_notify(HANDLE parent, HANDLE pid, BOOLEAN create)
{
    UNREFERENCED_PARAMETER(parent);
    if (!create) {
        /* The exiting process leaves the table of examined ones. */
        ULONG_PTR key = (ULONG_PTR)pid;
        KeWaitForSingleObject(&g_examine_mutex, Executive, KernelMode, FALSE, NULL);
        if (RtlLookupElementGenericTableAvl(&g_examined, &key) != NULL && RtlDeleteElementGenericTableAvl(&g_examined, &key)) {
            _InterlockedIncrement(&g_exits_matched);
        }
        KeReleaseMutex(&g_examine_mutex, FALSE);
        return;
    }
    PENDING_PROCESS *pending = ExAllocatePool2(POOL_FLAG_NON_PAGED, sizeof(*pending), MONITOR_TAG);
    if (pending == NULL) {
        return;
    }
    _InterlockedIncrement(&g_processes_created);
    pending->Pid = pid;
    check(ExInterlockedInsertTailList(&g_queue, &pending->Link, &g_queue_lock) == NULL, 29, 0);
}

static VOID thread_notify(HANDLE pid, HANDLE tid, BOOLEAN create)
{
    UNREFERENCED_PARAMETER(tid);
    if (pid == (HANDLE)4) {
        _InterlockedIncrement(create ? &g_thread_starts : &g_thread_ends);
    }
}

static VOID image_notify(PUNICODE_STRING name, HANDLE pid, PVOID info)
{
    UNREFERENCED_PARAMETER(name);
    UNREFERENCED_PARAMETER(pid);
    UNREFERENCED_PARAMETER(info);
}

/* The image name through a process handle: a size probe, then the query into pool. */
static VOID examine_by_handle(HANDLE pid)
{
    OBJECT_ATTRIBUTES attributes;
    InitializeObjectAttributes(&attributes, NULL, OBJ_KERNEL_HANDLE, NULL, NULL);
    CLIENT_ID client = { pid, NULL };
    HANDLE process;
    NTSTATUS status = ZwOpenProcess(&process, PROCESS_QUERY_LIMITED_INFORMATION, &attributes, &client);
    check(NT_SUCCESS(status), 1, (ULONG_PTR)status);
    ULONG needed = 0;
    status = ZwQueryInformationProcess(process, ProcessImageFileName, NULL, 0, &needed);
    check(status == STATUS_INFO_LENGTH_MISMATCH && needed > sizeof(UNICODE_STRING), 2, (ULONG_PTR)status);
    PUNICODE_STRING image = ExAllocatePool2(POOL_FLAG_PAGED, needed, MONITOR_TAG);
    if (image != NULL) {
        status = ZwQueryInformationProcess(process, ProcessImageFileName, image, needed, &needed);
        check(NT_SUCCESS(status) && image->Length > 0, 3, (ULONG_PTR)status);
        UNICODE_STRING exe = RTL_CONSTANT_STRING(L".EXE");
        check(RtlSuffixUnicodeString(&exe, image, TRUE), 16, 0);
        ANSI_STRING narrow;
        status = RtlUnicodeStringToAnsiString(&narrow, image, TRUE);
        check(NT_SUCCESS(status) && narrow.Length * 2 == image->Length, 17, (ULONG_PTR)status);
        DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "monitor: process %p image %Z\n", pid, &narrow);
        RtlFreeAnsiString(&narrow);
        ExFreePoolWithTag(image, MONITOR_TAG);
    }
    PEPROCESS object;
    status = ObReferenceObjectByHandle(process, 0, *PsProcessType, KernelMode, (PVOID *)&object, NULL);
    check(NT_SUCCESS(status) && PsGetProcessId(object) == pid, 4, (ULONG_PTR)status);
    check(PsGetProcessExitStatus(object) == STATUS_PENDING, 18, 0);
    status = ObReferenceObjectByHandle(process, 0, *PsThreadType, KernelMode, (PVOID *)&object, NULL);
    check(status == STATUS_OBJECT_TYPE_MISMATCH, 5, (ULONG_PTR)status);
#if !defined(BUG_PROCESS_NOT_DEREFERENCED)
    ObReferenceObjectByHandle(process, 0, *PsProcessType, KernelMode, (PVOID *)&object, NULL);
    ObDereferenceObject(object);
#else
    ObReferenceObjectByHandle(process, 0, *PsProcessType, KernelMode, (PVOID *)&object, NULL);
#endif
    ObDereferenceObject(object); /* the reference of step 4 */
#if !defined(BUG_HANDLE_NOT_CLOSED)
    ZwClose(process);
#endif
}

/* The basic information through a handle opened on a referenced process object. */
static VOID examine_by_object(HANDLE pid)
{
    PEPROCESS object;
    NTSTATUS status = PsLookupProcessByProcessId(pid, &object);
    check(NT_SUCCESS(status), 6, (ULONG_PTR)status);
    KAPC_STATE apc;
    KeStackAttachProcess(object, &apc);
    check(PsGetCurrentProcessId() == pid, 30, (ULONG_PTR)PsGetCurrentProcessId());
    KeUnstackDetachProcess(&apc);
    check(PsGetCurrentProcessId() == (HANDLE)4, 31, (ULONG_PTR)PsGetCurrentProcessId());
    HANDLE process;
    status = ObOpenObjectByPointer(object, OBJ_KERNEL_HANDLE, NULL, 0, *PsProcessType, KernelMode, &process);
    check(NT_SUCCESS(status), 7, (ULONG_PTR)status);
    PROCESS_BASIC_INFORMATION basic;
    ULONG returned = 0;
    status = ZwQueryInformationProcess(process, ProcessBasicInformation, &basic, sizeof(basic), &returned);
    check(NT_SUCCESS(status) && basic.UniqueProcessId == (ULONG_PTR)pid && returned == sizeof(basic), 8, (ULONG_PTR)status);
    ZwClose(process);
    ObDereferenceObject(object);
}

/* Every volume's GUID name, this filter's instances, and two symbolic links resolved. */
static VOID survey(VOID)
{
    ULONG count = 0;
    NTSTATUS status = FltEnumerateVolumes(g_filter, NULL, 0, &count);
    check(status == STATUS_BUFFER_TOO_SMALL && count > 0, 19, (ULONG_PTR)status);
    PFLT_VOLUME *volumes = ExAllocatePool2(POOL_FLAG_PAGED, count * sizeof(PFLT_VOLUME), MONITOR_TAG);
    if (volumes == NULL) {
        return;
    }
    status = FltEnumerateVolumes(g_filter, volumes, count, &count);
    check(NT_SUCCESS(status), 20, (ULONG_PTR)status);
    /* A file of the first volume opened below this filter: its handle names its FILE_OBJECT. */
    PFLT_INSTANCE instance;
    status = FltGetVolumeInstanceFromName(g_filter, volumes[0], NULL, &instance);
    check(NT_SUCCESS(status), 40, (ULONG_PTR)status);
    UNICODE_STRING path = RTL_CONSTANT_STRING(L"\\Device\\vol1\\monitor.txt");
    OBJECT_ATTRIBUTES file_attributes;
    InitializeObjectAttributes(&file_attributes, &path, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, NULL);
    HANDLE file;
    PFILE_OBJECT opened, referenced;
    IO_STATUS_BLOCK io;
    status = FltCreateFileEx(g_filter, instance, &file, &opened, FILE_READ_DATA | SYNCHRONIZE, &file_attributes, &io, NULL, 0, FILE_SHARE_READ, FILE_OPEN_IF, 0, NULL, 0, 0);
    check(NT_SUCCESS(status), 41, (ULONG_PTR)status);
    status = ObReferenceObjectByHandle(file, 0, *IoFileObjectType, KernelMode, (PVOID *)&referenced, NULL);
    check(NT_SUCCESS(status) && referenced == opened, 42, (ULONG_PTR)status);
    check(ObReferenceObjectByHandle(file, 0, *PsProcessType, KernelMode, (PVOID *)&referenced, NULL) == STATUS_OBJECT_TYPE_MISMATCH, 43, 0);
    ObDereferenceObject(opened);
    ObDereferenceObject(opened);
    FltClose(file);
    FltObjectDereference(instance);
    for (ULONG i = 0; i < count; i++) {
        ULONG needed = 0;
        status = FltGetVolumeGuidName(volumes[i], NULL, &needed);
        check(status == STATUS_BUFFER_TOO_SMALL && needed > 0, 21, (ULONG_PTR)status);
        UNICODE_STRING guid = { 0, (USHORT)needed, ExAllocatePool2(POOL_FLAG_PAGED, needed, MONITOR_TAG) };
        if (guid.Buffer != NULL) {
            status = FltGetVolumeGuidName(volumes[i], &guid, NULL);
            check(NT_SUCCESS(status) && guid.Length == needed && guid.Buffer[4] == L'V', 22, (ULONG_PTR)status);
            DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "monitor: volume %lu %wZ\n", i, &guid);
            ExFreePoolWithTag(guid.Buffer, MONITOR_TAG);
        }
#if defined(BUG_VOLUME_NOT_DEREFERENCED)
        if (i == 0) {
            continue;
        }
#endif
        FltObjectDereference(volumes[i]);
    }
    ExFreePoolWithTag(volumes, MONITOR_TAG);
    ULONG instances = 0;
    status = FltEnumerateInstances(NULL, g_filter, NULL, 0, &instances);
    check(status == STATUS_BUFFER_TOO_SMALL && instances == count, 23, (ULONG_PTR)instances);

    static UNICODE_STRING names[2] = { RTL_CONSTANT_STRING(L"\\??\\FltemuMonitor"), RTL_CONSTANT_STRING(L"\\DosDevices\\C:") };
    for (ULONG i = 0; i < 2; i++) {
        OBJECT_ATTRIBUTES attributes;
        InitializeObjectAttributes(&attributes, &names[i], OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, NULL);
        HANDLE link;
        status = ZwOpenSymbolicLinkObject(&link, SYMBOLIC_LINK_QUERY, &attributes);
        check(NT_SUCCESS(status), 24, (ULONG_PTR)status);
        WCHAR text[8];
        UNICODE_STRING target = { 0, sizeof(text), text };
        ULONG needed = 0;
        status = ZwQuerySymbolicLinkObject(link, &target, &needed);
        check(status == STATUS_BUFFER_TOO_SMALL && needed > sizeof(text), 25, (ULONG_PTR)status);
        target.Buffer = ExAllocatePool2(POOL_FLAG_PAGED, needed, MONITOR_TAG);
        target.MaximumLength = (USHORT)needed;
        if (target.Buffer != NULL) {
            status = ZwQuerySymbolicLinkObject(link, &target, NULL);
            check(NT_SUCCESS(status) && (i != 0 || RtlEqualUnicodeString(&target, &g_device_name, FALSE)), 26, (ULONG_PTR)status);
            DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "monitor: %wZ -> %wZ\n", &names[i], &target);
            ExFreePoolWithTag(target.Buffer, MONITOR_TAG);
        }
        ZwClose(link);
    }
}

static VOID drain(VOID)
{
    for (;;) {
        PLIST_ENTRY entry = ExInterlockedRemoveHeadList(&g_queue, &g_queue_lock);
        if (entry == NULL) {
            return;
        }
        PENDING_PROCESS *pending = CONTAINING_RECORD(entry, PENDING_PROCESS, Link);
        HANDLE pid = pending->Pid;
        ExFreePoolWithTag(pending, MONITOR_TAG);
        /* One examination at a time (the mutex may be taken again by its owner). */
        NTSTATUS status = KeWaitForSingleObject(&g_examine_mutex, Executive, KernelMode, FALSE, NULL);
        check(status == STATUS_SUCCESS, 32, (ULONG_PTR)status);
        status = KeWaitForSingleObject(&g_examine_mutex, Executive, KernelMode, FALSE, NULL);
        check(status == STATUS_SUCCESS, 33, (ULONG_PTR)status);
        if (!g_surveyed) {
            g_surveyed = TRUE;
            survey();
        }
        examine_by_handle(pid);
        examine_by_object(pid);
        ULONG_PTR key = (ULONG_PTR)pid;
        BOOLEAN inserted = FALSE;
        check(RtlInsertElementGenericTableAvl(&g_examined, &key, sizeof(key), &inserted) != NULL && inserted, 35, 0);
        RtlInsertElementGenericTableAvl(&g_examined, &key, sizeof(key), &inserted);
        check(!inserted && RtlNumberGenericTableElementsAvl(&g_examined) >= 1, 36, 0);
        _InterlockedIncrement(&g_processes_examined);
        KeReleaseMutex(&g_examine_mutex, FALSE);
        KeReleaseMutex(&g_examine_mutex, FALSE);
    }
}

static VOID worker(PVOID context)
{
    UNREFERENCED_PARAMETER(context);
    LARGE_INTEGER period;
    period.QuadPart = -10 * 1000 * 10; /* 10 ms, relative */
    for (;;) {
        NTSTATUS status = KeWaitForSingleObject(&g_stop, Executive, KernelMode, FALSE, &period);
        if (status != STATUS_TIMEOUT) {
            break;
        }
        drain();
    }
    drain();
    PsTerminateSystemThread(STATUS_SUCCESS);
}

static FLT_PREOP_CALLBACK_STATUS pre_create(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID *completion)
{
    UNREFERENCED_PARAMETER(objects);
    *completion = NULL;
    check(IoGetTopLevelIrp() == NULL, 9, 0);
    check(ExGetPreviousMode() == (PsGetCurrentProcessId() == (HANDLE)4 ? KernelMode : UserMode), 27, 0);
    if (FltGetRequestorProcessId(data) != 0) {
        _InterlockedIncrement(&g_opens);
    }
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

static NTSTATUS instance_query_teardown(PCFLT_RELATED_OBJECTS objects, FLT_INSTANCE_QUERY_TEARDOWN_FLAGS flags)
{
    UNREFERENCED_PARAMETER(objects);
    UNREFERENCED_PARAMETER(flags);
    return STATUS_SUCCESS;
}

static NTSTATUS filter_unload(FLT_FILTER_UNLOAD_FLAGS flags)
{
    UNREFERENCED_PARAMETER(flags);
    FltUnregisterFilter(g_filter);
#if !defined(BUG_THREAD_NOT_STOPPED)
    KeSetEvent(&g_stop, 0, FALSE);
    NTSTATUS status = KeWaitForSingleObject(g_thread, Executive, KernelMode, FALSE, NULL);
    check(status == STATUS_SUCCESS, 10, (ULONG_PTR)status);
    check(g_thread_starts == 1 && g_thread_ends == 1, 11, ((ULONG_PTR)g_thread_starts << 8) | (ULONG_PTR)g_thread_ends);
    check(g_processes_examined == g_processes_created, 12, (ULONG_PTR)g_processes_examined);
#endif
    /* Processes still running at unload leave the table here. */
    PVOID restart = NULL;
    for (PVOID element = RtlEnumerateGenericTableWithoutSplayingAvl(&g_examined, &restart); element != NULL;
         element = RtlEnumerateGenericTableWithoutSplayingAvl(&g_examined, &restart)) {
        ULONG_PTR key = *(ULONG_PTR *)element;
        RtlDeleteElementGenericTableAvl(&g_examined, &key);
        restart = NULL;
    }
    check(RtlNumberGenericTableElementsAvl(&g_examined) == 0, 37, 0);
    ObDereferenceObject(g_thread);
    PsSetCreateProcessNotifyRoutine(process_notify, TRUE);
    PsRemoveCreateThreadNotifyRoutine(thread_notify);
#if !defined(BUG_IMAGE_NOTIFY_NOT_REMOVED)
    PsRemoveLoadImageNotifyRoutine(image_notify);
#endif
    IoDeleteSymbolicLink(&g_link_name);
#if !defined(BUG_DEVICE_NOT_DELETED)
    IoDeleteDevice(g_device);
#endif
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "monitor: unload after %ld opens, %ld processes examined, %ld exits matched\n", g_opens, g_processes_examined, g_exits_matched);
    return STATUS_SUCCESS;
}

static const FLT_OPERATION_REGISTRATION operations[] = {
    { IRP_MJ_CREATE, 0, pre_create, NULL, NULL },
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
    status = IoCreateDevice(driver, 0, &g_device_name, FILE_DEVICE_UNKNOWN, FILE_DEVICE_SECURE_OPEN, FALSE, &g_device);
    if (NT_SUCCESS(status)) {
        status = IoCreateSymbolicLink(&g_link_name, &g_device_name);
        if (!NT_SUCCESS(status)) {
            IoDeleteDevice(g_device);
        }
    }
    if (!NT_SUCCESS(status)) {
        FltUnregisterFilter(g_filter);
        return status;
    }
    check(IoCreateSymbolicLink(&g_link_name, &g_device_name) != STATUS_SUCCESS, 13, 0);
    PsSetCreateProcessNotifyRoutine(process_notify, FALSE);
    PsSetCreateThreadNotifyRoutine(thread_notify);
    PsSetLoadImageNotifyRoutine(image_notify);
    KeInitializeEvent(&g_stop, NotificationEvent, FALSE);
    InitializeListHead(&g_queue);
    KeInitializeMutex(&g_examine_mutex, 0);
    RtlInitializeGenericTableAvl(&g_examined, compare_pids, allocate_element, free_element, NULL);
    check(RtlIsNtDdiVersionAvailable(NTDDI_WIN10), 34, 0);
    OBJECT_ATTRIBUTES attributes;
    InitializeObjectAttributes(&attributes, NULL, OBJ_KERNEL_HANDLE, NULL, NULL);
    HANDLE thread;
    status = PsCreateSystemThread(&thread, THREAD_ALL_ACCESS, &attributes, NULL, NULL, worker, NULL);
    check(NT_SUCCESS(status), 14, (ULONG_PTR)status);
    status = ObReferenceObjectByHandle(thread, 0, *PsThreadType, KernelMode, &g_thread, NULL);
    check(NT_SUCCESS(status), 15, (ULONG_PTR)status);
    ZwClose(thread);
    ULONG_PTR low = 0, high = 0;
    IoGetStackLimits(&low, &high);
    check(low < (ULONG_PTR)&low && (ULONG_PTR)&low < high, 38, high - low);
    static const GUID provider = { 0x0f17e000, 0x0001, 0x4000, { 0x80, 0, 0, 0, 0, 0, 0, 0x2a } };
    UNICODE_STRING text;
    status = RtlStringFromGUID(&provider, &text);
    check(NT_SUCCESS(status) && text.Length == 38 * sizeof(WCHAR) && text.Buffer[0] == L'{', 39, (ULONG_PTR)status);
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "monitor: provider %wZ\n", &text);
    RtlFreeUnicodeString(&text);
    RTL_OSVERSIONINFOW version = { .dwOSVersionInfoSize = sizeof(version) };
    status = RtlGetVersion(&version);
    check(NT_SUCCESS(status) && version.dwMajorVersion >= 10, 28, (ULONG_PTR)status);
    return FltStartFiltering(g_filter);
}
