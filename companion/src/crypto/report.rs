//! The report of a `ctxguard crypto` run: its JSON form (schema `ctxguard.crypto/1`, documented
//! in companion/README.md) and its text form.
//!
//! Field names and verdict spellings are part of the stable schema: add fields, never rename.

use std::fmt::Write as _;

use serde::Serialize;

/// Schema identifier written into every JSON report; bump only on an incompatible change.
pub const SCHEMA: &str = "ctxguard.crypto/1";

/// How an observed behaviour compares with the documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Every step returned what the documentation says.
    #[serde(rename = "PASS")]
    Pass,
    /// At least one step returned something the documentation does not say.
    #[serde(rename = "DIFF")]
    Diff,
    /// The scenario did not run here; `skip_reason` says why.
    #[serde(rename = "SKIP")]
    Skip,
}

impl Verdict {
    /// The spelling used in JSON, text output and the conformance data.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Diff => "DIFF",
            Verdict::Skip => "SKIP",
        }
    }
}

/// One API call (or one observed fact) of a scenario, with its raw result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The call as written in the scenario, e.g. `CryptReleaseContext(h, 1)`.
    pub call: String,
    /// What the documentation says it returns.
    pub expected: String,
    /// What it returned, rendered (`TRUE`, `FALSE`, `0x80090009`, a handle, a count).
    pub returned: String,
    /// `GetLastError()` right after the call, for BOOL/handle APIs that failed; `None` otherwise.
    pub last_error: Option<u32>,
    /// Whether `returned` (and `last_error`) agree with `expected`.
    pub matches: bool,
}

impl Step {
    /// The observed result in one line, e.g. `FALSE, GetLastError 0x80090009`.
    pub fn observed(&self) -> String {
        match self.last_error {
            Some(code) => format!("{}, GetLastError {code:#010x}", self.returned),
            None => self.returned.clone(),
        }
    }
}

/// The outcome of one pass of one scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// PASS, DIFF or SKIP.
    pub verdict: Verdict,
    /// Why the scenario was skipped (SKIP only).
    pub skip_reason: Option<String>,
    /// Why the scenario stopped before its last step (a failed prerequisite), if it did.
    pub stopped: Option<String>,
    /// Every call made, in order.
    pub steps: Vec<Step>,
}

impl Outcome {
    /// A skipped scenario with the reason shown to the user.
    pub fn skip(reason: impl Into<String>) -> Self {
        Outcome { verdict: Verdict::Skip, skip_reason: Some(reason.into()), stopped: None, steps: Vec::new() }
    }

    /// A summary of what was observed: the differing steps, or that all matched.
    pub fn observed_summary(&self) -> String {
        if let Some(reason) = &self.skip_reason {
            return format!("skipped: {reason}");
        }
        let differing: Vec<String> =
            self.steps.iter().filter(|s| !s.matches).map(|s| format!("{} → {}", s.call, s.observed())).collect();
        let mut summary =
            if differing.is_empty() { "as documented".to_owned() } else { differing.join("; ") };
        if let Some(stopped) = &self.stopped {
            let _ = write!(summary, " (stopped: {stopped})");
        }
        summary
    }
}

/// The process's own kernel handles around the second pass of a scenario.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HandleAccounting {
    /// Own entries in SystemExtendedHandleInformation before the second pass.
    pub before: Option<u64>,
    /// Own entries after the second pass.
    pub after: Option<u64>,
    /// `after - before`; a positive value is a handle the scenario left open.
    pub delta: Option<i64>,
    /// GetProcessHandleCount before the second pass (0 under Wine, where it does not work).
    pub process_handle_count_before: Option<u32>,
    /// GetProcessHandleCount after the second pass.
    pub process_handle_count_after: Option<u32>,
    /// Why the kernel handle count is missing, if it is.
    pub error: Option<String>,
}

/// One scenario's entry in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScenarioReport {
    /// Stable scenario name (the `--scenario` value).
    pub name: String,
    /// The documented behaviour the scenario checks.
    pub documented: String,
    /// Verdict of the first pass.
    pub verdict: Verdict,
    /// Verdict of the second pass (run for leak accounting); differs only if the API is unstable.
    pub second_pass_verdict: Verdict,
    /// Why the scenario was skipped (SKIP only).
    pub skip_reason: Option<String>,
    /// One-line summary of what the first pass observed.
    pub observed: String,
    /// Every call of the first pass with its raw result.
    pub steps: Vec<Step>,
    /// Kernel handle counts around the second pass.
    pub handles: HandleAccounting,
    /// Files the driver saw still open after the second pass that were not open before it;
    /// `None` when correlation did not run.
    pub left_open: Option<Vec<String>>,
}

/// Where the report was produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Platform {
    /// `std::env::consts::OS` of the build (always `windows` for a real run).
    pub os: String,
    /// `ntdll!wine_get_version()` when running under Wine.
    pub wine_version: Option<String>,
}

/// Options the run was made with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunOptions {
    /// Whether checks that pass freed handles to the API were enabled.
    pub unsafe_stale_checks: bool,
    /// The scenarios run, in order.
    pub scenarios: Vec<String>,
}

