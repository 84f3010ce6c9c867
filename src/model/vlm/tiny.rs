//! Tiny random LLaVA-family models in the layout transformers' `save_pretrained` writes:
//! - LLaVA-1.5: a CLIP tower under `vision_tower.vision_model.`, the projector under
//!   `multi_modal_projector.`, a tiny Llama under `language_model.`;
//! - LLaVA-NeXT: the same plus anyres grid pinpoints and `image_newline`;
//! - LLaVA-OneVision: a SigLIP tower, a tiny Qwen2, anyres_max and `image_newline`;
//!
//! each with `preprocessor_config.json` and an `<image>` special token.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use tokenizers::AddedToken;

use super::preprocess::{ImageProcessor, ProcessorKind};
use super::IMAGE_TOKEN;
use crate::model::tiny::{build_tokenizer, make_tiny_with_tokenizer, SeededTensors, TinySpec};
use crate::model::Architecture;
use crate::util::fs::{write_atomic_with, write_json_atomic};

/// Shape of a generated LLaVA model.
#[derive(Debug, Clone)]
pub struct TinyLlavaSpec {
    /// The language model (a Llama).
    pub text: TinySpec,
    pub vision_hidden: usize,
    pub vision_intermediate: usize,
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    /// `vision_feature_layer` (negative counts from the end of the hidden states).
    pub feature_layer: i64,
    /// `"default"` (drop CLS) or `"full"`.
    pub select_strategy: String,
    /// `llava`, `llava_next` or `llava_onevision`.
    pub family: String,
}

impl TinyLlavaSpec {
    /// Defaults: 32×32 images in 8×8 patches (16 image tokens), a 2-layer vision tower of width
    /// 32, feature layer -2, the default tiny Llama.
    pub fn new(seed: u64) -> Self {
        Self {
            text: TinySpec::new(Architecture::Llama, seed),
            vision_hidden: 32,
            vision_intermediate: 64,
            vision_layers: 2,
            vision_heads: 2,
            image_size: 32,
            patch_size: 8,
            feature_layer: -2,
            select_strategy: "default".into(),
            family: "llava".into(),
        }
    }

    /// A LLaVA-NeXT: CLIP tower, anyres over 1×2, 2×1 and 2×2 tiles of 32×32.
    pub fn next(seed: u64) -> Self {
        Self {
            family: "llava_next".into(),
            ..Self::new(seed)
        }
    }

    /// A LLaVA-OneVision: SigLIP tower (features of the last layer, all positions), Qwen2
    /// text model, anyres up to 2×2 tiles with `anyres_max_2`.
    pub fn onevision(seed: u64) -> Self {
        Self {
            text: TinySpec::new(Architecture::Qwen2, seed),
            feature_layer: -1,
            select_strategy: "full".into(),
            family: "llava_onevision".into(),
            ..Self::new(seed)
        }
    }

    fn siglip(&self) -> bool {
        self.family == "llava_onevision"
    }

    /// Anyres grid pinpoints `[height, width]` (none for LLaVA-1.5).
    fn pinpoints(&self) -> Vec<[usize; 2]> {
        let t = self.image_size;
        match self.family.as_str() {
            "llava" => Vec::new(),
            _ => vec![[t, 2 * t], [2 * t, t], [2 * t, 2 * t]],
        }
    }
}

