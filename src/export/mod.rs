//! Exports a recipe as another trainer's configuration, for runs too large for one machine:
//! Axolotl (YAML with `unfrozen_parameters` regexes), TRL (a runnable `train_trl.py`) and
//! LLaMA-Factory (YAML with `finetuning_type: freeze`).
//!
//! Every target trains exactly the recipe's resolved set: the Axolotl patterns and the
//! LLaMA-Factory freeze settings are checked against the model's parameter names, reading them
//! the way each tool does, before anything is written; a set a tool cannot express is refused
//! with the reason. The training data is converted to the tool's format and written next to the
//! configuration, so the export directory is self-contained apart from the model.

pub mod axolotl;
pub mod llama_factory;
pub mod name_regex;
pub mod trl;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::data::jsonl::{read_records, Record};
use crate::model::module_map::ModuleMap;
use crate::model::WeightStore;
use crate::recipe::{Recipe, ScheduleKind};
use crate::select::{self, Selection};
use crate::util::fs::write_atomic;

/// A trainer tunescope can write a configuration for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Axolotl YAML with `unfrozen_parameters`.
    Axolotl,
    /// LLaMA-Factory YAML with `finetuning_type: freeze`.
    #[value(name = "llama-factory")]
    LlamaFactory,
    /// A TRL `SFTTrainer` script.
    Trl,
}

impl Target {
    /// The name used on the command line and in directory names.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Axolotl => "axolotl",
            Target::LlamaFactory => "llama-factory",
            Target::Trl => "trl",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The model as the other trainer loads it: a local directory (absolute) or a hub id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub id: String,
    /// The hub revision after `@`, when given.
    pub revision: Option<String>,
}

impl ModelRef {
    /// From a recipe's `model`: an existing directory becomes an absolute path, anything else is
    /// a hub id `org/name[@revision]`.
    pub fn from_spec(spec: &str) -> Self {
        let path = Path::new(spec);
        if path.is_dir() {
            let id = std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.to_path_buf())
                .to_string_lossy()
                .into_owned();
            return Self { id, revision: None };
        }
        match spec.split_once('@') {
            Some((id, rev)) => Self {
                id: id.to_string(),
                revision: Some(rev.to_string()),
            },
            None => Self {
                id: spec.to_string(),
                revision: None,
            },
        }
    }
}

/// The recipe's hyperparameters in Hugging Face Trainer terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Hyper {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// 0 disables clipping (the recipe's `null`).
    pub max_grad_norm: f64,
    /// `cosine`, `linear` or `constant_with_warmup`.
    pub scheduler: &'static str,
    pub warmup_ratio: f64,
    /// Set when the recipe fixes the warmup in steps (overrides the ratio).
    pub warmup_steps: Option<usize>,
    pub epochs: usize,
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub max_length: usize,
    pub seed: u64,
    pub bf16: bool,
    pub train_on_prompt: bool,
    /// The recipe's `activation_checkpointing` (transformers' `gradient_checkpointing`).
    pub gradient_checkpointing: bool,
    /// Checkpoint every N steps (`None`: at the end of each epoch).
    pub save_steps: Option<usize>,
    pub save_total_limit: usize,
}

impl Hyper {
    pub fn from_recipe(recipe: &Recipe) -> Self {
        let o = &recipe.optimizer;
        Self {
            lr: o.lr,
            weight_decay: o.weight_decay,
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            max_grad_norm: o.max_grad_norm.unwrap_or(0.0),
            scheduler: match recipe.schedule.kind {
                ScheduleKind::Cosine => "cosine",
                ScheduleKind::Linear => "linear",
                ScheduleKind::Constant => "constant_with_warmup",
            },
            warmup_ratio: recipe.schedule.warmup_ratio,
            warmup_steps: recipe.schedule.warmup_steps,
            epochs: recipe.epochs,
            max_steps: recipe.max_steps,
            batch_size: recipe.batch_size,
            grad_accum: recipe.grad_accum,
            max_length: recipe.max_length,
            seed: recipe.seed,
            bf16: recipe.dtype == "bf16",
            train_on_prompt: recipe.train_on_prompt,
            gradient_checkpointing: recipe.activation_checkpointing,
            save_steps: (recipe.checkpoint_every > 0).then_some(recipe.checkpoint_every),
            save_total_limit: recipe.keep_checkpoints.max(1),
        }
    }
}

/// Everything an export needs: the recipe, the model's parameter names, the resolved trainable
/// set and the training records.
pub struct ExportContext {
    pub recipe: Recipe,
    pub model: ModelRef,
    pub map: ModuleMap,
    pub selection: Selection,
    pub records: Vec<Record>,
    pub hyper: Hyper,
}

