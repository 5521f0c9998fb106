//! `ctxguard selftest` cross-built for x86_64-pc-windows-gnu and run under Wine: Wine has
//! Filter Manager's user library but no filter manager (FilterConnectCommunicationPort returns
//! E_NOTIMPL, FilterFindFirst lists no filter), so the selftest must say so cleanly — a JSON
//! report with outcome `cannot-run`, exit code 2, no panic.
//!
//! Needs what companion/tests/wine_support/mod.rs lists (wine64 with wineserver,
//! gcc-mingw-w64-x86-64, the rustup target x86_64-pc-windows-gnu); make.sh installs them. The
//! nested build, the ProcessPrng shim beside the exe and the throw-away prefix are that module's,
//! shared with companion/tests/wine_lane.rs.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

#[path = "../companion/tests/wine_support/mod.rs"]
mod wine_support;

use std::fs;
use std::time::Duration;

use wine_support::{Lane, WineTools, run_with_limit};

#[test]
fn under_wine_the_selftest_reports_the_driver_unreachable_and_exits_2() {
    let lane = Lane::with_companion("selftest-wine", WineTools::require());

    let report_path = lane.dir.join("report.json");
    let out = run_with_limit(
        &mut lane.companion(&["selftest", "--json", "--settle-ms", "0", "--report", "report.json"]),
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
