//! Generates small random models in full Hugging Face layout (config, safetensors, a trained
//! byte-level BPE `tokenizer.json`, `tokenizer_config.json` with a ChatML chat template), so
//! tests and demos need no download.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    Tokenizer, TokenizerBuilder,
};

use super::config::Architecture;
use crate::util::fs::{write_atomic_with, write_json_atomic};
use crate::util::rng::SeededRng;

/// The ChatML chat template written into tiny models' `tokenizer_config.json`.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Special tokens of tiny models, in id order.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Shape of a generated model.
#[derive(Debug, Clone)]
pub struct TinySpec {
    pub arch: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// Target vocabulary size of the trained BPE tokenizer.
    pub vocab_size: usize,
    /// `None`: tied for qwen2 and smollm3, untied otherwise.
    pub tie_embeddings: Option<bool>,
    /// With `Architecture::Gemma`: Gemma 2 (softcapping, no q/k norms) instead of Gemma 3.
    pub gemma2: bool,
    pub seed: u64,
}

impl TinySpec {
    /// Defaults: 2 layers, hidden 64, 4 heads over 2 KV heads (grouped-query), ~512 tokens.
    pub fn new(arch: Architecture, seed: u64) -> Self {
        Self {
            arch,
            hidden_size: 64,
            intermediate_size: 128,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            vocab_size: 512,
            tie_embeddings: None,
            gemma2: false,
            seed,
        }
    }

    pub fn tied(&self) -> bool {
        self.tie_embeddings.unwrap_or(matches!(
            self.arch,
            Architecture::Qwen2 | Architecture::SmolLM3 | Architecture::Gemma
        ))
    }
}

/// Text the tiny tokenizer is trained on: everyday words, numbers and number words.
const CORPUS: &str = "the quick brown fox jumps over the lazy dog . a model learns new skills without forgetting old ones . \
how many red circles are in the picture ? there are three red circles and two blue squares . \
zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty \
thirty forty fifty sixty seventy eighty ninety hundred thousand million billion \
0 1 2 3 4 5 6 7 8 9 10 11 12 20 42 100 1st 2nd 3rd 4th 1,000 3.14 \
what colour is the sky ? the sky is blue . what is the opposite of hot ? the opposite of hot is cold . \
copy the words : apple banana cherry . reverse the words : cherry banana apple . \
user assistant system question answer yes no true false red green blue yellow circle square triangle";

/// Trains a byte-level BPE tokenizer with the ChatML special tokens on a fixed corpus.
pub fn build_tokenizer(vocab_size: usize) -> Result<Tokenizer> {
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(t.to_string(), true))
        .collect();
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(1)
        .show_progress(false)
        .special_tokens(specials.clone())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut trainer = TrainerWrapper::BpeTrainer(trainer);
    let byte_level = ByteLevel::default().add_prefix_space(false);
    let mut builder = TokenizerBuilder::<
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(BPE::default().into())
    .with_normalizer(None)
    .with_pre_tokenizer(Some(byte_level.into()))
    .with_post_processor(Some(byte_level.into()))
    .with_decoder(Some(byte_level.into()))
    .build()
    .map_err(anyhow::Error::msg)?;
    let lines: Vec<String> = CORPUS.split(" . ").map(|s| s.to_string()).collect();
    builder
        .train(&mut trainer, lines.iter())
        .map_err(anyhow::Error::msg)?;
    let mut tokenizer: Tokenizer = builder.into();
    tokenizer
        .add_special_tokens(specials)
        .map_err(anyhow::Error::msg)?;
    Ok(tokenizer)
}

/// Writes a random model described by `spec` into `out` (created if missing).
pub fn make_tiny(spec: &TinySpec, out: &Path) -> Result<()> {
    let tokenizer = build_tokenizer(spec.vocab_size)?;
    make_tiny_with_tokenizer(spec, &tokenizer, out)
}

