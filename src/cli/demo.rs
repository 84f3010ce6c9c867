//! `tunescope pretrain-demo` (train the demo model from scratch) and `tunescope demo-report`
//! (run every demo recipe and print the learning vs forgetting table).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::demo::{self, PretrainOptions};

#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Directory the trained model is written to (its files are replaced).
    #[arg(long, default_value = "assets/demo-model")]
    out: PathBuf,
    /// Seed of the initial weights, the extra examples and the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Optimizer steps.
    #[arg(long, default_value_t = 2500)]
    steps: usize,
    /// Peak learning rate (warmup, then cosine decay).
    #[arg(long, default_value_t = PretrainOptions::default().lr)]
    lr: f64,
    /// Examples per step.
    #[arg(long, default_value_t = PretrainOptions::default().batch_size)]
    batch_size: usize,
    /// Hidden size.
    #[arg(long, default_value_t = PretrainOptions::default().hidden_size)]
    hidden: usize,
    /// MLP size.
    #[arg(long, default_value_t = PretrainOptions::default().intermediate_size)]
    intermediate: usize,
    /// Decoder layers.
    #[arg(long, default_value_t = PretrainOptions::default().num_layers)]
    layers: usize,
    /// Attention heads.
    #[arg(long, default_value_t = PretrainOptions::default().num_heads)]
    heads: usize,
    /// Key/value heads (grouped-query attention).
    #[arg(long, default_value_t = PretrainOptions::default().num_kv_heads)]
    kv_heads: usize,
    /// Training-split examples drawn in code for a skill, on top of the shipped mixture
    /// (repeatable, e.g. --extra counting=10000; unnamed skills keep their default).
    #[arg(long, value_name = "SKILL=N")]
    extra: Vec<String>,
    /// Seed of the world; must be the seed `assets/` was made with.
    #[arg(long, default_value_t = 0)]
    world_seed: u64,
    /// The shipped mixture.
    #[arg(long, default_value = "assets/train/mixture.jsonl")]
    mixture: PathBuf,
    /// The shipped tasks the model is scored on.
    #[arg(long, default_value = "assets/tasks")]
    tasks: PathBuf,
    /// Directory for the pretraining run directory.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// Do not train: score the model already in --out again and rewrite its scores.json and
    /// README.md.
    #[arg(long)]
    rescore: bool,
}

