//! The learning vs forgetting table: every demo recipe trained with the same seed and data, and
//! each run's last `eval` and `probe` records side by side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::eval::tasks::{TaskRole, TaskScore};
use crate::recipe::Recipe;
use crate::run::{list_runs, Record, RunDir, RunState};
use crate::train::{prepare, run_prepared, TrainControl, TrainEvent};

/// One recipe's line of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    pub recipe: String,
    pub run_dir: PathBuf,
    /// Trainable share of all parameters, in percent.
    pub trainable_percent: f64,
    pub steps: usize,
    /// Mean target-task score change (counting), percentage points.
    pub delta_target: Option<f64>,
    /// Mean held-out task score change, percentage points.
    pub delta_heldout: Option<f64>,
    /// Target and held-out mean scores (percent) of the base model and at the end.
    pub target_base: Option<f64>,
    pub target_end: Option<f64>,
    pub heldout_base: Option<f64>,
    pub heldout_end: Option<f64>,
    /// Held-out probe: mean numeric probability mass per generated step, base and end.
    pub numeric_mass_base: Option<f64>,
    pub numeric_mass_end: Option<f64>,
    /// Seconds from start to finish, probes and evaluations included.
    pub wall_seconds: Option<f64>,
    /// Seconds spent in training steps alone.
    pub train_seconds: Option<f64>,
}

/// The demo recipes: `recipes/demo-*.yaml`, sorted.
pub fn default_recipes(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("demo-") && n.ends_with(".yaml"))
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("no recipes/demo-*.yaml under {}", dir.display());
    }
    Ok(paths)
}

/// Loads `paths` with the `--set` `overrides` applied to each and checks they share what makes
/// the comparison fair (model, data, seed, steps, batch); returns the recipes with their output
/// directory set to `runs`.
pub fn load_recipes(paths: &[PathBuf], overrides: &[String], runs: &Path) -> Result<Vec<Recipe>> {
    let mut recipes = Vec::new();
    for path in paths {
        let mut recipe = Recipe::load(path, overrides)?;
        recipe.output_dir = runs.to_string_lossy().into_owned();
        recipes.push(recipe);
    }
    if let Some(first) = recipes.first() {
        for r in &recipes[1..] {
            let same = r.model == first.model
                && r.data == first.data
                && r.seed == first.seed
                && r.max_steps == first.max_steps
                && r.epochs == first.epochs
                && r.batch_size == first.batch_size;
            if !same {
                bail!(
                    "recipe `{}` differs from `{}` in model, data, seed, steps or batch size; the \
                     table compares runs that differ only in what trains",
                    r.name,
                    first.name
                );
            }
        }
    }
    Ok(recipes)
}

/// Trains each recipe in turn (a new run directory under its `output_dir`) and reads its row.
/// `progress` receives a line per run and per monitoring pass.
pub fn run_all(recipes: &[Recipe], progress: &mut dyn FnMut(&str)) -> Result<Vec<ReportRow>> {
    let mut rows = Vec::new();
    for recipe in recipes {
        // Everything that can fail on bad input fails here, before a run directory exists.
        let prepared = prepare(recipe)?;
        let (run, lock) = prepared.create_run(None)?;
        progress(&format!("{}: {}", recipe.name, run.path().display()));
        let started = Instant::now();
        let name = recipe.name.clone();
        let outcome = run_prepared(prepared, &run, lock, &TrainControl::default(), &mut |e| {
            if let TrainEvent::Monitor {
                step,
                heldout_numeric_mass_delta,
                delta_learning,
                delta_heldout,
                ..
            } = e
            {
                progress(&format!(
                    "  {name} step {step}: Δ target {} pp, Δ held-out {} pp, Δ numeric mass {}",
                    fmt_opt(*delta_learning, 1),
                    fmt_opt(*delta_heldout, 1),
                    fmt_opt(*heldout_numeric_mass_delta, 4)
                ));
            }
        })?;
        if outcome.state != RunState::Finished {
            bail!(
                "run {} ended {}: {}",
                run.path().display(),
                outcome.state.as_str(),
                outcome.reason.unwrap_or_default()
            );
        }
        let mut row = read_row(&run)?;
        row.wall_seconds = Some(started.elapsed().as_secs_f64());
        rows.push(row);
    }
    Ok(rows)
}

/// The newest finished run of each recipe under its `output_dir` (no training).
pub fn reuse_runs(recipes: &[Recipe]) -> Result<Vec<ReportRow>> {
    recipes
        .iter()
        .map(|recipe| read_row(&newest_finished(recipe)?))
        .collect()
}

/// `recipes` with each seed of `seeds` in turn (seed-major order: every recipe on the first seed,
/// then every recipe on the next).
pub fn with_seeds(recipes: &[Recipe], seeds: &[u64]) -> Vec<(u64, Recipe)> {
    seeds
        .iter()
        .flat_map(|&seed| {
            recipes.iter().map(move |recipe| {
                let mut recipe = recipe.clone();
                recipe.seed = seed;
                (seed, recipe)
            })
        })
        .collect()
}

