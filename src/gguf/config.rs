//! `config.json` (and `generation_config.json`) from a GGUF file's `{arch}.*` metadata.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::read::GgufFile;
use crate::model::config::Llama3RopeScaling;

/// `general.architecture` values tunescope imports.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3"];

/// Architecture of a GGUF model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufArch {
    /// Llama family (also Mistral and SmolLM); q/k rows are permuted in the file.
    Llama,
    /// Qwen2 / Qwen2.5; q/k/v biases, no permutation.
    Qwen2,
    /// Qwen3 (dense); per-head q/k norms (`attn_q_norm`, `attn_k_norm`), no permutation.
    Qwen3,
}

impl GgufArch {
    /// Reads `general.architecture`; an unsupported one is an error naming it.
    pub fn of(file: &GgufFile) -> Result<Self> {
        let arch = file.req_str("general.architecture")?;
        match arch {
            "llama" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            "qwen3" => Ok(Self::Qwen3),
            // tunescope trains these families, but their GGUF files do not map back cleanly.
            "gemma2" | "gemma3" | "phi3" => bail!(
                "{}: architecture `{arch}` is not imported: its GGUF files carry a SentencePiece tokenizer \
                 (tokenizer.ggml.model `llama`), which import-gguf does not rebuild{}; load the Hugging Face \
                 checkpoint of the same model instead (tunescope reads {arch} there)",
                file.path().display(),
                if arch.starts_with("gemma") {
                    ", and llama.cpp stores Gemma's norm weights with the +1 folded in"
                } else {
                    ""
                }
            ),
            other => bail!(
                "{}: architecture `{other}` is not supported; supported: {}",
                file.path().display(),
                SUPPORTED_ARCHITECTURES.join(", ")
            ),
        }
    }

    /// The metadata prefix (`llama`, `qwen2`).
    pub fn key(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }

    /// Whether llama.cpp permuted this architecture's q/k rows.
    pub fn permuted_qk(self) -> bool {
        self == Self::Llama
    }
}

/// Hyperparameters read from the metadata.
#[derive(Debug, Clone)]
pub struct HParams {
    pub arch: GgufArch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub context_length: usize,
}

impl HParams {
    /// Reads `{arch}.embedding_length`, `.feed_forward_length`, `.block_count`,
    /// `.attention.head_count[_kv]`, `.attention.layer_norm_rms_epsilon`, `.rope.freq_base`,
    /// `.context_length` (and `.attention.key_length`, `.rope.dimension_count` when present).
    pub fn read(file: &GgufFile, arch: GgufArch) -> Result<Self> {
        let p = arch.key();
        let key = |k: &str| format!("{p}.{k}");
        let hidden_size = file.req_usize(&key("embedding_length"))?;
        let num_heads = file.req_usize(&key("attention.head_count"))?;
        if num_heads == 0 {
            bail!(
                "{}: {} is 0",
                file.path().display(),
                key("attention.head_count")
            );
        }
        let num_kv_heads = file
            .usize(&key("attention.head_count_kv"))?
            .unwrap_or(num_heads);
        let head_dim = file
            .usize(&key("attention.key_length"))?
            .unwrap_or(hidden_size / num_heads);
        if let Some(rot) = file.usize(&key("rope.dimension_count"))? {
            if rot != head_dim {
                bail!(
                    "{}: rotary dimension {rot} differs from the head dimension {head_dim} (partial rotary embeddings are not supported)",
                    file.path().display()
                );
            }
        }
        if let Some(kind) = file.str(&key("rope.scaling.type"))? {
            if !matches!(kind, "none" | "") {
                bail!(
                    "{}: rope scaling `{kind}` ({}) is not supported; supported: none, and llama3 (rope_freqs tensor)",
                    file.path().display(),
                    key("rope.scaling.type")
                );
            }
        }
        Ok(Self {
            arch,
            hidden_size,
            intermediate_size: file.req_usize(&key("feed_forward_length"))?,
            num_layers: file.req_usize(&key("block_count"))?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: file
                .f64(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5),
            rope_theta: file.f64(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            context_length: file.usize(&key("context_length"))?.unwrap_or(4096),
        })
    }
}

/// Token ids the configs mention.
#[derive(Debug, Clone, Default)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// End-of-turn token when it differs from eos (generation also stops there).
    pub eot: Option<u32>,
    pub pad: Option<u32>,
}

/// What else the config needs from the tensors.
#[derive(Debug, Clone)]
pub struct TensorFacts {
    pub vocab_size: usize,
    pub tied: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// `float32` or `bfloat16`.
    pub torch_dtype: &'static str,
}

