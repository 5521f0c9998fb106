//! Link setup for ctxguard.sys.
//!
//! Default path (any host): rust-lld links a native-subsystem kernel image with the arguments
//! of `ntoskrnl_imports::KERNEL_LINK_ARGUMENTS` (shared with fltemu's fixture drivers).
//! Feature `wdk` (Windows with the WDK): wdk-build configures the link instead.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CARGO_FEATURE_WDK");

    #[cfg(feature = "wdk")]
    {
        wdk_build::configure_wdk_binary_build().expect("wdk-build could not configure the WDK link");
    }

    #[cfg(not(feature = "wdk"))]
    ntoskrnl_imports::emit_kernel_link_arguments();
}
