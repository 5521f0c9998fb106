//! Link setup for ctxguard.sys (and, through `include!`, for fltemu's fixture drivers).
//!
//! Default path (any host): rust-lld links a native-subsystem kernel image with the arguments
//! below. Feature `wdk` (Windows with the WDK): wdk-build configures the link instead.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CARGO_FEATURE_WDK");

    #[cfg(feature = "wdk")]
    {
        wdk_build::configure_wdk_binary_build().expect("wdk-build could not configure the WDK link");
    }

    #[cfg(not(feature = "wdk"))]
    emit_kernel_link_arguments();
}

/// Emits the lld-link arguments of a kernel driver, for Windows MSVC targets only.
#[cfg(not(feature = "wdk"))]
fn emit_kernel_link_arguments() {
    const ARGUMENTS: &[&str] = &[
        "/DRIVER",
        "/NODEFAULTLIB",
        "/SUBSYSTEM:NATIVE,10.0",
        "/OSVERSION:10.0",
        "/ENTRY:DriverEntry",
        "/NXCOMPAT",
        "/DYNAMICBASE",
        "/OPT:REF,ICF",
        // lld leaves the PE checksum 0 unless asked; the kernel loader requires it for drivers.
        "/RELEASE",
        "/MANIFEST:NO",
        "/MAP",
        "/MAPINFO:EXPORTS",
    ];
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os != "windows" || target_env != "msvc" {
        return;
    }
    for argument in ARGUMENTS {
        println!("cargo::rustc-cdylib-link-arg={argument}");
    }
}
