//! `tunescope quickstart` (also what `tunescope` with no arguments runs, until the workbench
//! lands): builds a tiny model, writes a small counting data set, shows the plan for the
//! `sa-proj` recipe, and trains it for a few steps, all offline.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use crate::model::tiny::{make_tiny, TinySpec};
use crate::model::Architecture;

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Where the tiny model is written (reused when present).
    #[arg(long, default_value = "models/tiny-qwen2")]
    pub model: PathBuf,
    /// Directory for run directories.
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
}

/// Seeded counting examples from the synthetic world, one JSON object per line.
pub fn counting_jsonl(n: usize, seed: u64) -> String {
    use crate::world::{Skill, Split, World};
    World::new(seed)
        .examples(Skill::Counting, Split::Train, n, seed)
        .into_iter()
        .map(|e| serde_json::json!({"prompt": e.prompt, "response": e.response}).to_string() + "\n")
        .collect()
}

pub fn run(args: QuickstartArgs) -> Result<()> {
    let model = &args.model;
    if !model.join("config.json").is_file() {
        eprintln!("writing a tiny random Qwen2 model to {}", model.display());
        make_tiny(&TinySpec::new(Architecture::Qwen2, 0), model)?;
    }
    let data = model.join("sample-count.jsonl");
    if !data.is_file() {
        std::fs::write(&data, counting_jsonl(64, 0))
            .with_context(|| format!("cannot write {}", data.display()))?;
    }
    let recipe = find_recipe("sa-proj")?;
    let model_arg = format!("model={}", model.display());
    let data_arg = format!("data={}", data.display());
    let steps_arg = format!("max_steps={}", args.steps);
    let sets = [
        model_arg.as_str(),
        data_arg.as_str(),
        steps_arg.as_str(),
        "optimizer.lr=0.01",
    ];
    let exe = std::env::current_exe()?;
    let mut plan = std::process::Command::new(&exe);
    plan.arg("plan").arg(&recipe);
    let mut train = std::process::Command::new(&exe);
    train
        .arg("train")
        .arg(&recipe)
        .arg("--runs")
        .arg(&args.runs);
    for set in sets {
        plan.arg("--set").arg(set);
        train.arg("--set").arg(set);
    }
    eprintln!(
        "$ tunescope plan {} --set {}",
        recipe.display(),
        sets[..1].join(" --set ")
    );
    anyhow::ensure!(plan.status()?.success(), "tunescope plan failed");
    eprintln!(
        "\n$ tunescope train {} --set {}",
        recipe.display(),
        sets.join(" --set ")
    );
    anyhow::ensure!(train.status()?.success(), "tunescope train failed");
    eprintln!(
        "\nnext: `tunescope runs` lists runs; `tunescope inspect {}` shows the module tree",
        model.display()
    );
    Ok(())
}

fn find_recipe(name: &str) -> Result<PathBuf> {
    let candidates = [
        PathBuf::from("recipes").join(format!("{name}.yaml")),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("recipes")
            .join(format!("{name}.yaml")),
    ];
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("recipe {name}.yaml not found in ./recipes"))
}
