//! The port subcommands: `status`, `stats`, `streams`, `handles`, `watch`.

use std::io::Write;

use clap::{Arg, ArgAction, ArgMatches, Command};
use ctxguard_protocol::{PORT_NAME, PROTOCOL_MIN_VERSION, PROTOCOL_VERSION};

use super::client::{Client, KindInfo};
use super::error::PortError;
use super::paths;
use super::transport::Connector;
#[cfg(not(windows))]
use super::transport::{Transport, TransportError};

/// The port subcommands, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortCommand {
    /// Is the driver loaded, is its port reachable, which versions speak.
    Status,
    /// The driver's context accounting and event counters.
    Stats {
        /// Print JSON instead of a table.
        json: bool,
    },
    /// Every stream the driver tracks.
    Streams {
        /// Print JSON instead of a table.
        json: bool,
    },
    /// The handles a process holds open, optionally under a path.
    Handles {
        /// The process id.
        pid: u32,
        /// Only files under this directory.
        under: Option<String>,
        /// Print JSON instead of a table.
        json: bool,
    },
    /// Open/close events live until Ctrl-C.
    Watch {
        /// One JSON object per line.
        json: bool,
        /// Stop after this many events.
        count: Option<u64>,
    },
}

const NAMES: [&str; 5] = ["status", "stats", "streams", "handles", "watch"];

fn json_flag() -> Arg {
    Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print JSON instead of a table")
}

/// The port subcommands for the companion's command line (clap's builder API: the derive
/// macros emit an allow that the workspace's forbidden lints reject).
#[must_use]
pub fn commands() -> Vec<Command> {
    vec![
        Command::new("status").about("Is the driver loaded, is its port reachable, which protocol versions both sides speak"),
        Command::new("stats").about("The driver's context accounting (per context type) and event counters").arg(json_flag()),
        Command::new("streams")
            .about("Every stream the driver tracks: open handles, first opener, first open time")
            .arg(json_flag()),
        Command::new("handles")
            .about("The handles a process holds open, optionally under a path")
            .arg(
                Arg::new("pid")
                    .long("pid")
                    .value_name("N")
                    .required(true)
                    .value_parser(clap::value_parser!(u32))
                    .help("The process id"),
            )
            .arg(
                Arg::new("under")
                    .long("under")
                    .value_name("PATH")
                    .help("Only files under this directory (C:\\dir or \\Device\\HarddiskVolume3\\dir; case-insensitive)"),
            )
            .arg(json_flag()),
        Command::new("watch")
            .about("Print open/close events live until Ctrl-C; dropped events are reported")
            .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("One JSON object per line"))
            .arg(
                Arg::new("count")
                    .long("count")
                    .value_name("N")
                    .value_parser(clap::value_parser!(u64))
                    .help("Stop after N events"),
            ),
    ]
}

/// Whether `name` is one of the port subcommands.
#[must_use]
pub fn is_command(name: &str) -> bool {
    NAMES.contains(&name)
}

impl PortCommand {
    /// The command `name` with its parsed arguments; `None` for another subcommand.
    #[must_use]
    pub fn from_matches(name: &str, matches: &ArgMatches) -> Option<Self> {
        let json = || matches.get_flag("json");
        Some(match name {
            "status" => Self::Status,
            "stats" => Self::Stats { json: json() },
            "streams" => Self::Streams { json: json() },
            "handles" => Self::Handles {
                pid: *matches.get_one::<u32>("pid")?,
                under: matches.get_one::<String>("under").cloned(),
                json: json(),
            },
            "watch" => Self::Watch { json: json(), count: matches.get_one::<u64>("count").copied() },
            _ => return None,
        })
    }
}

/// The connector of this platform: FltLib on Windows, none elsewhere.
#[must_use]
pub fn system_connector() -> Box<dyn Connector> {
    #[cfg(windows)]
    {
        Box::new(super::fltlib::connect)
    }
    #[cfg(not(windows))]
    {
        Box::new(|_: &ctxguard_protocol::ConnectContext| -> Result<Box<dyn Transport>, TransportError> {
            Err(TransportError::NotReachable("filter communication ports exist only on Windows".into()))
        })
    }
}

