//! `ctxguard selftest`'s core against the real ctxguard.sys in fltemu: the companion's port
//! client over fltemu's user side, files opened through the emulator, the crypto runner with the
//! real `PortWitness` — every check passes on a healthy driver, and the checks that should fail
//! do (a handle left open, a crypto scenario leaving a file open, a detached volume, an unloaded
//! driver).
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod port_support;
mod support;

// The companion's crypto runner, report and witness, compiled from their sources (they live in
// the `ctxguard` binary, not in the companion library); mounted at the root because their
// `super::` paths name each other, and re-exported as `crate::crypto` for the witness.
#[allow(dead_code, clippy::pedantic)]
#[path = "../companion/src/crypto/report.rs"]
mod report;
#[allow(dead_code, clippy::pedantic)]
#[path = "../companion/src/crypto/runner.rs"]
mod runner;
#[allow(dead_code, clippy::pedantic)]
#[path = "../companion/src/crypto/witness.rs"]
mod witness;
mod crypto {
    pub(crate) use crate::{report, runner, witness};
}
#[path = "../companion/src/port/witness.rs"]
mod port_witness;
#[path = "../companion/src/selftest/crypto_bridge.rs"]
mod selftest_crypto;

use std::cell::RefCell;
use std::time::Duration;

use ctxguard_companion::port::Connector;
use ctxguard_companion::selftest::cli::{SelftestArgs, emit};
use ctxguard_companion::selftest::{
    CheckStatus, CryptoSuite, CryptoSummary, DriverPresence, DriverProbe, Environment, FileSystem, InstanceInfo, Report,
    Settings, checks, run,
};
use fltemu::{ContextType, Emulator, FileHandle, OpenOptions, VolumeId};
use port_support::{COMPANION_PID, VOLUME, assert_clean, connector, load, unload_clean};

use crate::crypto::report::{Outcome, Step, Verdict};
use crate::crypto::runner::{HandleCounter, Scenario, Watch, run_scenarios};
use crate::port_witness::PortWitness;

/// The selftest's scratch directory on the emulated volume.
const SCRATCH: &str = "\\selftest";
/// Where the emulated crypto scenarios keep their files.
const CRYPTO_DIR: &str = "\\crypto";

fn opener() -> OpenOptions {
    OpenOptions { pid: COMPANION_PID, desired_access: 0x0012_019F, share_access: 3, ..OpenOptions::default() }
}

/// Files opened through the emulator as the companion's process; optionally "forgets" to close
/// the first file it is asked to close.
struct EmulatedFiles<'e> {
    emulator: &'e Emulator,
    volume: VolumeId,
    leak_one: bool,
    leaked: Vec<FileHandle>,
}

impl<'e> EmulatedFiles<'e> {
    fn new(emulator: &'e Emulator, volume: VolumeId, leak_one: bool) -> Self {
        Self { emulator, volume, leak_one, leaked: Vec::new() }
    }

    /// Closes what the leaky adapter held back, so that the driver can unload cleanly.
    fn close_leaked(&mut self) {
        for file in self.leaked.drain(..) {
            self.emulator.cleanup(&file).unwrap();
            self.emulator.close(file).unwrap();
        }
    }
}

impl FileSystem for EmulatedFiles<'_> {
    type File = FileHandle;

    fn pid(&self) -> u32 {
        COMPANION_PID
    }

    fn prepare(&mut self) -> Result<String, String> {
        Ok(format!("{VOLUME}{SCRATCH}"))
    }

    fn create(&mut self, leaf: &str) -> Result<(FileHandle, String), String> {
        let path = format!("{SCRATCH}\\{leaf}");
        let file = self.emulator.open(self.volume, &path, &opener()).map_err(|error| error.to_string())?;
        Ok((file, format!("{VOLUME}{path}")))
    }

    fn close(&mut self, file: FileHandle) -> Result<(), String> {
        if self.leak_one && self.leaked.is_empty() {
            self.leaked.push(file);
            return Ok(());
        }
        self.emulator.cleanup(&file).map_err(|error| error.to_string())?;
        self.emulator.close(file).map_err(|error| error.to_string())
    }

    fn remove_all(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Filter Manager's view, from the emulator: loaded unless told otherwise, an instance on the
/// volume while it is attached.
fn probe(emulator: &Emulator, volume: VolumeId, loaded: bool) -> impl DriverProbe + '_ {
    move || -> Result<DriverPresence, String> {
        let instances = if loaded && emulator.is_attached(volume) {
            vec![InstanceInfo { volume: VOLUME.to_owned(), altitude: "370020".to_owned(), name: "ctxguard Instance".to_owned() }]
        } else {
            Vec::new()
        };
        Ok(DriverPresence { loaded, instances, source: "fltemu".to_owned() })
    }
}

