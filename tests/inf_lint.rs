//! Lints the INF that ships: inf/ctxguard.inx stamped by scripts/stampinf.sh (the same script
//! the packaging runs) for amd64 and arm64, checked against the rules for a primitive
//! file-system minifilter INF (Windows 10 1903+) that can be stated without InfVerif, which is
//! Windows-only and runs in the Windows workflow instead.
//!
//! The lint returns its findings, so tests also feed it broken INFs and expect each rule to
//! fire: a lint that accepts everything would otherwise pass silently.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Both architectures the package ships, as stampinf names them.
const ARCHES: [&str; 2] = ["amd64", "arm64"];
/// The service, the binary's stem and the crate: one name.
const SERVICE: &str = "ctxguard";
const ACTIVITY_MONITOR_GUID: &str = "{b86dff51-a31e-4bac-b3cf-e8cfe75c9fc2}";
/// FSFilter Activity Monitor's altitude range.
const ALTITUDES: std::ops::RangeInclusive<u32> = 360_000..=389_999;
/// First build whose Filter Manager reads the filter's values under `Parameters`.
const PARAMETERS_DECORATION: &str = "10.0...25952";
/// 2023-11-14 22:13:20 UTC, so the stamped date is known.
const STAMP_EPOCH: &str = "1700000000";
const STAMP_DATE: &str = "11/14/2023";
/// AddReg flags: FLG_ADDREG_TYPE_SZ and FLG_ADDREG_TYPE_DWORD.
const REG_SZ: u32 = 0x0000_0000;
const REG_DWORD: u32 = 0x0001_0001;

// ---------------------------------------------------------------------------------------
// Stamping (the shipped script)
// ---------------------------------------------------------------------------------------

fn scratch_dir(name: &str) -> PathBuf {
    let dir = support::nested_target_dir().join("inf-lint").join(name);
    std::fs::create_dir_all(&dir).expect("creating the lint's scratch directory");
    dir
}

/// Runs scripts/stampinf.sh; Ok(the INF's bytes) or Err(its stderr).
fn run_stampinf(input: &Path, arch: &str, version: &str, output_name: &str) -> Result<Vec<u8>, String> {
    let output = scratch_dir("stamped").join(output_name);
    let result = Command::new("bash")
        .arg(support::workspace_root().join("scripts/stampinf.sh"))
        .arg(input)
        .arg(&output)
        .args([arch, version])
        .env("SOURCE_DATE_EPOCH", STAMP_EPOCH)
        .output()
        .expect("bash could not be started");
    if result.status.success() {
        Ok(std::fs::read(&output).expect("stampinf.sh succeeded but wrote nothing"))
    } else {
        Err(String::from_utf8_lossy(&result.stderr).into_owned())
    }
}

fn inx_path() -> PathBuf {
    support::workspace_root().join("inf/ctxguard.inx")
}

fn stamped(arch: &str) -> String {
    let bytes = run_stampinf(&inx_path(), arch, env!("CARGO_PKG_VERSION"), &format!("ctxguard-{arch}.inf"))
        .unwrap_or_else(|error| panic!("stamping for {arch} failed: {error}"));
    String::from_utf8(bytes).expect("the stamped INF is not UTF-8")
}

// ---------------------------------------------------------------------------------------
// A small INF reader
// ---------------------------------------------------------------------------------------

/// One line of a section: `key = value` or a bare value list.
#[derive(Clone, Debug)]
struct Entry {
    key: Option<String>,
    fields: Vec<String>,
}

#[derive(Debug, Default)]
struct Inf {
    /// Section names in file order, as written.
    order: Vec<String>,
    /// Lower-case section name → entries (repeated sections merge, as SetupAPI merges them).
    sections: BTreeMap<String, Vec<Entry>>,
    strings: BTreeMap<String, String>,
}

/// Cuts a `;` comment that is outside double quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (index, character) in line.char_indices() {
        match character {
            '"' => quoted = !quoted,
            ';' if !quoted => return &line[..index],
            _ => {}
        }
    }
    line
}

/// Splits at `separator` outside double quotes.
fn split_outside_quotes(text: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for character in text.chars() {
        if character == '"' {
            quoted = !quoted;
        }
        if character == separator && !quoted {
            parts.push(String::new());
        } else {
            parts.last_mut().expect("never empty").push(character);
        }
    }
    parts.into_iter().map(|part| part.trim().to_owned()).collect()
}

