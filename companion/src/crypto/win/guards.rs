//! Owning guards for every handle the crypto scenarios create, over raw windows-sys calls.
//!
//! Each guard releases its handle on drop with the documented default (flags 0) and has an
//! explicit consuming method that makes the release call and returns its raw result. Keys and
//! hashes borrow their provider, and NCrypt keys and change registrations borrow their storage
//! provider, so the compiler rejects releasing a provider before what was made from it.
//! Certificate contexts do not borrow their store: the docs say they outlive CertCloseStore(0),
//! and [`Store::close_forced`] takes the contexts it invalidates by value.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::os::windows::io::AsRawHandle as _;
use std::path::Path;

use windows_sys::Win32::Foundation::{GetLastError, HANDLE, INVALID_HANDLE_VALUE, SetLastError};
use windows_sys::Win32::Security::Cryptography::{
    CERT_CLOSE_STORE_CHECK_FLAG, CERT_CLOSE_STORE_FORCE_FLAG, CERT_CONTEXT, CERT_STORE_ADD_ALWAYS, CERT_STORE_PROV_COLLECTION,
    CERT_STORE_PROV_FILE, CERT_STORE_PROV_FILENAME_W, CERT_STORE_PROV_MEMORY, CERT_STORE_PROV_SYSTEM_W,
    CERT_SYSTEM_STORE_CURRENT_USER, CRL_CONTEXT, CTL_CONTEXT, CertAddEncodedCRLToStore, CertAddEncodedCTLToStore,
    CertAddEncodedCertificateToStore, CertAddStoreToCollection, CertCloseStore, CertCreateCertificateContext,
    CertDuplicateCertificateContext, CertDuplicateStore, CertEnumCertificatesInStore, CertFreeCRLContext, CertFreeCTLContext,
    CertFreeCertificateContext, CertOpenStore, CryptAcquireContextW, CryptContextAddRef, CryptCreateHash, CryptDestroyHash,
    CryptDestroyKey, CryptDuplicateHash, CryptDuplicateKey, CryptGenKey, CryptGenRandom, CryptHashData, CryptReleaseContext,
    HCERTSTORE, NCRYPT_REGISTER_NOTIFY_FLAG, NCRYPT_UNREGISTER_NOTIFY_FLAG, NCryptCreatePersistedKey, NCryptDeleteKey,
    NCryptFinalizeKey, NCryptFreeObject, NCryptNotifyChangeKey, NCryptOpenKey, NCryptOpenStorageProvider, PKCS_7_ASN_ENCODING,
    X509_ASN_ENCODING,
};
use windows_sys::Win32::System::Threading::WaitForSingleObject;
use windows_sys::core::{BOOL, HRESULT, PCSTR};

/// Certificate encoding used for every store and certificate here.
const ENCODING: u32 = X509_ASN_ENCODING | PKCS_7_ASN_ENCODING;

/// The raw result of a BOOL-returning API: the BOOL and `GetLastError()` read right after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoolResult {
    /// The BOOL was nonzero.
    pub ok: bool,
    /// `GetLastError()` after the call (the last error is cleared before it).
    pub last_error: u32,
}

/// The raw result of a call that creates something, with the guard when it succeeded.
pub struct Attempt<T> {
    /// BOOL + last error, or a SECURITY_STATUS.
    pub raw: Raw,
    /// The new guard; `None` when the call failed.
    pub value: Option<T>,
}

/// A raw API result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raw {
    /// From a BOOL (or handle/pointer, NULL meaning FALSE) API.
    Bool(BoolResult),
    /// A SECURITY_STATUS / HRESULT.
    Status(HRESULT),
}

/// Runs one BOOL API call with the thread's last error cleared first, so a stale code from an
/// earlier call is never reported as this call's.
fn bool_call(call: impl FnOnce() -> BOOL) -> BoolResult {
    // SAFETY: SetLastError only writes the calling thread's last-error value.
    unsafe { SetLastError(0) };
    let ok = call() != 0;
    // SAFETY: GetLastError only reads the calling thread's last-error value.
    let last_error = unsafe { GetLastError() };
    BoolResult { ok, last_error }
}

/// Reads the last error after a call that signals failure some other way (NULL handle).
fn last_error() -> u32 {
    // SAFETY: GetLastError only reads the calling thread's last-error value.
    unsafe { GetLastError() }
}

fn clear_last_error() {
    // SAFETY: SetLastError only writes the calling thread's last-error value.
    unsafe { SetLastError(0) };
}

/// A NUL-terminated UTF-16 copy of `s` for W APIs.
pub fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// A NUL-terminated UTF-16 copy of a path.
fn wide_path(path: &Path) -> Vec<u16> {
    use std::os::windows::ffi::OsStrExt as _;
    path.as_os_str().encode_wide().chain(std::iter::once(0)).collect()
}

