//! The report of a `ctxguard crypto` run: its JSON form (schema `ctxguard.crypto/2`, documented
//! in companion/README.md) and its text form.
//!
//! Field names and verdict spellings are part of the stable schema: add fields, never rename.

use std::fmt::Write as _;

use serde::Serialize;

/// Schema identifier written into every JSON report; bump only on an incompatible change.
pub const SCHEMA: &str = "ctxguard.crypto/2";

/// How an observed behaviour compares with Windows' recorded behaviour and its documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Every step returned what Windows is recorded to return (Wine's tests, run on Windows).
    #[serde(rename = "PASS")]
    Pass,
    /// At least one step with Windows-run evidence returned something else: this platform
    /// differs from Windows.
    #[serde(rename = "DIFF")]
    Diff,
    /// This platform matches Windows, and Windows differs from its documentation (the
    /// scenario's `doc_says` / `windows_does` say how).
    #[serde(rename = "DOC")]
    Doc,
    /// No Windows-run evidence decides it: the scenario rests on the documentation alone, or
    /// only calls listed in `unverified_calls` (documentation only) differ.
    #[serde(rename = "UNVERIFIED")]
    Unverified,
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
            Verdict::Doc => "DOC",
            Verdict::Unverified => "UNVERIFIED",
            Verdict::Skip => "SKIP",
        }
    }
}

/// What backs a scenario's expectations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// Every checked call has a Windows-run assertion (cited in the scenario's source).
    Windows,
    /// The calls whose name starts with one of these rest on the documentation alone.
    Partial(&'static [&'static str]),
    /// No Windows-run assertion: the expectation is our reading of the documentation.
    DocsOnly,
}

impl Evidence {
    /// Whether the expectation of `call` rests on the documentation alone.
    pub fn docs_only(self, call: &str) -> bool {
        match self {
            Evidence::Windows => false,
            Evidence::Partial(prefixes) => prefixes.iter().any(|p| call.starts_with(p)),
            Evidence::DocsOnly => true,
        }
    }

