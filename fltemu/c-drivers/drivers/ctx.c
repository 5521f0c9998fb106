/*
 * ctx.c: a context-keeping minifilter in C in the style of the samples' ctx (written from the
 * fltkernel.h DDI pages, not from the sample): an instance context per volume, a stream context
 * per stream holding the stream's final name component and an ERESOURCE guarding its counters,
 * a stream-handle context per open with its own ERESOURCE, a file context (shared by all of a
 * file's streams) counting its opens. Names come from
 * FltGetFileNameInformation + FltParseFileNameInformation in post-create; each context's
 * cleanup callback deletes its resource and frees its pool; InstanceSetup reads the volume's
 * properties through a referenced volume object.
 *
 * One-bug variants:
 *   BUG_LEAK_NAME_INFO         post-create never releases the name information.
 *   BUG_VOLUME_NOT_DEREFERENCED InstanceSetup keeps the volume reference.
 *   BUG_RESOURCE_NOT_DELETED   the stream-handle cleanup frees the resource's pool without
 *                              ExDeleteResourceLite.
 *   BUG_FILE_CONTEXT_LEAKED    pre-cleanup gets the file context and never releases it.
 *   BUG_NAME_OVER_RELEASED     the name-cache check releases the cached block once too often.
 *   BUG_LOCK_STALE_DATA        pre-cleanup calls FltLockUserBuffer on the callback data a
 *                              finished pre-create kept.
 *   BUG_QUERY_IN_PRE_CREATE    pre-create queries FileStandardInformation of the FILE_OBJECT the
 *                              file system has not opened yet.
 */
#include "fltemu_km_ctx.h"

#define TAG_RESOURCE 0x73524378 /* 'xCRs' */
#define TAG_NAME     0x6D4E4378 /* 'xCNm' */

typedef struct _INSTANCE_CONTEXT {
    ULONG SectorSize;
    volatile LONG Opens;
} INSTANCE_CONTEXT, *PINSTANCE_CONTEXT;

typedef struct _STREAM_CONTEXT {
    PERESOURCE Resource;
    UNICODE_STRING Name;
    ULONG Creates;
    ULONG Cleanups;
} STREAM_CONTEXT, *PSTREAM_CONTEXT;

typedef struct _STREAM_HANDLE_CONTEXT {
    PERESOURCE Resource;
    ULONG Pid;
    ULONG Cleanups;
} STREAM_HANDLE_CONTEXT, *PSTREAM_HANDLE_CONTEXT;

typedef struct _FILE_CONTEXT {
    volatile LONG Opens;
} FILE_CONTEXT, *PFILE_CONTEXT;

static PFLT_FILTER g_filter;
#if defined(BUG_LOCK_STALE_DATA)
static PFLT_CALLBACK_DATA volatile g_stale_data;
#endif

static PERESOURCE new_resource(void)
{
    PERESOURCE resource = ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(ERESOURCE), TAG_RESOURCE);
    if (resource != NULL && !NT_SUCCESS(ExInitializeResourceLite(resource))) {
        ExFreePoolWithTag(resource, TAG_RESOURCE);
        resource = NULL;
    }
    return resource;
}

static void free_resource(PERESOURCE resource, BOOLEAN delete_it)
{
    if (resource != NULL) {
        if (delete_it) {
            ExDeleteResourceLite(resource);
        }
        ExFreePoolWithTag(resource, TAG_RESOURCE);
    }
}

static VOID context_cleanup(PFLT_CONTEXT context, FLT_CONTEXT_TYPE type)
{
    if (type == FLT_STREAM_CONTEXT) {
        PSTREAM_CONTEXT stream = context;
        free_resource(stream->Resource, TRUE);
        if (stream->Name.Buffer != NULL) {
            ExFreePoolWithTag(stream->Name.Buffer, TAG_NAME);
        }
    } else if (type == FLT_STREAMHANDLE_CONTEXT) {
        PSTREAM_HANDLE_CONTEXT handle = context;
#if defined(BUG_RESOURCE_NOT_DELETED)
        free_resource(handle->Resource, FALSE);
#else
        free_resource(handle->Resource, TRUE);
#endif
    }
}

