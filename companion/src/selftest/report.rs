//! The selftest report: JSON schema `ctxguard.selftest/1` (docs/vm.md) and the human summary.
//!
//! Field names, check names and status spellings are the stable schema: add, never rename.

use std::fmt::Write as _;

use serde::Serialize;

use super::{CryptoSummary, DriverPresence, Settings};
use crate::port::{Hello, Stats};

/// Schema identifier written into every report; bumped only on an incompatible change.
pub const SCHEMA: &str = "ctxguard.selftest/1";

/// One check's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CheckStatus {
    /// It held.
    #[serde(rename = "PASS")]
    Pass,
    /// It did not.
    #[serde(rename = "FAIL")]
    Fail,
    /// It was not run (an earlier step failed, or it was not asked for).
    #[serde(rename = "SKIP")]
    Skip,
}

impl CheckStatus {
    /// `PASS`, `FAIL` or `SKIP`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        }
    }
}

/// One named check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name (`super::checks`).
    pub name: &'static str,
    /// PASS, FAIL or SKIP.
    pub status: CheckStatus,
    /// What was seen, in one line.
    pub detail: String,
}

/// The run's overall result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Every check that ran passed (exit 0).
    #[serde(rename = "pass")]
    Pass,
    /// At least one check failed (exit 1).
    #[serde(rename = "fail")]
    Fail,
    /// The selftest cannot run here: no scratch directory, no filter communication port in this
    /// environment (not Windows, Wine), or not elevated (exit 2).
    #[serde(rename = "cannot-run")]
    CannotRun,
}

/// Counts per status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Checks that passed.
    pub passed: usize,
    /// Checks that failed.
    pub failed: usize,
    /// Checks skipped.
    pub skipped: usize,
}

/// The settings the run used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SettingsReport {
    /// Files created and held open.
    pub files: usize,
    /// How long counts were allowed to settle, in milliseconds.
    pub settle_ms: u64,
    /// Whether global counts had to move by exactly our files.
    pub exact_counts: bool,
    /// Whether the crypto scenarios were asked for.
    pub crypto: bool,
}

/// A selftest run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// The companion's version.
    pub tool_version: &'static str,
    /// pass, fail or cannot-run.
    pub outcome: Outcome,
    /// The process exit code that goes with `outcome`: 0, 1 or 2.
    pub exit_code: u8,
    /// The process that opened the files and asked the driver.
    pub pid: u32,
    /// The settings.
    pub settings: SettingsReport,
    /// The scratch directory as the driver names it.
    pub scratch: Option<String>,
    /// Filter Manager's view of ctxguard, when it could be asked.
    pub driver: Option<DriverPresence>,
    /// The driver's Hello, when the port answered.
    pub hello: Option<Hello>,
    /// GetStats before any file was opened.
    pub baseline: Option<Stats>,
    /// GetStats at the end.
    #[serde(rename = "final")]
    pub final_stats: Option<Stats>,
    /// Every check, in run order.
    pub checks: Vec<Check>,
    /// The crypto scenarios' results, when they ran.
    pub crypto: Option<CryptoSummary>,
    /// Counts per status.
    pub summary: Summary,
    /// What stopped the run early, if anything.
    pub error: Option<String>,
}

impl Report {
    pub(super) fn new(pid: u32, settings: &Settings, crypto: bool) -> Self {
        Self {
            schema: SCHEMA,
            tool_version: env!("CARGO_PKG_VERSION"),
            outcome: Outcome::CannotRun,
            exit_code: 2,
            pid,
            settings: SettingsReport {
                files: settings.files,
                settle_ms: u64::try_from(settings.settle.as_millis()).unwrap_or(u64::MAX),
                exact_counts: settings.exact_counts,
                crypto,
            },
            scratch: None,
            driver: None,
            hello: None,
            baseline: None,
            final_stats: None,
            checks: Vec::new(),
            crypto: None,
            summary: Summary::default(),
            error: None,
        }
    }

    /// Stores the checks and derives the summary, outcome and exit code.
    pub(super) fn finish(mut self, checks: Vec<super::Check>, cannot_run: bool) -> Self {
        let count = |status| checks.iter().filter(|check| check.status == status).count();
        self.summary =
            Summary { passed: count(CheckStatus::Pass), failed: count(CheckStatus::Fail), skipped: count(CheckStatus::Skip) };
        self.checks = checks;
        self.outcome = if cannot_run {
            Outcome::CannotRun
        } else if self.summary.failed > 0 {
            Outcome::Fail
        } else {
            Outcome::Pass
        };
        self.exit_code = self.outcome.exit_code();
        self
    }

    /// The report as pretty-printed JSON.
    ///
    /// # Errors
    /// Serialization errors (none expected: every field is plain data).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The human summary: one line per check and the verdict.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "ctxguard selftest {} (pid {})", self.tool_version, self.pid);
        if let Some(scratch) = &self.scratch {
            let _ = writeln!(out, "scratch directory: {scratch}");
        }
        let width = self.checks.iter().map(|check| check.name.len()).max().unwrap_or(0);
        for check in &self.checks {
            let _ = writeln!(out, "{:<4}  {:<width$}  {}", check.status.as_str(), check.name, check.detail);
        }
        if let Some(crypto) = &self.crypto {
            for scenario in &crypto.scenarios {
                let left =
                    scenario.left_open.as_ref().map_or("not correlated".to_owned(), |left| format!("{} left open", left.len()));
                let _ = writeln!(out, "      crypto {:<4} {} ({left})", scenario.verdict, scenario.name);
            }
        }
        if let Some(error) = &self.error {
            let _ = writeln!(out, "stopped: {error}");
        }
        let verdict = match self.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::CannotRun => "CANNOT RUN",
        };
        let _ = writeln!(
            out,
            "result: {verdict} ({} passed, {} failed, {} skipped; exit {})",
            self.summary.passed, self.summary.failed, self.summary.skipped, self.exit_code
        );
        out
    }
}

impl Outcome {
    /// 0, 1 or 2.
    #[must_use]
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Pass => 0,
            Self::Fail => 1,
            Self::CannotRun => 2,
        }
    }
}
