//! `ctxguard selftest`: what a person would otherwise type on a test VM, as named checks.
//!
//! The core ([`run`]) is host-independent. It asks three injected interfaces:
//! * a port [`Connector`] (FltLib on Windows, fltemu's user side in the tests);
//! * a [`DriverProbe`] — is ctxguard loaded, on which volumes (FilterFindFirst /
//!   FilterInstanceFindFirst, falling back to `fltmc`, on Windows; the emulator's volumes in tests);
//! * a [`FileSystem`] that creates files in a scratch directory and keeps them open until told
//!   to close them (real files on Windows, `fltemu::Emulator::open` in tests);
//!
//! and optionally a [`CryptoSuite`] (the crypto scenarios with the driver as witness).
//!
//! The result is a [`Report`] (JSON schema `ctxguard.selftest/1`, see docs/vm.md) whose
//! [`Report::exit_code`] is 0 when every check passed, 1 when one failed and 2 when the
//! selftest could not run here at all.

pub mod cli;
mod files;
mod probe;
mod report;
#[cfg(windows)]
pub mod windows;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::port::{Client, Connector, PortError, Stats};

pub use files::TempDirFileSystem;
pub use probe::{DriverPresence, InstanceInfo, parse_fltmc_filters, parse_fltmc_instances};
pub use report::{Check, CheckStatus, Outcome, Report, SCHEMA, SettingsReport, Summary};

/// The filter's name as Filter Manager knows it (the INF's service name).
pub const FILTER_NAME: &str = "ctxguard";

/// What `fltmc` needs to load the driver, quoted in every "not loaded" message.
pub const LOAD_COMMAND: &str = "fltmc load ctxguard";

/// Stable check names, in run order (the JSON `checks[].name`).
pub mod checks {
    /// Filter Manager lists ctxguard with an instance on the scratch directory's volume.
    pub const DRIVER_LOADED: &str = "driver.loaded";
    /// The port accepts a connection and both sides share a protocol version.
    pub const PORT_HELLO: &str = "port.hello";
    /// GetStats answers with an attached instance.
    pub const STATS_BASELINE: &str = "stats.baseline";
    /// QueryHandles for our PID under the scratch directory lists exactly the files held open.
    pub const FILES_OPEN_HANDLES: &str = "files.open.handles";
    /// ListStreams shows each open file with at least one open handle.
    pub const FILES_OPEN_STREAMS: &str = "files.open.streams";
    /// GetStats counts the open files (open handles, stream and stream-handle contexts).
    pub const FILES_OPEN_STATS: &str = "files.open.stats";
    /// After closing: no handle of ours remains under the scratch directory.
    pub const FILES_CLOSED_HANDLES: &str = "files.closed.handles";
    /// After closing: open handles and stream-handle contexts are back to the baseline.
    pub const FILES_CLOSED_STATS: &str = "files.closed.stats";
    /// The crypto scenarios ran with the driver as witness and nothing was left open.
    pub const CRYPTO: &str = "crypto.correlation";
    /// After removing the scratch directory: no stream of ours, live counts back to baseline.
    pub const LEAK_FINAL: &str = "leak.final";
    /// Every check, in order.
    pub const ALL: [&str; 10] = [
        DRIVER_LOADED,
        PORT_HELLO,
        STATS_BASELINE,
        FILES_OPEN_HANDLES,
        FILES_OPEN_STREAMS,
        FILES_OPEN_STATS,
        FILES_CLOSED_HANDLES,
        FILES_CLOSED_STATS,
        CRYPTO,
        LEAK_FINAL,
    ];
}

/// Creates, holds and closes files in a scratch directory.
pub trait FileSystem {
    /// An open file; dropping it must not be relied on to close it (see [`FileSystem::close`]).
    type File;

    /// The process that opens the files (the PID the driver records).
    fn pid(&self) -> u32;

    /// Creates the scratch directory and returns its name as the driver reports names
    /// (the normalized device path, e.g. `\Device\HarddiskVolume3\Users\me\AppData\Local\Temp\x`).
    ///
    /// # Errors
    /// Why the directory cannot be created.
    fn prepare(&mut self) -> Result<String, String>;

