/*
 * reader.c: an avscan/scanner-style minifilter that reads file data, written from the
 * fltkernel.h / wdm.h DDI pages.
 *
 * - Post-create of a file opened for reading: the filter opens the file itself with
 *   FltCreateFileEx below its own instance (named by the opened name from
 *   FltGetFileNameInformation), asks FltQueryInformationFile for its size, reads up to 4 KiB
 *   with FltReadFile into pool, closes its handle and dereferences its FILE_OBJECT; when the
 *   data holds the marker "FLTEMU-BAD" it cancels the open (FltCancelFileOpen,
 *   STATUS_ACCESS_DENIED). The size FltQueryInformationFile reports must agree with what
 *   FltReadFile returned (else KeBugCheckEx(0xE0000001, ...)).
 *   The first 16 bytes are read a second time through callback data the filter allocates
 *   (FltAllocateCallbackData, IRP_MJ_READ, FltPerformSynchronousIo, FltFreeCallbackData) and
 *   must equal FltReadFile's (else KeBugCheckEx(0xE0000002, ...)).
 * - Pre-read of a user-mode, non-paging read: FltLockUserBuffer, so that post-read (which may
 *   run at DISPATCH_LEVEL in an arbitrary thread) reaches the data through
 *   MmGetSystemAddressForMdlSafe; post-read counts the marker's occurrences in what was read.
 * - Pre-write: FltLockUserBuffer and MmGetSystemAddressForMdlSafe, then the data is inspected
 *   inside __try; a write carrying the marker is refused (FLT_PREOP_COMPLETE, ACCESS_DENIED).
 *
 * READER_SYNCHRONIZE (not a bug): pre-read returns FLT_PREOP_SYNCHRONIZE, so post-read runs at
 * PASSIVE_LEVEL in the requestor's thread, where even BUG_POST_READ_TOUCHES_USER_BUFFER's direct
 * access to the user buffer is allowed.
 *
 * READER_DIRTY_CREATE (not a bug): pre-create marks its callback data dirty, pre-read counts
 * callback data that arrives dirty (none should: the flag belongs to one operation).
 *
 * The size is also asked through callback data of its own (IRP_MJ_QUERY_INFORMATION,
 * FileStandardInformation) and must equal FltQueryInformationFile's (else
 * KeBugCheckEx(0xE0000003, ...)); unload prints how often the driver itself called
 * FltQueryInformationFile, which the emulator's call statistics must agree with.
 *
 * READER_ODD_NAME (not a bug): the scan's FltCreateFileEx gets its name, and FltGetVolumeFromName
 * the volume's name, with the UNICODE_STRING and its Buffer at odd addresses (x64 Windows reads
 * them without an alignment fault); FltGetVolumeFromName must succeed (else 0xE0000004).
 *
 * READER_PROBES (not a bug): the first scan also runs FltCreateFileEx with each CreateDisposition
 * on "<name>.a" … "<name>.d", appends with FltWriteFile at FILE_WRITE_TO_END_OF_FILE (also
 * non-cached, on "<name>.e"), opens existing roots, directories and files by path, and asks
 * FltGetVolumeFromName for a volume that does not exist; each result is printed.
 *
 * READER_SWAP_BUFFERS (not a bug): pre-read swaps in a pool buffer described by an MDL of its own
 * (IoAllocateMdl + MmBuildMdlForNonPagedPool, FltSetCallbackDataDirty); post-read copies what was
 * read to the requestor's buffer through FltLockUserBuffer's MDL and frees the pool buffer, and
 * leaves the swapped MDL to Filter Manager, which frees it after post-read.
 *
 * READER_CALLBACK_DATA_MDL (not a bug): the second read's callback data carries an MDL of the
 * filter's buffer (Parameters.Read.MdlAddress); it is reused (FltReuseCallbackData frees that
 * MDL), read again with a second MDL, and freed with FltFreeCallbackData at DISPATCH_LEVEL (a
 * spin lock held), which frees the second MDL.
 *
 * One-bug variants (/D):
 *   BUG_HANDLE_NOT_CLOSED          the scan never FltCloses its handle  → ObjectLeaked file handle
 *   BUG_FILE_OBJECT_NOT_DEREFERENCED  the scan never dereferences its FILE_OBJECT → ObjectLeaked
 *   BUG_POST_READ_TOUCHES_USER_BUFFER post-read reads Parameters.Read.ReadBuffer itself instead of
 *                                  the MDL: at DISPATCH_LEVEL → 0x1E + UserBufferTouchedDirectly
 *   BUG_FREE_LOCKED_MDL            post-read IoFreeMdl's the MDL FltLockUserBuffer made → ObjectMisuse
 *   BUG_READ_IN_PRE_CREATE         FltReadFile on the FILE_OBJECT in pre-create → InvalidParameter
 *   BUG_CHANGE_WITHOUT_DIRTY       pre-read shortens Length without FltSetCallbackDataDirty → InvalidParameter
 *   BUG_CLOSE_TWICE                the scan FltCloses its handle twice → InvalidParameter
 *   BUG_CALLBACK_DATA_NOT_FREED    the second read never FltFreeCallbackData's → ObjectLeaked callback data
 *   BUG_PERFORM_FREED              the second read is performed again after its free → ObjectMisuse
 *   BUG_FREE_SWAPPED_MDL           READER_SWAP_BUFFERS, but post-read IoFreeMdl's the swapped MDL while
 *                                  it is still in the parameters → ObjectMisuse (Filter Manager frees it)
 *   BUG_FREE_CALLBACK_DATA_MDL     READER_CALLBACK_DATA_MDL, then IoFreeMdl of the MDL FltFreeCallbackData
 *                                  freed → ObjectMisuse (double free)
 * With BUG_POST_READ_TOUCHES_USER_BUFFER, post-read prints the bytes it read from the user buffer.
 */
