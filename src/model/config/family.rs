//! The defaults of each supported family's transformers config class, for absent keys.

use super::rope;

/// Defaults of the transformers config class of each supported family, used for absent keys
/// (and shown by `inspect` as such).
pub(super) struct FamilyDefaults {
    pub(super) class: &'static str,
    pub(super) vocab_size: usize,
    pub(super) hidden_size: usize,
    pub(super) intermediate_size: usize,
    pub(super) num_hidden_layers: usize,
    pub(super) num_attention_heads: usize,
    /// `None`: as many as attention heads.
    pub(super) num_key_value_heads: Option<usize>,
    /// `None`: hidden_size / num_attention_heads.
    pub(super) head_dim: Option<usize>,
    pub(super) tie_word_embeddings: bool,
    pub(super) max_position_embeddings: usize,
    /// Mistral's window when `sliding_window` is absent (Qwen2's applies only with
    /// `use_sliding_window`).
    pub(super) sliding_window: Option<usize>,
    pub(super) max_window_layers: usize,
    /// The rope base when none is given (Gemma 3: 1e6 for global layers).
    pub(super) default_theta: f64,
    /// How a separate rope of sliding layers is read (Gemma 3).
    pub(super) local_rope: Option<rope::LocalRope>,
}

impl FamilyDefaults {
    pub(super) fn of(model_type: &str) -> Self {
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
            "phi3" => Self {
                class: "Phi3Config",
                vocab_size: 32064,
                hidden_size: 3072,
                intermediate_size: 8192,
                num_hidden_layers: 32,
                num_attention_heads: 32,
                num_key_value_heads: None,
                head_dim: None,
                tie_word_embeddings: false,
                max_position_embeddings: 4096,
                sliding_window: None,
                max_window_layers: 0,
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
