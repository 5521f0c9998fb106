//! Links the fixture like ctxguard.sys (the workspace's kernel link arguments), plus
//! /INTEGRITYCHECK, which PsSetCreateProcessNotifyRoutineEx requires of its caller's image.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    ntoskrnl_imports::emit_kernel_link_arguments();
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("msvc") {
        println!("cargo::rustc-cdylib-link-arg=/INTEGRITYCHECK");
    }
}
