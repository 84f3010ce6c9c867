//! The records of `metrics.jsonl`: the one contract between the engine (trainer, monitor,
//! watch) and the views (reader, TUI, `runs`, demo report). One JSON object per line, tagged by
//! `kind`; the field names are those written since the first release, so old run directories
//! still read.
//!
//! A metrics file written by this version starts with a `header` record carrying
//! [`FORMAT_VERSION`]; a file without one is version 0 (the same fields). Readers skip (and
//! count) records of kinds they do not know, so a newer writer never breaks an older view.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::eval::drift::LayerDrift;
use crate::eval::probe::{Divergence, GreedyStats};
use crate::eval::tasks::TaskScore;
use crate::recipe::GuardAction;

/// Version of the record format written by this build (in the `header` record).
pub const FORMAT_VERSION: u32 = 1;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// First line of a metrics file: the format version. Absent in version-0 files.
    Header {
        /// Format version ([`FORMAT_VERSION`] when written by this build).
        v: u32,
    },
    /// A run started training from step 0.
    Start(RunStart),
    /// A run continued from a checkpoint; records of later steps were removed before it.
    Resume(RunStart),
    /// One optimizer step.
    Train(StepMetrics),
    /// A drift-probe reading (the histograms are in `probe/step-N.json`).
    Probe(Box<ProbeRecord>),
    /// Per-layer drift of attention and MLP contributions as the study computes it: each
    /// model's own unembedding, averaged per sample, then over samples
    /// ([`crate::eval::drift::layer_drift`]).
    #[serde(rename = "layer_drift_own")]
    LayerDrift {
        /// Updates completed when measured.
        step: usize,
        /// One entry per layer; empty when unreadable.
        #[serde(default, deserialize_with = "or_default")]
        layers: Vec<LayerDrift>,
    },
    /// Per-layer drift as earlier builds recorded it (kind `layer_drift`): the base
    /// unembedding for both models, pooled over tokens
    /// ([`crate::eval::drift::layer_drift_pooled`]). Read from old run directories.
    #[serde(rename = "layer_drift")]
    LayerDriftPooled {
        /// Updates completed when measured.
        step: usize,
        /// One entry per layer; empty when unreadable.
        #[serde(default, deserialize_with = "or_default")]
        layers: Vec<LayerDrift>,
    },
    /// Task scores against the base model.
    Eval(EvalRecord),
    /// The drift guard's bound was crossed.
    Guard {
        /// Updates completed when the guard tripped.
        step: usize,
        /// Which bound was crossed, by how much.
        reason: String,
        /// `stop` or `warn`.
        action: GuardAction,
        /// Extra context (watch: nothing is stopped).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// Updates the checkpoint holds.
        step: usize,
        /// Its directory.
        path: PathBuf,
    },
    /// A checkpoint could not be written (the previous one is intact); training went on.
    CheckpointFailed {
        /// Updates the checkpoint would have held.
        step: usize,
        /// Why it failed.
        error: String,
    },
    /// The run stopped on request or by the guard (resumable).
    Stopped {
        /// Updates completed.
        step: usize,
    },
    /// The run finished and exported its model.
    Finished {
        /// Updates completed (the total).
        step: usize,
        /// The exported model directory.
        final_dir: PathBuf,
    },
    /// The run (or watch) failed.
    Failed {
        /// Step at which it failed.
        step: usize,
        /// The error.
        reason: String,
    },
    /// A watch session started on this run directory.
    WatchStart {
        /// Newest step already recorded.
        step: usize,
        /// The watched checkpoint folder.
        watched: PathBuf,
        /// How many steps were already recorded.
        recorded: usize,
        /// The watching process.
        pid: u32,
    },
    /// A watched checkpoint was evaluated (or skipped); written after its probe/eval records.
    Watch(WatchRecord),
    /// The forgetting forecast made at the first probe after the base, from the finished runs
    /// beside this one (`tunescope forecast`).
    Forecast {
        /// Updates completed when forecast.
        step: usize,
        /// The predicted final Δ held-out, in points.
        heldout_delta: f64,
        /// ± this: the forecast's leave-one-run-out mean absolute error, in points.
        error: f64,
        /// Runs the forecast was fitted on.
        runs: usize,
    },
    /// A kind this build does not know (written by a newer version); skipped by readers.
    #[serde(other)]
    Unknown,
}

