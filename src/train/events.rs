//! Typed events a training run emits to its front ends. Each event that is also a line of
//! `metrics.jsonl` turns into its [`Record`] through [`TrainEvent::record`], the trainer's one
//! way of writing them, so the in-process events and the file never disagree.

use std::path::PathBuf;

use serde::Serialize;

use crate::recipe::GuardAction;
use crate::run::record::RunStart;
pub use crate::run::record::StepMetrics;
use crate::run::Record;

/// What happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    Started {
        run_dir: PathBuf,
        total_steps: usize,
        start_step: usize,
        trainable: usize,
        total_params: usize,
        examples: usize,
        truncated: usize,
        dropped: usize,
        used_chat_template: bool,
    },
    Step(StepMetrics),
    Checkpoint {
        step: usize,
        path: PathBuf,
    },
    /// A probe/evaluation pass finished (its records are in metrics.jsonl).
    Monitor {
        step: usize,
        heldout_numeric_mass_delta: Option<f64>,
        delta_learning: Option<f64>,
        delta_heldout: Option<f64>,
        seconds: f64,
    },
    /// The drift guard's bound was crossed.
    Guard {
        step: usize,
        reason: String,
        stop: bool,
    },
    CheckpointFailed {
        step: usize,
        error: String,
    },
    Stopped {
        step: usize,
    },
    Finished {
        step: usize,
        final_dir: PathBuf,
    },
    Failed {
        step: usize,
        reason: String,
    },
}

impl TrainEvent {
    /// The `metrics.jsonl` record of this event (`None` for [`TrainEvent::Monitor`], whose
    /// probe and eval records the monitor writes itself).
    pub fn record(&self) -> Option<Record> {
        Some(match self {
            TrainEvent::Started {
                run_dir,
                total_steps,
                start_step,
                trainable,
                total_params,
                examples,
                truncated,
                dropped,
                used_chat_template,
            } => {
                let start = RunStart {
                    step: *start_step,
                    run_dir: run_dir.clone(),
                    total_steps: *total_steps,
                    start_step: *start_step,
                    trainable: *trainable,
                    total_params: *total_params,
                    examples: *examples,
                    truncated: *truncated,
                    dropped: *dropped,
                    used_chat_template: *used_chat_template,
                };
                if *start_step > 0 {
                    Record::Resume(start)
                } else {
                    Record::Start(start)
                }
            }
            TrainEvent::Step(metrics) => Record::Train(metrics.clone()),
            TrainEvent::Checkpoint { step, path } => Record::Checkpoint {
                step: *step,
                path: path.clone(),
            },
            TrainEvent::Monitor { .. } => return None,
            TrainEvent::Guard { step, reason, stop } => Record::Guard {
                step: *step,
                reason: reason.clone(),
                action: if *stop {
                    GuardAction::Stop
                } else {
                    GuardAction::Warn
                },
                note: None,
            },
            TrainEvent::CheckpointFailed { step, error } => Record::CheckpointFailed {
                step: *step,
                error: error.clone(),
            },
            TrainEvent::Stopped { step } => Record::Stopped { step: *step },
            TrainEvent::Finished { step, final_dir } => Record::Finished {
                step: *step,
                final_dir: final_dir.clone(),
            },
            TrainEvent::Failed { step, reason } => Record::Failed {
                step: *step,
                reason: reason.clone(),
            },
        })
    }
}
