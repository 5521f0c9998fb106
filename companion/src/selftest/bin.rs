//! `ctxguard selftest` in the binary: the platform's connector, probe and files, and the crypto
//! scenarios (which live in the binary) with the driver as witness. Included by main.rs.

use std::process::ExitCode;

use ctxguard_companion::port::Connector;
use ctxguard_companion::port::cli::system_connector;
use ctxguard_companion::selftest::cli::{SelftestArgs, emit, system_probe};
use ctxguard_companion::selftest::{CryptoSuite, CryptoSummary, Environment, TempDirFileSystem, run};

use crate::crypto::{CryptoArgs, run_report};
use crate::port_witness::PortWitness;
use crate::selftest_crypto::summary;

/// Every crypto scenario (the stale-handle ones excluded), the witness over the selftest's
/// connector.
struct Scenarios;

impl CryptoSuite for Scenarios {
    fn run(&self, connector: &dyn Connector) -> Result<CryptoSummary, String> {
        let witness = PortWitness::connect_or_absent(connector);
        let report = run_report(&CryptoArgs::default(), witness.as_ref())?;
        let json = serde_json::to_value(&report).ok();
        Ok(summary(&report.correlation, &report.scenarios, json))
    }
}

/// Runs the selftest on this machine and prints its report.
pub fn execute(args: &SelftestArgs) -> ExitCode {
    let connector = system_connector();
    let probe = system_probe();
    let mut files = TempDirFileSystem::new(args.dir.clone());
    let crypto = Scenarios;
    let mut environment = Environment {
        connector: connector.as_ref(),
        probe: probe.as_ref(),
        file_system: &mut files,
        crypto: (!args.skip_crypto).then_some(&crypto as &dyn CryptoSuite),
    };
    let report = run(&mut environment, &args.settings());
    let code = emit(&report, args, &mut std::io::stdout().lock(), &mut std::io::stderr().lock());
    ExitCode::from(code)
}