/// Whether driver correlation ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Correlation {
    /// `ran` or `skipped`.
    pub status: String,
    /// Why it was skipped, or which locations were watched.
    pub detail: String,
}

/// Verdict counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Scenarios with verdict PASS.
    pub pass: usize,
    /// Scenarios with verdict DIFF.
    pub diff: usize,
    /// Scenarios with verdict SKIP.
    pub skip: usize,
    /// Scenarios whose second pass left kernel handles open (delta > 0) or files open.
    pub leaking: usize,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// The companion's version.
    pub tool_version: &'static str,
    /// Where it ran.
    pub platform: Platform,
    /// How it ran.
    pub options: RunOptions,
    /// Driver correlation status.
    pub correlation: Correlation,
    /// One entry per scenario, in run order.
    pub scenarios: Vec<ScenarioReport>,
    /// Verdict counts.
    pub summary: Summary,
}

impl Report {
    /// Counts the verdicts and leaks of `scenarios` into `summary`.
    pub fn summarize(scenarios: &[ScenarioReport]) -> Summary {
        let mut summary = Summary::default();
        for s in scenarios {
            match s.verdict {
                Verdict::Pass => summary.pass += 1,
                Verdict::Diff => summary.diff += 1,
                Verdict::Skip => summary.skip += 1,
            }
            let kernel_leak = s.handles.delta.is_some_and(|d| d > 0);
            let file_leak = s.left_open.as_ref().is_some_and(|l| !l.is_empty());
            if kernel_leak || file_leak {
                summary.leaking += 1;
            }
        }
        summary
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let wine = self.platform.wine_version.as_deref().map_or(String::new(), |v| format!(" under Wine {v}"));
        let _ = writeln!(out, "ctxguard crypto {}{wine}", self.tool_version);
        let _ = writeln!(out, "correlation: {} ({})", self.correlation.status, self.correlation.detail);
        for s in &self.scenarios {
            let _ = writeln!(out, "\n[{}] {}", s.verdict.as_str(), s.name);
            let _ = writeln!(out, "  documented: {}", s.documented);
            let _ = writeln!(out, "  observed:   {}", s.observed);
            for step in &s.steps {
                let mark = if step.matches { "ok  " } else { "DIFF" };
                let _ = writeln!(out, "    {mark} {} → {} (expected {})", step.call, step.observed(), step.expected);
            }
            let h = &s.handles;
            match (h.before, h.after, h.delta) {
                (Some(b), Some(a), Some(d)) => {
                    let _ = writeln!(out, "  kernel handles (2nd pass): {b} → {a} (delta {d:+})");
                }
                _ => {
                    let _ = writeln!(out, "  kernel handles: not counted ({})", h.error.as_deref().unwrap_or("unknown"));
                }
            }
            if let (Some(b), Some(a)) = (h.process_handle_count_before, h.process_handle_count_after) {
                let _ = writeln!(out, "  GetProcessHandleCount (2nd pass): {b} → {a}");
            }
            if let Some(open) = &s.left_open {
                for path in open {
                    let _ = writeln!(out, "  LEFT OPEN: {path}");
                }
            }
        }
        let m = &self.summary;
        let _ = writeln!(out, "\n{} PASS, {} DIFF, {} SKIP, {} leaking", m.pass, m.diff, m.skip, m.leaking);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(matches: bool, returned: &str, last_error: Option<u32>) -> Step {
        Step { call: "CertCloseStore(h, CHECK)".into(), expected: "TRUE".into(), returned: returned.into(), last_error, matches }
    }

    #[test]
    fn observed_names_only_the_differing_calls() {
        let outcome = Outcome {
            verdict: Verdict::Diff,
            skip_reason: None,
            stopped: Some("CertOpenStore failed".into()),
            steps: vec![step(true, "TRUE", None), step(false, "FALSE", Some(0x8009_200F))],
        };
        assert_eq!(
            outcome.observed_summary(),
            "CertCloseStore(h, CHECK) → FALSE, GetLastError 0x8009200f (stopped: CertOpenStore failed)"
        );
        assert_eq!(Outcome::skip("Wine stub").observed_summary(), "skipped: Wine stub");
    }

    #[test]
    fn summary_counts_verdicts_and_leaks() {
        let report = |verdict, delta, left_open: Option<Vec<String>>| ScenarioReport {
            name: "s".into(),
            documented: "d".into(),
            verdict,
            second_pass_verdict: verdict,
            skip_reason: None,
            observed: String::new(),
            steps: Vec::new(),
            handles: HandleAccounting { delta, ..HandleAccounting::default() },
            left_open,
        };
        let summary = Report::summarize(&[
            report(Verdict::Pass, Some(0), None),
            report(Verdict::Diff, Some(2), None),
            report(Verdict::Skip, None, Some(vec!["C:\\x".into()])),
            report(Verdict::Pass, Some(-1), Some(Vec::new())),
        ]);
        assert_eq!(summary, Summary { pass: 2, diff: 1, skip: 1, leaking: 2 });
    }

    #[test]
    fn verdicts_serialize_as_their_documented_spellings() {
        let json = serde_json::to_string(&[Verdict::Pass, Verdict::Diff, Verdict::Skip]).expect("serialize");
        assert_eq!(json, r#"["PASS","DIFF","SKIP"]"#);
    }
}
