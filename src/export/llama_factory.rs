//! LLaMA-Factory: `finetuning_type: freeze` selects whole blocks of the first or last N decoder
//! layers (`freeze_trainable_layers`), by the module under the layer (`freeze_trainable_modules`:
//! `self_attn`, `mlp`, ..., or `all`), plus top-level modules (`freeze_extra_modules`:
//! `embed_tokens`, `norm`, `lm_head`), each matched as a substring of the parameter name.
//! [`trainable_names`] reproduces that rule; a recipe is exported only when the rule gives back
//! exactly its resolved set, and refused otherwise with what cannot be expressed.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use serde_json::json;

use super::{
    describe_names, mapping, messages_jsonl, y, yaml_sections, ExportContext, ExportFile, Rendered,
    Target,
};
use crate::model::module_map::ModuleMap;
use crate::select::Selection;

/// The configuration's file name.
pub const CONFIG: &str = "llama_factory.yaml";
/// The converted training data's file name.
pub const DATA: &str = "data.jsonl";
/// The dataset registry LLaMA-Factory reads from `dataset_dir`.
pub const DATASET_INFO: &str = "dataset_info.json";

/// The freeze settings of a LLaMA-Factory configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeSettings {
    /// Positive: the last N layers; negative: the first N.
    pub trainable_layers: i64,
    /// Modules under each trainable layer (`self_attn`, `mlp`, ...), or `["all"]`.
    pub trainable_modules: Vec<String>,
    /// Top-level modules (`embed_tokens`, `norm`, `lm_head`).
    pub extra_modules: Vec<String>,
}

/// The module right under the layer number (`self_attn` in `model.layers.3.self_attn.q_proj.weight`),
/// as LLaMA-Factory finds it.
fn hidden_module(name: &str, layer: usize) -> Option<String> {
    let marker = format!(".{layer}.");
    let at = name.find(&marker)?;
    name[at + marker.len()..]
        .split('.')
        .next()
        .map(str::to_string)
}

/// LLaMA-Factory's top-level module name of a parameter: the segment before `weight`/`bias`.
fn extra_module(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    (parts.len() >= 2).then(|| parts[parts.len() - 2].to_string())
}