/// Writes a random LLaVA model described by `spec` into `out` (created if missing).
pub fn make_tiny_llava(spec: &TinyLlavaSpec, out: &Path) -> Result<()> {
    let mut tokenizer = build_tokenizer(spec.text.vocab_size)?;
    tokenizer
        .add_special_tokens(vec![AddedToken::from(IMAGE_TOKEN.to_string(), true)])
        .map_err(anyhow::Error::msg)?;
    let image_id = tokenizer
        .token_to_id(IMAGE_TOKEN)
        .context("the <image> token was not added")?;
    let text_arch = if spec.siglip() {
        Architecture::Qwen2
    } else {
        Architecture::Llama
    };
    let text_spec = TinySpec {
        arch: text_arch,
        ..spec.text.clone()
    };
    make_tiny_with_tokenizer(&text_spec, &tokenizer, out)?;

    // config.json: the language model's config becomes `text_config`.
    let config_path = out.join("config.json");
    let text_config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path)?)?;
    let (tower_type, act, eps) = if spec.siglip() {
        ("siglip_vision_model", "gelu_pytorch_tanh", 1e-6)
    } else {
        ("clip_vision_model", "quick_gelu", 1e-5)
    };
    let mut vision_config = json!({
        "model_type": tower_type,
        "hidden_size": spec.vision_hidden,
        "intermediate_size": spec.vision_intermediate,
        "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": spec.vision_heads,
        "image_size": spec.image_size,
        "patch_size": spec.patch_size,
        "num_channels": 3,
        "hidden_act": act,
        "layer_norm_eps": eps,
    });
    if spec.siglip() {
        vision_config["vision_use_head"] = json!(false);
    } else {
        vision_config["projection_dim"] = json!(spec.vision_hidden);
    }
    let class = match spec.family.as_str() {
        "llava_next" => "LlavaNextForConditionalGeneration",
        "llava_onevision" => "LlavaOnevisionForConditionalGeneration",
        _ => "LlavaForConditionalGeneration",
    };
    let mut config = json!({
        "architectures": [class],
        "model_type": spec.family,
        "text_config": text_config,
        "vision_config": vision_config,
        "vision_feature_layer": spec.feature_layer,
        "vision_feature_select_strategy": spec.select_strategy,
        "image_token_index": image_id,
        "projector_hidden_act": "gelu",
        "ignore_index": -100,
        "tie_word_embeddings": text_config.get("tie_word_embeddings").cloned().unwrap_or(json!(false)),
        "eos_token_id": text_config.get("eos_token_id").cloned().unwrap_or(Value::Null),
        "dtype": "float32",
    });
    if !spec.pinpoints().is_empty() {
        config["image_grid_pinpoints"] = json!(spec.pinpoints());
    }
    if spec.siglip() {
        config["vision_aspect_ratio"] = json!("anyres_max_2");
    }
    write_json_atomic(&config_path, &config)?;

    // Weights: the language model's under `language_model.`, plus vision tower and projector.
    let weights_path = out.join("model.safetensors");
    let text_tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)?;
    let mut tensors: HashMap<String, Tensor> = text_tensors
        .into_iter()
        .map(|(name, t)| (format!("language_model.{name}"), t))
        .collect();
    vision_weights(spec, &mut tensors)?;
    write_atomic_with(&weights_path, |tmp| {
        candle_core::safetensors::save(&tensors, tmp)?;
        Ok(())
    })?;

    // The tokenizer config lists `<image>` among the added tokens.
    let tc_path = out.join("tokenizer_config.json");
    let mut tc: Value = serde_json::from_str(&std::fs::read_to_string(&tc_path)?)?;
    tc["added_tokens_decoder"][image_id.to_string()] = json!({"content": IMAGE_TOKEN, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true});
    let mut processor = ImageProcessor::clip(spec.image_size as u32);
    processor.pinpoints = spec
        .pinpoints()
        .iter()
        .map(|&[h, w]| (h as u32, w as u32))
        .collect();
    processor.kind = match spec.family.as_str() {
        "llava_next" => ProcessorKind::LlavaNext,
        "llava_onevision" => {
            processor.do_center_crop = false;
            processor.exact_size = Some((spec.image_size as u32, spec.image_size as u32));
            ProcessorKind::LlavaOnevision
        }
        _ => ProcessorKind::Clip,
    };
    tc["processor_class"] = processor.to_json()["processor_class"].clone();
    write_json_atomic(&tc_path, &tc)?;

    write_json_atomic(&out.join("preprocessor_config.json"), &processor.to_json())?;
    Ok(())
}

/// Seeded random vision-tower and projector tensors with Hugging Face names.
fn vision_weights(spec: &TinyLlavaSpec, tensors: &mut HashMap<String, Tensor>) -> Result<()> {
    let mut seeded = SeededTensors::new(spec.text.seed ^ 0x5649_5349_4f4e, tensors);
    let mut add =
        |name: String, shape: &[usize], mean: f32, std: f32| seeded.add(name, shape, mean, std);
    let d = spec.vision_hidden;
    let i = spec.vision_intermediate;
    let p = spec.patch_size;
    let patches = (spec.image_size / p).pow(2);
    let siglip = spec.siglip();
    // transformers 5 saves a SigLIP tower built from a config without the `vision_model.` level.
    let v = if siglip {
        "vision_tower"
    } else {
        "vision_tower.vision_model"
    };
    add(
        format!("{v}.embeddings.patch_embedding.weight"),
        &[d, 3, p, p],
        0.0,
        0.05,
    )?;
    if siglip {
        add(
            format!("{v}.embeddings.patch_embedding.bias"),
            &[d],
            0.0,
            0.05,
        )?;
    } else {
        add(format!("{v}.embeddings.class_embedding"), &[d], 0.0, 0.5)?;
    }
    add(
        format!("{v}.embeddings.position_embedding.weight"),
        &[patches + usize::from(!siglip), d],
        0.0,
        0.1,
    )?;
    let norms: &[&str] = if siglip {
        &["post_layernorm"]
    } else {
        &["pre_layrnorm", "post_layernorm"]
    };
    for norm in norms {
        add(format!("{v}.{norm}.weight"), &[d], 1.0, 0.1)?;
        add(format!("{v}.{norm}.bias"), &[d], 0.0, 0.05)?;
    }
    for l in 0..spec.vision_layers {
        let pre = format!("{v}.encoder.layers.{l}");
        for norm in ["layer_norm1", "layer_norm2"] {
            add(format!("{pre}.{norm}.weight"), &[d], 1.0, 0.1)?;
            add(format!("{pre}.{norm}.bias"), &[d], 0.0, 0.05)?;
        }
        for (name, out_dim, in_dim) in [
            ("self_attn.q_proj", d, d),
            ("self_attn.k_proj", d, d),
            ("self_attn.v_proj", d, d),
            ("self_attn.out_proj", d, d),
            ("mlp.fc1", i, d),
            ("mlp.fc2", d, i),
        ] {
            add(format!("{pre}.{name}.weight"), &[out_dim, in_dim], 0.0, 0.1)?;
            add(format!("{pre}.{name}.bias"), &[out_dim], 0.0, 0.05)?;
        }
    }
    let h = spec.text.hidden_size;
    let pr = "multi_modal_projector";
    add(format!("{pr}.linear_1.weight"), &[h, d], 0.0, 0.1)?;
    add(format!("{pr}.linear_1.bias"), &[h], 0.0, 0.05)?;
    add(format!("{pr}.linear_2.weight"), &[h, h], 0.0, 0.1)?;
    add(format!("{pr}.linear_2.bias"), &[h], 0.0, 0.05)?;
    if !spec.pinpoints().is_empty() {
        add("image_newline".into(), &[h], 0.0, 0.5)?;
    }
    Ok(())
}
