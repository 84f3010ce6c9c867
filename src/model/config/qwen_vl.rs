//! A Qwen2.5-VL config: the language model (a Qwen2 with M-RoPE) from `text_config`
//! (transformers 5) or from the top level (transformers 4), and the vision transformer.

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

use super::keys::{KeyReader, ValueSource};
use super::ModelConfig;
use crate::model::vlm::config::{ImageLayout, QwenVision, TowerKind};
use crate::model::vlm::{FeatureSelect, VisionConfig, VisionLanguageConfig};

/// Top-level keys of a transformers-4 Qwen2.5-VL config that belong to the vision side or are
/// token ids; everything else at the top level is the language model's.
const TOP_KEYS: &[&str] = &[
    "model_type",
    "text_config",
    "vision_config",
    "image_token_id",
    "video_token_id",
    "vision_start_token_id",
    "vision_end_token_id",
    "vision_token_id",
    "architectures",
    "dtype",
    "torch_dtype",
    "transformers_version",
    "tie_word_embeddings",
];

impl ModelConfig {
    /// A Qwen2.5-VL config (`model_type` qwen2_5_vl).
    pub(super) fn from_qwen_vl_json(obj: &Map<String, Value>) -> Result<Self> {
        let mut text = match obj.get("text_config").and_then(Value::as_object) {
            Some(t) => t.clone(),
            // transformers 4: the language model's keys sit at the top level.
            None => obj
                .iter()
                .filter(|(k, _)| !TOP_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        if let Some(v) = obj.get("tie_word_embeddings") {
            text.entry("tie_word_embeddings")
                .or_insert_with(|| v.clone());
        }
        let (section, section_source) = take_mrope_section(&mut text)?;
        // The language model is a Qwen2 with M-RoPE; only the rotary positions differ.
        text.insert("model_type".into(), Value::String("qwen2".into()));
        let prefix = if obj.contains_key("text_config") {
            "text_config."
        } else {
            ""
        };
        let mut config = Self::from_json_at(&Value::Object(text), prefix)
            .context("in the language model's config")?;
        let half = config.rotary_dim() / 2;
        if section.iter().sum::<usize>() != half {
            bail!("mrope_section {section:?} must add up to half the rotary dimension ({half})");
        }
        config.sources.push(ValueSource {
            name: "mrope section".into(),
            value: format!("{section:?}"),
            source: format!("config.json `{prefix}{section_source}`"),
            fallback: false,
        });
        config.mrope_section = Some(section);

        let vc = obj
            .get("vision_config")
            .and_then(Value::as_object)
            .context("key `vision_config` is missing or not an object (model_type qwen2_5_vl)")?;
        let (vision, qwen, vision_warnings) = parse_vision(vc, config.hidden_size)?;
        config.warnings.extend(vision_warnings);
        let top = KeyReader::new(obj, "", "Qwen2_5_VLConfig");
        top.mark(TOP_KEYS);
        let image_token =
            obj.get("image_token_id")
                .and_then(Value::as_u64)
                .context("key `image_token_id` is missing or not an integer")? as u32;
        if image_token as usize >= config.vocab_size {
            bail!(
                "image_token_id {image_token} is outside the vocabulary ({} tokens)",
                config.vocab_size
            );
        }
        if let Some(v) = top.get("dtype").or_else(|| top.get("torch_dtype")) {
            config.saved_dtype = v.as_str().map(String::from);
        }
        if prefix.is_empty() {
            // Every other top-level key was read as the language model's.
            for key in obj.keys() {
                top.mark(&[key.as_str()]);
            }
        }
        let (_, warnings) = top.finish(&[])?;
        config.warnings.extend(warnings);
        config.vision = Some(VisionLanguageConfig {
            vision,
            vision_feature_layer: -1,
            select: FeatureSelect::Full,
            image_token_index: image_token,
            projector_hidden_act: "gelu".into(),
            layout: ImageLayout::Dynamic,
            family: "qwen2_5_vl".into(),
            qwen: Some(qwen),
        });
        Ok(config)
    }
}

/// Removes `mrope_section` from the language model's rope settings (transformers 5
/// `rope_parameters`, or transformers 4 `rope_scaling` with `type: mrope`), which are then read
/// as plain default rope.
fn take_mrope_section(text: &mut Map<String, Value>) -> Result<(Vec<usize>, String)> {
    for key in ["rope_parameters", "rope_scaling"] {
        let Some(set) = text.get_mut(key).and_then(Value::as_object_mut) else {
            continue;
        };
        let Some(section) = set.remove("mrope_section") else {
            continue;
        };
        let list: Option<Vec<usize>> = section.as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64().map(|n| n as usize))
                .collect()
        });
        let list = list.filter(|l| l.len() == 3).with_context(|| {
            format!("key `{key}.mrope_section` must be a list of 3 integers, got {section}")
        })?;
        for kind in ["type", "rope_type"] {
            if set.get(kind).and_then(Value::as_str) == Some("mrope") {
                set.insert(kind.into(), Value::String("default".into()));
            }
        }
        if key == "rope_scaling" && set.keys().all(|k| k == "type" || k == "rope_type") {
            text.remove(key);
        }
        return Ok((list, format!("{key}.mrope_section")));
    }
    bail!("the language model's rope settings have no `mrope_section`; Qwen2.5-VL needs it (e.g. [16, 24, 24])")
}

