//! The decoder architectures tunescope computes, by transformers `model_type`.

use serde::{Deserialize, Serialize};

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
    /// Phi-3 / Phi-4-mini: fused `qkv_proj` and `gate_up_proj`.
    Phi3,
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
    "phi3",
    "llava",
    "llava_next",
    "llava_onevision",
    "qwen2_5_vl",
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
            Self::Phi3 => "phi3",
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
            Self::Phi3 => "Phi3ForCausalLM",
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
            "phi3" => Some(Self::Phi3),
            _ => None,
        }
    }
}
