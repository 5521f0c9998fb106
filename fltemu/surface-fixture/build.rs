//! Links the fixture like ctxguard.sys: the workspace's one list of kernel link arguments.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    ntoskrnl_imports::emit_kernel_link_arguments();
}