static const FLT_CONTEXT_REGISTRATION contexts[] = {
    { FLT_INSTANCE_CONTEXT, 0, context_cleanup, sizeof(INSTANCE_CONTEXT), 0x6E494378 /* 'xCIn' */, NULL, NULL, NULL },
    { FLT_STREAM_CONTEXT, 0, context_cleanup, sizeof(STREAM_CONTEXT), 0x74534378 /* 'xCSt' */, NULL, NULL, NULL },
    { FLT_STREAMHANDLE_CONTEXT, 0, context_cleanup, sizeof(STREAM_HANDLE_CONTEXT), 0x68534378 /* 'xCSh' */, NULL, NULL, NULL },
    { FLT_FILE_CONTEXT, 0, NULL, sizeof(FILE_CONTEXT), 0x69464378 /* 'xCFi' */, NULL, NULL, NULL },
    { FLT_CONTEXT_END, 0, NULL, 0, 0, NULL, NULL, NULL },
};

/* The stream's context, created (with the name's final component) if it has none yet. */
static PSTREAM_CONTEXT stream_context(PCFLT_RELATED_OBJECTS objects, PCUNICODE_STRING final_component)
{
    PSTREAM_CONTEXT context = NULL;
    if (NT_SUCCESS(FltGetStreamContext(objects->Instance, objects->FileObject, (PFLT_CONTEXT *)&context))) {
        return context;
    }
    if (!NT_SUCCESS(FltAllocateContext(g_filter, FLT_STREAM_CONTEXT, sizeof(STREAM_CONTEXT), PagedPool, (PFLT_CONTEXT *)&context))) {
        return NULL;
    }
    context->Creates = 0;
    context->Cleanups = 0;
    context->Name.Length = 0;
    context->Name.MaximumLength = final_component->Length;
    context->Name.Buffer = final_component->Length == 0 ? NULL : ExAllocatePoolWithTag(PagedPool, final_component->Length, TAG_NAME);
    if (context->Name.Buffer != NULL) {
        for (USHORT i = 0; i < final_component->Length / sizeof(WCHAR); i++) {
            context->Name.Buffer[i] = final_component->Buffer[i];
        }
        context->Name.Length = final_component->Length;
    }
    context->Resource = new_resource();
    if (context->Resource == NULL) {
        FltReleaseContext(context);
        return NULL;
    }
    PSTREAM_CONTEXT existing = NULL;
    NTSTATUS status = FltSetStreamContext(objects->Instance, objects->FileObject, FLT_SET_CONTEXT_KEEP_IF_EXISTS, context, (PFLT_CONTEXT *)&existing);
    if (status == STATUS_FLT_CONTEXT_ALREADY_DEFINED) {
        /* Another open of the stream won the race: use its context, drop ours. */
        FltReleaseContext(context);
        return existing;
    }
    if (!NT_SUCCESS(status)) {
        FltReleaseContext(context);
        return NULL;
    }
    return context;
}

/* Counts an open on the file's context, creating it first; volumes without file contexts
 * answer STATUS_NOT_SUPPORTED and the open is not counted. */
static void count_file_open(PCFLT_RELATED_OBJECTS objects)
{
    PFILE_CONTEXT context = NULL;
    if (!NT_SUCCESS(FltGetFileContext(objects->Instance, objects->FileObject, (PFLT_CONTEXT *)&context))) {
        if (!NT_SUCCESS(FltAllocateContext(g_filter, FLT_FILE_CONTEXT, sizeof(FILE_CONTEXT), NonPagedPoolNx, (PFLT_CONTEXT *)&context))) {
            return;
        }
        context->Opens = 0;
        PFILE_CONTEXT existing = NULL;
        NTSTATUS status = FltSetFileContext(objects->Instance, objects->FileObject, FLT_SET_CONTEXT_KEEP_IF_EXISTS, context, (PFLT_CONTEXT *)&existing);
        if (status == STATUS_FLT_CONTEXT_ALREADY_DEFINED) {
            FltReleaseContext(context);
            context = existing;
        } else if (!NT_SUCCESS(status)) {
            FltReleaseContext(context);
            return;
        }
    }
    _InterlockedIncrement(&context->Opens);
    FltReleaseContext(context);
}