impl Inf {
    fn parse(text: &str) -> Inf {
        let mut inf = Inf::default();
        let mut current: Option<String> = None;
        for raw in text.lines() {
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
                let name = name.trim().to_owned();
                inf.order.push(name.clone());
                inf.sections.entry(name.to_ascii_lowercase()).or_default();
                current = Some(name.to_ascii_lowercase());
                continue;
            }
            let Some(section) = &current else { continue };
            let (key, value) = match split_outside_quotes(line, '=').as_slice() {
                [key, value] => (Some(key.clone()), value.clone()),
                _ => (None, line.to_owned()),
            };
            let entry = Entry { key, fields: split_outside_quotes(&value, ',') };
            inf.sections.get_mut(section).expect("section exists").push(entry);
        }
        for entry in inf.section("Strings").unwrap_or_default() {
            if let (Some(key), Some(value)) = (&entry.key, entry.fields.first()) {
                inf.strings.insert(key.to_ascii_lowercase(), unquote(value));
            }
        }
        inf
    }

    fn section(&self, name: &str) -> Option<Vec<Entry>> {
        self.sections.get(&name.to_ascii_lowercase()).cloned()
    }

    fn has_section(&self, name: &str) -> bool {
        self.sections.contains_key(&name.to_ascii_lowercase())
    }

    /// Every value of `key` in `section`, each as its field list.
    fn values(&self, section: &str, key: &str) -> Vec<Vec<String>> {
        self.section(section)
            .unwrap_or_default()
            .into_iter()
            .filter(|entry| entry.key.as_deref().is_some_and(|k| k.eq_ignore_ascii_case(key)))
            .map(|entry| entry.fields)
            .collect()
    }

    /// The single resolved value of `key` in `section` (first field), if there is one.
    fn value(&self, section: &str, key: &str) -> Option<String> {
        let values = self.values(section, key);
        match values.as_slice() {
            [fields] => fields.first().map(|field| self.resolve(field)),
            _ => None,
        }
    }

    /// Expands `%strkey%` from [Strings] (numeric DirIds like `%13%` stay) and drops quotes.
    fn resolve(&self, field: &str) -> String {
        let mut out = String::new();
        let mut rest = field;
        while let Some(start) = rest.find('%') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let Some(end) = after.find('%') else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let key = &after[..end];
            match self.strings.get(&key.to_ascii_lowercase()) {
                Some(value) => out.push_str(value),
                None if key.is_empty() => out.push('%'),
                None => {
                    out.push('%');
                    out.push_str(key);
                    out.push('%');
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        unquote(&out)
    }

    /// `%key%` tokens used anywhere outside [Strings] that are neither defined nor DirIds.
    fn undefined_string_keys(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for (name, entries) in &self.sections {
            if name == "strings" {
                continue;
            }
            for entry in entries {
                for field in entry.fields.iter().chain(entry.key.iter()) {
                    let mut parts = field.split('%');
                    parts.next();
                    while let (Some(key), Some(_)) = (parts.next(), parts.next()) {
                        let known = key.is_empty() || key.chars().all(|c| c.is_ascii_digit()) || self.strings.contains_key(&key.to_ascii_lowercase());
                        if !known {
                            missing.push(key.to_owned());
                        }
                    }
                }
            }
        }
        missing
    }
}

fn unquote(value: &str) -> String {
    value.replace('"', "")
}

// ---------------------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------------------

/// What a lint run is checked against.
struct Expect<'a> {
    arch: &'a str,
    version: &'a str,
    date: &'a str,
}

/// One HKR line of an AddReg section, resolved.
struct Reg {
    subkey: String,
    name: String,
    flags: u32,
    value: String,
}