/// A crypto scenario stand-in that opens a key file through the emulator on each pass and
/// closes it unless `leaves_open`.
struct KeyFileScenario<'e> {
    name: &'static str,
    emulator: &'e Emulator,
    volume: VolumeId,
    leaves_open: bool,
    held: RefCell<Vec<FileHandle>>,
}

impl Scenario for KeyFileScenario<'_> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn documented(&self) -> &'static str {
        "releasing the key closes its key file"
    }

    fn run(&self, pass: u32) -> Outcome {
        let path = format!("{CRYPTO_DIR}\\{}-{pass}.key", self.name);
        let file = self.emulator.open(self.volume, &path, &opener()).expect("open the key file");
        if self.leaves_open {
            self.held.borrow_mut().push(file);
        } else {
            self.emulator.cleanup(&file).unwrap();
            self.emulator.close(file).unwrap();
        }
        let step = Step {
            call: "release(key)".into(),
            expected: "TRUE".into(),
            returned: "TRUE".into(),
            last_error: None,
            matches: true,
        };
        Outcome { verdict: Verdict::Pass, skip_reason: None, stopped: None, steps: vec![step] }
    }
}

/// Counts the files the scenarios hold as the process's kernel handles.
struct HeldFiles<'a, 'e>(&'a [KeyFileScenario<'e>]);

impl HandleCounter for HeldFiles<'_, '_> {
    fn kernel_handles(&self) -> Result<u64, String> {
        Ok(self.0.iter().map(|scenario| scenario.held.borrow().len() as u64).sum())
    }

    fn process_handle_count(&self) -> Option<u32> {
        None
    }
}

/// The crypto runner over the scenarios above, with the real `PortWitness` as witness.
struct EmulatedCrypto<'e> {
    scenarios: Vec<KeyFileScenario<'e>>,
}

impl<'e> EmulatedCrypto<'e> {
    fn new(emulator: &'e Emulator, volume: VolumeId, leaky: bool) -> Self {
        let scenario =
            |name, leaves_open| KeyFileScenario { name, emulator, volume, leaves_open, held: RefCell::new(Vec::new()) };
        let mut scenarios = vec![scenario("key-a", false), scenario("key-b", false)];
        if leaky {
            scenarios.push(scenario("key-leaky", true));
        }
        Self { scenarios }
    }

    fn close_held(&self) {
        for scenario in &self.scenarios {
            for file in scenario.held.borrow_mut().drain(..) {
                scenario.emulator.cleanup(&file).unwrap();
                scenario.emulator.close(file).unwrap();
            }
        }
    }
}

impl CryptoSuite for EmulatedCrypto<'_> {
    fn run(&self, connector: &dyn Connector) -> Result<CryptoSummary, String> {
        let witness = PortWitness::connect_or_absent(connector);
        let scenarios: Vec<&dyn Scenario> = self.scenarios.iter().map(|scenario| scenario as &dyn Scenario).collect();
        let under = format!("{VOLUME}{CRYPTO_DIR}");
        let watch = Watch { pid: COMPANION_PID, under: &[under.as_str()] };
        let (correlation, reports) = run_scenarios(&scenarios, &HeldFiles(&self.scenarios), witness.as_ref(), &watch);
        Ok(selftest_crypto::summary(&correlation, &reports, None))
    }
}