/// Runs `command` against `connector`, writing to `out`.
///
/// # Errors
/// [`PortError`] with what to do about it; output errors as `Other`.
pub fn execute(command: &PortCommand, connector: &dyn Connector, out: &mut dyn Write) -> Result<(), PortError> {
    let io = |error: std::io::Error| PortError::Other(format!("cannot write the output: {error}"));
    match command {
        PortCommand::Status => status(connector, out),
        PortCommand::Stats { json } => {
            let stats = Client::connect(connector, false)?.stats()?;
            if *json {
                writeln!(out, "{}", serde_json::to_string_pretty(&stats).map_err(|error| PortError::Other(error.to_string()))?)
                    .map_err(io)
            } else {
                write_stats(out, &stats).map_err(io)
            }
        }
        PortCommand::Streams { json } => {
            let streams = Client::connect(connector, false)?.streams()?;
            if *json {
                return writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&streams).map_err(|error| PortError::Other(error.to_string()))?
                )
                .map_err(io);
            }
            writeln!(out, "{:>7}  {:>7}  {:<20}  NAME", "HANDLES", "PID", "FIRST OPEN (UTC)").map_err(io)?;
            for stream in &streams {
                writeln!(
                    out,
                    "{:>7}  {:>7}  {:<20}  {}",
                    stream.open_handles,
                    stream.first_opener_pid,
                    filetime(stream.first_open_time),
                    paths::to_dos_path(&stream.name)
                )
                .map_err(io)?;
            }
            writeln!(out, "{} stream(s)", streams.len()).map_err(io)
        }
        PortCommand::Handles { pid, under, json } => {
            let prefix = under.as_deref().map(paths::to_device_path).unwrap_or_default();
            let handles = Client::connect(connector, false)?.handles(Some(*pid), &prefix)?;
            if *json {
                return writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&handles).map_err(|error| PortError::Other(error.to_string()))?
                )
                .map_err(io);
            }
            writeln!(out, "{:>10}  {:>8}  {:<20}  NAME", "ACCESS", "SHARE", "OPENED (UTC)").map_err(io)?;
            for handle in &handles {
                writeln!(
                    out,
                    "{:#010x}  {:>8}  {:<20}  {}",
                    handle.desired_access,
                    share(handle.share_access),
                    filetime(handle.create_time),
                    paths::to_dos_path(&handle.name)
                )
                .map_err(io)?;
            }
            writeln!(out, "{} handle(s) held by process {pid}", handles.len()).map_err(io)
        }
        PortCommand::Watch { json, count } => watch(connector, *json, *count, out),
    }
}

fn status(connector: &dyn Connector, out: &mut dyn Write) -> Result<(), PortError> {
    let io = |error: std::io::Error| PortError::Other(format!("cannot write the output: {error}"));
    writeln!(out, "companion: ctxguard {} (protocol {PROTOCOL_MIN_VERSION}..={PROTOCOL_VERSION})", env!("CARGO_PKG_VERSION"))
        .map_err(io)?;
    match Client::connect(connector, false) {
        Ok(client) => {
            let hello = client.hello();
            let [major, minor, patch] = hello.driver_version;
            writeln!(
                out,
                "driver:    loaded, ctxguard.sys {major}.{minor}.{patch} (protocol {}..={})",
                hello.driver_min_version, hello.driver_max_version
            )
            .map_err(io)?;
            writeln!(
                out,
                "port:      {PORT_NAME} reachable, protocol {} in use, at most {} connections",
                hello.version, hello.max_connections
            )
            .map_err(io)
        }
        Err(error) => {
            let (driver, port) = match &error {
                PortError::DriverNotLoaded => ("not loaded", "absent"),
                PortError::AccessDenied => ("loaded", "present, access denied"),
                PortError::VersionMismatch { .. } => ("loaded", "present, version mismatch"),
                _ => ("unknown", "not reachable"),
            };
            writeln!(out, "driver:    {driver}").map_err(io)?;
            writeln!(out, "port:      {PORT_NAME} {port}").map_err(io)?;
            Err(error)
        }
    }
}

fn write_stats(out: &mut dyn Write, stats: &super::client::Stats) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<14} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "CONTEXT", "ALLOCATED", "ATTACHED", "COLLISIONS", "FREED", "LIVE", "HIGH-WATER"
    )?;
    let row = |out: &mut dyn Write, name: &str, kind: &KindInfo| {
        writeln!(
            out,
            "{name:<14} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            kind.allocated, kind.attached, kind.collisions, kind.freed, kind.live, kind.high_water
        )
    };
    row(out, "instance", &stats.instance)?;
    row(out, "stream", &stats.stream)?;
    row(out, "stream-handle", &stats.stream_handle)?;
    writeln!(out, "open handles:  {}", stats.open_handles)?;
    writeln!(out, "events:        {} sent, {} dropped, {} queued", stats.events_sent, stats.events_dropped, stats.events_queued)?;
    writeln!(out, "connections:   {}", stats.connections)
}