fn parse_number(text: &str) -> Option<u32> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Returns every rule the INF text breaks (empty: clean).
#[allow(clippy::too_many_lines)] // One flat list of rules reads better than rules split by size.
fn lint(text: &str, expect: &Expect<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |message: String| problems.push(message);

    // Encoding: ANSI (ASCII here) with CRLF, no BOM; INFs are ANSI or UTF-16LE.
    if !text.is_ascii() {
        problem("INF is not ASCII".into());
    }
    if text.starts_with('\u{feff}') {
        problem("INF starts with a byte-order mark".into());
    }
    if text.split_inclusive('\n').any(|line| !line.ends_with("\r\n")) {
        problem("a line does not end in CRLF".into());
    }
    if text.contains("$ARCH$") {
        problem("$ARCH$ left unstamped".into());
    }

    let inf = Inf::parse(text);
    let other_arch = ARCHES.iter().find(|arch| **arch != expect.arch).expect("two architectures");

    // [Version]
    if !inf.value("Version", "Signature").is_some_and(|value| value.eq_ignore_ascii_case("$Windows NT$")) {
        problem("[Version] Signature must be \"$Windows NT$\"".into());
    }
    if inf.value("Version", "Class").as_deref() != Some("ActivityMonitor") {
        problem("[Version] Class must be ActivityMonitor".into());
    }
    if !inf.value("Version", "ClassGuid").is_some_and(|guid| guid.eq_ignore_ascii_case(ACTIVITY_MONITOR_GUID)) {
        problem(format!("[Version] ClassGuid must be {ACTIVITY_MONITOR_GUID} (ActivityMonitor)"));
    }
    match inf.value("Version", "Provider") {
        Some(provider) if !provider.is_empty() && !provider.to_ascii_lowercase().contains("microsoft") => {}
        other => problem(format!("[Version] Provider must name us, not Microsoft or nobody: {other:?}")),
    }
    let expected_driver_ver = format!("{},{}.0", expect.date, expect.version.split(['-', '+']).next().unwrap_or_default());
    let driver_ver = inf.values("Version", "DriverVer");
    match driver_ver.as_slice() {
        [fields] if fields.join(",") == expected_driver_ver => {}
        other => problem(format!("[Version] DriverVer must be {expected_driver_ver}, found {other:?}")),
    }
    if inf.value("Version", "CatalogFile").as_deref() != Some("ctxguard.cat") {
        problem("[Version] CatalogFile must be ctxguard.cat".into());
    }
    if inf.value("Version", "PnpLockdown").as_deref() != Some("1") {
        problem("[Version] PnpLockdown must be 1".into());
    }

    // Primitive driver: no device model, no legacy install/uninstall sections.
    for name in &inf.order {
        let lower = name.to_ascii_lowercase();
        if lower == "manufacturer" {
            problem("[Manufacturer] makes it a device INF, not a primitive one".into());
        }
        if lower.starts_with("defaultuninstall") {
            problem(format!("[{name}] is prohibited in a primitive INF"));
        }
        if lower.starts_with("defaultinstall") && !lower.starts_with(&format!("defaultinstall.nt{}", expect.arch)) {
            problem(format!("[{name}] is not decorated NT{}: primitive INFs need architecture-decorated DefaultInstall", expect.arch));
        }
        if lower.contains(&format!(".nt{other_arch}")) {
            problem(format!("[{name}] belongs to {other_arch}, not {}", expect.arch));
        }
    }
    for entries in inf.sections.values() {
        if entries.iter().any(|entry| entry.key.as_deref().is_some_and(|key| key.eq_ignore_ascii_case("LegacyUninstall"))) {
            problem("LegacyUninstall is not used: uninstall goes through pnputil".into());
        }
    }

    // The install sections and their services.
    let modern = format!("DefaultInstall.NT{}.{PARAMETERS_DECORATION}", expect.arch);
    let downlevel = format!("DefaultInstall.NT{}", expect.arch);
    let mut service_sections = Vec::new();
    for install in [&modern, &downlevel] {
        for section in [install.clone(), format!("{install}.Services")] {
            if !inf.has_section(&section) {
                problem(format!("[{section}] is missing"));
            }
        }
        let copy_files = inf.values(install, "CopyFiles");
        if copy_files.len() != 1 {
            problem(format!("[{install}] needs exactly one CopyFiles"));
        }
        for list in copy_files.iter().flatten() {
            match inf.section(list) {
                Some(files) => {
                    let names: Vec<String> = files.iter().filter_map(|entry| entry.fields.first().map(|field| inf.resolve(field))).collect();
                    if names != [format!("{SERVICE}.sys")] {
                        problem(format!("[{list}] must copy only {SERVICE}.sys, copies {names:?}"));
                    }
                }
                None => problem(format!("CopyFiles section [{list}] is missing")),
            }
            if inf.value("DestinationDirs", list).as_deref() != Some("13") {
                problem(format!("[DestinationDirs] must send {list} to 13 (the driver store)"));
            }
        }
        for fields in inf.values(&format!("{install}.Services"), "AddService") {
            let name = fields.first().map(|field| inf.resolve(field)).unwrap_or_default();
            if name != SERVICE {
                problem(format!("[{install}.Services] installs service {name:?}, expected {SERVICE}"));
            }
            if fields.get(1).is_some_and(|flags| !flags.is_empty() && parse_number(flags) != Some(0)) {
                problem(format!("[{install}.Services] AddService flags must be empty for a primitive driver"));
            }
            match fields.get(2) {
                Some(section) => service_sections.push((install.clone(), section.clone())),
                None => problem(format!("[{install}.Services] AddService has no service-install section")),
            }
        }
    }
    if service_sections.len() != 2 {
        problem(format!("expected one AddService per install section, found {}", service_sections.len()));
    }
    for (_, entries) in inf.sections.iter().filter(|(name, _)| name.as_str() == "destinationdirs") {
        for entry in entries {
            if entry.fields.first().map(String::as_str) != Some("13") {
                problem(format!("[DestinationDirs] {:?} is not DirId 13", entry.key));
            }
        }
    }

    // Service-install sections.
    let mut altitudes = Vec::new();
    for (install, service) in &service_sections {
        let exact = |key: &str, expected: &str, problem: &mut dyn FnMut(String)| {
            let found = inf.value(service, key);
            if found.as_deref() != Some(expected) {
                problem(format!("[{service}] {key} must be {expected}, found {found:?}"));
            }
        };
        exact("ServiceType", "2", &mut problem);
        exact("StartType", "3", &mut problem);
        exact("ErrorControl", "1", &mut problem);
        exact("LoadOrderGroup", "FSFilter Activity Monitor", &mut problem);
        exact("Dependencies", "FltMgr", &mut problem);
        exact("ServiceBinary", &format!("%13%\\{SERVICE}.sys"), &mut problem);

        let add_reg = inf.values(service, "AddReg");
        let mut regs = Vec::new();
        for list in add_reg.iter().flatten() {
            let Some(lines) = inf.section(list) else {
                problem(format!("AddReg section [{list}] is missing"));
                continue;
            };
            for line in lines {
                let fields: Vec<String> = line.fields.iter().map(|field| inf.resolve(field)).collect();
                if fields.first().map(String::as_str) != Some("HKR") || fields.len() < 5 {
                    problem(format!("[{list}] line {fields:?} is not HKR,subkey,name,flags,value"));
                    continue;
                }
                let Some(flags) = parse_number(&fields[3]) else {
                    problem(format!("[{list}] flags {:?} is not a number", fields[3]));
                    continue;
                };
                regs.push(Reg { subkey: fields[1].clone(), name: fields[2].clone(), flags, value: fields[4].clone() });
            }
        }
        // 24H2+: driver package isolation allows AddReg only under the service's Parameters key.
        let prefix = if install == &modern {
            for reg in &regs {
                let under_parameters = reg.subkey.eq_ignore_ascii_case("Parameters") || reg.subkey.to_ascii_lowercase().starts_with("parameters\\");
                if !under_parameters {
                    problem(format!("[{install}] writes {}\\{} outside Parameters", reg.subkey, reg.name));
                }
            }
            "Parameters\\"
        } else {
            ""
        };
        let find = |subkey: &str, name: &str| regs.iter().find(|reg| reg.subkey.eq_ignore_ascii_case(subkey) && reg.name.eq_ignore_ascii_case(name));
        match find(prefix.trim_end_matches('\\'), "SupportedFeatures") {
            Some(reg) if reg.flags == REG_DWORD && parse_number(&reg.value) == Some(3) => {}
            _ => problem(format!("[{install}] needs {prefix}SupportedFeatures = DWORD 3")),
        }
        let Some(default) = find(&format!("{prefix}Instances"), "DefaultInstance").filter(|reg| reg.flags == REG_SZ) else {
            problem(format!("[{install}] needs REG_SZ {prefix}Instances\\DefaultInstance"));
            continue;
        };
        let instance = format!("{prefix}Instances\\{}", default.value);
        match find(&instance, "Altitude") {
            Some(reg) if reg.flags == REG_SZ => match reg.value.parse::<u32>() {
                Ok(altitude) if ALTITUDES.contains(&altitude) => altitudes.push(altitude),
                _ => problem(format!("[{install}] altitude {:?} is outside FSFilter Activity Monitor {ALTITUDES:?}", reg.value)),
            },
            _ => problem(format!("[{install}] needs REG_SZ {instance}\\Altitude (the default instance's)")),
        }
        if !find(&instance, "Flags").is_some_and(|reg| reg.flags == REG_DWORD && parse_number(&reg.value).is_some()) {
            problem(format!("[{install}] needs DWORD {instance}\\Flags"));
        }
    }
    if altitudes.len() == 2 && altitudes[0] != altitudes[1] {
        problem(format!("the two registry layouts disagree on the altitude: {altitudes:?}"));
    }

    // Source media: ctxguard.sys from disk 1, beside the INF.
    if inf.section("SourceDisksNames").unwrap_or_default().iter().all(|entry| entry.key.as_deref() != Some("1")) {
        problem("[SourceDisksNames] has no disk 1".into());
    }
    match inf.values("SourceDisksFiles", &format!("{SERVICE}.sys")).as_slice() {
        [fields] if fields.first().map(String::as_str) == Some("1") && fields.get(1).is_none_or(String::is_empty) => {}
        other => problem(format!("[SourceDisksFiles] must list {SERVICE}.sys on disk 1 beside the INF, found {other:?}")),
    }

    // The communication port is created by the driver at run time; nothing in the INF names it.
    let port = ctxguard_protocol::PORT_NAME.trim_start_matches('\\');
    if text.to_ascii_lowercase().contains(&port.to_ascii_lowercase()) {
        problem(format!("the INF mentions the port {port}; the driver creates it, the INF must not"));
    }

    for key in inf.undefined_string_keys() {
        problem(format!("%{key}% is used but not defined in [Strings]"));
    }
    problems
}

