//! Following another trainer's checkpoints: each new complete `checkpoint-N/` in a watched
//! directory is probed and evaluated against the base model (the recipe's `probe` and `eval`
//! sections, base = recipe.model) in step order, and recorded in a run directory like a native
//! run (probe, layer_drift and eval records with `step` = N, plus a `watch` record naming the
//! checkpoint). Step 0, the base model, comes first.
//!
//! The watched directory is only read: files are opened read-only, weights are memory-mapped
//! read-only and copied out, and nothing is written there. A checkpoint is complete when its
//! config.json and every weight file exist and the safetensors headers parse with the file
//! lengths they describe; an incomplete one is retried next round, and later checkpoints wait for
//! it (unless it stays incomplete for long while a later one is complete: then it is skipped and
//! recorded as skipped). After a restart on the same run directory, steps with a `watch` record
//! are not evaluated again. Checkpoints need no tokenizer: the base model's is used.

pub mod changes;
pub mod checkpoint;
pub mod session;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::recipe::Recipe;
use crate::run::RunDir;
pub use crate::util::fswatch::Mode;

use changes::Changes;
pub use checkpoint::{check_complete, scan, CheckpointDir, CompleteCheckpoint};
pub use session::{recorded_steps, Session, StepResult};

/// How to watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The folder the other trainer writes `checkpoint-N/` into.
    pub dir: PathBuf,
    pub recipe: Recipe,
    /// Use (or continue) this run directory instead of creating one under `runs_root`.
    pub run_dir: Option<PathBuf>,
    pub runs_root: PathBuf,
    /// Pause between rounds.
    pub interval: Duration,
    /// Process what is there, then return.
    pub once: bool,
}

/// What a watch reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// The run directory is ready; `recorded` steps were already there.
    Started { run_dir: PathBuf, recorded: usize },
    /// A step was probed and evaluated.
    Recorded(StepResult),
    /// A checkpoint is not complete yet; it and later ones wait for the next round.
    Waiting { step: usize, reason: String },
    /// A checkpoint stayed incomplete while a later one was complete; it is skipped.
    Skipped { step: usize, reason: String },
    /// How new checkpoints are noticed (notifications, or polling and why); reported at the
    /// start and whenever it changes.
    Following(Mode),
    /// The watch ended.
    Stopped { run_dir: PathBuf },
}

/// How a watch notices new checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// File notifications, falling back to polling every `interval` when they fail.
    Notify,
    /// Polling every `interval` only.
    Poll,
}

/// An incomplete checkpoint is skipped once it has been incomplete this long while a later one
/// is complete (at least this, or ten intervals).
const STALE_AFTER: Duration = Duration::from_secs(120);

/// Watches `options.dir` until `stop` is set (or after one round with `once`), recording into a
/// run directory; returns it. On error the run is marked failed with the reason. New checkpoints
/// are noticed by file notifications (polling every `interval` where those fail).
pub fn watch(
    options: &WatchOptions,
    stop: &AtomicBool,
    on_event: impl FnMut(&WatchEvent),
) -> Result<RunDir> {
    watch_with(options, Follow::Notify, stop, on_event)
}

/// [`watch`], choosing how new checkpoints are noticed.
pub fn watch_with(
    options: &WatchOptions,
    follow: Follow,
    stop: &AtomicBool,
    mut on_event: impl FnMut(&WatchEvent),
) -> Result<RunDir> {
    let mut session = Session::open(
        &options.recipe,
        &options.dir,
        options.run_dir.as_deref(),
        &options.runs_root,
    )?;
    let run = session.run().clone();
    let result = watch_loop(&mut session, options, follow, stop, &mut on_event);
    let error = result.as_ref().err().map(|e| format!("{e:#}"));
    let finished = session.finish(error);
    result?;
    finished?;
    on_event(&WatchEvent::Stopped {
        run_dir: run.path().to_path_buf(),
    });
    Ok(run)
}

fn watch_loop(
    session: &mut Session,
    options: &WatchOptions,
    follow: Follow,
    stop: &AtomicBool,
    on_event: &mut impl FnMut(&WatchEvent),
) -> Result<()> {
    // Started before the first scan, so a checkpoint written meanwhile is not missed.
    let mut changes = (!options.once)
        .then(|| Changes::start(session.watched(), options.interval, follow))
        .transpose()?;
    on_event(&WatchEvent::Started {
        run_dir: session.run().path().to_path_buf(),
        recorded: recorded_steps(session.run())?.len(),
    });
    if let Some(changes) = &changes {
        on_event(&WatchEvent::Following(changes.mode().clone()));
    }
    if let Some(result) = session.record_base()? {
        on_event(&WatchEvent::Recorded(result));
    }
    let stale_after = STALE_AFTER.max(options.interval * 10);
    let mut first_incomplete: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut last_wait: Option<(usize, String)> = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let checkpoints = scan(session.watched())?;
        if let Some(newest) = checkpoints.last() {
            session.saw_step(newest.step)?;
        }
        let pending: Vec<&CheckpointDir> = checkpoints
            .iter()
            .filter(|c| !session.is_recorded(c.step))
            .collect();
        first_incomplete.retain(|step, _| pending.iter().any(|c| c.step == *step));
        for (i, checkpoint) in pending.iter().enumerate() {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            match check_complete(&checkpoint.path) {
                Ok(files) => {
                    first_incomplete.remove(&checkpoint.step);
                    match session.record_checkpoint(checkpoint, &files) {
                        Ok(result) => on_event(&WatchEvent::Recorded(result)),
                        // The trainer may delete old checkpoints (save_total_limit) at any time.
                        Err(error) if !checkpoint.path.exists() => {
                            let reason =
                                format!("removed by the trainer before it was read: {error:#}");
                            session.record_skip(checkpoint, &reason)?;
                            on_event(&WatchEvent::Skipped {
                                step: checkpoint.step,
                                reason,
                            });
                        }
                        Err(error) => return Err(error),
                    }
                }
                Err(why) => {
                    let reason = format!("{why:#}");
                    let since = *first_incomplete
                        .entry(checkpoint.step)
                        .or_insert_with(Instant::now);
                    let later_complete = pending[i + 1..]
                        .iter()
                        .any(|c| check_complete(&c.path).is_ok());
                    if !options.once && later_complete && since.elapsed() >= stale_after {
                        let reason = format!(
                            "incomplete for {:.0} s while a later checkpoint is complete: {reason}",
                            since.elapsed().as_secs_f64()
                        );
                        session.record_skip(checkpoint, &reason)?;
                        on_event(&WatchEvent::Skipped {
                            step: checkpoint.step,
                            reason,
                        });
                        continue;
                    }
                    let key = (checkpoint.step, reason.clone());
                    if last_wait.as_ref() != Some(&key) {
                        on_event(&WatchEvent::Waiting {
                            step: checkpoint.step,
                            reason,
                        });
                        last_wait = Some(key);
                    }
                    break;
                }
            }
        }
        let Some(changes) = &mut changes else {
            return Ok(());
        };
        // A checkpoint waiting to complete is looked at again after the interval even without a
        // change, so the staleness rule above can skip it.
        let deadline = (!first_incomplete.is_empty()).then(|| Instant::now() + options.interval);
        if !changes.wait(deadline, stop, on_event)? {
            return Ok(());
        }
    }
}
