/*
 * fltemu_km.h: the kernel-mode declarations fltemu's C fixture drivers use, written from the
 * learn.microsoft.com DDI pages (wdm.h, ntifs.h, fltkernel.h) for x64 only.
 *
 * Why our own header: fltKernel.h is not in mingw-w64, and mingw-w64's ddk/ntddk.h does not
 * compile for the x86_64-pc-windows-msvc target (its intrin.h pulls clang's mmintrin.h with
 * _MSC_VER set and __GNUC__ unset, so the vector attributes vanish). Layouts follow the DDI
 * pages' structure definitions; only what the fixtures use is declared.
 */
#ifndef FLTEMU_KM_H
#define FLTEMU_KM_H

#if !defined(_M_X64)
#error "fltemu's C drivers are x64 only (clang --target=x86_64-pc-windows-msvc)"
#endif

/* ---- basic types (Windows Data Types page) ------------------------------------------------ */
typedef unsigned char UCHAR, *PUCHAR, BOOLEAN, *PBOOLEAN;
typedef char CHAR, *PCHAR;
typedef unsigned short USHORT, *PUSHORT, WCHAR, *PWCHAR, *PWSTR;
typedef const WCHAR *PCWSTR;
typedef const CHAR *PCSTR;
typedef short SHORT;
typedef unsigned long ULONG, *PULONG;
typedef long LONG, *PLONG, NTSTATUS;
typedef unsigned long long ULONGLONG, ULONG64, ULONG_PTR, SIZE_T, *PULONG_PTR, *PSIZE_T;
typedef long long LONGLONG, LONG64, LONG_PTR;
typedef void VOID, *PVOID, **PPVOID;
typedef PVOID HANDLE, *PHANDLE;
typedef ULONG ACCESS_MASK;
typedef UCHAR KIRQL;
typedef USHORT FLT_CONTEXT_TYPE; /* fltkernel.h: a USHORT (FLT_CONTEXT_REGISTRATION.Flags follows at offset 2) */

#define TRUE 1
#define FALSE 0
#define NULL ((void *)0)
#define NTAPI
#define FLTAPI
#define UNREFERENCED_PARAMETER(P) ((void)(P))
#define NT_SUCCESS(Status) (((NTSTATUS)(Status)) >= 0)
#define FIELD_OFFSET(type, field) ((LONG)__builtin_offsetof(type, field))

typedef union _LARGE_INTEGER {
    struct { ULONG LowPart; LONG HighPart; };
    LONGLONG QuadPart;
} LARGE_INTEGER, *PLARGE_INTEGER;

typedef struct _UNICODE_STRING {
    USHORT Length;
    USHORT MaximumLength;
    PWSTR Buffer;
} UNICODE_STRING, *PUNICODE_STRING;
typedef const UNICODE_STRING *PCUNICODE_STRING;

/* A UNICODE_STRING over a wide string literal (RTL_CONSTANT_STRING in wdm.h). */
#define RTL_CONSTANT_STRING(s) { sizeof(s) - sizeof((s)[0]), sizeof(s), (PWSTR)(s) }

/* ---- NTSTATUS values (ntstatus.h, [MS-ERREF] 2.3.1) --------------------------------------- */
#define STATUS_SUCCESS                   ((NTSTATUS)0x00000000L)
#define STATUS_TIMEOUT                   ((NTSTATUS)0x00000102L)
#define STATUS_BUFFER_OVERFLOW           ((NTSTATUS)0x80000005L)
#define STATUS_DATATYPE_MISALIGNMENT     ((NTSTATUS)0x80000002L)
#define STATUS_UNSUCCESSFUL              ((NTSTATUS)0xC0000001L)
#define STATUS_ACCESS_VIOLATION          ((NTSTATUS)0xC0000005L)
#define STATUS_INVALID_PARAMETER         ((NTSTATUS)0xC000000DL)
#define STATUS_ACCESS_DENIED             ((NTSTATUS)0xC0000022L)
#define STATUS_BUFFER_TOO_SMALL          ((NTSTATUS)0xC0000023L)
#define STATUS_INSUFFICIENT_RESOURCES    ((NTSTATUS)0xC000009AL)
#define STATUS_INVALID_USER_BUFFER       ((NTSTATUS)0xC00000E8L)
#define STATUS_NOT_SUPPORTED             ((NTSTATUS)0xC00000BBL)
#define STATUS_PORT_DISCONNECTED         ((NTSTATUS)0xC0000037L)
#define STATUS_FLT_DO_NOT_ATTACH         ((NTSTATUS)0xC01C000FL)

/* ---- structured exception handling (clang implements __try/__except for the MSVC target) - */
#define EXCEPTION_EXECUTE_HANDLER     1
#define EXCEPTION_CONTINUE_SEARCH     0
#define EXCEPTION_CONTINUE_EXECUTION  (-1)
#define GetExceptionCode() ((NTSTATUS)_exception_code())
#define AbnormalTermination() _abnormal_termination()

/* ---- IRQL, pool (wdm.h) -------------------------------------------------------------------- */
#define PASSIVE_LEVEL 0
#define APC_LEVEL 1
#define DISPATCH_LEVEL 2
typedef ULONG64 POOL_FLAGS;
#define POOL_FLAG_UNINITIALIZED 0x0000000000000002ULL
#define POOL_FLAG_NON_PAGED     0x0000000000000040ULL
#define POOL_FLAG_PAGED         0x0000000000000100ULL

/* ---- object attributes (wdm.h InitializeObjectAttributes) --------------------------------- */
#define OBJ_CASE_INSENSITIVE 0x00000040L
#define OBJ_KERNEL_HANDLE    0x00000200L
typedef PVOID PSECURITY_DESCRIPTOR;
typedef struct _OBJECT_ATTRIBUTES {
    ULONG Length;
    HANDLE RootDirectory;
    PUNICODE_STRING ObjectName;
    ULONG Attributes;
    PVOID SecurityDescriptor;
    PVOID SecurityQualityOfService;
} OBJECT_ATTRIBUTES, *POBJECT_ATTRIBUTES;
#define InitializeObjectAttributes(p, n, a, r, s) do { \
        (p)->Length = sizeof(OBJECT_ATTRIBUTES);        \
        (p)->RootDirectory = (r);                        \
        (p)->Attributes = (a);                           \
        (p)->ObjectName = (n);                           \
        (p)->SecurityDescriptor = (s);                   \
        (p)->SecurityQualityOfService = NULL;            \
    } while (0)

/* ---- opaque kernel objects ----------------------------------------------------------------- */
typedef struct _DRIVER_OBJECT *PDRIVER_OBJECT;
typedef struct _FILE_OBJECT *PFILE_OBJECT;
typedef struct _ETHREAD *PETHREAD;
typedef struct _KTRANSACTION *PKTRANSACTION;
typedef struct _FLT_FILTER *PFLT_FILTER;
typedef struct _FLT_VOLUME *PFLT_VOLUME;
typedef struct _FLT_INSTANCE *PFLT_INSTANCE;
typedef struct _FLT_PORT *PFLT_PORT;
typedef PVOID PFLT_CONTEXT;

