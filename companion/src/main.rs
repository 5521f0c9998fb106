//! `ctxguard`: the user-mode companion of ctxguard.sys.
//!
//! The command line is built with clap's builder API, not its derive macros: the derives emit
//! `#[allow(clippy::restriction)]`, which clippy rejects (E0453) under the workspace's
//! `forbid`den restriction lints.

use std::process::ExitCode;

use clap::Command;

mod crypto;

/// Every subcommand of the companion; each variant's arguments live in its own module.
#[derive(Debug)]
enum Commands {
    // Port subcommands (status, stats, streams, handles, watch) go here.
    /// Exercise crypto handle release (CryptoAPI, certificate stores, NCrypt) and report verdicts.
    Crypto(crypto::CryptoArgs),
}

/// The command line: one subcommand per module.
fn cli() -> Command {
    Command::new("ctxguard")
        .version(env!("CARGO_PKG_VERSION"))
        .about("User-mode companion of ctxguard.sys")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(crypto::command())
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
    let command = if let Some((crypto::NAME, m)) = matches.subcommand() {
        Commands::Crypto(crypto::CryptoArgs::from_matches(m))
    } else {
        // subcommand_required makes clap exit before this; stay panic-free regardless.
        eprintln!("ctxguard: no subcommand given; try --help");
        return ExitCode::from(2);
    };
    match command {
        Commands::Crypto(args) => crypto::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        cli().debug_assert();
    }
}
