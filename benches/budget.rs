//! The contexts budget, measured: Filter Manager context calls per operation (counted by
//! fltemu while ctxguard.sys runs), pool bytes per open handle, the image size and the
//! deepest stack frame, printed as the README's table. Counts, not timings:
//! `cargo bench --bench budget`.

#[path = "../tests/budget_support/mod.rs"]
mod budget_support;
#[path = "../tests/support/mod.rs"]
mod support;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() {
    use budget_support::{Budget, CALLBACKS, measure, named_frames};
    use fltemu::{Config, Emulator, OpenOptions, VolumeSpec};

    let image = support::driver_image(support::Arch::X64);
    let emulator = Emulator::load(image, Config::default()).expect("ctxguard.sys loads in fltemu");
    let volume = emulator.mount(VolumeSpec::ntfs("\\Device\\HarddiskVolume1")).expect("mount");
    let open = || emulator.open(volume, "\\budget.txt", &OpenOptions::default()).expect("open");
    let (first_open, first) = measure(&emulator, open);
    let (later_open, later) = measure(&emulator, open);
    let (cleanup, ()) = measure(&emulator, || emulator.cleanup(&later).expect("cleanup"));
    let (close, ()) = measure(&emulator, || emulator.close(later).expect("close"));
    let handle_bytes = emulator.stream_handle_context(&first).expect("a stream-handle context").size;
    let stream_bytes = emulator.stream_context(&first).expect("a stream context").size;
    emulator.cleanup(&first).expect("cleanup");
    emulator.close(first).expect("close");
    let report = emulator.unload().expect("unload");
    assert!(report.is_clean(), "{report}");

    let row = |operation: &str, measured: &Budget, ctx: &str, limit: &str| {
        println!(
            "| {operation} | {} | {} | {} | {} | {} | {ctx} | {limit} |",
            measured.get, measured.allocate, measured.set, measured.release, measured.name_queries
        );
    };
    println!("| Operation | Get | Allocate | Set | Release | Name queries | ctx sample (Get/Alloc/Set/Release) | ctxguard limit |");
    println!("|---|---|---|---|---|---|---|---|");
    row("first open of a stream", &first_open, "2 / 3 / 3 / 3", "1 / 2 / 2 / 3");
    row("later open of the stream", &later_open, "2 / 1 / 1 / 3", "1 / 1 / 1 / 2");
    row("cleanup", &cleanup, "1 / 0 / 0 / 1", "1 / 0 / 0 / 1");
    row("close (incl. the context cleanup it triggers)", &close, "1 / 0 / 0 / 1", "1 / 0 / 0 / 1");
    println!();
    let frames = named_frames(image);
    let image_bytes = std::fs::metadata(image).expect("the image").len();
    let (deepest, deepest_name) = frames.last().expect("unwind information");
    let callback_deepest = frames.iter().filter(|(_, name)| CALLBACKS.iter().any(|callback| name.contains(callback))).max().expect("callbacks");
    println!("| Measure | ctxguard | goal |");
    println!("|---|---|---|");
    println!("| pool bytes per open handle (stream-handle context) | {handle_bytes} | <= 64 |");
    println!("| pool bytes per stream (stream context, name buffer apart) | {stream_bytes} | — |");
    println!("| ctxguard.sys (x64, release) | {image_bytes} bytes ({:.1} KiB) | <= 32 KiB |", image_bytes as f64 / 1024.0);
    println!("| deepest callback frame | {} bytes ({}) | <= 1 KiB |", callback_deepest.0, callback_deepest.1);
    println!("| deepest frame of any function | {deepest} bytes ({deepest_name}) | <= 1 KiB |");
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    eprintln!("the budget benchmark runs ctxguard.sys in fltemu, which needs Linux on x86_64");
}