    /// The verdict of a pass whose raw outcome (PASS/DIFF/SKIP against the expectations) is
    /// `raw`, and the calls of it that rest on the documentation alone. `doc_discrepancy`:
    /// Windows is recorded to differ from its documentation in this scenario.
    pub fn classify(self, raw: &Outcome, doc_discrepancy: bool) -> (Verdict, Vec<String>) {
        if raw.verdict == Verdict::Skip {
            return (Verdict::Skip, Vec::new());
        }
        let unverified: Vec<String> = raw.steps.iter().filter(|s| self.docs_only(&s.call)).map(|s| s.call.clone()).collect();
        let differs_from_windows = raw.steps.iter().any(|s| !s.matches && !self.docs_only(&s.call));
        // A scenario that stopped without a differing step still did not do what Windows does.
        let stopped_silently = raw.stopped.is_some() && raw.steps.iter().all(|s| s.matches);
        let docs_only_differs = raw.steps.iter().any(|s| !s.matches && self.docs_only(&s.call));
        let verdict = if differs_from_windows || stopped_silently {
            Verdict::Diff
        } else if doc_discrepancy {
            Verdict::Doc
        } else if self == Evidence::DocsOnly || docs_only_differs {
            Verdict::Unverified
        } else {
            Verdict::Pass
        };
        (verdict, unverified)
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
        let mut summary = if differing.is_empty() { "as expected".to_owned() } else { differing.join("; ") };
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
    /// The behaviour the scenario checks: Windows' recorded behaviour where Wine's tests
    /// record it, else the documentation's.
    pub documented: String,
    /// Where the expectation comes from: the documentation sentence and the Windows-run
    /// assertion (file and function of Wine's conformance tests), or that there is none.
    pub source: String,
    /// What the documentation says, where Windows is recorded to do otherwise.
    pub doc_says: Option<String>,
    /// What Windows is recorded to do, where that differs from the documentation.
    pub windows_does: Option<String>,
    /// The calls of the first pass whose expectation rests on the documentation alone.
    pub unverified_calls: Vec<String>,
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
    /// Scenarios with verdict DOC.
    pub doc: usize,
    /// Scenarios with verdict UNVERIFIED.
    pub unverified: usize,
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
                Verdict::Doc => summary.doc += 1,
                Verdict::Unverified => summary.unverified += 1,
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
            let _ = writeln!(out, "  expected:   {}", s.documented);
            let _ = writeln!(out, "  source:     {}", s.source);
            if let (Some(doc), Some(windows)) = (&s.doc_says, &s.windows_does) {
                let _ = writeln!(out, "  doc says:   {doc}");
                let _ = writeln!(out, "  Windows does: {windows}");
            }
            if !s.unverified_calls.is_empty() {
                let _ = writeln!(out, "  docs only (no Windows-run evidence): {}", s.unverified_calls.join("; "));
            }
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
        let _ = writeln!(
            out,
            "\n{} PASS, {} DIFF, {} DOC, {} UNVERIFIED, {} SKIP, {} leaking",
            m.pass, m.diff, m.doc, m.unverified, m.skip, m.leaking
        );
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
            source: "src".into(),
            doc_says: None,
            windows_does: None,
            unverified_calls: Vec::new(),
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
            report(Verdict::Doc, Some(0), None),
            report(Verdict::Unverified, Some(0), None),
        ]);
        assert_eq!(summary, Summary { pass: 2, diff: 1, doc: 1, unverified: 1, skip: 1, leaking: 2 });
    }

    #[test]
    fn verdicts_serialize_as_their_documented_spellings() {
        let all = [Verdict::Pass, Verdict::Diff, Verdict::Doc, Verdict::Unverified, Verdict::Skip];
        let json = serde_json::to_string(&all).expect("serialize");
        assert_eq!(json, r#"["PASS","DIFF","DOC","UNVERIFIED","SKIP"]"#);
        assert!(all.iter().all(|v| json.contains(&format!("\"{}\"", v.as_str()))));
    }

    fn raw(steps: Vec<Step>) -> Outcome {
        let verdict = if steps.iter().all(|s| s.matches) { Verdict::Pass } else { Verdict::Diff };
        Outcome { verdict, skip_reason: None, stopped: None, steps }
    }

    fn call(call: &str, matches: bool) -> Step {
        Step { call: call.into(), expected: "TRUE".into(), returned: "TRUE".into(), last_error: None, matches }
    }

    #[test]
    fn a_difference_counts_only_where_windows_is_on_record() {
        let partial = Evidence::Partial(&["CryptContextAddRef"]);
        let backed_differs = raw(vec![call("CryptGenRandom(h)", false), call("CryptContextAddRef(h)", true)]);
        assert_eq!(partial.classify(&backed_differs, false), (Verdict::Diff, vec!["CryptContextAddRef(h)".to_owned()]));
        let docs_only_differs = raw(vec![call("CryptGenRandom(h)", true), call("CryptContextAddRef(h)", false)]);
        assert_eq!(partial.classify(&docs_only_differs, false).0, Verdict::Unverified);
        let all_match = raw(vec![call("CryptGenRandom(h)", true), call("CryptContextAddRef(h)", true)]);
        assert_eq!(partial.classify(&all_match, false), (Verdict::Pass, vec!["CryptContextAddRef(h)".to_owned()]));
        assert_eq!(Evidence::DocsOnly.classify(&raw(vec![call("x", false)]), false).0, Verdict::Unverified);
        assert_eq!(Evidence::DocsOnly.classify(&raw(vec![call("x", true)]), false).0, Verdict::Unverified);
    }

    #[test]
    fn a_match_is_pass_or_doc_and_a_skip_stays_a_skip() {
        let all_match = raw(vec![call("CertCloseStore(h, CHECK)", true)]);
        assert_eq!(Evidence::Windows.classify(&all_match, false), (Verdict::Pass, Vec::new()));
        assert_eq!(Evidence::Windows.classify(&all_match, true).0, Verdict::Doc);
        // A Windows-backed difference outranks the documentation finding.
        assert_eq!(Evidence::Windows.classify(&raw(vec![call("c", false)]), true).0, Verdict::Diff);
        assert_eq!(Evidence::Windows.classify(&Outcome::skip("Wine stub"), true).0, Verdict::Skip);
        let mut stopped = raw(vec![call("c", true)]);
        stopped.stopped = Some("prerequisite".into());
        assert_eq!(Evidence::Windows.classify(&stopped, false).0, Verdict::Diff);
    }
}
