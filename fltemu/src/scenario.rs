//! Line-based scripts and the built-in scenarios of the `fltemu run` command.
//!
//! One command per line; `#` starts a comment; words are separated by spaces. Volumes are named
//! by the name given to `mount`, handles by the name given to `open`.
//!
//! | Command | Meaning |
//! |---|---|
//! | `mount VOL [nostream]` | mount `\Device\VOL` (NTFS, or a file system without stream contexts) |
//! | `open H VOL PATH [pid=N] [status=0xC0000034] [paging]` | IRP_MJ_CREATE; a failure status makes a failed create |
//! | `cleanup H` / `close H` | IRP_MJ_CLEANUP / IRP_MJ_CLOSE of handle H (close runs cleanup if needed) |
//! | `contents VOL PATH TEXT` | sets the contents of stream PATH to TEXT (the rest of the line) |
//! | `read H OFFSET LENGTH [paging]` | IRP_MJ_READ through the filter (a user buffer; `paging`: IRP_PAGING_IO \| IRP_NOCACHE into a kernel buffer with an MDL) |
//! | `write H OFFSET TEXT` | IRP_MJ_WRITE of TEXT (the rest of the line) from a user buffer |
//!
//! A handle whose open failed stays known: `cleanup`, `close`, `read` and `write` on it are
//! logged as skipped, so one script fits filters that refuse some opens.
//! | `openclose VOL PATH [COUNT]` | create, cleanup, close, COUNT times |
//! | `storm COUNT` | COUNT create/cleanup/close cycles over all mounted volumes on `--threads` threads |
//! | `race ROUNDS` | per round, `--threads` threads open one new stream at the same moment, then close |
//! | `mixed COUNT` | COUNT rounds on `--threads` threads: two handles on one stream, its alternate data stream, a cleanup while the other handle stays open, every tenth round a failed create |
//! | `detach VOL [if-allowed]` / `attach VOL` / `dismount VOL` | instance teardown (manual; `if-allowed`: a refusal is logged, not an error), manual attach, dismount |
//! | `process PID create\|exit` | the driver's process notify routines for process PID (parent 1000) |
//! | `post-irql dispatch\|passive\|config` | later post-cleanup/close callbacks run at DISPATCH_LEVEL / PASSIVE_LEVEL / the configured IRQL |
//! | `unload` | FilterUnload (mandatory); added at the end when a script does not unload |
//!
//! `race` widens the find-or-create race window (Config::widen_race_windows) while it runs.

use std::collections::HashMap;
use std::sync::Barrier;

use crate::{EmuError, Emulator, FileHandle, OpenOptions, Report, VolumeId, VolumeSpec};

/// The scenario `fltemu run X.sys` runs when no scenario or script is named: the one that finds
/// bugs.
pub const DEFAULT_SCENARIO: &str = "default";