// ---------------------------------------------------------------------------------------------
// CryptoAPI provider, key, hash

/// One reference to a CryptoAPI provider context (HCRYPTPROV). Drop: CryptReleaseContext(h, 0).
#[derive(Debug)]
pub struct Provider {
    handle: usize,
}

/// The handle value of a context that was released; kept only for opt-in stale checks.
#[derive(Clone, Copy, Debug)]
pub struct Released(usize);

impl Provider {
    /// CryptAcquireContextW(container, NULL provider name, `prov_type`, `flags`).
    /// Do not use with CRYPT_DELETEKEYSET (its handle is undefined): see [`Provider::delete_keyset`].
    pub fn acquire(container: Option<&str>, prov_type: u32, flags: u32) -> Attempt<Provider> {
        let name = container.map(wide);
        let name_ptr = name.as_ref().map_or(std::ptr::null(), Vec::as_ptr);
        let mut handle = 0usize;
        let raw = bool_call(|| {
            // SAFETY: `handle` is a valid out pointer; `name_ptr` is NULL or a NUL-terminated
            // UTF-16 string that outlives the call.
            unsafe { CryptAcquireContextW(&raw mut handle, name_ptr, std::ptr::null(), prov_type, flags) }
        });
        let value = (raw.ok && handle != 0).then_some(Provider { handle });
        Attempt { raw: Raw::Bool(raw), value }
    }

    /// CryptAcquireContextW(container, …, CRYPT_DELETEKEYSET): deletes the container. The
    /// handle it writes is undefined on success, so it is never wrapped or released.
    pub fn delete_keyset(container: &str, prov_type: u32) -> BoolResult {
        let name = wide(container);
        let mut undefined = 0usize;
        bool_call(|| {
            // SAFETY: `undefined` is a valid out pointer; `name` is NUL-terminated and lives
            // across the call.
            unsafe {
                CryptAcquireContextW(
                    &raw mut undefined,
                    name.as_ptr(),
                    std::ptr::null(),
                    prov_type,
                    windows_sys::Win32::Security::Cryptography::CRYPT_DELETEKEYSET,
                )
            }
        })
    }

    /// CRYPT_DELETEKEYSET with the handle variable pre-set to `sentinel`: the result and what
    /// the API left in the variable (never released: it is no context).
    pub fn delete_keyset_reporting_handle(container: &str, prov_type: u32, sentinel: usize) -> (BoolResult, usize) {
        let name = wide(container);
        let mut written = sentinel;
        let result = bool_call(|| {
            // SAFETY: `written` is a valid out pointer; `name` is NUL-terminated and lives
            // across the call.
            unsafe {
                CryptAcquireContextW(
                    &raw mut written,
                    name.as_ptr(),
                    std::ptr::null(),
                    prov_type,
                    windows_sys::Win32::Security::Cryptography::CRYPT_DELETEKEYSET,
                )
            }
        });
        (result, written)
    }

    /// CryptContextAddRef: one more reference, owned by the returned guard.
    pub fn add_ref(&self) -> Attempt<Provider> {
        let raw = bool_call(|| {
            // SAFETY: `self.handle` is a live context (this guard holds a reference to it).
            unsafe { CryptContextAddRef(self.handle, std::ptr::null(), 0) }
        });
        let value = raw.ok.then_some(Provider { handle: self.handle });
        Attempt { raw: Raw::Bool(raw), value }
    }

    /// CryptGenRandom into a small buffer: proves the context is still usable.
    pub fn gen_random(&self) -> BoolResult {
        let mut buf = [0u8; 16];
        bool_call(|| {
            // SAFETY: the context is live; `buf` is writable for its full length (16 bytes).
            unsafe { CryptGenRandom(self.handle, 16, buf.as_mut_ptr()) }
        })
    }

    /// CryptGenKey(`alg`, `flags`): a session key that borrows this provider.
    pub fn gen_key(&self, alg: u32, flags: u32) -> Attempt<Key<'_>> {
        let mut key = 0usize;
        let raw = bool_call(|| {
            // SAFETY: the context is live; `key` is a valid out pointer.
            unsafe { CryptGenKey(self.handle, alg, flags, &raw mut key) }
        });
        let value = (raw.ok && key != 0).then_some(Key { handle: key, _provider: PhantomData });
        Attempt { raw: Raw::Bool(raw), value }
    }

    /// CryptCreateHash(`alg`, no key): a hash object that borrows this provider.
    pub fn create_hash(&self, alg: u32) -> Attempt<Hash<'_>> {
        let mut hash = 0usize;
        let raw = bool_call(|| {
            // SAFETY: the context is live; `hash` is a valid out pointer.
            unsafe { CryptCreateHash(self.handle, alg, 0, 0, &raw mut hash) }
        });
        let value = (raw.ok && hash != 0).then_some(Hash { handle: hash, _provider: PhantomData });
        Attempt { raw: Raw::Bool(raw), value }
    }

    /// CryptReleaseContext(h, `flags`), consuming this reference whatever the result: the docs
    /// say a non-zero `flags` returns FALSE but still releases, so releasing again would be a
    /// double release.
    pub fn release(self, flags: u32) -> (BoolResult, Released) {
        let handle = self.handle;
        std::mem::forget(self);
        let raw = bool_call(|| {
            // SAFETY: this guard owned one reference to `handle`; it is given up here.
            unsafe { CryptReleaseContext(handle, flags) }
        });
        (raw, Released(handle))
    }
}