/* ---- ntoskrnl.exe (wdm.h / ntifs.h DDI pages) ---------------------------------------------- */
__declspec(dllimport) ULONG DbgPrintEx(ULONG ComponentId, ULONG Level, PCSTR Format, ...);
__declspec(dllimport) __declspec(noreturn) VOID KeBugCheckEx(ULONG BugCheckCode, ULONG_PTR P1, ULONG_PTR P2, ULONG_PTR P3, ULONG_PTR P4);
__declspec(dllimport) KIRQL KeGetCurrentIrql(VOID);
__declspec(dllimport) PVOID ExAllocatePool2(POOL_FLAGS Flags, SIZE_T NumberOfBytes, ULONG Tag);
__declspec(dllimport) VOID ExFreePoolWithTag(PVOID P, ULONG Tag);
__declspec(dllimport) __declspec(noreturn) VOID ExRaiseStatus(NTSTATUS Status);
__declspec(dllimport) VOID ProbeForRead(const volatile VOID *Address, SIZE_T Length, ULONG Alignment);
__declspec(dllimport) VOID ProbeForWrite(volatile VOID *Address, SIZE_T Length, ULONG Alignment);

/* ---- MDLs (wdm.h: the MDL structure's documented fields, x64 layout) ----------------------- */
typedef struct _MDL {
    struct _MDL *Next;
    SHORT Size;
    SHORT MdlFlags;
    USHORT AllocationProcessorNumber;
    USHORT Reserved;
    PVOID Process;
    PVOID MappedSystemVa;
    PVOID StartVa;
    ULONG ByteCount;
    ULONG ByteOffset;
} MDL, *PMDL;
_Static_assert(sizeof(MDL) == 0x30, "MDL header layout");
#define MDL_MAPPED_TO_SYSTEM_VA     0x0001
#define MDL_SOURCE_IS_NONPAGED_POOL 0x0004
typedef enum _MEMORY_CACHING_TYPE { MmNonCached = 0, MmCached = 1 } MEMORY_CACHING_TYPE;
#define NormalPagePriority   16
#define MdlMappingNoExecute  0x40000000
typedef CHAR KPROCESSOR_MODE;
#define KernelMode 0
#define UserMode   1
typedef enum _LOCK_OPERATION { IoReadAccess = 0, IoWriteAccess = 1, IoModifyAccess = 2 } LOCK_OPERATION;
__declspec(dllimport) PMDL IoAllocateMdl(PVOID VirtualAddress, ULONG Length, BOOLEAN SecondaryBuffer, BOOLEAN ChargeQuota, PVOID Irp);
__declspec(dllimport) VOID IoFreeMdl(PMDL Mdl);
__declspec(dllimport) VOID MmProbeAndLockPages(PMDL MemoryDescriptorList, KPROCESSOR_MODE AccessMode, LOCK_OPERATION Operation);
__declspec(dllimport) VOID MmUnlockPages(PMDL MemoryDescriptorList);
__declspec(dllimport) PVOID MmMapLockedPagesSpecifyCache(PMDL MemoryDescriptorList, KPROCESSOR_MODE AccessMode, MEMORY_CACHING_TYPE CacheType, PVOID RequestedAddress, ULONG BugCheckOnFailure, ULONG Priority);
/* MmGetSystemAddressForMdlSafe (wdm.h): a macro over the MDL's flags and MmMapLockedPagesSpecifyCache. */
#define MmGetSystemAddressForMdlSafe(Mdl, Priority)                                              \
    (((Mdl)->MdlFlags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL)) ? (Mdl)->MappedSystemVa \
        : MmMapLockedPagesSpecifyCache((Mdl), KernelMode, MmCached, NULL, FALSE, (Priority)))
__declspec(dllimport) LONG_PTR ObfDereferenceObject(PVOID Object);
#define ObDereferenceObject(o) ObfDereferenceObject(o)
__declspec(dllimport) HANDLE PsGetCurrentProcessId(VOID);
#define DPFLTR_IHVDRIVER_ID 77
#define DPFLTR_ERROR_LEVEL 0
#define DPFLTR_INFO_LEVEL 3

/* ---- fltmgr.sys (fltkernel.h DDI pages) ---------------------------------------------------- */
#define FLT_REGISTRATION_VERSION 0x0203
#define IRP_MJ_CREATE 0x00
#define IRP_MJ_CLOSE 0x02
#define IRP_MJ_READ 0x03
#define IRP_MJ_WRITE 0x04
#define IRP_MJ_CLEANUP 0x12
#define IRP_MJ_OPERATION_END 0x80
#define FLT_CONTEXT_END 0xffff
#define FLT_PORT_ALL_ACCESS 0x001F0001

typedef enum _FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_WITH_CALLBACK = 0,
    FLT_PREOP_SUCCESS_NO_CALLBACK = 1,
    FLT_PREOP_PENDING = 2,
    FLT_PREOP_DISALLOW_FASTIO = 3,
    FLT_PREOP_COMPLETE = 4,
    FLT_PREOP_SYNCHRONIZE = 5,
} FLT_PREOP_CALLBACK_STATUS;

typedef enum _FLT_POSTOP_CALLBACK_STATUS {
    FLT_POSTOP_FINISHED_PROCESSING = 0,
    FLT_POSTOP_MORE_PROCESSING_REQUIRED = 1,
} FLT_POSTOP_CALLBACK_STATUS;

typedef ULONG FLT_POST_OPERATION_FLAGS;
typedef ULONG FLT_FILTER_UNLOAD_FLAGS;
typedef ULONG FLT_INSTANCE_SETUP_FLAGS;
typedef ULONG FLT_INSTANCE_QUERY_TEARDOWN_FLAGS;
typedef ULONG FLT_INSTANCE_TEARDOWN_FLAGS;
typedef ULONG DEVICE_TYPE;
typedef ULONG FLT_FILESYSTEM_TYPE;

typedef struct _IO_STATUS_BLOCK {
    union { NTSTATUS Status; PVOID Pointer; };
    ULONG_PTR Information;
} IO_STATUS_BLOCK, *PIO_STATUS_BLOCK;

/* IO_SECURITY_CONTEXT (wdm.h), what Parameters.Create.SecurityContext points to. */
typedef struct _IO_SECURITY_CONTEXT {
    PVOID SecurityQos;
    PVOID AccessState;
    ACCESS_MASK DesiredAccess;
    ULONG FullCreateOptions;
} IO_SECURITY_CONTEXT, *PIO_SECURITY_CONTEXT;
#define FILE_READ_DATA  0x0001
#define FILE_WRITE_DATA 0x0002

