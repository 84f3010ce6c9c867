//! The Recipe pane's form: every recipe field as an editable row, validated with the engine's
//! own parser and validation (the same path as `--set key=value`).

use std::path::Path;

use anyhow::{Context, Result};
use serde_yaml::Value;

use crate::recipe::{apply_override, Recipe};

/// How a field is edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    Number,
    /// Enter cycles through the options.
    Choice(&'static [&'static str]),
    /// A list written as comma-separated text.
    List,
}

/// One form row: label, recipe key path, editor kind.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub label: &'static str,
    pub key: &'static str,
    pub kind: FieldKind,
}

const fn f(label: &'static str, key: &'static str, kind: FieldKind) -> Field {
    Field { label, key, kind }
}

const BOOL: FieldKind = FieldKind::Choice(&["false", "true"]);

/// The form's rows, in display order.
pub const FIELDS: &[Field] = &[
    f("name", "name", FieldKind::Text),
    f("model", "model", FieldKind::Text),
    f("data", "data", FieldKind::Text),
    f("max length", "max_length", FieldKind::Number),
    f("train on prompt", "train_on_prompt", BOOL),
    f("activation checkpointing", "activation_checkpointing", BOOL),
    f("trainable kinds", "trainable.kinds", FieldKind::List),
    f("trainable layers", "trainable.layers", FieldKind::Text),
    f("include", "trainable.include", FieldKind::List),
    f("exclude", "trainable.exclude", FieldKind::List),
    f("biases follow", "trainable.biases", BOOL),
    f("learning rate", "optimizer.lr", FieldKind::Number),
    f("weight decay", "optimizer.weight_decay", FieldKind::Number),
    f(
        "max grad norm",
        "optimizer.max_grad_norm",
        FieldKind::Number,
    ),
    f(
        "schedule",
        "schedule.kind",
        FieldKind::Choice(&["cosine", "linear", "constant"]),
    ),
    f("warmup ratio", "schedule.warmup_ratio", FieldKind::Number),
    f("batch size", "batch_size", FieldKind::Number),
    f("grad accumulation", "grad_accum", FieldKind::Number),
    f("epochs", "epochs", FieldKind::Number),
    f("max steps", "max_steps", FieldKind::Number),
    f("seed", "seed", FieldKind::Number),
    f("device", "device", FieldKind::Text),
    f("dtype", "dtype", FieldKind::Choice(&["f32", "bf16"])),
    f("output dir", "output_dir", FieldKind::Text),
    f("checkpoint every", "checkpoint_every", FieldKind::Number),
    f("probe every", "probe.every_steps", FieldKind::Number),
    f("probe held-out", "probe.heldout", FieldKind::Text),
    f("probe target", "probe.target", FieldKind::Text),
    f(
        "probe new tokens",
        "probe.max_new_tokens",
        FieldKind::Number,
    ),
    f("eval every", "eval.every_steps", FieldKind::Number),
    f("eval tasks", "eval.tasks", FieldKind::List),
    f("eval max items", "eval.max_items", FieldKind::Number),
    f(
        "guard mass Δ",
        "guard.max_numeric_mass_delta",
        FieldKind::Number,
    ),
    f(
        "guard held-out drop",
        "guard.max_heldout_drop",
        FieldKind::Number,
    ),
    f(
        "guard answer-class Δ",
        "guard.max_answer_mass_delta",
        FieldKind::Number,
    ),
    f(
        "guard stop-prob Δ",
        "guard.max_stop_prob_delta",
        FieldKind::Number,
    ),
    f(
        "guard action",
        "guard.action",
        FieldKind::Choice(&["warn", "stop"]),
    ),
];

