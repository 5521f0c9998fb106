//! Random interleavings of attach, open, cleanup, close, detach and unload across 4 threads,
//! against ctxguard.sys in fltemu: 0 verifier violations, and at every quiescent point the
//! driver's own counters (read through the port, as the companion reads them) equal fltemu's
//! ground truth and a model of which handles are open. Every case runs under a seeded fltemu
//! schedule (the seed is part of the case, so a failure prints it).
//!
//! The suite runs 1,000 cases; the long-run mode takes the count from the environment:
//!
//! ```text
//! CTXGUARD_PROPTEST_CASES=10000 cargo test --release --test contexts_property -- --nocapture
//! ```
//!
//! `missing_release_mutants_fail` proves the property catches a lost release: each
//! FltReleaseContext call site of ctxguard.sys is replaced by a NOP in turn, and every mutant
//! whose site the case reaches must fail it.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod port_support;
mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ctxguard_companion::port::{Client, Stats};
use fltemu::{Config, ContextType, Emulator, FileHandle, OpenOptions, VolumeId, VolumeSpec};
use proptest::prelude::*;
use support::{Arch, driver_image};

/// The volumes every case mounts: two NTFS, one without stream-context support (D1).
const VOLUMES: [(&str, bool); 3] =
    [("\\Device\\HarddiskVolume1", true), ("\\Device\\HarddiskVolume2", true), ("\\Device\\ThirdParty", false)];
/// Few names, so that threads collide on the same stream often.
const PATHS: [&str; 4] = ["\\a.txt", "\\a.txt:ads", "\\dir\\b.txt", "\\c.log"];
/// Threads per round.
const THREADS: usize = 4;
/// Cases in the suite; `CTXGUARD_PROPTEST_CASES` sets the long-run count.
const QUICK_CASES: u32 = 1_000;

fn cases() -> u32 {
    std::env::var("CTXGUARD_PROPTEST_CASES").map_or(QUICK_CASES, |value| {
        value.replace('_', "").parse().unwrap_or_else(|error| panic!("CTXGUARD_PROPTEST_CASES={value}: {error}"))
    })
}

#[derive(Clone, Debug)]
enum Step {
    Open {
        volume: usize,
        path: usize,
        pid: u32,
        paging_file: bool,
    },
    /// Cleans up one of this thread's open handles (chosen by index).
    Cleanup(usize),
    /// Closes one of this thread's cleaned-up handles.
    Close(usize),
}

#[derive(Clone, Debug)]
enum Between {
    Nothing,
    Detach(usize),
    Attach(usize),
}

#[derive(Clone, Debug)]
struct Round {
    threads: Vec<Vec<Step>>,
    between: Between,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..VOLUMES.len(), 0..PATHS.len(), 100_u32..104, prop::bool::weighted(0.05))
            .prop_map(|(volume, path, pid, paging_file)| Step::Open { volume, path, pid, paging_file }),
        2 => any::<usize>().prop_map(Step::Cleanup),
        2 => any::<usize>().prop_map(Step::Close),
    ]
}

fn round() -> impl Strategy<Value = Round> {
    let between = prop_oneof![
        3 => Just(Between::Nothing),
        1 => (0..VOLUMES.len()).prop_map(Between::Detach),
        1 => (0..VOLUMES.len()).prop_map(Between::Attach),
    ];
    (prop::collection::vec(prop::collection::vec(step(), 0..6), THREADS), between)
        .prop_map(|(threads, between)| Round { threads, between })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    CleanedUp,
    Closed,
}

/// What the model knows of one FILE_OBJECT.
struct ModelHandle {
    file: FileHandle,
    volume: usize,
    path: usize,
    state: State,
    /// Opened while ctxguard was attached to a volume with stream contexts, and still counted.
    tracked: bool,
}

/// The model: handles and attachment. Whether a stream context is still linked can depend on
/// the order of a close and an open racing on the same stream, so the model bounds it.
struct Model {
    handles: Vec<ModelHandle>,
    attached: [bool; VOLUMES.len()],
}

impl Model {
    fn open_handles(&self) -> u64 {
        self.handles.iter().filter(|handle| handle.tracked && handle.state == State::Open).count() as u64
    }

    /// Streams that must carry a linked stream context: a tracked handle is still open on them.
    fn streams_at_least(&self) -> usize {
        self.distinct_streams(|handle| handle.tracked)
    }