pub fn pretrain(args: PretrainArgs) -> Result<()> {
    if args.rescore {
        let summary = demo::pretrain::rescore(&args.out)?;
        print!("{}", demo::pretrain::scores_table(&summary.scores));
        return Ok(());
    }
    let defaults = PretrainOptions::default();
    let mut extra = defaults.extra.clone();
    for item in &args.extra {
        let (skill, n) = item
            .split_once('=')
            .context("--extra takes SKILL=N, e.g. --extra counting=10000")?;
        if crate::world::Skill::from_name(skill).is_none() {
            bail!("--extra: unknown skill `{skill}` (counting, attributes, category, antonyms, copy, reverse)");
        }
        let n: usize = n
            .parse()
            .with_context(|| format!("--extra {item}: N must be a whole number"))?;
        extra.insert(skill.to_string(), n);
    }
    let opts = PretrainOptions {
        seed: args.seed,
        world_seed: args.world_seed,
        steps: Some(args.steps),
        lr: args.lr,
        batch_size: args.batch_size,
        hidden_size: args.hidden,
        intermediate_size: args.intermediate,
        num_layers: args.layers,
        num_heads: args.heads,
        num_kv_heads: args.kv_heads,
        extra,
        mixture: args.mixture,
        tasks_dir: args.tasks,
        runs: args.runs,
        ..defaults
    };
    // The command as run, with the thread count when it was pinned (it changes float sums).
    let threads = std::env::var("RAYON_NUM_THREADS")
        .map(|n| format!("RAYON_NUM_THREADS={n} "))
        .unwrap_or_default();
    let command = format!(
        "{threads}tunescope {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let summary = demo::pretrain(&opts, &args.out, &command, &mut |line| eprintln!("{line}"))?;
    print!("{}", demo::pretrain::scores_table(&summary.scores));
    Ok(())
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Recipes to compare (default: recipes/demo-*.yaml).
    #[arg(long, num_args = 1..)]
    recipes: Vec<PathBuf>,
    /// Directory for the run directories.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// Read the newest finished run of each recipe under --runs instead of training.
    #[arg(long)]
    reuse: bool,
    /// Print the rows as JSON.
    #[arg(long)]
    json: bool,
    /// Train (or with --reuse, read) every recipe with this many seeds: the recipes' seed, then
    /// the next ones. Rows then show mean ± standard deviation over seeds, and a plot follows.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Add a WiSE-FT row per seed: RECIPE's run interpolated to α between base (0) and tuned
    /// (1), e.g. `demo-mlp@0.5` (the study's WiSE-FT tunes the MLP). Repeatable.
    #[arg(long, value_name = "RECIPE@ALPHA")]
    wise_ft: Vec<String>,
    /// Override a field of every recipe, e.g. `--set model=models/smollm2-135m-instruct`
    /// (repeatable; the same syntax as `tunescope train --set`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

pub fn report(args: ReportArgs) -> Result<()> {
    let paths = if args.recipes.is_empty() {
        demo::report::default_recipes(std::path::Path::new("recipes"))?
    } else {
        args.recipes.clone()
    };
    let recipes = demo::report::load_recipes(&paths, &args.overrides, &args.runs)?;
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if args.seeds > 1 || !args.wise_ft.is_empty() {
        return report_seeded(&recipes, &args);
    }
    let rows = if args.reuse {
        demo::report::reuse_runs(&recipes)?
    } else {
        demo::report::run_all(&recipes, &mut |line| eprintln!("{line}"))?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", demo::table(&rows));
    }
    Ok(())
}

/// `demo-report --seeds N`: every recipe over N seeds, reduced to mean ± std.
fn report_seeded(recipes: &[crate::recipe::Recipe], args: &ReportArgs) -> Result<()> {
    let first = recipes.first().map_or(0, |r| r.seed);
    let seeds: Vec<u64> = (first..first + args.seeds).collect();
    let seeded = demo::report::with_seeds(recipes, &seeds);
    let rows = if args.reuse {
        demo::report::reuse_seeded(&seeded)?
    } else {
        demo::report::run_seeded(&seeded, &mut |line| eprintln!("{line}"))?
    };
    let mut rows = rows;
    for spec in &args.wise_ft {
        let (name, alpha) = parse_wise_ft(spec)?;
        let mut extra = Vec::new();
        for (seed, row) in rows.iter().filter(|(_, r)| r.recipe == name) {
            eprintln!("wise-ft: {name} seed {seed} at α {alpha}");
            let run = crate::run::RunDir::open(&row.run_dir)?;
            extra.push((*seed, demo::report::wise_ft_row(&run, alpha)?));
        }
        if extra.is_empty() {
            bail!("--wise-ft {spec}: no run of recipe `{name}` in this report");
        }
        rows.extend(extra);
    }
    let aggregated = demo::aggregate(&rows);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&aggregated)?);
        return Ok(());
    }
    if let Some(items) = recipes
        .first()
        .and_then(|r| r.eval.as_ref())
        .and_then(|e| e.max_items)
    {
        println!(
            "seeds {}; {items} items per task, so one target item is {:.2} pp",
            seeds
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            100.0 / items as f64
        );
    }
    print!("{}", demo::seeds::table(&aggregated));
    println!();
    print!("{}", demo::seeds::plot(&aggregated));
    Ok(())
}

/// `demo-mlp@0.5` → (`demo-mlp`, 0.5).
fn parse_wise_ft(spec: &str) -> Result<(String, f64)> {
    let (name, alpha) = spec
        .split_once('@')
        .context("--wise-ft takes RECIPE@ALPHA, e.g. demo-mlp@0.5")?;
    let alpha: f64 = alpha
        .parse()
        .with_context(|| format!("--wise-ft {spec}: α must be a number in [0, 1]"))?;
    if !(0.0..=1.0).contains(&alpha) {
        bail!("--wise-ft {spec}: α must lie in [0, 1] (0 = base, 1 = tuned)");
    }
    Ok((name.to_string(), alpha))
}