/// A key or hash handle whose provider was released while it was alive; kept only for the
/// opt-in stale checks, never destroyed by a guard.
#[derive(Clone, Copy, Debug)]
pub struct Orphan(usize);

impl Orphan {
    /// CryptHashData on an orphaned hash.
    ///
    /// # Safety
    /// The hash's provider was released; the caller accepts that the API reads freed memory.
    pub unsafe fn hash_data(self) -> BoolResult {
        let byte = [0u8; 1];
        bool_call(|| {
            // SAFETY: the caller opted in to a stale handle; `byte` is readable for 1 byte.
            unsafe { CryptHashData(self.0, byte.as_ptr(), 1, 0) }
        })
    }

    /// CryptDuplicateHash (`key` false) or CryptDuplicateKey (`key` true) on an orphan; a
    /// duplicate it returned anyway is not destroyed (its provider is gone).
    ///
    /// # Safety
    /// As for [`Orphan::hash_data`].
    pub unsafe fn duplicate(self, key: bool) -> BoolResult {
        let mut copy = 0usize;
        bool_call(|| {
            if key {
                // SAFETY: the caller opted in to a stale handle; `copy` is a valid out pointer.
                unsafe { CryptDuplicateKey(self.0, std::ptr::null(), 0, &raw mut copy) }
            } else {
                // SAFETY: the caller opted in to a stale handle; `copy` is a valid out pointer.
                unsafe { CryptDuplicateHash(self.0, std::ptr::null(), 0, &raw mut copy) }
            }
        })
    }

    /// CryptDestroyHash (`key` false) or CryptDestroyKey (`key` true) on an orphan.
    ///
    /// # Safety
    /// As for [`Orphan::hash_data`].
    pub unsafe fn destroy(self, key: bool) -> BoolResult {
        bool_call(|| {
            if key {
                // SAFETY: the caller opted in to a stale handle.
                unsafe { CryptDestroyKey(self.0) }
            } else {
                // SAFETY: the caller opted in to a stale handle.
                unsafe { CryptDestroyHash(self.0) }
            }
        })
    }
}

impl Key<'_> {
    /// Gives up the guard without destroying the key, for a release while it is alive.
    pub fn into_orphan(self) -> Orphan {
        let handle = self.handle;
        std::mem::forget(self);
        Orphan(handle)
    }
}

impl Hash<'_> {
    /// Gives up the guard without destroying the hash, for a release while it is alive.
    pub fn into_orphan(self) -> Orphan {
        let handle = self.handle;
        std::mem::forget(self);
        Orphan(handle)
    }
}

impl Released {
    /// CryptGenRandom on the released handle.
    ///
    /// # Safety
    /// As for [`Released::release_again`].
    pub unsafe fn gen_random(self) -> BoolResult {
        let mut buf = [0u8; 1];
        bool_call(|| {
            // SAFETY: the caller opted in to a stale handle; `buf` is writable for 1 byte.
            unsafe { CryptGenRandom(self.0, 1, buf.as_mut_ptr()) }
        })
    }

    /// CryptContextAddRef on the released handle; a reference it adds anyway is not released.
    ///
    /// # Safety
    /// As for [`Released::release_again`].
    pub unsafe fn add_ref(self) -> BoolResult {
        bool_call(|| {
            // SAFETY: the caller opted in to a stale handle.
            unsafe { CryptContextAddRef(self.0, std::ptr::null(), 0) }
        })
    }

    /// CryptCreateHash on the released handle; a hash it creates anyway is not destroyed.
    ///
    /// # Safety
    /// As for [`Released::release_again`].
    pub unsafe fn create_hash(self, alg: u32) -> BoolResult {
        let mut hash = 0usize;
        bool_call(|| {
            // SAFETY: the caller opted in to a stale handle; `hash` is a valid out pointer.
            unsafe { CryptCreateHash(self.0, alg, 0, 0, &raw mut hash) }
        })
    }

