/*
 * pend.c: a minifilter that pends and defers I/O, written from the fltkernel.h DDI pages and the
 * IFS guide's "Pending an I/O Operation in a Preoperation Callback Routine", "Pending an I/O
 * Operation in a Postoperation Callback Routine" and "Ensuring that Completion Processing is
 * Performed at Safe IRQL":
 *   - every eighth pre-create is pended to a deferred I/O work item; its routine queries the
 *     opened name at PASSIVE_LEVEL, frees the work item and resumes the create with
 *     FltCompletePendedPreOperation (alternately with a post-create callback and a completion
 *     context, and without one); that post-create pends its completion processing to another
 *     deferred I/O work item, which resumes it with FltCompletePendedPostOperation;
 *   - post-cleanup (DISPATCH_LEVEL in a phase of fltemu's default scenario) hands its work to
 *     FltDoCompletionProcessingWhenSafe, whose SafePostCallback queries the normalized name;
 *   - post-close at DISPATCH_LEVEL returns FLT_POSTOP_MORE_PROCESSING_REQUIRED and completes the
 *     close from a generic work item with FltCompletePendedPostOperation.
 *
 * One-bug variants (each once, on the first pended create):
 *   BUG_NEVER_COMPLETED      the work routine returns without FltCompletePendedPreOperation.
 *   BUG_COMPLETED_TWICE      the work routine completes the create twice.
 *   BUG_WORK_ITEM_NOT_FREED  the work routine never frees its deferred I/O work item.
 *   BUG_BAD_CALLBACK_STATUS  the work routine completes with FLT_PREOP_SYNCHRONIZE, which
 *                            FltCompletePendedPreOperation does not accept.
 *   BUG_CONTEXT_WITHOUT_CALLBACK  the work routine completes with FLT_PREOP_SUCCESS_NO_CALLBACK
 *                            and a completion context.
 *   BUG_PENDING_WITH_CONTEXT pre-create sets a CompletionContext and returns FLT_PREOP_PENDING.
 *   BUG_DEFERRED_FREED_TWICE the work routine frees its deferred I/O work item twice.
 * and on the first deferred post-close, or the first posted post-cleanup:
 *   BUG_POST_NEVER_COMPLETED the generic work item never calls FltCompletePendedPostOperation.
 *   BUG_POST_COMPLETED_TWICE the generic work item calls FltCompletePendedPostOperation twice.
 *   BUG_POSTED_BUT_FINISHED  post-cleanup returns FLT_POSTOP_FINISHED_PROCESSING although
 *                            FltDoCompletionProcessingWhenSafe posted the operation.
 *   BUG_WHEN_SAFE_IN_PRE     pre-cleanup calls FltDoCompletionProcessingWhenSafe.
 *   BUG_POSTED_BAD_STATUS    post-cleanup returns a status that is no FLT_POSTOP_CALLBACK_STATUS
 *                            although FltDoCompletionProcessingWhenSafe posted the operation.
 *   BUG_POSTED_MORE_BUT_FINISHED  the posted SafePostCallback returns
 *                            FLT_POSTOP_MORE_PROCESSING_REQUIRED (a generic work item completes
 *                            the cleanup), and post-cleanup, once it has, returns
 *                            FLT_POSTOP_FINISHED_PROCESSING.
 *
 * EARLY_COMPLETION (no bug): a pended pre-create returns FLT_PREOP_PENDING only after its work
 * routine has completed it, so every completion arrives before the callback pends.
 */
#include "fltemu_km_ctx.h"

static PFLT_FILTER g_filter;
/* The completion context pended creates hand to their post-create. */
static ULONG g_marker;
static volatile LONG g_creates;
static volatile LONG g_pended;
static volatile LONG g_completed_with_context;
static volatile LONG g_safe_inline;
static volatile LONG g_safe_posted;
static volatile LONG g_safe_at_passive;
static volatile LONG g_closes_deferred;
static volatile LONG g_errors;
static volatile LONG g_not_queued;
static volatile LONG g_post_creates_deferred;
#if defined(BUG_NEVER_COMPLETED) || defined(BUG_COMPLETED_TWICE) || defined(BUG_WORK_ITEM_NOT_FREED) || defined(BUG_BAD_CALLBACK_STATUS) || \
    defined(BUG_CONTEXT_WITHOUT_CALLBACK) || defined(BUG_PENDING_WITH_CONTEXT) || defined(BUG_DEFERRED_FREED_TWICE) || \
    defined(BUG_POST_NEVER_COMPLETED) || defined(BUG_POST_COMPLETED_TWICE) || defined(BUG_POSTED_BUT_FINISHED) || defined(BUG_WHEN_SAFE_IN_PRE) || \
    defined(BUG_POSTED_BAD_STATUS) || defined(BUG_POSTED_MORE_BUT_FINISHED)
