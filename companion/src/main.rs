//! `ctxguard`: the user-mode companion of ctxguard.sys.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod crypto;

/// Command line of the companion.
#[derive(Debug, Parser)]
#[command(name = "ctxguard", version, about = "User-mode companion of ctxguard.sys")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

/// Every subcommand of the companion; each variant's arguments live in its own module.
#[derive(Debug, Subcommand)]
enum Commands {
    // Port subcommands (status, stats, streams, handles, watch) go here.
    /// Exercise crypto handle release (CryptoAPI, certificate stores, NCrypt) and report verdicts.
    Crypto(crypto::CryptoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Crypto(args) => crypto::run(&args),
    }
}