fn settings(settle: Duration) -> Settings {
    Settings { files: 8, settle, exact_counts: true }
}

fn status_of(report: &Report, name: &str) -> CheckStatus {
    report.checks.iter().find(|check| check.name == name).unwrap_or_else(|| panic!("no check {name}: {report:#?}")).status
}

fn detail_of<'r>(report: &'r Report, name: &str) -> &'r str {
    &report.checks.iter().find(|check| check.name == name).unwrap().detail
}

#[test]
fn every_check_passes_against_ctxguard_in_fltemu_and_the_json_report_has_the_schema() {
    let harness = load();
    let emulator = &harness.emulator;
    // Something open before the selftest starts must neither be counted nor disturb the baseline.
    let unrelated =
        emulator.open(harness.volume, "\\other\\kept-open.txt", &OpenOptions { pid: 77, ..OpenOptions::default() }).unwrap();
    let connector = connector(emulator);
    let probe = probe(emulator, harness.volume, true);
    let mut files = EmulatedFiles::new(emulator, harness.volume, false);
    let crypto = EmulatedCrypto::new(emulator, harness.volume, false);
    let mut environment =
        Environment { connector: &connector, probe: &probe, file_system: &mut files, crypto: Some(&crypto as &dyn CryptoSuite) };

    let report = run(&mut environment, &settings(Duration::from_secs(2)));
    println!("{}", report.to_text());

    let statuses: Vec<(&str, CheckStatus)> = report.checks.iter().map(|check| (check.name, check.status)).collect();
    let all_pass: Vec<(&str, CheckStatus)> = checks::ALL.iter().map(|name| (*name, CheckStatus::Pass)).collect();
    assert_eq!(statuses, all_pass, "{}", report.to_text());
    assert_eq!(report.exit_code, 0);
    assert!(detail_of(&report, checks::FILES_OPEN_HANDLES).starts_with("8 file(s) held, the driver lists 8 handle(s)"));
    // The driver's counters at the end equal fltemu's ground truth, and the baseline's.
    let (baseline, last) = (report.baseline.unwrap(), report.final_stats.unwrap());
    assert_eq!(last.stream_handle.live, emulator.live_context_count(ContextType::StreamHandle) as u64);
    assert_eq!(last.stream.live, emulator.live_context_count(ContextType::Stream) as u64);
    assert_eq!((baseline.open_handles, last.open_handles), (1, 1));
    assert_eq!(last.stream_handle.allocated - baseline.stream_handle.allocated, 8 + 4, "8 files and 2 × 2 key files");

    // The JSON report: schema, outcome, every check by name, the crypto scenarios.
    let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert_eq!(json["schema"], "ctxguard.selftest/1");
    assert_eq!((json["outcome"].as_str(), json["exit_code"].as_u64()), (Some("pass"), Some(0)));
    assert_eq!(json["pid"], COMPANION_PID);
    assert_eq!(json["scratch"], format!("{VOLUME}{SCRATCH}"));
    assert_eq!(json["driver"]["instances"][0]["volume"], VOLUME);
    assert_eq!(json["hello"]["version"], ctxguard_protocol::PROTOCOL_VERSION);
    assert_eq!(json["baseline"]["open_handles"], 1);
    assert_eq!(json["final"]["stream_handle"]["live"], last.stream_handle.live);
    let names: Vec<&str> = json["checks"].as_array().unwrap().iter().map(|check| check["name"].as_str().unwrap()).collect();
    assert_eq!(names, checks::ALL);
    assert!(json["checks"].as_array().unwrap().iter().all(|check| check["status"] == "PASS" && check["detail"].is_string()));
    assert_eq!(json["crypto"]["correlation"], "ran");
    let scenarios = json["crypto"]["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 2);
    assert!(
        scenarios.iter().all(|s| s["verdict"] == "PASS" && s["left_open"] == serde_json::json!([]) && s["handle_delta"] == 0)
    );
    assert_eq!(json["summary"], serde_json::json!({"passed": 10, "failed": 0, "skipped": 0}));
    assert!(json["error"].is_null());

    // The CLI's output: JSON on stdout, the same report in --report's file, exit code 0.
    let path = std::env::temp_dir().join(format!("ctxguard-selftest-report-{}.json", std::process::id()));
    let args = SelftestArgs { json: true, report: Some(path.clone()), files: 8, settle_ms: 0, skip_crypto: false, dir: None };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(emit(&report, &args, &mut out, &mut err), 0);
    let printed: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!((&printed, &written), (&json, &json));
    assert!(err.is_empty());

    // The settings a real system runs with (lower bounds and monotonic counters) pass as well.
    let mut files = EmulatedFiles::new(emulator, harness.volume, false);
    let mut environment =
        Environment { connector: &connector, probe: &probe, file_system: &mut files, crypto: Some(&crypto as &dyn CryptoSuite) };
    let lax = run(&mut environment, &Settings { exact_counts: false, ..settings(Duration::from_secs(2)) });
    assert_eq!((lax.exit_code, lax.summary.passed), (0, 10), "{}", lax.to_text());

    emulator.cleanup(&unrelated).unwrap();
    emulator.close(unrelated).unwrap();
    assert_clean(emulator);
    unload_clean(emulator);
}

/// One run with a file system that keeps the first file it is asked to close.
fn run_leaky(exact_counts: bool) -> Report {
    let harness = load();
    let emulator = &harness.emulator;
    let connector = connector(emulator);
    let probe = probe(emulator, harness.volume, true);
    let mut files = EmulatedFiles::new(emulator, harness.volume, true);
    let mut environment = Environment { connector: &connector, probe: &probe, file_system: &mut files, crypto: None };
    let report = run(&mut environment, &Settings { exact_counts, ..settings(Duration::from_millis(300)) });
    files.close_leaked();
    assert_clean(emulator);
    unload_clean(emulator);
    report
}

#[test]
fn a_handle_left_open_fails_the_handle_checks_and_exits_1() {
    for exact in [true, false] {
        let report = run_leaky(exact);
        let text = report.to_text();
        for name in [
            checks::DRIVER_LOADED,
            checks::PORT_HELLO,
            checks::STATS_BASELINE,
            checks::FILES_OPEN_HANDLES,
            checks::FILES_OPEN_STATS,
        ] {
            assert_eq!(status_of(&report, name), CheckStatus::Pass, "{name} (exact: {exact}): {text}");
        }
        for name in [checks::FILES_CLOSED_HANDLES, checks::FILES_CLOSED_STATS, checks::LEAK_FINAL] {
            assert_eq!(status_of(&report, name), CheckStatus::Fail, "{name} (exact: {exact}): {text}");
        }
        assert_eq!(status_of(&report, checks::CRYPTO), CheckStatus::Skip);
        let closed = detail_of(&report, checks::FILES_CLOSED_HANDLES);
        assert!(closed.starts_with("1 handle(s) still open") && closed.contains("selftest-000.txt"), "{closed}");
        let stats = detail_of(&report, checks::FILES_CLOSED_STATS);
        assert!(stats.starts_with("1 stream(s) of ours with open handles; open handles 1 (+1)"), "{stats}");
        assert!(stats.contains("stream handles 7 (+7) (freed)"), "{stats}");
        assert!(detail_of(&report, checks::LEAK_FINAL).starts_with("1 stream(s) of ours still tracked"), "{text}");
        assert_eq!((report.exit_code, report.summary.failed), (1, 3));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let args = SelftestArgs { json: false, report: None, files: 8, settle_ms: 300, skip_crypto: true, dir: None };
        assert_eq!(emit(&report, &args, &mut out, &mut err), 1);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("FAIL  files.closed.handles") && text.contains("result: FAIL (6 passed, 3 failed, 1 skipped; exit 1)"),
            "{text}"
        );
    }
}

