//! The Wine lane: `ctxguard crypto` cross-compiled to x86_64-pc-windows-gnu and run under
//! Debian's wine64 8.0, every scenario's verdict asserted against companion/conformance/wine-8.0.tsv;
//! plus the checks that keep that table, the companion's catalog and the README in step.
//!
//! Needs what wine_support/mod.rs lists (wine64 with wineserver, gcc-mingw-w64-x86-64, the rustup
//! target x86_64-pc-windows-gnu); make.sh installs them on CI.

mod wine_support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use object::read::pe::PeFile64;
use serde_json::Value;
use wine_support::{Lane, MISSING, WineTools, run_with_limit};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// Where Debian (and most distributions) put Wine's builtin PE DLLs.
const WINE_DLL_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/wine/x86_64-windows",
    "/usr/lib/wine/x86_64-windows",
    "/usr/lib64/wine/x86_64-windows",
    "/usr/local/lib/wine/x86_64-windows",
];
const README_BEGIN: &str =
    "<!-- conformance table: generated from conformance/wine-8.0.tsv by tests/wine_lane.rs; do not edit -->";
const README_END: &str = "<!-- end of conformance table -->";

/// One row of companion/conformance/wine-8.0.tsv.
#[derive(Debug)]
struct Row {
    scenario: String,
    documented: String,
    source: String,
    doc_says: Option<String>,
    windows_does: Option<String>,
    verdict: String,
    verdict_stale_checks: String,
    handle_delta: i64,
    observed: String,
}

const VERDICTS: &[&str] = &["PASS", "DIFF", "DOC", "UNVERIFIED", "SKIP"];

fn optional(field: &str) -> Option<String> {
    (field != "-").then(|| field.to_owned())
}

fn conformance_rows() -> Vec<Row> {
    let path = Path::new(MANIFEST_DIR).join("conformance/wine-8.0.tsv");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    let header = lines.next().expect("the TSV has a header line");
    assert_eq!(
        header,
        "scenario\tdocumented\tsource\tdoc_says\twindows_does\tverdict\tverdict_stale_checks\thandle_delta\tobserved"
    );
    lines
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 9, "malformed TSV line: {line}");
            for verdict in [f[5], f[6]] {
                assert!(VERDICTS.contains(&verdict), "bad verdict {verdict} in: {line}");
            }
            Row {
                scenario: f[0].to_owned(),
                documented: f[1].to_owned(),
                source: f[2].to_owned(),
                doc_says: optional(f[3]),
                windows_does: optional(f[4]),
                verdict: f[5].to_owned(),
                verdict_stale_checks: f[6].to_owned(),
                handle_delta: f[7].parse().unwrap_or_else(|e| panic!("bad handle delta in {line}: {e}")),
                observed: f[8].to_owned(),
            }
        })
        .collect()
}

/// The README section the conformance data generates.
fn conformance_table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(README_BEGIN);
    out.push_str(
        "\n\n| Scenario | Expected | Source | Doc says / Windows does | Wine 8.0 | Wine 8.0 observed | 2nd-pass handle delta |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|\n");
    for row in rows {
        let verdict = if row.verdict == row.verdict_stale_checks {
            row.verdict.clone()
        } else {
            format!("{} ({} with `--unsafe-stale-checks`)", row.verdict, row.verdict_stale_checks)
        };
        let finding = match (&row.doc_says, &row.windows_does) {
            (Some(doc), Some(windows)) => format!("**doc:** {doc}; **Windows:** {windows}"),
            _ => "agree".to_owned(),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {finding} | {verdict} | {} | {:+} |",
            row.scenario,
            row.documented.replace('|', "\\|"),
            row.source.replace('|', "\\|"),
            row.observed.replace('|', "\\|"),
            row.handle_delta
        );
    }
    out.push('\n');
    out.push_str(README_END);
    out
}

#[test]
fn readme_conformance_table_is_generated_from_the_data() {
    let rows = conformance_rows();
    let expected = conformance_table(&rows);
    let path = Path::new(MANIFEST_DIR).join("README.md");
    let readme = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let begin = readme.find(README_BEGIN).expect("README.md lacks the conformance table's begin marker");
    let end = readme.find(README_END).expect("README.md lacks the conformance table's end marker") + README_END.len();
    let current = &readme[begin..end];
    if current != expected {
        if std::env::var_os("CTXGUARD_BLESS").is_some() {
            fs::write(&path, format!("{}{expected}{}", &readme[..begin], &readme[end..])).expect("rewrite README.md");
            return;
        }
        panic!(
            "companion/README.md's conformance table differs from conformance/wine-8.0.tsv; \
             rerun with CTXGUARD_BLESS=1 to regenerate it. Expected:\n{expected}"
        );
    }
}