/* FLT_PARAMETERS (fltkernel.h): the Create, Read and Write members only (the union is larger). */
typedef union _FLT_PARAMETERS {
    struct {
        PIO_SECURITY_CONTEXT SecurityContext;
        ULONG Options;
        /* POINTER_ALIGNMENT (fltkernel.h): FileAttributes at 0x10, EaLength at 0x18 on x64. */
        __declspec(align(8)) USHORT FileAttributes;
        USHORT ShareAccess;
        __declspec(align(8)) ULONG EaLength;
        PVOID EaBuffer;
        LARGE_INTEGER AllocationSize;
    } Create;
    struct {
        ULONG Length;
        __declspec(align(8)) ULONG Key;
        LARGE_INTEGER ByteOffset;
        PVOID ReadBuffer;
        PMDL MdlAddress;
    } Read;
    struct {
        ULONG Length;
        __declspec(align(8)) ULONG Key;
        LARGE_INTEGER ByteOffset;
        PVOID WriteBuffer;
        PMDL MdlAddress;
    } Write;
    struct {
        ULONG Length;
        /* FILE_INFORMATION_CLASS, POINTER_ALIGNMENT (fltkernel.h): at 8, InfoBuffer at 0x10. */
        __declspec(align(8)) LONG FileInformationClass;
        PVOID InfoBuffer;
    } QueryFileInformation;
} FLT_PARAMETERS;
_Static_assert(__builtin_offsetof(FLT_PARAMETERS, Create.ShareAccess) == 0x12, "Create.ShareAccess at 0x12 on x64");
_Static_assert(__builtin_offsetof(FLT_PARAMETERS, Create.EaLength) == 0x18, "Create.EaLength at 0x18 on x64");
_Static_assert(__builtin_offsetof(FLT_PARAMETERS, Create.AllocationSize) == 0x28, "Create.AllocationSize at 0x28 on x64");

/* IrpFlags bits (wdm.h). */
#define IRP_NOCACHE   0x00000001
#define IRP_PAGING_IO 0x00000002

typedef struct _FLT_IO_PARAMETER_BLOCK {
    ULONG IrpFlags;
    UCHAR MajorFunction;
    UCHAR MinorFunction;
    UCHAR OperationFlags;
    UCHAR Reserved;
    PFILE_OBJECT TargetFileObject;
    PFLT_INSTANCE TargetInstance;
    FLT_PARAMETERS Parameters;
} FLT_IO_PARAMETER_BLOCK, *PFLT_IO_PARAMETER_BLOCK;
_Static_assert(FIELD_OFFSET(FLT_IO_PARAMETER_BLOCK, Parameters) == 0x18, "FLT_IO_PARAMETER_BLOCK layout");
_Static_assert(FIELD_OFFSET(FLT_PARAMETERS, Read.ByteOffset) == 0x10 && FIELD_OFFSET(FLT_PARAMETERS, Read.MdlAddress) == 0x20, "FLT_PARAMETERS.Read layout (Key is POINTER_ALIGNMENT)");
_Static_assert(FIELD_OFFSET(FLT_PARAMETERS, Write.MdlAddress) == 0x20, "FLT_PARAMETERS.Write layout");

typedef struct _FLT_CALLBACK_DATA {
    ULONG Flags;
    PETHREAD Thread;
    PFLT_IO_PARAMETER_BLOCK Iopb;
    IO_STATUS_BLOCK IoStatus;
    PVOID TagData;
    PVOID FilterContext[4];
    CHAR RequestorMode;
} FLT_CALLBACK_DATA, *PFLT_CALLBACK_DATA;
_Static_assert(FIELD_OFFSET(FLT_CALLBACK_DATA, RequestorMode) == 0x50, "FLT_CALLBACK_DATA layout");

typedef struct _FLT_RELATED_OBJECTS {
    USHORT Size;
    USHORT TransactionContext;
    PFLT_FILTER Filter;
    PFLT_VOLUME Volume;
    PFLT_INSTANCE Instance;
    PFILE_OBJECT FileObject;
    PKTRANSACTION Transaction;
} FLT_RELATED_OBJECTS, *PFLT_RELATED_OBJECTS;
typedef const FLT_RELATED_OBJECTS *PCFLT_RELATED_OBJECTS;

typedef FLT_PREOP_CALLBACK_STATUS (*PFLT_PRE_OPERATION_CALLBACK)(PFLT_CALLBACK_DATA Data, PCFLT_RELATED_OBJECTS FltObjects, PVOID *CompletionContext);
typedef FLT_POSTOP_CALLBACK_STATUS (*PFLT_POST_OPERATION_CALLBACK)(PFLT_CALLBACK_DATA Data, PCFLT_RELATED_OBJECTS FltObjects, PVOID CompletionContext, FLT_POST_OPERATION_FLAGS Flags);
typedef NTSTATUS (*PFLT_FILTER_UNLOAD_CALLBACK)(FLT_FILTER_UNLOAD_FLAGS Flags);
typedef NTSTATUS (*PFLT_INSTANCE_SETUP_CALLBACK)(PCFLT_RELATED_OBJECTS FltObjects, FLT_INSTANCE_SETUP_FLAGS Flags, DEVICE_TYPE VolumeDeviceType, FLT_FILESYSTEM_TYPE VolumeFilesystemType);
typedef NTSTATUS (*PFLT_INSTANCE_QUERY_TEARDOWN_CALLBACK)(PCFLT_RELATED_OBJECTS FltObjects, FLT_INSTANCE_QUERY_TEARDOWN_FLAGS Flags);
typedef VOID (*PFLT_INSTANCE_TEARDOWN_CALLBACK)(PCFLT_RELATED_OBJECTS FltObjects, FLT_INSTANCE_TEARDOWN_FLAGS Reason);

typedef struct _FLT_OPERATION_REGISTRATION {
    UCHAR MajorFunction;
    ULONG Flags;
    PFLT_PRE_OPERATION_CALLBACK PreOperation;
    PFLT_POST_OPERATION_CALLBACK PostOperation;
    PVOID Reserved1;
} FLT_OPERATION_REGISTRATION;

typedef VOID (*PFLT_CONTEXT_CLEANUP_CALLBACK)(PFLT_CONTEXT Context, FLT_CONTEXT_TYPE ContextType);
typedef struct _FLT_CONTEXT_REGISTRATION {
    FLT_CONTEXT_TYPE ContextType;
    USHORT Flags;
    PFLT_CONTEXT_CLEANUP_CALLBACK ContextCleanupCallback;
    SIZE_T Size;
    ULONG PoolTag;
    PVOID ContextAllocateCallback;
    PVOID ContextFreeCallback;
    PVOID Reserved1;
} FLT_CONTEXT_REGISTRATION;