fn has_numbered_segment(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() > 2
        && parts[1..parts.len() - 1]
            .iter()
            .any(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The names LLaMA-Factory would train with `settings` on a model of `num_layers` layers
/// (its `_setup_freeze_tuning`: substring matches of `.{layer}.{module}` and of each extra module).
pub fn trainable_names<'a>(
    settings: &FreezeSettings,
    num_layers: usize,
    names: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    let n = settings.trainable_layers;
    let layers: Vec<usize> = if n > 0 {
        (num_layers.saturating_sub(n as usize)..num_layers).collect()
    } else {
        (0..(n.unsigned_abs() as usize).min(num_layers)).collect()
    };
    let mut needles: Vec<String> = Vec::new();
    for module in &settings.trainable_modules {
        for layer in &layers {
            needles.push(if module == "all" {
                format!(".{layer}.")
            } else {
                format!(".{layer}.{module}")
            });
        }
    }
    needles.extend(settings.extra_modules.iter().cloned());
    names
        .into_iter()
        .filter(|name| needles.iter().any(|needle| name.contains(needle.as_str())))
        .map(str::to_string)
        .collect()
}

/// The freeze settings expressing `selection` exactly, or an error naming what LLaMA-Factory's
/// freeze tuning cannot express.
pub fn freeze_settings(selection: &Selection, map: &ModuleMap) -> Result<FreezeSettings> {
    const REFUSE: &str = "LLaMA-Factory cannot express this trainable set";
    const ALTERNATIVE: &str = "use --to axolotl or --to trl, which take exact parameter names";
    let vision: Vec<&str> = map
        .params
        .iter()
        .filter(|p| selection.contains(&p.name) && crate::select::is_vision_side(p.kind))
        .map(|p| p.name.as_str())
        .collect();
    if !vision.is_empty() {
        bail!(
            "{REFUSE}: its freeze tuning selects decoder layers and top-level modules, not vision-tower or projector \
             parameters ({}); {ALTERNATIVE}",
            describe_names(vision)
        );
    }
    let num_layers = map.num_layers();
    // Modules under each layer, and the layers each is trained in.
    let mut module_layers: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut extras: BTreeSet<String> = BTreeSet::new();
    for p in map.params.iter().filter(|p| selection.contains(&p.name)) {
        match p.layer {
            Some(layer) => {
                let Some(module) = hidden_module(&p.name, layer) else {
                    bail!("{REFUSE}: cannot find the module of {} under layer {layer}; {ALTERNATIVE}", p.name);
                };
                module_layers.entry(module).or_default().insert(layer);
            }
            None => match extra_module(&p.name) {
                Some(module) if !has_numbered_segment(&p.name) => {
                    extras.insert(module);
                }
                _ => bail!("{REFUSE}: {} is neither in a decoder layer nor a top-level module; {ALTERNATIVE}", p.name),
            },
        }
    }
    if module_layers.is_empty() {
        bail!(
            "{REFUSE}: it trains no decoder layer (only {}), and freeze tuning always trains whole modules of some \
             layers; {ALTERNATIVE}",
            describe_names(selection.names.iter().map(String::as_str))
        );
    }
    let layer_sets: BTreeSet<&BTreeSet<usize>> = module_layers.values().collect();
    if layer_sets.len() > 1 {
        let detail: Vec<String> = module_layers
            .iter()
            .map(|(m, layers)| format!("{m} in layers {}", layers_text(layers)))
            .collect();
        bail!(
            "{REFUSE}: freeze_trainable_layers applies one layer range to every module, but the recipe trains {}; {ALTERNATIVE}",
            detail.join(", ")
        );
    }
    let layers = *layer_sets.iter().next().expect("one layer set");
    let count = layers.len();
    let trainable_layers = if layers.iter().copied().eq(num_layers - count..num_layers) {
        count as i64
    } else if layers.iter().copied().eq(0..count) {
        -(count as i64)
    } else {
        bail!(
            "{REFUSE}: freeze_trainable_layers trains the first or last N of the {num_layers} layers, but the recipe \
             trains layers {}; {ALTERNATIVE}",
            layers_text(layers)
        );
    };
    // `all` when every module found under layer 0 (or 1) trains, as LLaMA-Factory lists them.
    let hidden: BTreeSet<String> = map
        .params
        .iter()
        .filter_map(|p| p.layer.and_then(|l| hidden_module(&p.name, l)))
        .collect();
    let chosen: BTreeSet<String> = module_layers.keys().cloned().collect();
    let trainable_modules = if chosen == hidden {
        vec!["all".to_string()]
    } else {
        chosen.into_iter().collect()
    };
    let settings = FreezeSettings {
        trainable_layers,
        trainable_modules,
        extra_modules: extras.into_iter().collect(),
    };
    let names = map.params.iter().map(|p| p.name.as_str());
    let matched = trainable_names(&settings, num_layers, names);
    if matched != selection.names {
        let extra: Vec<&str> = matched
            .difference(&selection.names)
            .map(String::as_str)
            .collect();
        let missing: Vec<&str> = selection
            .names
            .difference(&matched)
            .map(String::as_str)
            .collect();
        let mut why = Vec::new();
        if !extra.is_empty() {
            why.push(format!(
                "its freeze tuning trains whole modules ({}), so it would also train {}, which the recipe keeps frozen",
                settings_text(&settings),
                describe_names(extra)
            ));
        }
        if !missing.is_empty() {
            why.push(format!("it would not train {}", describe_names(missing)));
        }
        bail!("{REFUSE}: {}; {ALTERNATIVE}", why.join("; and "));
    }
    Ok(settings)
}

fn layers_text(layers: &BTreeSet<usize>) -> String {
    super::name_regex::runs(layers)
        .into_iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn settings_text(s: &FreezeSettings) -> String {
    let mut text = format!(
        "freeze_trainable_modules: {}",
        s.trainable_modules.join(",")
    );
    if !s.extra_modules.is_empty() {
        text.push_str(&format!(
            ", freeze_extra_modules: {}",
            s.extra_modules.join(",")
        ));
    }
    text
}

/// Renders `llama_factory.yaml`, `dataset_info.json` and `data.jsonl`.
pub fn render(ctx: &ExportContext) -> Result<Rendered> {
    let settings = freeze_settings(&ctx.selection, &ctx.map)?;
    let h = &ctx.hyper;
    let dataset_name = format!(
        "tunescope_{}",
        ctx.recipe
            .name
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let mut header = ctx.header(Target::LlamaFactory, "#");
    header.push_str(&format!(
        "# Run from this directory:  llamafactory-cli train {CONFIG}\n\
         #   (several GPUs: FORCE_TORCHRUN=1 llamafactory-cli train {CONFIG})\n\
         # `template` is left unset, so LLaMA-Factory parses the tokenizer's own chat template; set it (e.g. qwen,\n\
         # llama3) to use a built-in one. The freeze settings below train exactly the recipe's {} tensors.\n",
        ctx.selection.len()
    ));
    let model = mapping(vec![
        ("model_name_or_path", y(&ctx.model.id)),
        ("model_revision", y(&ctx.model.revision)),
    ]);
    let method = mapping(vec![
        ("stage", y("sft")),
        ("do_train", y(true)),
        ("finetuning_type", y("freeze")),
        ("freeze_trainable_layers", y(settings.trainable_layers)),
        (
            "freeze_trainable_modules",
            y(settings.trainable_modules.join(",")),
        ),
        (
            "freeze_extra_modules",
            if settings.extra_modules.is_empty() {
                serde_yaml::Value::Null
            } else {
                y(settings.extra_modules.join(","))
            },
        ),
    ]);
    let dataset = mapping(vec![
        ("dataset", y(&dataset_name)),
        ("dataset_dir", y(".")),
        ("cutoff_len", y(h.max_length)),
        ("train_on_prompt", y(h.train_on_prompt)),
        ("overwrite_cache", y(true)),
    ]);
    let (warmup_ratio, warmup_steps) = match h.warmup_steps {
        Some(steps) => (None, Some(steps)),
        None => (Some(h.warmup_ratio), None),
    };
    let train = mapping(vec![
        ("output_dir", y("outputs")),
        ("per_device_train_batch_size", y(h.batch_size)),
        ("gradient_accumulation_steps", y(h.grad_accum)),
        // LLaMA-Factory checkpoints unless told not to.
        (
            "disable_gradient_checkpointing",
            y(!h.gradient_checkpointing),
        ),
        ("num_train_epochs", y(h.epochs as f64)),
        ("max_steps", y(h.max_steps)),
        ("learning_rate", y(h.lr)),
        ("weight_decay", y(h.weight_decay)),
        ("adam_beta1", y(h.beta1)),
        ("adam_beta2", y(h.beta2)),
        ("adam_epsilon", y(h.eps)),
        ("max_grad_norm", y(h.max_grad_norm)),
        ("lr_scheduler_type", y(h.scheduler)),
        ("warmup_ratio", y(warmup_ratio)),
        ("warmup_steps", y(warmup_steps)),
        ("seed", y(h.seed)),
        ("bf16", y(h.bf16)),
        ("save_steps", y(h.save_steps)),
        ("save_total_limit", y(h.save_total_limit)),
        ("logging_steps", y(1)),
        ("report_to", y("none")),
    ]);
    let config =
        yaml_sections(
            &header,
            vec![
            ("model", model),
            ("method: freeze tuning with the recipe's trainable set", method),
            (
                "dataset: the recipe's records as chat messages (registered in dataset_info.json)",
                dataset,
            ),
            ("hyperparameters (the recipe's)", train),
        ],
        )?;
    let info = json!({
        dataset_name.clone(): {
            "file_name": DATA,
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
    });
    Ok(Rendered {
        files: vec![
            ExportFile {
                name: CONFIG.into(),
                contents: config,
            },
            ExportFile {
                name: DATASET_INFO.into(),
                contents: format!("{}\n", serde_json::to_string_pretty(&info)?),
            },
            ExportFile {
                name: DATA.into(),
                contents: messages_jsonl(&ctx.records)?,
            },
        ],
        main: CONFIG.into(),
        command: format!("llamafactory-cli train {CONFIG}"),
    })
}
