//! Reads a run directory incrementally for front ends: new lines of `metrics.jsonl` are parsed
//! into [`Record`]s as they appear (a torn last line waits for the next read; unknown kinds are
//! counted and skipped), and the status and newest probe snapshot are re-read only when they
//! change. A replaced metrics file (rewritten on resume) is read again from the start.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::Value;

use super::record::{parse_line, Line, Record};
use super::sequence::SequenceView;
use super::{RunDir, Status};
use crate::eval::drift::LayerDrift;
use crate::eval::probe::HistogramEntry;
use crate::eval::tasks::TaskScore;

/// One probe reading over time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProbePoint {
    pub step: f64,
    pub heldout_mass: Option<f64>,
    pub heldout_base_mass: Option<f64>,
    pub target_mass: Option<f64>,
    pub target_base_mass: Option<f64>,
    pub kl: Option<f64>,
    pub entropy: Option<f64>,
    pub first_token_numeric: Option<f64>,
    /// Held-out mass of the target task's answer vocabulary (class `answer`), now and base.
    pub heldout_answer_mass: Option<(f64, f64)>,
    /// Held-out answer shape, now and base: share ending within `k` tokens, mean length, and
    /// the probability of ending at once.
    pub heldout_shape: Option<ShapePoint>,
}

/// The answer shape of one probe reading, now against base.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ShapePoint {
    pub short_answer_tokens: usize,
    pub ends_within: (f64, f64),
    pub mean_length: (f64, f64),
    pub first_stop_prob: (f64, f64),
}

/// Everything the views show about one run.
#[derive(Debug, Clone, Default)]
pub struct RunSnapshot {
    pub status: Option<Status>,
    /// (step, loss) of every training step.
    pub loss: Vec<(f64, f64)>,
    pub lr: Vec<(f64, f64)>,
    pub tokens_per_s: Option<f64>,
    /// Training seconds so far (evaluation excluded).
    pub elapsed: Option<f64>,
    pub probes: Vec<ProbePoint>,
    /// Newest evaluation: step, scores, base scores, Δ learning, Δ held-out.
    pub eval_step: Option<usize>,
    pub scores: Vec<TaskScore>,
    pub base_scores: Vec<TaskScore>,
    pub delta_learning: Option<f64>,
    pub delta_heldout: Option<f64>,
    /// Newest per-layer drift: the study's measure (`layer_drift_own` records), or in run
    /// directories of earlier builds their pooled base-unembedding measure (`layer_drift`).
    pub layer_drift: Vec<LayerDrift>,
    /// Held-out histogram of the newest probe snapshot (falls back to the target set).
    pub histogram: Vec<HistogramEntry>,
    pub histogram_step: Option<usize>,
    pub trainable: Option<usize>,
    pub total_params: Option<usize>,
    pub guard_messages: Vec<String>,
    /// The forgetting forecast: predicted final Δ held-out, its ± error, runs fitted on.
    pub forecast: Option<(f64, f64, usize)>,
    pub last_event: Option<String>,
    /// The run's place in its sequence, when it is a stage of one.
    pub sequence: Option<SequenceView>,
}

impl RunSnapshot {
    /// Estimated seconds left, from the mean step time so far.
    pub fn eta_seconds(&self) -> Option<f64> {
        let status = self.status.as_ref()?;
        let (elapsed, step) = (self.elapsed?, status.step);
        if step == 0 || status.total_steps <= step {
            return None;
        }
        Some(elapsed / step as f64 * (status.total_steps - step) as f64)
    }
}

/// Incremental reader of one run directory.
#[derive(Clone)]
pub struct RunReader {
    run: RunDir,
    offset: u64,
    /// Identity of the metrics file read so far (a rewrite replaces it).
    file_id: Option<(u64, u64)>,
    /// Records of kinds this build does not know (from a newer version), skipped.
    unknown: usize,
    /// Complete lines that are not records, skipped.
    malformed: usize,
    pending: String,
    status_mtime: Option<SystemTime>,
    /// Modification time of `sequence.json` beside the run, when read.
    sequence_mtime: Option<SystemTime>,
    snapshot: RunSnapshot,
    /// Whether a record of the study's drift measure was read: from then on the pooled
    /// measure of older builds no longer fills [`RunSnapshot::layer_drift`].
    own_drift_seen: bool,
}

