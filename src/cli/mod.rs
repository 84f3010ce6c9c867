//! The headless command-line front end.

mod generate;
mod inspect;
mod make_tiny;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// tunescope: selective fine-tuning with live drift monitoring.
#[derive(Debug, Parser)]
#[command(name = "tunescope", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands of the `tunescope` binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a model's module map: totals per kind and per layer, and the module tree.
    Inspect(inspect::InspectArgs),
    /// Write a small random model in Hugging Face layout (for tests and demos).
    MakeTiny(make_tiny::MakeTinyArgs),
    /// Generate text from a model (chat template applied), streaming tokens.
    Generate(generate::GenerateArgs),
}

/// Parses the command line and runs the chosen command.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::MakeTiny(args) => make_tiny::run(args),
        Command::Generate(args) => generate::run(args),
    }
}