/// The built-in scenarios: (name, script).
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "default",
        "# the run of a bare `fltemu run X.sys`: three volumes (vol3 without stream-context support),\n\
         # handles held across other I/O, shared streams and alternate data streams opened from\n\
         # --threads threads, failed creates, reads and writes of held files (seeded contents, end of\n\
         # file, a paging read) and an open of a file seeded with the bytes FLTEMU-BAD, simultaneous\n\
         # first opens, a phase with post-cleanup/close and post-read/write at DISPATCH_LEVEL, a process\n\
         # created and exiting (notify routines), a manual detach when the filter allows it, unload and\n\
         # the leak checks\n\
         mount vol1\nmount vol2\nmount vol3 nostream\n\
         open held1 vol1 \\held.txt\nopen held2 vol1 \\held.txt\nopen held3 vol1 \\held.txt:ads\nopen held4 vol2 \\dir\\held.txt\nopen held5 vol3 \\held.txt\n\
         open missing vol1 \\missing.txt status=0xC0000034\n\
         contents vol1 \\held.txt held file contents\ncontents vol1 \\marked.txt FLTEMU-BAD sample\n\
         read held1 0 64\nwrite held1 5 FILE\nread held2 0 64\nread held1 100 16\nread held3 0 16\nwrite held4 0 data on vol2\nread held4 0 4 paging\nwrite held5 0 nostream\nread held5 0 8\n\
         open marked vol1 \\marked.txt\nread marked 0 32\nclose marked\n\
         process 4242 create\nmixed 600\nstorm 3000\nrace 40\nprocess 4242 exit\n\
         post-irql dispatch\nmixed 200\nread held1 0 32\nwrite held4 3 at dispatch\nread held4 0 32\npost-irql config\n\
         cleanup held2\nclose held1\ndetach vol2 if-allowed\nclose held2\nclose held3\nclose held4\nclose held5\nopenclose vol2 \\after-detach.txt 2\n\
         unload\n",
    ),
    ("load-unload", "# DriverEntry, then FilterUnload\nunload\n"),
    ("open-storm", "mount vol1\nmount vol2\nmount vol3 nostream\nstorm 10000\nunload\n"),
    ("race", "mount vol1\nrace 500\nunload\n"),
    (
        "teardown-with-open-files",
        "mount vol1\nopen a vol1 \\a.txt\nopen b vol1 \\a.txt\nopen c vol1 \\b.txt:ads\ncleanup b\ndetach vol1\nclose a\nclose b\nclose c\nattach vol1\nopenclose vol1 \\a.txt 3\nunload\n",
    ),
    (
        "unload-with-open-files",
        "mount vol1\nmount vol2 nostream\nopen a vol1 \\a.txt\nopen b vol1 \\a.txt\nopen c vol2 \\c.txt\ncleanup b\nunload\nclose a\nclose b\nclose c\n",
    ),
    (
        "unload-with-referenced-contexts",
        "# stream and stream-handle contexts referenced by their links (and the instance context) at unload\nmount vol1\nmount vol2\nopen a vol1 \\shared.txt\nopen b vol1 \\shared.txt\nopen c vol1 \\shared.txt:ads\nopen d vol2 \\shared.txt\nstorm 200\nunload\n",
    ),
];

/// The script of a built-in scenario.
#[must_use]
pub fn scenario(name: &str) -> Option<&'static str> {
    SCENARIOS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// What a script run produced.
#[derive(Debug)]
pub struct ScriptRun {
    /// One line per command run (what ran and its outcome).
    pub log: Vec<String>,
    /// The report at unload.
    pub report: Report,
}

/// A script error: bad syntax, or an emulator failure on line `line`.
#[derive(Debug)]
pub enum ScriptError {
    /// Bad syntax.
    Syntax {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The emulator failed (crash, bug check …).
    Emulator {
        /// 1-based line.
        line: usize,
        /// The error.
        error: EmuError,
        /// The log so far.
        log: Vec<String>,
    },
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScriptError::Syntax { line, message } => write!(f, "script line {line}: {message}"),
            ScriptError::Emulator { line, error, .. } => write!(f, "script line {line}: {error}"),
        }
    }
}

/// The text after the first `words` words of a line (single spaces kept as written).
fn rest_of_line(line: &str, words: usize) -> &str {
    let mut rest = line.trim_start();
    for _ in 0..words {
        rest = rest.split_once(char::is_whitespace).map_or("", |(_, tail)| tail.trim_start());
    }
    rest
}

fn parse_status(text: &str) -> Option<i32> {
    let value = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).map_or_else(|| text.parse::<i64>().ok(), |h| i64::from_str_radix(h, 16).ok())?;
    // An NTSTATUS is written as its 32-bit pattern (0xC0000034); keep the low 32 bits.
    #[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
    Some(value as u32 as i32)
}