typedef struct _FLT_REGISTRATION {
    USHORT Size;
    USHORT Version;
    ULONG Flags;
    const FLT_CONTEXT_REGISTRATION *ContextRegistration;
    const FLT_OPERATION_REGISTRATION *OperationRegistration;
    PFLT_FILTER_UNLOAD_CALLBACK FilterUnloadCallback;
    PFLT_INSTANCE_SETUP_CALLBACK InstanceSetupCallback;
    PFLT_INSTANCE_QUERY_TEARDOWN_CALLBACK InstanceQueryTeardownCallback;
    PFLT_INSTANCE_TEARDOWN_CALLBACK InstanceTeardownStartCallback;
    PFLT_INSTANCE_TEARDOWN_CALLBACK InstanceTeardownCompleteCallback;
    PVOID GenerateFileNameCallback;
    PVOID NormalizeNameComponentCallback;
    PVOID NormalizeContextCleanupCallback;
    PVOID TransactionNotificationCallback;
    PVOID NormalizeNameComponentExCallback;
    PVOID SectionNotificationCallback;
} FLT_REGISTRATION;
_Static_assert(sizeof(FLT_REGISTRATION) == 0x70, "FLT_REGISTRATION is 0x70 bytes for version 0x0203");
_Static_assert(sizeof(FLT_OPERATION_REGISTRATION) == 32, "FLT_OPERATION_REGISTRATION layout");
_Static_assert(sizeof(FLT_RELATED_OBJECTS) == 48, "FLT_RELATED_OBJECTS layout");

typedef NTSTATUS (*PFLT_CONNECT_NOTIFY)(PFLT_PORT ClientPort, PVOID ServerPortCookie, PVOID ConnectionContext, ULONG SizeOfContext, PVOID *ConnectionPortCookie);
typedef VOID (*PFLT_DISCONNECT_NOTIFY)(PVOID ConnectionCookie);
typedef NTSTATUS (*PFLT_MESSAGE_NOTIFY)(PVOID PortCookie, PVOID InputBuffer, ULONG InputBufferLength, PVOID OutputBuffer, ULONG OutputBufferLength, PULONG ReturnOutputBufferLength);

__declspec(dllimport) NTSTATUS FltRegisterFilter(PDRIVER_OBJECT Driver, const FLT_REGISTRATION *Registration, PFLT_FILTER *RetFilter);
__declspec(dllimport) NTSTATUS FltStartFiltering(PFLT_FILTER Filter);
__declspec(dllimport) VOID FltUnregisterFilter(PFLT_FILTER Filter);
__declspec(dllimport) NTSTATUS FltBuildDefaultSecurityDescriptor(PSECURITY_DESCRIPTOR *SecurityDescriptor, ACCESS_MASK DesiredAccess);
__declspec(dllimport) VOID FltFreeSecurityDescriptor(PSECURITY_DESCRIPTOR SecurityDescriptor);
__declspec(dllimport) NTSTATUS FltCreateCommunicationPort(PFLT_FILTER Filter, PFLT_PORT *ServerPort, POBJECT_ATTRIBUTES ObjectAttributes, PVOID ServerPortCookie, PFLT_CONNECT_NOTIFY ConnectNotifyCallback, PFLT_DISCONNECT_NOTIFY DisconnectNotifyCallback, PFLT_MESSAGE_NOTIFY MessageNotifyCallback, LONG MaxConnections);
__declspec(dllimport) VOID FltCloseCommunicationPort(PFLT_PORT ServerPort);
__declspec(dllimport) VOID FltCloseClientPort(PFLT_FILTER Filter, PFLT_PORT *ClientPort);
__declspec(dllimport) NTSTATUS FltSendMessage(PFLT_FILTER Filter, PFLT_PORT *ClientPort, PVOID SenderBuffer, ULONG SenderBufferLength, PVOID ReplyBuffer, PULONG ReplyLength, PLARGE_INTEGER Timeout);
__declspec(dllimport) ULONG FltGetRequestorProcessId(PFLT_CALLBACK_DATA CallbackData);

/* ---- pended operations, deferred I/O and generic work items (fltkernel.h / wdm.h DDI pages:
 * FltCompletePendedPreOperation, FltCompletePendedPostOperation,
 * FltDoCompletionProcessingWhenSafe, FltAllocate/Queue/FreeDeferredIoWorkItem,
 * FltAllocate/Queue/FreeGenericWorkItem) ------------------------------------------------------ */
