//! Running a sequence: the base model is scored, then each stage trains from the previous
//! stage's `final/` into its own run directory and is scored; `sequence.json` records every
//! step. Re-running on the same directory skips finished stages and resumes an interrupted one
//! from its newest checkpoint (the trainer's `--resume`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::spec::SequencePlan;
use crate::eval::tasks::{evaluate, Task};
use crate::model::Model;
use crate::recipe::Recipe;
use crate::run::sequence::{
    now, ScoreEntry, SequenceRecord, StageEntry, StageState, FILE, FORMAT, VERSION,
};
use crate::run::{RunDir, RunLock, RunState};
use crate::train::{prepare, run_prepared, run_training, TrainControl, TrainEvent};
use crate::util::device::{parse_device, parse_dtype};

/// What the runner reports to a front end.
#[derive(Debug, Clone)]
pub enum SequenceEvent {
    /// Scoring the base model (`after: 0`) or the model after a stage begins.
    Scoring { after: usize, label: String },
    /// Scores recorded: mean held-out score (percent) and seconds taken.
    Scored {
        after: usize,
        label: String,
        heldout_mean: Option<f64>,
        seconds: f64,
    },
    /// A stage starts (or resumes) training in `run_dir`.
    StageStarted {
        index: usize,
        name: String,
        run_dir: PathBuf,
        resume: bool,
    },
    /// A stage finished in an earlier invocation.
    StageSkipped { index: usize, name: String },
    /// An event of the stage's trainer.
    Train { index: usize, event: TrainEvent },
    /// A stage's training ended in `state` after `seconds` (this invocation).
    StageEnded {
        index: usize,
        state: StageState,
        seconds: f64,
    },
}

/// How a sequence run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceOutcome {
    /// Every stage trained and scored.
    pub finished: bool,
    pub record: SequenceRecord,
    pub dir: PathBuf,
}

/// The default sequence directory: `<first recipe's output_dir>/<sequence name>`.
pub fn default_dir(plan: &SequencePlan) -> PathBuf {
    Path::new(&plan.stages[0].recipe.output_dir).join(&plan.spec.name)
}

/// Runs (or resumes) `plan` in `dir`. A directory holding another sequence, or this one with
/// other settings, is refused before anything is written. `control` stops the stage in
/// training after its current step (checkpointed; a re-run resumes it).
pub fn run_sequence(
    plan: &SequencePlan,
    dir: &Path,
    control: &TrainControl,
    on_event: &mut dyn FnMut(&SequenceEvent),
) -> Result<SequenceOutcome> {
    let existing = open_existing(plan, dir)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _lock = RunLock::acquire(&dir.join("lock"))?;
    let mut record = match existing {
        Some(record) => record,
        None => {
            let snapshot = std::fs::read(&plan.file)
                .with_context(|| format!("cannot read {}", plan.file.display()))?;
            crate::util::fs::write_atomic(&dir.join("sequence.yaml"), &snapshot)?;
            new_record(plan, dir)
        }
    };
    record.save(dir)?;

    if record.scores_after(0).is_none() {
        let recipe = &plan.stages[0].recipe;
        let entry = score(plan, &plan.base_model, recipe, 0, "base", on_event)?;
        record.scores.push(entry);
        record.save(dir)?;
    }
    for (k, stage) in plan.stages.iter().enumerate() {
        let entry = record.stages[k].clone();
        let run_path = dir.join(&entry.run_dir);
        if entry.state == StageState::Finished && record.scores_after(stage.index).is_some() {
            on_event(&SequenceEvent::StageSkipped {
                index: stage.index,
                name: entry.name.clone(),
            });
            continue;
        }
        if control.stop.load(Ordering::SeqCst) {
            return Ok(outcome(false, record, dir));
        }
        let mut recipe = stage.recipe.clone();
        recipe.model = Some(entry.model.clone());
        recipe.output_dir = dir.to_string_lossy().into_owned();
        let started = Instant::now();
        let state = train_stage(
            &recipe,
            &run_path,
            stage.index,
            &entry.name,
            control,
            &mut record,
            dir,
            on_event,
        )?;
        let seconds = started.elapsed().as_secs_f64();
        record.stages[k].train_seconds += seconds;
        record.stages[k].state = state;
        record.save(dir)?;
        on_event(&SequenceEvent::StageEnded {
            index: stage.index,
            state,
            seconds,
        });
        match state {
            StageState::Finished => {}
            StageState::Failed => {
                let reason = RunDir::open(&run_path)
                    .and_then(|r| r.read_status())
                    .ok()
                    .and_then(|s| s.last_error)
                    .unwrap_or_default();
                bail!(
                    "stage {} (`{}`) failed: {reason}; fix the cause and run the command again to resume it",
                    stage.index,
                    entry.name
                );
            }
            _ => return Ok(outcome(false, record, dir)),
        }
        let final_dir = run_path.join("final");
        let scores = score(
            plan,
            &final_dir.to_string_lossy(),
            &recipe,
            stage.index,
            &entry.name,
            on_event,
        )?;
        record.scores.retain(|s| s.after != stage.index);
        record.scores.push(scores);
        record.save(dir)?;
    }
    Ok(outcome(true, record, dir))
}