#include "fltemu_km.h"
#include "fltemu_km_ctx.h"

#define TAG_READER 'rdRF'
#define SCAN_BYTES 4096
#define MARKER "FLTEMU-BAD"
#define MARKER_LENGTH (sizeof(MARKER) - 1)

#if defined(BUG_FREE_SWAPPED_MDL) && !defined(READER_SWAP_BUFFERS)
#define READER_SWAP_BUFFERS
#endif
#if defined(BUG_FREE_CALLBACK_DATA_MDL) && !defined(READER_CALLBACK_DATA_MDL)
#define READER_CALLBACK_DATA_MDL
#endif

void *memcpy(void *destination, const void *source, SIZE_T count);
#pragma intrinsic(memcpy)

static PFLT_FILTER g_filter;
static volatile LONG g_scanned;
static volatile LONG g_blocked;
static volatile LONG g_marker_reads;
static volatile LONG g_locked;
/* The last create's parameters as a WDK-built driver reads them (printed at unload). */
static ULONG g_create_options;
static USHORT g_create_attributes;
static USHORT g_create_share;
static ULONG g_create_ea_length;
static volatile LONG g_arrived_dirty;
static volatile LONG g_query_calls;
#if defined(READER_PROBES)
static volatile LONG g_probed;
#endif

/* FltQueryInformationFile for the file's size, counted (the unload line reports the count). */
static NTSTATUS query_standard(PFLT_INSTANCE instance, PFILE_OBJECT file, FILE_STANDARD_INFORMATION *standard)
{
    ULONG returned = 0;
    _InterlockedIncrement(&g_query_calls);
    return FltQueryInformationFile(instance, file, standard, sizeof(*standard), FileStandardInformation, &returned);
}

static __declspec(noinline) ULONG count_marker(const UCHAR *data, ULONG length)
{
    ULONG found = 0;
    for (ULONG i = 0; i + MARKER_LENGTH <= length; i++) {
        ULONG j = 0;
        while (j < MARKER_LENGTH && data[i + j] == (UCHAR)MARKER[j]) {
            j++;
        }
        found += j == MARKER_LENGTH;
    }
    return found;
}

static BOOLEAN same_bytes(const UCHAR *a, const UCHAR *b, ULONG length)
{
    for (ULONG i = 0; i < length; i++) {
        if (a[i] != b[i]) {
            return FALSE;
        }
    }
    return TRUE;
}

/* Reads the first bytes again through callback data of our own; they must equal `expected`. */
static VOID verify_start(PCFLT_RELATED_OBJECTS objects, PFILE_OBJECT file, const UCHAR *expected, ULONG length)
{
    PFLT_CALLBACK_DATA io = NULL;
    UCHAR again[16];
    if (length > sizeof(again)) {
        length = sizeof(again);
    }
    if (!NT_SUCCESS(FltAllocateCallbackData(objects->Instance, file, &io))) {
        return;
    }
    io->Iopb->MajorFunction = IRP_MJ_READ;
    io->Iopb->Parameters.Read.Length = length;
    io->Iopb->Parameters.Read.ByteOffset.QuadPart = 0;
    io->Iopb->Parameters.Read.ReadBuffer = again;
#if defined(READER_CALLBACK_DATA_MDL)
    PMDL mdl = IoAllocateMdl(again, sizeof(again), FALSE, FALSE, NULL);
    if (mdl != NULL) {
        MmBuildMdlForNonPagedPool(mdl);
        io->Iopb->Parameters.Read.MdlAddress = mdl;
    }
#endif
    FltPerformSynchronousIo(io);
    if (length > 0 && (!NT_SUCCESS(io->IoStatus.Status) || io->IoStatus.Information != length || !same_bytes(again, expected, length))) {
        KeBugCheckEx(0xE0000002, (ULONG_PTR)io->IoStatus.Status, io->IoStatus.Information, length, 0);
    }
#if defined(READER_CALLBACK_DATA_MDL)
    /* Once more after FltReuseCallbackData, which frees the first MDL, with a second one. */
    FltReuseCallbackData(io);
    io->Iopb->MajorFunction = IRP_MJ_READ;
    io->Iopb->Parameters.Read.Length = length;
    io->Iopb->Parameters.Read.ByteOffset.QuadPart = 0;
    io->Iopb->Parameters.Read.ReadBuffer = again;
    mdl = IoAllocateMdl(again, sizeof(again), FALSE, FALSE, NULL);
    if (mdl != NULL) {
        MmBuildMdlForNonPagedPool(mdl);
        io->Iopb->Parameters.Read.MdlAddress = mdl;
    }
    FltPerformSynchronousIo(io);
    if (length > 0 && (!NT_SUCCESS(io->IoStatus.Status) || io->IoStatus.Information != length || !same_bytes(again, expected, length))) {
        KeBugCheckEx(0xE0000002, (ULONG_PTR)io->IoStatus.Status, io->IoStatus.Information, length, 1);
    }
    {
        /* FltFreeCallbackData is documented for IRQL <= DISPATCH_LEVEL; it frees the MDL too. */
        KSPIN_LOCK lock = 0;
        KIRQL old = KeAcquireSpinLockRaiseToDpc(&lock);
        FltFreeCallbackData(io);
        KeReleaseSpinLock(&lock, old);
    }
#if defined(BUG_FREE_CALLBACK_DATA_MDL)
    if (mdl != NULL) {
        IoFreeMdl(mdl);
    }
#endif
#elif !defined(BUG_CALLBACK_DATA_NOT_FREED)
    FltFreeCallbackData(io);
#endif
#if defined(BUG_PERFORM_FREED)
    FltPerformSynchronousIo(io);
#endif
}

