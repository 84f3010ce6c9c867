//! Pretraining the demo model from scratch on the world's mixture, with the project's own
//! trainer: a random Llama-architecture model with the word-level tokenizer, every parameter
//! trainable, a high learning rate with warmup and cosine decay, several epochs of the shipped
//! mixture plus more training-split examples drawn in code. The run's `final/` becomes the demo
//! model, scored per skill on the shipped tasks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::tokenizer::build_word_tokenizer;
use crate::eval::tasks::{evaluate, MatchMode, Task, TaskItem, TaskKind, TaskRole};
use crate::model::tiny::{make_tiny_with_tokenizer, TinySpec};
use crate::model::{Architecture, Model};
use crate::recipe::{Recipe, ScheduleKind};
use crate::run::{RunDir, RunState};
use crate::select::TrainableSpec;
use crate::train::{run_training, TrainControl, TrainEvent};
use crate::util::fs::{write_atomic, write_json_atomic};
use crate::world::split::derive_seed;
use crate::world::{Skill, Split, World};

/// Items per task in the quick re-check of `tests/demo.rs` (`check_scores`).
pub const CHECK_ITEMS: usize = 50;

/// The shipped tasks the demo model is scored on, in report order.
pub const TASKS: [&str; 5] = ["counting", "attributes", "category", "antonyms", "reverse"];

/// Everything that decides the demo model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainOptions {
    /// Seed of the weights, the extra examples and the data order.
    pub seed: u64,
    /// Seed of the world: must be the one `assets/` was generated with (0).
    pub world_seed: u64,
    /// Optimizer steps; `None`: `epochs` passes over the data.
    pub steps: Option<usize>,
    pub epochs: usize,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// Training-split examples drawn in code per skill, on top of the shipped mixture (the
    /// algorithmic skills, counting, copy and reverse, need far more than the memorised ones).
    pub extra: BTreeMap<String, usize>,
    /// The shipped mixture (`assets/train/mixture.jsonl`).
    pub mixture: PathBuf,
    /// The shipped tasks (`assets/tasks`).
    pub tasks_dir: PathBuf,
    /// Where the pretraining run directory is created.
    pub runs: PathBuf,
}

impl Default for PretrainOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            world_seed: 0,
            steps: Some(2500),
            epochs: 1,
            lr: 3e-3,
            warmup_ratio: 0.05,
            weight_decay: 0.01,
            batch_size: 32,
            hidden_size: 128,
            intermediate_size: 384,
            num_layers: 4,
            num_heads: 4,
            num_kv_heads: 2,
            extra: default_extra(),
            mixture: PathBuf::from("assets/train/mixture.jsonl"),
            tasks_dir: PathBuf::from("assets/tasks"),
            runs: PathBuf::from("runs"),
        }
    }
}

/// Examples drawn in code per skill by default. Counting, the demo's fine-tuning target, gets
/// few on purpose: the base model counts at about 40%, so fine-tuning has something to learn
/// (with 30000 it counted at 90% and no recipe could improve it).
pub fn default_extra() -> BTreeMap<String, usize> {
    [
        (Skill::Counting, 4_000),
        (Skill::Attributes, 5_000),
        (Skill::Category, 2_000),
        (Skill::Antonyms, 2_000),
        (Skill::Copy, 5_000),
        (Skill::Reverse, 8_000),
    ]
    .into_iter()
    .map(|(skill, n)| (skill.as_str().to_string(), n))
    .collect()
}

/// One skill's measured score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillScore {
    pub skill: String,
    /// Percent correct (exact or numeric match; accuracy for multiple choice).
    pub score: f64,
    pub items: usize,
    /// Baseline in percent: a uniform guess among the choices for multiple choice, else always
    /// giving the most common reference answer of the scored items.
    pub baseline: f64,
    /// Where the items come from: a shipped task file, or the world's test split drawn in code.
    pub source: String,
}

/// What `scores.json` beside the demo model holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoScores {
    pub command: String,
    pub options: PretrainOptions,
    pub parameters: usize,
    pub steps: usize,
    pub examples: usize,
    pub train_seconds: f64,
    pub final_loss: Option<f64>,
    /// Every item of each task.
    pub scores: Vec<SkillScore>,
    /// The first `CHECK_ITEMS` items of each task (what `tests/demo.rs` re-measures).
    pub check_scores: Vec<SkillScore>,
}