static volatile LONG g_bug_done;
/* True exactly once: the bug strikes the first pended create only. */
static BOOLEAN bug_now(void)
{
    return _InterlockedCompareExchange(&g_bug_done, 1, 0) == 0;
}
#endif

/* The pended create's work, at PASSIVE_LEVEL: the opened name, then the create resumes. */
static VOID pended_create_routine(PFLT_DEFERRED_IO_WORKITEM item, PFLT_CALLBACK_DATA data, PVOID context)
{
#if !defined(EARLY_COMPLETION)
    UNREFERENCED_PARAMETER(context);
#endif
    if (KeGetCurrentIrql() != PASSIVE_LEVEL) {
        _InterlockedIncrement(&g_errors);
    }
    PFLT_FILE_NAME_INFORMATION name = NULL;
    if (NT_SUCCESS(FltGetFileNameInformation(data, FLT_FILE_NAME_OPENED | FLT_FILE_NAME_QUERY_DEFAULT, &name))) {
        FltReleaseFileNameInformation(name);
    }
    LONG pended = _InterlockedIncrement(&g_pended);
#if defined(BUG_WORK_ITEM_NOT_FREED)
    if (!bug_now()) {
        FltFreeDeferredIoWorkItem(item);
    }
#elif defined(BUG_DEFERRED_FREED_TWICE)
    FltFreeDeferredIoWorkItem(item);
    if (bug_now()) {
        FltFreeDeferredIoWorkItem(item);
    }
#else
    FltFreeDeferredIoWorkItem(item);
#endif
#if defined(BUG_NEVER_COMPLETED)
    if (bug_now()) {
        return;
    }
#endif
    FLT_PREOP_CALLBACK_STATUS status = (pended & 1) ? FLT_PREOP_SUCCESS_WITH_CALLBACK : FLT_PREOP_SUCCESS_NO_CALLBACK;
    PVOID completion = status == FLT_PREOP_SUCCESS_WITH_CALLBACK ? &g_marker : NULL;
#if defined(BUG_BAD_CALLBACK_STATUS)
    if (bug_now()) {
        status = FLT_PREOP_SYNCHRONIZE;
    }
#elif defined(BUG_CONTEXT_WITHOUT_CALLBACK)
    if (bug_now()) {
        status = FLT_PREOP_SUCCESS_NO_CALLBACK;
        completion = &g_marker;
    }
#endif
    FltCompletePendedPreOperation(data, status, completion);
#if defined(EARLY_COMPLETION)
    /* The pre-create waiting for this (its Context) may return FLT_PREOP_PENDING now. */
    _InterlockedExchange((volatile LONG *)context, 1);
#endif
#if defined(BUG_COMPLETED_TWICE)
    if (bug_now()) {
        FltCompletePendedPreOperation(data, FLT_PREOP_SUCCESS_NO_CALLBACK, NULL);
    }
#endif
}

static FLT_PREOP_CALLBACK_STATUS pre_create(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID *completion)
{
    UNREFERENCED_PARAMETER(objects);
    *completion = NULL;
    if (_InterlockedIncrement(&g_creates) % 8 != 0 || !FLT_IS_IRP_OPERATION(data)) {
        return FLT_PREOP_SUCCESS_WITH_CALLBACK;
    }
    PFLT_DEFERRED_IO_WORKITEM item = FltAllocateDeferredIoWorkItem();
    if (item == NULL) {
        return FLT_PREOP_SUCCESS_WITH_CALLBACK;
    }
    PVOID routine_context = NULL;
#if defined(EARLY_COMPLETION)
    /* Set by the work routine once it has completed the create. */
    volatile LONG resumed = 0;
    routine_context = (PVOID)&resumed;
#endif
    /* Not safe to post (paging I/O, a top-level IRP) or the instance is going: do it inline. */
    if (!NT_SUCCESS(FltQueueDeferredIoWorkItem(item, data, pended_create_routine, DelayedWorkQueue, routine_context))) {
        _InterlockedIncrement(&g_not_queued);
        FltFreeDeferredIoWorkItem(item);
        return FLT_PREOP_SUCCESS_WITH_CALLBACK;
    }
#if defined(BUG_PENDING_WITH_CONTEXT)
    if (bug_now()) {
        *completion = &g_marker;
    }
#endif
#if defined(EARLY_COMPLETION)
    while (_InterlockedCompareExchange(&resumed, 0, 0) == 0) {
    }
#endif
    return FLT_PREOP_PENDING;
}

