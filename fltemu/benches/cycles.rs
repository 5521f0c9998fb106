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

    fn measure(image: &Path) -> Figures {
        let emulator = Emulator::load(image, Config::default()).expect("image loads");
        let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).unwrap();
        let options = OpenOptions::default();
        for index in 0..500 {
            emulator.open_close(volume, &format!("\\f{}.txt", index % 64), &options).unwrap();
        }
        let before = emulator.calls();
        let start = Instant::now();
        for index in 0..CYCLES {
            emulator.open_close(volume, &format!("\\f{}.txt", index % 64), &options).unwrap();
        }
        #[allow(clippy::cast_precision_loss)]
        let single = CYCLES as f64 / start.elapsed().as_secs_f64();
        let calls = emulator.calls().since(&before);
        let start = Instant::now();
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let (emulator, options) = (&emulator, &options);
                scope.spawn(move || {
                    for index in 0..CYCLES / THREADS {
                        emulator.open_close(volume, &format!("\\t{thread}\\f{}.txt", index % 64), options).unwrap();
                    }
                });
            }
        });
        #[allow(clippy::cast_precision_loss)]
        let threaded = (CYCLES / THREADS * THREADS) as f64 / start.elapsed().as_secs_f64();
        let report = emulator.unload().unwrap();
        assert!(report.is_clean(), "{report}");
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
            println!("| {name} | {:.0} | {:.0} | {:.2} |", f.single, f.threaded, f.calls.total_prefix("Flt") as f64 / CYCLES as f64);
        }
        println!("ratio ctxguard / fixture: {:.2} (1 thread), {:.2} ({THREADS} threads)", a.single / b.single, a.threaded / b.threaded);
        for (name, f) in [("ctxguard.sys", &a), ("fixture", &b)] {
            println!("\n{name}: calls per cycle by operation");
            for ((operation, function), count) in &f.calls.0 {
                #[allow(clippy::cast_precision_loss)]
                let per = *count as f64 / CYCLES as f64;
                println!("  {operation:?} {function}: {per:.2}");
            }
        }
    }
}
