//! The scenario bodies. Each records its calls in a [`Recorder`]; a prerequisite that fails
//! stops the scenario with `?`, and every guard still alive is released on the way out.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use windows_sys::Win32::Foundation::{
    CRYPT_E_PENDING_CLOSE, E_UNEXPECTED, ERROR_INVALID_PARAMETER, INVALID_HANDLE_VALUE, NTE_BAD_FLAGS, NTE_BAD_KEYSET,
    NTE_EXISTS, NTE_INVALID_HANDLE, WAIT_OBJECT_0,
};
use windows_sys::Win32::Security::Cryptography::{
    CALG_AES_128, CALG_SHA_256, CERT_FILE_STORE_COMMIT_ENABLE_FLAG, CERT_STORE_OPEN_EXISTING_FLAG, CERT_STORE_READONLY_FLAG,
    CRYPT_NEWKEYSET, CRYPT_VERIFYCONTEXT, PROV_RSA_AES,
};

use super::check::{Expect, Recorder, Stop};
use super::guards::{
    CloseFlags, NcryptProvider, Provider, Store, close_null_store, create_certificate_context, file_size,
    free_object_not_a_handle, free_object_raw,
};
use crate::crypto::catalog::ScenarioSpec;
use crate::crypto::report::{Evidence, Outcome};
use crate::crypto::runner::Scenario;

/// A self-signed certificate (EC P-256, CN "ctxguard crypto scenario") made for these scenarios.
const CERT: &[u8] = include_bytes!("scenario-cert.der");
/// An empty CRL and a CTL (PKCS #7 signed, one code-signing usage) of a throw-away EC P-256
/// issuer, made by make_fixtures.py beside this file.
const CRL: &[u8] = include_bytes!("scenario-crl.der");
const CTL: &[u8] = include_bytes!("scenario-ctl.der");
/// The software key storage provider every NCrypt scenario opens.
const KSP: &str = "Microsoft Software Key Storage Provider";
/// HRESULT-valued error codes as the u32 GetLastError returns them.
#[allow(clippy::cast_sign_loss, reason = "GetLastError returns HRESULT codes as their u32 bit pattern")]
const fn bits(code: i32) -> u32 {
    code as u32
}

/// What every scenario may look at.
pub struct Ctx {
    /// Running under Wine: its aborting stubs must not be called.
    pub wine: bool,
    /// `--unsafe-stale-checks` was given.
    pub stale: bool,
    /// A directory for file stores, removed at the end of the run.
    pub scratch: PathBuf,
    /// This process's id, to make container and key names unique.
    pub pid: u32,
}

type Body = fn(&Ctx, u32, &mut Recorder) -> Result<(), Stop>;

/// A catalog entry bound to its body.
pub struct WinScenario<'c> {
    spec: &'static ScenarioSpec,
    ctx: &'c Ctx,
    body: Body,
}

impl<'c> WinScenario<'c> {
    /// The body of the scenario named in `spec`.
    pub fn new(spec: &'static ScenarioSpec, ctx: &'c Ctx) -> Option<Self> {
        let body: Body = match spec.name {
            "verify-context" => verify_context,
            "addref-release" => addref_release,
            "release-flags-last-ref" => release_flags_last_ref,
            "release-flags-shared-ref" => release_flags_shared_ref,
            "stale-release" => stale_release,
            "named-container" => named_container,
            "keys-hashes-before-release" => keys_hashes_before_release,
            "memory-store" => memory_store,
            "system-store" => system_store,
            "file-store" => file_store,
            "close-check-held" => close_check_held,
            "close-check-held-file" => close_check_held_file,
            "close-check-duplicate-open" => close_check_duplicate_open,
            "close-check-none" => close_check_none,
            "close-force" => close_force,
            "ncrypt-provider" => ncrypt_provider,
            "ncrypt-key-lifecycle" => ncrypt_key_lifecycle,
            "ncrypt-key-persistence" => ncrypt_key_persistence,
            "ncrypt-notify-change-key" => ncrypt_notify_change_key,
            "close-check-empty" => close_check_empty,
            "close-check-duplicate-last" => close_check_duplicate_last,
            "close-check-held-crl" => close_check_held_crl,
            "close-check-held-ctl" => close_check_held_ctl,
            "close-implicit-store" => close_implicit_store,
            "close-null-store" => close_null,
            "release-with-key-and-hash-alive" => release_with_key_and_hash_alive,
            "delete-keyset-handle" => delete_keyset_handle,
            "ncrypt-finalize-twice" => ncrypt_finalize_twice,
            "ncrypt-free-non-handle" => ncrypt_free_non_handle,
            "collection-outlives-member" => collection_outlives_member,
            _ => return None,
        };
        Some(WinScenario { spec, ctx, body })
    }
}

