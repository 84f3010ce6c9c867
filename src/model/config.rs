//! Model configuration read from a Hugging Face `config.json`, normalised across the
//! supported decoder architectures.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::vlm::VisionLanguageConfig;

/// Decoder architectures tunescope can train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama 2/3, SmolLM/SmolLM2, Mistral (`model_type` llama or mistral).
    Llama,
    /// Qwen2 / Qwen2.5 (q/k/v projections carry biases).
    Qwen2,
}

/// `model_type` values accepted in `config.json`.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["llama", "mistral", "qwen2", "llava"];

impl Architecture {
    /// Maps a `model_type` string to an architecture.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llama" | "mistral" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            _ => None,
        }
    }
}

/// Llama-3 style frequency scaling of rotary embeddings (`rope_scaling.rope_type: llama3`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// Everything the decoder needs to know about a model's shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the o projection.
    pub o_bias: bool,
    /// Biases on gate, up and down projections.
    pub mlp_bias: bool,
    /// Attention window (keys further back than this are masked), when the model uses one.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// Prefix of the language model's tensor names (`language_model.` in a LLaVA checkpoint,
    /// empty for a plain decoder).
    #[serde(default)]
    pub weight_prefix: String,
    /// The vision tower and projector of a vision-language (LLaVA) model; the fields above then
    /// describe its `text_config`.
    #[serde(default)]
    pub vision: Option<VisionLanguageConfig>,
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        Self::from_json(&value).with_context(|| format!("in model config {}", path.display()))
    }

    /// Builds the configuration from a parsed `config.json` value.
    pub fn from_json(v: &Value) -> Result<Self> {
        let obj = v
            .as_object()
            .context("config.json must hold a JSON object")?;
        let model_type = obj
            .get("model_type")
            .and_then(Value::as_str)
            .context("key `model_type` is missing; expected one of llama, mistral, qwen2, llava")?
            .to_string();
        if model_type == "llava" {
            return Self::from_llava_json(obj);
        }
        let Some(architecture) = Architecture::from_model_type(&model_type) else {
            bail!(
                "unsupported model_type `{model_type}`; supported: {}",
                SUPPORTED_MODEL_TYPES.join(", ")
            );
        };
        let usize_key = |key: &str| -> Result<usize> {
            let value = obj
                .get(key)
                .with_context(|| format!("key `{key}` is missing"))?;
            value
                .as_u64()
                .map(|n| n as usize)
                .with_context(|| format!("key `{key}` must be a non-negative integer, got {value}"))
        };
        let opt_usize = |key: &str| -> Result<Option<usize>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => value.as_u64().map(|n| Some(n as usize)).with_context(|| {
                    format!("key `{key}` must be a non-negative integer, got {value}")
                }),
            }
        };
        let opt_f64 = |key: &str| -> Result<Option<f64>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => value
                    .as_f64()
                    .map(Some)
                    .with_context(|| format!("key `{key}` must be a number, got {value}")),
            }
        };
        let opt_bool = |key: &str| -> Result<Option<bool>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => value
                    .as_bool()
                    .map(Some)
                    .with_context(|| format!("key `{key}` must be true or false, got {value}")),
            }
        };

        let hidden_size = usize_key("hidden_size")?;
        let num_attention_heads = usize_key("num_attention_heads")?;
        if num_attention_heads == 0 {
            bail!("key `num_attention_heads` must be positive");
        }
        let num_key_value_heads = opt_usize("num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            bail!(
                "num_attention_heads ({num_attention_heads}) must be a multiple of num_key_value_heads ({num_key_value_heads})"
            );
        }
        let head_dim = opt_usize("head_dim")?.unwrap_or(hidden_size / num_attention_heads);
        if head_dim == 0 || head_dim % 2 != 0 {
            bail!("head dimension {head_dim} must be a positive even number (check `head_dim`, `hidden_size`, `num_attention_heads`)");
        }
        let rope_scaling = match obj.get("rope_scaling") {
            None | Some(Value::Null) => None,
            Some(rs) => parse_rope_scaling(rs)?,
        };
        let (qkv_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
            Architecture::Llama => {
                let b = opt_bool("attention_bias")?.unwrap_or(false);
                (b, b)
            }
        };
        let mlp_bias = opt_bool("mlp_bias")?.unwrap_or(false);
        let sliding_window = match architecture {
            Architecture::Qwen2 => {
                if opt_bool("use_sliding_window")?.unwrap_or(false) {
                    opt_usize("sliding_window")?
                } else {
                    None
                }
            }
            Architecture::Llama => opt_usize("sliding_window")?,
        };
        let eos_token_ids = match obj.get("eos_token_id") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(ids)) => ids
                .iter()
                .map(|id| id.as_u64().map(|n| n as u32))
                .collect::<Option<Vec<_>>>()
                .context("key `eos_token_id` must be an integer or a list of integers")?,
            Some(id) => vec![id
                .as_u64()
                .context("key `eos_token_id` must be an integer or a list of integers")?
                as u32],
        };
        let config = Self {
            architecture,
            model_type,
            vocab_size: usize_key("vocab_size")?,
            hidden_size,
            intermediate_size: usize_key("intermediate_size")?,
            num_hidden_layers: usize_key("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: opt_f64("rope_theta")?.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: opt_usize("max_position_embeddings")?.unwrap_or(4096),
            tie_word_embeddings: opt_bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias,
            o_bias,
            mlp_bias,
            sliding_window,
            bos_token_id: opt_usize("bos_token_id")?.map(|n| n as u32),
            eos_token_ids,
            weight_prefix: String::new(),
            vision: None,
        };
        Ok(config)
    }

    /// A LLaVA config: the language model from `text_config` (model_type llama when absent),
    /// its tensors under `language_model.`, plus the vision side.
    fn from_llava_json(obj: &serde_json::Map<String, Value>) -> Result<Self> {
        let mut text = obj
            .get("text_config")
            .and_then(Value::as_object)
            .context("key `text_config` is missing or not an object (model_type llava)")?
            .clone();
        text.entry("model_type")
            .or_insert_with(|| Value::String("llama".into()));
        // Hugging Face LLaVA configs (llava-1.5) often list only what differs from
        // `LlamaConfig`'s defaults in `text_config`: fill those in.
        if text.get("model_type").and_then(Value::as_str) == Some("llama") {
            for (key, value) in [
                ("vocab_size", serde_json::json!(32000)),
                ("hidden_size", serde_json::json!(4096)),
                ("intermediate_size", serde_json::json!(11008)),
                ("num_hidden_layers", serde_json::json!(32)),
                ("num_attention_heads", serde_json::json!(32)),
                ("max_position_embeddings", serde_json::json!(2048)),
            ] {
                text.entry(key).or_insert(value);
            }
        }
        for key in ["eos_token_id", "bos_token_id", "tie_word_embeddings"] {
            if let Some(v) = obj.get(key) {
                text.entry(key).or_insert_with(|| v.clone());
            }
        }
        let mut config = Self::from_json(&Value::Object(text)).context("in `text_config`")?;
        let vision = VisionLanguageConfig::from_json(obj)?;
        if vision.image_token_index as usize >= config.vocab_size {
            bail!(
                "image_token_index {} is outside the vocabulary ({} tokens)",
                vision.image_token_index,
                config.vocab_size
            );
        }
        config.weight_prefix = "language_model.".into();
        config.vision = Some(vision);
        Ok(config)
    }

    /// Whether the model takes images (LLaVA).
    pub fn is_vision_language(&self) -> bool {
        self.vision.is_some()
    }

    /// Width of the query projection output.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of the key/value projection outputs.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Rotary inverse frequencies, with llama3 scaling applied when configured.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let base: Vec<f64> = (0..self.head_dim)
            .step_by(2)
            .map(|i| 1.0 / self.rope_theta.powf(i as f64 / self.head_dim as f64))
            .collect();
        let Some(rs) = &self.rope_scaling else {
            return base.into_iter().map(|f| f as f32).collect();
        };
        let low_wavelen = rs.original_max_position_embeddings as f64 / rs.low_freq_factor;
        let high_wavelen = rs.original_max_position_embeddings as f64 / rs.high_freq_factor;
        base.into_iter()
            .map(|freq| {
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let scaled = if wavelen < high_wavelen {
                    freq
                } else if wavelen > low_wavelen {
                    freq / rs.factor
                } else {
                    let smooth = (rs.original_max_position_embeddings as f64 / wavelen
                        - rs.low_freq_factor)
                        / (rs.high_freq_factor - rs.low_freq_factor);
                    (1.0 - smooth) * freq / rs.factor + smooth * freq
                };
                scaled as f32
            })
            .collect()
    }
}

fn parse_rope_scaling(rs: &Value) -> Result<Option<Llama3RopeScaling>> {
    let kind = rs
        .get("rope_type")
        .or_else(|| rs.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    match kind {
        "default" => Ok(None),
        "llama3" => {
            let num = |key: &str| -> Result<f64> {
                rs.get(key)
                    .and_then(Value::as_f64)
                    .with_context(|| format!("key `rope_scaling.{key}` is missing or not a number"))
            };
            Ok(Some(Llama3RopeScaling {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
            }))
        }
        other => bail!("rope_scaling type `{other}` is not supported; supported: default, llama3"),
    }
}