impl DemoScores {
    /// Reads `scores.json` from a demo model directory.
    pub fn load(model_dir: &Path) -> Result<Self> {
        let path = model_dir.join("scores.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} does not parse", path.display()))
    }

    /// The score of `skill` on every item, if measured.
    pub fn score(&self, skill: &str) -> Option<f64> {
        find(&self.scores, skill)
    }

    /// The score of `skill` on the first `CHECK_ITEMS` items, if measured.
    pub fn check_score(&self, skill: &str) -> Option<f64> {
        find(&self.check_scores, skill)
    }
}

fn find(scores: &[SkillScore], skill: &str) -> Option<f64> {
    scores.iter().find(|s| s.skill == skill).map(|s| s.score)
}

/// Trains the demo model and writes it, its `scores.json` and `README.md` to `out`.
/// `command` is the command line recorded in the README. `progress` receives one line now and
/// then.
pub fn pretrain(
    opts: &PretrainOptions,
    out: &Path,
    command: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<DemoScores> {
    let world = World::new(opts.world_seed);
    let run = RunDir::create(&opts.runs, "pretrain-demo")?;
    progress(&format!("run directory: {}", run.path().display()));

    let init = run.path().join("init");
    let tokenizer = build_word_tokenizer(&world)?;
    let spec = TinySpec {
        arch: Architecture::Llama,
        hidden_size: opts.hidden_size,
        intermediate_size: opts.intermediate_size,
        num_layers: opts.num_layers,
        num_heads: opts.num_heads,
        num_kv_heads: opts.num_kv_heads,
        vocab_size: tokenizer.get_vocab_size(true),
        tie_embeddings: Some(false),
        gemma2: false,
        seed: derive_seed(opts.seed, "pretrain/init"),
    };
    make_tiny_with_tokenizer(&spec, &tokenizer, &init)?;

    let data = run.path().join("data.jsonl");
    let examples = write_training_data(&world, opts, &data)?;
    progress(&format!(
        "{examples} training examples ({} shipped + drawn in code) in {}",
        opts.mixture.display(),
        data.display()
    ));

    let recipe = Recipe {
        name: "pretrain-demo".into(),
        description: Some("the demo model, trained from scratch on the world's mixture".into()),
        model: Some(init.to_string_lossy().into_owned()),
        data: Some(data.to_string_lossy().into_owned()),
        max_length: 128,
        trainable: TrainableSpec {
            kinds: vec!["llm".into()],
            ..TrainableSpec::default()
        },
        optimizer: crate::recipe::OptimizerSpec {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            beta2: 0.98,
            ..Default::default()
        },
        schedule: crate::recipe::ScheduleSpec {
            kind: ScheduleKind::Cosine,
            warmup_ratio: opts.warmup_ratio,
            warmup_steps: None,
        },
        batch_size: opts.batch_size,
        epochs: opts.epochs,
        max_steps: opts.steps,
        seed: opts.seed,
        output_dir: opts.runs.to_string_lossy().into_owned(),
        ..Recipe::default()
    };
    recipe.validate()?;
    run.write_recipe(&recipe)?;

    let started = Instant::now();
    let mut parameters = 0;
    let mut last_loss = None;
    let mut total = 0;
    let outcome = run_training(
        &recipe,
        &run,
        false,
        &TrainControl::default(),
        &mut |event| match event {
            TrainEvent::Started {
                total_steps,
                total_params,
                ..
            } => {
                parameters = *total_params;
                total = *total_steps;
                progress(&format!(
                    "training all {total_params} parameters for {total_steps} steps"
                ));
            }
            TrainEvent::Step(m) => {
                last_loss = Some(m.loss);
                if m.step % 50 == 0 || m.step == m.total_steps {
                    progress(&format!(
                        "step {}/{} loss {:.4} lr {:.2e} ({:.0} s)",
                        m.step,
                        m.total_steps,
                        m.loss,
                        m.lr,
                        started.elapsed().as_secs_f64()
                    ));
                }
            }
            _ => {}
        },
    )?;
    if outcome.state != RunState::Finished {
        bail!(
            "pretraining ended {}: {}",
            outcome.state.as_str(),
            outcome.reason.unwrap_or_default()
        );
    }
    let train_seconds = started.elapsed().as_secs_f64();

    copy_model(&run.final_dir(), out)?;
    progress(&format!("model written to {}; scoring", out.display()));
    let mut summary = DemoScores {
        command: command.to_string(),
        options: opts.clone(),
        parameters,
        steps: total,
        examples,
        train_seconds,
        final_loss: last_loss,
        scores: Vec::new(),
        check_scores: Vec::new(),
    };
    write_scores(out, &mut summary)?;
    Ok(summary)
}

/// Scores the demo model in `out` again (after a change to the tasks or the scoring) and
/// rewrites its `scores.json` and `README.md`; the training record is kept.
pub fn rescore(out: &Path) -> Result<DemoScores> {
    let mut summary = DemoScores::load(out)?;
    write_scores(out, &mut summary)?;
    Ok(summary)
}

/// Fills in the scores of the model in `out` and writes `scores.json` and `README.md`.
fn write_scores(out: &Path, summary: &mut DemoScores) -> Result<()> {
    let world = World::new(summary.options.world_seed);
    let tasks = &summary.options.tasks_dir;
    summary.scores = score_model(out, tasks, &world, None)?;
    summary.check_scores = score_model(out, tasks, &world, Some(CHECK_ITEMS))?;
    write_json_atomic(&out.join("scores.json"), summary)?;
    write_atomic(&out.join("README.md"), readme(summary).as_bytes())
}

/// Writes the shipped mixture plus the extra examples to `path`; returns the example count.
fn write_training_data(world: &World, opts: &PretrainOptions, path: &Path) -> Result<usize> {
    let shipped = std::fs::read_to_string(&opts.mixture).with_context(|| {
        format!(
            "cannot read {} (generate it with `tunescope make-assets --out assets --seed {}`)",
            opts.mixture.display(),
            opts.world_seed
        )
    })?;
    let mut text = String::new();
    let mut count = 0;
    for line in shipped.lines().filter(|l| !l.trim().is_empty()) {
        text.push_str(line);
        text.push('\n');
        count += 1;
    }
    for (name, &n) in &opts.extra {
        let skill = Skill::from_name(name)
            .with_context(|| format!("unknown skill `{name}` in the extra examples"))?;
        let stream = derive_seed(opts.seed, &format!("pretrain/extra/{skill}"));
        for e in world.examples(skill, Split::Train, n, stream) {
            let record = serde_json::json!({"prompt": e.prompt, "response": e.response, "skill": skill.as_str()});
            writeln!(text, "{record}")?;
            count += 1;
        }
    }
    write_atomic(path, text.as_bytes())?;
    Ok(count)
}

/// Copies the model files of `from` (a run's `final/`) into `to`, replacing what is there.
fn copy_model(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.path().is_file() {
            let target = to.join(entry.file_name());
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot write {}", target.display()))?;
        }
    }
    Ok(())
}

