//! The per-task score record and the learning / held-out deltas between two evaluations.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{TaskKind, TaskRole};

/// The result of scoring one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskScore {
    pub name: String,
    pub role: TaskRole,
    pub kind: TaskKind,
    pub items: usize,
    /// Primary score in percent (acc for multiple_choice, exact/numeric match for generate); None for perplexity.
    pub score: Option<f64>,
    /// All metrics: multiple_choice: acc, acc_norm (percent); generate: exact_match (percent);
    /// perplexity: perplexity, nll_per_token, bits_per_byte.
    pub metrics: BTreeMap<String, f64>,
}

/// Δ learning (mean target score − base) and Δ held-out (mean held-out score − base), in
/// percentage points. Tasks are paired by name (role taken from `now`); tasks without a score on
/// either side, or missing from `base`, are skipped; a side is `None` when it has no scored pair.
pub fn deltas(now: &[TaskScore], base: &[TaskScore]) -> (Option<f64>, Option<f64>) {
    let side = |role: TaskRole| -> Option<f64> {
        let diffs: Vec<f64> = now
            .iter()
            .filter(|s| s.role == role)
            .filter_map(|s| {
                let before = base.iter().find(|b| b.name == s.name)?.score?;
                Some(s.score? - before)
            })
            .collect();
        (!diffs.is_empty()).then(|| diffs.iter().sum::<f64>() / diffs.len() as f64)
    };
    (side(TaskRole::Target), side(TaskRole::Heldout))
}
