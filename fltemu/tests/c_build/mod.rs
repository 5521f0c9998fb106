//! Builds fltemu's C fixture drivers (`fltemu/c-drivers/`) the way MSVC builds a minifilter:
//! clang in cl mode (`clang-cl`, a symlink to Debian's clang) with `/GS` and SEH, linked by
//! `lld-link /DRIVER /SUBSYSTEM:NATIVE /ENTRY:DriverEntry` against import libraries that
//! `llvm-dlltool` makes from `c-drivers/lib/*.def`, plus our own /GS runtime
//! (`c-drivers/runtime/gs_support.c`). Outputs go to `$CARGO_TARGET_DIR/c-drivers/<name>/`.
//! A missing tool is a test failure with the package to install, never a skip.
#![allow(dead_code)] // each test binary uses part of this module

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How the driver is optimised, as a WDK Release or Debug configuration would build it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `/O2` (Release).
    Release,
    /// `/Od` (Debug: no optimisation, no inlining).
    Debug,
}

impl Profile {
    fn flag(self) -> &'static str {
        match self {
            Profile::Release => "/O2",
            Profile::Debug => "/Od",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

/// One C driver build: `c-drivers/drivers/<name>.c` plus preprocessor defines (bug variants).
#[derive(Clone, Debug)]
pub struct CDriver {
    name: String,
    defines: Vec<String>,
    profile: Profile,
}

/// `fltemu/c-drivers`.
#[must_use]
pub fn c_drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("c-drivers")
}

/// The workspace's target directory (honours CARGO_TARGET_DIR).
fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fltemu lies inside the workspace").to_path_buf();
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from)
}

/// The first of `names` found on PATH, as a full path.
fn find_tool(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| names.iter().map(|name| dir.join(name)).find(|candidate| candidate.is_file()))
}

fn versioned(base: &str) -> Vec<String> {
    std::iter::once(base.to_owned()).chain((14..=20).rev().map(|v| format!("{base}-{v}"))).collect()
}

fn require(base: &str, package: &str) -> PathBuf {
    let names = versioned(base);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    find_tool(&refs).unwrap_or_else(|| {
        panic!("fltemu's C fixture drivers need `{base}` (Debian package `{package}`), not found on PATH; ./make.sh installs clang, lld and llvm")
    })
}

/// The tools, located once per call (cheap).
struct Tools {
    clang: PathBuf,
    lld_link: PathBuf,
    dlltool: PathBuf,
}

fn tools() -> Tools {
    Tools { clang: require("clang", "clang"), lld_link: require("lld-link", "lld"), dlltool: require("llvm-dlltool", "llvm") }
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `fltemu run <image> <args…>` through the CLI a C developer uses (the debug build under
/// `cargo test`): its exit status and its standard output followed by its standard error.
pub fn fltemu_run(image: &Path, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fltemu")).arg("run").arg(image).args(args).output().expect("fltemu runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

/// Builds `driver` and runs it with no scenario (the default one), as a new user would.
pub fn bare_run(driver: &CDriver) -> (i32, String) {
    fltemu_run(&driver.build(), &[])
}

static SCRATCH: AtomicUsize = AtomicUsize::new(0);

impl CDriver {
    /// `c-drivers/drivers/<name>.c`, Release, no defines.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self { name: name.to_owned(), defines: Vec::new(), profile: Profile::Release }
    }

    /// Adds `/D<define>` (e.g. a `BUG_…` variant switch).
    #[must_use]
    pub fn define(mut self, define: &str) -> Self {
        self.defines.push(define.to_owned());
        self
    }

    /// Sets the optimisation profile.
    #[must_use]
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// The output's file stem: name, defines, profile.
    #[must_use]
    pub fn stem(&self) -> String {
        let mut stem = self.name.clone();
        for define in &self.defines {
            stem.push('-');
            stem.push_str(&define.to_ascii_lowercase().replace(['=', '"'], "_"));
        }
        stem.push('-');
        stem.push_str(self.profile.suffix());
        stem
    }

    /// Compiles and links the driver; returns the `.sys` path (checksummed, as link.exe
    /// /RELEASE does, because fltemu checks it like the kernel loader).
    ///
    /// # Panics
    /// When a tool is missing or a step fails (the message names the tool and its output).
    #[must_use]
    pub fn build(&self) -> PathBuf {
        let tools = tools();
        let root = c_drivers_dir();
        let out_dir = target_dir().join("c-drivers");
        // Parallel tests may build the same driver: each build works in its own scratch
        // directory and renames the finished image into place.
        let scratch =
            out_dir.join(format!("tmp-{}-{}-{}", self.stem(), std::process::id(), SCRATCH.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&scratch).expect("create the C build directory");
        // clang behaves as clang-cl (cl.exe's options and defaults) when invoked by that name.
        let clang_cl = scratch.join("clang-cl");
        let real_clang = std::fs::canonicalize(&tools.clang).expect("resolve clang");
        std::os::unix::fs::symlink(&real_clang, &clang_cl).expect("symlink clang-cl");

        for lib in ["ntoskrnl", "fltmgr"] {
            run(Command::new(&tools.dlltool)
                .args(["-m", "i386:x86-64", "-d"])
                .arg(root.join("lib").join(format!("{lib}.def")))
                .arg("-l")
                .arg(scratch.join(format!("{lib}.lib"))));
        }
        let compile = |source: &Path, object: &Path, gs: bool, defines: &[String]| {
            let mut command = Command::new(&clang_cl);
            command
                .args(["--target=x86_64-pc-windows-msvc", "/nologo", "/c", self.profile.flag(), "/X", "/Zl", "/W4", "/WX"])
                .arg(if gs { "/GS" } else { "/GS-" })
                .arg("-I")
                .arg(root.join("include"));
            for define in defines {
                command.arg(format!("/D{define}"));
            }
            command.arg(format!("/Fo{}", object.display())).arg("--").arg(source);
            run(&mut command);
        };
        let driver_obj = scratch.join(format!("{}.obj", self.name));
        compile(&root.join("drivers").join(format!("{}.c", self.name)), &driver_obj, true, &self.defines);
        let runtime_obj = scratch.join("gs_support.obj");
        compile(&root.join("runtime").join("gs_support.c"), &runtime_obj, false, &self.defines);

        let image = scratch.join(format!("{}.sys", self.stem()));
        run(Command::new(&tools.lld_link)
            .args(["/NOLOGO", "/DRIVER", "/SUBSYSTEM:NATIVE", "/ENTRY:DriverEntry", "/NODEFAULTLIB", "/MACHINE:X64"])
            .arg(format!("/OUT:{}", image.display()))
            .arg(&driver_obj)
            .arg(&runtime_obj)
            .arg(scratch.join("ntoskrnl.lib"))
            .arg(scratch.join("fltmgr.lib")));
        let mut bytes = std::fs::read(&image).expect("read the linked image");
        fltemu::fix_checksum(&mut bytes);
        std::fs::write(&image, &bytes).expect("write the checksummed image");

        let final_path = out_dir.join(format!("{}.sys", self.stem()));
        std::fs::rename(&image, &final_path).expect("move the image into place");
        let _ = std::fs::remove_dir_all(&scratch);
        final_path
    }
}
