/*
 * oddstr.c: counted strings at odd addresses. x64 Windows has no alignment requirement for
 * ordinary loads and stores, so a driver may hand the kernel a UNICODE_STRING (or ANSI_STRING),
 * its Buffer, or a C string at an odd address and the Rtl routines read it. DriverEntry builds
 * every string below with the structure and its Buffer both at odd addresses, calls the string
 * routines on them and prints each result, then registers and starts filtering like
 * passthrough.c. Nothing here is a bug: a run is clean, and the printed results are what the
 * routines' DDI pages say (learn.microsoft.com, wdm.h / ntifs.h); where a page promises only a
 * sign (RtlCompareUnicodeString, the C comparisons) the driver prints the sign.
 *
 * Bug variants: BUG_WCSLEN_NULL calls wcslen(NULL) and BUG_COPY_NULL RtlCopyUnicodeString into a
 * NULL destination (on Windows an access violation inside the routine, unhandled: bug check
 * 0x1E); BUG_SLIST_MISALIGNED pushes onto an SLIST_HEADER that is not 16-byte aligned (the
 * SLIST_ENTRY page requires 16-byte alignment on 64-bit Windows); BUG_LOCK_MISALIGNED uses a
 * KSPIN_LOCK and an EX_PUSH_LOCK 4 bytes past 8-byte alignment and clears bits of an RTL_BITMAP
 * whose Buffer is not ULONG-aligned (RtlInitializeBitMap's page requires it).
 */
#include "fltemu_km_ctx.h"

void *memcpy(void *destination, const void *source, SIZE_T count);
#pragma intrinsic(memcpy)
int memcmp(const void *a, const void *b, SIZE_T count);
__declspec(dllimport) int wcsncmp(const WCHAR *a, const WCHAR *b, SIZE_T count);
__declspec(dllimport) int _wcsnicmp(const WCHAR *a, const WCHAR *b, SIZE_T count);
__declspec(dllimport) SIZE_T wcsnlen(const WCHAR *text, SIZE_T maximum);
__declspec(dllimport) int wcscat_s(WCHAR *destination, SIZE_T size, const WCHAR *source);
__declspec(dllimport) PVOID ExpInterlockedPushEntrySList(PVOID header, PVOID entry);
__declspec(dllimport) PVOID ExpInterlockedPopEntrySList(PVOID header);
__declspec(dllimport) VOID FltInitializePushLock(PVOID lock);
__declspec(dllimport) VOID FltAcquirePushLockExclusive(PVOID lock);
__declspec(dllimport) VOID FltReleasePushLock(PVOID lock);
__declspec(dllimport) VOID FltDeletePushLock(PVOID lock);
typedef struct { ULONG SizeOfBitMap; PULONG Buffer; } ODD_BITMAP;
__declspec(dllimport) VOID RtlInterlockedClearBits(ODD_BITMAP *bitmap, ULONG start, ULONG count);

static PFLT_FILTER g_filter;

/* Room for the strings; `odd_room` hands out pieces that start at an odd address. */
static __declspec(align(16)) UCHAR g_arena[2048];
/* Read through a volatile so the compiler cannot see the NULL. */
static volatile ULONG_PTR g_null;
/* FltGetVolumeProperties's output, placed one byte past 16-byte alignment. */
static __declspec(align(16)) UCHAR g_properties[512];
static SIZE_T g_used;

static UCHAR *odd_room(SIZE_T bytes)
{
    g_used = (g_used + 7) & ~(SIZE_T)7;
    UCHAR *at = g_arena + g_used + 1;
    g_used += bytes + 1;
    if (g_used > sizeof(g_arena)) {
        KeBugCheckEx(0xE0000005, g_used, 0, 0, 0);
    }
    return at;
}

/* A copy of `text` (and its NUL) at an odd address, with room for `maximum` bytes. */
static PWSTR odd_text(PCWSTR text, USHORT maximum)
{
    SIZE_T length = wcslen(text) * sizeof(WCHAR);
    UCHAR *buffer = odd_room(maximum > length + 2 ? maximum : length + 2);
    memcpy(buffer, text, length + 2);
    return (PWSTR)buffer;
}

