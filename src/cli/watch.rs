//! `tunescope watch`: follow another trainer's checkpoint folder, probing and evaluating each new
//! checkpoint into a run directory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use clap::Args;

use crate::recipe::Recipe;
use crate::watch::{watch, WatchEvent, WatchOptions};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The folder where the other trainer writes checkpoint-N/ (only read, never written).
    dir: PathBuf,
    /// Recipe with the `probe` and `eval` sections to run; its `model` is the base model.
    #[arg(long)]
    recipe: PathBuf,
    /// Override a recipe field: key.path=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Directory for run directories (overrides the recipe's output_dir).
    #[arg(long)]
    runs: Option<PathBuf>,
    /// Record into this run directory (created if missing); reuse it after a restart so that
    /// checkpoints already recorded are not evaluated again.
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Seconds between looks at the folder when file notifications are unavailable (they
    /// wake the watch at once otherwise; `TUNESCOPE_WATCH=poll` forces polling).
    #[arg(long, default_value_t = 30.0)]
    interval: f64,
    /// Process the checkpoints that are there, then exit.
    #[arg(long)]
    once: bool,
}

pub fn run(args: WatchArgs) -> Result<()> {
    ensure!(
        args.interval.is_finite() && args.interval > 0.0,
        "--interval must be a positive number of seconds"
    );
    let recipe = Recipe::load(&args.recipe, &args.set)?;
    let runs_root = args
        .runs
        .clone()
        .unwrap_or_else(|| PathBuf::from(&recipe.output_dir));
    let options = WatchOptions {
        dir: args.dir.clone(),
        recipe,
        run_dir: args.run_dir.clone(),
        runs_root,
        interval: Duration::from_secs_f64(args.interval.max(0.1)),
        once: args.once,
    };
    let stop = Arc::new(AtomicBool::new(false));
    if !args.once {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond interrupt: exiting now");
                std::process::exit(130);
            }
            eprintln!("\nstopping after the current checkpoint; interrupt again to exit at once");
        });
    }
    let run = watch(&options, &stop, |event| match event {
        WatchEvent::Started { run_dir, recorded } => {
            eprintln!("run directory: {}", run_dir.display());
            if *recorded > 0 {
                eprintln!("{recorded} steps already recorded there; they are not evaluated again");
            }
            eprintln!("watching {}", options.dir.display());
        }
        WatchEvent::Recorded(r) => {
            let fmt = |v: &Option<f64>, unit: &str| {
                v.map_or("-".to_string(), |v| format!("{v:+.4}{unit}"))
            };
            eprintln!(
                "step {} ({}): Δ held-out numeric mass {} Δ learning {} Δ held-out {} ({:.1}s)",
                r.step,
                r.checkpoint,
                fmt(&r.report.heldout_numeric_mass_delta, ""),
                fmt(&r.report.delta_learning, " pp"),
                fmt(&r.report.delta_heldout, " pp"),
                r.report.seconds
            );
            if let Some(reason) = &r.guard {
                eprintln!("drift guard at step {}: {reason}", r.step);
            }
        }
        WatchEvent::Waiting { step, reason } => {
            eprintln!("checkpoint-{step} is not complete yet ({reason}); waiting for it")
        }
        WatchEvent::Skipped { step, reason } => {
            eprintln!("skipping checkpoint-{step}: {reason}")
        }
        WatchEvent::Following(mode) => eprintln!("noticing new checkpoints by {mode}"),
        WatchEvent::Stopped { .. } => eprintln!("stopped watching"),
    })?;
    println!("{}", run.path().display());
    Ok(())
}