/* Asks the size through callback data of our own; it must be what FltQueryInformationFile said. */
static VOID verify_size(PCFLT_RELATED_OBJECTS objects, PFILE_OBJECT file, LONGLONG end_of_file)
{
    PFLT_CALLBACK_DATA io = NULL;
    FILE_STANDARD_INFORMATION standard;
    if (!NT_SUCCESS(FltAllocateCallbackData(objects->Instance, file, &io))) {
        return;
    }
    io->Iopb->MajorFunction = IRP_MJ_QUERY_INFORMATION;
    io->Iopb->Parameters.QueryFileInformation.Length = sizeof(standard);
    io->Iopb->Parameters.QueryFileInformation.FileInformationClass = FileStandardInformation;
    io->Iopb->Parameters.QueryFileInformation.InfoBuffer = &standard;
    FltPerformSynchronousIo(io);
    if (!NT_SUCCESS(io->IoStatus.Status) || io->IoStatus.Information != sizeof(standard) || standard.EndOfFile != end_of_file) {
        KeBugCheckEx(0xE0000003, (ULONG_PTR)io->IoStatus.Status, io->IoStatus.Information, (ULONG_PTR)end_of_file, 0);
    }
    FltFreeCallbackData(io);
}

#if defined(READER_PROBES)
/* FltCreateFileEx of `base` + "." + `suffix` with `disposition`; when it opened, appends
 * `append` (FILE_WRITE_TO_END_OF_FILE) and reads the size. Prints what happened. */
static VOID probe_create(PCFLT_RELATED_OBJECTS objects, PCUNICODE_STRING base, WCHAR suffix, ULONG disposition, const char *append)
{
    WCHAR text[260];
    USHORT units = base->Length / sizeof(WCHAR);
    if (units + 2 > 260) {
        return;
    }
    for (USHORT i = 0; i < units; i++) {
        text[i] = base->Buffer[i];
    }
    text[units] = L'.';
    text[units + 1] = suffix;
    UNICODE_STRING name = { (USHORT)((units + 2) * sizeof(WCHAR)), (USHORT)((units + 2) * sizeof(WCHAR)), text };
    OBJECT_ATTRIBUTES attributes;
    InitializeObjectAttributes(&attributes, &name, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, NULL);
    HANDLE handle = NULL;
    PFILE_OBJECT file = NULL;
    IO_STATUS_BLOCK io;
    io.Information = 99;
    NTSTATUS status = FltCreateFileEx(g_filter, objects->Instance, &handle, &file, FILE_READ_DATA | FILE_WRITE_DATA | SYNCHRONIZE, &attributes, &io, NULL, 0,
                                      FILE_SHARE_READ | FILE_SHARE_WRITE, disposition, FILE_NON_DIRECTORY_FILE, NULL, 0, 0);
    LONGLONG size = -1;
    NTSTATUS appended = STATUS_SUCCESS;
    if (NT_SUCCESS(status)) {
        if (append != NULL) {
            ULONG length = 0;
            while (append[length] != 0) {
                length++;
            }
            LARGE_INTEGER offset;
            offset.HighPart = -1;
            offset.LowPart = FILE_WRITE_TO_END_OF_FILE;
            ULONG written = 0;
            appended = FltWriteFile(objects->Instance, file, &offset, length, (PVOID)append, 0, &written, NULL, NULL);
        }
        FILE_STANDARD_INFORMATION standard;
        if (NT_SUCCESS(query_standard(objects->Instance, file, &standard))) {
            size = standard.EndOfFile;
        }
        ObDereferenceObject(file);
        FltClose(handle);
    }
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "reader: probe .%c disposition %lu: status 0x%08lx information %lu append 0x%08lx size %lld\n", (int)suffix,
               disposition, status, (ULONG)io.Information, appended, size);
}

