//! Runs scenarios twice each, counts the process's kernel handles around the second pass and
//! asks the driver (through a [`HandleWitness`]) which files were left open.
//!
//! The first pass gives the verdict; one-time caches (provider DLL loads, registry keys a
//! provider keeps open for the process) settle in it, so the second pass's handle delta is the
//! scenario's own leak.

use super::report::{Correlation, Evidence, HandleAccounting, Outcome, ScenarioReport};
use super::witness::{HandleWitness, WitnessError, left_open};

/// One named check.
pub trait Scenario {
    /// Stable name (the `--scenario` value).
    fn name(&self) -> &'static str;
    /// The behaviour it checks (Windows' recorded behaviour where there is a record).
    fn documented(&self) -> &'static str;
    /// Runs one pass; `pass` is 1 or 2 (scenarios use it to make names unique per pass).
    /// Its verdict is the raw comparison with the expectations (PASS, DIFF or SKIP); the
    /// runner turns it into the reported verdict with [`Scenario::evidence`].
    fn run(&self, pass: u32) -> Outcome;
    /// The documentation sentence and the Windows-run assertion the expectation rests on.
    fn source(&self) -> &'static str {
        ""
    }
    /// Which expectations have Windows-run evidence.
    fn evidence(&self) -> Evidence {
        Evidence::Windows
    }
    /// What the documentation says and what Windows is recorded to do, where they disagree.
    fn doc_vs_windows(&self) -> Option<(&'static str, &'static str)> {
        None
    }
}

/// Counts the current process's handles.
pub trait HandleCounter {
    /// Own entries of the system handle table (works under Wine).
    fn kernel_handles(&self) -> Result<u64, String>;
    /// GetProcessHandleCount, where the platform has it.
    fn process_handle_count(&self) -> Option<u32>;
}

/// Where the witness looks, and for which process.
pub struct Watch<'a> {
    /// The process whose open files are listed (the companion's own PID).
    pub pid: u32,
    /// Path prefixes: key-container and certificate-store locations, the scratch directory.
    pub under: &'a [&'a str],
}

/// Runs every scenario and returns the correlation status and one report per scenario.
pub fn run_scenarios(
    scenarios: &[&dyn Scenario],
    counter: &dyn HandleCounter,
    witness: &dyn HandleWitness,
    watch: &Watch<'_>,
) -> (Correlation, Vec<ScenarioReport>) {
    // Probe once up front: an absent driver is reported once and not asked again.
    let mut correlation = match witness.open_files(watch.pid, watch.under) {
        Ok(_) => Correlation { status: "ran".to_owned(), detail: format!("watched: {}", watch.under.join("; ")) },
        Err(err) => Correlation { status: "skipped".to_owned(), detail: err.to_string() },
    };
    let correlate = correlation.status == "ran";

    let mut reports = Vec::with_capacity(scenarios.len());
    for scenario in scenarios {
        let first = scenario.run(1);

        let witness_before = correlate.then(|| witness.open_files(watch.pid, watch.under));
        let kernel_before = counter.kernel_handles();
        let count_before = counter.process_handle_count();
        let second = scenario.run(2);
        let kernel_after = counter.kernel_handles();
        let count_after = counter.process_handle_count();
        let witness_after = correlate.then(|| witness.open_files(watch.pid, watch.under));

        let handles = accounting(kernel_before, kernel_after, count_before, count_after);
        let left = match (witness_before, witness_after) {
            (Some(Ok(before)), Some(Ok(after))) => Some(left_open(&before, &after)),
            (Some(Err(err)), _) | (_, Some(Err(err))) => {
                note_failure(&mut correlation, scenario.name(), &err);
                None
            }
            _ => None,
        };

        let discrepancy = scenario.doc_vs_windows();
        let (verdict, unverified_calls) = scenario.evidence().classify(&first, discrepancy.is_some());
        let (second_pass_verdict, _) = scenario.evidence().classify(&second, discrepancy.is_some());
        reports.push(ScenarioReport {
            name: scenario.name().to_owned(),
            documented: scenario.documented().to_owned(),
            source: scenario.source().to_owned(),
            doc_says: discrepancy.map(|(doc, _)| doc.to_owned()),
            windows_does: discrepancy.map(|(_, windows)| windows.to_owned()),
            unverified_calls,
            verdict,
            second_pass_verdict,
            skip_reason: first.skip_reason.clone(),
            observed: first.observed_summary(),
            steps: first.steps,
            handles,
            left_open: left,
        });
    }
    (correlation, reports)
}

fn accounting(
    before: Result<u64, String>,
    after: Result<u64, String>,
    count_before: Option<u32>,
    count_after: Option<u32>,
) -> HandleAccounting {
    let mut h = HandleAccounting {
        process_handle_count_before: count_before,
        process_handle_count_after: count_after,
        ..HandleAccounting::default()
    };
    match (before, after) {
        (Ok(b), Ok(a)) => {
            h.before = Some(b);
            h.after = Some(a);
            h.delta = Some(i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX));
        }
        (Err(e), _) | (_, Err(e)) => h.error = Some(e),
    }
    h
}

