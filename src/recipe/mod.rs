//! Recipes: one YAML file says which projections train, on what data, and how.
//!
//! Unknown keys are rejected with the nearest valid key suggested, errors carry the file's line
//! and column, and `--set key.path=value` overrides any field.

mod lora;
mod overrides;
mod regularize;

pub use lora::LoraSpec;
pub use overrides::apply_override;
pub use regularize::{RegularizeMethod, RegularizeSpec};

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::select::TrainableSpec;

/// Learning-rate schedule shape after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    #[default]
    Cosine,
    Linear,
    Constant,
}

/// Warmup and decay of the learning rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSpec {
    pub kind: ScheduleKind,
    /// Fraction of the total steps spent warming up (the study: 0.03).
    pub warmup_ratio: f64,
    /// Warmup steps; overrides `warmup_ratio` when set.
    pub warmup_steps: Option<usize>,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Cosine,
            warmup_ratio: 0.03,
            warmup_steps: None,
        }
    }
}

/// AdamW settings (the study: lr 5e-6, no weight decay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerSpec {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global gradient-norm clip; `null` disables clipping.
    pub max_grad_norm: Option<f64>,
    /// Learning rates of their own for some parameter kinds (`vision: 2e-6`, as the study
    /// tunes a vision tower); they follow the same schedule as `lr`.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub lr_by_kind: std::collections::BTreeMap<String, f64>,
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        Self {
            lr: 5e-6,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: Some(1.0),
            lr_by_kind: Default::default(),
        }
    }
}

/// The drift probe during training (`probe:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeSpec {
    /// Probe every N optimizer steps (0: only at step 0 and at the end).
    pub every_steps: usize,
    /// Target-task probe prompts (JSONL of `{"prompt": ...}`).
    pub target: Option<String>,
    /// Held-out probe prompts (JSONL of `{"prompt": ...}`).
    pub heldout: Option<String>,
    pub max_new_tokens: usize,
    /// At most this many prompts from each set.
    pub max_prompts: Option<usize>,
    /// Tokens kept in each histogram snapshot.
    pub top_k: usize,
    /// Also record per-layer drift of attention and MLP contributions.
    pub layer_drift: bool,
    /// The target task's answer vocabulary, derived from the training data (the tokens far
    /// more frequent in its responses than in its prompts and the held-out prompts) and probed
    /// as the class `answer`; `null` turns it off.
    pub answer_class: Option<crate::eval::classes::DeriveOptions>,
    /// More token classes to probe, by hand: `{name, tokens: [...]}` or `{name, regex: ...}`.
    pub classes: Vec<crate::eval::classes::ClassSpec>,
    /// An answer that ends within this many tokens counts as short (answer shape).
    pub short_answer_tokens: usize,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        Self {
            every_steps: 0,
            target: None,
            heldout: None,
            max_new_tokens: 16,
            max_prompts: Some(64),
            top_k: 20,
            layer_drift: true,
            answer_class: Some(Default::default()),
            classes: Vec::new(),
            short_answer_tokens: 2,
        }
    }
}

/// Task evaluation during training (`eval:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSpec {
    /// Evaluate every N optimizer steps (0: only at step 0 and at the end).
    pub every_steps: usize,
    /// Task headers (YAML); each says whether it is the target or a held-out task.
    pub tasks: Vec<String>,
    /// At most this many items per task.
    pub max_items: Option<usize>,
}

/// What the drift guard does when a bound is crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GuardAction {
    #[default]
    Warn,
    Stop,
}

/// Bounds on drift (`guard:`): flag or stop a run that drifts past them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GuardSpec {
    /// Largest allowed rise of the held-out numeric mass over the base model.
    pub max_numeric_mass_delta: Option<f64>,
    /// Largest allowed drop of the mean held-out score, in percentage points.
    pub max_heldout_drop: Option<f64>,
    /// Largest allowed rise of the held-out mass of the target's answer class over the base.
    pub max_answer_mass_delta: Option<f64>,
    /// Largest allowed rise of the held-out probability of ending an answer at once.
    pub max_stop_prob_delta: Option<f64>,
    pub action: GuardAction,
}