#define STATUS_FLT_NOT_SAFE_TO_POST_OPERATION ((NTSTATUS)0xC01C0006L)
#define STATUS_FLT_DELETING_OBJECT            ((NTSTATUS)0xC01C000BL)
#define FLTFL_CALLBACK_DATA_IRP_OPERATION 0x00000001
#define FLT_IS_IRP_OPERATION(Data) (((Data)->Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION) != 0)
#define FLTFL_POST_OPERATION_DRAINING 0x00000001
typedef FLT_POSTOP_CALLBACK_STATUS *PFLT_POSTOP_CALLBACK_STATUS;
typedef enum _WORK_QUEUE_TYPE { CriticalWorkQueue = 0, DelayedWorkQueue = 1, HyperCriticalWorkQueue = 2 } WORK_QUEUE_TYPE;
typedef struct _FLT_DEFERRED_IO_WORKITEM *PFLT_DEFERRED_IO_WORKITEM;
typedef struct _FLT_GENERIC_WORKITEM *PFLT_GENERIC_WORKITEM;
typedef VOID (*PFLT_DEFERRED_IO_WORKITEM_ROUTINE)(PFLT_DEFERRED_IO_WORKITEM FltWorkItem, PFLT_CALLBACK_DATA CallbackData, PVOID Context);
typedef VOID (*PFLT_GENERIC_WORKITEM_ROUTINE)(PFLT_GENERIC_WORKITEM FltWorkItem, PVOID FltObject, PVOID Context);
__declspec(dllimport) VOID FltCompletePendedPreOperation(PFLT_CALLBACK_DATA CallbackData, FLT_PREOP_CALLBACK_STATUS CallbackStatus, PVOID Context);
__declspec(dllimport) VOID FltCompletePendedPostOperation(PFLT_CALLBACK_DATA CallbackData);
__declspec(dllimport) BOOLEAN FltDoCompletionProcessingWhenSafe(PFLT_CALLBACK_DATA Data, PCFLT_RELATED_OBJECTS FltObjects, PVOID CompletionContext, FLT_POST_OPERATION_FLAGS Flags, PFLT_POST_OPERATION_CALLBACK SafePostCallback, PFLT_POSTOP_CALLBACK_STATUS RetPostOperationStatus);
__declspec(dllimport) PFLT_DEFERRED_IO_WORKITEM FltAllocateDeferredIoWorkItem(VOID);
__declspec(dllimport) NTSTATUS FltQueueDeferredIoWorkItem(PFLT_DEFERRED_IO_WORKITEM FltWorkItem, PFLT_CALLBACK_DATA Data, PFLT_DEFERRED_IO_WORKITEM_ROUTINE WorkerRoutine, WORK_QUEUE_TYPE QueueType, PVOID Context);
__declspec(dllimport) VOID FltFreeDeferredIoWorkItem(PFLT_DEFERRED_IO_WORKITEM FltWorkItem);
__declspec(dllimport) PFLT_GENERIC_WORKITEM FltAllocateGenericWorkItem(VOID);
__declspec(dllimport) NTSTATUS FltQueueGenericWorkItem(PFLT_GENERIC_WORKITEM FltWorkItem, PVOID FltObject, PFLT_GENERIC_WORKITEM_ROUTINE WorkerRoutine, WORK_QUEUE_TYPE QueueType, PVOID Context);
__declspec(dllimport) VOID FltFreeGenericWorkItem(PFLT_GENERIC_WORKITEM FltWorkItem);
/* ---- I/O a filter issues itself, and its user buffers (fltkernel.h) -------------------------- */
#define STATUS_END_OF_FILE ((NTSTATUS)0xC0000011L)
#define FLTFL_IO_OPERATION_NON_CACHED                0x00000001
#define FLTFL_IO_OPERATION_PAGING                    0x00000002
#define FLTFL_IO_OPERATION_DO_NOT_UPDATE_BYTE_OFFSET 0x00000004
#define FILE_SHARE_READ   0x00000001
#define FILE_SHARE_WRITE  0x00000002
#define FILE_SHARE_DELETE 0x00000004
#define FILE_OPEN 0x00000001
#define FILE_DIRECTORY_FILE 0x00000001
#define FILE_NON_DIRECTORY_FILE 0x00000040
#define IO_IGNORE_SHARE_ACCESS_CHECK 0x0800
#define SYNCHRONIZE 0x00100000L
typedef VOID (*PFLT_COMPLETED_ASYNC_IO_CALLBACK)(PFLT_CALLBACK_DATA CallbackData, PVOID Context);
__declspec(dllimport) NTSTATUS FltReadFile(PFLT_INSTANCE InitiatingInstance, PFILE_OBJECT FileObject, PLARGE_INTEGER ByteOffset, ULONG Length, PVOID Buffer, ULONG Flags, PULONG BytesRead, PFLT_COMPLETED_ASYNC_IO_CALLBACK CallbackRoutine, PVOID CallbackContext);
__declspec(dllimport) NTSTATUS FltWriteFile(PFLT_INSTANCE InitiatingInstance, PFILE_OBJECT FileObject, PLARGE_INTEGER ByteOffset, ULONG Length, PVOID Buffer, ULONG Flags, PULONG BytesWritten, PFLT_COMPLETED_ASYNC_IO_CALLBACK CallbackRoutine, PVOID CallbackContext);
__declspec(dllimport) NTSTATUS FltCreateFileEx(PFLT_FILTER Filter, PFLT_INSTANCE Instance, PHANDLE FileHandle, PFILE_OBJECT *FileObject, ACCESS_MASK DesiredAccess, POBJECT_ATTRIBUTES ObjectAttributes, PIO_STATUS_BLOCK IoStatusBlock, PLARGE_INTEGER AllocationSize, ULONG FileAttributes, ULONG ShareAccess, ULONG CreateDisposition, ULONG CreateOptions, PVOID EaBuffer, ULONG EaLength, ULONG Flags);
__declspec(dllimport) NTSTATUS FltClose(HANDLE FileHandle);
__declspec(dllimport) VOID FltCancelFileOpen(PFLT_INSTANCE Instance, PFILE_OBJECT FileObject);
__declspec(dllimport) VOID FltSetCallbackDataDirty(PFLT_CALLBACK_DATA Data);
__declspec(dllimport) BOOLEAN FltIsCallbackDataDirty(PFLT_CALLBACK_DATA Data);
__declspec(dllimport) NTSTATUS FltAllocateCallbackData(PFLT_INSTANCE Instance, PFILE_OBJECT FileObject, PFLT_CALLBACK_DATA *RetNewCallbackData);
__declspec(dllimport) VOID FltPerformSynchronousIo(PFLT_CALLBACK_DATA CallbackData);
__declspec(dllimport) VOID FltFreeCallbackData(PFLT_CALLBACK_DATA CallbackData);
__declspec(dllimport) VOID FltReuseCallbackData(PFLT_CALLBACK_DATA CallbackData);
__declspec(dllimport) VOID MmBuildMdlForNonPagedPool(PMDL MemoryDescriptorList);
#define IRP_MJ_QUERY_INFORMATION 0x05
/* CreateDisposition values and what a create reports in IoStatus.Information (wdm.h). */
#define FILE_SUPERSEDE    0x00000000
#define FILE_CREATE       0x00000002
#define FILE_OVERWRITE    0x00000004
#define FILE_OVERWRITE_IF 0x00000005
#define FILE_SUPERSEDED   0x00000000
#define FILE_OPENED       0x00000001
#define FILE_CREATED      0x00000002
#define FILE_OVERWRITTEN  0x00000003
/* ByteOffset.LowPart of an append (HighPart -1): the FltWriteFile page. */
#define FILE_WRITE_TO_END_OF_FILE 0xffffffff
#define STATUS_OBJECT_NAME_NOT_FOUND ((NTSTATUS)0xC0000034L)
#define STATUS_OBJECT_NAME_COLLISION ((NTSTATUS)0xC0000035L)
#define STATUS_FLT_VOLUME_NOT_FOUND  ((NTSTATUS)0xC01C0014L)

/* FILTER_REPLY_HEADER (fltuserstructures.h): what a user-mode reply starts with. */
typedef struct _FILTER_REPLY_HEADER {
    NTSTATUS Status;
    ULONGLONG MessageId;
} FILTER_REPLY_HEADER;


/* ---- processes, threads, handles, devices (wdm.h / ntddk.h / ntifs.h DDI pages; monitor.c) -- */
#define STATUS_INFO_LENGTH_MISMATCH ((NTSTATUS)0xC0000004L)
#define STATUS_OBJECT_TYPE_MISMATCH ((NTSTATUS)0xC0000024L)
#define THREAD_ALL_ACCESS  0x001FFFFF
#define PROCESS_QUERY_LIMITED_INFORMATION 0x1000
#define FILE_DEVICE_UNKNOWN 0x00000022
#define FILE_DEVICE_SECURE_OPEN 0x00000100
typedef struct _EPROCESS *PEPROCESS;
typedef struct _OBJECT_TYPE *POBJECT_TYPE;
typedef struct _DEVICE_OBJECT *PDEVICE_OBJECT;
typedef ULONG_PTR KSPIN_LOCK, *PKSPIN_LOCK;
typedef enum _EVENT_TYPE { NotificationEvent = 0, SynchronizationEvent = 1 } EVENT_TYPE;
typedef enum _KWAIT_REASON { Executive = 0 } KWAIT_REASON;
/* KEVENT: a DISPATCHER_HEADER (0x18 bytes); opaque to drivers. */
typedef struct _KEVENT { ULONG_PTR Header[3]; } KEVENT, *PKEVENT;
typedef struct _CLIENT_ID { HANDLE UniqueProcess; HANDLE UniqueThread; } CLIENT_ID, *PCLIENT_ID;
typedef enum _PROCESSINFOCLASS { ProcessBasicInformation = 0, ProcessImageFileName = 27 } PROCESSINFOCLASS;
typedef struct _PROCESS_BASIC_INFORMATION {
    NTSTATUS ExitStatus;
    PVOID PebBaseAddress;
    ULONG_PTR AffinityMask;
    LONG BasePriority;
    ULONG_PTR UniqueProcessId;
    ULONG_PTR InheritedFromUniqueProcessId;
} PROCESS_BASIC_INFORMATION;
_Static_assert(sizeof(PROCESS_BASIC_INFORMATION) == 48, "PROCESS_BASIC_INFORMATION layout");
typedef VOID (*PKSTART_ROUTINE)(PVOID StartContext);
typedef VOID (*PCREATE_PROCESS_NOTIFY_ROUTINE)(HANDLE ParentId, HANDLE ProcessId, BOOLEAN Create);
typedef VOID (*PCREATE_THREAD_NOTIFY_ROUTINE)(HANDLE ProcessId, HANDLE ThreadId, BOOLEAN Create);
typedef VOID (*PLOAD_IMAGE_NOTIFY_ROUTINE)(PUNICODE_STRING FullImageName, HANDLE ProcessId, PVOID ImageInfo);
#define NtCurrentProcess() ((HANDLE)(LONG_PTR)-1)
/* The exported variables hold the object type; wdm.h declares them `POBJECT_TYPE *` bound to the
 * import slot itself (no dllimport), which llvm-dlltool's import libraries cannot express. As a
 * one-element dllimport array, `*PsProcessType` is still the exported variable's value. */