    /// CryptReleaseContext on the released handle: the provider looks it up in freed memory.
    ///
    /// # Safety
    /// The context must have been fully released (no live reference), and the caller accepts
    /// that the provider reads freed memory (opt-in `--unsafe-stale-checks`).
    pub unsafe fn release_again(self) -> BoolResult {
        bool_call(|| {
            // SAFETY: the caller opted in to passing a stale handle; the API validates it.
            unsafe { CryptReleaseContext(self.0, 0) }
        })
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        // SAFETY: this guard owns one reference to the context.
        unsafe { CryptReleaseContext(self.handle, 0) };
    }
}

/// A session key (HCRYPTKEY) made from a provider it borrows. Drop: CryptDestroyKey.
#[derive(Debug)]
pub struct Key<'p> {
    handle: usize,
    _provider: PhantomData<&'p Provider>,
}

impl Key<'_> {
    /// CryptDestroyKey, consuming the guard.
    pub fn destroy(self) -> BoolResult {
        let handle = self.handle;
        std::mem::forget(self);
        bool_call(|| {
            // SAFETY: the guard owned the key; its provider is still alive (borrowed).
            unsafe { CryptDestroyKey(handle) }
        })
    }
}

impl Drop for Key<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard owns the key and its provider outlives it (borrow).
        unsafe { CryptDestroyKey(self.handle) };
    }
}

/// A hash object (HCRYPTHASH) made from a provider it borrows. Drop: CryptDestroyHash.
#[derive(Debug)]
pub struct Hash<'p> {
    handle: usize,
    _provider: PhantomData<&'p Provider>,
}

impl Hash<'_> {
    /// CryptHashData over `data`.
    pub fn hash_data(&self, data: &[u8]) -> BoolResult {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        bool_call(|| {
            // SAFETY: the hash is live; `data` is readable for `len` bytes (len ≤ data.len()).
            unsafe { CryptHashData(self.handle, data.as_ptr(), len, 0) }
        })
    }

    /// CryptDestroyHash, consuming the guard.
    pub fn destroy(self) -> BoolResult {
        let handle = self.handle;
        std::mem::forget(self);
        bool_call(|| {
            // SAFETY: the guard owned the hash; its provider is still alive (borrowed).
            unsafe { CryptDestroyHash(handle) }
        })
    }
}

impl Drop for Hash<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard owns the hash and its provider outlives it (borrow).
        unsafe { CryptDestroyHash(self.handle) };
    }
}

// ---------------------------------------------------------------------------------------------
// Certificate stores and contexts

/// How to close a store. FORCE is not here: it invalidates contexts, see [`Store::close_forced`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseFlags {
    /// Flags 0: the documented default.
    Default,
    /// CERT_CLOSE_STORE_CHECK_FLAG: a diagnostic that reports contexts still held.
    Check,
}

/// One reference to a certificate store (HCERTSTORE). Drop: CertCloseStore(h, 0).
#[derive(Debug)]
pub struct Store {
    handle: HCERTSTORE,
}

impl Store {
    fn open(provider: PCSTR, encoding: u32, flags: u32, para: *const c_void) -> Attempt<Store> {
        clear_last_error();
        // SAFETY: `provider` is one of the predefined store provider ids; `para` is what that
        // provider expects (NULL, a NUL-terminated wide string, or a file HANDLE value) and
        // outlives the call.
        let handle = unsafe { CertOpenStore(provider, encoding, 0, flags, para) };
        let raw = BoolResult { ok: !handle.is_null(), last_error: if handle.is_null() { last_error() } else { 0 } };
        let value = (!handle.is_null()).then_some(Store { handle });
        Attempt { raw: Raw::Bool(raw), value }
    }

    /// CertOpenStore(CERT_STORE_PROV_MEMORY).
    pub fn open_memory() -> Attempt<Store> {
        Self::open(CERT_STORE_PROV_MEMORY, 0, 0, std::ptr::null())
    }

    /// CertOpenStore(CERT_STORE_PROV_SYSTEM_W, CERT_SYSTEM_STORE_CURRENT_USER, `name`).
    pub fn open_system_current_user(name: &str) -> Attempt<Store> {
        let name = wide(name);
        Self::open(CERT_STORE_PROV_SYSTEM_W, 0, CERT_SYSTEM_STORE_CURRENT_USER, name.as_ptr().cast())
    }

    /// CertOpenStore(CERT_STORE_PROV_FILE, `flags`, the file's HANDLE value). With
    /// CERT_FILE_STORE_COMMIT_ENABLE_FLAG the store duplicates the handle; the caller's stays open.
    pub fn open_file(file: &std::fs::File, flags: u32) -> Attempt<Store> {
        let handle: HANDLE = file.as_raw_handle();
        Self::open(CERT_STORE_PROV_FILE, ENCODING, flags, handle.cast_const())
    }