impl RunReader {
    pub fn new(run: RunDir) -> Self {
        Self {
            run,
            offset: 0,
            file_id: None,
            unknown: 0,
            malformed: 0,
            pending: String::new(),
            status_mtime: None,
            sequence_mtime: None,
            snapshot: RunSnapshot::default(),
            own_drift_seen: false,
        }
    }

    /// The run directory being read.
    pub fn run(&self) -> &RunDir {
        &self.run
    }

    /// The state as of the last [`RunReader::refresh`].
    pub fn snapshot(&self) -> &RunSnapshot {
        &self.snapshot
    }

    /// How many records of unknown kinds (written by a newer version) were skipped so far.
    pub fn unknown_records(&self) -> usize {
        self.unknown
    }

    /// How many complete lines that are not records were skipped in the file as read now.
    pub fn malformed_lines(&self) -> usize {
        self.malformed
    }

    /// Whether the file read so far ends in an incomplete line (a write in progress, or cut by
    /// a crash): it is held back, not applied, until its newline arrives or the file is rewritten.
    pub fn torn_tail(&self) -> bool {
        !self.pending.trim().is_empty()
    }

    /// Reads whatever changed since the last call; returns whether anything did.
    pub fn refresh(&mut self) -> bool {
        let mut changed = false;
        let mtime = std::fs::metadata(self.run.status_path())
            .and_then(|m| m.modified())
            .ok();
        if mtime.is_some() && mtime != self.status_mtime {
            if let Ok(status) = self.run.read_status() {
                self.snapshot.status = Some(status);
                self.status_mtime = mtime;
                changed = true;
            }
        }
        if let Some(parent) = self.run.path().parent() {
            let mtime = std::fs::metadata(parent.join(super::sequence::FILE))
                .and_then(|m| m.modified())
                .ok();
            if mtime.is_some() && mtime != self.sequence_mtime {
                self.sequence_mtime = mtime;
                self.snapshot.sequence = SequenceView::read(&self.run);
                changed = true;
            }
        }
        let mut new_histogram = None;
        for record in self.read_new_records() {
            changed = true;
            if let Record::Probe(probe) = &record {
                new_histogram = Some(probe.step);
            }
            self.apply(record);
        }
        if let Some(step) = new_histogram {
            self.load_histogram(step);
        }
        changed
    }