fn note_failure(correlation: &mut Correlation, scenario: &str, err: &WitnessError) {
    "partial".clone_into(&mut correlation.status);
    correlation.detail = format!("{}; {scenario}: {err}", correlation.detail);
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;
    use crate::crypto::report::{Step, Verdict};
    use crate::crypto::witness::DriverAbsent;

    /// A stand-in for the driver: the files "open" are whatever the scenarios put there.
    #[derive(Default)]
    struct FakeWitness {
        open: RefCell<Vec<String>>,
        calls: Cell<u32>,
    }

    impl HandleWitness for FakeWitness {
        fn open_files(&self, pid: u32, under: &[&str]) -> Result<Vec<String>, WitnessError> {
            assert_eq!(pid, 77);
            self.calls.set(self.calls.get() + 1);
            let open = self.open.borrow();
            Ok(open
                .iter()
                .filter(|p| under.iter().any(|u| p.to_ascii_lowercase().starts_with(&u.to_ascii_lowercase())))
                .cloned()
                .collect())
        }
    }

    /// A scenario that opens a file on each pass and closes it only if `closes` is set.
    struct FileScenario<'w> {
        name: &'static str,
        witness: &'w FakeWitness,
        closes: bool,
    }

    impl Scenario for FileScenario<'_> {
        fn name(&self) -> &'static str {
            self.name
        }
        fn documented(&self) -> &'static str {
            "CertCloseStore closes the file store's file"
        }
        fn run(&self, pass: u32) -> Outcome {
            let path = format!("C:\\scratch\\{}-{pass}.sst", self.name);
            self.witness.open.borrow_mut().push(path.clone());
            if self.closes {
                self.witness.open.borrow_mut().retain(|p| *p != path);
            }
            let step = Step {
                call: "CertCloseStore(h, 0)".into(),
                expected: "TRUE".into(),
                returned: "TRUE".into(),
                last_error: None,
                matches: true,
            };
            Outcome { verdict: Verdict::Pass, skip_reason: None, stopped: None, steps: vec![step] }
        }
    }

    /// Counts kernel handles as the number of files the fake witness holds.
    struct FakeCounter<'w>(&'w FakeWitness);

    impl HandleCounter for FakeCounter<'_> {
        fn kernel_handles(&self) -> Result<u64, String> {
            Ok(self.0.open.borrow().len() as u64)
        }
        fn process_handle_count(&self) -> Option<u32> {
            None
        }
    }

    #[test]
    fn a_file_left_open_by_the_second_pass_is_reported() {
        let witness = FakeWitness::default();
        // Open before anything runs and never closed by a scenario: must not be blamed on one.
        witness.open.borrow_mut().push("C:\\scratch\\preexisting.sst".to_owned());
        let leaky = FileScenario { name: "leaky", witness: &witness, closes: false };
        let tidy = FileScenario { name: "tidy", witness: &witness, closes: true };
        let scenarios: [&dyn Scenario; 2] = [&leaky, &tidy];
        let watch = Watch { pid: 77, under: &["C:\\scratch\\"] };

        let (correlation, reports) = run_scenarios(&scenarios, &FakeCounter(&witness), &witness, &watch);

        assert_eq!(correlation.status, "ran");
        assert_eq!(reports[0].left_open.as_deref(), Some(&["C:\\scratch\\leaky-2.sst".to_owned()][..]));
        assert_eq!(reports[0].handles.delta, Some(1));
        // The tidy scenario runs after the leak: the leaky file is open before and after it.
        assert_eq!(reports[1].left_open.as_deref(), Some(&[][..]));
        assert_eq!(reports[1].handles.delta, Some(0));
        // One probe plus a before/after pair per scenario.
        assert_eq!(witness.calls.get(), 5);
    }

    #[test]
    fn an_absent_driver_skips_correlation_and_runs_the_scenarios() {
        let witness = FakeWitness::default();
        let leaky = FileScenario { name: "leaky", witness: &witness, closes: false };
        let scenarios: [&dyn Scenario; 1] = [&leaky];
        let watch = Watch { pid: 77, under: &["C:\\scratch\\"] };

        let (correlation, reports) = run_scenarios(&scenarios, &FakeCounter(&witness), &DriverAbsent::default(), &watch);

        assert_eq!(correlation.status, "skipped");
        assert!(correlation.detail.starts_with("driver not reachable — correlation skipped"));
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].verdict, Verdict::Pass);
        assert_eq!(reports[0].left_open, None);
        // Handle accounting still runs without the driver.
        assert_eq!(reports[0].handles.delta, Some(1));
    }
}