/// The field's current value as text (empty for null).
pub fn field_text(recipe: &Recipe, field: &Field) -> String {
    let Ok(root) = serde_yaml::to_value(recipe) else {
        return String::new();
    };
    let mut node = &root;
    for key in field.key.split('.') {
        match node.get(key) {
            Some(v) => node = v,
            None => return String::new(),
        }
    }
    value_text(node)
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Sequence(items) => items.iter().map(value_text).collect::<Vec<_>>().join(", "),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Sets `field` from text, returning the updated recipe or the engine's validation message.
pub fn set_field(recipe: &Recipe, field: &Field, text: &str) -> Result<Recipe> {
    let text = text.trim();
    let yaml_text = match field.kind {
        FieldKind::List => {
            let items: Vec<String> = text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    serde_yaml::to_string(s)
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
                .collect();
            format!("[{}]", items.join(", "))
        }
        FieldKind::Text if field.key != "trainable.layers" && !text.is_empty() => {
            // Keep text as a string even when it looks like a number or boolean.
            serde_yaml::to_string(text)?.trim().to_string()
        }
        _ => text.to_string(),
    };
    let mut root = serde_yaml::to_value(recipe)?;
    apply_override(&mut root, &format!("{}={yaml_text}", field.key))?;
    let updated: Recipe = serde_yaml::from_value(root).map_err(|e| {
        anyhow::anyhow!(
            "{}: {}",
            field.key,
            crate::recipe::explain_serde_error(&e.to_string())
        )
    })?;
    updated.validate()?;
    Ok(updated)
}

/// The next option of a choice field.
pub fn cycle(recipe: &Recipe, field: &Field) -> Result<Recipe> {
    let FieldKind::Choice(options) = field.kind else {
        return Ok(recipe.clone());
    };
    let current = field_text(recipe, field);
    let index = options
        .iter()
        .position(|o| *o == current)
        .map_or(0, |i| (i + 1) % options.len());
    set_field(recipe, field, options[index])
}

/// Saves `recipe` to `path`, keeping the key order of the existing file (new keys are appended).
/// YAML comments are not kept.
pub fn save_preserving_order(recipe: &Recipe, path: &Path) -> Result<()> {
    let new = serde_yaml::to_value(recipe)?;
    let merged = match std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_yaml::from_str::<Value>(&t).ok())
    {
        Some(old @ Value::Mapping(_)) => merge(old, new),
        _ => new,
    };
    let text = serde_yaml::to_string(&merged)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    crate::util::fs::write_atomic(path, text.as_bytes())
}

/// `new`'s values in `old`'s key order.
fn merge(old: Value, new: Value) -> Value {
    match (old, new) {
        (Value::Mapping(old), Value::Mapping(mut new)) => {
            let mut out = serde_yaml::Mapping::new();
            for (key, old_value) in old {
                if let Some(new_value) = new.remove(&key) {
                    out.insert(key, merge(old_value, new_value));
                }
            }
            for (key, value) in new {
                out.insert(key, value);
            }
            Value::Mapping(out)
        }
        (_, new) => new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_through_the_engine() {
        let recipe = Recipe::default();
        let lr = FIELDS.iter().find(|f| f.key == "optimizer.lr").unwrap();
        let updated = set_field(&recipe, lr, "1e-4").unwrap();
        assert_eq!(updated.optimizer.lr, 1e-4);
        assert!(set_field(&recipe, lr, "-1")
            .unwrap_err()
            .to_string()
            .contains("optimizer.lr"));
        let kinds = FIELDS.iter().find(|f| f.key == "trainable.kinds").unwrap();
        let updated = set_field(&recipe, kinds, "q, k, gate").unwrap();
        assert_eq!(updated.trainable.kinds, vec!["q", "k", "gate"]);
        assert_eq!(field_text(&updated, kinds), "q, k, gate");
        let dtype = FIELDS.iter().find(|f| f.key == "dtype").unwrap();
        assert_eq!(cycle(&recipe, dtype).unwrap().dtype, "bf16");
        let name = FIELDS.iter().find(|f| f.key == "name").unwrap();
        assert_eq!(set_field(&recipe, name, "123").unwrap().name, "123");
    }

    #[test]
    fn save_keeps_the_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.yaml");
        std::fs::write(
            &path,
            "seed: 7\nname: mine\noptimizer:\n  weight_decay: 0.0\n  lr: 0.1\n",
        )
        .unwrap();
        let mut recipe = Recipe::load(&path, &[]).unwrap();
        recipe.optimizer.lr = 0.5;
        save_preserving_order(&recipe, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let seed = text.find("seed:").unwrap();
        let name = text.find("name:").unwrap();
        let wd = text.find("weight_decay").unwrap();
        let lr = text.find("  lr:").unwrap();
        assert!(seed < name && wd < lr, "{text}");
        assert_eq!(Recipe::load(&path, &[]).unwrap().optimizer.lr, 0.5);
    }
}