    fn read_new_records(&mut self) -> Vec<Record> {
        let Ok(mut file) = std::fs::File::open(self.run.metrics_path()) else {
            return Vec::new();
        };
        let Ok(metadata) = file.metadata() else {
            return Vec::new();
        };
        let len = metadata.len();
        let id = file_identity(&metadata);
        let replaced = self.file_id.is_some() && id != self.file_id;
        self.file_id = id;
        if len < self.offset || replaced {
            // The file was replaced: start over.
            self.offset = 0;
            self.malformed = 0;
            self.pending.clear();
            self.own_drift_seen = false;
            self.snapshot = RunSnapshot {
                status: self.snapshot.status.take(),
                sequence: self.snapshot.sequence.take(),
                ..RunSnapshot::default()
            };
        }
        if len == self.offset || file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return Vec::new();
        }
        self.offset += bytes.len() as u64;
        self.pending.push_str(&String::from_utf8_lossy(&bytes));
        let mut records = Vec::new();
        while let Some(end) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=end).collect();
            match parse_line(line.trim()) {
                Line::Known(record) => records.push(record),
                Line::Unknown => {
                    if self.unknown == 0 {
                        tracing::warn!(
                            "{}: skipping records of kinds this build does not know (written by a newer tunescope?)",
                            self.run.metrics_path().display()
                        );
                    }
                    self.unknown += 1;
                }
                Line::Malformed => self.malformed += 1,
            }
        }
        records
    }

    fn apply(&mut self, record: Record) {
        let s = &mut self.snapshot;
        let step = record.step().unwrap_or(0) as f64;
        let kind = record.kind();
        match record {
            Record::Start(start) | Record::Resume(start) => {
                s.trainable = Some(start.trainable);
                s.total_params = Some(start.total_params);
                // A resumed run replays from its checkpoint: drop later points (a metrics file
                // from before records were truncated on resume still has them).
                s.loss.retain(|(x, _)| *x <= step);
                s.lr.retain(|(x, _)| *x <= step);
                s.probes.retain(|p| p.step <= step);
                s.last_event = Some(format!("{kind} at step {step}"));
            }
            Record::Train(m) => {
                s.loss.push((step, m.loss));
                s.lr.push((step, m.lr));
                s.tokens_per_s = Some(m.tokens_per_s);
                s.elapsed = Some(m.elapsed);
            }
            Record::Probe(p) => {
                let (heldout, target) = (p.heldout.as_ref(), p.target.as_ref());
                s.probes.push(ProbePoint {
                    step,
                    heldout_mass: heldout.map(|h| h.now.numeric_mass.mean),
                    heldout_base_mass: heldout.map(|h| h.base.numeric_mass.mean),
                    target_mass: target.map(|t| t.now.numeric_mass.mean),
                    target_base_mass: target.map(|t| t.base.numeric_mass.mean),
                    kl: heldout.or(target).map(|set| set.divergence.kl.mean),
                    entropy: heldout.map(|h| h.divergence.entropy.mean),
                    first_token_numeric: heldout.map(|h| h.now.first_token_numeric),
                    heldout_answer_mass: heldout.and_then(|h| {
                        Some((
                            h.now.class_mass.get("answer")?.mean,
                            h.base.class_mass.get("answer")?.mean,
                        ))
                    }),
                    // Records written before answer shapes were probed carry none (k = 0).
                    heldout_shape: heldout.filter(|h| h.now.shape.short_answer_tokens > 0).map(
                        |h| ShapePoint {
                            short_answer_tokens: h.now.shape.short_answer_tokens,
                            ends_within: (h.now.shape.ends_within, h.base.shape.ends_within),
                            mean_length: (h.now.shape.mean_length, h.base.shape.mean_length),
                            first_stop_prob: (
                                h.now.shape.first_stop_prob.mean,
                                h.base.shape.first_stop_prob.mean,
                            ),
                        },
                    ),
                });
            }
            Record::Eval(e) => {
                s.eval_step = Some(e.step);
                s.scores = e.tasks;
                s.base_scores = e.base;
                s.delta_learning = e.delta_learning;
                s.delta_heldout = e.delta_heldout;
            }
            Record::LayerDrift { layers, .. } => {
                s.layer_drift = layers;
                self.own_drift_seen = true;
            }
            // Old run directories hold only the pooled measure: it fills the panel there.
            Record::LayerDriftPooled { layers, .. } if !self.own_drift_seen => {
                s.layer_drift = layers
            }
            Record::LayerDriftPooled { .. } => {}
            Record::Guard { reason, .. } => s.guard_messages.push(format!("step {step}: {reason}")),
            Record::Checkpoint { .. }
            | Record::Stopped { .. }
            | Record::Finished { .. }
            | Record::Failed { .. }
            | Record::CheckpointFailed { .. }
            | Record::Watch(_) => {
                s.last_event = Some(format!("{kind} at step {step}"));
            }
            Record::Forecast {
                heldout_delta,
                error,
                runs,
                ..
            } => s.forecast = Some((heldout_delta, error, runs)),
            Record::Header { .. } | Record::WatchStart { .. } | Record::Unknown => {}
        }
    }

    fn load_histogram(&mut self, step: usize) {
        let path: PathBuf = self
            .run
            .path()
            .join("probe")
            .join(format!("step-{step}.json"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            return;
        };
        let entries = value["heldout"]["histogram"].clone();
        let entries = if entries.is_null() {
            value["target"]["histogram"].clone()
        } else {
            entries
        };
        if let Ok(histogram) = serde_json::from_value(entries) {
            self.snapshot.histogram = histogram;
            self.snapshot.histogram_step = Some(step);
        }
    }
}

/// (device, inode) of a file, to notice when it is replaced by an atomic rewrite.
#[cfg(unix)]
fn file_identity(metadata: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((metadata.dev(), metadata.ino()))
}

#[cfg(not(unix))]
fn file_identity(_metadata: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// Per-task (base, now) score pairs of a snapshot, keyed by task name.
pub fn score_pairs(snapshot: &RunSnapshot) -> BTreeMap<String, (Option<f64>, Option<f64>)> {
    let mut out: BTreeMap<String, (Option<f64>, Option<f64>)> = BTreeMap::new();
    for s in &snapshot.base_scores {
        out.entry(s.name.clone()).or_default().0 = s.score;
    }
    for s in &snapshot.scores {
        out.entry(s.name.clone()).or_default().1 = s.score;
    }
    out
}
