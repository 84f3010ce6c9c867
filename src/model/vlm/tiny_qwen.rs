//! Tiny random Qwen2.5-VL models in the layout transformers 5 saves: the language model under
//! `model.` and `lm_head`, the vision transformer and its merger under `visual.`, a
//! `text_config` with M-RoPE sections, and a `Qwen2VLImageProcessor` config.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use tokenizers::AddedToken;

use super::preprocess::{ImageProcessor, ProcessorKind};
use super::qwen_patching::QwenPatching;
use crate::model::tiny::{build_tokenizer, make_tiny_with_tokenizer, SeededTensors, TinySpec};
use crate::model::Architecture;
use crate::util::fs::{write_atomic_with, write_json_atomic};

/// Qwen2.5-VL's vision special tokens, in the order they are added.
pub const QWEN_VISION_TOKENS: [&str; 4] = [
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
];

/// Shape of a generated Qwen2.5-VL.
#[derive(Debug, Clone)]
pub struct TinyQwenVlSpec {
    /// The language model (a Qwen2; its head dimension sets the M-RoPE sections).
    pub text: TinySpec,
    pub vision_hidden: usize,
    pub vision_intermediate: usize,
    pub vision_depth: usize,
    pub vision_heads: usize,
    /// Blocks that attend over the whole image; the others attend within windows.
    pub full_attention_blocks: Vec<usize>,
}

impl TinyQwenVlSpec {
    /// Defaults: a 3-block ViT of width 32 (block 1 full attention, windows of 2×2 merged
    /// units), 14×14 patches, images resized to 56²…112² pixels, the default tiny Qwen2.
    pub fn new(seed: u64) -> Self {
        Self {
            text: TinySpec::new(Architecture::Qwen2, seed),
            vision_hidden: 32,
            vision_intermediate: 48,
            vision_depth: 3,
            vision_heads: 2,
            full_attention_blocks: vec![1],
        }
    }
}

/// Writes a random Qwen2.5-VL described by `spec` into `out` (created if missing).
pub fn make_tiny_qwen_vl(spec: &TinyQwenVlSpec, out: &Path) -> Result<()> {
    let mut tokenizer = build_tokenizer(spec.text.vocab_size)?;
    tokenizer
        .add_special_tokens(
            QWEN_VISION_TOKENS
                .iter()
                .map(|t| AddedToken::from(t.to_string(), true))
                .collect::<Vec<_>>(),
        )
        .map_err(anyhow::Error::msg)?;
    let id = |t: &str| {
        tokenizer
            .token_to_id(t)
            .context("a vision token was not added")
    };
    let text_spec = TinySpec {
        arch: Architecture::Qwen2,
        ..spec.text.clone()
    };
    make_tiny_with_tokenizer(&text_spec, &tokenizer, out)?;

    let config_path = out.join("config.json");
    let mut text_config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path)?)?;
    let head_dim = spec.text.hidden_size / spec.text.num_heads;
    let half = head_dim / 2;
    // Temporal, row, column: a quarter, then the rest split as evenly as it goes.
    let t = half / 4;
    let h = (half - t) / 2;
    let section = [t, h, half - t - h];
    text_config["rope_parameters"]["mrope_section"] = json!(section);
    text_config["model_type"] = json!("qwen2_5_vl_text");
    let obj = text_config.as_object_mut().context("config object")?;
    for key in ["architectures", "dtype"] {
        obj.remove(key);
    }
    let patching = QwenPatching {
        min_pixels: 56 * 56,
        max_pixels: 112 * 112,
        ..QwenPatching::defaults()
    };
    let config = json!({
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "text_config": text_config,
        "vision_config": {
            "model_type": "qwen2_5_vl_vision",
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_intermediate,
            "num_heads": spec.vision_heads,
            "out_hidden_size": spec.text.hidden_size,
            "patch_size": patching.patch_size,
            "spatial_merge_size": patching.merge_size,
            "temporal_patch_size": patching.temporal_patch_size,
            "window_size": 56,
            "fullatt_block_indexes": spec.full_attention_blocks,
            "in_channels": 3,
            "hidden_act": "silu",
            "rope_parameters": {"rope_type": "axial", "rope_theta": 10000.0},
            "tokens_per_second": 4,
        },
        "image_token_id": id("<|image_pad|>")?,
        "video_token_id": id("<|video_pad|>")?,
        "vision_start_token_id": id("<|vision_start|>")?,
        "vision_end_token_id": id("<|vision_end|>")?,
        "tie_word_embeddings": spec.text.tied(),
        "dtype": "float32",
    });
    write_json_atomic(&config_path, &config)?;

    let weights_path = out.join("model.safetensors");
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&weights_path, &Device::Cpu)?;
    vision_weights(spec, &patching, &mut tensors)?;
    write_atomic_with(&weights_path, |tmp| {
        candle_core::safetensors::save(&tensors, tmp)?;
        Ok(())
    })?;

    let tc_path = out.join("tokenizer_config.json");
    let mut tc: Value = serde_json::from_str(&std::fs::read_to_string(&tc_path)?)?;
    for token in QWEN_VISION_TOKENS {
        tc["added_tokens_decoder"][id(token)?.to_string()] = json!({"content": token, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true});
    }
    tc["processor_class"] = json!("Qwen2_5_VLProcessor");
    write_json_atomic(&tc_path, &tc)?;

    let mut processor = ImageProcessor::clip(patching.patch_size * patching.merge_size);
    processor.kind = ProcessorKind::Qwen2Vl;
    processor.do_center_crop = false;
    processor.qwen = Some(patching);
    write_json_atomic(&out.join("preprocessor_config.json"), &processor.to_json())?;
    Ok(())
}

