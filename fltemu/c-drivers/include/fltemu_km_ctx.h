/*
 * fltemu_km_ctx.h: the declarations ctx.c adds to fltemu_km.h: contexts, file-name
 * information, volume objects and properties, ERESOURCEs and critical regions. Written from the
 * learn.microsoft.com DDI pages (fltkernel.h, wdm.h, ntifs.h), x64 layouts only.
 */
#ifndef FLTEMU_KM_CTX_H
#define FLTEMU_KM_CTX_H
#include "fltemu_km.h"

/* ---- ERESOURCE (wdm.h): opaque to drivers, 0x68 bytes on x64, non-paged, 8-aligned ---------- */
typedef struct _ERESOURCE { ULONG_PTR Opaque[13]; } ERESOURCE, *PERESOURCE;
_Static_assert(sizeof(ERESOURCE) == 0x68, "ERESOURCE is 0x68 bytes on x64");
__declspec(dllimport) NTSTATUS ExInitializeResourceLite(PERESOURCE Resource);
__declspec(dllimport) NTSTATUS ExDeleteResourceLite(PERESOURCE Resource);
__declspec(dllimport) BOOLEAN ExAcquireResourceExclusiveLite(PERESOURCE Resource, BOOLEAN Wait);
__declspec(dllimport) BOOLEAN ExAcquireResourceSharedLite(PERESOURCE Resource, BOOLEAN Wait);
__declspec(dllimport) VOID ExReleaseResourceLite(PERESOURCE Resource);
__declspec(dllimport) VOID KeEnterCriticalRegion(VOID);
__declspec(dllimport) VOID KeLeaveCriticalRegion(VOID);
__declspec(dllimport) VOID FltAcquireResourceExclusive(PERESOURCE Resource);
__declspec(dllimport) VOID FltAcquireResourceShared(PERESOURCE Resource);
__declspec(dllimport) VOID FltReleaseResource(PERESOURCE Resource);

/* ---- pool (wdm.h POOL_TYPE) ------------------------------------------------------------------ */
typedef enum _POOL_TYPE { NonPagedPool = 0, PagedPool = 1, NonPagedPoolNx = 512 } POOL_TYPE;
__declspec(dllimport) PVOID ExAllocatePoolWithTag(POOL_TYPE PoolType, SIZE_T NumberOfBytes, ULONG Tag);

/* ---- contexts (fltkernel.h) ------------------------------------------------------------------ */
#define FLT_VOLUME_CONTEXT       0x0001
#define FLT_INSTANCE_CONTEXT     0x0002
#define FLT_FILE_CONTEXT         0x0004
#define FLT_STREAM_CONTEXT       0x0008
#define FLT_STREAMHANDLE_CONTEXT 0x0010
typedef enum _FLT_SET_CONTEXT_OPERATION { FLT_SET_CONTEXT_REPLACE_IF_EXISTS = 0, FLT_SET_CONTEXT_KEEP_IF_EXISTS = 1 } FLT_SET_CONTEXT_OPERATION;
#define STATUS_FLT_CONTEXT_ALREADY_DEFINED ((NTSTATUS)0xC01C0002L)
__declspec(dllimport) NTSTATUS FltAllocateContext(PFLT_FILTER Filter, FLT_CONTEXT_TYPE ContextType, SIZE_T ContextSize, POOL_TYPE PoolType, PFLT_CONTEXT *ReturnedContext);
__declspec(dllimport) VOID FltReleaseContext(PFLT_CONTEXT Context);
__declspec(dllimport) NTSTATUS FltGetInstanceContext(PFLT_INSTANCE Instance, PFLT_CONTEXT *Context);
__declspec(dllimport) NTSTATUS FltSetInstanceContext(PFLT_INSTANCE Instance, FLT_SET_CONTEXT_OPERATION Operation, PFLT_CONTEXT NewContext, PFLT_CONTEXT *OldContext);
__declspec(dllimport) NTSTATUS FltGetStreamContext(PFLT_INSTANCE Instance, PFILE_OBJECT FileObject, PFLT_CONTEXT *Context);
__declspec(dllimport) NTSTATUS FltSetStreamContext(PFLT_INSTANCE Instance, PFILE_OBJECT FileObject, FLT_SET_CONTEXT_OPERATION Operation, PFLT_CONTEXT NewContext, PFLT_CONTEXT *OldContext);
__declspec(dllimport) NTSTATUS FltGetFileContext(PFLT_INSTANCE Instance, PFILE_OBJECT FileObject, PFLT_CONTEXT *Context);
__declspec(dllimport) NTSTATUS FltSetFileContext(PFLT_INSTANCE Instance, PFILE_OBJECT FileObject, FLT_SET_CONTEXT_OPERATION Operation, PFLT_CONTEXT NewContext, PFLT_CONTEXT *OldContext);
__declspec(dllimport) NTSTATUS FltDeleteFileContext(PFLT_INSTANCE Instance, PFILE_OBJECT FileObject, PFLT_CONTEXT *OldContext);
__declspec(dllimport) NTSTATUS FltGetStreamHandleContext(PFLT_INSTANCE Instance, PFILE_OBJECT FileObject, PFLT_CONTEXT *Context);
__declspec(dllimport) NTSTATUS FltSetStreamHandleContext(PFLT_INSTANCE Instance, PFILE_OBJECT FileObject, FLT_SET_CONTEXT_OPERATION Operation, PFLT_CONTEXT NewContext, PFLT_CONTEXT *OldContext);