    /// Streams that may carry one: any FILE_OBJECT is open on them on an attached volume with
    /// stream contexts (a stream context lives until the stream's last close, B9).
    fn streams_at_most(&self) -> usize {
        self.distinct_streams(|handle| self.attached[handle.volume] && VOLUMES[handle.volume].1)
    }

    fn distinct_streams(&self, counts: impl Fn(&ModelHandle) -> bool) -> usize {
        let streams: BTreeSet<(usize, usize)> = self
            .handles
            .iter()
            .filter(|handle| handle.state != State::Closed && counts(handle))
            .map(|handle| (handle.volume, handle.path))
            .collect();
        streams.len()
    }

    /// One per FILE_OBJECT opened while tracked: it outlives cleanup and goes at close or
    /// with its instance.
    fn stream_handle_contexts(&self) -> usize {
        self.handles.iter().filter(|handle| handle.tracked).count()
    }
}

/// Runs one thread's steps, recording each in the model as it completes.
fn run_thread(emulator: &Emulator, model: &Mutex<Model>, owned: &[usize], steps: &[Step]) {
    for step in steps {
        match *step {
            Step::Open { volume, path, pid, paging_file } => {
                let options = OpenOptions { pid, paging_file, ..OpenOptions::default() };
                let attached = model.lock().unwrap().attached[volume];
                let file = emulator.open(VolumeId(volume), PATHS[path], &options).expect("open");
                let tracked = attached && VOLUMES[volume].1 && !paging_file;
                model.lock().unwrap().handles.push(ModelHandle { file, volume, path, state: State::Open, tracked });
            }
            Step::Cleanup(choice) | Step::Close(choice) => {
                let wanted = if matches!(step, Step::Cleanup(_)) { State::Open } else { State::CleanedUp };
                let candidates: Vec<usize> = {
                    let model = model.lock().unwrap();
                    owned.iter().copied().filter(|&index| model.handles[index].state == wanted).collect()
                };
                if candidates.is_empty() {
                    continue;
                }
                let index = candidates[choice % candidates.len()];
                let file = FileHandle { file_object: model.lock().unwrap().handles[index].file.file_object, pid: 0 };
                if wanted == State::Open {
                    emulator.cleanup(&file).expect("cleanup");
                    let mut model = model.lock().unwrap();
                    model.handles[index].state = State::CleanedUp;
                } else {
                    emulator.close(file).expect("close");
                    close_in_model(&mut model.lock().unwrap(), index);
                }
            }
        }
    }
}

/// A closed FILE_OBJECT stops counting for anything.
fn close_in_model(model: &mut Model, index: usize) {
    model.handles[index].tracked = false;
    model.handles[index].state = State::Closed;
}

fn stats(emulator: &Arc<Emulator>) -> Stats {
    let client = Client::connect(&port_support::connector(emulator), false).expect("the companion connects");
    client.stats().expect("GetStats")
}

/// The quiescent-point check: verifier, ground truth, model and the driver's own counters.
fn check(emulator: &Arc<Emulator>, model: &Model, when: &str) -> Result<(), TestCaseError> {
    prop_assert!(emulator.violations().is_empty(), "{when}: {:?}", emulator.violations());
    let stats = stats(emulator);
    let (instances, streams, handles) = (
        emulator.live_context_count(ContextType::Instance) as u64,
        emulator.live_context_count(ContextType::Stream) as u64,
        emulator.live_context_count(ContextType::StreamHandle) as u64,
    );
    prop_assert_eq!(instances, model.attached.iter().filter(|attached| **attached).count() as u64, "{}: instances", when);
    prop_assert!(
        (model.streams_at_least() as u64..=model.streams_at_most() as u64).contains(&streams),
        "{}: {} linked stream contexts, expected {}..={}",
        when,
        streams,
        model.streams_at_least(),
        model.streams_at_most()
    );
    prop_assert_eq!(handles, model.stream_handle_contexts() as u64, "{}: stream-handle contexts", when);
    prop_assert_eq!(stats.instance.live, instances, "{}: driver's live instance contexts", when);
    prop_assert_eq!(stats.stream.live, streams, "{}: driver's live stream contexts", when);
    prop_assert_eq!(stats.stream_handle.live, handles, "{}: driver's live stream-handle contexts", when);
    prop_assert_eq!(stats.open_handles, model.open_handles(), "{}: driver's open handles", when);
    for (name, kind) in [("instance", stats.instance), ("stream", stats.stream), ("stream-handle", stats.stream_handle)] {
        prop_assert_eq!(kind.allocated, kind.freed + kind.live, "{}: {} allocated = freed + live", when, name);
        prop_assert!(kind.high_water >= kind.live, "{}: {} high-water below live", when, name);
    }
    Ok(())
}