    /// CertOpenStore(CERT_STORE_PROV_FILENAME_W, `flags`, `path`).
    pub fn open_filename(path: &Path, flags: u32) -> Attempt<Store> {
        let name = wide_path(path);
        Self::open(CERT_STORE_PROV_FILENAME_W, ENCODING, flags, name.as_ptr().cast())
    }

    /// CertOpenStore(CERT_STORE_PROV_COLLECTION): an empty collection.
    pub fn open_collection() -> Attempt<Store> {
        Self::open(CERT_STORE_PROV_COLLECTION, 0, 0, std::ptr::null())
    }

    /// CertAddStoreToCollection(self, `member`, 0, 0): the collection takes its own reference.
    pub fn add_to_collection(&self, member: &Store) -> BoolResult {
        bool_call(|| {
            // SAFETY: both stores are live (their guards hold references).
            unsafe { CertAddStoreToCollection(self.handle, member.handle, 0, 0) }
        })
    }

    /// CertAddEncodedCRLToStore(ADD_ALWAYS) asking for the added CRL context.
    pub fn add_encoded_crl(&self, der: &[u8]) -> Attempt<CrlContext> {
        let len = u32::try_from(der.len()).unwrap_or(u32::MAX);
        let mut context: *mut CRL_CONTEXT = std::ptr::null_mut();
        let raw = bool_call(|| {
            // SAFETY: the store is live; `der` is readable for `len` bytes; `context` is a valid
            // out pointer.
            unsafe {
                CertAddEncodedCRLToStore(
                    self.handle,
                    X509_ASN_ENCODING,
                    der.as_ptr(),
                    len,
                    CERT_STORE_ADD_ALWAYS,
                    &raw mut context,
                )
            }
        });
        let value = (raw.ok && !context.is_null()).then_some(CrlContext { context });
        Attempt { raw: Raw::Bool(raw), value }
    }

    /// CertAddEncodedCTLToStore(ADD_ALWAYS) asking for the added CTL context.
    pub fn add_encoded_ctl(&self, der: &[u8]) -> Attempt<CtlContext> {
        let len = u32::try_from(der.len()).unwrap_or(u32::MAX);
        let mut context: *mut CTL_CONTEXT = std::ptr::null_mut();
        let raw = bool_call(|| {
            // SAFETY: the store is live; `der` is readable for `len` bytes; `context` is a valid
            // out pointer.
            unsafe { CertAddEncodedCTLToStore(self.handle, ENCODING, der.as_ptr(), len, CERT_STORE_ADD_ALWAYS, &raw mut context) }
        });
        let value = (raw.ok && !context.is_null()).then_some(CtlContext { context });
        Attempt { raw: Raw::Bool(raw), value }
    }

    /// The handle value, to compare with a duplicate.
    pub fn handle_value(&self) -> usize {
        self.handle as usize
    }

    /// CertDuplicateStore: one more reference, owned by the returned guard.
    pub fn duplicate(&self) -> Store {
        // SAFETY: the store is live (this guard holds a reference).
        let handle = unsafe { CertDuplicateStore(self.handle) };
        Store { handle }
    }

    /// CertAddEncodedCertificateToStore(ADD_ALWAYS) asking for the added context.
    pub fn add_encoded(&self, der: &[u8]) -> Attempt<CertContext> {
        let len = u32::try_from(der.len()).unwrap_or(u32::MAX);
        let mut context: *mut CERT_CONTEXT = std::ptr::null_mut();
        let raw = bool_call(|| {
            // SAFETY: the store is live; `der` is readable for `len` bytes; `context` is a valid
            // out pointer.
            unsafe {
                CertAddEncodedCertificateToStore(
                    self.handle,
                    X509_ASN_ENCODING,
                    der.as_ptr(),
                    len,
                    CERT_STORE_ADD_ALWAYS,
                    &raw mut context,
                )
            }
        });
        let value = (raw.ok && !context.is_null()).then_some(CertContext { context });
        Attempt { raw: Raw::Bool(raw), value }
    }

    /// CertAddEncodedCertificateToStore(ADD_ALWAYS) without asking for a context.
    pub fn add_encoded_without_context(&self, der: &[u8]) -> BoolResult {
        let len = u32::try_from(der.len()).unwrap_or(u32::MAX);
        bool_call(|| {
            // SAFETY: the store is live; `der` is readable for `len` bytes; a NULL out pointer
            // is allowed.
            unsafe {
                CertAddEncodedCertificateToStore(
                    self.handle,
                    X509_ASN_ENCODING,
                    der.as_ptr(),
                    len,
                    CERT_STORE_ADD_ALWAYS,
                    std::ptr::null_mut(),
                )
            }
        })
    }