fn expect(arch: &str) -> Expect<'_> {
    Expect { arch, version: env!("CARGO_PKG_VERSION"), date: STAMP_DATE }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn stamped_inf_passes_every_rule() {
    for arch in ARCHES {
        let problems = lint(&stamped(arch), &expect(arch));
        assert!(problems.is_empty(), "{arch}: {problems:#?}");
    }
}

#[test]
fn stamped_inf_is_decorated_for_its_architecture_only() {
    for arch in ARCHES {
        let inf = Inf::parse(&stamped(arch));
        let install: Vec<&String> = inf.order.iter().filter(|name| name.to_ascii_lowercase().starts_with("defaultinstall")).collect();
        assert_eq!(
            install,
            [
                &format!("DefaultInstall.NT{arch}.10.0...25952"),
                &format!("DefaultInstall.NT{arch}.10.0...25952.Services"),
                &format!("DefaultInstall.NT{arch}"),
                &format!("DefaultInstall.NT{arch}.Services"),
            ],
        );
    }
}

#[test]
fn service_name_matches_the_binary_and_the_crate() {
    let inf = Inf::parse(&stamped("amd64"));
    assert_eq!(inf.resolve("%ServiceName%"), SERVICE);
    assert_eq!(env!("CARGO_PKG_NAME"), SERVICE, "the crate's cdylib is <crate>.dll, shipped as <service>.sys");
}