/* `volume` + `rest` in `text` (260 characters), described by `name`; FALSE when the volume name
 * leaves no room. */
static BOOLEAN volume_path(PCUNICODE_STRING volume, PCWSTR rest, WCHAR *text, UNICODE_STRING *name)
{
    USHORT units = volume->Length / sizeof(WCHAR);
    if (units >= 200) {
        return FALSE;
    }
    for (USHORT i = 0; i < units; i++) {
        text[i] = volume->Buffer[i];
    }
    for (USHORT i = 0; rest[i] != 0 && units < 260; i++) {
        text[units++] = rest[i];
    }
    name->Length = name->MaximumLength = (USHORT)(units * sizeof(WCHAR));
    name->Buffer = text;
    return TRUE;
}

/* FltCreateFileEx of the volume's name + `rest` with `disposition` and `options` (0: a file or a
 * directory); prints the status and IoStatus.Information (99 if fltemu left it alone). */
static VOID probe_path(PCFLT_RELATED_OBJECTS objects, PCUNICODE_STRING volume, PCWSTR rest, const char *label, ULONG disposition, ULONG options)
{
    WCHAR text[260];
    UNICODE_STRING name;
    if (!volume_path(volume, rest, text, &name)) {
        return;
    }
    OBJECT_ATTRIBUTES attributes;
    InitializeObjectAttributes(&attributes, &name, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, NULL);
    HANDLE handle = NULL;
    PFILE_OBJECT file = NULL;
    IO_STATUS_BLOCK io;
    io.Information = 99;
    NTSTATUS status = FltCreateFileEx(g_filter, objects->Instance, &handle, &file, 0x80 /* FILE_READ_ATTRIBUTES */ | SYNCHRONIZE, &attributes, &io, NULL, 0,
                                      FILE_SHARE_READ | FILE_SHARE_WRITE, disposition, options, NULL, 0, 0);
    if (NT_SUCCESS(status)) {
        ObDereferenceObject(file);
        FltClose(handle);
    }
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "reader: probe path '%s' disposition %lu options 0x%lx: status 0x%08lx information %lu\n", label,
               disposition, options, status, (ULONG)io.Information);
}

/* probe_path of `rest` while another FltCreateFileEx (FILE_OPEN) of it holds it open: an open
 * directory is still a directory. */
static VOID probe_path_while_open(PCFLT_RELATED_OBJECTS objects, PCUNICODE_STRING volume, PCWSTR rest, const char *label, ULONG disposition)
{
    WCHAR text[260];
    UNICODE_STRING name;
    if (!volume_path(volume, rest, text, &name)) {
        return;
    }
    OBJECT_ATTRIBUTES attributes;
    InitializeObjectAttributes(&attributes, &name, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, NULL);
    HANDLE handle = NULL;
    PFILE_OBJECT file = NULL;
    IO_STATUS_BLOCK io;
    NTSTATUS status = FltCreateFileEx(g_filter, objects->Instance, &handle, &file, 0x80 /* FILE_READ_ATTRIBUTES */ | SYNCHRONIZE, &attributes, &io, NULL, 0,
                                      FILE_SHARE_READ | FILE_SHARE_WRITE, FILE_OPEN, 0, NULL, 0, 0);
    probe_path(objects, volume, rest, label, disposition, 0);
    if (NT_SUCCESS(status)) {
        ObDereferenceObject(file);
        FltClose(handle);
    }
}

/* Non-cached appends (FLTFL_IO_OPERATION_NON_CACHED, FILE_WRITE_TO_END_OF_FILE) of one sector to
 * `base` + ".e" (created, 3 bytes written cached): refused while the end of file is not on a
 * sector boundary, accepted once a cached write brought it to 512. Prints both statuses. */
static UCHAR g_sector[512];