/* A UNICODE_STRING at an odd address over an odd copy of `text` (MaximumLength `maximum`). */
static PUNICODE_STRING odd_string(PCWSTR text, USHORT maximum)
{
    UNICODE_STRING value;
    value.Buffer = odd_text(text, maximum);
    value.Length = (USHORT)(wcslen(text) * sizeof(WCHAR));
    value.MaximumLength = maximum;
    PUNICODE_STRING placed = (PUNICODE_STRING)odd_room(sizeof(value));
    memcpy(placed, &value, sizeof(value));
    return placed;
}

/* The header of an odd-placed UNICODE_STRING, copied out so C reads it aligned. */
static UNICODE_STRING header_of(PCUNICODE_STRING placed)
{
    UNICODE_STRING value;
    memcpy(&value, placed, sizeof(value));
    return value;
}

static VOID exercise_strings(VOID)
{
    PUNICODE_STRING source = odd_string(L"\\Dir\\File.TXT", 32);
    PUNICODE_STRING lower = odd_string(L"\\dir\\file.txt", 32);
    DbgPrint("oddstr: source = %wZ (%ws)\n", source, header_of(source).Buffer);

    PUNICODE_STRING copy = odd_string(L"", 64);
    RtlCopyUnicodeString(copy, source);
    DbgPrint("oddstr: copy = %wZ, length %u\n", copy, header_of(copy).Length);

    LONG order = RtlCompareUnicodeString(source, lower, TRUE);
    LONG sensitive = RtlCompareUnicodeString(source, lower, FALSE);
    BOOLEAN equal = RtlEqualUnicodeString(source, lower, TRUE);
    BOOLEAN prefix = RtlPrefixUnicodeString(odd_string(L"\\DIR", 8), lower, TRUE);
    BOOLEAN suffix = RtlSuffixUnicodeString(odd_string(L".txt", 8), source, TRUE);
    sensitive = sensitive < 0 ? -1 : sensitive > 0 ? 1 : 0;
    DbgPrint("oddstr: compare insensitive %ld, sensitive %ld, equal %u, prefix %u, suffix %u\n", order, sensitive, equal, prefix, suffix);

    NTSTATUS appended = RtlAppendUnicodeStringToString(copy, odd_string(L":ads", 8));
    NTSTATUS appended_text = RtlAppendUnicodeToString(copy, odd_text(L";1", 0));
    DbgPrint("oddstr: append 0x%08lx 0x%08lx = %wZ\n", appended, appended_text, copy);

    ANSI_STRING narrow_value = { 0, 0, NULL };
    PANSI_STRING narrow = (PANSI_STRING)odd_room(sizeof(ANSI_STRING));
    memcpy(narrow, &narrow_value, sizeof(narrow_value));
    NTSTATUS converted = RtlUnicodeStringToAnsiString(narrow, source, TRUE);
    DbgPrint("oddstr: ansi 0x%08lx = %Z\n", converted, narrow);
    RtlFreeAnsiString(narrow);

    PUNICODE_STRING upper = odd_string(L"", 64);
    NTSTATUS upcased = RtlUpcaseUnicodeString(upper, lower, FALSE);
    DbgPrint("oddstr: upcase 0x%08lx = %wZ\n", upcased, upper);

    BOOLEAN matched = FsRtlIsNameInExpression(odd_string(L"*\\FILE.T?T", 20), source, TRUE, NULL);
    BOOLEAN unmatched = FsRtlIsNameInExpression(odd_string(L"*.DOC", 10), source, TRUE, NULL);
    DbgPrint("oddstr: expression %u %u\n", matched, unmatched);

    ULONG number = 0;
    PULONG number_at = (PULONG)odd_room(sizeof(ULONG));
    NTSTATUS parsed = RtlUnicodeStringToInteger(odd_string(L"  0x1F", 12), 0, number_at);
    memcpy(&number, number_at, sizeof(number));
    DbgPrint("oddstr: integer 0x%08lx = %lu\n", parsed, number);

    PUNICODE_STRING initialised = (PUNICODE_STRING)odd_room(sizeof(UNICODE_STRING));
    RtlInitUnicodeString(initialised, odd_text(L"init", 0));
    UNICODE_STRING init_value = header_of(initialised);
    DbgPrint("oddstr: init = %wZ (%u/%u)\n", initialised, init_value.Length, init_value.MaximumLength);

    PWSTR target = odd_text(L"", 32);
    int copied = wcscpy_s(target, 16, odd_text(L"crt", 0));
    DbgPrint("oddstr: crt %d %lu %d = %ws\n", copied, (ULONG)wcslen(target), _wcsicmp(target, odd_text(L"CRT", 0)), target);

    /* The n comparisons stop at `count`: "abcX" and "abcY" agree in their first 3 units. */
    int bounded = wcsncmp(odd_text(L"abcX", 0), odd_text(L"abcY", 0), 3);
    int bounded_insensitive = _wcsnicmp(odd_text(L"ABCx", 0), odd_text(L"abcY", 0), 3);
    int differs = wcsncmp(odd_text(L"abcX", 0), odd_text(L"abcY", 0), 4);
    DbgPrint("oddstr: bounded %d %d %d\n", bounded, bounded_insensitive, differs < 0 ? -1 : differs > 0 ? 1 : 0);
    int appended_crt = wcscat_s(target, 16, odd_text(L"+x", 0));
    DbgPrint("oddstr: wcscat_s %d = %ws, wcsnlen %lu %lu\n", appended_crt, target, (ULONG)wcsnlen(target, 16), (ULONG)wcsnlen(target, 2));
    DbgPrint("oddstr: memcmp of nothing %d\n", memcmp((const void *)g_null, (const void *)g_null, (SIZE_T)g_null));

#if defined(BUG_WCSLEN_NULL)
    DbgPrint("oddstr: wcslen(NULL) %lu\n", (ULONG)wcslen((const WCHAR *)g_null));
#elif defined(BUG_COPY_NULL)
    RtlCopyUnicodeString((PUNICODE_STRING)g_null, source);
#elif defined(BUG_SLIST_MISALIGNED)
    /* An SLIST_HEADER is 16 bytes; this one starts 8 bytes past a 16-byte boundary. */
    PVOID header = g_arena + sizeof(g_arena) - 48 + 8;
    PVOID entry = g_arena + sizeof(g_arena) - 16;
    memcpy(header, &(ULONGLONG[2]){ 0, 0 }, 16);
    PVOID previous = ExpInterlockedPushEntrySList(header, entry);
    DbgPrint("oddstr: misaligned push %p, pop %p\n", previous, ExpInterlockedPopEntrySList(header));
#elif defined(BUG_LOCK_MISALIGNED)
    /* The arena is 16-byte aligned: offsets 1988 and 1972 are 4 past an 8-byte boundary, 1954 is
     * 2 past a ULONG boundary. */
    PKSPIN_LOCK spin = (PKSPIN_LOCK)(g_arena + 1988);
    KIRQL old = KeAcquireSpinLockRaiseToDpc(spin);
    KeReleaseSpinLock(spin, old);
    PVOID push = g_arena + 1972;
    FltInitializePushLock(push);
    FltAcquirePushLockExclusive(push);
    FltReleasePushLock(push);
    FltDeletePushLock(push);
    ODD_BITMAP bitmap = { 64, (PULONG)(g_arena + 1954) };
    RtlInterlockedClearBits(&bitmap, 0, 8);
    DbgPrint("oddstr: misaligned locks left alone, IRQL %u\n", KeGetCurrentIrql());
#endif
}