impl ExportContext {
    /// Resolves the recipe's model (reading weight headers only), trainable set and data.
    pub fn new(recipe: &Recipe) -> Result<Self> {
        let spec = recipe.model_spec()?;
        let files = crate::model::source::resolve(&spec)?;
        let store = WeightStore::open(&files.weights)?;
        let config = crate::model::ModelConfig::from_file(&files.config)?;
        let map = ModuleMap::from_store_for(&store, &config);
        let selection = select::resolve(&recipe.trainable, &map)
            .context("in the recipe's `trainable` section")?;
        // Phi-3's fused tensors are listed as their parts (`…qkv_proj.weight[q]`); the other
        // trainers take whole parameters, and tunescope trains parts by masking rows.
        let fused: Vec<&str> = selection
            .names
            .iter()
            .filter(|n| crate::model::fused::fused_tensor_of(n).is_some())
            .map(String::as_str)
            .collect();
        if !fused.is_empty() {
            bail!(
                "the recipe trains parts of fused tensors ({}{}): exports name whole parameters, and \
                 these parts are row ranges of Phi-3's qkv_proj/gate_up_proj, which the other trainers \
                 cannot freeze row by row; train them with `tunescope train`",
                fused.iter().take(3).copied().collect::<Vec<_>>().join(", "),
                if fused.len() > 3 { ", ..." } else { "" }
            );
        }
        let records = read_records(&recipe.data_path()?)?;
        Ok(Self {
            recipe: recipe.clone(),
            model: ModelRef::from_spec(&spec),
            map,
            selection,
            records,
            hyper: Hyper::from_recipe(recipe),
        })
    }

    /// Every parameter name of the model, in module-map order.
    pub fn names(&self) -> impl Iterator<Item = &str> + Clone {
        self.map.params.iter().map(|p| p.name.as_str())
    }

    /// The trainable names in module-map order (layer by layer).
    pub fn trainable_in_order(&self) -> Vec<&str> {
        self.names()
            .filter(|n| self.selection.contains(n))
            .collect()
    }

    /// A comment block (lines starting with `prefix`) saying where the file came from.
    pub fn header(&self, target: Target, prefix: &str) -> String {
        let map = &self.map;
        let trainable = self.selection.trainable_numel(map);
        let lines = [
            format!(
                "Written by `tunescope export --to {target}` from recipe `{}`.",
                self.recipe.name
            ),
            format!(
                "Model {}{}; trains {} tensors ({} of {} parameters, {:.2}%).",
                self.model.id,
                self.model
                    .revision
                    .as_ref()
                    .map(|r| format!(" @ {r}"))
                    .unwrap_or_default(),
                self.selection.len(),
                trainable,
                map.total(),
                100.0 * self.selection.fraction(map),
            ),
            format!(
                "Effective batch = micro-batch {} x grad accumulation {} x number of GPUs (tunescope's run: {} per step).",
                self.hyper.batch_size,
                self.hyper.grad_accum,
                self.hyper.batch_size * self.hyper.grad_accum
            ),
        ];
        lines
            .iter()
            .map(|l| format!("{prefix} {l}\n"))
            .collect::<String>()
    }
}

/// One file of an export, relative to the export directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportFile {
    pub name: String,
    pub contents: String,
}

/// An export rendered in memory (nothing written yet).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub files: Vec<ExportFile>,
    /// The main file (configuration or script).
    pub main: String,
    /// How to launch it, run from the export directory.
    pub command: String,
}

/// What [`export`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub target: Target,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub main: PathBuf,
    pub command: String,
    /// Trainable tensors.
    pub tensors: usize,
}

/// Renders `target`'s files for the context; errors when the tool cannot express the set.
pub fn render(ctx: &ExportContext, target: Target) -> Result<Rendered> {
    match target {
        Target::Axolotl => axolotl::render(ctx),
        Target::LlamaFactory => llama_factory::render(ctx),
        Target::Trl => trl::render(ctx),
    }
}

/// The default export directory: `export/<recipe>-<target>`.
pub fn default_dir(recipe: &Recipe, target: Target) -> PathBuf {
    PathBuf::from("export").join(format!("{}-{target}", recipe.name))
}

/// Writes `target`'s configuration for `recipe` into `out` (created when missing). Everything is
/// rendered and checked before the first file is written.
pub fn export(recipe: &Recipe, target: Target, out: &Path) -> Result<Exported> {
    if recipe.lora.is_some() {
        anyhow::bail!(
            "recipe {} trains LoRA adapters (`lora:`); exporting LoRA recipes to other trainers is not implemented",
            recipe.name
        );
    }
    let ctx = ExportContext::new(recipe)?;
    let rendered = render(&ctx, target)?;
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create export directory {}", out.display()))?;
    let mut files = Vec::new();
    for file in &rendered.files {
        let path = out.join(&file.name);
        write_atomic(&path, file.contents.as_bytes())?;
        files.push(path);
    }
    Ok(Exported {
        target,
        dir: out.to_path_buf(),
        files,
        main: out.join(&rendered.main),
        command: rendered.command,
        tensors: ctx.selection.len(),
    })
}

/// The records as `{"messages": [...]}` JSONL.
pub fn messages_jsonl(records: &[Record]) -> Result<String> {
    let mut out = String::new();
    for r in records {
        out.push_str(&serde_json::to_string(&json!({ "messages": r.messages }))?);
        out.push('\n');
    }
    Ok(out)
}