static void attach_handle_context(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects)
{
    PSTREAM_HANDLE_CONTEXT context = NULL;
    if (!NT_SUCCESS(FltAllocateContext(g_filter, FLT_STREAMHANDLE_CONTEXT, sizeof(STREAM_HANDLE_CONTEXT), PagedPool, (PFLT_CONTEXT *)&context))) {
        return;
    }
    context->Pid = FltGetRequestorProcessId(data);
    context->Cleanups = 0;
    context->Resource = new_resource();
    if (context->Resource != NULL) {
        FltSetStreamHandleContext(objects->Instance, objects->FileObject, FLT_SET_CONTEXT_REPLACE_IF_EXISTS, context, NULL);
    }
    FltReleaseContext(context);
}

static PFLT_FILE_NAME_INFORMATION query_name(PFLT_CALLBACK_DATA data, ULONG options)
{
    PFLT_FILE_NAME_INFORMATION name = NULL;
    return NT_SUCCESS(FltGetFileNameInformation(data, options, &name)) ? name : NULL;
}

/* What the driver relies on of the name cache (FLT_FILE_NAME_QUERY_* rules): a second DEFAULT
 * query, a CACHE_ONLY one and the Unsafe variant return the cached block; FILESYSTEM_ONLY a
 * fresh one; NORMALIZED its own block and format; SHORT the final component alone. Anything
 * else is a bug check. */
static void check_name_rules(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects)
{
    PFLT_FILE_NAME_INFORMATION first = query_name(data, FLT_FILE_NAME_OPENED | FLT_FILE_NAME_QUERY_DEFAULT);
    PFLT_FILE_NAME_INFORMATION again = query_name(data, FLT_FILE_NAME_OPENED | FLT_FILE_NAME_QUERY_DEFAULT);
    PFLT_FILE_NAME_INFORMATION cached = query_name(data, FLT_FILE_NAME_OPENED | FLT_FILE_NAME_QUERY_CACHE_ONLY);
    PFLT_FILE_NAME_INFORMATION fresh = query_name(data, FLT_FILE_NAME_OPENED | FLT_FILE_NAME_QUERY_FILESYSTEM_ONLY);
    PFLT_FILE_NAME_INFORMATION normalized = query_name(data, FLT_FILE_NAME_NORMALIZED | FLT_FILE_NAME_QUERY_DEFAULT);
    PFLT_FILE_NAME_INFORMATION short_name = query_name(data, FLT_FILE_NAME_SHORT | FLT_FILE_NAME_QUERY_DEFAULT);
    PFLT_FILE_NAME_INFORMATION by_object = NULL;
    NTSTATUS status = FltGetFileNameInformationUnsafe(objects->FileObject, objects->Instance, FLT_FILE_NAME_OPENED | FLT_FILE_NAME_QUERY_DEFAULT, &by_object);
    ULONG_PTR same = first != NULL && first == again && first == cached && first == by_object && NT_SUCCESS(status);
    ULONG_PTR formats = fresh != NULL && fresh != first && fresh->Format == FLT_FILE_NAME_OPENED && normalized != NULL && normalized != first
        && normalized->Format == FLT_FILE_NAME_NORMALIZED && first != NULL && normalized->Name.Length == first->Name.Length;
    ULONG_PTR short_ok = short_name != NULL && first != NULL && short_name->Format == FLT_FILE_NAME_SHORT && short_name->Volume.Length == 0
        && short_name->Name.Length < first->Name.Length;
    PFLT_FILE_NAME_INFORMATION all[] = { first, again, cached, fresh, normalized, short_name, by_object };
    for (ULONG i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (all[i] != NULL) {
            FltReleaseFileNameInformation(all[i]);
        }
    }
#if defined(BUG_NAME_OVER_RELEASED)
    if (first != NULL) {
        FltReleaseFileNameInformation(first);
    }
#endif
    if (!same || !formats || !short_ok) {
        KeBugCheckEx(0x4354584E /* 'CTXN' */, same, formats, short_ok, 0);
    }
}

/* What post-create relies on of FltQueryInformationFile on the opened FILE_OBJECT; anything
 * else is a bug check. */
