//! `tunescope sequence`: run a sequence of fine-tuning stages (each from the previous stage's
//! final weights), or print the per-stage table of a sequence directory.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::sequence::{
    default_dir, run_sequence, stage_table, SequenceEvent, SequenceRecord, SequenceSpec,
};
use crate::train::{TrainControl, TrainEvent};

#[derive(Debug, Args)]
pub struct SequenceArgs {
    /// Sequence file (YAML); with --table also a sequence directory.
    file: PathBuf,
    /// Sequence directory (default: <first recipe's output_dir>/<sequence name>). Running again
    /// on the same directory skips finished stages and resumes an interrupted one.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override a field of every stage's recipe: key.path=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the per-stage table of the sequence directory; train nothing.
    #[arg(long)]
    table: bool,
    /// Print the table as JSON.
    #[arg(long)]
    json: bool,
    /// Print one line every N training steps (0: none).
    #[arg(long, default_value_t = 25)]
    every: usize,
}

pub fn run(args: SequenceArgs) -> Result<()> {
    if args.table {
        let dir = match &args.out {
            Some(dir) => dir.clone(),
            None if args.file.is_dir() => args.file.clone(),
            None => {
                let spec = SequenceSpec::load(&args.file)?;
                default_dir(&spec.plan(&args.file, &args.set)?)
            }
        };
        return print_table(&SequenceRecord::load(&dir)?, args.json);
    }
    if args.file.is_dir() {
        bail!(
            "{} is a directory: give the sequence file to run it, or add --table to print its table",
            args.file.display()
        );
    }
    // Every stage's recipe, data and tasks are checked before anything is written.
    let plan = SequenceSpec::load(&args.file)?.plan(&args.file, &args.set)?;
    let dir = args.out.clone().unwrap_or_else(|| default_dir(&plan));
    let control = TrainControl::default();
    {
        let control = control.clone();
        let _ = ctrlc::set_handler(move || {
            eprintln!("\nstopping after this step (checkpoint first); run the same command again to resume");
            control.request_stop();
        });
    }
    eprintln!(
        "sequence `{}`: {} stages in {}",
        plan.spec.name,
        plan.stages.len(),
        dir.display()
    );
    let every = args.every;
    let outcome = run_sequence(&plan, &dir, &control, &mut |event| report(event, every))?;
    if !outcome.finished {
        eprintln!(
            "stopped; resume with: tunescope sequence {} --out {}",
            args.file.display(),
            dir.display()
        );
    }
    print_table(&outcome.record, args.json)
}

fn print_table(record: &SequenceRecord, json: bool) -> Result<()> {
    let table = stage_table(record);
    if json {
        println!("{}", serde_json::to_string_pretty(&table)?);
    } else {
        print!("{}", table.markdown());
        let seconds: Vec<String> = record
            .stages
            .iter()
            .map(|s| format!("{} {:.0} s", s.name, s.train_seconds))
            .collect();
        println!("\ntraining wall time per stage: {}", seconds.join(", "));
    }
    Ok(())
}

fn report(event: &SequenceEvent, every: usize) {
    let mean = |m: &Option<f64>| m.map_or("–".into(), |m| format!("{m:.1}%"));
    match event {
        SequenceEvent::Scoring { after, label } => {
            eprintln!("scoring {} ({label})", stage_label(*after))
        }
        SequenceEvent::Scored {
            after,
            heldout_mean,
            seconds,
            ..
        } => eprintln!(
            "scored {}: held-out mean {} ({seconds:.1} s)",
            stage_label(*after),
            mean(heldout_mean)
        ),
        SequenceEvent::StageStarted {
            index,
            name,
            run_dir,
            resume,
        } => eprintln!(
            "stage {index} `{name}`: {} in {}",
            if *resume { "resuming" } else { "training" },
            run_dir.display()
        ),
        SequenceEvent::StageSkipped { index, name } => {
            eprintln!("stage {index} `{name}`: finished earlier, skipped")
        }
        SequenceEvent::StageEnded {
            index,
            state,
            seconds,
        } => eprintln!("stage {index}: {state:?} after {seconds:.1} s"),
        SequenceEvent::Train { index, event } => match event {
            TrainEvent::Step(m)
                if every > 0 && (m.step % every == 0 || m.step == m.total_steps) =>
            {
                eprintln!(
                    "  stage {index} step {}/{} loss {:.4} lr {:.2e}",
                    m.step, m.total_steps, m.loss, m.lr
                )
            }
            TrainEvent::Monitor {
                step,
                delta_learning,
                delta_heldout,
                ..
            } => eprintln!(
                "  stage {index} eval at step {step}: Δ learning {} Δ held-out {}",
                delta_learning.map_or("–".into(), |v| format!("{v:+.1} pp")),
                delta_heldout.map_or("–".into(), |v| format!("{v:+.1} pp"))
            ),
            TrainEvent::Failed { step, reason } => {
                eprintln!("  stage {index} failed at step {step}: {reason}")
            }
            _ => {}
        },
    }
}

fn stage_label(after: usize) -> String {
    if after == 0 {
        "the base model".into()
    } else {
        format!("after stage {after}")
    }
}