/// The records as TRL's conversational prompt-completion JSONL: the completion is the last
/// assistant message (and anything after it), the prompt everything before.
pub fn prompt_completion_jsonl(records: &[Record]) -> Result<String> {
    let mut out = String::new();
    for r in records {
        let Some(last) = r.messages.iter().rposition(|m| m.role == "assistant") else {
            bail!(
                "training data line {}: no assistant message to train on",
                r.line
            );
        };
        let line = json!({
            "prompt": &r.messages[..last],
            "completion": &r.messages[last..],
        });
        out.push_str(&serde_json::to_string(&line)?);
        out.push('\n');
    }
    Ok(out)
}

/// Whether any record has more than one assistant turn (TRL's prompt-completion form trains on
/// the last one only).
pub fn has_multi_turn(records: &[Record]) -> bool {
    records
        .iter()
        .any(|r| r.messages.iter().filter(|m| m.role == "assistant").count() > 1)
}

/// Names grouped for messages: `model.layers.*.mlp.down_proj.weight (layers 0-11)`.
pub fn describe_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut groups: std::collections::BTreeMap<String, BTreeSet<usize>> = Default::default();
    for name in names {
        let mut layer = None;
        let parts: Vec<String> = name
            .split('.')
            .enumerate()
            .map(|(i, p)| match p.parse::<usize>() {
                Ok(n) if layer.is_none() && i > 0 => {
                    layer = Some(n);
                    "*".to_string()
                }
                _ => p.to_string(),
            })
            .collect();
        let entry = groups.entry(parts.join(".")).or_default();
        if let Some(l) = layer {
            entry.insert(l);
        }
    }
    groups
        .into_iter()
        .map(|(pattern, layers)| {
            if layers.is_empty() {
                pattern
            } else {
                let runs: Vec<String> = name_regex::runs(&layers)
                    .into_iter()
                    .map(|(a, b)| {
                        if a == b {
                            a.to_string()
                        } else {
                            format!("{a}-{b}")
                        }
                    })
                    .collect();
                format!("{pattern} (layers {})", runs.join(","))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A YAML document from commented sections, keys in the given order.
pub(crate) fn yaml_sections(
    header: &str,
    sections: Vec<(&str, serde_yaml::Mapping)>,
) -> Result<String> {
    let mut out = String::from(header);
    for (comment, mapping) in sections {
        if mapping.is_empty() {
            continue;
        }
        out.push('\n');
        out.push_str(&format!("# {comment}\n"));
        out.push_str(&pyyaml_floats(&serde_yaml::to_string(&mapping)?));
    }
    Ok(out)
}

/// Rewrites exponent floats (`5e-6`) as YAML 1.1 floats (`5.0e-6`): PyYAML, which Axolotl and
/// LLaMA-Factory read their configs with, takes a float only with a dot and a signed exponent,
/// and would read `5e-6` as a string.
pub fn pyyaml_floats(text: &str) -> String {
    let re = regex::Regex::new(
        r"(?m)^(\s*(?:- )?[A-Za-z0-9_]+: |\s*- )(-?[0-9]+)(?:\.([0-9]+))?[eE]([-+]?)([0-9]+)$",
    )
    .expect("valid regex");
    re.replace_all(text, |c: &regex::Captures| {
        let sign = if &c[4] == "-" { "-" } else { "+" };
        let fraction = c.get(3).map_or("0", |m| m.as_str());
        format!("{}{}.{fraction}e{sign}{}", &c[1], &c[2], &c[5])
    })
    .into_owned()
}

/// Builds a YAML mapping from key/value pairs, skipping `Null` values.
pub(crate) fn mapping(pairs: Vec<(&str, serde_yaml::Value)>) -> serde_yaml::Mapping {
    let mut m = serde_yaml::Mapping::new();
    for (k, v) in pairs {
        if !v.is_null() {
            m.insert(serde_yaml::Value::String(k.to_string()), v);
        }
    }
    m
}

/// A YAML value from anything serialisable.
pub(crate) fn y<T: serde::Serialize>(value: T) -> serde_yaml::Value {
    serde_yaml::to_value(value).unwrap_or(serde_yaml::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponent_floats_become_yaml_1_1_floats() {
        let text =
            "learning_rate: 5e-6\nadam_epsilon: 1e-8\nbig: 1.5e16\nlr: 0.03\nname: 5e-6x\n- 2e-3\n";
        assert_eq!(
            pyyaml_floats(text),
            "learning_rate: 5.0e-6\nadam_epsilon: 1.0e-8\nbig: 1.5e+16\nlr: 0.03\nname: 5e-6x\n- 2.0e-3\n"
        );
        let value: serde_yaml::Value =
            serde_yaml::from_str(&pyyaml_floats("learning_rate: 5e-6\n")).unwrap();
        assert_eq!(value["learning_rate"].as_f64(), Some(5e-6));
    }
}