/* A pended create's post-create work, deferred again: completion processing resumes here. */
static VOID deferred_post_create_routine(PFLT_DEFERRED_IO_WORKITEM item, PFLT_CALLBACK_DATA data, PVOID context)
{
    UNREFERENCED_PARAMETER(context);
    _InterlockedIncrement(&g_post_creates_deferred);
    FltFreeDeferredIoWorkItem(item);
    FltCompletePendedPostOperation(data);
}

static FLT_POSTOP_CALLBACK_STATUS post_create(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID completion, FLT_POST_OPERATION_FLAGS flags)
{
    UNREFERENCED_PARAMETER(objects);
    UNREFERENCED_PARAMETER(flags);
    if (completion == NULL) {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    if (completion != &g_marker) {
        _InterlockedIncrement(&g_errors);
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    /* The create pended in its pre-operation callback pends its completion processing too. */
    _InterlockedIncrement(&g_completed_with_context);
    PFLT_DEFERRED_IO_WORKITEM item = FltAllocateDeferredIoWorkItem();
    if (item == NULL) {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    if (!NT_SUCCESS(FltQueueDeferredIoWorkItem(item, data, deferred_post_create_routine, DelayedWorkQueue, NULL))) {
        FltFreeDeferredIoWorkItem(item);
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    return FLT_POSTOP_MORE_PROCESSING_REQUIRED;
}

static FLT_PREOP_CALLBACK_STATUS pre_with_callback(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID *completion)
{
    UNREFERENCED_PARAMETER(data);
    UNREFERENCED_PARAMETER(objects);
    *completion = NULL;
    return FLT_PREOP_SUCCESS_WITH_CALLBACK;
}

static FLT_POSTOP_CALLBACK_STATUS safe_post_cleanup(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID completion, FLT_POST_OPERATION_FLAGS flags);

static FLT_PREOP_CALLBACK_STATUS pre_cleanup(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID *completion)
{
#if defined(BUG_WHEN_SAFE_IN_PRE)
    if (bug_now()) {
        FLT_POSTOP_CALLBACK_STATUS status;
        FltDoCompletionProcessingWhenSafe(data, objects, NULL, 0, safe_post_cleanup, &status);
    }
#endif
    return pre_with_callback(data, objects, completion);
}

#if defined(BUG_POSTED_MORE_BUT_FINISHED)
/* The CompletionContext post-cleanup hands the SafePostCallback it means to pend. */
static ULONG g_more_marker;
/* Set by that SafePostCallback before it returns FLT_POSTOP_MORE_PROCESSING_REQUIRED. */
static volatile LONG g_safe_more;

static VOID complete_cleanup_routine(PFLT_GENERIC_WORKITEM item, PVOID object, PVOID context)
{
    UNREFERENCED_PARAMETER(object);
    FltFreeGenericWorkItem(item);
    FltCompletePendedPostOperation((PFLT_CALLBACK_DATA)context);
}
#endif

/* Post-cleanup's work, at IRQL <= APC_LEVEL: the normalized name. */
static FLT_POSTOP_CALLBACK_STATUS safe_post_cleanup(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID completion, FLT_POST_OPERATION_FLAGS flags)
{
    UNREFERENCED_PARAMETER(objects);
    UNREFERENCED_PARAMETER(completion);
    UNREFERENCED_PARAMETER(flags);
#if defined(BUG_POSTED_MORE_BUT_FINISHED)
    if (completion == &g_more_marker) {
        PFLT_GENERIC_WORKITEM item = FltAllocateGenericWorkItem();
        if (item != NULL && !NT_SUCCESS(FltQueueGenericWorkItem(item, objects->Instance, complete_cleanup_routine, DelayedWorkQueue, data))) {
            FltFreeGenericWorkItem(item);
            item = NULL;
        }
        _InterlockedExchange(&g_safe_more, 1);
        return item != NULL ? FLT_POSTOP_MORE_PROCESSING_REQUIRED : FLT_POSTOP_FINISHED_PROCESSING;
    }
#endif
    if (KeGetCurrentIrql() > APC_LEVEL) {
        _InterlockedIncrement(&g_errors);
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    if (KeGetCurrentIrql() == PASSIVE_LEVEL) {
        _InterlockedIncrement(&g_safe_at_passive);
    }
    PFLT_FILE_NAME_INFORMATION name = NULL;
    if (NT_SUCCESS(FltGetFileNameInformation(data, FLT_FILE_NAME_NORMALIZED | FLT_FILE_NAME_QUERY_DEFAULT, &name))) {
        FltReleaseFileNameInformation(name);
    }
    return FLT_POSTOP_FINISHED_PROCESSING;
}

static FLT_POSTOP_CALLBACK_STATUS post_cleanup(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID completion, FLT_POST_OPERATION_FLAGS flags)
{
    FLT_POSTOP_CALLBACK_STATUS status = FLT_POSTOP_FINISHED_PROCESSING;
#if defined(BUG_POSTED_MORE_BUT_FINISHED)
    if (KeGetCurrentIrql() >= DISPATCH_LEVEL && bug_now()) {
        completion = &g_more_marker;
    }
#endif
    if (!FltDoCompletionProcessingWhenSafe(data, objects, completion, flags, safe_post_cleanup, &status)) {
        /* Could not be posted (paging I/O, not IRP-based): skip the name. */
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    _InterlockedIncrement(status == FLT_POSTOP_MORE_PROCESSING_REQUIRED ? &g_safe_posted : &g_safe_inline);
#if defined(BUG_POSTED_BUT_FINISHED)
    if (status == FLT_POSTOP_MORE_PROCESSING_REQUIRED && bug_now()) {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
#elif defined(BUG_POSTED_BAD_STATUS)
    if (status == FLT_POSTOP_MORE_PROCESSING_REQUIRED && bug_now()) {
        return (FLT_POSTOP_CALLBACK_STATUS)7;
    }
#elif defined(BUG_POSTED_MORE_BUT_FINISHED)
    if (completion == &g_more_marker) {
        /* Its SafePostCallback is about to pend the cleanup; this callback finishes it anyway. */
        while (_InterlockedCompareExchange(&g_safe_more, 0, 0) == 0) {
        }
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
#endif
    return status;
}

/* The deferred post-close, at PASSIVE_LEVEL: the close's completion processing resumes. */
static VOID deferred_close_routine(PFLT_GENERIC_WORKITEM item, PVOID object, PVOID context)
{
    UNREFERENCED_PARAMETER(object);
    if (KeGetCurrentIrql() != PASSIVE_LEVEL) {
        _InterlockedIncrement(&g_errors);
    }
    _InterlockedIncrement(&g_closes_deferred);
    FltFreeGenericWorkItem(item);
#if defined(BUG_POST_NEVER_COMPLETED)
    if (bug_now()) {
        return;
    }
#endif
    FltCompletePendedPostOperation((PFLT_CALLBACK_DATA)context);
#if defined(BUG_POST_COMPLETED_TWICE)
    if (bug_now()) {
        FltCompletePendedPostOperation((PFLT_CALLBACK_DATA)context);
    }
#endif
}

static FLT_POSTOP_CALLBACK_STATUS post_close(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID completion, FLT_POST_OPERATION_FLAGS flags)
{
    UNREFERENCED_PARAMETER(completion);
    if (KeGetCurrentIrql() < DISPATCH_LEVEL || (flags & FLTFL_POST_OPERATION_DRAINING) != 0) {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    PFLT_GENERIC_WORKITEM item = FltAllocateGenericWorkItem();
    if (item == NULL) {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    if (!NT_SUCCESS(FltQueueGenericWorkItem(item, objects->Instance, deferred_close_routine, DelayedWorkQueue, data))) {
        FltFreeGenericWorkItem(item);
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    return FLT_POSTOP_MORE_PROCESSING_REQUIRED;
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
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL,
               "pend: creates %ld pended %ld not-queued %ld with-context %ld post-deferred %ld; cleanups safe-inline %ld safe-posted %ld safe-at-passive %ld; closes deferred %ld; errors %ld\n",
               g_creates, g_pended, g_not_queued, g_completed_with_context, g_post_creates_deferred, g_safe_inline, g_safe_posted, g_safe_at_passive, g_closes_deferred, g_errors);
    return STATUS_SUCCESS;
}

static const FLT_OPERATION_REGISTRATION operations[] = {
    { IRP_MJ_CREATE, 0, pre_create, post_create, NULL },
    { IRP_MJ_CLEANUP, 0, pre_cleanup, post_cleanup, NULL },
    { IRP_MJ_CLOSE, 0, pre_with_callback, post_close, NULL },
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