/// Seeded random vision-transformer and merger tensors with Hugging Face names.
fn vision_weights(
    spec: &TinyQwenVlSpec,
    patching: &QwenPatching,
    tensors: &mut HashMap<String, Tensor>,
) -> Result<()> {
    let mut seeded = SeededTensors::new(spec.text.seed ^ 0x0051_5745_4e56_4954, tensors);
    let mut add =
        |name: String, shape: &[usize], mean: f32, std: f32| seeded.add(name, shape, mean, std);
    let d = spec.vision_hidden;
    let i = spec.vision_intermediate;
    let (p, t) = (
        patching.patch_size as usize,
        patching.temporal_patch_size as usize,
    );
    add(
        "visual.patch_embed.proj.weight".into(),
        &[d, 3, t, p, p],
        0.0,
        0.02,
    )?;
    for b in 0..spec.vision_depth {
        let pre = format!("visual.blocks.{b}");
        add(format!("{pre}.norm1.weight"), &[d], 1.0, 0.1)?;
        add(format!("{pre}.norm2.weight"), &[d], 1.0, 0.1)?;
        for (name, out_dim, in_dim) in [
            ("attn.qkv", 3 * d, d),
            ("attn.proj", d, d),
            ("mlp.gate_proj", i, d),
            ("mlp.up_proj", i, d),
            ("mlp.down_proj", d, i),
        ] {
            add(format!("{pre}.{name}.weight"), &[out_dim, in_dim], 0.0, 0.1)?;
            add(format!("{pre}.{name}.bias"), &[out_dim], 0.0, 0.05)?;
        }
    }
    let m2 = (patching.merge_size * patching.merge_size) as usize;
    let h = spec.text.hidden_size;
    add("visual.merger.ln_q.weight".into(), &[d], 1.0, 0.1)?;
    add(
        "visual.merger.mlp.0.weight".into(),
        &[d * m2, d * m2],
        0.0,
        0.05,
    )?;
    add("visual.merger.mlp.0.bias".into(), &[d * m2], 0.0, 0.05)?;
    add("visual.merger.mlp.2.weight".into(), &[h, d * m2], 0.0, 0.05)?;
    add("visual.merger.mlp.2.bias".into(), &[h], 0.0, 0.05)?;
    Ok(())
}
