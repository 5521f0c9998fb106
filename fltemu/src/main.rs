//! The fltemu command line.
//!
//! ```text
//! fltemu run <driver.sys> [--scenario NAME | --script FILE] [--threads N] [--json] [--post-irql passive|dispatch] [--call-timeout-ms N] [--seed N]
//! fltemu bench <driver.sys> [--against OTHER.sys] [--cycles N]
//! fltemu imports <driver.sys>
//! fltemu scenarios | exports [--markdown]
//! ```
//! Exit status: 0 clean; 1 violations; 2 crash, bug check, load failure or failed DriverEntry;
//! 64 usage errors.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() {
    std::process::exit(cli::main(&std::env::args().skip(1).collect::<Vec<_>>()));
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    eprintln!("fltemu runs only on x86_64 Linux");
    std::process::exit(64);
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod cli {
    use std::fmt::Write as _;
    use std::time::Instant;

    use fltemu::scenario::{self, ScriptError};
    use fltemu::{Config, EmuError, Emulator, OpenOptions, Report, VolumeSpec};

    const USAGE: &str = "usage: fltemu run <driver.sys> [--scenario NAME | --script FILE] [--threads N] [--json] [--post-irql passive|dispatch] [--call-timeout-ms N] [--seed N]\n       fltemu bench <driver.sys> [--against OTHER.sys] [--cycles N]\n       fltemu imports <driver.sys>\n       fltemu scenarios | exports [--markdown]";

    fn usage(message: &str) -> i32 {
        eprintln!("fltemu: {message}\n{USAGE}");
        64
    }

    pub fn main(args: &[String]) -> i32 {
        match args.first().map(String::as_str) {
            Some("run") => run(&args[1..]),
            Some("bench") => bench(&args[1..]),
            Some("scenarios") => {
                for (name, script) in scenario::SCENARIOS {
                    println!("{name}:\n{}", script.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n"));
                }
                0
            }
            Some("exports") if args.get(1).map(String::as_str) == Some("--markdown") => {
                print!("{}", fltemu::catalog::markdown());
                0
            }
            Some("exports") => {
                for export in fltemu::emulated_exports() {
                    println!("{export}");
                }
                0
            }
            Some("imports") => match args.get(1..) {
                Some([driver]) => imports(driver),
                _ => usage("imports needs exactly one driver"),
            },
            _ => usage("expected a command"),
        }
    }

    /// `fltemu imports X.sys`: every import as emulated (with its documentation) or missing.
    /// Exit 0 when everything binds, 2 when `run` would refuse the image.
    fn imports(driver: &str) -> i32 {
        use fltemu::imports::Binding;
        let report = match std::fs::read(driver).map_err(|e| format!("{driver}: {e}")).and_then(|bytes| fltemu::imports::report(&bytes).map_err(|e| e.to_string())) {
            Ok(report) => report,
            Err(message) => {
                println!("FAILED: {message}");
                return 2;
            }
        };
        let missing = report.iter().filter(|i| matches!(i.binding, Binding::Missing { .. })).count();
        println!("fltemu: {driver}: {} imports, {} emulated, {missing} missing", report.len(), report.len() - missing);
        let width = report.iter().map(|i| i.name.len()).max().unwrap_or(0);
        for import in &report {
            match &import.binding {
                Binding::Emulated { entry, forwarded_from } => {
                    let source = entry.map_or_else(|| "(no documentation recorded)".to_owned(), |e| format!("{} <{}>", e.source.title(e.function), e.source.url(e.function)));
                    let via = forwarded_from.as_ref().map_or_else(String::new, |from| format!(" [forwarded by {from}]"));
                    println!("emulated  {:width$}  {source}{via}", import.name);
                }
                Binding::Missing { reason } => println!("missing   {:width$}  {reason}", import.name),
            }
        }
        if missing == 0 { 0 } else { 2 }
    }

    struct Options {
        driver: String,
        script: String,
        source: String,
        threads: usize,
        json: bool,
        config: Config,
    }

    fn parse(args: &[String]) -> Result<Options, String> {
        let mut driver = None;
        let mut script = None;
        let mut threads = 4;
        let mut json = false;
        let mut config = Config::default();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            match arg.as_str() {
                "--scenario" => {
                    let name = iter.next().ok_or("--scenario needs a name")?;
                    let text = scenario::scenario(name).ok_or_else(|| format!("unknown scenario {name} (see `fltemu scenarios`)"))?;
                    script = Some((text.to_owned(), format!("scenario {name}")));
                    // The race scenario wants the racers to meet (see Config::widen_race_windows).
                    config.widen_race_windows |= name == "race";
                }
                "--script" => {
                    let file = iter.next().ok_or("--script needs a file")?;
                    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
                    script = Some((text, format!("script {file}")));
                }
                "--seed" => {
                    let text = iter.next().ok_or("--seed needs a number")?;
                    config.schedule_seed = Some(fltemu::schedule::parse_seed(text).ok_or("--seed needs a number (decimal or 0x hex)")?);
                }
                "--threads" => threads = iter.next().and_then(|t| t.parse().ok()).ok_or("--threads needs a number")?,
                "--json" => json = true,
                "--call-timeout-ms" => {
                    let ms = iter.next().and_then(|t| t.parse().ok()).ok_or("--call-timeout-ms needs a number")?;
                    config.call_timeout = std::time::Duration::from_millis(ms);
                }
                "--post-irql" => {
                    let irql = match iter.next().map(String::as_str) {
                        Some("passive") => fltemu::PASSIVE_LEVEL,
                        Some("dispatch") => fltemu::DISPATCH_LEVEL,
                        _ => return Err("--post-irql needs passive or dispatch".into()),
                    };
                    config.post_cleanup_irql = irql;
                    config.post_close_irql = irql;
                }
                other if other.starts_with("--") => return Err(format!("unknown option {other}")),
                other => {
                    if driver.replace(other.to_owned()).is_some() {
                        return Err("more than one driver given".into());
                    }
                }
            }
        }
        let (script, source) = script.unwrap_or_else(|| (scenario::scenario(scenario::DEFAULT_SCENARIO).unwrap_or_default().to_owned(), format!("scenario {} (the default)", scenario::DEFAULT_SCENARIO)));
        Ok(Options { driver: driver.ok_or("no driver given")?, script, source, threads, json, config })
    }

    fn json_string(text: &str) -> String {
        let mut out = String::from("\"");
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    fn json_list(items: &[String]) -> String {
        format!("[{}]", items.iter().map(|i| json_string(i)).collect::<Vec<_>>().join(","))
    }

    fn print_result(options: &Options, log: &[String], report: Option<&Report>, failure: Option<&str>) {
        let violations: Vec<String> = report.map(|r| r.violations.iter().map(ToString::to_string).collect()).unwrap_or_default();
        let debug = report.map(|r| r.debug_output.clone()).unwrap_or_default();
        if options.json {
            let stop = report.and_then(|r| r.stop.as_ref()).map(|s| format!("{s:?}"));
            println!(
                "{{\"driver\":{},\"ran\":{},\"log\":{},\"debug_output\":{},\"violations\":{},\"stop\":{},\"failure\":{},\"pool_bytes_outstanding\":{},\"contexts_outstanding\":{},\"max_stack_depth\":{},\"schedule_seed\":{}}}",
                json_string(&options.driver),
                json_string(&options.source),
                json_list(log),
                json_list(&debug),
                json_list(&violations),
                stop.map_or("null".into(), |s| json_string(&s)),
                failure.map_or("null".into(), json_string),
                report.map_or(0, |r| r.pool_bytes_outstanding),
                report.map_or(0, |r| r.contexts_outstanding),
                report.map_or(0, |r| r.max_stack_depth),
                options.config.schedule_seed.map_or("null".into(), |seed| seed.to_string()),
            );
            return;
        }
        println!("fltemu: {} ({})", options.driver, options.source);
        for line in log {
            println!("  ran: {line}");
        }
        if let Some(report) = report {
            print!("{report}");
        }
        if let Some(failure) = failure {
            println!("FAILED: {failure}");
        }
    }

    fn run(args: &[String]) -> i32 {
        let options = match parse(args) {
            Ok(options) => options,
            Err(message) => return usage(&message),
        };
        let emulator = match Emulator::load(&options.driver, options.config.clone()) {
            Ok(emulator) => emulator,
            Err(EmuError::DriverEntryFailed { status, report }) => {
                print_result(&options, &[], Some(&report), Some(&format!("DriverEntry failed with {status:#010x}")));
                return 2;
            }
            Err(error) => {
                // A DriverEntry that crashed or bug-checked: its report says why.
                let report = matches!(error, EmuError::Stopped(_)).then(fltemu::take_stopped_load_report).flatten();
                print_result(&options, &[], report.as_ref(), Some(&error.to_string()));
                return 2;
            }
        };
        match scenario::run_script(&emulator, &options.script, options.threads) {
            Ok(run) => {
                // A stop in asynchronous driver code (a work item) while the script's own calls
                // still returned: the run crashed all the same.
                if let Some(stop) = run.report.stop.clone() {
                    print_result(&options, &run.log, Some(&run.report), Some(&EmuError::Stopped(stop).to_string()));
                    return 2;
                }
                print_result(&options, &run.log, Some(&run.report), None);
                i32::from(!run.report.violations.is_empty())
            }
            Err(ScriptError::Emulator { error, log, .. }) => {
                let report = emulator.report();
                print_result(&options, &log, Some(&report), Some(&error.to_string()));
                2
            }
            Err(error @ ScriptError::Syntax { .. }) => usage(&error.to_string()),
        }
    }

    /// Create/cleanup/close cycles per second through one driver.
    fn cycles_per_second(driver: &str, cycles: usize) -> Result<(f64, f64, u64), String> {
        let emulator = Emulator::load(driver, Config::default()).map_err(|e| e.to_string())?;
        let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).map_err(|e| e.to_string())?;
        // Warm-up: streams exist, workers started.
        for index in 0..200 {
            emulator.open_close(volume, &format!("\\f{}.txt", index % 64), &OpenOptions::default()).map_err(|e| e.to_string())?;
        }
        let before = emulator.calls();
        let start = Instant::now();
        for index in 0..cycles {
            emulator.open_close(volume, &format!("\\f{}.txt", index % 64), &OpenOptions::default()).map_err(|e| e.to_string())?;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let calls = emulator.calls().since(&before);
        let flt = calls.total_prefix("Flt");
        let report = emulator.unload().map_err(|e| e.to_string())?;
        if !report.is_clean() {
            return Err(format!("{driver} is not clean:\n{report}"));
        }
        #[allow(clippy::cast_precision_loss)]
        Ok((cycles as f64 / elapsed, flt as f64 / cycles as f64, flt))
    }

    fn bench(args: &[String]) -> i32 {
        let mut driver = None;
        let mut against = None;
        let mut cycles = 20_000;
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            match arg.as_str() {
                "--against" => against = iter.next().cloned(),
                "--cycles" => cycles = iter.next().and_then(|c| c.parse().ok()).unwrap_or(cycles),
                other => driver = Some(other.to_owned()),
            }
        }
        let Some(driver) = driver else { return usage("bench needs a driver") };
        let mut results = Vec::new();
        for image in std::iter::once(&driver).chain(against.as_ref()) {
            match cycles_per_second(image, cycles) {
                Ok((rate, per_op, _)) => {
                    println!("{image}: {rate:.0} create/cleanup/close cycles per second, {per_op:.2} Filter Manager calls per cycle");
                    results.push(rate);
                }
                Err(message) => {
                    eprintln!("fltemu bench: {message}");
                    return 2;
                }
            }
        }
        if let [first, second] = results[..] {
            println!("ratio {driver} / {}: {:.3}", against.unwrap_or_default(), first / second);
        }
        0
    }
}
