//! The vision side of a LLaVA `config.json`: `vision_config` (a CLIP vision transformer), the
//! feature layer and selection strategy, the image placeholder token and the projector.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which vision-tower positions become image tokens (`vision_feature_select_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureSelect {
    /// Drop the CLS position: one image token per patch.
    Default,
    /// Keep every position: patches plus the CLS token.
    Full,
}

/// A CLIP vision transformer's shapes (`vision_config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    /// Patches per image (`(image_size / patch_size)²`).
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Everything a LLaVA model adds to its language model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionLanguageConfig {
    pub vision: VisionConfig,
    /// Index into the vision tower's hidden states (embeddings first); negative counts from the end.
    pub vision_feature_layer: i64,
    pub select: FeatureSelect,
    /// Token id of the `<image>` placeholder.
    pub image_token_index: u32,
    /// Activation between the projector's two linears (`gelu` only).
    pub projector_hidden_act: String,
}

impl VisionLanguageConfig {
    /// Image tokens each `<image>` placeholder expands to.
    pub fn image_seq_len(&self) -> usize {
        self.vision.num_patches()
            + match self.select {
                FeatureSelect::Default => 0,
                FeatureSelect::Full => 1,
            }
    }

    /// The hidden-state index used as image features, in `0..=num_hidden_layers`
    /// (0 is the embedding output after `pre_layrnorm`).
    pub fn feature_index(&self) -> usize {
        let count = self.vision.num_hidden_layers as i64 + 1;
        let index = if self.vision_feature_layer < 0 {
            count + self.vision_feature_layer
        } else {
            self.vision_feature_layer
        };
        index.clamp(0, count - 1) as usize
    }

    /// Parses the LLaVA keys of a `config.json` object.
    pub fn from_json(obj: &Map<String, Value>) -> Result<Self> {
        let vc = obj
            .get("vision_config")
            .and_then(Value::as_object)
            .context("key `vision_config` is missing or not an object")?;
        let usize_key = |key: &str, default: Option<usize>| -> Result<usize> {
            match vc.get(key) {
                None | Some(Value::Null) => {
                    default.with_context(|| format!("key `vision_config.{key}` is missing"))
                }
                Some(v) => v.as_u64().map(|n| n as usize).with_context(|| {
                    format!("key `vision_config.{key}` must be a non-negative integer, got {v}")
                }),
            }
        };
        let vision = VisionConfig {
            hidden_size: usize_key("hidden_size", None)?,
            intermediate_size: usize_key("intermediate_size", None)?,
            num_hidden_layers: usize_key("num_hidden_layers", None)?,
            num_attention_heads: usize_key("num_attention_heads", None)?,
            image_size: usize_key("image_size", None)?,
            patch_size: usize_key("patch_size", None)?,
            num_channels: usize_key("num_channels", Some(3))?,
            layer_norm_eps: vc
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-5),
        };
        if vision.num_attention_heads == 0
            || !vision
                .hidden_size
                .is_multiple_of(vision.num_attention_heads)
        {
            bail!(
                "vision_config.num_attention_heads ({}) must divide vision_config.hidden_size ({})",
                vision.num_attention_heads,
                vision.hidden_size
            );
        }
        if vision.patch_size == 0 || !vision.image_size.is_multiple_of(vision.patch_size) {
            bail!(
                "vision_config.patch_size ({}) must divide vision_config.image_size ({})",
                vision.patch_size,
                vision.image_size
            );
        }
        if vision.num_hidden_layers == 0 {
            bail!("vision_config.num_hidden_layers must be at least 1");
        }
        let act = vc
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("quick_gelu");
        if act != "quick_gelu" {
            bail!("vision_config.hidden_act `{act}` is not supported; supported: quick_gelu");
        }
        let vision_feature_layer = match obj.get("vision_feature_layer") {
            None | Some(Value::Null) => -2,
            Some(v) => v.as_i64().with_context(|| {
                format!("key `vision_feature_layer` must be an integer, got {v} (lists of layers are not supported)")
            })?,
        };
        let layers = vision.num_hidden_layers as i64;
        if !(-(layers + 1)..=layers).contains(&vision_feature_layer) {
            bail!(
                "vision_feature_layer {vision_feature_layer} is out of range for a vision tower of {layers} layers"
            );
        }
        let select = match obj
            .get("vision_feature_select_strategy")
            .and_then(Value::as_str)
            .unwrap_or("default")
        {
            "default" => FeatureSelect::Default,
            "full" => FeatureSelect::Full,
            other => bail!(
                "vision_feature_select_strategy `{other}` is not supported; supported: default, full"
            ),
        };
        let image_token_index = obj
            .get("image_token_index")
            .or_else(|| obj.get("image_token_id"))
            .and_then(Value::as_u64)
            .context("key `image_token_index` is missing or not an integer")?
            as u32;
        let projector_hidden_act = obj
            .get("projector_hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu")
            .to_string();
        if projector_hidden_act != "gelu" {
            bail!(
                "projector_hidden_act `{projector_hidden_act}` is not supported; supported: gelu"
            );
        }
        Ok(Self {
            vision,
            vision_feature_layer,
            select,
            image_token_index,
            projector_hidden_act,
        })
    }
}