fn outcome(finished: bool, record: SequenceRecord, dir: &Path) -> SequenceOutcome {
    SequenceOutcome {
        finished,
        record,
        dir: dir.to_path_buf(),
    }
}

/// The record already in `dir`, checked against `plan`; `None` for a missing or empty
/// directory. Refuses a directory that is not this sequence's.
fn open_existing(plan: &SequencePlan, dir: &Path) -> Result<Option<SequenceRecord>> {
    if dir.join(FILE).is_file() {
        let record = SequenceRecord::load(dir)?;
        let mut differs = Vec::new();
        if record.spec != plan.spec {
            differs.push("the sequence file");
        }
        if record.overrides != plan.overrides {
            differs.push("the --set overrides");
        }
        if record.base_model != plan.base_model {
            differs.push("the starting model");
        }
        if !differs.is_empty() {
            bail!(
                "{} holds sequence `{}` run with other settings ({} changed); run with --out NEW_DIR, or remove it",
                dir.display(),
                record.name,
                differs.join(", ")
            );
        }
        return Ok(Some(record));
    }
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} exists and is not a sequence directory (no {}); choose another --out",
                dir.display(),
                FILE
            );
        }
    }
    Ok(None)
}

/// The record of a new sequence directory: every stage pending.
fn new_record(plan: &SequencePlan, dir: &Path) -> SequenceRecord {
    let mut model = plan.base_model.clone();
    let stages = plan
        .stages
        .iter()
        .map(|stage| {
            let run_dir = PathBuf::from(format!("{}-{}", stage.index, stage.spec.name));
            let entry = StageEntry {
                index: stage.index,
                name: stage.spec.name.clone(),
                run_dir: run_dir.clone(),
                recipe: stage.spec.recipe.clone(),
                data: stage.spec.data.clone(),
                target: stage.spec.target.clone(),
                target_task: stage.target_task.clone(),
                model: model.clone(),
                state: StageState::Pending,
                steps: None,
                train_seconds: 0.0,
            };
            model = dir
                .join(run_dir)
                .join("final")
                .to_string_lossy()
                .into_owned();
            entry
        })
        .collect();
    let stamp = now();
    SequenceRecord {
        format: FORMAT.into(),
        version: VERSION,
        name: plan.spec.name.clone(),
        file: plan.file.clone(),
        overrides: plan.overrides.clone(),
        spec: plan.spec.clone(),
        base_model: plan.base_model.clone(),
        heldout_tasks: plan.heldout_tasks.clone(),
        stages,
        scores: Vec::new(),
        created_at: stamp.clone(),
        updated_at: stamp,
    }
}