static VOID probe_noncached_append(PCFLT_RELATED_OBJECTS objects, PCUNICODE_STRING base)
{
    WCHAR text[260];
    USHORT units = base->Length / sizeof(WCHAR);
    if (units + 2 > 260) {
        return;
    }
    for (USHORT i = 0; i < units; i++) {
        text[i] = base->Buffer[i];
    }
    text[units] = L'.';
    text[units + 1] = L'e';
    UNICODE_STRING name = { (USHORT)((units + 2) * sizeof(WCHAR)), (USHORT)((units + 2) * sizeof(WCHAR)), text };
    OBJECT_ATTRIBUTES attributes;
    InitializeObjectAttributes(&attributes, &name, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, NULL);
    HANDLE handle = NULL;
    PFILE_OBJECT file = NULL;
    IO_STATUS_BLOCK io;
    NTSTATUS status = FltCreateFileEx(g_filter, objects->Instance, &handle, &file, FILE_READ_DATA | FILE_WRITE_DATA | SYNCHRONIZE, &attributes, &io, NULL, 0,
                                      FILE_SHARE_READ | FILE_SHARE_WRITE, FILE_CREATE, FILE_NON_DIRECTORY_FILE, NULL, 0, 0);
    if (!NT_SUCCESS(status)) {
        return;
    }
    LARGE_INTEGER start;
    start.QuadPart = 0;
    LARGE_INTEGER end;
    end.HighPart = -1;
    end.LowPart = FILE_WRITE_TO_END_OF_FILE;
    ULONG written = 0;
    FltWriteFile(objects->Instance, file, &start, 3, g_sector, 0, &written, NULL, NULL);
    NTSTATUS unaligned = FltWriteFile(objects->Instance, file, &end, sizeof(g_sector), g_sector, FLTFL_IO_OPERATION_NON_CACHED, &written, NULL, NULL);
    start.QuadPart = 3;
    FltWriteFile(objects->Instance, file, &start, sizeof(g_sector) - 3, g_sector, 0, &written, NULL, NULL);
    NTSTATUS aligned = FltWriteFile(objects->Instance, file, &end, sizeof(g_sector), g_sector, FLTFL_IO_OPERATION_NON_CACHED, &written, NULL, NULL);
    ObDereferenceObject(file);
    FltClose(handle);
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "reader: non-cached append at end of file 3: 0x%08lx, at 512: 0x%08lx (%lu written)\n", unaligned, aligned,
               written);
}

static VOID run_probes(PCFLT_RELATED_OBJECTS objects, PCUNICODE_STRING base, PCUNICODE_STRING volume_name)
{
    probe_noncached_append(objects, base);
    /* What exists besides streams with contents: the root (with or without its backslash), a
     * file made by a create and never written, a file whose only data is in an ADS, and every
     * directory above a stream. The test seeds \made.txt, \adsonly.txt:ads and
     * \dir\sub\f.txt. */
    probe_path(objects, volume_name, L"", "", FILE_OPEN, 0);
    probe_path(objects, volume_name, L"\\", "\\", FILE_OPEN, 0);
    probe_path(objects, volume_name, L"\\", "\\", FILE_CREATE, 0);
    probe_path(objects, volume_name, L"\\made.txt", "\\made.txt", FILE_OPEN, 0);
    probe_path(objects, volume_name, L"\\made.txt:ads", "\\made.txt:ads", FILE_OPEN, 0);
    probe_path(objects, volume_name, L"\\adsonly.txt", "\\adsonly.txt", FILE_OPEN, 0);
    probe_path(objects, volume_name, L"\\adsonly.txt", "\\adsonly.txt", FILE_CREATE, 0);
    probe_path(objects, volume_name, L"\\dir", "\\dir", FILE_OPEN, 0);
    probe_path(objects, volume_name, L"\\dir\\", "\\dir\\", FILE_OPEN, 0);
    probe_path(objects, volume_name, L"\\DIR\\sub", "\\DIR\\sub", FILE_OPEN_IF, 0);
    probe_path(objects, volume_name, L"\\di", "\\di", FILE_OPEN, 0);
    probe_path(objects, volume_name, L"\\dir\\su\\", "\\dir\\su\\", FILE_OPEN, 0);
    /* A directory opens with FILE_OPEN / FILE_OPEN_IF only (the root refuses the others with
     * access denied); CreateOptions say whether a directory or a file is meant. */
    probe_path(objects, volume_name, L"\\dir", "\\dir", FILE_SUPERSEDE, 0);
    probe_path(objects, volume_name, L"\\dir", "\\dir", FILE_OVERWRITE_IF, 0);
    probe_path(objects, volume_name, L"\\dir\\", "\\dir\\", FILE_OVERWRITE, 0);
    probe_path(objects, volume_name, L"\\", "\\", FILE_OVERWRITE_IF, 0);
    probe_path(objects, volume_name, L"\\dir", "\\dir", FILE_OPEN, FILE_NON_DIRECTORY_FILE);
    probe_path(objects, volume_name, L"\\dir", "\\dir", FILE_OPEN, FILE_DIRECTORY_FILE);
    probe_path(objects, volume_name, L"\\made.txt", "\\made.txt", FILE_OPEN, FILE_DIRECTORY_FILE);
    probe_path(objects, volume_name, L"\\made.txt", "\\made.txt", FILE_OPEN, FILE_NON_DIRECTORY_FILE);
    probe_path(objects, volume_name, L"\\newdir", "\\newdir", FILE_CREATE, FILE_DIRECTORY_FILE);
    probe_path(objects, volume_name, L"\\newdir", "\\newdir", FILE_OVERWRITE_IF, FILE_DIRECTORY_FILE);
    probe_path_while_open(objects, volume_name, L"\\dir", "\\dir", FILE_SUPERSEDE);
    probe_create(objects, base, L'a', FILE_OPEN, NULL);
    probe_create(objects, base, L'a', FILE_OVERWRITE, NULL);
    probe_create(objects, base, L'a', FILE_CREATE, "abc");
    probe_create(objects, base, L'a', FILE_CREATE, NULL);
    probe_create(objects, base, L'a', FILE_OPEN, "de");
    probe_create(objects, base, L'a', FILE_OPEN_IF, NULL);
    probe_create(objects, base, L'a', FILE_OVERWRITE, NULL);
    probe_create(objects, base, L'a', FILE_SUPERSEDE, "xyz");
    probe_create(objects, base, L'b', FILE_OVERWRITE_IF, NULL);
    probe_create(objects, base, L'b', FILE_OVERWRITE_IF, NULL);
    probe_create(objects, base, L'c', FILE_SUPERSEDE, NULL);
    probe_create(objects, base, L'd', FILE_OPEN_IF, NULL);
    UNICODE_STRING missing = RTL_CONSTANT_STRING(L"\\Device\\NoSuchVolume");
    PFLT_VOLUME volume = NULL;
    NTSTATUS status = FltGetVolumeFromName(g_filter, &missing, &volume);
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "reader: FltGetVolumeFromName of a missing volume: 0x%08lx\n", status);
}
#endif

