//! Links the fixture like ctxguard.sys: the same lld-link arguments as the workspace build.rs
//! (which cannot be `include!`d because its inner doc comments are only valid at a crate root),
//! for Windows MSVC targets only.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os != "windows" || target_env != "msvc" {
        return;
    }
    for argument in [
        "/DRIVER",
        "/NODEFAULTLIB",
        "/SUBSYSTEM:NATIVE,10.0",
        "/OSVERSION:10.0",
        "/ENTRY:DriverEntry",
        "/NXCOMPAT",
        "/DYNAMICBASE",
        "/OPT:REF,ICF",
        "/RELEASE",
        "/MANIFEST:NO",
    ] {
        println!("cargo::rustc-cdylib-link-arg={argument}");
    }
}