impl Scenario for WinScenario<'_> {
    fn name(&self) -> &'static str {
        self.spec.name
    }

    fn documented(&self) -> &'static str {
        self.spec.documented
    }

    fn source(&self) -> &'static str {
        self.spec.source
    }

    fn evidence(&self) -> Evidence {
        self.spec.evidence
    }

    fn doc_vs_windows(&self) -> Option<(&'static str, &'static str)> {
        self.spec.doc_vs_windows
    }

    fn run(&self, pass: u32) -> Outcome {
        let mut recorder = Recorder::default();
        let result = (self.body)(self.ctx, pass, &mut recorder);
        recorder.finish(result)
    }
}

const VERIFY_CALL: &str = "CryptAcquireContextW(NULL, NULL, PROV_RSA_AES, CRYPT_VERIFYCONTEXT)";

fn verify_provider(r: &mut Recorder) -> Result<Provider, Stop> {
    r.require_provider(VERIFY_CALL, Provider::acquire(None, PROV_RSA_AES, CRYPT_VERIFYCONTEXT))
}

/// Why a check needing a freed handle did not run.
const STALE_OPT_IN: &str =
    "passes a released handle to the API (the provider reads freed memory); opt in with --unsafe-stale-checks";

fn verify_context(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let provider = verify_provider(r)?;
    let (released, _) = provider.release(0);
    r.bool("CryptReleaseContext(h, 0)", released, Expect::True);
    Ok(())
}

fn addref_release(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let first = verify_provider(r)?;
    let mut extra = Vec::new();
    for n in 1..=3 {
        extra.push(r.require(&format!("CryptContextAddRef(h) #{n}"), first.add_ref())?);
    }
    for (n, reference) in (1..).zip(extra) {
        let (released, _) = reference.release(0);
        r.bool(&format!("CryptReleaseContext(h, 0) #{n}"), released, Expect::True);
        r.bool(&format!("CryptGenRandom(h) after release #{n}"), first.gen_random(), Expect::True);
    }
    let (released, _) = first.release(0);
    r.bool("CryptReleaseContext(h, 0) #4, the last reference", released, Expect::True);
    Ok(())
}

fn release_flags_last_ref(ctx: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let provider = verify_provider(r)?;
    let (released, stale) = provider.release(1);
    r.bool("CryptReleaseContext(h, 1) on the last reference", released, Expect::FalseWith(bits(NTE_BAD_FLAGS)));
    if ctx.stale {
        // SAFETY: the only reference was just released (FALSE or not, the docs say it is
        // released); the user opted in to stale checks.
        let again = unsafe { stale.release_again() };
        r.bool("CryptReleaseContext(h, 0) again (stale)", again, Expect::FalseWith(ERROR_INVALID_PARAMETER));
    }
    Ok(())
}