/// A complete training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recipe {
    /// Short name used in run directory names.
    pub name: String,
    pub description: Option<String>,
    /// Model directory or hub id `org/name[@revision]`.
    pub model: Option<String>,
    /// Training data: JSONL of `{"prompt","response"}` or `{"messages":[...]}`.
    pub data: Option<String>,
    /// Longest tokenized example; longer ones are cut (and counted).
    pub max_length: usize,
    /// Put loss on prompt tokens too (default: response tokens only).
    pub train_on_prompt: bool,
    pub trainable: TrainableSpec,
    pub optimizer: OptimizerSpec,
    pub schedule: ScheduleSpec,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Recompute each layer's forward in the backward instead of keeping its activations
    /// (transformers' `gradient_checkpointing`): far less memory for one more forward per layer.
    pub activation_checkpointing: bool,
    pub epochs: usize,
    /// Optimizer steps; overrides `epochs` when set.
    pub max_steps: Option<usize>,
    pub seed: u64,
    /// `cpu`, `cuda:N` or `metal`.
    pub device: String,
    /// Compute dtype: `f32` or `bf16` (trainable weights keep an f32 master copy).
    pub dtype: String,
    /// Directory that holds run directories.
    pub output_dir: String,
    /// Save a checkpoint every N optimizer steps (0: only when stopping or finishing).
    pub checkpoint_every: usize,
    /// Checkpoints kept on disk (oldest removed first).
    pub keep_checkpoints: usize,
    /// Drift probe settings; absent: no probe.
    pub probe: Option<ProbeSpec>,
    /// Task evaluation settings; absent: no evaluation.
    pub eval: Option<EvalSpec>,
    /// Drift guard; absent: no guard.
    pub guard: Option<GuardSpec>,
    /// LoRA adapters on the selected linears instead of training them; absent: no LoRA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSpec>,
    /// A loss term that holds the model near the stage's start (LwF); absent: none.
    pub regularize: Option<RegularizeSpec>,
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            name: "run".into(),
            description: None,
            model: None,
            data: None,
            max_length: 512,
            train_on_prompt: false,
            trainable: TrainableSpec::default(),
            optimizer: OptimizerSpec::default(),
            schedule: ScheduleSpec::default(),
            batch_size: 4,
            grad_accum: 1,
            activation_checkpointing: false,
            epochs: 1,
            max_steps: None,
            seed: 42,
            device: "cpu".into(),
            dtype: "f32".into(),
            output_dir: "runs".into(),
            checkpoint_every: 0,
            keep_checkpoints: 3,
            probe: None,
            eval: None,
            guard: None,
            lora: None,
            regularize: None,
        }
    }
}

