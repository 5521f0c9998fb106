//! The Windows side of `ctxguard crypto`: guards, scenarios, handle counting, Wine detection.
//!
//! Why windows-sys and not the `windows` crate: this is a conformance harness whose output is
//! the exact BOOL, `GetLastError()` and SECURITY_STATUS of each call. windows-sys hands those
//! back untouched; `windows` maps them into `Result<_, Error>` with HRESULTs (0x57 becomes
//! 0x80070057), which would blur the codes being compared with the documentation, and its
//! owned NCrypt handles free on drop even after NCryptDeleteKey already freed them. Neither
//! crate has RAII for HCRYPTPROV or HCERTSTORE, so the guards here are written for the
//! documented semantics (a release that returns FALSE may still have released).

mod check;
mod guards;
mod platform;
mod scenarios;

use std::path::{Path, PathBuf};

use super::CryptoArgs;
use super::catalog::ScenarioSpec;
use super::report::{Platform, Report, RunOptions, SCHEMA};
use super::runner::{Scenario, Watch, run_scenarios};
use super::witness::HandleWitness;
use platform::KernelHandles;
use scenarios::{Ctx, WinScenario};

/// Removes the scratch directory at the end of the run, whatever happened.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Key-container and certificate-store locations of this user and machine, plus the scratch
/// directory: where a file left open by a release would show up.
fn watched_locations(scratch: &Path) -> Vec<String> {
    let mut under = Vec::new();
    let mut push = |var: &str, tails: &[&str]| {
        if let Some(base) = std::env::var_os(var) {
            for tail in tails {
                under.push(Path::new(&base).join(tail).to_string_lossy().into_owned());
            }
        }
    };
    push("APPDATA", &["Microsoft\\Crypto", "Microsoft\\SystemCertificates"]);
    push("ProgramData", &["Microsoft\\Crypto"]);
    under.push(scratch.to_string_lossy().into_owned());
    under
}

/// Runs the selected scenarios and builds the report.
pub fn run(args: &CryptoArgs, witness: &dyn HandleWitness) -> Result<Report, String> {
    let wine_version = platform::wine_version();
    let pid = std::process::id();
    let scratch = std::env::temp_dir().join(format!("ctxguard-crypto-{pid}"));
    std::fs::create_dir_all(&scratch)
        .map_err(|err| format!("cannot create the scratch directory {}: {err}", scratch.display()))?;
    let _scratch = ScratchDir(scratch.clone());

    let selected: Vec<&'static ScenarioSpec> = super::selected(args)?;
    let ctx = Ctx { wine: wine_version.is_some(), stale: args.unsafe_stale_checks, scratch: scratch.clone(), pid };
    let bound: Vec<WinScenario<'_>> = selected
        .iter()
        .map(|spec| WinScenario::new(spec, &ctx).ok_or_else(|| format!("scenario {} has no implementation", spec.name)))
        .collect::<Result<_, _>>()?;
    let scenarios: Vec<&dyn Scenario> = bound.iter().map(|s| s as &dyn Scenario).collect();

    let watched = watched_locations(&scratch);
    let under: Vec<&str> = watched.iter().map(String::as_str).collect();
    let (correlation, reports) = run_scenarios(&scenarios, &KernelHandles, witness, &Watch { pid, under: &under });

    let summary = Report::summarize(&reports);
    Ok(Report {
        schema: SCHEMA,
        tool_version: env!("CARGO_PKG_VERSION"),
        platform: Platform { os: std::env::consts::OS.to_owned(), wine_version },
        options: RunOptions {
            unsafe_stale_checks: args.unsafe_stale_checks,
            scenarios: selected.iter().map(|s| s.name.to_owned()).collect(),
        },
        correlation,
        scenarios: reports,
        summary,
    })
}
