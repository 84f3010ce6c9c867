//! `tunescope merge`: fold a LoRA adapter into its base, or interpolate two models (WiSE-FT).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::merge;

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// A LoRA adapter (PEFT directory or LoRA run) to fold; or model A to interpolate from.
    a: String,
    /// Model B to interpolate towards (with --alpha): a model, adapter or run directory.
    b: Option<String>,
    /// Weight of B: the output is (1 − alpha)·A + alpha·B (0 gives A, 1 gives B, bit for bit).
    #[arg(long)]
    alpha: Option<f64>,
    /// Base model of the adapter (default: its config's base_model_name_or_path).
    #[arg(long)]
    base: Option<String>,
    /// Output model directory.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing output directory.
    #[arg(long)]
    force: bool,
}

pub fn run(args: MergeArgs) -> Result<()> {
    if args.out.exists() && !args.force {
        bail!("{} exists; pass --force to replace it", args.out.display());
    }
    match (&args.b, args.alpha) {
        (None, None) => {
            let model = merge::fold_to(&args.a, args.base.as_deref(), &args.out)?;
            if let Some(info) = &model.adapter {
                eprintln!(
                    "folded the LoRA adapter (r {}, alpha {}, {} modules) into {}",
                    info.settings.r,
                    info.settings.alpha,
                    info.modules.len(),
                    info.base
                );
            }
        }
        (None, Some(_)) => bail!("--alpha interpolates two models: give model B too"),
        (Some(_), None) => {
            bail!("two models interpolate at a weight: pass --alpha (0 gives A, 1 gives B)")
        }
        (Some(b), Some(alpha)) => {
            if args.base.is_some() {
                bail!("--base applies to folding one adapter, not to interpolating two models");
            }
            merge::interpolate_to(&args.a, b, alpha, &args.out)?;
            eprintln!("wrote (1 − {alpha})·A + {alpha}·B");
        }
    }
    println!("{}", args.out.display());
    Ok(())
}