/// Scores the model in `model_dir` on every shipped task (the first `max_items` items of each)
/// and on copy, drawn from the world's test split (there is no shipped copy task).
pub fn score_model(
    model_dir: &Path,
    tasks_dir: &Path,
    world: &World,
    max_items: Option<usize>,
) -> Result<Vec<SkillScore>> {
    let model = Model::open(&model_dir.to_string_lossy())?;
    let decoder = model.decoder(
        &Default::default(),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )?;
    let mut tasks = Vec::new();
    for name in TASKS {
        let path = tasks_dir.join(format!("{name}.yaml"));
        tasks.push((Task::load(&path)?, path.display().to_string()));
    }
    tasks.push((copy_task(world, 200), "world test split (in code)".into()));
    let mut scores = Vec::new();
    for (task, source) in &tasks {
        let score = evaluate(&decoder, &model.tokenizer, task, max_items)?;
        let baseline = baseline(&task.items[..score.items]);
        scores.push(SkillScore {
            skill: task.name.clone(),
            score: score.score.unwrap_or(f64::NAN),
            items: score.items,
            baseline,
            source: source.clone(),
        });
    }
    Ok(scores)
}

/// The score of guessing (percent): uniform among the choices for multiple choice, else always
/// the most common first reference answer.
fn baseline(items: &[TaskItem]) -> f64 {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut choice_share = 0.0;
    for item in items {
        match item {
            TaskItem::MultipleChoice { choices, .. } => {
                choice_share += 1.0 / choices.len().max(1) as f64;
            }
            TaskItem::Generate { answers, .. } => {
                if let Some(a) = answers.first() {
                    *counts.entry(a.trim()).or_default() += 1;
                }
            }
            TaskItem::Perplexity { .. } => {}
        }
    }
    let majority = counts.values().max().copied().unwrap_or(0) as f64;
    100.0 * (choice_share + majority) / items.len().max(1) as f64
}