    /// Creates `leaf` in the scratch directory and keeps it open; returns the open file and its
    /// name as the driver reports it.
    ///
    /// # Errors
    /// Why the file cannot be created.
    fn create(&mut self, leaf: &str) -> Result<(Self::File, String), String>;

    /// Closes the file (on Windows CloseHandle: cleanup, then close when the last reference goes).
    ///
    /// # Errors
    /// Why it could not be closed.
    fn close(&mut self, file: Self::File) -> Result<(), String>;

    /// Removes the scratch directory and everything in it.
    ///
    /// # Errors
    /// Why it could not be removed.
    fn remove_all(&mut self) -> Result<(), String>;
}

/// Asks Filter Manager whether ctxguard is loaded and where it is attached.
pub trait DriverProbe {
    /// The driver's presence.
    ///
    /// # Errors
    /// Why Filter Manager could not be asked (not elevated, not Windows, Wine's stubs).
    fn probe(&self) -> Result<DriverPresence, String>;
}

impl<F> DriverProbe for F
where
    F: Fn() -> Result<DriverPresence, String>,
{
    fn probe(&self) -> Result<DriverPresence, String> {
        self()
    }
}

/// One crypto scenario's outcome, as the selftest judges it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CryptoScenario {
    /// The scenario's stable name.
    pub name: String,
    /// `PASS`, `DIFF`, `DOC`, `UNVERIFIED` or `SKIP` (schema `ctxguard.crypto/2`).
    pub verdict: String,
    /// Files the driver saw left open by the scenario's second pass; `None` without correlation.
    pub left_open: Option<Vec<String>>,
    /// The process's kernel-handle delta around the second pass, when counted.
    pub handle_delta: Option<i64>,
}

/// What the crypto scenarios reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CryptoSummary {
    /// The correlation status: `ran`, `partial` or `skipped`.
    pub correlation: String,
    /// Its detail (what was watched, or why the driver could not be asked).
    pub correlation_detail: String,
    /// One entry per scenario.
    pub scenarios: Vec<CryptoScenario>,
    /// The whole `ctxguard.crypto/2` report, when the runner produced one.
    pub report: Option<serde_json::Value>,
}

/// Runs the crypto scenarios with a witness over `connector`.
pub trait CryptoSuite {
    /// Runs them.
    ///
    /// # Errors
    /// Why the scenarios could not run at all.
    fn run(&self, connector: &dyn Connector) -> Result<CryptoSummary, String>;
}

/// How the selftest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How many files to create and hold open.
    pub files: usize,
    /// How long counts may take to settle after a close or a delete (polled).
    pub settle: Duration,
    /// Global counts must move by exactly our files (an emulator with nothing else running);
    /// otherwise other processes' I/O is tolerated and only lower bounds are checked globally.
    pub exact_counts: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self { files: 8, settle: Duration::from_secs(15), exact_counts: false }
    }
}

/// The interfaces a run uses.
pub struct Environment<'a, F: FileSystem> {
    /// The port.
    pub connector: &'a dyn Connector,
    /// Filter Manager's view.
    pub probe: &'a dyn DriverProbe,
    /// The files.
    pub file_system: &'a mut F,
    /// The crypto scenarios, when they are to run.
    pub crypto: Option<&'a dyn CryptoSuite>,
}

/// Collects checks in order; a check not reached is recorded as skipped at the end.
struct Recorder {
    checks: Vec<Check>,
}

impl Recorder {
    fn record(&mut self, name: &'static str, passed: bool, detail: impl Into<String>) -> bool {
        let status = if passed { CheckStatus::Pass } else { CheckStatus::Fail };
        self.checks.push(Check { name, status, detail: detail.into() });
        passed
    }

    fn skip(&mut self, name: &'static str, detail: impl Into<String>) {
        self.checks.push(Check { name, status: CheckStatus::Skip, detail: detail.into() });
    }

