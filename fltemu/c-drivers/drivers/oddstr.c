/*
 * oddstr.c: counted strings at odd addresses. x64 Windows has no alignment requirement for
 * ordinary loads and stores, so a driver may hand the kernel a UNICODE_STRING (or ANSI_STRING),
 * its Buffer, or a C string at an odd address and the Rtl routines read it. DriverEntry builds
 * every string below with the structure and its Buffer both at odd addresses, calls the string
 * routines on them and prints each result, then registers and starts filtering like
 * passthrough.c. Nothing here is a bug: a run is clean, and the printed results are what the
 * routines' DDI pages say (learn.microsoft.com, wdm.h / ntifs.h).
 */
#include "fltemu_km.h"

void *memcpy(void *destination, const void *source, SIZE_T count);
#pragma intrinsic(memcpy)

static PFLT_FILTER g_filter;

/* Room for the strings; `odd_room` hands out pieces that start at an odd address. */
static UCHAR g_arena[2048];
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
