#!/usr/bin/env python3
"""Which kernel functions a minifilter's sources call, and which of them fltemu emulates.

Reads driver sources straight out of git directories (a bare mirror or a clone: `git show
COMMIT:path`, nothing is checked out or copied), strips comments and string literals, and
collects every name of the form Flt*, Ex*, Ke*, Rtl*, Ps*, Io*, Mm*, Ob*, Zw*, Se*, FsRtl*, Dbg*,
Nt* (or a C runtime string function) followed by `(`, leaving out names the project defines
itself (a body or a #define) and member calls (`.X(`, `->X(`). Each name is then classified
against `fltemu exports`: emulated, a header macro/inline over emulated functions (or over no
import at all), or not emulated. The classification of macros follows the README's "The
samples' surface" section.

Usage:
  survey.py [--exports FILE] [--markdown] PROJECT...
  PROJECT = NAME=GITDIR@COMMIT:DIR[,DIR...][!EXCLUDED_DIR[,...]]

--exports FILE: the output of `fltemu exports` (default: run `cargo run -q -p fltemu --
exports`). Prints one line per project (names, emulated, macro, not emulated, then the
not-emulated names), then the union; --markdown prints the README table rows instead.
"""

import argparse
import re
import subprocess
import sys

PREFIXES = r"(?:FsRtl|Flt|Ex|Ke|Rtl|Ps|Io|Mm|Ob|Zw|Se|Dbg|Nt)"
CALL = re.compile(r"(?<![\w.>:])(?:::)?(" + PREFIXES + r"[A-Z][A-Za-z0-9_]*)\s*\(")
# `::Name(` is a call of the global function; `obj.Name(`, `p->Name(`, `Class::Name(` are not.
CALL_GLOBAL = re.compile(r"(?<![\w.>])::(" + PREFIXES + r"[A-Z][A-Za-z0-9_]*)\s*\(")

CRT = {
    "memcpy", "memmove", "memset", "memcmp", "memchr", "strlen", "strnlen", "wcslen", "wcsnlen",
    "strcpy", "strncpy", "wcscpy", "wcsncpy", "strcat", "strncat", "wcscat", "wcsncat", "strcmp",
    "strncmp", "wcscmp", "wcsncmp", "_stricmp", "_strnicmp", "_wcsicmp", "_wcsnicmp", "strchr",
    "strrchr", "wcschr", "wcsrchr", "strstr", "wcsstr", "sprintf", "swprintf", "_snprintf",
    "_snwprintf", "_vsnprintf", "_vsnwprintf", "vsprintf", "towlower", "towupper", "tolower",
    "toupper", "_wcslwr", "_wcsupr", "_strlwr", "_strupr", "wcstombs", "mbstowcs", "atoi", "_wtoi",
    "wcstoul", "strtoul", "wcstol", "strtol", "_itoa", "_itow", "wcstok", "strtok", "isdigit",
    "iswdigit", "isspace", "iswspace",
}
CRT_CALL = re.compile(r"(?<![\w.>:])(" + "|".join(sorted(CRT, key=len, reverse=True)) + r")\s*\(")