    /// Number of certificates, by CertEnumCertificatesInStore (which frees the previous context
    /// on each call, so none is left held).
    pub fn certificate_count(&self) -> usize {
        let mut count = 0;
        let mut previous: *const CERT_CONTEXT = std::ptr::null();
        loop {
            // SAFETY: the store is live; `previous` is NULL or the context the last call returned,
            // which this call frees.
            let next = unsafe { CertEnumCertificatesInStore(self.handle, previous) };
            if next.is_null() {
                return count;
            }
            count += 1;
            previous = next;
        }
    }

    /// CertCloseStore with `flags`, consuming this reference whatever the result (the docs say
    /// CHECK closes the store even when it returns FALSE).
    pub fn close(self, flags: CloseFlags) -> BoolResult {
        let handle = self.handle;
        std::mem::forget(self);
        let flags = match flags {
            CloseFlags::Default => 0,
            CloseFlags::Check => CERT_CLOSE_STORE_CHECK_FLAG,
        };
        bool_call(|| {
            // SAFETY: this guard owned one reference to the store; it is given up here.
            unsafe { CertCloseStore(handle, flags) }
        })
    }

    /// CertCloseStore(CERT_CLOSE_STORE_FORCE_FLAG). FORCE frees every context of the store, so
    /// the caller hands over the contexts it holds; they are abandoned, never freed again.
    pub fn close_forced(self, contexts: Vec<CertContext>) -> BoolResult {
        let handle = self.handle;
        std::mem::forget(self);
        let result = bool_call(|| {
            // SAFETY: this guard owned one reference to the store; it is given up here.
            unsafe { CertCloseStore(handle, CERT_CLOSE_STORE_FORCE_FLAG) }
        });
        for context in contexts {
            std::mem::forget(context);
        }
        result
    }
}

/// CertCloseStore(NULL, 0): closes nothing.
pub fn close_null_store() -> BoolResult {
    bool_call(|| {
        // SAFETY: NULL is no store; the API is called with it on purpose (it must not touch it).
        unsafe { CertCloseStore(std::ptr::null_mut(), 0) }
    })
}

/// CertCreateCertificateContext(X509): a context in no store the caller opened.
pub fn create_certificate_context(der: &[u8]) -> Attempt<CertContext> {
    let len = u32::try_from(der.len()).unwrap_or(u32::MAX);
    clear_last_error();
    // SAFETY: `der` is readable for `len` bytes.
    let context = unsafe { CertCreateCertificateContext(X509_ASN_ENCODING, der.as_ptr(), len) };
    let raw = BoolResult { ok: !context.is_null(), last_error: if context.is_null() { last_error() } else { 0 } };
    Attempt { raw: Raw::Bool(raw), value: (!context.is_null()).then_some(CertContext { context }) }
}

/// One reference to a CRL context. Drop: CertFreeCRLContext.
#[derive(Debug)]
pub struct CrlContext {
    context: *mut CRL_CONTEXT,
}

impl CrlContext {
    /// CertFreeCRLContext, consuming the guard.
    pub fn free(self) -> BoolResult {
        let context = self.context;
        std::mem::forget(self);
        bool_call(|| {
            // SAFETY: the guard owned one reference to the context; it is given up here.
            unsafe { CertFreeCRLContext(context) }
        })
    }
}

impl Drop for CrlContext {
    fn drop(&mut self) {
        // SAFETY: the guard owns one reference to the context.
        unsafe { CertFreeCRLContext(self.context) };
    }
}

/// One reference to a CTL context. Drop: CertFreeCTLContext.
#[derive(Debug)]
pub struct CtlContext {
    context: *mut CTL_CONTEXT,
}

impl CtlContext {
    /// CertFreeCTLContext, consuming the guard.
    pub fn free(self) -> BoolResult {
        let context = self.context;
        std::mem::forget(self);
        bool_call(|| {
            // SAFETY: the guard owned one reference to the context; it is given up here.
            unsafe { CertFreeCTLContext(context) }
        })
    }
}

impl Drop for CtlContext {
    fn drop(&mut self) {
        // SAFETY: the guard owns one reference to the context.
        unsafe { CertFreeCTLContext(self.context) };
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: this guard owns one reference to the store.
        unsafe { CertCloseStore(self.handle, 0) };
    }
}

/// One reference to a certificate context. Drop: CertFreeCertificateContext.
#[derive(Debug)]
pub struct CertContext {
    context: *mut CERT_CONTEXT,
}

impl CertContext {
    /// The pointer value, to compare with a duplicate.
    pub fn pointer_value(&self) -> usize {
        self.context as usize
    }

    /// CertDuplicateCertificateContext: one more reference (the same pointer).
    pub fn duplicate(&self) -> CertContext {
        // SAFETY: this guard holds a reference, so the context is valid.
        let context = unsafe { CertDuplicateCertificateContext(self.context) };
        CertContext { context }
    }

