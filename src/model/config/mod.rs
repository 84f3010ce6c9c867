//! Model configuration read from a Hugging Face `config.json`, normalised across the
//! supported decoder architectures.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::vlm::VisionLanguageConfig;

mod keys;
pub mod rope;

use keys::KeyReader;
pub use keys::ValueSource;
pub use rope::{Llama3RopeScaling, RopeScaling, YarnRopeScaling};

/// Decoder architectures tunescope can train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama 2/3, SmolLM/SmolLM2, Mistral (`model_type` llama or mistral).
    Llama,
    /// Qwen2 / Qwen2.5 (q/k/v projections carry biases).
    Qwen2,
    /// Qwen3 (dense): RMSNorm of each query and key head (`q_norm`, `k_norm`) before rope.
    Qwen3,
    /// SmolLM3: a Llama whose layers listed in `no_rope_layers` skip rotary embeddings.
    SmolLM3,
    /// Gemma 2 and Gemma 3 (text): (1 + w) RMSNorm, norms before and after attention and MLP,
    /// scaled embeddings, GELU-tanh gating, alternating local and global layers, softcapping
    /// (Gemma 2), per-head q/k norms and a local rope base (Gemma 3).
    Gemma,
}

/// `model_type` values accepted in `config.json`.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "smollm3",
    "gemma2",
    "gemma3_text",
    "llava",
];

impl Architecture {
    /// The `model_type` written for this architecture (Mistral shares `Llama`).
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::SmolLM3 => "smollm3",
            Self::Gemma => "gemma3_text",
        }
    }

    /// The transformers class name (`architectures` in config.json).
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
            Self::SmolLM3 => "SmolLM3ForCausalLM",
            Self::Gemma => "Gemma3ForCausalLM",
        }
    }

    /// Maps a `model_type` string to an architecture.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llama" | "mistral" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            "smollm3" => Some(Self::SmolLM3),
            "gemma2" | "gemma3_text" => Some(Self::Gemma),
            _ => None,
        }
    }
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
    /// The computation details that set Gemma apart (all off for the other families).
    #[serde(default)]
    pub gemma: GemmaStyle,
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

/// The rope of sliding-window layers (Gemma 3's local base).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlidingRope {
    pub theta: f64,
    pub scaling: Option<RopeScaling>,
}

/// Gemma's departures from the Llama computation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GemmaStyle {
    /// RMSNorm multiplies by (1 + w) instead of w.
    pub norm_plus_one: bool,
    /// Embeddings multiplied by √hidden_size.
    pub scaled_embeddings: bool,
    /// Norms after attention and after the MLP, and a pre-feedforward norm.
    pub sandwich_norms: bool,
    /// GELU (tanh approximation) gating instead of SiLU.
    pub gelu_tanh: bool,
    /// Attention scale `query_pre_attn_scalar^-0.5` instead of `head_dim^-0.5`.
    pub query_pre_attn_scalar: Option<f64>,
    /// `tanh(s / c) · c` on attention scores before the mask.
    pub attn_logit_softcapping: Option<f64>,
    /// `tanh(z / c) · c` on the final logits.
    pub final_logit_softcapping: Option<f64>,
}

/// Defaults of the transformers config class of each supported family, used for absent keys
/// (and shown by `inspect` as such).
struct FamilyDefaults {
    class: &'static str,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    /// `None`: as many as attention heads.
    num_key_value_heads: Option<usize>,
    /// `None`: hidden_size / num_attention_heads.
    head_dim: Option<usize>,
    tie_word_embeddings: bool,
    max_position_embeddings: usize,
    /// Mistral's window when `sliding_window` is absent (Qwen2's applies only with
    /// `use_sliding_window`).
    sliding_window: Option<usize>,
    max_window_layers: usize,
    /// The rope base when none is given (Gemma 3: 1e6 for global layers).
    default_theta: f64,
    /// How a separate rope of sliding layers is read (Gemma 3).
    local_rope: Option<rope::LocalRope>,
}