fn run_case(image: &[u8], seed: u64, rounds: &[Round], close_all_first: bool) -> Result<(), TestCaseError> {
    let config = Config { schedule_seed: Some(seed), ..Config::default() };
    let emulator = Arc::new(Emulator::load_bytes(image, config).expect("ctxguard.sys loads"));
    for (name, stream_contexts) in VOLUMES {
        let spec = if stream_contexts { VolumeSpec::ntfs(name) } else { VolumeSpec::without_stream_contexts(name) };
        emulator.mount(spec).expect("mount");
    }
    let model = Mutex::new(Model { handles: Vec::new(), attached: [true; VOLUMES.len()] });
    check(&emulator, &model.lock().unwrap(), "after mounting")?;

    for (number, round) in rounds.iter().enumerate() {
        let thread_count = round.threads.len();
        let handle_count = model.lock().unwrap().handles.len();
        std::thread::scope(|scope| {
            let workers: Vec<_> = round
                .threads
                .iter()
                .enumerate()
                .map(|(thread, steps)| {
                    // Each existing handle belongs to one thread, so no two threads race on it.
                    let owned: Vec<usize> = (0..handle_count).filter(|index| index % thread_count == thread).collect();
                    let (emulator, model) = (&emulator, &model);
                    scope.spawn(move || run_thread(emulator, model, &owned, steps))
                })
                .collect();
            for worker in workers {
                worker.join().expect("worker thread");
            }
        });
        let mut model_guard = model.lock().unwrap();
        match round.between {
            Between::Nothing => {}
            Between::Detach(volume) => {
                if model_guard.attached[volume] {
                    emulator.detach(VolumeId(volume)).expect("detach");
                    model_guard.attached[volume] = false;
                    for handle in model_guard.handles.iter_mut().filter(|handle| handle.volume == volume) {
                        handle.tracked = false;
                    }
                }
            }
            Between::Attach(volume) => {
                if !model_guard.attached[volume] {
                    prop_assert!(emulator.attach(VolumeId(volume)).expect("attach"), "InstanceSetup declined volume {}", volume);
                    model_guard.attached[volume] = true;
                }
            }
        }
        check(&emulator, &model_guard, &format!("after round {number}"))?;
    }

    if close_all_first {
        let mut model_guard = model.lock().unwrap();
        for index in 0..model_guard.handles.len() {
            if model_guard.handles[index].state == State::Closed {
                continue;
            }
            let file = FileHandle { file_object: model_guard.handles[index].file.file_object, pid: 0 };
            if model_guard.handles[index].state == State::Open {
                emulator.cleanup(&file).expect("cleanup");
                model_guard.handles[index].state = State::CleanedUp;
            }
            emulator.close(file).expect("close");
            close_in_model(&mut model_guard, index);
        }
        check(&emulator, &model_guard, "after closing everything")?;
        prop_assert_eq!(emulator.live_context_count(ContextType::Stream), 0);
        prop_assert_eq!(emulator.live_context_count(ContextType::StreamHandle), 0);
    }

    let report = emulator.unload().expect("unload");
    prop_assert!(report.is_clean(), "{}", report);
    prop_assert_eq!((report.pool_bytes_outstanding, report.contexts_outstanding), (0, 0), "{}", report);
    Ok(())
}

fn driver_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| std::fs::read(driver_image(Arch::X64)).expect("ctxguard.sys is readable"))
}

#[test]
fn random_interleavings_stay_balanced() {
    let cases = cases();
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    let started = Instant::now();
    proptest!(config, |(rounds in prop::collection::vec(round(), 1..5), close_all_first in any::<bool>(), seed in any::<u64>())| {
        run_case(driver_bytes(), seed, &rounds, close_all_first)?;
    });
    println!("contexts_property: {cases} cases, {THREADS} threads per round, {:.1} s", started.elapsed().as_secs_f64());
}

/// One way to take a FltReleaseContext out of the image: the bytes at `rva` and what replaces them.
struct ReleaseSite {
    rva: usize,
    expect: &'static [u8],
    patch: &'static [u8],
    what: &'static str,
}