__declspec(dllimport) extern POBJECT_TYPE PsProcessType[1];
__declspec(dllimport) extern POBJECT_TYPE PsThreadType[1];
__declspec(dllimport) VOID KeInitializeEvent(PKEVENT Event, EVENT_TYPE Type, BOOLEAN State);
__declspec(dllimport) LONG KeSetEvent(PKEVENT Event, LONG Increment, BOOLEAN Wait);
__declspec(dllimport) NTSTATUS KeWaitForSingleObject(PVOID Object, KWAIT_REASON WaitReason, KPROCESSOR_MODE WaitMode, BOOLEAN Alertable, PLARGE_INTEGER Timeout);
__declspec(dllimport) KIRQL KeAcquireSpinLockRaiseToDpc(PKSPIN_LOCK SpinLock);
__declspec(dllimport) VOID KeReleaseSpinLock(PKSPIN_LOCK SpinLock, KIRQL NewIrql);
__declspec(dllimport) NTSTATUS PsCreateSystemThread(PHANDLE ThreadHandle, ULONG DesiredAccess, POBJECT_ATTRIBUTES ObjectAttributes, HANDLE ProcessHandle, PCLIENT_ID ClientId, PKSTART_ROUTINE StartRoutine, PVOID StartContext);
__declspec(dllimport) NTSTATUS PsTerminateSystemThread(NTSTATUS ExitStatus);
__declspec(dllimport) NTSTATUS PsSetCreateProcessNotifyRoutine(PCREATE_PROCESS_NOTIFY_ROUTINE NotifyRoutine, BOOLEAN Remove);
__declspec(dllimport) NTSTATUS PsSetCreateThreadNotifyRoutine(PCREATE_THREAD_NOTIFY_ROUTINE NotifyRoutine);
__declspec(dllimport) NTSTATUS PsRemoveCreateThreadNotifyRoutine(PCREATE_THREAD_NOTIFY_ROUTINE NotifyRoutine);
__declspec(dllimport) NTSTATUS PsSetLoadImageNotifyRoutine(PLOAD_IMAGE_NOTIFY_ROUTINE NotifyRoutine);
__declspec(dllimport) NTSTATUS PsRemoveLoadImageNotifyRoutine(PLOAD_IMAGE_NOTIFY_ROUTINE NotifyRoutine);
__declspec(dllimport) NTSTATUS PsLookupProcessByProcessId(HANDLE ProcessId, PEPROCESS *Process);
__declspec(dllimport) HANDLE PsGetProcessId(PEPROCESS Process);
__declspec(dllimport) NTSTATUS ZwOpenProcess(PHANDLE ProcessHandle, ACCESS_MASK DesiredAccess, POBJECT_ATTRIBUTES ObjectAttributes, PCLIENT_ID ClientId);
__declspec(dllimport) NTSTATUS ZwQueryInformationProcess(HANDLE ProcessHandle, PROCESSINFOCLASS ProcessInformationClass, PVOID ProcessInformation, ULONG ProcessInformationLength, PULONG ReturnLength);
__declspec(dllimport) NTSTATUS ObOpenObjectByPointer(PVOID Object, ULONG HandleAttributes, PVOID PassedAccessState, ACCESS_MASK DesiredAccess, POBJECT_TYPE ObjectType, KPROCESSOR_MODE AccessMode, PHANDLE Handle);
__declspec(dllimport) NTSTATUS ObReferenceObjectByHandle(HANDLE Handle, ACCESS_MASK DesiredAccess, POBJECT_TYPE ObjectType, KPROCESSOR_MODE AccessMode, PVOID *Object, PVOID HandleInformation);
__declspec(dllimport) LONG_PTR ObfDereferenceObject(PVOID Object);
#define ObDereferenceObject(o) ObfDereferenceObject(o)
__declspec(dllimport) NTSTATUS ZwClose(HANDLE Handle);
__declspec(dllimport) NTSTATUS IoCreateDevice(PDRIVER_OBJECT DriverObject, ULONG DeviceExtensionSize, PUNICODE_STRING DeviceName, DEVICE_TYPE DeviceType, ULONG DeviceCharacteristics, BOOLEAN Exclusive, PDEVICE_OBJECT *DeviceObject);
__declspec(dllimport) VOID IoDeleteDevice(PDEVICE_OBJECT DeviceObject);
__declspec(dllimport) NTSTATUS IoCreateSymbolicLink(PUNICODE_STRING SymbolicLinkName, PUNICODE_STRING DeviceName);
__declspec(dllimport) NTSTATUS IoDeleteSymbolicLink(PUNICODE_STRING SymbolicLinkName);
__declspec(dllimport) PVOID IoGetTopLevelIrp(VOID);

