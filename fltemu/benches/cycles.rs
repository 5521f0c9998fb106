//! Benchmark (not a test): emulated create/cleanup/close cycles per second through ctxguard.sys,
//! through the correct pass-through fixture (Rust, contexts through fltctx) and through the C
//! pass-through driver (`c-drivers/drivers/passthrough.c`: callbacks that only count, no lock of
//! its own, so its scaling is fltemu's) on 1 and 4 threads, side by side, their ratios,
//! the 4-thread / 1-thread speed-up, the Filter Manager calls per cycle by operation, and
//! callgrind's instruction count per cycle (repeatable where wall clock on a shared machine is
//! not). Run with `cargo bench -p fltemu`; images are built with cargo into
//! `$CARGO_TARGET_DIR/fltemu-bench` (or given as `CTXGUARD_SYS` / `FIXTURE_SYS`; the C driver by
//! the tests' C build, or `C_PASSTHROUGH_SYS`, and its row is skipped when clang is missing). Without
//! valgrind on PATH (or with `FLTEMU_BENCH_CALLGRIND=0`) the instruction counts are skipped.
//!
//! Instructions per cycle come from two callgrind runs of this binary in its child mode
//! (`FLTEMU_BENCH_CHILD=<image>|<threads>|<cycles>`, which only loads, warms up and runs the
//! cycles), with N1 and N2 cycles: (Ir(N2) − Ir(N1)) / (N2 − N1), so loading, warm-up and
//! unload cancel out.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() {
    bench::main();
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[path = "../tests/c_build/mod.rs"]
mod c_build;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod bench {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::Instant;

    use fltemu::{CallCounts, Config, Emulator, OpenOptions, VolumeSpec};

    const CYCLES: usize = 20_000;
    const THREADS: usize = 4;
    const ROUNDS: usize = 3;
    /// Warm-up cycles before any measurement (stream and name paths hot, workers started).
    const WARM_UP: usize = 500;
    /// The two cycle counts whose callgrind totals are subtracted.
    const CALLGRIND_CYCLES: (usize, usize) = (1_000, 3_000);

