//! The per-stage table: one row for the base model and one after each stage, with the mean
//! held-out score, its change against the base, the forgetting and recovery of that stage, and
//! every stage's target score.
//!
//! With H(k) the mean held-out score after stage k (H(0): the base) and Δ(k) = H(k) − H(k−1):
//! - **forgetting** of stage k = max(0, −Δ(k)): how far held-out fell during the stage;
//! - **recovery** of stage k = min(max(0, Δ(k)), max(H(0..k−1)) − H(k−1)): the part of a rise
//!   that wins back ground lost in earlier stages (a rise above every earlier level is not
//!   recovery).
//!
//! All in percentage points.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::run::sequence::{ScoreEntry, SequenceRecord};

/// One target task's score in a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetCell {
    pub task: String,
    /// Percent; `None` when not scored.
    pub score: Option<f64>,
    /// Change against the base model, percentage points.
    pub delta: Option<f64>,
}

/// One row: the base model (`after: 0`) or the model after stage `after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRow {
    pub after: usize,
    /// `base` or the stage's name.
    pub label: String,
    /// Mean held-out score, percent.
    pub heldout_mean: Option<f64>,
    /// H(k) − H(0), percentage points.
    pub heldout_delta: Option<f64>,
    /// See the module documentation; `None` on the base row.
    pub forgetting: Option<f64>,
    pub recovery: Option<f64>,
    /// Each stage's target, in stage order.
    pub targets: Vec<TargetCell>,
}

/// The table of one sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTable {
    pub sequence: String,
    pub heldout_tasks: Vec<String>,
    /// Target task of each stage, in stage order (a task repeated by stages appears once).
    pub target_tasks: Vec<String>,
    pub rows: Vec<StageRow>,
}

/// The table of the scores recorded so far.
pub fn stage_table(record: &SequenceRecord) -> StageTable {
    let mut target_tasks: Vec<String> = Vec::new();
    for stage in &record.stages {
        if !target_tasks.contains(&stage.target_task) {
            target_tasks.push(stage.target_task.clone());
        }
    }
    let mut scores: Vec<_> = record.scores.iter().collect();
    scores.sort_by_key(|s| s.after);
    let score_of = |entry: &ScoreEntry, task: &str| {
        entry
            .tasks
            .iter()
            .find(|t| t.name == task)
            .and_then(|t| t.score)
            .filter(|v| v.is_finite())
    };
    let base = scores.iter().find(|s| s.after == 0).copied();
    let mut rows = Vec::new();
    let mut previous: Vec<f64> = Vec::new();
    for entry in &scores {
        let heldout: Vec<f64> = record
            .heldout_tasks
            .iter()
            .filter_map(|t| score_of(entry, t))
            .collect();
        let mean =
            (!heldout.is_empty()).then(|| heldout.iter().sum::<f64>() / heldout.len() as f64);
        let base_mean = rows.first().and_then(|r: &StageRow| r.heldout_mean);
        let (forgetting, recovery) = match (mean, previous.last()) {
            (Some(now), Some(&before)) if entry.after > 0 => {
                let change = now - before;
                let best = previous.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lost = (best - before).max(0.0);
                (Some((-change).max(0.0)), Some(change.max(0.0).min(lost)))
            }
            _ => (None, None),
        };
        let targets = target_tasks
            .iter()
            .map(|task| {
                let score = score_of(entry, task);
                let base_score = base.and_then(|b| score_of(b, task));
                TargetCell {
                    task: task.clone(),
                    score,
                    delta: score.zip(base_score).map(|(s, b)| s - b),
                }
            })
            .collect();
        rows.push(StageRow {
            after: entry.after,
            label: entry.label.clone(),
            heldout_mean: mean,
            heldout_delta: if entry.after == 0 {
                None
            } else {
                mean.zip(base_mean).map(|(m, b)| m - b)
            },
            forgetting,
            recovery,
            targets,
        });
        if let Some(m) = mean {
            previous.push(m);
        }
    }
    StageTable {
        sequence: record.name.clone(),
        heldout_tasks: record.heldout_tasks.clone(),
        target_tasks,
        rows,
    }
}

fn cell(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1}"))
}

fn signed(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:+.1}"))
}

