//! The scenario names, the behaviour each checks, and where that expectation comes from, on
//! every platform, so that names are validated (and `--list` works) where the scenarios
//! cannot run.
//!
//! Expectations are Windows' recorded behaviour where Wine's conformance tests record it (a
//! plain `ok()` in those tests is what Windows returned when Wine's test infrastructure ran them
//! on Windows; `broken()` marks old Windows versions, `todo_wine` marks where Wine differs), else
//! our reading of the learn.microsoft.com page of the function. Test files are cited by path in
//! Wine's tree and function; companion/README.md says which copy was read.

use super::report::Evidence;

/// One scenario's name, the behaviour it checks and the source of that expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScenarioSpec {
    /// Stable name (the `--scenario` value, the JSON `name`).
    pub name: &'static str,
    /// The expected behaviour, one line.
    pub documented: &'static str,
    /// The documentation sentence and the Windows-run assertion (or that there is none).
    pub source: &'static str,
    /// Which expectations a Windows-run assertion backs.
    pub evidence: Evidence,
    /// What the documentation says and what Windows is recorded to do, where they disagree.
    pub doc_vs_windows: Option<(&'static str, &'static str)>,
    /// Passes freed handles to the API: runs only with `--unsafe-stale-checks`.
    pub stale: bool,
}

const fn spec(name: &'static str, documented: &'static str, source: &'static str, evidence: Evidence) -> ScenarioSpec {
    ScenarioSpec { name, documented, source, evidence, doc_vs_windows: None, stale: false }
}

const fn found(
    name: &'static str,
    documented: &'static str,
    source: &'static str,
    doc_says: &'static str,
    windows_does: &'static str,
) -> ScenarioSpec {
    ScenarioSpec {
        name,
        documented,
        source,
        evidence: Evidence::Windows,
        doc_vs_windows: Some((doc_says, windows_does)),
        stale: false,
    }
}

/// The documentation of CERT_CLOSE_STORE_CHECK_FLAG, and what testCloseStore records Windows doing.
const CHECK_DOC: &str = "CertCloseStore: with CHECK the result is FALSE + CRYPT_E_PENDING_CLOSE only while contexts of the store are still allocated, otherwise TRUE (other references to the store are not mentioned)";
const CHECK_WINDOWS: &str = "CHECK returns FALSE + CRYPT_E_PENDING_CLOSE while another CertDuplicateStore reference keeps the store open, with no context held; only the last close returns TRUE";