/// Trains one stage into `run_path`: a new run, a resumed one, or none when it already
/// finished. Returns the stage's state afterwards.
#[allow(clippy::too_many_arguments)]
fn train_stage(
    recipe: &Recipe,
    run_path: &Path,
    index: usize,
    name: &str,
    control: &TrainControl,
    record: &mut SequenceRecord,
    dir: &Path,
    on_event: &mut dyn FnMut(&SequenceEvent),
) -> Result<StageState> {
    let existing = RunDir::open(run_path).ok();
    if let Some(run) = &existing {
        let finished = run
            .read_status()
            .is_ok_and(|s| s.state == RunState::Finished);
        if finished && run.final_dir().join("config.json").is_file() {
            return Ok(StageState::Finished);
        }
    }
    record.stages[index - 1].state = StageState::Running;
    record.save(dir)?;
    on_event(&SequenceEvent::StageStarted {
        index,
        name: name.to_string(),
        run_dir: run_path.to_path_buf(),
        resume: existing.is_some(),
    });
    let mut forward = |event: &TrainEvent| {
        on_event(&SequenceEvent::Train {
            index,
            event: event.clone(),
        })
    };
    let outcome = match existing {
        Some(run) => {
            let recipe = run.read_recipe()?;
            run_training(&recipe, &run, true, control, &mut forward)?
        }
        None => {
            let prepared = prepare(recipe).with_context(|| {
                format!(
                    "stage {index} (`{name}`) from {}",
                    recipe.model.as_deref().unwrap_or("")
                )
            })?;
            let (run, lock) = prepared.create_run(Some(run_path))?;
            run_prepared(prepared, &run, lock, control, &mut forward)?
        }
    };
    record.stages[index - 1].steps = Some(
        outcome
            .step
            .max(record.stages[index - 1].steps.unwrap_or(0)),
    );
    Ok(match outcome.state {
        RunState::Finished => StageState::Finished,
        RunState::Failed => StageState::Failed,
        _ => StageState::Stopped,
    })
}

/// Scores `model` on every task of the plan (held-out and every stage's target).
fn score(
    plan: &SequencePlan,
    model: &str,
    recipe: &Recipe,
    after: usize,
    label: &str,
    on_event: &mut dyn FnMut(&SequenceEvent),
) -> Result<ScoreEntry> {
    on_event(&SequenceEvent::Scoring {
        after,
        label: label.to_string(),
    });
    let started = Instant::now();
    let tasks = score_tasks(model, &plan.tasks, plan.spec.max_items, recipe)
        .with_context(|| format!("scoring {model} after stage {after}"))?;
    let entry = ScoreEntry {
        after,
        label: label.to_string(),
        tasks,
        seconds: started.elapsed().as_secs_f64(),
    };
    let heldout: Vec<f64> = entry
        .tasks
        .iter()
        .filter(|t| plan.heldout_tasks.contains(&t.name))
        .filter_map(|t| t.score)
        .collect();
    on_event(&SequenceEvent::Scored {
        after,
        label: label.to_string(),
        heldout_mean: (!heldout.is_empty())
            .then(|| heldout.iter().sum::<f64>() / heldout.len() as f64),
        seconds: entry.seconds,
    });
    Ok(entry)
}

/// Scores of `model` on `tasks` (the first `max_items` items of each), on the recipe's device
/// and dtype, nothing trainable.
pub fn score_tasks(
    model: &str,
    tasks: &[Task],
    max_items: Option<usize>,
    recipe: &Recipe,
) -> Result<Vec<crate::eval::tasks::TaskScore>> {
    let model = Model::open(model)?;
    let device = parse_device(&recipe.device)?;
    let dtype = parse_dtype(&recipe.dtype)?;
    let decoder = model.decoder(&HashSet::new(), dtype, &device)?;
    tasks
        .iter()
        .map(|t| evaluate(&decoder, &model.tokenizer, t, max_items))
        .collect()
}
