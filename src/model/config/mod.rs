//! Model configuration read from a Hugging Face `config.json`, normalised across the
//! supported decoder architectures.
//!
//! (About 400 lines: [`ModelConfig`] and the one pass that reads its keys in order, so that every
//! value's source is recorded where it is read; the parts of that pass live in the sibling files.)

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::vlm::VisionLanguageConfig;

mod architecture;
mod derived;
mod family;
mod gemma;
mod keys;
mod layout;
mod llava;
mod qwen_vl;
pub mod rope;
pub mod rope_freq;
mod rope_scaling;
mod rope_types;

pub use architecture::{Architecture, SUPPORTED_MODEL_TYPES};
use family::FamilyDefaults;
use gemma::gemma_style;
pub use gemma::{GemmaStyle, SlidingRope};
use layout::{rope_layers, sliding_window};

use keys::KeyReader;
pub use keys::ValueSource;
pub use rope::{Llama3RopeScaling, RopeScaling, YarnRopeScaling};

/// Most decoder layers a config may declare (per-layer tables are sized from it).
const MAX_LAYERS: usize = 100_000;

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
    /// Rope scaling other than the default (linear, dynamic, llama3, yarn).
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the o projection.
    pub o_bias: bool,
    /// Biases on gate, up and down projections.
    pub mlp_bias: bool,
    /// RMSNorm of each query and key head before rope (Qwen3's `q_norm`/`k_norm`).
    #[serde(default)]
    pub qk_norm: bool,
    /// Per layer, whether it applies rotary embeddings (SmolLM3's `no_rope_layers`); empty when
    /// every layer does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rope_layers: Vec<bool>,
    /// Per layer, whether it attends through the sliding window (Gemma's alternating local and
    /// global layers); empty when `sliding_window` applies to every layer alike.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layer_sliding: Vec<bool>,
    /// The rope of sliding-window layers when it differs from the global one (Gemma 3).
    #[serde(default)]
    pub sliding_rope: Option<SlidingRope>,
    /// Dimensions of each head that rotary embeddings turn (the first ones; Phi-4-mini's
    /// `partial_rotary_factor` 0.75 leaves the rest unrotated); `head_dim` for most models.
    #[serde(default)]
    pub rotary_dim: usize,
    /// Phi-3's fused `qkv_proj` and `gate_up_proj` (q, k, v and gate, up are row ranges of them).
    #[serde(default)]
    pub fused_projections: bool,
    /// The computation details that set Gemma apart (all off for the other families).
    #[serde(default)]
    pub gemma: GemmaStyle,
    /// Attention window (keys further back than this are masked), when the model uses one.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// M-RoPE (Qwen2.5-VL): how many of the rotary frequencies turn with the temporal, row and
    /// column positions, in that order.
    #[serde(default)]
    pub mrope_section: Option<Vec<usize>>,
    /// The vision tower and projector of a vision-language (LLaVA) model; the fields above then
    /// describe its `text_config`.
    #[serde(default)]
    pub vision: Option<VisionLanguageConfig>,
    /// The dtype the checkpoint says its weights were saved in (`dtype`, or `torch_dtype` in
    /// transformers-4 files); informational, weights load into the compute dtype.
    #[serde(default)]
    pub saved_dtype: Option<String>,
    /// Where every value above came from (config key, family default, or derived).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<ValueSource>,
    /// Keys of config.json that tunescope does not know (they were not used).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
        Self::from_json_at(v, "")
    }

    /// Builds the configuration from a config object found at `path` (`text_config.` inside a
    /// LLaVA config, empty at the top).
    fn from_json_at(v: &Value, path: &str) -> Result<Self> {
        let obj = v
            .as_object()
            .context("config.json must hold a JSON object")?;
        let model_type = obj
            .get("model_type")
            .and_then(Value::as_str)
            .with_context(|| format!("key `{path}model_type` is missing; expected one of llama, mistral, qwen2, llava"))?
            .to_string();
        if model_type == "qwen2_5_vl" && path.is_empty() {
            return Self::from_qwen_vl_json(obj);
        }
        if matches!(
            model_type.as_str(),
            "llava" | "llava_next" | "llava_onevision"
        ) && path.is_empty()
        {
            return Self::from_llava_json(obj);
        }
        let Some(architecture) = Architecture::from_model_type(&model_type) else {
            bail!(
                "unsupported model_type `{model_type}`; supported: {}",
                SUPPORTED_MODEL_TYPES.join(", ")
            );
        };
        let family = FamilyDefaults::of(&model_type);
        let r = KeyReader::new(obj, path, family.class);
        r.mark(&["model_type"]);
        let hidden_size = r.usize_or("hidden_size", family.hidden_size)?;
        let num_attention_heads = r.usize_or("num_attention_heads", family.num_attention_heads)?;
        if num_attention_heads == 0 {
            bail!("key `num_attention_heads` must be positive");
        }
        let num_key_value_heads = match family.num_key_value_heads {
            Some(default) => r.usize_or("num_key_value_heads", default)?,
            None => match r.opt_usize("num_key_value_heads")? {
                Some(n) => {
                    r.record(
                        "num_key_value_heads",
                        n,
                        &format!("config.json `{path}num_key_value_heads`"),
                        false,
                    );
                    n
                }
                None => {
                    r.record(
                        "num_key_value_heads",
                        num_attention_heads,
                        "derived: num_attention_heads (no `num_key_value_heads`)",
                        true,
                    );
                    num_attention_heads
                }
            },
        };
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            bail!(
                "num_attention_heads ({num_attention_heads}) must be a multiple of num_key_value_heads ({num_key_value_heads})"
            );
        }
        let head_dim = match r.opt_usize("head_dim")? {
            Some(d) => {
                r.record(
                    "head_dim",
                    d,
                    &format!("config.json `{path}head_dim`"),
                    false,
                );
                d
            }
            None => {
                let (d, source) = match family.head_dim {
                    Some(d) => (
                        d,
                        format!(
                            "default of transformers' {} (no `{path}head_dim`)",
                            family.class
                        ),
                    ),
                    None => (
                        hidden_size / num_attention_heads,
                        "derived: hidden_size / num_attention_heads".to_string(),
                    ),
                };
                r.record("head_dim", d, &source, true);
                d
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            bail!("head dimension {head_dim} must be a positive even number (check `head_dim`, `hidden_size`, `num_attention_heads`)");
        }
        let gemma = gemma_style(&r, architecture)?;
        if architecture != Architecture::Gemma {
            let hidden_act = r.str_or("hidden_act", "silu")?;
            if hidden_act != "silu" {
                bail!("key `{path}hidden_act` is `{hidden_act}`; tunescope's decoder computes silu (SwiGLU) only");
            }
        }
        let attention_dropout = r.f64_or("attention_dropout", 0.0)?;
        if attention_dropout != 0.0 {
            bail!("key `{path}attention_dropout` is {attention_dropout}; attention dropout is not computed by tunescope's decoder (set it to 0.0 to train without it)");
        }
        let num_hidden_layers = r.usize_or("num_hidden_layers", family.num_hidden_layers)?;
        if num_hidden_layers > MAX_LAYERS {
            bail!(
                "key `{path}num_hidden_layers` is {num_hidden_layers}; no model has more than {MAX_LAYERS} \
                 layers (is config.json corrupt?)"
            );
        }
        let max_position_embeddings =
            r.usize_or("max_position_embeddings", family.max_position_embeddings)?;
        let (qkv_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
            Architecture::Phi3 => (false, false),
            Architecture::Llama if model_type == "mistral" => (false, false),
            Architecture::Llama
            | Architecture::Qwen3
            | Architecture::SmolLM3
            | Architecture::Gemma => {
                let b = r.bool_or("attention_bias", false)?;
                (b, b)
            }
        };
        let mlp_bias = if matches!(model_type.as_str(), "llama" | "smollm3") {
            r.bool_or("mlp_bias", false)?
        } else {
            false
        };
        let qk_norm = architecture == Architecture::Qwen3 || model_type == "gemma3_text";
        let rope_layers = rope_layers(&r, &model_type, num_hidden_layers)?;
        let window = sliding_window(&r, &model_type, &family, num_hidden_layers, &rope_layers)?;
        let sliding_window = window.0;
        let layer_types = window.1;
        let layer_sliding: Vec<bool> =
            if architecture == Architecture::Gemma && sliding_window.is_some() {
                layer_types
                    .iter()
                    .map(|t| t == "sliding_attention")
                    .collect()
            } else {
                Vec::new()
            };
        r.mark(&[
            "rope_parameters",
            "rope_theta",
            "rope_scaling",
            "original_max_position_embeddings",
        ]);
        let layer_rope = rope::parse_layers(
            obj,
            max_position_embeddings,
            &layer_types,
            family.default_theta,
            family.local_rope,
        )
        .with_context(|| {
            format!(
                "in the rotary settings of {}",
                if path.is_empty() { "config.json" } else { path }
            )
        })?;
        let rope = layer_rope.global;
        let partial = rope::partial_rotary_factor(obj)?;
        let rotary_dim = (head_dim as f64 * partial) as usize;
        if partial != 1.0 {
            if architecture != Architecture::Phi3 {
                bail!("`partial_rotary_factor` {partial} is computed for Phi-3 models only (transformers' {} rotates whole heads)", family.class);
            }
            if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) || partial > 1.0 {
                bail!("`partial_rotary_factor` {partial} gives {rotary_dim} rotary dimensions of {head_dim}; it must give a positive even number");
            }
            r.mark(&["partial_rotary_factor"]);
            r.record(
                "rotary dimensions",
                rotary_dim,
                "head_dim × partial_rotary_factor",
                false,
            );
        }
        let sliding_rope = layer_rope.sliding.map(|local| {
            r.record(
                "rope theta (sliding layers)",
                local.theta,
                &local.theta_source,
                local.theta_source.starts_with("default"),
            );
            SlidingRope {
                theta: local.theta,
                scaling: local.scaling,
            }
        });
        if family.local_rope.is_some() {
            r.mark(&["rope_local_base_freq"]);
        }
        r.record(
            "rope theta",
            rope.theta,
            &rope.theta_source,
            rope.theta_source.starts_with("default"),
        );
        r.record(
            "rope type",
            rope.scaling.as_ref().map_or("default", RopeScaling::name),
            if obj.contains_key("rope_parameters") {
                "rope_parameters"
            } else if obj.contains_key("rope_scaling") {
                "rope_scaling"
            } else {
                "default (no rope scaling in config.json)"
            },
            !(obj.contains_key("rope_parameters") || obj.contains_key("rope_scaling")),
        );
        for p in &rope.params {
            r.record(&format!("rope {}", p.name), &p.value, &p.source, p.fallback);
        }
        let saved_dtype = match (r.get("dtype"), r.get("torch_dtype")) {
            (Some(v), _) => Some((v, "dtype")),
            (None, Some(v)) => Some((v, "torch_dtype")),
            (None, None) => None,
        }
        .map(|(v, key)| -> Result<String> {
            let s = v
                .as_str()
                .with_context(|| format!("key `{path}{key}` must be a string, got {v}"))?;
            r.record(
                "saved dtype",
                s,
                &format!("config.json `{path}{key}`"),
                false,
            );
            Ok(s.to_string())
        })
        .transpose()?;
        let eos_token_ids = match r.get("eos_token_id") {
            None => vec![],
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
        let bos_token_id = r.opt_usize("bos_token_id")?.map(|n| n as u32);
        let config = Self {
            architecture,
            vocab_size: r.usize_or("vocab_size", family.vocab_size)?,
            hidden_size,
            intermediate_size: r.usize_or("intermediate_size", family.intermediate_size)?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: r.f64_or("rms_norm_eps", 1e-6)?,
            rope_theta: rope.theta,
            rope_scaling: rope.scaling,
            max_position_embeddings,
            tie_word_embeddings: r.bool_or("tie_word_embeddings", family.tie_word_embeddings)?,
            qkv_bias,
            o_bias,
            mlp_bias,
            qk_norm,
            fused_projections: architecture == Architecture::Phi3,
            rotary_dim,
            rope_layers,
            layer_sliding,
            sliding_rope,
            gemma,
            sliding_window,
            bos_token_id,
            eos_token_ids,
            vision: None,
            mrope_section: None,
            saved_dtype,
            sources: Vec::new(),
            warnings: Vec::new(),
            model_type,
        };
        let (sources, warnings) = r.finish(&[])?;
        Ok(Self {
            sources,
            warnings,
            ..config
        })
    }
}

#[cfg(test)]
mod tests;