/// The vision transformer's shapes; unknown keys are refused.
fn parse_vision(
    vc: &Map<String, Value>,
    text_hidden: usize,
) -> Result<(VisionConfig, QwenVision, Vec<String>)> {
    let r = KeyReader::new(vc, "vision_config.", "Qwen2_5_VLVisionConfig");
    let num = |key: &str, default: Option<usize>| -> Result<usize> {
        r.mark(&[key]);
        match vc.get(key) {
            None | Some(Value::Null) => {
                default.with_context(|| format!("key `vision_config.{key}` is missing"))
            }
            Some(v) => v.as_u64().map(|n| n as usize).with_context(|| {
                format!("key `vision_config.{key}` must be a non-negative integer, got {v}")
            }),
        }
    };
    let depth = num("depth", None)?;
    let hidden = num("hidden_size", None)?;
    let heads = num("num_heads", None)?;
    let intermediate = num("intermediate_size", None)?;
    let patch = num("patch_size", Some(14))?;
    let merge = num("spatial_merge_size", Some(2))?;
    let temporal = num("temporal_patch_size", Some(2))?;
    let window = num("window_size", Some(112))?;
    let out_hidden = num("out_hidden_size", Some(text_hidden))?;
    let channels = match vc.get("in_channels").or_else(|| vc.get("in_chans")) {
        None => 3,
        Some(v) => {
            v.as_u64()
                .context("key `vision_config.in_channels` must be an integer")? as usize
        }
    };
    r.mark(&[
        "in_channels",
        "in_chans",
        "spatial_patch_size",
        "model_type",
        "tokens_per_second",
    ]);
    if out_hidden != text_hidden {
        bail!("vision_config.out_hidden_size ({out_hidden}) must equal the language model's hidden_size ({text_hidden})");
    }
    if heads == 0 || !hidden.is_multiple_of(heads) || (hidden / heads) % 4 != 0 {
        bail!("vision_config.num_heads ({heads}) must divide hidden_size ({hidden}) into heads of a multiple of 4");
    }
    let full: Vec<usize> = match vc.get("fullatt_block_indexes") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64().map(|n| n as usize))
                    .collect()
            })
            .context("key `vision_config.fullatt_block_indexes` must be a list of integers")?,
    };
    r.mark(&["fullatt_block_indexes"]);
    let act = vc
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("silu");
    r.mark(&["hidden_act"]);
    if act != "silu" {
        bail!("vision_config.hidden_act `{act}` is not supported; supported: silu");
    }
    let theta = match vc.get("rope_parameters") {
        Some(p) => {
            r.mark(&["rope_parameters"]);
            let kind = p
                .get("rope_type")
                .and_then(Value::as_str)
                .unwrap_or("axial");
            if kind != "axial" {
                bail!("vision_config.rope_parameters.rope_type `{kind}` is not supported; supported: axial");
            }
            p.get("rope_theta")
                .and_then(Value::as_f64)
                .unwrap_or(10000.0)
        }
        None => 10000.0,
    };
    let (_, warnings) = r.finish(&["initializer_range", "dtype", "torch_dtype"])?;
    if window % (patch * merge) != 0 {
        bail!("vision_config.window_size ({window}) must be a multiple of patch_size × spatial_merge_size");
    }
    Ok((
        VisionConfig {
            tower: TowerKind::QwenVit,
            hidden_size: hidden,
            intermediate_size: intermediate,
            num_hidden_layers: depth,
            num_attention_heads: heads,
            image_size: patch * merge,
            patch_size: patch,
            num_channels: channels,
            layer_norm_eps: 1e-6,
        },
        QwenVision {
            spatial_merge_size: merge,
            temporal_patch_size: temporal,
            window_size: window,
            fullatt_block_indexes: full,
            rope_theta: theta,
        },
        warnings,
    ))
}
