//! `tunescope eval`: score a model on task files and print a table or JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::eval::tasks::{evaluate, Task, TaskScore};
use crate::model::Model;
use crate::util::device::{parse_device, parse_dtype};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model directory or hub id.
    model: String,
    /// Task files (YAML header + JSONL items).
    #[arg(long, num_args = 1.., required = true)]
    tasks: Vec<PathBuf>,
    /// Score only the first N items of each task.
    #[arg(long)]
    max_items: Option<usize>,
    /// Print a JSON list of task scores instead of a table.
    #[arg(long)]
    json: bool,
    /// Device: cpu, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

pub fn run(args: EvalArgs) -> Result<()> {
    // Load every task first so a bad file fails before the model is read.
    let tasks = args
        .tasks
        .iter()
        .map(|p| Task::load(p))
        .collect::<Result<Vec<_>>>()?;
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let model = Model::open(&args.model)?;
    let decoder = model.decoder(&Default::default(), dtype, &device)?;
    let mut scores = Vec::with_capacity(tasks.len());
    for task in &tasks {
        scores.push(evaluate(&decoder, &model.tokenizer, task, args.max_items)?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&scores)?);
    } else {
        print!("{}", table(&scores));
    }
    Ok(())
}

/// A metric value for the table: percentages and perplexities with two decimals.
fn fmt_value(v: f64) -> String {
    if v.is_finite() && v.abs() >= 1e6 {
        format!("{v:.3e}")
    } else {
        format!("{v:.2}")
    }
}

/// Aligned text table: task, role, type, items, score, other metrics.
fn table(scores: &[TaskScore]) -> String {
    let header = ["task", "role", "type", "items", "score", "metrics"].map(String::from);
    let mut rows = vec![header.to_vec()];
    for s in scores {
        let primary = match s.kind {
            crate::eval::tasks::TaskKind::MultipleChoice => "acc",
            crate::eval::tasks::TaskKind::Generate => "exact_match",
            crate::eval::tasks::TaskKind::Perplexity => "",
        };
        let others: Vec<String> = s
            .metrics
            .iter()
            .filter(|(k, _)| k.as_str() != primary)
            .map(|(k, v)| format!("{k}={}", fmt_value(*v)))
            .collect();
        rows.push(vec![
            s.name.clone(),
            s.role.as_str().to_string(),
            s.kind.as_str().to_string(),
            s.items.to_string(),
            s.score.map_or_else(|| "-".to_string(), fmt_value),
            others.join(" "),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                if c == 3 || c == 4 {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::tasks::{TaskKind, TaskRole};

    #[test]
    fn table_lists_score_and_other_metrics() {
        let scores = vec![
            TaskScore {
                name: "colours".into(),
                role: TaskRole::Target,
                kind: TaskKind::MultipleChoice,
                items: 4,
                score: Some(75.0),
                metrics: [("acc".to_string(), 75.0), ("acc_norm".to_string(), 50.0)].into(),
            },
            TaskScore {
                name: "wiki".into(),
                role: TaskRole::Heldout,
                kind: TaskKind::Perplexity,
                items: 2,
                score: None,
                metrics: [("perplexity".to_string(), 12.345)].into(),
            },
        ];
        let text = table(&scores);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains("colours") && lines[1].contains("75.00"));
        assert!(lines[1].contains("acc_norm=50.00") && !lines[1].contains("acc=75"));
        assert!(lines[2].contains("heldout") && lines[2].contains("perplexity=12.35"));
    }
}