    /// `cbCertEncoded`: reading it proves the context is still valid memory.
    pub fn encoded_len(&self) -> u32 {
        // SAFETY: this guard holds a reference, so the context stays valid (contexts outlive a
        // store closed without FORCE; FORCE takes the guards by value).
        unsafe { (*self.context).cbCertEncoded }
    }

    /// CertCloseStore(`hCertStore` of this context, `flags`): the caller never opened that
    /// store, so Windows refuses (testEmptyStore); the result is returned as is.
    pub fn close_its_store(&self, flags: CloseFlags) -> BoolResult {
        // SAFETY: this guard holds a reference, so the context (and its hCertStore field) is valid.
        let store = unsafe { (*self.context).hCertStore };
        let flags = match flags {
            CloseFlags::Default => 0,
            CloseFlags::Check => CERT_CLOSE_STORE_CHECK_FLAG,
        };
        bool_call(|| {
            // SAFETY: `store` is the live store the held context points to; closing it is the check.
            unsafe { CertCloseStore(store, flags) }
        })
    }

    /// Whether the context names a store (`hCertStore` non-NULL).
    pub fn has_store(&self) -> bool {
        // SAFETY: this guard holds a reference, so the context is valid.
        !unsafe { (*self.context).hCertStore }.is_null()
    }

    /// CertFreeCertificateContext, consuming the guard.
    pub fn free(self) -> BoolResult {
        let context = self.context;
        std::mem::forget(self);
        bool_call(|| {
            // SAFETY: the guard owned one reference to the context; it is given up here.
            unsafe { CertFreeCertificateContext(context) }
        })
    }
}

impl Drop for CertContext {
    fn drop(&mut self) {
        // SAFETY: the guard owns one reference to the context.
        unsafe { CertFreeCertificateContext(self.context) };
    }
}

/// GetFileSizeEx on a file the caller still holds: proves the handle is open and shows whether
/// a committed store was written to it.
pub fn file_size(file: &std::fs::File) -> (BoolResult, i64) {
    let mut size = 0i64;
    let handle: HANDLE = file.as_raw_handle();
    let raw = bool_call(|| {
        // SAFETY: `handle` is the open file's handle (borrowed from `file`); `size` is a valid
        // out pointer.
        unsafe { windows_sys::Win32::Storage::FileSystem::GetFileSizeEx(handle, &raw mut size) }
    });
    (raw, size)
}

// ---------------------------------------------------------------------------------------------
// NCrypt

/// An NCrypt key storage provider (NCRYPT_PROV_HANDLE). Drop: NCryptFreeObject.
#[derive(Debug)]
pub struct NcryptProvider {
    handle: usize,
}

/// NCryptFreeObject on a raw value (for the documented NCryptFreeObject(0) → NTE_INVALID_HANDLE).
pub fn free_object_raw(handle: usize) -> HRESULT {
    // SAFETY: only ever called with 0 (no object), which the API rejects without dereferencing.
    unsafe { NCryptFreeObject(handle) }
}

/// NCryptFreeObject on the address of `not_an_object` (memory that holds no NCrypt object).
pub fn free_object_not_a_handle(not_an_object: &[u8; 64]) -> HRESULT {
    // SAFETY: the address points to 64 readable bytes filled so that no object type matches;
    // the API is expected to reject it without writing or freeing.
    unsafe { NCryptFreeObject(not_an_object.as_ptr() as usize) }
}

impl NcryptProvider {
    /// NCryptOpenStorageProvider(`name`, 0).
    pub fn open(name: &str) -> Attempt<NcryptProvider> {
        let name = wide(name);
        let mut handle = 0usize;
        // SAFETY: `handle` is a valid out pointer; `name` is NUL-terminated and outlives the call.
        let status = unsafe { NCryptOpenStorageProvider(&raw mut handle, name.as_ptr(), 0) };
        let value = (status == 0 && handle != 0).then_some(NcryptProvider { handle });
        Attempt { raw: Raw::Status(status), value }
    }

    /// NCryptFreeObject, consuming the guard.
    pub fn free(self) -> HRESULT {
        let handle = self.handle;
        std::mem::forget(self);
        // SAFETY: the guard owned the provider handle; it is given up here.
        unsafe { NCryptFreeObject(handle) }
    }