impl FamilyDefaults {
    fn of(model_type: &str) -> Self {
        match model_type {
            "mistral" => Self {
                class: "MistralConfig",
                vocab_size: 32000,
                hidden_size: 4096,
                intermediate_size: 14336,
                num_hidden_layers: 32,
                num_attention_heads: 32,
                num_key_value_heads: Some(8),
                head_dim: None,
                tie_word_embeddings: false,
                max_position_embeddings: 4096 * 32,
                sliding_window: Some(4096),
                max_window_layers: 0,
                default_theta: rope::DEFAULT_THETA,
                local_rope: None,
            },
            "qwen2" => Self {
                class: "Qwen2Config",
                vocab_size: 151936,
                hidden_size: 4096,
                intermediate_size: 22016,
                num_hidden_layers: 32,
                num_attention_heads: 32,
                num_key_value_heads: Some(32),
                head_dim: None,
                tie_word_embeddings: false,
                max_position_embeddings: 32768,
                sliding_window: Some(4096),
                max_window_layers: 28,
                default_theta: rope::DEFAULT_THETA,
                local_rope: None,
            },
            "qwen3" => Self {
                class: "Qwen3Config",
                vocab_size: 151936,
                hidden_size: 4096,
                intermediate_size: 22016,
                num_hidden_layers: 32,
                num_attention_heads: 32,
                num_key_value_heads: Some(32),
                head_dim: Some(128),
                tie_word_embeddings: false,
                max_position_embeddings: 32768,
                sliding_window: Some(4096),
                max_window_layers: 28,
                default_theta: rope::DEFAULT_THETA,
                local_rope: None,
            },
            "smollm3" => Self {
                class: "SmolLM3Config",
                vocab_size: 128256,
                hidden_size: 2048,
                intermediate_size: 11008,
                num_hidden_layers: 36,
                num_attention_heads: 16,
                num_key_value_heads: Some(4),
                head_dim: None,
                tie_word_embeddings: true,
                max_position_embeddings: 32768,
                sliding_window: None,
                max_window_layers: 0,
                default_theta: rope::DEFAULT_THETA,
                local_rope: None,
            },
            "gemma2" | "gemma3_text" => {
                let gemma3 = model_type == "gemma3_text";
                Self {
                    class: if gemma3 {
                        "Gemma3TextConfig"
                    } else {
                        "Gemma2Config"
                    },
                    vocab_size: if gemma3 { 262_208 } else { 256_000 },
                    hidden_size: 2304,
                    intermediate_size: 9216,
                    num_hidden_layers: 26,
                    num_attention_heads: 8,
                    num_key_value_heads: Some(4),
                    head_dim: Some(256),
                    tie_word_embeddings: true,
                    max_position_embeddings: if gemma3 { 131_072 } else { 8192 },
                    sliding_window: Some(4096),
                    max_window_layers: 0,
                    default_theta: if gemma3 {
                        1_000_000.0
                    } else {
                        rope::DEFAULT_THETA
                    },
                    local_rope: gemma3.then_some(rope::LocalRope {
                        legacy_key: "rope_local_base_freq",
                        default_theta: 10_000.0,
                    }),
                }
            }
            _ => Self {
                class: "LlamaConfig",
                vocab_size: 32000,
                hidden_size: 4096,
                intermediate_size: 11008,
                num_hidden_layers: 32,
                num_attention_heads: 32,
                num_key_value_heads: None,
                head_dim: None,
                tie_word_embeddings: false,
                max_position_embeddings: 2048,
                sliding_window: None,
                max_window_layers: 0,
                default_theta: rope::DEFAULT_THETA,
                local_rope: None,
            },
        }
    }
}

/// The keys of a LLaVA `vision_config` (a CLIP vision transformer): those the vision tower reads
/// are used, CLIP's bookkeeping is inert, attention dropout other than 0 is refused, anything else
/// is a warning.
fn classify_vision_keys(obj: &serde_json::Map<String, Value>) -> Result<Vec<String>> {
    let Some(vc) = obj.get("vision_config").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    let r = KeyReader::new(vc, "vision_config.", "CLIPVisionConfig");
    r.mark(&[
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "image_size",
        "patch_size",
        "num_channels",
        "layer_norm_eps",
        "hidden_act",
        "model_type",
    ]);
    if let Some(p) = r.get("attention_dropout").and_then(Value::as_f64) {
        if p != 0.0 {
            bail!("key `vision_config.attention_dropout` is {p}; attention dropout is not computed by tunescope's vision tower");
        }
    }
    let (_, warnings) = r.finish(&[
        "projection_dim",
        "dropout",
        "initializer_factor",
        "dtype",
        "torch_dtype",
        "vocab_size",
    ])?;
    Ok(warnings)
}

