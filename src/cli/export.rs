//! `tunescope export`: write a distributed trainer's configuration for a recipe.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::export::{default_dir, export, Target};
use crate::recipe::Recipe;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Recipe file (YAML).
    recipe: PathBuf,
    /// Override a recipe field: key.path=value (repeatable), e.g. --set model=org/name.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The trainer to write for.
    #[arg(long = "to", value_enum)]
    to: Target,
    /// Output directory (default: export/<recipe>-<target>).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let recipe = Recipe::load(&args.recipe, &args.set)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_dir(&recipe, args.to));
    let exported = export(&recipe, args.to, &out)?;
    eprintln!(
        "{} configuration for recipe {} ({} trainable tensors):",
        exported.target, recipe.name, exported.tensors
    );
    for file in &exported.files {
        eprintln!("  {}", file.display());
    }
    eprintln!(
        "run it from that directory:\n  cd {} && {}",
        exported.dir.display(),
        exported.command
    );
    println!("{}", exported.main.display());
    Ok(())
}