# Header macros and inlines: name -> the exports they compile to ([] = no import at all).
MACROS = {
    "ExAllocateFromNPagedLookasideList": ["ExpInterlockedPopEntrySList"],
    "ExFreeToNPagedLookasideList": ["ExpInterlockedPushEntrySList"],
    "ExAllocatePoolZero": ["ExAllocatePoolWithTag"],
    "ExAllocatePoolUninitialized": ["ExAllocatePoolWithTag"],
    "ExInitializeFastMutex": ["KeInitializeEvent"],
    "ExInitializePushLock": [],
    "FsRtlEnterFileSystem": ["KeEnterCriticalRegion"],
    "FsRtlExitFileSystem": ["KeLeaveCriticalRegion"],
    "KeAcquireSpinLock": ["KeAcquireSpinLockRaiseToDpc"],
    "KeInitializeSpinLock": [],
    "KeMemoryBarrier": [],
    "KeQuerySystemTime": [],  # x64: reads KUSER_SHARED_DATA (see README "Not modelled")
    "KeQueryTickCount": [],
    "KeGetCurrentIrql": ["KeGetCurrentIrql"],
    "KeRaiseIrql": ["KfRaiseIrql"],
    "KeLowerIrql": ["KeLowerIrql"],
    "KeRaiseIrqlToDpcLevel": [],
    "MmGetSystemAddressForMdlSafe": ["MmMapLockedPagesSpecifyCache"],
    "MmGetMdlVirtualAddress": [],
    "MmGetMdlByteCount": [],
    "MmInitializeMdl": [],
    "ObReferenceObject": ["ObfReferenceObject"],
    "ObDereferenceObject": ["ObfDereferenceObject"],
    "PsGetCurrentProcess": ["IoGetCurrentProcess"],
    "RtlCopyMemory": ["memcpy"],
    "RtlMoveMemory": ["memmove"],
    "RtlFillMemory": ["memset"],
    "RtlZeroMemory": ["memset"],
    "RtlSecureZeroMemory": [],
    "RtlEqualMemory": ["memcmp"],
    "RtlInitEmptyUnicodeString": [],
    "RtlInitEmptyAnsiString": [],
    "RtlULongAdd": [], "RtlULongSub": [], "RtlULongMult": [], "RtlSizeTAdd": [], "RtlSizeTMult": [],
    "RtlUShortAdd": [], "RtlULongLongAdd": [], "RtlULongLongToULong": [],
    "RtlStringCbCopyW": [], "RtlStringCchCopyW": [], "RtlStringCbCatW": [], "RtlStringCchCatW": [],
    "RtlStringCbLengthW": [], "RtlStringCchLengthW": [], "RtlStringCbCopyNW": [], "RtlStringCchCopyNW": [],
    "RtlStringCbCopyA": [], "RtlStringCchCopyA": [], "RtlStringCbCatA": [], "RtlStringCbLengthA": [],
    "RtlStringCchCatNW": [], "RtlStringCbCatNW": [], "RtlStringCbCopyExW": [],
    "RtlStringCbPrintfW": ["_vsnwprintf"], "RtlStringCchPrintfW": ["_vsnwprintf"],
    "RtlStringCbPrintfA": ["_vsnprintf"], "RtlStringCchPrintfA": ["_vsnprintf"],
    "RtlUnicodeStringCopy": [], "RtlUnicodeStringCat": [], "RtlUnicodeStringCbCopyN": [],
    "RtlUnicodeStringPrintf": ["_vsnwprintf"], "RtlUnicodeStringCopyString": [],
    "RtlUnicodeStringCatString": [], "RtlUnicodeStringInit": [],
    "IoGetCurrentIrpStackLocation": [], "IoGetNextIrpStackLocation": [],
    "IoSkipCurrentIrpStackLocation": [], "IoCopyCurrentIrpStackLocationToNext": [],
    "IoSetCompletionRoutine": [], "IoMarkIrpPending": [],
    "IoCompleteRequest": ["IofCompleteRequest"], "IoCallDriver": ["IofCallDriver"],
    "FltGetIrpName": ["FltGetIrpName"],
    "DbgPrint": ["DbgPrint"],
    "ExFreePool": ["ExFreePool"],
    "ZwCurrentProcess": [], "NtCurrentProcess": [], "ZwCurrentThread": [], "NtCurrentThread": [],
    "KeQueryInterruptTime": [],  # x64: reads KUSER_SHARED_DATA, like KeQuerySystemTime
    "RtlUlongByteSwap": [], "RtlUshortByteSwap": [], "RtlUlonglongByteSwap": [],
    "RtlStringCbVPrintfA": ["_vsnprintf"], "RtlStringCbVPrintfW": ["_vsnwprintf"],
    "RtlStringCchVPrintfA": ["_vsnprintf"], "RtlStringCchVPrintfW": ["_vsnwprintf"],
    "RtlUnicodeStringToAnsiSize": ["RtlxUnicodeStringToAnsiSize", "NlsMbCodePageTag"],
    # A force-inline (the "Single Binary Opt-In: POOL_NX_OPTIN" page); taken to ask
    # RtlIsNtDdiVersionAvailable whether Windows 8's NX pool exists.
    "ExInitializeDriverRuntime": ["RtlIsNtDdiVersionAvailable"],
    "RtlIpv4AddressToStringEx": ["RtlIpv4AddressToStringExA", "RtlIpv4AddressToStringExW"],
    "RtlIpv6AddressToStringEx": ["RtlIpv6AddressToStringExA", "RtlIpv6AddressToStringExW"],
    "IoGetRemainingStackSize": ["IoGetStackLimits"],
    "InitializeListHead": [], "InsertTailList": [], "InsertHeadList": [], "RemoveHeadList": [],
    "RemoveEntryList": [], "IsListEmpty": [],
}