    /// Skips every check not yet recorded.
    fn skip_rest(&mut self, why: &str) {
        for name in checks::ALL {
            if !self.checks.iter().any(|check| check.name == name) {
                self.skip(name, why);
            }
        }
    }
}

/// Polls `read` until `done` holds or `settle` has passed; returns the last reading and whether
/// it was done.
fn settle<T>(
    settle: Duration,
    mut read: impl FnMut() -> Result<T, PortError>,
    done: impl Fn(&T) -> bool,
) -> Result<(T, bool), PortError> {
    let deadline = Instant::now() + settle;
    loop {
        let value = read()?;
        if done(&value) {
            return Ok((value, true));
        }
        if Instant::now() >= deadline {
            return Ok((value, false));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Case-insensitive name comparison (the driver and NTFS fold case).
fn same_name(left: &str, right: &str) -> bool {
    left.to_lowercase() == right.to_lowercase()
}

/// Whether `name` lies inside directory `dir` (not the directory itself).
fn inside(dir: &str, name: &str) -> bool {
    let dir = dir.to_lowercase();
    let name = name.to_lowercase();
    name.len() > dir.len() + 1 && name.starts_with(&dir) && name.as_bytes()[dir.len()] == b'\\'
}

/// `value` compared with `baseline + delta`: exactly, or as a lower bound.
fn at_least(value: u64, baseline: u64, delta: u64, exact: bool) -> bool {
    if exact { value == baseline + delta } else { value >= baseline + delta }
}

fn delta(value: u64, baseline: u64) -> String {
    let difference = i128::from(value) - i128::from(baseline);
    format!("{value} ({difference:+})")
}

/// Runs every check and returns the report. Never panics on a missing driver or failing I/O:
/// each failure is a check's detail.
pub fn run<F: FileSystem>(environment: &mut Environment<'_, F>, settings: &Settings) -> Report {
    let mut recorder = Recorder { checks: Vec::new() };
    let mut report = Report::new(environment.file_system.pid(), settings, environment.crypto.is_some());

    // Filter Manager's view first: it says "not loaded" even when the port cannot be reached.
    let probed = environment.probe.probe();
    let client = match Client::connect(environment.connector, false) {
        Ok(client) => client,
        Err(error) => {
            // No port in this environment, or not elevated: the selftest cannot run here; a
            // missing driver on a system that has ports is a failed check.
            let cannot_run = matches!(error, PortError::NotReachable(_) | PortError::AccessDenied);
            record_presence(&mut recorder, &probed, None);
            report.driver = probed.ok();
            recorder.record(checks::PORT_HELLO, false, error.to_string());
            recorder.skip_rest("needs the driver's port");
            report.error = Some(error.to_string());
            return report.finish(recorder.checks, cannot_run);
        }
    };
    let scratch = match environment.file_system.prepare() {
        Ok(scratch) => scratch,
        Err(error) => {
            record_presence(&mut recorder, &probed, None);
            report.driver = probed.ok();
            report.error = Some(format!("cannot create the scratch directory: {error}"));
            recorder.skip_rest("the scratch directory could not be created");
            return report.finish(recorder.checks, true);
        }
    };
    report.scratch = Some(scratch.clone());
    record_presence(&mut recorder, &probed, Some(&scratch));
    report.driver = probed.ok();

    let hello = client.hello();
    report.hello = Some(hello);
    recorder.record(
        checks::PORT_HELLO,
        true,
        format!(
            "protocol {} (driver {}..={}, companion {}..={}), ctxguard.sys {}.{}.{}, at most {} connections",
            hello.version,
            hello.driver_min_version,
            hello.driver_max_version,
            ctxguard_protocol::PROTOCOL_MIN_VERSION,
            ctxguard_protocol::PROTOCOL_VERSION,
            hello.driver_version[0],
            hello.driver_version[1],
            hello.driver_version[2],
            hello.max_connections
        ),
    );

    let outcome = run_with_client(environment, settings, &client, &scratch, &mut recorder, &mut report);
    if let Err(error) = outcome {
        report.error = Some(error.to_string());
        recorder.skip_rest(&format!("not reached: {error}"));
    }
    report.finish(recorder.checks, false)
}

/// Records `driver.loaded`: listed, with an instance on the scratch directory's volume when the
/// scratch directory is known, with any instance otherwise.
fn record_presence(recorder: &mut Recorder, probed: &Result<DriverPresence, String>, scratch: Option<&str>) {
    match probed {
        Ok(presence) if !presence.loaded => {
            recorder.record(
                checks::DRIVER_LOADED,
                false,
                format!(
                    "Filter Manager does not list {FILTER_NAME} (asked via {}); install it (pnputil /add-driver ctxguard.inf /install) and load it from an elevated prompt with: {LOAD_COMMAND}",
                    presence.source
                ),
            );
        }
        Ok(presence) => {
            let volumes: Vec<&str> = presence.instances.iter().map(|instance| instance.volume.as_str()).collect();
            let attached = match scratch {
                Some(scratch) => presence.instances.iter().any(|instance| instance.covers(scratch)),
                None => !presence.instances.is_empty(),
            };
            let detail = format!(
                "loaded (via {}), {} instance(s): {}; {}",
                presence.source,
                presence.instances.len(),
                volumes.join(", "),
                match (scratch, attached) {
                    (Some(_), true) => "the scratch directory is on an attached volume",
                    (Some(_), false) => "the scratch directory is on NO attached volume",
                    (None, true) => "attached",
                    (None, false) => "attached to no volume",
                }
            );
            recorder.record(checks::DRIVER_LOADED, attached, detail);
        }
        Err(error) => {
            recorder.record(checks::DRIVER_LOADED, false, format!("cannot ask Filter Manager: {error}"));
        }
    }
}

/// The checks that need a connected client. An `Err` is a port failure that stops the run.
fn run_with_client<F: FileSystem>(
    environment: &mut Environment<'_, F>,
    settings: &Settings,
    client: &Client,
    scratch: &str,
    recorder: &mut Recorder,
    report: &mut Report,
) -> Result<(), PortError> {
    let exact = settings.exact_counts;
    let baseline = client.stats()?;
    report.baseline = Some(baseline);
    let consistent = [baseline.instance, baseline.stream, baseline.stream_handle]
        .iter()
        .all(|kind| !exact || kind.allocated == kind.freed + kind.live);
    recorder.record(
        checks::STATS_BASELINE,
        baseline.instance.live >= 1 && consistent,
        format!(
            "instances {}, streams {}, stream handles {}, open handles {}{}",
            baseline.instance.live,
            baseline.stream.live,
            baseline.stream_handle.live,
            baseline.open_handles,
            if consistent { "" } else { "; allocated != freed + live" }
        ),
    );

    let session = Session { settings, client, scratch, baseline: &baseline };
    let files = check_open(environment.file_system, session, recorder)?;
    let created = files.len() as u64;
    check_closed(environment.file_system, files, session, recorder)?;

    match environment.crypto {
        Some(suite) => {
            let summary = suite.run(environment.connector);
            let (passed, detail) = judge_crypto(&summary);
            recorder.record(checks::CRYPTO, passed, detail);
            report.crypto = summary.ok();
        }
        None => recorder.skip(checks::CRYPTO, "not requested (--skip-crypto)"),
    }

    check_final(environment.file_system, session, recorder, report, created)
}

/// What every phase after the baseline reads.
#[derive(Clone, Copy)]
struct Session<'a> {
    settings: &'a Settings,
    client: &'a Client,
    scratch: &'a str,
    baseline: &'a Stats,
}

/// Creates and holds the files; checks handles, streams and stats while they are open.
fn check_open<F: FileSystem>(
    file_system: &mut F,
    session: Session<'_>,
    recorder: &mut Recorder,
) -> Result<Vec<F::File>, PortError> {
    let Session { settings, client, scratch, baseline } = session;
    let exact = settings.exact_counts;
    let pid = file_system.pid();
    let mut files = Vec::new();
    let mut names = Vec::new();
    let mut create_error = None;
    for index in 0..settings.files {
        match file_system.create(&format!("selftest-{index:03}.txt")) {
            Ok((file, name)) => {
                files.push(file);
                names.push(name);
            }
            Err(error) => {
                create_error = Some(format!("creating file {index}: {error}"));
                break;
            }
        }
    }
    let created = names.len() as u64;

    // Handles of our PID under the scratch directory: exactly the files we hold.
    let held = client.handles(Some(pid), scratch)?;
    let missing: Vec<&String> = names.iter().filter(|name| !held.iter().any(|handle| same_name(&handle.name, name))).collect();
    let unexpected: Vec<&str> =
        held.iter().filter(|handle| !names.iter().any(|name| same_name(&handle.name, name))).map(|h| h.name.as_str()).collect();
    let exact_set = missing.is_empty() && unexpected.is_empty() && held.len() == names.len();
    recorder.record(
        checks::FILES_OPEN_HANDLES,
        create_error.is_none() && exact_set,
        create_error.clone().unwrap_or_else(|| {
            format!(
                "{} file(s) held, the driver lists {} handle(s) of pid {pid}{}{}",
                names.len(),
                held.len(),
                if missing.is_empty() { String::new() } else { format!("; missing: {missing:?}") },
                if unexpected.is_empty() { String::new() } else { format!("; unexpected: {unexpected:?}") }
            )
        }),
    );

    let streams = client.streams()?;
    let unseen: Vec<&String> = names
        .iter()
        .filter(|name| !streams.iter().any(|stream| same_name(&stream.name, name) && stream.open_handles >= 1))
        .collect();
    recorder.record(
        checks::FILES_OPEN_STREAMS,
        unseen.is_empty() && create_error.is_none(),
        if unseen.is_empty() {
            format!("{} stream(s) listed with open handles, {} tracked in all", names.len(), streams.len())
        } else {
            format!("not listed as open: {unseen:?}")
        },
    );

    // Global live counts move with every other process's I/O (and may fall while ours rise),
    // so on a real system the monotonic allocation counters carry the check: each of our
    // creates allocated a stream and a stream-handle context. With nothing else running (the
    // emulator) the live counts must move by exactly our files.
    let open = client.stats()?;
    let counted = if exact {
        at_least(open.open_handles, baseline.open_handles, created, true)
            && at_least(open.stream_handle.live, baseline.stream_handle.live, created, true)
            && at_least(open.stream.live, baseline.stream.live, created, true)
    } else {
        at_least(open.stream_handle.allocated, baseline.stream_handle.allocated, created, false)
            && at_least(open.stream.allocated, baseline.stream.allocated, created, false)
            && open.open_handles >= created
            && open.stream_handle.live >= created
            && open.stream.live >= created
    };
    recorder.record(
        checks::FILES_OPEN_STATS,
        counted,
        format!(
            "{created} file(s) open: open handles {}, stream handles {}, streams {} (live); stream handles {}, streams {} (allocated); expected {}",
            delta(open.open_handles, baseline.open_handles),
            delta(open.stream_handle.live, baseline.stream_handle.live),
            delta(open.stream.live, baseline.stream.live),
            delta(open.stream_handle.allocated, baseline.stream_handle.allocated),
            delta(open.stream.allocated, baseline.stream.allocated),
            if exact { format!("exactly +{created} live") } else { format!("at least +{created} allocated") }
        ),
    );

    Ok(files)
}

/// Closes the files; checks that no handle of ours remains and that the counts come back.
fn check_closed<F: FileSystem>(
    file_system: &mut F,
    files: Vec<F::File>,
    session: Session<'_>,
    recorder: &mut Recorder,
) -> Result<(), PortError> {
    let Session { settings, client, scratch, baseline } = session;
    let exact = settings.exact_counts;
    let pid = file_system.pid();
    let created = files.len() as u64;
    let mut close_errors = Vec::new();
    for file in files {
        if let Err(error) = file_system.close(file) {
            close_errors.push(error);
        }
    }
    let (left, gone) = settle(settings.settle, || client.handles(Some(pid), scratch), Vec::is_empty)?;
    recorder.record(
        checks::FILES_CLOSED_HANDLES,
        gone && close_errors.is_empty(),
        if gone && close_errors.is_empty() {
            format!("no handle of pid {pid} remains under the scratch directory")
        } else if !gone {
            let left: Vec<&str> = left.iter().map(|handle| handle.name.as_str()).collect();
            format!("{} handle(s) still open after closing every file: {left:?}", left.len())
        } else {
            format!("closing failed: {}", close_errors.join("; "))
        },
    );

    // Our streams must show no open handle; our stream-handle contexts must have been freed
    // (a monotonic counter, so other processes' I/O cannot hide it); with nothing else running,
    // the live counts must be back to the baseline exactly.
    let closed_done = |(stats, busy): &(Stats, usize)| {
        *busy == 0
            && at_least(stats.stream_handle.freed, baseline.stream_handle.freed, created, false)
            && (!exact
                || (stats.open_handles == baseline.open_handles && stats.stream_handle.live == baseline.stream_handle.live))
    };
    let read_closed = || -> Result<(Stats, usize), PortError> {
        let busy = client.streams()?.iter().filter(|stream| inside(scratch, &stream.name) && stream.open_handles > 0).count();
        Ok((client.stats()?, busy))
    };
    let ((closed, busy), back) = settle(settings.settle, read_closed, closed_done)?;
    recorder.record(
        checks::FILES_CLOSED_STATS,
        back,
        format!(
            "{busy} stream(s) of ours with open handles; open handles {}, stream handles {} (live), stream handles {} (freed) against the baseline{}",
            delta(closed.open_handles, baseline.open_handles),
            delta(closed.stream_handle.live, baseline.stream_handle.live),
            delta(closed.stream_handle.freed, baseline.stream_handle.freed),
            if back { "" } else { " after waiting for them to settle" }
        ),
    );

    Ok(())
}

/// Removes the scratch directory; checks that none of our streams is tracked and that the live
/// counts are back to the baseline.
fn check_final<F: FileSystem>(
    file_system: &mut F,
    session: Session<'_>,
    recorder: &mut Recorder,
    report: &mut Report,
    created: u64,
) -> Result<(), PortError> {
    let Session { settings, client, scratch, baseline } = session;
    let exact = settings.exact_counts;
    let removed = file_system.remove_all();
    // Our stream contexts must be gone: the registry lists none of ours, and at least as many
    // were freed as we created. With nothing else running the live counts must be back to the
    // baseline exactly; on a real system other processes' files move them both ways, so there
    // they are reported, not judged.
    let final_done = |(stats, ours): &(Stats, usize)| {
        *ours == 0
            && at_least(stats.stream.freed, baseline.stream.freed, created, false)
            && (!exact
                || (stats.open_handles == baseline.open_handles
                    && stats.stream_handle.live == baseline.stream_handle.live
                    && stats.stream.live == baseline.stream.live
                    && stats.instance.live == baseline.instance.live))
    };
    let read_final = || -> Result<(Stats, usize), PortError> {
        let ours = client.streams()?.iter().filter(|stream| inside(scratch, &stream.name)).count();
        Ok((client.stats()?, ours))
    };
    let ((last, ours), clean) = settle(settings.settle, read_final, final_done)?;
    report.final_stats = Some(last);
    recorder.record(
        checks::LEAK_FINAL,
        clean && removed.is_ok(),
        format!(
            "{ours} stream(s) of ours still tracked, streams {} (freed); streams {}, stream handles {}, open handles {} (live) against the baseline{}",
            delta(last.stream.freed, baseline.stream.freed),
            delta(last.stream.live, baseline.stream.live),
            delta(last.stream_handle.live, baseline.stream_handle.live),
            delta(last.open_handles, baseline.open_handles),
            match (&removed, clean) {
                (Err(error), _) => format!("; removing the scratch directory failed: {error}"),
                (Ok(()), false) => " after waiting for them to settle".to_owned(),
                (Ok(()), true) => String::new(),
            }
        ),
    );
    Ok(())
}

/// PASS when the driver answered for every scenario, no scenario's documented behaviour
/// differed and the driver saw no file left open.
fn judge_crypto(summary: &Result<CryptoSummary, String>) -> (bool, String) {
    let summary = match summary {
        Ok(summary) => summary,
        Err(error) => return (false, format!("the crypto scenarios could not run: {error}")),
    };
    let mut problems = Vec::new();
    if summary.correlation != "ran" {
        problems.push(format!("correlation {}: {}", summary.correlation, summary.correlation_detail));
    }
    for scenario in &summary.scenarios {
        if scenario.verdict == "DIFF" {
            problems.push(format!("{}: DIFF (behaviour differs from Windows' recorded behaviour)", scenario.name));
        }
        if let Some(left) = scenario.left_open.as_ref().filter(|left| !left.is_empty()) {
            problems.push(format!("{}: left open {left:?}", scenario.name));
        }
    }
    let count = |verdict: &str| summary.scenarios.iter().filter(|s| s.verdict == verdict).count();
    // DOC (Windows differs from its documentation) and UNVERIFIED (no Windows-run evidence)
    // blame no one, so only DIFF fails the check.
    let tally = format!(
        "{} scenario(s): {} PASS, {} DIFF, {} DOC, {} UNVERIFIED, {} SKIP",
        summary.scenarios.len(),
        count("PASS"),
        count("DIFF"),
        count("DOC"),
        count("UNVERIFIED"),
        count("SKIP")
    );
    if problems.is_empty() {
        (true, format!("{tally}; the driver saw no file left open"))
    } else {
        (false, format!("{tally}; {}", problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_means_below_the_directory_at_a_component_boundary() {
        assert!(inside("\\Device\\V\\tmp\\x", "\\device\\v\\TMP\\X\\a.txt"));
        assert!(!inside("\\Device\\V\\tmp\\x", "\\Device\\V\\tmp\\x"));
        assert!(!inside("\\Device\\V\\tmp\\x", "\\Device\\V\\tmp\\x2\\a.txt"));
    }

    #[test]
    fn counts_are_exact_or_bounded() {
        assert!(at_least(5, 2, 3, true) && !at_least(6, 2, 3, true) && at_least(6, 2, 3, false) && !at_least(4, 2, 3, false));
        assert_eq!(delta(3, 5), "3 (-2)");
    }

    #[test]
    fn crypto_is_judged_on_correlation_verdicts_and_files_left_open() {
        let scenario = |name: &str, verdict: &str, left: Option<Vec<String>>| CryptoScenario {
            name: name.into(),
            verdict: verdict.into(),
            left_open: left,
            handle_delta: Some(0),
        };
        let mut summary = CryptoSummary {
            correlation: "ran".into(),
            correlation_detail: "watched: x".into(),
            scenarios: vec![scenario("a", "PASS", Some(vec![])), scenario("b", "SKIP", None)],
            report: None,
        };
        assert!(judge_crypto(&Ok(summary.clone())).0);
        summary.scenarios.push(scenario("d", "DOC", Some(vec![])));
        summary.scenarios.push(scenario("u", "UNVERIFIED", Some(vec![])));
        let (passed, detail) = judge_crypto(&Ok(summary.clone()));
        assert!(passed && detail.contains("1 DOC, 1 UNVERIFIED"), "{detail}");
        summary.scenarios.push(scenario("x", "DIFF", Some(vec![])));
        let (passed, detail) = judge_crypto(&Ok(summary.clone()));
        assert!(!passed && detail.contains("x: DIFF"), "{detail}");
        summary.scenarios.truncate(2);
        summary.scenarios.push(scenario("c", "PASS", Some(vec!["C:\\k".into()])));
        let (passed, detail) = judge_crypto(&Ok(summary.clone()));
        assert!(!passed && detail.contains("c: left open"), "{detail}");
        summary.scenarios.pop();
        summary.correlation = "skipped".into();
        assert!(!judge_crypto(&Ok(summary)).0);
        assert!(!judge_crypto(&Err("not Windows".into())).0);
    }
}