/// Where the image reaches `function` through the import address table: each `call [rip+disp32]`
/// (FF 15, replaced by a 6-byte NOP), each tail jump `jmp [rip+disp32]` (REX.W FF 25 or FF 25,
/// replaced by `ret` so the function returns without releasing), and each direct `call rel32`
/// (E8) of a function that ends in such a tail jump (found through `.pdata`; replaced by a 5-byte
/// NOP, as if a guard's drop had been forgotten there). fltctx funnels releases through a few
/// drop functions, so most releases are the calls of those.
fn import_call_sites(image: &[u8], function: &str) -> Vec<ReleaseSite> {
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([image[at], image[at + 1]]));
    let u32_at = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap()) as usize;
    let pe = u32_at(0x3C);
    let sections = pe + 24 + u16_at(pe + 20);
    let table: Vec<(Vec<u8>, usize, usize, usize)> = (0..u16_at(pe + 6))
        .map(|index| {
            let header = sections + 40 * index;
            let name = image[header..header + 8].iter().copied().take_while(|b| *b != 0).collect();
            (name, u32_at(header + 12), u32_at(header + 8).max(u32_at(header + 16)), u32_at(header + 20))
        })
        .collect();
    let offset = |rva: usize| table.iter().find(|(_, va, size, _)| (*va..va + size).contains(&rva)).map(|(_, va, _, raw)| rva - va + raw).unwrap();
    let c_string = |at: usize| image[at..].iter().copied().take_while(|b| *b != 0).collect::<Vec<u8>>();
    // Data directory 1 (imports) of the PE32+ optional header.
    let mut descriptor = offset(u32_at(pe + 24 + 112 + 8));
    let mut slot = None;
    while u32_at(descriptor + 12) != 0 {
        let (names, addresses) = (u32_at(descriptor), u32_at(descriptor + 16));
        for index in 0.. {
            let entry = u64::from_le_bytes(image[offset(names) + 8 * index..][..8].try_into().unwrap());
            if entry == 0 {
                break;
            }
            if entry >> 63 == 0 && c_string(offset(usize::try_from(entry).unwrap()) + 2) == function.as_bytes() {
                slot = Some(addresses + 8 * index);
            }
        }
        descriptor += 20;
    }
    let slot = slot.unwrap_or_else(|| panic!("{function} is not imported"));
    let (_, text_rva, text_size, text_raw) = table.iter().find(|(name, ..)| name == b".text").cloned().unwrap();
    let text = &image[text_raw..text_raw + text_size];
    let targets = |opcode: &[u8], at: usize| {
        text[at..].starts_with(opcode) && at + opcode.len() + 4 <= text.len() && {
            let end = at + opcode.len() + 4;
            let displacement = i32::from_le_bytes(text[end - 4..end].try_into().unwrap());
            (text_rva + end).wrapping_add_signed(displacement as isize) == slot
        }
    };
    let mut sites = Vec::new();
    let mut tail_jumps = Vec::new();
    for at in 0..text.len() {
        if targets(&[0xFF, 0x15], at) {
            sites.push(ReleaseSite { rva: text_rva + at, expect: &[0xFF, 0x15], patch: &[0x66, 0x0F, 0x1F, 0x44, 0x00, 0x00], what: "call" });
        } else if targets(&[0x48, 0xFF, 0x25], at) {
            sites.push(ReleaseSite { rva: text_rva + at, expect: &[0x48, 0xFF, 0x25], patch: &[0xC3], what: "tail jump" });
            tail_jumps.push(text_rva + at);
        } else if targets(&[0xFF, 0x25], at) && (at == 0 || text[at - 1] != 0x48) {
            sites.push(ReleaseSite { rva: text_rva + at, expect: &[0xFF, 0x25], patch: &[0xC3], what: "tail jump" });
            tail_jumps.push(text_rva + at);
        }
    }
    // Data directory 3 (exception): RUNTIME_FUNCTION { begin, end, unwind } entries.
    let (pdata_rva, pdata_size) = (u32_at(pe + 24 + 112 + 24), u32_at(pe + 24 + 112 + 28));
    let pdata = offset(pdata_rva);
    let releasing_functions: Vec<usize> = (0..pdata_size / 12)
        .map(|index| (u32_at(pdata + 12 * index), u32_at(pdata + 12 * index + 4)))
        .filter(|(begin, end)| tail_jumps.iter().any(|jump| (*begin..*end).contains(jump)))
        .map(|(begin, _)| begin)
        .collect();
    for at in 0..text.len().saturating_sub(5) {
        if text[at] == 0xE8 {
            let displacement = i32::from_le_bytes(text[at + 1..at + 5].try_into().unwrap());
            let target = (text_rva + at + 5).wrapping_add_signed(displacement as isize);
            if releasing_functions.contains(&target) {
                sites.push(ReleaseSite { rva: text_rva + at, expect: &[0xE8], patch: &[0x0F, 0x1F, 0x44, 0x00, 0x00], what: "call of a releasing drop" });
            }
        }
    }
    sites
}

