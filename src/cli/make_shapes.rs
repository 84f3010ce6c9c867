//! `tunescope make-shapes`: write the coloured-shapes picture world (PNG scenes, a counting
//! training set, held-out word-answer tasks and probe prompts) for a seed.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::world::shapes::ShapesWorld;

#[derive(Debug, Args)]
pub struct MakeShapesArgs {
    /// Output directory (created if missing; existing files of the same names are replaced).
    #[arg(long)]
    out: PathBuf,
    /// Seed of every scene and question.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: MakeShapesArgs) -> Result<()> {
    let world = ShapesWorld::new(args.seed);
    let files = world.write(&args.out)?;
    println!(
        "wrote the shapes world of seed {} to {}",
        args.seed,
        args.out.display()
    );
    for file in &files {
        println!(
            "  {:<24} {:>5} items {:>8} bytes",
            file.path.display(),
            file.items,
            file.bytes
        );
    }
    Ok(())
}