/// Gemma's computation switches, read from its keys (defaults of Gemma2Config /
/// Gemma3TextConfig); other families keep none of them, and those keys are then refused.
fn gemma_style(r: &KeyReader, architecture: Architecture) -> Result<GemmaStyle> {
    if architecture != Architecture::Gemma {
        return Ok(GemmaStyle::default());
    }
    let gemma3 = r.object().get("model_type").and_then(Value::as_str) == Some("gemma3_text");
    let activation = r.str_or("hidden_activation", "gelu_pytorch_tanh")?;
    if let Some(act) = r.get("hidden_act").and_then(Value::as_str) {
        if act != activation {
            bail!("keys `hidden_act` ({act}) and `hidden_activation` ({activation}) disagree; Gemma uses `hidden_activation`");
        }
    }
    if !matches!(activation.as_str(), "gelu_pytorch_tanh" | "gelu_tanh") {
        bail!("key `hidden_activation` is `{activation}`; tunescope computes Gemma's gelu_pytorch_tanh gating only");
    }
    if r.get("use_bidirectional_attention")
        .is_some_and(|v| v != &Value::Bool(false))
    {
        bail!("key `use_bidirectional_attention` is set: bidirectional attention is not computed by tunescope's decoder");
    }
    let scalar = r.f64_or("query_pre_attn_scalar", 256.0)?;
    let softcap = |key: &str, default: Option<f64>| -> Result<Option<f64>> {
        Ok(match r.object().get(key) {
            None => {
                r.mark(&[key]);
                if let Some(d) = default {
                    r.record(key, d, "default of transformers' Gemma2Config", true);
                }
                default
            }
            Some(Value::Null) => {
                r.mark(&[key]);
                None
            }
            Some(_) => Some(r.f64_or(key, 0.0)?),
        })
    };
    let attn = softcap("attn_logit_softcapping", (!gemma3).then_some(50.0))?;
    let final_ = softcap("final_logit_softcapping", (!gemma3).then_some(30.0))?;
    for cap in [attn, final_].into_iter().flatten() {
        if cap <= 0.0 {
            bail!("logit softcapping must be positive, got {cap}");
        }
    }
    Ok(GemmaStyle {
        norm_plus_one: true,
        scaled_embeddings: true,
        sandwich_norms: true,
        gelu_tanh: true,
        query_pre_attn_scalar: Some(scalar),
        attn_logit_softcapping: attn,
        final_logit_softcapping: final_,
    })
}

/// SmolLM3's per-layer rope switch: `no_rope_layers` lists 1 for a layer with rope and 0 for one
/// without; absent, every `no_rope_layer_interval`-th layer (4 by default) goes without. Other
/// families apply rope everywhere (an empty list).
fn rope_layers(r: &KeyReader, model_type: &str, num_layers: usize) -> Result<Vec<bool>> {
    if model_type != "smollm3" {
        return Ok(Vec::new());
    }
    let flags: Vec<bool> = match r.get("no_rope_layers") {
        Some(v) => {
            let list = v
                .as_array()
                .context("key `no_rope_layers` must be a list of 0/1 per layer")?;
            if list.len() != num_layers {
                bail!(
                    "key `no_rope_layers` lists {} layers but num_hidden_layers is {num_layers}",
                    list.len()
                );
            }
            list.iter()
                .map(|x| match x.as_u64() {
                    Some(0) => Ok(false),
                    Some(1) => Ok(true),
                    _ => bail!("key `no_rope_layers` must hold 0 or 1 per layer, got {x}"),
                })
                .collect::<Result<_>>()?
        }
        None => {
            let interval = r.usize_or("no_rope_layer_interval", 4)?;
            if interval == 0 {
                bail!("key `no_rope_layer_interval` must be positive");
            }
            (0..num_layers).map(|i| (i + 1) % interval != 0).collect()
        }
    };
    r.mark(&["no_rope_layer_interval"]);
    let without: Vec<String> = flags
        .iter()
        .enumerate()
        .filter(|(_, rope)| !**rope)
        .map(|(i, _)| i.to_string())
        .collect();
    r.record(
        "layers without rope",
        if without.is_empty() {
            "none".to_string()
        } else {
            without.join(", ")
        },
        "no_rope_layers (or no_rope_layer_interval)",
        !r.object().contains_key("no_rope_layers"),
    );
    Ok(flags)
}

