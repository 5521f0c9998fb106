//! The scenario names and their documented expectations, on every platform, so that names are
//! validated (and `--list` works) even where the scenarios cannot run.
//!
//! Sources: the learn.microsoft.com page of each function, and Wine's conformance tests that run
//! on Windows (advapi32/tests/crypt.c, crypt32/tests/store.c).

/// One scenario's name and the behaviour it checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScenarioSpec {
    /// Stable name (the `--scenario` value, the JSON `name`).
    pub name: &'static str,
    /// The documented behaviour, one line.
    pub documented: &'static str,
    /// Passes freed handles to the API: runs only with `--unsafe-stale-checks`.
    pub stale: bool,
}

const fn spec(name: &'static str, documented: &'static str) -> ScenarioSpec {
    ScenarioSpec { name, documented, stale: false }
}

/// Every scenario, in run order.
pub const SCENARIOS: &[ScenarioSpec] = &[
    spec(
        "verify-context",
        "CryptAcquireContextW(NULL, NULL, PROV_RSA_AES, CRYPT_VERIFYCONTEXT) → TRUE; CryptReleaseContext(h, 0) → TRUE",
    ),
    spec(
        "addref-release",
        "after CryptContextAddRef ×3 the context needs 4 CryptReleaseContext calls: each → TRUE, and the provider still works (CryptGenRandom → TRUE) until the 4th",
    ),
    spec(
        "release-flags-last-ref",
        "CryptReleaseContext(h, 1) on the last reference → FALSE + NTE_BAD_FLAGS, and the CSP is released anyway",
    ),
    spec(
        "release-flags-shared-ref",
        "with 2 references, CryptReleaseContext(h, 1) → FALSE + NTE_BAD_FLAGS and drops one; CryptReleaseContext(h, 0) then releases the last → TRUE",
    ),
    ScenarioSpec {
        name: "stale-release",
        documented: "CryptReleaseContext on a fully released context → FALSE + ERROR_INVALID_PARAMETER (passes a freed handle: only with --unsafe-stale-checks)",
        stale: true,
    },
    spec(
        "named-container",
        "CRYPT_NEWKEYSET on a new name → TRUE; open (flags 0) → TRUE; CRYPT_NEWKEYSET again → FALSE + NTE_EXISTS; CRYPT_DELETEKEYSET → TRUE; open → FALSE + NTE_BAD_KEYSET",
    ),
    spec(
        "keys-hashes-before-release",
        "CryptGenKey(CALG_AES_128), CryptCreateHash(CALG_SHA_256), CryptHashData → TRUE; CryptDestroyHash and CryptDestroyKey → TRUE before CryptReleaseContext → TRUE",
    ),
    spec(
        "memory-store",
        "CertOpenStore(MEMORY) → store; CertDuplicateStore → same handle; add and duplicate a certificate (same pointer), free both → TRUE; one CertCloseStore(0) per open/duplicate → TRUE",
    ),
    spec(
        "system-store",
        "CertOpenStore(SYSTEM_W, CURRENT_USER, \"MY\") → store; CertDuplicateStore → same handle; CertCloseStore(0) on both → TRUE",
    ),
    spec(
        "file-store",
        "CertOpenStore(FILE, COMMIT_ENABLE, hFile) → store; add a certificate; CertCloseStore(0) → TRUE and commits; the caller's file handle stays open; CertOpenStore(FILENAME_W) finds 1 certificate",
    ),
    spec(
        "close-check-held",
        "memory store, a context held: CertCloseStore(CHECK) → FALSE + CRYPT_E_PENDING_CLOSE, the store is closed anyway and the context stays readable until freed",
    ),
    spec(
        "close-check-held-file",
        "file store, a context held: CertCloseStore(CHECK) → FALSE + CRYPT_E_PENDING_CLOSE, the store is closed anyway and the context stays readable until freed",
    ),
    spec(
        "close-check-duplicate-open",
        "no context held, a CertDuplicateStore reference still open: CertCloseStore(CHECK) → TRUE (only contexts count); closing the duplicate → TRUE",
    ),
    spec(
        "close-check-none",
        "memory store holding a certificate whose contexts were all freed: CertCloseStore(CHECK) → TRUE",
    ),
    spec(
        "close-force",
        "CertCloseStore(FORCE) with a context held → TRUE and every context is freed (the held pointer is abandoned, never freed again)",
    ),
    spec(
        "ncrypt-provider",
        "NCryptOpenStorageProvider(MS_KEY_STORAGE_PROVIDER) → 0; NCryptFreeObject → 0; NCryptFreeObject(0) → NTE_INVALID_HANDLE",
    ),
    spec(
        "ncrypt-key-lifecycle",
        "NCryptCreatePersistedKey(RSA, no name) → 0; NCryptFinalizeKey → 0; NCryptFreeObject(key), NCryptFreeObject(provider) → 0",
    ),
    spec(
        "ncrypt-key-persistence",
        "named key: create + finalize → 0; NCryptOpenKey(name) → 0; create again without OVERWRITE → NTE_EXISTS; NCryptDeleteKey → 0 (frees the handle); NCryptOpenKey(name) → an error",
    ),
    spec(
        "ncrypt-notify-change-key",
        "NCryptNotifyChangeKey(REGISTER) → 0 and a change-notification handle; wait on it; NCryptNotifyChangeKey(UNREGISTER) → 0 and the handle becomes INVALID_HANDLE_VALUE",
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
            assert!(!s.documented.contains('\t') && !s.documented.contains('|'), "{}: breaks the TSV/markdown table", s.name);
        }
    }
}