impl StageTable {
    /// The table in Markdown: target cells read `score (Δ vs base)`.
    pub fn markdown(&self) -> String {
        let mut text = String::from("| after | held-out | Δ held-out | forgetting | recovery |");
        for task in &self.target_tasks {
            let _ = write!(text, " {task} |");
        }
        text.push_str("\n|---|---|---|---|---|");
        text.push_str(&"---|".repeat(self.target_tasks.len()));
        text.push('\n');
        for row in &self.rows {
            let label = if row.after == 0 {
                "base".to_string()
            } else {
                format!("{} {}", row.after, row.label)
            };
            let _ = write!(
                text,
                "| {label} | {} | {} | {} | {} |",
                cell(row.heldout_mean),
                signed(row.heldout_delta),
                cell(row.forgetting),
                cell(row.recovery)
            );
            for t in &row.targets {
                match (t.score, row.after) {
                    (Some(_), 0) | (None, _) => {
                        let _ = write!(text, " {} |", cell(t.score));
                    }
                    (Some(_), _) => {
                        let _ = write!(text, " {} ({}) |", cell(t.score), signed(t.delta));
                    }
                }
            }
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::tasks::{TaskKind, TaskRole, TaskScore};
    use crate::run::sequence::{SequenceSpec, StageEntry, StageState, FORMAT, VERSION};

    fn score(name: &str, role: TaskRole, value: f64) -> TaskScore {
        TaskScore {
            name: name.into(),
            role,
            kind: TaskKind::Generate,
            items: 10,
            score: Some(value),
            metrics: Default::default(),
        }
    }

    /// Held-out means 90, 80, 85, 95, 93 over two tasks; targets t1 and t2.
    fn record() -> SequenceRecord {
        let heldout = [
            (90.0, 90.0),
            (70.0, 90.0),
            (80.0, 90.0),
            (100.0, 90.0),
            (96.0, 90.0),
        ];
        let scores = heldout
            .iter()
            .enumerate()
            .map(|(after, &(h1, h2))| ScoreEntry {
                after,
                label: if after == 0 {
                    "base".into()
                } else {
                    format!("s{after}")
                },
                tasks: vec![
                    score("h1", TaskRole::Heldout, h1),
                    score("h2", TaskRole::Heldout, h2),
                    score("t1", TaskRole::Target, 10.0 * after as f64),
                    score("t2", TaskRole::Target, 50.0),
                ],
                seconds: 1.0,
            })
            .collect();
        let stage = |index: usize, target: &str| StageEntry {
            index,
            name: format!("s{index}"),
            run_dir: format!("{index}-s{index}").into(),
            recipe: "r.yaml".into(),
            data: "d.jsonl".into(),
            target: format!("{target}.yaml").into(),
            target_task: target.into(),
            model: "m".into(),
            state: StageState::Finished,
            steps: Some(4),
            train_seconds: 2.0,
        };
        SequenceRecord {
            format: FORMAT.into(),
            version: VERSION,
            name: "seq".into(),
            file: "seq.yaml".into(),
            overrides: Vec::new(),
            spec: SequenceSpec {
                name: "seq".into(),
                description: None,
                model: None,
                heldout: vec!["h1.yaml".into(), "h2.yaml".into()],
                max_items: None,
                set: Vec::new(),
                stages: Vec::new(),
            },
            base_model: "m".into(),
            heldout_tasks: vec!["h1".into(), "h2".into()],
            stages: vec![
                stage(1, "t1"),
                stage(2, "t2"),
                stage(3, "t1"),
                stage(4, "t2"),
            ],
            scores,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn forgetting_and_recovery_by_hand() {
        let table = stage_table(&record());
        assert_eq!(table.target_tasks, ["t1", "t2"]);
        let col = |f: fn(&StageRow) -> Option<f64>| table.rows.iter().map(f).collect::<Vec<_>>();
        assert_eq!(
            col(|r| r.heldout_mean),
            [Some(90.0), Some(80.0), Some(85.0), Some(95.0), Some(93.0)]
        );
        assert_eq!(
            col(|r| r.heldout_delta),
            [None, Some(-10.0), Some(-5.0), Some(5.0), Some(3.0)]
        );
        // 90 → 80: forgot 10. 80 → 85: recovered 5. 85 → 95: only 5 of the rise wins back lost
        // ground (the best earlier level was 90). 95 → 93: forgot 2.
        assert_eq!(
            col(|r| r.forgetting),
            [None, Some(10.0), Some(0.0), Some(0.0), Some(2.0)]
        );
        assert_eq!(
            col(|r| r.recovery),
            [None, Some(0.0), Some(5.0), Some(5.0), Some(0.0)]
        );
        let t1: Vec<_> = table
            .rows
            .iter()
            .map(|r| (r.targets[0].score, r.targets[0].delta))
            .collect();
        assert_eq!(t1[3], (Some(30.0), Some(30.0)));
        let text = table.markdown();
        assert!(
            text.contains("| 3 s3 | 95.0 | +5.0 | 0.0 | 5.0 | 30.0 (+30.0) | 50.0 (+0.0) |"),
            "{text}"
        );
        assert!(
            text.contains("| base | 90.0 | – | – | – | 0.0 | 50.0 |"),
            "{text}"
        );
    }
}