#if defined(READER_ODD_NAME)
/* A copy of `name` whose UNICODE_STRING and Buffer both sit at odd addresses, in `pool`
 * (name->Length + sizeof(UNICODE_STRING) + 2 bytes). */
static PUNICODE_STRING odd_copy(PCUNICODE_STRING name, UCHAR *pool)
{
    UNICODE_STRING odd = { name->Length, name->Length, (PWSTR)(pool + 1) };
    memcpy(pool + 1, name->Buffer, name->Length);
    PUNICODE_STRING placed = (PUNICODE_STRING)(pool + 1 + name->Length);
    memcpy(placed, &odd, sizeof(odd));
    return placed;
}
#endif

/* Opens the file below this instance, reads its start and says whether it holds the marker. */
static BOOLEAN scan_file(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects)
{
    PFLT_FILE_NAME_INFORMATION name = NULL;
    if (!NT_SUCCESS(FltGetFileNameInformation(data, FLT_FILE_NAME_OPENED | FLT_FILE_NAME_QUERY_DEFAULT, &name))) {
        return FALSE;
    }
#if defined(READER_PROBES)
    if (_InterlockedExchange(&g_probed, 1) == 0) {
        run_probes(objects, &name->Name, &name->Volume);
    }
#endif
    PUNICODE_STRING object_name = &name->Name;
#if defined(READER_ODD_NAME)
    UCHAR *odd_name = ExAllocatePool2(POOL_FLAG_NON_PAGED, name->Name.Length + sizeof(UNICODE_STRING) + 2, TAG_READER);
    UCHAR *odd_volume = ExAllocatePool2(POOL_FLAG_NON_PAGED, name->Volume.Length + sizeof(UNICODE_STRING) + 2, TAG_READER);
    if (odd_name == NULL || odd_volume == NULL) {
        KeBugCheckEx(0xE0000004, 0, 0, 0, 0);
    }
    object_name = odd_copy(&name->Name, odd_name);
    PFLT_VOLUME volume = NULL;
    NTSTATUS found = FltGetVolumeFromName(g_filter, odd_copy(&name->Volume, odd_volume), &volume);
    if (!NT_SUCCESS(found)) {
        KeBugCheckEx(0xE0000004, (ULONG_PTR)found, 0, 0, 0);
    }
    FltObjectDereference(volume);
#endif
    OBJECT_ATTRIBUTES attributes;
    InitializeObjectAttributes(&attributes, object_name, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, NULL);
    HANDLE handle = NULL;
    PFILE_OBJECT file = NULL;
    IO_STATUS_BLOCK io;
    NTSTATUS status = FltCreateFileEx(g_filter, objects->Instance, &handle, &file, FILE_READ_DATA | SYNCHRONIZE, &attributes, &io, NULL, 0,
                                      FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, FILE_OPEN, FILE_NON_DIRECTORY_FILE, NULL, 0,
                                      IO_IGNORE_SHARE_ACCESS_CHECK);
    FltReleaseFileNameInformation(name);
#if defined(READER_ODD_NAME)
    ExFreePoolWithTag(odd_name, TAG_READER);
    ExFreePoolWithTag(odd_volume, TAG_READER);
#endif
    if (!NT_SUCCESS(status)) {
        return FALSE;
    }
    BOOLEAN marked = FALSE;
    FILE_STANDARD_INFORMATION standard;
    UCHAR *buffer = ExAllocatePool2(POOL_FLAG_NON_PAGED, SCAN_BYTES, TAG_READER);
    if (buffer != NULL && NT_SUCCESS(query_standard(objects->Instance, file, &standard))) {
        LARGE_INTEGER offset;
        offset.QuadPart = 0;
        ULONG read = 0;
        status = FltReadFile(objects->Instance, file, &offset, SCAN_BYTES, buffer, FLTFL_IO_OPERATION_DO_NOT_UPDATE_BYTE_OFFSET, &read, NULL, NULL);
        /* An empty file reads as END_OF_FILE; otherwise what was read is the size, up to 4 KiB. */
        LONGLONG expected = standard.EndOfFile < SCAN_BYTES ? standard.EndOfFile : SCAN_BYTES;
        BOOLEAN agrees = status == STATUS_END_OF_FILE ? standard.EndOfFile == 0 && read == 0 : NT_SUCCESS(status) && (LONGLONG)read == expected;
        if (!agrees) {
            KeBugCheckEx(0xE0000001, (ULONG_PTR)status, read, (ULONG_PTR)standard.EndOfFile, 0);
        }
        verify_start(objects, file, buffer, read);
        verify_size(objects, file, standard.EndOfFile);
        marked = NT_SUCCESS(status) && count_marker(buffer, read) > 0;
        _InterlockedIncrement(&g_scanned);
    }
    if (buffer != NULL) {
        ExFreePoolWithTag(buffer, TAG_READER);
    }
#if !defined(BUG_FILE_OBJECT_NOT_DEREFERENCED)
    ObDereferenceObject(file);
#endif
#if !defined(BUG_HANDLE_NOT_CLOSED)
    FltClose(handle);
#endif
#if defined(BUG_CLOSE_TWICE)
    FltClose(handle);
#endif
    return marked;
}