/// Runs `script` against `emulator` with `threads` threads for `storm` and `race`.
///
/// # Errors
/// [`ScriptError`] on bad syntax or an emulator failure.
#[allow(clippy::too_many_lines)]
pub fn run_script(emulator: &Emulator, script: &str, threads: usize) -> Result<ScriptRun, ScriptError> {
    let threads = threads.max(1);
    let mut volumes: HashMap<String, VolumeId> = HashMap::new();
    // The volume `race` runs on: the first one mounted with stream contexts (a HashMap's order is
    // random per process, and on a volume without them there is no context to race for).
    let mut race_volume: Option<VolumeId> = None;
    let mut handles: HashMap<String, FileHandle> = HashMap::new();
    // Handles whose open failed: later commands on them are logged as skipped.
    let mut failed: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut log = Vec::new();
    let mut report = None;
    for (index, raw) in script.lines().enumerate() {
        let line = index + 1;
        let text = raw.split('#').next().unwrap_or("").trim();
        if text.is_empty() {
            continue;
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        let syntax = |message: &str| ScriptError::Syntax { line, message: message.to_owned() };
        let volume = |name: &str| volumes.get(name).copied().ok_or_else(|| syntax(&format!("unknown volume {name}")));
        let fail = |error: EmuError, log: &Vec<String>| ScriptError::Emulator { line, error, log: log.clone() };
        match words.as_slice() {
            ["mount", name, rest @ ..] => {
                let device = format!("\\Device\\{name}");
                let spec = if rest.contains(&"nostream") { VolumeSpec::without_stream_contexts(&device) } else { VolumeSpec::ntfs(&device) };
                let id = emulator.mount(spec).map_err(|e| fail(e, &log))?;
                log.push(format!("mount {device}: attached={}", emulator.is_attached(id)));
                volumes.insert((*name).to_owned(), id);
                if !rest.contains(&"nostream") && race_volume.is_none() {
                    race_volume = Some(id);
                }
            }
            ["open", handle, vol, path, rest @ ..] => {
                let mut options = OpenOptions::default();
                for option in rest {
                    if let Some(pid) = option.strip_prefix("pid=") {
                        options.pid = pid.parse().map_err(|_| syntax("bad pid"))?;
                    } else if let Some(status) = option.strip_prefix("status=") {
                        options.final_status = parse_status(status).ok_or_else(|| syntax("bad status"))?;
                    } else if *option == "paging" {
                        options.paging_file = true;
                    } else {
                        return Err(syntax(&format!("unknown open option {option}")));
                    }
                }
                match emulator.open(volume(vol)?, path, &options) {
                    Ok(file) => {
                        log.push(format!("open {handle} = {path}: ok"));
                        handles.insert((*handle).to_owned(), file);
                    }
                    Err(EmuError::CreateFailed(status)) => {
                        log.push(format!("open {handle} = {path}: failed {status:#010x}"));
                        failed.insert((*handle).to_owned());
                    }
                    Err(error) => return Err(fail(error, &log)),
                }
            }
            ["cleanup" | "close" | "read" | "write", handle, ..] if failed.contains(*handle) && !handles.contains_key(*handle) => {
                log.push(format!("{} {handle}: skipped (its open failed)", words[0]));
                if words[0] == "close" {
                    failed.remove(*handle);
                }
            }
            ["contents", vol, path, ..] => {
                let text = rest_of_line(text, 3);
                emulator.set_file_contents(volume(vol)?, path, text.as_bytes());
                log.push(format!("contents {path}: {} bytes", text.len()));
            }
            ["read", handle, offset, length, rest @ ..] => {
                let file = handles.get(*handle).ok_or_else(|| syntax("unknown handle"))?;
                let offset: u64 = offset.parse().map_err(|_| syntax("bad offset"))?;
                let length: usize = length.parse().map_err(|_| syntax("bad length"))?;
                let paging = match rest {
                    [] => false,
                    ["paging"] => true,
                    _ => return Err(syntax("read takes H OFFSET LENGTH [paging]")),
                };
                let result = emulator.read(file, offset, length, &crate::IoOptions { paging, ..Default::default() }).map_err(|e| fail(e, &log))?;
                log.push(format!("read {handle} @{offset} {length}{}: status {:#010x}, {} bytes", if paging { " paging" } else { "" }, result.status, result.information));
            }
            ["write", handle, offset, ..] => {
                let file = handles.get(*handle).ok_or_else(|| syntax("unknown handle"))?;
                let offset: u64 = offset.parse().map_err(|_| syntax("bad offset"))?;
                let text = rest_of_line(text, 3);
                let result = emulator.write(file, offset, text.as_bytes(), &crate::IoOptions::default()).map_err(|e| fail(e, &log))?;
                log.push(format!("write {handle} @{offset} {}: status {:#010x}, {} bytes", text.len(), result.status, result.information));
            }
            ["cleanup", handle] => {
                let file = handles.get(*handle).ok_or_else(|| syntax("unknown handle"))?;
                emulator.cleanup(file).map_err(|e| fail(e, &log))?;
                log.push(format!("cleanup {handle}"));
            }
            ["close", handle] => {
                let file = handles.remove(*handle).ok_or_else(|| syntax("unknown handle"))?;
                emulator.close(file).map_err(|e| fail(e, &log))?;
                log.push(format!("close {handle}"));
            }
            ["openclose", vol, path, rest @ ..] => {
                let count: usize = rest.first().map_or(Ok(1), |c| c.parse()).map_err(|_| syntax("bad count"))?;
                let id = volume(vol)?;
                for _ in 0..count {
                    emulator.open_close(id, path, &OpenOptions::default()).map_err(|e| fail(e, &log))?;
                }
                log.push(format!("openclose {path} x{count}"));
            }
            ["storm", count] => {
                let count: usize = count.parse().map_err(|_| syntax("bad count"))?;
                let ids: Vec<VolumeId> = volumes.values().copied().collect();
                if ids.is_empty() {
                    return Err(syntax("storm needs a mounted volume"));
                }
                storm(emulator, &ids, count, threads).map_err(|e| fail(e, &log))?;
                log.push(format!("storm {count} opens on {threads} threads over {} volumes", ids.len()));
            }
            ["race", rounds] => {
                let rounds: usize = rounds.parse().map_err(|_| syntax("bad rounds"))?;
                let id = race_volume.or_else(|| volumes.values().next().copied()).ok_or_else(|| syntax("race needs a mounted volume"))?;
                emulator.set_widen_race_windows(true);
                let raced = race(emulator, id, rounds, threads.max(2));
                emulator.set_widen_race_windows(false);
                raced.map_err(|e| fail(e, &log))?;
                log.push(format!("race {rounds} rounds of {} simultaneous first opens", threads.max(2)));
            }
            ["detach", vol] => {
                emulator.detach(volume(vol)?).map_err(|e| fail(e, &log))?;
                log.push(format!("detach {vol}"));
            }
            ["detach", vol, "if-allowed"] => match emulator.detach(volume(vol)?) {
                Ok(()) => log.push(format!("detach {vol}")),
                Err(EmuError::DetachRefused(status)) => log.push(format!("detach {vol}: refused by the filter ({status:#010x})")),
                Err(error) => return Err(fail(error, &log)),
            },
            ["mixed", count] => {
                let count: usize = count.parse().map_err(|_| syntax("bad count"))?;
                let ids: Vec<VolumeId> = volumes.values().copied().collect();
                if ids.is_empty() {
                    return Err(syntax("mixed needs a mounted volume"));
                }
                mixed(emulator, &ids, count, threads).map_err(|e| fail(e, &log))?;
                log.push(format!("mixed {count} rounds (shared stream, alternate stream, failed creates) on {threads} threads over {} volumes", ids.len()));
            }
            ["process", pid, event] => {
                let pid: u32 = pid.parse().map_err(|_| syntax("bad pid"))?;
                let create = match *event {
                    "create" => true,
                    "exit" => false,
                    _ => return Err(syntax("process takes create or exit")),
                };
                emulator.notify_process(pid, 1000, create).map_err(|e| fail(e, &log))?;
                log.push(format!("process {pid} {event}"));
            }
            ["post-irql", level] => {
                let irql = match *level {
                    "dispatch" => Some(crate::DISPATCH_LEVEL),
                    "passive" => Some(crate::PASSIVE_LEVEL),
                    "config" => None,
                    _ => return Err(syntax("post-irql takes dispatch, passive or config")),
                };
                emulator.set_post_operation_irql(irql);
                log.push(format!("post-cleanup/close at {level}"));
            }
            ["attach", vol] => {
                let attached = emulator.attach(volume(vol)?).map_err(|e| fail(e, &log))?;
                log.push(format!("attach {vol}: {attached}"));
            }
            ["dismount", vol] => {
                emulator.dismount(volume(vol)?).map_err(|e| fail(e, &log))?;
                log.push(format!("dismount {vol}"));
            }
            ["unload"] => {
                report = Some(emulator.unload().map_err(|e| fail(e, &log))?);
                log.push("unload".into());
            }
            _ => return Err(syntax(&format!("unknown command: {text}"))),
        }
    }
    let report = if let Some(report) = report {
        report
    } else {
        log.push("unload (implicit)".into());
        emulator.unload().map_err(|error| ScriptError::Emulator { line: 0, error, log: log.clone() })?
    };
    Ok(ScriptRun { log, report })
}

/// `count` create/cleanup/close cycles over `volumes` on `threads` threads; a fifth of the
/// opens use names shared by all threads.
///
/// # Errors
/// The first emulator failure.
pub fn storm(emulator: &Emulator, volumes: &[VolumeId], count: usize, threads: usize) -> Result<(), EmuError> {
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || -> Result<(), EmuError> {
                    let mine = count / threads + usize::from(thread < count % threads);
                    for round in 0..mine {
                        let volume = volumes[(round + thread) % volumes.len()];
                        let path = if round % 5 == 0 { format!("\\shared\\f{}.txt", round % 32) } else { format!("\\t{thread}\\f{}.txt", round % 128) };
                        let options = OpenOptions { pid: 1000 + u32::try_from(thread).unwrap_or(0), ..OpenOptions::default() };
                        match emulator.open_close(volume, &path, &options) {
                            Ok(()) | Err(EmuError::CreateFailed(_)) => {}
                            Err(error) => return Err(error),
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().unwrap_or(Err(EmuError::Unloaded)))
    })
}

/// `count` rounds over `volumes` on `threads` threads; each round opens a stream twice and its
/// alternate data stream, cleans one handle up while the other stays open, closes all three,
/// and every tenth round also makes a failed create. Threads share the stream names, so the
/// opens of one stream interleave across threads.
///
/// # Errors
/// The first emulator failure.
pub fn mixed(emulator: &Emulator, volumes: &[VolumeId], count: usize, threads: usize) -> Result<(), EmuError> {
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || -> Result<(), EmuError> {
                    let mine = count / threads + usize::from(thread < count % threads);
                    let options = OpenOptions { pid: 2000 + u32::try_from(thread).unwrap_or(0), ..OpenOptions::default() };
                    for round in 0..mine {
                        let volume = volumes[(round + thread) % volumes.len()];
                        let path = format!("\\mixed\\f{}.txt", round % 16);
                        let first = emulator.open(volume, &path, &options)?;
                        let second = emulator.open(volume, &path, &options)?;
                        let stream = emulator.open(volume, &format!("{path}:ads"), &options)?;
                        emulator.cleanup(&second)?;
                        emulator.close(first)?;
                        emulator.close(stream)?;
                        emulator.close(second)?;
                        if round % 10 == 0 {
                            let missing = OpenOptions { final_status: crate::status::OBJECT_NAME_NOT_FOUND, ..options.clone() };
                            match emulator.open(volume, "\\mixed\\missing.txt", &missing) {
                                Err(EmuError::CreateFailed(_)) => {}
                                Ok(file) => emulator.close(file)?,
                                Err(error) => return Err(error),
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().unwrap_or(Err(EmuError::Unloaded)))
    })
}

/// `rounds` rounds in which `threads` threads open one new stream at the same moment.
///
/// # Errors
/// The first emulator failure.
pub fn race(emulator: &Emulator, volume: VolumeId, rounds: usize, threads: usize) -> Result<(), EmuError> {
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || -> Result<(), EmuError> {
                    // Every thread passes every barrier even after a failure, so none waits forever.
                    let mut first_error = None;
                    for round in 0..rounds {
                        barrier.wait();
                        let opened = emulator.open(volume, &format!("\\race\\r{round}.txt"), &OpenOptions::default());
                        barrier.wait();
                        let closed = opened.and_then(|file| emulator.close(file));
                        if let Err(error) = closed {
                            first_error.get_or_insert(error);
                        }
                    }
                    first_error.map_or(Ok(()), Err)
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().unwrap_or(Err(EmuError::Unloaded)))
    })
}
