//! Typed events a training run emits to its front ends.

use std::path::PathBuf;

use serde::Serialize;

/// Metrics of one optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepMetrics {
    /// Updates completed (1-based).
    pub step: usize,
    pub total_steps: usize,
    pub epoch: usize,
    /// Mean loss per labelled token of this step.
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Real (non-padding) tokens processed per second of training time.
    pub tokens_per_s: f64,
    /// Seconds of training time since the run (or resume) started.
    pub elapsed: f64,
    pub tokens: usize,
}

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