/// Every scenario, in run order.
pub const SCENARIOS: &[ScenarioSpec] = &[
    spec(
        "verify-context",
        "CryptAcquireContextW(NULL, NULL, PROV_RSA_AES, CRYPT_VERIFYCONTEXT) → TRUE; CryptReleaseContext(h, 0) → TRUE",
        "doc: CryptAcquireContext (CRYPT_VERIFYCONTEXT needs no key container), CryptReleaseContext (returns TRUE). Windows: none found (advapi32/tests/crypt.c acquires named containers only)",
        Evidence::DocsOnly,
    ),
    spec(
        "addref-release",
        "after CryptContextAddRef ×3 the context needs 4 CryptReleaseContext calls: each → TRUE, and the provider still works (CryptGenRandom → TRUE) until the 4th",
        "doc: CryptContextAddRef (each call needs one more CryptReleaseContext). Windows: none (the only CryptContextAddRef assertion, advapi32/tests/crypt.c test_incorrect_api_usage, is compiled out by #ifdef CRASHES_ON_NT40)",
        Evidence::DocsOnly,
    ),
    spec(
        "release-flags-last-ref",
        "CryptReleaseContext(h, 1) on the last reference → FALSE + NTE_BAD_FLAGS, and the CSP is released anyway",
        "doc: CryptReleaseContext (nonzero dwFlags: FALSE, but the CSP is released). Windows: rsaenh/tests/rsaenh.c clean_up_base_environment (Release(h, 1) → FALSE + NTE_BAD_FLAGS, broken() TRUE on Win98 only; the next Release(h, 0) → FALSE + ERROR_INVALID_PARAMETER shows it was released) and clean_up_aes_environment",
        Evidence::Windows,
    ),
    spec(
        "release-flags-shared-ref",
        "with 2 references, CryptReleaseContext(h, 1) → FALSE + NTE_BAD_FLAGS and drops one; CryptReleaseContext(h, 0) then releases the last → TRUE",
        "doc: CryptReleaseContext (nonzero dwFlags: FALSE, but the CSP is released; a reference count above 1 is not discussed). Windows: none for 2 references (rsaenh.c clean_up_base_environment holds one)",
        Evidence::DocsOnly,
    ),
    ScenarioSpec {
        name: "stale-release",
        documented: "CryptReleaseContext on a fully released context → FALSE + ERROR_INVALID_PARAMETER (passes a freed handle: only with --unsafe-stale-checks)",
        source: "doc: CryptReleaseContext (the handle is invalid once released). Windows: advapi32/tests/crypt.c test_incorrect_api_usage (a second CryptReleaseContext(h, 0) → FALSE + ERROR_INVALID_PARAMETER)",
        evidence: Evidence::Windows,
        doc_vs_windows: None,
        stale: true,
    },
    spec(
        "named-container",
        "CRYPT_NEWKEYSET on a new name → TRUE; open (flags 0) → TRUE; CRYPT_NEWKEYSET again → FALSE + NTE_EXISTS; CRYPT_DELETEKEYSET → TRUE; open → FALSE + NTE_BAD_KEYSET",
        "doc: CryptAcquireContext (flag table and return codes). Windows: advapi32/tests/crypt.c test_incorrect_api_usage (CRYPT_NEWKEYSET → TRUE, CRYPT_DELETEKEYSET → TRUE) and test_acquire_context (an existing container, flags 0 → TRUE); NTE_EXISTS and NTE_BAD_KEYSET: docs only",
        Evidence::Partial(&[
            "CryptAcquireContextW(name, …, CRYPT_NEWKEYSET) again",
            "CryptAcquireContextW(name, …, 0) after the delete",
        ]),
    ),
    spec(
        "keys-hashes-before-release",
        "CryptGenKey(CALG_AES_128), CryptCreateHash(CALG_SHA_256), CryptHashData → TRUE; CryptDestroyHash and CryptDestroyKey → TRUE before CryptReleaseContext → TRUE",
        "doc: CryptReleaseContext (destroy keys and hashes first). Windows: advapi32/tests/crypt.c test_incorrect_api_usage (CryptCreateHash, CryptGenKey, CryptDestroyKey, CryptReleaseContext → TRUE, with CALG_SHA and CALG_RC4 under PROV_RSA_FULL); CryptHashData and CryptDestroyHash on a live hash: docs only",
        Evidence::Partial(&["CryptHashData", "CryptDestroyHash"]),
    ),
    spec(
        "memory-store",
        "CertOpenStore(MEMORY) → store; CertDuplicateStore → same handle; add and duplicate a certificate (same pointer), free both → TRUE; one CertCloseStore(0) per open/duplicate → TRUE",
        "doc: CertCloseStore (one close per CertOpenStore or CertDuplicateStore), CertDuplicateCertificateContext (the same pointer comes back). Windows: crypt32/tests/store.c testMemStore (open, add with context, free, CertCloseStore(0) → TRUE) and testCloseStore (CertDuplicateStore returns the same handle); the same context pointer: docs only",
        Evidence::Partial(&["CertDuplicateCertificateContext"]),
    ),
    spec(
        "system-store",
        "CertOpenStore(SYSTEM_W, CURRENT_USER, \"MY\") → store; CertDuplicateStore → same handle; CertCloseStore(0) on both → TRUE",
        "doc: CertOpenStore (CERT_STORE_PROV_SYSTEM_W), CertCloseStore. Windows: crypt32/tests/store.c testSystemStore (CURRENT_USER \"My\" opens) and testCloseStore (CertDuplicateStore returns the same handle)",
        Evidence::Windows,
    ),
    spec(
        "file-store",
        "CertOpenStore(FILE, COMMIT_ENABLE, hFile) → store; add a certificate; CertCloseStore(0) → TRUE and commits; the caller's file handle stays open; CertOpenStore(FILENAME_W) finds 1 certificate",
        "doc: CertOpenStore (CERT_STORE_PROV_FILE with CERT_FILE_STORE_COMMIT_ENABLE_FLAG duplicates the handle; the store is written on close). Windows: crypt32/tests/store.c testFileStore (the store keeps working after the caller closes its handle; CertCloseStore writes the serialized store) and testFileNameStore (FILENAME_W, READONLY: exactly one certificate)",
        Evidence::Windows,
    ),
    spec(
        "close-check-held",
        "memory store, a context held: CertCloseStore(CHECK) → FALSE + CRYPT_E_PENDING_CLOSE, the store is closed anyway and the context stays readable until freed",
        "doc: CertCloseStore (CHECK with contexts allocated: FALSE + CRYPT_E_PENDING_CLOSE, the store is closed anyway). Windows: crypt32/tests/store.c testCloseStore (a certificate held → FALSE + CRYPT_E_PENDING_CLOSE; CertFreeCertificateContext → TRUE); the context readable after the close: docs only",
        Evidence::Partial(&["held context readable"]),
    ),
    spec(
        "close-check-held-file",
        "file store, a context held: CertCloseStore(CHECK) → FALSE + CRYPT_E_PENDING_CLOSE, the store is closed anyway and the context stays readable until freed",
        "doc: CertCloseStore (CHECK with contexts allocated: FALSE + CRYPT_E_PENDING_CLOSE, whatever the store provider). Windows: none for file stores (testCloseStore uses memory stores only)",
        Evidence::DocsOnly,
    ),
    found(
        "close-check-duplicate-open",
        "no context held, a CertDuplicateStore reference still open: CertCloseStore(CHECK) → FALSE + CRYPT_E_PENDING_CLOSE (the duplicate keeps the store open); closing the duplicate (flags 0) → TRUE",
        "doc: CertCloseStore (CHECK reports contexts still allocated). Windows: crypt32/tests/store.c testCloseStore (the first of two CHECK closes of a duplicated memory store → FALSE + CRYPT_E_PENDING_CLOSE, with no context held)",
        CHECK_DOC,
        CHECK_WINDOWS,
    ),
    spec(
        "close-check-none",
        "memory store holding a certificate whose contexts were all freed: CertCloseStore(CHECK) → TRUE",
        "doc: CertCloseStore (CHECK with every context freed → TRUE). Windows: crypt32/tests/store.c testCloseStore (certificate, CRL and CTL added, their contexts freed, CHECK → TRUE)",
        Evidence::Windows,
    ),
    spec(
        "close-force",
        "CertCloseStore(FORCE) with a context held → TRUE and every context is freed (the held pointer is abandoned, never freed again)",
        "doc: CertCloseStore (CERT_CLOSE_STORE_FORCE_FLAG frees every context of the store). Windows: none (crypt32/tests/store.c never closes with FORCE)",
        Evidence::DocsOnly,
    ),
    spec(
        "ncrypt-provider",
        "NCryptOpenStorageProvider(MS_KEY_STORAGE_PROVIDER) → 0; NCryptFreeObject → 0; NCryptFreeObject(0) → NTE_INVALID_HANDLE",
        "doc: NCryptOpenStorageProvider, NCryptFreeObject (ERROR_SUCCESS or NTE_INVALID_HANDLE). Windows: ncrypt/tests/ncrypt.c test_key_import_rsa (NCryptOpenStorageProvider of the default provider → ERROR_SUCCESS, outside its todo_wine block); NCryptFreeObject results: docs only (not asserted)",
        Evidence::Partial(&["NCryptFreeObject"]),
    ),
    spec(
        "ncrypt-key-lifecycle",
        "NCryptCreatePersistedKey(RSA, no name) → 0; NCryptFinalizeKey → 0; NCryptFreeObject(key), NCryptFreeObject(provider) → 0",
        "doc: NCryptCreatePersistedKey (finalize before use), NCryptFinalizeKey, NCryptFreeObject. Windows: none in the ncrypt.c read (it tests key import only)",
        Evidence::DocsOnly,
    ),
    spec(
        "ncrypt-key-persistence",
        "named key: create + finalize → 0; NCryptOpenKey(name) → 0; create again without OVERWRITE → NTE_EXISTS; NCryptDeleteKey → 0 (frees the handle); NCryptOpenKey(name) → an error",
        "doc: NCryptCreatePersistedKey (NTE_EXISTS without NCRYPT_OVERWRITE_KEY_FLAG), NCryptOpenKey, NCryptDeleteKey (frees the handle on success). Windows: none in the ncrypt.c read",
        Evidence::DocsOnly,
    ),
    spec(
        "ncrypt-notify-change-key",
        "NCryptNotifyChangeKey(REGISTER) → 0 and a change-notification handle; wait on it; NCryptNotifyChangeKey(UNREGISTER) → 0 and the handle becomes INVALID_HANDLE_VALUE",
        "doc: NCryptNotifyChangeKey (REGISTER returns a wait handle; UNREGISTER writes INVALID_HANDLE_VALUE back). Windows: none",
        Evidence::DocsOnly,
    ),
    spec(
        "close-check-empty",
        "a fresh, empty memory store: CertCloseStore(CHECK) → TRUE",
        "doc: CertCloseStore (CHECK with no context allocated → TRUE). Windows: crypt32/tests/store.c testCloseStore (the first close of a fresh memory store)",
        Evidence::Windows,
    ),
    found(
        "close-check-duplicate-last",
        "a memory store and its CertDuplicateStore reference, both closed with CHECK: the first close → FALSE + CRYPT_E_PENDING_CLOSE, the last → TRUE",
        "doc: CertCloseStore (one close per open or duplicate; CHECK reports contexts still allocated). Windows: crypt32/tests/store.c testCloseStore (first CHECK close → FALSE + CRYPT_E_PENDING_CLOSE, second → TRUE)",
        CHECK_DOC,
        CHECK_WINDOWS,
    ),
    spec(
        "close-check-held-crl",
        "memory store, a CRL context held (CertAddEncodedCRLToStore): CertCloseStore(CHECK) → FALSE + CRYPT_E_PENDING_CLOSE; CertFreeCRLContext → TRUE",
        "doc: CertCloseStore (contexts of any kind count). Windows: crypt32/tests/store.c testCloseStore (a CRL held → FALSE + CRYPT_E_PENDING_CLOSE; CertFreeCRLContext → TRUE)",
        Evidence::Windows,
    ),
    spec(
        "close-check-held-ctl",
        "memory store, a CTL context held (CertAddEncodedCTLToStore): CertCloseStore(CHECK) → FALSE + CRYPT_E_PENDING_CLOSE; CertFreeCTLContext → TRUE",
        "doc: CertCloseStore (contexts of any kind count). Windows: crypt32/tests/store.c testCloseStore (a CTL held → FALSE + CRYPT_E_PENDING_CLOSE; CertFreeCTLContext → TRUE)",
        Evidence::Windows,
    ),
    found(
        "close-implicit-store",
        "a CertCreateCertificateContext context's hCertStore (never opened by the caller): CertCloseStore(it, CHECK) → FALSE + E_UNEXPECTED; CertCloseStore(it, 0) → FALSE + E_UNEXPECTED; CertFreeCertificateContext → TRUE",
        "doc: CertCloseStore (TRUE unless CHECK finds contexts), CertCreateCertificateContext (free with CertFreeCertificateContext). Windows: crypt32/tests/store.c testEmptyStore (both closes of cert->hCertStore → FALSE + E_UNEXPECTED)",
        "CertCloseStore returns TRUE when CERT_CLOSE_STORE_CHECK_FLAG is not set",
        "the store behind a CertCreateCertificateContext context refuses every close, flags 0 included: FALSE + E_UNEXPECTED",
    ),
    spec(
        "close-null-store",
        "CertCloseStore(NULL, 0) → TRUE",
        "doc: CertCloseStore (hCertStore: the store to close; NULL not mentioned). Windows: crypt32/tests/store.c testMemStore (\"close an empty store\": CertCloseStore(NULL, 0) → TRUE)",
        Evidence::Windows,
    ),
    spec(
        "release-with-key-and-hash-alive",
        "CryptReleaseContext(h, 0) with a key and a hash alive → TRUE; with --unsafe-stale-checks, then CryptHashData, CryptDuplicateHash, CryptDuplicateKey, CryptDestroyHash, CryptDestroyKey, CryptGenRandom, CryptContextAddRef, CryptCreateHash on the released objects → FALSE + ERROR_INVALID_PARAMETER",
        "doc: CryptReleaseContext (releasing destroys the context's keys and hashes; do not use them after). Windows: advapi32/tests/crypt.c test_incorrect_api_usage (release with a hash and a key alive → TRUE; then each call → FALSE + ERROR_INVALID_PARAMETER); CryptContextAddRef, CryptDuplicateHash, CryptDuplicateKey: docs only (their assertions are compiled out by #ifdef CRASHES_ON_NT40)",
        Evidence::Partial(&["CryptDuplicateHash", "CryptDuplicateKey", "CryptContextAddRef"]),
    ),
    spec(
        "delete-keyset-handle",
        "CryptAcquireContextW(name, …, CRYPT_DELETEKEYSET) → TRUE and writes 0 to the handle variable (never released)",
        "doc: CryptAcquireContext (with CRYPT_DELETEKEYSET the returned handle is undefined). Windows: none found in the tests read (they never look at the handle after a delete); 0 is what the handle must be if it is anything",
        Evidence::DocsOnly,
    ),
    spec(
        "ncrypt-finalize-twice",
        "NCryptFinalizeKey on a key already finalized → an error status; the key is still freed by NCryptFreeObject → 0",
        "doc: NCryptFinalizeKey (completes a key once; an invalid hKey → NTE_INVALID_HANDLE). Windows: none in the ncrypt.c read",
        Evidence::DocsOnly,
    ),
    spec(
        "ncrypt-free-non-handle",
        "NCryptFreeObject(the address of memory that holds no NCrypt object) → NTE_INVALID_HANDLE",
        "doc: NCryptFreeObject (NTE_INVALID_HANDLE: the hObject parameter is not valid). Windows: none in the ncrypt.c read",
        Evidence::DocsOnly,
    ),
    spec(
        "collection-outlives-member",
        "collection store with a memory member holding a certificate: CertAddStoreToCollection → TRUE; CertCloseStore(member, 0) → TRUE; the collection still enumerates 1 certificate; CertCloseStore(collection, 0) → TRUE",
        "doc: CertAddStoreToCollection (the collection keeps its own reference to the member). Windows: crypt32/tests/store.c testCollectionStore (after CertCloseStore of a member the collection still enumerates its certificates)",
        Evidence::Windows,
    ),
];