/* ---- volumes enumerated, links queried, ANSI strings, versions (monitor.c) ----------------- */
#define STATUS_PENDING ((NTSTATUS)0x00000103L)
typedef struct _STRING { USHORT Length; USHORT MaximumLength; PCHAR Buffer; } ANSI_STRING, *PANSI_STRING;
typedef struct _OSVERSIONINFOW {
    ULONG dwOSVersionInfoSize;
    ULONG dwMajorVersion;
    ULONG dwMinorVersion;
    ULONG dwBuildNumber;
    ULONG dwPlatformId;
    WCHAR szCSDVersion[128];
} RTL_OSVERSIONINFOW, *PRTL_OSVERSIONINFOW;
_Static_assert(sizeof(RTL_OSVERSIONINFOW) == 276, "RTL_OSVERSIONINFOW layout");
__declspec(dllimport) NTSTATUS FltEnumerateVolumes(PFLT_FILTER Filter, PFLT_VOLUME *VolumeList, ULONG VolumeListSize, PULONG NumberVolumesReturned);
__declspec(dllimport) NTSTATUS FltEnumerateInstances(PFLT_VOLUME Volume, PFLT_FILTER Filter, PFLT_INSTANCE *InstanceList, ULONG InstanceListSize, PULONG NumberInstancesReturned);
__declspec(dllimport) NTSTATUS FltGetVolumeGuidName(PFLT_VOLUME Volume, PUNICODE_STRING VolumeGuidName, PULONG BufferSizeNeeded);
__declspec(dllimport) VOID FltObjectDereference(PVOID FltObject);
__declspec(dllimport) NTSTATUS ZwOpenSymbolicLinkObject(PHANDLE LinkHandle, ACCESS_MASK DesiredAccess, POBJECT_ATTRIBUTES ObjectAttributes);
__declspec(dllimport) NTSTATUS ZwQuerySymbolicLinkObject(HANDLE LinkHandle, PUNICODE_STRING LinkTarget, PULONG ReturnedLength);
__declspec(dllimport) NTSTATUS RtlGetVersion(PRTL_OSVERSIONINFOW lpVersionInformation);
__declspec(dllimport) NTSTATUS RtlUnicodeStringToAnsiString(PANSI_STRING DestinationString, PCUNICODE_STRING SourceString, BOOLEAN AllocateDestinationString);
__declspec(dllimport) VOID RtlFreeAnsiString(PANSI_STRING AnsiString);
__declspec(dllimport) BOOLEAN RtlSuffixUnicodeString(PCUNICODE_STRING Suffix, PCUNICODE_STRING String2, BOOLEAN CaseInSensitive);
__declspec(dllimport) BOOLEAN RtlEqualUnicodeString(PCUNICODE_STRING String1, PCUNICODE_STRING String2, BOOLEAN CaseInSensitive);
__declspec(dllimport) NTSTATUS PsGetProcessExitStatus(PEPROCESS Process);
__declspec(dllimport) KPROCESSOR_MODE ExGetPreviousMode(VOID);
#define SYMBOLIC_LINK_QUERY 0x0001

/* ---- interlocked lists, mutex objects, attaching, DDI versions (monitor.c) ------------------ */
typedef struct _LIST_ENTRY { struct _LIST_ENTRY *Flink; struct _LIST_ENTRY *Blink; } LIST_ENTRY, *PLIST_ENTRY;
#define InitializeListHead(h) ((h)->Flink = (h)->Blink = (h))
#define CONTAINING_RECORD(address, type, field) ((type *)((PCHAR)(address) - (ULONG_PTR)(&((type *)0)->field)))
/* KMUTEX and KAPC_STATE: opaque, sized as wdm.h / ntifs.h define them on x64. */
typedef struct _KMUTANT { ULONG_PTR Opaque[7]; } KMUTEX, *PKMUTEX;
typedef struct _KAPC_STATE { ULONG_PTR Opaque[6]; } KAPC_STATE, *PKAPC_STATE;
#define NTDDI_WIN10 0x0A000000
__declspec(dllimport) PLIST_ENTRY ExInterlockedInsertTailList(PLIST_ENTRY ListHead, PLIST_ENTRY ListEntry, PKSPIN_LOCK Lock);
__declspec(dllimport) PLIST_ENTRY ExInterlockedRemoveHeadList(PLIST_ENTRY ListHead, PKSPIN_LOCK Lock);
__declspec(dllimport) VOID KeInitializeMutex(PKMUTEX Mutex, ULONG Level);
__declspec(dllimport) LONG KeReleaseMutex(PKMUTEX Mutex, BOOLEAN Wait);
__declspec(dllimport) VOID KeStackAttachProcess(PEPROCESS Process, PKAPC_STATE ApcState);
__declspec(dllimport) VOID KeUnstackDetachProcess(PKAPC_STATE ApcState);
__declspec(dllimport) BOOLEAN RtlIsNtDdiVersionAvailable(ULONG Version);

/* ---- AVL generic tables (ntddk.h; RTL_AVL_TABLE is 0x68 bytes on x64, opaque here) ---------- */
typedef struct _RTL_AVL_TABLE { ULONG_PTR Opaque[13]; } RTL_AVL_TABLE, *PRTL_AVL_TABLE;
typedef enum _RTL_GENERIC_COMPARE_RESULTS { GenericLessThan, GenericGreaterThan, GenericEqual } RTL_GENERIC_COMPARE_RESULTS;
typedef RTL_GENERIC_COMPARE_RESULTS (*PRTL_AVL_COMPARE_ROUTINE)(PRTL_AVL_TABLE Table, PVOID FirstStruct, PVOID SecondStruct);
typedef PVOID (*PRTL_AVL_ALLOCATE_ROUTINE)(PRTL_AVL_TABLE Table, ULONG ByteSize);
typedef VOID (*PRTL_AVL_FREE_ROUTINE)(PRTL_AVL_TABLE Table, PVOID Buffer);
__declspec(dllimport) VOID RtlInitializeGenericTableAvl(PRTL_AVL_TABLE Table, PRTL_AVL_COMPARE_ROUTINE CompareRoutine, PRTL_AVL_ALLOCATE_ROUTINE AllocateRoutine, PRTL_AVL_FREE_ROUTINE FreeRoutine, PVOID TableContext);
__declspec(dllimport) PVOID RtlInsertElementGenericTableAvl(PRTL_AVL_TABLE Table, PVOID Buffer, ULONG BufferSize, PBOOLEAN NewElement);
__declspec(dllimport) PVOID RtlLookupElementGenericTableAvl(PRTL_AVL_TABLE Table, PVOID Buffer);
__declspec(dllimport) BOOLEAN RtlDeleteElementGenericTableAvl(PRTL_AVL_TABLE Table, PVOID Buffer);
__declspec(dllimport) PVOID RtlEnumerateGenericTableWithoutSplayingAvl(PRTL_AVL_TABLE Table, PVOID *RestartKey);
__declspec(dllimport) ULONG RtlNumberGenericTableElementsAvl(PRTL_AVL_TABLE Table);

/* ---- GUID strings, stack limits (monitor.c) ------------------------------------------------- */
typedef struct _GUID { ULONG Data1; USHORT Data2; USHORT Data3; UCHAR Data4[8]; } GUID;
__declspec(dllimport) NTSTATUS RtlStringFromGUID(const GUID *Guid, PUNICODE_STRING GuidString);
__declspec(dllimport) VOID RtlFreeUnicodeString(PUNICODE_STRING UnicodeString);
__declspec(dllimport) VOID IoGetStackLimits(PULONG_PTR LowLimit, PULONG_PTR HighLimit);
/* ---- exception records, CONTEXT and the x64 unwind routines (winnt.h; "x64 exception
 * handling"; RtlCaptureContext, RtlLookupFunctionEntry, RtlVirtualUnwind, RtlUnwindEx pages) -- */
