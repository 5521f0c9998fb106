//! The crypto runner's results as the selftest judges them. Not part of the library: the crypto
//! module lives in the binary, so main.rs and tests/selftest.rs include this file with `#[path]`
//! beside their `crypto` module.

use ctxguard_companion::selftest::{CryptoScenario, CryptoSummary};

use crate::crypto::report::{Correlation, ScenarioReport};

/// The selftest's view of a crypto run: correlation, and per scenario the verdict, the files
/// the driver saw left open and the kernel-handle delta. `report` is the whole
/// `ctxguard.crypto/2` report when there is one.
pub fn summary(correlation: &Correlation, reports: &[ScenarioReport], report: Option<serde_json::Value>) -> CryptoSummary {
    CryptoSummary {
        correlation: correlation.status.clone(),
        correlation_detail: correlation.detail.clone(),
        scenarios: reports
            .iter()
            .map(|scenario| CryptoScenario {
                name: scenario.name.clone(),
                verdict: scenario.verdict.as_str().to_owned(),
                left_open: scenario.left_open.clone(),
                handle_delta: scenario.handles.delta,
            })
            .collect(),
        report,
    }
}