/// The scenario called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static ScenarioSpec> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// All names, comma-separated, for error messages.
pub fn names() -> String {
    SCENARIOS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lowercase_kebab() {
        let mut seen = std::collections::BTreeSet::new();
        for s in SCENARIOS {
            assert!(seen.insert(s.name), "duplicate {}", s.name);
            assert!(s.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{}", s.name);
            let mut texts = vec![s.documented, s.source];
            if let Some((doc, windows)) = s.doc_vs_windows {
                texts.extend([doc, windows]);
            }
            for text in texts {
                assert!(!text.contains('\t') && !text.contains('|'), "{}: breaks the TSV/markdown table", s.name);
            }
        }
    }

    #[test]
    fn every_source_cites_the_documentation_and_says_whether_windows_is_on_record() {
        for s in SCENARIOS {
            assert!(s.source.starts_with("doc: ") && s.source.contains(" Windows: "), "{}: {}", s.name, s.source);
            let none_on_record = s.source.contains("Windows: none");
            assert_eq!(s.evidence == Evidence::DocsOnly, none_on_record, "{}: evidence and source disagree", s.name);
            // A doc-vs-Windows finding needs a Windows-run assertion to rest on.
            assert!(s.doc_vs_windows.is_none() || s.evidence != Evidence::DocsOnly, "{}", s.name);
        }
    }
}
