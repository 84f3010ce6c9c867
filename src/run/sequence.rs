//! The sequence directory's contract: `sequence.json`, the typed, versioned record of a
//! sequence of fine-tuning stages (the sequence file, each stage's run directory and state, and
//! the task scores before the first stage and after each), and the sequence file's types.
//! Written atomically by `sequence::run_sequence` whenever it changes; the table and the views
//! read it. A stage's run directory is a normal run directory inside the sequence directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Record, RunDir};
use crate::eval::tasks::TaskScore;
use crate::util::fs::write_json_atomic;

/// The `format` field of `sequence.json`.
pub const FORMAT: &str = "tunescope-sequence";
/// Version of the `sequence.json` layout written by this build.
pub const VERSION: u32 = 1;
/// File name of the record inside a sequence directory.
pub const FILE: &str = "sequence.json";

/// One stage: a recipe tuned on `data`, scored on `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Short name (letters, digits, `-`, `_`, `.`, `+`): the stage's run directory is `<k>-<name>`.
    pub name: String,
    /// The recipe file (its `model` is used by the first stage only).
    pub recipe: PathBuf,
    /// Training data of this stage (replaces the recipe's `data`).
    pub data: PathBuf,
    /// The stage's target task (a task YAML with `role: target`).
    pub target: PathBuf,
    /// Target-task probe prompts (replace the recipe's `probe.target`; absent: the stage's
    /// probe follows the held-out prompts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_target: Option<PathBuf>,
    /// Recipe overrides of this stage (`key.path=value`), after the sequence's `set`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<String>,
}

/// A sequence file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceSpec {
    /// Name of the sequence (default: the file's stem); the default output directory is
    /// `<first recipe's output_dir>/<name>`.
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The first stage's starting model (default: the first recipe's `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Held-out tasks (`role: heldout`), scored before the first stage and after every stage,
    /// and evaluated live during each stage.
    pub heldout: Vec<PathBuf>,
    /// Items per task in the scoring after each stage (absent: every item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<usize>,
    /// Recipe overrides applied to every stage (`key.path=value`), before the stage's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<String>,
    pub stages: Vec<StageSpec>,
}

/// Where a stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageState {
    /// Not started.
    Pending,
    /// Training (or interrupted while training: a re-run resumes it).
    Running,
    /// Stopped on request; a re-run resumes it from its checkpoint.
    Stopped,
    /// Training failed; a re-run resumes it from its last checkpoint.
    Failed,
    /// Trained and scored.
    Finished,
}

/// One stage of the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageEntry {
    /// 1-based position.
    pub index: usize,
    pub name: String,
    /// The stage's run directory, relative to the sequence directory (`<index>-<name>`).
    pub run_dir: PathBuf,
    pub recipe: PathBuf,
    pub data: PathBuf,
    pub target: PathBuf,
    /// Name of the target task.
    pub target_task: String,
    /// The model the stage starts from: the base model, or the previous stage's `final/`.
    pub model: String,
    pub state: StageState,
    /// Optimizer steps of the stage (known once it started).
    #[serde(default)]
    pub steps: Option<usize>,
    /// Seconds the stage's training took in this and earlier invocations (probes and live
    /// evaluation included, the scoring after it not).
    #[serde(default)]
    pub train_seconds: f64,
}

/// Task scores of one model of the sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreEntry {
    /// 0: the base model; k: after stage k.
    pub after: usize,
    /// `base` or the stage's name.
    pub label: String,
    /// Every held-out task and every stage's target.
    pub tasks: Vec<TaskScore>,
    /// Seconds the scoring took.
    pub seconds: f64,
}

/// The contents of `sequence.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceRecord {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] when written by this build.
    pub version: u32,
    pub name: String,
    /// The sequence file it was started from.
    pub file: PathBuf,
    /// `--set` overrides of the command line.
    pub overrides: Vec<String>,
    /// The parsed sequence file (a re-run must give the same).
    pub spec: SequenceSpec,
    /// The first stage's starting model.
    pub base_model: String,
    /// Names of the held-out tasks.
    pub heldout_tasks: Vec<String>,
    pub stages: Vec<StageEntry>,
    /// The base model's scores (`after: 0`), then each finished stage's, in order.
    pub scores: Vec<ScoreEntry>,
    pub created_at: String,
    pub updated_at: String,
}