#define STATUS_BREAKPOINT                ((NTSTATUS)0x80000003L)
#define STATUS_ILLEGAL_INSTRUCTION       ((NTSTATUS)0xC000001DL)
#define STATUS_INTEGER_DIVIDE_BY_ZERO    ((NTSTATUS)0xC0000094L)
#define STATUS_INTEGER_OVERFLOW          ((NTSTATUS)0xC0000095L)
typedef ULONG64 *PULONG64;
typedef struct _EXCEPTION_RECORD {
    NTSTATUS ExceptionCode;
    ULONG ExceptionFlags;
    struct _EXCEPTION_RECORD *ExceptionRecord;
    PVOID ExceptionAddress;
    ULONG NumberParameters;
    ULONG_PTR ExceptionInformation[15];
} EXCEPTION_RECORD, *PEXCEPTION_RECORD;
typedef struct __declspec(align(16)) _M128A { ULONGLONG Low; LONGLONG High; } M128A, *PM128A;
typedef struct __declspec(align(16)) _CONTEXT {
    ULONG64 P1Home, P2Home, P3Home, P4Home, P5Home, P6Home;
    ULONG ContextFlags;
    ULONG MxCsr;
    USHORT SegCs, SegDs, SegEs, SegFs, SegGs, SegSs;
    ULONG EFlags;
    ULONG64 Dr0, Dr1, Dr2, Dr3, Dr6, Dr7;
    ULONG64 Rax, Rcx, Rdx, Rbx, Rsp, Rbp, Rsi, Rdi, R8, R9, R10, R11, R12, R13, R14, R15;
    ULONG64 Rip;
    UCHAR FltSave[512]; /* XMM_SAVE_AREA32 */
    M128A VectorRegister[26];
    ULONG64 VectorControl, DebugControl, LastBranchToRip, LastBranchFromRip, LastExceptionToRip, LastExceptionFromRip;
} CONTEXT, *PCONTEXT;
_Static_assert(sizeof(CONTEXT) == 0x4D0, "CONTEXT is 0x4D0 bytes on x64");
_Static_assert(__builtin_offsetof(CONTEXT, Rip) == 0xF8, "CONTEXT.Rip at 0xF8");
typedef struct _EXCEPTION_POINTERS {
    PEXCEPTION_RECORD ExceptionRecord;
    PCONTEXT ContextRecord;
} EXCEPTION_POINTERS, *PEXCEPTION_POINTERS;
#define GetExceptionInformation() ((PEXCEPTION_POINTERS)_exception_info())
typedef struct _RUNTIME_FUNCTION { ULONG BeginAddress; ULONG EndAddress; ULONG UnwindData; } RUNTIME_FUNCTION, *PRUNTIME_FUNCTION;
typedef struct _KNONVOLATILE_CONTEXT_POINTERS { PM128A FloatingContext[16]; PULONG64 IntegerContext[16]; } KNONVOLATILE_CONTEXT_POINTERS, *PKNONVOLATILE_CONTEXT_POINTERS;
typedef struct _UNWIND_HISTORY_TABLE *PUNWIND_HISTORY_TABLE; /* optional cache; the fixtures pass NULL */
typedef LONG (*PEXCEPTION_ROUTINE)(PEXCEPTION_RECORD ExceptionRecord, PVOID EstablisherFrame, PCONTEXT ContextRecord, PVOID DispatcherContext);
#define UNW_FLAG_NHANDLER 0x0
#define UNW_FLAG_EHANDLER 0x1
#define UNW_FLAG_UHANDLER 0x2
__declspec(dllimport) VOID RtlCaptureContext(PCONTEXT ContextRecord);
__declspec(dllimport) PRUNTIME_FUNCTION RtlLookupFunctionEntry(ULONG64 ControlPc, PULONG64 ImageBase, PUNWIND_HISTORY_TABLE HistoryTable);
__declspec(dllimport) PEXCEPTION_ROUTINE RtlVirtualUnwind(ULONG HandlerType, ULONG64 ImageBase, ULONG64 ControlPc, PRUNTIME_FUNCTION FunctionEntry, PCONTEXT ContextRecord, PVOID *HandlerData, PULONG64 EstablisherFrame, PKNONVOLATILE_CONTEXT_POINTERS ContextPointers);
__declspec(dllimport) VOID RtlUnwindEx(PVOID TargetFrame, PVOID TargetIp, PEXCEPTION_RECORD ExceptionRecord, PVOID ReturnValue, PCONTEXT ContextRecord, PUNWIND_HISTORY_TABLE HistoryTable);

/* The generic work items exceptions.c queues are declared with the pended-operation section above. */

/* ---- file objects by handle (monitor.c) ------------------------------------------------------ */
#define FILE_OPEN_IF 0x00000003
__declspec(dllimport) extern POBJECT_TYPE IoFileObjectType[1];
__declspec(dllimport) NTSTATUS FltGetVolumeFromName(PFLT_FILTER Filter, PCUNICODE_STRING VolumeName, PFLT_VOLUME *RetVolume);
__declspec(dllimport) NTSTATUS FltGetVolumeInstanceFromName(PFLT_FILTER Filter, PFLT_VOLUME Volume, PCUNICODE_STRING InstanceName, PFLT_INSTANCE *RetInstance);

/* ---- counted strings and the CRT's wide strings (oddstr.c; wdm.h / ntifs.h DDI pages) ------ */
__declspec(dllimport) ULONG DbgPrint(PCSTR Format, ...);
__declspec(dllimport) VOID RtlInitUnicodeString(PUNICODE_STRING DestinationString, PCWSTR SourceString);
__declspec(dllimport) VOID RtlCopyUnicodeString(PUNICODE_STRING DestinationString, PCUNICODE_STRING SourceString);
__declspec(dllimport) LONG RtlCompareUnicodeString(PCUNICODE_STRING String1, PCUNICODE_STRING String2, BOOLEAN CaseInSensitive);
__declspec(dllimport) NTSTATUS RtlAppendUnicodeStringToString(PUNICODE_STRING Destination, PCUNICODE_STRING Source);
__declspec(dllimport) NTSTATUS RtlAppendUnicodeToString(PUNICODE_STRING Destination, PCWSTR Source);
__declspec(dllimport) BOOLEAN RtlPrefixUnicodeString(PCUNICODE_STRING String1, PCUNICODE_STRING String2, BOOLEAN CaseInSensitive);
__declspec(dllimport) NTSTATUS RtlUpcaseUnicodeString(PUNICODE_STRING DestinationString, PCUNICODE_STRING SourceString, BOOLEAN AllocateDestinationString);
__declspec(dllimport) NTSTATUS RtlUnicodeStringToInteger(PCUNICODE_STRING String, ULONG Base, PULONG Value);
__declspec(dllimport) BOOLEAN FsRtlIsNameInExpression(PUNICODE_STRING Expression, PUNICODE_STRING Name, BOOLEAN IgnoreCase, WCHAR *UpcaseTable);
__declspec(dllimport) SIZE_T wcslen(const WCHAR *String);
__declspec(dllimport) int _wcsicmp(const WCHAR *String1, const WCHAR *String2);
__declspec(dllimport) int wcscpy_s(WCHAR *Destination, SIZE_T Size, const WCHAR *Source);

#endif /* FLTEMU_KM_H */
