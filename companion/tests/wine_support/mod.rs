//! What every Wine test needs: finding wine64, wineserver and the MinGW gcc, running a child
//! under a time limit, cross-building the companion for x86_64-pc-windows-gnu, and a throw-away
//! lane directory (Wine prefix, the exe, the ProcessPrng shim beside it) whose wineserver is
//! ended when it is dropped.
//!
//! Used by companion/tests/wine_lane.rs (`mod wine_support;`) and by tests/selftest_wine.rs
//! (through `#[path]`), so the paths below are taken from the workspace, not from the crate
//! that includes this file.
//!
//! Needs (installed by the project's make.sh on CI): wine64 (binary /usr/lib/wine/wine64 or
//! `wine64` in PATH, with wineserver), gcc-mingw-w64-x86-64 (x86_64-w64-mingw32-gcc, the linker
//! configured in .cargo/config.toml and the compiler of the ProcessPrng shim), and the rustup
//! target x86_64-pc-windows-gnu.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TARGET: &str = "x86_64-pc-windows-gnu";
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";

pub const MISSING: &str = "the Wine lane needs wine64 (with wineserver) and gcc-mingw-w64-x86-64 \
     (Debian: apt-get install --no-install-recommends wine64 gcc-mingw-w64-x86-64) and the rustup target \
     x86_64-pc-windows-gnu; make.sh installs them";

/// The workspace root: this file is compiled into the companion's tests (manifest dir
/// companion/) and into the root package's tests (manifest dir = the workspace).
fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("companion/wine-shim/processprng.c").is_file())
        .expect("the test runs inside the ctxguard workspace")
}

/// The first of `names` found in PATH, else the first of `fallbacks` that exists.
pub fn find_tool(names: &[&str], fallbacks: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names
        .iter()
        .find_map(|name| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()))
        .or_else(|| fallbacks.iter().map(PathBuf::from).find(|p| p.is_file()))
}

/// [`find_tool`], panicking with what to install when the tool is missing.
pub fn require_tool(names: &[&str], fallbacks: &[&str]) -> PathBuf {
    find_tool(names, fallbacks).unwrap_or_else(|| panic!("{} not found: {MISSING}", names[0]))
}

/// The host tools a lane runs: Wine, its server, and the MinGW gcc that builds the shim.
pub struct WineTools {
    pub wine: PathBuf,
    pub wineserver: PathBuf,
    pub gcc: PathBuf,
}

impl WineTools {
    /// Finds all three, panicking with [`MISSING`] on the first one absent.
    pub fn require() -> Self {
        Self {
            wine: require_tool(&["wine64", "wine"], &["/usr/lib/wine/wine64"]),
            wineserver: require_tool(&["wineserver"], &["/usr/lib/wine/wineserver64", "/usr/lib/wine/wineserver"]),
            gcc: require_tool(&[MINGW_GCC], &[]),
        }
    }
}

/// Runs `command` with its output captured, killing it after `limit`.
pub fn run_with_limit(command: &mut Command, limit: Duration) -> Output {
    let mut child =
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output { status, stdout: out_thread.join().expect("stdout reader"), stderr: err_thread.join().expect("stderr reader") }
}

/// Cross-compiles the companion with a nested cargo into `$CARGO_TARGET_DIR/wine-lane`, a target
/// directory every Wine test shares so the cross build is done once.
fn build_companion() -> PathBuf {
    let workspace = workspace();
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from).join("wine-lane");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = run_with_limit(
        Command::new(cargo)
            .current_dir(workspace)
            .args(["build", "-p", "ctxguard-companion", "--target", TARGET, "--target-dir"])
            .arg(&target_dir)
            // The outer test's flags target the host; the nested build picks its own.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET"),
        Duration::from_secs(900),
    );
    assert!(
        out.status.success(),
        "cross-compiling the companion for {TARGET} failed ({MISSING}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join(TARGET).join("debug").join("ctxguard.exe")
}

/// Rust's std imports bcryptprimitives!ProcessPrng, which Wine 8.0 lacks: a DLL of that name
/// beside the exe provides it.
fn build_shim(gcc: &Path, out_dir: &Path) {
    let source = workspace().join("companion/wine-shim/processprng.c");
    let out = run_with_limit(
        Command::new(gcc).args(["-shared", "-O2", "-o"]).arg(out_dir.join("bcryptprimitives.dll")).arg(&source).arg("-ladvapi32"),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "building the ProcessPrng shim failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A temp directory holding the cross-built companion, its ProcessPrng shim and a (~700 MB)
/// Wine prefix; dropping it ends the prefix's wineserver, then removes the directory.
pub struct Lane {
    pub dir: PathBuf,
    pub exe: PathBuf,
    prefix: PathBuf,
    wine: PathBuf,
    wineserver: PathBuf,
}

impl Lane {
    /// Builds the companion and sets up `<temp>/ctxguard-<name>-<pid>` afresh around it.
    pub fn with_companion(name: &str, tools: WineTools) -> Self {
        let built = build_companion();
        let dir = std::env::temp_dir().join(format!("ctxguard-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let WineTools { wine, wineserver, gcc } = tools;
        let lane = Self { exe: dir.join("ctxguard.exe"), prefix: dir.join("prefix"), dir, wine, wineserver };
        fs::copy(&built, &lane.exe).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
        build_shim(&gcc, &lane.dir);
        lane
    }

    /// `wine ctxguard.exe <args>` in the lane directory and its prefix.
    pub fn companion(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.wine);
        command
            .arg(&self.exe)
            .args(args)
            .current_dir(&self.dir)
            .env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            // No Mono/Gecko installers on a fresh prefix, and no winedbg crash dumps on stdout.
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=;winedbg.exe=d")
            .env("WINESERVER", &self.wineserver);
        command
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let _ = Command::new(&self.wineserver)
            .arg("-k")
            .env("WINEPREFIX", &self.prefix)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