    /// NCryptCreatePersistedKey(`alg`, `name` or NULL for an ephemeral key, `flags`).
    pub fn create_persisted_key(&self, alg: &str, name: Option<&str>, flags: u32) -> Attempt<NcryptKey<'_>> {
        let alg = wide(alg);
        let name = name.map(wide);
        let name_ptr = name.as_ref().map_or(std::ptr::null(), Vec::as_ptr);
        let mut key = 0usize;
        // SAFETY: the provider is live; `key` is a valid out pointer; both strings are
        // NUL-terminated (or NULL) and outlive the call.
        let status = unsafe { NCryptCreatePersistedKey(self.handle, &raw mut key, alg.as_ptr(), name_ptr, 0, flags) };
        let value = (status == 0 && key != 0).then_some(NcryptKey { handle: key, _provider: PhantomData });
        Attempt { raw: Raw::Status(status), value }
    }

    /// NCryptOpenKey(`name`).
    pub fn open_key(&self, name: &str) -> Attempt<NcryptKey<'_>> {
        let name = wide(name);
        let mut key = 0usize;
        // SAFETY: the provider is live; `key` is a valid out pointer; `name` is NUL-terminated.
        let status = unsafe { NCryptOpenKey(self.handle, &raw mut key, name.as_ptr(), 0, 0) };
        let value = (status == 0 && key != 0).then_some(NcryptKey { handle: key, _provider: PhantomData });
        Attempt { raw: Raw::Status(status), value }
    }

    /// NCryptNotifyChangeKey(REGISTER). Never call this under Wine 8.0: it is an aborting stub.
    pub fn register_change_notification(&self) -> Attempt<ChangeRegistration<'_>> {
        let mut event: HANDLE = std::ptr::null_mut();
        // SAFETY: the provider is live; `event` is a valid in/out HANDLE variable.
        let status = unsafe { NCryptNotifyChangeKey(self.handle, &raw mut event, NCRYPT_REGISTER_NOTIFY_FLAG) };
        let valid = status == 0 && !event.is_null() && event != INVALID_HANDLE_VALUE;
        let value = valid.then_some(ChangeRegistration { provider: self, event });
        Attempt { raw: Raw::Status(status), value }
    }
}

impl Drop for NcryptProvider {
    fn drop(&mut self) {
        // SAFETY: the guard owns the provider handle.
        unsafe { NCryptFreeObject(self.handle) };
    }
}

/// An NCrypt key (NCRYPT_KEY_HANDLE) that borrows its provider. Drop: NCryptFreeObject.
#[derive(Debug)]
pub struct NcryptKey<'p> {
    handle: usize,
    _provider: PhantomData<&'p NcryptProvider>,
}

impl<'p> NcryptKey<'p> {
    /// NCryptFinalizeKey(h, 0).
    pub fn finalize(&self) -> HRESULT {
        // SAFETY: the key handle is live (owned by this guard).
        unsafe { NCryptFinalizeKey(self.handle, 0) }
    }

    /// NCryptFreeObject, consuming the guard.
    pub fn free(self) -> HRESULT {
        let handle = self.handle;
        std::mem::forget(self);
        // SAFETY: the guard owned the key handle; it is given up here.
        unsafe { NCryptFreeObject(handle) }
    }

    /// NCryptDeleteKey(h, 0). On success the API frees the handle; on failure the handle is
    /// still ours and comes back in the guard, so it is freed (by drop) rather than leaked.
    pub fn delete(self) -> (HRESULT, Option<NcryptKey<'p>>) {
        // SAFETY: the key handle is live (owned by this guard).
        let status = unsafe { NCryptDeleteKey(self.handle, 0) };
        if status == 0 {
            std::mem::forget(self);
            (status, None)
        } else {
            (status, Some(self))
        }
    }
}

impl Drop for NcryptKey<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard owns the key handle.
        unsafe { NCryptFreeObject(self.handle) };
    }
}

/// A key change notification registration. Drop: NCryptNotifyChangeKey(UNREGISTER).
#[derive(Debug)]
pub struct ChangeRegistration<'p> {
    provider: &'p NcryptProvider,
    event: HANDLE,
}

impl ChangeRegistration<'_> {
    /// WaitForSingleObject on the notification handle.
    pub fn wait(&self, milliseconds: u32) -> u32 {
        // SAFETY: the notification handle is live until unregistered.
        unsafe { WaitForSingleObject(self.event, milliseconds) }
    }

    /// NCryptNotifyChangeKey(UNREGISTER); returns the status and what the API wrote back into
    /// the handle variable (documented: INVALID_HANDLE_VALUE).
    pub fn unregister(self) -> (HRESULT, HANDLE) {
        let mut event = self.event;
        let provider = self.provider.handle;
        std::mem::forget(self);
        // SAFETY: `event` holds the live registration handle; the provider is alive (borrowed).
        let status = unsafe { NCryptNotifyChangeKey(provider, &raw mut event, NCRYPT_UNREGISTER_NOTIFY_FLAG) };
        (status, event)
    }
}

impl Drop for ChangeRegistration<'_> {
    fn drop(&mut self) {
        let mut event = self.event;
        // SAFETY: the registration is live and its provider is alive (borrowed).
        unsafe { NCryptNotifyChangeKey(self.provider.handle, &raw mut event, NCRYPT_UNREGISTER_NOTIFY_FLAG) };
    }
}