#[test]
fn a_crypto_scenario_leaving_a_key_file_open_fails_the_crypto_check() {
    let harness = load();
    let emulator = &harness.emulator;
    let connector = connector(emulator);
    let probe = probe(emulator, harness.volume, true);
    let mut files = EmulatedFiles::new(emulator, harness.volume, false);
    let crypto = EmulatedCrypto::new(emulator, harness.volume, true);
    let mut environment =
        Environment { connector: &connector, probe: &probe, file_system: &mut files, crypto: Some(&crypto as &dyn CryptoSuite) };

    let report = run(&mut environment, &settings(Duration::from_millis(300)));

    assert_eq!(status_of(&report, checks::FILES_CLOSED_HANDLES), CheckStatus::Pass, "{}", report.to_text());
    assert_eq!(status_of(&report, checks::CRYPTO), CheckStatus::Fail, "{}", report.to_text());
    let detail = detail_of(&report, checks::CRYPTO);
    let left = format!("{VOLUME}{CRYPTO_DIR}\\key-leaky-2.key");
    assert!(detail.contains("key-leaky: left open") && detail.contains(&left.replace('\\', "\\\\")), "{detail}");
    let crypto_report = report.crypto.as_ref().unwrap();
    let leaky = crypto_report.scenarios.iter().find(|s| s.name == "key-leaky").unwrap();
    assert_eq!((leaky.left_open.clone(), leaky.handle_delta), (Some(vec![left]), Some(1)));
    // Both passes' key files are still open, so the final leak check sees them too.
    assert_eq!(status_of(&report, checks::LEAK_FINAL), CheckStatus::Fail);
    assert_eq!(report.exit_code, 1);

    crypto.close_held();
    assert_clean(emulator);
    unload_clean(emulator);
}