def strip(text):
    """Comments and string/char literals blanked (line structure kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(c + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_paren(text, start):
    depth = 0
    for k in range(start, len(text)):
        if text[k] == "(":
            depth += 1
        elif text[k] == ")":
            depth -= 1
            if depth == 0:
                return k
    return len(text) - 1


DECL_BEFORE = re.compile(r"(?:^|[;{}])\s*(?:(?:static|inline|extern|_Use_decl_annotations_|__inline|__forceinline|FORCEINLINE|NTKERNELAPI|NTSYSAPI|NTAPI|NTSYSCALLAPI|EXTERN_C|extern\s+\"C\")\s+)*[A-Za-z_][\w<>:]*(?:\s*\*)*\s+(?:\*\s*)*(?:NTAPI\s+|WINAPI\s+|FLTAPI\s+)?$")


def own_and_calls(text):
    """(names the text defines, names it calls)."""
    own, calls = set(), set()
    for m in re.finditer(r"#\s*define\s+(\w+)", text):
        own.add(m.group(1))
    # C++ classes and structs (their constructors look like calls).
    for m in re.finditer(r"\b(?:class|struct)\s+(\w+)", text):
        own.add(m.group(1))
    for regex in (CALL, CALL_GLOBAL, CRT_CALL):
        for m in regex.finditer(text):
            name = m.group(1)
            close = matching_paren(text, m.end() - 1)
            after = text[close + 1:close + 200].lstrip()
            before = text[max(0, m.start() - 200):m.start()]
            # Previous lines' type for a definition written `NTSTATUS\nName(`.
            declared = DECL_BEFORE.search(before) is not None and not re.search(r"\b(?:return|else|case|goto|sizeof)\s*$", before)
            if declared and (after.startswith("{") or re.match(r"(?:const\s*)?(?:_\w+_(?:\([^)]*\))?\s*)*\{", after)):
                own.add(name)
            elif declared and after.startswith(";"):
                pass  # a prototype: not a call
            else:
                calls.add(name)
    return own, calls


def git_files(gitdir, commit, dirs, excluded):
    listing = subprocess.run(["git", "-C", gitdir, "ls-tree", "-r", "--name-only", commit], check=True, capture_output=True, text=True).stdout.split("\n")
    for path in listing:
        if not re.search(r"\.(c|cc|cpp|cxx|h|hpp|hxx|inl)$", path, re.I):
            continue
        if not any(d in ("", ".") or path.startswith(d.rstrip("/") + "/") for d in dirs):
            continue
        if any(path.startswith(x.rstrip("/") + "/") for x in excluded):
            continue
        yield path


def project_names(gitdir, commit, dirs, excluded):
    own, calls = set(), set()
    for path in git_files(gitdir, commit, dirs, excluded):
        raw = subprocess.run(["git", "-C", gitdir, "show", f"{commit}:{path}"], check=True, capture_output=True).stdout
        text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("utf-8", "replace")
        o, c = own_and_calls(strip(text))
        own |= o
        calls |= c
    return sorted(calls - own)


def classify(name, emulated):
    # An emulated export counts as emulated even where a header also wraps it (the README's
    # classification: KeQuerySystemTime, ObDereferenceObject, PsGetCurrentProcess).
    if name in emulated:
        return "emulated"
    if name in MACROS:
        return "macro" if all(t in emulated for t in MACROS[name]) else "missing"
    return "missing"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exports")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("projects", nargs="+")
    args = parser.parse_args()
    if args.exports:
        lines = open(args.exports, encoding="utf-8").read().split("\n")
    else:
        lines = subprocess.run(["cargo", "run", "-q", "-p", "fltemu", "--", "exports"], check=True, capture_output=True, text=True).stdout.split("\n")
    emulated = {line.split()[0].split("!", 1)[1] for line in lines if "!" in line.split(" ")[0]}
    union = {}
    users = {}
    for spec in args.projects:
        name, rest = spec.split("=", 1)
        gitdir, rest = rest.split("@", 1)
        commit, rest = rest.split(":", 1)
        dirs, _, excluded = rest.partition("!")
        names = project_names(gitdir, commit, dirs.split(","), [x for x in excluded.split(",") if x])
        kinds = {n: classify(n, emulated) for n in names}
        union.update(kinds)
        for n in names:
            users.setdefault(n, []).append(name)
        counts = [sum(1 for k in kinds.values() if k == kind) for kind in ("emulated", "macro", "missing")]
        missing = ", ".join(f"`{n}`" for n in names if kinds[n] == "missing")
        if args.markdown:
            print(f"| {name} | `{commit[:10]}` | {len(names)} | {counts[0]} | {counts[1]} | {counts[2]} | {missing} |")
        else:
            print(f"{name} {commit[:10]}: {len(names)} names, {counts[0]} emulated, {counts[1]} macro, {counts[2]} not emulated: {missing}")
    counts = [sum(1 for k in union.values() if k == kind) for kind in ("emulated", "macro", "missing")]
    print(f"union: {len(union)} names, {counts[0]} emulated, {counts[1]} macro, {counts[2]} not emulated")
    for kind in ("macro", "missing"):
        print(f"{kind}: " + ", ".join(f"`{n}`" for n in sorted(union) if union[n] == kind))
    # How many projects call each missing name (what to emulate first).
    ranked = sorted((n for n in union if union[n] == "missing"), key=lambda n: (-len(users[n]), n))
    print("not emulated, by projects calling it: " + ", ".join(f"{n} {len(users[n])}" for n in ranked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
