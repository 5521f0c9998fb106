//! `ctxguard`: the user-mode companion of ctxguard.sys.
//!
//! The command line is built with clap's builder API, not its derive macros: the derives emit
//! `#[allow(clippy::restriction)]`, which clippy rejects (E0453) under the workspace's
//! `forbid`den restriction lints.

use std::process::ExitCode;

use clap::Command;

use ctxguard_companion::port::cli::{self as port_cli, PortCommand};
use ctxguard_companion::selftest::cli::{self as selftest_cli, SelftestArgs};

mod crypto;
#[path = "port/witness.rs"]
mod port_witness;
#[path = "selftest/bin.rs"]
mod selftest_bin;
#[path = "selftest/crypto_bridge.rs"]
mod selftest_crypto;

/// Every subcommand of the companion; each variant's arguments live in its own module.
#[derive(Debug)]
enum Commands {
    /// status, stats, streams, handles, watch: the driver's port (companion/src/port).
    Port(PortCommand),
    /// Exercise crypto handle release (CryptoAPI, certificate stores, NCrypt) and report verdicts.
    Crypto(crypto::CryptoArgs),
    /// Check the loaded driver end to end and write a report (companion/src/selftest).
    Selftest(SelftestArgs),
}

/// The command line: one subcommand per module.
fn cli() -> Command {
    Command::new("ctxguard")
        .version(env!("CARGO_PKG_VERSION"))
        .about("User-mode companion of ctxguard.sys")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommands(port_cli::commands())
        .subcommand(crypto::command())
        .subcommand(selftest_cli::command())
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
    let command = match matches.subcommand() {
        Some((crypto::NAME, m)) => Commands::Crypto(crypto::CryptoArgs::from_matches(m)),
        Some((selftest_cli::NAME, m)) => Commands::Selftest(SelftestArgs::from_matches(m)),
        Some((name, m)) if port_cli::is_command(name) => match PortCommand::from_matches(name, m) {
            Some(command) => Commands::Port(command),
            None => return ExitCode::from(2),
        },
        _ => {
            // subcommand_required makes clap exit before this; stay panic-free regardless.
            eprintln!("ctxguard: no subcommand given; try --help");
            return ExitCode::from(2);
        }
    };
    match command {
        Commands::Port(command) => match port_cli::execute(&command, port_cli::system_connector().as_ref(), &mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("ctxguard: {error}");
                ExitCode::FAILURE
            }
        },
        Commands::Crypto(args) => {
            // Correlation is only asked for when scenarios run (not for --list).
            let witness = if args.list {
                Box::new(crypto::witness::DriverAbsent::default()) as Box<dyn crypto::witness::HandleWitness>
            } else {
                port_witness::PortWitness::connect_or_absent(port_cli::system_connector().as_ref())
            };
            crypto::run_with_witness(&args, witness.as_ref())
        }
        Commands::Selftest(args) => selftest_bin::execute(&args),
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