/// The attention window and each layer's attention type, as transformers derives them:
/// Mistral slides every layer (`sliding_window`, 4096 when absent), Qwen2 slides layers from
/// `max_window_layers` on when `use_sliding_window` is set (or as `layer_types` says), Llama never.
/// A mix of windowed and full layers is refused: the decoder uses one window for every layer.
fn sliding_window(
    r: &KeyReader,
    model_type: &str,
    family: &FamilyDefaults,
    num_layers: usize,
    rope_layers: &[bool],
) -> Result<(Option<usize>, Vec<String>)> {
    let obj = r.object();
    let window = match model_type {
        "mistral" => match obj.get("sliding_window") {
            None => {
                let w = family.sliding_window;
                r.mark(&["sliding_window"]);
                r.record(
                    "sliding window",
                    w.map_or("none".into(), |w| w.to_string()),
                    "default of transformers' MistralConfig (no `sliding_window`)",
                    true,
                );
                w
            }
            Some(_) => r.opt_usize("sliding_window")?,
        },
        "gemma2" | "gemma3_text" => match obj.get("sliding_window") {
            None => {
                r.mark(&["sliding_window"]);
                family.sliding_window
            }
            Some(_) => r.opt_usize("sliding_window")?,
        },
        "qwen2" | "qwen3" | "smollm3" => {
            let enabled = r.bool_or("use_sliding_window", false)?;
            let size = match obj.get("sliding_window") {
                None => {
                    r.mark(&["sliding_window"]);
                    family.sliding_window
                }
                Some(_) => r.opt_usize("sliding_window")?,
            };
            if enabled {
                size
            } else {
                None
            }
        }
        _ => None,
    };
    let layer_types: Vec<String> = match r.get("layer_types") {
        Some(v) => {
            let list = v
                .as_array()
                .context("key `layer_types` must be a list of strings")?
                .iter()
                .map(|t| t.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .context("key `layer_types` must be a list of strings")?;
            if list.len() != num_layers {
                bail!(
                    "key `layer_types` lists {} layers but num_hidden_layers is {num_layers}",
                    list.len()
                );
            }
            for t in &list {
                if t != "full_attention" && t != "sliding_attention" {
                    bail!("key `layer_types` holds `{t}`; tunescope computes full_attention and sliding_attention layers only");
                }
            }
            list
        }
        None => {
            let max_window_layers = if matches!(model_type, "qwen2" | "qwen3") {
                r.usize_or("max_window_layers", family.max_window_layers)?
            } else {
                0
            };
            // Gemma 2 alternates local and global layers; Gemma 3 makes every
            // `sliding_window_pattern`-th layer global (6 when absent).
            let pattern = match model_type {
                "gemma2" => 2,
                "gemma3_text" => r.usize_or("sliding_window_pattern", 6)?.max(1),
                _ => 0,
            };
            (0..num_layers)
                .map(|i| {
                    let slides = match model_type {
                        "qwen2" | "qwen3" => i >= max_window_layers,
                        "mistral" => true,
                        // SmolLM3 slides its layers without rope.
                        "smollm3" => !rope_layers.get(i).copied().unwrap_or(true),
                        "gemma2" | "gemma3_text" => (i + 1) % pattern != 0,
                        _ => false,
                    };
                    if slides && window.is_some() {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    }
                    .to_string()
                })
                .collect()
        }
    };
    // Bookkeeping once `layer_types` is present: transformers derives the types from these
    // keys only without it.
    match model_type {
        "qwen2" | "qwen3" => r.mark(&["max_window_layers"]),
        "gemma3_text" => r.mark(&["sliding_window_pattern", "_sliding_window_pattern"]),
        _ => {}
    }
    let windowed = |t: &String| t == "sliding_attention" && window.is_some();
    let count = layer_types.iter().filter(|t| windowed(t)).count();
    let effective = if count == 0 {
        None
    } else if count == layer_types.len()
        || matches!(model_type, "mistral" | "gemma2" | "gemma3_text")
    {
        window
    } else {
        bail!(
            "{count} of {} layers use a sliding window and the others full attention (`layer_types`/`max_window_layers`): per-layer windows are not computed by tunescope's decoder",
            layer_types.len()
        );
    };
    r.record(
        "attention window",
        effective.map_or("none (full attention)".to_string(), |w| {
            if count == layer_types.len() {
                format!("{w} tokens, every layer")
            } else {
                format!("{w} tokens, {count} of {} layers", layer_types.len())
            }
        }),
        "sliding_window, use_sliding_window, max_window_layers, layer_types (as transformers derives it)",
        false,
    );
    Ok((effective, layer_types))
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
        if model_type == "llava" && path.is_empty() {
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
        let max_position_embeddings =
            r.usize_or("max_position_embeddings", family.max_position_embeddings)?;
        let (qkv_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
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
            rope_layers,
            layer_sliding,
            sliding_rope,
            gemma,
            sliding_window,
            bos_token_id,
            eos_token_ids,
            weight_prefix: String::new(),
            vision: None,
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
        // LLaVA-1.5 configs list only what differs from `LlamaConfig` in `text_config`: the
        // family defaults fill the rest, and `inspect` shows them as defaults.
        for key in ["eos_token_id", "bos_token_id", "tie_word_embeddings"] {
            if let Some(v) = obj.get(key) {
                text.entry(key).or_insert_with(|| v.clone());
            }
        }
        let mut config =
            Self::from_json_at(&Value::Object(text), "text_config.").context("in `text_config`")?;
        let vision = VisionLanguageConfig::from_json(obj)?;
        let vision_warnings = classify_vision_keys(obj)?;
        let top = KeyReader::new(obj, "", "LlavaConfig");
        top.mark(&[
            "model_type",
            "text_config",
            "vision_config",
            "image_token_index",
            "image_token_id",
            "vision_feature_layer",
            "vision_feature_select_strategy",
            "projector_hidden_act",
            "eos_token_id",
            "bos_token_id",
            "tie_word_embeddings",
        ]);
        if top.get("multimodal_projector_bias") == Some(&Value::Bool(false)) {
            bail!("key `multimodal_projector_bias` is false; tunescope's projector has biases");
        }
        if let Some(v) = top.get("dtype").or_else(|| top.get("torch_dtype")) {
            config.saved_dtype = v.as_str().map(String::from);
        }
        let (_, warnings) = top.finish(&["ignore_index", "image_seq_length"])?;
        config.warnings.extend(warnings);
        config.warnings.extend(vision_warnings);
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

    /// Whether layer `i` attends through the sliding window.
    pub fn layer_is_sliding(&self, i: usize) -> bool {
        match self.layer_sliding.get(i) {
            Some(&sliding) => sliding,
            None => self.sliding_window.is_some(),
        }
    }

    /// The attention scale: `query_pre_attn_scalar^-0.5` (Gemma) or `head_dim^-0.5`.
    pub fn attention_scale(&self) -> f64 {
        let d = self
            .gemma
            .query_pre_attn_scalar
            .unwrap_or(self.head_dim as f64);
        1.0 / d.sqrt()
    }

    /// Whether layer `i` applies rotary embeddings.
    pub fn layer_has_rope(&self, i: usize) -> bool {
        self.rope_layers.get(i).copied().unwrap_or(true)
    }

    /// Width of the query projection output.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of the key/value projection outputs.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Rotary inverse frequencies for positions below `seq_len` (only dynamic scaling depends
    /// on the length).
    pub fn rope_inv_freq_for_len(&self, seq_len: usize) -> Vec<f32> {
        rope::inv_freq(
            self.rope_theta,
            self.rope_scaling.as_ref(),
            self.head_dim,
            seq_len,
        )
    }

    /// Rotary inverse frequencies at the configured context length.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        self.rope_inv_freq_for_len(self.max_position_embeddings)
    }

    /// Whether the rotary frequencies change with the sequence length (dynamic NTK).
    pub fn rope_depends_on_length(&self) -> bool {
        matches!(self.rope_scaling, Some(RopeScaling::Dynamic { .. }))
    }

    /// The factor cos and sin are multiplied by (YaRN's attention factor, else 1).
    pub fn rope_attention_scaling(&self) -> f64 {
        rope::attention_scaling(self.rope_scaling.as_ref())
    }
}

#[cfg(test)]
mod tests;
