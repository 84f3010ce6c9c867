//! PEFT's adapter format: `adapter_config.json` (as PEFT 0.21 writes it) and
//! `adapter_model.safetensors` (`base_model.model.<module>.lora_A.weight` `(r, in)` and
//! `…lora_B.weight` `(out, r)`), written by a LoRA run and read back to fold into the base.
//!
//! Reading is strict: every config key is either used, known to change nothing once the
//! adapter's tensors exist (initialisation, bookkeeping), or must hold its neutral value; any
//! other key or value is refused by name.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

mod read;

pub use read::{fold, read_adapter, LoadedAdapter};

use super::{LoraPlan, LoraSettings};

/// The adapter's configuration file.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The adapter's tensors.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// PEFT's prefix of every adapter tensor name.
const PREFIX: &str = "base_model.model.";

/// Whether `dir` holds a PEFT adapter rather than a full model.
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).is_file() && !dir.join("config.json").is_file()
}

/// The `adapter_config.json` of `plan` on the base model `base`, with every key PEFT 0.21.2
/// writes (its defaults where tunescope has nothing to say).
pub fn config_json(plan: &LoraPlan, base: &str) -> Value {
    let s = &plan.settings;
    // PEFT writes an integer alpha as an integer.
    let alpha = if s.alpha.fract() == 0.0 && s.alpha.abs() < 1e15 {
        json!(s.alpha as i64)
    } else {
        json!(s.alpha)
    };
    json!({
        "alora_invocation_tokens": null,
        "alpha_pattern": {},
        "arrow_config": null,
        "auto_mapping": null,
        "base_model_name_or_path": base,
        "bias": "none",
        "corda_config": null,
        "ensure_weight_tying": false,
        "eva_config": null,
        "exclude_modules": null,
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "kasa_config": null,
        "layer_replication": null,
        "layers_pattern": null,
        "layers_to_transform": null,
        "loftq_config": {},
        "lora_alpha": alpha,
        "lora_bias": false,
        "lora_dropout": s.dropout,
        "lora_ga_config": null,
        "megatron_config": null,
        "megatron_core": "megatron.core",
        "modules_to_save": null,
        "monteclora_config": null,
        "peft_type": "LORA",
        "peft_version": "0.21.2",
        "qalora_group_size": 16,
        "r": s.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": plan.modules.iter().collect::<Vec<_>>(),
        "target_parameters": null,
        "task_type": "CAUSAL_LM",
        "trainable_token_indices": null,
        "use_bdlora": null,
        "use_dora": false,
        "use_qalora": false,
        "use_rslora": s.use_rslora,
        "velora_config": null,
    })
}

/// Writes the adapter of `plan` into `dir` atomically; `tensors` holds each module's
/// `…lora_A.weight` and `…lora_B.weight` (see [`super::tensor_names`]), saved in f32.
pub fn write_adapter(
    dir: &Path,
    plan: &LoraPlan,
    base: &str,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    let mut out = HashMap::new();
    for module in &plan.modules {
        let (a, b) = super::tensor_names(module);
        for name in [a, b] {
            let t = tensors
                .get(&name)
                .with_context(|| format!("no trained tensor {name} to write"))?;
            let t = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
            out.insert(format!("{PREFIX}{name}"), t);
        }
    }
    let mut config = serde_json::to_string_pretty(&config_json(plan, base))?;
    config.push('\n');
    crate::util::fs::write_dir_atomic(dir, |tmp| {
        candle_core::safetensors::save(&out, tmp.join(WEIGHTS_FILE))?;
        std::fs::write(tmp.join(CONFIG_FILE), config.as_bytes())?;
        Ok(())
    })
}

/// Which modules PEFT targeted: a list (a module matches a name or a `.`-suffix of its path)
/// or one regex matching the whole module name.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetModules {
    List(Vec<String>),
    Regex(String),
}

impl TargetModules {
    fn matches(&self, module: &str) -> Result<bool> {
        Ok(match self {
            Self::List(names) => names
                .iter()
                .any(|t| module == t || module.ends_with(&format!(".{t}"))),
            Self::Regex(re) => regex::Regex::new(&format!("^(?:{re})$"))
                .with_context(|| format!("target_modules `{re}` is not a regex"))?
                .is_match(module),
        })
    }
}

/// What tunescope uses of an `adapter_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    pub settings: LoraSettings,
    pub target_modules: TargetModules,
    /// `base_model_name_or_path`.
    pub base: Option<String>,
}

/// Keys that change nothing once the tensors exist: initialisation, bookkeeping, which modules
/// were chosen (the tensors say), and dropout (training only).
const INERT_KEYS: &[&str] = &[
    "auto_mapping",
    "corda_config",
    "eva_config",
    "exclude_modules",
    "inference_mode",
    "init_lora_weights",
    "layers_pattern",
    "layers_to_transform",
    "loftq_config",
    "lora_dropout",
    "lora_ga_config",
    "megatron_core",
    "peft_version",
    "qalora_group_size",
    "revision",
    "task_type",
];