/// A fixed case on one thread (so a mutant's calls are the same from run to run): opens on every
/// volume, cleanups, closes, a detach and a re-attach with files open, then close everything.
fn fixed_case() -> (Vec<Round>, bool) {
    let open = |volume, path, pid| Step::Open { volume, path, pid, paging_file: false };
    let rounds = vec![
        Round { threads: vec![vec![open(0, 0, 100), open(0, 0, 101), open(0, 1, 100), open(1, 2, 102), open(2, 3, 103)]], between: Between::Nothing },
        Round { threads: vec![vec![Step::Cleanup(0), Step::Close(0), Step::Cleanup(1)]], between: Between::Detach(1) },
        Round { threads: vec![vec![open(1, 2, 100), Step::Cleanup(0), Step::Close(0)]], between: Between::Attach(1) },
        Round { threads: vec![vec![open(1, 2, 101), open(0, 3, 100), Step::Cleanup(2)]], between: Between::Nothing },
    ];
    (rounds, true)
}

/// FltReleaseContext calls a deterministic run of the fixed case makes.
fn releases_made(image: &[u8]) -> u64 {
    let emulator = Emulator::load_bytes(image, Config::default()).expect("loads");
    for (name, stream_contexts) in VOLUMES {
        emulator.mount(if stream_contexts { VolumeSpec::ntfs(name) } else { VolumeSpec::without_stream_contexts(name) }).expect("mount");
    }
    let files: Vec<FileHandle> =
        (0..4).map(|index| emulator.open(VolumeId(index % 2), PATHS[index], &OpenOptions::default()).expect("open")).collect();
    for file in files {
        emulator.close(file).expect("close");
    }
    let _ = emulator.unload();
    emulator.calls().total("FltReleaseContext")
}

#[test]
fn missing_release_mutants_fail() {
    let original = driver_bytes();
    let sites = import_call_sites(original, "FltReleaseContext");
    assert!(!sites.is_empty(), "ctxguard.sys calls FltReleaseContext");
    let (rounds, close_all_first) = fixed_case();
    run_case(original, 1, &rounds, close_all_first).expect("the unmutated driver passes the fixed case");
    let baseline = releases_made(original);
    let mut killed = Vec::new();
    let mut not_reached = Vec::new();
    for site in &sites {
        let rva = site.rva;
        let mut mutant = original.to_vec();
        let at = {
            // The site's file offset: .text is the first section and file-aligned like its RVA.
            let pe = u32::from_le_bytes(original[0x3C..0x40].try_into().unwrap()) as usize;
            let header = pe + 24 + usize::from(u16::from_le_bytes([original[pe + 20], original[pe + 21]]));
            let va = u32::from_le_bytes(original[header + 12..header + 16].try_into().unwrap()) as usize;
            let raw = u32::from_le_bytes(original[header + 20..header + 24].try_into().unwrap()) as usize;
            rva - va + raw
        };
        assert_eq!(&mutant[at..at + site.expect.len()], site.expect, "{} at {rva:#x}", site.what);
        mutant[at..at + site.patch.len()].copy_from_slice(site.patch);
        fltemu::fix_checksum(&mut mutant);
        if releases_made(&mutant) == baseline {
            // Removing it changes nothing on the reference workload: an error or race path.
            not_reached.push(rva);
            continue;
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(&mutant, 1, &rounds, close_all_first)));
        match outcome {
            Ok(Ok(())) => panic!("the mutant without the FltReleaseContext {} at RVA {rva:#x} passed the property", site.what),
            Ok(Err(failure)) => killed.push((rva, failure.to_string())),
            Err(_) => killed.push((rva, "panicked".into())),
        }
    }
    println!("FltReleaseContext release sites (calls, tail jumps, calls of releasing drops): {}; mutants killed: {}; sites the reference workload does not reach (error or race paths): {:x?}", sites.len(), killed.len(), not_reached);
    for (rva, failure) in &killed {
        println!("  RVA {rva:#x}: {}", failure.lines().next().unwrap_or_default());
    }
    assert!(killed.len() >= 2, "at least the stream and stream-handle releases are reached and caught: {killed:?}");
}
