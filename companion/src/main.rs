//! `ctxguard`: the user-mode companion of ctxguard.sys.

fn main() {
    println!("ctxguard {} (protocol {})", env!("CARGO_PKG_VERSION"), ctxguard_protocol::PROTOCOL_VERSION);
}