static void check_file_information(PCFLT_RELATED_OBJECTS objects)
{
    FILE_STANDARD_INFORMATION standard;
    FILE_BASIC_INFORMATION basic;
    LONGLONG position = -1;
    ULONG returned = 0;
    ULONG_PTR failures = 0;
    NTSTATUS status = FltQueryInformationFile(objects->Instance, objects->FileObject, &standard, sizeof(standard), FileStandardInformation, &returned);
    failures |= !NT_SUCCESS(status) || returned != sizeof(standard) || standard.NumberOfLinks != 1 || standard.DeletePending ? 0x1 : 0;
    status = FltQueryInformationFile(objects->Instance, objects->FileObject, &basic, sizeof(basic), FileBasicInformation, &returned);
    failures |= !NT_SUCCESS(status) || returned != sizeof(basic) || (basic.FileAttributes != 0x80 && basic.FileAttributes != 0x10) ? 0x2 : 0;
    status = FltQueryInformationFile(objects->Instance, objects->FileObject, &position, sizeof(position), FilePositionInformation, &returned);
    failures |= !NT_SUCCESS(status) || returned != sizeof(position) || position != 0 ? 0x4 : 0;
    status = FltQueryInformationFile(objects->Instance, objects->FileObject, &standard, 16, FileStandardInformation, &returned);
    failures |= status != STATUS_INFO_LENGTH_MISMATCH || returned != 0 ? 0x8 : 0;
    status = FltQueryInformationFile(objects->Instance, objects->FileObject, &standard, sizeof(standard), 1 /* FileDirectoryInformation */, NULL);
    failures |= status != STATUS_INVALID_INFO_CLASS ? 0x10 : 0;
    if (failures != 0) {
        KeBugCheckEx(0x43545849 /* 'CTXI' */, failures, (ULONG_PTR)status, 0, 0);
    }
}

/* A create has no buffer to lock: FltLockUserBuffer must refuse it with INVALID_PARAMETER. */
static void check_lock_user_buffer(PFLT_CALLBACK_DATA data)
{
    NTSTATUS status = FltLockUserBuffer(data);
    if (status != STATUS_INVALID_PARAMETER) {
        KeBugCheckEx(0x4354584C /* 'CTXL' */, (ULONG_PTR)status, 0, 0, 0);
    }
}

static FLT_PREOP_CALLBACK_STATUS pre_create(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID *completion)
{
    UNREFERENCED_PARAMETER(data);
    UNREFERENCED_PARAMETER(objects);
    *completion = NULL;
#if defined(BUG_LOCK_STALE_DATA)
    g_stale_data = data;
#endif
#if defined(BUG_QUERY_IN_PRE_CREATE)
    FILE_STANDARD_INFORMATION standard;
    FltQueryInformationFile(objects->Instance, objects->FileObject, &standard, sizeof(standard), FileStandardInformation, NULL);
#endif
    return FLT_PREOP_SUCCESS_WITH_CALLBACK;
}