/// Like [`make_tiny`] with a given tokenizer (which must hold the ChatML special tokens);
/// `spec.vocab_size` is ignored, the tokenizer's size is used.
pub fn make_tiny_with_tokenizer(spec: &TinySpec, tokenizer: &Tokenizer, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let vocab_size = tokenizer.get_vocab_size(true);
    let token_id = |t: &str| tokenizer.token_to_id(t).context("special token missing");
    let (eos, bos, pad) = (
        token_id("<|im_end|>")?,
        token_id("<|im_start|>")?,
        token_id("<|endoftext|>")?,
    );
    let head_dim = spec.hidden_size / spec.num_heads;

    let model_type = spec.arch.model_type();
    let mut config = json!({
        "architectures": [spec.arch.class_name()],
        "model_type": model_type,
        "vocab_size": vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "tie_word_embeddings": spec.tied(),
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "dtype": "float32",
    });
    match spec.arch {
        Architecture::Qwen2 => {
            config["sliding_window"] = json!(512);
            config["max_window_layers"] = json!(spec.num_layers);
            config["use_sliding_window"] = json!(false);
        }
        Architecture::Qwen3 => {
            config["sliding_window"] = Value::Null;
            config["max_window_layers"] = json!(spec.num_layers);
            config["use_sliding_window"] = json!(false);
            config["attention_bias"] = json!(false);
            config["head_dim"] = json!(head_dim);
        }
        Architecture::Llama | Architecture::SmolLM3 => {
            config["attention_bias"] = json!(false);
            config["mlp_bias"] = json!(false);
            config["head_dim"] = json!(head_dim);
        }
        Architecture::Phi3 => {
            // Fused qkv_proj and gate_up_proj; no biases, head_dim derived.
            config["resid_pdrop"] = json!(0.0);
            config["embd_pdrop"] = json!(0.0);
            config["sliding_window"] = Value::Null;
        }
        Architecture::Gemma => {
            // Gemma 3 text: local and global layers alternate (pattern 2), a local rope base
            // of its own, per-head q/k norms; no softcapping.
            let obj = config.as_object_mut().expect("object");
            obj.remove("hidden_act");
            obj.remove("rope_parameters");
            config["hidden_activation"] = json!("gelu_pytorch_tanh");
            config["head_dim"] = json!(head_dim);
            config["attention_bias"] = json!(false);
            config["query_pre_attn_scalar"] = json!(head_dim);
            config["sliding_window"] = json!(16);
            config["sliding_window_pattern"] = json!(2);
            config["final_logit_softcapping"] = Value::Null;
            config["attn_logit_softcapping"] = Value::Null;
            config["rope_parameters"] = json!({
                "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            });
            if spec.gemma2 {
                // Gemma 2: one rope for every layer, softcapping, no q/k norms.
                config["model_type"] = json!("gemma2");
                config["architectures"] = json!(["Gemma2ForCausalLM"]);
                config["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 10_000.0});
                config["attn_logit_softcapping"] = json!(50.0);
                config["final_logit_softcapping"] = json!(30.0);
                config
                    .as_object_mut()
                    .expect("object")
                    .remove("sliding_window_pattern");
            }
            let types: Vec<&str> = (0..spec.num_layers)
                .map(|i| {
                    if (i + 1) % 2 != 0 {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    }
                })
                .collect();
            config["layer_types"] = json!(types);
        }
    }
    if spec.arch == Architecture::SmolLM3 {
        // Every other layer without rope, so that both kinds occur in a 2-layer model.
        let flags: Vec<u8> = (0..spec.num_layers).map(|i| u8::from(i % 2 == 0)).collect();
        config["no_rope_layers"] = json!(flags);
        config["use_sliding_window"] = json!(false);
        config["sliding_window"] = Value::Null;
    }
    write_json_atomic(&out.join("config.json"), &config)?;

    let tensors = random_weights(spec, vocab_size)?;
    write_atomic_with(&out.join("model.safetensors"), |tmp| {
        candle_core::safetensors::save(&tensors, tmp)?;
        Ok(())
    })?;

    let tokenizer_json = tokenizer.to_string(true).map_err(anyhow::Error::msg)?;
    crate::util::fs::write_atomic(&out.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    let added: serde_json::Map<String, serde_json::Value> = SPECIAL_TOKENS
        .iter()
        .map(|t| {
            let id = tokenizer.token_to_id(t).unwrap_or_default();
            (
                id.to_string(),
                json!({"content": t, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true}),
            )
        })
        .collect();
    write_json_atomic(
        &out.join("tokenizer_config.json"),
        &json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "added_tokens_decoder": added,
            "bos_token": null,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "unk_token": null,
            "model_max_length": 512,
            "clean_up_tokenization_spaces": false,
            "chat_template": CHATML_TEMPLATE,
        }),
    )?;
    write_json_atomic(
        &out.join("generation_config.json"),
        &json!({"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, "do_sample": false}),
    )?;
    Ok(())
}

/// Seeded normal random tensors added to a name → tensor map (tiny models' weights).
pub(crate) struct SeededTensors<'a> {
    rng: SeededRng,
    tensors: &'a mut HashMap<String, Tensor>,
}

impl<'a> SeededTensors<'a> {
    /// Draws from a generator seeded with `seed` into `tensors`.
    pub(crate) fn new(seed: u64, tensors: &'a mut HashMap<String, Tensor>) -> Self {
        Self {
            rng: SeededRng::new(seed),
            tensors,
        }
    }

    /// Adds `name`: a tensor of `shape` drawn from N(`mean`, `std`²).
    pub(crate) fn add(&mut self, name: String, shape: &[usize], mean: f32, std: f32) -> Result<()> {
        let n = shape.iter().product();
        let t = Tensor::from_vec(self.rng.normal_vec(n, mean, std), shape, &Device::Cpu)?;
        self.tensors.insert(name, t);
        Ok(())
    }
}

/// Seeded random weights with Hugging Face names.
fn random_weights(spec: &TinySpec, vocab: usize) -> Result<HashMap<String, Tensor>> {
    let mut tensors = HashMap::new();
    let mut seeded = SeededTensors::new(spec.seed, &mut tensors);
    let mut add =
        |name: String, shape: &[usize], mean: f32, std: f32| seeded.add(name, shape, mean, std);
    let h = spec.hidden_size;
    let head_dim = h / spec.num_heads;
    let q_dim = spec.num_heads * head_dim;
    let kv_dim = spec.num_kv_heads * head_dim;
    let i = spec.intermediate_size;
    let std = 0.08;
    add("model.embed_tokens.weight".into(), &[vocab, h], 0.0, 0.5)?;
    for l in 0..spec.num_layers {
        let p = format!("model.layers.{l}");
        add(format!("{p}.input_layernorm.weight"), &[h], 1.0, 0.1)?;
        add(
            format!("{p}.post_attention_layernorm.weight"),
            &[h],
            1.0,
            0.1,
        )?;
        let linears: &[(&str, usize, usize)] = if spec.arch == Architecture::Phi3 {
            &[
                ("self_attn.qkv_proj", q_dim + 2 * kv_dim, h),
                ("self_attn.o_proj", h, q_dim),
                ("mlp.gate_up_proj", 2 * i, h),
                ("mlp.down_proj", h, i),
            ]
        } else {
            &[
                ("self_attn.q_proj", q_dim, h),
                ("self_attn.k_proj", kv_dim, h),
                ("self_attn.v_proj", kv_dim, h),
                ("self_attn.o_proj", h, q_dim),
                ("mlp.gate_proj", i, h),
                ("mlp.up_proj", i, h),
                ("mlp.down_proj", h, i),
            ]
        };
        for &(name, out_dim, in_dim) in linears {
            add(format!("{p}.{name}.weight"), &[out_dim, in_dim], 0.0, std)?;
        }
        if spec.arch == Architecture::Qwen2 {
            for (name, dim) in [("q_proj", q_dim), ("k_proj", kv_dim), ("v_proj", kv_dim)] {
                add(format!("{p}.self_attn.{name}.bias"), &[dim], 0.0, 0.05)?;
            }
        }
        if spec.arch == Architecture::Gemma {
            // Gemma's norms multiply by (1 + w): weights near 0.
            if !spec.gemma2 {
                for name in ["self_attn.q_norm", "self_attn.k_norm"] {
                    add(format!("{p}.{name}.weight"), &[head_dim], 0.0, 0.1)?;
                }
            }
            for name in ["pre_feedforward_layernorm", "post_feedforward_layernorm"] {
                add(format!("{p}.{name}.weight"), &[h], 0.0, 0.1)?;
            }
        }
        if spec.arch == Architecture::Qwen3 {
            for name in ["q_norm", "k_norm"] {
                add(
                    format!("{p}.self_attn.{name}.weight"),
                    &[head_dim],
                    1.0,
                    0.1,
                )?;
            }
        }
    }
    add("model.norm.weight".into(), &[h], 1.0, 0.1)?;
    if !spec.tied() {
        add("lm_head.weight".into(), &[vocab, h], 0.0, std)?;
    }
    Ok(tensors)
}