fn release_flags_shared_ref(ctx: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let provider = verify_provider(r)?;
    let second = r.require("CryptContextAddRef(h)", provider.add_ref())?;
    let (released, _) = second.release(1);
    r.bool("CryptReleaseContext(h, 1) with 2 references", released, Expect::FalseWith(bits(NTE_BAD_FLAGS)));
    let (released, stale) = provider.release(0);
    r.bool("CryptReleaseContext(h, 0), the last reference", released, Expect::True);
    if ctx.stale {
        // SAFETY: both references were released above; the user opted in to stale checks.
        let again = unsafe { stale.release_again() };
        r.bool("CryptReleaseContext(h, 0) again (stale)", again, Expect::FalseWith(ERROR_INVALID_PARAMETER));
    }
    Ok(())
}

fn stale_release(ctx: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    if !ctx.stale {
        return Err(Stop::Skip(STALE_OPT_IN.to_owned()));
    }
    let provider = verify_provider(r)?;
    let (released, stale) = provider.release(0);
    r.bool("CryptReleaseContext(h, 0)", released, Expect::True);
    // SAFETY: the only reference was released just above; the user opted in to stale checks.
    let again = unsafe { stale.release_again() };
    r.bool("CryptReleaseContext(h, 0) again (stale)", again, Expect::FalseWith(ERROR_INVALID_PARAMETER));
    Ok(())
}

/// Deletes a named key container on drop unless the scenario deleted it itself, so no error
/// path leaves a container behind.
struct ContainerCleanup<'a> {
    name: &'a str,
    deleted: bool,
}

impl Drop for ContainerCleanup<'_> {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = Provider::delete_keyset(self.name, PROV_RSA_AES);
        }
    }
}

fn named_container(ctx: &Ctx, pass: u32, r: &mut Recorder) -> Result<(), Stop> {
    let name = format!("ctxguard-crypto-{}-{pass}", ctx.pid);
    let created = r.require_provider(
        "CryptAcquireContextW(name, NULL, PROV_RSA_AES, CRYPT_NEWKEYSET)",
        Provider::acquire(Some(&name), PROV_RSA_AES, CRYPT_NEWKEYSET),
    )?;
    let mut cleanup = ContainerCleanup { name: &name, deleted: false };
    let (released, _) = created.release(0);
    r.bool("CryptReleaseContext(h, 0)", released, Expect::True);

    let opened = r.require("CryptAcquireContextW(name, …, 0)", Provider::acquire(Some(&name), PROV_RSA_AES, 0))?;
    let (released, _) = opened.release(0);
    r.bool("CryptReleaseContext(h, 0) of the opened container", released, Expect::True);

    r.refuse(
        "CryptAcquireContextW(name, …, CRYPT_NEWKEYSET) again",
        Provider::acquire(Some(&name), PROV_RSA_AES, CRYPT_NEWKEYSET),
        Expect::FalseWith(bits(NTE_EXISTS)),
    );
    let deleted = Provider::delete_keyset(&name, PROV_RSA_AES);
    cleanup.deleted = deleted.ok;
    r.bool("CryptAcquireContextW(name, …, CRYPT_DELETEKEYSET)", deleted, Expect::True);
    r.refuse(
        "CryptAcquireContextW(name, …, 0) after the delete",
        Provider::acquire(Some(&name), PROV_RSA_AES, 0),
        Expect::FalseWith(bits(NTE_BAD_KEYSET)),
    );
    Ok(())
}

fn keys_hashes_before_release(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let provider = verify_provider(r)?;
    let key = r.require("CryptGenKey(h, CALG_AES_128)", provider.gen_key(CALG_AES_128, 0))?;
    let hash = r.require("CryptCreateHash(h, CALG_SHA_256)", provider.create_hash(CALG_SHA_256))?;
    r.bool("CryptHashData(hash)", hash.hash_data(b"ctxguard"), Expect::True);
    r.bool("CryptDestroyHash(hash)", hash.destroy(), Expect::True);
    r.bool("CryptDestroyKey(key)", key.destroy(), Expect::True);
    // `provider.release` cannot compile while `key` or `hash` is alive: they borrow it.
    let (released, _) = provider.release(0);
    r.bool("CryptReleaseContext(h, 0)", released, Expect::True);
    Ok(())
}