impl Record {
    /// The step a record belongs to (`None` for the header and unknown kinds).
    pub fn step(&self) -> Option<usize> {
        Some(match self {
            Record::Header { .. } | Record::Unknown => return None,
            Record::Start(s) | Record::Resume(s) => s.step,
            Record::Train(m) => m.step,
            Record::Probe(p) => p.step,
            Record::Eval(e) => e.step,
            Record::Watch(w) => w.step,
            Record::LayerDrift { step, .. }
            | Record::LayerDriftPooled { step, .. }
            | Record::Guard { step, .. }
            | Record::Checkpoint { step, .. }
            | Record::CheckpointFailed { step, .. }
            | Record::Stopped { step }
            | Record::Finished { step, .. }
            | Record::Failed { step, .. }
            | Record::WatchStart { step, .. }
            | Record::Forecast { step, .. } => *step,
        })
    }

    /// The `kind` tag as written.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Header { .. } => "header",
            Record::Start(_) => "start",
            Record::Resume(_) => "resume",
            Record::Train(_) => "train",
            Record::Probe(_) => "probe",
            Record::LayerDrift { .. } => "layer_drift_own",
            Record::LayerDriftPooled { .. } => "layer_drift",
            Record::Eval(_) => "eval",
            Record::Guard { .. } => "guard",
            Record::Checkpoint { .. } => "checkpoint",
            Record::CheckpointFailed { .. } => "checkpoint_failed",
            Record::Stopped { .. } => "stopped",
            Record::Finished { .. } => "finished",
            Record::Failed { .. } => "failed",
            Record::WatchStart { .. } => "watch_start",
            Record::Forecast { .. } => "forecast",
            Record::Watch(_) => "watch",
            Record::Unknown => "unknown",
        }
    }
}

/// A run's start (or resume): what is trained on what.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunStart {
    /// Updates already done (0 for `start`, the checkpoint's step for `resume`).
    pub step: usize,
    pub run_dir: PathBuf,
    pub total_steps: usize,
    /// Same as `step`.
    pub start_step: usize,
    /// Trainable parameters.
    pub trainable: usize,
    /// All parameters of the model.
    pub total_params: usize,
    /// Training examples after tokenization.
    pub examples: usize,
    /// Examples cut to `max_length`.
    pub truncated: usize,
    /// Examples dropped (no response token left).
    pub dropped: usize,
    /// Whether prompts went through the model's chat template.
    pub used_chat_template: bool,
}

/// Metrics of one optimizer step (the `train` record and the in-process step event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// With `regularize: {method: lwf}`: T²·KL(teacher ‖ student) per answer token of this
    /// step, before λ (absent in runs without LwF and in older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lwf_kl: Option<f64>,
}

/// A probe reading: the summary of each prompt set (target, held-out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// Updates completed when probed (0: the base model).
    pub step: usize,
    /// The target-task prompts, when configured.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub target: Option<ProbeSetSummary>,
    /// The held-out prompts, when configured.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub heldout: Option<ProbeSetSummary>,
    /// Seconds the probe took.
    #[serde(default)]
    pub seconds: f64,
}

/// One prompt set's probe summary (`SetReport` without its histogram).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSetSummary {
    /// The current model's greedy statistics.
    pub now: GreedyStats,
    /// The base model's.
    pub base: GreedyStats,
    /// KL divergence and entropies, current against base.
    pub divergence: Divergence,
    /// Numeric mass now minus base.
    pub numeric_mass_delta: f64,
}

/// Task scores at one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Updates completed when evaluated.
    pub step: usize,
    /// Scores now (empty when unreadable).
    #[serde(default, deserialize_with = "or_default")]
    pub tasks: Vec<TaskScore>,
    /// Scores of the base model.
    #[serde(default, deserialize_with = "or_default")]
    pub base: Vec<TaskScore>,
    /// Mean target score minus base, in points.
    #[serde(default)]
    pub delta_learning: Option<f64>,
    /// Mean held-out score minus base, in points.
    #[serde(default)]
    pub delta_heldout: Option<f64>,
    /// Seconds the evaluation took.
    #[serde(default)]
    pub seconds: f64,
}