fn watch(connector: &dyn Connector, json: bool, count: Option<u64>, out: &mut dyn Write) -> Result<(), PortError> {
    let io = |error: std::io::Error| PortError::Other(format!("cannot write the output: {error}"));
    let client = Client::connect(connector, true)?;
    let mut last_sequence = 0u64;
    let mut seen = 0u64;
    while count.is_none_or(|count| seen < count) {
        let event = client.next_event()?;
        let lost = event.sequence.saturating_sub(last_sequence.saturating_add(1));
        if lost > 0 && last_sequence > 0 {
            if json {
                writeln!(out, "{{\"dropped\":{lost}}}").map_err(io)?;
            } else {
                writeln!(out, "... {lost} event(s) dropped by the driver").map_err(io)?;
            }
        }
        last_sequence = event.sequence;
        if json {
            writeln!(out, "{}", serde_json::to_string(&event).map_err(|error| PortError::Other(error.to_string()))?)
                .map_err(io)?;
        } else {
            let truncated = if event.truncated { " (name truncated)" } else { "" };
            writeln!(
                out,
                "{:<20}  {:<5}  {:>7}  {}{truncated}",
                filetime(event.time),
                event.kind,
                event.pid,
                paths::to_dos_path(&event.name)
            )
            .map_err(io)?;
        }
        out.flush().map_err(io)?;
        seen += 1;
    }
    Ok(())
}

/// `ACCESS`-style share letters: R, W, D or `-`.
fn share(bits: u32) -> String {
    [(1, 'R'), (2, 'W'), (4, 'D')].iter().map(|(bit, letter)| if bits & bit != 0 { *letter } else { '-' }).collect()
}

/// A FILETIME (100 ns since 1601 UTC) as `YYYY-MM-DD hh:mm:ss`.
#[must_use]
pub fn filetime(time: i64) -> String {
    const SECONDS_1601_TO_1970: i64 = 11_644_473_600;
    let seconds = time.div_euclid(10_000_000) - SECONDS_1601_TO_1970;
    let days = seconds.div_euclid(86_400);
    let in_day = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", in_day / 3600, in_day % 3600 / 60, in_day % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filetime_formats_known_instants() {
        assert_eq!(filetime(0), "1601-01-01 00:00:00");
        assert_eq!(filetime(116_444_736_000_000_000), "1970-01-01 00:00:00");
        // 2024-02-29 12:34:56 UTC.
        assert_eq!(filetime((1_709_210_096 + 11_644_473_600) * 10_000_000), "2024-02-29 12:34:56");
    }

    #[test]
    fn command_line_parses_every_port_command() {
        let cli = Command::new("t").subcommands(commands());
        let parse = |args: &[&str]| {
            let matches = cli.clone().try_get_matches_from(args).unwrap();
            let (name, sub) = matches.subcommand().unwrap();
            PortCommand::from_matches(name, sub).unwrap()
        };
        assert_eq!(parse(&["t", "status"]), PortCommand::Status);
        assert_eq!(parse(&["t", "stats", "--json"]), PortCommand::Stats { json: true });
        assert_eq!(
            parse(&["t", "handles", "--pid", "42", "--under", "C:\\x"]),
            PortCommand::Handles { pid: 42, under: Some("C:\\x".into()), json: false }
        );
        assert_eq!(parse(&["t", "watch", "--count", "3"]), PortCommand::Watch { json: false, count: Some(3) });
        assert!(cli.clone().try_get_matches_from(["t", "handles"]).is_err());
        assert!(NAMES.iter().all(|name| is_command(name)));
    }

    #[test]
    fn share_letters() {
        assert_eq!(share(7), "RWD");
        assert_eq!(share(1), "R--");
    }

    #[test]
    fn off_windows_the_port_is_not_reachable_with_a_reason() {
        #[cfg(not(windows))]
        {
            let mut out = Vec::new();
            let error = execute(&PortCommand::Status, system_connector().as_ref(), &mut out).unwrap_err();
            assert!(matches!(error, PortError::NotReachable(_)), "{error}");
            assert!(String::from_utf8(out).unwrap().contains("not reachable"));
        }
    }
}
