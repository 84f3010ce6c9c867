//! Reads a run directory incrementally for front ends: new lines of `metrics.jsonl` are parsed
//! as they appear (a torn last line waits for the next read), and the status and newest probe
//! snapshot are re-read only when they change.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::Value;

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
    pub layer_drift: Vec<LayerDrift>,
    /// Held-out histogram of the newest probe snapshot (falls back to the target set).
    pub histogram: Vec<HistogramEntry>,
    pub histogram_step: Option<usize>,
    pub trainable: Option<usize>,
    pub total_params: Option<usize>,
    pub guard_messages: Vec<String>,
    pub last_event: Option<String>,
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
pub struct RunReader {
    run: RunDir,
    offset: u64,
    pending: String,
    status_mtime: Option<SystemTime>,
    snapshot: RunSnapshot,
}

impl RunReader {
    pub fn new(run: RunDir) -> Self {
        Self {
            run,
            offset: 0,
            pending: String::new(),
            status_mtime: None,
            snapshot: RunSnapshot::default(),
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
        let mut new_histogram = None;
        for record in self.read_new_records() {
            changed = true;
            if record["kind"] == "probe" {
                new_histogram = record["step"].as_u64();
            }
            self.apply(&record);
        }
        if let Some(step) = new_histogram {
            self.load_histogram(step as usize);
        }
        changed
    }

    fn read_new_records(&mut self) -> Vec<Value> {
        let Ok(mut file) = std::fs::File::open(self.run.metrics_path()) else {
            return Vec::new();
        };
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return Vec::new();
        };
        if len < self.offset {
            // The file was replaced: start over.
            self.offset = 0;
            self.pending.clear();
            self.snapshot = RunSnapshot {
                status: self.snapshot.status.take(),
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
            if let Ok(value) = serde_json::from_str::<Value>(line.trim()) {
                records.push(value);
            }
        }
        records
    }

    fn apply(&mut self, r: &Value) {
        let s = &mut self.snapshot;
        let step = r["step"].as_f64().unwrap_or(0.0);
        match r["kind"].as_str().unwrap_or("") {
            "start" | "resume" => {
                s.trainable = r["trainable"].as_u64().map(|n| n as usize);
                s.total_params = r["total_params"].as_u64().map(|n| n as usize);
                // A resumed run replays from its checkpoint: drop later points.
                s.loss.retain(|(x, _)| *x <= step);
                s.lr.retain(|(x, _)| *x <= step);
                s.probes.retain(|p| p.step <= step);
                s.last_event = Some(format!(
                    "{} at step {step}",
                    r["kind"].as_str().unwrap_or("")
                ));
            }
            "train" => {
                if let Some(loss) = r["loss"].as_f64() {
                    s.loss.push((step, loss));
                }
                if let Some(lr) = r["lr"].as_f64() {
                    s.lr.push((step, lr));
                }
                s.tokens_per_s = r["tokens_per_s"].as_f64();
                s.elapsed = r["elapsed"].as_f64();
            }
            "probe" => {
                let get = |set: &str, path: &[&str]| -> Option<f64> {
                    let mut v = &r[set];
                    for key in path {
                        v = &v[*key];
                    }
                    v.as_f64()
                };
                s.probes.push(ProbePoint {
                    step,
                    heldout_mass: get("heldout", &["now", "numeric_mass", "mean"]),
                    heldout_base_mass: get("heldout", &["base", "numeric_mass", "mean"]),
                    target_mass: get("target", &["now", "numeric_mass", "mean"]),
                    target_base_mass: get("target", &["base", "numeric_mass", "mean"]),
                    kl: get("heldout", &["divergence", "kl", "mean"])
                        .or_else(|| get("target", &["divergence", "kl", "mean"])),
                    entropy: get("heldout", &["divergence", "entropy", "mean"]),
                    first_token_numeric: get("heldout", &["now", "first_token_numeric"]),
                });
            }
            "eval" => {
                s.eval_step = Some(step as usize);
                s.scores = serde_json::from_value(r["tasks"].clone()).unwrap_or_default();
                s.base_scores = serde_json::from_value(r["base"].clone()).unwrap_or_default();
                s.delta_learning = r["delta_learning"].as_f64();
                s.delta_heldout = r["delta_heldout"].as_f64();
            }
            "layer_drift" => {
                s.layer_drift = serde_json::from_value(r["layers"].clone()).unwrap_or_default();
            }
            "guard" => s.guard_messages.push(format!(
                "step {step}: {}",
                r["reason"].as_str().unwrap_or("")
            )),
            kind @ ("checkpoint" | "stopped" | "finished" | "failed" | "checkpoint_failed"
            | "watch") => {
                s.last_event = Some(format!("{kind} at step {step}"));
            }
            _ => {}
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