/// A watched checkpoint, evaluated or skipped.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WatchRecord {
    /// The checkpoint's step (0: the base model).
    pub step: usize,
    /// The checkpoint folder, or the base model's name at step 0.
    pub checkpoint: String,
    /// True for a checkpoint that was not evaluated (see `reason`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// Why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether this is the base model (evaluated records only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<bool>,
    /// The weight files read (evaluated checkpoints only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<PathBuf>>,
    /// Held-out numeric mass now minus base.
    #[serde(default)]
    pub heldout_numeric_mass_delta: Option<f64>,
    /// Δ learning, points.
    #[serde(default)]
    pub delta_learning: Option<f64>,
    /// Δ held-out, points.
    #[serde(default)]
    pub delta_heldout: Option<f64>,
    /// Seconds the evaluation took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// Reads a nested value leniently: a value that does not fit (e.g. a non-finite number written
/// as `null`) becomes the default instead of failing the whole record, as the untyped readers did.
fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).unwrap_or_default())
}

/// What one complete line of `metrics.jsonl` holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A record of a known kind.
    Known(Record),
    /// A JSON object of a kind this build does not know.
    Unknown,
    /// Not a record (bad JSON, or a known kind with missing fields).
    Malformed,
}

/// Parses one line.
pub fn parse_line(line: &str) -> Line {
    match serde_json::from_str::<Record>(line) {
        Ok(Record::Unknown) => Line::Unknown,
        Ok(record) => Line::Known(record),
        Err(_) => Line::Malformed,
    }
}

/// The `step` of a raw line, whatever its kind (for rewriting files with unknown kinds).
pub(crate) fn raw_step(line: &str) -> Option<usize> {
    #[derive(Deserialize)]
    struct StepOf {
        step: Option<usize>,
    }
    serde_json::from_str::<StepOf>(line).ok()?.step
}

/// Every record of a metrics file, with what was skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordLog {
    /// Known records in file order (the header included).
    pub records: Vec<Record>,
    /// The header's version; `None` for a version-0 file.
    pub version: Option<u32>,
    /// Complete lines of unknown kinds (from a newer version), skipped.
    pub unknown: usize,
    /// Complete lines that are not records, skipped.
    pub malformed: usize,
    /// An incomplete last line (a write in progress, or cut by a crash), skipped: 0 or 1.
    pub torn: usize,
}

impl RecordLog {
    /// Parses the text of a metrics file; an incomplete last line (a write in progress or torn
    /// by a crash) is ignored.
    pub fn parse(text: &str) -> Self {
        let mut log = RecordLog::default();
        let complete = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        let tail = &text[complete.len()..];
        // A last line without newline that parses is complete (written by hand or by an older
        // build); one that does not is torn: skipped and counted.
        let tail_complete = !tail.trim().is_empty() && parse_line(tail.trim()) != Line::Malformed;
        log.torn = usize::from(!tail.trim().is_empty() && !tail_complete);
        for line in complete.lines().chain(Some(tail).filter(|_| tail_complete)) {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            match parse_line(line) {
                Line::Known(record) => {
                    if let Record::Header { v } = record {
                        log.version.get_or_insert(v);
                    }
                    log.records.push(record);
                }
                Line::Unknown => log.unknown += 1,
                Line::Malformed => log.malformed += 1,
            }
        }
        log
    }

    /// Records of known kinds other than the header.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Record> {
        self.records
            .iter()
            .filter(|r| !matches!(r, Record::Header { .. }))
    }

    /// Logs a warning when lines were skipped; `what` names the file.
    pub fn warn_skipped(&self, what: &str) {
        if self.unknown > 0 {
            tracing::warn!(
                "{what}: skipped {} records of kinds this build does not know (format v{} is newer than v{FORMAT_VERSION}?); update tunescope to see them",
                self.unknown,
                self.version.unwrap_or(0)
            );
        }
        if self.malformed > 0 {
            tracing::warn!(
                "{what}: skipped {} lines that are not records",
                self.malformed
            );
        }
    }
}
