//! Builds the Rust fixture drivers the way every fltemu test needs them: one shared target
//! directory per fixture crate (only the crate itself is rebuilt per feature set), and a copy of
//! each image named after its features, made under one lock so another test's build cannot
//! overwrite the image before it is copied.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

/// Builds `package` (whose cdylib is `library`) for x86_64-pc-windows-msvc with `features` into
/// `$CARGO_TARGET_DIR/nested/<directory>` and returns the copy `<prefix>-<features>.sys`.
pub fn build(package: &str, library: &str, directory: &str, prefix: &str, features: &[&str]) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _serial = BUILD.lock().unwrap_or_else(PoisonError::into_inner);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let outer = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
    let target = outer.join("nested").join(directory);
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(&workspace)
        .args(["build", "--release", "--quiet", "-p", package, "--target", "x86_64-pc-windows-msvc", "--target-dir"])
        .arg(&target);
    if !features.is_empty() {
        command.arg("--features").arg(features.join(","));
    }
    assert!(command.status().expect("cargo starts").success(), "building {package} with {features:?} failed");
    let name = if features.is_empty() { "default".to_owned() } else { features.join("+") };
    let copy = target.join(format!("{prefix}-{name}.sys"));
    std::fs::copy(target.join(format!("x86_64-pc-windows-msvc/release/{library}.dll")), &copy).expect("copy the image");
    copy
}

/// The fixture driver (`fltemu/fixture-driver`) with one bug feature, or the correct one.
#[allow(dead_code)] // not every test binary that includes this module builds this fixture
pub fn fixture(feature: Option<&str>) -> PathBuf {
    build("fltemu-fixture-driver", "fltemu_fixture_driver", "fixture-variants", "fixture", feature.as_slice())
}
