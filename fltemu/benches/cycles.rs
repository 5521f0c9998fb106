//! Benchmark (not a test): emulated create/cleanup/close cycles per second through ctxguard.sys
//! and through the correct pass-through fixture, their ratio, and the Filter Manager calls per
//! cycle by operation. Run with `cargo bench -p fltemu`; images are built with cargo into
//! `$CARGO_TARGET_DIR/fltemu-bench` (or given as `CTXGUARD_SYS` / `FIXTURE_SYS`).

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() {
    bench::main();
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod bench {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::Instant;

    use fltemu::{CallCounts, Config, Emulator, OpenOptions, VolumeSpec};

    const CYCLES: usize = 20_000;
    const THREADS: usize = 4;
    const ROUNDS: usize = 3;

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
        calls: CallCounts,
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

    fn run(image: &Path, threads: usize) -> (f64, CallCounts) {
        let emulator = Emulator::load(image, Config::default()).expect("image loads");
        let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
        let options = OpenOptions::default();
        for index in 0..500 {
            emulator.open_close(volume, &format!("\\f{}.txt", index % 64), &options).unwrap();
        }
        let before = emulator.calls();
        // Best of three rounds: the machine is shared, and the slowest rounds measure the
        // neighbours, not the driver.
        let mut best: f64 = 0.0;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for thread in 0..threads {
                    let (emulator, options) = (&emulator, &options);
                    scope.spawn(move || {
                        for index in 0..CYCLES / threads {
                            emulator.open_close(volume, &format!("\\t{thread}\\f{}.txt", index % 64), options).unwrap();
                        }
                    });
                }
            });
            #[allow(clippy::cast_precision_loss)]
            let rate = (CYCLES / threads * threads) as f64 / start.elapsed().as_secs_f64();
            best = best.max(rate);
        }
        let calls = emulator.calls().since(&before);
        let report = emulator.unload().unwrap();
        assert!(report.is_clean(), "{report}");
        (best, calls)
    }

    fn measure(image: &Path) -> Figures {
        let all: Vec<usize> = (0..std::thread::available_parallelism().map_or(1, std::num::NonZero::get)).collect();
        // One thread, caller and driver workers pinned to one CPU: the futex hand-off is then a
        // plain context switch instead of a cross-CPU wake-up whose latency varies run to run.
        pin(&[0]);
        let (single, calls) = run(image, 1);
        pin(&all);
        let (threaded, _) = run(image, THREADS);
        Figures { single, threaded, calls }
    }

    pub fn main() {
        let ctxguard = std::env::var_os("CTXGUARD_SYS").map_or_else(|| build("ctxguard", "ctxguard"), PathBuf::from);
        let fixture = std::env::var_os("FIXTURE_SYS").map_or_else(|| build("fltemu-fixture-driver", "fltemu_fixture_driver"), PathBuf::from);
        let a = measure(&ctxguard);
        let b = measure(&fixture);
        println!("create/cleanup/close cycles per second ({CYCLES} cycles, re-opens of 64 files on one NTFS volume)");
        println!("| driver | 1 thread | {THREADS} threads | Flt calls per cycle |");
        println!("|---|---|---|---|");
        #[allow(clippy::cast_precision_loss)]
        for (name, f) in [("ctxguard.sys", &a), ("fixture (correct)", &b)] {
            println!("| {name} | {:.0} | {:.0} | {:.2} |", f.single, f.threaded, f.calls.total_prefix("Flt") as f64 / (CYCLES * ROUNDS) as f64);
        }
        println!("ratio ctxguard / fixture: {:.2} (1 thread), {:.2} ({THREADS} threads)", a.single / b.single, a.threaded / b.threaded);
        for (name, f) in [("ctxguard.sys", &a), ("fixture", &b)] {
            println!("\n{name}: calls per cycle by operation");
            for ((operation, function), count) in &f.calls.0 {
                #[allow(clippy::cast_precision_loss)]
                let per = *count as f64 / (CYCLES * ROUNDS) as f64;
                println!("  {operation:?} {function}: {per:.2}");
            }
        }
    }
}