#[test]
fn altitude_is_a_test_value_in_the_activity_monitor_range() {
    let inf = Inf::parse(&stamped("amd64"));
    let altitude: u32 = inf.resolve("%Instance1.Altitude%").parse().expect("altitude is a number");
    assert!(ALTITUDES.contains(&altitude));
    let readme = std::fs::read_to_string(support::workspace_root().join("README.md")).expect("README.md");
    assert!(readme.contains(&altitude.to_string()), "README must name the test altitude {altitude} as a test value");
}

/// Applies `edit` to the stamped amd64 INF and returns the lint's findings.
fn lint_after(edit: impl Fn(String) -> String) -> Vec<String> {
    lint(&edit(stamped("amd64")), &expect("amd64"))
}

fn assert_flags(problems: &[String], needle: &str) {
    assert!(problems.iter().any(|problem| problem.contains(needle)), "expected a finding containing {needle:?}, got {problems:#?}");
}

#[test]
fn lint_catches_broken_version_sections() {
    assert_flags(&lint_after(|inf| inf.replace("PnpLockdown = 1", "PnpLockdown = 0")), "PnpLockdown");
    assert_flags(&lint_after(|inf| inf.replace("ActivityMonitor", "ContentScreener")), "Class must be ActivityMonitor");
    assert_flags(&lint_after(|inf| inf.replace("b86dff51", "b86dff52")), "ClassGuid");
    assert_flags(&lint_after(|inf| inf.replace(STAMP_DATE, "11/15/2023")), "DriverVer");
    assert_flags(&lint_after(|inf| inf.replace("ctxguard.cat", "other.cat")), "CatalogFile");
}