fn same(r: &mut Recorder, what: &str, expected: &str, a: usize, b: usize) {
    r.fact(what, expected, format!("{b:#x} (original {a:#x})"), a == b);
}

fn memory_store(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let store = r.require("CertOpenStore(MEMORY)", Store::open_memory())?;
    let duplicate = store.duplicate();
    same(r, "CertDuplicateStore(h)", "the same handle", store.handle_value(), duplicate.handle_value());
    let context = r.require("CertAddEncodedCertificateToStore(h, ADD_ALWAYS, &context)", store.add_encoded(CERT))?;
    let context_dup = context.duplicate();
    same(r, "CertDuplicateCertificateContext(c)", "the same pointer", context.pointer_value(), context_dup.pointer_value());
    r.bool("CertFreeCertificateContext(duplicate)", context_dup.free(), Expect::True);
    r.bool("CertFreeCertificateContext(c)", context.free(), Expect::True);
    r.bool("CertCloseStore(duplicate, 0)", duplicate.close(CloseFlags::Default), Expect::True);
    r.bool("CertCloseStore(h, 0)", store.close(CloseFlags::Default), Expect::True);
    Ok(())
}

fn system_store(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let store = r.require("CertOpenStore(SYSTEM_W, CURRENT_USER, \"MY\")", Store::open_system_current_user("MY"))?;
    let duplicate = store.duplicate();
    same(r, "CertDuplicateStore(h)", "the same handle", store.handle_value(), duplicate.handle_value());
    r.bool("CertCloseStore(duplicate, 0)", duplicate.close(CloseFlags::Default), Expect::True);
    r.bool("CertCloseStore(h, 0)", store.close(CloseFlags::Default), Expect::True);
    Ok(())
}

/// A scratch file removed on drop (declare it before the File so it is dropped after it).
struct ScratchFile(PathBuf);

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn create_scratch(r: &mut Recorder, path: &Path) -> Result<(ScratchFile, File), Stop> {
    let cleanup = ScratchFile(path.to_owned());
    match OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path) {
        Ok(file) => Ok((cleanup, file)),
        Err(err) => {
            r.fact("CreateFileW(scratch store file)", "opened", err.to_string(), false);
            Err(Stop::Failed(format!("cannot create {}: {err}", path.display())))
        }
    }
}

fn file_store(ctx: &Ctx, pass: u32, r: &mut Recorder) -> Result<(), Stop> {
    let path = ctx.scratch.join(format!("file-store-{pass}.sst"));
    let (_cleanup, file) = create_scratch(r, &path)?;
    let store = r.require(
        "CertOpenStore(FILE, CERT_FILE_STORE_COMMIT_ENABLE_FLAG, hFile)",
        Store::open_file(&file, CERT_FILE_STORE_COMMIT_ENABLE_FLAG),
    )?;
    r.bool("CertAddEncodedCertificateToStore(h, ADD_ALWAYS, NULL)", store.add_encoded_without_context(CERT), Expect::True);
    r.bool("CertCloseStore(h, 0), committing", store.close(CloseFlags::Default), Expect::True);
    let (sized, size) = file_size(&file);
    r.bool("GetFileSizeEx(hFile) after the close (caller's handle still open)", sized, Expect::True);
    r.fact("size of the committed file", "> 0 bytes", format!("{size} bytes"), size > 0);
    drop(file);
    let reopened = r.require(
        "CertOpenStore(FILENAME_W, READONLY | OPEN_EXISTING, path)",
        Store::open_filename(&path, CERT_STORE_READONLY_FLAG | CERT_STORE_OPEN_EXISTING_FLAG),
    )?;
    let count = reopened.certificate_count();
    r.fact("certificates in the reopened store", "1", count.to_string(), count == 1);
    r.bool("CertCloseStore(reopened, 0)", reopened.close(CloseFlags::Default), Expect::True);
    Ok(())
}