/// Trains every (seed, recipe) pair and reads its row, tagged with the seed.
pub fn run_seeded(
    seeded: &[(u64, Recipe)],
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<(u64, ReportRow)>> {
    let mut rows = Vec::new();
    for (seed, recipe) in seeded {
        progress(&format!("seed {seed}"));
        let row = run_all(std::slice::from_ref(recipe), progress)?
            .pop()
            .context("a row per recipe")?;
        rows.push((*seed, row));
    }
    Ok(rows)
}

/// The newest finished run of each (seed, recipe) pair under the recipe's `output_dir`.
pub fn reuse_seeded(seeded: &[(u64, Recipe)]) -> Result<Vec<(u64, ReportRow)>> {
    seeded
        .iter()
        .map(|(seed, recipe)| Ok((*seed, read_row(&newest_finished(recipe)?)?)))
        .collect()
}

/// The newest run under `recipe.output_dir` that finished with this recipe's name and seed.
fn newest_finished(recipe: &Recipe) -> Result<RunDir> {
    list_runs(Path::new(&recipe.output_dir))
        .into_iter()
        .find(|run| {
            run.read_status()
                .is_ok_and(|s| s.state == RunState::Finished && s.recipe == recipe.name)
                && run.read_recipe().is_ok_and(|r| r.seed == recipe.seed)
        })
        .with_context(|| {
            format!(
                "no finished run of `{}` with seed {} under {}",
                recipe.name, recipe.seed, recipe.output_dir
            )
        })
}

/// A run's row, from its `metrics.jsonl` (the `start` record and the last `eval` and `probe`
/// records) and `status.json` (wall time).
pub fn read_row(run: &RunDir) -> Result<ReportRow> {
    let log = run.read_records()?;
    let status = run.read_status()?;
    let start = log
        .iter()
        .find_map(|r| match r {
            Record::Start(start) => Some(start),
            _ => None,
        })
        .with_context(|| format!("{} has no start record", run.path().display()))?;
    let eval = log.iter().rev().find_map(|r| match r {
        Record::Eval(e) => Some(e),
        _ => None,
    });
    let probe = log.iter().rev().find_map(|r| match r {
        Record::Probe(p) => Some(p),
        _ => None,
    });
    let train = log.iter().rev().find_map(|r| match r {
        Record::Train(m) => Some(m),
        _ => None,
    });
    let trainable = start.trainable as f64;
    let total = (start.total_params as f64).max(1.0);
    let mean_score = |list: Option<&Vec<TaskScore>>, role: TaskRole| -> Option<f64> {
        let scores: Vec<f64> = list?
            .iter()
            .filter(|t| t.role == role)
            .filter_map(|t| t.score)
            .collect();
        (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64)
    };
    let heldout = probe.and_then(|p| p.heldout.as_ref());
    let wall = match (
        chrono::DateTime::parse_from_rfc3339(&status.started_at),
        chrono::DateTime::parse_from_rfc3339(&status.updated_at),
    ) {
        (Ok(a), Ok(b)) => Some((b - a).num_milliseconds() as f64 / 1000.0),
        _ => None,
    };
    Ok(ReportRow {
        recipe: status.recipe.clone(),
        run_dir: run.path().to_path_buf(),
        trainable_percent: 100.0 * trainable / total,
        steps: status.step,
        delta_target: eval.and_then(|e| e.delta_learning),
        delta_heldout: eval.and_then(|e| e.delta_heldout),
        target_base: mean_score(eval.map(|e| &e.base), TaskRole::Target),
        target_end: mean_score(eval.map(|e| &e.tasks), TaskRole::Target),
        heldout_base: mean_score(eval.map(|e| &e.base), TaskRole::Heldout),
        heldout_end: mean_score(eval.map(|e| &e.tasks), TaskRole::Heldout),
        numeric_mass_base: heldout.map(|h| h.base.numeric_mass.mean),
        numeric_mass_end: heldout.map(|h| h.now.numeric_mass.mean),
        wall_seconds: wall,
        train_seconds: train.map(|m| m.elapsed),
    })
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:+.decimals$}"))
}

fn fmt_plain(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.decimals$}"))
}

/// The table as aligned text.
pub fn table(rows: &[ReportRow]) -> String {
    let header = [
        "recipe",
        "trainable",
        "Δ target (counting)",
        "Δ held-out",
        "held-out numeric mass",
        "wall",
    ]
    .map(String::from)
    .to_vec();
    let mut lines = vec![header];
    for r in rows {
        lines.push(vec![
            r.recipe.clone(),
            format!("{:.1}%", r.trainable_percent),
            format!(
                "{} pp ({} → {})",
                fmt_opt(r.delta_target, 1),
                fmt_plain(r.target_base, 1),
                fmt_plain(r.target_end, 1)
            ),
            format!(
                "{} pp ({} → {})",
                fmt_opt(r.delta_heldout, 1),
                fmt_plain(r.heldout_base, 1),
                fmt_plain(r.heldout_end, 1)
            ),
            format!(
                "{} → {}",
                fmt_plain(r.numeric_mass_base, 4),
                fmt_plain(r.numeric_mass_end, 4)
            ),
            r.wall_seconds
                .map_or_else(|| "n/a".to_string(), |s| format!("{s:.0} s")),
        ]);
    }
    align(&lines)
}

/// Left-aligned columns separated by two spaces.
pub(super) fn align(lines: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
            .collect();
        let _ = writeln!(text, "{}", cells.join("  ").trim_end());
    }
    text
}

/// The WiSE-FT row of a finished run: its trained tensors moved to `alpha` between the base
/// (0) and the tuned values (1), probed and scored by the run's own monitor (cached in the run).
pub fn wise_ft_row(run: &RunDir, alpha: f64) -> Result<ReportRow> {
    let source = read_row(run)?;
    let mut interpolation = crate::interpolate::Interpolation::open(run.path())?;
    let point = interpolation.score(alpha)?;
    Ok(ReportRow {
        recipe: format!("wise-ft {} α {alpha}", source.recipe),
        delta_target: point.delta_target,
        delta_heldout: point.delta_heldout,
        target_end: None,
        heldout_end: None,
        numeric_mass_end: point.heldout_numeric_mass,
        wall_seconds: source.wall_seconds.map(|s| s + point.seconds),
        ..source
    })
}
