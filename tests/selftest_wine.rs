//! `ctxguard selftest` cross-built for x86_64-pc-windows-gnu and run under Wine: Wine has
//! Filter Manager's user library but no filter manager (FilterConnectCommunicationPort returns
//! E_NOTIMPL, FilterFindFirst lists no filter), so the selftest must say so cleanly — a JSON
//! report with outcome `cannot-run`, exit code 2, no panic.
//!
//! Needs what companion/tests/wine_lane.rs needs (wine64 with wineserver, gcc-mingw-w64-x86-64,
//! the rustup target x86_64-pc-windows-gnu); make.sh installs them. The approach (nested build,
//! ProcessPrng shim beside the exe, a throw-away prefix) is that lane's.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TARGET: &str = "x86_64-pc-windows-gnu";
const MISSING: &str =
    "needs wine64 (with wineserver), gcc-mingw-w64-x86-64 and the rustup target x86_64-pc-windows-gnu; make.sh installs them";

fn find_tool(names: &[&str], fallbacks: &[&str]) -> PathBuf {
    let in_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |name| dir.join(name))).find(|path| path.is_file())
    });
    in_path
        .or_else(|| fallbacks.iter().map(PathBuf::from).find(|path| path.is_file()))
        .unwrap_or_else(|| panic!("{} not found: {MISSING}", names[0]))
}

/// Runs `command` with its output captured, killing it after `limit`.
fn run_with_limit(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output { status, stdout: out.join().expect("stdout reader"), stderr: err.join().expect("stderr reader") }
}

/// A throw-away directory with a Wine prefix; its wineserver is ended and the directory removed.
struct Lane {
    dir: PathBuf,
    wineserver: PathBuf,
}

impl Drop for Lane {
    fn drop(&mut self) {
        let _ = Command::new(&self.wineserver)
            .arg("-k")
            .env("WINEPREFIX", self.dir.join("prefix"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The companion for Windows, built by a nested cargo in the Wine lane's target directory.
fn build_companion() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from).join("wine-lane");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = run_with_limit(
        Command::new(cargo)
            .current_dir(workspace)
            .args(["build", "-p", "ctxguard-companion", "--target", TARGET, "--target-dir"])
            .arg(&target_dir)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET"),
        Duration::from_secs(900),
    );
    assert!(out.status.success(), "cross-compiling the companion failed ({MISSING}):\n{}", String::from_utf8_lossy(&out.stderr));
    target_dir.join(TARGET).join("debug").join("ctxguard.exe")
}

#[test]
fn under_wine_the_selftest_reports_the_driver_unreachable_and_exits_2() {
    let wine = find_tool(&["wine64", "wine"], &["/usr/lib/wine/wine64"]);
    let wineserver = find_tool(&["wineserver"], &["/usr/lib/wine/wineserver64", "/usr/lib/wine/wineserver"]);
    let gcc = find_tool(&["x86_64-w64-mingw32-gcc"], &[]);
    let built = build_companion();

    let lane = Lane { dir: std::env::temp_dir().join(format!("ctxguard-selftest-wine-{}", std::process::id())), wineserver };
    let _ = fs::remove_dir_all(&lane.dir);
    fs::create_dir_all(&lane.dir).unwrap();
    let exe = lane.dir.join("ctxguard.exe");
    fs::copy(&built, &exe).unwrap();
    // Rust's std imports bcryptprimitives!ProcessPrng, which Wine 8.0 lacks: the lane's shim.
    let shim = Path::new(env!("CARGO_MANIFEST_DIR")).join("companion/wine-shim/processprng.c");
    let out = run_with_limit(
        Command::new(&gcc).args(["-shared", "-O2", "-o"]).arg(lane.dir.join("bcryptprimitives.dll")).arg(&shim).arg("-ladvapi32"),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "building the ProcessPrng shim failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let report_path = lane.dir.join("report.json");
    let out = run_with_limit(
        Command::new(&wine)
            .arg(&exe)
            .args(["selftest", "--json", "--settle-ms", "0", "--report", "report.json"])
            .current_dir(&lane.dir)
            .env("WINEPREFIX", lane.dir.join("prefix"))
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=;winedbg.exe=d")
            .env("WINESERVER", &lane.wineserver),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("ctxguard selftest: the driver's port is not reachable here"), "{stderr}");

    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("no JSON report ({error}):\n{stdout}"));
    let written: serde_json::Value = serde_json::from_str(&fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report, written, "--report writes what --json prints");
    assert_eq!(report["schema"], "ctxguard.selftest/1");
    assert_eq!((report["outcome"].as_str(), report["exit_code"].as_u64()), (Some("cannot-run"), Some(2)));
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 10);
    assert_eq!((checks[0]["name"].as_str(), checks[0]["status"].as_str()), (Some("driver.loaded"), Some("FAIL")));
    assert!(checks[0]["detail"].as_str().unwrap().contains("fltmc load ctxguard"), "{}", checks[0]);
    assert_eq!((checks[1]["name"].as_str(), checks[1]["status"].as_str()), (Some("port.hello"), Some("FAIL")));
    let detail = checks[1]["detail"].as_str().unwrap();
    assert!(detail.contains("not reachable") && detail.contains("E_NOTIMPL"), "{detail}");
    assert!(checks[2..].iter().all(|check| check["status"] == "SKIP"), "{checks:?}");
    assert_eq!(report["summary"], serde_json::json!({"passed": 0, "failed": 2, "skipped": 8}));
}