/* ---- file-name information (fltkernel.h) ----------------------------------------------------- */
#define FLT_FILE_NAME_NORMALIZED    0x01
#define FLT_FILE_NAME_OPENED        0x02
#define FLT_FILE_NAME_SHORT         0x03
#define FLT_FILE_NAME_QUERY_DEFAULT 0x0100
#define FLT_FILE_NAME_QUERY_CACHE_ONLY 0x0200
#define FLT_FILE_NAME_QUERY_FILESYSTEM_ONLY 0x0300
typedef struct _FLT_FILE_NAME_INFORMATION {
    USHORT Size;
    USHORT NamesParsed;
    ULONG Format;
    UNICODE_STRING Name;
    UNICODE_STRING Volume;
    UNICODE_STRING Share;
    UNICODE_STRING Extension;
    UNICODE_STRING Stream;
    UNICODE_STRING FinalComponent;
    UNICODE_STRING ParentDir;
} FLT_FILE_NAME_INFORMATION, *PFLT_FILE_NAME_INFORMATION;
_Static_assert(sizeof(FLT_FILE_NAME_INFORMATION) == 0x78, "FLT_FILE_NAME_INFORMATION layout");
__declspec(dllimport) NTSTATUS FltGetFileNameInformation(PFLT_CALLBACK_DATA CallbackData, ULONG NameOptions, PFLT_FILE_NAME_INFORMATION *FileNameInformation);
__declspec(dllimport) NTSTATUS FltParseFileNameInformation(PFLT_FILE_NAME_INFORMATION FileNameInformation);
__declspec(dllimport) NTSTATUS FltGetFileNameInformationUnsafe(PFILE_OBJECT FileObject, PFLT_INSTANCE Instance, ULONG NameOptions, PFLT_FILE_NAME_INFORMATION *FileNameInformation);
__declspec(dllimport) VOID FltReleaseFileNameInformation(PFLT_FILE_NAME_INFORMATION FileNameInformation);

/* ---- file information (fltkernel.h, wdm.h FILE_INFORMATION_CLASS) ----------------------------- */
#define FileBasicInformation    4
#define FileStandardInformation 5
#define FilePositionInformation 14
#define STATUS_INFO_LENGTH_MISMATCH ((NTSTATUS)0xC0000004L)
#define STATUS_INVALID_INFO_CLASS   ((NTSTATUS)0xC0000003L)
typedef struct _FILE_STANDARD_INFORMATION {
    LONGLONG AllocationSize;
    LONGLONG EndOfFile;
    ULONG NumberOfLinks;
    BOOLEAN DeletePending;
    BOOLEAN Directory;
} FILE_STANDARD_INFORMATION;
_Static_assert(sizeof(FILE_STANDARD_INFORMATION) == 24, "FILE_STANDARD_INFORMATION layout");
typedef struct _FILE_BASIC_INFORMATION {
    LONGLONG CreationTime;
    LONGLONG LastAccessTime;
    LONGLONG LastWriteTime;
    LONGLONG ChangeTime;
    ULONG FileAttributes;
} FILE_BASIC_INFORMATION;
_Static_assert(sizeof(FILE_BASIC_INFORMATION) == 40, "FILE_BASIC_INFORMATION layout");
__declspec(dllimport) NTSTATUS FltLockUserBuffer(PFLT_CALLBACK_DATA CallbackData);
__declspec(dllimport) NTSTATUS FltQueryInformationFile(PFLT_INSTANCE Instance, PFILE_OBJECT FileObject, PVOID FileInformation, ULONG Length, ULONG FileInformationClass, PULONG LengthReturned);

/* ---- volumes (fltkernel.h) ------------------------------------------------------------------- */
__declspec(dllimport) NTSTATUS FltGetVolumeFromInstance(PFLT_INSTANCE Instance, PFLT_VOLUME *RetVolume);
__declspec(dllimport) VOID FltObjectDereference(PVOID FltObject);
__declspec(dllimport) NTSTATUS FltGetVolumeProperties(PFLT_VOLUME Volume, PVOID VolumeProperties, ULONG VolumePropertiesLength, PULONG LengthReturned);

#endif /* FLTEMU_KM_CTX_H */
