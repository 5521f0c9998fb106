//! `ctxguard selftest`'s command line (clap's builder API, as the rest of the companion) and
//! output: the JSON report or the human summary, an optional report file, the exit code.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::{DriverProbe, Report, Settings};

/// The subcommand's name.
pub const NAME: &str = "selftest";

/// Arguments of `ctxguard selftest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelftestArgs {
    /// Print the JSON report instead of the summary.
    pub json: bool,
    /// Also write the JSON report to this file.
    pub report: Option<PathBuf>,
    /// Files to create and hold open.
    pub files: usize,
    /// Milliseconds counts may take to settle.
    pub settle_ms: u64,
    /// Do not run the crypto scenarios.
    pub skip_crypto: bool,
    /// Parent of the scratch directory (default: the temp directory).
    pub dir: Option<PathBuf>,
}

/// The `selftest` subcommand.
#[must_use]
pub fn command() -> Command {
    Command::new(NAME)
        .about("Check the loaded driver end to end (Filter Manager, port, stats, handles, crypto correlation); exit 0 pass, 1 fail, 2 cannot run")
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print the JSON report (schema ctxguard.selftest/1, see docs/vm.md)"))
        .arg(
            Arg::new("report")
                .long("report")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Also write the JSON report to FILE"),
        )
        .arg(
            Arg::new("files")
                .long("files")
                .value_name("N")
                .default_value("8")
                .value_parser(clap::value_parser!(u16).range(1..=1000))
                .help("Files to create and hold open (1..=1000)"),
        )
        .arg(
            Arg::new("settle-ms")
                .long("settle-ms")
                .value_name("MS")
                .default_value("15000")
                .value_parser(clap::value_parser!(u64).range(0..=600_000))
                .help("How long counts may take to return to the baseline after a close or delete"),
        )
        .arg(Arg::new("skip-crypto").long("skip-crypto").action(ArgAction::SetTrue).help("Do not run the crypto scenarios"))
        .arg(
            Arg::new("dir")
                .long("dir")
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Create the scratch directory under DIR (default: the temp directory); it must be on a volume ctxguard is attached to"),
        )
}

impl SelftestArgs {
    /// The arguments from the subcommand's matches.
    #[must_use]
    pub fn from_matches(matches: &ArgMatches) -> Self {
        Self {
            json: matches.get_flag("json"),
            report: matches.get_one::<PathBuf>("report").cloned(),
            files: matches.get_one::<u16>("files").map_or(8, |files| usize::from(*files)),
            settle_ms: matches.get_one::<u64>("settle-ms").copied().unwrap_or(15_000),
            skip_crypto: matches.get_flag("skip-crypto"),
            dir: matches.get_one::<PathBuf>("dir").cloned(),
        }
    }

    /// The run's settings (global counts are lower bounds: a real system has other I/O).
    #[must_use]
    pub fn settings(&self) -> Settings {
        Settings { files: self.files, settle: Duration::from_millis(self.settle_ms), exact_counts: false }
    }
}

/// Filter Manager's probe of this platform.
#[must_use]
pub fn system_probe() -> Box<dyn DriverProbe> {
    #[cfg(windows)]
    {
        Box::new(super::windows::SystemProbe)
    }
    #[cfg(not(windows))]
    {
        Box::new(|| -> Result<super::DriverPresence, String> { Err("Filter Manager exists only on Windows".into()) })
    }
}

/// Writes the report (JSON or summary to `out`, JSON to `--report`) and returns the exit
/// code: the report's, or 2 when the report file cannot be written.
pub fn emit(report: &Report, args: &SelftestArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let json = match report.to_json() {
        Ok(json) => json,
        Err(error) => {
            let _ = writeln!(err, "ctxguard selftest: cannot serialize the report: {error}");
            return 2;
        }
    };
    let printed = if args.json { writeln!(out, "{json}") } else { write!(out, "{}", report.to_text()) };
    if let Err(error) = printed {
        let _ = writeln!(err, "ctxguard selftest: cannot write the output: {error}");
        return 2;
    }
    if let Some(path) = &args.report
        && let Err(error) = std::fs::write(path, format!("{json}\n"))
    {
        let _ = writeln!(err, "ctxguard selftest: cannot write the report to {}: {error}", path.display());
        return 2;
    }
    // The summary already says what stopped the run; JSON on stdout gets it on stderr too.
    if args.json
        && report.exit_code != 0
        && let Some(error) = &report.error
    {
        let _ = writeln!(err, "ctxguard selftest: {error}");
    }
    report.exit_code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_parsed_and_bounded() {
        let matches = command()
            .try_get_matches_from([
                "selftest",
                "--json",
                "--files",
                "3",
                "--settle-ms",
                "0",
                "--skip-crypto",
                "--report",
                "r.json",
            ])
            .unwrap();
        let args = SelftestArgs::from_matches(&matches);
        assert_eq!((args.json, args.files, args.settle_ms, args.skip_crypto), (true, 3, 0, true));
        assert_eq!(args.report, Some(PathBuf::from("r.json")));
        let defaults = SelftestArgs::from_matches(&command().try_get_matches_from(["selftest"]).unwrap());
        assert_eq!((defaults.files, defaults.settle_ms, defaults.json), (8, 15_000, false));
        assert!(command().try_get_matches_from(["selftest", "--files", "0"]).is_err());
        assert!(command().try_get_matches_from(["selftest", "--files", "x"]).is_err());
        command().debug_assert();
    }
}