impl Recipe {
    /// Reads a recipe file and applies `--set key.path=value` overrides, then validates it.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read recipe {}", path.display()))?;
        let mut recipe = Self::from_yaml_str(&text, &path.display().to_string())?;
        if recipe.name == Recipe::default().name {
            if let Some(stem) = path.file_stem() {
                recipe.name = stem.to_string_lossy().into_owned();
            }
        }
        if !overrides.is_empty() {
            let mut value = serde_yaml::to_value(&recipe)?;
            for item in overrides {
                apply_override(&mut value, item)?;
            }
            recipe = serde_yaml::from_value(value.clone()).map_err(|e| {
                anyhow::anyhow!(
                    "in --set {}: {}",
                    overrides.join(" --set "),
                    explain_serde_error(&e.to_string())
                )
            })?;
        }
        recipe.validate()?;
        Ok(recipe)
    }

    /// Parses YAML text; `origin` names the source in errors (`file:line:column: ...`).
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Self> {
        if text.trim().is_empty() {
            bail!("{origin}: the recipe is empty; it needs at least `model:` and `data:`");
        }
        serde_yaml::from_str(text).map_err(|e| {
            let location = e
                .location()
                .map(|l| format!("{origin}:{}:{}", l.line(), l.column()))
                .unwrap_or_else(|| origin.to_string());
            anyhow::anyhow!(
                "{location}: {}",
                explain_serde_error(&strip_location(&e.to_string()))
            )
        })
    }

    /// Checks values that parse but cannot work, naming the key.
    pub fn validate(&self) -> Result<()> {
        let o = &self.optimizer;
        let checks: [(bool, &str); 10] = [
            (
                o.lr.is_finite() && o.lr > 0.0,
                "optimizer.lr must be a positive number",
            ),
            (
                o.weight_decay.is_finite() && o.weight_decay >= 0.0,
                "optimizer.weight_decay must be >= 0",
            ),
            (
                (0.0..1.0).contains(&o.beta1),
                "optimizer.beta1 must be in [0, 1)",
            ),
            (
                (0.0..1.0).contains(&o.beta2),
                "optimizer.beta2 must be in [0, 1)",
            ),
            (o.eps > 0.0, "optimizer.eps must be positive"),
            (
                o.max_grad_norm.is_none_or(|n| n > 0.0),
                "optimizer.max_grad_norm must be positive or null",
            ),
            (
                (0.0..1.0).contains(&self.schedule.warmup_ratio),
                "schedule.warmup_ratio must be in [0, 1)",
            ),
            (self.batch_size > 0, "batch_size must be at least 1"),
            (self.grad_accum > 0, "grad_accum must be at least 1"),
            (self.max_length >= 2, "max_length must be at least 2"),
        ];
        for (ok, message) in checks {
            if !ok {
                bail!("{message}");
            }
        }
        if self.max_steps.is_none() && self.epochs == 0 {
            bail!("epochs must be at least 1 (or set max_steps)");
        }
        if self.max_steps == Some(0) {
            bail!("max_steps must be at least 1");
        }
        crate::util::device::parse_dtype(&self.dtype).context("key `dtype`")?;
        if !matches!(self.dtype.as_str(), "f32" | "bf16") {
            bail!(
                "key `dtype`: training supports f32 and bf16, got `{}`",
                self.dtype
            );
        }
        if let Some(lora) = &self.lora {
            lora.validate()?;
            if !self.optimizer.lr_by_kind.is_empty() {
                bail!("optimizer.lr_by_kind does not apply with `lora:` (the adapters train at lora.lr); remove one of them");
            }
        }
        let device = self.device.as_str();
        if !(device == "cpu"
            || device == "metal"
            || device == "cuda"
            || device.starts_with("cuda:"))
        {
            bail!("key `device`: expected cpu, cuda:N or metal, got `{device}`");
        }
        if let Some(spec) = &self.regularize {
            spec.validate()?;
        }
        Ok(())
    }

    /// The base learning rate of the schedule: `lora.lr` with LoRA, else `optimizer.lr`.
    pub fn learning_rate(&self) -> f64 {
        self.lora.as_ref().map_or(self.optimizer.lr, |l| l.lr)
    }

    /// The model name, or an error saying how to set it.
    pub fn model_spec(&self) -> Result<String> {
        self.model.clone().context(
            "the recipe names no model: add `model: PATH_OR_HUB_ID` or pass --set model=...",
        )
    }

    /// The training data file, or an error saying how to set it.
    pub fn data_path(&self) -> Result<PathBuf> {
        let data = self.data.as_deref().context(
            "the recipe names no training data: add `data: FILE.jsonl` or pass --set data=...",
        )?;
        let path = PathBuf::from(data);
        if !path.is_file() {
            bail!(
                "training data {} does not exist (key `data`)",
                path.display()
            );
        }
        Ok(path)
    }

    /// The recipe as YAML, every field explicit (the run directory's snapshot).
    pub fn to_yaml(&self) -> Result<String> {
        Ok(serde_yaml::to_string(self)?)
    }
}

/// serde_yaml appends " at line X column Y"; we print the location first instead.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Adds "did you mean" to unknown-field errors.
pub fn explain_serde_error(message: &str) -> String {
    // Nested keys come prefixed with their path (`optimizer: unknown field ...`).
    let Some(rest) = message.split_once("unknown field `").map(|(_, rest)| rest) else {
        return message.to_string();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    // The closest key at this level or one level down (`lrr` is nearer `optimizer.lr` than `lora`).
    let here = candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(field, c), c.to_string()))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let best = [here, nested_key_suggestion(field, &candidates)]
        .into_iter()
        .flatten()
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, name)) => format!("{message}; did you mean `{name}`?"),
        None => message.to_string(),
    }
}

/// For a key written one level too high (`lr:` at top level), the nested key it resembles
/// (`optimizer.lr`), looked up in the sections among `candidates`, with its similarity.
fn nested_key_suggestion(field: &str, candidates: &[&str]) -> Option<(f64, String)> {
    let serde_yaml::Value::Mapping(top) = serde_yaml::to_value(Recipe::default()).ok()? else {
        return None;
    };
    top.iter()
        .filter_map(|(section, value)| Some((section.as_str()?, value.as_mapping()?)))
        .filter(|(section, _)| candidates.contains(section))
        .flat_map(|(section, keys)| {
            keys.keys()
                .filter_map(move |k| Some((section, k.as_str()?)))
        })
        .map(|(section, key)| (strsim::jaro_winkler(field, key), format!("{section}.{key}")))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
}