/// A scenario as `--list` prints it: name, expectation, source, doc says, Windows does.
type Listed = (String, String, String, Option<String>, Option<String>);

#[test]
fn the_data_covers_exactly_the_companions_scenarios_and_their_documented_behaviour() {
    // `--list` runs on any host, so the catalog is checked without Wine.
    let out = Command::new(env!("CARGO_BIN_EXE_ctxguard")).args(["crypto", "--list"]).output().expect("run ctxguard");
    assert!(out.status.success(), "ctxguard crypto --list failed: {}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8(out.stdout).expect("UTF-8 listing");
    // Per scenario: its name, then indented lines: the expectation, `source: …` and, where
    // Windows is recorded to differ from its documentation, `doc says: …` and `Windows does: …`.
    let mut catalog: Vec<Listed> = Vec::new();
    for line in listing.lines() {
        if !line.starts_with(' ') {
            let name = line.trim_end_matches(" [--unsafe-stale-checks]").to_owned();
            catalog.push((name, String::new(), String::new(), None, None));
            continue;
        }
        let entry = catalog.last_mut().expect("a scenario line comes first");
        let line = line.trim();
        if let Some(source) = line.strip_prefix("source: ") {
            entry.2 = source.to_owned();
        } else if let Some(doc) = line.strip_prefix("doc says: ") {
            entry.3 = Some(doc.to_owned());
        } else if let Some(windows) = line.strip_prefix("Windows does: ") {
            entry.4 = Some(windows.to_owned());
        } else {
            entry.1 = line.to_owned();
        }
    }
    let rows: Vec<Listed> =
        conformance_rows().into_iter().map(|r| (r.scenario, r.documented, r.source, r.doc_says, r.windows_does)).collect();
    assert_eq!(rows, catalog, "conformance/wine-8.0.tsv and the companion's catalog disagree");
    assert!(rows.iter().all(|r| !r.2.is_empty()), "every scenario has a cited source");
}

#[test]
fn no_diff_rests_on_an_expectation_windows_contradicts() {
    // A DIFF blames Wine, so it may stand only on Windows-run evidence: a scenario whose source
    // has none cannot be DIFF (its verdict is UNVERIFIED); a DOC verdict names both sides.
    for row in conformance_rows() {
        let on_record = !row.source.contains("Windows: none");
        for verdict in [&row.verdict, &row.verdict_stale_checks] {
            assert!(verdict != "DIFF" || on_record, "{}: DIFF without Windows-run evidence", row.scenario);
            let finding = row.doc_says.is_some() && row.windows_does.is_some();
            assert!(verdict != "DOC" || finding, "{}: DOC without doc says / Windows does", row.scenario);
        }
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let bin = env!("CARGO_BIN_EXE_ctxguard");
    let out = Command::new(bin).args(["crypto", "--scenario", "no-such-scenario"]).output().expect("run ctxguard");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown scenario") && stderr.contains("close-check-held"), "{stderr}");
    if !cfg!(windows) {
        // The scenarios need Windows APIs: on this host the run must refuse, not pretend.
        let out = Command::new(bin).args(["crypto", "--json"]).output().expect("run ctxguard");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("Windows APIs"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// The lane itself

/// The exports of a PE DLL, by name.
fn exports_of(path: &Path) -> Vec<String> {
    let data = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let pe = PeFile64::parse(&*data).unwrap_or_else(|e| panic!("{} is not a PE32+ DLL: {e}", path.display()));
    let Some(table) = pe.export_table().unwrap_or_else(|e| panic!("{}: bad export table: {e}", path.display())) else {
        return Vec::new();
    };
    table
        .exports()
        .unwrap_or_else(|e| panic!("{}: bad exports: {e}", path.display()))
        .into_iter()
        .filter_map(|export| export.name.map(|n| String::from_utf8_lossy(n).into_owned()))
        .collect()
}

fn u32_at(data: &[u8], offset: usize) -> usize {
    let bytes: [u8; 4] = data[offset..offset + 4].try_into().expect("4 bytes");
    u32::from_le_bytes(bytes) as usize
}

fn utf16_at(data: &[u8], offset: usize, len: usize) -> String {
    let units: Vec<u16> = data[offset..offset + len].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    String::from_utf16_lossy(&units).to_ascii_lowercase()
}

/// Wine resolves `api-ms-win-*` / `ext-ms-win-*` imports through the API set map in
/// apisetschema.dll's `.apiset` section (namespace version 6), as Windows does; returns the
/// host DLL of `dll`, or `None` if the map does not name it.
fn resolve_api_set(wine_dlls: &Path, dll: &str) -> Option<String> {
    use object::{Object as _, ObjectSection as _};
    let path = wine_dlls.join("apisetschema.dll");
    let data = fs::read(&path).ok()?;
    let pe = PeFile64::parse(&*data).ok()?;
    let map = pe.section_by_name(".apiset")?.data().ok()?;
    assert_eq!(u32_at(map, 0), 6, "{}: unexpected API set namespace version", path.display());
    let (count, entries) = (u32_at(map, 12), u32_at(map, 16));
    let wanted = dll.trim_end_matches(".dll");
    for index in 0..count {
        let entry = entries + index * 24;
        let name = utf16_at(map, u32_at(map, entry + 4), u32_at(map, entry + 8));
        // Windows matches the name up to its last hyphen (the hashed length): any minor version.
        let hashed = utf16_at(map, u32_at(map, entry + 4), u32_at(map, entry + 12));
        let same_contract = wanted.starts_with(&hashed) && wanted[hashed.len()..].starts_with('-');
        if (name == wanted || same_contract) && u32_at(map, entry + 20) > 0 {
            let value = u32_at(map, entry + 16);
            return Some(utf16_at(map, u32_at(map, value + 12), u32_at(map, value + 16)));
        }
    }
    None
}

/// Every (DLL, function) the exe imports that neither the directory next to it nor Wine has.
fn missing_imports(exe: &Path, wine_dlls: &Path) -> (usize, Vec<String>) {
    let data = fs::read(exe).unwrap_or_else(|e| panic!("cannot read {}: {e}", exe.display()));
    let pe = PeFile64::parse(&*data).expect("the companion is a PE32+ image");
    let imports = pe.import_table().expect("readable import table").expect("the companion imports DLLs");
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut descriptors = imports.descriptors().expect("import descriptors");
    while let Some(descriptor) = descriptors.next().expect("import descriptor") {
        let dll = imports.name(descriptor.name.get(object::LittleEndian)).expect("DLL name");
        let dll = String::from_utf8_lossy(dll).to_ascii_lowercase();
        let first = descriptor.original_first_thunk.get(object::LittleEndian);
        let first = if first == 0 { descriptor.first_thunk.get(object::LittleEndian) } else { first };
        let mut thunks = imports.thunks(first).expect("import thunks");
        while let Some(thunk) = thunks.next::<object::pe::ImageNtHeaders64>().expect("import thunk") {
            let name = match imports.import::<object::pe::ImageNtHeaders64>(thunk).expect("import entry") {
                object::read::pe::Import::Name(_, name) => String::from_utf8_lossy(name).into_owned(),
                object::read::pe::Import::Ordinal(ordinal) => format!("#{ordinal}"),
            };
            wanted.entry(dll.clone()).or_default().push(name);
        }
    }
    let beside = exe.parent().expect("exe directory");
    let mut missing = Vec::new();
    let mut total = 0;
    for (dll, functions) in &wanted {
        total += functions.len();
        let host = if dll.starts_with("api-ms-") || dll.starts_with("ext-ms-") {
            resolve_api_set(wine_dlls, dll).unwrap_or_else(|| dll.clone())
        } else {
            dll.clone()
        };
        let path = [beside.join(dll), wine_dlls.join(&host)].into_iter().find(|p| p.is_file());
        let Some(path) = path else {
            missing.push(format!("{dll} (the whole DLL)"));
            continue;
        };
        let exports = exports_of(&path);
        for function in functions {
            if !exports.contains(function) {
                missing.push(format!("{dll}!{function}"));
            }
        }
    }
    (total, missing)
}

fn run_crypto(lane: &Lane, args: &[&str]) -> Output {
    run_with_limit(&mut lane.companion(&[&["crypto"], args].concat()), Duration::from_secs(180))
}

fn parse_report(out: &Output, what: &str) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} exited with {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{what} printed no JSON report ({e}):\n{stdout}"))
}

fn by_name(report: &Value) -> BTreeMap<String, &Value> {
    report["scenarios"]
        .as_array()
        .expect("scenarios array")
        .iter()
        .map(|s| (s["name"].as_str().expect("scenario name").to_owned(), s))
        .collect()
}

#[test]
fn crypto_scenarios_under_wine_match_the_conformance_table() {
    let started = Instant::now();
    let tools = WineTools::require();
    let wine_dlls = WINE_DLL_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("kernel32.dll").is_file())
        .unwrap_or_else(|| panic!("Wine's x86_64 PE DLLs not found in {WINE_DLL_DIRS:?}: {MISSING}"));
    let lane = Lane::with_companion("wine-lane", tools);

    // One missing export stops the whole program at load: check them all before running.
    let (imports, missing) = missing_imports(&lane.exe, &wine_dlls);
    assert!(imports > 50, "implausibly few imports ({imports}): the import table was not read");
    assert!(missing.is_empty(), "imports Wine does not provide: {missing:?}");

    let rows = conformance_rows();
    let default_run = run_crypto(&lane, &["--json"]);
    let report = parse_report(&default_run, "ctxguard crypto --json");
    let stale_run = run_crypto(&lane, &["--json", "--unsafe-stale-checks"]);
    let stale_report = parse_report(&stale_run, "ctxguard crypto --json --unsafe-stale-checks");
    let unknown = run_crypto(&lane, &["--scenario", "no-such-scenario"]);

    assert_eq!(report["schema"], "ctxguard.crypto/2");
    let version = report["platform"]["wine_version"].as_str().unwrap_or("(not detected)");
    assert!(
        version == "8.0" || version.starts_with("8.0."),
        "wine_get_version() says {version}; the expectation table is for Wine 8.0"
    );
    assert_eq!(report["correlation"]["status"], "skipped");
    assert!(report["correlation"]["detail"].as_str().is_some_and(|d| d.starts_with("driver not reachable")));

    let observed = by_name(&report);
    let observed_stale = by_name(&stale_report);
    let names: Vec<&str> =
        report["options"]["scenarios"].as_array().expect("options.scenarios").iter().filter_map(Value::as_str).collect();
    let expected_names: Vec<&str> = rows.iter().map(|r| r.scenario.as_str()).collect();
    assert_eq!(names, expected_names, "the run's scenarios differ from the table's");

    let mut failures = Vec::new();
    for row in &rows {
        let s = observed[&row.scenario];
        let stale = observed_stale[&row.scenario];
        let mut check = |what: &str, got: &Value, want: Value| {
            if *got != want {
                failures.push(format!("{}: {what} is {got}, the table says {want}", row.scenario));
            }
        };
        check("verdict", &s["verdict"], row.verdict.clone().into());
        check("second_pass_verdict", &s["second_pass_verdict"], row.verdict.clone().into());
        check("verdict with --unsafe-stale-checks", &stale["verdict"], row.verdict_stale_checks.clone().into());
        check("documented", &s["documented"], row.documented.clone().into());
        check("source", &s["source"], row.source.clone().into());
        check("doc_says", &s["doc_says"], row.doc_says.clone().map_or(Value::Null, Value::from));
        check("windows_does", &s["windows_does"], row.windows_does.clone().map_or(Value::Null, Value::from));
        check("observed", &s["observed"], row.observed.clone().into());
        check("handles.delta", &s["handles"]["delta"], row.handle_delta.into());
        // GetProcessHandleCount is documented to be useless under Wine 8.0: it reports 0.
        check("handles.process_handle_count_after", &s["handles"]["process_handle_count_after"], 0.into());
        if !s["left_open"].is_null() {
            failures.push(format!("{}: left_open reported without a driver", row.scenario));
        }
    }
    assert!(failures.is_empty(), "Wine 8.0 verdicts differ from conformance/wine-8.0.tsv:\n{}", failures.join("\n"));

    let unknown_err = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(2), "unknown scenario under Wine: {unknown_err}");
    assert!(unknown_err.contains("valid names: verify-context"), "{unknown_err}");
    eprintln!("wine lane: {} scenarios asserted in {:?}", rows.len(), started.elapsed());
}
