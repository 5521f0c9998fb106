//! Proves the crypto guards' borrows: releasing a provider while a key, hash or NCrypt key made
//! from it is alive must not compile (E0505), and the documented order must compile.
//!
//! The guards are Windows-only, so a scratch crate includes src/crypto/win/guards.rs and is
//! checked (not linked) for x86_64-pc-windows-gnu, the target the Wine lane builds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Bodies that use the guards; each is checked on its own.
const DOCUMENTED_ORDER: &str = r#"
pub fn documented_order() {
    let Some(provider) = guards::Provider::acquire(None, 24, 0xF000_0000).value else { return };
    let Some(key) = provider.gen_key(0x660E, 0).value else { return };
    let Some(hash) = provider.create_hash(0x800C).value else { return };
    let _ = hash.destroy();
    let _ = key.destroy();
    let _ = provider.release(0);
    let Some(ksp) = guards::NcryptProvider::open("Microsoft Software Key Storage Provider").value else { return };
    let Some(nkey) = ksp.create_persisted_key("RSA", None, 0).value else { return };
    let _ = nkey.free();
    let _ = ksp.free();
}
"#;

const RELEASE_BEFORE_KEY: &str = r"
pub fn release_before_key() {
    let Some(provider) = guards::Provider::acquire(None, 24, 0xF000_0000).value else { return };
    let Some(key) = provider.gen_key(0x660E, 0).value else { return };
    let _ = provider.release(0);
    let _ = key.destroy();
}
";

const RELEASE_BEFORE_HASH: &str = r#"
pub fn release_before_hash() {
    let Some(provider) = guards::Provider::acquire(None, 24, 0xF000_0000).value else { return };
    let Some(hash) = provider.create_hash(0x800C).value else { return };
    drop(provider);
    let _ = hash.hash_data(b"x");
}
"#;

const FREE_PROVIDER_BEFORE_NCRYPT_KEY: &str = r#"
pub fn free_provider_before_key() {
    let Some(ksp) = guards::NcryptProvider::open("Microsoft Software Key Storage Provider").value else { return };
    let Some(nkey) = ksp.create_persisted_key("RSA", None, 0).value else { return };
    let _ = ksp.free();
    let _ = nkey.finalize();
}
"#;

fn scratch_crate(dir: &Path) {
    let manifest = r#"[package]
name = "guard-lifetimes"
version = "0.0.0"
edition = "2024"
publish = false

[lib]
path = "lib.rs"

[dependencies]
windows-sys = { version = "0.61.2", features = ["Win32_Foundation", "Win32_Security", "Win32_Security_Cryptography", "Win32_Storage_FileSystem", "Win32_System_Threading"] }

[workspace]
"#;
    fs::create_dir_all(dir).expect("create the scratch crate");
    fs::write(dir.join("Cargo.toml"), manifest).expect("write Cargo.toml");
    // The workspace's lock pins the same windows-sys, so no registry lookup is needed.
    let lock = Path::new(MANIFEST_DIR).parent().expect("workspace").join("Cargo.lock");
    if lock.is_file() {
        fs::copy(&lock, dir.join("Cargo.lock")).expect("copy Cargo.lock");
    }
}

/// `cargo check`s the scratch crate with `body`; returns (success, stderr).
fn check(dir: &Path, target_dir: &Path, body: &str) -> (bool, String) {
    let guards = Path::new(MANIFEST_DIR).join("src/crypto/win/guards.rs");
    let lib = format!(
        "#![allow(dead_code, unused)]\n#[path = {:?}]\nmod guards;\n{body}",
        guards.to_str().expect("UTF-8 path")
    );
    fs::write(dir.join("lib.rs"), lib).expect("write lib.rs");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(dir)
        .args(["check", "--quiet", "--target", "x86_64-pc-windows-gnu", "--target-dir"])
        .arg(target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run cargo check");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn releasing_a_provider_before_what_borrows_it_does_not_compile() {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(MANIFEST_DIR).parent().expect("workspace").join("target"), PathBuf::from)
        .join("guard-lifetimes");
    let dir = std::env::temp_dir().join(format!("ctxguard-guard-lifetimes-{}", std::process::id()));
    scratch_crate(&dir);

    let (ok, stderr) = check(&dir, &target_dir, DOCUMENTED_ORDER);
    assert!(ok, "the documented release order must compile (is the x86_64-pc-windows-gnu target installed?):\n{stderr}");

    for (name, body) in [
        ("CryptReleaseContext before CryptDestroyKey", RELEASE_BEFORE_KEY),
        ("CryptReleaseContext before CryptDestroyHash", RELEASE_BEFORE_HASH),
        ("NCryptFreeObject(provider) before its key", FREE_PROVIDER_BEFORE_NCRYPT_KEY),
    ] {
        let (ok, stderr) = check(&dir, &target_dir, body);
        assert!(!ok, "{name} compiled, but the guards must forbid it");
        assert!(stderr.contains("E0505"), "{name} failed for another reason than the borrow:\n{stderr}");
    }
    let _ = fs::remove_dir_all(&dir);
}