/* FltGetVolumeProperties into a buffer at an odd address: the names it copies after the fixed
 * part land at odd addresses too. */
static NTSTATUS instance_setup(PCFLT_RELATED_OBJECTS objects, FLT_INSTANCE_SETUP_FLAGS flags, DEVICE_TYPE device, FLT_FILESYSTEM_TYPE type)
{
    UNREFERENCED_PARAMETER(flags);
    UNREFERENCED_PARAMETER(device);
    UNREFERENCED_PARAMETER(type);
    PFLT_VOLUME volume = NULL;
    if (NT_SUCCESS(FltGetVolumeFromInstance(objects->Instance, &volume))) {
        ULONG needed = 0;
        NTSTATUS got = FltGetVolumeProperties(volume, g_properties + 1, sizeof(g_properties) - 16, &needed);
        DbgPrint("oddstr: volume properties 0x%08lx\n", got);
        FltObjectDereference(volume);
    }
    return STATUS_SUCCESS;
}

static NTSTATUS filter_unload(FLT_FILTER_UNLOAD_FLAGS flags)
{
    UNREFERENCED_PARAMETER(flags);
    FltUnregisterFilter(g_filter);
    return STATUS_SUCCESS;
}

static const FLT_OPERATION_REGISTRATION operations[] = {
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
    exercise_strings();
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