/// The Hugging Face `config.json`.
pub fn config_json(h: &HParams, t: &TensorFacts, ids: &SpecialIds) -> Value {
    let (architectures, model_type) = match h.arch {
        GgufArch::Llama => ("LlamaForCausalLM", "llama"),
        GgufArch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        GgufArch::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
    };
    let mut config = json!({
        "architectures": [architectures],
        "model_type": model_type,
        "vocab_size": t.vocab_size,
        "hidden_size": h.hidden_size,
        "intermediate_size": h.intermediate_size,
        "num_hidden_layers": h.num_layers,
        "num_attention_heads": h.num_heads,
        "num_key_value_heads": h.num_kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": h.context_length,
        "rms_norm_eps": h.rms_norm_eps,
        // transformers 5's layout: the rotary base and scaling together in `rope_parameters`.
        "rope_parameters": match &t.rope_scaling {
            None => json!({"rope_type": "default", "rope_theta": h.rope_theta}),
            Some(rs) => json!({
                "rope_type": "llama3",
                "rope_theta": h.rope_theta,
                "factor": rs.factor,
                "low_freq_factor": rs.low_freq_factor,
                "high_freq_factor": rs.high_freq_factor,
                "original_max_position_embeddings": rs.original_max_position_embeddings,
            }),
        },
        "tie_word_embeddings": t.tied,
        "bos_token_id": ids.bos,
        "eos_token_id": ids.eos,
        "pad_token_id": ids.pad,
        "initializer_range": 0.02,
        "use_cache": true,
        "dtype": t.torch_dtype,
    });
    match h.arch {
        GgufArch::Llama => {
            config["head_dim"] = json!(h.head_dim);
            config["attention_bias"] = json!(t.attention_bias);
            config["mlp_bias"] = json!(t.mlp_bias);
        }
        GgufArch::Qwen2 => {
            config["use_sliding_window"] = json!(false);
            config["sliding_window"] = json!(h.context_length);
            config["max_window_layers"] = json!(h.num_layers);
        }
        GgufArch::Qwen3 => {
            config["head_dim"] = json!(h.head_dim);
            config["attention_bias"] = json!(t.attention_bias);
            config["use_sliding_window"] = json!(false);
            config["sliding_window"] = Value::Null;
            config["max_window_layers"] = json!(h.num_layers);
        }
    }
    config
}

/// `generation_config.json`: stop on eos (and the end-of-turn token), greedy by default.
pub fn generation_config_json(ids: &SpecialIds) -> Value {
    let eos: Value = match (ids.eos, ids.eot) {
        (Some(eos), Some(eot)) if eos != eot => json!([eos, eot]),
        (Some(eos), _) => json!(eos),
        (None, Some(eot)) => json!(eot),
        (None, None) => Value::Null,
    };
    json!({
        "bos_token_id": ids.bos,
        "eos_token_id": eos,
        "pad_token_id": ids.pad,
        "do_sample": false,
    })
}

/// Recovers Llama-3 rope scaling from llama.cpp's `rope_freqs.weight` (one divisor per frequency),
/// trying the parameters Llama 3.1/3.2 use (low 1, high 4, original context 8192, factor = the
/// largest divisor). Anything else is an error, since the result would not match.
pub fn llama3_scaling_from_factors(
    factors: &[f32],
    rope_theta: f64,
    head_dim: usize,
) -> Result<Llama3RopeScaling> {
    if factors.len() * 2 != head_dim {
        bail!(
            "rope_freqs.weight has {} entries, expected head_dim/2 = {}",
            factors.len(),
            head_dim / 2
        );
    }
    let factor = factors.iter().copied().fold(f32::MIN, f32::max) as f64;
    let candidate = Llama3RopeScaling {
        factor,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    };
    let low_wavelen = 8192.0 / candidate.low_freq_factor;
    let high_wavelen = 8192.0 / candidate.high_freq_factor;
    for (i, &got) in factors.iter().enumerate() {
        let freq = 1.0 / rope_theta.powf((2 * i) as f64 / head_dim as f64);
        let wavelen = 2.0 * std::f64::consts::PI / freq;
        let expected = if wavelen < high_wavelen {
            1.0
        } else if wavelen > low_wavelen {
            factor
        } else {
            let smooth = (8192.0 / wavelen - candidate.low_freq_factor)
                / (candidate.high_freq_factor - candidate.low_freq_factor);
            1.0 / ((1.0 - smooth) / factor + smooth)
        };
        if ((got as f64) - expected).abs() > 1e-3 * expected.max(1.0) {
            bail!(
                "rope_freqs.weight does not match Llama-3 rope scaling (factor {factor}, low 1, high 4, context 8192) at entry {i}: {got} vs {expected}"
            );
        }
    }
    Ok(candidate)
}

/// The vocabulary size: the token list's length, checked against the embedding rows.
pub fn check_vocab(file: &GgufFile, tokens: usize) -> Result<usize> {
    let (_, shape) = file.tensor_info("token_embd.weight").with_context(|| {
        format!(
            "{}: tensor token_embd.weight is missing",
            file.path().display()
        )
    })?;
    if shape.first() != Some(&tokens) {
        bail!(
            "{}: the tokenizer lists {tokens} tokens but token_embd.weight has shape {shape:?}",
            file.path().display()
        );
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    /// llama.cpp's `rope_freqs` for Llama 3.1 (base / scaled frequency), recovered exactly.
    #[test]
    fn llama3_scaling_is_recovered_from_rope_freqs() {
        let config = |scaling: Value| {
            ModelConfig::from_json(&json!({
                "model_type": "llama", "vocab_size": 10, "hidden_size": 4096,
                "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 32,
                "rope_theta": 500000.0, "rope_scaling": scaling,
            }))
            .unwrap()
        };
        let scaled = config(
            json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
        );
        let base = config(Value::Null).rope_inv_freq();
        let factors: Vec<f32> = base
            .iter()
            .zip(scaled.rope_inv_freq())
            .map(|(b, s)| b / s)
            .collect();
        let got = llama3_scaling_from_factors(&factors, 500000.0, 128).unwrap();
        assert_eq!(
            Some(crate::model::config::RopeScaling::Llama3(got)),
            scaled.rope_scaling
        );

        let mut wrong = factors.clone();
        wrong[40] *= 1.5;
        assert!(llama3_scaling_from_factors(&wrong, 500000.0, 128).is_err());
        assert!(llama3_scaling_from_factors(&factors[..10], 500000.0, 128).is_err());
    }
}