impl SequenceRecord {
    /// Reads `dir/sequence.json`, checking its format and version.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        if value["format"].as_str() != Some(FORMAT) {
            bail!(
                "{} is not a sequence record (format is not `{FORMAT}`)",
                path.display()
            );
        }
        match value["version"].as_u64() {
            Some(v) if v <= u64::from(VERSION) => {}
            v => bail!(
                "{} has version {v:?}; this build reads up to version {VERSION}",
                path.display()
            ),
        }
        serde_json::from_value(value).with_context(|| format!("{} does not parse", path.display()))
    }

    /// Writes `dir/sequence.json` atomically, stamping `updated_at`.
    pub fn save(&mut self, dir: &Path) -> Result<()> {
        self.updated_at = now();
        write_json_atomic(&dir.join(FILE), self)
    }

    /// The scores after stage `after` (0: the base), if measured.
    pub fn scores_after(&self, after: usize) -> Option<&ScoreEntry> {
        self.scores.iter().find(|s| s.after == after)
    }

    /// The stage whose run directory is `run_dir` (a path under the sequence directory).
    pub fn stage_of(&self, run_dir: &Path) -> Option<&StageEntry> {
        let name = run_dir.file_name()?;
        self.stages.iter().find(|s| s.run_dir.as_os_str() == name)
    }
}

/// A stage run's place in its sequence (from `sequence.json` beside the run directory).
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceView {
    pub record: SequenceRecord,
    /// This run's stage, 1-based.
    pub stage: usize,
    /// Where each stage up to this one starts on the sequence's step axis (stage k starts where
    /// stage k−1's steps end), with its label (`2 counting`).
    pub boundaries: Vec<(f64, String)>,
    /// The earlier stages' training loss on that axis.
    pub earlier_loss: Vec<(f64, f64)>,
}

impl SequenceView {
    /// Reads the sequence around `run` (its parent holds `sequence.json`); `None` when the run
    /// is not a stage of one.
    pub fn read(run: &RunDir) -> Option<Self> {
        let dir = run.path().parent()?;
        let record = SequenceRecord::load(dir).ok()?;
        let stage = record.stage_of(run.path())?.index;
        let mut boundaries = Vec::new();
        let mut earlier_loss = Vec::new();
        let mut offset = 0.0;
        for entry in record.stages.iter().take(stage) {
            boundaries.push((offset, format!("{} {}", entry.index, entry.name)));
            if entry.index == stage {
                break;
            }
            let losses: Vec<(f64, f64)> = RunDir::open(&dir.join(&entry.run_dir))
                .and_then(|r| r.read_records())
                .map(|log| {
                    log.iter()
                        .filter_map(|r| match r {
                            Record::Train(m) => Some((offset + m.step as f64, m.loss)),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            let steps = entry
                .steps
                .map(|s| s as f64)
                .or_else(|| losses.last().map(|p| p.0 - offset))
                .unwrap_or(0.0);
            earlier_loss.extend(losses);
            offset += steps;
        }
        Some(Self {
            record,
            stage,
            boundaries,
            earlier_loss,
        })
    }

    /// Where this stage starts on the sequence's step axis.
    pub fn offset(&self) -> f64 {
        self.boundaries.last().map_or(0.0, |b| b.0)
    }
}

/// A run directory's name in listings: its own name, or `<sequence dir>/<name>` for a stage
/// of a sequence (its parent holds `sequence.json`).
pub fn display_name(run_dir: &Path) -> String {
    let name = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| run_dir.display().to_string());
    match run_dir.parent() {
        Some(parent) if parent.join(FILE).is_file() => match parent.file_name() {
            Some(seq) => format!("{}/{name}", seq.to_string_lossy()),
            None => name,
        },
        _ => name,
    }
}

/// The local time, RFC 3339.
pub fn now() -> String {
    chrono::Local::now().to_rfc3339()
}