/// A generate task of `n` copy items from the world's test split.
pub fn copy_task(world: &World, n: usize) -> Task {
    let items = world
        .examples(
            Skill::Copy,
            Split::Test,
            n,
            derive_seed(world.seed(), "tasks/copy"),
        )
        .into_iter()
        .map(|e| TaskItem::Generate {
            prompt: e.prompt,
            answers: vec![e.response],
        })
        .collect();
    Task {
        name: "copy".into(),
        role: TaskRole::Heldout,
        kind: TaskKind::Generate,
        path: PathBuf::new(),
        data: PathBuf::new(),
        chat: true,
        max_new_tokens: 8,
        stop: Vec::new(),
        regex: None,
        match_mode: MatchMode::Exact,
        items,
        images: Vec::new(),
    }
}

/// The per-skill table in Markdown.
pub fn scores_table(scores: &[SkillScore]) -> String {
    let mut text =
        String::from("| skill | score | baseline | items | items from |\n|---|---|---|---|---|\n");
    for s in scores {
        let _ = writeln!(
            text,
            "| {} | {:.1}% | {:.0}% | {} | `{}` |",
            s.skill, s.score, s.baseline, s.items, s.source
        );
    }
    text
}

/// `README.md` of the demo model.
fn readme(s: &DemoScores) -> String {
    let o = &s.options;
    let shape = format!(
        "Llama architecture, hidden {}, {} layers, {} heads over {} KV heads (grouped-query), MLP {}, untied embeddings",
        o.hidden_size, o.num_layers, o.num_heads, o.num_kv_heads, o.intermediate_size
    );
    format!(
        "# demo-model: a small model trained from scratch on the synthetic world\n\n\
Generated by the project; do not edit by hand. To regenerate it (release build; about 11 minutes on 2 CPU cores shared with other work):\n\n\
```sh\n{command}\n```\n\n\
- {shape}; {params} parameters, f32 on disk.\n\
- Tokenizer: word-level over the world's vocabulary (`src/demo/tokenizer.rs`), ChatML specials and chat template.\n\
- Training: `tunescope::train::run_training`, every parameter trainable (`kinds: [llm]`), AdamW lr {lr:e}, \
weight decay {wd}, warmup {warm}% then cosine, batch {batch}, {steps} steps over {examples} examples \
(`{mixture}` plus training-split examples drawn in code: {extra}), seed {seed}, \
world seed {world}. Training took {secs:.0} s; final loss {loss}.\n\n\
## Scores (greedy decoding; test split, never seen in training)\n\n{table}\n\
Baseline: a uniform guess among the choices (category), else always giving the most common answer of the task.\n\
The same figures, and the scores on the first {check} items of each task that `tests/demo.rs` re-measures, are in \
`scores.json`.\n\n\
Reruns of the command are not bit-identical: two runs with the same options already differed in the 7th significant \
digit of the first step's loss (CPU floating-point results are not reproducible here), and training amplifies that, so \
a rerun gives scores a few points away per skill.\n",
        check = CHECK_ITEMS,
        command = s.command,
        params = s.parameters,
        lr = o.lr,
        wd = o.weight_decay,
        warm = o.warmup_ratio * 100.0,
        batch = o.batch_size,
        steps = s.steps,
        examples = s.examples,
        mixture = o.mixture.display(),
        extra = o
            .extra
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        seed = o.seed,
        world = o.world_seed,
        secs = s.train_seconds,
        loss = s
            .final_loss
            .map_or_else(|| "n/a".to_string(), |l| format!("{l:.4}")),
        table = scores_table(&s.scores),
    )
}