/// Keys tunescope does not implement, accepted only at their neutral value.
fn neutral_value(key: &str) -> Option<Value> {
    Some(match key {
        "fan_in_fan_out" | "use_dora" | "lora_bias" | "use_qalora" | "ensure_weight_tying" => {
            json!(false)
        }
        "bias" => json!("none"),
        "rank_pattern" | "alpha_pattern" => json!({}),
        "modules_to_save"
        | "trainable_token_indices"
        | "target_parameters"
        | "layer_replication"
        | "megatron_config"
        | "alora_invocation_tokens"
        | "use_bdlora"
        | "arrow_config"
        | "kasa_config"
        | "velora_config"
        | "monteclora_config" => Value::Null,
        _ => return None,
    })
}

/// Parses an `adapter_config.json` text; `origin` names the file in errors.
pub fn parse_config(text: &str, origin: &str) -> Result<AdapterConfig> {
    let value: Value =
        serde_json::from_str(text).with_context(|| format!("{origin} is not valid JSON"))?;
    let obj = value
        .as_object()
        .with_context(|| format!("{origin}: expected a JSON object"))?;
    let used = [
        "peft_type",
        "r",
        "lora_alpha",
        "use_rslora",
        "target_modules",
        "base_model_name_or_path",
    ];
    for (key, v) in obj {
        if used.contains(&key.as_str()) || INERT_KEYS.contains(&key.as_str()) {
            continue;
        }
        match neutral_value(key) {
            Some(neutral) => {
                // An empty dict and null mean the same for the optional patterns.
                let empty = v.is_null() || v.as_object().is_some_and(|o| o.is_empty());
                let neutral_empty = neutral.as_object().is_some() && empty;
                if *v != neutral && !neutral_empty && !(neutral.is_null() && empty) {
                    bail!("{origin}: `{key}: {v}` is not implemented by tunescope (only {neutral} is)");
                }
            }
            None => bail!("{origin}: unknown key `{key}`; tunescope reads PEFT 0.21 LoRA configs"),
        }
    }
    let peft_type = obj.get("peft_type").and_then(Value::as_str);
    if peft_type != Some("LORA") {
        bail!("{origin}: peft_type is {peft_type:?}; only LORA adapters are supported");
    }
    let r = obj
        .get("r")
        .and_then(Value::as_u64)
        .filter(|r| *r > 0)
        .with_context(|| format!("{origin}: `r` must be a positive integer"))?;
    let alpha = obj
        .get("lora_alpha")
        .and_then(Value::as_f64)
        .with_context(|| format!("{origin}: `lora_alpha` must be a number"))?;
    let use_rslora = match obj.get("use_rslora") {
        None | Some(Value::Null) => false,
        Some(v) => v
            .as_bool()
            .with_context(|| format!("{origin}: `use_rslora` must be true or false"))?,
    };
    let target_modules = match obj.get("target_modules") {
        Some(Value::String(re)) => TargetModules::Regex(re.clone()),
        Some(Value::Array(items)) => TargetModules::List(
            items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .with_context(|| format!("{origin}: `target_modules` must list strings"))?,
        ),
        other => bail!("{origin}: `target_modules` must be a list or a regex, got {other:?}"),
    };
    let dropout = obj
        .get("lora_dropout")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    Ok(AdapterConfig {
        settings: LoraSettings {
            r: r as usize,
            alpha,
            dropout,
            use_rslora,
        },
        target_modules,
        base: obj
            .get("base_model_name_or_path")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> LoraPlan {
        LoraPlan {
            settings: LoraSettings {
                r: 4,
                alpha: 8.0,
                dropout: 0.05,
                use_rslora: false,
            },
            modules: ["model.layers.0.mlp.up_proj".to_string()].into(),
            init_seed: 1,
        }
    }

    #[test]
    fn written_config_reads_back() {
        let text = config_json(&plan(), "models/tiny").to_string();
        let config = parse_config(&text, "x").unwrap();
        assert_eq!(config.settings, plan().settings);
        assert_eq!(config.base.as_deref(), Some("models/tiny"));
        assert!(config
            .target_modules
            .matches("model.layers.0.mlp.up_proj")
            .unwrap());
    }

    #[test]
    fn unknown_keys_and_unimplemented_values_are_refused_by_name() {
        let mut value = config_json(&plan(), "m");
        value["use_dora"] = json!(true);
        let err = parse_config(&value.to_string(), "a.json").unwrap_err();
        assert!(err.to_string().contains("use_dora"), "{err}");
        let mut value = config_json(&plan(), "m");
        value["rank_pattern"] = json!({"q_proj": 8});
        let err = parse_config(&value.to_string(), "a.json").unwrap_err();
        assert!(err.to_string().contains("rank_pattern"), "{err}");
        let mut value = config_json(&plan(), "m");
        value["lora_magic"] = json!(1);
        let err = parse_config(&value.to_string(), "a.json").unwrap_err();
        assert!(err.to_string().contains("lora_magic"), "{err}");
    }

    #[test]
    fn target_module_lists_match_suffixes_and_regexes_whole_names() {
        let list = TargetModules::List(vec!["q_proj".into()]);
        assert!(list.matches("model.layers.3.self_attn.q_proj").unwrap());
        assert!(!list.matches("model.layers.3.self_attn.qq_proj").unwrap());
        let re = TargetModules::Regex(r".*\.(q|v)_proj".into());
        assert!(re.matches("model.layers.3.self_attn.v_proj").unwrap());
        assert!(!re.matches("model.layers.3.self_attn.k_proj").unwrap());
    }
}