static FLT_PREOP_CALLBACK_STATUS pre_create(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID *completion)
{
    *completion = NULL;
#if defined(BUG_READ_IN_PRE_CREATE)
    {
        UCHAR probe[16];
        LARGE_INTEGER offset;
        offset.QuadPart = 0;
        ULONG read = 0;
        FltReadFile(objects->Instance, objects->FileObject, &offset, sizeof(probe), probe, 0, &read, NULL, NULL);
    }
#else
    UNREFERENCED_PARAMETER(objects);
#endif
    g_create_options = data->Iopb->Parameters.Create.Options;
    g_create_attributes = data->Iopb->Parameters.Create.FileAttributes;
    g_create_share = data->Iopb->Parameters.Create.ShareAccess;
    g_create_ea_length = data->Iopb->Parameters.Create.EaLength;
    if (FltIsCallbackDataDirty(data)) {
        _InterlockedIncrement(&g_arrived_dirty);
    }
#if defined(READER_DIRTY_CREATE)
    FltSetCallbackDataDirty(data);
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
    PIO_SECURITY_CONTEXT security = data->Iopb->Parameters.Create.SecurityContext;
    if (security == NULL || (security->DesiredAccess & FILE_READ_DATA) == 0) {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    if (scan_file(data, objects)) {
        _InterlockedIncrement(&g_blocked);
        FltCancelFileOpen(objects->Instance, objects->FileObject);
        data->IoStatus.Status = STATUS_ACCESS_DENIED;
        data->IoStatus.Information = 0;
    }
    return FLT_POSTOP_FINISHED_PROCESSING;
}

#if defined(READER_SWAP_BUFFERS)
/* The swapped-in buffer of a read and the requestor's buffer (its kernel view). */
struct swap {
    UCHAR *original;
    UCHAR bytes[];
};
#endif

static FLT_PREOP_CALLBACK_STATUS pre_read(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID *completion)
{
    UNREFERENCED_PARAMETER(objects);
    *completion = NULL;
    if (FltIsCallbackDataDirty(data)) {
        _InterlockedIncrement(&g_arrived_dirty);
    }
    if (data->Iopb->IrpFlags & IRP_PAGING_IO) {
        /* Paging I/O comes with a kernel buffer and its MDL already. */
        return data->Iopb->Parameters.Read.MdlAddress != NULL ? FLT_PREOP_SUCCESS_WITH_CALLBACK : FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
#if defined(BUG_CHANGE_WITHOUT_DIRTY)
    if (data->Iopb->Parameters.Read.Length > 1) {
        data->Iopb->Parameters.Read.Length -= 1;
    }
#endif
    if (!NT_SUCCESS(FltLockUserBuffer(data))) {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    _InterlockedIncrement(&g_locked);
#if defined(READER_SWAP_BUFFERS)
    {
        ULONG length = data->Iopb->Parameters.Read.Length;
        UCHAR *original = MmGetSystemAddressForMdlSafe(data->Iopb->Parameters.Read.MdlAddress, NormalPagePriority | MdlMappingNoExecute);
        struct swap *swap = length > 0 && original != NULL ? ExAllocatePool2(POOL_FLAG_NON_PAGED, sizeof(struct swap) + length, TAG_READER) : NULL;
        PMDL mdl = swap != NULL ? IoAllocateMdl(swap->bytes, length, FALSE, FALSE, NULL) : NULL;
        if (mdl == NULL) {
            if (swap != NULL) {
                ExFreePoolWithTag(swap, TAG_READER);
            }
            return FLT_PREOP_SUCCESS_NO_CALLBACK;
        }
        MmBuildMdlForNonPagedPool(mdl);
        swap->original = original;
        data->Iopb->Parameters.Read.ReadBuffer = swap->bytes;
        data->Iopb->Parameters.Read.MdlAddress = mdl;
        FltSetCallbackDataDirty(data);
        *completion = swap;
        return FLT_PREOP_SUCCESS_WITH_CALLBACK;
    }
#endif
#if defined(READER_SYNCHRONIZE)
    /* Post-read then runs at PASSIVE_LEVEL in the requestor's thread, user buffer reachable. */
    return FLT_PREOP_SYNCHRONIZE;
#else
    return FLT_PREOP_SUCCESS_WITH_CALLBACK;
#endif
}

#if defined(BUG_POST_READ_TOUCHES_USER_BUFFER)
static __declspec(noinline) ULONG first_byte(const volatile UCHAR *p)
{
    return p[0];
}
#endif

static FLT_POSTOP_CALLBACK_STATUS post_read(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID completion, FLT_POST_OPERATION_FLAGS flags)
{
    UNREFERENCED_PARAMETER(objects);
    UNREFERENCED_PARAMETER(completion);
    UNREFERENCED_PARAMETER(flags);
    ULONG length = (ULONG)data->IoStatus.Information;
#if defined(READER_SWAP_BUFFERS)
    struct swap *swap = completion;
    if (swap != NULL) {
        PMDL swapped = data->Iopb->Parameters.Read.MdlAddress;
        if (NT_SUCCESS(data->IoStatus.Status)) {
            memcpy(swap->original, swap->bytes, length);
            if (count_marker(swap->bytes, length) > 0) {
                _InterlockedIncrement(&g_marker_reads);
            }
        }
        ExFreePoolWithTag(swap, TAG_READER);
#if defined(BUG_FREE_SWAPPED_MDL)
        IoFreeMdl(swapped);
#else
        /* Filter Manager frees the swapped MDL after this callback and restores the original. */
        UNREFERENCED_PARAMETER(swapped);
#endif
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
#endif
    if (!NT_SUCCESS(data->IoStatus.Status) || length == 0) {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
#if defined(BUG_POST_READ_TOUCHES_USER_BUFFER)
    if (!(data->Iopb->IrpFlags & IRP_PAGING_IO)) {
        const volatile UCHAR *user = (const volatile UCHAR *)data->Iopb->Parameters.Read.ReadBuffer;
        g_marker_reads += first_byte(user) == 'F';
        /* What the user buffer holds, read directly, printed for the test to compare. */
        char seen[33];
        ULONG shown = length < 32 ? length : 32;
        for (ULONG i = 0; i < shown; i++) {
            seen[i] = (char)user[i];
        }
        seen[shown] = 0;
        DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "reader: post-read saw %lu bytes '%s'\n", length, seen);
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
#endif
    PMDL mdl = data->Iopb->Parameters.Read.MdlAddress;
    if (mdl == NULL) {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    const UCHAR *bytes = MmGetSystemAddressForMdlSafe(mdl, NormalPagePriority | MdlMappingNoExecute);
    if (bytes != NULL && count_marker(bytes, length) > 0) {
        _InterlockedIncrement(&g_marker_reads);
    }
#if defined(BUG_FREE_LOCKED_MDL)
    IoFreeMdl(mdl);
#endif
    return FLT_POSTOP_FINISHED_PROCESSING;
}

static FLT_PREOP_CALLBACK_STATUS pre_write(PFLT_CALLBACK_DATA data, PCFLT_RELATED_OBJECTS objects, PVOID *completion)
{
    UNREFERENCED_PARAMETER(objects);
    *completion = NULL;
    ULONG length = data->Iopb->Parameters.Write.Length;
    if (length == 0 || !NT_SUCCESS(FltLockUserBuffer(data))) {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    const UCHAR *bytes = MmGetSystemAddressForMdlSafe(data->Iopb->Parameters.Write.MdlAddress, NormalPagePriority | MdlMappingNoExecute);
    if (bytes == NULL) {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    ULONG found = 0;
    __try {
        found = count_marker(bytes, length);
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        data->IoStatus.Status = GetExceptionCode();
        data->IoStatus.Information = 0;
        return FLT_PREOP_COMPLETE;
    }
    if (found > 0) {
        _InterlockedIncrement(&g_blocked);
        data->IoStatus.Status = STATUS_ACCESS_DENIED;
        data->IoStatus.Information = 0;
        return FLT_PREOP_COMPLETE;
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
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "reader: %ld scanned, %ld blocked, %ld locked reads, %ld reads with the marker\n", g_scanned, g_blocked, g_locked,
               g_marker_reads);
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "reader: last create options 0x%08lx attributes 0x%04x share 0x%04x ea %lu\n", g_create_options,
               g_create_attributes, g_create_share, g_create_ea_length);
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "reader: %ld reads arrived dirty\n", g_arrived_dirty);
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "reader: %ld FltQueryInformationFile calls\n", g_query_calls);
    FltUnregisterFilter(g_filter);
    return STATUS_SUCCESS;
}

static const FLT_OPERATION_REGISTRATION operations[] = {
    { IRP_MJ_CREATE, 0, pre_create, post_create, NULL },
    { IRP_MJ_READ, 0, pre_read, post_read, NULL },
    { IRP_MJ_WRITE, 0, pre_write, NULL, NULL },
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