#[test]
fn lint_catches_non_primitive_sections() {
    assert_flags(&lint_after(|inf| inf + "[Manufacturer]\r\n%Provider% = Models,NTamd64\r\n"), "[Manufacturer]");
    assert_flags(&lint_after(|inf| inf + "[DefaultUninstall.NTamd64]\r\nLegacyUninstall = 1\r\n"), "prohibited");
    assert_flags(&lint_after(|inf| inf.replace("[DefaultInstall.NTamd64]", "[DefaultInstall]")), "not decorated");
    assert_flags(&lint_after(|inf| inf.replace("[DefaultInstall.NTamd64.Services]", "[DefaultInstall.NTarm64.Services]")), "belongs to arm64");
    assert_flags(&lint_after(|inf| inf.replace("DefaultInstall.NTamd64.10.0...25952", "DefaultInstall.NT$ARCH$.10.0...25952")), "$ARCH$");
}

#[test]
fn lint_catches_wrong_service_settings() {
    assert_flags(&lint_after(|inf| inf.replacen("StartType      = 3", "StartType      = 1", 1)), "StartType must be 3");
    assert_flags(&lint_after(|inf| inf.replacen("ServiceType    = 2", "ServiceType    = 1", 1)), "ServiceType must be 2");
    assert_flags(&lint_after(|inf| inf.replacen("\"FltMgr\"", "\"Ntfs\"", 1)), "Dependencies");
    assert_flags(&lint_after(|inf| inf.replacen("%13%\\ctxguard.sys", "%12%\\ctxguard.sys", 1)), "ServiceBinary");
    assert_flags(&lint_after(|inf| inf.replacen("FSFilter Activity Monitor", "FSFilter Bottom", 1)), "LoadOrderGroup");
    assert_flags(&lint_after(|inf| inf.replace("ctxguard.DriverFiles = 13", "ctxguard.DriverFiles = 12")), "DirId 13");
    assert_flags(&lint_after(|inf| inf.replace("ServiceName        = \"ctxguard\"", "ServiceName        = \"guard\"")), "installs service");
}

#[test]
fn lint_catches_registry_outside_parameters_and_bad_altitudes() {
    assert_flags(
        &lint_after(|inf| inf.replace("HKR,\"Parameters\",\"SupportedFeatures\"", "HKR,,\"SupportedFeatures\"")),
        "outside Parameters",
    );
    assert_flags(&lint_after(|inf| inf.replace("\"385210\"", "\"320000\"")), "outside FSFilter Activity Monitor");
    assert_flags(
        &lint_after(|inf| inf.replace("HKR,\"Instances\",\"DefaultInstance\"", "HKR,\"Instances\",\"Default\"")),
        "Instances\\DefaultInstance",
    );
    assert_flags(&lint_after(|inf| inf + "[Extra]\r\nDescription = %Undefined%\r\n"), "%Undefined%");
    assert_flags(&lint_after(|inf| inf + "; \\ctxguardPort\r\n[Strings]\r\nPort = \"ctxguardPort\"\r\n"), "port");
}

#[test]
fn lint_catches_encoding_problems() {
    assert_flags(&lint_after(|inf| inf.replace("\r\n", "\n")), "CRLF");
    assert_flags(&lint_after(|inf| inf.replace("ctxguard project", "ctxguard projekt \u{e9}")), "not ASCII");
}

#[test]
fn stamping_converts_the_crate_version_and_rejects_what_driver_ver_cannot_hold() {
    let inx = inx_path();
    let prerelease = String::from_utf8(run_stampinf(&inx, "arm64", "2.10.3-rc.1+build.5", "pre.inf").expect("pre-release stamps")).expect("utf-8");
    assert!(prerelease.contains(&format!("DriverVer   = {STAMP_DATE},2.10.3.0\r\n")), "{prerelease}");

    let too_big = run_stampinf(&inx, "amd64", "1.70000.0", "big.inf").expect_err("a part over 65535 must be refused");
    assert!(too_big.contains("65535"), "{too_big}");
    assert!(run_stampinf(&inx, "x86", "0.1.0", "x86.inf").is_err(), "only amd64 and arm64 ship");
    assert!(run_stampinf(&inx, "amd64", "1.2", "short.inf").is_err(), "a two-part version is not a crate version");

    let non_ascii = scratch_dir("inputs").join("non-ascii.inx");
    let source = std::fs::read_to_string(&inx).expect("inx").replace("ctxguard project", "ctxguard proj\u{e9}ct");
    std::fs::write(&non_ascii, source).expect("writing a test input");
    let refused = run_stampinf(&non_ascii, "amd64", "0.1.0", "non-ascii.inf").expect_err("non-ASCII input must be refused");
    assert!(refused.contains("non-ASCII"), "{refused}");
}