fn check_held(r: &mut Recorder, store: Store) -> Result<(), Stop> {
    let held = r.require("CertAddEncodedCertificateToStore(h, ADD_ALWAYS, &context)", store.add_encoded(CERT))?;
    r.bool(
        "CertCloseStore(h, CHECK) with a context held",
        store.close(CloseFlags::Check),
        Expect::FalseWith(bits(CRYPT_E_PENDING_CLOSE)),
    );
    let len = held.encoded_len();
    r.fact(
        "held context readable after the close (cbCertEncoded)",
        &CERT.len().to_string(),
        len.to_string(),
        usize::try_from(len).is_ok_and(|l| l == CERT.len()),
    );
    r.bool("CertFreeCertificateContext(c)", held.free(), Expect::True);
    Ok(())
}

fn close_check_held(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let store = r.require("CertOpenStore(MEMORY)", Store::open_memory())?;
    check_held(r, store)
}

fn close_check_held_file(ctx: &Ctx, pass: u32, r: &mut Recorder) -> Result<(), Stop> {
    let path = ctx.scratch.join(format!("close-check-{pass}.sst"));
    let (_cleanup, file) = create_scratch(r, &path)?;
    let store = r.require("CertOpenStore(FILE, 0, hFile)", Store::open_file(&file, 0))?;
    check_held(r, store)
}

fn close_check_duplicate_open(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let store = r.require("CertOpenStore(MEMORY)", Store::open_memory())?;
    let duplicate = store.duplicate();
    r.bool("CertAddEncodedCertificateToStore(h, ADD_ALWAYS, NULL)", store.add_encoded_without_context(CERT), Expect::True);
    // Windows (store.c testCloseStore): the open duplicate makes CHECK report a pending close.
    r.bool(
        "CertCloseStore(h, CHECK) while a duplicate is open",
        store.close(CloseFlags::Check),
        Expect::FalseWith(bits(CRYPT_E_PENDING_CLOSE)),
    );
    r.bool("CertCloseStore(duplicate, 0)", duplicate.close(CloseFlags::Default), Expect::True);
    Ok(())
}

fn close_check_none(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let store = r.require("CertOpenStore(MEMORY)", Store::open_memory())?;
    let context = r.require("CertAddEncodedCertificateToStore(h, ADD_ALWAYS, &context)", store.add_encoded(CERT))?;
    r.bool("CertFreeCertificateContext(c)", context.free(), Expect::True);
    r.bool("CertCloseStore(h, CHECK) with no context held", store.close(CloseFlags::Check), Expect::True);
    Ok(())
}

fn close_force(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let store = r.require("CertOpenStore(MEMORY)", Store::open_memory())?;
    let context = r.require("CertAddEncodedCertificateToStore(h, ADD_ALWAYS, &context)", store.add_encoded(CERT))?;
    let duplicate = context.duplicate();
    r.bool("CertCloseStore(h, FORCE) with 2 context references held", store.close_forced(vec![context, duplicate]), Expect::True);
    Ok(())
}

const OPEN_KSP: &str = "NCryptOpenStorageProvider(MS_KEY_STORAGE_PROVIDER)";

fn open_ksp(r: &mut Recorder) -> Result<NcryptProvider, Stop> {
    r.require_provider(OPEN_KSP, NcryptProvider::open(KSP))
}

fn ncrypt_provider(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let provider = open_ksp(r)?;
    r.status("NCryptFreeObject(provider)", provider.free(), Expect::Status(0));
    r.status("NCryptFreeObject(0)", free_object_raw(0), Expect::Status(NTE_INVALID_HANDLE));
    Ok(())
}

fn ncrypt_key_lifecycle(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let provider = open_ksp(r)?;
    let key = r.require("NCryptCreatePersistedKey(RSA, no name)", provider.create_persisted_key("RSA", None, 0))?;
    r.status("NCryptFinalizeKey(key, 0)", key.finalize(), Expect::Status(0));
    r.status("NCryptFreeObject(key)", key.free(), Expect::Status(0));
    r.status("NCryptFreeObject(provider)", provider.free(), Expect::Status(0));
    Ok(())
}

