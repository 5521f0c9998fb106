//! `ctxguard crypto`: checks that CryptReleaseContext, CertCloseStore and NCrypt release their
//! handles as Windows does (its recorded behaviour, else its documentation), scenario by
//! scenario, with a verdict for each (PASS, DIFF, DOC, UNVERIFIED, SKIP).
//!
//! Platform-neutral parts (catalog, report, runner, witness) build and are unit-tested on any
//! host; the scenarios themselves (`win`) exist only on Windows.

// The report/runner/witness types are used by the Windows scenarios and by unit tests; on other
// hosts the binary only needs the catalog, so unused-item warnings there are expected.
#![cfg_attr(not(windows), allow(dead_code))]

pub mod catalog;
pub mod handle_table;
pub mod report;
pub mod runner;
pub mod witness;

#[cfg(windows)]
mod win;

use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, Command};

use witness::HandleWitness;

/// The subcommand's name.
pub const NAME: &str = "crypto";

/// Arguments of `ctxguard crypto`.
#[derive(Debug, Default)]
pub struct CryptoArgs {
    /// `--scenario NAME` (repeatable): run only these; empty means every scenario.
    pub scenarios: Vec<String>,
    /// `--json`: print the report as JSON (schema `ctxguard.crypto/2`, see companion/README.md).
    pub json: bool,
    /// `--unsafe-stale-checks`: also pass already-released handles to the API.
    pub unsafe_stale_checks: bool,
    /// `--list`: list the scenarios and their documented behaviour, then exit.
    pub list: bool,
}

/// The `crypto` subcommand's command line.
pub fn command() -> Command {
    Command::new(NAME)
        .about("Exercise crypto handle release (CryptoAPI, certificate stores, NCrypt) and report verdicts")
        .arg(
            Arg::new("scenario")
                .long("scenario")
                .value_name("NAME")
                .action(ArgAction::Append)
                .value_parser(parse_scenario_name)
                .help("Run only this scenario (repeatable); default: every scenario. --list shows the names"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print the report as JSON (schema ctxguard.crypto/2, see companion/README.md)"),
        )
        .arg(
            Arg::new("unsafe-stale-checks")
                .long("unsafe-stale-checks")
                .action(ArgAction::SetTrue)
                .help("Also run checks that pass already-released handles to the API (reads freed memory)"),
        )
        .arg(
            Arg::new("list")
                .long("list")
                .action(ArgAction::SetTrue)
                .help("List the scenarios, their expected behaviour and its source, then exit"),
        )
}

impl CryptoArgs {
    /// The arguments from the `crypto` subcommand's matches.
    pub fn from_matches(matches: &ArgMatches) -> Self {
        CryptoArgs {
            scenarios: matches.get_many::<String>("scenario").map(|v| v.cloned().collect()).unwrap_or_default(),
            json: matches.get_flag("json"),
            unsafe_stale_checks: matches.get_flag("unsafe-stale-checks"),
            list: matches.get_flag("list"),
        }
    }
}

/// The scenarios `args` asks for, in catalog order when none is named: what `ctxguard crypto`
/// and `ctxguard selftest` (which passes the defaults) run.
pub fn selected(args: &CryptoArgs) -> Result<Vec<&'static catalog::ScenarioSpec>, String> {
    if args.scenarios.is_empty() {
        return Ok(catalog::SCENARIOS.iter().collect());
    }
    args.scenarios
        .iter()
        .map(|name| catalog::find(name).ok_or_else(|| format!("unknown scenario {name}; valid: {}", catalog::names())))
        .collect()
}

fn parse_scenario_name(name: &str) -> Result<String, String> {
    match catalog::find(name) {
        Some(spec) => Ok(spec.name.to_owned()),
        None => Err(format!("unknown scenario; valid names: {}", catalog::names())),
    }
}

