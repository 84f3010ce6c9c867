//! The vision side of a LLaVA, LLaVA-NeXT or LLaVA-OneVision `config.json`: `vision_config` (a
//! CLIP or SigLIP vision transformer), the feature layer and selection strategy, the image
//! placeholder token, the projector and the anyres tiling.

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

/// Which vision transformer the tower is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TowerKind {
    /// CLIP: a class token, `pre_layrnorm`, quick-GELU.
    #[default]
    Clip,
    /// SigLIP: no class token, a patch embedding with bias, tanh-approximated GELU.
    Siglip,
    /// Qwen2.5-VL's ViT: RMSNorm, SwiGLU, 2-D rotary, window attention, a 2×2 patch merger.
    QwenVit,
}

/// What Qwen2.5-VL's vision transformer adds to [`VisionConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QwenVision {
    /// Patches merged per side into one image token (2: 2×2 patches per token).
    pub spatial_merge_size: usize,
    /// Frames per patch (an image is repeated to fill them).
    pub temporal_patch_size: usize,
    /// Window side in pixels for windowed attention.
    pub window_size: usize,
    /// Blocks that attend over the whole image instead of windows.
    pub fullatt_block_indexes: Vec<usize>,
    /// Base of the 2-D rotary embedding.
    pub rope_theta: f64,
}

/// How a model turns one image into tiles and image tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum ImageLayout {
    /// One fixed-size crop per image (LLaVA-1.5).
    #[default]
    Single,
    /// LLaVA-NeXT's and OneVision's anyres: grid pinpoints `(height, width)`, tiles beside a base
    /// image, unpadding and `image_newline`; `max_tiles` is OneVision's `anyres_max_N`.
    AnyRes {
        pinpoints: Vec<(u32, u32)>,
        max_tiles: Option<usize>,
    },
    /// Qwen2.5-VL: any size, resized to multiples of the merged patch, one token per 2×2 patches.
    Dynamic,
}

/// A CLIP or SigLIP vision transformer's shapes (`vision_config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    #[serde(default)]
    pub tower: TowerKind,
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
    /// Tiling of images (anyres for LLaVA-NeXT and OneVision).
    #[serde(default)]
    pub layout: ImageLayout,
    /// The config's `model_type`: `llava`, `llava_next`, `llava_onevision` or `qwen2_5_vl`.
    #[serde(default)]
    pub family: String,
    /// Qwen2.5-VL's vision settings.
    #[serde(default)]
    pub qwen: Option<QwenVision>,
}

impl VisionLanguageConfig {
    /// Image tokens of one tile (for LLaVA-1.5: of each image).
    pub fn image_seq_len(&self) -> usize {
        let class_token = usize::from(self.vision.tower == TowerKind::Clip);
        self.vision.num_patches()
            + match self.select {
                FeatureSelect::Default => 0,
                FeatureSelect::Full => class_token,
            }
    }

    /// The anyres geometry, for LLaVA-NeXT and OneVision.
    pub fn anyres(&self) -> Option<super::anyres::AnyRes> {
        match &self.layout {
            ImageLayout::Single | ImageLayout::Dynamic => None,
            ImageLayout::AnyRes {
                pinpoints,
                max_tiles,
            } => Some(super::anyres::AnyRes {
                pinpoints: pinpoints.clone(),
                tile: self.vision.image_size as u32,
                side: self.vision.image_size / self.vision.patch_size,
                tokens_per_tile: self.image_seq_len(),
                max_tiles: *max_tiles,
            }),
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
        let model_type = obj
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("llava");
        let tower = match vc.get("model_type").and_then(Value::as_str) {
            None | Some("clip_vision_model") => TowerKind::Clip,
            Some("siglip_vision_model") => TowerKind::Siglip,
            Some(other) => bail!(
                "vision_config.model_type `{other}` is not supported; supported: clip_vision_model, siglip_vision_model"
            ),
        };
        let vision = VisionConfig {
            tower,
            hidden_size: usize_key("hidden_size", None)?,
            intermediate_size: usize_key("intermediate_size", None)?,
            num_hidden_layers: usize_key("num_hidden_layers", None)?,
            num_attention_heads: usize_key("num_attention_heads", None)?,
            image_size: usize_key("image_size", None)?,
            patch_size: usize_key("patch_size", None)?,
            num_channels: usize_key("num_channels", Some(3))?,
            layer_norm_eps: vc.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(
                match tower {
                    TowerKind::Clip => 1e-5,
                    TowerKind::Siglip | TowerKind::QwenVit => 1e-6,
                },
            ),
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
        let expected_act = match tower {
            TowerKind::Clip => "quick_gelu",
            TowerKind::Siglip => "gelu_pytorch_tanh",
            TowerKind::QwenVit => "silu",
        };
        let act = vc
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or(expected_act);
        if act != expected_act {
            bail!("vision_config.hidden_act `{act}` is not supported for this tower; supported: {expected_act}");
        }
        let default_layer = if model_type == "llava_onevision" {
            -1
        } else {
            -2
        };
        let vision_feature_layer = match obj.get("vision_feature_layer") {
            None | Some(Value::Null) => default_layer,
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
        let default_select = if model_type == "llava_onevision" {
            "full"
        } else {
            "default"
        };
        let select = match obj
            .get("vision_feature_select_strategy")
            .and_then(Value::as_str)
            .unwrap_or(default_select)
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
        let layout = match model_type {
            "llava" => ImageLayout::Single,
            "llava_next" | "llava_onevision" => {
                let pinpoints = obj.get("image_grid_pinpoints").with_context(|| {
                    format!("key `image_grid_pinpoints` is missing (model_type {model_type})")
                })?;
                let pinpoints = super::anyres::AnyRes::pinpoints_from_json(
                    pinpoints,
                    vision.image_size as u32,
                )?;
                let max_tiles = if model_type == "llava_onevision" {
                    let ratio = obj
                        .get("vision_aspect_ratio")
                        .and_then(Value::as_str)
                        .unwrap_or("anyres_max_9");
                    let n = ratio
                        .strip_prefix("anyres_max_")
                        .and_then(|n| n.parse::<usize>().ok())
                        .filter(|&n| n > 0)
                        .with_context(|| {
                            format!("vision_aspect_ratio `{ratio}` is not supported; supported: anyres_max_N")
                        })?;
                    Some(n)
                } else {
                    None
                };
                ImageLayout::AnyRes {
                    pinpoints,
                    max_tiles,
                }
            }
            other => bail!("model_type `{other}` is not a LLaVA family"),
        };
        if matches!(layout, ImageLayout::AnyRes { .. })
            && select == FeatureSelect::Full
            && tower == TowerKind::Clip
        {
            bail!("vision_feature_select_strategy `full` with a CLIP tower keeps the class token, which anyres tiles cannot place on their grid; use `default`");
        }
        Ok(Self {
            vision,
            vision_feature_layer,
            select,
            image_token_index,
            projector_hidden_act,
            layout,
            family: model_type.to_string(),
            qwen: None,
        })
    }
}