fn ncrypt_key_persistence(ctx: &Ctx, pass: u32, r: &mut Recorder) -> Result<(), Stop> {
    let name = format!("ctxguard-crypto-{}-{pass}", ctx.pid);
    let provider = open_ksp(r)?;
    let key = r.require("NCryptCreatePersistedKey(RSA, name)", provider.create_persisted_key("RSA", Some(&name), 0))?;
    // No `?` from here on: the key is (documented to be) persisted and must be deleted below.
    r.status("NCryptFinalizeKey(key, 0)", key.finalize(), Expect::Status(0));
    let opened = provider.open_key(&name);
    if r.raw("NCryptOpenKey(name)", opened.raw, Expect::Status(0))
        && let Some(opened) = opened.value
    {
        r.status("NCryptFreeObject(opened key)", opened.free(), Expect::Status(0));
    }
    r.refuse(
        "NCryptCreatePersistedKey(RSA, same name) without OVERWRITE",
        provider.create_persisted_key("RSA", Some(&name), 0),
        Expect::Status(NTE_EXISTS),
    );
    let (deleted, still_ours) = key.delete();
    r.status("NCryptDeleteKey(key, 0)", deleted, Expect::Status(0));
    if let Some(key) = still_ours {
        // A failed delete leaves the handle with the caller: free it rather than leak it.
        r.status("NCryptFreeObject(key) after the failed delete", key.free(), Expect::Status(0));
    }
    r.refuse("NCryptOpenKey(name) after the delete", provider.open_key(&name), Expect::AnyError);
    Ok(())
}

fn ncrypt_notify_change_key(ctx: &Ctx, pass: u32, r: &mut Recorder) -> Result<(), Stop> {
    if ctx.wine {
        return Err(Stop::Skip(
            "Wine: NCryptNotifyChangeKey is an unimplemented stub that raises a non-continuable exception; not called".to_owned(),
        ));
    }
    let provider = open_ksp(r)?;
    let registration = r.require("NCryptNotifyChangeKey(REGISTER)", provider.register_change_notification())?;
    // Change the user's key store so the notification has something to report.
    let name = format!("ctxguard-crypto-notify-{}-{pass}", ctx.pid);
    if let Some(key) = provider.create_persisted_key("RSA", Some(&name), 0).value {
        let _ = key.finalize();
        let (_, still_ours) = key.delete();
        drop(still_ours);
    }
    let waited = registration.wait(2000);
    r.fact("WaitForSingleObject(h, 2000) after a key change", "WAIT_OBJECT_0", format!("{waited:#x}"), waited == WAIT_OBJECT_0);
    let (status, handle) = registration.unregister();
    r.status("NCryptNotifyChangeKey(UNREGISTER)", status, Expect::Status(0));
    r.fact(
        "handle variable after UNREGISTER",
        "INVALID_HANDLE_VALUE",
        format!("{:#x}", handle as usize),
        handle == INVALID_HANDLE_VALUE,
    );
    Ok(())
}

fn close_check_empty(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let store = r.require("CertOpenStore(MEMORY)", Store::open_memory())?;
    r.bool("CertCloseStore(h, CHECK) of a fresh empty store", store.close(CloseFlags::Check), Expect::True);
    Ok(())
}

fn close_check_duplicate_last(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let store = r.require("CertOpenStore(MEMORY)", Store::open_memory())?;
    let duplicate = store.duplicate();
    same(r, "CertDuplicateStore(h)", "the same handle", store.handle_value(), duplicate.handle_value());
    r.bool(
        "CertCloseStore(h, CHECK), the first of two references",
        store.close(CloseFlags::Check),
        Expect::FalseWith(bits(CRYPT_E_PENDING_CLOSE)),
    );
    r.bool("CertCloseStore(duplicate, CHECK), the last reference", duplicate.close(CloseFlags::Check), Expect::True);
    Ok(())
}

