//! Random interleavings of attach, open, cleanup, close, detach and unload across threads,
//! against ctxguard.sys in fltemu: 0 verifier violations, and at every quiescent point the
//! driver's own counters (read through the port, as the companion reads them) equal fltemu's
//! ground truth and a model of which handles are open.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod port_support;
mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use ctxguard_companion::port::{Client, Stats};
use fltemu::{Config, ContextType, Emulator, FileHandle, OpenOptions, VolumeId, VolumeSpec};
use proptest::prelude::*;
use support::{Arch, driver_image};

/// The volumes every case mounts: two NTFS, one without stream-context support (D1).
const VOLUMES: [(&str, bool); 3] =
    [("\\Device\\HarddiskVolume1", true), ("\\Device\\HarddiskVolume2", true), ("\\Device\\ThirdParty", false)];
/// Few names, so that threads collide on the same stream often.
const PATHS: [&str; 4] = ["\\a.txt", "\\a.txt:ads", "\\dir\\b.txt", "\\c.log"];

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
    (prop::collection::vec(prop::collection::vec(step(), 0..6), 1..4), between)
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

fn run_case(rounds: &[Round], close_all_first: bool) -> Result<(), TestCaseError> {
    let emulator = Arc::new(Emulator::load(driver_image(Arch::X64), Config::default()).expect("ctxguard.sys loads"));
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_stay_balanced(rounds in prop::collection::vec(round(), 1..5), close_all_first in any::<bool>()) {
        run_case(&rounds, close_all_first)?;
    }
}
