//! `tunescope make-assets`: write the synthetic world's data sets (training data, evaluation
//! tasks, probe prompts) for a seed.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::world::write_assets;

#[derive(Debug, Args)]
pub struct MakeAssetsArgs {
    /// Output directory (created if missing; existing files of the same names are replaced).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the world (its invented objects and every sample drawn from it).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: MakeAssetsArgs) -> Result<()> {
    let summary = write_assets(&args.out, args.seed)?;
    println!(
        "wrote the world of seed {} to {}",
        summary.seed,
        args.out.display()
    );
    for file in &summary.files {
        let noun = if file.items == 1 { "item" } else { "items" };
        println!(
            "  {:<28} {:>5} {noun:<5} {:>8} bytes",
            file.path.display(),
            file.items,
            file.bytes
        );
    }
    println!(
        "{} files, {} bytes in all",
        summary.files.len(),
        summary.total_bytes()
    );
    Ok(())
}
