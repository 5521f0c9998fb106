//! Links the example as a kernel image (native subsystem, entry DriverEntry, no default
//! libraries), with the workspace's one list of lld-link arguments.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    ntoskrnl_imports::emit_kernel_link_arguments();
}
