//! A LLaVA config: the language model from `text_config`, the vision tower and projector.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::keys::KeyReader;
use super::ModelConfig;
use crate::model::vlm::VisionLanguageConfig;

impl ModelConfig {
    /// A LLaVA config: the language model from `text_config` (model_type llama when absent),
    /// plus the vision side (where its tensors are is found from the weights: [`crate::model::names`]).
    pub(super) fn from_llava_json(obj: &serde_json::Map<String, Value>) -> Result<Self> {
        let family = obj
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("llava");
        let (class, text_default) = match family {
            "llava_next" => ("LlavaNextConfig", "llama"),
            "llava_onevision" => ("LlavaOnevisionConfig", "qwen2"),
            _ => ("LlavaConfig", "llama"),
        };
        let mut text = obj
            .get("text_config")
            .and_then(Value::as_object)
            .with_context(|| {
                format!("key `text_config` is missing or not an object (model_type {family})")
            })?
            .clone();
        text.entry("model_type")
            .or_insert_with(|| Value::String(text_default.into()));
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
        let top = KeyReader::new(obj, "", class);
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
            "image_grid_pinpoints",
            "vision_aspect_ratio",
            "multimodal_projector_bias",
        ]);
        if family == "llava_onevision"
            && top.get("use_image_newline_parameter") == Some(&Value::Bool(false))
        {
            bail!("key `use_image_newline_parameter` is false; tunescope's LLaVA-OneVision always ends rows with image_newline");
        }
        if top.get("multimodal_projector_bias") == Some(&Value::Bool(false)) {
            bail!("key `multimodal_projector_bias` is false; tunescope's projector has biases");
        }
        if let Some(v) = top.get("dtype").or_else(|| top.get("torch_dtype")) {
            config.saved_dtype = v.as_str().map(String::from);
        }
        // Inert: the loss's ignore index, the processor's token count (derived here), video inputs.
        let (_, warnings) = top.finish(&[
            "ignore_index",
            "image_seq_length",
            "video_token_index",
            "video_token_id",
            "use_image_newline_parameter",
        ])?;
        config.warnings.extend(warnings);
        config.warnings.extend(vision_warnings);
        if vision.image_token_index as usize >= config.vocab_size {
            bail!(
                "image_token_index {} is outside the vocabulary ({} tokens)",
                vision.image_token_index,
                config.vocab_size
            );
        }
        config.vision = Some(vision);
        Ok(config)
    }
}

/// The keys of a LLaVA `vision_config` (a CLIP vision transformer): those the vision tower reads
/// are used, CLIP's bookkeeping is inert, attention dropout other than 0 is refused, anything else
/// is a warning.
fn classify_vision_keys(obj: &serde_json::Map<String, Value>) -> Result<Vec<String>> {
    let Some(vc) = obj.get("vision_config").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    let siglip = vc.get("model_type").and_then(Value::as_str) == Some("siglip_vision_model");
    let class = if siglip {
        "SiglipVisionConfig"
    } else {
        "CLIPVisionConfig"
    };
    let r = KeyReader::new(vc, "vision_config.", class);
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
        // SigLIP's pooling head: LLaVA takes hidden states, never the pooled output.
        "vision_use_head",
    ])?;
    Ok(warnings)
}