#[test]
fn a_detached_volume_fails_the_attachment_and_handle_checks() {
    let harness = load();
    let emulator = &harness.emulator;
    emulator.detach(harness.volume).unwrap();
    let connector = connector(emulator);
    let probe = probe(emulator, harness.volume, true);
    let mut files = EmulatedFiles::new(emulator, harness.volume, false);
    let mut environment = Environment { connector: &connector, probe: &probe, file_system: &mut files, crypto: None };

    let report = run(&mut environment, &settings(Duration::ZERO));

    assert_eq!(status_of(&report, checks::PORT_HELLO), CheckStatus::Pass);
    assert_eq!(status_of(&report, checks::DRIVER_LOADED), CheckStatus::Fail, "{}", report.to_text());
    assert!(detail_of(&report, checks::DRIVER_LOADED).contains("0 instance(s)"));
    // No instance: no instance context, and files on the volume are not seen.
    assert_eq!(status_of(&report, checks::STATS_BASELINE), CheckStatus::Fail);
    assert_eq!(status_of(&report, checks::FILES_OPEN_HANDLES), CheckStatus::Fail);
    assert!(detail_of(&report, checks::FILES_OPEN_HANDLES).contains("the driver lists 0 handle(s)"), "{}", report.to_text());
    assert_eq!(report.exit_code, 1);
    assert_clean(emulator);
    unload_clean(emulator);
}

#[test]
fn an_unloaded_driver_is_reported_with_the_load_command_and_nothing_else_runs() {
    let harness = load();
    let emulator = &harness.emulator;
    unload_clean(emulator);
    let connector = connector(emulator);
    let probe = probe(emulator, harness.volume, false);
    let mut files = EmulatedFiles::new(emulator, harness.volume, false);
    let mut environment = Environment { connector: &connector, probe: &probe, file_system: &mut files, crypto: None };

    let report = run(&mut environment, &settings(Duration::ZERO));

    assert_eq!(status_of(&report, checks::DRIVER_LOADED), CheckStatus::Fail);
    assert!(detail_of(&report, checks::DRIVER_LOADED).contains("fltmc load ctxguard"), "{}", report.to_text());
    assert_eq!(status_of(&report, checks::PORT_HELLO), CheckStatus::Fail);
    assert!(detail_of(&report, checks::PORT_HELLO).contains("fltmc load ctxguard"), "{}", report.to_text());
    assert!(report.checks.iter().skip(2).all(|check| check.status == CheckStatus::Skip));
    assert_eq!(report.checks.len(), checks::ALL.len());
    // The driver is absent on a system that has ports: a failure (1), not "cannot run" (2).
    assert_eq!(report.exit_code, 1);
    assert!(report.scratch.is_none() && report.baseline.is_none());
}