/// Runs `ctxguard crypto`, asking `witness` which files the process holds open around each
/// scenario. Exit status: 0 when the report was produced (whatever the verdicts), 1 when the
/// run could not do what was asked (not Windows, no scratch directory, output failed).
pub fn run_with_witness(args: &CryptoArgs, witness: &dyn HandleWitness) -> ExitCode {
    if args.list {
        for spec in catalog::SCENARIOS {
            let opt_in = if spec.stale { " [--unsafe-stale-checks]" } else { "" };
            println!("{}{opt_in}\n    {}\n    source: {}", spec.name, spec.documented, spec.source);
            if let Some((doc, windows)) = spec.doc_vs_windows {
                println!("    doc says: {doc}\n    Windows does: {windows}");
            }
        }
        return ExitCode::SUCCESS;
    }
    #[cfg(windows)]
    {
        match win::run(args, witness) {
            Ok(report) => {
                let text = if args.json {
                    match report.to_json() {
                        Ok(json) => json,
                        Err(err) => {
                            eprintln!("ctxguard crypto: could not serialize the report: {err}");
                            return ExitCode::FAILURE;
                        }
                    }
                } else {
                    report.to_text()
                };
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("ctxguard crypto: {err}");
                ExitCode::FAILURE
            }
        }
    }
    #[cfg(not(windows))]
    {
        let _ = witness;
        eprintln!(
            "ctxguard crypto: the scenarios call Windows APIs (CryptoAPI, crypt32, NCrypt) and cannot run on {}; \
             use the Windows build (x86_64-pc-windows-gnu also runs under Wine)",
            std::env::consts::OS
        );
        ExitCode::FAILURE
    }
}

/// The report of the selected scenarios with `witness`, for `ctxguard selftest` (which judges
/// it); an error where the scenarios cannot run (not Windows, no scratch directory).
pub fn run_report(args: &CryptoArgs, witness: &dyn HandleWitness) -> Result<report::Report, String> {
    #[cfg(windows)]
    {
        win::run(args, witness)
    }
    #[cfg(not(windows))]
    {
        let _ = (args, witness);
        Err(format!("the crypto scenarios call Windows APIs and cannot run on {}", std::env::consts::OS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_parsed() {
        let m = command()
            .try_get_matches_from(["crypto", "--scenario", "close-force", "--scenario", "verify-context", "--json"])
            .expect("valid arguments");
        let args = CryptoArgs::from_matches(&m);
        assert_eq!(args.scenarios, ["close-force", "verify-context"]);
        assert!(args.json && !args.unsafe_stale_checks && !args.list);
        let err = command().try_get_matches_from(["crypto", "--scenario", "nope"]).unwrap_err();
        assert!(err.to_string().contains("valid names: verify-context"), "{err}");
    }

    #[test]
    fn the_defaults_the_selftest_passes_run_every_scenario_including_the_release_rules() {
        let names: Vec<&str> = selected(&CryptoArgs::default()).expect("defaults").iter().map(|s| s.name).collect();
        assert_eq!(names.len(), catalog::SCENARIOS.len());
        for rule in [
            "close-check-empty",
            "close-check-duplicate-last",
            "close-check-held-crl",
            "close-check-held-ctl",
            "close-implicit-store",
            "close-null-store",
            "release-with-key-and-hash-alive",
            "delete-keyset-handle",
            "ncrypt-finalize-twice",
            "ncrypt-free-non-handle",
            "collection-outlives-member",
        ] {
            assert!(names.contains(&rule), "{rule} is not run by default");
            assert!(!catalog::find(rule).expect("in the catalog").stale, "{rule} must run without opt-in");
        }
        let one = CryptoArgs { scenarios: vec!["close-null-store".into()], ..CryptoArgs::default() };
        assert_eq!(selected(&one).expect("known").len(), 1);
        assert!(selected(&CryptoArgs { scenarios: vec!["nope".into()], ..CryptoArgs::default() }).is_err());
    }

    #[test]
    fn unknown_scenario_names_list_the_valid_ones() {
        let err = parse_scenario_name("no-such-scenario").unwrap_err();
        assert!(err.contains("verify-context") && err.contains("ncrypt-notify-change-key"), "{err}");
        assert_eq!(parse_scenario_name("close-force").as_deref(), Ok("close-force"));
    }
}