    fn build(package: &str, artifact: &str) -> PathBuf {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from).join("fltemu-bench");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&workspace)
            .args(["build", "--release", "--quiet", "-p", package, "--target", "x86_64-pc-windows-msvc", "--target-dir"])
            .arg(&target)
            .status()
            .expect("cargo starts");
        assert!(status.success(), "building {package} failed");
        target.join("x86_64-pc-windows-msvc/release").join(format!("{artifact}.dll"))
    }

    struct Figures {
        single: f64,
        threaded: f64,
        /// 4 threads with each caller and its worker pinned to one CPU (see [`cycles`]).
        paired: f64,
        /// CPU microseconds per cycle in that phase.
        cpu_paired: f64,
        calls: CallCounts,
        /// Instructions per cycle on 1 and on 4 threads (None without valgrind).
        instructions: Option<(f64, f64)>,
        /// Waits on a held fltemu lock per cycle, on 4 threads.
        waits: f64,
        /// CPU time (user + system, the whole process) per cycle in microseconds, on 1 and on 4
        /// threads: what bounds the speed-up when the CPUs are busy is this ratio, not the lock.
        cpu: (f64, f64),
        /// Context switches (voluntary, involuntary) per cycle, on 1 and on 4 threads.
        switches: ((f64, f64), (f64, f64)),
    }

    /// This process's CPU time in microseconds and its voluntary and involuntary context
    /// switches so far (getrusage(2), RUSAGE_SELF: all threads).
    fn usage() -> (f64, f64, f64) {
        // SAFETY: a zeroed rusage is a valid output buffer.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: RUSAGE_SELF with a valid, writable rusage.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut usage) };
        #[allow(clippy::cast_precision_loss)]
        let micros = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
        #[allow(clippy::cast_precision_loss)]
        (micros(usage.ru_utime) + micros(usage.ru_stime), usage.ru_nvcsw as f64, usage.ru_nivcsw as f64)
    }

    /// Pins the calling thread (and the threads it spawns from now on) to `cpus`.
    fn pin(cpus: &[usize]) {
        // SAFETY: a zeroed cpu_set_t is an empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for cpu in cpus {
            // SAFETY: `cpu` is below CPU_SETSIZE.
            unsafe { libc::CPU_SET(*cpu, &mut set) };
        }
        // SAFETY: sets this thread's affinity to a valid set.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) };
    }

    /// Runs `cycles` create/cleanup/close cycles split over `threads` threads.
    /// With `pairs`, thread `i` pins itself to CPU `i mod CPUs` first, so the driver worker it
    /// starts (which inherits the affinity) runs on the same CPU: every hand-off is then a
    /// same-CPU switch, as in the 1-thread phase, and the CPUs split the pairs between them.
    fn cycles(emulator: &Emulator, volume: fltemu::VolumeId, threads: usize, cycles: usize, pairs: bool) {
        let options = OpenOptions::default();
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let options = &options;
                scope.spawn(move || {
                    if pairs {
                        pin(&[thread % cpus]);
                    }
                    for index in 0..cycles / threads {
                        emulator.open_close(volume, &format!("\\t{thread}\\f{}.txt", index % 64), options).unwrap();
                    }
                });
            }
        });
    }

    /// The loaded image with one NTFS volume, warmed up.
    fn loaded(image: &Path) -> (Emulator, fltemu::VolumeId) {
        let config = Config { schedule_seed: None, ..Config::default() };
        let emulator = Emulator::load(image, config).expect("image loads");
        let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
        let options = OpenOptions::default();
        for index in 0..WARM_UP {
            emulator.open_close(volume, &format!("\\f{}.txt", index % 64), &options).unwrap();
        }
        (emulator, volume)
    }

    /// Best rate, calls, lock waits per cycle, CPU microseconds per cycle and context switches
    /// (voluntary, involuntary) per cycle.
    fn run(image: &Path, threads: usize, pairs: bool) -> (f64, CallCounts, f64, f64, (f64, f64)) {
        let (emulator, volume) = loaded(image);
        let before = emulator.calls();
        let waits_before = emulator.lock_waits();
        // Best of three rounds: the machine is shared, and the slowest rounds measure the
        // neighbours, not the driver. CPU time and switches are the best round's, so they
        // describe the same cycles as its rate.
        let mut best: f64 = 0.0;
        let mut best_usage = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0));
        for _ in 0..ROUNDS {
            let usage_before = usage();
            let start = Instant::now();
            cycles(&emulator, volume, threads, CYCLES, pairs);
            #[allow(clippy::cast_precision_loss)]
            let rate = (CYCLES / threads * threads) as f64 / start.elapsed().as_secs_f64();
            if rate > best {
                best = rate;
                best_usage = (usage_before, usage());
            }
        }
        let (usage_before, usage_after) = best_usage;
        let calls = emulator.calls().since(&before);
        #[allow(clippy::cast_precision_loss)]
        let waits = (emulator.lock_waits() - waits_before) as f64 / (CYCLES / threads * threads * ROUNDS) as f64;
        #[allow(clippy::cast_precision_loss)]
        let round = (CYCLES / threads * threads) as f64;
        let cpu = (usage_after.0 - usage_before.0) / round;
        let switches = ((usage_after.1 - usage_before.1) / round, (usage_after.2 - usage_before.2) / round);
        let report = emulator.unload().unwrap();
        assert!(report.is_clean(), "{report}");
        (best, calls, waits, cpu, switches)
    }

    /// The child mode: load, warm up, run the cycles, unload (under callgrind).
    fn child(spec: &str) {
        let mut parts = spec.split('|');
        let (Some(image), Some(threads), Some(count)) = (parts.next(), parts.next(), parts.next()) else { panic!("FLTEMU_BENCH_CHILD={spec}") };
        let (threads, count) = (threads.parse().expect("threads"), count.parse().expect("cycles"));
        let (emulator, volume) = loaded(Path::new(image));
        cycles(&emulator, volume, threads, count, false);
        let report = emulator.unload().unwrap();
        assert!(report.is_clean(), "{report}");
    }

    /// Total instructions (callgrind's Ir) of one child run.
    fn instructions(image: &Path, threads: usize, count: usize) -> Option<u64> {
        let out = std::env::temp_dir().join(format!("fltemu-bench-callgrind-{}-{threads}-{count}.out", std::process::id()));
        let status = Command::new("valgrind")
            .args(["--tool=callgrind", "--quiet"])
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(std::env::current_exe().ok()?)
            .env("FLTEMU_BENCH_CHILD", format!("{}|{threads}|{count}", image.display()))
            .status()
            .ok()?;
        let text = std::fs::read_to_string(&out).ok();
        let _ = std::fs::remove_file(&out);
        if !status.success() {
            eprintln!("callgrind run of {} on {threads} threads failed: {status}", image.display());
            return None;
        }
        text?.lines().find_map(|line| line.strip_prefix("summary:").or_else(|| line.strip_prefix("totals:")))?.split_whitespace().next()?.parse().ok()
    }

    /// Instructions per cycle: the difference of two runs, so set-up and tear-down cancel out.
    #[allow(clippy::cast_precision_loss)]
    fn instructions_per_cycle(image: &Path, threads: usize) -> Option<f64> {
        let (small, large) = CALLGRIND_CYCLES;
        let (low, high) = (instructions(image, threads, small)?, instructions(image, threads, large)?);
        Some(high.saturating_sub(low) as f64 / (large - small) as f64)
    }

    fn callgrind_available() -> bool {
        std::env::var("FLTEMU_BENCH_CALLGRIND").map_or(true, |value| value != "0")
            && Command::new("valgrind").arg("--version").output().is_ok_and(|output| output.status.success())
    }

    fn measure(image: &Path, callgrind: bool) -> Figures {
        let all: Vec<usize> = (0..std::thread::available_parallelism().map_or(1, std::num::NonZero::get)).collect();
        // One thread, caller and driver workers pinned to one CPU: the futex hand-off is then a
        // plain context switch instead of a cross-CPU wake-up whose latency varies run to run.
        pin(&[0]);
        let (single, calls, _, cpu_single, switches_single) = run(image, 1, false);
        pin(&all);
        let (threaded, _, waits, cpu_threaded, switches_threaded) = run(image, THREADS, false);
        let (paired, _, _, cpu_paired, _) = run(image, THREADS, true);
        let instructions = if callgrind { instructions_per_cycle(image, 1).zip(instructions_per_cycle(image, THREADS)) } else { None };
        Figures { single, threaded, paired, cpu_paired, calls, instructions, waits, cpu: (cpu_single, cpu_threaded), switches: (switches_single, switches_threaded) }
    }

    pub fn main() {
        if let Ok(spec) = std::env::var("FLTEMU_BENCH_CHILD") {
            child(&spec);
            return;
        }
        let ctxguard = std::env::var_os("CTXGUARD_SYS").map_or_else(|| build("ctxguard", "ctxguard"), PathBuf::from);
        let fixture = std::env::var_os("FIXTURE_SYS").map_or_else(|| build("fltemu-fixture-driver", "fltemu_fixture_driver"), PathBuf::from);
        let c_passthrough = std::env::var_os("C_PASSTHROUGH_SYS").map(PathBuf::from).or_else(|| {
            // The C build panics naming a missing tool; the bench then leaves that row out.
            std::panic::catch_unwind(|| crate::c_build::CDriver::new("passthrough").build())
                .map_err(|_| println!("(the C pass-through driver did not build: its row is left out)"))
                .ok()
        });
        let callgrind = callgrind_available();
        if !callgrind {
            println!("(valgrind not found or FLTEMU_BENCH_CALLGRIND=0: no instruction counts)");
        }
        let a = measure(&ctxguard, callgrind);
        let b = measure(&fixture, callgrind);
        let c = c_passthrough.as_deref().map(|image| measure(image, callgrind));
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        println!("create/cleanup/close cycles ({CYCLES} per round, best of {ROUNDS} rounds, re-opens of 64 files per thread on one NTFS volume; {cpus} CPUs)");
        println!("| driver | 1 thread (cycles/s) | {THREADS} threads (cycles/s) | {THREADS}-thread speed-up | instructions/cycle, 1 thread | instructions/cycle, {THREADS} threads | Flt calls per cycle | lock waits per cycle, {THREADS} threads |");
        println!("|---|---|---|---|---|---|---|---|");
        let counted = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
        let rows: Vec<(&str, &Figures)> = [("ctxguard.sys", Some(&a)), ("pass-through fixture", Some(&b)), ("C pass-through", c.as_ref())]
            .into_iter()
            .filter_map(|(name, figures)| figures.map(|f| (name, f)))
            .collect();
        #[allow(clippy::cast_precision_loss)]
        for &(name, f) in &rows {
            println!(
                "| {name} | {:.0} | {:.0} | {:.2}x | {} | {} | {:.2} | {:.4} |",
                f.single,
                f.threaded,
                f.threaded / f.single,
                counted(f.instructions.map(|i| i.0)),
                counted(f.instructions.map(|i| i.1)),
                f.calls.total_prefix("Flt") as f64 / (CYCLES * ROUNDS) as f64,
                f.waits
            );
        }
        println!("ratio ctxguard / pass-through, wall clock: {:.2} (1 thread), {:.2} ({THREADS} threads)", a.single / b.single, a.threaded / b.threaded);
        if let (Some(ia), Some(ib)) = (a.instructions, b.instructions) {
            println!("ratio ctxguard / pass-through, by instructions per cycle (pass-through / ctxguard): {:.2} (1 thread), {:.2} ({THREADS} threads)", ib.0 / ia.0, ib.1 / ia.1);
        }
        println!("ceiling of the {THREADS}-thread speed-up on {cpus} CPUs: {cpus}.00x (the 1-thread phase runs on one CPU)");
        println!("\nCPU time per cycle (user + system, all threads) and context switches per cycle:");
        println!("| driver | CPU µs/cycle, 1 thread | CPU µs/cycle, {THREADS} threads | speed-up the CPU time allows on {cpus} CPUs | voluntary / involuntary switches per cycle, 1 thread | the same, {THREADS} threads |");
        println!("|---|---|---|---|---|---|");
        #[allow(clippy::cast_precision_loss)]
        for &(name, f) in &rows {
            let allowed = cpus.min(THREADS) as f64 * f.cpu.0 / f.cpu.1;
            println!(
                "| {name} | {:.2} | {:.2} | {allowed:.2}x | {:.2} / {:.3} | {:.2} / {:.3} |",
                f.cpu.0, f.cpu.1, f.switches.0.0, f.switches.0.1, f.switches.1.0, f.switches.1.1
            );
        }
        println!("\n{THREADS} threads with each caller and its driver worker pinned to one CPU (pairs spread over the {cpus} CPUs: every hand-off a same-CPU switch):");
        println!("| driver | {THREADS} threads, pairs pinned (cycles/s) | speed-up over 1 thread | CPU µs/cycle |");
        println!("|---|---|---|---|");
        for &(name, f) in &rows {
            println!("| {name} | {:.0} | {:.2}x | {:.2} |", f.paired, f.paired / f.single, f.cpu_paired);
        }
        for &(name, f) in &rows {
            println!("\n{name}: calls per cycle by operation");
            for ((operation, function), count) in &f.calls.0 {
                #[allow(clippy::cast_precision_loss)]
                let per = *count as f64 / (CYCLES * ROUNDS) as f64;
                println!("  {operation:?} {function}: {per:.2}");
            }
        }
    }
}