static FLT_POSTOP_CALLBACK_STATUS post_create(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID completion, FLT_POST_OPERATION_FLAGS flags)
{
    UNREFERENCED_PARAMETER(completion);
    UNREFERENCED_PARAMETER(flags);
    if (!NT_SUCCESS(data->IoStatus.Status)) {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    PFLT_FILE_NAME_INFORMATION name = NULL;
    if (!NT_SUCCESS(FltGetFileNameInformation(data, FLT_FILE_NAME_NORMALIZED | FLT_FILE_NAME_QUERY_DEFAULT, &name))) {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    FltParseFileNameInformation(name);
    check_name_rules(data, objects);
    check_file_information(objects);
    check_lock_user_buffer(data);
    PSTREAM_CONTEXT stream = stream_context(objects, &name->FinalComponent);
#if !defined(BUG_LEAK_NAME_INFO)
    FltReleaseFileNameInformation(name);
#endif
    if (stream != NULL) {
        FltAcquireResourceExclusive(stream->Resource);
        stream->Creates++;
        FltReleaseResource(stream->Resource);
        FltReleaseContext(stream);
        attach_handle_context(data, objects);
    }
    count_file_open(objects);
    PINSTANCE_CONTEXT instance = NULL;
    if (NT_SUCCESS(FltGetInstanceContext(objects->Instance, (PFLT_CONTEXT *)&instance))) {
        _InterlockedIncrement(&instance->Opens);
        FltReleaseContext(instance);
    }
    return FLT_POSTOP_FINISHED_PROCESSING;
}

static FLT_PREOP_CALLBACK_STATUS pre_cleanup(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID *completion)
{
    UNREFERENCED_PARAMETER(data);
    *completion = NULL;
#if defined(BUG_LOCK_STALE_DATA)
    if (g_stale_data != NULL) {
        FltLockUserBuffer(g_stale_data);
    }
#endif
    PSTREAM_HANDLE_CONTEXT handle = NULL;
    if (NT_SUCCESS(FltGetStreamHandleContext(objects->Instance, objects->FileObject, (PFLT_CONTEXT *)&handle))) {
        KeEnterCriticalRegion();
        ExAcquireResourceExclusiveLite(handle->Resource, TRUE);
        handle->Cleanups++;
        ExReleaseResourceLite(handle->Resource);
        KeLeaveCriticalRegion();
        FltReleaseContext(handle);
    }
    PSTREAM_CONTEXT stream = NULL;
    if (NT_SUCCESS(FltGetStreamContext(objects->Instance, objects->FileObject, (PFLT_CONTEXT *)&stream))) {
        FltAcquireResourceShared(stream->Resource);
        ULONG creates = stream->Creates;
        FltReleaseResource(stream->Resource);
        FltAcquireResourceExclusive(stream->Resource);
        stream->Cleanups = stream->Cleanups < creates ? stream->Cleanups + 1 : stream->Cleanups;
        FltReleaseResource(stream->Resource);
        FltReleaseContext(stream);
    }
    PFILE_CONTEXT file = NULL;
    if (NT_SUCCESS(FltGetFileContext(objects->Instance, objects->FileObject, (PFLT_CONTEXT *)&file))) {
        _InterlockedDecrement(&file->Opens);
#if !defined(BUG_FILE_CONTEXT_LEAKED)
        FltReleaseContext(file);
#endif
    }
    return FLT_PREOP_SUCCESS_NO_CALLBACK;
}

static NTSTATUS instance_setup(PCFLT_RELATED_OBJECTS objects, FLT_INSTANCE_SETUP_FLAGS flags, DEVICE_TYPE device, FLT_FILESYSTEM_TYPE fs)
{
    UNREFERENCED_PARAMETER(flags);
    UNREFERENCED_PARAMETER(device);
    UNREFERENCED_PARAMETER(fs);
    ULONG sector_size = 0;
    PFLT_VOLUME volume = NULL;
    if (NT_SUCCESS(FltGetVolumeFromInstance(objects->Instance, &volume))) {
        ULONGLONG properties[64];
        ULONG needed = 0;
        if (NT_SUCCESS(FltGetVolumeProperties(volume, properties, sizeof(properties), &needed))) {
            sector_size = ((USHORT *)properties)[8]; /* FLT_VOLUME_PROPERTIES.SectorSize at 0x10 */
        }
#if !defined(BUG_VOLUME_NOT_DEREFERENCED)
        FltObjectDereference(volume);
#endif
    }
    PINSTANCE_CONTEXT context = NULL;
    if (NT_SUCCESS(FltAllocateContext(g_filter, FLT_INSTANCE_CONTEXT, sizeof(INSTANCE_CONTEXT), NonPagedPoolNx, (PFLT_CONTEXT *)&context))) {
        context->SectorSize = sector_size;
        context->Opens = 0;
        FltSetInstanceContext(objects->Instance, FLT_SET_CONTEXT_KEEP_IF_EXISTS, context, NULL);
        FltReleaseContext(context);
    }
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
    return STATUS_SUCCESS;
}

static const FLT_OPERATION_REGISTRATION operations[] = {
    { IRP_MJ_CREATE, 0, pre_create, post_create, NULL },
    { IRP_MJ_CLEANUP, 0, pre_cleanup, NULL, NULL },
    { IRP_MJ_OPERATION_END, 0, NULL, NULL, NULL },
};

static const FLT_REGISTRATION registration = {
    .Size = sizeof(FLT_REGISTRATION),
    .Version = FLT_REGISTRATION_VERSION,
    .ContextRegistration = contexts,
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
