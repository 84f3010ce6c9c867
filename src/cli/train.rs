//! `tunescope train`: headless training with a progress bar on a terminal and plain lines
//! otherwise. SIGINT/SIGTERM finish the current step, checkpoint, and mark the run stopped.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::recipe::Recipe;
use crate::run::{RunDir, RunState};
use crate::train::{prepare, spawn_prepared, spawn_training, TrainControl, TrainEvent};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Recipe file (YAML). Not needed with --resume.
    recipe: Option<PathBuf>,
    /// Override a recipe field: key.path=value (repeatable), e.g. --set optimizer.lr=1e-5.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Directory for run directories (overrides the recipe's output_dir).
    #[arg(long)]
    runs: Option<PathBuf>,
    /// Continue a stopped run from its newest checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "recipe")]
    resume: Option<PathBuf>,
    /// Use this (empty or new) directory as the run directory instead of creating one under --runs.
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    run_dir: Option<PathBuf>,
    /// Plain line output even on a terminal.
    #[arg(long)]
    plain: bool,
}

pub fn run(args: TrainArgs) -> Result<()> {
    enum Job {
        Resume(Box<Recipe>, RunDir),
        New(Box<crate::train::Prepared>, crate::run::RunLock),
    }
    let (job, run) = match (&args.resume, &args.recipe) {
        (Some(dir), _) => {
            let run = RunDir::open(dir)?;
            // Refused at once when the run's trainer is alive (the trainer takes the lock again).
            drop(run.lock()?);
            let recipe = run.read_recipe()?;
            (Job::Resume(Box::new(recipe), run.clone()), run)
        }
        (None, Some(path)) => {
            let mut recipe = Recipe::load(path, &args.set)?;
            if let Some(runs) = &args.runs {
                recipe.output_dir = runs.to_string_lossy().into_owned();
            }
            // Everything setup would reject (model, selection, data, probe and eval files) is
            // checked before the run directory exists.
            let prepared = prepare(&recipe)?;
            let (run, lock) = prepared.create_run(args.run_dir.as_deref())?;
            (Job::New(Box::new(prepared), lock), run)
        }
        (None, None) => bail!("give a recipe file, or --resume RUN_DIR"),
    };

    let control = TrainControl::default();
    {
        let control = control.clone();
        let mut signalled = false;
        let _ = ctrlc::set_handler(move || {
            if signalled {
                eprintln!("\nsecond interrupt: exiting now without a checkpoint");
                std::process::exit(130);
            }
            signalled = true;
            eprintln!(
                "\nstopping after this step (checkpoint first); interrupt again to exit at once"
            );
            control.request_stop();
        });
    }

    eprintln!("run directory: {}", run.path().display());
    let fancy = !args.plain && std::io::stderr().is_terminal();
    let (handle, events) = match job {
        Job::Resume(recipe, run) => spawn_training(*recipe, run, true, control),
        Job::New(prepared, lock) => spawn_prepared(*prepared, run.clone(), lock, control),
    };
    let mut bar: Option<ProgressBar> = None;
    for event in events {
        match &event {
            TrainEvent::Started {
                total_steps,
                start_step,
                trainable,
                total_params,
                examples,
                truncated,
                dropped,
                used_chat_template,
                ..
            } => {
                let percent = 100.0 * *trainable as f64 / (*total_params).max(1) as f64;
                eprintln!(
                    "training {trainable} of {total_params} parameters ({percent:.2}%) on {examples} examples for {total_steps} steps{}",
                    if *start_step > 0 { format!(", resuming at step {start_step}") } else { String::new() }
                );
                if !used_chat_template {
                    eprintln!("note: the model has no chat template; prompts and responses are concatenated as plain text");
                }
                if *truncated > 0 || *dropped > 0 {
                    eprintln!("note: {truncated} examples cut to max_length, {dropped} dropped (no response token left)");
                }
                if fancy {
                    let pb = ProgressBar::new(*total_steps as u64);
                    pb.set_style(
                        ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    pb.set_position(*start_step as u64);
                    bar = Some(pb);
                }
            }
            TrainEvent::Step(m) => match &bar {
                Some(pb) => {
                    pb.set_position(m.step as u64);
                    pb.set_message(format!(
                        "loss {:.4} lr {:.2e} |g| {:.3} {:.0} tok/s",
                        m.loss, m.lr, m.grad_norm, m.tokens_per_s
                    ));
                }
                None => eprintln!(
                    "step {}/{} loss {:.4} lr {:.3e} grad_norm {:.4} tokens/s {:.1} elapsed {:.1}s",
                    m.step, m.total_steps, m.loss, m.lr, m.grad_norm, m.tokens_per_s, m.elapsed
                ),
            },
            TrainEvent::Checkpoint { step, path } => {
                let line = format!("checkpoint at step {step}: {}", path.display());
                match &bar {
                    Some(pb) => pb.println(line),
                    None => eprintln!("{line}"),
                }
            }
            TrainEvent::Monitor {
                step,
                heldout_numeric_mass_delta,
                delta_learning,
                delta_heldout,
                seconds,
            } => {
                let fmt = |v: &Option<f64>, unit: &str| {
                    v.map_or("-".to_string(), |v| format!("{v:+.4}{unit}"))
                };
                let line = format!(
                    "eval at step {step}: Δ held-out numeric mass {} Δ learning {} Δ held-out {} ({seconds:.1}s)",
                    fmt(heldout_numeric_mass_delta, ""),
                    fmt(delta_learning, " pp"),
                    fmt(delta_heldout, " pp")
                );
                match &bar {
                    Some(pb) => pb.println(line),
                    None => eprintln!("{line}"),
                }
            }
            TrainEvent::Guard { step, reason, stop } => {
                eprintln!(
                    "drift guard at step {step}: {reason}{}",
                    if *stop { "; stopping" } else { "" }
                )
            }
            TrainEvent::CheckpointFailed { step, error } => {
                eprintln!("warning: checkpoint at step {step} failed: {error}")
            }
            TrainEvent::Stopped { step } => {
                eprintln!("stopped at step {step}; resume with: tunescope train --resume <run dir>")
            }
            TrainEvent::Finished { final_dir, .. } => {
                eprintln!("finished; model written to {}", final_dir.display())
            }
            TrainEvent::Failed { step, reason } => eprintln!("failed at step {step}: {reason}"),
        }
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let outcome = handle
        .join()
        .map_err(|_| anyhow::anyhow!("the training thread panicked"))??;
    match outcome.state {
        RunState::Failed => bail!("training failed: {}", outcome.reason.unwrap_or_default()),
        _ => {
            println!("{}", outcome.run_dir.display());
            Ok(())
        }
    }
}