#[test]
fn the_vm_runbook_calls_the_selftest_with_arguments_the_cli_accepts() {
    let runbook = std::fs::read_to_string(support::workspace_root().join("tests/vm/runbook.ps1")).unwrap();
    let call = runbook.lines().find(|line| line.contains("& $exe selftest")).expect("the runbook runs ctxguard selftest");
    let words: Vec<&str> =
        call.split_whitespace().skip(2).map(|word| if word == "$Report" { "report.json" } else { word }).collect();
    let matches = ctxguard_companion::selftest::cli::command()
        .try_get_matches_from(&words)
        .unwrap_or_else(|error| panic!("{call}: {error}"));
    let args = SelftestArgs::from_matches(&matches);
    assert!(args.json && args.report.is_some(), "the runbook collects the JSON report: {args:?}");
    // The steps the issue asks for, with the documented verifier syntax.
    for step in [
        "bcdedit @('/set', 'testsigning', 'on')",
        "Cert:\\LocalMachine\\$store",
        "@('Root', 'TrustedPublisher')",
        "pnputil @('/add-driver'",
        "@('/ruleclasses', '5', '37')",
        "@('/flags', '0x10')",
        "fltmc @('load', 'ctxguard')",
        "fltmc @('instances', '-f', 'ctxguard')",
        "fltmc unload ctxguard",
        "pnputil /delete-driver $oem /uninstall",
        "exit $selftest",
    ] {
        assert!(runbook.contains(step), "the runbook lacks {step}");
    }
    // Without a catalog the runbook writes the INF's altitude itself: the pattern it reads it
    // with must find it in the INF.
    let inf = std::fs::read_to_string(support::workspace_root().join("inf/ctxguard.inx")).unwrap();
    assert!(runbook.contains(r#"'^\s*Instance1\.Altitude\s*=\s*"(\d+)"'"#), "the runbook reads the altitude from the INF");
    let altitude_lines: Vec<&str> = inf
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            line.starts_with("Instance1.Altitude")
                && line.split('=').nth(1).is_some_and(|value| {
                    let value = value.trim();
                    value.len() > 2
                        && value.starts_with('"')
                        && value.ends_with('"')
                        && value[1..value.len() - 1].bytes().all(|b| b.is_ascii_digit())
                })
        })
        .collect();
    assert_eq!(altitude_lines.len(), 1, "inf/ctxguard.inx has one Instance1.Altitude = \"<digits>\" line");

    // docs/vm.md documents every check by its stable name.
    let doc = std::fs::read_to_string(support::workspace_root().join("docs/vm.md")).unwrap();
    for name in checks::ALL {
        assert!(doc.contains(&format!("| `{name}` |")), "docs/vm.md does not document {name}");
    }
}

#[test]
fn a_prompt_that_is_not_elevated_cannot_run_the_selftest() {
    let harness = load();
    let emulator = &harness.emulator;
    // FltLib's answer to a process outside Administrators: HRESULT_FROM_WIN32(ERROR_ACCESS_DENIED).
    let denied = |_: &ctxguard_protocol::ConnectContext| -> Result<Box<dyn ctxguard_companion::port::Transport>, _> {
        Err(ctxguard_companion::port::classify_hresult(0x8007_0005_u32.cast_signed()))
    };
    let probe = probe(emulator, harness.volume, true);
    let mut files = EmulatedFiles::new(emulator, harness.volume, false);
    let mut environment = Environment { connector: &denied, probe: &probe, file_system: &mut files, crypto: None };

    let report = run(&mut environment, &settings(Duration::ZERO));

    assert_eq!(status_of(&report, checks::PORT_HELLO), CheckStatus::Fail);
    assert!(detail_of(&report, checks::PORT_HELLO).contains("elevated prompt"), "{}", report.to_text());
    assert_eq!((report.exit_code, report.summary.skipped), (2, 8));
    assert_clean(emulator);
    unload_clean(emulator);
}