fn close_check_held_crl(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let store = r.require("CertOpenStore(MEMORY)", Store::open_memory())?;
    let crl = r.require("CertAddEncodedCRLToStore(h, ADD_ALWAYS, &context)", store.add_encoded_crl(CRL))?;
    r.bool(
        "CertCloseStore(h, CHECK) with a CRL context held",
        store.close(CloseFlags::Check),
        Expect::FalseWith(bits(CRYPT_E_PENDING_CLOSE)),
    );
    r.bool("CertFreeCRLContext(crl)", crl.free(), Expect::True);
    Ok(())
}

fn close_check_held_ctl(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let store = r.require("CertOpenStore(MEMORY)", Store::open_memory())?;
    let ctl = r.require("CertAddEncodedCTLToStore(h, ADD_ALWAYS, &context)", store.add_encoded_ctl(CTL))?;
    r.bool(
        "CertCloseStore(h, CHECK) with a CTL context held",
        store.close(CloseFlags::Check),
        Expect::FalseWith(bits(CRYPT_E_PENDING_CLOSE)),
    );
    r.bool("CertFreeCTLContext(ctl)", ctl.free(), Expect::True);
    Ok(())
}

fn close_implicit_store(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let context = r.require("CertCreateCertificateContext(X509, cert)", create_certificate_context(CERT))?;
    let named = context.has_store();
    r.fact("context->hCertStore", "non-NULL", if named { "non-NULL" } else { "NULL" }.to_owned(), named);
    if named {
        r.bool(
            "CertCloseStore(context->hCertStore, CHECK)",
            context.close_its_store(CloseFlags::Check),
            Expect::FalseWith(bits(E_UNEXPECTED)),
        );
        r.bool(
            "CertCloseStore(context->hCertStore, 0)",
            context.close_its_store(CloseFlags::Default),
            Expect::FalseWith(bits(E_UNEXPECTED)),
        );
    }
    r.bool("CertFreeCertificateContext(context)", context.free(), Expect::True);
    Ok(())
}

#[allow(clippy::unnecessary_wraps, reason = "every scenario body has the same signature")]
fn close_null(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    r.bool("CertCloseStore(NULL, 0)", close_null_store(), Expect::True);
    Ok(())
}

fn release_with_key_and_hash_alive(ctx: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let provider = verify_provider(r)?;
    let key = r.require("CryptGenKey(h, CALG_AES_128)", provider.gen_key(CALG_AES_128, 0))?.into_orphan();
    let hash = r.require("CryptCreateHash(h, CALG_SHA_256)", provider.create_hash(CALG_SHA_256))?.into_orphan();
    let (released, stale) = provider.release(0);
    r.bool("CryptReleaseContext(h, 0) with a key and a hash alive", released, Expect::True);
    if !ctx.stale {
        return Ok(());
    }
    let invalid = Expect::FalseWith(ERROR_INVALID_PARAMETER);
    // The provider was released above, so each call below passes released objects to the API.
    // SAFETY: the user opted in with --unsafe-stale-checks.
    r.bool("CryptHashData(hash) after the release", unsafe { hash.hash_data() }, invalid);
    // SAFETY: as above.
    r.bool("CryptDuplicateHash(hash) after the release", unsafe { hash.duplicate(false) }, invalid);
    // SAFETY: as above.
    r.bool("CryptDuplicateKey(key) after the release", unsafe { key.duplicate(true) }, invalid);
    // SAFETY: as above.
    r.bool("CryptDestroyHash(hash) after the release", unsafe { hash.destroy(false) }, invalid);
    // SAFETY: as above.
    r.bool("CryptDestroyKey(key) after the release", unsafe { key.destroy(true) }, invalid);
    // SAFETY: as above.
    r.bool("CryptGenRandom(h) after the release", unsafe { stale.gen_random() }, invalid);
    // SAFETY: as above.
    r.bool("CryptContextAddRef(h) after the release", unsafe { stale.add_ref() }, invalid);
    // SAFETY: as above.
    r.bool("CryptCreateHash(h) after the release", unsafe { stale.create_hash(CALG_SHA_256) }, invalid);
    Ok(())
}

