//! Shared by the integration tests: build the driver image they inspect or run.
//!
//! Tests build what they inspect: each call runs cargo for the driver (a no-op when nothing
//! changed) into its own target directory, so the outer `cargo test` never waits on itself.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A Windows architecture ctxguard ships for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// x86_64-pc-windows-msvc (`x64` in the package).
    X64,
    /// aarch64-pc-windows-msvc (`arm64` in the package).
    Arm64,
}

impl Arch {
    /// The Rust target triple.
    #[must_use]
    pub fn triple(self) -> &'static str {
        match self {
            Arch::X64 => "x86_64-pc-windows-msvc",
            Arch::Arm64 => "aarch64-pc-windows-msvc",
        }
    }
}

/// The workspace root.
#[must_use]
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the tests' own driver builds go, beside the outer build's target directory.
#[must_use]
pub fn nested_target_dir() -> PathBuf {
    let outer = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from);
    outer.join("nested")
}

/// Builds `package` (a cdylib driver crate) in release for `arch` with `features`, returning the
/// linked image (`<name>.dll`, which packaging renames to `.sys`).
pub fn build_kernel_image(package: &str, arch: Arch, features: &[&str], artifact: &str) -> PathBuf {
    let target_dir = nested_target_dir().join(if features.is_empty() { "default".to_owned() } else { features.join("+") });
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(workspace_root())
        .args(["build", "--release", "--quiet", "-p", package, "--target", arch.triple()])
        .arg("--target-dir")
        .arg(&target_dir);
    if !features.is_empty() {
        command.arg("--features").arg(features.join(","));
    }
    let status = command.status().expect("cargo could not be started");
    assert!(status.success(), "building {package} for {} failed", arch.triple());
    let image = target_dir.join(arch.triple()).join("release").join(format!("{artifact}.dll"));
    assert!(image.is_file(), "{} was not produced", image.display());
    image
}

/// ctxguard.sys for `arch`, built once per test process.
pub fn driver_image(arch: Arch) -> &'static Path {
    static X64: OnceLock<PathBuf> = OnceLock::new();
    static ARM64: OnceLock<PathBuf> = OnceLock::new();
    let cell = match arch {
        Arch::X64 => &X64,
        Arch::Arm64 => &ARM64,
    };
    cell.get_or_init(|| build_kernel_image("ctxguard", arch, &[], "ctxguard"))
}
