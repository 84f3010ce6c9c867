//! Axolotl: a YAML configuration whose `unfrozen_parameters` select exactly the trainable set,
//! and the data as `messages` JSONL for its `chat_template` dataset type.

use std::collections::BTreeSet;

use anyhow::{bail, Result};

use super::name_regex::{axolotl_matches, compact_patterns, plain_matches};
use super::{describe_names, Target};
use super::{mapping, messages_jsonl, y, yaml_sections, ExportContext, ExportFile, Rendered};

/// The configuration's file name.
pub const CONFIG: &str = "axolotl.yaml";
/// The converted training data's file name.
pub const DATA: &str = "data.jsonl";

/// Compact `unfrozen_parameters` for the selection, checked to unfreeze exactly the selected
/// names among `all` (read as Axolotl reads them, and as plain regexes); errors otherwise.
pub fn unfrozen_parameters<'a>(
    selected: &BTreeSet<String>,
    all: impl IntoIterator<Item = &'a str> + Clone,
) -> Result<Vec<String>> {
    let patterns = compact_patterns(selected.iter().map(String::as_str));
    for (reading, matched) in [
        (
            "as Axolotl reads them (dots escaped)",
            axolotl_matches(&patterns, all.clone())?,
        ),
        ("as plain regexes", plain_matches(&patterns, all.clone())?),
    ] {
        if &matched != selected {
            let extra: Vec<&str> = matched.difference(selected).map(String::as_str).collect();
            let missing: Vec<&str> = selected.difference(&matched).map(String::as_str).collect();
            bail!(
                "internal error: the unfrozen_parameters patterns do not select exactly the trainable set {reading}; \
                 they also select [{}] and miss [{}]; patterns: {patterns:?}",
                describe_names(extra),
                describe_names(missing)
            );
        }
    }
    Ok(patterns)
}

/// Renders `axolotl.yaml` and `data.jsonl`.
pub fn render(ctx: &ExportContext) -> Result<Rendered> {
    let patterns = unfrozen_parameters(&ctx.selection.names, ctx.names())?;
    let h = &ctx.hyper;
    let mut header = ctx.header(Target::Axolotl, "#");
    header.push_str(&format!(
        "# Run from this directory:  axolotl train {CONFIG}   (or: accelerate launch -m axolotl.cli.train {CONFIG})\n\
         # unfrozen_parameters are anchored regexes, one per module and layer range; Axolotl escapes their dots\n\
         # itself, so they are written with plain dots. Together they unfreeze exactly the recipe's {} tensors.\n",
        ctx.selection.len()
    ));
    let roles: Vec<&str> = if h.train_on_prompt {
        vec!["system", "user", "assistant"]
    } else {
        vec!["assistant"]
    };
    let dataset = mapping(vec![
        ("path", y(DATA)),
        ("ds_type", y("json")),
        ("type", y("chat_template")),
        ("field_messages", y("messages")),
        ("roles_to_train", y(roles)),
        ("train_on_eos", y("turn")),
    ]);
    let model = mapping(vec![
        ("base_model", y(&ctx.model.id)),
        ("revision_of_model", y(&ctx.model.revision)),
        ("chat_template", y("tokenizer_default")),
    ]);
    let data = mapping(vec![
        (
            "datasets",
            serde_yaml::Value::Sequence(vec![dataset.into()]),
        ),
        ("dataset_prepared_path", y("last_run_prepared")),
        ("val_set_size", y(0.0)),
        ("sequence_len", y(h.max_length)),
        ("sample_packing", y(false)),
    ]);
    let (warmup_ratio, warmup_steps) = match h.warmup_steps {
        Some(steps) => (None, Some(steps)),
        None => (Some(h.warmup_ratio), None),
    };
    let train = mapping(vec![
        ("output_dir", y("./outputs")),
        ("micro_batch_size", y(h.batch_size)),
        ("gradient_accumulation_steps", y(h.grad_accum)),
        ("gradient_checkpointing", y(h.gradient_checkpointing)),
        ("num_epochs", y(h.epochs)),
        ("max_steps", y(h.max_steps)),
        ("optimizer", y("adamw_torch")),
        ("learning_rate", y(h.lr)),
        ("weight_decay", y(h.weight_decay)),
        ("adam_beta1", y(h.beta1)),
        ("adam_beta2", y(h.beta2)),
        ("adam_epsilon", y(h.eps)),
        ("max_grad_norm", y(h.max_grad_norm)),
        ("lr_scheduler", y(h.scheduler)),
        ("warmup_ratio", y(warmup_ratio)),
        ("warmup_steps", y(warmup_steps)),
        ("seed", y(h.seed)),
        ("bf16", y(h.bf16)),
        ("save_steps", y(h.save_steps)),
        ("save_total_limit", y(h.save_total_limit)),
        ("logging_steps", y(1)),
    ]);
    let freeze = mapping(vec![("unfrozen_parameters", y(&patterns))]);
    let config = yaml_sections(
        &header,
        vec![
            ("model", model),
            (
                "data: the recipe's records as chat messages, rendered with the model's chat template",
                data,
            ),
            ("hyperparameters (the recipe's)", train),
            ("the trainable set: every other parameter stays frozen", freeze),
        ],
    )?;
    Ok(Rendered {
        files: vec![
            ExportFile {
                name: CONFIG.into(),
                contents: config,
            },
            ExportFile {
                name: DATA.into(),
                contents: messages_jsonl(&ctx.records)?,
            },
        ],
        main: CONFIG.into(),
        command: format!("axolotl train {CONFIG}"),
    })
}
