//! `tunescope forecast RUNS`: how well the first probe readings of a run foretell its final
//! Δ held-out, measured by leaving each run out.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::eval::forecast::{fit, readings_under, FEATURES};

#[derive(Debug, Args)]
pub struct ForecastArgs {
    /// The runs folder (each run directory directly under it).
    runs: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ForecastArgs) -> Result<()> {
    let readings = readings_under(&args.runs)?;
    let forecast = fit(&readings)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "readings": readings,
                "forecast": forecast,
                "useful": forecast.is_useful(),
            }))?
        );
        return Ok(());
    }
    println!(
        "{} runs; early readings at the first probe after the base",
        forecast.runs
    );
    println!("  {:<48} {:>10} {:>10}", "run", "Δ held-out", "forecast");
    for (run, actual, guess) in &forecast.predictions {
        let name = run
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        println!("  {name:<48} {actual:>10.2} {guess:>10.2}");
    }
    println!("weights (per standard deviation of each reading):");
    for (name, w) in FEATURES.iter().zip(&forecast.fit.weights) {
        println!("  {name:<22} {w:+.3}");
    }
    println!(
        "leave-one-run-out mean absolute error: forecast {:.2} points, the mean of the other runs {:.2}",
        forecast.loo_error, forecast.mean_error
    );
    if !forecast.is_useful() {
        println!("the early readings predict the final Δ held-out no better than the mean; no forecast is shown");
    }
    Ok(())
}