/// What the handle variable holds before CRYPT_DELETEKEYSET, to see whether the API writes it.
const DELETE_SENTINEL: usize = 0x00C7_6A4D;

fn delete_keyset_handle(ctx: &Ctx, pass: u32, r: &mut Recorder) -> Result<(), Stop> {
    let name = format!("ctxguard-crypto-delete-{}-{pass}", ctx.pid);
    let created = r.require_provider(
        "CryptAcquireContextW(name, NULL, PROV_RSA_AES, CRYPT_NEWKEYSET)",
        Provider::acquire(Some(&name), PROV_RSA_AES, CRYPT_NEWKEYSET),
    )?;
    let mut cleanup = ContainerCleanup { name: &name, deleted: false };
    let (released, _) = created.release(0);
    r.bool("CryptReleaseContext(h, 0)", released, Expect::True);
    let (deleted, written) = Provider::delete_keyset_reporting_handle(&name, PROV_RSA_AES, DELETE_SENTINEL);
    cleanup.deleted = deleted.ok;
    r.bool("CryptAcquireContextW(name, …, CRYPT_DELETEKEYSET)", deleted, Expect::True);
    let shown = if written == DELETE_SENTINEL { "left as it was".to_owned() } else { format!("{written:#x}") };
    r.fact("handle variable after CRYPT_DELETEKEYSET", "0x0", shown, written == 0);
    Ok(())
}

fn ncrypt_finalize_twice(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let provider = open_ksp(r)?;
    let key = r.require("NCryptCreatePersistedKey(RSA, no name)", provider.create_persisted_key("RSA", None, 0))?;
    r.status("NCryptFinalizeKey(key, 0)", key.finalize(), Expect::Status(0));
    r.status("NCryptFinalizeKey(key, 0) again", key.finalize(), Expect::AnyError);
    r.status("NCryptFreeObject(key)", key.free(), Expect::Status(0));
    r.status("NCryptFreeObject(provider)", provider.free(), Expect::Status(0));
    Ok(())
}

#[allow(clippy::unnecessary_wraps, reason = "every scenario body has the same signature")]
fn ncrypt_free_non_handle(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    // All bits set: no NCrypt object kind (provider, key, …) reads as this.
    let not_an_object = [0xFFu8; 64];
    r.status(
        "NCryptFreeObject(&memory holding no object)",
        free_object_not_a_handle(&not_an_object),
        Expect::Status(NTE_INVALID_HANDLE),
    );
    r.fact(
        "that memory after the call",
        "unchanged",
        if not_an_object.iter().all(|&b| b == 0xFF) { "unchanged" } else { "written" }.to_owned(),
        not_an_object.iter().all(|&b| b == 0xFF),
    );
    Ok(())
}

fn collection_outlives_member(_: &Ctx, _: u32, r: &mut Recorder) -> Result<(), Stop> {
    let collection = r.require("CertOpenStore(COLLECTION)", Store::open_collection())?;
    let member = r.require("CertOpenStore(MEMORY)", Store::open_memory())?;
    r.bool("CertAddEncodedCertificateToStore(member, ADD_ALWAYS, NULL)", member.add_encoded_without_context(CERT), Expect::True);
    r.bool("CertAddStoreToCollection(collection, member, 0, 0)", collection.add_to_collection(&member), Expect::True);
    r.bool("CertCloseStore(member, 0)", member.close(CloseFlags::Default), Expect::True);
    let count = collection.certificate_count();
    r.fact("certificates in the collection after the member's close", "1", count.to_string(), count == 1);
    r.bool("CertCloseStore(collection, 0)", collection.close(CloseFlags::Default), Expect::True);
    Ok(())
}
